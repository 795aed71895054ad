//! Events and global errors: [`Smmu::drain_events`], [`Smmu::handle_gerror`],
//! [`Smmu::service`] (both, for an interrupt handler) and the work counters
//! ([`Smmu::stats`]). Nothing here waits for a lock or allocates.

use super::*;
use crate::cmd::ResumeAction;
use crate::features::StallModel;

/// How [`Smmu::service_with`] / [`Smmu::drain_events_with`] answer a
/// stalled transaction (an event record with `stall` set): the Action of
/// the CMD_RESUME sent with the record's StreamID and STAG (IHI 0070
/// §4.7.1). Ignored for records that did not stall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StallResponse {
    /// Terminate the transaction with an abort reported to the device
    /// (CMD_RESUME Ac = 0, Ab = 1). The default, and what
    /// [`Smmu::service`] does.
    #[default]
    Abort,
    /// Retry it as though it had just arrived (CMD_RESUME Ac = 1): after
    /// the cause was fixed (e.g. the page mapped). It may fault, and
    /// stall, again.
    Retry,
}

impl StallResponse {
    /// The CMD_RESUME action.
    pub fn action(self) -> ResumeAction {
        match self {
            StallResponse::Abort => ResumeAction::Abort,
            StallResponse::Retry => ResumeAction::Retry,
        }
    }
}

/// CMD_RESUMEs that can wait, parked, for a busy command queue
/// ([`Smmu::drain_events_with`]): two chunks' worth.
pub const MAX_PENDING_RESUMES: usize = 2 * EVENT_CHUNK;

/// CMD_RESUMEs parked while the command queue was busy: lock-free, for
/// interrupt context. Only the drainer (one at a time) parks; whoever
/// holds the command queue takes them.
#[derive(Debug, Default)]
pub(crate) struct PendingResumes {
    /// 0 = empty; else VALID | action << 48 | STAG << 32 | StreamID.
    slots: [AtomicU64; MAX_PENDING_RESUMES],
}

const RESUME_VALID: u64 = 1 << 63;

impl PendingResumes {
    fn encode(c: &Command) -> Option<u64> {
        let Command::Resume { sid, stag, action } = *c else {
            return None;
        };
        let a = match action {
            ResumeAction::Abort => 0,
            ResumeAction::Retry => 1,
            ResumeAction::RazWi => 2,
        };
        Some(RESUME_VALID | a << 48 | u64::from(stag) << 32 | u64::from(sid))
    }

    fn decode(v: u64) -> Command {
        Command::Resume {
            sid: v as u32,
            stag: (v >> 32) as u16,
            action: match (v >> 48) & 3 {
                0 => ResumeAction::Abort,
                1 => ResumeAction::Retry,
                _ => ResumeAction::RazWi,
            },
        }
    }

    /// Empty slots.
    pub(crate) fn free(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.load(Ordering::Acquire) == 0)
            .count()
    }

    /// Any parked.
    pub(crate) fn any(&self) -> bool {
        self.slots.iter().any(|s| s.load(Ordering::Acquire) != 0)
    }

    /// Parks `c` (a CMD_RESUME); `false` when full.
    fn push(&self, c: &Command) -> bool {
        let Some(v) = Self::encode(c) else {
            return false;
        };
        self.slots.iter().any(|s| {
            s.compare_exchange(0, v, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
    }

    /// Takes every parked command into `out`; returns how many.
    fn take(&self, out: &mut [Command; MAX_PENDING_RESUMES]) -> usize {
        let mut n = 0;
        for s in &self.slots {
            let v = s.swap(0, Ordering::AcqRel);
            if v != 0 {
                out[n] = Self::decode(v);
                n += 1;
            }
        }
        n
    }

    /// Drops every parked command.
    pub(crate) fn clear(&self) {
        for s in &self.slots {
            s.store(0, Ordering::Release);
        }
    }
}

impl<H: Hal> Smmu<H> {
    /// Decodes and hands pending events to `each`, oldest first, in chunks
    /// of at most [`EVENT_CHUNK`] records copied out of the queue with its
    /// lock held and handed out with no driver lock held (so `each` may
    /// call any method: see the module docs for interrupt context). Stops
    /// when the queue is empty or after one queue's worth of records
    /// (2^`eventq_log2`); records left then stay in the queue for the next
    /// call ([`Drained::left_in_queue`]).
    ///
    /// Returns what was drained; `None` if another CPU (or the interrupted
    /// code, or `each` itself, calling again) is draining: the drainer goes
    /// round once more for this call before it returns (even when the call
    /// comes just as it is letting go), so nothing is left behind, unless
    /// it is out of budget; or `None` if `enable`/`disable` holds the queue.
    ///
    /// Every record with `stall` set (an SMMU that stalls: see
    /// [`crate::Features::stall_forced`]) is answered with CMD_RESUME
    /// Abort: the stalled transaction is terminated with an abort, never
    /// left waiting. [`Smmu::drain_events_with`] lets the callback choose
    /// Retry instead.
    pub fn drain_events(&self, mut each: impl FnMut(Event)) -> Option<Drained> {
        self.drain_events_with(|e| {
            each(e);
            StallResponse::Abort
        })
    }

    /// [`Smmu::drain_events`], with `each` choosing how a stalled
    /// transaction is resumed: its return value is used for records with
    /// `stall` set (CMD_RESUME with the record's StreamID and STAG, Retry
    /// or Abort; IHI 0070 §3.12.2, §4.7.1) and ignored for the others.
    ///
    /// The CMD_RESUMEs of a chunk go out as one batch and one CMD_SYNC once
    /// `each` has seen the chunk. When the command queue is busy (another
    /// CPU, or the code this interrupt interrupted, holds it) they are
    /// parked lock-free and sent by the queue's holder when it lets go, or
    /// by the next `drain`/`service` call; at most [`MAX_PENDING_RESUMES`]
    /// are parked, and while they fill up no more records are taken out
    /// of the queue (stall records wait in the queue: the SMMU never
    /// discards them, §7.4; a call that finds no room at all returns
    /// `None`, as when another caller drains). No transaction is left
    /// stalled by the driver: events are the only way to learn of stalls,
    /// and every stall event seen gets exactly one CMD_RESUME.
    pub fn drain_events_with(
        &self,
        mut each: impl FnMut(Event) -> StallResponse,
    ) -> Option<Drained> {
        // Ask first, then try to become the drainer. Whoever drains sees the
        // request: in its loop, or in its last look after letting go. All
        // four accesses are SeqCst (a store then a load on each side), so a
        // request made while the drainer is letting go is never missed by
        // both: either this call's swap below finds `draining` clear, or the
        // drainer's last load finds `drain_again` set and it goes round.
        self.drain_again.store(true, Ordering::SeqCst);
        let budget = self.eventq_entries;
        let mut total: Option<Drained> = None;
        let mut owned = false;
        loop {
            if self.draining.swap(true, Ordering::SeqCst) {
                // The drainer goes round for this request.
                break;
            }
            owned = true;
            'pass: while self.drain_again.swap(false, Ordering::SeqCst) {
                loop {
                    let done = total.map_or(0, |t| t.records);
                    // Room for every CMD_RESUME of the chunk, should the
                    // command queue be busy when they go out.
                    let room = self.resumes.free() as u32;
                    let max = (EVENT_CHUNK as u32).min(budget - done).min(room);
                    if max == 0 {
                        break 'pass;
                    }
                    let mut chunk = [[0u64; crate::eventq::EVT_DWORDS]; EVENT_CHUNK];
                    let mut n = 0;
                    // `enable`/`disable` hold the queue: they reset it.
                    let Some(mut evtq) = self.evtq.try_lock() else {
                        break 'pass;
                    };
                    let d = evtq.drain_up_to(&self.mmio, max, |raw| {
                        // At most `max` <= EVENT_CHUNK records come.
                        if let Some(slot) = chunk.get_mut(n) {
                            *slot = raw;
                            n += 1;
                        }
                    });
                    drop(evtq);
                    self.counters
                        .events
                        .fetch_add(u64::from(d.records), Ordering::Relaxed);
                    if d.overflow {
                        self.counters
                            .eventq_overflows
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    let t = total.get_or_insert_default();
                    t.records += d.records;
                    t.overflow |= d.overflow;
                    t.left_in_queue = d.left_in_queue;
                    let mut resumes = [Command::sync(); EVENT_CHUNK];
                    let mut r = 0;
                    for raw in &chunk[..n] {
                        let e = Event::decode(*raw);
                        let stall = e.stall.then_some((e.sid, e.stag));
                        let response = each(e);
                        // No CMD_RESUME where the SMMU has no stall model
                        // (CERROR_ILL there; a record cannot stall).
                        if let Some((sid, stag)) = stall
                            && self.features.stall_model != StallModel::NoStall
                            && !self.stalls_ended(sid)
                            && let Some(slot) = resumes.get_mut(r)
                        {
                            *slot = Command::Resume {
                                sid,
                                stag,
                                action: response.action(),
                            };
                            r += 1;
                        }
                    }
                    self.send_resumes(&resumes[..r]);
                    if !d.left_in_queue {
                        break;
                    }
                }
            }
            #[cfg(test)]
            before_drain_release();
            self.draining.store(false, Ordering::SeqCst);
            // A request made after this call's last pass began (by another
            // CPU, an interrupt, or `each`) whose caller was turned away.
            // Out of budget: the records stay for the next call
            // (`left_in_queue`), as documented.
            let out_of_budget = total.is_some_and(|t| t.records >= budget);
            if out_of_budget || !self.drain_again.load(Ordering::SeqCst) {
                break;
            }
        }
        if owned {
            // Quarantines `each` asked for while a lock was held.
            self.try_apply_pending_quarantines();
        }
        // CMD_RESUMEs parked while the command queue was busy.
        self.send_resumes(&[]);
        total
    }

    /// Whether the stalls of `sid` were already ended: its STE aborts (or
    /// is invalid), and every change of a translating STE to that by this
    /// driver is followed by CMD_STALL_TERM (`write_ste_with`,
    /// `write_stes`). A stall record of such a stream predates the change;
    /// IHI 0070 §4.7.2 (step 6 of its shutdown sequence) has software
    /// discard those records, and §4.7.1 allows CMD_RESUME only for stalls
    /// not already subject to CMD_STALL_TERM. `false` when the stream
    /// table is busy (never waits): the CMD_RESUME then goes out, and
    /// affects nothing if the stall was already terminated.
    fn stalls_ended(&self, sid: u32) -> bool {
        let Some(strtab) = self.strtab.try_lock() else {
            return false;
        };
        strtab.read(sid).is_ok_and(|w| {
            let ste = Ste(w);
            !ste.is_valid() || matches!(ste.config(), SteConfig::Abort | SteConfig::AbortOther(_))
        })
    }

    /// Sends `resumes` (and any parked earlier) in one batch + CMD_SYNC if
    /// the command queue is free; otherwise parks `resumes` for the queue's
    /// holder or the next call (the caller made room: see
    /// `drain_events_with`). Never waits for a lock.
    pub(super) fn send_resumes(&self, resumes: &[Command]) {
        if resumes.is_empty() && !self.resumes.any() {
            return;
        }
        if !self.commands_live() {
            // Not enabled: SMMUEN = 0 terminated every stall (§3.12.2).
            self.resumes.clear();
            return;
        }
        match self.cmdq.try_lock() {
            Some(mut q) => {
                self.flush_resumes_locked(&mut q, resumes);
            }
            None => {
                for c in resumes {
                    if !self.resumes.push(c) {
                        log::error!("CMD_RESUME {c:?} dropped: no room to park it");
                    }
                }
            }
        }
    }

    /// With the command queue held: sends the parked CMD_RESUMEs and
    /// `more` as one batch + CMD_SYNC.
    pub(super) fn flush_resumes_locked(&self, q: &mut CommandQueue<H>, more: &[Command]) {
        let mut parked = [Command::sync(); MAX_PENDING_RESUMES];
        let n = self.resumes.take(&mut parked);
        let all = |i: usize| {
            if i < n { parked[i] } else { more[i - n] }
        };
        if n + more.len() == 0 {
            return;
        }
        if let Err(e) = q.submit_with(&self.mmio, n + more.len(), |i| all(i).encode(), true) {
            log::error!("CMD_RESUME batch failed: {e}");
        }
        self.counters.store_cmdq(q.stats());
    }

    /// Handles every active global error (always via GERROR ^ GERRORN):
    /// recovers command errors (unless a submitter holds the queue and will),
    /// counts event-queue and MSI aborts, and on SFM_ERR disables the SMMU
    /// and returns [`Error::ServiceFailure`].
    pub fn handle_gerror(&self) -> Result<GerrorReport> {
        let (seen, active) = self.mmio.read_gerror();
        let mut report = GerrorReport {
            active,
            ..GerrorReport::default()
        };
        if active == 0 {
            return Ok(report);
        }
        let bit = |f: tock_registers::fields::Field<u32, GERROR::Register>| f.mask << f.shift;
        if active & bit(GERROR::CMDQ_ERR) != 0 {
            match self.cmdq.try_lock() {
                Some(mut cmdq) => {
                    report.cmdq_fault = cmdq.recover_seen(&self.mmio, Some(seen), None);
                    self.counters.store_cmdq(cmdq.stats());
                }
                None => {
                    report.cmdq_deferred = true;
                    self.mmio.hint_cmdq_error(seen);
                }
            }
        }
        let mut ack = 0;
        if active & bit(GERROR::EVENTQ_ABT_ERR) != 0 {
            report.eventq_abort = true;
            self.counters.eventq_aborts.fetch_add(1, Ordering::Relaxed);
            ack |= bit(GERROR::EVENTQ_ABT_ERR);
        }
        let msi = bit(GERROR::MSI_CMDQ_ABT_ERR)
            | bit(GERROR::MSI_EVENTQ_ABT_ERR)
            | bit(GERROR::MSI_PRIQ_ABT_ERR)
            | bit(GERROR::MSI_GERROR_ABT_ERR);
        if active & msi != 0 {
            report.msi_abort = true;
            self.counters.msi_aborts.fetch_add(1, Ordering::Relaxed);
            ack |= active & msi;
        }
        // Errors this driver never enables (PRI queue, CMDQP) are only
        // acknowledged.
        ack |= active & (bit(GERROR::PRIQ_ABT_ERR) | bit(GERROR::CMDQP_ERR));
        let sfm = active & bit(GERROR::SFM_ERR) != 0;
        if sfm {
            ack |= bit(GERROR::SFM_ERR);
        }
        if ack != 0 {
            self.mmio.ack_gerrors_seen(ack, seen);
        }
        self.counters
            .gerrors
            .fetch_add(u64::from(active.count_ones()), Ordering::Relaxed);
        if sfm {
            log::error!(
                "{}",
                GerrorReport {
                    service_failure: true,
                    ..report
                }
            );
            // The SMMU stopped; leave it aborting everything. Best effort:
            // a failed SMMU may not acknowledge.
            self.set_state(State::Failed);
            let _ = self.abort_bypass();
            self.mmio.write32(&self.mmio.p0().cr0, 0);
            return Err(Error::ServiceFailure);
        }
        Ok(report)
    }

    /// Services the SMMU: handles global errors, applies quarantines left
    /// pending, then drains events into `each` as [`Smmu::drain_events`]
    /// does (in chunks of [`EVENT_CHUNK`], with no driver lock held while
    /// `each` runs, at most one queue's worth per call). The one call an
    /// interrupt handler (eventq or gerror) or a polling loop needs. Safe
    /// to call from an interrupt taken while this CPU holds a driver lock:
    /// contended work is left to the lock holder or the next call.
    ///
    /// `each` may call any `Smmu` method when `service` runs in thread
    /// context, e.g. [`Smmu::quarantine`] the faulting StreamID or
    /// [`Smmu::detach`] it; in interrupt context only the methods the
    /// module docs list.
    ///
    /// Stalled transactions are resumed with Abort, as
    /// [`Smmu::drain_events`] says; [`Smmu::service_with`] lets `each`
    /// choose Retry.
    pub fn service(&self, mut each: impl FnMut(Event)) -> Result<(GerrorReport, Option<Drained>)> {
        self.service_with(|e| {
            each(e);
            StallResponse::Abort
        })
    }

    /// [`Smmu::service`], with `each` choosing how each stalled transaction
    /// is resumed (see [`Smmu::drain_events_with`]).
    ///
    /// ```
    /// use smmuv3::testing::{HostHal, SmmuModel};
    /// use smmuv3::{Config, DomainOptions, Granule, Smmu, Stage2Config, StallResponse};
    ///
    /// // IDR0.STALL_MODEL (bits [25:24]) = 0b10: stalls forced.
    /// let model = SmmuModel::builder().id_field(0x00, 24, 2, 0b10).build();
    /// // SAFETY: the model outlives the driver; nothing else drives it.
    /// let smmu = unsafe { Smmu::<HostHal>::new(model.base(), Config::default()) }?;
    /// smmu.enable()?;
    /// let vm = smmu.create_domain(DomainOptions::new(Stage2Config::new(Granule::K4, 40, 48)?))?;
    /// smmu.attach(vm, 8)?;
    /// let mut record = SmmuModel::translation_fault(8, 0x8000_0000, true);
    /// record[1] |= 1 << 31 | 0x1234; // Stall = 1, STAG = 0x1234
    /// assert!(model.inject_event(record));
    /// smmu.service_with(|e| {
    ///     assert!(e.stall && e.stag == 0x1234);
    ///     StallResponse::Retry // the fault was fixed: try again
    /// })?;
    /// // CMD_RESUME (0x44), StreamID 8, Ac = 1 (retry); STAG 0x1234.
    /// let resume = model.commands().into_iter().find(|c| c[0] & 0xFF == 0x44);
    /// assert_eq!(resume, Some([8 << 32 | 1 << 12 | 0x44, 0x1234]));
    /// # Ok::<(), smmuv3::Error>(())
    /// ```
    pub fn service_with(
        &self,
        each: impl FnMut(Event) -> StallResponse,
    ) -> Result<(GerrorReport, Option<Drained>)> {
        let report = self.handle_gerror()?;
        self.try_apply_pending_quarantines();
        Ok((report, self.drain_events_with(each)))
    }

    /// Work counters.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            cmdq: c.load_cmdq(),
            mmio_writes: self.mmio.writes(),
            mmio_reads: self.mmio.reads(),
            events: c.events.load(Ordering::Relaxed),
            eventq_overflows: c.eventq_overflows.load(Ordering::Relaxed),
            eventq_aborts: c.eventq_aborts.load(Ordering::Relaxed),
            msi_aborts: c.msi_aborts.load(Ordering::Relaxed),
            gerrors: c.gerrors.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
std::thread_local! {
    /// Test hook: runs once, on this thread, just before `drain_events`
    /// lets go of the drain (the window in which another caller is turned
    /// away after the drainer's last look at the queue).
    pub(crate) static BEFORE_DRAIN_RELEASE: core::cell::RefCell<Option<alloc::boxed::Box<dyn FnOnce()>>> =
        core::cell::RefCell::new(None);
}

#[cfg(test)]
fn before_drain_release() {
    if let Some(f) = BEFORE_DRAIN_RELEASE.with(|h| h.borrow_mut().take()) {
        f();
    }
}
