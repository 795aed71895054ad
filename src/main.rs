//! The EL2 image: boots on QEMU `virt`, prints the platform and the PCI
//! functions it configured, and exits 0. `make run` / `cargo run --release`.

#![no_std]
#![no_main]

extern crate alloc;

mod image;

fn main() -> ! {
    let boot = image::init();
    image::print_pci_functions(&boot.pci);
    #[cfg(feature = "bench")]
    run_benchmarks();
    image::exit(0)
}

/// `make bench`: the benchmarks arrive with the driver demo.
#[cfg(feature = "bench")]
fn run_benchmarks() {
    image::console::println!("bench: no benchmarks yet");
}
