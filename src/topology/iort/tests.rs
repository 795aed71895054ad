//! Host tests of the IORT parser, on tables built here from the layout of
//! DEN 0049 (no dumped firmware tables).

use super::*;
use crate::topology::{IommuMap, Rid};
use alloc::vec;
use alloc::vec::Vec;
use proptest::prelude::*;

/// Where a mapping's output reference points.
#[derive(Clone, Copy)]
enum To {
    /// The node with this index in the builder's list.
    Node(usize),
    /// A raw table offset.
    Raw(u32),
}

#[derive(Clone, Copy)]
struct Map {
    input: u32,
    count_minus_one: u32,
    output: u32,
    to: To,
    flags: u32,
}

fn range(input: u32, count_minus_one: u32, output: u32, to: usize) -> Map {
    Map {
        input,
        count_minus_one,
        output,
        to: To::Node(to),
        flags: 0,
    }
}

#[derive(Clone)]
struct Spec {
    ty: u8,
    revision: u8,
    body: Vec<u8>,
    maps: Vec<Map>,
}

fn le32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn le64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// An ITS group node with one ITS (identifier 0).
fn its() -> Spec {
    let mut body = Vec::new();
    le32(&mut body, 1);
    le32(&mut body, 0);
    Spec {
        ty: node_type::ITS_GROUP,
        revision: 1,
        body,
        maps: vec![],
    }
}

/// An SMMUv3 node (layout with proximity domain and DeviceID index).
fn smmu(base: u64, flags: u32, maps: Vec<Map>) -> Spec {
    let mut body = Vec::new();
    le64(&mut body, base);
    le32(&mut body, flags);
    le32(&mut body, 0); // reserved
    le64(&mut body, 0); // VATOS
    le32(&mut body, 0); // model: generic
    for gsiv in [106, 107, 108, 109] {
        le32(&mut body, gsiv);
    }
    le32(&mut body, 3); // proximity domain
    le32(&mut body, 0); // DeviceID mapping index
    Spec {
        ty: node_type::SMMU_V3,
        revision: 4,
        body,
        maps,
    }
}

/// A root complex node.
fn rc(segment: u32, maps: Vec<Map>) -> Spec {
    let mut body = Vec::new();
    le32(&mut body, 1); // CCA: fully coherent
    body.extend_from_slice(&[0, 0, 0, 3]); // hints, reserved, CPM | DACS
    le32(&mut body, 1); // ATS supported
    le32(&mut body, segment);
    body.extend_from_slice(&[44, 0, 0, 0]); // address limit, PASID caps, reserved
    Spec {
        ty: node_type::ROOT_COMPLEX,
        revision: 3,
        body,
        maps,
    }
}

/// A named component node.
fn named(name: &[u8], maps: Vec<Map>) -> Spec {
    let mut body = Vec::new();
    le32(&mut body, 0); // flags
    le32(&mut body, 0); // CCA: not coherent
    body.extend_from_slice(&[0, 0, 0, 0]);
    body.push(48); // address limit
    body.extend_from_slice(name);
    body.push(0);
    while body.len() % 4 != 0 {
        body.push(0);
    }
    Spec {
        ty: node_type::NAMED_COMPONENT,
        revision: 4,
        body,
        maps,
    }
}

/// Node offsets of `nodes` laid out from the header.
fn offsets(nodes: &[Spec]) -> Vec<u32> {
    let mut at = HEADER_LEN as u32;
    nodes
        .iter()
        .map(|n| {
            let o = at;
            at += (NODE_HEADER_LEN + n.body.len() + ID_MAPPING_LEN * n.maps.len()) as u32;
            o
        })
        .collect()
}

/// The table's bytes, checksum fixed.
fn build(revision: u8, nodes: &[Spec]) -> Vec<u8> {
    let offs = offsets(nodes);
    let mut t = Vec::new();
    t.extend_from_slice(b"IORT");
    le32(&mut t, 0); // length, below
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(b"SMMUV3SMMUTEST0");
    t.extend_from_slice(&[0; 11]);
    assert_eq!(t.len(), 36);
    le32(&mut t, nodes.len() as u32);
    le32(&mut t, HEADER_LEN as u32);
    le32(&mut t, 0);
    for n in nodes {
        let len = NODE_HEADER_LEN + n.body.len() + ID_MAPPING_LEN * n.maps.len();
        t.push(n.ty);
        t.extend_from_slice(&(len as u16).to_le_bytes());
        t.push(n.revision);
        le32(&mut t, 0); // identifier
        le32(&mut t, n.maps.len() as u32);
        le32(
            &mut t,
            if n.maps.is_empty() {
                0
            } else {
                (NODE_HEADER_LEN + n.body.len()) as u32
            },
        );
        t.extend_from_slice(&n.body);
        for m in &n.maps {
            le32(&mut t, m.input);
            le32(&mut t, m.count_minus_one);
            le32(&mut t, m.output);
            le32(
                &mut t,
                match m.to {
                    To::Node(i) => offs[i],
                    To::Raw(r) => r,
                },
            );
            le32(&mut t, m.flags);
        }
    }
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    fix_checksum(&mut t);
    t
}

fn fix_checksum(t: &mut [u8]) {
    t[9] = 0;
    let sum = t.iter().fold(0u8, |s, &b| s.wrapping_add(b));
    t[9] = 0u8.wrapping_sub(sum);
}

const SMMU_BASE_ADDR: u64 = 0x905_0000;

/// What QEMU `virt` builds with `iommu=smmuv3` and a GICv3 ITS: ITS group,
/// SMMUv3 (COHACC, StreamIDs -> ITS DeviceIDs), root complex 0 with all
/// 2^16 RIDs -> the SMMU, identity.
fn qemu_like() -> Vec<Spec> {
    vec![
        its(),
        smmu(
            SMMU_BASE_ADDR,
            smmu_flags::COHACC_OVERRIDE,
            vec![range(0, 0xffff, 0, 0)],
        ),
        rc(0, vec![range(0, 0xffff, 0, 1)]),
    ]
}

#[test]
fn a_qemu_like_table_parses_field_by_field() {
    let t = build(5, &qemu_like());
    let iort = Iort::parse(&t).expect("valid table");
    assert_eq!(iort.revision(), 5);
    assert_eq!(iort.node_count(), 3);
    let nodes: Vec<Node<'_>> = iort.nodes().collect();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0].kind, NodeKind::ItsGroup { its_count: 1 });
    assert_eq!(nodes[0].offset, HEADER_LEN as u32);
    let NodeKind::SmmuV3(s) = nodes[1].kind else {
        panic!("node 1 is not an SMMUv3: {:?}", nodes[1].kind)
    };
    assert_eq!(s.base, SMMU_BASE_ADDR);
    assert!(s.coherent());
    assert_eq!(
        (s.event_gsiv, s.pri_gsiv, s.gerr_gsiv, s.sync_gsiv),
        (106, 107, 108, 109)
    );
    assert_eq!(s.model, 0);
    assert_eq!(s.httu_override(), 0);
    // Present but not flagged valid.
    assert_eq!(s.proximity_domain_field, Some(3));
    assert_eq!(s.proximity_domain(), None);
    assert_eq!(s.device_id_mapping_index(), None);
    let NodeKind::RootComplex(r) = nodes[2].kind else {
        panic!("node 2 is not a root complex")
    };
    assert_eq!(r.segment, 0);
    assert!(r.memory.coherent());
    assert_eq!(r.memory.flags, 3);
    assert!(r.ats_supported());
    assert_eq!(r.address_limit, Some(44));
    let m: Vec<IdMapping> = nodes[2].mappings().collect();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].len(), 0x1_0000);
    assert_eq!(m[0].output_reference, nodes[1].offset);
    for rid in [0u16, 0x0008, 0x0100, 0x0218, 0xffff] {
        let s = iort.smmu_stream(0, rid).expect("covered");
        assert_eq!(s.smmu.base, SMMU_BASE_ADDR);
        assert_eq!(s.smmu_node, nodes[1].offset);
        assert_eq!(s.sid, u32::from(rid));
    }
    assert_eq!(
        iort.smmu_stream(1, 0),
        Err(IortError::NoRootComplex { segment: 1 })
    );
    // Trailing bytes beyond the header's length are ignored.
    let mut longer = t.clone();
    longer.extend_from_slice(&[0xaa; 7]);
    assert_eq!(Iort::parse(&longer).map(|i| i.bytes().len()), Ok(t.len()));
}

/// "Number of IDs" is the count minus one: 0xff covers 256 IDs, not 255
/// and not 257.
#[test]
fn number_of_ids_is_encoded_minus_one() {
    let t = build(
        6,
        &[
            its(),
            smmu(SMMU_BASE_ADDR, 0, vec![]),
            rc(0, vec![range(0x100, 0xff, 0x4000, 1)]),
        ],
    );
    let iort = Iort::parse(&t).unwrap();
    assert_eq!(iort.smmu_stream(0, 0x1ff).map(|s| s.sid), Ok(0x40ff));
    assert_eq!(iort.smmu_stream(0, 0x100).map(|s| s.sid), Ok(0x4000));
    let rc_node = iort.root_complex(0).unwrap().0.offset;
    assert_eq!(
        iort.smmu_stream(0, 0x200),
        Err(IortError::NotCovered {
            node: rc_node,
            id: 0x200
        })
    );
    assert_eq!(
        iort.smmu_stream(0, 0xff),
        Err(IortError::NotCovered {
            node: rc_node,
            id: 0xff
        })
    );
    // Count 0 means one ID.
    let t = build(
        6,
        &[
            smmu(SMMU_BASE_ADDR, 0, vec![]),
            rc(0, vec![range(7, 0, 9, 0)]),
        ],
    );
    let iort = Iort::parse(&t).unwrap();
    assert_eq!(iort.smmu_stream(0, 7).map(|s| s.sid), Ok(9));
    assert!(iort.smmu_stream(0, 8).is_err());
}

#[test]
fn two_smmus_a_bypass_range_and_a_second_segment() {
    let t = build(
        5,
        &[
            its(),
            smmu(0x1000_0000, 0, vec![range(0, 0xffff, 0, 0)]),
            smmu(0x2000_0000, 0, vec![]),
            rc(
                0,
                vec![
                    range(0x0000, 0x00ff, 0x1_0000, 1),
                    range(0x0100, 0x00ff, 0, 0), // straight to the ITS
                    range(0x0200, 0x01ff, 0x40, 2),
                ],
            ),
            rc(1, vec![range(0, 0xffff, 0x8000, 2)]),
        ],
    );
    let iort = Iort::parse(&t).unwrap();
    let st = |seg, rid| iort.smmu_stream(seg, rid).map(|s| (s.smmu.base, s.sid));
    assert_eq!(st(0, 0x0008), Ok((0x1000_0000, 0x1_0008)));
    assert_eq!(st(0, 0x0210), Ok((0x2000_0000, 0x50)));
    assert_eq!(st(0, 0x03ff), Ok((0x2000_0000, 0x23f)));
    assert_eq!(
        st(0, 0x0123),
        Err(IortError::NotBehindSmmuV3 {
            node: HEADER_LEN as u32,
            node_type: node_type::ITS_GROUP
        })
    );
    assert_eq!(st(1, 0x0001), Ok((0x2000_0000, 0x8001)));
    assert_eq!(iort.smmu_v3_nodes().count(), 2);
}

#[test]
fn single_mappings_and_the_device_id_index() {
    let single = Map {
        input: 0xdead,
        count_minus_one: 0xffff_ffff, // ignored for a single mapping
        output: 0x7000,
        to: To::Node(0),
        flags: MAPPING_SINGLE,
    };
    let mut s = smmu(
        SMMU_BASE_ADDR,
        smmu_flags::DEVICE_ID_INDEX_VALID | smmu_flags::PROXIMITY_VALID,
        vec![range(0, 0xffff, 0, 0), single],
    );
    // DeviceID mapping index = 1 (the single mapping).
    let idx = s.body.len() - 4;
    s.body[idx] = 1;
    let t = build(5, &[its(), s.clone(), rc(0, vec![range(0, 0xffff, 0, 1)])]);
    let iort = Iort::parse(&t).unwrap();
    let (_, smmu) = iort.smmu_v3_nodes().next().unwrap();
    assert_eq!(smmu.device_id_mapping_index(), Some(1));
    assert_eq!(smmu.proximity_domain(), Some(3));
    let node = iort
        .node_at(iort.smmu_v3_nodes().next().unwrap().0)
        .unwrap();
    let maps: Vec<IdMapping> = node.mappings().collect();
    assert!(maps[1].is_single());
    // The single mapping overlaps nothing and maps nothing by input.
    assert!(!maps[1].covers(0xdead));
    // Index 2 names no mapping.
    s.body[idx] = 2;
    let t = build(5, &[its(), s, rc(0, vec![range(0, 0xffff, 0, 1)])]);
    assert_eq!(
        Iort::parse(&t),
        Err(IortError::BadDeviceIdIndex {
            node: offsets(&qemu_like())[1],
            index: 2
        })
    );
}

#[test]
fn named_component_fields() {
    let t = build(
        5,
        &[
            smmu(SMMU_BASE_ADDR, 0, vec![]),
            named(b"\\_SB.DMA0", vec![range(0, 3, 0x300, 0)]),
        ],
    );
    let iort = Iort::parse(&t).unwrap();
    let n = iort.nodes().nth(1).unwrap();
    let NodeKind::NamedComponent(nc) = n.kind else {
        panic!("not a named component")
    };
    assert_eq!(nc.name, b"\\_SB.DMA0");
    assert_eq!(nc.address_limit, 48);
    assert!(!nc.memory.coherent());
    assert_eq!(iort.follow(n, 2).map(|s| s.sid), Ok(0x302));
}

#[test]
fn revisions_0_to_7_are_accepted_newer_refused() {
    for rev in 0..=MAX_REVISION {
        assert!(Iort::parse(&build(rev, &qemu_like())).is_ok(), "rev {rev}");
    }
    assert_eq!(
        Iort::parse(&build(8, &qemu_like())),
        Err(IortError::UnknownRevision(8))
    );
}

/// Patches `f` into a valid table and fixes its checksum.
fn patched(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut t = build(5, &qemu_like());
    f(&mut t);
    fix_checksum(&mut t);
    t
}

fn put32(t: &mut [u8], at: usize, v: u32) {
    t[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn malformed_headers_are_typed_errors() {
    let good = build(5, &qemu_like());
    assert_eq!(
        Iort::parse(&good[..47]),
        Err(IortError::Truncated {
            needed: 48,
            have: 47
        })
    );
    assert_eq!(
        Iort::parse(&[]),
        Err(IortError::Truncated {
            needed: 48,
            have: 0
        })
    );
    let t = patched(|t| t[0..4].copy_from_slice(b"DMAR"));
    assert_eq!(Iort::parse(&t), Err(IortError::BadSignature(*b"DMAR")));
    // Header length beyond the buffer, and below the header.
    let t = patched(|t| put32(t, 4, good.len() as u32 + 1));
    assert_eq!(
        Iort::parse(&t),
        Err(IortError::BadLength {
            length: good.len() as u32 + 1,
            buffer: good.len()
        })
    );
    assert_eq!(
        Iort::parse(&good[..good.len() - 1]),
        Err(IortError::BadLength {
            length: good.len() as u32,
            buffer: good.len() - 1
        })
    );
    let t = patched(|t| put32(t, 4, 47));
    assert!(matches!(
        Iort::parse(&t),
        Err(IortError::BadLength { length: 47, .. })
    ));
    // One flipped bit, checksum not fixed.
    let mut t = good.clone();
    t[60] ^= 1;
    assert_eq!(Iort::parse(&t), Err(IortError::BadChecksum { sum: 1 }));
    // Node array inside the header, beyond the table.
    let t = patched(|t| put32(t, 40, 12));
    assert_eq!(Iort::parse(&t), Err(IortError::BadNodeArray { offset: 12 }));
    let len = good.len() as u32;
    let t = patched(|t| put32(t, 40, len));
    assert_eq!(
        Iort::parse(&t),
        Err(IortError::BadNodeArray { offset: len })
    );
    // More nodes than the table holds: the 4th "node" header does not fit.
    let t = patched(|t| put32(t, 36, 4));
    assert_eq!(
        Iort::parse(&t),
        Err(IortError::BadNodeLength {
            node: len,
            length: 0
        })
    );
}

#[test]
fn malformed_nodes_are_typed_errors() {
    let offs = offsets(&qemu_like());
    let (smmu_at, rc_at) = (offs[1] as usize, offs[2] as usize);
    // Node length 0 (would loop forever if accepted).
    let t = patched(|t| t[smmu_at + 1..smmu_at + 3].copy_from_slice(&0u16.to_le_bytes()));
    assert_eq!(
        Iort::parse(&t),
        Err(IortError::BadNodeLength {
            node: smmu_at as u32,
            length: 0
        })
    );
    // Node length beyond the table.
    let t = patched(|t| t[rc_at + 1..rc_at + 3].copy_from_slice(&0x100u16.to_le_bytes()));
    assert_eq!(
        Iort::parse(&t),
        Err(IortError::BadNodeLength {
            node: rc_at as u32,
            length: 0x100
        })
    );
    // Mapping array beyond the node: two mappings where one fits.
    let t = patched(|t| put32(t, rc_at + 8, 2));
    assert_eq!(
        Iort::parse(&t),
        Err(IortError::MappingsBeyondNode {
            node: rc_at as u32,
            offset: 36,
            count: 2
        })
    );
    // Mapping array offset inside the node header, and a huge count.
    let t = patched(|t| put32(t, rc_at + 12, 4));
    assert!(matches!(
        Iort::parse(&t),
        Err(IortError::MappingsBeyondNode { offset: 4, .. })
    ));
    let t = patched(|t| put32(t, rc_at + 8, u32::MAX));
    assert!(matches!(
        Iort::parse(&t),
        Err(IortError::MappingsBeyondNode {
            count: u32::MAX,
            ..
        })
    ));
    // An SMMUv3 node cut short of its GSIVs.
    let mut s = smmu(SMMU_BASE_ADDR, 0, vec![]);
    s.body.truncate(30);
    assert_eq!(
        Iort::parse(&build(5, &[s])),
        Err(IortError::NodeTooShort {
            node: 48,
            node_type: node_type::SMMU_V3
        })
    );
    // A root complex without its segment.
    let mut r = rc(0, vec![]);
    r.body.truncate(8);
    assert_eq!(
        Iort::parse(&build(5, &[r])),
        Err(IortError::NodeTooShort {
            node: 48,
            node_type: node_type::ROOT_COMPLEX
        })
    );
    // An ITS group claiming more identifiers than it has.
    let mut i = its();
    i.body[0] = 9;
    assert_eq!(
        Iort::parse(&build(5, &[i])),
        Err(IortError::NodeTooShort {
            node: 48,
            node_type: node_type::ITS_GROUP
        })
    );
    // A named component whose name has no NUL.
    let mut n = named(b"ABC", vec![]);
    n.body.truncate(13 + 3);
    assert_eq!(
        Iort::parse(&build(5, &[n])),
        Err(IortError::NodeTooShort {
            node: 48,
            node_type: node_type::NAMED_COMPONENT
        })
    );
}

#[test]
fn malformed_mappings_are_typed_errors() {
    let rc_at = offsets(&qemu_like())[2];
    let with_rc_maps = |maps: Vec<Map>| {
        build(
            5,
            &[
                its(),
                smmu(SMMU_BASE_ADDR, 0, vec![range(0, 0xffff, 0, 0)]),
                rc(0, maps),
            ],
        )
    };
    // Overlapping ranges in one node, in either order, even by one ID.
    for maps in [
        vec![range(0, 0xff, 0, 1), range(0xff, 0, 0x1000, 1)],
        vec![range(0x80, 0x10, 0, 1), range(0, 0xffff, 0, 1)],
    ] {
        assert_eq!(
            Iort::parse(&with_rc_maps(maps)),
            Err(IortError::OverlappingMappings {
                node: rc_at,
                first: 0,
                second: 1
            })
        );
    }
    // Adjacent ranges are fine.
    assert!(
        Iort::parse(&with_rc_maps(vec![
            range(0, 0xff, 0, 1),
            range(0x100, 0xff, 0x1000, 1)
        ]))
        .is_ok()
    );
    // An output reference into the middle of a node, beyond the table.
    for reference in [rc_at + 4, 0x10_0000, 0] {
        let m = Map {
            to: To::Raw(reference),
            ..range(0, 0xffff, 0, 1)
        };
        assert_eq!(
            Iort::parse(&with_rc_maps(vec![m])),
            Err(IortError::BadReference {
                node: rc_at,
                index: 0,
                reference
            })
        );
    }
    // Input base + count wraps; output base + count wraps.
    for m in [
        range(0xffff_ff00, 0x100, 0, 1),
        range(0, 0xffff, 0xffff_0001, 1),
    ] {
        assert_eq!(
            Iort::parse(&with_rc_maps(vec![m])),
            Err(IortError::IdOverflow {
                node: rc_at,
                index: 0
            })
        );
    }
    // The last ID exactly at 2^32 - 1 does not wrap.
    let t = with_rc_maps(vec![range(0xffff_0000, 0xffff, 0xffff_0000, 1)]);
    assert!(Iort::parse(&t).is_ok());
}

/// Every read of a parsed table, to shake out panics.
fn exercise(iort: &Iort<'_>) {
    let mut n = 0;
    for node in iort.nodes() {
        n += 1;
        for m in node.mappings() {
            let _ = (m.len(), m.input_last(), m.map(m.input_base));
        }
        let _ = iort.follow(node, 0);
        let _ = iort.follow(node, u32::MAX);
    }
    assert_eq!(n, iort.node_count());
    for rid in [0u16, 1, 0x100, 0xffff] {
        let _ = iort.smmu_stream(0, rid);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes (with a valid signature and length, so the parser
    /// gets past the header) never panic.
    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..600), fix in any::<bool>()) {
        if fix && bytes.len() >= HEADER_LEN {
            bytes[0..4].copy_from_slice(b"IORT");
            let len = bytes.len() as u32;
            put32(&mut bytes, 4, len);
            bytes[8] %= MAX_REVISION + 1;
            fix_checksum(&mut bytes);
        }
        if let Ok(iort) = Iort::parse(&bytes) {
            exercise(&iort);
        }
    }

    /// A valid table with a few bytes changed (checksum fixed) never
    /// panics, and whatever parses is consistent.
    #[test]
    fn mutated_tables_never_panic(edits in proptest::collection::vec((0usize..400, any::<u8>()), 1..6)) {
        let mut t = build(5, &qemu_like());
        let len = t.len();
        for (at, v) in edits {
            t[at % len] = v;
        }
        fix_checksum(&mut t);
        if let Ok(iort) = Iort::parse(&t) {
            exercise(&iort);
        }
    }
}

/// The IORT against QEMU's `iommu-map = <0 &smmu 0 0x10000>`: agreement,
/// then a deliberately disagreeing IORT (StreamID offset, another SMMU
/// base, a range left uncovered) is reported with both answers.
#[test]
fn iort_and_iommu_map_agreement_and_mismatches() {
    use crate::topology::{IommuMapEntry, NO_MASK};
    const PHANDLE: u32 = 0x8001;
    let map = IommuMap::new(
        vec![IommuMapEntry {
            rid_base: 0,
            iommu: PHANDLE,
            sid_base: 0,
            len: 0x1_0000,
        }],
        NO_MASK,
    )
    .unwrap();
    let smmus = [DtSmmu {
        phandle: PHANDLE,
        base: SMMU_BASE_ADDR,
    }];
    let rids = [0x0000u16, 0x0008, 0x0010, 0x0100, 0x0200, 0x0218];
    let rids = || rids.iter().map(|&r| Rid(r));

    let t = build(5, &qemu_like());
    let iort = Iort::parse(&t).unwrap();
    assert_eq!(
        compare_with_iommu_map(&iort, 0, &map, &smmus, rids()),
        Ok(6)
    );

    // StreamIDs offset by 0x1000 in the IORT.
    let t = build(
        5,
        &[
            its(),
            smmu(SMMU_BASE_ADDR, 0, vec![]),
            rc(0, vec![range(0, 0xffff, 0x1000, 1)]),
        ],
    );
    let iort = Iort::parse(&t).unwrap();
    let d = compare_with_iommu_map(&iort, 0, &map, &smmus, rids()).unwrap_err();
    assert_eq!(d.rid, Rid(0));
    assert_eq!(d.iort, Ok((SMMU_BASE_ADDR, 0x1000)));
    assert_eq!(d.dtb, Ok((SMMU_BASE_ADDR, 0)));
    assert_eq!(
        alloc::format!("{d}"),
        "RID 0x0000 (00:00.0): IORT says SMMU 0x9050000 StreamID 0x1000, DTB says SMMU 0x9050000 StreamID 0x0"
    );

    // Another SMMU base.
    let t = build(
        5,
        &[
            its(),
            smmu(0x2b40_0000, 0, vec![]),
            rc(0, vec![range(0, 0xffff, 0, 1)]),
        ],
    );
    let iort = Iort::parse(&t).unwrap();
    let d = compare_with_iommu_map(&iort, 0, &map, &smmus, rids()).unwrap_err();
    assert_eq!(d.iort, Ok((0x2b40_0000, 0)));

    // Bus 2 goes to the ITS (untranslated) in the IORT only.
    let t = build(
        5,
        &[
            its(),
            smmu(SMMU_BASE_ADDR, 0, vec![]),
            rc(
                0,
                vec![range(0, 0x1ff, 0, 1), range(0x200, 0xfdff, 0x200, 0)],
            ),
        ],
    );
    let iort = Iort::parse(&t).unwrap();
    let d = compare_with_iommu_map(&iort, 0, &map, &smmus, rids()).unwrap_err();
    assert_eq!(d.rid, Rid(0x200));
    assert!(matches!(d.iort, Err(IortError::NotBehindSmmuV3 { .. })));
    assert_eq!(d.dtb, Ok((SMMU_BASE_ADDR, 0x200)));
    // ...and the RIDs before it agreed.
    assert_eq!(
        compare_with_iommu_map(&iort, 0, &map, &smmus, rids().take(4)),
        Ok(4)
    );
}
