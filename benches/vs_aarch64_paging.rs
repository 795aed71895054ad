//! `make bench-host`: the driver's stage-2 tables ([`Stage2Table`]) against
//! `aarch64-paging` 0.12's stage-2 regime (`Mapping<_, Stage2>`), on the
//! host, on the same page allocator and the same work, in one run.
//!
//! Both sides take their 4 KiB tables from one pool of pages carved out of a
//! single host buffer (a free list over a bump pointer; every page zeroed
//! when handed out), which also counts the table bytes each side holds.
//! Geometry: 4K granule, a 39-bit IPA space, so both start at level 1 with
//! one 4 KiB root table. The PA is one page off the IPA, so no block mapping
//! fits and every mapping is a 4K page, on both sides.
//!
//! What each side does per piece of work:
//!
//! - ours: `Stage2Table::map` / `unmap` (every call validates the whole
//!   request before writing, publishes each table once, allocates every
//!   table before writing, and unlinks tables that become empty); after the
//!   unmaps, `release_retired` gives the tables back (timed).
//! - aarch64-paging: `Mapping::map_range` with `NO_BLOCK_MAPPINGS`, on an
//!   inactive mapping (its fastest path: no break-before-make checks, no
//!   TLB maintenance); unmapping is `map_range` with flags lacking VALID. A
//!   one-call unmap of the whole GiB frees the subtables directly; after
//!   separate unmaps `compact_subtables` gives the empty tables back (timed).
//!
//! Each piece of work is run 3 times (`BENCH_ROUNDS`) on fresh tables and the fastest
//! round of each side is printed. The ratio is aarch64-paging's time divided
//! by ours; `tables` is the table memory each side holds after the work.

use std::alloc::{Layout, alloc_zeroed};
use std::cell::RefCell;
use std::ptr::NonNull;
use std::time::Instant;

use aarch64_paging::Mapping;
use aarch64_paging::descriptor::{PhysicalAddress, Stage2Attributes};
use aarch64_paging::paging::{Constraints, MemoryRegion, PageTable, Stage2, Translation};
use smmuv3::hal::{DmaRegion, Hal};
use smmuv3::stage2::{Granule, Perm, Stage2Config, Stage2Table};

const PAGE: usize = 4096;
/// Pages in the pool: 1 GiB of 4K pages needs 1 + 1 + 512 tables per side.
const POOL_PAGES: usize = 2048;
const GIB: u64 = 1 << 30;
const PAGES: u64 = GIB / PAGE as u64;
const IPA: u64 = 0x4000_0000;
const PA: u64 = 0x4000_1000;
/// Rounds per piece of work (`BENCH_ROUNDS` overrides, e.g. 1 under
/// callgrind).
fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
}

/// A page allocator over one host buffer, shared by both implementations.
struct Pool {
    base: *mut u8,
    next: usize,
    free: Vec<usize>,
    live: usize,
}

impl Pool {
    fn new() -> Self {
        let layout = Layout::from_size_align(POOL_PAGES * PAGE, PAGE).unwrap();
        // SAFETY: non-zero size.
        let base = unsafe { alloc_zeroed(layout) };
        assert!(!base.is_null());
        Pool {
            base,
            next: 0,
            free: Vec::with_capacity(POOL_PAGES),
            live: 0,
        }
    }

    fn alloc(&mut self) -> Option<*mut u8> {
        let i = match self.free.pop() {
            Some(i) => i,
            None if self.next < POOL_PAGES => {
                self.next += 1;
                self.next - 1
            }
            None => return None,
        };
        // SAFETY: page `i` is inside the buffer and owned by nobody else.
        let p = unsafe { self.base.add(i * PAGE) };
        // SAFETY: as above; the Hal and Translation contracts want zeroes.
        unsafe { p.write_bytes(0, PAGE) };
        self.live += PAGE;
        Some(p)
    }

    fn free(&mut self, p: *mut u8) {
        let i = (p as usize - self.base as usize) / PAGE;
        self.live -= PAGE;
        self.free.push(i);
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::new());
}

fn live_bytes() -> usize {
    POOL.with(|p| p.borrow().live)
}

/// Our side's HAL: pages from the pool, physical = virtual address.
struct BenchHal;

// SAFETY: pages are zeroed, page aligned, owned until freed, and
// paddr == vaddr on the host.
unsafe impl Hal for BenchHal {
    fn dma_alloc(size: usize, align: usize) -> Option<DmaRegion> {
        assert!(
            size == PAGE && align <= PAGE,
            "bench pool hands out pages only"
        );
        let p = POOL.with(|pool| pool.borrow_mut().alloc())?;
        Some(DmaRegion {
            paddr: p as u64,
            vaddr: NonNull::new(p)?,
            size,
        })
    }

    unsafe fn dma_free(region: DmaRegion) {
        POOL.with(|pool| pool.borrow_mut().free(region.vaddr.as_ptr()));
    }

    fn dcache_clean(_vaddr: *const u8, _len: usize) {}

    fn dcache_invalidate(_vaddr: *const u8, _len: usize) {}

    fn now_ns() -> u64 {
        0
    }
}

/// aarch64-paging's side: the same pool.
struct BenchTranslation;

impl Translation<Stage2Attributes> for BenchTranslation {
    fn allocate_table(&mut self) -> (NonNull<PageTable<Stage2Attributes>>, PhysicalAddress) {
        let p = POOL
            .with(|pool| pool.borrow_mut().alloc())
            .expect("bench pool exhausted");
        (NonNull::new(p.cast()).unwrap(), PhysicalAddress(p as usize))
    }

    unsafe fn deallocate_table(&mut self, table: NonNull<PageTable<Stage2Attributes>>) {
        POOL.with(|pool| pool.borrow_mut().free(table.as_ptr().cast()));
    }

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<Stage2Attributes>> {
        NonNull::new(pa.0 as *mut _).unwrap()
    }
}

type Ours = Stage2Table<BenchHal>;
type Theirs = Mapping<BenchTranslation, Stage2>;

fn ours() -> Ours {
    // 39-bit IPA: start level 1, one 4 KiB root, as aarch64-paging's level-1 root.
    let cfg = Stage2Config::new(Granule::K4, 39, 48).unwrap();
    assert_eq!((cfg.start_level(), cfg.root_table_bytes()), (1, PAGE));
    Stage2Table::new(cfg, true).unwrap()
}

fn theirs() -> Theirs {
    Mapping::new(BenchTranslation, 1, Stage2)
}

/// Normal write-back, inner shareable, read/write, AF: what `Perm::ReadWrite`
/// maps on our side (aarch64-paging adds the page bit itself).
fn flags() -> Stage2Attributes {
    Stage2Attributes::VALID
        | Stage2Attributes::MEMATTR_NORMAL_INNER_WB
        | Stage2Attributes::MEMATTR_NORMAL_OUTER_WB
        | Stage2Attributes::S2AP_ACCESS_RW
        | Stage2Attributes::SH_INNER
        | Stage2Attributes::ACCESS_FLAG
}

fn region(ipa: u64, len: u64) -> MemoryRegion {
    MemoryRegion::new(ipa as usize, (ipa + len) as usize)
}

#[inline(never)]
fn our_map(t: &mut Ours, pages: &[u64]) {
    for &p in pages {
        t.map(IPA + p * 4096, PA + p * 4096, 4096, Perm::ReadWrite)
            .unwrap();
    }
}

#[inline(never)]
fn our_unmap(t: &mut Ours, pages: &[u64]) {
    for &p in pages {
        t.unmap(IPA + p * 4096, 4096).unwrap();
    }
    t.release_retired();
}

#[inline(never)]
fn their_map(m: &mut Theirs, pages: &[u64]) {
    for &p in pages {
        m.map_range(
            &region(IPA + p * 4096, 4096),
            PhysicalAddress((PA + p * 4096) as usize),
            flags(),
            Constraints::NO_BLOCK_MAPPINGS,
        )
        .unwrap();
    }
}

#[inline(never)]
fn their_unmap(m: &mut Theirs, pages: &[u64]) {
    for &p in pages {
        m.map_range(
            &region(IPA + p * 4096, 4096),
            PhysicalAddress(0),
            Stage2Attributes::empty(),
            Constraints::NO_BLOCK_MAPPINGS,
        )
        .unwrap();
    }
    m.compact_subtables();
}

// The one-call work, in named functions that are never inlined, so that
// `valgrind --tool=callgrind` counts each side's instructions by function
// (inclusive cost of `our_*` / `their_*`).

#[inline(never)]
fn our_map_all(t: &mut Ours) {
    t.map(IPA, PA, GIB, Perm::ReadWrite).unwrap();
}

#[inline(never)]
fn our_unmap_all(t: &mut Ours) {
    t.unmap(IPA, GIB).unwrap();
    t.release_retired();
}

#[inline(never)]
fn their_map_all(m: &mut Theirs) {
    m.map_range(
        &region(IPA, GIB),
        PhysicalAddress(PA as usize),
        flags(),
        Constraints::NO_BLOCK_MAPPINGS,
    )
    .unwrap();
}

#[inline(never)]
fn their_unmap_all(m: &mut Theirs) {
    m.map_range(
        &region(IPA, GIB),
        PhysicalAddress(0),
        Stage2Attributes::empty(),
        Constraints::NO_BLOCK_MAPPINGS,
    )
    .unwrap();
}

/// A fixed-seed Fisher-Yates shuffle of `0..n` (splitmix64).
fn shuffled(n: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut s = 0x5eed_5eed_u64;
    let mut next = || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..v.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// Best-of-`ROUNDS` time (ns) of `work` and the table bytes held after it.
/// `setup` builds the state the work starts from (untimed).
fn measure<S>(mut setup: impl FnMut() -> S, mut work: impl FnMut(&mut S)) -> (u128, usize) {
    let mut best = u128::MAX;
    let mut bytes = 0;
    for _ in 0..rounds() {
        let base = live_bytes();
        let mut s = setup();
        let t0 = Instant::now();
        work(&mut s);
        let dt = t0.elapsed().as_nanos();
        best = best.min(dt);
        bytes = live_bytes() - base;
        drop(s);
        assert_eq!(live_bytes(), base, "tables leaked");
    }
    (best, bytes)
}

fn line(work: &str, ours: (u128, usize), theirs: (u128, usize)) {
    println!(
        "bench: vs aarch64-paging: {work}: ours {:.3} ms, aarch64-paging {:.3} ms, ratio {:.2}x, tables {}/{} KiB",
        ours.0 as f64 / 1e6,
        theirs.0 as f64 / 1e6,
        theirs.0 as f64 / ours.0 as f64,
        ours.1 / 1024,
        theirs.1 / 1024
    );
}

/// Whether to run the piece of work `name` (`BENCH_ONLY`: the start of
/// the names to run, for profiling one; "map 1 GiB" is not "unmap 1 GiB").
fn want(name: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| name.starts_with(&only))
}

fn main() {
    let in_order: Vec<u64> = (0..PAGES).collect();
    let random = shuffled(PAGES);

    // 1 GiB in one call each way.
    let name = "map 1 GiB of 4K pages in one call";
    if want(name) {
        let o = measure(ours, our_map_all);
        let a = measure(theirs, their_map_all);
        line(name, o, a);
    }
    let name = "unmap 1 GiB of 4K pages in one call";
    if want(name) {
        let o = measure(
            || {
                let mut t = ours();
                our_map_all(&mut t);
                t
            },
            our_unmap_all,
        );
        let a = measure(
            || {
                let mut m = theirs();
                their_map_all(&mut m);
                m
            },
            their_unmap_all,
        );
        line(name, o, a);
    }

    for (order, pages) in [("in order", &in_order), ("random order", &random)] {
        let name = format!("{PAGES} 4K map calls, {order}");
        if want(&name) {
            let o = measure(ours, |t| our_map(t, pages));
            let a = measure(theirs, |m| their_map(m, pages));
            line(&name, o, a);
        }
        let name = format!("{PAGES} 4K unmap calls, {order}");
        if !want(&name) {
            continue;
        }
        let o = measure(
            || {
                let mut t = ours();
                our_map(&mut t, pages);
                t
            },
            |t| our_unmap(t, pages),
        );
        let a = measure(
            || {
                let mut m = theirs();
                their_map(&mut m, pages);
                m
            },
            |m| their_unmap(m, pages),
        );
        line(&name, o, a);
    }
}
