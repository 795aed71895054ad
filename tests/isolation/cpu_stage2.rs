//! Stage 2 shared with the CPU: tables the hypervisor owns (attached by
//! VTCR + root, both VMID policies), and a CPU's VTCR_EL2 driving the STE.

use super::*;

/// Issue 9, hypervisor-owned tables: the image builds a VM's stage 2 with
/// aarch64-paging; the driver attaches it by VTCR + root, reserves the VMID,
/// never edits it, and `invalidate` is what makes an unmap visible to the
/// SMMU. A second VM on driver-owned tables with a private VMID shows that
/// an SMMU TLBI for one VMID leaves the other's cached translations alone.
pub(super) fn hypervisor_owned_tables_and_both_vmid_policies() -> TestResult {
    let edus = edus_at_least(2)?;
    let smmu = up()?;
    let (ea, eb) = (&edus[0], &edus[1]);
    let (sa, sb) = (sid(ea)?, sid(eb)?);
    let ipa = IPA_DATA;
    // VM B: the hypervisor's tables, the CPU's VMID (0x77) as S2VMID.
    let pb = Buf::new(PAGE as usize, PAGE as usize)?;
    // Each VM also maps a source page at ipa + PAGE: its device first reads
    // a pattern from there into its buffer, and writes that pattern later.
    let src = Buf::new(PAGE as usize, PAGE as usize)?;
    src.fill(0x5A);
    let mut hv = image::hvtables::HvStage2::new();
    try_ok!(
        hv.map(ipa, pb.pa(), PAGE, true)
            .map_err(|e| format!("{e:?}"))
    );
    try_ok!(
        hv.map(ipa + PAGE, src.pa(), PAGE, false)
            .map_err(|e| format!("{e:?}"))
    );
    let cpu_vmid = 0x77;
    let b = try_ok!(smmu.create_external_domain(ExternalStage2 {
        vtcr: image::hvtables::HvStage2::vtcr(),
        root: hv.root(),
        vmid: Some(cpu_vmid),
        access_flag_fault_disable: true,
    }));
    // The VMID is reserved: no other domain may take it.
    let cfg = try_ok!(demo::vm_stage2().map_err(Failure::new));
    check!(
        smmu.create_domain(DomainOptions {
            vmid: Some(cpu_vmid),
            ..DomainOptions::new(cfg)
        })
        .is_err()
    );
    // VM A: driver-owned tables, a VMID from the SMMU's private space.
    let pa_page = Buf::new(PAGE as usize, PAGE as usize)?;
    let a = try_ok!(smmu.create_domain(DomainOptions::new(cfg)));
    try_ok!(smmu.map(a, ipa, pa_page.pa(), PAGE, Perm::ReadWrite));
    try_ok!(smmu.map(a, ipa + PAGE, src.pa(), PAGE, Perm::Read));
    let vmid_a = try_ok!(smmu.domain_info(a)).vmid;
    check!(vmid_a != cpu_vmid);
    try_ok!(smmu.attach(a, sa));
    try_ok!(smmu.attach(b, sb));
    let ste = try_ok!(smmu.ste(sb));
    check_eq!((ste.vmid(), ste.s2ttb()), (cpu_vmid, hv.root()));
    check_eq!(
        smmu.map(b, ipa, pb.pa(), PAGE, Perm::Read),
        Err(Error::ExternalTables(b))
    );
    // Both devices read the pattern through their VM's tables (B's: the
    // hypervisor's), then write the same IPA: each lands in its own page.
    edu_ok(ea.dma_from_ram(0, ipa + PAGE, 64))?;
    edu_ok(eb.dma_from_ram(0, ipa + PAGE, 64))?;
    pa_page.fill(CANARY);
    pb.fill(CANARY);
    edu_ok(ea.dma_to_ram(0, ipa, 64))?;
    edu_ok(eb.dma_to_ram(0, ipa, 64))?;
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    check_eq!(
        (pa_page.get(0), pb.get(0), pb.get(63), pb.get(64)),
        (0x5A, 0x5A, 0x5A, CANARY)
    );
    // The hypervisor unmaps B's page in its own tables but (yet) only the
    // other VM's TLB is invalidated: B's device still uses its cached
    // translation, A's TLBI did not touch VMID 0x77.
    try_ok!(hv.unmap(ipa, PAGE).map_err(|e| format!("{e:?}")));
    try_ok!(smmu.invalidate(a, ipa, PAGE));
    pb.fill(CANARY);
    edu_ok(eb.dma_to_ram(0, ipa, 64))?;
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    check!(
        pb.get(0) == 0x5A,
        "B's cached translation survived A's TLBI"
    );
    // Now B's own invalidation: the page faults and nothing is written.
    try_ok!(smmu.invalidate(b, ipa, PAGE));
    pb.fill(CANARY);
    edu_ok(eb.dma_to_ram(0, ipa, 64))?;
    let faults = demo::report_faults(&smmu, &edus);
    expect_one_fault(&faults, EventType::FTranslation, sb, ipa)?;
    check!(pb.all(CANARY), "DMA after invalidate reached the old page");
    // And A was never disturbed.
    pa_page.fill(CANARY);
    edu_ok(ea.dma_to_ram(0, ipa, 64))?;
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    check!(pa_page.get(0) == 0x5A);
    println!(
        "  hypervisor-owned tables (aarch64-paging, root {:#x}, {} table pages), VMID {cpu_vmid:#x} = CPU's; driver-owned VMID {vmid_a}: TLBI for one left the other",
        hv.root(),
        hv.table_pages()
    );
    try_ok!(smmu.detach(sa));
    try_ok!(smmu.detach(sb));
    try_ok!(smmu.destroy_domain(a));
    try_ok!(smmu.destroy_domain(b));
    Ok(())
}

/// VTCR_EL2 fields (Arm ARM): T0SZ [5:0], SL0 [7:6], IRGN0 [9:8],
/// ORGN0 [11:10], SH0 [13:12], TG0 [15:14], PS [18:16], RES1 bit 31.
const fn vtcr(t0sz: u64, sl0: u64, tg0: u64, ps: u64) -> u64 {
    t0sz | sl0 << 6 | 1 << 8 | 1 << 10 | 3 << 12 | tg0 << 14 | ps << 16 | 1 << 31
}

fn bits(v: u64, lo: u32, n: u32) -> u64 {
    (v >> lo) & ((1 << n) - 1)
}

pub(super) fn vtcr_from_cpu_stage2_drives_ste_and_dma() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let e = &edus[0];
    let s = sid(e)?;
    for (what, v, granule) in [
        // 4K granule, 40-bit IPA, start level 1 (SL0 = 1), PS = 44 bits.
        (
            "4K, 40-bit IPA, SL0=1, PS=44",
            vtcr(24, 1, 0b00, 0b100),
            1u64 << 12,
        ),
        // 4K, 44-bit IPA, start level 0 (SL0 = 2).
        (
            "4K, 44-bit IPA, SL0=2, PS=44",
            vtcr(20, 2, 0b00, 0b100),
            1 << 12,
        ),
        // 64K granule, 42-bit IPA, start level 2 (SL0 = 1), PS = 42 bits.
        (
            "64K, 42-bit IPA, SL0=1, PS=42",
            vtcr(22, 1, 0b01, 0b011),
            1 << 16,
        ),
        // 16K granule, 36-bit IPA, start level 2 (SL0 = 1), PS = 40 bits.
        (
            "16K, 36-bit IPA, SL0=1, PS=40",
            vtcr(28, 1, 0b10, 0b010),
            1 << 14,
        ),
    ] {
        let cfg = try_ok!(Stage2Config::from_vtcr(v));
        check_eq!((what, cfg.vtcr()), (what, v));
        let dom = try_ok!(smmu.create_domain(DomainOptions::new(cfg)));
        let info = try_ok!(smmu.domain_info(dom));
        let buf = Buf::new(granule as usize, granule as usize)?;
        try_ok!(smmu.map(dom, WINDOW, buf.pa(), granule, Perm::ReadWrite));
        try_ok!(smmu.attach(dom, s));
        let ste = try_ok!(smmu.ste(s));
        let d2 = ste.0[2];
        // S2T0SZ [37:32], S2SL0 [39:38], S2IR0 [41:40], S2OR0 [43:42],
        // S2SH0 [45:44], S2TG [47:46], S2PS [50:48] mirror VTCR_EL2.
        let ste_fields = [
            bits(d2, 32, 6),
            bits(d2, 38, 2),
            bits(d2, 40, 2),
            bits(d2, 42, 2),
            bits(d2, 44, 2),
            bits(d2, 46, 2),
            bits(d2, 48, 3),
        ];
        let vtcr_fields = [
            bits(v, 0, 6),
            bits(v, 6, 2),
            bits(v, 8, 2),
            bits(v, 10, 2),
            bits(v, 12, 2),
            bits(v, 14, 2),
            bits(v, 16, 3),
        ];
        check_eq!((what, ste_fields), (what, vtcr_fields));
        check_eq!(
            (what, ste.config(), ste.vmid(), ste.s2ttb()),
            (what, SteConfig::Stage2, info.vmid, info.root)
        );
        // S2AA64 = 1, S2R = 1 (faults recorded), S2AFFD as asked.
        check_eq!(
            (what, bits(d2, 51, 1), bits(d2, 58, 1), bits(d2, 53, 1)),
            (what, 1, 1, 1)
        );
        println!(
            "  {what}: VTCR_EL2 {v:#x} -> STE dword 2 {d2:#018x}, S2TTB {:#x}",
            ste.s2ttb()
        );

        // DMA through it: read a pattern, write it back elsewhere.
        buf.fill(CANARY);
        let (src, dst, len) = (granule as usize - 0x400, 0x200usize, 0x100usize);
        for i in 0..len {
            buf.set(src + i, (i as u8) ^ 0x5A | 1);
        }
        edu_ok(e.dma_from_ram(0, WINDOW + src as u64, len))?;
        edu_ok(e.dma_to_ram(0, WINDOW + dst as u64, len))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
        check_eq!((what, buf.read(dst, len)), (what, buf.read(src, len)));
        for i in 0..buf.len() {
            if !(src..src + len).contains(&i) && !(dst..dst + len).contains(&i) {
                check!(
                    buf.get(i) == CANARY,
                    "{what}: byte {i:#x} outside the copy changed"
                );
            }
        }
        // One granule past the mapping faults.
        edu_ok(e.dma_to_ram(0, WINDOW + granule, 64))?;
        let faults = demo::report_faults(&smmu, &edus);
        expect_one_fault(&faults, EventType::FTranslation, s, WINDOW + granule)?;
        try_ok!(smmu.detach(s));
        try_ok!(smmu.destroy_domain(dom));
    }
    // A CPU configuration the SMMU cannot hold (PS = 48 bits > OAS 44) is
    // refused, not silently narrowed.
    let cfg = try_ok!(Stage2Config::from_vtcr(vtcr(16, 2, 0b00, 0b101)));
    check_eq!(
        smmu.create_domain(DomainOptions::new(cfg)),
        Err(Error::Unsupported(smmuv3::error::Unsupported::AddressSize))
    );
    Ok(())
}
