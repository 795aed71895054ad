//! Creating the driver for the board's SMMU: the one place that turns the
//! DTB's SMMU node into an [`Smmu`].

use core::ptr::NonNull;

use smmuv3::MMIO_SIZE;
use smmuv3::smmu::{Config, Smmu};
use smmuv3::{Error, Invalid, Result};

use super::dma::ImageHal;

/// The driver for the SMMU the DTB describes, probed and allocated but not
/// yet enabled. Several may be created one after another (tests do); only
/// one may exist at a time, since each believes it owns the hardware.
pub fn new_smmu(config: Config) -> Result<Smmu<ImageHal>> {
    let reg = super::boot().platform.smmu.reg;
    if reg.size < MMIO_SIZE as u64 {
        return Err(Error::Invalid(Invalid::RegisterRegion));
    }
    let base = NonNull::new(reg.base as *mut u8).ok_or(Error::Invalid(Invalid::RegisterRegion))?;
    // SAFETY: the MMU maps the DTB's SMMU region (both pages) as device
    // memory, identity mapped, for the life of the image; callers keep at
    // most one driver instance alive at a time.
    unsafe { Smmu::new(base, config) }
}

// ---------------------------------------------------------------------------
// Interrupts: the SMMU's eventq and gerror lines, found by name in the DTB.

use alloc::vec::Vec;
use core::marker::PhantomData;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use smmuv3::event::Event;

use super::gic::{self, IntId, Trigger};

/// The driver the interrupt handler services; null when none. Published only
/// once the driver is fully constructed and enabled, so the handler never
/// sees a half-initialised driver.
static ACTIVE: AtomicPtr<Smmu<ImageHal>> = AtomicPtr::new(null_mut());
/// Events drained by the interrupt handler and not yet taken.
static RECEIVED: spin::Mutex<Vec<Event>> = spin::Mutex::new(Vec::new());
/// Most events kept between two `take_events` calls.
const MAX_BUFFERED: usize = 1 << 14;
static DROPPED: AtomicU32 = AtomicU32::new(0);
/// What the handler does with each event before keeping it (see
/// [`on_event`]).
static ON_EVENT: spin::Mutex<Option<EventPolicy>> = spin::Mutex::new(None);

/// A fault policy run by the interrupt handler for every event, in
/// interrupt context, from the `Smmu::service` callback: it may call the
/// driver's interrupt-safe methods (e.g. `Smmu::quarantine`).
pub type EventPolicy = fn(&Smmu<ImageHal>, &Event);

/// Installs (or with `None` removes) the policy the SMMU interrupt handler
/// applies to every event it drains.
pub fn on_event(policy: Option<EventPolicy>) {
    gic::without_irqs(|| *ON_EVENT.lock() = policy);
}
static TAKEN: AtomicU32 = AtomicU32::new(0);

/// While alive, the SMMU's interrupts are serviced by the driver it borrows.
/// Dropping it stops that before the driver can go away.
#[derive(Debug)]
pub struct IrqGuard<'a> {
    /// The INTIDs wired (eventq, gerror).
    pub intids: Vec<u32>,
    _driver: PhantomData<&'a Smmu<ImageHal>>,
}

impl Drop for IrqGuard<'_> {
    fn drop(&mut self) {
        // The SMMU's SPIs are routed to the boot CPU only: with IRQs masked
        // here, no handler is using the pointer while it is cleared.
        gic::without_irqs(|| ACTIVE.store(null_mut(), Ordering::Release));
    }
}

/// Routes the SMMU's `gerror` interrupt to `smmu.service()` and its
/// `eventq` interrupt to `smmu.drain_events()` (each event goes through the
/// [`on_event`] policy, then into the buffer [`take_events`] empties), and
/// unmasks IRQs. Returns `None` when the DTB names neither interrupt:
/// the caller then polls ([`take_events`] drains by itself).
pub fn use_interrupts(
    smmu: &Smmu<ImageHal>,
) -> core::result::Result<Option<IrqGuard<'_>>, gic::GicError> {
    let irqs = super::boot().platform.smmu.irqs;
    let wanted: Vec<u32> = [irqs.eventq, irqs.gerror].into_iter().flatten().collect();
    if wanted.is_empty() {
        return Ok(None);
    }
    gic::init()?;
    gic::without_irqs(|| ACTIVE.store(smmu as *const _ as *mut _, Ordering::Release));
    for &n in &wanted {
        let id = IntId::try_from(n).map_err(|_| gic::GicError::NotInitialised)?;
        gic::register(id, Trigger::Edge, smmu_irq)?;
    }
    gic::enable_irqs();
    Ok(Some(IrqGuard {
        intids: wanted,
        _driver: PhantomData,
    }))
}

/// Interrupts taken by the SMMU handler so far.
pub fn interrupts_taken() -> u32 {
    TAKEN.load(Ordering::Relaxed)
}

fn smmu_irq(id: IntId) {
    TAKEN.fetch_add(1, Ordering::Relaxed);
    let p = ACTIVE.load(Ordering::Acquire);
    if p.is_null() {
        return;
    }
    // SAFETY: `use_interrupts` published a reference that the `IrqGuard`'s
    // lifetime keeps valid, and the guard clears it (with IRQs masked on this,
    // the only CPU the SMMU's SPIs target) before the driver can be dropped.
    let smmu = unsafe { &*p };
    // `take_events` holds the buffer with IRQs masked, so on this CPU the
    // lock is free whenever the handler runs.
    let Some(mut buf) = RECEIVED.try_lock() else {
        return;
    };
    // Set only with IRQs masked: free whenever the handler runs.
    let policy = ON_EVENT.try_lock().and_then(|p| *p);
    let mut keep = |e: Event| {
        if let Some(policy) = policy {
            policy(smmu, &e);
        }
        if buf.len() < MAX_BUFFERED {
            buf.push(e);
        } else {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    };
    // The event queue interrupt only drains events (one EVENTQ_PROD read);
    // GERROR is looked at when the SMMU says there is a global error.
    let gerror = super::boot().platform.smmu.irqs.gerror;
    if gerror.and_then(|g| IntId::try_from(g).ok()) == Some(id) {
        if let Err(e) = smmu.service(&mut keep) {
            log::error!("SMMU interrupt: {e}");
        }
    } else {
        let _ = smmu.drain_events(&mut keep);
    }
}

/// Every event received so far: those the interrupt handler drained, then
/// whatever is still in the queue (the polling path, and the fallback when
/// there is no interrupt).
pub fn take_events(smmu: &Smmu<ImageHal>) -> Vec<Event> {
    gic::without_irqs(|| {
        let mut buf = RECEIVED.lock();
        let _ = smmu.drain_events(|e| buf.push(e));
        core::mem::take(&mut *buf)
    })
}

/// Events the handler had to drop because nobody took them.
pub fn events_dropped() -> u32 {
    DROPPED.load(Ordering::Relaxed)
}
