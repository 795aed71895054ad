//! DMA aliases: which requester IDs a function's DMA may carry at the root
//! bus (the rules of Linux's `pci_for_each_dma_alias`, see the module
//! table in [`super`]), and their StreamIDs through an [`IommuMap`].

use alloc::vec::Vec;

use super::{IommuMap, Rid, TopologyError, port_type};

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

    /// The requester ID DMA from below this bridge carries upstream of it
    /// when the bridge takes ownership ([`BridgeKind::alias_rule`]); `None`
    /// when it passes requester IDs through unchanged.
    pub fn alias(&self) -> Option<Rid> {
        match self.kind.alias_rule() {
            AliasRule::None => None,
            AliasRule::SecondaryBus => Some(Rid::from_devfn(self.secondary, 0)),
            AliasRule::Bridge => Some(self.rid),
        }
    }
}

/// The bridges above node `start` of a PCI tree held as a list, nearest
/// first, as [`Function::upstream`] wants them: `parent(i)` is the index of
/// the bridge whose secondary bus holds node `i` (`None` on the root bus)
/// and `bridge(i)` describes node `i` as a bridge (`None`: not a bridge,
/// which ends the chain). At most `limit` bridges are listed, so a
/// malformed parent relation with a cycle cannot loop forever.
pub fn upstream_bridges(
    start: usize,
    limit: usize,
    mut parent: impl FnMut(usize) -> Option<usize>,
    mut bridge: impl FnMut(usize) -> Option<Bridge>,
) -> Vec<Bridge> {
    let mut chain = Vec::new();
    let mut next = parent(start);
    while let Some(p) = next {
        if chain.len() >= limit {
            break;
        }
        let Some(b) = bridge(p) else { break };
        chain.push(b);
        next = parent(p);
    }
    chain
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
        if let Some(rid) = bridge.alias() {
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
