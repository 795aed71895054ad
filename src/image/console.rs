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
        $crate::image::console::print_args(format_args!("{}\n", format_args!($($arg)*)))
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
