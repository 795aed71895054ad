//! Host tests of stage-1 domains on the fake SMMU: the policy, the STE and
//! CD they program (read back), ASID/VMID allocation, the invalidations
//! map/unmap/protect/destroy issue, and block splitting.

use tock_registers::LocalRegisterCopy;

use super::super::{DomainOptions, Stage, StagePolicy};
use crate::cd::{CD_0, Cd};
use crate::cmd::Command;
use crate::error::{Error, TableError, Unsupported};
use crate::fake::{FakeHal, FakeRegs};
use crate::smmu::{Config, Smmu};
use crate::stage2::{Granule, MapOptions, Perm, Stage2Config};
use crate::ste::{STE_1, Ste, SteConfig};

const IDR0_NESTED: u32 = 0x0D44_101B;
/// QEMU's IDR0 without S2P (bit 0): `-machine virt-9.1`.
const IDR0_S1_ONLY: u32 = 0x0D44_101A;
const M2: u64 = 2 << 20;

fn enabled(idr0: u32, idr3_bbml: u32) -> (Box<FakeRegs>, Smmu<FakeHal>) {
    let regs = Box::new(FakeRegs::new());
    regs.set32(0x00, idr0);
    regs.set32(0x04, 0x0273_0010);
    // RIL (bit 10), BBML.
    regs.set32(0x0C, 0x0000_0404 | idr3_bbml << 11);
    // OAS 48 bits: host heap addresses stand in for physical ones.
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

fn cfg() -> Stage2Config {
    Stage2Config::new(Granule::K4, 40, 48).unwrap()
}

fn stage1_opts() -> DomainOptions {
    DomainOptions {
        stage: StagePolicy::Stage1,
        ..DomainOptions::new(cfg())
    }
}

/// The CD the STE of `sid` points at, read from memory.
fn cd_of(smmu: &Smmu<FakeHal>, sid: u32) -> Cd {
    let p = smmu.ste(sid).unwrap().cd_paddr() as *const u64;
    // SAFETY: FakeHal memory (paddr == vaddr): the domain's 64-byte CD,
    // alive while the domain exists.
    Cd(core::array::from_fn(|i| unsafe { p.add(i).read() }))
}

fn decoded(regs: &FakeRegs, from: usize) -> Vec<Command> {
    regs.commands()[from..]
        .iter()
        .map(|c| Command::decode(*c))
        .collect()
}

#[test]
fn auto_picks_stage1_without_stage2_and_stage2_with_it() {
    let (_r, smmu) = enabled(IDR0_S1_ONLY, 0);
    assert_eq!(smmu.domain_stage(StagePolicy::Auto), Ok(Stage::Stage1));
    assert_eq!(
        smmu.domain_stage(StagePolicy::Stage2),
        Err(Error::Unsupported(Unsupported::Stage2))
    );
    let id = smmu.create_domain(DomainOptions::new(cfg())).unwrap();
    let info = smmu.domain_info(id).unwrap();
    assert_eq!(
        (info.stage, info.vmid, info.asid),
        (Stage::Stage1, 0, Some(1))
    );
    assert_eq!(info.shared_vttbr(), None);
    assert_eq!(smmu.stage2_snapshot(id), Err(Error::Stage1Tables(id)));
    // No VMIDs to give without stage 2.
    assert!(
        smmu.create_domain(DomainOptions {
            vmid: Some(3),
            ..DomainOptions::new(cfg())
        })
        .is_err()
    );
    drop(smmu);
    let (_r, smmu) = enabled(IDR0_NESTED, 0);
    assert_eq!(smmu.domain_stage(StagePolicy::Auto), Ok(Stage::Stage2));
    let id = smmu.create_domain(DomainOptions::new(cfg())).unwrap();
    let info = smmu.domain_info(id).unwrap();
    assert_eq!((info.stage, info.asid), (Stage::Stage2, None));
    assert_eq!(info.shared_vttbr(), Some(info.vttbr()));
    drop(smmu);
}

#[test]
fn ste_and_cd_read_back() {
    let (_r, smmu) = enabled(IDR0_NESTED, 0);
    let id = smmu.create_domain(stage1_opts()).unwrap();
    let info = smmu.domain_info(id).unwrap();
    assert_eq!(
        (info.vmid, smmu.vmids_in_use()),
        (0, 0),
        "stage-1 domains share VMID 0 (reserved for non-stage-2 streams)"
    );
    smmu.attach(id, 0x10).unwrap();
    let ste = smmu.ste(0x10).unwrap();
    assert_eq!((ste.config(), ste.vmid()), (SteConfig::Stage1, info.vmid));
    let d1 = LocalRegisterCopy::<u64, STE_1::Register>::new(ste.0[1]);
    assert_eq!(
        (d1.read(STE_1::PRIVCFG), d1.read(STE_1::INSTCFG)),
        (0b11, 0b10)
    );
    assert_eq!(ste.0[0] >> 59, 0, "S1CDMax = 0");
    let cd = cd_of(&smmu, 0x10);
    let d0 = LocalRegisterCopy::<u64, CD_0::Register>::new(cd.0[0]);
    assert!(cd.is_valid());
    assert_eq!(Some(cd.asid()), info.asid);
    assert_eq!(cd.ttb0(), info.root);
    assert_eq!(cd.mair(), 0x04FF);
    // T0SZ = 64 - 40, TG0 4K, IPS 48 bits, EPD0 = 0, EPD1 = 1, R = 1,
    // AFFD = 0, walk attributes WB/WB/ISH (coherent).
    assert_eq!(
        (
            d0.read(CD_0::T0SZ),
            d0.read(CD_0::TG0),
            d0.read(CD_0::IPS),
            d0.read(CD_0::EPD0),
            d0.read(CD_0::EPD1),
            d0.read(CD_0::R),
            d0.read(CD_0::AFFD)
        ),
        (24, 0, 5, 0, 1, 1, 0)
    );
    assert_eq!(
        (d0.read(CD_0::IR0), d0.read(CD_0::OR0), d0.read(CD_0::SH0)),
        (1, 1, 3)
    );
    smmu.detach(0x10).unwrap();
    smmu.destroy_domain(id).unwrap();
    drop(smmu);
}

#[test]
fn asids_are_distinct_vmid_shared_unless_asked_for_and_freed() {
    let (regs, smmu) = enabled(IDR0_NESTED, 0);
    let a = smmu.create_domain(stage1_opts()).unwrap();
    let b = smmu.create_domain(stage1_opts()).unwrap();
    let c = smmu
        .create_domain(DomainOptions {
            vmid: Some(9),
            ..stage1_opts()
        })
        .unwrap();
    let (ia, ib, ic) = (
        smmu.domain_info(a).unwrap(),
        smmu.domain_info(b).unwrap(),
        smmu.domain_info(c).unwrap(),
    );
    assert_ne!(ia.asid, ib.asid);
    // VMID 0 (reserved for non-stage-2 streams) for both; only the domain
    // that asked for a VMID holds one.
    assert_eq!((ia.vmid, ib.vmid, ic.vmid), (0, 0, 9));
    assert_eq!((smmu.asids_in_use(), smmu.vmids_in_use()), (3, 1));
    let before = regs.commands().len();
    smmu.destroy_domain(a).unwrap();
    let cmds = decoded(&regs, before);
    assert_eq!(
        cmds[0],
        Command::TlbiNhAsid {
            vmid: 0,
            asid: ia.asid.unwrap()
        }
    );
    assert_eq!((smmu.asids_in_use(), smmu.vmids_in_use()), (2, 1));
    smmu.destroy_domain(c).unwrap();
    assert_eq!((smmu.asids_in_use(), smmu.vmids_in_use()), (1, 0));
    smmu.destroy_domain(b).unwrap();
    assert_eq!(smmu.asids_in_use(), 0);
    drop(smmu);
}

#[test]
fn unmap_and_protect_issue_tlbi_nh_va_with_vmid_and_asid() {
    let (regs, smmu) = enabled(IDR0_NESTED, 0);
    let id = smmu.create_domain(stage1_opts()).unwrap();
    let info = smmu.domain_info(id).unwrap();
    let asid = info.asid.unwrap();
    smmu.attach(id, 8).unwrap();
    let before = regs.commands().len();
    smmu.map(id, 0x4000_0000, 0x8000_0000, 0x4000, Perm::ReadWrite)
        .unwrap();
    assert_eq!(regs.commands().len(), before, "map needs no invalidation");
    let t = smmu.translate(id, 0x4000_2345).unwrap().unwrap();
    assert_eq!((t.pa, t.perm), (0x8000_2345, Perm::ReadWrite));
    let before = regs.commands().len();
    smmu.unmap(id, 0x4000_0000, 0x4000).unwrap();
    let cmds = decoded(&regs, before);
    // RIL: one range command for 4 pages, then CMD_SYNC.
    assert_eq!(cmds.len(), 2, "{cmds:x?}");
    match cmds[0] {
        Command::TlbiNhVa {
            vmid,
            asid: a,
            addr,
            range: Some(r),
            ..
        } => assert_eq!(
            (vmid, a, addr, r.pages()),
            (info.vmid, asid, 0x4000_0000, 4)
        ),
        ref c => panic!("expected TLBI_NH_VA, got {c:x?}"),
    }
    assert_eq!(smmu.translate(id, 0x4000_0000).unwrap(), None);
    smmu.map(id, 0x4000_0000, 0x8000_0000, 0x1000, Perm::ReadWrite)
        .unwrap();
    let before = regs.commands().len();
    smmu.protect(id, 0x4000_0000, 0x1000, Perm::Read).unwrap();
    assert!(matches!(
        decoded(&regs, before)[0],
        Command::TlbiNhVa { .. }
    ));
    assert_eq!(
        smmu.translate(id, 0x4000_0000).unwrap().unwrap().perm,
        Perm::Read
    );
    assert_eq!(
        smmu.protect(id, 0x4000_0000, 0x1000, Perm::Write),
        Err(Error::Table(TableError::Permission(Perm::Write)))
    );
    // Detach drops the cached CD as well as the STE.
    let before = regs.commands().len();
    smmu.detach(8).unwrap();
    assert!(decoded(&regs, before).contains(&Command::CfgiCdAll { sid: 8 }));
    drop(smmu);
}

/// Issue 12 (fewest syncs): a stage-1 detach costs the two CMD_SYNCs of
/// the STE's hitless update, as Linux's KUnit expects of a CD table ->
/// abort transition, not a third one for the CDs: CFGI_CD_ALL joins the
/// last CFGI_STE's batch, after the CMD_SYNC that made the abort live (so
/// no fetch through the old CD pointer can re-cache a CD after it). On
/// the code before, the CFGI_CD_ALL had its own CMD_SYNC (3 in all).
#[test]
fn stage1_detach_takes_two_syncs_with_cfgi_cd_all_after_the_abort_is_live() {
    let (regs, smmu) = enabled(IDR0_S1_ONLY, 0);
    let id = smmu.create_domain(DomainOptions::new(cfg())).unwrap();
    smmu.attach(id, 8).unwrap();
    let before = regs.commands().len();
    smmu.detach(8).unwrap();
    let cmds = decoded(&regs, before);
    let sync = |c: &Command| matches!(c, Command::Sync { .. });
    assert_eq!(cmds.iter().filter(|c| sync(c)).count(), 2, "{cmds:x?}");
    let first_sync = cmds.iter().position(sync).unwrap();
    let cd_all = cmds
        .iter()
        .position(|c| *c == Command::CfgiCdAll { sid: 8 })
        .expect("CFGI_CD_ALL");
    assert!(
        cd_all > first_sync,
        "CFGI_CD_ALL before the abort was live: {cmds:x?}"
    );
    assert!(sync(cmds.last().unwrap()), "{cmds:x?}");
    assert_eq!(smmu.ste(8).unwrap().0, Ste::abort().0);
    drop(smmu);
}

#[test]
fn stage1_only_smmu_uses_vmid_zero_in_tlbis() {
    let (regs, smmu) = enabled(IDR0_S1_ONLY, 0);
    let id = smmu.create_domain(DomainOptions::new(cfg())).unwrap();
    smmu.map(id, 0x4000_0000, 0x8000_0000, 0x1000, Perm::ReadWrite)
        .unwrap();
    smmu.attach(id, 8).unwrap();
    assert_eq!(smmu.ste(8).unwrap().vmid(), 0);
    let before = regs.commands().len();
    smmu.unmap(id, 0x4000_0000, 0x1000).unwrap();
    assert!(matches!(
        decoded(&regs, before)[0],
        Command::TlbiNhVa {
            vmid: 0,
            asid: 1,
            addr: 0x4000_0000,
            ..
        }
    ));
    smmu.detach(8).unwrap();
    smmu.destroy_domain(id).unwrap();
    drop(smmu);
}

#[test]
fn unmap_inside_a_block_splits_it() {
    for (bbml, cpu_bbml2, syncs) in [(0, false, 2), (2, true, 1)] {
        let (regs, smmu) = enabled(IDR0_S1_ONLY, bbml);
        let id = smmu
            .create_domain(DomainOptions {
                cpu_bbml2,
                ..DomainOptions::new(cfg())
            })
            .unwrap();
        let (ipa, pa) = (0x4020_0000, 0x8020_0000);
        let opts = MapOptions::normal(Perm::ReadWrite);
        smmu.map_with(id, ipa, pa, M2, &opts).unwrap();
        assert_eq!(smmu.translate(id, ipa).unwrap().unwrap().size, M2);
        let hole = ipa + 0x10_0000;
        let mut calls = Vec::new();
        let before = regs.commands().len();
        smmu.unmap_with(id, hole, 0x1000, &mut |c| calls.push((c.ipa, c.len)))
            .unwrap();
        assert_eq!(smmu.translate(id, hole).unwrap(), None);
        for probe in [ipa, hole - 0x1000, hole + 0x1000, ipa + M2 - 0x1000] {
            let t = smmu.translate(id, probe).unwrap().unwrap();
            assert_eq!((t.pa, t.size), (pa + (probe - ipa), 0x1000));
        }
        let n = decoded(&regs, before)
            .iter()
            .filter(|c| matches!(c, Command::Sync { .. }))
            .count();
        assert_eq!(n, syncs, "BBML {bbml}: {calls:x?}");
        drop(smmu);
    }
}
