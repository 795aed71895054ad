//! A software model of an SMMUv3's register interface, and a host HAL, for
//! tests that drive the driver without hardware (feature `testing`, host
//! only: it needs `std`).
//!
//! [`SmmuModel`] is a register block that answers like an SMMU: ID registers
//! set through a [`ModelBuilder`], CR0ACK following CR0, IRQ_CTRLACK
//! following IRQ_CTRL, GBPA updates completing at once, commands published
//! through CMDQ_PROD consumed (CMD_SYNC included) while CMDQEN is set,
//! command errors on the commands a test picks, global errors raised on
//! demand, event records injected into the event queue, and STEs read back
//! the way the SMMU would find them (linear or two-level tables).
//! [`HostHal`] gives the driver memory from the host allocator with
//! physical address = virtual address, so the model reads what the driver
//! wrote.
//!
//! It models the programming interface only: nothing is translated, and no
//! event is raised unless a test injects it.
//!
//! ```
//! use smmuv3::testing::{HostHal, SmmuModel};
//! use smmuv3::{Config, Smmu, State};
//!
//! let model = SmmuModel::builder().sid_bits(16).build();
//! // SAFETY: the model's register block is MMIO_SIZE bytes and outlives
//! // `smmu` (declared after it, so dropped first); nothing else drives it.
//! let smmu = unsafe { Smmu::<HostHal>::new(model.base(), Config::default()) }?;
//! smmu.enable()?;
//! assert_eq!(smmu.state(), State::Enabled);
//! assert!(model.commands().len() >= 2); // CFGI_ALL, TLBI_*_ALL, CMD_SYNCs
//! # Ok::<(), smmuv3::Error>(())
//! ```

use core::ptr::NonNull;
use std::vec::Vec;

use crate::expert::{L1Descriptor, Ste};
use crate::fake::FakeRegs;

pub use crate::fake::FakeHal as HostHal;

/// Register offsets (from page 0) the model uses.
mod off {
    pub const IDR0: usize = 0x00;
    pub const IDR1: usize = 0x04;
    pub const IDR3: usize = 0x0C;
    pub const IDR5: usize = 0x14;
    pub const IIDR: usize = 0x18;
    pub const AIDR: usize = 0x1C;
    pub const CR0ACK: usize = 0x24;
    pub const GERROR: usize = 0x60;
    pub const GERRORN: usize = 0x64;
    pub const STRTAB_BASE: usize = 0x80;
    pub const STRTAB_BASE_CFG: usize = 0x88;
    pub const EVENTQ_BASE: usize = 0xA0;
    pub const EVENTQ_PROD: usize = 0x1_00A8;
    pub const EVENTQ_CONS: usize = 0x1_00AC;
}

/// CR0.EVENTQEN.
const EVENTQEN: u32 = 1 << 2;
/// Q_PROD.OVFLG.
const OVFLG: u32 = 1 << 31;
/// Address bits [51:6] of STRTAB_BASE, [51:5] of a queue base.
const STRTAB_ADDR: u64 = 0x000F_FFFF_FFFF_FFC0;
const QUEUE_ADDR: u64 = 0x000F_FFFF_FFFF_FFE0;

/// Event type of F_TRANSLATION.
const F_TRANSLATION: u64 = 0x10;

/// The ID registers of a model, set field by field. The default is what
/// QEMU's `virt` SMMUv3 reports (SMMUv3.1, stage 1 and 2, coherent, 16-bit
/// VMIDs and ASIDs, two-level stream tables, 16 StreamID bits, range
/// invalidation, BBML2), except a 48-bit output size so that host heap
/// addresses fit.
///
/// ```
/// use smmuv3::testing::SmmuModel;
///
/// let model = SmmuModel::builder().stage1(false).vmid16(false).build();
/// let idr0 = model.read32(0x00);
/// assert_eq!(idr0 & 0b11, 0b01); // S2P only
/// assert_eq!(idr0 >> 18 & 1, 0); // 8-bit VMIDs
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelBuilder {
    idr0: u32,
    idr1: u32,
    idr3: u32,
    idr5: u32,
    iidr: u32,
    aidr: u32,
}

impl Default for ModelBuilder {
    fn default() -> Self {
        Self {
            idr0: 0x0D44_101B,
            idr1: 0x0273_0010,
            idr3: 0x0000_1404,
            idr5: 0x0000_0075,
            iidr: 0,
            aidr: 0x0000_0001,
        }
    }
}

impl ModelBuilder {
    fn bit(reg: u32, bit: u32, on: bool) -> u32 {
        (reg & !(1 << bit)) | (u32::from(on) << bit)
    }

    fn field(reg: u32, shift: u32, bits: u32, value: u32) -> u32 {
        let mask = ((1u32 << bits) - 1) << shift;
        (reg & !mask) | ((value << shift) & mask)
    }

    /// IDR0.S1P: stage-1 translation.
    pub fn stage1(mut self, on: bool) -> Self {
        self.idr0 = Self::bit(self.idr0, 1, on);
        self
    }

    /// IDR0.S2P: stage-2 translation.
    pub fn stage2(mut self, on: bool) -> Self {
        self.idr0 = Self::bit(self.idr0, 0, on);
        self
    }

    /// IDR0.COHACC: coherent table walks and queue accesses.
    pub fn coherent(mut self, on: bool) -> Self {
        self.idr0 = Self::bit(self.idr0, 4, on);
        self
    }

    /// IDR0.VMID16: 16-bit VMIDs (8-bit otherwise).
    pub fn vmid16(mut self, on: bool) -> Self {
        self.idr0 = Self::bit(self.idr0, 18, on);
        self
    }

    /// IDR0.ASID16: 16-bit ASIDs (8-bit otherwise).
    pub fn asid16(mut self, on: bool) -> Self {
        self.idr0 = Self::bit(self.idr0, 12, on);
        self
    }

    /// IDR0.CD2L: two-level context-descriptor tables.
    pub fn cd2l(mut self, on: bool) -> Self {
        self.idr0 = Self::bit(self.idr0, 19, on);
        self
    }

    /// IDR1.SSIDSIZE: SubstreamID bits (0 = no substreams, as QEMU).
    pub fn ssid_bits(mut self, bits: u8) -> Self {
        self.idr1 = Self::field(self.idr1, 6, 5, u32::from(bits));
        self
    }

    /// IDR0.ST_LEVEL: two-level stream tables.
    pub fn two_level_strtab(mut self, on: bool) -> Self {
        self.idr0 = Self::field(self.idr0, 27, 2, u32::from(on));
        self
    }

    /// IDR1.SIDSIZE: StreamID bits (0 to 32).
    pub fn sid_bits(mut self, bits: u8) -> Self {
        self.idr1 = Self::field(self.idr1, 0, 6, u32::from(bits));
        self
    }

    /// IDR1.CMDQS and IDR1.EVENTQS: log2 of the largest queues.
    pub fn queue_log2(mut self, cmdq: u8, eventq: u8) -> Self {
        self.idr1 = Self::field(self.idr1, 21, 5, u32::from(cmdq));
        self.idr1 = Self::field(self.idr1, 16, 5, u32::from(eventq));
        self
    }

    /// IDR3.RIL: range invalidation.
    pub fn ril(mut self, on: bool) -> Self {
        self.idr3 = Self::bit(self.idr3, 10, on);
        self
    }

    /// IDR5.OAS, as the 3-bit encoding (0: 32 bits ... 5: 48 bits, 6: 52
    /// bits). Host heap addresses need 48 bits.
    pub fn oas(mut self, encoding: u8) -> Self {
        self.idr5 = Self::field(self.idr5, 0, 3, u32::from(encoding));
        self
    }

    /// IDR5.GRAN4K (bit 4), GRAN16K (bit 5) and GRAN64K (bit 6), as a
    /// mask of those bits: `1 << 5` is a 16K-only SMMU.
    pub fn granules(mut self, mask: u32) -> Self {
        self.idr5 = Self::field(self.idr5, 4, 3, mask >> 4);
        self
    }

    /// IDR1.PRIQS: log2 of the largest PRI queue.
    pub fn priq_log2(mut self, log2: u8) -> Self {
        self.idr1 = Self::field(self.idr1, 11, 5, u32::from(log2));
        self
    }

    /// Sets the `bits`-bit field at `shift` of the ID register at `offset`
    /// (as [`ModelBuilder::id_register`]) to `value`, for fields without
    /// their own setter (IDR0.TTF, TTENDIAN, STALL_MODEL, IDR3.BBML, ...).
    ///
    /// ```
    /// use smmuv3::testing::{HostHal, SmmuModel};
    /// use smmuv3::{Config, Error, Smmu, Unsupported};
    ///
    /// // IDR0.TTENDIAN (bits [22:21]) = 0b11: big-endian tables only.
    /// let model = SmmuModel::builder().id_field(0x00, 21, 2, 0b11).build();
    /// // SAFETY: the model outlives the driver; nothing else drives it.
    /// let r = unsafe { Smmu::<HostHal>::new(model.base(), Config::default()) };
    /// assert_eq!(r.err(), Some(Error::Unsupported(Unsupported::BigEndianOnly)));
    /// // A 16K-only SMMU (IDR5.GRAN16K) with 8-bit ASIDs.
    /// let model = SmmuModel::builder().granules(1 << 5).asid16(false).build();
    /// // SAFETY: as above.
    /// let smmu = unsafe { Smmu::<HostHal>::new(model.base(), Config::default()) }?;
    /// assert!(smmu.features().granule_16k && !smmu.features().granule_4k);
    /// assert_eq!(smmu.features().asid_bits, 8);
    /// # Ok::<(), smmuv3::Error>(())
    /// ```
    pub fn id_field(self, offset: usize, shift: u32, bits: u32, value: u32) -> Self {
        let current = match offset {
            off::IDR0 => self.idr0,
            off::IDR1 => self.idr1,
            off::IDR3 => self.idr3,
            off::IDR5 => self.idr5,
            off::IIDR => self.iidr,
            off::AIDR => self.aidr,
            _ => return self,
        };
        let mask = (((1u64 << bits) - 1) as u32) << shift;
        self.id_register(offset, (current & !mask) | ((value << shift) & mask))
    }

    /// Sets a whole ID register by offset (0x00 IDR0, 0x04 IDR1, 0x0C IDR3,
    /// 0x14 IDR5, 0x18 IIDR, 0x1C AIDR); other offsets are ignored.
    pub fn id_register(mut self, offset: usize, value: u32) -> Self {
        match offset {
            off::IDR0 => self.idr0 = value,
            off::IDR1 => self.idr1 = value,
            off::IDR3 => self.idr3 = value,
            off::IDR5 => self.idr5 = value,
            off::IIDR => self.iidr = value,
            off::AIDR => self.aidr = value,
            _ => {}
        }
        self
    }

    /// A responsive register block with these ID registers.
    pub fn build(self) -> SmmuModel {
        let regs = FakeRegs::new();
        for (offset, value) in [
            (off::IDR0, self.idr0),
            (off::IDR1, self.idr1),
            (off::IDR3, self.idr3),
            (off::IDR5, self.idr5),
            (off::IIDR, self.iidr),
            (off::AIDR, self.aidr),
        ] {
            regs.set32(offset, value);
        }
        regs.respond();
        SmmuModel { regs }
    }
}

/// A software SMMUv3: its two register pages, answering the driver (see the
/// [module documentation](self)). Pass [`SmmuModel::base`] to
/// [`crate::Smmu::new`], and keep the model alive longer than the driver.
#[derive(Debug)]
pub struct SmmuModel {
    regs: FakeRegs,
}

impl Default for SmmuModel {
    fn default() -> Self {
        ModelBuilder::default().build()
    }
}

impl SmmuModel {
    /// A builder for the ID registers ([`ModelBuilder`]).
    pub fn builder() -> ModelBuilder {
        ModelBuilder::default()
    }

    /// The register block's address: the base to give [`crate::Smmu::new`]
    /// (valid for [`crate::MMIO_SIZE`] bytes while the model lives).
    pub fn base(&self) -> NonNull<u8> {
        self.regs.base()
    }

    /// Reads the 32-bit register at `offset` from page 0 (page 1 registers
    /// at 0x1_0000 + offset).
    ///
    /// # Panics
    ///
    /// If `offset + 4` is beyond the two pages.
    pub fn read32(&self, offset: usize) -> u32 {
        self.regs.get32(offset)
    }

    /// Reads the 64-bit register at `offset` (see [`SmmuModel::read32`]).
    pub fn read64(&self, offset: usize) -> u64 {
        self.regs.get64(offset)
    }

    /// Every command the model has consumed so far, CMD_SYNCs included, as
    /// raw dwords (decode the opcode from bits \[7:0\] of the first).
    pub fn commands(&self) -> Vec<[u64; 2]> {
        self.regs.commands()
    }

    /// Makes the model stop at the commands `pick` chooses, as hardware
    /// stops at an erroneous one: `pick` returns the CMDQ_CONS.ERR code
    /// (1 = CERROR_ILL, 2 = CERROR_ABT, 3 = CERROR_ATC_INV_SYNC), or `None`
    /// to consume the command. The model then raises GERROR.CMDQ_ERR and
    /// resumes when the driver acknowledges it.
    ///
    /// ```
    /// use smmuv3::expert::Command;
    /// use smmuv3::testing::{HostHal, SmmuModel};
    /// use smmuv3::{CmdqError, Config, Error, Smmu};
    ///
    /// let model = SmmuModel::default();
    /// // SAFETY: the model outlives the driver; nothing else drives it.
    /// let smmu = unsafe { Smmu::<HostHal>::new(model.base(), Config::default()) }?;
    /// smmu.enable()?;
    /// // Every TLBI_NSNH_ALL (opcode 0x30) is "illegal" from now on.
    /// model.fault_commands(|cmd| (cmd[0] & 0xFF == 0x30).then_some(1));
    /// // SAFETY: an invalidation names no memory.
    /// let r = unsafe { smmu.submit_unchecked(&[Command::TlbiNsnhAll]) };
    /// assert!(matches!(
    ///     r,
    ///     Err(Error::CommandError { error: CmdqError::Illegal, opcode: 0x30, .. })
    /// ));
    /// assert_eq!(smmu.stats().cmdq.errors, 1); // recovered: replaced by CMD_SYNC
    /// # Ok::<(), smmuv3::Error>(())
    /// ```
    pub fn fault_commands(&self, pick: impl FnMut(&[u64; 2]) -> Option<u32> + Send + 'static) {
        self.regs.fault_commands(std::boxed::Box::new(pick));
    }

    /// Raises the global errors `bits` (GERROR bits, e.g. 1 << 2
    /// EVENTQ_ABT_ERR, 1 << 8 SFM_ERR) that are not already active: each
    /// becomes active until the driver toggles it in GERRORN.
    ///
    /// ```
    /// use smmuv3::testing::{HostHal, SmmuModel};
    /// use smmuv3::{Config, Smmu};
    ///
    /// let model = SmmuModel::default();
    /// // SAFETY: the model outlives the driver; nothing else drives it.
    /// let smmu = unsafe { Smmu::<HostHal>::new(model.base(), Config::default()) }?;
    /// smmu.enable()?;
    /// model.raise_gerror(1 << 2); // EVENTQ_ABT_ERR: records were lost
    /// let report = smmu.handle_gerror()?;
    /// assert!(report.eventq_abort);
    /// assert_eq!(model.read32(0x60) ^ model.read32(0x64), 0); // acknowledged
    /// # Ok::<(), smmuv3::Error>(())
    /// ```
    pub fn raise_gerror(&self, bits: u32) {
        let gerror = self.regs.get32(off::GERROR);
        let active = gerror ^ self.regs.get32(off::GERRORN);
        self.regs.set32(off::GERROR, gerror ^ (bits & !active));
    }

    /// Writes one event record into the event queue as the SMMU would
    /// (record at EVENTQ_PROD, then PROD advanced). Returns `false`, and
    /// writes nothing, while EVENTQEN is clear; when the queue is full the
    /// record is dropped and PROD.OVFLG toggles, as on hardware.
    ///
    /// ```
    /// use smmuv3::testing::{HostHal, SmmuModel};
    /// use smmuv3::{Config, EventType, Smmu};
    ///
    /// let model = SmmuModel::default();
    /// // SAFETY: the model outlives the driver; nothing else drives it.
    /// let smmu = unsafe { Smmu::<HostHal>::new(model.base(), Config::default()) }?;
    /// assert!(!model.inject_event(SmmuModel::translation_fault(8, 0x8000_0000, true)));
    /// smmu.enable()?;
    /// assert!(model.inject_event(SmmuModel::translation_fault(8, 0x8000_0000, true)));
    /// let mut seen = Vec::new();
    /// let (_gerror, drained) = smmu.service(|e| seen.push(e))?;
    /// assert_eq!(drained.map(|d| d.records), Some(1));
    /// assert_eq!(seen[0].kind, EventType::FTranslation);
    /// assert_eq!((seen[0].sid, seen[0].input_addr), (8, Some(0x8000_0000)));
    /// assert!(!seen[0].rnw); // a write
    /// # Ok::<(), smmuv3::Error>(())
    /// ```
    pub fn inject_event(&self, record: [u64; 4]) -> bool {
        if self.regs.get32(off::CR0ACK) & EVENTQEN == 0 {
            return false;
        }
        let base = self.regs.get64(off::EVENTQ_BASE);
        let log2 = (base & 0x1F) as u32;
        let addr = base & QUEUE_ADDR;
        let wrap_index = (2u32 << log2) - 1;
        let prod_reg = self.regs.get32(off::EVENTQ_PROD);
        let prod = prod_reg & wrap_index;
        let cons = self.regs.get32(off::EVENTQ_CONS) & wrap_index;
        let index_mask = (1u32 << log2) - 1;
        if prod & index_mask == cons & index_mask && prod != cons {
            self.regs.set32(off::EVENTQ_PROD, prod_reg ^ OVFLG);
            return false;
        }
        let slot = (prod & index_mask) as usize;
        let p = (addr as usize + slot * 32) as *mut u64;
        for (i, word) in record.iter().enumerate() {
            // SAFETY: HostHal memory is identity-mapped (paddr == vaddr), and
            // the event queue the driver programmed into EVENTQ_BASE is live
            // while EVENTQEN is set; the slot is inside it.
            unsafe { p.add(i).write_volatile(*word) };
        }
        let next = (prod + 1) & wrap_index;
        self.regs.set32(off::EVENTQ_PROD, (prod_reg & OVFLG) | next);
        true
    }

    /// An F_TRANSLATION record (stage 2, class IN) for `sid` at input
    /// address `addr`, a write when `write`: for [`SmmuModel::inject_event`].
    pub fn translation_fault(sid: u32, addr: u64, write: bool) -> [u64; 4] {
        const RNW: u64 = 1 << 35;
        const S2: u64 = 1 << 39;
        const CLASS_IN: u64 = 2 << 40;
        let d1 = S2 | CLASS_IN | if write { 0 } else { RNW };
        [
            F_TRANSLATION | u64::from(sid) << 32,
            d1,
            addr,
            (addr >> 12) << 12,
        ]
    }

    /// The STE of `sid` as the SMMU would fetch it: through STRTAB_BASE and
    /// STRTAB_BASE_CFG, linear or two-level. `None` when `sid` is beyond
    /// the table, or its level-1 descriptor is invalid.
    ///
    /// ```
    /// use smmuv3::expert::SteConfig;
    /// use smmuv3::testing::{HostHal, SmmuModel};
    /// use smmuv3::{Config, Smmu};
    ///
    /// let model = SmmuModel::default();
    /// // SAFETY: the model outlives the driver; nothing else drives it.
    /// let smmu = unsafe { Smmu::<HostHal>::new(model.base(), Config::default()) }?;
    /// smmu.enable()?;
    /// smmu.set_bypass(0x10)?;
    /// let ste = model.ste(0x10).expect("a level-2 table for 0x10");
    /// assert_eq!(ste.config(), SteConfig::Bypass);
    /// assert_eq!(ste, smmu.ste(0x10)?); // the driver reads the same entry
    /// assert!(model.ste(0x1_0000).is_none()); // beyond 16 StreamID bits
    /// # Ok::<(), smmuv3::Error>(())
    /// ```
    pub fn ste(&self, sid: u32) -> Option<Ste> {
        let ste_addr = self.ste_address(sid)?;
        let mut ste = Ste([0; 8]);
        for (i, word) in ste.0.iter_mut().enumerate() {
            // SAFETY: the STE lies inside a table the driver allocated from
            // HostHal (identity-mapped) and programmed into the SMMU.
            *word = unsafe { (ste_addr as usize as *const u64).add(i).read_volatile() };
        }
        Some(ste)
    }

    /// The address the SMMU would fetch the STE of `sid` from (see
    /// [`SmmuModel::ste`]): for checking what the driver cleaned.
    pub fn ste_address(&self, sid: u32) -> Option<u64> {
        let base = self.regs.get64(off::STRTAB_BASE) & STRTAB_ADDR;
        let cfg = self.regs.get32(off::STRTAB_BASE_CFG);
        let log2size = cfg & 0x3F;
        let split = (cfg >> 6) & 0x1F;
        let two_level = (cfg >> 16) & 0b11 == 1;
        if base == 0 || u64::from(sid) >> log2size != 0 {
            return None;
        }
        let ste_addr = if two_level {
            // SAFETY: HostHal memory is identity-mapped; the level-1 table
            // the driver programmed covers 2^(log2size - split) descriptors
            // and `sid` is within log2size bits.
            let desc = unsafe {
                ((base as usize) as *const u64)
                    .add((sid >> split) as usize)
                    .read_volatile()
            };
            let l1 = L1Descriptor::decode(desc)?;
            let index = u64::from(sid) & ((1 << split) - 1);
            if index >> (l1.span - 1) != 0 {
                return None;
            }
            l1.l2_paddr + index * 64
        } else {
            base + u64::from(sid) * 64
        };
        Some(ste_addr)
    }
}
