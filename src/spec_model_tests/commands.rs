//! The command ILLEGAL rules (4.1.3 errors, 4.1.5 reserved fields, 4.1.7
//! ranges).

use super::*;

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
