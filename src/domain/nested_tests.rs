//! Host tests of guest-owned nested translation on the fake SMMU: every
//! hostile CD field and request refused with its typed error and nothing
//! changed (stream table word for word, no command), stage 2 -> nested ->
//! stage 2 through the planner (replayed against the any-order model), the
//! ASID policy, and the invalidations with the VM's VMID.

extern crate std;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ops::Range;

use proptest::prelude::*;
use tock_registers::LocalRegisterCopy;

use super::super::{DomainId, DomainOptions, StagePolicy};
use super::*;
use crate::cd::{CD_0, CD_1};
use crate::cmd::Command;
use crate::entry_plan::model::replay;
use crate::fake::{FakeHal, FakeRegs};
use crate::features::Features;
use crate::smmu::Config;
use crate::stage2::{Granule, Perm, Stage2Config};
use crate::ste::{STE_KIND, SteConfig, plan_update};

const IDR0_NESTED: u32 = 0x0D44_101B;
const IDR0_S1_ONLY: u32 = 0x0D44_101A;
/// Guest RAM at IPA 0x400_0000, 4 MiB (as the image's guests).
const RAM: Range<u64> = 0x400_0000..0x440_0000;
const CD_IPA: u64 = 0x400_3000;
const TTB0: u64 = 0x400_4000;
const SID: u32 = 8;
const OTHER_SID: u32 = 0x100;

fn enabled(idr0: u32) -> (Box<FakeRegs>, Smmu<FakeHal>) {
    let regs = Box::new(FakeRegs::new());
    regs.set32(0x00, idr0);
    regs.set32(0x04, 0x0273_0010);
    regs.set32(0x0C, 0x0000_1404);
    // OAS 48 bits: host heap addresses stand in for physical ones (the
    // validation tests below set QEMU's 44 bits themselves).
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

fn features(idr0: u32) -> Features {
    let (_r, smmu) = enabled(idr0);
    *smmu.features()
}

fn cfg() -> Stage2Config {
    Stage2Config::new(Granule::K4, 40, 48).unwrap()
}

/// A VM domain with `sid` attached.
fn vm(smmu: &Smmu<FakeHal>, sid: u32) -> DomainId {
    let id = smmu.create_domain(DomainOptions::new(cfg())).unwrap();
    smmu.map(
        id,
        RAM.start,
        0x8000_0000 + RAM.start,
        RAM.end - RAM.start,
        Perm::ReadWrite,
    )
    .unwrap();
    smmu.attach(id, sid).unwrap();
    id
}

/// A good guest CD: V, AA64, A, R, EPD1, 4K, T0SZ 25 (39-bit VA), IPS 40
/// bits, TTB0 in RAM, `asid`.
fn good_cd(asid: u16) -> [u64; 8] {
    let mut d0 = LocalRegisterCopy::<u64, CD_0::Register>::new(0);
    d0.write(
        CD_0::V::SET
            + CD_0::AA64::SET
            + CD_0::A::SET
            + CD_0::R::SET
            + CD_0::EPD1::SET
            + CD_0::TG0.val(0)
            + CD_0::T0SZ.val(25)
            + CD_0::IPS.val(2)
            + CD_0::ASID.val(u64::from(asid)),
    );
    let d1 = LocalRegisterCopy::<u64, CD_1::Register>::new(0);
    let mut d1 = d1;
    d1.write(CD_1::TTB0.val(TTB0 >> 4));
    [d0.get(), d1.get(), 0, 0x44FF, 0, 0, 0, 0]
}

fn with_d0(cd: [u64; 8], f: impl FnOnce(&mut LocalRegisterCopy<u64, CD_0::Register>)) -> [u64; 8] {
    let mut d0 = LocalRegisterCopy::<u64, CD_0::Register>::new(cd[0]);
    f(&mut d0);
    let mut out = cd;
    out[0] = d0.get();
    out
}

/// Guest memory: `cd` at [`CD_IPA`], zeros elsewhere in RAM, unreadable
/// outside.
fn reader(cd: [u64; 8]) -> impl FnMut(u64) -> Option<u64> {
    move |ipa| {
        if !RAM.contains(&ipa) || ipa % 8 != 0 {
            return None;
        }
        let i = ipa.wrapping_sub(CD_IPA) / 8;
        Some(if ipa >= CD_IPA && i < 8 {
            cd[i as usize]
        } else {
            0
        })
    }
}

fn req(domain: DomainId, sid: u32, cd_ipa: u64) -> NestedRequest<'static> {
    const RAMS: &[Range<u64>] = &[RAM];
    NestedRequest {
        domain,
        sid,
        cd_ipa,
        guest_ram: RAMS,
    }
}

fn decoded(regs: &FakeRegs, from: usize) -> Vec<Command> {
    regs.commands()[from..]
        .iter()
        .map(|c| Command::decode(*c))
        .collect()
}

#[test]
fn a_good_cd_is_accepted() {
    let f = features(IDR0_NESTED);
    let g = validate_cd(&good_cd(0x42), &f, &[RAM]).unwrap();
    assert_eq!(
        g,
        GuestCd {
            asid: 0x42,
            ttb0: TTB0,
            granule: Granule::K4,
            va_bits: 39,
            ips_bits: 40
        }
    );
}

/// Every hostile field, one at a time, with the error it must give.
#[test]
fn every_hostile_field_is_refused() {
    let mut f = features(IDR0_NESTED);
    // QEMU's OAS.
    f.oas_bits = 44;
    let good = good_cd(0x42);
    let ttb = |ttb: u64| {
        let mut c = good;
        c[1] = LocalRegisterCopy::<u64, CD_1::Register>::new(0).get() | (ttb >> 4) << 4;
        c
    };
    let cases: Vec<(&str, [u64; 8], NestedError)> = alloc::vec![
        (
            "V = 0",
            with_d0(good, |d| d.modify(CD_0::V::CLEAR)),
            NestedError::CdNotValid
        ),
        (
            "AA64 = 0",
            with_d0(good, |d| d.modify(CD_0::AA64::CLEAR)),
            NestedError::NotAarch64
        ),
        (
            "A = 0",
            with_d0(good, |d| d.modify(CD_0::A::CLEAR)),
            NestedError::AbortDisabled
        ),
        (
            "S = 1",
            with_d0(good, |d| d.modify(CD_0::S::SET)),
            NestedError::Stall
        ),
        (
            "ENDI = 1",
            with_d0(good, |d| d.modify(CD_0::ENDI::SET)),
            NestedError::BigEndian
        ),
        (
            "HA = 1",
            with_d0(good, |d| d.modify(CD_0::HA::SET)),
            NestedError::HardwareUpdate
        ),
        (
            "HD = 1",
            with_d0(good, |d| d.modify(CD_0::HD::SET)),
            NestedError::HardwareUpdate
        ),
        (
            "EPD1 = 0",
            with_d0(good, |d| d.modify(CD_0::EPD1::CLEAR)),
            NestedError::Ttb1Enabled
        ),
        (
            "TG0 = 3",
            with_d0(good, |d| d.modify(CD_0::TG0.val(3))),
            NestedError::BadTg0(3)
        ),
        (
            "T0SZ = 15",
            with_d0(good, |d| d.modify(CD_0::T0SZ.val(15))),
            NestedError::BadT0sz(15)
        ),
        (
            "T0SZ = 40",
            with_d0(good, |d| d.modify(CD_0::T0SZ.val(40))),
            NestedError::BadT0sz(40)
        ),
        (
            "T0SZ = 0",
            with_d0(good, |d| d.modify(CD_0::T0SZ.val(0))),
            NestedError::BadT0sz(0)
        ),
        (
            "IPS = 5 (48 > OAS 44)",
            with_d0(good, |d| d.modify(CD_0::IPS.val(5))),
            NestedError::BadIps(5)
        ),
        (
            "IPS = 6",
            with_d0(good, |d| d.modify(CD_0::IPS.val(6))),
            NestedError::BadIps(6)
        ),
        (
            "IPS = 7",
            with_d0(good, |d| d.modify(CD_0::IPS.val(7))),
            NestedError::BadIps(7)
        ),
        (
            "ASID 0",
            with_d0(good, |d| d.modify(CD_0::ASID.val(0))),
            NestedError::BadAsid(0)
        ),
        (
            "TTB0 unaligned",
            ttb(TTB0 + 0x10),
            NestedError::Ttb0Misaligned(TTB0 + 0x10)
        ),
        (
            "TTB0 below RAM",
            ttb(RAM.start - 0x1000),
            NestedError::Ttb0OutsideGuestRam(RAM.start - 0x1000)
        ),
        (
            "TTB0 at RAM end",
            ttb(RAM.end),
            NestedError::Ttb0OutsideGuestRam(RAM.end)
        ),
        (
            "TTB0 = a host PA",
            ttb(0x4080_0000),
            NestedError::Ttb0OutsideGuestRam(0x4080_0000)
        ),
    ];
    for (what, cd, want) in cases {
        assert_eq!(validate_cd(&cd, &f, &[RAM]), Err(want), "{what}");
    }
    // A granule IDR5 lacks: 16K off.
    let mut no16 = f;
    no16.granule_16k = false;
    let g16 = with_d0(good, |d| d.modify(CD_0::TG0.val(2)));
    assert_eq!(
        validate_cd(&g16, &no16, &[RAM]),
        Err(NestedError::GranuleUnsupported(2))
    );
    assert!(validate_cd(&g16, &f, &[RAM]).is_ok());
    // An 8-bit ASID SMMU refuses ASID 0x100.
    let mut asid8 = f;
    asid8.asid_bits = 8;
    assert_eq!(
        validate_cd(&good_cd(0x100), &asid8, &[RAM]),
        Err(NestedError::BadAsid(0x100))
    );
}

#[test]
fn the_cd_ipa_must_lie_in_guest_ram() {
    assert_eq!(validate_cd_ipa(CD_IPA, &[RAM]), Ok(()));
    assert_eq!(
        validate_cd_ipa(CD_IPA + 8, &[RAM]),
        Err(NestedError::CdMisaligned(CD_IPA + 8))
    );
    for ipa in [
        RAM.end - 0x40 + 0x40,
        RAM.start - 0x40,
        0x4080_0000,
        u64::MAX - 0x3f,
    ] {
        assert_eq!(
            validate_cd_ipa(ipa, &[RAM]),
            Err(NestedError::CdOutsideGuestRam(ipa)),
            "{ipa:#x}"
        );
    }
    assert_eq!(validate_cd_ipa(RAM.end - 0x40, &[RAM]), Ok(()));
}

/// Stage 2 -> nested -> stage 2 for one StreamID: the STEs read back, each
/// transition's plan safe under the any-order model and hitless, the
/// commands CFGI_CD_ALL and (on detach) TLBI_NH_ASID with the VM's VMID.
#[test]
fn stage2_nested_stage2_round_trip() {
    let (regs, smmu) = enabled(IDR0_NESTED);
    let id = vm(&smmu, SID);
    let vmid = smmu.domain_info(id).unwrap().vmid;
    let s2 = smmu.ste(SID).unwrap();
    assert_eq!(s2.config(), SteConfig::Stage2);
    let from = regs.commands().len();
    let g = smmu
        .attach_nested(&req(id, SID, CD_IPA), &mut reader(good_cd(0x42)))
        .unwrap();
    assert_eq!(g.asid, 0x42);
    let nested = smmu.ste(SID).unwrap();
    assert_eq!(nested.config(), SteConfig::Nested);
    assert_eq!(nested.cd_paddr(), CD_IPA);
    // Stage-2 half identical to the VM's plain STE: S2VMID, S2TTB, geometry.
    assert_eq!((nested.0[2], nested.0[3]), (s2.0[2], s2.0[3]));
    assert_eq!(nested.vmid(), vmid);
    // S1CDMax = 0, S1Fmt = linear.
    assert_eq!(nested.0[0] & (0x1f << 59 | 0x3 << 4), 0);
    let cmds = decoded(&regs, from);
    assert!(cmds.contains(&Command::CfgiCdAll { sid: SID }), "{cmds:x?}");
    assert_eq!(smmu.nested_of(SID), Some((CD_IPA, g)));
    // Both transitions, replayed.
    for (a, b) in [(s2, nested), (nested, s2)] {
        let steps = plan_update(&a, &b).unwrap().as_slice().to_vec();
        let out = replay(&STE_KIND, |e| Ste(*e).is_live(), &a.0, &b.0, &steps);
        assert!(out.is_safe() && out.hitless, "{out:?}");
        assert_eq!(out.syncs, 2);
    }
    let from = regs.commands().len();
    smmu.detach_nested(id, SID).unwrap();
    assert_eq!(smmu.ste(SID).unwrap(), s2);
    let cmds = decoded(&regs, from);
    assert!(cmds.contains(&Command::CfgiCdAll { sid: SID }));
    assert!(cmds.contains(&Command::TlbiNhAsid { vmid, asid: 0x42 }));
    assert_eq!(smmu.nested_of(SID), None);
    // The ASID was released.
    assert_eq!(smmu.asids_in_use(), 0);
    assert_eq!(
        smmu.detach_nested(id, SID),
        Err(Error::Nested(NestedError::NotNested(SID)))
    );
}

/// Every hostile request at the API: its typed error, the stream table
/// word for word unchanged, no command issued.
#[test]
fn hostile_requests_change_nothing() {
    let (regs, smmu) = enabled(IDR0_NESTED);
    let a = vm(&smmu, SID);
    let b = vm(&smmu, OTHER_SID);
    // VM b holds ASID 0x77 through a nested stream.
    smmu.attach_nested(&req(b, OTHER_SID, CD_IPA), &mut reader(good_cd(0x77)))
        .unwrap();
    // The driver owns a stage-1 domain's ASID.
    let s1 = smmu
        .create_domain(DomainOptions {
            stage: StagePolicy::Stage1,
            ..DomainOptions::new(cfg())
        })
        .unwrap();
    let driver_asid = smmu.domain_info(s1).unwrap().asid.unwrap();
    let good = good_cd(0x42);
    let nested_err = |e| Err::<GuestCd, _>(Error::Nested(e));
    /// What the case is, the request, the CD words the guest holds, the
    /// outcome.
    type Case = (
        &'static str,
        NestedRequest<'static>,
        [u64; 8],
        core::result::Result<GuestCd, Error>,
    );
    let cases: Vec<Case> = alloc::vec![
        (
            "another VM's StreamID",
            req(a, OTHER_SID, CD_IPA),
            good,
            nested_err(NestedError::SidNotInDomain(OTHER_SID))
        ),
        (
            "an unattached StreamID",
            req(a, 0x200, CD_IPA),
            good,
            nested_err(NestedError::SidNotInDomain(0x200))
        ),
        (
            "a stage-1 domain",
            req(s1, SID, CD_IPA),
            good,
            nested_err(NestedError::NotStage2Domain(s1))
        ),
        (
            "CD outside RAM",
            req(a, SID, 0x4080_0000),
            good,
            nested_err(NestedError::CdOutsideGuestRam(0x4080_0000))
        ),
        (
            "CD misaligned",
            req(a, SID, CD_IPA + 0x20),
            good,
            nested_err(NestedError::CdMisaligned(CD_IPA + 0x20))
        ),
        (
            "bad TG0",
            req(a, SID, CD_IPA),
            with_d0(good, |d| d.modify(CD_0::TG0.val(3))),
            nested_err(NestedError::BadTg0(3))
        ),
        (
            "bad IPS",
            req(a, SID, CD_IPA),
            with_d0(good, |d| d.modify(CD_0::IPS.val(6))),
            nested_err(NestedError::BadIps(6))
        ),
        (
            "another VM's ASID",
            req(a, SID, CD_IPA),
            good_cd(0x77),
            nested_err(NestedError::AsidOtherVm(0x77))
        ),
        (
            "the driver's ASID",
            req(a, SID, CD_IPA),
            good_cd(driver_asid),
            nested_err(NestedError::AsidDriverOwned(driver_asid))
        ),
    ];
    for (what, r, cd, want) in cases {
        let table = smmu.stream_table_snapshot();
        let asids = smmu.asids_in_use();
        let n = regs.commands().len();
        assert_eq!(smmu.attach_nested(&r, &mut reader(cd)), want, "{what}");
        assert!(
            smmu.stream_table_snapshot() == table,
            "{what}: stream table changed"
        );
        assert_eq!(regs.commands().len(), n, "{what}: commands issued");
        assert_eq!(smmu.asids_in_use(), asids, "{what}");
    }
    // A reader that fails.
    let table = smmu.stream_table_snapshot();
    assert_eq!(
        smmu.attach_nested(&req(a, SID, CD_IPA), &mut |_| None),
        Err(Error::Nested(NestedError::GuestReadFailed(CD_IPA)))
    );
    assert!(smmu.stream_table_snapshot() == table);
    // Invalidations of an ASID VM a does not hold.
    assert_eq!(
        smmu.nested_invalidate_asid(a, 0x77),
        Err(Error::Nested(NestedError::AsidNotOwned(0x77)))
    );
    assert_eq!(
        smmu.nested_invalidate_va(a, driver_asid, 0, 0x1000),
        Err(Error::Nested(NestedError::AsidNotOwned(driver_asid)))
    );
    // And VM b may not detach VM a's stream.
    assert_eq!(
        smmu.detach_nested(b, SID),
        Err(Error::Nested(NestedError::SidNotInDomain(SID)))
    );
}

#[test]
fn stage1_only_smmu_has_no_nesting() {
    let (_r, smmu) = enabled(IDR0_S1_ONLY);
    let id = smmu.create_domain(DomainOptions::new(cfg())).unwrap();
    assert_eq!(
        smmu.attach_nested(&req(id, SID, CD_IPA), &mut reader(good_cd(1))),
        Err(Error::Unsupported(crate::error::Unsupported::Nested))
    );
}

/// INV_VA and INV_ASID carry the VM's VMID and the guest's ASID; a range is
/// one TLBI_NH_VA with RIL; bad ranges are refused.
#[test]
fn invalidations_use_the_vms_vmid() {
    let (regs, smmu) = enabled(IDR0_NESTED);
    let id = vm(&smmu, SID);
    let vmid = smmu.domain_info(id).unwrap().vmid;
    smmu.attach_nested(&req(id, SID, CD_IPA), &mut reader(good_cd(0x42)))
        .unwrap();
    let from = regs.commands().len();
    assert_eq!(smmu.nested_invalidate_va(id, 0x42, 0x1_0000, 0x4000), Ok(1));
    match decoded(&regs, from).as_slice() {
        [
            Command::TlbiNhVa {
                vmid: v,
                asid: 0x42,
                addr: 0x1_0000,
                range: Some(_),
                ..
            },
            Command::Sync { .. },
        ] => {
            assert_eq!(*v, vmid)
        }
        other => panic!("{other:x?}"),
    }
    let from = regs.commands().len();
    smmu.nested_invalidate_asid(id, 0x42).unwrap();
    assert!(matches!(
        decoded(&regs, from).as_slice(),
        [Command::TlbiNhAsid { vmid: v, asid: 0x42 }, Command::Sync { .. }] if *v == vmid
    ));
    for (va, len) in [
        (0x1_0000, 0),
        (0x1_0800, 0x1000),
        (0x1_0000, 0x800),
        (u64::MAX - 0xfff, 0x2000),
    ] {
        assert_eq!(
            smmu.nested_invalidate_va(id, 0x42, va, len),
            Err(Error::Nested(NestedError::BadRange { va, len }))
        );
    }
}

/// Detaching the VM's StreamID (VM teardown) while nested releases the
/// ASID and invalidates it.
#[test]
fn detach_of_a_nested_stream_releases_its_asid() {
    let (regs, smmu) = enabled(IDR0_NESTED);
    let id = vm(&smmu, SID);
    let vmid = smmu.domain_info(id).unwrap().vmid;
    smmu.attach_nested(&req(id, SID, CD_IPA), &mut reader(good_cd(0x42)))
        .unwrap();
    assert_eq!(smmu.asids_in_use(), 1);
    let from = regs.commands().len();
    smmu.detach(SID).unwrap();
    assert_eq!(smmu.ste(SID).unwrap().config(), SteConfig::Abort);
    assert!(decoded(&regs, from).contains(&Command::TlbiNhAsid { vmid, asid: 0x42 }));
    assert_eq!((smmu.asids_in_use(), smmu.nested_of(SID)), (0, None));
}

proptest! {
    /// Validation never panics, whatever the CD words and RAM ranges, and
    /// what it accepts obeys every rule.
    #[test]
    fn validation_never_panics(
        words in proptest::array::uniform8(any::<u64>()),
        start in any::<u64>(),
        len in any::<u64>(),
        cd_ipa in any::<u64>(),
    ) {
        let mut f = features_cached();
        f.oas_bits = 44;
        let range = start..start.saturating_add(len);
        let ram = core::slice::from_ref(&range);
        let _ = validate_cd_ipa(cd_ipa, ram);
        if let Ok(g) = validate_cd(&words, &f, ram) {
            prop_assert!(g.asid != 0);
            prop_assert!((25..=48).contains(&g.va_bits));
            prop_assert!(g.ips_bits <= f.oas_bits);
            prop_assert!(g.ttb0 % g.granule.size() == 0);
            prop_assert!(ram[0].start <= g.ttb0 && g.ttb0 + g.granule.size() <= ram[0].end);
        }
        // Biased towards the good CD: flip one field at random.
        let mut cd = good_cd(0x42);
        cd[(words[0] % 2) as usize] ^= words[1];
        let _ = validate_cd(&cd, &f, &[RAM]);
    }
}

fn features_cached() -> Features {
    features(IDR0_NESTED)
}

/// A stage-2 unmap under a nested stream adds TLBI_NH_ALL for the VM's
/// VMID (combined entries are tagged by VA); without nested streams it
/// does not.
#[test]
fn stage2_unmap_under_a_nested_stream_adds_tlbi_nh_all() {
    let (regs, smmu) = enabled(IDR0_NESTED);
    let id = vm(&smmu, SID);
    let vmid = smmu.domain_info(id).unwrap().vmid;
    let from = regs.commands().len();
    smmu.unmap(id, RAM.start, 0x1000).unwrap();
    assert!(!decoded(&regs, from).contains(&Command::TlbiNhAll { vmid }));
    smmu.attach_nested(&req(id, SID, CD_IPA), &mut reader(good_cd(0x42)))
        .unwrap();
    let from = regs.commands().len();
    smmu.unmap(id, RAM.start + 0x1000, 0x1000).unwrap();
    let cmds = decoded(&regs, from);
    assert!(cmds.contains(&Command::TlbiNhAll { vmid }), "{cmds:x?}");
    // The batch path too.
    let from = regs.commands().len();
    smmu.batch()
        .unmap(id, RAM.start + 0x2000, 0x1000)
        .commit(&mut |_| {})
        .unwrap();
    assert!(decoded(&regs, from).contains(&Command::TlbiNhAll { vmid }));
    // After DETACH it stops.
    smmu.detach_nested(id, SID).unwrap();
    let from = regs.commands().len();
    smmu.unmap(id, RAM.start + 0x3000, 0x1000).unwrap();
    assert!(!decoded(&regs, from).contains(&Command::TlbiNhAll { vmid }));
}

/// IDR0.STALL_MODEL = 0b10 (stall forced): a guest CD with S = 0 is ILLEGAL
/// to the SMMU (C_BAD_CD), so it is refused (the driver cannot rewrite the
/// guest's memory, so S is required, not forced); one with S = 1 is
/// accepted, and the nested STE carries S2S = 1 (S1STALLD = 0), as does the
/// plain stage-2 STE the stream returns to. Before this change the SMMU was
/// refused at probe, and S = 1 always refused.
#[test]
fn forced_stall_requires_guest_cd_s_and_sets_s2s() {
    const FORCED: u32 = (IDR0_NESTED & !(3 << 24)) | 2 << 24;
    let (_regs, smmu) = enabled(FORCED);
    assert!(smmu.features().stall_forced());
    let d = vm(&smmu, SID);
    assert!(smmu.ste(SID).unwrap().s2_stall(), "stage-2 STE: S2S = 1");
    let plain = good_cd(5);
    assert_eq!(
        smmu.attach_nested(&req(d, SID, CD_IPA), &mut reader(plain)),
        Err(NestedError::Stall.into())
    );
    let stalling = with_d0(plain, |d0| d0.modify(CD_0::S::SET));
    smmu.attach_nested(&req(d, SID, CD_IPA), &mut reader(stalling))
        .unwrap();
    let ste = smmu.ste(SID).unwrap();
    assert_eq!(ste.config(), crate::ste::SteConfig::Nested);
    assert!(ste.s2_stall(), "nested STE: S2S = 1");
    assert_eq!(ste.0[1] >> 27 & 1, 0, "S1STALLD = 0 (1 is ILLEGAL here)");
    smmu.detach_nested(d, SID).unwrap();
    assert!(smmu.ste(SID).unwrap().s2_stall());
    // Not forced (QEMU's 0b01): S2S = 0, and S = 1 is still refused.
    let (_regs, smmu) = enabled(IDR0_NESTED);
    let d = vm(&smmu, SID);
    assert!(!smmu.ste(SID).unwrap().s2_stall());
    assert_eq!(
        smmu.attach_nested(&req(d, SID, CD_IPA), &mut reader(stalling)),
        Err(NestedError::Stall.into())
    );
}
