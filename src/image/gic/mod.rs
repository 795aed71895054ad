//! GIC bring-up at EL2 and the image's IRQ dispatcher: GICv3 here, GICv2 in
//! [`v2`], one API for both.
//!
//! Which one runs is the DTB's choice ([`super::platform::Gic`]); [`version`]
//! says which came up. Without a usable GIC (no GIC node, an unknown
//! compatible, malformed `reg`) [`init`] fails with
//! [`GicError::NoUsableGic`] and every caller falls back to polling: the
//! SMMU demo drains its event queue itself ([`super::iommu`]), and secondary
//! CPUs start without an interrupt controller ([`super::smp`]).
//!
//! GICv3: [`init`] finds the distributor and the redistributors in the DTB
//! ([`super::Platform`]), configures every interrupt as non-secure group 1,
//! level, priority 0x80, disabled, and turns on this CPU's interface;
//! [`init_this_cpu`] does the per-CPU half on a secondary CPU (its
//! redistributor and its CPU interface). Handlers are registered per INTID
//! ([`register`], [`register_sgi`]); the dispatcher installed with
//! [`exceptions::set_irq_handler`] acknowledges (ICC_IAR1_EL1), calls the
//! handler and ends the interrupt (ICC_EOIR1_EL1, EOImode 0: drop priority and
//! deactivate), looping until the GIC reports "nothing pending" (1023).
//!
//! # Why the `arm-gic` crate
//!
//! It is the GIC driver of Google's and Arm's Rust firmware (Trusty, pVM
//! firmware, `vmbase`): typed register blocks over `safe-mmio`, GICv3/v4
//! redistributor frame layouts, the wake-up handshake (GICR_WAKER), the ICC_*
//! system-register accessors, and host tests against fake register frames.
//! Writing the same from raw offsets would only add untested code; what the
//! crate leaves out is done here, each in a few lines and documented:
//!
//! - EL2 specifics: ICC_SRE_EL2.SRE (system-register interface at EL2; the
//!   crate only sets it behind its `el2` feature) and **HCR_EL2.IMO = 1**. With
//!   IMO = 0 and TGE = 0 a physical IRQ targets EL1, and an IRQ that targets a
//!   lower EL than the current one is never taken: code running at EL2 would
//!   see nothing. (A hypervisor sets IMO anyway to virtualise interrupts.)
//! - The priority mask (ICC_PMR_EL1 = 0xff) and a redistributor lookup by
//!   MPIDR (the crate indexes redistributors linearly).
//! - A handful of raw reads (enable, trigger, routing, pending) used by tests
//!   and `register` to report what the hardware now holds.
//!
//! # Concurrency
//!
//! The `GicV3` driver (which needs `&mut` for every change) sits behind a
//! spin lock, always taken with IRQs masked on this CPU ([`without_irqs`]).
//! The IRQ path never takes it: it only uses system registers, the handler
//! table (one `AtomicUsize` per INTID) and atomic counters, so a handler may
//! run on any CPU while another CPU registers an interrupt.
//!
//! An IRQ for an INTID with no handler is counted ([`unhandled_count`],
//! [`last_unhandled`]) and ended like any other; an acknowledge that returns
//! a special INTID (1020..1023) is counted as spurious ([`spurious_count`])
//! and not ended.
//!
//! Limitations: one redistributor region (the first in the DTB, which QEMU
//! `virt` uses for up to 123 CPUs); no LPIs/ITS; SGI targets need Aff0 < 16
//! (no range selector).

use core::arch::asm;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use aarch64_cpu::registers::{HCR_EL2, MPIDR_EL1, ReadWriteable, Readable};
pub use arm_gic::IntId;
pub use arm_gic::Trigger;
use arm_gic::gicv3::registers::{Gicd, GicrSgi};
use arm_gic::gicv3::{GicCpuInterface, GicV3, SgiTarget, SgiTargetGroup};
use arm_gic::{InterruptGroup, UniqueMmioPointer};
use spin::{Mutex, Once};

use super::exceptions;
use super::platform;

pub mod v2;

/// A handler for one INTID; runs in IRQ context (IRQs masked, on the
/// exception stack) on the CPU that took the interrupt.
pub type Handler = fn(IntId);

/// The priority given to every registered interrupt (lower is more urgent;
/// 0x80 is the most urgent a non-secure priority can be with two security
/// states).
pub const PRIORITY: u8 = 0x80;

/// INTIDs 0..1020: SGIs, PPIs and SPIs (no extended ranges, no LPIs).
const MAX_INTID: usize = 1020;
/// The INTID ICC_IAR1_EL1 returns when nothing is pending.
const INTID_NONE: u32 = 1023;

/// GICR_TYPER offset in a redistributor's RD_base frame, and its bits.
const GICR_TYPER: usize = 0x8;
const GICR_TYPER_VLPIS: u64 = 1 << 1;
const GICR_TYPER_LAST: u64 = 1 << 4;
/// One redistributor: RD_base + SGI_base (GICv3), + VLPI frames (GICv4).
const GICR_FRAME_V3: usize = 0x2_0000;
const GICR_FRAME_V4: usize = 0x4_0000;
/// The SGI_base frame follows RD_base.
const GICR_SGI_BASE: usize = 0x1_0000;
/// Bit-per-INTID and 2-bit-per-INTID register arrays (same offsets in GICD
/// and in the redistributor's SGI frame).
const ISENABLER: usize = 0x100;
const ISPENDR: usize = 0x200;
const ICFGR: usize = 0xc00;
/// GICD_IROUTER<n>, 64-bit, n >= 32.
const GICD_IROUTER: usize = 0x6000;

/// Why the GIC could not be set up or used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GicError {
    /// [`init`] has not run (or failed).
    NotInitialised,
    /// The redistributor region holds no frame for this CPU.
    NoRedistributor {
        /// The CPU's MPIDR_EL1 affinity fields.
        mpidr: u64,
    },
    /// The INTID is not an SGI, PPI or SPI.
    InvalidIntId(u32),
    /// The INTID is not of the kind the call needs (e.g. an SPI to `send_sgi`).
    WrongKind(IntId),
    /// An SGI target with Aff0 >= 16 (needs the range selector).
    SgiTargetOutOfRange(u64),
    /// The driver crate refused.
    Driver(arm_gic::gicv3::GicError),
    /// The DTB names no interrupt controller the image can drive (or names
    /// it with malformed registers): the image polls.
    NoUsableGic(platform::DtbError),
    /// A GICv2 with the Security Extensions: its group configuration
    /// belongs to Secure firmware, and a non-secure EL2 sees a different
    /// register view than the driver crate programs. The image polls.
    SecurityExtensions,
    /// GICv2: the CPU with this affinity has not initialised its CPU
    /// interface (its GICD_ITARGETSR mask is unknown), or has none.
    NoCpuInterface {
        /// The CPU's MPIDR_EL1 affinity fields.
        mpidr: u64,
    },
    /// GICv2: SGI and PPI registers are banked per CPU and can only be read
    /// by the CPU they belong to.
    BankedElsewhere {
        /// The CPU whose bank was asked for.
        mpidr: u64,
    },
    /// The GICv2 driver crate refused.
    DriverV2(arm_gic::gicv2::Error),
}

impl fmt::Display for GicError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::NotInitialised => f.write_str("the GIC is not initialised (gic::init)"),
            Self::NoRedistributor { mpidr } => {
                write!(f, "no GIC redistributor for the CPU with MPIDR {mpidr:#x}")
            }
            Self::InvalidIntId(n) => write!(f, "INTID {n} is not an SGI, PPI or SPI"),
            Self::WrongKind(id) => {
                // As arm-gic's `Debug` for `IntId` names it (`SPI 3`), without
                // pulling that `Debug` in.
                let n = u32::from(*id);
                let (kind, base) = match n {
                    0..16 => ("SGI", 0),
                    16..32 => ("PPI", 16),
                    32..1020 => ("SPI", 32),
                    1020..1024 => ("Special IntId", 0),
                    1056..1120 => ("EPPI", 1056),
                    4096..5120 => ("ESPI", 4096),
                    8192.. => ("LPI", 8192),
                    _ => ("Reserved IntId", 0),
                };
                write!(f, "{kind} {} is the wrong kind of interrupt here", n - base)
            }
            Self::SgiTargetOutOfRange(m) => {
                write!(f, "SGI target MPIDR {m:#x} has Aff0 >= 16")
            }
            Self::Driver(e) => write!(f, "arm-gic: {e}"),
            Self::NoUsableGic(e) => write!(f, "no usable GIC: {e}"),
            Self::SecurityExtensions => f.write_str(
                "GICv2 with the Security Extensions: group setup belongs to Secure firmware",
            ),
            Self::NoCpuInterface { mpidr } => {
                write!(
                    f,
                    "no known GICv2 CPU interface for the CPU with MPIDR {mpidr:#x}"
                )
            }
            Self::BankedElsewhere { mpidr } => write!(
                f,
                "GICv2 SGI/PPI registers of the CPU with MPIDR {mpidr:#x} are banked: only it can read them"
            ),
            Self::DriverV2(e) => write!(f, "arm-gic (GICv2): {e}"),
        }
    }
}

impl From<arm_gic::gicv3::GicError> for GicError {
    fn from(e: arm_gic::gicv3::GicError) -> Self {
        Self::Driver(e)
    }
}

/// What [`init`] brought up: the GICv3 here, or the GICv2 of [`v2`].
enum Backend {
    V3(State),
    V2(v2::State),
}

/// What [`init`] found for a GICv3, plus the driver.
struct State {
    gic: Mutex<GicV3<'static>>,
    gicd: usize,
    /// RD_base of redistributor `i` is `gicr + i * stride`.
    gicr: usize,
    stride: usize,
    /// The affinity (MPIDR layout) of each redistributor, in frame order.
    affinities: alloc::vec::Vec<u64>,
    /// The boot CPU's affinity: the default SPI target.
    boot_mpidr: u64,
}

static STATE: Once<Result<Backend, GicError>> = Once::new();

/// One handler slot per INTID: 0 = none, else a `Handler` as `usize`.
static HANDLERS: [AtomicUsize; MAX_INTID] = [const { AtomicUsize::new(0) }; MAX_INTID];
/// IRQs taken per INTID (handled or not).
static COUNTS: [AtomicU32; MAX_INTID] = [const { AtomicU32::new(0) }; MAX_INTID];
static UNHANDLED: AtomicU32 = AtomicU32::new(0);
static LAST_UNHANDLED: AtomicU64 = AtomicU64::new(u64::MAX);
static SPURIOUS: AtomicU32 = AtomicU32::new(0);

/// The affinity fields (Aff3, Aff2, Aff1, Aff0) of an MPIDR value.
pub const fn affinity(mpidr: u64) -> u64 {
    mpidr & 0xff_00ff_ffff
}

/// This CPU's MPIDR_EL1 affinity fields.
pub fn current_mpidr() -> u64 {
    affinity(MPIDR_EL1.get())
}

fn state() -> Result<&'static Backend, GicError> {
    match STATE.get() {
        Some(Ok(s)) => Ok(s),
        Some(Err(e)) => Err(*e),
        None => Err(GicError::NotInitialised),
    }
}

/// Brings the GIC up from the DTB ([`super::boot`]), on the boot CPU.
/// GICv3: distributor (affinity routing, group 1 enabled, all SPIs group 1 /
/// level / disabled), every redistributor (SGIs and PPIs group 1, disabled),
/// this CPU's interface. GICv2: see [`v2`]. Then the IRQ dispatcher. IRQs
/// stay masked (DAIF.I): call [`enable_irqs`]. Runs once; later calls return
/// the first outcome. Without a usable GIC: [`GicError::NoUsableGic`].
pub fn init() -> Result<(), GicError> {
    STATE
        .call_once(|| match &super::boot().platform.gic {
            Ok(platform::Gic::V3(p)) => init_once(p).map(Backend::V3),
            Ok(platform::Gic::V2(p)) => {
                let s = v2::State::init(p)?;
                exceptions::set_irq_handler(dispatch);
                Ok(Backend::V2(s))
            }
            Err(e) => Err(GicError::NoUsableGic(*e)),
        })
        .as_ref()
        .map(|_| ())
        .map_err(|e| *e)
}

/// The GIC architecture version [`init`] brought up (2 or 3), `None` before
/// it ran or when there is no usable GIC.
pub fn version() -> Option<u8> {
    match state() {
        Ok(Backend::V3(_)) => Some(3),
        Ok(Backend::V2(_)) => Some(2),
        Err(_) => None,
    }
}

fn init_once(p: &platform::Gicv3Regions) -> Result<State, GicError> {
    let gicd = p.distributor.base as usize;
    let gicr = p.redistributors[0].base as usize;
    let region_end = p.redistributors[0].end() as usize;
    // Walk the redistributor frames until GICR_TYPER.Last.
    let mut affinities = alloc::vec::Vec::new();
    let mut stride = GICR_FRAME_V3;
    let mut frame = gicr;
    while frame + GICR_FRAME_V3 <= region_end {
        let typer = read64(frame + GICR_TYPER);
        affinities.push(((typer >> 32) & 0xff_ffff) | ((typer >> 56) << 32));
        stride = if typer & GICR_TYPER_VLPIS != 0 {
            GICR_FRAME_V4
        } else {
            GICR_FRAME_V3
        };
        if typer & GICR_TYPER_LAST != 0 {
            break;
        }
        frame += stride;
    }
    let boot_mpidr = current_mpidr();
    let cpu = affinities
        .iter()
        .position(|&a| a == boot_mpidr)
        .ok_or(GicError::NoRedistributor { mpidr: boot_mpidr })?;

    // SAFETY: the DTB names these frames; the MMU maps them as device memory
    // (mmu::device_regions); this is the only GicV3 instance (STATE's Once),
    // and the raw accesses below are made with its lock held.
    let mut gic = unsafe {
        GicV3::new(
            UniqueMmioPointer::new(NonNull::new(gicd as *mut Gicd).unwrap()),
            NonNull::new(gicr as *mut GicrSgi).unwrap(),
            affinities.len(),
        )
    }?;
    enable_el2_interface();
    // Every redistributor and the distributor to defaults, this CPU awake and
    // its group 1 enabled.
    gic.setup(cpu);
    GicCpuInterface::set_priority_mask(0xff);
    exceptions::set_irq_handler(dispatch);
    Ok(State {
        gic: Mutex::new(gic),
        gicd,
        gicr,
        stride,
        affinities,
        boot_mpidr,
    })
}

/// The EL2 half of a CPU interface: ICC_SRE_EL2.SRE (and Enable, so EL1 may
/// use its own system registers) and HCR_EL2.IMO (physical IRQs go to EL2).
fn enable_el2_interface() {
    // SAFETY: ICC_SRE_EL2 bit 0 = SRE (system-register access at EL2),
    // bit 3 = Enable (lets EL1 use ICC_SRE_EL1). Setting SRE from 0 to 1 is
    // allowed once; on QEMU it is already 1 (RAO/WI).
    unsafe {
        asm!(
            "mrs {t}, icc_sre_el2",
            "orr {t}, {t}, #0x1",
            "orr {t}, {t}, #0x8",
            "msr icc_sre_el2, {t}",
            "isb",
            t = out(reg) _,
            options(nostack, preserves_flags),
        );
    }
    enable_irq_routing_to_el2();
}

/// HCR_EL2.IMO = 1: physical IRQs are taken to EL2 (both GIC versions).
fn enable_irq_routing_to_el2() {
    HCR_EL2.modify(HCR_EL2::IMO::EnableVirtualIRQ);
    // SAFETY: a barrier, so the routing change is seen before IRQs unmask.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}

/// Per-CPU GIC init on a secondary CPU: EL2 interface bits, this CPU's
/// redistributor awake, group 1 enabled, priority mask open. IRQs stay
/// masked. The redistributor's SGI/PPI configuration was done by [`init`].
/// (GICv2: [`v2::State::init_this_cpu`].)
pub fn init_this_cpu() -> Result<(), GicError> {
    let s = match state()? {
        Backend::V3(s) => s,
        Backend::V2(s) => return s.init_this_cpu(),
    };
    let mpidr = current_mpidr();
    let cpu = s
        .affinities
        .iter()
        .position(|&a| a == mpidr)
        .ok_or(GicError::NoRedistributor { mpidr })?;
    enable_el2_interface();
    without_irqs(|| s.gic.lock().init_cpu(cpu));
    GicCpuInterface::set_priority_mask(0xff);
    GicCpuInterface::enable_group1(true);
    Ok(())
}

/// The number of redistributors (GICv2: CPU interfaces), i.e. the CPUs the
/// GIC serves; 0 before [`init`].
pub fn cpu_count() -> usize {
    match state() {
        Ok(Backend::V3(s)) => s.affinities.len(),
        Ok(Backend::V2(s)) => s.cpu_count(),
        Err(_) => 0,
    }
}

/// GICv2: applies SGI/PPI configuration registered since this CPU last
/// looked (their registers are banked per CPU, see [`v2`]). A no-op on a
/// GICv3 (whose redistributors [`enable`] reaches from any CPU) and without
/// a GIC.
pub fn sync_this_cpu() -> Result<(), GicError> {
    match state() {
        Ok(Backend::V2(s)) => s.sync_this_cpu(),
        _ => Ok(()),
    }
}

fn check_intid(intid: IntId) -> Result<(), GicError> {
    let raw = u32::from(intid);
    if (raw as usize) < MAX_INTID {
        Ok(())
    } else {
        Err(GicError::InvalidIntId(raw))
    }
}

/// Registers `handler` for `intid` and enables it. SPIs are routed to the
/// boot CPU; SGIs and PPIs are enabled on every CPU's redistributor.
/// Replaces any earlier handler.
pub fn register(intid: IntId, trigger: Trigger, handler: Handler) -> Result<(), GicError> {
    let boot_mpidr = match state()? {
        Backend::V3(s) => s.boot_mpidr,
        Backend::V2(s) => s.boot_mpidr,
    };
    register_routed(intid, trigger, handler, boot_mpidr)
}

/// As [`register`], routing an SPI to the CPU with affinity `mpidr`
/// (ignored for SGIs and PPIs).
pub fn register_routed(
    intid: IntId,
    trigger: Trigger,
    handler: Handler,
    mpidr: u64,
) -> Result<(), GicError> {
    check_intid(intid)?;
    HANDLERS[u32::from(intid) as usize].store(handler as usize, Ordering::Release);
    enable(intid, trigger, mpidr)
}

/// Registers `handler` for SGI `sgi` (0..16) and enables it on every CPU.
pub fn register_sgi(sgi: u32, handler: Handler) -> Result<IntId, GicError> {
    if sgi >= IntId::SGI_COUNT {
        return Err(GicError::InvalidIntId(sgi));
    }
    let intid = IntId::sgi(sgi);
    register(intid, Trigger::Edge, handler)?;
    Ok(intid)
}

/// Configures (group 1 non-secure, [`PRIORITY`], `trigger`; SPIs routed to
/// `mpidr`) and enables `intid` without touching its handler slot. An IRQ
/// without a handler is counted and ended by the dispatcher; tests use this
/// to exercise that path. (GICv2: group 0, see [`v2`].)
pub fn enable(intid: IntId, trigger: Trigger, mpidr: u64) -> Result<(), GicError> {
    use arm_gic::gicv3::Group;
    check_intid(intid)?;
    let s = match state()? {
        Backend::V3(s) => s,
        Backend::V2(s) => return s.enable(intid, trigger, mpidr),
    };
    without_irqs(|| {
        let mut gic = s.gic.lock();
        if intid.is_private() {
            for cpu in 0..s.affinities.len() {
                gic.set_group(intid, Some(cpu), Group::Group1NS)?;
                gic.set_interrupt_priority(intid, Some(cpu), PRIORITY)?;
                if !intid.is_sgi() {
                    gic.set_trigger(intid, Some(cpu), trigger)?;
                }
                gic.enable_interrupt(intid, Some(cpu), true)?;
            }
        } else {
            let d = gic.distributor();
            d.set_group(intid, Group::Group1NS)?;
            d.set_interrupt_priority(intid, PRIORITY)?;
            d.set_trigger(intid, trigger)?;
            d.set_routing(intid, Some(affinity(mpidr)))?;
            d.enable_interrupt(intid, true)?;
        }
        Ok(())
    })
}

/// Disables `intid` (on every CPU for SGIs/PPIs) and removes its handler.
pub fn unregister(intid: IntId) -> Result<(), GicError> {
    check_intid(intid)?;
    match state()? {
        Backend::V3(s) => unregister_v3(s, intid)?,
        Backend::V2(s) => s.disable(intid)?,
    }
    HANDLERS[u32::from(intid) as usize].store(0, Ordering::Release);
    Ok(())
}

fn unregister_v3(s: &State, intid: IntId) -> Result<(), GicError> {
    without_irqs(|| {
        let mut gic = s.gic.lock();
        if intid.is_private() {
            for cpu in 0..s.affinities.len() {
                gic.enable_interrupt(intid, Some(cpu), false)?;
            }
        } else {
            gic.enable_interrupt(intid, None, false)?;
        }
        Ok::<(), GicError>(())
    })
}

/// Sends SGI `sgi` (0..16) as group 1 to the CPU with affinity `mpidr`
/// (ICC_SGI1R_EL1; GICv2: GICD_SGIR with that CPU's interface in the target
/// list).
pub fn send_sgi(sgi: u32, mpidr: u64) -> Result<(), GicError> {
    if sgi >= IntId::SGI_COUNT {
        return Err(GicError::InvalidIntId(sgi));
    }
    if let Ok(Backend::V2(s)) = state() {
        return s.send_sgi(sgi, mpidr);
    }
    let aff0 = mpidr & 0xff;
    if aff0 >= 16 {
        return Err(GicError::SgiTargetOutOfRange(mpidr));
    }
    let target = SgiTarget::List {
        affinity3: (mpidr >> 32) as u8,
        affinity2: (mpidr >> 16) as u8,
        affinity1: (mpidr >> 8) as u8,
        target_list: 1 << aff0,
    };
    GicCpuInterface::send_sgi(IntId::sgi(sgi), target, SgiTargetGroup::CurrentGroup1)?;
    // SAFETY: barriers: the SGI register write completes before what follows.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
    Ok(())
}

/// Sends SGI `sgi` to the calling CPU.
pub fn send_sgi_to_self(sgi: u32) -> Result<(), GicError> {
    send_sgi(sgi, current_mpidr())
}

/// GICv2 only: the address of GICD_SGIR and the value that raises SGI `sgi`
/// on the CPU with affinity `mpidr`, for code that must raise it with a
/// single store (a test's register-only loop). `None` on a GICv3.
pub fn sgir_write(sgi: u32, mpidr: u64) -> Result<Option<(usize, u32)>, GicError> {
    if sgi >= IntId::SGI_COUNT {
        return Err(GicError::InvalidIntId(sgi));
    }
    match state()? {
        Backend::V3(_) => Ok(None),
        Backend::V2(s) => Ok(Some((s.sgir_address(), s.sgir_value(sgi, mpidr)?))),
    }
}

/// Makes SPI `intid` pending in the distributor (GICD_ISPENDR), as if its
/// device had signalled it: exercises routing and delivery of a registered
/// SPI without the device.
pub fn set_pending(intid: IntId) -> Result<(), GicError> {
    check_intid(intid)?;
    if !intid.is_spi() {
        return Err(GicError::WrongKind(intid));
    }
    let n = u32::from(intid) as usize;
    match state()? {
        Backend::V3(s) => without_irqs(|| {
            let _gic = s.gic.lock();
            write32(s.gicd + ISPENDR + 4 * (n / 32), 1 << (n % 32));
        }),
        Backend::V2(s) => s.set_pending(n),
    }
    Ok(())
}

/// What the GIC holds for one interrupt, read back from its registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntConfig {
    /// Enabled (ISENABLER).
    pub enabled: bool,
    /// Pending (ISPENDR).
    pub pending: bool,
    /// Edge-triggered (ICFGR).
    pub edge: bool,
    /// For an SPI: the routing affinity (GICD_IROUTER; `None` if 1-of-N).
    /// GICv2: the affinity of the one CPU GICD_ITARGETSR names, `None` if
    /// it names none, several, or one that never initialised.
    pub route: Option<u64>,
}

/// Reads `intid`'s configuration; SGIs and PPIs from the redistributor of
/// the CPU with affinity `mpidr` (ignored for SPIs). GICv2: SGIs and PPIs
/// only of the calling CPU ([`GicError::BankedElsewhere`] otherwise).
pub fn config(intid: IntId, mpidr: u64) -> Result<IntConfig, GicError> {
    check_intid(intid)?;
    let n = u32::from(intid) as usize;
    let s = match state()? {
        Backend::V3(s) => s,
        Backend::V2(s) => {
            let route = if intid.is_private() {
                s.check_own_bank(affinity(mpidr))?;
                None
            } else {
                s.route(n)
            };
            return Ok(read_config(s.gicd(), n, route));
        }
    };
    let (base, route) = if intid.is_private() {
        let cpu = s
            .affinities
            .iter()
            .position(|&a| a == affinity(mpidr))
            .ok_or(GicError::NoRedistributor { mpidr })?;
        (s.gicr + cpu * s.stride + GICR_SGI_BASE, None)
    } else {
        let r = without_irqs(|| {
            let _gic = s.gic.lock();
            read64(s.gicd + GICD_IROUTER + 8 * n)
        });
        (s.gicd, (r & (1 << 31) == 0).then_some(r))
    };
    Ok(read_config(base, n, route))
}

/// ISENABLER, ISPENDR and ICFGR of INTID `n` in the frame at `base` (a
/// distributor, or a GICv3 redistributor's SGI frame: same offsets).
fn read_config(base: usize, n: usize, route: Option<u64>) -> IntConfig {
    let bit = |off: usize| read32(base + off + 4 * (n / 32)) >> (n % 32) & 1 == 1;
    IntConfig {
        enabled: bit(ISENABLER),
        pending: bit(ISPENDR),
        edge: read32(base + ICFGR + 4 * (n / 16)) >> (2 * (n % 16) + 1) & 1 == 1,
        route,
    }
}

/// The highest-priority pending group 1 interrupt this CPU could take
/// (ICC_HPPIR1_EL1; GICv2: GICC_HPPIR), without acknowledging it.
pub fn highest_pending() -> Option<IntId> {
    match state() {
        Ok(Backend::V3(_)) => GicCpuInterface::get_pending_interrupt(InterruptGroup::Group1),
        Ok(Backend::V2(s)) => s.highest_pending(),
        Err(_) => None,
    }
}

/// IRQs taken for `intid` (handled or not) since boot, on all CPUs.
pub fn count(intid: IntId) -> u32 {
    COUNTS
        .get(u32::from(intid) as usize)
        .map_or(0, |c| c.load(Ordering::Acquire))
}

/// IRQs taken for INTIDs that had no handler (ended without one).
pub fn unhandled_count() -> u32 {
    UNHANDLED.load(Ordering::Acquire)
}

/// The INTID of the last IRQ without a handler.
pub fn last_unhandled() -> Option<IntId> {
    let v = LAST_UNHANDLED.load(Ordering::Acquire);
    IntId::try_from(v as u32).ok().filter(|_| v != u64::MAX)
}

/// Dispatcher entries that found nothing to acknowledge (special INTIDs).
pub fn spurious_count() -> u32 {
    SPURIOUS.load(Ordering::Acquire)
}

/// The IRQ dispatcher (installed by [`init`] with
/// [`exceptions::set_irq_handler`]): acknowledge, call the handler (or count
/// the IRQ as unhandled), end; repeat until nothing is pending. Counts one
/// spurious entry if the first acknowledge finds nothing. Safe to call
/// outside IRQ context (with IRQs masked): it then handles whatever is
/// pending.
pub fn dispatch() {
    let mut taken = 0u32;
    match state() {
        Ok(Backend::V2(s)) => {
            while let Some(raw) = s.acknowledge() {
                // GICC_IAR bits 12:10 name an SGI's source CPU.
                let n = (u32::from(raw) & v2::INTID_MASK) as usize;
                if n >= MAX_INTID {
                    // 1020..1022: special INTIDs, never ended.
                    break;
                }
                taken += 1;
                run_handler(n);
                // GICC_EOIR takes the acknowledged value, source bits included.
                s.end(raw);
            }
        }
        Ok(Backend::V3(_)) => {
            while let Some(intid) =
                GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1)
            {
                let n = u32::from(intid) as usize;
                if n >= MAX_INTID {
                    // 1020..1022: special INTIDs, never ended.
                    break;
                }
                taken += 1;
                run_handler(n);
                GicCpuInterface::end_interrupt(intid, InterruptGroup::Group1);
            }
        }
        // No GIC: nothing to acknowledge (and no CPU interface to ask).
        Err(_) => {}
    }
    if taken == 0 {
        SPURIOUS.fetch_add(1, Ordering::AcqRel);
    }
}

/// Counts an IRQ for INTID `n` (< [`MAX_INTID`]) and runs its handler, or
/// counts it as unhandled.
fn run_handler(n: usize) {
    COUNTS[n].fetch_add(1, Ordering::AcqRel);
    let h = HANDLERS[n].load(Ordering::Acquire);
    if h == 0 {
        UNHANDLED.fetch_add(1, Ordering::AcqRel);
        LAST_UNHANDLED.store(n as u64, Ordering::Release);
    } else {
        // SAFETY: only `Handler` values are stored in HANDLERS
        // (`register_routed`), and fn pointers are usize-sized on AArch64.
        let handler = unsafe { core::mem::transmute::<usize, Handler>(h) };
        // A valid INTID: `n` < MAX_INTID, as the acknowledge returned it.
        if let Ok(intid) = IntId::try_from(n as u32) {
            handler(intid);
        }
    }
}

/// Unmasks IRQs on this CPU (clears DAIF.I).
pub fn enable_irqs() {
    // SAFETY: unmasking IRQs; the vectors and the dispatcher are in place
    // (the vectors are set by the entry code before Rust runs).
    unsafe { asm!("msr daifclr, #2", "isb", options(nostack, preserves_flags)) };
}

/// Masks IRQs on this CPU (sets DAIF.I).
pub fn disable_irqs() {
    // SAFETY: masking IRQs has no memory effects.
    unsafe { asm!("msr daifset, #2", options(nostack, preserves_flags)) };
}

/// Whether IRQs are unmasked on this CPU.
pub fn irqs_enabled() -> bool {
    let daif: u64;
    // SAFETY: reading DAIF has no side effects.
    unsafe { asm!("mrs {}, daif", out(reg) daif, options(nomem, nostack, preserves_flags)) };
    daif & (1 << 7) == 0
}

/// Runs `f` with IRQs masked on this CPU, then restores the previous mask.
pub fn without_irqs<T>(f: impl FnOnce() -> T) -> T {
    let was_enabled = irqs_enabled();
    disable_irqs();
    let r = f();
    if was_enabled {
        enable_irqs();
    }
    r
}

fn read32(addr: usize) -> u32 {
    // SAFETY: only called with addresses inside the GIC frames the DTB gives
    // (mapped as device memory); reads of these registers have no side
    // effects.
    unsafe { (addr as *const u32).read_volatile() }
}

fn read64(addr: usize) -> u64 {
    // SAFETY: as `read32`; GICR_TYPER and GICD_IROUTER are 64-bit registers.
    unsafe { (addr as *const u64).read_volatile() }
}

fn write32(addr: usize, value: u32) {
    // SAFETY: only called for GICD_ISPENDR with the driver's lock held (the
    // GICv3 or GICv2 one), so it does not race the driver; setting a pending
    // bit is its documented use.
    unsafe { (addr as *mut u32).write_volatile(value) }
}
