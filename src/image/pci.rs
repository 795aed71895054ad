//! PCI enumeration from scratch (no firmware ran before the image).
//!
//! A depth-first walk from the root bus: every bridge (type 1 header) gets
//! its secondary/subordinate bus numbers, every BAR is sized and assigned
//! (32-bit BARs from the 32-bit window, 64-bit prefetchable BARs, and any
//! 64-bit BAR on the root bus, from the 64-bit window), bridge windows are
//! programmed around what lies behind them, and memory space + bus master are
//! enabled on every function.
//!
//! Every function also records the bridge above it and every bridge its
//! kind (PCIe capability's Device/Port Type, or none), its header's
//! multi-function bit, and its ACS extended capability (found by walking
//! the PCIe extended capability list from offset 0x100). ACS comes out of
//! reset disabled; as Linux does when an IOMMU is present
//! (`pci_std_enable_acs`), the walk turns on Source Validation, P2P
//! Request and Completion Redirect and Upstream Forwarding wherever the
//! ACS Capability register says they are implemented, before anything is
//! grouped. After the walk, the library's [`smmuv3::topology`] turns each
//! function's bridge chain and the host's `iommu-map` into its DMA alias
//! StreamIDs, and the StreamID sets plus the peer-to-peer facts (see
//! [`smmuv3::topology::acs`]) into isolation groups.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use smmuv3::topology::acs;
use smmuv3::topology::{
    self, Acs, AcsFlags, AliasSource, Bridge, BridgeKind, DmaAliases, ExtCapError, FUNCTION_BITS,
    Groups, Isolation, P2pFacts, P2pPath, Rid, TopologyError,
};

use super::platform::{PciHost, Window};

/// Bus/device/function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bdf {
    /// Bus number.
    pub bus: u8,
    /// Device (0..32).
    pub dev: u8,
    /// Function (0..8).
    pub func: u8,
}

impl Bdf {
    /// The PCI requester ID: `bus << 8 | dev << 3 | func`.
    pub fn rid(&self) -> u16 {
        Rid::from_devfn(self.bus, (self.dev << FUNCTION_BITS) | self.func).0
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.dev, self.func)
    }
}

/// What kind of BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory.
    Mem32,
    /// 64-bit memory (occupies two BAR slots).
    Mem64,
    /// I/O ports.
    Io,
}

/// An assigned BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// BAR index (0..6).
    pub index: u8,
    /// Kind.
    pub kind: BarKind,
    /// Prefetchable flag.
    pub prefetchable: bool,
    /// Address on the PCI bus (what the BAR holds).
    pub pci_addr: u64,
    /// Address the CPU uses.
    pub cpu_addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// One PCI function found by [`enumerate`].
#[derive(Debug, Clone)]
pub struct PciFunction {
    /// Where it is.
    pub bdf: Bdf,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class code (base class << 16 | subclass << 8 | prog-if).
    pub class: u32,
    /// Header type (0 = endpoint, 1 = PCI-to-PCI bridge), without the
    /// multi-function bit.
    pub header_type: u8,
    /// Assigned BARs.
    pub bars: Vec<Bar>,
    /// For bridges: the secondary..=subordinate bus range.
    pub buses: Option<(u8, u8)>,
    /// The Device/Port Type of its PCI Express capability (None: it has
    /// no PCIe capability).
    pub pcie_port_type: Option<u8>,
    /// Whether it has a PCI-X capability.
    pub pci_x: bool,
    /// Multi-function bit of its header type.
    pub multifunction: bool,
    /// Its ACS extended capability (after enumeration enabled it), or
    /// `Ok(None)` without one, or why the extended capability list could
    /// not be walked.
    pub acs: Result<Option<AcsCap>, ExtCapError>,
    /// Index, in the list [`enumerate`] returns, of the bridge whose
    /// secondary bus it sits on (None on the root bus).
    pub parent: Option<usize>,
    /// Every requester ID its DMA may carry and their StreamIDs (own RID
    /// first, then the aliases of the bridges above it), or why not.
    pub dma: Result<DmaAliases, TopologyError>,
    /// The StreamID its DMA arrives with: the alias closest to the root
    /// (its own RID's StreamID when no bridge above it aliases).
    pub stream_id: Result<u32, TopologyError>,
    /// phandle of the IOMMU the StreamIDs belong to.
    pub iommu: Option<u32>,
    /// Its isolation group ([`isolation_groups`]), when it has StreamIDs.
    pub group: Option<usize>,
}

impl PciFunction {
    /// A human name for known vendor:device pairs.
    pub fn name(&self) -> &'static str {
        match (self.vendor, self.device) {
            (0x1234, 0x11e8) => "edu",
            (0x1b36, 0x0008) => "QEMU PCIe host bridge",
            (0x1b36, 0x000c) => "PCIe root port",
            (0x104c, 0x8232) => "XIO3130 switch upstream port",
            (0x104c, 0x8233) => "XIO3130 switch downstream port",
            (0x1b36, 0x000e) => "PCIe-to-PCI bridge",
            (0x1b36, 0x0001) => "PCI-to-PCI bridge",
            _ => match self.class >> 16 {
                0x06 => "bridge",
                _ => "device",
            },
        }
    }

    /// The BAR with index `i`.
    pub fn bar(&self, i: u8) -> Option<&Bar> {
        self.bars.iter().find(|b| b.index == i)
    }

    /// For a bridge (type 1 header): how it treats requester IDs.
    pub fn bridge_kind(&self) -> Option<BridgeKind> {
        (self.header_type == HEADER_TYPE_BRIDGE)
            .then(|| BridgeKind::from_port_type(self.pcie_port_type))
    }

    /// For a bridge with bus numbers: itself as the library sees it.
    pub fn as_bridge(&self) -> Option<Bridge> {
        let (secondary, subordinate) = self.buses?;
        Some(Bridge {
            rid: self.rid(),
            kind: self.bridge_kind()?,
            secondary,
            subordinate,
        })
    }

    /// What peer-to-peer grouping needs to know about it (a broken
    /// extended capability list counts as no ACS).
    pub fn p2p_facts(&self) -> P2pFacts {
        P2pFacts {
            rid: self.rid(),
            port_type: self.pcie_port_type,
            multifunction: self.multifunction,
            acs: self.acs.ok().flatten().map(|a| a.acs),
        }
    }

    /// Its requester ID.
    pub fn rid(&self) -> Rid {
        Rid(self.bdf.rid())
    }

    /// Every StreamID it uses (own and aliases, distinct), empty when none.
    pub fn stream_ids(&self) -> Vec<u32> {
        self.dma
            .as_ref()
            .map_or_else(|_| Vec::new(), DmaAliases::stream_ids)
    }
}

/// The isolation groups of `functions` (members are indices into it):
/// functions whose StreamID sets intersect share a group, and so do
/// functions that can reach each other peer-to-peer without passing the
/// SMMU (multi-function devices and switches without ACS, bridges that
/// never isolate; [`Groups::build_with_p2p`]). Functions without
/// StreamIDs are left out. (QEMU `virt` has one SMMU; with several, group
/// the functions of each IOMMU separately.)
pub fn isolation_groups(functions: &[PciFunction]) -> Groups<usize> {
    let sids: Vec<(usize, Vec<u32>, Vec<P2pFacts>)> = functions
        .iter()
        .enumerate()
        .filter(|(_, f)| f.dma.is_ok())
        .map(|(i, f)| (i, f.stream_ids(), upstream_p2p(functions, i)))
        .collect();
    Groups::build_with_p2p(sids.iter().map(|(i, s, up)| {
        (
            *i,
            s.as_slice(),
            P2pPath {
                function: functions[*i].p2p_facts(),
                upstream: up,
            },
        )
    }))
}

/// The groups StreamID aliasing alone gives (no peer-to-peer rule), for
/// comparison: [`isolation_groups`] never splits one of them.
pub fn alias_groups(functions: &[PciFunction]) -> Groups<usize> {
    let sids: Vec<(usize, Vec<u32>)> = functions
        .iter()
        .enumerate()
        .filter(|(_, f)| f.dma.is_ok())
        .map(|(i, f)| (i, f.stream_ids()))
        .collect();
    Groups::build(sids.iter().map(|(i, s)| (*i, s.as_slice())))
}

/// The peer-to-peer facts of the bridges from `functions[index]` up to the
/// root bus, nearest first (bounded like [`upstream_bridges`]).
pub fn upstream_p2p(functions: &[PciFunction], index: usize) -> Vec<P2pFacts> {
    let mut chain = Vec::new();
    let mut next = functions.get(index).and_then(|f| f.parent);
    while let Some(p) = next {
        let Some(b) = functions.get(p) else { break };
        if chain.len() >= functions.len() {
            break;
        }
        chain.push(b.p2p_facts());
        next = b.parent;
    }
    chain
}

/// The bridges from `functions[index]` up to the root bus, nearest first
/// ([`topology::upstream_bridges`] over the enumeration's parent links).
pub fn upstream_bridges(functions: &[PciFunction], index: usize) -> Vec<Bridge> {
    topology::upstream_bridges(
        index,
        functions.len(),
        |i| functions.get(i)?.parent,
        |i| functions.get(i)?.as_bridge(),
    )
}

/// Formats a size as `1 MiB`, `4 KiB`, `16 B`.
pub fn human_size(size: u64) -> String {
    let (v, unit) = match size {
        s if s >= 1 << 30 && s % (1 << 30) == 0 => (s >> 30, "GiB"),
        s if s >= 1 << 20 && s % (1 << 20) == 0 => (s >> 20, "MiB"),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => (s >> 10, "KiB"),
        s => (s, "B"),
    };
    alloc::format!("{v} {unit}")
}

impl fmt::Display for PciFunction {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} [{:04x}:{:04x}] {}",
            self.bdf,
            self.vendor,
            self.device,
            self.name()
        )?;
        if let Some((sec, sub)) = self.buses {
            write!(f, "  buses {sec:02x}..{sub:02x}")?;
        }
        for b in &self.bars {
            let kind = match b.kind {
                BarKind::Mem32 => "",
                BarKind::Mem64 => " 64-bit",
                BarKind::Io => " I/O",
            };
            write!(
                f,
                "  BAR{}{kind} {:#x} ({})",
                b.index,
                b.cpu_addr,
                human_size(b.size)
            )?;
        }
        if self.pci_x {
            f.write_str("  PCI-X")?;
        }
        if self.p2p_facts().is_multifunction() {
            f.write_str("  multi-function")?;
        }
        match (&self.acs, self.p2p_facts().isolation()) {
            (Err(e), _) => write!(f, "  no ACS ({e})")?,
            (Ok(_), Isolation::NotRequired) => {}
            (Ok(Some(a)), Isolation::AcsOff(missing)) => write!(
                f,
                "  ACS off (ctrl {:#x}, needs {:#x})",
                a.acs.control.0, missing.0
            )?,
            (Ok(_), i) => write!(f, "  {}", i.label())?,
        }
        if let Some(b) = self.as_bridge() {
            match b.alias() {
                None => {}
                Some(rid) if rid == b.rid => {
                    f.write_str("  (DMA from below arrives as this bridge)")?
                }
                Some(rid) => write!(f, "  (DMA from below arrives as {rid})")?,
            }
        }
        match &self.dma {
            Ok(d) if d.stream_ids().len() == 1 => {
                write!(f, "  StreamID {:#06x}", d.own().sid)?;
                if d.is_aliased() {
                    // Every alias equals the own RID's StreamID.
                    f.write_str(" (aliases map to the same StreamID)")?;
                }
            }
            Ok(d) => {
                f.write_str("  StreamIDs")?;
                let mut seen: Vec<u32> = Vec::new();
                for a in d.aliases() {
                    if seen.contains(&a.sid) {
                        continue;
                    }
                    seen.push(a.sid);
                    let sep = if seen.len() == 1 { " " } else { ", " };
                    write!(f, "{sep}{:#06x}", a.sid)?;
                    if let AliasSource::Bridge { rid, .. } = a.source {
                        write!(f, " (alias {} via {rid})", a.rid)?;
                    } else if a.source == AliasSource::Quirk {
                        write!(f, " (quirk alias {})", a.rid)?;
                    }
                }
            }
            Err(e) => write!(f, "  no StreamID ({e})")?,
        }
        if let Some(g) = self.group {
            write!(f, "  group {g}")?;
        }
        Ok(())
    }
}

/// A function's ACS extended capability and what enumeration did to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcsCap {
    /// Offset of the capability header in config space.
    pub offset: u16,
    /// Capability and control, as read back after enabling.
    pub acs: Acs,
    /// The ACS Control value found before enumeration wrote it.
    pub control_at_reset: AcsFlags,
}

/// ECAM config-space accessors.
#[derive(Debug, Clone, Copy)]
pub struct Ecam {
    base: usize,
    bus_start: u8,
}

impl Ecam {
    /// Config space of `host` (its ECAM region must be mapped as device memory).
    pub fn new(host: &PciHost) -> Self {
        Self {
            base: host.ecam.base as usize,
            bus_start: host.bus_start,
        }
    }

    fn addr(&self, bdf: Bdf, reg: usize) -> usize {
        let bus = usize::from(bdf.bus - self.bus_start);
        self.base + (bus << 20 | usize::from(bdf.dev) << 15 | usize::from(bdf.func) << 12 | reg)
    }

    /// Reads the 32-bit config register at `reg` (4-byte aligned).
    pub fn read32(&self, bdf: Bdf, reg: usize) -> u32 {
        // SAFETY: the ECAM window is mapped device memory covering every
        // bus/device/function of the host bridge; config reads have no side
        // effects beyond the device's own semantics.
        unsafe { (self.addr(bdf, reg & !3) as *const u32).read_volatile() }
    }

    /// Writes the 32-bit config register at `reg` (4-byte aligned).
    pub fn write32(&self, bdf: Bdf, reg: usize, value: u32) {
        // SAFETY: as in `read32`; the enumerator owns config space.
        unsafe { (self.addr(bdf, reg & !3) as *mut u32).write_volatile(value) }
    }

    /// Reads a 16-bit config register.
    pub fn read16(&self, bdf: Bdf, reg: usize) -> u16 {
        (self.read32(bdf, reg) >> ((reg & 2) * 8)) as u16
    }

    /// Writes a 16-bit config register (16-bit access, so the neighbouring
    /// register, e.g. the RW1C status next to command, is untouched).
    pub fn write16(&self, bdf: Bdf, reg: usize, value: u16) {
        // SAFETY: as in `write32`, for an aligned 16-bit register.
        unsafe { (self.addr(bdf, reg & !1) as *mut u16).write_volatile(value) }
    }
}

const VENDOR: usize = 0x00;
const COMMAND: usize = 0x04;
const CLASS_REV: usize = 0x08;
const HEADER: usize = 0x0c;
const BAR0: usize = 0x10;
const BUSES: usize = 0x18;
const IO_BASE_LIMIT: usize = 0x1c;
const MEM_BASE_LIMIT: usize = 0x20;
const PREF_BASE_LIMIT: usize = 0x24;
const PREF_BASE_UPPER: usize = 0x28;
const PREF_LIMIT_UPPER: usize = 0x2c;
const IO_UPPER: usize = 0x30;
const STATUS: usize = 0x06;
const CAP_PTR: usize = 0x34;

/// Status register: the function has a capability list.
const STATUS_CAP_LIST: u16 = 1 << 4;
/// Capability pointers are dword aligned; the low two bits are reserved.
const CAP_PTR_MASK: u8 = 0xfc;
/// Capability IDs (PCI Local Bus / PCIe base specifications).
const CAP_ID_PCI_X: u8 = 0x07;
const CAP_ID_PCIE: u8 = 0x10;
/// Offset of the PCI Express Capabilities register in the PCIe capability.
const PCIE_CAPS: usize = 0x02;
/// PCI Express Capabilities register: Device/Port Type, bits 7:4.
const PCIE_CAPS_PORT_TYPE_SHIFT: u16 = 4;
const PCIE_CAPS_PORT_TYPE_MASK: u16 = 0xf;
/// More capabilities than fit in config space: the list loops.
const MAX_CAPS: usize = 48;
/// Type 0 (endpoint) and type 1 (PCI-to-PCI bridge) header layouts.
const HEADER_TYPE_ENDPOINT: u8 = 0;
const HEADER_TYPE_BRIDGE: u8 = 1;
/// Multi-function bit of the header type register.
const HEADER_MULTI_FUNCTION: u8 = 0x80;

/// Command register: I/O space, memory space, bus master.
pub const CMD_IO: u16 = 1 << 0;
/// Memory space enable.
pub const CMD_MEMORY: u16 = 1 << 1;
/// Bus master enable.
pub const CMD_BUS_MASTER: u16 = 1 << 2;

/// Bridge windows are 1 MiB (memory) and 4 KiB (I/O) granular.
const MEM_WINDOW_ALIGN: u64 = 1 << 20;
const IO_WINDOW_ALIGN: u64 = 1 << 12;

/// A bump allocator over one window's PCI addresses.
#[derive(Debug, Clone, Copy)]
struct Pool {
    window: Option<Window>,
    next: u64,
}

impl Pool {
    fn new(window: Option<Window>) -> Self {
        // Never hand out PCI address 0 (an I/O window usually starts there).
        Self {
            window,
            next: window.map_or(0, |w| {
                w.pci_addr.max(if w.pci_addr == 0 { 0x1000 } else { 0 })
            }),
        }
    }

    fn alloc(&mut self, size: u64) -> Option<(u64, u64)> {
        let w = self.window?;
        let addr = self.next.checked_next_multiple_of(size)?;
        if addr + size > w.pci_addr + w.size {
            return None;
        }
        self.next = addr + size;
        Some((addr, w.to_cpu(addr)))
    }

    fn align(&mut self, to: u64) {
        self.next = self.next.next_multiple_of(to);
    }
}

/// Why enumeration stopped.
#[derive(Debug, Clone)]
pub enum PciError {
    /// A BAR did not fit into its window.
    OutOfSpace {
        /// The function.
        bdf: Bdf,
        /// BAR index.
        bar: u8,
        /// BAR size.
        size: u64,
    },
    /// More bridges than bus numbers.
    OutOfBuses(Bdf),
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::OutOfSpace { bdf, bar, size } => {
                write!(
                    f,
                    "{bdf} BAR{bar} ({}) does not fit into its PCI window",
                    human_size(*size)
                )
            }
            Self::OutOfBuses(bdf) => write!(f, "no bus number left for the bridge at {bdf}"),
        }
    }
}

struct Enumerator<'a> {
    host: &'a PciHost,
    ecam: Ecam,
    mem32: Pool,
    mem64: Pool,
    io: Pool,
    last_bus: u8,
    found: Vec<PciFunction>,
    /// Index of the bridge whose secondary bus is being scanned.
    parent: Option<usize>,
}

/// Enumerates and configures every function below `host`, then works out
/// each function's DMA alias StreamIDs and isolation group.
pub fn enumerate(host: &PciHost) -> Result<Vec<PciFunction>, PciError> {
    let mut e = Enumerator {
        host,
        ecam: Ecam::new(host),
        mem32: Pool::new(host.mem32),
        mem64: Pool::new(host.mem64),
        io: Pool::new(host.io),
        last_bus: host.bus_start,
        found: Vec::new(),
        parent: None,
    };
    e.scan_bus(host.bus_start, true)?;
    let mut found = e.found;
    resolve_stream_ids(host, &mut found);
    Ok(found)
}

/// Fills in `dma`, `stream_id`, `iommu` and `group` of every function.
fn resolve_stream_ids(host: &PciHost, functions: &mut [PciFunction]) {
    let map = host.iommu_map();
    for i in 0..functions.len() {
        let chain = upstream_bridges(functions, i);
        let f = &functions[i];
        let dma = map.as_ref().map_err(|e| *e).and_then(|map| {
            topology::dma_aliases(
                map,
                None,
                &topology::Function {
                    rid: f.rid(),
                    quirk_devfns: &[],
                    upstream: &chain,
                },
            )
        });
        let f = &mut functions[i];
        f.stream_id = dma.as_ref().map(|d| d.root_alias().sid).map_err(|e| *e);
        f.iommu = dma.as_ref().ok().map(DmaAliases::iommu);
        f.dma = dma;
    }
    let groups = isolation_groups(functions);
    for g in groups.groups() {
        for &m in &g.members {
            functions[m].group = Some(g.id);
        }
    }
}

/// The PCIe capability's Device/Port Type and whether there is a PCI-X
/// capability, from the function's capability list.
fn capabilities(ecam: &Ecam, bdf: Bdf) -> (Option<u8>, bool) {
    let (mut pcie, mut pci_x) = (None, false);
    if ecam.read16(bdf, STATUS) & STATUS_CAP_LIST == 0 {
        return (pcie, pci_x);
    }
    let mut ptr = (ecam.read32(bdf, CAP_PTR) as u8) & CAP_PTR_MASK;
    for _ in 0..MAX_CAPS {
        if ptr == 0 {
            break;
        }
        let header = ecam.read16(bdf, usize::from(ptr));
        let (id, next) = (header as u8, (header >> 8) as u8);
        match id {
            CAP_ID_PCIE => {
                let caps = ecam.read16(bdf, usize::from(ptr) + PCIE_CAPS);
                pcie = Some(((caps >> PCIE_CAPS_PORT_TYPE_SHIFT) & PCIE_CAPS_PORT_TYPE_MASK) as u8);
            }
            CAP_ID_PCI_X => pci_x = true,
            _ => {}
        }
        ptr = next & CAP_PTR_MASK;
    }
    (pcie, pci_x)
}

/// Offset of the extended capability `id` of `bdf` (`Ok(None)`: absent,
/// or no extended config space; [`topology::find_ext_capability`]).
pub fn find_ext_capability(ecam: &Ecam, bdf: Bdf, id: u16) -> Result<Option<u16>, ExtCapError> {
    topology::find_ext_capability(|at| ecam.read32(bdf, usize::from(at)), id)
}

/// Finds the function's ACS capability and turns on the isolation
/// controls it implements (SV, RR, CR, UF), as Linux's
/// `pci_std_enable_acs`; returns what it reads back.
fn enable_acs(ecam: &Ecam, bdf: Bdf) -> Result<Option<AcsCap>, ExtCapError> {
    let Some(offset) = find_ext_capability(ecam, bdf, acs::EXT_CAP_ID_ACS)? else {
        return Ok(None);
    };
    let reg = usize::from(offset);
    let read = || Acs {
        capability: AcsFlags(ecam.read16(bdf, reg + usize::from(acs::ACS_CAPABILITY))),
        control: AcsFlags(ecam.read16(bdf, reg + usize::from(acs::ACS_CONTROL))),
    };
    let before = read();
    let want = before.to_enable();
    if want != before.control {
        ecam.write16(bdf, reg + usize::from(acs::ACS_CONTROL), want.0);
    }
    Ok(Some(AcsCap {
        offset,
        acs: read(),
        control_at_reset: before.control,
    }))
}

impl Enumerator<'_> {
    fn scan_bus(&mut self, bus: u8, root: bool) -> Result<(), PciError> {
        for dev in 0..32 {
            let mut functions = 1;
            let mut func = 0;
            while func < functions {
                let bdf = Bdf { bus, dev, func };
                func += 1;
                if self.ecam.read16(bdf, VENDOR) == 0xffff {
                    continue;
                }
                let header = (self.ecam.read32(bdf, HEADER) >> 16) as u8;
                if bdf.func == 0 && header & HEADER_MULTI_FUNCTION != 0 {
                    functions = 8;
                }
                self.configure(
                    bdf,
                    header & !HEADER_MULTI_FUNCTION,
                    header & HEADER_MULTI_FUNCTION != 0,
                    root,
                )?;
            }
        }
        Ok(())
    }

    fn configure(
        &mut self,
        bdf: Bdf,
        header_type: u8,
        multifunction: bool,
        root: bool,
    ) -> Result<(), PciError> {
        let ids = self.ecam.read32(bdf, VENDOR);
        let class = self.ecam.read32(bdf, CLASS_REV) >> 8;
        // Decoding off while BARs are sized.
        self.ecam.write16(bdf, COMMAND, 0);
        let nbars = match header_type {
            HEADER_TYPE_ENDPOINT => 6,
            HEADER_TYPE_BRIDGE => 2,
            _ => 0,
        };
        let bars = self.assign_bars(bdf, nbars, root)?;
        let (pcie_port_type, pci_x) = capabilities(&self.ecam, bdf);
        // Only PCIe functions have extended config space.
        let acs = match pcie_port_type {
            Some(_) => enable_acs(&self.ecam, bdf),
            None => Ok(None),
        };
        let index = self.found.len();
        self.found.push(PciFunction {
            bdf,
            vendor: ids as u16,
            device: (ids >> 16) as u16,
            class,
            header_type,
            bars,
            buses: None,
            pcie_port_type,
            pci_x,
            multifunction,
            acs,
            parent: self.parent,
            // Filled in by `resolve_stream_ids` once every bus is numbered.
            dma: Err(TopologyError::NoIommuMap),
            stream_id: Err(TopologyError::NoIommuMap),
            iommu: None,
            group: None,
        });
        if header_type == HEADER_TYPE_BRIDGE {
            let outer = self.parent.replace(index);
            let buses = self.configure_bridge(bdf);
            self.parent = outer;
            self.found[index].buses = Some(buses?);
        }
        let uses_io = self.found[index].bars.iter().any(|b| b.kind == BarKind::Io)
            || header_type == HEADER_TYPE_BRIDGE;
        let cmd = CMD_MEMORY | CMD_BUS_MASTER | if uses_io { CMD_IO } else { 0 };
        self.ecam.write16(bdf, COMMAND, cmd);
        Ok(())
    }

    fn assign_bars(&mut self, bdf: Bdf, nbars: u8, root: bool) -> Result<Vec<Bar>, PciError> {
        let mut bars = Vec::new();
        let mut i = 0;
        while i < nbars {
            let reg = BAR0 + 4 * usize::from(i);
            let orig = self.ecam.read32(bdf, reg);
            self.ecam.write32(bdf, reg, u32::MAX);
            let lo = self.ecam.read32(bdf, reg);
            let index = i;
            i += 1;
            if lo == 0 {
                self.ecam.write32(bdf, reg, orig);
                continue;
            }
            let io = lo & 1 != 0;
            let is64 = !io && (lo >> 1) & 3 == 2;
            let prefetchable = !io && lo & 8 != 0;
            let mut mask = if io {
                u64::from(lo & !3) | 0xffff_0000
            } else {
                u64::from(lo & !0xf)
            };
            if is64 {
                self.ecam.write32(bdf, reg + 4, u32::MAX);
                mask |= u64::from(self.ecam.read32(bdf, reg + 4)) << 32;
                i += 1;
            } else {
                mask |= 0xffff_ffff_0000_0000;
            }
            let size = (!mask).wrapping_add(1);
            if size == 0 {
                continue;
            }
            // A 64-bit BAR goes to the 64-bit window when a bridge's
            // prefetchable window can carry it (prefetchable) or no bridge
            // is in between (root bus); otherwise it needs a 32-bit address.
            let (kind, pool) = if io {
                (BarKind::Io, &mut self.io)
            } else if is64 && (prefetchable || root) && self.mem64.window.is_some() {
                (BarKind::Mem64, &mut self.mem64)
            } else {
                (
                    if is64 { BarKind::Mem64 } else { BarKind::Mem32 },
                    &mut self.mem32,
                )
            };
            let (pci_addr, cpu_addr) = pool.alloc(size).ok_or(PciError::OutOfSpace {
                bdf,
                bar: index,
                size,
            })?;
            self.ecam
                .write32(bdf, reg, pci_addr as u32 | (lo & if io { 3 } else { 0xf }));
            if is64 {
                self.ecam.write32(bdf, reg + 4, (pci_addr >> 32) as u32);
            }
            bars.push(Bar {
                index,
                kind,
                prefetchable,
                pci_addr,
                cpu_addr,
                size,
            });
        }
        Ok(bars)
    }

    /// Numbers the buses behind the bridge at `bdf`, enumerates them, and
    /// opens the bridge's windows around what was assigned behind it.
    fn configure_bridge(&mut self, bdf: Bdf) -> Result<(u8, u8), PciError> {
        if self.last_bus >= self.host.bus_end {
            return Err(PciError::OutOfBuses(bdf));
        }
        self.last_bus += 1;
        let secondary = self.last_bus;
        let latency = self.ecam.read32(bdf, BUSES) & 0xff00_0000;
        let buses = |sub: u8| {
            latency | u32::from(sub) << 16 | u32::from(secondary) << 8 | u32::from(bdf.bus)
        };
        // Open the subordinate range fully while scanning below.
        self.ecam.write32(bdf, BUSES, buses(self.host.bus_end));

        self.mem32.align(MEM_WINDOW_ALIGN);
        self.mem64.align(MEM_WINDOW_ALIGN);
        self.io.align(IO_WINDOW_ALIGN);
        let (m32, m64, io) = (self.mem32.next, self.mem64.next, self.io.next);

        self.scan_bus(secondary, false)?;

        let subordinate = self.last_bus;
        self.ecam.write32(bdf, BUSES, buses(subordinate));
        self.mem32.align(MEM_WINDOW_ALIGN);
        self.mem64.align(MEM_WINDOW_ALIGN);
        self.io.align(IO_WINDOW_ALIGN);

        // Memory window (32-bit, 1 MiB granular): base/limit bits 31:20.
        let (base, limit) = window(m32, self.mem32.next);
        self.ecam.write32(
            bdf,
            MEM_BASE_LIMIT,
            ((limit >> 16) as u32 & 0xfff0) << 16 | ((base >> 16) as u32 & 0xfff0),
        );
        // Prefetchable window (64-bit capable): bits 31:20 here, 63:32 upper.
        let (base, limit) = window(m64, self.mem64.next);
        self.ecam.write32(
            bdf,
            PREF_BASE_LIMIT,
            (((limit >> 16) as u32 & 0xfff0) | 1) << 16 | ((base >> 16) as u32 & 0xfff0) | 1,
        );
        self.ecam.write32(bdf, PREF_BASE_UPPER, (base >> 32) as u32);
        self.ecam
            .write32(bdf, PREF_LIMIT_UPPER, (limit >> 32) as u32);
        // I/O window (4 KiB granular, 32-bit I/O addressing).
        let (base, limit) = window(io, self.io.next);
        // 16-bit write: the secondary status next to it is write-1-to-clear.
        self.ecam.write16(
            bdf,
            IO_BASE_LIMIT,
            ((limit >> 8) as u16 & 0xf0) << 8 | ((base >> 8) as u16 & 0xf0),
        );
        self.ecam.write32(
            bdf,
            IO_UPPER,
            ((limit >> 16) as u32) << 16 | (base >> 16) as u32 & 0xffff,
        );
        Ok((secondary, subordinate))
    }
}

/// A bridge window `[start, end)` as (base, limit); an empty window is
/// encoded with base > limit, which disables it.
fn window(start: u64, end: u64) -> (u64, u64) {
    if end > start {
        (start, end - 1)
    } else {
        (!0xfffff, 0)
    }
}
