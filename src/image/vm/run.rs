//! Running a VM: its EL2 state ([`Vm::hcr`], [`Vm::vttbr`], load and
//! unload), the run loop and its exits (HVCs, trapped SMCs, stage-2 data
//! aborts, RELEASE), and the SMMU faults it collects. Split out of `vm.rs`
//! (a pure move).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::asm;

use aarch64_cpu::registers::{
    CNTHCTL_EL2, CNTVOFF_EL2, CPACR_EL1, DAIF, HCR_EL2, MPIDR_EL1, Readable, SCTLR_EL1, SP_EL1,
    VBAR_EL1, VMPIDR_EL2, VTCR_EL2, VTTBR_EL2, Writeable,
};
use smmuv3::fault::{self, FaultSummary};

use super::*;

/// How long DMA_FAULTS waits for a VM's fault records that another CPU may
/// still be handing over (see the call's handler).
const DMA_FAULTS_WAIT_NS: u64 = 20_000_000;
/// How often it looks again meanwhile.
const DMA_FAULTS_POLL_NS: u64 = 500_000;

impl Vm {
    /// The HCR_EL2 value while this VM runs: stage 2 on (VM), EL1 is
    /// AArch64 (RW), SMC trapped (TSC), HVC enabled (HCD = 0), physical
    /// IRQ/FIQ/SError routed to EL2 (IMO/FMO/AMO), WFI trapped (TWI),
    /// EL1 TLB and cache maintenance broadcast inner shareable (FB, BSU),
    /// set/way invalidation upgraded to clean+invalidate (SWIO).
    pub fn hcr() -> u64 {
        (HCR_EL2::VM::SET
            + HCR_EL2::SWIO::SET
            + HCR_EL2::FMO::SET
            + HCR_EL2::IMO::SET
            + HCR_EL2::AMO::SET
            + HCR_EL2::FB::SET
            + HCR_EL2::BSU.val(1)
            + HCR_EL2::TWI::SET
            + HCR_EL2::TSC::SET
            + HCR_EL2::RW::SET)
            .value
    }

    /// VTTBR_EL2 for this VM: the stage-2 root (from the SMMU domain) and
    /// its VMID.
    pub fn vttbr(&self, smmu: &Driver) -> Result<u64, String> {
        let info = smmu
            .domain_info(self.domain)
            .map_err(|e| format!("domain_info: {e}"))?;
        let root = self.hv_root().unwrap_or(info.root);
        Ok(root | u64::from(self.vmid) << 48)
    }

    /// Programs this CPU's EL2 (and initial EL1) state for the VM.
    fn load(&mut self, smmu: &Driver) -> Result<(), String> {
        let vttbr = self.vttbr(smmu)?;
        let midr: u64;
        // SAFETY: reading MIDR_EL1 has no side effects.
        unsafe { asm!("mrs {}, midr_el1", out(reg) midr, options(nomem, nostack)) };
        // SAFETY: VPIDR_EL2 only changes what EL1 reads as MIDR_EL1.
        unsafe { asm!("msr vpidr_el2, {}", in(reg) midr, options(nomem, nostack)) };
        VMPIDR_EL2.set(MPIDR_EL1.get());
        // EL1 may read the physical counter, not program the physical timer.
        CNTHCTL_EL2.set(CNTHCTL_EL2::EL1PCTEN::SET.value);
        CNTVOFF_EL2.set(0);
        SCTLR_EL1.set(SCTLR_EL1_MMU_OFF);
        CPACR_EL1.write(CPACR_EL1::FPEN::TrapNothing);
        VBAR_EL1.set(0);
        SP_EL1.set(RAM_IPA + RAM_SIZE);
        VTCR_EL2.set(self.vtcr);
        VTTBR_EL2.set(vttbr);
        HCR_EL2.set(Self::hcr());
        // SAFETY: barriers and TLB maintenance for the VM's own VMID (now
        // current): nothing cached from an earlier VM with this VMID
        // survives.
        unsafe {
            asm!(
                "isb",
                "tlbi vmalls12e1is",
                "dsb ish",
                "isb",
                options(nostack)
            )
        };
        Ok(())
    }

    /// Restores the hypervisor's EL2 state after the VM.
    fn unload() {
        HCR_EL2.set(HCR_EL2_HOST);
        VTTBR_EL2.set(0);
        // SAFETY: a barrier.
        unsafe { asm!("isb", options(nostack)) };
    }

    /// Runs the VM on this CPU until it stops; returns why.
    pub fn run(&mut self, smmu: &Driver) -> Stop {
        self.log.cpu = Some(smp::current_cpu());
        let daif = DAIF.get();
        self.vcpu.guest.x[..10].copy_from_slice(&self.args);
        self.vcpu.guest.elr = CODE_IPA;
        self.vcpu.guest.spsr = SPSR_EL1H;
        if let Err(e) = self.load(smmu) {
            println!("  VM {}: cannot load: {e}", self.name);
            Self::unload();
            return Stop::Runaway;
        }
        let stop = loop {
            // SAFETY: `load` configured this CPU's EL2 for the VM: HCR_EL2
            // with VM, RW, IMO/FMO/AMO, the domain's VTCR/VTTBR; SPSR is
            // EL1h. Its stage 2 maps only its own code, RAM and BAR.
            let v = unsafe { self.vcpu.enter() };
            self.log.exits += 1;
            if self.log.vttbr.is_none() {
                self.log.vttbr = Some(VTTBR_EL2.get());
                self.log.hcr = Some(HCR_EL2.get());
                self.log.vtcr = Some(VTCR_EL2.get());
            }
            let stop = match v {
                vector::SYNC => self.handle_sync(smmu),
                vector::IRQ => {
                    // Take the pending IRQ at EL2 with the usual handlers,
                    // then go back to the guest.
                    self.log.irq_exits += 1;
                    gic::enable_irqs();
                    gic::disable_irqs();
                    None
                }
                other => Some(Stop::Unexpected { vector: other }),
            };
            if let Some(s) = stop {
                break s;
            }
            if self.log.exits >= MAX_EXITS || self.log.aborts.len() >= MAX_ABORTS {
                break Stop::Runaway;
            }
        };
        Self::unload();
        DAIF.set(daif);
        route_events(smmu);
        self.collect_faults(smmu);
        self.log.stop = Some(stop);
        stop
    }

    fn handle_sync(&mut self, smmu: &Driver) -> Option<Stop> {
        let exit = self.vcpu.exit;
        let ec = exit.esr >> 26 & 0x3f;
        match ec {
            0x16 => self.hypercall(smmu, (exit.esr & 0xffff) as u16),
            0x17 => {
                // Trapped SMC: ELR points at the SMC itself.
                let g = &mut self.vcpu.guest;
                self.log.hvcs.push(HvcRecord {
                    fid: g.x[0],
                    imm: u32::MAX,
                    args: [g.x[1], g.x[2], g.x[3]],
                    ret: hvc::UNKNOWN_CALL,
                    tables_unchanged: None,
                });
                g.x[0] = hvc::UNKNOWN_CALL;
                g.elr += 4;
                None
            }
            0x24 => self.data_abort(),
            0x20 => Some(Stop::InstructionAbort {
                ipa: (exit.hpfar >> 4 & ((1 << 40) - 1)) << 12 | (exit.far & 0xfff),
                esr: exit.esr,
            }),
            0x01 => {
                self.vcpu.guest.elr += 4;
                None
            }
            _ => Some(Stop::Unhandled {
                ec,
                elr: self.vcpu.guest.elr,
            }),
        }
    }

    /// A stage-2 data abort: decode, record, give a faulting load POISON,
    /// skip the instruction.
    fn data_abort(&mut self) -> Option<Stop> {
        let exit = self.vcpu.exit;
        let dfsc = exit.esr & 0x3f;
        // Address size, translation, access flag, permission faults: the
        // ones HPFAR_EL2 is valid for.
        if dfsc >> 2 > 0b0011 {
            return Some(Stop::OtherDataAbort { esr: exit.esr });
        }
        let a = Abort {
            ipa: (exit.hpfar >> 4 & ((1 << 40) - 1)) << 12 | (exit.far & 0xfff),
            far: exit.far,
            hpfar: exit.hpfar,
            esr: exit.esr,
            elr: self.vcpu.guest.elr,
        };
        println!(
            "  VM {}: stage-2 data abort: {} IPA {:#x} (HPFAR_EL2 {:#x}, FAR_EL2 {:#x}), {}, ISV {} SRT x{}; skipped",
            self.name,
            if a.write() { "write to" } else { "read from" },
            a.ipa,
            a.hpfar,
            a.far,
            super::super::exceptions::FaultStatus(exit.esr),
            u8::from(a.isv()),
            a.srt()
        );
        if a.isv() && !a.write() && a.srt() < 31 {
            let sf = exit.esr >> 15 & 1 == 1;
            self.vcpu.guest.x[usize::from(a.srt())] = if sf {
                hvc::POISON
            } else {
                hvc::POISON & 0xffff_ffff
            };
        }
        self.vcpu.guest.elr += 4;
        self.log.aborts.push(a);
        self.log.last_abort = Some(a);
        None
    }

    fn hypercall(&mut self, smmu: &Driver, imm: u16) -> Option<Stop> {
        let x = [
            self.vcpu.guest.x[0],
            self.vcpu.guest.x[1],
            self.vcpu.guest.x[2],
            self.vcpu.guest.x[3],
            self.vcpu.guest.x[4],
        ];
        let mut out = [0u64; 3];
        let mut tables_unchanged = None;
        let mut stop = None;
        if imm == 0 && super::super::pviommu::is_call(x[0]) {
            // Logged in `log.pv` (not `log.hvcs`, whose rows count the
            // base interface's rejections).
            let pv = super::super::pviommu::call(self, smmu, &x);
            self.vcpu.guest.x[..4].copy_from_slice(&pv);
            return None;
        }
        match hvc::decode(imm, &x) {
            Err(code) => out[0] = code,
            Ok(Call::Report { device, .. }) if device >= self.edus.len() as u64 => {
                out[0] = hvc::BAD_ARGUMENT
            }
            Ok(Call::Report {
                check,
                status,
                detail,
                device,
            }) => self.log.reports.push(Report {
                check,
                device,
                status,
                detail,
            }),
            Ok(Call::Done { status }) => stop = Some(Stop::Done(status)),
            Ok(Call::DmaFaults) => {
                // The guest asks right after a DMA it expects to fault. Its
                // records are in the event queue, or in flight: drained by
                // another CPU's interrupt handler (or turned away because
                // one was draining) and not yet in the inbox. Wait for them,
                // bounded: an answer of "none" must mean none arrived within
                // DMA_FAULTS_WAIT_NS, not that they were still on their way.
                let mut new = self.collect_faults(smmu);
                let deadline = cpu::now_ns().saturating_add(DMA_FAULTS_WAIT_NS);
                while new.is_empty() && cpu::now_ns() < deadline {
                    cpu::delay_ns(DMA_FAULTS_POLL_NS);
                    new = self.collect_faults(smmu);
                }
                out = match new.first() {
                    Some(f) => [
                        new.len() as u64,
                        f.addr_range.map_or(f.ipa.unwrap_or(0), |r| r.0),
                        u64::from(f.kind.raw()),
                    ],
                    None => [0, 0, 0],
                };
            }
            Ok(Call::LastAbort) => {
                out = match self.log.last_abort.take() {
                    Some(a) => [0, a.ipa, a.esr],
                    None => [hvc::NOTHING, 0, 0],
                }
            }
            Ok(Call::Release { ipa, len }) => {
                let before = self.tables_snapshot(smmu);
                out[0] = self.release(smmu, ipa, len);
                if out[0] != 0 {
                    tables_unchanged =
                        Some(before.is_some() && before == self.tables_snapshot(smmu));
                }
            }
        }
        self.log.hvcs.push(HvcRecord {
            fid: x[0],
            imm: u32::from(imm),
            args: [x[1], x[2], x[3]],
            ret: out[0],
            tables_unchanged,
        });
        self.vcpu.guest.x[..3].copy_from_slice(&out);
        stop
    }

    /// RELEASE: validates, then takes the pages out of the stage 2 the CPU
    /// and the SMMU share. Driver-owned tables: `unmap_with` (the SMMU
    /// TLBI inside the driver; the hook invalidates the CPU's TLBs by the
    /// VM's CPU VMID, whatever VMID the SMMU uses). Hypervisor-owned
    /// tables: unmap in [`HvStage2`], the CPU TLBIs, then
    /// `Smmu::invalidate`; the table pages stay (pages-only tables, freed
    /// with the VM).
    fn release(&mut self, smmu: &Driver, ipa: u64, len: u64) -> u64 {
        let ram_end = RAM_IPA + RAM_SIZE;
        if !ipa.is_multiple_of(PAGE) || !(RAM_IPA..ram_end).contains(&ipa) {
            return hvc::BAD_IPA;
        }
        let Some(end) = ipa.checked_add(len) else {
            return hvc::BAD_LENGTH;
        };
        if len == 0 || !len.is_multiple_of(PAGE) || end > ram_end {
            return hvc::BAD_LENGTH;
        }
        let mapped = (ipa..end)
            .step_by(PAGE as usize)
            .all(|p| self.translate(smmu, p).is_some());
        if !mapped {
            return hvc::BAD_IPA;
        }
        let block = self.translate(smmu, ipa).map_or(0, |t| t.size);
        let cpu_vmid = self.vmid;
        let how = if let Some(hv) = self.hv.as_mut() {
            if let Err(e) = hv.unmap(ipa, len) {
                println!(
                    "  VM {}: RELEASE {ipa:#x}+{len:#x}: HvStage2 unmap: {e}",
                    self.name
                );
                return hvc::FAILED;
            }
            cpu_tlb_invalidate(cpu_vmid, ipa, len);
            self.log.cpu_tlbis.push((ipa, len));
            self.log.cpu_tlbi_vmids.push((cpu_vmid, None));
            // Stage-1 SMMU domain: its own tables lose the page too (the
            // driver's TLBI_NH_VA + SYNC inside `unmap`).
            let smmu_side = match self.stage {
                Stage::Stage2 => smmu.invalidate(self.domain, ipa, len),
                Stage::Stage1 => smmu.unmap(self.domain, ipa, len),
            };
            if let Err(e) = smmu_side {
                println!(
                    "  VM {}: RELEASE {ipa:#x}+{len:#x}: SMMU side: {e}",
                    self.name
                );
                return hvc::FAILED;
            }
            self.log.smmu_invalidations.push((ipa, len));
            match self.stage {
                Stage::Stage2 => format!(
                    "unmapped in HvStage2, CPU TLBI (VMID {cpu_vmid:#x}), then Smmu::invalidate (VMID {:#x}); no table freed",
                    self.smmu_vmid
                ),
                Stage::Stage1 => format!(
                    "unmapped in HvStage2 (CPU), CPU TLBI (VMID {cpu_vmid:#x}), then Smmu::unmap of the stage-1 domain (TLBI_NH_VA)"
                ),
            }
        } else {
            let hooks = &mut self.log.cpu_tlbis;
            let vmids = &mut self.log.cpu_tlbi_vmids;
            let r = smmu.unmap_with(self.domain, ipa, len, &mut |inv| {
                // The hook names the SMMU's VMID; the CPU's TLBs are
                // tagged with the CPU's.
                cpu_tlb_invalidate(cpu_vmid, inv.ipa, inv.len);
                hooks.push((inv.ipa, inv.len));
                vmids.push((cpu_vmid, Some(inv.vmid)));
            });
            if let Err(e) = r {
                println!("  VM {}: RELEASE {ipa:#x}+{len:#x}: unmap: {e}", self.name);
                return hvc::FAILED;
            }
            format!(
                "unmapped ({}); CPU TLB hook ran for {} by CPU VMID {cpu_vmid:#x} (SMMU VMID {:#x})",
                if block <= len {
                    "no split"
                } else if self.split_in_one_store {
                    "split in one store"
                } else {
                    "split: break-before-make"
                },
                super::super::console::ranges(&self.log.cpu_tlbis),
                self.smmu_vmid
            )
        };
        self.log.released.push(ipa);
        println!(
            "  VM {}: RELEASE IPA {ipa:#x}+{len:#x} (inside a {} KiB leaf): {how}",
            self.name,
            block >> 10,
        );
        0
    }

    /// Takes the SMMU events routed to this VM's StreamID, records and
    /// prints them; returns the new faulting DMAs.
    fn collect_faults(&mut self, smmu: &Driver) -> Vec<FaultSummary> {
        route_events(smmu);
        let mut events = Vec::new();
        {
            let mut inbox = INBOX.lock();
            for sid in &self.sids {
                events.extend(inbox.iter().filter(|e| e.sid == *sid));
            }
            inbox.retain(|e| !self.sids.contains(&e.sid));
        }
        let new = fault::coalesce(&events, PAGE);
        for f in &new {
            let users: Vec<String> = self
                .edus
                .iter()
                .filter(|e| e.stream_id == Some(f.sid))
                .map(|e| format!("{}", e.bdf))
                .collect();
            if users.len() > 1 {
                println!(
                    "  fault: {f} [VM {}, sid {:#06x} shared by {} (alias)]",
                    self.name,
                    f.sid,
                    users.join("+")
                );
            } else {
                println!("  fault: {f} [VM {}, {} edu]", self.name, users.join("+"));
            }
        }
        self.log.dma_faults.extend(new.iter().cloned());
        new
    }
}
