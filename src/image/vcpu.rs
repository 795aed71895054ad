//! The world switch between the hypervisor (EL2) and a guest vCPU (EL1).
//!
//! [`Vcpu::enter`] saves the hypervisor's callee-saved state (x19..x30,
//! its stack pointer, FPCR, d8..d15) in the [`Vcpu`], points TPIDR_EL2 at
//! it, loads the guest's general-purpose, FP/SIMD, SP_EL0, ELR_EL2 and
//! SPSR_EL2 state, and `eret`s into the guest. Every exception the guest
//! takes to EL2 (the lower-EL entries of the vector table, AArch64 and
//! AArch32: synchronous, IRQ, FIQ, SError) lands in `guest_exit`, which saves
//! the whole guest register file plus ESR/FAR/HPFAR into the same [`Vcpu`],
//! restores the hypervisor's state and returns from `enter` with the vector
//! number. The exit is then handled in ordinary Rust on the hypervisor's
//! stack (see `vm.rs`), and the guest resumed by calling `enter` again.
//!
//! A lower-EL exception while no guest is loaded (TPIDR_EL2 = 0) goes to the
//! ordinary report path of `exceptions.rs`.
//!
//! Not switched here: the guest's EL1 system registers (SCTLR_EL1, SP_EL1,
//! VBAR_EL1, ...). Each CPU runs one VM from start to finish and the
//! hypervisor never uses EL1 registers, so they stay in the CPU between
//! exits; `vm.rs` programs them before the first entry.

use core::arch::global_asm;

/// The guest's register file, as `guest_exit` saves it. Layout shared with
/// the assembly (offsets checked below).
#[repr(C, align(16))]
#[derive(Debug, Default, Clone)]
pub struct GuestRegs {
    /// x0..x30.
    pub x: [u64; 31],
    /// SP_EL0.
    pub sp_el0: u64,
    /// ELR_EL2: where the guest resumes.
    pub elr: u64,
    /// SPSR_EL2: the guest's PSTATE.
    pub spsr: u64,
    /// FPCR.
    pub fpcr: u64,
    /// FPSR.
    pub fpsr: u64,
    /// q0..q31.
    pub q: [u128; 32],
}

/// The hypervisor's callee-saved state while a guest runs.
#[repr(C)]
#[derive(Debug, Default, Clone)]
struct HostRegs {
    x19_x30: [u64; 12],
    sp: u64,
    fpcr: u64,
    d8_d15: [u64; 8],
}

/// What the CPU reported when the guest left.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct ExitRegs {
    /// The vector: 8..11 = synchronous/IRQ/FIQ/SError from AArch64,
    /// 12..15 the same from AArch32.
    pub vector: u64,
    /// ESR_EL2.
    pub esr: u64,
    /// FAR_EL2.
    pub far: u64,
    /// HPFAR_EL2.
    pub hpfar: u64,
}

/// One virtual CPU: guest registers, the saved hypervisor state while the
/// guest runs, and the last exit's syndrome.
#[repr(C, align(16))]
#[derive(Debug, Default, Clone)]
pub struct Vcpu {
    /// The guest's registers (valid while the guest is not running).
    pub guest: GuestRegs,
    host: HostRegs,
    /// The last exit.
    pub exit: ExitRegs,
}

const SP_EL0: usize = core::mem::offset_of!(GuestRegs, sp_el0);
const ELR: usize = core::mem::offset_of!(GuestRegs, elr);
const FPCR: usize = core::mem::offset_of!(GuestRegs, fpcr);
const Q: usize = core::mem::offset_of!(GuestRegs, q);
const HOST: usize = core::mem::offset_of!(Vcpu, host);
const HOST_SP: usize = HOST + core::mem::offset_of!(HostRegs, sp);
const HOST_D8: usize = HOST + core::mem::offset_of!(HostRegs, d8_d15);
const EXIT: usize = core::mem::offset_of!(Vcpu, exit);
const _: () = assert!(SP_EL0 == 248 && ELR == 256 && FPCR == 272 && Q == 288);
const _: () = assert!(HOST == 800 && HOST_SP == 896 && HOST_D8 == 912 && EXIT == 976);
const _: () = assert!(core::mem::offset_of!(GuestRegs, spsr) == ELR + 8);
const _: () = assert!(core::mem::offset_of!(GuestRegs, fpsr) == FPCR + 8);

/// The vector numbers `guest_exit` reports.
pub mod vector {
    /// Synchronous exception from a lower EL in AArch64.
    pub const SYNC: u64 = 8;
    /// IRQ from a lower EL in AArch64.
    pub const IRQ: u64 = 9;
    /// FIQ from a lower EL in AArch64.
    pub const FIQ: u64 = 10;
    /// SError from a lower EL in AArch64.
    pub const SERROR: u64 = 11;
    /// First of the AArch32 lower-EL vectors (12..15).
    pub const AARCH32: u64 = 12;
}

global_asm!(
    r#"
    .section .text.vcpu, "ax"
    .global vcpu_enter
vcpu_enter:
    /* x0 = &mut Vcpu. Save the hypervisor's callee-saved state. */
    add     x11, x0, #{host}
    stp     x19, x20, [x11, #0]
    stp     x21, x22, [x11, #16]
    stp     x23, x24, [x11, #32]
    stp     x25, x26, [x11, #48]
    stp     x27, x28, [x11, #64]
    stp     x29, x30, [x11, #80]
    mov     x9, sp
    mrs     x10, fpcr
    stp     x9, x10, [x11, #{host_sp} - {host}]
    stp     d8, d9, [x11, #{host_d8} - {host} + 0]
    stp     d10, d11, [x11, #{host_d8} - {host} + 16]
    stp     d12, d13, [x11, #{host_d8} - {host} + 32]
    stp     d14, d15, [x11, #{host_d8} - {host} + 48]
    msr     daifset, #0xf
    msr     tpidr_el2, x0

    /* The guest's FP/SIMD state. */
    add     x1, x0, #{q}
    ldp     q0, q1, [x1, #0]
    ldp     q2, q3, [x1, #32]
    ldp     q4, q5, [x1, #64]
    ldp     q6, q7, [x1, #96]
    ldp     q8, q9, [x1, #128]
    ldp     q10, q11, [x1, #160]
    ldp     q12, q13, [x1, #192]
    ldp     q14, q15, [x1, #224]
    ldp     q16, q17, [x1, #256]
    ldp     q18, q19, [x1, #288]
    ldp     q20, q21, [x1, #320]
    ldp     q22, q23, [x1, #352]
    ldp     q24, q25, [x1, #384]
    ldp     q26, q27, [x1, #416]
    ldp     q28, q29, [x1, #448]
    ldp     q30, q31, [x1, #480]
    ldp     x2, x3, [x0, #{fpcr}]
    msr     fpcr, x2
    msr     fpsr, x3

    /* SP_EL0 becomes the guest's: run on SP_EL2 (idle exception stack)
       from here to the eret. */
    msr     spsel, #1
    ldr     x2, [x0, #{sp_el0}]
    msr     sp_el0, x2
    ldp     x2, x3, [x0, #{elr}]
    msr     elr_el2, x2
    msr     spsr_el2, x3

    ldp     x2, x3, [x0, #16]
    ldp     x4, x5, [x0, #32]
    ldp     x6, x7, [x0, #48]
    ldp     x8, x9, [x0, #64]
    ldp     x10, x11, [x0, #80]
    ldp     x12, x13, [x0, #96]
    ldp     x14, x15, [x0, #112]
    ldp     x16, x17, [x0, #128]
    ldp     x18, x19, [x0, #144]
    ldp     x20, x21, [x0, #160]
    ldp     x22, x23, [x0, #176]
    ldp     x24, x25, [x0, #192]
    ldp     x26, x27, [x0, #208]
    ldp     x28, x29, [x0, #224]
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0, #0]
    eret
    dsb     nsh
    isb

    /* From the lower-EL vectors: guest x0/x1 pushed on SP_EL2, x1 = vector. */
    .global guest_exit
guest_exit:
    mrs     x0, tpidr_el2
    cbz     x0, 9f
    stp     x2, x3, [x0, #16]
    stp     x4, x5, [x0, #32]
    stp     x6, x7, [x0, #48]
    stp     x8, x9, [x0, #64]
    stp     x10, x11, [x0, #80]
    stp     x12, x13, [x0, #96]
    stp     x14, x15, [x0, #112]
    stp     x16, x17, [x0, #128]
    stp     x18, x19, [x0, #144]
    stp     x20, x21, [x0, #160]
    stp     x22, x23, [x0, #176]
    stp     x24, x25, [x0, #192]
    stp     x26, x27, [x0, #208]
    stp     x28, x29, [x0, #224]
    str     x30, [x0, #240]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x0, #0]
    mrs     x2, sp_el0
    str     x2, [x0, #{sp_el0}]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x2, x3, [x0, #{elr}]
    mrs     x2, fpcr
    mrs     x3, fpsr
    stp     x2, x3, [x0, #{fpcr}]
    add     x2, x0, #{q}
    stp     q0, q1, [x2, #0]
    stp     q2, q3, [x2, #32]
    stp     q4, q5, [x2, #64]
    stp     q6, q7, [x2, #96]
    stp     q8, q9, [x2, #128]
    stp     q10, q11, [x2, #160]
    stp     q12, q13, [x2, #192]
    stp     q14, q15, [x2, #224]
    stp     q16, q17, [x2, #256]
    stp     q18, q19, [x2, #288]
    stp     q20, q21, [x2, #320]
    stp     q22, q23, [x2, #352]
    stp     q24, q25, [x2, #384]
    stp     q26, q27, [x2, #416]
    stp     q28, q29, [x2, #448]
    stp     q30, q31, [x2, #480]
    add     x4, x0, #{exit}
    mrs     x2, esr_el2
    stp     x1, x2, [x4, #0]
    mrs     x2, far_el2
    mrs     x3, hpfar_el2
    stp     x2, x3, [x4, #16]
    msr     tpidr_el2, xzr

    /* Back to the hypervisor: its SP_EL0 stack, callee-saved registers. */
    add     x4, x0, #{host}
    ldp     x9, x10, [x4, #{host_sp} - {host}]
    msr     sp_el0, x9
    msr     fpcr, x10
    msr     spsel, #0
    ldp     d8, d9, [x4, #{host_d8} - {host} + 0]
    ldp     d10, d11, [x4, #{host_d8} - {host} + 16]
    ldp     d12, d13, [x4, #{host_d8} - {host} + 32]
    ldp     d14, d15, [x4, #{host_d8} - {host} + 48]
    ldp     x19, x20, [x4, #0]
    ldp     x21, x22, [x4, #16]
    ldp     x23, x24, [x4, #32]
    ldp     x25, x26, [x4, #48]
    ldp     x27, x28, [x4, #64]
    ldp     x29, x30, [x4, #80]
    mov     x0, x1
    ret

    /* No guest loaded: build an ordinary exception frame and report. */
9:  sub     sp, sp, #({frame} - 16)
    stp     x2, x3, [sp, #16]
    add     x2, sp, #({frame} - 16)
    ldp     x2, x3, [x2]
    stp     x2, x3, [sp]
    mov     x0, x1
    ldp     x2, x3, [sp, #16]
    b       exception_common
    "#,
    host = const HOST,
    host_sp = const HOST_SP,
    host_d8 = const HOST_D8,
    q = const Q,
    fpcr = const FPCR,
    sp_el0 = const SP_EL0,
    elr = const ELR,
    exit = const EXIT,
    frame = const super::exceptions::FRAME_SIZE,
);

unsafe extern "C" {
    fn vcpu_enter(vcpu: *mut Vcpu) -> u64;
}

impl Vcpu {
    /// Runs the guest until its next exception to EL2; returns the vector
    /// number (see [`vector`]), with the guest's registers and the syndrome
    /// saved in `self`. IRQs, FIQs, SErrors and debug exceptions are masked
    /// at EL2 when this returns (the caller's DAIF is not restored).
    ///
    /// # Safety
    ///
    /// The CPU's EL2 state describes a VM whose stage 2 confines this guest
    /// (HCR_EL2.VM = 1, RW = 1, VTTBR_EL2/VTCR_EL2 for the VM's tables,
    /// IMO/FMO/AMO routing its interrupts to EL2), and `guest.spsr` names
    /// EL1 or EL0: the guest can then reach nothing but what that stage 2
    /// maps, and every exception it takes comes back here.
    pub unsafe fn enter(&mut self) -> u64 {
        // SAFETY: `vcpu_enter` saves every callee-saved register it
        // changes and returns through `guest_exit` with them restored; the
        // caller vouches for the EL2 configuration that confines the guest.
        unsafe { vcpu_enter(self) }
    }
}
