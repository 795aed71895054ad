//! The hardware abstraction the driver needs from its host (the hypervisor).
//!
//! Everything the SMMU reads from memory (stream tables, context descriptors,
//! queues, stage-2 tables) is allocated through [`Hal::dma_alloc`] and owned by
//! a [`Dma`] guard. Every CPU write the SMMU must observe goes through
//! [`Dma::publish`], which cleans the data cache when the SMMU is not
//! coherent: that single hook keeps the non-coherent path honest even on QEMU,
//! whose SMMU is always coherent.
//!
//! # Coherent and non-coherent SMMUs
//!
//! Whether the SMMU is coherent is decided once, in [`crate::smmu::Smmu::new`]:
//! the firmware's word ([`crate::smmu::Config::firmware_coherent`], from the
//! DT `dma-coherent` property or the IORT CCA) overrides IDR0.COHACC.
//!
//! - **Coherent:** the SMMU snoops the CPU caches. CR1, the STEs and the CDs
//!   say Write-Back cacheable, Inner Shareable; the cache hooks are never
//!   called.
//! - **Non-coherent:** the SMMU reads and writes memory past the CPU caches.
//!   CR1 (queues and tables), the STE's S2IR0/S2OR0/S2SH0 and the CD's
//!   IR0/OR0/SH0 say Non-cacheable, Outer Shareable
//!   ([`crate::smmu::Smmu::walk_attributes`]). The CPU side may still map
//!   the memory Write-Back cacheable; the driver then calls:
//!   - [`Hal::dcache_clean`] after every CPU write the SMMU must see (table
//!     and descriptor words, commands), before the barrier and the MMIO
//!     write that makes the SMMU look;
//!   - [`Hal::dcache_invalidate`] before the CPU reads what the SMMU wrote
//!     (event records), after reading the PROD that covers them;
//!   - both, clean first, over the whole event queue before EVENTQEN, so
//!     that no dirty line of the allocator's zeroes is ever written back
//!     over a record.

use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::error::{Error, Invalid, Result};

/// A physical (bus) address as the SMMU sees it.
pub type PhysAddr = u64;

/// Services the driver needs from the code that links it.
///
/// # Safety
///
/// Implementations must return memory that is valid, zeroed, exclusively owned
/// by the caller until it is passed back to [`Hal::dma_free`], mapped at
/// `vaddr` for CPU access as Normal memory (Write-Back cacheable, Inner
/// Shareable, as the driver programs in CR1 for a coherent SMMU; for a
/// non-coherent SMMU, Write-Back cacheable with the cache hooks below doing
/// their job, or Non-cacheable), and reachable by the SMMU at `paddr`.
pub unsafe trait Hal {
    /// Allocates `size` bytes of zeroed device-visible memory aligned to
    /// `align` bytes. Both are powers of two. Returns `None` when out of memory.
    fn dma_alloc(size: usize, align: usize) -> Option<DmaRegion>;

    /// Returns memory obtained from [`Hal::dma_alloc`].
    ///
    /// # Safety
    ///
    /// `region` came from `dma_alloc`, and neither the CPU nor the SMMU uses
    /// it any more.
    unsafe fn dma_free(region: DmaRegion);

    /// Cleans (writes back) every data cache line overlapping
    /// `[vaddr, vaddr + len)` to the point of coherency: `DC CVAC` for each
    /// line (`DC CIVAC` is also correct), using the smallest line size of
    /// CTR_EL0.DminLine. No barrier is needed: the driver issues `DSB ST`
    /// after the call. Called only for a non-coherent SMMU. `vaddr` need not
    /// be line aligned.
    fn dcache_clean(vaddr: *const u8, len: usize);

    /// Invalidates every data cache line overlapping `[vaddr, vaddr + len)`
    /// to the point of coherency, so that the next CPU read fetches what the
    /// SMMU wrote: `DC IVAC` for each line, or `DC CIVAC` (clean and
    /// invalidate; always safe here, since the driver never has unpublished
    /// CPU writes in these ranges). The driver issues `DSB LD` before
    /// reading. Called only for a non-coherent SMMU.
    fn dcache_invalidate(vaddr: *const u8, len: usize);

    /// A monotonic clock in nanoseconds; every wait in the driver is bounded
    /// with it.
    fn now_ns() -> u64;
}

/// A block of device-visible memory returned by [`Hal::dma_alloc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaRegion {
    /// Address the SMMU uses.
    pub paddr: PhysAddr,
    /// Address the CPU uses.
    pub vaddr: NonNull<u8>,
    /// Size in bytes.
    pub size: usize,
}

/// Owns a [`DmaRegion`] and frees it on drop.
#[derive(Debug)]
pub struct Dma<H: Hal> {
    region: DmaRegion,
    coherent: bool,
    _hal: PhantomData<H>,
}

// SAFETY: the region is exclusively owned by this guard (Hal contract), so it
// may move to another CPU with it.
unsafe impl<H: Hal> Send for Dma<H> {}
// SAFETY: shared references only allow reads through `as_slice`/`read`,
// which are plain loads of memory the guard owns.
unsafe impl<H: Hal> Sync for Dma<H> {}

impl<H: Hal> Dma<H> {
    /// Allocates `size` zeroed bytes aligned to `align` and checks that the
    /// HAL kept its promises (alignment, size): hardware does not forgive a
    /// misaligned table the way QEMU does.
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// use smmuv3::testing::HostHal;
    /// use smmuv3::{Dma, Error, Invalid};
    ///
    /// let table = Dma::<HostHal>::new(4096, 4096, true)?;
    /// assert_eq!(table.paddr() % 4096, 0);
    /// table.write_u64(0, 0x1234);
    /// table.publish(0, 1); // cleans the cache line on a non-coherent SMMU
    /// assert_eq!(table.read_u64(0), 0x1234);
    /// assert_eq!(
    ///     Dma::<HostHal>::new(3000, 4096, true).err(),
    ///     Some(Error::Invalid(Invalid::DmaLayout { size: 3000, align: 4096 }))
    /// );
    /// HostHal::fail_after(Some(0)); // the HAL runs out
    /// assert_eq!(Dma::<HostHal>::new(4096, 4096, true).err(), Some(Error::NoMemory));
    /// HostHal::fail_after(None);
    /// # Ok::<(), smmuv3::Error>(())
    /// ```
    pub fn new(size: usize, align: usize, coherent: bool) -> Result<Self> {
        if size == 0 || !size.is_power_of_two() || !align.is_power_of_two() {
            return Err(Error::Invalid(Invalid::DmaLayout { size, align }));
        }
        let region = H::dma_alloc(size, align).ok_or(Error::NoMemory)?;
        let dma = Self {
            region,
            coherent,
            _hal: PhantomData,
        };
        let misaligned = !region.paddr.is_multiple_of(align as u64)
            || !(region.vaddr.as_ptr() as usize).is_multiple_of(align.min(4096));
        if misaligned || region.size < size {
            // `dma` is dropped here and the memory handed back.
            return Err(Error::BadHalMemory {
                paddr: region.paddr,
                size: region.size,
                align,
            });
        }
        Ok(dma)
    }

    /// The SMMU-visible address.
    pub fn paddr(&self) -> PhysAddr {
        self.region.paddr
    }

    /// The CPU address.
    pub fn vaddr(&self) -> *mut u8 {
        self.region.vaddr.as_ptr()
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.region.size
    }

    /// Number of `u64` words in the region.
    pub fn len_u64(&self) -> usize {
        self.region.size / 8
    }

    /// Reads the `i`-th 64-bit word (volatile: the SMMU may write it).
    pub fn read_u64(&self, i: usize) -> u64 {
        assert!(i < self.len_u64());
        // SAFETY: in bounds (checked above), 8-byte aligned because the region
        // is at least page aligned, and owned by this guard.
        unsafe { self.vaddr().cast::<u64>().add(i).read_volatile() }
    }

    /// Writes the `i`-th 64-bit word (volatile, single-copy atomic on AArch64).
    /// The write is not published to a non-coherent SMMU until
    /// [`Dma::publish`].
    pub fn write_u64(&self, i: usize, value: u64) {
        assert!(i < self.len_u64());
        #[cfg(test)]
        crate::fake::trace(crate::fake::Trace::Store {
            addr: self.vaddr() as usize + i * 8,
            len: 8,
        });
        // SAFETY: as in `read_u64`; the SMMU may read concurrently, which is
        // why the access is volatile and 64-bit.
        unsafe { self.vaddr().cast::<u64>().add(i).write_volatile(value) }
    }

    /// Writes words `[first, first + count)` with `value`, `value + step`,
    /// `value + 2 * step`, ... (wrapping): a run of descriptors whose
    /// address field advances by a fixed size. Each word is one volatile
    /// 64-bit store, as with [`Dma::write_u64`], but the range is checked
    /// once for the run. Not published: call [`Dma::publish`] over the run
    /// (or more) afterwards.
    pub(crate) fn write_run(&self, first: usize, count: usize, value: u64, step: u64) {
        assert!(first <= self.len_u64() && count <= self.len_u64() - first);
        // SAFETY: `first` is at most the word count, so the pointer stays
        // inside (or one past) the region.
        let base = unsafe { self.vaddr().cast::<u64>().add(first) };
        #[cfg(test)]
        crate::fake::trace(crate::fake::Trace::Store {
            addr: base as usize,
            len: count * 8,
        });
        let mut v = value;
        for i in 0..count {
            // SAFETY: `first + i < first + count <= len_u64()` (checked
            // above), 8-byte aligned, owned by this guard; volatile and
            // 64-bit for the same reason as in `write_u64`.
            unsafe { base.add(i).write_volatile(v) };
            v = v.wrapping_add(step);
        }
    }

    /// Makes SMMU writes to words `[first, first + count)` visible to the CPU:
    /// a cache invalidate when the SMMU is not coherent. Call after reading
    /// the producer index that covers them.
    pub fn refresh(&self, first: usize, count: usize) {
        crate::barrier::dsb_ld();
        if !self.coherent {
            let (start, len) = self.bytes_of(first, count);
            H::dcache_invalidate(start, len);
        }
    }

    /// Makes CPU writes to words `[first, first + count)` visible to the SMMU:
    /// a cache clean when it is not coherent, then a `DSB ST` in any case.
    pub fn publish(&self, first: usize, count: usize) {
        if !self.coherent {
            let (start, len) = self.bytes_of(first, count);
            H::dcache_clean(start, len);
        }
        crate::barrier::dsb_st();
    }

    /// For memory the SMMU writes (the event queue): cleans, then
    /// invalidates, the whole region when the SMMU is not coherent, then
    /// `DSB ST`. Afterwards no cache holds a dirty line of it, so nothing
    /// the CPU wrote earlier (the allocator's zeroes) can be written back
    /// over what the SMMU writes later.
    pub fn clean_and_invalidate(&self) {
        if !self.coherent {
            let (start, len) = self.bytes_of(0, self.len_u64());
            H::dcache_clean(start, len);
            H::dcache_invalidate(start, len);
        }
        crate::barrier::dsb_st();
    }

    /// The bytes of words `[first, first + count)`, clamped to the region.
    fn bytes_of(&self, first: usize, count: usize) -> (*const u8, usize) {
        let start = first.min(self.len_u64()) * 8;
        let len = count.saturating_mul(8).min(self.size() - start);
        // SAFETY: `start <= size`, so the pointer stays inside (or one past)
        // the region.
        (unsafe { self.vaddr().add(start) }, len)
    }
}

impl<H: Hal> Drop for Dma<H> {
    fn drop(&mut self) {
        // SAFETY: the region came from `dma_alloc` and this guard is its only
        // owner; whoever held it for the SMMU (a table or queue) has already
        // removed it from the SMMU's view before dropping it.
        unsafe { H::dma_free(self.region) }
    }
}

/// Polls `done` until it returns `true` or `timeout_ns` elapses on the HAL
/// clock. Returns `Err(Error::Timeout(what))` on expiry.
pub(crate) fn wait_for<H: Hal>(
    what: crate::error::Wait,
    timeout_ns: u64,
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let start = H::now_ns();
    loop {
        if done() {
            return Ok(());
        }
        if H::now_ns().wrapping_sub(start) > timeout_ns {
            // One last look: the condition may have become true while we were
            // descheduled.
            return if done() {
                Ok(())
            } else {
                Err(Error::Timeout(what))
            };
        }
        core::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::Dma;
    use crate::fake::FakeHal;

    /// `publish` on a coherent SMMU is one `DSB ST` (the specification's
    /// "perform a DSB" before the SMMU is told to read, IHI 0070 §3.21.2,
    /// §3.21.3.1); on a non-coherent one, a clean of exactly the published
    /// words, then `DSB ST` (the clean must complete first).
    #[test]
    fn publish_completes_the_stores_and_cleans_first_when_not_coherent() {
        use crate::fake::{Trace, start_trace, take_trace};
        let d = Dma::<FakeHal>::new(4096, 4096, true).unwrap();
        d.write_u64(5, 1);
        start_trace();
        d.publish(5, 2);
        assert_eq!(take_trace(), [Trace::Barrier("dsb st")]);
        let d = Dma::<FakeHal>::new(4096, 4096, false).unwrap();
        d.write_u64(5, 1);
        start_trace();
        d.publish(5, 2);
        assert_eq!(
            take_trace(),
            [
                Trace::Clean {
                    addr: d.vaddr() as usize + 40,
                    len: 16
                },
                Trace::Barrier("dsb st")
            ]
        );
    }

    /// `write_run` writes `value + i * step` to each word of the run and
    /// nothing outside it.
    #[test]
    fn write_run_writes_the_run_only() {
        let d = Dma::<FakeHal>::new(4096, 4096, true).unwrap();
        d.write_run(3, 5, 0x4000_0743, 0x1000);
        for i in 0..d.len_u64() {
            let want = match i {
                3..=7 => 0x4000_0743 + (i as u64 - 3) * 0x1000,
                _ => 0,
            };
            assert_eq!(d.read_u64(i), want, "word {i}");
        }
        // An empty run at the very end writes nothing; a run up to the
        // last word is in range.
        d.write_run(d.len_u64(), 0, 1, 1);
        d.write_run(510, 2, 7, 2);
        assert_eq!(
            (d.read_u64(509), d.read_u64(510), d.read_u64(511)),
            (0, 7, 9)
        );
    }

    #[test]
    #[should_panic]
    fn write_run_past_the_end_is_refused() {
        let d = Dma::<FakeHal>::new(4096, 4096, true).unwrap();
        d.write_run(500, 13, 1, 1);
    }
}
