//! Circular queues in memory shared with the SMMU (command, event queues).
//!
//! A queue of `2^log2` entries is indexed by a producer and a consumer value
//! of `log2 + 1` bits: the low `log2` bits are the slot, the next bit is the
//! wrap flag, which toggles each time an index passes the end. Equal values
//! mean empty; equal slots with different wrap flags mean full. All the
//! arithmetic lives in [`Ring`], which is pure and tested on the host.

use crate::error::{Error, Result};
use crate::hal::{Dma, Hal, PhysAddr};
use crate::regs::Q_BASE;
use tock_registers::LocalRegisterCopy;

/// Index arithmetic of a queue with `2^log2` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ring {
    log2: u32,
}

impl Ring {
    /// A ring of `2^log2` entries (`log2` at most 19, the architecture's limit).
    pub fn new(log2: u32) -> Result<Self> {
        if log2 > 19 {
            return Err(Error::QueueTooLarge { log2, max: 19 });
        }
        Ok(Self { log2 })
    }

    /// log2 of the number of entries.
    pub fn log2(&self) -> u32 {
        self.log2
    }

    /// Number of entries.
    pub fn entries(&self) -> u32 {
        1 << self.log2
    }

    /// Mask of the bits that form a wrap+index value.
    pub fn wrap_index_mask(&self) -> u32 {
        (2 << self.log2) - 1
    }

    /// The slot of a wrap+index value.
    pub fn index(&self, p: u32) -> u32 {
        p & (self.entries() - 1)
    }

    /// The wrap flag of a wrap+index value.
    pub fn wrap(&self, p: u32) -> bool {
        p & self.entries() != 0
    }

    /// `p` advanced by `n` entries, wrapping (and toggling the wrap flag).
    pub fn advance(&self, p: u32, n: u32) -> u32 {
        (p & self.wrap_index_mask()).wrapping_add(n) & self.wrap_index_mask()
    }

    /// Entries between `cons` and `prod` (waiting to be consumed).
    pub fn used(&self, prod: u32, cons: u32) -> u32 {
        prod.wrapping_sub(cons) & self.wrap_index_mask()
    }

    /// Free entries a producer at `prod` may still write. A consumer value
    /// that is ahead of the producer (impossible unless the hardware
    /// misbehaves) yields 0 rather than a bogus count.
    pub fn free(&self, prod: u32, cons: u32) -> u32 {
        self.entries().saturating_sub(self.used(prod, cons))
    }

    /// True when no entry is waiting.
    pub fn is_empty(&self, prod: u32, cons: u32) -> bool {
        prod & self.wrap_index_mask() == cons & self.wrap_index_mask()
    }

    /// True when the producer cannot write.
    pub fn is_full(&self, prod: u32, cons: u32) -> bool {
        self.used(prod, cons) == self.entries()
    }

    /// True when the entry at wrap+index `pos` has been consumed by a
    /// consumer now at `cons`, given that the producer is at `prod` and `pos`
    /// was written before `prod`. Decided on the full wrap+index values:
    /// comparing slots alone misses a consumer that has wrapped.
    pub fn is_consumed(&self, pos: u32, cons: u32, prod: u32) -> bool {
        // `pos` is consumed once it no longer lies in [cons, prod).
        let outstanding = self.used(prod, cons);
        let distance = pos.wrapping_sub(cons) & self.wrap_index_mask();
        distance >= outstanding
    }
}

/// A queue's memory: `2^log2` entries of `ENTRY_DWORDS` 64-bit words.
#[derive(Debug)]
pub struct Queue<H: Hal, const ENTRY_DWORDS: usize> {
    mem: Dma<H>,
    ring: Ring,
}

impl<H: Hal, const ENTRY_DWORDS: usize> Queue<H, ENTRY_DWORDS> {
    /// Bytes of one entry.
    pub const ENTRY_BYTES: usize = ENTRY_DWORDS * 8;

    /// Allocates a zeroed queue of `2^log2` entries, limited by the SMMU's
    /// maximum `max_log2` (IDR1.CMDQS / EVENTQS). The base is aligned to the
    /// queue's size (and at least 32 bytes), as the architecture requires.
    pub fn new(log2: u32, max_log2: u32, coherent: bool) -> Result<Self> {
        if log2 > max_log2 {
            return Err(Error::QueueTooLarge {
                log2,
                max: max_log2,
            });
        }
        let ring = Ring::new(log2)?;
        let bytes = (Self::ENTRY_BYTES << log2).max(32);
        let mem = Dma::new(bytes, bytes, coherent)?;
        Ok(Self { mem, ring })
    }

    /// The ring arithmetic of this queue.
    pub fn ring(&self) -> Ring {
        self.ring
    }

    /// The value for the queue's `*Q_BASE` register: address, LOG2SIZE and
    /// the allocate hint (the queue is in write-back cacheable memory).
    pub fn base_register(&self) -> u64 {
        let mut base = LocalRegisterCopy::<u64, Q_BASE::Register>::new(0);
        base.modify(
            Q_BASE::ADDR.val(self.mem.paddr() >> 5)
                + Q_BASE::LOG2SIZE.val(u64::from(self.ring.log2()))
                + Q_BASE::ALLOC::SET,
        );
        base.get()
    }

    /// Physical address of the queue memory.
    #[cfg_attr(not(test), allow(dead_code))] // diagnostics; unit tests use it
    pub fn paddr(&self) -> PhysAddr {
        self.mem.paddr()
    }

    /// Bytes of queue memory.
    #[cfg_attr(not(test), allow(dead_code))] // diagnostics; unit tests use it
    pub fn bytes(&self) -> usize {
        self.mem.size()
    }

    /// Writes `entry` into the slot of wrap+index `p` (not yet published).
    pub fn write(&self, p: u32, entry: &[u64; ENTRY_DWORDS]) {
        let first = self.ring.index(p) as usize * ENTRY_DWORDS;
        for (i, word) in entry.iter().enumerate() {
            self.mem.write_u64(first + i, *word);
        }
    }

    /// Reads the entry in the slot of wrap+index `p`.
    pub fn read(&self, p: u32) -> [u64; ENTRY_DWORDS] {
        let first = self.ring.index(p) as usize * ENTRY_DWORDS;
        #[cfg(test)]
        crate::fake::trace(crate::fake::Trace::EntryRead {
            addr: self.mem.vaddr() as usize + first * 8,
        });
        core::array::from_fn(|i| self.mem.read_u64(first + i))
    }

    /// The word ranges `(first, count)` covering entries `[from, from +
    /// count)`: one run, or two when the range wraps past the last slot (the
    /// second run is then non-empty).
    fn word_runs(&self, from: u32, count: u32) -> [(usize, usize); 2] {
        let start = self.ring.index(from) as usize;
        let count = count.min(self.ring.entries()) as usize;
        let first_run = count.min(self.ring.entries() as usize - start);
        [
            (start * ENTRY_DWORDS, first_run * ENTRY_DWORDS),
            (0, (count - first_run) * ENTRY_DWORDS),
        ]
    }

    /// Makes the SMMU's writes to entries `[from, from + count)` visible to
    /// the CPU (barrier, and cache invalidate when not coherent).
    pub fn refresh(&self, from: u32, count: u32) {
        let [head, wrapped] = self.word_runs(from, count);
        self.mem.refresh(head.0, head.1);
        if wrapped.1 > 0 {
            self.mem.refresh(wrapped.0, wrapped.1);
        }
    }

    /// Cleans then invalidates the whole queue in the CPU's caches when the
    /// SMMU is not coherent (see [`crate::hal::Dma::clean_and_invalidate`]).
    pub fn clean_and_invalidate(&self) {
        self.mem.clean_and_invalidate();
    }

    /// Makes the entries `[from, from + count)` visible to the SMMU (cache
    /// clean when not coherent, then `DSB ST`), handling the wrap.
    pub fn publish(&self, from: u32, count: u32) {
        let [head, wrapped] = self.word_runs(from, count);
        self.mem.publish(head.0, head.1);
        if wrapped.1 > 0 {
            self.mem.publish(wrapped.0, wrapped.1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeHal;
    use proptest::prelude::*;

    #[test]
    fn wrap_and_index() {
        let r = Ring::new(2).unwrap(); // 4 entries, wrap bit = 4
        assert_eq!(r.advance(3, 1), 4); // slot 3 -> slot 0 with wrap set
        assert_eq!(r.index(4), 0);
        assert!(r.wrap(4));
        assert_eq!(r.advance(7, 1), 0); // wraps back to wrap = 0
        assert!(r.is_empty(5, 5));
        assert!(r.is_full(4, 0)); // same slot, different wrap
        assert_eq!(r.free(4, 0), 0);
        assert_eq!(r.free(1, 0), 3);
    }

    #[test]
    fn consumed_uses_the_wrap_bit() {
        let r = Ring::new(2).unwrap();
        // A SYNC written at slot 1 of the second lap (wrap set) = 5, prod = 6.
        // A consumer at slot 2 of the *first* lap (2) has not reached it, even
        // though its slot (2) is past the SYNC's slot (1).
        assert!(!r.is_consumed(5, 2, 6));
        assert!(!r.is_consumed(5, 5, 6));
        assert!(r.is_consumed(5, 6, 6));
    }

    #[test]
    fn too_large_queues_are_rejected() {
        assert_eq!(
            Ring::new(20),
            Err(Error::QueueTooLarge { log2: 20, max: 19 })
        );
        let q = Queue::<FakeHal, 2>::new(9, 8, true);
        assert_eq!(q.err(), Some(Error::QueueTooLarge { log2: 9, max: 8 }));
    }

    #[test]
    fn base_register_and_alignment() {
        let q = Queue::<FakeHal, 2>::new(8, 19, true).unwrap();
        assert_eq!(q.bytes(), 4096);
        assert_eq!(q.paddr() % 4096, 0);
        let base = q.base_register();
        assert_eq!(base & 0x1F, 8); // LOG2SIZE
        assert_eq!(base & 0x000F_FFFF_FFFF_FFE0, q.paddr());
        assert_ne!(base & (1 << 62), 0);
        // A tiny queue is still 32-byte aligned.
        let q = Queue::<FakeHal, 2>::new(0, 19, true).unwrap();
        assert_eq!(q.bytes(), 32);
    }

    #[test]
    fn publish_cleans_around_the_wrap_when_not_coherent() {
        let q = Queue::<FakeHal, 2>::new(2, 19, false).unwrap();
        let before = FakeHal::cleaned_bytes();
        q.publish(3, 2); // slots 3 and 0
        assert_eq!(FakeHal::cleaned_bytes() - before, 32);
        let q = Queue::<FakeHal, 2>::new(2, 19, true).unwrap();
        let before = FakeHal::cleaned_bytes();
        q.publish(0, 4);
        assert_eq!(FakeHal::cleaned_bytes(), before);
    }

    proptest! {
        #[test]
        fn ring_model(log2 in 0u32..8, steps in proptest::collection::vec((0u32..20, any::<bool>()), 0..200)) {
            let r = Ring::new(log2).unwrap();
            let (mut prod, mut cons) = (0u32, 0u32);
            let mut outstanding = 0u32; // model
            for (n, produce) in steps {
                if produce {
                    let n = n.min(r.free(prod, cons));
                    prod = r.advance(prod, n);
                    outstanding += n;
                } else {
                    let n = n.min(r.used(prod, cons));
                    cons = r.advance(cons, n);
                    outstanding -= n;
                }
                prop_assert_eq!(r.used(prod, cons), outstanding);
                prop_assert_eq!(r.is_empty(prod, cons), outstanding == 0);
                prop_assert_eq!(r.is_full(prod, cons), outstanding == r.entries());
                prop_assert!(prod <= r.wrap_index_mask() && cons <= r.wrap_index_mask());
            }
        }

        #[test]
        fn consumed_model(log2 in 1u32..6, start in 0u32..64, written in 1u32..64, eaten in 0u32..64) {
            let r = Ring::new(log2).unwrap();
            let written = written.min(r.entries());
            let eaten = eaten.min(written);
            let cons0 = start & r.wrap_index_mask();
            let prod = r.advance(cons0, written);
            let cons = r.advance(cons0, eaten);
            for k in 0..written {
                let pos = r.advance(cons0, k);
                prop_assert_eq!(r.is_consumed(pos, cons, prod), k < eaten);
            }
        }
    }
}
