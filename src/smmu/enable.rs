//! Bring-up and shutdown: the architecture's initialisation order
//! ([`Smmu::enable`], see the module documentation of `crate::smmu`) and
//! [`Smmu::disable`], with the CR0, IRQ_CTRL, IRQ_CFG and GBPA writes they
//! make, each acknowledged and bounded.

use super::*;

impl<H: Hal> Smmu<H> {
    /// Writes CR0 and waits for CR0ACK to match.
    pub(super) fn write_cr0(&self, value: u32) -> Result<()> {
        let p0 = self.mmio.p0();
        self.mmio.write32(&p0.cr0, value);
        wait_for::<H>(Wait::Cr0Ack, self.config.timeout_ns, || {
            p0.cr0ack.get() == value
        })
    }

    /// Writes IRQ_CTRL and waits for IRQ_CTRLACK to match.
    pub(super) fn write_irq_ctrl(&self, value: u32) -> Result<()> {
        let p0 = self.mmio.p0();
        self.mmio.write32(&p0.irq_ctrl, value);
        wait_for::<H>(Wait::IrqCtrlAck, self.config.timeout_ns, || {
            p0.irq_ctrlack.get() == value
        })
    }

    /// Writes GERROR_IRQ_CFG0..2 and EVENTQ_IRQ_CFG0..2 (and PRIQ_IRQ_CFG0..2
    /// when the SMMU has a PRI queue): the configured MSI targets, else 0
    /// (address 0 = no MSI, the wired interrupt is used). Only valid while
    /// IRQ_CTRL = 0. The 64-bit CFG0 registers are written as two 32-bit
    /// halves.
    pub(super) fn write_irq_cfg(&self) {
        let p0 = self.mmio.p0();
        let msi = self.config.msi.unwrap_or_default();
        let program = |cfg0, cfg1, cfg2, target: Option<MsiTarget>| {
            let t = target.unwrap_or(MsiTarget {
                doorbell: 0,
                data: 0,
                memattr: 0,
                sh: 0,
            });
            let addr = IRQ_CFG0::ADDR.val(t.doorbell >> IRQ_CFG0::ADDR.shift);
            self.mmio.write64_halves(cfg0, addr.value);
            self.mmio.write32(cfg1, t.data);
            let attr =
                IRQ_CFG2::MEMATTR.val(u32::from(t.memattr)) + IRQ_CFG2::SH.val(u32::from(t.sh));
            self.mmio.write32(cfg2, attr.value);
        };
        program(
            &p0.gerror_irq_cfg0,
            &p0.gerror_irq_cfg1,
            &p0.gerror_irq_cfg2,
            msi.gerror,
        );
        program(
            &p0.eventq_irq_cfg0,
            &p0.eventq_irq_cfg1,
            &p0.eventq_irq_cfg2,
            msi.eventq,
        );
        if self.features.pri {
            program(
                &p0.priq_irq_cfg0,
                &p0.priq_irq_cfg1,
                &p0.priq_irq_cfg2,
                None,
            );
        }
    }

    /// Sets GBPA.ABORT so that traffic is aborted whenever SMMUEN = 0.
    pub(super) fn abort_bypass(&self) -> Result<()> {
        let p0 = self.mmio.p0();
        let t = self.config.timeout_ns;
        // The read that sees UPDATE clear is also the value to modify.
        let mut gbpa = p0.gbpa.extract();
        wait_for::<H>(Wait::GbpaUpdate, t, || {
            gbpa = p0.gbpa.extract();
            !gbpa.is_set(GBPA::UPDATE)
        })?;
        gbpa.modify(GBPA::ABORT::SET + GBPA::UPDATE::SET);
        self.mmio.write32(&p0.gbpa, gbpa.get());
        wait_for::<H>(Wait::GbpaUpdate, t, || !p0.gbpa.is_set(GBPA::UPDATE))?;
        self.gbpa_abort.store(true, Ordering::Release);
        Ok(())
    }

    /// Takes the SMMU into the translating state: see the module docs for
    /// the order. May be called again after [`Smmu::disable`]; the stream
    /// table keeps its entries.
    pub fn enable(&self) -> Result<()> {
        let strtab = self.strtab.lock();
        let mut cmdq = self.cmdq.lock();
        let mut evtq = self.evtq.lock();
        let p0 = self.mmio.p0();
        let p1 = self.mmio.p1();
        if p0.cr0.is_set(CR0::SMMUEN) {
            log::warn!("SMMU already enabled (by firmware or a previous owner): taking over");
        }
        self.abort_bypass()?;
        self.set_state(State::Disabled);
        // With ATS, every CR0 value this sequence writes has ATSCHK set:
        // ATS-Translated transactions are then checked against the stream
        // table (their STE must allow ATS, and EATS is 0 in every STE this
        // driver writes) instead of bypassing it.
        let atschk = if self.features.ats {
            CR0::ATSCHK::SET.value
        } else {
            0
        };
        self.write_cr0(atschk)?;
        self.write_irq_ctrl(0)?;
        // The MSI address registers reset to UNKNOWN (or hold a previous
        // owner's doorbell): program every one while IRQ_CTRL = 0.
        self.write_irq_cfg();

        let mut cr1 = LocalRegisterCopy::<u32, CR1::Register>::new(0);
        if self.features.coherent {
            cr1.modify(
                CR1::TABLE_SH::Inner
                    + CR1::TABLE_OC::WriteBack
                    + CR1::TABLE_IC::WriteBack
                    + CR1::QUEUE_SH::Inner
                    + CR1::QUEUE_OC::WriteBack
                    + CR1::QUEUE_IC::WriteBack,
            );
        } else {
            // A non-coherent SMMU reads tables and queues from memory; the
            // HAL cleans caches before every publish.
            cr1.modify(
                CR1::TABLE_SH::Outer
                    + CR1::TABLE_OC::NonCacheable
                    + CR1::TABLE_IC::NonCacheable
                    + CR1::QUEUE_SH::Outer
                    + CR1::QUEUE_OC::NonCacheable
                    + CR1::QUEUE_IC::NonCacheable,
            );
        }
        self.mmio.write32(&p0.cr1, cr1.get());
        // RECINVSID: report transactions with out-of-range StreamIDs. PTM:
        // this driver never relies on broadcast TLB maintenance. E2H stays 0:
        // the driver does not configure EL2 (StreamWorld EL2-E2H) streams.
        let mut cr2 = LocalRegisterCopy::<u32, CR2::Register>::new(0);
        cr2.modify(CR2::RECINVSID::SET + CR2::PTM::SET);
        self.mmio.write32(&p0.cr2, cr2.get());

        self.mmio.write64(&p0.strtab_base, strtab.base_register());
        self.mmio
            .write32(&p0.strtab_base_cfg, strtab.base_cfg_register());
        self.mmio.write64(&p0.cmdq_base, cmdq.base_register());
        self.mmio.write32(&p0.cmdq_prod, 0);
        self.mmio.write32(&p0.cmdq_cons, 0);
        cmdq.reset();
        self.mmio.write64(&p0.eventq_base, evtq.base_register());
        self.mmio.write32(&p1.eventq_prod, 0);
        self.mmio.write32(&p1.eventq_cons, 0);
        evtq.reset();
        // Errors left from before this enable are stale: acknowledge them
        // (reading GERRORN afresh: a previous owner may have written it).
        self.mmio.resync_gerrorn();
        self.mmio.ack_gerrors(u32::MAX);

        let cmdqen = atschk | CR0::CMDQEN::SET.value;
        self.write_cr0(cmdqen)?;
        self.set_state(State::CommandsOnly);
        let cmds = [
            Command::cfgi_all(),
            Command::TlbiNsnhAll,
            Command::TlbiEl2All,
        ];
        let n = if self.features.hyp { 3 } else { 2 };
        let submitted = cmdq.submit_with(&self.mmio, n, |i| cmds[i].encode(), true);
        self.counters.store_cmdq(cmdq.stats());
        submitted?;

        let eventqen = cmdqen | CR0::EVENTQEN::SET.value;
        self.write_cr0(eventqen)?;
        if self.config.interrupts {
            self.write_irq_ctrl((IRQ_CTRL::GERROR_IRQEN::SET + IRQ_CTRL::EVENTQ_IRQEN::SET).value)?;
        }
        self.write_cr0(eventqen | CR0::SMMUEN::SET.value)?;
        self.set_state(State::Enabled);
        drop((strtab, cmdq, evtq));
        Ok(())
    }

    /// Stops translation and returns the SMMU to aborting all traffic
    /// (GBPA.ABORT = 1, CR0 = 0). Stream table contents are kept.
    pub fn disable(&self) -> Result<()> {
        let _strtab = self.strtab.lock();
        let _cmdq = self.cmdq.lock();
        let _evtq = self.evtq.lock();
        // `enable` set GBPA.ABORT and saw it take effect; only this driver
        // writes GBPA, so it holds: no GBPA read or write is needed.
        if !self.gbpa_abort.load(Ordering::Acquire) {
            self.abort_bypass()?;
        }
        self.write_irq_ctrl(0)?;
        self.write_cr0(0)?;
        // SMMUEN = 0 terminated every stalled transaction (IHI 0070
        // §3.12.2): CMD_RESUMEs still parked answer nothing any more, and
        // their STAGs may be reused once the SMMU is enabled again.
        self.resumes.clear();
        self.set_state(State::Disabled);
        Ok(())
    }
}
