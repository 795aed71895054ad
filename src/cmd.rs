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

use alloc::vec::Vec;

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
    /// CMD_SYNC.
    pub const SYNC: u8 = 0x46;
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
        let align = 1u64 << shift;
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

/// The commands that invalidate a range of translations: either precise
/// per-page or per-range commands, or one broader command when precise
/// invalidation would take more than the caller's budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidationPlan {
    /// Precise commands, in ascending address order (empty for a zero
    /// length).
    Precise(Vec<Command>),
    /// One broader command (TLBI_S12_VMALL for stage 2, TLBI_NH_ASID for
    /// stage 1) replacing more than `max_commands` precise ones, or used when
    /// the request cannot be expressed precisely.
    Fallback(Command),
}

impl InvalidationPlan {
    /// The commands to issue (follow them with a CMD_SYNC).
    pub fn commands(&self) -> &[Command] {
        match self {
            InvalidationPlan::Precise(v) => v,
            InvalidationPlan::Fallback(c) => core::slice::from_ref(c),
        }
    }

    /// Whether the plan fell back to a broader invalidation.
    pub fn is_fallback(&self) -> bool {
        matches!(self, InvalidationPlan::Fallback(_))
    }
}

/// Counts the range commands covering `pages` consecutive pages with as
/// few commands as possible: each covers `(NUM + 1) * 2^SCALE` pages, so
/// `pages` is cut into 5-bit windows of its binary representation, from the
/// lowest set bit upwards. `None` past `max` commands, or when a piece would
/// need SCALE > 31.
fn range_piece_count(mut pages: u64, max: usize) -> Option<usize> {
    let mut n = 0;
    while pages != 0 {
        if n >= max {
            return None;
        }
        let scale = pages.trailing_zeros();
        if scale > 31 {
            // SCALE is a 5-bit field: 2^32 pages and up (8 TiB with 4K
            // pages) cannot be expressed. Encoding it would truncate SCALE
            // and invalidate almost nothing; let the caller fall back.
            return None;
        }
        let num = (pages >> scale) & 0x1F;
        pages -= num << scale;
        n += 1;
    }
    Some(n)
}

/// Piece `i` of [`range_piece_count`]'s cut of `pages`: the number of
/// pages before it, and its range (TTL 0). `None` past the last piece.
fn range_piece(mut pages: u64, tg: u8, i: usize) -> Option<(u64, TlbiRange)> {
    let mut before = 0u64;
    for _ in 0..i {
        if pages == 0 {
            return None;
        }
        let scale = pages.trailing_zeros();
        let count = ((pages >> scale) & 0x1F) << scale;
        pages -= count;
        before += count;
    }
    if pages == 0 {
        return None;
    }
    let scale = pages.trailing_zeros();
    let num = (pages >> scale) & 0x1F;
    Some((
        before,
        TlbiRange {
            num: (num - 1) as u8,
            scale: scale as u8,
            tg,
            ttl: 0,
        },
    ))
}

/// How a planner may cut a range.
struct Shape {
    granule_shift: u32,
    ril: bool,
    max_commands: usize,
    /// Exclusive upper bound of the address space, if below 2^64.
    limit: Option<u64>,
}

/// The precise command a plan is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// TLBI_S2_IPA.
    S2 { vmid: u16 },
    /// TLBI_NH_VA.
    Nh { vmid: u16, asid: u16 },
}

/// An [`InvalidationPlan`] that produces its commands by index instead of
/// holding them: planning and issuing it allocate nothing, so a change
/// that already happened can always be invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RangePlan {
    /// The broader command; the whole plan when `precise` is `None`.
    fallback: Command,
    precise: Option<Precise>,
}

/// The precise commands of a [`RangePlan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Precise {
    /// Address of the first granule.
    base: u64,
    granule_shift: u32,
    /// Granules covered.
    pages: u64,
    /// Commands.
    count: usize,
    /// The range commands' TG (RIL), or `None`: one command per granule.
    tg: Option<u8>,
    target: Target,
    leaf: bool,
    ttl: u8,
}

impl RangePlan {
    /// The plan of `[addr, addr + len)`: precise commands as `shape`
    /// allows, else `fallback`.
    fn new(addr: u64, len: u64, shape: Shape, fallback: Command, target: Target, hints: InvalidationHints) -> Self {
        let Shape {
            granule_shift,
            ril,
            max_commands,
            limit,
        } = shape;
        let fallback_only = RangePlan {
            fallback,
            precise: None,
        };
        let precise = |base, pages, count, tg| RangePlan {
            fallback,
            precise: Some(Precise {
                base,
                granule_shift,
                pages,
                count,
                tg,
                target,
                leaf: hints.leaf,
                ttl: if hints.leaf { hints.ttl } else { 0 },
            }),
        };
        if len == 0 {
            return precise(addr, 0, 0, None);
        }
        let Some(tg) = TlbiRange::tg_for_shift(granule_shift) else {
            return fallback_only;
        };
        let Some(end) = addr.checked_add(len) else {
            return fallback_only;
        };
        if limit.is_some_and(|l| end > l) {
            return fallback_only;
        }
        // Round out to whole granules.
        let first = addr >> granule_shift;
        let last = (end - 1) >> granule_shift;
        let pages = last - first + 1;
        let base = first << granule_shift;
        if ril {
            match range_piece_count(pages, max_commands) {
                Some(count) => precise(base, pages, count, Some(tg)),
                None => fallback_only,
            }
        } else if pages > max_commands as u64 {
            fallback_only
        } else {
            precise(base, pages, pages as usize, None)
        }
    }

    /// The plan of just `fallback` (e.g. TLBI_S12_VMALL after an
    /// invalidation failed).
    pub(crate) fn broad(fallback: Command) -> Self {
        RangePlan {
            fallback,
            precise: None,
        }
    }

    /// The plan's commands.
    pub(crate) fn len(&self) -> usize {
        self.precise.map_or(1, |p| p.count)
    }

    /// Whether the plan is the broader command.
    pub(crate) fn is_fallback(&self) -> bool {
        self.precise.is_none()
    }

    /// Command `i` (`i < len()`; past the end, the broader command, which
    /// is always safe).
    pub(crate) fn get(&self, i: usize) -> Command {
        let Some(p) = self.precise.filter(|p| i < p.count) else {
            return self.fallback;
        };
        let (addr, range) = match p.tg {
            None => (p.base.wrapping_add((i as u64) << p.granule_shift), None),
            Some(tg) => match range_piece(p.pages, tg, i) {
                Some((before, r)) => (
                    p.base.wrapping_add(before << p.granule_shift),
                    Some(TlbiRange { ttl: p.ttl, ..r }),
                ),
                None => return self.fallback,
            },
        };
        match p.target {
            Target::S2 { vmid } => Command::TlbiS2Ipa {
                vmid,
                addr,
                leaf: p.leaf,
                range,
            },
            Target::Nh { vmid, asid } => Command::TlbiNhVa {
                vmid,
                asid,
                addr,
                leaf: p.leaf,
                range,
            },
        }
    }

    /// The plan as a vector of commands.
    fn to_plan(self) -> InvalidationPlan {
        match self.precise {
            None => InvalidationPlan::Fallback(self.fallback),
            Some(p) => InvalidationPlan::Precise((0..p.count).map(|i| self.get(i)).collect()),
        }
    }
}

/// What the caller knows about the entries an invalidation removes: the
/// TLBI hints Linux also sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InvalidationHints {
    /// Only leaf entries changed (no table was unlinked or freed): the
    /// commands may leave walk caches alone (Leaf = 1).
    pub leaf: bool,
    /// The translation level (1..=3) of every leaf that changed, when they
    /// all sit at one level (TTL, range form only); 0 = unknown. Ignored
    /// unless `leaf`.
    pub ttl: u8,
}

impl InvalidationHints {
    /// No hints: non-leaf, TTL 0 (always safe).
    pub const NONE: InvalidationHints = InvalidationHints {
        leaf: false,
        ttl: 0,
    };

    /// Only leaves changed, all at `level` (1..=3); `None`: levels unknown
    /// or mixed.
    pub const fn leaves_at(level: Option<u32>) -> InvalidationHints {
        let ttl = match level {
            Some(l @ 1..=3) => l as u8,
            _ => 0,
        };
        InvalidationHints { leaf: true, ttl }
    }
}

/// Plans the stage-2 invalidation of `[ipa, ipa + len)` for `vmid`.
///
/// `granule_shift` (12, 14 or 16) is the stage-2 granule; the range is
/// rounded out to whole granules. With `ril`, the fewest TLBI_S2_IPA range
/// commands that cover exactly those granules; without, one TLBI_S2_IPA per
/// granule. Precise commands are non-leaf (they also drop walk-cache entries,
/// so the plan is safe after freeing tables). More than `max_commands`, a
/// range reaching beyond 2^52, a range piece needing SCALE > 31 (with `ril`:
/// 2^32 granules or more, e.g. 16 TiB of 4K pages), or an unknown granule
/// yield `Fallback(TlbiS12Vmall { vmid })`. A zero length gives an empty plan.
pub fn s2_invalidation(
    vmid: u16,
    ipa: u64,
    len: u64,
    granule_shift: u32,
    ril: bool,
    max_commands: usize,
) -> InvalidationPlan {
    s2_invalidation_hinted(
        vmid,
        ipa,
        len,
        granule_shift,
        ril,
        max_commands,
        InvalidationHints::NONE,
    )
}

/// [`s2_invalidation`] with `hints`: Leaf = 1 when only leaves changed,
/// and TTL (range form only) when they all sit at one level. The caller
/// must not claim a level when a cached entry of another level may cover
/// the range (e.g. a block replaced by a table without break: its old
/// block entry is cached at the block's level).
pub fn s2_invalidation_hinted(
    vmid: u16,
    ipa: u64,
    len: u64,
    granule_shift: u32,
    ril: bool,
    max_commands: usize,
    hints: InvalidationHints,
) -> InvalidationPlan {
    s2_range_plan(vmid, ipa, len, granule_shift, ril, max_commands, hints).to_plan()
}

/// [`s2_invalidation_hinted`] as a [`RangePlan`] (allocates nothing).
pub(crate) fn s2_range_plan(
    vmid: u16,
    ipa: u64,
    len: u64,
    granule_shift: u32,
    ril: bool,
    max_commands: usize,
    hints: InvalidationHints,
) -> RangePlan {
    RangePlan::new(
        ipa,
        len,
        Shape {
            granule_shift,
            ril,
            max_commands,
            limit: Some(IPA_LIMIT),
        },
        Command::TlbiS12Vmall { vmid },
        Target::S2 { vmid },
        hints,
    )
}

/// Plans the stage-1 invalidation of `[va, va + len)` for (`vmid`, `asid`):
/// TLBI_NH_VA commands as [`s2_invalidation`] does, falling back to
/// `TlbiNhAsid { vmid, asid }`.
pub fn nh_invalidation(
    vmid: u16,
    asid: u16,
    va: u64,
    len: u64,
    granule_shift: u32,
    ril: bool,
    max_commands: usize,
) -> InvalidationPlan {
    nh_invalidation_hinted(
        vmid,
        asid,
        va,
        len,
        granule_shift,
        ril,
        max_commands,
        InvalidationHints::NONE,
    )
}

/// [`nh_invalidation`] with `hints` (see [`s2_invalidation_hinted`]).
#[allow(clippy::too_many_arguments)]
pub fn nh_invalidation_hinted(
    vmid: u16,
    asid: u16,
    va: u64,
    len: u64,
    granule_shift: u32,
    ril: bool,
    max_commands: usize,
    hints: InvalidationHints,
) -> InvalidationPlan {
    nh_range_plan(vmid, asid, va, len, granule_shift, ril, max_commands, hints).to_plan()
}

/// [`nh_invalidation_hinted`] as a [`RangePlan`] (allocates nothing).
#[allow(clippy::too_many_arguments)]
pub(crate) fn nh_range_plan(
    vmid: u16,
    asid: u16,
    va: u64,
    len: u64,
    granule_shift: u32,
    ril: bool,
    max_commands: usize,
    hints: InvalidationHints,
) -> RangePlan {
    RangePlan::new(
        va,
        len,
        Shape {
            granule_shift,
            ril,
            max_commands,
            limit: None,
        },
        Command::TlbiNhAsid { vmid, asid },
        Target::Nh { vmid, asid },
        hints,
    )
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::vec;

    /// Issue 12 item 2: Leaf and TTL reach the commands only as the hints
    /// allow: TTL only in the range form and only for leaf invalidations.
    #[test]
    fn invalidation_hints_pin_leaf_and_ttl() {
        let cmds = |p: InvalidationPlan| p.commands().to_vec();
        // Pages only changed, all at level 3, RIL: Leaf = 1, TTL = 3.
        let c = cmds(s2_invalidation_hinted(
            5,
            0x4000_0000,
            0x3000,
            12,
            true,
            64,
            InvalidationHints::leaves_at(Some(3)),
        ));
        assert_eq!(c.len(), 1);
        let Command::TlbiS2Ipa {
            leaf,
            range: Some(r),
            ..
        } = c[0]
        else {
            panic!("{c:?}")
        };
        assert!(leaf);
        assert_eq!((r.ttl, r.tg, r.num, r.scale), (3, 1, 2, 0));
        let w = c[0].encode();
        assert_eq!(w[1] & 1, 1, "Leaf is dword 1 bit 0");
        assert_eq!((w[1] >> 8) & 3, 3, "TTL is dword 1 [9:8]");
        // A 2 MiB block: TTL = 2.
        let c = cmds(s2_invalidation_hinted(
            5,
            0x4000_0000,
            0x20_0000,
            12,
            true,
            64,
            InvalidationHints::leaves_at(Some(2)),
        ));
        let Command::TlbiS2Ipa { range: Some(r), .. } = c[0] else {
            panic!()
        };
        assert_eq!(r.ttl, 2);
        // Mixed levels: Leaf but no TTL.
        let c = cmds(s2_invalidation_hinted(
            5,
            0x4000_0000,
            0x3000,
            12,
            true,
            64,
            InvalidationHints::leaves_at(None),
        ));
        let Command::TlbiS2Ipa {
            leaf: true,
            range: Some(r),
            ..
        } = c[0]
        else {
            panic!()
        };
        assert_eq!(r.ttl, 0);
        // Tables freed: non-leaf, TTL dropped even if asked.
        let c = cmds(s2_invalidation_hinted(
            5,
            0x4000_0000,
            0x3000,
            12,
            true,
            64,
            InvalidationHints {
                leaf: false,
                ttl: 3,
            },
        ));
        let Command::TlbiS2Ipa {
            leaf: false,
            range: Some(r),
            ..
        } = c[0]
        else {
            panic!()
        };
        assert_eq!(r.ttl, 0);
        assert_eq!(c[0].encode()[1] & 1, 0);
        // Without RIL there is no TTL field to set: Leaf only.
        let c = cmds(s2_invalidation_hinted(
            5,
            0x4000_0000,
            0x2000,
            12,
            false,
            64,
            InvalidationHints::leaves_at(Some(3)),
        ));
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| matches!(
            c,
            Command::TlbiS2Ipa {
                leaf: true,
                range: None,
                ..
            }
        )));
        // Stage 1 alike.
        let c = cmds(nh_invalidation_hinted(
            5,
            9,
            0x1000,
            0x1000,
            12,
            true,
            64,
            InvalidationHints::leaves_at(Some(3)),
        ));
        let Command::TlbiNhVa {
            leaf: true,
            range: Some(r),
            ..
        } = c[0]
        else {
            panic!()
        };
        assert_eq!(r.ttl, 3);
    }

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
            ttl: 0,
        };
        assert_eq!(
            Command::tlbi_s2_ipa(1, 0x1000, false, Some(r16)),
            Err(Error::Misaligned {
                addr: 0x1000,
                align: 0x4000
            })
        );
        assert!(Command::tlbi_s2_ipa(1, 0x4000, false, Some(r16)).is_ok());
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

    /// Expands a precise plan into the set of granule pages it invalidates.
    fn pages_of(plan: &InvalidationPlan, shift: u32) -> BTreeSet<u64> {
        let mut set = BTreeSet::new();
        for c in plan.commands() {
            let (addr, range) = match *c {
                Command::TlbiS2Ipa { addr, range, .. } | Command::TlbiNhVa { addr, range, .. } => {
                    (addr, range)
                }
                other => panic!("unexpected {other:?}"),
            };
            c.validate().unwrap();
            let n = match range {
                None => 1,
                Some(r) => {
                    assert_eq!(r.granule_shift(), Some(shift));
                    r.pages()
                }
            };
            for p in 0..n {
                assert!(set.insert((addr >> shift) + p), "page invalidated twice");
            }
        }
        set
    }

    fn expected(addr: u64, len: u64, shift: u32) -> BTreeSet<u64> {
        ((addr >> shift)..=((addr + len - 1) >> shift)).collect()
    }

    #[test]
    fn two_mib_with_ril_is_one_command() {
        let p = s2_invalidation(3, 0x4020_0000, 2 << 20, 12, true, 16);
        assert_eq!(
            p,
            InvalidationPlan::Precise(vec![Command::TlbiS2Ipa {
                vmid: 3,
                addr: 0x4020_0000,
                leaf: false,
                range: Some(TlbiRange {
                    num: 0,
                    scale: 9,
                    tg: 1,
                    ttl: 0
                })
            }])
        );
    }

    #[test]
    fn two_mib_without_ril() {
        let p = s2_invalidation(3, 0x4020_0000, 2 << 20, 12, false, 512);
        assert_eq!(p.commands().len(), 512);
        assert_eq!(pages_of(&p, 12), expected(0x4020_0000, 2 << 20, 12));
        let p = s2_invalidation(3, 0x4020_0000, 2 << 20, 12, false, 511);
        assert_eq!(
            p,
            InvalidationPlan::Fallback(Command::TlbiS12Vmall { vmid: 3 })
        );
    }

    #[test]
    fn odd_ranges_are_covered_exactly() {
        for (addr, len, shift) in [
            (0x1000, 3 * 0x1000, 12),
            (0x7000, 33 * 0x1000, 12),
            (0x4000_0000, (1 << 30) + 0x1000, 12),
            (0x4000_1000, 0xFFF_F000, 12),
            (0x1_0000, 7 * 0x1_0000, 16),
            (0x4000, 100 * 0x4000, 14),
            (0x1800, 0x1000, 12), // unaligned: rounds out to 2 pages
        ] {
            let p = s2_invalidation(1, addr, len, shift, true, 64);
            assert!(!p.is_fallback(), "{addr:#x}+{len:#x}");
            assert_eq!(pages_of(&p, shift), expected(addr, len, shift));
            let p = nh_invalidation(1, 2, addr, len, shift, true, 64);
            assert_eq!(pages_of(&p, shift), expected(addr, len, shift));
        }
        // 33 pages = 1 + 32: two commands (0b100001 needs two 5-bit windows).
        assert_eq!(
            s2_invalidation(1, 0, 33 << 12, 12, true, 64)
                .commands()
                .len(),
            2
        );
        // 1 GiB + 4K: 1 + 2^18 pages -> two commands.
        assert_eq!(
            s2_invalidation(1, 0, (1 << 30) + 0x1000, 12, true, 64)
                .commands()
                .len(),
            2
        );
    }

    #[test]
    fn planner_edge_cases() {
        assert_eq!(
            s2_invalidation(1, 0, 0, 12, true, 8),
            InvalidationPlan::Precise(vec![])
        );
        assert!(s2_invalidation(1, 0, 0x1000, 13, true, 8).is_fallback());
        assert!(s2_invalidation(1, u64::MAX - 0xFFF, 0x2000, 12, true, 8).is_fallback());
        assert!(s2_invalidation(1, (1 << 52) - 0x1000, 0x2000, 12, true, 8).is_fallback());
        assert!(s2_invalidation(1, 0, 0x1000, 12, true, 0).is_fallback());
        // 0b1111111111 pages need two range commands; budget 1 falls back.
        assert_eq!(
            nh_invalidation(1, 9, 0, 1023 << 12, 12, true, 1),
            InvalidationPlan::Fallback(Command::TlbiNhAsid { vmid: 1, asid: 9 })
        );
    }

    /// Ranges of 2^32 pages and more need SCALE > 31, which the 5-bit field
    /// cannot hold: they fall back instead of being truncated (a 16 TiB unmap
    /// used to be planned as one command with SCALE = 32, which the SMMU
    /// reads as SCALE = 0: one page).
    #[test]
    fn huge_ranges_fall_back_instead_of_truncating_scale() {
        // Precise plans must be valid commands covering exactly the range.
        let exact = |p: &InvalidationPlan, pages: u64| {
            let total: u64 = p
                .commands()
                .iter()
                .map(|c| {
                    c.validate().unwrap();
                    match *c {
                        Command::TlbiS2Ipa { range: Some(r), .. }
                        | Command::TlbiNhVa { range: Some(r), .. } => r.pages(),
                        other => panic!("unexpected {other:?}"),
                    }
                })
                .sum();
            assert_eq!(total, pages);
        };
        for (addr, len) in [(0u64, 1u64 << 44), (0, 1 << 47), (0x1000, 1 << 44)] {
            let p = s2_invalidation(3, addr, len, 12, true, 64);
            assert_eq!(
                p,
                InvalidationPlan::Fallback(Command::TlbiS12Vmall { vmid: 3 }),
                "{addr:#x}+{len:#x}"
            );
            assert!(nh_invalidation(3, 4, addr, len, 12, true, 64).is_fallback());
        }
        // SCALE = 31 is the largest: 3 * 2^31 pages and 2^32 - 1 pages are
        // still precise and exact.
        for len in [(1u64 << 44) + (1 << 43), ((1 << 32) - 1) << 12] {
            let p = s2_invalidation(3, 0, len, 12, true, 64);
            assert!(!p.is_fallback(), "{len:#x}");
            exact(&p, len >> 12);
            exact(&nh_invalidation(3, 4, 0, len, 12, true, 64), len >> 12);
        }
    }

    /// The window greedy uses the fewest commands: compare with a dynamic
    /// program over every count a single command can cover.
    #[test]
    fn range_split_is_minimal() {
        const N: usize = 3000;
        let sizes: Vec<u64> = (0..12u32)
            .flat_map(|s| (1..=32u64).map(move |n| n << s))
            .filter(|&x| x as usize <= N)
            .collect();
        let mut best = vec![usize::MAX; N + 1];
        best[0] = 0;
        for n in 1..=N {
            for &s in &sizes {
                let s = s as usize;
                if s <= n && best[n - s] != usize::MAX {
                    best[n] = best[n].min(best[n - s] + 1);
                }
            }
        }
        for (n, &best) in best.iter().enumerate().skip(1) {
            let got = range_piece_count(n as u64, usize::MAX).unwrap();
            assert_eq!(got, best, "{n} pages");
        }
    }

    fn arb_range() -> impl Strategy<Value = Option<TlbiRange>> {
        prop::option::of(
            (0u8..32, 0u8..32, 1u8..4, 0u8..4).prop_map(|(num, scale, tg, ttl)| TlbiRange {
                num,
                scale,
                tg,
                ttl,
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
            (any::<u16>(), any::<u16>())
                .prop_map(|(vmid, asid)| Command::TlbiNhAsid { vmid, asid }),
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
                    addr,
                    leaf,
                    range
                }),
            (any::<u16>(), page, any::<bool>(), arb_range()).prop_map(
                |(vmid, addr, leaf, range)| Command::TlbiNhVaa {
                    vmid,
                    addr,
                    leaf,
                    range
                }
            ),
            Just(Command::TlbiEl2All),
            any::<u16>().prop_map(|vmid| Command::TlbiS12Vmall { vmid }),
            (any::<u16>(), ipa, any::<bool>(), arb_range()).prop_map(
                |(vmid, addr, leaf, range)| Command::TlbiS2Ipa {
                    vmid,
                    addr,
                    leaf,
                    range
                }
            ),
            Just(Command::TlbiNsnhAll),
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

        #[test]
        fn planner_covers(
            addr in 0u64..(1 << 48),
            pages in 1u64..5000,
            shift in prop::sample::select(vec![12u32, 14, 16]),
            ril: bool,
        ) {
            // Unaligned starts are rounded out to whole granules.
            let len = pages << shift;
            let p = s2_invalidation(4, addr, len, shift, ril, 10_000);
            prop_assert!(!p.is_fallback());
            prop_assert_eq!(pages_of(&p, shift), expected(addr, len, shift));
        }
    }
}
