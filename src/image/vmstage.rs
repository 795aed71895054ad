//! Which SMMU stage confines a VM's DMA, and the CPU stage 2 that goes with
//! it.
//!
//! On an SMMU with stage 2 (QEMU `virt` >= 9.2: nested) a VM's SMMU domain
//! is a stage-2 domain and the CPU walks the same tables (driver- or
//! hypervisor-owned, `vm.rs`).
//!
//! On a stage-1-only SMMU (`-machine virt-9.1`) `StagePolicy::Auto` gives a
//! stage-1 domain (IPA in, PA out, through a driver-owned CD), whose tables
//! a CPU cannot walk as its stage 2. The VM's CPU then uses
//! hypervisor-owned stage-2 tables ([`super::hvtables::HvStage2`], 4K
//! pages) and the SMMU domain maps the same IPA -> PA layout (2 MiB blocks
//! for RAM); RELEASE unmaps both (CPU TLBI for the one, TLBI_NH_VA inside
//! `Smmu::unmap` for the other). On such an SMMU there are no VMIDs, so
//! the VMID policy does not apply (STE.S2VMID = 0).

use alloc::format;
use alloc::string::String;

use smmuv3::domain::{DomainId, DomainOptions, Stage, StagePolicy};
use smmuv3::expert::SteConfig;

use super::demo::Driver;
use super::guest::{self, CODE_IPA, RAM_IPA, RAM_SIZE};
use super::hvtables::HvStage2;
use super::vm::Vm;

/// The stage every VM's SMMU domain uses on this SMMU.
pub fn smmu_stage(smmu: &Driver) -> Result<Stage, String> {
    smmu.domain_stage(StagePolicy::Auto)
        .map_err(|e| format!("domain stage: {e}"))
}

/// "stage 1" / "stage 2", as the headers print it.
pub fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Stage1 => "stage 1",
        Stage::Stage2 => "stage 2",
    }
}

/// A stage-1 SMMU domain with the VMs' geometry (no VMID on a
/// stage-1-only SMMU; no CPU walks its tables, so a split needs no break
/// on the CPU side).
pub fn create_stage1_domain(smmu: &Driver) -> Result<DomainId, String> {
    let cfg = super::vm::stage2_config()?;
    smmu.create_domain(DomainOptions {
        stage: StagePolicy::Stage1,
        vmid: None,
        cpu_bbml2: true,
        ..DomainOptions::new(cfg)
    })
    .map_err(|e| format!("create_domain (stage 1): {e}"))
}

/// The start of the VM line: which stage its SMMU domain uses.
pub fn describe(smmu: &Driver, vm: &Vm) -> String {
    match vm.stage {
        Stage::Stage2 => String::from("SMMU stage 2, shared with the CPU"),
        Stage::Stage1 => format!(
            "SMMU stage 1 (ASID {:#x}, driver-owned tables), CPU stage 2 separate (hypervisor-owned, same IPA -> PA)",
            smmu.domain_info(vm.domain)
                .ok()
                .and_then(|i| i.asid)
                .unwrap_or(0)
        ),
    }
}

/// For a stage-1 domain, what replaces "VTTBR_EL2 root == STE S2TTB" (a
/// stage-1 STE has no S2TTB): every StreamID's STE is a stage-1 entry whose
/// CD (read back from memory) is valid with TTB0 = the domain's root and
/// ASID = the domain's; VTTBR_EL2 names the VM's CPU VMID and the
/// hypervisor's own tables, never the SMMU's; and the CPU and the SMMU
/// translate the code page, every BAR and both ends of RAM to the same PA.
pub fn identity(smmu: &Driver, vm: &Vm) -> Result<String, String> {
    let vttbr = vm
        .log
        .vttbr
        .ok_or("VTTBR_EL2 never read (the VM never exited)")?;
    let info = smmu
        .domain_info(vm.domain)
        .map_err(|e| format!("domain_info: {e}"))?;
    let asid = info.asid.ok_or("domain has no ASID")?;
    for &sid in &vm.sids {
        let ste = smmu.ste(sid).map_err(|e| format!("ste {sid:#x}: {e}"))?;
        if ste.config() != SteConfig::Stage1 {
            return Err(format!(
                "sid {sid:#x}: STE config {:#x}, not stage 1",
                (ste.0[0] >> 1) & 7
            ));
        }
        let cd = read_cd(ste.cd_paddr());
        if !cd.is_valid() || cd.ttb0() != info.root || cd.asid() != asid {
            return Err(format!(
                "sid {sid:#x}: CD at {:#x}: valid {}, TTB0 {:#x} (root {:#x}), ASID {:#x} (domain {asid:#x})",
                ste.cd_paddr(),
                cd.is_valid(),
                cd.ttb0(),
                info.root,
                cd.asid()
            ));
        }
    }
    let cpu_vmid = (vttbr >> 48) as u16;
    let root = vttbr & 0x0000_ffff_ffff_fffe;
    if cpu_vmid != vm.vmid || Some(root) != vm.hv_root() || root == info.root {
        return Err(format!(
            "VTTBR_EL2 {vttbr:#x}: VMID {cpu_vmid:#x} (VM {:#x}), root {root:#x} (CPU tables {}, SMMU root {:#x})",
            vm.vmid,
            super::console::hex(vm.hv_root().as_slice()),
            info.root
        ));
    }
    let vtcr = vm.log.vtcr.unwrap_or(0);
    if vtcr != HvStage2::vtcr() {
        return Err(format!(
            "VTCR_EL2 read {vtcr:#x}, programmed {:#x}",
            HvStage2::vtcr()
        ));
    }
    let mut probes = alloc::vec![CODE_IPA, RAM_IPA, RAM_IPA + RAM_SIZE - 8];
    probes.extend((0..vm.edus.len()).map(guest::bar_ipa));
    for &ipa in &probes {
        let smmu_pa = smmu.translate(vm.domain, ipa).ok().flatten().map(|t| t.pa);
        let cpu_pa = vm.translate(smmu, ipa).map(|t| t.pa);
        if smmu_pa.is_none() || smmu_pa != cpu_pa {
            return Err(format!(
                "IPA {ipa:#x}: SMMU stage 1 -> {}, CPU stage 2 -> {}",
                super::console::hex(smmu_pa.as_slice()),
                super::console::hex(cpu_pa.as_slice())
            ));
        }
    }
    Ok(format!(
        "CPU {} VMID {cpu_vmid:#x}, own stage 2 at {root:#x}; STE stage 1, CD TTB0 {:#x} ASID {asid:#x}; {} IPAs translate alike",
        vm.log.cpu.unwrap_or(0),
        info.root,
        probes.len()
    ))
}

/// The first two dwords of the CD at `pa` (V, ASID, TTB0 live there).
fn read_cd(pa: u64) -> smmuv3::expert::Cd {
    super::cpu::dcache_clean_invalidate(pa as usize, 16);
    // SAFETY: `pa` is a stage-1 domain's CD: a live, 64-byte aligned,
    // identity-mapped driver allocation of 64 bytes; the domain is idle
    // (its VM stopped), so nothing writes it meanwhile.
    let (d0, d1) = unsafe {
        let p = pa as *const u64;
        (p.read_volatile(), p.add(1).read_volatile())
    };
    smmuv3::expert::Cd([d0, d1, 0, 0, 0, 0, 0, 0])
}
