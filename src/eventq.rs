//! The event queue: fault and configuration-error records written by the SMMU.
//!
//! [`EventQueue::drain`] reads PROD (on register page 1), makes the records
//! it covers visible to the CPU, hands each to the caller, and frees their
//! slots with one CONS write. [`EventQueue::drain_up_to`] does the same for
//! at most a given number of records and leaves the rest in the queue:
//! [`crate::smmu::Smmu::service`] copies records out in fixed-size chunks
//! this way and runs its callback with the queue unlocked. Overflow is detected from PROD.OVFLG differing
//! from the OVACKFLG last written to CONS, and acknowledged by copying it.
//! (QEMU's model never sets OVFLG; it drops records and raises
//! GERROR.EVENTQ_ABT_ERR instead, which [`crate::smmu::Smmu`] handles.)

use tock_registers::interfaces::Readable;

use crate::error::Result;
use crate::hal::Hal;
use crate::mmio::Mmio;
use crate::queue::{Queue, Ring};
use crate::regs::Q_PROD;

/// 64-bit words per event record.
pub const EVT_DWORDS: usize = 4;

/// What one [`EventQueue::drain`] (or one [`crate::smmu::Smmu::service`]
/// call) found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Records read.
    pub records: u32,
    /// The queue overflowed (records were lost) since the last drain.
    pub overflow: bool,
    /// Records were still in the queue when the call stopped at its bound;
    /// they stay there for the next call.
    pub left_in_queue: bool,
}

/// The event queue's memory and consumer state.
#[derive(Debug)]
pub struct EventQueue<H: Hal> {
    queue: Queue<H, EVT_DWORDS>,
    cons: u32,
    overflow_acked: bool,
}

impl<H: Hal> EventQueue<H> {
    /// Allocates a queue of `2^log2` records (at most `2^max_log2`, from
    /// IDR1.EVENTQS).
    pub fn new(log2: u32, max_log2: u32, coherent: bool) -> Result<Self> {
        Ok(Self {
            queue: Queue::new(log2, max_log2, coherent)?,
            cons: 0,
            overflow_acked: false,
        })
    }

    /// The EVENTQ_BASE value.
    pub fn base_register(&self) -> u64 {
        self.queue.base_register()
    }

    /// Index arithmetic of the queue.
    pub fn ring(&self) -> Ring {
        self.queue.ring()
    }

    /// Address of the queue's memory.
    pub fn paddr(&self) -> u64 {
        self.queue.paddr()
    }

    /// Bytes of queue memory.
    pub fn bytes(&self) -> usize {
        self.queue.bytes()
    }

    /// Forgets the consumer position: call after programming EVENTQ_PROD and
    /// EVENTQ_CONS to 0 while EVENTQEN = 0.
    ///
    /// Also makes the queue memory clean in every cache (a no-op for a
    /// coherent SMMU): the zeroes the allocator wrote may still sit in dirty
    /// lines, and a dirty line evicted after the SMMU wrote a record there
    /// would overwrite the record. Cleaned then invalidated, the lines
    /// cannot be written back again until the CPU writes them, which it
    /// never does while EVENTQEN = 1.
    pub fn reset(&mut self) {
        self.cons = 0;
        self.overflow_acked = false;
        self.queue.clean_and_invalidate();
    }

    /// Hands every record the SMMU has written to `each`, oldest first, and
    /// returns them to the SMMU.
    pub fn drain(&mut self, mmio: &Mmio, each: impl FnMut([u64; EVT_DWORDS])) -> Drained {
        self.drain_up_to(mmio, u32::MAX, each)
    }

    /// Hands at most `max` of the records the SMMU has written to `each`,
    /// oldest first, and returns their slots to the SMMU; the others stay
    /// in the queue ([`Drained::left_in_queue`]). An overflow is reported
    /// (and acknowledged) by the first call that sees it, however many
    /// records that call takes.
    pub fn drain_up_to(
        &mut self,
        mmio: &Mmio,
        max: u32,
        mut each: impl FnMut([u64; EVT_DWORDS]),
    ) -> Drained {
        let ring = self.ring();
        let prod_reg = mmio.p1().eventq_prod.extract();
        let prod = prod_reg.get() & ring.wrap_index_mask();
        let overflowed = prod_reg.is_set(Q_PROD::OVFLG);
        let available = ring.used(prod, self.cons);
        let n = available.min(max);
        // Records must be read after PROD (and, if not coherent, fetched
        // from memory rather than stale cache lines).
        self.queue.refresh(self.cons, n);
        for k in 0..n {
            each(self.queue.read(ring.advance(self.cons, k)));
        }
        self.cons = ring.advance(self.cons, n);
        let overflow = overflowed != self.overflow_acked;
        self.overflow_acked = overflowed;
        if n > 0 || overflow {
            // Every record read must complete before the SMMU may reuse its
            // slot.
            crate::barrier::dmb_osh();
            let ack = if overflowed { 1 << 31 } else { 0 };
            mmio.write32(&mmio.p1().eventq_cons, self.cons | ack);
        }
        Drained {
            records: n,
            overflow,
            left_in_queue: n < available,
        }
    }
}

#[cfg(test)]
impl<H: Hal> EventQueue<H> {
    /// Plays the SMMU: writes `record` into the slot of wrap+index `p`
    /// (the test then moves EVENTQ_PROD).
    pub(crate) fn inject(&self, p: u32, record: &[u64; EVT_DWORDS]) {
        self.queue.write(p, record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeHal, FakeRegs};

    const EVENTQ_PROD: usize = 0x1_00A8;
    const EVENTQ_CONS: usize = 0x1_00AC;

    #[test]
    fn drains_in_order_and_acknowledges_overflow() {
        let regs = FakeRegs::new();
        let mmio = regs.mmio();
        let mut q = EventQueue::<FakeHal>::new(2, 19, true).unwrap();
        // The SMMU wrote 3 records.
        for i in 0..3u64 {
            q.queue
                .write(i as u32, &[0x10 | (i << 32), 0, 0x1000 * i, 0]);
        }
        regs.set32(EVENTQ_PROD, 3);
        let mut seen = Vec::new();
        let d = q.drain(&mmio, |r| seen.push(r[2]));
        assert_eq!(
            d,
            Drained {
                records: 3,
                overflow: false,
                left_in_queue: false,
            }
        );
        assert_eq!(seen, [0, 0x1000, 0x2000]);
        assert_eq!(regs.get32(EVENTQ_CONS), 3);
        // Nothing new: no register write.
        let writes = mmio.writes();
        assert_eq!(q.drain(&mmio, |_| ()).records, 0);
        assert_eq!(mmio.writes(), writes);
        // Two more, wrapping, with the overflow flag raised.
        q.queue.write(3, &[0x10, 0, 0x3000, 0]);
        q.queue.write(4, &[0x10, 0, 0x4000, 0]);
        regs.set32(EVENTQ_PROD, (1 << 31) | 5);
        let mut seen = Vec::new();
        let d = q.drain(&mmio, |r| seen.push(r[2]));
        assert_eq!(
            d,
            Drained {
                records: 2,
                overflow: true,
                left_in_queue: false,
            }
        );
        assert_eq!(seen, [0x3000, 0x4000]);
        assert_eq!(regs.get32(EVENTQ_CONS), (1 << 31) | 5);
        // The overflow is reported once.
        assert!(!q.drain(&mmio, |_| ()).overflow);
    }

    /// Issue 8 item 10: the record reads complete before CONS hands their
    /// slots back to the SMMU.
    #[test]
    fn records_are_read_before_their_slots_are_freed() {
        use crate::fake::{Trace, start_trace, take_trace};
        let regs = FakeRegs::new();
        let mmio = regs.mmio();
        let mut q = EventQueue::<FakeHal>::new(2, 19, true).unwrap();
        q.queue.write(0, &[0x10, 0, 0, 0]);
        q.queue.write(1, &[0x10, 0, 0, 0]);
        regs.set32(EVENTQ_PROD, 2);
        start_trace();
        q.drain(&mmio, |_| ());
        let t = take_trace();
        let last_read = t
            .iter()
            .rposition(|e| matches!(e, Trace::EntryRead { .. }))
            .expect("records read");
        let cons_write = t
            .iter()
            .position(|e| {
                matches!(
                    e,
                    Trace::Write {
                        offset: EVENTQ_CONS,
                        ..
                    }
                )
            })
            .expect("CONS written");
        assert!(last_read < cons_write);
        assert!(
            t[last_read..cons_write]
                .iter()
                .any(|e| matches!(e, Trace::Barrier("dmb osh") | Trace::Barrier("dsb ld"))),
            "no barrier between the last record read and EVENTQ_CONS: {t:?}"
        );
    }

    /// Issue 8 item 6: a non-coherent event queue is cleaned and invalidated
    /// (every byte) when it is reset before EVENTQEN, so no dirty line of the
    /// allocator's zeroes can later be written back over a record.
    #[test]
    fn a_non_coherent_queue_is_cleaned_and_invalidated_on_reset() {
        use crate::fake::{Trace, start_trace, take_trace};
        let mut q = EventQueue::<FakeHal>::new(3, 19, false).unwrap();
        let (start, bytes) = (q.queue.paddr() as usize, q.bytes());
        start_trace();
        q.reset();
        let t = take_trace();
        let clean = t.iter().position(|e| {
            *e == Trace::Clean {
                addr: start,
                len: bytes,
            }
        });
        let inval = t.iter().position(|e| {
            *e == Trace::Invalidate {
                addr: start,
                len: bytes,
            }
        });
        assert!(
            matches!((clean, inval), (Some(c), Some(i)) if c < i),
            "expected clean then invalidate of the whole queue: {t:?}"
        );
        // A coherent queue needs nothing.
        let mut q = EventQueue::<FakeHal>::new(3, 19, true).unwrap();
        start_trace();
        q.reset();
        assert!(
            !take_trace()
                .iter()
                .any(|e| matches!(e, Trace::Clean { .. } | Trace::Invalidate { .. }))
        );
    }
}
