//! Small CPU helpers: the generic timer, cache maintenance, system registers.

use core::arch::asm;

use aarch64_cpu::registers::{CNTFRQ_EL0, CNTPCT_EL0, CurrentEL, Readable, SCTLR_EL2};

/// The exception level the image runs at (2).
pub fn current_el() -> u64 {
    CurrentEL.read(CurrentEL::EL)
}

/// SCTLR_EL2.
pub fn sctlr_el2() -> u64 {
    SCTLR_EL2.get()
}

/// Generic timer ticks since boot.
pub fn ticks() -> u64 {
    CNTPCT_EL0.get()
}

/// Generic timer frequency in Hz.
pub fn tick_hz() -> u64 {
    CNTFRQ_EL0.get().max(1)
}

/// A monotonic clock in nanoseconds.
pub fn now_ns() -> u64 {
    // Whole seconds and the remainder apart, in 64-bit arithmetic (no
    // 128-bit division routine in the image): the remainder is below
    // CNTFRQ (32 bits), so its product with 10^9 fits in 64 bits.
    let (t, hz) = (ticks(), tick_hz());
    (t / hz)
        .wrapping_mul(1_000_000_000)
        .wrapping_add((t % hz) * 1_000_000_000 / hz)
}

/// Smallest data cache line size in bytes (CTR_EL0.DminLine).
fn dcache_line() -> usize {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    4 << ((ctr >> 16) & 0xf)
}

/// Cleans `[addr, addr + len)` to the point of coherency, then `dsb sy`.
pub fn dcache_clean(addr: usize, len: usize) {
    let line = dcache_line();
    let mut a = addr & !(line - 1);
    while a < addr + len {
        // SAFETY: a clean by VA only writes back dirty lines; it never changes
        // memory contents as seen by the program.
        unsafe { asm!("dc cvac, {}", in(reg) a, options(nostack, preserves_flags)) };
        a += line;
    }
    // SAFETY: a barrier.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Cleans and invalidates `[addr, addr + len)` to the point of coherency,
/// so the next read fetches what a device wrote to memory.
pub fn dcache_clean_invalidate(addr: usize, len: usize) {
    let line = dcache_line();
    let mut a = addr & !(line - 1);
    while a < addr + len {
        // SAFETY: clean+invalidate writes back dirty lines first, so no data
        // the program wrote is lost.
        unsafe { asm!("dc civac, {}", in(reg) a, options(nostack, preserves_flags)) };
        a += line;
    }
    // SAFETY: a barrier.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Busy-waits for `ns` nanoseconds.
pub fn delay_ns(ns: u64) {
    let start = now_ns();
    while now_ns() - start < ns {
        core::hint::spin_loop();
    }
}
