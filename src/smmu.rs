//! The SMMU: probe, enable, disable, stream table entries, commands, events
//! and global errors.
//!
//! [`Smmu::new`] probes the ID registers and allocates the stream table and
//! queues; it does not touch the SMMU's state. [`Smmu::enable`] follows the
//! architecture's initialisation order with every step acknowledged and
//! bounded:
//!
//! 1. GBPA.ABORT = 1 (with UPDATE), so traffic is aborted, never bypassed,
//!    while the SMMU is off — including when taking over from firmware that
//!    left it enabled;
//! 2. CR0 = 0 and IRQ_CTRL = 0, each acknowledged;
//! 3. CR1 (table and queue attributes as the host maps that memory), CR2
//!    (RECINVSID, PTM), the stream table and queue base registers;
//! 4. CMDQEN; then CFGI_ALL + TLBI_NSNH_ALL (+ TLBI_EL2_ALL with HYP) + SYNC,
//!    since nothing cached before this point can be trusted;
//! 5. EVENTQEN, interrupt enables, and finally SMMUEN.
//!
//! Locks are taken in the order stream table -> command queue -> event queue.
//! Interrupt handlers only ever `try_lock`, so an interrupt taken while the
//! same CPU holds a lock cannot deadlock; the lock holder handles the
//! condition itself.
//!
//! # Events, quarantine and interrupt context
//!
//! [`Smmu::service`] (and [`Smmu::drain_events`]) copy at most
//! [`EVENT_CHUNK`] records at a time into an array on the stack, release
//! the event queue lock, and only then hand them to the callback; they
//! repeat until the queue is empty or one queue's worth of records
//! (2^`eventq_log2`) has been handed out in this call. Records still in the
//! queue then stay there for the next call ([`Drained::left_in_queue`]); an
//! overflow is reported by the call that first sees it. One caller drains
//! at a time (records arrive in order); a caller that finds another
//! draining returns `None` and the one draining goes round again.
//!
//! [`Smmu::quarantine`] aborts a StreamID and keeps it aborted until
//! [`Smmu::release`] (see `src/smmu/quarantine.rs`).
//!
//! What may run in interrupt context (it never waits for a lock; work it
//! cannot do because a lock is held is left to the holder, or to the next
//! call): [`Smmu::service`], [`Smmu::drain_events`], [`Smmu::handle_gerror`],
//! [`Smmu::quarantine`], [`Smmu::stats`], [`Smmu::state`],
//! [`Smmu::features`]. Everything else takes locks and must run in thread
//! context (or in an interrupt handler that can never interrupt a driver
//! call on its CPU). A `service` callback runs with no driver lock held:
//! called from thread context it may call any method; called from an
//! interrupt handler, only the ones above.

use core::fmt;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use spin::Mutex;
use tock_registers::LocalRegisterCopy;
use tock_registers::interfaces::Readable;

use crate::cmd::Command;
use crate::cmdq::{CmdqFault, CmdqStats, CommandQueue};
use crate::domain::Domains;
use crate::error::{Error, Field, Invalid, Result, Unsupported, Wait};
use crate::event::Event;
use crate::eventq::{Drained, EventQueue};
use crate::features::{Features, IdRegs};
use crate::hal::{Hal, wait_for};
use crate::mmio::Mmio;
use crate::regs::{CR0, CR1, CR2, GBPA, GERROR, IRQ_CFG0, IRQ_CFG2, IRQ_CTRL};
use crate::ste::{Ste, SteConfig, UpdateStep, plan_update};
use crate::strtab::{self, Format, StreamTable};

mod config;
mod enable;
mod quarantine;
mod service;
mod ste_writes;

pub use config::{
    Config, GerrorReport, MSI_MEMATTR_DEVICE_NGNRE, MsiConfig, MsiTarget, State, Stats,
    StreamTableChoice, WalkAttributes,
};
pub use quarantine::{MAX_PENDING_QUARANTINES, MAX_QUARANTINED, Quarantine};
pub use service::{MAX_PENDING_RESUMES, StallResponse};

/// Event records [`Smmu::service`] copies out of the queue per round and
/// hands to its callback with the queue unlocked (an array of this many
/// 32-byte records lives on the stack meanwhile).
pub const EVENT_CHUNK: usize = 16;

#[derive(Debug, Default)]
struct Counters {
    /// A copy of the command queue's counters, refreshed by every path that
    /// holds its lock, so that reading statistics never takes that lock (an
    /// interrupt handler finding it taken would have to defer its work).
    cmdq: [AtomicU64; 5],
    events: AtomicU64,
    eventq_overflows: AtomicU64,
    eventq_aborts: AtomicU64,
    msi_aborts: AtomicU64,
    gerrors: AtomicU64,
}

impl Counters {
    fn store_cmdq(&self, s: CmdqStats) {
        for (a, v) in
            self.cmdq
                .iter()
                .zip([s.commands, s.syncs, s.prod_writes, s.errors, s.retries])
        {
            a.store(v, Ordering::Relaxed);
        }
    }

    fn load_cmdq(&self) -> CmdqStats {
        let [commands, syncs, prod_writes, errors, retries] =
            self.cmdq.each_ref().map(|a| a.load(Ordering::Relaxed));
        CmdqStats {
            commands,
            syncs,
            prod_writes,
            errors,
            retries,
        }
    }
}

/// An SMMUv3 instance.
#[derive(Debug)]
pub struct Smmu<H: Hal> {
    mmio: Mmio,
    features: Features,
    config: Config,
    state: AtomicU8,
    /// GBPA.ABORT = 1 was written by this driver and acknowledged: only
    /// this driver writes GBPA (`new`'s contract), so it is still set and
    /// `disable` need not read or write GBPA again.
    gbpa_abort: AtomicBool,
    // Memory the SMMU reads: dropped explicitly, only once it is stopped.
    strtab: ManuallyDrop<Mutex<StreamTable<H>>>,
    cmdq: ManuallyDrop<Mutex<CommandQueue<H>>>,
    evtq: ManuallyDrop<Mutex<EventQueue<H>>>,
    pub(crate) domains: ManuallyDrop<Mutex<Domains<H>>>,
    /// Declared isolation groups (src/group.rs); taken before `domains`.
    pub(crate) groups: Mutex<crate::group::GroupTable>,
    counters: Counters,
    /// StreamIDs the stream table covers (fixed at `new`; read without a lock).
    sid_limit: u64,
    /// Records the event queue holds (the bound on one `service` call).
    eventq_entries: u32,
    /// Someone is draining the event queue.
    draining: AtomicBool,
    /// A drain was refused while `draining`: the drainer goes round again.
    drain_again: AtomicBool,
    /// Quarantined StreamIDs (src/smmu/quarantine.rs): locked only while
    /// the stream table lock is held, so it is never contended.
    /// Boxed: 64 STEs inline would make `Smmu` several KiB, copied on
    /// the caller's stack at every move in unoptimised builds.
    quarantined: Mutex<alloc::boxed::Box<quarantine::Table>>,
    /// Quarantines asked for while the stream table or command queue was
    /// busy (lock-free, for interrupt context).
    pending: quarantine::Pending,
    /// CMD_RESUMEs for stall events, parked while the command queue was
    /// busy (src/smmu/service.rs).
    resumes: service::PendingResumes,
}

/// Checks MSI targets against what the SMMU can do.
fn check_msi(features: &Features, msi: &MsiConfig) -> Result<()> {
    for t in [msi.gerror, msi.eventq].into_iter().flatten() {
        if !features.msi {
            return Err(Error::Unsupported(Unsupported::Msi));
        }
        if t.doorbell == 0 {
            return Err(Error::Invalid(Invalid::MsiDoorbell));
        }
        if t.doorbell % 4 != 0 {
            return Err(Error::Misaligned {
                addr: t.doorbell,
                align: 4,
            });
        }
        if t.doorbell >> features.oas_bits != 0 {
            return Err(Error::Unsupported(Unsupported::AddressSize));
        }
        if t.memattr > 0xF {
            return Err(Error::Invalid(Invalid::Field {
                field: Field::MsiMemAttr,
                value: u64::from(t.memattr),
            }));
        }
        if t.sh == 1 || t.sh > 3 {
            return Err(Error::Invalid(Invalid::Field {
                field: Field::MsiSh,
                value: u64::from(t.sh),
            }));
        }
    }
    Ok(())
}

/// Reads the ID registers into typed features.
pub(crate) fn probe(mmio: &Mmio) -> Result<Features> {
    let p0 = mmio.p0();
    Features::from_id_regs(&IdRegs {
        idr0: p0.idr0.get(),
        idr1: p0.idr1.get(),
        idr3: p0.idr3.get(),
        idr5: p0.idr5.get(),
        iidr: p0.iidr.get(),
        aidr: p0.aidr.get(),
    })
}

impl<H: Hal> Smmu<H> {
    /// Probes the SMMU at `base` and allocates its stream table and queues.
    /// The SMMU itself is not reprogrammed until [`Smmu::enable`].
    ///
    /// Errors: what [`Features::from_id_regs`] refuses;
    /// [`Unsupported::AddressSize`] when the HAL's memory for the stream
    /// table or a queue lies above 2^OAS (IDR5.OAS), where the SMMU cannot
    /// reach it (the base registers do not hold address bits above OAS);
    /// [`Error::NoMemory`] and the HAL errors of [`crate::Dma::new`].
    ///
    /// # Safety
    ///
    /// `base` is the virtual address of the SMMU's register pages 0 and 1
    /// (128 KiB, device memory), valid for the life of the returned value,
    /// and nothing else programs this SMMU meanwhile.
    ///
    /// # Example
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// use smmuv3::testing::{HostHal, SmmuModel};
    /// use smmuv3::{Config, Smmu, State, StreamTableChoice};
    ///
    /// let model = SmmuModel::builder().sid_bits(20).build();
    /// let config = Config { stream_table: StreamTableChoice::TwoLevel, ..Config::default() };
    /// // SAFETY: the model's register block outlives `smmu` (declared
    /// // after it) and nothing else programs it.
    /// let smmu = unsafe { Smmu::<HostHal>::new(model.base(), config) }?;
    /// assert_eq!(smmu.state(), State::Disabled); // nothing written yet
    /// assert_eq!(smmu.sid_limit(), 1 << 20);
    /// assert!(smmu.features().stage2);
    /// # Ok::<(), smmuv3::Error>(())
    /// ```
    pub unsafe fn new(base: NonNull<u8>, config: Config) -> Result<Self> {
        // SAFETY: forwarded from the caller.
        let mmio = unsafe { Mmio::new(base) };
        let mut features = probe(&mmio)?;
        if let Some(fw) = config.firmware_coherent {
            if fw != features.coherent {
                log::warn!(
                    "SMMU: firmware says {}coherent, IDR0.COHACC says {}: following the firmware",
                    if fw { "" } else { "non-" },
                    features.coherent
                );
            }
            features.coherent = fw;
        }
        if let Some(msi) = &config.msi {
            check_msi(&features, msi)?;
        }
        let coherent = features.coherent;
        let sid_bits = u32::from(features.sid_bits);
        let format = match config.stream_table {
            StreamTableChoice::Auto if features.two_level_strtab && sid_bits > strtab::SPLIT => {
                Format::TwoLevel
            }
            StreamTableChoice::Auto | StreamTableChoice::Linear => Format::Linear,
            StreamTableChoice::TwoLevel if features.two_level_strtab => Format::TwoLevel,
            StreamTableChoice::TwoLevel => {
                return Err(Error::Unsupported(Unsupported::TwoLevelStreamTable));
            }
        };
        let sid_bits = match format {
            Format::Linear => sid_bits.min(strtab::MAX_LINEAR_SID_BITS),
            Format::TwoLevel => sid_bits.min(strtab::MAX_TWO_LEVEL_SID_BITS),
        };
        // Tables and queues the SMMU cannot reach (above 2^OAS) are refused:
        // the SMMU would fetch from another address.
        let oas_bits = u32::from(features.oas_bits);
        let strtab = StreamTable::new(format, sid_bits, coherent)?.with_output_size(oas_bits)?;
        let sync = Command::sync().encode();
        // An SMMU with smaller queues than asked for gets the largest it has.
        let cmdq_max = u32::from(features.cmdq_max_log2);
        let eventq_max = u32::from(features.eventq_max_log2);
        let cmdq = CommandQueue::new(
            config.cmdq_log2.min(cmdq_max),
            cmdq_max,
            coherent,
            sync,
            config.timeout_ns,
        )?
        .with_max_per_sync(features.max_commands_per_sync());
        let evtq = EventQueue::new(config.eventq_log2.min(eventq_max), eventq_max, coherent)?;
        let oa_limit = 1u64 << oas_bits;
        if !strtab::reachable(cmdq.paddr(), cmdq.bytes(), oa_limit)
            || !strtab::reachable(evtq.paddr(), evtq.bytes(), oa_limit)
        {
            return Err(Error::Unsupported(Unsupported::AddressSize));
        }
        let (sid_limit, eventq_entries) = (strtab.limit(), evtq.ring().entries());
        let domains = Domains::new(u32::from(features.vmid_bits), u32::from(features.asid_bits))?;
        Ok(Self {
            mmio,
            features,
            config,
            state: AtomicU8::new(State::Disabled as u8),
            gbpa_abort: AtomicBool::new(false),
            strtab: ManuallyDrop::new(Mutex::new(strtab)),
            cmdq: ManuallyDrop::new(Mutex::new(cmdq)),
            evtq: ManuallyDrop::new(Mutex::new(evtq)),
            domains: ManuallyDrop::new(Mutex::new(domains)),
            groups: Mutex::new(crate::group::GroupTable::default()),
            counters: Counters::default(),
            sid_limit,
            eventq_entries,
            draining: AtomicBool::new(false),
            drain_again: AtomicBool::new(false),
            quarantined: Mutex::new(crate::fallible::try_box(quarantine::Table::default())?),
            pending: quarantine::Pending::default(),
            resumes: service::PendingResumes::default(),
        })
    }

    /// What the SMMU can do.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// The memory attributes the SMMU's table walks use, as the STE
    /// (S2IR0/S2OR0/S2SH0) and CD (IR0/OR0/SH0) encode them: Write-Back,
    /// Inner Shareable for a coherent SMMU; Non-cacheable, Outer Shareable
    /// (matching CR1) for one that is not. Use them for any CD built for
    /// this SMMU.
    pub fn walk_attributes(&self) -> WalkAttributes {
        WalkAttributes::for_coherency(self.features.coherent)
    }

    /// The configuration it was created with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Current driver state.
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Disabled,
            1 => State::CommandsOnly,
            2 => State::Enabled,
            _ => State::Failed,
        }
    }

    fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
    }

    fn commands_live(&self) -> bool {
        matches!(self.state(), State::CommandsOnly | State::Enabled)
    }

    /// True when the SMMU consumes commands (so cached state must be
    /// invalidated after changes).
    pub(crate) fn is_live(&self) -> bool {
        self.commands_live()
    }

    /// Checks that `sid` has an entry in the stream table.
    pub fn check_sid(&self, sid: u32) -> Result<()> {
        self.strtab.lock().check_sid(sid)
    }

    /// The register pages, for diagnostics and tests (an expert call).
    ///
    /// # Safety
    ///
    /// The caller only reads registers through the returned value, except
    /// writes it knows the driver tolerates (acknowledging a GERROR bit the
    /// driver reports anyway): any other register write can break the
    /// driver's state machine.
    pub unsafe fn registers(&self) -> &Mmio {
        &self.mmio
    }

    /// Submits `cmds` as one batch followed by one CMD_SYNC, and waits for
    /// the SYNC.
    pub(crate) fn submit(&self, cmds: &[Command]) -> Result<()> {
        self.submit_batch(cmds, true)
    }

    /// Submits raw commands ([`crate::expert::Command`]) as one batch
    /// followed by one CMD_SYNC, and waits for the SYNC. An expert call, for
    /// diagnostics and fault injection: the driver's own calls issue every
    /// invalidation they need.
    ///
    /// # Safety
    ///
    /// No command may make the SMMU write memory the caller does not own
    /// (a CMD_SYNC whose completion signal is an MSI write names an
    /// address) or answer for a device behind the driver's back (stall
    /// resume, PRI responses). Invalidations (CFGI_*, TLBI_*) and prefetches
    /// only make the SMMU re-read what the driver wrote, and are fine. A
    /// command the SMMU rejects is reported ([`Error::CommandError`]) and
    /// skipped, as the driver's recovery does for its own.
    pub unsafe fn submit_unchecked(&self, cmds: &[Command]) -> Result<()> {
        self.submit_batch(cmds, true)
    }

    /// Like [`Smmu::submit_unchecked`]; with `sync`, appends a CMD_SYNC and
    /// waits, without it returns once the commands are published.
    ///
    /// # Safety
    ///
    /// As for [`Smmu::submit_unchecked`].
    pub unsafe fn submit_batch_unchecked(&self, cmds: &[Command], sync: bool) -> Result<()> {
        self.submit_batch(cmds, sync)
    }

    /// Submits `cmds` as one batch; with `sync`, appends a CMD_SYNC and waits.
    pub(crate) fn submit_batch(&self, cmds: &[Command], sync: bool) -> Result<()> {
        if !self.commands_live() {
            return Err(Error::NotEnabled);
        }
        self.with_cmdq(|q| q.submit_with(&self.mmio, cmds.len(), |i| cmds[i].encode(), sync))
    }

    /// Submits the `count` commands `command(0..count)` as one batch; with
    /// `sync`, appends a CMD_SYNC and waits. Allocates nothing: the
    /// invalidation after a change goes out even when memory ran out.
    pub(crate) fn submit_generated(
        &self,
        count: usize,
        command: impl Fn(usize) -> Command,
        sync: bool,
    ) -> Result<()> {
        if !self.commands_live() {
            return Err(Error::NotEnabled);
        }
        self.with_cmdq(|q| q.submit_with(&self.mmio, count, |i| command(i).encode(), sync))
    }

    /// Submits the commands of `plan` and one CMD_SYNC, and waits for it
    /// (allocates nothing).
    pub(crate) fn submit_plan(&self, plan: &crate::cmd::RangePlan) -> Result<()> {
        self.submit_generated(plan.len(), |i| plan.get(i), true)
    }

    /// Runs `f` on the locked command queue, then refreshes the lock-free
    /// copy of its counters.
    /// Parked CMD_RESUMEs (stall events answered while the queue was
    /// busy) go out before it is let go.
    fn with_cmdq<R>(&self, f: impl FnOnce(&mut CommandQueue<H>) -> R) -> R {
        let mut q = self.cmdq.lock();
        let r = f(&mut q);
        if self.resumes.any() {
            self.flush_resumes_locked(&mut q, &[]);
        }
        self.counters.store_cmdq(q.stats());
        r
    }
}

impl<H: Hal> Drop for Smmu<H> {
    /// Stops the SMMU before its tables and queues are freed: memory the
    /// hardware may still read must not be handed back while it is live. If
    /// the SMMU does not acknowledge the disable, the memory is leaked
    /// rather than reused under a possibly live SMMU.
    fn drop(&mut self) {
        if self.state() != State::Disabled
            && let Err(e) = self.disable()
        {
            log::error!("SMMU did not stop on drop ({e}): leaking its tables and queues");
            return;
        }
        // SAFETY: each field is dropped exactly once, here, and never used
        // again: `self` is being dropped.
        unsafe {
            ManuallyDrop::drop(&mut self.domains);
            ManuallyDrop::drop(&mut self.evtq);
            ManuallyDrop::drop(&mut self.cmdq);
            ManuallyDrop::drop(&mut self.strtab);
        }
    }
}

#[cfg(test)]
#[path = "smmu/events_tests.rs"]
mod events_tests;

#[cfg(test)]
mod tests;

#[cfg(test)]
#[path = "smmu/stall_tests.rs"]
mod stall_tests;
