//! The engine's bookkeeping: the slab of tables (each with its count of
//! valid descriptors and, above level 3, the slab index of each next-level
//! table), and descriptor access and encoding shared by both stages.

use alloc::boxed::Box;
use alloc::vec::Vec;

use tock_registers::LocalRegisterCopy;

use super::format::{DESC, Format};
use super::{MapOptions, Perm, Table};
use crate::error::{Result, TableError};
use crate::hal::{Dma, Hal, PhysAddr};

/// A decoded descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Entry<T = NodeId> {
    Invalid,
    /// A table descriptor: the address it holds (`decode`), or the node of
    /// the table at that address (`entry`).
    Table(T),
    Leaf {
        pa: PhysAddr,
        perm: Option<Perm>,
        raw: u64,
    },
}

/// Index of a table in [`Table`]'s node slab; the start table is [`ROOT`].
pub(super) type NodeId = usize;

/// The start table's node.
pub(super) const ROOT: NodeId = 0;

/// A `Node::children` slot whose descriptor is not a table descriptor.
pub(super) const NO_CHILD: u32 = u32::MAX;

/// One translation table, its count of valid descriptors, and (above the
/// last level) the node of each table descriptor, so that a walk finds the
/// next table in O(1) instead of by a search on its physical address.
///
/// One cache line each: a single-page map or unmap reads a level-3 table's
/// node twice (its `link` in the descent, then `dma` and `live`), and with
/// 64-byte aligned 64-byte entries that is one line, never two, whatever
/// the slab's address (the fields are laid out in this order, `children`,
/// which level-3 tables never read, last).
#[repr(C, align(64))]
pub(super) struct Node<H: Hal> {
    pub(super) dma: Dma<H>,
    pub(super) live: usize,
    /// The table descriptor that links this table into its parent
    /// (`table_desc` of its address; set by `insert_node`), which a descent
    /// compares with the descriptor it read.
    pub(super) link: u64,
    /// One slot per descriptor for tables above level 3 (`NO_CHILD` unless
    /// the descriptor is a table descriptor); empty at level 3.
    pub(super) children: Box<[u32]>,
}

impl<H: Hal> Node<H> {
    /// The node of table `dma` at `level`: above level 3 with its
    /// `children` slots, allocated here (fallibly: without memory,
    /// [`crate::Error::NoMemory`] and `dma` is dropped).
    pub(super) fn try_new(dma: Dma<H>, live: usize, level: u32) -> Result<Self> {
        let children = if level < 3 {
            children_slots(dma.len_u64())?
        } else {
            Box::default()
        };
        Ok(Node {
            dma,
            live,
            link: 0,
            children,
        })
    }

    /// The node of table `dma` with `children` allocated beforehand
    /// (empty at level 3).
    pub(super) fn with_children(dma: Dma<H>, live: usize, children: Box<[u32]>) -> Self {
        Node {
            dma,
            live,
            link: 0,
            children,
        }
    }
}

/// `n` child slots, all `NO_CHILD`, or [`crate::Error::NoMemory`].
pub(super) fn children_slots(n: usize) -> Result<Box<[u32]>> {
    let mut v = Vec::new();
    crate::fallible::try_reserve_exact(&mut v, n)?;
    // Within the capacity just reserved: neither call reallocates.
    v.resize(n, NO_CHILD);
    Ok(v.into_boxed_slice())
}

/// The table descriptors from the start table down to a level-3 table:
/// (table, index) per level above 3.
#[derive(Default, Clone, Copy)]
pub(super) struct Path {
    steps: [(NodeId, usize); 3],
    len: usize,
}

/// Where a walk records the table descriptors it passes: a [`Path`], or
/// `()` when the caller does not need them (no cost).
pub(super) trait Steps {
    fn push(&mut self, table: NodeId, idx: usize);
}

impl Steps for () {
    #[inline(always)]
    fn push(&mut self, _table: NodeId, _idx: usize) {}
}

impl Steps for Path {
    #[inline]
    fn push(&mut self, table: NodeId, idx: usize) {
        // At most three steps (levels 0 to 2) by construction.
        if let Some(step) = self.steps.get_mut(self.len) {
            *step = (table, idx);
            self.len += 1;
        }
    }
}

impl Path {
    pub(super) fn steps(&self) -> &[(NodeId, usize)] {
        &self.steps[..self.len]
    }
}

impl<H: Hal, F: Format> Table<H, F> {
    // ---- the slab ----

    pub(super) fn node(&self, id: NodeId) -> Result<&Node<H>> {
        Ok(self
            .nodes
            .get(id)
            .and_then(Option::as_ref)
            .ok_or(TableError::Corrupt)?)
    }

    pub(super) fn node_mut(&mut self, id: NodeId) -> Result<&mut Node<H>> {
        Ok(self
            .nodes
            .get_mut(id)
            .and_then(Option::as_mut)
            .ok_or(TableError::Corrupt)?)
    }

    /// Reserves slab room for `n` more tables, and what their later unlink
    /// needs (a slot in `free` and in `retired` each), so that the next `n`
    /// [`Table::insert_node`] calls and every later `unmap` allocate
    /// nothing. On [`crate::Error::NoMemory`] nothing changed (capacity
    /// only).
    pub(super) fn reserve_slab(&mut self, n: usize) -> Result<()> {
        // Capacity for `total` elements, reserved only where it is not
        // there yet (a reservation with the room already there cannot fail).
        fn room<T>(v: &mut Vec<T>, total: usize) -> Result<()> {
            if v.capacity() < total {
                let additional = total - v.len();
                crate::fallible::try_reserve(v, additional)?;
            }
            Ok(())
        }
        let reuse = n.min(self.free.len());
        let slots = self.nodes.len() + (n - reuse);
        room(&mut self.nodes, slots)?;
        // Every slab slot but the root's may be on the free list, and every
        // linked table may join those already retired.
        room(&mut self.free, slots)?;
        room(&mut self.retired, self.linked + n)?;
        Ok(())
    }

    /// Links `node` into the slab (not yet into the tree: the caller writes
    /// the descriptor and records it with `set_child`).
    ///
    /// Every caller reserved room first ([`Table::reserve_slab`], with the
    /// call's tables, before the call changed anything), so this never
    /// allocates: the `free` and `retired` slots a later unlink of this
    /// table needs are part of that reservation.
    pub(super) fn insert_node(&mut self, mut node: Node<H>) -> NodeId {
        node.link = self.table_desc(node.dma.paddr());
        self.linked += 1;
        match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = Some(node);
                id as usize
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        }
    }

    /// Takes table `id` out of the slab (its descriptor already cleared).
    pub(super) fn remove_node(&mut self, id: NodeId) -> Option<Node<H>> {
        let node = self.nodes.get_mut(id)?.take()?;
        // The cursor may name this table or one below it.
        self.cursor = None;
        self.linked -= 1;
        self.free.push(id as u32);
        Some(node)
    }

    /// Records that descriptor `idx` of `table` points at table `child`
    /// (`NO_CHILD`: at no table).
    pub(super) fn set_child(&mut self, table: NodeId, idx: usize, child: NodeId) -> Result<()> {
        let slot = self
            .node_mut(table)?
            .children
            .get_mut(idx)
            .ok_or(TableError::Corrupt)?;
        *slot = if child == NO_CHILD as usize {
            NO_CHILD
        } else {
            child as u32
        };
        Ok(())
    }

    /// The node of the table that descriptor `idx` of `table` points at,
    /// checked against the address in the descriptor.
    pub(super) fn child(&self, table: NodeId, idx: usize, paddr: PhysAddr) -> Result<NodeId> {
        self.child_of(self.node(table)?, idx, paddr)
    }

    /// `child`, for the node of `table`.
    pub(super) fn child_of(&self, node: &Node<H>, idx: usize, paddr: PhysAddr) -> Result<NodeId> {
        let c = *node.children.get(idx).ok_or(TableError::Corrupt)?;
        match self.nodes.get(c as usize).and_then(Option::as_ref) {
            Some(n) if c != NO_CHILD && n.dma.paddr() == paddr => Ok(c as usize),
            _ => Err(TableError::Corrupt.into()),
        }
    }

    /// The bits of a table descriptor that `table_desc` writes: VALID,
    /// TYPE and the address (ADDR, and OA_HI with a 52-bit output).
    #[inline(always)]
    pub(super) fn link_mask(&self) -> u64 {
        self.oa_mask | if self.oa_hi { 0xF003 } else { 0b11 }
    }

    /// The node of the table that descriptor `idx` of `node` (`raw`, a
    /// table descriptor) links, checked against `raw`'s type and address
    /// bits (the child's recorded `link`).
    #[inline(always)]
    pub(super) fn linked_child(
        &self,
        node: &Node<H>,
        idx: usize,
        raw: u64,
    ) -> Result<(NodeId, &Node<H>)> {
        let c = *node.children.get(idx).ok_or(TableError::Corrupt)? as usize;
        match self.nodes.get(c).and_then(Option::as_ref) {
            Some(n) if raw & self.link_mask() == n.link => Ok((c, n)),
            _ => Err(TableError::Corrupt.into()),
        }
    }

    // ---- descriptor access ----

    /// Index of `ipa`'s descriptor in its table at `level`.
    pub(super) fn index(&self, level: u32, ipa: u64) -> usize {
        let (shift, mask) = self.levels[level as usize & 3];
        ((ipa >> shift) & u64::from(mask)) as usize
    }

    pub(super) fn entry(&self, table: NodeId, level: u32, idx: usize) -> Result<Entry> {
        let raw = self.node(table)?.dma.read_u64(idx);
        Ok(match self.decode(level, raw) {
            Entry::Invalid => Entry::Invalid,
            Entry::Table(paddr) => Entry::Table(self.child(table, idx, paddr)?),
            Entry::Leaf { pa, perm, raw } => Entry::Leaf { pa, perm, raw },
        })
    }

    pub(super) fn write(&self, table: NodeId, idx: usize, value: u64) -> Result<()> {
        self.node(table)?.dma.write_u64(idx, value);
        Ok(())
    }

    pub(super) fn publish(&self, table: NodeId, span: Option<(usize, usize)>) -> Result<()> {
        if let Some((first, last)) = span {
            self.node(table)?.dma.publish(first, last - first + 1);
        }
        Ok(())
    }

    // ---- descriptor encoding ----

    /// The address field of a descriptor pointing at `addr`.
    #[inline]
    pub(super) fn encode_oa(
        &self,
        addr: PhysAddr,
    ) -> tock_registers::fields::FieldValue<u64, DESC::Register> {
        let mut f = DESC::ADDR.val((addr & self.oa_mask) >> 12);
        if self.oa_hi {
            f += DESC::OA_HI.val(addr >> 48);
        }
        f
    }

    #[inline]
    pub(super) fn decode_oa(&self, d: &LocalRegisterCopy<u64, DESC::Register>) -> PhysAddr {
        let mut addr = (d.read(DESC::ADDR) << 12) & self.oa_mask;
        if self.oa_hi {
            addr |= d.read(DESC::OA_HI) << 48;
        }
        addr
    }

    /// A leaf at `level` mapping `pa` with the attributes of `opts`.
    pub(super) fn leaf_desc(&self, level: u32, pa: PhysAddr, opts: &MapOptions) -> Result<u64> {
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

    pub(super) fn table_desc(&self, next: PhysAddr) -> u64 {
        let mut d = LocalRegisterCopy::<u64, DESC::Register>::new(0);
        d.write(DESC::VALID::SET + DESC::TYPE::TableOrPage);
        d.modify(self.encode_oa(next));
        d.get()
    }

    pub(super) fn decode(&self, level: u32, raw: u64) -> Entry<PhysAddr> {
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
    pub(super) fn leaf_fits(&self, level: u32, ipa: u64, pa: u64, next: u64, blocks: bool) -> bool {
        let size = 1u64 << self.geo.level_shift(level);
        (level == 3 || (blocks && self.geo.block_at(level)))
            && ipa.is_multiple_of(size)
            && pa.is_multiple_of(size)
            && next - ipa == size
    }
}
