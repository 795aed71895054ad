//! Arm semihosting: the only way the image reports a status to the host.
//!
//! QEMU must run with `-semihosting`; the call is `hlt #0xf000`.

use core::arch::asm;

const SYS_EXIT: u64 = 0x18;
const SYS_EXIT_EXTENDED: u64 = 0x20;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

/// Ends the QEMU process with `code` as its exit status.
pub fn exit(code: u32) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(code)];
    for op in [SYS_EXIT_EXTENDED, SYS_EXIT] {
        // SAFETY: a semihosting call reads the two-word parameter block,
        // which lives on this stack for the duration of the call, and does
        // not return when the host honours it.
        unsafe {
            asm!("hlt #0xf000", inout("x0") op => _, in("x1") block.as_ptr(), options(nostack));
        }
    }
    // No semihosting host: park the CPU.
    loop {
        aarch64_cpu::asm::wfe();
    }
}
