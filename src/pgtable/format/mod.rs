//! Leaf descriptor formats: what differs between the stages. The table
//! structure (levels, table descriptors, the output-address field) is the
//! same for both and lives in the engine; a [`Format`] only encodes and
//! decodes a leaf's attributes.

use core::fmt;

use tock_registers::register_bitfields;

use super::{Geometry, MapOptions, Memory, Perm};
use crate::error::Result;

pub mod s1;
pub mod s2;

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
    /// The configuration a tree of this format is built from (it yields
    /// the [`Geometry`]).
    type Config: Copy + fmt::Debug + PartialEq;
    /// The geometry of `cfg`.
    fn geometry(cfg: &Self::Config) -> Geometry;
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
