//! On-target tests of peer-to-peer (ACS) isolation groups, on whatever
//! topology QEMU was started with (collect.sh boots this suite on the
//! default topology, on two multi-function edus on the root bus, and on a
//! switch with an edu below each of two downstream ports).
//!
//! What QEMU exposes is read back from config space, printed, and the
//! groups enumeration built are compared with an independent, procedural
//! rendering of Linux's `pci_device_group` (functions probed in bus order,
//! each joining the group it finds first), with the switch-interior fix
//! (a downstream port without ACS spoils its whole switch bus).

#![no_std]
#![no_main]

extern crate alloc;

#[path = "../src/image/mod.rs"]
mod image;

use alloc::vec::Vec;

use image::console::println;
use image::harness::{self, Failure, TestResult, check, check_eq, tests};
use image::pci::{self, Bdf, Ecam, PciFunction};
use image::print_pci_functions;
use smmuv3::topology::port_type;

fn main() -> ! {
    let boot = image::init();
    print_pci_functions(&boot.pci);
    harness::run(
        "p2p",
        tests![
            acs_as_qemu_exposes_it,
            multi_function_bit_from_config_space,
            groups_follow_linux_rule,
            qemu_topologies_group_as_expected,
        ],
    )
}

fn functions() -> &'static [PciFunction] {
    &image::boot().pci
}

fn ecam() -> Ecam {
    Ecam::new(&image::boot().platform.pci)
}

/// ACS Capability and Control straight from config space: the extended
/// list walked here on its own (bounded), not through the enumerator.
fn raw_acs(bdf: Bdf) -> Option<(u16, u16, u16)> {
    let e = ecam();
    let mut at = 0x100usize;
    for _ in 0..480 {
        let h = e.read32(bdf, at);
        if h == 0 || h == u32::MAX {
            return None;
        }
        if h & 0xffff == 0x000d {
            return Some((at as u16, e.read16(bdf, at + 4), e.read16(bdf, at + 6)));
        }
        let next = (h >> 20) as usize & 0xffc;
        if next < 0x100 {
            return None;
        }
        at = next;
    }
    None
}

/// Every PCIe port's ACS, printed as read from config space; the
/// enumerator found the same capability and turned on every isolation
/// control (SV, RR, CR, UF) it implements; QEMU's generic root ports
/// implement ACS.
fn acs_as_qemu_exposes_it() -> TestResult {
    for f in functions() {
        let raw = if f.pcie_port_type.is_some() {
            raw_acs(f.bdf)
        } else {
            None
        };
        let recorded = f
            .acs
            .map_err(|e| Failure::new(alloc::format!("{}: {e}", f.bdf)))?;
        check_eq!(
            (f.bdf, raw),
            (
                f.bdf,
                recorded.map(|a| (a.offset, a.acs.capability.0, a.acs.control.0))
            )
        );
        if let Some(pt) = f.pcie_port_type {
            match raw {
                Some((off, cap, ctrl)) => {
                    let reset = recorded.map_or(0, |a| a.control_at_reset.0);
                    println!(
                        "p2p: {} {} (port type {pt:#x}): ACS at {off:#x}, capability {cap:#06x}, control {ctrl:#06x} (was {reset:#06x})",
                        f.bdf,
                        f.name()
                    );
                    // SV RR CR UF on wherever implemented.
                    check_eq!((f.bdf, ctrl & cap & 0x1d), (f.bdf, cap & 0x1d));
                }
                None => println!(
                    "p2p: {} {} (port type {pt:#x}): no ACS capability",
                    f.bdf,
                    f.name()
                ),
            }
        }
        if (f.vendor, f.device) == (0x1b36, 0x000c) {
            check!(raw.is_some(), "{}: QEMU's root port has no ACS", f.bdf);
        }
    }
    Ok(())
}

/// The recorded multi-function flag is the header type's bit 7.
fn multi_function_bit_from_config_space() -> TestResult {
    let e = ecam();
    for f in functions() {
        let header = (e.read32(f.bdf, 0x0c) >> 16) as u8;
        check_eq!((f.bdf, f.multifunction), (f.bdf, header & 0x80 != 0));
    }
    Ok(())
}

/// Linux's `pci_acs_enabled(dev, SV|RR|CR|UF)`, from raw config reads.
fn isolated(f: &PciFunction) -> bool {
    let Some(pt) = f.pcie_port_type else {
        return false;
    };
    let multifunction = f.multifunction || f.bdf.func != 0;
    let flags_on = || match raw_acs(f.bdf) {
        None => false,
        Some((_, cap, ctrl)) => {
            let need = 0x1d & (cap | 0x20);
            ctrl & need == need
        }
    };
    match pt {
        port_type::PCIE_TO_PCI_BRIDGE | port_type::PCI_TO_PCIE_BRIDGE | 0xa => false,
        port_type::ROOT_PORT | port_type::SWITCH_DOWNSTREAM => flags_on(),
        port_type::ENDPOINT
        | port_type::LEGACY_ENDPOINT
        | port_type::RC_INTEGRATED_ENDPOINT
        | port_type::SWITCH_UPSTREAM => !multifunction || flags_on(),
        _ => true,
    }
}

fn is_dsp(f: &PciFunction) -> bool {
    f.pcie_port_type == Some(port_type::SWITCH_DOWNSTREAM)
}

/// The groups of Linux's procedure: each function, in bus order (parents
/// before children, as enumeration found them), takes the first group it
/// finds: through a StreamID it shares, the highest bridge whose path to
/// the root is not isolating, a non-isolated function of its own slot, or
/// a downstream port on the same spoiled switch bus; else a new one.
/// Returns each function's group number.
fn linux_groups(fs: &[PciFunction], switch_fix: bool) -> Vec<usize> {
    let spoiled = |bus: u8| {
        switch_fix
            && fs
                .iter()
                .any(|d| is_dsp(d) && d.bdf.bus == bus && !isolated(d))
    };
    let isolating = |b: &PciFunction| isolated(b) && !(is_dsp(b) && spoiled(b.bdf.bus));
    let mut group: Vec<Option<usize>> = alloc::vec![None; fs.len()];
    let mut next = 0;
    for i in 0..fs.len() {
        let sids = fs[i].stream_ids();
        let by_sid = |group: &[Option<usize>], sids: &[u32]| {
            (0..fs.len()).find_map(|j| {
                group[j].filter(|_| fs[j].stream_ids().iter().any(|s| sids.contains(s)))
            })
        };
        // The chain above, nearest first.
        let mut chain = Vec::new();
        let mut p = fs[i].parent;
        while let Some(b) = p {
            chain.push(b);
            p = fs[b].parent;
        }
        let mut found = by_sid(&group, &sids);
        let mut pdev = i;
        if found.is_none() {
            for (k, &b) in chain.iter().enumerate() {
                if chain[k..].iter().all(|&c| isolating(&fs[c])) {
                    break;
                }
                pdev = b;
                if group[b].is_some() {
                    found = group[b];
                    break;
                }
            }
        }
        let top = &fs[pdev];
        if found.is_none() && pdev != i {
            found = by_sid(&group, &top.stream_ids());
        }
        if found.is_none() && (top.multifunction || top.bdf.func != 0) && !isolated(top) {
            found = (0..fs.len()).find_map(|j| {
                let o = &fs[j];
                (o.bdf.bus == top.bdf.bus && o.bdf.dev == top.bdf.dev && !isolated(o))
                    .then_some(group[j])
                    .flatten()
            });
        }
        if found.is_none() && is_dsp(top) && spoiled(top.bdf.bus) {
            found = (0..fs.len()).find_map(|j| {
                (is_dsp(&fs[j]) && fs[j].bdf.bus == top.bdf.bus)
                    .then_some(group[j])
                    .flatten()
            });
        }
        group[i] = Some(found.unwrap_or_else(|| {
            next += 1;
            next - 1
        }));
        if pdev != i && group[pdev].is_none() {
            group[pdev] = group[i];
        }
    }
    group.into_iter().map(|g| g.unwrap_or(usize::MAX)).collect()
}

/// Two group numberings describe the same partition.
fn same_partition(a: &[usize], b: &[usize]) -> bool {
    a.len() == b.len()
        && (0..a.len()).all(|i| (0..a.len()).all(|j| (a[i] == a[j]) == (b[i] == b[j])))
}

fn print_groups(what: &str, fs: &[PciFunction], g: &[usize]) {
    let mut ids: Vec<usize> = g.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut line = alloc::format!("p2p: {what}:");
    for id in ids {
        let members: Vec<alloc::string::String> = (0..fs.len())
            .filter(|&i| g[i] == id)
            .map(|i| alloc::format!("{}", fs[i].bdf))
            .collect();
        line.push_str(&alloc::format!(" {{{}}}", members.join(" ")));
    }
    println!("{line}");
}

/// The groups enumeration built (`pci::isolation_groups`) are Linux's
/// for what QEMU exposes; the StreamID-alias groups and Linux's original
/// walk (no switch fix) are printed alongside.
fn groups_follow_linux_rule() -> TestResult {
    let fs = functions();
    check!(fs.iter().all(|f| f.dma.is_ok()));
    let ours: Vec<usize> = fs.iter().map(|f| f.group.unwrap_or(usize::MAX)).collect();
    let groups = pci::isolation_groups(fs);
    for (i, f) in fs.iter().enumerate() {
        check_eq!((f.bdf, groups.group_of(&i).map(|g| g.id)), (f.bdf, f.group));
    }
    let alias = pci::alias_groups(fs);
    let alias: Vec<usize> = (0..fs.len())
        .map(|i| alias.group_of(&i).map_or(usize::MAX, |g| g.id))
        .collect();
    let linux = linux_groups(fs, true);
    let original = linux_groups(fs, false);
    print_groups("StreamID aliases only", fs, &alias);
    print_groups("Linux, original walk", fs, &original);
    print_groups("Linux, with switch fix", fs, &linux);
    print_groups("enumeration", fs, &ours);
    check!(
        same_partition(&ours, &linux),
        "groups differ from Linux's rule"
    );
    Ok(())
}

/// What each collect.sh topology must give, by the devices present:
/// functions of one multi-function device without ACS share a group;
/// everything below a switch whose downstream ports lack ACS shares a
/// group (and QEMU's xio3130 downstream ports do lack it); otherwise
/// each function behind an ACS root port is alone.
fn qemu_topologies_group_as_expected() -> TestResult {
    let fs = functions();
    let group = |bdf: Bdf| fs.iter().find(|f| f.bdf == bdf).and_then(|f| f.group);
    let mut checked = 0;
    for f in fs.iter().filter(|f| f.bdf.func != 0) {
        let f0 = Bdf { func: 0, ..f.bdf };
        if !isolated(f) {
            check_eq!((f.bdf, group(f.bdf)), (f.bdf, group(f0)));
            checked += 1;
        }
    }
    let dsps: Vec<&PciFunction> = fs.iter().filter(|f| is_dsp(f)).collect();
    for d in &dsps {
        if raw_acs(d.bdf).is_none() {
            // Everything on or below this switch's internal bus.
            for o in fs {
                let below = dsps.iter().any(|s| {
                    s.bdf.bus == d.bdf.bus
                        && s.buses.is_some_and(|(a, b)| (a..=b).contains(&o.bdf.bus))
                });
                if below || (is_dsp(o) && o.bdf.bus == d.bdf.bus) {
                    check_eq!((o.bdf, o.group), (o.bdf, d.group));
                    checked += 1;
                }
            }
        }
    }
    // No P2P reason anywhere: one group per function, as before ACS.
    let open = fs.iter().any(|f| {
        (f.pcie_port_type.is_some() && !isolated(f))
            || (f.bdf.func != 0 || f.multifunction) && !isolated(f)
    });
    if !open {
        let mut ids: Vec<Option<usize>> = fs.iter().map(|f| f.group).collect();
        ids.sort_unstable();
        ids.dedup();
        check_eq!(ids.len(), fs.len());
        checked += 1;
    }
    println!("p2p: {checked} topology expectations checked");
    check!(checked > 0);
    Ok(())
}
