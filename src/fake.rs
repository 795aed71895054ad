//! Host-side fakes for unit tests: a [`Hal`] backed by the std allocator
//! (physical = virtual address) and a clock that advances on every read, so
//! bounded waits expire deterministically. With the `testing` feature the
//! same fakes back the public [`crate::testing`] module (which uses only
//! part of them: the rest serves the unit tests).

#![cfg_attr(not(test), allow(dead_code))]

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::boxed::Box;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::thread_local;
use std::vec::Vec;

use crate::hal::{DmaRegion, Hal};

thread_local! {
    static CLOCK_NS: Cell<u64> = const { Cell::new(0) };
    static LIVE_BYTES: Cell<usize> = const { Cell::new(0) };
    static CLEANED_BYTES: Cell<usize> = const { Cell::new(0) };
    static FAIL_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
    static MISALIGN: Cell<bool> = const { Cell::new(false) };
    static LAYOUTS: RefCell<HashMap<usize, Layout>> = RefCell::new(HashMap::new());
}

/// A HAL for host tests: device memory from the host's allocator, physical
/// address = virtual address, and a clock that advances 1 µs on every read
/// (so bounded waits expire deterministically). Each thread has its own
/// clock and counters.
#[derive(Debug)]
pub struct FakeHal;

impl FakeHal {
    /// Bytes currently allocated through this HAL on this thread.
    pub fn live_bytes() -> usize {
        LIVE_BYTES.with(|c| c.get())
    }
    /// Bytes passed to `dcache_clean` on this thread.
    pub fn cleaned_bytes() -> usize {
        CLEANED_BYTES.with(|c| c.get())
    }
    /// While set, allocations return memory offset by 64 bytes from the
    /// alignment asked for (a HAL breaking its contract).
    pub fn misalign_next(on: bool) {
        MISALIGN.with(|c| c.set(on));
    }

    /// Makes allocations fail after `n` more successes (`None`: never).
    pub fn fail_after(n: Option<usize>) {
        FAIL_AFTER.with(|c| c.set(n));
    }
}

// SAFETY: memory comes zeroed from the global allocator with the requested
// layout, is exclusively owned until freed, and paddr == vaddr on the host.
unsafe impl Hal for FakeHal {
    fn dma_alloc(size: usize, align: usize) -> Option<DmaRegion> {
        if let Some(n) = FAIL_AFTER.with(|c| c.get()) {
            if n == 0 {
                return None;
            }
            FAIL_AFTER.with(|c| c.set(Some(n - 1)));
        }
        let extra = if MISALIGN.with(|c| c.get()) { 64 } else { 0 };
        let layout = Layout::from_size_align(size + extra, align).ok()?;
        // SAFETY: size is non-zero (callers never ask for 0 bytes; Dma::new checks).
        let p = unsafe { alloc_zeroed(layout) };
        NonNull::new(p)?;
        // SAFETY: `extra` bytes into an allocation of `size + extra` bytes.
        let start = unsafe { p.add(extra) };
        LIVE_BYTES.with(|c| c.set(c.get() + size));
        LAYOUTS.with(|m| m.borrow_mut().insert(start as usize, layout));
        Some(DmaRegion {
            paddr: start as u64,
            vaddr: NonNull::new(start)?,
            size,
        })
    }

    unsafe fn dma_free(region: DmaRegion) {
        LIVE_BYTES.with(|c| c.set(c.get() - region.size));
        let layout = LAYOUTS
            .with(|m| m.borrow_mut().remove(&(region.vaddr.as_ptr() as usize)))
            .expect("FakeHal: freeing memory it did not allocate");
        let extra = if region.size < layout.size() {
            layout.size() - region.size
        } else {
            0
        };
        // SAFETY: the region came from `dma_alloc`, which recorded its layout
        // and offset the region by `extra` bytes into the allocation.
        unsafe { dealloc(region.vaddr.as_ptr().sub(extra), layout) }
    }

    fn dcache_clean(vaddr: *const u8, len: usize) {
        CLEANED_BYTES.with(|c| c.set(c.get() + len));
        trace(Trace::Clean {
            addr: vaddr as usize,
            len,
        });
    }

    fn dcache_invalidate(vaddr: *const u8, len: usize) {
        trace(Trace::Invalidate {
            addr: vaddr as usize,
            len,
        });
    }

    fn now_ns() -> u64 {
        CLOCK_NS.with(|c| {
            let t = c.get() + 1_000;
            c.set(t);
            t
        })
    }
}

/// A zeroed block standing in for the SMMU's two register pages. Nothing
/// ever acknowledges or consumes: tests set the registers by hand.
#[derive(Debug)]
pub struct FakeRegs {
    mem: NonNull<u8>,
}

impl FakeRegs {
    const LAYOUT: Layout = match Layout::from_size_align(crate::regs::MMIO_SIZE, 4096) {
        Ok(l) => l,
        Err(_) => panic!("layout"),
    };

    /// A zeroed register block.
    pub fn new() -> Self {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(Self::LAYOUT) };
        Self {
            mem: NonNull::new(p).expect("alloc"),
        }
    }

    /// A block holding QEMU virt's SMMU ID registers (IDR0, IDR1, IDR3:
    /// RIL, BBML2, HAD; AIDR: v3.1), but OAS 48 bits in IDR5 where QEMU
    /// reports 44: host heap addresses stand in for physical ones, and the
    /// driver refuses memory above OAS.
    pub fn qemu_like() -> Self {
        let regs = Self::new();
        regs.set32(0x00, 0x0D44_101B);
        regs.set32(0x04, 0x0273_0010);
        regs.set32(0x0C, 0x0000_1404);
        regs.set32(0x14, 0x0000_0075);
        regs.set32(0x1C, 0x0000_0001);
        regs
    }

    /// The block's address, as a driver's register base.
    pub fn base(&self) -> NonNull<u8> {
        self.mem
    }

    /// An [`crate::mmio::Mmio`] over this block.
    pub fn mmio(&self) -> crate::mmio::Mmio {
        // SAFETY: the block is MMIO_SIZE bytes and outlives the test using it.
        unsafe { crate::mmio::Mmio::new(self.mem) }
    }

    /// Sets the 32-bit register at `offset`.
    pub fn set32(&self, offset: usize, value: u32) {
        assert!(offset + 4 <= crate::regs::MMIO_SIZE);
        // SAFETY: in bounds and 4-byte aligned offsets only.
        unsafe {
            self.mem
                .as_ptr()
                .add(offset)
                .cast::<u32>()
                .write_volatile(value)
        }
    }

    /// Reads the 32-bit register at `offset`.
    pub fn get32(&self, offset: usize) -> u32 {
        assert!(offset + 4 <= crate::regs::MMIO_SIZE);
        // SAFETY: as in `set32`.
        unsafe { self.mem.as_ptr().add(offset).cast::<u32>().read_volatile() }
    }
}

impl Drop for FakeRegs {
    fn drop(&mut self) {
        let base = self.mem.as_ptr() as usize;
        MODELS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|m| m.base != base);
        // SAFETY: allocated in `new` with the same layout.
        unsafe { dealloc(self.mem.as_ptr(), Self::LAYOUT) }
    }
}

// ---------------------------------------------------------------------------
// An observation trace and a responsive model of the SMMU's register
// interface.
//
// The trace records, in program order, what the driver did that hardware
// could observe: MMIO writes (offset from page 0, value), barriers, cache
// maintenance, and reads of queue entries. Tests check orderings on it that
// QEMU cannot show (a barrier between reading event records and freeing
// their slots; IRQ_CFG writes before IRQ_CTRL enables interrupts).
//
// The model, when installed for one register block, answers the way an SMMU
// does: CR0ACK follows CR0, IRQ_CTRLACK follows IRQ_CTRL, GBPA.UPDATE
// completes at once, and commands published through CMDQ_PROD are consumed
// (logged) while CMDQEN is set and no command error is active. A test may
// make it stop on chosen commands with a CERROR code, as hardware does.

/// One observable action of the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trace {
    /// An MMIO write at `offset` from register page 0.
    Write {
        /// Offset from page 0 (page 1 registers are at 0x1_0000 + offset).
        offset: usize,
        /// Value written (zero-extended).
        value: u64,
    },
    /// A barrier (its mnemonic).
    Barrier(&'static str),
    /// Driver stores to DMA memory (`Dma::write_u64`, `Dma::write_run`)
    /// over `[addr, addr + len)`.
    Store {
        /// Start address.
        addr: usize,
        /// Length in bytes.
        len: usize,
    },
    /// `Hal::dcache_clean` of `[addr, addr + len)`.
    Clean {
        /// Start address.
        addr: usize,
        /// Length in bytes.
        len: usize,
    },
    /// `Hal::dcache_invalidate` of `[addr, addr + len)`.
    Invalidate {
        /// Start address.
        addr: usize,
        /// Length in bytes.
        len: usize,
    },
    /// A read of one queue entry (event record) by the driver.
    EntryRead {
        /// Address of the entry.
        addr: usize,
    },
}

/// Decides whether the model stops at a command: returns the CERROR code
/// (1 = ILL, 2 = ABT, 3 = ATC_INV_SYNC) to raise for it, or `None` to
/// execute it.
pub type CommandFault = Box<dyn FnMut(&[u64; 2]) -> Option<u32> + Send>;

struct ModelState {
    base: usize,
    commands: Vec<[u64; 2]>,
    fault: Option<CommandFault>,
}

/// Models of responsive register blocks, by base address (shared by all
/// threads, so a test may call the driver from several).
static MODELS: std::sync::Mutex<Vec<ModelState>> = std::sync::Mutex::new(Vec::new());

fn with_model<R>(base: usize, f: impl FnOnce(&mut ModelState) -> R) -> Option<R> {
    let mut models = MODELS.lock().unwrap_or_else(|e| e.into_inner());
    models.iter_mut().find(|m| m.base == base).map(f)
}

/// A pause point: the trace label that triggers it and what runs there.
type Pause = (&'static str, Box<dyn FnMut()>);

thread_local! {
    static TRACE: RefCell<Option<Vec<Trace>>> = const { RefCell::new(None) };
    static PAUSE: RefCell<Option<Pause>> = const { RefCell::new(None) };
}

/// Starts (or restarts) recording a [`Trace`] on this thread.
pub fn start_trace() {
    TRACE.with(|t| *t.borrow_mut() = Some(Vec::new()));
}

/// Stops recording and returns what was recorded.
pub fn take_trace() -> Vec<Trace> {
    TRACE.with(|t| t.borrow_mut().take().unwrap_or_default())
}

/// Records `event` if this thread is tracing.
pub fn trace(event: Trace) {
    TRACE.with(|t| {
        if let Some(v) = t.borrow_mut().as_mut() {
            v.push(event);
        }
    });
}

/// Runs `f` the next time the driver passes the pause point `name` on this
/// thread (once). Used to interleave another thread's call at an exact
/// point of a driver operation.
pub fn at_pause_point(name: &'static str, f: impl FnMut() + 'static) {
    PAUSE.with(|p| *p.borrow_mut() = Some((name, Box::new(f))));
}

/// A named point in a driver operation (no-op unless a test armed it).
pub fn pause_point(name: &'static str) {
    let armed = PAUSE.with(|p| {
        let mut p = p.borrow_mut();
        match p.take() {
            Some((n, f)) if n == name => Some(f),
            other => {
                *p = other;
                None
            }
        }
    });
    if let Some(mut f) = armed {
        f();
    }
}

impl FakeRegs {
    /// Makes this block answer like an SMMU (see the section comment) on
    /// the calling thread.
    pub fn respond(&self) {
        let base = self.mem.as_ptr() as usize;
        let mut models = MODELS.lock().unwrap_or_else(|e| e.into_inner());
        models.retain(|m| m.base != base);
        models.push(ModelState {
            base,
            commands: Vec::new(),
            fault: None,
        });
    }

    /// Makes the model stop at the commands `fault` picks.
    pub fn fault_commands(&self, fault: CommandFault) {
        with_model(self.mem.as_ptr() as usize, |s| s.fault = Some(fault));
    }

    /// Commands the model has consumed so far (CMD_SYNCs included).
    pub fn commands(&self) -> Vec<[u64; 2]> {
        with_model(self.mem.as_ptr() as usize, |s| s.commands.clone()).unwrap_or_default()
    }

    /// Reads the 64-bit register at `offset`.
    pub fn get64(&self, offset: usize) -> u64 {
        u64::from(self.get32(offset)) | u64::from(self.get32(offset + 4)) << 32
    }

    /// Sets the 64-bit register at `offset`.
    pub fn set64(&self, offset: usize, value: u64) {
        self.set32(offset, value as u32);
        self.set32(offset + 4, (value >> 32) as u32);
    }
}

/// Register offsets the model reacts to.
mod off {
    pub const CR0: usize = 0x20;
    pub const CR0ACK: usize = 0x24;
    pub const GBPA: usize = 0x44;
    pub const IRQ_CTRL: usize = 0x50;
    pub const IRQ_CTRLACK: usize = 0x54;
    pub const GERROR: usize = 0x60;
    pub const GERRORN: usize = 0x64;
    pub const CMDQ_BASE: usize = 0x90;
    pub const CMDQ_PROD: usize = 0x98;
    pub const CMDQ_CONS: usize = 0x9C;
}

/// Called by [`crate::mmio::Mmio`] after every register write. What the
/// model does here (it may allocate to log commands) is not the driver's:
/// it is left out of [`allocations`].
pub fn mmio_written(base: usize, offset: usize, value: u64) {
    uncounted(|| model_write(base, offset, value));
}

fn model_write(base: usize, offset: usize, value: u64) {
    trace(Trace::Write { offset, value });
    with_model(base, |state| {
        let regs = ManuallyDrop::new(FakeRegs {
            mem: NonNull::new(base as *mut u8).expect("base"),
        });
        match offset {
            off::CR0 => regs.set32(off::CR0ACK, value as u32),
            off::IRQ_CTRL => regs.set32(off::IRQ_CTRLACK, value as u32),
            off::GBPA => regs.set32(off::GBPA, value as u32 & !(1 << 31)),
            off::CMDQ_PROD | off::GERRORN => consume(&regs, state),
            _ => {}
        }
    });
}

/// Consumes published commands while CMDQEN is set and no command error is
/// active.
fn consume(regs: &FakeRegs, state: &mut ModelState) {
    const CMDQEN: u32 = 1 << 3;
    const CMDQ_ERR: u32 = 1;
    if regs.get32(off::CR0ACK) & CMDQEN == 0 {
        return;
    }
    let base = regs.get64(off::CMDQ_BASE);
    let log2 = (base & 0x1F) as u32;
    let addr = base & 0x000F_FFFF_FFFF_FFE0;
    let mask = (2u32 << log2) - 1;
    let prod = regs.get32(off::CMDQ_PROD) & mask;
    let mut cons = regs.get32(off::CMDQ_CONS) & mask;
    while cons != prod {
        if (regs.get32(off::GERROR) ^ regs.get32(off::GERRORN)) & CMDQ_ERR != 0 {
            return;
        }
        let slot = (cons & ((1 << log2) - 1)) as usize;
        let p = (addr as usize + slot * 16) as *const u64;
        // SAFETY: FakeHal memory is identity-mapped (paddr == vaddr) and the
        // command queue the driver programmed into CMDQ_BASE is live while it
        // publishes commands; the slot is inside it.
        let cmd = unsafe { [p.read_volatile(), p.add(1).read_volatile()] };
        if let Some(err) = state.fault.as_mut().and_then(|f| f(&cmd)) {
            regs.set32(off::CMDQ_CONS, cons | err << 24);
            regs.set32(off::GERROR, regs.get32(off::GERROR) ^ CMDQ_ERR);
            return;
        }
        state.commands.push(cmd);
        cons = (cons + 1) & mask;
        regs.set32(off::CMDQ_CONS, cons);
    }
}

// ---------------------------------------------------------------------------
// A counting global allocator for the unit-test binary (never for users of
// the `testing` feature): counts the heap allocations each thread makes, so
// a test can prove a path allocates nothing. Work the model does on the
// driver's thread (`mmio_written`) is not counted.

#[cfg(test)]
thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Heap allocations (and reallocations) made by this thread so far, outside
/// [`uncounted`] sections.
#[cfg(test)]
pub fn allocations() -> usize {
    ALLOCATIONS.with(|c| c.get())
}

/// Heap allocations made by this thread so far (the same counter as
/// [`allocations`]; the page-table tests use this name).
#[cfg(test)]
pub fn heap_allocations() -> usize {
    allocations()
}

/// Runs `f` without counting its allocations.
pub fn uncounted<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(test)]
    {
        let was = UNCOUNTED.with(|c| c.replace(true));
        let r = f();
        UNCOUNTED.with(|c| c.set(was));
        r
    }
    #[cfg(not(test))]
    f()
}

#[cfg(test)]
thread_local! {
    static FAIL_RESERVATIONS_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Makes the driver's fallible reservations ([`crate::fallible`]) fail
/// after `n` more successes on this thread (`None`: never).
#[cfg(test)]
pub fn fail_reservations_after(n: Option<usize>) {
    FAIL_RESERVATIONS_AFTER.with(|c| c.set(n));
}

/// Whether the next fallible reservation fails (counting it down).
#[cfg(test)]
pub fn reservation_fails() -> bool {
    FAIL_RESERVATIONS_AFTER.with(|c| match c.get() {
        Some(0) => true,
        Some(n) => {
            c.set(Some(n - 1));
            false
        }
        None => false,
    })
}

#[cfg(test)]
struct CountingAlloc;

#[cfg(test)]
fn count_one() {
    // `try_with`: the thread's locals may already be gone at its exit.
    let counted = UNCOUNTED.try_with(|c| !c.get()).unwrap_or(false);
    if counted {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counting touches only `const`-initialised thread locals without
// destructors, which never allocate.
#[cfg(test)]
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded from the caller.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded from the caller.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: forwarded from the caller.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[cfg(test)]
#[global_allocator]
static COUNTING: CountingAlloc = CountingAlloc;

#[cfg(test)]
/// The MMIO writes after which the SMMU may read what the driver stored:
/// CR0 (CMDQEN, EVENTQEN, SMMUEN), GERRORN (a repaired command queue
/// resumes), STRTAB_BASE, STRTAB_BASE_CFG, CMDQ_BASE, CMDQ_PROD and
/// EVENTQ_BASE.
pub const KICKS: [usize; 7] = [0x20, 0x64, 0x80, 0x88, 0x90, 0x98, 0xA0];

/// Checks, in `trace`, that every driver store to DMA memory is made
/// visible before the first MMIO write in [`KICKS`] that follows it: for a
/// coherent SMMU a `dsb st` between the two (IHI 0070 §3.21.2, §3.21.3.1:
/// "perform a DSB" before the PROD write or the CFGI); for a non-coherent
/// one every byte of the store cleaned between the two, then a `dsb st`
/// after the last of those cleans and before the write. Returns
/// how many (store, kick) pairs were checked, or what is wrong.
#[cfg(test)]
pub fn check_published_before_kicks(trace: &[Trace], coherent: bool) -> Result<usize, String> {
    let is_kick = |e: &Trace| matches!(*e, Trace::Write { offset, .. } if KICKS.contains(&offset));
    let mut checked = 0;
    for (s, e) in trace.iter().enumerate() {
        let Trace::Store { addr, len } = *e else {
            continue;
        };
        let Some(w) = trace[s + 1..].iter().position(is_kick).map(|w| s + 1 + w) else {
            continue;
        };
        let window = &trace[s + 1..w];
        let barrier = |from: usize, name: &str| {
            window[from..]
                .iter()
                .any(|e| matches!(*e, Trace::Barrier(b) if b == name))
        };
        if coherent {
            if !barrier(0, "dsb st") {
                return Err(format!(
                    "store {addr:#x}+{len} (event {s}) reaches {:?} (event {w}) with no barrier",
                    trace[w]
                ));
            }
        } else {
            let mut last_clean = 0;
            for word in (addr..addr + len).step_by(8) {
                let Some(c) = window.iter().rposition(
                    |e| matches!(*e, Trace::Clean { addr: a, len: l } if a <= word && word + 8 <= a + l),
                ) else {
                    return Err(format!(
                        "word {word:#x} (event {s}) reaches {:?} (event {w}) not cleaned",
                        trace[w]
                    ));
                };
                last_clean = last_clean.max(c);
            }
            if !barrier(last_clean + 1, "dsb st") {
                return Err(format!(
                    "store {addr:#x}+{len} (event {s}) cleaned but no DSB ST before {:?} (event {w})",
                    trace[w]
                ));
            }
        }
        checked += 1;
    }
    Ok(checked)
}
