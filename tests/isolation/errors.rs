//! Rejected calls change nothing: stream IDs, domain lifecycle, VMIDs, map,
//! unmap and protect, and calls on a destroyed domain fail with the exact
//! error and leave the stream table, the stage-2 tables, the VMIDs in use
//! and the command counters as they were.

use super::*;

/// Everything a rejected call must leave alone.
#[derive(Debug, PartialEq, Eq)]
struct State {
    strtab: Vec<u64>,
    stage2: Vec<(DomainId, Result<Vec<u64>, Error>)>,
    commands: u64,
    syncs: u64,
    vmids: usize,
}

fn state(smmu: &Driver, doms: &[DomainId]) -> State {
    let s = smmu.stats().cmdq;
    State {
        strtab: smmu.stream_table_snapshot(),
        stage2: doms.iter().map(|&d| (d, smmu.stage2_snapshot(d))).collect(),
        commands: s.commands,
        syncs: s.syncs,
        vmids: smmu.vmids_in_use(),
    }
}

/// Runs `call`, which must fail with exactly `want`, and checks that the
/// stream table, the stage-2 tables of `doms` (byte for byte), the VMIDs in
/// use and the command counters are unchanged.
#[track_caller]
fn rejected<T: Debug>(
    smmu: &Driver,
    doms: &[DomainId],
    what: &str,
    want: Error,
    call: impl FnOnce() -> Result<T, Error>,
) -> TestResult {
    let before = state(smmu, doms);
    let got = call();
    let after = state(smmu, doms);
    match &got {
        Err(e) if *e == want => {}
        _ => {
            return Err(Failure::compare(
                format!("{what} is rejected"),
                Err::<(), Error>(want),
                got,
            ));
        }
    }
    if before.strtab != after.strtab {
        let i = before
            .strtab
            .iter()
            .zip(&after.strtab)
            .position(|(a, b)| a != b);
        return Err(Failure::compare(
            format!("{what}: stream table unchanged (first differing word {i:?})"),
            before.strtab.len(),
            after.strtab.len(),
        ));
    }
    if before.stage2 != after.stage2 {
        return Err(Failure::new(format!(
            "{what}: stage-2 tables of {doms:?} unchanged"
        )));
    }
    if (before.commands, before.syncs, before.vmids) != (after.commands, after.syncs, after.vmids) {
        return Err(Failure::compare(
            format!("{what}: no commands issued, VMIDs in use unchanged"),
            (before.commands, before.syncs, before.vmids),
            (after.commands, after.syncs, after.vmids),
        ));
    }
    println!("  rejected: {what} -> {want}");
    Ok(())
}

/// A domain with something mapped (so its tables are not trivially empty):
/// a 2 MiB block at IPA_BLOCK and pages at WINDOW.
fn populated_domain(smmu: &Driver, block: &Buf, page: &Page) -> Result<DomainId, Failure> {
    let dom = try_ok!(smmu.create_domain(DomainOptions::new(try_ok!(
        demo::vm_stage2().map_err(Failure::new)
    ))));
    try_ok!(smmu.map(dom, IPA_BLOCK, block.pa(), BLOCK, Perm::ReadWrite));
    try_ok!(smmu.map(dom, WINDOW, page.pa(), PAGE, Perm::ReadWrite));
    try_ok!(smmu.map(dom, WINDOW + 2 * PAGE, page.pa(), PAGE, Perm::Read));
    Ok(dom)
}

pub(super) fn errors_stream_ids() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    let page = Page::new().map_err(Failure::new)?;
    let a = populated_domain(&smmu, &block, &page)?;
    let b = populated_domain(&smmu, &block, &page)?;
    let doms = [a, b];
    let s = sid(&edus[0])?;
    let limit = smmu.sid_limit() as u32;

    rejected(
        &smmu,
        &doms,
        "attach SID = table size",
        Error::SidOutOfRange { sid: limit, limit },
        || smmu.attach(a, limit),
    )?;
    rejected(
        &smmu,
        &doms,
        "attach SID u32::MAX",
        Error::SidOutOfRange {
            sid: u32::MAX,
            limit,
        },
        || smmu.attach(a, u32::MAX),
    )?;
    rejected(
        &smmu,
        &doms,
        "detach SID = table size",
        Error::SidOutOfRange { sid: limit, limit },
        || smmu.detach(limit),
    )?;
    rejected(
        &smmu,
        &doms,
        "attach to unknown domain",
        Error::UnknownDomain(9999),
        || smmu.attach(9999, s),
    )?;
    rejected(
        &smmu,
        &doms,
        "detach never-attached SID",
        Error::SidNotAttached(s),
        || smmu.detach(s),
    )?;

    try_ok!(smmu.attach(a, s));
    rejected(
        &smmu,
        &doms,
        "attach SID twice to the same domain",
        Error::SidAttached(s),
        || smmu.attach(a, s),
    )?;
    rejected(
        &smmu,
        &doms,
        "attach SID attached to another domain",
        Error::SidAttached(s),
        || smmu.attach(b, s),
    )?;
    check_eq!(smmu.domain_of(s), Some(a));
    try_ok!(smmu.detach(s));
    rejected(
        &smmu,
        &doms,
        "detach twice",
        Error::SidNotAttached(s),
        || smmu.detach(s),
    )?;

    // A stream configured outside the domain API (bypass) is not taken over.
    let other = 0x42;
    try_ok!(smmu.set_bypass(other));
    rejected(
        &smmu,
        &doms,
        "attach a bypass SID",
        Error::SidAttached(other),
        || smmu.attach(a, other),
    )?;
    rejected(
        &smmu,
        &doms,
        "detach a bypass SID",
        Error::SidNotAttached(other),
        || smmu.detach(other),
    )?;
    try_ok!(smmu.set_abort(other));
    // ... but once aborted it can be attached.
    try_ok!(smmu.attach(b, other));
    try_ok!(smmu.detach(other));
    try_ok!(smmu.destroy_domain(a));
    try_ok!(smmu.destroy_domain(b));
    Ok(())
}

pub(super) fn errors_domain_lifecycle() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    let page = Page::new().map_err(Failure::new)?;
    let a = populated_domain(&smmu, &block, &page)?;
    let s = sid(&edus[0])?;
    try_ok!(smmu.attach(a, s));
    rejected(
        &smmu,
        &[a],
        "destroy a domain with a stream attached",
        Error::DomainBusy(a),
        || smmu.destroy_domain(a),
    )?;
    // Still working after the refusal.
    page.fill(CANARY);
    edu_ok(edus[0].dma_to_ram(0, WINDOW, 64))?;
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    check!(
        !page.all(CANARY),
        "domain stopped working after a refused destroy"
    );
    rejected(
        &smmu,
        &[a],
        "destroy unknown domain",
        Error::UnknownDomain(a + 100),
        || smmu.destroy_domain(a + 100),
    )?;
    // Too large for this SMMU (IAS/OAS 44 bits): refused, nothing allocated.
    let wide = try_ok!(Stage2Config::new(Granule::K4, 48, 48));
    rejected(
        &smmu,
        &[a],
        "create a domain beyond the SMMU's IAS/OAS",
        Error::Unsupported(smmuv3::error::Unsupported::AddressSize),
        || smmu.create_domain(DomainOptions::new(wide)),
    )?;
    // Clamped to the SMMU, it is accepted.
    let f = smmu.features();
    let clamped = try_ok!(wide.clamp_to(u32::from(f.ias_bits), u32::from(f.oas_bits)));
    check_eq!((clamped.ipa_bits(), clamped.oas_bits()), (44, 44));
    let c = try_ok!(smmu.create_domain(DomainOptions::new(clamped)));
    try_ok!(smmu.destroy_domain(c));
    try_ok!(smmu.detach(s));
    try_ok!(smmu.destroy_domain(a));
    Ok(())
}

pub(super) fn errors_vmid() -> TestResult {
    let smmu = up()?;
    let cfg = try_ok!(demo::vm_stage2().map_err(Failure::new));
    let want = |v| DomainOptions {
        vmid: Some(v),
        ..DomainOptions::new(cfg)
    };
    let a = try_ok!(smmu.create_domain(want(77)));
    check_eq!(try_ok!(smmu.domain_info(a)).vmid, 77);
    rejected(
        &smmu,
        &[a],
        "take VMID 77 twice",
        Error::Invalid(Invalid::IdInUse(77)),
        || smmu.create_domain(want(77)),
    )?;
    rejected(
        &smmu,
        &[a],
        "take reserved VMID 0",
        Error::Invalid(Invalid::IdReserved),
        || smmu.create_domain(want(0)),
    )?;
    // Allocation skips the VMID taken explicitly.
    let mut got = Vec::new();
    for _ in 0..80 {
        let d = try_ok!(smmu.create_domain(DomainOptions::new(cfg)));
        got.push((d, try_ok!(smmu.domain_info(d)).vmid));
    }
    check!(got.iter().all(|&(_, v)| v != 77 && v != 0));
    let mut vmids: Vec<u16> = got.iter().map(|&(_, v)| v).collect();
    vmids.sort_unstable();
    vmids.dedup();
    check_eq!(vmids.len(), 80);
    check_eq!(smmu.vmids_in_use(), 81);
    for (d, _) in got {
        try_ok!(smmu.destroy_domain(d));
    }
    try_ok!(smmu.destroy_domain(a));
    // After destroy the VMID is free again.
    let b = try_ok!(smmu.create_domain(want(77)));
    try_ok!(smmu.destroy_domain(b));
    check_eq!(smmu.vmids_in_use(), 0);

    // Exhaustion, on the allocator the driver uses (65535 domains with
    // tables would not fit in the test's RAM).
    let bits = u32::from(smmu.features().vmid_bits);
    let mut ids = try_ok!(IdAllocator::new(bits, true, IdKind::Vmid));
    let n = (1usize << bits) - 1;
    for i in 1..=n {
        check_eq!(try_ok!(ids.alloc()), i as u16);
    }
    check_eq!(ids.alloc(), Err(Error::VmidExhausted));
    check_eq!(ids.in_use(), n);
    try_ok!(ids.free(1234 % n as u16));
    check_eq!(ids.alloc(), Ok(1234 % n as u16));
    check_eq!(ids.alloc(), Err(Error::VmidExhausted));
    check_eq!(
        ids.alloc_specific(5),
        Err(Error::Invalid(Invalid::IdInUse(5)))
    );
    println!("  VMID allocator: {n} VMIDs, then VmidExhausted");
    Ok(())
}

pub(super) fn errors_map() -> TestResult {
    let smmu = up()?;
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    let page = Page::new().map_err(Failure::new)?;
    let d = populated_domain(&smmu, &block, &page)?;
    let doms = [d];
    let pa = page.pa();
    let rw = Perm::ReadWrite;
    let free_ipa = WINDOW + 0x10 * PAGE;
    rejected(
        &smmu,
        &doms,
        "map misaligned IPA",
        Error::Misaligned {
            addr: free_ipa + 0x800,
            align: PAGE,
        },
        || smmu.map(d, free_ipa + 0x800, pa, PAGE, rw),
    )?;
    rejected(
        &smmu,
        &doms,
        "map misaligned PA",
        Error::Misaligned {
            addr: pa + 4,
            align: PAGE,
        },
        || smmu.map(d, free_ipa, pa + 4, PAGE, rw),
    )?;
    rejected(
        &smmu,
        &doms,
        "map misaligned length",
        Error::Misaligned {
            addr: PAGE + 1,
            align: PAGE,
        },
        || smmu.map(d, free_ipa, pa, PAGE + 1, rw),
    )?;
    rejected(&smmu, &doms, "map zero length", Error::ZeroLength, || {
        smmu.map(d, free_ipa, pa, 0, rw)
    })?;
    let top = !(PAGE - 1);
    rejected(
        &smmu,
        &doms,
        "map IPA range that wraps",
        Error::RangeOverflow {
            addr: top,
            len: 2 * PAGE,
        },
        || smmu.map(d, top, pa, 2 * PAGE, rw),
    )?;
    let end = 1u64 << 40;
    rejected(
        &smmu,
        &doms,
        "map across the 40-bit IPA limit",
        Error::RangeOverflow {
            addr: end - PAGE,
            len: 2 * PAGE,
        },
        || smmu.map(d, end - PAGE, pa, 2 * PAGE, rw),
    )?;
    rejected(
        &smmu,
        &doms,
        "map beyond the IPA limit",
        Error::RangeOverflow {
            addr: end,
            len: PAGE,
        },
        || smmu.map(d, end, pa, PAGE, rw),
    )?;
    let oa_end = 1u64 << 44;
    rejected(
        &smmu,
        &doms,
        "map PA beyond the 44-bit output size",
        Error::RangeOverflow {
            addr: oa_end - PAGE,
            len: 2 * PAGE,
        },
        || smmu.map(d, free_ipa, oa_end - PAGE, 2 * PAGE, rw),
    )?;
    rejected(
        &smmu,
        &doms,
        "map over a mapped page",
        Error::Overlap { addr: WINDOW },
        || smmu.map(d, WINDOW, pa, PAGE, rw),
    )?;
    // Partly free, partly mapped: refused at the first mapped address, and
    // the free part before it is not mapped either.
    rejected(
        &smmu,
        &doms,
        "map a range ending in a mapped page",
        Error::Overlap {
            addr: WINDOW + 2 * PAGE,
        },
        || smmu.map(d, WINDOW + PAGE, pa, 2 * PAGE, rw),
    )?;
    check_eq!(try_ok!(smmu.translate(d, WINDOW + PAGE)), None);
    rejected(
        &smmu,
        &doms,
        "map pages inside a block",
        Error::Overlap {
            addr: IPA_BLOCK + 0x10_0000,
        },
        || smmu.map(d, IPA_BLOCK + 0x10_0000, pa, PAGE, rw),
    )?;
    rejected(
        &smmu,
        &doms,
        "map a range covering a block",
        Error::Overlap { addr: IPA_BLOCK },
        || smmu.map(d, IPA_BLOCK - PAGE, block.pa(), BLOCK, rw),
    )?;
    try_ok!(smmu.destroy_domain(d));
    Ok(())
}

pub(super) fn errors_unmap_and_protect() -> TestResult {
    let smmu = up()?;
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    let page = Page::new().map_err(Failure::new)?;
    let d = populated_domain(&smmu, &block, &page)?;
    let doms = [d];
    let end = 1u64 << 40;
    for (op, is_unmap) in [("unmap", true), ("protect", false)] {
        let call = |ipa: u64, len: u64| {
            if is_unmap {
                smmu.unmap(d, ipa, len)
            } else {
                smmu.protect(d, ipa, len, Perm::Read)
            }
        };
        rejected(
            &smmu,
            &doms,
            &format!("{op} misaligned IPA"),
            Error::Misaligned {
                addr: WINDOW + 8,
                align: PAGE,
            },
            || call(WINDOW + 8, PAGE),
        )?;
        rejected(
            &smmu,
            &doms,
            &format!("{op} misaligned length"),
            Error::Misaligned {
                addr: 0x800,
                align: PAGE,
            },
            || call(WINDOW, 0x800),
        )?;
        rejected(
            &smmu,
            &doms,
            &format!("{op} zero length"),
            Error::ZeroLength,
            || call(WINDOW, 0),
        )?;
        rejected(
            &smmu,
            &doms,
            &format!("{op} wrapping range"),
            Error::RangeOverflow {
                addr: WINDOW,
                len: !(PAGE - 1),
            },
            || call(WINDOW, !(PAGE - 1)),
        )?;
        rejected(
            &smmu,
            &doms,
            &format!("{op} beyond the IPA limit"),
            Error::RangeOverflow {
                addr: end - PAGE,
                len: 2 * PAGE,
            },
            || call(end - PAGE, 2 * PAGE),
        )?;
        rejected(
            &smmu,
            &doms,
            &format!("{op} never-mapped page"),
            Error::NotMapped { addr: IPA_UNMAPPED },
            || call(IPA_UNMAPPED, PAGE),
        )?;
        // WINDOW mapped, WINDOW + PAGE not: nothing happens to WINDOW either.
        rejected(
            &smmu,
            &doms,
            &format!("{op} a range with a hole"),
            Error::NotMapped {
                addr: WINDOW + PAGE,
            },
            || call(WINDOW, 3 * PAGE),
        )?;
        rejected(
            &smmu,
            &doms,
            &format!("{op} in an unknown domain"),
            Error::UnknownDomain(d + 100),
            || {
                if is_unmap {
                    smmu.unmap(d + 100, WINDOW, PAGE)
                } else {
                    smmu.protect(d + 100, WINDOW, PAGE, Perm::Read)
                }
            },
        )?;
    }
    // The mappings the rejected calls touched are intact.
    let t = try_ok!(smmu.translate(d, WINDOW)).ok_or(Failure::new("WINDOW mapped"))?;
    check_eq!((t.pa, t.perm), (page.pa(), Perm::ReadWrite));
    let t = try_ok!(smmu.translate(d, IPA_BLOCK + PAGE)).ok_or(Failure::new("block mapped"))?;
    check_eq!((t.size, t.perm), (BLOCK, Perm::ReadWrite));
    // Unmapping the whole block is fine.
    try_ok!(smmu.unmap(d, IPA_BLOCK, BLOCK));
    try_ok!(smmu.destroy_domain(d));
    Ok(())
}

pub(super) fn errors_destroyed_domain() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    let page = Page::new().map_err(Failure::new)?;
    let live = populated_domain(&smmu, &block, &page)?;
    let gone = populated_domain(&smmu, &block, &page)?;
    try_ok!(smmu.destroy_domain(gone));
    let doms = [live];
    let s = sid(&edus[0])?;
    let u = Error::UnknownDomain(gone);
    rejected(&smmu, &doms, "map in a destroyed domain", u, || {
        smmu.map(gone, IPA_UNMAPPED, page.pa(), PAGE, Perm::ReadWrite)
    })?;
    rejected(&smmu, &doms, "unmap in a destroyed domain", u, || {
        smmu.unmap(gone, WINDOW, PAGE)
    })?;
    rejected(&smmu, &doms, "protect in a destroyed domain", u, || {
        smmu.protect(gone, WINDOW, PAGE, Perm::Read)
    })?;
    rejected(&smmu, &doms, "attach to a destroyed domain", u, || {
        smmu.attach(gone, s)
    })?;
    rejected(&smmu, &doms, "destroy a destroyed domain", u, || {
        smmu.destroy_domain(gone)
    })?;
    rejected(&smmu, &doms, "translate in a destroyed domain", u, || {
        smmu.translate(gone, WINDOW)
    })?;
    rejected(&smmu, &doms, "domain_info of a destroyed domain", u, || {
        smmu.domain_info(gone)
    })?;
    rejected(
        &smmu,
        &doms,
        "stage2_snapshot of a destroyed domain",
        u,
        || smmu.stage2_snapshot(gone).map(|v| v.len()),
    )?;
    check_eq!(try_ok!(smmu.ste(s)).config(), SteConfig::Abort);
    check_eq!(smmu.vmids_in_use(), 1);
    try_ok!(smmu.destroy_domain(live));
    Ok(())
}
