//! The PL011 console: `println!` for plain output and the `log` backend.
//!
//! The UART base comes from the DTB. Output before [`init`] is dropped. The
//! console works with the MMU off (device accesses are naturally aligned
//! 32-bit stores) and on (the UART is mapped device-nGnRE).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};

use log::{LevelFilter, Log, Metadata, Record};
use spin::Mutex;

const UARTDR: usize = 0x00;
const UARTFR: usize = 0x18;
const UARTCR: usize = 0x30;
const UARTFR_TXFF: u32 = 1 << 5;
/// UARTEN | TXE | RXE.
const UARTCR_ENABLE: u32 = 0x301;

static BASE: AtomicUsize = AtomicUsize::new(0);
static LOCK: Mutex<()> = Mutex::new(());

/// Starts the console on the PL011 at `base` and installs the `log` backend.
///
/// # Safety
///
/// `base` is the physical address of a PL011 that nothing else drives, and it
/// stays accessible at that address (identity mapped) from now on.
pub unsafe fn init(base: usize, level: LevelFilter) {
    // SAFETY: the caller promises `base` is a PL011; UARTCR is a 32-bit register.
    unsafe { ((base + UARTCR) as *mut u32).write_volatile(UARTCR_ENABLE) };
    BASE.store(base, Ordering::Release);
    // `set_logger` fails only when called twice; the first logger stays.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

fn put_byte(base: usize, byte: u8) {
    // SAFETY: `base` was given to `init`, whose caller promised a mapped PL011.
    unsafe {
        while ((base + UARTFR) as *const u32).read_volatile() & UARTFR_TXFF != 0 {
            core::hint::spin_loop();
        }
        ((base + UARTDR) as *mut u32).write_volatile(u32::from(byte));
    }
}

struct Uart(usize);

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                put_byte(self.0, b'\r');
            }
            put_byte(self.0, b);
        }
        Ok(())
    }
}

/// Writes formatted text; the line lock keeps CPUs from interleaving.
pub fn print_args(args: fmt::Arguments) {
    let base = BASE.load(Ordering::Acquire);
    if base == 0 {
        return;
    }
    let _guard = LOCK.lock();
    let _ = Uart(base).write_fmt(args);
}

/// Writes formatted text and a newline under one hold of the line lock
/// (`println!`: one `Arguments` per call site, not a nested pair).
pub fn print_line(args: fmt::Arguments) {
    let base = BASE.load(Ordering::Acquire);
    if base == 0 {
        return;
    }
    let _guard = LOCK.lock();
    let mut uart = Uart(base);
    let _ = uart.write_fmt(args);
    let _ = uart.write_str("\n");
}

/// `a, b, c` for a list of numbers (without pulling in `Debug` for slices).
pub fn join<T: fmt::Display>(items: &[T]) -> alloc::string::String {
    let mut s = alloc::string::String::new();
    for (i, n) in items.iter().enumerate() {
        let _ = write!(s, "{}{n}", if i == 0 { "" } else { ", " });
    }
    s
}

/// `[0x8, 0x100]`: numbers in hex (without `Debug`).
pub fn hex<T: fmt::LowerHex>(items: &[T]) -> alloc::string::String {
    let mut s = alloc::string::String::from("[");
    for (i, n) in items.iter().enumerate() {
        let _ = write!(s, "{}{n:#x}", if i == 0 { "" } else { ", " });
    }
    s.push(']');
    s
}

/// `[0x4300000+0x1000]`: (start, length) pairs in hex (without `Debug`).
pub fn ranges(items: &[(u64, u64)]) -> alloc::string::String {
    let mut s = alloc::string::String::from("[");
    for (i, (a, n)) in items.iter().enumerate() {
        let _ = write!(s, "{}{a:#x}+{n:#x}", if i == 0 { "" } else { ", " });
    }
    s.push(']');
    s
}

/// A stage-2 leaf for failure messages (without `Debug`).
pub fn leaf(t: Option<smmuv3::stage2::Translation>) -> alloc::string::String {
    use smmuv3::stage2::{Memory, Perm};
    match t {
        None => alloc::string::String::from("none"),
        Some(t) => alloc::format!(
            "PA {:#x} size {:#x} {} {}{}",
            t.pa,
            t.size,
            match t.perm {
                Perm::Read => "R",
                Perm::Write => "W",
                Perm::ReadWrite => "RW",
            },
            match t.memory {
                Memory::Normal => "normal",
                Memory::Device => "device",
            },
            if t.execute { " X" } else { "" }
        ),
    }
}

/// `Ok` or `Err(<Display of the error>)`: a failure message without the
/// error's `Debug` formatting (which pulls in `str` escaping and Unicode
/// tables).
pub fn outcome<T, E: fmt::Display>(r: &Result<T, E>) -> alloc::string::String {
    match r {
        Ok(_) => alloc::string::String::from("Ok"),
        Err(e) => alloc::format!("Err({e})"),
    }
}

/// Writes without taking the lock: for the exception and panic paths, which
/// may interrupt a CPU that holds it.
pub fn print_unlocked(args: fmt::Arguments) {
    let base = BASE.load(Ordering::Acquire);
    if base != 0 {
        let _ = Uart(base).write_fmt(args);
    }
}

/// Prints to the console, like `std::print!`.
#[allow(unused_macros)]
macro_rules! print {
    ($($arg:tt)*) => { $crate::image::console::print_args(format_args!($($arg)*)) };
}

/// Prints a line to the console, like `std::println!`.
#[allow(unused_macros)]
macro_rules! println {
    () => { $crate::image::console::print_args(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::image::console::print_line(format_args!($($arg)*))
    };
}

#[allow(unused_imports)]
pub(crate) use {print, println};

struct Logger;
static LOGGER: Logger = Logger;

impl Log for Logger {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        let module = record.module_path().unwrap_or(record.target());
        print_args(format_args!(
            "[{:<5} {}] {}\n",
            record.level(),
            module,
            record.args()
        ));
    }

    fn flush(&self) {}
}
