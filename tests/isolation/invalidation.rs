//! Stage-2 invalidation judged by DMA and by the commands issued:
//! protect() downgrading a cached write, range commands for unmaps of pages
//! and odd ranges, the planner's fallback, and unmapping a whole 44-bit IPA
//! space.

use super::*;

pub(super) fn protect_downgrade_invalidates_cached_write() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let vms = vms_for(&smmu, &edus)?;
    for (e, vm) in edus.iter().zip(&vms) {
        // A write that works (and leaves a TLB entry with write permission).
        edu_ok(e.dma_to_ram(0, IPA_DATA, 64))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
        check!(!vm.data.all(CANARY), "write before protect did not land");

        let before = smmu.stats().cmdq;
        try_ok!(smmu.protect(vm.domain, IPA_DATA, PAGE, Perm::Read));
        let after = smmu.stats().cmdq;
        check_eq!(
            (after.commands - before.commands, after.syncs - before.syncs),
            (1, 1)
        );
        let t = try_ok!(smmu.translate(vm.domain, IPA_DATA)).ok_or(Failure::new("mapped"))?;
        check_eq!((t.pa, t.perm), (vm.data.pa(), Perm::Read));

        vm.data.fill(CANARY);
        edu_ok(e.dma_to_ram(0, IPA_DATA, 64))?;
        let faults = demo::report_faults(&smmu, &edus);
        expect_one_fault(&faults, EventType::FPermission, vm.sid, IPA_DATA)?;
        check!(
            vm.data.all(CANARY),
            "write after RW -> R landed: stale TLB entry"
        );
        // Reads still work.
        edu_ok(e.dma_from_ram(0, IPA_DATA, 64))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;

        // And back to read-write.
        try_ok!(smmu.protect(vm.domain, IPA_DATA, PAGE, Perm::ReadWrite));
        edu_ok(e.dma_to_ram(0x800, IPA_DATA + 0x800, 64))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
        check!(!vm.data.all(CANARY), "write after R -> RW did not land");
    }
    teardown_all(&smmu, &vms)
}

/// Pages the SMMU invalidates for `plan`, as it decodes the encoded
/// commands (so field truncation shows up); `None` for a fallback.
fn pages_covered(plan: &InvalidationPlan) -> Option<u64> {
    match plan {
        InvalidationPlan::Fallback(_) => None,
        InvalidationPlan::Precise(cmds) => Some(
            cmds.iter()
                .map(|c| match Command::decode(c.encode()) {
                    Command::TlbiS2Ipa { range: Some(r), .. } => r.pages(),
                    Command::TlbiS2Ipa { range: None, .. } => 1,
                    _ => 0,
                })
                .sum(),
        ),
    }
}

pub(super) fn unmap_2mib_of_pages_is_one_range_command() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    check!(smmu.features().ril, "QEMU's SMMU has RIL");
    let dom = try_ok!(smmu.create_domain(DomainOptions::new(try_ok!(
        demo::vm_stage2().map_err(Failure::new)
    ))));
    let vmid = try_ok!(smmu.domain_info(dom)).vmid;
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    // 512 separate 4K mappings (reversed page order: no block possible).
    for i in 0..512u64 {
        try_ok!(smmu.map(
            dom,
            IPA_BLOCK + i * PAGE,
            block.pa() + (511 - i) * PAGE,
            PAGE,
            Perm::ReadWrite
        ));
    }
    for i in [0u64, 255, 511] {
        let t = try_ok!(smmu.translate(dom, IPA_BLOCK + i * PAGE)).ok_or(Failure::new("mapped"))?;
        check_eq!((i, t.size, t.pa), (i, PAGE, block.pa() + (511 - i) * PAGE));
    }
    let e = &edus[0];
    let s = sid(e)?;
    try_ok!(smmu.attach(dom, s));
    block.fill(CANARY);
    // Cache a few translations across the range.
    for i in [0u64, 256, 511] {
        edu_ok(e.dma_to_ram(0, IPA_BLOCK + i * PAGE, 32))?;
        let pa_off = ((511 - i) * PAGE) as usize;
        check!(
            block.read(pa_off, 32) != [CANARY; 32],
            "write to page {i} did not land at its PA"
        );
    }
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;

    let plan = planned(&smmu, vmid, IPA_BLOCK, BLOCK);
    check_eq!(plan.commands().len(), 1);
    check_eq!(pages_covered(&plan), Some(512));
    let before = smmu.stats().cmdq;
    try_ok!(smmu.unmap(dom, IPA_BLOCK, BLOCK));
    let after = smmu.stats().cmdq;
    check_eq!(
        (
            after.commands - before.commands,
            after.syncs - before.syncs,
            after.prod_writes - before.prod_writes
        ),
        (1, 1, 1)
    );
    println!(
        "  unmap 512 pages: 1 TLBI_S2_IPA {:?} + 1 CMD_SYNC",
        plan.commands()[0]
    );
    block.fill(CANARY);
    for i in [0u64, 256, 511] {
        edu_ok(e.dma_to_ram(0, IPA_BLOCK + i * PAGE, 32))?;
        let faults = demo::report_faults(&smmu, &edus);
        expect_one_fault(&faults, EventType::FTranslation, s, IPA_BLOCK + i * PAGE)?;
    }
    check!(
        block.first_change_outside(0, 0, CANARY).is_none(),
        "stale page entry used"
    );
    // The emptied level-3 table was freed: only the root and level 2 remain
    // (level-2 table emptied too: only the root).
    check_eq!(
        try_ok!(smmu.domain_info(dom)).table_bytes,
        demo::vm_stage2().map_err(Failure::new)?.root_table_bytes()
    );
    try_ok!(smmu.detach(s));
    try_ok!(smmu.destroy_domain(dom));
    Ok(())
}

pub(super) fn unmap_odd_range_uses_planned_commands() -> TestResult {
    let smmu = up()?;
    let dom = try_ok!(smmu.create_domain(DomainOptions::new(try_ok!(
        demo::vm_stage2().map_err(Failure::new)
    ))));
    let vmid = try_ok!(smmu.domain_info(dom)).vmid;
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    // 33 pages = 0b100001: two range commands (5-bit NUM windows);
    // 1057 = 0b100_0010_0001 pages: three; 1 and 32 pages: one.
    for (pages, want) in [(33u64, 2usize), (1057, 3), (1, 1), (32, 1)] {
        let len = pages * PAGE;
        let ipa = IPA_BLOCK + PAGE; // not aligned to anything larger
        try_ok!(smmu.map(dom, ipa, block.pa(), len, Perm::ReadWrite));
        let plan = planned(&smmu, vmid, ipa, len);
        check!(!plan.is_fallback());
        check_eq!((pages, plan.commands().len()), (pages, want));
        check_eq!((pages, pages_covered(&plan)), (pages, Some(pages)));
        let before = smmu.stats().cmdq;
        try_ok!(smmu.unmap(dom, ipa, len));
        let after = smmu.stats().cmdq;
        check_eq!(
            (
                pages,
                after.commands - before.commands,
                after.syncs - before.syncs
            ),
            (pages, want as u64, 1)
        );
    }
    try_ok!(smmu.destroy_domain(dom));
    Ok(())
}

pub(super) fn invalidation_planner_fallback() -> TestResult {
    let vmid = 7;
    // Without RIL: one command per page up to the budget, then one VMALL.
    let p = expert::s2_invalidation(
        vmid,
        0x4000_0000,
        MAX_RANGE_COMMANDS as u64 * PAGE,
        12,
        false,
        MAX_RANGE_COMMANDS,
    );
    check!(!p.is_fallback());
    check_eq!(p.commands().len(), MAX_RANGE_COMMANDS);
    check_eq!(pages_covered(&p), Some(MAX_RANGE_COMMANDS as u64));
    let p = expert::s2_invalidation(
        vmid,
        0x4000_0000,
        (MAX_RANGE_COMMANDS as u64 + 1) * PAGE,
        12,
        false,
        MAX_RANGE_COMMANDS,
    );
    check_eq!(
        p,
        InvalidationPlan::Fallback(Command::TlbiS12Vmall { vmid })
    );
    // With RIL a budget the range cannot meet falls back too (1057 =
    // 0b100_0010_0001 pages need three commands).
    let p = expert::s2_invalidation(vmid, 0, 1057 * PAGE, 12, true, 2);
    check_eq!(
        p,
        InvalidationPlan::Fallback(Command::TlbiS12Vmall { vmid })
    );
    // With RIL and the driver's budget, every range within a 48-bit IPA
    // space is precise or a fallback, and a precise plan covers exactly its
    // pages as the SMMU decodes the commands.
    for &(ipa, len) in &[
        (0u64, 1u64 << 30),
        (0x1000, (1 << 40) - 0x1000),
        (0, 1 << 40),
        (0, 1 << 43),
        (0, 1 << 44),
        (0, (1 << 44) + (1 << 43)),
        (0, 1 << 47),
        (0x1000, (1 << 48) - 0x2000),
        (0, 1 << 48),
    ] {
        let p = expert::s2_invalidation(vmid, ipa, len, 12, true, MAX_RANGE_COMMANDS);
        if let Some(pages) = pages_covered(&p) {
            check_eq!((ipa, len, pages), (ipa, len, len / PAGE));
            check!(p.commands().len() <= MAX_RANGE_COMMANDS);
        }
    }
    // The driver's domain invalidation uses this planner: a range past the
    // budget reaches the SMMU as one TLBI_S12_VMALL + SYNC, i.e. one command.
    Ok(())
}

/// Unmapping all of a 44-bit IPA space (a VM teardown) must drop every
/// cached translation, however large the range.
pub(super) fn unmap_whole_44bit_ipa_space_invalidates_everything() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let cfg = try_ok!(Stage2Config::new(Granule::K4, 44, 44));
    let dom = try_ok!(smmu.create_domain(DomainOptions::new(cfg)));
    let vmid = try_ok!(smmu.domain_info(dom)).vmid;
    let whole = 1u64 << 44;
    // Identity: IPA = PA over the whole space, as 1 GiB blocks.
    try_ok!(smmu.map(dom, 0, 0, whole, Perm::ReadWrite));
    let page = Page::new().map_err(Failure::new)?;
    let t = try_ok!(smmu.translate(dom, page.pa())).ok_or(Failure::new("mapped"))?;
    check_eq!((t.pa, t.size), (page.pa(), 1u64 << 30));
    let e = &edus[0];
    let s = sid(e)?;
    try_ok!(smmu.attach(dom, s));
    edu_ok(e.dma_to_ram(0, page.pa(), 64))?;
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    check!(!page.all(CANARY), "identity-mapped write did not land");

    let plan = planned(&smmu, vmid, 0, whole);
    println!("  unmap 0..2^44: plan {plan:?}");
    let before = smmu.stats().cmdq;
    try_ok!(smmu.unmap(dom, 0, whole));
    let after = smmu.stats().cmdq;
    check_eq!(
        after.commands - before.commands,
        plan.commands().len() as u64
    );
    check_eq!(after.syncs - before.syncs, 1);
    page.fill(CANARY);
    edu_ok(e.dma_to_ram(0, page.pa(), 64))?;
    let faults = demo::report_faults(&smmu, &edus);
    check!(
        page.all(CANARY),
        "write landed after unmapping everything: stale 1 GiB entry"
    );
    expect_one_fault(&faults, EventType::FTranslation, s, page.pa())?;
    check!(
        plan.is_fallback() || pages_covered(&plan) == Some(whole / PAGE),
        "plan covers {:?} pages of {}",
        pages_covered(&plan),
        whole / PAGE
    );
    try_ok!(smmu.detach(s));
    try_ok!(smmu.destroy_domain(dom));
    Ok(())
}
