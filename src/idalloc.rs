//! Bitmap allocators for VMIDs and ASIDs.
//!
//! An SMMU implements 8- or 16-bit VMIDs (IDR0.VMID16) and ASIDs
//! (IDR0.ASID16). [`IdAllocator`] hands them out from a bitmap of
//! `2^bits` bits, lowest free ID first. By convention VMID 0 is kept for
//! streams without stage 2, so [`IdAllocator::new`] can reserve ID 0: it is
//! then never returned by [`IdAllocator::alloc`], refused by
//! [`IdAllocator::alloc_specific`] and [`IdAllocator::free`], and does not
//! count in [`IdAllocator::in_use`] or [`IdAllocator::capacity`].
//!
//! Freeing an ID does not invalidate anything: the caller must invalidate
//! the SMMU's TLB entries tagged with it (CMD_TLBI_S12_VMALL or
//! CMD_TLBI_NH_ASID, then CMD_SYNC) before handing the ID out again.

use alloc::vec::Vec;

use crate::error::{Error, Invalid, Result};

/// Which kind of ID an allocator hands out; it only chooses the error
/// returned when the space is exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// Virtual machine identifiers ([`Error::VmidExhausted`]).
    Vmid,
    /// Address space identifiers ([`Error::AsidExhausted`]).
    Asid,
}

/// A bitmap allocator for 8- or 16-bit IDs.
///
/// Invariant: every bitmap word below `hint` is full, so a search for a free
/// ID can start at `hint` and never needs to wrap.
#[derive(Debug, Clone)]
pub struct IdAllocator {
    /// One bit per ID; set = allocated or reserved.
    words: Vec<u64>,
    /// Number of IDs the bitmap covers: `2^bits`.
    ids: usize,
    /// Whether ID 0 is reserved.
    reserve_zero: bool,
    /// Which exhaustion error to return.
    kind: IdKind,
    /// IDs allocated by callers (the reserved ID 0 excluded).
    in_use: usize,
    /// Index of the lowest word that may have a clear bit.
    hint: usize,
}

impl IdAllocator {
    /// Creates an allocator for `bits`-wide IDs (8 or 16), with ID 0 reserved
    /// when `reserve_zero` is set. `kind` chooses the exhaustion error.
    pub fn new(bits: u32, reserve_zero: bool, kind: IdKind) -> Result<Self> {
        if bits != 8 && bits != 16 {
            return Err(Error::Invalid(Invalid::IdWidth(bits)));
        }
        let ids = 1usize << bits;
        let mut words = Vec::new();
        words
            .try_reserve_exact(ids / 64)
            .map_err(|_| Error::NoMemory)?;
        words.resize(ids / 64, 0u64);
        if reserve_zero {
            words[0] |= 1;
        }
        Ok(Self {
            words,
            ids,
            reserve_zero,
            kind,
            in_use: 0,
            hint: 0,
        })
    }

    /// Allocates the lowest free ID.
    ///
    /// Fails with [`Error::VmidExhausted`] or [`Error::AsidExhausted`] (per
    /// [`IdKind`]) when every ID is taken.
    pub fn alloc(&mut self) -> Result<u16> {
        for w in self.hint..self.words.len() {
            let word = self.words[w];
            if word == u64::MAX {
                continue;
            }
            self.hint = w;
            let bit = word.trailing_ones() as usize;
            self.words[w] = word | (1 << bit);
            self.in_use += 1;
            // Cannot truncate: the bitmap covers at most 2^16 IDs.
            return Ok((w * 64 + bit) as u16);
        }
        self.hint = self.words.len();
        Err(self.exhausted())
    }

    /// Allocates exactly `id`, for a hypervisor that wants the SMMU's VMID to
    /// equal its CPU VMID.
    ///
    /// Fails with [`Error::Invalid`] when `id` is beyond the ID width
    /// ([`Invalid::IdOutOfRange`]), is the reserved ID 0
    /// ([`Invalid::IdReserved`]), or is already allocated
    /// ([`Invalid::IdInUse`]).
    pub fn alloc_specific(&mut self, id: u16) -> Result<u16> {
        let (w, mask) = self
            .locate(id)
            .ok_or(Error::Invalid(Invalid::IdOutOfRange(u32::from(id))))?;
        if id == 0 && self.reserve_zero {
            return Err(Error::Invalid(Invalid::IdReserved));
        }
        if self.words[w] & mask != 0 {
            return Err(Error::Invalid(Invalid::IdInUse(u32::from(id))));
        }
        self.words[w] |= mask;
        self.in_use += 1;
        Ok(id)
    }

    /// Frees `id`.
    ///
    /// Fails with [`Error::IdNotAllocated`] when `id` is not allocated: a
    /// double free, an ID never handed out, the reserved ID 0, or an ID
    /// beyond the width. Nothing changes on failure.
    pub fn free(&mut self, id: u16) -> Result<()> {
        if !self.is_allocated(id) {
            return Err(Error::IdNotAllocated(u32::from(id)));
        }
        let Some((w, mask)) = self.locate(id) else {
            return Err(Error::IdNotAllocated(u32::from(id)));
        };
        self.words[w] &= !mask;
        self.in_use -= 1;
        self.hint = self.hint.min(w);
        Ok(())
    }

    /// Whether `id` is currently allocated by a caller (the reserved ID 0 is
    /// not).
    pub fn is_allocated(&self, id: u16) -> bool {
        if id == 0 && self.reserve_zero {
            return false;
        }
        match self.locate(id) {
            Some((w, mask)) => self.words[w] & mask != 0,
            None => false,
        }
    }

    /// Number of IDs currently allocated (the reserved ID 0 excluded).
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Number of IDs that can be allocated at once: `2^bits`, minus one when
    /// ID 0 is reserved.
    pub fn capacity(&self) -> usize {
        self.ids - usize::from(self.reserve_zero)
    }

    /// The word index and bit mask of `id`, or `None` beyond the width.
    fn locate(&self, id: u16) -> Option<(usize, u64)> {
        let id = usize::from(id);
        (id < self.ids).then(|| (id / 64, 1u64 << (id % 64)))
    }

    fn exhausted(&self) -> Error {
        match self.kind {
            IdKind::Vmid => Error::VmidExhausted,
            IdKind::Asid => Error::AsidExhausted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn rejects_bad_width() {
        for bits in [0, 7, 9, 15, 17, 32] {
            assert_eq!(
                IdAllocator::new(bits, true, IdKind::Vmid).err(),
                Some(Error::Invalid(Invalid::IdWidth(bits)))
            );
        }
    }

    #[test]
    fn exhausts_8_bit_with_zero_reserved() {
        let mut a = IdAllocator::new(8, true, IdKind::Vmid).unwrap();
        assert_eq!(a.capacity(), 255);
        for expect in 1..=255u16 {
            assert_eq!(a.alloc(), Ok(expect));
        }
        assert_eq!(a.in_use(), 255);
        assert_eq!(a.alloc(), Err(Error::VmidExhausted));
        a.free(77).unwrap();
        assert_eq!(a.alloc(), Ok(77));
        assert_eq!(a.alloc(), Err(Error::VmidExhausted));
    }

    #[test]
    fn exhausts_16_bit() {
        let mut a = IdAllocator::new(16, true, IdKind::Asid).unwrap();
        assert_eq!(a.capacity(), 65535);
        for expect in 1..=65535u16 {
            assert_eq!(a.alloc(), Ok(expect));
        }
        assert_eq!(a.alloc(), Err(Error::AsidExhausted));
        let mut b = IdAllocator::new(16, false, IdKind::Asid).unwrap();
        assert_eq!(b.capacity(), 65536);
        for expect in 0..=65535u16 {
            assert_eq!(b.alloc(), Ok(expect));
        }
        assert_eq!(b.alloc(), Err(Error::AsidExhausted));
        assert_eq!(b.in_use(), 65536);
    }

    #[test]
    fn zero_not_reserved_is_handed_out() {
        let mut a = IdAllocator::new(8, false, IdKind::Asid).unwrap();
        assert_eq!(a.alloc(), Ok(0));
        assert!(a.is_allocated(0));
        a.free(0).unwrap();
    }

    #[test]
    fn double_free_and_reserved_free() {
        let mut a = IdAllocator::new(8, true, IdKind::Vmid).unwrap();
        assert_eq!(a.free(0), Err(Error::IdNotAllocated(0)));
        assert_eq!(a.free(5), Err(Error::IdNotAllocated(5)));
        let id = a.alloc().unwrap();
        a.free(id).unwrap();
        assert_eq!(a.free(id), Err(Error::IdNotAllocated(u32::from(id))));
        assert_eq!(a.free(256), Err(Error::IdNotAllocated(256)));
        assert_eq!(a.free(u16::MAX), Err(Error::IdNotAllocated(65535)));
        assert_eq!(a.in_use(), 0);
        assert!(!a.is_allocated(0));
    }

    #[test]
    fn alloc_specific() {
        let mut a = IdAllocator::new(8, true, IdKind::Vmid).unwrap();
        assert_eq!(a.alloc_specific(42), Ok(42));
        assert_eq!(
            a.alloc_specific(42),
            Err(Error::Invalid(Invalid::IdInUse(42)))
        );
        assert_eq!(
            a.alloc_specific(0),
            Err(Error::Invalid(Invalid::IdReserved))
        );
        assert_eq!(
            a.alloc_specific(256),
            Err(Error::Invalid(Invalid::IdOutOfRange(256)))
        );
        assert!(a.is_allocated(42));
        // The lowest-first allocator skips the ID taken explicitly.
        for expect in (1..42).chain(43..=255) {
            assert_eq!(a.alloc(), Ok(expect));
        }
        assert_eq!(a.alloc(), Err(Error::VmidExhausted));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc,
        Specific(u16),
        Free(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Alloc),
            1 => (0u16..300).prop_map(Op::Specific),
            3 => (0u16..300).prop_map(Op::Free),
        ]
    }

    proptest! {
        #[test]
        fn matches_hashset_model(reserve in any::<bool>(), ops in proptest::collection::vec(op(), 1..600)) {
            let mut a = IdAllocator::new(8, reserve, IdKind::Vmid).unwrap();
            let mut model: HashSet<u16> = HashSet::new();
            let lo = u16::from(reserve);
            for op in ops {
                match op {
                    Op::Alloc => {
                        let expect = (lo..256).find(|i| !model.contains(i));
                        match expect {
                            Some(id) => {
                                prop_assert_eq!(a.alloc(), Ok(id));
                                model.insert(id);
                            }
                            None => prop_assert_eq!(a.alloc(), Err(Error::VmidExhausted)),
                        }
                    }
                    Op::Specific(id) => {
                        let ok = id >= lo && id < 256 && !model.contains(&id);
                        let r = a.alloc_specific(id);
                        if ok {
                            prop_assert_eq!(r, Ok(id));
                            model.insert(id);
                        } else {
                            prop_assert!(matches!(r, Err(Error::Invalid(_))));
                        }
                    }
                    Op::Free(id) => {
                        let r = a.free(id);
                        if model.remove(&id) {
                            prop_assert_eq!(r, Ok(()));
                        } else {
                            prop_assert_eq!(r, Err(Error::IdNotAllocated(u32::from(id))));
                        }
                    }
                }
                prop_assert_eq!(a.in_use(), model.len());
            }
            for id in 0..300u16 {
                prop_assert_eq!(a.is_allocated(id), model.contains(&id));
            }
        }
    }
}
