//! QEMU's firmware configuration device (`qemu,fw-cfg-mmio`), and the
//! ACPI tables QEMU publishes through it.
//!
//! QEMU `virt` builds its ACPI tables even when it boots an ELF with
//! `-kernel` and no firmware, and lists them in fw_cfg's file directory
//! (`etc/acpi/rsdp`, `etc/acpi/tables`, `etc/table-loader`, ...). The
//! tables are *not linked*: every pointer in them (RSDP -> XSDT -> tables)
//! still holds an offset into `etc/acpi/tables`, which firmware would turn
//! into an address by following `etc/table-loader`. The library's
//! `smmuv3::topology::iort::acpi` follows those offsets instead, and
//! computes the checksums the loader would.
//!
//! The MMIO interface (QEMU `docs/specs/fw_cfg.rst`): a selector register
//! at +8 (16-bit, big-endian) picks an item, the data register at +0 then
//! returns its bytes one by one from the start. Item 0x19 is the file
//! directory: a big-endian count, then 64-byte entries (size, selector,
//! reserved, 56-byte NUL-terminated name).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use smmuv3::topology::iort::acpi::{self, AcpiError};
use smmuv3::topology::iort::{self, DtSmmu, Iort, IortError, compare_with_iommu_map};
use smmuv3::topology::{IommuMap, Rid};

use super::pci::PciFunction;
use super::platform::{Platform, Region};

/// The selector of the file directory.
pub const FILE_DIR: u16 = 0x19;
/// The selector of the signature item ("QEMU").
pub const SIGNATURE: u16 = 0x00;
const DATA: usize = 0x0;
const SELECTOR: usize = 0x8;
const DIR_ENTRY_LEN: usize = 64;
const NAME_LEN: usize = 56;
/// Never read more than this from one item (the ACPI tables of `virt` are
/// a few KiB).
pub const MAX_ITEM: u32 = 1 << 20;

/// Why the tables could not be read or used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FwCfgError {
    /// The DTB has no `qemu,fw-cfg-mmio` node.
    NoDevice,
    /// The signature item is not "QEMU".
    BadSignature([u8; 4]),
    /// No such file in the directory.
    NoFile(&'static str),
    /// A file is larger than [`MAX_ITEM`].
    TooLarge {
        /// Its name.
        name: &'static str,
        /// Its size.
        size: u32,
    },
    /// The RSDP or XSDT is malformed, or the table is not listed.
    Acpi(AcpiError),
    /// The IORT is malformed.
    Iort(IortError),
}

impl fmt::Display for FwCfgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoDevice => f.write_str("the DTB has no qemu,fw-cfg-mmio node"),
            Self::BadSignature(s) => write!(f, "fw_cfg signature {s:02x?}, not \"QEMU\""),
            Self::NoFile(name) => write!(f, "fw_cfg has no file {name}"),
            Self::TooLarge { name, size } => write!(f, "fw_cfg file {name} is {size} bytes"),
            Self::Acpi(e) => write!(f, "ACPI tables: {e}"),
            Self::Iort(e) => write!(f, "{e}"),
        }
    }
}

/// One file of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Its name, e.g. `etc/acpi/tables`.
    pub name: String,
    /// Size in bytes.
    pub size: u32,
    /// Its selector.
    pub select: u16,
}

/// The fw_cfg device.
#[derive(Debug)]
pub struct FwCfg {
    base: usize,
}

impl FwCfg {
    /// The device at `reg`.
    ///
    /// # Safety
    ///
    /// `reg` is the register frame of a `qemu,fw-cfg-mmio` device, mapped as
    /// device memory, and nothing else uses the device at the same time.
    pub unsafe fn new(reg: Region) -> Self {
        Self {
            base: reg.base as usize,
        }
    }

    fn select(&self, key: u16) {
        // SAFETY: the selector register of the device `new` was given; a
        // 16-bit big-endian register.
        unsafe { ((self.base + SELECTOR) as *mut u16).write_volatile(key.to_be()) }
    }

    fn read(&self, buf: &mut [u8]) {
        for b in buf {
            // SAFETY: the data register; each 8-bit read returns the next
            // byte of the selected item (0 past its end).
            *b = unsafe { ((self.base + DATA) as *const u8).read_volatile() };
        }
    }

    /// The first `len` bytes of item `key`.
    pub fn item(&self, key: u16, len: usize) -> Vec<u8> {
        self.select(key);
        let mut v = alloc::vec![0; len];
        self.read(&mut v);
        v
    }

    /// Checks the signature item.
    pub fn check_signature(&self) -> Result<(), FwCfgError> {
        let mut sig = [0u8; 4];
        self.select(SIGNATURE);
        self.read(&mut sig);
        if &sig == b"QEMU" {
            Ok(())
        } else {
            Err(FwCfgError::BadSignature(sig))
        }
    }

    /// The file directory.
    pub fn files(&self) -> Vec<File> {
        self.select(FILE_DIR);
        let mut count = [0u8; 4];
        self.read(&mut count);
        // A selector is 16 bits: never more files than that.
        let count = u32::from_be_bytes(count).min(0x1_0000);
        let mut out = Vec::new();
        let mut e = [0u8; DIR_ENTRY_LEN];
        for _ in 0..count {
            self.read(&mut e);
            let name = &e[8..8 + NAME_LEN];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN)];
            out.push(File {
                name: String::from_utf8_lossy(name).into_owned(),
                size: u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
                select: u16::from_be_bytes([e[4], e[5]]),
            });
        }
        out
    }

    /// The contents of file `name`.
    pub fn file(&self, files: &[File], name: &'static str) -> Result<Vec<u8>, FwCfgError> {
        let f = files
            .iter()
            .find(|f| f.name == name)
            .ok_or(FwCfgError::NoFile(name))?;
        if f.size > MAX_ITEM {
            return Err(FwCfgError::TooLarge { name, size: f.size });
        }
        Ok(self.item(f.select, f.size as usize))
    }
}

/// What the image learnt from QEMU's IORT.
#[derive(Debug, Clone)]
pub struct IortCheck {
    /// The fw_cfg files.
    pub files: Vec<File>,
    /// The IORT's bytes.
    pub iort: Vec<u8>,
    /// The base of the IORT's (first) SMMUv3 node.
    pub smmu_base: Option<u64>,
    /// Segment 0's range mappings: (first RID, last RID, first output ID,
    /// type of the node they lead to).
    pub ranges: Vec<(u32, u32, u32, u8)>,
    /// How many RIDs (every function's own and alias RIDs) were compared
    /// with the DTB's `iommu-map`, or the first disagreement.
    pub agreement: Result<usize, iort::Disagreement>,
}

impl IortCheck {
    /// The parsed IORT (it parsed once already).
    pub fn parsed(&self) -> Result<Iort<'_>, IortError> {
        Iort::parse(&self.iort)
    }
}

impl fmt::Display for IortCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IORT  (fw_cfg etc/acpi/tables): SMMUv3 at ")?;
        match self.smmu_base {
            Some(b) => write!(f, "{b:#x}")?,
            None => f.write_str("-")?,
        }
        for (i, &(first, last, out, to)) in self.ranges.iter().enumerate() {
            let prefix = if i == 0 { ", RC segment 0 " } else { ", " };
            write!(f, "{prefix}RIDs {first:#x}..{last:#x} -> ")?;
            match to {
                iort::node_type::SMMU_V3 => write!(f, "SID base {out:#x}")?,
                iort::node_type::ITS_GROUP => f.write_str("ITS (no SMMU)")?,
                other => write!(f, "node type {other}")?,
            }
        }
        match &self.agreement {
            Ok(n) => write!(f, ": agrees with the DTB for all {n} PCI RIDs"),
            Err(d) => write!(f, ": DISAGREES with the DTB: {d}"),
        }
    }
}

/// Every requester ID the PCI functions' DMA may carry (own and aliases).
pub fn function_rids(functions: &[PciFunction]) -> Vec<Rid> {
    let mut rids: Vec<Rid> = Vec::new();
    for f in functions {
        let own = [f.rid()];
        let aliases = f.dma.as_ref().map(|d| d.aliases()).unwrap_or_default();
        for rid in own.into_iter().chain(aliases.iter().map(|a| a.rid)) {
            if !rids.contains(&rid) {
                rids.push(rid);
            }
        }
    }
    rids
}

/// Reads QEMU's IORT through fw_cfg, parses it with the library and
/// compares it with the DTB: the SMMU's base and every function's RIDs
/// against `iommu-map`.
pub fn check_iort(p: &Platform, functions: &[PciFunction]) -> Result<IortCheck, FwCfgError> {
    let reg = p.fw_cfg.ok_or(FwCfgError::NoDevice)?;
    // SAFETY: the DTB's fw_cfg node; the MMU maps it as device memory
    // (`mmu::device_regions`), and only this function uses it, on CPU 0.
    let fw = unsafe { FwCfg::new(reg) };
    fw.check_signature()?;
    let files = fw.files();
    let rsdp = fw.file(&files, "etc/acpi/rsdp")?;
    let mut tables = fw.file(&files, "etc/acpi/tables")?;
    let loader = fw.file(&files, "etc/table-loader")?;
    acpi::apply_loader_checksums(&loader, "etc/acpi/tables", &mut tables);
    let bytes = acpi::find_unlinked_table(&rsdp, &tables, iort::SIGNATURE)
        .map_err(FwCfgError::Acpi)?
        .to_vec();
    let table = Iort::parse(&bytes).map_err(FwCfgError::Iort)?;
    let ranges = table
        .root_complex(0)
        .map(|(node, _)| {
            node.mappings()
                .filter(|m| !m.is_single())
                .map(|m| {
                    let to = table
                        .node_at(m.output_reference)
                        .map_or(u8::MAX, |n| n.node_type);
                    (m.input_base, m.input_last(), m.output_base, to)
                })
                .collect()
        })
        .unwrap_or_default();
    let smmu_base = table.smmu_v3_nodes().next().map(|(_, s)| s.base);
    // A malformed iommu-map counts as none: every RID then disagrees with
    // an IORT that maps it.
    let map = p.pci.iommu_map().unwrap_or_else(|_| IommuMap::absent());
    let smmus = [DtSmmu {
        phandle: p.smmu.phandle.unwrap_or(0),
        base: p.smmu.reg.base,
    }];
    let agreement = compare_with_iommu_map(&table, 0, &map, &smmus, function_rids(functions));
    Ok(IortCheck {
        files,
        iort: bytes,
        smmu_base,
        ranges,
        agreement,
    })
}
