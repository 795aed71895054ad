//! Stage-1 domains: DMA isolation on an SMMU without stage 2 (or by
//! choice, [`super::StagePolicy::Stage1`]).
//!
//! A stage-1 domain is used exactly like a stage-2 one: its input
//! addresses are the VM's IPAs, its outputs PAs, and `map`/`unmap`/
//! `protect`/`attach`/`detach`/`translate`/`domain_info` behave the same.
//! Underneath, each domain owns:
//!
//! - an ASID (from the SMMU's 8- or 16-bit ASID space, IDR0.ASID16);
//! - VMID 0, the VMID reserved for streams without stage 2: on an SMMU
//!   that implements stage 2, STE.S2VMID tags stage-1 TLB entries too, and
//!   every driver-owned stage-1 domain shares VMID 0 (as Linux does), told
//!   apart by its ASID; TLBI_NH_* commands name VMID 0 and the ASID. So
//!   stage-1 domains can share one stream's CD table on substreams
//!   ([`Smmu::attach_ssid`] needs the stream's VMID). `DomainOptions::vmid`
//!   still gives a domain a VMID of its own (allocated, freed with it);
//! - stage-1 tables ([`crate::pgtable::format::s1`]) walked through TTB0 of
//!   one context descriptor (EPD1 = 1, T0SZ = 64 - IPA bits, IPS = the
//!   output size, MAIR = [`crate::pgtable::format::s1::MAIR`]), which every
//!   attached STE points at (S1Fmt linear, S1CDMax = 0: one CD per stream,
//!   the only layout QEMU models); on an SMMU with substreams each
//!   attached stream instead gets a CD table with a copy of the CD at
//!   SSID 0 (`src/domain/substream.rs`).
//!
//! The CD is written through [`cd::plan_update`], whose `Sync` steps issue
//! CFGI_CD for every attached StreamID and a CMD_SYNC. Unmap and protect
//! invalidate with TLBI_NH_VA (the range form with IDR3.RIL) or
//! TLBI_NH_ASID past [`super::MAX_RANGE_COMMANDS`], then CMD_SYNC; block
//! splits follow the stage-2 rules (break before make unless both sides
//! have BBML2).

use alloc::vec::Vec;

use tock_registers::LocalRegisterCopy;

use crate::cd::{self, Cd, Stage1Cd};
use crate::cmd::{self, Command, InvalidationHints};
use crate::entry_plan::UpdateStep;
use crate::error::{Error, Invalid, Result, Unsupported};
use crate::hal::{Dma, Hal};
use crate::pgtable::format::s1::MAIR;
use crate::pgtable::{Format, Geometry, Stage1, Stage1Table};
use crate::smmu::Smmu;
use crate::stage2::{Granule, Perm, Stage2Config};
use crate::ste::{STE_0, STE_1, Stage1Ste, Ste};

use super::{CpuInvalidation, Domain, DomainId, DomainOptions, MAX_RANGE_COMMANDS, Tables};

/// CD.TG0 encodings.
const TG0_4K: u8 = 0;
const TG0_64K: u8 = 1;
const TG0_16K: u8 = 2;
/// Bytes (and alignment) of one CD.
const CD_BYTES: usize = 64;
/// STE.PRIVCFG = Privileged: a stage-1 domain maps EL1 pages, and PCIe
/// requests without PASID arrive unprivileged.
const PRIVCFG_PRIVILEGED: u64 = 0b11;
/// STE.INSTCFG = Data: DMA never fetches instructions.
const INSTCFG_DATA: u64 = 0b10;

/// The stage-1 state of a domain.
#[derive(Debug)]
pub(crate) struct Stage1Ctx<H: Hal> {
    /// The geometry asked for (granule, IPA bits, output bits).
    pub(crate) cfg: Stage2Config,
    /// The tables, walked through the CD's TTB0.
    pub(crate) table: Stage1Table<H>,
    /// The context descriptor every attached STE points at.
    pub(crate) cd: Dma<H>,
    /// The domain's ASID.
    pub(crate) asid: u16,
    /// Whether the domain's VMID came from the allocator (asked for with
    /// `DomainOptions::vmid`) and must be freed with it.
    pub(crate) owns_vmid: bool,
}

fn tg0(g: Granule) -> u8 {
    match g {
        Granule::K4 => TG0_4K,
        Granule::K16 => TG0_16K,
        Granule::K64 => TG0_64K,
    }
}

impl<H: Hal> Smmu<H> {
    /// Creates a stage-1 domain (see the module documentation).
    pub(crate) fn create_stage1_domain(&self, options: DomainOptions) -> Result<DomainId> {
        let f = self.features();
        if !f.stage1 {
            return Err(Error::Unsupported(Unsupported::Stage1));
        }
        let cfg = options.stage2;
        if !f.supports_granule(cfg.granule()) {
            return Err(Error::Unsupported(Unsupported::Granule));
        }
        if cfg.oas_bits() > u32::from(f.oas_bits) {
            return Err(Error::Unsupported(Unsupported::AddressSize));
        }
        let geo = Geometry::stage1(cfg.granule(), cfg.ipa_bits(), cfg.oas_bits())?;
        let table = Stage1Table::<H>::new(geo, f.coherent)?;
        let cd_mem = Dma::<H>::new(CD_BYTES, CD_BYTES, f.coherent)?;
        let mut domains = self.domains.lock();
        domains.reserve()?;
        let (vmid, owns_vmid) = match (f.stage2, options.vmid) {
            (true, Some(v)) => (domains.vmids.alloc_specific(v)?, true),
            // VMID 0: reserved in the allocator for non-stage-2 streams;
            // shared by every stage-1 domain, which its ASID tells apart.
            (true, None) => (0, false),
            (false, Some(_)) => {
                return Err(Error::Invalid(Invalid::VmidWithoutStage2));
            }
            (false, None) => (0, false),
        };
        let asid = match domains.asids.alloc() {
            Ok(a) => a,
            Err(e) => {
                if owns_vmid {
                    let _ = domains.vmids.free(vmid);
                }
                return Err(e);
            }
        };
        let w = self.walk_attributes();
        let target = Cd::new(&Stage1Cd {
            asid,
            ttb0: table.root_paddr(),
            t0sz: (64 - geo.in_bits()) as u8,
            tg0: tg0(geo.granule()),
            ips: geo.oas_encoding(),
            ir0: w.inner,
            or0: w.outer,
            sh0: w.shareability,
            mair: MAIR,
            record_faults: true,
            affd: false,
        })
        // S = 1 where the SMMU forces stalls (S = 0 is ILLEGAL there).
        .map(|cd| cd.with_stall(f.stall_forced()))
        .and_then(|target| self.write_cd(&cd_mem, &[], &target));
        if let Err(e) = target {
            let _ = domains.asids.free(asid);
            if owns_vmid {
                let _ = domains.vmids.free(vmid);
            }
            return Err(e);
        }
        let split_without_break = options.cpu_bbml2 && f.bbml >= 2;
        // Fallible: without memory the IDs go back (the CD is in memory no
        // STE points at yet).
        let ctx = match crate::fallible::try_box(Stage1Ctx {
            cfg,
            table,
            cd: cd_mem,
            asid,
            owns_vmid,
        }) {
            Ok(ctx) => ctx,
            Err(e) => {
                let _ = domains.asids.free(asid);
                if owns_vmid {
                    let _ = domains.vmids.free(vmid);
                }
                return Err(e);
            }
        };
        Ok(domains.insert(|id| Domain {
            id,
            vmid,
            affd: false,
            split_without_break,
            tables: Tables::Stage1(ctx),
            sids: Vec::new(),
            tlb_unknown: false,
            nested_streams: 0,
        }))
    }

    /// Replaces the CD in `mem` by `target` through [`cd::plan_update`]:
    /// `Sync` = CFGI_CD (leaf) for each of `sids`, then CMD_SYNC.
    pub(crate) fn write_cd(&self, mem: &Dma<H>, sids: &[u32], target: &Cd) -> Result<()> {
        let mut current = Cd::invalid();
        for (i, w) in current.0.iter_mut().enumerate() {
            *w = mem.read_u64(i);
        }
        let mut cfgi: Vec<Command> = Vec::new();
        cfgi.try_reserve_exact(sids.len())
            .map_err(|_| Error::NoMemory)?;
        cfgi.extend(sids.iter().map(|&sid| Command::CfgiCd {
            sid,
            ssid: 0,
            leaf: true,
        }));
        for step in cd::plan_update(&current, target)?.iter().copied() {
            match step {
                UpdateStep::Write { dword, value } => mem.write_u64(dword, value),
                UpdateStep::Publish => mem.publish(0, mem.len_u64()),
                UpdateStep::Sync => {
                    if self.is_live() {
                        self.submit(&cfgi)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The STE of a StreamID attached to stage-1 domain `d`: the domain's
    /// CD (fetched with the walk attributes of CR1), its VMID, privileged
    /// data transactions.
    pub(crate) fn stage1_ste(&self, d: &Domain<H>, s1: &Stage1Ctx<H>) -> Result<Ste> {
        let w = self.walk_attributes();
        let mut ste = Ste::stage1(&Stage1Ste {
            cir: w.inner,
            cor: w.outer,
            csh: w.shareability,
            ..Stage1Ste::new(s1.cd.paddr(), d.vmid)
        })?;
        let mut d1 = LocalRegisterCopy::<u64, STE_1::Register>::new(ste.0[1]);
        d1.modify(STE_1::PRIVCFG.val(PRIVCFG_PRIVILEGED) + STE_1::INSTCFG.val(INSTCFG_DATA));
        ste.0[1] = d1.get();
        Ok(ste)
    }

    /// The STE of a StreamID attached to stage-1 domain `d` through the CD
    /// table `t` (`src/domain/substream.rs`): [`Smmu::stage1_ste`] pointing
    /// at the table, with its S1Fmt and S1CDMax, S1DSS = substream 0.
    pub(crate) fn stage1_table_ste(
        &self,
        d: &Domain<H>,
        t: &crate::cdtable::CdTable<H>,
    ) -> Result<Ste> {
        let w = self.walk_attributes();
        let mut ste = Ste::stage1(&Stage1Ste {
            cir: w.inner,
            cor: w.outer,
            csh: w.shareability,
            s1cdmax: t.s1cdmax(),
            s1dss: STE_1::S1DSS::Ssid0.value as u8,
            ..Stage1Ste::new(t.base(), d.vmid)
        })?;
        let mut d0 = LocalRegisterCopy::<u64, STE_0::Register>::new(ste.0[0]);
        d0.modify(STE_0::S1FMT.val(u64::from(t.format().s1fmt())));
        ste.0[0] = d0.get();
        let mut d1 = LocalRegisterCopy::<u64, STE_1::Register>::new(ste.0[1]);
        d1.modify(STE_1::PRIVCFG.val(PRIVCFG_PRIVILEGED) + STE_1::INSTCFG.val(INSTCFG_DATA));
        ste.0[1] = d1.get();
        Ok(ste)
    }

    /// Destroys stage-1 domain `id` (no streams attached): TLBI_NH_ASID +
    /// CMD_SYNC, the CD made invalid, ASID and VMID freed, tables freed.
    pub(crate) fn destroy_stage1_domain(&self, id: DomainId) -> Result<()> {
        let mut domains = self.domains.lock();
        let d = domains.get(id)?;
        // Attached to a stream, or to a substream of one.
        let on_substream = domains
            .cd_tables
            .iter()
            .any(|(_, t)| t.users.iter().any(|(_, &u)| u == id));
        if !d.sids.is_empty() || on_substream {
            return Err(Error::DomainBusy(id));
        }
        let vmid = d.vmid;
        let Tables::Stage1(s1) = &d.tables else {
            return Err(Error::Invalid(Invalid::NotStage1));
        };
        let (asid, owns_vmid) = (s1.asid, s1.owns_vmid);
        if self.is_live() {
            self.submit(&[Command::TlbiNhAsid { vmid, asid }])?;
        }
        self.write_cd(&s1.cd, &[], &Cd::invalid())?;
        domains.asids.free(asid)?;
        if owns_vmid {
            domains.vmids.free(vmid)?;
        }
        domains.domains.remove(&id);
        Ok(())
    }

    /// `unmap_with` for a stage-1 domain (validated by the caller's
    /// dispatch): split partial blocks, clear, invalidate, hook, free.
    pub(crate) fn stage1_unmap(
        &self,
        d: &mut Domain<H>,
        ipa: u64,
        len: u64,
        cpu: &mut dyn FnMut(&CpuInvalidation),
    ) -> Result<()> {
        s1(d)?.table.check_range_mapped(ipa, len)?;
        self.stage1_split_partial_blocks(d, ipa, len, cpu)?;
        s1(d)?.table.unmap(ipa, len)?;
        let r = self.invalidate_domain_range(d, ipa, len, InvalidationHints::NONE);
        cpu(&CpuInvalidation {
            domain: d.id,
            vmid: d.vmid,
            ipa,
            len,
        });
        r?;
        s1(d)?.table.release_retired();
        Ok(())
    }

    /// `protect_with` for a stage-1 domain.
    pub(crate) fn stage1_protect(
        &self,
        d: &mut Domain<H>,
        ipa: u64,
        len: u64,
        perm: Perm,
        cpu: &mut dyn FnMut(&CpuInvalidation),
    ) -> Result<()> {
        // Refused before anything changes (stage 1 has no write-only).
        Stage1::with_perm(0, perm)?;
        s1(d)?.table.check_range_mapped(ipa, len)?;
        self.stage1_split_partial_blocks(d, ipa, len, cpu)?;
        s1(d)?.table.protect(ipa, len, perm)?;
        let r = self.invalidate_domain_range(d, ipa, len, InvalidationHints::NONE);
        cpu(&CpuInvalidation {
            domain: d.id,
            vmid: d.vmid,
            ipa,
            len,
        });
        r
    }

    /// `split_blocks` (src/domain/mapping.rs) over the stage-1 tables:
    /// BBML2 on both sides replaces a block by its table in one store;
    /// otherwise break, invalidate (SMMU and `cpu`), make.
    fn stage1_split_partial_blocks(
        &self,
        d: &mut Domain<H>,
        ipa: u64,
        len: u64,
        cpu: &mut dyn FnMut(&CpuInvalidation),
    ) -> Result<()> {
        self.split_blocks(d, s1_table, false, ipa, len, cpu)
            .map(|_| ())
    }

    /// TLBI_NH_VA over `[va, va + len)` of (`vmid`, `asid`) (range form
    /// with RIL), or TLBI_NH_ASID past the command budget, then CMD_SYNC.
    /// Non-leaf: unmapped tables may be in walk caches.
    pub(crate) fn invalidate_stage1(
        &self,
        vmid: u16,
        asid: u16,
        va: u64,
        len: u64,
        granule_shift: u32,
        whole_asid: bool,
    ) -> Result<()> {
        if !self.is_live() {
            return Ok(());
        }
        if whole_asid {
            return self.submit(&[Command::TlbiNhAsid { vmid, asid }]);
        }
        let max = self
            .features()
            .max_commands_per_sync()
            .map_or(MAX_RANGE_COMMANDS, |n| n.min(MAX_RANGE_COMMANDS));
        // Planned and issued without allocating: the tables already changed.
        let ril = self.features().ril;
        let plan = cmd::nh_range_plan(
            vmid,
            asid,
            va,
            len,
            granule_shift,
            ril,
            max,
            InvalidationHints::NONE,
        );
        self.submit_plan(&plan)
    }
}

/// The stage-1 state of `d` (a stage-2 domain reaching stage-1 code would
/// be a driver bug, reported as [`Invalid::NotStage1`]).
fn s1<H: Hal>(d: &mut Domain<H>) -> Result<&mut Stage1Ctx<H>> {
    match &mut d.tables {
        Tables::Stage1(s) => Ok(s),
        _ => Err(Error::Invalid(Invalid::NotStage1)),
    }
}

/// The stage-1 tables of `d`.
fn s1_table<H: Hal>(d: &mut Domain<H>) -> Result<&mut Stage1Table<H>> {
    Ok(&mut s1(d)?.table)
}

#[cfg(test)]
#[path = "stage1_tests.rs"]
mod tests;
