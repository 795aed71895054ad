//! Peer-to-peer isolation: which functions can reach each other's BARs
//! without their DMA ever reaching the SMMU, from the multi-function bit
//! and the PCIe Access Control Services (ACS) extended capability.
//!
//! The SMMU only translates what reaches the root complex. A PCIe switch
//! routes a request whose address falls in a sibling's BAR window straight
//! to that sibling, and a multi-function device may loop a request back
//! to another of its functions internally, unless ACS (PCIe Base
//! Specification r6.0, 6.12 and 7.7.11: ACS Extended Capability, ID
//! `0x000D`) redirects peer requests upstream. Such functions cannot be
//! isolated from each other by the SMMU: they belong in one isolation
//! group, however distinct their StreamIDs (Arm IHI 0070 (SMMUv3) 3.2
//! assumes the system presents every transaction to the SMMU; ACS is how
//! PCIe makes that true).
//!
//! # The rules (Linux's `pci_device_group`)
//!
//! A function is *ACS-isolated* ([`P2pFacts::isolation`], Linux's
//! `pci_acs_enabled(dev, SV|RR|CR|UF)`) when:
//!
//! | function | isolated when |
//! | --- | --- |
//! | no PCIe capability (conventional PCI/PCI-X) | never: a shared bus |
//! | PCIe-to-PCI bridge, PCI-to-PCIe bridge, RC event collector | never |
//! | root port, switch downstream port | its ACS controls SV, RR, CR, UF are enabled |
//! | endpoint, legacy endpoint, RCiEP, switch upstream port, in a multi-function device | likewise |
//! | the same, single-function | always (nothing to reach) |
//! | any other type | always |
//!
//! "Enabled" reads the ACS Control register for each of SV, RR, CR and UF
//! that the ACS Capability register lists; one the capability lacks is
//! hard-wired (PCIe r6.0 6.12.1.1: those are required, or required only if
//! controllable), so an ACS capability with no control bits counts as
//! enabled. ACS resets to disabled: software must turn the controls on
//! ([`Acs::to_enable`], Linux's `pci_std_enable_acs`).
//!
//! Groups ([`super::Groups::build_with_p2p`]) then join, on top of the
//! StreamID aliases:
//!
//! 1. functions of one multi-function device (same bus and device number;
//!    header type bit 7, or a function number above 0) that are each not
//!    ACS-isolated (Linux's `get_pci_function_alias_group`);
//! 2. a function with the highest bridge above it whose path to the root
//!    is not fully ACS-isolated ([`P2pPath::p2p_top`]; Linux walks
//!    `bus->self` upward with `pci_acs_path_enabled`): everything below
//!    that bridge is one group. Functions on the root bus stop there (the
//!    root complex is assumed to send what reaches it to the SMMU);
//! 3. the downstream ports on one switch's internal bus, as soon as one of
//!    them is not ACS-isolated: a request that goes up through any port
//!    can come back down through another, so the whole bus is
//!    non-isolating and every port on it (and so everything below them) is
//!    one group. Linux's original walk misses this (each downstream port
//!    sees an isolated path above it and keeps its own group; fixed by
//!    "iommu: Compute iommu_groups properly for PCIe switches", 2025,
//!    `pcie_switch_isolated`): this module follows the fix, so a downstream
//!    port on a spoiled bus is treated as non-isolating in rule 2 too.
//!
//! Not modelled: device-specific ACS quirks, the Egress Control vector,
//! ARI (functions above 7 of device 0), and the fix's optimism about root
//! ports with no ACS capability at all (here they isolate nothing, as in
//! the original walk).

use core::fmt;

use super::{Rid, port_type};

/// Access Control Services extended capability ID.
pub const EXT_CAP_ID_ACS: u16 = 0x000d;
/// Offset of the ACS Capability register (16 bits) in the capability.
pub const ACS_CAPABILITY: u16 = 0x04;
/// Offset of the ACS Control register (16 bits) in the capability.
pub const ACS_CONTROL: u16 = 0x06;
/// PCIe extended capabilities start right after the 256-byte PCI space.
pub const EXT_CAP_START: u16 = 0x100;
/// Size of a PCIe function's configuration space.
pub const CONFIG_SPACE_SIZE: u16 = 0x1000;
/// Most extended capabilities that fit (each at least a header and one
/// register): a longer list loops.
pub const MAX_EXT_CAPS: usize = (CONFIG_SPACE_SIZE - EXT_CAP_START) as usize / 8;

/// Why the PCIe extended capability list could not be walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtCapError {
    /// A next pointer outside 0x100..0xffc or not dword aligned.
    BadPointer {
        /// The capability holding the pointer.
        at: u16,
        /// The pointer.
        next: u16,
    },
    /// More capabilities than fit in extended config space: the list loops.
    Loop {
        /// Where the walk gave up.
        at: u16,
    },
}

impl fmt::Display for ExtCapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadPointer { at, next } => {
                write!(f, "extended capability at {at:#x} points to {next:#x}")
            }
            Self::Loop { at } => write!(f, "extended capability list loops at {at:#x}"),
        }
    }
}

impl core::error::Error for ExtCapError {}

/// Offset of extended capability `id` (PCIe r6.0 7.6.3: header ID bits
/// 15:0, next pointer bits 31:20), reading config dwords with `read32`
/// from offset 0x100: `Ok(None)` when absent, or when the function has no
/// extended space (a header of 0 or all ones). Every pointer is checked
/// and at most [`MAX_EXT_CAPS`] headers are read.
pub fn find_ext_capability(
    mut read32: impl FnMut(u16) -> u32,
    id: u16,
) -> Result<Option<u16>, ExtCapError> {
    let mut at = EXT_CAP_START;
    for _ in 0..MAX_EXT_CAPS {
        let header = read32(at);
        if header == 0 || header == u32::MAX {
            return Ok(None);
        }
        if header as u16 == id {
            return Ok(Some(at));
        }
        let next = (header >> 20) as u16;
        if next == 0 {
            return Ok(None);
        }
        if !(EXT_CAP_START..CONFIG_SPACE_SIZE - 4).contains(&next) || !next.is_multiple_of(4) {
            return Err(ExtCapError::BadPointer { at, next });
        }
        at = next;
    }
    Err(ExtCapError::Loop { at })
}

/// Bits of the ACS Capability and ACS Control registers (PCIe r6.0
/// 7.7.11.2 and 7.7.11.3; the same positions in both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct AcsFlags(pub u16);

impl AcsFlags {
    /// Source Validation.
    pub const SV: Self = Self(1 << 0);
    /// Translation Blocking.
    pub const TB: Self = Self(1 << 1);
    /// P2P Request Redirect.
    pub const RR: Self = Self(1 << 2);
    /// P2P Completion Redirect.
    pub const CR: Self = Self(1 << 3);
    /// Upstream Forwarding.
    pub const UF: Self = Self(1 << 4);
    /// P2P Egress Control.
    pub const EC: Self = Self(1 << 5);
    /// Direct Translated P2P.
    pub const DT: Self = Self(1 << 6);
    /// What isolation requires (Linux's `REQ_ACS_FLAGS`): no spoofed
    /// requester IDs, peer requests and completions redirected upstream,
    /// and upstream forwarding of what enters from below.
    pub const ISOLATION: Self = Self(Self::SV.0 | Self::RR.0 | Self::CR.0 | Self::UF.0);

    /// Every bit of `self` and `other`.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The bits both have.
    pub const fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// The bits of `self` that `other` lacks.
    pub const fn difference(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// A function's ACS extended capability: what it supports and what is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Acs {
    /// ACS Capability register: the controls implemented.
    pub capability: AcsFlags,
    /// ACS Control register: the controls enabled.
    pub control: AcsFlags,
}

impl Acs {
    /// The controls of `required` that the capability implements but
    /// that are off (empty: `required` is in force; a control the
    /// capability lacks is hard-wired, except Egress Control, which has
    /// nothing to act on without its vector).
    pub const fn missing(self, required: AcsFlags) -> AcsFlags {
        let need = required.intersection(self.capability.union(AcsFlags::EC));
        need.difference(self.control)
    }

    /// The ACS Control value that turns on every isolation control the
    /// capability implements (SV, RR, CR, UF), keeping the others as they
    /// are (Linux's `pci_std_enable_acs`).
    pub const fn to_enable(self) -> AcsFlags {
        self.control
            .union(self.capability.intersection(AcsFlags::ISOLATION))
    }
}

/// Why a function is, or is not, ACS-isolated ([`P2pFacts::isolation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Conventional PCI or PCI-X (no PCIe capability): a shared bus,
    /// never isolated.
    Conventional,
    /// A PCIe type that cannot isolate (PCIe-to-PCI or PCI-to-PCIe bridge,
    /// root complex event collector).
    NeverIsolates(u8),
    /// ACS is required (a port, or a function of a multi-function device)
    /// and there is no ACS capability.
    NoAcs,
    /// ACS is present but these required controls are off.
    AcsOff(AcsFlags),
    /// ACS is present with the required controls on (or hard-wired).
    AcsOn,
    /// Nothing to isolate: a single-function endpoint or upstream port,
    /// or another PCIe type.
    NotRequired,
}

impl Isolation {
    /// Whether the function counts as isolated.
    pub const fn isolated(self) -> bool {
        matches!(self, Self::AcsOn | Self::NotRequired)
    }

    /// A compact label for listings.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Conventional => "no ACS (PCI)",
            Self::NeverIsolates(_) => "no ACS (bridge)",
            Self::NoAcs => "no ACS",
            Self::AcsOff(_) => "ACS off",
            Self::AcsOn => "ACS on",
            Self::NotRequired => "ACS n/a",
        }
    }
}

/// What grouping needs to know about one function (or bridge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct P2pFacts {
    /// Its requester ID.
    pub rid: Rid,
    /// Its PCIe capability's Device/Port Type (`None`: no PCIe capability).
    pub port_type: Option<u8>,
    /// Header type bit 7 (multi-function device).
    pub multifunction: bool,
    /// Its ACS extended capability, if it has one.
    pub acs: Option<Acs>,
}

impl P2pFacts {
    /// Whether it is a function of a multi-function device: header type
    /// bit 7, or a function number above 0 (Linux marks every function
    /// after the first so whatever its header says).
    pub const fn is_multifunction(&self) -> bool {
        self.multifunction || self.rid.function() != 0
    }

    /// Whether it is ACS-isolated, and why (the module's table).
    pub fn isolation(&self) -> Isolation {
        let Some(t) = self.port_type else {
            return Isolation::Conventional;
        };
        let needs_acs = match t {
            port_type::PCIE_TO_PCI_BRIDGE
            | port_type::PCI_TO_PCIE_BRIDGE
            | port_type::RC_EVENT_COLLECTOR => return Isolation::NeverIsolates(t),
            port_type::ROOT_PORT | port_type::SWITCH_DOWNSTREAM => true,
            port_type::ENDPOINT
            | port_type::LEGACY_ENDPOINT
            | port_type::RC_INTEGRATED_ENDPOINT
            | port_type::SWITCH_UPSTREAM => self.is_multifunction(),
            _ => false,
        };
        if !needs_acs {
            return Isolation::NotRequired;
        }
        match self.acs {
            None => Isolation::NoAcs,
            Some(acs) => {
                let missing = acs.missing(AcsFlags::ISOLATION);
                if missing.is_empty() {
                    Isolation::AcsOn
                } else {
                    Isolation::AcsOff(missing)
                }
            }
        }
    }

    /// Whether it is ACS-isolated.
    pub fn isolated(&self) -> bool {
        self.isolation().isolated()
    }

    /// Whether it is a switch downstream port.
    pub const fn is_downstream_port(&self) -> bool {
        matches!(self.port_type, Some(port_type::SWITCH_DOWNSTREAM))
    }
}

/// A function and the bridges above it, for peer-to-peer grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct P2pPath<'a> {
    /// The function itself.
    pub function: P2pFacts,
    /// The bridges between it and the root bus, nearest first (as
    /// [`super::Function::upstream`]); empty on the root bus.
    pub upstream: &'a [P2pFacts],
}

impl P2pPath<'_> {
    /// The highest bridge above the function whose path to the root is
    /// not fully ACS-isolated (`None`: the path is isolated, or the
    /// function is on the root bus). `spoiled(bus)` says whether a
    /// switch's internal bus has a non-isolated downstream port (rule 3),
    /// which makes every downstream port on it non-isolating.
    pub fn p2p_top(&self, mut spoiled: impl FnMut(u8) -> bool) -> Option<&P2pFacts> {
        // pci_acs_path_enabled(b) holds iff every bridge from b up is
        // isolating, so the walk stops below the highest one that is not.
        self.upstream
            .iter()
            .rev()
            .find(|b| !b.isolated() || (b.is_downstream_port() && spoiled(b.rid.bus())))
    }
}
