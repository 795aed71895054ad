//! An observation model of the SMMUv3 architecture's ILLEGAL rules (IHI
//! 0070: STE 5.2, L1STD 5.1, L1CD 5.3, CD 5.4, commands 4.x), independent
//! of the driver's encoders, and property tests that the driver never
//! leaves an ILLEGAL STE, CD, L1 descriptor or command where the SMMU can
//! see it, on many ID-register variants.
//!
//! QEMU checks few of these rules, so real hardware is the first to report
//! C_BAD_STE / C_BAD_CD / CERROR_ILL for a breach. Each rule is one line
//! naming the spec section and field. Rules a Non-secure driver without
//! ATS, stall, HTTU, PIE, MPAM or 128-bit descriptors cannot reach through
//! a field it sets are still modelled where they constrain a field the
//! driver writes (e.g. EATS, S1STALLD, S2S, HA/HD) so that a change of its
//! constants is caught.

extern crate std;

use std::format;
use std::string::String;
use std::sync::{Arc, Mutex};
use std::vec::Vec;

use proptest::prelude::*;

use crate::fake::FakeHal;
use crate::features::IdRegs;
use crate::hal::{DmaRegion, Hal};
use crate::testing::{ModelBuilder, SmmuModel};
use crate::{Config, DomainOptions, Granule, Perm, Smmu, Stage2Config, StagePolicy};

// ---------------------------------------------------------------------------
// ID registers, decoded by the model itself (6.3.1 IDR0, 6.3.2 IDR1,
// 6.3.4 IDR3, 6.3.6 IDR5, AIDR).
// ---------------------------------------------------------------------------

fn bits(v: u64, shift: u32, n: u32) -> u64 {
    (v >> shift) & ((1u64 << n) - 1)
}

/// The ID-register facts the rules read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Idr {
    s2p: bool,
    s1p: bool,
    ttf: u64,
    httu: u64,
    hyp: bool,
    ats: bool,
    ns1ats: bool,
    asid16: bool,
    vmid16: bool,
    cd2l: bool,
    ttendian: u64,
    stall_model: u64,
    term_model: bool,
    sidsize: u32,
    ssidsize: u32,
    stt: bool,
    ril: bool,
    dpt: bool,
    oas: u32,
    ias: u32,
    gran4k: bool,
    gran16k: bool,
    gran64k: bool,
    ds: bool,
    d128: bool,
    vax: u64,
    v30: bool,
}

impl Idr {
    pub(crate) fn from_regs(r: &IdRegs) -> Idr {
        let (i0, i1, i3, i5) = (
            u64::from(r.idr0),
            u64::from(r.idr1),
            u64::from(r.idr3),
            u64::from(r.idr5),
        );
        let v30 = r.aidr & 0xFF == 0;
        // 6.3.6 IDR5.OAS: 0b110 (52) is reserved in SMMUv3.0, 0b111 reserved
        // (56 bits only with D128): both read as the largest defined size.
        let oas = match bits(i5, 0, 3) {
            0 => 32,
            1 => 36,
            2 => 40,
            3 => 42,
            4 => 44,
            5 => 48,
            _ if v30 => 48,
            _ => 52,
        };
        let ttf = bits(i0, 2, 2);
        // 3.4 Address sizes: IAS = MAX(40, OAS) with AArch32 tables, else OAS.
        let ias = if ttf & 1 == 1 { oas.max(40) } else { oas };
        Idr {
            s2p: bits(i0, 0, 1) == 1,
            s1p: bits(i0, 1, 1) == 1,
            ttf,
            httu: bits(i0, 6, 2),
            hyp: bits(i0, 9, 1) == 1,
            ats: bits(i0, 10, 1) == 1,
            ns1ats: bits(i0, 11, 1) == 1,
            asid16: bits(i0, 12, 1) == 1,
            vmid16: bits(i0, 18, 1) == 1,
            cd2l: bits(i0, 19, 1) == 1,
            ttendian: bits(i0, 21, 2),
            stall_model: bits(i0, 24, 2),
            term_model: bits(i0, 26, 1) == 1,
            sidsize: bits(i1, 0, 6) as u32,
            ssidsize: bits(i1, 6, 5) as u32,
            stt: bits(i3, 9, 1) == 1,
            ril: bits(i3, 10, 1) == 1,
            dpt: bits(i3, 15, 1) == 1,
            oas,
            ias,
            gran4k: bits(i5, 4, 1) == 1,
            gran16k: bits(i5, 5, 1) == 1,
            gran64k: bits(i5, 6, 1) == 1,
            ds: bits(i5, 7, 1) == 1,
            d128: bits(i5, 8, 1) == 1,
            vax: bits(i5, 10, 2),
            v30,
        }
    }

    /// Granule bits of a supported granule, by its size in bits.
    fn granule_ok(&self, gbits: u32) -> bool {
        match gbits {
            12 => self.gran4k,
            14 => self.gran16k,
            16 => self.gran64k,
            _ => false,
        }
    }
}

/// Address-size encodings (STE.S2PS, CD.IPS) in bits; 0b111 is treated as
/// 52 (the cap below brings it to the OAS).
fn ps_bits(enc: u64) -> u32 {
    [32, 36, 40, 42, 44, 48, 52, 52][enc as usize]
}

/// Granule bits of STE.S2TG / CD.TG0 (0 4K, 1 64K, 2 16K, 3 reserved).
fn tg0_bits(tg: u64) -> Option<u32> {
    match tg {
        0 => Some(12),
        1 => Some(16),
        2 => Some(14),
        _ => None,
    }
}

/// Granule bits of CD.TG1 (1 16K, 2 4K, 3 64K, 0 reserved).
fn tg1_bits(tg: u64) -> Option<u32> {
    match tg {
        1 => Some(14),
        2 => Some(12),
        3 => Some(16),
        _ => None,
    }
}

/// Start level of a VMSAv8-64 stage-2 walk from SL0 (no SL2: S2DS = 0),
/// or `None` for an encoding the granule reserves (VTCR_EL2.SL0 rules,
/// the A-profile AArch64.S2InvalidSL; PAMax is the SMMU's OAS).
#[rustfmt::skip]
fn s2_start_level(gbits: u32, sl0: u64, idr: &Idr, stt: bool) -> Result<u32, &'static str> {
    match (gbits, sl0) {
        (12, 0) => Ok(2),
        (12, 1) => Ok(1),
        (12, 2) if idr.oas < 44 => {
            Err("S2SL0: 4K level 0 needs OAS >= 44 (5.2 S2SL0, S2InvalidSL)")
        }
        (12, 2) => Ok(0),
        (12, 3) if stt => Ok(3),
        (12, 3) => Err("S2SL0: 4K level 3 needs small tables (5.2 S2SL0, S2InvalidSL)"),
        (14, 0) | (16, 0) => Ok(3),
        (14, 1) | (16, 1) => Ok(2),
        (14, 2) if idr.oas < 42 => {
            Err("S2SL0: 16K level 1 needs OAS >= 42 (5.2 S2SL0, S2InvalidSL)")
        }
        (16, 2) if idr.oas < 44 => {
            Err("S2SL0: 64K level 1 needs OAS >= 44 (5.2 S2SL0, S2InvalidSL)")
        }
        (14, 2) | (16, 2) => Ok(1),
        (14, 3) => Err("S2SL0: 16K level 0 needs S2DS (5.2 S2SL0, S2InvalidSL)"),
        _ => Err("S2SL0: reserved for 64K (5.2 S2SL0, S2InvalidSL)"),
    }
}

/// log2 bytes of a stage-2 start table with concatenation (the S2TTB
/// alignment, 5.2 S2TTB "required alignment of the translation table").
fn s2_root_align(gbits: u32, start: u32, ia: u32) -> u32 {
    let stride = gbits - 3;
    let shift = gbits + stride * (3 - start);
    (ia - shift + 3).max(3)
}

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

// ---------------------------------------------------------------------------
// L1STD (5.1) and L1CD (5.3).
// ---------------------------------------------------------------------------

/// The first broken rule of a level-1 stream table descriptor of a table
/// with STRTAB_BASE_CFG.SPLIT = `split`. Span == 0 is invalid, not ILLEGAL.
#[rustfmt::skip]
pub(crate) fn l1std_illegal(desc: u64, split: u32, idr: &Idr) -> Option<&'static str> {
    let span = bits(desc, 0, 5) as u32;
    let ptr = desc & 0x00FF_FFFF_FFFF_FFC0;
    if bits(desc, 5, 1) != 0 || bits(desc, 56, 8) != 0 { return Some("L1STD bits [5] / [63:56] RES0 (5.1)"); }
    if span == 0 {
        return None;
    }
    if span >= 12 { return Some("L1STD.Span 12..31 reserved, behaves as 0 (5.1 Span)"); }
    if span > split + 1 { return Some("L1STD.Span out of bounds given the split (5.1.1)"); }
    if ptr >> idr.oas != 0 { return Some("L1STD.L2Ptr beyond OAS (5.1 L2Ptr, RES0)"); }
    if ptr & ((1u64 << (5 + span)) - 1) != 0 { return Some("L1STD.L2Ptr[5+Span-1:0] not zero: table not aligned to its size (5.1 L2Ptr)"); }
    None
}

/// The first broken rule of a level-1 CD descriptor reached through a
/// stream with stage 2 = `s2`.
#[rustfmt::skip]
pub(crate) fn l1cd_illegal(desc: u64, s2: bool, idr: &Idr) -> Option<&'static str> {
    if bits(desc, 1, 11) != 0 || bits(desc, 56, 8) != 0 { return Some("L1CD bits [11:1] / [63:56] RES0 (5.3)"); }
    if bits(desc, 0, 1) == 0 {
        return None;
    }
    let ptr = desc & 0x00FF_FFFF_FFFF_F000;
    if ptr >> (if s2 { idr.ias } else { idr.oas }) != 0 {
        return Some("L1CD.L2Ptr beyond IAS/OAS (5.3 L2Ptr)");
    }
    None
}

// ---------------------------------------------------------------------------
// Commands (4.1.3 command errors, 4.1.5 reserved fields, 4.1.7 ranges,
// 4.3, 4.4.1.1 range/TTL, 4.4.2, 4.4.3, 4.7.3).
// ---------------------------------------------------------------------------

/// The first CERROR_ILL (or out-of-range / UNPREDICTABLE) condition of a
/// command on the Non-secure command queue.
#[rustfmt::skip]
pub(crate) fn command_illegal(w: [u64; 2], idr: &Idr) -> Option<&'static str> {
    let (d0, d1) = (w[0], w[1]);
    let op = bits(d0, 0, 8);
    let sid = bits(d0, 32, 32);
    let ssid = bits(d0, 12, 20);
    let vmid = bits(d0, 32, 16);
    let asid = bits(d0, 48, 16);
    // RES0 masks of dword 0 and dword 1 (the fields each command has).
    let res0 = |m0: u64, m1: u64| (d0 & !m0 != 0) || (d1 & !m1 != 0);
    const OP: u64 = 0xFF;
    const SSEC: u64 = 1 << 10;
    const SID: u64 = 0xFFFF_FFFF << 32;
    const SSID: u64 = 0xF_FFFF << 12;
    const VMID: u64 = 0xFFFF << 32;
    const ASID: u64 = 0xFFFF << 48;
    const RANGE0: u64 = (0x1F << 12) | (0x3F << 20); // NUM [16:12], SCALE [25:20]
    let sid_out = idr.sidsize < 32 && sid >> idr.sidsize != 0;
    let tlbi_range = |addr_mask: u64| -> Option<&'static str> {
        let (num, scale) = (bits(d0, 12, 5), bits(d0, 20, 6));
        let (ttl, tg) = (bits(d1, 8, 2), bits(d1, 10, 2));
        let addr = d1 & addr_mask;
        if res0( OP | VMID | ASID | RANGE0, addr_mask | 1 | (3 << 8) | (3 << 10) | (1 << 7), ) { return Some("TLBI: RES0 field set (4.1.5)"); }
        if bits(d1, 7, 1) != 0 && !idr.d128 { return Some("TLBI: TTL128 without D128 (4.4.1.1, RES0)"); }
        if !idr.ril && (tg != 0 || num != 0 || scale != 0) { return Some("TLBI: TG/NUM/SCALE without IDR3.RIL (4.4.1.1, RES0)"); }
        if tg == 0 && (num != 0 || scale != 0 || ttl != 0) { return Some("TLBI: NUM/SCALE/TTL with TG = 0 (4.4.1.1, RES0)"); }
        if tg != 0 && num == 0 && scale == 0 && ttl == 0 { return Some("TLBI: NUM = SCALE = TTL = 0 with TG != 0 reserved, CERROR_ILL (4.4.1.1)"); }
        if tg == 0b10 && ttl == 0b01 && !idr.ds { return Some("TLBI: TG = 16K with TTL = 1 without DS, CERROR_ILL (4.4.1.1)"); }
        if bits(d0, 25, 1) != 0 && !idr.ds { return Some("TLBI: SCALE[5] without DS (4.4.1.1, RES0)"); }
        // 4.4.1.1: UNPREDICTABLE range unless Address is aligned to a leaf of TTL.
        if tg != 0 {
            let g = [0, 12, 14, 16][tg as usize];
            let lvl = if ttl == 0 || (tg == 0b10 && ttl == 1 && !idr.ds) {
                3
            } else {
                ttl as u32
            };
            let shift = g + (g - 3) * (3 - lvl);
            if addr & ((1u64 << shift) - 1) != 0 {
                return Some(
                    "TLBI: Address not aligned to a leaf of TTL, UNPREDICTABLE range (4.4.1.1)",
                );
            }
        }
        None
    };
    let vmid_w = |v: u64| !idr.vmid16 && v >> 8 != 0;
    let asid_w = |a: u64| !idr.asid16 && a >> 8 != 0;
    match op {
        0x01 => {
            // CMD_PREFETCH_CONFIG (4.2.1)
            if res0(OP | SSEC | (1 << 11) | SSID | SID, 0) { return Some("PREFETCH_CONFIG: RES0 field set (4.1.5)"); }
            if d0 & SSEC != 0 { return Some("SSec = 1 on the Non-secure queue (4.1.6)"); }
            if sid_out { return Some("StreamID beyond SIDSIZE (4.1.7)"); }
            None
        }
        0x03 | 0x04 | 0x05 | 0x06 => {
            // CMD_CFGI_STE / _STE_RANGE / _CD / _CD_ALL (4.3.1-4.3.4)
            let m0 = OP | SSEC | SID | if op == 0x05 { SSID } else { 0 };
            let m1 = match op {
                0x03 | 0x05 => 1,
                0x04 => 0x1F,
                _ => 0,
            };
            if res0(m0, m1) { return Some("CFGI: RES0 field set (4.1.5)"); }
            if d0 & SSEC != 0 { return Some("SSec = 1 on the Non-secure queue (4.1.6)"); }
            if (op == 0x05 || op == 0x06) && !idr.s1p { return Some("CFGI_CD* without stage 1, CERROR_ILL (4.3.3, 4.3.4)"); }
            if op == 0x04 && bits(d1, 0, 5) == 31 {
                return None; // CMD_CFGI_ALL: StreamID ignored
            }
            if sid_out { return Some("StreamID beyond SIDSIZE (4.1.7)"); }
            if op == 0x05 && ssid >> idr.ssidsize != 0 { return Some("CFGI_CD: SubstreamID beyond SSIDSIZE (4.3.3, 4.1.7)"); }
            None
        }
        0x10..=0x13 => {
            // CMD_TLBI_NH_* (4.4.2)
            if !idr.s1p { return Some("TLBI_NH_* without stage 1, CERROR_ILL (4.4.2)"); }
            if !idr.s2p && vmid != 0 { return Some("TLBI_NH_*: VMID without stage 2 (4.4.2, RES0)"); }
            if vmid_w(vmid) { return Some("TLBI: VMID[15:8] without VMID16 (4.4)"); }
            let has_asid = op == 0x11 || op == 0x12;
            if has_asid && asid_w(asid) { return Some("TLBI: ASID[15:8] without ASID16 (4.4)"); }
            let m0 = OP | VMID | if has_asid { ASID } else { 0 };
            if op <= 0x11 {
                return if res0(m0, 0) {
                    Some("TLBI_NH: RES0 field set (4.1.5)")
                } else {
                    None
                };
            }
            if !has_asid && asid != 0 { return Some("TLBI_NH_VAA: RES0 field set (4.1.5)"); }
            tlbi_range(!0xFFF)
        }
        0x20 => {
            if !idr.hyp { return Some("TLBI_EL2_ALL without IDR0.Hyp, CERROR_ILL (4.4.2.7)"); }
            if res0(OP, 0) { return Some("TLBI_EL2_ALL: RES0 field set (4.1.5)"); }
            None
        }
        0x28 | 0x2A => {
            // CMD_TLBI_S12_VMALL / CMD_TLBI_S2_IPA (4.4.3)
            if !idr.s2p { return Some("TLBI_S2_IPA / S12_VMALL without stage 2, CERROR_ILL (4.4.3)"); }
            if vmid_w(vmid) { return Some("TLBI: VMID[15:8] without VMID16 (4.4)"); }
            if op == 0x28 {
                return if res0(OP | VMID, 0) {
                    Some("TLBI_S12_VMALL: RES0 field set (4.1.5)")
                } else {
                    None
                };
            }
            if asid != 0 { return Some("TLBI_S2_IPA: RES0 field set (4.1.5)"); }
            let top = if idr.v30 { 48 } else { 52 };
            tlbi_range(((1u64 << top) - 1) & !0xFFF)
        }
        0x30 => {
            if res0(OP, 0) {
                Some("TLBI_NSNH_ALL: RES0 field set (4.1.5)")
            } else {
                None
            }
        }
        0x46 => {
            // CMD_SYNC (4.7.3)
            let cs = bits(d0, 12, 2);
            if cs == 0b11 { return Some("CMD_SYNC: CS = 0b11 reserved, CERROR_ILL (4.7.3)"); }
            let top = if idr.v30 { 48 } else { 52 };
            if res0( OP | (3 << 12) | (3 << 22) | (0xF << 24) | (0xFFFF_FFFF << 32), ((1u64 << top) - 1) & !3, ) { return Some("CMD_SYNC: RES0 field set (4.1.5)"); }
            None
        }
        0x44 => {
            // CMD_RESUME (4.7.1): Ac [12], Ab [13], StreamID; STAG dword 1 [15:0].
            if idr.stall_model == 0b01 { return Some("CMD_RESUME with STALL_MODEL = 0b01, CERROR_ILL (4.7.1)"); }
            if res0(OP | (3 << 12) | SID, 0xFFFF) { return Some("CMD_RESUME: RES0 field set (4.1.5)"); }
            if sid_out { return Some("CMD_RESUME: StreamID beyond SIDSIZE (4.1.4)"); }
            None
        }
        0x45 => {
            // CMD_STALL_TERM (4.7.2): StreamID only.
            if idr.stall_model == 0b01 { return Some("CMD_STALL_TERM with STALL_MODEL = 0b01, CERROR_ILL (4.7.2)"); }
            if res0(OP | SID, 0) { return Some("CMD_STALL_TERM: RES0 field set (4.1.5)"); }
            if sid_out { return Some("CMD_STALL_TERM: StreamID beyond SIDSIZE (4.1.4)"); }
            None
        }
        // Opcodes the driver never sends are treated as unknown.
        _ => Some("unknown or reserved opcode, CERROR_ILL (4.1.3)"),
    }
}

// ---------------------------------------------------------------------------
// Unit tests of the model itself: each rule fires on a minimal breach of a
// known-good structure.
// ---------------------------------------------------------------------------

fn qemu_idr() -> Idr {
    Idr::from_regs(&IdRegs {
        idr0: 0x0D44_101B,
        idr1: 0x0273_0010,
        idr3: 0x0000_1404,
        idr5: 0x0000_0075,
        iidr: 0,
        aidr: 1,
    })
}

/// V, stage 2, 4K, 40-bit IPA at level 1, PS 48, S2AA64, TTB 4K-aligned.
fn good_s2_ste() -> [u64; 8] {
    let d2 = 5 | (24 << 32) | (1 << 38) | (5 << 48) | (1 << 51) | (1 << 58);
    [1 | (6 << 1), 1 << 44, d2, 0x8000_0000, 0, 0, 0, 0]
}

#[test]
fn model_accepts_good_and_flags_breaches() {
    let idr = qemu_idr();
    let s2 = good_s2_ste();
    assert_eq!(ste_illegal(&s2, &idr), None);
    let with = |i: usize, set: u64, clear: u64| {
        let mut w = s2;
        w[i] = (w[i] & !clear) | set;
        ste_illegal(&w, &idr)
    };
    assert!(with(2, 3 << 46, 3 << 46).is_some(), "S2TG reserved");
    assert!(
        with(2, 0, 3 << 38).is_some(),
        "40-bit IPA at level 2 needs 2^19 entries"
    );
    assert!(with(2, 10 << 32, 0x3F << 32).is_some(), "T0SZ 10");
    assert!(
        with(2, 40 << 32, 0x3F << 32).is_some(),
        "T0SZ 40 without STT"
    );
    assert!(
        with(3, 0x800, 0).is_some(),
        "S2TTB not aligned to two concatenated 4K tables"
    );
    assert!(
        with(2, 1 << 57, 0).is_some(),
        "S2S with STALL_MODEL 0b01 (QEMU)"
    );
    assert!(with(2, 1 << 52, 0).is_some(), "S2ENDI on TTENDIAN 0b10");
    assert!(with(2, 1 << 56, 0).is_some(), "S2HA without HTTU");
    assert!(with(2, 0x100, 0).is_none(), "16-bit VMID with VMID16");
    assert!(with(1, 1 << 28, 0).is_some(), "EATS without ATS");
    let idr8 = Idr {
        vmid16: false,
        ..idr
    };
    let mut w = s2;
    w[2] |= 0x100;
    assert!(
        ste_illegal(&w, &idr8).is_some(),
        "16-bit VMID without VMID16"
    );
    // 64K, 42-bit IPA: level 2 with 8 concatenated tables; level 1 on OAS 40 reserved.
    let mut w = s2;
    w[2] = (w[2] & !((0x3F << 32) | (3 << 38) | (3 << 46))) | (22 << 32) | (1 << 38) | (1 << 46);
    assert_eq!(ste_illegal(&w, &idr), None);
    w[3] = 0x8000_0000 + 0x1_0000; // 64K-aligned, not 128K (8 x 8 KiB = 64 KiB: fine)
    assert_eq!(ste_illegal(&w, &idr), None);
    let idr40 = Idr {
        oas: 40,
        ias: 40,
        ..idr
    };
    w[2] = (w[2] & !(3 << 38)) | (2 << 38);
    assert!(ste_illegal(&w, &idr40).is_some(), "64K level 1 with OAS 40");
    // Stage 1: CD.
    let ste = [1 | (5 << 1) | 0x1000, 1 << 44, 0, 0, 0, 0, 0, 0];
    assert_eq!(ste_illegal(&ste, &idr), None);
    let cd0 = 25 | (1 << 30) | (1 << 31) | (5 << 32) | (1 << 41) | (3 << 45) | (7 << 48);
    let cd = [cd0, 0x1000_0000, 0, 0, 0, 0, 0, 0];
    assert_eq!(cd_illegal(&cd, &ste, false, &idr), None);
    let mut bad = cd;
    bad[0] = (cd0 & !0x3F) | 12;
    assert!(
        cd_illegal(&bad, &ste, false, &idr).is_some(),
        "T0SZ 12 with 4K"
    );
    bad[0] = cd0 & !(1 << 30);
    assert!(
        cd_illegal(&bad, &ste, false, &idr).is_some(),
        "TTB1 walks with TG1 = 0 (reserved)"
    );
    bad[0] = cd0 | (1 << 43);
    assert!(
        cd_illegal(&bad, &ste, false, &idr).is_some(),
        "HA without HTTU"
    );
    bad = cd;
    bad[1] = 0x1000_0010;
    assert!(
        cd_illegal(&bad, &ste, false, &idr).is_some(),
        "TTB0 misaligned"
    );
    // L1 descriptors.
    assert_eq!(l1std_illegal(0x1_0000 | 9, 8, &idr), None);
    assert!(
        l1std_illegal(0x1_0000 | 10, 8, &idr).is_some(),
        "Span 10 with split 8"
    );
    assert!(
        l1std_illegal(0x1_0040 | 9, 8, &idr).is_some(),
        "L2Ptr misaligned"
    );
    assert!(l1std_illegal(12, 8, &idr).is_some(), "Span reserved");
    assert_eq!(l1cd_illegal(0x1000 | 1, false, &idr), None);
    assert!(l1cd_illegal(0x1000 | 3, false, &idr).is_some(), "RES0");
    // Commands.
    assert_eq!(command_illegal([0x46, 0], &idr), None);
    assert!(command_illegal([0x46 | (3 << 12), 0], &idr).is_some());
    assert!(command_illegal([0x47, 0], &idr).is_some());
    assert_eq!(command_illegal([0x04, 31], &idr), None);
    assert!(command_illegal([0x04, 32], &idr).is_some());
    let ipa = |tg: u64, ttl: u64, num: u64, addr: u64| {
        [
            0x2A | (num << 12) | (5 << 32),
            addr | (ttl << 8) | (tg << 10),
        ]
    };
    assert_eq!(command_illegal(ipa(0, 0, 0, 0x1000), &idr), None);
    assert!(
        command_illegal(ipa(1, 0, 0, 0x1000), &idr).is_some(),
        "NUM=SCALE=TTL=0"
    );
    assert_eq!(command_illegal(ipa(1, 3, 0, 0x1000), &idr), None);
    assert!(
        command_illegal(ipa(2, 1, 1, 0x4000), &idr).is_some(),
        "16K TTL 1"
    );
    assert!(
        command_illegal(ipa(1, 2, 1, 0x1000), &idr).is_some(),
        "TTL 2 unaligned"
    );
    let nov = Idr { ril: false, ..idr };
    assert!(
        command_illegal(ipa(1, 3, 0, 0x1000), &nov).is_some(),
        "range without RIL"
    );
    assert!(
        command_illegal([0x05 | (5 << 12), 0], &idr).is_some(),
        "SSID beyond SSIDSIZE 0"
    );
}

// ---------------------------------------------------------------------------
// What the SMMU can see on the register model: the stream table (L1
// descriptors, STEs), the CDs and L1CDs a stage-1 STE reaches (PAs only:
// a nested STE's CD pointer is a guest IPA), and the commands.
// ---------------------------------------------------------------------------

/// Page-0 register offsets the observer reads.
const CR2: usize = 0x2C;
const STRTAB_BASE: usize = 0x80;
const STRTAB_BASE_CFG: usize = 0x88;

fn rd64(addr: u64, i: u64) -> u64 {
    // SAFETY: HostHal memory is identity-mapped; callers only read tables
    // the driver allocated and points the model at (STRTAB_BASE, L2Ptr,
    // S1ContextPtr, L1CD.L2Ptr), within the sizes their fields give.
    unsafe { ((addr + 8 * i) as usize as *const u64).read_volatile() }
}

fn reg32(base: usize, off: usize) -> u32 {
    // SAFETY: `base` is a live model register block of MMIO_SIZE bytes.
    unsafe { ((base + off) as *const u32).read_volatile() }
}

/// What one observation needs: the register block and the ID registers.
#[derive(Clone, Copy)]
struct Observer {
    base: usize,
    idr: Idr,
}

impl Observer {
    fn e2h(&self) -> bool {
        reg32(self.base, CR2) & 1 == 1
    }

    /// The STE of `sid` (None: not reachable), checking the L1STD on the way.
    fn ste(&self, sid: u32, out: &mut Vec<String>) -> Option<[u64; 8]> {
        let base = (u64::from(reg32(self.base, STRTAB_BASE + 4)) << 32
            | u64::from(reg32(self.base, STRTAB_BASE)))
            & 0x000F_FFFF_FFFF_FFC0;
        let cfg = reg32(self.base, STRTAB_BASE_CFG);
        let (log2size, split, two) = (cfg & 0x3F, (cfg >> 6) & 0x1F, (cfg >> 16) & 3 == 1);
        if base == 0 || u64::from(sid) >> log2size != 0 {
            return None;
        }
        let addr = if two {
            let desc = rd64(base, u64::from(sid >> split));
            if let Some(e) = l1std_illegal(desc, split, &self.idr) {
                out.push(format!("L1STD of SID {sid:#x} = {desc:#x}: {e}"));
            }
            let span = bits(desc, 0, 5) as u32;
            let index = sid & ((1 << split) - 1);
            if span == 0 || span > 12 || index >> (span - 1) != 0 {
                return None;
            }
            (desc & 0x000F_FFFF_FFFF_FFC0) + u64::from(index) * 64
        } else {
            base + u64::from(sid) * 64
        };
        Some(core::array::from_fn(|i| rd64(addr, i as u64)))
    }

    /// Checks the STE of `sid` and, for a stage-1-only STE, every valid CD
    /// (and L1CD) it reaches, and that CD 0 is valid.
    fn check_sid(&self, sid: u32, when: &str, out: &mut Vec<String>) {
        let Some(ste) = self.ste(sid, out) else {
            return;
        };
        if let Some(e) = ste_illegal(&ste, &self.idr) {
            out.push(format!("{when}: STE of SID {sid:#x} {ste:x?}: {e}"));
            return;
        }
        if bits(ste[0], 0, 4) != 0b1011 {
            return; // not V + stage-1-only: a nested CD pointer is an IPA
        }
        let ptr = ste[0] & 0x000F_FFFF_FFFF_FFC0;
        let cdmax = bits(ste[0], 59, 5) as u32;
        let fmt = bits(ste[0], 4, 2);
        let cdmax = if self.idr.ssidsize == 0 { 0 } else { cdmax };
        let mut cds: Vec<(u32, [u64; 8])> = Vec::new();
        if cdmax == 0 || fmt == 0 || fmt == 3 {
            for ssid in 0..(1u32 << cdmax) {
                cds.push((
                    ssid,
                    core::array::from_fn(|i| rd64(ptr + u64::from(ssid) * 64, i as u64)),
                ));
            }
        } else {
            let leaf_bits = if fmt == 1 { 6 } else { 10 };
            let l1n = if cdmax <= leaf_bits {
                1
            } else {
                1u32 << (cdmax - leaf_bits)
            };
            for l1 in 0..l1n {
                let desc = rd64(ptr, u64::from(l1));
                if let Some(e) = l1cd_illegal(desc, false, &self.idr) {
                    out.push(format!(
                        "{when}: L1CD {l1} of SID {sid:#x} = {desc:#x}: {e}"
                    ));
                }
                if desc & 1 == 0 {
                    continue;
                }
                let leaf = desc & 0x000F_FFFF_FFFF_F000;
                for j in 0..(1u32 << leaf_bits.min(cdmax)) {
                    let cd = core::array::from_fn(|i| rd64(leaf + u64::from(j) * 64, i as u64));
                    cds.push(((l1 << leaf_bits) | j, cd));
                }
            }
        }
        let e2h = self.e2h();
        for (ssid, cd) in &cds {
            if *ssid == 0 && bits(cd[0], 31, 1) == 0 {
                out.push(format!(
                    "{when}: SID {sid:#x}: CD 0 of a stage-1 STE is not valid (5.4 V)"
                ));
            }
            if let Some(e) = cd_illegal(cd, &ste, e2h, &self.idr) {
                out.push(format!("{when}: CD {ssid} of SID {sid:#x} {cd:x?}: {e}"));
            }
        }
    }
}

/// Installs an observer on `model`: every command it consumes is checked,
/// and at every CFGI and CMD_SYNC so are the STEs of `sids` (the states
/// each step of an update leaves). Returns the list of violations.
fn observe(model: &SmmuModel, idr: Idr, sids: &'static [u32]) -> Arc<Mutex<Vec<String>>> {
    let found = Arc::new(Mutex::new(Vec::new()));
    let obs = Observer {
        base: model.base().as_ptr() as usize,
        idr,
    };
    let f = Arc::clone(&found);
    model.fault_commands(move |cmd| {
        let mut out = Vec::new();
        if let Some(e) = command_illegal(*cmd, &obs.idr) {
            out.push(format!("command {cmd:x?}: {e}"));
        }
        let op = cmd[0] & 0xFF;
        if (0x03..=0x06).contains(&op) || op == 0x46 {
            for &sid in sids {
                obs.check_sid(sid, &format!("at command {op:#x}"), &mut out);
            }
        }
        f.lock().unwrap().extend(out);
        None
    });
    found
}

// ---------------------------------------------------------------------------
// A HAL whose memory lies below 4 GiB, so that SMMUs with a 32-bit OAS can
// be driven on the host: a first-fit allocator over an anonymous mapping
// at a fixed low address (identity-mapped like `FakeHal`).
// ---------------------------------------------------------------------------

unsafe extern "C" {
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut u8;
}

const ARENA: usize = 0x6000_0000;
const ARENA_LEN: usize = 0x1000_0000;

struct Arena {
    /// Free ranges [start, end), sorted and coalesced.
    free: Vec<(usize, usize)>,
}

fn low_arena() -> Option<&'static Mutex<Arena>> {
    static ARENA_LOCK: std::sync::OnceLock<Option<Mutex<Arena>>> = std::sync::OnceLock::new();
    ARENA_LOCK
        .get_or_init(|| {
            // PROT_READ | PROT_WRITE; MAP_PRIVATE | MAP_ANONYMOUS |
            // MAP_NORESERVE | MAP_FIXED_NOREPLACE (Linux x86_64 values).
            // SAFETY: FIXED_NOREPLACE never replaces an existing mapping.
            let p = unsafe {
                mmap(
                    ARENA as *mut u8,
                    ARENA_LEN,
                    3,
                    0x02 | 0x20 | 0x4000 | 0x10_0000,
                    -1,
                    0,
                )
            };
            (p as usize == ARENA).then(|| {
                Mutex::new(Arena {
                    free: std::vec![(ARENA, ARENA + ARENA_LEN)],
                })
            })
        })
        .as_ref()
}

/// [`FakeHal`] with memory from the low arena.
#[derive(Debug)]
struct LowHal;

// SAFETY: regions are disjoint (first-fit over a free list), zeroed, aligned
// as asked, identity-mapped, and stay mapped for the whole process.
unsafe impl Hal for LowHal {
    fn dma_alloc(size: usize, align: usize) -> Option<DmaRegion> {
        let mut a = low_arena()?.lock().unwrap_or_else(|e| e.into_inner());
        let align = align.max(64);
        let i = a
            .free
            .iter()
            .position(|&(s, e)| s.next_multiple_of(align) + size <= e)?;
        let (s, e) = a.free[i];
        let start = s.next_multiple_of(align);
        a.free.remove(i);
        if start + size < e {
            a.free.insert(i, (start + size, e));
        }
        if s < start {
            a.free.insert(i, (s, start));
        }
        // SAFETY: [start, start + size) is inside the arena and now ours.
        unsafe { core::ptr::write_bytes(start as *mut u8, 0, size) };
        Some(DmaRegion {
            paddr: start as u64,
            vaddr: core::ptr::NonNull::new(start as *mut u8)?,
            size,
        })
    }

    unsafe fn dma_free(region: DmaRegion) {
        let Some(lock) = low_arena() else { return };
        let mut a = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (s, e) = (region.paddr as usize, region.paddr as usize + region.size);
        let i = a.free.partition_point(|&(fs, _)| fs < s);
        a.free.insert(i, (s, e));
        if i + 1 < a.free.len() && a.free[i].1 == a.free[i + 1].0 {
            a.free[i].1 = a.free[i + 1].1;
            a.free.remove(i + 1);
        }
        if i > 0 && a.free[i - 1].1 == a.free[i].0 {
            a.free[i - 1].1 = a.free[i].1;
            a.free.remove(i);
        }
    }

    fn dcache_clean(_: *const u8, _: usize) {}

    fn dcache_invalidate(_: *const u8, _: usize) {}

    fn now_ns() -> u64 {
        FakeHal::now_ns()
    }
}

// ---------------------------------------------------------------------------
// ID-register variants and driver requests.
// ---------------------------------------------------------------------------

/// An SMMU variant (OAS 32..52: its memory comes from [`LowHal`], below
/// 4 GiB).
#[derive(Debug, Clone, Copy)]
struct Variant {
    s1: bool,
    s2: bool,
    ttf: u32,
    httu: u32,
    hyp: bool,
    asid16: bool,
    vmid16: bool,
    cd2l: bool,
    ttendian: u32,
    stall_model: u32,
    term_model: bool,
    two_level: bool,
    sid_bits: u8,
    ssid_bits: u8,
    stt: bool,
    ril: bool,
    oas: u8,
    granules: u32,
    minor: u32,
    coherent: bool,
    /// Other IDR0 / IDR3 / IDR5 bits the driver must cope with (ATS,
    /// NS1ATS, PRI, MSI, SEV, BTM, VMW...; FWB, MPAM, BBML, DPT...; DS,
    /// D128, VAX).
    misc: (u32, u32, u32),
}

impl Variant {
    fn builder(&self) -> ModelBuilder {
        self.builder_base()
            .id_register(
                0x00,
                (self.idr0_base() & !IDR0_MISC) | (self.misc.0 & IDR0_MISC),
            )
            .id_register(
                0x0C,
                (self.idr3_base() & !IDR3_MISC) | (self.misc.1 & IDR3_MISC),
            )
            .id_register(
                0x14,
                (self.idr5_base() & !IDR5_MISC) | (self.misc.2 & IDR5_MISC),
            )
    }

    fn builder_base(&self) -> ModelBuilder {
        SmmuModel::builder()
            .stage1(self.s1)
            .stage2(self.s2)
            .id_field(0x00, 2, 2, self.ttf)
            .id_field(0x00, 6, 2, self.httu)
            .id_field(0x00, 9, 1, u32::from(self.hyp))
            .asid16(self.asid16)
            .vmid16(self.vmid16)
            .cd2l(self.cd2l)
            .id_field(0x00, 21, 2, self.ttendian)
            .id_field(0x00, 24, 2, self.stall_model)
            .id_field(0x00, 26, 1, u32::from(self.term_model))
            .two_level_strtab(self.two_level)
            .sid_bits(self.sid_bits)
            .ssid_bits(self.ssid_bits)
            .id_field(0x0C, 9, 1, u32::from(self.stt))
            .ril(self.ril)
            .oas(self.oas)
            .granules(self.granules << 4)
            .id_field(0x1C, 0, 4, self.minor)
            .coherent(self.coherent)
    }

    fn idr0_base(&self) -> u32 {
        self.builder_base().build().read32(0x00)
    }

    fn idr3_base(&self) -> u32 {
        self.builder_base().build().read32(0x0C)
    }

    fn idr5_base(&self) -> u32 {
        self.builder_base().build().read32(0x14)
    }

    /// Whether the driver accepts this SMMU at all.
    /// The ID registers the variant's register model answers with.
    fn regs(&self) -> IdRegs {
        let m = self.builder().build();
        IdRegs {
            idr0: m.read32(0x00),
            idr1: m.read32(0x04),
            idr3: m.read32(0x0C),
            idr5: m.read32(0x14),
            iidr: m.read32(0x18),
            aidr: m.read32(0x1C),
        }
    }

    fn probes(&self) -> bool {
        crate::Features::from_id_regs(&self.regs()).is_ok()
    }

    fn idr(&self) -> Idr {
        Idr::from_regs(&self.regs())
    }
}

/// IDR0 BTM, DORMHINT, ATS, NS1ATS, MSI, SEV, ATOS, PRI, VMW, VATOS,
/// ATSRECERR.
const IDR0_MISC: u32 = 1 << 5
    | 1 << 8
    | 1 << 10
    | 1 << 11
    | 1 << 13
    | 1 << 14
    | 1 << 15
    | 1 << 16
    | 1 << 17
    | 1 << 20
    | 1 << 23;
/// IDR3 HAD, PBHA, XNX, PPS, MPAM, FWB, BBML, E0PD, PTWNNC, DPT.
const IDR3_MISC: u32 =
    1 << 2 | 1 << 3 | 1 << 4 | 1 << 5 | 1 << 7 | 1 << 8 | 3 << 11 | 1 << 13 | 1 << 14 | 1 << 15;
/// IDR5 DS, D128, VAX.
const IDR5_MISC: u32 = 1 << 7 | 1 << 8 | 3 << 10;

prop_compose! {
    fn variant()(
        stages in prop_oneof![1 => Just(1u8), 1 => Just(2u8), 3 => Just(3u8)],
        ttf in 2u32..=3,
        httu in 0u32..=2,
        hyp: bool,
        asid16: bool,
        vmid16: bool,
        cd2l: bool,
        le_only: bool,
        stall_model in prop::sample::select(std::vec![0u32, 0, 1, 1, 1, 2]),
        term_model: bool,
        two_level: bool,
        sid_bits in 6u8..=12,
        ssid_bits in prop::sample::select(std::vec![0u8, 1, 3, 6, 7, 10, 11, 20]),
        stt: bool,
        ril: bool,
        oas in 0u8..=6,
        granules in 1u32..=7,
        minor in 0u32..=2,
        coherent: bool,
        misc in prop_oneof![1 => Just((0u32, 0u32, 0u32)), 1 => (any::<u32>(), any::<u32>(), any::<u32>())],
    ) -> Variant {
        Variant {
            s1: stages & 1 != 0,
            s2: stages & 2 != 0,
            ttf, httu, hyp, asid16, vmid16, cd2l,
            ttendian: if le_only { 2 } else { 0 },
            stall_model, term_model, two_level, sid_bits, ssid_bits, stt, ril,
            oas, granules, minor, coherent, misc,
        }
    }
}

/// One domain request: granule (index into the ones implemented), IPA/VA
/// bits, stage policy, explicit VMID.
#[derive(Debug, Clone, Copy)]
struct DomainReq {
    granule: usize,
    ipa_bits: u32,
    stage1: bool,
    vmid: Option<u16>,
    /// Output size asked for (index into 32..52; clamped to the OAS).
    oas: usize,
}

prop_compose! {
    fn domain_req()(granule in 0usize..3, ipa_bits in 25u32..=52, stage1: bool,
                    vmid in prop::option::of(1u16..=0xFFFF), oas in 0usize..12) -> DomainReq {
        DomainReq { granule, ipa_bits, stage1, vmid, oas }
    }
}

/// StreamIDs the scenarios use (all below 2^6, the smallest SIDSIZE).
const SIDS: &[u32] = &[1, 2, 3, 5, 8, 13, 21, 34];

fn granules_of<H: Hal>(smmu: &Smmu<H>) -> Vec<Granule> {
    let f = smmu.features();
    [Granule::K4, Granule::K16, Granule::K64]
        .into_iter()
        .filter(|&g| f.supports_granule(g))
        .collect()
}

/// Creates the domain `r` asks for, as a hypervisor would (geometry clamped
/// to the SMMU's IAS/OAS; VMID masked to the SMMU's width); `None` when the
/// driver refuses it (a typed error: that is fine, it built nothing).
fn create<H: Hal>(smmu: &Smmu<H>, r: DomainReq) -> Option<crate::DomainId> {
    let f = *smmu.features();
    let gs = granules_of(smmu);
    let g = *gs.get(r.granule % gs.len().max(1))?;
    // Some requests ask for the SMMU's whole output size, the others for a
    // smaller one (a VM's VTCR_EL2.PS).
    let oas = [32, 36, 40, 42, 44, 48, 52]
        .get(r.oas)
        .map_or(u32::from(f.oas_bits), |&b: &u32| {
            b.min(u32::from(f.oas_bits))
        });
    let max_ipa = if g == Granule::K64 && oas == 52 {
        52
    } else {
        48
    };
    let cfg = Stage2Config::new(g, r.ipa_bits.min(max_ipa).min(oas), oas)
        .and_then(|c| c.clamp_to(u32::from(f.ias_bits), u32::from(f.oas_bits)))
        .ok()?;
    let vmid = r
        .vmid
        .map(|v| v & ((1u32 << f.vmid_bits) - 1) as u16)
        .filter(|&v| v != 0);
    let stage = if r.stage1 {
        StagePolicy::Stage1
    } else {
        StagePolicy::Stage2
    };
    smmu.create_domain(DomainOptions {
        stage,
        vmid: if f.stage2 { vmid } else { None },
        ..DomainOptions::new(cfg)
    })
    .ok()
}

/// One step of a scenario.
#[derive(Debug, Clone, Copy)]
enum Op {
    Create(DomainReq),
    Attach {
        domain: usize,
        sid: usize,
    },
    AttachSsid {
        domain: usize,
        sid: usize,
        ssid: u32,
    },
    DetachSsid {
        sid: usize,
        ssid: u32,
    },
    Nested {
        domain: usize,
        sid: usize,
        cd: GuestCdReq,
    },
    DetachNested {
        domain: usize,
        sid: usize,
    },
    Map {
        domain: usize,
        page: u64,
        pages: u64,
    },
    Unmap {
        domain: usize,
        page: u64,
        pages: u64,
    },
    Detach {
        sid: usize,
    },
    Bypass {
        sid: usize,
    },
    Abort {
        sid: usize,
    },
    Quarantine {
        sid: usize,
    },
    Release {
        sid: usize,
    },
    Destroy {
        domain: usize,
    },
    External {
        vtcr: (u64, u64, u64, u64),
        root: u64,
        vmid: Option<u16>,
    },
    Group {
        domain: usize,
        first: usize,
        n: usize,
        attach: bool,
    },
    NestedInvalidate {
        domain: usize,
        asid: u16,
        va: u64,
        len: u64,
    },
    Invalidate {
        domain: usize,
        page: u64,
        pages: u64,
    },
    Protect {
        domain: usize,
        page: u64,
        pages: u64,
    },
    Reenable,
    Policy {
        ssid_bits: u8,
        leaf64: bool,
    },
}

/// A guest's CD for a nested stream, as guest fields.
#[derive(Debug, Clone, Copy)]
struct GuestCdReq {
    t0sz: u8,
    tg0: u8,
    ips: u8,
    asid: u16,
    ttb_page: u64,
    epd1: bool,
    ha: bool,
    s: bool,
}

fn op() -> impl Strategy<Value = Op> {
    let d = 0usize..4;
    let s = 0usize..SIDS.len();
    let cd = (
        prop_oneof![3 => 16u8..=39, 1 => 8u8..=48],
        prop_oneof![9 => 0u8..=2, 1 => 3u8..=3],
        0u8..=7,
        any::<u16>(),
        0u64..8,
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(t0sz, tg0, ips, asid, ttb_page, epd1, ha, s)| GuestCdReq {
            t0sz,
            tg0,
            ips,
            asid: if asid & 0x100 != 0 {
                asid & 0x1FF
            } else {
                1 + (asid & 7)
            },
            ttb_page,
            epd1,
            ha,
            s,
        });
    prop_oneof![
        3 => domain_req().prop_map(Op::Create),
        4 => (d.clone(), s.clone()).prop_map(|(domain, sid)| Op::Attach { domain, sid }),
        2 => (d.clone(), s.clone(), 1u32..2048).prop_map(|(domain, sid, ssid)| Op::AttachSsid { domain, sid, ssid }),
        1 => (s.clone(), 1u32..2048).prop_map(|(sid, ssid)| Op::DetachSsid { sid, ssid }),
        4 => (d.clone(), s.clone(), cd).prop_map(|(domain, sid, cd)| Op::Nested { domain, sid, cd }),
        1 => (d.clone(), s.clone()).prop_map(|(domain, sid)| Op::DetachNested { domain, sid }),
        2 => (d.clone(), 0u64..64, 1u64..600).prop_map(|(domain, page, pages)| Op::Map { domain, page, pages }),
        2 => (d.clone(), 0u64..64, 1u64..600).prop_map(|(domain, page, pages)| Op::Unmap { domain, page, pages }),
        2 => s.clone().prop_map(|sid| Op::Detach { sid }),
        1 => s.clone().prop_map(|sid| Op::Bypass { sid }),
        1 => s.clone().prop_map(|sid| Op::Abort { sid }),
        1 => s.clone().prop_map(|sid| Op::Quarantine { sid }),
        1 => s.clone().prop_map(|sid| Op::Release { sid }),
        1 => d.clone().prop_map(|domain| Op::Destroy { domain }),
        1 => (d, 0u64..64, 1u64..600).prop_map(|(domain, page, pages)| Op::Protect { domain, page, pages }),
        1 => Just(Op::Reenable),
        2 => (0usize..4, 1u16..9, 0u64..1 << 36, 0u64..1 << 30)
            .prop_map(|(domain, asid, va, len)| Op::NestedInvalidate { domain, asid, va: va << 12, len: len << 12 }),
        1 => (0usize..4, 0u64..64, 1u64..600).prop_map(|(domain, page, pages)| Op::Invalidate { domain, page, pages }),
        2 => (0usize..4, 0usize..SIDS.len(), 1usize..4, any::<bool>())
            .prop_map(|(domain, first, n, attach)| Op::Group { domain, first, n, attach }),
        3 => (
            (prop_oneof![16u64..=40, 0u64..64], 0u64..4, 0u64..3, 0u64..7),
            prop_oneof![(0u64..0x2_0000).prop_map(|p| p << 12), (0u64..1 << 40).prop_map(|p| p << 12)],
            prop::option::of(1u16..0x200),
        )
            .prop_map(|(vtcr, root, vmid)| Op::External { vtcr, root, vmid }),
        1 => (prop::sample::select(std::vec![0u8, 1, 4, 6, 7, 10, 11]), any::<bool>())
            .prop_map(|(ssid_bits, leaf64)| Op::Policy { ssid_bits, leaf64 }),
    ]
}

/// Guest RAM of nested streams, at IPA 0x400_0000 (4 MiB).
const GUEST_RAM: core::ops::Range<u64> = 0x400_0000..0x440_0000;
const GUEST_CD: u64 = 0x400_3000;

fn guest_cd(c: &GuestCdReq) -> [u64; 8] {
    let d0 = u64::from(c.t0sz)
        | u64::from(c.tg0) << 6
        | u64::from(c.epd1) << 30
        | 1 << 31
        | u64::from(c.ips) << 32
        | 1 << 41
        | u64::from(c.ha) << 43
        | u64::from(c.s) << 44
        | 3 << 45
        | u64::from(c.asid) << 48;
    // TTB0 in guest RAM, 64 KiB steps, sometimes 4 KiB off (misaligned
    // for a 16K or 64K granule).
    [
        d0,
        GUEST_RAM.start
            + 0x1_0000 * (1 + c.ttb_page)
            + (c.ttb_page & 1) * 0x1000 * u64::from(c.ttb_page > 5),
        0,
        0x44FF,
        0,
        0,
        0,
        0,
    ]
}

/// Runs `ops` on `v` with the observer installed; returns the violations
/// (empty when the driver stayed legal, or refused the variant).
fn run<H: Hal>(v: &Variant, ops: &[Op], strtab: usize) -> Vec<String> {
    use crate::smmu::StreamTableChoice;
    let model = v.builder().build();
    let idr = v.idr();
    let config = Config {
        timeout_ns: 1_000_000,
        stream_table: [
            StreamTableChoice::Auto,
            StreamTableChoice::Linear,
            StreamTableChoice::TwoLevel,
        ][strtab],
        ..Config::default()
    };
    // SAFETY: the model outlives the driver (dropped at the end of this
    // function, after `smmu`); nothing else drives it.
    let Ok(smmu) = (unsafe { Smmu::<H>::new(model.base(), config) }) else {
        return Vec::new(); // refused (e.g. forced stall): nothing written
    };
    let found = observe(&model, idr, SIDS);
    if smmu.enable().is_err() {
        return std::vec![String::from("enable failed")];
    }
    let mut domains: Vec<crate::DomainId> = Vec::new();
    let mut nested_bad: Vec<String> = Vec::new();
    let dom = |i: usize, ds: &Vec<crate::DomainId>| ds.get(i % ds.len().max(1)).copied();
    for op in ops {
        // Errors are typed refusals: the property is only about what the
        // driver wrote.
        match *op {
            Op::Create(r) => {
                if let Some(d) = create(&smmu, r) {
                    domains.push(d);
                }
            }
            Op::Attach { domain, sid } => {
                if let Some(d) = dom(domain, &domains) {
                    if smmu.domain_of(SIDS[sid]) != Some(d) {
                        let _ = smmu.detach(SIDS[sid]);
                        let _ = smmu.attach(d, SIDS[sid]);
                    }
                }
            }
            Op::AttachSsid { domain, sid, ssid } => {
                if let Some(d) = dom(domain, &domains) {
                    let _ = smmu.attach_ssid(d, SIDS[sid], ssid);
                }
            }
            Op::DetachSsid { sid, ssid } => {
                let _ = smmu.detach_ssid(SIDS[sid], ssid);
            }
            Op::Nested { domain, sid, cd } => {
                // A stage-2 domain of the VM (the first from `domain` on, or
                // a new one).
                let n = domains.len();
                let s2 = (0..n).map(|i| domains[(domain + i) % n]).find(|&d| {
                    smmu.domain_info(d)
                        .is_ok_and(|i| i.stage == crate::Stage::Stage2)
                });
                let s2 = s2.or_else(|| {
                    let r = DomainReq {
                        granule: domain,
                        ipa_bits: 40,
                        stage1: false,
                        vmid: None,
                        oas: 12,
                    };
                    let d = create(&smmu, r)?;
                    domains.push(d);
                    Some(d)
                });
                if let Some(d) = s2 {
                    let words = guest_cd(&cd);
                    if smmu.domain_of(SIDS[sid]) != Some(d) {
                        let _ = smmu.detach(SIDS[sid]);
                        let _ = smmu.attach(d, SIDS[sid]);
                    }
                    let _ = smmu.map(
                        d,
                        GUEST_RAM.start,
                        0x8000_0000,
                        GUEST_RAM.end - GUEST_RAM.start,
                        Perm::ReadWrite,
                    );
                    let req = crate::domain::NestedRequest {
                        domain: d,
                        sid: SIDS[sid],
                        cd_ipa: GUEST_CD,
                        guest_ram: core::slice::from_ref(&GUEST_RAM),
                    };
                    let mut read = |ipa: u64| {
                        let i = ipa.wrapping_sub(GUEST_CD) / 8;
                        GUEST_RAM.contains(&ipa).then(|| {
                            if ipa >= GUEST_CD && i < 8 {
                                words[i as usize]
                            } else {
                                0
                            }
                        })
                    };
                    if smmu.attach_nested(&req, &mut read).is_ok() {
                        // The SMMU reads the guest's CD words as they are.
                        let ste = model.ste(SIDS[sid]).map(|s| s.0).unwrap_or_default();
                        let e2h = reg32(model.base().as_ptr() as usize, CR2) & 1 == 1;
                        if let Some(e) = cd_illegal(&words, &ste, e2h, &idr) {
                            nested_bad.push(format!("nested CD {words:x?} accepted: {e}"));
                        }
                    }
                }
            }
            Op::DetachNested { domain, sid } => {
                if let Some(d) = dom(domain, &domains) {
                    let _ = smmu.detach_nested(d, SIDS[sid]);
                }
            }
            Op::Map {
                domain,
                page,
                pages,
            } => {
                if let Some(d) = dom(domain, &domains) {
                    let gran = 0x1_0000;
                    let _ = smmu.map(
                        d,
                        0x100_0000 + page * gran,
                        0x9000_0000 + page * gran,
                        pages * gran,
                        Perm::ReadWrite,
                    );
                }
            }
            Op::Unmap {
                domain,
                page,
                pages,
            } => {
                if let Some(d) = dom(domain, &domains) {
                    let gran = 0x1_0000;
                    let _ = smmu.unmap(d, 0x100_0000 + page * gran, pages * gran);
                }
            }
            Op::Detach { sid } => {
                let _ = smmu.detach(SIDS[sid]);
            }
            Op::Bypass { sid } => {
                let _ = smmu.set_bypass(SIDS[sid]);
            }
            Op::Abort { sid } => {
                let _ = smmu.set_abort(SIDS[sid]);
            }
            Op::Quarantine { sid } => {
                let _ = smmu.quarantine(SIDS[sid]);
            }
            Op::Release { sid } => {
                let _ = smmu.release(SIDS[sid]);
            }
            Op::Destroy { domain } => {
                if let Some(d) = dom(domain, &domains) {
                    if smmu.destroy_domain(d).is_ok() {
                        domains.retain(|&x| x != d);
                    }
                }
            }
            Op::Protect {
                domain,
                page,
                pages,
            } => {
                if let Some(d) = dom(domain, &domains) {
                    let gran = 0x1_0000;
                    let _ = smmu.protect(d, 0x100_0000 + page * gran, pages * gran, Perm::Read);
                }
            }
            Op::External {
                vtcr: (t0sz, sl0, tg0, ps),
                root,
                vmid,
            } => {
                // Half the time a VTCR_EL2 the driver itself would build
                // (consistent SL0), else the fields as drawn.
                let g = [Granule::K4, Granule::K64, Granule::K16][tg0 as usize];
                let built = Stage2Config::new(
                    g,
                    64 - t0sz.clamp(16, 39) as u32,
                    [32, 36, 40, 42, 44, 48, 52][ps as usize],
                );
                let vtcr = match built {
                    Ok(c) if root & 0x1000 == 0 => c.vtcr(),
                    _ => t0sz | sl0 << 6 | 0x3500 | tg0 << 14 | ps << 16 | 1 << 31,
                };
                let ext = crate::ExternalStage2 {
                    vtcr,
                    root: root & !0x1000,
                    vmid,
                    access_flag_fault_disable: true,
                };
                if let Ok(d) = smmu.create_external_domain(ext) {
                    domains.push(d);
                }
            }
            Op::Group {
                domain,
                first,
                n,
                attach,
            } => {
                let sids: Vec<u32> = (first..(first + n).min(SIDS.len()))
                    .map(|i| SIDS[i])
                    .collect();
                if attach {
                    let _ = smmu.declare_group(&sids);
                    if let Some(d) = dom(domain, &domains) {
                        let _ = smmu.attach_group(d, &sids);
                    }
                } else {
                    let _ = smmu.detach_group(&sids);
                }
            }
            Op::NestedInvalidate {
                domain,
                asid,
                va,
                len,
            } => {
                if let Some(d) = dom(domain, &domains) {
                    let _ = smmu.nested_invalidate_asid(d, asid);
                    let _ = smmu.nested_invalidate_va(d, asid, va, len);
                }
            }
            Op::Invalidate {
                domain,
                page,
                pages,
            } => {
                if let Some(d) = dom(domain, &domains) {
                    let _ = smmu.invalidate(d, 0x100_0000 + page * 0x1_0000, pages * 0x1_0000);
                }
            }
            Op::Reenable => {
                let _ = smmu.disable();
                let _ = smmu.enable();
            }
            Op::Policy { ssid_bits, leaf64 } => {
                smmu.set_cd_table_policy(crate::CdTablePolicy {
                    ssid_bits,
                    leaf: if leaf64 {
                        crate::CdLeaf::K64
                    } else {
                        crate::CdLeaf::K4
                    },
                });
            }
        }
    }
    // The final state: every StreamID of the table, every command.
    let obs = Observer {
        base: model.base().as_ptr() as usize,
        idr,
    };
    let mut out = found.lock().unwrap().clone();
    out.extend(nested_bad);
    for sid in 0..(1u32 << v.sid_bits) {
        obs.check_sid(sid, "final", &mut out);
    }
    for cmd in model.commands() {
        if let Some(e) = command_illegal(cmd, &idr) {
            out.push(format!("command {cmd:x?}: {e}"));
        }
    }
    drop(smmu);
    out.dedup();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// Whatever a hypervisor asks on whatever SMMU, every STE, CD, L1
    /// descriptor and command the driver shows the SMMU is legal, in every
    /// intermediate state of an update (observed at each CFGI and CMD_SYNC).
    #[test]
    fn driver_never_shows_the_smmu_an_illegal_structure(
        v in variant(),
        first in prop::collection::vec(domain_req(), 1..4),
        ops in prop::collection::vec(op(), 1..40),
        low in prop::bool::weighted(0.75),
        strtab in 0usize..3,
    ) {
        let ops: Vec<Op> = first.into_iter().map(Op::Create).chain(ops).collect();
        let found = if low && low_arena().is_some() {
            run::<LowHal>(&v, &ops, strtab)
        } else {
            run::<FakeHal>(&Variant { oas: v.oas.max(5), ..v }, &ops, strtab)
        };
        prop_assert!(found.is_empty(), "{v:?}\n{}", found.join("\n"));
    }
}

// ---------------------------------------------------------------------------
// Pure properties: what the driver accepts from a guest, the stage-2
// geometry it encodes on any SMMU, and every intermediate state of an STE
// update.
// ---------------------------------------------------------------------------

/// A nested STE as the driver writes it (Config 0b111, EL1, S2AA64 = 1):
/// the context `cd_illegal` needs.
fn nested_context() -> [u64; 8] {
    [1 | (7 << 1) | GUEST_CD, 1 << 44, 1 << 51, 0, 0, 0, 0, 0]
}

prop_compose! {
    /// CD words around the ones a guest would write: each field usually
    /// sensible, sometimes anything.
    fn cd_words()(
        t0sz in prop_oneof![3 => 16u64..=39, 1 => 0u64..64],
        tg0 in 0u64..4,
        epd0 in prop::bool::weighted(0.1),
        endi in prop::bool::weighted(0.2),
        t1sz in 0u64..64,
        tg1 in 0u64..4,
        epd1 in prop::bool::weighted(0.8),
        ips in 0u64..8,
        aa64 in prop::bool::weighted(0.9),
        hd in prop::bool::weighted(0.2),
        ha in prop::bool::weighted(0.2),
        s in prop::bool::weighted(0.1),
        a in prop::bool::weighted(0.9),
        asid in prop_oneof![1u64..0x100, 0u64..0x1_0000],
        ttb0 in prop_oneof![
            (0u64..0x400).prop_map(|p| 0x400_0000 + p * 0x1000),
            (0u64..0x400).prop_map(|p| 0x1_0000_0000 + p * 0x1000),
            (0u64..0x400).prop_map(|p| 0x100_0000_0000 + p * 0x1000),
            (0u64..1 << 44).prop_map(|p| p << 4),
        ],
        ttb1 in any::<u64>(),
    ) -> [u64; 8] {
        let d0 = t0sz | tg0 << 6 | u64::from(epd0) << 14 | u64::from(endi) << 15 | t1sz << 16
            | tg1 << 22 | u64::from(epd1) << 30 | 1 << 31 | ips << 32 | u64::from(aa64) << 41
            | u64::from(hd) << 42 | u64::from(ha) << 43 | u64::from(s) << 44 | 1 << 45
            | u64::from(a) << 46 | asid << 48;
        [d0, ttb0, ttb1 & 0x000F_FFFF_FFFF_FFF0, 0x44FF, 0, 0, 0, 0]
    }
}

/// Guest RAM below 4 GiB, above 4 GiB and above 1 TiB.
const NESTED_RAM: [core::ops::Range<u64>; 3] = [
    0x400_0000..0x800_0000,
    0x1_0000_0000..0x1_0040_0000,
    0x100_0000_0000..0x100_0040_0000,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// A guest CD `validate_cd` accepts is not ILLEGAL behind the nested
    /// STE the driver writes (the SMMU reads the guest's words as they are).
    #[test]
    fn guest_cds_validate_cd_accepts_are_legal(v in variant(), words in cd_words()) {
        let regs = v.regs();
        let Ok(f) = crate::Features::from_id_regs(&regs) else { return Ok(()) };
        if !f.nested() {
            return Ok(());
        }
        if crate::domain::validate_cd(&words, &f, &NESTED_RAM).is_ok() {
            let e = cd_illegal(&words, &nested_context(), false, &Idr::from_regs(&regs));
            prop_assert!(e.is_none(), "{words:x?} accepted: {e:?}");
        }
    }

    /// On every SMMU (OAS 32..52, with or without AArch32 tables, SMMUv3.0
    /// to v3.2, small tables or not), every stage-2 configuration the
    /// driver accepts for it (built, or from a CPU's VTCR_EL2) encodes a
    /// legal STE with a root aligned as `Stage2Config` sizes it.
    #[test]
    fn stage2_geometry_is_legal_on_every_smmu(
        v in variant(),
        g in 0usize..3,
        ipa in 20u32..=56,
        oas_req in 0usize..7,
        vtcr in prop::option::of((0u64..64, 0u64..4, 0u64..4, 0u64..7)),
        vmid in 1u16..=0xFF,
    ) {
        let v = Variant { s2: true, ..v };
        let regs = v.regs();
        let Ok(f) = crate::Features::from_id_regs(&regs) else { return Ok(()) };
        let idr = Idr::from_regs(&regs);
        let granule = [Granule::K4, Granule::K16, Granule::K64][g];
        let oas = [32, 36, 40, 42, 44, 48, 52][oas_req];
        let cfg = match vtcr {
            // T0SZ, SL0, TG0 (0 4K, 1 64K, 2 16K), PS; RES1 bit 31.
            Some((t0sz, sl0, tg0, ps)) => Stage2Config::from_vtcr(t0sz | sl0 << 6 | tg0 << 14 | ps << 16 | 1 << 31),
            None => Stage2Config::new(granule, ipa, oas),
        };
        let Ok(cfg) = cfg else { return Ok(()) };
        // What `create_domain` requires of the configuration on this SMMU.
        if !f.supports_granule(cfg.granule()) || cfg.check_fits(u32::from(f.ias_bits), u32::from(f.oas_bits)).is_err() {
            return Ok(());
        }
        let fields = cfg.ste_fields();
        // A root at 1 GiB: aligned to any start table, below any OAS.
        let ste = crate::ste::Ste::stage2(&crate::ste::Stage2Ste {
            vmid,
            t0sz: fields.t0sz,
            sl0: fields.sl0,
            ir0: fields.ir0,
            or0: fields.or0,
            sh0: fields.sh0,
            tg: fields.tg,
            ps: fields.ps,
            ttb: 0x4000_0000,
            affd: true,
            record_faults: true,
            ptw: false,
        });
        prop_assert!(ste.is_ok(), "{cfg:?}: {ste:?}");
        let ste = ste.unwrap().with_s2_stall(f.stall_forced());
        prop_assert_eq!(ste_illegal(&ste.0, &idr), None, "{:?} on {:?}", cfg, v);
    }
}

/// 5.4 TTB0: a TTB0 outside the range of the CD's effective IPS makes the
/// CD ILLEGAL (C_BAD_CD). A guest CD with IPS = 32 bits and its TTB0 in
/// guest RAM above 4 GiB was accepted for a nested stream.
#[test]
fn validate_cd_refuses_ttb0_beyond_ips() {
    // (The variants' extra ID bits reach the model.)
    let v = Variant {
        misc: (!0, !0, !0),
        ..Variant {
            s1: true,
            s2: true,
            ttf: 2,
            httu: 0,
            hyp: false,
            asid16: true,
            vmid16: true,
            cd2l: true,
            ttendian: 0,
            stall_model: 1,
            term_model: true,
            two_level: true,
            sid_bits: 8,
            ssid_bits: 8,
            stt: false,
            ril: true,
            oas: 5,
            granules: 7,
            minor: 1,
            coherent: true,
            misc: (0, 0, 0),
        }
    };
    let i = v.idr();
    assert!(i.ats && i.ns1ats && i.ds && i.d128 && i.dpt && i.vax == 3 && i.s1p && i.vmid16);
    let idr = qemu_idr();
    let regs = IdRegs {
        idr0: 0x0D44_101B,
        idr1: 0x0273_0010,
        idr3: 0x0000_1404,
        idr5: 0x0000_0075,
        iidr: 0,
        aidr: 1,
    };
    let f = crate::Features::from_id_regs(&regs).unwrap();
    // V, AA64, A, R, EPD1, 4K, T0SZ 25, ASID 5; IPS 0 (32 bits) or 2 (40).
    let cd = |ips: u64| {
        let d0 = 25 | 1 << 30 | 1 << 31 | ips << 32 | 1 << 41 | 3 << 45 | 5 << 48;
        [d0, 0x1_0000_3000, 0, 0x44FF, 0, 0, 0, 0]
    };
    assert!(cd_illegal(&cd(0), &nested_context(), false, &idr).is_some());
    assert_eq!(cd_illegal(&cd(2), &nested_context(), false, &idr), None);
    assert_eq!(
        crate::domain::validate_cd(&cd(0), &f, &NESTED_RAM).err(),
        Some(crate::domain::NestedError::Ttb0OutsideGuestRam(
            0x1_0000_3000
        ))
    );
    assert!(crate::domain::validate_cd(&cd(2), &f, &NESTED_RAM).is_ok());
}

/// Every STE (or CD) the SMMU may observe while `steps` take `current` to
/// the target: between two completed `Sync`s each dword may hold any value
/// it held since the last one, in any combination (IHI 0070 3.21.3: 64-bit
/// single-copy atomicity, any read order, caching until CFGI + CMD_SYNC).
fn observable(current: &[u64; 8], steps: &[crate::entry_plan::UpdateStep]) -> Vec<[u64; 8]> {
    use crate::entry_plan::UpdateStep;
    let mut possible: Vec<Vec<u64>> = current.iter().map(|&v| std::vec![v]).collect();
    let mut state = *current;
    let mut seen = Vec::new();
    let flush = |possible: &Vec<Vec<u64>>, seen: &mut Vec<[u64; 8]>| {
        let total: usize = possible.iter().map(Vec::len).product();
        for k in 0..total {
            let mut n = k;
            seen.push(core::array::from_fn(|i| {
                let v = possible[i][n % possible[i].len()];
                n /= possible[i].len();
                v
            }));
        }
    };
    for s in steps {
        match *s {
            UpdateStep::Write { dword, value } => {
                state[dword] = value;
                if !possible[dword].contains(&value) {
                    possible[dword].push(value);
                }
            }
            UpdateStep::Publish => {}
            UpdateStep::Sync => {
                flush(&possible, &mut seen);
                possible = state.iter().map(|&v| std::vec![v]).collect();
            }
        }
    }
    flush(&possible, &mut seen);
    seen
}

/// STEs as the driver builds them for `idr`: invalid, abort, bypass,
/// stage 2 (two geometries, two VMIDs, two roots), stage 1 (one CD, a
/// linear or 2-level CD table), nested.
fn driver_stes(idr: &Idr) -> Vec<crate::ste::Ste> {
    use crate::ste::{Stage1Ste, Stage2Ste, Ste};
    let mut out = std::vec![Ste::invalid(), Ste::abort(), Ste::bypass()];
    let s2 = |vmid: u16, ttb: u64, cfg: Stage2Config| {
        let f = cfg.ste_fields();
        Stage2Ste {
            vmid,
            t0sz: f.t0sz,
            sl0: f.sl0,
            ir0: f.ir0,
            or0: f.or0,
            sh0: f.sh0,
            tg: f.tg,
            ps: f.ps,
            ttb,
            affd: true,
            record_faults: true,
            ptw: false,
        }
    };
    let vmid_hi = if idr.vmid16 { 0x1234 } else { 0x34 };
    let g = if idr.gran4k {
        Granule::K4
    } else if idr.gran16k {
        Granule::K16
    } else {
        Granule::K64
    };
    let oas = idr.oas.min(48);
    let cfgs: Vec<Stage2Config> = [oas, 32]
        .iter()
        .filter_map(|&ipa| Stage2Config::new(g, ipa.min(idr.ias), oas).ok())
        .collect();
    let mut s2s = Vec::new();
    for (i, cfg) in cfgs.iter().enumerate() {
        for (vmid, ttb) in [
            (1, 0x4000_0000),
            (vmid_hi, 0x5000_0000 + (i as u64) * 0x10_0000),
        ] {
            s2s.push(s2(vmid, ttb, *cfg));
        }
    }
    // S2S as the driver sets it: 1 exactly when stalls are forced.
    let forced = idr.stall_model == 0b10;
    if idr.s2p {
        out.extend(
            s2s.iter()
                .filter_map(|s| Ste::stage2(s).ok())
                .map(|ste| ste.with_s2_stall(forced)),
        );
    }
    let cdmax = idr.ssidsize.min(8) as u8;
    let s1s = [
        Stage1Ste::new(0x6000_0000, 0),
        Stage1Ste {
            s1cdmax: cdmax,
            s1dss: if cdmax > 0 { 2 } else { 0 },
            ..Stage1Ste::new(0x6100_0000, 0)
        },
    ];
    if idr.s1p {
        for s1 in &s1s {
            if let Ok(mut ste) = Ste::stage1(s1) {
                out.push(ste);
                if idr.cd2l && cdmax > 0 {
                    ste.0[0] |= 1 << 4; // S1Fmt = 2-level, 4K leaves (as src/domain/stage1.rs)
                    out.push(ste);
                }
            }
        }
    }
    if idr.s1p && idr.s2p {
        for s2 in &s2s {
            out.extend(
                Ste::nested(&Stage1Ste::new(0x400_3000, 0), s2)
                    .ok()
                    .map(|ste| ste.with_s2_stall(forced)),
            );
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every state the SMMU may observe during any update the planner makes
    /// between two STEs the driver builds is not ILLEGAL.
    #[test]
    fn every_observable_ste_of_an_update_is_legal(v in variant(), a in 0usize..64, b in 0usize..64) {
        if !v.probes() {
            return Ok(()); // refused at probe: never driven
        }
        let idr = v.idr();
        let stes = driver_stes(&idr);
        let (cur, target) = (stes[a % stes.len()], stes[b % stes.len()]);
        prop_assert_eq!(ste_illegal(&cur.0, &idr), None, "{:x?}", cur);
        let plan = crate::ste::plan_update(&cur, &target).expect("a plan");
        for seen in observable(&cur.0, plan.as_slice()) {
            let e = ste_illegal(&seen, &idr);
            prop_assert!(e.is_none(), "{cur:x?} -> {target:x?}: {seen:x?} {e:?}");
        }
    }

    /// Likewise for CDs: ASID, TTB0, MAIR and geometry changes of a live CD.
    #[test]
    fn every_observable_cd_of_an_update_is_legal(
        v in variant(),
        asids in (1u16..0x100, 1u16..0x100),
        ttbs in (0u64..16, 0u64..16),
        va in (25u8..=48, 25u8..=48),
    ) {
        use crate::cd::{Cd, Stage1Cd};
        if !v.probes() {
            return Ok(());
        }
        let idr = v.idr();
        let tg0 = if idr.gran4k { 0 } else if idr.gran16k { 2 } else { 1 };
        let ips = [32, 36, 40, 42, 44, 48].iter().rposition(|&b| b <= idr.oas).unwrap() as u8;
        let cd = |asid: u16, ttb: u64, va: u8| Cd::new(&Stage1Cd {
            asid,
            ttb0: 0x1000_0000 + ttb * 0x1_0000,
            t0sz: 64 - va,
            tg0,
            ips,
            ir0: 1,
            or0: 1,
            sh0: 3,
            mair: 0x44FF,
            record_faults: true,
            affd: false,
        });
        let (Ok(cur), Ok(target)) = (cd(asids.0, ttbs.0, va.0), cd(asids.1, ttbs.1, va.1)) else {
            return Ok(());
        };
        // CD.S as the driver sets it: 1 exactly when stalls are forced.
        let forced = idr.stall_model == 0b10;
        let (cur, target) = (cur.with_stall(forced), target.with_stall(forced));
        let ste = [1 | 5 << 1, 1 << 44, 0, 0, 0, 0, 0, 0];
        prop_assert_eq!(cd_illegal(&cur.0, &ste, false, &idr), None, "{:x?}", cur);
        let plan = crate::cd::plan_update(&cur, &target).expect("a plan");
        for seen in observable(&cur.0, plan.as_slice()) {
            let e = cd_illegal(&seen, &ste, false, &idr);
            prop_assert!(e.is_none(), "{cur:x?} -> {target:x?}: {seen:x?} {e:?}");
        }
    }
}
