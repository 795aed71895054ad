//! Command queue entries (16 bytes, two little-endian dwords) and TLB
//! invalidation planners.
//!
//! [`Command`] covers the commands this driver issues. [`Command::encode`]
//! never fails: it masks every field to its width. Use the checking
//! constructors ([`Command::tlbi_s2_ipa`], [`Command::tlbi_nh_va`], ...) or
//! [`Command::validate`] to reject values the encoding cannot hold (an address
//! that is not 4 KiB aligned, a SubstreamID wider than 20 bits, ...) instead of
//! silently truncating them.
//!
//! [`Command::decode`] is canonical: it returns a typed command only when
//! re-encoding it gives back exactly the same words (so no reserved bit or
//! unmodelled field is set); anything else is [`Command::Raw`]. Hence
//! `decode(w).encode() == w` for every `w`, and `decode(c.encode()) == c` for
//! every valid `c`.
//!
//! Range invalidation (SMMUv3.2 RIL, IDR3.RIL): a TLBI with a non-zero TG
//! invalidates `(NUM + 1) * 2^SCALE` pages of the TG granule starting at the
//! command's address (NUM and SCALE are 5-bit fields). This is *not* the CPU's
//! `TLBI RVA` formula `(NUM + 1) * 2^(5 * SCALE + 1)`.

use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

use crate::error::{Error, Field, Invalid, Result};

register_bitfields! [u64,
    /// Dword 0 of the CFGI_* and PREFETCH_CONFIG commands.
    pub CFGI_0 [
        OPCODE OFFSET(0) NUMBITS(8) [],
        /// Secure stream: always 0 (non-secure) in this driver.
        SSEC OFFSET(10) NUMBITS(1) [],
        SSID OFFSET(12) NUMBITS(20) [],
        SID OFFSET(32) NUMBITS(32) []
    ],
    /// Dword 1 of the CFGI_* commands.
    pub CFGI_1 [
        /// CFGI_STE, CFGI_CD: only the leaf (the STE or CD itself, not
        /// tables it points to) needs invalidating.
        LEAF OFFSET(0) NUMBITS(1) [],
        /// CFGI_STE_RANGE: invalidate 2^(RANGE + 1) StreamIDs; 31 = all.
        RANGE OFFSET(0) NUMBITS(5) []
    ],
    /// Dword 0 of the TLBI_* commands.
    pub TLBI_0 [
        OPCODE OFFSET(0) NUMBITS(8) [],
        NUM OFFSET(12) NUMBITS(5) [],
        SCALE OFFSET(20) NUMBITS(5) [],
        VMID OFFSET(32) NUMBITS(16) [],
        ASID OFFSET(48) NUMBITS(16) []
    ],
    /// Dword 1 of the TLBI_* commands.
    pub TLBI_1 [
        LEAF OFFSET(0) NUMBITS(1) [],
        /// Level hint of the entries to invalidate (0: none).
        TTL OFFSET(8) NUMBITS(2) [],
        /// Granule of a range invalidation: 0 = not a range, 1 = 4K,
        /// 2 = 16K, 3 = 64K.
        TG OFFSET(10) NUMBITS(2) [None = 0, Size4K = 1, Size16K = 2, Size64K = 3],
        /// Address\[63:12\] (TLBI_NH_VA, TLBI_NH_VAA).
        VA OFFSET(12) NUMBITS(52) [],
        /// Address\[51:12\] (TLBI_S2_IPA).
        IPA OFFSET(12) NUMBITS(40) []
    ],
    /// Dword 0 of CMD_RESUME (IHI 0070 §4.7.1; Linux CMDQ_RESUME_0_*) and
    /// CMD_STALL_TERM (§4.7.2: Opcode, SSec, StreamID only).
    pub RESUME_0 [
        OPCODE OFFSET(0) NUMBITS(8) [],
        /// Secure stream: always 0 (non-secure) in this driver.
        SSEC OFFSET(10) NUMBITS(1) [],
        /// Action: 1 = retry, 0 = terminate (as Ab says). Linux's
        /// RESP field is \[13:12\] = {Ab, Ac}: TERM 0, RETRY 1, ABORT 2.
        AC OFFSET(12) NUMBITS(1) [],
        /// Abort: with Ac = 0, 1 = terminate with an abort, 0 = complete
        /// with RAZ/WI. IGNORED with Ac = 1 (this driver encodes 0).
        AB OFFSET(13) NUMBITS(1) [],
        SID OFFSET(32) NUMBITS(32) []
    ],
    /// Dword 1 of CMD_RESUME.
    pub RESUME_1 [
        /// The stall tag of the event record being answered.
        STAG OFFSET(0) NUMBITS(16) []
    ],
    /// Dword 0 of CMD_SYNC.
    pub SYNC_0 [
        OPCODE OFFSET(0) NUMBITS(8) [],
        /// Completion signal.
        CS OFFSET(12) NUMBITS(2) [None = 0, Irq = 1, Sev = 2],
        /// Shareability of the completion MSI write.
        MSH OFFSET(22) NUMBITS(2) [NonShareable = 0, Outer = 2, Inner = 3],
        /// Memory attributes of the completion MSI write.
        MSIATTR OFFSET(24) NUMBITS(4) [],
        MSIDATA OFFSET(32) NUMBITS(32) []
    ],
    /// Dword 1 of CMD_SYNC.
    pub SYNC_1 [
        /// MSIAddress\[51:2\].
        MSIADDR OFFSET(2) NUMBITS(50) []
    ]
];

/// Command opcodes (the low byte of dword 0).
pub mod opcode {
    /// CMD_PREFETCH_CONFIG.
    pub const PREFETCH_CONFIG: u8 = 0x01;
    /// CMD_CFGI_STE.
    pub const CFGI_STE: u8 = 0x03;
    /// CMD_CFGI_STE_RANGE.
    pub const CFGI_STE_RANGE: u8 = 0x04;
    /// CMD_CFGI_CD.
    pub const CFGI_CD: u8 = 0x05;
    /// CMD_CFGI_CD_ALL.
    pub const CFGI_CD_ALL: u8 = 0x06;
    /// CMD_TLBI_NH_ALL.
    pub const TLBI_NH_ALL: u8 = 0x10;
    /// CMD_TLBI_NH_ASID.
    pub const TLBI_NH_ASID: u8 = 0x11;
    /// CMD_TLBI_NH_VA.
    pub const TLBI_NH_VA: u8 = 0x12;
    /// CMD_TLBI_NH_VAA.
    pub const TLBI_NH_VAA: u8 = 0x13;
    /// CMD_TLBI_EL2_ALL.
    pub const TLBI_EL2_ALL: u8 = 0x20;
    /// CMD_TLBI_S12_VMALL.
    pub const TLBI_S12_VMALL: u8 = 0x28;
    /// CMD_TLBI_S2_IPA.
    pub const TLBI_S2_IPA: u8 = 0x2A;
    /// CMD_TLBI_NSNH_ALL.
    pub const TLBI_NSNH_ALL: u8 = 0x30;
    /// CMD_RESUME.
    pub const RESUME: u8 = 0x44;
    /// CMD_STALL_TERM.
    pub const STALL_TERM: u8 = 0x45;
    /// CMD_SYNC.
    pub const SYNC: u8 = 0x46;
}

/// What CMD_RESUME does with a stalled transaction (its Ac and Ab fields,
/// IHI 0070 §4.7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeAction {
    /// Ac = 1: retry the transaction as though it had just arrived (it may
    /// fault and stall again). Ab = 0 (IGNORED).
    Retry,
    /// Ac = 0, Ab = 1: terminate it with an abort reported to the device
    /// (Linux's CMDQ_RESUME_0_RESP_ABORT).
    Abort,
    /// Ac = 0, Ab = 0: terminate it, completing with RAZ/WI semantics
    /// (an abort anyway when IDR0.TERM_MODEL = 1; Linux's
    /// CMDQ_RESUME_0_RESP_TERM). Never issued by the driver itself.
    RazWi,
}

/// Address bits below the VA/IPA fields of a TLBI (Address\[11:0\]).
const ADDR_FIELD_SHIFT: u32 = 12;
/// The IPA field ends at bit 51.
const IPA_LIMIT: u64 = 1 << 52;
/// MSIAddress starts at bit 2.
const MSI_ADDR_SHIFT: u32 = 2;
/// Widest SubstreamID.
const SSID_LIMIT: u32 = 1 << 20;
/// MSIAttr for a completion write to normal memory: Inner/Outer Write-Back
/// cacheable (the SMMU MemAttr encoding 0xF).
const MSIATTR_NORMAL_WB: u64 = 0xF;

/// Completion signal of a CMD_SYNC (CS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncCs {
    /// SIG_NONE: completion is observed by polling CMDQ_CONS.
    None,
    /// SIG_IRQ: raise the sync interrupt, or write the MSI when
    /// `msi_addr != 0` and the SMMU supports MSIs.
    Irq,
    /// SIG_SEV: send a wake-up event.
    Sev,
}

/// Range fields of a TLBI (SMMUv3.2 RIL). The command invalidates
/// `(num + 1) * 2^scale` pages of the `tg` granule from its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlbiRange {
    /// NUM (dword 0 \[16:12\]): 0..=31.
    pub num: u8,
    /// SCALE (dword 0 \[24:20\]): 0..=31.
    pub scale: u8,
    /// TG (dword 1 \[11:10\]): 1 = 4K, 2 = 16K, 3 = 64K (0 would mean "not a
    /// range" and is rejected; use `None` instead).
    pub tg: u8,
    /// TTL (dword 1 \[9:8\]): level hint, 0 = no hint.
    pub ttl: u8,
}

impl TlbiRange {
    /// The TG encoding of a granule given as log2 of its size (12, 14, 16).
    pub const fn tg_for_shift(granule_shift: u32) -> Option<u8> {
        match granule_shift {
            12 => Some(1),
            14 => Some(2),
            16 => Some(3),
            _ => None,
        }
    }

    /// log2 of the granule size selected by `tg`, or `None` for 0.
    pub const fn granule_shift(&self) -> Option<u32> {
        match self.tg {
            1 => Some(12),
            2 => Some(14),
            3 => Some(16),
            _ => None,
        }
    }

    /// Whether these fields are the combination IHI 0070 §4.4.1.1 reserves
    /// for a range command (TG != 0): TTL, NUM and SCALE all 0. The SMMU
    /// refuses such a command with CERROR_ILL; a one-granule range needs a
    /// TTL, or the non-range form (what this driver's planners send), or
    /// one more granule (what Linux does).
    pub const fn is_reserved(&self) -> bool {
        self.tg != 0 && self.ttl == 0 && self.num == 0 && self.scale == 0
    }

    /// Number of granule pages the command covers: `(num + 1) * 2^scale`
    /// (saturating; the fields are masked to 5 bits).
    pub const fn pages(&self) -> u64 {
        let num = (self.num & 0x1F) as u64 + 1;
        num << (self.scale & 0x1F)
    }

    fn validate(&self, addr: u64) -> Result<()> {
        if self.num > 31 || self.scale > 31 || self.ttl > 3 {
            let value = [self.num, self.scale, self.ttl]
                .into_iter()
                .zip([31, 31, 3])
                .find(|&(v, max)| v > max)
                .map_or(0, |(v, _)| v);
            return Err(Error::Invalid(Invalid::Field {
                field: Field::TlbiRange,
                value: u64::from(value),
            }));
        }
        let Some(shift) = self.granule_shift() else {
            return Err(Error::Invalid(Invalid::Field {
                field: Field::TlbiGranule,
                value: u64::from(self.tg),
            }));
        };
        if self.is_reserved() {
            // NUM = SCALE = 0: report the zero NUM.
            return Err(Error::Invalid(Invalid::Field {
                field: Field::TlbiRange,
                value: 0,
            }));
        }
        if self.tg == 2 && self.ttl == 1 {
            // 16K granule, TTL = level 1: reserved unless SMMU_IDR5.DS = 1
            // (level-1 16K blocks need FEAT_LPA2, which this driver does not
            // use); the SMMU treats it as TTL = 0 (IHI 0070 §4.4.1.1), so a
            // one-granule range would be CERROR_ILL. No table of this
            // driver has a 16K leaf at level 1.
            return Err(Error::Invalid(Invalid::Field {
                field: Field::TlbiRange,
                value: 1,
            }));
        }
        // With a level hint, the range starts at a leaf of that level: an
        // address below its alignment makes the invalidated range
        // UNPREDICTABLE (IHI 0070 §4.4.1.1; e.g. 4K granule, TTL = 2: bits
        // [20:12] zero). Level L of granule 2^g maps 2^(g + (3 - L)(g - 3)).
        let level_shift = match self.ttl {
            1..=3 => shift + (3 - u32::from(self.ttl)) * (shift - 3),
            _ => shift,
        };
        let align = 1u64 << level_shift;
        if addr & (align - 1) != 0 {
            return Err(Error::Misaligned { addr, align });
        }
        Ok(())
    }
}

/// A command queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// CMD_PREFETCH_CONFIG (0x01): prefetch the configuration of `sid`.
    PrefetchConfig {
        /// StreamID.
        sid: u32,
    },
    /// CMD_CFGI_STE (0x03): invalidate cached configuration for `sid`.
    CfgiSte {
        /// StreamID.
        sid: u32,
        /// Only the STE itself (not CD tables it points to).
        leaf: bool,
    },
    /// CMD_CFGI_STE_RANGE (0x04): invalidate 2^(range + 1) StreamIDs
    /// starting at `sid` aligned down to that size; `range` 31 = all.
    CfgiSteRange {
        /// StreamID (aligned down by the SMMU).
        sid: u32,
        /// 0..=31.
        range: u8,
    },
    /// CMD_CFGI_CD (0x05): invalidate the CD for (`sid`, `ssid`).
    CfgiCd {
        /// StreamID.
        sid: u32,
        /// SubstreamID (20 bits).
        ssid: u32,
        /// Only the CD itself.
        leaf: bool,
    },
    /// CMD_CFGI_CD_ALL (0x06): invalidate every CD of `sid`.
    CfgiCdAll {
        /// StreamID.
        sid: u32,
    },
    /// CMD_TLBI_NH_ALL (0x10): all stage-1 entries of `vmid`.
    TlbiNhAll {
        /// VMID.
        vmid: u16,
    },
    /// CMD_TLBI_NH_ASID (0x11): stage-1 entries of (`vmid`, `asid`).
    TlbiNhAsid {
        /// VMID.
        vmid: u16,
        /// ASID.
        asid: u16,
    },
    /// CMD_TLBI_NH_VA (0x12): stage-1 entries of `addr` for (`vmid`, `asid`).
    TlbiNhVa {
        /// VMID.
        vmid: u16,
        /// ASID.
        asid: u16,
        /// VA, 4 KiB aligned (bits \[63:12\] are encoded).
        addr: u64,
        /// Only last-level entries.
        leaf: bool,
        /// Range invalidation (needs IDR3.RIL).
        range: Option<TlbiRange>,
    },
    /// CMD_TLBI_NH_VAA (0x13): stage-1 entries of `addr` for any ASID.
    TlbiNhVaa {
        /// VMID.
        vmid: u16,
        /// VA, 4 KiB aligned.
        addr: u64,
        /// Only last-level entries.
        leaf: bool,
        /// Range invalidation (needs IDR3.RIL).
        range: Option<TlbiRange>,
    },
    /// CMD_TLBI_EL2_ALL (0x20): all EL2 stage-1 entries.
    TlbiEl2All,
    /// CMD_TLBI_S12_VMALL (0x28): all stage-1 and stage-2 entries of `vmid`.
    TlbiS12Vmall {
        /// VMID.
        vmid: u16,
    },
    /// CMD_TLBI_S2_IPA (0x2A): stage-2 entries of `addr` for `vmid`.
    TlbiS2Ipa {
        /// VMID.
        vmid: u16,
        /// IPA, 4 KiB aligned, below 2^52.
        addr: u64,
        /// Only last-level entries.
        leaf: bool,
        /// Range invalidation (needs IDR3.RIL).
        range: Option<TlbiRange>,
    },
    /// CMD_TLBI_NSNH_ALL (0x30): all non-secure, non-hypervisor entries.
    TlbiNsnhAll,
    /// CMD_RESUME (0x44): resume the stalled transaction of `sid` whose
    /// event record carried `stag`, as `action` says. Raises CERROR_ILL
    /// where IDR0.STALL_MODEL = 0b01.
    Resume {
        /// StreamID of the stall event record.
        sid: u32,
        /// STAG of the stall event record.
        stag: u16,
        /// Retry or terminate.
        action: ResumeAction,
    },
    /// CMD_STALL_TERM (0x45): mark every stalled transaction of `sid` for
    /// termination (abort). Only after the STE of `sid` aborts new traffic
    /// and that change was invalidated and synchronized (IHI 0070 §4.7.2).
    /// Raises CERROR_ILL where IDR0.STALL_MODEL = 0b01.
    StallTerm {
        /// StreamID.
        sid: u32,
    },
    /// CMD_SYNC (0x46).
    Sync {
        /// Completion signal.
        cs: SyncCs,
        /// MSI address (4-byte aligned, below 2^52), 0 for none. When
        /// non-zero the write is marked inner shareable, write-back.
        msi_addr: u64,
        /// MSI payload.
        msi_data: u32,
    },
    /// Arbitrary words, sent as they are (e.g. an illegal opcode in tests).
    Raw([u64; 2]),
}

fn tlbi_range_fields(
    range: &Option<TlbiRange>,
) -> (
    tock_registers::fields::FieldValue<u64, TLBI_0::Register>,
    tock_registers::fields::FieldValue<u64, TLBI_1::Register>,
) {
    match range {
        None => (TLBI_0::NUM.val(0), TLBI_1::TG::None),
        Some(r) => (
            TLBI_0::NUM.val(u64::from(r.num)) + TLBI_0::SCALE.val(u64::from(r.scale)),
            TLBI_1::TG.val(u64::from(r.tg)) + TLBI_1::TTL.val(u64::from(r.ttl)),
        ),
    }
}

fn cfgi0(op: u8, sid: u32, ssid: u32) -> u64 {
    (CFGI_0::OPCODE.val(u64::from(op))
        + CFGI_0::SID.val(u64::from(sid))
        + CFGI_0::SSID.val(u64::from(ssid)))
    .value
}

fn tlbi(op: u8, vmid: u16, asid: u16, d1: u64, range: &Option<TlbiRange>) -> [u64; 2] {
    let (r0, r1) = tlbi_range_fields(range);
    let d0 = TLBI_0::OPCODE.val(u64::from(op))
        + TLBI_0::VMID.val(u64::from(vmid))
        + TLBI_0::ASID.val(u64::from(asid))
        + r0;
    [d0.value, d1 | r1.value]
}

impl Command {
    /// CMD_CFGI_STE_RANGE with Range = 31: every StreamID.
    pub const fn cfgi_all() -> Command {
        Command::CfgiSteRange { sid: 0, range: 31 }
    }

    /// CMD_SYNC with no completion signal (completion by polling CONS).
    pub const fn sync() -> Command {
        Command::Sync {
            cs: SyncCs::None,
            msi_addr: 0,
            msi_data: 0,
        }
    }

    /// CMD_CFGI_STE for `sid`, leaf (the STE only).
    pub const fn cfgi_ste(sid: u32) -> Command {
        Command::CfgiSte { sid, leaf: true }
    }

    /// A checked CMD_TLBI_S2_IPA: `addr` must be 4 KiB aligned (and aligned
    /// to the range granule if `range` is given) and below 2^52.
    pub fn tlbi_s2_ipa(
        vmid: u16,
        addr: u64,
        leaf: bool,
        range: Option<TlbiRange>,
    ) -> Result<Command> {
        Command::TlbiS2Ipa {
            vmid,
            addr,
            leaf,
            range,
        }
        .checked()
    }

    /// A checked CMD_TLBI_NH_VA: `addr` must be 4 KiB aligned (and aligned to
    /// the range granule if `range` is given).
    pub fn tlbi_nh_va(
        vmid: u16,
        asid: u16,
        addr: u64,
        leaf: bool,
        range: Option<TlbiRange>,
    ) -> Result<Command> {
        Command::TlbiNhVa {
            vmid,
            asid,
            addr,
            leaf,
            range,
        }
        .checked()
    }

    /// A checked CMD_TLBI_NH_VAA.
    pub fn tlbi_nh_vaa(
        vmid: u16,
        addr: u64,
        leaf: bool,
        range: Option<TlbiRange>,
    ) -> Result<Command> {
        Command::TlbiNhVaa {
            vmid,
            addr,
            leaf,
            range,
        }
        .checked()
    }

    /// `self` if [`Command::validate`] accepts it.
    pub fn checked(self) -> Result<Command> {
        self.validate().map(|()| self)
    }

    /// Checks that every field fits its encoding, so that [`Command::encode`]
    /// loses nothing. [`Command::Raw`] is always accepted.
    pub fn validate(&self) -> Result<()> {
        const PAGE: u64 = 1 << ADDR_FIELD_SHIFT;
        let check_va = |addr: u64, range: &Option<TlbiRange>| -> Result<()> {
            if addr & (PAGE - 1) != 0 {
                return Err(Error::Misaligned { addr, align: PAGE });
            }
            match range {
                Some(r) => r.validate(addr),
                None => Ok(()),
            }
        };
        match self {
            Command::CfgiSteRange { range, .. } if *range > 31 => {
                Err(Error::Invalid(Invalid::Field {
                    field: Field::CfgiRange,
                    value: u64::from(*range),
                }))
            }
            Command::CfgiCd { ssid, .. } if *ssid >= SSID_LIMIT => {
                Err(Error::Invalid(Invalid::Field {
                    field: Field::Ssid,
                    value: u64::from(*ssid),
                }))
            }
            Command::TlbiNhVa { addr, range, .. } | Command::TlbiNhVaa { addr, range, .. } => {
                check_va(*addr, range)
            }
            Command::TlbiS2Ipa { addr, range, .. } => {
                if *addr >= IPA_LIMIT {
                    return Err(Error::RangeOverflow {
                        addr: *addr,
                        len: PAGE,
                    });
                }
                check_va(*addr, range)
            }
            Command::Sync { msi_addr, .. } => {
                if msi_addr & 3 != 0 {
                    Err(Error::Misaligned {
                        addr: *msi_addr,
                        align: 4,
                    })
                } else if *msi_addr >= IPA_LIMIT {
                    Err(Error::RangeOverflow {
                        addr: *msi_addr,
                        len: 4,
                    })
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// The opcode (low byte of dword 0).
    pub fn opcode(&self) -> u8 {
        use opcode::*;
        match self {
            Command::PrefetchConfig { .. } => PREFETCH_CONFIG,
            Command::CfgiSte { .. } => CFGI_STE,
            Command::CfgiSteRange { .. } => CFGI_STE_RANGE,
            Command::CfgiCd { .. } => CFGI_CD,
            Command::CfgiCdAll { .. } => CFGI_CD_ALL,
            Command::TlbiNhAll { .. } => TLBI_NH_ALL,
            Command::TlbiNhAsid { .. } => TLBI_NH_ASID,
            Command::TlbiNhVa { .. } => TLBI_NH_VA,
            Command::TlbiNhVaa { .. } => TLBI_NH_VAA,
            Command::TlbiEl2All => TLBI_EL2_ALL,
            Command::TlbiS12Vmall { .. } => TLBI_S12_VMALL,
            Command::TlbiS2Ipa { .. } => TLBI_S2_IPA,
            Command::TlbiNsnhAll => TLBI_NSNH_ALL,
            Command::Resume { .. } => RESUME,
            Command::StallTerm { .. } => STALL_TERM,
            Command::Sync { .. } => SYNC,
            Command::Raw(w) => {
                LocalRegisterCopy::<u64, CFGI_0::Register>::new(w[0]).read(CFGI_0::OPCODE) as u8
            }
        }
    }

    /// The two dwords of the command. Fields are masked to their widths;
    /// see [`Command::validate`].
    pub fn encode(&self) -> [u64; 2] {
        let op = self.opcode();
        match *self {
            Command::PrefetchConfig { sid } | Command::CfgiCdAll { sid } => [cfgi0(op, sid, 0), 0],
            Command::CfgiSte { sid, leaf } => {
                [cfgi0(op, sid, 0), CFGI_1::LEAF.val(u64::from(leaf)).value]
            }
            Command::CfgiSteRange { sid, range } => {
                [cfgi0(op, sid, 0), CFGI_1::RANGE.val(u64::from(range)).value]
            }
            Command::CfgiCd { sid, ssid, leaf } => [
                cfgi0(op, sid, ssid),
                CFGI_1::LEAF.val(u64::from(leaf)).value,
            ],
            Command::TlbiNhAll { vmid } | Command::TlbiS12Vmall { vmid } => {
                tlbi(op, vmid, 0, 0, &None)
            }
            Command::TlbiNhAsid { vmid, asid } => tlbi(op, vmid, asid, 0, &None),
            Command::TlbiNhVa {
                vmid,
                asid,
                addr,
                leaf,
                range,
            } => {
                let d1 =
                    TLBI_1::VA.val(addr >> ADDR_FIELD_SHIFT) + TLBI_1::LEAF.val(u64::from(leaf));
                tlbi(op, vmid, asid, d1.value, &range)
            }
            Command::TlbiNhVaa {
                vmid,
                addr,
                leaf,
                range,
            } => {
                let d1 =
                    TLBI_1::VA.val(addr >> ADDR_FIELD_SHIFT) + TLBI_1::LEAF.val(u64::from(leaf));
                tlbi(op, vmid, 0, d1.value, &range)
            }
            Command::TlbiS2Ipa {
                vmid,
                addr,
                leaf,
                range,
            } => {
                let d1 =
                    TLBI_1::IPA.val(addr >> ADDR_FIELD_SHIFT) + TLBI_1::LEAF.val(u64::from(leaf));
                tlbi(op, vmid, 0, d1.value, &range)
            }
            Command::TlbiEl2All | Command::TlbiNsnhAll => tlbi(op, 0, 0, 0, &None),
            Command::Resume { sid, stag, action } => {
                let (ac, ab) = match action {
                    ResumeAction::Retry => (1, 0),
                    ResumeAction::Abort => (0, 1),
                    ResumeAction::RazWi => (0, 0),
                };
                let d0 = RESUME_0::OPCODE.val(u64::from(op))
                    + RESUME_0::AC.val(ac)
                    + RESUME_0::AB.val(ab)
                    + RESUME_0::SID.val(u64::from(sid));
                [d0.value, RESUME_1::STAG.val(u64::from(stag)).value]
            }
            Command::StallTerm { sid } => [
                (RESUME_0::OPCODE.val(u64::from(op)) + RESUME_0::SID.val(u64::from(sid))).value,
                0,
            ],
            Command::Sync {
                cs,
                msi_addr,
                msi_data,
            } => {
                let cs = match cs {
                    SyncCs::None => SYNC_0::CS::None,
                    SyncCs::Irq => SYNC_0::CS::Irq,
                    SyncCs::Sev => SYNC_0::CS::Sev,
                };
                let mut d0 = SYNC_0::OPCODE.val(u64::from(op))
                    + cs
                    + SYNC_0::MSIDATA.val(u64::from(msi_data));
                if msi_addr != 0 {
                    d0 += SYNC_0::MSH::Inner + SYNC_0::MSIATTR.val(MSIATTR_NORMAL_WB);
                }
                let d1 = SYNC_1::MSIADDR.val(msi_addr >> MSI_ADDR_SHIFT);
                [d0.value, d1.value]
            }
            Command::Raw(w) => w,
        }
    }

    /// Decodes two dwords. Returns a typed command only when it re-encodes to
    /// exactly `words`; anything else (unknown opcode, reserved bits set,
    /// fields this type does not model) is [`Command::Raw`].
    pub fn decode(words: [u64; 2]) -> Command {
        let typed = Self::decode_fields(words);
        if typed.encode() == words {
            typed
        } else {
            Command::Raw(words)
        }
    }

    fn decode_fields(w: [u64; 2]) -> Command {
        use opcode::*;
        let c0 = LocalRegisterCopy::<u64, CFGI_0::Register>::new(w[0]);
        let c1 = LocalRegisterCopy::<u64, CFGI_1::Register>::new(w[1]);
        let t0 = LocalRegisterCopy::<u64, TLBI_0::Register>::new(w[0]);
        let t1 = LocalRegisterCopy::<u64, TLBI_1::Register>::new(w[1]);
        let r0 = LocalRegisterCopy::<u64, RESUME_0::Register>::new(w[0]);
        let s0 = LocalRegisterCopy::<u64, SYNC_0::Register>::new(w[0]);
        let s1 = LocalRegisterCopy::<u64, SYNC_1::Register>::new(w[1]);

        let sid = c0.read(CFGI_0::SID) as u32;
        let vmid = t0.read(TLBI_0::VMID) as u16;
        let asid = t0.read(TLBI_0::ASID) as u16;
        let leaf = t1.is_set(TLBI_1::LEAF);
        let range = match t1.read(TLBI_1::TG) {
            0 => None,
            tg => Some(TlbiRange {
                num: t0.read(TLBI_0::NUM) as u8,
                scale: t0.read(TLBI_0::SCALE) as u8,
                tg: tg as u8,
                ttl: t1.read(TLBI_1::TTL) as u8,
            }),
        };
        let va = t1.read(TLBI_1::VA) << ADDR_FIELD_SHIFT;
        let ipa = t1.read(TLBI_1::IPA) << ADDR_FIELD_SHIFT;

        match c0.read(CFGI_0::OPCODE) as u8 {
            PREFETCH_CONFIG => Command::PrefetchConfig { sid },
            CFGI_STE => Command::CfgiSte {
                sid,
                leaf: c1.is_set(CFGI_1::LEAF),
            },
            CFGI_STE_RANGE => Command::CfgiSteRange {
                sid,
                range: c1.read(CFGI_1::RANGE) as u8,
            },
            CFGI_CD => Command::CfgiCd {
                sid,
                ssid: c0.read(CFGI_0::SSID) as u32,
                leaf: c1.is_set(CFGI_1::LEAF),
            },
            CFGI_CD_ALL => Command::CfgiCdAll { sid },
            TLBI_NH_ALL => Command::TlbiNhAll { vmid },
            TLBI_NH_ASID => Command::TlbiNhAsid { vmid, asid },
            TLBI_NH_VA => Command::TlbiNhVa {
                vmid,
                asid,
                addr: va,
                leaf,
                range,
            },
            TLBI_NH_VAA => Command::TlbiNhVaa {
                vmid,
                addr: va,
                leaf,
                range,
            },
            TLBI_EL2_ALL => Command::TlbiEl2All,
            TLBI_S12_VMALL => Command::TlbiS12Vmall { vmid },
            TLBI_S2_IPA => Command::TlbiS2Ipa {
                vmid,
                addr: ipa,
                leaf,
                range,
            },
            TLBI_NSNH_ALL => Command::TlbiNsnhAll,
            RESUME => Command::Resume {
                sid: r0.read(RESUME_0::SID) as u32,
                stag: w[1] as u16,
                // Ac = 1 with Ab = 1 is not canonical (Ab IGNORED): it
                // re-encodes differently and decodes as Raw.
                action: match (r0.is_set(RESUME_0::AC), r0.is_set(RESUME_0::AB)) {
                    (true, _) => ResumeAction::Retry,
                    (false, true) => ResumeAction::Abort,
                    (false, false) => ResumeAction::RazWi,
                },
            },
            STALL_TERM => Command::StallTerm {
                sid: r0.read(RESUME_0::SID) as u32,
            },
            SYNC => {
                let cs = match s0.read_as_enum(SYNC_0::CS) {
                    Some(SYNC_0::CS::Value::None) => SyncCs::None,
                    Some(SYNC_0::CS::Value::Irq) => SyncCs::Irq,
                    Some(SYNC_0::CS::Value::Sev) => SyncCs::Sev,
                    None => return Command::Raw(w),
                };
                Command::Sync {
                    cs,
                    msi_addr: s1.read(SYNC_1::MSIADDR) << MSI_ADDR_SHIFT,
                    msi_data: s0.read(SYNC_0::MSIDATA) as u32,
                }
            }
            _ => Command::Raw(w),
        }
    }
}

mod plan;

pub use plan::{
    InvalidationHints, InvalidationPlan, nh_invalidation, nh_invalidation_hinted, s2_invalidation,
    s2_invalidation_hinted,
};
pub(crate) use plan::{RangePlan, nh_range_plan, s2_range_plan};

#[cfg(test)]
mod tests;
