//! Creating and destroying driver-owned stage-2 domains: the stage a new
//! domain translates with ([`StagePolicy`]), its geometry checked against
//! the SMMU, its VMID (allocated, or the VM's own), and at teardown the
//! VMID's TLB entries invalidated before the VMID and the tables are freed.
//! Stage-1 and hypervisor-owned domains are created in `stage1.rs` and
//! `external.rs`.

use alloc::vec::Vec;

use crate::cmd::Command;
use crate::error::{Error, Result, Unsupported};
use crate::hal::Hal;
use crate::smmu::Smmu;
use crate::stage2::Stage2Table;

use super::{Domain, DomainId, DomainOptions, Stage, StagePolicy, Tables};

impl<H: Hal> Smmu<H> {
    /// Creates a domain with empty tables, translating with the stage
    /// [`DomainOptions::stage`] selects ([`Smmu::domain_stage`]).
    pub fn create_domain(&self, options: DomainOptions) -> Result<DomainId> {
        let f = self.features();
        if self.domain_stage(options.stage)? == Stage::Stage1 {
            return self.create_stage1_domain(options);
        }
        if !f.stage2 {
            return Err(Error::Unsupported(Unsupported::Stage2));
        }
        let cfg = options.stage2;
        if !f.supports_granule(cfg.granule()) {
            return Err(Error::Unsupported(Unsupported::Granule));
        }
        cfg.check_fits(u32::from(f.ias_bits), u32::from(f.oas_bits))?;
        let mut domains = self.domains.lock();
        domains.reserve()?;
        let table = Stage2Table::new(cfg, f.coherent)?;
        let vmid = match options.vmid {
            Some(v) => domains.vmids.alloc_specific(v)?,
            None => domains.vmids.alloc()?,
        };
        let split_without_break = options.cpu_bbml2 && f.bbml >= 2;
        Ok(domains.insert(|id| Domain {
            id,
            vmid,
            affd: options.access_flag_fault_disable,
            split_without_break,
            tables: Tables::Owned(table),
            sids: Vec::new(),
            tlb_unknown: false,
            nested_streams: 0,
        }))
    }

    /// Destroys a domain with no streams attached: invalidates its VMID's
    /// TLB entries, frees the VMID and the tables.
    pub fn destroy_domain(&self, id: DomainId) -> Result<()> {
        if matches!(self.domains.lock().get(id)?.tables, Tables::Stage1(_)) {
            return self.destroy_stage1_domain(id);
        }
        let mut domains = self.domains.lock();
        let d = domains.get(id)?;
        if !d.sids.is_empty() {
            return Err(Error::DomainBusy(id));
        }
        let vmid = d.vmid;
        if self.is_live() {
            self.submit(&[Command::TlbiS12Vmall { vmid }])?;
        }
        domains.vmids.free(vmid)?;
        domains.domains.remove(&id);
        Ok(())
    }

    /// The stage a domain created with `policy` translates with:
    /// [`StagePolicy::Auto`] picks stage 2 when the SMMU implements it
    /// (IDR0.S2P), stage 1 otherwise. Errors: the stage asked for is not
    /// implemented ([`Unsupported::Stage1`] / [`Unsupported::Stage2`]).
    pub fn domain_stage(&self, policy: StagePolicy) -> Result<Stage> {
        let f = self.features();
        match policy {
            StagePolicy::Auto if f.stage2 => Ok(Stage::Stage2),
            StagePolicy::Auto | StagePolicy::Stage1 if f.stage1 => Ok(Stage::Stage1),
            StagePolicy::Stage2 if f.stage2 => Ok(Stage::Stage2),
            StagePolicy::Stage2 => Err(Error::Unsupported(Unsupported::Stage2)),
            StagePolicy::Auto | StagePolicy::Stage1 => Err(Error::Unsupported(Unsupported::Stage1)),
        }
    }
}
