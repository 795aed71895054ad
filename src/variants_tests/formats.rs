//! VMID/ASID widths, translation table formats and endianness.

use super::*;

// --- Widths -----------------------------------------------------------------

#[test]
fn vmid_and_asid_widths() {
    for vmid16 in [false, true] {
        for asid16 in [false, true] {
            for s2 in [false, true] {
                let model = b().vmid16(vmid16).asid16(asid16).stage2(s2).build();
                let run = lifecycle(&model, Opts::default());
                assert!(
                    run.failed.is_none(),
                    "{vmid16} {asid16} {s2}: {:?}",
                    run.failed
                );
                // SAFETY: as in `lifecycle`.
                let smmu =
                    unsafe { Smmu::<FakeHal>::new(model.base(), Opts::default().config) }.unwrap();
                let f = smmu.features();
                assert_eq!(f.vmid_bits, if vmid16 { 16 } else { 8 });
                assert_eq!(f.asid_bits, if asid16 { 16 } else { 8 });
                if s2 {
                    // A VMID beyond 8 bits is refused, typed.
                    let mut opts = DomainOptions::new(stage2_for(&smmu).unwrap());
                    opts.vmid = Some(0x1234);
                    let r = smmu.create_domain(opts);
                    assert_eq!(r.is_ok(), vmid16, "{r:?}");
                    if !vmid16 {
                        assert!(matches!(r, Err(Error::Invalid(_))), "{r:?}");
                    }
                }
            }
        }
    }
}

/// 8-bit VMIDs and ASIDs run out after 255 domains (0 is reserved), with
/// a typed error; a freed one is reused.
#[test]
fn eight_bit_identifiers_run_out_typed() {
    for s1 in [false, true] {
        let model = b().vmid16(false).asid16(false).stage2(!s1).build();
        // SAFETY: the model outlives the driver; nothing else drives it.
        let smmu = unsafe { Smmu::<FakeHal>::new(model.base(), Opts::default().config) }.unwrap();
        smmu.enable().unwrap();
        let options = DomainOptions::new(stage2_for(&smmu).unwrap());
        let mut ids = Vec::new();
        let err = loop {
            match smmu.create_domain(options) {
                Ok(id) => ids.push(id),
                Err(e) => break e,
            }
            assert!(ids.len() <= 256, "more domains than 8-bit identifiers");
        };
        assert_eq!(ids.len(), 255, "s1 {s1}: {err:?}");
        let expected = if s1 {
            Error::AsidExhausted
        } else {
            Error::VmidExhausted
        };
        assert_eq!(err, expected);
        for id in &ids {
            let info = smmu.domain_info(*id).unwrap();
            let tag = if s1 { info.asid.unwrap() } else { info.vmid };
            assert!(tag != 0 && tag < 256);
        }
        smmu.destroy_domain(ids.pop().unwrap()).unwrap();
        ids.push(smmu.create_domain(options).unwrap());
        for id in ids {
            smmu.destroy_domain(id).unwrap();
        }
    }
}

// --- Table formats and endianness --------------------------------------------

#[test]
fn table_formats() {
    // TTF = AArch64 only (2): driven; AArch32 + AArch64 (3): driven, IAS 40.
    completes(idr0(b(), 2, 2, 2).build());
    completes(idr0(b(), 2, 2, 3).build());
    // AArch32 only (1) and the reserved 0: refused at probe.
    for ttf in [0, 1] {
        stops(
            idr0(b(), 2, 2, ttf).build(),
            Step::New,
            Error::Unsupported(Unsupported::NoAarch64Tables),
        );
    }
}

#[test]
fn table_endianness() {
    for (ttendian, ok) in [(0, true), (1, false), (2, true), (3, false)] {
        let model = idr0(b(), 21, 2, ttendian).build();
        if ok {
            completes(model);
        } else {
            stops(
                model,
                Step::New,
                Error::Unsupported(Unsupported::BigEndianOnly),
            );
        }
    }
}
