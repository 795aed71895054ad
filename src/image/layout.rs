//! The image's memory layout, from the symbols `linker.ld` exports.
//!
//! This is the only place that names linker symbols; everything else asks for
//! typed ranges here.

use core::ops::Range;

/// Size of a translation granule and of every guard page.
pub const PAGE_SIZE: usize = 4096;
/// Size of the unmapped guard page below each stack.
pub const GUARD_SIZE: usize = PAGE_SIZE;
/// Size of each CPU's main stack (SP_EL0).
pub const STACK_SIZE: usize = 64 * 1024;
/// Size of each CPU's exception stack (SP_EL2).
pub const EXC_STACK_SIZE: usize = 16 * 1024;
/// Number of CPUs the linker script reserves stacks for.
pub const MAX_CPUS: usize = 2;

unsafe extern "C" {
    static image_start: u8;
    static image_end: u8;
    static text_start: u8;
    static text_end: u8;
    static rodata_start: u8;
    static rodata_end: u8;
    static data_start: u8;
    static data_end: u8;
    static bss_start: u8;
    static bss_end: u8;
    static stacks_start: u8;
    static stacks_end: u8;
    static heap_start: u8;
    static heap_end: u8;
}

macro_rules! range {
    ($start:ident, $end:ident) => {
        // Only the symbols' addresses are taken; they are never read.
        (&raw const $start as usize)..(&raw const $end as usize)
    };
}

/// The whole image, code to heap.
pub fn image() -> Range<usize> {
    range!(image_start, image_end)
}

/// Executable code (read-only, executable).
pub fn text() -> Range<usize> {
    range!(text_start, text_end)
}

/// Read-only data.
pub fn rodata() -> Range<usize> {
    range!(rodata_start, rodata_end)
}

/// Writable data and BSS (page aligned).
pub fn data() -> Range<usize> {
    range!(data_start, data_end)
}

/// BSS (zeroed by the entry code).
pub fn bss() -> Range<usize> {
    range!(bss_start, bss_end)
}

/// All CPUs' stacks with their guard pages.
pub fn stacks() -> Range<usize> {
    range!(stacks_start, stacks_end)
}

/// The global allocator's arena.
pub fn heap() -> Range<usize> {
    range!(heap_start, heap_end)
}

/// The stacks of one CPU. Lowest address first:
/// `[guard][exception stack][guard][stack]`.
#[derive(Debug, Clone)]
pub struct CpuStacks {
    /// Guard page below the exception stack (unmapped).
    pub exc_guard: Range<usize>,
    /// The exception stack (SP_EL2).
    pub exc_stack: Range<usize>,
    /// Guard page below the main stack (unmapped).
    pub guard: Range<usize>,
    /// The main stack (SP_EL0).
    pub stack: Range<usize>,
}

/// The stacks of CPU `cpu` (`cpu < MAX_CPUS`).
pub fn cpu_stacks(cpu: usize) -> CpuStacks {
    assert!(cpu < MAX_CPUS);
    let per_cpu = GUARD_SIZE + EXC_STACK_SIZE + GUARD_SIZE + STACK_SIZE;
    let base = stacks().start + cpu * per_cpu;
    let exc = base + GUARD_SIZE;
    let guard = exc + EXC_STACK_SIZE;
    let stack = guard + GUARD_SIZE;
    CpuStacks {
        exc_guard: base..exc,
        exc_stack: exc..guard,
        guard: guard..stack,
        stack: stack..stack + STACK_SIZE,
    }
}

/// Checks that the linker script and these constants agree (the entry code
/// relies on them to find the exception stack).
pub fn check() {
    // `assert!`, not `assert_eq!`: no `Debug` for `usize` and no
    // `assert_failed` in the image.
    let (have, want) = (
        stacks().end - stacks().start,
        MAX_CPUS * (2 * GUARD_SIZE + EXC_STACK_SIZE + STACK_SIZE),
    );
    assert!(
        have == want,
        "layout: stacks {have:#x} bytes, expected {want:#x}"
    );
    for r in [text(), rodata(), data(), stacks(), heap()] {
        assert!(
            r.start % PAGE_SIZE == 0 && r.end % PAGE_SIZE == 0,
            "layout: {:#x}..{:#x} not page aligned",
            r.start,
            r.end
        );
    }
}
