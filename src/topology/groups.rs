//! Isolation groups: functions whose StreamID sets intersect, joined
//! transitively (union-find), and, with [`Groups::build_with_p2p`],
//! functions that can reach each other peer-to-peer (see [`super::acs`]).

use alloc::vec::Vec;

use super::acs::{P2pFacts, P2pPath};
use crate::vecmap::VecMap;

/// An isolation group: functions that cannot be told apart by the SMMU
/// (their StreamID sets intersect, directly or through other members), and
/// every StreamID any of them uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group<T> {
    /// The group's number (its index in [`Groups::groups`]).
    pub id: usize,
    /// The members, in the order they were given.
    pub members: Vec<T>,
    /// Every StreamID of every member, ascending.
    pub sids: Vec<u32>,
}

/// Isolation groups of a set of functions on one IOMMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups<T> {
    groups: Vec<Group<T>>,
    by_sid: VecMap<u32, usize>,
}

impl<T: Clone> Groups<T> {
    /// Groups `functions` (each a member and its StreamIDs): two functions
    /// sharing a StreamID are in the same group, and so transitively.
    /// Groups are numbered in the order of their first member; a function
    /// with no StreamID forms a group of its own with no StreamIDs.
    pub fn build<'a, I>(functions: I) -> Self
    where
        I: IntoIterator<Item = (T, &'a [u32])>,
    {
        let functions: Vec<(T, &[u32])> = functions.into_iter().collect();
        let mut sets = DisjointSets::new(functions.len());
        union_shared_sids(&mut sets, functions.iter().map(|(_, s)| *s));
        Self::assemble(functions.into_iter(), &mut sets)
    }

    /// Groups `functions` (each a member, its StreamIDs and its
    /// peer-to-peer facts) as [`Groups::build`] does, then also joins
    /// functions that can reach each other without their DMA reaching the
    /// SMMU (the rules of [`super::acs`]): non-isolated functions of one
    /// multi-function device, each function with the highest bridge above
    /// it whose path to the root is not ACS-isolated, and the downstream
    /// ports of a switch whose internal bus is not isolating. A bridge
    /// that is not itself among `functions` still joins the functions
    /// below it (into a group without it). Never panics; linear in the
    /// functions and their chains, apart from small sorted-vector maps.
    pub fn build_with_p2p<'a, I>(functions: I) -> Self
    where
        I: IntoIterator<Item = (T, &'a [u32], P2pPath<'a>)>,
    {
        let functions: Vec<(T, &[u32], P2pPath<'a>)> = functions.into_iter().collect();
        let n = functions.len();
        let mut sets = DisjointSets::new(n);
        union_shared_sids(&mut sets, functions.iter().map(|(_, s, _)| *s));

        // Every function and bridge known, by RID: members first, then
        // bridges only seen in chains (extra union-find nodes).
        let mut node: VecMap<u16, usize> = VecMap::new();
        let mut extra: Vec<P2pFacts> = Vec::new();
        for (i, (_, _, p)) in functions.iter().enumerate() {
            node.get_or_insert_with(p.function.rid.0, || i);
        }
        for (_, _, p) in &functions {
            for b in p.upstream {
                let next = n + extra.len();
                if *node.get_or_insert_with(b.rid.0, || next) == next {
                    extra.push(*b);
                    sets.push();
                }
            }
        }
        let facts = |i: usize| -> Option<&P2pFacts> {
            if i < n {
                functions.get(i).map(|(_, _, p)| &p.function)
            } else {
                extra.get(i - n)
            }
        };
        let count = n + extra.len();

        // Rule 3: a switch internal bus with a non-isolated downstream
        // port is spoiled; its downstream ports share one group.
        let mut spoiled: VecMap<u8, usize> = VecMap::new();
        for i in 0..count {
            if let Some(f) = facts(i).filter(|f| f.is_downstream_port() && !f.isolated()) {
                spoiled.get_or_insert_with(f.rid.bus(), || i);
            }
        }
        for i in 0..count {
            if let Some(f) = facts(i).filter(|f| f.is_downstream_port())
                && let Some(&j) = spoiled.get(&f.rid.bus())
            {
                sets.union(i, j);
            }
        }

        // Rule 1: non-isolated functions of one multi-function device.
        let mut slot: VecMap<u16, usize> = VecMap::new();
        for i in 0..count {
            if let Some(f) = facts(i).filter(|f| f.is_multifunction() && !f.isolated()) {
                slot.get_or_insert_with(f.rid.0 >> super::FUNCTION_BITS, || i);
            }
        }
        for i in 0..count {
            if let Some(f) = facts(i).filter(|f| !f.isolated())
                && let Some(&j) = slot.get(&(f.rid.0 >> super::FUNCTION_BITS))
            {
                sets.union(i, j);
            }
        }

        // Rule 2: each function joins the highest non-isolating bridge
        // above it.
        for (i, (_, _, p)) in functions.iter().enumerate() {
            let top = p.p2p_top(|bus| spoiled.contains_key(&bus));
            if let Some(&j) = top.and_then(|b| node.get(&b.rid.0)) {
                sets.union(i, j);
            }
        }
        Self::assemble(functions.into_iter().map(|(t, s, _)| (t, s)), &mut sets)
    }

    /// The groups of `functions` (in order; node `i` of `sets` is
    /// function `i`).
    fn assemble<'a>(
        functions: impl Iterator<Item = (T, &'a [u32])>,
        sets: &mut DisjointSets,
    ) -> Self {
        let mut index_of_root: VecMap<usize, usize> = VecMap::new();
        let mut groups: Vec<Group<T>> = Vec::new();
        let mut by_sid = VecMap::new();
        for (i, (member, sids)) in functions.enumerate() {
            let root = sets.find(i);
            let g = *index_of_root.get_or_insert_with(root, || {
                groups.push(Group {
                    id: groups.len(),
                    members: Vec::new(),
                    sids: Vec::new(),
                });
                groups.len() - 1
            });
            if let Some(group) = groups.get_mut(g) {
                group.members.push(member);
                for &sid in sids {
                    if by_sid.insert(sid, g).is_none() {
                        group.sids.push(sid);
                    }
                }
            }
        }
        for g in &mut groups {
            crate::vecmap::sort_small(&mut g.sids);
        }
        Self { groups, by_sid }
    }

    /// Every group, in order of number.
    pub fn groups(&self) -> &[Group<T>] {
        &self.groups
    }

    /// The group using `sid`.
    pub fn group_of_sid(&self, sid: u32) -> Option<&Group<T>> {
        self.by_sid.get(&sid).map(|&g| &self.groups[g])
    }
}

impl<T: Clone + PartialEq> Groups<T> {
    /// The group `member` belongs to.
    pub fn group_of(&self, member: &T) -> Option<&Group<T>> {
        self.groups.iter().find(|g| g.members.contains(member))
    }
}

/// Union-find over `0..n` with path halving and union by size.
#[derive(Debug)]
struct DisjointSets {
    parent: Vec<usize>,
    size: Vec<usize>,
}

/// Joins functions (by index) that share a StreamID.
fn union_shared_sids<'a>(sets: &mut DisjointSets, sids: impl Iterator<Item = &'a [u32]>) {
    let mut owner: VecMap<u32, usize> = VecMap::new();
    for (i, sids) in sids.enumerate() {
        for &sid in sids {
            match owner.get(&sid) {
                Some(&j) => sets.union(i, j),
                None => {
                    owner.insert(sid, i);
                }
            }
        }
    }
}

impl DisjointSets {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n).collect(),
            size: alloc::vec![1; n],
        }
    }

    /// Adds a node of its own.
    fn push(&mut self) {
        self.parent.push(self.parent.len());
        self.size.push(1);
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a] < self.size[b] {
            core::mem::swap(&mut a, &mut b);
        }
        self.parent[b] = a;
        self.size[a] += self.size[b];
    }
}
