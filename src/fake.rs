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
        let layout = Layout::from_size_align(size, align).ok()?;
        // SAFETY: size is non-zero (callers never ask for 0 bytes; Dma::new checks).
        let p = unsafe { alloc_zeroed(layout) };
        let vaddr = NonNull::new(p)?;
        LIVE_BYTES.with(|c| c.set(c.get() + size));
        LAYOUTS.with(|m| m.borrow_mut().insert(p as usize, layout));
        Some(DmaRegion {
            paddr: p as u64,
            vaddr,
            size,
        })
    }

    unsafe fn dma_free(region: DmaRegion) {
        LIVE_BYTES.with(|c| c.set(c.get() - region.size));
        let layout = LAYOUTS
            .with(|m| m.borrow_mut().remove(&(region.vaddr.as_ptr() as usize)))
            .expect("FakeHal: freeing memory it did not allocate");
        // SAFETY: the region came from `dma_alloc`, which recorded its layout.
        unsafe { dealloc(region.vaddr.as_ptr(), layout) }
    }

    fn dcache_clean(_vaddr: *const u8, len: usize) {
        CLEANED_BYTES.with(|c| c.set(c.get() + len));
    }

    fn now_ns() -> u64 {
        CLOCK_NS.with(|c| {
            let t = c.get() + 1_000;
            c.set(t);
            t
        })
    }
}
