//! Access to the SMMU's two register pages.
//!
//! All MMIO writes go through [`Mmio`], which counts them (the benchmark
//! reports MMIO writes per command batch) and serialises the
//! read-modify-write of GERRORN: the interrupt handler and a command submitter
//! may acknowledge different errors at the same time.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;
use tock_registers::RegisterLongName;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::ReadWrite;

use crate::regs::{PAGE_SIZE, SmmuPage0, SmmuPage1};

/// The SMMU's register pages.
#[derive(Debug)]
pub struct Mmio {
    page0: NonNull<SmmuPage0>,
    page1: NonNull<SmmuPage1>,
    gerrorn_lock: Mutex<()>,
    writes: AtomicU64,
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
            writes: AtomicU64::new(0),
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
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes a 64-bit register and counts the write.
    pub fn write64<R: RegisterLongName>(&self, reg: &ReadWrite<u64, R>, value: u64) {
        reg.set(value);
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// MMIO writes so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Global errors currently active: GERROR bits that differ from GERRORN.
    pub fn active_gerrors(&self) -> u32 {
        let p0 = self.p0();
        p0.gerror.get() ^ p0.gerrorn.get()
    }

    /// Acknowledges the active errors among `bits` by toggling their GERRORN
    /// bits to match GERROR, leaving every other error pending.
    pub fn ack_gerrors(&self, bits: u32) {
        let _guard = self.gerrorn_lock.lock();
        let p0 = self.p0();
        let n = p0.gerrorn.get();
        let active = (p0.gerror.get() ^ n) & bits;
        if active != 0 {
            self.write32(&p0.gerrorn, n ^ active);
        }
    }
}
