//! The ACPI IO Remapping Table (IORT, Arm DEN 0049), parsed from its bytes.
//!
//! On an ACPI system the IORT is what a device tree's `iommu-map` is on a
//! DT system: it says which SMMU sits in front of each PCI root complex
//! (or named component) and how requester IDs become StreamIDs. This module
//! reads it without allocating: [`Iort::parse`] checks the whole table once
//! (header, checksum, revision, every node and every ID mapping), after
//! which [`Iort::nodes`] iterates over typed [`Node`]s and
//! [`Iort::smmu_stream`] answers (PCI segment, RID) -> (SMMUv3, StreamID).
//! No input can make it panic: every read is bounds-checked and every
//! malformed table is an [`IortError`].
//!
//! # Layout (all little-endian)
//!
//! | offset | table header |
//! | --- | --- |
//! | 0 | signature `IORT`, length (u32), revision (u8), checksum (u8), OEM fields (36 bytes in all: the ACPI header) |
//! | 36 | number of nodes (u32), offset of the node array (u32), reserved (u32) |
//!
//! Every node starts with type (u8), length (u16), revision (u8),
//! identifier (u32), number of ID mappings (u32), offset of the ID mapping
//! array from the node's start (u32). An ID mapping is 20 bytes: input
//! base, number of IDs *minus one*, output base, output reference (offset
//! of the target node from the table's start), flags (bit 0: single
//! mapping, whose input fields are ignored).
//!
//! # Policies
//!
//! * Revisions 0 (issue C/D tables) to [`MAX_REVISION`] (issue E.f) are
//!   accepted; a newer table is refused ([`IortError::UnknownRevision`]),
//!   since node layouts changed between issues and a newer one may have
//!   reused fields this parser would misread.
//! * A revision-dependent field (the SMMUv3 proximity domain and DeviceID
//!   mapping index, the root complex's memory address size limit) is read
//!   only when the node's fixed part covers it; otherwise it is `None`.
//! * Two range mappings of one node whose input ranges overlap are refused
//!   ([`IortError::OverlappingMappings`]): the table would be ambiguous.
//!   Single mappings take no part (their input fields are ignored).
//! * A lookup follows the covering range mapping of the root complex (or
//!   named component) to its output node: an SMMUv3 gives the StreamID;
//!   an ITS group (or an SMMUv1/v2, ...) means the ID is not translated by
//!   an SMMUv3 ([`IortError::NotBehindSmmuV3`]).

use core::fmt;

pub mod acpi;
mod compare;
mod node;

pub use compare::{Disagreement, DtSmmu, compare_with_iommu_map};
pub use node::{IdMapping, MemoryAccess, NamedComponent, Node, NodeKind, RootComplex, SmmuV3};
use node::{u8_at, u32_at};

/// The table signature.
pub const SIGNATURE: [u8; 4] = *b"IORT";
/// Size of the table header: the ACPI header (36) + node count, node array
/// offset, reserved.
pub const HEADER_LEN: usize = 48;
/// Size of the header every node starts with.
pub const NODE_HEADER_LEN: usize = 16;
/// Size of one ID mapping.
pub const ID_MAPPING_LEN: usize = 20;
/// Newest table revision this parser knows (DEN 0049 issue E.f).
pub const MAX_REVISION: u8 = 7;

/// Node types (DEN 0049, table "Node types").
pub mod node_type {
    /// ITS group.
    pub const ITS_GROUP: u8 = 0;
    /// Named component (a platform device named in the namespace).
    pub const NAMED_COMPONENT: u8 = 1;
    /// PCI root complex.
    pub const ROOT_COMPLEX: u8 = 2;
    /// SMMUv1 or SMMUv2.
    pub const SMMU_V1_V2: u8 = 3;
    /// SMMUv3.
    pub const SMMU_V3: u8 = 4;
    /// Performance monitoring counter group.
    pub const PMCG: u8 = 5;
    /// Reserved memory range.
    pub const RMR: u8 = 6;
}

/// SMMUv3 node flags.
pub mod smmu_flags {
    /// COHACC override: the SMMU's table walks are I/O coherent.
    pub const COHACC_OVERRIDE: u32 = 1 << 0;
    /// HTTU override, bits 2:1.
    pub const HTTU_OVERRIDE_SHIFT: u32 = 1;
    /// The proximity domain field is valid.
    pub const PROXIMITY_VALID: u32 = 1 << 3;
    /// The DeviceID mapping index field is valid.
    pub const DEVICE_ID_INDEX_VALID: u32 = 1 << 4;
}

/// ID mapping flag: a single mapping (input base and count are ignored).
pub const MAPPING_SINGLE: u32 = 1 << 0;

/// Why a table is refused or a lookup has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IortError {
    /// The buffer is shorter than the table header.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        have: usize,
    },
    /// The signature is not `IORT`.
    BadSignature([u8; 4]),
    /// The header's length is smaller than the header or beyond the buffer.
    BadLength {
        /// The header's length field.
        length: u32,
        /// Bytes given.
        buffer: usize,
    },
    /// The bytes of the table do not sum to 0 (mod 256).
    BadChecksum {
        /// Their sum.
        sum: u8,
    },
    /// A revision newer than [`MAX_REVISION`].
    UnknownRevision(u8),
    /// The node array starts inside the header or beyond the table.
    BadNodeArray {
        /// Its offset.
        offset: u32,
    },
    /// A node's header does not fit in the table, its length is smaller
    /// than a node header (e.g. 0), or it runs beyond the table.
    BadNodeLength {
        /// The node's offset.
        node: u32,
        /// Its length field (0 when the header itself does not fit).
        length: u16,
    },
    /// A node is too short for the fields of its type.
    NodeTooShort {
        /// The node's offset.
        node: u32,
        /// Its type.
        node_type: u8,
    },
    /// A node's ID mapping array runs beyond the node.
    MappingsBeyondNode {
        /// The node's offset.
        node: u32,
        /// Offset of the array from the node's start.
        offset: u32,
        /// Number of mappings.
        count: u32,
    },
    /// Input base + number of IDs (or output base + number of IDs) wraps
    /// past 2^32.
    IdOverflow {
        /// The node's offset.
        node: u32,
        /// Index of the mapping.
        index: u32,
    },
    /// Two range mappings of one node cover a common input ID.
    OverlappingMappings {
        /// The node's offset.
        node: u32,
        /// Index of the first mapping.
        first: u32,
        /// Index of the second.
        second: u32,
    },
    /// An output reference is not the offset of a node of the table.
    BadReference {
        /// The node's offset.
        node: u32,
        /// Index of the mapping.
        index: u32,
        /// The reference.
        reference: u32,
    },
    /// An SMMUv3 node's DeviceID mapping index names no mapping of it.
    BadDeviceIdIndex {
        /// The node's offset.
        node: u32,
        /// The index.
        index: u32,
    },
    /// Lookup: no root complex node has this PCI segment.
    NoRootComplex {
        /// The segment.
        segment: u32,
    },
    /// Lookup: no range mapping of the node covers the ID.
    NotCovered {
        /// The node's offset.
        node: u32,
        /// The input ID.
        id: u32,
    },
    /// Lookup: the ID leads to a node that is not an SMMUv3 (an ITS group:
    /// the device's DMA is not translated; or an SMMUv1/v2, a PMCG...).
    NotBehindSmmuV3 {
        /// The node reached.
        node: u32,
        /// Its type.
        node_type: u8,
    },
}

impl fmt::Display for IortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { needed, have } => {
                write!(f, "IORT truncated: {have} bytes, need {needed}")
            }
            Self::BadSignature(s) => write!(f, "not an IORT: signature {s:02x?}"),
            Self::BadLength { length, buffer } => write!(
                f,
                "IORT length {length} is below the header or beyond the {buffer}-byte buffer"
            ),
            Self::BadChecksum { sum } => write!(f, "IORT checksum: bytes sum to {sum:#04x}, not 0"),
            Self::UnknownRevision(r) => {
                write!(f, "IORT revision {r} is newer than {MAX_REVISION}")
            }
            Self::BadNodeArray { offset } => write!(f, "IORT node array at {offset:#x}"),
            Self::BadNodeLength { node, length } => {
                write!(f, "IORT node at {node:#x}: bad length {length}")
            }
            Self::NodeTooShort { node, node_type } => write!(
                f,
                "IORT node at {node:#x}: too short for a type-{node_type} node"
            ),
            Self::MappingsBeyondNode {
                node,
                offset,
                count,
            } => write!(
                f,
                "IORT node at {node:#x}: {count} ID mappings at +{offset:#x} run beyond it"
            ),
            Self::IdOverflow { node, index } => write!(
                f,
                "IORT node at {node:#x}: ID mapping {index} wraps past 2^32"
            ),
            Self::OverlappingMappings {
                node,
                first,
                second,
            } => write!(
                f,
                "IORT node at {node:#x}: ID mappings {first} and {second} overlap"
            ),
            Self::BadReference {
                node,
                index,
                reference,
            } => write!(
                f,
                "IORT node at {node:#x}: ID mapping {index} references {reference:#x}, not a node"
            ),
            Self::BadDeviceIdIndex { node, index } => write!(
                f,
                "IORT SMMUv3 node at {node:#x}: DeviceID mapping index {index} names no mapping"
            ),
            Self::NoRootComplex { segment } => {
                write!(f, "IORT has no root complex for PCI segment {segment}")
            }
            Self::NotCovered { node, id } => {
                write!(f, "IORT node at {node:#x} maps no ID {id:#x}")
            }
            Self::NotBehindSmmuV3 { node, node_type } => write!(
                f,
                "IORT: the ID leads to a type-{node_type} node at {node:#x}, not an SMMUv3"
            ),
        }
    }
}

impl core::error::Error for IortError {}

/// A parsed, fully checked IORT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iort<'a> {
    table: &'a [u8],
    revision: u8,
    node_count: u32,
    node_offset: u32,
}

impl<'a> Iort<'a> {
    /// Parses and checks the table at the start of `bytes` (bytes beyond
    /// the header's length are ignored).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, IortError> {
        if bytes.len() < HEADER_LEN {
            return Err(IortError::Truncated {
                needed: HEADER_LEN,
                have: bytes.len(),
            });
        }
        let header = |at| u32_at(bytes, at).unwrap_or(0);
        let signature = node::bytes::<4>(bytes, 0).unwrap_or_default();
        if signature != SIGNATURE {
            return Err(IortError::BadSignature(signature));
        }
        let length = header(4);
        let table = usize::try_from(length)
            .ok()
            .filter(|&l| l >= HEADER_LEN)
            .and_then(|l| bytes.get(..l))
            .ok_or(IortError::BadLength {
                length,
                buffer: bytes.len(),
            })?;
        let sum = table.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        if sum != 0 {
            return Err(IortError::BadChecksum { sum });
        }
        let revision = u8_at(table, 8).unwrap_or(0);
        if revision > MAX_REVISION {
            return Err(IortError::UnknownRevision(revision));
        }
        let node_count = header(36);
        let node_offset = header(40);
        let start = node_offset as usize;
        if node_count > 0 && (start < HEADER_LEN || start >= table.len()) {
            return Err(IortError::BadNodeArray {
                offset: node_offset,
            });
        }
        let iort = Self {
            table,
            revision,
            node_count,
            node_offset,
        };
        iort.check_nodes()?;
        Ok(iort)
    }

    /// Every node is decodable; every mapping is in range, does not
    /// overflow, overlaps no other range mapping of its node, and
    /// references a node.
    fn check_nodes(&self) -> Result<(), IortError> {
        let mut at = self.node_offset as usize;
        for _ in 0..self.node_count {
            let node = Node::decode(self.table, at)?;
            at += usize::from(node.length);
            for (i, m) in node.mappings().enumerate() {
                let index = i as u32;
                let c = m.id_count_minus_one;
                let wraps =
                    m.input_base.checked_add(c).is_none() || m.output_base.checked_add(c).is_none();
                if !m.is_single() && wraps {
                    return Err(IortError::IdOverflow {
                        node: node.offset,
                        index,
                    });
                }
                if self.node_at(m.output_reference).is_none() {
                    return Err(IortError::BadReference {
                        node: node.offset,
                        index,
                        reference: m.output_reference,
                    });
                }
                if m.is_single() {
                    continue;
                }
                for (j, other) in node.mappings().enumerate().skip(i + 1) {
                    if !other.is_single() && m.overlaps(&other) {
                        return Err(IortError::OverlappingMappings {
                            node: node.offset,
                            first: index,
                            second: j as u32,
                        });
                    }
                }
            }
            if let NodeKind::SmmuV3(s) = node.kind
                && let Some(index) = s.device_id_mapping_index()
                && index >= node.mapping_count
            {
                return Err(IortError::BadDeviceIdIndex {
                    node: node.offset,
                    index,
                });
            }
        }
        Ok(())
    }

    /// The table's revision.
    pub fn revision(&self) -> u8 {
        self.revision
    }

    /// The table's bytes (exactly its header's length).
    pub fn bytes(&self) -> &'a [u8] {
        self.table
    }

    /// Number of nodes.
    pub fn node_count(&self) -> u32 {
        self.node_count
    }

    /// Every node, in table order.
    pub fn nodes(&self) -> Nodes<'a> {
        Nodes {
            table: self.table,
            at: self.node_offset as usize,
            left: self.node_count,
        }
    }

    /// The node at table offset `offset`, if one starts there.
    pub fn node_at(&self, offset: u32) -> Option<Node<'a>> {
        self.nodes().find(|n| n.offset == offset)
    }

    /// Every SMMUv3 node, with its offset.
    pub fn smmu_v3_nodes(&self) -> impl Iterator<Item = (u32, SmmuV3)> + 'a {
        self.nodes().filter_map(|n| match n.kind {
            NodeKind::SmmuV3(s) => Some((n.offset, s)),
            _ => None,
        })
    }

    /// The root complex node of PCI segment `segment`.
    pub fn root_complex(&self, segment: u32) -> Option<(Node<'a>, RootComplex)> {
        self.nodes().find_map(|n| match n.kind {
            NodeKind::RootComplex(rc) if rc.segment == segment => Some((n, rc)),
            _ => None,
        })
    }

    /// The SMMUv3 and StreamID of requester `rid` on PCI segment `segment`:
    /// the root complex's mapping covering `rid`, then each output node's
    /// mapping in turn, until an SMMUv3 node.
    pub fn smmu_stream(&self, segment: u32, rid: u16) -> Result<SmmuStream, IortError> {
        let (rc, _) = self
            .root_complex(segment)
            .ok_or(IortError::NoRootComplex { segment })?;
        self.follow(rc, u32::from(rid))
    }

    /// Follows `id` from `node` through the node's range mapping covering
    /// it to an SMMUv3 node (one hop: root complexes and named components
    /// map straight to their SMMU).
    pub fn follow(&self, node: Node<'a>, id: u32) -> Result<SmmuStream, IortError> {
        let (next, sid) = node.map_id(id)?;
        let target = self.node_at(next).ok_or(IortError::NotCovered {
            node: node.offset,
            id,
        })?;
        match target.kind {
            NodeKind::SmmuV3(smmu) => Ok(SmmuStream {
                smmu_node: target.offset,
                smmu,
                sid,
            }),
            _ => Err(IortError::NotBehindSmmuV3 {
                node: target.offset,
                node_type: target.node_type,
            }),
        }
    }
}

/// An ID's SMMUv3 and StreamID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmmuStream {
    /// Table offset of the SMMUv3 node.
    pub smmu_node: u32,
    /// The SMMUv3 node's fields.
    pub smmu: SmmuV3,
    /// The StreamID.
    pub sid: u32,
}

/// Iterator over the nodes of a checked table.
#[derive(Debug, Clone)]
pub struct Nodes<'a> {
    table: &'a [u8],
    at: usize,
    left: u32,
}

impl<'a> Iterator for Nodes<'a> {
    type Item = Node<'a>;

    fn next(&mut self) -> Option<Node<'a>> {
        if self.left == 0 {
            return None;
        }
        // The table was checked by `Iort::parse`: every node decodes.
        let node = Node::decode(self.table, self.at).ok()?;
        self.left -= 1;
        self.at += usize::from(node.length);
        Some(node)
    }
}

#[cfg(test)]
mod tests;
