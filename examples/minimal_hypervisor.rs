//! A minimal hypervisor integration of the driver, booted under QEMU
//! (`cargo run --release --example minimal_hypervisor`): a `Hal` over the
//! hypervisor's frame allocator, the SMMU brought up with its interrupts
//! serviced, one VM domain per ownership model (driver-owned tables a CPU
//! could share; hypervisor-owned tables), an `edu` device's DMA checked in
//! each (through an IPA it lands at the right PA; outside the VM it faults,
//! the fault is recorded and the device quarantined from the `service`
//! callback), and a clean teardown. Board bring-up (boot, MMU, DTB, PCI,
//! GIC, the frame allocator, stage-2 tables built with `aarch64-paging`)
//! comes from the image modules in `src/image/`, as the test images use it.
#![no_std]
#![no_main]

extern crate alloc;

#[path = "../src/image/mod.rs"]
mod image;

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use image::console::println;
use image::demo::{CANARY, Page};
use image::{boot, cpu, dma, edu::Edu, gic, hvtables::HvStage2};
use smmuv3::domain::{DomainOptions, ExternalStage2};
use smmuv3::smmu::{Config, Smmu};
use smmuv3::stage2::{Perm, Stage2Config};
use smmuv3::{DmaRegion, Hal, Result};

/// The hypervisor's side of the driver: device-visible memory from its
/// frame allocator, cache maintenance and a clock.
struct FrameHal;

// SAFETY: `dma::alloc` hands out zeroed, naturally aligned blocks of RAM
// that this allocation alone owns, identity mapped write-back cacheable, so
// `vaddr == paddr` is where the SMMU reaches them.
unsafe impl Hal for FrameHal {
    fn dma_alloc(size: usize, align: usize) -> Option<DmaRegion> {
        dma::alloc(size, align)
    }
    unsafe fn dma_free(region: DmaRegion) {
        // SAFETY: forwarded from the driver: the region came from
        // `dma_alloc` and nothing uses it any more.
        unsafe { dma::free(region) }
    }
    fn dcache_clean(vaddr: *const u8, len: usize) {
        cpu::dcache_clean(vaddr as usize, len);
    }
    fn dcache_invalidate(vaddr: *const u8, len: usize) {
        cpu::dcache_clean_invalidate(vaddr as usize, len);
    }
    fn now_ns() -> u64 {
        cpu::now_ns()
    }
}

/// The SMMU, shared with its interrupt handler.
static SMMU: spin::Once<Smmu<FrameHal>> = spin::Once::new();
/// Event records the interrupt handler received.
static EVENTS: AtomicU32 = AtomicU32::new(0);

/// The SMMU's eventq and gerror interrupts: service it, and quarantine any
/// device that faults (`quarantine` never waits for a lock: interrupt-safe).
fn smmu_irq(_: gic::IntId) {
    let Some(smmu) = SMMU.get() else { return };
    let serviced = smmu.service(|event| {
        EVENTS.fetch_add(1, Relaxed);
        if let Err(e) = smmu.quarantine(event.sid) {
            println!("  quarantine of {:#x} failed: {e}", event.sid);
        }
    });
    if let Err(e) = serviced {
        println!("  SMMU service failed: {e}");
    }
}

const IPA_SRC: u64 = 0x1000_0000;
const IPA_DST: u64 = IPA_SRC + 0x1000;
const IPA_OUTSIDE: u64 = IPA_SRC + 0x10_0000;

/// One VM's device DMA, checked: a copy through the VM's IPAs lands at the
/// PAs behind them; a write outside the VM faults, is recorded, and
/// quarantines the device (whose next DMA is aborted) until released.
fn check_dma(smmu: &Smmu<FrameHal>, edu: &Edu, sid: u32, src: &Page, dst: &Page) -> Result<bool> {
    src.fill_pattern(sid as u8);
    dst.fill(CANARY);
    let copied =
        edu.dma_from_ram(0, IPA_SRC, 256).is_ok() && edu.dma_to_ram(0, IPA_DST, 256).is_ok();
    let landed = copied && dst.read(0, 256) == src.read(0, 256) && dst.get(256) == CANARY;
    let events = EVENTS.load(Relaxed);
    let _ = edu.dma_to_ram(0, IPA_OUTSIDE, 64);
    let faulted = image::smp::wait_until(1_000_000_000, || smmu.is_quarantined(sid));
    dst.fill(CANARY);
    let aborted = edu.dma_to_ram(0, IPA_DST, 256).is_ok() && dst.all(CANARY);
    smmu.release(sid)?;
    let (pa, n) = (dst.pa(), EVENTS.load(Relaxed) - events);
    println!(
        "  SID {sid:#x}: DMA via IPA {IPA_DST:#x} -> PA {pa:#x}: {landed}; outside: {n} records, quarantined {faulted}, then aborted {aborted}"
    );
    Ok(landed && faulted && aborted && n > 0)
}

fn run(edus: &[Edu], src: &Page, dst: &Page) -> Result<bool> {
    let (reg, irqs) = (boot().platform.smmu.reg, boot().platform.smmu.irqs);
    let (a, b) = (&edus[0], &edus[edus.len() - 1]);
    let (Some(base), Some(sid_a), Some(sid_b)) =
        (NonNull::new(reg.base as *mut u8), a.stream_id, b.stream_id)
    else {
        return Ok(false);
    };
    // SAFETY: the image maps the DTB's SMMU pages as device memory for its
    // whole life, and this is the only driver for that SMMU.
    let probed = unsafe { Smmu::new(base, Config::default()) }?;
    let smmu = SMMU.call_once(|| probed);
    smmu.enable()?;
    if gic::init().is_ok() {
        for id in [irqs.eventq, irqs.gerror].into_iter().flatten() {
            if let Ok(id) = gic::IntId::try_from(id) {
                let _ = gic::register(id, gic::Trigger::Edge, smmu_irq);
            }
        }
        gic::enable_irqs();
    }
    let vtcr = HvStage2::vtcr(); // the VMs' VTCR_EL2

    // VM 1: the driver owns the tables; the VM's CPU would load VTTBR_EL2.
    let vm1 = smmu.create_domain(DomainOptions::new(Stage2Config::from_vtcr(vtcr)?))?;
    smmu.map(vm1, IPA_SRC, src.pa(), 0x1000, Perm::Read)?;
    smmu.map(vm1, IPA_DST, dst.pa(), 0x1000, Perm::ReadWrite)?;
    smmu.attach(vm1, sid_a)?;
    let vttbr = smmu.domain_info(vm1)?.vttbr();
    println!("VM 1 (driver-owned tables), VTTBR_EL2 {vttbr:#x}:");
    let ok1 = check_dma(smmu, a, sid_a, src, dst)?;

    // VM 2: the hypervisor owns the tables; the driver invalidates on request.
    let mut tables = HvStage2::new();
    let mapped = tables.map(IPA_SRC, src.pa(), 0x1000, false).is_ok()
        && tables.map(IPA_DST, dst.pa(), 0x1000, true).is_ok();
    let vm2 = smmu.create_external_domain(ExternalStage2 {
        vtcr,
        root: tables.root(),
        vmid: None,
        access_flag_fault_disable: true,
    })?;
    smmu.invalidate(vm2, IPA_SRC, 0x2000)?; // after every change to the tables
    smmu.detach(sid_a)?; // one device per VM here (a may be b)
    smmu.attach(vm2, sid_b)?;
    println!("VM 2 (hypervisor-owned tables, root {:#x}):", tables.root());
    let ok2 = mapped && check_dma(smmu, b, sid_b, src, dst)?;

    // Teardown: every device back to abort, domains (and VMIDs) freed.
    smmu.detach(sid_b)?;
    smmu.destroy_domain(vm1)?;
    smmu.destroy_domain(vm2)?;
    smmu.disable()?;
    Ok(ok1 && ok2)
}

fn main() -> ! {
    let edus = image::edu::find_all(&image::init().pci);
    let result = match (edus.is_empty(), Page::new(), Page::new()) {
        (false, Ok(src), Ok(dst)) => run(&edus, &src, &dst),
        _ => Ok(false),
    };
    println!("minimal_hypervisor: {result:?}");
    image::exit(if result == Ok(true) { 0 } else { 1 })
}
