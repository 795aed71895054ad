//! The hook for secondary CPUs (a later issue starts CPU 1 with PSCI
//! CPU_ON, entry [`secondary_entry_address`], context = its stack top from
//! [`super::layout::cpu_stacks`]).

use core::sync::atomic::{AtomicPtr, Ordering};

use super::{mmu, semihosting};

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
