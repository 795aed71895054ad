//! On-target tests of the GICv3 bring-up and the IRQ path at EL2: SGIs to
//! self, register preservation across an interrupt, unhandled and spurious
//! interrupts, masking with DAIF.I, and the SMMU's wired interrupts (found by
//! name in the DTB, registered, delivered through the distributor by making
//! them pending; the SMMU itself is not touched).

#![no_std]
#![no_main]

extern crate alloc;

#[path = "../src/image/mod.rs"]
mod image;

use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use image::console::println;
use image::gic::{self, IntId, Trigger};
use image::harness::{self, TestResult, check, check_eq, tests, try_ok};
use image::{cpu, smp};

/// SGIs used here: one with a counting handler, one that scribbles over
/// every caller-saved register, one left without a handler.
const SGI_COUNT: u32 = 1;
const SGI_SCRIBBLE: u32 = 2;
const SGI_UNHANDLED: u32 = 7;

/// Bound on every wait for an interrupt (generic timer).
const WAIT_NS: u64 = 100_000_000;

fn main() -> ! {
    image::init();
    if let Err(e) = gic::init() {
        println!("irq: gic::init failed: {e}");
    }
    harness::run(
        "irq",
        tests![
            gic_comes_up_from_the_dtb,
            sgi_to_self_is_taken_once,
            interrupted_code_keeps_its_registers,
            unregistered_interrupt_is_counted_and_ended,
            dispatch_with_nothing_pending_is_spurious,
            masked_irqs_are_deferred_until_unmasked,
            without_irqs_restores_the_mask,
            smmu_irqs_are_in_the_dtb_by_name,
            smmu_irqs_can_be_registered_and_delivered,
        ],
    )
}

static COUNTED: AtomicU32 = AtomicU32::new(0);
static LAST_INTID: AtomicU32 = AtomicU32::new(u32::MAX);

fn counting_handler(intid: IntId) {
    LAST_INTID.store(u32::from(intid), Ordering::Release);
    COUNTED.fetch_add(1, Ordering::AcqRel);
}

fn gic_comes_up_from_the_dtb() -> TestResult {
    try_ok!(gic::init());
    let dtb_version = image::boot()
        .platform
        .gic
        .as_ref()
        .ok()
        .map(|g| g.version());
    println!(
        "irq: GIC version {:?} (DTB: {dtb_version:?})",
        gic::version()
    );
    check_eq!(gic::version(), dtb_version);
    check_eq!(gic::cpu_count(), smp::cpu_mpidrs().len());
    check!(gic::cpu_count() >= 1);
    // Delivery to EL2 needs HCR_EL2.IMO; a GICv3 interface needs
    // ICC_SRE_EL2.SRE (a GICv2 has no system-register interface: ICC_*
    // registers are UNDEFINED there).
    let hcr: u64;
    // SAFETY: reading a system register has no side effects.
    unsafe { asm!("mrs {}, hcr_el2", out(reg) hcr, options(nomem, nostack, preserves_flags)) };
    check!(hcr & (1 << 4) != 0, "HCR_EL2 = {hcr:#x}");
    if gic::version() == Some(3) {
        let sre: u64;
        // SAFETY: reading a system register has no side effects; a GICv3
        // CPU interface implements it.
        unsafe {
            asm!("mrs {}, icc_sre_el2", out(reg) sre, options(nomem, nostack, preserves_flags))
        };
        check!(sre & 1 != 0, "ICC_SRE_EL2 = {sre:#x}");
    }
    check!(!gic::irqs_enabled(), "IRQs unmasked before anyone asked");
    Ok(())
}

fn sgi_to_self_is_taken_once() -> TestResult {
    let intid = try_ok!(gic::register_sgi(SGI_COUNT, counting_handler));
    let me = gic::current_mpidr();
    let cfg = try_ok!(gic::config(intid, me));
    check!(cfg.enabled, "{cfg:?}");
    let before = COUNTED.load(Ordering::Acquire);
    let taken_before = gic::count(intid);
    gic::enable_irqs();
    try_ok!(gic::send_sgi_to_self(SGI_COUNT));
    check!(smp::wait_until(WAIT_NS, || COUNTED.load(Ordering::Acquire) > before));
    // Nothing more arrives: exactly one run of the handler.
    cpu::delay_ns(2_000_000);
    check_eq!(COUNTED.load(Ordering::Acquire), before + 1);
    check_eq!(gic::count(intid), taken_before + 1);
    check_eq!(LAST_INTID.load(Ordering::Acquire), u32::from(intid));
    check!(gic::irqs_enabled());
    Ok(())
}

static SCRIBBLED: AtomicU32 = AtomicU32::new(0);

/// Overwrites every caller-saved GPR and all 32 SIMD registers (whole
/// 128 bits) and FPSR: if the vectors failed to save any of them, the
/// interrupted loop would notice.
fn scribbling_handler(_: IntId) {
    // SAFETY: only registers declared as clobbered are written.
    unsafe {
        asm!(
            "mov x0, #0x5a5a", "mov x1, #0x5a5a", "mov x2, #0x5a5a", "mov x3, #0x5a5a",
            "mov x4, #0x5a5a", "mov x5, #0x5a5a", "mov x6, #0x5a5a", "mov x7, #0x5a5a",
            "mov x8, #0x5a5a", "mov x9, #0x5a5a", "mov x10, #0x5a5a", "mov x11, #0x5a5a",
            "mov x12, #0x5a5a", "mov x13, #0x5a5a", "mov x14, #0x5a5a", "mov x15, #0x5a5a",
            "mov x16, #0x5a5a", "mov x17, #0x5a5a",
            "movi v0.2d, #-1", "movi v1.2d, #-1", "movi v2.2d, #-1", "movi v3.2d, #-1",
            "movi v4.2d, #-1", "movi v5.2d, #-1", "movi v6.2d, #-1", "movi v7.2d, #-1",
            "movi v8.2d, #-1", "movi v9.2d, #-1", "movi v10.2d, #-1", "movi v11.2d, #-1",
            "movi v12.2d, #-1", "movi v13.2d, #-1", "movi v14.2d, #-1", "movi v15.2d, #-1",
            "movi v16.2d, #-1", "movi v17.2d, #-1", "movi v18.2d, #-1", "movi v19.2d, #-1",
            "movi v20.2d, #-1", "movi v21.2d, #-1", "movi v22.2d, #-1", "movi v23.2d, #-1",
            "movi v24.2d, #-1", "movi v25.2d, #-1", "movi v26.2d, #-1", "movi v27.2d, #-1",
            "movi v28.2d, #-1", "movi v29.2d, #-1", "movi v30.2d, #-1", "movi v31.2d, #-1",
            "mov x0, #0x8000000",
            "msr fpsr, x0",
            out("x0") _, out("x1") _, out("x2") _, out("x3") _, out("x4") _, out("x5") _,
            out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _,
            out("x17") _,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _,
            out("v6") _, out("v7") _, out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _, out("v16") _,
            out("v17") _, out("v18") _, out("v19") _, out("v20") _, out("v21") _,
            out("v22") _, out("v23") _, out("v24") _, out("v25") _, out("v26") _,
            out("v27") _, out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nostack),
        );
    }
    SCRIBBLED.fetch_add(1, Ordering::AcqRel);
}

/// ICC_SGI1R_EL1 for SGI `sgi` to the CPU with affinity `mpidr` (Aff0 < 16).
fn sgi1r(sgi: u32, mpidr: u64) -> u64 {
    let aff = |n: u32| (mpidr >> (8 * n)) & 0xff;
    (aff(4) << 48) | (aff(2) << 32) | (u64::from(sgi) << 24) | (aff(1) << 16) | (1 << aff(0))
}

fn checksum(n: u64) -> u64 {
    (0..n).fold(0u64, |s, i| (s ^ i).rotate_right(7).wrapping_add(i << 3))
}

/// The SGI (ICC_SGI1R_EL1 on a GICv3, GICD_SGIR on a GICv2) is sent with
/// IRQs masked and unmasked halfway through a loop that
/// keeps its whole state in registers (GPRs and v20/v31): the IRQ is taken
/// right there, the handler overwrites every caller-saved register, and the
/// loop must still produce the right checksum, find its sentinels in x0..x11
/// and its SIMD values in v20/v31, and see FPSR unchanged. (Checked by
/// mutation: dropping the restore of x10/x11 or q20/q21 in the vectors fails
/// this test.)
fn interrupted_code_keeps_its_registers() -> TestResult {
    try_ok!(gic::register_sgi(SGI_SCRIBBLE, counting_and_scribbling));
    const N: u64 = 20_000;
    const PAT_LO: u64 = 0x0123_4567_89ab_cdef;
    const PAT_HI: u64 = 0xfedc_ba98_7654_3210;
    let before = SCRIBBLED.load(Ordering::Acquire);
    let (sum, lo, hi, lo31, fpsr): (u64, u64, u64, u64, u64);
    // x0..x11 hold sentinels across the whole block (the handler writes
    // them all); the loop's own state lives in whatever registers are left.
    let seeds: [u64; 12] = core::array::from_fn(|k| 0x1111_1111_1111_1111 * (k as u64 + 1));
    let mut kept = seeds;
    let taken_at: u64;
    // The same register-only loop for both GIC versions; only the
    // instruction that raises the SGI differs.
    macro_rules! interrupted_loop {
        ($raise:literal; $($doorbell:tt)*) => {
            asm!(
                "msr daifset, #2",
                "msr fpsr, xzr",
                "mov v20.d[0], {plo}",
                "mov v20.d[1], {phi}",
                "mov v31.d[0], {phi}",
                $raise,
                "isb",
                "mov {sum}, #0",
                "mov {i}, #0",
                "mov {at}, #0",
                "2:",
                "cmp {i}, {half}",
                "b.ne 3f",
                "msr daifclr, #2",
                "isb",
                "ldr {at}, [{cnt}]",
                "3:",
                "eor {sum}, {sum}, {i}",
                "ror {sum}, {sum}, #7",
                "add {sum}, {sum}, {i}, lsl #3",
                "add {i}, {i}, #1",
                "cmp {i}, {n}",
                "b.lo 2b",
                "mov {lo}, v20.d[0]",
                "mov {hi}, v20.d[1]",
                "mov {lo31}, v31.d[0]",
                "mrs {fpsr}, fpsr",
                plo = in(reg) PAT_LO,
                phi = in(reg) PAT_HI,
                half = in(reg) N / 2,
                n = in(reg) N,
                cnt = in(reg) SCRIBBLED.as_ptr(),
                sum = out(reg) sum,
                i = out(reg) _,
                at = out(reg) taken_at,
                lo = out(reg) lo,
                hi = out(reg) hi,
                lo31 = out(reg) lo31,
                fpsr = out(reg) fpsr,
                inout("x0") kept[0],
                inout("x1") kept[1],
                inout("x2") kept[2],
                inout("x3") kept[3],
                inout("x4") kept[4],
                inout("x5") kept[5],
                inout("x6") kept[6],
                inout("x7") kept[7],
                inout("x8") kept[8],
                inout("x9") kept[9],
                inout("x10") kept[10],
                inout("x11") kept[11],
                out("v20") _,
                out("v31") _,
                $($doorbell)*,
                options(nostack),
            )
        };
    }
    let me = gic::current_mpidr();
    match try_ok!(gic::sgir_write(SGI_SCRIBBLE, me)) {
        None => {
            let sgir = sgi1r(SGI_SCRIBBLE, me);
            // SAFETY: register-only code plus DAIF and ICC_SGI1R_EL1 writes
            // (an SGI to this CPU, whose handler is registered); leaves IRQs
            // unmasked.
            unsafe { interrupted_loop!("msr icc_sgi1r_el1, {sgir}"; sgir = in(reg) sgir) };
        }
        Some((addr, value)) => {
            // SAFETY: register-only code plus DAIF writes and one GICD_SGIR
            // store, completed by DSB (the DTB's distributor, mapped as
            // device memory: an SGI to this CPU, whose handler is
            // registered); leaves IRQs unmasked.
            unsafe {
                interrupted_loop!("str {sgir:w}, [{addr}]\ndsb sy";
                    sgir = in(reg) value, addr = in(reg) addr)
            };
        }
    }
    // The handler had run by the instruction after the unmask.
    check_eq!(taken_at as u32, before + 1);
    check_eq!(SCRIBBLED.load(Ordering::Acquire), before + 1);
    check_eq!(sum, checksum(N));
    check_eq!(kept, seeds);
    check_eq!((lo, hi, lo31), (PAT_LO, PAT_HI, PAT_HI));
    check_eq!(fpsr, 0);
    Ok(())
}

fn counting_and_scribbling(intid: IntId) {
    scribbling_handler(intid);
}

fn unregistered_interrupt_is_counted_and_ended() -> TestResult {
    let intid = IntId::sgi(SGI_UNHANDLED);
    let me = gic::current_mpidr();
    // Enabled in the GIC, no handler.
    try_ok!(gic::enable(intid, Trigger::Edge, me));
    gic::enable_irqs();
    for round in 1..=2 {
        let before = gic::unhandled_count();
        let taken = gic::count(intid);
        try_ok!(gic::send_sgi_to_self(SGI_UNHANDLED));
        check!(
            smp::wait_until(WAIT_NS, || gic::unhandled_count() > before),
            "round {round}: the unhandled SGI was not taken"
        );
        check_eq!(gic::unhandled_count(), before + 1);
        check_eq!(gic::count(intid), taken + 1);
        check_eq!(gic::last_unhandled(), Some(intid));
    }
    // Ended (EOI): a registered interrupt of the same priority still gets
    // through; an un-ended one would keep the running priority at 0x80.
    let before = COUNTED.load(Ordering::Acquire);
    try_ok!(gic::send_sgi_to_self(SGI_COUNT));
    check!(smp::wait_until(WAIT_NS, || COUNTED.load(Ordering::Acquire) > before));
    try_ok!(gic::unregister(intid));
    let cfg = try_ok!(gic::config(intid, me));
    if gic::version() == Some(2) && cfg.enabled {
        // A GICv2 may keep SGIs permanently enabled (QEMU's does: its
        // GICD_ICENABLER ignores them). Unregistered, the SGI still arrives
        // and is counted and ended as unhandled.
        let before = gic::unhandled_count();
        try_ok!(gic::send_sgi_to_self(SGI_UNHANDLED));
        check!(
            smp::wait_until(WAIT_NS, || gic::unhandled_count() > before),
            "the unregistered SGI was not taken"
        );
        check_eq!(gic::last_unhandled(), Some(intid));
    } else {
        check!(!cfg.enabled);
    }
    Ok(())
}

fn dispatch_with_nothing_pending_is_spurious() -> TestResult {
    let spurious = gic::spurious_count();
    let unhandled = gic::unhandled_count();
    let counted = COUNTED.load(Ordering::Acquire);
    gic::without_irqs(gic::dispatch);
    check_eq!(gic::spurious_count(), spurious + 1);
    check_eq!(gic::unhandled_count(), unhandled);
    check_eq!(COUNTED.load(Ordering::Acquire), counted);
    Ok(())
}

fn masked_irqs_are_deferred_until_unmasked() -> TestResult {
    let intid = IntId::sgi(SGI_COUNT);
    let before = COUNTED.load(Ordering::Acquire);
    gic::disable_irqs();
    try_ok!(gic::send_sgi_to_self(SGI_COUNT));
    cpu::delay_ns(5_000_000);
    let while_masked = COUNTED.load(Ordering::Acquire);
    let pending = gic::highest_pending();
    let cfg = try_ok!(gic::config(intid, gic::current_mpidr()));
    gic::enable_irqs();
    check_eq!(while_masked, before);
    check_eq!(pending, Some(intid));
    check!(cfg.pending, "{cfg:?}");
    // Taken as soon as unmasked (enable_irqs ends with an ISB).
    check_eq!(COUNTED.load(Ordering::Acquire), before + 1);
    check_eq!(gic::highest_pending(), None);
    Ok(())
}

fn without_irqs_restores_the_mask() -> TestResult {
    gic::enable_irqs();
    let inside = gic::without_irqs(|| (gic::irqs_enabled(), gic::without_irqs(gic::irqs_enabled)));
    check_eq!(inside, (false, false));
    check!(gic::irqs_enabled());
    gic::disable_irqs();
    gic::without_irqs(|| ());
    check!(!gic::irqs_enabled());
    gic::enable_irqs();
    Ok(())
}

fn smmu_irqs() -> [(&'static str, Option<u32>); 4] {
    let i = image::boot().platform.smmu.irqs;
    [
        ("eventq", i.eventq),
        ("priq", i.priq),
        ("cmdq-sync", i.cmdq_sync),
        ("gerror", i.gerror),
    ]
}

fn smmu_irqs_are_in_the_dtb_by_name() -> TestResult {
    let irqs = smmu_irqs();
    println!("irq: SMMU interrupts {irqs:?}");
    for (name, n) in irqs {
        let n = n.ok_or_else(|| harness::Failure::new(alloc::format!("no {name} interrupt")))?;
        check!((32..1020).contains(&n), "{name} is INTID {n}, not an SPI");
    }
    // QEMU virt: SPIs 74..77.
    check_eq!(irqs.map(|(_, n)| n.unwrap()), [106, 107, 108, 109]);
    Ok(())
}

static SMMU_IRQS_TAKEN: AtomicU32 = AtomicU32::new(0);
static SMMU_LAST_ON: AtomicU64 = AtomicU64::new(u64::MAX);

fn smmu_handler(_: IntId) {
    SMMU_LAST_ON.store(gic::current_mpidr(), Ordering::Release);
    SMMU_IRQS_TAKEN.fetch_add(1, Ordering::AcqRel);
}

/// SMMU register offsets read here (IRQ_CTRL, its ACK), page 0.
const SMMU_IRQ_CTRL: usize = 0x50;
const SMMU_IRQ_CTRLACK: usize = 0x54;

fn smmu_irqs_can_be_registered_and_delivered() -> TestResult {
    let me = gic::current_mpidr();
    let ids: alloc::vec::Vec<IntId> = smmu_irqs()
        .iter()
        .filter_map(|(_, n)| n.and_then(|n| IntId::try_from(n).ok()))
        .collect();
    check_eq!(ids.len(), 4);
    for &id in &ids {
        try_ok!(gic::register(id, Trigger::Edge, smmu_handler));
        let cfg = try_ok!(gic::config(id, me));
        check!(cfg.enabled && cfg.edge && !cfg.pending, "{id:?}: {cfg:?}");
        check_eq!(cfg.route, Some(me));
    }
    // The SMMU's own interrupt enables are off (reset state, never written
    // by this suite), so nothing arrives from it.
    let smmu = image::boot().platform.smmu.reg.base as usize;
    // SAFETY: IRQ_CTRL and IRQ_CTRLACK are 32-bit SMMU registers in the
    // DTB's (mapped, device) SMMU region; reading them has no side effects.
    let (ctrl, ack) = unsafe {
        (
            ((smmu + SMMU_IRQ_CTRL) as *const u32).read_volatile(),
            ((smmu + SMMU_IRQ_CTRLACK) as *const u32).read_volatile(),
        )
    };
    check_eq!((ctrl, ack), (0, 0));
    gic::enable_irqs();
    cpu::delay_ns(2_000_000);
    check_eq!(SMMU_IRQS_TAKEN.load(Ordering::Acquire), 0);
    // The GIC path works without the SMMU: make each SPI pending in the
    // distributor; it is routed to this CPU and reaches the handler once.
    for (k, &id) in ids.iter().enumerate() {
        try_ok!(gic::set_pending(id));
        check!(
            smp::wait_until(WAIT_NS, || SMMU_IRQS_TAKEN.load(Ordering::Acquire)
                > k as u32),
            "{id:?} made pending but not taken"
        );
        check_eq!(gic::count(id), 1);
        check_eq!(SMMU_LAST_ON.load(Ordering::Acquire), me);
    }
    cpu::delay_ns(1_000_000);
    check_eq!(SMMU_IRQS_TAKEN.load(Ordering::Acquire), 4);
    for &id in &ids {
        try_ok!(gic::unregister(id));
        check!(!try_ok!(gic::config(id, me)).enabled);
    }
    Ok(())
}
