//! The shape of a VMSAv8-64 table tree, for either stage: granule (4K,
//! 16K, 64K), input size, start level (with concatenated start tables at
//! stage 2) and output size, checked against the architecture's rules
//! (Arm ARM D8, "Translation table walk"; AArch64.S2InvalidSL for the
//! stage-2 start levels). Nothing here depends on the leaf format.

use crate::error::{Error, Result, TableError, Unsupported};

/// Output address sizes in bits, indexed by the PS / IPS / OAS encoding.
pub const OA_BITS: [u32; 7] = [32, 36, 40, 42, 44, 48, 52];

/// Smallest input size (largest T0SZ, 39) without FEAT_TTST.
pub const MIN_IN_BITS: u32 = 25;

/// Most start tables a stage-2 walk may concatenate.
const MAX_CONCAT_LOG2: u32 = 4;

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
    pub(crate) const fn stride(self) -> u32 {
        self.shift() - 3
    }

    /// Lowest and highest stage-2 start levels this driver supports (no
    /// FEAT_TTST, no FEAT_LPA2).
    pub(crate) const fn s2_start_levels(self) -> (u32, u32) {
        match self {
            Granule::K4 => (0, 2),
            Granule::K16 | Granule::K64 => (1, 3),
        }
    }

    /// Whether a block descriptor is allowed at `level` without FEAT_LPA2
    /// (level 3 holds pages, which are always allowed).
    pub(crate) const fn block_at(self, level: u32) -> bool {
        match self {
            Granule::K4 => level == 1 || level == 2,
            Granule::K16 | Granule::K64 => level == 2,
        }
    }

    /// log2 of the region one descriptor at `level` maps.
    pub(crate) const fn level_shift(self, level: u32) -> u32 {
        self.shift() + self.stride() * (3 - level)
    }
}

/// The shape of one table tree: granule, input size, start level and
/// output size. The start table has `2^(in_bits - level_shift(start))`
/// descriptors: more than one table's worth only at stage 2, where up to
/// 16 start tables are concatenated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    granule: Granule,
    in_bits: u32,
    start_level: u32,
    oas_bits: u32,
}

impl Geometry {
    /// A stage-1 (TTB0) geometry: `va_bits` of input (T0SZ = 64 -
    /// `va_bits`, 25..=48 bits: no FEAT_TTST, no 52-bit VAs) and
    /// `oas_bits` of output (32, 36, 40, 42, 44 or 48: the CD's IPS, which
    /// must not be 52 on QEMU). The start level is the one that resolves
    /// the top input bits (stage 1 never concatenates).
    ///
    /// Errors: [`TableError::OutputSize`] for an unknown output size,
    /// [`TableError::InputTooSmall`] below 25 bits of input;
    /// [`Error::Unsupported`]`(AddressSize)` above 48 bits of input or
    /// output.
    pub fn stage1(granule: Granule, va_bits: u32, oas_bits: u32) -> Result<Geometry> {
        if oas_bits > 48 || va_bits > 48 {
            return Err(Error::Unsupported(Unsupported::AddressSize));
        }
        if !OA_BITS.contains(&oas_bits) {
            return Err(TableError::OutputSize(oas_bits).into());
        }
        if va_bits < MIN_IN_BITS {
            return Err(TableError::InputTooSmall(va_bits).into());
        }
        let start_level = (0..=3)
            .find(|&l| {
                let shift = granule.level_shift(l);
                shift < va_bits && va_bits <= shift + granule.stride()
            })
            .ok_or(TableError::StartLevel {
                level: 0,
                input: va_bits,
            })?;
        Ok(Geometry {
            granule,
            in_bits: va_bits,
            start_level,
            oas_bits,
        })
    }

    /// The deepest stage-2 start level whose start table, with at most 16
    /// concatenated tables, resolves an `ipa_bits` input (as KVM picks it:
    /// one walk level fewer). The highest supported level when none does
    /// ([`Geometry::stage2`] then says why).
    pub fn stage2_start_level(granule: Granule, ipa_bits: u32) -> u32 {
        let (lo, hi) = granule.s2_start_levels();
        (lo..=hi)
            .rev()
            .find(|&l| {
                let bits = i64::from(ipa_bits) - i64::from(granule.level_shift(l));
                bits <= i64::from(granule.stride() + MAX_CONCAT_LOG2)
            })
            .unwrap_or(lo)
    }

    /// A stage-2 geometry starting at `level`, with the architecture's
    /// checks (VTCR_EL2 T0SZ / SL0 / TG0 / PS). 52-bit output needs the
    /// 64K granule (FEAT_LPA; 4K and 16K would need FEAT_LPA2).
    ///
    /// Errors: [`TableError::OutputSize`]; [`Error::Unsupported`]`
    /// (AddressSize)` for 52-bit output with 4K/16K or an IPA beyond 48
    /// bits (52 with 52-bit output); [`TableError::InputTooSmall`];
    /// [`TableError::InputAboveOutput`]; [`TableError::StartLevel`] when
    /// the start table would need more than 16 concatenated tables or
    /// resolve no bit; [`TableError::StartLevelForOutput`].
    pub fn stage2(granule: Granule, ipa_bits: u32, level: u32, oas_bits: u32) -> Result<Geometry> {
        if !OA_BITS.contains(&oas_bits) {
            return Err(TableError::OutputSize(oas_bits).into());
        }
        if oas_bits == 52 && granule != Granule::K64 {
            return Err(Error::Unsupported(Unsupported::AddressSize));
        }
        if ipa_bits < MIN_IN_BITS {
            return Err(TableError::InputTooSmall(ipa_bits).into());
        }
        let max_ipa = if oas_bits == 52 { 52 } else { 48 };
        if ipa_bits > max_ipa {
            return Err(Error::Unsupported(Unsupported::AddressSize));
        }
        if ipa_bits > oas_bits {
            return Err(TableError::InputAboveOutput {
                input: ipa_bits,
                output: oas_bits,
            }
            .into());
        }
        let stride = i64::from(granule.stride());
        let bad_level = TableError::StartLevel {
            level,
            input: ipa_bits,
        };
        if level > 3 {
            return Err(bad_level.into());
        }
        let bits = i64::from(ipa_bits) - i64::from(granule.level_shift(level));
        if !(1..=stride + i64::from(MAX_CONCAT_LOG2)).contains(&bits) {
            return Err(bad_level.into());
        }
        // Start levels the architecture ties to the output size
        // (AArch64.S2InvalidSL / S2InconsistentSL).
        let permitted = match (granule, level) {
            (Granule::K4, 0) => oas_bits > 42,
            (Granule::K16, 1) => oas_bits > 40,
            (Granule::K64, 1) => oas_bits > 42,
            _ => true,
        };
        if !permitted {
            return Err(TableError::StartLevelForOutput {
                level,
                output: oas_bits,
            }
            .into());
        }
        Ok(Geometry {
            granule,
            in_bits: ipa_bits,
            start_level: level,
            oas_bits,
        })
    }

    /// The translation granule.
    pub fn granule(&self) -> Granule {
        self.granule
    }

    /// Input address bits (`64 - T0SZ`).
    pub fn in_bits(&self) -> u32 {
        self.in_bits
    }

    /// Output address bits.
    pub fn oas_bits(&self) -> u32 {
        self.oas_bits
    }

    /// The output size encoding (IPS / PS), 0..=6.
    pub fn oas_encoding(&self) -> u8 {
        // Every constructor checked that `oas_bits` is in the table.
        OA_BITS
            .iter()
            .position(|&b| b == self.oas_bits)
            .unwrap_or(0) as u8
    }

    /// The level at which walks start.
    pub fn start_level(&self) -> u32 {
        self.start_level
    }

    /// Number of concatenated start tables (1 to 16; always 1 at stage 1).
    pub fn concatenated_tables(&self) -> u32 {
        let bits = self.in_bits - self.level_shift(self.start_level);
        1 << bits.saturating_sub(self.stride())
    }

    /// Descriptors in the (possibly concatenated) start table.
    pub fn root_entries(&self) -> usize {
        1 << (self.in_bits - self.level_shift(self.start_level))
    }

    /// Bytes allocated for the start table (at least one granule: a start
    /// table resolving fewer bits than a full table still gets a page),
    /// which is also its alignment (concatenated tables are aligned to
    /// their total size).
    pub fn root_table_bytes(&self) -> usize {
        (self.root_entries() * 8).max(self.granule_size() as usize)
    }

    /// The granule size in bytes.
    pub fn granule_size(&self) -> u64 {
        self.granule.size()
    }

    /// Address bits one table level resolves.
    pub fn stride(&self) -> u32 {
        self.granule.stride()
    }

    /// log2 of the region one descriptor at `level` maps.
    pub fn level_shift(&self, level: u32) -> u32 {
        self.granule.level_shift(level)
    }

    /// Whether a block descriptor is allowed at `level` (without FEAT_LPA2:
    /// levels 1 and 2 with 4K, level 2 with 16K and 64K).
    pub fn block_at(&self, level: u32) -> bool {
        self.granule.block_at(level)
    }

    /// First input address beyond the tables.
    pub fn in_limit(&self) -> u64 {
        1 << self.in_bits
    }

    /// First output address beyond the output size.
    pub fn oa_limit(&self) -> u64 {
        1 << self.oas_bits
    }
}
