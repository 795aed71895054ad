//! On-target tests of PCI enumeration and the edu DMA helper, on the default
//! topology of `qemu/run.sh` (one edu on the root bus, one behind a PCIe
//! root port). The SMMU is left disabled (bypass, its reset state), so edu
//! DMA uses physical addresses.

#![no_std]
#![no_main]

extern crate alloc;

#[path = "../src/image/mod.rs"]
mod image;

use alloc::vec::Vec;

use image::edu::{self, BUFFER_SIZE, Edu, EduError};
use image::fwcfg::{self, IortCheck};
use image::harness::{self, Failure, TestResult, check, check_eq, tests, try_ok};
use image::pci::{self, CMD_BUS_MASTER, CMD_MEMORY, Ecam, PciFunction};
use image::platform::Region;
use image::{dma, print_pci_functions};
use smmuv3::topology::BridgeKind;
use smmuv3::topology::iort::{self, IortError, NodeKind};

fn main() -> ! {
    let boot = image::init();
    print_pci_functions(&boot.pci);
    harness::run(
        "pci",
        tests![
            all_edus_found,
            edu_behind_root_port_has_its_bus_number,
            stream_id_is_rid,
            bridge_kinds_chain_and_groups,
            bars_lie_inside_the_windows,
            memory_and_bus_master_enabled,
            bridge_windows_cover_devices_behind_them,
            edu_id_and_liveness,
            smmu_is_disabled,
            edu_dma_round_trip,
            edu_dma_rejects_ranges_outside_the_buffer,
            iort_from_fw_cfg_agrees_with_the_dtb,
            iort_smmu_node_matches_the_dtb_smmu_node,
            a_corrupted_iort_from_qemu_is_refused,
        ],
    )
}

fn functions() -> &'static [PciFunction] {
    &image::boot().pci
}

fn edus() -> Vec<Edu> {
    edu::find_all(functions())
}

fn root_ports() -> impl Iterator<Item = &'static PciFunction> {
    functions()
        .iter()
        .filter(|f| (f.vendor, f.device) == (0x1b36, 0x000c))
}

fn all_edus_found() -> TestResult {
    let edus = edus();
    check!(edus.len() >= 2, "found {} edu functions", edus.len());
    check!(
        edus.iter().any(|e| e.bdf.bus == 0),
        "no edu on the root bus"
    );
    Ok(())
}

fn edu_behind_root_port_has_its_bus_number() -> TestResult {
    let rp = root_ports()
        .next()
        .ok_or(Failure::new("a PCIe root port exists"))?;
    let (secondary, subordinate) = rp.buses.ok_or(Failure::new("root port has bus numbers"))?;
    check!(secondary > 0 && secondary <= subordinate);
    let behind: Vec<_> = edus()
        .into_iter()
        .filter(|e| e.bdf.bus == secondary)
        .collect();
    check_eq!(behind.len(), 1);
    // The bridge forwards config cycles: its secondary bus answers.
    let ecam = Ecam::new(&image::boot().platform.pci);
    check_eq!(ecam.read32(behind[0].bdf, 0), 0x11e8_1234u32);
    Ok(())
}

fn stream_id_is_rid() -> TestResult {
    for f in functions() {
        check_eq!((f.bdf, f.stream_id), (f.bdf, Ok(u32::from(f.bdf.rid()))));
    }
    for e in edus() {
        check_eq!(e.stream_id, Some(u32::from(e.bdf.rid())));
    }
    Ok(())
}

/// The root port reads as a PCIe root port from its capability list, the
/// edu behind it records it as its parent, no bridge of the default
/// topology aliases, and every function is its own isolation group.
fn bridge_kinds_chain_and_groups() -> TestResult {
    let fs = functions();
    let rp_index = fs
        .iter()
        .position(|f| (f.vendor, f.device) == (0x1b36, 0x000c))
        .ok_or(Failure::new("a PCIe root port exists"))?;
    let rp = &fs[rp_index];
    check_eq!(rp.bridge_kind(), Some(BridgeKind::PcieRootPort));
    check_eq!(rp.parent, None);
    let (secondary, _) = rp.buses.ok_or(Failure::new("root port has bus numbers"))?;
    for f in fs {
        let dma = f
            .dma
            .as_ref()
            .map_err(|e| Failure::new(alloc::format!("{}: {e}", f.bdf)))?;
        check!(
            !dma.is_aliased(),
            "{} is aliased on the default topology",
            f.bdf
        );
        check_eq!(
            (f.bdf, dma.stream_ids()),
            (f.bdf, alloc::vec![u32::from(f.bdf.rid())])
        );
        let expected_parent = (f.bdf.bus == secondary).then_some(rp_index);
        check_eq!((f.bdf, f.parent), (f.bdf, expected_parent));
        check_eq!(f.header_type == 1, f.bridge_kind().is_some());
    }
    let groups = pci::isolation_groups(fs);
    check_eq!(groups.groups().len(), fs.len());
    for (i, f) in fs.iter().enumerate() {
        check_eq!(f.group, Some(i));
    }
    for e in edus() {
        check!(e.group.is_some(), "{} has no group", e.bdf);
    }
    Ok(())
}

fn bars_lie_inside_the_windows() -> TestResult {
    let host = &image::boot().platform.pci;
    let windows: Vec<Region> = [host.mem32, host.mem64, host.io]
        .into_iter()
        .flatten()
        .map(|w| w.cpu_region())
        .collect();
    for f in functions() {
        for b in &f.bars {
            let inside = windows
                .iter()
                .any(|w| w.contains(b.cpu_addr) && b.cpu_addr + b.size <= w.end());
            check!(
                inside,
                "{} BAR{} {:#x}+{:#x}",
                f.bdf,
                b.index,
                b.cpu_addr,
                b.size
            );
            check_eq!(b.cpu_addr % b.size, 0);
        }
    }
    for e in edus() {
        let w = host.mem32.ok_or(Failure::new("32-bit window"))?;
        check!(
            w.cpu_region().contains(e.bar0 as u64),
            "edu {} BAR0 {:#x}",
            e.bdf,
            e.bar0
        );
    }
    Ok(())
}

fn memory_and_bus_master_enabled() -> TestResult {
    let ecam = Ecam::new(&image::boot().platform.pci);
    for f in functions() {
        let cmd = ecam.read16(f.bdf, 4);
        check_eq!(
            (f.bdf, cmd & (CMD_MEMORY | CMD_BUS_MASTER)),
            (f.bdf, CMD_MEMORY | CMD_BUS_MASTER)
        );
    }
    Ok(())
}

fn bridge_windows_cover_devices_behind_them() -> TestResult {
    let ecam = Ecam::new(&image::boot().platform.pci);
    for rp in functions().iter().filter(|f| f.header_type == 1) {
        let (sec, sub) = rp.buses.ok_or(Failure::new("bridge has buses"))?;
        let mem = ecam.read32(rp.bdf, 0x20);
        let base = u64::from(mem & 0xfff0) << 16;
        let limit = (u64::from(mem >> 16 & 0xfff0) << 16) | 0xf_ffff;
        for f in functions()
            .iter()
            .filter(|f| (sec..=sub).contains(&f.bdf.bus))
        {
            for b in f.bars.iter().filter(|b| b.kind == pci::BarKind::Mem32) {
                check!(
                    b.pci_addr >= base && b.pci_addr + b.size - 1 <= limit,
                    "{} BAR{} {:#x} outside bridge {} window {base:#x}..={limit:#x}",
                    f.bdf,
                    b.index,
                    b.pci_addr,
                    rp.bdf
                );
            }
        }
    }
    Ok(())
}

fn edu_id_and_liveness() -> TestResult {
    for e in edus() {
        try_ok!(e.check_id());
        try_ok!(e.check_alive(0x1234_5678));
        try_ok!(e.check_alive(u32::from(e.bdf.rid())));
    }
    Ok(())
}

fn smmu_is_disabled() -> TestResult {
    let base = image::boot().platform.smmu.reg.base as usize;
    // SAFETY: CR0 (offset 0x20) of the mapped SMMU frame, a 32-bit register.
    let cr0 = unsafe { ((base + 0x20) as *const u32).read_volatile() };
    check_eq!(cr0 & 1, 0); // SMMUEN clear: bypass
    Ok(())
}

fn edu_dma_round_trip() -> TestResult {
    let src = dma::alloc(BUFFER_SIZE, BUFFER_SIZE).ok_or(Failure::new("DMA page"))?;
    let dst = dma::alloc(BUFFER_SIZE, BUFFER_SIZE).ok_or(Failure::new("DMA page"))?;
    // SAFETY: both pages are owned by this test; the device only touches
    // them during the transfers below.
    let (s, d) = unsafe {
        (
            core::slice::from_raw_parts_mut(src.vaddr.as_ptr(), BUFFER_SIZE),
            core::slice::from_raw_parts_mut(dst.vaddr.as_ptr(), BUFFER_SIZE),
        )
    };
    let result = (|| {
        for (n, e) in edus().iter().enumerate() {
            for (i, b) in s.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(7) ^ (n as u8 + 1);
            }
            d.fill(0xee);
            // RAM -> device buffer (offset 0x100), then device -> RAM.
            try_ok!(e.dma_from_ram(0x100, src.paddr, 0x800));
            try_ok!(e.dma_to_ram(0x100, dst.paddr + 0x40, 0x800));
            check!(
                d[..0x40].iter().all(|&b| b == 0xee),
                "{}: bytes before the target were written",
                e.bdf
            );
            check_eq!((e.bdf, &d[0x40..0x840]), (e.bdf, &s[..0x800]));
            check!(
                d[0x840..].iter().all(|&b| b == 0xee),
                "{}: bytes after the target were written",
                e.bdf
            );
        }
        Ok(())
    })();
    // SAFETY: no transfer is running any more (each call waited for RUN to clear).
    unsafe {
        dma::free(src);
        dma::free(dst);
    }
    result
}

fn edu_dma_rejects_ranges_outside_the_buffer() -> TestResult {
    let e = *edus().first().ok_or(Failure::new("an edu"))?;
    check_eq!(
        e.dma_from_ram(4000, 0x4000_0000, 200),
        Err(EduError::OutOfBuffer {
            offset: 4000,
            len: 200
        })
    );
    check_eq!(e.dma_to_ram(usize::MAX, 0x4000_0000, 2).is_err(), true);
    Ok(())
}

/// QEMU's IORT, read through fw_cfg (once per test: the read is cheap).
fn iort_check() -> Result<IortCheck, Failure> {
    let p = &image::boot().platform;
    fwcfg::check_iort(p, functions())
        .map_err(|e| Failure::new(alloc::format!("IORT via fw_cfg: {e}")))
}

/// QEMU lists its ACPI tables in fw_cfg even for a `-kernel` ELF; the IORT
/// found through RSDP -> XSDT parses, its SMMU is the DTB's, and every
/// function's RIDs (own and aliases) get the StreamIDs `iommu-map` gives.
fn iort_from_fw_cfg_agrees_with_the_dtb() -> TestResult {
    let c = iort_check()?;
    image::console::println!("{c}");
    for name in ["etc/acpi/rsdp", "etc/acpi/tables", "etc/table-loader"] {
        check!(
            c.files.iter().any(|f| f.name == name),
            "fw_cfg has no {name}"
        );
    }
    let p = &image::boot().platform;
    check_eq!(c.smmu_base, Some(p.smmu.reg.base));
    let rids = fwcfg::function_rids(functions());
    check!(rids.len() >= functions().len());
    check_eq!(c.agreement, Ok(rids.len()));
    // And function by function, against what enumeration recorded.
    let iort = c
        .parsed()
        .map_err(|e| Failure::new(alloc::format!("{e}")))?;
    for f in functions() {
        let s = iort.smmu_stream(0, f.rid().0).map(|s| s.sid);
        check_eq!(
            (f.bdf, s.ok()),
            (f.bdf, f.dma.as_ref().ok().map(|d| d.own().sid))
        );
    }
    // The root complex: segment 0, fully coherent (as the DTB's dma-coherent).
    let (_, rc) = iort
        .root_complex(0)
        .ok_or(Failure::new("a root complex for segment 0"))?;
    check_eq!(rc.memory.coherent(), p.smmu.dma_coherent);
    Ok(())
}

/// The SMMUv3 node's fields against the DTB's `arm,smmu-v3` node: base,
/// COHACC override vs `dma-coherent`, and the four interrupts.
fn iort_smmu_node_matches_the_dtb_smmu_node() -> TestResult {
    let c = iort_check()?;
    let iort = c
        .parsed()
        .map_err(|e| Failure::new(alloc::format!("{e}")))?;
    let smmus: Vec<_> = iort.smmu_v3_nodes().collect();
    check_eq!(smmus.len(), 1);
    let (offset, s) = smmus[0];
    let p = &image::boot().platform;
    image::console::println!(
        "  IORT revision {}, SMMUv3 node at {offset:#x}: base {:#x} flags {:#x} model {} GSIVs event {} pri {} gerr {} sync {}; DTB: eventq {:?} priq {:?} gerror {:?} cmdq-sync {:?}",
        iort.revision(),
        s.base,
        s.flags,
        s.model,
        s.event_gsiv,
        s.pri_gsiv,
        s.gerr_gsiv,
        s.sync_gsiv,
        p.smmu.irqs.eventq,
        p.smmu.irqs.priq,
        p.smmu.irqs.gerror,
        p.smmu.irqs.cmdq_sync
    );
    check_eq!(s.base, p.smmu.reg.base);
    check_eq!(s.coherent(), p.smmu.dma_coherent);
    check_eq!(Some(s.event_gsiv), p.smmu.irqs.eventq);
    check_eq!(Some(s.pri_gsiv), p.smmu.irqs.priq);
    check_eq!(Some(s.gerr_gsiv), p.smmu.irqs.gerror);
    check_eq!(Some(s.sync_gsiv), p.smmu.irqs.cmdq_sync);
    let node = iort.node_at(offset).ok_or(Failure::new("SMMUv3 node"))?;
    check!(matches!(node.kind, NodeKind::SmmuV3(_)));
    check!(iort.revision() <= iort::MAX_REVISION);
    Ok(())
}

/// The same bytes with one flipped bit are refused with a typed error.
fn a_corrupted_iort_from_qemu_is_refused() -> TestResult {
    let c = iort_check()?;
    let mut bytes = c.iort.clone();
    check!(bytes.len() > iort::HEADER_LEN);
    bytes[iort::HEADER_LEN] ^= 0x10;
    check_eq!(
        iort::Iort::parse(&bytes).err(),
        Some(IortError::BadChecksum { sum: 0x10 })
    );
    check_eq!(
        iort::Iort::parse(&c.iort[..iort::HEADER_LEN - 1]).err(),
        Some(IortError::Truncated {
            needed: iort::HEADER_LEN,
            have: iort::HEADER_LEN - 1
        })
    );
    Ok(())
}
