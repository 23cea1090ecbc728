#!/usr/bin/env bash
# The install path from nothing (`cargo xtask selftest --fresh-root`): a minimal Debian root made
# with mmdebstrap from the apt registry, the README's first step (`cargo xtask deps`, which runs
# ci/install-deps.sh) run in it through chroot, run a second time (it must install nothing), and
# `cargo xtask deps --check`: every tool the harness needs, at the version it wants.
#
# The README's one prerequisite, Rust from rustup, cannot be downloaded on the project's machines
# (rustup's server is not reachable): the host's rustup toolchain is bind-mounted read-only into
# the root, and the run says so. The root gets what a rustup install needs besides (ca-certificates,
# and gcc as the linker); everything else must come from the project's own install step.
#
# Usage: bash ci/fresh-root.sh [SUITE]   (bookworm, the default, or trixie)
# Env: PCMSIG_KEEP_ROOT=1  keep the root (its path is printed) instead of removing it
set -euo pipefail
suite=${1:-bookworm}
here=$(cd "$(dirname "$0")/.." && pwd)
say() { printf 'fresh-root: %s\n' "$*"; }

[[ $(id -u) -eq 0 ]] || { say "needs root (mmdebstrap, mounts, chroot)"; exit 1; }
command -v mmdebstrap >/dev/null || {
    say "mmdebstrap not found (Debian package mmdebstrap; PCMSIG_CI=1 bash ci/install-deps.sh installs it)"
    exit 1
}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
[[ -x $cargo_bin/cargo && -d $rustup_home ]] || {
    say "no rustup toolchain in $rustup_home with cargo in $cargo_bin"
    exit 1
}

root=$(mktemp -d /var/tmp/pcmsig-fresh-root.XXXXXX)
mounts=()
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount -l "${mounts[i]}" 2>/dev/null || true
    done
    # Never delete through a mount that is still there (the host's toolchain is bind-mounted).
    local mounted
    mounted=$(awk -v r="$root/" 'index($2, r) == 1 {print $2}' /proc/mounts)
    if [[ ${PCMSIG_KEEP_ROOT:-} == 1 || -n $mounted ]]; then
        say "kept the root in $root${mounted:+ (still mounted: $mounted)}"
    else
        rm -rf --one-file-system "$root"
    fi
}
trap cleanup EXIT
bind() {
    mkdir -p "$2"
    mount --bind "$1" "$2"
    mounts+=("$2")
    if [[ ${3:-} == ro ]]; then mount -o remount,bind,ro "$2"; fi
}

start=$SECONDS
say "making a minimal Debian $suite root in $root (mmdebstrap --variant=minbase)"
mmdebstrap --quiet --variant=minbase --include=ca-certificates,gcc,libc6-dev "$suite" "$root" \
    "deb http://deb.debian.org/debian $suite main" \
    "deb http://deb.debian.org/debian $suite-updates main" \
    "deb http://deb.debian.org/debian-security $suite-security main"
say "root made in $((SECONDS - start)) s"

# A machine on this network trusts its TLS proxy's certificate authorities: so does the root.
local_cas=(/usr/local/share/ca-certificates/*.crt)
if [[ -e ${local_cas[0]} ]]; then
    say "NOTE: this machine's local CA certificates (${local_cas[*]}) are copied in, as any machine here has them"
    cp "${local_cas[@]}" "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
fi
bind /proc "$root/proc"
bind /sys "$root/sys"
bind /dev "$root/dev"
cp /etc/resolv.conf "$root/etc/resolv.conf"
say "NOTE: Rust comes from the host: its rustup toolchain ($rustup_home, $cargo_bin) is mounted read-only"
bind "$rustup_home" "$root/root/.rustup" ro
bind "$cargo_bin" "$root/root/.cargo/bin" ro
# The checkout as it is (tracked and new files, not ignored ones such as target/).
mkdir -p "$root/root/pcmsig"
git -C "$here" ls-files -z --cached --others --exclude-standard |
    (cd "$here" && xargs -0 tar --ignore-failed-read -cf - 2>/dev/null) |
    tar -xf - -C "$root/root/pcmsig"

in_root() {
    chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        bash -c "cd /root/pcmsig && $1"
}
step=$SECONDS
say "cargo xtask deps (the install step, from nothing)"
in_root "cargo xtask deps"
say "installed in $((SECONDS - step)) s"
step=$SECONDS
say "cargo xtask deps again: must install nothing"
out=$(in_root "cargo xtask deps" 2>&1)
printf '%s\n' "$out"
if [[ $out != *"Debian packages: all present"* || $out == *"installing"* || $out == *"building"* ]]; then
    say "FAILED: the second install was not a no-op"
    exit 1
fi
say "cargo xtask deps --check: every tool the harness needs, at its version"
in_root "cargo xtask deps --check"
say "passed on Debian $suite in $((SECONDS - start)) s"
