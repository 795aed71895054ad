//! Which SMMU stage confines a VM's DMA, and the CPU's stage 2 that goes
//! with it.
//!
//! On an SMMU with stage 2 (QEMU `virt` >= 9.2: nested), a VM's SMMU
//! domain is a stage-2 domain created with the VM's CPU VMID, and the CPU
//! uses the domain's tables as its own stage 2 (VTTBR_EL2 = the domain's
//! root): one set of tables, no mirror.
//!
//! On a stage-1-only SMMU (`-machine virt-9.1`), the domain is a stage-1
//! domain (IPA in, PA out, through a CD; the driver picks it with
//! `StagePolicy::Auto`), whose tables the CPU cannot walk as a stage 2.
//! [`VmStage`] then keeps a separate CPU stage 2, a driver
//! [`Stage2Table`] used only by the CPU, and applies every map and unmap
//! to both, so the CPU and the device see the same IPA -> PA layout. The
//! mirror maps pages only (no blocks), so an unmap never needs to split on
//! the CPU side; the SMMU side splits as the driver does.

use alloc::format;
use alloc::string::String;

use smmuv3::domain::{CpuInvalidation, DomainId, DomainOptions, Stage, StagePolicy};
use smmuv3::stage2::{MapOptions, Stage2Config, Stage2Table};
use smmuv3::ste::SteConfig;
use spin::Mutex;

use super::demo::Driver;
use super::dma::ImageHal;

/// A VM's translation setup: the SMMU domain's stage, and the CPU-only
/// stage 2 when the domain cannot be shared.
#[derive(Debug)]
pub struct VmStage {
    /// The stage the SMMU domain translates with.
    pub stage: Stage,
    /// The VM's CPU VMID (VTTBR_EL2.VMID).
    cpu_vmid: u16,
    /// The CPU's own stage 2 (stage-1 domains only).
    cpu: Mutex<Option<Stage2Table<ImageHal>>>,
}

impl VmStage {
    /// Creates the VM's SMMU domain (stage 2 with `cpu_vmid` when the SMMU
    /// has stage 2, else stage 1 with the driver's own IDs) and, for a
    /// stage-1 domain, an empty CPU stage 2 of geometry `cfg`.
    pub fn create_domain(
        smmu: &Driver,
        cfg: Stage2Config,
        cpu_vmid: u16,
        cpu_bbml2: bool,
    ) -> Result<(DomainId, VmStage), String> {
        let stage = smmu
            .domain_stage(StagePolicy::Auto)
            .map_err(|e| format!("domain stage: {e}"))?;
        let (vmid, cpu) = match stage {
            Stage::Stage2 => (Some(cpu_vmid), None),
            Stage::Stage1 => {
                let t = Stage2Table::new(cfg, true).map_err(|e| format!("CPU stage 2: {e}"))?;
                (None, Some(t))
            }
        };
        let domain = smmu
            .create_domain(DomainOptions {
                vmid,
                cpu_bbml2,
                ..DomainOptions::new(cfg)
            })
            .map_err(|e| format!("create_domain: {e}"))?;
        Ok((
            domain,
            VmStage {
                stage,
                cpu_vmid,
                cpu: Mutex::new(cpu),
            },
        ))
    }

    /// Maps `[ipa, ipa + len)` in the SMMU domain and, if separate, in the
    /// CPU's stage 2 (pages only).
    pub fn map_with(
        &self,
        smmu: &Driver,
        domain: DomainId,
        ipa: u64,
        pa: u64,
        len: u64,
        opts: &MapOptions,
    ) -> smmuv3::Result<()> {
        smmu.map_with(domain, ipa, pa, len, opts)?;
        if let Some(t) = self.cpu.lock().as_mut() {
            let pages = MapOptions {
                blocks: false,
                ..*opts
            };
            if let Err(e) = t.map_with(ipa, pa, len, &pages) {
                // Keep the two views equal: undo the SMMU side.
                let _ = smmu.unmap(domain, ipa, len);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Unmaps `[ipa, ipa + len)` from the SMMU domain (the driver
    /// invalidates the SMMU) and from the CPU's stage 2, then runs `cpu`
    /// with the CPU VMID for the CPU's TLB maintenance; tables the CPU
    /// side emptied are freed after it. For a shared stage 2 this is
    /// `Smmu::unmap_with` itself.
    pub fn unmap_with(
        &self,
        smmu: &Driver,
        domain: DomainId,
        ipa: u64,
        len: u64,
        cpu: &mut dyn FnMut(&CpuInvalidation),
    ) -> smmuv3::Result<()> {
        let mut mirror = self.cpu.lock();
        let Some(t) = mirror.as_mut() else {
            drop(mirror);
            return smmu.unmap_with(domain, ipa, len, cpu);
        };
        // Check the CPU side first so a refusal changes neither view.
        t.check_range_mapped(ipa, len)?;
        smmu.unmap(domain, ipa, len)?;
        t.unmap(ipa, len)?;
        cpu(&CpuInvalidation {
            domain,
            vmid: self.cpu_vmid,
            ipa,
            len,
        });
        t.release_retired();
        Ok(())
    }

    /// The CPU's stage-2 root (VTTBR_EL2.BADDR): the domain's own root when
    /// shared, else the CPU-only table's.
    pub fn cpu_root(&self, smmu: &Driver, domain: DomainId) -> Result<u64, String> {
        if let Some(t) = self.cpu.lock().as_ref() {
            return Ok(t.root_paddr());
        }
        smmu.domain_info(domain)
            .map_err(|e| format!("domain_info: {e}"))?
            .shared_vttbr()
            .map(|v| v & 0x0000_ffff_ffff_fffe)
            .ok_or_else(|| String::from("stage-2 domain without a shared root"))
    }

    /// What the CPU's stage 2 maps `ipa` to (the SMMU domain's own
    /// translation when shared).
    pub fn cpu_translate(&self, smmu: &Driver, domain: DomainId, ipa: u64) -> Option<u64> {
        match self.cpu.lock().as_ref() {
            Some(t) => t.query(ipa).map(|t| t.pa),
            None => smmu.translate(domain, ipa).ok().flatten().map(|t| t.pa),
        }
    }

    /// Short description for the VM lines: "stage 2 (shared with the CPU)"
    /// or "stage 1 (ASID n; CPU stage 2 separate)".
    pub fn describe(&self, smmu: &Driver, domain: DomainId) -> String {
        match self.stage {
            Stage::Stage2 => String::from("SMMU stage 2, shared with the CPU"),
            Stage::Stage1 => {
                let asid = smmu.domain_info(domain).ok().and_then(|i| i.asid);
                format!(
                    "SMMU stage 1 (ASID {:#x}), CPU stage 2 separate",
                    asid.unwrap_or(0)
                )
            }
        }
    }

    /// For a stage-1 domain: the checks that replace "VTTBR_EL2 == STE" (a
    /// stage-1 STE has no S2TTB): the STE is a stage-1 entry whose CD's
    /// TTB0 is the domain's root and whose ASID is the domain's; the CPU's
    /// root is its own table; and the CPU and the SMMU translate every
    /// `probe` IPA to the same PA. `None` for a shared stage 2.
    pub fn stage1_identity(
        &self,
        smmu: &Driver,
        domain: DomainId,
        sid: u32,
        vttbr: u64,
        probes: &[u64],
    ) -> Option<Result<String, String>> {
        (self.stage == Stage::Stage1).then(|| self.check_stage1(smmu, domain, sid, vttbr, probes))
    }

    fn check_stage1(
        &self,
        smmu: &Driver,
        domain: DomainId,
        sid: u32,
        vttbr: u64,
        probes: &[u64],
    ) -> Result<String, String> {
        let info = smmu
            .domain_info(domain)
            .map_err(|e| format!("domain_info: {e}"))?;
        let ste = smmu.ste(sid).map_err(|e| format!("ste: {e}"))?;
        if ste.config() != SteConfig::Stage1 {
            return Err(format!("STE config {:?}, not stage 1", ste.config()));
        }
        let cd_pa = ste.cd_paddr();
        // SAFETY: the CD is the domain's 64-byte, 64-byte aligned
        // identity-mapped driver allocation, alive while the domain is;
        // reading it races with nothing (the domain is idle).
        let (d0, d1) = unsafe {
            let p = cd_pa as *const u64;
            (p.read_volatile(), p.add(1).read_volatile())
        };
        let cd = smmuv3::cd::Cd([d0, d1, 0, 0, 0, 0, 0, 0]);
        if !cd.is_valid() || cd.ttb0() != info.root || Some(cd.asid()) != info.asid {
            return Err(format!(
                "CD at {cd_pa:#x}: valid {}, TTB0 {:#x} (domain root {:#x}), ASID {:#x} (domain {:?})",
                cd.is_valid(),
                cd.ttb0(),
                info.root,
                cd.asid(),
                info.asid
            ));
        }
        let cpu_vmid = (vttbr >> 48) as u16;
        let root = vttbr & 0x0000_ffff_ffff_fffe;
        if cpu_vmid != self.cpu_vmid || root != self.cpu_root(smmu, domain)? {
            return Err(format!(
                "VTTBR_EL2 {vttbr:#x}: VMID {cpu_vmid:#x} (VM {:#x}), root not the CPU stage 2",
                self.cpu_vmid
            ));
        }
        if root == info.root {
            return Err(String::from("CPU walks the SMMU's stage-1 tables"));
        }
        for &ipa in probes {
            let smmu_pa = smmu.translate(domain, ipa).ok().flatten().map(|t| t.pa);
            let cpu_pa = self.cpu_translate(smmu, domain, ipa);
            if smmu_pa.is_none() || smmu_pa != cpu_pa {
                return Err(format!(
                    "IPA {ipa:#x}: SMMU stage 1 -> {smmu_pa:x?}, CPU stage 2 -> {cpu_pa:x?}"
                ));
            }
        }
        Ok(format!(
            "STE stage 1, CD TTB0 {:#x} ASID {:#x}, S2VMID {:#x}; CPU VMID {cpu_vmid:#x}, own stage 2 at {root:#x}; {} IPAs translate alike",
            cd.ttb0(),
            cd.asid(),
            ste.vmid(),
            probes.len()
        ))
    }
}
