//! Unit tests of the model itself: each rule fires on a minimal breach.

use super::*;

// ---------------------------------------------------------------------------
// Unit tests of the model itself: each rule fires on a minimal breach of a
// known-good structure.
// ---------------------------------------------------------------------------

pub(super) fn qemu_idr() -> Idr {
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
