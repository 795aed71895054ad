//! Barriers between CPU writes to memory and the SMMU observing them.
//!
//! A Rust `fence(Release)` compiles to `DMB ISH`, which orders accesses only
//! between CPUs of the inner-shareable domain: the SMMU is outside it. Table
//! and queue writes must complete before the MMIO write that tells the SMMU to
//! look (CMDQ_PROD, CR0), which needs `DSB ST`. On the host (unit tests)
//! a sequentially consistent fence stands in for each barrier.

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
