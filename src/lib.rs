//! A `no_std` driver for the Arm System MMU v3 (SMMUv3), written for
//! hypervisors running at EL2 that pass devices through to virtual machines
//! and must confine their DMA.
//!
//! The driver owns no addresses: the caller passes the SMMU's base address
//! (from its device tree or ACPI table) and implements [`Hal`] to give
//! the driver device-visible memory and a clock.
//!
//! # Example: who owns stage 2
//!
//! A VM's stage 2 is shared by its CPUs and its passed-through devices; the
//! driver supports both ways a hypervisor may own it. This is
//! `examples/ownership.rs` (also shown in the README):
//!
#![cfg_attr(feature = "testing", doc = "```rust")]
#![cfg_attr(not(feature = "testing"), doc = "```ignore")]
#![doc = include_str!("../examples/ownership.rs")]
//! # fn main() {} // a library: the doctest only builds it
//! ```
//!
//! # Example: a whole life cycle, on the host
//!
//! With the `testing` feature, `testing::SmmuModel` stands in for the
//! hardware (this example runs as a doctest on the host):
//!
#![cfg_attr(feature = "testing", doc = "```")]
#![cfg_attr(not(feature = "testing"), doc = "```ignore")]
//! use smmuv3::expert::SteConfig;
//! use smmuv3::testing::{HostHal, SmmuModel};
//! use smmuv3::{Config, DomainOptions, EventType, Granule, Perm, Smmu, Stage2Config};
//!
//! let model = SmmuModel::builder().sid_bits(16).build();
//! // SAFETY: the model's register block (MMIO_SIZE bytes) outlives `smmu`,
//! // and nothing else programs it.
//! let smmu = unsafe { Smmu::<HostHal>::new(model.base(), Config::default()) }?;
//! smmu.enable()?; // every StreamID aborts until attached
//!
//! // A VM: 40-bit IPA space, 4K granule, a private SMMU VMID.
//! let vm = smmu.create_domain(DomainOptions::new(Stage2Config::new(Granule::K4, 40, 48)?))?;
//! smmu.map(vm, 0x4000_0000, 0x8000_0000, 0x20_0000, Perm::ReadWrite)?;
//! smmu.attach(vm, 0x8)?;
//!
//! // The SMMU sees a stage-2 STE with the domain's VMID and tables.
//! let ste = model.ste(0x8).expect("STE of StreamID 8");
//! let info = smmu.domain_info(vm)?;
//! assert_eq!(ste.config(), SteConfig::Stage2);
//! assert_eq!((ste.vmid(), ste.s2ttb()), (info.vmid, info.root));
//!
//! // A DMA fault, reported through the event queue and `service`.
//! model.inject_event(SmmuModel::translation_fault(0x8, 0x9000_0000, true));
//! let mut faults = Vec::new();
//! smmu.service(|event| faults.push(event))?;
//! assert_eq!(faults[0].kind, EventType::FTranslation);
//! assert_eq!(smmu.domain_of(faults[0].sid), Some(vm));
//!
//! // Teardown: detach (the STE aborts again), unmap, destroy.
//! smmu.detach(0x8)?;
//! assert!(smmu.ste(0x8)?.config().is_abort());
//! smmu.unmap(vm, 0x4000_0000, 0x20_0000)?;
//! smmu.destroy_domain(vm)?;
//! smmu.disable()?;
//! # Ok::<(), smmuv3::Error>(())
//! ```
//!
//! # The public surface
//!
//! Everything a hypervisor needs is at the crate root: [`Smmu`] and its
//! [`Config`]; domains ([`DomainId`], [`DomainOptions`], [`StagePolicy`],
//! [`ExternalStage2`], [`MapOptions`], [`Perm`], [`Stage2Config`],
//! [`CpuInvalidation`], [`Batch`]); the [`Hal`] trait and its [`Dma`]
//! guard; [`Error`] and [`Result`]; [`Features`]; [`Event`],
//! [`EventType`] and [`FaultSummary`]. The modules they live in
//! ([`smmu`], [`domain`], [`stage2`], [`event`], [`fault`], [`features`],
//! [`hal`], [`error`], [`topology`]) are public too, for the items that
//! belong together there (e.g. [`topology`]'s PCI requester-ID to
//! StreamID rules, [`fault::coalesce`]).
//!
//! That surface follows semver from 1.0 on (0.x: minor versions may break
//! it); error enums are `#[non_exhaustive]`.
//!
//! **Expert items** ([`expert`]): command, STE and CD encoders and
//! decoders, the ID allocator, register blocks and barriers, for
//! diagnostics, tests and fault injection. They follow the hardware and may
//! change in any release. Calls that could break the driver's invariants
//! (raw commands, raw STE writes, register access) are `unsafe fn`s on
//! [`Smmu`] with a documented contract: no safe call can make the driver
//! point the SMMU at memory it does not own.
//!
//! **Testing** (feature `testing`, host only): `smmuv3::testing` has a software
//! model of the SMMU's register interface and a host [`Hal`].
//!
//! # Memory
//!
//! Two kinds, never mixed:
//!
//! - **Device-visible memory** comes only from [`Hal::dma_alloc`], held by
//!   [`Dma`] guards: the stream table (at [`Smmu::new`]: linear, or the
//!   level-1 table of a two-level one) and its level-2 tables (one per 256
//!   StreamIDs, on the first attach or STE write in their range); the
//!   command and event queues (at [`Smmu::new`]); stage-2 and stage-1
//!   translation tables (at [`Smmu::create_domain`], and tables added by
//!   `map` or by splitting a block, freed by `unmap` after the TLBI and
//!   CMD_SYNC); one context descriptor per stage-1 domain. The HAL running
//!   out is [`Error::NoMemory`].
//! - **The driver's own bookkeeping** uses `alloc` (the global allocator):
//!   the domain and group maps (sorted vectors), each domain's StreamID
//!   list, the VMID and ASID bitmaps (8 KiB each with 16-bit IDs, at
//!   [`Smmu::new`]), the list of level-2 table slots, the table engine's
//!   slab of tables, and, per call, the records of [`Batch::commit`] and
//!   the plan of an STE update of several StreamIDs (a range invalidation,
//!   at most [`MAX_RANGE_COMMANDS`] commands, needs none).
//!   These reserve with `try_reserve` before anything changes, so running
//!   out is [`Error::NoMemory`] and leaves the driver as it was; so does
//!   the box of a stage-1 domain's context (allocated fallibly, its ASID
//!   and VMID given back on failure).
//!
//! Once a call changed a table, an STE or a CD, nothing allocates before
//! its invalidation (TLBI or CFGI, then CMD_SYNC) has gone out: the range
//! invalidations of `unmap`, `protect`, a block split's break-before-make
//! and [`Batch::commit`] are planned and issued by index, without a vector
//! (a batch's per-change records live in a vector reserved before its
//! first change), and `detach`, `attach_nested` and the other STE paths
//! reserve their bookkeeping before the STE write. What may still abort
//! on exhaustion, as `alloc` does: the table engine's slab bookkeeping
//! (both stages), which grows when `map` or a split links a new table (after
//! a break-before-make split's invalidation, so a translation can be
//! missing then, never stale; unmaps never allocate), and the vectors
//! returned by diagnostics ([`Smmu::stream_table_snapshot`],
//! [`Smmu::stage2_snapshot`], [`Smmu::group_sids`], [`Smmu::domain_info`],
//! [`fault::coalesce`]).
//!
//! Nothing allocates in the command queue (submitting a batch, waiting
//! for room or for a CMD_SYNC, recovering a command error: the path every
//! driver call's commands and [`Smmu::submit_unchecked`] take), in
//! [`Smmu::service`], [`Smmu::drain_events`], [`Smmu::handle_gerror`] or
//! [`Smmu::stats`]: an interrupt handler may call them (a host test counts
//! allocations on these paths with a counting global allocator).

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_debug_implementations)]
#![warn(missing_docs)]

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
// The stage-2 engine is being rewritten on another branch, which owns its
// documentation: its gaps are allowed here, not hidden in the file.
#[allow(missing_docs, rustdoc::broken_intra_doc_links)]
pub mod stage2;
pub mod topology;

// Encoders, queues, registers and tables: crate-private. What the image and
// its tests need of them is re-exported in [`expert`].
pub(crate) mod barrier;
pub(crate) mod cd;
pub mod cdtable;
pub(crate) mod cmd;
pub(crate) mod cmdq;
pub(crate) mod entry_plan;
pub(crate) mod fallible;
// The event queue and the page-table engine are other branches' files:
// their test-only helpers are allowed here rather than edited there.
#[allow(dead_code, rustdoc::private_intra_doc_links)]
pub(crate) mod eventq;
pub(crate) mod group;
pub(crate) mod idalloc;
pub(crate) mod mmio;
#[allow(dead_code, unused_imports)]
pub(crate) mod pgtable;
pub(crate) mod queue;
// Register definitions generated by tock-registers: names are the
// architecture's (IHI 0070 chapter 6), documented there.
#[allow(missing_docs)]
pub(crate) mod regs;
pub(crate) mod ste;
pub(crate) mod strtab;
mod vecmap;

pub use cdtable::{CdLeaf, CdTablePolicy, SubstreamError};
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
    Config, GerrorReport, MAX_PENDING_RESUMES, MSI_MEMATTR_DEVICE_NGNRE, MsiConfig, MsiTarget,
    Smmu, StallResponse, State, Stats, StreamTableChoice, WalkAttributes,
};
pub use stage2::{Granule, Stage2Config};

pub mod expert;

#[cfg(any(test, feature = "testing"))]
pub(crate) mod fake;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod alloc_tests;
#[cfg(test)]
mod peer_vectors_tests;
#[cfg(test)]
mod spec_model_tests;
#[cfg(test)]
mod variants_tests;
