//! Mapping, unmapping and protecting a domain's driver-owned stage-2
//! tables, with every invalidation the change needs.
//!
//! # Order of a change
//!
//! 1. The whole request is validated: a refused call changes nothing.
//! 2. Blocks the range covers only partly are split into next-level tables
//!    of the same translations (see [`Smmu::unmap_with`]).
//! 3. The descriptors change (one 64-bit store each, published).
//! 4. The SMMU is invalidated (TLBI_S2_IPA over the range, or
//!    TLBI_S12_VMALL) and a CMD_SYNC completes; the CPU hook runs the CPU's
//!    own TLB maintenance for the range (CPU TLBIs do not reach an SMMU
//!    without BTM, and SMMU commands do not reach the CPU).
//! 5. Only then are tables the change emptied freed.

use crate::cmd::{self, Command, InvalidationHints};
use crate::error::{Error, Result};
use crate::hal::Hal;
use crate::pgtable::{Format, Table};
use crate::smmu::Smmu;
use crate::stage2::{MapOptions, Perm, Translation};

use super::{Domain, DomainId, MAX_RANGE_COMMANDS, Tables};

/// What a CPU sharing a domain's tables must invalidate, handed to the hook
/// of [`Smmu::unmap_with`] and [`Smmu::protect_with`].
///
/// The hook runs `TLBI IPAS2E1IS` for every page of `[ipa, ipa + len)`
/// (or the range form with FEAT_TLBIRANGE), `DSB ISH`, `TLBI VMALLE1IS`
/// (stage-1 entries combined with the old stage 2), `DSB ISH`, with
/// VTTBR_EL2 holding the VM's CPU VMID. It runs after the descriptors
/// changed and before any table they emptied is freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuInvalidation {
    /// The domain whose tables changed.
    pub domain: DomainId,
    /// The domain's SMMU VMID (the CPU's too, when the hypervisor created
    /// the domain with its CPU VMID).
    pub vmid: u16,
    /// First IPA of the changed range.
    pub ipa: u64,
    /// Length of the changed range in bytes.
    pub len: u64,
}

impl<H: Hal> Smmu<H> {
    /// Maps `[ipa, ipa + len)` of the domain to `[pa, pa + len)` as Normal
    /// memory with `perm` (blocks where alignment allows).
    pub fn map(&self, id: DomainId, ipa: u64, pa: u64, len: u64, perm: Perm) -> Result<()> {
        self.map_with(id, ipa, pa, len, &MapOptions::normal(perm))
    }

    /// Maps `[ipa, ipa + len)` of the domain to `[pa, pa + len)` with the
    /// memory type (Normal or Device-nGnRE), execute permission and block
    /// use of `opts`. Only invalid descriptors become valid, so nothing
    /// needs invalidating. [`crate::Error::ExternalTables`] for a domain
    /// whose tables the hypervisor owns.
    pub fn map_with(
        &self,
        id: DomainId,
        ipa: u64,
        pa: u64,
        len: u64,
        opts: &MapOptions,
    ) -> Result<()> {
        let mut domains = self.domains.lock();
        let d = domains.get_mut(id)?;
        if let Tables::Stage1(s1) = &mut d.tables {
            return s1.table.map_with(ipa, pa, len, opts);
        }
        d.owned_mut()?.map_with(ipa, pa, len, opts)
    }

    /// Unmaps `[ipa, ipa + len)` and invalidates the SMMU for it before
    /// returning: [`Smmu::unmap_with`] without a CPU sharing the tables.
    pub fn unmap(&self, id: DomainId, ipa: u64, len: u64) -> Result<()> {
        self.unmap_with(id, ipa, len, &mut |_| {})
    }

    /// Unmaps `[ipa, ipa + len)`: every page of it must be mapped.
    ///
    /// A block the range covers only partly is first split into a table of
    /// the same translations. With [`super::DomainOptions::cpu_bbml2`] on an
    /// SMMU with IDR3.BBML = 2, the table replaces the block in one store.
    /// Otherwise the split breaks before make: the block is made invalid,
    /// the SMMU and (through `cpu`) the CPU are invalidated for the whole
    /// block, and then the table is linked; DMA and CPU accesses to the
    /// block's range fault in that window.
    ///
    /// Then the range's descriptors are cleared, the SMMU is invalidated
    /// (TLBI + CMD_SYNC) and `cpu` is called for the range; tables the
    /// unmap emptied are freed only after both, and only if the SMMU
    /// invalidation completed. If it failed (the error is returned), they
    /// stay allocated and the domain's next invalidation is a
    /// TLBI_S12_VMALL of its VMID.
    pub fn unmap_with(
        &self,
        id: DomainId,
        ipa: u64,
        len: u64,
        cpu: &mut dyn FnMut(&CpuInvalidation),
    ) -> Result<()> {
        let mut domains = self.domains.lock();
        let d = domains.get_mut(id)?;
        if matches!(d.tables, Tables::Stage1(_)) {
            return self.stage1_unmap(d, ipa, len, cpu);
        }
        d.owned()?.check_range_mapped(ipa, len)?;
        let split_live = self.split_partial_blocks(d, ipa, len, cpu)?;
        let retired = d.owned()?.retired_tables();
        d.owned_mut()?.unmap(ipa, len)?;
        let t = d.owned()?;
        let hints = change_hints(
            t.retired_tables() > retired,
            t.changed_leaf_level(),
            split_live,
        );
        let r = self.invalidate_domain_range(d, ipa, len, hints);
        cpu(&CpuInvalidation {
            domain: id,
            vmid: d.vmid,
            ipa,
            len,
        });
        r?;
        // Tables emptied by this and any earlier unmap are in no walk cache
        // any more.
        d.owned_mut()?.release_retired();
        Ok(())
    }

    /// Changes the permission of a mapped range and invalidates the SMMU
    /// for it: [`Smmu::protect_with`] without a CPU sharing the tables.
    pub fn protect(&self, id: DomainId, ipa: u64, len: u64, perm: Perm) -> Result<()> {
        self.protect_with(id, ipa, len, perm, &mut |_| {})
    }

    /// Changes the permission of the mapped range `[ipa, ipa + len)` to
    /// `perm` (memory type and execute permission are kept), splitting
    /// partly covered blocks as [`Smmu::unmap_with`] does, then invalidates
    /// the SMMU and calls `cpu` for the range.
    pub fn protect_with(
        &self,
        id: DomainId,
        ipa: u64,
        len: u64,
        perm: Perm,
        cpu: &mut dyn FnMut(&CpuInvalidation),
    ) -> Result<()> {
        let mut domains = self.domains.lock();
        let d = domains.get_mut(id)?;
        if matches!(d.tables, Tables::Stage1(_)) {
            return self.stage1_protect(d, ipa, len, perm, cpu);
        }
        d.owned()?.check_range_mapped(ipa, len)?;
        let split_live = self.split_partial_blocks(d, ipa, len, cpu)?;
        d.owned_mut()?.protect(ipa, len, perm)?;
        let hints = change_hints(false, d.owned()?.changed_leaf_level(), split_live);
        let r = self.invalidate_domain_range(d, ipa, len, hints);
        cpu(&CpuInvalidation {
            domain: id,
            vmid: d.vmid,
            ipa,
            len,
        });
        r
    }

    /// Splits every block `[ipa, ipa + len)` covers only partly, until
    /// the range's edges fall on leaf boundaries: the stage-2 tables of
    /// `d` ([`Smmu::split_blocks`] with TTL hints). Returns whether a live
    /// block was replaced without break.
    pub(crate) fn split_partial_blocks(
        &self,
        d: &mut Domain<H>,
        ipa: u64,
        len: u64,
        cpu: &mut dyn FnMut(&CpuInvalidation),
    ) -> Result<bool> {
        self.split_blocks(d, Domain::owned_mut, true, ipa, len, cpu)
    }

    /// Splits every block `[ipa, ipa + len)` covers only partly, in the
    /// tables `tables(d)` returns (either stage), until the range's edges
    /// fall on leaf boundaries. Returns whether a live block was replaced
    /// without break (its entry may still be cached at the block's level,
    /// so the following invalidation must not name a level).
    ///
    /// Every table the splits need is allocated first
    /// ([`crate::pgtable::Table::reserve_splits`]): without memory the call
    /// fails with [`Error::NoMemory`] before any block changes.
    /// `level_hints`: the break's invalidation names the block's level.
    pub(crate) fn split_blocks<F: Format>(
        &self,
        d: &mut Domain<H>,
        tables: fn(&mut Domain<H>) -> Result<&mut Table<H, F>>,
        level_hints: bool,
        ipa: u64,
        len: u64,
        cpu: &mut dyn FnMut(&CpuInvalidation),
    ) -> Result<bool> {
        let mut reserve = tables(d)?.reserve_splits(ipa, len)?;
        let mut split_live = false;
        while let Some(b) = tables(d)?.partial_block(ipa, len)? {
            let split = tables(d)?.prepare_split_from(&b, &mut reserve)?;
            if d.split_without_break {
                // BBML2 on both sides: the table replaces the block in one
                // store. Cached entries of the old block translate exactly
                // as the new table does; the invalidation after the change
                // removes them for the range that changes.
                tables(d)?.install_split(&b, split)?;
                split_live = true;
                continue;
            }
            // Break before make: only the block (a leaf) changed.
            tables(d)?.break_block(&b)?;
            let hints = if level_hints {
                InvalidationHints::leaves_at(Some(b.level))
            } else {
                InvalidationHints::NONE
            };
            let r = self.invalidate_domain_range(d, b.ipa, b.size, hints);
            cpu(&CpuInvalidation {
                domain: d.id,
                vmid: d.vmid,
                ipa: b.ipa,
                len: b.size,
            });
            if let Err(e) = r {
                // The block's old translation may still be cached: linking
                // a table now could make two translations of one address
                // live. Put the block back (invalid -> valid needs no
                // invalidation); nothing changed but the window.
                tables(d)?.restore_block(&b)?;
                return Err(e);
            }
            tables(d)?.install_split(&b, split)?;
        }
        Ok(split_live)
    }

    /// Invalidates the SMMU's cached translations of `[ipa, ipa + len)` in
    /// the domain, after the hypervisor changed its own stage-2 tables
    /// ([`Smmu::create_external_domain`]), or after any change to shared
    /// tables the driver did not make: TLBI_S2_IPA over the range (or
    /// TLBI_S12_VMALL), then CMD_SYNC. The range must be granule aligned
    /// and inside the IPA space.
    pub fn invalidate(&self, id: DomainId, ipa: u64, len: u64) -> Result<()> {
        let mut domains = self.domains.lock();
        let d = domains.get_mut(id)?;
        let cfg = d.tables.config();
        let g = cfg.granule().size();
        if len == 0 {
            return Err(Error::ZeroLength);
        }
        for addr in [ipa, len] {
            if !addr.is_multiple_of(g) {
                return Err(Error::Misaligned { addr, align: g });
            }
        }
        match ipa.checked_add(len) {
            Some(end) if end <= 1u64 << cfg.ipa_bits() => {}
            _ => return Err(Error::RangeOverflow { addr: ipa, len }),
        }
        // The hypervisor's change is unknown to the driver: no hints.
        self.invalidate_domain_range(d, ipa, len, InvalidationHints::NONE)
    }

    /// What the domain's tables translate `ipa` to (stage-2 and stage-1
    /// domains alike).
    pub fn translate(&self, id: DomainId, ipa: u64) -> Result<Option<Translation>> {
        let domains = self.domains.lock();
        let d = domains.get(id)?;
        if let Tables::Stage1(s1) = &d.tables {
            return Ok(s1.table.query(ipa));
        }
        Ok(d.owned()?.query(ipa))
    }

    /// Invalidates `[ipa, ipa + len)` of the domain, or its whole VMID when
    /// an earlier invalidation failed; records a failure for the next one.
    pub(crate) fn invalidate_domain_range(
        &self,
        d: &mut Domain<H>,
        ipa: u64,
        len: u64,
        hints: InvalidationHints,
    ) -> Result<()> {
        let r = if let Tables::Stage1(s1) = &d.tables {
            let shift = s1.cfg.granule().shift();
            self.invalidate_stage1(d.vmid, s1.asid, ipa, len, shift, d.tlb_unknown)
        } else if d.tlb_unknown {
            self.invalidate_vmid(d.vmid)
        } else {
            let shift = d.tables.config().granule().shift();
            self.invalidate_ipa(d.vmid, ipa, len, shift, hints)
        };
        // A guest's stage 1 nested on this stage 2: combined entries are
        // tagged by VA, not IPA (IHI 0070: TLBI_S2_IPA need not remove
        // them); TLBI_NH_ALL for the VMID does.
        let r = r.and_then(|()| {
            if d.nested_streams > 0 && self.is_live() {
                self.submit(&[Command::TlbiNhAll { vmid: d.vmid }])
            } else {
                Ok(())
            }
        });
        d.tlb_unknown = r.is_err();
        r
    }

    /// TLBI_S12_VMALL for `vmid`, then one CMD_SYNC.
    pub(crate) fn invalidate_vmid(&self, vmid: u16) -> Result<()> {
        if !self.is_live() {
            return Ok(());
        }
        self.submit(&[Command::TlbiS12Vmall { vmid }])
    }

    /// TLBI_S2_IPA for the range (range form with RIL), or TLBI_S12_VMALL
    /// past [`MAX_RANGE_COMMANDS`] (or the erratum limit), then one
    /// CMD_SYNC. Leaf and TTL as `hints` allow (non-leaf when tables were
    /// unlinked: they may be in walk caches).
    fn invalidate_ipa(
        &self,
        vmid: u16,
        ipa: u64,
        len: u64,
        granule_shift: u32,
        hints: InvalidationHints,
    ) -> Result<()> {
        if !self.is_live() {
            return Ok(());
        }
        // On an SMMU that needs a CMD_SYNC every N commands, a range that
        // would take more falls back to one TLBI_S12_VMALL instead.
        let max = self
            .features()
            .max_commands_per_sync()
            .map_or(MAX_RANGE_COMMANDS, |n| n.min(MAX_RANGE_COMMANDS));
        let ril = self.features().ril;
        // Planned and issued without allocating: the tables already changed.
        let plan = cmd::s2_range_plan(vmid, ipa, len, granule_shift, ril, max, hints);
        self.submit_plan(&plan)
    }
}

/// The TLBI hints for a change: Leaf when no table was unlinked, TTL when
/// every changed leaf sat at one level and no live block was replaced
/// without break in the same operation.
pub(crate) fn change_hints(
    tables_unlinked: bool,
    level: Option<u32>,
    split_live: bool,
) -> InvalidationHints {
    if tables_unlinked {
        InvalidationHints::NONE
    } else if split_live {
        InvalidationHints::leaves_at(None)
    } else {
        InvalidationHints::leaves_at(level)
    }
}

#[cfg(test)]
#[path = "split_tests.rs"]
mod tests;
