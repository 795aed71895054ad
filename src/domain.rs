//! VM domains: a VMID, translation tables and the streams attached to them.
//!
//! A domain translates with stage 2 when the SMMU implements it, with
//! stage 1 otherwise (or as [`DomainOptions::stage`] asks): see
//! `src/domain/stage1.rs`. Both kinds take IPAs in and give PAs out, and
//! the domain calls treat them alike; [`DomainInfo::stage`] says which one a
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
//!
//! This file holds the domain types and the per-SMMU bookkeeping
//! ([`DomainOptions`], [`Stage`], [`StagePolicy`], the VMID and ASID
//! allocators). The calls are in `src/domain/`: `lifecycle.rs` (create,
//! destroy, stage policy), `attach.rs` (attach/detach and the STE),
//! `info.rs` (queries), `mapping.rs` (map/unmap/protect and invalidation),
//! `batch.rs`, `external.rs` (hypervisor-owned tables), `stage1.rs`,
//! `substream.rs` and `nested.rs`.

use crate::vecmap::VecMap;
use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::hal::Hal;
use crate::idalloc::{IdAllocator, IdKind};
use crate::stage2::{Stage2Config, Stage2Table};

mod attach;
mod batch;
mod external;
mod info;
mod lifecycle;
mod mapping;
mod nested;
mod stage1;
mod substream;

pub use batch::Batch;
pub use info::DomainInfo;
pub use nested::{
    CD_BYTES, GuestCd, MAX_T0SZ, MIN_T0SZ, NestedError, NestedRequest, validate_cd, validate_cd_ipa,
};

pub use crate::stage2::{MapOptions, Memory, Perm, Translation};
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

/// Which stage [`Smmu::create_domain`](crate::Smmu::create_domain) builds a domain with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StagePolicy {
    /// Stage 2 when the SMMU implements it, stage 1 otherwise.
    #[default]
    Auto,
    /// Stage 1 ([`Unsupported::Stage1`](crate::Unsupported::Stage1) without IDR0.S1P).
    Stage1,
    /// Stage 2 ([`Unsupported::Stage2`](crate::Unsupported::Stage2) without IDR0.S2P).
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
    /// Built and edited by the driver ([`Smmu::map`](crate::Smmu::map),
    /// [`Smmu::unmap`](crate::Smmu::unmap)); a CPU may share them
    /// (VTTBR_EL2 = the root).
    Owned(Stage2Table<H>),
    /// Built and edited by the hypervisor; the driver only points STEs at
    /// them and invalidates on request
    /// ([`Smmu::invalidate`](crate::Smmu::invalidate)).
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

#[cfg(test)]
mod tests;
