//! Several domain changes in one command batch, with one CMD_SYNC.
//!
//! Tearing down a VM, ballooning many pages or moving a set of devices
//! costs, with single calls, one invalidation round trip (TLBI or CFGI +
//! CMD_SYNC) per call. A [`Batch`] gathers detaches, attaches, unmaps and
//! protects and commits them with the single calls' safety order, sharing
//! the round trips:
//!
//! 1. STE changes (detach to abort, attach to the domain): every entry's
//!    plan advances in lock step, one CMD_SYNC per round of CFGI_STEs (at
//!    most three rounds, however many StreamIDs).
//! 2. Table changes, in the order given: each is validated, its partly
//!    covered blocks split (a break-before-make split still completes its
//!    own invalidation first), then its descriptors change.
//! 3. One batch of TLBIs for every changed range (TLBI_S12_VMALL for a
//!    domain whose ranges would take too many), then one CMD_SYNC; the CPU
//!    hook for every range.
//! 4. Only then are tables freed.
//!
//! If a change is refused, the changes before it stay made and are
//! invalidated before the error is returned, exactly as if they had been
//! single calls; nothing after it is made.

use alloc::vec::Vec;

use core::cell::Cell;

use crate::cmd::{self, Command, InvalidationHints, RangePlan};
use crate::error::{Error, Result};
use crate::fallible;
use crate::hal::Hal;
use crate::smmu::Smmu;
use crate::stage2::Perm;
use crate::ste::Ste;

use super::mapping::CpuInvalidation;
use super::{DomainId, MAX_RANGE_COMMANDS};

#[derive(Debug, Clone, Copy)]
enum TableOp {
    Unmap,
    Protect(Perm),
}

/// A table change a commit made, and its invalidation.
#[derive(Debug, Clone, Copy)]
struct Changed {
    id: DomainId,
    ipa: u64,
    len: u64,
    hints: InvalidationHints,
    vmid: u16,
    /// The TLBIs (`None`: an earlier change's TLBI_S12_VMALL of the same
    /// VMID covers this one).
    plan: Option<RangePlan>,
    /// A TLBI_NH_ALL of the VMID follows.
    nh_all: bool,
}

impl Changed {
    /// Commands this change issues.
    fn commands(&self) -> usize {
        self.plan.map_or(0, |p| p.len()) + usize::from(self.nh_all)
    }

    /// Command `i` of [`Changed::commands`].
    fn command(&self, i: usize) -> Command {
        match self.plan {
            Some(p) if i < p.len() => p.get(i),
            _ if self.nh_all => Command::TlbiNhAll { vmid: self.vmid },
            _ => Command::TlbiS12Vmall { vmid: self.vmid },
        }
    }
}

/// Domain changes to commit together ([`Smmu::batch`]).
#[derive(Debug)]
#[must_use = "nothing happens until `commit`"]
pub struct Batch<'a, H: Hal> {
    smmu: &'a Smmu<H>,
    detach: Vec<u32>,
    attach: Vec<(DomainId, u32)>,
    tables: Vec<(DomainId, u64, u64, TableOp)>,
    /// A change could not be recorded (out of memory): `commit` refuses
    /// the whole batch with [`Error::NoMemory`] before changing anything.
    no_memory: bool,
}

/// Appends `x` to `v` unless the allocator has no room; returns whether it
/// did.
fn try_push<T>(v: &mut Vec<T>, x: T) -> bool {
    if crate::fallible::try_reserve(v, 1).is_err() {
        return false;
    }
    v.push(x);
    true
}

impl<H: Hal> Smmu<H> {
    /// Starts a [`Batch`] of domain changes.
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// use smmuv3::testing::{HostHal, SmmuModel};
    /// let model = SmmuModel::default();
    /// // SAFETY: the model outlives the driver; nothing else drives it.
    /// let smmu = unsafe { smmuv3::Smmu::<HostHal>::new(model.base(), smmuv3::Config::default()) }?;
    /// smmu.enable()?;
    /// use smmuv3::{DomainOptions, Granule, Perm, Stage2Config};
    /// let cfg = Stage2Config::new(Granule::K4, 40, 48)?;
    /// let (a, b) = (smmu.create_domain(DomainOptions::new(cfg))?, smmu.create_domain(DomainOptions::new(cfg))?);
    /// smmu.map(a, 0, 0x8000_0000, 0x10_0000, Perm::ReadWrite)?;
    /// smmu.attach(a, 8)?;
    /// // Move StreamID 8 from VM a to VM b and take a's memory back, with
    /// // one round of invalidations.
    /// let syncs = smmu.stats().cmdq.syncs;
    /// smmu.batch().detach(8).attach(b, 8).unmap(a, 0, 0x10_0000).commit(&mut |_| {})?;
    /// assert_eq!(smmu.domain_of(8), Some(b));
    /// assert!(smmu.stats().cmdq.syncs - syncs <= 4);
    /// # Ok::<(), smmuv3::Error>(())
    /// ```
    pub fn batch(&self) -> Batch<'_, H> {
        Batch {
            smmu: self,
            detach: Vec::new(),
            attach: Vec::new(),
            tables: Vec::new(),
            no_memory: false,
        }
    }
}

impl<'a, H: Hal> Batch<'a, H> {
    /// Returns `sid` to abort (as [`Smmu::detach`]).
    pub fn detach(mut self, sid: u32) -> Self {
        self.no_memory |= !try_push(&mut self.detach, sid);
        self
    }

    /// Points `sid` at domain `id` (as [`Smmu::attach`]).
    pub fn attach(mut self, id: DomainId, sid: u32) -> Self {
        self.no_memory |= !try_push(&mut self.attach, (id, sid));
        self
    }

    /// Unmaps `[ipa, ipa + len)` of domain `id` (as [`Smmu::unmap`]).
    pub fn unmap(mut self, id: DomainId, ipa: u64, len: u64) -> Self {
        self.no_memory |= !try_push(&mut self.tables, (id, ipa, len, TableOp::Unmap));
        self
    }

    /// Changes the permission of `[ipa, ipa + len)` of domain `id` (as
    /// [`Smmu::protect`]).
    pub fn protect(mut self, id: DomainId, ipa: u64, len: u64, perm: Perm) -> Self {
        self.no_memory |= !try_push(&mut self.tables, (id, ipa, len, TableOp::Protect(perm)));
        self
    }

    /// Commits every change (see the module documentation for the order),
    /// calling `cpu` for every changed range of a table a CPU may share.
    /// StreamIDs of declared groups of several StreamIDs are refused here
    /// ([`Error::SidInGroup`]): use [`Smmu::attach_group`] /
    /// [`Smmu::detach_group`].
    pub fn commit(self, cpu: &mut dyn FnMut(&CpuInvalidation)) -> Result<()> {
        if self.no_memory {
            return Err(Error::NoMemory);
        }
        let smmu = self.smmu;
        // Lock order: groups -> domains -> stream table -> cmdq.
        let groups = smmu.groups.lock();
        let mut domains = smmu.domains.lock();

        // 1. STEs. Everything is checked before any entry changes.
        let mut updates = Vec::new();
        fallible::try_reserve_exact(&mut updates, self.detach.len() + self.attach.len())?;
        for &sid in self.detach.iter().chain(self.attach.iter().map(|(_, s)| s)) {
            smmu.check_sid(sid)?;
            if let Some(group) = groups.shared_group_of(sid) {
                return Err(Error::SidInGroup { sid, group });
            }
        }
        for &sid in &self.detach {
            if !domains.is_attached(sid) {
                return Err(Error::SidNotAttached(sid));
            }
            if crate::cdtable::has_substreams(&domains.cd_tables, sid) {
                return Err(crate::cdtable::SubstreamError::SubstreamsAttached(sid).into());
            }
            updates.push((sid, Ste::abort()));
        }
        for &(id, sid) in &self.attach {
            if domains.is_attached(sid) && !self.detach.contains(&sid) {
                return Err(Error::SidAttached(sid));
            }
            let current = smmu.ste(sid)?;
            if current.is_live() && !self.detach.contains(&sid) {
                return Err(Error::SidAttached(sid));
            }
            let ste = smmu.domain_ste(domains.get(id)?)?;
            // A StreamID moved from one domain to another ends attached.
            updates.retain(|(s, _)| *s != sid);
            updates.push((sid, ste));
        }
        // Room for the bookkeeping first: once the STEs are written it
        // cannot fail.
        domains.attached.reserve(self.attach.len())?;
        for &(id, _) in &self.attach {
            let n = self.attach.iter().filter(|(d, _)| *d == id).count();
            fallible::try_reserve(&mut domains.get_mut(id)?.sids, n)?;
        }
        let mut cd_cfgis: Vec<Command> = Vec::new();
        fallible::try_reserve_exact(&mut cd_cfgis, 2 * self.detach.len())?;
        smmu.write_stes(&updates)?;
        // A stage-1 stream's CD may still be cached after its CFGI_STE.
        // (Within the capacity reserved above: no allocation.)
        cd_cfgis.extend(
            self.detach
                .iter()
                .filter(|sid| {
                    domains
                        .attached
                        .get(sid)
                        .and_then(|id| domains.get(*id).ok())
                        .is_some_and(|d| matches!(d.tables, super::Tables::Stage1(_)))
                        || domains.nested.contains_key(sid)
                })
                .map(|&sid| Command::CfgiCdAll { sid }),
        );
        // A guest's nested stream leaves stage-1 entries under its VM's
        // VMID and its ASID, which it gives up below.
        for sid in &self.detach {
            if let (Some(n), Some(d)) = (
                domains.nested.get(sid),
                domains
                    .attached
                    .get(sid)
                    .and_then(|id| domains.get(*id).ok()),
            ) {
                cd_cfgis.push(Command::TlbiNhAsid {
                    vmid: d.vmid,
                    asid: n.cd.asid,
                });
            }
        }
        if smmu.is_live() && !cd_cfgis.is_empty() {
            smmu.submit(&cd_cfgis)?;
        }
        for &sid in &self.detach {
            // A guest's nested stream gives up its ASID.
            Smmu::<H>::forget_nested_locked(&mut domains, sid);
            // Its CD table (if any) is unreachable now (CFGI_CD_ALL above).
            domains.cd_tables.remove(&sid);
            if let Some(id) = domains.attached.remove(&sid) {
                domains.get_mut(id)?.sids.retain(|&s| s != sid);
            }
        }
        for &(id, sid) in &self.attach {
            domains.attached.insert(sid, id);
            domains.get_mut(id)?.sids.push(sid);
        }

        // 2. Table changes, each validated before it is made. Everything
        // after the first change is within this reservation: nothing from
        // here on allocates, so the invalidation of what changed always
        // goes out.
        let mut changed: Vec<Changed> = Vec::new();
        fallible::try_reserve_exact(&mut changed, self.tables.len())?;
        let mut refused = None;
        for &(id, ipa, len, op) in &self.tables {
            let r = (|| {
                let d = domains.get_mut(id)?;
                d.owned()?.check_range_mapped(ipa, len)?;
                let split_live = smmu.split_partial_blocks(d, ipa, len, cpu)?;
                let retired = d.owned()?.retired_tables();
                match op {
                    TableOp::Unmap => d.owned_mut()?.unmap(ipa, len)?,
                    TableOp::Protect(perm) => d.owned_mut()?.protect(ipa, len, perm)?,
                }
                let t = d.owned()?;
                let hints = super::mapping::change_hints(
                    t.retired_tables() > retired,
                    t.changed_leaf_level(),
                    split_live,
                );
                Ok::<_, Error>((id, ipa, len, hints))
            })();
            match r {
                Ok((id, ipa, len, hints)) => changed.push(Changed {
                    id,
                    ipa,
                    len,
                    hints,
                    vmid: 0,
                    plan: None,
                    nh_all: false,
                }),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }

        // 3. One batch of TLBIs and one CMD_SYNC for everything changed,
        // planned in place and issued by index (no allocation).
        let f = smmu.features();
        let max = f
            .max_commands_per_sync()
            .map_or(MAX_RANGE_COMMANDS, |n| n.min(MAX_RANGE_COMMANDS));
        for i in 0..changed.len() {
            let Changed {
                id,
                ipa,
                len,
                hints,
                ..
            } = changed[i];
            let d = domains.get(id)?;
            let plan = if d.tlb_unknown {
                RangePlan::broad(Command::TlbiS12Vmall { vmid: d.vmid })
            } else {
                let shift = d.tables.config().granule().shift();
                cmd::s2_range_plan(d.vmid, ipa, len, shift, f.ril, max, hints)
            };
            let earlier = &changed[..i];
            // One TLBI_S12_VMALL per VMID is enough.
            let plan = (!(plan.is_fallback()
                && earlier
                    .iter()
                    .any(|e| e.vmid == d.vmid && e.plan.is_some_and(|p| p.is_fallback()))))
            .then_some(plan);
            // Combined stage-1+2 entries of nested streams (see
            // `Domain::nested_streams`), once per VMID.
            let nh_all = !d.tlb_unknown
                && d.nested_streams > 0
                && !earlier.iter().any(|e| e.vmid == d.vmid && e.nh_all);
            changed[i].vmid = d.vmid;
            changed[i].plan = plan;
            changed[i].nh_all = nh_all;
        }
        let total: usize = changed.iter().map(Changed::commands).sum();
        let r = if smmu.is_live() && total > 0 {
            // `submit_with` asks for the commands in order: resume from the
            // entry of the previous one.
            let cursor = Cell::new((0usize, 0usize));
            smmu.submit_generated(
                total,
                |i| {
                    let (mut e, mut first) = cursor.get();
                    if i < first {
                        (e, first) = (0, 0);
                    }
                    while let Some(c) = changed.get(e) {
                        if i < first + c.commands() {
                            cursor.set((e, first));
                            return c.command(i - first);
                        }
                        first += c.commands();
                        e += 1;
                    }
                    // Past the end (never asked): a VMALL is always safe.
                    Command::TlbiS12Vmall {
                        vmid: changed.last().map_or(0, |c| c.vmid),
                    }
                },
                true,
            )
        } else {
            Ok(())
        };
        for c in &changed {
            cpu(&CpuInvalidation {
                domain: c.id,
                vmid: c.vmid,
                ipa: c.ipa,
                len: c.len,
            });
        }
        // 4. Free tables, only if the invalidation completed.
        for c in &changed {
            let d = domains.get_mut(c.id)?;
            d.tlb_unknown = r.is_err();
            if r.is_ok() {
                d.owned_mut()?.release_retired();
            }
        }
        r?;
        match refused {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
