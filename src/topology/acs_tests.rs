//! Host tests of peer-to-peer (ACS) grouping: `acs.rs` and
//! `Groups::build_with_p2p`.

use super::*;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// ACS as QEMU's ports implement it (SV TB RR CR UF DT), all isolation
/// controls on.
const ON: Option<Acs> = Some(Acs {
    capability: AcsFlags(0x5f),
    control: AcsFlags(0x1d),
});
/// The same capability, out of reset (nothing enabled).
const OFF: Option<Acs> = Some(Acs {
    capability: AcsFlags(0x5f),
    control: AcsFlags(0),
});

fn facts(bus: u8, dev: u8, func: u8, pt: Option<u8>, mf: bool, acs: Option<Acs>) -> P2pFacts {
    P2pFacts {
        rid: Rid::new(bus, dev, func).expect("valid BDF"),
        port_type: pt,
        multifunction: mf,
        acs,
    }
}

/// A function: its facts, the index of the bridge above it, and any
/// StreamIDs besides its own RID.
#[derive(Debug, Clone)]
struct Node {
    f: P2pFacts,
    parent: Option<usize>,
    alias: Option<u32>,
}

fn node(f: P2pFacts, parent: Option<usize>) -> Node {
    Node {
        f,
        parent,
        alias: None,
    }
}

fn chains(nodes: &[Node]) -> Vec<Vec<P2pFacts>> {
    (0..nodes.len())
        .map(|i| {
            let mut chain = Vec::new();
            let mut next = nodes[i].parent;
            while let Some(p) = next {
                if chain.len() >= nodes.len() {
                    break;
                }
                let Some(n) = nodes.get(p) else { break };
                chain.push(n.f);
                next = n.parent;
            }
            chain
        })
        .collect()
}

fn sid_sets(nodes: &[Node]) -> Vec<Vec<u32>> {
    nodes
        .iter()
        .map(|n| {
            let mut s = vec![u32::from(n.f.rid.0)];
            s.extend(n.alias);
            s
        })
        .collect()
}

/// Groups as lists of BDFs.
fn p2p_groups(nodes: &[Node]) -> Vec<Vec<String>> {
    let chains = chains(nodes);
    let sids = sid_sets(nodes);
    let g = Groups::build_with_p2p(nodes.iter().enumerate().map(|(i, n)| {
        (
            i,
            sids[i].as_slice(),
            P2pPath {
                function: n.f,
                upstream: &chains[i],
            },
        )
    }));
    g.groups()
        .iter()
        .map(|g| {
            g.members
                .iter()
                .map(|&i| alloc::format!("{}", nodes[i].f.rid))
                .collect()
        })
        .collect()
}

fn alias_groups(nodes: &[Node]) -> Vec<Vec<String>> {
    let sids = sid_sets(nodes);
    let g = Groups::build(sids.iter().enumerate().map(|(i, s)| (i, s.as_slice())));
    g.groups()
        .iter()
        .map(|g| {
            g.members
                .iter()
                .map(|&i| alloc::format!("{}", nodes[i].f.rid))
                .collect()
        })
        .collect()
}

fn g(groups: &[&[&str]]) -> Vec<Vec<String>> {
    groups
        .iter()
        .map(|g| g.iter().map(|s| String::from(*s)).collect())
        .collect()
}

use port_type::{
    PCIE_TO_PCI_BRIDGE as PCI_BR, RC_INTEGRATED_ENDPOINT as RCIEP, ROOT_PORT as RP,
    SWITCH_DOWNSTREAM as DSP, SWITCH_UPSTREAM as USP,
};

#[test]
fn acs_controls_missing_and_to_enable() {
    let off = OFF.unwrap();
    assert_eq!(off.missing(AcsFlags::ISOLATION), AcsFlags::ISOLATION);
    assert_eq!(off.to_enable(), AcsFlags(0x1d));
    assert!(ON.unwrap().missing(AcsFlags::ISOLATION).is_empty());
    // Only SV and RR implemented: CR and UF are hard-wired.
    let partial = Acs {
        capability: AcsFlags::SV.union(AcsFlags::RR),
        control: AcsFlags::SV,
    };
    assert_eq!(partial.missing(AcsFlags::ISOLATION), AcsFlags::RR);
    assert_eq!(partial.to_enable(), AcsFlags::SV.union(AcsFlags::RR));
    // A capability with no controls at all (QEMU's on an endpoint): in force.
    let none = Acs::default();
    assert!(none.missing(AcsFlags::ISOLATION).is_empty());
    assert_eq!(none.to_enable(), AcsFlags(0));
    // Other control bits already on are kept.
    let tb = Acs {
        capability: AcsFlags(0x5f),
        control: AcsFlags::TB,
    };
    assert_eq!(tb.to_enable(), AcsFlags(0x1f));
}

#[test]
fn isolation_per_type() {
    let f = |pt, mf, acs| facts(1, 0, 0, pt, mf, acs).isolation();
    assert_eq!(f(None, false, None), Isolation::Conventional);
    assert_eq!(f(Some(PCI_BR), false, ON), Isolation::NeverIsolates(PCI_BR));
    assert_eq!(f(Some(RP), false, None), Isolation::NoAcs);
    assert_eq!(f(Some(RP), false, ON), Isolation::AcsOn);
    assert_eq!(
        f(Some(DSP), false, OFF),
        Isolation::AcsOff(AcsFlags::ISOLATION)
    );
    assert_eq!(
        f(Some(port_type::ENDPOINT), false, None),
        Isolation::NotRequired
    );
    assert_eq!(f(Some(port_type::ENDPOINT), true, None), Isolation::NoAcs);
    assert_eq!(f(Some(USP), false, None), Isolation::NotRequired);
    assert_eq!(f(Some(RCIEP), true, ON), Isolation::AcsOn);
    // Function 1 is a function of a multi-function device whatever its
    // header says.
    assert!(facts(0, 5, 1, Some(RCIEP), false, None).is_multifunction());
    assert!(!facts(0, 5, 1, Some(RCIEP), false, None).isolated());
    assert_eq!(Isolation::AcsOn.label(), "ACS on");
    assert_eq!(Isolation::NoAcs.label(), "no ACS");
}

#[test]
fn rciep_single_function_has_its_own_group() {
    let nodes = [
        node(facts(0, 1, 0, Some(RCIEP), false, None), None),
        node(facts(0, 2, 0, None, false, None), None),
    ];
    assert_eq!(p2p_groups(&nodes), g(&[&["00:01.0"], &["00:02.0"]]));
}

/// QEMU `-device edu,addr=5.0,multifunction=on -device edu,addr=5.1`:
/// conventional functions of one device share a group.
#[test]
fn multi_function_without_acs_is_one_group() {
    let nodes = [
        node(facts(0, 5, 0, None, true, None), None),
        node(facts(0, 5, 1, None, true, None), None),
        node(facts(0, 6, 0, None, false, None), None),
        node(facts(0, 7, 0, Some(RCIEP), true, None), None),
        node(facts(0, 7, 2, Some(RCIEP), true, None), None),
    ];
    assert_eq!(
        p2p_groups(&nodes),
        g(&[
            &["00:05.0", "00:05.1"],
            &["00:06.0"],
            &["00:07.0", "00:07.2"]
        ])
    );
    assert_eq!(alias_groups(&nodes).len(), 5);
}

#[test]
fn multi_function_with_acs_enabled_is_separate() {
    let nodes = [
        node(facts(0, 5, 0, Some(RCIEP), true, ON), None),
        node(facts(0, 5, 1, Some(RCIEP), true, ON), None),
        // A function with ACS among two without: only those two join.
        node(facts(0, 6, 0, Some(RCIEP), true, ON), None),
        node(facts(0, 6, 1, Some(RCIEP), true, None), None),
        node(facts(0, 6, 2, Some(RCIEP), true, OFF), None),
    ];
    assert_eq!(
        p2p_groups(&nodes),
        g(&[
            &["00:05.0"],
            &["00:05.1"],
            &["00:06.0"],
            &["00:06.1", "00:06.2"]
        ])
    );
}

/// A root port, a switch (upstream port, two downstream ports) and an
/// endpoint below each downstream port.
fn switch(rp: Option<Acs>, dn1: Option<Acs>, dn2: Option<Acs>) -> [Node; 6] {
    [
        node(facts(0, 1, 0, Some(RP), false, rp), None),
        node(facts(1, 0, 0, Some(USP), false, None), Some(0)),
        node(facts(2, 0, 0, Some(DSP), false, dn1), Some(1)),
        node(facts(2, 1, 0, Some(DSP), false, dn2), Some(1)),
        node(
            facts(3, 0, 0, Some(port_type::ENDPOINT), false, None),
            Some(2),
        ),
        node(
            facts(4, 0, 0, Some(port_type::ENDPOINT), false, None),
            Some(3),
        ),
    ]
}

#[test]
fn switch_without_acs_on_its_downstream_ports_is_one_group() {
    assert_eq!(
        p2p_groups(&switch(ON, None, None)),
        g(&[
            &["00:01.0"],
            &["01:00.0"],
            &["02:00.0", "02:01.0", "03:00.0", "04:00.0"]
        ])
    );
}

#[test]
fn switch_with_acs_enabled_everywhere_is_one_group_per_function() {
    assert_eq!(p2p_groups(&switch(ON, ON, ON)).len(), 6);
}

#[test]
fn acs_capable_but_not_enabled_groups_like_no_acs() {
    assert_eq!(
        p2p_groups(&switch(ON, OFF, OFF)),
        p2p_groups(&switch(ON, None, None))
    );
    // The root port out of reset too: everything below it is one group.
    assert_eq!(
        p2p_groups(&switch(OFF, ON, ON)),
        g(&[&[
            "00:01.0", "01:00.0", "02:00.0", "02:01.0", "03:00.0", "04:00.0"
        ]])
    );
}

/// One isolating downstream port next to one that is not: requests that
/// go up through the open one can come down through the other, so the
/// whole switch interior is non-isolating (the case Linux's original walk
/// missed).
#[test]
fn one_open_downstream_port_spoils_the_switch() {
    assert_eq!(
        p2p_groups(&switch(ON, ON, None)),
        p2p_groups(&switch(ON, None, None))
    );
}

#[test]
fn root_port_without_acs_above_a_switch_takes_everything_below() {
    assert_eq!(
        p2p_groups(&switch(None, ON, ON)),
        g(&[&[
            "00:01.0", "01:00.0", "02:00.0", "02:01.0", "03:00.0", "04:00.0"
        ]])
    );
}

/// The bridges need not be among the functions grouped: endpoints below
/// open downstream ports still share a group.
#[test]
fn bridges_outside_the_set_still_join_what_is_below_them() {
    let nodes = switch(ON, None, None);
    let chains = chains(&nodes);
    let sids = sid_sets(&nodes);
    let g = Groups::build_with_p2p([4usize, 5].into_iter().map(|i| {
        (
            i,
            sids[i].as_slice(),
            P2pPath {
                function: nodes[i].f,
                upstream: &chains[i],
            },
        )
    }));
    assert_eq!(g.groups().len(), 1);
    assert_eq!(g.groups()[0].members, [4, 5]);
    assert_eq!(g.groups()[0].sids, [0x300, 0x400]);
}

/// The collect.sh bridge topology (a PCIe-to-PCI bridge on the root bus,
/// two conventional functions behind it) and the same behind a root port
/// with ACS: the bridge never isolates, so it joins the alias group.
#[test]
fn pcie_to_pci_bridge_joins_its_alias_group() {
    let mut nodes = [
        node(facts(0, 3, 0, Some(PCI_BR), false, None), None),
        node(facts(1, 3, 0, None, false, None), Some(0)),
        node(facts(1, 4, 0, None, false, None), Some(0)),
    ];
    nodes[1].alias = Some(0x0100);
    nodes[2].alias = Some(0x0100);
    assert_eq!(
        alias_groups(&nodes),
        g(&[&["00:03.0"], &["01:03.0", "01:04.0"]])
    );
    assert_eq!(p2p_groups(&nodes), g(&[&["00:03.0", "01:03.0", "01:04.0"]]));

    let mut nodes = [
        node(facts(0, 1, 0, Some(RP), false, ON), None),
        node(facts(1, 0, 0, Some(PCI_BR), false, None), Some(0)),
        node(facts(2, 3, 0, None, false, None), Some(1)),
        node(facts(2, 4, 0, None, false, None), Some(1)),
        node(facts(0, 2, 0, Some(RP), false, ON), None),
        node(
            facts(3, 0, 0, Some(port_type::ENDPOINT), false, None),
            Some(4),
        ),
    ];
    nodes[2].alias = Some(0x0200);
    nodes[3].alias = Some(0x0200);
    assert_eq!(
        p2p_groups(&nodes),
        g(&[
            &["00:01.0"],
            &["01:00.0", "02:03.0", "02:04.0"],
            &["00:02.0"],
            &["03:00.0"]
        ])
    );
}

/// QEMU's default topology with its root port's ACS enabled: nothing
/// changes from the alias-only groups; with ACS left at its reset value,
/// the edu behind the root port joins it.
#[test]
fn default_qemu_topology() {
    let nodes = [
        node(facts(0, 1, 0, None, false, None), None),
        node(facts(0, 2, 0, Some(RP), false, ON), None),
        node(facts(1, 0, 0, None, false, None), Some(1)),
    ];
    assert_eq!(p2p_groups(&nodes), alias_groups(&nodes));
    let nodes = [
        node(facts(0, 1, 0, None, false, None), None),
        node(facts(0, 2, 0, Some(RP), false, OFF), None),
        node(facts(1, 0, 0, None, false, None), Some(1)),
    ];
    assert_eq!(
        p2p_groups(&nodes),
        g(&[&["00:01.0"], &["00:02.0", "01:00.0"]])
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn arb_acs() -> impl Strategy<Value = Option<Acs>> {
        prop_oneof![
            Just(None),
            (any::<u16>(), any::<u16>()).prop_map(|(c, k)| Some(Acs {
                capability: AcsFlags(c),
                control: AcsFlags(k),
            })),
        ]
    }

    /// Random forests: node `i`'s parent is any index (even itself or a
    /// later one, i.e. cycles), RIDs may repeat, types and ACS are
    /// arbitrary, and some functions have an extra StreamID.
    fn arb_nodes() -> impl Strategy<Value = Vec<Node>> {
        proptest::collection::vec(
            (
                any::<u16>(),
                proptest::option::of(0u8..16),
                any::<bool>(),
                arb_acs(),
                proptest::option::of(0usize..24),
                proptest::option::of(0u32..8),
            ),
            0..24,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(rid, pt, mf, acs, parent, alias)| Node {
                    f: P2pFacts {
                        rid: Rid(rid),
                        port_type: pt,
                        multifunction: mf,
                        acs,
                    },
                    parent,
                    alias,
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn extended_capability_walk_is_bounded(words in proptest::collection::vec(any::<u32>(), 64), id in 0u16..0x20) {
            // Random headers spread over extended space, every offset the
            // walk may read mapped to one of them.
            let mut reads = 0usize;
            let r = acs::find_ext_capability(|at| {
                reads += 1;
                words[usize::from(at / 4) % words.len()]
            }, id);
            prop_assert!(reads <= acs::MAX_EXT_CAPS);
            if let Ok(Some(at)) = r {
                prop_assert!((acs::EXT_CAP_START..acs::CONFIG_SPACE_SIZE).contains(&at));
            }
        }

        #[test]
        fn p2p_groups_partition_the_functions_and_refine_nothing(nodes in arb_nodes()) {
            let chains = chains(&nodes);
            let sids = sid_sets(&nodes);
            let p2p = Groups::build_with_p2p(nodes.iter().enumerate().map(|(i, n)| {
                (i, sids[i].as_slice(), P2pPath { function: n.f, upstream: &chains[i] })
            }));
            let alias = Groups::build(sids.iter().enumerate().map(|(i, s)| (i, s.as_slice())));
            // A partition: every function in exactly one group, in order.
            let mut seen = vec![0usize; nodes.len()];
            for (id, grp) in p2p.groups().iter().enumerate() {
                prop_assert_eq!(grp.id, id);
                prop_assert!(!grp.members.is_empty());
                for &m in &grp.members {
                    seen[m] += 1;
                }
                prop_assert!(grp.members.windows(2).all(|w| w[0] < w[1]));
            }
            prop_assert!(seen.iter().all(|&c| c == 1));
            // Coarser than (or equal to) the alias-only groups: functions
            // sharing a StreamID still share a group.
            for grp in alias.groups() {
                let first = p2p.group_of(&grp.members[0]).map(|g| g.id);
                for m in &grp.members {
                    prop_assert_eq!(p2p.group_of(m).map(|g| g.id), first);
                }
            }
            // Every StreamID belongs to the group of the functions using it.
            for (i, s) in sids.iter().enumerate() {
                for sid in s {
                    prop_assert_eq!(
                        p2p.group_of_sid(*sid).map(|g| g.id),
                        p2p.group_of(&i).map(|g| g.id)
                    );
                }
            }
        }
    }
}

/// A config space of `(offset, dword)` pairs, all else zero.
fn space(dwords: &[(u16, u32)]) -> impl FnMut(u16) -> u32 + '_ {
    move |at| dwords.iter().find(|(o, _)| *o == at).map_or(0, |(_, v)| *v)
}

fn header(id: u16, next: u16) -> u32 {
    u32::from(id) | 1 << 16 | u32::from(next) << 20
}

#[test]
fn extended_capability_walk() {
    use acs::{EXT_CAP_ID_ACS, find_ext_capability};
    // QEMU's root port: AER at 0x100, ACS at 0x148.
    let rp = [(0x100, header(0x0001, 0x148)), (0x148, header(0x000d, 0))];
    assert_eq!(
        find_ext_capability(space(&rp), EXT_CAP_ID_ACS),
        Ok(Some(0x148))
    );
    assert_eq!(find_ext_capability(space(&rp), 0x0010), Ok(None));
    // No extended space (conventional function) or an empty list.
    assert_eq!(find_ext_capability(|_| u32::MAX, EXT_CAP_ID_ACS), Ok(None));
    assert_eq!(find_ext_capability(|_| 0, EXT_CAP_ID_ACS), Ok(None));
    // A pointer back into PCI space, past the end, or misaligned.
    for next in [0x40u16, 0xffc, 0x102] {
        let bad = [(0x100, header(0x0001, next))];
        assert_eq!(
            find_ext_capability(space(&bad), EXT_CAP_ID_ACS),
            Err(ExtCapError::BadPointer { at: 0x100, next })
        );
    }
    // A loop: 0x100 -> 0x180 -> 0x100 ...
    let looped = [
        (0x100, header(0x0001, 0x180)),
        (0x180, header(0x0002, 0x100)),
    ];
    assert!(matches!(
        find_ext_capability(space(&looped), EXT_CAP_ID_ACS),
        Err(ExtCapError::Loop { .. })
    ));
    // A self-loop ends the same way, after a bounded number of reads.
    let mut reads = 0;
    let r = find_ext_capability(
        |_| {
            reads += 1;
            header(0x0001, 0x100)
        },
        EXT_CAP_ID_ACS,
    );
    assert_eq!(r, Err(ExtCapError::Loop { at: 0x100 }));
    assert_eq!(reads, acs::MAX_EXT_CAPS);
    assert_eq!(
        alloc::format!(
            "{}",
            ExtCapError::BadPointer {
                at: 0x100,
                next: 0x40
            }
        ),
        "extended capability at 0x100 points to 0x40"
    );
}
