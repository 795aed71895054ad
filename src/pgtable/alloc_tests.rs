//! Heap behaviour of the engine, for both formats: edits over tables that
//! already exist make no heap allocation (counted by the test binary's
//! global allocator, [`crate::fake::heap_allocations`]), and neither does
//! any unmap, even one that retires tables.

use super::*;
use crate::fake::{FakeHal, heap_allocations};
use crate::stage2::Stage2Config;

const K: u64 = 1 << 10;
const M: u64 = 1 << 20;

/// Heap allocations `f` makes on this thread.
fn allocations<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = heap_allocations();
    let r = f();
    (r, heap_allocations() - before)
}

/// Edits over existing tables, checked one by one: `t` maps
/// `[base, base + 4M)` with pages, so two level-3 tables exist.
macro_rules! edits_without_allocation {
    ($t:expr, $base:expr) => {{
        let t = &mut $t;
        let b = $base;
        let opts = MapOptions {
            blocks: false,
            ..MapOptions::normal(Perm::ReadWrite)
        };
        // A fresh tree: the first unmap that retires a table must not
        // allocate either (no warm-up).
        t.map_with(b, 0x8000_0000, 4 * M, &opts).unwrap();
        let mut counts = Vec::new();
        // One page, and a run inside one level-3 table.
        counts.push(allocations(|| t.unmap(b + 8 * K, 4 * K)).1);
        counts.push(allocations(|| t.map(b + 8 * K, 0x9000_0000, 4 * K, Perm::Read)).1);
        counts.push(allocations(|| t.unmap(b + 64 * K, 256 * K)).1);
        counts.push(allocations(|| t.map(b + 64 * K, 0x9000_0000, 256 * K, Perm::Read)).1);
        // Across the two level-3 tables.
        counts.push(allocations(|| t.unmap(b + 2 * M - 64 * K, 128 * K)).1);
        counts.push(allocations(|| t.map(b + 2 * M - 64 * K, 0x9000_0000, 128 * K, Perm::Read)).1);
        counts.push(allocations(|| t.protect(b + M, 2 * M, Perm::Read)).1);
        counts.push(allocations(|| t.query(b + 3 * M).map(|x| x.pa)).1);
        counts.push(allocations(|| t.check_range_mapped(b, 4 * M)).1);
        counts.push(allocations(|| t.partial_block(b, 4 * M)).1);
        // Unmaps that empty both level-3 tables (and the level-2 table
        // above them), then the release after the invalidation.
        counts.push(allocations(|| t.unmap(b, 2 * M)).1);
        counts.push(allocations(|| t.unmap(b + 2 * M, 2 * M)).1);
        counts.push(allocations(|| t.release_retired()).1);
        counts
    }};
}

#[test]
fn stage2_edits_over_existing_tables_do_not_allocate() {
    let cfg = Stage2Config::new(Granule::K4, 40, 48).unwrap();
    let mut t = Stage2Table::<FakeHal>::new(cfg, true).unwrap();
    let counts = edits_without_allocation!(t, 0x4000_0000);
    assert_eq!(counts, [0; 13], "allocations per call");
}

#[test]
fn stage1_edits_over_existing_tables_do_not_allocate() {
    let geo = Geometry::stage1(Granule::K4, 40, 48).unwrap();
    let mut t = Stage1Table::<FakeHal>::new(geo, true).unwrap();
    let counts = edits_without_allocation!(t, 0x4000_0000);
    assert_eq!(counts, [0; 13], "allocations per call");
}

/// The slab bookkeeping a map or a split needs (slab slots, the free and
/// retired lists' room, the child slots of a new table above the last
/// level) is reserved fallibly before the call changes anything: with
/// the heap refusing (`fail_reservations_after`), the call returns
/// `NoMemory` and the tree is as it was. On the code before this test
/// these were infallible `Vec` growth and `vec!` (an abort when the heap
/// runs out): no reservation could fail, and the first map succeeded.
#[test]
fn map_without_heap_for_bookkeeping_changes_nothing() {
    let cfg = Stage2Config::new(Granule::K4, 40, 48).unwrap();
    let opts = MapOptions {
        blocks: false,
        ..MapOptions::normal(Perm::ReadWrite)
    };
    let mut refused = 0;
    for k in 0.. {
        let mut t = Stage2Table::<FakeHal>::new(cfg, true).unwrap();
        let (tables, bytes) = (t.tables(), t.table_bytes());
        crate::fake::fail_reservations_after(Some(k));
        let r = t.map_with(0x4000_0000, 0x8000_0000, 4 * M, &opts);
        crate::fake::fail_reservations_after(None);
        match r {
            Err(e) => {
                assert_eq!(e, crate::Error::NoMemory, "reservation {k}");
                assert_eq!(
                    (t.tables(), t.table_bytes()),
                    (tables, bytes),
                    "reservation {k}"
                );
                assert_eq!(t.query(0x4000_0000), None, "reservation {k}");
                refused += 1;
            }
            Ok(()) => {
                assert!(t.query(0x403F_F000).is_some());
                break;
            }
        }
    }
    assert!(refused > 0, "the map reserved nothing fallibly");
}

/// Splitting a 1 GiB block down to a page: `reserve_splits` takes
/// everything (tables, the level-2 table's child slots, slab room)
/// fallibly, and the splits then allocate nothing on the heap. On the
/// code before, the install of the level-2 table allocated its child
/// slots (`vec!`) and could grow the slab.
#[test]
fn splits_allocate_only_in_reserve_splits() {
    const G: u64 = 1 << 30;
    let cfg = Stage2Config::new(Granule::K4, 40, 48).unwrap();
    let mut t = Stage2Table::<FakeHal>::new(cfg, true).unwrap();
    t.map(G, 8 * G, G, Perm::ReadWrite).unwrap();
    let (ipa, len) = (G + 2 * M + 4 * K, 4 * K);
    let tables = t.tables();
    crate::fake::fail_reservations_after(Some(0));
    let r = t.reserve_splits(ipa, len).map(|r| r.len());
    crate::fake::fail_reservations_after(None);
    assert_eq!(r, Err(crate::Error::NoMemory));
    assert_eq!(t.tables(), tables);
    assert_eq!(
        t.query(ipa).unwrap().pa,
        8 * G + 2 * M + 4 * K,
        "the block is intact"
    );
    let mut reserve = t.reserve_splits(ipa, len).unwrap();
    let (done, n) = allocations(|| {
        let mut done = 0;
        while let Some(b) = t.partial_block(ipa, len).unwrap() {
            let split = t.prepare_split_from(&b, &mut reserve).unwrap();
            t.install_split(&b, split).unwrap();
            done += 1;
        }
        done
    });
    assert_eq!((done, n), (2, 0), "(splits, heap allocations)");
    assert_eq!(t.query(ipa).unwrap().pa, 8 * G + 2 * M + 4 * K);
}
