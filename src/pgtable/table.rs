//! The engine's entry points: [`Table`], one translation table tree for
//! either stage, and its map / unmap / protect / query calls. Each call
//! validates the whole request before it writes anything, so a rejected
//! call leaves the tables byte-identical. Invalidation is the caller's.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;

use super::cursor::Cursor;
use super::format::Format;
use super::node::{Entry, Node, Path, ROOT};
use super::walk::{NewTableCount, NewTables, alloc_table};
use super::{Geometry, MapOptions, Perm, Translation};
use crate::error::{Error, Result};
use crate::hal::{Dma, Hal, PhysAddr};

/// A translation table tree in SMMU-visible memory, with leaves in format
/// `F` ([`super::Stage1`] or [`super::Stage2`]).
///
/// The start table (with its concatenated tables) and every next-level
/// table are owned [`Dma`] allocations. Dropping the tree frees them all:
/// before that, the caller must detach it from every STE/CD and invalidate
/// (CFGI + TLBI + SYNC), as for any memory the SMMU may walk.
///
/// Heap use: the bookkeeping grows only when a table is added (map, split);
/// edits over existing tables and every unmap make no heap allocation.
pub struct Table<H: Hal, F: Format> {
    pub(super) cfg: F::Config,
    pub(super) geo: Geometry,
    pub(super) coherent: bool,
    /// Every table linked into the tree, the start table at [`ROOT`]; a
    /// `None` slot is free (its id is in `free`).
    pub(super) nodes: Vec<Option<Node<H>>>,
    pub(super) free: Vec<u32>,
    /// Number of linked tables besides the start table.
    pub(super) linked: usize,
    /// Per level: the shift of the address bits a table at that level
    /// resolves and the mask of its index (derived from the geometry).
    pub(super) levels: [(u32, u32); 4],
    /// Tables unlinked by `unmap` that the SMMU may still hold in its walk
    /// caches until the caller's invalidation completes.
    pub(super) retired: Vec<Dma<H>>,
    /// Bit `l` set: the last `unmap`/`protect` changed a leaf at level `l`.
    pub(super) changed_levels: u8,
    /// Hot-path copies of the geometry: log2 of the granule, the start level, the output
    /// address bits a descriptor's ADDR field holds (\[47:granule\]), and
    /// whether OA\[51:48\] is used (52-bit output with 64K).
    pub(super) page_shift: u32,
    pub(super) start_level: u32,
    pub(super) oa_mask: u64,
    pub(super) oa_hi: bool,
    /// First input address beyond the tables, and first output address
    /// beyond the output size (hot-path copies of the geometry's).
    pub(super) in_limit: u64,
    pub(super) oa_limit: u64,
    /// The last options `map_with` encoded, and their leaf attributes.
    pub(super) last_attrs: (MapOptions, u64),
    /// The last level-3 table a map or unmap reached (`cursor.rs`).
    pub(super) cursor: Option<Cursor>,
    format: PhantomData<F>,
}

impl<H: Hal, F: Format> fmt::Debug for Table<H, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("cfg", &self.cfg)
            .field("root", &format_args!("{:#x}", self.root_paddr()))
            .field("tables", &self.tables())
            .field("retired", &self.retired.len())
            .finish()
    }
}

impl<H: Hal, F: Format> Table<H, F> {
    /// Allocates an empty start table for `cfg`. `coherent` says whether the
    /// SMMU's table walks snoop the CPU caches (IDR0.COHACC); when not,
    /// every write is cleaned to the point of coherency.
    ///
    /// Fails with [`Error::NoMemory`], or [`Error::Unsupported`]`(AddressSize)`
    /// when the HAL returns memory above the configured output size.
    pub fn new(cfg: F::Config, coherent: bool) -> Result<Self> {
        let geo = F::geometry(&cfg);
        let bytes = geo.root_table_bytes();
        let dma = alloc_table::<H>(&geo, bytes, bytes, coherent)?;
        dma.publish(0, dma.len_u64());
        let start = geo.start_level();
        let levels = core::array::from_fn(|l| {
            let l = l as u32;
            let bits = if l == start {
                geo.root_entries().trailing_zeros()
            } else {
                geo.stride()
            };
            // At most 16 concatenated 64K tables: 17 index bits.
            (geo.level_shift(l), (1u32 << bits) - 1)
        });
        let mut t = Self {
            cfg,
            geo,
            coherent,
            nodes: {
                let root = Node::try_new(dma, 0, start)?;
                let mut nodes = Vec::new();
                crate::fallible::try_reserve(&mut nodes, 1)?;
                nodes.push(Some(root));
                nodes
            },
            free: Vec::new(),
            linked: 0,
            levels,
            retired: Vec::new(),
            changed_levels: 0,
            page_shift: geo.granule().shift(),
            start_level: start,
            oa_mask: ((1 << 48) - 1) & !(geo.granule_size() - 1),
            oa_hi: geo.oas_bits() == 52,
            in_limit: geo.in_limit(),
            oa_limit: geo.oa_limit(),
            last_attrs: (MapOptions::normal(Perm::ReadWrite), 0),
            cursor: None,
            format: PhantomData,
        };
        t.last_attrs.1 = F::leaf_attributes(&t.last_attrs.0)?;
        Ok(t)
    }

    /// The linked tables other than the start table, in address order.
    pub(super) fn sorted_tables(&self) -> Vec<&Dma<H>> {
        let mut v: Vec<&Dma<H>> = self.nodes[1..].iter().flatten().map(|n| &n.dma).collect();
        // An insertion sort: diagnostics only, and it keeps core's quicksort
        // (about 4.6 KiB of code) out of a bare-metal image.
        for i in 1..v.len() {
            let mut j = i;
            while j > 0 && v[j - 1].paddr() > v[j].paddr() {
                v.swap(j - 1, j);
                j -= 1;
            }
        }
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

    /// Physical address of the start table (for VTTBR_EL2.BADDR, the STE's
    /// S2TTB or the CD's TTB0).
    pub fn root_paddr(&self) -> PhysAddr {
        self.nodes[ROOT].as_ref().map_or(0, |n| n.dma.paddr())
    }

    /// The configuration the tables were built from.
    pub fn config(&self) -> &F::Config {
        &self.cfg
    }

    /// The geometry the tables follow.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
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

    /// Number of tables unlinked by [`Table::unmap`] and not yet released.
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
    /// call leaves the tables unchanged. Errors: what the format cannot
    /// encode ([`crate::error::TableError::Permission`]);
    /// [`Error::ZeroLength`]; [`Error::Misaligned`] (ipa, pa or len not
    /// granule aligned); [`Error::RangeOverflow`] when the IPA range leaves
    /// the input space or the PA range the output size; [`Error::Overlap`]
    /// at the first mapped address in the range; [`Error::NoMemory`] when
    /// the tables needed cannot be allocated (they are all allocated before
    /// any write, so nothing is installed);
    /// [`Error::Unsupported`]`(AddressSize)` when the HAL returns table
    /// memory beyond the output size.
    ///
    /// Needs no invalidation: only invalid descriptors become valid.
    pub fn map(&mut self, ipa: u64, pa: u64, len: u64, perm: Perm) -> Result<()> {
        self.map_with(ipa, pa, len, &MapOptions::normal(perm))
    }

    /// Like [`Table::map`], with the memory type, execute permission
    /// and block use of `opts`.
    pub fn map_with(&mut self, ipa: u64, pa: u64, len: u64, opts: &MapOptions) -> Result<()> {
        // A combination the format cannot express is refused first (the
        // last options' attributes are kept: calls repeat them).
        let attrs = match self.last_attrs {
            (o, a) if o == *opts => a,
            _ => {
                let a = F::leaf_attributes(opts)?;
                self.last_attrs = (*opts, a);
                a
            }
        };
        let g = 1u64 << self.page_shift;
        if len == 0 {
            return Err(Error::ZeroLength);
        }
        if (ipa | pa | len) & (g - 1) != 0 {
            for addr in [ipa, pa, len] {
                if !addr.is_multiple_of(g) {
                    return Err(Error::Misaligned { addr, align: g });
                }
            }
        }
        let end = self.check_ipa_range(ipa, len)?;
        match pa.checked_add(len) {
            Some(pa_end) if pa_end <= self.oa_limit => {}
            _ => return Err(Error::RangeOverflow { addr: pa, len }),
        }
        if let Some(leaf) = self.leaf_cached(ipa, end)? {
            // Inside one existing level-3 table: validation is that its
            // descriptors are invalid, and no table is needed.
            if len == g {
                return self.map_page(leaf, ipa, pa, attrs);
            }
            if let Some(addr) = self.find_mapped_page(leaf, ipa, end)? {
                return Err(Error::Overlap { addr });
            }
            return self.map_pages(leaf, ipa, pa, end, opts, false);
        }
        self.map_from_root(ipa, pa, end, opts)
    }

    /// `map_with` (validated) by a walk from the root, allocating every
    /// table the range needs before writing. Kept out of line: the
    /// single-page path above stays small.
    #[inline(never)]
    fn map_from_root(&mut self, ipa: u64, pa: u64, end: u64, opts: &MapOptions) -> Result<()> {
        let level = self.geo.start_level();
        if let Some(addr) = self.find_mapped(ROOT, level, ipa, end)? {
            return Err(Error::Overlap { addr });
        }
        let mut count = NewTableCount::default();
        self.count_new_tables(Some(ROOT), level, ipa, pa, end, opts.blocks, &mut count)?;
        // On failure `pool` is dropped and its tables freed: nothing was
        // written yet.
        let mut pool = NewTables::<H>::alloc(&self.geo, self.coherent, count)?;
        self.reserve_slab(pool.len())?;
        self.map_range(ROOT, level, ipa, pa, end, opts, &mut pool, false)
    }

    /// Unmaps `[ipa, ipa + len)`. Every page of the range must be mapped,
    /// and the range must cover whole blocks: unmapping part of a block is
    /// refused with [`crate::error::TableError::SplitsBlock`], because
    /// replacing a live block by a table needs break-before-make with an
    /// SMMU TLB invalidation in between, which this module cannot issue
    /// (split first: [`Table::prepare_split`]). Tables that become empty
    /// are unlinked and kept until [`Table::release_retired`].
    ///
    /// Errors ([`Error::ZeroLength`], [`Error::Misaligned`],
    /// [`Error::RangeOverflow`], [`Error::NotMapped`] at the first unmapped
    /// address, `SplitsBlock`) leave the tables unchanged.
    ///
    /// The caller must then invalidate the range in the SMMU (TLBI + SYNC).
    pub fn unmap(&mut self, ipa: u64, len: u64) -> Result<()> {
        let end = self.check_ipa_only(ipa, len)?;
        self.changed_levels = 0;
        // A range covering a whole level-3 table takes the walk from the
        // root, which unlinks the table without clearing its descriptors.
        if end - ipa != 1u64 << self.levels[2].0
            && let Some(leaf) = self.leaf_cached(ipa, end)?
        {
            // Inside one level-3 table: what the walk from the root does,
            // without walking the levels above again.
            if len == 1u64 << self.page_shift {
                return self.unmap_page(leaf, ipa);
            }
            self.check_pages_mapped(leaf, ipa, end)?;
            self.unmap_range(leaf, 3, ipa, end)?;
            return self.unlink_if_empty(leaf, ipa);
        }
        self.unmap_from_root(ipa, end)
    }

    /// `unmap` (validated arguments) by a walk from the root.
    #[inline(never)]
    fn unmap_from_root(&mut self, ipa: u64, end: u64) -> Result<()> {
        let level = self.geo.start_level();
        self.check_mapped(ROOT, level, ipa, end, true)?;
        self.changed_levels = 0;
        self.unmap_range(ROOT, level, ipa, end)
    }

    /// The level of every leaf the last [`Table::unmap`] or
    /// [`Table::protect`] changed, when they all sat at one level (the
    /// TLBI TTL hint); `None` when mixed or nothing changed.
    pub fn changed_leaf_level(&self) -> Option<u32> {
        (self.changed_levels.count_ones() == 1).then(|| self.changed_levels.trailing_zeros())
    }

    /// Changes the permission of the mapped range `[ipa, ipa + len)` to
    /// `perm`. Validation and errors as for [`Table::unmap`] (a range
    /// covering part of a block is refused with `SplitsBlock`), and a
    /// permission the format cannot encode; a rejected call changes
    /// nothing.
    ///
    /// The caller must then invalidate the range in the SMMU (TLBI + SYNC);
    /// until then the SMMU may keep using the old permission.
    pub fn protect(&mut self, ipa: u64, len: u64, perm: Perm) -> Result<()> {
        F::with_perm(0, perm)?;
        let end = self.check_ipa_only(ipa, len)?;
        let level = self.geo.start_level();
        self.check_mapped(ROOT, level, ipa, end, true)?;
        self.changed_levels = 0;
        self.protect_range(ROOT, level, ipa, end, perm)
    }

    /// Checks that every page of `[ipa, ipa + len)` is mapped, allowing
    /// blocks that the range covers only partly (which
    /// [`Table::prepare_split`] can split first). Errors as for
    /// [`Table::unmap`], except the block refusal.
    pub fn check_range_mapped(&self, ipa: u64, len: u64) -> Result<()> {
        let end = self.check_ipa_only(ipa, len)?;
        self.check_mapped(ROOT, self.geo.start_level(), ipa, end, false)
    }

    /// Translates `ipa` by walking the tables as the SMMU would. `None` when
    /// nothing is mapped there or `ipa` is outside the input space.
    pub fn query(&self, ipa: u64) -> Option<Translation> {
        if ipa >= self.geo.in_limit() {
            return None;
        }
        let mut table = ROOT;
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

    /// Zero length, alignment of ipa and len, and the input range; returns
    /// the end of the range.
    pub(super) fn check_ipa_only(&self, ipa: u64, len: u64) -> Result<u64> {
        let g = 1u64 << self.page_shift;
        if len == 0 {
            return Err(Error::ZeroLength);
        }
        if (ipa | len) & (g - 1) != 0 {
            for addr in [ipa, len] {
                if !addr.is_multiple_of(g) {
                    return Err(Error::Misaligned { addr, align: g });
                }
            }
        }
        self.check_ipa_range(ipa, len)
    }

    fn check_ipa_range(&self, ipa: u64, len: u64) -> Result<u64> {
        match ipa.checked_add(len) {
            Some(end) if end <= self.in_limit => Ok(end),
            _ => Err(Error::RangeOverflow { addr: ipa, len }),
        }
    }
}
