//! The L1STD (5.1) and L1CD (5.3) ILLEGAL rules.

use super::*;

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
