//! Stream table entries: reading, the safe update order for one or many
//! StreamIDs (CFGI_STE + CMD_SYNC after each visible step), bypass and
//! abort for StreamIDs no domain owns, and the stream table's geometry.

use super::*;

/// Commands [`Smmu::write_ste_then`] can add to the last CFGI_STE's batch.
pub(super) const MAX_AFTER: usize = 2;

impl<H: Hal> Smmu<H> {
    /// Reads the STE of `sid` (decoded with [`crate::expert::Ste`]).
    pub fn ste(&self, sid: u32) -> Result<Ste> {
        Ok(Ste(self.strtab.lock().read(sid)?))
    }

    /// Installs `target` as the STE of `sid`, following the safe update
    /// order (body first, dword 0 last; a live entry that changes in more
    /// than one dword goes through abort), with CFGI_STE + CMD_SYNC after
    /// each visible step.
    ///
    /// An expert call: the normal surface installs STEs through domains
    /// ([`Smmu::attach`]), [`Smmu::set_bypass`] and [`Smmu::set_abort`],
    /// which keep the driver's bookkeeping in step.
    ///
    /// # Safety
    ///
    /// `sid` is attached to no domain and belongs to no declared group of
    /// several StreamIDs (or the caller restores the domain's STE before any
    /// other driver call for it), and `target` points the SMMU only at
    /// memory that stays valid, and reserved for the SMMU, for as long as
    /// the entry is installed (stage-2 or CD tables the caller owns).
    pub unsafe fn write_ste_unchecked(&self, sid: u32, target: &Ste) -> Result<()> {
        self.write_ste(sid, target)
    }

    /// Installs `target` as the STE of `sid` (see
    /// [`Smmu::write_ste_unchecked`]).
    ///
    /// A quarantined StreamID ([`Smmu::quarantine`]) keeps its abort STE:
    /// an abort `target` is recorded as what [`Smmu::release`] restores
    /// (nothing is written), any other is refused with
    /// [`Error::Quarantined`].
    pub(crate) fn write_ste(&self, sid: u32, target: &Ste) -> Result<()> {
        self.write_ste_then(sid, target, &[])
    }

    /// [`Smmu::write_ste`], then `after` (commands that must follow the
    /// STE change, such as CFGI_CD_ALL for the CDs the old STE pointed at),
    /// completed before it returns. They ride in the batch of the update's
    /// last CFGI_STE, under its CMD_SYNC: by then an earlier CMD_SYNC has
    /// completed the step that made the new configuration live, so nothing
    /// can fetch through the old one any more. With no step to join (the
    /// entry did not change, or is quarantined), they get their own
    /// CMD_SYNC.
    pub(crate) fn write_ste_then(&self, sid: u32, target: &Ste, after: &[Command]) -> Result<()> {
        let mut strtab = self.strtab.lock();
        self.apply_pending_quarantines(&mut strtab, &mut |c| self.submit_locked(c));
        let r = match self.quarantined.lock().redirect(sid, target) {
            Ok(true) => Ok(false),
            Ok(false) => self.write_ste_with(&mut strtab, sid, target, after, &mut |c| {
                self.submit_locked(c)
            }),
            Err(e) => Err(e),
        };
        let r = match r {
            Ok(false) if !after.is_empty() && self.commands_live() => self.submit_locked(after),
            r => r.map(|_| ()),
        };
        // Quarantines asked for (from an interrupt) while this call held the
        // stream table.
        self.apply_pending_quarantines(&mut strtab, &mut |c| self.submit_locked(c));
        r
    }

    /// [`Smmu::write_ste`] with the stream table locked by the caller and
    /// commands submitted through `submit` (which appends a CMD_SYNC and
    /// waits), without the quarantine check.
    /// Returns whether `after` went out (with the last CFGI_STE); when it
    /// did not (no step needed a CMD_SYNC, or more than
    /// [`MAX_AFTER`] commands), the caller submits it.
    pub(super) fn write_ste_with(
        &self,
        strtab: &mut StreamTable<H>,
        sid: u32,
        target: &Ste,
        after: &[Command],
        submit: &mut dyn FnMut(&[Command]) -> Result<()>,
    ) -> Result<bool> {
        // The SMMU cannot fetch a CD or stage-2 table above 2^OAS. (Nested,
        // S1ContextPtr is an IPA, translated by stage 2: bounded by IAS.)
        let (oas, ias) = (self.features.oas_bits, self.features.ias_bits);
        let bits_of = |bits: u8| 1u64.checked_shl(u32::from(bits)).unwrap_or(u64::MAX);
        let pointers = match target.config() {
            SteConfig::Stage1 => [Some((target.cd_paddr(), oas)), None],
            SteConfig::Stage2 => [None, Some((target.s2ttb(), oas))],
            SteConfig::Nested => [Some((target.cd_paddr(), ias)), Some((target.s2ttb(), oas))],
            _ => [None, None],
        };
        if target.is_valid() && pointers.into_iter().flatten().any(|(a, b)| a >= bits_of(b)) {
            return Err(Error::Unsupported(Unsupported::AddressSize));
        }
        if strtab.ensure(sid)? && self.commands_live() {
            // A new level-2 table: drop anything cached for its range
            // (2^(7+1) = 256 StreamIDs).
            let first = sid & !((1 << strtab::SPLIT) - 1);
            submit(&[Command::CfgiSteRange {
                sid: first,
                range: strtab::SPLIT as u8 - 1,
            }])?;
        }
        let current = Ste(strtab.read(sid)?);
        let plan = plan_update(&current, target)?;
        // Dword 0 (V, Config, S1ContextPtr) as the last completed CMD_SYNC
        // left it, and as the writes so far leave it.
        let mut synced_dword0 = current.0[0];
        let mut dword0 = current.0[0];
        let last_sync = plan
            .as_slice()
            .iter()
            .rposition(|s| matches!(s, UpdateStep::Sync));
        let mut sent_after = false;
        for (i, step) in plan.iter().copied().enumerate() {
            match step {
                UpdateStep::Write { dword, value } => {
                    strtab.write_dword(sid, dword, value)?;
                    if dword == 0 {
                        dword0 = value;
                    }
                }
                UpdateStep::Publish => strtab.publish(sid)?,
                UpdateStep::Sync => {
                    if self.commands_live() {
                        let mut batch = [Command::CfgiSte { sid, leaf: true }; 1 + MAX_AFTER];
                        let mut n = 1;
                        // Only once an earlier CMD_SYNC has completed with
                        // the target's dword 0 in place: from then on the
                        // SMMU cannot fetch through the old configuration.
                        if Some(i) == last_sync
                            && synced_dword0 == target.0[0]
                            && after.len() <= MAX_AFTER
                        {
                            batch[1..=after.len()].copy_from_slice(after);
                            n += after.len();
                            sent_after = true;
                        }
                        submit(&batch[..n])?;
                    }
                    synced_dword0 = dword0;
                }
            }
        }
        if self.ends_translation(&current, target) {
            // IHI 0070 §4.7.2: CMD_STALL_TERM only once the STE aborts new
            // traffic and that change was invalidated and synchronized
            // (the plan's last CMD_SYNC, completed above). Its own batch.
            submit(&[Command::StallTerm { sid }])?;
        }
        Ok(sent_after)
    }

    /// Whether replacing `current` by `target` stops a stream that could
    /// stall (an SMMU that forces stalls, a translating STE) and leaves it
    /// aborting (Config = abort, or V = 0): its outstanding stalls must
    /// then be ended with CMD_STALL_TERM, since no configuration remains
    /// that they could be resumed under. Nothing without live commands
    /// (SMMUEN = 0 terminates stalls).
    pub(super) fn ends_translation(&self, current: &Ste, target: &Ste) -> bool {
        let translating = |s: &Ste| {
            s.is_valid()
                && matches!(
                    s.config(),
                    SteConfig::Stage1 | SteConfig::Stage2 | SteConfig::Nested
                )
        };
        let aborting = !target.is_valid()
            || matches!(target.config(), SteConfig::Abort | SteConfig::AbortOther(_));
        self.features.stall_forced() && self.commands_live() && translating(current) && aborting
    }

    /// Installs several STEs at once, with the safe update order of
    /// [`Smmu::write_ste`] for each, but sharing invalidations: the plans
    /// advance in lock step, and every round of CFGI_STEs (one per entry
    /// that reached a `Sync`) ends with one CMD_SYNC. So N entries cost as
    /// many CMD_SYNCs as the longest single plan (at most 3), not N times
    /// that.
    /// Quarantined StreamIDs are handled as in [`Smmu::write_ste`]; a
    /// refused entry refuses the whole call before anything changes.
    pub(crate) fn write_stes(&self, updates: &[(u32, Ste)]) -> Result<()> {
        let mut strtab = self.strtab.lock();
        self.apply_pending_quarantines(&mut strtab, &mut |c| self.submit_locked(c));
        let r = self.write_stes_locked(&mut strtab, updates);
        self.apply_pending_quarantines(&mut strtab, &mut |c| self.submit_locked(c));
        r
    }

    pub(super) fn write_stes_locked(
        &self,
        strtab: &mut StreamTable<H>,
        updates: &[(u32, Ste)],
    ) -> Result<()> {
        let mut kept = alloc::vec::Vec::new();
        kept.try_reserve_exact(updates.len())
            .map_err(|_| Error::NoMemory)?;
        {
            let quarantined = self.quarantined.lock();
            for (sid, target) in updates {
                quarantined.check(*sid, target)?;
                if !quarantined.contains(*sid) {
                    kept.push((*sid, *target));
                }
            }
        }
        self.write_stes_unchecked(strtab, &kept)?;
        // Only once every write is made: the aborts asked for quarantined
        // StreamIDs become what `release` restores.
        let mut quarantined = self.quarantined.lock();
        for (sid, target) in updates {
            quarantined.redirect(*sid, target)?;
        }
        Ok(())
    }

    pub(super) fn write_stes_unchecked(
        &self,
        strtab: &mut StreamTable<H>,
        updates: &[(u32, Ste)],
    ) -> Result<()> {
        let live = self.commands_live();
        let mut fresh = alloc::vec::Vec::new();
        fresh
            .try_reserve_exact(updates.len())
            .map_err(|_| Error::NoMemory)?;
        for &(sid, _) in updates {
            if strtab.ensure(sid)? {
                fresh.push(Command::CfgiSteRange {
                    sid: sid & !((1 << strtab::SPLIT) - 1),
                    range: strtab::SPLIT as u8 - 1,
                });
            }
        }
        if live && !fresh.is_empty() {
            self.submit_locked(&fresh)?;
        }
        let mut plans = alloc::vec::Vec::new();
        plans
            .try_reserve_exact(updates.len())
            .map_err(|_| Error::NoMemory)?;
        // StreamIDs whose stalls end with this update (CMD_STALL_TERM once
        // their aborts are synchronized).
        let mut stall_terms = alloc::vec::Vec::new();
        for &(sid, target) in updates {
            let current = Ste(strtab.read(sid)?);
            if self.ends_translation(&current, &target) {
                stall_terms.try_reserve(1).map_err(|_| Error::NoMemory)?;
                stall_terms.push(Command::StallTerm { sid });
            }
            plans.push((sid, plan_update(&current, &target)?, 0usize));
        }
        let mut cfgis = alloc::vec::Vec::new();
        cfgis
            .try_reserve_exact(updates.len())
            .map_err(|_| Error::NoMemory)?;
        loop {
            cfgis.clear();
            for (sid, plan, next) in plans.iter_mut() {
                let steps = plan.as_slice();
                while let Some(step) = steps.get(*next).copied() {
                    *next += 1;
                    match step {
                        UpdateStep::Write { dword, value } => {
                            strtab.write_dword(*sid, dword, value)?
                        }
                        UpdateStep::Publish => strtab.publish(*sid)?,
                        UpdateStep::Sync => {
                            cfgis.push(Command::CfgiSte {
                                sid: *sid,
                                leaf: true,
                            });
                            break;
                        }
                    }
                }
            }
            if cfgis.is_empty() {
                if live && !stall_terms.is_empty() {
                    // Every abort above is in place and synchronized.
                    self.submit_locked(&stall_terms)?;
                }
                return Ok(());
            }
            if live {
                self.submit_locked(&cfgis)?;
            }
        }
    }

    /// Submits with the caller already holding the stream table lock.
    pub(super) fn submit_locked(&self, cmds: &[Command]) -> Result<()> {
        self.with_cmdq(|q| q.submit_with(&self.mmio, cmds.len(), |i| cmds[i].encode(), true))
    }

    /// Makes `sid` bypass translation (a deliberate, per-stream choice).
    /// A StreamID attached to a domain must be detached first, one of a
    /// declared group of several StreamIDs is refused
    /// ([`Error::SidInGroup`]): its group-mates would reach memory through
    /// it, and so is a quarantined one ([`Error::Quarantined`]).
    pub fn set_bypass(&self, sid: u32) -> Result<()> {
        // Lock order: groups -> domains -> stream table -> cmdq.
        let groups = self.groups.lock();
        if let Some(group) = groups.shared_group_of(sid) {
            return Err(Error::SidInGroup { sid, group });
        }
        let r = self.write_unmanaged_ste(sid, &Ste::bypass());
        drop(groups);
        r
    }

    /// Makes `sid` abort all its traffic. A StreamID attached to a domain
    /// is detached with [`Smmu::detach`] instead. For a quarantined
    /// StreamID this only changes what [`Smmu::release`] restores.
    pub fn set_abort(&self, sid: u32) -> Result<()> {
        self.write_unmanaged_ste(sid, &Ste::abort())
    }

    /// Writes the STE of a StreamID that no domain owns. The domain lock is
    /// held from the check to the end of the write (taken before the stream
    /// table lock, as `attach` does), so a concurrent `attach` either
    /// completes first (and this call fails with [`Error::SidAttached`]) or
    /// starts after (and sees this entry).
    pub(super) fn write_unmanaged_ste(&self, sid: u32, ste: &Ste) -> Result<()> {
        let domains = self.domains.lock();
        self.check_sid(sid)?;
        if domains.is_attached(sid) {
            return Err(Error::SidAttached(sid));
        }
        #[cfg(test)]
        crate::fake::pause_point("write_unmanaged_ste");
        let r = self.write_ste(sid, ste);
        drop(domains);
        r
    }

    /// Number of StreamIDs the stream table covers.
    pub fn sid_limit(&self) -> u64 {
        self.strtab.lock().limit()
    }

    /// Stream table format in use.
    pub fn stream_table_format(&self) -> Format {
        self.strtab.lock().format()
    }

    /// Bytes of stream table memory in use.
    pub fn stream_table_bytes(&self) -> usize {
        self.strtab.lock().bytes()
    }

    /// A copy of all stream table words (for tests that prove a rejected
    /// call left the table unchanged).
    pub fn stream_table_snapshot(&self) -> alloc::vec::Vec<u64> {
        self.strtab.lock().snapshot()
    }
}
