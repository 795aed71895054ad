//! The global allocator: a buddy allocator over the `.heap` section.

use buddy_system_allocator::LockedHeap;

use super::layout;

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Hands the linker-reserved arena to the allocator. Called once, first.
pub fn init() {
    let heap = layout::heap();
    // SAFETY: `.heap` is reserved by the linker script for this allocator
    // alone, is mapped read-write (identity) before and after the MMU comes
    // on, and `init` runs once before any allocation.
    unsafe { HEAP.lock().init(heap.start, heap.end - heap.start) };
}

/// Bytes currently allocated (including buddy rounding).
pub fn bytes_in_use() -> usize {
    HEAP.lock().stats_alloc_actual()
}
