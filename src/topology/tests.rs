//! Host tests of the alias rules, `iommu-map` lookup and groups.

use super::*;
use alloc::vec;
use alloc::vec::Vec;

const SMMU: u32 = 0x8001;
const OTHER_SMMU: u32 = 0x8002;

fn rid(bus: u8, dev: u8, func: u8) -> Rid {
    Rid::new(bus, dev, func).expect("valid BDF")
}

/// QEMU virt's map: identity over all 2^16 RIDs.
fn identity() -> IommuMap {
    IommuMap::new(
        vec![IommuMapEntry {
            rid_base: 0,
            iommu: SMMU,
            sid_base: 0,
            len: 0x1_0000,
        }],
        NO_MASK,
    )
    .expect("valid map")
}

fn bridge(at: Rid, kind: BridgeKind, secondary: u8, subordinate: u8) -> Bridge {
    Bridge {
        rid: at,
        kind,
        secondary,
        subordinate,
    }
}

fn rids(f: &Function<'_>) -> Vec<u16> {
    dma_alias_rids(f)
        .expect("valid chain")
        .iter()
        .map(|a| a.rid.0)
        .collect()
}

fn sids(f: &Function<'_>) -> Vec<u32> {
    dma_aliases(&identity(), Some(SMMU), f)
        .expect("covered")
        .stream_ids()
}

#[test]
fn rid_fields() {
    let r = rid(0x12, 0x1f, 7);
    assert_eq!(r.0, 0x12ff);
    assert_eq!(
        (r.bus(), r.device(), r.function(), r.devfn()),
        (0x12, 0x1f, 7, 0xff)
    );
    assert_eq!(alloc::format!("{r}"), "12:1f.7");
    assert_eq!(Rid::new(0, 32, 0), None);
    assert_eq!(Rid::new(0, 0, 8), None);
}

#[test]
fn bridge_kinds_from_port_type() {
    assert_eq!(BridgeKind::from_port_type(None), BridgeKind::Conventional);
    assert_eq!(
        BridgeKind::from_port_type(Some(4)),
        BridgeKind::PcieRootPort
    );
    assert_eq!(
        BridgeKind::from_port_type(Some(5)),
        BridgeKind::PcieSwitchUpstream
    );
    assert_eq!(
        BridgeKind::from_port_type(Some(6)),
        BridgeKind::PcieSwitchDownstream
    );
    assert_eq!(BridgeKind::from_port_type(Some(7)), BridgeKind::PcieToPci);
    assert_eq!(BridgeKind::from_port_type(Some(8)), BridgeKind::PciToPcie);
    assert_eq!(
        BridgeKind::from_port_type(Some(0)),
        BridgeKind::OtherPcie(0)
    );
    assert_eq!(BridgeKind::OtherPcie(9).alias_rule(), AliasRule::None);
}

#[test]
fn root_bus_function_has_only_its_own_rid() {
    let f = Function {
        rid: rid(0, 1, 0),
        quirk_devfns: &[],
        upstream: &[],
    };
    assert_eq!(rids(&f), [0x0008]);
    let a = dma_aliases(&identity(), Some(SMMU), &f).unwrap();
    assert_eq!(a.stream_ids(), [0x8]);
    assert!(!a.is_aliased());
    assert_eq!(a.root_alias().sid, 0x8);
    assert_eq!(a.own().source, AliasSource::Own);
    assert_eq!(a.iommu(), SMMU);
}

#[test]
fn pcie_ports_do_not_alias() {
    let rp = bridge(rid(0, 2, 0), BridgeKind::PcieRootPort, 1, 1);
    let f = Function {
        rid: rid(1, 0, 0),
        quirk_devfns: &[],
        upstream: &[rp],
    };
    assert_eq!(rids(&f), [0x0100]);
    // Root port -> switch upstream -> switch downstream -> function.
    let chain = [
        bridge(rid(3, 0, 0), BridgeKind::PcieSwitchDownstream, 4, 4),
        bridge(rid(2, 0, 0), BridgeKind::PcieSwitchUpstream, 3, 4),
        bridge(rid(0, 4, 0), BridgeKind::PcieRootPort, 2, 4),
    ];
    let f = Function {
        rid: rid(4, 0, 0),
        quirk_devfns: &[],
        upstream: &chain,
    };
    assert_eq!(rids(&f), [0x0400]);
    assert_eq!(sids(&f), [0x400]);
}

/// QEMU's `pcie-pci-bridge` on the root bus at 00:03.0, secondary bus 2,
/// with functions at 02:03.0 and 02:04.0: both alias to 02:00.0.
#[test]
fn pcie_to_pci_bridge_aliases_to_secondary_bus_devfn_0() {
    let br = [bridge(rid(0, 3, 0), BridgeKind::PcieToPci, 2, 2)];
    let a = Function {
        rid: rid(2, 3, 0),
        quirk_devfns: &[],
        upstream: &br,
    };
    let b = Function {
        rid: rid(2, 4, 0),
        ..a
    };
    assert_eq!(rids(&a), [0x0218, 0x0200]);
    assert_eq!(rids(&b), [0x0220, 0x0200]);
    let aa = dma_aliases(&identity(), Some(SMMU), &a).unwrap();
    assert!(aa.is_aliased());
    assert_eq!(aa.root_alias().sid, 0x200);
    assert_eq!(
        aa.root_alias().source,
        AliasSource::Bridge {
            rid: rid(0, 3, 0),
            kind: BridgeKind::PcieToPci
        }
    );
    let sa = sids(&a);
    let sb = sids(&b);
    let groups = Groups::build([("a", sa.as_slice()), ("b", sb.as_slice())]);
    assert_eq!(groups.groups().len(), 1);
    let g = &groups.groups()[0];
    assert_eq!(g.members, ["a", "b"]);
    assert_eq!(g.sids, [0x200, 0x218, 0x220]);
    assert_eq!(groups.group_of_sid(0x200).map(|g| g.id), Some(0));
    assert_eq!(groups.group_of(&"b").map(|g| g.id), Some(0));
}

#[test]
fn pcie_to_pci_bridge_behind_a_root_port() {
    let chain = [
        bridge(rid(1, 0, 0), BridgeKind::PcieToPci, 2, 2),
        bridge(rid(0, 2, 0), BridgeKind::PcieRootPort, 1, 2),
    ];
    let f = Function {
        rid: rid(2, 1, 3),
        quirk_devfns: &[],
        upstream: &chain,
    };
    assert_eq!(rids(&f), [0x020b, 0x0200]);
}

/// A PCI-X (or conventional PCI) bridge without a PCIe capability: the
/// function appears as the bridge itself.
#[test]
fn conventional_and_pci_x_bridges_alias_to_their_own_rid() {
    let br = [bridge(rid(0, 5, 0), BridgeKind::Conventional, 1, 1)];
    let f = Function {
        rid: rid(1, 2, 0),
        quirk_devfns: &[],
        upstream: &br,
    };
    assert_eq!(rids(&f), [0x0110, 0x0028]);
    // The bridge shares a StreamID with what is behind it: one group.
    let sb = [0x28u32];
    let sf = sids(&f);
    let g = Groups::build([(0usize, &sb[..]), (1, sf.as_slice())]);
    assert_eq!(g.groups().len(), 1);
    assert_eq!(g.groups()[0].sids, [0x28, 0x110]);
}

#[test]
fn quirk_pcie_to_pci_bridge_without_pcie_capability() {
    let br = [bridge(
        rid(0, 5, 0),
        BridgeKind::ConventionalPcieToPci,
        3,
        3,
    )];
    let f = Function {
        rid: rid(3, 2, 1),
        quirk_devfns: &[],
        upstream: &br,
    };
    assert_eq!(rids(&f), [0x0311, 0x0300]);
}

/// A PCIe device behind a PCI bridge: the PCI/PCI-X-to-PCIe bridge
/// presents it as itself, and so does the PCI bridge above that.
#[test]
fn pcie_device_behind_a_pci_bridge() {
    let chain = [
        bridge(rid(2, 0, 0), BridgeKind::PciToPcie, 3, 3),
        bridge(rid(1, 1, 0), BridgeKind::Conventional, 2, 3),
        bridge(rid(0, 2, 0), BridgeKind::PcieToPci, 1, 3),
    ];
    let f = Function {
        rid: rid(3, 0, 0),
        quirk_devfns: &[],
        upstream: &chain,
    };
    assert_eq!(rids(&f), [0x0300, 0x0200, 0x0108, 0x0100]);
    let a = dma_aliases(&identity(), None, &f).unwrap();
    assert_eq!(a.root_alias().rid, rid(1, 0, 0));
}

#[test]
fn nested_pcie_to_pci_bridges_and_duplicate_sids() {
    // PCIe-to-PCI bridge at 00:01.0 (bus 1), a PCI bridge at 01:00.0
    // (bus 2): the PCI bridge's own RID equals the outer alias 01:00.0.
    let chain = [
        bridge(rid(1, 0, 0), BridgeKind::Conventional, 2, 2),
        bridge(rid(0, 1, 0), BridgeKind::PcieToPci, 1, 2),
    ];
    let f = Function {
        rid: rid(2, 7, 0),
        quirk_devfns: &[],
        upstream: &chain,
    };
    assert_eq!(rids(&f), [0x0238, 0x0100, 0x0100]);
    assert_eq!(sids(&f), [0x238, 0x100]);
}

#[test]
fn quirk_devfns_come_after_the_own_rid() {
    let f = Function {
        rid: rid(0, 4, 0),
        quirk_devfns: &[0x21],
        upstream: &[],
    };
    let a = dma_alias_rids(&f).unwrap();
    assert_eq!(
        a[1],
        AliasRid {
            rid: Rid(0x0021),
            source: AliasSource::Quirk
        }
    );
}

#[test]
fn a_chain_that_does_not_reach_the_function_is_refused() {
    let br = [bridge(rid(0, 3, 0), BridgeKind::PcieToPci, 2, 2)];
    let f = Function {
        rid: rid(5, 0, 0),
        quirk_devfns: &[],
        upstream: &br,
    };
    assert_eq!(
        dma_alias_rids(&f),
        Err(TopologyError::BrokenChain {
            bridge: rid(0, 3, 0),
            bus: 5
        })
    );
    // A virtual bus (no bridge of its own) inside the bridge's range.
    let br = [bridge(rid(0, 3, 0), BridgeKind::PcieRootPort, 2, 6)];
    let f = Function {
        rid: rid(5, 0, 0),
        ..f
    };
    assert_eq!(rids(&Function { upstream: &br, ..f }), [0x0500]);
}

#[test]
fn iommu_map_with_offset_mask_and_several_entries() {
    let map = IommuMap::new(
        vec![
            IommuMapEntry {
                rid_base: 0x0000,
                iommu: SMMU,
                sid_base: 0x1_0000,
                len: 0x100,
            },
            IommuMapEntry {
                rid_base: 0x0100,
                iommu: OTHER_SMMU,
                sid_base: 0x40,
                len: 0x100,
            },
            IommuMapEntry {
                rid_base: 0x0200,
                iommu: SMMU,
                sid_base: 0x7000,
                len: 0x100,
            },
        ],
        0x03ff,
    )
    .unwrap();
    let l = |r| map.lookup(Rid(r));
    assert_eq!(
        l(0x0008),
        Ok(MappedId {
            iommu: SMMU,
            sid: 0x1_0008
        })
    );
    assert_eq!(
        l(0x0123),
        Ok(MappedId {
            iommu: OTHER_SMMU,
            sid: 0x63
        })
    );
    assert_eq!(
        l(0x0218),
        Ok(MappedId {
            iommu: SMMU,
            sid: 0x7018
        })
    );
    // The mask drops bus bits 15:10: bus 0x06 looks like bus 0x02.
    assert_eq!(
        l(0x0618),
        Ok(MappedId {
            iommu: SMMU,
            sid: 0x7018
        })
    );
    assert_eq!(
        l(0x0318),
        Err(TopologyError::NotCovered { rid: Rid(0x0318) })
    );

    // A function at 02:03.0 behind a PCIe-to-PCI bridge at 01:00.0,
    // which sits behind a root port on the root bus.
    let chain = [
        bridge(rid(1, 0, 0), BridgeKind::PcieToPci, 2, 2),
        bridge(rid(0, 1, 0), BridgeKind::PcieRootPort, 1, 2),
    ];
    let f = Function {
        rid: rid(2, 3, 0),
        quirk_devfns: &[],
        upstream: &chain,
    };
    let a = dma_aliases(&map, Some(SMMU), &f).unwrap();
    assert_eq!(a.stream_ids(), [0x7018, 0x7000]);
    // The function's own RID is on another SMMU than expected.
    let g = Function {
        rid: rid(1, 2, 0),
        quirk_devfns: &[],
        upstream: &[bridge(rid(0, 1, 0), BridgeKind::PcieRootPort, 1, 2)],
    };
    assert_eq!(
        dma_aliases(&map, Some(SMMU), &g),
        Err(TopologyError::OtherIommu {
            rid: rid(1, 2, 0),
            iommu: OTHER_SMMU,
            expected: SMMU
        })
    );
    assert_eq!(dma_aliases(&map, None, &g).unwrap().iommu(), OTHER_SMMU);
}

#[test]
fn an_alias_on_another_iommu_is_refused() {
    // Function on bus 1 (SMMU), its alias 00:01.0 on OTHER_SMMU.
    let map = IommuMap::new(
        vec![
            IommuMapEntry {
                rid_base: 0x0000,
                iommu: OTHER_SMMU,
                sid_base: 0,
                len: 0x100,
            },
            IommuMapEntry {
                rid_base: 0x0100,
                iommu: SMMU,
                sid_base: 0x100,
                len: 0xff00,
            },
        ],
        NO_MASK,
    )
    .unwrap();
    let br = [bridge(rid(0, 1, 0), BridgeKind::Conventional, 1, 1)];
    let f = Function {
        rid: rid(1, 0, 0),
        quirk_devfns: &[],
        upstream: &br,
    };
    assert_eq!(
        dma_aliases(&map, None, &f),
        Err(TopologyError::OtherIommu {
            rid: rid(0, 1, 0),
            iommu: OTHER_SMMU,
            expected: SMMU
        })
    );
}

#[test]
fn uncovered_rids_and_bad_maps_are_typed_errors() {
    let map = IommuMap::new(
        vec![IommuMapEntry {
            rid_base: 0x0100,
            iommu: SMMU,
            sid_base: 0,
            len: 0x100,
        }],
        NO_MASK,
    )
    .unwrap();
    // The function is covered, its alias (bus 2) is not.
    let chain = [
        bridge(rid(1, 0, 0), BridgeKind::PcieToPci, 2, 2),
        bridge(rid(0, 1, 0), BridgeKind::PcieRootPort, 1, 2),
    ];
    let f = Function {
        rid: rid(2, 0, 1),
        quirk_devfns: &[],
        upstream: &chain,
    };
    assert_eq!(
        dma_aliases(&map, Some(SMMU), &f),
        Err(TopologyError::NotCovered { rid: rid(2, 0, 1) })
    );
    let empty = IommuMap::new(Vec::new(), NO_MASK).unwrap();
    assert_eq!(empty.lookup(Rid(0)), Err(TopologyError::NoIommuMap));
    assert_eq!(
        IommuMap::new(
            vec![IommuMapEntry {
                rid_base: 0x0100,
                iommu: SMMU,
                sid_base: 0,
                len: 1,
            }],
            0xff
        ),
        Err(TopologyError::MaskIgnoresBase {
            rid_base: 0x100,
            mask: 0xff
        })
    );
    let high = IommuMap::new(
        vec![IommuMapEntry {
            rid_base: 0,
            iommu: SMMU,
            sid_base: u32::MAX,
            len: 0x1_0000,
        }],
        NO_MASK,
    )
    .unwrap();
    assert_eq!(high.lookup(Rid(0)).map(|m| m.sid), Ok(u32::MAX));
    assert_eq!(
        high.lookup(Rid(1)),
        Err(TopologyError::SidOverflow { rid: Rid(1) })
    );
    // rid_base + len beyond 32 bits does not wrap.
    let wide = IommuMap::new(
        vec![IommuMapEntry {
            rid_base: 0xff00,
            iommu: SMMU,
            sid_base: 0,
            len: u32::MAX,
        }],
        NO_MASK,
    )
    .unwrap();
    assert_eq!(wide.lookup(Rid(0xffff)).map(|m| m.sid), Ok(0xff));
    assert_eq!(
        wide.lookup(Rid(0x0001)),
        Err(TopologyError::NotCovered { rid: Rid(1) })
    );
}

#[test]
fn groups_join_transitively_and_keep_order() {
    let a = [1u32, 2];
    let b = [3u32];
    let c = [2u32, 4];
    let d = [4u32, 3];
    let e: [u32; 0] = [];
    let f = [9u32];
    let g = Groups::build([
        ('a', &a[..]),
        ('b', &b[..]),
        ('e', &e[..]),
        ('f', &f[..]),
        ('c', &c[..]),
        ('d', &d[..]),
    ]);
    let ids: Vec<(Vec<char>, Vec<u32>)> = g
        .groups()
        .iter()
        .map(|g| (g.members.clone(), g.sids.clone()))
        .collect();
    assert_eq!(
        ids,
        [
            (vec!['a', 'b', 'c', 'd'], vec![1, 2, 3, 4]),
            (vec!['e'], vec![]),
            (vec!['f'], vec![9]),
        ]
    );
    assert_eq!(g.group_of_sid(4).map(|g| g.id), Some(0));
    assert_eq!(g.group_of(&'f').map(|g| g.id), Some(2));
    assert!(g.group_of_sid(5).is_none());
    for (i, grp) in g.groups().iter().enumerate() {
        assert_eq!(grp.id, i);
    }
}

#[test]
fn default_qemu_topology_has_one_group_per_function() {
    let rp = [bridge(rid(0, 2, 0), BridgeKind::PcieRootPort, 1, 1)];
    let fns = [
        Function {
            rid: rid(0, 0, 0),
            quirk_devfns: &[],
            upstream: &[],
        },
        Function {
            rid: rid(0, 1, 0),
            quirk_devfns: &[],
            upstream: &[],
        },
        Function {
            rid: rid(0, 2, 0),
            quirk_devfns: &[],
            upstream: &[],
        },
        Function {
            rid: rid(1, 0, 0),
            quirk_devfns: &[],
            upstream: &rp,
        },
    ];
    let s: Vec<Vec<u32>> = fns.iter().map(sids).collect();
    let g = Groups::build(s.iter().enumerate().map(|(i, v)| (i, v.as_slice())));
    assert_eq!(g.groups().len(), 4);
    assert!(
        g.groups()
            .iter()
            .all(|g| g.members.len() == 1 && g.sids.len() == 1)
    );
}

#[test]
fn bridge_alias_per_kind() {
    let at = rid(0, 3, 0);
    let b = |kind| bridge(at, kind, 2, 4);
    assert_eq!(b(BridgeKind::PcieRootPort).alias(), None);
    assert_eq!(b(BridgeKind::PcieSwitchDownstream).alias(), None);
    assert_eq!(b(BridgeKind::PcieToPci).alias(), Some(rid(2, 0, 0)));
    assert_eq!(
        b(BridgeKind::ConventionalPcieToPci).alias(),
        Some(rid(2, 0, 0))
    );
    assert_eq!(b(BridgeKind::Conventional).alias(), Some(at));
    assert_eq!(b(BridgeKind::PciToPcie).alias(), Some(at));
}

/// The chain from a parent relation: nearest first, ends at a non-bridge
/// or the root, and a cycle stops at the limit instead of looping.
#[test]
fn upstream_bridges_from_parent_links() {
    // 0: root port (root bus), 1: switch upstream below it, 2: switch
    // downstream, 3: endpoint; 4: endpoint on the root bus.
    let parents = [None, Some(0), Some(1), Some(2), None];
    let bridges = [
        Some(bridge(rid(0, 1, 0), BridgeKind::PcieRootPort, 1, 3)),
        Some(bridge(rid(1, 0, 0), BridgeKind::PcieSwitchUpstream, 2, 3)),
        Some(bridge(rid(2, 0, 0), BridgeKind::PcieSwitchDownstream, 3, 3)),
        None,
        None,
    ];
    let chain = upstream_bridges(3, 5, |i| parents[i], |i| bridges[i]);
    assert_eq!(
        chain.iter().map(|b| b.rid).collect::<Vec<_>>(),
        [rid(2, 0, 0), rid(1, 0, 0), rid(0, 1, 0)]
    );
    assert!(upstream_bridges(4, 5, |i| parents[i], |i| bridges[i]).is_empty());
    // A cycle 0 -> 1 -> 0: bounded by the limit.
    let cyclic = [Some(1), Some(0)];
    let chain = upstream_bridges(0, 4, |i| cyclic[i], |i| bridges[i]);
    assert_eq!(chain.len(), 4);
    // A parent that is not a bridge ends the chain.
    let chain = upstream_bridges(0, 4, |_| Some(3), |i| bridges[i]);
    assert!(chain.is_empty());
}

#[test]
fn iommu_map_cells() {
    let e = IommuMap::entries_from_cells(&[0, 0x8001, 0, 0x1_0000, 0x100, 0x8002, 0x40, 0x100])
        .unwrap();
    assert_eq!(
        e,
        [
            IommuMapEntry {
                rid_base: 0,
                iommu: 0x8001,
                sid_base: 0,
                len: 0x1_0000
            },
            IommuMapEntry {
                rid_base: 0x100,
                iommu: 0x8002,
                sid_base: 0x40,
                len: 0x100
            }
        ]
    );
    assert_eq!(IommuMap::entries_from_cells(&[]), Ok(vec![]));
    assert_eq!(
        IommuMap::entries_from_cells(&[0, 1, 2]),
        Err(TopologyError::MalformedIommuMap { cells: 3 })
    );
    assert_eq!(
        IommuMap::absent().lookup(Rid(0)),
        Err(TopologyError::NoIommuMap)
    );
}
