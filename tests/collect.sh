#!/usr/bin/env bash
# Runs every test and prints one verdict: the last line is "N passed, M failed",
# and the exit status is non-zero iff M > 0.
#
#  1. host unit tests of the driver: cargo test --lib --target <host triple>,
#     then its doctests on the host against the register model
#     (cargo test --doc --features testing --no-default-features; both
#     counted from cargo's "test result:" lines; a build failure counts as a
#     failure);
#  2. every on-target suite (tests/*.rs, [[test]] in Cargo.toml), each booted
#     in a fresh QEMU by qemu/run.sh through `cargo test --no-fail-fast`
#     (counted from the "test <name> ... ok|FAILED" lines). A suite that
#     crashed, timed out or printed no summary counts as a failure (run.sh
#     prints "test <suite> ... FAILED (<reason>)"), and so does a suite that
#     never ran (build failure);
#  3. the demo image judged against QEMU's SMMU trace (qemu/trace-check.py) on
#     the default topology, on a switch topology, on one CPU, and on a GICv2 machine
#     (where its SMMU interrupts must arrive through the GICv2), and on a
#     stage-1-only SMMU (-machine virt-9.1, EXPECT_STAGE=1), each one test;
#  4. the irq and smp suites again on the GICv2 machine (tests named gicv2/...),
#     the stage1 suite on virt-9.1 (tests named virt91/...), and the p2p
#     suite on two more topologies (multi-function edus: p2p-mf/..., a
#     switch without ACS: p2p-switch/...);
#  5. the examples: built (ownership, shown in the README) and booted
#     (minimal_hypervisor), one test line each.
set -uo pipefail
cd "$(dirname "$0")/.."

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

host=$(rustc -vV | sed -n 's/^host: //p')
echo "collect: host unit tests (cargo test --lib --target $host)"
cargo test --lib --target "$host" 2>&1 | tee "$logs/host.txt"
host_status=${PIPESTATUS[0]}
echo "collect: doctests (cargo test --doc --features testing --no-default-features --target $host)"
cargo test --doc --features testing --no-default-features --target "$host" 2>&1 | tee "$logs/doc.txt"
doc_status=${PIPESTATUS[0]}

echo "collect: on-target suites (cargo test --no-fail-fast --tests, each image in its own QEMU)"
# --tests: the integration test images only (the lib's doctests ran above,
# on the host; cargo would otherwise cross-build them for bare metal).
cargo test --no-fail-fast --tests 2>&1 | tee "$logs/target.txt"
target_status=${PIPESTATUS[0]}

# The demo image, judged against QEMU's own SMMU trace, on the default
# topology, on one with a switch, an extra root port and more memory, and on
# one with a PCIe-to-PCI bridge.
echo "collect: demo vs QEMU trace (qemu/trace-check.py)"
python3 qemu/trace-check.py trace_agreement --cpu-exits 2>&1 | tee -a "$logs/target.txt" | tail -n 3
QEMU_ARGS="-m 2G -device pcie-root-port,id=rp7,chassis=7 -device edu,bus=rp7 \
-device pcie-root-port,id=rp8,chassis=8 -device x3130-upstream,id=up8,bus=rp8 \
-device xio3130-downstream,id=dn8,bus=up8,chassis=9 -device edu,bus=dn8" \
    python3 qemu/trace-check.py demo_switch_topology 2>&1 | tee -a "$logs/target.txt" | tail -n 3
# Two edus behind a PCIe-to-PCI bridge: their DMA arrives with the bridge's
# alias StreamID, both share one isolation group and one VM.
QEMU_ARGS="-device pcie-pci-bridge,id=br1,bus=pcie.0 \
-device edu,bus=br1,addr=3,dma_mask=0xffffffffffffffff \
-device edu,bus=br1,addr=4,dma_mask=0xffffffffffffffff" \
    python3 qemu/trace-check.py demo_bridge_aliases --aliases 2 2>&1 | tee -a "$logs/target.txt" | tail -n 4
# One CPU: the guests' pair runs one VM after the other (the two-CPU
# claim does not apply), and every other claim still holds.
QEMU_ARGS="-smp 1" \
    python3 qemu/trace-check.py demo_one_cpu --cpu-exits 2>&1 | tee -a "$logs/target.txt" | tail -n 2

# Peer-to-peer (ACS) groups on two more topologies: two functions of one
# multi-function edu on the root bus (no ACS: one group), and a switch with
# an edu below each of two downstream ports (QEMU's xio3130 downstream
# ports have no ACS: ports and edus one group). One QEMU boot each.
echo "collect: p2p suite on a multi-function device and on a switch"
QEMU_ARGS="-device edu,addr=5.0,multifunction=on -device edu,addr=5.1" \
    cargo test --no-fail-fast --test p2p 2>&1 |
    sed -E 's/^test ([^ ]+) \.\.\./test p2p-mf\/\1 .../' | tee -a "$logs/target.txt"
QEMU_ARGS="-device pcie-root-port,id=rp7,chassis=7 -device x3130-upstream,id=up7,bus=rp7 \
-device xio3130-downstream,id=dn1,bus=up7,chassis=8,slot=1 -device edu,bus=dn1 \
-device xio3130-downstream,id=dn2,bus=up7,chassis=9,slot=2 -device edu,bus=dn2" \
    cargo test --no-fail-fast --test p2p 2>&1 |
    sed -E 's/^test ([^ ]+) \.\.\./test p2p-switch\/\1 .../' | tee -a "$logs/target.txt"

# GICv2: the demo (trace-checked, and its SMMU interrupts taken through the
# GICv2), then the interrupt and second-CPU suites, each test named gicv2/...
# (a second -machine option overrides gic-version; see qemu/run.sh).
echo "collect: GICv2 (-machine gic-version=2): demo, irq and smp suites"
QEMU_ARGS="-machine gic-version=2" EXPECT_GIC=2 \
    python3 qemu/trace-check.py demo_gicv2 2>&1 | tee -a "$logs/target.txt" | tail -n 4
QEMU_ARGS="-machine gic-version=2" cargo test --no-fail-fast --test irq --test smp 2>&1 |
    sed -E 's/^test ([^ ]+) \.\.\./test gicv2\/\1 .../' | tee -a "$logs/target.txt"

# A stage-1-only SMMU (-machine virt-9.1, as QEMU <= 9.1 models it): the demo
# with every domain and VM on stage 1 (QEMU's trace must show only stage-1
# translations and walks), then the stage-1 suite, each test named virt91/...
echo "collect: stage-1-only SMMU (-machine virt-9.1): demo, stage1 suite"
QEMU_ARGS="-machine virt-9.1" EXPECT_STAGE=1 \
    python3 qemu/trace-check.py demo_stage1_only 2>&1 | tee -a "$logs/target.txt" | tail -n 5
QEMU_ARGS="-machine virt-9.1" cargo test --no-fail-fast --test stage1 2>&1 |
    sed -E 's/^test ([^ ]+) \.\.\./test virt91\/\1 .../' | tee -a "$logs/target.txt"

# The README's ownership example builds for the bare-metal target and is
# shown verbatim.
echo "collect: examples (tests/readme-example.sh)"
tests/readme-example.sh 2>&1 | tee -a "$logs/target.txt" | grep '^test '

# The minimal hypervisor example boots under QEMU (qemu/run.sh, run mode):
# it passes when it exits 0 and printed its own "minimal_hypervisor: Ok(true)"
# verdict. Counted as one on-target test (not a suite: no "Running tests/").
echo "collect: examples/minimal_hypervisor.rs under QEMU"
if cargo run --release --example minimal_hypervisor >"$logs/example.txt" 2>&1 &&
    tr -d '\r' <"$logs/example.txt" | grep -qx 'minimal_hypervisor: Ok(true)'; then
    echo "test example_minimal_hypervisor ... ok" | tee -a "$logs/target.txt"
else
    tail -n 20 "$logs/example.txt"
    echo "test example_minimal_hypervisor ... FAILED" | tee -a "$logs/target.txt"
fi

# The public API is documented (issue 11): rustdoc with missing docs and
# every rustdoc warning (broken links, private links) as errors, for the
# bare-metal library as published (no default features) and for the host
# with the `testing` model. Each is one counted test.
echo "collect: rustdoc -D missing_docs -D warnings"
for cfg in "bare-metal:--no-default-features" \
    "host-testing:--no-default-features --features testing --target $host"; do
    name=${cfg%%:*}
    # shellcheck disable=SC2086 # the flags are meant to split
    if RUSTDOCFLAGS="-D missing_docs -D warnings" cargo doc --no-deps ${cfg#*:} >"$logs/doc-$name.txt" 2>&1; then
        echo "test rustdoc_missing_docs/$name ... ok" | tee -a "$logs/target.txt"
    else
        grep -E '^(error|warning)' -A4 "$logs/doc-$name.txt" | head -n 30
        echo "test rustdoc_missing_docs/$name ... FAILED" | tee -a "$logs/target.txt"
    fi
done

# `make bench`'s image (feature `bench`) is built, not run (the benchmark
# prints figures, it does not judge them): a merge that breaks it fails here.
echo "collect: make bench's image builds (cargo build --release --features bench)"
if cargo build --release --features bench >"$logs/bench-build.txt" 2>&1; then
    echo "test bench_image_builds ... ok" | tee -a "$logs/target.txt"
else
    grep -E '^error' -A6 "$logs/bench-build.txt" | head -n 30
    echo "test bench_image_builds ... FAILED" | tee -a "$logs/target.txt"
fi

# Host: sum cargo's "test result: ok. 3 passed; 1 failed; ..." lines.
read -r host_pass host_fail host_results < <(
    awk '/^test result: / { for (i = 1; i <= NF; i++) {
             if ($(i) ~ /^passed;?$/) p += $(i - 1); if ($(i) ~ /^failed;?$/) f += $(i - 1) } n++ }
         END { print p + 0, f + 0, n + 0 }' "$logs/host.txt")
if [ "$host_status" -ne 0 ] && [ "$host_fail" -eq 0 ]; then
    echo "collect: FAILED: host unit tests did not build or run (exit status $host_status)"
    host_fail=1
fi
read -r doc_pass doc_fail doc_results < <(
    awk '/^test result: / { for (i = 1; i <= NF; i++) {
             if ($(i) ~ /^passed;?$/) p += $(i - 1); if ($(i) ~ /^failed;?$/) f += $(i - 1) } n++ }
         END { print p + 0, f + 0, n + 0 }' "$logs/doc.txt")
if [ "$doc_status" -ne 0 ] && [ "$doc_fail" -eq 0 ]; then
    echo "collect: FAILED: doctests did not build or run (exit status $doc_status)"
    doc_fail=1
fi

# On target: per-test lines, and one summary per suite that ran.
# Every [[test]] once, plus the two suites rerun on GICv2, the one on
# virt-9.1 and the p2p suite on two more topologies.
rerun_suites=5
expected_suites=$(($(grep -c '^\[\[test\]\]' Cargo.toml) + rerun_suites))
read -r t_pass t_fail t_suites t_nosummary < <(
    tr -d '\r' <"$logs/target.txt" | awk '
        /^ *Running tests\// { if (in_suite && !summary) missing++; in_suite = 1; summary = 0; suites++; next }
        /^test .* \.\.\. ok/ { p++; next }
        /^test .* \.\.\. FAILED/ { f++; next }
        /^[0-9]+ passed, [0-9]+ failed$/ { summary = 1 }
        END { if (in_suite && !summary) missing++; print p + 0, f + 0, suites + 0, missing + 0 }')
if [ "$t_nosummary" -gt 0 ]; then
    echo "collect: FAILED: $t_nosummary on-target suite(s) ended without a verdict"
    t_fail=$((t_fail + t_nosummary))
fi
if [ "$t_suites" -lt "$expected_suites" ]; then
    echo "collect: FAILED: only $t_suites of $expected_suites on-target suites ran (exit status $target_status)"
    t_fail=$((t_fail + expected_suites - t_suites))
fi
if [ "$target_status" -ne 0 ] && [ "$t_fail" -eq 0 ]; then
    echo "collect: FAILED: cargo test exited $target_status with no failing test line"
    t_fail=1
fi

echo
echo "collect: host unit tests: $host_pass passed, $host_fail failed ($host_results binaries)"
echo "collect: doctests: $doc_pass passed, $doc_fail failed ($doc_results binaries)"
echo "collect: on-target tests: $t_pass passed, $t_fail failed ($t_suites of $expected_suites suites)"
grep -h '^test .* \.\.\. FAILED' "$logs/host.txt" "$logs/doc.txt" <(tr -d '\r' <"$logs/target.txt") | sed 's/^/collect:   /'
# Robustness counters reported by the suites themselves (harness::tally).
robustness=$(tr -d '\r' <"$logs/target.txt" | awk -F'[ =]' '
    /^robustness-tally: / { for (i = 2; i < NF; i += 2) sum[$i] += $(i + 1) }
    END { printf "robustness: %d bad inputs rejected, %d faults injected, %d recovered, %d lost\n",
          sum["bad_inputs"], sum["faults"], sum["recovered"], sum["lost"] }')
echo "$robustness"
pass=$((host_pass + doc_pass + t_pass))
fail=$((host_fail + doc_fail + t_fail))
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
