//! The guest program's nested phase ([`super::phase::NESTED`]): its
//! layout (stage-1 tables in 4K granule, 39-bit VA, walks from level 1; its
//! CD; its data pages, at RAM offsets; the VAs its device uses, each
//! mapping a guest-physical page at another address) and its assembly,
//! which `guest.rs` splices into the one guest program
//! ([`nested_phase_asm`], with the same `const` operands).
//!
//! The phase (device 0): PV_INFO; zero and build the tables and a CD (and
//! a CD with IPS = 6); five hostile PV calls, each refused; PV_SET_CD; the
//! device reads one VA and writes another (the bytes compared at the IPAs);
//! a write to a read-only VA (F_PERMISSION); DMA to a VA whose level-3
//! table is outside its RAM (stage 2 stops the walk); unmap + PV_INV_VA,
//! then DMA faults and the page stays zero; PV_DETACH, then a round trip
//! through IPAs.

/// RAM offset of the level-1 table (then level 2, level 3, the CD page,
/// each 4 KiB).
pub const TABLES: u64 = 0x1_0000;
/// RAM offset of the level-2 table.
pub const L2: u64 = TABLES + 0x1000;
/// RAM offset of the level-3 table.
pub const L3: u64 = TABLES + 0x2000;
/// RAM offset of its CD.
pub const CD: u64 = TABLES + 0x3000;
/// RAM offset of a CD with IPS = 6 (refused).
pub const BAD_CD: u64 = CD + 0x40;
/// RAM offset of the page [`VA_RW`] maps (read-write).
pub const RW_PAGE: u64 = TABLES + 0x4000;
/// RAM offset of the page [`VA_RO`] maps (read-only).
pub const RO_PAGE: u64 = TABLES + 0x6000;
/// RAM offsets of the round trip after DETACH (IPAs again).
pub const AFTER_SRC: u64 = TABLES + 0x7000;
/// Destination of that round trip.
pub const AFTER_DST: u64 = TABLES + 0x8000;
/// End of what the phase writes.
pub const END: u64 = TABLES + 0x9000;
/// A VA mapped read-write (level-3 entry 0 of level-2 entry 48).
pub const VA_RW: u64 = 0x0600_0000;
/// A VA mapped read-only (level-3 entry 2).
pub const VA_RO: u64 = 0x0600_2000;
/// A VA whose level-3 table is at an IPA outside its RAM (level-2
/// entry 49 -> [`super::UNMAPPED_DMA_IPA`]).
pub const VA_WALK: u64 = 0x0620_0000;
/// Its ASID.
pub const ASID: u16 = 0x5A;
/// Page descriptor attributes: valid page, AttrIndx 0, AP = 01
/// (read-write, EL0 accessible: PCIe DMA is unprivileged), SH inner,
/// AF, nG.
pub const PTE_RW: u64 = 0b11 | 0b01 << 6 | 0b11 << 8 | 1 << 10 | 1 << 11;
/// As [`PTE_RW`] with AP = 11 (read-only).
pub const PTE_RO: u64 = PTE_RW | 0b10 << 6;
/// CD dword 0: T0SZ 25, TG0 4K, walks WB inner/outer ISH, EPD1, V,
/// IPS 40 bits, AA64, R, A, ASID.
pub const CD0: u64 = 25
    | 1 << 8
    | 1 << 10
    | 3 << 12
    | 1 << 30
    | 1 << 31
    | 2 << 32
    | 1 << 41
    | 1 << 45
    | 1 << 46
    | (ASID as u64) << 48;
/// [`CD0`] with IPS = 6 (52 bits: refused, it crashes QEMU's model).
pub const CD0_BAD_IPS: u64 = CD0 | 6 << 32;
/// MAIR: attribute 0 Normal write-back.
pub const MAIR: u64 = 0xFF;

/// The nested phase's assembly (`g_nested`), a template fragment of the
/// guest program's `global_asm!` in `guest.rs` (it uses that block's
/// macros, helper functions and operands).
macro_rules! nested_phase_asm {
    () => {
        r#"
    /* The nested phase (device 0): x5 = its tables, x6 = its StreamID. */
g_nested:
    stp     x29, x30, [sp, #-16]!
    hcall   {pv_info}
    mov     x6, x3
    mov     x10, x0
    cmp     x0, #0
    cset    x9, ne
    report  {c_n_info}, x9, x10
    cbnz    x10, 9f
    /* Zero the three tables and the CD page. */
    ldr     x5, ={n_tables}
    add     x5, x19, x5
    mov     x9, x5
    mov     x10, #0x400
1:  stp     xzr, xzr, [x9], #16
    subs    x10, x10, #1
    b.ne    1b
    /* L1[0] -> L2; L2[48] -> L3; L2[49] -> a table outside its RAM. */
    add     x8, x5, #1, lsl #12
    orr     x8, x8, #3
    str     x8, [x5]
    add     x9, x5, #1, lsl #12
    add     x8, x5, #2, lsl #12
    orr     x8, x8, #3
    str     x8, [x9, #0x180]
    orr     x8, x25, #3
    str     x8, [x9, #0x188]
    /* L3[0]: VA_RW -> RW page; L3[2]: VA_RO -> RO page. */
    add     x10, x5, #2, lsl #12
    add     x8, x5, #4, lsl #12
    ldr     x12, ={pte_rw}
    orr     x8, x8, x12
    str     x8, [x10]
    add     x8, x5, #6, lsl #12
    ldr     x12, ={pte_ro}
    orr     x8, x8, x12
    str     x8, [x10, #16]
    /* Its CD (TTB0 = L1), and a bad one (IPS 6). */
    add     x11, x5, #3, lsl #12
    ldr     x8, ={cd0}
    str     x8, [x11]
    str     x5, [x11, #8]
    mov     x8, #{mair}
    str     x8, [x11, #24]
    ldr     x8, ={cd0_bad}
    str     x8, [x11, #0x40]
    str     x5, [x11, #0x48]
    dsb     sy
    /* Hostile calls first: each refused, nothing changes. */
    mov     x15, #0
    mov     x1, x6
    mov     x2, x25
    hcall   {pv_set_cd}
    mov     x14, #{e_bad_ipa}
    expect_x0 x14
    mov     x1, x6
    add     x2, x11, #0x40
    hcall   {pv_set_cd}
    mov     x14, #{e_bad_cd}
    expect_x0 x14
    add     x1, x6, #1
    mov     x2, x11
    hcall   {pv_set_cd}
    mov     x14, #{e_bad_stream}
    expect_x0 x14
    mov     x1, #{asid}
    hcall   {pv_inv_asid}
    mov     x14, #{e_bad_asid}
    expect_x0 x14
    mov     x1, x6
    hcall   {pv_detach}
    mov     x14, #{e_bad_stream}
    expect_x0 x14
    status_from_x15
    report  {c_n_bad}, x9, x15
    /* Its own CD. */
    mov     x1, x6
    add     x2, x5, #3, lsl #12
    hcall   {pv_set_cd}
    mov     x10, x0
    cmp     x0, #0
    cset    x9, ne
    report  {c_n_set_cd}, x9, x10
    cbnz    x10, 9f
    /* DMA: the device reads VA_RO, writes VA_RW; the RW page must hold
       the RO page's pattern. */
    add     x9, x5, #6, lsl #12
    mov     x10, #32
    add     x11, x23, #0x300
    bl      g_fill
    ldr     x9, ={va_ro}
    ldr     x10, ={edu_buf}
    mov     x11, #256
    mov     x12, #1
    bl      g_edu_dma
    mov     x16, x0
    ldr     x9, ={edu_buf}
    ldr     x10, ={va_rw}
    mov     x11, #256
    mov     x12, #3
    bl      g_edu_dma
    add     x16, x16, x0
    add     x9, x5, #6, lsl #12
    add     x10, x5, #4, lsl #12
    mov     x11, #32
    bl      g_cmp_words
    add     x15, x0, x16
    hcall   {dma_faults}
    add     x15, x15, x0
    status_from_x15
    ldr     x10, ={va_rw}
    report  {c_n_dma}, x9, x10
    /* A write to the read-only VA: F_PERMISSION at that VA. */
    mov     x15, #0
    ldr     x9, ={edu_buf}
    ldr     x10, ={va_ro}
    mov     x11, #64
    mov     x12, #3
    bl      g_edu_dma
    add     x15, x15, x0
    hcall   {dma_faults}
    cmp     x0, #0
    cinc    x15, x15, eq
    ldr     x10, ={va_ro}
    cmp     x1, x10
    cinc    x15, x15, ne
    cmp     x2, #0x13
    cinc    x15, x15, ne
    status_from_x15
    report  {c_n_perm}, x9, x10
    /* A VA whose level-3 table is outside its RAM: stage 2 stops the
       walk (a translation fault at that VA). */
    mov     x15, #0
    ldr     x16, ={va_walk}
    mov     x17, #-1
    bl      g_dma_faults_at
    status_from_x15
    ldr     x10, ={va_walk}
    report  {c_n_walk}, x9, x10
    /* Unmap VA_RW, PV_INV_VA; then DMA to it faults and the page stays
       zero. */
    mov     x15, #0
    add     x10, x5, #2, lsl #12
    str     xzr, [x10]
    dsb     sy
    mov     x1, #{asid}
    ldr     x2, ={va_rw}
    mov     x3, #4096
    hcall   {pv_inv_va}
    expect_x0 xzr
    add     x9, x5, #4, lsl #12
    mov     x10, #16
1:  stp     xzr, xzr, [x9], #16
    subs    x10, x10, #1
    b.ne    1b
    dsb     sy
    ldr     x16, ={va_rw}
    mov     x17, #-1
    bl      g_dma_faults_at
    add     x9, x5, #4, lsl #12
    mov     x10, #32
    mov     x12, #0
1:  ldr     x13, [x9], #8
    orr     x12, x12, x13
    subs    x10, x10, #1
    b.ne    1b
    cmp     x12, #0
    cinc    x15, x15, ne
    status_from_x15
    ldr     x10, ={va_rw}
    report  {c_n_unmap}, x9, x10
    /* DETACH: back to its stage 2, DMA through IPAs again. */
    mov     x15, #0
    mov     x1, x6
    hcall   {pv_detach}
    expect_x0 xzr
    add     x9, x5, #7, lsl #12
    add     x10, x5, #8, lsl #12
    add     x11, x23, #0x400
    bl      g_roundtrip
    add     x15, x15, x0
    status_from_x15
    report  {c_n_detach}, x9, x15
9:  ldp     x29, x30, [sp], #16
    ret
"#
    };
}
pub(super) use nested_phase_asm;
