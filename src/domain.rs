//! VM domains: a VMID, translation tables and the streams attached to them.
//!
//! A domain translates with stage 2 when the SMMU implements it, with
//! stage 1 otherwise (or as [`DomainOptions::stage`] asks): see
//! `src/domain/stage1.rs`. Both kinds take IPAs in and give PAs out, and
//! the calls below treat them alike; [`DomainInfo::stage`] says which one a
//! domain uses (only stage-2 tables can be shared with a CPU).
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

use crate::vecmap::VecMap;
use alloc::vec::Vec;

use crate::cmd::Command;
use crate::error::{Error, Result, Unsupported};
use crate::hal::Hal;
use crate::idalloc::{IdAllocator, IdKind};
use crate::smmu::Smmu;
use crate::stage2::{Stage2Config, Stage2Table};

mod batch;
mod external;
mod mapping;
mod nested;
mod stage1;
mod substream;

pub use batch::Batch;
pub use nested::{
    CD_BYTES, GuestCd, MAX_T0SZ, MIN_T0SZ, NestedError, NestedRequest, validate_cd, validate_cd_ipa,
};

pub use crate::stage2::{MapOptions, Memory, Perm, Translation};
use crate::ste::{Stage2Ste, Ste, SteConfig};
pub use external::ExternalStage2;
pub use mapping::CpuInvalidation;

/// Handle of a domain.
pub type DomainId = u32;

/// Past this many TLBI_S2_IPA commands for one range, invalidate the whole
/// VMID with TLBI_S12_VMALL instead.
pub const MAX_RANGE_COMMANDS: usize = 64;

/// Which translation stage a domain uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Stage 1 through a context descriptor (TTB0, ASID). The tables are
    /// in the stage-1 format: a CPU cannot use them as its stage 2.
    Stage1,
    /// Stage 2 (S2TTB, VMID), in the format of the CPU's stage 2.
    Stage2,
}

/// Which stage [`Smmu::create_domain`] builds a domain with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StagePolicy {
    /// Stage 2 when the SMMU implements it, stage 1 otherwise.
    #[default]
    Auto,
    /// Stage 1 ([`Unsupported::Stage1`] without IDR0.S1P).
    Stage1,
    /// Stage 2 ([`Unsupported::Stage2`] without IDR0.S2P).
    Stage2,
}

/// How a domain's StreamIDs are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainOptions {
    /// The geometry (from the VM's VTCR_EL2, or built): granule, IPA size
    /// and output size. A stage-1 domain uses the same sizes (its input is
    /// the IPA), at most 48 bits of each.
    pub stage2: Stage2Config,
    /// Which stage translates ([`StagePolicy::Auto`] by default).
    pub stage: StagePolicy,
    /// Use this VMID (e.g. the VM's CPU VMID) instead of allocating one.
    pub vmid: Option<u16>,
    /// S2AFFD: treat access-flag faults as if AF were 1. Set when the tables
    /// are shared with a CPU that may leave AF = 0 (hardware AF management).
    pub access_flag_fault_disable: bool,
    /// Every CPU that walks these tables (none, if they are the SMMU's
    /// alone) can replace a block by a table without break-before-make
    /// (FEAT_BBM level 2). Together with the SMMU's IDR3.BBML = 2 this lets
    /// `unmap`/`protect` split a block with one store; otherwise they break
    /// before make, and DMA or CPU accesses to the block's range fault in
    /// the window between the two stores. Default `false`.
    pub cpu_bbml2: bool,
}

impl DomainOptions {
    /// Defaults for `stage2`: allocated VMID, S2AFFD set, splits break
    /// before make.
    pub fn new(stage2: Stage2Config) -> Self {
        Self {
            stage2,
            stage: StagePolicy::Auto,
            vmid: None,
            access_flag_fault_disable: true,
            cpu_bbml2: false,
        }
    }
}

/// Who owns a domain's stage-2 tables.
#[derive(Debug)]
pub(crate) enum Tables<H: Hal> {
    /// Built and edited by the driver ([`Smmu::map`], [`Smmu::unmap`]); a
    /// CPU may share them (VTTBR_EL2 = the root).
    Owned(Stage2Table<H>),
    /// Built and edited by the hypervisor; the driver only points STEs at
    /// them and invalidates on request ([`Smmu::invalidate`]).
    External {
        /// Their geometry, from the hypervisor's VTCR_EL2.
        cfg: Stage2Config,
        /// Physical address of the start table.
        root: u64,
    },
    /// Stage-1 tables, CD and ASID owned by the driver.
    Stage1(alloc::boxed::Box<stage1::Stage1Ctx<H>>),
}

impl<H: Hal> Tables<H> {
    pub(crate) fn config(&self) -> &Stage2Config {
        match self {
            Tables::Owned(t) => t.config(),
            Tables::External { cfg, .. } => cfg,
            Tables::Stage1(s) => &s.cfg,
        }
    }

    pub(crate) fn root(&self) -> u64 {
        match self {
            Tables::Owned(t) => t.root_paddr(),
            Tables::External { root, .. } => *root,
            Tables::Stage1(s) => s.table.root_paddr(),
        }
    }
}

/// A VM's DMA view.
#[derive(Debug)]
pub(crate) struct Domain<H: Hal> {
    pub(crate) id: DomainId,
    pub(crate) vmid: u16,
    affd: bool,
    /// Both the SMMU (IDR3.BBML = 2) and every CPU walking the tables allow
    /// a block to be replaced by a table without break-before-make.
    pub(crate) split_without_break: bool,
    pub(crate) tables: Tables<H>,
    pub(crate) sids: Vec<u32>,
    /// An invalidation of this domain failed (a command error or timeout):
    /// the SMMU may still cache walks through its retired tables, or
    /// entries for unmapped or downgraded ranges anywhere in it. The next
    /// invalidation covers the whole VMID (TLBI_S12_VMALL), and retired
    /// tables are freed only once one completes.
    pub(crate) tlb_unknown: bool,
    /// Attached streams with a guest-owned stage 1 in front of this
    /// (stage-2) domain (`src/domain/nested.rs`): their TLB entries may
    /// combine both stages, indexed by VA, which TLBI_S2_IPA does not
    /// reach; every stage-2 invalidation then adds TLBI_NH_ALL.
    pub(crate) nested_streams: usize,
}

impl<H: Hal> Domain<H> {
    /// The driver-owned tables, or [`Error::ExternalTables`].
    pub(crate) fn owned(&self) -> Result<&Stage2Table<H>> {
        match &self.tables {
            Tables::Owned(t) => Ok(t),
            Tables::External { .. } => Err(Error::ExternalTables(self.id)),
            Tables::Stage1(_) => Err(Error::Stage1Tables(self.id)),
        }
    }

    /// The driver-owned tables, or [`Error::ExternalTables`].
    pub(crate) fn owned_mut(&mut self) -> Result<&mut Stage2Table<H>> {
        match &mut self.tables {
            Tables::Owned(t) => Ok(t),
            Tables::External { .. } => Err(Error::ExternalTables(self.id)),
            Tables::Stage1(_) => Err(Error::Stage1Tables(self.id)),
        }
    }
}

/// Every domain of one SMMU, and the VMID space.
#[derive(Debug)]
pub(crate) struct Domains<H: Hal> {
    next: DomainId,
    domains: VecMap<DomainId, Domain<H>>,
    pub(crate) attached: VecMap<u32, DomainId>,
    pub(crate) vmids: IdAllocator,
    /// ASIDs of stage-1 domains and of guests' nested streams (0
    /// reserved).
    pub(crate) asids: IdAllocator,
    /// Streams with a guest-owned stage 1 (`src/domain/nested.rs`), by
    /// StreamID.
    pub(crate) nested: VecMap<u32, nested::NestedStream>,
    /// Driver-owned CD tables of streams attached to stage-1 domains on
    /// an SMMU with substreams (`src/domain/substream.rs`), by StreamID.
    pub(crate) cd_tables: VecMap<u32, crate::cdtable::CdTable<H>>,
    /// How new CD tables are built.
    pub(crate) cd_policy: crate::cdtable::CdTablePolicy,
}

impl<H: Hal> Domains<H> {
    /// An empty set of domains for an SMMU with `vmid_bits` of VMID and
    /// `asid_bits` of ASID.
    pub(crate) fn new(vmid_bits: u32, asid_bits: u32) -> Result<Self> {
        Ok(Self {
            next: 1,
            domains: VecMap::new(),
            attached: VecMap::new(),
            // VMID 0 is reserved for streams without stage 2.
            vmids: IdAllocator::new(vmid_bits, true, IdKind::Vmid)?,
            asids: IdAllocator::new(asid_bits, true, IdKind::Asid)?,
            nested: VecMap::new(),
            cd_tables: VecMap::new(),
            cd_policy: crate::cdtable::CdTablePolicy::default(),
        })
    }

    /// Makes room for one more domain ([`Domains::insert`] then does not
    /// allocate). Called before anything is allocated for the domain.
    pub(crate) fn reserve(&mut self) -> Result<()> {
        self.domains.reserve(1)
    }

    /// Adds the domain `make(id)` under a fresh handle (allocates unless
    /// [`Domains::reserve`] made room).
    pub(crate) fn insert(&mut self, make: impl FnOnce(DomainId) -> Domain<H>) -> DomainId {
        let id = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        self.domains.insert(id, make(id));
        id
    }

    /// Whether `sid` is attached to a domain.
    pub(crate) fn is_attached(&self, sid: u32) -> bool {
        self.attached.contains_key(&sid)
    }

    pub(crate) fn get(&self, id: DomainId) -> Result<&Domain<H>> {
        self.domains.get(&id).ok_or(Error::UnknownDomain(id))
    }

    pub(crate) fn get_mut(&mut self, id: DomainId) -> Result<&mut Domain<H>> {
        self.domains.get_mut(&id).ok_or(Error::UnknownDomain(id))
    }
}

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
        // A stage-1 stream on an SMMU with substreams gets its own CD table.
        let table = self.new_cd_table(d, domains.cd_policy)?;
        let ste = match &table {
            Some(t) => self.stage1_table_ste(d, t)?,
            None => self.domain_ste(d)?,
        };
        // Room first: once the STE is written, the bookkeeping cannot fail.
        domains.attached.reserve(1)?;
        domains.cd_tables.reserve(usize::from(table.is_some()))?;
        domains
            .get_mut(id)?
            .sids
            .try_reserve(1)
            .map_err(|_| Error::NoMemory)?;
        if let Err(e) = self.write_ste(sid, &ste) {
            // The STE may point at the table already: keep it (reserved
            // above) rather than free memory the SMMU can reach.
            if let Some(t) = table {
                domains.cd_tables.insert(sid, t);
            }
            return Err(e);
        }
        domains.attached.insert(sid, id);
        if let Some(t) = table {
            domains.cd_tables.insert(sid, t);
        }
        domains.get_mut(id)?.sids.push(sid);
        Ok(())
    }

    /// The STE that points a stream at domain `d` (stage 1: at its CD).
    pub(crate) fn domain_ste(&self, d: &Domain<H>) -> Result<Ste> {
        if let Tables::Stage1(s1) = &d.tables {
            return self.stage1_ste(d, s1);
        }
        Ste::stage2(&self.domain_s2(d)?)
    }

    /// The stage-2 fields of a stage-2 domain's STEs (plain or nested).
    pub(crate) fn domain_s2(&self, d: &Domain<H>) -> Result<Stage2Ste> {
        if matches!(d.tables, Tables::Stage1(_)) {
            return Err(Error::Stage1Tables(d.id));
        }
        let fields = d.tables.config().ste_fields();
        // Table walks use the attributes the tables are written with: the
        // VTCR-derived ones for a coherent SMMU, Non-cacheable and Outer
        // Shareable (as in CR1) for one that is not.
        let (ir0, or0, sh0) = if self.features().coherent {
            (fields.ir0, fields.or0, fields.sh0)
        } else {
            let w = self.walk_attributes();
            (w.inner, w.outer, w.shareability)
        };
        Ok(Stage2Ste {
            vmid: d.vmid,
            t0sz: fields.t0sz,
            sl0: fields.sl0,
            ir0,
            or0,
            sh0,
            tg: fields.tg,
            ps: fields.ps,
            ttb: d.tables.root(),
            affd: d.affd,
            record_faults: true,
            ptw: false,
        })
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
        if crate::cdtable::has_substreams(&domains.cd_tables, sid) {
            return Err(crate::cdtable::SubstreamError::SubstreamsAttached(sid).into());
        }
        self.write_ste(sid, &Ste::abort())?;
        let guest_asid = Self::forget_nested_locked(&mut domains, sid);
        let d = domains.get(id)?;
        if (matches!(d.tables, Tables::Stage1(_)) || guest_asid.is_some()) && self.is_live() {
            // CFGI_STE (leaf) dropped the STE only: the CD it pointed at
            // may still be cached for this StreamID (and a guest's
            // stage-1 entries under its ASID).
            // (No allocation: the STE already changed.)
            let cmds = [
                Command::CfgiCdAll { sid },
                Command::TlbiNhAsid {
                    vmid: d.vmid,
                    asid: guest_asid.unwrap_or(0),
                },
            ];
            self.submit(&cmds[..1 + usize::from(guest_asid.is_some())])?;
        }
        domains.attached.remove(&sid);
        // The STE no longer points at the table and CFGI_CD_ALL + SYNC
        // completed above: its leaves and CDs can go.
        domains.cd_tables.remove(&sid);
        domains.get_mut(id)?.sids.retain(|&s| s != sid);
        Ok(())
    }

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

    /// A copy of every word of the domain's stage-2 tables (for tests that
    /// check a rejected call left them unchanged).
    pub fn stage2_snapshot(&self, id: DomainId) -> Result<Vec<u64>> {
        Ok(self.domains.lock().get(id)?.owned()?.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeHal, FakeRegs};
    use crate::smmu::Config;
    use crate::stage2::Granule;
    use crate::stage2::{MapOptions, Memory, Perm};

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
        smmu.domains
            .lock()
            .get(id)
            .unwrap()
            .owned()
            .unwrap()
            .retired_tables()
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
        smmu.map(id, 0x4000_1000, 0x8000_1000, 0x1000, Perm::ReadWrite)
            .unwrap();
        smmu.map(id, 0x8060_0000, 0x8060_0000, 0x2000, Perm::ReadWrite)
            .unwrap();
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
        assert!(
            retired(&smmu, id) > 0,
            "tables freed without an invalidation"
        );
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
        assert!(
            regs.commands()[before..]
                .iter()
                .all(|c| c[0] & 0xFF != TLBI_S12_VMALL)
        );
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
                (
                    d2.read(STE_2::S2IR0),
                    d2.read(STE_2::S2OR0),
                    d2.read(STE_2::S2SH0)
                ),
                expected,
                "firmware coherency {coherent:?}"
            );
            smmu.detach(8).unwrap();
            drop(smmu);
            drop(regs);
        }
    }

    const M2: u64 = 2 << 20;

    /// An enabled SMMU whose IDR3.BBML is `bbml`, and a domain on it.
    pub(super) fn with_bbml(
        bbml: u32,
        cpu_bbml2: bool,
    ) -> (Box<FakeRegs>, Smmu<FakeHal>, DomainId) {
        let (regs, smmu) = enabled(None);
        drop(smmu);
        regs.set32(0x0C, (regs.get32(0x0C) & !(3 << 11)) | bbml << 11);
        let config = Config {
            timeout_ns: 1_000_000,
            ..Config::default()
        };
        // SAFETY: as in `enabled`.
        let smmu = unsafe { Smmu::<FakeHal>::new(regs.base(), config) }.unwrap();
        smmu.enable().unwrap();
        let cfg = Stage2Config::new(Granule::K4, 40, 48).unwrap();
        let id = smmu
            .create_domain(DomainOptions {
                cpu_bbml2,
                ..DomainOptions::new(cfg)
            })
            .unwrap();
        (regs, smmu, id)
    }

    /// Issue 9: unmapping one 4K page in the middle of a 2 MiB block splits
    /// the block (break-before-make without BBML2 on both sides), and only
    /// that page stops translating.
    #[test]
    fn unmap_inside_a_block_splits_it() {
        for (bbml, cpu_bbml2, breaks) in [(0, false, true), (2, false, true), (2, true, false)] {
            let (regs, smmu, id) = with_bbml(bbml, cpu_bbml2);
            let (ipa, pa) = (0x4020_0000, 0x8020_0000);
            smmu.map(id, ipa, pa, M2, Perm::ReadWrite).unwrap();
            assert_eq!(smmu.translate(id, ipa).unwrap().unwrap().size, M2);
            let hole = ipa + 0x10_0000;
            let mut calls = Vec::new();
            let before = regs.commands().len();
            smmu.unmap_with(id, hole, 0x1000, &mut |c| calls.push((c.ipa, c.len)))
                .unwrap();
            assert_eq!(smmu.translate(id, hole).unwrap(), None);
            for probe in [ipa, hole - 0x1000, hole + 0x1000, ipa + M2 - 0x1000] {
                let t = smmu
                    .translate(id, probe)
                    .unwrap()
                    .expect("neighbour still mapped");
                assert_eq!(
                    (t.pa, t.size, t.perm),
                    (pa + (probe - ipa), 0x1000, Perm::ReadWrite)
                );
            }
            let syncs = regs.commands()[before..]
                .iter()
                .filter(|c| c[0] & 0xFF == 0x46)
                .count();
            if breaks {
                // The whole block for the CPU and the SMMU between break and
                // make, then the page.
                assert_eq!(
                    calls,
                    [(ipa, M2), (hole, 0x1000)],
                    "BBML {bbml} cpu {cpu_bbml2}"
                );
                assert_eq!(syncs, 2);
            } else {
                assert_eq!(calls, [(hole, 0x1000)]);
                assert_eq!(syncs, 1);
            }
            drop(smmu);
        }
    }

    /// Issue 9: the CPU hook runs after the descriptors changed and before
    /// the tables the unmap emptied are freed.
    #[test]
    fn the_cpu_hook_runs_before_tables_are_freed() {
        let (regs, smmu) = enabled(None);
        let id = domain(&smmu);
        smmu.map(id, 0x4000_1000, 0x8000_1000, 0x1000, Perm::ReadWrite)
            .unwrap();
        let before = regs.commands().len();
        let mut seen = None;
        smmu.unmap_with(id, 0x4000_1000, 0x1000, &mut |c| {
            // The SMMU's TLBI + SYNC already completed.
            seen = Some((c.vmid, c.ipa, c.len, regs.commands().len() - before));
        })
        .unwrap();
        let vmid = smmu.domain_info(id).unwrap().vmid;
        assert_eq!(seen, Some((vmid, 0x4000_1000, 0x1000, 2)));
        assert_eq!(retired(&smmu, id), 0);
        drop(smmu);
    }

    /// Issue 9: retired tables are still allocated while the hook runs.
    #[test]
    fn tables_are_alive_while_the_hook_runs() {
        let (regs, smmu) = enabled(None);
        let id = domain(&smmu);
        smmu.map(id, 0x4000_1000, 0x8000_1000, 0x1000, Perm::ReadWrite)
            .unwrap();
        let live_before = FakeHal::live_bytes();
        let mut live_in_hook = 0;
        smmu.unmap_with(id, 0x4000_1000, 0x1000, &mut |_| {
            live_in_hook = FakeHal::live_bytes()
        })
        .unwrap();
        assert_eq!(
            live_in_hook, live_before,
            "a table was freed before the CPU hook"
        );
        assert!(
            FakeHal::live_bytes() < live_before,
            "emptied tables freed afterwards"
        );
        drop(smmu);
        drop(regs);
    }

    /// Issue 9: device mappings are Device-nGnRE and execute-never; pages
    /// only when blocks are not allowed.
    #[test]
    fn map_options_reach_the_descriptors() {
        let (_regs, smmu) = enabled(None);
        let id = domain(&smmu);
        smmu.map_with(id, 0x1000_0000, 0x1000_0000, M2, &MapOptions::device())
            .unwrap();
        let t = smmu.translate(id, 0x1000_0000).unwrap().unwrap();
        assert_eq!((t.memory, t.execute, t.size), (Memory::Device, false, M2));
        let pages = MapOptions {
            blocks: false,
            ..MapOptions::normal(Perm::Read)
        };
        smmu.map_with(id, 0x4000_0000, 0x8000_0000, M2, &pages)
            .unwrap();
        let t = smmu.translate(id, 0x4000_0000).unwrap().unwrap();
        assert_eq!(
            (t.memory, t.execute, t.size),
            (Memory::Normal, true, 0x1000)
        );
        // protect keeps the memory type and XN.
        smmu.protect(id, 0x1000_0000, 0x1000, Perm::Read).unwrap();
        let t = smmu.translate(id, 0x1000_0000).unwrap().unwrap();
        assert_eq!(
            (t.memory, t.execute, t.perm, t.size),
            (Memory::Device, false, Perm::Read, 0x1000)
        );
        let t = smmu.translate(id, 0x1000_1000).unwrap().unwrap();
        assert_eq!((t.perm, t.memory), (Perm::ReadWrite, Memory::Device));
        drop(smmu);
    }

    /// Issue 9: hypervisor-owned tables: the VMID is reserved, the STE
    /// points at the hypervisor's root with its geometry, the driver never
    /// edits the tables, and `invalidate` reaches the SMMU.
    #[test]
    fn external_tables_are_attached_and_invalidated() {
        use crate::domain::ExternalStage2;
        let (regs, smmu) = enabled(None);
        let cfg = Stage2Config::new(Granule::K4, 40, 48).unwrap();
        let root = crate::hal::Dma::<FakeHal>::new(cfg.root_table_bytes(), cfg.root_align(), true)
            .unwrap();
        let ext = ExternalStage2 {
            vtcr: cfg.vtcr(),
            root: root.paddr(),
            vmid: Some(7),
            access_flag_fault_disable: true,
        };
        let id = smmu.create_external_domain(ext).unwrap();
        // The CPU's VMID is now taken in the SMMU's space.
        let other = smmu.create_domain(DomainOptions {
            vmid: Some(7),
            ..DomainOptions::new(cfg)
        });
        assert!(other.is_err());
        assert_eq!(
            smmu.create_external_domain(ExternalStage2 {
                root: root.paddr() + 0x1000,
                vmid: Some(8),
                ..ext
            }),
            Err(Error::Misaligned {
                addr: root.paddr() + 0x1000,
                align: cfg.root_align() as u64
            })
        );
        smmu.attach(id, 0x20).unwrap();
        let ste = smmu.ste(0x20).unwrap();
        assert_eq!((ste.vmid(), ste.s2ttb()), (7, root.paddr()));
        let info = smmu.domain_info(id).unwrap();
        assert!(info.external);
        assert_eq!(info.vttbr(), root.paddr() | 7 << 48);
        assert_eq!(info.vtcr, cfg.vtcr());
        assert_eq!(
            smmu.map(id, 0x4000_0000, 0x8000_0000, 0x1000, Perm::Read),
            Err(Error::ExternalTables(id))
        );
        assert_eq!(
            smmu.unmap(id, 0x4000_0000, 0x1000),
            Err(Error::ExternalTables(id))
        );
        let before = regs.commands().len();
        smmu.invalidate(id, 0x4000_0000, 0x1000).unwrap();
        let cmds = regs.commands()[before..].to_vec();
        assert_eq!(cmds.len(), 2);
        assert_eq!(
            (cmds[0][0] & 0xFF, (cmds[0][0] >> 32) as u16),
            (TLBI_S2_IPA, 7)
        );
        assert_eq!(cmds[0][1] & !0xFFF, 0x4000_0000);
        assert_eq!(
            smmu.invalidate(id, 0x4000_0800, 0x1000),
            Err(Error::Misaligned {
                addr: 0x4000_0800,
                align: 0x1000
            })
        );
        smmu.detach(0x20).unwrap();
        smmu.destroy_domain(id).unwrap();
        drop(smmu);
        drop(root);
    }

    /// Issue 12 item 2: the hints follow what changed: Leaf = 1 and TTL =
    /// the level when only leaves of one level changed; non-leaf when a
    /// table was unlinked; no TTL after a block was replaced without break.
    #[test]
    fn invalidation_hints_follow_the_change() {
        use crate::cmd::Command;
        let tlbis = |regs: &FakeRegs, from: usize| -> Vec<(bool, u8)> {
            regs.commands()[from..]
                .iter()
                .filter_map(|w| match Command::decode(*w) {
                    Command::TlbiS2Ipa { leaf, range, .. } => {
                        Some((leaf, range.map_or(0, |r| r.ttl)))
                    }
                    _ => None,
                })
                .collect()
        };
        for (bbml, cpu_bbml2) in [(0, false), (2, true)] {
            let (regs, smmu, id) = with_bbml(bbml, cpu_bbml2);
            // Two pages in one level-3 table, and a 2 MiB block.
            smmu.map(id, 0x4000_0000, 0x8000_0000, 0x2000, Perm::ReadWrite)
                .unwrap();
            smmu.map(id, 0x4020_0000, 0x8020_0000, M2, Perm::ReadWrite)
                .unwrap();
            let n = regs.commands().len();
            smmu.unmap(id, 0x4000_0000, 0x1000).unwrap(); // the table stays
            assert_eq!(tlbis(&regs, n), [(true, 3)]);
            let n = regs.commands().len();
            smmu.protect(id, 0x4020_0000, M2, Perm::Read).unwrap(); // the block
            assert_eq!(tlbis(&regs, n), [(true, 2)]);
            let n = regs.commands().len();
            smmu.unmap(id, 0x4000_1000, 0x1000).unwrap(); // empties the table
            assert_eq!(tlbis(&regs, n), [(false, 0)]);
            let n = regs.commands().len();
            smmu.unmap(id, 0x4030_0000, 0x1000).unwrap(); // splits the block
            let expected: &[(bool, u8)] = if cpu_bbml2 {
                &[(true, 0)] // the old block may be cached: no level
            } else {
                &[(true, 2), (true, 3)] // break (the block), then the page
            };
            assert_eq!(tlbis(&regs, n), expected, "BBML {bbml}");
            drop(smmu);
        }
    }

    /// Issue 12 item 3: tearing a VM down in one batch (2 StreamIDs
    /// detached, 16 separate mappings unmapped) shares the round trips:
    /// one CMD_SYNC for all the TLBIs and at most 3 for all the STEs,
    /// where single calls take one or more per call. Same end state.
    #[test]
    fn a_batched_teardown_shares_the_syncs() {
        let teardown = |batched: bool| {
            let (regs, smmu) = enabled(None);
            let id = domain(&smmu);
            for i in 0..16u64 {
                let ipa = 0x4000_0000 + i * 0x20_0000; // one table each
                smmu.map(id, ipa, 0x8000_0000 + i * 0x1000, 0x1000, Perm::ReadWrite)
                    .unwrap();
            }
            smmu.attach(id, 0x10).unwrap();
            smmu.attach(id, 0x18).unwrap();
            let tables = smmu
                .domains
                .lock()
                .get(id)
                .unwrap()
                .owned()
                .unwrap()
                .tables();
            let n = regs.commands().len();
            let mut hooks = 0;
            if batched {
                let mut b = smmu.batch().detach(0x10).detach(0x18);
                for i in 0..16u64 {
                    b = b.unmap(id, 0x4000_0000 + i * 0x20_0000, 0x1000);
                }
                b.commit(&mut |_| hooks += 1).unwrap();
            } else {
                smmu.detach(0x10).unwrap();
                smmu.detach(0x18).unwrap();
                for i in 0..16u64 {
                    smmu.unmap_with(id, 0x4000_0000 + i * 0x20_0000, 0x1000, &mut |_| hooks += 1)
                        .unwrap();
                }
            }
            let cmds = regs.commands()[n..].to_vec();
            let syncs = cmds.iter().filter(|c| c[0] & 0xFF == 0x46).count();
            // Same end state either way.
            assert!(smmu.ste(0x10).unwrap().config().is_abort());
            assert!(smmu.ste(0x18).unwrap().config().is_abort());
            assert_eq!(smmu.domain_info(id).unwrap().sids.len(), 0);
            let t = smmu
                .domains
                .lock()
                .get(id)
                .unwrap()
                .owned()
                .unwrap()
                .tables();
            assert!(t < tables, "emptied tables freed");
            assert_eq!(retired(&smmu, id), 0);
            assert_eq!(smmu.translate(id, 0x4000_0000).unwrap(), None);
            assert_eq!(hooks, 16);
            drop(smmu);
            (cmds.len(), syncs)
        };
        let (single_cmds, single_syncs) = teardown(false);
        let (batch_cmds, batch_syncs) = teardown(true);
        assert!(batch_syncs <= 4, "batched: {batch_syncs} syncs");
        assert!(single_syncs >= 18, "single calls: {single_syncs} syncs");
        assert!(batch_cmds < single_cmds);
    }

    /// A batch that cannot be applied as a whole: STE checks refuse it
    /// before anything changes; a refused table change leaves the earlier
    /// ones made and invalidated.
    #[test]
    fn a_refused_batch_change_keeps_the_safety_order() {
        let (regs, smmu) = enabled(None);
        let id = domain(&smmu);
        smmu.map(id, 0x4000_0000, 0x8000_0000, 0x2000, Perm::ReadWrite)
            .unwrap();
        smmu.attach(id, 0x10).unwrap();
        let before = smmu.stream_table_snapshot();
        assert_eq!(
            smmu.batch().detach(0x10).detach(0x18).commit(&mut |_| {}),
            Err(Error::SidNotAttached(0x18))
        );
        assert_eq!(smmu.stream_table_snapshot(), before, "an STE changed");
        let n = regs.commands().len();
        let r = smmu
            .batch()
            .unmap(id, 0x4000_0000, 0x1000)
            .unmap(id, 0x5000_0000, 0x1000)
            .commit(&mut |_| {});
        assert_eq!(r, Err(Error::NotMapped { addr: 0x5000_0000 }));
        assert_eq!(smmu.translate(id, 0x4000_0000).unwrap(), None);
        assert!(
            regs.commands()[n..].iter().any(|c| c[0] & 0xFF == 0x2A),
            "the made change was invalidated"
        );
        drop(smmu);
    }
}
