//! The invalidation planners: hints, exact coverage, fallbacks, minimal
//! range splits.

extern crate std;
use super::*;
use crate::cmd::{Command, TlbiRange};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::vec;

/// Issue 12 item 2: Leaf and TTL reach the commands only as the hints
/// allow: TTL only in the range form and only for leaf invalidations.
#[test]
fn invalidation_hints_pin_leaf_and_ttl() {
    let cmds = |p: InvalidationPlan| p.commands().to_vec();
    // Pages only changed, all at level 3, RIL: Leaf = 1, TTL = 3.
    let c = cmds(s2_invalidation_hinted(
        5,
        0x4000_0000,
        0x3000,
        12,
        true,
        64,
        InvalidationHints::leaves_at(Some(3)),
    ));
    assert_eq!(c.len(), 1);
    let Command::TlbiS2Ipa {
        leaf,
        range: Some(r),
        ..
    } = c[0]
    else {
        panic!("{c:?}")
    };
    assert!(leaf);
    assert_eq!((r.ttl, r.tg, r.num, r.scale), (3, 1, 2, 0));
    let w = c[0].encode();
    assert_eq!(w[1] & 1, 1, "Leaf is dword 1 bit 0");
    assert_eq!((w[1] >> 8) & 3, 3, "TTL is dword 1 [9:8]");
    // A 2 MiB block: TTL = 2.
    let c = cmds(s2_invalidation_hinted(
        5,
        0x4000_0000,
        0x20_0000,
        12,
        true,
        64,
        InvalidationHints::leaves_at(Some(2)),
    ));
    let Command::TlbiS2Ipa { range: Some(r), .. } = c[0] else {
        panic!()
    };
    assert_eq!(r.ttl, 2);
    // Mixed levels: Leaf but no TTL.
    let c = cmds(s2_invalidation_hinted(
        5,
        0x4000_0000,
        0x3000,
        12,
        true,
        64,
        InvalidationHints::leaves_at(None),
    ));
    let Command::TlbiS2Ipa {
        leaf: true,
        range: Some(r),
        ..
    } = c[0]
    else {
        panic!()
    };
    assert_eq!(r.ttl, 0);
    // Tables freed: non-leaf, TTL dropped even if asked.
    let c = cmds(s2_invalidation_hinted(
        5,
        0x4000_0000,
        0x3000,
        12,
        true,
        64,
        InvalidationHints {
            leaf: false,
            ttl: 3,
        },
    ));
    let Command::TlbiS2Ipa {
        leaf: false,
        range: Some(r),
        ..
    } = c[0]
    else {
        panic!()
    };
    assert_eq!(r.ttl, 0);
    assert_eq!(c[0].encode()[1] & 1, 0);
    // Without RIL there is no TTL field to set: Leaf only.
    let c = cmds(s2_invalidation_hinted(
        5,
        0x4000_0000,
        0x2000,
        12,
        false,
        64,
        InvalidationHints::leaves_at(Some(3)),
    ));
    assert_eq!(c.len(), 2);
    assert!(c.iter().all(|c| matches!(
        c,
        Command::TlbiS2Ipa {
            leaf: true,
            range: None,
            ..
        }
    )));
    // Stage 1 alike.
    let c = cmds(nh_invalidation_hinted(
        5,
        9,
        0x1000,
        0x1000,
        12,
        true,
        64,
        InvalidationHints::leaves_at(Some(3)),
    ));
    let Command::TlbiNhVa {
        leaf: true,
        range: Some(r),
        ..
    } = c[0]
    else {
        panic!()
    };
    assert_eq!(r.ttl, 3);
}

/// Expands a precise plan into the set of granule pages it invalidates.
fn pages_of(plan: &InvalidationPlan, shift: u32) -> BTreeSet<u64> {
    let mut set = BTreeSet::new();
    for c in plan.commands() {
        let (addr, range) = match *c {
            Command::TlbiS2Ipa { addr, range, .. } | Command::TlbiNhVa { addr, range, .. } => {
                (addr, range)
            }
            other => panic!("unexpected {other:?}"),
        };
        c.validate().unwrap();
        let n = match range {
            None => 1,
            Some(r) => {
                assert_eq!(r.granule_shift(), Some(shift));
                r.pages()
            }
        };
        for p in 0..n {
            assert!(set.insert((addr >> shift) + p), "page invalidated twice");
        }
    }
    set
}

fn expected(addr: u64, len: u64, shift: u32) -> BTreeSet<u64> {
    ((addr >> shift)..=((addr + len - 1) >> shift)).collect()
}

#[test]
fn two_mib_with_ril_is_one_command() {
    let p = s2_invalidation(3, 0x4020_0000, 2 << 20, 12, true, 16);
    assert_eq!(
        p,
        InvalidationPlan::Precise(vec![Command::TlbiS2Ipa {
            vmid: 3,
            addr: 0x4020_0000,
            leaf: false,
            range: Some(TlbiRange {
                num: 0,
                scale: 9,
                tg: 1,
                ttl: 0
            })
        }])
    );
}

#[test]
fn two_mib_without_ril() {
    let p = s2_invalidation(3, 0x4020_0000, 2 << 20, 12, false, 512);
    assert_eq!(p.commands().len(), 512);
    assert_eq!(pages_of(&p, 12), expected(0x4020_0000, 2 << 20, 12));
    let p = s2_invalidation(3, 0x4020_0000, 2 << 20, 12, false, 511);
    assert_eq!(
        p,
        InvalidationPlan::Fallback(Command::TlbiS12Vmall { vmid: 3 })
    );
}

#[test]
fn odd_ranges_are_covered_exactly() {
    for (addr, len, shift) in [
        (0x1000, 3 * 0x1000, 12),
        (0x7000, 33 * 0x1000, 12),
        (0x4000_0000, (1 << 30) + 0x1000, 12),
        (0x4000_1000, 0xFFF_F000, 12),
        (0x1_0000, 7 * 0x1_0000, 16),
        (0x4000, 100 * 0x4000, 14),
        (0x1800, 0x1000, 12), // unaligned: rounds out to 2 pages
    ] {
        let p = s2_invalidation(1, addr, len, shift, true, 64);
        assert!(!p.is_fallback(), "{addr:#x}+{len:#x}");
        assert_eq!(pages_of(&p, shift), expected(addr, len, shift));
        let p = nh_invalidation(1, 2, addr, len, shift, true, 64);
        assert_eq!(pages_of(&p, shift), expected(addr, len, shift));
        // With a level hint there is no reserved piece: exact.
        let p = s2_invalidation_hinted(
            1,
            addr,
            len,
            shift,
            true,
            64,
            InvalidationHints::leaves_at(Some(3)),
        );
        assert_eq!(pages_of(&p, shift), expected(addr, len, shift));
    }
    // 33 pages = 1 + 32: two commands (0b100001 needs two 5-bit windows);
    // the one-page piece is the non-range form, since as a range without
    // TTL it would be the reserved NUM = SCALE = TTL = 0.
    assert_eq!(
        s2_invalidation(1, 0, 33 << 12, 12, true, 64).commands(),
        &[
            Command::TlbiS2Ipa {
                vmid: 1,
                addr: 0,
                leaf: false,
                range: None
            },
            Command::TlbiS2Ipa {
                vmid: 1,
                addr: 0x1000,
                leaf: false,
                range: Some(TlbiRange {
                    num: 0,
                    scale: 5,
                    tg: 1,
                    ttl: 0
                })
            }
        ]
    );
    // With TTL 3, exactly 33: NUM 0 SCALE 0 then NUM 0 SCALE 5.
    assert_eq!(
        s2_invalidation_hinted(
            1,
            0,
            33 << 12,
            12,
            true,
            64,
            InvalidationHints::leaves_at(Some(3))
        )
        .commands()
        .len(),
        2
    );
    // 1 GiB + 4K: 1 + 2^18 pages -> two commands.
    assert_eq!(
        s2_invalidation(1, 0, (1 << 30) + 0x1000, 12, true, 64)
            .commands()
            .len(),
        2
    );
}

#[test]
fn planner_edge_cases() {
    assert_eq!(
        s2_invalidation(1, 0, 0, 12, true, 8),
        InvalidationPlan::Precise(vec![])
    );
    assert!(s2_invalidation(1, 0, 0x1000, 13, true, 8).is_fallback());
    assert!(s2_invalidation(1, u64::MAX - 0xFFF, 0x2000, 12, true, 8).is_fallback());
    assert!(s2_invalidation(1, (1 << 52) - 0x1000, 0x2000, 12, true, 8).is_fallback());
    assert!(s2_invalidation(1, 0, 0x1000, 12, true, 0).is_fallback());
    // 0b1111111111 pages need two range commands; budget 1 falls back.
    assert_eq!(
        nh_invalidation(1, 9, 0, 1023 << 12, 12, true, 1),
        InvalidationPlan::Fallback(Command::TlbiNhAsid { vmid: 1, asid: 9 })
    );
}

/// Ranges of 2^32 pages and more need SCALE > 31, which the 5-bit field
/// cannot hold: they fall back instead of being truncated (a 16 TiB unmap
/// used to be planned as one command with SCALE = 32, which the SMMU
/// reads as SCALE = 0: one page).
#[test]
fn huge_ranges_fall_back_instead_of_truncating_scale() {
    // Precise plans must be valid commands covering exactly the range.
    let exact = |p: &InvalidationPlan, pages: u64| {
        let total: u64 = p
            .commands()
            .iter()
            .map(|c| {
                c.validate().unwrap();
                match *c {
                    Command::TlbiS2Ipa { range: Some(r), .. }
                    | Command::TlbiNhVa { range: Some(r), .. } => r.pages(),
                    other => panic!("unexpected {other:?}"),
                }
            })
            .sum();
        assert_eq!(total, pages);
    };
    for (addr, len) in [(0u64, 1u64 << 44), (0, 1 << 47), (0x1000, 1 << 44)] {
        let p = s2_invalidation(3, addr, len, 12, true, 64);
        assert_eq!(
            p,
            InvalidationPlan::Fallback(Command::TlbiS12Vmall { vmid: 3 }),
            "{addr:#x}+{len:#x}"
        );
        assert!(nh_invalidation(3, 4, addr, len, 12, true, 64).is_fallback());
    }
    // SCALE = 31 is the largest: 3 * 2^31 pages and 2^32 - 1 pages are
    // still precise and exact.
    for len in [(1u64 << 44) + (1 << 43), ((1 << 32) - 1) << 12] {
        let p = s2_invalidation(3, 0, len, 12, true, 64);
        assert!(!p.is_fallback(), "{len:#x}");
        exact(&p, len >> 12);
        exact(&nh_invalidation(3, 4, 0, len, 12, true, 64), len >> 12);
    }
}

/// The window greedy uses the fewest commands: compare with a dynamic
/// program over every count a single command can cover.
#[test]
fn range_split_is_minimal() {
    const N: usize = 3000;
    let sizes: Vec<u64> = (0..12u32)
        .flat_map(|s| (1..=32u64).map(move |n| n << s))
        .filter(|&x| x as usize <= N)
        .collect();
    let mut best = vec![usize::MAX; N + 1];
    best[0] = 0;
    for n in 1..=N {
        for &s in &sizes {
            let s = s as usize;
            if s <= n && best[n - s] != usize::MAX {
                best[n] = best[n].min(best[n - s] + 1);
            }
        }
    }
    for (n, &best) in best.iter().enumerate().skip(1) {
        let got = range_piece_count(n as u64, usize::MAX).unwrap();
        assert_eq!(got, best, "{n} pages");
    }
}

proptest! {
    #[test]
    fn planner_covers(
        addr in 0u64..(1 << 48),
        pages in 1u64..5000,
        shift in prop::sample::select(vec![12u32, 14, 16]),
        ril: bool,
    ) {
        // Unaligned starts are rounded out to whole granules.
        let len = pages << shift;
        let p = s2_invalidation(4, addr, len, shift, ril, 10_000);
        prop_assert!(!p.is_fallback());
        prop_assert_eq!(pages_of(&p, shift), expected(addr, len, shift));
    }
}

/// IHI 0070 §4.4.1.1 (CMD_TLBI_* range fields): with TG != 0, a command
/// whose TTL, NUM and SCALE are all 0 is reserved and fails with
/// CERROR_ILL. The planners must never build one (a 1-page or 33-page
/// non-leaf range used to be planned as TG = 1, TTL = 0, NUM = 0,
/// SCALE = 0), and `validate` must refuse one.
#[test]
fn range_commands_are_never_the_reserved_encoding() {
    let reserved = |c: &Command| match *c {
        Command::TlbiS2Ipa { range: Some(r), .. } | Command::TlbiNhVa { range: Some(r), .. } => {
            r.ttl == 0 && r.num == 0 && r.scale == 0
        }
        _ => false,
    };
    for pages in 1..=300u64 {
        for hints in [
            InvalidationHints::NONE,
            InvalidationHints::leaves_at(None),
            InvalidationHints::leaves_at(Some(3)),
        ] {
            for shift in [12u32, 14, 16] {
                let len = pages << shift;
                let base = 0x4000_0000u64;
                for p in [
                    s2_invalidation_hinted(7, base, len, shift, true, 64, hints),
                    nh_invalidation_hinted(7, 9, base, len, shift, true, 64, hints),
                ] {
                    for c in p.commands() {
                        assert!(!reserved(c), "{pages} pages, {hints:?}: {c:?}");
                        c.validate().unwrap();
                    }
                    // Still covers exactly the granules of the range.
                    if !p.is_fallback() {
                        assert_eq!(pages_of(&p, shift), expected(base, len, shift));
                    }
                }
            }
        }
    }
    let r = TlbiRange {
        num: 0,
        scale: 0,
        tg: 1,
        ttl: 0,
    };
    assert!(Command::tlbi_s2_ipa(1, 0x1000, false, Some(r)).is_err());
    assert!(Command::tlbi_nh_va(1, 2, 0x1000, true, Some(r)).is_err());
    assert!(Command::tlbi_nh_vaa(1, 0x1000, false, Some(r)).is_err());
    // With a level hint the same NUM/SCALE is a valid 1-page range.
    assert!(Command::tlbi_s2_ipa(1, 0x1000, true, Some(TlbiRange { ttl: 3, ..r })).is_ok());
}

/// With a level hint (TTL = L), every range command must start at an
/// address aligned to a level-L leaf, or the invalidated range is
/// UNPREDICTABLE (IHI 0070 §4.4.1.1: 4K, TTL 2 needs Address[20:12] = 0;
/// 64K, TTL 2 needs Address[28:12] = 0; ...). The planners meet it for any
/// range that is a run of whole level-L leaves (what unmap, protect and a
/// block break hint), and `validate` refuses a misaligned one.
#[test]
fn level_hinted_ranges_start_on_leaves_of_that_level() {
    for shift in [12u32, 14, 16] {
        for level in [2u32, 3] {
            let leaf = 1u64 << (shift + (3 - level) * (shift - 3));
            for leaves in 1..=40u64 {
                for first in [0u64, 1, 3, 7] {
                    let base = 0x40_0000_0000u64 + first * leaf;
                    let len = leaves * leaf;
                    let hints = InvalidationHints::leaves_at(Some(level));
                    for p in [
                        s2_invalidation_hinted(7, base, len, shift, true, 64, hints),
                        nh_invalidation_hinted(7, 9, base, len, shift, true, 64, hints),
                    ] {
                        for c in p.commands() {
                            c.validate().unwrap_or_else(|e| {
                                panic!("granule 2^{shift}, level {level}, {leaves} leaves at {base:#x}: {c:?}: {e:?}")
                            });
                        }
                        // The commands tile the range in order, exactly.
                        let mut at = base;
                        for c in p.commands() {
                            let (Command::TlbiS2Ipa { addr, range, .. }
                            | Command::TlbiNhVa { addr, range, .. }) = *c
                            else {
                                panic!("unexpected {c:?}");
                            };
                            assert_eq!(addr, at, "{c:?}");
                            at += range.map_or(1, |r| r.pages()) << shift;
                        }
                        assert!(p.is_fallback() || at == base + len);
                    }
                }
            }
        }
    }
    // 4K, TTL 2 (2 MiB leaves): an address inside a 2 MiB leaf is refused.
    let r = TlbiRange {
        num: 1,
        scale: 0,
        tg: 1,
        ttl: 2,
    };
    assert_eq!(
        Command::tlbi_s2_ipa(1, 0x4000_1000, true, Some(r)),
        Err(crate::Error::Misaligned {
            addr: 0x4000_1000,
            align: 0x20_0000
        })
    );
    assert!(Command::tlbi_s2_ipa(1, 0x4020_0000, true, Some(r)).is_ok());
}
