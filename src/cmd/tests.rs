//! Encoding and decoding of [`super::Command`]: every command's words,
//! validation, and the canonical round trip.

extern crate std;
use super::*;
use proptest::prelude::*;
use std::vec;

fn enc(c: Command) -> [u64; 2] {
    let w = c.encode();
    assert_eq!(Command::decode(w), c, "round trip of {c:?}");
    w
}

#[test]
fn cfgi_and_prefetch_encodings() {
    // PREFETCH_CONFIG: op 0x01, SID [63:32].
    assert_eq!(
        enc(Command::PrefetchConfig { sid: 0x1234 }),
        [0x0000_1234_0000_0001, 0]
    );
    // CFGI_STE: op 0x03, SID [63:32], Leaf dword1 bit 0.
    assert_eq!(
        enc(Command::CfgiSte {
            sid: 0xDEAD_BEEF,
            leaf: true
        }),
        [0xDEAD_BEEF_0000_0003, 1]
    );
    assert_eq!(enc(Command::cfgi_ste(0x10)), [0x0000_0010_0000_0003, 1]);
    // CFGI_STE_RANGE: Range dword1 [4:0]; 31 = all.
    assert_eq!(enc(Command::cfgi_all()), [0x04, 0x1F]);
    assert_eq!(
        enc(Command::CfgiSteRange {
            sid: 0x100,
            range: 7
        }),
        [0x0000_0100_0000_0004, 7]
    );
    // CFGI_CD: SSID [31:12].
    assert_eq!(
        enc(Command::CfgiCd {
            sid: 5,
            ssid: 0xF_FFFF,
            leaf: true
        }),
        [0x0000_0005_FFFF_F005, 1]
    );
    assert_eq!(
        enc(Command::CfgiCdAll { sid: 0xFFFF_FFFF }),
        [0xFFFF_FFFF_0000_0006, 0]
    );
}

#[test]
fn tlbi_encodings() {
    // VMID [47:32], ASID [63:48].
    assert_eq!(
        enc(Command::TlbiNhAll { vmid: 0xABCD }),
        [0x0000_ABCD_0000_0010, 0]
    );
    assert_eq!(
        enc(Command::TlbiNhAsid {
            vmid: 1,
            asid: 0x8001
        }),
        [0x8001_0001_0000_0011, 0]
    );
    // VA [63:12] in dword1, Leaf bit 0.
    assert_eq!(
        enc(Command::TlbiNhVa {
            vmid: 2,
            asid: 3,
            addr: 0xFFFF_8000_1234_5000,
            leaf: true,
            range: None
        }),
        [0x0003_0002_0000_0012, 0xFFFF_8000_1234_5001]
    );
    assert_eq!(
        enc(Command::TlbiNhVaa {
            vmid: 2,
            addr: 0x4000_0000,
            leaf: false,
            range: None
        }),
        [0x0000_0002_0000_0013, 0x4000_0000]
    );
    assert_eq!(enc(Command::TlbiEl2All), [0x20, 0]);
    assert_eq!(
        enc(Command::TlbiS12Vmall { vmid: 7 }),
        [0x0000_0007_0000_0028, 0]
    );
    // IPA [51:12].
    assert_eq!(
        enc(Command::TlbiS2Ipa {
            vmid: 1,
            addr: 0x000F_FFFF_FFFF_F000,
            leaf: true,
            range: None
        }),
        [0x0000_0001_0000_002A, 0x000F_FFFF_FFFF_F001]
    );
    assert_eq!(enc(Command::TlbiNsnhAll), [0x30, 0]);
}

#[test]
fn tlbi_range_fields() {
    // NUM [16:12] = 0x1F, SCALE [24:20] = 0x1F, TTL [9:8] = 3, TG [11:10] = 3.
    let c = Command::tlbi_s2_ipa(
        1,
        0x1_0000,
        false,
        Some(TlbiRange {
            num: 31,
            scale: 31,
            tg: 3,
            ttl: 3,
        }),
    )
    .unwrap();
    assert_eq!(enc(c), [0x0000_0001_01F1_F02A, 0x0000_0000_0001_0F00]);
    // 4K granule, NUM 0, SCALE 9: 512 pages.
    let r = TlbiRange {
        num: 0,
        scale: 9,
        tg: 1,
        ttl: 0,
    };
    assert_eq!(r.pages(), 512);
    let c = Command::tlbi_nh_va(1, 2, 0x20_0000, true, Some(r)).unwrap();
    assert_eq!(enc(c), [0x0002_0001_0090_0012, 0x0020_0401]);
}

#[test]
fn sync_encodings() {
    assert_eq!(enc(Command::sync()), [0x46, 0]);
    // CS [13:12] = 1 (SIG_IRQ).
    assert_eq!(
        enc(Command::Sync {
            cs: SyncCs::Irq,
            msi_addr: 0,
            msi_data: 0
        }),
        [0x1046, 0]
    );
    assert_eq!(
        enc(Command::Sync {
            cs: SyncCs::Sev,
            msi_addr: 0,
            msi_data: 0
        }),
        [0x2046, 0]
    );
    // With an MSI: MSH [23:22] = 3, MSIAttr [27:24] = 0xF,
    // MSIData [63:32], MSIAddress [51:2].
    assert_eq!(
        enc(Command::Sync {
            cs: SyncCs::Irq,
            msi_addr: 0x000F_0000_4000_0004,
            msi_data: 0xCAFE_F00D
        }),
        [0xCAFE_F00D_0FC0_1046, 0x000F_0000_4000_0004]
    );
}

/// CMD_RESUME (IHI 0070 §4.7.1): Opcode 0x44 \[7:0\], SSec \[10\], Ac
/// \[12\], Ab \[13\], StreamID \[63:32\]; STAG in dword 1 \[15:0\].
/// CMD_STALL_TERM (§4.7.2): Opcode 0x45, SSec, StreamID \[63:32\] only.
#[test]
fn resume_and_stall_term_encodings() {
    let r = |action| Command::Resume {
        sid: 0x8000_0010,
        stag: 0xBEEF,
        action,
    };
    assert_eq!(enc(r(ResumeAction::Retry)), [0x8000_0010_0000_1044, 0xBEEF]);
    assert_eq!(enc(r(ResumeAction::Abort)), [0x8000_0010_0000_2044, 0xBEEF]);
    assert_eq!(enc(r(ResumeAction::RazWi)), [0x8000_0010_0000_0044, 0xBEEF]);
    assert_eq!(
        enc(Command::StallTerm { sid: 0x1234 }),
        [0x0000_1234_0000_0045, 0]
    );
    // Ab is IGNORED with Ac = 1: {Ac, Ab} = {1, 1} is not canonical; SSec
    // (Secure) and STAG bits above 15 are not modelled: all Raw.
    for w in [
        [0x10_0000_3044, 0],
        [0x10_0000_0444, 0],
        [0x10_0000_1044, 1 << 16],
        [0x10_0000_0045, 1],
    ] {
        assert_eq!(Command::decode(w), Command::Raw(w), "{w:x?}");
    }
}

#[test]
fn raw_and_illegal() {
    let c = Command::Raw([0x07, 0]);
    assert_eq!(c.opcode(), 0x07);
    assert_eq!(c.encode(), [0x07, 0]);
    assert_eq!(Command::decode([0x07, 0]), c);
    // A reserved bit in an otherwise valid CFGI_STE stays raw.
    assert_eq!(
        Command::decode([0x0000_0010_0000_0103, 1]),
        Command::Raw([0x0000_0010_0000_0103, 1])
    );
    // SSec = 1 is not modelled: raw.
    assert!(matches!(Command::decode([0x403, 0]), Command::Raw(_)));
    // CS = 3 is reserved.
    assert!(matches!(Command::decode([0x3046, 0]), Command::Raw(_)));
    // NUM without TG is not canonical.
    assert!(matches!(Command::decode([0x1_002A, 0]), Command::Raw(_)));
}

#[test]
fn validation() {
    assert_eq!(
        Command::tlbi_s2_ipa(1, 0x1234, false, None),
        Err(Error::Misaligned {
            addr: 0x1234,
            align: 0x1000
        })
    );
    assert!(matches!(
        Command::tlbi_s2_ipa(1, 1 << 52, false, None),
        Err(Error::RangeOverflow { .. })
    ));
    let r16 = TlbiRange {
        num: 0,
        scale: 0,
        tg: 2,
        ttl: 3,
    };
    assert_eq!(
        Command::tlbi_s2_ipa(1, 0x1000, false, Some(r16)),
        Err(Error::Misaligned {
            addr: 0x1000,
            align: 0x4000
        })
    );
    assert!(Command::tlbi_s2_ipa(1, 0x4000, false, Some(r16)).is_ok());
    // 16K granule with TTL = 1 (level 1) is reserved without
    // SMMU_IDR5.DS (IHI 0070 §4.4.1.1); 4K and 64K have level-1 leaves.
    assert_eq!(
        Command::tlbi_s2_ipa(1, 0x4000, false, Some(TlbiRange { ttl: 1, ..r16 })),
        Err(Error::Invalid(Invalid::Field {
            field: Field::TlbiRange,
            value: 1,
        }))
    );
    // (Level-1 leaves: 1 GiB with 4K, 4 TiB with 64K.)
    for (tg, addr) in [(1, 1 << 30), (3, 1 << 42)] {
        let r = TlbiRange { tg, ttl: 1, ..r16 };
        assert!(
            Command::tlbi_s2_ipa(1, addr, false, Some(r)).is_ok(),
            "TG {tg}"
        );
    }
    // TTL = NUM = SCALE = 0 with TG != 0 is reserved (IHI 0070 §4.4.1.1).
    assert_eq!(
        Command::tlbi_s2_ipa(1, 0x4000, false, Some(TlbiRange { ttl: 0, ..r16 })),
        Err(Error::Invalid(Invalid::Field {
            field: Field::TlbiRange,
            value: 0
        }))
    );
    let bad_tg = TlbiRange { tg: 0, ..r16 };
    assert_eq!(
        Command::tlbi_nh_vaa(1, 0, false, Some(bad_tg)),
        Err(Error::Invalid(Invalid::Field {
            field: Field::TlbiGranule,
            value: 0
        }))
    );
    let bad_num = TlbiRange { num: 32, ..r16 };
    assert!(Command::tlbi_nh_va(1, 1, 0, false, Some(bad_num)).is_err());
    assert!(
        Command::CfgiCd {
            sid: 0,
            ssid: 1 << 20,
            leaf: false
        }
        .validate()
        .is_err()
    );
    assert!(
        Command::CfgiSteRange { sid: 0, range: 32 }
            .validate()
            .is_err()
    );
    assert!(
        Command::Sync {
            cs: SyncCs::Irq,
            msi_addr: 2,
            msi_data: 0
        }
        .validate()
        .is_err()
    );
}

/// An address aligned for `range`'s level hint (a leaf of level TTL, or
/// its granule), as `validate` requires.
fn hinted(addr: u64, range: Option<TlbiRange>) -> u64 {
    let Some(r) = range else { return addr };
    let g = r.granule_shift().unwrap_or(12);
    let shift = match r.ttl {
        1..=3 => g + (3 - u32::from(r.ttl)) * (g - 3),
        _ => g,
    };
    addr & !((1u64 << shift) - 1)
}

fn arb_range() -> impl Strategy<Value = Option<TlbiRange>> {
    prop::option::of(
        (0u8..32, 0u8..32, 1u8..4, 0u8..4).prop_map(|(num, scale, tg, ttl)| TlbiRange {
            // Not the reserved TTL = NUM = SCALE = 0.
            num: if ttl == 0 && scale == 0 && num == 0 {
                1
            } else {
                num
            },
            scale,
            tg,
            // 16K with TTL 1 is reserved (no SMMU_IDR5.DS).
            ttl: if tg == 2 && ttl == 1 { 2 } else { ttl },
        }),
    )
}

fn arb_command() -> impl Strategy<Value = Command> {
    let page = any::<u64>().prop_map(|a| a & !0xFFFF);
    let ipa = any::<u64>().prop_map(|a| a & 0x000F_FFFF_FFFF_0000);
    prop_oneof![
        any::<u32>().prop_map(|sid| Command::PrefetchConfig { sid }),
        (any::<u32>(), any::<bool>()).prop_map(|(sid, leaf)| Command::CfgiSte { sid, leaf }),
        (any::<u32>(), 0u8..32).prop_map(|(sid, range)| Command::CfgiSteRange { sid, range }),
        (any::<u32>(), 0u32..(1 << 20), any::<bool>())
            .prop_map(|(sid, ssid, leaf)| Command::CfgiCd { sid, ssid, leaf }),
        any::<u32>().prop_map(|sid| Command::CfgiCdAll { sid }),
        any::<u16>().prop_map(|vmid| Command::TlbiNhAll { vmid }),
        (any::<u16>(), any::<u16>()).prop_map(|(vmid, asid)| Command::TlbiNhAsid { vmid, asid }),
        (
            any::<u16>(),
            any::<u16>(),
            page.clone(),
            any::<bool>(),
            arb_range()
        )
            .prop_map(|(vmid, asid, addr, leaf, range)| Command::TlbiNhVa {
                vmid,
                asid,
                addr: hinted(addr, range),
                leaf,
                range
            }),
        (any::<u16>(), page, any::<bool>(), arb_range()).prop_map(|(vmid, addr, leaf, range)| {
            Command::TlbiNhVaa {
                vmid,
                addr: hinted(addr, range),
                leaf,
                range,
            }
        }),
        Just(Command::TlbiEl2All),
        any::<u16>().prop_map(|vmid| Command::TlbiS12Vmall { vmid }),
        (any::<u16>(), ipa, any::<bool>(), arb_range()).prop_map(|(vmid, addr, leaf, range)| {
            Command::TlbiS2Ipa {
                vmid,
                addr: hinted(addr, range),
                leaf,
                range,
            }
        }),
        Just(Command::TlbiNsnhAll),
        (any::<u32>(), any::<u16>(), 0usize..3).prop_map(|(sid, stag, a)| Command::Resume {
            sid,
            stag,
            action: [
                ResumeAction::Retry,
                ResumeAction::Abort,
                ResumeAction::RazWi
            ][a],
        }),
        any::<u32>().prop_map(|sid| Command::StallTerm { sid }),
        (0u8..3, any::<u64>(), any::<u32>()).prop_map(|(cs, a, msi_data)| Command::Sync {
            cs: [SyncCs::None, SyncCs::Irq, SyncCs::Sev][cs as usize],
            msi_addr: a & 0x000F_FFFF_FFFF_FFFC,
            msi_data
        }),
    ]
}

proptest! {
    #[test]
    fn round_trip(c in arb_command()) {
        prop_assert!(c.validate().is_ok());
        prop_assert_eq!(Command::decode(c.encode()), c);
        prop_assert_eq!(c.encode()[0] & 0xFF, u64::from(c.opcode()));
    }

    #[test]
    fn decode_is_canonical(w0: u64, w1: u64) {
        let c = Command::decode([w0, w1]);
        prop_assert_eq!(c.encode(), [w0, w1]);
        prop_assert_eq!(c.opcode() as u64, w0 & 0xFF);
    }
}
