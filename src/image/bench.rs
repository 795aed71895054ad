//! `make bench`: deterministic counts (MMIO writes, commands, bytes) and a
//! few wall-clock figures. Times come from the generic timer under QEMU's
//! emulation: read them as orders of magnitude, not as hardware numbers.

use alloc::vec::Vec;

use smmuv3::domain::DomainOptions;
use smmuv3::expert::Format;
use smmuv3::expert::{self, Command};
use smmuv3::smmu::{Config, StreamTableChoice};
use smmuv3::stage2::{Granule, Perm, Stage2Config};

use super::console::println;
use super::cpu;
use super::iommu::new_smmu;
use super::pci::PciFunction;

/// Runs every benchmark; returns false if one could not run.
pub fn run(pci: &[PciFunction]) -> bool {
    let mut ok = true;
    for (name, result) in [
        ("command batches", batches()),
        ("stream tables", stream_tables(pci)),
        ("stage 2", stage2()),
        ("VM teardown", teardown()),
    ] {
        if let Err(e) = result {
            println!("bench: {name}: FAILED: {e}");
            ok = false;
        }
    }
    ok
}

/// MMIO writes and CMDQ_PROD writes per batch of N commands + one CMD_SYNC.
fn batches() -> Result<(), smmuv3::Error> {
    let smmu = new_smmu(Config::default())?;
    smmu.enable()?;
    println!("bench: command batches (cmdq of 256 entries; each batch ends with one CMD_SYNC)");
    println!(
        "bench:   {:>5} {:>12} {:>16} {:>10}",
        "N", "MMIO writes", "CMDQ_PROD writes", "CMD_SYNCs"
    );
    for n in [1usize, 8, 64, 200, 1000] {
        let cmds: Vec<Command> = (0..n)
            .map(|i| Command::CfgiSte {
                sid: (i % 256) as u32,
                leaf: true,
            })
            .collect();
        let before = smmu.stats();
        // SAFETY: invalidations, CMD_SYNC without MSI, and deliberately illegal opcodes only: nothing names memory.
        unsafe { smmu.submit_unchecked(&cmds) }?;
        let after = smmu.stats();
        println!(
            "bench:   {:>5} {:>12} {:>16} {:>10}",
            n,
            after.mmio_writes - before.mmio_writes,
            after.cmdq.prod_writes - before.cmdq.prod_writes,
            after.cmdq.syncs - before.cmdq.syncs
        );
    }
    Ok(())
}

/// Stream table memory for the StreamIDs of the PCI functions present.
fn stream_tables(pci: &[PciFunction]) -> Result<(), smmuv3::Error> {
    let sids: Vec<u32> = pci
        .iter()
        .filter_map(|f| f.stream_id.as_ref().ok().copied())
        .collect();
    let linear = smmuv3::expert::bytes_needed(Format::Linear, 16, &sids);
    let two_level = smmuv3::expert::bytes_needed(Format::TwoLevel, 16, &sids);
    // Measure the real thing too: install bypass STEs for every SID in use.
    let smmu = new_smmu(Config {
        stream_table: StreamTableChoice::TwoLevel,
        ..Config::default()
    })?;
    smmu.enable()?;
    for &sid in &sids {
        smmu.set_abort(sid)?;
    }
    println!(
        "bench: stream table for {} StreamIDs in use: linear {} bytes, two-level {} bytes (measured {} bytes: the page allocator rounds the 2 KiB level 1 up to a page)",
        sids.len(),
        linear,
        two_level,
        smmu.stream_table_bytes()
    );
    Ok(())
}

/// Invalidation cost of unmapping 2 MiB of 4K pages, and map/unmap time of
/// 1 GiB in 4K pages.
fn stage2() -> Result<(), smmuv3::Error> {
    let smmu = new_smmu(Config::default())?;
    smmu.enable()?;
    let cfg = Stage2Config::new(Granule::K4, 40, 44)?;
    let dom = smmu.create_domain(DomainOptions::new(cfg))?;
    // PA offset by one page from the IPA: no block mapping can be used, so
    // the range is mapped as 4K pages.
    let (ipa, pa) = (0x4000_0000u64, 0x4000_1000u64);
    let two_mib = 2u64 << 20;
    smmu.map(dom, ipa, pa, two_mib, Perm::ReadWrite)?;
    let before = smmu.stats().cmdq;
    smmu.unmap(dom, ipa, two_mib)?;
    let after = smmu.stats().cmdq;
    let no_ril = expert::s2_invalidation(1, ipa, two_mib, 12, false, usize::MAX)
        .commands()
        .len();
    println!(
        "bench: unmap 2 MiB of 4K pages: {} commands + {} CMD_SYNC with RIL (without RIL: {} TLBI_S2_IPA, or 1 TLBI_S12_VMALL past {})",
        after.commands - before.commands,
        after.syncs - before.syncs,
        no_ril,
        smmuv3::domain::MAX_RANGE_COMMANDS
    );

    let one_gib = 1u64 << 30;
    let pages = one_gib / 4096;
    let t0 = cpu::now_ns();
    smmu.map(dom, ipa, pa, one_gib, Perm::ReadWrite)?;
    let t1 = cpu::now_ns();
    let tables = smmu.domain_info(dom)?.table_bytes;
    let before = smmu.stats().cmdq;
    let t2 = cpu::now_ns();
    smmu.unmap(dom, ipa, one_gib)?;
    let t3 = cpu::now_ns();
    let after = smmu.stats().cmdq;
    println!(
        "bench: 1 GiB in 4K pages: map {} ms ({} ns/page), unmap {} ms ({} ns/page, {} commands + {} SYNC), {} KiB of tables",
        (t1 - t0) / 1_000_000,
        (t1 - t0) / pages,
        (t3 - t2) / 1_000_000,
        (t3 - t2) / pages,
        after.commands - before.commands,
        after.syncs - before.syncs,
        tables / 1024
    );
    smmu.destroy_domain(dom)?;
    Ok(())
}

/// What tearing down a VM costs: detaching its 2 StreamIDs and unmapping
/// its N separate mappings, with single calls and with one `Batch`.
fn teardown() -> Result<(), smmuv3::Error> {
    let smmu = new_smmu(Config::default())?;
    smmu.enable()?;
    let cfg = Stage2Config::new(Granule::K4, 40, 44)?;
    println!("bench: VM teardown (2 StreamIDs detached, N separate 4K mappings unmapped)");
    println!(
        "bench:   {:>4} {:>7} {:>9} {:>6} {:>12} {:>11}",
        "N", "how", "commands", "syncs", "MMIO writes", "MMIO reads"
    );
    for n in [1u64, 16, 256] {
        for batched in [false, true] {
            let dom = smmu.create_domain(DomainOptions::new(cfg))?;
            let ipa = |i: u64| 0x4000_0000 + i * 0x20_0000;
            for i in 0..n {
                smmu.map(
                    dom,
                    ipa(i),
                    0x4000_0000 + i * 0x1000,
                    0x1000,
                    Perm::ReadWrite,
                )?;
            }
            let sids = [0x3000u32, 0x3008];
            for sid in sids {
                smmu.attach(dom, sid)?;
            }
            let before = smmu.stats();
            if batched {
                let mut b = smmu.batch();
                for sid in sids {
                    b = b.detach(sid);
                }
                for i in 0..n {
                    b = b.unmap(dom, ipa(i), 0x1000);
                }
                b.commit(&mut |_| ())?;
            } else {
                for sid in sids {
                    smmu.detach(sid)?;
                }
                for i in 0..n {
                    smmu.unmap(dom, ipa(i), 0x1000)?;
                }
            }
            let after = smmu.stats();
            println!(
                "bench:   {:>4} {:>7} {:>9} {:>6} {:>12} {:>11}",
                n,
                if batched { "batch" } else { "single" },
                after.cmdq.commands - before.cmdq.commands,
                after.cmdq.syncs - before.cmdq.syncs,
                after.mmio_writes - before.mmio_writes,
                after.mmio_reads - before.mmio_reads
            );
            smmu.destroy_domain(dom)?;
        }
    }
    Ok(())
}
