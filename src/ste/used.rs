//! Which STE bits the SMMU reads under each configuration (IHI 0070 §5.2,
//! §5.2.1, §13.5), bit by bit: the input of the update planner.
//!
//! Counting a bit as used is always safe (the planner only becomes more
//! careful); missing one lets the SMMU combine an old value with a new
//! configuration. Where the architecture makes a field's use depend on an
//! SMMU feature or on another field, the field is counted as used:
//!
//! - V = 0: only V.
//! - V = 1: Config; CONT (§5.2.1: it may be obeyed even when Config =
//!   abort).
//! - Abort (Config 0b0xx): nothing else.
//! - Bypass: the attribute overrides MemAttr, MTCFG, ALLOCCFG, SHCFG, NSCFG,
//!   PRIVCFG, INSTCFG; the IMPLEMENTATION DEFINED bits; dwords 4..=7.
//! - Every translating configuration (stage 1, stage 2, nested): the
//!   overrides except SHCFG (§13.5: MemAttr/MTCFG/ALLOCCFG are stage-1 and
//!   stage-2 inputs, PRIVCFG/INSTCFG feed permission checks), EATS, DRE,
//!   DCP, PPAR, MEV, the IMPLEMENTATION DEFINED bits, dwords 4..=7 (MPAM,
//!   MECID, Secure stage 2, S2POI: all 0 in this driver).
//! - Stage 1 (Config 0b1x1, also nested): all of dword 0 (S1Fmt,
//!   S1ContextPtr, S1CDMax); S1DSS (always, though the architecture reads
//!   it only when S1CDMax != 0); S1CIR, S1COR, S1CSH, S1STALLD, STRW (the
//!   architecture ignores STRW when nested), S1PIE, S1MPAM; S2VMID. S2VMID
//!   is counted for stage-1-only streams whatever STRW says: the
//!   architecture tags NS-EL1 stage-1 TLB entries with it when stage 2 is
//!   implemented (QEMU does), and Linux counts it too. With S1DSS = bypass
//!   SHCFG is used as well (§13.5: substream-less traffic then bypasses
//!   stage 1 and gets the bypass attributes).
//! - Stage 2 (Config 0b11x, also nested): SHCFG, S2HWU59..62, S2FWB; all of
//!   dwords 2 and 3 (S2VMID, the VTCR-like fields, S2AA64, S2ENDI, S2AFFD,
//!   S2PTW, S2HD, S2HA, S2S, S2R, S2HAFT..S2DS, S2TTB, S2SKL).
//!
//! Linux's `arm_smmu_get_ste_used` is a subset of this (it omits S2AFFD,
//! S2HD, S2HA, S2S and the overrides other than SHCFG, which its encoders
//! leave 0).

use tock_registers::RegisterLongName;
use tock_registers::fields::Field;

use super::{STE_0, STE_1, STE_2};
use crate::entry_plan::{Dwords, ENTRY_DWORDS};

/// The bits a field occupies in its dword.
fn bits<R: RegisterLongName>(f: Field<u64, R>) -> u64 {
    f.mask << f.shift
}

/// Attribute overrides applied to bypassed traffic (§5.2.1).
fn bypass_overrides() -> u64 {
    bits(STE_1::MEMATTR)
        | bits(STE_1::MTCFG)
        | bits(STE_1::ALLOCCFG)
        | bits(STE_1::SHCFG)
        | bits(STE_1::NSCFG)
        | bits(STE_1::PRIVCFG)
        | bits(STE_1::INSTCFG)
}

/// Dword 1 bits every translating configuration uses.
fn translating_common() -> u64 {
    (bypass_overrides() & !bits(STE_1::SHCFG))
        | bits(STE_1::EATS)
        | bits(STE_1::DRE)
        | bits(STE_1::DCP)
        | bits(STE_1::PPAR)
        | bits(STE_1::MEV)
        | bits(STE_1::IMPDEF)
}

/// Dword 1 bits of stage 1.
fn stage1_dword1() -> u64 {
    bits(STE_1::S1DSS)
        | bits(STE_1::S1CIR)
        | bits(STE_1::S1COR)
        | bits(STE_1::S1CSH)
        | bits(STE_1::S1STALLD)
        | bits(STE_1::STRW)
        | bits(STE_1::S1PIE)
        | bits(STE_1::S1MPAM)
}

/// Dword 1 bits of stage 2.
fn stage2_dword1() -> u64 {
    bits(STE_1::SHCFG) | bits(STE_1::S2HWU) | bits(STE_1::S2FWB)
}

/// The bits of `e` the SMMU may read under the configuration `e` selects.
/// Depends only on bits it reports as used (V, Config, S1DSS).
pub(crate) fn ste_used(e: &Dwords) -> Dwords {
    let mut u = [0u64; ENTRY_DWORDS];
    u[0] = bits(STE_0::V);
    if e[0] & bits(STE_0::V) == 0 {
        return u;
    }
    u[0] |= bits(STE_0::CONFIG);
    u[1] |= bits(STE_1::CONT);
    let config = (e[0] & bits(STE_0::CONFIG)) >> STE_0::CONFIG.shift;
    // Config 0b0xx: abort.
    if config & 0b100 == 0 {
        return u;
    }
    for d in &mut u[4..] {
        *d = !0;
    }
    if config == 0b100 {
        u[1] |= bypass_overrides() | bits(STE_1::IMPDEF);
        return u;
    }
    u[1] |= translating_common();
    if config & 0b001 != 0 {
        u[0] = !0;
        u[1] |= stage1_dword1();
        u[2] |= bits(STE_2::S2VMID);
        let s1dss = (e[1] & bits(STE_1::S1DSS)) >> STE_1::S1DSS.shift;
        if s1dss == STE_1::S1DSS::Bypass.value >> STE_1::S1DSS.shift {
            u[1] |= bits(STE_1::SHCFG);
        }
    }
    if config & 0b010 != 0 {
        u[1] |= stage2_dword1();
        u[2] = !0;
        u[3] = !0;
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ste::{Stage1Ste, Ste};

    #[test]
    fn invalid_and_abort() {
        assert_eq!(ste_used(&[0; 8]), [1, 0, 0, 0, 0, 0, 0, 0]);
        // Junk beyond V is ignored, including a Config.
        assert_eq!(ste_used(&[0xE, !0, 0, 0, 0, 0, 0, 0])[1..], [0; 7]);
        for cfg in 0..4u64 {
            let u = ste_used(&[1 | cfg << 1, !0, !0, !0, !0, !0, !0, !0]);
            assert_eq!(u, [0xF, 0xF << 13, 0, 0, 0, 0, 0, 0], "config {cfg}");
        }
    }

    #[test]
    fn bypass() {
        let u = ste_used(&Ste::bypass().0);
        assert_eq!(u[0], 0xF);
        // MemAttr..ALLOCCFG [40:32], SHCFG..INSTCFG [51:44], IMPDEF [63:52],
        // CONT [16:13].
        assert_eq!(u[1], 0xFFFF_F1FF_0000_0000 | 0xF << 13);
        assert_eq!(&u[2..4], &[0, 0]);
        assert_eq!(&u[4..], &[!0; 4]);
    }

    #[test]
    fn stage1_and_s1dss_bypass() {
        let s1 = Stage1Ste::new(0x4000_0040, 3);
        let u = ste_used(&Ste::stage1(&s1).unwrap().0);
        assert_eq!(u[0], !0);
        assert_eq!(u[1] & bits(STE_1::SHCFG), 0);
        assert_eq!(u[1] & bits(STE_1::S1CIR), bits(STE_1::S1CIR));
        assert_eq!(u[1] & bits(STE_1::SW_RESERVED), 0);
        assert_eq!(u[2], 0xFFFF);
        assert_eq!(u[3], 0);
        let dss = Ste::stage1(&Stage1Ste {
            s1cdmax: 8,
            s1dss: 1,
            ..s1
        })
        .unwrap();
        assert_eq!(ste_used(&dss.0)[1] & bits(STE_1::SHCFG), bits(STE_1::SHCFG));
    }

    #[test]
    fn stage2_and_nested() {
        let s2 = [0xD, 0, 0, 0, 0, 0, 0, 0];
        let u = ste_used(&s2);
        assert_eq!(u[0], 0xF);
        assert_eq!(u[1] & bits(STE_1::S1CIR), 0);
        assert_eq!(u[1] & bits(STE_1::STRW), 0);
        assert_eq!(u[1] & bits(STE_1::SHCFG), bits(STE_1::SHCFG));
        assert_eq!(&u[2..], &[!0; 6]);
        let n = ste_used(&[0xF, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(n[0], !0);
        assert_eq!(n[1], u[1] | stage1_dword1());
        assert_eq!(&n[2..], &[!0; 6]);
    }

    #[test]
    fn encoders_set_only_used_bits() {
        // Linux checks this of its encoders; ours may set a bit the
        // configuration ignores only where noted: SHCFG = incoming in
        // stage-1 entries without S1DSS = bypass.
        let s1 = Ste::stage1(&Stage1Ste::new(0x4000_0040, 3)).unwrap();
        let u = ste_used(&s1.0);
        for (i, (&w, &used)) in s1.0.iter().zip(u.iter()).enumerate() {
            let extra = w & !used;
            let allowed = if i == 1 { bits(STE_1::SHCFG) } else { 0 };
            assert_eq!(extra & !allowed, 0, "dword {i}");
        }
        for ste in [Ste::abort(), Ste::bypass()] {
            let u = ste_used(&ste.0);
            assert!((0..8).all(|i| ste.0[i] & !u[i] == 0));
        }
    }
}
