//! Running out of memory after a change (issue 11): a [`super::Batch`]
//! part way through its commit, single unmaps and protects, stage-1
//! domain creation.

extern crate std;

use std::boxed::Box;
use std::vec::Vec;

use crate::cmd::Command;
use crate::domain::{DomainId, DomainOptions, StagePolicy};
use crate::fake::{FakeHal, FakeRegs, allocations, fail_reservations_after};
use crate::smmu::{Config, Smmu};
use crate::stage2::{Granule, Perm, Stage2Config};

fn enabled() -> (Box<FakeRegs>, Smmu<FakeHal>) {
    enabled_idr3(0x0000_1404)
}

/// QEMU virt's ID registers with IDR3 = `idr3` (bit 10: RIL).
fn enabled_idr3(idr3: u32) -> (Box<FakeRegs>, Smmu<FakeHal>) {
    let regs = Box::new(FakeRegs::qemu_like());
    regs.set32(0x0C, idr3);
    regs.respond();
    let config = Config {
        timeout_ns: 1_000_000,
        ..Config::default()
    };
    // SAFETY: the block is MMIO_SIZE bytes and outlives the driver (each
    // test drops the driver first); nothing else drives it.
    let smmu = unsafe { Smmu::<FakeHal>::new(regs.base(), config) }.unwrap();
    smmu.enable().unwrap();
    (regs, smmu)
}

fn domain(smmu: &Smmu<FakeHal>) -> DomainId {
    let cfg = Stage2Config::new(Granule::K4, 40, 48).unwrap();
    smmu.create_domain(DomainOptions::new(cfg)).unwrap()
}

/// Whether `cmds` invalidate the stage-2 entry of `ipa` under `vmid`
/// (TLBI_S2_IPA naming its page or TLBI_S12_VMALL) and a CMD_SYNC follows.
fn invalidated(cmds: &[Command], vmid: u16, ipa: u64) -> bool {
    let tlbi = cmds.iter().position(|c| match *c {
        Command::TlbiS12Vmall { vmid: v } => v == vmid,
        Command::TlbiS2Ipa {
            vmid: v,
            addr,
            range: None,
            ..
        } => v == vmid && addr == ipa,
        Command::TlbiS2Ipa {
            vmid: v,
            addr,
            range: Some(_),
            ..
        } => v == vmid && addr <= ipa,
        _ => false,
    });
    tlbi.is_some_and(|i| {
        cmds[i + 1..]
            .iter()
            .any(|c| matches!(c, Command::Sync { .. }))
    })
}

/// Issue 11: a batch that runs out of memory after its tables changed
/// still issues the TLBIs and the CMD_SYNC for what changed (the old code
/// reserved its TLBI list after the change and returned `NoMemory`
/// without invalidating). Every reservation of the commit is made to fail
/// in turn.
#[test]
fn batch_out_of_memory_never_skips_the_invalidation() {
    let mut failures = 0;
    for n in 0..64 {
        let (regs, smmu) = enabled();
        let id = domain(&smmu);
        let vmid = smmu.domain_info(id).unwrap().vmid;
        smmu.map(id, 0, 0x8000_0000, 0x10000, Perm::ReadWrite)
            .unwrap();
        let (gone, ro) = (0x1000, 0x3000);
        let before = regs.commands().len();
        fail_reservations_after(Some(n));
        let r = smmu
            .batch()
            .unmap(id, gone, 0x1000)
            .protect(id, ro, 0x1000, Perm::Read)
            .commit(&mut |_| {});
        fail_reservations_after(None);
        let cmds: Vec<Command> = regs.commands()[before..]
            .iter()
            .map(|&w| Command::decode(w))
            .collect();
        if smmu.translate(id, gone).unwrap().is_none() {
            assert!(
                invalidated(&cmds, vmid, gone),
                "reservation {n}: {gone:#x} unmapped ({r:?}) without a TLBI + CMD_SYNC: {cmds:x?}"
            );
        }
        if smmu.translate(id, ro).unwrap().unwrap().perm != Perm::ReadWrite {
            assert!(
                invalidated(&cmds, vmid, ro),
                "reservation {n}: {ro:#x} made read-only ({r:?}) without a TLBI + CMD_SYNC: {cmds:x?}"
            );
        }
        drop(smmu);
        drop(regs);
        match r {
            Ok(()) => {
                assert!(failures > 0, "no reservation was made to fail");
                return;
            }
            Err(e) => {
                assert_eq!(e, crate::Error::NoMemory);
                failures += 1;
            }
        }
    }
    panic!("the commit never succeeded");
}

/// Issue 11: once the tables changed, an unmap or protect allocates
/// nothing (the old code built its TLBI list in a vector after the change,
/// aborting on exhaustion with stale translations cached). Both command
/// forms: one TLBI per page, and the range form.
#[test]
fn unmap_and_protect_allocate_nothing() {
    for ril in [false, true] {
        let (regs, smmu) = enabled_idr3(if ril { 0x1404 } else { 0x1004 });
        assert_eq!(smmu.features().ril, ril);
        let id = domain(&smmu);
        smmu.map(id, 0, 0x8000_0000, 0x10000, Perm::ReadWrite)
            .unwrap();
        let before = allocations();
        smmu.unmap(id, 0x1000, 0x2000).unwrap();
        smmu.protect(id, 0x4000, 0x3000, Perm::Read).unwrap();
        let n = allocations() - before;
        assert_eq!(n, 0, "allocations unmapping and protecting (RIL {ril})");
        drop(smmu);
        drop(regs);
    }
}

/// Issue 11: without memory for a stage-1 domain's boxed context,
/// creation fails with `NoMemory` and gives its ASID back (the old code's
/// `Box::new` would abort instead).
#[test]
fn stage1_domain_without_memory_for_its_context() {
    let (regs, smmu) = enabled();
    let opts = DomainOptions {
        stage: StagePolicy::Stage1,
        ..DomainOptions::new(Stage2Config::new(Granule::K4, 40, 48).unwrap())
    };
    fail_reservations_after(Some(0));
    let r = smmu.create_domain(opts);
    fail_reservations_after(None);
    assert_eq!(r, Err(crate::Error::NoMemory));
    let id = smmu.create_domain(opts).unwrap();
    assert_eq!(smmu.domain_info(id).unwrap().asid, Some(1), "ASID leaked");
    drop(smmu);
    drop(regs);
}

/// The TLBIs a batch issues by index are those the vector-built list gave:
/// in change order, one TLBI_S12_VMALL per VMID however many changes fall
/// back to it, then one CMD_SYNC (a guard for the allocation-free
/// rewrite).
#[test]
fn batch_tlbis_in_order_with_one_vmall_per_vmid() {
    let (regs, smmu) = enabled_idr3(0x1004); // no RIL: one TLBI per page
    let (a, b) = (domain(&smmu), domain(&smmu));
    let va = smmu.domain_info(a).unwrap().vmid;
    let vb = smmu.domain_info(b).unwrap().vmid;
    smmu.map(a, 0, 0x8000_0000, 0x10_0000, Perm::ReadWrite)
        .unwrap();
    smmu.map(b, 0, 0x9000_0000, 0x10000, Perm::ReadWrite)
        .unwrap();
    let before = regs.commands().len();
    // 128 and 80 pages: past MAX_RANGE_COMMANDS (64), both fall back.
    smmu.batch()
        .unmap(a, 0, 0x1000)
        .unmap(b, 0x1000, 0x1000)
        .unmap(a, 0x10000, 0x80000)
        .protect(a, 0x90000, 0x50000, Perm::Read)
        .commit(&mut |_| {})
        .unwrap();
    let got: Vec<(u8, u16, u64)> = regs.commands()[before..]
        .iter()
        .map(|&w| match Command::decode(w) {
            Command::TlbiS2Ipa { vmid, addr, .. } => (1, vmid, addr),
            Command::TlbiS12Vmall { vmid } => (2, vmid, 0),
            Command::Sync { .. } => (3, 0, 0),
            c => panic!("unexpected {c:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [(1, va, 0), (1, vb, 0x1000), (2, va, 0), (3, 0, 0)],
        "{got:x?}"
    );
    drop(smmu);
    drop(regs);
}
