//! A HAL whose memory lies below 4 GiB, for SMMUs with a 32-bit OAS.

use super::*;

// ---------------------------------------------------------------------------
// A HAL whose memory lies below 4 GiB, so that SMMUs with a 32-bit OAS can
// be driven on the host: a first-fit allocator over an anonymous mapping
// at a fixed low address (identity-mapped like `FakeHal`).
// ---------------------------------------------------------------------------

unsafe extern "C" {
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut u8;
}

const ARENA: usize = 0x6000_0000;
const ARENA_LEN: usize = 0x1000_0000;

pub(super) struct Arena {
    /// Free ranges [start, end), sorted and coalesced.
    free: Vec<(usize, usize)>,
}

pub(super) fn low_arena() -> Option<&'static Mutex<Arena>> {
    static ARENA_LOCK: std::sync::OnceLock<Option<Mutex<Arena>>> = std::sync::OnceLock::new();
    ARENA_LOCK
        .get_or_init(|| {
            // PROT_READ | PROT_WRITE; MAP_PRIVATE | MAP_ANONYMOUS |
            // MAP_NORESERVE | MAP_FIXED_NOREPLACE (Linux x86_64 values).
            // SAFETY: FIXED_NOREPLACE never replaces an existing mapping.
            let p = unsafe {
                mmap(
                    ARENA as *mut u8,
                    ARENA_LEN,
                    3,
                    0x02 | 0x20 | 0x4000 | 0x10_0000,
                    -1,
                    0,
                )
            };
            (p as usize == ARENA).then(|| {
                Mutex::new(Arena {
                    free: std::vec![(ARENA, ARENA + ARENA_LEN)],
                })
            })
        })
        .as_ref()
}

/// [`FakeHal`] with memory from the low arena.
#[derive(Debug)]
pub(super) struct LowHal;

// SAFETY: regions are disjoint (first-fit over a free list), zeroed, aligned
// as asked, identity-mapped, and stay mapped for the whole process.
unsafe impl Hal for LowHal {
    fn dma_alloc(size: usize, align: usize) -> Option<DmaRegion> {
        let mut a = low_arena()?.lock().unwrap_or_else(|e| e.into_inner());
        let align = align.max(64);
        let i = a
            .free
            .iter()
            .position(|&(s, e)| s.next_multiple_of(align) + size <= e)?;
        let (s, e) = a.free[i];
        let start = s.next_multiple_of(align);
        a.free.remove(i);
        if start + size < e {
            a.free.insert(i, (start + size, e));
        }
        if s < start {
            a.free.insert(i, (s, start));
        }
        // SAFETY: [start, start + size) is inside the arena and now ours.
        unsafe { core::ptr::write_bytes(start as *mut u8, 0, size) };
        Some(DmaRegion {
            paddr: start as u64,
            vaddr: core::ptr::NonNull::new(start as *mut u8)?,
            size,
        })
    }

    unsafe fn dma_free(region: DmaRegion) {
        let Some(lock) = low_arena() else { return };
        let mut a = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (s, e) = (region.paddr as usize, region.paddr as usize + region.size);
        let i = a.free.partition_point(|&(fs, _)| fs < s);
        a.free.insert(i, (s, e));
        if i + 1 < a.free.len() && a.free[i].1 == a.free[i + 1].0 {
            a.free[i].1 = a.free[i + 1].1;
            a.free.remove(i + 1);
        }
        if i > 0 && a.free[i - 1].1 == a.free[i].0 {
            a.free[i - 1].1 = a.free[i].1;
            a.free.remove(i);
        }
    }

    fn dcache_clean(_: *const u8, _: usize) {}

    fn dcache_invalidate(_: *const u8, _: usize) {}

    fn now_ns() -> u64 {
        FakeHal::now_ns()
    }
}
