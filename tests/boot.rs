//! On-target tests of the image runtime itself: CPU state, MMU, heap, DMA
//! memory, DTB parsing.

#![no_std]
#![no_main]

extern crate alloc;

#[path = "../src/image/mod.rs"]
mod image;

use image::harness::{self, TestResult, check, check_eq, tests};

fn main() -> ! {
    image::init();
    harness::run("boot", tests![current_el_is_2])
}

fn current_el_is_2() -> TestResult {
    check_eq!(image::cpu::current_el(), 2);
    Ok(())
}
