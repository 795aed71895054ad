//! Linear and two-level stream tables.
//!
//! The stream table maps a StreamID to its 64-byte stream table entry (STE).
//! A linear table holds `2^n` STEs in one block aligned to its size; with
//! SIDSIZE 16 that is 4 MiB, mostly unused on a machine with a handful of
//! devices. A two-level table (SPLIT = 8) holds one 8-byte level-1 descriptor
//! per 256 StreamIDs (one PCI bus) and allocates each 16 KiB level-2 table on
//! first use of a StreamID in its range.
//!
//! Every STE starts as *abort* (V = 1, Config = abort): a stream nobody
//! configured is denied, never bypassed. An absent level-2 table (L1
//! descriptor Span = 0) also denies.

use alloc::vec::Vec;
use tock_registers::LocalRegisterCopy;

use crate::error::{Error, Invalid, Result, Unsupported};
use crate::hal::{Dma, Hal};
use crate::regs::{STRTAB_BASE, STRTAB_BASE_CFG};

/// StreamID bits resolved by one level-2 table (STRTAB_BASE_CFG.SPLIT).
pub const SPLIT: u32 = 8;
/// 64-bit words per STE.
pub const STE_DWORDS: usize = 8;
/// Bytes per STE.
pub const STE_BYTES: usize = STE_DWORDS * 8;
/// Largest number of StreamID bits this driver covers with a linear table
/// (2^16 STEs = 4 MiB).
pub const MAX_LINEAR_SID_BITS: u32 = 16;
/// Largest number of StreamID bits this driver covers with a two-level table
/// (2^16 level-1 descriptors = 512 KiB of level 1).
pub const MAX_TWO_LEVEL_SID_BITS: u32 = SPLIT + 16;

/// Dword 0 of an abort STE: V = 1, Config = 0b000 (abort).
pub const ABORT_STE_DWORD0: u64 = 1;

/// The stream table layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One array of STEs.
    Linear,
    /// Level-1 descriptors pointing at level-2 arrays of 2^SPLIT STEs.
    TwoLevel,
}

/// A stream table in device-visible memory.
#[derive(Debug)]
pub struct StreamTable<H: Hal> {
    format: Format,
    sid_bits: u32,
    coherent: bool,
    /// Linear: the STEs. Two-level: the level-1 descriptors.
    top: Dma<H>,
    /// Two-level only: level-2 tables, allocated on first use.
    l2: Vec<Option<Dma<H>>>,
    /// The SMMU's output address limit (2^OAS): table memory must end at
    /// or below it ([`StreamTable::with_output_size`]).
    oa_limit: u64,
}

/// Whether `[paddr, paddr + bytes)` lies below `oa_limit`.
pub(crate) fn reachable(paddr: u64, bytes: usize, oa_limit: u64) -> bool {
    paddr
        .checked_add(bytes as u64)
        .is_some_and(|end| end <= oa_limit)
}

impl<H: Hal> StreamTable<H> {
    /// Allocates a table covering StreamIDs `0..2^sid_bits`, every STE abort.
    pub fn new(format: Format, sid_bits: u32, coherent: bool) -> Result<Self> {
        match format {
            Format::Linear if sid_bits > MAX_LINEAR_SID_BITS => {
                return Err(Error::Invalid(Invalid::StreamTableSize { sid_bits }));
            }
            Format::TwoLevel if !(SPLIT..=MAX_TWO_LEVEL_SID_BITS).contains(&sid_bits) => {
                return Err(Error::Invalid(Invalid::StreamTableSize { sid_bits }));
            }
            _ => {}
        }
        let (top, l2) = match format {
            Format::Linear => {
                let bytes = STE_BYTES << sid_bits;
                let top = Dma::new(bytes, bytes, coherent)?;
                fill_abort(&top);
                (top, Vec::new())
            }
            Format::TwoLevel => {
                let entries = 1usize << (sid_bits - SPLIT);
                // Level 1 is aligned to its size, and at least 64 bytes.
                let bytes = (entries * 8).max(64);
                let top = Dma::new(bytes, bytes, coherent)?;
                top.publish(0, top.len_u64());
                let mut l2 = Vec::new();
                l2.try_reserve_exact(entries).map_err(|_| Error::NoMemory)?;
                l2.resize_with(entries, || None);
                (top, l2)
            }
        };
        Ok(Self {
            format,
            sid_bits,
            coherent,
            top,
            l2,
            oa_limit: u64::MAX,
        })
    }

    /// Limits the table's memory to the SMMU's output address size
    /// (IDR5.OAS): the SMMU cannot fetch STEs or level-2 tables above it.
    /// Fails with [`Error::Unsupported`]`(AddressSize)` when the HAL's memory
    /// for the table (now, or a level-2 table later) lies above it.
    pub fn with_output_size(mut self, oas_bits: u32) -> Result<Self> {
        self.oa_limit = 1u64.checked_shl(oas_bits).unwrap_or(u64::MAX);
        if !reachable(self.top.paddr(), self.top.size(), self.oa_limit) {
            return Err(Error::Unsupported(Unsupported::AddressSize));
        }
        Ok(self)
    }

    /// The table's format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Number of StreamID bits the table covers (STRTAB_BASE_CFG.LOG2SIZE).
    #[allow(dead_code)] // a diagnostics accessor
    pub fn sid_bits(&self) -> u32 {
        self.sid_bits
    }

    /// Number of StreamIDs covered.
    pub fn limit(&self) -> u64 {
        1u64 << self.sid_bits
    }

    /// The value for STRTAB_BASE (address, read-allocate hint).
    pub fn base_register(&self) -> u64 {
        let mut r = LocalRegisterCopy::<u64, STRTAB_BASE::Register>::new(0);
        r.modify(STRTAB_BASE::ADDR.val(self.top.paddr() >> 6) + STRTAB_BASE::RA::SET);
        r.get()
    }

    /// The value for STRTAB_BASE_CFG (format, SPLIT, LOG2SIZE).
    pub fn base_cfg_register(&self) -> u32 {
        let mut r = LocalRegisterCopy::<u32, STRTAB_BASE_CFG::Register>::new(0);
        let fmt = match self.format {
            Format::Linear => STRTAB_BASE_CFG::FMT::Linear + STRTAB_BASE_CFG::SPLIT.val(0),
            Format::TwoLevel => STRTAB_BASE_CFG::FMT::TwoLevel + STRTAB_BASE_CFG::SPLIT.val(SPLIT),
        };
        r.modify(fmt + STRTAB_BASE_CFG::LOG2SIZE.val(self.sid_bits));
        r.get()
    }

    /// Checks that `sid` is covered by the table.
    pub fn check_sid(&self, sid: u32) -> Result<()> {
        if u64::from(sid) >= self.limit() {
            return Err(Error::SidOutOfRange {
                sid,
                limit: self.limit().min(u64::from(u32::MAX)) as u32,
            });
        }
        Ok(())
    }

    /// Makes sure the STE of `sid` exists in memory, allocating its level-2
    /// table if needed. The new table is filled with abort STEs and published
    /// before the level-1 descriptor that points at it. Returns `true` when a
    /// level-2 table was installed (the caller must then invalidate the
    /// SMMU's cached configuration for that range).
    pub fn ensure(&mut self, sid: u32) -> Result<bool> {
        self.check_sid(sid)?;
        if self.format == Format::Linear {
            return Ok(false);
        }
        let l1 = (sid >> SPLIT) as usize;
        if self.l2[l1].is_some() {
            return Ok(false);
        }
        let bytes = STE_BYTES << SPLIT;
        let table = Dma::new(bytes, bytes, self.coherent)?;
        if !reachable(table.paddr(), table.size(), self.oa_limit) {
            return Err(Error::Unsupported(Unsupported::AddressSize));
        }
        fill_abort(&table);
        // Span = SPLIT + 1: a full level-2 table of 2^SPLIT STEs.
        let desc = crate::ste::l1_descriptor(table.paddr(), SPLIT as u8 + 1)?;
        self.l2[l1] = Some(table);
        self.top.write_u64(l1, desc);
        self.top.publish(l1, 1);
        Ok(true)
    }

    /// The memory and first word of the STE of `sid`, if it exists.
    fn slot(&self, sid: u32) -> Result<(&Dma<H>, usize)> {
        self.check_sid(sid)?;
        match self.format {
            Format::Linear => Ok((&self.top, sid as usize * STE_DWORDS)),
            Format::TwoLevel => {
                let l2 = self.l2[(sid >> SPLIT) as usize]
                    .as_ref()
                    .ok_or(Error::SidNotAttached(sid))?;
                Ok((l2, (sid as usize & ((1 << SPLIT) - 1)) * STE_DWORDS))
            }
        }
    }

    /// Reads the STE of `sid`. A StreamID whose level-2 table is absent reads
    /// as the abort STE it behaves as.
    pub fn read(&self, sid: u32) -> Result<[u64; STE_DWORDS]> {
        self.check_sid(sid)?;
        match self.slot(sid) {
            Ok((mem, first)) => Ok(core::array::from_fn(|i| mem.read_u64(first + i))),
            Err(Error::SidNotAttached(_)) => {
                let mut ste = [0; STE_DWORDS];
                ste[0] = ABORT_STE_DWORD0;
                Ok(ste)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes one 64-bit word of the STE of `sid` (single-copy atomic). The
    /// STE must exist ([`StreamTable::ensure`]).
    pub fn write_dword(&self, sid: u32, dword: usize, value: u64) -> Result<()> {
        if dword >= STE_DWORDS {
            return Err(Error::Invalid(Invalid::SteDword(dword)));
        }
        let (mem, first) = self.slot(sid)?;
        mem.write_u64(first + dword, value);
        Ok(())
    }

    /// Publishes the STE of `sid` to the SMMU (clean + `DSB ST`).
    pub fn publish(&self, sid: u32) -> Result<()> {
        let (mem, first) = self.slot(sid)?;
        mem.publish(first, STE_DWORDS);
        Ok(())
    }

    /// Bytes of table memory in use (level 1 plus every level-2 table).
    pub fn bytes(&self) -> usize {
        self.top.size() + self.l2.iter().flatten().map(|t| t.size()).sum::<usize>()
    }

    /// Number of level-2 tables allocated.
    #[cfg_attr(not(test), allow(dead_code))] // diagnostics; unit tests use it
    pub fn l2_tables(&self) -> usize {
        self.l2.iter().flatten().count()
    }

    /// A copy of every byte of table memory, for tests that check a rejected
    /// call changed nothing.
    pub fn snapshot(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for mem in core::iter::once(&self.top).chain(self.l2.iter().flatten()) {
            out.extend((0..mem.len_u64()).map(|i| mem.read_u64(i)));
        }
        out
    }
}

/// Fills a block of STEs with abort entries and publishes it.
fn fill_abort<H: Hal>(mem: &Dma<H>) {
    for i in (0..mem.len_u64()).step_by(STE_DWORDS) {
        mem.write_u64(i, ABORT_STE_DWORD0);
    }
    mem.publish(0, mem.len_u64());
}

/// Bytes a stream table of `format` needs to give each of `sids` an STE:
/// for sizing decisions and the benchmark.
pub fn bytes_needed(format: Format, sid_bits: u32, sids: &[u32]) -> usize {
    match format {
        Format::Linear => STE_BYTES << sid_bits,
        Format::TwoLevel => {
            let mut buses: Vec<u32> = sids.iter().map(|s| s >> SPLIT).collect();
            buses.sort_unstable();
            buses.dedup();
            let l1 = ((8usize) << sid_bits.saturating_sub(SPLIT)).max(64);
            l1 + buses.len() * (STE_BYTES << SPLIT)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeHal;

    #[test]
    fn linear_table_is_all_abort_and_aligned() {
        let t = StreamTable::<FakeHal>::new(Format::Linear, 8, true).unwrap();
        assert_eq!(t.bytes(), 256 * 64);
        assert_eq!(t.base_register() & 0x000F_FFFF_FFFF_FFC0, t.top.paddr());
        assert_eq!(t.top.paddr() % (256 * 64), 0);
        assert_eq!(t.base_cfg_register(), 8); // FMT linear, LOG2SIZE 8
        for sid in 0..256 {
            let ste = t.read(sid).unwrap();
            assert_eq!(ste[0], ABORT_STE_DWORD0);
            assert!(ste[1..].iter().all(|&w| w == 0));
        }
        assert_eq!(
            t.read(256),
            Err(Error::SidOutOfRange {
                sid: 256,
                limit: 256
            })
        );
    }

    #[test]
    fn two_level_allocates_on_first_use() {
        let mut t = StreamTable::<FakeHal>::new(Format::TwoLevel, 16, true).unwrap();
        assert_eq!(t.base_cfg_register(), (1 << 16) | (8 << 6) | 16);
        assert_eq!(t.bytes(), 256 * 8);
        // Absent level 2 reads as abort, and cannot be written.
        assert_eq!(t.read(0x10).unwrap()[0], ABORT_STE_DWORD0);
        assert_eq!(t.write_dword(0x10, 1, 5), Err(Error::SidNotAttached(0x10)));
        assert!(t.ensure(0x10).unwrap());
        assert!(!t.ensure(0x11).unwrap()); // same bus, same table
        assert!(t.ensure(0x0108).unwrap()); // bus 1
        assert_eq!(t.l2_tables(), 2);
        assert_eq!(t.bytes(), 2048 + 2 * 16384);
        // The L1 descriptor points at the level-2 table with Span 9.
        let d = t.top.read_u64(1);
        assert_eq!(d & 0x1F, 9);
        assert_eq!(d & !0x3F, t.l2[1].as_ref().unwrap().paddr());
        assert_eq!(t.top.read_u64(2), 0);
        assert_eq!(t.read(0x0108).unwrap()[0], ABORT_STE_DWORD0);
        assert_eq!(
            t.ensure(0x1_0000),
            Err(Error::SidOutOfRange {
                sid: 0x1_0000,
                limit: 0x1_0000
            })
        );
        assert_eq!(
            bytes_needed(Format::TwoLevel, 16, &[0x10, 0x11, 0x108]),
            t.bytes()
        );
        assert_eq!(bytes_needed(Format::Linear, 16, &[0x10]), 4 << 20);
    }

    #[test]
    fn sizes_are_checked() {
        assert!(StreamTable::<FakeHal>::new(Format::Linear, 17, true).is_err());
        assert!(StreamTable::<FakeHal>::new(Format::TwoLevel, 7, true).is_err());
        assert!(StreamTable::<FakeHal>::new(Format::TwoLevel, 25, true).is_err());
    }

    #[test]
    fn no_leaks() {
        {
            let mut t = StreamTable::<FakeHal>::new(Format::TwoLevel, 16, true).unwrap();
            t.ensure(0).unwrap();
            t.ensure(0xFFFF).unwrap();
        }
        assert_eq!(FakeHal::live_bytes(), 0);
    }

    proptest::proptest! {
        #[test]
        fn every_sid_has_its_own_slot(sids in proptest::collection::vec(0u32..0x1_0000, 1..40)) {
            let mut t = StreamTable::<FakeHal>::new(Format::TwoLevel, 16, true).unwrap();
            for &sid in &sids {
                t.ensure(sid).unwrap();
                // Tag dword 1 of each STE with its SID.
                t.write_dword(sid, 1, u64::from(sid) | 1 << 40).unwrap();
            }
            for &sid in &sids {
                let ste = t.read(sid).unwrap();
                proptest::prop_assert_eq!(ste[1], u64::from(sid) | 1 << 40);
                proptest::prop_assert_eq!(ste[0], ABORT_STE_DWORD0);
            }
            let mut buses: Vec<u32> = sids.iter().map(|s| s >> SPLIT).collect();
            buses.sort_unstable();
            buses.dedup();
            proptest::prop_assert_eq!(t.l2_tables(), buses.len());
            proptest::prop_assert_eq!(t.bytes(), bytes_needed(Format::TwoLevel, 16, &sids));
            // A SID never touched reads as plain abort.
            let untouched = (0..0x1_0000u32).find(|s| !sids.contains(s)).unwrap();
            proptest::prop_assert_eq!(t.read(untouched).unwrap()[1], 0);
        }
    }
}
