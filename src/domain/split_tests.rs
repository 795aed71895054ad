//! Block splits of driver-owned tables without memory: a range whose
//! unmap or protect needs several splits either gets every table first or
//! changes nothing (no descriptor, no command).

use super::*;
use crate::domain::DomainOptions;
use crate::fake::{FakeHal, FakeRegs};
use crate::smmu::Config;
use crate::stage2::{Granule, Stage2Config};

const M: u64 = 1 << 20;
const G: u64 = 1 << 30;

/// An enabled driver on QEMU virt's ID registers with IDR3.BBML = `bbml`,
/// and one 4K, 40-bit stage-2 domain (`cpu_bbml2`: the CPU allows
/// splits without break too).
fn setup(bbml: u32, cpu_bbml2: bool) -> (Box<FakeRegs>, Smmu<FakeHal>, DomainId) {
    let regs = Box::new(FakeRegs::new());
    regs.set32(0x00, 0x0D44_101B);
    regs.set32(0x04, 0x0273_0010);
    regs.set32(0x0C, 0x0000_1404 | bbml << 11);
    // OAS 48 bits: host heap addresses stand in for physical ones.
    regs.set32(0x14, 0x0000_0075);
    regs.set32(0x1C, 1);
    regs.respond();
    let config = Config {
        timeout_ns: 1_000_000,
        ..Config::default()
    };
    // SAFETY: the block is MMIO_SIZE bytes and outlives the driver (each
    // test drops the driver first).
    let smmu = unsafe { Smmu::<FakeHal>::new(regs.base(), config) }.unwrap();
    smmu.enable().unwrap();
    let cfg = Stage2Config::new(Granule::K4, 40, 48).unwrap();
    let id = smmu
        .create_domain(DomainOptions {
            cpu_bbml2,
            ..DomainOptions::new(cfg)
        })
        .unwrap();
    (regs, smmu, id)
}

/// Unmap and protect ranges needing two splits (two 2M blocks partly
/// covered; a 1G block split down to pages), with the HAL failing the
/// second table allocation: `NoMemory`, tables byte-identical, no command,
/// no CPU hook call. With memory the same call succeeds.
#[test]
fn a_split_without_memory_changes_nothing() {
    // (map ipa, map len, edit ipa, edit len)
    let cases = [
        (0x4000_0000, 4 * M, 0x4010_0000, 2 * M),
        (G, G, G + 2 * M + 0x1000, 0x1000),
    ];
    for (bbml, cpu_bbml2) in [(0, false), (2, true)] {
        for (map_ipa, map_len, ipa, len) in cases {
            for protect in [false, true] {
                let what = (bbml, map_ipa, protect);
                let (regs, smmu, id) = setup(bbml, cpu_bbml2);
                smmu.map(id, map_ipa, 0x8000_0000 + map_ipa, map_len, Perm::ReadWrite)
                    .unwrap();
                let before = smmu.stage2_snapshot(id).unwrap();
                let commands = regs.commands().len();
                let mut hook_calls = 0;
                FakeHal::fail_after(Some(1));
                let r = if protect {
                    smmu.protect_with(id, ipa, len, Perm::Read, &mut |_| hook_calls += 1)
                } else {
                    smmu.unmap_with(id, ipa, len, &mut |_| hook_calls += 1)
                };
                FakeHal::fail_after(None);
                assert_eq!(r, Err(Error::NoMemory), "{what:x?}");
                assert!(
                    smmu.stage2_snapshot(id).unwrap() == before,
                    "{what:x?}: tables changed"
                );
                assert_eq!(regs.commands().len(), commands, "{what:x?}: commands");
                assert_eq!(hook_calls, 0, "{what:x?}: CPU hook");
                let r = if protect {
                    smmu.protect(id, ipa, len, Perm::Read)
                } else {
                    smmu.unmap(id, ipa, len)
                };
                assert_eq!(r, Ok(()), "{what:x?}");
                let t = smmu.translate(id, ipa).unwrap();
                assert_eq!(
                    t.map(|t| t.perm),
                    protect.then_some(Perm::Read),
                    "{what:x?}"
                );
                drop(smmu);
            }
        }
    }
}
