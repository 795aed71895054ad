//! VMSAv8-64 translation tables for the SMMU: one engine for both stages.
//!
//! Both stages share the table structure: the granule, the levels, table
//! descriptors and the output-address field are the same; only the leaf
//! attributes differ (stage 2: MemAttr, S2AP, XN; stage 1: AttrIndx through
//! the CD's MAIR, AP, nG, PXN/UXN). So:
//!
//! - [`Table`] is the engine (walk, map, unmap, protect, block split,
//!   freeing emptied tables after invalidation, TLBI level hints), over a
//!   slab of tables; `table.rs` holds its entry points, `walk.rs` the
//!   walks, `split.rs` block splitting, `node.rs` the slab and descriptor
//!   encoding.
//! - [`Format`] is what differs: [`format::s1`] ([`Stage1`]) and
//!   [`format::s2`] ([`Stage2`]) encode leaf attributes.
//! - [`Geometry`] (`geometry.rs`) is the shape of a tree: granule, input
//!   size, start level and concatenated start tables, output size.
//!
//! # What this module does not do: invalidation
//!
//! After [`Table::unmap`] or [`Table::protect`] the SMMU may still hold the
//! old translations (and, after `unmap`, pointers to tables that were
//! unlinked) in its TLBs and walk caches. The caller must issue the SMMU
//! invalidation (TLBI over the range, or by VMID/ASID) followed by CMD_SYNC
//! before relying on the change, and before [`Table::release_retired`].
//! [`Table::map`] only turns invalid entries into valid ones, which needs
//! no invalidation.
//!
//! # Memory ordering
//!
//! Every descriptor is written with one 64-bit single-copy-atomic store
//! ([`crate::Dma::write_u64`]) and published ([`crate::Dma::publish`]: a
//! cache clean for a non-coherent SMMU, then `DSB ST`) after each batch of
//! writes to a table. A new table is filled and published as a whole before
//! the descriptor that links it is written, so the SMMU never walks a
//! half-built table.
//!
//! # Supported configurations
//!
//! 4 KiB, 16 KiB and 64 KiB granules; input sizes from 25 bits up to 48
//! bits (52-bit IPAs with the 64 KiB granule and a 52-bit output size,
//! FEAT_LPA); output sizes 32 to 48 bits (52 with 64 KiB at stage 2). Not
//! supported: FEAT_LPA2 and its level -1 start, FEAT_TTST start levels,
//! and the contiguous hint.

#[cfg(test)]
mod alloc_tests;
mod cursor;
pub mod format;
mod geometry;
mod node;
#[cfg(test)]
mod s2_tests;
mod split;
mod table;
#[cfg(test)]
mod tests;
mod walk;

pub use format::s1::{Stage1, Stage1Table};
pub use format::s2::{Stage2, Stage2Table};
pub use format::{DESC, Format};
pub use geometry::{Geometry, Granule, MIN_IN_BITS, OA_BITS};
pub use split::{PartialBlock, SplitReserve, SplitTable};
pub use table::Table;

use crate::hal::PhysAddr;

/// Access permission of a leaf (stage 2: S2AP; stage 1: AP\[2\], which
/// has no write-only encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Perm {
    /// Read only (S2AP = 0b01).
    Read,
    /// Write only (S2AP = 0b10; stage 2 only).
    Write,
    /// Read and write (S2AP = 0b11).
    ReadWrite,
}

/// Memory type of a mapping.
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

/// How `Table::map_with` maps a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MapOptions {
    /// Access permission.
    pub perm: Perm,
    /// Memory type.
    pub memory: Memory,
    /// Whether instructions may be fetched from the range (stage 2: XN =
    /// 0b00) or not (XN = 0b10). The SMMU ignores XN for DMA; it matters to
    /// a CPU sharing the tables.
    pub execute: bool,
    /// Whether block descriptors may be used where the IPA, the PA and the
    /// length allow (`false`: pages only, so that later unmaps of single
    /// pages never split a block).
    pub blocks: bool,
}

impl MapOptions {
    /// Normal memory with `perm`, executable, blocks allowed: what
    /// `Table::map` uses.
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

/// What a translation of one input address found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The output address of the queried address (the leaf's base plus
    /// the offset of the address inside it).
    pub pa: PhysAddr,
    /// Permissions of the leaf.
    pub perm: Perm,
    /// Size of the leaf (page or block) in bytes.
    pub size: u64,
    /// Memory type of the leaf.
    pub memory: Memory,
    /// Whether the leaf is executable.
    pub execute: bool,
}
