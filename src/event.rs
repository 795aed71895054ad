//! Event queue records (32 bytes, four little-endian dwords): decoding and
//! a one-line readable form.
//!
//! [`Event::decode`] accepts every bit pattern. Which fields an event carries
//! depends on its type (IHI 0070, "Event records"); fields a type does not
//! define are `None`/`false`/0, and the raw record is always kept.

use core::fmt;

use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

register_bitfields! [u64,
    /// Event record dword 0.
    EVT_0 [
        TYPE OFFSET(0) NUMBITS(8) [],
        /// SubstreamID valid.
        SSV OFFSET(11) NUMBITS(1) [],
        SSID OFFSET(12) NUMBITS(20) [],
        SID OFFSET(32) NUMBITS(32) []
    ],
    /// Event record dword 1.
    EVT_1 [
        /// Stall tag (with STALL = 1).
        STAG OFFSET(0) NUMBITS(16) [],
        /// The transaction is stalled and awaits CMD_RESUME/STALL_TERM.
        STALL OFFSET(31) NUMBITS(1) [],
        /// 1 = privileged.
        PNU OFFSET(33) NUMBITS(1) [],
        /// 1 = instruction fetch.
        IND OFFSET(34) NUMBITS(1) [],
        /// 1 = read, 0 = write.
        RNW OFFSET(35) NUMBITS(1) [],
        /// The IPA is non-secure.
        NSIPA OFFSET(38) NUMBITS(1) [],
        /// The fault arose at stage 2.
        S2 OFFSET(39) NUMBITS(1) [],
        /// What was being accessed.
        CLASS OFFSET(40) NUMBITS(2) [Cd = 0, Tt = 1, In = 2]
    ],
    /// Event record dword 2.
    EVT_2 [
        INPUT_ADDR OFFSET(0) NUMBITS(64) []
    ],
    /// Event record dword 3.
    EVT_3 [
        /// IPA\[51:12\] (translation-class faults at stage 2).
        IPA OFFSET(12) NUMBITS(40) [],
        /// FetchAddr\[51:3\] (fetch faults, external aborts on walks).
        FETCH_ADDR OFFSET(3) NUMBITS(49) []
    ]
];

/// Low address bits the IPA field does not hold.
const IPA_SHIFT: u32 = 12;
/// Low address bits the FetchAddr field does not hold.
const FETCH_SHIFT: u32 = 3;

/// Event types (dword 0 \[7:0\]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// 0x01 F_UUT: unsupported upstream transaction.
    FUut,
    /// 0x02 C_BAD_STREAMID: StreamID beyond the stream table.
    CBadStreamId,
    /// 0x03 F_STE_FETCH: external abort fetching an STE.
    FSteFetch,
    /// 0x04 C_BAD_STE: invalid or malformed STE.
    CBadSte,
    /// 0x05 F_BAD_ATS_TREQ: ATS translation request not allowed.
    FBadAtsTreq,
    /// 0x06 F_STREAM_DISABLED: non-substream traffic with S1DSS = terminate.
    FStreamDisabled,
    /// 0x07 F_TRANSL_FORBIDDEN: translated (ATS) traffic not allowed.
    FTranslForbidden,
    /// 0x08 C_BAD_SUBSTREAMID: SubstreamID beyond the CD table.
    CBadSubstreamId,
    /// 0x09 F_CD_FETCH: external abort fetching a CD.
    FCdFetch,
    /// 0x0A C_BAD_CD: invalid or malformed CD.
    CBadCd,
    /// 0x0B F_WALK_EABT: external abort on a translation table walk.
    FWalkEabt,
    /// 0x10 F_TRANSLATION: translation fault.
    FTranslation,
    /// 0x11 F_ADDR_SIZE: address size fault.
    FAddrSize,
    /// 0x12 F_ACCESS: access flag fault.
    FAccess,
    /// 0x13 F_PERMISSION: permission fault.
    FPermission,
    /// 0x20 F_TLB_CONFLICT: TLB conflict.
    FTlbConflict,
    /// 0x21 F_CFG_CONFLICT: configuration cache conflict.
    FCfgConflict,
    /// 0x24 E_PAGE_REQUEST: speculative page request hint.
    EPageRequest,
    /// 0x25 F_VMS_FETCH: external abort fetching a VMS.
    FVmsFetch,
    /// 0xE0..=0xEF: IMPLEMENTATION DEFINED event (the raw type).
    ImpDef(u8),
    /// Any other (reserved) type.
    Unknown(u8),
}

impl EventType {
    /// The type for an EventType field value.
    pub fn from_raw(raw: u8) -> EventType {
        use EventType::*;
        match raw {
            0x01 => FUut,
            0x02 => CBadStreamId,
            0x03 => FSteFetch,
            0x04 => CBadSte,
            0x05 => FBadAtsTreq,
            0x06 => FStreamDisabled,
            0x07 => FTranslForbidden,
            0x08 => CBadSubstreamId,
            0x09 => FCdFetch,
            0x0A => CBadCd,
            0x0B => FWalkEabt,
            0x10 => FTranslation,
            0x11 => FAddrSize,
            0x12 => FAccess,
            0x13 => FPermission,
            0x20 => FTlbConflict,
            0x21 => FCfgConflict,
            0x24 => EPageRequest,
            0x25 => FVmsFetch,
            0xE0..=0xEF => ImpDef(raw),
            _ => Unknown(raw),
        }
    }

    /// The EventType field value.
    pub fn raw(self) -> u8 {
        use EventType::*;
        match self {
            FUut => 0x01,
            CBadStreamId => 0x02,
            FSteFetch => 0x03,
            CBadSte => 0x04,
            FBadAtsTreq => 0x05,
            FStreamDisabled => 0x06,
            FTranslForbidden => 0x07,
            CBadSubstreamId => 0x08,
            FCdFetch => 0x09,
            CBadCd => 0x0A,
            FWalkEabt => 0x0B,
            FTranslation => 0x10,
            FAddrSize => 0x11,
            FAccess => 0x12,
            FPermission => 0x13,
            FTlbConflict => 0x20,
            FCfgConflict => 0x21,
            EPageRequest => 0x24,
            FVmsFetch => 0x25,
            ImpDef(r) | Unknown(r) => r,
        }
    }

    /// The architecture's name, e.g. `"F_TRANSLATION"`; `"IMPDEF"` or
    /// `"UNKNOWN"` for the others.
    pub fn name(self) -> &'static str {
        use EventType::*;
        match self {
            FUut => "F_UUT",
            CBadStreamId => "C_BAD_STREAMID",
            FSteFetch => "F_STE_FETCH",
            CBadSte => "C_BAD_STE",
            FBadAtsTreq => "F_BAD_ATS_TREQ",
            FStreamDisabled => "F_STREAM_DISABLED",
            FTranslForbidden => "F_TRANSL_FORBIDDEN",
            CBadSubstreamId => "C_BAD_SUBSTREAMID",
            FCdFetch => "F_CD_FETCH",
            CBadCd => "C_BAD_CD",
            FWalkEabt => "F_WALK_EABT",
            FTranslation => "F_TRANSLATION",
            FAddrSize => "F_ADDR_SIZE",
            FAccess => "F_ACCESS",
            FPermission => "F_PERMISSION",
            FTlbConflict => "F_TLB_CONFLICT",
            FCfgConflict => "F_CFG_CONFLICT",
            EPageRequest => "E_PAGE_REQUEST",
            FVmsFetch => "F_VMS_FETCH",
            ImpDef(_) => "IMPDEF",
            Unknown(_) => "UNKNOWN",
        }
    }

    /// Translation-class faults (0x10..=0x13), which carry the full fault
    /// information including the IPA of stage-2 faults.
    pub fn is_translation_fault(self) -> bool {
        matches!(
            self,
            EventType::FTranslation
                | EventType::FAddrSize
                | EventType::FAccess
                | EventType::FPermission
        )
    }

    fn has_input_addr(self) -> bool {
        use EventType::*;
        self.is_translation_fault()
            || matches!(
                self,
                FUut | FBadAtsTreq | FTranslForbidden | FWalkEabt | FTlbConflict | EPageRequest
            )
    }

    fn has_fetch_addr(self) -> bool {
        matches!(
            self,
            EventType::FSteFetch
                | EventType::FCdFetch
                | EventType::FWalkEabt
                | EventType::FVmsFetch
        )
    }

    fn has_access_info(self) -> bool {
        use EventType::*;
        self.is_translation_fault()
            || matches!(
                self,
                FUut | FBadAtsTreq | FTranslForbidden | FWalkEabt | EPageRequest
            )
    }

    fn has_class(self) -> bool {
        self.is_translation_fault() || self == EventType::FWalkEabt
    }
}

/// What the SMMU was accessing when a fault arose (CLASS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultClass {
    /// 0: a CD fetch (stage 2 of a nested CD fetch).
    Cd,
    /// 1: a translation table walk (stage 2 of a nested stage-1 walk).
    Tt,
    /// 2: the input address of the transaction.
    In,
    /// 3: reserved.
    Reserved,
}

impl FaultClass {
    fn name(self) -> &'static str {
        match self {
            FaultClass::Cd => "CD",
            FaultClass::Tt => "TT",
            FaultClass::In => "IN",
            FaultClass::Reserved => "RES",
        }
    }
}

/// A decoded event record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The event type.
    pub kind: EventType,
    /// StreamID (dword 0 \[63:32\]).
    pub sid: u32,
    /// SubstreamID, when SSV = 1.
    pub ssid: Option<u32>,
    /// The transaction's input address (dword 2), for types that carry one.
    pub input_addr: Option<u64>,
    /// IPA\[51:12\] (dword 3) of a stage-2 translation-class fault.
    pub ipa: Option<u64>,
    /// FetchAddr\[51:3\] (dword 3) of a fetch fault or a walk external abort.
    pub fetch_addr: Option<u64>,
    /// RnW: true = read (false for types without access information).
    pub rnw: bool,
    /// PnU: privileged access.
    pub pnu: bool,
    /// InD: instruction fetch.
    pub ind: bool,
    /// CLASS, for translation-class faults and F_WALK_EABT.
    pub class: Option<FaultClass>,
    /// S2: the fault arose at stage 2.
    pub stage2: bool,
    /// Stall: the transaction is stalled.
    pub stall: bool,
    /// STAG, when `stall` (0 otherwise).
    pub stag: u16,
    /// The record as read.
    pub raw: [u64; 4],
}

impl Event {
    /// Decodes a record. Accepts every bit pattern; fields are filled in
    /// only for the types that define them.
    pub fn decode(raw: [u64; 4]) -> Event {
        let d0 = LocalRegisterCopy::<u64, EVT_0::Register>::new(raw[0]);
        let d1 = LocalRegisterCopy::<u64, EVT_1::Register>::new(raw[1]);
        let d2 = LocalRegisterCopy::<u64, EVT_2::Register>::new(raw[2]);
        let d3 = LocalRegisterCopy::<u64, EVT_3::Register>::new(raw[3]);

        let kind = EventType::from_raw(d0.read(EVT_0::TYPE) as u8);
        let known = !matches!(kind, EventType::ImpDef(_) | EventType::Unknown(_));
        let sid = d0.read(EVT_0::SID) as u32;
        let ssid = (known && d0.is_set(EVT_0::SSV)).then(|| d0.read(EVT_0::SSID) as u32);
        let access = kind.has_access_info();
        let has_class = kind.has_class();
        let stage2 = has_class && d1.is_set(EVT_1::S2);
        let class = has_class.then(|| match d1.read_as_enum(EVT_1::CLASS) {
            Some(EVT_1::CLASS::Value::Cd) => FaultClass::Cd,
            Some(EVT_1::CLASS::Value::Tt) => FaultClass::Tt,
            Some(EVT_1::CLASS::Value::In) => FaultClass::In,
            None => FaultClass::Reserved,
        });
        let stall = has_class && d1.is_set(EVT_1::STALL);

        Event {
            kind,
            sid,
            ssid,
            input_addr: kind.has_input_addr().then(|| d2.read(EVT_2::INPUT_ADDR)),
            ipa: (kind.is_translation_fault() && stage2).then(|| d3.read(EVT_3::IPA) << IPA_SHIFT),
            fetch_addr: kind
                .has_fetch_addr()
                .then(|| d3.read(EVT_3::FETCH_ADDR) << FETCH_SHIFT),
            rnw: access && d1.is_set(EVT_1::RNW),
            pnu: access && d1.is_set(EVT_1::PNU),
            ind: access && d1.is_set(EVT_1::IND),
            class,
            stage2,
            stall,
            stag: if stall {
                d1.read(EVT_1::STAG) as u16
            } else {
                0
            },
            raw,
        }
    }
}

/// Hex with `_` between groups of four digits and at least eight digits,
/// e.g. `0x0008_0000`.
struct Grouped(u64);

impl fmt::Display for Grouped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = (64 - self.0.leading_zeros()).div_ceil(4).max(8);
        let groups = digits.div_ceil(4);
        f.write_str("0x")?;
        for g in (0..groups).rev() {
            let part = (self.0 >> (16 * g)) & 0xFFFF;
            write!(f, "{part:04x}")?;
            if g != 0 {
                f.write_str("_")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Event {
    /// One line, e.g.
    /// `F_TRANSLATION sid=0x0010 addr=0x0008_0000 ipa=0x0008_0000 write stage2 class=IN`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            EventType::ImpDef(t) | EventType::Unknown(t) => {
                write!(f, "{}({t:#04x})", self.kind.name())?
            }
            k => f.write_str(k.name())?,
        }
        write!(f, " sid={:#06x}", self.sid)?;
        if let Some(ssid) = self.ssid {
            write!(f, " ssid={ssid:#x}")?;
        }
        if let Some(a) = self.input_addr {
            write!(f, " addr={}", Grouped(a))?;
        }
        if let Some(a) = self.ipa {
            write!(f, " ipa={}", Grouped(a))?;
        }
        if let Some(a) = self.fetch_addr {
            write!(f, " fetch={}", Grouped(a))?;
        }
        if self.kind.has_access_info() {
            f.write_str(if self.rnw { " read" } else { " write" })?;
            if self.pnu {
                f.write_str(" priv")?;
            }
            if self.ind {
                f.write_str(" insn")?;
            }
        }
        if self.stage2 {
            f.write_str(" stage2")?;
        }
        if let Some(c) = self.class {
            write!(f, " class={}", c.name())?;
        }
        if self.stall {
            write!(f, " stall stag={:#06x}", self.stag)?;
        }
        if matches!(self.kind, EventType::ImpDef(_) | EventType::Unknown(_)) {
            write!(
                f,
                " raw=[{:#x}, {:#x}, {:#x}, {:#x}]",
                self.raw[0], self.raw[1], self.raw[2], self.raw[3]
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::string::ToString;

    #[test]
    fn type_codes() {
        for raw in 0..=255u8 {
            assert_eq!(EventType::from_raw(raw).raw(), raw);
        }
        assert_eq!(EventType::from_raw(0x10), EventType::FTranslation);
        assert_eq!(EventType::from_raw(0x25), EventType::FVmsFetch);
        assert_eq!(EventType::from_raw(0xE7), EventType::ImpDef(0xE7));
        assert_eq!(EventType::from_raw(0x0C), EventType::Unknown(0x0C));
        assert_eq!(EventType::from_raw(0x00), EventType::Unknown(0x00));
    }

    #[test]
    fn stage2_translation_fault() {
        // dword0: type 0x10, SID 0x10 at [63:32].
        // dword1: RnW [35] = 0 (write), S2 [39] = 1, CLASS [41:40] = 2 (IN).
        // dword2: input address. dword3: IPA [51:12].
        let raw = [
            0x0000_0010_0000_0010,
            (1 << 39) | (2 << 40),
            0x8_0000,
            0x8_0000,
        ];
        let e = Event::decode(raw);
        assert_eq!(
            e,
            Event {
                kind: EventType::FTranslation,
                sid: 0x10,
                ssid: None,
                input_addr: Some(0x8_0000),
                ipa: Some(0x8_0000),
                fetch_addr: None,
                rnw: false,
                pnu: false,
                ind: false,
                class: Some(FaultClass::In),
                stage2: true,
                stall: false,
                stag: 0,
                raw,
            }
        );
        assert_eq!(
            e.to_string(),
            "F_TRANSLATION sid=0x0010 addr=0x0008_0000 ipa=0x0008_0000 write stage2 class=IN"
        );
    }

    #[test]
    fn stage1_permission_fault_with_substream_and_stall() {
        // SSV [11], SSID [31:12] = 0x12345; STAG = 0xBEEF, Stall [31],
        // PnU [33], InD [34], RnW [35] = read, CLASS = TT (1), S2 = 0.
        let raw = [
            0x0000_0100_1234_5813,
            0xBEEF | (1 << 31) | (1 << 33) | (1 << 34) | (1 << 35) | (1 << 40),
            0xFFFF_0000_DEAD_B000,
            0x0000_0000_0012_3000, // IPA field: ignored at stage 1
        ];
        let e = Event::decode(raw);
        assert_eq!(e.kind, EventType::FPermission);
        assert_eq!(e.sid, 0x100);
        assert_eq!(e.ssid, Some(0x12345));
        assert_eq!(e.input_addr, Some(0xFFFF_0000_DEAD_B000));
        assert_eq!(e.ipa, None);
        assert!(e.rnw && e.pnu && e.ind && !e.stage2);
        assert_eq!(e.class, Some(FaultClass::Tt));
        assert!(e.stall);
        assert_eq!(e.stag, 0xBEEF);
        assert_eq!(
            e.to_string(),
            "F_PERMISSION sid=0x0100 ssid=0x12345 addr=0xffff_0000_dead_b000 read priv insn \
             class=TT stall stag=0xbeef"
        );
    }

    #[test]
    fn fetch_faults_and_walk_abort() {
        // F_STE_FETCH: FetchAddr [51:3] in dword 3; bits outside are ignored.
        let e = Event::decode([0x0000_0002_0000_0003, 0, 0x1234, 0xFFF0_0000_4000_0088]);
        assert_eq!(e.kind, EventType::FSteFetch);
        assert_eq!(e.fetch_addr, Some(0x0000_0000_4000_0088));
        assert_eq!(e.input_addr, None);
        assert_eq!(e.to_string(), "F_STE_FETCH sid=0x0002 fetch=0x4000_0088");

        let e = Event::decode([0x09, 0, 0, 0x4000_0007]);
        assert_eq!(e.fetch_addr, Some(0x4000_0000));

        // F_WALK_EABT: input address, S2, CLASS = TT, and a fetch address.
        let e = Event::decode([
            0x0000_0005_0000_000B,
            (1 << 39) | (1 << 40) | (1 << 35),
            0x1000,
            0x8_0000_0010,
        ]);
        assert_eq!(e.kind, EventType::FWalkEabt);
        assert_eq!(e.input_addr, Some(0x1000));
        assert_eq!(e.fetch_addr, Some(0x8_0000_0010));
        assert_eq!(e.ipa, None);
        assert!(e.stage2 && e.rnw);
        assert_eq!(e.class, Some(FaultClass::Tt));
    }

    #[test]
    fn config_errors_carry_only_ids() {
        // C_BAD_STREAMID: SID only; dword 1..3 noise is ignored.
        let e = Event::decode([0xFFFF_FFFF_0000_0002, u64::MAX, u64::MAX, u64::MAX]);
        assert_eq!(e.kind, EventType::CBadStreamId);
        assert_eq!(e.sid, u32::MAX);
        assert_eq!(
            (e.input_addr, e.ipa, e.fetch_addr, e.class),
            (None, None, None, None)
        );
        assert!(!e.rnw && !e.stall && !e.stage2);
        assert_eq!(e.to_string(), "C_BAD_STREAMID sid=0xffffffff");

        let e = Event::decode([0x0000_0003_0000_0004, 0, 0, 0]);
        assert_eq!(e.to_string(), "C_BAD_STE sid=0x0003");
        let e = Event::decode([0x0000_0003_0000_080A | (7 << 12), 0, 0, 0]);
        assert_eq!(e.kind, EventType::CBadCd);
        assert_eq!(e.ssid, Some(7));
    }

    #[test]
    fn unknown_keeps_raw() {
        let raw = [0x0000_0001_0000_0042, 1, 2, 3];
        let e = Event::decode(raw);
        assert_eq!(e.kind, EventType::Unknown(0x42));
        assert_eq!(e.raw, raw);
        assert_eq!(e.sid, 1);
        assert_eq!(
            e.to_string(),
            "UNKNOWN(0x42) sid=0x0001 raw=[0x100000042, 0x1, 0x2, 0x3]"
        );
        let e = Event::decode([0xE3, 0, 0, 0]);
        assert_eq!(e.kind, EventType::ImpDef(0xE3));
        assert!(e.to_string().starts_with("IMPDEF(0xe3) sid=0x0000"));
    }

    #[test]
    fn grouped_hex() {
        assert_eq!(Grouped(0).to_string(), "0x0000_0000");
        assert_eq!(Grouped(0x1_0000_0000).to_string(), "0x0001_0000_0000");
        assert_eq!(Grouped(u64::MAX).to_string(), "0xffff_ffff_ffff_ffff");
    }

    proptest! {
        #[test]
        fn decode_never_panics(raw: [u64; 4]) {
            let e = Event::decode(raw);
            prop_assert_eq!(e.raw, raw);
            prop_assert_eq!(u64::from(e.kind.raw()), raw[0] & 0xFF);
            prop_assert_eq!(u64::from(e.sid), raw[0] >> 32);
            let _ = e.to_string();
        }
    }
}
