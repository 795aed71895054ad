//! Host tests of the CD table itself: layout choice, sizes and alignment,
//! lazy leaves and the L1CD fields, read back by name.

use tock_registers::LocalRegisterCopy;

use super::*;
use crate::cd::Cd;
use crate::entry_plan::model::replay;
use crate::fake::FakeHal;
use crate::ste::{self, STE_0, STE_1, STE_KIND, Stage1Ste, Ste};

fn policy(ssid_bits: u8, leaf: CdLeaf) -> CdTablePolicy {
    CdTablePolicy { ssid_bits, leaf }
}

fn l1_field(desc: u64) -> (bool, u64) {
    let r = LocalRegisterCopy::<u64, L1CD::Register>::new(desc);
    (r.is_set(L1CD::V), r.read(L1CD::L2PTR) << 12)
}

#[test]
fn layout_choice() {
    type T = CdTable<FakeHal>;
    let p = policy(8, CdLeaf::K4);
    // No substreams: no table.
    assert_eq!(T::layout(0, true, p), None);
    assert_eq!(T::layout(12, true, policy(0, CdLeaf::K4)), None);
    // S1CDMax = min(SSIDSIZE, requested).
    assert_eq!(T::layout(5, true, p), Some((CdFormat::Linear, 5)));
    assert_eq!(T::layout(20, false, p), Some((CdFormat::Linear, 8)));
    // Two levels only with CD2L and more SSIDs than one leaf.
    assert_eq!(T::layout(6, true, p), Some((CdFormat::Linear, 6)));
    assert_eq!(
        T::layout(7, true, p),
        Some((CdFormat::TwoLevel(CdLeaf::K4), 7))
    );
    assert_eq!(
        T::layout(10, true, policy(10, CdLeaf::K64)),
        Some((CdFormat::Linear, 10))
    );
    assert_eq!(
        T::layout(20, true, policy(16, CdLeaf::K64)),
        Some((CdFormat::TwoLevel(CdLeaf::K64), 16))
    );
    assert_eq!(CdFormat::Linear.s1fmt(), 0);
    assert_eq!(CdFormat::TwoLevel(CdLeaf::K4).s1fmt(), 1);
    assert_eq!(CdFormat::TwoLevel(CdLeaf::K64).s1fmt(), 2);
}

#[test]
fn linear_table_is_sized_and_aligned() {
    for bits in [1u8, 4, 8] {
        let t = CdTable::<FakeHal>::new(CdFormat::Linear, bits, true).unwrap();
        let bytes = 64u64 << bits;
        assert_eq!(t.base() % bytes, 0, "{bits}");
        assert_eq!(t.root.size() as u64, bytes);
        // Every CD has memory and is invalid; nothing beyond the table.
        let last = (1u32 << bits) - 1;
        assert!(!t.slot(last).unwrap().read().is_valid());
        assert_eq!(t.slot(last).unwrap().first, last as usize * 8);
        assert!(t.slot(last + 1).is_none());
        let mut t = t;
        assert_eq!(t.ensure_leaf(last), Ok(false));
        assert_eq!(t.leaves(), 0);
        assert_eq!(t.l1(0), None);
    }
}

#[test]
fn two_level_4k_leaves_are_lazy() {
    let mut t = CdTable::<FakeHal>::new(CdFormat::TwoLevel(CdLeaf::K4), 8, true).unwrap();
    // 4 L1CDs = 32 bytes, rounded up to 64 and aligned to it.
    assert_eq!(t.root.size(), 64);
    assert_eq!(t.base() % 64, 0);
    assert_eq!(t.leaves(), 0);
    assert!(t.slot(5).is_none());
    let before = FakeHal::live_bytes();
    assert_eq!(t.ensure_leaf(5), Ok(true));
    assert_eq!(FakeHal::live_bytes() - before, 4096);
    assert_eq!(t.leaves(), 1);
    let (v, l2) = l1_field(t.l1(0).unwrap());
    assert!(v);
    assert_eq!(l2 % 4096, 0);
    let s = t.slot(5).unwrap();
    assert_eq!(s.mem.paddr(), l2);
    assert_eq!(s.first, 5 * 8);
    // Same leaf: nothing new.
    assert_eq!(t.ensure_leaf(63), Ok(false));
    assert_eq!(t.leaves(), 1);
    assert_eq!(l1_field(t.l1(1).unwrap()), (false, 0));
    // SSID 64 is the first CD of the second leaf.
    assert_eq!(t.ensure_leaf(64), Ok(true));
    assert_eq!(t.leaves(), 2);
    let (v, l2b) = l1_field(t.l1(1).unwrap());
    assert!(v && l2b != l2 && l2b % 4096 == 0);
    assert_eq!(t.slot(64).unwrap().first, 0);
    assert!(t.slot(255).is_none());
    assert!(t.slot(256).is_none());
    assert!(matches!(
        t.ensure_leaf(256),
        Err(Error::Substream(SubstreamError::SsidOutOfRange {
            ssid: 256,
            s1cdmax: 8
        }))
    ));
}

#[test]
fn two_level_64k_leaves() {
    let mut t = CdTable::<FakeHal>::new(CdFormat::TwoLevel(CdLeaf::K64), 16, true).unwrap();
    // 64 L1CDs of 8 bytes.
    assert_eq!(t.root.size(), 512);
    assert_eq!(t.base() % 512, 0);
    assert_eq!(t.ensure_leaf(1024 * 3 + 7), Ok(true));
    let (v, l2) = l1_field(t.l1(3).unwrap());
    assert!(v);
    assert_eq!(l2 % 65536, 0);
    assert_eq!(t.slot(1024 * 3 + 7).unwrap().first, 7 * 8);
    assert_eq!(t.slot(1024 * 3 + 7).unwrap().mem.size(), 65536);
    assert!(t.slot(1024 * 2).is_none());
    assert_eq!(t.leaves(), 1);
}

#[test]
fn a_failed_leaf_allocation_changes_nothing() {
    let mut t = CdTable::<FakeHal>::new(CdFormat::TwoLevel(CdLeaf::K4), 8, true).unwrap();
    let before = t.snapshot();
    FakeHal::fail_after(Some(0));
    let r = t.ensure_leaf(70);
    FakeHal::fail_after(None);
    assert_eq!(r, Err(Error::NoMemory));
    assert_eq!(t.snapshot(), before);
    assert_eq!(t.leaves(), 0);
}

#[test]
fn l1cd_encoding() {
    // V [0], L2Ptr [51:12].
    assert_eq!(l1cd(0x0008_1234_5678_9000), 0x0008_1234_5678_9001);
    assert_eq!(
        l1cd_leaf(0x0008_1234_5678_9001),
        Some(0x0008_1234_5678_9000)
    );
    assert_eq!(l1cd_leaf(0x0008_1234_5678_9000), None);
}

/// The STE of a stage-1 stream moving from one CD (S1CDMax = 0) to a CD
/// table (S1Fmt = 1, S1CDMax = 8, S1DSS = SSID 0), and back, replayed
/// against the any-order model.
#[test]
fn single_cd_to_table_ste_is_planned_safely() {
    let single = Ste::stage1(&Stage1Ste::new(0x4000_0000, 0)).unwrap();
    let mut table = Ste::stage1(&Stage1Ste {
        s1cdmax: 8,
        s1dss: 2,
        ..Stage1Ste::new(0x5000_0000, 0)
    })
    .unwrap();
    let mut d0 = LocalRegisterCopy::<u64, STE_0::Register>::new(table.0[0]);
    d0.modify(STE_0::S1FMT.val(1));
    table.0[0] = d0.get();
    assert_eq!(d0.read(STE_0::S1CDMAX), 8);
    assert_eq!(
        LocalRegisterCopy::<u64, STE_1::Register>::new(table.0[1]).read(STE_1::S1DSS),
        2
    );
    let live = |e: &crate::entry_plan::Dwords| Ste(*e).is_live();
    for (a, b) in [(single, table), (table, single)] {
        let plan = ste::plan_update(&a, &b).unwrap();
        let o = replay(&STE_KIND, live, &a.0, &b.0, plan.as_slice());
        assert!(o.is_safe(), "{o:?}");
    }
    let _ = Cd::invalid();
}

/// A CD table (or leaf) the SMMU cannot reach, above 2^OAS, is refused.
#[test]
fn tables_above_the_output_size_are_refused() {
    let t = CdTable::<FakeHal>::new(CdFormat::Linear, 4, true).unwrap();
    // Host heap memory normally lies above 2^32.
    let above = t.base() + (64 << 4) > 1 << 32;
    let r = t.with_output_size(32);
    if above {
        assert_eq!(
            r.err(),
            Some(Error::Unsupported(crate::error::Unsupported::AddressSize))
        );
    } else {
        assert!(r.is_ok());
    }
    let t = CdTable::<FakeHal>::new(CdFormat::TwoLevel(CdLeaf::K4), 8, true).unwrap();
    let mut t = t.with_output_size(52).unwrap();
    t.ensure_leaf(200).unwrap();
}
