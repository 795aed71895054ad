//! PCI topology for DMA isolation: which requester IDs a function's DMA can
//! carry when it reaches the SMMU, their StreamIDs, and the isolation groups
//! they imply.
//!
//! A function behind a PCIe-to-PCI(-X) bridge does not reach the root
//! complex with its own requester ID (RID): the bridge takes ownership of
//! the transaction and forwards it with an *alias*. A hypervisor that gives
//! such a function only its own StreamID hands it a StreamID it never uses
//! (its DMA is aborted), and two functions that share an alias cannot be
//! isolated from each other: they form one isolation group and can only be
//! passed through together, to one VM.
//!
//! This module is pure logic over already-discovered facts (no config
//! space access, no device tree walking; firmware tables are parsed from
//! their bytes):
//!
//! * [`upstream_bridges`] turns an enumeration's parent links into a
//!   function's bridge chain;
//! * [`dma_alias_rids`] walks a function's upstream bridge chain and lists
//!   every RID its DMA may carry, own RID first, each alias in order up the
//!   chain, with the rules Linux's `pci_for_each_dma_alias` applies;
//! * [`IommuMap`] is a host bridge's `iommu-map` / `iommu-map-mask`
//!   (RID -> IOMMU phandle + StreamID);
//! * [`dma_aliases`] combines both into the function's StreamIDs
//!   ([`DmaAliases`]), with a typed error when an alias is not covered or
//!   belongs to another IOMMU;
//! * [`Groups::build`] joins functions whose StreamID sets intersect into
//!   isolation groups; [`Groups::build_with_p2p`] also joins functions
//!   that can reach each other peer-to-peer without passing the SMMU
//!   (multi-function devices and switches without ACS: [`acs`]);
//! * [`iort`] parses the ACPI IORT, the ACPI counterpart of `iommu-map`,
//!   and compares the two.
//!
//! # The alias rules
//!
//! Walking from the function's bus up to the root bus, each bus's upstream
//! bridge ([`Bridge`], classified by [`BridgeKind`]) contributes:
//!
//! | bridge | alias |
//! | --- | --- |
//! | PCIe root port, switch upstream or downstream port | none (PCIe keeps the RID) |
//! | PCIe-to-PCI/PCI-X bridge (port type 0x7) | secondary bus, devfn 0 |
//! | PCI/PCI-X-to-PCIe bridge (port type 0x8) | the bridge's own RID |
//! | conventional PCI or PCI-X bridge (no PCIe capability) | the bridge's own RID |
//! | conventional bridge known (by quirk) to be a PCIe-to-PCI bridge | secondary bus, devfn 0 |
//! | PCIe capability with any other port type | none |
//!
//! A PCIe-to-PCI/PCI-X bridge uses the secondary-bus alias whatever its
//! secondary interface is (PCI Express to PCI/PCI-X Bridge Specification
//! 1.0, 2.3): it may take ownership of transactions even in PCI-X mode.
//! Wherever the bus *above* a bridge is conventional PCI or PCI-X, the
//! requester is the bridge itself, which is why a PCIe device behind a PCI
//! bridge (behind a PCI-to-PCIe bridge) aliases to that bridge's own RID.
//! Every possible alias is listed; the last one is what the root complex
//! sees in the common case ([`DmaAliases::root_alias`]).

//!
//! # Layout
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | [`Rid`], [`TopologyError`], PCIe port types |
//! | `aliases.rs` | bridge kinds, alias rules, [`upstream_bridges`], [`dma_alias_rids`], [`dma_aliases`] |
//! | `iommu_map.rs` | [`IommuMap`]: the device tree's `iommu-map` / `iommu-map-mask`, from its cells |
//! | `groups.rs` | [`Groups`]: isolation groups (union-find) |
//! | `acs.rs` | [`acs`]: peer-to-peer isolation facts (multi-function bit, ACS capability and control) and the rules |
//! | `iort.rs`, `iort/` | [`iort`]: the ACPI IO Remapping Table, parsed from its bytes (`node.rs`: node and ID mapping decoding; `compare.rs`: against `iommu-map`; `acpi.rs`: QEMU's unlinked ACPI blob) |
//! | `tests.rs` | host tests of aliases, `iommu-map` and groups |
//! | `acs_tests.rs` | host tests of peer-to-peer (ACS) grouping |

pub mod acs;
mod aliases;
mod groups;
mod iommu_map;
pub mod iort;

pub use acs::{Acs, AcsFlags, ExtCapError, Isolation, P2pFacts, P2pPath, find_ext_capability};
pub use aliases::{
    AliasRid, AliasRule, AliasSource, Bridge, BridgeKind, DmaAlias, DmaAliases, Function,
    dma_alias_rids, dma_aliases, upstream_bridges,
};
pub use groups::{Group, Groups};
pub use iommu_map::{IommuMap, IommuMapEntry, MappedId, NO_MASK};

use core::fmt;

/// Bits of a RID below the bus number (device and function).
pub const DEVFN_BITS: u32 = 8;
/// Bits of a devfn below the device number (the function).
pub const FUNCTION_BITS: u32 = 3;
/// Largest device number on a bus.
pub const MAX_DEVICE: u8 = (1 << (DEVFN_BITS - FUNCTION_BITS)) - 1;
/// Largest function number of a device.
pub const MAX_FUNCTION: u8 = (1 << FUNCTION_BITS) - 1;

/// PCI Express capability, Device/Port Type field values (PCIe base
/// specification, PCI Express Capabilities Register bits 7:4).
pub mod port_type {
    /// PCI Express endpoint.
    pub const ENDPOINT: u8 = 0x0;
    /// Legacy PCI Express endpoint.
    pub const LEGACY_ENDPOINT: u8 = 0x1;
    /// Root port of a root complex.
    pub const ROOT_PORT: u8 = 0x4;
    /// Upstream port of a switch.
    pub const SWITCH_UPSTREAM: u8 = 0x5;
    /// Downstream port of a switch.
    pub const SWITCH_DOWNSTREAM: u8 = 0x6;
    /// PCI Express to PCI/PCI-X bridge.
    pub const PCIE_TO_PCI_BRIDGE: u8 = 0x7;
    /// PCI/PCI-X to PCI Express bridge.
    pub const PCI_TO_PCIE_BRIDGE: u8 = 0x8;
    /// Root complex integrated endpoint.
    pub const RC_INTEGRATED_ENDPOINT: u8 = 0x9;
    /// Root complex event collector.
    pub const RC_EVENT_COLLECTOR: u8 = 0xa;
}

/// A PCI requester ID: bus number, device number and function number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rid(pub u16);

impl Rid {
    /// The RID of `bus:dev.func`; `None` when the device or function number
    /// is out of range.
    pub fn new(bus: u8, dev: u8, func: u8) -> Option<Self> {
        if dev > MAX_DEVICE || func > MAX_FUNCTION {
            return None;
        }
        Some(Self::from_devfn(bus, (dev << FUNCTION_BITS) | func))
    }

    /// The RID of devfn `devfn` on `bus`.
    pub const fn from_devfn(bus: u8, devfn: u8) -> Self {
        Self(((bus as u16) << DEVFN_BITS) | devfn as u16)
    }

    /// Bus number.
    pub const fn bus(self) -> u8 {
        (self.0 >> DEVFN_BITS) as u8
    }

    /// Device and function number (`dev << 3 | func`).
    pub const fn devfn(self) -> u8 {
        self.0 as u8
    }

    /// Device number.
    pub const fn device(self) -> u8 {
        self.devfn() >> FUNCTION_BITS
    }

    /// Function number.
    pub const fn function(self) -> u8 {
        self.devfn() & MAX_FUNCTION
    }
}

impl fmt::Display for Rid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{}",
            self.bus(),
            self.device(),
            self.function()
        )
    }
}

/// Why a requester ID has no (usable) StreamID, or a topology is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyError {
    /// The host bridge has no `iommu-map`: its functions are not behind an
    /// IOMMU.
    NoIommuMap,
    /// No `iommu-map` entry covers the (masked) requester ID.
    NotCovered {
        /// The requester ID, before `iommu-map-mask`.
        rid: Rid,
    },
    /// The requester ID maps to an IOMMU other than the expected one.
    OtherIommu {
        /// The requester ID.
        rid: Rid,
        /// phandle of the IOMMU it maps to.
        iommu: u32,
        /// phandle of the IOMMU expected.
        expected: u32,
    },
    /// An `iommu-map` entry's `rid_base` has bits that `iommu-map-mask`
    /// clears: no masked RID can ever match it.
    MaskIgnoresBase {
        /// The entry's first RID.
        rid_base: u32,
        /// `iommu-map-mask`.
        mask: u32,
    },
    /// `sid_base + (rid - rid_base)` does not fit in 32 bits.
    SidOverflow {
        /// The requester ID.
        rid: Rid,
    },
    /// An `iommu-map` property whose length is not a whole number of
    /// (rid-base, iommu, iommu-base, length) entries.
    MalformedIommuMap {
        /// Its length in 32-bit cells.
        cells: usize,
    },
    /// A bridge in the chain does not forward the bus below it (the chain is
    /// not a path to the root).
    BrokenChain {
        /// The bridge.
        bridge: Rid,
        /// The bus below it that it does not forward.
        bus: u8,
    },
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoIommuMap => f.write_str("host bridge has no iommu-map"),
            Self::NotCovered { rid } => {
                write!(f, "RID {:#06x} ({rid}) is not covered by iommu-map", rid.0)
            }
            Self::OtherIommu {
                rid,
                iommu,
                expected,
            } => write!(
                f,
                "RID {:#06x} ({rid}) maps to IOMMU phandle {iommu:#x}, not {expected:#x}",
                rid.0
            ),
            Self::MaskIgnoresBase { rid_base, mask } => write!(
                f,
                "iommu-map-mask {mask:#x} clears bits of rid-base {rid_base:#x}"
            ),
            Self::SidOverflow { rid } => {
                write!(
                    f,
                    "StreamID of RID {:#06x} ({rid}) overflows 32 bits",
                    rid.0
                )
            }
            Self::MalformedIommuMap { cells } => {
                write!(
                    f,
                    "iommu-map of {cells} cells is not a whole number of 4-cell entries"
                )
            }
            Self::BrokenChain { bridge, bus } => {
                write!(f, "bridge {bridge} does not forward bus {bus:02x}")
            }
        }
    }
}

impl core::error::Error for TopologyError {}

#[cfg(test)]
mod acs_tests;
#[cfg(test)]
mod tests;
