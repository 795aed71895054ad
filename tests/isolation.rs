//! On-target tests of stage-2 DMA isolation: real `edu` DMA through VM
//! domains, judged by what the device did to memory and what the SMMU
//! recorded in its event queue (and, for invalidation, by the commands the
//! driver issued), never by what the driver says about itself.
//!
//! Every test brings up its own driver instance (dropping it at the end
//! disables the SMMU), runs on every `edu` the DTB/PCI scan finds, and prints
//! one line per faulting DMA (`fault: ...`) so the output carries the
//! evidence. Tests that need two devices fail (they do not skip) when fewer
//! than two are present.

#![no_std]
#![no_main]

extern crate alloc;

#[path = "../src/image/mod.rs"]
mod image;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Debug;

use image::ImageHal;
use image::console::println;
use image::demo::{
    self, CANARY, Driver, IPA_DATA, IPA_SCRATCH, IPA_SOURCE, IPA_UNMAPPED, PAGE, Page, Vm, WINDOW,
};
use image::edu::{self, Edu, find_at_least as edus_at_least};
use image::harness::{self, Failure, TestResult, check, check_eq, tests, try_ok};
use smmuv3::domain::{DomainId, DomainOptions, ExternalStage2, MAX_RANGE_COMMANDS};
use smmuv3::event::EventType;
use smmuv3::expert::SteConfig;
use smmuv3::expert::{self, Command, InvalidationPlan, TlbiRange};
use smmuv3::expert::{IdAllocator, IdKind};
use smmuv3::fault::FaultSummary;
use smmuv3::smmu::Config;
use smmuv3::stage2::{Granule, Perm, Stage2Config};
use smmuv3::{Dma, Error, Invalid};

fn main() -> ! {
    let boot = image::init();
    image::print_pci_functions(&boot.pci);
    harness::run(
        "isolation",
        tests![
            // 1. The demo's scenarios, on every edu.
            write_lands_at_exact_mapped_pa,
            read_gets_right_bytes,
            unmapped_ipa_faults_translation,
            write_to_readonly_faults_permission,
            unmap_invalidates_with_one_range_tlbi,
            two_vms_same_ipa_no_crossing,
            detach_blocks_and_reattach_restores,
            // 2. Several devices per domain, several domains at once.
            one_domain_several_devices,
            several_domains_at_once,
            vmid_reuse_after_destroy_sees_no_stale_entries,
            // 3. protect().
            protect_downgrade_invalidates_cached_write,
            // 4. Blocks.
            block_2mib_translates_and_dma_lands,
            unmap_one_page_splits_a_2mib_block,
            hypervisor_owned_tables_and_both_vmid_policies,
            // 5. Invalidation counts and the fallback.
            unmap_2mib_of_pages_is_one_range_command,
            unmap_odd_range_uses_planned_commands,
            invalidation_planner_fallback,
            unmap_whole_44bit_ipa_space_invalidates_everything,
            // 6. Rejected calls change nothing.
            errors_stream_ids,
            errors_domain_lifecycle,
            errors_vmid,
            errors_map,
            errors_unmap_and_protect,
            errors_destroyed_domain,
            // 7. A CPU's VTCR_EL2 drives the STE.
            vtcr_from_cpu_stage2_drives_ste_and_dma,
        ],
    )
}

// ---------------------------------------------------------------------------
// Helpers.

fn sid(edu: &Edu) -> Result<u32, Failure> {
    edu.stream_id
        .ok_or_else(|| Failure::new(format!("{} has a StreamID", edu.bdf)))
}

/// A fresh, enabled driver (one at a time: dropping it disables the SMMU).
fn up() -> Result<Driver, Failure> {
    let smmu = try_ok!(image::iommu::new_smmu(Config::default()));
    try_ok!(smmu.enable());
    Ok(smmu)
}

/// A demo scenario's verdict as a test result; prints the evidence.
#[track_caller]
fn scenario(what: &str, r: Result<String, String>) -> TestResult {
    match r {
        Ok(detail) => {
            println!("  {what}: {detail}");
            Ok(())
        }
        Err(detail) => {
            let mut f = Failure::new(String::from(what));
            f.actual = Some(detail);
            Err(f)
        }
    }
}

fn edu_ok(r: Result<(), edu::EduError>) -> Result<(), Failure> {
    r.map_err(|e| Failure::new(format!("edu DMA: {e}")))
}

/// One VM per edu, with distinct source patterns.
fn vms_for(smmu: &Driver, edus: &[Edu]) -> Result<Vec<Vm>, Failure> {
    let mut vms = Vec::new();
    for (i, e) in edus.iter().enumerate() {
        let vm = demo::create_vm(smmu, e, 0x10 + 0x40 * i as u8)
            .map_err(|m| Failure::new(format!("create_vm for {}: {m}", e.bdf)))?;
        vms.push(vm);
    }
    Ok(vms)
}

/// Detaches (if attached) and destroys the VM's domain.
fn teardown(smmu: &Driver, vm: &Vm) -> TestResult {
    if smmu.domain_of(vm.sid) == Some(vm.domain) {
        try_ok!(smmu.detach(vm.sid));
    }
    try_ok!(smmu.destroy_domain(vm.domain));
    Ok(())
}

fn teardown_all(smmu: &Driver, vms: &[Vm]) -> TestResult {
    for vm in vms {
        teardown(smmu, vm)?;
    }
    check_eq!(smmu.vmids_in_use(), 0);
    Ok(())
}

/// Exactly one fault, of `kind`, from `sid`, whose first address is `ipa`,
/// a stage-2 write.
#[track_caller]
fn expect_one_fault(faults: &[FaultSummary], kind: EventType, sid: u32, ipa: u64) -> TestResult {
    match faults {
        [f] if f.kind == kind
            && f.sid == sid
            && f.stage2
            && !f.read
            && f.addr_range.map(|r| r.0) == Some(ipa)
            && f.ipa.map(|a| a & !(PAGE - 1)) == Some(ipa & !(PAGE - 1)) =>
        {
            Ok(())
        }
        _ => {
            let mut f = Failure::new(format!(
                "one stage-2 write {} from sid {sid:#x} at IPA {ipa:#x}",
                kind.name()
            ));
            f.actual = Some(format!("{faults:x?}"));
            Err(f)
        }
    }
}

#[track_caller]
fn expect_no_fault(faults: &[FaultSummary]) -> TestResult {
    if !faults.is_empty() {
        let mut f = Failure::new("no fault recorded");
        f.actual = Some(format!("{faults:x?}"));
        return Err(f);
    }
    Ok(())
}

/// A block of device-visible memory larger than a page.
struct Buf(Dma<ImageHal>);

impl Buf {
    fn new(size: usize, align: usize) -> Result<Self, Failure> {
        Ok(Self(try_ok!(Dma::<ImageHal>::new(size, align, true))))
    }
    fn pa(&self) -> u64 {
        self.0.paddr()
    }
    fn len(&self) -> usize {
        self.0.size()
    }
    fn get(&self, i: usize) -> u8 {
        assert!(i < self.len());
        // SAFETY: in bounds of the owned allocation.
        unsafe { self.0.vaddr().add(i).read_volatile() }
    }
    fn set(&self, i: usize, b: u8) {
        assert!(i < self.len());
        // SAFETY: in bounds of the owned allocation.
        unsafe { self.0.vaddr().add(i).write_volatile(b) }
    }
    fn fill(&self, b: u8) {
        for i in 0..self.len() {
            self.set(i, b);
        }
    }
    fn read(&self, off: usize, len: usize) -> Vec<u8> {
        (off..off + len).map(|i| self.get(i)).collect()
    }
    fn all(&self, b: u8) -> bool {
        (0..self.len()).all(|i| self.get(i) == b)
    }
    /// First offset outside `[lo, hi)` whose byte is not `b`.
    fn first_change_outside(&self, lo: usize, hi: usize, b: u8) -> Option<usize> {
        (0..self.len()).find(|&i| (i < lo || i >= hi) && self.get(i) != b)
    }
}

/// Everything a rejected call must leave alone.
#[derive(Debug, PartialEq, Eq)]
struct State {
    strtab: Vec<u64>,
    stage2: Vec<(DomainId, Result<Vec<u64>, Error>)>,
    commands: u64,
    syncs: u64,
    vmids: usize,
}

fn state(smmu: &Driver, doms: &[DomainId]) -> State {
    let s = smmu.stats().cmdq;
    State {
        strtab: smmu.stream_table_snapshot(),
        stage2: doms.iter().map(|&d| (d, smmu.stage2_snapshot(d))).collect(),
        commands: s.commands,
        syncs: s.syncs,
        vmids: smmu.vmids_in_use(),
    }
}

/// Runs `call`, which must fail with exactly `want`, and checks that the
/// stream table, the stage-2 tables of `doms` (byte for byte), the VMIDs in
/// use and the command counters are unchanged.
#[track_caller]
fn rejected<T: Debug>(
    smmu: &Driver,
    doms: &[DomainId],
    what: &str,
    want: Error,
    call: impl FnOnce() -> Result<T, Error>,
) -> TestResult {
    let before = state(smmu, doms);
    let got = call();
    let after = state(smmu, doms);
    match &got {
        Err(e) if *e == want => {}
        _ => {
            return Err(Failure::compare(
                format!("{what} is rejected"),
                Err::<(), Error>(want),
                got,
            ));
        }
    }
    if before.strtab != after.strtab {
        let i = before
            .strtab
            .iter()
            .zip(&after.strtab)
            .position(|(a, b)| a != b);
        return Err(Failure::compare(
            format!("{what}: stream table unchanged (first differing word {i:?})"),
            before.strtab.len(),
            after.strtab.len(),
        ));
    }
    if before.stage2 != after.stage2 {
        return Err(Failure::new(format!(
            "{what}: stage-2 tables of {doms:?} unchanged"
        )));
    }
    if (before.commands, before.syncs, before.vmids) != (after.commands, after.syncs, after.vmids) {
        return Err(Failure::compare(
            format!("{what}: no commands issued, VMIDs in use unchanged"),
            (before.commands, before.syncs, before.vmids),
            (after.commands, after.syncs, after.vmids),
        ));
    }
    println!("  rejected: {what} -> {want}");
    Ok(())
}

/// The commands the driver should issue to invalidate `[ipa, ipa + len)`.
fn planned(smmu: &Driver, vmid: u16, ipa: u64, len: u64) -> InvalidationPlan {
    expert::s2_invalidation(vmid, ipa, len, 12, smmu.features().ril, MAX_RANGE_COMMANDS)
}

/// Pages the SMMU invalidates for `plan`, as it decodes the encoded
/// commands (so field truncation shows up); `None` for a fallback.
fn pages_covered(plan: &InvalidationPlan) -> Option<u64> {
    match plan {
        InvalidationPlan::Fallback(_) => None,
        InvalidationPlan::Precise(cmds) => Some(
            cmds.iter()
                .map(|c| match Command::decode(c.encode()) {
                    Command::TlbiS2Ipa { range: Some(r), .. } => r.pages(),
                    Command::TlbiS2Ipa { range: None, .. } => 1,
                    _ => 0,
                })
                .sum(),
        ),
    }
}

// ---------------------------------------------------------------------------
// 1. The demo's scenarios, on every edu.

fn write_lands_at_exact_mapped_pa() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let vms = vms_for(&smmu, &edus)?;
    for (e, vm) in edus.iter().zip(&vms) {
        let t = try_ok!(smmu.translate(vm.domain, IPA_DATA)).ok_or(Failure::new("mapped"))?;
        check_eq!(
            (t.pa, t.size, t.perm),
            (vm.data.pa(), PAGE, Perm::ReadWrite)
        );
        let source_before = vm.source.read(0, PAGE as usize);
        scenario(
            &format!("{} write lands", e.bdf),
            demo::write_lands(&smmu, e, vm),
        )?;
        // Only the data page changed; the neighbours mapped around it did not.
        check!(vm.readonly.all(CANARY), "read-only page changed");
        check!(vm.scratch.all(CANARY), "scratch page changed");
        check_eq!(vm.source.read(0, PAGE as usize), source_before);
    }
    teardown_all(&smmu, &vms)
}

fn read_gets_right_bytes() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let vms = vms_for(&smmu, &edus)?;
    for (e, vm) in edus.iter().zip(&vms) {
        scenario(
            &format!("{} read", e.bdf),
            demo::read_right_bytes(&smmu, e, vm),
        )?;
        // The bytes are this VM's own pattern, not another VM's.
        for other in vms.iter().filter(|o| o.domain != vm.domain) {
            check!(
                vm.data.read(0, 64) != other.source.read(0x800, 64),
                "VM {} read VM {}'s bytes",
                vm.domain,
                other.domain
            );
        }
    }
    teardown_all(&smmu, &vms)
}

fn unmapped_ipa_faults_translation() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let vms = vms_for(&smmu, &edus)?;
    for (e, vm) in edus.iter().zip(&vms) {
        check_eq!(try_ok!(smmu.translate(vm.domain, IPA_UNMAPPED)), None);
        scenario(
            &format!("{} unmapped IPA", e.bdf),
            demo::unmapped_blocked(&smmu, &edus, e, vm),
        )?;
        // A second one just past the last mapped page, with our own oracle.
        let ipa = IPA_SCRATCH + PAGE;
        edu_ok(e.dma_to_ram(0, ipa, 128))?;
        let faults = demo::report_faults(&smmu, &edus);
        expect_one_fault(&faults, EventType::FTranslation, vm.sid, ipa)?;
        check!(vm.scratch.all(CANARY), "page below the hole changed");
    }
    teardown_all(&smmu, &vms)
}

fn write_to_readonly_faults_permission() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let vms = vms_for(&smmu, &edus)?;
    for (e, vm) in edus.iter().zip(&vms) {
        scenario(
            &format!("{} read-only", e.bdf),
            demo::readonly_blocked(&smmu, &edus, e, vm),
        )?;
        // The source page is read-only too: reading it works, writing it faults.
        let before = vm.source.read(0, PAGE as usize);
        edu_ok(e.dma_to_ram(0x40, IPA_SOURCE + 0x40, 64))?;
        let faults = demo::report_faults(&smmu, &edus);
        expect_one_fault(&faults, EventType::FPermission, vm.sid, IPA_SOURCE + 0x40)?;
        check_eq!(vm.source.read(0, PAGE as usize), before);
    }
    teardown_all(&smmu, &vms)
}

fn unmap_invalidates_with_one_range_tlbi() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    check!(smmu.features().ril, "QEMU's SMMU has RIL");
    let vms = vms_for(&smmu, &edus)?;
    for (e, vm) in edus.iter().zip(&vms) {
        let vmid = try_ok!(smmu.domain_info(vm.domain)).vmid;
        // Use the mapping first, so the SMMU caches the translation.
        edu_ok(e.dma_to_ram(0, IPA_SCRATCH, 64))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
        check!(!vm.scratch.all(CANARY), "the mapped write did not land");

        let before = smmu.stats().cmdq;
        try_ok!(smmu.unmap(vm.domain, IPA_SCRATCH, PAGE));
        let after = smmu.stats().cmdq;
        check_eq!(
            (
                after.commands - before.commands,
                after.syncs - before.syncs,
                after.prod_writes - before.prod_writes
            ),
            (1, 1, 1)
        );
        // The one command is a range TLBI_S2_IPA of exactly this page.
        check_eq!(
            planned(&smmu, vmid, IPA_SCRATCH, PAGE),
            InvalidationPlan::Precise(alloc::vec![Command::TlbiS2Ipa {
                vmid,
                addr: IPA_SCRATCH,
                leaf: false,
                range: Some(TlbiRange {
                    num: 0,
                    scale: 0,
                    tg: 1,
                    ttl: 0
                }),
            }])
        );
        check_eq!(try_ok!(smmu.translate(vm.domain, IPA_SCRATCH)), None);

        vm.scratch.fill(CANARY);
        edu_ok(e.dma_to_ram(0, IPA_SCRATCH, 64))?;
        let faults = demo::report_faults(&smmu, &edus);
        expect_one_fault(&faults, EventType::FTranslation, vm.sid, IPA_SCRATCH)?;
        check!(
            vm.scratch.all(CANARY),
            "stale TLB entry: write reached the unmapped page"
        );
        // The neighbours are still mapped and still work.
        edu_ok(e.dma_to_ram(0, IPA_DATA, 64))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    }
    teardown_all(&smmu, &vms)
}

fn two_vms_same_ipa_no_crossing() -> TestResult {
    let edus = edus_at_least(2)?;
    let smmu = up()?;
    let vms = vms_for(&smmu, &edus)?;
    for i in 0..vms.len() {
        for j in 0..vms.len() {
            if i == j {
                continue;
            }
            let (a, b) = (&vms[i], &vms[j]);
            let ta = try_ok!(smmu.translate(a.domain, IPA_DATA)).ok_or(Failure::new("A maps"))?;
            let tb = try_ok!(smmu.translate(b.domain, IPA_DATA)).ok_or(Failure::new("B maps"))?;
            check!(ta.pa != tb.pa, "same IPA, same PA {:#x}", ta.pa);
            check!(
                try_ok!(smmu.domain_info(a.domain)).vmid
                    != try_ok!(smmu.domain_info(b.domain)).vmid
            );
            scenario(
                &format!("{} -> {} no crossing", edus[i].bdf, edus[j].bdf),
                demo::two_vms_same_ipa(&smmu, &edus, (&edus[i], a), (&edus[j], b)),
            )?;
            // Nothing of A's reached B's other pages either.
            check!(b.readonly.all(CANARY) && b.scratch.all(CANARY));
        }
    }
    teardown_all(&smmu, &vms)
}

fn detach_blocks_and_reattach_restores() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let vms = vms_for(&smmu, &edus)?;
    for (e, vm) in edus.iter().zip(&vms) {
        // Works while attached.
        edu_ok(e.dma_to_ram(0, IPA_DATA, 64))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
        check!(!vm.data.all(CANARY), "attached write did not land");
        scenario(
            &format!("{} detach", e.bdf),
            demo::detach_blocks(&smmu, e, vm),
        )?;
        check_eq!(smmu.domain_of(vm.sid), None);
        check_eq!(try_ok!(smmu.domain_info(vm.domain)).sids, Vec::<u32>::new());
        let ste = try_ok!(smmu.ste(vm.sid));
        check!(ste.is_valid() && ste.config() == SteConfig::Abort);
        // Attaching again restores exactly the domain's view.
        try_ok!(smmu.attach(vm.domain, vm.sid));
        vm.data.fill(CANARY);
        edu_ok(e.dma_to_ram(0x10, IPA_DATA + 0x10, 32))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
        check!(vm.data.first_change_outside(0x10, 0x30, CANARY).is_none());
        check!(!vm.data.all(CANARY), "re-attached write did not land");
    }
    teardown_all(&smmu, &vms)
}

// ---------------------------------------------------------------------------
// 2. Several devices per domain, several domains at once.

fn one_domain_several_devices() -> TestResult {
    let edus = edus_at_least(2)?;
    let smmu = up()?;
    let dom = try_ok!(
        smmu.create_domain(DomainOptions::new(try_ok!(Stage2Config::new(
            Granule::K4,
            40,
            44
        ))))
    );
    let (data, source) = (
        Page::new().map_err(Failure::new)?,
        Page::new().map_err(Failure::new)?,
    );
    source.fill_pattern(0x77);
    try_ok!(smmu.map(dom, IPA_DATA, data.pa(), PAGE, Perm::ReadWrite));
    try_ok!(smmu.map(dom, IPA_SOURCE, source.pa(), PAGE, Perm::Read));
    let mut sids = Vec::new();
    for e in &edus {
        let s = sid(e)?;
        try_ok!(smmu.attach(dom, s));
        sids.push(s);
    }
    let mut info = try_ok!(smmu.domain_info(dom));
    info.sids.sort_unstable();
    let mut want = sids.clone();
    want.sort_unstable();
    check_eq!(info.sids, want);
    for &s in &sids {
        check_eq!(try_ok!(smmu.ste(s)).vmid(), info.vmid);
        check_eq!(try_ok!(smmu.ste(s)).s2ttb(), info.root);
    }
    // Each device reads its own slice of the shared source page and writes
    // it to its own slice of the shared data page.
    let len = 0x80usize;
    for (i, e) in edus.iter().enumerate() {
        let off = 0x100 * (i + 1);
        edu_ok(e.dma_from_ram(off, IPA_SOURCE + off as u64, len))?;
        edu_ok(e.dma_to_ram(off, IPA_DATA + off as u64, len))?;
    }
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    for i in 0..edus.len() {
        let off = 0x100 * (i + 1);
        check_eq!((i, data.read(off, len)), (i, source.read(off, len)));
    }
    for i in 0..PAGE as usize {
        let slice = (i / 0x100).wrapping_sub(1);
        if slice >= edus.len() || i % 0x100 >= len {
            check!(
                data.get(i) == CANARY,
                "byte {i:#x} outside every slice changed"
            );
        }
    }
    // Both are confined to the same map: an unmapped IPA faults for each,
    // with its own StreamID.
    for (e, &s) in edus.iter().zip(&sids) {
        edu_ok(e.dma_to_ram(0, IPA_UNMAPPED, 64))?;
        let faults = demo::report_faults(&smmu, &edus);
        expect_one_fault(&faults, EventType::FTranslation, s, IPA_UNMAPPED)?;
    }
    // Detaching one leaves the others working.
    try_ok!(smmu.detach(sids[0]));
    data.fill(CANARY);
    edu_ok(edus[0].dma_to_ram(0, IPA_DATA, 64))?;
    let _ = demo::report_faults(&smmu, &edus);
    check!(data.all(CANARY), "detached device still writes");
    edu_ok(edus[1].dma_to_ram(0, IPA_DATA, 64))?;
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    check!(!data.all(CANARY), "still-attached device blocked");
    check_eq!(try_ok!(smmu.domain_info(dom)).sids.len(), sids.len() - 1);
    for &s in &sids[1..] {
        try_ok!(smmu.detach(s));
    }
    try_ok!(smmu.destroy_domain(dom));
    Ok(())
}

fn several_domains_at_once() -> TestResult {
    const N: usize = 4;
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let cfg = try_ok!(Stage2Config::new(Granule::K4, 40, 44));
    let mut doms = Vec::new();
    let mut pages = Vec::new();
    for _ in 0..N {
        let d = try_ok!(smmu.create_domain(DomainOptions::new(cfg)));
        let p = Page::new().map_err(Failure::new)?;
        try_ok!(smmu.map(d, IPA_DATA, p.pa(), PAGE, Perm::ReadWrite));
        doms.push(d);
        pages.push(p);
    }
    check_eq!(smmu.vmids_in_use(), N);
    let infos: Vec<_> = doms.iter().map(|&d| smmu.domain_info(d)).collect();
    for (i, a) in infos.iter().enumerate() {
        let a = a.as_ref().map_err(|e| Failure::new(format!("{e}")))?;
        check!(a.vmid != 0, "VMID 0 handed out");
        for b in infos[i + 1..].iter().flatten() {
            check!(a.vmid != b.vmid, "two domains share VMID {}", a.vmid);
            check!(a.root != b.root, "two domains share a root table");
        }
    }
    println!(
        "  {N} domains: VMIDs {:?}",
        infos.iter().flatten().map(|i| i.vmid).collect::<Vec<_>>()
    );
    // Every device attached to a different domain at the same time.
    let mut attached = Vec::new();
    for (j, e) in edus.iter().enumerate().take(N) {
        try_ok!(smmu.attach(doms[j], sid(e)?));
        attached.push(j);
    }
    for (j, e) in edus.iter().enumerate().take(N) {
        edu_ok(e.dma_to_ram(0, IPA_DATA + 0x40 * j as u64, 0x40))?;
    }
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    for (k, p) in pages.iter().enumerate() {
        if attached.contains(&k) {
            check!(
                p.first_change_outside(0x40 * k, 0x40 * (k + 1), CANARY)
                    .is_none(),
                "domain {k}'s page written outside its device's slice"
            );
        } else {
            check!(p.all(CANARY), "page of domain {k} (no device) changed");
        }
    }
    for e in edus.iter().take(N) {
        try_ok!(smmu.detach(sid(e)?));
    }
    // One device visiting every domain in turn reaches only that domain's page.
    let e = &edus[0];
    let s = sid(e)?;
    for (k, &dom) in doms.iter().enumerate() {
        for p in &pages {
            p.fill(CANARY);
        }
        try_ok!(smmu.attach(dom, s));
        edu_ok(e.dma_to_ram(0, IPA_DATA + 0x200, 0x20))?;
        try_ok!(smmu.detach(s));
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
        for (i, p) in pages.iter().enumerate() {
            let changed = !p.all(CANARY);
            check_eq!((k, i, changed), (k, i, i == k));
        }
    }
    for d in doms {
        try_ok!(smmu.destroy_domain(d));
    }
    check_eq!(smmu.vmids_in_use(), 0);
    Ok(())
}

/// A destroyed domain's VMID is handed out again; its cached translations
/// must not survive into the new domain.
fn vmid_reuse_after_destroy_sees_no_stale_entries() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let e = &edus[0];
    let s = sid(e)?;
    let cfg = try_ok!(Stage2Config::new(Granule::K4, 40, 44));
    let (old, new) = (
        Page::new().map_err(Failure::new)?,
        Page::new().map_err(Failure::new)?,
    );

    let a = try_ok!(smmu.create_domain(DomainOptions::new(cfg)));
    let vmid_a = try_ok!(smmu.domain_info(a)).vmid;
    try_ok!(smmu.map(a, IPA_DATA, old.pa(), PAGE, Perm::ReadWrite));
    try_ok!(smmu.attach(a, s));
    edu_ok(e.dma_to_ram(0, IPA_DATA, 64))?; // cached: (VMID a, IPA_DATA) -> old
    check!(!old.all(CANARY));
    try_ok!(smmu.detach(s));
    try_ok!(smmu.destroy_domain(a));

    let b = try_ok!(smmu.create_domain(DomainOptions::new(cfg)));
    check_eq!(try_ok!(smmu.domain_info(b)).vmid, vmid_a);
    try_ok!(smmu.map(b, IPA_DATA, new.pa(), PAGE, Perm::ReadWrite));
    try_ok!(smmu.attach(b, s));
    old.fill(CANARY);
    edu_ok(e.dma_to_ram(0, IPA_DATA, 64))?;
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    check!(
        old.all(CANARY),
        "stale translation of the destroyed domain used"
    );
    check!(
        !new.all(CANARY),
        "write did not reach the new domain's page"
    );
    try_ok!(smmu.detach(s));
    try_ok!(smmu.destroy_domain(b));
    Ok(())
}

// ---------------------------------------------------------------------------
// 3. protect().

fn protect_downgrade_invalidates_cached_write() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let vms = vms_for(&smmu, &edus)?;
    for (e, vm) in edus.iter().zip(&vms) {
        // A write that works (and leaves a TLB entry with write permission).
        edu_ok(e.dma_to_ram(0, IPA_DATA, 64))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
        check!(!vm.data.all(CANARY), "write before protect did not land");

        let before = smmu.stats().cmdq;
        try_ok!(smmu.protect(vm.domain, IPA_DATA, PAGE, Perm::Read));
        let after = smmu.stats().cmdq;
        check_eq!(
            (after.commands - before.commands, after.syncs - before.syncs),
            (1, 1)
        );
        let t = try_ok!(smmu.translate(vm.domain, IPA_DATA)).ok_or(Failure::new("mapped"))?;
        check_eq!((t.pa, t.perm), (vm.data.pa(), Perm::Read));

        vm.data.fill(CANARY);
        edu_ok(e.dma_to_ram(0, IPA_DATA, 64))?;
        let faults = demo::report_faults(&smmu, &edus);
        expect_one_fault(&faults, EventType::FPermission, vm.sid, IPA_DATA)?;
        check!(
            vm.data.all(CANARY),
            "write after RW -> R landed: stale TLB entry"
        );
        // Reads still work.
        edu_ok(e.dma_from_ram(0, IPA_DATA, 64))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;

        // And back to read-write.
        try_ok!(smmu.protect(vm.domain, IPA_DATA, PAGE, Perm::ReadWrite));
        edu_ok(e.dma_to_ram(0x800, IPA_DATA + 0x800, 64))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
        check!(!vm.data.all(CANARY), "write after R -> RW did not land");
    }
    teardown_all(&smmu, &vms)
}

// ---------------------------------------------------------------------------
// 4. Blocks.

const BLOCK: u64 = 2 << 20;
/// A 2 MiB aligned IPA, below 256 MiB.
const IPA_BLOCK: u64 = 0x0800_0000;

fn block_2mib_translates_and_dma_lands() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let dom = try_ok!(smmu.create_domain(DomainOptions::new(try_ok!(
        demo::vm_stage2().map_err(Failure::new)
    ))));
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    check_eq!(block.pa() % BLOCK, 0);
    let root_bytes = try_ok!(smmu.domain_info(dom)).table_bytes;
    try_ok!(smmu.map(dom, IPA_BLOCK, block.pa(), BLOCK, Perm::ReadWrite));
    // One block descriptor: a level-2 table was added, no level-3 table.
    check_eq!(
        try_ok!(smmu.domain_info(dom)).table_bytes,
        root_bytes + PAGE as usize
    );
    for off in [0, 0x1234, BLOCK / 2 + 0x10, BLOCK - 4] {
        let t = try_ok!(smmu.translate(dom, IPA_BLOCK + off)).ok_or(Failure::new("mapped"))?;
        check_eq!((off, t.pa, t.size), (off, block.pa() + off, BLOCK));
    }
    check_eq!(try_ok!(smmu.translate(dom, IPA_BLOCK + BLOCK)), None);

    let e = &edus[0];
    let s = sid(e)?;
    try_ok!(smmu.attach(dom, s));
    block.fill(CANARY);
    // A pattern in the block's middle is read by the device and written back
    // further on, both through the block mapping.
    let (src, dst, len) = (
        BLOCK as usize / 2 + 0x3000,
        BLOCK as usize / 2 + 0x1_0800,
        0x200,
    );
    for i in 0..len {
        block.set(src + i, (i as u8).wrapping_mul(7) | 1);
    }
    edu_ok(e.dma_from_ram(0, IPA_BLOCK + src as u64, len))?;
    edu_ok(e.dma_to_ram(0, IPA_BLOCK + dst as u64, len))?;
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    check_eq!(block.read(dst, len), block.read(src, len));
    for i in 0..block.len() {
        if !(src..src + len).contains(&i) && !(dst..dst + len).contains(&i) {
            check!(block.get(i) == CANARY, "block byte {i:#x} changed");
        }
    }
    println!(
        "  2 MiB block IPA {IPA_BLOCK:#x} -> PA {:#x}: {len} bytes landed at PA {:#x}",
        block.pa(),
        block.pa() + dst as u64
    );
    // Just past the block is unmapped.
    edu_ok(e.dma_to_ram(0, IPA_BLOCK + BLOCK, 64))?;
    let faults = demo::report_faults(&smmu, &edus);
    expect_one_fault(&faults, EventType::FTranslation, s, IPA_BLOCK + BLOCK)?;

    // Unmapping the whole block: one range command, then the block faults.
    let before = smmu.stats().cmdq;
    try_ok!(smmu.unmap(dom, IPA_BLOCK, BLOCK));
    let after = smmu.stats().cmdq;
    check_eq!(
        (after.commands - before.commands, after.syncs - before.syncs),
        (1, 1)
    );
    block.fill(CANARY);
    edu_ok(e.dma_to_ram(0, IPA_BLOCK + dst as u64, 64))?;
    let faults = demo::report_faults(&smmu, &edus);
    expect_one_fault(&faults, EventType::FTranslation, s, IPA_BLOCK + dst as u64)?;
    check!(
        block.first_change_outside(0, 0, CANARY).is_none(),
        "stale block entry used"
    );
    try_ok!(smmu.detach(s));
    try_ok!(smmu.destroy_domain(dom));
    Ok(())
}

/// Issue 9: unmapping one 4 KiB page from the middle of a 2 MiB block (a
/// balloon) splits the block: DMA to that page faults, DMA to its
/// neighbours still lands. Protecting another page of it read-only makes
/// only that page fault on writes.
fn unmap_one_page_splits_a_2mib_block() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let dom = try_ok!(smmu.create_domain(DomainOptions::new(try_ok!(
        demo::vm_stage2().map_err(Failure::new)
    ))));
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    try_ok!(smmu.map(dom, IPA_BLOCK, block.pa(), BLOCK, Perm::ReadWrite));
    let e = &edus[0];
    let s = sid(e)?;
    try_ok!(smmu.attach(dom, s));
    let hole = BLOCK / 2;
    try_ok!(smmu.unmap(dom, IPA_BLOCK + hole, PAGE));
    check_eq!(try_ok!(smmu.translate(dom, IPA_BLOCK + hole)), None);
    let ro = BLOCK / 4;
    try_ok!(smmu.protect(dom, IPA_BLOCK + ro, PAGE, Perm::Read));
    block.fill(CANARY);
    // The hole faults and nothing is written.
    edu_ok(e.dma_to_ram(0, IPA_BLOCK + hole, 64))?;
    let faults = demo::report_faults(&smmu, &edus);
    expect_one_fault(&faults, EventType::FTranslation, s, IPA_BLOCK + hole)?;
    // The read-only page refuses the write.
    edu_ok(e.dma_to_ram(0, IPA_BLOCK + ro, 64))?;
    let faults = demo::report_faults(&smmu, &edus);
    expect_one_fault(&faults, EventType::FPermission, s, IPA_BLOCK + ro)?;
    check!(
        block.first_change_outside(0, 0, CANARY).is_none(),
        "a faulting DMA wrote memory"
    );
    // Every neighbour still works, at its old physical address.
    for off in [
        0,
        hole - PAGE,
        hole + PAGE,
        ro - PAGE,
        ro + PAGE,
        BLOCK - PAGE,
    ] {
        let t = try_ok!(smmu.translate(dom, IPA_BLOCK + off))
            .ok_or(Failure::new("neighbour mapped"))?;
        check_eq!((off, t.pa, t.size), (off, block.pa() + off, PAGE));
        edu_ok(e.dma_to_ram(0, IPA_BLOCK + off, 64))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
        check!(
            block.get(off as usize) != CANARY,
            "DMA to neighbour {off:#x} did not land"
        );
    }
    println!(
        "  2 MiB block split: page +{hole:#x} unmapped, +{ro:#x} read-only, neighbours unchanged"
    );
    try_ok!(smmu.detach(s));
    try_ok!(smmu.destroy_domain(dom));
    Ok(())
}

/// Issue 9, hypervisor-owned tables: the image builds a VM's stage 2 with
/// aarch64-paging; the driver attaches it by VTCR + root, reserves the VMID,
/// never edits it, and `invalidate` is what makes an unmap visible to the
/// SMMU. A second VM on driver-owned tables with a private VMID shows that
/// an SMMU TLBI for one VMID leaves the other's cached translations alone.
fn hypervisor_owned_tables_and_both_vmid_policies() -> TestResult {
    let edus = edus_at_least(2)?;
    let smmu = up()?;
    let (ea, eb) = (&edus[0], &edus[1]);
    let (sa, sb) = (sid(ea)?, sid(eb)?);
    let ipa = IPA_DATA;
    // VM B: the hypervisor's tables, the CPU's VMID (0x77) as S2VMID.
    let pb = Buf::new(PAGE as usize, PAGE as usize)?;
    // Each VM also maps a source page at ipa + PAGE: its device first reads
    // a pattern from there into its buffer, and writes that pattern later.
    let src = Buf::new(PAGE as usize, PAGE as usize)?;
    src.fill(0x5A);
    let mut hv = image::hvtables::HvStage2::new();
    try_ok!(
        hv.map(ipa, pb.pa(), PAGE, true)
            .map_err(|e| format!("{e:?}"))
    );
    try_ok!(
        hv.map(ipa + PAGE, src.pa(), PAGE, false)
            .map_err(|e| format!("{e:?}"))
    );
    let cpu_vmid = 0x77;
    let b = try_ok!(smmu.create_external_domain(ExternalStage2 {
        vtcr: image::hvtables::HvStage2::vtcr(),
        root: hv.root(),
        vmid: Some(cpu_vmid),
        access_flag_fault_disable: true,
    }));
    // The VMID is reserved: no other domain may take it.
    let cfg = try_ok!(demo::vm_stage2().map_err(Failure::new));
    check!(
        smmu.create_domain(DomainOptions {
            vmid: Some(cpu_vmid),
            ..DomainOptions::new(cfg)
        })
        .is_err()
    );
    // VM A: driver-owned tables, a VMID from the SMMU's private space.
    let pa_page = Buf::new(PAGE as usize, PAGE as usize)?;
    let a = try_ok!(smmu.create_domain(DomainOptions::new(cfg)));
    try_ok!(smmu.map(a, ipa, pa_page.pa(), PAGE, Perm::ReadWrite));
    try_ok!(smmu.map(a, ipa + PAGE, src.pa(), PAGE, Perm::Read));
    let vmid_a = try_ok!(smmu.domain_info(a)).vmid;
    check!(vmid_a != cpu_vmid);
    try_ok!(smmu.attach(a, sa));
    try_ok!(smmu.attach(b, sb));
    let ste = try_ok!(smmu.ste(sb));
    check_eq!((ste.vmid(), ste.s2ttb()), (cpu_vmid, hv.root()));
    check_eq!(
        smmu.map(b, ipa, pb.pa(), PAGE, Perm::Read),
        Err(Error::ExternalTables(b))
    );
    // Both devices read the pattern through their VM's tables (B's: the
    // hypervisor's), then write the same IPA: each lands in its own page.
    edu_ok(ea.dma_from_ram(0, ipa + PAGE, 64))?;
    edu_ok(eb.dma_from_ram(0, ipa + PAGE, 64))?;
    pa_page.fill(CANARY);
    pb.fill(CANARY);
    edu_ok(ea.dma_to_ram(0, ipa, 64))?;
    edu_ok(eb.dma_to_ram(0, ipa, 64))?;
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    check_eq!(
        (pa_page.get(0), pb.get(0), pb.get(63), pb.get(64)),
        (0x5A, 0x5A, 0x5A, CANARY)
    );
    // The hypervisor unmaps B's page in its own tables but (yet) only the
    // other VM's TLB is invalidated: B's device still uses its cached
    // translation, A's TLBI did not touch VMID 0x77.
    try_ok!(hv.unmap(ipa, PAGE).map_err(|e| format!("{e:?}")));
    try_ok!(smmu.invalidate(a, ipa, PAGE));
    pb.fill(CANARY);
    edu_ok(eb.dma_to_ram(0, ipa, 64))?;
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    check!(
        pb.get(0) == 0x5A,
        "B's cached translation survived A's TLBI"
    );
    // Now B's own invalidation: the page faults and nothing is written.
    try_ok!(smmu.invalidate(b, ipa, PAGE));
    pb.fill(CANARY);
    edu_ok(eb.dma_to_ram(0, ipa, 64))?;
    let faults = demo::report_faults(&smmu, &edus);
    expect_one_fault(&faults, EventType::FTranslation, sb, ipa)?;
    check!(pb.all(CANARY), "DMA after invalidate reached the old page");
    // And A was never disturbed.
    pa_page.fill(CANARY);
    edu_ok(ea.dma_to_ram(0, ipa, 64))?;
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    check!(pa_page.get(0) == 0x5A);
    println!(
        "  hypervisor-owned tables (aarch64-paging, root {:#x}, {} table pages), VMID {cpu_vmid:#x} = CPU's; driver-owned VMID {vmid_a}: TLBI for one left the other",
        hv.root(),
        hv.table_pages()
    );
    try_ok!(smmu.detach(sa));
    try_ok!(smmu.detach(sb));
    try_ok!(smmu.destroy_domain(a));
    try_ok!(smmu.destroy_domain(b));
    Ok(())
}

// ---------------------------------------------------------------------------
// 5. Invalidation counts and the fallback.

fn unmap_2mib_of_pages_is_one_range_command() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    check!(smmu.features().ril, "QEMU's SMMU has RIL");
    let dom = try_ok!(smmu.create_domain(DomainOptions::new(try_ok!(
        demo::vm_stage2().map_err(Failure::new)
    ))));
    let vmid = try_ok!(smmu.domain_info(dom)).vmid;
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    // 512 separate 4K mappings (reversed page order: no block possible).
    for i in 0..512u64 {
        try_ok!(smmu.map(
            dom,
            IPA_BLOCK + i * PAGE,
            block.pa() + (511 - i) * PAGE,
            PAGE,
            Perm::ReadWrite
        ));
    }
    for i in [0u64, 255, 511] {
        let t = try_ok!(smmu.translate(dom, IPA_BLOCK + i * PAGE)).ok_or(Failure::new("mapped"))?;
        check_eq!((i, t.size, t.pa), (i, PAGE, block.pa() + (511 - i) * PAGE));
    }
    let e = &edus[0];
    let s = sid(e)?;
    try_ok!(smmu.attach(dom, s));
    block.fill(CANARY);
    // Cache a few translations across the range.
    for i in [0u64, 256, 511] {
        edu_ok(e.dma_to_ram(0, IPA_BLOCK + i * PAGE, 32))?;
        let pa_off = ((511 - i) * PAGE) as usize;
        check!(
            block.read(pa_off, 32) != [CANARY; 32],
            "write to page {i} did not land at its PA"
        );
    }
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;

    let plan = planned(&smmu, vmid, IPA_BLOCK, BLOCK);
    check_eq!(plan.commands().len(), 1);
    check_eq!(pages_covered(&plan), Some(512));
    let before = smmu.stats().cmdq;
    try_ok!(smmu.unmap(dom, IPA_BLOCK, BLOCK));
    let after = smmu.stats().cmdq;
    check_eq!(
        (
            after.commands - before.commands,
            after.syncs - before.syncs,
            after.prod_writes - before.prod_writes
        ),
        (1, 1, 1)
    );
    println!(
        "  unmap 512 pages: 1 TLBI_S2_IPA {:?} + 1 CMD_SYNC",
        plan.commands()[0]
    );
    block.fill(CANARY);
    for i in [0u64, 256, 511] {
        edu_ok(e.dma_to_ram(0, IPA_BLOCK + i * PAGE, 32))?;
        let faults = demo::report_faults(&smmu, &edus);
        expect_one_fault(&faults, EventType::FTranslation, s, IPA_BLOCK + i * PAGE)?;
    }
    check!(
        block.first_change_outside(0, 0, CANARY).is_none(),
        "stale page entry used"
    );
    // The emptied level-3 table was freed: only the root and level 2 remain
    // (level-2 table emptied too: only the root).
    check_eq!(
        try_ok!(smmu.domain_info(dom)).table_bytes,
        demo::vm_stage2().map_err(Failure::new)?.root_table_bytes()
    );
    try_ok!(smmu.detach(s));
    try_ok!(smmu.destroy_domain(dom));
    Ok(())
}

fn unmap_odd_range_uses_planned_commands() -> TestResult {
    let smmu = up()?;
    let dom = try_ok!(smmu.create_domain(DomainOptions::new(try_ok!(
        demo::vm_stage2().map_err(Failure::new)
    ))));
    let vmid = try_ok!(smmu.domain_info(dom)).vmid;
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    // 33 pages = 0b100001: two range commands (5-bit NUM windows);
    // 1057 = 0b100_0010_0001 pages: three; 1 and 32 pages: one.
    for (pages, want) in [(33u64, 2usize), (1057, 3), (1, 1), (32, 1)] {
        let len = pages * PAGE;
        let ipa = IPA_BLOCK + PAGE; // not aligned to anything larger
        try_ok!(smmu.map(dom, ipa, block.pa(), len, Perm::ReadWrite));
        let plan = planned(&smmu, vmid, ipa, len);
        check!(!plan.is_fallback());
        check_eq!((pages, plan.commands().len()), (pages, want));
        check_eq!((pages, pages_covered(&plan)), (pages, Some(pages)));
        let before = smmu.stats().cmdq;
        try_ok!(smmu.unmap(dom, ipa, len));
        let after = smmu.stats().cmdq;
        check_eq!(
            (
                pages,
                after.commands - before.commands,
                after.syncs - before.syncs
            ),
            (pages, want as u64, 1)
        );
    }
    try_ok!(smmu.destroy_domain(dom));
    Ok(())
}

fn invalidation_planner_fallback() -> TestResult {
    let vmid = 7;
    // Without RIL: one command per page up to the budget, then one VMALL.
    let p = expert::s2_invalidation(
        vmid,
        0x4000_0000,
        MAX_RANGE_COMMANDS as u64 * PAGE,
        12,
        false,
        MAX_RANGE_COMMANDS,
    );
    check!(!p.is_fallback());
    check_eq!(p.commands().len(), MAX_RANGE_COMMANDS);
    check_eq!(pages_covered(&p), Some(MAX_RANGE_COMMANDS as u64));
    let p = expert::s2_invalidation(
        vmid,
        0x4000_0000,
        (MAX_RANGE_COMMANDS as u64 + 1) * PAGE,
        12,
        false,
        MAX_RANGE_COMMANDS,
    );
    check_eq!(
        p,
        InvalidationPlan::Fallback(Command::TlbiS12Vmall { vmid })
    );
    // With RIL a budget the range cannot meet falls back too (1057 =
    // 0b100_0010_0001 pages need three commands).
    let p = expert::s2_invalidation(vmid, 0, 1057 * PAGE, 12, true, 2);
    check_eq!(
        p,
        InvalidationPlan::Fallback(Command::TlbiS12Vmall { vmid })
    );
    // With RIL and the driver's budget, every range within a 48-bit IPA
    // space is precise or a fallback, and a precise plan covers exactly its
    // pages as the SMMU decodes the commands.
    for &(ipa, len) in &[
        (0u64, 1u64 << 30),
        (0x1000, (1 << 40) - 0x1000),
        (0, 1 << 40),
        (0, 1 << 43),
        (0, 1 << 44),
        (0, (1 << 44) + (1 << 43)),
        (0, 1 << 47),
        (0x1000, (1 << 48) - 0x2000),
        (0, 1 << 48),
    ] {
        let p = expert::s2_invalidation(vmid, ipa, len, 12, true, MAX_RANGE_COMMANDS);
        if let Some(pages) = pages_covered(&p) {
            check_eq!((ipa, len, pages), (ipa, len, len / PAGE));
            check!(p.commands().len() <= MAX_RANGE_COMMANDS);
        }
    }
    // The driver's domain invalidation uses this planner: a range past the
    // budget reaches the SMMU as one TLBI_S12_VMALL + SYNC, i.e. one command.
    Ok(())
}

/// Unmapping all of a 44-bit IPA space (a VM teardown) must drop every
/// cached translation, however large the range.
fn unmap_whole_44bit_ipa_space_invalidates_everything() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let cfg = try_ok!(Stage2Config::new(Granule::K4, 44, 44));
    let dom = try_ok!(smmu.create_domain(DomainOptions::new(cfg)));
    let vmid = try_ok!(smmu.domain_info(dom)).vmid;
    let whole = 1u64 << 44;
    // Identity: IPA = PA over the whole space, as 1 GiB blocks.
    try_ok!(smmu.map(dom, 0, 0, whole, Perm::ReadWrite));
    let page = Page::new().map_err(Failure::new)?;
    let t = try_ok!(smmu.translate(dom, page.pa())).ok_or(Failure::new("mapped"))?;
    check_eq!((t.pa, t.size), (page.pa(), 1u64 << 30));
    let e = &edus[0];
    let s = sid(e)?;
    try_ok!(smmu.attach(dom, s));
    edu_ok(e.dma_to_ram(0, page.pa(), 64))?;
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    check!(!page.all(CANARY), "identity-mapped write did not land");

    let plan = planned(&smmu, vmid, 0, whole);
    println!("  unmap 0..2^44: plan {plan:?}");
    let before = smmu.stats().cmdq;
    try_ok!(smmu.unmap(dom, 0, whole));
    let after = smmu.stats().cmdq;
    check_eq!(
        after.commands - before.commands,
        plan.commands().len() as u64
    );
    check_eq!(after.syncs - before.syncs, 1);
    page.fill(CANARY);
    edu_ok(e.dma_to_ram(0, page.pa(), 64))?;
    let faults = demo::report_faults(&smmu, &edus);
    check!(
        page.all(CANARY),
        "write landed after unmapping everything: stale 1 GiB entry"
    );
    expect_one_fault(&faults, EventType::FTranslation, s, page.pa())?;
    check!(
        plan.is_fallback() || pages_covered(&plan) == Some(whole / PAGE),
        "plan covers {:?} pages of {}",
        pages_covered(&plan),
        whole / PAGE
    );
    try_ok!(smmu.detach(s));
    try_ok!(smmu.destroy_domain(dom));
    Ok(())
}

// ---------------------------------------------------------------------------
// 6. Rejected calls change nothing.

/// A domain with something mapped (so its tables are not trivially empty):
/// a 2 MiB block at IPA_BLOCK and pages at WINDOW.
fn populated_domain(smmu: &Driver, block: &Buf, page: &Page) -> Result<DomainId, Failure> {
    let dom = try_ok!(smmu.create_domain(DomainOptions::new(try_ok!(
        demo::vm_stage2().map_err(Failure::new)
    ))));
    try_ok!(smmu.map(dom, IPA_BLOCK, block.pa(), BLOCK, Perm::ReadWrite));
    try_ok!(smmu.map(dom, WINDOW, page.pa(), PAGE, Perm::ReadWrite));
    try_ok!(smmu.map(dom, WINDOW + 2 * PAGE, page.pa(), PAGE, Perm::Read));
    Ok(dom)
}

fn errors_stream_ids() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    let page = Page::new().map_err(Failure::new)?;
    let a = populated_domain(&smmu, &block, &page)?;
    let b = populated_domain(&smmu, &block, &page)?;
    let doms = [a, b];
    let s = sid(&edus[0])?;
    let limit = smmu.sid_limit() as u32;

    rejected(
        &smmu,
        &doms,
        "attach SID = table size",
        Error::SidOutOfRange { sid: limit, limit },
        || smmu.attach(a, limit),
    )?;
    rejected(
        &smmu,
        &doms,
        "attach SID u32::MAX",
        Error::SidOutOfRange {
            sid: u32::MAX,
            limit,
        },
        || smmu.attach(a, u32::MAX),
    )?;
    rejected(
        &smmu,
        &doms,
        "detach SID = table size",
        Error::SidOutOfRange { sid: limit, limit },
        || smmu.detach(limit),
    )?;
    rejected(
        &smmu,
        &doms,
        "attach to unknown domain",
        Error::UnknownDomain(9999),
        || smmu.attach(9999, s),
    )?;
    rejected(
        &smmu,
        &doms,
        "detach never-attached SID",
        Error::SidNotAttached(s),
        || smmu.detach(s),
    )?;

    try_ok!(smmu.attach(a, s));
    rejected(
        &smmu,
        &doms,
        "attach SID twice to the same domain",
        Error::SidAttached(s),
        || smmu.attach(a, s),
    )?;
    rejected(
        &smmu,
        &doms,
        "attach SID attached to another domain",
        Error::SidAttached(s),
        || smmu.attach(b, s),
    )?;
    check_eq!(smmu.domain_of(s), Some(a));
    try_ok!(smmu.detach(s));
    rejected(
        &smmu,
        &doms,
        "detach twice",
        Error::SidNotAttached(s),
        || smmu.detach(s),
    )?;

    // A stream configured outside the domain API (bypass) is not taken over.
    let other = 0x42;
    try_ok!(smmu.set_bypass(other));
    rejected(
        &smmu,
        &doms,
        "attach a bypass SID",
        Error::SidAttached(other),
        || smmu.attach(a, other),
    )?;
    rejected(
        &smmu,
        &doms,
        "detach a bypass SID",
        Error::SidNotAttached(other),
        || smmu.detach(other),
    )?;
    try_ok!(smmu.set_abort(other));
    // ... but once aborted it can be attached.
    try_ok!(smmu.attach(b, other));
    try_ok!(smmu.detach(other));
    try_ok!(smmu.destroy_domain(a));
    try_ok!(smmu.destroy_domain(b));
    Ok(())
}

fn errors_domain_lifecycle() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    let page = Page::new().map_err(Failure::new)?;
    let a = populated_domain(&smmu, &block, &page)?;
    let s = sid(&edus[0])?;
    try_ok!(smmu.attach(a, s));
    rejected(
        &smmu,
        &[a],
        "destroy a domain with a stream attached",
        Error::DomainBusy(a),
        || smmu.destroy_domain(a),
    )?;
    // Still working after the refusal.
    page.fill(CANARY);
    edu_ok(edus[0].dma_to_ram(0, WINDOW, 64))?;
    expect_no_fault(&demo::report_faults(&smmu, &edus))?;
    check!(
        !page.all(CANARY),
        "domain stopped working after a refused destroy"
    );
    rejected(
        &smmu,
        &[a],
        "destroy unknown domain",
        Error::UnknownDomain(a + 100),
        || smmu.destroy_domain(a + 100),
    )?;
    // Too large for this SMMU (IAS/OAS 44 bits): refused, nothing allocated.
    let wide = try_ok!(Stage2Config::new(Granule::K4, 48, 48));
    rejected(
        &smmu,
        &[a],
        "create a domain beyond the SMMU's IAS/OAS",
        Error::Unsupported(smmuv3::error::Unsupported::AddressSize),
        || smmu.create_domain(DomainOptions::new(wide)),
    )?;
    // Clamped to the SMMU, it is accepted.
    let f = smmu.features();
    let clamped = try_ok!(wide.clamp_to(u32::from(f.ias_bits), u32::from(f.oas_bits)));
    check_eq!((clamped.ipa_bits(), clamped.oas_bits()), (44, 44));
    let c = try_ok!(smmu.create_domain(DomainOptions::new(clamped)));
    try_ok!(smmu.destroy_domain(c));
    try_ok!(smmu.detach(s));
    try_ok!(smmu.destroy_domain(a));
    Ok(())
}

fn errors_vmid() -> TestResult {
    let smmu = up()?;
    let cfg = try_ok!(demo::vm_stage2().map_err(Failure::new));
    let want = |v| DomainOptions {
        vmid: Some(v),
        ..DomainOptions::new(cfg)
    };
    let a = try_ok!(smmu.create_domain(want(77)));
    check_eq!(try_ok!(smmu.domain_info(a)).vmid, 77);
    rejected(
        &smmu,
        &[a],
        "take VMID 77 twice",
        Error::Invalid(Invalid::IdInUse(77)),
        || smmu.create_domain(want(77)),
    )?;
    rejected(
        &smmu,
        &[a],
        "take reserved VMID 0",
        Error::Invalid(Invalid::IdReserved),
        || smmu.create_domain(want(0)),
    )?;
    // Allocation skips the VMID taken explicitly.
    let mut got = Vec::new();
    for _ in 0..80 {
        let d = try_ok!(smmu.create_domain(DomainOptions::new(cfg)));
        got.push((d, try_ok!(smmu.domain_info(d)).vmid));
    }
    check!(got.iter().all(|&(_, v)| v != 77 && v != 0));
    let mut vmids: Vec<u16> = got.iter().map(|&(_, v)| v).collect();
    vmids.sort_unstable();
    vmids.dedup();
    check_eq!(vmids.len(), 80);
    check_eq!(smmu.vmids_in_use(), 81);
    for (d, _) in got {
        try_ok!(smmu.destroy_domain(d));
    }
    try_ok!(smmu.destroy_domain(a));
    // After destroy the VMID is free again.
    let b = try_ok!(smmu.create_domain(want(77)));
    try_ok!(smmu.destroy_domain(b));
    check_eq!(smmu.vmids_in_use(), 0);

    // Exhaustion, on the allocator the driver uses (65535 domains with
    // tables would not fit in the test's RAM).
    let bits = u32::from(smmu.features().vmid_bits);
    let mut ids = try_ok!(IdAllocator::new(bits, true, IdKind::Vmid));
    let n = (1usize << bits) - 1;
    for i in 1..=n {
        check_eq!(try_ok!(ids.alloc()), i as u16);
    }
    check_eq!(ids.alloc(), Err(Error::VmidExhausted));
    check_eq!(ids.in_use(), n);
    try_ok!(ids.free(1234 % n as u16));
    check_eq!(ids.alloc(), Ok(1234 % n as u16));
    check_eq!(ids.alloc(), Err(Error::VmidExhausted));
    check_eq!(
        ids.alloc_specific(5),
        Err(Error::Invalid(Invalid::IdInUse(5)))
    );
    println!("  VMID allocator: {n} VMIDs, then VmidExhausted");
    Ok(())
}

fn errors_map() -> TestResult {
    let smmu = up()?;
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    let page = Page::new().map_err(Failure::new)?;
    let d = populated_domain(&smmu, &block, &page)?;
    let doms = [d];
    let pa = page.pa();
    let rw = Perm::ReadWrite;
    let free_ipa = WINDOW + 0x10 * PAGE;
    rejected(
        &smmu,
        &doms,
        "map misaligned IPA",
        Error::Misaligned {
            addr: free_ipa + 0x800,
            align: PAGE,
        },
        || smmu.map(d, free_ipa + 0x800, pa, PAGE, rw),
    )?;
    rejected(
        &smmu,
        &doms,
        "map misaligned PA",
        Error::Misaligned {
            addr: pa + 4,
            align: PAGE,
        },
        || smmu.map(d, free_ipa, pa + 4, PAGE, rw),
    )?;
    rejected(
        &smmu,
        &doms,
        "map misaligned length",
        Error::Misaligned {
            addr: PAGE + 1,
            align: PAGE,
        },
        || smmu.map(d, free_ipa, pa, PAGE + 1, rw),
    )?;
    rejected(&smmu, &doms, "map zero length", Error::ZeroLength, || {
        smmu.map(d, free_ipa, pa, 0, rw)
    })?;
    let top = !(PAGE - 1);
    rejected(
        &smmu,
        &doms,
        "map IPA range that wraps",
        Error::RangeOverflow {
            addr: top,
            len: 2 * PAGE,
        },
        || smmu.map(d, top, pa, 2 * PAGE, rw),
    )?;
    let end = 1u64 << 40;
    rejected(
        &smmu,
        &doms,
        "map across the 40-bit IPA limit",
        Error::RangeOverflow {
            addr: end - PAGE,
            len: 2 * PAGE,
        },
        || smmu.map(d, end - PAGE, pa, 2 * PAGE, rw),
    )?;
    rejected(
        &smmu,
        &doms,
        "map beyond the IPA limit",
        Error::RangeOverflow {
            addr: end,
            len: PAGE,
        },
        || smmu.map(d, end, pa, PAGE, rw),
    )?;
    let oa_end = 1u64 << 44;
    rejected(
        &smmu,
        &doms,
        "map PA beyond the 44-bit output size",
        Error::RangeOverflow {
            addr: oa_end - PAGE,
            len: 2 * PAGE,
        },
        || smmu.map(d, free_ipa, oa_end - PAGE, 2 * PAGE, rw),
    )?;
    rejected(
        &smmu,
        &doms,
        "map over a mapped page",
        Error::Overlap { addr: WINDOW },
        || smmu.map(d, WINDOW, pa, PAGE, rw),
    )?;
    // Partly free, partly mapped: refused at the first mapped address, and
    // the free part before it is not mapped either.
    rejected(
        &smmu,
        &doms,
        "map a range ending in a mapped page",
        Error::Overlap {
            addr: WINDOW + 2 * PAGE,
        },
        || smmu.map(d, WINDOW + PAGE, pa, 2 * PAGE, rw),
    )?;
    check_eq!(try_ok!(smmu.translate(d, WINDOW + PAGE)), None);
    rejected(
        &smmu,
        &doms,
        "map pages inside a block",
        Error::Overlap {
            addr: IPA_BLOCK + 0x10_0000,
        },
        || smmu.map(d, IPA_BLOCK + 0x10_0000, pa, PAGE, rw),
    )?;
    rejected(
        &smmu,
        &doms,
        "map a range covering a block",
        Error::Overlap { addr: IPA_BLOCK },
        || smmu.map(d, IPA_BLOCK - PAGE, block.pa(), BLOCK, rw),
    )?;
    try_ok!(smmu.destroy_domain(d));
    Ok(())
}

fn errors_unmap_and_protect() -> TestResult {
    let smmu = up()?;
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    let page = Page::new().map_err(Failure::new)?;
    let d = populated_domain(&smmu, &block, &page)?;
    let doms = [d];
    let end = 1u64 << 40;
    for (op, is_unmap) in [("unmap", true), ("protect", false)] {
        let call = |ipa: u64, len: u64| {
            if is_unmap {
                smmu.unmap(d, ipa, len)
            } else {
                smmu.protect(d, ipa, len, Perm::Read)
            }
        };
        rejected(
            &smmu,
            &doms,
            &format!("{op} misaligned IPA"),
            Error::Misaligned {
                addr: WINDOW + 8,
                align: PAGE,
            },
            || call(WINDOW + 8, PAGE),
        )?;
        rejected(
            &smmu,
            &doms,
            &format!("{op} misaligned length"),
            Error::Misaligned {
                addr: 0x800,
                align: PAGE,
            },
            || call(WINDOW, 0x800),
        )?;
        rejected(
            &smmu,
            &doms,
            &format!("{op} zero length"),
            Error::ZeroLength,
            || call(WINDOW, 0),
        )?;
        rejected(
            &smmu,
            &doms,
            &format!("{op} wrapping range"),
            Error::RangeOverflow {
                addr: WINDOW,
                len: !(PAGE - 1),
            },
            || call(WINDOW, !(PAGE - 1)),
        )?;
        rejected(
            &smmu,
            &doms,
            &format!("{op} beyond the IPA limit"),
            Error::RangeOverflow {
                addr: end - PAGE,
                len: 2 * PAGE,
            },
            || call(end - PAGE, 2 * PAGE),
        )?;
        rejected(
            &smmu,
            &doms,
            &format!("{op} never-mapped page"),
            Error::NotMapped { addr: IPA_UNMAPPED },
            || call(IPA_UNMAPPED, PAGE),
        )?;
        // WINDOW mapped, WINDOW + PAGE not: nothing happens to WINDOW either.
        rejected(
            &smmu,
            &doms,
            &format!("{op} a range with a hole"),
            Error::NotMapped {
                addr: WINDOW + PAGE,
            },
            || call(WINDOW, 3 * PAGE),
        )?;
        rejected(
            &smmu,
            &doms,
            &format!("{op} in an unknown domain"),
            Error::UnknownDomain(d + 100),
            || {
                if is_unmap {
                    smmu.unmap(d + 100, WINDOW, PAGE)
                } else {
                    smmu.protect(d + 100, WINDOW, PAGE, Perm::Read)
                }
            },
        )?;
    }
    // The mappings the rejected calls touched are intact.
    let t = try_ok!(smmu.translate(d, WINDOW)).ok_or(Failure::new("WINDOW mapped"))?;
    check_eq!((t.pa, t.perm), (page.pa(), Perm::ReadWrite));
    let t = try_ok!(smmu.translate(d, IPA_BLOCK + PAGE)).ok_or(Failure::new("block mapped"))?;
    check_eq!((t.size, t.perm), (BLOCK, Perm::ReadWrite));
    // Unmapping the whole block is fine.
    try_ok!(smmu.unmap(d, IPA_BLOCK, BLOCK));
    try_ok!(smmu.destroy_domain(d));
    Ok(())
}

fn errors_destroyed_domain() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let block = Buf::new(BLOCK as usize, BLOCK as usize)?;
    let page = Page::new().map_err(Failure::new)?;
    let live = populated_domain(&smmu, &block, &page)?;
    let gone = populated_domain(&smmu, &block, &page)?;
    try_ok!(smmu.destroy_domain(gone));
    let doms = [live];
    let s = sid(&edus[0])?;
    let u = Error::UnknownDomain(gone);
    rejected(&smmu, &doms, "map in a destroyed domain", u, || {
        smmu.map(gone, IPA_UNMAPPED, page.pa(), PAGE, Perm::ReadWrite)
    })?;
    rejected(&smmu, &doms, "unmap in a destroyed domain", u, || {
        smmu.unmap(gone, WINDOW, PAGE)
    })?;
    rejected(&smmu, &doms, "protect in a destroyed domain", u, || {
        smmu.protect(gone, WINDOW, PAGE, Perm::Read)
    })?;
    rejected(&smmu, &doms, "attach to a destroyed domain", u, || {
        smmu.attach(gone, s)
    })?;
    rejected(&smmu, &doms, "destroy a destroyed domain", u, || {
        smmu.destroy_domain(gone)
    })?;
    rejected(&smmu, &doms, "translate in a destroyed domain", u, || {
        smmu.translate(gone, WINDOW)
    })?;
    rejected(&smmu, &doms, "domain_info of a destroyed domain", u, || {
        smmu.domain_info(gone)
    })?;
    rejected(
        &smmu,
        &doms,
        "stage2_snapshot of a destroyed domain",
        u,
        || smmu.stage2_snapshot(gone).map(|v| v.len()),
    )?;
    check_eq!(try_ok!(smmu.ste(s)).config(), SteConfig::Abort);
    check_eq!(smmu.vmids_in_use(), 1);
    try_ok!(smmu.destroy_domain(live));
    Ok(())
}

// ---------------------------------------------------------------------------
// 7. A CPU's VTCR_EL2 drives the STE.

/// VTCR_EL2 fields (Arm ARM): T0SZ [5:0], SL0 [7:6], IRGN0 [9:8],
/// ORGN0 [11:10], SH0 [13:12], TG0 [15:14], PS [18:16], RES1 bit 31.
const fn vtcr(t0sz: u64, sl0: u64, tg0: u64, ps: u64) -> u64 {
    t0sz | sl0 << 6 | 1 << 8 | 1 << 10 | 3 << 12 | tg0 << 14 | ps << 16 | 1 << 31
}

fn bits(v: u64, lo: u32, n: u32) -> u64 {
    (v >> lo) & ((1 << n) - 1)
}

fn vtcr_from_cpu_stage2_drives_ste_and_dma() -> TestResult {
    let edus = edus_at_least(1)?;
    let smmu = up()?;
    let e = &edus[0];
    let s = sid(e)?;
    for (what, v, granule) in [
        // 4K granule, 40-bit IPA, start level 1 (SL0 = 1), PS = 44 bits.
        (
            "4K, 40-bit IPA, SL0=1, PS=44",
            vtcr(24, 1, 0b00, 0b100),
            1u64 << 12,
        ),
        // 4K, 44-bit IPA, start level 0 (SL0 = 2).
        (
            "4K, 44-bit IPA, SL0=2, PS=44",
            vtcr(20, 2, 0b00, 0b100),
            1 << 12,
        ),
        // 64K granule, 42-bit IPA, start level 2 (SL0 = 1), PS = 42 bits.
        (
            "64K, 42-bit IPA, SL0=1, PS=42",
            vtcr(22, 1, 0b01, 0b011),
            1 << 16,
        ),
        // 16K granule, 36-bit IPA, start level 2 (SL0 = 1), PS = 40 bits.
        (
            "16K, 36-bit IPA, SL0=1, PS=40",
            vtcr(28, 1, 0b10, 0b010),
            1 << 14,
        ),
    ] {
        let cfg = try_ok!(Stage2Config::from_vtcr(v));
        check_eq!((what, cfg.vtcr()), (what, v));
        let dom = try_ok!(smmu.create_domain(DomainOptions::new(cfg)));
        let info = try_ok!(smmu.domain_info(dom));
        let buf = Buf::new(granule as usize, granule as usize)?;
        try_ok!(smmu.map(dom, WINDOW, buf.pa(), granule, Perm::ReadWrite));
        try_ok!(smmu.attach(dom, s));
        let ste = try_ok!(smmu.ste(s));
        let d2 = ste.0[2];
        // S2T0SZ [37:32], S2SL0 [39:38], S2IR0 [41:40], S2OR0 [43:42],
        // S2SH0 [45:44], S2TG [47:46], S2PS [50:48] mirror VTCR_EL2.
        let ste_fields = [
            bits(d2, 32, 6),
            bits(d2, 38, 2),
            bits(d2, 40, 2),
            bits(d2, 42, 2),
            bits(d2, 44, 2),
            bits(d2, 46, 2),
            bits(d2, 48, 3),
        ];
        let vtcr_fields = [
            bits(v, 0, 6),
            bits(v, 6, 2),
            bits(v, 8, 2),
            bits(v, 10, 2),
            bits(v, 12, 2),
            bits(v, 14, 2),
            bits(v, 16, 3),
        ];
        check_eq!((what, ste_fields), (what, vtcr_fields));
        check_eq!(
            (what, ste.config(), ste.vmid(), ste.s2ttb()),
            (what, SteConfig::Stage2, info.vmid, info.root)
        );
        // S2AA64 = 1, S2R = 1 (faults recorded), S2AFFD as asked.
        check_eq!(
            (what, bits(d2, 51, 1), bits(d2, 58, 1), bits(d2, 53, 1)),
            (what, 1, 1, 1)
        );
        println!(
            "  {what}: VTCR_EL2 {v:#x} -> STE dword 2 {d2:#018x}, S2TTB {:#x}",
            ste.s2ttb()
        );

        // DMA through it: read a pattern, write it back elsewhere.
        buf.fill(CANARY);
        let (src, dst, len) = (granule as usize - 0x400, 0x200usize, 0x100usize);
        for i in 0..len {
            buf.set(src + i, (i as u8) ^ 0x5A | 1);
        }
        edu_ok(e.dma_from_ram(0, WINDOW + src as u64, len))?;
        edu_ok(e.dma_to_ram(0, WINDOW + dst as u64, len))?;
        expect_no_fault(&demo::report_faults(&smmu, &edus))?;
        check_eq!((what, buf.read(dst, len)), (what, buf.read(src, len)));
        for i in 0..buf.len() {
            if !(src..src + len).contains(&i) && !(dst..dst + len).contains(&i) {
                check!(
                    buf.get(i) == CANARY,
                    "{what}: byte {i:#x} outside the copy changed"
                );
            }
        }
        // One granule past the mapping faults.
        edu_ok(e.dma_to_ram(0, WINDOW + granule, 64))?;
        let faults = demo::report_faults(&smmu, &edus);
        expect_one_fault(&faults, EventType::FTranslation, s, WINDOW + granule)?;
        try_ok!(smmu.detach(s));
        try_ok!(smmu.destroy_domain(dom));
    }
    // A CPU configuration the SMMU cannot hold (PS = 48 bits > OAS 44) is
    // refused, not silently narrowed.
    let cfg = try_ok!(Stage2Config::from_vtcr(vtcr(16, 2, 0b00, 0b101)));
    check_eq!(
        smmu.create_domain(DomainOptions::new(cfg)),
        Err(Error::Unsupported(smmuv3::error::Unsupported::AddressSize))
    );
    Ok(())
}
