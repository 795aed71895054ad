#![no_std]
#![no_main]
extern crate alloc;
#[path = "../src/image/mod.rs"]
mod image;
use image::harness::{self, tests};
fn main() -> ! {
    image::init();
    harness::run("smp", tests![])
}
