//! Device-visible memory: a buddy page allocator over RAM, and [`ImageHal`].
//!
//! All RAM the DTB reports, minus the DTB blob and the image (which contains
//! the heap), is handed out in naturally aligned power-of-two blocks of pages
//! (a 4 MiB block is 4 MiB aligned), zeroed. The free lists live on the heap,
//! never inside the memory handed to devices.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use alloc::vec::Vec;
use smmuv3::hal::{DmaRegion, Hal};
use spin::Mutex;

use super::layout::PAGE_SIZE;
use super::platform::Region;

static FRAMES: Mutex<Frames> = Mutex::new(Frames::new());

/// Block sizes: 2^0 .. 2^(ORDERS - 1) pages.
const ORDERS: usize = 32;

/// A buddy allocator of page frames: free blocks of 2^order pages, each
/// naturally aligned (its first page number a multiple of its size), kept
/// per order in a `Vec` (a few dozen blocks; a linear search finds a
/// buddy). Replaces `buddy_system_allocator::FrameAllocator`, whose
/// `BTreeSet`s cost the image a B-tree instantiation.
struct Frames {
    /// `ORDERS` lists once pages were added (one `Vec` of lists, not an
    /// array of them: an empty `Vec` is not all zeros, and 32 of them would
    /// put 768 bytes into `.data`).
    free: Vec<Vec<usize>>,
}

impl Frames {
    const fn new() -> Self {
        Self { free: Vec::new() }
    }

    /// Adds pages `first..last`, as the largest naturally aligned blocks.
    fn add_frame(&mut self, mut first: usize, last: usize) {
        if self.free.is_empty() {
            self.free.resize_with(ORDERS, Vec::new);
        }
        while first < last {
            let mut order = (first.trailing_zeros() as usize).min(ORDERS - 1);
            while first + (1 << order) > last {
                order -= 1;
            }
            if let Some(list) = self.free.get_mut(order) {
                list.push(first);
            }
            first += 1 << order;
        }
    }

    /// A naturally aligned block of `pages` (a power of two) pages: the
    /// first page number.
    fn alloc(&mut self, pages: usize) -> Option<usize> {
        let want = pages.trailing_zeros() as usize;
        let (order, list) = self
            .free
            .iter_mut()
            .enumerate()
            .skip(want)
            .find(|(_, l)| !l.is_empty())?;
        let first = list.pop()?;
        // Keep the lower half, free the upper halves down to `want`.
        for (o, list) in self.free.iter_mut().enumerate().take(order).skip(want) {
            list.push(first + (1 << o));
        }
        Some(first)
    }

    /// Returns a block from [`Frames::alloc`], merged with its free buddies.
    fn dealloc(&mut self, mut first: usize, pages: usize) {
        let mut order = pages.trailing_zeros() as usize;
        while let Some(list) = self.free.get_mut(order) {
            let buddy = first ^ (1 << order);
            match list.iter().position(|&b| b == buddy) {
                Some(i) if order + 1 < ORDERS => {
                    list.swap_remove(i);
                    first = first.min(buddy);
                    order += 1;
                }
                _ => {
                    list.push(first);
                    return;
                }
            }
        }
    }
}

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static TOTAL: AtomicUsize = AtomicUsize::new(0);

/// Gives the allocator every page of `ram` outside `reserved`.
pub fn init(ram: &[Region], reserved: &[core::ops::Range<usize>]) {
    let mut free: Vec<core::ops::Range<usize>> = ram.iter().map(Region::range).collect();
    for r in reserved {
        free = free
            .into_iter()
            .flat_map(|f| {
                let below = f.start..f.end.min(r.start);
                let above = f.start.max(r.end)..f.end;
                [below, above]
            })
            .filter(|f| f.start < f.end)
            .collect();
    }
    let mut frames = FRAMES.lock();
    for f in free {
        let first = f.start.div_ceil(PAGE_SIZE);
        let last = f.end / PAGE_SIZE;
        if first < last {
            frames.add_frame(first, last);
            TOTAL.fetch_add((last - first) * PAGE_SIZE, Ordering::Relaxed);
        }
    }
}

fn block_pages(size: usize, align: usize) -> usize {
    size.max(align).max(PAGE_SIZE).next_power_of_two() / PAGE_SIZE
}

/// Allocates a zeroed block of at least `size` bytes aligned to
/// `max(align, rounded size)`: blocks are naturally aligned.
pub fn alloc(size: usize, align: usize) -> Option<DmaRegion> {
    let pages = block_pages(size, align);
    let first = FRAMES.lock().alloc(pages)?;
    let addr = first * PAGE_SIZE;
    let bytes = pages * PAGE_SIZE;
    // SAFETY: the block is RAM, identity mapped read-write, and now owned by
    // this allocation alone (the buddy allocator handed it out).
    unsafe { core::ptr::write_bytes(addr as *mut u8, 0, bytes) };
    IN_USE.fetch_add(bytes, Ordering::Relaxed);
    Some(DmaRegion {
        paddr: addr as u64,
        vaddr: NonNull::new(addr as *mut u8)?,
        size: bytes,
    })
}

/// Returns a block from [`alloc`].
///
/// # Safety
///
/// `region` came from [`alloc`] and nobody (CPU or device) uses it any more.
pub unsafe fn free(region: DmaRegion) {
    let pages = region.size / PAGE_SIZE;
    FRAMES
        .lock()
        .dealloc(region.paddr as usize / PAGE_SIZE, pages);
    IN_USE.fetch_sub(region.size, Ordering::Relaxed);
}

/// Bytes of device-visible memory currently allocated.
pub fn bytes_in_use() -> usize {
    IN_USE.load(Ordering::Relaxed)
}

/// Bytes the allocator manages in total.
pub fn bytes_total() -> usize {
    TOTAL.load(Ordering::Relaxed)
}

/// The image's [`Hal`]: DMA memory from this allocator, the generic timer as
/// the clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageHal;

// SAFETY: `alloc` returns zeroed, exclusively owned RAM blocks, identity
// mapped normal write-back inner-shareable (see `mmu`), so `vaddr == paddr`
// and the SMMU reaches them at `paddr`; blocks are naturally aligned, which
// covers any `align <= size` and larger alignments are rounded into the size.
unsafe impl Hal for ImageHal {
    fn dma_alloc(size: usize, align: usize) -> Option<DmaRegion> {
        alloc(size, align)
    }

    unsafe fn dma_free(region: DmaRegion) {
        // SAFETY: forwarded from the caller.
        unsafe { free(region) }
    }

    fn dcache_clean(vaddr: *const u8, len: usize) {
        super::cpu::dcache_clean(vaddr as usize, len);
    }

    fn dcache_invalidate(vaddr: *const u8, len: usize) {
        super::cpu::dcache_clean_invalidate(vaddr as usize, len);
    }

    fn now_ns() -> u64 {
        super::cpu::now_ns()
    }
}
