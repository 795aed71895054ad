//! On-target tests of the image's EL1 guests: VMs whose stage 2 is their
//! SMMU domain's tables, driving their own `edu` through IPAs they own.
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
use image::edu::{self, Edu};
use image::guest::{self, BALLOON_PAGE_IPA, CODE_IPA, RAM_IPA, RAM_SIZE, phase};
use image::guests;
use image::harness::{self, Failure, TestResult, check, check_eq, tests, try_ok};
use image::hvc;
use image::vm::{Stop, Vm};
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
        ],
    )
}

// ---------------------------------------------------------------------------
// Helpers.

#[track_caller]
fn edus_at_least(min: usize) -> Result<Vec<Edu>, Failure> {
    let e = edu::find_all(&image::boot().pci);
    if e.len() < min {
        let mut f = Failure::new(format!("at least {min} edu device(s)"));
        f.actual = Some(format!("{} found", e.len()));
        return Err(f);
    }
    Ok(e)
}

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
/// TLB hook ran for the page.
fn balloon_splits_block_cpu_and_dma_fault() -> TestResult {
    let smmu = up()?;
    let edus = edus_at_least(1)?;
    let mut vms = try_ok!(guests::create_all(&smmu, &edus[..1], phase::BALLOON));
    let block = try_ok!(smmu.translate(vms[0].domain, BALLOON_PAGE_IPA));
    check_eq!(block.map(|t| t.size), Some(2 << 20));
    try_ok!(guests::run_all(&smmu, &mut vms));
    let vm = &vms[0];
    clean_run(vm)?;
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

/// Every phase on every edu, in pairs on two CPUs: the `make run` checks.
fn every_phase_on_every_edu() -> TestResult {
    let smmu = up()?;
    let n = edus_at_least(2)?.len();
    let vms = run_vms(&smmu, n, phase::ALL)?;
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
