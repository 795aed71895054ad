//! A host bridge's `iommu-map` / `iommu-map-mask` (device tree binding
//! `pci-iommu.yaml`): requester ID -> IOMMU phandle + StreamID.

use alloc::vec::Vec;

use super::{Rid, TopologyError};

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

    /// The entries of an `iommu-map` property, given as its 32-bit cells
    /// (big-endian cells already converted): (rid-base, iommu phandle,
    /// iommu-base, length) per entry. A length that is not a multiple of
    /// four cells is [`TopologyError::MalformedIommuMap`].
    pub fn entries_from_cells(cells: &[u32]) -> Result<Vec<IommuMapEntry>, TopologyError> {
        if !cells.len().is_multiple_of(4) {
            return Err(TopologyError::MalformedIommuMap { cells: cells.len() });
        }
        Ok(cells
            .chunks_exact(4)
            .map(|c| IommuMapEntry {
                rid_base: c[0],
                iommu: c[1],
                sid_base: c[2],
                len: c[3],
            })
            .collect())
    }

    /// No `iommu-map` at all: every lookup is [`TopologyError::NoIommuMap`].
    pub fn absent() -> Self {
        Self {
            entries: Vec::new(),
            mask: NO_MASK,
        }
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
