//! What the device tree says about the board, as a plain [`Platform`].
//!
//! The DTB is parsed once, with the MMU off, by [`Platform::from_dtb`].
//! Nothing in the image hard-codes a device address: if the DTB lacks
//! something required, parsing fails with a message naming it.

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use fdt::Fdt;
use fdt::node::FdtNode;
use smmuv3::topology::{IommuMap, Rid, TopologyError};

/// Where QEMU `virt` places the DTB when the image is linked at or above
/// RAM base + 1 MiB (see `linker.ld`).
pub const DTB_ADDR: usize = 0x4000_0000;

/// A physical address range `[base, base + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Region {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.base + self.size
    }

    /// As a `usize` range (identity mapped).
    pub fn range(&self) -> Range<usize> {
        self.base as usize..self.end() as usize
    }

    /// Whether `addr` lies inside.
    pub fn contains(&self, addr: u64) -> bool {
        (self.base..self.end()).contains(&addr)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:#x}..{:#x}", self.base, self.end())
    }
}

/// A GICv3 (`arm,gic-v3`).
#[derive(Debug, Clone)]
pub struct Gicv3Regions {
    /// The distributor (GICD).
    pub distributor: Region,
    /// The redistributor regions (GICR).
    pub redistributors: Vec<Region>,
    /// The ITS, if the DTB lists one.
    pub its: Option<Region>,
}

/// A GICv2 ([`GICV2_COMPATIBLES`]).
#[derive(Debug, Clone)]
pub struct Gicv2Regions {
    /// The distributor (GICD).
    pub distributor: Region,
    /// The CPU interface (GICC), banked per CPU at one address.
    pub cpu_interface: Region,
    /// The virtual interface control (GICH), with the virtualization
    /// extensions. Not used by the image; listed for the banner.
    pub hypervisor: Option<Region>,
    /// The virtual CPU interface (GICV), with the virtualization extensions.
    pub virtual_cpu: Option<Region>,
    /// A GICv2m MSI frame (`arm,gic-v2m-frame` child), if any.
    pub v2m: Option<Region>,
}

/// The interrupt controller the DTB describes, by architecture version.
#[derive(Debug, Clone)]
pub enum Gic {
    /// GICv3 (affinity routing, system-register CPU interface).
    V3(Gicv3Regions),
    /// GICv2 (memory-mapped CPU interface, at most 8 CPUs).
    V2(Gicv2Regions),
}

impl Gic {
    /// The distributor's registers.
    pub fn distributor(&self) -> Region {
        match self {
            Self::V3(g) => g.distributor,
            Self::V2(g) => g.distributor,
        }
    }

    /// The architecture version (2 or 3).
    pub fn version(&self) -> u8 {
        match self {
            Self::V3(_) => 3,
            Self::V2(_) => 2,
        }
    }
}

/// Compatible strings of GICv2 implementations the image drives.
pub const GICV2_COMPATIBLES: [&str; 3] = ["arm,gic-400", "arm,cortex-a15-gic", "arm,cortex-a7-gic"];
/// The GICv3 compatible string.
pub const GICV3_COMPATIBLE: &str = "arm,gic-v3";
/// A GICv2 distributor's register frame (GICD_SGIR and below fit in 4 KiB).
pub const GICV2_GICD_SIZE: u64 = 0x1000;
/// A GICv2 CPU interface's register frame (GICC_DIR is at 0x1000).
pub const GICV2_GICC_SIZE: u64 = 0x2000;

/// The SMMU's wired interrupts as GIC INTIDs (SPI n is INTID 32 + n).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmmuIrqs {
    /// Event queue.
    pub eventq: Option<u32>,
    /// PRI queue.
    pub priq: Option<u32>,
    /// CMD_SYNC completion.
    pub cmdq_sync: Option<u32>,
    /// Global errors.
    pub gerror: Option<u32>,
}

/// An SMMUv3 (`arm,smmu-v3`).
#[derive(Debug, Clone)]
pub struct Smmu {
    /// The DT phandle, as referenced by `iommu-map`.
    pub phandle: Option<u32>,
    /// Register frame (both 64 KiB pages).
    pub reg: Region,
    /// Wired interrupts by name.
    pub irqs: SmmuIrqs,
    /// Whether the DTB marks the SMMU `dma-coherent`.
    pub dma_coherent: bool,
}

/// How PSCI is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsciMethod {
    /// `smc` (QEMU with virtualization=on: the SMC goes to the emulated firmware).
    Smc,
    /// `hvc`.
    Hvc,
}

/// A PCI address window from the host bridge's `ranges`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Address on the PCI bus (what BARs hold).
    pub pci_addr: u64,
    /// Address the CPU uses.
    pub cpu_addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// The `prefetchable` flag of the range.
    pub prefetchable: bool,
}

impl Window {
    /// The CPU address of PCI address `pci`.
    pub fn to_cpu(self, pci: u64) -> u64 {
        pci - self.pci_addr + self.cpu_addr
    }

    /// The CPU-side region.
    pub fn cpu_region(self) -> Region {
        Region {
            base: self.cpu_addr,
            size: self.size,
        }
    }
}

pub use smmuv3::topology::IommuMapEntry;

/// Why a RID has no StreamID (the library's typed topology errors).
pub type RidError = TopologyError;

/// The generic ECAM PCIe host bridge (`pci-host-ecam-generic`).
#[derive(Debug, Clone)]
pub struct PciHost {
    /// The ECAM region.
    pub ecam: Region,
    /// First and last bus number (`bus-range`); ECAM offset 0 is `bus_start`.
    pub bus_start: u8,
    /// Last bus number.
    pub bus_end: u8,
    /// The 32-bit memory window.
    pub mem32: Option<Window>,
    /// The 64-bit memory window.
    pub mem64: Option<Window>,
    /// The I/O window (I/O ports as MMIO).
    pub io: Option<Window>,
    /// `iommu-map` entries.
    pub iommu_map: Vec<IommuMapEntry>,
    /// `iommu-map-mask` (all ones when absent).
    pub iommu_map_mask: u32,
}

impl PciHost {
    /// The host bridge's `iommu-map` and `iommu-map-mask`, checked.
    pub fn iommu_map(&self) -> Result<IommuMap, TopologyError> {
        IommuMap::new(self.iommu_map.clone(), self.iommu_map_mask)
    }

    /// The IOMMU phandle and StreamID of requester `rid`, from `iommu-map`.
    pub fn rid_to_sid(&self, rid: u16) -> Result<(u32, u32), RidError> {
        let m = self.iommu_map()?.lookup(Rid(rid))?;
        Ok((m.iommu, m.sid))
    }
}

/// Everything the image knows about the board.
#[derive(Debug, Clone)]
pub struct Platform {
    /// The DTB blob itself.
    pub dtb: Region,
    /// RAM regions (`device_type = "memory"`).
    pub ram: Vec<Region>,
    /// The PL011 console.
    pub uart: Region,
    /// The interrupt controller, or why there is no usable one (no GIC
    /// node, an unknown compatible, malformed `reg`): the image then polls.
    pub gic: Result<Gic, DtbError>,
    /// The SMMUv3.
    pub smmu: Smmu,
    /// PSCI conduit, if the DTB has a `psci` node.
    pub psci: Option<PsciMethod>,
    /// The PCIe host bridge.
    pub pci: PciHost,
    /// QEMU's firmware configuration device (`qemu,fw-cfg-mmio`), if any.
    pub fw_cfg: Option<Region>,
}

/// Why the DTB could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtbError {
    /// No valid DTB at the address (bad magic or size).
    NoDtb(usize),
    /// A required node or property is absent.
    Missing(&'static str),
    /// A property has an unexpected shape.
    Malformed(&'static str),
}

impl fmt::Display for DtbError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::NoDtb(at) => write!(
                f,
                "no valid DTB at {at:#x} (QEMU places it there only for images linked >= RAM base + 1 MiB)"
            ),
            Self::Missing(what) => write!(f, "the DTB has no {what}"),
            Self::Malformed(what) => write!(f, "malformed DTB property: {what}"),
        }
    }
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

fn cells(value: &[u8]) -> impl Iterator<Item = u32> + '_ {
    value.chunks_exact(4).map(|c| be(c) as u32)
}

fn reg_of(node: FdtNode) -> Vec<Region> {
    node.raw_reg()
        .map(|regs| {
            regs.map(|r| Region {
                base: be(r.address),
                size: be(r.size),
            })
            .collect()
        })
        .unwrap_or_default()
}

fn first_reg(node: FdtNode, what: &'static str) -> Result<Region, DtbError> {
    reg_of(node).first().copied().ok_or(DtbError::Missing(what))
}

fn u32_prop(node: FdtNode, name: &str) -> Option<u32> {
    node.property(name).and_then(|p| cells(p.value).next())
}

/// Opens the DTB at `addr`.
///
/// # Safety
///
/// `addr` is readable for at least the 40-byte FDT header and, if the magic
/// matches, for the size the header gives.
pub unsafe fn open_dtb(addr: usize) -> Result<Fdt<'static>, DtbError> {
    // SAFETY: the magic is read first; the caller promises the header (and
    // then the blob) is readable.
    let magic = unsafe { (addr as *const u32).read_volatile() };
    if u32::from_be(magic) != 0xd00d_feed {
        return Err(DtbError::NoDtb(addr));
    }
    // SAFETY: as above; the blob is never written while the image runs.
    unsafe { Fdt::from_ptr(addr as *const u8) }.map_err(|_| DtbError::NoDtb(addr))
}

/// The PL011's register region: the `stdout-path` node if it is a PL011,
/// else the first `arm,pl011`.
pub fn find_uart(fdt: &Fdt) -> Result<Region, DtbError> {
    let is_pl011 = |n: &FdtNode| {
        n.compatible()
            .is_some_and(|c| c.all().any(|s| s == "arm,pl011"))
    };
    let node = fdt
        .chosen()
        .stdout()
        .filter(is_pl011)
        .or_else(|| fdt.find_compatible(&["arm,pl011"]))
        .ok_or(DtbError::Missing("arm,pl011 UART"))?;
    first_reg(node, "reg for the UART")
}

impl Platform {
    /// Reads everything the image needs from the DTB.
    pub fn from_dtb(fdt: &Fdt) -> Result<Self, DtbError> {
        let dtb = Region {
            base: DTB_ADDR as u64,
            size: fdt.total_size() as u64,
        };
        Ok(Self {
            dtb,
            ram: ram(fdt)?,
            uart: find_uart(fdt)?,
            gic: gic(fdt),
            smmu: smmu(fdt)?,
            psci: psci(fdt),
            pci: pci_host(fdt)?,
            fw_cfg: fdt
                .find_compatible(&["qemu,fw-cfg-mmio"])
                .and_then(|n| reg_of(n).first().copied()),
        })
    }
}

fn ram(fdt: &Fdt) -> Result<Vec<Region>, DtbError> {
    let ram: Vec<Region> = fdt
        .all_nodes()
        .filter(|n| n.property("device_type").and_then(|p| p.as_str()) == Some("memory"))
        .flat_map(reg_of)
        .filter(|r| r.size > 0)
        .collect();
    if ram.is_empty() {
        Err(DtbError::Missing("memory node"))
    } else {
        Ok(ram)
    }
}

/// The interrupt controller: a GICv3 or a GICv2, else why neither is usable.
/// Never fails the boot: without a GIC the image polls.
pub fn gic(fdt: &Fdt) -> Result<Gic, DtbError> {
    if let Some(node) = fdt.find_compatible(&[GICV3_COMPATIBLE]) {
        return gicv3(node).map(Gic::V3);
    }
    if let Some(node) = fdt.find_compatible(&GICV2_COMPATIBLES) {
        return gicv2(node).map(Gic::V2);
    }
    Err(DtbError::Missing(
        "GICv3 or GICv2 interrupt controller (arm,gic-v3, arm,gic-400, arm,cortex-a15-gic, arm,cortex-a7-gic)",
    ))
}

fn gicv3(node: FdtNode) -> Result<Gicv3Regions, DtbError> {
    let regs = reg_of(node);
    let distributor = *regs.first().ok_or(DtbError::Missing("GICD reg"))?;
    let n_redist = u32_prop(node, "#redistributor-regions").unwrap_or(1) as usize;
    let redistributors: Vec<Region> = regs.iter().skip(1).take(n_redist).copied().collect();
    if redistributors.is_empty() {
        return Err(DtbError::Missing("GICR reg"));
    }
    let its = node
        .children()
        .find(|c| {
            c.compatible()
                .is_some_and(|c| c.all().any(|s| s == "arm,gic-v3-its"))
        })
        .and_then(|c| reg_of(c).first().copied());
    Ok(Gicv3Regions {
        distributor,
        redistributors,
        its,
    })
}

/// GICv2 `reg`: GICD, GICC, then (virtualization extensions) GICH, GICV.
fn gicv2(node: FdtNode) -> Result<Gicv2Regions, DtbError> {
    let regs = reg_of(node);
    let distributor = *regs.first().ok_or(DtbError::Missing("GICD reg"))?;
    let cpu_interface = *regs.get(1).ok_or(DtbError::Missing("GICC reg"))?;
    if distributor.size < GICV2_GICD_SIZE {
        return Err(DtbError::Malformed("GICv2 GICD reg is smaller than 4 KiB"));
    }
    if cpu_interface.size < GICV2_GICC_SIZE {
        return Err(DtbError::Malformed("GICv2 GICC reg is smaller than 8 KiB"));
    }
    let v2m = node
        .children()
        .find(|c| {
            c.compatible()
                .is_some_and(|c| c.all().any(|s| s == "arm,gic-v2m-frame"))
        })
        .and_then(|c| reg_of(c).first().copied());
    Ok(Gicv2Regions {
        distributor,
        cpu_interface,
        hypervisor: regs.get(2).copied(),
        virtual_cpu: regs.get(3).copied(),
        v2m,
    })
}

fn smmu(fdt: &Fdt) -> Result<Smmu, DtbError> {
    let node = fdt
        .find_compatible(&["arm,smmu-v3"])
        .ok_or(DtbError::Missing("arm,smmu-v3 node"))?;
    let reg = first_reg(node, "reg for the SMMU")?;
    let mut irqs = SmmuIrqs::default();
    if let (Some(ints), Some(names)) = (
        node.property("interrupts"),
        node.property("interrupt-names"),
    ) {
        // GICv3 interrupt specifiers: <type number flags>, type 0 = SPI, 1 = PPI.
        let specs: Vec<u32> = cells(ints.value).collect();
        let names = names.value.split(|&b| b == 0).filter(|s| !s.is_empty());
        for (spec, name) in specs.chunks_exact(3).zip(names) {
            let intid = if spec[0] == 0 {
                32 + spec[1]
            } else {
                16 + spec[1]
            };
            match name {
                b"eventq" => irqs.eventq = Some(intid),
                b"priq" => irqs.priq = Some(intid),
                b"cmdq-sync" => irqs.cmdq_sync = Some(intid),
                b"gerror" => irqs.gerror = Some(intid),
                _ => {}
            }
        }
    }
    Ok(Smmu {
        phandle: u32_prop(node, "phandle"),
        reg,
        irqs,
        dma_coherent: node.property("dma-coherent").is_some(),
    })
}

fn psci(fdt: &Fdt) -> Option<PsciMethod> {
    let node = fdt.find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])?;
    match node.property("method")?.as_str()? {
        "smc" => Some(PsciMethod::Smc),
        "hvc" => Some(PsciMethod::Hvc),
        _ => None,
    }
}

fn pci_host(fdt: &Fdt) -> Result<PciHost, DtbError> {
    let node = fdt
        .find_compatible(&["pci-host-ecam-generic"])
        .ok_or(DtbError::Missing("pci-host-ecam-generic host bridge"))?;
    let ecam = first_reg(node, "ECAM reg for the PCI host bridge")?;
    let (bus_start, bus_end) = match node.property("bus-range") {
        Some(p) => {
            let v: Vec<u32> = cells(p.value).collect();
            match v[..] {
                [s, e] if s <= e && e <= 255 => (s as u8, e as u8),
                _ => return Err(DtbError::Malformed("bus-range")),
            }
        }
        None => (0, ((ecam.size >> 20).clamp(1, 256) - 1) as u8),
    };

    // ranges: <pci-addr (3 cells)> <cpu-addr (parent #address-cells)> <size (2 cells)>
    let parent_cells = fdt.root().cell_sizes().address_cells;
    let ranges = node
        .property("ranges")
        .ok_or(DtbError::Missing("ranges for the PCI host bridge"))?;
    let entry_cells = 3 + parent_cells + 2;
    let words: Vec<u32> = cells(ranges.value).collect();
    if words.is_empty() || !words.len().is_multiple_of(entry_cells) {
        return Err(DtbError::Malformed("PCI ranges"));
    }
    let (mut mem32, mut mem64, mut io) = (None, None, None);
    for e in words.chunks_exact(entry_cells) {
        let flags = e[0];
        let pci_addr = (u64::from(e[1]) << 32) | u64::from(e[2]);
        let cpu_addr = e[3..3 + parent_cells]
            .iter()
            .fold(0u64, |a, &c| (a << 32) | u64::from(c));
        let size = (u64::from(e[3 + parent_cells]) << 32) | u64::from(e[4 + parent_cells]);
        let w = Window {
            pci_addr,
            cpu_addr,
            size,
            prefetchable: flags & (1 << 30) != 0,
        };
        match (flags >> 24) & 3 {
            1 => io = Some(w),
            2 => mem32 = Some(w),
            3 => mem64 = Some(w),
            _ => {}
        }
    }
    if mem32.is_none() && mem64.is_none() {
        return Err(DtbError::Missing("PCI memory window in ranges"));
    }

    let iommu_map = match node.property("iommu-map") {
        Some(p) => IommuMap::entries_from_cells(&cells(p.value).collect::<Vec<u32>>())
            .map_err(|_| DtbError::Malformed("iommu-map"))?,
        None => Vec::new(),
    };
    Ok(PciHost {
        ecam,
        bus_start,
        bus_end,
        mem32,
        mem64,
        io,
        iommu_map,
        iommu_map_mask: u32_prop(node, "iommu-map-mask").unwrap_or(smmuv3::topology::NO_MASK),
    })
}
