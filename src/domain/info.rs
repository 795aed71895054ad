//! What the driver tells about domains: [`DomainInfo`] (a domain's stage,
//! VMID/ASID, StreamIDs, tables and geometry), which domain a StreamID is
//! attached to, VMIDs and ASIDs in use, and a copy of a domain's stage-2
//! tables for tests.

use alloc::vec::Vec;

use crate::error::Result;
use crate::hal::Hal;
use crate::smmu::Smmu;

use super::{DomainId, Stage, Tables};

/// A summary of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    /// The stage it translates with.
    pub stage: Stage,
    /// Its VMID (for a stage-1 domain: its STEs' S2VMID, which tags its
    /// TLB entries on an SMMU with stage 2; 0 without stage 2).
    pub vmid: u16,
    /// Its ASID (stage-1 domains only).
    pub asid: Option<u16>,
    /// StreamIDs attached.
    pub sids: Vec<u32>,
    /// Bytes of table memory.
    pub table_bytes: usize,
    /// Physical address of the start table: VTTBR_EL2.BADDR for stage 2,
    /// the CD's TTB0 for stage 1.
    pub root: u64,
    /// The VTCR_EL2 value describing the geometry asked for (for a stage-1
    /// domain: the IPA space its stage-1 tables cover).
    pub vtcr: u64,
    /// The hypervisor owns the tables ([`Smmu::create_external_domain`]).
    pub external: bool,
}

impl DomainInfo {
    /// The VTTBR_EL2 value a CPU sharing these tables uses when the CPU and
    /// the SMMU agree on the VMID: BADDR = the root, VMID = the domain's.
    /// Meaningless for a stage-1 domain (its tables are not in the stage-2
    /// format): see [`DomainInfo::shared_vttbr`].
    pub fn vttbr(&self) -> u64 {
        self.root | u64::from(self.vmid) << 48
    }

    /// [`DomainInfo::vttbr`] for a stage-2 domain, `None` for a stage-1
    /// one, whose tables a CPU cannot use as its stage 2 (the hypervisor
    /// keeps separate CPU stage-2 tables with the same mappings).
    pub fn shared_vttbr(&self) -> Option<u64> {
        (self.stage == Stage::Stage2).then(|| self.vttbr())
    }
}

impl<H: Hal> Smmu<H> {
    /// The domain `sid` is attached to.
    pub fn domain_of(&self, sid: u32) -> Option<DomainId> {
        self.domains.lock().attached.get(&sid).copied()
    }

    /// A summary of the domain.
    pub fn domain_info(&self, id: DomainId) -> Result<DomainInfo> {
        let domains = self.domains.lock();
        let d = domains.get(id)?;
        let (stage, asid, s1_bytes) = match &d.tables {
            Tables::Stage1(s) => (Stage::Stage1, Some(s.asid), s.table.table_bytes()),
            _ => (Stage::Stage2, None, 0),
        };
        Ok(DomainInfo {
            stage,
            vmid: d.vmid,
            asid,
            sids: d.sids.clone(),
            table_bytes: d.owned().map_or(s1_bytes, |t| t.table_bytes()),
            root: d.tables.root(),
            vtcr: d.tables.config().vtcr(),
            external: matches!(d.tables, Tables::External { .. }),
        })
    }

    /// VMIDs in use.
    pub fn vmids_in_use(&self) -> usize {
        self.domains.lock().vmids.in_use()
    }

    /// ASIDs in use (one per stage-1 domain).
    pub fn asids_in_use(&self) -> usize {
        self.domains.lock().asids.in_use()
    }

    /// A copy of every word of the domain's stage-2 tables (for tests that
    /// check a rejected call left them unchanged).
    pub fn stage2_snapshot(&self, id: DomainId) -> Result<Vec<u64>> {
        Ok(self.domains.lock().get(id)?.owned()?.snapshot())
    }
}
