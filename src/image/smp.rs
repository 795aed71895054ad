//! Secondary CPUs: the entry hook, PSCI CPU_ON, and a worker on CPU 1.
//!
//! A secondary CPU enters at [`secondary_entry_address`] with its stack top
//! in x0 (PSCI CPU_ON's context), runs `entry.rs` (vectors, stacks), turns on
//! its MMU and caches from [`mmu::config`] in [`secondary_main`], then runs
//! what was registered. [`start_secondary`] does all of it: it registers a
//! trampoline that initialises this CPU's GIC redistributor and CPU interface
//! ([`gic::init_this_cpu`]), reports the CPU online through an atomic flag,
//! and runs the given `main`; the boot CPU waits for that flag, bounded.
//!
//! Without a usable GIC (see [`gic`]) secondary CPUs still start; they take
//! no interrupts. With a GICv2, whose SGI/PPI registers are banked per CPU,
//! the worker applies configuration registered by other CPUs each time it
//! wakes ([`gic::sync_this_cpu`]).
//!
//! [`run_on_cpu1`] is the reusable piece for concurrency tests: CPU 1 runs a
//! worker loop (IRQs unmasked, so it takes SGIs) and executes one posted job
//! at a time while CPU 0 does its own work; [`Cpu1Job::wait`] waits for the
//! job, bounded.
//!
//! CPU numbering: CPU `n` is the `n`-th `cpu` node under `/cpus` in the DTB,
//! its MPIDR the node's `reg`. Without a usable `/cpus` node, CPU `n` is
//! assumed to have MPIDR Aff0 = `n`, which is what QEMU `virt` with a GICv3
//! gives CPUs 0..16 (Aff0 = n % 16, Aff1 = n / 16).

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use alloc::vec::Vec;
use spin::{Mutex, Once};

use super::psci::{self, PsciError};
use super::{cpu, gic, layout, mmu, platform, semihosting};

static SECONDARY_MAIN: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

unsafe extern "C" {
    fn secondary_entry();
}

/// The physical address to pass to PSCI CPU_ON (x0 there = stack top).
pub fn secondary_entry_address() -> usize {
    secondary_entry as *const () as usize
}

/// The stack top a secondary CPU `cpu` must receive in x0.
pub fn stack_top(cpu: usize) -> usize {
    super::layout::cpu_stacks(cpu).stack.end
}

/// Sets what secondary CPUs run once their MMU is on.
pub fn set_secondary_main(f: fn() -> !) {
    SECONDARY_MAIN.store(f as *mut (), Ordering::Release);
}

/// Runs on a secondary CPU after `entry.rs` set its stacks and vectors.
pub fn secondary_main() -> ! {
    let Some(config) = mmu::config() else {
        semihosting::exit(super::EXIT_BOOT_FAILURE)
    };
    // SAFETY: the boot CPU built this identity map for every CPU's needs.
    unsafe { mmu::enable(&config) };
    let p = SECONDARY_MAIN.load(Ordering::Acquire);
    if p.is_null() {
        loop {
            aarch64_cpu::asm::wfe();
        }
    }
    // SAFETY: only `fn() -> !` pointers are stored (`set_secondary_main`).
    let f = unsafe { core::mem::transmute::<*mut (), fn() -> !>(p) };
    f()
}

/// How long [`start_secondary`] waits for a CPU to report itself online.
pub const START_TIMEOUT_NS: u64 = 2_000_000_000;

/// Why a secondary CPU could not be started or used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmpError {
    /// The image has no stacks for this CPU (or it is the boot CPU), or the
    /// DTB lists no such CPU.
    NoSuchCpu(usize),
    /// [`start_secondary`] already ran for this CPU.
    AlreadyStarted(usize),
    /// PSCI CPU_ON failed.
    Psci(PsciError),
    /// The GIC could not be initialised (boot CPU) for the secondary.
    Gic(gic::GicError),
    /// The CPU did not come online within the time limit.
    StartTimeout(usize),
    /// CPU 1 runs something other than the [`run_on_cpu1`] worker.
    NotWorker,
    /// CPU 1 has not finished the previous job.
    Busy,
    /// The job did not finish within the time limit.
    JobTimeout,
}

impl fmt::Display for SmpError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::NoSuchCpu(c) => write!(f, "no secondary CPU {c} (DTB /cpus, image stacks)"),
            Self::AlreadyStarted(c) => write!(f, "CPU {c} was already started"),
            Self::Psci(e) => write!(f, "{e}"),
            Self::Gic(e) => write!(f, "GIC: {e}"),
            Self::StartTimeout(c) => write!(
                f,
                "CPU {c} did not come online within {} ms",
                START_TIMEOUT_NS / 1_000_000
            ),
            Self::NotWorker => f.write_str("CPU 1 runs another main, not the run_on_cpu1 worker"),
            Self::Busy => f.write_str("CPU 1 is still running the previous job"),
            Self::JobTimeout => f.write_str("the job on CPU 1 did not finish in time"),
        }
    }
}

impl From<PsciError> for SmpError {
    fn from(e: PsciError) -> Self {
        Self::Psci(e)
    }
}

static MPIDRS: Once<Vec<u64>> = Once::new();

/// The MPIDR affinity of every CPU, in DTB `/cpus` order (CPU 0 first).
pub fn cpu_mpidrs() -> &'static [u64] {
    MPIDRS.call_once(|| {
        let fallback = || (0..layout::MAX_CPUS as u64).collect();
        let dtb = super::boot().platform.dtb.base as usize;
        // SAFETY: `init` read the DTB at this address; it is RAM, mapped
        // (identity, read-write) and never written.
        let Ok(fdt) = (unsafe { platform::open_dtb(dtb) }) else {
            return fallback();
        };
        let Some(cpus) = fdt.find_node("/cpus") else {
            return fallback();
        };
        let cells = cpus
            .property("#address-cells")
            .and_then(|p| p.as_usize())
            .unwrap_or(1);
        let ids: Vec<u64> = cpus
            .children()
            .filter(|n| n.property("device_type").and_then(|p| p.as_str()) == Some("cpu"))
            .filter_map(|n| {
                let reg = n.property("reg")?.value;
                let bytes = reg.get(..4 * cells)?;
                Some(bytes.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)))
            })
            .map(gic::affinity)
            .collect();
        if ids.is_empty() { fallback() } else { ids }
    })
}

/// The MPIDR affinity of CPU `cpu`.
pub fn mpidr_of(cpu: usize) -> Option<u64> {
    cpu_mpidrs().get(cpu).copied()
}

/// The index of the calling CPU (position of its MPIDR in [`cpu_mpidrs`];
/// Aff0 if it is not listed).
pub fn current_cpu() -> usize {
    let me = gic::current_mpidr();
    cpu_mpidrs()
        .iter()
        .position(|&m| m == me)
        .unwrap_or((me & 0xff) as usize)
}

/// Busy-waits until `done()` holds or `timeout_ns` (generic timer) elapse;
/// returns `done()`'s last value. Polls, so it needs no SEV or IRQ; no
/// YIELD hint either: under QEMU's TCG a YIELD leaves the vCPU's execution
/// loop, which delays noticing the other CPU by milliseconds.
pub fn wait_until(timeout_ns: u64, mut done: impl FnMut() -> bool) -> bool {
    let start = cpu::now_ns();
    loop {
        if done() {
            return true;
        }
        if cpu::now_ns() - start >= timeout_ns {
            return done();
        }
    }
}

static STARTED: [AtomicBool; layout::MAX_CPUS] =
    [const { AtomicBool::new(false) }; layout::MAX_CPUS];
static ONLINE: [AtomicBool; layout::MAX_CPUS] =
    [const { AtomicBool::new(false) }; layout::MAX_CPUS];
static MAINS: [AtomicUsize; layout::MAX_CPUS] = [const { AtomicUsize::new(0) }; layout::MAX_CPUS];

/// Whether CPU `cpu` has reported itself online (boot CPU: always).
pub fn is_online(cpu: usize) -> bool {
    cpu == 0 || ONLINE.get(cpu).is_some_and(|f| f.load(Ordering::Acquire))
}

/// Starts secondary CPU `cpu` (1..MAX_CPUS) with PSCI CPU_ON: MMU and caches
/// on, GIC redistributor and CPU interface initialised (IRQs masked), then
/// `main`. Initialises the GIC first if needed. Returns once the CPU has
/// reported itself online, or [`SmpError::StartTimeout`] after
/// [`START_TIMEOUT_NS`]. A CPU can be started once.
pub fn start_secondary(cpu: usize, main: fn() -> !) -> Result<(), SmpError> {
    if cpu == 0 || cpu >= layout::MAX_CPUS {
        return Err(SmpError::NoSuchCpu(cpu));
    }
    let mpidr = mpidr_of(cpu).ok_or(SmpError::NoSuchCpu(cpu))?;
    match gic::init() {
        // Without a usable GIC the CPU still starts; it just takes no IRQs.
        Ok(()) | Err(gic::GicError::NoUsableGic(_)) => {}
        Err(e) => return Err(SmpError::Gic(e)),
    }
    if STARTED[cpu].swap(true, Ordering::AcqRel) {
        return Err(SmpError::AlreadyStarted(cpu));
    }
    MAINS[cpu].store(main as usize, Ordering::Release);
    set_secondary_main(secondary_trampoline);
    // The secondary reads its MMU configuration and its `main` with the MMU
    // and caches off: write them back to memory first.
    cpu::dcache_clean(layout::data().start, layout::data().len());
    if let Err(e) = psci::cpu_on(mpidr, secondary_entry_address(), stack_top(cpu) as u64) {
        STARTED[cpu].store(false, Ordering::Release);
        return Err(e.into());
    }
    if wait_until(START_TIMEOUT_NS, || ONLINE[cpu].load(Ordering::Acquire)) {
        Ok(())
    } else {
        Err(SmpError::StartTimeout(cpu))
    }
}

/// What every CPU started by [`start_secondary`] runs once its MMU is on.
fn secondary_trampoline() -> ! {
    let cpu = current_cpu();
    match gic::init_this_cpu() {
        Ok(()) | Err(gic::GicError::NoUsableGic(_)) => {}
        Err(e) => {
            super::console::println!("smp: CPU {cpu}: GIC: {e}");
            semihosting::exit(super::EXIT_BOOT_FAILURE);
        }
    }
    let main = MAINS.get(cpu).map_or(0, |m| m.load(Ordering::Acquire));
    if main == 0 {
        super::console::println!("smp: CPU {cpu} has no main");
        semihosting::exit(super::EXIT_BOOT_FAILURE);
    }
    ONLINE[cpu].store(true, Ordering::Release);
    aarch64_cpu::asm::sev();
    // SAFETY: only `fn() -> !` values are stored in MAINS (`start_secondary`).
    let main = unsafe { core::mem::transmute::<usize, fn() -> !>(main) };
    main()
}

// --- The CPU 1 worker ---------------------------------------------------------

static WORKER: AtomicBool = AtomicBool::new(false);
/// Serialises posters (any CPU but 1) between the busy check and the publish.
static POST: Mutex<()> = Mutex::new(());
/// Sequence number of the last posted job, and of the last finished one; CPU 1
/// is busy while they differ.
static POSTED_SEQ: AtomicU64 = AtomicU64::new(0);
static DONE_SEQ: AtomicU64 = AtomicU64::new(0);
static JOB_FN: AtomicUsize = AtomicUsize::new(0);
static JOB_ARG: AtomicUsize = AtomicUsize::new(0);

/// A job posted to CPU 1 by [`run_on_cpu1`]; wait for it with [`Self::wait`].
#[must_use = "wait for the job: CPU 1 takes no other job until it finishes"]
#[derive(Debug)]
pub struct Cpu1Job {
    seq: u64,
}

impl Cpu1Job {
    /// Whether the job has finished.
    pub fn is_done(&self) -> bool {
        DONE_SEQ.load(Ordering::Acquire) >= self.seq
    }

    /// Waits up to `timeout_ns` for the job to finish; everything the job
    /// wrote is then visible to the caller. On [`SmpError::JobTimeout`] the
    /// job may still finish later: wait again, or give up on CPU 1 (later
    /// jobs get [`SmpError::Busy`] until it does).
    pub fn wait(&self, timeout_ns: u64) -> Result<(), SmpError> {
        if wait_until(timeout_ns, || self.is_done()) {
            Ok(())
        } else {
            Err(SmpError::JobTimeout)
        }
    }
}

/// Runs `f` on CPU 1 while the caller goes on; starts CPU 1 (PSCI, GIC) on
/// first use. CPU 1 runs jobs one at a time, with IRQs unmasked (so it takes
/// SGIs and the SPIs routed to it). Wait with [`Cpu1Job::wait`].
pub fn run_on_cpu1(f: fn()) -> Result<Cpu1Job, SmpError> {
    fn call(arg: usize) {
        // SAFETY: `run_on_cpu1` passes a `fn()` as `arg`.
        let f = unsafe { core::mem::transmute::<usize, fn()>(arg) };
        f()
    }
    run_on_cpu1_with(call, f as usize)
}

/// As [`run_on_cpu1`], passing `arg` to `f` (a poor man's closure: an index,
/// or the address of a `static` the caller and the job share).
pub fn run_on_cpu1_with(f: fn(usize), arg: usize) -> Result<Cpu1Job, SmpError> {
    let _post = POST.lock();
    if !WORKER.load(Ordering::Acquire) {
        if STARTED[1].load(Ordering::Acquire) {
            return Err(SmpError::NotWorker);
        }
        start_secondary(1, worker_main)?;
        WORKER.store(true, Ordering::Release);
    }
    let posted = POSTED_SEQ.load(Ordering::Acquire);
    if DONE_SEQ.load(Ordering::Acquire) != posted {
        return Err(SmpError::Busy);
    }
    // Published by the Release store of the sequence number; the worker
    // reads them after it sees the new number (Acquire).
    JOB_FN.store(f as usize, Ordering::Relaxed);
    JOB_ARG.store(arg, Ordering::Relaxed);
    POSTED_SEQ.store(posted + 1, Ordering::Release);
    aarch64_cpu::asm::sev();
    Ok(Cpu1Job { seq: posted + 1 })
}

/// Whether CPU 1 runs the [`run_on_cpu1`] worker and has no unfinished job.
pub fn cpu1_idle() -> bool {
    WORKER.load(Ordering::Acquire)
        && DONE_SEQ.load(Ordering::Acquire) == POSTED_SEQ.load(Ordering::Acquire)
}

/// The worker loop CPU 1 runs for [`run_on_cpu1`].
fn worker_main() -> ! {
    gic::enable_irqs();
    loop {
        // GICv2: SGIs/PPIs registered by another CPU since the last look
        // (banked registers; `gic::enable` sends an SEV). No-op on GICv3.
        if let Err(e) = gic::sync_this_cpu() {
            super::console::println!("smp: CPU 1: GIC: {e}");
        }
        let posted = POSTED_SEQ.load(Ordering::Acquire);
        if posted == DONE_SEQ.load(Ordering::Relaxed) {
            // Woken by the poster's SEV (or an IRQ).
            aarch64_cpu::asm::wfe();
            continue;
        }
        let f = JOB_FN.load(Ordering::Relaxed);
        let arg = JOB_ARG.load(Ordering::Relaxed);
        // SAFETY: only `fn(usize)` values are stored in JOB_FN
        // (`run_on_cpu1_with`).
        let f = unsafe { core::mem::transmute::<usize, fn(usize)>(f) };
        f(arg);
        DONE_SEQ.store(posted, Ordering::Release);
        aarch64_cpu::asm::sev();
    }
}
