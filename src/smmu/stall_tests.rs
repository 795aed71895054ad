//! Host tests of an SMMU that forces stalls (IDR0.STALL_MODEL = 0b10) on the
//! register model: STE.S2S and CD.S in the words the model reads, stall
//! events answered with exactly one CMD_RESUME (Abort, or Retry when the
//! callback asks), CMD_STALL_TERM after the abort STE of a detach or a
//! quarantine is synchronized (IHI 0070 §3.12.2, §4.7.1, §4.7.2, §5.5); and
//! nothing of it on an SMMU that does not stall.

extern crate std;

use std::sync::{Arc, Mutex as StdMutex};
use std::vec::Vec;

use super::*;
use crate::cmd::{Command, ResumeAction, opcode};
use crate::domain::{DomainId, DomainOptions, StagePolicy};
use crate::fake::FakeHal;
use crate::stage2::{Granule, Perm, Stage2Config};
use crate::testing::SmmuModel;

const SID: u32 = 0x10;
/// Event record dword 1: Stall \[31\], STAG \[15:0\].
const STALL: u64 = 1 << 31;

fn model(stall_model: u32) -> SmmuModel {
    SmmuModel::builder()
        .id_field(0x00, 24, 2, stall_model)
        .build()
}

fn enabled(model: &SmmuModel) -> Smmu<FakeHal> {
    let config = Config {
        timeout_ns: 1_000_000,
        ..Config::default()
    };
    // SAFETY: the model is MMIO_SIZE bytes and outlives the driver (each
    // test drops the driver first: declared after the model).
    let smmu = unsafe { Smmu::<FakeHal>::new(model.base(), config) }.unwrap();
    smmu.enable().unwrap();
    smmu
}

fn domain(smmu: &Smmu<FakeHal>, stage: StagePolicy) -> DomainId {
    let cfg = Stage2Config::new(Granule::K4, 40, 48).unwrap();
    let id = smmu
        .create_domain(DomainOptions {
            stage,
            ..DomainOptions::new(cfg)
        })
        .unwrap();
    smmu.map(id, 0x4000_0000, 0x8000_0000, 0x1000, Perm::ReadWrite)
        .unwrap();
    id
}

/// A stalled F_TRANSLATION for `sid`: Stall = 1, STAG = `stag`.
fn stalled_fault(sid: u32, stag: u16) -> [u64; 4] {
    let mut r = SmmuModel::translation_fault(sid, 0x4000_1000, true);
    r[1] |= STALL | u64::from(stag);
    r
}

fn decoded(model: &SmmuModel, from: usize) -> Vec<Command> {
    model.commands()[from..]
        .iter()
        .map(|w| Command::decode(*w))
        .collect()
}

fn resumes(cmds: &[Command]) -> Vec<Command> {
    cmds.iter()
        .copied()
        .filter(|c| matches!(c, Command::Resume { .. }))
        .collect()
}

/// The CD a stage-1 STE points at (S1Fmt linear, one CD, or CD 0 of a
/// linear table: the driver's layouts without substreams on this model).
fn cd_of(ste: &Ste) -> [u64; 8] {
    let p = ste.cd_paddr() as usize as *const u64;
    // SAFETY: HostHal memory is identity-mapped and the CD the live STE
    // points at stays allocated while the stream is attached.
    core::array::from_fn(|i| unsafe { p.add(i).read_volatile() })
}

/// Forced stall, stage 2 and stage 1: S2S = 1 in the STE and S = 1 in the
/// CD, read from the memory the model fetches them from. Fails on the old
/// code: `Smmu::new` refused the SMMU (`Unsupported(ForcedStall)`).
#[test]
fn forced_stall_ste_s2s_and_cd_s_are_set() {
    let m = model(0b10);
    let smmu = enabled(&m);
    assert!(smmu.features().stall_forced());
    let s2 = domain(&smmu, StagePolicy::Stage2);
    smmu.attach(s2, SID).unwrap();
    let ste = m.ste(SID).unwrap();
    assert_eq!(ste.config(), SteConfig::Stage2);
    assert_eq!(ste.0[2] >> 57 & 1, 1, "S2S");
    let s1 = domain(&smmu, StagePolicy::Stage1);
    smmu.attach(s1, SID + 1).unwrap();
    let ste = m.ste(SID + 1).unwrap();
    assert_eq!(ste.config(), SteConfig::Stage1);
    assert_eq!(ste.0[1] >> 27 & 1, 0, "S1STALLD = 0 (1 is ILLEGAL here)");
    let cd = cd_of(&ste);
    assert_eq!(cd[0] >> 31 & 1, 1, "CD.V");
    assert_eq!(cd[0] >> 44 & 1, 1, "CD.S");
    smmu.detach(SID).unwrap();
    smmu.detach(SID + 1).unwrap();
    smmu.destroy_domain(s2).unwrap();
    smmu.destroy_domain(s1).unwrap();
    smmu.disable().unwrap();
}

/// A stalled F_TRANSLATION (Stall = 1, STAG = 0x1234) is answered by
/// exactly one CMD_RESUME for its StreamID and STAG, with Abort (Ac = 0,
/// Ab = 1), followed by a CMD_SYNC. Fails on the old code: the SMMU was
/// refused at probe (and `service` sent no CMD_RESUME at all).
#[test]
fn a_stall_event_is_answered_by_one_resume_abort() {
    let m = model(0b10);
    let smmu = enabled(&m);
    let id = domain(&smmu, StagePolicy::Stage2);
    smmu.attach(id, SID).unwrap();
    let before = m.commands().len();
    assert!(m.inject_event(stalled_fault(SID, 0x1234)));
    let mut seen = Vec::new();
    let (_, drained) = smmu.service(|e| seen.push(e)).unwrap();
    assert_eq!(drained.map(|d| d.records), Some(1));
    assert!(seen[0].stall && seen[0].stag == 0x1234 && seen[0].sid == SID);
    let cmds = decoded(&m, before);
    assert_eq!(
        cmds,
        [
            Command::Resume {
                sid: SID,
                stag: 0x1234,
                action: ResumeAction::Abort
            },
            Command::sync()
        ]
    );
    // The words: opcode 0x44, Ab [13], SID [63:32]; STAG in dword 1.
    assert_eq!(
        m.commands()[before],
        [u64::from(SID) << 32 | 1 << 13 | 0x44, 0x1234]
    );
    // Nothing more on the next call: one answer per record.
    smmu.service(|_| {}).unwrap();
    assert!(resumes(&decoded(&m, before + 2)).is_empty());
}

/// `service_with` answers Retry where the callback asks, Abort where it
/// does not, and nothing for a record that did not stall. Fails on the old
/// code: no `service_with` (and the SMMU refused).
#[test]
fn the_callback_chooses_retry_per_record() {
    let m = model(0b10);
    let smmu = enabled(&m);
    let id = domain(&smmu, StagePolicy::Stage2);
    smmu.attach(id, SID).unwrap();
    smmu.attach(id, SID + 1).unwrap();
    let before = m.commands().len();
    assert!(m.inject_event(stalled_fault(SID, 7)));
    assert!(m.inject_event(SmmuModel::translation_fault(SID, 0x5000, false)));
    assert!(m.inject_event(stalled_fault(SID + 1, 8)));
    smmu.service_with(|e| {
        if e.sid == SID {
            StallResponse::Retry
        } else {
            StallResponse::Abort
        }
    })
    .unwrap();
    let cmds = decoded(&m, before);
    assert_eq!(
        resumes(&cmds),
        [
            Command::Resume {
                sid: SID,
                stag: 7,
                action: ResumeAction::Retry
            },
            Command::Resume {
                sid: SID + 1,
                stag: 8,
                action: ResumeAction::Abort
            },
        ]
    );
    // One batch, one CMD_SYNC.
    assert_eq!(cmds.len(), 3);
    assert_eq!(cmds[2], Command::sync());
}

/// While the command queue is held (another CPU, or the code an interrupt
/// interrupted), the CMD_RESUME is parked, not waited for, and goes out
/// when the holder lets go. Fails on the old code (no CMD_RESUME at all).
#[test]
fn a_resume_waits_for_a_busy_command_queue_without_blocking() {
    let m = model(0b10);
    let smmu = enabled(&m);
    let id = domain(&smmu, StagePolicy::Stage2);
    smmu.attach(id, SID).unwrap();
    let before = m.commands().len();
    assert!(m.inject_event(stalled_fault(SID, 0x55)));
    {
        let _held = smmu.cmdq.lock();
        let (_, drained) = smmu.service(|_| {}).unwrap();
        assert_eq!(drained.map(|d| d.records), Some(1));
        assert!(smmu.resumes.any(), "parked");
    }
    assert!(resumes(&decoded(&m, before)).is_empty());
    // The next user of the queue (here set_bypass's commands) sends it.
    smmu.set_bypass(SID + 3).unwrap();
    assert!(!smmu.resumes.any());
    let r = resumes(&decoded(&m, before));
    assert_eq!(
        r,
        [Command::Resume {
            sid: SID,
            stag: 0x55,
            action: ResumeAction::Abort
        }]
    );
}

/// Records the STE of `sid` (its dword 0, read from the memory the model
/// fetches it from) each time the model consumes a CMD_STALL_TERM.
fn watch_stall_terms(m: &SmmuModel, sid: u32) -> Arc<StdMutex<Vec<u64>>> {
    let addr = m.ste_address(sid).unwrap() as usize;
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let s = seen.clone();
    m.fault_commands(move |c| {
        if c[0] & 0xFF == u64::from(opcode::STALL_TERM) && c[0] >> 32 == u64::from(sid) {
            // SAFETY: HostHal memory is identity-mapped; the STE's level-2
            // table lives as long as the driver.
            let d0 = unsafe { (addr as *const u64).read_volatile() };
            s.lock().unwrap().push(d0);
        }
        None
    });
    seen
}

/// The commands from `from` hold one CMD_STALL_TERM for `sid`, and before
/// it a CFGI_STE for `sid` and a CMD_SYNC completing it; a CMD_SYNC follows.
fn check_stall_term_after_synced_abort(cmds: &[Command], sid: u32) {
    let terms: Vec<usize> = (0..cmds.len())
        .filter(|&i| cmds[i] == Command::StallTerm { sid })
        .collect();
    assert_eq!(terms.len(), 1, "{cmds:x?}");
    let t = terms[0];
    let cfgi = cmds[..t]
        .iter()
        .rposition(|c| matches!(c, Command::CfgiSte { sid: s, .. } if *s == sid))
        .expect("a CFGI_STE before CMD_STALL_TERM");
    assert!(
        cmds[cfgi..t].contains(&Command::sync()),
        "the CFGI_STE's CMD_SYNC precedes CMD_STALL_TERM: {cmds:x?}"
    );
    assert!(cmds[t..].contains(&Command::sync()));
}

/// Detach: CMD_STALL_TERM(StreamID) once the abort STE is written,
/// invalidated and synchronized (IHI 0070 §4.7.2), for a stage-2 and a
/// stage-1 stream; the model sees the abort STE when it consumes it.
/// Fails on the old code: the SMMU was refused at probe, and detach sent
/// no CMD_STALL_TERM.
#[test]
fn detach_issues_stall_term_after_the_abort_ste_is_synced() {
    for stage in [StagePolicy::Stage2, StagePolicy::Stage1] {
        let m = model(0b10);
        let smmu = enabled(&m);
        let id = domain(&smmu, stage);
        smmu.attach(id, SID).unwrap();
        let seen = watch_stall_terms(&m, SID);
        let before = m.commands().len();
        smmu.detach(SID).unwrap();
        check_stall_term_after_synced_abort(&decoded(&m, before), SID);
        assert_eq!(*seen.lock().unwrap(), [Ste::abort().0[0]], "{stage:?}");
        assert_eq!(m.ste(SID).unwrap(), Ste::abort());
        // Detaching again, or aborting an aborted stream: nothing to end.
        let before = m.commands().len();
        smmu.set_abort(SID).unwrap();
        assert!(!decoded(&m, before).contains(&Command::StallTerm { sid: SID }));
    }
}

/// Quarantine of an attached stream: CMD_STALL_TERM after the abort STE
/// is synchronized; release does not send one. Fails on the old code
/// (refused at probe; no CMD_STALL_TERM).
#[test]
fn quarantine_issues_stall_term_after_the_abort_ste_is_synced() {
    let m = model(0b10);
    let smmu = enabled(&m);
    let id = domain(&smmu, StagePolicy::Stage2);
    smmu.attach(id, SID).unwrap();
    let seen = watch_stall_terms(&m, SID);
    let before = m.commands().len();
    assert_eq!(smmu.quarantine(SID).unwrap(), Quarantine::Applied);
    check_stall_term_after_synced_abort(&decoded(&m, before), SID);
    assert_eq!(*seen.lock().unwrap(), [Ste::abort().0[0]]);
    let before = m.commands().len();
    smmu.release(SID).unwrap();
    assert!(!decoded(&m, before).contains(&Command::StallTerm { sid: SID }));
    assert!(m.ste(SID).unwrap().s2_stall(), "released: S2S = 1 again");
}

/// Where stalls are not forced (terminate only, 0b01, QEMU's; and stall
/// + terminate, 0b00, where the driver picks terminate), nothing changes:
/// S2S = CD.S = 0, no CMD_STALL_TERM on detach; with 0b01 no CMD_RESUME
/// even for a record claiming Stall = 1 (CMD_RESUME would be CERROR_ILL).
/// Passes on the old code too: it pins that the change is confined to
/// forced-stall SMMUs.
#[test]
fn nothing_changes_where_stalls_are_not_forced() {
    for stall_model in [0b01, 0b00] {
        let m = model(stall_model);
        let smmu = enabled(&m);
        assert!(!smmu.features().stall_forced());
        let s2 = domain(&smmu, StagePolicy::Stage2);
        let s1 = domain(&smmu, StagePolicy::Stage1);
        smmu.attach(s2, SID).unwrap();
        smmu.attach(s1, SID + 1).unwrap();
        assert_eq!(m.ste(SID).unwrap().0[2] >> 57 & 1, 0, "S2S");
        assert_eq!(cd_of(&m.ste(SID + 1).unwrap())[0] >> 44 & 1, 0, "CD.S");
        let before = m.commands().len();
        assert!(m.inject_event(SmmuModel::translation_fault(SID, 0x5000, false)));
        smmu.service(|_| {}).unwrap();
        smmu.detach(SID).unwrap();
        smmu.detach(SID + 1).unwrap();
        let cmds = decoded(&m, before);
        assert!(resumes(&cmds).is_empty(), "{cmds:x?}");
        assert!(
            !cmds.iter().any(|c| matches!(c, Command::StallTerm { .. })),
            "{cmds:x?}"
        );
    }
    let m = model(0b01);
    let smmu = enabled(&m);
    let before = m.commands().len();
    assert!(m.inject_event(stalled_fault(SID, 1)));
    let mut seen = Vec::new();
    smmu.service(|e| seen.push(e)).unwrap();
    assert!(seen[0].stall);
    assert!(resumes(&decoded(&m, before)).is_empty());
}

/// `disable` (SMMUEN = 0 terminates every stall, §3.12.2) drops parked
/// CMD_RESUMEs: after a re-enable their STAGs may name new stalls. Fails on
/// the old code (refused at probe; nothing parked).
#[test]
fn disable_drops_parked_resumes() {
    let m = model(0b10);
    let smmu = enabled(&m);
    let id = domain(&smmu, StagePolicy::Stage2);
    smmu.attach(id, SID).unwrap();
    assert!(m.inject_event(stalled_fault(SID, 9)));
    {
        let _held = smmu.cmdq.lock();
        smmu.service(|_| {}).unwrap();
    }
    assert!(smmu.resumes.any());
    let before = m.commands().len();
    smmu.disable().unwrap();
    assert!(!smmu.resumes.any());
    smmu.enable().unwrap();
    assert!(resumes(&decoded(&m, before)).is_empty());
}

/// A stall record of a stream that was detached before it was drained
/// (detach's CMD_STALL_TERM already ended the stall) gets no CMD_RESUME
/// (IHI 0070 §4.7.2 step 6: such records are discarded; §4.7.1: no
/// CMD_RESUME for a stall already subject to CMD_STALL_TERM); the callback
/// still sees it. A stream attached again answers as usual. Fails on the
/// old code (refused at probe).
#[test]
fn a_stall_record_of_a_detached_stream_gets_no_resume() {
    let m = model(0b10);
    let smmu = enabled(&m);
    let id = domain(&smmu, StagePolicy::Stage2);
    smmu.attach(id, SID).unwrap();
    assert!(m.inject_event(stalled_fault(SID, 3)));
    smmu.detach(SID).unwrap();
    let before = m.commands().len();
    let mut seen = Vec::new();
    smmu.service(|e| seen.push(e)).unwrap();
    assert!(seen[0].stall && seen[0].sid == SID);
    assert!(resumes(&decoded(&m, before)).is_empty());
    smmu.attach(id, SID).unwrap();
    assert!(m.inject_event(stalled_fault(SID, 4)));
    let before = m.commands().len();
    smmu.service(|_| {}).unwrap();
    assert_eq!(
        resumes(&decoded(&m, before)),
        [Command::Resume {
            sid: SID,
            stag: 4,
            action: ResumeAction::Abort
        }]
    );
}
