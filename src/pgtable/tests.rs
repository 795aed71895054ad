//! Host tests of the generic engine with the stage-1 format: descriptor
//! bits pinned against the architecture's positions, geometry, and the
//! map/unmap/protect/split behaviour.

use super::format::s1::MAIR;
use super::*;
use crate::error::{Error, TableError, Unsupported};
use crate::fake::FakeHal;

type T = Stage1Table<FakeHal>;

const M2: u64 = 2 << 20;

fn table(g: Granule, va: u32) -> T {
    T::new(Geometry::stage1(g, va, 48).unwrap(), true).unwrap()
}

/// The raw leaf for `va` (walking by hand, as the SMMU would).
fn leaf(t: &T, va: u64) -> (u32, u64) {
    let geo = *t.geometry();
    let mut table = t.root_paddr();
    for level in geo.start_level()..=3 {
        let bits = if level == geo.start_level() {
            geo.root_entries().trailing_zeros()
        } else {
            geo.stride()
        };
        let idx = (va >> geo.level_shift(level)) & ((1 << bits) - 1);
        // SAFETY: FakeHal memory is host heap memory at paddr == vaddr,
        // owned by the table, and `idx` is inside the table.
        let raw = unsafe { (table as *const u64).add(idx as usize).read() };
        assert!(raw & 1 == 1, "invalid at level {level}");
        if level < 3 && raw & 2 != 0 {
            table = raw & 0x0000_FFFF_FFFF_F000;
        } else {
            return (level, raw);
        }
    }
    unreachable!()
}

#[test]
fn geometry_start_levels() {
    // (granule, VA bits) -> (start level, root entries)
    for (g, va, level, entries) in [
        (Granule::K4, 25, 2, 16),
        (Granule::K4, 39, 1, 512),
        (Granule::K4, 40, 0, 2),
        (Granule::K4, 48, 0, 512),
        (Granule::K16, 36, 2, 2048),
        (Granule::K16, 40, 1, 16),
        (Granule::K16, 48, 0, 2),
        (Granule::K64, 42, 2, 8192),
        (Granule::K64, 48, 1, 64),
    ] {
        let geo = Geometry::stage1(g, va, 44).unwrap();
        assert_eq!(
            (geo.start_level(), geo.root_entries()),
            (level, entries),
            "{g:?} {va}"
        );
    }
    assert_eq!(
        Geometry::stage1(Granule::K4, 49, 44),
        Err(Error::Unsupported(Unsupported::AddressSize))
    );
    assert_eq!(
        Geometry::stage1(Granule::K4, 40, 52),
        Err(Error::Unsupported(Unsupported::AddressSize))
    );
    assert!(matches!(
        Geometry::stage1(Granule::K4, 24, 44),
        Err(Error::Table(TableError::InputTooSmall(24)))
    ));
    assert!(matches!(
        Geometry::stage1(Granule::K4, 40, 43),
        Err(Error::Table(TableError::OutputSize(43)))
    ));
    assert_eq!(
        Geometry::stage1(Granule::K4, 40, 44)
            .unwrap()
            .oas_encoding(),
        4
    );
}

#[test]
fn k16_root_entries_for_40_bits() {
    // 16K: level 1 resolves bits [46:36]; 40 bits leave 4 of them.
    assert_eq!(
        Geometry::stage1(Granule::K16, 40, 44)
            .unwrap()
            .root_entries(),
        16
    );
}

#[test]
fn mair_attr0_normal_attr1_device() {
    assert_eq!(MAIR, 0x04FF);
}

#[test]
fn stage1_leaf_bits_pinned() {
    let mut t = table(Granule::K4, 40);
    let pa = 0x8_1234_5000;
    t.map(0x4000_1000, pa, 0x1000, Perm::ReadWrite).unwrap();
    let (level, raw) = leaf(&t, 0x4000_1000);
    assert_eq!(level, 3);
    // By hand, Arm ARM D8 stage-1 page descriptor:
    //   valid [0] = 1, page [1] = 1                  -> 0x3
    //   AttrIndx [4:2] = 0 (Normal)                   -> 0
    //   AP[1] [6] = 0 (no EL0), AP[2] [7] = 0 (RW)    -> 0
    //   SH [9:8] = 3 (inner)                          -> 0x300
    //   AF [10] = 1                                   -> 0x400
    //   nG [11] = 1                                   -> 0x800
    //   OA [47:12]                                    -> pa
    //   PXN [53] = 0 (map() is executable), UXN [54] = 1
    assert_eq!(raw, pa | 0xF03 | 1 << 54);
    // Read-only, Device, execute-never, block.
    let dev = MapOptions {
        perm: Perm::Read,
        ..MapOptions::device()
    };
    t.map_with(0x4020_0000, 0x9000_0000, M2, &dev).unwrap();
    let (level, raw) = leaf(&t, 0x4020_0000);
    assert_eq!(level, 2);
    //   block: type [1] = 0; AttrIndx = 1 -> 0x4; AP[2] = 1 -> 0x80;
    //   SH = 2 (outer) -> 0x200; AF, nG; PXN and UXN.
    assert_eq!(
        raw,
        0x9000_0000 | 0x1 | 0x4 | 0x80 | 0x200 | 0xC00 | 3 << 53
    );
    let q = t.query(0x4020_1234).unwrap();
    assert_eq!(
        (q.pa, q.perm, q.size, q.memory, q.execute),
        (0x9000_1234, Perm::Read, M2, Memory::Device, false)
    );
}

#[test]
fn write_only_is_refused_and_changes_nothing() {
    let mut t = table(Granule::K4, 40);
    let before = t.snapshot();
    assert!(matches!(
        t.map(0x1000, 0x1000, 0x1000, Perm::Write),
        Err(Error::Table(TableError::Permission(Perm::Write)))
    ));
    assert_eq!(t.snapshot(), before);
    t.map(0x1000, 0x1000, 0x1000, Perm::ReadWrite).unwrap();
    let before = t.snapshot();
    assert!(t.protect(0x1000, 0x1000, Perm::Write).is_err());
    assert_eq!(t.snapshot(), before);
}

#[test]
fn protect_flips_only_ap2() {
    let mut t = table(Granule::K4, 40);
    t.map(0x4000_0000, 0x8000_0000, 0x2000, Perm::ReadWrite)
        .unwrap();
    let (_, rw) = leaf(&t, 0x4000_1000);
    t.protect(0x4000_1000, 0x1000, Perm::Read).unwrap();
    let (_, ro) = leaf(&t, 0x4000_1000);
    assert_eq!(rw ^ ro, 1 << 7);
    assert_eq!(t.query(0x4000_0000).unwrap().perm, Perm::ReadWrite);
    assert_eq!(t.query(0x4000_1000).unwrap().perm, Perm::Read);
}

#[test]
fn unmap_frees_emptied_tables_after_release() {
    let mut t = table(Granule::K4, 40);
    t.map(0x40_0000_1000, 0x8000_1000, 0x1000, Perm::ReadWrite)
        .unwrap();
    let tables = t.tables();
    assert_eq!(tables, 4, "levels 0..3");
    t.unmap(0x40_0000_1000, 0x1000).unwrap();
    assert_eq!(t.query(0x40_0000_1000), None);
    assert_eq!((t.tables(), t.retired_tables()), (1, 3));
    assert_eq!(t.release_retired(), 3);
    assert_eq!(
        t.unmap(0x40_0000_1000, 0x1000),
        Err(Error::NotMapped {
            addr: 0x40_0000_1000
        })
    );
}

#[test]
fn split_keeps_every_page_and_its_attributes() {
    for g in [Granule::K4, Granule::K16, Granule::K64] {
        let geo = Geometry::stage1(g, 40, 48).unwrap();
        let block = 1u64 << geo.level_shift(2);
        let mut t = T::new(geo, true).unwrap();
        let opts = MapOptions {
            execute: false,
            ..MapOptions::normal(Perm::ReadWrite)
        };
        t.map_with(block, 4 * block, block, &opts).unwrap();
        let (_, raw) = leaf(&t, block);
        let page = geo.granule_size();
        let b = t
            .partial_block(block + page, page)
            .unwrap()
            .expect("a partial block");
        assert_eq!((b.ipa, b.size, b.level), (block, block, 2));
        let split = t.prepare_split(&b).unwrap();
        t.break_block(&b).unwrap();
        assert_eq!(t.query(block), None, "broken");
        t.install_split(&b, split).unwrap();
        for i in [0, 1, block / page - 1] {
            let (level, p) = leaf(&t, block + i * page);
            assert_eq!(level, 3);
            // Only TYPE (bit 1) and the address differ from the block.
            assert_eq!(p, (raw | 2) + i * page, "{g:?} page {i}");
        }
        t.unmap(block + page, page).unwrap();
        assert_eq!(t.query(block + page), None);
        assert_eq!(t.query(block).unwrap().pa, 4 * block);
    }
}

#[test]
fn refusals_change_nothing() {
    let mut t = table(Granule::K4, 40);
    t.map(0x4000_0000, 0x8000_0000, M2, Perm::ReadWrite)
        .unwrap();
    let before = t.snapshot();
    assert_eq!(
        t.map(0x4000_0000, 0x8000_0000, 0x1000, Perm::Read),
        Err(Error::Overlap { addr: 0x4000_0000 })
    );
    assert!(matches!(
        t.unmap(0x4000_1000, 0x1000),
        Err(Error::Table(TableError::SplitsBlock { addr: 0x4000_1000 }))
    ));
    assert_eq!(
        t.map(1 << 40, 0, 0x1000, Perm::Read),
        Err(Error::RangeOverflow {
            addr: 1 << 40,
            len: 0x1000
        })
    );
    assert_eq!(
        t.map(0x1000, 0x800, 0x1000, Perm::Read),
        Err(Error::Misaligned {
            addr: 0x800,
            align: 0x1000
        })
    );
    assert_eq!(t.snapshot(), before);
}

/// The walk cursor never outlives the level-3 table it names: once that
/// table is unlinked (emptied page by page, or retired whole) and its slab
/// slot reused by a table in another region, a call in the old region
/// descends from the root again instead of writing into the new table.
#[test]
fn cursor_is_dropped_with_its_table() {
    let pages = MapOptions {
        blocks: false,
        ..MapOptions::normal(Perm::ReadWrite)
    };
    for whole in [false, true] {
        let mut t = table(Granule::K4, 39);
        let (r, s) = (0x4000_0000u64, 0x4000_0000u64 + 2 * M2);
        if whole {
            t.map_with(r, 0x8000_0000, M2, &pages).unwrap();
            // A single-page call sets the cursor on r's level-3 table.
            t.unmap(r, 0x1000).unwrap();
            t.map(r, 0x8000_0000, 0x1000, Perm::ReadWrite).unwrap();
            // The whole table: retired with its level-2 table.
            t.unmap(r, M2).unwrap();
        } else {
            t.map(r, 0x8000_0000, 0x1000, Perm::ReadWrite).unwrap();
            t.map(r + 0x1000, 0x8000_1000, 0x1000, Perm::ReadWrite)
                .unwrap();
            t.unmap(r, 0x1000).unwrap();
            t.unmap(r + 0x1000, 0x1000).unwrap();
        }
        assert_eq!((t.tables(), t.retired_tables()), (1, 2));
        // The freed slots go to s's new tables.
        t.map(s, 0x9000_0000, 0x1000, Perm::ReadWrite).unwrap();
        t.map(r + 0x2000, 0x8000_2000, 0x1000, Perm::Read).unwrap();
        assert_eq!(t.tables(), 4, "r needed a level-3 table of its own");
        assert_eq!(t.query(r + 0x2000).unwrap().pa, 0x8000_2000);
        assert_eq!(t.query(s + 0x2000), None);
        assert_eq!(leaf(&t, r + 0x2000).0, 3);
        assert_eq!(leaf(&t, s).1 & 0x0000_FFFF_FFFF_F000, 0x9000_0000);
        // Consecutive calls then use the cursor and find the same tables.
        t.map(r + 0x3000, 0x8000_3000, 0x1000, Perm::Read).unwrap();
        assert_eq!(leaf(&t, r + 0x3000).1 & 0x0000_FFFF_FFFF_F000, 0x8000_3000);
        assert_eq!(
            t.map(r + 0x3000, 0, 0x1000, Perm::Read),
            Err(Error::Overlap { addr: r + 0x3000 })
        );
        t.release_retired();
    }
}

/// As above for the level-2 table the cursor keeps: once unlinked and its
/// slot reused by the level-2 table of another GiB, a call in the old GiB
/// walks from the root instead of descending from the new table.
#[test]
fn cursor_drops_its_level_2_table_too() {
    let mut t = table(Granule::K4, 39);
    let (a, b) = (0x4000_0000u64, 0x8000_0000u64);
    t.map(a, 0x1_0000_0000, 0x1000, Perm::ReadWrite).unwrap();
    t.unmap(a, 0x1000).unwrap();
    assert_eq!((t.tables(), t.retired_tables()), (1, 2));
    // b's level-2 and level-3 tables take the freed slots; the second
    // 2 MiB of b has a level-3 table too.
    t.map(b + M2, 0x2_0000_0000, 0x1000, Perm::ReadWrite)
        .unwrap();
    t.map(b, 0x2_0010_0000, 0x1000, Perm::ReadWrite).unwrap();
    // In a's GiB, the second 2 MiB: not mapped in a, so tables are made.
    t.map(a + M2 + 0x1000, 0x1_0000_1000, 0x1000, Perm::Read)
        .unwrap();
    assert_eq!(t.tables(), 1 + 2 + 2 + 1);
    assert_eq!(t.query(a + M2 + 0x1000).unwrap().pa, 0x1_0000_1000);
    assert_eq!(t.query(b + M2 + 0x1000), None);
    assert_eq!(
        leaf(&t, a + M2 + 0x1000).1 & 0x0000_FFFF_FFFF_F000,
        0x1_0000_1000
    );
}
