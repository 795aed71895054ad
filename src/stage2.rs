//! Stage-2 translation tables shared in format with the CPU (VTCR_EL2).
//!
//! The SMMU walks stage-2 tables in exactly the format the CPU uses for its
//! own stage 2 (VMSAv8-64, AArch64 descriptors), configured by STE fields
//! (S2T0SZ, S2SL0, S2IR0, S2OR0, S2SH0, S2TG, S2PS) that use the same
//! encodings as VTCR_EL2. [`Stage2Config`] is the one description of that
//! geometry: it produces the VTCR_EL2 value ([`Stage2Config::vtcr`]), parses
//! one ([`Stage2Config::from_vtcr`]) and produces the STE fields
//! ([`Stage2Config::ste_fields`]), so a hypervisor can give the SMMU the same
//! IPA space as its CPU.
//!
//! [`Stage2Table`] builds and edits tables of that format in memory obtained
//! through [`Dma`].
//!
//! # What this module does not do: invalidation
//!
//! Changing a live table is only half of the job: after [`Stage2Table::unmap`]
//! or [`Stage2Table::protect`] the SMMU may still hold the old translations
//! (and, after `unmap`, pointers to tables that were unlinked) in its TLBs and
//! walk caches. The caller must issue the SMMU invalidation (CMD_TLBI_S2_IPA
//! over the range, or CMD_TLBI_S12_VMALL for the VMID) followed by CMD_SYNC
//! before relying on the change, and before calling
//! [`Stage2Table::release_retired`]. CPU TLBIs do not reach the SMMU unless
//! it implements broadcast TLB maintenance. [`Stage2Table::map`] only turns
//! invalid entries into valid ones, which needs no invalidation.
//!
//! # Memory ordering
//!
//! Every descriptor is written with one 64-bit single-copy-atomic store
//! ([`Dma::write_u64`]) and published ([`Dma::publish`]: a cache clean for a
//! non-coherent SMMU, then `DSB ST`) after each batch of writes to a table. A
//! new table is filled and published as a whole before the descriptor that
//! links it is written, so the SMMU never walks a half-built table.
//!
//! # Supported configurations
//!
//! 4 KiB, 16 KiB and 64 KiB granules; IPA sizes from 25 bits up to 48 bits
//! (52 bits with the 64 KiB granule and a 52-bit output size, FEAT_LPA);
//! output sizes 32 to 48 bits (52 with 64 KiB). Not supported: FEAT_LPA2
//! (VTCR_EL2.DS) and its level -1 start (SL2), FEAT_TTST start levels, and
//! the contiguous hint.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use tock_registers::{LocalRegisterCopy, register_bitfields};

use crate::error::{Error, Result, Unsupported};
use crate::hal::{Dma, Hal, PhysAddr};

register_bitfields! [u64,
    /// VTCR_EL2, the fields that describe the stage-2 table format (Arm ARM,
    /// D23 "VTCR_EL2"). The same encodings are used by the STE's S2* fields.
    pub VTCR [
        /// Size offset of the IPA space: the IPA has `64 - T0SZ` bits.
        T0SZ OFFSET(0) NUMBITS(6) [],
        /// Start level of the walk; meaning depends on TG0.
        SL0 OFFSET(6) NUMBITS(2) [],
        /// Inner cacheability of table walks.
        IRGN0 OFFSET(8) NUMBITS(2) [
            NonCacheable = 0b00,
            WriteBackWriteAllocate = 0b01,
            WriteThrough = 0b10,
            WriteBackNoWriteAllocate = 0b11
        ],
        /// Outer cacheability of table walks.
        ORGN0 OFFSET(10) NUMBITS(2) [
            NonCacheable = 0b00,
            WriteBackWriteAllocate = 0b01,
            WriteThrough = 0b10,
            WriteBackNoWriteAllocate = 0b11
        ],
        /// Shareability of table walks.
        SH0 OFFSET(12) NUMBITS(2) [
            NonShareable = 0b00,
            OuterShareable = 0b10,
            InnerShareable = 0b11
        ],
        /// Translation granule.
        TG0 OFFSET(14) NUMBITS(2) [
            K4 = 0b00,
            K64 = 0b01,
            K16 = 0b10
        ],
        /// Physical (output) address size.
        PS OFFSET(16) NUMBITS(3) [],
        /// 16-bit VMIDs (ignored here: not part of the table format).
        VS OFFSET(19) NUMBITS(1) [],
        /// Hardware Access flag update (ignored here).
        HA OFFSET(21) NUMBITS(1) [],
        /// Hardware dirty state update (ignored here).
        HD OFFSET(22) NUMBITS(1) [],
        /// Reserved, reads as one; software writes one.
        RES1 OFFSET(31) NUMBITS(1) [],
        /// FEAT_LPA2 52-bit descriptors (not supported).
        DS OFFSET(32) NUMBITS(1) [],
        /// Start level -1 with SL0 (FEAT_LPA2; not supported).
        SL2 OFFSET(33) NUMBITS(1) []
    ],

    /// A stage-2 VMSAv8-64 descriptor (Arm ARM, D8 "Translation table
    /// descriptor formats"), without FEAT_LPA2.
    pub S2_DESC [
        /// The descriptor is valid.
        VALID OFFSET(0) NUMBITS(1) [],
        /// At levels 0-2: table (1) or block (0). At level 3 must be 1 (page).
        TYPE OFFSET(1) NUMBITS(1) [
            Block = 0,
            TableOrPage = 1
        ],
        /// Stage-2 memory attributes (leaf only; the encoding without
        /// FEAT_S2FWB).
        MEMATTR OFFSET(2) NUMBITS(4) [
            /// Device-nGnRE (MemAttr[3:2] = 0b00 Device, [1:0] = 0b01 nGnRE).
            DeviceNgnre = 0b0001,
            /// Normal, outer write-back cacheable, inner write-back cacheable.
            NormalWriteBack = 0b1111
        ],
        /// S2AP[0]: read access permitted (leaf only).
        S2AP_R OFFSET(6) NUMBITS(1) [],
        /// S2AP[1]: write access permitted (leaf only).
        S2AP_W OFFSET(7) NUMBITS(1) [],
        /// Shareability (leaf only).
        SH OFFSET(8) NUMBITS(2) [
            NonShareable = 0b00,
            OuterShareable = 0b10,
            InnerShareable = 0b11
        ],
        /// Access flag (leaf only).
        AF OFFSET(10) NUMBITS(1) [],
        /// OA[51:48] with the 64 KiB granule and a 52-bit output size
        /// (FEAT_LPA). Overlaps the low bits of ADDR, which are RES0 there.
        OA_HI OFFSET(12) NUMBITS(4) [],
        /// Output (or next-level table) address bits [47:12]; bits below
        /// the granule size are RES0.
        ADDR OFFSET(12) NUMBITS(36) [],
        /// Dirty bit modifier (unused: always 0).
        DBM OFFSET(51) NUMBITS(1) [],
        /// Contiguous hint (unused: always 0).
        CONTIGUOUS OFFSET(52) NUMBITS(1) [],
        /// Execute-never XN[1:0]: 0b00 execution permitted at EL1 and EL0,
        /// 0b10 execute-never at both (the only two this driver writes).
        XN OFFSET(53) NUMBITS(2) [
            Executable = 0b00,
            Never = 0b10
        ]
    ]
];

/// Output address sizes in bits, indexed by the PS / PARange encoding.
const PS_BITS: [u32; 7] = [32, 36, 40, 42, 44, 48, 52];

/// The PS encoding of a 52-bit output size.
const PS_52: u8 = 6;

/// Smallest IPA size (largest T0SZ, 39) without FEAT_TTST.
const MIN_IPA_BITS: u32 = 25;

/// A translation granule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granule {
    /// 4 KiB pages; blocks of 2 MiB (level 2) and 1 GiB (level 1).
    K4,
    /// 16 KiB pages; blocks of 32 MiB (level 2).
    K16,
    /// 64 KiB pages; blocks of 512 MiB (level 2).
    K64,
}

impl Granule {
    /// log2 of the page size.
    pub const fn shift(self) -> u32 {
        match self {
            Granule::K4 => 12,
            Granule::K16 => 14,
            Granule::K64 => 16,
        }
    }

    /// The page size in bytes.
    pub const fn size(self) -> u64 {
        1 << self.shift()
    }

    /// The granule whose size is `1 << shift`, if any.
    pub const fn from_shift(shift: u32) -> Option<Granule> {
        match shift {
            12 => Some(Granule::K4),
            14 => Some(Granule::K16),
            16 => Some(Granule::K64),
            _ => None,
        }
    }

    /// Address bits resolved per level: each table holds `2^stride` entries.
    const fn stride(self) -> u32 {
        self.shift() - 3
    }

    /// The VTCR_EL2.TG0 / STE.S2TG encoding.
    const fn tg0(self) -> u64 {
        match self {
            Granule::K4 => 0b00,
            Granule::K64 => 0b01,
            Granule::K16 => 0b10,
        }
    }

    fn from_tg0(tg0: u64) -> Option<Self> {
        match tg0 {
            0b00 => Some(Granule::K4),
            0b01 => Some(Granule::K64),
            0b10 => Some(Granule::K16),
            _ => None,
        }
    }

    /// Lowest and highest start levels this driver supports (no FEAT_TTST,
    /// no FEAT_LPA2).
    const fn start_levels(self) -> (u32, u32) {
        match self {
            Granule::K4 => (0, 2),
            Granule::K16 | Granule::K64 => (1, 3),
        }
    }

    /// The start level an SL0 value selects.
    fn sl0_to_level(self, sl0: u64) -> Option<u32> {
        match (self, sl0) {
            (Granule::K4, 0..=2) => Some(2 - sl0 as u32),
            (Granule::K16 | Granule::K64, 0..=2) => Some(3 - sl0 as u32),
            _ => None,
        }
    }

    /// The SL0 value for a start level (inverse of `sl0_to_level`).
    const fn level_to_sl0(self, level: u32) -> u64 {
        match self {
            Granule::K4 => (2 - level) as u64,
            Granule::K16 | Granule::K64 => (3 - level) as u64,
        }
    }

    /// Whether a block descriptor is allowed at `level` (level 3 holds
    /// pages, which are always allowed).
    const fn block_at(self, level: u32) -> bool {
        match self {
            Granule::K4 => level == 1 || level == 2,
            Granule::K16 | Granule::K64 => level == 2,
        }
    }
}

/// Stage-2 access permission (S2AP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Perm {
    /// Read only (S2AP = 0b01).
    Read,
    /// Write only (S2AP = 0b10).
    Write,
    /// Read and write (S2AP = 0b11).
    ReadWrite,
}

impl Perm {
    const fn bits(self) -> (u64, u64) {
        match self {
            Perm::Read => (1, 0),
            Perm::Write => (0, 1),
            Perm::ReadWrite => (1, 1),
        }
    }

    const fn from_bits(r: u64, w: u64) -> Option<Self> {
        match (r, w) {
            (1, 0) => Some(Perm::Read),
            (0, 1) => Some(Perm::Write),
            (1, 1) => Some(Perm::ReadWrite),
            _ => None,
        }
    }
}

/// Memory type of a stage-2 mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Memory {
    /// Normal memory, inner and outer write-back cacheable, inner shareable
    /// (guest RAM).
    Normal,
    /// Device-nGnRE (a passed-through device's registers). Combined with a
    /// guest's own stage 1, the stricter type wins, so a guest can never
    /// make device registers cacheable.
    Device,
}

/// How [`Stage2Table::map_with`] maps a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MapOptions {
    /// Access permission.
    pub perm: Perm,
    /// Memory type.
    pub memory: Memory,
    /// Whether instructions may be fetched from the range (XN = 0b00) or
    /// not (XN = 0b10). The SMMU ignores XN for DMA; it matters to a CPU
    /// sharing the tables.
    pub execute: bool,
    /// Whether block descriptors may be used where the IPA, the PA and the
    /// length allow (`false`: pages only, so that later unmaps of single
    /// pages never split a block).
    pub blocks: bool,
}

impl MapOptions {
    /// Normal memory with `perm`, executable, blocks allowed: what
    /// [`Stage2Table::map`] uses.
    pub const fn normal(perm: Perm) -> MapOptions {
        MapOptions {
            perm,
            memory: Memory::Normal,
            execute: true,
            blocks: true,
        }
    }

    /// Device-nGnRE, execute-never, read/write, blocks allowed: a device's
    /// registers (a BAR).
    pub const fn device() -> MapOptions {
        MapOptions {
            perm: Perm::ReadWrite,
            memory: Memory::Device,
            execute: false,
            blocks: true,
        }
    }
}

/// The STE's stage-2 table fields, in the VTCR_EL2 encodings they share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S2SteFields {
    /// S2T0SZ: `64 - ipa_bits`.
    pub t0sz: u8,
    /// S2SL0: start level, encoded as VTCR_EL2.SL0.
    pub sl0: u8,
    /// S2IR0: inner cacheability of table walks.
    pub ir0: u8,
    /// S2OR0: outer cacheability of table walks.
    pub or0: u8,
    /// S2SH0: shareability of table walks.
    pub sh0: u8,
    /// S2TG: granule (0 = 4K, 1 = 64K, 2 = 16K).
    pub tg: u8,
    /// S2PS: output address size encoding.
    pub ps: u8,
}

/// The geometry of a stage-2 translation regime: granule, IPA size, start
/// level and concatenation, output size, and walk attributes.
///
/// Always valid: every constructor checks the combination against the
/// architecture's rules for VTCR_EL2 (start level permitted for the granule
/// and output size, at most 16 concatenated start tables, IPA no larger
/// than the output size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage2Config {
    granule: Granule,
    ipa_bits: u32,
    start_level: u32,
    concat: u32,
    ps: u8,
    sh0: u8,
    irgn0: u8,
    orgn0: u8,
}

impl Stage2Config {
    /// The configuration for a `ipa_bits`-bit IPA space with output size
    /// `oas_bits` (32, 36, 40, 42, 44, 48 or 52), walks inner shareable and
    /// write-back write-allocate cacheable.
    ///
    /// The start level is the deepest one that can resolve the IPA with at
    /// most 16 concatenated start tables, which saves a level of walk (as
    /// KVM does). With the 4K and 16K granules a 52-bit `oas_bits` is
    /// treated as 48 bits: 52-bit output needs FEAT_LPA2, which this module
    /// does not support.
    ///
    /// Errors: [`Error::InvalidArgument`] for an unknown `oas_bits`, an IPA
    /// smaller than 25 bits, or larger than the output size;
    /// [`Error::Unsupported`]`(AddressSize)` for an IPA beyond 48 bits (52
    /// with the 64K granule and 52-bit output).
    pub fn new(granule: Granule, ipa_bits: u32, oas_bits: u32) -> Result<Self> {
        let ps = ps_encoding(granule, oas_bits)?;
        let (lo, hi) = granule.start_levels();
        // Deepest start level whose start table (with concatenation) covers
        // the IPA; `validate` reports why when none does.
        let level = (lo..=hi)
            .rev()
            .find(|&l| {
                start_bits(granule, ipa_bits, l).is_some_and(|b| b <= granule.stride() as i64 + 4)
            })
            .unwrap_or(lo);
        Self::validate(granule, ipa_bits, level, ps, 0b11, 0b01, 0b01)
    }

    /// Parses a VTCR_EL2 value, as a hypervisor programs it for its CPU's
    /// stage 2.
    ///
    /// VS, HA and HD and the RES1 bit 31 are accepted and ignored (they do
    /// not describe the table format); DS and SL2 (FEAT_LPA2) are refused
    /// with [`Error::Unsupported`]`(AddressSize)`; any other field
    /// (FEAT_TTST SL0 values, reserved encodings, NSW/NSA, HWU, ...) with
    /// [`Error::InvalidArgument`]. `from_vtcr(c.vtcr()) == c` for every
    /// configuration `c`.
    pub fn from_vtcr(vtcr: u64) -> Result<Self> {
        let v = LocalRegisterCopy::<u64, VTCR::Register>::new(vtcr);
        if v.is_set(VTCR::DS) || v.is_set(VTCR::SL2) {
            return Err(Error::Unsupported(Unsupported::AddressSize));
        }
        let known = VTCR::T0SZ.mask << VTCR::T0SZ.shift
            | VTCR::SL0.mask << VTCR::SL0.shift
            | VTCR::IRGN0.mask << VTCR::IRGN0.shift
            | VTCR::ORGN0.mask << VTCR::ORGN0.shift
            | VTCR::SH0.mask << VTCR::SH0.shift
            | VTCR::TG0.mask << VTCR::TG0.shift
            | VTCR::PS.mask << VTCR::PS.shift
            | VTCR::VS.mask << VTCR::VS.shift
            | VTCR::HA.mask << VTCR::HA.shift
            | VTCR::HD.mask << VTCR::HD.shift
            | VTCR::RES1.mask << VTCR::RES1.shift;
        if vtcr & !known != 0 {
            return Err(Error::InvalidArgument(
                "VTCR_EL2 sets a field this driver does not support",
            ));
        }
        let granule = Granule::from_tg0(v.read(VTCR::TG0))
            .ok_or(Error::InvalidArgument("VTCR_EL2.TG0 is reserved"))?;
        let level = granule
            .sl0_to_level(v.read(VTCR::SL0))
            .ok_or(Error::InvalidArgument(
                "VTCR_EL2.SL0 start level not supported",
            ))?;
        let sh0 = v.read(VTCR::SH0) as u8;
        if sh0 == 0b01 {
            return Err(Error::InvalidArgument("VTCR_EL2.SH0 is reserved"));
        }
        let ps = v.read(VTCR::PS) as u8;
        let ipa_bits = 64 - v.read(VTCR::T0SZ) as u32;
        Self::validate(
            granule,
            ipa_bits,
            level,
            ps,
            sh0,
            v.read(VTCR::IRGN0) as u8,
            v.read(VTCR::ORGN0) as u8,
        )
    }

    /// Checks a combination against the architecture and builds it.
    fn validate(
        granule: Granule,
        ipa_bits: u32,
        level: u32,
        ps: u8,
        sh0: u8,
        irgn0: u8,
        orgn0: u8,
    ) -> Result<Self> {
        let oas = *PS_BITS
            .get(usize::from(ps))
            .ok_or(Error::InvalidArgument("PS encoding is reserved"))?;
        if oas == 52 && granule != Granule::K64 {
            // 52-bit output with 4K/16K needs FEAT_LPA2 descriptors (DS = 1).
            return Err(Error::Unsupported(Unsupported::AddressSize));
        }
        if ipa_bits < MIN_IPA_BITS {
            return Err(Error::InvalidArgument(
                "IPA size below 25 bits (T0SZ above 39)",
            ));
        }
        let max_ipa = if oas == 52 { 52 } else { 48 };
        if ipa_bits > max_ipa {
            return Err(Error::Unsupported(Unsupported::AddressSize));
        }
        if ipa_bits > oas {
            return Err(Error::InvalidArgument(
                "IPA size larger than the output address size",
            ));
        }
        let stride = granule.stride() as i64;
        match start_bits(granule, ipa_bits, level) {
            Some(bits) if (1..=stride + 4).contains(&bits) => {}
            _ => {
                return Err(Error::InvalidArgument(
                    "start level cannot resolve this IPA size",
                ));
            }
        }
        // Start levels the architecture ties to the output size
        // (AArch64.S2InvalidSL / S2InconsistentSL).
        let permitted = match (granule, level) {
            (Granule::K4, 0) => oas > 42,
            (Granule::K16, 1) => oas > 40,
            (Granule::K64, 1) => oas > 42,
            _ => true,
        };
        if !permitted {
            return Err(Error::InvalidArgument(
                "start level not permitted with this output size",
            ));
        }
        let bits = ipa_bits - level_shift(granule, level);
        let concat = if bits > granule.stride() {
            1 << (bits - granule.stride())
        } else {
            1
        };
        Ok(Self {
            granule,
            ipa_bits,
            start_level: level,
            concat,
            ps,
            sh0,
            irgn0,
            orgn0,
        })
    }

    /// The VTCR_EL2 value describing this configuration: T0SZ, SL0, IRGN0,
    /// ORGN0, SH0, TG0, PS, and the RES1 bit 31. VS, HA and HD are left 0
    /// for the hypervisor to add.
    pub fn vtcr(&self) -> u64 {
        let mut v = LocalRegisterCopy::<u64, VTCR::Register>::new(0);
        v.write(
            VTCR::T0SZ.val(u64::from(64 - self.ipa_bits))
                + VTCR::SL0.val(self.granule.level_to_sl0(self.start_level))
                + VTCR::IRGN0.val(u64::from(self.irgn0))
                + VTCR::ORGN0.val(u64::from(self.orgn0))
                + VTCR::SH0.val(u64::from(self.sh0))
                + VTCR::TG0.val(self.granule.tg0())
                + VTCR::PS.val(u64::from(self.ps))
                + VTCR::RES1::SET,
        );
        v.get()
    }

    /// The STE's S2T0SZ/S2SL0/S2IR0/S2OR0/S2SH0/S2TG/S2PS, which use the
    /// VTCR_EL2 encodings: one configuration serves the CPU and the SMMU.
    pub fn ste_fields(&self) -> S2SteFields {
        S2SteFields {
            t0sz: (64 - self.ipa_bits) as u8,
            sl0: self.granule.level_to_sl0(self.start_level) as u8,
            ir0: self.irgn0,
            or0: self.orgn0,
            sh0: self.sh0,
            tg: self.granule.tg0() as u8,
            ps: self.ps,
        }
    }

    /// Checks that an SMMU with input size `ias_bits` and output size
    /// `oas_bits` (IDR5.OAS, in bits) can use this configuration unchanged.
    /// Fails with [`Error::Unsupported`]`(AddressSize)` otherwise.
    pub fn check_fits(&self, ias_bits: u32, oas_bits: u32) -> Result<()> {
        if self.ipa_bits > ias_bits || self.oas_bits() > oas_bits {
            return Err(Error::Unsupported(Unsupported::AddressSize));
        }
        Ok(())
    }

    /// This configuration with its IPA size reduced to at most `ias_bits`
    /// and its output size to at most `oas_bits` (an SMMU's IAS/OAS),
    /// keeping granule and walk attributes. Returns `self` unchanged when it
    /// already fits; otherwise the start level and concatenation are derived
    /// again as in [`Stage2Config::new`], so the VTCR_EL2 fields may differ
    /// from the CPU's. Fails as `new` does (for instance when the SMMU's
    /// sizes leave less than a 25-bit IPA space).
    pub fn clamp_to(&self, ias_bits: u32, oas_bits: u32) -> Result<Self> {
        if self.check_fits(ias_bits, oas_bits).is_ok() {
            return Ok(*self);
        }
        let ps = ps_floor(self.granule, oas_bits.min(self.oas_bits()))?;
        let oas = PS_BITS[usize::from(ps)];
        let ipa = self.ipa_bits.min(ias_bits).min(oas);
        let cfg = Self::new(self.granule, ipa, oas)?;
        Ok(Self {
            sh0: self.sh0,
            irgn0: self.irgn0,
            orgn0: self.orgn0,
            ..cfg
        })
    }

    /// The translation granule.
    pub fn granule(&self) -> Granule {
        self.granule
    }

    /// IPA (input) size in bits: `64 - T0SZ`.
    pub fn ipa_bits(&self) -> u32 {
        self.ipa_bits
    }

    /// Output address size in bits (decoded PS).
    pub fn oas_bits(&self) -> u32 {
        PS_BITS[usize::from(self.ps)]
    }

    /// The PS encoding (0 = 32 bits ... 6 = 52 bits).
    pub fn ps(&self) -> u8 {
        self.ps
    }

    /// The level at which walks start (0 to 3).
    pub fn start_level(&self) -> u32 {
        self.start_level
    }

    /// Number of concatenated start-level tables (1 to 16).
    pub fn concatenated_tables(&self) -> u32 {
        self.concat
    }

    /// Number of descriptors in the (possibly concatenated) start table.
    pub fn root_entries(&self) -> usize {
        1 << (self.ipa_bits - level_shift(self.granule, self.start_level))
    }

    /// Bytes allocated for the start table: its descriptors, and at least
    /// one granule (a start table that resolves fewer bits than a full
    /// table still gets a whole page).
    pub fn root_table_bytes(&self) -> usize {
        (self.root_entries() * 8).max(self.granule.size() as usize)
    }

    /// Alignment of the start table: concatenated tables must be aligned to
    /// their total size.
    pub fn root_align(&self) -> usize {
        self.root_table_bytes()
    }

    /// Bits above the IPA space: `ipa` must be below `1 << ipa_bits`.
    fn ipa_limit(&self) -> u64 {
        1 << self.ipa_bits
    }

    fn oa_limit(&self) -> u64 {
        1 << self.oas_bits()
    }
}

/// The PS encoding for exactly `oas_bits`, 52 clamped to 48 for 4K/16K.
fn ps_encoding(granule: Granule, oas_bits: u32) -> Result<u8> {
    let oas = if oas_bits == 52 && granule != Granule::K64 {
        48
    } else {
        oas_bits
    };
    PS_BITS
        .iter()
        .position(|&b| b == oas)
        .map(|p| p as u8)
        .ok_or(Error::InvalidArgument(
            "output size must be 32, 36, 40, 42, 44, 48 or 52 bits",
        ))
}

/// The largest PS encoding not above `oas_bits` (52 needs the 64K granule).
fn ps_floor(granule: Granule, oas_bits: u32) -> Result<u8> {
    let max = if granule == Granule::K64 { 52 } else { 48 };
    PS_BITS
        .iter()
        .rposition(|&b| b <= oas_bits.min(max))
        .map(|p| p as u8)
        .ok_or(Error::Unsupported(Unsupported::AddressSize))
}

/// log2 of the region one descriptor at `level` maps.
const fn level_shift(granule: Granule, level: u32) -> u32 {
    granule.shift() + granule.stride() * (3 - level)
}

/// Number of IPA bits the start table resolves when starting at `level`.
fn start_bits(granule: Granule, ipa_bits: u32, level: u32) -> Option<i64> {
    (level <= 3).then(|| i64::from(ipa_bits) - i64::from(level_shift(granule, level)))
}

/// What a translation of one IPA found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The output address of the queried IPA (the leaf's base plus the
    /// offset of the IPA inside it).
    pub pa: PhysAddr,
    /// Permissions of the leaf.
    pub perm: Perm,
    /// Size of the leaf (page or block) in bytes.
    pub size: u64,
    /// Memory type of the leaf.
    pub memory: Memory,
    /// Whether the leaf is executable (XN = 0b00).
    pub execute: bool,
}

/// A block mapping that a range covers only partly: where it is, and what
/// it maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialBlock {
    table: NodeId,
    idx: usize,
    /// Level of the block descriptor.
    pub level: u32,
    /// First IPA of the block.
    pub ipa: u64,
    /// Size of the block in bytes.
    pub size: u64,
    raw: u64,
}

/// A next-level table equivalent to a block, built by
/// [`Stage2Table::prepare_split`] and not yet linked.
#[derive(Debug)]
pub struct SplitTable<H: Hal> {
    dma: Dma<H>,
    entries: usize,
}

/// A decoded descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry<T = NodeId> {
    Invalid,
    /// A table descriptor: the address it holds (`decode`), or the node of
    /// the table at that address (`entry`).
    Table(T),
    Leaf {
        pa: PhysAddr,
        perm: Option<Perm>,
        raw: u64,
    },
}

/// Index of a table in [`Stage2Table`]'s node slab; the start table is
/// [`ROOT`].
type NodeId = usize;

/// The start table's node.
const ROOT: NodeId = 0;

/// A `Node::children` slot whose descriptor is not a table descriptor.
const NO_CHILD: u32 = u32::MAX;

/// One translation table, its count of valid descriptors, and (above the
/// last level) the node of each table descriptor, so that a walk finds the
/// next table in O(1) instead of by a search on its physical address.
struct Node<H: Hal> {
    dma: Dma<H>,
    live: usize,
    /// One slot per descriptor for tables above level 3 (`NO_CHILD` unless
    /// the descriptor is a table descriptor); empty at level 3.
    children: Vec<u32>,
}

impl<H: Hal> Node<H> {
    fn new(dma: Dma<H>, live: usize, level: u32) -> Self {
        let children = if level < 3 {
            vec![NO_CHILD; dma.len_u64()]
        } else {
            Vec::new()
        };
        Node {
            dma,
            live,
            children,
        }
    }
}

/// The table descriptors from the start table down to a level-3 table:
/// (table, index) per level above 3.
#[derive(Default)]
struct Path {
    steps: [(NodeId, usize); 3],
    len: usize,
}

impl Path {
    fn push(&mut self, table: NodeId, idx: usize) {
        self.steps[self.len] = (table, idx);
        self.len += 1;
    }

    fn steps(&self) -> &[(NodeId, usize)] {
        &self.steps[..self.len]
    }
}

/// The descriptors of one table that a walk visits: `(cur, next, idx)` for
/// each, in address order.
#[derive(Clone, Copy)]
struct Chunks {
    shift: u32,
    mask: u64,
    cur: u64,
    end: u64,
}

impl Iterator for Chunks {
    type Item = (u64, u64, usize);

    fn next(&mut self) -> Option<Self::Item> {
        if self.cur >= self.end {
            return None;
        }
        let size = 1u64 << self.shift;
        let cur = self.cur;
        let next = ((cur & !(size - 1)) + size).min(self.end);
        self.cur = next;
        Some((cur, next, ((cur >> self.shift) & self.mask) as usize))
    }
}

/// A stage-2 translation table tree in SMMU-visible memory.
///
/// The start table (with its concatenated tables) and every next-level
/// table are owned [`Dma`] allocations. Dropping the tree frees them all:
/// before that, the caller must detach it from every STE and invalidate
/// (CFGI + TLBI + SYNC), as for any memory the SMMU may walk.
pub struct Stage2Table<H: Hal> {
    cfg: Stage2Config,
    coherent: bool,
    /// Every table linked into the tree, the start table at [`ROOT`]; a
    /// `None` slot is free (its id is in `free`).
    nodes: Vec<Option<Node<H>>>,
    free: Vec<u32>,
    /// Number of linked tables besides the start table.
    linked: usize,
    /// Per level: the shift of the address bits a table at that level
    /// resolves and the mask of its index (derived from `cfg`).
    levels: [(u32, u64); 4],
    /// Tables unlinked by `unmap` that the SMMU may still hold in its walk
    /// caches until the caller's invalidation completes.
    retired: Vec<Dma<H>>,
    /// Bit `l` set: the last `unmap`/`protect` changed a leaf at level `l`.
    changed_levels: u8,
}

impl<H: Hal> fmt::Debug for Stage2Table<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stage2Table")
            .field("cfg", &self.cfg)
            .field("root", &format_args!("{:#x}", self.root_paddr()))
            .field("tables", &self.tables())
            .field("retired", &self.retired.len())
            .finish()
    }
}

impl<H: Hal> Stage2Table<H> {
    /// Allocates an empty start table for `cfg`. `coherent` says whether the
    /// SMMU's table walks snoop the CPU caches (IDR0.COHACC); when not,
    /// every write is cleaned to the point of coherency.
    ///
    /// Fails with [`Error::NoMemory`], or [`Error::Unsupported`]`(AddressSize)`
    /// when the HAL returns memory above the configured output size.
    pub fn new(cfg: Stage2Config, coherent: bool) -> Result<Self> {
        let dma = alloc_table::<H>(&cfg, cfg.root_table_bytes(), cfg.root_align(), coherent)?;
        dma.publish(0, dma.len_u64());
        let level = cfg.start_level;
        let levels = core::array::from_fn(|l| {
            let l = l as u32;
            let bits = if l == level {
                cfg.root_entries().trailing_zeros()
            } else {
                cfg.granule.stride()
            };
            (level_shift(cfg.granule, l), (1u64 << bits) - 1)
        });
        Ok(Self {
            cfg,
            coherent,
            nodes: vec![Some(Node::new(dma, 0, level))],
            free: Vec::new(),
            linked: 0,
            levels,
            retired: Vec::new(),
            changed_levels: 0,
        })
    }

    /// The linked tables other than the start table, in address order.
    fn sorted_tables(&self) -> Vec<&Dma<H>> {
        let mut v: Vec<&Dma<H>> = self.nodes[1..].iter().flatten().map(|n| &n.dma).collect();
        v.sort_unstable_by_key(|d| d.paddr());
        v
    }

    /// Every word of table memory (start table, then the other tables in
    /// address order): tests use it to prove a rejected call changed nothing.
    pub fn snapshot(&self) -> Vec<u64> {
        let mut out = Vec::new();
        let root = self.nodes[ROOT].as_ref().map(|n| &n.dma);
        for dma in root.into_iter().chain(self.sorted_tables()) {
            out.extend((0..dma.len_u64()).map(|i| dma.read_u64(i)));
        }
        out
    }

    /// Physical address of the start table (for VTTBR_EL2.BADDR or the
    /// STE's S2TTB).
    pub fn root_paddr(&self) -> PhysAddr {
        self.nodes[ROOT].as_ref().map_or(0, |n| n.dma.paddr())
    }

    /// The configuration the tables follow.
    pub fn config(&self) -> &Stage2Config {
        &self.cfg
    }

    /// Bytes of table memory linked into the tree (start table included,
    /// retired tables not).
    pub fn table_bytes(&self) -> usize {
        self.nodes
            .iter()
            .flatten()
            .map(|n| n.dma.size())
            .sum::<usize>()
    }

    /// Number of tables linked into the tree, start table included (a
    /// concatenated start table counts once).
    pub fn tables(&self) -> usize {
        1 + self.linked
    }

    /// Number of tables unlinked by [`Stage2Table::unmap`] and not yet
    /// released.
    pub fn retired_tables(&self) -> usize {
        self.retired.len()
    }

    /// Frees the tables that [`Stage2Table::unmap`] unlinked because they
    /// became empty, and returns how many. Call it only after the SMMU
    /// invalidation for those unmaps (TLBI + CMD_SYNC) has completed: until
    /// then the SMMU's walk caches may still point into them.
    pub fn release_retired(&mut self) -> usize {
        let n = self.retired.len();
        self.retired.clear();
        n
    }

    /// Maps `[ipa, ipa + len)` to `[pa, pa + len)` with `perm`, as normal
    /// write-back inner-shareable memory with AF = 1. Uses block descriptors
    /// wherever IPA, PA and the remaining length allow.
    ///
    /// The whole request is checked before anything is written: a rejected
    /// call leaves the tables unchanged. Errors: [`Error::ZeroLength`];
    /// [`Error::Misaligned`] (ipa, pa or len not granule aligned);
    /// [`Error::RangeOverflow`] when the IPA range leaves the IPA space or
    /// the PA range the output size; [`Error::Overlap`] at the first mapped
    /// address in the range; [`Error::NoMemory`] when the tables needed
    /// cannot be allocated (they are all allocated before any write, so
    /// nothing is installed); [`Error::Unsupported`]`(AddressSize)` when the
    /// HAL returns table memory beyond the output size.
    ///
    /// Needs no invalidation: only invalid descriptors become valid.
    pub fn map(&mut self, ipa: u64, pa: u64, len: u64, perm: Perm) -> Result<()> {
        self.map_with(ipa, pa, len, &MapOptions::normal(perm))
    }

    /// Like [`Stage2Table::map`], with the memory type, execute permission
    /// and block use of `opts`.
    pub fn map_with(&mut self, ipa: u64, pa: u64, len: u64, opts: &MapOptions) -> Result<()> {
        let g = self.cfg.granule.size();
        if len == 0 {
            return Err(Error::ZeroLength);
        }
        for addr in [ipa, pa, len] {
            if !addr.is_multiple_of(g) {
                return Err(Error::Misaligned { addr, align: g });
            }
        }
        let end = self.check_ipa_range(ipa, len)?;
        match pa.checked_add(len) {
            Some(pa_end) if pa_end <= self.cfg.oa_limit() => {}
            _ => return Err(Error::RangeOverflow { addr: pa, len }),
        }
        if let Some(leaf) = self.leaf_table(ipa, end, &mut Path::default())? {
            // Inside one existing level-3 table: validation is that its
            // descriptors are invalid, and no table is needed.
            if let Some(addr) = self.find_mapped(leaf, 3, ipa, end)? {
                return Err(Error::Overlap { addr });
            }
            return self.map_pages(leaf, ipa, pa, end, opts, false);
        }
        let root = ROOT;
        let level = self.cfg.start_level;
        if let Some(addr) = self.find_mapped(root, level, ipa, end)? {
            return Err(Error::Overlap { addr });
        }
        let needed = self.count_new_tables(Some(root), level, ipa, pa, end, opts.blocks)?;
        let mut pool = Vec::with_capacity(needed);
        for _ in 0..needed {
            // On failure `pool` is dropped and its tables freed: nothing was
            // written yet.
            let g = g as usize;
            pool.push(alloc_table::<H>(&self.cfg, g, g, self.coherent)?);
        }
        self.map_range(root, level, ipa, pa, end, opts, &mut pool, false)
    }

    /// Unmaps `[ipa, ipa + len)`. Every page of the range must be mapped,
    /// and the range must cover whole blocks: unmapping part of a block is
    /// refused with `InvalidArgument("unmap splits a block mapping")`,
    /// because replacing a live block by a table needs break-before-make
    /// with an SMMU TLB invalidation in between, which this module cannot
    /// issue. Tables that become empty are unlinked and kept until
    /// [`Stage2Table::release_retired`].
    ///
    /// Errors ([`Error::ZeroLength`], [`Error::Misaligned`],
    /// [`Error::RangeOverflow`], [`Error::NotMapped`] at the first unmapped
    /// address, [`Error::InvalidArgument`]) leave the tables unchanged.
    ///
    /// The caller must then invalidate the range in the SMMU (TLBI + SYNC).
    pub fn unmap(&mut self, ipa: u64, len: u64) -> Result<()> {
        let end = self.check_ipa_only(ipa, len)?;
        self.changed_levels = 0;
        let mut path = Path::default();
        if let Some(leaf) = self.leaf_table(ipa, end, &mut path)? {
            // Inside one level-3 table: what the walk from the root does,
            // without walking the levels above again.
            self.check_mapped(leaf, 3, ipa, end, None)?;
            self.unmap_range(leaf, 3, ipa, end)?;
            return self.unlink_empty(leaf, &path);
        }
        let root = ROOT;
        let level = self.cfg.start_level;
        self.check_mapped(root, level, ipa, end, Some("unmap splits a block mapping"))?;
        self.changed_levels = 0;
        self.unmap_range(root, level, ipa, end)
    }

    /// The level of every leaf the last [`Stage2Table::unmap`] or
    /// [`Stage2Table::protect`] changed, when they all sat at one level
    /// (the TLBI TTL hint); `None` when mixed or nothing changed.
    pub fn changed_leaf_level(&self) -> Option<u32> {
        (self.changed_levels.count_ones() == 1).then(|| self.changed_levels.trailing_zeros())
    }

    /// Changes the permission of the mapped range `[ipa, ipa + len)` to
    /// `perm`. Validation and errors as for [`Stage2Table::unmap`] (a range
    /// covering part of a block is refused with
    /// `InvalidArgument("protect splits a block mapping")`); a rejected call
    /// changes nothing.
    ///
    /// The caller must then invalidate the range in the SMMU (TLBI + SYNC);
    /// until then the SMMU may keep using the old permission.
    pub fn protect(&mut self, ipa: u64, len: u64, perm: Perm) -> Result<()> {
        let end = self.check_ipa_only(ipa, len)?;
        let root = ROOT;
        let level = self.cfg.start_level;
        self.check_mapped(
            root,
            level,
            ipa,
            end,
            Some("protect splits a block mapping"),
        )?;
        self.changed_levels = 0;
        self.protect_range(root, level, ipa, end, perm)
    }

    /// Checks that every page of `[ipa, ipa + len)` is mapped, allowing
    /// blocks that the range covers only partly (which
    /// [`Stage2Table::split_block`] can split first). Errors as for
    /// [`Stage2Table::unmap`], except the block refusal.
    pub fn check_range_mapped(&self, ipa: u64, len: u64) -> Result<()> {
        let end = self.check_ipa_only(ipa, len)?;
        self.check_mapped(ROOT, self.cfg.start_level, ipa, end, None)
    }

    /// The first block mapping that `[ipa, ipa + len)` covers only partly
    /// (at most the blocks holding the first and the last page can be), or
    /// `None`. The range must have been validated.
    pub fn partial_block(&self, ipa: u64, len: u64) -> Result<Option<PartialBlock>> {
        let end = self.check_ipa_only(ipa, len)?;
        for addr in [ipa, end - 1] {
            if let Some(b) = self.block_at(addr)?
                && (b.ipa < ipa || b.ipa + b.size > end)
            {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }

    /// The block leaf (level below 3) mapping `addr`, if any.
    fn block_at(&self, addr: u64) -> Result<Option<PartialBlock>> {
        let mut table = ROOT;
        for level in self.cfg.start_level..=3 {
            let idx = self.index(level, addr);
            match self.entry(table, level, idx)? {
                Entry::Invalid => return Ok(None),
                Entry::Table(next) => table = next,
                Entry::Leaf { raw, .. } if level < 3 => {
                    let size = 1u64 << level_shift(self.cfg.granule, level);
                    return Ok(Some(PartialBlock {
                        table,
                        idx,
                        level,
                        ipa: addr & !(size - 1),
                        size,
                        raw,
                    }));
                }
                Entry::Leaf { .. } => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Builds (but does not link) the next-level table equivalent to block
    /// `b`: every entry a leaf with the block's attributes, covering the
    /// block's output range in order. The table is published whole. On
    /// [`Error::NoMemory`] nothing changed.
    pub fn prepare_split(&self, b: &PartialBlock) -> Result<SplitTable<H>> {
        let g = self.cfg.granule.size() as usize;
        let dma = alloc_table::<H>(&self.cfg, g, g, self.coherent)?;
        let child_level = b.level + 1;
        let child_size = 1u64 << level_shift(self.cfg.granule, child_level);
        let d = LocalRegisterCopy::<u64, S2_DESC::Register>::new(b.raw);
        let base = self.decode_oa(&d);
        let kind = if child_level == 3 {
            S2_DESC::TYPE::TableOrPage
        } else {
            S2_DESC::TYPE::Block
        };
        let entries = dma.len_u64();
        for i in 0..entries {
            let mut c = LocalRegisterCopy::<u64, S2_DESC::Register>::new(b.raw);
            // Same attributes; only the type and the address change.
            c.modify(kind + S2_DESC::ADDR.val(0) + S2_DESC::OA_HI.val(0));
            c.modify(self.encode_oa(base + i as u64 * child_size));
            dma.write_u64(i, c.get());
        }
        dma.publish(0, entries);
        Ok(SplitTable { dma, entries })
    }

    /// Break: makes block `b` invalid (published). The SMMU (and a CPU
    /// sharing the tables) must then be invalidated for the block's range
    /// before [`Stage2Table::install_split`]; in between, accesses to the
    /// range fault.
    pub fn break_block(&mut self, b: &PartialBlock) -> Result<()> {
        self.write(b.table, b.idx, 0)?;
        self.publish(b.table, Some((b.idx, b.idx)))
    }

    /// Puts block `b` back after a [`Stage2Table::break_block`] whose
    /// invalidation failed (an invalid entry becoming valid again needs no
    /// invalidation).
    pub fn restore_block(&mut self, b: &PartialBlock) -> Result<()> {
        self.write(b.table, b.idx, b.raw)?;
        self.publish(b.table, Some((b.idx, b.idx)))
    }

    /// Make: links `split` (from [`Stage2Table::prepare_split`]) in place of
    /// block `b` with one 64-bit store. Either after [`Stage2Table::break_block`]
    /// and the invalidation, or directly over the live block when both the
    /// SMMU (IDR3.BBML = 2) and every CPU walking the tables allow a block
    /// to be replaced by a table without break.
    pub fn install_split(&mut self, b: &PartialBlock, split: SplitTable<H>) -> Result<()> {
        let paddr = split.dma.paddr();
        let child = self.insert_node(Node::new(split.dma, split.entries, b.level + 1));
        self.set_child(b.table, b.idx, child)?;
        self.write(b.table, b.idx, self.table_desc(paddr))?;
        self.publish(b.table, Some((b.idx, b.idx)))
    }

    /// Translates `ipa` by walking the tables as the SMMU would. `None` when
    /// nothing is mapped there or `ipa` is outside the IPA space.
    pub fn query(&self, ipa: u64) -> Option<Translation> {
        if ipa >= self.cfg.ipa_limit() {
            return None;
        }
        let mut table = ROOT;
        for level in self.cfg.start_level..=3 {
            match self.entry(table, level, self.index(level, ipa)).ok()? {
                Entry::Invalid => return None,
                Entry::Table(next) => table = next,
                Entry::Leaf { pa, perm, raw } => {
                    let size = 1u64 << level_shift(self.cfg.granule, level);
                    let d = LocalRegisterCopy::<u64, S2_DESC::Register>::new(raw);
                    let memory = match d.read_as_enum(S2_DESC::MEMATTR) {
                        Some(S2_DESC::MEMATTR::Value::NormalWriteBack) => Memory::Normal,
                        _ => Memory::Device,
                    };
                    return Some(Translation {
                        pa: pa + (ipa & (size - 1)),
                        perm: perm?,
                        size,
                        memory,
                        execute: d.read(S2_DESC::XN) == 0,
                    });
                }
            }
        }
        None
    }

    // ---- validation ----

    /// Zero length, alignment of ipa and len, and the IPA range; returns the
    /// end of the range.
    fn check_ipa_only(&self, ipa: u64, len: u64) -> Result<u64> {
        let g = self.cfg.granule.size();
        if len == 0 {
            return Err(Error::ZeroLength);
        }
        for addr in [ipa, len] {
            if !addr.is_multiple_of(g) {
                return Err(Error::Misaligned { addr, align: g });
            }
        }
        self.check_ipa_range(ipa, len)
    }

    fn check_ipa_range(&self, ipa: u64, len: u64) -> Result<u64> {
        match ipa.checked_add(len) {
            Some(end) if end <= self.cfg.ipa_limit() => Ok(end),
            _ => Err(Error::RangeOverflow { addr: ipa, len }),
        }
    }

    // ---- table access ----

    fn node(&self, id: NodeId) -> Result<&Node<H>> {
        self.nodes
            .get(id)
            .and_then(Option::as_ref)
            .ok_or(Error::InvalidArgument(
                "stage-2 descriptor points outside this table tree",
            ))
    }

    fn node_mut(&mut self, id: NodeId) -> Result<&mut Node<H>> {
        self.nodes
            .get_mut(id)
            .and_then(Option::as_mut)
            .ok_or(Error::InvalidArgument(
                "stage-2 descriptor points outside this table tree",
            ))
    }

    /// Links `node` into the slab (not yet into the tree: the caller writes
    /// the descriptor and records it with `set_child`).
    fn insert_node(&mut self, node: Node<H>) -> NodeId {
        self.linked += 1;
        match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = Some(node);
                id as usize
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        }
    }

    /// Takes table `id` out of the slab (its descriptor already cleared).
    fn remove_node(&mut self, id: NodeId) -> Option<Node<H>> {
        let node = self.nodes.get_mut(id)?.take()?;
        self.linked -= 1;
        self.free.push(id as u32);
        Some(node)
    }

    /// Records that descriptor `idx` of `table` points at table `child`
    /// (`NO_CHILD`: at no table).
    fn set_child(&mut self, table: NodeId, idx: usize, child: NodeId) -> Result<()> {
        let slot = self
            .node_mut(table)?
            .children
            .get_mut(idx)
            .ok_or(Error::InvalidArgument("table descriptor at level 3"))?;
        *slot = if child == NO_CHILD as usize {
            NO_CHILD
        } else {
            child as u32
        };
        Ok(())
    }

    /// The node of the table that descriptor `idx` of `table` points at,
    /// checked against the address in the descriptor.
    fn child(&self, table: NodeId, idx: usize, paddr: PhysAddr) -> Result<NodeId> {
        self.child_of(self.node(table)?, idx, paddr)
    }

    /// `child`, for the node of `table`.
    fn child_of(&self, node: &Node<H>, idx: usize, paddr: PhysAddr) -> Result<NodeId> {
        let bad = Error::InvalidArgument("stage-2 descriptor points outside this table tree");
        let c = *node.children.get(idx).ok_or(bad)?;
        match self.nodes.get(c as usize).and_then(Option::as_ref) {
            Some(n) if c != NO_CHILD && n.dma.paddr() == paddr => Ok(c as usize),
            _ => Err(bad),
        }
    }

    /// Index of `ipa`'s descriptor in its table at `level`.
    fn index(&self, level: u32, ipa: u64) -> usize {
        let (shift, mask) = self.levels[level as usize & 3];
        ((ipa >> shift) & mask) as usize
    }

    fn entry(&self, table: NodeId, level: u32, idx: usize) -> Result<Entry> {
        let raw = self.node(table)?.dma.read_u64(idx);
        Ok(match self.decode(level, raw) {
            Entry::Invalid => Entry::Invalid,
            Entry::Table(paddr) => Entry::Table(self.child(table, idx, paddr)?),
            Entry::Leaf { pa, perm, raw } => Entry::Leaf { pa, perm, raw },
        })
    }

    fn write(&self, table: NodeId, idx: usize, value: u64) -> Result<()> {
        self.node(table)?.dma.write_u64(idx, value);
        Ok(())
    }

    fn publish(&self, table: NodeId, span: Option<(usize, usize)>) -> Result<()> {
        if let Some((first, last)) = span {
            self.node(table)?.dma.publish(first, last - first + 1);
        }
        Ok(())
    }

    // ---- descriptor encoding ----

    /// The address field of a descriptor pointing at `addr`.
    fn encode_oa(
        &self,
        addr: PhysAddr,
    ) -> tock_registers::fields::FieldValue<u64, S2_DESC::Register> {
        let low = addr & ((1 << 48) - 1) & !(self.cfg.granule.size() - 1);
        let mut f = S2_DESC::ADDR.val(low >> 12);
        if self.cfg.ps == PS_52 {
            f += S2_DESC::OA_HI.val(addr >> 48);
        }
        f
    }

    fn decode_oa(&self, d: &LocalRegisterCopy<u64, S2_DESC::Register>) -> PhysAddr {
        let mut addr = (d.read(S2_DESC::ADDR) << 12) & !(self.cfg.granule.size() - 1);
        if self.cfg.ps == PS_52 {
            addr |= d.read(S2_DESC::OA_HI) << 48;
        }
        addr
    }

    fn leaf_desc(&self, level: u32, pa: PhysAddr, opts: &MapOptions) -> u64 {
        let (r, w) = opts.perm.bits();
        let kind = if level == 3 {
            S2_DESC::TYPE::TableOrPage
        } else {
            S2_DESC::TYPE::Block
        };
        let (memattr, sh) = match opts.memory {
            Memory::Normal => (
                S2_DESC::MEMATTR::NormalWriteBack,
                S2_DESC::SH::InnerShareable,
            ),
            // Shareability is ignored for Device memory; outer shareable is
            // what the architecture treats it as.
            Memory::Device => (S2_DESC::MEMATTR::DeviceNgnre, S2_DESC::SH::OuterShareable),
        };
        let xn = if opts.execute {
            S2_DESC::XN::Executable
        } else {
            S2_DESC::XN::Never
        };
        let mut d = LocalRegisterCopy::<u64, S2_DESC::Register>::new(0);
        d.write(
            S2_DESC::VALID::SET
                + kind
                + memattr
                + S2_DESC::S2AP_R.val(r)
                + S2_DESC::S2AP_W.val(w)
                + sh
                + S2_DESC::AF::SET
                + xn,
        );
        d.modify(self.encode_oa(pa));
        d.get()
    }

    /// A leaf's descriptor with its permission replaced by `perm` (every
    /// other attribute kept).
    fn with_perm(raw: u64, perm: Perm) -> u64 {
        let (r, w) = perm.bits();
        let mut d = LocalRegisterCopy::<u64, S2_DESC::Register>::new(raw);
        d.modify(S2_DESC::S2AP_R.val(r) + S2_DESC::S2AP_W.val(w));
        d.get()
    }

    fn table_desc(&self, next: PhysAddr) -> u64 {
        let mut d = LocalRegisterCopy::<u64, S2_DESC::Register>::new(0);
        d.write(S2_DESC::VALID::SET + S2_DESC::TYPE::TableOrPage);
        d.modify(self.encode_oa(next));
        d.get()
    }

    fn decode(&self, level: u32, raw: u64) -> Entry<PhysAddr> {
        let d = LocalRegisterCopy::<u64, S2_DESC::Register>::new(raw);
        if !d.is_set(S2_DESC::VALID) {
            return Entry::Invalid;
        }
        let table_or_page = d.is_set(S2_DESC::TYPE);
        match (level, table_or_page) {
            (3, false) => Entry::Invalid, // reserved encoding: faults like an invalid entry
            (0..=2, true) => Entry::Table(self.decode_oa(&d)),
            _ => Entry::Leaf {
                pa: self.decode_oa(&d),
                perm: Perm::from_bits(d.read(S2_DESC::S2AP_R), d.read(S2_DESC::S2AP_W)),
                raw,
            },
        }
    }

    /// Whether `[ipa, next)` at `level` can be one leaf mapping `pa`
    /// (`blocks`: block descriptors allowed).
    fn leaf_fits(&self, level: u32, ipa: u64, pa: u64, next: u64, blocks: bool) -> bool {
        let size = 1u64 << level_shift(self.cfg.granule, level);
        (level == 3 || (blocks && self.cfg.granule.block_at(level)))
            && ipa.is_multiple_of(size)
            && pa.is_multiple_of(size)
            && next - ipa == size
    }

    // ---- walks ----
    //
    // A request inside one existing level-3 table (a single page, say)
    // goes there directly (`leaf_table`) instead of walking the levels
    // above once per pass; the result is the same as the passes from the
    // root.

    /// When `[ipa, end)` lies inside one level-3 table reached through
    /// table descriptors from the root: that table, with the (table, index)
    /// of each descriptor on the way in `path`, root first.
    #[inline]
    fn leaf_table(&self, ipa: u64, end: u64, path: &mut Path) -> Result<Option<NodeId>> {
        let mut table = ROOT;
        for level in self.cfg.start_level..3 {
            let (shift, mask) = self.levels[level as usize & 3];
            if ipa >> shift != (end - 1) >> shift {
                return Ok(None);
            }
            let idx = ((ipa >> shift) & mask) as usize;
            let node = self.node(table)?;
            let raw = node.dma.read_u64(idx);
            // Above level 3, valid with bit 1 set is a table descriptor.
            if raw & 0b11 != 0b11 {
                return Ok(None);
            }
            let d = LocalRegisterCopy::<u64, S2_DESC::Register>::new(raw);
            path.push(table, idx);
            table = self.child_of(node, idx, self.decode_oa(&d))?;
        }
        Ok(Some(table))
    }

    /// After an unmap inside level-3 table `leaf`: unlinks it if it became
    /// empty, then each table above on `path` that became empty, as
    /// `unmap_range` does on its way back up (each unlink published before
    /// the next level's).
    fn unlink_empty(&mut self, leaf: NodeId, path: &Path) -> Result<()> {
        let mut child = leaf;
        for &(table, idx) in path.steps().iter().rev() {
            if self.node(child)?.live != 0 {
                break;
            }
            self.write(table, idx, 0)?;
            self.set_child(table, idx, NO_CHILD as usize)?;
            if let Some(node) = self.remove_node(child) {
                self.retired.push(node.dma);
            }
            self.publish(table, Some((idx, idx)))?;
            let node = self.node_mut(table)?;
            node.live = node.live.saturating_sub(1);
            child = table;
        }
        Ok(())
    }

    //
    // Each walk visits the descriptors of one table covering `[start, end)`
    // in address order; `chunks` yields `(cur, next, idx)` per descriptor.
    // Level-3 tables (pages only) have loops of their own: 1 GiB of 4K
    // pages is 262,144 level-3 descriptors and only 513 others.

    fn chunks(&self, level: u32, start: u64, end: u64) -> Chunks {
        let (shift, mask) = self.levels[level as usize & 3];
        Chunks {
            shift,
            mask,
            cur: start,
            end,
        }
    }

    /// The descriptors `[first, first + n)` of the level-3 table that
    /// `[start, end)` (inside one such table) covers.
    fn pages(&self, start: u64, end: u64) -> (usize, usize) {
        let n = (end - start) >> self.cfg.granule.shift();
        (self.index(3, start), n as usize)
    }

    /// The first mapped address in `[start, end)`, if any.
    fn find_mapped(&self, table: NodeId, level: u32, start: u64, end: u64) -> Result<Option<u64>> {
        let node = self.node(table)?;
        if node.live == 0 {
            return Ok(None);
        }
        if level == 3 {
            let (first, n) = self.pages(start, end);
            let g = self.cfg.granule.size();
            return Ok((0..n)
                .find(|&i| is_page(node.dma.read_u64(first + i)))
                .map(|i| start + i as u64 * g));
        }
        for (cur, next, idx) in self.chunks(level, start, end) {
            match self.entry(table, level, idx)? {
                Entry::Invalid => {}
                Entry::Leaf { .. } => return Ok(Some(cur)),
                Entry::Table(t) => {
                    if let Some(a) = self.find_mapped(t, level + 1, cur, next)? {
                        return Ok(Some(a));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Number of tables `map_range` will allocate; `table` is `None` for a
    /// table that does not exist yet (all invalid).
    fn count_new_tables(
        &self,
        table: Option<NodeId>,
        level: u32,
        ipa: u64,
        pa: u64,
        end: u64,
        blocks: bool,
    ) -> Result<usize> {
        if level == 3 {
            // Pages always fit: nothing below level 3.
            return Ok(0);
        }
        let mut n = 0;
        for (cur, next, idx) in self.chunks(level, ipa, end) {
            let cur_pa = pa + (cur - ipa);
            let entry = match table {
                Some(t) => self.entry(t, level, idx)?,
                None => Entry::Invalid,
            };
            match entry {
                Entry::Invalid if self.leaf_fits(level, cur, cur_pa, next, blocks) => {}
                Entry::Table(t) => {
                    n += self.count_new_tables(Some(t), level + 1, cur, cur_pa, next, blocks)?
                }
                // Invalid (or a leaf, which validation excluded): a new table.
                _ => n += 1 + self.count_new_tables(None, level + 1, cur, cur_pa, next, blocks)?,
            }
        }
        Ok(n)
    }

    /// Maps `[ipa, end)` into `table` at `level`, taking new tables from
    /// `pool`. `fresh`: the table is not linked yet, so it is published
    /// whole (zeroes included) before the caller links it.
    #[allow(clippy::too_many_arguments)]
    fn map_range(
        &mut self,
        table: NodeId,
        level: u32,
        ipa: u64,
        pa: u64,
        end: u64,
        opts: &MapOptions,
        pool: &mut Vec<Dma<H>>,
        fresh: bool,
    ) -> Result<()> {
        if level == 3 {
            return self.map_pages(table, ipa, pa, end, opts, fresh);
        }
        let mut span: Option<(usize, usize)> = None;
        let mut added = 0;
        for (cur, next, idx) in self.chunks(level, ipa, end) {
            let cur_pa = pa + (cur - ipa);
            let desc = match self.entry(table, level, idx)? {
                Entry::Invalid if self.leaf_fits(level, cur, cur_pa, next, opts.blocks) => {
                    self.leaf_desc(level, cur_pa, opts)
                }
                Entry::Invalid => {
                    let dma = pool.pop().ok_or(Error::NoMemory)?;
                    let paddr = dma.paddr();
                    let child = self.insert_node(Node::new(dma, 0, level + 1));
                    self.map_range(child, level + 1, cur, cur_pa, next, opts, pool, true)?;
                    self.set_child(table, idx, child)?;
                    self.table_desc(paddr)
                }
                Entry::Table(t) => {
                    self.map_range(t, level + 1, cur, cur_pa, next, opts, pool, false)?;
                    continue;
                }
                Entry::Leaf { .. } => return Err(Error::Overlap { addr: cur }),
            };
            self.write(table, idx, desc)?;
            added += 1;
            span = Some(span.map_or((idx, idx), |(f, _)| (f, idx)));
        }
        self.finish_batch(table, span, fresh)?;
        self.node_mut(table)?.live += added;
        Ok(())
    }

    /// `map_range` in a level-3 table: every descriptor of the range
    /// becomes a page (validation has excluded mapped ones; one found
    /// anyway is refused as an overlap, as at the other levels).
    fn map_pages(
        &mut self,
        table: NodeId,
        ipa: u64,
        pa: u64,
        end: u64,
        opts: &MapOptions,
        fresh: bool,
    ) -> Result<()> {
        let (first, n) = self.pages(ipa, end);
        let g = self.cfg.granule.size();
        let template = self.leaf_desc(3, 0, opts);
        let node = self.node(table)?;
        for i in 0..n {
            let off = i as u64 * g;
            if is_page(node.dma.read_u64(first + i)) {
                return Err(Error::Overlap { addr: ipa + off });
            }
            node.dma
                .write_u64(first + i, template | self.encode_oa(pa + off).value);
        }
        let span = (n > 0).then(|| (first, first + n - 1));
        self.finish_batch(table, span, fresh)?;
        self.node_mut(table)?.live += n;
        Ok(())
    }

    /// Publishes a batch of writes to `table`: the whole table when it is
    /// `fresh` (not linked yet), else the span written.
    fn finish_batch(&self, table: NodeId, span: Option<(usize, usize)>, fresh: bool) -> Result<()> {
        if fresh {
            let n = self.node(table)?;
            n.dma.publish(0, n.dma.len_u64());
            Ok(())
        } else {
            self.publish(table, span)
        }
    }

    /// Checks that every page of `[start, end)` is mapped and, when `split`
    /// is the error text for it, that no block is only partly covered.
    fn check_mapped(
        &self,
        table: NodeId,
        level: u32,
        start: u64,
        end: u64,
        split: Option<&'static str>,
    ) -> Result<()> {
        if level == 3 {
            // Pages cannot be split. A level-3 table whose every descriptor
            // is counted live is all pages.
            let node = self.node(table)?;
            let (first, n) = self.pages(start, end);
            if n == node.dma.len_u64() && node.live == n {
                return Ok(());
            }
            let g = self.cfg.granule.size();
            return match (0..n).find(|&i| !is_page(node.dma.read_u64(first + i))) {
                Some(i) => Err(Error::NotMapped {
                    addr: start + i as u64 * g,
                }),
                None => Ok(()),
            };
        }
        let size = 1u64 << level_shift(self.cfg.granule, level);
        for (cur, next, idx) in self.chunks(level, start, end) {
            match self.entry(table, level, idx)? {
                Entry::Invalid => return Err(Error::NotMapped { addr: cur }),
                Entry::Leaf { .. } => {
                    if let Some(split) = split
                        && (!cur.is_multiple_of(size) || next - cur != size)
                    {
                        return Err(Error::InvalidArgument(split));
                    }
                }
                Entry::Table(t) => self.check_mapped(t, level + 1, cur, next, split)?,
            }
        }
        Ok(())
    }

    /// Clears the (validated) range and unlinks tables that become empty.
    fn unmap_range(&mut self, table: NodeId, level: u32, start: u64, end: u64) -> Result<()> {
        let mut span: Option<(usize, usize)> = None;
        let mut removed = 0;
        if level == 3 {
            let (first, n) = self.pages(start, end);
            let node = self.node(table)?;
            if n == node.dma.len_u64() && node.live == n {
                // Every descriptor is a page: clear them all.
                (0..n).for_each(|i| node.dma.write_u64(i, 0));
                span = (n > 0).then(|| (0, n - 1));
                removed = n;
            } else {
                for i in first..first + n {
                    if is_page(node.dma.read_u64(i)) {
                        node.dma.write_u64(i, 0);
                        removed += 1;
                        span = Some(span.map_or((i, i), |(f, _)| (f, i)));
                    }
                }
            }
        } else {
            for (cur, next, idx) in self.chunks(level, start, end) {
                match self.entry(table, level, idx)? {
                    Entry::Invalid => continue,
                    Entry::Leaf { .. } => self.changed_levels |= 1 << level,
                    Entry::Table(t) => {
                        self.unmap_range(t, level + 1, cur, next)?;
                        if self.node(t)?.live != 0 {
                            continue;
                        }
                        // Unlink first; the memory is freed only by
                        // `release_retired`, after the caller's invalidation.
                        self.write(table, idx, 0)?;
                        self.set_child(table, idx, NO_CHILD as usize)?;
                        if let Some(node) = self.remove_node(t) {
                            self.retired.push(node.dma);
                        }
                        removed += 1;
                        span = Some(span.map_or((idx, idx), |(f, _)| (f, idx)));
                        continue;
                    }
                }
                self.write(table, idx, 0)?;
                removed += 1;
                span = Some(span.map_or((idx, idx), |(f, _)| (f, idx)));
            }
        }
        if level == 3 && removed > 0 {
            self.changed_levels |= 1 << 3;
        }
        self.publish(table, span)?;
        let node = self.node_mut(table)?;
        node.live = node.live.saturating_sub(removed);
        Ok(())
    }

    /// Rewrites the leaves of the (validated) range with `perm`.
    fn protect_range(
        &mut self,
        table: NodeId,
        level: u32,
        start: u64,
        end: u64,
        perm: Perm,
    ) -> Result<()> {
        let mut span: Option<(usize, usize)> = None;
        for (cur, next, idx) in self.chunks(level, start, end) {
            match self.entry(table, level, idx)? {
                Entry::Invalid => {}
                Entry::Leaf { raw, .. } => {
                    self.changed_levels |= 1 << level;
                    self.write(table, idx, Self::with_perm(raw, perm))?;
                    span = Some(span.map_or((idx, idx), |(f, _)| (f, idx)));
                }
                Entry::Table(t) => self.protect_range(t, level + 1, cur, next, perm)?,
            }
        }
        self.publish(table, span)
    }
}

/// Whether `raw`, a level-3 descriptor, is a page (valid, and not the
/// reserved block encoding, which faults like an invalid one): what
/// `decode(3, raw)` calls a leaf.
const fn is_page(raw: u64) -> bool {
    raw & 0b11 == 0b11
}

/// Allocates one zeroed table and checks that the SMMU can reach it.
fn alloc_table<H: Hal>(
    cfg: &Stage2Config,
    size: usize,
    align: usize,
    coherent: bool,
) -> Result<Dma<H>> {
    let dma = Dma::<H>::new(size, align, coherent)?;
    match dma.paddr().checked_add(size as u64) {
        Some(end) if end <= cfg.oa_limit() => Ok(dma),
        _ => Err(Error::Unsupported(Unsupported::AddressSize)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeHal;
    use proptest::prelude::*;
    use std::collections::BTreeMap as Model;

    type Table = Stage2Table<FakeHal>;

    const K: u64 = 1 << 10;
    const M: u64 = 1 << 20;
    const G: u64 = 1 << 30;

    fn cfg4k(ipa: u32) -> Stage2Config {
        Stage2Config::new(Granule::K4, ipa, 48).unwrap()
    }

    /// Every table's contents, by physical address (root included).
    fn snapshot(t: &Table) -> Vec<(u64, Vec<u64>)> {
        let dump = |d: &Dma<FakeHal>| {
            (
                d.paddr(),
                (0..d.len_u64()).map(|i| d.read_u64(i)).collect::<Vec<_>>(),
            )
        };
        let mut v = vec![dump(&t.nodes[ROOT].as_ref().unwrap().dma)];
        v.extend(t.sorted_tables().into_iter().map(dump));
        v
    }

    /// The raw leaf descriptor for `ipa` and its level.
    fn raw_leaf(t: &Table, ipa: u64) -> Option<(u32, u64)> {
        let mut table = ROOT;
        for level in t.cfg.start_level..=3 {
            match t.entry(table, level, t.index(level, ipa)).ok()? {
                Entry::Invalid => return None,
                Entry::Table(n) => table = n,
                Entry::Leaf { raw, .. } => return Some((level, raw)),
            }
        }
        None
    }

    // ---- configuration ----

    #[test]
    fn vtcr_fields_pinned() {
        // 4K, 40-bit IPA, 48-bit PA: T0SZ=24, SL0=1, IRGN0=ORGN0=1 (WBWA),
        // SH0=3, TG0=0, PS=5, RES1 bit 31.
        let c = cfg4k(40);
        assert_eq!(c.vtcr(), 0x8005_3558);
        assert_eq!(c.vtcr() & 0x3f, 24);
        assert_eq!((c.vtcr() >> 6) & 3, 1);
        assert_eq!((c.vtcr() >> 8) & 3, 1);
        assert_eq!((c.vtcr() >> 10) & 3, 1);
        assert_eq!((c.vtcr() >> 12) & 3, 3);
        assert_eq!((c.vtcr() >> 14) & 3, 0);
        assert_eq!((c.vtcr() >> 16) & 7, 5);
        // TG0 encodings: 64K = 1, 16K = 2.
        assert_eq!(
            (Stage2Config::new(Granule::K64, 42, 48).unwrap().vtcr() >> 14) & 3,
            1
        );
        assert_eq!(
            (Stage2Config::new(Granule::K16, 40, 48).unwrap().vtcr() >> 14) & 3,
            2
        );
        // The classic KVM value for a 40-bit PA host.
        assert_eq!(
            Stage2Config::new(Granule::K4, 40, 40).unwrap().vtcr(),
            0x8002_3558
        );
    }

    #[test]
    fn start_level_and_concatenation() {
        // (granule, ipa, oas) -> (start level, SL0, concatenated tables, root entries)
        let cases = [
            (Granule::K4, 25, 48, 2, 0, 1, 16),
            (Granule::K4, 30, 48, 2, 0, 1, 512),
            (Granule::K4, 32, 48, 2, 0, 4, 2048),
            (Granule::K4, 34, 48, 2, 0, 16, 8192),
            (Granule::K4, 35, 48, 1, 1, 1, 32),
            (Granule::K4, 39, 48, 1, 1, 1, 512),
            (Granule::K4, 40, 48, 1, 1, 2, 1024),
            (Granule::K4, 43, 48, 1, 1, 16, 8192),
            (Granule::K4, 44, 48, 0, 2, 1, 32),
            (Granule::K4, 48, 48, 0, 2, 1, 512),
            (Granule::K16, 25, 48, 3, 0, 1, 2048),
            (Granule::K16, 29, 48, 3, 0, 16, 32768),
            (Granule::K16, 36, 48, 2, 1, 1, 2048),
            (Granule::K16, 40, 48, 2, 1, 16, 32768),
            (Granule::K16, 41, 48, 1, 2, 1, 32),
            (Granule::K16, 47, 48, 1, 2, 1, 2048),
            (Granule::K16, 48, 48, 1, 2, 2, 4096),
            (Granule::K64, 25, 48, 3, 0, 1, 512),
            (Granule::K64, 29, 48, 3, 0, 1, 8192),
            (Granule::K64, 33, 48, 3, 0, 16, 131072),
            (Granule::K64, 42, 48, 2, 1, 1, 8192),
            (Granule::K64, 46, 48, 2, 1, 16, 131072),
            (Granule::K64, 47, 48, 1, 2, 1, 32),
            (Granule::K64, 48, 48, 1, 2, 1, 64),
            (Granule::K64, 52, 52, 1, 2, 1, 1024),
        ];
        for (g, ipa, oas, level, sl0, concat, entries) in cases {
            let c = Stage2Config::new(g, ipa, oas).unwrap();
            let what = (g, ipa);
            assert_eq!(c.start_level(), level, "{what:?}");
            assert_eq!(c.concatenated_tables(), concat, "{what:?}");
            assert_eq!(c.root_entries(), entries, "{what:?}");
            assert_eq!((c.vtcr() >> 6) & 3, sl0, "{what:?}");
            assert_eq!(c.vtcr() & 0x3f, u64::from(64 - ipa), "{what:?}");
            let bytes = (entries * 8).max(g.size() as usize);
            assert_eq!(c.root_table_bytes(), bytes, "{what:?}");
            assert_eq!(c.root_align(), bytes, "{what:?}");
            assert_eq!(Stage2Config::from_vtcr(c.vtcr()), Ok(c), "{what:?}");
        }
    }

    #[test]
    fn config_errors() {
        assert!(matches!(
            Stage2Config::new(Granule::K4, 24, 48),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            Stage2Config::new(Granule::K4, 44, 40),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            Stage2Config::new(Granule::K4, 40, 41),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(
            Stage2Config::new(Granule::K4, 49, 52),
            Err(Error::Unsupported(Unsupported::AddressSize))
        );
        assert_eq!(
            Stage2Config::new(Granule::K64, 49, 48).map(|_| ()),
            Err(Error::Unsupported(Unsupported::AddressSize))
        );
        // 52-bit output with 4K is treated as 48 bits.
        assert_eq!(
            Stage2Config::new(Granule::K4, 48, 52).unwrap().oas_bits(),
            48
        );
        assert_eq!(
            Stage2Config::new(Granule::K64, 48, 52).unwrap().oas_bits(),
            52
        );
    }

    #[test]
    fn from_vtcr_checks() {
        let base = cfg4k(40).vtcr();
        assert_eq!(
            Stage2Config::from_vtcr(base | 1 << 32),
            Err(Error::Unsupported(Unsupported::AddressSize))
        );
        assert_eq!(
            Stage2Config::from_vtcr(base | 1 << 33),
            Err(Error::Unsupported(Unsupported::AddressSize))
        );
        // TG0 = 3 is reserved.
        assert!(matches!(
            Stage2Config::from_vtcr(base | 3 << 14),
            Err(Error::InvalidArgument(_))
        ));
        // SL0 = 3 with 4K is FEAT_TTST level 3: unsupported.
        assert!(matches!(
            Stage2Config::from_vtcr(base | 3 << 6),
            Err(Error::InvalidArgument(_))
        ));
        // SH0 = 1 is reserved.
        assert!(matches!(
            Stage2Config::from_vtcr((base & !(3 << 12)) | 1 << 12),
            Err(Error::InvalidArgument(_))
        ));
        // Unknown fields (NSW, bit 29) are refused; VS, HA, HD are ignored.
        assert!(matches!(
            Stage2Config::from_vtcr(base | 1 << 29),
            Err(Error::InvalidArgument(_))
        ));
        let with_vs = Stage2Config::from_vtcr(base | 1 << 19 | 1 << 21 | 1 << 22).unwrap();
        assert_eq!(with_vs.vtcr(), base);
        // Without RES1 it still parses; vtcr() puts it back.
        assert_eq!(
            Stage2Config::from_vtcr(base & !(1 << 31)).unwrap().vtcr(),
            base
        );
        // 4K, 40-bit IPA starting at level 0 (SL0 = 2): 2 entries. Needs PS > 42.
        let l0_ps40 = (base & !(3 << 6)) | 2 << 6;
        let l0_ps40 = (l0_ps40 & !(7 << 16)) | 2 << 16;
        assert!(matches!(
            Stage2Config::from_vtcr(l0_ps40),
            Err(Error::InvalidArgument(_))
        ));
        let l0 = (base & !(3 << 6)) | 2 << 6;
        let c = Stage2Config::from_vtcr(l0).unwrap();
        assert_eq!(
            (c.start_level(), c.concatenated_tables(), c.root_entries()),
            (0, 1, 2)
        );
        assert_eq!(c.vtcr(), l0);
        // Level 1 with a 48-bit IPA needs 512 tables: refused.
        let t16 = (base & !0x3f) | 16;
        assert!(matches!(
            Stage2Config::from_vtcr(t16),
            Err(Error::InvalidArgument(_))
        ));
        // PS = 52 needs the 64K granule; PS = 7 is reserved.
        assert_eq!(
            Stage2Config::from_vtcr((base & !(7 << 16)) | 6 << 16),
            Err(Error::Unsupported(Unsupported::AddressSize))
        );
        assert!(matches!(
            Stage2Config::from_vtcr(base | 7 << 16),
            Err(Error::InvalidArgument(_))
        ));
        // T0SZ = 40 (24-bit IPA) is below the minimum.
        assert!(matches!(
            Stage2Config::from_vtcr((base & !0x3f) | 40),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn vtcr_round_trip_everywhere() {
        for g in [Granule::K4, Granule::K16, Granule::K64] {
            for oas in PS_BITS {
                for ipa in 20..=53 {
                    if let Ok(c) = Stage2Config::new(g, ipa, oas) {
                        assert_eq!(Stage2Config::from_vtcr(c.vtcr()), Ok(c));
                        let s = c.ste_fields();
                        let v = c.vtcr();
                        assert_eq!(u64::from(s.t0sz), v & 0x3f);
                        assert_eq!(u64::from(s.sl0), (v >> 6) & 3);
                        assert_eq!(u64::from(s.ir0), (v >> 8) & 3);
                        assert_eq!(u64::from(s.or0), (v >> 10) & 3);
                        assert_eq!(u64::from(s.sh0), (v >> 12) & 3);
                        assert_eq!(u64::from(s.tg), (v >> 14) & 3);
                        assert_eq!(u64::from(s.ps), (v >> 16) & 7);
                    }
                }
            }
        }
        // Every SL0/T0SZ/PS/TG0 combination that parses round-trips exactly.
        for tg in 0..3u64 {
            for sl0 in 0..4u64 {
                for ps in 0..8u64 {
                    for t0sz in 0..64u64 {
                        let v = t0sz
                            | sl0 << 6
                            | 1 << 8
                            | 1 << 10
                            | 3 << 12
                            | tg << 14
                            | ps << 16
                            | 1 << 31;
                        if let Ok(c) = Stage2Config::from_vtcr(v) {
                            assert_eq!(c.vtcr(), v);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn clamp_to_smmu_sizes() {
        let c = cfg4k(48);
        assert_eq!(c.clamp_to(48, 48), Ok(c));
        assert_eq!(
            c.check_fits(44, 48),
            Err(Error::Unsupported(Unsupported::AddressSize))
        );
        let d = c.clamp_to(44, 40).unwrap();
        assert_eq!(
            (
                d.ipa_bits(),
                d.oas_bits(),
                d.start_level(),
                d.concatenated_tables()
            ),
            (40, 40, 1, 2)
        );
        assert!(d.check_fits(44, 40).is_ok());
        // An odd OAS rounds down to an encodable size.
        assert_eq!(c.clamp_to(48, 41).unwrap().oas_bits(), 40);
        assert!(c.clamp_to(24, 48).is_err());
    }

    // ---- descriptors ----

    #[test]
    fn descriptor_fields_pinned() {
        let mut t = Table::new(cfg4k(40), true).unwrap();
        t.map(0x8000_1000, 0x4000_1000, 0x1000, Perm::ReadWrite)
            .unwrap();
        // valid|page (0b11), MemAttr 0b1111 [5:2], S2AP 0b11 [7:6], SH 0b11
        // [9:8], AF [10], OA [47:12].
        assert_eq!(raw_leaf(&t, 0x8000_1000), Some((3, 0x4000_17ff)));
        t.map(0x8000_2000, 0x4000_2000, 0x1000, Perm::Read).unwrap();
        assert_eq!(raw_leaf(&t, 0x8000_2000), Some((3, 0x4000_277f)));
        t.map(0x8000_3000, 0x4000_3000, 0x1000, Perm::Write)
            .unwrap();
        assert_eq!(raw_leaf(&t, 0x8000_3000), Some((3, 0x4000_37bf)));
        // A 2M block at level 2: bit 1 clear.
        t.map(0x8020_0000, 0x4020_0000, 2 * M, Perm::ReadWrite)
            .unwrap();
        assert_eq!(raw_leaf(&t, 0x8020_0000), Some((2, 0x4020_07fd)));
        // A 1G block at level 1 (in the second concatenated start table).
        t.map(0xc0_0000_0000 - G, 0x1_0000_0000, G, Perm::ReadWrite)
            .unwrap();
        assert_eq!(raw_leaf(&t, 0xbf_c000_0000), Some((1, 0x1_0000_07fd)));
        // Table descriptors: next-level address | 0b11.
        let root = &t.nodes[ROOT].as_ref().unwrap().dma;
        let l1 = root.read_u64(t.index(1, 0x8000_1000));
        assert_eq!(l1 & 0xfff, 0b11);
        assert!(t.sorted_tables().iter().any(|d| d.paddr() == l1 & !0xfff));
        // Protect rewrites S2AP only.
        t.protect(0x8000_1000, 0x1000, Perm::Read).unwrap();
        assert_eq!(raw_leaf(&t, 0x8000_1000), Some((3, 0x4000_177f)));
    }

    #[test]
    fn descriptor_52_bit_output_64k() {
        let cfg = Stage2Config::new(Granule::K64, 52, 52).unwrap();
        let mut t = Table::new(cfg, true).unwrap();
        let pa = 0x000f_0000_1234_0000;
        t.map(0x1_0000, pa, 64 * K, Perm::ReadWrite).unwrap();
        // OA[51:48] = 0xf in bits [15:12], OA[47:16] in place.
        assert_eq!(raw_leaf(&t, 0x1_0000), Some((3, 0x0000_0000_1234_f7ff)));
        assert_eq!(
            t.query(0x1_0000 + 0x10),
            Some(Translation {
                pa: pa + 0x10,
                perm: Perm::ReadWrite,
                size: 64 * K,
                memory: Memory::Normal,
                execute: true,
            })
        );
        // 512M block at level 2.
        t.map(0x2000_0000, 0x000a_0000_2000_0000, 512 * M, Perm::Read)
            .unwrap();
        assert_eq!(raw_leaf(&t, 0x2000_0000), Some((2, 0x0000_0000_2000_a77d)));
        assert_eq!(
            t.query(0x3fff_ffff).map(|x| x.pa),
            Some(0x000a_0000_3fff_ffff)
        );
    }

    // ---- mapping ----

    #[test]
    fn uses_blocks_when_aligned() {
        let mut t = Table::new(cfg4k(40), true).unwrap();
        // 1G + 2M + 4K, all aligned: one 1G block, one 2M block, one page.
        t.map(G, 4 * G, G + 2 * M + 4 * K, Perm::ReadWrite).unwrap();
        assert_eq!(t.query(G).unwrap().size, G);
        assert_eq!(
            t.query(2 * G - 1).unwrap(),
            Translation {
                pa: 5 * G - 1,
                perm: Perm::ReadWrite,
                size: G,
                memory: Memory::Normal,
                execute: true,
            }
        );
        assert_eq!(t.query(2 * G).unwrap().size, 2 * M);
        assert_eq!(
            t.query(2 * G + 2 * M).unwrap(),
            Translation {
                pa: 5 * G + 2 * M,
                perm: Perm::ReadWrite,
                size: 4 * K,
                memory: Memory::Normal,
                execute: true,
            }
        );
        assert_eq!(t.query(2 * G + 2 * M + 4 * K), None);
        // Root (2 concatenated) + level 2 + level 3.
        assert_eq!(t.tables(), 3);
        assert_eq!(t.table_bytes(), 8 * K as usize + 2 * 4 * K as usize);

        // PA offset by one page: no block fits.
        let mut u = Table::new(cfg4k(40), true).unwrap();
        u.map(0, 4 * G + 4 * K, 4 * M, Perm::Read).unwrap();
        assert!(
            (0..4 * M)
                .step_by(4096)
                .all(|a| u.query(a).unwrap().size == 4 * K)
        );
        assert_eq!(u.tables(), 1 + 1 + 2);

        // 16K: 32M blocks at level 2; 64K: 512M blocks.
        let mut s = Table::new(Stage2Config::new(Granule::K16, 40, 48).unwrap(), true).unwrap();
        s.map(32 * M, 64 * M, 32 * M + 16 * K, Perm::Read).unwrap();
        assert_eq!(s.query(32 * M).unwrap().size, 32 * M);
        assert_eq!(s.query(64 * M).unwrap().size, 16 * K);
        let mut l = Table::new(Stage2Config::new(Granule::K64, 42, 48).unwrap(), true).unwrap();
        l.map(512 * M, G, 512 * M + 64 * K, Perm::Read).unwrap();
        assert_eq!(l.query(512 * M).unwrap().size, 512 * M);
        assert_eq!(l.query(G).unwrap().size, 64 * K);
    }

    #[test]
    fn rejected_calls_change_nothing() {
        let live0 = FakeHal::live_bytes();
        let mut t = Table::new(cfg4k(40), false).unwrap();
        t.map(0x10_0000, 0x8000_0000, 64 * K, Perm::ReadWrite)
            .unwrap();
        t.map(0x4000_0000, 0x8000_0000, 4 * M, Perm::ReadWrite)
            .unwrap(); // two 2M blocks
        let before = snapshot(&t);
        let live = FakeHal::live_bytes();
        let cases: Vec<(Result<()>, Error)> = vec![
            (
                t.map(0x0, 0x0, 2 * M, Perm::Read),
                Error::Overlap { addr: 0x10_0000 },
            ),
            (
                t.map(0x10_8000, 0x0, 4 * K, Perm::Read),
                Error::Overlap { addr: 0x10_8000 },
            ),
            (
                t.map(0x3ff0_0000, 0x0, 2 * M, Perm::Read),
                Error::Overlap { addr: 0x4000_0000 },
            ),
            (
                t.map(0x4010_0000, 0x0, 4 * K, Perm::Read),
                Error::Overlap { addr: 0x4010_0000 },
            ),
            (
                t.map(0x1001, 0x0, 4 * K, Perm::Read),
                Error::Misaligned {
                    addr: 0x1001,
                    align: 4096,
                },
            ),
            (
                t.map(0x1000, 0x10, 4 * K, Perm::Read),
                Error::Misaligned {
                    addr: 0x10,
                    align: 4096,
                },
            ),
            (
                t.map(0x1000, 0x0, 100, Perm::Read),
                Error::Misaligned {
                    addr: 100,
                    align: 4096,
                },
            ),
            (t.map(0x1000, 0x0, 0, Perm::Read), Error::ZeroLength),
            (
                t.map(1 << 40, 0x0, 4 * K, Perm::Read),
                Error::RangeOverflow {
                    addr: 1 << 40,
                    len: 4 * K,
                },
            ),
            (
                t.map((1 << 40) - 4096, 0, 8 * K, Perm::Read),
                Error::RangeOverflow {
                    addr: (1 << 40) - 4096,
                    len: 8 * K,
                },
            ),
            (
                t.map(0x1000, u64::MAX - 4095, 4 * K, Perm::Read),
                Error::RangeOverflow {
                    addr: u64::MAX - 4095,
                    len: 4 * K,
                },
            ),
            (
                t.map(0x1000, (1 << 48) - 4096, 8 * K, Perm::Read),
                Error::RangeOverflow {
                    addr: (1 << 48) - 4096,
                    len: 8 * K,
                },
            ),
            (
                t.map(0xffff_f000, 0, u64::MAX & !0xfff, Perm::Read),
                Error::RangeOverflow {
                    addr: 0xffff_f000,
                    len: u64::MAX & !0xfff,
                },
            ),
            (
                t.unmap(0x10_0000, 128 * K),
                Error::NotMapped { addr: 0x11_0000 },
            ),
            (
                t.unmap(0xf_f000, 8 * K),
                Error::NotMapped { addr: 0xf_f000 },
            ),
            (
                t.unmap(0x4000_0000, 4 * K),
                Error::InvalidArgument("unmap splits a block mapping"),
            ),
            (
                t.unmap(0x4000_0000, 2 * M + 4 * K),
                Error::InvalidArgument("unmap splits a block mapping"),
            ),
            (
                t.unmap(0x4000_0000, 6 * M),
                Error::NotMapped { addr: 0x4040_0000 },
            ),
            (t.unmap(0x1000, 0), Error::ZeroLength),
            (
                t.unmap(0x1800, 4 * K),
                Error::Misaligned {
                    addr: 0x1800,
                    align: 4096,
                },
            ),
            (
                t.protect(0x10_0000, 128 * K, Perm::Read),
                Error::NotMapped { addr: 0x11_0000 },
            ),
            (
                t.protect(0x4010_0000, 4 * K, Perm::Read),
                Error::InvalidArgument("protect splits a block mapping"),
            ),
            (
                t.protect(u64::MAX & !0xfff, 4 * K, Perm::Read),
                Error::RangeOverflow {
                    addr: u64::MAX & !0xfff,
                    len: 4 * K,
                },
            ),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(got, Err(want), "case {i}");
            assert!(snapshot(&t) == before, "case {i} changed table memory");
            assert_eq!(FakeHal::live_bytes(), live, "case {i} leaked");
        }
        drop(t);
        assert_eq!(FakeHal::live_bytes(), live0);
    }

    #[test]
    fn allocation_failure_installs_nothing() {
        let mut t = Table::new(cfg4k(40), false).unwrap();
        t.map(0x20_0000, 0x20_0000, 4 * K, Perm::Read).unwrap();
        assert_eq!(t.tables(), 3);
        let before = snapshot(&t);
        let live = FakeHal::live_bytes();
        // [G - 4K, G + 4K) needs a level-3 table under the existing level-2
        // table of the first GiB, and a level-2 plus a level-3 table under
        // the second: three tables. Fail at each of them.
        for n in 0..3 {
            FakeHal::fail_after(Some(n));
            let r = t.map(G - 4 * K, 0, 8 * K, Perm::Read);
            FakeHal::fail_after(None);
            assert_eq!(r, Err(Error::NoMemory), "fail after {n}");
            assert!(snapshot(&t) == before, "fail after {n}");
            assert_eq!(FakeHal::live_bytes(), live, "fail after {n}");
        }
        FakeHal::fail_after(Some(3));
        let r = t.map(G - 4 * K, 0, 8 * K, Perm::Read);
        FakeHal::fail_after(None);
        assert_eq!(r, Ok(()));
        assert_eq!(t.tables(), 6);
        assert_eq!(t.query(G - 4 * K).unwrap().pa, 0);
        assert_eq!(t.query(G).unwrap().pa, 4 * K);
    }

    #[test]
    fn unmap_retires_empty_tables_and_nothing_leaks() {
        let live0 = FakeHal::live_bytes();
        let mut t = Table::new(cfg4k(40), false).unwrap();
        let root_bytes = FakeHal::live_bytes() - live0;
        t.map(G + 4 * K, 0x1000, 16 * K, Perm::ReadWrite).unwrap();
        t.map(3 * G, 3 * G, 2 * M, Perm::ReadWrite).unwrap();
        assert_eq!(t.tables(), 4);
        t.unmap(G + 4 * K, 8 * K).unwrap();
        assert_eq!(t.tables(), 4);
        assert_eq!(t.query(G + 4 * K), None);
        assert_eq!(t.query(G + 12 * K).unwrap().pa, 0x3000);
        t.unmap(G + 12 * K, 8 * K).unwrap();
        assert_eq!(t.tables(), 2);
        assert_eq!(t.retired_tables(), 2);
        t.unmap(3 * G, 2 * M).unwrap();
        assert_eq!(t.tables(), 1);
        assert_eq!(t.release_retired(), 3);
        assert_eq!(FakeHal::live_bytes() - live0, root_bytes);
        assert!(snapshot(&t)[0].1.iter().all(|&d| d == 0));
        // Remap over the region works again.
        t.map(G, 0, 4 * K, Perm::Read).unwrap();
        t.unmap(G, 4 * K).unwrap();
        drop(t);
        assert_eq!(FakeHal::live_bytes(), live0);
    }

    #[test]
    fn non_coherent_publishes_whole_new_tables() {
        let mut t = Table::new(cfg4k(40), false).unwrap();
        let c0 = FakeHal::cleaned_bytes();
        t.map(0, 0, 4 * K, Perm::Read).unwrap();
        // Two new 4K tables published whole, plus one root descriptor.
        assert_eq!(FakeHal::cleaned_bytes() - c0, 2 * 4096 + 8);
        let mut u = Table::new(cfg4k(40), true).unwrap();
        let c1 = FakeHal::cleaned_bytes();
        u.map(0, 0, 4 * K, Perm::Read).unwrap();
        assert_eq!(FakeHal::cleaned_bytes(), c1);
    }

    // ---- model-based ----

    const SPACE_PAGES: u64 = 2048; // 8 MiB of IPA: four 2M blocks

    #[derive(Debug, Clone)]
    enum Op {
        Map {
            page: u64,
            pages: u64,
            pa_page: u64,
            perm: Perm,
        },
        Unmap {
            page: u64,
            pages: u64,
        },
        Protect {
            page: u64,
            pages: u64,
            perm: Perm,
        },
    }

    fn perm() -> impl Strategy<Value = Perm> {
        prop_oneof![Just(Perm::Read), Just(Perm::Write), Just(Perm::ReadWrite)]
    }

    fn range() -> impl Strategy<Value = (u64, u64)> {
        prop_oneof![
            // Arbitrary pages.
            (0..SPACE_PAGES, 1..64u64).prop_map(|(p, n)| (p, n.min(SPACE_PAGES - p))),
            // Whole 2M blocks.
            (0..4u64, 1..3u64).prop_map(|(b, n)| (b * 512, n.min(4 - b) * 512)),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (range(), prop_oneof![0..1024u64, (0..2u64).prop_map(|b| b * 512)], perm())
                .prop_map(|((page, pages), pa_page, perm)| Op::Map { page, pages, pa_page, perm }),
            2 => range().prop_map(|(page, pages)| Op::Unmap { page, pages }),
            1 => (range(), perm()).prop_map(|((page, pages), perm)| Op::Protect { page, pages, perm }),
        ]
    }

    /// Expected outcome of unmap/protect: the first unmapped page, or a
    /// partly covered block, in address order.
    fn expect_edit(
        t: &Table,
        model: &Model<u64, (u64, Perm)>,
        page: u64,
        pages: u64,
        split: &'static str,
    ) -> Result<()> {
        let (start, end) = (page * 4096, (page + pages) * 4096);
        for p in page..page + pages {
            let a = p * 4096;
            if !model.contains_key(&a) {
                return Err(Error::NotMapped { addr: a });
            }
            let size = t.query(a).map_or(4096, |x| x.size);
            let base = a & !(size - 1);
            if base < start || base + size > end {
                return Err(Error::InvalidArgument(split));
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        #[test]
        fn matches_reference_model(ops in proptest::collection::vec(op(), 1..40), coherent in any::<bool>()) {
            let live0 = FakeHal::live_bytes();
            let mut t = Table::new(cfg4k(36), coherent).unwrap();
            let mut model: Model<u64, (u64, Perm)> = Model::new();
            let pa_base = 1u64 << 32;
            for op in ops {
                let before = snapshot(&t);
                let (r, want) = match op {
                    Op::Map { page, pages, pa_page, perm } => {
                        let want = match (page..page + pages).find(|p| model.contains_key(&(p * 4096))) {
                            Some(p) => Err(Error::Overlap { addr: p * 4096 }),
                            None => Ok(()),
                        };
                        let pa = pa_base + pa_page * 4096;
                        let r = t.map(page * 4096, pa, pages * 4096, perm);
                        if want.is_ok() {
                            for i in 0..pages {
                                model.insert((page + i) * 4096, (pa + i * 4096, perm));
                            }
                        }
                        (r, want)
                    }
                    Op::Unmap { page, pages } => {
                        let want = expect_edit(&t, &model, page, pages, "unmap splits a block mapping");
                        let r = t.unmap(page * 4096, pages * 4096);
                        if want.is_ok() {
                            for i in 0..pages {
                                model.remove(&((page + i) * 4096));
                            }
                        }
                        (r, want)
                    }
                    Op::Protect { page, pages, perm } => {
                        let want = expect_edit(&t, &model, page, pages, "protect splits a block mapping");
                        let r = t.protect(page * 4096, pages * 4096, perm);
                        if want.is_ok() {
                            for i in 0..pages {
                                if let Some(e) = model.get_mut(&((page + i) * 4096)) {
                                    e.1 = perm;
                                }
                            }
                        }
                        (r, want)
                    }
                };
                prop_assert_eq!(r, want);
                if r.is_err() {
                    prop_assert!(snapshot(&t) == before);
                }
                for p in 0..SPACE_PAGES {
                    let a = p * 4096;
                    let got = t.query(a).map(|x| (x.pa, x.perm));
                    prop_assert_eq!(got, model.get(&a).copied(), "page {:#x}", a);
                }
                t.release_retired();
            }
            // With everything unmapped only the root is left.
            let mapped: Vec<u64> = model.keys().copied().collect();
            for a in mapped {
                if t.query(a).is_some() {
                    let size = t.query(a).unwrap().size;
                    t.unmap(a & !(size - 1), size).unwrap();
                }
            }
            prop_assert_eq!(t.tables(), 1);
            t.release_retired();
            drop(t);
            prop_assert_eq!(FakeHal::live_bytes(), live0);
        }
    }
}
