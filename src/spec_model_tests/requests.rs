//! Scenarios of driver requests run on each variant, and the property that
//! nothing ILLEGAL is ever visible.

use super::*;

/// One step of a scenario.
#[derive(Debug, Clone, Copy)]
enum Op {
    Create(DomainReq),
    Attach {
        domain: usize,
        sid: usize,
    },
    AttachSsid {
        domain: usize,
        sid: usize,
        ssid: u32,
    },
    DetachSsid {
        sid: usize,
        ssid: u32,
    },
    Nested {
        domain: usize,
        sid: usize,
        cd: GuestCdReq,
    },
    DetachNested {
        domain: usize,
        sid: usize,
    },
    Map {
        domain: usize,
        page: u64,
        pages: u64,
    },
    Unmap {
        domain: usize,
        page: u64,
        pages: u64,
    },
    Detach {
        sid: usize,
    },
    Bypass {
        sid: usize,
    },
    Abort {
        sid: usize,
    },
    Quarantine {
        sid: usize,
    },
    Release {
        sid: usize,
    },
    Destroy {
        domain: usize,
    },
    External {
        vtcr: (u64, u64, u64, u64),
        root: u64,
        vmid: Option<u16>,
    },
    Group {
        domain: usize,
        first: usize,
        n: usize,
        attach: bool,
    },
    NestedInvalidate {
        domain: usize,
        asid: u16,
        va: u64,
        len: u64,
    },
    Invalidate {
        domain: usize,
        page: u64,
        pages: u64,
    },
    Protect {
        domain: usize,
        page: u64,
        pages: u64,
    },
    Reenable,
    Policy {
        ssid_bits: u8,
        leaf64: bool,
    },
}

/// A guest's CD for a nested stream, as guest fields.
#[derive(Debug, Clone, Copy)]
struct GuestCdReq {
    t0sz: u8,
    tg0: u8,
    ips: u8,
    asid: u16,
    ttb_page: u64,
    epd1: bool,
    ha: bool,
    s: bool,
}

fn op() -> impl Strategy<Value = Op> {
    let d = 0usize..4;
    let s = 0usize..SIDS.len();
    let cd = (
        prop_oneof![3 => 16u8..=39, 1 => 8u8..=48],
        prop_oneof![9 => 0u8..=2, 1 => 3u8..=3],
        0u8..=7,
        any::<u16>(),
        0u64..8,
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(t0sz, tg0, ips, asid, ttb_page, epd1, ha, s)| GuestCdReq {
            t0sz,
            tg0,
            ips,
            asid: if asid & 0x100 != 0 {
                asid & 0x1FF
            } else {
                1 + (asid & 7)
            },
            ttb_page,
            epd1,
            ha,
            s,
        });
    prop_oneof![
        3 => domain_req().prop_map(Op::Create),
        4 => (d.clone(), s.clone()).prop_map(|(domain, sid)| Op::Attach { domain, sid }),
        2 => (d.clone(), s.clone(), 1u32..2048).prop_map(|(domain, sid, ssid)| Op::AttachSsid { domain, sid, ssid }),
        1 => (s.clone(), 1u32..2048).prop_map(|(sid, ssid)| Op::DetachSsid { sid, ssid }),
        4 => (d.clone(), s.clone(), cd).prop_map(|(domain, sid, cd)| Op::Nested { domain, sid, cd }),
        1 => (d.clone(), s.clone()).prop_map(|(domain, sid)| Op::DetachNested { domain, sid }),
        2 => (d.clone(), 0u64..64, 1u64..600).prop_map(|(domain, page, pages)| Op::Map { domain, page, pages }),
        2 => (d.clone(), 0u64..64, 1u64..600).prop_map(|(domain, page, pages)| Op::Unmap { domain, page, pages }),
        2 => s.clone().prop_map(|sid| Op::Detach { sid }),
        1 => s.clone().prop_map(|sid| Op::Bypass { sid }),
        1 => s.clone().prop_map(|sid| Op::Abort { sid }),
        1 => s.clone().prop_map(|sid| Op::Quarantine { sid }),
        1 => s.clone().prop_map(|sid| Op::Release { sid }),
        1 => d.clone().prop_map(|domain| Op::Destroy { domain }),
        1 => (d, 0u64..64, 1u64..600).prop_map(|(domain, page, pages)| Op::Protect { domain, page, pages }),
        1 => Just(Op::Reenable),
        2 => (0usize..4, 1u16..9, 0u64..1 << 36, 0u64..1 << 30)
            .prop_map(|(domain, asid, va, len)| Op::NestedInvalidate { domain, asid, va: va << 12, len: len << 12 }),
        1 => (0usize..4, 0u64..64, 1u64..600).prop_map(|(domain, page, pages)| Op::Invalidate { domain, page, pages }),
        2 => (0usize..4, 0usize..SIDS.len(), 1usize..4, any::<bool>())
            .prop_map(|(domain, first, n, attach)| Op::Group { domain, first, n, attach }),
        3 => (
            (prop_oneof![16u64..=40, 0u64..64], 0u64..4, 0u64..3, 0u64..7),
            prop_oneof![(0u64..0x2_0000).prop_map(|p| p << 12), (0u64..1 << 40).prop_map(|p| p << 12)],
            prop::option::of(1u16..0x200),
        )
            .prop_map(|(vtcr, root, vmid)| Op::External { vtcr, root, vmid }),
        1 => (prop::sample::select(std::vec![0u8, 1, 4, 6, 7, 10, 11]), any::<bool>())
            .prop_map(|(ssid_bits, leaf64)| Op::Policy { ssid_bits, leaf64 }),
    ]
}

/// Guest RAM of nested streams, at IPA 0x400_0000 (4 MiB).
const GUEST_RAM: core::ops::Range<u64> = 0x400_0000..0x440_0000;
pub(super) const GUEST_CD: u64 = 0x400_3000;

fn guest_cd(c: &GuestCdReq) -> [u64; 8] {
    let d0 = u64::from(c.t0sz)
        | u64::from(c.tg0) << 6
        | u64::from(c.epd1) << 30
        | 1 << 31
        | u64::from(c.ips) << 32
        | 1 << 41
        | u64::from(c.ha) << 43
        | u64::from(c.s) << 44
        | 3 << 45
        | u64::from(c.asid) << 48;
    // TTB0 in guest RAM, 64 KiB steps, sometimes 4 KiB off (misaligned
    // for a 16K or 64K granule).
    [
        d0,
        GUEST_RAM.start
            + 0x1_0000 * (1 + c.ttb_page)
            + (c.ttb_page & 1) * 0x1000 * u64::from(c.ttb_page > 5),
        0,
        0x44FF,
        0,
        0,
        0,
        0,
    ]
}

/// Runs `ops` on `v` with the observer installed; returns the violations
/// (empty when the driver stayed legal, or refused the variant).
fn run<H: Hal>(v: &Variant, ops: &[Op], strtab: usize) -> Vec<String> {
    use crate::smmu::StreamTableChoice;
    let model = v.builder().build();
    let idr = v.idr();
    let config = Config {
        timeout_ns: 1_000_000,
        stream_table: [
            StreamTableChoice::Auto,
            StreamTableChoice::Linear,
            StreamTableChoice::TwoLevel,
        ][strtab],
        ..Config::default()
    };
    // SAFETY: the model outlives the driver (dropped at the end of this
    // function, after `smmu`); nothing else drives it.
    let Ok(smmu) = (unsafe { Smmu::<H>::new(model.base(), config) }) else {
        return Vec::new(); // refused (e.g. forced stall): nothing written
    };
    let found = observe(&model, idr, SIDS);
    if smmu.enable().is_err() {
        return std::vec![String::from("enable failed")];
    }
    let mut domains: Vec<crate::DomainId> = Vec::new();
    let mut nested_bad: Vec<String> = Vec::new();
    let dom = |i: usize, ds: &Vec<crate::DomainId>| ds.get(i % ds.len().max(1)).copied();
    for op in ops {
        // Errors are typed refusals: the property is only about what the
        // driver wrote.
        match *op {
            Op::Create(r) => {
                if let Some(d) = create(&smmu, r) {
                    domains.push(d);
                }
            }
            Op::Attach { domain, sid } => {
                if let Some(d) = dom(domain, &domains) {
                    if smmu.domain_of(SIDS[sid]) != Some(d) {
                        let _ = smmu.detach(SIDS[sid]);
                        let _ = smmu.attach(d, SIDS[sid]);
                    }
                }
            }
            Op::AttachSsid { domain, sid, ssid } => {
                if let Some(d) = dom(domain, &domains) {
                    let _ = smmu.attach_ssid(d, SIDS[sid], ssid);
                }
            }
            Op::DetachSsid { sid, ssid } => {
                let _ = smmu.detach_ssid(SIDS[sid], ssid);
            }
            Op::Nested { domain, sid, cd } => {
                // A stage-2 domain of the VM (the first from `domain` on, or
                // a new one).
                let n = domains.len();
                let s2 = (0..n).map(|i| domains[(domain + i) % n]).find(|&d| {
                    smmu.domain_info(d)
                        .is_ok_and(|i| i.stage == crate::Stage::Stage2)
                });
                let s2 = s2.or_else(|| {
                    let r = DomainReq {
                        granule: domain,
                        ipa_bits: 40,
                        stage1: false,
                        vmid: None,
                        oas: 12,
                    };
                    let d = create(&smmu, r)?;
                    domains.push(d);
                    Some(d)
                });
                if let Some(d) = s2 {
                    let words = guest_cd(&cd);
                    if smmu.domain_of(SIDS[sid]) != Some(d) {
                        let _ = smmu.detach(SIDS[sid]);
                        let _ = smmu.attach(d, SIDS[sid]);
                    }
                    let _ = smmu.map(
                        d,
                        GUEST_RAM.start,
                        0x8000_0000,
                        GUEST_RAM.end - GUEST_RAM.start,
                        Perm::ReadWrite,
                    );
                    let req = crate::domain::NestedRequest {
                        domain: d,
                        sid: SIDS[sid],
                        cd_ipa: GUEST_CD,
                        guest_ram: core::slice::from_ref(&GUEST_RAM),
                    };
                    let mut read = |ipa: u64| {
                        let i = ipa.wrapping_sub(GUEST_CD) / 8;
                        GUEST_RAM.contains(&ipa).then(|| {
                            if ipa >= GUEST_CD && i < 8 {
                                words[i as usize]
                            } else {
                                0
                            }
                        })
                    };
                    if smmu.attach_nested(&req, &mut read).is_ok() {
                        // The SMMU reads the guest's CD words as they are.
                        let ste = model.ste(SIDS[sid]).map(|s| s.0).unwrap_or_default();
                        let e2h = reg32(model.base().as_ptr() as usize, CR2) & 1 == 1;
                        if let Some(e) = cd_illegal(&words, &ste, e2h, &idr) {
                            nested_bad.push(format!("nested CD {words:x?} accepted: {e}"));
                        }
                    }
                }
            }
            Op::DetachNested { domain, sid } => {
                if let Some(d) = dom(domain, &domains) {
                    let _ = smmu.detach_nested(d, SIDS[sid]);
                }
            }
            Op::Map {
                domain,
                page,
                pages,
            } => {
                if let Some(d) = dom(domain, &domains) {
                    let gran = 0x1_0000;
                    let _ = smmu.map(
                        d,
                        0x100_0000 + page * gran,
                        0x9000_0000 + page * gran,
                        pages * gran,
                        Perm::ReadWrite,
                    );
                }
            }
            Op::Unmap {
                domain,
                page,
                pages,
            } => {
                if let Some(d) = dom(domain, &domains) {
                    let gran = 0x1_0000;
                    let _ = smmu.unmap(d, 0x100_0000 + page * gran, pages * gran);
                }
            }
            Op::Detach { sid } => {
                let _ = smmu.detach(SIDS[sid]);
            }
            Op::Bypass { sid } => {
                let _ = smmu.set_bypass(SIDS[sid]);
            }
            Op::Abort { sid } => {
                let _ = smmu.set_abort(SIDS[sid]);
            }
            Op::Quarantine { sid } => {
                let _ = smmu.quarantine(SIDS[sid]);
            }
            Op::Release { sid } => {
                let _ = smmu.release(SIDS[sid]);
            }
            Op::Destroy { domain } => {
                if let Some(d) = dom(domain, &domains) {
                    if smmu.destroy_domain(d).is_ok() {
                        domains.retain(|&x| x != d);
                    }
                }
            }
            Op::Protect {
                domain,
                page,
                pages,
            } => {
                if let Some(d) = dom(domain, &domains) {
                    let gran = 0x1_0000;
                    let _ = smmu.protect(d, 0x100_0000 + page * gran, pages * gran, Perm::Read);
                }
            }
            Op::External {
                vtcr: (t0sz, sl0, tg0, ps),
                root,
                vmid,
            } => {
                // Half the time a VTCR_EL2 the driver itself would build
                // (consistent SL0), else the fields as drawn.
                let g = [Granule::K4, Granule::K64, Granule::K16][tg0 as usize];
                let built = Stage2Config::new(
                    g,
                    64 - t0sz.clamp(16, 39) as u32,
                    [32, 36, 40, 42, 44, 48, 52][ps as usize],
                );
                let vtcr = match built {
                    Ok(c) if root & 0x1000 == 0 => c.vtcr(),
                    _ => t0sz | sl0 << 6 | 0x3500 | tg0 << 14 | ps << 16 | 1 << 31,
                };
                let ext = crate::ExternalStage2 {
                    vtcr,
                    root: root & !0x1000,
                    vmid,
                    access_flag_fault_disable: true,
                };
                if let Ok(d) = smmu.create_external_domain(ext) {
                    domains.push(d);
                }
            }
            Op::Group {
                domain,
                first,
                n,
                attach,
            } => {
                let sids: Vec<u32> = (first..(first + n).min(SIDS.len()))
                    .map(|i| SIDS[i])
                    .collect();
                if attach {
                    let _ = smmu.declare_group(&sids);
                    if let Some(d) = dom(domain, &domains) {
                        let _ = smmu.attach_group(d, &sids);
                    }
                } else {
                    let _ = smmu.detach_group(&sids);
                }
            }
            Op::NestedInvalidate {
                domain,
                asid,
                va,
                len,
            } => {
                if let Some(d) = dom(domain, &domains) {
                    let _ = smmu.nested_invalidate_asid(d, asid);
                    let _ = smmu.nested_invalidate_va(d, asid, va, len);
                }
            }
            Op::Invalidate {
                domain,
                page,
                pages,
            } => {
                if let Some(d) = dom(domain, &domains) {
                    let _ = smmu.invalidate(d, 0x100_0000 + page * 0x1_0000, pages * 0x1_0000);
                }
            }
            Op::Reenable => {
                let _ = smmu.disable();
                let _ = smmu.enable();
            }
            Op::Policy { ssid_bits, leaf64 } => {
                smmu.set_cd_table_policy(crate::CdTablePolicy {
                    ssid_bits,
                    leaf: if leaf64 {
                        crate::CdLeaf::K64
                    } else {
                        crate::CdLeaf::K4
                    },
                });
            }
        }
    }
    // The final state: every StreamID of the table, every command.
    let obs = Observer {
        base: model.base().as_ptr() as usize,
        idr,
    };
    let mut out = found.lock().unwrap().clone();
    out.extend(nested_bad);
    for sid in 0..(1u32 << v.sid_bits) {
        obs.check_sid(sid, "final", &mut out);
    }
    for cmd in model.commands() {
        if let Some(e) = command_illegal(cmd, &idr) {
            out.push(format!("command {cmd:x?}: {e}"));
        }
    }
    drop(smmu);
    out.dedup();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// Whatever a hypervisor asks on whatever SMMU, every STE, CD, L1
    /// descriptor and command the driver shows the SMMU is legal, in every
    /// intermediate state of an update (observed at each CFGI and CMD_SYNC).
    #[test]
    fn driver_never_shows_the_smmu_an_illegal_structure(
        v in variant(),
        first in prop::collection::vec(domain_req(), 1..4),
        ops in prop::collection::vec(op(), 1..40),
        low in prop::bool::weighted(0.75),
        strtab in 0usize..3,
    ) {
        let ops: Vec<Op> = first.into_iter().map(Op::Create).chain(ops).collect();
        let found = if low && low_arena().is_some() {
            run::<LowHal>(&v, &ops, strtab)
        } else {
            run::<FakeHal>(&Variant { oas: v.oas.max(5), ..v }, &ops, strtab)
        };
        prop_assert!(found.is_empty(), "{v:?}\n{}", found.join("\n"));
    }
}
