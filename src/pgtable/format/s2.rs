//! The stage-2 leaf format (VMSAv8-64 stage 2, the format the CPU uses
//! with VTCR_EL2 and the SMMU with the STE's S2* fields), without
//! FEAT_S2FWB:
//!
//! - MemAttr: Normal inner and outer write-back, or Device-nGnRE.
//! - S2AP: read, write, or both (stage 2 can express write-only).
//! - SH: inner shareable for Normal memory, outer for Device.
//! - AF = 1 (no access-flag faults).
//! - XN\[1:0\]: 0b00 (executable at EL1 and EL0) or 0b10 (never).

use tock_registers::{LocalRegisterCopy, register_bitfields};

use super::Format;
use crate::error::Result;
use crate::pgtable::{Geometry, MapOptions, Memory, Perm, Table};
use crate::stage2::Stage2Config;

register_bitfields! [u64,
    /// The stage-2 leaf attribute fields (Arm ARM D8, "Stage 2 attribute
    /// fields in VMSAv8-64 Block and Page descriptors").
    pub S2_DESC [
        /// Stage-2 memory attributes (the encoding without FEAT_S2FWB).
        MEMATTR OFFSET(2) NUMBITS(4) [
            /// Device-nGnRE (MemAttr[3:2] = 0b00 Device, [1:0] = 0b01 nGnRE).
            DeviceNgnre = 0b0001,
            /// Normal, outer write-back cacheable, inner write-back cacheable.
            NormalWriteBack = 0b1111
        ],
        /// S2AP\[0\]: read access permitted.
        S2AP_R OFFSET(6) NUMBITS(1) [],
        /// S2AP\[1\]: write access permitted.
        S2AP_W OFFSET(7) NUMBITS(1) [],
        /// Shareability.
        SH OFFSET(8) NUMBITS(2) [
            NonShareable = 0b00,
            OuterShareable = 0b10,
            InnerShareable = 0b11
        ],
        /// Access flag.
        AF OFFSET(10) NUMBITS(1) [],
        /// Dirty bit modifier (unused: always 0).
        DBM OFFSET(51) NUMBITS(1) [],
        /// Contiguous hint (unused: always 0).
        CONTIGUOUS OFFSET(52) NUMBITS(1) [],
        /// Execute-never XN\[1:0\]: 0b00 execution permitted at EL1 and
        /// EL0, 0b10 execute-never at both (the only two this driver writes).
        XN OFFSET(53) NUMBITS(2) [
            Executable = 0b00,
            Never = 0b10
        ]
    ]
];

/// The stage-2 leaf format (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage2 {}

/// A stage-2 table tree.
pub type Stage2Table<H> = Table<H, Stage2>;

/// S2AP\[0\] (read) and S2AP\[1\] (write) for a permission.
const fn s2ap(perm: Perm) -> (u64, u64) {
    match perm {
        Perm::Read => (1, 0),
        Perm::Write => (0, 1),
        Perm::ReadWrite => (1, 1),
    }
}

impl Format for Stage2 {
    type Config = Stage2Config;

    fn geometry(cfg: &Stage2Config) -> Geometry {
        *cfg.geometry()
    }

    #[inline]
    fn leaf_attributes(opts: &MapOptions) -> Result<u64> {
        let (r, w) = s2ap(opts.perm);
        let (memattr, sh) = match opts.memory {
            Memory::Normal => (
                S2_DESC::MEMATTR::NormalWriteBack,
                S2_DESC::SH::InnerShareable,
            ),
            // Shareability is ignored for Device memory; outer shareable is
            // what the architecture treats it as.
            Memory::Device => (S2_DESC::MEMATTR::DeviceNgnre, S2_DESC::SH::OuterShareable),
        };
        let xn = if opts.execute {
            S2_DESC::XN::Executable
        } else {
            S2_DESC::XN::Never
        };
        let mut d = LocalRegisterCopy::<u64, S2_DESC::Register>::new(0);
        d.write(
            memattr + S2_DESC::S2AP_R.val(r) + S2_DESC::S2AP_W.val(w) + sh + S2_DESC::AF::SET + xn,
        );
        Ok(d.get())
    }

    #[inline]
    fn with_perm(raw: u64, perm: Perm) -> Result<u64> {
        let (r, w) = s2ap(perm);
        let mut d = LocalRegisterCopy::<u64, S2_DESC::Register>::new(raw);
        d.modify(S2_DESC::S2AP_R.val(r) + S2_DESC::S2AP_W.val(w));
        Ok(d.get())
    }

    #[inline]
    fn perm(raw: u64) -> Option<Perm> {
        let d = LocalRegisterCopy::<u64, S2_DESC::Register>::new(raw);
        match (d.read(S2_DESC::S2AP_R), d.read(S2_DESC::S2AP_W)) {
            (1, 0) => Some(Perm::Read),
            (0, 1) => Some(Perm::Write),
            (1, 1) => Some(Perm::ReadWrite),
            _ => None,
        }
    }

    fn memory(raw: u64) -> Memory {
        let d = LocalRegisterCopy::<u64, S2_DESC::Register>::new(raw);
        match d.read_as_enum(S2_DESC::MEMATTR) {
            Some(S2_DESC::MEMATTR::Value::NormalWriteBack) => Memory::Normal,
            _ => Memory::Device,
        }
    }

    fn execute(raw: u64) -> bool {
        LocalRegisterCopy::<u64, S2_DESC::Register>::new(raw).read(S2_DESC::XN) == 0
    }
}
