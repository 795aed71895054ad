//! ID registers decoded by the model itself (IDR0, IDR1, IDR3, IDR5,
//! AIDR), independent of the driver's feature probe.

use super::*;

// ---------------------------------------------------------------------------
// ID registers, decoded by the model itself (6.3.1 IDR0, 6.3.2 IDR1,
// 6.3.4 IDR3, 6.3.6 IDR5, AIDR).
// ---------------------------------------------------------------------------

pub(super) fn bits(v: u64, shift: u32, n: u32) -> u64 {
    (v >> shift) & ((1u64 << n) - 1)
}

/// The ID-register facts the rules read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Idr {
    pub(super) s2p: bool,
    pub(super) s1p: bool,
    pub(super) ttf: u64,
    pub(super) httu: u64,
    pub(super) hyp: bool,
    pub(super) ats: bool,
    pub(super) ns1ats: bool,
    pub(super) asid16: bool,
    pub(super) vmid16: bool,
    pub(super) cd2l: bool,
    pub(super) ttendian: u64,
    pub(super) stall_model: u64,
    pub(super) term_model: bool,
    pub(super) sidsize: u32,
    pub(super) ssidsize: u32,
    pub(super) stt: bool,
    pub(super) ril: bool,
    pub(super) dpt: bool,
    pub(super) oas: u32,
    pub(super) ias: u32,
    pub(super) gran4k: bool,
    pub(super) gran16k: bool,
    pub(super) gran64k: bool,
    pub(super) ds: bool,
    pub(super) d128: bool,
    pub(super) vax: u64,
    pub(super) v30: bool,
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
    pub(super) fn granule_ok(&self, gbits: u32) -> bool {
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
pub(super) fn ps_bits(enc: u64) -> u32 {
    [32, 36, 40, 42, 44, 48, 52, 52][enc as usize]
}

/// Granule bits of STE.S2TG / CD.TG0 (0 4K, 1 64K, 2 16K, 3 reserved).
pub(super) fn tg0_bits(tg: u64) -> Option<u32> {
    match tg {
        0 => Some(12),
        1 => Some(16),
        2 => Some(14),
        _ => None,
    }
}

/// Granule bits of CD.TG1 (1 16K, 2 4K, 3 64K, 0 reserved).
pub(super) fn tg1_bits(tg: u64) -> Option<u32> {
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
pub(super) fn s2_start_level(gbits: u32, sl0: u64, idr: &Idr, stt: bool) -> Result<u32, &'static str> {
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
pub(super) fn s2_root_align(gbits: u32, start: u32, ia: u32) -> u32 {
    let stride = gbits - 3;
    let shift = gbits + stride * (3 - start);
    (ia - shift + 3).max(3)
}
