//! No heap allocation on the command-queue path, in `service` or in the
//! interrupt handlers' calls: counted by the unit-test binary's global
//! allocator (`crate::fake::allocations`, per thread, the register model's
//! own work left out).

use crate::expert::Command;
use crate::fake::{FakeHal, allocations};
use crate::testing::SmmuModel;
use crate::{CmdqError, Config, Error, Smmu};

fn enabled(model: &SmmuModel) -> Smmu<FakeHal> {
    let config = Config {
        timeout_ns: 1_000_000,
        ..Config::default()
    };
    // SAFETY: the model outlives the driver (the tests drop it last) and
    // nothing else drives it.
    let smmu = unsafe { Smmu::<FakeHal>::new(model.base(), config) }.expect("probe");
    smmu.enable().expect("enable");
    smmu
}

const BATCH: [Command; 3] = [
    Command::TlbiNsnhAll,
    Command::CfgiSte { sid: 8, leaf: true },
    Command::TlbiS12Vmall { vmid: 1 },
];

#[test]
fn cmdq_submit_allocates_nothing() {
    let model = SmmuModel::default();
    let smmu = enabled(&model);
    let consumed = model.commands().len();
    let before = allocations();
    for _ in 0..200 {
        smmu.submit(&BATCH).unwrap();
        smmu.submit_batch(&BATCH, false).unwrap();
        smmu.submit(&[]).unwrap(); // a lone CMD_SYNC
    }
    // More commands than the queue holds (256): waits for space.
    let long = [Command::TlbiNsnhAll; 300];
    smmu.submit(&long).unwrap();
    let allocated = allocations() - before;
    // The model consumed every command and SYNC (counted after the window).
    assert_eq!(
        model.commands().len() - consumed,
        200 * (4 + 3 + 1) + 300 + 1
    );
    assert_eq!(allocated, 0, "allocations on the command-queue path");
}

#[test]
fn command_error_recovery_allocates_nothing() {
    let model = SmmuModel::default();
    let smmu = enabled(&model);
    model.fault_commands(|cmd| (cmd[0] & 0xFF == 0x30).then_some(1));
    let before = allocations();
    let r = smmu.submit(&[
        Command::TlbiNsnhAll,
        Command::CfgiSte { sid: 8, leaf: true },
    ]);
    let allocated = allocations() - before;
    assert!(matches!(
        r,
        Err(Error::CommandError {
            error: CmdqError::Illegal,
            opcode: 0x30,
            ..
        })
    ));
    assert_eq!(smmu.stats().cmdq.errors, 1);
    assert_eq!(allocated, 0, "allocations recovering a command error");
}

#[test]
fn service_and_interrupt_paths_allocate_nothing() {
    let model = SmmuModel::default();
    let smmu = enabled(&model);
    for i in 0..40u64 {
        assert!(model.inject_event(SmmuModel::translation_fault(8, i << 12, true)));
    }
    model.raise_gerror(1 << 2); // EVENTQ_ABT_ERR
    let mut events = 0u32;
    let before = allocations();
    let (report, drained) = smmu.service(|_| events += 1).unwrap();
    let drained_again = smmu.drain_events(|_| events += 1);
    let second = smmu.handle_gerror().unwrap();
    let _ = smmu.stats();
    let allocated = allocations() - before;
    assert!(report.eventq_abort);
    assert_eq!(drained.map(|d| d.records), Some(40));
    assert_eq!(drained_again.map(|d| d.records), Some(0));
    assert_eq!(second.active, 0);
    assert_eq!(events, 40);
    assert_eq!(allocated, 0, "allocations in service/drain/handle_gerror");
}

#[test]
fn the_counter_sees_allocations() {
    let before = allocations();
    let v: alloc::vec::Vec<u64> = alloc::vec![1, 2, 3];
    assert_eq!(v.len(), 3);
    assert!(allocations() > before);
}
