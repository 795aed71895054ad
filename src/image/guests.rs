//! The VM scenarios `make run` prints and `tests/guests.rs` checks: one
//! EL1 guest per isolation group of `edu`s (a group behind a PCIe-to-PCI
//! bridge gets one VM with all its devices), two at a time on CPU 0 and
//! CPU 1, each judged by
//! what its guest reported over HVC *and* by what the hypervisor can see
//! for itself: bytes in the VMs' physical memory, SMMU events attributed by
//! StreamID, stage-2 aborts with their decoded syndrome, the tables, and
//! VTTBR_EL2 read back while the VM was loaded against the STE.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use smmuv3::event::EventType;

use super::console::println;
use super::demo::{Driver, Report};
use super::edu::Edu;
use super::guest::{self, BALLOON_PAGE_IPA, CODE_IPA, RAM_IPA, RAM_SIZE, offsets, phase};
use super::hvc::{self, check};
use super::vm::{Stop, TableModel, Vm, VmSpec, VmidPolicy};
use super::{cpu, smp};
use smmuv3::domain::Stage;

mod checks;
pub use checks::*;

/// Bound on a VM's run on CPU 1.
pub const CPU1_TIMEOUT_NS: u64 = 60_000_000_000;

/// The first word of VM `i`'s data pattern.
pub fn seed(i: usize) -> u64 {
    0x5EED_0000_0000_0000 | (i as u64 + 1) << 40
}

/// The spec of VM `i` for the group `edus` (StreamIDs `sids`): CPU VMID
/// 0x11 + i shared with the SMMU, driver-owned tables split in one store
/// where the CPU allows, its own seed and fill.
pub fn group_spec(i: usize, edus: &[Edu], sids: &[u32], phases: u64) -> VmSpec {
    VmSpec {
        name: String::from(["a", "b", "c", "d", "e", "f", "g", "h"][i % 8]),
        edus: edus.to_vec(),
        sids: sids.to_vec(),
        vmid: 0x11 + i as u16,
        vmid_policy: VmidPolicy::Cpu,
        tables: TableModel::DriverOwned,
        cpu_bbml2: true,
        seed: seed(i),
        fill: 0xA0 + i as u8,
        phases,
        foreign: guest::UNMAPPED_CPU_IPA + 0x10_0000,
    }
}

/// The spec of VM `i` for `edu` alone (see [`group_spec`]).
pub fn spec(i: usize, edu: &Edu, phases: u64) -> VmSpec {
    group_spec(
        i,
        core::slice::from_ref(edu),
        edu.stream_id.as_slice(),
        phases,
    )
}

/// One VM's devices (an isolation group's edus) and every StreamID of the
/// group.
pub type VmGroup = (Vec<Edu>, Vec<u32>);

/// The isolation groups of `edus`, in enumeration order: each group's
/// edus and every StreamID of the group (from `pci::isolation_groups`).
/// Groups of several StreamIDs are declared with the driver (if they are
/// not yet), so no member can be attached alone.
pub fn vm_groups(smmu: &Driver, edus: &[Edu]) -> Result<Vec<VmGroup>, String> {
    let groups = super::pci::isolation_groups(&super::boot().pci);
    let mut out: Vec<VmGroup> = Vec::new();
    for e in edus {
        if out.iter().any(|(m, _)| m.iter().any(|o| o.bdf == e.bdf)) {
            continue;
        }
        let g = e
            .group
            .and_then(|g| groups.groups().iter().find(|x| x.id == g));
        let (members, sids): (Vec<Edu>, Vec<u32>) = match g {
            Some(g) => (
                edus.iter()
                    .filter(|o| o.group == e.group)
                    .copied()
                    .collect(),
                g.sids.clone(),
            ),
            None => (alloc::vec![*e], e.stream_id.into_iter().collect()),
        };
        if sids.len() > 1 {
            let declared = sids.iter().map(|&s| smmu.group_of(s)).collect::<Vec<_>>();
            match declared.first().copied().flatten() {
                Some(d) if declared.iter().all(|&x| x == Some(d)) => {}
                _ => {
                    smmu.declare_group(&sids).map_err(|err| {
                        format!("declare_group {}: {err}", super::console::hex(&sids))
                    })?;
                }
            }
        }
        out.push((members, sids));
    }
    Ok(out)
}

/// Creates one VM per `edu` (each alone; see [`create_specs`]).
pub fn create_all(smmu: &Driver, edus: &[Edu], phases: u64) -> Result<Vec<Vm>, String> {
    let specs = edus
        .iter()
        .enumerate()
        .map(|(i, e)| spec(i, e, phases))
        .collect();
    create_specs(smmu, specs)
}

/// Creates a VM per spec. VMs run in pairs (see [`run_all`]); each one's
/// "foreign" address is the physical address of its partner's RAM (an
/// unpaired last VM: VM 0's).
pub fn create_specs(smmu: &Driver, specs: Vec<VmSpec>) -> Result<Vec<Vm>, String> {
    let mut vms: Vec<Vm> = Vec::new();
    for spec in &specs {
        match Vm::create(smmu, spec) {
            Ok(vm) => vms.push(vm),
            Err(e) => {
                destroy_all(smmu, vms);
                let names: Vec<String> = spec.edus.iter().map(|e| format!("{}", e.bdf)).collect();
                return Err(format!("VM for {}: {e}", names.join("+")));
            }
        }
    }
    let pas: Vec<u64> = vms.iter().map(|v| v.ram_pa()).collect();
    if pas.len() > 1 {
        for (i, vm) in vms.iter_mut().enumerate() {
            let partner = i ^ 1;
            vm.set_foreign(pas[if partner < pas.len() { partner } else { 0 }]);
        }
    }
    Ok(vms)
}

/// Destroys every VM (reporting failures).
pub fn destroy_all(smmu: &Driver, vms: Vec<Vm>) {
    for vm in vms {
        if let Err(e) = vm.destroy(smmu) {
            println!("  {e}");
        }
    }
}

struct Cpu1Job {
    smmu: *const Driver,
    vm: *mut Vm,
}

fn cpu1_job(arg: usize) {
    // SAFETY: `run_all` passes a `Cpu1Job` that lives until this job has
    // finished (it waits for it), and touches neither the driver's
    // exclusive parts nor this VM meanwhile; the driver is Sync.
    let job = unsafe { &*(arg as *const Cpu1Job) };
    // SAFETY: as above: the VM is used by this CPU alone until the job ends.
    let (smmu, vm) = unsafe { (&*job.smmu, &mut *job.vm) };
    vm.run(smmu);
}

/// Runs every VM: two at a time, the second of each pair on CPU 1 while
/// the first runs on CPU 0 (alone on CPU 0 if CPU 1 cannot be used).
pub fn run_all(smmu: &Driver, vms: &mut [Vm]) -> Result<(), String> {
    for pair in vms.chunks_mut(2) {
        match pair {
            [a, b] => {
                let job = Cpu1Job { smmu, vm: b };
                match smp::run_on_cpu1_with(cpu1_job, &job as *const Cpu1Job as usize) {
                    Ok(handle) => {
                        a.run(smmu);
                        if handle.wait(CPU1_TIMEOUT_NS).is_err() {
                            // CPU 1 still uses `b`: it must not be freed.
                            println!("guests: VM {} on CPU 1 did not stop in time", b.name);
                            super::exit(1);
                        }
                    }
                    Err(e) => {
                        println!("guests: CPU 1 unavailable ({e}); VMs run one after another");
                        a.run(smmu);
                        b.run(smmu);
                    }
                }
            }
            [a] => {
                a.run(smmu);
            }
            _ => {}
        }
    }
    Ok(())
}

/// The RAM ranges the guest program of a VM with one device writes (all
/// else keeps the fill).
pub fn written_by_guest() -> Vec<Range<u64>> {
    written_by_guest_of(1)
}

/// The RAM ranges the guest program of a VM with `devices` devices writes.
pub fn written_by_guest_of(devices: usize) -> Vec<Range<u64>> {
    let n = offsets::PATTERN_BYTES;
    let per = (devices.max(1) as u64 - 1) * guest::DEVICE_BYTES + n;
    let balloon = BALLOON_PAGE_IPA - RAM_IPA;
    alloc::vec![
        offsets::SRC..offsets::SRC + per,
        offsets::DST..offsets::DST + per,
        offsets::BALLOON_BELOW..offsets::BALLOON_BELOW + n,
        offsets::BALLOON_ABOVE..offsets::BALLOON_ABOVE + n,
        balloon..balloon + 8,
        guest::nested::TABLES..guest::nested::END,
        offsets::STACK_LOW..RAM_SIZE,
    ]
}

fn guest_says(vm: &Vm, id: u64) -> Result<u64, String> {
    guest_says_for(vm, id, 0)
}

fn guest_says_for(vm: &Vm, id: u64, device: usize) -> Result<u64, String> {
    match vm.log.report_for(id, device as u64) {
        Some(r) if r.status == 0 => Ok(r.detail),
        Some(r) => Err(format!(
            "guest reports \"{}\" FAILED (detail {:#x})",
            check::name(id),
            r.detail
        )),
        None => Err(format!(
            "guest made no single report \"{}\" (stop: {})",
            check::name(id),
            stop_text(vm.log.stop)
        )),
    }
}

fn pattern_at(vm: &Vm, off: u64, first: u64) -> Result<(), String> {
    for i in 0..offsets::PATTERN_BYTES / 8 {
        let got = vm.ram_word(off + 8 * i);
        if got != Some(first + i) {
            return Err(format!(
                "PA {:#x}: {}, expected {:#x}",
                vm.ram_pa() + off + 8 * i,
                super::console::hex(got.as_slice()),
                first + i
            ));
        }
    }
    Ok(())
}

/// How a VM's stage 2 is owned and split, for the VM line and the rows.
pub fn tables_of(vm: &Vm) -> String {
    match vm.tables {
        TableModel::HypervisorOwned => format!("tables: {}", vm.tables.name()),
        TableModel::DriverOwned => format!(
            "tables: {}, splits {}",
            vm.tables.name(),
            if vm.split_in_one_store {
                "in one store (BBM level 2)"
            } else {
                "break before make"
            }
        ),
    }
}

/// The VM's identity: name, devices, CPU, VMID on the CPU (VTTBR_EL2 read
/// back while the VM was loaded) and on the SMMU (STE.S2VMID), both roots,
/// who owns the tables, and where its RAM and code are.
pub fn describe(smmu: &Driver, vm: &Vm) -> String {
    let vttbr = vm.log.vttbr.unwrap_or(0);
    let (ste_vmid, s2ttb) = smmu.ste(vm.sid).map_or((0, 0), |s| (s.vmid(), s.s2ttb()));
    let root = vttbr & 0x0000_ffff_ffff_fffe;
    let sids = if vm.edus.len() > 1 {
        format!(
            "sids {} (DMA of its {} devices arrives as {:#06x}), BARs at IPA {}",
            vm.sids
                .iter()
                .map(|s| format!("{s:#06x}"))
                .collect::<Vec<_>>()
                .join(" "),
            vm.edus.len(),
            vm.sid,
            (0..vm.edus.len())
                .map(|i| format!("{:#x}", guest::bar_ipa(i)))
                .collect::<Vec<_>>()
                .join(" ")
        )
    } else {
        format!("sid {:#06x}", vm.sid)
    };
    if vm.stage == Stage::Stage1 {
        return format!(
            "VM {}: {}; {} {sids}, CPU {}, VMID {:#x} (VTTBR_EL2, CPU only; no SMMU VMIDs), VTTBR_EL2 root {:#x}; RAM at IPA {:#x} (PA {:#x}, {} MiB), code at IPA {:#x} (PA {:#x})",
            vm.name,
            super::vmstage::describe(smmu, vm),
            vm.devices(),
            vm.log.cpu.map_or(String::from("?"), |c| format!("{c}")),
            vttbr >> 48,
            root,
            RAM_IPA,
            vm.ram_pa(),
            RAM_SIZE >> 20,
            CODE_IPA,
            vm.code_pa()
        );
    }
    format!(
        "VM {}: {}; {} {sids}, CPU {}, VMID {:#x} (VTTBR_EL2) / {:#x} (STE.S2VMID, {}), VTTBR_EL2 root {:#x} {} STE S2TTB {:#x}; {}; RAM at IPA {:#x} (PA {:#x}, {} MiB), code at IPA {:#x} (PA {:#x})",
        vm.name,
        super::vmstage::describe(smmu, vm),
        vm.devices(),
        vm.log.cpu.map_or(String::from("?"), |c| format!("{c}")),
        vttbr >> 48,
        ste_vmid,
        vm.vmid_policy.name(),
        root,
        if root == s2ttb { "==" } else { "!=" },
        s2ttb,
        tables_of(vm),
        RAM_IPA,
        vm.ram_pa(),
        RAM_SIZE >> 20,
        CODE_IPA,
        vm.code_pa()
    )
}

/// The models `make run` gives VM `i` (see the README, "Guests"): VM a
/// driver-owned tables with a private SMMU VMID and break-before-make
/// splits; VM b hypervisor-owned tables (aarch64-paging) with STE.S2VMID =
/// its CPU VMID; every further VM driver-owned tables, the CPU VMID, splits
/// in one store (where the CPU has BBM level 2).
pub fn demo_models(i: usize, spec: &mut VmSpec) {
    match i {
        0 => {
            spec.vmid_policy = VmidPolicy::Private;
            spec.cpu_bbml2 = false;
        }
        1 => spec.tables = TableModel::HypervisorOwned,
        _ => {}
    }
}

/// Builds, runs and judges every VM; adds the rows to `report`.
pub fn demo(smmu: &Driver, edus: &[Edu], report: &mut Report) {
    match super::vmstage::smmu_stage(smmu) {
        Ok(Stage::Stage1) => println!(
            "Guests: one EL1 VM per isolation group of edus; SMMU stage-1 domain for its devices, a separate CPU stage 2 with the same IPA -> PA"
        ),
        _ => println!(
            "Guests: one EL1 VM per isolation group of edus; its stage 2 shared by its CPU and its devices"
        ),
    }
    let groups = match vm_groups(smmu, edus) {
        Ok(g) => g,
        Err(e) => {
            report.add("-", "isolation groups for VMs", Err(e));
            return;
        }
    };
    let specs = groups
        .iter()
        .enumerate()
        .map(|(i, (members, sids))| {
            let mut spec = group_spec(i, members, sids, phase::ALL);
            demo_models(i, &mut spec);
            // VM a also owns the stage 1 of its device (pvIOMMU), where
            // the SMMU can nest.
            if i == 0 && smmu.features().nested() {
                spec.phases |= phase::NESTED;
            }
            spec
        })
        .collect();
    let mut vms = match create_specs(smmu, specs) {
        Ok(v) => v,
        Err(e) => {
            report.add("-", "create VMs", Err(e));
            return;
        }
    };
    if vms.is_empty() {
        report.add("-", "at least one VM", Err("no edu".into()));
        return;
    }
    if let Err(e) = run_all(smmu, &mut vms) {
        report.add("-", "run VMs", Err(e));
    }
    for vm in &vms {
        println!("  {}", describe(smmu, vm));
        for w in &vm.log.nested_walks {
            println!("  VM {}: {}", vm.name, super::pviommu::describe_walk(w));
        }
    }
    for (i, vm) in vms.iter().enumerate() {
        let n = format!("VM {}", vm.name);
        let seed = seed(i);
        let check = match vm.stage {
            Stage::Stage1 => "stage-1 STE/CD; CPU stage 2 maps alike",
            Stage::Stage2 => "VTTBR_EL2 root == STE S2TTB, VMID policy",
        };
        report.add(&n, check, identity(smmu, vm));
        report.add(&n, "guest at EL1 on its CPU, ran to DONE", ran_at_el1(vm));
        report.add(
            &n,
            "guest DMA RAM -> device -> RAM via IPAs",
            dma_roundtrip(vm, seed),
        );
        report.add(
            &n,
            "guest DMA outside RAM: blocked, event -> VM",
            dma_outside(vm),
        );
        report.add(
            &n,
            "guest CPU access outside stage 2: abort",
            cpu_aborts(vm),
        );
        report.add(
            &n,
            "bad HVCs: typed errors, nothing changed",
            bad_hypercalls(vm),
        );
        report.add(
            &n,
            "balloon: page out of 2 MiB region faults",
            balloon(smmu, vm, seed),
        );
        if vm.phases() & phase::NESTED != 0 {
            for (check, r) in super::pviommu::judge(smmu, vm, seed) {
                report.add(&n, check, r);
            }
        }
    }
    for pair in vms.chunks(2) {
        if let [a, b] = pair {
            let n = format!("VM {}+{}", a.name, b.name);
            let cpus = super::smp::cpu_mpidrs().len();
            if cpus >= 2 {
                report.add(&n, "two VMs at once on two CPUs", concurrent(a, b));
            } else {
                // Nothing to run the second VM on: the claim does not apply
                // (with two CPUs listed, a VM left on CPU 0 is a failure).
                report.add(
                    &n,
                    "one CPU: the two VMs ran one after another",
                    one_after_another(a, b, cpus),
                );
            }
            report.add(
                &n,
                "same IPAs, different PAs, no crossing",
                no_crossing(smmu, a, b),
            );
            report.add(
                &n,
                "same IPAs, different PAs, no crossing (b->a)",
                no_crossing(smmu, b, a),
            );
        }
    }
    // An unpaired last VM probed VM a's RAM (see `create_specs`).
    if let [first, .., last] = vms.as_slice()
        && vms.len() % 2 == 1
    {
        report.add(
            &format!("VM {}->{}", last.name, first.name),
            "same IPAs, different PAs, no crossing",
            no_crossing(smmu, last, first),
        );
    }
    destroy_all(smmu, vms);
}

/// How a VM stopped, for failure messages (without `Debug`, which costs
/// the image its formatting builders).
pub(super) fn stop_text(stop: Option<Stop>) -> String {
    match stop {
        None => String::from("none"),
        Some(Stop::Done(s)) => format!("DONE({s})"),
        Some(Stop::InstructionAbort { ipa, esr }) => {
            format!("instruction abort IPA {ipa:#x} ESR {esr:#x}")
        }
        Some(Stop::OtherDataAbort { esr }) => format!("data abort ESR {esr:#x}"),
        Some(Stop::Unhandled { ec, elr }) => format!("unhandled EC {ec:#x} ELR {elr:#x}"),
        Some(Stop::Unexpected { vector }) => format!("unexpected vector {vector}"),
        Some(Stop::Runaway) => String::from("runaway"),
    }
}
