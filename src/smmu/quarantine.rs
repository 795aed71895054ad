//! Quarantine: a StreamID aborted and kept aborted until released.
//!
//! [`Smmu::quarantine`] is what a fault handler calls when a device
//! misbehaves: the StreamID's STE becomes abort (through the entry planner,
//! CFGI_STE + CMD_SYNC; for a stage-1 or nested STE also CFGI_CD_ALL, since
//! its CD may be cached apart from the STE) and the STE it had is kept.
//! Once the abort STE's invalidation completes the SMMU no longer looks
//! anything up for the StreamID, so no TLB entry is reachable through it
//! (TLB entries are tagged by VMID/ASID, shared with the domain's other
//! StreamIDs, and need no invalidation; the driver never enables ATS, so
//! no device ATC holds translations either).
//!
//! While quarantined, a StreamID only ever stays aborted:
//!
//! * calls that would let it reach memory are refused with
//!   [`Error::Quarantined`] and change nothing: `attach`, `attach_group`
//!   (of a group it belongs to), `set_bypass`, a batch that attaches it,
//!   `write_ste` of anything but abort;
//! * calls that abort it succeed and change what `release` restores, not
//!   the STE: `detach` (the domain lets go of it, and may be destroyed),
//!   `detach_group`, `set_abort`, a batch that detaches it.
//!
//! [`Smmu::release`] writes back the STE it had (byte for byte, through the
//! planner): its domain's STE, bypass, or abort if it was detached since.
//!
//! # Interrupt context
//!
//! `quarantine` never waits for a lock: when it gets the stream table and
//! command queue with `try_lock` it applies the quarantine at once
//! ([`Quarantine::Applied`]); when either is held (by another CPU, or by
//! the code this interrupt interrupted) it records the StreamID in a
//! lock-free set of [`MAX_PENDING_QUARANTINES`] slots and returns
//! [`Quarantine::Pending`]. A pending StreamID counts as quarantined at
//! once (every STE write checks the set under the stream table lock), and
//! is applied by the first of: the holder of the stream table lock at the
//! end of its STE write, the next `service`/`drain_events` call (which
//! follow the next event of a device that keeps faulting), any
//! `quarantine`, `release`, `is_quarantined` or STE write. `release` takes locks: thread
//! context only.
//!
//! Neither path allocates: at most [`MAX_QUARANTINED`] StreamIDs are
//! quarantined at once ([`Error::QuarantineFull`] beyond), and a StreamID
//! whose level-2 stream table was never allocated is already aborted by the
//! SMMU (C_BAD_STREAMID) and is only recorded.

use core::sync::atomic::{AtomicU64, Ordering};

use super::{Command, Error, Hal, Result, Smmu, Ste, SteConfig, StreamTable};

/// StreamIDs quarantined at once.
pub const MAX_QUARANTINED: usize = 64;

/// Quarantines that may wait for a lock holder at once.
pub const MAX_PENDING_QUARANTINES: usize = 16;

/// What [`Smmu::quarantine`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quarantine {
    /// The abort STE is written and its invalidation completed (or the
    /// StreamID was quarantined already).
    Applied,
    /// A lock was held (interrupt context): the StreamID is recorded and
    /// counts as quarantined; the abort is written by the next lock holder
    /// (see the module docs).
    Pending,
}

/// Quarantined StreamIDs and the STEs `release` restores.
#[derive(Debug)]
pub(crate) struct Table {
    entries: [Option<(u32, Ste)>; MAX_QUARANTINED],
}

impl Default for Table {
    fn default() -> Self {
        Self {
            entries: [None; MAX_QUARANTINED],
        }
    }
}

fn is_abort(ste: &Ste) -> bool {
    ste.is_valid() && ste.config().is_abort()
}

impl Table {
    fn find(&self, sid: u32) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| matches!(e, Some((s, _)) if *s == sid))
    }

    /// Whether `sid` is quarantined.
    pub(crate) fn contains(&self, sid: u32) -> bool {
        self.find(sid).is_some()
    }

    /// Refuses `target` for a quarantined `sid` unless it is abort.
    pub(crate) fn check(&self, sid: u32, target: &Ste) -> Result<()> {
        if self.find(sid).is_some() && !is_abort(target) {
            return Err(Error::Quarantined(sid));
        }
        Ok(())
    }

    /// For a write of `target` to `sid`: `Ok(false)` when `sid` is not
    /// quarantined (write it); `Ok(true)` when it is and `target` is abort
    /// (recorded as the STE to restore; nothing to write);
    /// [`Error::Quarantined`] otherwise.
    pub(crate) fn redirect(&mut self, sid: u32, target: &Ste) -> Result<bool> {
        self.check(sid, target)?;
        match self.find(sid) {
            Some(i) => {
                self.entries[i] = Some((sid, *target));
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Quarantines waiting for the locks: `VALID | sid` per slot, 0 when free.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    slots: [AtomicU64; MAX_PENDING_QUARANTINES],
}

const VALID: u64 = 1 << 32;

impl Pending {
    fn push(&self, sid: u32) -> Result<()> {
        let v = VALID | u64::from(sid);
        if self.slots.iter().any(|s| s.load(Ordering::Acquire) == v) {
            return Ok(());
        }
        for s in &self.slots {
            if s.compare_exchange(0, v, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(());
            }
        }
        Err(Error::QuarantineFull)
    }

    fn contains(&self, sid: u32) -> bool {
        let v = VALID | u64::from(sid);
        self.slots.iter().any(|s| s.load(Ordering::Acquire) == v)
    }

    /// Takes one pending StreamID out of the set.
    fn take(&self) -> Option<u32> {
        self.slots.iter().find_map(|s| {
            let v = s.load(Ordering::Acquire);
            (v != 0
                && s.compare_exchange(v, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok())
            .then_some(v as u32)
        })
    }
}

impl<H: Hal> Smmu<H> {
    /// Aborts `sid` and keeps it aborted until [`Smmu::release`], whatever
    /// it was (attached to a domain, bypass, abort); see the module docs of
    /// `src/smmu/quarantine.rs` for what is refused meanwhile. Idempotent.
    ///
    /// Safe in interrupt context and from a [`Smmu::service`] callback: it
    /// never waits for a lock, and returns [`Quarantine::Pending`] when one
    /// is held (the StreamID then already counts as quarantined, and the
    /// abort is written by the next lock holder or `service` call).
    ///
    /// Errors: `sid` beyond the stream table ([`Error::SidOutOfRange`]);
    /// [`MAX_QUARANTINED`] StreamIDs quarantined already, or
    /// [`MAX_PENDING_QUARANTINES`] pending ([`Error::QuarantineFull`]); the
    /// STE write's command errors or timeouts (the StreamID stays
    /// recorded as quarantined, and calling again retries the write).
    pub fn quarantine(&self, sid: u32) -> Result<Quarantine> {
        if u64::from(sid) >= self.sid_limit {
            return Err(Error::SidOutOfRange {
                sid,
                limit: self.sid_limit.min(u64::from(u32::MAX)) as u32,
            });
        }
        if let Some(r) = self.with_locks_if_free(|strtab, submit| {
            self.apply_pending_quarantines(strtab, submit);
            self.quarantine_locked(strtab, sid, submit)
        }) {
            return r.map(|()| Quarantine::Applied);
        }
        self.pending.push(sid)?;
        // The holder may have let go since the first attempt.
        self.try_apply_pending_quarantines();
        Ok(if self.pending.contains(sid) {
            Quarantine::Pending
        } else {
            Quarantine::Applied
        })
    }

    /// Ends the quarantine of `sid`: writes back the STE it had when it was
    /// quarantined (or abort, if it was detached or set to abort since),
    /// through the entry planner. Takes locks: thread context only.
    ///
    /// Errors: `sid` is not quarantined ([`Error::NotQuarantined`]); the STE
    /// write's command errors or timeouts (it then stays quarantined).
    pub fn release(&self, sid: u32) -> Result<()> {
        let mut strtab = self.strtab.lock();
        let submit = &mut |c: &[Command]| self.submit_locked(c);
        self.apply_pending_quarantines(&mut strtab, submit);
        let mut table = self.quarantined.lock();
        let i = table.find(sid).ok_or(Error::NotQuarantined(sid))?;
        let (_, saved) = table.entries[i].ok_or(Error::NotQuarantined(sid))?;
        self.write_ste_with(&mut strtab, sid, &saved, &[], submit)?;
        table.entries[i] = None;
        Ok(())
    }

    /// Whether `sid` is quarantined. Applies pending quarantines first, so
    /// `true` means its abort STE is in place (unless applying it failed:
    /// then it is still pending, and counted). Takes locks: thread context.
    pub fn is_quarantined(&self, sid: u32) -> bool {
        let mut strtab = self.strtab.lock();
        self.apply_pending_quarantines(&mut strtab, &mut |c| self.submit_locked(c));
        self.pending.contains(sid) || self.quarantined.lock().contains(sid)
    }

    /// Runs `f` with the stream table and the command queue if neither is
    /// held; `None` otherwise.
    fn with_locks_if_free<R>(
        &self,
        f: impl FnOnce(&mut StreamTable<H>, &mut dyn FnMut(&[Command]) -> Result<()>) -> R,
    ) -> Option<R> {
        let mut strtab = self.strtab.try_lock()?;
        let mut cmdq = self.cmdq.try_lock()?;
        let mut submit = |cmds: &[Command]| {
            let r = cmdq.submit_with(&self.mmio, cmds.len(), |i| cmds[i].encode(), true);
            self.counters.store_cmdq(cmdq.stats());
            r
        };
        Some(f(&mut strtab, &mut submit))
    }

    /// Applies pending quarantines if the locks are free (interrupt-safe).
    pub(super) fn try_apply_pending_quarantines(&self) {
        if self.pending.contains_any() {
            let _ = self.with_locks_if_free(|strtab, submit| {
                self.apply_pending_quarantines(strtab, submit)
            });
        }
    }

    /// Applies every pending quarantine (the caller holds the stream table;
    /// `submit` reaches the command queue). One that fails goes back to
    /// the pending set, to be retried by the next lock holder.
    pub(super) fn apply_pending_quarantines(
        &self,
        strtab: &mut StreamTable<H>,
        submit: &mut dyn FnMut(&[Command]) -> Result<()>,
    ) {
        let mut failed = [None; MAX_PENDING_QUARANTINES];
        let mut n = 0;
        while let Some(sid) = self.pending.take() {
            if let Err(e) = self.quarantine_locked(strtab, sid, submit) {
                log::error!("quarantine of StreamID {sid:#x} failed: {e}");
                if n < failed.len() {
                    failed[n] = Some(sid);
                    n += 1;
                }
            }
        }
        for sid in failed.into_iter().flatten() {
            let _ = self.pending.push(sid);
        }
    }

    /// Quarantines `sid` with the stream table held by the caller.
    fn quarantine_locked(
        &self,
        strtab: &mut StreamTable<H>,
        sid: u32,
        submit: &mut dyn FnMut(&[Command]) -> Result<()>,
    ) -> Result<()> {
        strtab.check_sid(sid)?;
        let current = Ste(strtab.read(sid)?);
        let saved = {
            let mut table = self.quarantined.lock();
            match table.find(sid) {
                Some(i) => table.entries[i].map_or(current, |(_, ste)| ste),
                None => {
                    let slot = table
                        .entries
                        .iter()
                        .position(Option::is_none)
                        .ok_or(Error::QuarantineFull)?;
                    table.entries[slot] = Some((sid, current));
                    current
                }
            }
        };
        if is_abort(&current) {
            // Already aborting (a StreamID without a level-2 table reads
            // as abort): nothing to write, nothing cached to drop.
            return Ok(());
        }
        self.write_ste_with(strtab, sid, &Ste::abort(), &[], submit)?;
        if matches!(saved.config(), SteConfig::Stage1 | SteConfig::Nested) && self.commands_live() {
            // CFGI_STE dropped the STE; the CD it pointed at may still be
            // cached for this StreamID.
            submit(&[Command::CfgiCdAll { sid }])?;
        }
        Ok(())
    }
}

impl Pending {
    fn contains_any(&self) -> bool {
        self.slots.iter().any(|s| s.load(Ordering::Acquire) != 0)
    }
}
