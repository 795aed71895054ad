//! The guest checks (scenarios), each judging a VM by what its guest
//! reported and by what the hypervisor sees for itself. Split out of
//! `guests.rs` (a pure move).

use super::*;

/// VTCR_EL2 fields that describe a stage-2 walk: T0SZ, SL0, TG0, PS.
const VTCR_GEOMETRY: u64 = 0x3f | 0x3 << 6 | 0x3 << 14 | 0x7 << 16;

/// The CPU and the SMMU use the same tables: VTTBR_EL2 (read back while
/// the VM was loaded) against the STE of every StreamID of the VM (read
/// back through the driver), VTCR_EL2 against the domain's geometry, the
/// VMIDs as the VM's policy says (equal, or the SMMU's private one), and
/// HCR_EL2 read back as programmed.
pub fn identity(smmu: &Driver, vm: &Vm) -> Result<String, String> {
    if vm.stage == Stage::Stage1 {
        return super::super::vmstage::identity(smmu, vm);
    }
    let vttbr = vm
        .log
        .vttbr
        .ok_or("VTTBR_EL2 never read (the VM never exited)")?;
    let cpu_vmid = (vttbr >> 48) as u16;
    let root = vttbr & 0x0000_ffff_ffff_fffe;
    let info = smmu
        .domain_info(vm.domain)
        .map_err(|e| format!("domain_info: {e}"))?;
    for &sid in &vm.sids {
        let ste = smmu.ste(sid).map_err(|e| format!("ste {sid:#x}: {e}"))?;
        if ste.vmid() != vm.smmu_vmid || ste.vmid() != info.vmid {
            return Err(format!(
                "sid {sid:#x}: STE.S2VMID {:#x}, domain VMID {:#x}, VM's SMMU VMID {:#x}",
                ste.vmid(),
                info.vmid,
                vm.smmu_vmid
            ));
        }
        if root != ste.s2ttb() {
            return Err(format!(
                "sid {sid:#x}: VTTBR_EL2 root {root:#x} != STE S2TTB {:#x}",
                ste.s2ttb()
            ));
        }
    }
    if cpu_vmid != vm.vmid {
        return Err(format!(
            "VTTBR_EL2 VMID {cpu_vmid:#x}, VM's CPU VMID {:#x}",
            vm.vmid
        ));
    }
    let policy_holds = match vm.vmid_policy {
        VmidPolicy::Cpu => info.vmid == cpu_vmid,
        VmidPolicy::Private => info.vmid != cpu_vmid,
    };
    if !policy_holds {
        return Err(format!(
            "VMID policy {}: CPU {cpu_vmid:#x}, SMMU {:#x}",
            vm.vmid_policy.name(),
            info.vmid
        ));
    }
    match (vm.tables, vm.hv_root()) {
        (TableModel::HypervisorOwned, Some(hv)) if hv == root && info.external => {}
        (TableModel::DriverOwned, None) if info.root == root && !info.external => {}
        other => {
            return Err(format!(
                "tables {} {}, VTTBR_EL2 root {root:#x}, domain root {:#x} external {}",
                other.0.name(),
                super::super::console::hex(other.1.as_slice()),
                info.root,
                info.external
            ));
        }
    }
    let vtcr = vm.log.vtcr.unwrap_or(0);
    if vtcr != vm.vtcr || vtcr & VTCR_GEOMETRY != info.vtcr & VTCR_GEOMETRY {
        return Err(format!(
            "VTCR_EL2 read {vtcr:#x}, programmed {:#x}, domain's {:#x}",
            vm.vtcr, info.vtcr
        ));
    }
    // Its stage 2: code read+execute, each BAR Device execute-never, RAM
    // execute-never (2 MiB blocks in the driver's tables, 4K pages in the
    // hypervisor's).
    let leaf = |ipa| vm.translate(smmu, ipa);
    use smmuv3::stage2::{Memory, Perm};
    let ram_leaf = match vm.tables {
        TableModel::DriverOwned => 2 << 20,
        TableModel::HypervisorOwned => 4096,
    };
    match (leaf(CODE_IPA), leaf(RAM_IPA)) {
        (Some(c), Some(r))
            if c.perm == Perm::Read
                && c.execute
                && c.pa == vm.code_pa()
                && r.size == ram_leaf
                && r.pa == vm.ram_pa()
                && r.perm == Perm::ReadWrite
                && r.memory == Memory::Normal
                && !r.execute => {}
        (c, r) => {
            return Err(format!(
                "stage 2 leaves (code, RAM): {} / {}",
                super::super::console::leaf(c),
                super::super::console::leaf(r)
            ));
        }
    }
    for (i, e) in vm.edus.iter().enumerate() {
        match leaf(guest::bar_ipa(i)) {
            Some(b) if b.memory == Memory::Device && !b.execute && b.pa == e.bar0 as u64 => {}
            other => {
                return Err(format!(
                    "{} BAR leaf at {:#x}: {}",
                    e.bdf,
                    guest::bar_ipa(i),
                    super::super::console::leaf(other)
                ));
            }
        }
    }
    let hcr = vm.log.hcr.unwrap_or(0);
    if hcr != Vm::hcr() {
        return Err(format!(
            "HCR_EL2 read {hcr:#x}, programmed {:#x}",
            Vm::hcr()
        ));
    }
    let vmids = match vm.vmid_policy {
        VmidPolicy::Cpu => format!("VMID {cpu_vmid:#x} = STE.S2VMID"),
        VmidPolicy::Private => format!("VMID {cpu_vmid:#x}, STE.S2VMID {:#x} (private)", info.vmid),
    };
    Ok(format!(
        "CPU {} {vmids}; VTTBR_EL2 root {root:#x} == STE S2TTB{}; {}; code RX, {} Device XN, RAM {} XN",
        vm.log.cpu.unwrap_or(0),
        if vm.sids.len() > 1 {
            format!(" (all {} STEs)", vm.sids.len())
        } else {
            String::new()
        },
        tables_of(vm),
        if vm.edus.len() > 1 {
            format!("{} BARs", vm.edus.len())
        } else {
            String::from("BAR")
        },
        if ram_leaf == 4096 { "4K" } else { "2M" }
    ))
}

/// The guest ran at EL1, on the CPU the hypervisor ran it on, to DONE(0).
pub fn ran_at_el1(vm: &Vm) -> Result<String, String> {
    if vm.log.stop != Some(Stop::Done(0)) {
        return Err(format!("stopped: {}", stop_text(vm.log.stop)));
    }
    let el = guest_says(vm, check::EL)?;
    let mpidr = guest_says(vm, check::CPU)?;
    let cpu = vm.log.cpu.ok_or("no CPU recorded")?;
    let expected = smp::mpidr_of(cpu).ok_or("no MPIDR for the CPU")?;
    if super::super::gic::affinity(mpidr) != expected {
        return Err(format!(
            "guest's MPIDR {mpidr:#x}, CPU {cpu} is {expected:#x}"
        ));
    }
    Ok(format!(
        "CurrentEL {el}, MPIDR {:#x} = CPU {cpu}; {} exits ({} IRQ), {} HVCs, DONE(0)",
        super::super::gic::affinity(mpidr),
        vm.log.exits,
        vm.log.irq_exits,
        vm.log.hvcs.len()
    ))
}

/// On a machine with one CPU: both VMs ran, on CPU 0, and `b`'s busy
/// loop began after `a`'s ended (the guests' own CNTVCT_EL0 timestamps).
pub fn one_after_another(a: &Vm, b: &Vm, cpus: usize) -> Result<String, String> {
    if a.log.cpu != Some(0) || b.log.cpu != Some(0) {
        return Err(format!(
            "expected both on CPU 0, got {} and {}",
            a.log.cpu.map_or(-1, |c| c as i64),
            b.log.cpu.map_or(-1, |c| c as i64)
        ));
    }
    let ea = guest_says(a, check::SPIN_END)?;
    let sb = guest_says(b, check::SPIN_START)?;
    if sb < ea {
        return Err(format!(
            "VM {}'s loop began before VM {}'s ended",
            b.name, a.name
        ));
    }
    Ok(format!(
        "the DTB lists {cpus} CPU: VM {} then VM {} on CPU 0",
        a.name, b.name
    ))
}

/// Two VMs ran at the same time on different CPUs: their 200 ms busy loops
/// (timestamps from the guests' own CNTVCT_EL0, CNTVOFF_EL2 = 0) overlap.
pub fn concurrent(a: &Vm, b: &Vm) -> Result<String, String> {
    let (ca, cb) = (a.log.cpu, b.log.cpu);
    if ca.is_none() || ca == cb {
        return Err(format!(
            "CPUs {} and {}",
            ca.map_or(-1, |c| c as i64),
            cb.map_or(-1, |c| c as i64)
        ));
    }
    let span = |vm: &Vm| -> Result<(u64, u64), String> {
        Ok((
            guest_says(vm, check::SPIN_START)?,
            guest_says(vm, check::SPIN_END)?,
        ))
    };
    let (sa, ea) = span(a)?;
    let (sb, eb) = span(b)?;
    let overlap = ea.min(eb).saturating_sub(sa.max(sb));
    let ms = |t: u64| t * 1000 / cpu::tick_hz();
    if overlap == 0 {
        return Err(format!(
            "busy loops did not overlap: {} ms..{} ms and {} ms..{} ms",
            ms(sa),
            ms(ea),
            ms(sb),
            ms(eb)
        ));
    }
    Ok(format!(
        "VM {} on CPU {} and VM {} on CPU {} spun {} ms at the same time",
        a.name,
        ca.unwrap_or(0),
        b.name,
        cb.unwrap_or(0),
        ms(overlap)
    ))
}

/// DMA RAM -> device -> RAM through the guest's IPAs, bytes checked in the
/// VM's physical memory.
/// Every device of the VM: its own pattern (seed + `i << 32`) at its own
/// offsets.
pub fn dma_roundtrip(vm: &Vm, seed: u64) -> Result<String, String> {
    let mut out = Vec::new();
    for (i, e) in vm.edus.iter().enumerate() {
        guest_says_for(vm, check::DMA_ROUNDTRIP, i)?;
        let off = i as u64 * guest::DEVICE_BYTES;
        let first = seed + ((i as u64) << 32);
        pattern_at(vm, offsets::SRC + off, first)?;
        pattern_at(vm, offsets::DST + off, first)?;
        let what = format!(
            "IPA {:#x} -> device -> IPA {:#x} -> PA {:#x}: 256 bytes match",
            RAM_IPA + offsets::SRC + off,
            RAM_IPA + offsets::DST + off,
            vm.ram_pa() + offsets::DST + off
        );
        out.push(if vm.edus.len() > 1 {
            format!("{}: {what}", e.bdf)
        } else {
            what
        });
    }
    Ok(out.join("; "))
}

fn faulted_at(vm: &Vm, ipa: u64) -> bool {
    faulted_at_masked(vm, ipa, u64::MAX)
}

/// Bus address bits QEMU's `edu` emits without a `dma_mask` property.
pub const EDU_DEFAULT_DMA_MASK: u64 = 0x0fff_ffff;

fn faulted_at_masked(vm: &Vm, ipa: u64, mask: u64) -> bool {
    faulted_at_sid(vm, vm.sid, ipa, mask)
}

fn faulted_at_sid(vm: &Vm, sid: u32, ipa: u64, mask: u64) -> bool {
    vm.log.dma_faults.iter().any(|f| {
        f.sid == sid
            && f.kind == EventType::FTranslation
            && f.addr_range.is_some_and(|r| r.0 & mask == ipa & mask)
    })
}

/// DMA outside its RAM: blocked, the SMMU event attributed to this VM by
/// StreamID and returned to the guest.
/// Device `i` of the VM probes IPA UNMAPPED_DMA_IPA + i * 4096: the event
/// comes with the StreamID its DMA carries (the alias, for devices behind a
/// PCIe-to-PCI bridge: then the StreamID names the VM and the group, and
/// the address the device).
pub fn dma_outside(vm: &Vm) -> Result<String, String> {
    let mut out = Vec::new();
    for (i, e) in vm.edus.iter().enumerate() {
        guest_says_for(vm, check::DMA_OUTSIDE, i)?;
        let ipa = guest::UNMAPPED_DMA_IPA + i as u64 * 4096;
        let sid = e.stream_id.ok_or("no StreamID")?;
        if !faulted_at_sid(vm, sid, ipa, u64::MAX) {
            return Err(format!(
                "no F_TRANSLATION at {ipa:#x} for sid {sid:#x}: [{}]",
                super::super::console::join(&vm.log.dma_faults)
            ));
        }
        let sharing: Vec<String> = vm
            .edus
            .iter()
            .filter(|o| o.stream_id == Some(sid))
            .map(|o| format!("{}", o.bdf))
            .collect();
        out.push(if sharing.len() > 1 {
            format!(
                "F_TRANSLATION sid {sid:#06x} IPA {ipa:#x} -> VM {} ({}; sid shared by {})",
                vm.name,
                e.bdf,
                sharing.join("+")
            )
        } else {
            format!(
                "F_TRANSLATION sid {sid:#06x} IPA {ipa:#x} -> VM {} ({})",
                vm.name, e.bdf
            )
        });
    }
    Ok(out.join("; "))
}

fn aborted(vm: &Vm, ipa: u64, write: bool) -> Option<&super::super::vm::Abort> {
    vm.log
        .aborts
        .iter()
        .find(|a| a.ipa == ipa && a.far == ipa && a.write() == write)
}

/// CPU loads/stores outside its stage 2: stage-2 data aborts at EL2,
/// decoded from HPFAR_EL2 + FAR_EL2, the guest resumed (POISON in the load's
/// register); a store to its own code is a permission fault.
pub fn cpu_aborts(vm: &Vm) -> Result<String, String> {
    guest_says(vm, check::CPU_LOAD_ABORT)?;
    guest_says(vm, check::CPU_STORE_ABORT)?;
    guest_says(vm, check::CODE_READONLY)?;
    let ipa = guest::UNMAPPED_CPU_IPA;
    let load = aborted(vm, ipa, false).ok_or(format!("no read abort at {ipa:#x}"))?;
    if !load.isv() || load.srt() != 9 || load.dfsc() >> 2 != 0b0001 {
        return Err(format!("load abort syndrome {:#x}", load.esr));
    }
    aborted(vm, ipa + 8, true).ok_or(format!("no write abort at {:#x}", ipa + 8))?;
    let code = aborted(vm, CODE_IPA, true).ok_or("no write abort at the code page")?;
    if code.dfsc() >> 2 != 0b0011 {
        return Err(format!(
            "code store DFSC {:#x}, not permission",
            code.dfsc()
        ));
    }
    if !vm.code_intact() {
        return Err(String::from("the code page changed"));
    }
    Ok(format!(
        "read IPA {ipa:#x} (HPFAR {:#x}) -> x9 = POISON, write {:#x}, code write: permission fault; code intact",
        load.hpfar,
        ipa + 8
    ))
}

/// Two VMs use the same IPAs for different physical pages, and neither
/// reaches the other's: A's CPU load/store and DMA at B's physical RAM
/// address all fault, and B's RAM holds only B's own writes.
pub fn no_crossing(smmu: &Driver, a: &Vm, b: &Vm) -> Result<String, String> {
    let ta = a.translate(smmu, RAM_IPA);
    let tb = b.translate(smmu, RAM_IPA);
    let (pa, pb) = (ta.map(|t| t.pa), tb.map(|t| t.pa));
    if pa != Some(a.ram_pa()) || pb != Some(b.ram_pa()) || pa == pb {
        return Err(format!(
            "IPA {RAM_IPA:#x} -> {} / {}",
            super::super::console::hex(pa.as_slice()),
            super::super::console::hex(pb.as_slice())
        ));
    }
    guest_says(a, check::FOREIGN_CPU)?;
    guest_says(a, check::FOREIGN_DMA)?;
    let target = b.ram_pa();
    if aborted(a, target, false).is_none() || aborted(a, target, true).is_none() {
        return Err(format!("no CPU aborts of VM {} at {target:#x}", a.name));
    }
    // An edu without dma_mask emits only the low 28 bits of the address:
    // it then faults there (it cannot even name B's memory).
    if !faulted_at_masked(a, target, EDU_DEFAULT_DMA_MASK) {
        return Err(format!("no DMA fault of VM {} at {target:#x}", a.name));
    }
    if let Some(off) = b.first_unfilled(&written_by_guest_of(b.edus.len())) {
        return Err(format!(
            "VM {}'s RAM changed at PA {:#x}",
            b.name,
            b.ram_pa() + off
        ));
    }
    Ok(format!(
        "IPA {RAM_IPA:#x} maps PA {:#x} / {:#x}; {} -> {}'s PA {target:#x}: CPU read+write aborted, DMA faulted; {}'s RAM untouched",
        a.ram_pa(),
        b.ram_pa(),
        a.name,
        b.name,
        b.name
    ))
}

/// Bad hypercalls: typed errors to the guest, nothing changed (tables
/// compared word for word around each rejected RELEASE; rejected REPORTs
/// not recorded; its pages still work).
pub fn bad_hypercalls(vm: &Vm) -> Result<String, String> {
    for id in [
        check::BAD_UNKNOWN,
        check::BAD_IPA,
        check::BAD_LENGTH,
        check::BAD_ARGUMENT,
        check::BAD_NOTHING_CHANGED,
    ] {
        guest_says(vm, id)?;
    }
    let rejected: Vec<_> = vm
        .log
        .hvcs
        .iter()
        .filter(|h| {
            matches!(
                h.ret,
                hvc::UNKNOWN_CALL | hvc::BAD_IPA | hvc::BAD_LENGTH | hvc::BAD_ARGUMENT
            )
        })
        .collect();
    let count = |code| rejected.iter().filter(|h| h.ret == code).count();
    let counts = [
        count(hvc::UNKNOWN_CALL),
        count(hvc::BAD_IPA),
        count(hvc::BAD_LENGTH),
        count(hvc::BAD_ARGUMENT),
    ];
    if counts != [4, 5, 4, 3] {
        return Err(format!(
            "rejections (unknown, IPA, length, argument) [{}], expected [4, 5, 4, 3]",
            super::super::console::join(&counts)
        ));
    }
    if let Some(h) = rejected
        .iter()
        .find(|h| h.fid == hvc::RELEASE && h.tables_unchanged != Some(true))
    {
        return Err(format!(
            "a rejected RELEASE changed the tables: fid {:#x} ret {:#x}",
            h.fid, h.ret
        ));
    }
    if vm.log.reports.iter().any(|r| r.status > 1 || r.check == 0) {
        return Err(String::from("a rejected REPORT was recorded"));
    }
    Ok(format!(
        "{} rejected: {} UNKNOWN_CALL, {} BAD_IPA, {} BAD_LENGTH, {} BAD_ARGUMENT; tables unchanged",
        rejected.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3]
    ))
}

/// The balloon: one page out of the middle of a 2 MiB region while the
/// guest runs; afterwards its CPU access and its DMA both fault, the
/// neighbours still work.
pub fn balloon(smmu: &Driver, vm: &Vm, seed: u64) -> Result<String, String> {
    for id in [
        check::BALLOON_RELEASE,
        check::BALLOON_CPU,
        check::BALLOON_DMA,
        check::BALLOON_NEIGHBOURS,
    ] {
        guest_says(vm, id)?;
    }
    let page = BALLOON_PAGE_IPA;
    let t = |ipa| vm.translate(smmu, ipa);
    if t(page).is_some() || t(page - 4096).is_none() || t(page + 4096).is_none() {
        return Err(format!("tables around {page:#x} wrong after release"));
    }
    // The page is a 4K leaf now, its neighbours too (the block was split,
    // or the hypervisor's tables had pages only), still execute-never RAM
    // at the right PAs.
    for ipa in [page - 4096, page + 4096] {
        match t(ipa) {
            Some(l) if l.size == 4096 && l.pa == vm.ram_pa() + (ipa - RAM_IPA) && !l.execute => {}
            other => {
                return Err(format!(
                    "IPA {ipa:#x} after the split: {}",
                    super::super::console::leaf(other)
                ));
            }
        }
    }
    // The CPU was invalidated for the page; when the driver's split broke
    // before make, for the whole block first. For the hypervisor's tables,
    // by the hypervisor itself, before its Smmu::invalidate of the page.
    let block = page & !((2 << 20) - 1);
    let expected: &[(u64, u64)] = match (vm.tables, vm.split_in_one_store) {
        (TableModel::DriverOwned, false) => &[(block, 2 << 20), (page, 4096)],
        _ => &[(page, 4096)],
    };
    if vm.log.released != [page] || vm.log.cpu_tlbis != expected {
        return Err(format!(
            "CPU TLB invalidations {} (expected {}), released {}",
            super::super::console::ranges(&vm.log.cpu_tlbis),
            super::super::console::ranges(expected),
            super::super::console::hex(&vm.log.released)
        ));
    }
    // Every CPU invalidation ran by the CPU's VMID; the driver's hook was
    // handed the SMMU's.
    let hook_vmid = match vm.tables {
        TableModel::DriverOwned => Some(vm.smmu_vmid),
        TableModel::HypervisorOwned => None,
    };
    if vm
        .log
        .cpu_tlbi_vmids
        .iter()
        .any(|&v| v != (vm.vmid, hook_vmid))
    {
        return Err(format!(
            "CPU TLBI VMIDs {}, expected CPU {:#x} / hook {}",
            vm.log
                .cpu_tlbi_vmids
                .iter()
                .map(|&(c, h)| format!(
                    "{c:#x}/{}",
                    super::super::console::hex(h.map(u64::from).as_slice())
                ))
                .collect::<Vec<_>>()
                .join(", "),
            vm.vmid,
            super::super::console::hex(hook_vmid.map(u64::from).as_slice())
        ));
    }
    let smmu_inv: &[(u64, u64)] = match vm.tables {
        TableModel::HypervisorOwned => &[(page, 4096)],
        TableModel::DriverOwned => &[],
    };
    if vm.log.smmu_invalidations != smmu_inv {
        return Err(format!(
            "Smmu::invalidate calls {}",
            super::super::console::ranges(&vm.log.smmu_invalidations)
        ));
    }
    aborted(vm, page, false).ok_or("no CPU abort at the released page")?;
    if !faulted_at(vm, page) {
        return Err(String::from("no DMA fault at the released page"));
    }
    pattern_at(vm, offsets::BALLOON_ABOVE, seed + 0x100)?;
    // The blocked DMA wrote nothing into the released page.
    let off = page - RAM_IPA;
    let fill = u64::from_ne_bytes([vm.fill; 8]);
    if (8..64)
        .step_by(8)
        .any(|i| vm.ram_word(off + i) != Some(fill))
    {
        return Err(String::from("the released page was written"));
    }
    let how = match (vm.tables, vm.split_in_one_store) {
        (TableModel::HypervisorOwned, _) if vm.stage == Stage::Stage1 => format!(
            "CPU stage 2: HvStage2 unmap, CPU TLBI by VMID {:#x}; SMMU stage 1: Smmu::unmap (TLBI_NH_VA)",
            vm.vmid
        ),
        (TableModel::HypervisorOwned, _) => format!(
            "hypervisor-owned: HvStage2 unmap, CPU TLBI by VMID {:#x}, Smmu::invalidate by VMID {:#x}",
            vm.vmid, vm.smmu_vmid
        ),
        (TableModel::DriverOwned, true) => format!(
            "split in one store, CPU TLB hook 1x (page) by VMID {:#x}",
            vm.vmid
        ),
        (TableModel::DriverOwned, false) => format!(
            "break-before-make split, CPU TLB hook 2x (2 MiB block, then page) by VMID {:#x}",
            vm.vmid
        ),
    };
    Ok(format!(
        "IPA {page:#x} out of its 2 MiB region ({how}): CPU abort + F_TRANSLATION; {:#x} -> device -> {:#x} ok",
        page - 4096,
        page + 4096
    ))
}
