//! On-target tests of the second CPU: PSCI CPU_ON through the DTB's conduit,
//! the secondary's state (MPIDR, EL2, MMU on), a shared spin-locked counter
//! incremented by both CPUs, an SGI from CPU 0 taken on CPU 1 (its GIC
//! redistributor and CPU interface work), and the `run_on_cpu1` helper's
//! bounded waits and errors. Every wait is bounded: a CPU that never starts
//! fails a test instead of hanging the image.

#![no_std]
#![no_main]

extern crate alloc;

#[path = "../src/image/mod.rs"]
mod image;

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use image::console::println;
use image::gic::{self, IntId};
use image::harness::{self, TestResult, check, check_eq, tests, try_ok};
use image::psci::{self, PsciError};
use image::smp::{self, SmpError};
use image::{cpu, mmu};
use smccc::psci::AffinityState;

/// Bound on waiting for a job or an interrupt on CPU 1.
const WAIT_NS: u64 = 2_000_000_000;

fn main() -> ! {
    image::init();
    harness::run(
        "smp",
        tests![
            psci_answers_through_the_dtb_conduit,
            cpus_are_listed_in_the_dtb,
            cpu_on_with_a_bad_mpidr_is_an_error,
            cpu1_starts_at_el2_with_its_own_mpidr,
            both_cpus_increment_a_shared_counter,
            cpu1_takes_an_sgi_sent_by_cpu0,
            a_busy_cpu1_refuses_a_second_job,
            a_job_that_does_not_finish_is_a_timeout,
            a_started_cpu_cannot_be_started_again,
        ],
    )
}

fn psci_answers_through_the_dtb_conduit() -> TestResult {
    let (major, minor) = try_ok!(psci::version());
    println!("smp: PSCI {major}.{minor}");
    check!((major, minor) >= (0, 2), "PSCI {major}.{minor}");
    Ok(())
}

fn cpus_are_listed_in_the_dtb() -> TestResult {
    let cpus = smp::cpu_mpidrs();
    println!("smp: CPUs (MPIDR) {cpus:#x?}");
    check_eq!(cpus.len(), 2);
    check_eq!(smp::mpidr_of(0), Some(gic::current_mpidr()));
    check_eq!(smp::current_cpu(), 0);
    // QEMU virt: Aff0 = CPU index.
    check_eq!(smp::mpidr_of(1), Some(1));
    Ok(())
}

fn cpu_on_with_a_bad_mpidr_is_an_error() -> TestResult {
    let r = psci::cpu_on(0xff, smp::secondary_entry_address(), 0);
    check!(
        matches!(r, Err(PsciError::Firmware(_))),
        "CPU_ON(MPIDR 0xff) returned {r:?}"
    );
    check!(!smp::is_online(1));
    Ok(())
}

static CPU1_MPIDR: AtomicU64 = AtomicU64::new(u64::MAX);
static CPU1_EL: AtomicU64 = AtomicU64::new(u64::MAX);
static CPU1_MMU: AtomicBool = AtomicBool::new(false);
static CPU1_INDEX: AtomicU64 = AtomicU64::new(u64::MAX);

fn report() {
    CPU1_MPIDR.store(gic::current_mpidr(), Ordering::Release);
    CPU1_EL.store(cpu::current_el(), Ordering::Release);
    CPU1_MMU.store(mmu::enabled(), Ordering::Release);
    CPU1_INDEX.store(smp::current_cpu() as u64, Ordering::Release);
}

fn cpu1_starts_at_el2_with_its_own_mpidr() -> TestResult {
    let job = try_ok!(smp::run_on_cpu1(report));
    check!(smp::is_online(1));
    try_ok!(job.wait(WAIT_NS));
    let mpidr = CPU1_MPIDR.load(Ordering::Acquire);
    println!(
        "smp: CPU 1 reports MPIDR {mpidr:#x}, CurrentEL {}",
        CPU1_EL.load(Ordering::Acquire)
    );
    check_eq!(Some(mpidr), smp::mpidr_of(1));
    check!(mpidr != gic::current_mpidr());
    check_eq!(CPU1_EL.load(Ordering::Acquire), 2);
    check!(
        CPU1_MMU.load(Ordering::Acquire),
        "CPU 1 runs with MMU/caches off"
    );
    check_eq!(CPU1_INDEX.load(Ordering::Acquire), 1);
    check_eq!(try_ok!(psci::affinity_info(mpidr)), AffinityState::On);
    Ok(())
}

const N: u64 = 100_000;
static COUNTER: spin::Mutex<u64> = spin::Mutex::new(0);
/// Start line: CPU 1 says it is ready, CPU 0 says go; CPU 0 starts its own
/// increments once CPU 1 has started, to give the two loops a chance to
/// overlap (how much they do depends on how the host schedules QEMU's vCPU
/// threads, so the overlap is reported, not checked).
static READY: AtomicBool = AtomicBool::new(false);
static GO: AtomicBool = AtomicBool::new(false);
static CPU1_INCREMENTING: AtomicBool = AtomicBool::new(false);
/// Counter values CPU 1 saw on its first and its last increment.
static CPU1_SAW: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

fn increment_n() {
    READY.store(true, Ordering::Release);
    if !smp::wait_until(WAIT_NS, || GO.load(Ordering::Acquire)) {
        return;
    }
    for k in 0..N {
        let mut c = COUNTER.lock();
        *c += 1;
        if k == 0 {
            CPU1_SAW[0].store(*c, Ordering::Relaxed);
            CPU1_INCREMENTING.store(true, Ordering::Release);
        } else if k == N - 1 {
            CPU1_SAW[1].store(*c, Ordering::Relaxed);
        }
    }
}

fn both_cpus_increment_a_shared_counter() -> TestResult {
    *COUNTER.lock() = 0;
    for f in [&READY, &GO, &CPU1_INCREMENTING] {
        f.store(false, Ordering::Release);
    }
    let job = try_ok!(smp::run_on_cpu1(increment_n));
    check!(
        smp::wait_until(WAIT_NS, || READY.load(Ordering::Acquire)),
        "CPU 1 did not pick up the job"
    );
    GO.store(true, Ordering::Release);
    smp::wait_until(WAIT_NS, || CPU1_INCREMENTING.load(Ordering::Acquire));
    for _ in 0..N {
        *COUNTER.lock() += 1;
    }
    try_ok!(job.wait(WAIT_NS));
    let total = *COUNTER.lock();
    let saw = [0, 1].map(|i| CPU1_SAW[i].load(Ordering::Relaxed));
    // CPU 1's increments span more than N values iff CPU 0's interleaved.
    println!(
        "smp: counter {total}; CPU 1 incremented from {} to {} ({} of CPU 0's increments interleaved)",
        saw[0],
        saw[1],
        (saw[1] + 1).saturating_sub(saw[0] + N)
    );
    check_eq!(total, 2 * N);
    Ok(())
}

const SGI_TO_CPU1: u32 = 3;
static SGI_TAKEN: AtomicU32 = AtomicU32::new(0);
static SGI_TAKEN_ON: AtomicU64 = AtomicU64::new(u64::MAX);

fn sgi_handler(_: IntId) {
    SGI_TAKEN_ON.store(gic::current_mpidr(), Ordering::Release);
    SGI_TAKEN.fetch_add(1, Ordering::AcqRel);
}

/// What CPU 1 read of its own SGI configuration: 1 enabled, 0 disabled,
/// [`CONFIG_UNREAD`] before it ran, [`CONFIG_ERROR`] if the read failed.
static CPU1_SGI_ENABLED: AtomicU32 = AtomicU32::new(CONFIG_UNREAD);
const CONFIG_UNREAD: u32 = u32::MAX;
const CONFIG_ERROR: u32 = u32::MAX - 1;

/// Runs on CPU 1: reads the banked configuration of SGI `sgi` there.
fn read_own_sgi_config(sgi: usize) {
    let v = match gic::config(IntId::sgi(sgi as u32), gic::current_mpidr()) {
        Ok(c) => u32::from(c.enabled),
        Err(_) => CONFIG_ERROR,
    };
    CPU1_SGI_ENABLED.store(v, Ordering::Release);
}

fn cpu1_takes_an_sgi_sent_by_cpu0() -> TestResult {
    let cpu1 = smp::mpidr_of(1).unwrap();
    let intid = try_ok!(gic::register_sgi(SGI_TO_CPU1, sgi_handler));
    if gic::version() == Some(2) {
        // GICv2 banks SGI registers per CPU: CPU 1 reads its own (after
        // applying the registration, which its worker does on wake-up).
        CPU1_SGI_ENABLED.store(CONFIG_UNREAD, Ordering::Release);
        try_ok!(
            try_ok!(smp::run_on_cpu1_with(
                read_own_sgi_config,
                SGI_TO_CPU1 as usize
            ))
            .wait(WAIT_NS)
        );
        check_eq!(CPU1_SGI_ENABLED.load(Ordering::Acquire), 1);
    } else {
        check!(try_ok!(gic::config(intid, cpu1)).enabled);
    }
    // CPU 1 is idle in its worker loop with IRQs unmasked; CPU 0 keeps its
    // IRQs masked, so only CPU 1 can take it.
    check!(!gic::irqs_enabled());
    try_ok!(gic::send_sgi(SGI_TO_CPU1, cpu1));
    check!(
        smp::wait_until(WAIT_NS, || SGI_TAKEN.load(Ordering::Acquire) == 1),
        "CPU 1 did not take the SGI"
    );
    check_eq!(SGI_TAKEN_ON.load(Ordering::Acquire), cpu1);
    check_eq!(gic::count(intid), 1);
    cpu::delay_ns(1_000_000);
    check_eq!(SGI_TAKEN.load(Ordering::Acquire), 1);
    Ok(())
}

static RELEASE: AtomicBool = AtomicBool::new(false);

fn spin_until_released() {
    while !RELEASE.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
}

fn nothing() {}

fn a_busy_cpu1_refuses_a_second_job() -> TestResult {
    RELEASE.store(false, Ordering::Release);
    let job = try_ok!(smp::run_on_cpu1(spin_until_released));
    let second = smp::run_on_cpu1(nothing);
    check!(matches!(second, Err(SmpError::Busy)), "{second:?}");
    RELEASE.store(true, Ordering::Release);
    try_ok!(job.wait(WAIT_NS));
    check!(smp::cpu1_idle());
    try_ok!(try_ok!(smp::run_on_cpu1(nothing)).wait(WAIT_NS));
    Ok(())
}

fn a_job_that_does_not_finish_is_a_timeout() -> TestResult {
    RELEASE.store(false, Ordering::Release);
    let job = try_ok!(smp::run_on_cpu1(spin_until_released));
    let r = job.wait(10_000_000);
    check!(matches!(r, Err(SmpError::JobTimeout)), "{r:?}");
    check!(!job.is_done());
    RELEASE.store(true, Ordering::Release);
    try_ok!(job.wait(WAIT_NS));
    Ok(())
}

fn never_runs() -> ! {
    loop {
        aarch64_cpu::asm::wfe();
    }
}

fn a_started_cpu_cannot_be_started_again() -> TestResult {
    let r = smp::start_secondary(1, never_runs);
    check!(matches!(r, Err(SmpError::AlreadyStarted(1))), "{r:?}");
    let r = smp::start_secondary(2, never_runs);
    check!(matches!(r, Err(SmpError::NoSuchCpu(2))), "{r:?}");
    let r = smp::start_secondary(0, never_runs);
    check!(matches!(r, Err(SmpError::NoSuchCpu(0))), "{r:?}");
    Ok(())
}
