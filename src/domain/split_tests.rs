//! Block splits of driver-owned tables without memory: a range whose
//! unmap or protect needs several splits either gets every table first or
//! changes nothing (no descriptor, no command).

use super::*;
use crate::fake::FakeHal;

const M: u64 = 1 << 20;
const G: u64 = 1 << 30;

/// An enabled driver on QEMU virt's ID registers with IDR3.BBML = `bbml`,
/// and one 4K, 40-bit stage-2 domain (`cpu_bbml2`: the CPU allows splits
/// without break too): the domain tests' own setup.
use crate::domain::tests::with_bbml as setup;

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
