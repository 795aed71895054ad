//! IORT nodes: the common header, the type-specific fields of ITS group,
//! named component, root complex and SMMUv3 nodes, and ID mappings, each
//! decoded with bounds checks.

use super::{ID_MAPPING_LEN, IortError, MAPPING_SINGLE, NODE_HEADER_LEN, node_type, smmu_flags};

// Node-specific field offsets, from the node's start.
const SMMU_BASE: usize = 16;
const SMMU_FLAGS: usize = 24;
const SMMU_VATOS: usize = 32;
const SMMU_MODEL: usize = 40;
const SMMU_EVENT_GSIV: usize = 44;
const SMMU_PRI_GSIV: usize = 48;
const SMMU_GERR_GSIV: usize = 52;
const SMMU_SYNC_GSIV: usize = 56;
const SMMU_PROXIMITY: usize = 60;
const SMMU_DEVICE_ID_INDEX: usize = 64;
const RC_MEMORY: usize = 16;
const RC_ATS: usize = 24;
const RC_SEGMENT: usize = 28;
const RC_ADDRESS_LIMIT: usize = 32;
const NC_FLAGS: usize = 16;
const NC_MEMORY: usize = 20;
const NC_ADDRESS_LIMIT: usize = 28;
const NC_NAME: usize = 29;
const ITS_COUNT: usize = 16;
const ITS_IDS: usize = 20;

pub(super) fn bytes<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

pub(super) fn u8_at(b: &[u8], at: usize) -> Option<u8> {
    b.get(at).copied()
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    bytes(b, at).map(u16::from_le_bytes)
}

pub(super) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    bytes(b, at).map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    bytes(b, at).map(u64::from_le_bytes)
}

/// One node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node<'a> {
    /// Its offset from the table's start (what output references name).
    pub offset: u32,
    /// Its type ([`node_type`]).
    pub node_type: u8,
    /// Its length in bytes.
    pub length: u16,
    /// Its revision.
    pub revision: u8,
    /// Its identifier (reserved, 0, before issue E).
    pub identifier: u32,
    /// Number of ID mappings.
    pub mapping_count: u32,
    /// The type-specific fields.
    pub kind: NodeKind<'a>,
    /// The ID mapping array's bytes.
    mappings: &'a [u8],
}

/// A node's type-specific fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind<'a> {
    /// An ITS group.
    ItsGroup {
        /// Number of ITSs.
        its_count: u32,
    },
    /// A named component.
    NamedComponent(NamedComponent<'a>),
    /// A PCI root complex.
    RootComplex(RootComplex),
    /// An SMMUv3.
    SmmuV3(SmmuV3),
    /// Another type (SMMUv1/v2, PMCG, RMR, or newer): only the header and
    /// ID mappings are decoded.
    Other,
}

/// Memory access properties (root complex and named component nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryAccess {
    /// Cache coherency attribute: 1 = fully coherent.
    pub cca: u32,
    /// Allocation hints.
    pub hints: u8,
    /// Memory access flags: bit 0 CPM (coherent path to memory), bit 1
    /// DACS (device attributes are cacheable, inner shareable).
    pub flags: u8,
}

impl MemoryAccess {
    fn at(node: &[u8], at: usize) -> Option<Self> {
        Some(Self {
            cca: u32_at(node, at)?,
            hints: u8_at(node, at + 4)?,
            flags: u8_at(node, at + 7)?,
        })
    }

    /// Whether the device is fully I/O coherent (CCA = 1).
    pub fn coherent(&self) -> bool {
        self.cca == 1
    }
}

/// A PCI root complex node's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootComplex {
    /// Memory access properties.
    pub memory: MemoryAccess,
    /// ATS attribute: bit 0 ATS supported (bit 1 PRI, bit 2 PASID
    /// forwarding in later issues).
    pub ats: u32,
    /// PCI segment number.
    pub segment: u32,
    /// Memory address size limit in bits (revision 1 and later).
    pub address_limit: Option<u8>,
}

impl RootComplex {
    /// Whether the root complex supports ATS.
    pub fn ats_supported(&self) -> bool {
        self.ats & 1 != 0
    }
}

/// A named component node's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamedComponent<'a> {
    /// Node flags.
    pub flags: u32,
    /// Memory access properties.
    pub memory: MemoryAccess,
    /// Device memory address size limit in bits.
    pub address_limit: u8,
    /// The device object name (ASCII, without its NUL), e.g. `\_SB.DEV0`.
    pub name: &'a [u8],
}

/// An SMMUv3 node's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmmuV3 {
    /// Base address of the register frame.
    pub base: u64,
    /// Flags ([`smmu_flags`]).
    pub flags: u32,
    /// VATOS base address (0: none).
    pub vatos: u64,
    /// Model: 0 generic SMMUv3, else an implementation with errata.
    pub model: u32,
    /// Event queue GSIV (0: not wired).
    pub event_gsiv: u32,
    /// PRI queue GSIV.
    pub pri_gsiv: u32,
    /// Global error GSIV.
    pub gerr_gsiv: u32,
    /// CMD_SYNC GSIV.
    pub sync_gsiv: u32,
    /// The proximity domain field, when the node has it.
    pub proximity_domain_field: Option<u32>,
    /// The DeviceID mapping index field, when the node has it.
    pub device_id_mapping_index_field: Option<u32>,
}

impl SmmuV3 {
    /// COHACC override: the SMMU's accesses are coherent whatever IDR0 says.
    pub fn coherent(&self) -> bool {
        self.flags & smmu_flags::COHACC_OVERRIDE != 0
    }

    /// HTTU override (0: none; 1: HTTU access flag; 2: access + dirty).
    pub fn httu_override(&self) -> u8 {
        ((self.flags >> smmu_flags::HTTU_OVERRIDE_SHIFT) & 3) as u8
    }

    /// The proximity domain, when present and flagged valid.
    pub fn proximity_domain(&self) -> Option<u32> {
        self.proximity_domain_field
            .filter(|_| self.flags & smmu_flags::PROXIMITY_VALID != 0)
    }

    /// Index of the ID mapping that gives the SMMU's own MSIs their
    /// DeviceID, when present and flagged valid.
    pub fn device_id_mapping_index(&self) -> Option<u32> {
        self.device_id_mapping_index_field
            .filter(|_| self.flags & smmu_flags::DEVICE_ID_INDEX_VALID != 0)
    }
}

/// One ID mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapping {
    /// First input ID.
    pub input_base: u32,
    /// The number of IDs minus one, as the table encodes it.
    pub id_count_minus_one: u32,
    /// Output ID of `input_base`.
    pub output_base: u32,
    /// Table offset of the node the output IDs belong to.
    pub output_reference: u32,
    /// Flags ([`MAPPING_SINGLE`]).
    pub flags: u32,
}

impl IdMapping {
    fn at(b: &[u8], at: usize) -> Option<Self> {
        Some(Self {
            input_base: u32_at(b, at)?,
            id_count_minus_one: u32_at(b, at + 4)?,
            output_base: u32_at(b, at + 8)?,
            output_reference: u32_at(b, at + 12)?,
            flags: u32_at(b, at + 16)?,
        })
    }

    /// A single mapping: one output ID, input fields ignored.
    pub fn is_single(&self) -> bool {
        self.flags & MAPPING_SINGLE != 0
    }

    /// Number of IDs in the range (up to 2^32).
    pub fn len(&self) -> u64 {
        u64::from(self.id_count_minus_one) + 1
    }

    /// Never empty: the encoding cannot express zero IDs.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Last input ID (saturating; a checked table never saturates).
    pub fn input_last(&self) -> u32 {
        self.input_base.saturating_add(self.id_count_minus_one)
    }

    /// Whether this range mapping covers input `id`.
    pub fn covers(&self, id: u32) -> bool {
        !self.is_single() && (self.input_base..=self.input_last()).contains(&id)
    }

    /// The output ID of input `id`, if covered.
    pub fn map(&self, id: u32) -> Option<u32> {
        if !self.covers(id) {
            return None;
        }
        self.output_base.checked_add(id - self.input_base)
    }

    pub(super) fn overlaps(&self, other: &Self) -> bool {
        self.input_base <= other.input_last() && other.input_base <= self.input_last()
    }
}

impl<'a> Node<'a> {
    /// Decodes and bounds-checks the node at `at`.
    pub(super) fn decode(table: &'a [u8], at: usize) -> Result<Self, IortError> {
        let offset = at as u32;
        let header_fits = at
            .checked_add(NODE_HEADER_LEN)
            .is_some_and(|end| end <= table.len());
        if !header_fits {
            return Err(IortError::BadNodeLength {
                node: offset,
                length: 0,
            });
        }
        let field = |o| u32_at(table, at + o).unwrap_or(0);
        let node_type = u8_at(table, at).unwrap_or(0);
        let length = u16_at(table, at + 1).unwrap_or(0);
        let bytes = table
            .get(at..at + usize::from(length))
            .filter(|_| usize::from(length) >= NODE_HEADER_LEN)
            .ok_or(IortError::BadNodeLength {
                node: offset,
                length,
            })?;
        let mapping_count = field(8);
        let mapping_offset = field(12);
        let mappings = if mapping_count == 0 {
            &[][..]
        } else {
            let start = mapping_offset as usize;
            (mapping_count as usize)
                .checked_mul(ID_MAPPING_LEN)
                .and_then(|n| n.checked_add(start))
                .filter(|_| start >= NODE_HEADER_LEN)
                .and_then(|end| bytes.get(start..end))
                .ok_or(IortError::MappingsBeyondNode {
                    node: offset,
                    offset: mapping_offset,
                    count: mapping_count,
                })?
        };
        // The type-specific part ends where the mappings start.
        let fixed = if mapping_count == 0 {
            bytes
        } else {
            bytes.get(..mapping_offset as usize).unwrap_or(bytes)
        };
        let too_short = IortError::NodeTooShort {
            node: offset,
            node_type,
        };
        let kind = match node_type {
            node_type::ITS_GROUP => {
                let its_count = u32_at(fixed, ITS_COUNT).ok_or(too_short)?;
                let ids_end = (its_count as usize)
                    .checked_mul(4)
                    .and_then(|n| n.checked_add(ITS_IDS));
                if ids_end.is_none_or(|end| end > fixed.len()) {
                    return Err(too_short);
                }
                NodeKind::ItsGroup { its_count }
            }
            node_type::NAMED_COMPONENT => {
                let name_area = fixed.get(NC_NAME..).ok_or(too_short)?;
                let len = name_area.iter().position(|&b| b == 0).ok_or(too_short)?;
                NodeKind::NamedComponent(NamedComponent {
                    flags: u32_at(fixed, NC_FLAGS).ok_or(too_short)?,
                    memory: MemoryAccess::at(fixed, NC_MEMORY).ok_or(too_short)?,
                    address_limit: u8_at(fixed, NC_ADDRESS_LIMIT).ok_or(too_short)?,
                    name: &name_area[..len],
                })
            }
            node_type::ROOT_COMPLEX => NodeKind::RootComplex(RootComplex {
                memory: MemoryAccess::at(fixed, RC_MEMORY).ok_or(too_short)?,
                ats: u32_at(fixed, RC_ATS).ok_or(too_short)?,
                segment: u32_at(fixed, RC_SEGMENT).ok_or(too_short)?,
                address_limit: u8_at(fixed, RC_ADDRESS_LIMIT),
            }),
            node_type::SMMU_V3 => {
                let f = |o| u32_at(fixed, o).ok_or(too_short);
                NodeKind::SmmuV3(SmmuV3 {
                    base: u64_at(fixed, SMMU_BASE).ok_or(too_short)?,
                    flags: f(SMMU_FLAGS)?,
                    vatos: u64_at(fixed, SMMU_VATOS).ok_or(too_short)?,
                    model: f(SMMU_MODEL)?,
                    event_gsiv: f(SMMU_EVENT_GSIV)?,
                    pri_gsiv: f(SMMU_PRI_GSIV)?,
                    gerr_gsiv: f(SMMU_GERR_GSIV)?,
                    sync_gsiv: f(SMMU_SYNC_GSIV)?,
                    proximity_domain_field: u32_at(fixed, SMMU_PROXIMITY),
                    device_id_mapping_index_field: u32_at(fixed, SMMU_DEVICE_ID_INDEX),
                })
            }
            _ => NodeKind::Other,
        };
        Ok(Self {
            offset,
            node_type,
            length,
            revision: u8_at(table, at + 3).unwrap_or(0),
            identifier: field(4),
            mapping_count,
            kind,
            mappings,
        })
    }

    /// The node's ID mappings, in table order.
    pub fn mappings(&self) -> impl Iterator<Item = IdMapping> + 'a {
        let m = self.mappings;
        (0..m.len() / ID_MAPPING_LEN).filter_map(move |i| IdMapping::at(m, i * ID_MAPPING_LEN))
    }

    /// The range mapping covering input `id`: (output reference, output ID).
    pub fn map_id(&self, id: u32) -> Result<(u32, u32), IortError> {
        self.mappings()
            .find_map(|m| Some((m.output_reference, m.map(id)?)))
            .ok_or(IortError::NotCovered {
                node: self.offset,
                id,
            })
    }
}
