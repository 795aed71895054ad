//! The tiny EL2 image for QEMU `virt`: boot, console, MMU, DTB, PCI, DMA
//! memory, and the on-target test harness.
//!
//! Included by the image binary (`src/main.rs`) and by every on-target test
//! image (`tests/*.rs`) as `mod image`, never by the library: a hypervisor
//! that links the driver gets no boot code.
//!
//! The entry code calls `crate::main()` (a `fn main() -> !` in the including
//! crate) on the boot CPU; `main` calls [`init`] first.

// Each image uses a different subset of this module.
#![allow(dead_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod bench;
pub mod console;
pub mod cpu;
pub mod demo;
pub mod dma;
pub mod edu;
pub mod entry;
pub mod exceptions;
pub mod fwcfg;
pub mod gic;
pub mod guest;
pub mod guests;
pub mod harness;
pub mod heap;
pub mod hvc;
pub mod hvtables;
pub mod iommu;
pub mod layout;
pub mod mmu;
pub mod pci;
pub mod platform;
pub mod psci;
pub mod semihosting;
pub mod smp;
pub mod vcpu;
pub mod vm;

use alloc::vec::Vec;

use console::{print, println};
#[allow(unused_imports)]
pub use dma::ImageHal;
#[allow(unused_imports)]
pub use exceptions::set_irq_handler;
use pci::PciFunction;
use platform::Platform;
pub use semihosting::exit;
use spin::Once;

/// Exit status when the image cannot boot (no DTB, missing device, ...).
pub const EXIT_BOOT_FAILURE: u32 = 2;
/// Exit status after a panic.
pub const EXIT_PANIC: u32 = 101;

/// What [`init`] found.
#[derive(Debug)]
pub struct Boot {
    /// The board, from the DTB.
    pub platform: Platform,
    /// Every PCI function, enumerated and configured.
    pub pci: Vec<PciFunction>,
}

static BOOT: Once<Boot> = Once::new();

/// The result of [`init`] (panics if it has not run).
pub fn boot() -> &'static Boot {
    BOOT.get().expect("image::init has not run")
}

fn fail(what: &str, err: impl core::fmt::Display) -> ! {
    println!("boot: {what}: {err}");
    exit(EXIT_BOOT_FAILURE)
}

/// Brings the image up, in order: heap, DTB, console, MMU + caches, DMA
/// memory, PCI. Prints a short banner and returns what it found. Runs once.
pub fn init() -> &'static Boot {
    layout::check();
    heap::init();
    // SAFETY: RAM at DTB_ADDR is readable (MMU off: all of it is); QEMU puts
    // the DTB there because the image is linked above RAM base + 1 MiB.
    let fdt = match unsafe { platform::open_dtb(platform::DTB_ADDR) } {
        Ok(fdt) => fdt,
        // No DTB, no console: the exit status is the only report.
        Err(_) => exit(EXIT_BOOT_FAILURE),
    };
    let uart = platform::find_uart(&fdt).unwrap_or_else(|_| exit(EXIT_BOOT_FAILURE));
    // SAFETY: the DTB names this PL011; the image is its only user, and the
    // MMU maps it (identity, device memory) once on.
    unsafe { console::init(uart.base as usize, log::LevelFilter::Info) };

    let platform = Platform::from_dtb(&fdt).unwrap_or_else(|e| fail("DTB", e));
    if let Err(e) = mmu::init(&platform) {
        fail("MMU", e);
    }
    dma::init(&platform.ram, &[platform.dtb.range(), layout::image()]);
    print_banner(&platform);
    let pci = pci::enumerate(&platform.pci).unwrap_or_else(|e| fail("PCI", e));
    BOOT.call_once(|| Boot { platform, pci })
}

fn print_banner(p: &Platform) {
    println!(
        "smmuv3 image: CurrentEL {}, MMU {}, image {:#x}..{:#x}",
        cpu::current_el(),
        if mmu::enabled() {
            "on (caches on)"
        } else {
            "OFF"
        },
        layout::image().start,
        layout::image().end
    );
    for r in &p.ram {
        println!("  RAM   {r} ({})", pci::human_size(r.size));
    }
    println!("  UART  PL011 at {:#x}", p.uart.base);
    print_gic(&p.gic);
    let i = p.smmu.irqs;
    let irq = |v: Option<u32>| {
        v.map_or_else(
            || alloc::string::String::from("-"),
            |n| alloc::format!("{n}"),
        )
    };
    println!(
        "  SMMU  {} IRQs eventq {} priq {} cmdq-sync {} gerror {}, {}",
        p.smmu.reg,
        irq(i.eventq),
        irq(i.priq),
        irq(i.cmdq_sync),
        irq(i.gerror),
        if p.smmu.dma_coherent {
            "dma-coherent"
        } else {
            "not dma-coherent"
        }
    );
    println!(
        "  PSCI  {}",
        match p.psci {
            Some(platform::PsciMethod::Smc) => "smc",
            Some(platform::PsciMethod::Hvc) => "hvc",
            None => "none",
        }
    );
    println!(
        "  PCI   ECAM {} buses {:02x}..{:02x}",
        p.pci.ecam, p.pci.bus_start, p.pci.bus_end
    );
    for (name, w) in [
        ("32-bit", p.pci.mem32),
        ("64-bit", p.pci.mem64),
        ("I/O", p.pci.io),
    ] {
        if let Some(w) = w {
            println!(
                "        {name} window {} (PCI {:#x})",
                w.cpu_region(),
                w.pci_addr
            );
        }
    }
    println!(
        "  DMA   {} MiB of RAM for device-visible memory",
        dma::bytes_total() >> 20
    );
}

/// The banner's GIC lines: the controller the DTB names, then the interrupt
/// mode the image uses with it (`GICv3`, `GICv2`, or polling without one).
fn print_gic(gic: &Result<platform::Gic, platform::DtbError>) {
    match gic {
        Ok(platform::Gic::V3(g)) => {
            print!("  GIC   v3: GICD {:#x}", g.distributor.base);
            for r in &g.redistributors {
                print!(", GICR {r}");
            }
            if let Some(its) = g.its {
                print!(", ITS {:#x}", its.base);
            }
            println!();
        }
        Ok(platform::Gic::V2(g)) => {
            print!(
                "  GIC   v2: GICD {:#x}, GICC {:#x}",
                g.distributor.base, g.cpu_interface.base
            );
            if let Some(r) = g.hypervisor {
                print!(", GICH {:#x}", r.base);
            }
            if let Some(r) = g.virtual_cpu {
                print!(", GICV {:#x}", r.base);
            }
            if let Some(r) = g.v2m {
                print!(", v2m {:#x}", r.base);
            }
            println!();
        }
        Err(e) => println!("  GIC   none usable: {e}"),
    }
    println!("        interrupts: {}", interrupt_mode(gic));
}

/// How the image takes device interrupts with this GIC: `"GICv3"`,
/// `"GICv2"`, or `"none (polling)"` when the DTB offers no usable GIC (the
/// SMMU's event queue is then drained by polling `Smmu::service`).
pub fn interrupt_mode(gic: &Result<platform::Gic, platform::DtbError>) -> &'static str {
    match gic {
        Ok(platform::Gic::V3(_)) => "GICv3",
        Ok(platform::Gic::V2(_)) => "GICv2",
        Err(_) => "none (polling)",
    }
}

/// Prints one line per PCI function.
pub fn print_pci_functions(functions: &[PciFunction]) {
    println!("PCI functions:");
    for f in functions {
        println!("  {f}");
    }
}

/// Rust entry from `entry.rs`: the boot CPU runs the including crate's
/// `main`, a secondary CPU its registered entry.
#[unsafe(no_mangle)]
extern "C" fn image_rust_entry(boot_cpu: u64) -> ! {
    if boot_cpu == 1 {
        crate::main()
    } else {
        smp::secondary_main()
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let (file, line) = info.location().map_or(("?", 0), |l| (l.file(), l.line()));
    console::print_unlocked(format_args!(
        "\npanic: {} at {file}:{line}\n",
        info.message()
    ));
    exit(EXIT_PANIC)
}
