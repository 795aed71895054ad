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

mod quarantine;

pub use quarantine::{MAX_PENDING_QUARANTINES, MAX_QUARANTINED, Quarantine};

/// Event records [`Smmu::service`] copies out of the queue per round and
/// hands to its callback with the queue unlocked (an array of this many
/// 32-byte records lives on the stack meanwhile).
pub const EVENT_CHUNK: usize = 16;

/// How the stream table is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamTableChoice {
    /// Two-level when the SMMU supports it and SIDSIZE > 8, else linear.
    Auto,
    /// Linear (covering at most 2^16 StreamIDs).
    Linear,
    /// Two-level with SPLIT = 8 (an error if the SMMU lacks it).
    TwoLevel,
}

/// Where the SMMU signals one of its interrupts as a message-signalled
/// interrupt (a 32-bit write of `data` to `doorbell`), for SMMUs with
/// IDR0.MSI. The doorbell is typically a GIC ITS `GITS_TRANSLATER` or a
/// GICv3 `GICD_SETSPI_NSR` register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiTarget {
    /// Physical address of the doorbell register: 4-byte aligned, below
    /// 2^OAS, non-zero (0 means "no MSI, use the wired interrupt").
    pub doorbell: u64,
    /// The 32-bit payload written to it.
    pub data: u32,
    /// Memory attributes of the write (IRQ_CFG2.MemAttr, the
    /// VMSAv8-64 MemAttr encoding; 0b0001 = Device-nGnRE is usual for a
    /// doorbell register).
    pub memattr: u8,
    /// Shareability of the write (IRQ_CFG2.SH: 0 non-, 2 outer, 3 inner
    /// shareable; ignored for Device memory).
    pub sh: u8,
}

impl MsiTarget {
    /// A doorbell in Device-nGnRE memory.
    pub const fn device(doorbell: u64, data: u32) -> MsiTarget {
        MsiTarget {
            doorbell,
            data,
            memattr: MSI_MEMATTR_DEVICE_NGNRE,
            sh: 0,
        }
    }
}

/// IRQ_CFG2.MemAttr encoding of Device-nGnRE.
pub const MSI_MEMATTR_DEVICE_NGNRE: u8 = 0b0001;

/// Message-signalled interrupts per interrupt source. A source left `None`
/// uses its wired interrupt (its IRQ_CFG0 is written with 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiConfig {
    /// Global errors (GERROR_IRQ_CFG0..2).
    pub gerror: Option<MsiTarget>,
    /// Event queue (EVENTQ_IRQ_CFG0..2).
    pub eventq: Option<MsiTarget>,
}

/// Driver configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Stream table format.
    pub stream_table: StreamTableChoice,
    /// log2 of the command queue's entries; clamped to the SMMU's maximum
    /// (IDR1.CMDQS).
    pub cmdq_log2: u32,
    /// log2 of the event queue's entries; clamped to the SMMU's maximum
    /// (IDR1.EVENTQS). A faulting DMA can produce many records (QEMU
    /// writes one per 4 bytes), so be generous.
    pub eventq_log2: u32,
    /// Bound on every wait, in nanoseconds of the HAL clock.
    pub timeout_ns: u64,
    /// Enable the event queue and global error interrupts (IRQ_CTRL).
    pub interrupts: bool,
    /// Whether the SMMU's memory accesses are IO-coherent, as the firmware
    /// describes the integration: the device tree's `dma-coherent`
    /// property, or the IORT node's CCA (cache coherency attribute). It
    /// overrides IDR0.COHACC, which only says what the SMMU itself can do,
    /// not whether the interconnect delivers it; a disagreement is logged
    /// as a warning. `None` trusts IDR0.COHACC.
    pub firmware_coherent: Option<bool>,
    /// Message-signalled interrupts (needs IDR0.MSI). `None`: every
    /// interrupt is wired, and every IRQ_CFG0 is written with 0.
    pub msi: Option<MsiConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stream_table: StreamTableChoice::Auto,
            cmdq_log2: 8,
            eventq_log2: 11,
            timeout_ns: 1_000_000_000,
            interrupts: true,
            firmware_coherent: None,
            msi: None,
        }
    }
}

/// Cacheability and shareability of table walks, in the 2-bit STE/CD
/// encodings (cacheability: 0 Non-cacheable, 1 Write-Back write-allocate;
/// shareability: 2 Outer, 3 Inner Shareable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkAttributes {
    /// Inner cacheability (S2IR0 / IR0).
    pub inner: u8,
    /// Outer cacheability (S2OR0 / OR0).
    pub outer: u8,
    /// Shareability (S2SH0 / SH0).
    pub shareability: u8,
}

impl WalkAttributes {
    /// The attributes matching CR1 for a coherent or non-coherent SMMU.
    pub const fn for_coherency(coherent: bool) -> WalkAttributes {
        if coherent {
            WalkAttributes {
                inner: 1,
                outer: 1,
                shareability: 3,
            }
        } else {
            WalkAttributes {
                inner: 0,
                outer: 0,
                shareability: 2,
            }
        }
    }
}

/// Driver state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// SMMUEN = 0; traffic aborted by GBPA.
    Disabled = 0,
    /// Command queue on, translation not yet enabled (during `enable`).
    CommandsOnly = 1,
    /// Translating.
    Enabled = 2,
    /// Stopped after a service failure (SFM_ERR).
    Failed = 3,
}

/// Deterministic counters of the driver's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Command queue counters.
    pub cmdq: CmdqStats,
    /// Every MMIO register write so far.
    pub mmio_writes: u64,
    /// MMIO reads on the driver's hot paths (command completion, global
    /// errors, event queue): see [`crate::mmio::Mmio::read32`].
    pub mmio_reads: u64,
    /// Event records drained.
    pub events: u64,
    /// Event queue overflows seen (PROD.OVFLG).
    pub eventq_overflows: u64,
    /// Event queue aborts seen (GERROR.EVENTQ_ABT_ERR): records were lost.
    pub eventq_aborts: u64,
    /// MSI write aborts seen (GERROR.MSI_*_ABT_ERR).
    pub msi_aborts: u64,
    /// Global errors acknowledged.
    pub gerrors: u64,
}

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

/// What [`Smmu::handle_gerror`] found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GerrorReport {
    /// The active GERROR bits when the handler ran.
    pub active: u32,
    /// A command error it recovered from.
    pub cmdq_fault: Option<CmdqFault>,
    /// The command queue had an error but its lock was held: the submitter
    /// recovers it while waiting.
    pub cmdq_deferred: bool,
    /// Records were lost to a full event queue.
    pub eventq_abort: bool,
    /// MSI writes aborted.
    pub msi_abort: bool,
    /// The SMMU entered service failure mode and was disabled.
    pub service_failure: bool,
}

impl fmt::Display for GerrorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GERROR active {:#x}:", self.active)?;
        if let Some(c) = self.cmdq_fault {
            write!(
                f,
                " command error {} at {:#x} (command {:#018x} {:#018x})",
                c.error, c.position, c.entry[0], c.entry[1]
            )?;
        }
        if self.cmdq_deferred {
            write!(f, " command error (left to the submitter)")?;
        }
        if self.eventq_abort {
            write!(f, " event queue abort (records lost)")?;
        }
        if self.msi_abort {
            write!(f, " MSI abort")?;
        }
        if self.service_failure {
            write!(f, " SERVICE FAILURE (SMMU disabled)")?;
        }
        Ok(())
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
    quarantined: Mutex<quarantine::Table>,
    /// Quarantines asked for while the stream table or command queue was
    /// busy (lock-free, for interrupt context).
    pending: quarantine::Pending,
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
        let strtab = StreamTable::new(format, sid_bits, coherent)?;
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
            quarantined: Mutex::new(quarantine::Table::default()),
            pending: quarantine::Pending::default(),
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

    /// Writes CR0 and waits for CR0ACK to match.
    fn write_cr0(&self, value: u32) -> Result<()> {
        let p0 = self.mmio.p0();
        self.mmio.write32(&p0.cr0, value);
        wait_for::<H>(Wait::Cr0Ack, self.config.timeout_ns, || {
            p0.cr0ack.get() == value
        })
    }

    /// Writes IRQ_CTRL and waits for IRQ_CTRLACK to match.
    fn write_irq_ctrl(&self, value: u32) -> Result<()> {
        let p0 = self.mmio.p0();
        self.mmio.write32(&p0.irq_ctrl, value);
        wait_for::<H>(Wait::IrqCtrlAck, self.config.timeout_ns, || {
            p0.irq_ctrlack.get() == value
        })
    }

    /// Writes GERROR_IRQ_CFG0..2 and EVENTQ_IRQ_CFG0..2 (and PRIQ_IRQ_CFG0..2
    /// when the SMMU has a PRI queue): the configured MSI targets, else 0
    /// (address 0 = no MSI, the wired interrupt is used). Only valid while
    /// IRQ_CTRL = 0. The 64-bit CFG0 registers are written as two 32-bit
    /// halves.
    fn write_irq_cfg(&self) {
        let p0 = self.mmio.p0();
        let msi = self.config.msi.unwrap_or_default();
        let program = |cfg0, cfg1, cfg2, target: Option<MsiTarget>| {
            let t = target.unwrap_or(MsiTarget {
                doorbell: 0,
                data: 0,
                memattr: 0,
                sh: 0,
            });
            let addr = IRQ_CFG0::ADDR.val(t.doorbell >> IRQ_CFG0::ADDR.shift);
            self.mmio.write64_halves(cfg0, addr.value);
            self.mmio.write32(cfg1, t.data);
            let attr =
                IRQ_CFG2::MEMATTR.val(u32::from(t.memattr)) + IRQ_CFG2::SH.val(u32::from(t.sh));
            self.mmio.write32(cfg2, attr.value);
        };
        program(
            &p0.gerror_irq_cfg0,
            &p0.gerror_irq_cfg1,
            &p0.gerror_irq_cfg2,
            msi.gerror,
        );
        program(
            &p0.eventq_irq_cfg0,
            &p0.eventq_irq_cfg1,
            &p0.eventq_irq_cfg2,
            msi.eventq,
        );
        if self.features.pri {
            program(
                &p0.priq_irq_cfg0,
                &p0.priq_irq_cfg1,
                &p0.priq_irq_cfg2,
                None,
            );
        }
    }

    /// Sets GBPA.ABORT so that traffic is aborted whenever SMMUEN = 0.
    fn abort_bypass(&self) -> Result<()> {
        let p0 = self.mmio.p0();
        let t = self.config.timeout_ns;
        // The read that sees UPDATE clear is also the value to modify.
        let mut gbpa = p0.gbpa.extract();
        wait_for::<H>(Wait::GbpaUpdate, t, || {
            gbpa = p0.gbpa.extract();
            !gbpa.is_set(GBPA::UPDATE)
        })?;
        gbpa.modify(GBPA::ABORT::SET + GBPA::UPDATE::SET);
        self.mmio.write32(&p0.gbpa, gbpa.get());
        wait_for::<H>(Wait::GbpaUpdate, t, || !p0.gbpa.is_set(GBPA::UPDATE))?;
        self.gbpa_abort.store(true, Ordering::Release);
        Ok(())
    }

    /// Takes the SMMU into the translating state: see the module docs for
    /// the order. May be called again after [`Smmu::disable`]; the stream
    /// table keeps its entries.
    pub fn enable(&self) -> Result<()> {
        let strtab = self.strtab.lock();
        let mut cmdq = self.cmdq.lock();
        let mut evtq = self.evtq.lock();
        let p0 = self.mmio.p0();
        let p1 = self.mmio.p1();
        if p0.cr0.is_set(CR0::SMMUEN) {
            log::warn!("SMMU already enabled (by firmware or a previous owner): taking over");
        }
        self.abort_bypass()?;
        self.set_state(State::Disabled);
        // With ATS, every CR0 value this sequence writes has ATSCHK set:
        // ATS-Translated transactions are then checked against the stream
        // table (their STE must allow ATS, and EATS is 0 in every STE this
        // driver writes) instead of bypassing it.
        let atschk = if self.features.ats {
            CR0::ATSCHK::SET.value
        } else {
            0
        };
        self.write_cr0(atschk)?;
        self.write_irq_ctrl(0)?;
        // The MSI address registers reset to UNKNOWN (or hold a previous
        // owner's doorbell): program every one while IRQ_CTRL = 0.
        self.write_irq_cfg();

        let mut cr1 = LocalRegisterCopy::<u32, CR1::Register>::new(0);
        if self.features.coherent {
            cr1.modify(
                CR1::TABLE_SH::Inner
                    + CR1::TABLE_OC::WriteBack
                    + CR1::TABLE_IC::WriteBack
                    + CR1::QUEUE_SH::Inner
                    + CR1::QUEUE_OC::WriteBack
                    + CR1::QUEUE_IC::WriteBack,
            );
        } else {
            // A non-coherent SMMU reads tables and queues from memory; the
            // HAL cleans caches before every publish.
            cr1.modify(
                CR1::TABLE_SH::Outer
                    + CR1::TABLE_OC::NonCacheable
                    + CR1::TABLE_IC::NonCacheable
                    + CR1::QUEUE_SH::Outer
                    + CR1::QUEUE_OC::NonCacheable
                    + CR1::QUEUE_IC::NonCacheable,
            );
        }
        self.mmio.write32(&p0.cr1, cr1.get());
        // RECINVSID: report transactions with out-of-range StreamIDs. PTM:
        // this driver never relies on broadcast TLB maintenance. E2H stays 0:
        // the driver does not configure EL2 (StreamWorld EL2-E2H) streams.
        let mut cr2 = LocalRegisterCopy::<u32, CR2::Register>::new(0);
        cr2.modify(CR2::RECINVSID::SET + CR2::PTM::SET);
        self.mmio.write32(&p0.cr2, cr2.get());

        self.mmio.write64(&p0.strtab_base, strtab.base_register());
        self.mmio
            .write32(&p0.strtab_base_cfg, strtab.base_cfg_register());
        self.mmio.write64(&p0.cmdq_base, cmdq.base_register());
        self.mmio.write32(&p0.cmdq_prod, 0);
        self.mmio.write32(&p0.cmdq_cons, 0);
        cmdq.reset();
        self.mmio.write64(&p0.eventq_base, evtq.base_register());
        self.mmio.write32(&p1.eventq_prod, 0);
        self.mmio.write32(&p1.eventq_cons, 0);
        evtq.reset();
        // Errors left from before this enable are stale: acknowledge them
        // (reading GERRORN afresh: a previous owner may have written it).
        self.mmio.resync_gerrorn();
        self.mmio.ack_gerrors(u32::MAX);

        let cmdqen = atschk | CR0::CMDQEN::SET.value;
        self.write_cr0(cmdqen)?;
        self.set_state(State::CommandsOnly);
        let cmds = [
            Command::cfgi_all(),
            Command::TlbiNsnhAll,
            Command::TlbiEl2All,
        ];
        let n = if self.features.hyp { 3 } else { 2 };
        let submitted = cmdq.submit_with(&self.mmio, n, |i| cmds[i].encode(), true);
        self.counters.store_cmdq(cmdq.stats());
        submitted?;

        let eventqen = cmdqen | CR0::EVENTQEN::SET.value;
        self.write_cr0(eventqen)?;
        if self.config.interrupts {
            self.write_irq_ctrl((IRQ_CTRL::GERROR_IRQEN::SET + IRQ_CTRL::EVENTQ_IRQEN::SET).value)?;
        }
        self.write_cr0(eventqen | CR0::SMMUEN::SET.value)?;
        self.set_state(State::Enabled);
        drop((strtab, cmdq, evtq));
        Ok(())
    }

    /// Stops translation and returns the SMMU to aborting all traffic
    /// (GBPA.ABORT = 1, CR0 = 0). Stream table contents are kept.
    pub fn disable(&self) -> Result<()> {
        let _strtab = self.strtab.lock();
        let _cmdq = self.cmdq.lock();
        let _evtq = self.evtq.lock();
        // `enable` set GBPA.ABORT and saw it take effect; only this driver
        // writes GBPA, so it holds: no GBPA read or write is needed.
        if !self.gbpa_abort.load(Ordering::Acquire) {
            self.abort_bypass()?;
        }
        self.write_irq_ctrl(0)?;
        self.write_cr0(0)?;
        self.set_state(State::Disabled);
        Ok(())
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
    fn with_cmdq<R>(&self, f: impl FnOnce(&mut CommandQueue<H>) -> R) -> R {
        let mut q = self.cmdq.lock();
        let r = f(&mut q);
        self.counters.store_cmdq(q.stats());
        r
    }

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
        let mut strtab = self.strtab.lock();
        self.apply_pending_quarantines(&mut strtab, &mut |c| self.submit_locked(c));
        let r = match self.quarantined.lock().redirect(sid, target) {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.write_ste_with(&mut strtab, sid, target, &mut |c| self.submit_locked(c))
            }
            Err(e) => Err(e),
        };
        // Quarantines asked for (from an interrupt) while this call held the
        // stream table.
        self.apply_pending_quarantines(&mut strtab, &mut |c| self.submit_locked(c));
        r
    }

    /// [`Smmu::write_ste`] with the stream table locked by the caller and
    /// commands submitted through `submit` (which appends a CMD_SYNC and
    /// waits), without the quarantine check.
    fn write_ste_with(
        &self,
        strtab: &mut StreamTable<H>,
        sid: u32,
        target: &Ste,
        submit: &mut dyn FnMut(&[Command]) -> Result<()>,
    ) -> Result<()> {
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
        for step in plan_update(&current, target)?.iter().copied() {
            match step {
                UpdateStep::Write { dword, value } => strtab.write_dword(sid, dword, value)?,
                UpdateStep::Publish => strtab.publish(sid)?,
                UpdateStep::Sync => {
                    if self.commands_live() {
                        submit(&[Command::CfgiSte { sid, leaf: true }])?;
                    }
                }
            }
        }
        Ok(())
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

    fn write_stes_locked(&self, strtab: &mut StreamTable<H>, updates: &[(u32, Ste)]) -> Result<()> {
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

    fn write_stes_unchecked(
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
        for &(sid, target) in updates {
            plans.push((sid, plan_update(&Ste(strtab.read(sid)?), &target)?, 0usize));
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
                return Ok(());
            }
            if live {
                self.submit_locked(&cfgis)?;
            }
        }
    }

    /// Submits with the caller already holding the stream table lock.
    fn submit_locked(&self, cmds: &[Command]) -> Result<()> {
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
    fn write_unmanaged_ste(&self, sid: u32, ste: &Ste) -> Result<()> {
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

    /// Decodes and hands pending events to `each`, oldest first, in chunks
    /// of at most [`EVENT_CHUNK`] records copied out of the queue with its
    /// lock held and handed out with no driver lock held (so `each` may
    /// call any method: see the module docs for interrupt context). Stops
    /// when the queue is empty or after one queue's worth of records
    /// (2^`eventq_log2`); records left then stay in the queue for the next
    /// call ([`Drained::left_in_queue`]).
    ///
    /// Returns what was drained; `None` if another CPU (or the interrupted
    /// code, or `each` itself, calling again) is draining: that caller goes
    /// round once more before it returns, so nothing is left behind, or
    /// if `enable`/`disable` holds the queue.
    pub fn drain_events(&self, mut each: impl FnMut(Event)) -> Option<Drained> {
        if self.draining.swap(true, Ordering::Acquire) {
            self.drain_again.store(true, Ordering::Release);
            return None;
        }
        let budget = self.eventq_entries;
        let mut total: Option<Drained> = None;
        'again: loop {
            self.drain_again.store(false, Ordering::Relaxed);
            loop {
                let done = total.map_or(0, |t| t.records);
                let max = (EVENT_CHUNK as u32).min(budget - done);
                if max == 0 {
                    break 'again;
                }
                let mut chunk = [[0u64; crate::eventq::EVT_DWORDS]; EVENT_CHUNK];
                let mut n = 0;
                let Some(mut evtq) = self.evtq.try_lock() else {
                    break 'again;
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
            // Someone was turned away meanwhile: their records may have
            // arrived after this call last read EVENTQ_PROD.
            if !self.drain_again.load(Ordering::Acquire) {
                break;
            }
        }
        self.draining.store(false, Ordering::Release);
        // Quarantines `each` asked for while a lock was held.
        self.try_apply_pending_quarantines();
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
mod tests {
    use super::*;
    use crate::fake::{FakeHal, FakeRegs, Trace, start_trace, take_trace};

    /// A fake register block that reads like QEMU virt's SMMU and never
    /// acknowledges anything.
    fn qemu_like() -> FakeRegs {
        let regs = FakeRegs::new();
        regs.set32(0x00, 0x0D44_101B); // IDR0
        regs.set32(0x04, 0x0273_0010); // IDR1
        regs.set32(0x0C, 0x0000_1404); // IDR3: RIL, BBML2, HAD
        regs.set32(0x14, 0x0000_0074); // IDR5
        regs.set32(0x1C, 0x0000_0001); // AIDR: v3.1
        regs
    }

    fn driver(regs: &FakeRegs) -> Smmu<FakeHal> {
        let config = Config {
            timeout_ns: 1_000_000,
            ..Config::default()
        };
        // SAFETY: the fake block is MMIO_SIZE bytes and outlives the driver.
        unsafe { Smmu::new(regs.base(), config) }.expect("probe")
    }

    #[test]
    fn probe_and_allocate_without_touching_the_smmu() {
        let regs = qemu_like();
        let smmu = driver(&regs);
        assert_eq!(smmu.stream_table_format(), Format::TwoLevel);
        assert_eq!(smmu.sid_limit(), 1 << 16);
        assert_eq!(smmu.mmio.writes(), 0);
        assert_eq!(smmu.state(), State::Disabled);
    }

    #[test]
    fn gbpa_that_never_updates_times_out() {
        let regs = qemu_like();
        let smmu = driver(&regs);
        assert_eq!(smmu.enable(), Err(Error::Timeout(Wait::GbpaUpdate)));
        assert_eq!(smmu.state(), State::Disabled);
        assert_eq!(smmu.disable(), Err(Error::Timeout(Wait::GbpaUpdate)));
    }

    #[test]
    fn cr0_and_irq_ctrl_that_never_acknowledge_time_out() {
        let regs = qemu_like();
        let smmu = driver(&regs);
        assert_eq!(
            smmu.write_cr0(CR0::CMDQEN::SET.value),
            Err(Error::Timeout(Wait::Cr0Ack))
        );
        assert_eq!(
            smmu.write_irq_ctrl(1),
            Err(Error::Timeout(Wait::IrqCtrlAck))
        );
        // Writing what the ACK register already holds completes at once.
        assert_eq!(smmu.write_cr0(0), Ok(()));
    }

    #[test]
    fn a_sync_nobody_consumes_times_out() {
        let regs = qemu_like();
        let smmu = driver(&regs);
        assert_eq!(smmu.submit(&[Command::TlbiNsnhAll]), Err(Error::NotEnabled));
        smmu.set_state(State::CommandsOnly);
        assert_eq!(
            smmu.submit(&[Command::TlbiNsnhAll]),
            Err(Error::Timeout(Wait::CmdSync))
        );
        assert_eq!(smmu.stats().cmdq.prod_writes, 1);
        // Not enabled: dropping must not try to leak or hang.
        smmu.set_state(State::Disabled);
    }

    #[test]
    fn undrivable_smmus_are_typed_errors() {
        for (idr0, idr1, expected) in [
            (0x0D44_1013, 0x0273_0010, Unsupported::NoAarch64Tables), // TTF = AArch32
            (0x0D64_101B, 0x0273_0010, Unsupported::BigEndianOnly),   // TTENDIAN = BE
            (0x0D44_1018, 0x0273_0010, Unsupported::NoTranslationStage),
            (0x0D44_101B, 0x4273_0010, Unsupported::PresetTables),
            (0x0D44_101B, 0x2273_0010, Unsupported::PresetQueues),
        ] {
            let regs = qemu_like();
            regs.set32(0x00, idr0);
            regs.set32(0x04, idr1);
            // SAFETY: as in `driver`.
            let r = unsafe { Smmu::<FakeHal>::new(regs.base(), Config::default()) };
            assert_eq!(
                r.err(),
                Some(Error::Unsupported(expected)),
                "IDR0 {idr0:#x} IDR1 {idr1:#x}"
            );
        }
    }

    #[test]
    fn a_stage_the_smmu_lacks_is_refused() {
        let regs = qemu_like();
        regs.set32(0x00, 0x0D44_101A); // S2P = 0
        let smmu = driver(&regs);
        let cfg = crate::stage2::Stage2Config::new(crate::stage2::Granule::K4, 40, 44).unwrap();
        // Auto falls back to stage 1 (src/domain/stage1_tests.rs); a
        // stage-2 domain asked for explicitly is refused.
        let stage = |stage| crate::domain::DomainOptions {
            stage,
            ..crate::domain::DomainOptions::new(cfg)
        };
        assert_eq!(
            smmu.create_domain(stage(crate::domain::StagePolicy::Stage2)),
            Err(Error::Unsupported(Unsupported::Stage2))
        );
        drop(smmu);
        regs.set32(0x00, 0x0D44_1019); // S1P = 0
        let smmu = driver(&regs);
        assert_eq!(
            smmu.create_domain(stage(crate::domain::StagePolicy::Stage1)),
            Err(Error::Unsupported(Unsupported::Stage1))
        );
    }

    #[test]
    fn service_failure_disables_and_msi_aborts_are_counted() {
        let regs = qemu_like();
        let smmu = driver(&regs);
        // MSI write aborts (bits 4..7) and a PRI queue abort (bit 3): counted
        // and acknowledged, nothing else.
        regs.set32(0x60, 0xF8);
        let report = smmu.handle_gerror().unwrap();
        assert!(report.msi_abort && !report.service_failure);
        assert_eq!(regs.get32(0x64), 0xF8); // GERRORN now matches GERROR
        assert_eq!(smmu.stats().msi_aborts, 1);
        // SFM_ERR: the SMMU is stopped and the caller told.
        smmu.set_state(State::Enabled);
        regs.set32(0x20, 0xD); // CR0 as the SMMU had it
        regs.set32(0x60, 0xF8 | 1 << 8);
        assert_eq!(smmu.handle_gerror(), Err(Error::ServiceFailure));
        assert_eq!(smmu.state(), State::Failed);
        assert_eq!(regs.get32(0x20), 0); // CR0 cleared
        assert_eq!(regs.get32(0x64), 0x1F8);
        assert_eq!(smmu.submit(&[Command::TlbiNsnhAll]), Err(Error::NotEnabled));
        // A failed SMMU that never acknowledges: dropping it leaks its memory
        // rather than hanging or freeing what it may still read.
    }

    /// A QEMU-like SMMU that answers (ACKs, consumes commands), with
    /// `idr0_extra` bits set in IDR0, and garbage in every IRQ_CFG register
    /// as a previous owner might leave it.
    fn responsive(idr0_extra: u32) -> FakeRegs {
        let regs = qemu_like();
        regs.set32(0x00, 0x0D44_101B | idr0_extra);
        for off in [
            0x68, 0x6C, 0x70, 0x74, 0xB0, 0xB4, 0xB8, 0xBC, 0xD0, 0xD4, 0xD8, 0xDC,
        ] {
            regs.set32(off, 0xDEAD_BEEC);
        }
        regs.respond();
        regs
    }

    fn cr0_writes(t: &[Trace]) -> Vec<u64> {
        t.iter()
            .filter_map(|e| match *e {
                Trace::Write {
                    offset: 0x20,
                    value,
                } => Some(value),
                _ => None,
            })
            .collect()
    }

    const ATS: u32 = 1 << 10;
    const PRI: u32 = 1 << 16;
    const MSI: u32 = 1 << 13;
    const ATSCHK: u64 = 1 << 4;

    /// Issue 8 item 1: with IDR0.ATS, every CR0 write of `enable` sets
    /// ATSCHK; without ATS none does.
    #[test]
    fn atschk_is_set_in_every_cr0_write_when_the_smmu_has_ats() {
        let regs = responsive(ATS);
        let smmu = driver(&regs);
        start_trace();
        smmu.enable().unwrap();
        let cr0 = cr0_writes(&take_trace());
        assert!(cr0.len() >= 3, "{cr0:x?}");
        assert!(cr0.iter().all(|v| v & ATSCHK != 0), "CR0 writes {cr0:x?}");
        assert_eq!(regs.get32(0x24) & 1, 1, "SMMUEN acknowledged");
        // EATS stays 0 in what the driver writes (STE dword 1 bits 29:28).
        assert_eq!(Ste::bypass().0[1] & (3 << 28), 0);
        let regs = responsive(0);
        let smmu = driver(&regs);
        start_trace();
        smmu.enable().unwrap();
        assert!(cr0_writes(&take_trace()).iter().all(|v| v & ATSCHK == 0));
    }

    /// Issue 8 item 2: every IRQ_CFG0/1/2 register is written (0 = wired)
    /// after IRQ_CTRL = 0 and before IRQ_CTRL enables interrupts.
    #[test]
    fn irq_cfg_registers_are_cleared_before_interrupts_are_enabled() {
        let regs = responsive(PRI);
        let smmu = driver(&regs);
        start_trace();
        smmu.enable().unwrap();
        let t = take_trace();
        for off in [
            0x68, 0x6C, 0x70, 0x74, 0xB0, 0xB4, 0xB8, 0xBC, 0xD0, 0xD4, 0xD8, 0xDC,
        ] {
            assert_eq!(
                regs.get32(off),
                0,
                "IRQ_CFG register at {off:#x} left as found"
            );
        }
        let irq_ctrl: Vec<(usize, u64)> = t
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match *e {
                Trace::Write {
                    offset: 0x50,
                    value,
                } => Some((i, value)),
                _ => None,
            })
            .collect();
        let disabled = irq_ctrl.iter().find(|w| w.1 == 0).expect("IRQ_CTRL = 0").0;
        let enabled = irq_ctrl
            .iter()
            .find(|w| w.1 != 0)
            .expect("IRQ_CTRL enabled")
            .0;
        for off in [0x68usize, 0x70, 0x74, 0xB0, 0xB8, 0xBC, 0xD0] {
            let w = t
                .iter()
                .position(|e| matches!(*e, Trace::Write { offset, .. } if offset == off))
                .unwrap_or_else(|| panic!("{off:#x} never written"));
            assert!(
                disabled < w && w < enabled,
                "{off:#x} written at {w}, IRQ_CTRL 0 at {disabled}, on at {enabled}"
            );
        }
    }

    /// Issue 8 item 2: MSI targets from `Config` reach the registers, and
    /// are refused on an SMMU without MSI.
    #[test]
    fn msi_configuration_is_programmed() {
        let msi = MsiConfig {
            gerror: Some(MsiTarget::device(0x0808_0040, 0x77)),
            eventq: Some(MsiTarget {
                doorbell: 0x1_2345_6780,
                data: 0x1234,
                memattr: 0xF,
                sh: 3,
            }),
        };
        let config = Config {
            timeout_ns: 1_000_000,
            msi: Some(msi),
            ..Config::default()
        };
        let regs = responsive(0);
        // SAFETY: as in `driver`.
        let r = unsafe { Smmu::<FakeHal>::new(regs.base(), config) };
        assert_eq!(r.err(), Some(Error::Unsupported(Unsupported::Msi)));
        let regs = responsive(MSI);
        // SAFETY: as in `driver`.
        let smmu = unsafe { Smmu::<FakeHal>::new(regs.base(), config) }.unwrap();
        smmu.enable().unwrap();
        assert_eq!(regs.get64(0x68), 0x0808_0040);
        assert_eq!(regs.get32(0x70), 0x77);
        assert_eq!(regs.get32(0x74), 1);
        assert_eq!(regs.get64(0xB0), 0x1_2345_6780);
        assert_eq!(regs.get32(0xB8), 0x1234);
        assert_eq!(regs.get32(0xBC), 0xF | 3 << 4);
        for (t, e) in [
            (
                MsiTarget::device(0x1002, 0),
                Error::Misaligned {
                    addr: 0x1002,
                    align: 4,
                },
            ),
            (
                MsiTarget::device(1 << 44, 0),
                Error::Unsupported(Unsupported::AddressSize),
            ),
            (
                MsiTarget {
                    sh: 1,
                    ..MsiTarget::device(0x1000, 0)
                },
                Error::Invalid(Invalid::Field {
                    field: Field::MsiSh,
                    value: 1,
                }),
            ),
        ] {
            let config = Config {
                msi: Some(MsiConfig {
                    gerror: None,
                    eventq: Some(t),
                }),
                ..config
            };
            // SAFETY: as in `driver`.
            let r = unsafe { Smmu::<FakeHal>::new(regs.base(), config) };
            assert_eq!(r.err(), Some(e));
        }
    }

    /// Issue 8 item 8: an SMMU with queues smaller than the defaults gets
    /// queues of its own maximum size.
    #[test]
    fn small_queues_are_clamped() {
        let regs = qemu_like();
        // CMDQS [25:21] = 5, EVENTQS [20:16] = 4, SIDSIZE 16.
        regs.set32(0x04, 5 << 21 | 4 << 16 | 16);
        let smmu = driver(&regs);
        assert_eq!(smmu.cmdq.lock().ring().log2(), 5);
        assert_eq!(smmu.evtq.lock().ring().log2(), 4);
    }

    /// Issue 8 item 6: firmware's coherency overrides IDR0.COHACC; a
    /// non-coherent SMMU gets Non-cacheable, Outer Shareable table and
    /// queue attributes.
    #[test]
    fn firmware_coherency_overrides_cohacc() {
        let regs = responsive(0);
        let config = Config {
            timeout_ns: 1_000_000,
            firmware_coherent: Some(false),
            ..Config::default()
        };
        // SAFETY: as in `driver`.
        let smmu = unsafe { Smmu::<FakeHal>::new(regs.base(), config) }.unwrap();
        assert!(!smmu.features().coherent);
        smmu.enable().unwrap();
        // CR1: TABLE_SH [11:10] = 2, QUEUE_SH [5:4] = 2, all cacheability 0.
        assert_eq!(regs.get32(0x28), 2 << 10 | 2 << 4);
        let regs = responsive(0);
        let smmu = driver(&regs);
        assert!(smmu.features().coherent);
    }

    #[test]
    fn bad_hal_memory_is_refused() {
        let regs = qemu_like();
        crate::fake::FakeHal::misalign_next(true);
        // SAFETY: as in `driver`.
        let r = unsafe { Smmu::<FakeHal>::new(regs.base(), Config::default()) };
        crate::fake::FakeHal::misalign_next(false);
        assert!(matches!(r, Err(Error::BadHalMemory { .. })), "{r:?}");
    }
}
