//! Barriers between CPU writes to memory and the SMMU observing them.
//!
//! A Rust `fence(Release)` compiles to `DMB ISH`, which orders accesses only
//! between CPUs of the inner-shareable domain: the SMMU is outside it. Table
//! and queue writes must complete before the MMIO write that tells the SMMU to
//! look (CMDQ_PROD, CR0), which needs `DSB ST`. On the host (unit tests)
//! a sequentially consistent fence stands in for each barrier.
//!
//! `DSB ST` is what the specification's procedures say (IHI 0070 §3.21.2
//! before the CMDQ_PROD write, §3.21.3.1 before the CMD_CFGI_* of a
//! structure update). Linux uses `DMB OSHST` there instead (`dma_wmb()`,
//! relying on the Armv8 memory model's other-multi-copy atomicity), which
//! orders without waiting for completion. This driver keeps the
//! specification's barrier: swapping it, measured on the host benchmark,
//! gained about 3% on random-order maps and nothing measurable elsewhere,
//! and a `DMB` would leave a mapping unordered with respect to a later
//! system-register signal (an SGI) by which a caller hands it to another
//! CPU. `every_store_is_published_before_the_mmio_write_that_makes_the_smmu_look`
//! (src/domain/tests.rs) checks the barrier (and, when not coherent, the
//! clean) between every store and the MMIO write that follows it.

#[cfg(target_arch = "aarch64")]
use aarch64_cpu::asm::barrier;

/// Completes all earlier stores before any later memory access or MMIO write.
#[inline(always)]
pub fn dsb_st() {
    #[cfg(test)]
    crate::fake::trace(crate::fake::Trace::Barrier("dsb st"));
    #[cfg(target_arch = "aarch64")]
    barrier::dsb(barrier::ST);
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

/// Completes earlier loads before later ones: after reading a queue's PROD
/// register, before reading the entries the SMMU wrote.
#[inline(always)]
pub fn dsb_ld() {
    #[cfg(test)]
    crate::fake::trace(crate::fake::Trace::Barrier("dsb ld"));
    #[cfg(target_arch = "aarch64")]
    barrier::dsb(barrier::LD);
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

/// Orders earlier memory reads before later writes as the SMMU observes
/// them: after reading the event records, before the EVENTQ_CONS write that
/// hands their slots back (otherwise the SMMU could overwrite a record the
/// CPU has not finished reading).
#[inline(always)]
pub fn dmb_osh() {
    #[cfg(test)]
    crate::fake::trace(crate::fake::Trace::Barrier("dmb osh"));
    #[cfg(target_arch = "aarch64")]
    barrier::dmb(barrier::OSH);
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}
