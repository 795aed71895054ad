#!/usr/bin/env python3
"""Cross-checks the EL2 image's report against QEMU's own SMMU trace.

Runs the demo image (``cargo run --release``) with ``QEMU_TRACE`` and checks:

* every ``IPA X -> PA Y`` the image reports has a ``smmuv3_translate_success``
  event with ``iova=X translated=Y`` (the SMMU really translated it so);
* every ``fault:`` line (type, StreamID, N records) is matched by at least N
  ``smmuv3_record_event`` lines of that type and StreamID;
* every write that enables interrupts (IRQ_CTRL != 0) is preceded, since
  the last IRQ_CTRL = 0, by writes of 0 to both halves of GERROR_IRQ_CFG0
  and EVENTQ_IRQ_CFG0 (a stale MSI address would turn interrupts into DMA
  writes; their reset value is UNKNOWN);
* the total of event records the driver drained (``SMMU stats: ... N event
  records``) plus the records the image says an event storm lost (``N lost``)
  equals the number of ``smmuv3_record_event`` lines (QEMU traces a record
  even when a full queue drops it).

With ``EXPECT_GIC=2`` (or ``3``) it also checks the interrupt mode: the
banner says ``interrupts: GICv<N>``, the SMMU's interrupts are serviced
``via GICv<N>``, and the ``SMMU stats`` line counts at least one interrupt
taken (so delivery really worked, not a silent fall back to polling).

With ``EXPECT_STAGE=1`` (or ``2``) it also checks that the feature table
says domains use that stage, that every ``VM`` line names that SMMU stage,
that the demo's own checks all passed, and, from QEMU's trace, that every
``smmuv3_translate_success`` and every page-table walk step
(``smmu_ptw_level``, ``smmu_ptw_page_pte``, ``smmu_ptw_block_pte``) was of
that stage (the IPA -> PA claims are checked as always).

With ``--aliases N`` (a topology with functions behind a PCIe-to-PCI
bridge) it also checks, from the image's PCI listing (``StreamIDs OWN, ALIAS
(alias BDF via BRIDGE)``), that:

* at least N functions are listed with an alias StreamID, and those sharing
  an alias are placed in one VM (``VM n <- group g (A+B) ...``);
* every ``IPA X -> PA Y`` the demo reports for such a function was traced as
  ``smmuv3_translate_success sid=ALIAS iova=X translated=Y``: QEMU translated
  that DMA under the alias StreamID;
* QEMU never translated or faulted anything under such a function's own
  StreamID (its DMA never carries it).

On an SMMU with both stages (``stages : S1 S2 (nested)``) the demo must
print at least one nested line, ``nested sid S: VA V -> stage-1 walk
(levels L) -> IPA I -> stage-2 walk -> PA P``, and the trace must show, for
each: ``smmuv3_translate_success sid=S iova=V translated=P``; a stage-1
walk step (``smmu_ptw_level`` stage 1, or 3 as QEMU tags nested walks) at
every level in L for iova V, ending in ``smmu_ptw_page_pte`` with page
address I; and a stage-2 walk (``smmu_ptw_level stage=2``) of I whose leaf
(``smmu_ptw_page_pte``/``smmu_ptw_block_pte`` stage 2) gives P.

``--replay OUT TRACE`` judges a saved demo output and QEMU trace instead of
running QEMU (to show the checks fail on edited evidence).

Prints ``test NAME ... ok`` or ``... FAILED`` (with reasons) and exits
accordingly (NAME: the first argument, default ``trace_agreement``). Extra
QEMU arguments come from ``QEMU_ARGS`` as usual.
"""
import collections
import os
import re
import subprocess
import sys
import tempfile

NAME = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "trace_agreement"
ALIASES = int(sys.argv[sys.argv.index("--aliases") + 1]) if "--aliases" in sys.argv else None
# --cpu-exits: also run QEMU with ``-d int`` and check that every stage-2 data
# abort the image reports for a guest was taken by QEMU from EL1 to EL2
# (ESR class 0x24, FAR = the IPA, the guests run with stage 1 off), and that
# the guests' hypercalls were HVCs from EL1 to EL2 (ESR class 0x16).
CPU_EXITS = "--cpu-exits" in sys.argv
REPLAY = sys.argv[sys.argv.index("--replay") + 1:sys.argv.index("--replay") + 3] if "--replay" in sys.argv else None


def check_nested(out, lines, problems):
    """The demo's nested VA -> IPA -> PA claims against QEMU's walks."""
    claims = re.findall(r"nested sid (0x[0-9a-f]+): VA (0x[0-9a-f]+) -> stage-1 walk \(levels ([0-9,]+)\) "
                        r"-> IPA (0x[0-9a-f]+) -> stage-2 walk -> PA (0x[0-9a-f]+)", out)
    if not claims:
        problems.append("the demo printed no nested translation (nested SMMU)")
    for sid, va, levels, ipa, pa in claims:
        sid, va, ipa, pa = int(sid, 16), int(va, 16), int(ipa, 16), int(pa, 16)
        levels = [int(x) for x in levels.split(",")]
        ok = any(re.search(rf"smmuv3_translate_success .*sid={sid:#x} iova={va:#x} translated={pa:#x}\b", l)
                 for l in lines)
        if not ok:
            problems.append(f"nested sid {sid:#x}: no smmuv3_translate_success VA {va:#x} -> PA {pa:#x}")
        s1 = set()
        page_ipa = None
        for l in lines:
            m = re.search(r"smmu_ptw_level stage=([13]) level=(\d) iova=(0x[0-9a-f]+) ", l)
            if m and int(m[3], 16) == va:
                s1.add(int(m[2]))
            m = re.search(r"smmu_ptw_page_pte stage=([13]) level=\d iova=(0x[0-9a-f]+) .*page address = (0x[0-9a-f]+)", l)
            if m and int(m[2], 16) == va:
                page_ipa = int(m[3], 16)
        if sorted(s1) != levels:
            problems.append(f"nested sid {sid:#x}: stage-1 walk of VA {va:#x} traced at levels {sorted(s1)}, the demo says {levels}")
        if page_ipa is None or page_ipa != ipa & ~0xfff:
            problems.append(f"nested sid {sid:#x}: stage-1 leaf of VA {va:#x} gives IPA page {page_ipa and hex(page_ipa)}, the demo says {ipa:#x}")
        s2 = set()
        leaf_pa = None
        for l in lines:
            m = re.search(r"smmu_ptw_level stage=2 level=(\d) iova=(0x[0-9a-f]+) ", l)
            if m and int(m[2], 16) & ~0xfff == ipa & ~0xfff:
                s2.add(int(m[1]))
            m = re.search(r"smmu_ptw_block_pte stage=2 .*iova=(0x[0-9a-f]+) block address = (0x[0-9a-f]+) block size = (\d+) MiB", l)
            if m and int(m[1], 16) & ~0xfff == ipa & ~0xfff:
                size = int(m[3]) << 20
                leaf_pa = int(m[2], 16) + (ipa & (size - 1))
            m = re.search(r"smmu_ptw_page_pte stage=2 level=\d iova=(0x[0-9a-f]+) .*page address = (0x[0-9a-f]+)", l)
            if m and int(m[1], 16) & ~0xfff == ipa & ~0xfff:
                leaf_pa = int(m[2], 16) + (ipa & 0xfff)
        if not s2:
            problems.append(f"nested sid {sid:#x}: no stage-2 walk of IPA {ipa:#x}")
        if leaf_pa != pa:
            problems.append(f"nested sid {sid:#x}: stage-2 leaf of IPA {ipa:#x} gives PA {leaf_pa and hex(leaf_pa)}, the demo says {pa:#x}")
        if ok and sorted(s1) == levels and page_ipa == ipa & ~0xfff and s2 and leaf_pa == pa:
            print(f"trace: nested sid {sid:#x}: VA {va:#x} -> stage-1 walk (levels {','.join(map(str, levels))}) "
                  f"-> IPA {ipa:#x} -> stage-2 walk (levels {','.join(map(str, sorted(s2)))}) -> PA {pa:#x}, as the demo says")


def check_cpu_exits(out, lines, problems):
    """Image-reported guest aborts and HVCs against QEMU's -d int log."""
    exits = []  # (class, far) of exceptions QEMU took from EL1 to EL2
    cur = None
    for line in lines:
        if line.startswith("Taking exception"):
            cur = {"from": None, "esr": None, "far": None}
            exits.append(cur)
        elif cur is not None:
            m = re.match(r"\.\.\.from EL(\d) to EL(\d)", line)
            if m:
                cur["from"] = (int(m[1]), int(m[2]))
            m = re.match(r"\.\.\.with ESR 0x([0-9a-f]+)/", line)
            if m:
                cur["esr"] = int(m[1], 16)
            m = re.match(r"\.\.\.with FAR 0x([0-9a-f]+)", line)
            if m:
                cur["far"] = int(m[1], 16)
    to_el2 = [e for e in exits if e["from"] == (1, 2)]
    hvcs = sum(1 for e in to_el2 if e["esr"] == 0x16)
    aborts = collections.Counter(e["far"] for e in to_el2 if e["esr"] == 0x24)
    claimed = re.findall(r"stage-2 data abort: \w+ (?:from|to) IPA (0x[0-9a-f]+)", out)
    if not claimed:
        problems.append("the image reported no guest stage-2 data abort")
    need = collections.Counter(int(a, 16) for a in claimed)
    for far, n in need.items():
        if aborts[far] < n:
            problems.append(f"image reports {n} stage-2 aborts at IPA {far:#x}; QEMU took {aborts[far]} from EL1 to EL2")
    if hvcs == 0:
        problems.append("QEMU took no HVC from EL1 to EL2")
    print(f"trace: {sum(need.values())} guest stage-2 aborts matched QEMU's -d int; {hvcs} HVCs from EL1 to EL2")


def check_aliases(out, traced, events, problems):
    """The alias checks of ``--aliases``; returns the number of claims checked."""
    aliased = {}
    for m in re.finditer(r"^\s+([0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) \[.*?  StreamIDs (.*?)(?:  group \d+)?$", out, re.M):
        if "(alias " not in m[2]:
            continue
        sids = [int(x, 16) for x in re.findall(r"0x[0-9a-f]+", m[2])]
        aliased[m[1]] = (sids[0], sids[-1])
    if len(aliased) < ALIASES:
        problems.append(f"expected at least {ALIASES} functions with an alias StreamID, the listing has {len(aliased)}")
    vms = [m[1].split("+") for m in re.finditer(r"^\s+VM \d+ <- group \d+ \(([^)]*)\)", out, re.M)]
    by_root = collections.defaultdict(set)
    for bdf, (_, root) in aliased.items():
        by_root[root].add(bdf)
    for root, bdfs in by_root.items():
        placed = [vm for vm in vms if bdfs & set(vm)]
        if len(bdfs) > 1 and (len(placed) != 1 or not bdfs <= set(placed[0])):
            problems.append(f"functions {sorted(bdfs)} share alias StreamID {root:#x} but are not in one VM: {placed}")
    checked = 0
    for bdf, (own, root) in aliased.items():
        claims = []
        for m in re.finditer(r"^\s+(\S+)\s+.*$", out, re.M):
            devices = m[1].split("+")
            if bdf in devices and all(d in aliased and aliased[d][1] == root for d in devices):
                claims += re.findall(r"IPA (0x[0-9a-f]+) -> PA (0x[0-9a-f]+)", m[0])
        if not claims:
            problems.append(f"{bdf}: the demo reported no IPA -> PA translation for it")
        for ipa, pa in claims:
            checked += 1
            if (root, int(ipa, 16), int(pa, 16)) not in traced:
                problems.append(f"{bdf}: IPA {ipa} -> PA {pa} not traced under alias StreamID {root:#x}")
        used = [t for t in traced if t[0] == own] + [e for e in events if e[1] == own]
        if own != root and used:
            problems.append(f"{bdf}: QEMU used its own StreamID {own:#x} ({len(used)} traces), not only the alias {root:#x}")
    print(f"trace: {len(aliased)} aliased functions, {checked} translations checked under their alias StreamID")
    return checked


def main() -> int:
    if REPLAY:
        with open(REPLAY[0]) as f:
            out = f.read()
        with open(REPLAY[1]) as f:
            lines = f.read().splitlines()
        return judge(out, lines, [])
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, "trace.log")
        env = dict(os.environ, QEMU_TRACE=trace, RUN_MODE="run")
        if CPU_EXITS:
            env["QEMU_ARGS"] = (env.get("QEMU_ARGS", "") + " -d int").strip()
        run = subprocess.run(["cargo", "run", "--release", "-q"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = run.stdout
        sys.stdout.write(out)
        problems = []
        if run.returncode != 0:
            problems.append(f"the demo exited {run.returncode}")
        try:
            with open(trace) as f:
                lines = f.read().splitlines()
        except OSError as e:
            lines = []
            problems.append(f"no trace: {e}")
    return judge(out, lines, problems)


def judge(out, lines, problems):
    """Every check on the demo's output ``out`` and QEMU's trace ``lines``."""

    translations = set()
    traced = set()
    events = collections.Counter()
    for line in lines:
        m = re.search(r"smmuv3_translate_success .*sid=(0x[0-9a-f]+) iova=(0x[0-9a-f]+) translated=(0x[0-9a-f]+)", line)
        if m:
            translations.add((int(m[2], 16), int(m[3], 16)))
            traced.add((int(m[1], 16), int(m[2], 16), int(m[3], 16)))
        m = re.search(r"smmuv3_record_event SMMU_EVT_(\w+) sid=(0x[0-9a-f]+)", line)
        if m:
            events[(m[1], int(m[2], 16))] += 1

    claimed = [(int(a, 16), int(b, 16)) for a, b in re.findall(r"IPA (0x[0-9a-f]+) -> PA (0x[0-9a-f]+)", out)]
    if not claimed:
        problems.append("the image reported no IPA -> PA translation")
    for ipa, pa in claimed:
        if (ipa, pa) not in translations:
            problems.append(f"image says IPA {ipa:#x} -> PA {pa:#x}; QEMU traced no such translation")

    faults = re.findall(r"fault: (\w+) sid (0x[0-9a-f]+) .*: (\d+) records?", out)
    if not faults:
        problems.append("the image reported no fault")
    need = collections.Counter()
    for kind, sid, n in faults:
        need[(kind, int(sid, 16))] += int(n)
    for (kind, sid), n in need.items():
        have = events[(kind, sid)]
        if have < n:
            problems.append(f"image reports {n} {kind} records for sid {sid:#x}; QEMU recorded {have}")

    # MSI address registers cleared before interrupts are enabled.
    irq_cfg0 = {0x68: "GERROR_IRQ_CFG0", 0x6C: "GERROR_IRQ_CFG0[63:32]",
                0xB0: "EVENTQ_IRQ_CFG0", 0xB4: "EVENTQ_IRQ_CFG0[63:32]"}
    cleared = None  # offsets written with 0 since the last IRQ_CTRL = 0
    enables = 0
    for line in lines:
        m = re.search(r"smmuv3_write_mmio addr: ?(0x[0-9a-f]+) val: ?(0x[0-9a-f]+)", line)
        if not m:
            continue
        addr, val = int(m[1], 16), int(m[2], 16)
        if addr == 0x50:
            if val == 0:
                cleared = set()
            else:
                enables += 1
                missing = set(irq_cfg0) - (cleared or set())
                if cleared is None or missing:
                    names = ", ".join(irq_cfg0[a] for a in sorted(missing))
                    problems.append(f"IRQ_CTRL = {val:#x} written without {names} = 0 since IRQ_CTRL = 0")
        elif addr in irq_cfg0 and cleared is not None:
            if val == 0:
                cleared.add(addr)
            else:
                cleared.discard(addr)
    if enables == 0:
        problems.append("QEMU traced no write enabling SMMU interrupts (IRQ_CTRL)")

    m = re.search(r"SMMU stats: .* (\d+) event records", out)
    total = sum(events.values())
    lost = sum(int(n) for n in re.findall(r"drained, (\d+) lost", out))
    if not m:
        problems.append("no 'SMMU stats' line")
    elif int(m[1]) + lost != total:
        problems.append(f"driver drained {m[1]} event records and reports {lost} lost; QEMU recorded {total}")

    gic = os.environ.get("EXPECT_GIC")
    if gic:
        if not re.search(rf"^\s+interrupts: GICv{gic}$", out, re.M):
            problems.append(f"the banner does not say 'interrupts: GICv{gic}'")
        if f"via GICv{gic}, serviced by the driver" not in out:
            problems.append(f"the SMMU's interrupts are not serviced via GICv{gic}")
        irqs = re.search(r"SMMU stats: .* (\d+) interrupts", out)
        if not irqs or int(irqs[1]) == 0:
            problems.append("no SMMU interrupt was taken")
        else:
            print(f"trace: {irqs[1]} SMMU interrupts taken through GICv{gic}")
    stage = os.environ.get("EXPECT_STAGE")
    if stage:
        # Every domain and VM must translate with this stage (stage 1 on a
        # stage-1-only SMMU, -machine virt-9.1), and every check must pass.
        want = "stage 1" if stage == "1" else "stage 2 (stage 1 on request)"
        if not re.search(rf"^domains use\s+: {re.escape(want)}$", out, re.M):
            problems.append(f"the feature table does not say 'domains use : {want}'")
        if f"Stage-{stage} isolation:" not in out:
            problems.append(f"the demo does not say 'Stage-{stage} isolation'")
        vm_lines = re.findall(r"^\s+VM \w+: SMMU stage (\d)", out, re.M)
        if not vm_lines or any(v != stage for v in vm_lines):
            problems.append(f"VM lines name SMMU stages {vm_lines}, expected stage {stage} for each")
        # QEMU's own view: every translation and every walk step traced
        # was of this stage.
        steps = collections.Counter()
        for line in lines:
            m = re.search(r"(smmuv3_translate_success|smmu_ptw_level|smmu_ptw_page_pte|smmu_ptw_block_pte)\b.*?\bstage=(\d)", line)
            if m:
                steps[(m[1], m[2])] += 1
        if not any(k[0] == "smmuv3_translate_success" for k in steps):
            problems.append("QEMU traced no smmuv3_translate_success")
        if not any(k[0] == "smmu_ptw_level" for k in steps):
            problems.append("QEMU traced no smmu_ptw_level")
        wrong = {k: n for k, n in steps.items() if k[1] != stage}
        if wrong:
            problems.append(f"traced steps not of stage {stage}: " +
                            ", ".join(f"{n} {ev} stage={st}" for (ev, st), n in sorted(wrong.items())))
        else:
            print(f"trace: all {sum(steps.values())} traced translations and walk steps are stage {stage} "
                  f"({steps[('smmuv3_translate_success', stage)]} translate_success, "
                  f"{steps[('smmu_ptw_level', stage)]} ptw_level)")
        summary = re.findall(r"^\s+(\d+) passed, (\d+) failed$", out, re.M)
        if not summary or summary[-1][1] != "0":
            problems.append(f"the demo's checks did not all pass: {summary[-1:] or 'no summary'}")
        else:
            print(f"trace: {summary[-1][0]} demo checks passed, {len(vm_lines)} VM lines name SMMU stage(s) {sorted(set(vm_lines))}")
    if ALIASES is not None:
        check_aliases(out, traced, events, problems)
    if CPU_EXITS:
        check_cpu_exits(out, lines, problems)
    if re.search(r"^stages\s+: S1 S2 \(nested\)$", out, re.M):
        check_nested(out, lines, problems)

    print(f"trace: {len(claimed)} translations and {len(faults)} fault reports checked "
          f"against {len(translations)} traced translations and {total} traced events; "
          f"{enables} interrupt enables preceded by IRQ_CFG0 = 0")
    if problems:
        print(f"test {NAME} ... FAILED")
        for p in problems:
            print(f"    {p}")
        return 1
    print(f"test {NAME} ... ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
