//! 2 MiB blocks: DMA through a block, and unmapping or protecting one
//! page of a block splits it.

use super::*;

pub(super) fn block_2mib_translates_and_dma_lands() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let dom = try_ok!(smmu.create_domain(DomainOptions::new(try_ok!(
        demo::vm_stage2().map_err(Failure::new)
    ))));
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    check_eq!(block.pa() % BLOCK, 0);
    let root_bytes = try_ok!(smmu.domain_info(dom)).table_bytes;
    try_ok!(smmu.map(dom, IPA_BLOCK, block.pa(), BLOCK, Perm::ReadWrite));
    // One block descriptor: a level-2 table was added, no level-3 table.
    check_eq!(
        try_ok!(smmu.domain_info(dom)).table_bytes,
        root_bytes + PAGE as usize
    );
    for off in [0, 0x1234, BLOCK / 2 + 0x10, BLOCK - 4] {
        let t = try_ok!(smmu.translate(dom, IPA_BLOCK + off)).ok_or(Failure::new("mapped"))?;
        check_eq!((off, t.pa, t.size), (off, block.pa() + off, BLOCK));
    }
    check_eq!(try_ok!(smmu.translate(dom, IPA_BLOCK + BLOCK)), None);

    let e = &edus[0];
    let s = sid(e)?;
    try_ok!(smmu.attach(dom, s));
    block.fill(CANARY);
    // A pattern in the block's middle is read by the device and written back
    // further on, both through the block mapping.
    let (src, dst, len) = (
        BLOCK as usize / 2 + 0x3000,
        BLOCK as usize / 2 + 0x1_0800,
        0x200,
    );
    for i in 0..len {
        block.set(src + i, (i as u8).wrapping_mul(7) | 1);
    }
    edu_ok(e.dma_from_ram(0, IPA_BLOCK + src as u64, len))?;
    edu_ok(e.dma_to_ram(0, IPA_BLOCK + dst as u64, len))?;
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    check_eq!(block.read(dst, len), block.read(src, len));
    for i in 0..block.len() {
        if !(src..src + len).contains(&i) && !(dst..dst + len).contains(&i) {
            check!(block.get(i) == CANARY, "block byte {i:#x} changed");
        }
    }
    println!(
        "  2 MiB block IPA {IPA_BLOCK:#x} -> PA {:#x}: {len} bytes landed at PA {:#x}",
        block.pa(),
        block.pa() + dst as u64
    );
    // Just past the block is unmapped.
    edu_ok(e.dma_to_ram(0, IPA_BLOCK + BLOCK, 64))?;
    let faults = demo::report_faults(&smmu, &edus);
    expect_one_fault(&faults, EventType::FTranslation, s, IPA_BLOCK + BLOCK)?;

    // Unmapping the whole block: one range command, then the block faults.
    let before = smmu.stats().cmdq;
    try_ok!(smmu.unmap(dom, IPA_BLOCK, BLOCK));
    let after = smmu.stats().cmdq;
    check_eq!(
        (after.commands - before.commands, after.syncs - before.syncs),
        (1, 1)
    );
    block.fill(CANARY);
    edu_ok(e.dma_to_ram(0, IPA_BLOCK + dst as u64, 64))?;
    let faults = demo::report_faults(&smmu, &edus);
    expect_one_fault(&faults, EventType::FTranslation, s, IPA_BLOCK + dst as u64)?;
    check!(
        block.first_change_outside(0, 0, CANARY).is_none(),
        "stale block entry used"
    );
    try_ok!(smmu.detach(s));
    try_ok!(smmu.destroy_domain(dom));
    Ok(())
}

/// Issue 9: unmapping one 4 KiB page from the middle of a 2 MiB block (a
/// balloon) splits the block: DMA to that page faults, DMA to its
/// neighbours still lands. Protecting another page of it read-only makes
/// only that page fault on writes.
pub(super) fn unmap_one_page_splits_a_2mib_block() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let dom = try_ok!(smmu.create_domain(DomainOptions::new(try_ok!(
        demo::vm_stage2().map_err(Failure::new)
    ))));
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    try_ok!(smmu.map(dom, IPA_BLOCK, block.pa(), BLOCK, Perm::ReadWrite));
    let e = &edus[0];
    let s = sid(e)?;
    try_ok!(smmu.attach(dom, s));
    let hole = BLOCK / 2;
    try_ok!(smmu.unmap(dom, IPA_BLOCK + hole, PAGE));
    check_eq!(try_ok!(smmu.translate(dom, IPA_BLOCK + hole)), None);
    let ro = BLOCK / 4;
    try_ok!(smmu.protect(dom, IPA_BLOCK + ro, PAGE, Perm::Read));
    block.fill(CANARY);
    // The hole faults and nothing is written.
    edu_ok(e.dma_to_ram(0, IPA_BLOCK + hole, 64))?;
    let faults = demo::report_faults(&smmu, &edus);
    expect_one_fault(&faults, EventType::FTranslation, s, IPA_BLOCK + hole)?;
    // The read-only page refuses the write.
    edu_ok(e.dma_to_ram(0, IPA_BLOCK + ro, 64))?;
    let faults = demo::report_faults(&smmu, &edus);
    expect_one_fault(&faults, EventType::FPermission, s, IPA_BLOCK + ro)?;
    check!(
        block.first_change_outside(0, 0, CANARY).is_none(),
        "a faulting DMA wrote memory"
    );
    // Every neighbour still works, at its old physical address.
    for off in [
        0,
        hole - PAGE,
        hole + PAGE,
        ro - PAGE,
        ro + PAGE,
        BLOCK - PAGE,
    ] {
        let t = try_ok!(smmu.translate(dom, IPA_BLOCK + off))
            .ok_or(Failure::new("neighbour mapped"))?;
        check_eq!((off, t.pa, t.size), (off, block.pa() + off, PAGE));
        edu_ok(e.dma_to_ram(0, IPA_BLOCK + off, 64))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
        check!(
            block.get(off as usize) != CANARY,
            "DMA to neighbour {off:#x} did not land"
        );
    }
    println!(
        "  2 MiB block split: page +{hole:#x} unmapped, +{ro:#x} read-only, neighbours unchanged"
    );
    try_ok!(smmu.detach(s));
    try_ok!(smmu.destroy_domain(dom));
    Ok(())
}
