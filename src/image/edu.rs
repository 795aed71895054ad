//! QEMU's `edu` PCI device (1234:11e8) as a DMA engine for tests.
//!
//! Its DMA buffer is 4096 bytes at device offset 0x40000. QEMU does not
//! expose that buffer through BAR0, so data only enters or leaves it by DMA:
//! [`Edu::dma_from_ram`] (RAM -> device) and [`Edu::dma_to_ram`]
//! (device -> RAM). Bus addresses are ANDed with the device's `dma_mask`
//! (28 bits unless QEMU was given `-device edu,dma_mask=...`).

use alloc::vec::Vec;
use core::fmt;

use super::cpu;
use super::pci::{Bdf, PciFunction};

/// Vendor and device ID.
pub const EDU_IDS: (u16, u16) = (0x1234, 0x11e8);
/// What the identification register reads.
pub const EDU_ID_VALUE: u32 = 0x0100_00ed;
/// Device offset of the DMA buffer.
pub const BUFFER_OFFSET: u64 = 0x40000;
/// Size of the DMA buffer.
pub const BUFFER_SIZE: usize = 4096;
/// Bound on one transfer (QEMU completes it ~100 ms of virtual time after RUN).
pub const DMA_TIMEOUT_NS: u64 = 2_000_000_000;

const REG_ID: usize = 0x00;
const REG_LIVENESS: usize = 0x04;
const REG_DMA_SRC: usize = 0x80;
const REG_DMA_DST: usize = 0x88;
const REG_DMA_COUNT: usize = 0x90;
const REG_DMA_CMD: usize = 0x98;
const DMA_RUN: u64 = 1 << 0;
const DMA_TO_RAM: u64 = 1 << 1;

/// What went wrong with an edu device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EduError {
    /// The ID register did not read [`EDU_ID_VALUE`].
    BadId(u32),
    /// The liveness register did not return the inverse of what was written.
    NotAlive {
        /// Written.
        wrote: u32,
        /// Read back.
        read: u32,
    },
    /// `offset + len` exceeds the 4096-byte device buffer.
    OutOfBuffer {
        /// Offset into the buffer.
        offset: usize,
        /// Length.
        len: usize,
    },
    /// RUN stayed set past [`DMA_TIMEOUT_NS`].
    DmaTimeout,
    /// A transfer was started while another one was running.
    Busy,
}

impl fmt::Display for EduError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::BadId(v) => write!(
                f,
                "edu ID register reads {v:#010x}, expected {EDU_ID_VALUE:#010x}"
            ),
            Self::NotAlive { wrote, read } => {
                write!(
                    f,
                    "edu liveness: wrote {wrote:#010x}, read {read:#010x} (expected {:#010x})",
                    !wrote
                )
            }
            Self::OutOfBuffer { offset, len } => {
                write!(
                    f,
                    "edu buffer range {offset:#x}+{len:#x} exceeds {BUFFER_SIZE:#x} bytes"
                )
            }
            Self::DmaTimeout => write!(
                f,
                "edu DMA did not complete within {} ms",
                DMA_TIMEOUT_NS / 1_000_000
            ),
            Self::Busy => f.write_str("edu DMA already running"),
        }
    }
}

/// One edu function, with BAR0 assigned and memory + bus master enabled.
#[derive(Debug, Clone, Copy)]
pub struct Edu {
    /// Where it is.
    pub bdf: Bdf,
    /// CPU address of BAR0.
    pub bar0: usize,
    /// The StreamID its DMA arrives with, if `iommu-map` covers it: its
    /// own RID's, or behind an aliasing bridge the alias closest to the
    /// root (e.g. 0x200 for 02:03.0 behind a PCIe-to-PCI bridge to bus 2).
    pub stream_id: Option<u32>,
    /// Its isolation group (see `pci::isolation_groups`).
    pub group: Option<usize>,
}

/// Every `edu` the boot found, or a test failure naming how many a test
/// needs when there are fewer (the on-target suites' common precondition).
#[track_caller]
pub fn find_at_least(min: usize) -> Result<Vec<Edu>, super::harness::Failure> {
    let e = find_all(&super::boot().pci);
    if e.len() < min {
        let mut f = super::harness::Failure::new(alloc::format!("at least {min} edu device(s)"));
        f.actual = Some(alloc::format!("{} found", e.len()));
        return Err(f);
    }
    Ok(e)
}

/// Every edu function in `functions` (in enumeration order).
pub fn find_all(functions: &[PciFunction]) -> Vec<Edu> {
    functions
        .iter()
        .filter(|f| (f.vendor, f.device) == EDU_IDS)
        .filter_map(|f| {
            let bar0 = f.bar(0)?;
            Some(Edu {
                bdf: f.bdf,
                bar0: bar0.cpu_addr as usize,
                stream_id: f.stream_id.ok(),
                group: f.group,
            })
        })
        .collect()
}

impl Edu {
    fn read32(&self, reg: usize) -> u32 {
        // SAFETY: BAR0 was assigned by the enumerator and lies in a PCI window
        // mapped as device memory; edu registers below 0x80 are 32-bit.
        unsafe { ((self.bar0 + reg) as *const u32).read_volatile() }
    }

    fn write32(&self, reg: usize, value: u32) {
        // SAFETY: as in `read32`.
        unsafe { ((self.bar0 + reg) as *mut u32).write_volatile(value) }
    }

    fn read64(&self, reg: usize) -> u64 {
        // SAFETY: as in `read32`; the DMA registers (0x80..0xa0) accept
        // 64-bit accesses.
        unsafe { ((self.bar0 + reg) as *const u64).read_volatile() }
    }

    fn write64(&self, reg: usize, value: u64) {
        // SAFETY: as in `read64`.
        unsafe { ((self.bar0 + reg) as *mut u64).write_volatile(value) }
    }

    /// The identification register (BAR0 + 0x00).
    pub fn id(&self) -> u32 {
        self.read32(REG_ID)
    }

    /// Checks the identification register.
    pub fn check_id(&self) -> Result<(), EduError> {
        match self.id() {
            EDU_ID_VALUE => Ok(()),
            v => Err(EduError::BadId(v)),
        }
    }

    /// Writes `value` to the liveness register and checks it reads back
    /// inverted.
    pub fn check_alive(&self, value: u32) -> Result<(), EduError> {
        self.write32(REG_LIVENESS, value);
        let read = self.read32(REG_LIVENESS);
        if read == !value {
            Ok(())
        } else {
            Err(EduError::NotAlive { wrote: value, read })
        }
    }

    /// Whether a transfer is running.
    pub fn dma_busy(&self) -> bool {
        self.read64(REG_DMA_CMD) & DMA_RUN != 0
    }

    fn check_range(offset: usize, len: usize) -> Result<(), EduError> {
        if offset.checked_add(len).is_none_or(|end| end > BUFFER_SIZE) {
            Err(EduError::OutOfBuffer { offset, len })
        } else {
            Ok(())
        }
    }

    fn run(&self, src: u64, dst: u64, len: usize, to_ram: bool) -> Result<(), EduError> {
        if self.dma_busy() {
            return Err(EduError::Busy);
        }
        self.write64(REG_DMA_SRC, src);
        self.write64(REG_DMA_DST, dst);
        self.write64(REG_DMA_COUNT, len as u64);
        self.write64(REG_DMA_CMD, DMA_RUN | if to_ram { DMA_TO_RAM } else { 0 });
        let start = cpu::now_ns();
        while self.dma_busy() {
            if cpu::now_ns() - start > DMA_TIMEOUT_NS {
                return if self.dma_busy() {
                    Err(EduError::DmaTimeout)
                } else {
                    Ok(())
                };
            }
            core::hint::spin_loop();
        }
        Ok(())
    }

    /// DMA `len` bytes from bus address `bus_addr` (RAM, or an IOVA when the
    /// SMMU translates) into the device buffer at `dev_off`, and waits.
    pub fn dma_from_ram(&self, dev_off: usize, bus_addr: u64, len: usize) -> Result<(), EduError> {
        Self::check_range(dev_off, len)?;
        // Make the CPU's writes to the source visible before the device reads.
        // SAFETY: a barrier.
        unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
        self.run(bus_addr, BUFFER_OFFSET + dev_off as u64, len, false)
    }

    /// DMA `len` bytes from the device buffer at `dev_off` to bus address
    /// `bus_addr`, and waits.
    pub fn dma_to_ram(&self, dev_off: usize, bus_addr: u64, len: usize) -> Result<(), EduError> {
        Self::check_range(dev_off, len)?;
        self.run(BUFFER_OFFSET + dev_off as u64, bus_addr, len, true)?;
        // SAFETY: a barrier; the device's writes are complete (RUN clear).
        unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
        Ok(())
    }
}
