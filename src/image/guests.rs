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
                    smmu.declare_group(&sids)
                        .map_err(|err| format!("declare_group {sids:#x?}: {err}"))?;
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
            "guest made no single report \"{}\" (stop: {:?})",
            check::name(id),
            vm.log.stop
        )),
    }
}

fn pattern_at(vm: &Vm, off: u64, first: u64) -> Result<(), String> {
    for i in 0..offsets::PATTERN_BYTES / 8 {
        let got = vm.ram_word(off + 8 * i);
        if got != Some(first + i) {
            return Err(format!(
                "PA {:#x}: {got:#x?}, expected {:#x}",
                vm.ram_pa() + off + 8 * i,
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

/// VTCR_EL2 fields that describe a stage-2 walk: T0SZ, SL0, TG0, PS.
const VTCR_GEOMETRY: u64 = 0x3f | 0x3 << 6 | 0x3 << 14 | 0x7 << 16;

/// The CPU and the SMMU use the same tables: VTTBR_EL2 (read back while
/// the VM was loaded) against the STE of every StreamID of the VM (read
/// back through the driver), VTCR_EL2 against the domain's geometry, the
/// VMIDs as the VM's policy says (equal, or the SMMU's private one), and
/// HCR_EL2 read back as programmed.
pub fn identity(smmu: &Driver, vm: &Vm) -> Result<String, String> {
    if vm.stage == Stage::Stage1 {
        return super::vmstage::identity(smmu, vm);
    }
    let vttbr = vm
        .log
        .vttbr
        .ok_or("VTTBR_EL2 never read (the VM never exited)")?;
    let cpu_vmid = (vttbr >> 48) as u16;
    let root = vttbr & 0x0000_ffff_ffff_fffe;
    let info = smmu
        .domain_info(vm.domain)
        .map_err(|e| format!("domain_info: {e}"))?;
    for &sid in &vm.sids {
        let ste = smmu.ste(sid).map_err(|e| format!("ste {sid:#x}: {e}"))?;
        if ste.vmid() != vm.smmu_vmid || ste.vmid() != info.vmid {
            return Err(format!(
                "sid {sid:#x}: STE.S2VMID {:#x}, domain VMID {:#x}, VM's SMMU VMID {:#x}",
                ste.vmid(),
                info.vmid,
                vm.smmu_vmid
            ));
        }
        if root != ste.s2ttb() {
            return Err(format!(
                "sid {sid:#x}: VTTBR_EL2 root {root:#x} != STE S2TTB {:#x}",
                ste.s2ttb()
            ));
        }
    }
    if cpu_vmid != vm.vmid {
        return Err(format!(
            "VTTBR_EL2 VMID {cpu_vmid:#x}, VM's CPU VMID {:#x}",
            vm.vmid
        ));
    }
    let policy_holds = match vm.vmid_policy {
        VmidPolicy::Cpu => info.vmid == cpu_vmid,
        VmidPolicy::Private => info.vmid != cpu_vmid,
    };
    if !policy_holds {
        return Err(format!(
            "VMID policy {:?}: CPU {cpu_vmid:#x}, SMMU {:#x}",
            vm.vmid_policy, info.vmid
        ));
    }
    match (vm.tables, vm.hv_root()) {
        (TableModel::HypervisorOwned, Some(hv)) if hv == root && info.external => {}
        (TableModel::DriverOwned, None) if info.root == root && !info.external => {}
        other => {
            return Err(format!(
                "tables {other:x?}, VTTBR_EL2 root {root:#x}, domain {info:x?}"
            ));
        }
    }
    let vtcr = vm.log.vtcr.unwrap_or(0);
    if vtcr != vm.vtcr || vtcr & VTCR_GEOMETRY != info.vtcr & VTCR_GEOMETRY {
        return Err(format!(
            "VTCR_EL2 read {vtcr:#x}, programmed {:#x}, domain's {:#x}",
            vm.vtcr, info.vtcr
        ));
    }
    // Its stage 2: code read+execute, each BAR Device execute-never, RAM
    // execute-never (2 MiB blocks in the driver's tables, 4K pages in the
    // hypervisor's).
    let leaf = |ipa| vm.translate(smmu, ipa);
    use smmuv3::stage2::{Memory, Perm};
    let ram_leaf = match vm.tables {
        TableModel::DriverOwned => 2 << 20,
        TableModel::HypervisorOwned => 4096,
    };
    match (leaf(CODE_IPA), leaf(RAM_IPA)) {
        (Some(c), Some(r))
            if c.perm == Perm::Read
                && c.execute
                && c.pa == vm.code_pa()
                && r.size == ram_leaf
                && r.pa == vm.ram_pa()
                && r.perm == Perm::ReadWrite
                && r.memory == Memory::Normal
                && !r.execute => {}
        other => return Err(format!("stage 2 leaves (code, RAM): {other:x?}")),
    }
    for (i, e) in vm.edus.iter().enumerate() {
        match leaf(guest::bar_ipa(i)) {
            Some(b) if b.memory == Memory::Device && !b.execute && b.pa == e.bar0 as u64 => {}
            other => {
                return Err(format!(
                    "{} BAR leaf at {:#x}: {other:x?}",
                    e.bdf,
                    guest::bar_ipa(i)
                ));
            }
        }
    }
    let hcr = vm.log.hcr.unwrap_or(0);
    if hcr != Vm::hcr() {
        return Err(format!(
            "HCR_EL2 read {hcr:#x}, programmed {:#x}",
            Vm::hcr()
        ));
    }
    let vmids = match vm.vmid_policy {
        VmidPolicy::Cpu => format!("VMID {cpu_vmid:#x} = STE.S2VMID"),
        VmidPolicy::Private => format!("VMID {cpu_vmid:#x}, STE.S2VMID {:#x} (private)", info.vmid),
    };
    Ok(format!(
        "CPU {} {vmids}; VTTBR_EL2 root {root:#x} == STE S2TTB{}; {}; code RX, {} Device XN, RAM {} XN",
        vm.log.cpu.unwrap_or(0),
        if vm.sids.len() > 1 {
            format!(" (all {} STEs)", vm.sids.len())
        } else {
            String::new()
        },
        tables_of(vm),
        if vm.edus.len() > 1 {
            format!("{} BARs", vm.edus.len())
        } else {
            String::from("BAR")
        },
        if ram_leaf == 4096 { "4K" } else { "2M" }
    ))
}

/// The guest ran at EL1, on the CPU the hypervisor ran it on, to DONE(0).
pub fn ran_at_el1(vm: &Vm) -> Result<String, String> {
    if vm.log.stop != Some(Stop::Done(0)) {
        return Err(format!("stopped: {:?}", vm.log.stop));
    }
    let el = guest_says(vm, check::EL)?;
    let mpidr = guest_says(vm, check::CPU)?;
    let cpu = vm.log.cpu.ok_or("no CPU recorded")?;
    let expected = smp::mpidr_of(cpu).ok_or("no MPIDR for the CPU")?;
    if super::gic::affinity(mpidr) != expected {
        return Err(format!(
            "guest's MPIDR {mpidr:#x}, CPU {cpu} is {expected:#x}"
        ));
    }
    Ok(format!(
        "CurrentEL {el}, MPIDR {:#x} = CPU {cpu}; {} exits ({} IRQ), {} HVCs, DONE(0)",
        super::gic::affinity(mpidr),
        vm.log.exits,
        vm.log.irq_exits,
        vm.log.hvcs.len()
    ))
}

/// Two VMs ran at the same time on different CPUs: their 200 ms busy loops
/// (timestamps from the guests' own CNTVCT_EL0, CNTVOFF_EL2 = 0) overlap.
pub fn concurrent(a: &Vm, b: &Vm) -> Result<String, String> {
    let (ca, cb) = (a.log.cpu, b.log.cpu);
    if ca.is_none() || ca == cb {
        return Err(format!("CPUs {ca:?} and {cb:?}"));
    }
    let span = |vm: &Vm| -> Result<(u64, u64), String> {
        Ok((
            guest_says(vm, check::SPIN_START)?,
            guest_says(vm, check::SPIN_END)?,
        ))
    };
    let (sa, ea) = span(a)?;
    let (sb, eb) = span(b)?;
    let overlap = ea.min(eb).saturating_sub(sa.max(sb));
    let ms = |t: u64| t * 1000 / cpu::tick_hz();
    if overlap == 0 {
        return Err(format!(
            "busy loops did not overlap: {} ms..{} ms and {} ms..{} ms",
            ms(sa),
            ms(ea),
            ms(sb),
            ms(eb)
        ));
    }
    Ok(format!(
        "VM {} on CPU {} and VM {} on CPU {} spun {} ms at the same time",
        a.name,
        ca.unwrap_or(0),
        b.name,
        cb.unwrap_or(0),
        ms(overlap)
    ))
}

/// DMA RAM -> device -> RAM through the guest's IPAs, bytes checked in the
/// VM's physical memory.
/// Every device of the VM: its own pattern (seed + `i << 32`) at its own
/// offsets.
pub fn dma_roundtrip(vm: &Vm, seed: u64) -> Result<String, String> {
    let mut out = Vec::new();
    for (i, e) in vm.edus.iter().enumerate() {
        guest_says_for(vm, check::DMA_ROUNDTRIP, i)?;
        let off = i as u64 * guest::DEVICE_BYTES;
        let first = seed + ((i as u64) << 32);
        pattern_at(vm, offsets::SRC + off, first)?;
        pattern_at(vm, offsets::DST + off, first)?;
        let what = format!(
            "IPA {:#x} -> device -> IPA {:#x} -> PA {:#x}: 256 bytes match",
            RAM_IPA + offsets::SRC + off,
            RAM_IPA + offsets::DST + off,
            vm.ram_pa() + offsets::DST + off
        );
        out.push(if vm.edus.len() > 1 {
            format!("{}: {what}", e.bdf)
        } else {
            what
        });
    }
    Ok(out.join("; "))
}

fn faulted_at(vm: &Vm, ipa: u64) -> bool {
    faulted_at_masked(vm, ipa, u64::MAX)
}

/// Bus address bits QEMU's `edu` emits without a `dma_mask` property.
pub const EDU_DEFAULT_DMA_MASK: u64 = 0x0fff_ffff;

fn faulted_at_masked(vm: &Vm, ipa: u64, mask: u64) -> bool {
    faulted_at_sid(vm, vm.sid, ipa, mask)
}

fn faulted_at_sid(vm: &Vm, sid: u32, ipa: u64, mask: u64) -> bool {
    vm.log.dma_faults.iter().any(|f| {
        f.sid == sid
            && f.kind == EventType::FTranslation
            && f.addr_range.is_some_and(|r| r.0 & mask == ipa & mask)
    })
}

/// DMA outside its RAM: blocked, the SMMU event attributed to this VM by
/// StreamID and returned to the guest.
/// Device `i` of the VM probes IPA UNMAPPED_DMA_IPA + i * 4096: the event
/// comes with the StreamID its DMA carries (the alias, for devices behind a
/// PCIe-to-PCI bridge: then the StreamID names the VM and the group, and
/// the address the device).
pub fn dma_outside(vm: &Vm) -> Result<String, String> {
    let mut out = Vec::new();
    for (i, e) in vm.edus.iter().enumerate() {
        guest_says_for(vm, check::DMA_OUTSIDE, i)?;
        let ipa = guest::UNMAPPED_DMA_IPA + i as u64 * 4096;
        let sid = e.stream_id.ok_or("no StreamID")?;
        if !faulted_at_sid(vm, sid, ipa, u64::MAX) {
            return Err(format!(
                "no F_TRANSLATION at {ipa:#x} for sid {sid:#x}: {:x?}",
                vm.log.dma_faults
            ));
        }
        let sharing: Vec<String> = vm
            .edus
            .iter()
            .filter(|o| o.stream_id == Some(sid))
            .map(|o| format!("{}", o.bdf))
            .collect();
        out.push(if sharing.len() > 1 {
            format!(
                "F_TRANSLATION sid {sid:#06x} IPA {ipa:#x} -> VM {} ({}; sid shared by {})",
                vm.name,
                e.bdf,
                sharing.join("+")
            )
        } else {
            format!(
                "F_TRANSLATION sid {sid:#06x} IPA {ipa:#x} -> VM {} ({})",
                vm.name, e.bdf
            )
        });
    }
    Ok(out.join("; "))
}

fn aborted(vm: &Vm, ipa: u64, write: bool) -> Option<&super::vm::Abort> {
    vm.log
        .aborts
        .iter()
        .find(|a| a.ipa == ipa && a.far == ipa && a.write() == write)
}

/// CPU loads/stores outside its stage 2: stage-2 data aborts at EL2,
/// decoded from HPFAR_EL2 + FAR_EL2, the guest resumed (POISON in the load's
/// register); a store to its own code is a permission fault.
pub fn cpu_aborts(vm: &Vm) -> Result<String, String> {
    guest_says(vm, check::CPU_LOAD_ABORT)?;
    guest_says(vm, check::CPU_STORE_ABORT)?;
    guest_says(vm, check::CODE_READONLY)?;
    let ipa = guest::UNMAPPED_CPU_IPA;
    let load = aborted(vm, ipa, false).ok_or(format!("no read abort at {ipa:#x}"))?;
    if !load.isv() || load.srt() != 9 || load.dfsc() >> 2 != 0b0001 {
        return Err(format!("load abort syndrome {:#x}", load.esr));
    }
    aborted(vm, ipa + 8, true).ok_or(format!("no write abort at {:#x}", ipa + 8))?;
    let code = aborted(vm, CODE_IPA, true).ok_or("no write abort at the code page")?;
    if code.dfsc() >> 2 != 0b0011 {
        return Err(format!(
            "code store DFSC {:#x}, not permission",
            code.dfsc()
        ));
    }
    if !vm.code_intact() {
        return Err(String::from("the code page changed"));
    }
    Ok(format!(
        "read IPA {ipa:#x} (HPFAR {:#x}) -> x9 = POISON, write {:#x}, code write: permission fault; code intact",
        load.hpfar,
        ipa + 8
    ))
}

/// Two VMs use the same IPAs for different physical pages, and neither
/// reaches the other's: A's CPU load/store and DMA at B's physical RAM
/// address all fault, and B's RAM holds only B's own writes.
pub fn no_crossing(smmu: &Driver, a: &Vm, b: &Vm) -> Result<String, String> {
    let ta = a.translate(smmu, RAM_IPA);
    let tb = b.translate(smmu, RAM_IPA);
    let (pa, pb) = (ta.map(|t| t.pa), tb.map(|t| t.pa));
    if pa != Some(a.ram_pa()) || pb != Some(b.ram_pa()) || pa == pb {
        return Err(format!("IPA {RAM_IPA:#x} -> {pa:#x?} / {pb:#x?}"));
    }
    guest_says(a, check::FOREIGN_CPU)?;
    guest_says(a, check::FOREIGN_DMA)?;
    let target = b.ram_pa();
    if aborted(a, target, false).is_none() || aborted(a, target, true).is_none() {
        return Err(format!("no CPU aborts of VM {} at {target:#x}", a.name));
    }
    // An edu without dma_mask emits only the low 28 bits of the address:
    // it then faults there (it cannot even name B's memory).
    if !faulted_at_masked(a, target, EDU_DEFAULT_DMA_MASK) {
        return Err(format!("no DMA fault of VM {} at {target:#x}", a.name));
    }
    if let Some(off) = b.first_unfilled(&written_by_guest_of(b.edus.len())) {
        return Err(format!(
            "VM {}'s RAM changed at PA {:#x}",
            b.name,
            b.ram_pa() + off
        ));
    }
    Ok(format!(
        "IPA {RAM_IPA:#x} maps PA {:#x} / {:#x}; {} -> {}'s PA {target:#x}: CPU read+write aborted, DMA faulted; {}'s RAM untouched",
        a.ram_pa(),
        b.ram_pa(),
        a.name,
        b.name,
        b.name
    ))
}

/// Bad hypercalls: typed errors to the guest, nothing changed (tables
/// compared word for word around each rejected RELEASE; rejected REPORTs
/// not recorded; its pages still work).
pub fn bad_hypercalls(vm: &Vm) -> Result<String, String> {
    for id in [
        check::BAD_UNKNOWN,
        check::BAD_IPA,
        check::BAD_LENGTH,
        check::BAD_ARGUMENT,
        check::BAD_NOTHING_CHANGED,
    ] {
        guest_says(vm, id)?;
    }
    let rejected: Vec<_> = vm
        .log
        .hvcs
        .iter()
        .filter(|h| {
            matches!(
                h.ret,
                hvc::UNKNOWN_CALL | hvc::BAD_IPA | hvc::BAD_LENGTH | hvc::BAD_ARGUMENT
            )
        })
        .collect();
    let count = |code| rejected.iter().filter(|h| h.ret == code).count();
    let counts = [
        count(hvc::UNKNOWN_CALL),
        count(hvc::BAD_IPA),
        count(hvc::BAD_LENGTH),
        count(hvc::BAD_ARGUMENT),
    ];
    if counts != [4, 5, 4, 3] {
        return Err(format!(
            "rejections (unknown, IPA, length, argument) {counts:?}, expected [4, 5, 4, 3]"
        ));
    }
    if let Some(h) = rejected
        .iter()
        .find(|h| h.fid == hvc::RELEASE && h.tables_unchanged != Some(true))
    {
        return Err(format!("a rejected RELEASE changed the tables: {h:x?}"));
    }
    if vm.log.reports.iter().any(|r| r.status > 1 || r.check == 0) {
        return Err(String::from("a rejected REPORT was recorded"));
    }
    Ok(format!(
        "{} rejected: {} UNKNOWN_CALL, {} BAD_IPA, {} BAD_LENGTH, {} BAD_ARGUMENT; tables unchanged",
        rejected.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3]
    ))
}

/// The balloon: one page out of the middle of a 2 MiB region while the
/// guest runs; afterwards its CPU access and its DMA both fault, the
/// neighbours still work.
pub fn balloon(smmu: &Driver, vm: &Vm, seed: u64) -> Result<String, String> {
    for id in [
        check::BALLOON_RELEASE,
        check::BALLOON_CPU,
        check::BALLOON_DMA,
        check::BALLOON_NEIGHBOURS,
    ] {
        guest_says(vm, id)?;
    }
    let page = BALLOON_PAGE_IPA;
    let t = |ipa| vm.translate(smmu, ipa);
    if t(page).is_some() || t(page - 4096).is_none() || t(page + 4096).is_none() {
        return Err(format!("tables around {page:#x} wrong after release"));
    }
    // The page is a 4K leaf now, its neighbours too (the block was split,
    // or the hypervisor's tables had pages only), still execute-never RAM
    // at the right PAs.
    for ipa in [page - 4096, page + 4096] {
        match t(ipa) {
            Some(l) if l.size == 4096 && l.pa == vm.ram_pa() + (ipa - RAM_IPA) && !l.execute => {}
            other => return Err(format!("IPA {ipa:#x} after the split: {other:x?}")),
        }
    }
    // The CPU was invalidated for the page; when the driver's split broke
    // before make, for the whole block first. For the hypervisor's tables,
    // by the hypervisor itself, before its Smmu::invalidate of the page.
    let block = page & !((2 << 20) - 1);
    let expected: &[(u64, u64)] = match (vm.tables, vm.split_in_one_store) {
        (TableModel::DriverOwned, false) => &[(block, 2 << 20), (page, 4096)],
        _ => &[(page, 4096)],
    };
    if vm.log.released != [page] || vm.log.cpu_tlbis != expected {
        return Err(format!(
            "CPU TLB invalidations {:x?} (expected {expected:x?}), released {:x?}",
            vm.log.cpu_tlbis, vm.log.released
        ));
    }
    // Every CPU invalidation ran by the CPU's VMID; the driver's hook was
    // handed the SMMU's.
    let hook_vmid = match vm.tables {
        TableModel::DriverOwned => Some(vm.smmu_vmid),
        TableModel::HypervisorOwned => None,
    };
    if vm
        .log
        .cpu_tlbi_vmids
        .iter()
        .any(|&v| v != (vm.vmid, hook_vmid))
    {
        return Err(format!(
            "CPU TLBI VMIDs {:x?}, expected CPU {:#x} / hook {hook_vmid:x?}",
            vm.log.cpu_tlbi_vmids, vm.vmid
        ));
    }
    let smmu_inv: &[(u64, u64)] = match vm.tables {
        TableModel::HypervisorOwned => &[(page, 4096)],
        TableModel::DriverOwned => &[],
    };
    if vm.log.smmu_invalidations != smmu_inv {
        return Err(format!(
            "Smmu::invalidate calls {:x?}",
            vm.log.smmu_invalidations
        ));
    }
    aborted(vm, page, false).ok_or("no CPU abort at the released page")?;
    if !faulted_at(vm, page) {
        return Err(String::from("no DMA fault at the released page"));
    }
    pattern_at(vm, offsets::BALLOON_ABOVE, seed + 0x100)?;
    // The blocked DMA wrote nothing into the released page.
    let off = page - RAM_IPA;
    let fill = u64::from_ne_bytes([vm.fill; 8]);
    if (8..64)
        .step_by(8)
        .any(|i| vm.ram_word(off + i) != Some(fill))
    {
        return Err(String::from("the released page was written"));
    }
    let how = match (vm.tables, vm.split_in_one_store) {
        (TableModel::HypervisorOwned, _) if vm.stage == Stage::Stage1 => format!(
            "CPU stage 2: HvStage2 unmap, CPU TLBI by VMID {:#x}; SMMU stage 1: Smmu::unmap (TLBI_NH_VA)",
            vm.vmid
        ),
        (TableModel::HypervisorOwned, _) => format!(
            "hypervisor-owned: HvStage2 unmap, CPU TLBI by VMID {:#x}, Smmu::invalidate by VMID {:#x}",
            vm.vmid, vm.smmu_vmid
        ),
        (TableModel::DriverOwned, true) => format!(
            "split in one store, CPU TLB hook 1x (page) by VMID {:#x}",
            vm.vmid
        ),
        (TableModel::DriverOwned, false) => format!(
            "break-before-make split, CPU TLB hook 2x (2 MiB block, then page) by VMID {:#x}",
            vm.vmid
        ),
    };
    Ok(format!(
        "IPA {page:#x} out of its 2 MiB region ({how}): CPU abort + F_TRANSLATION; {:#x} -> device -> {:#x} ok",
        page - 4096,
        page + 4096
    ))
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
            report.add(&n, "two VMs at once on two CPUs", concurrent(a, b));
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
