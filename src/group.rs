//! Isolation groups: StreamIDs that must always be in the same domain.
//!
//! Functions behind a PCIe-to-PCI bridge share the bridge's alias StreamID
//! (see [`crate::topology`]): the SMMU cannot tell their DMA apart, so they
//! can only be given to one VM together. A hypervisor computes its groups
//! (e.g. with [`crate::topology::Groups`]) and declares each group's
//! StreamIDs with [`Smmu::declare_group`]. From then on:
//!
//! * [`Smmu::attach_group`] attaches every StreamID of the group to one
//!   domain, or none: on a failure it detaches what it attached and returns
//!   the error;
//! * [`Smmu::detach_group`] returns every StreamID to abort, or none;
//! * [`Smmu::attach`] and [`Smmu::detach`] of a single StreamID that belongs
//!   to a declared group of more than one StreamID are refused with
//!   [`Error::SidInGroup`] naming the group, and so is a group call that
//!   names only part of a declared group. A group is never left half in
//!   one domain and half elsewhere.
//!
//! `attach_group` also works on StreamIDs that were never declared (an ad
//! hoc all-or-nothing batch, e.g. one device's alias StreamIDs).
//!
//! A quarantined StreamID ([`Smmu::quarantine`]) is never attached:
//! `attach` and `attach_group` fail with [`Error::Quarantined`] before
//! anything changes; `detach` and `detach_group` succeed and leave it
//! aborted (its release then restores abort).
//!
//! Lock order: the group table is taken before the domains (and so before
//! the stream table and the command queue), and held across a whole group
//! call, so no lone attach can interleave with it.

use crate::vecmap::VecMap;
use alloc::vec::Vec;

use crate::domain::DomainId;
use crate::error::{Error, Invalid, Result};
use crate::hal::Hal;
use crate::smmu::Smmu;

/// Handle of a declared isolation group.
pub type GroupId = u32;

/// Every declared group of one SMMU.
#[derive(Debug, Default)]
pub(crate) struct GroupTable {
    next: GroupId,
    groups: VecMap<GroupId, Vec<u32>>,
    by_sid: VecMap<u32, GroupId>,
}

impl GroupTable {
    /// The group of `sid` when it has more than one StreamID (so `sid`
    /// cannot move alone).
    pub(crate) fn shared_group_of(&self, sid: u32) -> Option<GroupId> {
        let g = *self.by_sid.get(&sid)?;
        (self.groups.get(&g).map_or(0, Vec::len) > 1).then_some(g)
    }

    /// Refuses a set of StreamIDs that names part of a declared group.
    fn check_whole(&self, sids: &[u32]) -> Result<()> {
        for sid in sids {
            let Some(&g) = self.by_sid.get(sid) else {
                continue;
            };
            let members = self.groups.get(&g).ok_or(Error::UnknownGroup(g))?;
            if let Some(&missing) = members.iter().find(|m| !sids.contains(m)) {
                return Err(Error::SidInGroup {
                    sid: missing,
                    group: g,
                });
            }
        }
        Ok(())
    }
}

/// `sids` without duplicates, in first-seen order; refuses an empty list.
fn distinct(sids: &[u32]) -> Result<Vec<u32>> {
    if sids.is_empty() {
        return Err(Error::Invalid(Invalid::NoStreamIds));
    }
    let mut out: Vec<u32> = Vec::new();
    out.try_reserve_exact(sids.len())
        .map_err(|_| Error::NoMemory)?;
    for &sid in sids {
        if !out.contains(&sid) {
            out.push(sid);
        }
    }
    Ok(out)
}

impl<H: Hal> Smmu<H> {
    /// Declares an isolation group: `sids` (duplicates ignored) are attached
    /// and detached only together from now on. Every StreamID must be in
    /// range and in no other group, and the group must be whole already:
    /// all detached, or all attached to one domain.
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// use smmuv3::testing::{HostHal, SmmuModel};
    /// let model = SmmuModel::default();
    /// // SAFETY: the model outlives the driver; nothing else drives it.
    /// let smmu = unsafe { smmuv3::Smmu::<HostHal>::new(model.base(), smmuv3::Config::default()) }?;
    /// smmu.enable()?;
    /// use smmuv3::{DomainOptions, Error, Granule, Stage2Config};
    /// let vm = smmu.create_domain(DomainOptions::new(Stage2Config::new(Granule::K4, 40, 48)?))?;
    /// // Two functions behind a PCIe-to-PCI bridge and the bridge's alias.
    /// let group = smmu.declare_group(&[0x218, 0x220, 0x200])?;
    /// assert_eq!(smmu.attach(vm, 0x218), Err(Error::SidInGroup { sid: 0x218, group }));
    /// smmu.attach_group(vm, &[0x200, 0x218, 0x220])?;
    /// assert_eq!(smmu.domain_of(0x220), Some(vm));
    /// smmu.detach_group(&[0x200, 0x218, 0x220])?;
    /// # Ok::<(), smmuv3::Error>(())
    /// ```
    pub fn declare_group(&self, sids: &[u32]) -> Result<GroupId> {
        let sids = distinct(sids)?;
        let mut groups = self.groups.lock();
        let mut domain = None;
        for (i, &sid) in sids.iter().enumerate() {
            self.check_sid(sid)?;
            if let Some(&group) = groups.by_sid.get(&sid) {
                return Err(Error::SidInOtherGroup { sid, group });
            }
            let d = self.domain_of(sid);
            if i == 0 {
                domain = d;
            } else if d != domain {
                return Err(Error::Invalid(Invalid::MixedGroup { sid }));
            }
        }
        groups.by_sid.reserve(sids.len())?;
        groups.groups.reserve(1)?;
        let id = groups.next;
        groups.next = groups.next.wrapping_add(1);
        for &sid in &sids {
            groups.by_sid.insert(sid, id);
        }
        groups.groups.insert(id, sids);
        Ok(id)
    }

    /// Forgets a declared group (its StreamIDs stay where they are and may
    /// then move alone).
    pub fn remove_group(&self, group: GroupId) -> Result<()> {
        let mut groups = self.groups.lock();
        let sids = groups
            .groups
            .remove(&group)
            .ok_or(Error::UnknownGroup(group))?;
        for sid in sids {
            groups.by_sid.remove(&sid);
        }
        Ok(())
    }

    /// The declared group `sid` belongs to.
    pub fn group_of(&self, sid: u32) -> Option<GroupId> {
        self.groups.lock().by_sid.get(&sid).copied()
    }

    /// The StreamIDs of a declared group, in declaration order.
    pub fn group_sids(&self, group: GroupId) -> Result<Vec<u32>> {
        self.groups
            .lock()
            .groups
            .get(&group)
            .cloned()
            .ok_or(Error::UnknownGroup(group))
    }

    /// Points `sid` at the domain's stage-2 tables. The StreamID must
    /// currently be aborted (never attached, or detached), must not
    /// belong to a declared group of several StreamIDs
    /// ([`Error::SidInGroup`]: use [`Smmu::attach_group`]), and must not be
    /// quarantined ([`Error::Quarantined`]).
    pub fn attach(&self, id: DomainId, sid: u32) -> Result<()> {
        let groups = self.groups.lock();
        if let Some(group) = groups.shared_group_of(sid) {
            return Err(Error::SidInGroup { sid, group });
        }
        self.attach_stream(id, sid)
    }

    /// Returns `sid` to abort. A StreamID of a declared group of several
    /// StreamIDs is refused ([`Error::SidInGroup`]: use
    /// [`Smmu::detach_group`]).
    pub fn detach(&self, sid: u32) -> Result<()> {
        let groups = self.groups.lock();
        if let Some(group) = groups.shared_group_of(sid) {
            return Err(Error::SidInGroup { sid, group });
        }
        self.detach_stream(sid)
    }

    /// Attaches every StreamID of `sids` (duplicates ignored) to the domain,
    /// or none. Any declared group `sids` touches must be named whole.
    /// If one attach fails, the StreamIDs attached by this call are
    /// detached again and the error is returned; if that undo fails too,
    /// [`Error::RollbackFailed`] names the StreamID left attached.
    pub fn attach_group(&self, id: DomainId, sids: &[u32]) -> Result<()> {
        let sids = distinct(sids)?;
        let groups = self.groups.lock();
        groups.check_whole(&sids)?;
        for sid in &sids {
            self.check_sid(*sid)?;
            // Refused up front, so no member is attached and rolled back.
            if self.is_quarantined(*sid) {
                return Err(Error::Quarantined(*sid));
            }
        }
        for (done, &sid) in sids.iter().enumerate() {
            if let Err(e) = self.attach_stream(id, sid) {
                for &undo in sids[..done].iter().rev() {
                    if let Err(undo_err) = self.detach_stream(undo) {
                        log::error!(
                            "attach_group: attaching StreamID {sid:#x} failed ({e}); detaching {undo:#x} again failed ({undo_err})"
                        );
                        return Err(Error::RollbackFailed { sid: undo });
                    }
                }
                return Err(e);
            }
        }
        drop(groups);
        Ok(())
    }

    /// Returns every StreamID of `sids` (duplicates ignored) to abort, or
    /// none. Every StreamID must be attached ([`Error::SidNotAttached`]
    /// otherwise, before anything changes), and any declared group `sids`
    /// touches must be named whole. If one detach fails, the StreamIDs
    /// detached by this call are attached again to their domains and the
    /// error is returned ([`Error::RollbackFailed`] if that fails too).
    pub fn detach_group(&self, sids: &[u32]) -> Result<()> {
        let sids = distinct(sids)?;
        let groups = self.groups.lock();
        groups.check_whole(&sids)?;
        let mut from: Vec<(u32, DomainId)> = Vec::new();
        from.try_reserve_exact(sids.len())
            .map_err(|_| Error::NoMemory)?;
        for &sid in &sids {
            self.check_sid(sid)?;
            let d = self.domain_of(sid).ok_or(Error::SidNotAttached(sid))?;
            from.push((sid, d));
        }
        for (done, &(sid, _)) in from.iter().enumerate() {
            if let Err(e) = self.detach_stream(sid) {
                for &(undo, domain) in from[..done].iter().rev() {
                    if let Err(undo_err) = self.attach_stream(domain, undo) {
                        log::error!(
                            "detach_group: detaching StreamID {sid:#x} failed ({e}); attaching {undo:#x} again failed ({undo_err})"
                        );
                        return Err(Error::RollbackFailed { sid: undo });
                    }
                }
                return Err(e);
            }
        }
        drop(groups);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DomainOptions;
    use crate::fake::{FakeHal, FakeRegs};
    use crate::smmu::Config;
    use crate::stage2::{Granule, Stage2Config};

    fn driver(regs: &FakeRegs) -> Smmu<FakeHal> {
        let config = Config {
            timeout_ns: 1_000_000,
            ..Config::default()
        };
        // SAFETY: the fake block is MMIO_SIZE bytes and outlives the driver.
        unsafe { Smmu::new(regs.base(), config) }.expect("probe")
    }

    fn domain(smmu: &Smmu<FakeHal>) -> DomainId {
        let cfg = Stage2Config::new(Granule::K4, 40, 48).expect("stage 2");
        smmu.create_domain(DomainOptions::new(cfg)).expect("domain")
    }

    /// The alias group of two functions behind a PCIe-to-PCI bridge.
    const GROUP: [u32; 3] = [0x218, 0x220, 0x200];

    #[test]
    fn a_group_attaches_and_detaches_whole() {
        let regs = FakeRegs::qemu_like();
        let smmu = driver(&regs);
        let vm = domain(&smmu);
        let g = smmu.declare_group(&GROUP).unwrap();
        assert_eq!(smmu.group_of(0x200), Some(g));
        assert_eq!(smmu.group_sids(g).unwrap(), GROUP);
        smmu.attach_group(vm, &[0x200, 0x218, 0x220, 0x200])
            .unwrap();
        for sid in GROUP {
            assert_eq!(smmu.domain_of(sid), Some(vm));
        }
        assert_eq!(smmu.domain_info(vm).unwrap().sids.len(), 3);
        // Lone moves of a member are refused, naming the group.
        assert_eq!(
            smmu.detach(0x218),
            Err(Error::SidInGroup {
                sid: 0x218,
                group: g
            })
        );
        smmu.detach_group(&GROUP).unwrap();
        for sid in GROUP {
            assert_eq!(smmu.domain_of(sid), None);
            assert!(smmu.ste(sid).unwrap().config().is_abort());
        }
        // Nor may one member bypass alone: its group-mates' DMA shares it.
        assert_eq!(
            smmu.set_bypass(0x200),
            Err(Error::SidInGroup {
                sid: 0x200,
                group: g
            })
        );
        assert!(smmu.ste(0x200).unwrap().config().is_abort());
        assert_eq!(
            smmu.attach(vm, 0x200),
            Err(Error::SidInGroup {
                sid: 0x200,
                group: g
            })
        );
        assert_eq!(smmu.domain_of(0x200), None);
        // Part of a group is refused before anything changes.
        assert_eq!(
            smmu.attach_group(vm, &[0x218, 0x200]),
            Err(Error::SidInGroup {
                sid: 0x220,
                group: g
            })
        );
        assert_eq!(smmu.domain_of(0x218), None);
        // Once forgotten, members move alone again.
        smmu.remove_group(g).unwrap();
        assert_eq!(smmu.remove_group(g), Err(Error::UnknownGroup(g)));
        smmu.attach(vm, 0x200).unwrap();
        smmu.detach(0x200).unwrap();
        smmu.destroy_domain(vm).unwrap();
    }

    #[test]
    fn a_single_streamid_group_does_not_restrict_lone_calls() {
        let regs = FakeRegs::qemu_like();
        let smmu = driver(&regs);
        let vm = domain(&smmu);
        smmu.declare_group(&[0x8]).unwrap();
        smmu.attach(vm, 0x8).unwrap();
        smmu.detach(0x8).unwrap();
    }

    #[test]
    fn a_failed_attach_rolls_back_what_it_attached() {
        let regs = FakeRegs::qemu_like();
        let smmu = driver(&regs);
        let (a, b) = (domain(&smmu), domain(&smmu));
        // 0x200 already belongs to another VM: the two attached before it
        // are detached again.
        smmu.attach(b, 0x200).unwrap();
        let before = smmu.stream_table_snapshot();
        assert_eq!(smmu.attach_group(a, &GROUP), Err(Error::SidAttached(0x200)));
        assert_eq!(smmu.domain_of(0x218), None);
        assert_eq!(smmu.domain_of(0x220), None);
        assert_eq!(smmu.domain_of(0x200), Some(b));
        assert!(smmu.domain_info(a).unwrap().sids.is_empty());
        assert_eq!(smmu.stream_table_snapshot(), before);
        assert_eq!(smmu.destroy_domain(a), Ok(()));
    }

    #[test]
    fn running_out_of_memory_mid_group_rolls_back() {
        let regs = FakeRegs::qemu_like();
        let smmu = driver(&regs);
        let vm = domain(&smmu);
        // 0x218's level-2 table is allocated, 0x5000's allocation fails.
        FakeHal::fail_after(Some(1));
        let r = smmu.attach_group(vm, &[0x218, 0x5000]);
        FakeHal::fail_after(None);
        assert_eq!(r, Err(Error::NoMemory));
        assert_eq!(smmu.domain_of(0x218), None);
        assert!(smmu.ste(0x218).unwrap().config().is_abort());
        assert!(smmu.domain_info(vm).unwrap().sids.is_empty());
        // A StreamID out of range is refused before anything changes.
        let limit = smmu.sid_limit() as u32;
        assert!(matches!(
            smmu.attach_group(vm, &[0x218, limit]),
            Err(Error::SidOutOfRange { .. })
        ));
        assert_eq!(smmu.domain_of(0x218), None);
    }

    #[test]
    fn detach_group_needs_every_member_attached() {
        let regs = FakeRegs::qemu_like();
        let smmu = driver(&regs);
        let vm = domain(&smmu);
        smmu.attach_group(vm, &[0x218, 0x200]).unwrap();
        assert_eq!(
            smmu.detach_group(&[0x218, 0x220]),
            Err(Error::SidNotAttached(0x220))
        );
        assert_eq!(smmu.domain_of(0x218), Some(vm));
        smmu.detach_group(&[0x218, 0x200]).unwrap();
        assert_eq!(
            smmu.attach_group(vm, &[]),
            Err(Error::Invalid(Invalid::NoStreamIds))
        );
    }

    #[test]
    fn declaring_groups_checks_membership_and_placement() {
        let regs = FakeRegs::qemu_like();
        let smmu = driver(&regs);
        let vm = domain(&smmu);
        let g = smmu.declare_group(&[0x200, 0x218]).unwrap();
        assert_eq!(
            smmu.declare_group(&[0x220, 0x218]),
            Err(Error::SidInOtherGroup {
                sid: 0x218,
                group: g
            })
        );
        assert_eq!(smmu.group_of(0x220), None);
        // A group split across domains (or attached and detached) is refused.
        smmu.attach(vm, 0x300).unwrap();
        assert!(matches!(
            smmu.declare_group(&[0x300, 0x301]),
            Err(Error::Invalid(Invalid::MixedGroup { sid: 0x301 }))
        ));
        smmu.attach(vm, 0x301).unwrap();
        let h = smmu.declare_group(&[0x300, 0x301]).unwrap();
        assert_ne!(g, h);
        assert!(matches!(
            smmu.declare_group(&[0x0010_0000]),
            Err(Error::SidOutOfRange { .. })
        ));
        assert_eq!(smmu.group_sids(99), Err(Error::UnknownGroup(99)));
    }
}
