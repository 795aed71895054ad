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

pub mod barrier;
pub mod cd;
pub mod cmd;
pub mod cmdq;
pub mod domain;
pub mod entry_plan;
pub mod error;
pub mod event;
pub mod eventq;
pub mod fault;
pub mod features;
pub mod group;
pub mod hal;
pub mod idalloc;
pub mod mmio;
pub mod pgtable;
pub mod queue;
pub mod regs;
pub mod smmu;
pub mod stage2;
pub mod ste;
pub mod strtab;
pub mod topology;
mod vecmap;

pub use error::{Error, Result};
pub use hal::{Dma, DmaRegion, Hal, PhysAddr};

#[cfg(test)]
pub(crate) mod fake;
