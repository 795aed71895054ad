#!/usr/bin/env bash
# Boots an image (the EL2 binary or an on-target test image) under QEMU virt
# with an SMMUv3, and exits with the image's exit status (semihosting).
#
#   qemu/run.sh IMAGE
#
# It is cargo's runner (.cargo/config.toml), so `cargo run` and `cargo test`
# come through here. Environment:
#   QEMU_ARGS     extra QEMU arguments, appended word by word
#                 (e.g. "-device pcie-root-port,id=rp7,chassis=7 -device edu,bus=rp7")
#   QEMU_TIMEOUT  wall-clock limit in seconds (default 60)
#   QEMU_TRACE    file: add -trace 'smmuv3_*' -trace 'smmu_*' -D FILE
#   RUN_MODE      "test" or "run"; default: "test" for cargo test executables
#                 (name-<16 hex digits>), else "run"
#
# In test mode the UART output becomes a verdict: the image must print its
# summary line ("N passed, M failed") and exit 0; a crash, a timeout or a
# missing summary fails, with a line "test <suite> ... FAILED (<reason>)" for
# the collector. An image that announced an expected exception
# ("harness: test NAME expects exception "CLASS"") passes only if it exited
# non-zero after printing an exception report naming CLASS.
set -uo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 IMAGE" >&2
    exit 2
fi
image=$1
timeout_s=${QEMU_TIMEOUT:-60}
qemu=qemu-system-aarch64

# --- QEMU present and new enough ---------------------------------------------
if ! command -v "$qemu" >/dev/null 2>&1; then
    echo "run.sh: $qemu not found: run \`make setup\` (or qemu/setup.sh)" >&2
    exit 127
fi
read -r major minor < <("$qemu" --version | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -n1)
if [ -z "${major:-}" ] || [ "$major" -lt 9 ] || { [ "$major" -eq 9 ] && [ "$minor" -lt 2 ]; }; then
    echo "run.sh: $qemu ${major:-?}.${minor:-?} is too old (need >= 9.2, for the SMMU's stage 2): run \`make setup\` (or qemu/setup.sh)" >&2
    exit 127
fi

# --- Command line ------------------------------------------------------------
# Default topology: one edu on the root bus, one behind a PCIe root port. The
# wide dma_mask lets edu DMA reach RAM (at 1 GiB) with the SMMU in bypass;
# QEMU's default is 28 bits.
args=(
    -machine virt,virtualization=on,iommu=smmuv3,gic-version=3
    -cpu max -m 1G -smp 2
    -nographic -nic none -semihosting
    -kernel "$image"
    -device edu,dma_mask=0xffffffffffffffff
    -device pcie-root-port,id=rp1,chassis=1
    -device edu,bus=rp1,dma_mask=0xffffffffffffffff
)
if [ -n "${QEMU_TRACE:-}" ]; then
    args+=(-trace 'smmuv3_*' -trace 'smmu_*' -D "$QEMU_TRACE")
fi
if [ -n "${QEMU_ARGS:-}" ]; then
    read -r -a extra <<<"$QEMU_ARGS"
    args+=("${extra[@]}")
fi

base=$(basename "$image")
mode=${RUN_MODE:-}
if [ -z "$mode" ]; then
    if [[ "$base" =~ -[0-9a-f]{16}$ ]]; then mode=test; else mode=run; fi
fi
suite=${base%-*}
[ "$mode" = test ] || suite=$base

log=$(mktemp)
trap 'rm -f "$log"' EXIT

timeout -k 5 "$timeout_s" "$qemu" "${args[@]}" </dev/null 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
timed_out=0
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    timed_out=1
    echo "run.sh: TIMEOUT: $base did not finish within ${timeout_s} s (QEMU_TIMEOUT)"
fi

if [ "$mode" != test ]; then
    exit "$status"
fi

# --- Test verdict --------------------------------------------------------------
out=$(tr -d '\r' <"$log")
fail() {
    echo "test $suite ... FAILED ($1)"
    echo "0 passed, 1 failed"
    exit 1
}

expect=$(grep -m1 -E '^harness: test [^ ]+ expects exception "' <<<"$out" || true)
if [ -n "$expect" ]; then
    name=$(sed -E 's/^harness: test ([^ ]+) expects.*/\1/' <<<"$expect")
    class=$(sed -E 's/.*expects exception "([^"]*)".*/\1/' <<<"$expect")
    after=$(sed -n "/^harness: test $name expects/,\$p" <<<"$out")
    if [ "$timed_out" -eq 1 ]; then
        reason="timeout after ${timeout_s} s"
    elif [ "$status" -eq 0 ]; then
        reason="expected exception \"$class\", but the image exited 0"
    elif ! grep -q '^EXCEPTION: ' <<<"$after"; then
        reason="expected exception \"$class\", but no exception report (exit status $status)"
    elif ! grep -qF "$class" <<<"$(sed -n '/^EXCEPTION: /,$p' <<<"$after")"; then
        reason="an exception was reported, but not \"$class\""
    else
        echo "test $name ... ok (expected exception \"$class\" reported, exit status $status)"
        echo "1 passed, 0 failed"
        exit 0
    fi
    echo "test $name ... FAILED ($reason)"
    echo "0 passed, 1 failed"
    exit 1
fi

[ "$timed_out" -eq 0 ] || fail "timeout after ${timeout_s} s"
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' <<<"$out" | tail -n1)
[ -n "$summary" ] || fail "no summary line; exit status $status"
failed=$(sed -E 's/^[0-9]+ passed, ([0-9]+) failed$/\1/' <<<"$summary")
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    fail "exit status $status after a clean summary"
fi
exit "$status"
