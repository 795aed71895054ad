//! The expected-failure test: a read from an unmapped page (the guard page
//! below CPU 0's stack) must end the image through the exception vector with
//! a decoded report and a non-zero exit status. `qemu/run.sh` turns
//! "announced + reported + non-zero exit" into `test exception_report ... ok`,
//! and anything else (exit 0, no report) into FAILED.

#![no_std]
#![no_main]

extern crate alloc;

#[path = "../src/image/mod.rs"]
mod image;

use image::console::println;
use image::{harness, layout};

fn main() -> ! {
    image::init();
    harness::expect_exception("exception_report", "data abort from current EL");
    let guard = layout::cpu_stacks(0).guard.start;
    println!("exception: reading the unmapped guard page at {guard:#x}");
    // SAFETY: not safe at all, on purpose: the page is unmapped, so this load
    // faults and the vector reports it and exits; it never returns a value.
    let value = unsafe { (guard as *const u64).read_volatile() };
    println!("exception: the read returned {value:#x}: the guard page is mapped!");
    image::exit(0)
}
