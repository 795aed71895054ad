//! Does the IORT say what the device tree says? For a firmware that
//! provides both (QEMU `virt` does), each requester ID's SMMU and StreamID
//! from the IORT is compared with the host bridge's `iommu-map`.

use core::fmt;

use super::{Iort, IortError};
use crate::topology::{IommuMap, Rid, TopologyError};

/// An SMMU the device tree names: its phandle (what `iommu-map` refers
/// to) and its register base (what the IORT refers to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtSmmu {
    /// The node's phandle.
    pub phandle: u32,
    /// Its register base address.
    pub base: u64,
}

/// One requester ID on which the IORT and the device tree disagree, with
/// what each says: (SMMU base, StreamID), or why there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disagreement {
    /// The requester ID.
    pub rid: Rid,
    /// The IORT's answer.
    pub iort: Result<(u64, u32), IortError>,
    /// The device tree's answer (an `iommu-map` entry naming an IOMMU
    /// that is not in the list of SMMUs gives base 0).
    pub dtb: Result<(u64, u32), TopologyError>,
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RID {:#06x} ({}): IORT says ", self.rid.0, self.rid)?;
        match self.iort {
            Ok((base, sid)) => write!(f, "SMMU {base:#x} StreamID {sid:#x}")?,
            Err(e) => write!(f, "none ({e})")?,
        }
        f.write_str(", DTB says ")?;
        match self.dtb {
            Ok((base, sid)) => write!(f, "SMMU {base:#x} StreamID {sid:#x}"),
            Err(e) => write!(f, "none ({e})"),
        }
    }
}

/// Compares, for every requester ID in `rids`, the IORT's root complex of
/// PCI segment `segment` with the device tree's `map`, whose IOMMU
/// phandles are resolved through `smmus`. Two answers agree when both give
/// the same SMMU base and StreamID, or both give none. Returns the number
/// of RIDs compared, or the first disagreement.
pub fn compare_with_iommu_map(
    iort: &Iort<'_>,
    segment: u32,
    map: &IommuMap,
    smmus: &[DtSmmu],
    rids: impl IntoIterator<Item = Rid>,
) -> Result<usize, Disagreement> {
    let mut checked = 0;
    for rid in rids {
        let from_iort = iort
            .smmu_stream(segment, rid.0)
            .map(|s| (s.smmu.base, s.sid));
        let from_dtb = map.lookup(rid).map(|m| {
            let base = smmus
                .iter()
                .find(|s| s.phandle == m.iommu)
                .map_or(0, |s| s.base);
            (base, m.sid)
        });
        let agree = match (from_iort, from_dtb) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if !agree {
            return Err(Disagreement {
                rid,
                iort: from_iort,
                dtb: from_dtb,
            });
        }
        checked += 1;
    }
    Ok(checked)
}
