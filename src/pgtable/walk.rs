//! The engine's walks: each visits the descriptors of one table covering
//! `[start, end)` in address order, recursing into next-level tables.
//! Level-3 tables (pages only) have loops of their own: 1 GiB of 4K pages
//! is 262,144 level-3 descriptors and only 513 others. A request inside
//! one existing level-3 table (a single page, say) goes there directly
//! (`leaf_table`) instead of walking the levels above once per pass; the
//! result is the same as the passes from the root.

use alloc::vec::Vec;

use tock_registers::LocalRegisterCopy;

use super::format::{DESC, Format};
use super::node::{Entry, NO_CHILD, Node, NodeId, Path, ROOT, Steps};
use super::{Geometry, MapOptions, Perm, Table};
use crate::error::{Error, Result, TableError, Unsupported};
use crate::hal::{Dma, Hal};

/// The descriptors of one table that a walk visits: `(cur, next, idx)` for
/// each, in address order.
#[derive(Clone, Copy)]
pub(super) struct Chunks {
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

/// Whether `raw`, a level-3 descriptor, is a page (valid, and not the
/// reserved block encoding, which faults like an invalid one): what
/// `decode(3, raw)` calls a leaf.
pub(super) const fn is_page(raw: u64) -> bool {
    raw & 0b11 == 0b11
}

/// Allocates one zeroed table and checks that the SMMU can reach it.
pub(super) fn alloc_table<H: Hal>(
    geo: &Geometry,
    size: usize,
    align: usize,
    coherent: bool,
) -> Result<Dma<H>> {
    let dma = Dma::<H>::new(size, align, coherent)?;
    match dma.paddr().checked_add(size as u64) {
        Some(end) if end <= geo.oa_limit() => Ok(dma),
        _ => Err(Error::Unsupported(Unsupported::AddressSize)),
    }
}

/// How many tables a map will add: above the last level (with child
/// slots) and at it.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct NewTableCount {
    pub(super) upper: usize,
    pub(super) last: usize,
}

/// The tables a map adds, allocated (with their slab nodes) before it
/// changes anything.
pub(super) struct NewTables<H: Hal> {
    upper: Vec<Node<H>>,
    last: Vec<Node<H>>,
}

impl<H: Hal> NewTables<H> {
    /// Allocates `count`'s tables; on [`Error::NoMemory`] (or a table the
    /// SMMU could not reach) everything allocated so far is freed.
    pub(super) fn alloc(geo: &Geometry, coherent: bool, count: NewTableCount) -> Result<Self> {
        let g = geo.granule_size() as usize;
        let mut pool = NewTables {
            upper: Vec::new(),
            last: Vec::new(),
        };
        crate::fallible::try_reserve_exact(&mut pool.upper, count.upper)?;
        crate::fallible::try_reserve_exact(&mut pool.last, count.last)?;
        for _ in 0..count.upper {
            let dma = alloc_table::<H>(geo, g, g, coherent)?;
            pool.upper.push(Node::try_new(dma, 0, 2)?);
        }
        for _ in 0..count.last {
            let dma = alloc_table::<H>(geo, g, g, coherent)?;
            pool.last.push(Node::try_new(dma, 0, 3)?);
        }
        Ok(pool)
    }

    /// A new table for `level` (the count was exact: running out is a bug,
    /// reported as corruption rather than a panic).
    fn take(&mut self, level: u32) -> Result<Node<H>> {
        let pool = if level < 3 {
            &mut self.upper
        } else {
            &mut self.last
        };
        Ok(pool.pop().ok_or(crate::error::TableError::Corrupt)?)
    }

    /// Tables in the pool.
    pub(super) fn len(&self) -> usize {
        self.upper.len() + self.last.len()
    }
}

/// Extends a written span by `idx`.
fn extend(span: Option<(usize, usize)>, idx: usize) -> Option<(usize, usize)> {
    Some(span.map_or((idx, idx), |(f, _)| (f, idx)))
}

impl<H: Hal, F: Format> Table<H, F> {
    /// When `[ipa, end)` lies inside one level-3 table reached through
    /// table descriptors from the root: that table, with the (table, index)
    /// of each descriptor on the way recorded in `path`, root first.
    #[inline]
    pub(super) fn leaf_table(
        &self,
        ipa: u64,
        end: u64,
        path: &mut impl Steps,
    ) -> Result<Option<NodeId>> {
        self.descend(ROOT, self.start_level, ipa, end, path)
    }

    /// `leaf_table` from `table` at `level` (which must hold `ipa`).
    #[inline(always)]
    pub(super) fn descend(
        &self,
        mut table: NodeId,
        level: u32,
        ipa: u64,
        end: u64,
        path: &mut impl Steps,
    ) -> Result<Option<NodeId>> {
        let mut node = self.node(table)?;
        for level in level..3 {
            let (shift, mask) = self.levels[level as usize & 3];
            if ipa >> shift != (end - 1) >> shift {
                return Ok(None);
            }
            let idx = ((ipa >> shift) & u64::from(mask)) as usize;
            let raw = node.dma.read_u64(idx);
            // Above level 3, valid with bit 1 set is a table descriptor.
            if raw & 0b11 != 0b11 {
                return Ok(None);
            }
            path.push(table, idx);
            // The slab's next table, checked against the descriptor (its
            // type and address bits), as `child_of` does.
            let c = *node.children.get(idx).ok_or(TableError::Corrupt)? as usize;
            match self.nodes.get(c).and_then(Option::as_ref) {
                Some(n) if raw & self.link_mask() == n.link => (table, node) = (c, n),
                _ => return Err(TableError::Corrupt.into()),
            }
        }
        Ok(Some(table))
    }

    /// After an unmap inside level-3 table `leaf`: unlinks it if it became
    /// empty, then each table above on `path` that became empty, as
    /// `unmap_range` does on its way back up (each unlink published before
    /// the next level's).
    pub(super) fn unlink_empty(&mut self, leaf: NodeId, path: &Path) -> Result<()> {
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

    pub(super) fn chunks(&self, level: u32, start: u64, end: u64) -> Chunks {
        let (shift, mask) = self.levels[level as usize & 3];
        Chunks {
            shift,
            mask: u64::from(mask),
            cur: start,
            end,
        }
    }

    /// The descriptors `[first, first + n)` of the level-3 table that
    /// `[start, end)` (inside one such table) covers.
    fn pages(&self, start: u64, end: u64) -> (usize, usize) {
        let n = (end - start) >> self.page_shift;
        (self.index(3, start), n as usize)
    }

    /// `find_mapped` in a level-3 table (the single-page fast path too).
    #[inline(always)]
    pub(super) fn find_mapped_page(
        &self,
        table: NodeId,
        start: u64,
        end: u64,
    ) -> Result<Option<u64>> {
        let node = self.node(table)?;
        if node.live == 0 {
            return Ok(None);
        }
        let (first, n) = self.pages(start, end);
        let g = 1u64 << self.page_shift;
        Ok((0..n)
            .find(|&i| is_page(node.dma.read_u64(first + i)))
            .map(|i| start + i as u64 * g))
    }

    /// `check_mapped` in a level-3 table (pages cannot be split): the
    /// first unmapped page is refused.
    #[inline(always)]
    pub(super) fn check_pages_mapped(&self, table: NodeId, start: u64, end: u64) -> Result<()> {
        // A level-3 table whose every descriptor is counted live is all
        // pages.
        let node = self.node(table)?;
        let (first, n) = self.pages(start, end);
        if n == node.dma.len_u64() && node.live == n {
            return Ok(());
        }
        let g = 1u64 << self.page_shift;
        match (0..n).find(|&i| !is_page(node.dma.read_u64(first + i))) {
            Some(i) => Err(Error::NotMapped {
                addr: start + i as u64 * g,
            }),
            None => Ok(()),
        }
    }

    /// The first mapped address in `[start, end)`, if any.
    pub(super) fn find_mapped(
        &self,
        table: NodeId,
        level: u32,
        start: u64,
        end: u64,
    ) -> Result<Option<u64>> {
        if level == 3 {
            return self.find_mapped_page(table, start, end);
        }
        if self.node(table)?.live == 0 {
            return Ok(None);
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
    #[allow(clippy::too_many_arguments)]
    pub(super) fn count_new_tables(
        &self,
        table: Option<NodeId>,
        level: u32,
        ipa: u64,
        pa: u64,
        end: u64,
        blocks: bool,
        count: &mut NewTableCount,
    ) -> Result<()> {
        if level == 3 {
            // Pages always fit: nothing below level 3.
            return Ok(());
        }
        for (cur, next, idx) in self.chunks(level, ipa, end) {
            let cur_pa = pa + (cur - ipa);
            let entry = match table {
                Some(t) => self.entry(t, level, idx)?,
                None => Entry::Invalid,
            };
            match entry {
                Entry::Invalid if self.leaf_fits(level, cur, cur_pa, next, blocks) => {}
                Entry::Table(t) => {
                    self.count_new_tables(Some(t), level + 1, cur, cur_pa, next, blocks, count)?
                }
                // Invalid (or a leaf, which validation excluded): a new table.
                _ => {
                    if level + 1 < 3 {
                        count.upper += 1;
                    } else {
                        count.last += 1;
                    }
                    self.count_new_tables(None, level + 1, cur, cur_pa, next, blocks, count)?
                }
            }
        }
        Ok(())
    }

    /// Maps `[ipa, end)` into `table` at `level`, taking new tables from
    /// `pool`. `fresh`: the table is not linked yet, so it is published
    /// whole (zeroes included) before the caller links it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn map_range(
        &mut self,
        table: NodeId,
        level: u32,
        ipa: u64,
        pa: u64,
        end: u64,
        opts: &MapOptions,
        pool: &mut NewTables<H>,
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
                    self.leaf_desc(level, cur_pa, opts)?
                }
                Entry::Invalid => {
                    let node = pool.take(level + 1)?;
                    let paddr = node.dma.paddr();
                    let child = self.insert_node(node);
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
            span = extend(span, idx);
        }
        self.finish_batch(table, span, fresh)?;
        self.node_mut(table)?.live += added;
        Ok(())
    }

    /// `map_range` in a level-3 table: every descriptor of the range
    /// becomes a page (validation has excluded mapped ones; one found
    /// anyway is refused as an overlap, as at the other levels).
    pub(super) fn map_pages(
        &mut self,
        table: NodeId,
        ipa: u64,
        pa: u64,
        end: u64,
        opts: &MapOptions,
        fresh: bool,
    ) -> Result<()> {
        let (first, n) = self.pages(ipa, end);
        let g = 1u64 << self.page_shift;
        let template = self.leaf_desc(3, 0, opts)?;
        let node = self.node(table)?;
        if fresh && !self.oa_hi && first + n <= node.dma.len_u64() {
            // A new table is all invalid: only stores, one run whose
            // address field (the output address's bits [47:granule] in
            // place) advances by a page per descriptor. `pa + n * g` is
            // within the output size (validated, at most 48 bits here), so
            // the field never carries into the attributes above it.
            node.dma
                .write_run(first, n, template | (pa & self.oa_mask), g);
            let span = (n > 0).then(|| (first, first + n - 1));
            self.finish_batch(table, span, fresh)?;
            self.node_mut(table)?.live += n;
            return Ok(());
        }
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

    /// Checks that every page of `[start, end)` is mapped and, when
    /// `whole_blocks`, that no block is only partly covered
    /// ([`TableError::SplitsBlock`]).
    pub(super) fn check_mapped(
        &self,
        table: NodeId,
        level: u32,
        start: u64,
        end: u64,
        whole_blocks: bool,
    ) -> Result<()> {
        if level == 3 {
            return self.check_pages_mapped(table, start, end);
        }
        let size = 1u64 << self.geo.level_shift(level);
        let node = self.node(table)?;
        for (cur, next, idx) in self.chunks(level, start, end) {
            let raw = node.dma.read_u64(idx);
            // Above level 3, valid with bit 1 set is a table descriptor.
            if raw & 0b11 == 0b11 {
                let (t, n) = self.linked_child(node, idx, raw)?;
                if level + 1 == 3 {
                    // A whole level-3 table whose every descriptor is
                    // counted live is all pages (as in `check_pages_mapped`,
                    // without finding the table again).
                    if next - cur == size && n.live == n.dma.len_u64() {
                        continue;
                    }
                    self.check_pages_mapped(t, cur, next)?;
                } else {
                    self.check_mapped(t, level + 1, cur, next, whole_blocks)?;
                }
            } else if raw & 0b1 == 0 {
                return Err(Error::NotMapped { addr: cur });
            } else if whole_blocks && (!cur.is_multiple_of(size) || next - cur != size) {
                // A block.
                return Err(TableError::SplitsBlock { addr: cur }.into());
            }
        }
        Ok(())
    }

    /// Clears the (validated) range and unlinks tables that become empty.
    pub(super) fn unmap_range(
        &mut self,
        table: NodeId,
        level: u32,
        start: u64,
        end: u64,
    ) -> Result<()> {
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
                        span = extend(span, i);
                    }
                }
            }
        } else {
            for (cur, next, idx) in self.chunks(level, start, end) {
                match self.entry(table, level, idx)? {
                    Entry::Invalid => continue,
                    Entry::Leaf { .. } => self.changed_levels |= 1 << level,
                    Entry::Table(t) if next - cur == 1u64 << self.levels[level as usize & 3].0 => {
                        // The range covers the whole table (validated as
                        // mapped): unlink it with one store and retire its
                        // subtree as it is. Once unlinked nothing reaches its
                        // entries, and it is freed only by `release_retired`,
                        // after the caller's (non-leaf) invalidation.
                        self.write(table, idx, 0)?;
                        self.set_child(table, idx, NO_CHILD as usize)?;
                        self.retire_subtree(t, level + 1)?;
                        removed += 1;
                        span = extend(span, idx);
                        continue;
                    }
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
                        span = extend(span, idx);
                        continue;
                    }
                }
                self.write(table, idx, 0)?;
                removed += 1;
                span = extend(span, idx);
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

    /// Takes the unlinked table `t` (at `level`) and every table below it
    /// out of the slab and onto the retired list, without touching their
    /// descriptors; records the levels of the leaves they hold (a table
    /// with more valid descriptors than child tables holds leaves).
    fn retire_subtree(&mut self, t: NodeId, level: u32) -> Result<()> {
        let node = self.remove_node(t).ok_or(TableError::Corrupt)?;
        let mut tables = 0;
        if level + 1 == 3 {
            // Its children are level-3 tables (no children of their own):
            // what `remove_node` does for each, in one loop (the cursor
            // was dropped above).
            let mut pages = false;
            for &c in &node.children {
                if c == NO_CHILD {
                    continue;
                }
                let child = self
                    .nodes
                    .get_mut(c as usize)
                    .and_then(Option::take)
                    .ok_or(TableError::Corrupt)?;
                tables += 1;
                pages |= child.live > 0;
                // `reserve_slab` reserved a slot in both for every linked
                // table: no allocation.
                self.free.push(c);
                self.retired.push(child.dma);
            }
            self.linked -= tables;
            if pages {
                self.changed_levels |= 1 << 3;
            }
        } else {
            for &c in &node.children {
                if c != NO_CHILD {
                    tables += 1;
                    self.retire_subtree(c as usize, level + 1)?;
                }
            }
        }
        if node.live > tables {
            self.changed_levels |= 1 << level;
        }
        // `reserve_slab` reserved a slot for every linked table: no allocation.
        self.retired.push(node.dma);
        Ok(())
    }

    /// Rewrites the leaves of the (validated) range with `perm`.
    pub(super) fn protect_range(
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
                    self.write(table, idx, F::with_perm(raw, perm)?)?;
                    span = extend(span, idx);
                }
                Entry::Table(t) => self.protect_range(t, level + 1, cur, next, perm)?,
            }
        }
        self.publish(table, span)
    }
}
