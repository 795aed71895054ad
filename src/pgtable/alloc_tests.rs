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
