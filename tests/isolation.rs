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
use smmuv3::expert::{self, Command, InvalidationPlan};
use smmuv3::expert::{IdAllocator, IdKind};
use smmuv3::fault::FaultSummary;
use smmuv3::smmu::Config;
use smmuv3::stage2::{Granule, Perm, Stage2Config};
use smmuv3::{Dma, Error, Invalid};

// The tests, by topic (tests/isolation/).
#[path = "isolation/blocks.rs"]
mod blocks;
#[path = "isolation/cpu_stage2.rs"]
mod cpu_stage2;
#[path = "isolation/domains.rs"]
mod domains;
#[path = "isolation/errors.rs"]
mod errors;
#[path = "isolation/invalidation.rs"]
mod invalidation;
#[path = "isolation/scenarios.rs"]
mod scenarios;

use blocks::*;
use cpu_stage2::*;
use domains::*;
use errors::*;
use invalidation::*;
use scenarios::*;

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

/// The commands the driver should issue to invalidate `[ipa, ipa + len)`.
fn planned(smmu: &Driver, vmid: u16, ipa: u64, len: u64) -> InvalidationPlan {
    expert::s2_invalidation(vmid, ipa, len, 12, smmu.features().ril, MAX_RANGE_COMMANDS)
}

// 2 MiB blocks (tests/isolation/blocks.rs; also mapped by the invalidation
// and error tests).
const BLOCK: u64 = 2 << 20;
/// A 2 MiB aligned IPA, below 256 MiB.
const IPA_BLOCK: u64 = 0x0800_0000;
