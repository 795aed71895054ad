//! The CD ILLEGAL rules (5.4, CdIllegal()).

use super::*;

// ---------------------------------------------------------------------------
// CD (5.4; CdIllegal()).
// ---------------------------------------------------------------------------

/// The first ILLEGAL condition of a valid CD reached from Non-secure STE
/// `ste`, with SMMU_CR2.E2H = `e2h`. A CD with V == 0 is ILLEGAL only when
/// a transaction uses it; the callers check that the CDs a stream uses
/// are valid.
#[rustfmt::skip]
pub(crate) fn cd_illegal(
    cd: &[u64; 8],
    ste: &[u64; 8],
    e2h: bool,
    idr: &Idr,
) -> Option<&'static str> {
    let d0 = cd[0];
    if bits(d0, 31, 1) == 0 {
        return None;
    }
    let config = bits(ste[0], 1, 3);
    let strw = if idr.s1p && idr.hyp && config == 0b101 {
        bits(ste[1], 30, 2)
    } else {
        0
    };
    let el2 = strw == 0b10 && !e2h; // StreamWorld NS-EL2 (no ASID, no TTB1)
    let aa64 = bits(d0, 41, 1) == 1;
    let aa32 = !aa64 && !idr.d128;
    let epd0 = bits(d0, 14, 1) == 1;
    let epd1 = bits(d0, 30, 1) == 1 || el2; // EffectiveCDEPD1
    let s = bits(d0, 44, 1) == 1;
    if bits(ste[1], 27, 1) == 1 && s { return Some("CD.S = 1 under STE.S1STALLD = 1 (5.4 S)"); }
    if idr.term_model && bits(d0, 46, 1) == 0 { return Some("CD.A = 0 with IDR0.TERM_MODEL = 1 (5.4 A)"); }
    if idr.stall_model == 0b01 && s { return Some("CD.S = 1 with STALL_MODEL = 0b01 (5.4 S)"); }
    if idr.stall_model == 0b10 && !s { return Some("CD.S = 0 with STALL_MODEL = 0b10 (5.4 S)"); }
    let endi = bits(d0, 15, 1);
    if (!epd0 || !epd1) && ((idr.ttendian == 0b10 && endi == 1) || (idr.ttendian == 0b11 && endi == 0)) { return Some("CD.ENDI selects an unimplemented endianness (5.4 ENDI)"); }
    if aa32 && (idr.ttf & 1 == 0 || (strw == 0b10 && e2h)) { return Some("CD.AA64 = 0 without AArch32 tables / under EL2-E2H (5.4 AA64)"); }
    if aa64 && (idr.ttf & 2 == 0 || (config & 0b110 == 0b110 && bits(ste[2], 51, 1) == 0 && !idr.d128)) { return Some("CD.AA64 = 1 without AArch64 tables / under S2AA64 = 0 (5.4 AA64)"); }
    let (ha, hd) = (bits(d0, 43, 1) == 1, bits(d0, 42, 1) == 1);
    if !aa32 && (ha || hd) && idr.httu == 0 { return Some("CD.HA/HD without HTTU (5.4 HA/HD)"); }
    if !aa32 && hd && idr.httu == 0b01 { return Some("CD.HD with HTTU = access flag only (5.4 HD)"); }
    if !el2 && !idr.asid16 && bits(d0, 56, 8) != 0 { return Some("CD.ASID[15:8] != 0 without IDR0.ASID16 (5.4 ASID)"); }
    if aa32 {
        return None;
    }
    if !aa64 { return Some("CD.AA64 = 0 selects VMSAv9-128 (D128): not modelled"); }
    let cd_ds = bits(cd[4], 10, 1) == 1 && idr.ds; // CD.DS: not used by the driver
    if ps_bits(bits(d0, 32, 3)) > idr.oas || (idr.v30 && bits(d0, 32, 3) > 5) { return Some("CD.IPS above the OAS / reserved: capped, software must not rely on it (5.4 IPS)"); }
    let ips = ps_bits(bits(d0, 32, 3)).min(idr.oas);
    let txsz_bad = |txsz: u32, g: u32| {
        let max = if idr.stt {
            if g == 16 { 47 } else { 48 }
        } else {
            39
        };
        let min = if idr.vax != 0 && (g == 16 || cd_ds) {
            12
        } else {
            16
        };
        txsz < min || txsz > max
    };
    let ttb_bad = |ttb: u64, g: u32| ttb >> ips != 0 || (g != 16 && !cd_ds && ttb >> 48 != 0);
    // Alignment of a stage-1 start table of `ia` input bits (TTBx below it
    // is treated as zero, A-profile TTBR_ELx.BADDR).
    let align = |g: u32, ia: u32| {
        let stride = g - 3;
        let rem = (ia - g) % stride;
        let top = if rem == 0 { stride } else { rem };
        (top + 3).max(if ips == 52 { 6 } else { 3 })
    };
    if !epd0 {
        let Some(g) = tg0_bits(bits(d0, 6, 2)) else { return Some("CD.TG0 reserved (5.4 TG0)") };
        if !idr.granule_ok(g) { return Some("CD.TG0 granule not in IDR5 (5.4 TG0)"); }
        let t0sz = bits(d0, 0, 6) as u32;
        if txsz_bad(t0sz, g) { return Some("CD.T0SZ out of range (5.4 T0SZ)"); }
        let ttb0 = cd[1] & 0x00FF_FFFF_FFFF_FFF0;
        if ttb_bad(ttb0, g) { return Some("CD.TTB0 beyond the effective IPS / 48 bits (5.4 TTB0)"); }
        if ttb0 & ((1u64 << align(g, 64 - t0sz)) - 1) != 0 { return Some("CD.TTB0 below the start table's alignment, treated as zero (5.4 TTB0)"); }
        if bits(cd[1], 56, 8) != 0 { return Some("CD bits [127:120] RES0 (5.4)"); }
    }
    if !epd1 {
        let Some(g) = tg1_bits(bits(d0, 22, 2)) else { return Some("CD.TG1 reserved (5.4 TG1)") };
        if !idr.granule_ok(g) { return Some("CD.TG1 granule not in IDR5 (5.4 TG1)"); }
        if txsz_bad(bits(d0, 16, 6) as u32, g) { return Some("CD.T1SZ out of range (5.4 T1SZ)"); }
        if ttb_bad(cd[2] & 0x00FF_FFFF_FFFF_FFF0, g) { return Some("CD.TTB1 beyond the effective IPS / 48 bits (5.4 TTB1)"); }
    }
    None
}
