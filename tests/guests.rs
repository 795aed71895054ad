//! On-target tests of the image's EL1 guests: VMs whose stage 2 the CPU
//! and their devices share (the SMMU domain's tables, or tables the
//! hypervisor builds with aarch64-paging), driving their own `edu`s
//! through IPAs they own.
//!
//! Every test brings up its own driver, builds VMs running only the guest
//! phases it needs, runs them (two at once on CPU 0 and CPU 1 where it
//! takes two), and judges the outcome by what the hypervisor can check for
//! itself: bytes in the VMs' physical memory, SMMU events attributed by
//! StreamID, decoded stage-2 aborts, the stage-2 tables word for word, the
//! registers the guest's hypercalls returned, VTTBR_EL2 read back against
//! the STE. A guest's own REPORT is required too, never sufficient.

#![no_std]
#![no_main]

extern crate alloc;

#[path = "../src/image/mod.rs"]
mod image;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use image::console::println;
use image::demo::Driver;
use image::edu::find_at_least as edus_at_least;
use image::guest::{self, BALLOON_PAGE_IPA, CODE_IPA, RAM_IPA, RAM_SIZE, phase};
use image::guests;
use image::harness::{self, Failure, TestResult, check, check_eq, tests, try_ok};
use image::hvc;
use image::vm::{Stop, TableModel, Vm, VmSpec, VmidPolicy};
use smmuv3::event::EventType;
use smmuv3::smmu::Config;

fn main() -> ! {
    let boot = image::init();
    image::print_pci_functions(&boot.pci);
    harness::run(
        "guests",
        tests![
            vttbr_and_ste_agree_and_leaves_are_typed,
            guest_dma_both_ways_through_ipas,
            dma_outside_ram_blocked_and_attributed_to_its_vm,
            cpu_stage2_abort_decoded_and_guest_resumes,
            two_vms_run_at_once_on_two_cpus,
            two_vms_same_ipa_no_crossing,
            bad_hypercalls_typed_errors_nothing_changes,
            balloon_splits_block_cpu_and_dma_fault,
            every_phase_on_every_edu,
            hypervisor_owned_tables_guest_dma_abort_balloon,
            balloon_break_before_make_with_a_guest,
            private_smmu_vmid_cpu_tlbi_by_cpu_vmid,
            one_vm_for_a_group_of_two_devices,
        ],
    )
}

// ---------------------------------------------------------------------------
// Helpers.

fn up() -> Result<Driver, Failure> {
    let smmu = try_ok!(image::iommu::new_smmu(Config::default()));
    try_ok!(smmu.enable());
    Ok(smmu)
}

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

/// `n` VMs (one per edu) running `phases`, created and run; the caller
/// destroys them.
fn run_vms(smmu: &Driver, n: usize, phases: u64) -> Result<Vec<Vm>, Failure> {
    let edus = edus_at_least(n)?;
    let mut vms = try_ok!(guests::create_all(smmu, &edus[..n], phases));
    try_ok!(guests::run_all(smmu, &mut vms));
    for vm in &vms {
        println!("  {}", guests::describe(smmu, vm));
    }
    Ok(vms)
}

/// VMs built from `specs`, created and run; the caller destroys them.
fn run_specs(smmu: &Driver, specs: Vec<VmSpec>) -> Result<Vec<Vm>, Failure> {
    let mut vms = try_ok!(guests::create_specs(smmu, specs));
    try_ok!(guests::run_all(smmu, &mut vms));
    for vm in &vms {
        println!("  {}", guests::describe(smmu, vm));
    }
    Ok(vms)
}

/// The VM stopped with DONE(0) and every REPORT it made passed.
#[track_caller]
fn clean_run(vm: &Vm) -> TestResult {
    check_eq!(vm.log.stop, Some(Stop::Done(0)));
    if let Some(r) = vm.log.reports.iter().find(|r| r.status != 0) {
        let mut f = Failure::new(format!("VM {}: every REPORT passes", vm.name));
        f.actual = Some(format!("{} failed: {r:x?}", hvc::check::name(r.check)));
        return Err(f);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Tests.

/// VTTBR_EL2 read while the VM was loaded names the same VMID as
/// STE.S2VMID and the same root as STE.S2TTB; the leaves have the types the
/// VM was built with.
fn vttbr_and_ste_agree_and_leaves_are_typed() -> TestResult {
    let smmu = up()?;
    let vms = run_vms(&smmu, 1, phase::INFO)?;
    let vm = &vms[0];
    clean_run(vm)?;
    scenario("identity", guests::identity(&smmu, vm))?;
    scenario("EL1 and CPU", guests::ran_at_el1(vm))?;
    let vttbr = vm.log.vttbr.unwrap_or(0);
    check_eq!(vttbr, try_ok!(vm.vttbr(&smmu)));
    check_eq!(try_ok!(smmu.ste(vm.sid)).vmid(), vm.vmid);
    guests::destroy_all(&smmu, vms);
    Ok(())
}

/// DMA RAM -> device -> RAM through the guest's IPAs: the pattern the guest
/// wrote at IPA RAM + 0x1000 is at PA RAM + 0x2000 afterwards, and nothing
/// else in its RAM changed.
fn guest_dma_both_ways_through_ipas() -> TestResult {
    let smmu = up()?;
    let vms = run_vms(&smmu, 1, phase::DMA)?;
    let vm = &vms[0];
    clean_run(vm)?;
    scenario("round trip", guests::dma_roundtrip(vm, guests::seed(0)))?;
    check!(vm.log.dma_faults.is_empty(), "{:x?}", vm.log.dma_faults);
    check!(
        vm.first_unfilled(&guests::written_by_guest()).is_none(),
        "RAM changed outside the DMA pages"
    );
    guests::destroy_all(&smmu, vms);
    Ok(())
}

/// Two VMs DMA to the same unmapped IPA at once: each gets exactly one
/// F_TRANSLATION, for its own StreamID, through DMA_FAULTS.
fn dma_outside_ram_blocked_and_attributed_to_its_vm() -> TestResult {
    let smmu = up()?;
    let vms = run_vms(&smmu, 2, phase::DMA_OUTSIDE)?;
    for vm in &vms {
        clean_run(vm)?;
        scenario("DMA outside", guests::dma_outside(vm))?;
        check_eq!(vm.log.dma_faults.len(), 1);
        let f = &vm.log.dma_faults[0];
        check_eq!(f.sid, vm.sid);
        check_eq!(f.kind, EventType::FTranslation);
        check_eq!(f.addr_range.map(|r| r.0), Some(guest::UNMAPPED_DMA_IPA));
        // The guest got the same answer: DMA_FAULTS returned (1, IPA, 0x10).
        let answer = vm.log.hvcs.iter().find(|h| h.fid == hvc::DMA_FAULTS);
        check_eq!(answer.map(|h| h.ret), Some(1));
    }
    check!(vms[0].sid != vms[1].sid);
    guests::destroy_all(&smmu, vms);
    Ok(())
}

/// Loads and stores outside the stage 2 are stage-2 data aborts taken to
/// EL2; the IPA decoded from HPFAR_EL2 and FAR_EL2 is the address the guest
/// used, the syndrome names the register, the load gets POISON, the guest
/// resumes after each (it reaches DONE).
fn cpu_stage2_abort_decoded_and_guest_resumes() -> TestResult {
    let smmu = up()?;
    let vms = run_vms(&smmu, 1, phase::CPU_ABORT)?;
    let vm = &vms[0];
    clean_run(vm)?;
    scenario("CPU aborts", guests::cpu_aborts(vm))?;
    let a = &vm.log.aborts;
    check_eq!(a.len(), 3);
    let ipa = guest::UNMAPPED_CPU_IPA;
    let got: Vec<(u64, bool)> = a.iter().map(|x| (x.ipa, x.write())).collect();
    check_eq!(got, [(ipa, false), (ipa + 8, true), (CODE_IPA, true)]);
    for x in a {
        // HPFAR_EL2.FIPA holds IPA[47:12] at bits [43:4].
        check_eq!(x.hpfar, (x.ipa >> 12) << 4);
        check_eq!(x.far, x.ipa);
        check!(x.isv());
        // Every abort happened inside the guest's own code page.
        check!(
            (CODE_IPA..CODE_IPA + 4096).contains(&x.elr),
            "ELR {:#x}",
            x.elr
        );
    }
    check_eq!(a[0].srt(), 9);
    check_eq!(a[1].srt(), 23);
    check_eq!(a[0].dfsc() >> 2, 0b0001);
    check_eq!(a[2].dfsc() >> 2, 0b0011);
    check!(a[0].elr < a[1].elr && a[1].elr < a[2].elr);
    check!(vm.code_intact());
    guests::destroy_all(&smmu, vms);
    Ok(())
}

/// Two VMs run at the same time on CPU 0 and CPU 1: their busy loops,
/// timed by the guests themselves, overlap.
fn two_vms_run_at_once_on_two_cpus() -> TestResult {
    let smmu = up()?;
    let vms = run_vms(&smmu, 2, phase::INFO | phase::SPIN)?;
    for vm in &vms {
        clean_run(vm)?;
        scenario("EL1 and CPU", guests::ran_at_el1(vm))?;
    }
    check_eq!(vms[0].log.cpu, Some(0));
    check_eq!(vms[1].log.cpu, Some(1));
    scenario("concurrent", guests::concurrent(&vms[0], &vms[1]))?;
    guests::destroy_all(&smmu, vms);
    Ok(())
}

/// Two VMs with the same IPAs over different physical pages: each one's
/// pattern is in its own RAM, and each one's CPU and DMA probes of the
/// other's physical RAM address fault and leave the other's RAM untouched.
fn two_vms_same_ipa_no_crossing() -> TestResult {
    let smmu = up()?;
    let vms = run_vms(&smmu, 2, phase::DMA | phase::FOREIGN)?;
    let (a, b) = (&vms[0], &vms[1]);
    for (i, vm) in vms.iter().enumerate() {
        clean_run(vm)?;
        scenario("round trip", guests::dma_roundtrip(vm, guests::seed(i)))?;
    }
    check!(guests::seed(0) != guests::seed(1));
    scenario("a -> b", guests::no_crossing(&smmu, a, b))?;
    scenario("b -> a", guests::no_crossing(&smmu, b, a))?;
    guests::destroy_all(&smmu, vms);
    Ok(())
}

/// Bad hypercalls (unknown IDs, a non-zero immediate, PSCI, SMC, bad IPAs,
/// bad lengths, bad REPORT arguments) get their typed error in x0, and
/// nothing changes: the stage-2 tables are identical word for word, the
/// RAM holds only the guest's own probe, no REPORT was recorded for them.
fn bad_hypercalls_typed_errors_nothing_changes() -> TestResult {
    let smmu = up()?;
    let edus = edus_at_least(1)?;
    let mut vms = try_ok!(guests::create_all(&smmu, &edus[..1], phase::BAD_HVC));
    let before = try_ok!(smmu.stage2_snapshot(vms[0].domain));
    try_ok!(guests::run_all(&smmu, &mut vms));
    let vm = &vms[0];
    clean_run(vm)?;
    check_eq!(try_ok!(smmu.stage2_snapshot(vm.domain)), before);
    scenario("bad HVCs", guests::bad_hypercalls(vm))?;
    let answers: Vec<u64> = vm
        .log
        .hvcs
        .iter()
        .filter(|h| h.fid != hvc::REPORT || h.ret != 0)
        .filter(|h| h.fid != hvc::LAST_ABORT && h.fid != hvc::DONE)
        .map(|h| h.ret)
        .collect();
    let (u, i, l, a) = (
        hvc::UNKNOWN_CALL,
        hvc::BAD_IPA,
        hvc::BAD_LENGTH,
        hvc::BAD_ARGUMENT,
    );
    check_eq!(answers, [u, u, u, u, i, i, i, i, i, l, l, l, l, a, a, a]);
    // The trapped SMC was answered without reaching firmware.
    check!(vm.log.hvcs.iter().any(|h| h.imm == u32::MAX && h.ret == u));
    // Exactly the five summary REPORTs, all passing.
    check_eq!(vm.log.reports.len(), 5);
    check!(vm.log.released.is_empty() && vm.log.cpu_tlbis.is_empty());
    check!(vm.log.aborts.is_empty(), "{:x?}", vm.log.aborts);
    let skip = [
        BALLOON_PAGE_IPA - RAM_IPA..BALLOON_PAGE_IPA - RAM_IPA + 8,
        guest::offsets::STACK_LOW..RAM_SIZE,
    ];
    check!(vm.first_unfilled(&skip).is_none(), "RAM changed");
    harness::bad_input_rejected(
        "guest hypercalls: 16 bad requests, typed errors, tables unchanged",
    );
    guests::destroy_all(&smmu, vms);
    Ok(())
}

/// RELEASE of one page in the middle of a 2 MiB block while the guest
/// runs: the block becomes 4K pages, the page is gone for the CPU (abort)
/// and the device (F_TRANSLATION), the neighbours still work, and the CPU
/// TLB hook ran for the page (only for the page: with FEAT_BBM level 2 on
/// CPU and SMMU, as on QEMU, the split takes one store).
fn balloon_splits_block_cpu_and_dma_fault() -> TestResult {
    let smmu = up()?;
    let edus = edus_at_least(1)?;
    let mut vms = try_ok!(guests::create_all(&smmu, &edus[..1], phase::BALLOON));
    let block = try_ok!(smmu.translate(vms[0].domain, BALLOON_PAGE_IPA));
    check_eq!(block.map(|t| t.size), Some(2 << 20));
    try_ok!(guests::run_all(&smmu, &mut vms));
    let vm = &vms[0];
    clean_run(vm)?;
    let one_store = image::vm::cpu_bbm_level() >= 2 && smmu.features().bbml >= 2;
    check_eq!(vm.split_in_one_store, one_store);
    scenario("balloon", guests::balloon(&smmu, vm, guests::seed(0)))?;
    // The other 2 MiB block is untouched.
    check_eq!(
        try_ok!(smmu.translate(vm.domain, RAM_IPA)).map(|t| t.size),
        Some(2 << 20)
    );
    let release = vm.log.hvcs.iter().find(|h| h.fid == hvc::RELEASE);
    check_eq!(
        release.map(|h| (h.args[0], h.args[1], h.ret)),
        Some((BALLOON_PAGE_IPA, 4096, 0))
    );
    guests::destroy_all(&smmu, vms);
    Ok(())
}

/// Every phase on every isolation group's VM, in pairs on two CPUs, with
/// the table models and VMID policies `make run` gives them: the `make
/// run` checks.
fn every_phase_on_every_edu() -> TestResult {
    let smmu = up()?;
    let edus = edus_at_least(2)?;
    let groups = try_ok!(guests::vm_groups(&smmu, &edus));
    let specs = groups
        .iter()
        .enumerate()
        .map(|(i, (members, sids))| {
            let mut spec = guests::group_spec(i, members, sids, phase::ALL);
            guests::demo_models(i, &mut spec);
            spec
        })
        .collect();
    let vms = run_specs(&smmu, specs)?;
    check!(vms.iter().any(|v| v.tables == TableModel::HypervisorOwned));
    check!(
        vms.iter()
            .any(|v| v.tables == TableModel::DriverOwned && !v.split_in_one_store)
    );
    check!(vms.iter().any(|v| v.vmid_policy == VmidPolicy::Private));
    check!(vms.iter().any(|v| v.vmid_policy == VmidPolicy::Cpu));
    for (i, vm) in vms.iter().enumerate() {
        clean_run(vm)?;
        scenario("identity", guests::identity(&smmu, vm))?;
        scenario("DMA", guests::dma_roundtrip(vm, guests::seed(i)))?;
        scenario("DMA outside", guests::dma_outside(vm))?;
        scenario("CPU aborts", guests::cpu_aborts(vm))?;
        scenario("bad HVCs", guests::bad_hypercalls(vm))?;
        scenario("balloon", guests::balloon(&smmu, vm, guests::seed(i)))?;
    }
    for pair in vms.chunks(2) {
        if let [a, b] = pair {
            scenario("concurrent", guests::concurrent(a, b))?;
            scenario("no crossing", guests::no_crossing(&smmu, a, b))?;
        }
    }
    guests::destroy_all(&smmu, vms);
    Ok(())
}

/// The second ownership model with a real guest: the hypervisor builds the
/// VM's tables with aarch64-paging's stage-2 regime (code RX, BAR
/// Device-nGnRE XN, RAM RW XN in 4K pages); VTTBR_EL2 and the STE point at
/// that root. The guest's DMA goes both ways through them, its CPU aborts
/// outside them, and RELEASE unmaps in those tables, invalidates the CPU,
/// then calls `Smmu::invalidate`: the page faults for CPU and DMA, its
/// neighbours still work. The driver refuses to edit these tables.
fn hypervisor_owned_tables_guest_dma_abort_balloon() -> TestResult {
    let smmu = up()?;
    let edus = edus_at_least(1)?;
    let mut spec = guests::spec(
        0,
        &edus[0],
        phase::INFO | phase::DMA | phase::CPU_ABORT | phase::BALLOON,
    );
    spec.tables = TableModel::HypervisorOwned;
    let vms = run_specs(&smmu, alloc::vec![spec])?;
    let vm = &vms[0];
    clean_run(vm)?;
    check_eq!(vm.tables, TableModel::HypervisorOwned);
    scenario("identity", guests::identity(&smmu, vm))?;
    let info = try_ok!(smmu.domain_info(vm.domain));
    check!(info.external);
    check_eq!(Some(info.root), vm.hv_root());
    check_eq!(
        vm.log.vttbr.map(|v| v & 0x0000_ffff_ffff_fffe),
        vm.hv_root()
    );
    check_eq!(try_ok!(smmu.ste(vm.sid)).s2ttb(), info.root);
    check_eq!(vm.log.vtcr, Some(image::hvtables::HvStage2::vtcr()));
    // The driver neither reads nor edits the hypervisor's tables.
    check_eq!(
        smmu.translate(vm.domain, RAM_IPA),
        Err(smmuv3::Error::ExternalTables(vm.domain))
    );
    check_eq!(
        smmu.unmap(vm.domain, RAM_IPA, 4096),
        Err(smmuv3::Error::ExternalTables(vm.domain))
    );
    scenario("round trip", guests::dma_roundtrip(vm, guests::seed(0)))?;
    scenario("CPU aborts", guests::cpu_aborts(vm))?;
    scenario("balloon", guests::balloon(&smmu, vm, guests::seed(0)))?;
    // One CPU invalidation by the CPU's VMID, then one SMMU invalidation,
    // both for exactly the page.
    check_eq!(vm.log.cpu_tlbis, [(BALLOON_PAGE_IPA, 4096)]);
    check_eq!(vm.log.cpu_tlbi_vmids, [(vm.vmid, None)]);
    check_eq!(vm.log.smmu_invalidations, [(BALLOON_PAGE_IPA, 4096)]);
    check_eq!(vm.translate(&smmu, BALLOON_PAGE_IPA), None);
    check!(
        vm.first_unfilled(&guests::written_by_guest()).is_none(),
        "RAM changed outside the guest's pages"
    );
    guests::destroy_all(&smmu, vms);
    check_eq!(smmu.vmids_in_use(), 0);
    Ok(())
}

/// The break-before-make split on target: a VM whose domain was created
/// with `cpu_bbml2: false` releases a page from a 2 MiB block. The CPU hook
/// runs twice, for the whole block (made invalid, the SMMU invalidated)
/// and then for the page; afterwards the neighbours work for CPU and DMA,
/// the page faults for both, the other block is untouched.
fn balloon_break_before_make_with_a_guest() -> TestResult {
    let smmu = up()?;
    let edus = edus_at_least(1)?;
    let mut spec = guests::spec(0, &edus[0], phase::BALLOON);
    spec.cpu_bbml2 = false;
    let vms = run_specs(&smmu, alloc::vec![spec])?;
    let vm = &vms[0];
    clean_run(vm)?;
    check!(!vm.split_in_one_store);
    scenario("balloon", guests::balloon(&smmu, vm, guests::seed(0)))?;
    let block = BALLOON_PAGE_IPA & !((2 << 20) - 1);
    check_eq!(
        vm.log.cpu_tlbis,
        [(block, 2 << 20), (BALLOON_PAGE_IPA, 4096)]
    );
    check_eq!(
        try_ok!(smmu.translate(vm.domain, RAM_IPA)).map(|t| t.size),
        Some(2 << 20)
    );
    // Every other page of the split block still maps its own PA.
    for off in [0u64, 0x1000, 0xff000, 0x101000, 0x1ff000] {
        let ipa = block + off;
        let t = try_ok!(smmu.translate(vm.domain, ipa));
        check_eq!(
            t.map(|t| (t.pa, t.size)),
            Some((vm.ram_pa() + (ipa - RAM_IPA), 4096))
        );
    }
    guests::destroy_all(&smmu, vms);
    Ok(())
}

/// The private VMID policy: the SMMU allocates the STE's VMID, the CPU
/// keeps its own in VTTBR_EL2; the two differ, and the driver's CPU hook
/// (handed the SMMU's VMID) invalidates by the CPU's. A second VM with the
/// shared policy runs at the same time on CPU 1.
fn private_smmu_vmid_cpu_tlbi_by_cpu_vmid() -> TestResult {
    let smmu = up()?;
    let edus = edus_at_least(2)?;
    let phases = phase::INFO | phase::BALLOON;
    let mut a = guests::spec(0, &edus[0], phases);
    a.vmid_policy = VmidPolicy::Private;
    let b = guests::spec(1, &edus[1], phases);
    let vms = run_specs(&smmu, alloc::vec![a, b])?;
    for (i, vm) in vms.iter().enumerate() {
        clean_run(vm)?;
        scenario("identity", guests::identity(&smmu, vm))?;
        scenario("balloon", guests::balloon(&smmu, vm, guests::seed(i)))?;
        check_eq!(try_ok!(smmu.ste(vm.sid)).vmid(), vm.smmu_vmid);
        check_eq!(vm.log.vttbr.map(|v| (v >> 48) as u16), Some(vm.vmid));
    }
    let (a, b) = (&vms[0], &vms[1]);
    check!(
        a.smmu_vmid != a.vmid,
        "private SMMU VMID {:#x}",
        a.smmu_vmid
    );
    check_eq!(b.smmu_vmid, b.vmid);
    check!(a.smmu_vmid != b.smmu_vmid);
    check!(!a.log.cpu_tlbi_vmids.is_empty());
    for &(cpu, hook) in &a.log.cpu_tlbi_vmids {
        check_eq!((cpu, hook), (a.vmid, Some(a.smmu_vmid)));
    }
    guests::destroy_all(&smmu, vms);
    Ok(())
}

/// One VM for a group of two devices (here two edus with their own
/// StreamIDs, declared as one isolation group, as a group behind a
/// PCIe-to-PCI bridge would be): both BARs mapped Device XN at their own
/// IPAs, both StreamIDs attached at once (`attach_group`; neither moves
/// alone), the guest drives each device (DMA both ways with its own
/// pattern, DMA outside RAM at its own address), and each fault is
/// attributed to the VM by StreamID, and so to the device.
fn one_vm_for_a_group_of_two_devices() -> TestResult {
    let smmu = up()?;
    let edus = edus_at_least(2)?;
    let pair = [edus[0], edus[1]];
    let sids: Vec<u32> = pair.iter().filter_map(|e| e.stream_id).collect();
    check_eq!(sids.len(), 2);
    let group = try_ok!(smmu.declare_group(&sids));
    let spec = guests::group_spec(
        0,
        &pair,
        &sids,
        phase::INFO | phase::DMA | phase::DMA_OUTSIDE,
    );
    let vms = run_specs(&smmu, alloc::vec![spec])?;
    let vm = &vms[0];
    clean_run(vm)?;
    scenario("identity", guests::identity(&smmu, vm))?;
    scenario("round trip", guests::dma_roundtrip(vm, guests::seed(0)))?;
    scenario("DMA outside", guests::dma_outside(vm))?;
    for (i, e) in pair.iter().enumerate() {
        check_eq!(smmu.domain_of(sids[i]), Some(vm.domain));
        check_eq!(
            vm.translate(&smmu, guest::bar_ipa(i)).map(|t| t.pa),
            Some(e.bar0 as u64)
        );
        // Exactly one fault per device, under its StreamID, at its address.
        let ipa = guest::UNMAPPED_DMA_IPA + i as u64 * 4096;
        let mine: Vec<_> = vm
            .log
            .dma_faults
            .iter()
            .filter(|f| f.sid == sids[i])
            .collect();
        check_eq!(mine.len(), 1);
        check_eq!(mine[0].addr_range.map(|r| r.0), Some(ipa));
        // Each device's report is its own.
        check!(
            vm.log
                .report_for(hvc::check::DMA_ROUNDTRIP, i as u64)
                .is_some()
        );
    }
    check_eq!(vm.log.dma_faults.len(), 2);
    check!(
        vm.first_unfilled(&guests::written_by_guest_of(2)).is_none(),
        "RAM changed outside the two devices' patterns"
    );
    // A member cannot leave alone.
    check_eq!(
        smmu.detach(sids[1]),
        Err(smmuv3::Error::SidInGroup {
            sid: sids[1],
            group
        })
    );
    guests::destroy_all(&smmu, vms);
    check_eq!(smmu.domain_of(sids[0]), None);
    check_eq!(smmu.domain_of(sids[1]), None);
    try_ok!(smmu.remove_group(group));
    Ok(())
}
