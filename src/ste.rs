//! Stream table entries: encoding and the safe update order.
//!
//! An [`Ste`] is the 64-byte entry (eight little-endian dwords) the SMMU reads
//! for one StreamID. The constructors produce exactly the architecture's
//! encodings from typed descriptions ([`Stage1Ste`], [`Stage2Ste`]) and
//! reject values the driver must not program.
//!
//! The hardware only guarantees 64-bit single-copy atomicity, and the SMMU
//! may read an STE's dwords in any order and cache any part of it until a
//! CFGI_STE + CMD_SYNC completes (IHI 0070 §3.21.3). So replacing an entry
//! needs an ordered sequence of dword writes, barriers and completed
//! invalidations: [`plan_update`] computes it as pure data ([`UpdatePlan`])
//! for the stream table code to execute, with the generic planner of
//! [`entry_plan`] and the per-bit used bits of each Config
//! ([`Ste::used_bits`], rules in `src/ste/used.rs`).
//!
//! The level-1 descriptors of a two-level stream table are here too
//! ([`l1_descriptor`], [`L1Descriptor::decode`]).

use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

use crate::entry_plan::{self, EntryKind};
pub use crate::entry_plan::{UpdatePlan, UpdateStep};
use crate::error::{Error, Field, Invalid, Result};

#[cfg(test)]
mod plan_tests;
mod used;

register_bitfields! [u64,
    /// STE dword 0: validity, configuration and the stage-1 CD pointer.
    pub STE_0 [
        V OFFSET(0) NUMBITS(1) [],
        /// 0b0xx abort, 0b100 bypass, 0b101 stage 1, 0b110 stage 2,
        /// 0b111 nested.
        CONFIG OFFSET(1) NUMBITS(3) [
            Abort = 0, Bypass = 4, Stage1 = 5, Stage2 = 6, Nested = 7
        ],
        /// CD table format: 0 = linear (or a single CD).
        S1FMT OFFSET(4) NUMBITS(2) [],
        /// S1ContextPtr\[51:6\].
        S1CONTEXTPTR OFFSET(6) NUMBITS(46) [],
        /// log2 of the number of CDs; 0 = one CD.
        S1CDMAX OFFSET(59) NUMBITS(5) []
    ],
    /// STE dword 1: stage-1 CD fetch attributes, stream world, overrides.
    pub STE_1 [
        /// Default substream behaviour (only with substreams).
        S1DSS OFFSET(0) NUMBITS(2) [Terminate = 0, Bypass = 1, Ssid0 = 2],
        /// Inner cacheability of CD fetches: 0 NC, 1 WB-RA, 2 WT-RA, 3 WB.
        S1CIR OFFSET(2) NUMBITS(2) [],
        /// Outer cacheability of CD fetches.
        S1COR OFFSET(4) NUMBITS(2) [],
        /// Shareability of CD fetches: 0 NSH, 2 OSH, 3 ISH.
        S1CSH OFFSET(6) NUMBITS(2) [],
        /// S2HWU59..S2HWU62: stage-2 hardware use of descriptor bits 59..62.
        S2HWU OFFSET(8) NUMBITS(4) [],
        /// Destructive read enable.
        DRE OFFSET(12) NUMBITS(1) [],
        /// Contiguous hint: 2^CONT identical STEs. Always 0.
        CONT OFFSET(13) NUMBITS(4) [],
        /// Directed cache prefetch.
        DCP OFFSET(17) NUMBITS(1) [],
        /// PRI page request auto responses.
        PPAR OFFSET(18) NUMBITS(1) [],
        /// Merge events. Always 0.
        MEV OFFSET(19) NUMBITS(1) [],
        /// Reserved for software; IGNORED by the SMMU.
        SW_RESERVED OFFSET(20) NUMBITS(4) [],
        /// Stage-1 permission indirection.
        S1PIE OFFSET(24) NUMBITS(1) [],
        /// Stage-2 forced write-back.
        S2FWB OFFSET(25) NUMBITS(1) [],
        /// Stage-1 MPAM.
        S1MPAM OFFSET(26) NUMBITS(1) [],
        /// Stall disable. Kept 0: QEMU reports C_BAD_STE for 1.
        S1STALLD OFFSET(27) NUMBITS(1) [],
        /// ATS behaviour: 0 = ATS translation requests aborted.
        EATS OFFSET(28) NUMBITS(2) [],
        /// StreamWorld: 0 = NS-EL1, 2 = EL2 (EL2-E2H when SMMU_CR2.E2H = 1).
        STRW OFFSET(30) NUMBITS(2) [NsEl1 = 0, El2 = 2],
        /// Memory type override (with MTCFG = 1).
        MEMATTR OFFSET(32) NUMBITS(4) [],
        /// 1 = replace the incoming memory type with MEMATTR.
        MTCFG OFFSET(36) NUMBITS(1) [],
        /// Allocation hints override (0 = use incoming).
        ALLOCCFG OFFSET(37) NUMBITS(4) [],
        /// Shareability override: 1 = use the incoming shareability.
        SHCFG OFFSET(44) NUMBITS(2) [NonShareable = 0, Incoming = 1, Outer = 2, Inner = 3],
        /// NS attribute override (Secure streams).
        NSCFG OFFSET(46) NUMBITS(2) [],
        /// Privilege override (0 = use incoming).
        PRIVCFG OFFSET(48) NUMBITS(2) [],
        /// Instruction/data override (0 = use incoming).
        INSTCFG OFFSET(50) NUMBITS(2) [],
        /// IMPLEMENTATION DEFINED bits \[127:116\] of the STE.
        IMPDEF OFFSET(52) NUMBITS(12) []
    ],
    /// STE dword 2: stage-2 VMID and translation control (VTCR-like).
    pub STE_2 [
        S2VMID OFFSET(0) NUMBITS(16) [],
        S2T0SZ OFFSET(32) NUMBITS(6) [],
        S2SL0 OFFSET(38) NUMBITS(2) [],
        S2IR0 OFFSET(40) NUMBITS(2) [],
        S2OR0 OFFSET(42) NUMBITS(2) [],
        S2SH0 OFFSET(44) NUMBITS(2) [],
        /// 0 = 4K, 1 = 64K, 2 = 16K.
        S2TG OFFSET(46) NUMBITS(2) [],
        S2PS OFFSET(48) NUMBITS(3) [],
        /// AArch64 stage-2 tables. Always 1 (0 crashes QEMU).
        S2AA64 OFFSET(51) NUMBITS(1) [],
        /// Big-endian stage-2 tables. Always 0.
        S2ENDI OFFSET(52) NUMBITS(1) [],
        /// Access flag fault disable.
        S2AFFD OFFSET(53) NUMBITS(1) [],
        /// Protected table walk (nested: stage-1 walks to device memory fault).
        S2PTW OFFSET(54) NUMBITS(1) [],
        S2HD OFFSET(55) NUMBITS(1) [],
        S2HA OFFSET(56) NUMBITS(1) [],
        /// Stall on stage-2 faults. Always 0.
        S2S OFFSET(57) NUMBITS(1) [],
        /// Record stage-2 faults in the event queue.
        S2R OFFSET(58) NUMBITS(1) []
    ],
    /// STE dword 3: stage-2 translation table base.
    pub STE_3 [
        /// S2TTB\[51:4\].
        S2TTB OFFSET(4) NUMBITS(48) []
    ],
    /// Level-1 stream table descriptor.
    pub L1STD [
        /// 0 = invalid; n = the L2 table holds 2^(n - 1) STEs.
        SPAN OFFSET(0) NUMBITS(5) [],
        /// L2Ptr\[51:6\].
        L2PTR OFFSET(6) NUMBITS(46) []
    ]
];

/// Physical addresses the SMMU takes are below 2^52.
const PA_LIMIT: u64 = 1 << 52;
/// Low bits the S1ContextPtr field does not hold.
const CD_PTR_SHIFT: u32 = 6;
/// Low bits the S2TTB field does not hold.
const S2TTB_SHIFT: u32 = 4;
/// Low bits the L2Ptr field does not hold.
const L2PTR_SHIFT: u32 = 6;
/// Bytes in one STE.
pub const STE_SIZE: usize = 64;
/// Largest valid Span of a level-1 descriptor.
pub const MAX_SPAN: u8 = 12;

/// A stream table entry: eight dwords, in the order they sit in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ste(pub [u64; 8]);

/// The configuration an STE selects (STE.Config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteConfig {
    /// 0b000: abort, no event.
    Abort,
    /// 0b001..=0b011: also abort (the architecture treats every 0b0xx as
    /// abort); the raw value is kept.
    AbortOther(u8),
    /// 0b100: bypass.
    Bypass,
    /// 0b101: stage 1 only.
    Stage1,
    /// 0b110: stage 2 only.
    Stage2,
    /// 0b111: stage 1 then stage 2.
    Nested,
}

impl SteConfig {
    /// Whether traffic is aborted under this configuration.
    pub fn is_abort(self) -> bool {
        matches!(self, SteConfig::Abort | SteConfig::AbortOther(_))
    }
}

/// StreamWorld of a stage-1 stream (STE.STRW).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strw {
    /// Non-secure EL1 (guest) translation regime: ASIDs are tagged with the
    /// VMID.
    #[default]
    NsEl1,
    /// EL2 (or EL2-E2H when SMMU_CR2.E2H = 1): needs IDR0.HYP.
    El2,
}

/// Stage-2 configuration of a stream (STE dwords 2 and 3).
///
/// The STE is always programmed with AArch64 tables (S2AA64 = 1: QEMU
/// crashes on 0 and this driver has no AArch32 tables), little-endian
/// (S2ENDI = 0), no stalls (S2S = 0: [`Ste::with_s2_stall`] sets it where
/// the SMMU forces stalls) and no hardware access/dirty updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage2Ste {
    /// VMID tagging the stream's TLB entries.
    pub vmid: u16,
    /// S2T0SZ: the IPA space is 2^(64 - t0sz) bytes.
    pub t0sz: u8,
    /// S2SL0: starting level (granule dependent, as VTCR_EL2.SL0). 3 is
    /// rejected (reserved without 52-bit support; QEMU reports C_BAD_STE).
    pub sl0: u8,
    /// Inner cacheability of table walks: 0 NC, 1 WB-WA, 2 WT, 3 WB.
    pub ir0: u8,
    /// Outer cacheability of table walks.
    pub or0: u8,
    /// Shareability of table walks: 0 NSH, 2 OSH, 3 ISH (1 is reserved).
    pub sh0: u8,
    /// S2TG: 0 = 4K, 1 = 64K, 2 = 16K (3 is reserved).
    pub tg: u8,
    /// S2PS: output size, encoded as IDR5.OAS (0..=6).
    pub ps: u8,
    /// Physical address of the stage-2 root table, 16-byte aligned, below
    /// 2^52. (The architecture wants it aligned to the root table's size;
    /// the table allocator guarantees that.)
    pub ttb: u64,
    /// S2AFFD: no fault on AF = 0 (set when tables are shared with a CPU that
    /// may leave AF clear).
    pub affd: bool,
    /// S2R: record stage-2 faults as events.
    pub record_faults: bool,
    /// S2PTW: protected table walk (nested streams only).
    pub ptw: bool,
}

/// Stage-1 configuration of a stream (STE dwords 0 and 1, plus the VMID).
///
/// One CD per stream: S1Fmt = linear, and the CD sits at `cd_paddr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage1Ste {
    /// Physical address (an IPA when nested) of the CD, 64-byte aligned.
    pub cd_paddr: u64,
    /// S1CDMax: log2 of the number of CDs; 0 = one CD. QEMU reports
    /// C_BAD_STE for anything but 0.
    pub s1cdmax: u8,
    /// S1DSS: what a transaction without a SubstreamID gets when
    /// `s1cdmax != 0` (0 terminate, 1 bypass, 2 SSID 0; 3 is reserved).
    pub s1dss: u8,
    /// S1CIR: inner cacheability of CD fetches (0 NC, 1 WB-RA, 2 WT-RA, 3 WB).
    pub cir: u8,
    /// S1COR: outer cacheability of CD fetches.
    pub cor: u8,
    /// S1CSH: shareability of CD fetches (0 NSH, 2 OSH, 3 ISH).
    pub csh: u8,
    /// StreamWorld.
    pub strw: Strw,
    /// S2VMID for a stage-1-only stream. Stage-1 TLB entries are tagged
    /// with it when stage 2 is implemented (QEMU does), so TLBI_NH_* must
    /// name the same VMID. Ignored by [`Ste::nested`], which takes the
    /// stage-2 VMID.
    pub vmid: u16,
}

impl Stage1Ste {
    /// A stage-1 description with the usual attributes: one CD, CD fetches
    /// write-back read-allocate inner and outer, inner shareable, NS-EL1.
    pub const fn new(cd_paddr: u64, vmid: u16) -> Stage1Ste {
        Stage1Ste {
            cd_paddr,
            s1cdmax: 0,
            s1dss: 0,
            cir: 1,
            cor: 1,
            csh: 3,
            strw: Strw::NsEl1,
            vmid,
        }
    }
}

fn invalid(field: Field, value: u64) -> Error {
    Error::Invalid(Invalid::Field { field, value })
}

fn check_attr(v: u8, what: Field) -> Result<u64> {
    if v > 3 {
        Err(invalid(what, u64::from(v)))
    } else {
        Ok(u64::from(v))
    }
}

fn check_sh(v: u8, what: Field) -> Result<u64> {
    if v == 1 || v > 3 {
        Err(invalid(what, u64::from(v)))
    } else {
        Ok(u64::from(v))
    }
}

fn check_pa(addr: u64, align: u64, what: Field) -> Result<()> {
    if addr & (align - 1) != 0 {
        return Err(Error::Misaligned { addr, align });
    }
    if addr >= PA_LIMIT {
        return Err(invalid(what, addr));
    }
    Ok(())
}

impl Stage2Ste {
    fn dwords(&self) -> Result<(u64, u64)> {
        check_pa(self.ttb, 1 << S2TTB_SHIFT, Field::S2Ttb)?;
        if self.t0sz > 63 {
            return Err(invalid(Field::S2T0sz, u64::from(self.t0sz)));
        }
        if self.sl0 > 2 {
            return Err(invalid(Field::S2Sl0, u64::from(self.sl0)));
        }
        if self.tg > 2 {
            return Err(invalid(Field::S2Tg, u64::from(self.tg)));
        }
        if self.ps > 6 {
            return Err(invalid(Field::S2Ps, u64::from(self.ps)));
        }
        let d2 = STE_2::S2VMID.val(u64::from(self.vmid))
            + STE_2::S2T0SZ.val(u64::from(self.t0sz))
            + STE_2::S2SL0.val(u64::from(self.sl0))
            + STE_2::S2IR0.val(check_attr(self.ir0, Field::S2Ir0)?)
            + STE_2::S2OR0.val(check_attr(self.or0, Field::S2Or0)?)
            + STE_2::S2SH0.val(check_sh(self.sh0, Field::S2Sh0)?)
            + STE_2::S2TG.val(u64::from(self.tg))
            + STE_2::S2PS.val(u64::from(self.ps))
            + STE_2::S2AA64.val(1)
            + STE_2::S2ENDI.val(0)
            + STE_2::S2AFFD.val(u64::from(self.affd))
            + STE_2::S2PTW.val(u64::from(self.ptw))
            + STE_2::S2S.val(0)
            + STE_2::S2R.val(u64::from(self.record_faults));
        let d3 = STE_3::S2TTB.val(self.ttb >> S2TTB_SHIFT);
        Ok((d2.value, d3.value))
    }
}

impl Stage1Ste {
    fn dwords(&self, config: u64) -> Result<(u64, u64)> {
        check_pa(self.cd_paddr, 1 << CD_PTR_SHIFT, Field::S1ContextPtr)?;
        if self.s1cdmax > 31 {
            return Err(invalid(Field::S1CdMax, u64::from(self.s1cdmax)));
        }
        if self.s1dss > 2 {
            return Err(invalid(Field::S1Dss, u64::from(self.s1dss)));
        }
        let d0 = STE_0::V.val(1)
            + STE_0::CONFIG.val(config)
            + STE_0::S1FMT.val(0)
            + STE_0::S1CONTEXTPTR.val(self.cd_paddr >> CD_PTR_SHIFT)
            + STE_0::S1CDMAX.val(u64::from(self.s1cdmax));
        let strw = match self.strw {
            Strw::NsEl1 => STE_1::STRW::NsEl1,
            Strw::El2 => STE_1::STRW::El2,
        };
        let d1 = STE_1::S1DSS.val(u64::from(self.s1dss))
            + STE_1::S1CIR.val(check_attr(self.cir, Field::S1Cir)?)
            + STE_1::S1COR.val(check_attr(self.cor, Field::S1Cor)?)
            + STE_1::S1CSH.val(check_sh(self.csh, Field::S1Csh)?)
            + STE_1::S1STALLD.val(0)
            + STE_1::EATS.val(0)
            + strw
            + STE_1::SHCFG::Incoming;
        Ok((d0.value, d1.value))
    }
}

impl Ste {
    /// All zeros: V = 0. Traffic is aborted and reported as C_BAD_STE.
    pub const fn invalid() -> Ste {
        Ste([0; 8])
    }

    /// V = 1, Config = abort: traffic is aborted silently.
    pub const fn abort() -> Ste {
        let d0 = STE_0::V.val(1).value | STE_0::CONFIG::Abort.value;
        Ste([d0, 0, 0, 0, 0, 0, 0, 0])
    }

    /// V = 1, Config = bypass. Attributes: SHCFG = "use incoming" (0 would
    /// force non-shareable); every other override field (MTCFG, ALLOCCFG,
    /// PRIVCFG, INSTCFG, NSCFG) is 0, which also means "use incoming".
    pub const fn bypass() -> Ste {
        let d0 = STE_0::V.val(1).value | STE_0::CONFIG::Bypass.value;
        Ste([d0, STE_1::SHCFG::Incoming.value, 0, 0, 0, 0, 0, 0])
    }

    /// A stage-1-only stream. Dword 2 carries only S2VMID (see
    /// [`Stage1Ste::vmid`]).
    pub fn stage1(s1: &Stage1Ste) -> Result<Ste> {
        let (d0, d1) = s1.dwords(STE_0::CONFIG::Stage1.value >> STE_0::CONFIG.shift)?;
        let d2 = STE_2::S2VMID.val(u64::from(s1.vmid)).value;
        Ok(Ste([d0, d1, d2, 0, 0, 0, 0, 0]))
    }

    /// A stage-2-only stream. Dword 1 has SHCFG = "use incoming".
    pub fn stage2(s2: &Stage2Ste) -> Result<Ste> {
        let (d2, d3) = s2.dwords()?;
        let d0 = STE_0::V.val(1).value | STE_0::CONFIG::Stage2.value;
        Ok(Ste([d0, STE_1::SHCFG::Incoming.value, d2, d3, 0, 0, 0, 0]))
    }

    /// A nested stream: stage 1 from `s1`, then stage 2 from `s2` (whose
    /// VMID is used; `s1.vmid` is ignored).
    pub fn nested(s1: &Stage1Ste, s2: &Stage2Ste) -> Result<Ste> {
        let (d0, d1) = s1.dwords(STE_0::CONFIG::Nested.value >> STE_0::CONFIG.shift)?;
        let (d2, d3) = s2.dwords()?;
        Ok(Ste([d0, d1, d2, d3, 0, 0, 0, 0]))
    }

    /// This STE with STE.S2S = `stall` when it translates at stage 2
    /// (Config stage 2 or nested); any other STE unchanged. An SMMU with
    /// IDR0.STALL_MODEL = 0b10 needs S2S = 1 in every STE with stage 2
    /// (S2S = 0 is ILLEGAL there: C_BAD_STE), one with 0b01 needs 0 (IHI
    /// 0070 §5.5): see `Features::stall_forced`. [`Stage2Ste`] encodes 0.
    pub fn with_s2_stall(mut self, stall: bool) -> Ste {
        if matches!(self.config(), SteConfig::Stage2 | SteConfig::Nested) {
            let mut d2 = LocalRegisterCopy::<u64, STE_2::Register>::new(self.0[2]);
            d2.modify(STE_2::S2S.val(u64::from(stall)));
            self.0[2] = d2.get();
        }
        self
    }

    /// STE.S2S (dword 2 bit 57): stage-2 faults stall.
    pub fn s2_stall(&self) -> bool {
        LocalRegisterCopy::<u64, STE_2::Register>::new(self.0[2]).is_set(STE_2::S2S)
    }

    fn d0(&self) -> LocalRegisterCopy<u64, STE_0::Register> {
        LocalRegisterCopy::new(self.0[0])
    }

    /// STE.V.
    pub fn is_valid(&self) -> bool {
        self.d0().is_set(STE_0::V)
    }

    /// STE.Config (meaningful only when [`Ste::is_valid`]).
    pub fn config(&self) -> SteConfig {
        match self.d0().read_as_enum(STE_0::CONFIG) {
            Some(STE_0::CONFIG::Value::Abort) => SteConfig::Abort,
            Some(STE_0::CONFIG::Value::Bypass) => SteConfig::Bypass,
            Some(STE_0::CONFIG::Value::Stage1) => SteConfig::Stage1,
            Some(STE_0::CONFIG::Value::Stage2) => SteConfig::Stage2,
            Some(STE_0::CONFIG::Value::Nested) => SteConfig::Nested,
            None => SteConfig::AbortOther(self.d0().read(STE_0::CONFIG) as u8),
        }
    }

    /// Whether the SMMU passes or translates traffic with this entry (V = 1
    /// and a non-abort config).
    pub fn is_live(&self) -> bool {
        self.is_valid() && !self.config().is_abort()
    }

    /// STE.S2VMID.
    pub fn vmid(&self) -> u16 {
        LocalRegisterCopy::<u64, STE_2::Register>::new(self.0[2]).read(STE_2::S2VMID) as u16
    }

    /// STE.S2TTB as an address.
    pub fn s2ttb(&self) -> u64 {
        LocalRegisterCopy::<u64, STE_3::Register>::new(self.0[3]).read(STE_3::S2TTB) << S2TTB_SHIFT
    }

    /// STE.S1ContextPtr as an address.
    pub fn cd_paddr(&self) -> u64 {
        self.d0().read(STE_0::S1CONTEXTPTR) << CD_PTR_SHIFT
    }

    /// The bits the SMMU may read under this entry's configuration, per
    /// dword (1 = used), as the update planner sees them: see the rules in
    /// `src/ste/used.rs` (IHI 0070 §5.2, counted conservatively).
    pub fn used_bits(&self) -> [u64; 8] {
        used::ste_used(&self.0)
    }
}

/// How the SMMU reads STEs, for the generic entry planner: the per-bit
/// used bits of [`Ste::used_bits`], and an abort entry (V = 1, Config =
/// abort: traffic terminated silently, nothing else read) as the
/// break-before-make state.
pub const STE_KIND: EntryKind = EntryKind {
    used: used::ste_used,
    broken_dword0: Ste::abort().0[0],
};

/// Plans the replacement of `current` by `target` so that, whatever order
/// the SMMU reads the dwords in and whatever part of the entry it caches,
/// it never combines bits of the two configurations (IHI 0070 §3.21.3,
/// design-lessons rule 1). This is the entry planner (`entry_plan::plan`)
/// with the STE's used-bit rules (`STE_KIND`); `Sync` means CFGI_STE
/// (leaf) + CMD_SYNC.
///
/// Hitless (never through abort) whenever the bits both configurations
/// use differ in at most one dword: e.g. abort/bypass <-> stage 1 or
/// stage 2, stage 1 <-> stage 2 with the same VMID, stage 2 <-> nested, a
/// change of only the CD pointer, the S1DSS, the VMID or the S2TTB.
/// Otherwise the entry goes through abort.
///
/// Errors: [`Error::PlanTooLong`] (never for 8-dword entries; see
/// [`UpdatePlan`]).
pub fn plan_update(current: &Ste, target: &Ste) -> Result<UpdatePlan> {
    entry_plan::plan(&STE_KIND, &current.0, &target.0)
}

/// A decoded level-1 stream table descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Descriptor {
    /// Physical address of the level-2 table.
    pub l2_paddr: u64,
    /// Span: the level-2 table holds 2^(span - 1) STEs (1..=12).
    pub span: u8,
}

impl L1Descriptor {
    /// Decodes a level-1 descriptor; `None` when it is invalid (Span 0) or
    /// its Span is reserved (above 12).
    pub fn decode(desc: u64) -> Option<L1Descriptor> {
        let r = LocalRegisterCopy::<u64, L1STD::Register>::new(desc);
        let span = r.read(L1STD::SPAN) as u8;
        if span == 0 || span > MAX_SPAN {
            return None;
        }
        Some(L1Descriptor {
            l2_paddr: r.read(L1STD::L2PTR) << L2PTR_SHIFT,
            span,
        })
    }
}

/// Encodes a level-1 stream table descriptor pointing at an L2 table of
/// 2^(span - 1) STEs; for a full L2 table of a table with
/// STRTAB_BASE_CFG.SPLIT = s, `span` is s + 1. `span` 0 gives the invalid
/// descriptor (and `l2_paddr` must then be 0).
///
/// `l2_paddr` must be aligned to the L2 table's size (at least 64 bytes) and
/// below 2^52; `span` at most 12.
pub fn l1_descriptor(l2_paddr: u64, span: u8) -> Result<u64> {
    if span > MAX_SPAN {
        return Err(invalid(Field::L1Span, u64::from(span)));
    }
    if span == 0 {
        if l2_paddr != 0 {
            return Err(invalid(Field::L2Ptr, l2_paddr));
        }
        return Ok(0);
    }
    let table_bytes = (STE_SIZE as u64) << (span - 1);
    check_pa(l2_paddr, table_bytes, Field::L2Ptr)?;
    Ok((L1STD::L2PTR.val(l2_paddr >> L2PTR_SHIFT) + L1STD::SPAN.val(u64::from(span))).value)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;

    /// 40-bit IPA, 4K granule, start level 1, WB inner/outer, ISH, 40-bit PS.
    fn s2(vmid: u16, ttb: u64) -> Stage2Ste {
        Stage2Ste {
            vmid,
            t0sz: 24,
            sl0: 1,
            ir0: 1,
            or0: 1,
            sh0: 3,
            tg: 0,
            ps: 2,
            ttb,
            affd: true,
            record_faults: true,
            ptw: false,
        }
    }

    #[test]
    fn fixed_entries() {
        assert_eq!(Ste::invalid().0, [0; 8]);
        // V (bit 0) = 1, Config [3:1] = 0.
        assert_eq!(Ste::abort().0, [0x1, 0, 0, 0, 0, 0, 0, 0]);
        // Config = 0b100 -> 0x8 | V; SHCFG [45:44] = 1.
        assert_eq!(
            Ste::bypass().0,
            [0x9, 0x0000_1000_0000_0000, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(Ste::abort().config(), SteConfig::Abort);
        assert_eq!(Ste::bypass().config(), SteConfig::Bypass);
        assert!(!Ste::invalid().is_valid() && Ste::abort().is_valid());
        assert!(!Ste::abort().is_live() && Ste::bypass().is_live());
        for raw in 1..=3u64 {
            let ste = Ste([1 | raw << 1, 0, 0, 0, 0, 0, 0, 0]);
            assert_eq!(ste.config(), SteConfig::AbortOther(raw as u8));
            assert!(ste.config().is_abort() && !ste.is_live());
        }
    }

    #[test]
    fn stage2_encoding() {
        let ste = Ste::stage2(&s2(0x1234, 0x0008_1234_5678_9000)).unwrap();
        // dword 0: V | Config 0b110 << 1 = 0xD.
        assert_eq!(ste.0[0], 0xD);
        assert_eq!(ste.0[1], 0x0000_1000_0000_0000);
        // dword 2, by hand from the spec's table:
        //   S2VMID [15:0]  = 0x1234           -> 0x0000_0000_0000_1234
        //   S2T0SZ [37:32] = 24 (0x18)        -> 0x0000_0018_0000_0000
        //   S2SL0  [39:38] = 1                -> 0x0000_0040_0000_0000
        //   S2IR0  [41:40] = 1                -> 0x0000_0100_0000_0000
        //   S2OR0  [43:42] = 1                -> 0x0000_0400_0000_0000
        //   S2SH0  [45:44] = 3                -> 0x0000_3000_0000_0000
        //   S2TG   [47:46] = 0                -> 0
        //   S2PS   [50:48] = 2                -> 0x0002_0000_0000_0000
        //   S2AA64 [51]    = 1                -> 0x0008_0000_0000_0000
        //   S2AFFD [53]    = 1                -> 0x0020_0000_0000_0000
        //   S2R    [58]    = 1                -> 0x0400_0000_0000_0000
        assert_eq!(ste.0[2], 0x042A_3558_0000_1234);
        // dword 3: S2TTB [51:4], the address itself.
        assert_eq!(ste.0[3], 0x0008_1234_5678_9000);
        assert_eq!(&ste.0[4..], &[0; 4]);
        assert_eq!(ste.config(), SteConfig::Stage2);
        assert_eq!(ste.vmid(), 0x1234);
        assert_eq!(ste.s2ttb(), 0x0008_1234_5678_9000);
    }

    #[test]
    fn stage2_single_bits() {
        let base = Ste::stage2(&Stage2Ste {
            affd: false,
            record_faults: false,
            ..s2(0, 0)
        })
        .unwrap()
        .0[2];
        assert_eq!(base & (1 << 51), 1 << 51, "S2AA64 at bit 51");
        let with = |f: &dyn Fn(&mut Stage2Ste)| {
            let mut c = Stage2Ste {
                affd: false,
                record_faults: false,
                ..s2(0, 0)
            };
            f(&mut c);
            Ste::stage2(&c).unwrap().0[2] ^ base
        };
        assert_eq!(with(&|c| c.record_faults = true), 1 << 58);
        assert_eq!(with(&|c| c.affd = true), 1 << 53);
        assert_eq!(with(&|c| c.ptw = true), 1 << 54);
        assert_eq!(with(&|c| c.tg = 2), 2 << 46);
        assert_eq!(with(&|c| c.ps = 6), (6 ^ 2) << 48);
        assert_eq!(with(&|c| c.t0sz = 24 ^ 63), 63 << 32);
    }

    #[test]
    fn stage2_rejects() {
        let bad = |c: Stage2Ste| Ste::stage2(&c).unwrap_err();
        assert_eq!(
            bad(s2(1, 0x4000_0008)),
            Error::Misaligned {
                addr: 0x4000_0008,
                align: 16
            }
        );
        assert_eq!(
            bad(s2(1, 1 << 52)),
            Error::Invalid(Invalid::Field {
                field: Field::S2Ttb,
                value: 1 << 52
            })
        );
        assert_eq!(
            bad(Stage2Ste { sl0: 3, ..s2(1, 0) }),
            Error::Invalid(Invalid::Field {
                field: Field::S2Sl0,
                value: 3
            })
        );
        assert_eq!(
            bad(Stage2Ste { tg: 3, ..s2(1, 0) }),
            Error::Invalid(Invalid::Field {
                field: Field::S2Tg,
                value: 3
            })
        );
        assert_eq!(
            bad(Stage2Ste { ps: 7, ..s2(1, 0) }),
            Error::Invalid(Invalid::Field {
                field: Field::S2Ps,
                value: 7
            })
        );
        assert_eq!(
            bad(Stage2Ste { sh0: 1, ..s2(1, 0) }),
            Error::Invalid(Invalid::Field {
                field: Field::S2Sh0,
                value: 1
            })
        );
        assert_eq!(
            bad(Stage2Ste { ir0: 4, ..s2(1, 0) }),
            Error::Invalid(Invalid::Field {
                field: Field::S2Ir0,
                value: 4
            })
        );
        assert_eq!(
            bad(Stage2Ste {
                t0sz: 64,
                ..s2(1, 0)
            }),
            Error::Invalid(Invalid::Field {
                field: Field::S2T0sz,
                value: 64
            })
        );
    }

    #[test]
    fn stage1_encoding() {
        let s1 = Stage1Ste::new(0x0000_4567_89AB_CDC0, 7);
        let ste = Ste::stage1(&s1).unwrap();
        // dword 0: V | Config 0b101 << 1 (0xB) | S1ContextPtr [51:6] (the
        // address itself) | S1Fmt 0 | S1CDMax 0.
        assert_eq!(ste.0[0], 0x0000_4567_89AB_CDCB);
        // dword 1: S1CIR [3:2] = 1 (0x4), S1COR [5:4] = 1 (0x10),
        // S1CSH [7:6] = 3 (0xC0), STRW 0, SHCFG [45:44] = 1.
        assert_eq!(ste.0[1], 0x0000_1000_0000_00D4);
        // dword 2: S2VMID only.
        assert_eq!(ste.0[2], 7);
        assert_eq!(&ste.0[3..], &[0; 5]);
        assert_eq!(ste.cd_paddr(), 0x0000_4567_89AB_CDC0);
        assert_eq!(ste.config(), SteConfig::Stage1);

        let el2 = Ste::stage1(&Stage1Ste {
            strw: Strw::El2,
            s1cdmax: 31,
            s1dss: 2,
            ..s1
        })
        .unwrap();
        // STRW [31:30] = 2, S1DSS [1:0] = 2, S1CDMax [63:59] = 31.
        assert_eq!(el2.0[1] ^ ste.0[1], 0x8000_0002);
        assert_eq!(el2.0[0] ^ ste.0[0], 0xF800_0000_0000_0000);
    }

    #[test]
    fn stage1_rejects() {
        let s1 = Stage1Ste::new(0x1000, 0);
        assert_eq!(
            Ste::stage1(&Stage1Ste {
                cd_paddr: 0x1020,
                ..s1
            }),
            Err(Error::Misaligned {
                addr: 0x1020,
                align: 64
            })
        );
        assert!(Ste::stage1(&Stage1Ste { s1dss: 3, ..s1 }).is_err());
        assert!(Ste::stage1(&Stage1Ste { s1cdmax: 32, ..s1 }).is_err());
        assert!(Ste::stage1(&Stage1Ste { csh: 1, ..s1 }).is_err());
        assert!(Ste::stage1(&Stage1Ste { cir: 4, ..s1 }).is_err());
        assert!(
            Ste::stage1(&Stage1Ste {
                cd_paddr: 1 << 52,
                ..s1
            })
            .is_err()
        );
    }

    #[test]
    fn nested_encoding() {
        let s1 = Stage1Ste::new(0x8000_0040, 99);
        let n = Ste::nested(&s1, &s2(5, 0x9000_0000)).unwrap();
        // Config 0b111 -> 0xE | V.
        assert_eq!(n.0[0], 0x8000_004F);
        assert_eq!(n.0[1], Ste::stage1(&s1).unwrap().0[1]);
        assert_eq!(
            &n.0[2..4],
            &Ste::stage2(&s2(5, 0x9000_0000)).unwrap().0[2..4]
        );
        assert_eq!(n.vmid(), 5);
        assert_eq!(n.config(), SteConfig::Nested);
    }

    #[test]
    fn l1_descriptors() {
        // SPLIT 8 -> Span 9: a 256-entry (16 KiB) L2 table.
        let d = l1_descriptor(0x4001_C000, 9).unwrap();
        assert_eq!(d, 0x4001_C009);
        assert_eq!(
            L1Descriptor::decode(d),
            Some(L1Descriptor {
                l2_paddr: 0x4001_C000,
                span: 9
            })
        );
        assert_eq!(
            l1_descriptor(0x4001_E000, 9),
            Err(Error::Misaligned {
                addr: 0x4001_E000,
                align: 0x4000
            })
        );
        assert_eq!(l1_descriptor(0, 0), Ok(0));
        assert!(l1_descriptor(0x1000, 0).is_err());
        assert!(l1_descriptor(0x1000, 13).is_err());
        assert!(l1_descriptor(1 << 52, 1).is_err());
        assert_eq!(l1_descriptor(0x40, 1), Ok(0x41));
        assert_eq!(L1Descriptor::decode(0x4000_0000), None);
        assert_eq!(L1Descriptor::decode(0x4000_000D), None);
        // L2Ptr [51:6]: bits above 51 are not part of the pointer.
        assert_eq!(
            L1Descriptor::decode(0xFFFF_FFFF_FFFF_FFC1).map(|d| d.l2_paddr),
            Some(0x000F_FFFF_FFFF_FFC0)
        );
    }

    proptest! {
        #[test]
        fn accessors_never_panic(words: [u64; 8]) {
            let ste = Ste(words);
            let _ = (ste.is_valid(), ste.config(), ste.vmid(), ste.s2ttb(), ste.cd_paddr());
            let _ = L1Descriptor::decode(words[0]);
        }
    }
}
