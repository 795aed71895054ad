//! Host tests of `Smmu::service` (events handed out in chunks, with the
//! event-queue lock released) and of quarantine.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::domain::{DomainId, DomainOptions};
use crate::fake::{FakeHal, FakeRegs};
use crate::stage2::{Granule, Perm, Stage2Config};

const EVENTQ_PROD: usize = 0x1_00A8;
const EVENTQ_CONS: usize = 0x1_00AC;
/// F_TRANSLATION.
const F_TRANSLATION: u64 = 0x10;

/// An enabled driver on a register block that answers like QEMU virt's
/// SMMU (OAS 48 bits: host heap addresses stand in for physical ones),
/// with an event queue of 2^`eventq_log2` records.
fn enabled(eventq_log2: u32) -> (Box<FakeRegs>, Smmu<FakeHal>) {
    let regs = Box::new(FakeRegs::new());
    regs.set32(0x00, 0x0D44_101B);
    regs.set32(0x04, 0x0273_0010);
    regs.set32(0x0C, 0x0000_1404);
    regs.set32(0x14, 0x0000_0075);
    regs.set32(0x1C, 1);
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
            &[F_TRANSLATION | u64::from(sid) << 32, 0, first_addr + u64::from(k), 0],
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
/// stream table and command queue locks, while another CPU takes them in
/// the documented order (stream table -> command queue -> event queue).
/// With the event queue lock held across the callback, the callback's
/// `detach` waits for the stream table that the other CPU holds while it
/// waits for the event queue: a deadlock (the test times out).
#[test]
fn a_service_callback_that_detaches_does_not_deadlock() {
    let (regs, smmu) = enabled(11);
    let id = domain(&smmu);
    smmu.attach(id, 0x10).unwrap();
    record_faults(&regs, &smmu, 0x10, 3, 0);
    let smmu = Arc::new(smmu);
    let s = smmu.clone();
    let (seen, detached) = within(20, "service with a detaching callback", move || {
        let mut seen = 0;
        let mut detached = None;
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
                detached = Some(s.detach(event.sid));
            }
        })
        .unwrap();
        let other = other.unwrap().join().unwrap();
        assert_eq!(other, Ok(()));
        (seen, detached)
    });
    assert_eq!(seen, 3);
    assert_eq!(detached, Some(Ok(())));
    assert!(smmu.ste(0x10).unwrap().config().is_abort());
    drop(Arc::try_unwrap(smmu).unwrap());
    drop(regs);
}
