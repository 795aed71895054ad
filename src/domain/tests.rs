//! Domain tests on the fake register block: invalidation after a failed
//! TLBI, attach racing bypass, walk attributes, block splits, the CPU
//! hook, map options, hypervisor-owned tables, invalidation hints and
//! batched teardown.

use super::*;
use crate::fake::{FakeHal, FakeRegs};
use crate::smmu::{Config, Smmu};
use crate::stage2::Granule;
use crate::stage2::{MapOptions, Memory, Perm};
use crate::ste::SteConfig;

const TLBI_S12_VMALL: u64 = 0x28;
const TLBI_S2_IPA: u64 = 0x2A;
const CERROR_ILL: u32 = 1;

/// QEMU virt's ID registers on a register block that answers like an
/// SMMU, with an enabled driver on it.
fn enabled(coherent: Option<bool>) -> (Box<FakeRegs>, Smmu<FakeHal>) {
    let regs = Box::new(FakeRegs::qemu_like());
    regs.respond();
    let config = Config {
        timeout_ns: 1_000_000,
        firmware_coherent: coherent,
        ..Config::default()
    };
    // SAFETY: the block is MMIO_SIZE bytes and outlives the driver (the
    // caller drops the driver first: tuple fields drop in order... the
    // driver is dropped explicitly by each test before the block).
    let smmu = unsafe { Smmu::<FakeHal>::new(regs.base(), config) }.unwrap();
    smmu.enable().unwrap();
    (regs, smmu)
}

fn domain(smmu: &Smmu<FakeHal>) -> DomainId {
    let cfg = Stage2Config::new(Granule::K4, 40, 48).unwrap();
    smmu.create_domain(DomainOptions::new(cfg)).unwrap()
}

fn retired(smmu: &Smmu<FakeHal>, id: DomainId) -> usize {
    smmu.domains
        .lock()
        .get(id)
        .unwrap()
        .owned()
        .unwrap()
        .retired_tables()
}

/// Issue 8 item 4: tables retired by an unmap whose TLBI was lost are
/// not freed after an invalidation of some other range; the next
/// invalidation is a TLBI_S12_VMALL.
#[test]
fn tables_retired_by_a_failed_invalidation_wait_for_a_vmall() {
    let (regs, smmu) = enabled(None);
    let id = domain(&smmu);
    let vmid = smmu.domain_info(id).unwrap().vmid;
    // Single pages in two 1 GiB regions: each has its own level-2 and
    // level-3 table, which unmapping the page empties.
    smmu.map(id, 0x4000_1000, 0x8000_1000, 0x1000, Perm::ReadWrite)
        .unwrap();
    smmu.map(id, 0x8060_0000, 0x8060_0000, 0x2000, Perm::ReadWrite)
        .unwrap();
    // The SMMU rejects the first TLBI_S2_IPA it sees (it is replaced by
    // a CMD_SYNC, so it never runs).
    let mut armed = true;
    regs.fault_commands(Box::new(move |c| {
        (armed && c[0] & 0xFF == TLBI_S2_IPA).then(|| {
            armed = false;
            CERROR_ILL
        })
    }));
    assert!(matches!(
        smmu.unmap(id, 0x4000_1000, 0x1000),
        Err(Error::CommandError { .. })
    ));
    assert!(
        retired(&smmu, id) > 0,
        "tables freed without an invalidation"
    );
    let before = regs.commands().len();
    smmu.unmap(id, 0x8060_0000, 0x1000).unwrap();
    let after = regs.commands()[before..].to_vec();
    assert!(
        after
            .iter()
            .any(|c| c[0] & 0xFF == TLBI_S12_VMALL && (c[0] >> 32) as u16 == vmid),
        "tables freed after invalidating only another range: {after:x?}"
    );
    assert_eq!(retired(&smmu, id), 0);
    // Back to range invalidations once a VMALL completed.
    let before = regs.commands().len();
    smmu.unmap(id, 0x8060_1000, 0x1000).unwrap();
    assert!(
        regs.commands()[before..]
            .iter()
            .all(|c| c[0] & 0xFF != TLBI_S12_VMALL)
    );
    drop(smmu);
}

/// Issue 8 item 5: `set_bypass` cannot overwrite an `attach` that runs
/// between its domain check and its STE write.
#[test]
fn set_bypass_and_attach_cannot_interleave() {
    let (regs, smmu) = enabled(None);
    let id = domain(&smmu);
    let sid = 0x10;
    smmu.set_abort(sid).unwrap(); // the level-2 table exists
    let smmu = std::sync::Arc::new(smmu);
    let (tx, rx) = std::sync::mpsc::channel();
    let other = smmu.clone();
    let handle = std::sync::Arc::new(std::sync::Mutex::new(None));
    let h2 = handle.clone();
    crate::fake::at_pause_point("write_unmanaged_ste", move || {
        // Another CPU attaches the StreamID right now.
        let other = other.clone();
        let tx = tx.clone();
        *h2.lock().unwrap() = Some(std::thread::spawn(move || {
            let r = other.attach(id, sid);
            let _ = tx.send(());
            r
        }));
        // Give it every chance to finish inside the window.
        let _ = rx.recv_timeout(std::time::Duration::from_millis(300));
    });
    let bypass = smmu.set_bypass(sid);
    let attach = handle.lock().unwrap().take().unwrap().join().unwrap();
    let ste = smmu.ste(sid).unwrap();
    let attached = smmu.domain_of(sid).is_some();
    assert_eq!(
        attached,
        ste.config() == SteConfig::Stage2,
        "bookkeeping says attached = {attached}, STE is {:?} (bypass {bypass:?}, attach {attach:?})",
        ste.config()
    );
    assert!(bypass.is_ok() != attach.is_ok(), "exactly one wins");
    drop(std::sync::Arc::try_unwrap(smmu).unwrap());
    drop(regs);
}

/// Issue 8 item 6: a non-coherent SMMU walks stage 2 Non-cacheable,
/// Outer Shareable (S2IR0 = S2OR0 = 0, S2SH0 = 2), as CR1 says.
#[test]
fn non_coherent_walk_attributes_in_the_ste() {
    use crate::ste::STE_2;
    use tock_registers::LocalRegisterCopy;
    for (coherent, expected) in [(Some(false), (0, 0, 2)), (None, (1, 1, 3))] {
        let (regs, smmu) = enabled(coherent);
        let id = domain(&smmu);
        smmu.attach(id, 8).unwrap();
        let d2 = LocalRegisterCopy::<u64, STE_2::Register>::new(smmu.ste(8).unwrap().0[2]);
        assert_eq!(
            (
                d2.read(STE_2::S2IR0),
                d2.read(STE_2::S2OR0),
                d2.read(STE_2::S2SH0)
            ),
            expected,
            "firmware coherency {coherent:?}"
        );
        smmu.detach(8).unwrap();
        drop(smmu);
        drop(regs);
    }
}

const M2: u64 = 2 << 20;

/// An enabled SMMU whose IDR3.BBML is `bbml`, and a domain on it.
pub(super) fn with_bbml(bbml: u32, cpu_bbml2: bool) -> (Box<FakeRegs>, Smmu<FakeHal>, DomainId) {
    let (regs, smmu) = enabled(None);
    drop(smmu);
    regs.set32(0x0C, (regs.get32(0x0C) & !(3 << 11)) | bbml << 11);
    let config = Config {
        timeout_ns: 1_000_000,
        ..Config::default()
    };
    // SAFETY: as in `enabled`.
    let smmu = unsafe { Smmu::<FakeHal>::new(regs.base(), config) }.unwrap();
    smmu.enable().unwrap();
    let cfg = Stage2Config::new(Granule::K4, 40, 48).unwrap();
    let id = smmu
        .create_domain(DomainOptions {
            cpu_bbml2,
            ..DomainOptions::new(cfg)
        })
        .unwrap();
    (regs, smmu, id)
}

/// Issue 9: unmapping one 4K page in the middle of a 2 MiB block splits
/// the block (break-before-make without BBML2 on both sides), and only
/// that page stops translating.
#[test]
fn unmap_inside_a_block_splits_it() {
    for (bbml, cpu_bbml2, breaks) in [(0, false, true), (2, false, true), (2, true, false)] {
        let (regs, smmu, id) = with_bbml(bbml, cpu_bbml2);
        let (ipa, pa) = (0x4020_0000, 0x8020_0000);
        smmu.map(id, ipa, pa, M2, Perm::ReadWrite).unwrap();
        assert_eq!(smmu.translate(id, ipa).unwrap().unwrap().size, M2);
        let hole = ipa + 0x10_0000;
        let mut calls = Vec::new();
        let before = regs.commands().len();
        smmu.unmap_with(id, hole, 0x1000, &mut |c| calls.push((c.ipa, c.len)))
            .unwrap();
        assert_eq!(smmu.translate(id, hole).unwrap(), None);
        for probe in [ipa, hole - 0x1000, hole + 0x1000, ipa + M2 - 0x1000] {
            let t = smmu
                .translate(id, probe)
                .unwrap()
                .expect("neighbour still mapped");
            assert_eq!(
                (t.pa, t.size, t.perm),
                (pa + (probe - ipa), 0x1000, Perm::ReadWrite)
            );
        }
        let syncs = regs.commands()[before..]
            .iter()
            .filter(|c| c[0] & 0xFF == 0x46)
            .count();
        if breaks {
            // The whole block for the CPU and the SMMU between break and
            // make, then the page.
            assert_eq!(
                calls,
                [(ipa, M2), (hole, 0x1000)],
                "BBML {bbml} cpu {cpu_bbml2}"
            );
            assert_eq!(syncs, 2);
        } else {
            assert_eq!(calls, [(hole, 0x1000)]);
            assert_eq!(syncs, 1);
        }
        drop(smmu);
    }
}

/// Issue 9: the CPU hook runs after the descriptors changed and before
/// the tables the unmap emptied are freed.
#[test]
fn the_cpu_hook_runs_before_tables_are_freed() {
    let (regs, smmu) = enabled(None);
    let id = domain(&smmu);
    smmu.map(id, 0x4000_1000, 0x8000_1000, 0x1000, Perm::ReadWrite)
        .unwrap();
    let before = regs.commands().len();
    let mut seen = None;
    smmu.unmap_with(id, 0x4000_1000, 0x1000, &mut |c| {
        // The SMMU's TLBI + SYNC already completed.
        seen = Some((c.vmid, c.ipa, c.len, regs.commands().len() - before));
    })
    .unwrap();
    let vmid = smmu.domain_info(id).unwrap().vmid;
    assert_eq!(seen, Some((vmid, 0x4000_1000, 0x1000, 2)));
    assert_eq!(retired(&smmu, id), 0);
    drop(smmu);
}

/// Issue 9: retired tables are still allocated while the hook runs.
#[test]
fn tables_are_alive_while_the_hook_runs() {
    let (regs, smmu) = enabled(None);
    let id = domain(&smmu);
    smmu.map(id, 0x4000_1000, 0x8000_1000, 0x1000, Perm::ReadWrite)
        .unwrap();
    let live_before = FakeHal::live_bytes();
    let mut live_in_hook = 0;
    smmu.unmap_with(id, 0x4000_1000, 0x1000, &mut |_| {
        live_in_hook = FakeHal::live_bytes()
    })
    .unwrap();
    assert_eq!(
        live_in_hook, live_before,
        "a table was freed before the CPU hook"
    );
    assert!(
        FakeHal::live_bytes() < live_before,
        "emptied tables freed afterwards"
    );
    drop(smmu);
    drop(regs);
}

/// Issue 9: device mappings are Device-nGnRE and execute-never; pages
/// only when blocks are not allowed.
#[test]
fn map_options_reach_the_descriptors() {
    let (_regs, smmu) = enabled(None);
    let id = domain(&smmu);
    smmu.map_with(id, 0x1000_0000, 0x1000_0000, M2, &MapOptions::device())
        .unwrap();
    let t = smmu.translate(id, 0x1000_0000).unwrap().unwrap();
    assert_eq!((t.memory, t.execute, t.size), (Memory::Device, false, M2));
    let pages = MapOptions {
        blocks: false,
        ..MapOptions::normal(Perm::Read)
    };
    smmu.map_with(id, 0x4000_0000, 0x8000_0000, M2, &pages)
        .unwrap();
    let t = smmu.translate(id, 0x4000_0000).unwrap().unwrap();
    assert_eq!(
        (t.memory, t.execute, t.size),
        (Memory::Normal, true, 0x1000)
    );
    // protect keeps the memory type and XN.
    smmu.protect(id, 0x1000_0000, 0x1000, Perm::Read).unwrap();
    let t = smmu.translate(id, 0x1000_0000).unwrap().unwrap();
    assert_eq!(
        (t.memory, t.execute, t.perm, t.size),
        (Memory::Device, false, Perm::Read, 0x1000)
    );
    let t = smmu.translate(id, 0x1000_1000).unwrap().unwrap();
    assert_eq!((t.perm, t.memory), (Perm::ReadWrite, Memory::Device));
    drop(smmu);
}

/// Issue 9: hypervisor-owned tables: the VMID is reserved, the STE
/// points at the hypervisor's root with its geometry, the driver never
/// edits the tables, and `invalidate` reaches the SMMU.
#[test]
fn external_tables_are_attached_and_invalidated() {
    use crate::domain::ExternalStage2;
    let (regs, smmu) = enabled(None);
    let cfg = Stage2Config::new(Granule::K4, 40, 48).unwrap();
    let root =
        crate::hal::Dma::<FakeHal>::new(cfg.root_table_bytes(), cfg.root_align(), true).unwrap();
    let ext = ExternalStage2 {
        vtcr: cfg.vtcr(),
        root: root.paddr(),
        vmid: Some(7),
        access_flag_fault_disable: true,
    };
    let id = smmu.create_external_domain(ext).unwrap();
    // The CPU's VMID is now taken in the SMMU's space.
    let other = smmu.create_domain(DomainOptions {
        vmid: Some(7),
        ..DomainOptions::new(cfg)
    });
    assert!(other.is_err());
    assert_eq!(
        smmu.create_external_domain(ExternalStage2 {
            root: root.paddr() + 0x1000,
            vmid: Some(8),
            ..ext
        }),
        Err(Error::Misaligned {
            addr: root.paddr() + 0x1000,
            align: cfg.root_align() as u64
        })
    );
    smmu.attach(id, 0x20).unwrap();
    let ste = smmu.ste(0x20).unwrap();
    assert_eq!((ste.vmid(), ste.s2ttb()), (7, root.paddr()));
    let info = smmu.domain_info(id).unwrap();
    assert!(info.external);
    assert_eq!(info.vttbr(), root.paddr() | 7 << 48);
    assert_eq!(info.vtcr, cfg.vtcr());
    assert_eq!(
        smmu.map(id, 0x4000_0000, 0x8000_0000, 0x1000, Perm::Read),
        Err(Error::ExternalTables(id))
    );
    assert_eq!(
        smmu.unmap(id, 0x4000_0000, 0x1000),
        Err(Error::ExternalTables(id))
    );
    let before = regs.commands().len();
    smmu.invalidate(id, 0x4000_0000, 0x1000).unwrap();
    let cmds = regs.commands()[before..].to_vec();
    assert_eq!(cmds.len(), 2);
    assert_eq!(
        (cmds[0][0] & 0xFF, (cmds[0][0] >> 32) as u16),
        (TLBI_S2_IPA, 7)
    );
    assert_eq!(cmds[0][1] & !0xFFF, 0x4000_0000);
    assert_eq!(
        smmu.invalidate(id, 0x4000_0800, 0x1000),
        Err(Error::Misaligned {
            addr: 0x4000_0800,
            align: 0x1000
        })
    );
    smmu.detach(0x20).unwrap();
    smmu.destroy_domain(id).unwrap();
    drop(smmu);
    drop(root);
}

/// Issue 12 item 2: the hints follow what changed: Leaf = 1 and TTL =
/// the level when only leaves of one level changed; non-leaf when a
/// table was unlinked; no TTL after a block was replaced without break.
#[test]
fn invalidation_hints_follow_the_change() {
    use crate::cmd::Command;
    let tlbis = |regs: &FakeRegs, from: usize| -> Vec<(bool, u8)> {
        regs.commands()[from..]
            .iter()
            .filter_map(|w| match Command::decode(*w) {
                Command::TlbiS2Ipa { leaf, range, .. } => Some((leaf, range.map_or(0, |r| r.ttl))),
                _ => None,
            })
            .collect()
    };
    for (bbml, cpu_bbml2) in [(0, false), (2, true)] {
        let (regs, smmu, id) = with_bbml(bbml, cpu_bbml2);
        // Two pages in one level-3 table, and a 2 MiB block.
        smmu.map(id, 0x4000_0000, 0x8000_0000, 0x2000, Perm::ReadWrite)
            .unwrap();
        smmu.map(id, 0x4020_0000, 0x8020_0000, M2, Perm::ReadWrite)
            .unwrap();
        let n = regs.commands().len();
        smmu.unmap(id, 0x4000_0000, 0x1000).unwrap(); // the table stays
        assert_eq!(tlbis(&regs, n), [(true, 3)]);
        let n = regs.commands().len();
        smmu.protect(id, 0x4020_0000, M2, Perm::Read).unwrap(); // the block
        assert_eq!(tlbis(&regs, n), [(true, 2)]);
        let n = regs.commands().len();
        smmu.unmap(id, 0x4000_1000, 0x1000).unwrap(); // empties the table
        assert_eq!(tlbis(&regs, n), [(false, 0)]);
        let n = regs.commands().len();
        smmu.unmap(id, 0x4030_0000, 0x1000).unwrap(); // splits the block
        let expected: &[(bool, u8)] = if cpu_bbml2 {
            &[(true, 0)] // the old block may be cached: no level
        } else {
            &[(true, 2), (true, 3)] // break (the block), then the page
        };
        assert_eq!(tlbis(&regs, n), expected, "BBML {bbml}");
        drop(smmu);
    }
}

/// Issue 12 item 3: tearing a VM down in one batch (2 StreamIDs
/// detached, 16 separate mappings unmapped) shares the round trips:
/// one CMD_SYNC for all the TLBIs and at most 3 for all the STEs,
/// where single calls take one or more per call. Same end state.
#[test]
fn a_batched_teardown_shares_the_syncs() {
    let teardown = |batched: bool| {
        let (regs, smmu) = enabled(None);
        let id = domain(&smmu);
        for i in 0..16u64 {
            let ipa = 0x4000_0000 + i * 0x20_0000; // one table each
            smmu.map(id, ipa, 0x8000_0000 + i * 0x1000, 0x1000, Perm::ReadWrite)
                .unwrap();
        }
        smmu.attach(id, 0x10).unwrap();
        smmu.attach(id, 0x18).unwrap();
        let tables = smmu
            .domains
            .lock()
            .get(id)
            .unwrap()
            .owned()
            .unwrap()
            .tables();
        let n = regs.commands().len();
        let mut hooks = 0;
        if batched {
            let mut b = smmu.batch().detach(0x10).detach(0x18);
            for i in 0..16u64 {
                b = b.unmap(id, 0x4000_0000 + i * 0x20_0000, 0x1000);
            }
            b.commit(&mut |_| hooks += 1).unwrap();
        } else {
            smmu.detach(0x10).unwrap();
            smmu.detach(0x18).unwrap();
            for i in 0..16u64 {
                smmu.unmap_with(id, 0x4000_0000 + i * 0x20_0000, 0x1000, &mut |_| hooks += 1)
                    .unwrap();
            }
        }
        let cmds = regs.commands()[n..].to_vec();
        let syncs = cmds.iter().filter(|c| c[0] & 0xFF == 0x46).count();
        // Same end state either way.
        assert!(smmu.ste(0x10).unwrap().config().is_abort());
        assert!(smmu.ste(0x18).unwrap().config().is_abort());
        assert_eq!(smmu.domain_info(id).unwrap().sids.len(), 0);
        let t = smmu
            .domains
            .lock()
            .get(id)
            .unwrap()
            .owned()
            .unwrap()
            .tables();
        assert!(t < tables, "emptied tables freed");
        assert_eq!(retired(&smmu, id), 0);
        assert_eq!(smmu.translate(id, 0x4000_0000).unwrap(), None);
        assert_eq!(hooks, 16);
        drop(smmu);
        (cmds.len(), syncs)
    };
    let (single_cmds, single_syncs) = teardown(false);
    let (batch_cmds, batch_syncs) = teardown(true);
    assert!(batch_syncs <= 4, "batched: {batch_syncs} syncs");
    assert!(single_syncs >= 18, "single calls: {single_syncs} syncs");
    assert!(batch_cmds < single_cmds);
}

/// A batch that cannot be applied as a whole: STE checks refuse it
/// before anything changes; a refused table change leaves the earlier
/// ones made and invalidated.
#[test]
fn a_refused_batch_change_keeps_the_safety_order() {
    let (regs, smmu) = enabled(None);
    let id = domain(&smmu);
    smmu.map(id, 0x4000_0000, 0x8000_0000, 0x2000, Perm::ReadWrite)
        .unwrap();
    smmu.attach(id, 0x10).unwrap();
    let before = smmu.stream_table_snapshot();
    assert_eq!(
        smmu.batch().detach(0x10).detach(0x18).commit(&mut |_| {}),
        Err(Error::SidNotAttached(0x18))
    );
    assert_eq!(smmu.stream_table_snapshot(), before, "an STE changed");
    let n = regs.commands().len();
    let r = smmu
        .batch()
        .unmap(id, 0x4000_0000, 0x1000)
        .unmap(id, 0x5000_0000, 0x1000)
        .commit(&mut |_| {});
    assert_eq!(r, Err(Error::NotMapped { addr: 0x5000_0000 }));
    assert_eq!(smmu.translate(id, 0x4000_0000).unwrap(), None);
    assert!(
        regs.commands()[n..].iter().any(|c| c[0] & 0xFF == 0x2A),
        "the made change was invalidated"
    );
    drop(smmu);
}

/// Every store the SMMU may read (stream table, CDs, page tables, commands)
/// is made visible before the MMIO write that lets the SMMU read it, from
/// probe through enable, map, attach, unmap, detach and teardown: `DSB ST`
/// for a coherent SMMU (IHI 0070 §3.21.2, §3.21.3.1), a cache clean then
/// `DSB ST` for a non-coherent one. Fails if `Dma::publish` loses either.
#[test]
fn every_store_is_published_before_the_mmio_write_that_makes_the_smmu_look() {
    use crate::fake::{Trace, check_published_before_kicks, start_trace, take_trace};
    for coherent in [true, false] {
        // From probe on: `enabled` builds and enables the driver.
        start_trace();
        let (_regs, smmu) = enabled(Some(coherent));
        let id = domain(&smmu);
        smmu.map(id, 0x4000_1000, 0x8000_1000, 0x1000, Perm::ReadWrite)
            .unwrap();
        smmu.map(id, 0x4020_0000, 0x8020_0000, 0x20_0000, Perm::ReadWrite)
            .unwrap();
        smmu.attach(id, 0x13).unwrap();
        smmu.unmap(id, 0x4000_1000, 0x1000).unwrap();
        smmu.unmap(id, 0x4020_0000, 0x1000).unwrap();
        smmu.detach(0x13).unwrap();
        smmu.destroy_domain(id).unwrap();
        let trace = take_trace();
        drop(smmu);
        let checked = check_published_before_kicks(&trace, coherent)
            .unwrap_or_else(|e| panic!("coherent {coherent}: {e}"));
        assert!(checked > 20, "coherent {coherent}: only {checked} stores");
        let kicks = |offset| {
            trace
                .iter()
                .filter(|e| matches!(**e, Trace::Write { offset: o, .. } if o == offset))
                .count()
        };
        assert!(kicks(0x98) >= 4 && kicks(0x20) >= 3 && kicks(0x80) == 1);
        // Cleans only where the SMMU is not coherent.
        let cleans = trace.iter().any(|e| matches!(e, Trace::Clean { .. }));
        assert_eq!(cleans, !coherent);
    }
}
