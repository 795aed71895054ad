//! On-target tests of the image runtime: CPU state, MMU and caches, heap,
//! DMA memory, DTB parsing, device mappings.

#![no_std]
#![no_main]

extern crate alloc;

#[path = "../src/image/mod.rs"]
mod image;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use image::harness::{self, Failure, TestResult, check, check_eq, tests, try_ok};
use image::platform::{self, DtbError, Gic, IommuMapEntry, Platform, PsciMethod, RidError};
use image::{ImageHal, cpu, dma, heap, layout, mmu};

fn main() -> ! {
    image::init();
    harness::run(
        "boot",
        tests![
            current_el_is_2,
            bss_is_zeroed,
            mmu_and_caches_on,
            vectors_installed,
            stacks_are_where_the_layout_says,
            timer_runs,
            heap_alloc_works,
            dma_blocks_are_naturally_aligned_and_zeroed,
            dma_blocks_are_reused_after_free,
            dma_guard_from_the_driver_hal,
            dtb_found_uart_gic_smmu_pci,
            dtb_without_a_usable_gic_boots_and_polls,
            iommu_map_translates_rids,
            smmu_idr0_readable_through_the_mapping,
            fw_cfg_from_the_dtb_answers_through_the_mapping,
        ],
    )
}

fn current_el_is_2() -> TestResult {
    check_eq!(cpu::current_el(), 2);
    Ok(())
}

static BSS_PROBE: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];

fn bss_is_zeroed() -> TestResult {
    let addr = BSS_PROBE.as_ptr() as usize;
    check!(
        layout::bss().contains(&addr),
        "probe at {addr:#x}, bss {:#x?}",
        layout::bss()
    );
    for (i, v) in BSS_PROBE.iter().enumerate() {
        check_eq!((i, v.load(Ordering::Relaxed)), (i, 0));
    }
    Ok(())
}

fn mmu_and_caches_on() -> TestResult {
    let sctlr = cpu::sctlr_el2();
    check_eq!(sctlr & 1, 1); // M
    check_eq!((sctlr >> 2) & 1, 1); // C
    check_eq!((sctlr >> 12) & 1, 1); // I
    check!(mmu::enabled());
    let config = mmu::config().ok_or(harness::Failure::new("mmu::config() is Some"))?;
    check_eq!(config.tcr & 0x3f, 16); // T0SZ: 48-bit VA
    Ok(())
}

fn vectors_installed() -> TestResult {
    let vbar: u64;
    // SAFETY: reading VBAR_EL2 has no side effects.
    unsafe { core::arch::asm!("mrs {}, vbar_el2", out(reg) vbar) };
    check_eq!(vbar % 0x800, 0);
    check!(
        layout::text().contains(&(vbar as usize)),
        "VBAR_EL2 {vbar:#x}"
    );
    Ok(())
}

fn stacks_are_where_the_layout_says() -> TestResult {
    let local = 0u64;
    let sp = &local as *const u64 as usize;
    let s = layout::cpu_stacks(0);
    check!(
        s.stack.contains(&sp),
        "sp ~ {sp:#x}, CPU 0 stack {:#x?}",
        s.stack
    );
    let spsel: u64;
    // SAFETY: reading SPSel has no side effects.
    unsafe { core::arch::asm!("mrs {}, spsel", out(reg) spsel) };
    check_eq!(spsel, 0); // running on SP_EL0; SP_EL2 is the exception stack
    Ok(())
}

fn timer_runs() -> TestResult {
    let a = cpu::now_ns();
    cpu::delay_ns(1_000_000);
    let b = cpu::now_ns();
    check!(b - a >= 1_000_000, "elapsed {} ns", b - a);
    Ok(())
}

fn heap_alloc_works() -> TestResult {
    let before = heap::bytes_in_use();
    let v: Vec<u32> = (0..100_000).collect();
    let b = Box::new([7u8; 1000]);
    check!(
        heap::bytes_in_use() >= before + 400_000,
        "in use {}",
        heap::bytes_in_use()
    );
    check_eq!(
        v.iter().map(|&x| u64::from(x)).sum::<u64>(),
        4_999_950_000u64
    );
    check_eq!(b[999], 7);
    drop((v, b));
    check_eq!(heap::bytes_in_use(), before);
    Ok(())
}

const SIZES: [usize; 6] = [4096, 8192, 64 * 1024, 1 << 20, 2 << 20, 4 << 20];

fn dma_blocks_are_naturally_aligned_and_zeroed() -> TestResult {
    let before = dma::bytes_in_use();
    let mut blocks = Vec::new();
    for size in SIZES {
        let r =
            dma::alloc(size, size).ok_or(harness::Failure::new("dma::alloc returned a block"))?;
        check_eq!((size, r.paddr % size as u64), (size, 0));
        check_eq!(r.size, size);
        check_eq!(r.vaddr.as_ptr() as u64, r.paddr);
        // SAFETY: the block is `size` bytes of RAM owned by this test.
        let bytes = unsafe { core::slice::from_raw_parts_mut(r.vaddr.as_ptr(), size) };
        check!(
            bytes.iter().all(|&b| b == 0),
            "block {:#x} ({size} bytes) not zeroed",
            r.paddr
        );
        bytes.fill(0xa5);
        blocks.push(r);
    }
    check_eq!(dma::bytes_in_use() - before, SIZES.iter().sum::<usize>());
    for r in blocks {
        // SAFETY: allocated above, no longer used.
        unsafe { dma::free(r) };
    }
    check_eq!(dma::bytes_in_use(), before);
    // Small sizes with a large alignment come back aligned too.
    let r = dma::alloc(64, 1 << 16).ok_or(harness::Failure::new("dma::alloc(64, 64K)"))?;
    check_eq!(r.paddr % (1 << 16), 0);
    // SAFETY: allocated just above.
    unsafe { dma::free(r) };
    Ok(())
}

fn dma_blocks_are_reused_after_free() -> TestResult {
    let r = dma::alloc(4 << 20, 4 << 20).ok_or(harness::Failure::new("dma::alloc 4 MiB"))?;
    // SAFETY: owned by this test.
    unsafe { r.vaddr.as_ptr().write_bytes(0x5a, r.size) };
    // SAFETY: allocated above, no longer used.
    unsafe { dma::free(r) };
    let again =
        dma::alloc(4 << 20, 4 << 20).ok_or(harness::Failure::new("dma::alloc 4 MiB again"))?;
    // SAFETY: owned by this test.
    let bytes = unsafe { core::slice::from_raw_parts(again.vaddr.as_ptr(), again.size) };
    check!(
        bytes.iter().all(|&b| b == 0),
        "a reused block was not zeroed"
    );
    // SAFETY: allocated above, no longer used.
    unsafe { dma::free(again) };
    Ok(())
}

fn dma_guard_from_the_driver_hal() -> TestResult {
    let before = dma::bytes_in_use();
    {
        let d = try_ok!(smmuv3::Dma::<ImageHal>::new(1 << 16, 1 << 16, false));
        check_eq!(d.paddr() % (1 << 16), 0);
        d.write_u64(3, 0x1234_5678_9abc_def0);
        d.publish(3, 1); // non-coherent path: dc cvac + dsb
        check_eq!(d.read_u64(3), 0x1234_5678_9abc_def0u64);
        check_eq!(dma::bytes_in_use(), before + (1 << 16));
    }
    check_eq!(dma::bytes_in_use(), before);
    Ok(())
}

fn dtb_found_uart_gic_smmu_pci() -> TestResult {
    let p = &image::boot().platform;
    // The QEMU virt addresses (docs/qemu-virt-smmuv3.md); the image itself
    // only ever takes them from the DTB.
    check_eq!(p.ram[0].base, 0x4000_0000);
    check_eq!(p.uart.base, 0x0900_0000);
    let Ok(Gic::V3(gic)) = &p.gic else {
        return Err(harness::Failure::new(alloc::format!(
            "expected the GICv3 of gic-version=3, got {:?}",
            p.gic
        )));
    };
    check_eq!(gic.distributor.base, 0x0800_0000);
    check_eq!(gic.redistributors[0].base, 0x080a_0000);
    check_eq!(p.smmu.reg.base, 0x0905_0000);
    check_eq!(p.smmu.reg.size, 0x2_0000);
    check_eq!(p.smmu.irqs.eventq, Some(106));
    check_eq!(p.smmu.irqs.priq, Some(107));
    check_eq!(p.smmu.irqs.cmdq_sync, Some(108));
    check_eq!(p.smmu.irqs.gerror, Some(109));
    check!(p.smmu.dma_coherent);
    check_eq!(p.psci, Some(PsciMethod::Smc));
    check_eq!(p.pci.ecam.base, 0x40_1000_0000);
    check_eq!((p.pci.bus_start, p.pci.bus_end), (0, 255));
    check_eq!(p.pci.mem32.map(|w| w.cpu_addr), Some(0x1000_0000));
    check_eq!(p.pci.mem64.map(|w| w.cpu_addr), Some(0x80_0000_0000));
    check_eq!(p.pci.iommu_map.len(), 1);
    check_eq!(Some(p.pci.iommu_map[0].iommu), p.smmu.phandle);
    Ok(())
}

/// QEMU's own DTB with the GIC's `compatible` overwritten (same length) by
/// one no driver knows: the GIC node is then as good as absent, which is
/// what a DTB without a GIC node gives too (the parser looks GICs up by
/// compatible). The platform still parses, with no GIC and a reason, and
/// the image's interrupt mode is polling; nothing panics.
fn dtb_without_a_usable_gic_boots_and_polls() -> TestResult {
    const UNKNOWN: &[u8] = b"acme,nogic";
    let dtb = image::boot().platform.dtb;
    // SAFETY: `init` parsed the DTB there; it is RAM, mapped and never
    // written, `dtb.size` bytes long (the header's total size).
    let blob = unsafe { core::slice::from_raw_parts(dtb.base as *const u8, dtb.size as usize) };
    let mut copy = blob.to_vec();
    {
        let fdt = try_ok!(fdt::Fdt::new(blob));
        let node = fdt
            .find_compatible(&[platform::GICV3_COMPATIBLE])
            .ok_or_else(|| harness::Failure::new("no arm,gic-v3 node in QEMU's DTB"))?;
        let value = node
            .property("compatible")
            .ok_or_else(|| harness::Failure::new("GIC node without compatible"))?
            .value;
        // "arm,gic-v3\0": overwrite the string, keep the terminating NUL.
        check_eq!(value.len(), UNKNOWN.len() + 1);
        let at = value.as_ptr() as usize - blob.as_ptr() as usize;
        copy[at..at + UNKNOWN.len()].copy_from_slice(UNKNOWN);
    }
    let fdt = try_ok!(fdt::Fdt::new(&copy));
    check!(fdt.find_compatible(&["acme,nogic"]).is_some());
    let gic = platform::gic(&fdt);
    check!(
        matches!(gic, Err(DtbError::Missing(_))),
        "platform::gic gave {gic:?}"
    );
    check_eq!(image::interrupt_mode(&gic), "none (polling)");
    // The rest of the board is still there: the image boots without a GIC.
    let p = try_ok!(Platform::from_dtb(&fdt));
    check!(p.gic.is_err(), "{:?}", p.gic);
    check_eq!(p.smmu.reg.base, image::boot().platform.smmu.reg.base);
    check_eq!(p.uart, image::boot().platform.uart);
    // And the device regions to map leave the GIC out.
    check!(
        mmu::device_regions(&p)
            .iter()
            .all(|(what, _)| !what.starts_with("GIC")),
        "{:?}",
        mmu::device_regions(&p)
    );
    Ok(())
}

fn iommu_map_translates_rids() -> TestResult {
    let p = &image::boot().platform;
    let smmu = p.smmu.phandle.unwrap_or(0);
    check_eq!(p.pci.rid_to_sid(0x0108), Ok((smmu, 0x0108)));
    // A map that covers only bus 1, with an offset, and a mask dropping the function.
    let mut host = p.pci.clone();
    host.iommu_map = alloc::vec![IommuMapEntry {
        rid_base: 0x100,
        iommu: 7,
        sid_base: 0x4000,
        len: 0x100
    }];
    host.iommu_map_mask = 0xfff8;
    check_eq!(host.rid_to_sid(0x0109), Ok((7, 0x4008)));
    check_eq!(
        host.rid_to_sid(0x0008),
        Err(RidError::NotCovered {
            rid: smmuv3::topology::Rid(0x0008)
        })
    );
    host.iommu_map.clear();
    check_eq!(host.rid_to_sid(0x0100), Err(RidError::NoIommuMap));
    Ok(())
}

fn smmu_idr0_readable_through_the_mapping() -> TestResult {
    let base = image::boot().platform.smmu.reg.base as usize;
    // SAFETY: the SMMU register frame is mapped device memory; IDR0 (offset
    // 0) is a read-only 32-bit register.
    let idr0 = unsafe { (base as *const u32).read_volatile() };
    check!(idr0 != 0, "IDR0 = {idr0:#x}");
    // SAFETY: as above, for the page-1 alias (EVENTQ_PROD at 0x100a8).
    let _ = unsafe { ((base + 0x100a8) as *const u32).read_volatile() };
    Ok(())
}

/// The DTB's `qemu,fw-cfg-mmio` node is parsed and mapped: its signature
/// item reads "QEMU" and its file directory lists QEMU's ACPI tables.
fn fw_cfg_from_the_dtb_answers_through_the_mapping() -> TestResult {
    let p = &image::boot().platform;
    let reg = p
        .fw_cfg
        .ok_or(Failure::new("the DTB names a qemu,fw-cfg-mmio device"))?;
    check!(
        mmu::device_regions(p).iter().any(|(_, r)| *r == reg),
        "fw_cfg is not in the MMU's device regions"
    );
    // SAFETY: the DTB's fw_cfg frame, mapped as device memory; this test
    // is its only user.
    let fw = unsafe { image::fwcfg::FwCfg::new(reg) };
    check_eq!(fw.check_signature(), Ok(()));
    let files = fw.files();
    check!(
        files
            .iter()
            .any(|f| f.name == "etc/acpi/tables" && f.size > 0)
    );
    check!(
        files
            .iter()
            .any(|f| f.name == "etc/acpi/rsdp" && f.size >= 36)
    );
    Ok(())
}
