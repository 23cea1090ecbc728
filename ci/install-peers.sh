#!/usr/bin/env bash
# Installs the peer tools that `cargo xtask bench --peers` measures beside our harness, at pinned
# versions, into the pcmsig tool cache: virtme-ng (PyPI), vmtest (crates.io), and the host's
# qemu-guest-agent, which vmtest runs inside its guest. Not needed for anything else.
# Idempotent: a second run installs nothing.
#
# Env: PCMSIG_TOOLS  where they go (default: ${XDG_CACHE_HOME:-~/.cache}/pcmsig/tools)
set -euo pipefail

VIRTME_NG_VERSION=1.42
VMTEST_VERSION=0.18.0
TOOLS="${PCMSIG_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/pcmsig/tools}"

say() { printf 'install-peers: %s\n' "$*"; }
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi

if ! command -v qemu-ga >/dev/null; then
    say "apt-get install qemu-guest-agent"
    $SUDO apt-get install -y --no-install-recommends qemu-guest-agent | { grep -E "^(Unpacking|Setting up) " || true; }
fi
# Versions are captured, then matched: a pipe into `grep -q` can fail under pipefail
# (see install-deps.sh).
output_of() { "$@" 2>/dev/null || true; }
if [[ ! -x $TOOLS/bin/vmtest || $(output_of "$TOOLS/bin/vmtest" --version) != *"$VMTEST_VERSION"* ]]; then
    say "cargo install vmtest $VMTEST_VERSION (about 3 minutes)"
    cargo install --locked vmtest --version "$VMTEST_VERSION" --root "$TOOLS"
fi
if [[ ! -f $TOOLS/virtme-ng/virtme_ng/version.py ]] \
    || ! grep -q "$VIRTME_NG_VERSION" "$TOOLS/virtme-ng/virtme_ng/version.py"; then
    say "pip install virtme-ng $VIRTME_NG_VERSION"
    python3 -m pip install --quiet --upgrade --target "$TOOLS/virtme-ng" "virtme-ng==$VIRTME_NG_VERSION"
fi
qemu_ga=$(output_of qemu-ga --version)
say "virtme-ng $VIRTME_NG_VERSION, vmtest $VMTEST_VERSION, ${qemu_ga%%$'\n'*}"
