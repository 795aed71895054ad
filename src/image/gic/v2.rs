//! The GICv2 backend of [`super`]: the `arm-gic` crate's [`GicV2`] plus what
//! it leaves out.
//!
//! GICv2 differs from GICv3 in ways the façade hides:
//!
//! - The CPU interface is memory-mapped (GICC), one address banked per CPU;
//!   there is no system-register interface, so ICC_* registers are never
//!   touched (they are UNDEFINED without a GICv3 CPU interface). Delivery to
//!   EL2 still needs HCR_EL2.IMO.
//! - SPIs are routed with a CPU-interface bit mask (GICD_ITARGETSR), not an
//!   MPIDR. A CPU learns its own mask by reading the banked GICD_ITARGETSR0
//!   ([`State::record_this_cpu`]); at most 8 CPU interfaces.
//! - SGI and PPI registers (enable, priority, trigger) are banked per CPU
//!   inside the distributor: one CPU can neither read nor write another's.
//!   [`enable`]/[`disable`] of a private INTID therefore configure the
//!   calling CPU and record the wanted state; every CPU applies the record in
//!   [`State::init_this_cpu`] and again whenever [`sync_this_cpu`] sees a
//!   newer generation (the CPU 1 worker calls it on every wake-up).
//! - A GICv2 may keep SGIs permanently enabled (QEMU's does): disabling one
//!   then has no effect; with its handler removed it is counted as unhandled.
//! - SGIs go through GICD_SGIR with a target list; GICC_IAR returns the
//!   source CPU in bits 12:10 for an SGI, and GICC_EOIR wants the value back
//!   unchanged.
//!
//! What the crate gets wrong or lacks, done here with named offsets:
//! `set_interrupt_priority` writes a whole GICD_IPRIORITYR word (clobbering
//! the three neighbours), so priorities are written bytewise; there is no
//! accessor for GICD_ITARGETSR or GICC_HPPIR; its `setup` enables the
//! distributor's group bit as a Secure access would, so a GICv2 with the
//! Security Extensions (which a non-secure EL2 sees through a different
//! register view) is refused ([`GicError::SecurityExtensions`]) rather than
//! silently left disabled. QEMU `virt` without `secure=on` has none.
//!
//! Interrupts are group 0 (no Security Extensions: group 0 is signalled as
//! IRQ unless GICC_CTLR.FIQEn), acknowledged through GICC_IAR and ended
//! through GICC_EOIR (EOImode 0: priority drop and deactivation).
//!
//! The crate's driver needs `&mut` for every access, including acknowledge
//! and end-of-interrupt: it sits behind a spin lock that is always taken
//! with IRQs masked, and the dispatcher holds it only around the GICC
//! accesses, never while a handler runs.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use arm_gic::gicv2::registers::{Gicc, Gicd};
use arm_gic::gicv2::{GicV2, SgiTarget, SgiTargetListFilter};
use arm_gic::{IntId, InterruptGroup, Trigger};
use spin::Mutex;

use super::{
    GicError, ISPENDR, PRIORITY, current_mpidr, enable_irq_routing_to_el2, read32, without_irqs,
    write32,
};
use crate::image::platform::Gicv2Regions;

/// At most 8 CPU interfaces (GICD_ITARGETSR and GICD_SGIR hold 8-bit masks).
pub const MAX_CPU_INTERFACES: usize = 8;
/// INTIDs 0..32 are private (SGIs, PPIs), banked per CPU.
const PRIVATE_INTIDS: usize = 32;

/// GICD_ITARGETSR<n>: one byte per INTID, a CPU-interface mask; bytes 0..32
/// are read-only and read as the reading CPU's own mask.
const GICD_ITARGETSR: usize = 0x800;
/// GICD_IPRIORITYR<n>: one byte per INTID (byte-accessible).
const GICD_IPRIORITYR: usize = 0x400;
/// GICD_SGIR: SGI generation.
const GICD_SGIR: usize = 0xf00;
/// GICD_SGIR.SGIINTID (bits 3:0) and CPUTargetList (bits 23:16).
const GICD_SGIR_TARGETS_SHIFT: u32 = 16;
/// GICC_HPPIR: highest-priority pending interrupt (INTID in bits 9:0).
const GICC_HPPIR: usize = 0x18;
/// The INTID field of GICC_IAR/GICC_HPPIR (bits 12:10 are an SGI's source CPU).
pub const INTID_MASK: u32 = 0x3ff;
/// The INTID GICC_IAR/GICC_HPPIR return when nothing is pending.
const INTID_NONE: u32 = 1023;

/// Wanted state of each private INTID: [`PRIVATE_ENABLED`], [`PRIVATE_EDGE`].
static PRIVATE: [AtomicU8; PRIVATE_INTIDS] = [const { AtomicU8::new(0) }; PRIVATE_INTIDS];
const PRIVATE_ENABLED: u8 = 1 << 0;
const PRIVATE_EDGE: u8 = 1 << 1;
/// Bumped on every change of [`PRIVATE`]; CPU interface `i` has applied
/// generation `APPLIED[i]` (0: never, so the first sync always applies).
static PRIVATE_GEN: AtomicU64 = AtomicU64::new(1);
static APPLIED: [AtomicU64; MAX_CPU_INTERFACES] = [const { AtomicU64::new(0) }; MAX_CPU_INTERFACES];

/// The MPIDR affinity of CPU interface `i`, `u64::MAX` while unknown.
static INTERFACE_MPIDR: [AtomicU64; MAX_CPU_INTERFACES] =
    [const { AtomicU64::new(u64::MAX) }; MAX_CPU_INTERFACES];

/// The GICv2 the DTB names, brought up.
pub(super) struct State {
    gic: Mutex<GicV2<'static>>,
    gicd: usize,
    gicc: usize,
    /// CPU interfaces implemented (GICD_TYPER.CPUNumber + 1).
    cpus: usize,
    /// The boot CPU's affinity: the default SPI target.
    pub(super) boot_mpidr: u64,
}

impl State {
    /// Distributor and the boot CPU's interface: group 0 enabled, every
    /// interrupt group 0 and disabled (SGIs may be permanently enabled),
    /// priority mask open; HCR_EL2.IMO set. IRQs stay masked.
    pub(super) fn init(p: &Gicv2Regions) -> Result<Self, GicError> {
        let gicd = p.distributor.base as usize;
        let gicc = p.cpu_interface.base as usize;
        let gicd_ptr = NonNull::new(gicd as *mut Gicd).ok_or(GicError::NotInitialised)?;
        let gicc_ptr = NonNull::new(gicc as *mut Gicc).ok_or(GicError::NotInitialised)?;
        // SAFETY: the DTB names these frames, the platform parser checked
        // their sizes (4 KiB GICD, 8 KiB GICC), the MMU maps them as device
        // memory (mmu::device_regions), and this is the only GicV2 instance
        // (the façade's Once); the raw accesses in this module are made with
        // its lock held or only read side-effect-free registers.
        let mut gic = unsafe { GicV2::new(gicd_ptr.as_ptr(), gicc_ptr.as_ptr()) };
        if gic.typer().has_security_extension() {
            return Err(GicError::SecurityExtensions);
        }
        let cpus = gic.typer().cpu_count() as usize;
        enable_irq_routing_to_el2();
        gic.enable_all_interrupts(false);
        gic.setup();
        let s = Self {
            gic: Mutex::new(gic),
            gicd,
            gicc,
            cpus,
            boot_mpidr: current_mpidr(),
        };
        s.record_this_cpu()?;
        Ok(s)
    }

    /// A secondary CPU's half: HCR_EL2.IMO, its banked GICC (enabled,
    /// priority mask open) and IGROUPR0, its CPU-interface mask recorded, and
    /// the recorded SGI/PPI configuration applied. The crate's `setup` also
    /// rewrites the distributor's group enable and group registers with the
    /// values the boot CPU gave them, so calling it again changes nothing
    /// global.
    pub(super) fn init_this_cpu(&self) -> Result<(), GicError> {
        enable_irq_routing_to_el2();
        without_irqs(|| self.gic.lock().setup());
        self.record_this_cpu()?;
        self.sync_this_cpu()
    }

    /// Reads this CPU's interface mask (banked GICD_ITARGETSR0 byte 0) and
    /// records it against its MPIDR. A uniprocessor GIC reads 0 there: it has
    /// CPU interface 0 only.
    fn record_this_cpu(&self) -> Result<(), GicError> {
        let mpidr = current_mpidr();
        let mask = match read8(self.gicd + GICD_ITARGETSR) {
            0 => 1,
            m => m,
        };
        let index = mask.trailing_zeros() as usize;
        if mask.count_ones() != 1 || index >= self.cpus.min(MAX_CPU_INTERFACES) {
            return Err(GicError::NoCpuInterface { mpidr });
        }
        INTERFACE_MPIDR[index].store(mpidr, Ordering::Release);
        Ok(())
    }

    /// The CPU-interface index of the CPU with affinity `mpidr`, once that
    /// CPU has initialised its interface.
    fn interface_of(&self, mpidr: u64) -> Result<usize, GicError> {
        INTERFACE_MPIDR
            .iter()
            .position(|m| m.load(Ordering::Acquire) == mpidr)
            .ok_or(GicError::NoCpuInterface { mpidr })
    }

    /// The number of CPU interfaces the distributor implements.
    pub(super) fn cpu_count(&self) -> usize {
        self.cpus
    }

    /// Applies the recorded SGI/PPI configuration to this CPU's banked
    /// registers if it has changed since this CPU last did.
    pub(super) fn sync_this_cpu(&self) -> Result<(), GicError> {
        let index = self.interface_of(current_mpidr())?;
        let wanted = PRIVATE_GEN.load(Ordering::Acquire);
        if APPLIED[index].load(Ordering::Acquire) == wanted {
            return Ok(());
        }
        without_irqs(|| {
            let mut gic = self.gic.lock();
            for n in 0..PRIVATE_INTIDS as u32 {
                let state = PRIVATE[n as usize].load(Ordering::Acquire);
                let id = if n < IntId::SGI_COUNT {
                    IntId::sgi(n)
                } else {
                    IntId::ppi(n - IntId::SGI_COUNT)
                };
                self.configure_locked(&mut gic, id, state)?;
            }
            Ok::<(), GicError>(())
        })?;
        APPLIED[index].store(wanted, Ordering::Release);
        Ok(())
    }

    /// Writes one private INTID's wanted `state` into this CPU's bank.
    fn configure_locked(&self, gic: &mut GicV2, id: IntId, state: u8) -> Result<(), GicError> {
        if state & PRIVATE_ENABLED == 0 {
            return gic.enable_interrupt(id, false).map_err(GicError::DriverV2);
        }
        gic.set_group(id, InterruptGroup::Group0);
        write8(
            self.gicd + GICD_IPRIORITYR + u32::from(id) as usize,
            PRIORITY,
        );
        if id.is_ppi() {
            let trigger = if state & PRIVATE_EDGE != 0 {
                Trigger::Edge
            } else {
                Trigger::Level
            };
            gic.set_trigger(id, trigger);
        }
        gic.enable_interrupt(id, true).map_err(GicError::DriverV2)
    }

    /// Group 0, [`PRIORITY`], `trigger`, routed to the CPU with affinity
    /// `mpidr` (SPIs), enabled. A private INTID is recorded for every CPU
    /// and configured on this one now.
    pub(super) fn enable(&self, id: IntId, trigger: Trigger, mpidr: u64) -> Result<(), GicError> {
        if id.is_private() {
            let edge = if matches!(trigger, Trigger::Edge) {
                PRIVATE_EDGE
            } else {
                0
            };
            return self.set_private(id, PRIVATE_ENABLED | edge);
        }
        let target = 1u8 << self.interface_of(mpidr)?;
        without_irqs(|| {
            let mut gic = self.gic.lock();
            gic.set_group(id, InterruptGroup::Group0);
            write8(
                self.gicd + GICD_IPRIORITYR + u32::from(id) as usize,
                PRIORITY,
            );
            gic.set_trigger(id, trigger);
            write8(self.gicd + GICD_ITARGETSR + u32::from(id) as usize, target);
            gic.enable_interrupt(id, true).map_err(GicError::DriverV2)
        })
    }

    /// Disables `id` (a private INTID: recorded for every CPU, this one now).
    pub(super) fn disable(&self, id: IntId) -> Result<(), GicError> {
        if id.is_private() {
            return self.set_private(id, 0);
        }
        without_irqs(|| self.gic.lock().enable_interrupt(id, false)).map_err(GicError::DriverV2)
    }

    fn set_private(&self, id: IntId, state: u8) -> Result<(), GicError> {
        PRIVATE[u32::from(id) as usize].store(state, Ordering::Release);
        PRIVATE_GEN.fetch_add(1, Ordering::AcqRel);
        self.sync_this_cpu()?;
        // Wake CPUs waiting in WFE so they apply it (`sync_this_cpu`).
        aarch64_cpu::asm::sev();
        Ok(())
    }

    /// GICD_SGIR value raising SGI `sgi` on the CPU with affinity `mpidr`.
    pub(super) fn sgir_value(&self, sgi: u32, mpidr: u64) -> Result<u32, GicError> {
        let target = 1u32 << self.interface_of(mpidr)?;
        Ok(sgi | (target << GICD_SGIR_TARGETS_SHIFT))
    }

    /// The address of GICD_SGIR (for tests that raise an SGI with one store).
    pub(super) fn sgir_address(&self) -> usize {
        self.gicd + GICD_SGIR
    }

    /// Sends SGI `sgi` to the CPU with affinity `mpidr` (GICD_SGIR, target
    /// list filter 0: exactly the listed CPU).
    pub(super) fn send_sgi(&self, sgi: u32, mpidr: u64) -> Result<(), GicError> {
        let index = self.interface_of(mpidr)?;
        let target = SgiTarget::List {
            target_list_filter: SgiTargetListFilter::CPUTargetList,
            target_list: 1 << index,
        };
        without_irqs(|| self.gic.lock().send_sgi(IntId::sgi(sgi), target));
        Ok(())
    }

    /// The SPI routing of `n` as an affinity: `Some` when GICD_ITARGETSR
    /// names exactly one known CPU interface.
    pub(super) fn route(&self, n: usize) -> Option<u64> {
        let mask = read8(self.gicd + GICD_ITARGETSR + n);
        if mask.count_ones() != 1 {
            return None;
        }
        let m = INTERFACE_MPIDR[mask.trailing_zeros() as usize].load(Ordering::Acquire);
        (m != u64::MAX).then_some(m)
    }

    /// Makes SPI `n` pending (GICD_ISPENDR, same offset as on a GICv3).
    pub(super) fn set_pending(&self, n: usize) {
        without_irqs(|| {
            let _gic = self.gic.lock();
            write32(self.gicd + ISPENDR + 4 * (n / 32), 1 << (n % 32));
        });
    }

    /// The distributor's base (for the façade's raw ISENABLER/ISPENDR/ICFGR
    /// reads, at the same offsets as in a GICv3 distributor).
    pub(super) fn gicd(&self) -> usize {
        self.gicd
    }

    /// Whether the registers of private INTIDs the caller would read are its
    /// own bank (GICv2 cannot read another CPU's).
    pub(super) fn check_own_bank(&self, mpidr: u64) -> Result<(), GicError> {
        if mpidr == current_mpidr() {
            Ok(())
        } else {
            Err(GicError::BankedElsewhere { mpidr })
        }
    }

    /// GICC_HPPIR without acknowledging: the pending INTID, if any.
    pub(super) fn highest_pending(&self) -> Option<IntId> {
        let n = read32(self.gicc + GICC_HPPIR) & INTID_MASK;
        if n == INTID_NONE {
            None
        } else {
            IntId::try_from(n).ok()
        }
    }

    /// Acknowledges the highest-priority pending interrupt (GICC_IAR). The
    /// returned value keeps an SGI's source-CPU bits for [`Self::end`].
    pub(super) fn acknowledge(&self) -> Option<IntId> {
        without_irqs(|| {
            self.gic
                .lock()
                .get_and_acknowledge_interrupt(InterruptGroup::Group0)
        })
    }

    /// Ends an acknowledged interrupt (GICC_EOIR), with the value
    /// [`Self::acknowledge`] returned.
    pub(super) fn end(&self, raw: IntId) {
        without_irqs(|| self.gic.lock().end_interrupt(raw, InterruptGroup::Group0));
    }
}

fn read8(addr: usize) -> u8 {
    // SAFETY: only called with GICD_ITARGETSR bytes inside the DTB's GICD
    // frame (mapped as device memory); byte reads of these registers are
    // architecturally supported and have no side effects.
    unsafe { (addr as *const u8).read_volatile() }
}

fn write8(addr: usize, value: u8) {
    // SAFETY: only called with the GicV2 lock held, for GICD_IPRIORITYR and
    // GICD_ITARGETSR bytes of the INTID being configured (byte-accessible
    // registers inside the mapped GICD frame).
    unsafe { (addr as *mut u8).write_volatile(value) }
}
