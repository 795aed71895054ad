//! The STE ILLEGAL rules (5.2, SteIllegal()).

use super::*;

// ---------------------------------------------------------------------------
// STE (5.2; 5.2.2 Validity of STE, SteIllegal()).
// ---------------------------------------------------------------------------

/// The first ILLEGAL (or RES0/alignment-broken) condition of a Non-secure
/// STE, or `None`. `V == 0` and `Config == 0b0xx` are not ILLEGAL (the
/// stream is disabled / aborts by design).
#[rustfmt::skip]
pub(crate) fn ste_illegal(w: &[u64; 8], idr: &Idr) -> Option<&'static str> {
    let (d0, d1, d2, d3) = (w[0], w[1], w[2], w[3]);
    if bits(d0, 0, 1) == 0 {
        return None; // 5.2 V: invalid, not ILLEGAL
    }
    let config = bits(d0, 1, 3);
    if config & 0b100 == 0 {
        return None; // 5.2 Config 0b0xx: abort, every other field IGNORED
    }
    let s1 = config & 1 == 1;
    let s2 = config & 0b10 != 0;
    let strw = bits(d1, 30, 2);
    let s2s = bits(d2, 57, 1) == 1;
    let eats = bits(d1, 28, 2);
    if s1 && !idr.s1p { return Some("Config: stage 1 without IDR0.S1P (5.2 Config)"); }
    if s2 && !idr.s2p { return Some("Config: stage 2 without IDR0.S2P (5.2 Config)"); }
    if !idr.ats && config != 0b100 && eats != 0 { return Some("EATS != 0 without IDR0.ATS (5.2 EATS, RES0)"); }
    if idr.ats && config != 0b100 && eats == 0b10 && (config != 0b111 || s2s || idr.ns1ats) { return Some("EATS split-stage without nesting / with S2S / NS1ATS (5.2 EATS)"); }
    if idr.ats && config != 0b100 && eats == 0b01 && s2s && s2 { return Some("EATS full ATS with S2S (5.2 EATS)"); }
    if idr.ats && config != 0b100 && eats == 0b11 && idr.dpt && strw != 0 && config == 0b101 { return Some("EATS DPT with StreamWorld != EL1 (5.2 EATS)"); }
    let strw_used = idr.s1p && idr.hyp && config == 0b101; // 5.2 STRW: IGNORED unless stage-1 only
    if strw_used && strw & 1 == 1 { return Some("STRW 0bx1 reserved (5.2 STRW)"); }
    if config == 0b101 && !idr.hyp && strw != 0 { return Some("STRW != 0 without IDR0.Hyp (5.2 STRW, RES0)"); }
    if s1 {
        let cdmax = bits(d0, 59, 5) as u32;
        let fmt = bits(d0, 4, 2);
        let ptr = d0 & 0x00FF_FFFF_FFFF_FFC0;
        if bits(d1, 27, 1) == 1 && idr.stall_model != 0 { return Some("S1STALLD = 1 with STALL_MODEL != 0b00 (5.2 S1STALLD)"); }
        if idr.ssidsize != 0 && cdmax > idr.ssidsize { return Some("S1CDMax > IDR1.SSIDSIZE (5.2 S1CDMax)"); }
        if idr.ssidsize != 0 && cdmax != 0 && !idr.cd2l && (fmt == 1 || fmt == 2) { return Some("S1Fmt 2-level without IDR0.CD2L (5.2 S1Fmt)"); }
        if ptr >> (if s2 { idr.ias } else { idr.oas }) != 0 {
            return Some("S1ContextPtr beyond IAS/OAS (5.2 S1ContextPtr)");
        }
        if idr.ssidsize != 0 && cdmax != 0 && (fmt == 0 || fmt == 3) && ptr & ((1u64 << (cdmax + 6)) - 1) != 0 { return Some("S1ContextPtr[S1CDMax+5:6] not zero for a linear table (5.2 S1Fmt)"); }
        if idr.ssidsize != 0 && (fmt == 1 || fmt == 2) && cdmax > 4 + 2 * fmt as u32 && ptr & ((1u64 << (cdmax - (4 + 2 * fmt as u32) + 3).max(6)) - 1) != 0 { return Some("S1ContextPtr not aligned to its L1CD table (5.2 S1Fmt)"); }
        if bits(d0, 56, 3) != 0 { return Some("STE bits [58:56] RES0 (5.2)"); }
    }
    let vmid_used = idr.s2p && (s2 || (config == 0b101 && !(strw_used && strw != 0))); // IgnoreSTES2VMID
    if vmid_used && !idr.vmid16 && bits(d2, 8, 8) != 0 { return Some("S2VMID[15:8] != 0 without IDR0.VMID16 (5.2 S2VMID)"); }
    if !s2 {
        return None;
    }
    let aa64 = bits(d2, 51, 1) == 1;
    let aa32 = !aa64 && !idr.d128;
    let (ha, hd) = (bits(d2, 56, 1) == 1, bits(d2, 55, 1) == 1);
    let s2ds = bits(d3, 3, 1) == 1; // S2DS, bit [195]
    let sl0_2 = bits(d3, 2, 1); // S2SL0_2, bit [194]
    if s2s && idr.stall_model == 0b01 { return Some("S2S = 1 with STALL_MODEL = 0b01 (5.2 S2S)"); }
    if !s2s && idr.stall_model == 0b10 { return Some("S2S = 0 with STALL_MODEL = 0b10 (5.2 S2S)"); }
    if aa32 && idr.ttf & 1 == 0 { return Some("S2AA64 = 0 without AArch32 tables (5.2 S2AA64)"); }
    if aa64 && idr.ttf & 2 == 0 { return Some("S2AA64 = 1 without AArch64 tables (5.2 S2AA64)"); }
    if (ha || hd) && (aa32 || idr.httu == 0) { return Some("S2HA/S2HD without HTTU (5.2 S2HA/S2HD)"); }
    if hd && idr.httu == 0b01 { return Some("S2HD with HTTU = access flag only (5.2 S2HD)"); }
    if bits(d2, 59, 1) == 1 && !ha && idr.httu == 0b11 { return Some("S2HAFT without S2HA (5.2 S2HAFT)"); }
    if idr.ttendian == 0b10 && bits(d2, 52, 1) == 1 { return Some("S2ENDI big-endian on a little-endian-only SMMU (5.2 S2ENDI)"); }
    if idr.ttendian == 0b11 && bits(d2, 52, 1) == 0 { return Some("S2ENDI little-endian on a big-endian-only SMMU (5.2 S2ENDI)"); }
    if aa32 {
        return None; // VMSAv8-32 tables: the driver never builds them
    }
    if !aa64 { return Some("S2AA64 = 0 selects VMSAv9-128 (D128): not modelled"); }
    let Some(g) = tg0_bits(bits(d2, 46, 2)) else { return Some("S2TG reserved (5.2 S2TG)") };
    if !idr.granule_ok(g) { return Some("S2TG granule not in IDR5 (5.2 S2TG)"); }
    if s2ds && !idr.ds { return Some("S2DS = 1 without IDR5.DS (5.2 S2DS, RES0)"); }
    let t0sz = bits(d2, 32, 6) as u32;
    let max = if idr.stt {
        if g == 16 { 47 } else { 48 }
    } else {
        39
    };
    let min = if idr.v30 {
        64 - idr.ias
    } else if g == 16 || s2ds {
        12.max(64 - idr.ias)
    } else {
        16.max(64 - idr.ias)
    };
    if t0sz > max { return Some("S2T0SZ above its maximum (5.2 S2T0SZ)"); }
    if t0sz < min { return Some("S2T0SZ below MAX(16 or 12, 64 - IAS) (5.2 S2T0SZ)"); }
    if sl0_2 != 0 { return Some("S2SL0_2 without S2DS/4K (5.2 S2SL0_2)"); }
    let start = match s2_start_level(g, bits(d2, 38, 2), idr, idr.stt) {
        Ok(l) => l,
        Err(e) => return Some(e),
    };
    let ia = 64 - t0sz;
    let stride = g - 3;
    let sl_min = (3 - start) * stride + g + 1; // A-profile AArch64.S2InconsistentSL
    if ia < sl_min {
        return Some(
            "S2T0SZ too small an IPA for the S2SL0 start level (5.2 S2SL0, S2InconsistentSL)",
        );
    }
    if ia > sl_min + (stride - 1) + 4 {
        return Some(
            "S2T0SZ needs more than 16 concatenated start tables (5.2 S2SL0, S2InconsistentSL)",
        );
    }
    if ps_bits(bits(d2, 48, 3)) > idr.oas || (idr.v30 && bits(d2, 48, 3) > 5) { return Some("S2PS above the OAS / reserved: capped, software must not rely on it (5.2 S2PS)"); }
    let eff_ps = ps_bits(bits(d2, 48, 3)).min(idr.oas);
    let ttb = d3 & 0x000F_FFFF_FFFF_FFF0;
    if bits(d3, 52, 12) != 0 { return Some("S2TTB bits [255:244] RES0 (5.2 S2TTB)"); }
    if ttb >> eff_ps != 0 { return Some("S2TTB beyond the effective S2PS (5.2 S2TTB)"); }
    if g != 16 && !s2ds && ttb >> 48 != 0 { return Some("S2TTB beyond 48 bits with 4K/16K (5.2 S2TTB)"); }
    let align = s2_root_align(g, start, ia).max(if eff_ps == 52 { 6 } else { 0 });
    if ttb & ((1u64 << align) - 1) != 0 { return Some("S2TTB below the start table's alignment, treated as zero (5.2 S2TTB)"); }
    if bits(d2, 16, 16) != 0 { return Some("STE bits [159:144] IMPLEMENTATION DEFINED: must be 0 (5.2)"); }
    None
}
