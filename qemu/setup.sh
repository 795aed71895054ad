#!/usr/bin/env bash
# Installs what `make run` / `make test` need, idempotently, and says what it does.
#  - the aarch64-unknown-none target for the pinned toolchain (rust-toolchain.toml)
#  - qemu-system-aarch64 >= 9.2 (on Debian bookworm: from bookworm-backports)
set -euo pipefail
cd "$(dirname "$0")/.."

need_major=9
need_minor=2

qemu_ok() {
    command -v qemu-system-aarch64 >/dev/null 2>&1 || return 1
    local v
    v=$(qemu-system-aarch64 --version | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -n1)
    [ -n "$v" ] || return 1
    set -- $v
    [ "$1" -gt "$need_major" ] || { [ "$1" -eq "$need_major" ] && [ "$2" -ge "$need_minor" ]; }
}

# --- Rust target -------------------------------------------------------------
if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-none; then
    echo "setup: installing rustup target aarch64-unknown-none"
    rustup target add aarch64-unknown-none
fi

# --- QEMU --------------------------------------------------------------------
if qemu_ok; then
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
        echo "setup: QEMU >= ${need_major}.${need_minor} is missing and this user cannot install packages." >&2
        echo "setup: install qemu-system-arm >= ${need_major}.${need_minor} (Debian bookworm: from bookworm-backports)." >&2
        exit 1
    fi
fi

codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
if [ "$codename" = "bookworm" ]; then
    list=/etc/apt/sources.list.d/bookworm-backports.list
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "setup: adding the bookworm-backports suite ($list)"
        echo "deb http://deb.debian.org/debian bookworm-backports main" | $sudo tee "$list" >/dev/null
    fi
    echo "setup: installing qemu-system-arm from bookworm-backports (needs >= ${need_major}.${need_minor})"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -t bookworm-backports \
        --no-install-recommends qemu-system-arm >/dev/null
else
    echo "setup: installing qemu-system-arm with apt"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends qemu-system-arm >/dev/null
fi

if ! qemu_ok; then
    echo "setup: qemu-system-aarch64 >= ${need_major}.${need_minor} is still not available:" >&2
    qemu-system-aarch64 --version >&2 || true
    exit 1
fi
echo "setup: $(qemu-system-aarch64 --version | head -n1)"
