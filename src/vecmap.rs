//! A map kept as a sorted `Vec` of pairs: the few ordered maps the driver
//! keeps (domains, attached StreamIDs, isolation groups) are small, and one
//! binary search over a `Vec` costs far less code than a B-tree
//! instantiated for every key and value type (about 14 KiB of the EL2
//! image's text before this module).

use alloc::vec::Vec;

/// Sorts a short slice in place (insertion sort): the few StreamIDs of an
/// isolation group. A handful of instructions instead of another
/// instantiation of core's pattern-defeating quicksort (about 4 KiB of the
/// EL2 image's text).
pub(crate) fn sort_small<T: Ord + Copy>(v: &mut [T]) {
    for i in 1..v.len() {
        let x = v[i];
        let mut j = i;
        while j > 0 && v[j - 1] > x {
            v[j] = v[j - 1];
            j -= 1;
        }
        v[j] = x;
    }
}

/// An ordered map over a sorted `Vec<(K, V)>`: lookups by binary search,
/// inserts and removes shift the tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VecMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<K: Ord, V> VecMap<K, V> {
    /// An empty map.
    pub(crate) const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Makes room for `additional` more entries, so that inserting them
    /// does not allocate: [`crate::Error::NoMemory`] when the allocator
    /// has none.
    pub(crate) fn reserve(&mut self, additional: usize) -> crate::Result<()> {
        self.entries
            .try_reserve(additional)
            .map_err(|_| crate::Error::NoMemory)
    }

    fn find(&self, key: &K) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.cmp(key))
    }

    /// Inserts or replaces; returns the old value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(core::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.find(key).ok().map(|i| &mut self.entries[i].1)
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.find(key).is_ok()
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        self.find(key).ok().map(|i| self.entries.remove(i).1)
    }

    /// The value for `key`, inserted with `make` when absent.
    pub(crate) fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(&key) {
            Ok(i) => i,
            Err(i) => {
                self.entries.insert(i, (key, make()));
                i
            }
        };
        &mut self.entries[i].1
    }

    /// Pairs in key order.
    #[allow(dead_code)] // part of the map API; not every build uses it
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    #[allow(dead_code)] // part of the map API; not every build uses it
    pub(crate) fn keys(&self) -> impl DoubleEndedIterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }

    #[allow(dead_code)] // part of the map API; not every build uses it
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_small_sorts() {
        for v in [
            vec![],
            vec![3u32],
            vec![5, 1, 4, 1, 0, 9, 2, 6],
            (0..40).rev().collect(),
        ] {
            let mut a = v.clone();
            let mut b = v;
            sort_small(&mut a);
            b.sort_unstable();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn behaves_like_an_ordered_map() {
        let mut m = VecMap::new();
        let mut b = std::collections::BTreeMap::new();
        for (i, k) in [5u32, 1, 9, 5, 3, 7, 1, 0].into_iter().enumerate() {
            assert_eq!(m.insert(k, i), b.insert(k, i));
        }
        assert!(m.iter().eq(b.iter()));
        assert_eq!(m.remove(&5), b.remove(&5));
        assert_eq!(m.remove(&5), None);
        *m.get_or_insert_with(4, || 40) += 1;
        *m.get_or_insert_with(4, || 0) += 1;
        assert_eq!(m.get(&4), Some(&42));
        assert!(m.contains_key(&9) && !m.contains_key(&8));
        assert_eq!(m.len(), 6);
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), [0, 1, 3, 4, 7, 9]);
    }
}
