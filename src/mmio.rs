//! Access to the SMMU's two register pages.
//!
//! All MMIO writes go through [`Mmio`], which counts them (the benchmark
//! reports MMIO writes per command batch) and serialises the
//! read-modify-write of GERRORN: the interrupt handler and a command submitter
//! may acknowledge different errors at the same time.
//!
//! The GERRORN lock is never waited for: an interrupt taken on a CPU that
//! holds it would spin forever. An acknowledgement that finds the lock taken
//! leaves its bits in an atomic mailbox, and the holder applies them before
//! it lets go (and looks again after letting go, so no bit is stranded).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};

use spin::Mutex;
use tock_registers::RegisterLongName;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::ReadWrite;

use crate::regs::{PAGE_SIZE, SmmuPage0, SmmuPage1};

/// Marks a stored command-error hint (the low 32 bits are GERROR).
const HINTED: u64 = 1 << 32;

/// The SMMU's register pages.
#[derive(Debug)]
pub struct Mmio {
    page0: NonNull<SmmuPage0>,
    page1: NonNull<SmmuPage1>,
    gerrorn_lock: Mutex<()>,
    /// GERRORN acknowledgements left by callers that found the lock taken.
    gerrorn_pending: AtomicU32,
    /// What GERRORN holds: only this driver writes it, so after one read
    /// (`gerrorn_known`) every later value is known without reading.
    gerrorn: AtomicU32,
    gerrorn_known: AtomicBool,
    /// An interrupt handler saw a command error but could not take the
    /// command queue: its holder must recover it. Holds `HINTED | GERROR`
    /// as the handler read it, or 0.
    cmdq_error_hint: AtomicU64,
    writes: AtomicU64,
    reads: AtomicU64,
}

// SAFETY: the pointers refer to MMIO registers (not Rust-owned memory); every
// access is a volatile register access, and the one read-modify-write
// sequence (GERRORN) is serialised by a lock.
unsafe impl Send for Mmio {}
// SAFETY: as above.
unsafe impl Sync for Mmio {}

impl Mmio {
    /// Wraps the register pages at `base` (page 0) and `base + 64 KiB` (page 1).
    ///
    /// # Safety
    ///
    /// `base` must be the virtual address at which the SMMU's first
    /// [`crate::regs::MMIO_SIZE`] bytes are mapped as device memory, for as
    /// long as the returned value lives, and no other code may program the
    /// SMMU meanwhile.
    pub unsafe fn new(base: NonNull<u8>) -> Self {
        Self {
            page0: base.cast(),
            // SAFETY: the caller maps both pages, so base + PAGE_SIZE is in
            // the same mapping.
            page1: unsafe { base.add(PAGE_SIZE) }.cast(),
            gerrorn_lock: Mutex::new(()),
            gerrorn_pending: AtomicU32::new(0),
            gerrorn: AtomicU32::new(0),
            gerrorn_known: AtomicBool::new(false),
            cmdq_error_hint: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        }
    }

    /// Register page 0.
    pub fn p0(&self) -> &SmmuPage0 {
        // SAFETY: `new`'s contract: page 0 is mapped for our lifetime.
        unsafe { self.page0.as_ref() }
    }

    /// Register page 1.
    pub fn p1(&self) -> &SmmuPage1 {
        // SAFETY: `new`'s contract: page 1 is mapped for our lifetime.
        unsafe { self.page1.as_ref() }
    }

    /// Writes a 32-bit register and counts the write.
    pub fn write32<R: RegisterLongName>(&self, reg: &ReadWrite<u32, R>, value: u32) {
        reg.set(value);
        self.wrote(reg as *const _ as usize, u64::from(value));
    }

    /// Writes a 64-bit register and counts the write.
    pub fn write64<R: RegisterLongName>(&self, reg: &ReadWrite<u64, R>, value: u64) {
        reg.set(value);
        self.wrote(reg as *const _ as usize, value);
    }

    /// Writes a 64-bit register as two 32-bit writes, low word first (the
    /// architecture allows 32-bit accesses to either half of a 64-bit
    /// register; QEMU's model accepts 64-bit accesses only for a few of
    /// them). Counts two writes.
    pub fn write64_halves<R: RegisterLongName>(&self, reg: &ReadWrite<u64, R>, value: u64) {
        let lo = (reg as *const ReadWrite<u64, R>).cast::<ReadWrite<u32>>();
        // SAFETY: `reg` is an 8-byte aligned 64-bit register inside the
        // mapped register pages, so its two 4-byte halves are too; 32-bit
        // accesses to them are architecturally permitted.
        let (lo, hi) = unsafe { (&*lo, &*lo.add(1)) };
        lo.set(value as u32);
        self.wrote(lo as *const _ as usize, u64::from(value as u32));
        hi.set((value >> 32) as u32);
        self.wrote(hi as *const _ as usize, value >> 32);
    }

    /// Counts a write (and reports it to the host-test model).
    #[inline(always)]
    fn wrote(&self, addr: usize, value: u64) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        #[cfg(any(test, feature = "testing"))]
        {
            let base = self.page0.as_ptr() as usize;
            crate::fake::mmio_written(base, addr - base, value);
        }
        #[cfg(not(any(test, feature = "testing")))]
        let _ = (addr, value);
    }

    /// MMIO writes so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Reads a 32-bit register and counts the read. The driver's hot paths
    /// (command completion, global errors, the event queue) read through
    /// this; one-off reads at probe and enable do not.
    pub fn read32<T: tock_registers::UIntLike + Into<u32>, R: RegisterLongName>(
        &self,
        reg: &impl Readable<T = T, R = R>,
    ) -> u32 {
        self.reads.fetch_add(1, Ordering::Relaxed);
        reg.get().into()
    }

    /// Counted MMIO reads so far (see [`Mmio::read32`]).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Records that a command error awaits the command queue's lock holder
    /// (an interrupt handler found the queue locked), with the GERROR value
    /// the handler read: the holder need not read it again.
    pub fn hint_cmdq_error(&self, seen_gerror: u32) {
        self.cmdq_error_hint
            .store(HINTED | u64::from(seen_gerror), Ordering::SeqCst);
    }

    /// Takes the hint left by [`Mmio::hint_cmdq_error`]: the GERROR value
    /// the handler saw.
    pub fn take_cmdq_error_hint(&self) -> Option<u32> {
        if self.cmdq_error_hint.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let v = self.cmdq_error_hint.swap(0, Ordering::SeqCst);
        (v != 0).then_some(v as u32)
    }

    /// Global errors currently active: GERROR bits that differ from GERRORN.
    /// One register read (GERROR): GERRORN is known from this driver's own
    /// writes after it was read once (see [`Mmio::resync_gerrorn`]).
    pub fn active_gerrors(&self) -> u32 {
        self.read_gerror().1
    }

    /// Reads GERROR: returns it and the active errors (GERROR ^ GERRORN).
    pub fn read_gerror(&self) -> (u32, u32) {
        let g = self.read32(&self.p0().gerror);
        (g, self.active_in(g))
    }

    /// The errors active in a GERROR value read earlier, against GERRORN as
    /// it is now (no register read once GERRORN is known). An error active
    /// in `seen` that has been acknowledged since is not active any more;
    /// one still unacknowledged is, because a GERROR bit does not toggle
    /// again while its error is active.
    pub fn active_in(&self, seen: u32) -> u32 {
        seen ^ self.gerrorn()
    }

    /// The value of GERRORN: read from the SMMU the first time (or after
    /// [`Mmio::resync_gerrorn`]), then the last value written.
    fn gerrorn(&self) -> u32 {
        if self.gerrorn_known.load(Ordering::Acquire) {
            return self.gerrorn.load(Ordering::Acquire);
        }
        let v = self.read32(&self.p0().gerrorn);
        self.gerrorn.store(v, Ordering::Release);
        self.gerrorn_known.store(true, Ordering::Release);
        v
    }

    /// Forgets the remembered GERRORN, so the next use reads it (when
    /// taking over an SMMU another owner may have acknowledged errors on).
    pub fn resync_gerrorn(&self) {
        let _guard = self.gerrorn_lock.lock();
        self.gerrorn_known.store(false, Ordering::Release);
    }

    /// Acknowledges the active errors among `bits` by toggling their GERRORN
    /// bits to match GERROR, leaving every other error pending.
    ///
    /// Never waits for the GERRORN lock: if another context holds it (on
    /// this CPU, the code an interrupt handler interrupted), the bits are
    /// left for the holder, which applies them before it returns. So the
    /// acknowledgement may complete just after this call returns, never
    /// later than the holder's own.
    pub fn ack_gerrors(&self, bits: u32) {
        self.gerrorn_pending.fetch_or(bits, Ordering::SeqCst);
        self.apply_pending_acks();
    }

    /// Like [`Mmio::ack_gerrors`], for errors found active in `seen`, a
    /// GERROR value read earlier: acknowledges without reading GERROR
    /// again. Sound because an active error's GERROR bit does not toggle
    /// until it is acknowledged: a bit of `bits` still differing between
    /// `seen` and GERRORN is still active with GERROR = `seen`, and one
    /// acknowledged meanwhile (GERRORN = `seen` there) is left alone. When
    /// the lock is taken the bits go to the holder, which reads GERROR.
    pub fn ack_gerrors_seen(&self, bits: u32, seen: u32) {
        match self.gerrorn_lock.try_lock() {
            Some(guard) => {
                let n = self.gerrorn();
                let active = (seen ^ n) & bits;
                if active != 0 {
                    self.write32(&self.p0().gerrorn, n ^ active);
                    self.gerrorn.store(n ^ active, Ordering::Release);
                }
                drop(guard);
                fence(Ordering::SeqCst);
                // Acknowledgements left while we held the lock.
                if self.gerrorn_pending.load(Ordering::SeqCst) != 0 {
                    self.apply_pending_acks();
                }
            }
            None => self.ack_gerrors(bits),
        }
    }

    /// Applies the acknowledgements in the mailbox (reading GERROR), unless
    /// another context holds the lock and will.
    fn apply_pending_acks(&self) {
        loop {
            let Some(guard) = self.gerrorn_lock.try_lock() else {
                // The holder sees our bits: it looks at the mailbox after
                // taking the lock and again after releasing it.
                return;
            };
            let bits = self.gerrorn_pending.swap(0, Ordering::SeqCst);
            if bits != 0 {
                let p0 = self.p0();
                let n = self.gerrorn();
                let active = (self.read32(&p0.gerror) ^ n) & bits;
                if active != 0 {
                    self.write32(&p0.gerrorn, n ^ active);
                    self.gerrorn.store(n ^ active, Ordering::Release);
                }
            }
            drop(guard);
            fence(Ordering::SeqCst);
            if self.gerrorn_pending.load(Ordering::SeqCst) == 0 {
                return;
            }
        }
    }

    /// Holds the GERRORN lock (host tests: an interrupted holder).
    #[cfg(test)]
    pub(crate) fn hold_gerrorn_lock(&self) -> spin::MutexGuard<'_, ()> {
        self.gerrorn_lock.lock()
    }
}

#[cfg(test)]
mod tests {
    use crate::fake::FakeRegs;

    const GERROR: usize = 0x60;
    const GERRORN: usize = 0x64;

    /// An interrupt taken while this CPU holds the GERRORN lock must not
    /// spin on it: its acknowledgement is left to the holder.
    #[test]
    fn an_ack_from_interrupt_context_never_waits_for_the_lock() {
        let regs = FakeRegs::new();
        let mmio = regs.mmio();
        regs.set32(GERROR, 0b101);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let guard = mmio.hold_gerrorn_lock();
            let mmio = &mmio;
            s.spawn(move || {
                // The "interrupt handler": acknowledges EVENTQ_ABT_ERR.
                mmio.ack_gerrors(0b100);
                tx.send(()).unwrap();
            });
            let returned = rx.recv_timeout(std::time::Duration::from_secs(5));
            assert!(returned.is_ok(), "ack_gerrors spun on a held lock");
            // Not applied yet: the holder has it.
            assert_eq!(regs.get32(GERRORN), 0);
            drop(guard);
            // The holder's next acknowledgement applies both.
            mmio.ack_gerrors(0b001);
        });
        assert_eq!(regs.get32(GERRORN), 0b101);
        assert_eq!(mmio.active_gerrors(), 0);
    }
}
