//! The table engine: walk, map, unmap, protect, split and free over
//! VMSAv8-64 translation tables, generic over the leaf format
//! ([`Format`]). Every descriptor is one 64-bit store, published
//! ([`Dma::publish`]) after each batch; a new table is filled and published
//! whole before the descriptor linking it is written. Invalidation is the
//! caller's (see [`Table::unmap`]).
//!
//! Derived from the stage-2 engine of `src/stage2.rs` (same algorithms and
//! validation order), so both stages behave alike until that engine is
//! moved here too.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;

use tock_registers::LocalRegisterCopy;

use super::{DESC, Format, Geometry};
use crate::error::{Error, Result, Unsupported};
use crate::hal::{Dma, Hal, PhysAddr};
use crate::stage2::{MapOptions, Perm, Translation};

/// A block mapping that a range covers only partly: where it is, and what
/// it maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialBlock {
    table: PhysAddr,
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
/// [`Table::prepare_split`] and not yet linked.
#[derive(Debug)]
pub struct SplitTable<H: Hal> {
    dma: Dma<H>,
    entries: usize,
}

/// A decoded descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Invalid,
    Table(PhysAddr),
    Leaf {
        pa: PhysAddr,
        perm: Option<Perm>,
        raw: u64,
    },
}

/// One translation table and its count of valid descriptors.
struct Node<H: Hal> {
    dma: Dma<H>,
    live: usize,
}

/// A translation table tree in SMMU-visible memory, with leaves in format
/// `F`.
///
/// The start table and every next-level table are owned [`Dma`]
/// allocations. Dropping the tree frees them all: before that, the caller
/// must detach it from every STE/CD and invalidate (CFGI + TLBI + SYNC), as
/// for any memory the SMMU may walk.
pub struct Table<H: Hal, F: Format> {
    geo: Geometry,
    coherent: bool,
    root: Node<H>,
    /// Next-level tables linked into the tree, by physical address.
    tables: BTreeMap<PhysAddr, Node<H>>,
    /// Tables unlinked by `unmap` that the SMMU may still hold in its walk
    /// caches until the caller's invalidation completes.
    retired: Vec<Dma<H>>,
    format: PhantomData<F>,
}

impl<H: Hal, F: Format> fmt::Debug for Table<H, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("geo", &self.geo)
            .field("root", &format_args!("{:#x}", self.root.dma.paddr()))
            .field("tables", &self.tables())
            .field("retired", &self.retired.len())
            .finish()
    }
}

impl<H: Hal, F: Format> Table<H, F> {
    /// Allocates an empty start table for `geo`. `coherent` says whether the
    /// SMMU's table walks snoop the CPU caches (IDR0.COHACC); when not,
    /// every write is cleaned to the point of coherency.
    ///
    /// Fails with [`Error::NoMemory`], or [`Error::Unsupported`]`(AddressSize)`
    /// when the HAL returns memory above the configured output size.
    pub fn new(geo: Geometry, coherent: bool) -> Result<Self> {
        let bytes = geo.root_table_bytes();
        let dma = alloc_table::<H>(&geo, bytes, bytes, coherent)?;
        dma.publish(0, dma.len_u64());
        Ok(Self {
            geo,
            coherent,
            root: Node { dma, live: 0 },
            tables: BTreeMap::new(),
            retired: Vec::new(),
            format: PhantomData,
        })
    }

    /// Every word of table memory (start table, then the other tables in
    /// address order): tests use it to prove a rejected call changed nothing.
    pub fn snapshot(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for dma in core::iter::once(&self.root.dma).chain(self.tables.values().map(|n| &n.dma)) {
            out.extend((0..dma.len_u64()).map(|i| dma.read_u64(i)));
        }
        out
    }

    /// Physical address of the start table (for VTTBR_EL2.BADDR or the
    /// STE's S2TTB).
    pub fn root_paddr(&self) -> PhysAddr {
        self.root.dma.paddr()
    }

    /// The geometry the tables follow.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// Bytes of table memory linked into the tree (start table included,
    /// retired tables not).
    pub fn table_bytes(&self) -> usize {
        self.root.dma.size() + self.tables.values().map(|n| n.dma.size()).sum::<usize>()
    }

    /// Number of tables linked into the tree, start table included (a
    /// concatenated start table counts once).
    pub fn tables(&self) -> usize {
        1 + self.tables.len()
    }

    /// Number of tables unlinked by [`Table::unmap`] and not yet
    /// released.
    pub fn retired_tables(&self) -> usize {
        self.retired.len()
    }

    /// Frees the tables that [`Table::unmap`] unlinked because they
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

    /// Like [`Table::map`], with the memory type, execute permission
    /// and block use of `opts`.
    pub fn map_with(&mut self, ipa: u64, pa: u64, len: u64, opts: &MapOptions) -> Result<()> {
        // A combination the format cannot express is refused first.
        F::leaf_attributes(opts)?;
        let g = self.geo.granule_size();
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
            Some(pa_end) if pa_end <= self.geo.oa_limit() => {}
            _ => return Err(Error::RangeOverflow { addr: pa, len }),
        }
        let root = self.root_paddr();
        let level = self.geo.start_level();
        if let Some(addr) = self.find_mapped(root, level, ipa, end)? {
            return Err(Error::Overlap { addr });
        }
        let needed = self.count_new_tables(Some(root), level, ipa, pa, end, opts.blocks)?;
        let mut pool = Vec::with_capacity(needed);
        for _ in 0..needed {
            // On failure `pool` is dropped and its tables freed: nothing was
            // written yet.
            let g = g as usize;
            pool.push(alloc_table::<H>(&self.geo, g, g, self.coherent)?);
        }
        self.map_range(root, level, ipa, pa, end, opts, &mut pool, false)
    }

    /// Unmaps `[ipa, ipa + len)`. Every page of the range must be mapped,
    /// and the range must cover whole blocks: unmapping part of a block is
    /// refused with `InvalidArgument("unmap splits a block mapping")`,
    /// because replacing a live block by a table needs break-before-make
    /// with an SMMU TLB invalidation in between, which this module cannot
    /// issue. Tables that become empty are unlinked and kept until
    /// [`Table::release_retired`].
    ///
    /// Errors ([`Error::ZeroLength`], [`Error::Misaligned`],
    /// [`Error::RangeOverflow`], [`Error::NotMapped`] at the first unmapped
    /// address, [`Error::InvalidArgument`]) leave the tables unchanged.
    ///
    /// The caller must then invalidate the range in the SMMU (TLBI + SYNC).
    pub fn unmap(&mut self, ipa: u64, len: u64) -> Result<()> {
        let end = self.check_ipa_only(ipa, len)?;
        let root = self.root_paddr();
        let level = self.geo.start_level();
        self.check_mapped(root, level, ipa, end, Some("unmap splits a block mapping"))?;
        self.unmap_range(root, level, ipa, end)
    }

    /// Changes the permission of the mapped range `[ipa, ipa + len)` to
    /// `perm`. Validation and errors as for [`Table::unmap`] (a range
    /// covering part of a block is refused with
    /// `InvalidArgument("protect splits a block mapping")`); a rejected call
    /// changes nothing.
    ///
    /// The caller must then invalidate the range in the SMMU (TLBI + SYNC);
    /// until then the SMMU may keep using the old permission.
    pub fn protect(&mut self, ipa: u64, len: u64, perm: Perm) -> Result<()> {
        F::with_perm(0, perm)?;
        let end = self.check_ipa_only(ipa, len)?;
        let root = self.root_paddr();
        let level = self.geo.start_level();
        self.check_mapped(
            root,
            level,
            ipa,
            end,
            Some("protect splits a block mapping"),
        )?;
        self.protect_range(root, level, ipa, end, perm)
    }

    /// Checks that every page of `[ipa, ipa + len)` is mapped, allowing
    /// blocks that the range covers only partly (which
    /// [`Table::prepare_split`] can split first). Errors as for
    /// [`Table::unmap`], except the block refusal.
    pub fn check_range_mapped(&self, ipa: u64, len: u64) -> Result<()> {
        let end = self.check_ipa_only(ipa, len)?;
        self.check_mapped(self.root_paddr(), self.geo.start_level(), ipa, end, None)
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
        let mut table = self.root_paddr();
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

    /// Builds (but does not link) the next-level table equivalent to block
    /// `b`: every entry a leaf with the block's attributes, covering the
    /// block's output range in order. The table is published whole. On
    /// [`Error::NoMemory`] nothing changed.
    pub fn prepare_split(&self, b: &PartialBlock) -> Result<SplitTable<H>> {
        let g = self.geo.granule_size() as usize;
        let dma = alloc_table::<H>(&self.geo, g, g, self.coherent)?;
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
        Ok(SplitTable { dma, entries })
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
        let child = split.dma.paddr();
        self.tables.insert(
            child,
            Node {
                dma: split.dma,
                live: split.entries,
            },
        );
        self.write(b.table, b.idx, self.table_desc(child))?;
        self.publish(b.table, Some((b.idx, b.idx)))
    }

    /// Translates `ipa` by walking the tables as the SMMU would. `None` when
    /// nothing is mapped there or `ipa` is outside the IPA space.
    pub fn query(&self, ipa: u64) -> Option<Translation> {
        if ipa >= self.geo.in_limit() {
            return None;
        }
        let mut table = self.root_paddr();
        for level in self.geo.start_level()..=3 {
            match self.entry(table, level, self.index(level, ipa)).ok()? {
                Entry::Invalid => return None,
                Entry::Table(next) => table = next,
                Entry::Leaf { pa, perm, raw } => {
                    let size = 1u64 << self.geo.level_shift(level);
                    return Some(Translation {
                        pa: pa + (ipa & (size - 1)),
                        perm: perm?,
                        size,
                        memory: F::memory(raw),
                        execute: F::execute(raw),
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
        let g = self.geo.granule_size();
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
            Some(end) if end <= self.geo.in_limit() => Ok(end),
            _ => Err(Error::RangeOverflow { addr: ipa, len }),
        }
    }

    // ---- table access ----

    fn node(&self, paddr: PhysAddr) -> Result<&Node<H>> {
        if paddr == self.root.dma.paddr() {
            return Ok(&self.root);
        }
        self.tables.get(&paddr).ok_or(Error::InvalidArgument(
            "stage-2 descriptor points outside this table tree",
        ))
    }

    fn node_mut(&mut self, paddr: PhysAddr) -> Result<&mut Node<H>> {
        if paddr == self.root.dma.paddr() {
            return Ok(&mut self.root);
        }
        self.tables.get_mut(&paddr).ok_or(Error::InvalidArgument(
            "stage-2 descriptor points outside this table tree",
        ))
    }

    /// Index of `ipa`'s descriptor in its table at `level`.
    fn index(&self, level: u32, ipa: u64) -> usize {
        let bits = if level == self.geo.start_level() {
            self.geo.root_entries().trailing_zeros()
        } else {
            self.geo.stride()
        };
        ((ipa >> self.geo.level_shift(level)) & ((1 << bits) - 1)) as usize
    }

    fn entry(&self, table: PhysAddr, level: u32, idx: usize) -> Result<Entry> {
        let raw = self.node(table)?.dma.read_u64(idx);
        Ok(self.decode(level, raw))
    }

    fn write(&self, table: PhysAddr, idx: usize, value: u64) -> Result<()> {
        self.node(table)?.dma.write_u64(idx, value);
        Ok(())
    }

    fn publish(&self, table: PhysAddr, span: Option<(usize, usize)>) -> Result<()> {
        if let Some((first, last)) = span {
            self.node(table)?.dma.publish(first, last - first + 1);
        }
        Ok(())
    }

    // ---- descriptor encoding ----

    /// The address field of a descriptor pointing at `addr`.
    fn encode_oa(&self, addr: PhysAddr) -> tock_registers::fields::FieldValue<u64, DESC::Register> {
        let low = addr & ((1 << 48) - 1) & !(self.geo.granule_size() - 1);
        let mut f = DESC::ADDR.val(low >> 12);
        if self.geo.oas_bits() == 52 {
            f += DESC::OA_HI.val(addr >> 48);
        }
        f
    }

    fn decode_oa(&self, d: &LocalRegisterCopy<u64, DESC::Register>) -> PhysAddr {
        let mut addr = (d.read(DESC::ADDR) << 12) & !(self.geo.granule_size() - 1);
        if self.geo.oas_bits() == 52 {
            addr |= d.read(DESC::OA_HI) << 48;
        }
        addr
    }

    fn leaf_desc(&self, level: u32, pa: PhysAddr, opts: &MapOptions) -> Result<u64> {
        let kind = if level == 3 {
            DESC::TYPE::TableOrPage
        } else {
            DESC::TYPE::Block
        };
        let mut d = LocalRegisterCopy::<u64, DESC::Register>::new(F::leaf_attributes(opts)?);
        d.modify(DESC::VALID::SET + kind);
        d.modify(self.encode_oa(pa));
        Ok(d.get())
    }

    fn table_desc(&self, next: PhysAddr) -> u64 {
        let mut d = LocalRegisterCopy::<u64, DESC::Register>::new(0);
        d.write(DESC::VALID::SET + DESC::TYPE::TableOrPage);
        d.modify(self.encode_oa(next));
        d.get()
    }

    fn decode(&self, level: u32, raw: u64) -> Entry {
        let d = LocalRegisterCopy::<u64, DESC::Register>::new(raw);
        if !d.is_set(DESC::VALID) {
            return Entry::Invalid;
        }
        let table_or_page = d.is_set(DESC::TYPE);
        match (level, table_or_page) {
            (3, false) => Entry::Invalid, // reserved encoding: faults like an invalid entry
            (0..=2, true) => Entry::Table(self.decode_oa(&d)),
            _ => Entry::Leaf {
                pa: self.decode_oa(&d),
                perm: F::perm(raw),
                raw,
            },
        }
    }

    /// Whether `[ipa, next)` at `level` can be one leaf mapping `pa`
    /// (`blocks`: block descriptors allowed).
    fn leaf_fits(&self, level: u32, ipa: u64, pa: u64, next: u64, blocks: bool) -> bool {
        let size = 1u64 << self.geo.level_shift(level);
        (level == 3 || (blocks && self.geo.block_at(level)))
            && ipa.is_multiple_of(size)
            && pa.is_multiple_of(size)
            && next - ipa == size
    }

    // ---- walks ----
    //
    // Each walk visits the descriptors of one table covering `[start, end)`
    // in address order; `chunks` yields `(cur, next, idx)` per descriptor.

    fn chunks(
        &self,
        level: u32,
        start: u64,
        end: u64,
    ) -> impl Iterator<Item = (u64, u64, usize)> + '_ {
        let size = 1u64 << self.geo.level_shift(level);
        let mut cur = start;
        core::iter::from_fn(move || {
            if cur >= end {
                return None;
            }
            let next = ((cur & !(size - 1)) + size).min(end);
            let item = (cur, next, self.index(level, cur));
            cur = next;
            Some(item)
        })
    }

    /// The first mapped address in `[start, end)`, if any.
    fn find_mapped(
        &self,
        table: PhysAddr,
        level: u32,
        start: u64,
        end: u64,
    ) -> Result<Option<u64>> {
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
        table: Option<PhysAddr>,
        level: u32,
        ipa: u64,
        pa: u64,
        end: u64,
        blocks: bool,
    ) -> Result<usize> {
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
        table: PhysAddr,
        level: u32,
        ipa: u64,
        pa: u64,
        end: u64,
        opts: &MapOptions,
        pool: &mut Vec<Dma<H>>,
        fresh: bool,
    ) -> Result<()> {
        let mut span: Option<(usize, usize)> = None;
        let mut added = 0;
        let chunks: Vec<_> = self.chunks(level, ipa, end).collect();
        for (cur, next, idx) in chunks {
            let cur_pa = pa + (cur - ipa);
            let desc = match self.entry(table, level, idx)? {
                Entry::Invalid if self.leaf_fits(level, cur, cur_pa, next, opts.blocks) => {
                    self.leaf_desc(level, cur_pa, opts)?
                }
                Entry::Invalid => {
                    let dma = pool.pop().ok_or(Error::NoMemory)?;
                    let child = dma.paddr();
                    self.tables.insert(child, Node { dma, live: 0 });
                    self.map_range(child, level + 1, cur, cur_pa, next, opts, pool, true)?;
                    self.table_desc(child)
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
        if fresh {
            let n = self.node(table)?;
            n.dma.publish(0, n.dma.len_u64());
        } else {
            self.publish(table, span)?;
        }
        self.node_mut(table)?.live += added;
        Ok(())
    }

    /// Checks that every page of `[start, end)` is mapped and, when `split`
    /// is the error text for it, that no block is only partly covered.
    fn check_mapped(
        &self,
        table: PhysAddr,
        level: u32,
        start: u64,
        end: u64,
        split: Option<&'static str>,
    ) -> Result<()> {
        let size = 1u64 << self.geo.level_shift(level);
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
    fn unmap_range(&mut self, table: PhysAddr, level: u32, start: u64, end: u64) -> Result<()> {
        let mut span: Option<(usize, usize)> = None;
        let mut removed = 0;
        let chunks: Vec<_> = self.chunks(level, start, end).collect();
        for (cur, next, idx) in chunks {
            match self.entry(table, level, idx)? {
                Entry::Invalid => continue,
                Entry::Leaf { .. } => {}
                Entry::Table(t) => {
                    self.unmap_range(t, level + 1, cur, next)?;
                    if self.node(t)?.live != 0 {
                        continue;
                    }
                    // Unlink first; the memory is freed only by
                    // `release_retired`, after the caller's invalidation.
                    self.write(table, idx, 0)?;
                    if let Some(node) = self.tables.remove(&t) {
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
        self.publish(table, span)?;
        let node = self.node_mut(table)?;
        node.live = node.live.saturating_sub(removed);
        Ok(())
    }

    /// Rewrites the leaves of the (validated) range with `perm`.
    fn protect_range(
        &mut self,
        table: PhysAddr,
        level: u32,
        start: u64,
        end: u64,
        perm: Perm,
    ) -> Result<()> {
        let mut span: Option<(usize, usize)> = None;
        let chunks: Vec<_> = self.chunks(level, start, end).collect();
        for (cur, next, idx) in chunks {
            match self.entry(table, level, idx)? {
                Entry::Invalid => {}
                Entry::Leaf { raw, .. } => {
                    self.write(table, idx, F::with_perm(raw, perm)?)?;
                    span = Some(span.map_or((idx, idx), |(f, _)| (f, idx)));
                }
                Entry::Table(t) => self.protect_range(t, level + 1, cur, next, perm)?,
            }
        }
        self.publish(table, span)
    }
}

/// Allocates one zeroed table and checks that the SMMU can reach it.
fn alloc_table<H: Hal>(
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
