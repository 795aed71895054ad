//! The command queue: batches, CMD_SYNC and error recovery.
//!
//! A batch of commands is written into the queue, made visible with one
//! `DSB ST`, and published with one write of CMDQ_PROD; an optional CMD_SYNC
//! at the end is waited for by comparing its full wrap+index position with
//! CMDQ_CONS (masked of the ERR field). Batches larger than the free space
//! are published in as few PROD writes as the space allows.
//!
//! If the SMMU stops on a bad command (GERROR.CMDQ_ERR active), the waiting
//! submitter recovers: CERROR_ILL replaces the offending command with a
//! CMD_SYNC, CERROR_ABT and CERROR_ATC_INV_SYNC retry, then GERRORN
//! acknowledges and the queue resumes. The submitter still waits for its own
//! CMD_SYNC, then returns [`Error::CommandError`] describing the first fault.
//! Every wait is bounded.
//!
//! A submitter recovers any command error it finds before returning, so an
//! interrupt handler that finds the queue locked can leave the error to it.
//!
//! # Register reads
//!
//! An SMMU register read costs about a microsecond on hardware, so the fast
//! path reads only CMDQ_CONS: once per batch when the SMMU completes
//! promptly (the free space is computed from the last CONS seen; PROD is
//! never read back). GERROR and GERRORN are read only when CONS stops
//! advancing for [`STALL_POLLS`] polls, when an interrupt handler left a
//! command error to the lock holder ([`Mmio::hint_cmdq_error`]), before a
//! timeout is reported, and after a batch without a CMD_SYNC (whose
//! completion nothing proves). A completed CMD_SYNC proves every command
//! before it was consumed without an error the queue is still stopped on.
//!
//! The queue is not internally locked: the [`crate::smmu::Smmu`] owns it
//! behind a lock, so submission from several CPUs is serialised.

use tock_registers::LocalRegisterCopy;

use crate::error::{CmdqError, Error, Result, Wait};
use crate::hal::Hal;
use crate::mmio::Mmio;
use crate::queue::{Queue, Ring};
use crate::regs::{GERROR, Q_CONS};

/// 64-bit words per command.
pub const CMD_DWORDS: usize = 2;

/// Polls of an unchanged CMDQ_CONS after which a waiter looks at GERROR for
/// a command error (the queue stops on one).
pub const STALL_POLLS: u32 = 8;

/// Counters of the command queue's work (deterministic, for benchmarks).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CmdqStats {
    /// Commands submitted (excluding the CMD_SYNCs the queue appends).
    pub commands: u64,
    /// CMD_SYNCs appended.
    pub syncs: u64,
    /// Writes of CMDQ_PROD.
    pub prod_writes: u64,
    /// Command errors recovered from.
    pub errors: u64,
    /// CERROR_ABT / CERROR_ATC_INV_SYNC retries.
    pub retries: u64,
}

/// A command error the queue saw and recovered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmdqFault {
    /// What CMDQ_CONS.ERR said.
    pub error: CmdqError,
    /// Wrap+index of the offending command.
    pub position: u32,
    /// The offending command as it was in the queue.
    pub entry: [u64; CMD_DWORDS],
}

impl CmdqFault {
    /// The fault as the driver's error type.
    pub fn to_error(&self, ring: Ring) -> Error {
        Error::CommandError {
            error: self.error,
            index: ring.index(self.position),
            opcode: (self.entry[0] & 0xFF) as u8,
        }
    }
}

/// The command queue's memory and producer state.
#[derive(Debug)]
pub struct CommandQueue<H: Hal> {
    queue: Queue<H, CMD_DWORDS>,
    prod: u32,
    /// The last CMDQ_CONS value read (wrap+index): free space is computed
    /// from it without another read while it shows enough.
    cons: u32,
    sync: [u64; CMD_DWORDS],
    timeout_ns: u64,
    stats: CmdqStats,
    last_fault: Option<CmdqFault>,
    /// Erratum workaround: at most this many commands before a CMD_SYNC.
    max_per_sync: Option<usize>,
}

impl<H: Hal> CommandQueue<H> {
    /// Allocates a queue of `2^log2` commands (at most `2^max_log2`, from
    /// IDR1.CMDQS). `sync` is the encoded CMD_SYNC the queue appends to
    /// batches and substitutes for illegal commands.
    pub fn new(
        log2: u32,
        max_log2: u32,
        coherent: bool,
        sync: [u64; CMD_DWORDS],
        timeout_ns: u64,
    ) -> Result<Self> {
        Ok(Self {
            queue: Queue::new(log2, max_log2, coherent)?,
            prod: 0,
            cons: 0,
            sync,
            timeout_ns,
            stats: CmdqStats::default(),
            last_fault: None,
            max_per_sync: None,
        })
    }

    /// Makes every batch longer than `n` commands go out as runs of at
    /// most `n` commands, each followed by a CMD_SYNC that is waited for
    /// (Arm erratum 2812531, see [`crate::features::Errata`]). `None` (the
    /// default) batches without limit.
    pub fn with_max_per_sync(mut self, n: Option<usize>) -> Self {
        self.max_per_sync = n.filter(|&n| n > 0);
        self
    }

    /// The CMDQ_BASE value.
    pub fn base_register(&self) -> u64 {
        self.queue.base_register()
    }

    /// Address of the queue's memory.
    pub fn paddr(&self) -> u64 {
        self.queue.paddr()
    }

    /// Index arithmetic of the queue.
    pub fn ring(&self) -> Ring {
        self.queue.ring()
    }

    /// Bytes of queue memory.
    pub fn bytes(&self) -> usize {
        self.queue.bytes()
    }

    /// Forgets the producer position: call after programming CMDQ_PROD and
    /// CMDQ_CONS to 0 while CMDQEN = 0.
    pub fn reset(&mut self) {
        self.prod = 0;
        self.cons = 0;
    }

    /// Work counters.
    pub fn stats(&self) -> CmdqStats {
        self.stats
    }

    /// The most recent command fault recovered from.
    #[allow(dead_code)] // a diagnostics accessor
    pub fn last_fault(&self) -> Option<CmdqFault> {
        self.last_fault
    }

    /// Writes `cmds` (and a CMD_SYNC when `sync`) and publishes them with as
    /// few PROD writes as the free space allows (one, when they fit). With
    /// `sync`, waits until the CMD_SYNC is consumed.
    #[cfg(test)]
    pub fn submit(&mut self, mmio: &Mmio, cmds: &[[u64; CMD_DWORDS]], sync: bool) -> Result<()> {
        self.submit_with(mmio, cmds.len(), |i| cmds[i], sync)
    }

    /// Like [`CommandQueue::submit`] for `count` commands produced by
    /// `command(i)`, so callers need not build an array first.
    ///
    /// With a per-SYNC limit ([`CommandQueue::with_max_per_sync`]), a longer
    /// batch is split into runs of at most that many commands, each but the
    /// last followed by a CMD_SYNC that is waited for; the last run ends as
    /// `sync` says.
    pub fn submit_with(
        &mut self,
        mmio: &Mmio,
        count: usize,
        command: impl Fn(usize) -> [u64; CMD_DWORDS],
        sync: bool,
    ) -> Result<()> {
        let Some(limit) = self.max_per_sync.filter(|&n| count > n) else {
            return self.submit_run(mmio, count, &command, sync);
        };
        let mut done = 0;
        while done < count {
            let n = limit.min(count - done);
            let last = done + n == count;
            self.submit_run(mmio, n, &|i| command(done + i), sync || !last)?;
            done += n;
        }
        Ok(())
    }

    /// One run of [`CommandQueue::submit_with`], with no per-SYNC limit.
    fn submit_run(
        &mut self,
        mmio: &Mmio,
        count: usize,
        command: &dyn Fn(usize) -> [u64; CMD_DWORDS],
        sync: bool,
    ) -> Result<()> {
        let ring = self.ring();
        let total = count + usize::from(sync);
        let mut written = 0;
        let mut sync_pos = None;
        let mut first_fault = None;
        while written < total {
            let free = self.wait_for_space(mmio, (total - written) as u32, &mut first_fault)?;
            let n = free.min((total - written) as u32);
            for k in 0..n {
                let pos = ring.advance(self.prod, k);
                let i = written + k as usize;
                if i < count {
                    self.queue.write(pos, &command(i));
                } else {
                    self.queue.write(pos, &self.sync);
                    sync_pos = Some(pos);
                }
            }
            // Entries must be visible to the SMMU before PROD says so.
            self.queue.publish(self.prod, n);
            self.prod = ring.advance(self.prod, n);
            mmio.write32(&mmio.p0().cmdq_prod, self.prod);
            self.stats.prod_writes += 1;
            written += n as usize;
        }
        self.stats.commands += count as u64;
        if let Some(pos) = sync_pos {
            self.stats.syncs += 1;
            self.wait_consumed(mmio, pos, &mut first_fault)?;
        }
        // An error raised while we held the queue may have been deferred to
        // us by an interrupt handler that found the lock taken, and a batch
        // without a SYNC may have stopped the queue after we looked: handle
        // either before letting go.
        let hint = mmio.take_cmdq_error_hint();
        if (hint.is_some() || sync_pos.is_none())
            && let Some(f) = self.recover_seen(mmio, hint, None)
        {
            first_fault.get_or_insert(f);
        }
        match first_fault {
            Some(f) => Err(f.to_error(ring)),
            None => Ok(()),
        }
    }

    /// Waits until at least one slot is free; returns the free count. The
    /// last CONS seen is trusted (the SMMU only ever advances it) while it
    /// shows room for all `wanted` entries; otherwise CONS is read.
    fn wait_for_space(
        &mut self,
        mmio: &Mmio,
        wanted: u32,
        fault: &mut Option<CmdqFault>,
    ) -> Result<u32> {
        let cached = self.ring().free(self.prod, self.cons);
        if cached >= wanted {
            return Ok(cached);
        }
        self.poll(mmio, fault, Wait::CmdqSpace, |q, cons| {
            let free = q.ring().free(q.prod, cons);
            (free > 0).then_some(free)
        })
    }

    /// Waits until the entry at `pos` has been consumed.
    fn wait_consumed(
        &mut self,
        mmio: &Mmio,
        pos: u32,
        fault: &mut Option<CmdqFault>,
    ) -> Result<()> {
        self.poll(mmio, fault, Wait::CmdSync, |q, cons| {
            q.ring().is_consumed(pos, cons, q.prod).then_some(())
        })
    }

    /// Polls `ready(queue, CONS)` until it yields a value, bounded by the
    /// queue's timeout. Command errors are looked for (and recovered, the
    /// first kept in `fault`) only when CONS has not moved for
    /// [`STALL_POLLS`] polls, when an interrupt handler hinted at one, and
    /// before giving up.
    ///
    /// The hint is taken before CONS is read: the handler read GERROR
    /// before leaving it, so that CONS read already shows the error the
    /// handler saw, and recovering it costs no further register read.
    fn poll<T>(
        &mut self,
        mmio: &Mmio,
        fault: &mut Option<CmdqFault>,
        what: Wait,
        ready: impl Fn(&Self, u32) -> Option<T>,
    ) -> Result<T> {
        let start = H::now_ns();
        let mut last = None;
        let mut stalled = 0;
        loop {
            let hint = mmio.take_cmdq_error_hint();
            let raw = mmio.read32(&mmio.p0().cmdq_cons);
            let cons = raw & self.ring().wrap_index_mask();
            self.cons = cons;
            if let Some(v) = ready(self, cons) {
                if let Some(seen) = hint {
                    // Left for the check before the submitter returns.
                    mmio.hint_cmdq_error(seen);
                }
                return Ok(v);
            }
            if last == Some(cons) {
                stalled += 1;
            } else {
                (last, stalled) = (Some(cons), 0);
            }
            let expired = H::now_ns().wrapping_sub(start) > self.timeout_ns;
            if (hint.is_some() || stalled >= STALL_POLLS || expired)
                && let Some(f) = self.recover_seen(mmio, hint, hint.map(|_| raw))
            {
                fault.get_or_insert(f);
                stalled = 0;
                continue;
            }
            if expired {
                return Err(Error::Timeout(what));
            }
            core::hint::spin_loop();
        }
    }

    /// If the command queue stopped on an error, repairs it and lets it
    /// resume. Returns what was wrong. (The driver recovers through
    /// `recover_seen`, with what it already read.)
    #[cfg(test)]
    pub fn recover(&mut self, mmio: &Mmio) -> Option<CmdqFault> {
        self.recover_seen(mmio, None, None)
    }

    /// Recovers a command queue stopped on an error, with what the caller
    /// already read:
    /// `seen`, a GERROR value (else GERROR is read), and `cons`, a raw
    /// CMDQ_CONS read after `seen` was (else CONS is read, after GERROR:
    /// CONS.ERR is valid once GERROR.CMDQ_ERR is seen active). Only the
    /// command queue's holder acknowledges CMDQ_ERR, so an error active in
    /// `seen` against GERRORN now is still the one CONS shows.
    pub(crate) fn recover_seen(
        &mut self,
        mmio: &Mmio,
        seen: Option<u32>,
        cons: Option<u32>,
    ) -> Option<CmdqFault> {
        let cmdq_err = GERROR::CMDQ_ERR.mask << GERROR::CMDQ_ERR.shift;
        let gerror = seen.unwrap_or_else(|| mmio.read_gerror().0);
        if mmio.active_in(gerror) & cmdq_err == 0 {
            return None;
        }
        let cons = LocalRegisterCopy::<u32, Q_CONS::Register>::new(
            cons.unwrap_or_else(|| mmio.read32(&mmio.p0().cmdq_cons)),
        );
        let position = cons.get() & self.ring().wrap_index_mask();
        let entry = self.queue.read(position);
        let error = match cons.read(Q_CONS::ERR) {
            0 => CmdqError::None,
            1 => CmdqError::Illegal,
            2 => CmdqError::Abort,
            3 => CmdqError::AtcInvSync,
            other => CmdqError::Reserved(other as u8),
        };
        match error {
            // The SMMU will not execute this command: replace it with a
            // harmless CMD_SYNC so the queue can move past it.
            CmdqError::Illegal | CmdqError::Reserved(_) => {
                self.queue.write(position, &self.sync);
                self.queue.publish(position, 1);
            }
            // A fetch abort or an ATC invalidation timeout: retry the same
            // command when the error is acknowledged.
            CmdqError::Abort | CmdqError::AtcInvSync => self.stats.retries += 1,
            // CMDQ_ERR active but CONS.ERR = CERROR_NONE: nothing names a
            // bad command, and the one at CONS may be valid (it has not run
            // yet). Acknowledge only; never overwrite it.
            CmdqError::None => {}
        }
        self.stats.errors += 1;
        let fault = CmdqFault {
            error,
            position,
            entry,
        };
        self.last_fault = Some(fault);
        mmio.ack_gerrors_seen(cmdq_err, gerror);
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeHal, FakeRegs};

    const SYNC: [u64; 2] = [0x46, 0];
    const CMDQ_PROD: usize = 0x98;
    const CMDQ_CONS: usize = 0x9C;
    const GERROR: usize = 0x60;
    const GERRORN: usize = 0x64;

    fn queue(log2: u32) -> CommandQueue<FakeHal> {
        CommandQueue::new(log2, 19, true, SYNC, 1_000_000).unwrap()
    }

    #[test]
    fn a_batch_is_one_prod_write() {
        let regs = FakeRegs::new();
        let mmio = regs.mmio();
        let mut q = queue(4);
        let cmds = [[0x03, 1], [0x03, 1], [0x03, 1]];
        q.submit(&mmio, &cmds, false).unwrap();
        assert_eq!(regs.get32(CMDQ_PROD), 3);
        assert_eq!(mmio.writes(), 1);
        assert_eq!(q.stats().prod_writes, 1);
        assert_eq!(q.queue.read(2), [0x03, 1]);
    }

    #[test]
    fn an_unconsumed_sync_times_out() {
        let regs = FakeRegs::new();
        let mmio = regs.mmio();
        let mut q = queue(4);
        assert_eq!(
            q.submit(&mmio, &[[0x03, 0]], true),
            Err(Error::Timeout(Wait::CmdSync))
        );
        // The SYNC was written after the command, in the same PROD write.
        assert_eq!(q.queue.read(1), SYNC);
        assert_eq!(regs.get32(CMDQ_PROD), 2);
        assert_eq!(q.stats().prod_writes, 1);
    }

    #[test]
    fn a_consumed_sync_completes_across_the_wrap() {
        let regs = FakeRegs::new();
        let mmio = regs.mmio();
        // 4 entries; a long bound: the fake clock ticks per poll and the
        // consumer thread must get scheduled.
        let mut q = CommandQueue::<FakeHal>::new(2, 19, true, SYNC, 1 << 40).unwrap();
        // Start at slot 3, so the SYNC lands in slot 0 of the next lap.
        q.prod = 3;
        regs.set32(CMDQ_CONS, 3);
        // A thread plays the SMMU: it consumes whatever PROD publishes.
        let base = &regs as *const FakeRegs as usize;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let smmu = std::thread::spawn(move || {
            // SAFETY: (test) `regs` outlives the thread (joined below).
            let regs = unsafe { &*(base as *const FakeRegs) };
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let prod = regs.get32(CMDQ_PROD);
                if prod != 0 {
                    regs.set32(CMDQ_CONS, prod);
                }
                std::thread::yield_now();
            }
        });
        let r = q.submit(&mmio, &[[0x03, 0]], true);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        smmu.join().unwrap();
        r.unwrap();
        assert_eq!(regs.get32(CMDQ_PROD), 5); // slot 1, wrap set
        assert_eq!(q.queue.read(4), SYNC);
    }

    #[test]
    fn a_full_queue_times_out_waiting_for_space() {
        let regs = FakeRegs::new();
        let mmio = regs.mmio();
        let mut q = queue(1); // 2 entries
        let r = q.submit(&mmio, &[[0x03, 0]; 3], false);
        assert_eq!(r, Err(Error::Timeout(Wait::CmdqSpace)));
        // The first two were published before the wait.
        assert_eq!(regs.get32(CMDQ_PROD), 2);
    }

    #[test]
    fn an_illegal_command_is_replaced_by_sync_and_acknowledged() {
        let regs = FakeRegs::new();
        let mmio = regs.mmio();
        let mut q = queue(4);
        q.queue.write(0, &[0x07, 0]);
        q.prod = 1;
        // The SMMU stopped at slot 0 with CERROR_ILL and toggled GERROR.CMDQ_ERR.
        regs.set32(CMDQ_CONS, 1 << 24);
        regs.set32(GERROR, 1);
        let fault = q.recover(&mmio).unwrap();
        assert_eq!(fault.error, CmdqError::Illegal);
        assert_eq!(fault.entry, [0x07, 0]);
        assert_eq!(q.queue.read(0), SYNC);
        assert_eq!(regs.get32(GERRORN), 1); // acknowledged
        assert_eq!(
            fault.to_error(q.ring()),
            Error::CommandError {
                error: CmdqError::Illegal,
                index: 0,
                opcode: 0x07
            }
        );
        assert_eq!(q.recover(&mmio), None); // nothing active any more
    }

    /// Issue 8 item 12: CMDQ_ERR with CONS.ERR = CERROR_NONE is only
    /// acknowledged; the (valid, not yet executed) command at CONS stays.
    #[test]
    fn cerror_none_is_acknowledged_without_touching_the_queue() {
        let regs = FakeRegs::new();
        let mmio = regs.mmio();
        let mut q = queue(4);
        let tlbi = [0x1A, 0x0001_0000_0000];
        q.queue.write(2, &tlbi);
        q.prod = 3;
        regs.set32(CMDQ_CONS, 2); // ERR = 0
        regs.set32(GERROR, 1);
        let fault = q.recover(&mmio).unwrap();
        assert_eq!(fault.error, CmdqError::None);
        assert_eq!(q.queue.read(2), tlbi, "a valid command was overwritten");
        assert_eq!(regs.get32(GERRORN), 1);
    }

    /// Issue 8 item 9: with the MMU-700 erratum limit, a long batch goes
    /// out as runs of at most N commands, each followed by a CMD_SYNC.
    #[test]
    fn a_per_sync_limit_splits_long_batches() {
        let regs = FakeRegs::new();
        regs.respond();
        regs.set32(0x24, 1 << 3); // CR0ACK.CMDQEN, as after enable
        let mmio = regs.mmio();
        let mut q = queue(8).with_max_per_sync(Some(63));
        regs.set64(0x90, q.base_register());
        let cmd = |i: usize| [0x1A, i as u64];
        q.submit_with(&mmio, 130, cmd, true).unwrap();
        let seen = regs.commands();
        let opcodes: Vec<u64> = seen.iter().map(|c| c[0] & 0xFF).collect();
        // 63 + SYNC, 63 + SYNC, 4 + SYNC.
        assert_eq!(opcodes.len(), 133);
        let syncs: Vec<usize> = (0..opcodes.len()).filter(|&i| opcodes[i] == 0x46).collect();
        assert_eq!(syncs, [63, 127, 132]);
        let mut run = 0;
        for &op in &opcodes {
            run = if op == 0x46 { 0 } else { run + 1 };
            assert!(run <= 63);
        }
        // Every command went out once, in order.
        let args: Vec<u64> = seen
            .iter()
            .filter(|c| c[0] & 0xFF == 0x1A)
            .map(|c| c[1])
            .collect();
        assert_eq!(args, (0..130).collect::<Vec<_>>());
        assert_eq!(q.stats().syncs, 3);
        // Without the limit: one run, one SYNC.
        let regs = FakeRegs::new();
        regs.respond();
        regs.set32(0x24, 1 << 3);
        let mmio = regs.mmio();
        let mut q = queue(8);
        regs.set64(0x90, q.base_register());
        q.submit_with(&mmio, 130, cmd, true).unwrap();
        assert_eq!(
            regs.commands()
                .iter()
                .filter(|c| c[0] & 0xFF == 0x46)
                .count(),
            1
        );
    }

    /// Issue 12: when the SMMU completes promptly, a batch with its
    /// CMD_SYNC costs exactly one MMIO read (CMDQ_CONS), and GERROR is never
    /// read; a command error is still found (CONS stops) and recovered.
    #[test]
    fn a_prompt_sync_costs_one_register_read() {
        let regs = FakeRegs::new();
        regs.respond();
        regs.set32(0x24, 1 << 3); // CR0ACK.CMDQEN
        let mmio = regs.mmio();
        let mut q = queue(8);
        regs.set64(0x90, q.base_register());
        for batch in [1usize, 5, 200, 1] {
            let before = mmio.reads();
            q.submit_with(&mmio, batch, |i| [0x1A, i as u64], true)
                .unwrap();
            assert_eq!(mmio.reads() - before, 1, "batch of {batch}");
        }
        // A batch that does not fit behind the last CONS seen reads it again
        // (once), and still completes.
        let before = mmio.reads();
        q.submit_with(&mmio, 300, |i| [0x1A, i as u64], true)
            .unwrap();
        assert!(mmio.reads() - before <= 3);
        // An illegal command: CONS stops, the waiter looks at GERROR,
        // replaces the command and reports it.
        let mut armed = true;
        regs.fault_commands(Box::new(move |c| {
            (armed && c[0] & 0xFF == 0x07).then(|| {
                armed = false;
                1
            })
        }));
        let r = q.submit_with(
            &mmio,
            3,
            |i| if i == 1 { [0x07, 0] } else { [0x1A, 0] },
            true,
        );
        assert!(matches!(
            r,
            Err(Error::CommandError {
                error: CmdqError::Illegal,
                opcode: 0x07,
                ..
            })
        ));
        assert_eq!(mmio.active_gerrors(), 0);
        let before = mmio.reads();
        q.submit_with(&mmio, 2, |_| [0x1A, 0], true).unwrap();
        assert_eq!(mmio.reads() - before, 1);
    }

    /// A command error an interrupt handler left to the lock holder is
    /// recovered before the holder returns, even when its SYNC completed.
    #[test]
    fn a_hinted_error_is_recovered_by_the_submitter() {
        let regs = FakeRegs::new();
        regs.respond();
        regs.set32(0x24, 1 << 3);
        let mmio = regs.mmio();
        let mut q = queue(4);
        regs.set64(0x90, q.base_register());
        q.submit_with(&mmio, 1, |_| [0x1A, 0], true).unwrap();
        // Some error is raised and a handler could not take the lock.
        regs.set32(GERROR, regs.get32(GERROR) ^ 1);
        mmio.hint_cmdq_error(regs.get32(GERROR));
        assert!(q.submit_with(&mmio, 1, |_| [0x1A, 0], true).is_err());
        assert_eq!(mmio.active_gerrors(), 0);
    }

    /// Issue 12: an error whose GERROR value an interrupt handler already
    /// read, with CONS read after it, is recovered without another register
    /// read; the same (now stale) hint again finds nothing to do.
    #[test]
    fn a_seen_error_is_recovered_without_reading_registers() {
        let regs = FakeRegs::new();
        let mmio = regs.mmio();
        let mut q = queue(4);
        regs.set32(GERROR, 1);
        let cons = 1 << 24; // CERROR_ILL at slot 0
        let before = mmio.reads();
        let _ = mmio.active_in(0); // GERRORN learnt once (one read)
        let learnt = mmio.reads();
        assert!(learnt - before <= 1);
        let fault = q.recover_seen(&mmio, Some(1), Some(cons)).unwrap();
        assert_eq!(fault.error, CmdqError::Illegal);
        assert_eq!(regs.get32(GERRORN), 1);
        assert_eq!(q.recover_seen(&mmio, Some(1), None), None);
        assert_eq!(mmio.reads(), learnt, "no GERROR or CONS read");
    }

    #[test]
    fn ack_leaves_other_errors_pending() {
        let regs = FakeRegs::new();
        let mmio = regs.mmio();
        let mut q = queue(4);
        regs.set32(CMDQ_CONS, 2 << 24); // CERROR_ABT: retry, no rewrite
        regs.set32(GERROR, 0b101); // CMDQ_ERR and EVENTQ_ABT_ERR
        let fault = q.recover(&mmio).unwrap();
        assert_eq!(fault.error, CmdqError::Abort);
        assert_eq!(q.stats().retries, 1);
        assert_eq!(regs.get32(GERRORN), 0b001);
        assert_eq!(mmio.active_gerrors(), 0b100);
    }
}
