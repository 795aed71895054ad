//! The EL2 stage-1 identity map, built from the [`Platform`], with caches on.
//!
//! - RAM: normal write-back, inner shareable, read-write, execute-never;
//! - the image's text: read-only, executable; rodata: read-only;
//! - the guard pages below each stack: unmapped;
//! - UART, GIC, SMMU, PCI ECAM and PCI windows: device-nGnRE, execute-never.
//!
//! VA = PA, 48-bit VA (T0SZ = 16, root table at level 0), 4 KiB granule.

use core::arch::asm;
use core::fmt;

use aarch64_paging::MapError;
use aarch64_paging::descriptor::El23Attributes as Attr;
use aarch64_paging::idmap::IdMap;
use aarch64_paging::paging::{El2, MemoryRegion};
use alloc::boxed::Box;
use alloc::vec::Vec;
use spin::Once;

use super::layout;
use super::platform::{Gic, Platform, Region};

/// MAIR_EL2 attribute 0: Device-nGnRE. Attribute 1: Normal, inner and outer
/// write-back read/write-allocate non-transient.
const MAIR_EL2: u64 = 0x04 | (0xff << 8);
const DEVICE: Attr = Attr::ATTRIBUTE_INDEX_0;
const NORMAL: Attr = Attr::ATTRIBUTE_INDEX_1.union(Attr::INNER_SHAREABLE);
/// Every valid leaf: valid, accessed (no access-flag faults), AP[1] RES1 in
/// the EL2 regime.
const LEAF: Attr = Attr::VALID.union(Attr::ACCESSED).union(Attr::USER_RES1);

/// Intention-named mapping flags.
const DATA: Attr = NORMAL.union(LEAF).union(Attr::XN);
const CODE: Attr = NORMAL.union(LEAF).union(Attr::READ_ONLY);
const RODATA: Attr = NORMAL.union(LEAF).union(Attr::READ_ONLY).union(Attr::XN);
const MMIO: Attr = DEVICE.union(LEAF).union(Attr::XN);
const UNMAPPED: Attr = Attr::empty();

/// Virtual address bits (T0SZ = 64 - VA_BITS); level 0 root covers 48 bits.
const VA_BITS: u64 = 48;
const ROOT_LEVEL: usize = 0;

/// SCTLR_EL2 bits.
const SCTLR_M: u64 = 1 << 0;
const SCTLR_A: u64 = 1 << 1;
const SCTLR_C: u64 = 1 << 2;
const SCTLR_I: u64 = 1 << 12;
const SCTLR_WXN: u64 = 1 << 19;

/// The values every CPU loads to turn the MMU on (the boot CPU computes them;
/// a secondary CPU reuses them).
#[derive(Debug, Clone, Copy)]
pub struct MmuConfig {
    /// MAIR_EL2.
    pub mair: u64,
    /// TCR_EL2.
    pub tcr: u64,
    /// TTBR0_EL2.
    pub ttbr0: u64,
}

static CONFIG: Once<MmuConfig> = Once::new();

/// A mapping that could not be made.
#[derive(Debug)]
pub struct MmuError {
    what: &'static str,
    region: Region,
    err: MapError,
}

impl fmt::Display for MmuError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "cannot map {} {}: {}", self.what, self.region, self.err)
    }
}

struct Builder(IdMap<El2>);

impl Builder {
    fn map(
        &mut self,
        what: &'static str,
        r: core::ops::Range<usize>,
        flags: Attr,
    ) -> Result<(), MmuError> {
        let region = Region {
            base: r.start as u64,
            size: (r.end - r.start) as u64,
        };
        self.0
            .map_range(&MemoryRegion::new(r.start, r.end), flags)
            .map_err(|err| MmuError { what, region, err })
    }
}

/// The MMIO regions the image touches, with a name for error messages.
pub fn device_regions(p: &Platform) -> Vec<(&'static str, Region)> {
    let mut v = Vec::from([("UART", p.uart)]);
    v.extend(
        p.gic
            .as_ref()
            .ok()
            .map(|g| ("GIC distributor", g.distributor())),
    );
    v.push(("SMMU", p.smmu.reg));
    match &p.gic {
        Ok(Gic::V3(g)) => {
            v.extend(g.redistributors.iter().map(|&r| ("GIC redistributors", r)));
            v.extend(g.its.map(|r| ("GIC ITS", r)));
        }
        Ok(Gic::V2(g)) => v.push(("GIC CPU interface", g.cpu_interface)),
        Err(_) => {}
    }
    v.push(("PCI ECAM", p.pci.ecam));
    v.extend(p.fw_cfg.map(|r| ("fw_cfg", r)));
    v.extend(p.pci.mem32.map(|w| ("PCI 32-bit window", w.cpu_region())));
    v.extend(p.pci.mem64.map(|w| ("PCI 64-bit window", w.cpu_region())));
    v.extend(p.pci.io.map(|w| ("PCI I/O window", w.cpu_region())));
    v
}

/// Builds the identity map and turns on the MMU and caches on this CPU.
pub fn init(p: &Platform) -> Result<(), MmuError> {
    let mut b = Builder(IdMap::new(ROOT_LEVEL, El2));
    for &r in &p.ram {
        b.map("RAM", r.range(), DATA)?;
    }
    b.map("image text", layout::text(), CODE)?;
    b.map("image rodata", layout::rodata(), RODATA)?;
    for cpu in 0..layout::MAX_CPUS {
        let s = layout::cpu_stacks(cpu);
        b.map("stack guard", s.guard, UNMAPPED)?;
        b.map("exception stack guard", s.exc_guard, UNMAPPED)?;
    }
    for (what, r) in device_regions(p) {
        b.map(what, r.range(), MMIO)?;
    }

    // The tables must outlive every CPU that uses them: leak them.
    let idmap = Box::leak(Box::new(b.0));
    let config = MmuConfig {
        mair: MAIR_EL2,
        tcr: tcr_el2(),
        ttbr0: idmap.root_address().0 as u64,
    };
    CONFIG.call_once(|| config);
    // SAFETY: the map covers everything the image uses (code, data, stacks,
    // heap, RAM, the devices it drives) with the attributes it expects, and is
    // never dropped (leaked above).
    unsafe { idmap.activate() };
    // SAFETY: TTBR0_EL2 now holds the identity map just built.
    unsafe { enable(&config) };
    Ok(())
}

/// The configuration [`init`] computed, for secondary CPUs.
pub fn config() -> Option<MmuConfig> {
    CONFIG.get().copied()
}

/// TCR_EL2 (E2H = 0 layout): T0SZ for 48-bit VAs, write-back walks, inner
/// shareable, 4 KiB granule, PS from ID_AA64MMFR0_EL1.PARange (capped at
/// 48 bits, the most a 4 KiB granule addresses without FEAT_LPA2).
fn tcr_el2() -> u64 {
    let mmfr0: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe {
        asm!("mrs {}, id_aa64mmfr0_el1", out(reg) mmfr0, options(nomem, nostack, preserves_flags))
    };
    let ps = (mmfr0 & 0xf).min(5);
    let t0sz = 64 - VA_BITS;
    let irgn0 = 1 << 8; // write-back read/write-allocate
    let orgn0 = 1 << 10;
    let sh0 = 3 << 12; // inner shareable
    let tg0 = 0 << 14; // 4 KiB
    let res1 = (1 << 31) | (1 << 23);
    t0sz | irgn0 | orgn0 | sh0 | tg0 | (ps << 16) | res1
}

/// Loads MAIR/TCR/TTBR0, invalidates the EL2 TLB and turns on the MMU and
/// both caches.
///
/// # Safety
///
/// `config.ttbr0` is a complete identity map of everything this CPU uses.
pub unsafe fn enable(config: &MmuConfig) {
    // SAFETY: the caller vouches for the tables; with an identity map the
    // instruction after the SCTLR write is fetched at the same address.
    unsafe {
        asm!(
            "msr mair_el2, {mair}",
            "msr tcr_el2, {tcr}",
            "msr ttbr0_el2, {ttbr}",
            "dsb ish",
            "isb",
            "tlbi alle2",
            "dsb ish",
            "isb",
            "mrs {tmp}, sctlr_el2",
            "bic {tmp}, {tmp}, {clear}",
            "orr {tmp}, {tmp}, {set}",
            "msr sctlr_el2, {tmp}",
            "isb",
            mair = in(reg) config.mair,
            tcr = in(reg) config.tcr,
            ttbr = in(reg) config.ttbr0,
            clear = in(reg) SCTLR_A | SCTLR_WXN,
            set = in(reg) SCTLR_M | SCTLR_C | SCTLR_I,
            tmp = out(reg) _,
            options(nostack),
        );
    }
}

/// Whether SCTLR_EL2 has the MMU (M) and both caches (C, I) on.
pub fn enabled() -> bool {
    let s = super::cpu::sctlr_el2();
    s & (SCTLR_M | SCTLR_C | SCTLR_I) == SCTLR_M | SCTLR_C | SCTLR_I
}
