//! Isolation groups: functions whose StreamID sets intersect, joined
//! transitively (union-find).

use alloc::vec::Vec;

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
        let mut owner: VecMap<u32, usize> = VecMap::new();
        for (i, (_, sids)) in functions.iter().enumerate() {
            for &sid in sids.iter() {
                match owner.get(&sid) {
                    Some(&j) => sets.union(i, j),
                    None => {
                        owner.insert(sid, i);
                    }
                }
            }
        }
        let mut index_of_root: VecMap<usize, usize> = VecMap::new();
        let mut groups: Vec<Group<T>> = Vec::new();
        let mut by_sid = VecMap::new();
        for (i, (member, sids)) in functions.iter().enumerate() {
            let root = sets.find(i);
            let g = *index_of_root.get_or_insert_with(root, || {
                groups.push(Group {
                    id: groups.len(),
                    members: Vec::new(),
                    sids: Vec::new(),
                });
                groups.len() - 1
            });
            groups[g].members.push(member.clone());
            for &sid in sids.iter() {
                if by_sid.insert(sid, g).is_none() {
                    groups[g].sids.push(sid);
                }
            }
        }
        for g in &mut groups {
            g.sids.sort_unstable();
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

impl DisjointSets {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n).collect(),
            size: alloc::vec![1; n],
        }
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
