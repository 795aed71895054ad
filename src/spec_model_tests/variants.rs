//! ID-register variants and driver domain requests (strategies).

use super::*;

// ---------------------------------------------------------------------------
// ID-register variants and driver requests.
// ---------------------------------------------------------------------------

/// An SMMU variant (OAS 32..52: its memory comes from [`LowHal`], below
/// 4 GiB).
#[derive(Debug, Clone, Copy)]
pub(super) struct Variant {
    pub(super) s1: bool,
    pub(super) s2: bool,
    pub(super) ttf: u32,
    pub(super) httu: u32,
    pub(super) hyp: bool,
    pub(super) asid16: bool,
    pub(super) vmid16: bool,
    pub(super) cd2l: bool,
    pub(super) ttendian: u32,
    pub(super) stall_model: u32,
    pub(super) term_model: bool,
    pub(super) two_level: bool,
    pub(super) sid_bits: u8,
    pub(super) ssid_bits: u8,
    pub(super) stt: bool,
    pub(super) ril: bool,
    pub(super) oas: u8,
    pub(super) granules: u32,
    pub(super) minor: u32,
    pub(super) coherent: bool,
    /// Other IDR0 / IDR3 / IDR5 bits the driver must cope with (ATS,
    /// NS1ATS, PRI, MSI, SEV, BTM, VMW...; FWB, MPAM, BBML, DPT...; DS,
    /// D128, VAX).
    pub(super) misc: (u32, u32, u32),
}

impl Variant {
    pub(super) fn builder(&self) -> ModelBuilder {
        self.builder_base()
            .id_register(
                0x00,
                (self.idr0_base() & !IDR0_MISC) | (self.misc.0 & IDR0_MISC),
            )
            .id_register(
                0x0C,
                (self.idr3_base() & !IDR3_MISC) | (self.misc.1 & IDR3_MISC),
            )
            .id_register(
                0x14,
                (self.idr5_base() & !IDR5_MISC) | (self.misc.2 & IDR5_MISC),
            )
    }

    fn builder_base(&self) -> ModelBuilder {
        SmmuModel::builder()
            .stage1(self.s1)
            .stage2(self.s2)
            .id_field(0x00, 2, 2, self.ttf)
            .id_field(0x00, 6, 2, self.httu)
            .id_field(0x00, 9, 1, u32::from(self.hyp))
            .asid16(self.asid16)
            .vmid16(self.vmid16)
            .cd2l(self.cd2l)
            .id_field(0x00, 21, 2, self.ttendian)
            .id_field(0x00, 24, 2, self.stall_model)
            .id_field(0x00, 26, 1, u32::from(self.term_model))
            .two_level_strtab(self.two_level)
            .sid_bits(self.sid_bits)
            .ssid_bits(self.ssid_bits)
            .id_field(0x0C, 9, 1, u32::from(self.stt))
            .ril(self.ril)
            .oas(self.oas)
            .granules(self.granules << 4)
            .id_field(0x1C, 0, 4, self.minor)
            .coherent(self.coherent)
    }

    fn idr0_base(&self) -> u32 {
        self.builder_base().build().read32(0x00)
    }

    fn idr3_base(&self) -> u32 {
        self.builder_base().build().read32(0x0C)
    }

    fn idr5_base(&self) -> u32 {
        self.builder_base().build().read32(0x14)
    }

    /// Whether the driver accepts this SMMU at all.
    /// The ID registers the variant's register model answers with.
    pub(super) fn regs(&self) -> IdRegs {
        let m = self.builder().build();
        IdRegs {
            idr0: m.read32(0x00),
            idr1: m.read32(0x04),
            idr3: m.read32(0x0C),
            idr5: m.read32(0x14),
            iidr: m.read32(0x18),
            aidr: m.read32(0x1C),
        }
    }

    pub(super) fn probes(&self) -> bool {
        crate::Features::from_id_regs(&self.regs()).is_ok()
    }

    pub(super) fn idr(&self) -> Idr {
        Idr::from_regs(&self.regs())
    }
}

/// IDR0 BTM, DORMHINT, ATS, NS1ATS, MSI, SEV, ATOS, PRI, VMW, VATOS,
/// ATSRECERR.
const IDR0_MISC: u32 = 1 << 5
    | 1 << 8
    | 1 << 10
    | 1 << 11
    | 1 << 13
    | 1 << 14
    | 1 << 15
    | 1 << 16
    | 1 << 17
    | 1 << 20
    | 1 << 23;
/// IDR3 HAD, PBHA, XNX, PPS, MPAM, FWB, BBML, E0PD, PTWNNC, DPT.
const IDR3_MISC: u32 =
    1 << 2 | 1 << 3 | 1 << 4 | 1 << 5 | 1 << 7 | 1 << 8 | 3 << 11 | 1 << 13 | 1 << 14 | 1 << 15;
/// IDR5 DS, D128, VAX.
const IDR5_MISC: u32 = 1 << 7 | 1 << 8 | 3 << 10;

prop_compose! {
    pub(super) fn variant()(
        stages in prop_oneof![1 => Just(1u8), 1 => Just(2u8), 3 => Just(3u8)],
        ttf in 2u32..=3,
        httu in 0u32..=2,
        hyp: bool,
        asid16: bool,
        vmid16: bool,
        cd2l: bool,
        le_only: bool,
        stall_model in prop::sample::select(std::vec![0u32, 0, 1, 1, 1, 2]),
        term_model: bool,
        two_level: bool,
        sid_bits in 6u8..=12,
        ssid_bits in prop::sample::select(std::vec![0u8, 1, 3, 6, 7, 10, 11, 20]),
        stt: bool,
        ril: bool,
        oas in 0u8..=6,
        granules in 1u32..=7,
        minor in 0u32..=2,
        coherent: bool,
        misc in prop_oneof![1 => Just((0u32, 0u32, 0u32)), 1 => (any::<u32>(), any::<u32>(), any::<u32>())],
    ) -> Variant {
        Variant {
            s1: stages & 1 != 0,
            s2: stages & 2 != 0,
            ttf, httu, hyp, asid16, vmid16, cd2l,
            ttendian: if le_only { 2 } else { 0 },
            stall_model, term_model, two_level, sid_bits, ssid_bits, stt, ril,
            oas, granules, minor, coherent, misc,
        }
    }
}

/// One domain request: granule (index into the ones implemented), IPA/VA
/// bits, stage policy, explicit VMID.
#[derive(Debug, Clone, Copy)]
pub(super) struct DomainReq {
    pub(super) granule: usize,
    pub(super) ipa_bits: u32,
    pub(super) stage1: bool,
    pub(super) vmid: Option<u16>,
    /// Output size asked for (index into 32..52; clamped to the OAS).
    pub(super) oas: usize,
}

prop_compose! {
    pub(super) fn domain_req()(granule in 0usize..3, ipa_bits in 25u32..=52, stage1: bool,
                    vmid in prop::option::of(1u16..=0xFFFF), oas in 0usize..12) -> DomainReq {
        DomainReq { granule, ipa_bits, stage1, vmid, oas }
    }
}

/// StreamIDs the scenarios use (all below 2^6, the smallest SIDSIZE).
pub(super) const SIDS: &[u32] = &[1, 2, 3, 5, 8, 13, 21, 34];

fn granules_of<H: Hal>(smmu: &Smmu<H>) -> Vec<Granule> {
    let f = smmu.features();
    [Granule::K4, Granule::K16, Granule::K64]
        .into_iter()
        .filter(|&g| f.supports_granule(g))
        .collect()
}

/// Creates the domain `r` asks for, as a hypervisor would (geometry clamped
/// to the SMMU's IAS/OAS; VMID masked to the SMMU's width); `None` when the
/// driver refuses it (a typed error: that is fine, it built nothing).
pub(super) fn create<H: Hal>(smmu: &Smmu<H>, r: DomainReq) -> Option<crate::DomainId> {
    let f = *smmu.features();
    let gs = granules_of(smmu);
    let g = *gs.get(r.granule % gs.len().max(1))?;
    // Some requests ask for the SMMU's whole output size, the others for a
    // smaller one (a VM's VTCR_EL2.PS).
    let oas = [32, 36, 40, 42, 44, 48, 52]
        .get(r.oas)
        .map_or(u32::from(f.oas_bits), |&b: &u32| {
            b.min(u32::from(f.oas_bits))
        });
    let max_ipa = if g == Granule::K64 && oas == 52 {
        52
    } else {
        48
    };
    let cfg = Stage2Config::new(g, r.ipa_bits.min(max_ipa).min(oas), oas)
        .and_then(|c| c.clamp_to(u32::from(f.ias_bits), u32::from(f.oas_bits)))
        .ok()?;
    let vmid = r
        .vmid
        .map(|v| v & ((1u32 << f.vmid_bits) - 1) as u16)
        .filter(|&v| v != 0);
    let stage = if r.stage1 {
        StagePolicy::Stage1
    } else {
        StagePolicy::Stage2
    };
    smmu.create_domain(DomainOptions {
        stage,
        vmid: if f.stage2 { vmid } else { None },
        ..DomainOptions::new(cfg)
    })
    .ok()
}
