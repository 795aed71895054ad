//! Host tests of `Smmu::service` (events handed out in chunks, with the
//! event-queue lock released) and of quarantine.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::domain::{DomainId, DomainOptions};
use crate::fake::{FakeHal, FakeRegs};
use crate::stage2::{Granule, Perm, Stage2Config};
use crate::ste::Ste;

const EVENTQ_PROD: usize = 0x1_00A8;
const EVENTQ_CONS: usize = 0x1_00AC;
/// F_TRANSLATION.
const F_TRANSLATION: u64 = 0x10;

/// An enabled driver on a register block that answers like QEMU virt's
/// SMMU (OAS 48 bits: host heap addresses stand in for physical ones),
/// with an event queue of 2^`eventq_log2` records.
fn enabled(eventq_log2: u32) -> (Box<FakeRegs>, Smmu<FakeHal>) {
    let regs = Box::new(FakeRegs::qemu_like());
    regs.respond();
    let config = Config {
        timeout_ns: 1_000_000,
        eventq_log2,
        ..Config::default()
    };
    // SAFETY: the block is MMIO_SIZE bytes and outlives the driver (each
    // test drops the driver first).
    let smmu = unsafe { Smmu::<FakeHal>::new(regs.base(), config) }.unwrap();
    smmu.enable().unwrap();
    (regs, smmu)
}

fn domain(smmu: &Smmu<FakeHal>) -> DomainId {
    let cfg = Stage2Config::new(Granule::K4, 40, 48).unwrap();
    let id = smmu.create_domain(DomainOptions::new(cfg)).unwrap();
    smmu.map(id, 0x4000_0000, 0x8000_0000, 0x1000, Perm::ReadWrite)
        .unwrap();
    id
}

/// Plays the SMMU: appends `n` F_TRANSLATION records for `sid` (input
/// address = a running number) and moves EVENTQ_PROD.
fn record_faults(regs: &FakeRegs, smmu: &Smmu<FakeHal>, sid: u32, n: u32, first_addr: u64) {
    let q = smmu.evtq.lock();
    let ring = q.ring();
    let mut prod = regs.get32(EVENTQ_PROD) & ring.wrap_index_mask();
    for k in 0..n {
        q.inject(
            prod,
            &[
                F_TRANSLATION | u64::from(sid) << 32,
                0,
                first_addr + u64::from(k),
                0,
            ],
        );
        prod = ring.advance(prod, 1);
    }
    regs.set32(EVENTQ_PROD, prod);
}

/// Runs `f` on another thread and fails (rather than hangs) if it has not
/// finished after `secs` seconds.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(_) => panic!("{what}: still running after {secs} s (deadlock)"),
    }
}

/// Issue 11 part 3: the `service` callback may call methods that take the
/// stream table and command queue locks (`detach`, `quarantine`), while
/// another CPU takes them in the documented order (stream table -> command
/// queue -> event queue). With the event queue lock held across the
/// callback (the code before this change), the callback's `detach` waits
/// for the stream table that the other CPU holds while it waits for the
/// event queue: a deadlock, and this test times out.
#[test]
fn a_service_callback_that_detaches_and_quarantines_does_not_deadlock() {
    let (regs, smmu) = enabled(11);
    let id = domain(&smmu);
    smmu.attach(id, 0x10).unwrap();
    smmu.attach(id, 0x18).unwrap();
    record_faults(&regs, &smmu, 0x10, 3, 0);
    record_faults(&regs, &smmu, 0x18, 3, 0);
    let smmu = Arc::new(smmu);
    let s = smmu.clone();
    let (seen, results) = within(20, "service with a detaching callback", move || {
        let mut seen = 0;
        let mut results = Vec::new();
        let mut other = None;
        s.service(|event| {
            seen += 1;
            if other.is_none() {
                // Another CPU reconfigures the SMMU meanwhile (it takes
                // every lock, in the documented order).
                let s2 = s.clone();
                let (tx, rx) = mpsc::channel();
                other = Some(std::thread::spawn(move || {
                    let r = s2.disable().and_then(|()| s2.enable());
                    let _ = tx.send(());
                    r
                }));
                // Let it run; it may finish or block.
                let _ = rx.recv_timeout(Duration::from_secs(1));
            }
            if s.domain_of(event.sid).is_some() {
                if event.sid == 0x10 {
                    results.push(s.detach(event.sid).map(|()| Quarantine::Applied));
                } else {
                    results.push(s.quarantine(event.sid));
                }
            }
        })
        .unwrap();
        let other = other.unwrap().join().unwrap();
        assert_eq!(other, Ok(()));
        (seen, results)
    });
    assert_eq!(seen, 6);
    // One detach, then quarantines of 0x18 (it stays attached: every
    // further record of it quarantines again, idempotently).
    assert_eq!(results[0], Ok(Quarantine::Applied));
    assert!(
        results.iter().all(|r| *r == Ok(Quarantine::Applied)),
        "{results:?}"
    );
    assert!(smmu.ste(0x10).unwrap().config().is_abort());
    assert!(smmu.ste(0x18).unwrap().config().is_abort());
    assert!(smmu.is_quarantined(0x18) && !smmu.is_quarantined(0x10));
    drop(Arc::try_unwrap(smmu).unwrap());
    drop(regs);
}

/// EVENTQ_CONS writes in a trace (one per chunk taken out of the queue).
fn cons_writes(t: &[crate::fake::Trace]) -> usize {
    t.iter()
        .filter(|e| {
            matches!(
                e,
                crate::fake::Trace::Write {
                    offset: EVENTQ_CONS,
                    ..
                }
            )
        })
        .count()
}

/// Issue 11 part 3: records are taken out in chunks of EVENT_CHUNK, each
/// handed to the callback with the event queue unlocked, in order.
#[test]
fn events_are_handed_out_in_chunks_with_the_queue_unlocked() {
    // On another thread, so a callback that deadlocks fails the test.
    within(
        20,
        "events_are_handed_out_in_chunks_with_the_queue_unlocked",
        events_are_handed_out_in_chunks_with_the_queue_unlocked_body,
    );
}

fn events_are_handed_out_in_chunks_with_the_queue_unlocked_body() {
    let (regs, smmu) = enabled(11);
    record_faults(&regs, &smmu, 0x10, 40, 0x1000);
    crate::fake::start_trace();
    let mut addrs = Vec::new();
    let mut locked_in_callback = 0;
    let (_, drained) = smmu
        .service(|e| {
            addrs.push(e.input_addr.unwrap());
            if smmu.evtq.try_lock().is_none() {
                locked_in_callback += 1;
            }
        })
        .unwrap();
    let t = crate::fake::take_trace();
    assert_eq!(
        locked_in_callback, 0,
        "callback ran with the event queue locked"
    );
    assert_eq!(addrs, (0x1000..0x1000 + 40).collect::<Vec<u64>>());
    assert_eq!(
        drained,
        Some(Drained {
            records: 40,
            overflow: false,
            left_in_queue: false
        })
    );
    // 16 + 16 + 8.
    assert_eq!(EVENT_CHUNK, 16);
    assert_eq!(cons_writes(&t), 3);
    assert_eq!(regs.get32(EVENTQ_CONS), 40);
    assert_eq!(smmu.stats().events, 40);
    drop(smmu);
}

/// Issue 11 part 3: one call hands out at most one queue's worth of
/// records; records the SMMU writes meanwhile stay for the next call, and
/// an overflow is reported once, by the call that sees it.
#[test]
fn one_call_takes_at_most_one_queue_worth_and_overflow_stays_detected() {
    // On another thread, so a callback that deadlocks fails the test.
    within(
        20,
        "one_call_takes_at_most_one_queue_worth_and_overflow_stays_detected",
        one_call_takes_at_most_one_queue_worth_and_overflow_stays_detected_body,
    );
}

fn one_call_takes_at_most_one_queue_worth_and_overflow_stays_detected_body() {
    let (regs, smmu) = enabled(5); // 32 records
    record_faults(&regs, &smmu, 0x10, 32, 0); // full
    regs.set32(EVENTQ_PROD, regs.get32(EVENTQ_PROD) | 1 << 31); // OVFLG
    let mut seen = 0u64;
    let (_, first) = smmu
        .service(|e| {
            seen += 1;
            if seen == 1 {
                // The SMMU keeps writing: 16 slots are free again (the
                // first chunk was handed back before this callback ran).
                let ovflg = regs.get32(EVENTQ_PROD) & 1 << 31;
                record_faults(&regs, &smmu, 0x10, 16, 32);
                regs.set32(EVENTQ_PROD, regs.get32(EVENTQ_PROD) | ovflg);
            }
            assert_eq!(e.input_addr, Some(seen - 1));
        })
        .unwrap();
    assert_eq!(
        first,
        Some(Drained {
            records: 32,
            overflow: true,
            left_in_queue: true
        })
    );
    // The rest is still in the queue, for the next call.
    let (_, second) = smmu
        .service(|e| {
            seen += 1;
            assert_eq!(e.input_addr, Some(seen - 1));
        })
        .unwrap();
    assert_eq!(
        second,
        Some(Drained {
            records: 16,
            overflow: false,
            left_in_queue: false
        })
    );
    assert_eq!(seen, 48);
    assert_eq!(smmu.stats().eventq_overflows, 1);
    assert_eq!(regs.get32(EVENTQ_CONS) >> 31, 1, "OVACKFLG acknowledged");
    drop(smmu);
}

/// A callback that calls `service` again is turned away (no deadlock, no
/// record handed out twice).
#[test]
fn a_nested_service_call_is_turned_away() {
    // On another thread, so a callback that deadlocks fails the test.
    within(
        20,
        "a_nested_service_call_is_turned_away",
        a_nested_service_call_is_turned_away_body,
    );
}

fn a_nested_service_call_is_turned_away_body() {
    let (regs, smmu) = enabled(11);
    record_faults(&regs, &smmu, 0x10, 20, 0);
    let mut outer = 0;
    let mut inner = 0;
    smmu.service(|_| {
        outer += 1;
        let (_, d) = smmu.service(|_| inner += 1).unwrap();
        assert_eq!(d, None);
    })
    .unwrap();
    assert_eq!((outer, inner), (20, 0));
    drop(smmu);
}

/// A caller turned away while another is draining must not lose its
/// records. The window: the drainer has looked at the queue for the last
/// time (empty) but not yet let go; a fault arrives and the eventq
/// interrupt's `drain_events` is turned away (`None`, "the drainer goes
/// round again"). On the code before this test the drainer did not go
/// round: the record stayed in the queue, with no interrupt left to
/// fetch it.
#[test]
fn a_caller_turned_away_just_before_the_drainer_lets_go_loses_nothing() {
    let (regs, smmu) = enabled(11);
    let (regs, smmu) = (Arc::new(regs), Arc::new(smmu));
    record_faults(&regs, &smmu, 0x10, 3, 0);
    let turned_away = Arc::new(std::sync::Mutex::new(None));
    {
        let (regs, smmu, turned_away) = (regs.clone(), smmu.clone(), turned_away.clone());
        super::service::BEFORE_DRAIN_RELEASE.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                record_faults(&regs, &smmu, 0x10, 1, 0x100);
                *turned_away.lock().unwrap() = Some(smmu.drain_events(|_| {}).is_none());
            }))
        });
    }
    let mut addrs = Vec::new();
    let drained = smmu.drain_events(|e| addrs.push(e.raw[2])).unwrap();
    assert_eq!(
        *turned_away.lock().unwrap(),
        Some(true),
        "the second caller was not turned away"
    );
    assert_eq!(
        addrs,
        [0, 1, 2, 0x100],
        "the turned-away caller's record was left in the queue"
    );
    assert_eq!(drained.records, 4);
    assert_eq!(regs.get32(EVENTQ_CONS), regs.get32(EVENTQ_PROD));
}

const CFGI_STE: u64 = 0x03;
const CMD_SYNC: u64 = 0x46;

/// Issue 11 part 3: a quarantined StreamID stays aborted whatever is
/// tried, and `release` restores its STE byte for byte.
#[test]
fn quarantine_survives_attach_and_release_restores_the_ste() {
    let (regs, smmu) = enabled(11);
    let id = domain(&smmu);
    let other = domain(&smmu);
    smmu.attach(id, 0x18).unwrap();
    smmu.set_bypass(0x20).unwrap();
    let before_18 = smmu.ste(0x18).unwrap();
    let before_20 = smmu.ste(0x20).unwrap();

    let n = regs.commands().len();
    assert_eq!(smmu.quarantine(0x18), Ok(Quarantine::Applied));
    let cmds = regs.commands()[n..].to_vec();
    assert!(smmu.ste(0x18).unwrap().config().is_abort());
    assert!(
        cmds.iter()
            .any(|c| c[0] & 0xFF == CFGI_STE && (c[0] >> 32) as u32 == 0x18),
        "no CFGI_STE: {cmds:x?}"
    );
    assert_eq!(cmds.last().map(|c| c[0] & 0xFF), Some(CMD_SYNC));
    assert_eq!(smmu.quarantine(0x20), Ok(Quarantine::Applied));
    assert!(smmu.ste(0x20).unwrap().config().is_abort());
    // Idempotent.
    assert_eq!(smmu.quarantine(0x20), Ok(Quarantine::Applied));

    let table = smmu.stream_table_snapshot();
    let refused = [
        smmu.attach(other, 0x20),
        smmu.set_bypass(0x20),
        smmu.write_ste(0x20, &Ste::bypass()),
        smmu.write_ste(0x18, &before_18),
        smmu.attach_group(other, &[0x20]),
        smmu.batch().attach(other, 0x20).commit(&mut |_| {}),
    ];
    for r in refused {
        assert!(
            matches!(r, Err(Error::Quarantined(0x20 | 0x18))),
            "not refused: {r:?}"
        );
    }
    assert_eq!(smmu.stream_table_snapshot(), table, "an STE changed");
    // A group call refuses before attaching anyone (no attach + rollback).
    let n = regs.commands().len();
    assert_eq!(
        smmu.attach_group(other, &[0x30, 0x20]),
        Err(Error::Quarantined(0x20))
    );
    assert_eq!(
        regs.commands().len(),
        n,
        "commands issued by a refused call"
    );
    assert_eq!(smmu.domain_of(0x30), None);
    // Still attached in the books: the domain cannot be destroyed under it.
    assert_eq!(smmu.domain_of(0x18), Some(id));
    assert_eq!(smmu.destroy_domain(id), Err(Error::DomainBusy(id)));

    smmu.release(0x18).unwrap();
    smmu.release(0x20).unwrap();
    assert_eq!(smmu.ste(0x18).unwrap().0, before_18.0);
    assert_eq!(smmu.ste(0x20).unwrap().0, before_20.0);
    assert_eq!(smmu.release(0x20), Err(Error::NotQuarantined(0x20)));
    // Normal service again.
    smmu.detach(0x18).unwrap();
    smmu.attach(other, 0x18).unwrap();
    drop(smmu);
}

/// Issue 11 part 3: detaching a quarantined StreamID succeeds (it lets the
/// domain go) but leaves it aborted; `release` then restores abort.
#[test]
fn detach_of_a_quarantined_stream_keeps_it_aborted() {
    let (regs, smmu) = enabled(11);
    let id = domain(&smmu);
    smmu.attach(id, 0x18).unwrap();
    smmu.quarantine(0x18).unwrap();
    let table = smmu.stream_table_snapshot();
    smmu.detach(0x18).unwrap();
    assert_eq!(smmu.stream_table_snapshot(), table);
    assert_eq!(smmu.domain_of(0x18), None);
    smmu.destroy_domain(id).unwrap();
    let id = domain(&smmu);
    assert_eq!(smmu.attach(id, 0x18), Err(Error::Quarantined(0x18)));
    smmu.release(0x18).unwrap();
    assert_eq!(smmu.ste(0x18).unwrap().0, Ste::abort().0);
    smmu.attach(id, 0x18).unwrap();
    drop(smmu);
    drop(regs);
}

/// Issue 11 part 3: from interrupt context (the interrupted code holds the
/// stream table lock) `quarantine` does not wait: the StreamID is pending,
/// counts as quarantined at once, and is aborted by the next lock holder.
#[test]
fn quarantine_with_the_stream_table_held_is_pending_then_applied() {
    let (regs, smmu) = enabled(11);
    let id = domain(&smmu);
    smmu.attach(id, 0x18).unwrap();
    let before = smmu.ste(0x18).unwrap();
    let smmu = Arc::new(smmu);
    let s = smmu.clone();
    let held = smmu.strtab.lock();
    let r = within(5, "quarantine with the stream table held", move || {
        s.quarantine(0x18)
    });
    assert_eq!(r, Ok(Quarantine::Pending));
    drop(held);
    assert_eq!(
        smmu.ste(0x18).unwrap().0,
        before.0,
        "applied without the locks"
    );
    // The next STE writer (of any StreamID) applies it.
    smmu.set_abort(0x30).unwrap();
    assert!(smmu.ste(0x18).unwrap().config().is_abort());
    assert!(smmu.is_quarantined(0x18));
    smmu.release(0x18).unwrap();
    assert_eq!(smmu.ste(0x18).unwrap().0, before.0);

    // A pending StreamID is refused at once, and `is_quarantined` only
    // says so once the abort is in place.
    let held = smmu.cmdq.lock();
    assert_eq!(smmu.quarantine(0x18), Ok(Quarantine::Pending));
    drop(held);
    assert_eq!(smmu.write_ste(0x18, &before), Err(Error::Quarantined(0x18)));
    assert!(smmu.ste(0x18).unwrap().config().is_abort());
    smmu.release(0x18).unwrap();
    let held = smmu.cmdq.lock();
    assert_eq!(smmu.quarantine(0x18), Ok(Quarantine::Pending));
    drop(held);
    assert!(smmu.is_quarantined(0x18));
    assert!(smmu.ste(0x18).unwrap().config().is_abort());
    smmu.release(0x18).unwrap();
    assert_eq!(smmu.ste(0x18).unwrap().0, before.0);

    // With the command queue held instead, `service` applies it.
    let held = smmu.cmdq.lock();
    assert_eq!(smmu.quarantine(0x18), Ok(Quarantine::Pending));
    drop(held);
    assert_eq!(
        smmu.ste(0x18).unwrap().0,
        before.0,
        "applied without commands"
    );
    smmu.service(|_| ()).unwrap();
    assert!(smmu.ste(0x18).unwrap().config().is_abort());
    drop(Arc::try_unwrap(smmu).unwrap());
    drop(regs);
}

/// A batch that fails part-way does not change what `release` restores
/// for a quarantined StreamID it detached (its books still say attached).
#[test]
fn a_failed_batch_does_not_change_what_release_restores() {
    let (regs, smmu) = enabled(11);
    let id = domain(&smmu);
    smmu.attach(id, 0x18).unwrap();
    smmu.attach(id, 0x10).unwrap();
    let before = smmu.ste(0x18).unwrap();
    smmu.quarantine(0x18).unwrap();
    // The SMMU rejects the next CFGI_STE (CERROR_ILL): the batch's write
    // of 0x10 fails.
    let mut armed = true;
    regs.fault_commands(Box::new(move |c| {
        (armed && c[0] & 0xFF == CFGI_STE).then(|| {
            armed = false;
            1
        })
    }));
    let r = smmu.batch().detach(0x18).detach(0x10).commit(&mut |_| {});
    assert!(matches!(r, Err(Error::CommandError { .. })), "{r:?}");
    assert_eq!(smmu.domain_of(0x18), Some(id));
    smmu.release(0x18).unwrap();
    assert_eq!(smmu.ste(0x18).unwrap().0, before.0);
    drop(smmu);
}
