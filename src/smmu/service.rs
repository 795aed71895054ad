//! Events and global errors: [`Smmu::drain_events`], [`Smmu::handle_gerror`],
//! [`Smmu::service`] (both, for an interrupt handler) and the work counters
//! ([`Smmu::stats`]). Nothing here waits for a lock or allocates.

use super::*;

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
    pub fn drain_events(&self, mut each: impl FnMut(Event)) -> Option<Drained> {
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
                    let max = (EVENT_CHUNK as u32).min(budget - done);
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
                    for raw in &chunk[..n] {
                        each(Event::decode(*raw));
                    }
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
        total
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
    pub fn service(&self, each: impl FnMut(Event)) -> Result<(GerrorReport, Option<Drained>)> {
        let report = self.handle_gerror()?;
        self.try_apply_pending_quarantines();
        Ok((report, self.drain_events(each)))
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
