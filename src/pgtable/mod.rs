//! VMSAv8-64 translation tables for the SMMU, generic over the leaf
//! descriptor format.
//!
//! Both stages share the table structure: the granule, the levels, table
//! descriptors and the output-address field are the same; only the leaf
//! attributes differ (stage 2: MemAttr, S2AP, XN; stage 1: AttrIndx through
//! the CD's MAIR, AP, nG, PXN/UXN). [`Table`] is the engine (walk, map,
//! unmap, protect, block split, table freeing), parameterised by a
//! [`Format`]; [`stage1::Stage1`] is the stage-1 format.
//!
//! Issue 10 item 2 ("one page-table engine for both stages") is half done:
//! the stage-2 tables of `src/stage2.rs` still use their own copy of the
//! engine, which this one was derived from.

use tock_registers::register_bitfields;

use crate::error::{Error, Result, Unsupported};
use crate::stage2::{Granule, MapOptions, Memory, Perm};

pub mod stage1;
mod table;
#[cfg(test)]
mod tests;

pub use table::{PartialBlock, SplitTable, Table};

register_bitfields! [u64,
    /// The descriptor fields both stages share (Arm ARM D8, "Translation
    /// table descriptor formats"), without FEAT_LPA2.
    pub DESC [
        /// The descriptor is valid.
        VALID OFFSET(0) NUMBITS(1) [],
        /// At levels 0-2: table (1) or block (0). At level 3 must be 1 (page).
        TYPE OFFSET(1) NUMBITS(1) [
            Block = 0,
            TableOrPage = 1
        ],
        /// OA\[51:48\] with the 64 KiB granule and a 52-bit output size
        /// (FEAT_LPA). Overlaps the low bits of ADDR, which are RES0 there.
        OA_HI OFFSET(12) NUMBITS(4) [],
        /// Output (or next-level table) address bits \[47:12\]; bits below
        /// the granule size are RES0.
        ADDR OFFSET(12) NUMBITS(36) []
    ]
];

/// How the leaves of one translation stage encode attributes.
pub trait Format {
    /// The attribute bits of a leaf for `opts`: every bit but VALID, TYPE
    /// and the output address. A combination the format cannot express is
    /// an error (checked before a table changes).
    fn leaf_attributes(opts: &MapOptions) -> Result<u64>;
    /// `raw` (a leaf) with its access permission replaced by `perm`.
    fn with_perm(raw: u64, perm: Perm) -> Result<u64>;
    /// A leaf's access permission (`None`: no access at all).
    fn perm(raw: u64) -> Option<Perm>;
    /// A leaf's memory type.
    fn memory(raw: u64) -> Memory;
    /// Whether a leaf permits instruction fetches (at the privilege level
    /// the format maps for).
    fn execute(raw: u64) -> bool;
}

/// Output address sizes in bits, indexed by the PS / IPS / OAS encoding.
pub const OA_BITS: [u32; 7] = [32, 36, 40, 42, 44, 48, 52];

/// The shape of one table tree: granule, input size, start level and
/// output size. The start table has `2^(in_bits - level_shift(start))`
/// descriptors (no concatenation).
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
    /// the top input bits.
    ///
    /// Errors: [`Error::InvalidArgument`] for an unknown output size or an
    /// input below 25 bits; [`Error::Unsupported`]`(AddressSize)` above 48
    /// bits of input or output.
    pub fn stage1(granule: Granule, va_bits: u32, oas_bits: u32) -> Result<Geometry> {
        if oas_bits > 48 || va_bits > 48 {
            return Err(Error::Unsupported(Unsupported::AddressSize));
        }
        if !OA_BITS.contains(&oas_bits) {
            return Err(Error::InvalidArgument(
                "output size must be 32, 36, 40, 42, 44 or 48 bits",
            ));
        }
        if va_bits < 25 {
            return Err(Error::InvalidArgument(
                "input size below 25 bits (T0SZ above 39)",
            ));
        }
        let g = Geometry {
            granule,
            in_bits: va_bits,
            start_level: 0,
            oas_bits,
        };
        let start_level = (0..=3)
            .find(|&l| g.level_shift(l) < va_bits && va_bits <= g.level_shift(l) + g.stride())
            .ok_or(Error::InvalidArgument(
                "no start level resolves this input size",
            ))?;
        Ok(Geometry { start_level, ..g })
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

    /// Descriptors in the start table.
    pub fn root_entries(&self) -> usize {
        1 << (self.in_bits - self.level_shift(self.start_level))
    }

    /// Bytes allocated for the start table (at least one granule), which is
    /// also its alignment.
    pub fn root_table_bytes(&self) -> usize {
        (self.root_entries() * 8).max(self.granule_size() as usize)
    }

    /// The granule size in bytes.
    pub fn granule_size(&self) -> u64 {
        self.granule.size()
    }

    /// Address bits one table level resolves.
    pub fn stride(&self) -> u32 {
        self.granule.shift() - 3
    }

    /// log2 of the region one descriptor at `level` maps.
    pub fn level_shift(&self, level: u32) -> u32 {
        self.granule.shift() + self.stride() * (3 - level)
    }

    /// Whether a block descriptor is allowed at `level` (without FEAT_LPA2:
    /// levels 1 and 2 with 4K, level 2 with 16K and 64K).
    pub fn block_at(&self, level: u32) -> bool {
        match self.granule {
            Granule::K4 => level == 1 || level == 2,
            Granule::K16 | Granule::K64 => level == 2,
        }
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
