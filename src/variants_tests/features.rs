//! Coherency, interrupts, optional features, stalls, substreams, errata and
//! terminate models.

use super::*;

// --- Coherency and interrupts ------------------------------------------------

#[test]
fn non_coherent() {
    for s1 in [false, true] {
        let model = b().coherent(false).stage2(!s1).build();
        let cleaned = FakeHal::cleaned_bytes();
        let run = lifecycle(&model, Opts::default());
        assert!(run.failed.is_none(), "{:?}", run.failed);
        assert!(FakeHal::cleaned_bytes() > cleaned);
    }
    // The firmware's word (dma-coherent, IORT CCA) overrides COHACC either
    // way; `lifecycle` checks CR1, walk attributes and cleaning against it.
    for (cohacc, firmware) in [(true, false), (false, true)] {
        for s1 in [false, true] {
            let model = b().coherent(cohacc).stage2(!s1).build();
            let opts = Opts {
                config: Config {
                    firmware_coherent: Some(firmware),
                    ..Opts::default().config
                },
                sid: None,
            };
            let run = lifecycle(&model, opts);
            assert!(run.failed.is_none(), "{:?}", run.failed);
            let cr1 = model.read32(CR1);
            assert_eq!(cr1, if firmware { 0xD75 } else { 0x820 });
        }
    }
}

#[test]
fn msi_interrupts() {
    use crate::{MsiConfig, MsiTarget};
    let msi = MsiConfig {
        gerror: Some(MsiTarget::device(0x0800_0040, 7)),
        eventq: Some(MsiTarget::device(0x0800_0040, 8)),
    };
    let model = b().id_field(0x00, 13, 1, 1).build();
    let opts = Opts {
        config: Config {
            msi: Some(msi),
            ..Opts::default().config
        },
        sid: None,
    };
    let run = lifecycle(&model, opts);
    assert!(run.failed.is_none(), "{:?}", run.failed);
    // GERROR_IRQ_CFG0 / EVENTQ_IRQ_CFG0 hold the doorbell.
    assert_eq!(model.read64(0x68), 0x0800_0040);
    assert_eq!(model.read32(0x70), 7);
    assert_eq!(model.read64(0xB0), 0x0800_0040);
    assert_eq!(model.read32(0xB8), 8);
    // Without IDR0.MSI the same configuration is refused at probe.
    stops_with(
        b().id_field(0x00, 13, 1, 0).build(),
        opts,
        Step::New,
        Error::Unsupported(Unsupported::Msi),
    );
}

fn stops_with(model: SmmuModel, opts: Opts, step: Step, error: Error) {
    let run = lifecycle(&model, opts);
    assert_eq!(run.failed, Some((step, error)));
}

// --- Optional features --------------------------------------------------------

/// SEV (14), BTM (5), HTTU (7:6), ATS (10), PRI (8), HYP (9), VMW (17):
/// each alone and all together.
#[test]
fn optional_features() {
    let all = [
        (14, 1, 1),
        (5, 1, 1),
        (6, 2, 1),
        (6, 2, 2),
        (6, 2, 3),
        (10, 1, 1),
        (8, 1, 1),
        (9, 1, 1),
        (17, 1, 1),
    ];
    for (shift, bits, v) in all {
        for s1 in [false, true] {
            let model = idr0(b(), shift, bits, v).stage2(!s1).build();
            let run = lifecycle(&model, Opts::default());
            assert!(
                run.failed.is_none(),
                "IDR0[{shift}] = {v}: {:?}",
                run.failed
            );
        }
    }
    let mut everything = b().priq_log2(4);
    for (shift, bits, v) in all {
        everything = idr0(everything, shift, bits, v);
    }
    completes(everything.build());
}

#[test]
fn architecture_versions() {
    for minor in 0..=3 {
        for s1 in [false, true] {
            let model = b().id_register(0x1C, minor).stage2(!s1).build();
            let run = lifecycle(&model, Opts::default());
            assert!(run.failed.is_none(), "SMMUv3.{minor}: {:?}", run.failed);
        }
    }
}

/// OAS = 0b110 is 52 bits from SMMUv3.1 and reserved in SMMUv3.0: a
/// 52-bit stage 2 (64K granule) is refused there, not programmed with
/// S2PS = 52 bits.
#[test]
fn oas_52_needs_smmuv3_1() {
    for (aidr, oas) in [(0, 48), (1, 52), (2, 52), (3, 52)] {
        let model = b().oas(6).id_register(0x1C, aidr).build();
        completes(b().oas(6).id_register(0x1C, aidr).build());
        // SAFETY: the model outlives the driver; nothing else drives it.
        let smmu = unsafe { Smmu::<FakeHal>::new(model.base(), Opts::default().config) }.unwrap();
        assert_eq!(smmu.features().oas_bits, oas, "SMMUv3.{aidr}");
        smmu.enable().unwrap();
        let big = DomainOptions::new(Stage2Config::new(Granule::K64, 52, 52).unwrap());
        let r = smmu.create_domain(big);
        if oas == 52 {
            r.unwrap();
        } else {
            assert_eq!(r, Err(Error::Unsupported(Unsupported::AddressSize)));
        }
    }
}

#[test]
fn range_invalidation_present_and_absent() {
    for ril in [false, true] {
        for s1 in [false, true] {
            let model = b().ril(ril).stage2(!s1).build();
            let run = lifecycle(&model, Opts::default());
            assert!(run.failed.is_none(), "RIL {ril}: {:?}", run.failed);
        }
    }
}

#[test]
fn break_before_make_levels() {
    for bbml in 0..=3 {
        for s1 in [false, true] {
            let model = b().id_field(0x0C, 11, 2, bbml).stage2(!s1).build();
            let run = lifecycle(&model, Opts::default());
            assert!(run.failed.is_none(), "BBML {bbml}: {:?}", run.failed);
            for cpu_bbml2 in [false, true] {
                split_a_block(&model, cpu_bbml2);
            }
        }
    }
}

/// Maps a block, unmaps one page in its middle (a split: in place with
/// BBML2 on both sides, break-before-make otherwise) and checks what is
/// left, for every granule the SMMU has.
fn split_a_block(model: &SmmuModel, cpu_bbml2: bool) {
    // SAFETY: the model outlives the driver; nothing else drives it.
    let smmu = unsafe { Smmu::<FakeHal>::new(model.base(), Opts::default().config) }.unwrap();
    smmu.enable().unwrap();
    let cfg = stage2_for(&smmu).unwrap();
    let page = granule_bytes(cfg.granule());
    // Level-2 block: 2 MiB (4K), 32 MiB (16K), 512 MiB (64K).
    let block = page << (cfg.granule().shift() - 3);
    let options = DomainOptions {
        cpu_bbml2,
        ..DomainOptions::new(cfg)
    };
    let id = smmu.create_domain(options).unwrap();
    smmu.attach(id, 1).unwrap();
    let (ipa, pa) = (block, 2 * block);
    smmu.map(id, ipa, pa, block, Perm::ReadWrite).unwrap();
    assert_eq!(smmu.translate(id, ipa).unwrap().unwrap().size, block);
    smmu.unmap(id, ipa + page, page).unwrap();
    assert_eq!(smmu.translate(id, ipa + page).unwrap(), None);
    for at in [0, 2 * page, block - page] {
        let t = smmu.translate(id, ipa + at).unwrap().expect("still mapped");
        assert_eq!(t.pa, pa + at);
    }
    smmu.unmap(id, ipa, page).unwrap();
    smmu.unmap(id, ipa + 2 * page, block - 2 * page).unwrap();
    smmu.detach(1).unwrap();
    smmu.destroy_domain(id).unwrap();
    smmu.disable().unwrap();
}

#[test]
fn stall_models() {
    // 0: stall and terminate, 1: terminate only: driven.
    completes(idr0(b(), 24, 2, 0).build());
    completes(idr0(b(), 24, 2, 0).stage2(false).build());
    completes(idr0(b(), 24, 2, 1).build());
    // 2: stall forced: driven, with S2S = 1 in the stage-2 STE and CD.S =
    // 1 in the stage-1 CD (checked by `check_ste` in the model's words).
    completes(idr0(b(), 24, 2, 2).build());
    completes(idr0(b(), 24, 2, 2).stage2(false).build());
}

#[test]
fn substreams_and_two_level_cd_tables() {
    for ssid in [0u8, 1, 5, 8, 10, 16, 20] {
        for cd2l in [false, true] {
            for s2 in [false, true] {
                let model = b().ssid_bits(ssid).cd2l(cd2l).stage2(s2).build();
                let run = lifecycle(&model, Opts::default());
                assert!(
                    run.failed.is_none(),
                    "SSIDSIZE {ssid} CD2L {cd2l} S2 {s2}: {:?}",
                    run.failed
                );
                substreams_on(&model, ssid);
            }
        }
    }
}

/// A second stage-1 domain on the highest SubstreamID the CD table has:
/// its CD is found where the SMMU looks for it (linear or two-level).
fn substreams_on(model: &SmmuModel, ssid_bits: u8) {
    use crate::cdtable::SubstreamError;
    // SAFETY: the model outlives the driver; nothing else drives it.
    let smmu = unsafe { Smmu::<FakeHal>::new(model.base(), Opts::default().config) }.unwrap();
    smmu.enable().unwrap();
    let options = DomainOptions {
        stage: StagePolicy::Stage1,
        ..DomainOptions::new(stage2_for(&smmu).unwrap())
    };
    let (a, b) = (
        smmu.create_domain(options).unwrap(),
        smmu.create_domain(options).unwrap(),
    );
    smmu.attach(a, 3).unwrap();
    let ste = model.ste(3).unwrap().0;
    let cdmax = field(ste[0], 59, 5) as u32;
    assert_eq!(cdmax, u32::from(ssid_bits.min(8)));
    let last = (1u32 << cdmax) - 1;
    let r = smmu.attach_ssid(b, 3, last);
    if cdmax == 0 {
        // No substreams: the stream has a single CD, no CD table (the
        // documented error for an SMMU without substreams).
        assert_eq!(r, Err(SubstreamError::NoCdTable(3).into()));
        return;
    }
    r.unwrap();
    let ste = model.ste(3).unwrap().0;
    let table = ste[0] & 0x000F_FFFF_FFFF_FFC0;
    let cd_addr = match field(ste[0], 4, 2) {
        0 => table + u64::from(last) * 64,
        fmt => {
            let leaf_bits = if fmt == 1 { 6 } else { 10 };
            // SAFETY: identity-mapped HostHal memory the STE points at.
            let l1 = unsafe {
                (table as usize as *const u64)
                    .add((last >> leaf_bits) as usize)
                    .read_volatile()
            };
            assert_eq!(l1 & 1, 1, "L1CD valid");
            (l1 & 0x000F_FFFF_FFFF_F000) + u64::from(last & ((1 << leaf_bits) - 1)) * 64
        }
    };
    // SAFETY: as above.
    let cd0 = unsafe { (cd_addr as usize as *const u64).read_volatile() };
    let info = smmu.domain_info(b).unwrap();
    assert_eq!(cd0 >> 31 & 1, 1, "CD valid");
    assert_eq!(field(cd0, 48, 16), u64::from(info.asid.unwrap()));
    assert!(smmu.attach_ssid(b, 3, last + 1).is_err());
    smmu.detach_ssid(3, last).unwrap();
    smmu.detach(3).unwrap();
    smmu.destroy_domain(a).unwrap();
    smmu.destroy_domain(b).unwrap();
    smmu.disable().unwrap();
}

/// Implementations with errata keyed by IIDR: MMU-600 r0p0 (no SEV, no
/// nesting), MMU-600 r2p0, MMU-700 (forced CMD_SYNCs, no BTM, no nesting).
#[test]
fn implementations_with_errata() {
    for iidr in [
        0x4830_043B,
        0x4832_043B,
        0x4871_143B,
        0x0000_0000,
        0x1234_5678,
    ] {
        for s1 in [false, true] {
            let model = b().id_register(0x18, iidr).stage2(!s1).build();
            let run = lifecycle(&model, Opts::default());
            assert!(run.failed.is_none(), "IIDR {iidr:#x}: {:?}", run.failed);
        }
    }
    // MMU-700 (erratum 2812531): at most 63 commands before a CMD_SYNC,
    // also in an unmap of 100 pages without range invalidation.
    for s1 in [false, true] {
        let model = b()
            .id_register(0x18, 0x4871_143B)
            .ril(false)
            .stage2(!s1)
            .build();
        // SAFETY: the model outlives the driver; nothing else drives it.
        let smmu = unsafe { Smmu::<FakeHal>::new(model.base(), Opts::default().config) }.unwrap();
        smmu.enable().unwrap();
        let id = smmu
            .create_domain(DomainOptions::new(stage2_for(&smmu).unwrap()))
            .unwrap();
        smmu.map(id, 0x100_0000, 0x200_0000, 100 << 12, Perm::Read)
            .unwrap();
        let before = model.commands().len();
        smmu.unmap(id, 0x100_0000, 100 << 12).unwrap();
        let mut run = 0;
        for c in &model.commands()[before..] {
            if c[0] & 0xFF == 0x46 {
                run = 0;
            } else {
                run += 1;
                assert!(run <= 63, "{run} commands without a CMD_SYNC");
            }
        }
        assert_eq!(run, 0, "ends with a CMD_SYNC");
    }
}

/// IDR0.TERM_MODEL = 1: the SMMU cannot terminate with RAZ/WI, so every
/// CD must abort (CD.A = 1) and record (CD.R = 1) faults.
#[test]
fn terminate_model() {
    for s2 in [false, true] {
        let model = idr0(b(), 26, 1, 1).stage2(s2).build();
        let run = lifecycle(&model, Opts::default());
        assert!(run.failed.is_none(), "{:?}", run.failed);
    }
}
