//! Block splitting: replacing a block leaf by a next-level table that
//! translates the same way, so that part of the block can then be unmapped
//! or reprotected. The engine builds the table ([`Table::prepare_split`]);
//! the caller chooses between break-before-make ([`Table::break_block`],
//! SMMU invalidation, [`Table::install_split`]) and a direct replacement
//! when FEAT_BBM level 2 allows it, because only the caller can invalidate.

use alloc::vec::Vec;

use tock_registers::LocalRegisterCopy;

use super::Table;
use super::format::{DESC, Format};
use super::node::{Entry, Node, NodeId, ROOT, children_slots};
use super::walk::alloc_table;
use crate::error::Result;
use crate::hal::{Dma, Hal};

/// A block mapping that a range covers only partly: where it is, and what
/// it maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialBlock {
    table: NodeId,
    idx: usize,
    /// Level of the block descriptor.
    pub level: u32,
    /// First input address of the block.
    pub ipa: u64,
    /// Size of the block in bytes.
    pub size: u64,
    raw: u64,
}

/// A next-level table equivalent to a block, built by
/// `Table::prepare_split` and not yet linked.
pub struct SplitTable<H: Hal> {
    /// The table and its slab node (child slots allocated when the new
    /// table is above the last level).
    node: Node<H>,
}

impl<H: Hal> core::fmt::Debug for SplitTable<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SplitTable")
            .field("paddr", &self.node.dma.paddr())
            .field("entries", &self.node.live)
            .finish()
    }
}

/// Tables allocated up front for every split a range needs
/// (`Table::reserve_splits`), so that a range's splits either all get
/// their memory or none starts.
#[derive(Debug)]
pub struct SplitReserve<H: Hal> {
    tables: Vec<Dma<H>>,
    /// Child slots for the splits whose new table is above the last level
    /// (a 1 GiB block split into 2 MiB blocks).
    children: Vec<alloc::boxed::Box<[u32]>>,
}

impl<H: Hal> SplitReserve<H> {
    /// Tables still held.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// Whether no table is held.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

impl<H: Hal, F: Format> Table<H, F> {
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
        for level in self.geo.start_level()..=3 {
            let idx = self.index(level, addr);
            match self.entry(table, level, idx)? {
                Entry::Invalid => return Ok(None),
                Entry::Table(next) => table = next,
                Entry::Leaf { raw, .. } if level < 3 => {
                    let size = 1u64 << self.geo.level_shift(level);
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

    /// Number of splits `[ipa, ipa + len)` needs before every block in it
    /// is covered whole: for each end of the range, the block holding it
    /// and, below, each smaller block that the split leaves partly covered
    /// (a 1 GiB block split for a 4K range needs a 2 MiB split too).
    pub fn splits_needed(&self, ipa: u64, len: u64) -> Result<usize> {
        Ok(self.split_counts(ipa, len)?.0)
    }

    /// [`Table::splits_needed`], and how many of those splits make a table
    /// above the last level (a block split at level 1 or above).
    fn split_counts(&self, ipa: u64, len: u64) -> Result<(usize, usize)> {
        let end = self.check_ipa_only(ipa, len)?;
        // At most two ends times three levels (4K: 1 -> 2 -> 3).
        let mut seen = [(0u32, 0u64); 6];
        let mut n = 0;
        for addr in [ipa, end - 1] {
            let Some(b) = self.block_at(addr)? else {
                continue;
            };
            for level in b.level..3 {
                let size = 1u64 << self.geo.level_shift(level);
                let base = addr & !(size - 1);
                if base >= ipa && base + size <= end {
                    break;
                }
                if !seen[..n].contains(&(level, base)) && n < seen.len() {
                    seen[n] = (level, base);
                    n += 1;
                }
            }
        }
        let upper = seen[..n].iter().filter(|(level, _)| level + 1 < 3).count();
        Ok((n, upper))
    }

    /// Allocates the tables every split of `[ipa, ipa + len)` needs
    /// ([`Table::splits_needed`]). On [`crate::Error::NoMemory`] nothing
    /// changed, so a caller that reserves before its first split never
    /// leaves a range half split for lack of memory.
    pub fn reserve_splits(&mut self, ipa: u64, len: u64) -> Result<SplitReserve<H>> {
        let (n, upper) = self.split_counts(ipa, len)?;
        let g = self.geo.granule_size() as usize;
        let mut r = SplitReserve {
            tables: Vec::new(),
            children: Vec::new(),
        };
        crate::fallible::try_reserve_exact(&mut r.tables, n)?;
        crate::fallible::try_reserve_exact(&mut r.children, upper)?;
        for _ in 0..n {
            r.tables
                .push(alloc_table::<H>(&self.geo, g, g, self.coherent)?);
        }
        for _ in 0..upper {
            r.children.push(children_slots(g / 8)?);
        }
        // Room in the slab for every table the splits link.
        self.reserve_slab(n)?;
        Ok(r)
    }

    /// Builds (but does not link) the next-level table equivalent to block
    /// `b`: every entry a leaf with the block's attributes, covering the
    /// block's output range in order. The table is published whole. On
    /// [`crate::Error::NoMemory`] nothing changed.
    pub fn prepare_split(&self, b: &PartialBlock) -> Result<SplitTable<H>> {
        let g = self.geo.granule_size() as usize;
        let dma = alloc_table::<H>(&self.geo, g, g, self.coherent)?;
        let children = if b.level + 1 < 3 {
            children_slots(dma.len_u64())?
        } else {
            alloc::boxed::Box::default()
        };
        Ok(self.fill_split(b, dma, children))
    }

    /// [`Table::prepare_split`] with a table from `reserve` (allocating
    /// only when it is empty).
    pub fn prepare_split_from(
        &self,
        b: &PartialBlock,
        reserve: &mut SplitReserve<H>,
    ) -> Result<SplitTable<H>> {
        let Some(dma) = reserve.tables.pop() else {
            return self.prepare_split(b);
        };
        let children = if b.level + 1 < 3 {
            match reserve.children.pop() {
                Some(c) => c,
                None => {
                    // Not reserved for this split: hand the table back.
                    reserve.tables.push(dma);
                    return self.prepare_split(b);
                }
            }
        } else {
            alloc::boxed::Box::default()
        };
        Ok(self.fill_split(b, dma, children))
    }

    fn fill_split(
        &self,
        b: &PartialBlock,
        dma: Dma<H>,
        children: alloc::boxed::Box<[u32]>,
    ) -> SplitTable<H> {
        let child_level = b.level + 1;
        let child_size = 1u64 << self.geo.level_shift(child_level);
        let d = LocalRegisterCopy::<u64, DESC::Register>::new(b.raw);
        let base = self.decode_oa(&d);
        let kind = if child_level == 3 {
            DESC::TYPE::TableOrPage
        } else {
            DESC::TYPE::Block
        };
        let entries = dma.len_u64();
        for i in 0..entries {
            let mut c = LocalRegisterCopy::<u64, DESC::Register>::new(b.raw);
            // Same attributes; only the type and the address change.
            c.modify(kind + DESC::ADDR.val(0) + DESC::OA_HI.val(0));
            c.modify(self.encode_oa(base + i as u64 * child_size));
            dma.write_u64(i, c.get());
        }
        dma.publish(0, entries);
        SplitTable {
            node: Node::with_children(dma, entries, children),
        }
    }

    /// Break: makes block `b` invalid (published). The SMMU (and a CPU
    /// sharing the tables) must then be invalidated for the block's range
    /// before [`Table::install_split`]; in between, accesses to the
    /// range fault.
    pub fn break_block(&mut self, b: &PartialBlock) -> Result<()> {
        self.write(b.table, b.idx, 0)?;
        self.publish(b.table, Some((b.idx, b.idx)))
    }

    /// Puts block `b` back after a [`Table::break_block`] whose
    /// invalidation failed (an invalid entry becoming valid again needs no
    /// invalidation).
    pub fn restore_block(&mut self, b: &PartialBlock) -> Result<()> {
        self.write(b.table, b.idx, b.raw)?;
        self.publish(b.table, Some((b.idx, b.idx)))
    }

    /// Make: links `split` (from [`Table::prepare_split`]) in place of
    /// block `b` with one 64-bit store. Either after [`Table::break_block`]
    /// and the invalidation, or directly over the live block when both the
    /// SMMU (IDR3.BBML = 2) and every CPU walking the tables allow a block
    /// to be replaced by a table without break.
    pub fn install_split(&mut self, b: &PartialBlock, split: SplitTable<H>) -> Result<()> {
        let paddr = split.node.dma.paddr();
        // Room reserved by `reserve_splits` (or here, before any change,
        // for a split prepared on its own).
        self.reserve_slab(1)?;
        let child = self.insert_node(split.node);
        self.set_child(b.table, b.idx, child)?;
        self.write(b.table, b.idx, self.table_desc(paddr))?;
        self.publish(b.table, Some((b.idx, b.idx)))
    }
}
