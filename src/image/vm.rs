//! VMs: EL1 guests confined by the SMMU domain's stage-2 tables, which the
//! CPU uses as its own stage 2.
//!
//! [`Vm::create`] carves the VM's memory from the image's DMA allocator (a
//! code page and 4 MiB of RAM, naturally aligned so that part of it maps as
//! a 2 MiB block), copies the guest program ([`super::guest`]) into the code
//! page, builds its stage 2, maps exactly the code (read-only), the RAM
//! (read-write) and the BAR0 of each of its devices (one VM per isolation
//! group: device `i`'s BAR at [`guest::bar_ipa`]`(i)`), and attaches every
//! StreamID of the group at once (`Smmu::attach_group`). The VM's
//! guest-physical layout is in `guest.rs`: RAM at IPA [`RAM_IPA`], not at
//! its physical address.
//!
//! Its stage 2 follows one of the driver's two ownership models
//! ([`TableModel`]): an SMMU domain whose tables the driver builds
//! (`create_domain`, `map_with`, `unmap_with` + the CPU TLB hook), or
//! tables the hypervisor builds with `aarch64-paging`'s stage-2 regime
//! ([`HvStage2`]) and the SMMU merely points at (`create_external_domain`,
//! `invalidate`). Either way VTTBR_EL2 and the STE name the same root.
//! Its VMID follows one of two policies ([`VmidPolicy`]): STE.S2VMID = the
//! CPU's VMID, or a private SMMU VMID (the CPU keeps its own in VTTBR_EL2).
//!
//! [`Vm::run`] runs the VM on the calling CPU until it stops: it programs
//! this CPU's EL2 state (HCR_EL2, VTCR_EL2 = the domain's
//! [`Stage2Config::vtcr`], VTTBR_EL2 = the domain's stage-2 root | VMID << 48,
//! VMPIDR/VPIDR, the timer controls, SCTLR_EL1 with stage 1 off), enters the
//! guest at EL1h and handles its exits (`vcpu.rs` does the world switch):
//! HVCs (`hvc.rs`), trapped SMCs, stage-2 data aborts (decoded from
//! HPFAR_EL2 and FAR_EL2, recorded, the instruction skipped), IRQs (taken by
//! the hypervisor's own handlers, then the guest resumes), WFI. Anything
//! else stops the VM with a typed [`Stop`]; nothing a guest does ends the
//! image.
//!
//! SMMU events are attributed to VMs by StreamID ([`route_events`]).
//!
//! On a stage-1-only SMMU the VM's SMMU domain is a stage-1 domain and its
//! CPU gets hypervisor-owned tables with the same IPA -> PA layout
//! (`vmstage.rs`). Where the SMMU can nest, the guest may own the stage 1
//! of its devices through the pvIOMMU hypercalls (`pviommu.rs`).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::asm;

use aarch64_cpu::registers::{ID_AA64MMFR2_EL1, Readable, VTTBR_EL2, Writeable};
use smmuv3::Dma;
use smmuv3::domain::{DomainId, DomainOptions, ExternalStage2, Stage};
use smmuv3::event::Event;
use smmuv3::fault::FaultSummary;
use smmuv3::stage2::{MapOptions, Perm, Translation};
use spin::Mutex;

use super::console::println;
use super::demo::Driver;
use super::dma::ImageHal;
use super::edu::Edu;
use super::guest::{self, CODE_IPA, RAM_IPA, RAM_SIZE};
use super::hvc::{self, Call};
use super::hvtables::{HvMemory, HvStage2};
use super::vcpu::{Vcpu, vector};
use super::{cpu, gic, iommu, smp};

mod run;

/// Translation granule of every VM's stage 2.
pub const PAGE: u64 = 4096;
/// SPSR_EL2 for the guest's first entry: EL1h, D, A, I, F masked.
const SPSR_EL1H: u64 = 0x3c5;
/// SCTLR_EL1 with stage 1 and caches off: only the RES1 bits of ARMv8.0
/// (11, 20, 22, 23, 28, 29).
const SCTLR_EL1_MMU_OFF: u64 = 0x30d0_0800;
/// HCR_EL2 the image boots with (and restores after a VM): RW only.
const HCR_EL2_HOST: u64 = 1 << 31;
/// Exits after which a VM is stopped (a guest stuck in a fault loop).
pub const MAX_EXITS: u32 = 100_000;
/// Stage-2 data aborts after which a VM is stopped.
pub const MAX_ABORTS: usize = 256;

/// Who builds and edits a VM's stage-2 tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableModel {
    /// The driver (an SMMU domain from `create_domain`): the CPU walks the
    /// domain's tables; RAM in 2 MiB blocks; RELEASE is `unmap_with` with
    /// the CPU TLB hook.
    DriverOwned,
    /// The hypervisor, with `aarch64-paging`'s stage-2 regime
    /// ([`HvStage2`], 4 KiB pages only); the SMMU's STE points at them
    /// (`create_external_domain`); RELEASE unmaps in those tables, runs
    /// the CPU TLBIs, then `Smmu::invalidate`.
    HypervisorOwned,
}

impl TableModel {
    /// As the VM line and the results table print it.
    pub fn name(self) -> &'static str {
        match self {
            Self::DriverOwned => "driver-owned",
            Self::HypervisorOwned => "hypervisor-owned (aarch64-paging)",
        }
    }
}

/// Which VMID the SMMU uses for a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmidPolicy {
    /// STE.S2VMID = the CPU's VTTBR_EL2 VMID (`vmid: Some(cpu_vmid)`).
    Cpu,
    /// A VMID from the SMMU's private space (`vmid: None`); the CPU uses
    /// its own, and the CPU TLB hook invalidates by the CPU's VMID.
    Private,
}

impl VmidPolicy {
    /// As the results table prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "shared with the CPU",
            Self::Private => "private SMMU VMID",
        }
    }
}

/// How to build a VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Its name in reports.
    pub name: String,
    /// The devices passed through: one isolation group, in enumeration
    /// order (device `i`'s BAR0 at [`guest::bar_ipa`]`(i)`).
    pub edus: Vec<Edu>,
    /// Every StreamID of the group, attached together.
    pub sids: Vec<u32>,
    /// Its CPU VMID (VTTBR_EL2).
    pub vmid: u16,
    /// Whether the SMMU uses the CPU VMID or a private one.
    pub vmid_policy: VmidPolicy,
    /// Who owns its stage-2 tables.
    pub tables: TableModel,
    /// Driver-owned tables: tell the driver the CPU may replace a block by
    /// a table in one store (only honoured if this CPU has FEAT_BBM level
    /// 2); `false` makes a split break before make.
    pub cpu_bbml2: bool,
    /// The first word of its data pattern.
    pub seed: u64,
    /// The byte its RAM is filled with before it runs.
    pub fill: u8,
    /// The guest program's phases ([`guest::phase`]).
    pub phases: u64,
    /// The address its "foreign" phase probes (another VM's RAM PA).
    pub foreign: u64,
}

/// A stage-2 data abort the guest took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort {
    /// The faulting IPA: HPFAR_EL2.FIPA << 12 | FAR_EL2[11:0].
    pub ipa: u64,
    /// FAR_EL2 (the guest's VA: equal to the IPA with stage 1 off).
    pub far: u64,
    /// HPFAR_EL2 as read.
    pub hpfar: u64,
    /// ESR_EL2.
    pub esr: u64,
    /// ELR_EL2: the faulting instruction.
    pub elr: u64,
}

impl Abort {
    /// ISS.WnR: a write.
    pub fn write(&self) -> bool {
        self.esr >> 6 & 1 == 1
    }
    /// ISS.ISV: the syndrome (SAS, SRT, ...) is valid.
    pub fn isv(&self) -> bool {
        self.esr >> 24 & 1 == 1
    }
    /// ISS.SRT: the transfer register (valid with ISV).
    pub fn srt(&self) -> u8 {
        (self.esr >> 16 & 0x1f) as u8
    }
    /// ISS.DFSC.
    pub fn dfsc(&self) -> u8 {
        (self.esr & 0x3f) as u8
    }
}

/// One hypercall the guest made, and the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HvcRecord {
    /// x0 (function ID), or the SMC's x0 for a trapped SMC.
    pub fid: u64,
    /// The HVC immediate (`u32::MAX` for an SMC).
    pub imm: u32,
    /// x1..x3.
    pub args: [u64; 3],
    /// What x0 returned.
    pub ret: u64,
    /// For a rejected RELEASE: whether the stage-2 tables were unchanged.
    pub tables_unchanged: Option<bool>,
}

/// One REPORT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Check ID.
    pub check: u64,
    /// The device it is about (x4: index into the VM's devices).
    pub device: u64,
    /// 0 pass, 1 fail.
    pub status: u64,
    /// Detail.
    pub detail: u64,
}

/// Why a VM stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// DONE(status).
    Done(u64),
    /// An instruction abort (a jump outside its code, or to VBAR_EL1 = 0).
    InstructionAbort {
        /// The IPA.
        ipa: u64,
        /// ESR_EL2.
        esr: u64,
    },
    /// A data abort that is not a stage-2 translation/permission/access
    /// fault (external abort, ...).
    OtherDataAbort {
        /// ESR_EL2.
        esr: u64,
    },
    /// An exception class the hypervisor does not handle.
    Unhandled {
        /// ESR_EL2.EC.
        ec: u64,
        /// ELR_EL2.
        elr: u64,
    },
    /// An SError, FIQ or an exit from AArch32.
    Unexpected {
        /// The vector number.
        vector: u64,
    },
    /// More than [`MAX_EXITS`] exits or [`MAX_ABORTS`] aborts.
    Runaway,
}

/// Everything observed while a VM ran.
#[derive(Debug, Default, Clone)]
pub struct VmLog {
    /// The CPU it ran on.
    pub cpu: Option<usize>,
    /// VTTBR_EL2 as read back at the first exit (while the VM was loaded).
    pub vttbr: Option<u64>,
    /// HCR_EL2 as read back at the first exit.
    pub hcr: Option<u64>,
    /// VTCR_EL2 as read back at the first exit.
    pub vtcr: Option<u64>,
    /// REPORTs.
    pub reports: Vec<Report>,
    /// Every hypercall (and trapped SMC).
    pub hvcs: Vec<HvcRecord>,
    /// Every stage-2 data abort.
    pub aborts: Vec<Abort>,
    /// The faulting DMAs of its devices, attributed by StreamID.
    pub dma_faults: Vec<FaultSummary>,
    /// Why it stopped.
    pub stop: Option<Stop>,
    /// Exits, and how many were IRQs.
    pub exits: u32,
    /// IRQ exits.
    pub irq_exits: u32,
    /// The ranges invalidated on the CPU, (IPA, length): by the driver's
    /// unmap hook, or by the hypervisor itself for its own tables.
    pub cpu_tlbis: Vec<(u64, u64)>,
    /// The VMID each CPU invalidation ran with (the CPU's), and the VMID
    /// the driver's hook was handed (the SMMU's; `None` for
    /// hypervisor-owned tables).
    pub cpu_tlbi_vmids: Vec<(u16, Option<u16>)>,
    /// `Smmu::invalidate` calls for hypervisor-owned tables, (IPA, length),
    /// each made after the CPU TLBIs for the range.
    pub smmu_invalidations: Vec<(u64, u64)>,
    /// Released pages.
    pub released: Vec<u64>,
    /// pvIOMMU calls (`pviommu.rs`).
    pub pv: Vec<super::pviommu::PvRecord>,
    /// The nested translations its accepted CDs gave (walked by the
    /// hypervisor).
    pub nested_walks: Vec<super::pviommu::NestedWalk>,
    last_abort: Option<Abort>,
}

impl VmLog {
    /// The REPORT for `check` about device 0, if exactly one was made.
    pub fn report(&self, check: u64) -> Option<Report> {
        self.report_for(check, 0)
    }

    /// The REPORT for `check` about device `device`, if exactly one was
    /// made.
    pub fn report_for(&self, check: u64, device: u64) -> Option<Report> {
        let mut it = self
            .reports
            .iter()
            .filter(|r| r.check == check && r.device == device);
        match (it.next(), it.next()) {
            (Some(r), None) => Some(*r),
            _ => None,
        }
    }
}

/// A VM: its memory, its SMMU domain (= its stage 2), its vCPU.
#[derive(Debug)]
pub struct Vm {
    /// Its name.
    pub name: String,
    /// Its devices (one isolation group).
    pub edus: Vec<Edu>,
    /// The StreamID its first device's DMA arrives with (behind a
    /// PCIe-to-PCI bridge: the alias every device of the group uses).
    pub sid: u32,
    /// Every StreamID attached (the whole group).
    pub sids: Vec<u32>,
    /// The SMMU domain: its tables (driver-owned), or the STE's view of the
    /// hypervisor's.
    pub domain: DomainId,
    /// Its CPU VMID (VTTBR_EL2).
    pub vmid: u16,
    /// The VMID the SMMU uses (STE.S2VMID).
    pub smmu_vmid: u16,
    /// Its VMID policy.
    pub vmid_policy: VmidPolicy,
    /// Who owns its tables (the CPU's stage 2; on a stage-1-only SMMU
    /// always the hypervisor's, see [`super::vmstage`]).
    pub tables: TableModel,
    /// The stage its SMMU domain translates with: stage 2 shares the
    /// CPU's tables; stage 1 (an SMMU without stage 2) is a separate
    /// driver-owned stage-1 domain with the same IPA -> PA mappings.
    pub stage: Stage,
    /// Driver-owned tables: a split replaces a block in one store (the
    /// domain was created with `cpu_bbml2` and the SMMU has BBML = 2);
    /// otherwise it breaks before make.
    pub split_in_one_store: bool,
    /// The byte its RAM was filled with.
    pub fill: u8,
    /// VTCR_EL2 while it runs.
    pub vtcr: u64,
    hv: Option<HvStage2>,
    ram: Option<Dma<ImageHal>>,
    code: Option<Dma<ImageHal>>,
    vcpu: alloc::boxed::Box<Vcpu>,
    args: [u64; 10],
    /// What happened while it ran.
    pub log: VmLog,
}

/// The stage-2 geometry of every VM with driver-owned tables: 4K granule,
/// 40-bit IPA, 44-bit output.
pub fn stage2_config() -> Result<smmuv3::stage2::Stage2Config, String> {
    super::demo::vm_stage2()
}

/// The BAR0 size of `edu` (at least a page).
fn bar_size(edu: &Edu) -> u64 {
    super::boot()
        .pci
        .iter()
        .find(|f| f.bdf == edu.bdf)
        .and_then(|f| f.bar(0))
        .map_or(0, |b| b.size)
        .max(PAGE)
}

impl Vm {
    /// Builds a VM for `spec.edus` (see the module doc).
    pub fn create(smmu: &Driver, spec: &VmSpec) -> Result<Vm, String> {
        let first = *spec.edus.first().ok_or("a VM needs a device")?;
        let sid = first
            .stream_id
            .ok_or_else(|| format!("{}: no StreamID", first.bdf))?;
        if spec.edus.len() > guest::MAX_DEVICES {
            return Err(format!(
                "{} devices (at most {})",
                spec.edus.len(),
                guest::MAX_DEVICES
            ));
        }
        for e in &spec.edus {
            if !e.stream_id.is_some_and(|s| spec.sids.contains(&s)) {
                return Err(format!("{}: its StreamID is not in the group", e.bdf));
            }
            if bar_size(e) > guest::BAR_STRIDE {
                return Err(format!(
                    "{}: BAR0 larger than {:#x}",
                    e.bdf,
                    guest::BAR_STRIDE
                ));
            }
        }
        let program = guest::code();
        if program.len() as u64 > PAGE {
            return Err(format!("guest program is {} bytes", program.len()));
        }
        let dma = |size: u64| {
            Dma::<ImageHal>::new(size as usize, size as usize, true).map_err(|e| format!("{e}"))
        };
        let code = dma(PAGE)?;
        let ram = dma(RAM_SIZE)?;
        // SAFETY: both regions are exclusively owned, identity-mapped RAM of
        // at least these sizes; no device or guest uses them yet.
        unsafe {
            core::ptr::copy_nonoverlapping(program.as_ptr(), code.vaddr(), program.len());
            core::ptr::write_bytes(ram.vaddr(), spec.fill, RAM_SIZE as usize);
        }
        // The guest reads with stage 1 off (non-cacheable): write back.
        cpu::dcache_clean(code.vaddr() as usize, PAGE as usize);
        cpu::dcache_clean(ram.vaddr() as usize, RAM_SIZE as usize);
        let smmu_vmid = match spec.vmid_policy {
            VmidPolicy::Cpu => Some(spec.vmid),
            VmidPolicy::Private => None,
        };
        let stage = super::vmstage::smmu_stage(smmu)?;
        // A stage-1 SMMU domain cannot be the CPU's stage 2: the CPU gets
        // hypervisor-owned tables (the SMMU domain is created below).
        let tables = match stage {
            Stage::Stage1 => TableModel::HypervisorOwned,
            Stage::Stage2 => spec.tables,
        };
        let (domain, hv, split_in_one_store) = match tables {
            TableModel::DriverOwned => {
                let stage2 = stage2_config()?;
                let cpu_bbml2 = spec.cpu_bbml2 && cpu_bbm_level() >= 2;
                let domain = smmu
                    .create_domain(DomainOptions {
                        vmid: smmu_vmid,
                        cpu_bbml2,
                        ..DomainOptions::new(stage2)
                    })
                    .map_err(|e| format!("create_domain: {e}"))?;
                let one_store = cpu_bbml2 && smmu.features().bbml >= 2;
                (domain, None, one_store)
            }
            TableModel::HypervisorOwned => {
                let mut hv = HvStage2::new();
                let m = |hv: &mut HvStage2, ipa: u64, pa: u64, len: u64, what| {
                    hv.map_as(ipa, pa, len, what)
                        .map_err(|e| format!("HvStage2 map IPA {ipa:#x}+{len:#x}: {e}"))
                };
                m(&mut hv, CODE_IPA, code.paddr(), PAGE, HvMemory::Code)?;
                for (i, e) in spec.edus.iter().enumerate() {
                    m(
                        &mut hv,
                        guest::bar_ipa(i),
                        e.bar0 as u64,
                        bar_size(e),
                        HvMemory::Device,
                    )?;
                }
                m(&mut hv, RAM_IPA, ram.paddr(), RAM_SIZE, HvMemory::Ram)?;
                if stage == Stage::Stage1 {
                    let domain = super::vmstage::create_stage1_domain(smmu)?;
                    return Vm::finish(smmu, spec, sid, stage, domain, Some(hv), code, ram);
                }
                let domain = smmu
                    .create_external_domain(ExternalStage2 {
                        vtcr: HvStage2::vtcr(),
                        root: hv.root(),
                        vmid: smmu_vmid,
                        access_flag_fault_disable: true,
                    })
                    .map_err(|e| format!("create_external_domain: {e}"))?;
                (domain, Some(hv), false)
            }
        };
        Vm::finish_with(
            smmu,
            spec,
            sid,
            stage,
            domain,
            hv,
            code,
            ram,
            tables,
            split_in_one_store,
        )
    }

    /// [`Vm::create`]'s end for a stage-1 SMMU domain: CPU tables
    /// hypervisor-owned, SMMU tables driver-owned (stage 1).
    #[allow(clippy::too_many_arguments)]
    fn finish(
        smmu: &Driver,
        spec: &VmSpec,
        sid: u32,
        stage: Stage,
        domain: DomainId,
        hv: Option<HvStage2>,
        code: Dma<ImageHal>,
        ram: Dma<ImageHal>,
    ) -> Result<Vm, String> {
        Vm::finish_with(
            smmu,
            spec,
            sid,
            stage,
            domain,
            hv,
            code,
            ram,
            TableModel::HypervisorOwned,
            false,
        )
    }

    /// Builds the [`Vm`] around its domain and memory, maps and attaches.
    #[allow(clippy::too_many_arguments)]
    fn finish_with(
        smmu: &Driver,
        spec: &VmSpec,
        sid: u32,
        stage: Stage,
        domain: DomainId,
        hv: Option<HvStage2>,
        code: Dma<ImageHal>,
        ram: Dma<ImageHal>,
        tables: TableModel,
        split_in_one_store: bool,
    ) -> Result<Vm, String> {
        let vtcr = match tables {
            TableModel::HypervisorOwned => HvStage2::vtcr(),
            TableModel::DriverOwned => stage2_config()?.vtcr(),
        };
        let smmu_vmid = smmu.domain_info(domain).map_or(0, |i| i.vmid);
        let vm = Vm {
            name: spec.name.clone(),
            edus: spec.edus.clone(),
            sid,
            sids: spec.sids.clone(),
            domain,
            vmid: spec.vmid,
            smmu_vmid,
            vmid_policy: spec.vmid_policy,
            tables,
            stage,
            split_in_one_store,
            fill: spec.fill,
            vtcr,
            hv,
            args: [
                RAM_IPA,
                RAM_SIZE,
                guest::bar_ipa(0),
                spec.foreign,
                spec.seed,
                spec.phases,
                guest::UNMAPPED_DMA_IPA,
                guest::BALLOON_PAGE_IPA,
                guest::UNMAPPED_CPU_IPA,
                spec.edus.len() as u64,
            ],
            ram: Some(ram),
            code: Some(code),
            vcpu: alloc::boxed::Box::default(),
            log: VmLog::default(),
        };
        if let Err(e) = vm.map_all(smmu) {
            let _ = vm.destroy(smmu);
            return Err(e);
        }
        Ok(vm)
    }

    /// Driver-owned tables: maps code, each BAR0 and RAM. Then attaches
    /// the group.
    fn map_all(&self, smmu: &Driver) -> Result<(), String> {
        if self.tables == TableModel::DriverOwned || self.stage == Stage::Stage1 {
            let map = |ipa: u64, pa: u64, len: u64, opts: MapOptions| {
                smmu.map_with(self.domain, ipa, pa, len, &opts)
                    .map_err(|e| format!("map IPA {ipa:#x}+{len:#x}: {e}"))
            };
            // Code: read and execute, never writable.
            map(
                CODE_IPA,
                self.code_pa(),
                PAGE,
                MapOptions {
                    execute: true,
                    blocks: false,
                    ..MapOptions::normal(Perm::Read)
                },
            )?;
            // Each BAR0: Device-nGnRE, execute-never.
            for (i, e) in self.edus.iter().enumerate() {
                map(
                    guest::bar_ipa(i),
                    e.bar0 as u64,
                    bar_size(e),
                    MapOptions::device(),
                )?;
            }
            // RAM: read-write, execute-never, 2 MiB blocks (the balloon
            // splits one when it takes a page out of it).
            map(
                RAM_IPA,
                self.ram_pa(),
                RAM_SIZE,
                MapOptions {
                    execute: false,
                    ..MapOptions::normal(Perm::ReadWrite)
                },
            )?;
        }
        smmu.attach_group(self.domain, &self.sids)
            .map_err(|e| format!("attach_group {}: {e}", super::console::hex(&self.sids)))
    }

    /// What its stage 2 translates `ipa` to, whoever owns the tables.
    pub fn translate(&self, smmu: &Driver, ipa: u64) -> Option<Translation> {
        match &self.hv {
            Some(hv) => hv.query(ipa),
            None => smmu.translate(self.domain, ipa).ok().flatten(),
        }
    }

    /// Its stage-2 tables word for word (the driver's snapshot, or every
    /// descriptor of the hypervisor's tables below 256 MiB).
    pub fn tables_snapshot(&self, smmu: &Driver) -> Option<Vec<u64>> {
        match &self.hv {
            Some(hv) => Some(
                hv.snapshot(1 << 28)
                    .into_iter()
                    .flat_map(|(a, b, l)| [a as u64, b as u64, l as u64])
                    .collect(),
            ),
            None => smmu.stage2_snapshot(self.domain).ok(),
        }
    }

    /// The hypervisor-owned tables' root, if it owns them.
    pub fn hv_root(&self) -> Option<u64> {
        self.hv.as_ref().map(HvStage2::root)
    }

    /// The devices as `A+B` (BDFs).
    pub fn devices(&self) -> String {
        self.edus
            .iter()
            .map(|e| format!("{}", e.bdf))
            .collect::<Vec<_>>()
            .join("+")
    }

    /// The phases its guest runs (entry x5, [`guest::phase`]).
    pub fn phases(&self) -> u64 {
        self.args[5]
    }

    /// Sets the address its "foreign" phase probes (entry x3).
    pub fn set_foreign(&mut self, addr: u64) {
        self.args[3] = addr;
    }

    /// Physical address of its RAM.
    pub fn ram_pa(&self) -> u64 {
        self.ram.as_ref().map_or(0, |r| r.paddr())
    }

    /// Physical address of its code page.
    pub fn code_pa(&self) -> u64 {
        self.code.as_ref().map_or(0, |c| c.paddr())
    }

    /// The 64-bit word at RAM offset `off` as memory holds it (the CPU's
    /// cached copy invalidated first: the guest and its device write
    /// around the cache).
    pub fn ram_word(&self, off: u64) -> Option<u64> {
        let ram = self.ram.as_ref()?;
        if !off.is_multiple_of(8) || off >= RAM_SIZE {
            return None;
        }
        let p = ram.vaddr() as usize + off as usize;
        cpu::dcache_clean_invalidate(p, 8);
        // SAFETY: in bounds of the owned RAM region, 8-byte aligned.
        Some(unsafe { (p as *const u64).read_volatile() })
    }

    /// The first RAM offset outside `skip` whose byte is not the fill byte.
    pub fn first_unfilled(&self, skip: &[core::ops::Range<u64>]) -> Option<u64> {
        let ram = self.ram.as_ref()?;
        cpu::dcache_clean_invalidate(ram.vaddr() as usize, RAM_SIZE as usize);
        let word = u64::from_ne_bytes([self.fill; 8]);
        (0..RAM_SIZE).step_by(8).find(|&off| {
            if skip.iter().any(|r| r.contains(&off)) {
                return false;
            }
            // SAFETY: in bounds of the owned RAM region, 8-byte aligned.
            let v = unsafe { (ram.vaddr().add(off as usize) as *const u64).read_volatile() };
            v != word
        })
    }

    /// The code page's bytes as the guest sees them.
    pub fn code_intact(&self) -> bool {
        let Some(code) = self.code.as_ref() else {
            return false;
        };
        let program = guest::code();
        cpu::dcache_clean_invalidate(code.vaddr() as usize, PAGE as usize);
        // SAFETY: the owned code page holds at least `program.len()` bytes.
        let now = unsafe { core::slice::from_raw_parts(code.vaddr(), program.len()) };
        now == program
    }

    /// Detaches the device, destroys the domain, frees the memory (leaked
    /// instead if the SMMU may still reach it).
    pub fn destroy(mut self, smmu: &Driver) -> Result<(), String> {
        let detached = match smmu.detach_group(&self.sids) {
            Ok(()) | Err(smmuv3::Error::SidNotAttached(_)) => true,
            Err(e) => {
                println!("  VM {}: detach: {e}", self.name);
                false
            }
        };
        let destroyed = detached
            && smmu
                .destroy_domain(self.domain)
                .map_err(|e| println!("  VM {}: destroy_domain: {e}", self.name))
                .is_ok();
        {
            INBOX.lock().retain(|e| !self.sids.contains(&e.sid));
        }
        if destroyed {
            // Only now may the hypervisor-owned tables go (the SMMU no
            // longer walks them).
            drop(self.hv.take());
            Ok(())
        } else {
            core::mem::forget(self.ram.take());
            core::mem::forget(self.code.take());
            core::mem::forget(self.hv.take());
            Err(format!(
                "VM {}: domain not destroyed; memory leaked",
                self.name
            ))
        }
    }
}

/// ID_AA64MMFR2_EL1.BBM: the CPU's break-before-make level (2: a block
/// can be replaced by a table of the same translations in one store).
pub fn cpu_bbm_level() -> u64 {
    ID_AA64MMFR2_EL1.read(ID_AA64MMFR2_EL1::BBM)
}

/// SMMU events not yet taken by their VM, in arrival order (a `Vec`, not a
/// `BTreeMap` by StreamID: a few VMs, and the image then carries no second
/// B-tree instantiation).
static INBOX: Mutex<Vec<Event>> = Mutex::new(Vec::new());

/// Takes every event the SMMU recorded so far and files it under its
/// StreamID, for the VM that owns it.
pub fn route_events(smmu: &Driver) {
    let events = iommu::take_events(smmu);
    if events.is_empty() {
        return;
    }
    INBOX.lock().extend(events);
}

/// The CPU side of invalidating `[ipa, ipa + len)` of VMID `vmid`'s stage 2,
/// after its descriptors changed: TLBI IPAS2E1IS per page (TLBI
/// VMALLS12E1IS past 64 pages), DSB ISH, TLBI VMALLE1IS (stage-1+2 combined
/// entries), DSB ISH, ISB. TLBIs act on the current VMID, so VTTBR_EL2 is
/// switched to `vmid` for the duration if it holds another one (IRQs
/// masked), then restored. The `IS` forms reach the other CPU, where the VM
/// may be running.
pub fn cpu_tlb_invalidate(vmid: u16, ipa: u64, len: u64) {
    gic::without_irqs(|| {
        let saved = VTTBR_EL2.get();
        let switch = (saved >> 48) as u16 != vmid;
        if switch {
            VTTBR_EL2.set(u64::from(vmid) << 48);
            // SAFETY: a barrier: the TLBIs below see the new VMID.
            unsafe { asm!("isb", options(nostack)) };
        }
        // SAFETY: barrier + TLB maintenance; invalidating never changes
        // memory, and the descriptors were already updated.
        unsafe { asm!("dsb ishst", options(nostack)) };
        let pages = len.div_ceil(PAGE);
        if pages > 64 {
            // SAFETY: as above.
            unsafe { asm!("tlbi vmalls12e1is", options(nostack)) };
        } else {
            for p in 0..pages {
                let arg = (ipa + p * PAGE) >> 12;
                // SAFETY: as above.
                unsafe { asm!("tlbi ipas2e1is, {}", in(reg) arg, options(nostack)) };
            }
        }
        // SAFETY: as above.
        unsafe {
            asm!(
                "dsb ish",
                "tlbi vmalle1is",
                "dsb ish",
                "isb",
                options(nostack)
            )
        };
        if switch {
            VTTBR_EL2.set(saved);
            // SAFETY: a barrier.
            unsafe { asm!("isb", options(nostack)) };
        }
    });
}
