//! On-target tests of stage-1 domains on the default (nested) machine,
//! forced with `StagePolicy::Stage1`: real `edu` DMA through a CD's TTB0
//! tables, judged by the bytes in memory, the SMMU's event records (stage-1
//! faults: the event's S2 bit clear) and the STE/CD read back from memory.
//! The same suite runs on a stage-1-only SMMU (`QEMU_ARGS="-machine
//! virt-9.1"`, tests/collect.sh names them `virt91/...`), where
//! `StagePolicy::Auto` would pick these domains too: there a stage-1
//! domain has no VMID (STE.S2VMID = 0) and only the ASIDs tell domains
//! apart; on the nested SMMU too, every stage-1 domain uses VMID 0 (the
//! VMID reserved for non-stage-2 streams) and the ASIDs alone separate
//! them.

#![no_std]
#![no_main]

extern crate alloc;

#[path = "../src/image/mod.rs"]
mod image;

use alloc::format;

use image::console::println;
use image::demo::{self, CANARY, Driver, PAGE, Page, WINDOW};
use image::edu::{self, Edu, find_at_least as edus_at_least};
use image::harness::{self, Failure, TestResult, check, check_eq, tests, try_ok};
use smmuv3::domain::{DomainId, DomainOptions, Stage, StagePolicy};
use smmuv3::event::EventType;
use smmuv3::expert::SteConfig;
use smmuv3::expert::{CD_0, Cd};
use smmuv3::fault::FaultSummary;
use smmuv3::smmu::Config;
use smmuv3::stage2::{Granule, Perm, Stage2Config};
use tock_registers::LocalRegisterCopy;

fn main() -> ! {
    let boot = image::init();
    image::print_pci_functions(&boot.pci);
    harness::run(
        "stage1",
        tests![
            ste_and_cd_read_back,
            dma_write_lands_and_read_gets_right_bytes,
            unmapped_ipa_faults_translation_at_stage_1,
            write_to_readonly_faults_permission,
            unmap_invalidates_a_cached_translation,
            two_domains_same_ipa_no_crossing,
        ],
    )
}

/// IPAs of the test window (as the demo's).
const IPA_DATA: u64 = WINDOW;
const IPA_SOURCE: u64 = WINDOW + PAGE;
const IPA_UNMAPPED: u64 = WINDOW + 8 * PAGE;

fn sid(edu: &Edu) -> Result<u32, Failure> {
    edu.stream_id
        .ok_or_else(|| Failure::new(format!("{} has a StreamID", edu.bdf)))
}

fn up() -> Result<Driver, Failure> {
    let smmu = try_ok!(image::iommu::new_smmu(Config::default()));
    try_ok!(smmu.enable());
    check!(smmu.features().stage1, "the SMMU has stage 1");
    Ok(smmu)
}

fn edu_ok(r: Result<(), edu::EduError>) -> Result<(), Failure> {
    r.map_err(|e| Failure::new(format!("edu DMA: {e}")))
}

/// A stage-1 domain with a read-write data page and a read-only, patterned
/// source page, attached to `edu`.
struct S1Vm {
    domain: DomainId,
    sid: u32,
    data: Page,
    source: Page,
}

fn s1_vm(smmu: &Driver, edu: &Edu, seed: u8) -> Result<S1Vm, Failure> {
    let cfg = try_ok!(Stage2Config::new(Granule::K4, 40, 44));
    let domain = try_ok!(smmu.create_domain(DomainOptions {
        stage: StagePolicy::Stage1,
        ..DomainOptions::new(cfg)
    }));
    let vm = S1Vm {
        domain,
        sid: sid(edu)?,
        data: Page::new().map_err(Failure::new)?,
        source: Page::new().map_err(Failure::new)?,
    };
    vm.data.fill(CANARY);
    vm.source.fill_pattern(seed);
    try_ok!(smmu.map(domain, IPA_DATA, vm.data.pa(), PAGE, Perm::ReadWrite));
    try_ok!(smmu.map(domain, IPA_SOURCE, vm.source.pa(), PAGE, Perm::Read));
    try_ok!(smmu.attach(domain, vm.sid));
    Ok(vm)
}

fn teardown(smmu: &Driver, vm: &S1Vm) -> TestResult {
    try_ok!(smmu.detach(vm.sid));
    try_ok!(smmu.destroy_domain(vm.domain));
    Ok(())
}

/// The CD the STE of `sid` points at, read from memory.
fn cd_of(smmu: &Driver, sid: u32) -> Result<Cd, Failure> {
    let p = try_ok!(smmu.ste(sid)).cd_paddr() as *const u64;
    // SAFETY: the STE points at the domain's 64-byte CD, an identity-mapped
    // driver allocation alive while the domain exists.
    Ok(Cd(core::array::from_fn(|i| unsafe {
        p.add(i).read_volatile()
    })))
}

/// Exactly one stage-1 write fault of `kind` from `sid` at `ipa`.
#[track_caller]
fn expect_one_s1_fault(faults: &[FaultSummary], kind: EventType, sid: u32, ipa: u64) -> TestResult {
    match faults {
        [f] if f.kind == kind
            && f.sid == sid
            && !f.stage2
            && !f.read
            && f.addr_range.map(|r| r.0) == Some(ipa) =>
        {
            Ok(())
        }
        _ => {
            let mut f = Failure::new(format!(
                "one stage-1 write {} from sid {sid:#x} at {ipa:#x}",
                kind.name()
            ));
            f.actual = Some(format!("{faults:x?}"));
            Err(f)
        }
    }
}

fn ste_and_cd_read_back() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let vm = s1_vm(&smmu, &edus[0], 1)?;
    let info = try_ok!(smmu.domain_info(vm.domain));
    check_eq!(info.stage, Stage::Stage1);
    check_eq!(info.shared_vttbr(), None);
    check_eq!(info.vmid, 0); // shared by stage-1 domains, with or without stage 2
    let asid = info.asid.ok_or(Failure::new("an ASID"))?;
    let ste = try_ok!(smmu.ste(vm.sid));
    check_eq!((ste.config(), ste.vmid()), (SteConfig::Stage1, info.vmid));
    let cd = cd_of(&smmu, vm.sid)?;
    let d0 = LocalRegisterCopy::<u64, CD_0::Register>::new(cd.0[0]);
    check!(cd.is_valid(), "CD valid");
    check_eq!((cd.asid(), cd.ttb0(), cd.mair()), (asid, info.root, 0x04FF));
    check_eq!(
        (
            d0.read(CD_0::T0SZ),
            d0.read(CD_0::TG0),
            d0.read(CD_0::EPD1),
            d0.read(CD_0::IPS),
            d0.read(CD_0::AA64),
            d0.read(CD_0::R)
        ),
        (24, 0, 1, 4, 1, 1)
    );
    println!(
        "  STE stage 1 S2VMID {:#x}, CD ASID {asid:#x} TTB0 {:#x} T0SZ 24 EPD1 1 IPS 44-bit",
        info.vmid,
        cd.ttb0()
    );
    teardown(&smmu, &vm)?;
    check_eq!((smmu.asids_in_use(), smmu.vmids_in_use()), (0, 0));
    Ok(())
}

fn dma_write_lands_and_read_gets_right_bytes() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    for (i, e) in edus.iter().enumerate() {
        let vm = s1_vm(&smmu, e, 0x20 + i as u8)?;
        let (off, len) = (0x100usize, 0x100usize);
        // RAM -> device through the read-only source page, device -> RAM
        // into the data page.
        edu_ok(e.dma_from_ram(off, IPA_SOURCE + off as u64, len))?;
        edu_ok(e.dma_to_ram(off, IPA_DATA + off as u64, len))?;
        let faults = demo::report_faults(&smmu, &edus);
        check!(faults.is_empty(), "no faults: {faults:x?}");
        check_eq!(vm.data.read(off, len), vm.source.read(off, len));
        check_eq!(vm.data.first_change_outside(off, off + len, CANARY), None);
        let t = try_ok!(smmu.translate(vm.domain, IPA_DATA)).ok_or(Failure::new("mapped"))?;
        println!(
            "  {}: IPA {:#x} -> PA {:#x} (stage 1): {len} bytes of the source pattern, canaries intact",
            e.bdf,
            IPA_DATA + off as u64,
            t.pa + off as u64
        );
        teardown(&smmu, &vm)?;
    }
    Ok(())
}

fn unmapped_ipa_faults_translation_at_stage_1() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let vm = s1_vm(&smmu, &edus[0], 2)?;
    edu_ok(edus[0].dma_to_ram(0, IPA_UNMAPPED, 64))?;
    let faults = demo::report_faults(&smmu, &edus);
    expect_one_s1_fault(&faults, EventType::FTranslation, vm.sid, IPA_UNMAPPED)?;
    check!(vm.data.all(CANARY), "data page changed");
    teardown(&smmu, &vm)
}

fn write_to_readonly_faults_permission() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let vm = s1_vm(&smmu, &edus[0], 3)?;
    let before = vm.source.read(0, PAGE as usize);
    edu_ok(edus[0].dma_to_ram(0, IPA_SOURCE, 64))?;
    let faults = demo::report_faults(&smmu, &edus);
    expect_one_s1_fault(&faults, EventType::FPermission, vm.sid, IPA_SOURCE)?;
    check_eq!(vm.source.read(0, PAGE as usize), before);
    // protect() downgrades the data page the same way.
    edu_ok(edus[0].dma_to_ram(0, IPA_DATA, 64))?;
    check!(
        demo::report_faults(&smmu, &edus).is_empty(),
        "RW write faulted"
    );
    try_ok!(smmu.protect(vm.domain, IPA_DATA, PAGE, Perm::Read));
    vm.data.fill(CANARY);
    edu_ok(edus[0].dma_to_ram(0, IPA_DATA, 64))?;
    let faults = demo::report_faults(&smmu, &edus);
    expect_one_s1_fault(&faults, EventType::FPermission, vm.sid, IPA_DATA)?;
    check!(vm.data.all(CANARY), "write after protect(Read) landed");
    teardown(&smmu, &vm)
}

fn unmap_invalidates_a_cached_translation() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let vm = s1_vm(&smmu, &edus[0], 4)?;
    // Use the mapping so the SMMU caches it.
    edu_ok(edus[0].dma_to_ram(0, IPA_DATA, 64))?;
    check!(
        demo::report_faults(&smmu, &edus).is_empty(),
        "mapped write faulted"
    );
    check!(!vm.data.all(CANARY), "mapped write did not land");
    let before = smmu.stats().cmdq;
    try_ok!(smmu.unmap(vm.domain, IPA_DATA, PAGE));
    let after = smmu.stats().cmdq;
    // One TLBI_NH_VA (range form) and one CMD_SYNC.
    check_eq!(
        (after.commands - before.commands, after.syncs - before.syncs),
        (1, 1)
    );
    vm.data.fill(CANARY);
    edu_ok(edus[0].dma_to_ram(0, IPA_DATA, 64))?;
    let faults = demo::report_faults(&smmu, &edus);
    expect_one_s1_fault(&faults, EventType::FTranslation, vm.sid, IPA_DATA)?;
    check!(
        vm.data.all(CANARY),
        "stale TLB entry: write reached the unmapped page"
    );
    teardown(&smmu, &vm)
}

fn two_domains_same_ipa_no_crossing() -> TestResult {
    let edus = edus_at_least(2)?;
    let smmu = up()?;
    let a = s1_vm(&smmu, &edus[0], 5)?;
    let b = s1_vm(&smmu, &edus[1], 6)?;
    let (ia, ib) = (
        try_ok!(smmu.domain_info(a.domain)),
        try_ok!(smmu.domain_info(b.domain)),
    );
    check!(ia.asid != ib.asid, "ASIDs {:?} / {:?}", ia.asid, ib.asid);
    // One VMID for both (0): only the ASIDs keep their TLB entries apart.
    check_eq!((ia.vmid, ib.vmid), (0, 0));
    check_eq!(
        (
            try_ok!(smmu.ste(a.sid)).vmid(),
            try_ok!(smmu.ste(b.sid)).vmid()
        ),
        (0, 0)
    );
    for (e, vm, other) in [(&edus[0], &a, &b), (&edus[1], &b, &a)] {
        vm.data.fill(CANARY);
        other.data.fill(CANARY);
        edu_ok(e.dma_from_ram(0, IPA_SOURCE, 64))?;
        edu_ok(e.dma_to_ram(0, IPA_DATA, 64))?;
        check!(demo::report_faults(&smmu, &edus).is_empty(), "no faults");
        check_eq!(vm.data.read(0, 64), vm.source.read(0, 64));
        check!(
            other.data.all(CANARY),
            "{}'s write reached the other domain's page",
            e.bdf
        );
        // The other domain's PA, used as an IPA, is not mapped here.
        let foreign = other.data.pa();
        edu_ok(e.dma_to_ram(0, foreign, 64))?;
        let faults = demo::report_faults(&smmu, &edus);
        expect_one_s1_fault(&faults, EventType::FTranslation, vm.sid, foreign)?;
        check!(other.data.all(CANARY), "foreign PA written");
    }
    println!(
        "  IPA {IPA_DATA:#x} -> PA {:#x} (ASID {:?} VMID {}) / {:#x} (ASID {:?} VMID {}); no crossing",
        a.data.pa(),
        ia.asid,
        ia.vmid,
        b.data.pa(),
        ib.asid,
        ib.vmid
    );
    teardown(&smmu, &a)?;
    teardown(&smmu, &b)
}
