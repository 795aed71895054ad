//! The first instructions: CPU state, stacks, BSS, then Rust.
//!
//! Both CPUs run the same sequence (`common_entry`) with their stack top in
//! `x0`. Rust runs on SP_EL0 (SPSel = 0); SP_EL2 holds a separate exception
//! stack, so a stack overflow into the guard page below SP_EL0 is still
//! reported by the vectors instead of recursing into the same fault.

use core::arch::global_asm;

use super::layout::{GUARD_SIZE, STACK_SIZE};

/// HCR_EL2 at boot: RW = 1 (EL1 is AArch64), nothing trapped or routed.
const HCR_EL2_BOOT: u64 = 1 << 31;
/// CPTR_EL2 (E2H = 0 layout): the RES1 bits, TFP = 0 so FP/SIMD is not
/// trapped, TTA = 0, TCPAC = 0.
const CPTR_EL2_BOOT: u64 = 0x33ff;

global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
_start:
    mrs     x9, CurrentEL
    ubfx    x9, x9, #2, #2
    cmp     x9, #2
    b.ne    wrong_el

    /* Zero BSS (the stacks and the heap are outside it). */
    adrp    x9, bss_start
    add     x9, x9, :lo12:bss_start
    adrp    x10, bss_end
    add     x10, x10, :lo12:bss_end
1:  cmp     x9, x10
    b.hs    2f
    stp     xzr, xzr, [x9], #16
    b       1b
2:
    adrp    x0, boot_stack_top
    add     x0, x0, :lo12:boot_stack_top
    mov     x1, #1
    b       common_entry

    /* A secondary CPU (PSCI CPU_ON entry point): x0 = its stack top. */
    .global secondary_entry
secondary_entry:
    mrs     x9, CurrentEL
    ubfx    x9, x9, #2, #2
    cmp     x9, #2
    b.ne    wrong_el
    mov     x1, #0

    /* x0 = stack top, x1 = 1 on the boot CPU. */
common_entry:
    ldr     x9, ={cptr}
    msr     cptr_el2, x9
    ldr     x9, ={hcr}
    msr     hcr_el2, x9
    adrp    x9, exception_vectors
    add     x9, x9, :lo12:exception_vectors
    msr     vbar_el2, x9
    isb

    /* SP_EL2: the exception stack, below this CPU's stack and its guard. */
    msr     spsel, #1
    ldr     x10, ={stack_and_guard}
    sub     x9, x0, x10
    mov     sp, x9
    /* SP_EL0: the stack Rust runs on. */
    msr     spsel, #0
    mov     sp, x0
    mov     x29, #0
    mov     x30, #0

    mov     x0, x1
    bl      image_rust_entry
    b       .

    /* Not at EL2: nothing is known to work (no console yet), so try to
       leave through semihosting with status 1, else park. */
wrong_el:
    ldr     x9, =0x20026
    mov     x10, #1
    adrp    x1, bss_start
    add     x1, x1, :lo12:bss_start
    stp     x9, x10, [x1]
    mov     x0, #0x20
    hlt     #0xf000
3:  wfe
    b       3b
    "#,
    cptr = const CPTR_EL2_BOOT,
    hcr = const HCR_EL2_BOOT,
    stack_and_guard = const STACK_SIZE + GUARD_SIZE,
);
