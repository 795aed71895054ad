//! Probe, bring-up and configuration tests on the fake register block.

use super::*;
use crate::fake::{FakeHal, FakeRegs, Trace, start_trace, take_trace};

fn driver(regs: &FakeRegs) -> Smmu<FakeHal> {
    let config = Config {
        timeout_ns: 1_000_000,
        ..Config::default()
    };
    // SAFETY: the fake block is MMIO_SIZE bytes and outlives the driver.
    unsafe { Smmu::new(regs.base(), config) }.expect("probe")
}

#[test]
fn probe_and_allocate_without_touching_the_smmu() {
    let regs = FakeRegs::qemu_like();
    let smmu = driver(&regs);
    assert_eq!(smmu.stream_table_format(), Format::TwoLevel);
    assert_eq!(smmu.sid_limit(), 1 << 16);
    assert_eq!(smmu.mmio.writes(), 0);
    assert_eq!(smmu.state(), State::Disabled);
}

#[test]
fn gbpa_that_never_updates_times_out() {
    let regs = FakeRegs::qemu_like();
    let smmu = driver(&regs);
    assert_eq!(smmu.enable(), Err(Error::Timeout(Wait::GbpaUpdate)));
    assert_eq!(smmu.state(), State::Disabled);
    assert_eq!(smmu.disable(), Err(Error::Timeout(Wait::GbpaUpdate)));
}

#[test]
fn cr0_and_irq_ctrl_that_never_acknowledge_time_out() {
    let regs = FakeRegs::qemu_like();
    let smmu = driver(&regs);
    assert_eq!(
        smmu.write_cr0(CR0::CMDQEN::SET.value),
        Err(Error::Timeout(Wait::Cr0Ack))
    );
    assert_eq!(
        smmu.write_irq_ctrl(1),
        Err(Error::Timeout(Wait::IrqCtrlAck))
    );
    // Writing what the ACK register already holds completes at once.
    assert_eq!(smmu.write_cr0(0), Ok(()));
}

#[test]
fn a_sync_nobody_consumes_times_out() {
    let regs = FakeRegs::qemu_like();
    let smmu = driver(&regs);
    assert_eq!(smmu.submit(&[Command::TlbiNsnhAll]), Err(Error::NotEnabled));
    smmu.set_state(State::CommandsOnly);
    assert_eq!(
        smmu.submit(&[Command::TlbiNsnhAll]),
        Err(Error::Timeout(Wait::CmdSync))
    );
    assert_eq!(smmu.stats().cmdq.prod_writes, 1);
    // Not enabled: dropping must not try to leak or hang.
    smmu.set_state(State::Disabled);
}

#[test]
fn undrivable_smmus_are_typed_errors() {
    for (idr0, idr1, expected) in [
        (0x0D44_1013, 0x0273_0010, Unsupported::NoAarch64Tables), // TTF = AArch32
        (0x0D64_101B, 0x0273_0010, Unsupported::BigEndianOnly),   // TTENDIAN = BE
        (0x0D44_1018, 0x0273_0010, Unsupported::NoTranslationStage),
        (0x0D44_101B, 0x4273_0010, Unsupported::PresetTables),
        (0x0D44_101B, 0x2273_0010, Unsupported::PresetQueues),
    ] {
        let regs = FakeRegs::qemu_like();
        regs.set32(0x00, idr0);
        regs.set32(0x04, idr1);
        // SAFETY: as in `driver`.
        let r = unsafe { Smmu::<FakeHal>::new(regs.base(), Config::default()) };
        assert_eq!(
            r.err(),
            Some(Error::Unsupported(expected)),
            "IDR0 {idr0:#x} IDR1 {idr1:#x}"
        );
    }
}

#[test]
fn a_stage_the_smmu_lacks_is_refused() {
    let regs = FakeRegs::qemu_like();
    regs.set32(0x00, 0x0D44_101A); // S2P = 0
    let smmu = driver(&regs);
    let cfg = crate::stage2::Stage2Config::new(crate::stage2::Granule::K4, 40, 44).unwrap();
    // Auto falls back to stage 1 (src/domain/stage1_tests.rs); a
    // stage-2 domain asked for explicitly is refused.
    let stage = |stage| crate::domain::DomainOptions {
        stage,
        ..crate::domain::DomainOptions::new(cfg)
    };
    assert_eq!(
        smmu.create_domain(stage(crate::domain::StagePolicy::Stage2)),
        Err(Error::Unsupported(Unsupported::Stage2))
    );
    drop(smmu);
    regs.set32(0x00, 0x0D44_1019); // S1P = 0
    let smmu = driver(&regs);
    assert_eq!(
        smmu.create_domain(stage(crate::domain::StagePolicy::Stage1)),
        Err(Error::Unsupported(Unsupported::Stage1))
    );
}

#[test]
fn service_failure_disables_and_msi_aborts_are_counted() {
    let regs = FakeRegs::qemu_like();
    let smmu = driver(&regs);
    // MSI write aborts (bits 4..7) and a PRI queue abort (bit 3): counted
    // and acknowledged, nothing else.
    regs.set32(0x60, 0xF8);
    let report = smmu.handle_gerror().unwrap();
    assert!(report.msi_abort && !report.service_failure);
    assert_eq!(regs.get32(0x64), 0xF8); // GERRORN now matches GERROR
    assert_eq!(smmu.stats().msi_aborts, 1);
    // SFM_ERR: the SMMU is stopped and the caller told.
    smmu.set_state(State::Enabled);
    regs.set32(0x20, 0xD); // CR0 as the SMMU had it
    regs.set32(0x60, 0xF8 | 1 << 8);
    assert_eq!(smmu.handle_gerror(), Err(Error::ServiceFailure));
    assert_eq!(smmu.state(), State::Failed);
    assert_eq!(regs.get32(0x20), 0); // CR0 cleared
    assert_eq!(regs.get32(0x64), 0x1F8);
    assert_eq!(smmu.submit(&[Command::TlbiNsnhAll]), Err(Error::NotEnabled));
    // A failed SMMU that never acknowledges: dropping it leaks its memory
    // rather than hanging or freeing what it may still read.
}

/// A QEMU-like SMMU that answers (ACKs, consumes commands), with
/// `idr0_extra` bits set in IDR0, and garbage in every IRQ_CFG register
/// as a previous owner might leave it.
fn responsive(idr0_extra: u32) -> FakeRegs {
    let regs = FakeRegs::qemu_like();
    regs.set32(0x00, 0x0D44_101B | idr0_extra);
    for off in [
        0x68, 0x6C, 0x70, 0x74, 0xB0, 0xB4, 0xB8, 0xBC, 0xD0, 0xD4, 0xD8, 0xDC,
    ] {
        regs.set32(off, 0xDEAD_BEEC);
    }
    regs.respond();
    regs
}

fn cr0_writes(t: &[Trace]) -> Vec<u64> {
    t.iter()
        .filter_map(|e| match *e {
            Trace::Write {
                offset: 0x20,
                value,
            } => Some(value),
            _ => None,
        })
        .collect()
}

const ATS: u32 = 1 << 10;
const PRI: u32 = 1 << 16;
const MSI: u32 = 1 << 13;
const ATSCHK: u64 = 1 << 4;

/// Issue 8 item 1: with IDR0.ATS, every CR0 write of `enable` sets
/// ATSCHK; without ATS none does.
#[test]
fn atschk_is_set_in_every_cr0_write_when_the_smmu_has_ats() {
    let regs = responsive(ATS);
    let smmu = driver(&regs);
    start_trace();
    smmu.enable().unwrap();
    let cr0 = cr0_writes(&take_trace());
    assert!(cr0.len() >= 3, "{cr0:x?}");
    assert!(cr0.iter().all(|v| v & ATSCHK != 0), "CR0 writes {cr0:x?}");
    assert_eq!(regs.get32(0x24) & 1, 1, "SMMUEN acknowledged");
    // EATS stays 0 in what the driver writes (STE dword 1 bits 29:28).
    assert_eq!(Ste::bypass().0[1] & (3 << 28), 0);
    let regs = responsive(0);
    let smmu = driver(&regs);
    start_trace();
    smmu.enable().unwrap();
    assert!(cr0_writes(&take_trace()).iter().all(|v| v & ATSCHK == 0));
}

/// Issue 8 item 2: every IRQ_CFG0/1/2 register is written (0 = wired)
/// after IRQ_CTRL = 0 and before IRQ_CTRL enables interrupts.
#[test]
fn irq_cfg_registers_are_cleared_before_interrupts_are_enabled() {
    let regs = responsive(PRI);
    let smmu = driver(&regs);
    start_trace();
    smmu.enable().unwrap();
    let t = take_trace();
    for off in [
        0x68, 0x6C, 0x70, 0x74, 0xB0, 0xB4, 0xB8, 0xBC, 0xD0, 0xD4, 0xD8, 0xDC,
    ] {
        assert_eq!(
            regs.get32(off),
            0,
            "IRQ_CFG register at {off:#x} left as found"
        );
    }
    let irq_ctrl: Vec<(usize, u64)> = t
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match *e {
            Trace::Write {
                offset: 0x50,
                value,
            } => Some((i, value)),
            _ => None,
        })
        .collect();
    let disabled = irq_ctrl.iter().find(|w| w.1 == 0).expect("IRQ_CTRL = 0").0;
    let enabled = irq_ctrl
        .iter()
        .find(|w| w.1 != 0)
        .expect("IRQ_CTRL enabled")
        .0;
    for off in [0x68usize, 0x70, 0x74, 0xB0, 0xB8, 0xBC, 0xD0] {
        let w = t
            .iter()
            .position(|e| matches!(*e, Trace::Write { offset, .. } if offset == off))
            .unwrap_or_else(|| panic!("{off:#x} never written"));
        assert!(
            disabled < w && w < enabled,
            "{off:#x} written at {w}, IRQ_CTRL 0 at {disabled}, on at {enabled}"
        );
    }
}

/// Issue 8 item 2: MSI targets from `Config` reach the registers, and
/// are refused on an SMMU without MSI.
#[test]
fn msi_configuration_is_programmed() {
    let msi = MsiConfig {
        gerror: Some(MsiTarget::device(0x0808_0040, 0x77)),
        eventq: Some(MsiTarget {
            doorbell: 0x1_2345_6780,
            data: 0x1234,
            memattr: 0xF,
            sh: 3,
        }),
    };
    let config = Config {
        timeout_ns: 1_000_000,
        msi: Some(msi),
        ..Config::default()
    };
    let regs = responsive(0);
    // SAFETY: as in `driver`.
    let r = unsafe { Smmu::<FakeHal>::new(regs.base(), config) };
    assert_eq!(r.err(), Some(Error::Unsupported(Unsupported::Msi)));
    let regs = responsive(MSI);
    // SAFETY: as in `driver`.
    let smmu = unsafe { Smmu::<FakeHal>::new(regs.base(), config) }.unwrap();
    smmu.enable().unwrap();
    assert_eq!(regs.get64(0x68), 0x0808_0040);
    assert_eq!(regs.get32(0x70), 0x77);
    assert_eq!(regs.get32(0x74), 1);
    assert_eq!(regs.get64(0xB0), 0x1_2345_6780);
    assert_eq!(regs.get32(0xB8), 0x1234);
    assert_eq!(regs.get32(0xBC), 0xF | 3 << 4);
    for (t, e) in [
        (
            MsiTarget::device(0x1002, 0),
            Error::Misaligned {
                addr: 0x1002,
                align: 4,
            },
        ),
        (
            MsiTarget::device(1 << 48, 0), // beyond OAS (48 bits)
            Error::Unsupported(Unsupported::AddressSize),
        ),
        (
            MsiTarget {
                sh: 1,
                ..MsiTarget::device(0x1000, 0)
            },
            Error::Invalid(Invalid::Field {
                field: Field::MsiSh,
                value: 1,
            }),
        ),
    ] {
        let config = Config {
            msi: Some(MsiConfig {
                gerror: None,
                eventq: Some(t),
            }),
            ..config
        };
        // SAFETY: as in `driver`.
        let r = unsafe { Smmu::<FakeHal>::new(regs.base(), config) };
        assert_eq!(r.err(), Some(e));
    }
}

/// Issue 8 item 8: an SMMU with queues smaller than the defaults gets
/// queues of its own maximum size.
#[test]
fn small_queues_are_clamped() {
    let regs = FakeRegs::qemu_like();
    // CMDQS [25:21] = 5, EVENTQS [20:16] = 4, SIDSIZE 16.
    regs.set32(0x04, 5 << 21 | 4 << 16 | 16);
    let smmu = driver(&regs);
    assert_eq!(smmu.cmdq.lock().ring().log2(), 5);
    assert_eq!(smmu.evtq.lock().ring().log2(), 4);
}

/// Issue 8 item 6: firmware's coherency overrides IDR0.COHACC; a
/// non-coherent SMMU gets Non-cacheable, Outer Shareable table and
/// queue attributes.
#[test]
fn firmware_coherency_overrides_cohacc() {
    let regs = responsive(0);
    let config = Config {
        timeout_ns: 1_000_000,
        firmware_coherent: Some(false),
        ..Config::default()
    };
    // SAFETY: as in `driver`.
    let smmu = unsafe { Smmu::<FakeHal>::new(regs.base(), config) }.unwrap();
    assert!(!smmu.features().coherent);
    smmu.enable().unwrap();
    // CR1: TABLE_SH [11:10] = 2, QUEUE_SH [5:4] = 2, all cacheability 0.
    assert_eq!(regs.get32(0x28), 2 << 10 | 2 << 4);
    let regs = responsive(0);
    let smmu = driver(&regs);
    assert!(smmu.features().coherent);
}

#[test]
fn bad_hal_memory_is_refused() {
    let regs = FakeRegs::qemu_like();
    crate::fake::FakeHal::misalign_next(true);
    // SAFETY: as in `driver`.
    let r = unsafe { Smmu::<FakeHal>::new(regs.base(), Config::default()) };
    crate::fake::FakeHal::misalign_next(false);
    assert!(matches!(r, Err(Error::BadHalMemory { .. })), "{r:?}");
}

/// The driver object stays small: hypervisors keep it in a static or move
/// it by value, and an unoptimised build copies it on the stack at every
/// move (an `Smmu` that grew to several KiB overflowed the image's 64 KiB
/// stack in the on-target `smmu` suite, which holds two at once).
#[test]
fn the_driver_object_is_small() {
    let size = core::mem::size_of::<Smmu<FakeHal>>();
    assert!(size <= 2048, "Smmu is {size} bytes");
    eprintln!("size_of::<Smmu<FakeHal>>() = {size}");
}
