//! The driver on every SMMU variant the architecture allows (IHI 0070 ID
//! registers), on the register model: for each variant the whole lifecycle
//! (probe, enable, a domain of the stage the SMMU has, map/unmap a page,
//! attach/detach a StreamID, destroy, disable) either succeeds with a
//! configuration the model shows is right for that SMMU, or stops with a
//! typed error at the first step that cannot be done. Never a panic.

extern crate std;

use std::format;
use std::string::String;
use std::vec::Vec;

use proptest::prelude::*;

use crate::fake::{FakeHal, Trace, start_trace, take_trace};
use crate::testing::{ModelBuilder, SmmuModel};
use crate::{
    Config, DomainOptions, Error, Granule, Perm, Smmu, Stage, Stage2Config, StagePolicy, State,
    Unsupported,
};

/// Register offsets (page 0).
const CR0: usize = 0x20;
const CR1: usize = 0x28;
const CR2: usize = 0x2C;
const STRTAB_BASE: usize = 0x80;
const STRTAB_BASE_CFG: usize = 0x88;
const CMDQ_BASE: usize = 0x90;
const EVENTQ_BASE: usize = 0xA0;

/// A lifecycle step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    New,
    Enable,
    CreateDomain,
    Map,
    Unmap,
    Attach,
    Detach,
    Destroy,
    Disable,
}

fn field(v: u64, shift: u32, bits: u32) -> u64 {
    (v >> shift) & ((1u64 << bits) - 1)
}

fn oas_encoding(bits: u8) -> u64 {
    match bits {
        32 => 0,
        36 => 1,
        40 => 2,
        42 => 3,
        44 => 4,
        48 => 5,
        _ => 6,
    }
}

/// The stage-2 configuration a hypervisor would ask for on this SMMU: the
/// first granule it implements, a 40-bit IPA over 48-bit output, clamped to
/// the SMMU's IAS/OAS. `None` when no granule is implemented.
fn stage2_for(smmu: &Smmu<FakeHal>) -> Option<Stage2Config> {
    let f = smmu.features();
    let g = [Granule::K4, Granule::K16, Granule::K64]
        .into_iter()
        .find(|&g| f.supports_granule(g))?;
    Stage2Config::new(g, 40, 48)
        .and_then(|c| c.clamp_to(u32::from(f.ias_bits), u32::from(f.oas_bits)))
        .ok()
}

fn granule_bytes(g: Granule) -> u64 {
    match g {
        Granule::K4 => 0x1000,
        Granule::K16 => 0x4000,
        Granule::K64 => 0x1_0000,
    }
}

/// What one lifecycle run did.
#[derive(Debug)]
struct Run {
    stage: Option<Stage>,
    /// The first step that failed, and how.
    failed: Option<(Step, Error)>,
}

/// Options of one run.
#[derive(Clone, Copy)]
struct Opts {
    config: Config,
    sid: Option<u32>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            config: Config {
                timeout_ns: 1_000_000,
                ..Config::default()
            },
            sid: None,
        }
    }
}

/// Runs the lifecycle on `model`, checking the model after every step that
/// succeeded; returns where it stopped.
fn lifecycle(model: &SmmuModel, opts: Opts) -> Run {
    let mut run = Run {
        stage: None,
        failed: None,
    };
    macro_rules! step {
        ($step:expr, $e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => {
                    run.failed = Some(($step, e));
                    return run;
                }
            }
        };
    }
    // SAFETY: the model outlives the driver (dropped at the end of this
    // function, before the model); nothing else drives it.
    let smmu = step!(Step::New, unsafe {
        Smmu::<FakeHal>::new(model.base(), opts.config)
    });
    let f = *smmu.features();
    step!(Step::Enable, smmu.enable());
    check_enabled(model, &smmu);
    // Events go round the event queue (1 entry with EVENTQS = 0) and come
    // out in order, each once.
    for i in 0..3u64 {
        let addr = 0x8000_0000 + i * 0x1000;
        assert!(model.inject_event(SmmuModel::translation_fault(7, addr, true)));
        let mut seen = Vec::new();
        start_trace();
        smmu.service(|e| seen.push(e)).expect("service");
        let trace = take_trace();
        if !f.coherent {
            // The record is read from memory: its lines invalidated first.
            let read = trace
                .iter()
                .position(|t| matches!(t, Trace::EntryRead { .. }))
                .expect("a record read");
            let Trace::EntryRead { addr } = trace[read] else {
                unreachable!()
            };
            assert!(
                trace[..read]
                    .iter()
                    .any(|t| matches!(t, Trace::Invalidate { addr: a, len }
                    if *a <= addr && addr + 32 <= a + len)),
                "event record read without invalidating it: {trace:?}"
            );
        }
        assert_eq!(seen.len(), 1, "event {i}");
        assert_eq!((seen[0].sid, seen[0].input_addr), (7, Some(addr)));
    }

    let Some(cfg) = stage2_for(&smmu) else {
        let e = smmu
            .create_domain(DomainOptions::new(
                Stage2Config::new(Granule::K4, 32, 32).unwrap(),
            ))
            .expect_err("a domain on an SMMU without any granule");
        run.failed = Some((Step::CreateDomain, e));
        return run;
    };
    let stage = smmu.domain_stage(StagePolicy::Auto).expect("a stage");
    run.stage = Some(stage);
    start_trace();
    let created = smmu.create_domain(DomainOptions::new(cfg));
    let create_trace = take_trace();
    let id = step!(Step::CreateDomain, created);
    let info = smmu.domain_info(id).unwrap();
    assert_eq!(info.stage, stage);
    if stage == Stage::Stage2 {
        assert!(
            u32::from(info.vmid) < 1 << f.vmid_bits,
            "VMID {}",
            info.vmid
        );
        assert_ne!(info.vmid, 0, "VMID 0 is for streams without stage 2");
    } else {
        let asid = info.asid.expect("an ASID");
        assert!(u32::from(asid) < 1 << f.asid_bits, "ASID {asid}");
    }
    assert_eq!(info.root >> f.oas_bits, 0, "table root above OAS");
    // VTCR_EL2 of the domain: PS within OAS, T0SZ within IAS (and OAS).
    let ps = field(info.vtcr, 16, 3);
    assert!(ps <= oas_encoding(f.oas_bits), "VTCR.PS {ps}");
    let ipa = 64 - field(info.vtcr, 0, 6);
    assert!(
        ipa <= u64::from(f.ias_bits.min(f.oas_bits)),
        "VTCR.T0SZ: {ipa} bits"
    );

    let page = granule_bytes(cfg.granule());
    let (ipa, pa) = (0x10_0000u64, 0x20_0000u64);
    let cleaned = FakeHal::cleaned_bytes();
    step!(Step::Map, smmu.map(id, ipa, pa, page, Perm::ReadWrite));
    if !f.coherent {
        assert!(FakeHal::cleaned_bytes() > cleaned, "map cleaned nothing");
    }
    let t = smmu.translate(id, ipa + 8).unwrap().expect("mapped");
    assert_eq!(t.pa, pa + 8);
    let before = model.commands().len();
    start_trace();
    let unmapped = smmu.unmap(id, ipa, page);
    let unmap_trace = take_trace();
    step!(Step::Unmap, unmapped);
    if !f.coherent {
        // Every command published through CMDQ_PROD was cleaned first.
        let base = model.read64(CMDQ_BASE);
        let (q, log2) = ((base & 0x000F_FFFF_FFFF_FFE0) as usize, base & 0x1F);
        let q_end = q + (16 << log2);
        let mut cleaned = false;
        let mut publishes = 0;
        for t in &unmap_trace {
            match *t {
                Trace::Clean { addr, len } if addr >= q && addr + len <= q_end => cleaned = true,
                Trace::Write { offset: 0x98, .. } => {
                    assert!(
                        cleaned,
                        "CMDQ_PROD written before the commands were cleaned"
                    );
                    cleaned = false;
                    publishes += 1;
                }
                _ => {}
            }
        }
        assert!(publishes > 0);
    }
    assert_eq!(smmu.translate(id, ipa).unwrap(), None);
    check_tlbis(&f, &model.commands()[before..]);

    let sid = opts
        .sid
        .unwrap_or_else(|| (smmu.sid_limit() - 1).min(0x13) as u32);
    start_trace();
    let attached = smmu.attach(id, sid);
    let trace = take_trace();
    step!(Step::Attach, attached);
    let ste = model.ste(sid).expect("the model finds the STE");
    assert_eq!(ste, smmu.ste(sid).unwrap());
    check_ste(model, &smmu, &info, cfg, sid, ste.0, &trace);
    if !f.coherent && stage == Stage::Stage1 {
        // The CD (written at creation, or copied at attach) was cleaned.
        let cd = ste.cd_paddr();
        let cdmax = field(ste.0[0], 59, 5);
        let cd = if cdmax == 0 || field(ste.0[0], 4, 2) == 0 {
            cd
        } else {
            // SAFETY: identity-mapped HostHal memory the STE points at.
            unsafe { (cd as usize as *const u64).read_volatile() & 0x000F_FFFF_FFFF_F000 }
        };
        assert!(
            create_trace
                .iter()
                .chain(&trace)
                .any(|t| matches!(t, Trace::Clean { addr: a, len }
                if (*a as u64) <= cd && cd + 64 <= *a as u64 + *len as u64)),
            "CD of a non-coherent SMMU never cleaned"
        );
    }
    step!(Step::Detach, smmu.detach(sid));
    assert_eq!(
        model.ste(sid).unwrap().config(),
        crate::ste::SteConfig::Abort
    );
    step!(Step::Destroy, smmu.destroy_domain(id));
    step!(Step::Disable, smmu.disable());
    assert_eq!(model.read32(CR0) & 1, 0);
    assert_eq!(smmu.state(), State::Disabled);
    run
}

/// CR0/CR1/CR2, the stream table and queue base registers after `enable`.
fn check_enabled(model: &SmmuModel, smmu: &Smmu<FakeHal>) {
    let f = smmu.features();
    let cr0 = model.read32(CR0);
    // SMMUEN | EVENTQEN | CMDQEN, ATSCHK with ATS, PRIQEN never.
    let atschk = u32::from(f.ats) << 4;
    assert_eq!(cr0, 0b1101 | atschk, "CR0 {cr0:#x}");
    let cr1 = model.read32(CR1);
    let expected_cr1 = if f.coherent { 0xD75 } else { 0x820 };
    assert_eq!(cr1, expected_cr1, "CR1 {cr1:#x}");
    // RECINVSID | PTM, E2H clear.
    assert_eq!(model.read32(CR2), 0b110);

    let cfg = model.read32(STRTAB_BASE_CFG);
    let (log2size, split, fmt) = (cfg & 0x3F, (cfg >> 6) & 0x1F, (cfg >> 16) & 3);
    assert!(log2size <= u32::from(f.sid_bits), "LOG2SIZE {log2size}");
    assert_eq!(1u64 << log2size, smmu.sid_limit());
    if fmt == 1 {
        assert!(f.two_level_strtab, "2-level table on a linear-only SMMU");
        assert_eq!(split, 8);
        // Some level-1 descriptors.
        assert!(log2size > split, "LOG2SIZE {log2size} SPLIT {split}");
    } else {
        assert_eq!(fmt, 0);
        // A linear table of at most 2^16 STEs (4 MiB).
        assert!(log2size <= 16);
    }
    let strtab = model.read64(STRTAB_BASE) & 0x000F_FFFF_FFFF_FFC0;
    assert_eq!(strtab >> f.oas_bits, 0, "STRTAB_BASE above OAS");
    for (reg, max) in [
        (CMDQ_BASE, f.cmdq_max_log2),
        (EVENTQ_BASE, f.eventq_max_log2),
    ] {
        let base = model.read64(reg);
        assert_eq!(
            (base & 0x000F_FFFF_FFFF_FFE0) >> f.oas_bits,
            0,
            "queue above OAS"
        );
        let log2 = base & 0x1F;
        assert!(log2 <= u64::from(max), "queue log2 {log2} above {max}");
    }
}

/// TLB invalidations after an unmap: range forms only with IDR3.RIL, stage
/// 1 or stage 2 commands as the domain is.
fn check_tlbis(f: &crate::Features, cmds: &[[u64; 2]]) {
    assert!(!cmds.is_empty(), "unmap invalidated nothing");
    for c in cmds {
        let op = c[0] & 0xFF;
        if matches!(op, 0x12 | 0x13 | 0x2A | 0x2B) {
            // TLBI_NH_VA, TLBI_EL2_VA.. / TLBI_S2_IPA: TG (dword 1 [11:10])
            // and NUM/SCALE are the range form.
            let tg = field(c[1], 10, 2);
            if !f.ril {
                assert_eq!(tg, 0, "range TLBI {c:x?} without IDR3.RIL");
                assert_eq!(field(c[0], 12, 5) | field(c[0], 20, 5), 0);
                assert_eq!(field(c[1], 8, 2), 0, "TTL hint {c:x?} without IDR3.RIL");
            }
        }
    }
}

/// The STE the model holds for an attached stream.
fn check_ste(
    model: &SmmuModel,
    smmu: &Smmu<FakeHal>,
    info: &crate::DomainInfo,
    cfg: Stage2Config,
    sid: u32,
    ste: [u64; 8],
    trace: &[Trace],
) {
    let f = smmu.features();
    assert_eq!(ste[0] & 1, 1, "STE valid");
    let config = field(ste[0], 1, 3);
    if !f.coherent {
        // The STE's 64 bytes were cleaned after being written.
        let addr = ste_addr(model, sid);
        assert!(
            trace
                .iter()
                .any(|t| matches!(t, Trace::Clean { addr: a, len }
                if (*a as u64) <= addr && addr + 64 <= *a as u64 + *len as u64)),
            "STE of a non-coherent SMMU never cleaned"
        );
    }
    // S1STALLD only where stalls exist; EATS never.
    assert_eq!(field(ste[1], 28, 2), 0, "EATS");
    if f.stall_model != crate::features::StallModel::Stall {
        assert_eq!(field(ste[1], 27, 1), 0, "S1STALLD without stalls");
    }
    // Walk attributes as CR1 says: WB/ISH coherent, NC/OSH otherwise.
    let w = crate::smmu::WalkAttributes::for_coherency(f.coherent);
    let attrs = |v: u64, at: u32| (field(v, at, 2), field(v, at + 2, 2), field(v, at + 4, 2));
    let expected = (
        u64::from(w.inner),
        u64::from(w.outer),
        u64::from(w.shareability),
    );
    match info.stage {
        Stage::Stage2 => {
            assert_eq!(config, 0b110, "S2 translate");
            assert_eq!(field(ste[2], 0, 16), u64::from(info.vmid));
            let t0sz = field(ste[2], 32, 6);
            assert_eq!(64 - t0sz, u64::from(cfg.ipa_bits()));
            assert!(64 - t0sz <= u64::from(f.ias_bits), "S2T0SZ {t0sz}");
            let ps = field(ste[2], 48, 3);
            assert!(ps <= oas_encoding(f.oas_bits), "S2PS {ps}");
            let tg = field(ste[2], 46, 2);
            let g = match tg {
                0 => Granule::K4,
                1 => Granule::K64,
                2 => Granule::K16,
                _ => panic!("S2TG reserved"),
            };
            assert!(f.supports_granule(g));
            assert_eq!(ste[3] & 0x000F_FFFF_FFFF_FFF0, info.root);
            // S2AA64 = 1, S2ENDI = 0 (little-endian), S2S = 1 exactly
            // where the SMMU forces stalls (IHI 0070 §5.5: 0 is ILLEGAL
            // there, 1 is ILLEGAL with STALL_MODEL = 0b01).
            assert_eq!(field(ste[2], 51, 2), 0b01, "S2AA64/S2ENDI");
            assert_eq!(field(ste[2], 57, 1), u64::from(f.stall_forced()), "S2S");
            assert_eq!(attrs(ste[2], 40), expected, "S2IR0/S2OR0/S2SH0");
        }
        Stage::Stage1 => {
            assert_eq!(config, 0b101, "S1 translate");
            let cd_ptr = ste[0] & 0x000F_FFFF_FFFF_FFC0;
            assert_eq!(cd_ptr >> f.oas_bits, 0, "S1ContextPtr above OAS");
            let cdmax = field(ste[0], 59, 5);
            assert!(cdmax <= u64::from(f.ssid_bits), "S1CDMAX {cdmax}");
            if cdmax > 0 {
                // Traffic without a SubstreamID uses CD 0 (S1DSS = 0b10).
                assert_eq!(field(ste[1], 0, 2), 0b10, "S1DSS");
            }
            // The CD the STE points at (S1FMT linear / 2-level).
            let cd = read_cd(cd_ptr, field(ste[0], 4, 2), cdmax);
            assert_eq!(cd[0] >> 31 & 1, 1, "CD valid");
            let ips = field(cd[0], 32, 3);
            assert!(ips <= oas_encoding(f.oas_bits), "CD.IPS {ips}");
            assert_eq!(field(cd[0], 48, 16), u64::from(info.asid.unwrap()));
            assert_eq!(cd[1] & 0x000F_FFFF_FFFF_FFF0, info.root);
            // AA64, little-endian, no TTB1 walks, S = 1 exactly where the
            // SMMU forces stalls (as S2S), HA/HD only with HTTU.
            assert_eq!(field(cd[0], 41, 1), 1, "CD.AA64");
            assert_eq!(field(cd[0], 15, 1), 0, "CD.ENDI");
            assert_eq!(field(cd[0], 30, 1), 1, "CD.EPD1");
            assert_eq!(field(cd[0], 44, 1), u64::from(f.stall_forced()), "CD.S");
            assert_eq!(field(cd[0], 45, 2), 0b11, "CD.R and CD.A");
            if f.httu == crate::features::Httu::None {
                assert_eq!(field(cd[0], 42, 2), 0, "CD.HA/HD without HTTU");
            }
            assert_eq!(attrs(cd[0], 8), expected, "CD IR0/OR0/SH0");
            // The CD fetch itself: S1CIR/S1COR/S1CSH.
            assert_eq!(attrs(ste[1], 2), expected, "S1CIR/S1COR/S1CSH");
            if f.stage2 {
                assert_eq!(field(ste[2], 0, 16), u64::from(info.vmid));
            }
        }
    }
}

fn ste_addr(model: &SmmuModel, sid: u32) -> u64 {
    model.ste_address(sid).expect("an STE address")
}

fn read_cd(ptr: u64, s1fmt: u64, cdmax: u64) -> [u64; 8] {
    let read = |addr: u64, i: usize| {
        // SAFETY: HostHal memory is identity-mapped and the CD (table) the
        // STE points at is live while the stream is attached.
        unsafe { (addr as usize as *const u64).add(i).read_volatile() }
    };
    let cd_addr = if cdmax == 0 || s1fmt == 0 {
        ptr
    } else {
        // Two-level: the L1 descriptor of SSID 0.
        read(ptr, 0) & 0x000F_FFFF_FFFF_F000
    };
    core::array::from_fn(|i| read(cd_addr, i))
}

/// Runs the lifecycle and checks it completes.
#[track_caller]
fn completes(model: SmmuModel) -> Run {
    let run = lifecycle(&model, Opts::default());
    assert!(run.failed.is_none(), "stopped at {:?}", run.failed);
    run
}

/// Runs the lifecycle and checks it stops at `step` with `error`.
#[track_caller]
fn stops(model: SmmuModel, step: Step, error: Error) {
    let run = lifecycle(&model, Opts::default());
    assert_eq!(run.failed, Some((step, error)));
}

fn b() -> ModelBuilder {
    SmmuModel::builder()
}

fn idr0(b: ModelBuilder, shift: u32, bits: u32, v: u32) -> ModelBuilder {
    b.id_field(0x00, shift, bits, v)
}

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

// --- Every ID register value ------------------------------------------------

/// `Smmu::new` + `enable` (+ a domain, when there is one to create) never
/// panic, whatever the ID registers say.
fn never_panics(idr0: u32, idr1: u32, idr3: u32, idr5: u32, iidr: u32, aidr: u32) -> String {
    let model = b()
        .id_register(0x00, idr0)
        .id_register(0x04, idr1)
        .id_register(0x0C, idr3)
        .id_register(0x14, idr5)
        .id_register(0x18, iidr)
        .id_register(0x1C, aidr)
        .build();
    let config = Config {
        timeout_ns: 1_000_000,
        // Keep host memory small: huge IDR1 queue sizes are clamped.
        ..Config::default()
    };
    // SAFETY: the model outlives the driver; nothing else drives it.
    let smmu = match unsafe { Smmu::<FakeHal>::new(model.base(), config) } {
        Ok(s) => s,
        Err(e) => return format!("new: {e:?}"),
    };
    if let Err(e) = smmu.enable() {
        return format!("enable: {e:?}");
    }
    let r = match stage2_for(&smmu) {
        Some(cfg) => smmu.create_domain(DomainOptions::new(cfg)).map(|_| ()),
        None => Ok(()),
    };
    format!("{r:?}")
}

/// The whole lifecycle, with every check `lifecycle` makes, on arbitrary
/// ID registers: it completes or stops with an error (any error a variant
/// may meet is typed; the variant tests above pin which).
fn lifecycle_on(idr: [u32; 6]) -> Run {
    let model = b()
        .id_register(0x00, idr[0])
        .id_register(0x04, idr[1])
        .id_register(0x0C, idr[2])
        .id_register(0x14, idr[3])
        .id_register(0x18, idr[4])
        .id_register(0x1C, idr[5])
        .build();
    lifecycle(&model, Opts::default())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn any_id_registers(idr0: u32, idr1: u32, idr3: u32, idr5: u32, iidr: u32, aidr: u32) {
        let _ = never_panics(idr0, idr1, idr3, idr5, iidr, aidr);
        let _ = lifecycle_on([idr0, idr1, idr3, idr5, iidr, aidr]);
    }

    /// Random ID registers that probe (a stage, AArch64 tables, not
    /// big-endian only, no preset or relative bases, OAS 48 or 52 so the
    /// host heap is reachable, at least one granule; any stall model):
    /// the lifecycle completes.
    #[test]
    fn drivable_id_registers_complete(idr0: u32, idr1: u32, idr3: u32, idr5: u32, iidr: u32, aidr in 0u32..4) {
        let mut idr0 = idr0 | 1 << 3; // TTF: AArch64 (+ AArch32)
        if idr0 & 3 == 0 { idr0 |= 1; }
        if (idr0 >> 21) & 1 == 1 { idr0 &= !(3 << 21); } // TTENDIAN 0 or 2
        let idr1 = idr1 & !(7 << 28);
        let mut idr5 = (idr5 & !7) | 5 | (idr5 & 1) << 1;
        if idr5 & 0x70 == 0 { idr5 |= 1 << 4; }
        let run = lifecycle_on([idr0, idr1, idr3, idr5, iidr, aidr]);
        prop_assert!(run.failed.is_none(), "{:x?}: {:?}", [idr0, idr1, idr3, idr5, iidr, aidr], run.failed);
    }

    /// Around the ID registers QEMU reports: one field at a time.
    #[test]
    fn one_field_changed(reg in 0usize..4, shift in 0u32..32, bits in 1u32..6, v: u32) {
        let mut regs = [0x0D44_101Bu32, 0x0273_0010, 0x0000_1404, 0x0000_0075];
        let bits = bits.min(32 - shift);
        let mask = (((1u64 << bits) - 1) as u32) << shift;
        regs[reg] = (regs[reg] & !mask) | ((v << shift) & mask);
        let _ = never_panics(regs[0], regs[1], regs[2], regs[3], 0, 1);
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
