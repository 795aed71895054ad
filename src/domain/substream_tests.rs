//! Host tests of substreams on the fake SMMU with IDR1.SSIDSIZE > 0: the
//! STE and L1CD fields read back, lazy leaves, the CFGI_CD commands, CD
//! writes replayed against the any-order model, refused calls that change
//! nothing, and a random sequence against a reference model.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::vec::Vec;

use proptest::prelude::*;
use tock_registers::LocalRegisterCopy;

use super::super::{DomainId, DomainOptions, StagePolicy};
use crate::cd::{self, CD_KIND, Cd};
use crate::cdtable::{CdLeaf, CdTablePolicy, L1CD, SubstreamError};
use crate::cmd::Command;
use crate::entry_plan::UpdateStep;
use crate::entry_plan::model::replay;
use crate::error::Error;
use crate::fake::{FakeHal, FakeRegs};
use crate::smmu::{Config, Smmu};
use crate::stage2::{Granule, Stage2Config};
use crate::ste::{STE_0, STE_1};

/// QEMU's IDR0 without S2P: a stage-1-only SMMU.
const IDR0_S1_ONLY: u32 = 0x0D44_101A;
/// QEMU's IDR0: stage 1 and 2.
const IDR0_NESTED: u32 = 0x0D44_101B;
const CD2L: u32 = 1 << 19;
const SID: u32 = 3;

fn enabled(idr0: u32, ssid_bits: u32) -> (Box<FakeRegs>, Smmu<FakeHal>) {
    let regs = Box::new(FakeRegs::new());
    regs.set32(0x00, idr0);
    regs.set32(0x04, 0x0273_0010 | ssid_bits << 6);
    regs.set32(0x0C, 0x0000_0404);
    regs.set32(0x14, 0x0000_0075);
    regs.set32(0x1C, 1);
    regs.respond();
    let config = Config {
        timeout_ns: 1_000_000,
        ..Config::default()
    };
    // SAFETY: the block is MMIO_SIZE bytes and outlives the driver (each
    // test drops the driver before the block).
    let smmu = unsafe { Smmu::<FakeHal>::new(regs.base(), config) }.unwrap();
    smmu.enable().unwrap();
    (regs, smmu)
}

fn s1_domain(smmu: &Smmu<FakeHal>) -> DomainId {
    smmu.create_domain(DomainOptions {
        stage: StagePolicy::Stage1,
        ..DomainOptions::new(Stage2Config::new(Granule::K4, 40, 48).unwrap())
    })
    .unwrap()
}

/// STE S1Fmt, S1CDMax, S1DSS and S1ContextPtr of `sid`, by name.
fn ste_fields(smmu: &Smmu<FakeHal>, sid: u32) -> (u64, u64, u64, u64) {
    let ste = smmu.ste(sid).unwrap();
    let d0 = LocalRegisterCopy::<u64, STE_0::Register>::new(ste.0[0]);
    let d1 = LocalRegisterCopy::<u64, STE_1::Register>::new(ste.0[1]);
    (
        d0.read(STE_0::S1FMT),
        d0.read(STE_0::S1CDMAX),
        d1.read(STE_1::S1DSS),
        ste.cd_paddr(),
    )
}

fn read_cd(addr: u64) -> Cd {
    let p = addr as *const u64;
    // SAFETY: FakeHal memory (paddr == vaddr): a CD inside a table the
    // driver owns, alive while the stream is attached.
    Cd(core::array::from_fn(|i| unsafe {
        p.add(i).read_volatile()
    }))
}

fn read_u64(addr: u64) -> u64 {
    // SAFETY: as in `read_cd`: an L1CD of a live table.
    unsafe { (addr as *const u64).read_volatile() }
}

/// The domain's own CD (the one a single-CD STE would point at).
fn domain_cd(smmu: &Smmu<FakeHal>, id: DomainId) -> Cd {
    let domains = smmu.domains.lock();
    let super::Tables::Stage1(s1) = &domains.get(id).unwrap().tables else {
        panic!("not stage 1")
    };
    super::read_cd(&s1.cd)
}

/// (V, L2Ptr) of L1CD `i` of the two-level table at `base`.
fn l1(base: u64, i: u64) -> (bool, u64) {
    let r = LocalRegisterCopy::<u64, L1CD::Register>::new(read_u64(base + 8 * i));
    (r.is_set(L1CD::V), r.read(L1CD::L2PTR) << 12)
}

fn decoded(regs: &FakeRegs, from: usize) -> Vec<Command> {
    regs.commands()[from..]
        .iter()
        .map(|c| Command::decode(*c))
        .collect()
}

fn snapshot(smmu: &Smmu<FakeHal>, sid: u32) -> Vec<u64> {
    let mut v = smmu.domains.lock().cd_tables.get(&sid).unwrap().snapshot();
    v.extend(smmu.ste(sid).unwrap().0);
    v
}

#[test]
fn without_substreams_one_cd_per_stream() {
    let (_r, smmu) = enabled(IDR0_S1_ONLY, 0);
    let d = s1_domain(&smmu);
    smmu.attach(d, SID).unwrap();
    let (fmt, max, _, ptr) = ste_fields(&smmu, SID);
    assert_eq!((fmt, max), (0, 0));
    assert_eq!(read_cd(ptr), domain_cd(&smmu, d));
    assert_eq!(
        smmu.attach_ssid(d, SID, 1),
        Err(Error::Substream(SubstreamError::NoCdTable(SID)))
    );
}

#[test]
fn linear_table() {
    let (_r, smmu) = enabled(IDR0_S1_ONLY, 8);
    let a = s1_domain(&smmu);
    let b = s1_domain(&smmu);
    smmu.attach(a, SID).unwrap();
    let (fmt, max, dss, ptr) = ste_fields(&smmu, SID);
    assert_eq!((fmt, max, dss), (0, 8, 2));
    assert_eq!(ptr % (64 << 8), 0);
    assert_eq!(read_cd(ptr), domain_cd(&smmu, a));
    assert!(!read_cd(ptr + 64 * 9).is_valid());
    smmu.attach_ssid(b, SID, 9).unwrap();
    assert_eq!(read_cd(ptr + 64 * 9), domain_cd(&smmu, b));
    assert_eq!(smmu.domain_of_ssid(SID, 9), Some(b));
    smmu.detach_ssid(SID, 9).unwrap();
    assert_eq!(read_cd(ptr + 64 * 9), Cd::invalid());
    assert_eq!(smmu.domain_of_ssid(SID, 9), None);
}

#[test]
fn two_level_4k_leaves_and_commands() {
    let (regs, smmu) = enabled(IDR0_S1_ONLY | CD2L, 8);
    let a = s1_domain(&smmu);
    let b = s1_domain(&smmu);
    // The stream table's level 2 for SID, allocated once.
    smmu.attach(a, SID).unwrap();
    smmu.detach(SID).unwrap();
    let before = FakeHal::live_bytes();
    smmu.attach(a, SID).unwrap();
    // L1 table (64 bytes) and one 4K leaf, for SSID 0.
    assert_eq!(FakeHal::live_bytes() - before, 64 + 4096);
    let (fmt, max, dss, base) = ste_fields(&smmu, SID);
    assert_eq!((fmt, max, dss), (1, 8, 2));
    assert_eq!(base % 64, 0);
    let (v0, leaf0) = l1(base, 0);
    assert!(v0 && leaf0 % 4096 == 0);
    assert_eq!(read_cd(leaf0), domain_cd(&smmu, a));
    for i in 1..4 {
        assert_eq!(l1(base, i), (false, 0));
    }
    // SSID 5 shares leaf 0: CD-only invalidations.
    let n = regs.commands().len();
    smmu.attach_ssid(b, SID, 5).unwrap();
    assert_eq!(FakeHal::live_bytes() - before, 64 + 4096);
    let cmds = decoded(&regs, n);
    let cfgi5 = Command::CfgiCd {
        sid: SID,
        ssid: 5,
        leaf: true,
    };
    assert_eq!(cmds.len(), 4, "{cmds:?}");
    assert_eq!((cmds[0], cmds[2]), (cfgi5, cfgi5));
    assert!(matches!(cmds[1], Command::Sync { .. }) && matches!(cmds[3], Command::Sync { .. }));
    // SSID 200: leaf 3, allocated now; its L1CD invalidated (Leaf = 0)
    // before the CD behind it is written.
    let n = regs.commands().len();
    smmu.attach_ssid(b, SID, 200).unwrap();
    assert_eq!(FakeHal::live_bytes() - before, 64 + 2 * 4096);
    let (v3, leaf3) = l1(base, 3);
    assert!(v3 && leaf3 % 4096 == 0 && leaf3 != leaf0);
    assert_eq!(read_cd(leaf3 + 64 * (200 - 192)), domain_cd(&smmu, b));
    let cmds = decoded(&regs, n);
    assert_eq!(cmds.len(), 6, "{cmds:?}");
    assert_eq!(
        cmds[0],
        Command::CfgiCd {
            sid: SID,
            ssid: 200,
            leaf: false
        }
    );
    for c in [cmds[2], cmds[4]] {
        assert_eq!(
            c,
            Command::CfgiCd {
                sid: SID,
                ssid: 200,
                leaf: true
            }
        );
    }
    assert!(
        cmds.iter()
            .skip(1)
            .step_by(2)
            .all(|c| matches!(c, Command::Sync { .. }))
    );
    // Detaching a substream keeps its leaf; detaching the stream frees
    // the table once nothing else is on it.
    smmu.detach_ssid(SID, 200).unwrap();
    assert_eq!(l1(base, 3), (true, leaf3));
    assert_eq!(
        smmu.detach(SID),
        Err(Error::Substream(SubstreamError::SubstreamsAttached(SID)))
    );
    smmu.detach_ssid(SID, 5).unwrap();
    smmu.detach(SID).unwrap();
    assert_eq!(FakeHal::live_bytes(), before);
}

#[test]
fn two_level_64k_leaves() {
    let (_r, smmu) = enabled(IDR0_S1_ONLY | CD2L, 16);
    smmu.set_cd_table_policy(CdTablePolicy {
        ssid_bits: 12,
        leaf: CdLeaf::K64,
    });
    let a = s1_domain(&smmu);
    let b = s1_domain(&smmu);
    smmu.attach(a, SID).unwrap();
    let (fmt, max, dss, base) = ste_fields(&smmu, SID);
    assert_eq!((fmt, max, dss), (2, 12, 2));
    let (v0, leaf0) = l1(base, 0);
    assert!(v0 && leaf0 % 65536 == 0);
    assert_eq!(l1(base, 2), (false, 0));
    smmu.attach_ssid(b, SID, 2048 + 1023).unwrap();
    let (v2, leaf2) = l1(base, 2);
    assert!(v2 && leaf2 % 65536 == 0);
    assert_eq!(read_cd(leaf2 + 64 * 1023), domain_cd(&smmu, b));
    assert_eq!(
        smmu.attach_ssid(b, SID, 4096),
        Err(Error::Substream(SubstreamError::SsidOutOfRange {
            ssid: 4096,
            s1cdmax: 12
        }))
    );
}

/// The CD states the SMMU could find at each CFGI_CD of the plan from
/// `from` to `to`: the memory after each `Sync`'s preceding writes.
fn states_at_syncs(from: &Cd, to: &Cd) -> Vec<[u64; 8]> {
    let mut cur = from.0;
    let mut out = Vec::new();
    for s in cd::plan_update(from, to).unwrap().iter() {
        match *s {
            UpdateStep::Write { dword, value } => cur[dword] = value,
            UpdateStep::Sync => out.push(cur),
            UpdateStep::Publish => {}
        }
    }
    out
}

/// What the SMMU model sees in the CD at each CFGI_CD is exactly the
/// planner's state at each `Sync`, and the plan is safe against the
/// any-order model (install and clear).
#[test]
fn cd_writes_follow_the_planner() {
    let (regs, smmu) = enabled(IDR0_S1_ONLY | CD2L, 8);
    let a = s1_domain(&smmu);
    let b = s1_domain(&smmu);
    smmu.attach(a, SID).unwrap();
    let (_, _, _, base) = ste_fields(&smmu, SID);
    let addr = l1(base, 0).1 + 64 * 7;
    let seen: Arc<Mutex<Vec<[u64; 8]>>> = Arc::default();
    let log = seen.clone();
    regs.fault_commands(Box::new(move |c| {
        if let Command::CfgiCd { ssid: 7, .. } = Command::decode(*c) {
            log.lock().unwrap().push(read_cd(addr).0);
        }
        None
    }));
    let target = domain_cd(&smmu, b);
    smmu.attach_ssid(b, SID, 7).unwrap();
    smmu.detach_ssid(SID, 7).unwrap();
    let mut want = states_at_syncs(&Cd::invalid(), &target);
    want.extend(states_at_syncs(&target, &Cd::invalid()));
    assert_eq!(*seen.lock().unwrap(), want);
    let live = |e: &crate::entry_plan::Dwords| Cd(*e).is_valid();
    for (x, y) in [(Cd::invalid(), target), (target, Cd::invalid())] {
        let plan = cd::plan_update(&x, &y).unwrap();
        assert!(replay(&CD_KIND, live, &x.0, &y.0, plan.as_slice()).is_safe());
    }
}

#[test]
fn refused_calls_change_nothing() {
    let (regs, smmu) = enabled(IDR0_S1_ONLY | CD2L, 8);
    let a = s1_domain(&smmu);
    let b = s1_domain(&smmu);
    smmu.attach(a, SID).unwrap();
    smmu.attach_ssid(b, SID, 70).unwrap();
    let snap = snapshot(&smmu, SID);
    let n = regs.commands().len();
    let sub = |e: SubstreamError| Err(Error::Substream(e));
    assert_eq!(
        smmu.attach_ssid(b, SID, 256),
        sub(SubstreamError::SsidOutOfRange {
            ssid: 256,
            s1cdmax: 8
        })
    );
    assert_eq!(
        smmu.attach_ssid(a, SID, 70),
        sub(SubstreamError::SsidInUse { sid: SID, ssid: 70 })
    );
    assert_eq!(
        smmu.attach_ssid(b, SID, 0),
        sub(SubstreamError::SsidInUse { sid: SID, ssid: 0 })
    );
    assert_eq!(smmu.attach_ssid(99, SID, 1), Err(Error::UnknownDomain(99)));
    assert_eq!(smmu.attach_ssid(b, 4, 1), sub(SubstreamError::NoCdTable(4)));
    assert_eq!(smmu.detach_ssid(SID, 0), sub(SubstreamError::Ssid0(SID)));
    assert_eq!(
        smmu.detach_ssid(SID, 71),
        sub(SubstreamError::SsidNotAttached { sid: SID, ssid: 71 })
    );
    assert_eq!(smmu.destroy_domain(b), Err(Error::DomainBusy(b)));
    // A leaf that cannot be allocated.
    FakeHal::fail_after(Some(0));
    let r = smmu.attach_ssid(b, SID, 200);
    FakeHal::fail_after(None);
    assert_eq!(r, Err(Error::NoMemory));
    assert_eq!(
        smmu.detach(SID),
        sub(SubstreamError::SubstreamsAttached(SID))
    );
    assert_eq!(snapshot(&smmu, SID), snap);
    assert_eq!(regs.commands().len(), n);
}

#[test]
fn stage2_smmu_checks_stage_and_vmid() {
    let (_r, smmu) = enabled(IDR0_NESTED | CD2L, 8);
    let a = s1_domain(&smmu);
    // Stage-1 domains share VMID 0 unless one asks for its own.
    let b = smmu
        .create_domain(DomainOptions {
            stage: StagePolicy::Stage1,
            vmid: Some(7),
            ..DomainOptions::new(Stage2Config::new(Granule::K4, 40, 48).unwrap())
        })
        .unwrap();
    let s2 = smmu
        .create_domain(DomainOptions::new(
            Stage2Config::new(Granule::K4, 40, 48).unwrap(),
        ))
        .unwrap();
    smmu.attach(a, SID).unwrap();
    assert_eq!(ste_fields(&smmu, SID).1, 8);
    assert_eq!(
        smmu.attach_ssid(s2, SID, 1),
        Err(Error::Substream(SubstreamError::NotStage1(s2)))
    );
    let (va, vb) = (
        smmu.domain_info(a).unwrap().vmid,
        smmu.domain_info(b).unwrap().vmid,
    );
    assert_eq!(
        smmu.attach_ssid(b, SID, 1),
        Err(Error::Substream(SubstreamError::VmidMismatch {
            stream: va,
            domain: vb
        }))
    );
    // Stage-1 domains share VMID 0 by default: a second one takes a
    // substream of the same stream on an SMMU with stage 2.
    let c = s1_domain(&smmu);
    assert_eq!(smmu.domain_info(c).unwrap().vmid, va);
    smmu.attach_ssid(c, SID, 1).unwrap();
    assert_eq!(smmu.domain_of_ssid(SID, 1), Some(c));
    // A stage-2 domain's stream has no CD table.
    smmu.attach(s2, 4).unwrap();
    assert_eq!(
        smmu.attach_ssid(a, 4, 1),
        Err(Error::Substream(SubstreamError::NoCdTable(4)))
    );
}

#[derive(Debug, Clone)]
enum Op {
    Attach(usize, u32),
    Detach(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..3, 0u32..300).prop_map(|(d, s)| Op::Attach(d, s)),
        (0u32..300).prop_map(Op::Detach),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random attach/detach_ssid sequences never panic, return what a
    /// reference model predicts, and leave exactly the model's CDs valid.
    #[test]
    fn random_substream_sequences(ops in proptest::collection::vec(op(), 1..24)) {
        let (_r, smmu) = enabled(IDR0_S1_ONLY | CD2L, 8);
        let ds: Vec<DomainId> = (0..3).map(|_| s1_domain(&smmu)).collect();
        smmu.attach(ds[0], SID).unwrap();
        let mut model: BTreeMap<u32, DomainId> = BTreeMap::new();
        model.insert(0, ds[0]);
        for o in ops {
            match o {
                Op::Attach(d, ssid) => {
                    let want = if ssid >= 256 {
                        Err(SubstreamError::SsidOutOfRange { ssid, s1cdmax: 8 }.into())
                    } else if let std::collections::btree_map::Entry::Vacant(e) = model.entry(ssid) {
                        e.insert(ds[d]);
                        Ok(())
                    } else {
                        Err(SubstreamError::SsidInUse { sid: SID, ssid }.into())
                    };
                    prop_assert_eq!(smmu.attach_ssid(ds[d], SID, ssid), want);
                }
                Op::Detach(ssid) => {
                    let want = if ssid == 0 {
                        Err(SubstreamError::Ssid0(SID).into())
                    } else if model.remove(&ssid).is_some() {
                        Ok(())
                    } else {
                        Err(SubstreamError::SsidNotAttached { sid: SID, ssid }.into())
                    };
                    prop_assert_eq!(smmu.detach_ssid(SID, ssid), want);
                }
            }
        }
        let base = ste_fields(&smmu, SID).3;
        for ssid in 0..256u32 {
            prop_assert_eq!(smmu.domain_of_ssid(SID, ssid), model.get(&ssid).copied());
            let (v, leaf) = l1(base, u64::from(ssid >> 6));
            let cd = if v { read_cd(leaf + 64 * u64::from(ssid & 63)) } else { Cd::invalid() };
            match model.get(&ssid) {
                Some(&d) => prop_assert_eq!(cd, domain_cd(&smmu, d)),
                None => prop_assert!(!cd.is_valid()),
            }
        }
    }
}

/// A batch refuses to detach a stream with substreams, frees the table of
/// one it detaches, and attaches with one CD (no table).
#[test]
fn batches_and_cd_tables() {
    let (_r, smmu) = enabled(IDR0_S1_ONLY | CD2L, 8);
    let a = s1_domain(&smmu);
    let b = s1_domain(&smmu);
    smmu.attach(a, SID).unwrap();
    smmu.attach_ssid(b, SID, 1).unwrap();
    assert_eq!(
        smmu.batch().detach(SID).commit(&mut |_| {}),
        Err(Error::Substream(SubstreamError::SubstreamsAttached(SID)))
    );
    smmu.detach_ssid(SID, 1).unwrap();
    smmu.batch().detach(SID).commit(&mut |_| {}).unwrap();
    assert!(!smmu.domains.lock().cd_tables.contains_key(&SID));
    smmu.batch().attach(a, SID).commit(&mut |_| {}).unwrap();
    assert_eq!(ste_fields(&smmu, SID).1, 0);
    assert_eq!(
        smmu.attach_ssid(b, SID, 1),
        Err(Error::Substream(SubstreamError::NoCdTable(SID)))
    );
}

/// An attach whose STE write fails (CMD_SYNC refused) keeps the new CD
/// table alive: the STE may already point at it.
#[test]
fn a_failed_attach_keeps_the_table() {
    let (regs, smmu) = enabled(IDR0_S1_ONLY | CD2L, 8);
    let a = s1_domain(&smmu);
    // The first CFGI_STE (opcode 3) is illegal: the write reports it.
    let mut once = true;
    regs.fault_commands(Box::new(move |c| {
        (c[0] & 0xFF == 3 && std::mem::take(&mut once)).then_some(1)
    }));
    assert!(smmu.attach(a, SID).is_err());
    regs.fault_commands(Box::new(|_| None));
    assert_eq!(smmu.domain_of(SID), None);
    let kept = smmu.domains.lock().cd_tables.get(&SID).map(|t| t.base());
    let ptr = smmu.ste(SID).unwrap().cd_paddr();
    assert!(kept.is_some());
    if ptr != 0 {
        assert_eq!(Some(ptr), kept);
    }
}
