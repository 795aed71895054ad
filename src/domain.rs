//! VM domains: a VMID, stage-2 tables and the streams attached to them.
//!
//! A hypervisor creates one domain per VM, maps the VM's memory into the
//! domain's stage-2 tables (the same IPA -> PA layout, and the same VTCR_EL2
//! geometry, as the CPU's stage 2 for that VM), and attaches the StreamIDs of
//! the devices it passes through. A device attached to a domain reaches
//! exactly what the domain maps, with the permissions it maps, and nothing
//! else; a detached device is aborted.
//!
//! Invalidation is the domain's job, not the caller's: unmapping or
//! downgrading permissions issues TLBI_S2_IPA for the range (the range form
//! when the SMMU has IDR3.RIL; TLBI_S12_VMALL past a threshold) and one
//! CMD_SYNC before returning, and tables emptied by an unmap are freed only
//! after that. CPU TLB maintenance does not reach the SMMU.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::cmd::{self, Command};
use crate::error::{Error, Result, Unsupported};
use crate::hal::Hal;
use crate::idalloc::{IdAllocator, IdKind};
use crate::smmu::Smmu;
use crate::stage2::{Perm, Stage2Config, Stage2Table, Translation};
use crate::ste::{Stage2Ste, Ste, SteConfig};

/// Handle of a domain.
pub type DomainId = u32;

/// Past this many TLBI_S2_IPA commands for one range, invalidate the whole
/// VMID with TLBI_S12_VMALL instead.
pub const MAX_RANGE_COMMANDS: usize = 64;

/// How a domain's StreamIDs are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainOptions {
    /// The stage-2 geometry (from the VM's VTCR_EL2, or built).
    pub stage2: Stage2Config,
    /// Use this VMID (e.g. the VM's CPU VMID) instead of allocating one.
    pub vmid: Option<u16>,
    /// S2AFFD: treat access-flag faults as if AF were 1. Set when the tables
    /// are shared with a CPU that may leave AF = 0 (hardware AF management).
    pub access_flag_fault_disable: bool,
}

impl DomainOptions {
    /// Defaults for `stage2`: allocated VMID, S2AFFD set.
    pub fn new(stage2: Stage2Config) -> Self {
        Self {
            stage2,
            vmid: None,
            access_flag_fault_disable: true,
        }
    }
}

/// A VM's DMA view.
#[derive(Debug)]
pub(crate) struct Domain<H: Hal> {
    vmid: u16,
    affd: bool,
    table: Stage2Table<H>,
    sids: Vec<u32>,
}

/// Every domain of one SMMU, and the VMID space.
#[derive(Debug)]
pub(crate) struct Domains<H: Hal> {
    next: DomainId,
    domains: BTreeMap<DomainId, Domain<H>>,
    attached: BTreeMap<u32, DomainId>,
    vmids: IdAllocator,
}

impl<H: Hal> Domains<H> {
    /// An empty set of domains for an SMMU with `vmid_bits` of VMID.
    pub(crate) fn new(vmid_bits: u32) -> Result<Self> {
        Ok(Self {
            next: 1,
            domains: BTreeMap::new(),
            attached: BTreeMap::new(),
            // VMID 0 is reserved for streams without stage 2.
            vmids: IdAllocator::new(vmid_bits, true, IdKind::Vmid)?,
        })
    }

    fn get(&self, id: DomainId) -> Result<&Domain<H>> {
        self.domains.get(&id).ok_or(Error::UnknownDomain(id))
    }

    fn get_mut(&mut self, id: DomainId) -> Result<&mut Domain<H>> {
        self.domains.get_mut(&id).ok_or(Error::UnknownDomain(id))
    }
}

/// A summary of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    /// Its VMID.
    pub vmid: u16,
    /// StreamIDs attached.
    pub sids: Vec<u32>,
    /// Bytes of stage-2 table memory.
    pub table_bytes: usize,
    /// Physical address of the stage-2 start table (VTTBR_EL2.BADDR).
    pub root: u64,
}

impl<H: Hal> Smmu<H> {
    /// Creates a domain with empty stage-2 tables.
    pub fn create_domain(&self, options: DomainOptions) -> Result<DomainId> {
        let f = self.features();
        if !f.stage2 {
            return Err(Error::Unsupported(Unsupported::Stage2));
        }
        let cfg = options.stage2;
        if !f.supports_granule(cfg.granule()) {
            return Err(Error::Unsupported(Unsupported::Granule));
        }
        cfg.check_fits(u32::from(f.ias_bits), u32::from(f.oas_bits))?;
        let mut domains = self.domains.lock();
        let table = Stage2Table::new(cfg, f.coherent)?;
        let vmid = match options.vmid {
            Some(v) => domains.vmids.alloc_specific(v)?,
            None => domains.vmids.alloc()?,
        };
        let id = domains.next;
        domains.next = domains.next.wrapping_add(1).max(1);
        domains.domains.insert(
            id,
            Domain {
                vmid,
                affd: options.access_flag_fault_disable,
                table,
                sids: Vec::new(),
            },
        );
        Ok(id)
    }

    /// Destroys a domain with no streams attached: invalidates its VMID's
    /// TLB entries, frees the VMID and the tables.
    pub fn destroy_domain(&self, id: DomainId) -> Result<()> {
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

    /// Points `sid` at the domain's stage-2 tables. The StreamID must
    /// currently be aborted (never attached, or detached). Isolation groups
    /// are not checked here: callers are `Smmu::attach` and
    /// `Smmu::attach_group` (src/group.rs).
    pub(crate) fn attach_stream(&self, id: DomainId, sid: u32) -> Result<()> {
        let mut domains = self.domains.lock();
        self.check_sid(sid)?;
        if domains.attached.contains_key(&sid) {
            return Err(Error::SidAttached(sid));
        }
        let d = domains.get(id)?;
        let current = self.ste(sid)?;
        if current.is_valid() && current.config() != SteConfig::Abort {
            // Configured outside the domain API (e.g. bypass).
            return Err(Error::SidAttached(sid));
        }
        let fields = d.table.config().ste_fields();
        let ste = Ste::stage2(&Stage2Ste {
            vmid: d.vmid,
            t0sz: fields.t0sz,
            sl0: fields.sl0,
            ir0: fields.ir0,
            or0: fields.or0,
            sh0: fields.sh0,
            tg: fields.tg,
            ps: fields.ps,
            ttb: d.table.root_paddr(),
            affd: d.affd,
            record_faults: true,
            ptw: false,
        })?;
        self.write_ste(sid, &ste)?;
        domains.attached.insert(sid, id);
        domains.get_mut(id)?.sids.push(sid);
        Ok(())
    }

    /// Returns `sid` to abort. Isolation groups are not checked here:
    /// callers are `Smmu::detach` and `Smmu::detach_group` (src/group.rs).
    pub(crate) fn detach_stream(&self, sid: u32) -> Result<()> {
        let mut domains = self.domains.lock();
        self.check_sid(sid)?;
        let id = *domains
            .attached
            .get(&sid)
            .ok_or(Error::SidNotAttached(sid))?;
        self.write_ste(sid, &Ste::abort())?;
        domains.attached.remove(&sid);
        domains.get_mut(id)?.sids.retain(|&s| s != sid);
        Ok(())
    }

    /// The domain `sid` is attached to.
    pub fn domain_of(&self, sid: u32) -> Option<DomainId> {
        self.domains.lock().attached.get(&sid).copied()
    }

    /// Maps `[ipa, ipa + len)` of the domain to `[pa, pa + len)`.
    pub fn map(&self, id: DomainId, ipa: u64, pa: u64, len: u64, perm: Perm) -> Result<()> {
        // Only invalid descriptors become valid: nothing to invalidate.
        self.domains
            .lock()
            .get_mut(id)?
            .table
            .map(ipa, pa, len, perm)
    }

    /// Unmaps `[ipa, ipa + len)` and invalidates the SMMU's TLBs for it
    /// before returning.
    pub fn unmap(&self, id: DomainId, ipa: u64, len: u64) -> Result<()> {
        let mut domains = self.domains.lock();
        let d = domains.get_mut(id)?;
        d.table.unmap(ipa, len)?;
        let (vmid, shift) = (d.vmid, d.table.config().granule().shift());
        self.invalidate_ipa(vmid, ipa, len, shift)?;
        // Tables emptied by the unmap are no longer in any walk cache.
        d.table.release_retired();
        Ok(())
    }

    /// Changes the permission of a mapped range and invalidates it.
    pub fn protect(&self, id: DomainId, ipa: u64, len: u64, perm: Perm) -> Result<()> {
        let mut domains = self.domains.lock();
        let d = domains.get_mut(id)?;
        d.table.protect(ipa, len, perm)?;
        let (vmid, shift) = (d.vmid, d.table.config().granule().shift());
        self.invalidate_ipa(vmid, ipa, len, shift)
    }

    /// What the domain's tables translate `ipa` to.
    pub fn translate(&self, id: DomainId, ipa: u64) -> Result<Option<Translation>> {
        Ok(self.domains.lock().get(id)?.table.query(ipa))
    }

    /// A summary of the domain.
    pub fn domain_info(&self, id: DomainId) -> Result<DomainInfo> {
        let domains = self.domains.lock();
        let d = domains.get(id)?;
        Ok(DomainInfo {
            vmid: d.vmid,
            sids: d.sids.clone(),
            table_bytes: d.table.table_bytes(),
            root: d.table.root_paddr(),
        })
    }

    /// VMIDs in use.
    pub fn vmids_in_use(&self) -> usize {
        self.domains.lock().vmids.in_use()
    }

    /// A copy of every word of the domain's stage-2 tables (for tests that
    /// check a rejected call left them unchanged).
    pub fn stage2_snapshot(&self, id: DomainId) -> Result<Vec<u64>> {
        Ok(self.domains.lock().get(id)?.table.snapshot())
    }

    /// TLBI_S2_IPA for the range (range form with RIL), or TLBI_S12_VMALL
    /// past [`MAX_RANGE_COMMANDS`], then one CMD_SYNC. Non-leaf: unmapped
    /// tables may be in walk caches.
    fn invalidate_ipa(&self, vmid: u16, ipa: u64, len: u64, granule_shift: u32) -> Result<()> {
        if !self.is_live() {
            return Ok(());
        }
        let plan = cmd::s2_invalidation(
            vmid,
            ipa,
            len,
            granule_shift,
            self.features().ril,
            MAX_RANGE_COMMANDS,
        );
        self.submit(plan.commands())
    }
}
