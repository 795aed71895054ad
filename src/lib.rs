//! A `no_std` driver for the Arm System MMU v3 (SMMUv3), written for
//! hypervisors running at EL2 that pass devices through to virtual machines
//! and must confine their DMA.
//!
//! The driver owns no addresses: the caller passes the SMMU's base address
//! (from its device tree or ACPI table) and implements [`hal::Hal`] to give
//! the driver device-visible memory and a clock.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_debug_implementations)]

extern crate alloc;
#[cfg(all(feature = "testing", not(test)))]
extern crate std;

// The driver's public modules: the normal surface, also re-exported below.
pub mod domain;
pub mod error;
pub mod event;
pub mod fault;
pub mod features;
pub mod hal;
pub mod smmu;
pub mod stage2;
pub mod topology;

// Encoders, queues, registers and tables: crate-private. What the image and
// its tests need of them is re-exported in [`expert`].
pub(crate) mod barrier;
pub(crate) mod cd;
pub(crate) mod cmd;
pub(crate) mod cmdq;
pub(crate) mod entry_plan;
// The event queue and the page-table engine are other branches' files:
// their test-only helpers are allowed here rather than edited there.
#[allow(dead_code)]
pub(crate) mod eventq;
pub(crate) mod group;
pub(crate) mod idalloc;
pub(crate) mod mmio;
#[allow(dead_code, unused_imports)]
pub(crate) mod pgtable;
pub(crate) mod queue;
pub(crate) mod regs;
pub(crate) mod ste;
pub(crate) mod strtab;
mod vecmap;

pub use cmdq::{CmdqFault, CmdqStats};
pub use domain::{
    Batch, CpuInvalidation, DomainId, DomainInfo, DomainOptions, ExternalStage2,
    MAX_RANGE_COMMANDS, MapOptions, Memory, Perm, Stage, StagePolicy, Translation,
};
pub use error::{CmdqError, Error, Field, Invalid, Result, Unsupported, Wait};
pub use event::{Event, EventType, FaultClass};
pub use eventq::Drained;
pub use fault::FaultSummary;
pub use features::Features;
pub use group::GroupId;
pub use hal::{Dma, DmaRegion, Hal, PhysAddr};
pub use regs::MMIO_SIZE;
pub use smmu::{
    Config, GerrorReport, MSI_MEMATTR_DEVICE_NGNRE, MsiConfig, MsiTarget, Smmu, State, Stats,
    StreamTableChoice, WalkAttributes,
};
pub use stage2::{Granule, Stage2Config};

pub mod expert;

#[cfg(any(test, feature = "testing"))]
pub(crate) mod fake;
#[cfg(feature = "testing")]
pub mod testing;
