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

mod addresses;
mod features;
mod formats;
mod proptests;
mod stages;

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
