//! Expert interface: the driver's encoders, decoders and raw hardware access.
//!
//! **Not part of the normal surface.** Nothing here is needed to drive an
//! SMMU: [`crate::Smmu`] and the domain calls cover that. This module exists
//! for diagnostics, tests and fault injection (the image's on-target suites
//! decode STEs read back, build raw commands to provoke command errors, and
//! read registers). Its contents follow the hardware and may change in any
//! release, semver-minor included.
//!
//! Every item here is harmless to *call*: encoders and decoders only build or
//! read values. What could break the driver's invariants (submitting raw
//! commands, writing an STE or a register) is an `unsafe fn` on
//! [`crate::Smmu`] ([`crate::Smmu::submit_unchecked`],
//! [`crate::Smmu::write_ste_unchecked`], [`crate::Smmu::registers`]) with a
//! documented contract.

pub use crate::barrier::{dmb_osh, dsb_ld, dsb_st};
pub use crate::cd::{CD_0, CD_1, CD_2, CD_3, Cd, Stage1Cd};
pub use crate::cmd::{
    Command, InvalidationHints, InvalidationPlan, ResumeAction, SyncCs, TlbiRange, nh_invalidation,
    nh_invalidation_hinted, opcode, s2_invalidation, s2_invalidation_hinted,
};
pub use crate::entry_plan::{UpdatePlan, UpdateStep};
pub use crate::idalloc::{IdAllocator, IdKind};
pub use crate::mmio::Mmio;
pub use crate::regs::{CR0, PAGE_SIZE, SmmuPage0, SmmuPage1};
pub use crate::ste::{
    L1Descriptor, STE_SIZE, Stage1Ste, Stage2Ste, Ste, SteConfig, Strw, plan_update,
};
pub use crate::strtab::{Format, STE_BYTES, bytes_needed};
