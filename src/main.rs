//! The EL2 image (`make run` / `cargo run --release`): boots on QEMU `virt`,
//! lists the PCI functions it configured, brings the SMMU up with every
//! stream aborted by default, and proves with real `edu` DMA that a device
//! passed through to a VM reaches exactly that VM's memory; then runs one
//! EL1 guest per isolation group of devices (two at once, on CPU 0 and
//! CPU 1) whose stage 2 its CPU and its devices share (driver-owned or
//! hypervisor-owned tables), and checks what the guests did. Prints a
//! results table and exits non-zero if any line failed.

#![no_std]
#![no_main]

extern crate alloc;

mod image;

use alloc::vec::Vec;

use image::console::println;
use image::demo::{self, Report, Vm, name};
use image::edu::{self, Edu};
use image::pci::{self, PciFunction};
use smmuv3::smmu::Config;

fn main() -> ! {
    let boot = image::init();
    image::print_pci_functions(&boot.pci);
    match image::fwcfg::check_iort(&boot.platform, &boot.pci) {
        Ok(check) => {
            println!("{check}");
            let names: Vec<&str> = check.files.iter().map(|f| f.name.as_str()).collect();
            println!("      fw_cfg files: {}", names.join(" "));
        }
        Err(e) => println!("IORT  not read: {e}"),
    }
    if cfg!(feature = "bench") {
        let ok = image::bench::run(&boot.pci);
        image::exit(if ok { 0 } else { 1 });
    }
    let edus = edu::find_all(&boot.pci);
    let failures = run_demo(&edus, &boot.pci);
    image::exit(if failures == 0 { 0 } else { 1 })
}

/// Everything `make run` shows; returns the number of failed checks.
fn run_demo(edus: &[Edu], functions: &[PciFunction]) -> usize {
    let smmu = match image::iommu::new_smmu(Config::default()) {
        Ok(s) => s,
        Err(e) => {
            println!("SMMU: cannot drive it: {e}");
            return 1;
        }
    };
    println!("SMMU features:\n{}", smmu.features());
    if let Err(e) = smmu.enable() {
        println!("SMMU: enable failed: {e}");
        return 1;
    }
    println!(
        "SMMU enabled: {} stream table for {} StreamIDs ({} bytes), every stream aborted by default",
        match smmu.stream_table_format() {
            smmuv3::expert::Format::Linear => "Linear",
            smmuv3::expert::Format::TwoLevel => "TwoLevel",
        },
        smmu.sid_limit(),
        smmu.stream_table_bytes()
    );
    let irqs = match image::iommu::use_interrupts(&smmu) {
        Ok(Some(guard)) => {
            println!(
                "SMMU interrupts: INTIDs [{}] (eventq, gerror) via GICv{}, serviced by the driver",
                image::console::join(&guard.intids),
                image::gic::version().unwrap_or(0)
            );
            Some(guard)
        }
        Ok(None) => {
            println!("SMMU interrupts: none in the DTB; polling");
            None
        }
        Err(e) => {
            println!("SMMU interrupts: GIC unavailable ({e}); polling Smmu::service");
            None
        }
    };

    let mut report = Report::default();
    match edus {
        [] => report.add("-", "at least one edu device", Err("no edu found".into())),
        [only] => report.add(
            &name(only),
            "no STE: DMA blocked (default deny)",
            demo::default_deny(&smmu, only),
        ),
        [first, second, ..] => {
            report.add(
                &name(first),
                "no STE: DMA blocked (default deny)",
                demo::default_deny(&smmu, first),
            );
            report.add(
                &name(second),
                "bypass STE: DMA reaches physical memory",
                demo::bypass(&smmu, second),
            );
        }
    }

    let stage = match smmu.domain_stage(smmuv3::domain::StagePolicy::Auto) {
        Ok(smmuv3::domain::Stage::Stage1) => "Stage-1",
        _ => "Stage-2",
    };
    println!(
        "{stage} isolation: one VM domain per isolation group with edu devices, IPA window at {:#x}",
        demo::WINDOW
    );
    let mut vms: Vec<Vm> = Vec::new();
    for (group, members) in edu_groups(edus, functions) {
        let seed = 0x10 + 0x40 * vms.len() as u8;
        let names = members.iter().map(name).collect::<Vec<_>>().join("+");
        // Tell the driver the group, so no member can move alone.
        if let Err(e) = smmu.declare_group(&group.sids) {
            report.add(
                &names,
                "declare isolation group",
                Err(alloc::format!("{e}")),
            );
            continue;
        }
        match demo::create_group_vm(&smmu, &members, &group.sids, seed) {
            Ok(vm) => {
                let info = smmu.domain_info(vm.domain);
                let sids = vm
                    .sids
                    .iter()
                    .map(|s| alloc::format!("{s:#06x}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                println!(
                    "  VM {} <- group {} ({names}) StreamIDs {sids} (DMA arrives as {:#06x}): VMID {}, data PA {:#x}, source PA {:#x}",
                    vm.domain,
                    group.id,
                    vm.sid,
                    info.map_or(0, |i| i.vmid),
                    vm.data.pa(),
                    vm.source.pa()
                );
                vms.push(vm);
            }
            Err(e) => report.add(&names, "create VM domain and attach", Err(e)),
        }
    }
    for vm in &vms {
        for edu in &vm.edus {
            let n = name(edu);
            report.add(
                &n,
                "DMA write lands at the mapped PA",
                demo::write_lands(&smmu, edu, vm),
            );
            report.add(
                &n,
                "DMA read gets the right bytes",
                demo::read_right_bytes(&smmu, edu, vm),
            );
            report.add(
                &n,
                "DMA to unmapped IPA: blocked, F_TRANSLATION",
                demo::unmapped_blocked(&smmu, edus, edu, vm),
            );
            report.add(
                &n,
                "DMA write to read-only IPA: F_PERMISSION",
                demo::readonly_blocked(&smmu, edus, edu, vm),
            );
            report.add(
                &n,
                "unmap + invalidate: old IPA faults",
                demo::unmap_invalidates(&smmu, edus, edu, vm),
            );
        }
        if let [a, b, ..] = vm.edus.as_slice() {
            let n = alloc::format!("{}+{}", a.bdf, b.bdf);
            report.add(
                &n,
                "one group, one VM: B reads what A wrote",
                demo::group_shares_domain(&smmu, a, b, vm),
            );
            report.add(
                &n,
                "group member alone: attach/detach refused",
                demo::group_member_cannot_move_alone(&smmu, vm),
            );
        }
    }
    for pair in vms.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let (Some(ea), Some(eb)) = (a.edus.first(), b.edus.first()) else {
            continue;
        };
        report.add(
            &alloc::format!("{}+{}", ea.bdf, eb.bdf),
            "two VMs, same IPA, different PAs, no crossing",
            demo::two_vms_same_ipa(&smmu, edus, (ea, a), (eb, b)),
        );
    }
    report.add(
        "-",
        "command error: recovered, queue resumes",
        demo::command_error_recovery(&smmu),
    );
    if let Some((edu, vm)) = vms.first().and_then(|vm| Some((vm.edus.first()?, vm))) {
        report.add(
            &name(edu),
            "event storm: overflow detected, reporting resumes",
            demo::event_storm(&smmu, edus, edu, vm),
        );
    }
    for vm in &vms {
        for edu in &vm.edus {
            report.add(
                &name(edu),
                "after detach: DMA blocked",
                demo::detach_blocks(&smmu, edu, vm),
            );
        }
        if let Err(e) = smmu.destroy_domain(vm.domain) {
            report.add(
                &alloc::format!("VM {}", vm.domain),
                "destroy domain",
                Err(alloc::format!("{e}")),
            );
        }
    }
    // The same devices, now passed through to EL1 guests that drive them.
    image::guests::demo(&smmu, edus, &mut report);
    report.print("DMA isolation results:");
    let s = smmu.stats();
    println!(
        "SMMU stats: {} commands, {} CMD_SYNCs, {} CMDQ_PROD writes, {} MMIO writes, {} event records, {} interrupts",
        s.cmdq.commands,
        s.cmdq.syncs,
        s.cmdq.prod_writes,
        s.mmio_writes,
        s.events,
        image::iommu::interrupts_taken()
    );
    drop(irqs);
    report.failures()
}

/// The isolation groups that contain edu devices, in enumeration order,
/// each with its edus.
fn edu_groups(
    edus: &[Edu],
    functions: &[PciFunction],
) -> Vec<(smmuv3::topology::Group<usize>, Vec<Edu>)> {
    let groups = pci::isolation_groups(functions);
    groups
        .groups()
        .iter()
        .filter_map(|g| {
            let members: Vec<Edu> = edus
                .iter()
                .filter(|e| e.group == Some(g.id))
                .copied()
                .collect();
            (!members.is_empty()).then(|| (g.clone(), members))
        })
        .collect()
}
