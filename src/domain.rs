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
    /// An invalidation of this domain failed (a command error or timeout):
    /// the SMMU may still cache walks through its retired tables, or
    /// entries for unmapped or downgraded ranges anywhere in it. The next
    /// invalidation covers the whole VMID (TLBI_S12_VMALL), and retired
    /// tables are freed only once one completes.
    tlb_unknown: bool,
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

    /// Whether `sid` is attached to a domain.
    pub(crate) fn is_attached(&self, sid: u32) -> bool {
        self.attached.contains_key(&sid)
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
                tlb_unknown: false,
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
    /// currently be aborted (never attached, or detached).
    pub fn attach(&self, id: DomainId, sid: u32) -> Result<()> {
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
        // Table walks use the attributes the tables are written with: the
        // VTCR-derived ones for a coherent SMMU, Non-cacheable and Outer
        // Shareable (as in CR1) for one that is not.
        let (ir0, or0, sh0) = if self.features().coherent {
            (fields.ir0, fields.or0, fields.sh0)
        } else {
            let w = self.walk_attributes();
            (w.inner, w.outer, w.shareability)
        };
        let ste = Ste::stage2(&Stage2Ste {
            vmid: d.vmid,
            t0sz: fields.t0sz,
            sl0: fields.sl0,
            ir0,
            or0,
            sh0,
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

    /// Returns `sid` to abort.
    pub fn detach(&self, sid: u32) -> Result<()> {
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
    ///
    /// Tables the unmap emptied are freed only after an invalidation that
    /// covers them completes. If the invalidation fails (the error is
    /// returned), they stay allocated, and the domain's next invalidation
    /// is a TLBI_S12_VMALL of its VMID: tables whose own invalidation was
    /// lost are never freed after invalidating only some other range.
    pub fn unmap(&self, id: DomainId, ipa: u64, len: u64) -> Result<()> {
        let mut domains = self.domains.lock();
        let d = domains.get_mut(id)?;
        d.table.unmap(ipa, len)?;
        self.invalidate_domain_range(d, ipa, len)?;
        // Tables emptied by this and any earlier unmap are no longer in any
        // walk cache.
        d.table.release_retired();
        Ok(())
    }

    /// Changes the permission of a mapped range and invalidates it.
    pub fn protect(&self, id: DomainId, ipa: u64, len: u64, perm: Perm) -> Result<()> {
        let mut domains = self.domains.lock();
        let d = domains.get_mut(id)?;
        d.table.protect(ipa, len, perm)?;
        self.invalidate_domain_range(d, ipa, len)
    }

    /// Invalidates `[ipa, ipa + len)` of the domain, or its whole VMID when
    /// an earlier invalidation failed; records a failure for the next one.
    fn invalidate_domain_range(&self, d: &mut Domain<H>, ipa: u64, len: u64) -> Result<()> {
        let r = if d.tlb_unknown {
            self.invalidate_vmid(d.vmid)
        } else {
            self.invalidate_ipa(d.vmid, ipa, len, d.table.config().granule().shift())
        };
        d.tlb_unknown = r.is_err();
        r
    }

    /// TLBI_S12_VMALL for `vmid`, then one CMD_SYNC.
    fn invalidate_vmid(&self, vmid: u16) -> Result<()> {
        if !self.is_live() {
            return Ok(());
        }
        self.submit(&[Command::TlbiS12Vmall { vmid }])
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
        // On an SMMU that needs a CMD_SYNC every N commands, a range that
        // would take more falls back to one TLBI_S12_VMALL instead.
        let max = self
            .features()
            .max_commands_per_sync()
            .map_or(MAX_RANGE_COMMANDS, |n| n.min(MAX_RANGE_COMMANDS));
        let plan = cmd::s2_invalidation(
            vmid,
            ipa,
            len,
            granule_shift,
            self.features().ril,
            max,
        );
        self.submit(plan.commands())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeHal, FakeRegs};
    use crate::smmu::Config;
    use crate::stage2::Granule;

    const TLBI_S12_VMALL: u64 = 0x28;
    const TLBI_S2_IPA: u64 = 0x2A;
    const CERROR_ILL: u32 = 1;

    /// QEMU virt's ID registers on a register block that answers like an
    /// SMMU, with an enabled driver on it.
    fn enabled(coherent: Option<bool>) -> (Box<FakeRegs>, Smmu<FakeHal>) {
        let regs = Box::new(FakeRegs::new());
        regs.set32(0x00, 0x0D44_101B);
        regs.set32(0x04, 0x0273_0010);
        regs.set32(0x0C, 0x0000_1404);
        // OAS 48 bits: host heap addresses stand in for physical ones.
        regs.set32(0x14, 0x0000_0075);
        regs.set32(0x1C, 1);
        regs.respond();
        let config = Config {
            timeout_ns: 1_000_000,
            firmware_coherent: coherent,
            ..Config::default()
        };
        // SAFETY: the block is MMIO_SIZE bytes and outlives the driver (the
        // caller drops the driver first: tuple fields drop in order... the
        // driver is dropped explicitly by each test before the block).
        let smmu = unsafe { Smmu::<FakeHal>::new(regs.base(), config) }.unwrap();
        smmu.enable().unwrap();
        (regs, smmu)
    }

    fn domain(smmu: &Smmu<FakeHal>) -> DomainId {
        let cfg = Stage2Config::new(Granule::K4, 40, 48).unwrap();
        smmu.create_domain(DomainOptions::new(cfg)).unwrap()
    }

    fn retired(smmu: &Smmu<FakeHal>, id: DomainId) -> usize {
        smmu.domains.lock().get(id).unwrap().table.retired_tables()
    }

    /// Issue 8 item 4: tables retired by an unmap whose TLBI was lost are
    /// not freed after an invalidation of some other range; the next
    /// invalidation is a TLBI_S12_VMALL.
    #[test]
    fn tables_retired_by_a_failed_invalidation_wait_for_a_vmall() {
        let (regs, smmu) = enabled(None);
        let id = domain(&smmu);
        let vmid = smmu.domain_info(id).unwrap().vmid;
        // Single pages in two 1 GiB regions: each has its own level-2 and
        // level-3 table, which unmapping the page empties.
        smmu.map(id, 0x4000_1000, 0x8000_1000, 0x1000, Perm::ReadWrite).unwrap();
        smmu.map(id, 0x8060_0000, 0x8060_0000, 0x2000, Perm::ReadWrite).unwrap();
        // The SMMU rejects the first TLBI_S2_IPA it sees (it is replaced by
        // a CMD_SYNC, so it never runs).
        let mut armed = true;
        regs.fault_commands(Box::new(move |c| {
            (armed && c[0] & 0xFF == TLBI_S2_IPA).then(|| {
                armed = false;
                CERROR_ILL
            })
        }));
        assert!(matches!(
            smmu.unmap(id, 0x4000_1000, 0x1000),
            Err(Error::CommandError { .. })
        ));
        assert!(retired(&smmu, id) > 0, "tables freed without an invalidation");
        let before = regs.commands().len();
        smmu.unmap(id, 0x8060_0000, 0x1000).unwrap();
        let after = regs.commands()[before..].to_vec();
        assert!(
            after
                .iter()
                .any(|c| c[0] & 0xFF == TLBI_S12_VMALL && (c[0] >> 32) as u16 == vmid),
            "tables freed after invalidating only another range: {after:x?}"
        );
        assert_eq!(retired(&smmu, id), 0);
        // Back to range invalidations once a VMALL completed.
        let before = regs.commands().len();
        smmu.unmap(id, 0x8060_1000, 0x1000).unwrap();
        assert!(regs.commands()[before..].iter().all(|c| c[0] & 0xFF != TLBI_S12_VMALL));
        drop(smmu);
    }

    /// Issue 8 item 5: `set_bypass` cannot overwrite an `attach` that runs
    /// between its domain check and its STE write.
    #[test]
    fn set_bypass_and_attach_cannot_interleave() {
        let (regs, smmu) = enabled(None);
        let id = domain(&smmu);
        let sid = 0x10;
        smmu.set_abort(sid).unwrap(); // the level-2 table exists
        let smmu = std::sync::Arc::new(smmu);
        let (tx, rx) = std::sync::mpsc::channel();
        let other = smmu.clone();
        let handle = std::sync::Arc::new(std::sync::Mutex::new(None));
        let h2 = handle.clone();
        crate::fake::at_pause_point("write_unmanaged_ste", move || {
            // Another CPU attaches the StreamID right now.
            let other = other.clone();
            let tx = tx.clone();
            *h2.lock().unwrap() = Some(std::thread::spawn(move || {
                let r = other.attach(id, sid);
                let _ = tx.send(());
                r
            }));
            // Give it every chance to finish inside the window.
            let _ = rx.recv_timeout(std::time::Duration::from_millis(300));
        });
        let bypass = smmu.set_bypass(sid);
        let attach = handle.lock().unwrap().take().unwrap().join().unwrap();
        let ste = smmu.ste(sid).unwrap();
        let attached = smmu.domain_of(sid).is_some();
        assert_eq!(
            attached,
            ste.config() == SteConfig::Stage2,
            "bookkeeping says attached = {attached}, STE is {:?} (bypass {bypass:?}, attach {attach:?})",
            ste.config()
        );
        assert!(bypass.is_ok() != attach.is_ok(), "exactly one wins");
        drop(std::sync::Arc::try_unwrap(smmu).unwrap());
        drop(regs);
    }

    /// Issue 8 item 6: a non-coherent SMMU walks stage 2 Non-cacheable,
    /// Outer Shareable (S2IR0 = S2OR0 = 0, S2SH0 = 2), as CR1 says.
    #[test]
    fn non_coherent_walk_attributes_in_the_ste() {
        use crate::ste::STE_2;
        use tock_registers::LocalRegisterCopy;
        for (coherent, expected) in [(Some(false), (0, 0, 2)), (None, (1, 1, 3))] {
            let (regs, smmu) = enabled(coherent);
            let id = domain(&smmu);
            smmu.attach(id, 8).unwrap();
            let d2 = LocalRegisterCopy::<u64, STE_2::Register>::new(smmu.ste(8).unwrap().0[2]);
            assert_eq!(
                (d2.read(STE_2::S2IR0), d2.read(STE_2::S2OR0), d2.read(STE_2::S2SH0)),
                expected,
                "firmware coherency {coherent:?}"
            );
            smmu.detach(8).unwrap();
            drop(smmu);
            drop(regs);
        }
    }
}
