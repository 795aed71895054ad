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
//! space access, no device tree parsing):
//!
//! * [`dma_alias_rids`] walks a function's upstream bridge chain and lists
//!   every RID its DMA may carry, own RID first, each alias in order up the
//!   chain, with the rules Linux's `pci_for_each_dma_alias` applies;
//! * [`IommuMap`] is a host bridge's `iommu-map` / `iommu-map-mask`
//!   (RID -> IOMMU phandle + StreamID);
//! * [`dma_aliases`] combines both into the function's StreamIDs
//!   ([`DmaAliases`]), with a typed error when an alias is not covered or
//!   belongs to another IOMMU;
//! * [`Groups::build`] joins functions whose StreamID sets intersect into
//!   isolation groups.
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

use crate::vecmap::VecMap;
use alloc::vec::Vec;
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

/// What kind of bridge sits above a bus, as far as DMA aliasing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeKind {
    /// PCIe root port: forwards the requester ID unchanged.
    PcieRootPort,
    /// PCIe switch upstream port: forwards the requester ID unchanged.
    PcieSwitchUpstream,
    /// PCIe switch downstream port: forwards the requester ID unchanged.
    PcieSwitchDownstream,
    /// PCIe-to-PCI/PCI-X bridge: functions below it alias to its
    /// secondary bus number with devfn 0.
    PcieToPci,
    /// PCI/PCI-X-to-PCIe bridge (its upstream bus is PCI/PCI-X): functions
    /// below it alias to the bridge's own RID.
    PciToPcie,
    /// A bridge without a PCIe capability (conventional PCI or PCI-X):
    /// functions below it alias to the bridge's own RID.
    Conventional,
    /// A bridge without a PCIe capability that is known (by quirk) to be a
    /// PCIe-to-PCI bridge: aliases like [`BridgeKind::PcieToPci`].
    ConventionalPcieToPci,
    /// A PCIe capability with another Device/Port Type: no alias.
    OtherPcie(u8),
}

impl BridgeKind {
    /// Classifies a bridge by its PCIe capability's Device/Port Type
    /// (`None`: the bridge has no PCIe capability).
    pub fn from_port_type(port_type: Option<u8>) -> Self {
        match port_type {
            None => Self::Conventional,
            Some(port_type::ROOT_PORT) => Self::PcieRootPort,
            Some(port_type::SWITCH_UPSTREAM) => Self::PcieSwitchUpstream,
            Some(port_type::SWITCH_DOWNSTREAM) => Self::PcieSwitchDownstream,
            Some(port_type::PCIE_TO_PCI_BRIDGE) => Self::PcieToPci,
            Some(port_type::PCI_TO_PCIE_BRIDGE) => Self::PciToPcie,
            Some(other) => Self::OtherPcie(other),
        }
    }

    /// How a function below this bridge appears upstream of it.
    pub fn alias_rule(self) -> AliasRule {
        match self {
            Self::PcieRootPort
            | Self::PcieSwitchUpstream
            | Self::PcieSwitchDownstream
            | Self::OtherPcie(_) => AliasRule::None,
            Self::PcieToPci | Self::ConventionalPcieToPci => AliasRule::SecondaryBus,
            Self::PciToPcie | Self::Conventional => AliasRule::Bridge,
        }
    }

    /// A short human name.
    pub fn name(self) -> &'static str {
        match self {
            Self::PcieRootPort => "PCIe root port",
            Self::PcieSwitchUpstream => "PCIe switch upstream port",
            Self::PcieSwitchDownstream => "PCIe switch downstream port",
            Self::PcieToPci => "PCIe-to-PCI/PCI-X bridge",
            Self::PciToPcie => "PCI/PCI-X-to-PCIe bridge",
            Self::Conventional => "PCI/PCI-X bridge",
            Self::ConventionalPcieToPci => "PCIe-to-PCI bridge (quirk)",
            Self::OtherPcie(_) => "PCIe bridge of another port type",
        }
    }
}

/// The alias a bridge gives the functions below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasRule {
    /// None: the requester ID passes unchanged.
    None,
    /// The bridge's secondary bus number with devfn 0.
    SecondaryBus,
    /// The bridge's own requester ID.
    Bridge,
}

/// One bridge upstream of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bridge {
    /// The bridge's own requester ID (its bus is the bus above it).
    pub rid: Rid,
    /// What kind of bridge.
    pub kind: BridgeKind,
    /// Secondary bus number (the bus directly below it).
    pub secondary: u8,
    /// Subordinate bus number (the highest bus below it).
    pub subordinate: u8,
}

impl Bridge {
    /// Whether `bus` lies below this bridge.
    pub fn forwards(&self, bus: u8) -> bool {
        (self.secondary..=self.subordinate).contains(&bus)
    }
}

/// A function and the bridges between it and the root bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function<'a> {
    /// The function's requester ID.
    pub rid: Rid,
    /// Extra devfns on the function's own bus that it (by quirk) also
    /// uses as requester IDs; usually empty.
    pub quirk_devfns: &'a [u8],
    /// The upstream bridges, nearest first, ending with the one on the root
    /// bus; empty for a function on the root bus. A bus without a bridge of
    /// its own (a virtual bus) has no entry: each bridge only has to forward
    /// the bus of the entry below it.
    pub upstream: &'a [Bridge],
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
            Self::BrokenChain { bridge, bus } => {
                write!(f, "bridge {bridge} does not forward bus {bus:02x}")
            }
        }
    }
}

impl core::error::Error for TopologyError {}

/// Where an alias comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasSource {
    /// The function's own requester ID.
    Own,
    /// A devfn quirk of the function ([`Function::quirk_devfns`]).
    Quirk,
    /// Introduced by this upstream bridge.
    Bridge {
        /// The bridge's requester ID.
        rid: Rid,
        /// Its kind.
        kind: BridgeKind,
    },
}

/// One requester ID a function's DMA may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AliasRid {
    /// The requester ID.
    pub rid: Rid,
    /// Why.
    pub source: AliasSource,
}

/// Every requester ID the function's DMA may carry at the root bus: its own
/// RID first, then its quirk devfns, then each bridge's alias in order up
/// the chain (duplicates kept, as each names its own source).
pub fn dma_alias_rids(function: &Function<'_>) -> Result<Vec<AliasRid>, TopologyError> {
    let mut out = Vec::with_capacity(1 + function.quirk_devfns.len() + function.upstream.len());
    out.push(AliasRid {
        rid: function.rid,
        source: AliasSource::Own,
    });
    for &devfn in function.quirk_devfns {
        out.push(AliasRid {
            rid: Rid::from_devfn(function.rid.bus(), devfn),
            source: AliasSource::Quirk,
        });
    }
    let mut below = function.rid.bus();
    for bridge in function.upstream {
        if !bridge.forwards(below) {
            return Err(TopologyError::BrokenChain {
                bridge: bridge.rid,
                bus: below,
            });
        }
        let alias = match bridge.kind.alias_rule() {
            AliasRule::None => None,
            AliasRule::SecondaryBus => Some(Rid::from_devfn(bridge.secondary, 0)),
            AliasRule::Bridge => Some(bridge.rid),
        };
        if let Some(rid) = alias {
            out.push(AliasRid {
                rid,
                source: AliasSource::Bridge {
                    rid: bridge.rid,
                    kind: bridge.kind,
                },
            });
        }
        below = bridge.rid.bus();
    }
    Ok(out)
}

/// One `iommu-map` entry: requester IDs `[rid_base, rid_base + len)` (after
/// `iommu-map-mask`) map to StreamIDs `[sid_base, sid_base + len)` of the
/// IOMMU with phandle `iommu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IommuMapEntry {
    /// First requester ID (after `iommu-map-mask`).
    pub rid_base: u32,
    /// phandle of the IOMMU.
    pub iommu: u32,
    /// StreamID of `rid_base`.
    pub sid_base: u32,
    /// Number of requester IDs.
    pub len: u32,
}

/// A StreamID and the IOMMU it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedId {
    /// phandle of the IOMMU.
    pub iommu: u32,
    /// The StreamID.
    pub sid: u32,
}

/// A host bridge's `iommu-map` and `iommu-map-mask`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuMap {
    entries: Vec<IommuMapEntry>,
    mask: u32,
}

/// `iommu-map-mask` when the property is absent: every RID bit counts.
pub const NO_MASK: u32 = u32::MAX;

impl IommuMap {
    /// A map from parsed entries and `iommu-map-mask` ([`NO_MASK`] when the
    /// property is absent). Refuses an entry whose `rid_base` the mask
    /// clears bits of (it could never match).
    pub fn new(entries: Vec<IommuMapEntry>, mask: u32) -> Result<Self, TopologyError> {
        if let Some(e) = entries.iter().find(|e| e.rid_base & !mask != 0) {
            return Err(TopologyError::MaskIgnoresBase {
                rid_base: e.rid_base,
                mask,
            });
        }
        Ok(Self { entries, mask })
    }

    /// The entries.
    pub fn entries(&self) -> &[IommuMapEntry] {
        &self.entries
    }

    /// `iommu-map-mask`.
    pub fn mask(&self) -> u32 {
        self.mask
    }

    /// The IOMMU and StreamID of requester `rid`: the first entry covering
    /// `rid & mask`.
    pub fn lookup(&self, rid: Rid) -> Result<MappedId, TopologyError> {
        if self.entries.is_empty() {
            return Err(TopologyError::NoIommuMap);
        }
        let masked = u32::from(rid.0) & self.mask;
        let e = self
            .entries
            .iter()
            .find(|e| masked >= e.rid_base && masked - e.rid_base < e.len)
            .ok_or(TopologyError::NotCovered { rid })?;
        let sid = e
            .sid_base
            .checked_add(masked - e.rid_base)
            .ok_or(TopologyError::SidOverflow { rid })?;
        Ok(MappedId {
            iommu: e.iommu,
            sid,
        })
    }
}

/// One requester ID of a function and its StreamID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaAlias {
    /// The requester ID.
    pub rid: Rid,
    /// Why the function uses it.
    pub source: AliasSource,
    /// Its StreamID.
    pub sid: u32,
}

/// Every requester ID a function's DMA may carry, with StreamIDs, all on
/// one IOMMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmaAliases {
    iommu: u32,
    aliases: Vec<DmaAlias>,
}

impl DmaAliases {
    /// phandle of the IOMMU every alias maps to.
    pub fn iommu(&self) -> u32 {
        self.iommu
    }

    /// Every alias, own RID first (never empty).
    pub fn aliases(&self) -> &[DmaAlias] {
        &self.aliases
    }

    /// The function's own requester ID and StreamID.
    pub fn own(&self) -> &DmaAlias {
        &self.aliases[0]
    }

    /// The alias closest to the root: the requester ID the root complex
    /// (and so the SMMU) sees when every bridge on the way takes ownership
    /// of the transaction. Equal to [`DmaAliases::own`] without aliasing
    /// bridges.
    pub fn root_alias(&self) -> &DmaAlias {
        // Never empty: the own RID is always first.
        self.aliases.last().unwrap_or(&self.aliases[0])
    }

    /// Every distinct StreamID, in alias order.
    pub fn stream_ids(&self) -> Vec<u32> {
        let mut sids: Vec<u32> = Vec::with_capacity(self.aliases.len());
        for a in &self.aliases {
            if !sids.contains(&a.sid) {
                sids.push(a.sid);
            }
        }
        sids
    }

    /// Whether the function uses any requester ID besides its own.
    pub fn is_aliased(&self) -> bool {
        self.aliases.iter().any(|a| a.rid != self.aliases[0].rid)
    }
}

/// The function's DMA aliases ([`dma_alias_rids`]) and their StreamIDs
/// through `map`. With `iommu = Some(phandle)` every alias must map to that
/// IOMMU; with `None`, to the same IOMMU as the function's own RID.
pub fn dma_aliases(
    map: &IommuMap,
    iommu: Option<u32>,
    function: &Function<'_>,
) -> Result<DmaAliases, TopologyError> {
    let rids = dma_alias_rids(function)?;
    let mut expected = iommu;
    let mut aliases = Vec::with_capacity(rids.len());
    for a in rids {
        let m = map.lookup(a.rid)?;
        match expected {
            Some(e) if e != m.iommu => {
                return Err(TopologyError::OtherIommu {
                    rid: a.rid,
                    iommu: m.iommu,
                    expected: e,
                });
            }
            _ => expected = Some(m.iommu),
        }
        aliases.push(DmaAlias {
            rid: a.rid,
            source: a.source,
            sid: m.sid,
        });
    }
    Ok(DmaAliases {
        iommu: expected.unwrap_or_default(),
        aliases,
    })
}

/// An isolation group: functions that cannot be told apart by the SMMU
/// (their StreamID sets intersect, directly or through other members), and
/// every StreamID any of them uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group<T> {
    /// The group's number (its index in [`Groups::groups`]).
    pub id: usize,
    /// The members, in the order they were given.
    pub members: Vec<T>,
    /// Every StreamID of every member, ascending.
    pub sids: Vec<u32>,
}

/// Isolation groups of a set of functions on one IOMMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups<T> {
    groups: Vec<Group<T>>,
    by_sid: VecMap<u32, usize>,
}

impl<T: Clone> Groups<T> {
    /// Groups `functions` (each a member and its StreamIDs): two functions
    /// sharing a StreamID are in the same group, and so transitively.
    /// Groups are numbered in the order of their first member; a function
    /// with no StreamID forms a group of its own with no StreamIDs.
    pub fn build<'a, I>(functions: I) -> Self
    where
        I: IntoIterator<Item = (T, &'a [u32])>,
    {
        let functions: Vec<(T, &[u32])> = functions.into_iter().collect();
        let mut sets = DisjointSets::new(functions.len());
        let mut owner: VecMap<u32, usize> = VecMap::new();
        for (i, (_, sids)) in functions.iter().enumerate() {
            for &sid in sids.iter() {
                match owner.get(&sid) {
                    Some(&j) => sets.union(i, j),
                    None => {
                        owner.insert(sid, i);
                    }
                }
            }
        }
        let mut index_of_root: VecMap<usize, usize> = VecMap::new();
        let mut groups: Vec<Group<T>> = Vec::new();
        let mut by_sid = VecMap::new();
        for (i, (member, sids)) in functions.iter().enumerate() {
            let root = sets.find(i);
            let g = *index_of_root.get_or_insert_with(root, || {
                groups.push(Group {
                    id: groups.len(),
                    members: Vec::new(),
                    sids: Vec::new(),
                });
                groups.len() - 1
            });
            groups[g].members.push(member.clone());
            for &sid in sids.iter() {
                if by_sid.insert(sid, g).is_none() {
                    groups[g].sids.push(sid);
                }
            }
        }
        for g in &mut groups {
            crate::vecmap::sort_small(&mut g.sids);
        }
        Self { groups, by_sid }
    }

    /// Every group, in order of number.
    pub fn groups(&self) -> &[Group<T>] {
        &self.groups
    }

    /// The group using `sid`.
    pub fn group_of_sid(&self, sid: u32) -> Option<&Group<T>> {
        self.by_sid.get(&sid).map(|&g| &self.groups[g])
    }
}

impl<T: Clone + PartialEq> Groups<T> {
    /// The group `member` belongs to.
    pub fn group_of(&self, member: &T) -> Option<&Group<T>> {
        self.groups.iter().find(|g| g.members.contains(member))
    }
}

/// Union-find over `0..n` with path halving and union by size.
#[derive(Debug)]
struct DisjointSets {
    parent: Vec<usize>,
    size: Vec<usize>,
}

impl DisjointSets {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n).collect(),
            size: alloc::vec![1; n],
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a] < self.size[b] {
            core::mem::swap(&mut a, &mut b);
        }
        self.parent[b] = a;
        self.size[a] += self.size[b];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const SMMU: u32 = 0x8001;
    const OTHER_SMMU: u32 = 0x8002;

    fn rid(bus: u8, dev: u8, func: u8) -> Rid {
        Rid::new(bus, dev, func).expect("valid BDF")
    }

    /// QEMU virt's map: identity over all 2^16 RIDs.
    fn identity() -> IommuMap {
        IommuMap::new(
            vec![IommuMapEntry {
                rid_base: 0,
                iommu: SMMU,
                sid_base: 0,
                len: 0x1_0000,
            }],
            NO_MASK,
        )
        .expect("valid map")
    }

    fn bridge(at: Rid, kind: BridgeKind, secondary: u8, subordinate: u8) -> Bridge {
        Bridge {
            rid: at,
            kind,
            secondary,
            subordinate,
        }
    }

    fn rids(f: &Function<'_>) -> Vec<u16> {
        dma_alias_rids(f)
            .expect("valid chain")
            .iter()
            .map(|a| a.rid.0)
            .collect()
    }

    fn sids(f: &Function<'_>) -> Vec<u32> {
        dma_aliases(&identity(), Some(SMMU), f)
            .expect("covered")
            .stream_ids()
    }

    #[test]
    fn rid_fields() {
        let r = rid(0x12, 0x1f, 7);
        assert_eq!(r.0, 0x12ff);
        assert_eq!(
            (r.bus(), r.device(), r.function(), r.devfn()),
            (0x12, 0x1f, 7, 0xff)
        );
        assert_eq!(alloc::format!("{r}"), "12:1f.7");
        assert_eq!(Rid::new(0, 32, 0), None);
        assert_eq!(Rid::new(0, 0, 8), None);
    }

    #[test]
    fn bridge_kinds_from_port_type() {
        assert_eq!(BridgeKind::from_port_type(None), BridgeKind::Conventional);
        assert_eq!(
            BridgeKind::from_port_type(Some(4)),
            BridgeKind::PcieRootPort
        );
        assert_eq!(
            BridgeKind::from_port_type(Some(5)),
            BridgeKind::PcieSwitchUpstream
        );
        assert_eq!(
            BridgeKind::from_port_type(Some(6)),
            BridgeKind::PcieSwitchDownstream
        );
        assert_eq!(BridgeKind::from_port_type(Some(7)), BridgeKind::PcieToPci);
        assert_eq!(BridgeKind::from_port_type(Some(8)), BridgeKind::PciToPcie);
        assert_eq!(
            BridgeKind::from_port_type(Some(0)),
            BridgeKind::OtherPcie(0)
        );
        assert_eq!(BridgeKind::OtherPcie(9).alias_rule(), AliasRule::None);
    }

    #[test]
    fn root_bus_function_has_only_its_own_rid() {
        let f = Function {
            rid: rid(0, 1, 0),
            quirk_devfns: &[],
            upstream: &[],
        };
        assert_eq!(rids(&f), [0x0008]);
        let a = dma_aliases(&identity(), Some(SMMU), &f).unwrap();
        assert_eq!(a.stream_ids(), [0x8]);
        assert!(!a.is_aliased());
        assert_eq!(a.root_alias().sid, 0x8);
        assert_eq!(a.own().source, AliasSource::Own);
        assert_eq!(a.iommu(), SMMU);
    }

    #[test]
    fn pcie_ports_do_not_alias() {
        let rp = bridge(rid(0, 2, 0), BridgeKind::PcieRootPort, 1, 1);
        let f = Function {
            rid: rid(1, 0, 0),
            quirk_devfns: &[],
            upstream: &[rp],
        };
        assert_eq!(rids(&f), [0x0100]);
        // Root port -> switch upstream -> switch downstream -> function.
        let chain = [
            bridge(rid(3, 0, 0), BridgeKind::PcieSwitchDownstream, 4, 4),
            bridge(rid(2, 0, 0), BridgeKind::PcieSwitchUpstream, 3, 4),
            bridge(rid(0, 4, 0), BridgeKind::PcieRootPort, 2, 4),
        ];
        let f = Function {
            rid: rid(4, 0, 0),
            quirk_devfns: &[],
            upstream: &chain,
        };
        assert_eq!(rids(&f), [0x0400]);
        assert_eq!(sids(&f), [0x400]);
    }

    /// QEMU's `pcie-pci-bridge` on the root bus at 00:03.0, secondary bus 2,
    /// with functions at 02:03.0 and 02:04.0: both alias to 02:00.0.
    #[test]
    fn pcie_to_pci_bridge_aliases_to_secondary_bus_devfn_0() {
        let br = [bridge(rid(0, 3, 0), BridgeKind::PcieToPci, 2, 2)];
        let a = Function {
            rid: rid(2, 3, 0),
            quirk_devfns: &[],
            upstream: &br,
        };
        let b = Function {
            rid: rid(2, 4, 0),
            ..a
        };
        assert_eq!(rids(&a), [0x0218, 0x0200]);
        assert_eq!(rids(&b), [0x0220, 0x0200]);
        let aa = dma_aliases(&identity(), Some(SMMU), &a).unwrap();
        assert!(aa.is_aliased());
        assert_eq!(aa.root_alias().sid, 0x200);
        assert_eq!(
            aa.root_alias().source,
            AliasSource::Bridge {
                rid: rid(0, 3, 0),
                kind: BridgeKind::PcieToPci
            }
        );
        let sa = sids(&a);
        let sb = sids(&b);
        let groups = Groups::build([("a", sa.as_slice()), ("b", sb.as_slice())]);
        assert_eq!(groups.groups().len(), 1);
        let g = &groups.groups()[0];
        assert_eq!(g.members, ["a", "b"]);
        assert_eq!(g.sids, [0x200, 0x218, 0x220]);
        assert_eq!(groups.group_of_sid(0x200).map(|g| g.id), Some(0));
        assert_eq!(groups.group_of(&"b").map(|g| g.id), Some(0));
    }

    #[test]
    fn pcie_to_pci_bridge_behind_a_root_port() {
        let chain = [
            bridge(rid(1, 0, 0), BridgeKind::PcieToPci, 2, 2),
            bridge(rid(0, 2, 0), BridgeKind::PcieRootPort, 1, 2),
        ];
        let f = Function {
            rid: rid(2, 1, 3),
            quirk_devfns: &[],
            upstream: &chain,
        };
        assert_eq!(rids(&f), [0x020b, 0x0200]);
    }

    /// A PCI-X (or conventional PCI) bridge without a PCIe capability: the
    /// function appears as the bridge itself.
    #[test]
    fn conventional_and_pci_x_bridges_alias_to_their_own_rid() {
        let br = [bridge(rid(0, 5, 0), BridgeKind::Conventional, 1, 1)];
        let f = Function {
            rid: rid(1, 2, 0),
            quirk_devfns: &[],
            upstream: &br,
        };
        assert_eq!(rids(&f), [0x0110, 0x0028]);
        // The bridge shares a StreamID with what is behind it: one group.
        let sb = [0x28u32];
        let sf = sids(&f);
        let g = Groups::build([(0usize, &sb[..]), (1, sf.as_slice())]);
        assert_eq!(g.groups().len(), 1);
        assert_eq!(g.groups()[0].sids, [0x28, 0x110]);
    }

    #[test]
    fn quirk_pcie_to_pci_bridge_without_pcie_capability() {
        let br = [bridge(
            rid(0, 5, 0),
            BridgeKind::ConventionalPcieToPci,
            3,
            3,
        )];
        let f = Function {
            rid: rid(3, 2, 1),
            quirk_devfns: &[],
            upstream: &br,
        };
        assert_eq!(rids(&f), [0x0311, 0x0300]);
    }

    /// A PCIe device behind a PCI bridge: the PCI/PCI-X-to-PCIe bridge
    /// presents it as itself, and so does the PCI bridge above that.
    #[test]
    fn pcie_device_behind_a_pci_bridge() {
        let chain = [
            bridge(rid(2, 0, 0), BridgeKind::PciToPcie, 3, 3),
            bridge(rid(1, 1, 0), BridgeKind::Conventional, 2, 3),
            bridge(rid(0, 2, 0), BridgeKind::PcieToPci, 1, 3),
        ];
        let f = Function {
            rid: rid(3, 0, 0),
            quirk_devfns: &[],
            upstream: &chain,
        };
        assert_eq!(rids(&f), [0x0300, 0x0200, 0x0108, 0x0100]);
        let a = dma_aliases(&identity(), None, &f).unwrap();
        assert_eq!(a.root_alias().rid, rid(1, 0, 0));
    }

    #[test]
    fn nested_pcie_to_pci_bridges_and_duplicate_sids() {
        // PCIe-to-PCI bridge at 00:01.0 (bus 1), a PCI bridge at 01:00.0
        // (bus 2): the PCI bridge's own RID equals the outer alias 01:00.0.
        let chain = [
            bridge(rid(1, 0, 0), BridgeKind::Conventional, 2, 2),
            bridge(rid(0, 1, 0), BridgeKind::PcieToPci, 1, 2),
        ];
        let f = Function {
            rid: rid(2, 7, 0),
            quirk_devfns: &[],
            upstream: &chain,
        };
        assert_eq!(rids(&f), [0x0238, 0x0100, 0x0100]);
        assert_eq!(sids(&f), [0x238, 0x100]);
    }

    #[test]
    fn quirk_devfns_come_after_the_own_rid() {
        let f = Function {
            rid: rid(0, 4, 0),
            quirk_devfns: &[0x21],
            upstream: &[],
        };
        let a = dma_alias_rids(&f).unwrap();
        assert_eq!(
            a[1],
            AliasRid {
                rid: Rid(0x0021),
                source: AliasSource::Quirk
            }
        );
    }

    #[test]
    fn a_chain_that_does_not_reach_the_function_is_refused() {
        let br = [bridge(rid(0, 3, 0), BridgeKind::PcieToPci, 2, 2)];
        let f = Function {
            rid: rid(5, 0, 0),
            quirk_devfns: &[],
            upstream: &br,
        };
        assert_eq!(
            dma_alias_rids(&f),
            Err(TopologyError::BrokenChain {
                bridge: rid(0, 3, 0),
                bus: 5
            })
        );
        // A virtual bus (no bridge of its own) inside the bridge's range.
        let br = [bridge(rid(0, 3, 0), BridgeKind::PcieRootPort, 2, 6)];
        let f = Function {
            rid: rid(5, 0, 0),
            ..f
        };
        assert_eq!(rids(&Function { upstream: &br, ..f }), [0x0500]);
    }

    #[test]
    fn iommu_map_with_offset_mask_and_several_entries() {
        let map = IommuMap::new(
            vec![
                IommuMapEntry {
                    rid_base: 0x0000,
                    iommu: SMMU,
                    sid_base: 0x1_0000,
                    len: 0x100,
                },
                IommuMapEntry {
                    rid_base: 0x0100,
                    iommu: OTHER_SMMU,
                    sid_base: 0x40,
                    len: 0x100,
                },
                IommuMapEntry {
                    rid_base: 0x0200,
                    iommu: SMMU,
                    sid_base: 0x7000,
                    len: 0x100,
                },
            ],
            0x03ff,
        )
        .unwrap();
        let l = |r| map.lookup(Rid(r));
        assert_eq!(
            l(0x0008),
            Ok(MappedId {
                iommu: SMMU,
                sid: 0x1_0008
            })
        );
        assert_eq!(
            l(0x0123),
            Ok(MappedId {
                iommu: OTHER_SMMU,
                sid: 0x63
            })
        );
        assert_eq!(
            l(0x0218),
            Ok(MappedId {
                iommu: SMMU,
                sid: 0x7018
            })
        );
        // The mask drops bus bits 15:10: bus 0x06 looks like bus 0x02.
        assert_eq!(
            l(0x0618),
            Ok(MappedId {
                iommu: SMMU,
                sid: 0x7018
            })
        );
        assert_eq!(
            l(0x0318),
            Err(TopologyError::NotCovered { rid: Rid(0x0318) })
        );

        // A function at 02:03.0 behind a PCIe-to-PCI bridge at 01:00.0,
        // which sits behind a root port on the root bus.
        let chain = [
            bridge(rid(1, 0, 0), BridgeKind::PcieToPci, 2, 2),
            bridge(rid(0, 1, 0), BridgeKind::PcieRootPort, 1, 2),
        ];
        let f = Function {
            rid: rid(2, 3, 0),
            quirk_devfns: &[],
            upstream: &chain,
        };
        let a = dma_aliases(&map, Some(SMMU), &f).unwrap();
        assert_eq!(a.stream_ids(), [0x7018, 0x7000]);
        // The function's own RID is on another SMMU than expected.
        let g = Function {
            rid: rid(1, 2, 0),
            quirk_devfns: &[],
            upstream: &[bridge(rid(0, 1, 0), BridgeKind::PcieRootPort, 1, 2)],
        };
        assert_eq!(
            dma_aliases(&map, Some(SMMU), &g),
            Err(TopologyError::OtherIommu {
                rid: rid(1, 2, 0),
                iommu: OTHER_SMMU,
                expected: SMMU
            })
        );
        assert_eq!(dma_aliases(&map, None, &g).unwrap().iommu(), OTHER_SMMU);
    }

    #[test]
    fn an_alias_on_another_iommu_is_refused() {
        // Function on bus 1 (SMMU), its alias 00:01.0 on OTHER_SMMU.
        let map = IommuMap::new(
            vec![
                IommuMapEntry {
                    rid_base: 0x0000,
                    iommu: OTHER_SMMU,
                    sid_base: 0,
                    len: 0x100,
                },
                IommuMapEntry {
                    rid_base: 0x0100,
                    iommu: SMMU,
                    sid_base: 0x100,
                    len: 0xff00,
                },
            ],
            NO_MASK,
        )
        .unwrap();
        let br = [bridge(rid(0, 1, 0), BridgeKind::Conventional, 1, 1)];
        let f = Function {
            rid: rid(1, 0, 0),
            quirk_devfns: &[],
            upstream: &br,
        };
        assert_eq!(
            dma_aliases(&map, None, &f),
            Err(TopologyError::OtherIommu {
                rid: rid(0, 1, 0),
                iommu: OTHER_SMMU,
                expected: SMMU
            })
        );
    }

    #[test]
    fn uncovered_rids_and_bad_maps_are_typed_errors() {
        let map = IommuMap::new(
            vec![IommuMapEntry {
                rid_base: 0x0100,
                iommu: SMMU,
                sid_base: 0,
                len: 0x100,
            }],
            NO_MASK,
        )
        .unwrap();
        // The function is covered, its alias (bus 2) is not.
        let chain = [
            bridge(rid(1, 0, 0), BridgeKind::PcieToPci, 2, 2),
            bridge(rid(0, 1, 0), BridgeKind::PcieRootPort, 1, 2),
        ];
        let f = Function {
            rid: rid(2, 0, 1),
            quirk_devfns: &[],
            upstream: &chain,
        };
        assert_eq!(
            dma_aliases(&map, Some(SMMU), &f),
            Err(TopologyError::NotCovered { rid: rid(2, 0, 1) })
        );
        let empty = IommuMap::new(Vec::new(), NO_MASK).unwrap();
        assert_eq!(empty.lookup(Rid(0)), Err(TopologyError::NoIommuMap));
        assert_eq!(
            IommuMap::new(
                vec![IommuMapEntry {
                    rid_base: 0x0100,
                    iommu: SMMU,
                    sid_base: 0,
                    len: 1,
                }],
                0xff
            ),
            Err(TopologyError::MaskIgnoresBase {
                rid_base: 0x100,
                mask: 0xff
            })
        );
        let high = IommuMap::new(
            vec![IommuMapEntry {
                rid_base: 0,
                iommu: SMMU,
                sid_base: u32::MAX,
                len: 0x1_0000,
            }],
            NO_MASK,
        )
        .unwrap();
        assert_eq!(high.lookup(Rid(0)).map(|m| m.sid), Ok(u32::MAX));
        assert_eq!(
            high.lookup(Rid(1)),
            Err(TopologyError::SidOverflow { rid: Rid(1) })
        );
        // rid_base + len beyond 32 bits does not wrap.
        let wide = IommuMap::new(
            vec![IommuMapEntry {
                rid_base: 0xff00,
                iommu: SMMU,
                sid_base: 0,
                len: u32::MAX,
            }],
            NO_MASK,
        )
        .unwrap();
        assert_eq!(wide.lookup(Rid(0xffff)).map(|m| m.sid), Ok(0xff));
        assert_eq!(
            wide.lookup(Rid(0x0001)),
            Err(TopologyError::NotCovered { rid: Rid(1) })
        );
    }

    #[test]
    fn groups_join_transitively_and_keep_order() {
        let a = [1u32, 2];
        let b = [3u32];
        let c = [2u32, 4];
        let d = [4u32, 3];
        let e: [u32; 0] = [];
        let f = [9u32];
        let g = Groups::build([
            ('a', &a[..]),
            ('b', &b[..]),
            ('e', &e[..]),
            ('f', &f[..]),
            ('c', &c[..]),
            ('d', &d[..]),
        ]);
        let ids: Vec<(Vec<char>, Vec<u32>)> = g
            .groups()
            .iter()
            .map(|g| (g.members.clone(), g.sids.clone()))
            .collect();
        assert_eq!(
            ids,
            [
                (vec!['a', 'b', 'c', 'd'], vec![1, 2, 3, 4]),
                (vec!['e'], vec![]),
                (vec!['f'], vec![9]),
            ]
        );
        assert_eq!(g.group_of_sid(4).map(|g| g.id), Some(0));
        assert_eq!(g.group_of(&'f').map(|g| g.id), Some(2));
        assert!(g.group_of_sid(5).is_none());
        for (i, grp) in g.groups().iter().enumerate() {
            assert_eq!(grp.id, i);
        }
    }

    #[test]
    fn default_qemu_topology_has_one_group_per_function() {
        let rp = [bridge(rid(0, 2, 0), BridgeKind::PcieRootPort, 1, 1)];
        let fns = [
            Function {
                rid: rid(0, 0, 0),
                quirk_devfns: &[],
                upstream: &[],
            },
            Function {
                rid: rid(0, 1, 0),
                quirk_devfns: &[],
                upstream: &[],
            },
            Function {
                rid: rid(0, 2, 0),
                quirk_devfns: &[],
                upstream: &[],
            },
            Function {
                rid: rid(1, 0, 0),
                quirk_devfns: &[],
                upstream: &rp,
            },
        ];
        let s: Vec<Vec<u32>> = fns.iter().map(sids).collect();
        let g = Groups::build(s.iter().enumerate().map(|(i, v)| (i, v.as_slice())));
        assert_eq!(g.groups().len(), 4);
        assert!(
            g.groups()
                .iter()
                .all(|g| g.members.len() == 1 && g.sids.len() == 1)
        );
    }
}
