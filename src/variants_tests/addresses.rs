//! Granules, address sizes, queues, and STE pointers above the OAS.

use super::*;

// --- Granules and address sizes -----------------------------------------------

#[test]
fn single_granules() {
    for (gran, g) in [
        (1 << 4, Granule::K4),
        (1 << 5, Granule::K16),
        (1 << 6, Granule::K64),
    ] {
        for s1 in [false, true] {
            let model = b().granules(gran).stage2(!s1).build();
            let run = lifecycle(&model, Opts::default());
            assert!(run.failed.is_none(), "{g:?} s1 {s1}: {:?}", run.failed);
        }
    }
}

#[test]
fn no_granule_is_refused_at_domain_creation() {
    for s1 in [false, true] {
        let model = b().granules(0).stage2(!s1).build();
        let run = lifecycle(&model, Opts::default());
        assert_eq!(
            run.failed,
            Some((Step::CreateDomain, Error::Unsupported(Unsupported::Granule)))
        );
    }
}

/// IDR5.OAS 32..52 bits. Memory the SMMU cannot reach (above 2^OAS) is
/// refused, typed, where it is first allocated; whatever was programmed
/// lies below 2^OAS (`lifecycle` checks the bases, STEs and CDs). The
/// host's heap lies below 2^47: 48 and 52 bits always complete.
#[test]
fn output_address_sizes() {
    for enc in 0u8..=7 {
        for s1 in [false, true] {
            for g in [1 << 4, 1 << 5, 1 << 6] {
                let model = b().oas(enc).stage2(!s1).granules(g).build();
                let run = lifecycle(&model, Opts::default());
                match run.failed {
                    None => {}
                    Some((_, e)) if enc < 5 => {
                        assert_eq!(e, Error::Unsupported(Unsupported::AddressSize), "OAS {enc}")
                    }
                    Some(f) => panic!("OAS {enc}: {f:?}"),
                }
            }
        }
    }
}

/// The stage-2 configuration a hypervisor derives for each OAS (and IAS:
/// at least 40 bits with AArch32 tables) fits it, for every granule.
#[test]
fn stage2_configurations_fit_every_oas() {
    use crate::features::{Features, IdRegs};
    for enc in 0u32..=7 {
        for ttf in [2u32, 3] {
            let f = Features::from_id_regs(&IdRegs {
                idr0: (0x0D44_101B & !0xC) | ttf << 2,
                idr1: 0x0273_0010,
                idr3: 0x1404,
                idr5: 0x70 | enc,
                iidr: 0,
                aidr: 1,
            })
            .unwrap();
            for g in [Granule::K4, Granule::K16, Granule::K64] {
                let c = Stage2Config::new(g, 40, 48)
                    .and_then(|c| c.clamp_to(u32::from(f.ias_bits), u32::from(f.oas_bits)))
                    .unwrap();
                assert!(
                    c.check_fits(u32::from(f.ias_bits), u32::from(f.oas_bits))
                        .is_ok()
                );
                let fields = c.ste_fields();
                assert!(
                    u64::from(fields.ps) <= oas_encoding(f.oas_bits),
                    "{enc} {g:?}"
                );
                assert!(64 - u32::from(fields.t0sz) <= u32::from(f.oas_bits.min(f.ias_bits)));
            }
        }
    }
}

// --- Queues -----------------------------------------------------------------

#[test]
fn small_queues() {
    for cmdqs in 0u8..=5 {
        for eventqs in 0u8..=5 {
            let model = b().queue_log2(cmdqs, eventqs).build();
            let run = lifecycle(&model, Opts::default());
            assert!(
                run.failed.is_none(),
                "CMDQS {cmdqs} EVENTQS {eventqs}: {:?}",
                run.failed
            );
            assert_eq!(model.read64(CMDQ_BASE) & 0x1F, u64::from(cmdqs));
            assert_eq!(model.read64(EVENTQ_BASE) & 0x1F, u64::from(eventqs));
        }
        // Batches longer than the queue: 16 per-page TLBIs (no RIL) and a
        // CMD_SYNC through a queue of 2^CMDQS entries.
        for s1 in [false, true] {
            let model = b().queue_log2(cmdqs, 0).ril(false).stage2(!s1).build();
            // SAFETY: the model outlives the driver; nothing else drives it.
            let smmu =
                unsafe { Smmu::<FakeHal>::new(model.base(), Opts::default().config) }.unwrap();
            smmu.enable().unwrap();
            let id = smmu
                .create_domain(DomainOptions::new(stage2_for(&smmu).unwrap()))
                .unwrap();
            smmu.map(id, 0x10_0000, 0x20_0000, 0x1_0000, Perm::Read)
                .unwrap();
            let before = model.commands().len();
            smmu.unmap(id, 0x10_0000, 0x1_0000).unwrap();
            let cmds = &model.commands()[before..];
            let tlbis = cmds
                .iter()
                .filter(|c| matches!(c[0] & 0xFF, 0x12 | 0x2A))
                .count();
            assert_eq!(tlbis, 16, "CMDQS {cmdqs} s1 {s1}: {cmds:x?}");
            assert_eq!(cmds.last().unwrap()[0] & 0xFF, 0x46, "ends with CMD_SYNC");
            smmu.destroy_domain(id).unwrap();
        }
    }
}

#[test]
fn preset_tables_and_queues_and_relative_bases_are_refused() {
    for (bit, u) in [
        (30, Unsupported::PresetTables),
        (29, Unsupported::PresetQueues),
        (28, Unsupported::RelativeBase),
    ] {
        stops(
            b().id_field(0x04, bit, 1, 1).build(),
            Step::New,
            Error::Unsupported(u),
        );
    }
}

/// An STE pointing the SMMU at a CD or stage-2 table above 2^OAS is
/// refused before anything is written (the SMMU would fetch elsewhere).
#[test]
fn ste_pointers_above_oas_are_refused() {
    use crate::ste::{Stage1Ste, Stage2Ste, Ste};
    // A 48-bit SMMU (the host heap lies below 2^47), pointed above 2^48.
    let model = b().build();
    // SAFETY: the model outlives the driver; nothing else drives it.
    let smmu = unsafe { Smmu::<FakeHal>::new(model.base(), Opts::default().config) }.unwrap();
    smmu.enable().unwrap();
    let s2 = Stage2Ste {
        vmid: 1,
        t0sz: 24,
        sl0: 1,
        ir0: 1,
        or0: 1,
        sh0: 3,
        tg: 0,
        ps: 5,
        ttb: 1 << 48,
        affd: true,
        record_faults: true,
        ptw: false,
    };
    let before = smmu.ste(3).unwrap();
    for ste in [
        Ste::stage2(&s2).unwrap(),
        Ste::stage1(&Stage1Ste::new(1 << 48, 0)).unwrap(),
        Ste::nested(&Stage1Ste::new(0x1000, 1), &s2).unwrap(),
        // Nested, S1ContextPtr is an IPA: at most IAS (48 bits here).
        Ste::nested(
            &Stage1Ste::new(1 << 48, 1),
            &Stage2Ste {
                ttb: 0x10_0000,
                ..s2
            },
        )
        .unwrap(),
    ] {
        // SAFETY: refused before anything is written.
        let r = unsafe { smmu.write_ste_unchecked(3, &ste) };
        assert_eq!(r, Err(Error::Unsupported(Unsupported::AddressSize)));
        assert_eq!(smmu.ste(3).unwrap(), before);
    }
    // Just below the limit is accepted.
    let ok = Stage2Ste {
        ttb: (1 << 48) - 0x1000,
        ..s2
    };
    // SAFETY: nothing translates on the model.
    unsafe { smmu.write_ste_unchecked(3, &Ste::stage2(&ok).unwrap()) }.unwrap();
}
