//! The two ways a hypervisor owns the stage 2 its CPUs and the SMMU share.
//! Built for `aarch64-unknown-none` by `make test` (as a library: a
//! hypervisor calls these from its own code); the README shows this file.
#![no_std]

use smmuv3::{
    CpuInvalidation, DomainId, DomainOptions, ExternalStage2, Hal, MapOptions, Perm, Result, Smmu,
    Stage2Config,
};

/// A VM's memory: guest RAM and one passed-through BAR (IPA, PA, length).
pub struct VmLayout {
    pub ram: (u64, u64, u64),
    pub bar: (u64, u64, u64),
}

/// Model 1: the driver owns the tables; the CPU walks the same ones.
/// Returns the domain and the VTTBR_EL2 value to load for the VM.
pub fn driver_owned<H: Hal>(
    smmu: &Smmu<H>,
    vtcr_el2: u64,
    cpu_vmid: u16,
    sid: u32,
    vm: &VmLayout,
) -> Result<(DomainId, u64)> {
    // Same geometry as the CPU's VTCR_EL2, and the CPU's VMID as STE.S2VMID
    // (or `vmid: None` for a private SMMU VMID space).
    let options = DomainOptions {
        vmid: Some(cpu_vmid),
        ..DomainOptions::new(Stage2Config::from_vtcr(vtcr_el2)?)
    };
    let id = smmu.create_domain(options)?;
    let (ipa, pa, len) = vm.ram;
    smmu.map(id, ipa, pa, len, Perm::ReadWrite)?;
    let (ipa, pa, len) = vm.bar;
    smmu.map_with(id, ipa, pa, len, &MapOptions::device())?; // Device-nGnRE, XN
    smmu.attach(id, sid)?;
    let vttbr_el2 = smmu.domain_info(id)?.vttbr(); // root | VMID << 48
    Ok((id, vttbr_el2))
}

/// Model 1, taking one page back (a balloon): the driver splits the block,
/// invalidates the SMMU, and calls `cpu_tlbi` before freeing any table.
pub fn balloon<H: Hal>(smmu: &Smmu<H>, id: DomainId, ipa: u64) -> Result<()> {
    smmu.unmap_with(id, ipa, 0x1000, &mut cpu_tlbi)
}

/// The CPU side of an invalidation, with VTTBR_EL2 holding the VM's VMID.
fn cpu_tlbi(inv: &CpuInvalidation) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: TLB maintenance and barriers only; no memory is accessed.
    unsafe {
        let mut ipa = inv.ipa;
        while ipa < inv.ipa + inv.len {
            core::arch::asm!("tlbi ipas2e1is, {}", in(reg) ipa >> 12);
            ipa += 0x1000;
        }
        core::arch::asm!("dsb ish", "tlbi vmalle1is", "dsb ish", "isb");
    }
    #[cfg(not(target_arch = "aarch64"))]
    let _ = inv;
}

/// Model 2: the hypervisor owns the tables (built by its own page-table
/// code); the driver points the STE at them and reserves the VMID.
pub fn hypervisor_owned<H: Hal>(
    smmu: &Smmu<H>,
    vtcr_el2: u64,
    vttbr_el2: u64,
    sid: u32,
) -> Result<DomainId> {
    let id = smmu.create_external_domain(ExternalStage2 {
        vtcr: vtcr_el2,
        root: vttbr_el2 & 0x0000_FFFF_FFFF_FFFE, // BADDR
        vmid: Some((vttbr_el2 >> 48) as u16),
        access_flag_fault_disable: true,
    })?;
    smmu.attach(id, sid)?;
    Ok(id)
}

/// Model 2, after the hypervisor unmapped `[ipa, ipa + len)` in its own
/// tables and ran its CPU TLBIs: the SMMU side. Free unlinked tables only
/// after this returns.
pub fn hypervisor_unmapped<H: Hal>(smmu: &Smmu<H>, id: DomainId, ipa: u64, len: u64) -> Result<()> {
    smmu.invalidate(id, ipa, len)
}
