//! `make bench`: deterministic counts (MMIO writes, commands, bytes) and a
//! few wall-clock figures. Times come from the generic timer under QEMU's
//! emulation: read them as orders of magnitude, not as hardware numbers.

use alloc::vec::Vec;

use smmuv3::domain::{DomainOptions, StagePolicy};
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
        ("side by side with Linux", side_by_side()),
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

/// Linux's figures on the same QEMU, recorded by
/// tools/linux-anchor-figures.py (`key = value` lines).
const LINUX: &str = include_str!("../../benches/linux-anchor.txt");

/// The recorded Linux figure for `key`.
fn linux(key: &str) -> &'static str {
    LINUX
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .find(|(k, _)| k.trim() == key)
        .map_or("(not recorded)", |(_, v)| v.trim())
}

/// Commands (excluding CMD_SYNCs) and CMD_SYNCs `f` issued.
fn counted(
    smmu: &super::demo::Driver,
    f: impl FnOnce() -> Result<(), smmuv3::Error>,
) -> Result<(u64, u64), smmuv3::Error> {
    let before = smmu.stats().cmdq;
    f()?;
    let after = smmu.stats().cmdq;
    Ok((after.commands - before.commands, after.syncs - before.syncs))
}

/// Each figure measured here beside Linux's on the same QEMU (recorded in
/// benches/linux-anchor.txt): MMIO reads per CMD_SYNC, one attach (STE
/// install), unmap of 2 MiB (4K pages, one 2 MiB block), STE transitions.
fn side_by_side() -> Result<(), smmuv3::Error> {
    let smmu = new_smmu(Config::default())?;
    smmu.enable()?;
    let start = smmu.stats();
    let cfg = Stage2Config::new(Granule::K4, 40, 44)?;
    let s2 = smmu.create_domain(DomainOptions::new(cfg))?;
    let s1 = smmu.create_domain(DomainOptions {
        stage: StagePolicy::Stage1,
        ..DomainOptions::new(cfg)
    })?;
    let (sid, other) = (0x200u32, 0x201u32);
    // Level-2 table and abort STEs first: what follows is STE installs only.
    smmu.set_abort(sid)?;
    smmu.set_abort(other)?;
    let (ipa, two_mib) = (0x4000_0000u64, 2u64 << 20);
    smmu.map(s2, 0x1000_0000, 0x4000_0000, 0x1000, Perm::ReadWrite)?;
    smmu.map(s1, 0x1000_0000, 0x4000_0000, 0x1000, Perm::ReadWrite)?;

    let attach = counted(&smmu, || smmu.attach(s2, sid))?;
    let s2_abort = counted(&smmu, || smmu.detach(sid))?;
    let abort_s1 = counted(&smmu, || smmu.attach(s1, sid))?;
    let s1_abort = counted(&smmu, || smmu.detach(sid))?;
    let abort_bypass = counted(&smmu, || smmu.set_bypass(other))?;
    let bypass_abort = counted(&smmu, || smmu.set_abort(other))?;

    // 2 MiB of 4K pages (PA one page off the IPA's alignment), then one
    // 2 MiB block (both aligned).
    smmu.map(s2, ipa, ipa + 0x1000, two_mib, Perm::ReadWrite)?;
    let pages = smmu.translate(s2, ipa)?.map_or(0, |t| t.size);
    let unmap_4k = counted(&smmu, || smmu.unmap(s2, ipa, two_mib))?;
    smmu.map(s2, ipa, ipa, two_mib, Perm::ReadWrite)?;
    let block = smmu.translate(s2, ipa)?.map_or(0, |t| t.size);
    let unmap_block = counted(&smmu, || smmu.unmap(s2, ipa, two_mib))?;
    smmu.destroy_domain(s2)?;
    smmu.destroy_domain(s1)?;

    let end = smmu.stats();
    let reads = end.mmio_reads - start.mmio_reads;
    let syncs = end.cmdq.syncs - start.cmdq.syncs;
    let per100 = (reads * 100).checked_div(syncs).unwrap_or(0);
    let cs = |(c, s): (u64, u64)| alloc::format!("{c} commands + {s} CMD_SYNCs");
    println!(
        "bench: side by side with Linux on the same QEMU (ours: measured in this run; Linux: recorded, benches/linux-anchor.txt: {}; QEMU {})",
        linux("linux"),
        linux("qemu")
    );
    println!("bench: | figure | ours (this run) | Linux (recorded) |");
    println!("bench: | --- | --- | --- |");
    println!(
        "bench: | MMIO reads per CMD_SYNC | {}.{:02} ({reads} reads / {syncs} CMD_SYNCs, driver-counted, this table's work) | {} |",
        per100 / 100,
        per100 % 100,
        linux("reads_per_sync")
    );
    println!(
        "bench: | attach one device (STE install) | {} (stage 2, STE only) | {} |",
        cs(attach),
        linux("attach")
    );
    println!(
        "bench: | unmap 2 MiB of 4K pages | {} ({} KiB leaves) | {} |",
        cs(unmap_4k),
        pages / 1024,
        linux("unmap_2m_4k")
    );
    println!(
        "bench: | unmap one 2 MiB block | {} ({} KiB leaf) | {} |",
        cs(unmap_block),
        block / 1024,
        linux("unmap_2m_block")
    );
    for (name, key, (c, s)) in [
        ("bypass -> abort", "ste.bypass->abort", bypass_abort),
        ("abort -> bypass", "ste.abort->bypass", abort_bypass),
        ("abort -> s2 (attach)", "ste.abort->s2", attach),
        ("s2 -> abort (detach)", "ste.s2->abort", s2_abort),
        ("abort -> s1 (attach)", "ste.abort->s1", abort_s1),
        ("s1 -> abort (detach)", "ste.s1->abort", s1_abort),
    ] {
        println!(
            "bench: | STE {name}: CMD_SYNCs | {s} ({c} commands) | {} (KUnit) |",
            linux(key)
        );
    }
    Ok(())
}
