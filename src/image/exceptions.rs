//! EL2 exception vectors and their Rust side.
//!
//! Every vector saves the full register state (GPRs, ELR/SPSR/ESR/FAR, FP/SIMD
//! registers and FPCR/FPSR) in a [`Frame`] on the exception stack (SP_EL2) and
//! calls [`exception_handler`]:
//!
//! - synchronous exceptions and SErrors print a decoded report and end the
//!   image with [`EXIT_EXCEPTION`];
//! - IRQs call the handler registered with [`set_irq_handler`] and return
//!   with `eret`, restoring everything that was saved.
//!
//! The lower-EL entries (a guest's exceptions) go to the world switch in
//! `vcpu.rs` instead, which returns to the hypervisor's run loop; only when
//! no guest is loaded do they take the report path above.

use core::arch::global_asm;
use core::fmt;
use core::sync::atomic::{AtomicPtr, Ordering};

use super::console::print_unlocked;
use super::{layout, semihosting};

/// Exit status after an unexpected exception.
pub const EXIT_EXCEPTION: u32 = 3;

/// The register state saved by the vectors. Layout shared with the assembly.
#[repr(C)]
#[derive(Debug)]
pub struct Frame {
    /// x0..x30.
    pub x: [u64; 31],
    /// ELR_EL2: where the exception was taken (restored on return).
    pub elr: u64,
    /// SPSR_EL2: PSTATE when taken (restored on return).
    pub spsr: u64,
    /// ESR_EL2: the syndrome.
    pub esr: u64,
    /// FAR_EL2: the faulting address, for aborts.
    pub far: u64,
    _pad: u64,
    /// q0..q31.
    pub q: [u128; 32],
    /// FPCR, FPSR.
    pub fpcr: u64,
    /// FPSR.
    pub fpsr: u64,
}

pub(crate) const FRAME_SIZE: usize = core::mem::size_of::<Frame>();
const _: () = assert!(FRAME_SIZE == 816 && FRAME_SIZE.is_multiple_of(16));
const _: () = assert!(core::mem::offset_of!(Frame, elr) == 248);
const _: () = assert!(core::mem::offset_of!(Frame, q) == 288);
const _: () = assert!(core::mem::offset_of!(Frame, fpcr) == 800);

global_asm!(
    r#"
    .macro ventry kind
    .balign 0x80
    sub     sp, sp, #{frame}
    stp     x0, x1, [sp]
    mov     x0, #\kind
    b       exception_common
    .endm

    /* Lower-EL entries: a guest's exception goes to the world switch
       (vcpu.rs), which falls back to exception_common when no guest is
       loaded. */
    .macro gentry kind
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mov     x1, #\kind
    b       guest_exit
    .endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global exception_vectors
exception_vectors:
    ventry 0
    ventry 1
    ventry 2
    ventry 3
    ventry 4
    ventry 5
    ventry 6
    ventry 7
    gentry 8
    gentry 9
    gentry 10
    gentry 11
    gentry 12
    gentry 13
    gentry 14
    gentry 15

    .global exception_common
exception_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    str     x30, [sp, #240]
    mrs     x1, elr_el2
    mrs     x2, spsr_el2
    stp     x1, x2, [sp, #248]
    mrs     x1, esr_el2
    mrs     x2, far_el2
    stp     x1, x2, [sp, #264]
    add     x1, sp, #288
    stp     q0, q1, [x1, #0]
    stp     q2, q3, [x1, #32]
    stp     q4, q5, [x1, #64]
    stp     q6, q7, [x1, #96]
    stp     q8, q9, [x1, #128]
    stp     q10, q11, [x1, #160]
    stp     q12, q13, [x1, #192]
    stp     q14, q15, [x1, #224]
    stp     q16, q17, [x1, #256]
    stp     q18, q19, [x1, #288]
    stp     q20, q21, [x1, #320]
    stp     q22, q23, [x1, #352]
    stp     q24, q25, [x1, #384]
    stp     q26, q27, [x1, #416]
    stp     q28, q29, [x1, #448]
    stp     q30, q31, [x1, #480]
    mrs     x2, fpcr
    mrs     x3, fpsr
    add     x1, x1, #512
    stp     x2, x3, [x1]

    mov     x1, x0
    mov     x0, sp
    bl      exception_handler

    add     x1, sp, #800
    ldp     x2, x3, [x1]
    msr     fpcr, x2
    msr     fpsr, x3
    add     x1, sp, #288
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
    ldp     x1, x2, [sp, #248]
    msr     elr_el2, x1
    msr     spsr_el2, x2
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    add     sp, sp, #{frame}
    eret
    "#,
    frame = const FRAME_SIZE,
);

static IRQ_HANDLER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Registers the function every IRQ vector calls (the GIC driver's
/// acknowledge/dispatch/EOI routine). Replaces any earlier handler.
pub fn set_irq_handler(handler: fn()) {
    IRQ_HANDLER.store(handler as *mut (), Ordering::Release);
}

fn irq_handler() -> Option<fn()> {
    let p = IRQ_HANDLER.load(Ordering::Acquire);
    // SAFETY: the only non-null values ever stored are `fn()` pointers
    // (`set_irq_handler`), and fn pointers and data pointers have the same
    // size and representation on AArch64.
    (!p.is_null()).then(|| unsafe { core::mem::transmute::<*mut (), fn()>(p) })
}

const KINDS: [&str; 4] = ["synchronous", "IRQ", "FIQ", "SError"];
const ORIGINS: [&str; 4] = [
    "current EL with SP_EL0",
    "current EL with SP_EL2",
    "lower EL (AArch64)",
    "lower EL (AArch32)",
];

/// Called by the vectors with the saved state; returns only for IRQs.
#[unsafe(no_mangle)]
extern "C" fn exception_handler(frame: &mut Frame, vector: u64) {
    let kind = (vector & 3) as usize;
    let origin = ((vector >> 2) & 3) as usize;
    if kind == 1
        && let Some(handler) = irq_handler()
    {
        handler();
        return;
    }
    print_unlocked(format_args!(
        "\nEXCEPTION: {} from {}\n{}",
        KINDS[kind],
        ORIGINS[origin],
        Report(frame, kind)
    ));
    semihosting::exit(EXIT_EXCEPTION);
}

/// The name of an ESR_EL2 exception class.
pub fn exception_class_name(ec: u64) -> &'static str {
    match ec {
        0x00 => "unknown reason",
        0x01 => "trapped WFI/WFE",
        0x07 => "trapped SVE/SIMD/FP access",
        0x0e => "illegal execution state",
        0x15 => "SVC (AArch64)",
        0x16 => "HVC (AArch64)",
        0x17 => "SMC (AArch64)",
        0x18 => "trapped MSR/MRS/system instruction",
        0x19 => "trapped SVE access",
        0x20 => "instruction abort from lower EL",
        0x21 => "instruction abort from current EL",
        0x22 => "PC alignment fault",
        0x24 => "data abort from lower EL",
        0x25 => "data abort from current EL",
        0x26 => "SP alignment fault",
        0x2c => "trapped floating-point exception",
        0x2f => "SError",
        0x30 => "breakpoint from lower EL",
        0x31 => "breakpoint from current EL",
        0x32 => "software step from lower EL",
        0x33 => "software step from current EL",
        0x34 => "watchpoint from lower EL",
        0x35 => "watchpoint from current EL",
        0x3c => "BRK instruction",
        _ => "reserved/other",
    }
}

/// Decodes a data/instruction fault status code (DFSC/IFSC, ESR bits 5:0).
pub struct FaultStatus(pub u64);

impl fmt::Display for FaultStatus {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let code = self.0 & 0x3f;
        let level = code & 3;
        match code >> 2 {
            0b0000 => write!(f, "address size fault, level {level}"),
            0b0001 => write!(f, "translation fault, level {level}"),
            0b0010 => write!(f, "access flag fault, level {level}"),
            0b0011 => write!(f, "permission fault, level {level}"),
            _ => f.write_str(match code {
                0b010000 => "synchronous external abort",
                0b010001 => "synchronous tag check fault",
                0b010100..=0b010111 => "synchronous external abort on table walk",
                0b100001 => "alignment fault",
                0b110000 => "TLB conflict abort",
                _ => "other fault",
            }),
        }
    }
}

struct Report<'a>(&'a Frame, usize);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let fr = self.0;
        let ec = (fr.esr >> 26) & 0x3f;
        let iss = fr.esr & 0x1ff_ffff;
        if self.1 == 0 || self.1 == 3 {
            writeln!(f, "  {}", exception_class_name(ec))?;
        }
        writeln!(
            f,
            "  ESR_EL2 {:#010x}: EC {:#04x}, IL {}, ISS {:#09x}",
            fr.esr,
            ec,
            (fr.esr >> 25) & 1,
            iss
        )?;
        if self.1 == 0 && matches!(ec, 0x20 | 0x21 | 0x24 | 0x25) {
            write!(
                f,
                "  fault status {:#04x}: {}",
                iss & 0x3f,
                FaultStatus(iss)
            )?;
            if ec >= 0x24 {
                let wnr = (iss >> 6) & 1;
                write!(
                    f,
                    ", WnR {wnr} ({})",
                    if wnr == 1 { "write" } else { "read" }
                )?;
            }
            writeln!(f)?;
            if let Some(what) = guard_page_of(fr.far as usize) {
                writeln!(f, "  FAR is in {what}: stack overflow?")?;
            }
        }
        writeln!(
            f,
            "  FAR_EL2 {:#018x}  ELR_EL2 {:#018x}  SPSR_EL2 {:#010x}",
            fr.far, fr.elr, fr.spsr
        )?;
        for (i, pair) in fr.x.chunks(2).enumerate() {
            match pair {
                [a, b] => writeln!(f, "  x{:<2} {a:#018x}  x{:<2} {b:#018x}", 2 * i, 2 * i + 1)?,
                [a] => writeln!(f, "  x{:<2} {a:#018x}", 2 * i)?,
                _ => {}
            }
        }
        Ok(())
    }
}

fn guard_page_of(addr: usize) -> Option<&'static str> {
    (0..layout::MAX_CPUS).find_map(|cpu| {
        let s = layout::cpu_stacks(cpu);
        if s.guard.contains(&addr) {
            Some(
                [
                    "the guard page below CPU 0's stack",
                    "the guard page below CPU 1's stack",
                ][cpu],
            )
        } else if s.exc_guard.contains(&addr) {
            Some(
                [
                    "the guard page below CPU 0's exception stack",
                    "the guard page below CPU 1's exception stack",
                ][cpu],
            )
        } else {
            None
        }
    })
}
