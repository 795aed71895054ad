//! The stage-1 leaf format (VMSAv8-64, translation regime EL1&0 as the
//! SMMU walks it through a CD's TTB0), for the driver's stage-1 domains.
//!
//! A hypervisor's stage-1 domain translates IPAs to PAs for a device, so
//! its leaves are written as an EL1 (privileged) mapping of a VM's memory:
//!
//! - AP\[2:1\]: read-write (0b00) or read-only (0b10) at EL1, never EL0
//!   (the domain's STEs force privileged transactions with PRIVCFG, so a
//!   device whose requests carry no privilege, like PCIe without PASID,
//!   is checked against these EL1 permissions). Stage 1 has no write-only
//!   encoding: [`Perm::Write`] is refused ([`TableError::Permission`]).
//! - AttrIndx: [`ATTR_NORMAL`] (Normal write-back) or [`ATTR_DEVICE`]
//!   (Device-nGnRE) of the CD's MAIR ([`MAIR`]).
//! - SH: inner shareable for Normal memory, outer for Device.
//! - AF = 1 (no access-flag faults), nG = 1 (tagged with the CD's ASID).
//! - UXN = 1 always; PXN = 0 only when the mapping is executable.

use tock_registers::{LocalRegisterCopy, register_bitfields};

use super::Format;
use crate::error::{Result, TableError};
use crate::pgtable::{Geometry, MapOptions, Memory, Perm, Table};

register_bitfields! [u64,
    /// The stage-1 leaf attribute fields (Arm ARM D8, "Stage 1 attribute
    /// fields in VMSAv8-64 Block and Page descriptors").
    pub S1_DESC [
        /// Index of the leaf's memory attributes in MAIR.
        ATTRINDX OFFSET(2) NUMBITS(3) [],
        /// Non-secure output (Secure state only; RES0 here).
        NS OFFSET(5) NUMBITS(1) [],
        /// AP\[1\]: EL0 access permitted.
        AP_EL0 OFFSET(6) NUMBITS(1) [],
        /// AP\[2\]: read-only.
        AP_RO OFFSET(7) NUMBITS(1) [],
        /// Shareability.
        SH OFFSET(8) NUMBITS(2) [
            NonShareable = 0b00,
            OuterShareable = 0b10,
            InnerShareable = 0b11
        ],
        /// Access flag.
        AF OFFSET(10) NUMBITS(1) [],
        /// Not global: the entry is tagged with the ASID.
        NG OFFSET(11) NUMBITS(1) [],
        /// Dirty bit modifier (unused: always 0).
        DBM OFFSET(51) NUMBITS(1) [],
        /// Contiguous hint (unused: always 0).
        CONTIGUOUS OFFSET(52) NUMBITS(1) [],
        /// Privileged execute-never.
        PXN OFFSET(53) NUMBITS(1) [],
        /// Unprivileged execute-never.
        UXN OFFSET(54) NUMBITS(1) []
    ],
    /// MAIR_ELx / CD.MAIR: eight 8-bit memory attribute encodings.
    pub MAIR_ATTR [
        /// Attr0.
        ATTR0 OFFSET(0) NUMBITS(8) [],
        /// Attr1.
        ATTR1 OFFSET(8) NUMBITS(8) []
    ]
];

/// AttrIndx of Normal memory.
pub const ATTR_NORMAL: u64 = 0;
/// AttrIndx of Device-nGnRE memory.
pub const ATTR_DEVICE: u64 = 1;
/// MAIR encoding of Normal, inner and outer write-back non-transient,
/// read- and write-allocate.
pub const MAIR_NORMAL_WB: u64 = 0xFF;
/// MAIR encoding of Device-nGnRE.
pub const MAIR_DEVICE_NGNRE: u64 = 0x04;

/// The MAIR value the CD carries for tables in this format: Attr0 =
/// Normal write-back, Attr1 = Device-nGnRE, the rest Device-nGnRnE (0).
pub const MAIR: u64 =
    MAIR_ATTR::ATTR0.val(MAIR_NORMAL_WB).value | MAIR_ATTR::ATTR1.val(MAIR_DEVICE_NGNRE).value;

/// The stage-1 leaf format (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage1 {}

/// A stage-1 table tree.
pub type Stage1Table<H> = Table<H, Stage1>;

/// AP\[2\] for a permission; Stage 1 cannot express write-only.
fn read_only(perm: Perm) -> Result<u64> {
    match perm {
        Perm::ReadWrite => Ok(0),
        Perm::Read => Ok(1),
        Perm::Write => Err(TableError::Permission(Perm::Write).into()),
    }
}

impl Format for Stage1 {
    type Config = Geometry;

    fn geometry(cfg: &Geometry) -> Geometry {
        *cfg
    }

    fn leaf_attributes(opts: &MapOptions) -> Result<u64> {
        let (attr, sh) = match opts.memory {
            Memory::Normal => (ATTR_NORMAL, S1_DESC::SH::InnerShareable),
            Memory::Device => (ATTR_DEVICE, S1_DESC::SH::OuterShareable),
        };
        let mut d = LocalRegisterCopy::<u64, S1_DESC::Register>::new(0);
        d.write(
            S1_DESC::ATTRINDX.val(attr)
                + S1_DESC::AP_EL0::CLEAR
                + S1_DESC::AP_RO.val(read_only(opts.perm)?)
                + sh
                + S1_DESC::AF::SET
                + S1_DESC::NG::SET
                + S1_DESC::PXN.val(u64::from(!opts.execute))
                + S1_DESC::UXN::SET,
        );
        Ok(d.get())
    }

    fn with_perm(raw: u64, perm: Perm) -> Result<u64> {
        let mut d = LocalRegisterCopy::<u64, S1_DESC::Register>::new(raw);
        d.modify(S1_DESC::AP_RO.val(read_only(perm)?));
        Ok(d.get())
    }

    fn perm(raw: u64) -> Option<Perm> {
        let d = LocalRegisterCopy::<u64, S1_DESC::Register>::new(raw);
        Some(if d.is_set(S1_DESC::AP_RO) {
            Perm::Read
        } else {
            Perm::ReadWrite
        })
    }

    fn memory(raw: u64) -> Memory {
        let d = LocalRegisterCopy::<u64, S1_DESC::Register>::new(raw);
        if d.read(S1_DESC::ATTRINDX) == ATTR_NORMAL {
            Memory::Normal
        } else {
            Memory::Device
        }
    }

    fn execute(raw: u64) -> bool {
        !LocalRegisterCopy::<u64, S1_DESC::Register>::new(raw).is_set(S1_DESC::PXN)
    }
}
