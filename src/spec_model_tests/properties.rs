//! Pure properties: guest CDs, stage-2 configurations, STE update plans.

use super::*;

// ---------------------------------------------------------------------------
// Pure properties: what the driver accepts from a guest, the stage-2
// geometry it encodes on any SMMU, and every intermediate state of an STE
// update.
// ---------------------------------------------------------------------------

/// A nested STE as the driver writes it (Config 0b111, EL1, S2AA64 = 1):
/// the context `cd_illegal` needs.
fn nested_context() -> [u64; 8] {
    [1 | (7 << 1) | GUEST_CD, 1 << 44, 1 << 51, 0, 0, 0, 0, 0]
}

prop_compose! {
    /// CD words around the ones a guest would write: each field usually
    /// sensible, sometimes anything.
    fn cd_words()(
        t0sz in prop_oneof![3 => 16u64..=39, 1 => 0u64..64],
        tg0 in 0u64..4,
        epd0 in prop::bool::weighted(0.1),
        endi in prop::bool::weighted(0.2),
        t1sz in 0u64..64,
        tg1 in 0u64..4,
        epd1 in prop::bool::weighted(0.8),
        ips in 0u64..8,
        aa64 in prop::bool::weighted(0.9),
        hd in prop::bool::weighted(0.2),
        ha in prop::bool::weighted(0.2),
        s in prop::bool::weighted(0.1),
        a in prop::bool::weighted(0.9),
        asid in prop_oneof![1u64..0x100, 0u64..0x1_0000],
        ttb0 in prop_oneof![
            (0u64..0x400).prop_map(|p| 0x400_0000 + p * 0x1000),
            (0u64..0x400).prop_map(|p| 0x1_0000_0000 + p * 0x1000),
            (0u64..0x400).prop_map(|p| 0x100_0000_0000 + p * 0x1000),
            (0u64..1 << 44).prop_map(|p| p << 4),
        ],
        ttb1 in any::<u64>(),
    ) -> [u64; 8] {
        let d0 = t0sz | tg0 << 6 | u64::from(epd0) << 14 | u64::from(endi) << 15 | t1sz << 16
            | tg1 << 22 | u64::from(epd1) << 30 | 1 << 31 | ips << 32 | u64::from(aa64) << 41
            | u64::from(hd) << 42 | u64::from(ha) << 43 | u64::from(s) << 44 | 1 << 45
            | u64::from(a) << 46 | asid << 48;
        [d0, ttb0, ttb1 & 0x000F_FFFF_FFFF_FFF0, 0x44FF, 0, 0, 0, 0]
    }
}

/// Guest RAM below 4 GiB, above 4 GiB and above 1 TiB.
const NESTED_RAM: [core::ops::Range<u64>; 3] = [
    0x400_0000..0x800_0000,
    0x1_0000_0000..0x1_0040_0000,
    0x100_0000_0000..0x100_0040_0000,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// A guest CD `validate_cd` accepts is not ILLEGAL behind the nested
    /// STE the driver writes (the SMMU reads the guest's words as they are).
    #[test]
    fn guest_cds_validate_cd_accepts_are_legal(v in variant(), words in cd_words()) {
        let regs = v.regs();
        let Ok(f) = crate::Features::from_id_regs(&regs) else { return Ok(()) };
        if !f.nested() {
            return Ok(());
        }
        if crate::domain::validate_cd(&words, &f, &NESTED_RAM).is_ok() {
            let e = cd_illegal(&words, &nested_context(), false, &Idr::from_regs(&regs));
            prop_assert!(e.is_none(), "{words:x?} accepted: {e:?}");
        }
    }

    /// On every SMMU (OAS 32..52, with or without AArch32 tables, SMMUv3.0
    /// to v3.2, small tables or not), every stage-2 configuration the
    /// driver accepts for it (built, or from a CPU's VTCR_EL2) encodes a
    /// legal STE with a root aligned as `Stage2Config` sizes it.
    #[test]
    fn stage2_geometry_is_legal_on_every_smmu(
        v in variant(),
        g in 0usize..3,
        ipa in 20u32..=56,
        oas_req in 0usize..7,
        vtcr in prop::option::of((0u64..64, 0u64..4, 0u64..4, 0u64..7)),
        vmid in 1u16..=0xFF,
    ) {
        let v = Variant { s2: true, ..v };
        let regs = v.regs();
        let Ok(f) = crate::Features::from_id_regs(&regs) else { return Ok(()) };
        let idr = Idr::from_regs(&regs);
        let granule = [Granule::K4, Granule::K16, Granule::K64][g];
        let oas = [32, 36, 40, 42, 44, 48, 52][oas_req];
        let cfg = match vtcr {
            // T0SZ, SL0, TG0 (0 4K, 1 64K, 2 16K), PS; RES1 bit 31.
            Some((t0sz, sl0, tg0, ps)) => Stage2Config::from_vtcr(t0sz | sl0 << 6 | tg0 << 14 | ps << 16 | 1 << 31),
            None => Stage2Config::new(granule, ipa, oas),
        };
        let Ok(cfg) = cfg else { return Ok(()) };
        // What `create_domain` requires of the configuration on this SMMU.
        if !f.supports_granule(cfg.granule()) || cfg.check_fits(u32::from(f.ias_bits), u32::from(f.oas_bits)).is_err() {
            return Ok(());
        }
        let fields = cfg.ste_fields();
        // A root at 1 GiB: aligned to any start table, below any OAS.
        let ste = crate::ste::Ste::stage2(&crate::ste::Stage2Ste {
            vmid,
            t0sz: fields.t0sz,
            sl0: fields.sl0,
            ir0: fields.ir0,
            or0: fields.or0,
            sh0: fields.sh0,
            tg: fields.tg,
            ps: fields.ps,
            ttb: 0x4000_0000,
            affd: true,
            record_faults: true,
            ptw: false,
        });
        prop_assert!(ste.is_ok(), "{cfg:?}: {ste:?}");
        let ste = ste.unwrap().with_s2_stall(f.stall_forced());
        prop_assert_eq!(ste_illegal(&ste.0, &idr), None, "{:?} on {:?}", cfg, v);
    }
}

/// 5.4 TTB0: a TTB0 outside the range of the CD's effective IPS makes the
/// CD ILLEGAL (C_BAD_CD). A guest CD with IPS = 32 bits and its TTB0 in
/// guest RAM above 4 GiB was accepted for a nested stream.
#[test]
fn validate_cd_refuses_ttb0_beyond_ips() {
    // (The variants' extra ID bits reach the model.)
    let v = Variant {
        misc: (!0, !0, !0),
        ..Variant {
            s1: true,
            s2: true,
            ttf: 2,
            httu: 0,
            hyp: false,
            asid16: true,
            vmid16: true,
            cd2l: true,
            ttendian: 0,
            stall_model: 1,
            term_model: true,
            two_level: true,
            sid_bits: 8,
            ssid_bits: 8,
            stt: false,
            ril: true,
            oas: 5,
            granules: 7,
            minor: 1,
            coherent: true,
            misc: (0, 0, 0),
        }
    };
    let i = v.idr();
    assert!(i.ats && i.ns1ats && i.ds && i.d128 && i.dpt && i.vax == 3 && i.s1p && i.vmid16);
    let idr = qemu_idr();
    let regs = IdRegs {
        idr0: 0x0D44_101B,
        idr1: 0x0273_0010,
        idr3: 0x0000_1404,
        idr5: 0x0000_0075,
        iidr: 0,
        aidr: 1,
    };
    let f = crate::Features::from_id_regs(&regs).unwrap();
    // V, AA64, A, R, EPD1, 4K, T0SZ 25, ASID 5; IPS 0 (32 bits) or 2 (40).
    let cd = |ips: u64| {
        let d0 = 25 | 1 << 30 | 1 << 31 | ips << 32 | 1 << 41 | 3 << 45 | 5 << 48;
        [d0, 0x1_0000_3000, 0, 0x44FF, 0, 0, 0, 0]
    };
    assert!(cd_illegal(&cd(0), &nested_context(), false, &idr).is_some());
    assert_eq!(cd_illegal(&cd(2), &nested_context(), false, &idr), None);
    assert_eq!(
        crate::domain::validate_cd(&cd(0), &f, &NESTED_RAM).err(),
        Some(crate::domain::NestedError::Ttb0OutsideGuestRam(
            0x1_0000_3000
        ))
    );
    assert!(crate::domain::validate_cd(&cd(2), &f, &NESTED_RAM).is_ok());
}

/// Every STE (or CD) the SMMU may observe while `steps` take `current` to
/// the target: between two completed `Sync`s each dword may hold any value
/// it held since the last one, in any combination (IHI 0070 3.21.3: 64-bit
/// single-copy atomicity, any read order, caching until CFGI + CMD_SYNC).
fn observable(current: &[u64; 8], steps: &[crate::entry_plan::UpdateStep]) -> Vec<[u64; 8]> {
    use crate::entry_plan::UpdateStep;
    let mut possible: Vec<Vec<u64>> = current.iter().map(|&v| std::vec![v]).collect();
    let mut state = *current;
    let mut seen = Vec::new();
    let flush = |possible: &Vec<Vec<u64>>, seen: &mut Vec<[u64; 8]>| {
        let total: usize = possible.iter().map(Vec::len).product();
        for k in 0..total {
            let mut n = k;
            seen.push(core::array::from_fn(|i| {
                let v = possible[i][n % possible[i].len()];
                n /= possible[i].len();
                v
            }));
        }
    };
    for s in steps {
        match *s {
            UpdateStep::Write { dword, value } => {
                state[dword] = value;
                if !possible[dword].contains(&value) {
                    possible[dword].push(value);
                }
            }
            UpdateStep::Publish => {}
            UpdateStep::Sync => {
                flush(&possible, &mut seen);
                possible = state.iter().map(|&v| std::vec![v]).collect();
            }
        }
    }
    flush(&possible, &mut seen);
    seen
}

/// STEs as the driver builds them for `idr`: invalid, abort, bypass,
/// stage 2 (two geometries, two VMIDs, two roots), stage 1 (one CD, a
/// linear or 2-level CD table), nested.
fn driver_stes(idr: &Idr) -> Vec<crate::ste::Ste> {
    use crate::ste::{Stage1Ste, Stage2Ste, Ste};
    let mut out = std::vec![Ste::invalid(), Ste::abort(), Ste::bypass()];
    let s2 = |vmid: u16, ttb: u64, cfg: Stage2Config| {
        let f = cfg.ste_fields();
        Stage2Ste {
            vmid,
            t0sz: f.t0sz,
            sl0: f.sl0,
            ir0: f.ir0,
            or0: f.or0,
            sh0: f.sh0,
            tg: f.tg,
            ps: f.ps,
            ttb,
            affd: true,
            record_faults: true,
            ptw: false,
        }
    };
    let vmid_hi = if idr.vmid16 { 0x1234 } else { 0x34 };
    let g = if idr.gran4k {
        Granule::K4
    } else if idr.gran16k {
        Granule::K16
    } else {
        Granule::K64
    };
    let oas = idr.oas.min(48);
    let cfgs: Vec<Stage2Config> = [oas, 32]
        .iter()
        .filter_map(|&ipa| Stage2Config::new(g, ipa.min(idr.ias), oas).ok())
        .collect();
    let mut s2s = Vec::new();
    for (i, cfg) in cfgs.iter().enumerate() {
        for (vmid, ttb) in [
            (1, 0x4000_0000),
            (vmid_hi, 0x5000_0000 + (i as u64) * 0x10_0000),
        ] {
            s2s.push(s2(vmid, ttb, *cfg));
        }
    }
    // S2S as the driver sets it: 1 exactly when stalls are forced.
    let forced = idr.stall_model == 0b10;
    if idr.s2p {
        out.extend(
            s2s.iter()
                .filter_map(|s| Ste::stage2(s).ok())
                .map(|ste| ste.with_s2_stall(forced)),
        );
    }
    let cdmax = idr.ssidsize.min(8) as u8;
    let s1s = [
        Stage1Ste::new(0x6000_0000, 0),
        Stage1Ste {
            s1cdmax: cdmax,
            s1dss: if cdmax > 0 { 2 } else { 0 },
            ..Stage1Ste::new(0x6100_0000, 0)
        },
    ];
    if idr.s1p {
        for s1 in &s1s {
            if let Ok(mut ste) = Ste::stage1(s1) {
                out.push(ste);
                if idr.cd2l && cdmax > 0 {
                    ste.0[0] |= 1 << 4; // S1Fmt = 2-level, 4K leaves (as src/domain/stage1.rs)
                    out.push(ste);
                }
            }
        }
    }
    if idr.s1p && idr.s2p {
        for s2 in &s2s {
            out.extend(
                Ste::nested(&Stage1Ste::new(0x400_3000, 0), s2)
                    .ok()
                    .map(|ste| ste.with_s2_stall(forced)),
            );
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every state the SMMU may observe during any update the planner makes
    /// between two STEs the driver builds is not ILLEGAL.
    #[test]
    fn every_observable_ste_of_an_update_is_legal(v in variant(), a in 0usize..64, b in 0usize..64) {
        if !v.probes() {
            return Ok(()); // refused at probe: never driven
        }
        let idr = v.idr();
        let stes = driver_stes(&idr);
        let (cur, target) = (stes[a % stes.len()], stes[b % stes.len()]);
        prop_assert_eq!(ste_illegal(&cur.0, &idr), None, "{:x?}", cur);
        let plan = crate::ste::plan_update(&cur, &target).expect("a plan");
        for seen in observable(&cur.0, plan.as_slice()) {
            let e = ste_illegal(&seen, &idr);
            prop_assert!(e.is_none(), "{cur:x?} -> {target:x?}: {seen:x?} {e:?}");
        }
    }

    /// Likewise for CDs: ASID, TTB0, MAIR and geometry changes of a live CD.
    #[test]
    fn every_observable_cd_of_an_update_is_legal(
        v in variant(),
        asids in (1u16..0x100, 1u16..0x100),
        ttbs in (0u64..16, 0u64..16),
        va in (25u8..=48, 25u8..=48),
    ) {
        use crate::cd::{Cd, Stage1Cd};
        if !v.probes() {
            return Ok(());
        }
        let idr = v.idr();
        let tg0 = if idr.gran4k { 0 } else if idr.gran16k { 2 } else { 1 };
        let ips = [32, 36, 40, 42, 44, 48].iter().rposition(|&b| b <= idr.oas).unwrap() as u8;
        let cd = |asid: u16, ttb: u64, va: u8| Cd::new(&Stage1Cd {
            asid,
            ttb0: 0x1000_0000 + ttb * 0x1_0000,
            t0sz: 64 - va,
            tg0,
            ips,
            ir0: 1,
            or0: 1,
            sh0: 3,
            mair: 0x44FF,
            record_faults: true,
            affd: false,
        });
        let (Ok(cur), Ok(target)) = (cd(asids.0, ttbs.0, va.0), cd(asids.1, ttbs.1, va.1)) else {
            return Ok(());
        };
        // CD.S as the driver sets it: 1 exactly when stalls are forced.
        let forced = idr.stall_model == 0b10;
        let (cur, target) = (cur.with_stall(forced), target.with_stall(forced));
        let ste = [1 | 5 << 1, 1 << 44, 0, 0, 0, 0, 0, 0];
        prop_assert_eq!(cd_illegal(&cur.0, &ste, false, &idr), None, "{:x?}", cur);
        let plan = crate::cd::plan_update(&cur, &target).expect("a plan");
        for seen in observable(&cur.0, plan.as_slice()) {
            let e = cd_illegal(&seen, &ste, false, &idr);
            prop_assert!(e.is_none(), "{cur:x?} -> {target:x?}: {seen:x?} {e:?}");
        }
    }
}
