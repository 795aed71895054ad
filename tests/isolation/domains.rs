//! Several devices per domain, several domains at once, and a destroyed
//! domain's VMID reused without stale translations.

use super::*;

pub(super) fn one_domain_several_devices() -> TestResult {
    let edus = edus_at_least(2)?;
    let smmu = up()?;
    let dom = try_ok!(
        smmu.create_domain(DomainOptions::new(try_ok!(Stage2Config::new(
            Granule::K4,
            40,
            44
        ))))
    );
    let (data, source) = (
        Page::new().map_err(Failure::new)?,
        Page::new().map_err(Failure::new)?,
    );
    source.fill_pattern(0x77);
    try_ok!(smmu.map(dom, IPA_DATA, data.pa(), PAGE, Perm::ReadWrite));
    try_ok!(smmu.map(dom, IPA_SOURCE, source.pa(), PAGE, Perm::Read));
    let mut sids = Vec::new();
    for e in &edus {
        let s = sid(e)?;
        try_ok!(smmu.attach(dom, s));
        sids.push(s);
    }
    let mut info = try_ok!(smmu.domain_info(dom));
    info.sids.sort_unstable();
    let mut want = sids.clone();
    want.sort_unstable();
    check_eq!(info.sids, want);
    for &s in &sids {
        check_eq!(try_ok!(smmu.ste(s)).vmid(), info.vmid);
        check_eq!(try_ok!(smmu.ste(s)).s2ttb(), info.root);
    }
    // Each device reads its own slice of the shared source page and writes
    // it to its own slice of the shared data page.
    let len = 0x80usize;
    for (i, e) in edus.iter().enumerate() {
        let off = 0x100 * (i + 1);
        edu_ok(e.dma_from_ram(off, IPA_SOURCE + off as u64, len))?;
        edu_ok(e.dma_to_ram(off, IPA_DATA + off as u64, len))?;
    }
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    for i in 0..edus.len() {
        let off = 0x100 * (i + 1);
        check_eq!((i, data.read(off, len)), (i, source.read(off, len)));
    }
    for i in 0..PAGE as usize {
        let slice = (i / 0x100).wrapping_sub(1);
        if slice >= edus.len() || i % 0x100 >= len {
            check!(
                data.get(i) == CANARY,
                "byte {i:#x} outside every slice changed"
            );
        }
    }
    // Both are confined to the same map: an unmapped IPA faults for each,
    // with its own StreamID.
    for (e, &s) in edus.iter().zip(&sids) {
        edu_ok(e.dma_to_ram(0, IPA_UNMAPPED, 64))?;
        let faults = demo::report_faults(&smmu, &edus);
        expect_one_fault(&faults, EventType::FTranslation, s, IPA_UNMAPPED)?;
    }
    // Detaching one leaves the others working.
    try_ok!(smmu.detach(sids[0]));
    data.fill(CANARY);
    edu_ok(edus[0].dma_to_ram(0, IPA_DATA, 64))?;
    let _ = demo::report_faults(&smmu, &edus);
    check!(data.all(CANARY), "detached device still writes");
    edu_ok(edus[1].dma_to_ram(0, IPA_DATA, 64))?;
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    check!(!data.all(CANARY), "still-attached device blocked");
    check_eq!(try_ok!(smmu.domain_info(dom)).sids.len(), sids.len() - 1);
    for &s in &sids[1..] {
        try_ok!(smmu.detach(s));
    }
    try_ok!(smmu.destroy_domain(dom));
    Ok(())
}

pub(super) fn several_domains_at_once() -> TestResult {
    const N: usize = 4;
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let cfg = try_ok!(Stage2Config::new(Granule::K4, 40, 44));
    let mut doms = Vec::new();
    let mut pages = Vec::new();
    for _ in 0..N {
        let d = try_ok!(smmu.create_domain(DomainOptions::new(cfg)));
        let p = Page::new().map_err(Failure::new)?;
        try_ok!(smmu.map(d, IPA_DATA, p.pa(), PAGE, Perm::ReadWrite));
        doms.push(d);
        pages.push(p);
    }
    check_eq!(smmu.vmids_in_use(), N);
    let infos: Vec<_> = doms.iter().map(|&d| smmu.domain_info(d)).collect();
    for (i, a) in infos.iter().enumerate() {
        let a = a.as_ref().map_err(|e| Failure::new(format!("{e}")))?;
        check!(a.vmid != 0, "VMID 0 handed out");
        for b in infos[i + 1..].iter().flatten() {
            check!(a.vmid != b.vmid, "two domains share VMID {}", a.vmid);
            check!(a.root != b.root, "two domains share a root table");
        }
    }
    println!(
        "  {N} domains: VMIDs {:?}",
        infos.iter().flatten().map(|i| i.vmid).collect::<Vec<_>>()
    );
    // Every device attached to a different domain at the same time.
    let mut attached = Vec::new();
    for (j, e) in edus.iter().enumerate().take(N) {
        try_ok!(smmu.attach(doms[j], sid(e)?));
        attached.push(j);
    }
    for (j, e) in edus.iter().enumerate().take(N) {
        edu_ok(e.dma_to_ram(0, IPA_DATA + 0x40 * j as u64, 0x40))?;
    }
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    for (k, p) in pages.iter().enumerate() {
        if attached.contains(&k) {
            check!(
                p.first_change_outside(0x40 * k, 0x40 * (k + 1), CANARY)
                    .is_none(),
                "domain {k}'s page written outside its device's slice"
            );
        } else {
            check!(p.all(CANARY), "page of domain {k} (no device) changed");
        }
    }
    for e in edus.iter().take(N) {
        try_ok!(smmu.detach(sid(e)?));
    }
    // One device visiting every domain in turn reaches only that domain's page.
    let e = &edus[0];
    let s = sid(e)?;
    for (k, &dom) in doms.iter().enumerate() {
        for p in &pages {
            p.fill(CANARY);
        }
        try_ok!(smmu.attach(dom, s));
        edu_ok(e.dma_to_ram(0, IPA_DATA + 0x200, 0x20))?;
        try_ok!(smmu.detach(s));
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
        for (i, p) in pages.iter().enumerate() {
            let changed = !p.all(CANARY);
            check_eq!((k, i, changed), (k, i, i == k));
        }
    }
    for d in doms {
        try_ok!(smmu.destroy_domain(d));
    }
    check_eq!(smmu.vmids_in_use(), 0);
    Ok(())
}

/// A destroyed domain's VMID is handed out again; its cached translations
/// must not survive into the new domain.
pub(super) fn vmid_reuse_after_destroy_sees_no_stale_entries() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let e = &edus[0];
    let s = sid(e)?;
    let cfg = try_ok!(Stage2Config::new(Granule::K4, 40, 44));
    let (old, new) = (
        Page::new().map_err(Failure::new)?,
        Page::new().map_err(Failure::new)?,
    );

    let a = try_ok!(smmu.create_domain(DomainOptions::new(cfg)));
    let vmid_a = try_ok!(smmu.domain_info(a)).vmid;
    try_ok!(smmu.map(a, IPA_DATA, old.pa(), PAGE, Perm::ReadWrite));
    try_ok!(smmu.attach(a, s));
    edu_ok(e.dma_to_ram(0, IPA_DATA, 64))?; // cached: (VMID a, IPA_DATA) -> old
    check!(!old.all(CANARY));
    try_ok!(smmu.detach(s));
    try_ok!(smmu.destroy_domain(a));

    let b = try_ok!(smmu.create_domain(DomainOptions::new(cfg)));
    check_eq!(try_ok!(smmu.domain_info(b)).vmid, vmid_a);
    try_ok!(smmu.map(b, IPA_DATA, new.pa(), PAGE, Perm::ReadWrite));
    try_ok!(smmu.attach(b, s));
    old.fill(CANARY);
    edu_ok(e.dma_to_ram(0, IPA_DATA, 64))?;
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    check!(
        old.all(CANARY),
        "stale translation of the destroyed domain used"
    );
    check!(
        !new.all(CANARY),
        "write did not reach the new domain's page"
    );
    try_ok!(smmu.detach(s));
    try_ok!(smmu.destroy_domain(b));
    Ok(())
}
