//! The guest program every VM runs, and the guest-physical layout it
//! assumes.
//!
//! The program is AArch64 assembly (below) in its own section,
//! `.text.guest`, between the symbols `guest_image_start` and
//! `guest_image_end`. It is never executed where it is linked: the
//! hypervisor copies those bytes into a page of the VM's own memory
//! ([`code`]) and maps that page read-only at [`CODE_IPA`], so nothing of
//! the hypervisor is reachable from the guest. Chosen over a separately
//! built binary (`include_bytes!` from `build.rs`) because it needs no
//! second target, linker script or build step, and the constants it shares
//! with the hypervisor (HVC function IDs, check IDs, POISON) come from
//! `hvc.rs` as `const` operands, so the two cannot drift apart.
//!
//! Rules the assembly follows, because it runs at EL1 with stage 1 off:
//! position independent (only PC-relative `adr`, branches and literal-pool
//! loads; the pool sits before `guest_image_end`), naturally aligned data
//! accesses only (with stage 1 off every data access is Device memory), no
//! exclusives, no FP/SIMD, no EL1 vectors (an EL1 exception goes to
//! VBAR_EL1 = 0, which no stage 2 maps: the hypervisor stops the VM).
//!
//! Entry (set by the hypervisor, like a boot protocol): x0 RAM IPA, x1 RAM
//! size, x2 BAR0 IPA, x3 "foreign" address (another VM's RAM physical
//! address, or an IPA nothing maps), x4 seed (start of the VM's data
//! pattern), x5 phase mask ([`phase`]), x6 an unmapped IPA for DMA, x7 the
//! balloon page IPA, x8 an unmapped IPA for CPU accesses, x9 the number of
//! devices (one isolation group; device `i`'s BAR0 at [`bar_ipa`]`(i)`);
//! SP_EL1 = top of RAM. The program runs each selected phase in order,
//! reports every result with HVC REPORT (see `hvc.rs`; x4 names the device
//! a result is about), then calls DONE(0). The DMA and DMA-outside phases
//! run once per device (device `i`: pattern at [`offsets::SRC`] +
//! `i * DEVICE_BYTES` with seed + `i << 32`, out-of-RAM probe at
//! [`UNMAPPED_DMA_IPA`] + `i * 4096`); every other phase drives device 0.

use core::arch::global_asm;

use super::hvc::{self, check};

/// Where the guest's code page sits in its IPA space (read-only).
pub const CODE_IPA: u64 = 0x0010_0000;
/// Where its first device's BAR0 sits in its IPA space (device memory).
pub const BAR_IPA: u64 = 0x0200_0000;
/// IPA distance between its devices' BARs (an edu's BAR0 is 1 MiB).
pub const BAR_STRIDE: u64 = 0x0010_0000;
/// The most devices a VM can have.
pub const MAX_DEVICES: usize = 8;
/// RAM bytes between two devices' DMA patterns.
pub const DEVICE_BYTES: u64 = 0x100;

const _: () = assert!(MAX_DEVICES as u64 * DEVICE_BYTES <= offsets::DST - offsets::SRC);
const _: () = assert!(DEVICE_BYTES >= offsets::PATTERN_BYTES && DEVICE_BYTES.is_power_of_two());
const _: () = assert!(BAR_IPA + MAX_DEVICES as u64 * BAR_STRIDE <= RAM_IPA);

/// The IPA of device `i`'s BAR0.
pub const fn bar_ipa(i: usize) -> u64 {
    BAR_IPA + i as u64 * BAR_STRIDE
}
/// Guest RAM base (IPA). Below 256 MiB, so an `edu` with QEMU's default
/// 28-bit DMA mask reaches it too.
pub const RAM_IPA: u64 = 0x0400_0000;
/// Guest RAM size: two 2 MiB blocks; the balloon takes a page out of the
/// second.
pub const RAM_SIZE: u64 = 4 << 20;
/// Offset of the 2 MiB block the balloon takes a page from.
pub const BALLOON_REGION: u64 = 2 << 20;
/// The page the balloon phase releases: the middle of the balloon region.
pub const BALLOON_PAGE_IPA: u64 = RAM_IPA + BALLOON_REGION + (1 << 20);
/// An IPA nothing maps, for the DMA-outside-RAM check.
pub const UNMAPPED_DMA_IPA: u64 = 0x0800_0000;
/// An IPA nothing maps, for the CPU abort checks.
pub const UNMAPPED_CPU_IPA: u64 = 0x0900_0000;

/// RAM offsets the program writes (everything else keeps the hypervisor's
/// fill pattern).
pub mod offsets {
    /// The DMA phase's source (256 bytes of pattern).
    pub const SRC: u64 = 0x1000;
    /// The DMA phase's destination (256 bytes).
    pub const DST: u64 = 0x2000;
    /// The balloon phase's source, the page below the balloon page.
    pub const BALLOON_BELOW: u64 = super::BALLOON_PAGE_IPA - super::RAM_IPA - 0x1000;
    /// The balloon phase's destination, the page above it.
    pub const BALLOON_ABOVE: u64 = super::BALLOON_PAGE_IPA - super::RAM_IPA + 0x1000;
    /// The stack (top of RAM, growing down, at most 64 bytes used).
    pub const STACK_LOW: u64 = super::RAM_SIZE - 0x40;
    /// Bytes of pattern the DMA phases move.
    pub const PATTERN_BYTES: u64 = 256;
}

/// Phase bits (entry x5).
pub mod phase {
    /// Report EL and MPIDR.
    pub const INFO: u64 = 1 << 0;
    /// Spin 200 ms on the generic timer.
    pub const SPIN: u64 = 1 << 1;
    /// DMA round trip through its RAM.
    pub const DMA: u64 = 1 << 2;
    /// DMA outside its RAM.
    pub const DMA_OUTSIDE: u64 = 1 << 3;
    /// CPU loads/stores outside its stage 2, and to its code.
    pub const CPU_ABORT: u64 = 1 << 4;
    /// CPU and DMA at the "foreign" address.
    pub const FOREIGN: u64 = 1 << 5;
    /// Bad hypercalls.
    pub const BAD_HVC: u64 = 1 << 6;
    /// Release one page and check it is gone, its neighbours not.
    pub const BALLOON: u64 = 1 << 7;
    /// Everything above (the nested phase is asked for separately).
    pub const ALL: u64 = (1 << 8) - 1;
    /// Nested translation owned by the guest through the pvIOMMU
    /// ([`super::nested`]); runs last, on device 0, and ends detached.
    pub const NESTED: u64 = 1 << 8;
}

#[path = "guest_nested.rs"]
pub mod nested;

/// edu register offsets and its buffer, as the guest programs them.
const EDU_BUF: u64 = 0x40000;

global_asm!(
    r#"
    .macro report id, status, detail
    mov     x2, \status
    mov     x3, \detail
    mov     x1, #\id
    mov     x4, x28
    ldr     x0, ={report}
    hvc     #0
    .endm

    /* x15 += (x0 != \reg) */
    .macro expect_x0 reg
    cmp     x0, \reg
    cinc    x15, x15, ne
    .endm

    /* x9 = (x15 != 0): a status from a failure count */
    .macro status_from_x15
    cmp     x15, #0
    cset    x9, ne
    .endm

    .macro hcall fid
    ldr     x0, =\fid
    hvc     #0
    .endm

    .section .text.guest, "ax"
    .balign 16
    .global guest_image_start
guest_image_start:
    /* x28: the device index results are about; x29: the device count
       (the functions below save and restore x29). */
    mov     x28, #0
    mov     x29, x9
    mov     x19, x0
    mov     x20, x1
    mov     x21, x2
    mov     x22, x3
    mov     x23, x4
    mov     x24, x5
    mov     x25, x6
    mov     x26, x7
    mov     x27, x8
    add     x9, x19, x20
    mov     sp, x9

    tbz     x24, #0, 1f
    bl      g_info
1:  tbz     x24, #1, 1f
    bl      g_spin
    /* Per-device phases: device x28, its BAR at x21. */
1:  tst     x24, #{per_device}
    b.eq    4f
3:  tbz     x24, #2, 5f
    bl      g_dma
5:  tbz     x24, #3, 5f
    bl      g_outside
5:  add     x28, x28, #1
    ldr     x9, ={bar_stride}
    add     x21, x21, x9
    cmp     x28, x29
    b.lo    3b
    /* Back to device 0 for the other phases. */
    msub    x21, x28, x9, x21
    mov     x28, #0
4:  tbz     x24, #4, 1f
    bl      g_abort
1:  tbz     x24, #5, 1f
    bl      g_foreign
1:  tbz     x24, #6, 1f
    bl      g_bad_hvc
1:  tbz     x24, #7, 1f
    bl      g_balloon
1:  tbz     x24, #8, 1f
    bl      g_nested
1:  ldr     x0, ={done}
    mov     x1, #0
    hvc     #0
    /* DONE does not return; if it did, wait (a trapped WFI) forever. */
2:  wfi
    b       2b

g_info:
    stp     x29, x30, [sp, #-16]!
    mrs     x10, CurrentEL
    lsr     x10, x10, #2
    cmp     x10, #1
    cset    x9, ne
    report  {c_el}, x9, x10
    mrs     x10, mpidr_el1
    mov     x9, #0
    report  {c_cpu}, x9, x10
    ldp     x29, x30, [sp], #16
    ret

g_spin:
    stp     x29, x30, [sp, #-16]!
    isb
    mrs     x10, cntvct_el0
    mov     x9, #0
    report  {c_spin_start}, x9, x10
    mrs     x11, cntfrq_el0
    mov     x12, #5
    udiv    x11, x11, x12
    isb
    mrs     x10, cntvct_el0
    add     x11, x10, x11
1:  isb
    mrs     x10, cntvct_el0
    cmp     x10, x11
    b.lo    1b
    mov     x9, #0
    report  {c_spin_end}, x9, x10
    ldp     x29, x30, [sp], #16
    ret

    /* fill: x9 address, x10 words, x11 first value (then +1 per word). */
g_fill:
1:  str     x11, [x9], #8
    add     x11, x11, #1
    subs    x10, x10, #1
    b.ne    1b
    ret

    /* cmp_words: x9, x10 addresses, x11 words -> x0 mismatching words. */
g_cmp_words:
    mov     x0, #0
1:  ldr     x12, [x9], #8
    ldr     x13, [x10], #8
    cmp     x12, x13
    cinc    x0, x0, ne
    subs    x11, x11, #1
    b.ne    1b
    ret

    /* edu_dma: x9 src, x10 dst, x11 count, x12 command -> x0 = 0, or 1 if
       RUN did not clear within the bound. Uses x13, x14. */
g_edu_dma:
    dsb     sy
    str     x9, [x21, #0x80]
    str     x10, [x21, #0x88]
    str     x11, [x21, #0x90]
    str     x12, [x21, #0x98]
    movz    x13, #0x1000, lsl #16
1:  ldr     x14, [x21, #0x98]
    tbz     x14, #0, 2f
    subs    x13, x13, #1
    b.ne    1b
    mov     x0, #1
    ret
2:  dsb     sy
    mov     x0, #0
    ret

    /* dma_faults_at: DMA 64 bytes device -> x16, then DMA_FAULTS; x15 +=
       failures (timeout, no fault, first fault not at x16 in the bits of
       mask x17, or not a translation fault). */
g_dma_faults_at:
    stp     x29, x30, [sp, #-16]!
    ldr     x9, ={edu_buf}
    mov     x10, x16
    mov     x11, #64
    mov     x12, #3
    bl      g_edu_dma
    add     x15, x15, x0
    hcall   {dma_faults}
    cmp     x0, #0
    cinc    x15, x15, eq
    and     x3, x1, x17
    and     x4, x16, x17
    cmp     x3, x4
    cinc    x15, x15, ne
    cmp     x2, #0x10
    cinc    x15, x15, ne
    ldp     x29, x30, [sp], #16
    ret

    /* aborted_at: LAST_ABORT must name IPA x16 with WnR = x17; x15 +=
       failures; x18 = the ESR. */
g_aborted_at:
    hcall   {last_abort}
    expect_x0 xzr
    mov     x18, x2
    cmp     x1, x16
    cinc    x15, x15, ne
    ubfx    x2, x2, #6, #1
    cmp     x2, x17
    cinc    x15, x15, ne
    ret

    /* roundtrip: x9 src IPA, x10 dst IPA (256 bytes each): fill src with
       the pattern (x11 first value), DMA src -> device -> dst, compare ->
       x0 mismatches + timeouts. Uses x9..x18. */
g_roundtrip:
    stp     x29, x30, [sp, #-16]!
    mov     x17, x9
    mov     x18, x10
    mov     x10, #32
    bl      g_fill
    mov     x9, x17
    ldr     x10, ={edu_buf}
    mov     x11, #256
    mov     x12, #1
    bl      g_edu_dma
    mov     x16, x0
    ldr     x9, ={edu_buf}
    mov     x10, x18
    mov     x11, #256
    mov     x12, #3
    bl      g_edu_dma
    add     x16, x16, x0
    mov     x9, x17
    mov     x10, x18
    mov     x11, #32
    bl      g_cmp_words
    add     x0, x0, x16
    ldp     x29, x30, [sp], #16
    ret

g_dma:
    stp     x29, x30, [sp, #-16]!
    lsl     x12, x28, #{device_shift}
    add     x9, x19, #{src}
    add     x9, x9, x12
    add     x10, x19, #{dst}
    add     x10, x10, x12
    add     x11, x23, x28, lsl #32
    bl      g_roundtrip
    mov     x10, x0
    cmp     x0, #0
    cset    x9, ne
    report  {c_dma}, x9, x10
    ldp     x29, x30, [sp], #16
    ret

g_outside:
    stp     x29, x30, [sp, #-16]!
    mov     x15, #0
    add     x16, x25, x28, lsl #12
    mov     x17, #-1
    bl      g_dma_faults_at
    status_from_x15
    add     x16, x25, x28, lsl #12
    report  {c_dma_outside}, x9, x16
    ldp     x29, x30, [sp], #16
    ret

g_abort:
    stp     x29, x30, [sp, #-16]!
    /* A load: the hypervisor writes POISON into x9 and skips it. */
    mov     x15, #0
    mov     x9, #0
    ldr     x9, [x27]
    ldr     x14, ={poison}
    cmp     x9, x14
    cinc    x15, x15, ne
    mov     x16, x27
    mov     x17, #0
    bl      g_aborted_at
    status_from_x15
    report  {c_load}, x9, x27
    /* A store. */
    mov     x15, #0
    str     x23, [x27, #8]
    add     x16, x27, #8
    mov     x17, #1
    bl      g_aborted_at
    status_from_x15
    add     x10, x27, #8
    report  {c_store}, x9, x10
    /* A store to its own (read-only) code page. */
    mov     x15, #0
    adr     x16, guest_image_start
    ldr     x12, [x16]
    str     xzr, [x16]
    ldr     x14, [x16]
    cmp     x14, x12
    cinc    x15, x15, ne
    mov     x17, #1
    bl      g_aborted_at
    /* ...the fault status says permission (DFSC 0b0011xx), and it was the
       only abort. */
    ubfx    x13, x18, #2, #4
    cmp     x13, #3
    cinc    x15, x15, ne
    hcall   {last_abort}
    mov     x14, #{nothing}
    expect_x0 x14
    status_from_x15
    report  {c_code}, x9, x16
    ldp     x29, x30, [sp], #16
    ret

g_foreign:
    stp     x29, x30, [sp, #-16]!
    mov     x15, #0
    mov     x9, #0
    ldr     x9, [x22]
    ldr     x14, ={poison}
    cmp     x9, x14
    cinc    x15, x15, ne
    mov     x16, x22
    mov     x17, #0
    bl      g_aborted_at
    str     x23, [x22]
    mov     x16, x22
    mov     x17, #1
    bl      g_aborted_at
    status_from_x15
    report  {c_foreign_cpu}, x9, x22
    /* An edu without dma_mask emits only 28 address bits: the fault is at
       the target's low 28 bits then. */
    mov     x15, #0
    mov     x16, x22
    mov     x17, #0x0fffffff
    bl      g_dma_faults_at
    status_from_x15
    report  {c_foreign_dma}, x9, x22
    ldp     x29, x30, [sp], #16
    ret

    /* release: x16 IPA, x17 length -> x0. */
g_release:
    mov     x1, x16
    mov     x2, x17
    ldr     x0, ={release}
    hvc     #0
    ret

g_bad_hvc:
    stp     x29, x30, [sp, #-16]!
    /* Unknown function IDs, a non-zero immediate, PSCI over HVC, SMC. */
    mov     x15, #0
    mov     x14, #-1
    ldr     x0, ={bad_fid}
    hvc     #0
    expect_x0 x14
    ldr     x0, ={report}
    mov     x1, #{c_bad_unknown}
    mov     x2, #1
    mov     x3, #0
    hvc     #1
    expect_x0 x14
    ldr     x0, ={psci_version}
    hvc     #0
    expect_x0 x14
    ldr     x0, ={psci_version}
    smc     #0
    expect_x0 x14
    status_from_x15
    report  {c_bad_unknown}, x9, x15
    /* Bad IPAs: its code, an unmapped IPA, unaligned, the BAR, foreign. */
    mov     x15, #0
    mov     x14, #-2
    mov     x17, #4096
    adr     x16, guest_image_start
    bl      g_release
    expect_x0 x14
    mov     x16, x25
    bl      g_release
    expect_x0 x14
    add     x16, x26, #8
    bl      g_release
    expect_x0 x14
    mov     x16, x21
    bl      g_release
    expect_x0 x14
    mov     x16, x22
    bl      g_release
    expect_x0 x14
    status_from_x15
    report  {c_bad_ipa}, x9, x15
    /* Bad lengths: 0, half a page, wrapping, past the end of RAM. */
    mov     x15, #0
    mov     x14, #-3
    mov     x16, x26
    mov     x17, #0
    bl      g_release
    expect_x0 x14
    mov     x17, #0x800
    bl      g_release
    expect_x0 x14
    mov     x17, #-4096
    bl      g_release
    expect_x0 x14
    add     x16, x19, x20
    sub     x16, x16, #4096
    mov     x17, #8192
    bl      g_release
    expect_x0 x14
    status_from_x15
    report  {c_bad_length}, x9, x15
    /* Bad REPORT arguments: check 0, check too large, status 7. */
    mov     x15, #0
    mov     x14, #-4
    ldr     x0, ={report}
    mov     x1, #0
    mov     x2, #0
    hvc     #0
    expect_x0 x14
    ldr     x0, ={report}
    mov     x1, #0xffff
    mov     x2, #0
    hvc     #0
    expect_x0 x14
    ldr     x0, ={report}
    mov     x1, #{c_bad_argument}
    mov     x2, #7
    hvc     #0
    expect_x0 x14
    status_from_x15
    report  {c_bad_argument}, x9, x15
    /* Nothing changed: the balloon page is still read-write, no abort. */
    mov     x15, #0
    str     x23, [x26]
    ldr     x9, [x26]
    cmp     x9, x23
    cinc    x15, x15, ne
    str     xzr, [x26]
    hcall   {last_abort}
    mov     x14, #{nothing}
    expect_x0 x14
    status_from_x15
    report  {c_bad_nothing}, x9, x15
    ldp     x29, x30, [sp], #16
    ret

g_balloon:
    stp     x29, x30, [sp, #-16]!
    mov     x16, x26
    mov     x17, #4096
    bl      g_release
    mov     x10, x0
    cmp     x0, #0
    cset    x9, ne
    report  {c_balloon_release}, x9, x10
    /* The page is gone for the CPU... */
    mov     x15, #0
    mov     x9, #0
    ldr     x9, [x26]
    ldr     x14, ={poison}
    cmp     x9, x14
    cinc    x15, x15, ne
    mov     x16, x26
    mov     x17, #0
    bl      g_aborted_at
    status_from_x15
    report  {c_balloon_cpu}, x9, x26
    /* ...and for its device. */
    mov     x15, #0
    mov     x16, x26
    mov     x17, #-1
    bl      g_dma_faults_at
    status_from_x15
    report  {c_balloon_dma}, x9, x26
    /* Its neighbours still work, for both. */
    sub     x9, x26, #4096
    add     x10, x26, #4096
    add     x11, x23, #0x100
    bl      g_roundtrip
    mov     x15, x0
    hcall   {last_abort}
    mov     x14, #{nothing}
    expect_x0 x14
    status_from_x15
    report  {c_balloon_neighbours}, x9, x15
    ldp     x29, x30, [sp], #16
    ret

"#,
    nested::nested_phase_asm!(),
    r#"
    .ltorg
    .balign 16
    .global guest_image_end
guest_image_end:
    "#,
    report = const hvc::REPORT,
    done = const hvc::DONE,
    dma_faults = const hvc::DMA_FAULTS,
    last_abort = const hvc::LAST_ABORT,
    release = const hvc::RELEASE,
    nothing = const -5i64,
    bad_fid = const 0xC600_00FFu64,
    psci_version = const 0x8400_0000u64,
    poison = const hvc::POISON,
    edu_buf = const EDU_BUF,
    src = const offsets::SRC,
    per_device = const phase::DMA | phase::DMA_OUTSIDE,
    bar_stride = const BAR_STRIDE,
    device_shift = const DEVICE_BYTES.trailing_zeros(),
    dst = const offsets::DST,
    c_el = const check::EL,
    c_cpu = const check::CPU,
    c_spin_start = const check::SPIN_START,
    c_spin_end = const check::SPIN_END,
    c_dma = const check::DMA_ROUNDTRIP,
    c_dma_outside = const check::DMA_OUTSIDE,
    c_load = const check::CPU_LOAD_ABORT,
    c_store = const check::CPU_STORE_ABORT,
    c_code = const check::CODE_READONLY,
    c_foreign_cpu = const check::FOREIGN_CPU,
    c_foreign_dma = const check::FOREIGN_DMA,
    c_bad_unknown = const check::BAD_UNKNOWN,
    c_bad_ipa = const check::BAD_IPA,
    c_bad_length = const check::BAD_LENGTH,
    c_bad_argument = const check::BAD_ARGUMENT,
    c_bad_nothing = const check::BAD_NOTHING_CHANGED,
    c_balloon_release = const check::BALLOON_RELEASE,
    c_balloon_cpu = const check::BALLOON_CPU,
    c_balloon_dma = const check::BALLOON_DMA,
    c_balloon_neighbours = const check::BALLOON_NEIGHBOURS,
    pv_info = const hvc::PV_INFO,
    pv_set_cd = const hvc::PV_SET_CD,
    pv_inv_asid = const hvc::PV_INV_ASID,
    pv_inv_va = const hvc::PV_INV_VA,
    pv_detach = const hvc::PV_DETACH,
    e_bad_ipa = const -2i64,
    e_bad_cd = const -7i64,
    e_bad_asid = const -8i64,
    e_bad_stream = const -9i64,
    n_tables = const nested::TABLES,
    pte_rw = const nested::PTE_RW,
    pte_ro = const nested::PTE_RO,
    cd0 = const nested::CD0,
    cd0_bad = const nested::CD0_BAD_IPS,
    mair = const nested::MAIR,
    asid = const nested::ASID,
    va_rw = const nested::VA_RW,
    va_ro = const nested::VA_RO,
    va_walk = const nested::VA_WALK,
    c_n_info = const check::NESTED_INFO,
    c_n_bad = const check::NESTED_BAD,
    c_n_set_cd = const check::NESTED_SET_CD,
    c_n_dma = const check::NESTED_DMA,
    c_n_perm = const check::NESTED_PERM,
    c_n_walk = const check::NESTED_WALK,
    c_n_unmap = const check::NESTED_UNMAP,
    c_n_detach = const check::NESTED_DETACH,
);

const _: () = assert!(hvc::BAD_IPA == -2i64 as u64 && hvc::BAD_CD == -7i64 as u64);
const _: () = assert!(hvc::BAD_ASID == -8i64 as u64 && hvc::BAD_STREAM == -9i64 as u64);
const _: () =
    assert!(nested::L2 == nested::TABLES + 0x1000 && nested::RW_PAGE == nested::TABLES + 0x4000);

unsafe extern "C" {
    static guest_image_start: u8;
    static guest_image_end: u8;
}

/// The guest program's bytes (to be copied into a VM's code page).
pub fn code() -> &'static [u8] {
    let start = &raw const guest_image_start;
    let end = &raw const guest_image_end;
    // SAFETY: both symbols delimit the `.text.guest` bytes above, which are
    // part of the image's read-only text for its whole life.
    unsafe { core::slice::from_raw_parts(start, end as usize - start as usize) }
}
