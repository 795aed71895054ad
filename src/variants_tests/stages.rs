//! Stages and stream tables (linear, two-level, choices).

use super::*;

// --- Stages -----------------------------------------------------------------

#[test]
fn stage1_only() {
    let run = completes(b().stage2(false).build());
    assert_eq!(run.stage, Some(Stage::Stage1));
}

#[test]
fn stage2_only() {
    let run = completes(b().stage1(false).build());
    assert_eq!(run.stage, Some(Stage::Stage2));
}

#[test]
fn both_stages() {
    let run = completes(b().build());
    assert_eq!(run.stage, Some(Stage::Stage2));
}

#[test]
fn no_stage_is_refused_at_probe() {
    stops(
        b().stage1(false).stage2(false).build(),
        Step::New,
        Error::Unsupported(Unsupported::NoTranslationStage),
    );
}

// --- Stream tables ------------------------------------------------------------

#[test]
fn linear_only_stream_tables() {
    for sid_bits in [0u8, 1, 5, 8, 9, 16] {
        for s1 in [false, true] {
            let model = b()
                .two_level_strtab(false)
                .sid_bits(sid_bits)
                .stage2(!s1)
                .build();
            let run = lifecycle(&model, Opts::default());
            assert!(run.failed.is_none(), "SIDSIZE {sid_bits}: {:?}", run.failed);
            assert_eq!(model.read32(STRTAB_BASE_CFG), u32::from(sid_bits));
            // SAFETY: as in `lifecycle`.
            let smmu =
                unsafe { Smmu::<FakeHal>::new(model.base(), Opts::default().config) }.unwrap();
            assert_eq!(smmu.sid_limit(), 1 << sid_bits);
        }
    }
}

/// SIDSIZE beyond what a linear table may hold (2^16 STEs, 4 MiB): the
/// table covers the low 2^16 StreamIDs; higher ones are refused, typed.
#[test]
fn linear_only_with_huge_sidsize() {
    for sid_bits in [17u8, 24, 32] {
        let model = b().two_level_strtab(false).sid_bits(sid_bits).build();
        completes(b().two_level_strtab(false).sid_bits(sid_bits).build());
        let opts = Opts {
            sid: Some(1 << 16),
            ..Opts::default()
        };
        let run = lifecycle(&model, opts);
        assert_eq!(
            run.failed,
            Some((
                Step::Attach,
                Error::SidOutOfRange {
                    sid: 1 << 16,
                    limit: 1 << 16
                }
            ))
        );
        assert_eq!(model.read32(STRTAB_BASE_CFG), 16);
    }
}

#[test]
fn two_level_stream_tables() {
    for sid_bits in [0u8, 5, 8, 9, 16, 20, 24, 32] {
        let model = b().sid_bits(sid_bits).build();
        let run = lifecycle(&model, Opts::default());
        assert!(run.failed.is_none(), "SIDSIZE {sid_bits}: {:?}", run.failed);
        let cfg = model.read32(STRTAB_BASE_CFG);
        let log2 = u32::from(sid_bits).min(24);
        if sid_bits > 8 {
            assert_eq!(cfg, 1 << 16 | 8 << 6 | log2, "SIDSIZE {sid_bits}");
        } else {
            assert_eq!(cfg & 0x3F, log2);
        }
        // The highest StreamID covered works too.
        let high = Opts {
            sid: Some(((1u64 << log2) - 1) as u32),
            ..Opts::default()
        };
        let run = lifecycle(&b().sid_bits(sid_bits).build(), high);
        assert!(run.failed.is_none(), "SIDSIZE {sid_bits}: {:?}", run.failed);
    }
}

/// StreamTableChoice::Linear / TwoLevel / Auto on every ST_LEVEL and
/// SIDSIZE: a table that covers min(SIDSIZE, 16 or 24) bits, or a typed
/// refusal (two-level asked of a linear-only SMMU; two-level below SPLIT).
#[test]
fn stream_table_choices() {
    use crate::StreamTableChoice;
    use crate::strtab::Format;
    for two_level in [false, true] {
        for sid_bits in [0u8, 5, 8, 9, 16, 17, 24, 25, 32] {
            for choice in [
                StreamTableChoice::Auto,
                StreamTableChoice::Linear,
                StreamTableChoice::TwoLevel,
            ] {
                let model = b().two_level_strtab(two_level).sid_bits(sid_bits).build();
                let config = Config {
                    stream_table: choice,
                    ..Opts::default().config
                };
                // SAFETY: the model outlives the driver; nothing else drives it.
                let r = unsafe { Smmu::<FakeHal>::new(model.base(), config) };
                let what = format!("ST_LEVEL {two_level} SIDSIZE {sid_bits} {choice:?}");
                let smmu = match (choice, two_level, r) {
                    (StreamTableChoice::TwoLevel, false, r) => {
                        assert_eq!(
                            r.err(),
                            Some(Error::Unsupported(Unsupported::TwoLevelStreamTable)),
                            "{what}"
                        );
                        continue;
                    }
                    (StreamTableChoice::TwoLevel, true, Err(e)) if sid_bits < 8 => {
                        assert!(matches!(e, Error::Invalid(_)), "{what}: {e:?}");
                        continue;
                    }
                    (_, _, r) => r.unwrap_or_else(|e| panic!("{what}: {e:?}")),
                };
                let max = match smmu.stream_table_format() {
                    Format::Linear => 16,
                    Format::TwoLevel => 24,
                };
                let bits = u32::from(sid_bits).min(max);
                assert_eq!(smmu.sid_limit(), 1 << bits, "{what}");
                smmu.enable().unwrap();
                let last = ((1u64 << bits) - 1) as u32;
                smmu.set_bypass(last).unwrap();
                assert_eq!(model.ste(last).unwrap(), smmu.ste(last).unwrap());
                assert_eq!(
                    model.ste(last).unwrap().config(),
                    crate::ste::SteConfig::Bypass
                );
                if bits < 32 {
                    assert_eq!(
                        smmu.set_bypass(last + 1),
                        Err(Error::SidOutOfRange {
                            sid: last + 1,
                            limit: 1 << bits
                        }),
                        "{what}"
                    );
                }
                smmu.disable().unwrap();
            }
        }
    }
}

/// IDR0.ST_LEVEL = 0b10 / 0b11 (reserved) are read as linear only.
#[test]
fn reserved_stream_table_levels_are_linear() {
    for level in [2, 3] {
        let model = idr0(b(), 27, 2, level).sid_bits(20).build();
        let run = lifecycle(&model, Opts::default());
        assert!(run.failed.is_none(), "{:?}", run.failed);
        assert_eq!(model.read32(STRTAB_BASE_CFG), 16, "linear, 16 bits");
    }
}
