//! The walk cursor and the single-page fast path.
//!
//! A map or unmap inside one level-3 table remembers that table
//! ([`Cursor`]). The next call in the same
//! region (the same 2 MiB with the 4K granule) starts there instead of
//! descending from the root again: consecutive 4K calls do one descriptor
//! read and one store each.
//!
//! The cursor holds slab indices, never pointers, and is dropped whenever
//! a table leaves the slab (`remove_node`: unlinked by an unmap, emptied,
//! or retired with its subtree), which is the only way a table's slot can
//! be freed or reused, and the only way a table descriptor on its path can
//! change (maps only fill invalid descriptors; a split replaces a block,
//! never a table). So a cursor that exists names the live level-3 table
//! that a descent from the root would reach.

use super::Table;
use super::format::Format;
use super::node::{NodeId, Path, ROOT, Steps};
use super::walk::is_page;
use crate::error::{Error, Result, TableError};
use crate::hal::Hal;

/// The last level-3 table a walk reached, and the table above it.
#[derive(Clone, Copy)]
pub(super) struct Cursor {
    /// The region the level-3 table covers: `ipa >> shift` of level 2
    /// (its region at level 1, `upper`'s, follows from it).
    region: u64,
    /// The level-3 table, and the level-2 table the walk passed (the start
    /// table when the walk starts at level 2); slab indices, which are
    /// `u32` like `Node::children`.
    leaf: u32,
    upper: u32,
}

/// Records the last table a walk passes: the level-2 table.
struct Upper(NodeId);

impl Steps for Upper {
    #[inline(always)]
    fn push(&mut self, table: NodeId, _idx: usize) {
        self.0 = table;
    }
}

impl<H: Hal, F: Format> Table<H, F> {
    /// The level-3 table holding `[ipa, end)` when it exists (as
    /// `leaf_table`): the cursor's when it covers the range, else found by
    /// a descent from the root, which then becomes the cursor.
    #[inline(always)]
    pub(super) fn leaf_cached(&mut self, ipa: u64, end: u64) -> Result<Option<NodeId>> {
        let shift = self.levels[2].0;
        let region = ipa >> shift;
        if let Some(c) = &self.cursor
            && c.region == region
            && (end - 1) >> shift == region
        {
            return Ok(Some(c.leaf as NodeId));
        }
        // Another level-3 table under the same level-2 table: one level
        // down from there.
        let up_shift = self.levels[1].0;
        let upper_region = ipa >> up_shift;
        if let Some(c) = &self.cursor
            && c.region >> (up_shift - shift) == upper_region
            && (end - 1) >> up_shift == upper_region
            && self.start_level <= 2
        {
            let upper = c.upper;
            let leaf = self.descend(upper as NodeId, 2, ipa, end, &mut ())?;
            if let Some(leaf) = leaf {
                self.cursor = Some(Cursor {
                    region,
                    leaf: leaf as u32,
                    upper,
                });
            }
            return Ok(leaf);
        }
        let mut upper = Upper(ROOT);
        let leaf = self.leaf_table(ipa, end, &mut upper)?;
        if let Some(leaf) = leaf {
            self.cursor = Some(Cursor {
                region,
                leaf: leaf as u32,
                upper: upper.0 as u32,
            });
        }
        Ok(leaf)
    }

    /// After an unmap at `ipa` in level-3 table `leaf`: unlinks it, and
    /// the tables above that become empty, when it became empty. The path
    /// from the root is found again (rarely needed, so not kept).
    pub(super) fn unlink_if_empty(&mut self, leaf: NodeId, ipa: u64) -> Result<()> {
        if self.node(leaf)?.live != 0 {
            return Ok(());
        }
        let mut path = Path::default();
        if self.leaf_table(ipa, ipa + 1, &mut path)? != Some(leaf) {
            return Err(TableError::Corrupt.into());
        }
        self.unlink_empty(leaf, &path)
    }

    /// Maps the one page at `ipa` (validated) in level-3 table `leaf` with
    /// leaf attributes `attrs`, unless it is mapped already.
    #[inline(always)]
    pub(super) fn map_page(&mut self, leaf: NodeId, ipa: u64, pa: u64, attrs: u64) -> Result<()> {
        let idx = ((ipa >> self.page_shift) & u64::from(self.levels[3].1)) as usize;
        // VALID and TYPE = page, as `leaf_desc(3, ..)` writes them.
        let desc = attrs | 0b11 | self.encode_oa(pa).value;
        let node = self.node_mut(leaf)?;
        if is_page(node.dma.read_u64(idx)) {
            return Err(Error::Overlap { addr: ipa });
        }
        node.dma.write_u64(idx, desc);
        node.dma.publish(idx, 1);
        node.live += 1;
        Ok(())
    }

    /// Unmaps the one page at `ipa` (validated) in the cursor's level-3
    /// table `leaf`, refused when it is not mapped; unlinks the tables it
    /// empties.
    #[inline(always)]
    pub(super) fn unmap_page(&mut self, leaf: NodeId, ipa: u64) -> Result<()> {
        let idx = ((ipa >> self.page_shift) & u64::from(self.levels[3].1)) as usize;
        let node = self.node_mut(leaf)?;
        if !is_page(node.dma.read_u64(idx)) {
            return Err(Error::NotMapped { addr: ipa });
        }
        node.dma.write_u64(idx, 0);
        node.dma.publish(idx, 1);
        node.live = node.live.saturating_sub(1);
        let empty = node.live == 0;
        self.changed_levels = 1 << 3;
        if empty {
            return self.unlink_if_empty(leaf, ipa);
        }
        Ok(())
    }
}
