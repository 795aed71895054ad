//! Host tests of the engine with the stage-2 format: descriptor bits
//! pinned against the architecture's positions, block use, validation
//! (a rejected call changes nothing), allocation failure, table retiring,
//! publishing, and a property test against a reference model.

use proptest::prelude::*;
use std::collections::BTreeMap as Model;

use super::node::{Entry, ROOT};
use super::*;
use crate::error::{Error, Result, TableError};
use crate::fake::FakeHal;
use crate::hal::Dma;
use crate::stage2::Stage2Config;

type Table = Stage2Table<FakeHal>;

const K: u64 = 1 << 10;
const M: u64 = 1 << 20;
const G: u64 = 1 << 30;

fn cfg4k(ipa: u32) -> Stage2Config {
    Stage2Config::new(Granule::K4, ipa, 48).unwrap()
}

/// The refusal of an unmap/protect covering part of a block at `addr`.
fn split(addr: u64) -> Error {
    Error::Table(TableError::SplitsBlock { addr })
}

/// Every table's contents, by physical address (root included).
fn snapshot(t: &Table) -> Vec<(u64, Vec<u64>)> {
    let dump = |d: &Dma<FakeHal>| {
        (
            d.paddr(),
            (0..d.len_u64()).map(|i| d.read_u64(i)).collect::<Vec<_>>(),
        )
    };
    let mut v = vec![dump(&t.nodes[ROOT].as_ref().unwrap().dma)];
    v.extend(t.sorted_tables().into_iter().map(dump));
    v
}

/// The raw leaf descriptor for `ipa` and its level.
fn raw_leaf(t: &Table, ipa: u64) -> Option<(u32, u64)> {
    let mut table = ROOT;
    for level in t.geo.start_level()..=3 {
        match t.entry(table, level, t.index(level, ipa)).ok()? {
            Entry::Invalid => return None,
            Entry::Table(n) => table = n,
            Entry::Leaf { raw, .. } => return Some((level, raw)),
        }
    }
    None
}

// ---- descriptors ----

#[test]
fn descriptor_fields_pinned() {
    let mut t = Table::new(cfg4k(40), true).unwrap();
    t.map(0x8000_1000, 0x4000_1000, 0x1000, Perm::ReadWrite)
        .unwrap();
    // valid|page (0b11), MemAttr 0b1111 [5:2], S2AP 0b11 [7:6], SH 0b11
    // [9:8], AF [10], OA [47:12].
    assert_eq!(raw_leaf(&t, 0x8000_1000), Some((3, 0x4000_17ff)));
    t.map(0x8000_2000, 0x4000_2000, 0x1000, Perm::Read).unwrap();
    assert_eq!(raw_leaf(&t, 0x8000_2000), Some((3, 0x4000_277f)));
    t.map(0x8000_3000, 0x4000_3000, 0x1000, Perm::Write)
        .unwrap();
    assert_eq!(raw_leaf(&t, 0x8000_3000), Some((3, 0x4000_37bf)));
    // A 2M block at level 2: bit 1 clear.
    t.map(0x8020_0000, 0x4020_0000, 2 * M, Perm::ReadWrite)
        .unwrap();
    assert_eq!(raw_leaf(&t, 0x8020_0000), Some((2, 0x4020_07fd)));
    // A 1G block at level 1 (in the second concatenated start table).
    t.map(0xc0_0000_0000 - G, 0x1_0000_0000, G, Perm::ReadWrite)
        .unwrap();
    assert_eq!(raw_leaf(&t, 0xbf_c000_0000), Some((1, 0x1_0000_07fd)));
    // Table descriptors: next-level address | 0b11.
    let root = &t.nodes[ROOT].as_ref().unwrap().dma;
    let l1 = root.read_u64(t.index(1, 0x8000_1000));
    assert_eq!(l1 & 0xfff, 0b11);
    assert!(t.sorted_tables().iter().any(|d| d.paddr() == l1 & !0xfff));
    // Protect rewrites S2AP only.
    t.protect(0x8000_1000, 0x1000, Perm::Read).unwrap();
    assert_eq!(raw_leaf(&t, 0x8000_1000), Some((3, 0x4000_177f)));
}

#[test]
fn descriptor_52_bit_output_64k() {
    let cfg = Stage2Config::new(Granule::K64, 52, 52).unwrap();
    let mut t = Table::new(cfg, true).unwrap();
    let pa = 0x000f_0000_1234_0000;
    t.map(0x1_0000, pa, 64 * K, Perm::ReadWrite).unwrap();
    // OA[51:48] = 0xf in bits [15:12], OA[47:16] in place.
    assert_eq!(raw_leaf(&t, 0x1_0000), Some((3, 0x0000_0000_1234_f7ff)));
    assert_eq!(
        t.query(0x1_0000 + 0x10),
        Some(Translation {
            pa: pa + 0x10,
            perm: Perm::ReadWrite,
            size: 64 * K,
            memory: Memory::Normal,
            execute: true,
        })
    );
    // 512M block at level 2.
    t.map(0x2000_0000, 0x000a_0000_2000_0000, 512 * M, Perm::Read)
        .unwrap();
    assert_eq!(raw_leaf(&t, 0x2000_0000), Some((2, 0x0000_0000_2000_a77d)));
    assert_eq!(
        t.query(0x3fff_ffff).map(|x| x.pa),
        Some(0x000a_0000_3fff_ffff)
    );
}

// ---- mapping ----

#[test]
fn uses_blocks_when_aligned() {
    let mut t = Table::new(cfg4k(40), true).unwrap();
    // 1G + 2M + 4K, all aligned: one 1G block, one 2M block, one page.
    t.map(G, 4 * G, G + 2 * M + 4 * K, Perm::ReadWrite).unwrap();
    assert_eq!(t.query(G).unwrap().size, G);
    assert_eq!(
        t.query(2 * G - 1).unwrap(),
        Translation {
            pa: 5 * G - 1,
            perm: Perm::ReadWrite,
            size: G,
            memory: Memory::Normal,
            execute: true,
        }
    );
    assert_eq!(t.query(2 * G).unwrap().size, 2 * M);
    assert_eq!(
        t.query(2 * G + 2 * M).unwrap(),
        Translation {
            pa: 5 * G + 2 * M,
            perm: Perm::ReadWrite,
            size: 4 * K,
            memory: Memory::Normal,
            execute: true,
        }
    );
    assert_eq!(t.query(2 * G + 2 * M + 4 * K), None);
    // Root (2 concatenated) + level 2 + level 3.
    assert_eq!(t.tables(), 3);
    assert_eq!(t.table_bytes(), 8 * K as usize + 2 * 4 * K as usize);

    // PA offset by one page: no block fits.
    let mut u = Table::new(cfg4k(40), true).unwrap();
    u.map(0, 4 * G + 4 * K, 4 * M, Perm::Read).unwrap();
    assert!(
        (0..4 * M)
            .step_by(4096)
            .all(|a| u.query(a).unwrap().size == 4 * K)
    );
    assert_eq!(u.tables(), 1 + 1 + 2);

    // 16K: 32M blocks at level 2; 64K: 512M blocks.
    let mut s = Table::new(Stage2Config::new(Granule::K16, 40, 48).unwrap(), true).unwrap();
    s.map(32 * M, 64 * M, 32 * M + 16 * K, Perm::Read).unwrap();
    assert_eq!(s.query(32 * M).unwrap().size, 32 * M);
    assert_eq!(s.query(64 * M).unwrap().size, 16 * K);
    let mut l = Table::new(Stage2Config::new(Granule::K64, 42, 48).unwrap(), true).unwrap();
    l.map(512 * M, G, 512 * M + 64 * K, Perm::Read).unwrap();
    assert_eq!(l.query(512 * M).unwrap().size, 512 * M);
    assert_eq!(l.query(G).unwrap().size, 64 * K);
}

#[test]
fn rejected_calls_change_nothing() {
    let live0 = FakeHal::live_bytes();
    let mut t = Table::new(cfg4k(40), false).unwrap();
    t.map(0x10_0000, 0x8000_0000, 64 * K, Perm::ReadWrite)
        .unwrap();
    t.map(0x4000_0000, 0x8000_0000, 4 * M, Perm::ReadWrite)
        .unwrap(); // two 2M blocks
    let before = snapshot(&t);
    let live = FakeHal::live_bytes();
    let cases: Vec<(Result<()>, Error)> = vec![
        (
            t.map(0x0, 0x0, 2 * M, Perm::Read),
            Error::Overlap { addr: 0x10_0000 },
        ),
        (
            t.map(0x10_8000, 0x0, 4 * K, Perm::Read),
            Error::Overlap { addr: 0x10_8000 },
        ),
        (
            t.map(0x3ff0_0000, 0x0, 2 * M, Perm::Read),
            Error::Overlap { addr: 0x4000_0000 },
        ),
        (
            t.map(0x4010_0000, 0x0, 4 * K, Perm::Read),
            Error::Overlap { addr: 0x4010_0000 },
        ),
        (
            t.map(0x1001, 0x0, 4 * K, Perm::Read),
            Error::Misaligned {
                addr: 0x1001,
                align: 4096,
            },
        ),
        (
            t.map(0x1000, 0x10, 4 * K, Perm::Read),
            Error::Misaligned {
                addr: 0x10,
                align: 4096,
            },
        ),
        (
            t.map(0x1000, 0x0, 100, Perm::Read),
            Error::Misaligned {
                addr: 100,
                align: 4096,
            },
        ),
        (t.map(0x1000, 0x0, 0, Perm::Read), Error::ZeroLength),
        (
            t.map(1 << 40, 0x0, 4 * K, Perm::Read),
            Error::RangeOverflow {
                addr: 1 << 40,
                len: 4 * K,
            },
        ),
        (
            t.map((1 << 40) - 4096, 0, 8 * K, Perm::Read),
            Error::RangeOverflow {
                addr: (1 << 40) - 4096,
                len: 8 * K,
            },
        ),
        (
            t.map(0x1000, u64::MAX - 4095, 4 * K, Perm::Read),
            Error::RangeOverflow {
                addr: u64::MAX - 4095,
                len: 4 * K,
            },
        ),
        (
            t.map(0x1000, (1 << 48) - 4096, 8 * K, Perm::Read),
            Error::RangeOverflow {
                addr: (1 << 48) - 4096,
                len: 8 * K,
            },
        ),
        (
            t.map(0xffff_f000, 0, u64::MAX & !0xfff, Perm::Read),
            Error::RangeOverflow {
                addr: 0xffff_f000,
                len: u64::MAX & !0xfff,
            },
        ),
        (
            t.unmap(0x10_0000, 128 * K),
            Error::NotMapped { addr: 0x11_0000 },
        ),
        (
            t.unmap(0xf_f000, 8 * K),
            Error::NotMapped { addr: 0xf_f000 },
        ),
        (t.unmap(0x4000_0000, 4 * K), split(0x4000_0000)),
        (t.unmap(0x4000_0000, 2 * M + 4 * K), split(0x4020_0000)),
        (
            t.unmap(0x4000_0000, 6 * M),
            Error::NotMapped { addr: 0x4040_0000 },
        ),
        (t.unmap(0x1000, 0), Error::ZeroLength),
        (
            t.unmap(0x1800, 4 * K),
            Error::Misaligned {
                addr: 0x1800,
                align: 4096,
            },
        ),
        (
            t.protect(0x10_0000, 128 * K, Perm::Read),
            Error::NotMapped { addr: 0x11_0000 },
        ),
        (
            t.protect(0x4010_0000, 4 * K, Perm::Read),
            split(0x4010_0000),
        ),
        (
            t.protect(u64::MAX & !0xfff, 4 * K, Perm::Read),
            Error::RangeOverflow {
                addr: u64::MAX & !0xfff,
                len: 4 * K,
            },
        ),
    ];
    for (i, (got, want)) in cases.into_iter().enumerate() {
        assert_eq!(got, Err(want), "case {i}");
        assert!(snapshot(&t) == before, "case {i} changed table memory");
        assert_eq!(FakeHal::live_bytes(), live, "case {i} leaked");
    }
    drop(t);
    assert_eq!(FakeHal::live_bytes(), live0);
}

#[test]
fn allocation_failure_installs_nothing() {
    let mut t = Table::new(cfg4k(40), false).unwrap();
    t.map(0x20_0000, 0x20_0000, 4 * K, Perm::Read).unwrap();
    assert_eq!(t.tables(), 3);
    let before = snapshot(&t);
    let live = FakeHal::live_bytes();
    // [G - 4K, G + 4K) needs a level-3 table under the existing level-2
    // table of the first GiB, and a level-2 plus a level-3 table under
    // the second: three tables. Fail at each of them.
    for n in 0..3 {
        FakeHal::fail_after(Some(n));
        let r = t.map(G - 4 * K, 0, 8 * K, Perm::Read);
        FakeHal::fail_after(None);
        assert_eq!(r, Err(Error::NoMemory), "fail after {n}");
        assert!(snapshot(&t) == before, "fail after {n}");
        assert_eq!(FakeHal::live_bytes(), live, "fail after {n}");
    }
    FakeHal::fail_after(Some(3));
    let r = t.map(G - 4 * K, 0, 8 * K, Perm::Read);
    FakeHal::fail_after(None);
    assert_eq!(r, Ok(()));
    assert_eq!(t.tables(), 6);
    assert_eq!(t.query(G - 4 * K).unwrap().pa, 0);
    assert_eq!(t.query(G).unwrap().pa, 4 * K);
}

#[test]
fn unmap_retires_empty_tables_and_nothing_leaks() {
    let live0 = FakeHal::live_bytes();
    let mut t = Table::new(cfg4k(40), false).unwrap();
    let root_bytes = FakeHal::live_bytes() - live0;
    t.map(G + 4 * K, 0x1000, 16 * K, Perm::ReadWrite).unwrap();
    t.map(3 * G, 3 * G, 2 * M, Perm::ReadWrite).unwrap();
    assert_eq!(t.tables(), 4);
    t.unmap(G + 4 * K, 8 * K).unwrap();
    assert_eq!(t.tables(), 4);
    assert_eq!(t.query(G + 4 * K), None);
    assert_eq!(t.query(G + 12 * K).unwrap().pa, 0x3000);
    t.unmap(G + 12 * K, 8 * K).unwrap();
    assert_eq!(t.tables(), 2);
    assert_eq!(t.retired_tables(), 2);
    t.unmap(3 * G, 2 * M).unwrap();
    assert_eq!(t.tables(), 1);
    assert_eq!(t.release_retired(), 3);
    assert_eq!(FakeHal::live_bytes() - live0, root_bytes);
    assert!(snapshot(&t)[0].1.iter().all(|&d| d == 0));
    // Remap over the region works again.
    t.map(G, 0, 4 * K, Perm::Read).unwrap();
    t.unmap(G, 4 * K).unwrap();
    drop(t);
    assert_eq!(FakeHal::live_bytes(), live0);
}

#[test]
fn non_coherent_publishes_whole_new_tables() {
    let mut t = Table::new(cfg4k(40), false).unwrap();
    let c0 = FakeHal::cleaned_bytes();
    t.map(0, 0, 4 * K, Perm::Read).unwrap();
    // Two new 4K tables published whole, plus one root descriptor.
    assert_eq!(FakeHal::cleaned_bytes() - c0, 2 * 4096 + 8);
    let mut u = Table::new(cfg4k(40), true).unwrap();
    let c1 = FakeHal::cleaned_bytes();
    u.map(0, 0, 4 * K, Perm::Read).unwrap();
    assert_eq!(FakeHal::cleaned_bytes(), c1);
}

/// The address of the descriptor that maps `ipa` at `level` (a table or
/// leaf descriptor), by a walk of the slab.
fn desc_addr(t: &Table, ipa: u64, level: u32) -> usize {
    let mut table = ROOT;
    for l in t.geo.start_level()..level {
        match t.entry(table, l, t.index(l, ipa)).unwrap() {
            Entry::Table(n) => table = n,
            e => panic!("no table at level {l} for {ipa:#x}: {e:?}"),
        }
    }
    t.node(table).unwrap().dma.paddr() as usize + t.index(level, ipa) * 8
}

/// New level-3 tables are filled with one run of stores
/// (`Dma::write_run`): every descriptor must be the one the single-page
/// path writes, nothing outside the range may be written, and on a
/// non-coherent SMMU every descriptor of the run must be cleaned before the
/// table descriptor linking the table is.
#[test]
fn new_tables_filled_by_runs_match_single_pages_and_are_cleaned() {
    use crate::fake::{Trace, start_trace, take_trace};
    let opts = MapOptions {
        blocks: false,
        ..MapOptions::device()
    };
    // A whole table, part of one from its middle, and a range over three
    // tables (partial, whole, partial).
    for (ipa, len) in [
        (2 * M, 2 * M),
        (2 * M + 20 * K, 300 * 4 * K),
        (4 * M - 8 * K, 2 * M + 16 * K),
    ] {
        for coherent in [true, false] {
            let pa = 0x8_4000_0000 + ipa;
            let mut run = Table::new(cfg4k(36), coherent).unwrap();
            start_trace();
            run.map_with(ipa, pa, len, &opts).unwrap();
            let trace = take_trace();
            let mut one = Table::new(cfg4k(36), coherent).unwrap();
            for off in (0..len).step_by(4096) {
                one.map_with(ipa + off, pa + off, 4 * K, &opts).unwrap();
            }
            for off in (0..len).step_by(4096) {
                let got = raw_leaf(&run, ipa + off);
                assert_eq!(got, raw_leaf(&one, ipa + off), "{ipa:#x}+{off:#x}");
                assert_eq!(
                    got.map(|(l, raw)| (l, raw & 0xF_FFFF_FFFF_F000)),
                    Some((3, pa + off))
                );
            }
            assert_eq!(raw_leaf(&run, ipa - 4 * K), None);
            assert_eq!(raw_leaf(&run, ipa + len), None);
            let pages = |t: &Table| {
                snapshot(t)[1..]
                    .iter()
                    .flat_map(|(_, v)| v.clone())
                    .filter(|&d| d & 3 == 3)
                    .count() as u64
            };
            assert_eq!(
                pages(&run),
                len / 4096 + ((ipa + len - 1) >> 21) - (ipa >> 21) + 1,
                "pages and table descriptors"
            );
            let cleaned = |addr: usize| {
                trace.iter().position(|e| matches!(*e, Trace::Clean { addr: a, len: l } if a <= addr && addr + 8 <= a + l))
            };
            if coherent {
                assert!(!trace.iter().any(|e| matches!(e, Trace::Clean { .. })));
                continue;
            }
            for off in (0..len).step_by(4096) {
                let leaf = cleaned(desc_addr(&run, ipa + off, 3));
                let link = cleaned(desc_addr(&run, ipa + off, 2));
                assert!(
                    matches!((leaf, link), (Some(a), Some(b)) if a < b),
                    "{ipa:#x}+{off:#x}: {leaf:?} {link:?}"
                );
            }
        }
    }
}

// ---- model-based ----

const SPACE_PAGES: u64 = 2048; // 8 MiB of IPA: four 2M blocks

#[derive(Debug, Clone)]
enum Op {
    Map {
        page: u64,
        pages: u64,
        pa_page: u64,
        perm: Perm,
    },
    Unmap {
        page: u64,
        pages: u64,
    },
    Protect {
        page: u64,
        pages: u64,
        perm: Perm,
    },
}

fn perm() -> impl Strategy<Value = Perm> {
    prop_oneof![Just(Perm::Read), Just(Perm::Write), Just(Perm::ReadWrite)]
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        // Arbitrary pages.
        (0..SPACE_PAGES, 1..64u64).prop_map(|(p, n)| (p, n.min(SPACE_PAGES - p))),
        // Whole 2M blocks.
        (0..4u64, 1..3u64).prop_map(|(b, n)| (b * 512, n.min(4 - b) * 512)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (range(), prop_oneof![0..1024u64, (0..2u64).prop_map(|b| b * 512)], perm())
            .prop_map(|((page, pages), pa_page, perm)| Op::Map { page, pages, pa_page, perm }),
        2 => range().prop_map(|(page, pages)| Op::Unmap { page, pages }),
        1 => (range(), perm()).prop_map(|((page, pages), perm)| Op::Protect { page, pages, perm }),
    ]
}

/// Expected outcome of unmap/protect: the first unmapped page, or a
/// partly covered block, in address order.
fn expect_edit(t: &Table, model: &Model<u64, (u64, Perm)>, page: u64, pages: u64) -> Result<()> {
    let (start, end) = (page * 4096, (page + pages) * 4096);
    for p in page..page + pages {
        let a = p * 4096;
        if !model.contains_key(&a) {
            return Err(Error::NotMapped { addr: a });
        }
        let size = t.query(a).map_or(4096, |x| x.size);
        let base = a & !(size - 1);
        if base < start || base + size > end {
            return Err(split(a));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn matches_reference_model(ops in proptest::collection::vec(op(), 1..40), coherent in any::<bool>()) {
        let live0 = FakeHal::live_bytes();
        let mut t = Table::new(cfg4k(36), coherent).unwrap();
        let mut model: Model<u64, (u64, Perm)> = Model::new();
        let pa_base = 1u64 << 32;
        for op in ops {
            let before = snapshot(&t);
            let (r, want) = match op {
                Op::Map { page, pages, pa_page, perm } => {
                    let want = match (page..page + pages).find(|p| model.contains_key(&(p * 4096))) {
                        Some(p) => Err(Error::Overlap { addr: p * 4096 }),
                        None => Ok(()),
                    };
                    let pa = pa_base + pa_page * 4096;
                    let r = t.map(page * 4096, pa, pages * 4096, perm);
                    if want.is_ok() {
                        for i in 0..pages {
                            model.insert((page + i) * 4096, (pa + i * 4096, perm));
                        }
                    }
                    (r, want)
                }
                Op::Unmap { page, pages } => {
                    let want = expect_edit(&t, &model, page, pages);
                    let r = t.unmap(page * 4096, pages * 4096);
                    if want.is_ok() {
                        for i in 0..pages {
                            model.remove(&((page + i) * 4096));
                        }
                    }
                    (r, want)
                }
                Op::Protect { page, pages, perm } => {
                    let want = expect_edit(&t, &model, page, pages);
                    let r = t.protect(page * 4096, pages * 4096, perm);
                    if want.is_ok() {
                        for i in 0..pages {
                            if let Some(e) = model.get_mut(&((page + i) * 4096)) {
                                e.1 = perm;
                            }
                        }
                    }
                    (r, want)
                }
            };
            prop_assert_eq!(r, want);
            if r.is_err() {
                prop_assert!(snapshot(&t) == before);
            }
            for p in 0..SPACE_PAGES {
                let a = p * 4096;
                let got = t.query(a).map(|x| (x.pa, x.perm));
                prop_assert_eq!(got, model.get(&a).copied(), "page {:#x}", a);
            }
            t.release_retired();
        }
        // With everything unmapped only the root is left.
        let mapped: Vec<u64> = model.keys().copied().collect();
        for a in mapped {
            if t.query(a).is_some() {
                let size = t.query(a).unwrap().size;
                t.unmap(a & !(size - 1), size).unwrap();
            }
        }
        prop_assert_eq!(t.tables(), 1);
        t.release_retired();
        drop(t);
        prop_assert_eq!(FakeHal::live_bytes(), live0);
    }
}

/// Splits `[ipa, ipa + len)` needs until no block is partly covered, done
/// with tables from `reserve` only.
fn split_all(t: &mut Table, ipa: u64, len: u64, reserve: &mut SplitReserve<FakeHal>) -> usize {
    let mut n = 0;
    while let Some(b) = t.partial_block(ipa, len).unwrap() {
        let split = t.prepare_split_from(&b, reserve).unwrap();
        t.install_split(&b, split).unwrap();
        n += 1;
    }
    n
}

#[test]
fn split_reserve_covers_every_split_or_nothing() {
    // (edit ipa, edit len) over a 1G block at G and two 2M blocks at 4G
    // -> splits needed.
    let cases = [
        (G + 2 * M + 4 * K, 4 * K, 2), // 1G -> 2M -> 4K
        (G, 2 * M, 1),                 // 1G -> 2M, the 2M block whole
        (G + G - 4 * K, 4 * K, 2),     // the last page of the 1G block
        (4 * G + M, 2 * M, 2),         // part of each 2M block
        (4 * G, 4 * M, 0),             // both 2M blocks whole
        (4 * G, 4 * K, 1),             // first page of a 2M block
    ];
    for (ipa, len, want) in cases {
        let mut t = Table::new(cfg4k(40), false).unwrap();
        t.map(G, 8 * G, G, Perm::ReadWrite).unwrap();
        t.map(4 * G, 9 * G, 4 * M, Perm::Read).unwrap();
        assert_eq!(t.splits_needed(ipa, len), Ok(want), "{ipa:#x}+{len:#x}");
        let before = snapshot(&t);
        let live = FakeHal::live_bytes();
        if want > 0 {
            // The last table the range needs cannot be had: nothing
            // allocated stays, nothing changed.
            FakeHal::fail_after(Some(want - 1));
            let r = t.reserve_splits(ipa, len).map(|r| r.len());
            FakeHal::fail_after(None);
            assert_eq!(r, Err(Error::NoMemory), "{ipa:#x}+{len:#x}");
            assert!(snapshot(&t) == before, "{ipa:#x}+{len:#x}");
            assert_eq!(FakeHal::live_bytes(), live, "{ipa:#x}+{len:#x}");
        }
        let mut reserve = t.reserve_splits(ipa, len).unwrap();
        assert_eq!(reserve.len(), want);
        // Every split then takes its table from the reserve: with the HAL
        // refusing everything, the splits still all succeed.
        FakeHal::fail_after(Some(0));
        let done = split_all(&mut t, ipa, len, &mut reserve);
        FakeHal::fail_after(None);
        assert_eq!((done, reserve.len()), (want, 0), "{ipa:#x}+{len:#x}");
        assert_eq!(t.partial_block(ipa, len), Ok(None));
        // The splits translate as the blocks did.
        for a in [G, G + 2 * M + 4 * K, 2 * G - 4 * K, 4 * G, 4 * G + 3 * M] {
            let x = t.query(a).unwrap();
            let pa = if a < 2 * G {
                8 * G + (a - G)
            } else {
                9 * G + (a - 4 * G)
            };
            assert_eq!(x.pa, pa, "{a:#x}");
        }
        t.unmap(ipa, len).unwrap();
        assert_eq!(t.query(ipa), None);
    }
}

/// Valid descriptors left in the retired (unlinked, not yet freed) tables.
fn retired_valid(t: &Table) -> usize {
    let valid = |d: &Dma<FakeHal>| (0..d.len_u64()).filter(|&i| d.read_u64(i) & 1 != 0).count();
    t.retired.iter().map(valid).sum()
}

#[test]
fn unmap_of_whole_tables_unlinks_them_without_clearing() {
    let pages = MapOptions {
        blocks: false,
        ..MapOptions::normal(Perm::ReadWrite)
    };
    let mut t = Table::new(cfg4k(40), true).unwrap();
    // 1 GiB of 4K pages: one level-2 table over 512 level-3 tables.
    t.map_with(G, G + 4 * K, G, &pages).unwrap();
    // One level-3 table's worth of pages in another GiB.
    t.map_with(2 * G, 0, 2 * M, &pages).unwrap();
    assert_eq!(t.tables(), 1 + 1 + 512 + 1 + 1);

    // A whole level-3 table: unlinked with one store, its pages kept; its
    // level-2 table, emptied, is unlinked after it.
    t.unmap(2 * G, 2 * M).unwrap();
    assert_eq!((t.tables(), t.retired_tables()), (1 + 1 + 512, 2));
    assert_eq!(retired_valid(&t), 512);
    assert_eq!(t.changed_leaf_level(), Some(3));
    assert_eq!(t.query(2 * G), None);

    // The whole GiB: one store in the start table, 513 tables retired as
    // they are, and the TTL hint still names the leaves' level.
    let root = snapshot(&t)[0].1.clone();
    t.unmap(G, G).unwrap();
    let after = snapshot(&t)[0].1.clone();
    let changed: Vec<usize> = (0..root.len()).filter(|&i| root[i] != after[i]).collect();
    assert_eq!(changed, [1], "only the descriptor of the GiB changed");
    assert_eq!(after[1], 0);
    assert_eq!((t.tables(), t.retired_tables()), (1, 2 + 513));
    assert_eq!(retired_valid(&t), 512 + 512 + 512 * 512);
    assert_eq!(t.changed_leaf_level(), Some(3));
    assert_eq!(t.query(G), None);
    assert_eq!(t.query(2 * G - 4 * K), None);
    assert_eq!(t.release_retired(), 515);

    // Leaves at two levels under one retired table: no single level.
    t.map_with(2 * G, 0, 2 * M, &pages).unwrap();
    t.map(2 * G + 2 * M, 2 * M, G - 2 * M, Perm::Read).unwrap();
    assert_eq!(t.tables(), 3);
    t.unmap(2 * G, G).unwrap();
    assert_eq!(t.changed_levels, 1 << 2 | 1 << 3);
    assert_eq!(t.changed_leaf_level(), None);
    assert_eq!((t.tables(), t.release_retired()), (1, 2));
    assert!(snapshot(&t)[0].1.iter().all(|&d| d == 0));
}

/// A range covering whole level-3 tables is checked table by table from
/// their live counts; one page missing anywhere still refuses the unmap,
/// with nothing changed. Once refilled, the GiB goes in one call and its
/// slab slots are reused.
#[test]
fn unmap_refuses_whole_tables_with_a_page_missing() {
    let pages = MapOptions {
        blocks: false,
        ..MapOptions::normal(Perm::ReadWrite)
    };
    let mut t = Table::new(cfg4k(40), true).unwrap();
    t.map_with(G, G + 4 * K, G, &pages).unwrap();
    let hole = G + 300 * 2 * M + 17 * 4 * K;
    t.unmap(hole, 4 * K).unwrap();
    let before = snapshot(&t);
    for (ipa, len) in [(G, G), (G + 300 * 2 * M, 2 * M), (G + 299 * 2 * M, 4 * M)] {
        assert_eq!(t.unmap(ipa, len), Err(Error::NotMapped { addr: hole }));
        assert_eq!(snapshot(&t), before);
        assert_eq!((t.tables(), t.retired_tables()), (1 + 1 + 512, 0));
    }
    t.map_with(hole, hole + 4 * K, 4 * K, &pages).unwrap();
    t.unmap(G, G).unwrap();
    assert_eq!((t.tables(), t.release_retired()), (1, 513));
    t.map_with(G, G + 4 * K, G, &pages).unwrap();
    assert_eq!((t.tables(), t.nodes.len()), (1 + 513, 1 + 513));
    assert_eq!(t.query(2 * G - 4 * K).unwrap().pa, 2 * G);
}

/// A slab entry is one 64-byte line (`Node`'s layout).
#[test]
fn slab_entries_are_one_cache_line() {
    use super::node::Node;
    assert_eq!(core::mem::size_of::<Option<Node<FakeHal>>>(), 64);
    assert_eq!(core::mem::align_of::<Option<Node<FakeHal>>>(), 64);
}
