//! Hypervisor-owned stage-2 tables, built with `aarch64-paging`'s stage-2
//! regime: the second ownership model of the driver
//! ([`smmuv3::smmu::Smmu::create_external_domain`]). The image builds and
//! edits these tables itself, as a hypervisor whose CPUs already use them
//! would; the driver only points STEs at them and invalidates on request.
//!
//! Geometry: 4 KiB granule, walk from level 1, so a 39-bit IPA space
//! (VTCR_EL2.T0SZ = 25, SL0 = 1) and a single 4 KiB start table; 40-bit
//! output (PS = 2), which covers QEMU `virt`'s RAM.

use alloc::vec::Vec;
use core::ptr::NonNull;

use aarch64_paging::descriptor::{PhysicalAddress, Stage2Attributes as S2};
use aarch64_paging::paging::{Constraints, MemoryRegion, PageTable, Stage2, Translation};
use aarch64_paging::{MapError, Mapping};

use super::dma;

/// Start level of the walk.
const ROOT_LEVEL: usize = 1;
/// VTCR_EL2 fields for the geometry above (Arm ARM, VTCR_EL2).
const T0SZ: u64 = 25;
const SL0_LEVEL1_4K: u64 = 1;
const IRGN0_WBWA: u64 = 1;
const ORGN0_WBWA: u64 = 1;
const SH0_INNER: u64 = 3;
const TG0_4K: u64 = 0;
const PS_40_BITS: u64 = 2;
const VTCR_RES1: u64 = 1 << 31;

/// Table pages from the image's device-visible allocator (identity mapped:
/// physical = virtual).
#[derive(Debug, Default)]
pub struct DmaTables {
    pages: usize,
}

impl Translation<S2> for DmaTables {
    fn allocate_table(&mut self) -> (NonNull<PageTable<S2>>, PhysicalAddress) {
        // A table page that cannot be allocated is a broken image: the
        // demo's memory budget is fixed and tiny compared with RAM.
        let r = dma::alloc(4096, 4096).expect("stage-2 table page");
        self.pages += 1;
        (r.vaddr.cast(), PhysicalAddress(r.paddr as usize))
    }

    unsafe fn deallocate_table(&mut self, table: NonNull<PageTable<S2>>) {
        self.pages -= 1;
        // SAFETY: the page came from `allocate_table` (paddr == vaddr) and
        // aarch64-paging no longer uses it (the caller's contract); the
        // SMMU was invalidated before the mapping was changed or dropped.
        unsafe {
            dma::free(smmuv3::DmaRegion {
                paddr: table.as_ptr() as u64,
                vaddr: table.cast(),
                size: 4096,
            })
        }
    }

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<S2>> {
        NonNull::new(pa.0 as *mut PageTable<S2>).expect("non-null table")
    }
}

/// One VM's stage-2 tables, owned by the hypervisor (this image).
pub struct HvStage2 {
    map: Mapping<DmaTables, Stage2>,
}

impl core::fmt::Debug for HvStage2 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "HvStage2 {{ root: {:#x} }}", self.root())
    }
}

/// Normal write-back memory, inner shareable, AF set.
const NORMAL: S2 = S2::VALID
    .union(S2::MEMATTR_NORMAL_INNER_WB)
    .union(S2::MEMATTR_NORMAL_OUTER_WB)
    .union(S2::SH_INNER)
    .union(S2::ACCESS_FLAG);

/// Device-nGnRE, AF set.
const DEVICE: S2 = S2::VALID
    .union(S2::MEMATTR_DEVICE_nGnRE)
    .union(S2::ACCESS_FLAG);

/// What a VM's page is, as [`HvStage2::map_as`] maps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HvMemory {
    /// Guest RAM: Normal write-back, read-write, execute-never.
    Ram,
    /// Guest code: Normal write-back, read-only, executable.
    Code,
    /// A passed-through BAR: Device-nGnRE, read-write, execute-never.
    Device,
}

impl HvMemory {
    fn attributes(self) -> S2 {
        match self {
            Self::Ram => NORMAL | S2::S2AP_ACCESS_RW | S2::XN,
            Self::Code => NORMAL | S2::S2AP_ACCESS_RO,
            Self::Device => DEVICE | S2::S2AP_ACCESS_RW | S2::XN,
        }
    }
}

impl HvStage2 {
    /// Empty tables.
    pub fn new() -> Self {
        Self {
            map: Mapping::new(DmaTables::default(), ROOT_LEVEL, Stage2),
        }
    }

    /// The VTCR_EL2 value describing these tables.
    pub fn vtcr() -> u64 {
        T0SZ | SL0_LEVEL1_4K << 6
            | IRGN0_WBWA << 8
            | ORGN0_WBWA << 10
            | SH0_INNER << 12
            | TG0_4K << 14
            | PS_40_BITS << 16
            | VTCR_RES1
    }

    /// Physical address of the start table (VTTBR_EL2.BADDR).
    pub fn root(&self) -> u64 {
        self.map.root_address().0 as u64
    }

    /// Maps `[ipa, ipa + len)` to `[pa, pa + len)`, read-write or read-only,
    /// in 4 KiB pages.
    pub fn map(&mut self, ipa: u64, pa: u64, len: u64, writable: bool) -> Result<(), MapError> {
        let ap = if writable {
            S2::S2AP_ACCESS_RW
        } else {
            S2::S2AP_ACCESS_RO
        };
        let region = MemoryRegion::new(ipa as usize, (ipa + len) as usize);
        self.map.map_range(
            &region,
            PhysicalAddress(pa as usize),
            NORMAL | ap,
            Constraints::NO_BLOCK_MAPPINGS,
        )?;
        smmuv3::expert::dsb_st();
        Ok(())
    }

    /// Maps `[ipa, ipa + len)` to `[pa, pa + len)` as `what`, in 4 KiB
    /// pages (no blocks).
    pub fn map_as(&mut self, ipa: u64, pa: u64, len: u64, what: HvMemory) -> Result<(), MapError> {
        let region = MemoryRegion::new(ipa as usize, (ipa + len) as usize);
        self.map.map_range(
            &region,
            PhysicalAddress(pa as usize),
            what.attributes(),
            Constraints::NO_BLOCK_MAPPINGS,
        )?;
        smmuv3::expert::dsb_st();
        Ok(())
    }

    /// What the tables translate `ipa` to (the driver's [`Translation`]
    /// type, so the image checks both models alike), or `None`.
    ///
    /// [`Translation`]: smmuv3::stage2::Translation
    pub fn query(&self, ipa: u64) -> Option<smmuv3::stage2::Translation> {
        use smmuv3::stage2::{Memory, Perm, Translation};
        let region = MemoryRegion::new(ipa as usize, ipa as usize + 1);
        let mut out = None;
        let _ = self.map.walk_range(&region, &mut |_, d, level| {
            let f = d.flags();
            if f.contains(S2::VALID) {
                let size = 1u64 << (12 + 9 * (3 - level as u32));
                let base = d.output_address().0 as u64;
                let perm = match (
                    f.contains(S2::S2AP_ACCESS_RO),
                    f.contains(S2::S2AP_ACCESS_WO),
                ) {
                    (true, true) => Some(Perm::ReadWrite),
                    (true, false) => Some(Perm::Read),
                    (false, true) => Some(Perm::Write),
                    (false, false) => None,
                };
                // MemAttr[3:2] (descriptor bits [5:4]) = 0b00: Device.
                let memory = if f.bits() & 0b11 << 4 == 0 {
                    Memory::Device
                } else {
                    Memory::Normal
                };
                out = perm.map(|perm| Translation {
                    pa: base + (ipa & (size - 1)),
                    perm,
                    size,
                    memory,
                    execute: !f.contains(S2::XN),
                });
            }
            Ok(())
        });
        out
    }

    /// Every descriptor of `[0, end)` as (IPA, bits, level), for comparing
    /// the tables before and after a request word for word.
    pub fn snapshot(&self, end: u64) -> Vec<(usize, usize, usize)> {
        let mut v = Vec::new();
        let region = MemoryRegion::new(0, end as usize);
        let _ = self.map.walk_range(&region, &mut |mr, d, level| {
            v.push((mr.start().0, d.output_address().0 | d.flags().bits(), level));
            Ok(())
        });
        v
    }

    /// Makes `[ipa, ipa + len)` invalid (the hypervisor then invalidates
    /// the SMMU with `Smmu::invalidate`).
    pub fn unmap(&mut self, ipa: u64, len: u64) -> Result<(), MapError> {
        let region = MemoryRegion::new(ipa as usize, (ipa + len) as usize);
        self.map.map_range(
            &region,
            PhysicalAddress(0),
            S2::empty(),
            Constraints::NO_BLOCK_MAPPINGS,
        )?;
        smmuv3::expert::dsb_st();
        Ok(())
    }

    /// Table pages allocated.
    pub fn table_pages(&self) -> usize {
        self.map.translation().pages + 1
    }
}

impl Default for HvStage2 {
    fn default() -> Self {
        Self::new()
    }
}
