//! Domains whose stage-2 tables the hypervisor owns.
//!
//! A hypervisor that already builds its VMs' stage-2 tables (for its CPUs,
//! with its own page-table code) gives the SMMU the same tables: it
//! describes them by the VTCR_EL2 value and the root it programs into
//! VTTBR_EL2, and the driver points STEs at them. The driver reserves the
//! domain's VMID in its allocator, so no other domain can take it, and
//! tracks the StreamIDs it attached. It never writes the tables; after the
//! hypervisor changes them it calls [`Smmu::invalidate`] for the range
//! (CPU TLB maintenance does not reach the SMMU), and it must keep tables
//! it unlinked until that call returns.

use alloc::vec::Vec;

use crate::error::{Error, Result, Unsupported};
use crate::hal::Hal;
use crate::smmu::Smmu;
use crate::stage2::Stage2Config;

use super::{Domain, DomainId, Tables};

/// Stage-2 tables owned by the hypervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalStage2 {
    /// The VTCR_EL2 value the CPU uses with these tables (T0SZ, SL0, TG0,
    /// PS, walk attributes). Parsed with [`Stage2Config::from_vtcr`].
    pub vtcr: u64,
    /// Physical address of the start table (VTTBR_EL2.BADDR), aligned to
    /// the start table's size (with its concatenated tables).
    pub root: u64,
    /// The VMID: `Some` to use the CPU's VTTBR_EL2 VMID (reserved in the
    /// driver's allocator, so it must be free), `None` to allocate one from
    /// the SMMU's private VMID space.
    pub vmid: Option<u16>,
    /// S2AFFD: no access-flag faults (set when the CPU may leave AF = 0).
    pub access_flag_fault_disable: bool,
}

impl<H: Hal> Smmu<H> {
    /// Creates a domain over the hypervisor's own stage-2 tables. Attach
    /// StreamIDs with [`Smmu::attach`]; invalidate with
    /// [`Smmu::invalidate`] after every change the hypervisor makes. Map,
    /// unmap and protect are refused ([`Error::ExternalTables`]).
    ///
    /// Errors: what [`Stage2Config::from_vtcr`] refuses; the geometry
    /// beyond the SMMU's IAS/OAS or granules ([`Error::Unsupported`]); a
    /// root not aligned to the start table ([`Error::Misaligned`]) or
    /// beyond the output size; a VMID already in use or reserved
    /// ([`Error::Invalid`] with [`crate::Invalid::IdInUse`] or
    /// [`crate::Invalid::IdReserved`]).
    pub fn create_external_domain(&self, ext: ExternalStage2) -> Result<DomainId> {
        let f = self.features();
        if !f.stage2 {
            return Err(Error::Unsupported(Unsupported::Stage2));
        }
        let cfg = Stage2Config::from_vtcr(ext.vtcr)?;
        if !f.supports_granule(cfg.granule()) {
            return Err(Error::Unsupported(Unsupported::Granule));
        }
        cfg.check_fits(u32::from(f.ias_bits), u32::from(f.oas_bits))?;
        let align = cfg.root_align() as u64;
        if !ext.root.is_multiple_of(align) {
            return Err(Error::Misaligned {
                addr: ext.root,
                align,
            });
        }
        let end = ext.root.checked_add(cfg.root_table_bytes() as u64);
        if end.is_none_or(|e| e > 1u64 << cfg.oas_bits()) {
            return Err(Error::Unsupported(Unsupported::AddressSize));
        }
        let mut domains = self.domains.lock();
        domains.reserve()?;
        let vmid = match ext.vmid {
            Some(v) => domains.vmids.alloc_specific(v)?,
            None => domains.vmids.alloc()?,
        };
        Ok(domains.insert(|id| Domain {
            id,
            vmid,
            affd: ext.access_flag_fault_disable,
            split_without_break: false,
            tables: Tables::External {
                cfg,
                root: ext.root,
            },
            sids: Vec::new(),
            tlb_unknown: false,
            nested_streams: 0,
        }))
    }
}
