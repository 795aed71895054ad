//! Host-side fakes for unit tests: a [`Hal`] backed by the std allocator
//! (physical = virtual address) and a clock that advances on every read, so
//! bounded waits expire deterministically.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ptr::NonNull;

use crate::hal::{DmaRegion, Hal};

thread_local! {
    static CLOCK_NS: Cell<u64> = const { Cell::new(0) };
    static LIVE_BYTES: Cell<usize> = const { Cell::new(0) };
    static CLEANED_BYTES: Cell<usize> = const { Cell::new(0) };
    static FAIL_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
    static MISALIGN: Cell<bool> = const { Cell::new(false) };
    static LAYOUTS: RefCell<HashMap<usize, Layout>> = RefCell::new(HashMap::new());
}

/// A HAL for host tests. Each thread has its own clock and counters.
#[derive(Debug)]
pub struct FakeHal;

impl FakeHal {
    /// Bytes currently allocated through this HAL on this thread.
    pub fn live_bytes() -> usize {
        LIVE_BYTES.with(|c| c.get())
    }
    /// Bytes passed to `dcache_clean` on this thread.
    pub fn cleaned_bytes() -> usize {
        CLEANED_BYTES.with(|c| c.get())
    }
    /// While set, allocations return memory offset by 64 bytes from the
    /// alignment asked for (a HAL breaking its contract).
    pub fn misalign_next(on: bool) {
        MISALIGN.with(|c| c.set(on));
    }

    /// Makes allocations fail after `n` more successes (`None`: never).
    pub fn fail_after(n: Option<usize>) {
        FAIL_AFTER.with(|c| c.set(n));
    }
}

// SAFETY: memory comes zeroed from the global allocator with the requested
// layout, is exclusively owned until freed, and paddr == vaddr on the host.
unsafe impl Hal for FakeHal {
    fn dma_alloc(size: usize, align: usize) -> Option<DmaRegion> {
        if let Some(n) = FAIL_AFTER.with(|c| c.get()) {
            if n == 0 {
                return None;
            }
            FAIL_AFTER.with(|c| c.set(Some(n - 1)));
        }
        let extra = if MISALIGN.with(|c| c.get()) { 64 } else { 0 };
        let layout = Layout::from_size_align(size + extra, align).ok()?;
        // SAFETY: size is non-zero (callers never ask for 0 bytes; Dma::new checks).
        let p = unsafe { alloc_zeroed(layout) };
        NonNull::new(p)?;
        // SAFETY: `extra` bytes into an allocation of `size + extra` bytes.
        let start = unsafe { p.add(extra) };
        LIVE_BYTES.with(|c| c.set(c.get() + size));
        LAYOUTS.with(|m| m.borrow_mut().insert(start as usize, layout));
        Some(DmaRegion {
            paddr: start as u64,
            vaddr: NonNull::new(start)?,
            size,
        })
    }

    unsafe fn dma_free(region: DmaRegion) {
        LIVE_BYTES.with(|c| c.set(c.get() - region.size));
        let layout = LAYOUTS
            .with(|m| m.borrow_mut().remove(&(region.vaddr.as_ptr() as usize)))
            .expect("FakeHal: freeing memory it did not allocate");
        let extra = if region.size < layout.size() {
            layout.size() - region.size
        } else {
            0
        };
        // SAFETY: the region came from `dma_alloc`, which recorded its layout
        // and offset the region by `extra` bytes into the allocation.
        unsafe { dealloc(region.vaddr.as_ptr().sub(extra), layout) }
    }

    fn dcache_clean(_vaddr: *const u8, len: usize) {
        CLEANED_BYTES.with(|c| c.set(c.get() + len));
    }

    fn dcache_invalidate(_vaddr: *const u8, _len: usize) {}

    fn now_ns() -> u64 {
        CLOCK_NS.with(|c| {
            let t = c.get() + 1_000;
            c.set(t);
            t
        })
    }
}

/// A zeroed block standing in for the SMMU's two register pages. Nothing
/// ever acknowledges or consumes: tests set the registers by hand.
#[derive(Debug)]
pub struct FakeRegs {
    mem: NonNull<u8>,
}

impl FakeRegs {
    const LAYOUT: Layout = match Layout::from_size_align(crate::regs::MMIO_SIZE, 4096) {
        Ok(l) => l,
        Err(_) => panic!("layout"),
    };

    /// A zeroed register block.
    pub fn new() -> Self {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(Self::LAYOUT) };
        Self {
            mem: NonNull::new(p).expect("alloc"),
        }
    }

    /// The block's address, as a driver's register base.
    pub fn base(&self) -> NonNull<u8> {
        self.mem
    }

    /// An [`crate::mmio::Mmio`] over this block.
    pub fn mmio(&self) -> crate::mmio::Mmio {
        // SAFETY: the block is MMIO_SIZE bytes and outlives the test using it.
        unsafe { crate::mmio::Mmio::new(self.mem) }
    }

    /// Sets the 32-bit register at `offset`.
    pub fn set32(&self, offset: usize, value: u32) {
        assert!(offset + 4 <= crate::regs::MMIO_SIZE);
        // SAFETY: in bounds and 4-byte aligned offsets only.
        unsafe {
            self.mem
                .as_ptr()
                .add(offset)
                .cast::<u32>()
                .write_volatile(value)
        }
    }

    /// Reads the 32-bit register at `offset`.
    pub fn get32(&self, offset: usize) -> u32 {
        assert!(offset + 4 <= crate::regs::MMIO_SIZE);
        // SAFETY: as in `set32`.
        unsafe { self.mem.as_ptr().add(offset).cast::<u32>().read_volatile() }
    }
}

impl Drop for FakeRegs {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe { dealloc(self.mem.as_ptr(), Self::LAYOUT) }
    }
}
