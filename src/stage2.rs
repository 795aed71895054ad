//! Stage-2 configuration shared in format with the CPU (VTCR_EL2).
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
//! The tables themselves are built by the page-table engine shared with
//! stage 1 (`crate::pgtable`): [`Stage2Table`] is
//! `crate::pgtable::Table` with the stage-2 leaf format. This module
//! re-exports the types stage-2 users name ([`Perm`], [`MapOptions`],
//! [`Memory`], [`Granule`], [`Translation`], ...); see `crate::pgtable`
//! for what the tables do and do not do (invalidation is the caller's).

use tock_registers::{LocalRegisterCopy, register_bitfields};

use crate::error::{Error, Result, TableError, Unsupported};
use crate::pgtable::{Geometry, OA_BITS};

pub use crate::pgtable::format::s2::{S2_DESC, Stage2};
pub use crate::pgtable::{
    Granule, MapOptions, Memory, PartialBlock, Perm, SplitReserve, SplitTable, Stage2Table,
    Translation,
};

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
    ]
];

/// The VTCR_EL2.TG0 / STE.S2TG encoding of a granule.
const fn tg0(g: Granule) -> u64 {
    match g {
        Granule::K4 => 0b00,
        Granule::K64 => 0b01,
        Granule::K16 => 0b10,
    }
}

/// The granule a TG0 value selects.
fn granule_from_tg0(tg0: u64) -> Option<Granule> {
    match tg0 {
        0b00 => Some(Granule::K4),
        0b01 => Some(Granule::K64),
        0b10 => Some(Granule::K16),
        _ => None,
    }
}

/// The start level an SL0 value selects (without FEAT_TTST).
fn sl0_to_level(g: Granule, sl0: u64) -> Option<u32> {
    match (g, sl0) {
        (Granule::K4, 0..=2) => Some(2 - sl0 as u32),
        (Granule::K16 | Granule::K64, 0..=2) => Some(3 - sl0 as u32),
        _ => None,
    }
}

/// The SL0 value for a start level (inverse of `sl0_to_level`).
const fn level_to_sl0(g: Granule, level: u32) -> u64 {
    match g {
        Granule::K4 => (2 - level) as u64,
        Granule::K16 | Granule::K64 => (3 - level) as u64,
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
/// level and concatenation, output size (a `Geometry`), and walk
/// attributes.
///
/// Always valid: every constructor checks the combination against the
/// architecture's rules for VTCR_EL2 (`Geometry::stage2`: start level
/// permitted for the granule and output size, at most 16 concatenated
/// start tables, IPA no larger than the output size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage2Config {
    geo: Geometry,
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
    /// treated as 48 bits: 52-bit output needs FEAT_LPA2, which this driver
    /// does not support.
    ///
    /// Errors: [`TableError::OutputSize`] for an unknown `oas_bits`,
    /// [`TableError::InputTooSmall`] below 25 bits,
    /// [`TableError::InputAboveOutput`]; [`Error::Unsupported`]`
    /// (AddressSize)` for an IPA beyond 48 bits (52 with the 64K granule and
    /// 52-bit output).
    pub fn new(granule: Granule, ipa_bits: u32, oas_bits: u32) -> Result<Self> {
        let oas = if oas_bits == 52 && granule != Granule::K64 {
            48
        } else {
            oas_bits
        };
        let level = Geometry::stage2_start_level(granule, ipa_bits);
        let geo = Geometry::stage2(granule, ipa_bits, level, oas)?;
        Ok(Self {
            geo,
            sh0: 0b11,
            irgn0: 0b01,
            orgn0: 0b01,
        })
    }

    /// Parses a VTCR_EL2 value, as a hypervisor programs it for its CPU's
    /// stage 2.
    ///
    /// VS, HA and HD and the RES1 bit 31 are accepted and ignored (they do
    /// not describe the table format); DS and SL2 (FEAT_LPA2) are refused
    /// with [`Error::Unsupported`]`(AddressSize)`. Other refusals are
    /// [`Error::Table`]: [`TableError::VtcrFields`] (NSW/NSA, HWU, ...),
    /// [`TableError::ReservedGranule`], [`TableError::StartLevelEncoding`]
    /// (FEAT_TTST SL0 values), [`TableError::ReservedShareability`],
    /// [`TableError::ReservedOutputSize`], and what `Geometry::stage2`
    /// refuses. `from_vtcr(c.vtcr()) == c` for every configuration `c`.
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
            return Err(TableError::VtcrFields(vtcr & !known).into());
        }
        let granule = granule_from_tg0(v.read(VTCR::TG0)).ok_or(TableError::ReservedGranule)?;
        let sl0 = v.read(VTCR::SL0);
        let level = sl0_to_level(granule, sl0).ok_or(TableError::StartLevelEncoding(sl0 as u8))?;
        let sh0 = v.read(VTCR::SH0) as u8;
        if sh0 == 0b01 {
            return Err(TableError::ReservedShareability.into());
        }
        let ps = v.read(VTCR::PS) as u8;
        let oas = *OA_BITS
            .get(usize::from(ps))
            .ok_or(TableError::ReservedOutputSize(ps))?;
        let ipa_bits = 64 - v.read(VTCR::T0SZ) as u32;
        let geo = Geometry::stage2(granule, ipa_bits, level, oas)?;
        Ok(Self {
            geo,
            sh0,
            irgn0: v.read(VTCR::IRGN0) as u8,
            orgn0: v.read(VTCR::ORGN0) as u8,
        })
    }

    /// The VTCR_EL2 value describing this configuration: T0SZ, SL0, IRGN0,
    /// ORGN0, SH0, TG0, PS, and the RES1 bit 31. VS, HA and HD are left 0
    /// for the hypervisor to add.
    pub fn vtcr(&self) -> u64 {
        let g = self.granule();
        let mut v = LocalRegisterCopy::<u64, VTCR::Register>::new(0);
        v.write(
            VTCR::T0SZ.val(u64::from(64 - self.ipa_bits()))
                + VTCR::SL0.val(level_to_sl0(g, self.start_level()))
                + VTCR::IRGN0.val(u64::from(self.irgn0))
                + VTCR::ORGN0.val(u64::from(self.orgn0))
                + VTCR::SH0.val(u64::from(self.sh0))
                + VTCR::TG0.val(tg0(g))
                + VTCR::PS.val(u64::from(self.ps()))
                + VTCR::RES1::SET,
        );
        v.get()
    }

    /// The STE's S2T0SZ/S2SL0/S2IR0/S2OR0/S2SH0/S2TG/S2PS, which use the
    /// VTCR_EL2 encodings: one configuration serves the CPU and the SMMU.
    pub fn ste_fields(&self) -> S2SteFields {
        S2SteFields {
            t0sz: (64 - self.ipa_bits()) as u8,
            sl0: level_to_sl0(self.granule(), self.start_level()) as u8,
            ir0: self.irgn0,
            or0: self.orgn0,
            sh0: self.sh0,
            tg: tg0(self.granule()) as u8,
            ps: self.ps(),
        }
    }

    /// Checks that an SMMU with input size `ias_bits` and output size
    /// `oas_bits` (IDR5.OAS, in bits) can use this configuration unchanged.
    /// Fails with [`Error::Unsupported`]`(AddressSize)` otherwise.
    pub fn check_fits(&self, ias_bits: u32, oas_bits: u32) -> Result<()> {
        if self.ipa_bits() > ias_bits || self.oas_bits() > oas_bits {
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
        let max = if self.granule() == Granule::K64 {
            52
        } else {
            48
        };
        let oas = *OA_BITS
            .iter()
            .rfind(|&&b| b <= oas_bits.min(self.oas_bits()).min(max))
            .ok_or(Error::Unsupported(Unsupported::AddressSize))?;
        let ipa = self.ipa_bits().min(ias_bits).min(oas);
        let cfg = Self::new(self.granule(), ipa, oas)?;
        Ok(Self {
            sh0: self.sh0,
            irgn0: self.irgn0,
            orgn0: self.orgn0,
            ..cfg
        })
    }

    /// The table geometry (what the page-table engine follows).
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// The translation granule.
    pub fn granule(&self) -> Granule {
        self.geo.granule()
    }

    /// IPA (input) size in bits: `64 - T0SZ`.
    pub fn ipa_bits(&self) -> u32 {
        self.geo.in_bits()
    }

    /// Output address size in bits (decoded PS).
    pub fn oas_bits(&self) -> u32 {
        self.geo.oas_bits()
    }

    /// The PS encoding (0 = 32 bits ... 6 = 52 bits).
    pub fn ps(&self) -> u8 {
        self.geo.oas_encoding()
    }

    /// The level at which walks start (0 to 3).
    pub fn start_level(&self) -> u32 {
        self.geo.start_level()
    }

    /// Number of concatenated start-level tables (1 to 16).
    pub fn concatenated_tables(&self) -> u32 {
        self.geo.concatenated_tables()
    }

    /// Number of descriptors in the (possibly concatenated) start table.
    pub fn root_entries(&self) -> usize {
        self.geo.root_entries()
    }

    /// Bytes allocated for the start table: its descriptors, and at least
    /// one granule (a start table that resolves fewer bits than a full
    /// table still gets a whole page).
    pub fn root_table_bytes(&self) -> usize {
        self.geo.root_table_bytes()
    }

    /// Alignment of the start table: concatenated tables must be aligned to
    /// their total size.
    pub fn root_align(&self) -> usize {
        self.geo.root_table_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg4k(ipa: u32) -> Stage2Config {
        Stage2Config::new(Granule::K4, ipa, 48).unwrap()
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
        assert_eq!(
            Stage2Config::new(Granule::K4, 24, 48),
            Err(Error::Table(TableError::InputTooSmall(24)))
        );
        assert_eq!(
            Stage2Config::new(Granule::K4, 44, 40),
            Err(Error::Table(TableError::InputAboveOutput {
                input: 44,
                output: 40
            }))
        );
        assert_eq!(
            Stage2Config::new(Granule::K4, 40, 41),
            Err(Error::Table(TableError::OutputSize(41)))
        );
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
        assert_eq!(
            Stage2Config::from_vtcr(base | 3 << 14),
            Err(Error::Table(TableError::ReservedGranule))
        );
        // SL0 = 3 with 4K is FEAT_TTST level 3: unsupported.
        assert_eq!(
            Stage2Config::from_vtcr(base | 3 << 6),
            Err(Error::Table(TableError::StartLevelEncoding(3)))
        );
        // SH0 = 1 is reserved.
        assert_eq!(
            Stage2Config::from_vtcr((base & !(3 << 12)) | 1 << 12),
            Err(Error::Table(TableError::ReservedShareability))
        );
        // Unknown fields (NSW, bit 29) are refused; VS, HA, HD are ignored.
        assert_eq!(
            Stage2Config::from_vtcr(base | 1 << 29),
            Err(Error::Table(TableError::VtcrFields(1 << 29)))
        );
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
        assert_eq!(
            Stage2Config::from_vtcr(l0_ps40),
            Err(Error::Table(TableError::StartLevelForOutput {
                level: 0,
                output: 40
            }))
        );
        let l0 = (base & !(3 << 6)) | 2 << 6;
        let c = Stage2Config::from_vtcr(l0).unwrap();
        assert_eq!(
            (c.start_level(), c.concatenated_tables(), c.root_entries()),
            (0, 1, 2)
        );
        assert_eq!(c.vtcr(), l0);
        // Level 1 with a 48-bit IPA needs 512 tables: refused.
        let t16 = (base & !0x3f) | 16;
        assert_eq!(
            Stage2Config::from_vtcr(t16),
            Err(Error::Table(TableError::StartLevel {
                level: 1,
                input: 48
            }))
        );
        // PS = 52 needs the 64K granule; PS = 7 is reserved.
        assert_eq!(
            Stage2Config::from_vtcr((base & !(7 << 16)) | 6 << 16),
            Err(Error::Unsupported(Unsupported::AddressSize))
        );
        assert_eq!(
            Stage2Config::from_vtcr(base | 7 << 16),
            Err(Error::Table(TableError::ReservedOutputSize(7)))
        );
        // T0SZ = 40 (24-bit IPA) is below the minimum.
        assert_eq!(
            Stage2Config::from_vtcr((base & !0x3f) | 40),
            Err(Error::Table(TableError::InputTooSmall(24)))
        );
    }

    #[test]
    fn vtcr_round_trip_everywhere() {
        for g in [Granule::K4, Granule::K16, Granule::K64] {
            for oas in OA_BITS {
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
}
