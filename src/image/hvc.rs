//! The hypercall interface between a guest and the image's hypervisor.
//!
//! A guest calls `HVC #0` with a function ID in x0 and arguments in x1..x4.
//! The hypervisor answers in x0 (and x1..x2 for queries) and preserves
//! x4..x30, SP and the FP/SIMD registers. Function IDs follow the SMCCC
//! layout: fast calls, SMC64, owning entity 6 (vendor-specific hypervisor
//! service), so they cannot collide with PSCI or other standard services.
//!
//! | x0 | call | arguments | returns |
//! | --- | --- | --- | --- |
//! | `0xC600_0001` | REPORT | x1 check ID (1..=[`check::MAX`]), x2 status (0 pass, 1 fail), x3 detail, x4 device index (0 for the VM's first device; below its device count) | x0 = 0 |
//! | `0xC600_0002` | DONE | x1 status | never returns: the VM stops |
//! | `0xC600_0003` | DMA_FAULTS | - | x0 = faulting DMAs of this VM's devices since the last call, x1 = IPA of the first, x2 = its event type (0x10 F_TRANSLATION, ...) |
//! | `0xC600_0004` | LAST_ABORT | - | x0 = 0 and x1 = IPA (HPFAR_EL2.FIPA << 12 \| FAR_EL2\[11:0\]), x2 = ESR_EL2 of the last stage-2 data abort not yet queried; or x0 = [`NOTHING`] |
//! | `0xC600_0005` | RELEASE | x1 IPA, x2 length | x0 = 0: the pages leave the VM's stage 2 (CPU and DMA), a balloon inflate |
//!
//!
//! The paravirtual IOMMU (`pviommu.rs`; only on an SMMU with both stages):
//!
//! | x0 | call | arguments | returns |
//! | --- | --- | --- | --- |
//! | `0xC600_0010` | PV_INFO | - | x0 = 0, x1 = granules (bit 0 4K, 1 16K, 2 64K), x2 = largest CD.IPS, x3 = StreamID of its device 0 |
//! | `0xC600_0011` | PV_SET_CD | x1 StreamID, x2 CD IPA | x0 = 0: the stream translates VA -> IPA with the guest's CD and tables, then its stage 2 |
//! | `0xC600_0012` | PV_INV_ASID | x1 ASID | x0 = 0 after TLBI_NH_ASID + CMD_SYNC |
//! | `0xC600_0013` | PV_INV_VA | x1 ASID, x2 VA, x3 length | x0 = 0 after TLBI_NH_VA (range) + CMD_SYNC |
//! | `0xC600_0014` | PV_DETACH | x1 StreamID | x0 = 0: the stream is back on its VM's plain stage 2 |
//!
//! Their errors: [`BAD_IPA`] (CD or TTB0 not in its RAM, or misaligned),
//! [`BAD_CD`] (-7, a CD field the SMMU or the policy refuses), [`BAD_ASID`]
//! (-8, reserved, the driver's, another VM's, or not held),
//! [`BAD_STREAM`] (-9, not one of its StreamIDs; DETACH of a stream that
//! is not nested), [`BAD_LENGTH`] (an empty, unaligned or wrapping range),
//! [`UNKNOWN_CALL`] on an SMMU without nesting.
//!
//! Errors (x0, as a signed value): [`UNKNOWN_CALL`] (-1, also SMCCC's
//! NOT_SUPPORTED) for an unknown function ID, a non-zero HVC immediate, or
//! a trapped SMC; [`BAD_IPA`] (-2) for an address that is not page aligned
//! or not in the VM's RAM (still mapped); [`BAD_LENGTH`] (-3) for a zero,
//! unaligned, overflowing or out-of-RAM length; [`BAD_ARGUMENT`] (-4) for an
//! unknown check ID or status, or a device index the VM does not have; [`NOTHING`] (-5) when there is nothing to
//! report; [`FAILED`] (-6) when the hypervisor could not carry out a valid
//! request. A rejected call changes nothing: no table, no memory, no log
//! entry but the call itself.
//!
//! A VM gets every device of one isolation group. Its boot protocol (see
//! `guest.rs`) gives the device count in x9; device `i`'s BAR0 sits at IPA
//! `BAR_IPA + i * BAR_STRIDE`. DMA_FAULTS reports the faulting DMAs of every
//! StreamID of the group: devices behind a PCIe-to-PCI bridge share the
//! alias StreamID, so a guest that wants to know which device faulted asks
//! after each device's DMA (or uses distinct addresses per device).
//!
//! A stage-2 data abort (a load or store outside what the VM's stage 2
//! maps) is recorded for LAST_ABORT and the instruction is skipped; a load
//! with a valid syndrome (ESR ISV = 1) gets [`POISON`] in its destination
//! register.

/// REPORT(check, status, detail).
pub const REPORT: u64 = 0xC600_0001;
/// DONE(status).
pub const DONE: u64 = 0xC600_0002;
/// DMA_FAULTS() -> (count, first IPA, event type).
pub const DMA_FAULTS: u64 = 0xC600_0003;
/// LAST_ABORT() -> (0, IPA, ESR) or NOTHING.
pub const LAST_ABORT: u64 = 0xC600_0004;
/// RELEASE(ipa, len).
pub const RELEASE: u64 = 0xC600_0005;

/// PV_INFO() -> (0, granules, max IPS, StreamID of device 0).
pub const PV_INFO: u64 = 0xC600_0010;
/// PV_SET_CD(sid, cd_ipa).
pub const PV_SET_CD: u64 = 0xC600_0011;
/// PV_INV_ASID(asid).
pub const PV_INV_ASID: u64 = 0xC600_0012;
/// PV_INV_VA(asid, va, len).
pub const PV_INV_VA: u64 = 0xC600_0013;
/// PV_DETACH(sid).
pub const PV_DETACH: u64 = 0xC600_0014;

/// Unknown call (SMCCC NOT_SUPPORTED).
pub const UNKNOWN_CALL: u64 = -1i64 as u64;
/// The address is not page aligned or not in the VM's mapped RAM.
pub const BAD_IPA: u64 = -2i64 as u64;
/// The length is zero, not page aligned, overflows, or leaves the RAM.
pub const BAD_LENGTH: u64 = -3i64 as u64;
/// Another argument is out of range.
pub const BAD_ARGUMENT: u64 = -4i64 as u64;
/// Nothing to report.
pub const NOTHING: u64 = -5i64 as u64;
/// The hypervisor failed to carry out a valid request.
pub const FAILED: u64 = -6i64 as u64;

/// A CD field the SMMU or the policy refuses (pvIOMMU).
pub const BAD_CD: u64 = -7i64 as u64;
/// An ASID that is reserved, the driver's, another VM's, or not held
/// (pvIOMMU).
pub const BAD_ASID: u64 = -8i64 as u64;
/// Not one of the VM's StreamIDs, or not nested (pvIOMMU).
pub const BAD_STREAM: u64 = -9i64 as u64;

/// What a faulting load with a valid syndrome reads.
pub const POISON: u64 = 0x5AFE_0BAD_DEAD_BEEF;

/// The check IDs the image's guest program reports (REPORT x1).
pub mod check {
    /// The guest runs at EL1 (detail: CurrentEL.EL).
    pub const EL: u64 = 1;
    /// The CPU it runs on (detail: MPIDR_EL1, i.e. VMPIDR_EL2).
    pub const CPU: u64 = 2;
    /// Start of the busy loop (detail: CNTVCT_EL0).
    pub const SPIN_START: u64 = 3;
    /// End of the busy loop (detail: CNTVCT_EL0).
    pub const SPIN_END: u64 = 4;
    /// DMA RAM -> device -> RAM through its IPAs (detail: mismatching words).
    pub const DMA_ROUNDTRIP: u64 = 5;
    /// DMA to an IPA outside its RAM reported by DMA_FAULTS (detail: IPA).
    pub const DMA_OUTSIDE: u64 = 6;
    /// A load outside its stage 2: abort, POISON, LAST_ABORT (detail: IPA).
    pub const CPU_LOAD_ABORT: u64 = 7;
    /// A store outside its stage 2 (detail: IPA).
    pub const CPU_STORE_ABORT: u64 = 8;
    /// A store to its own read-only code page: permission fault, code
    /// unchanged (detail: IPA).
    pub const CODE_READONLY: u64 = 9;
    /// CPU load and store at another VM's physical RAM address fault.
    pub const FOREIGN_CPU: u64 = 10;
    /// DMA to another VM's physical RAM address faults.
    pub const FOREIGN_DMA: u64 = 11;
    /// Unknown calls get UNKNOWN_CALL (detail: wrong answers).
    pub const BAD_UNKNOWN: u64 = 12;
    /// RELEASE with bad IPAs gets BAD_IPA (detail: wrong answers).
    pub const BAD_IPA: u64 = 13;
    /// RELEASE with bad lengths gets BAD_LENGTH (detail: wrong answers).
    pub const BAD_LENGTH: u64 = 14;
    /// REPORT with bad arguments gets BAD_ARGUMENT (detail: wrong answers).
    pub const BAD_ARGUMENT: u64 = 15;
    /// After the bad calls its pages still work and no abort happened.
    pub const BAD_NOTHING_CHANGED: u64 = 16;
    /// RELEASE of one page in the middle of a 2 MiB region (detail: x0).
    pub const BALLOON_RELEASE: u64 = 17;
    /// A load from the released page aborts (detail: IPA).
    pub const BALLOON_CPU: u64 = 18;
    /// DMA to the released page faults (detail: IPA).
    pub const BALLOON_DMA: u64 = 19;
    /// DMA between the two neighbouring pages still works (detail:
    /// mismatching words).
    pub const BALLOON_NEIGHBOURS: u64 = 20;
    /// PV_INFO answered (detail: x0).
    pub const NESTED_INFO: u64 = 21;
    /// Hostile PV calls got their typed errors (detail: wrong answers).
    pub const NESTED_BAD: u64 = 22;
    /// PV_SET_CD of its own CD (detail: x0).
    pub const NESTED_SET_CD: u64 = 23;
    /// DMA through guest VAs: device reads one VA, writes another; the
    /// bytes are at the IPAs its tables name (detail: the VA written).
    pub const NESTED_DMA: u64 = 24;
    /// DMA write to a read-only VA: F_PERMISSION (detail: VA).
    pub const NESTED_PERM: u64 = 25;
    /// DMA to a VA whose table lies outside its RAM: the walk is stopped
    /// by stage 2 (detail: VA).
    pub const NESTED_WALK: u64 = 26;
    /// Unmap + PV_INV_VA, then DMA to the VA faults (detail: VA).
    pub const NESTED_UNMAP: u64 = 27;
    /// PV_DETACH, then DMA through IPAs works again (detail: failures).
    pub const NESTED_DETACH: u64 = 28;
    /// The highest check ID.
    pub const MAX: u64 = 28;

    /// A short name for tables.
    pub fn name(id: u64) -> &'static str {
        match id {
            EL => "runs at EL1",
            CPU => "CPU (MPIDR)",
            SPIN_START => "spin start",
            SPIN_END => "spin end",
            DMA_ROUNDTRIP => "DMA RAM -> device -> RAM",
            DMA_OUTSIDE => "DMA outside RAM blocked",
            CPU_LOAD_ABORT => "load outside stage 2 aborts",
            CPU_STORE_ABORT => "store outside stage 2 aborts",
            CODE_READONLY => "store to own code: permission fault",
            FOREIGN_CPU => "CPU access to other VM's PA aborts",
            FOREIGN_DMA => "DMA to other VM's PA blocked",
            BAD_UNKNOWN => "unknown calls: UNKNOWN_CALL",
            BAD_IPA => "bad IPAs: BAD_IPA",
            BAD_LENGTH => "bad lengths: BAD_LENGTH",
            BAD_ARGUMENT => "bad arguments: BAD_ARGUMENT",
            BAD_NOTHING_CHANGED => "after bad calls nothing changed",
            BALLOON_RELEASE => "balloon: release one page",
            BALLOON_CPU => "balloon: load from page aborts",
            BALLOON_DMA => "balloon: DMA to page blocked",
            BALLOON_NEIGHBOURS => "balloon: neighbours still work",
            NESTED_INFO => "nested: PV_INFO",
            NESTED_BAD => "nested: hostile PV calls refused",
            NESTED_SET_CD => "nested: PV_SET_CD",
            NESTED_DMA => "nested: DMA through guest VAs",
            NESTED_PERM => "nested: read-only VA: F_PERMISSION",
            NESTED_WALK => "nested: walk stopped by stage 2",
            NESTED_UNMAP => "nested: unmap + PV_INV_VA faults",
            NESTED_DETACH => "nested: PV_DETACH, IPAs again",
            _ => "?",
        }
    }
}

/// A decoded hypercall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// REPORT.
    Report {
        /// Check ID.
        check: u64,
        /// 0 pass, 1 fail.
        status: u64,
        /// Detail.
        detail: u64,
        /// The device index (x4).
        device: u64,
    },
    /// DONE.
    Done {
        /// The guest's status.
        status: u64,
    },
    /// DMA_FAULTS.
    DmaFaults,
    /// LAST_ABORT.
    LastAbort,
    /// RELEASE.
    Release {
        /// First IPA.
        ipa: u64,
        /// Length in bytes.
        len: u64,
    },
}

/// Decodes `HVC #imm` with the guest's x0..x4; `Err` is the code for x0.
/// (Whether REPORT's device index exists is the VM's to check.)
pub fn decode(imm: u16, x: &[u64; 5]) -> Result<Call, u64> {
    if imm != 0 {
        return Err(UNKNOWN_CALL);
    }
    match x[0] {
        REPORT => {
            if x[1] == 0 || x[1] > check::MAX || x[2] > 1 {
                return Err(BAD_ARGUMENT);
            }
            Ok(Call::Report {
                check: x[1],
                status: x[2],
                detail: x[3],
                device: x[4],
            })
        }
        DONE => Ok(Call::Done { status: x[1] }),
        DMA_FAULTS => Ok(Call::DmaFaults),
        LAST_ABORT => Ok(Call::LastAbort),
        RELEASE => Ok(Call::Release {
            ipa: x[1],
            len: x[2],
        }),
        _ => Err(UNKNOWN_CALL),
    }
}

/// The name of an x0 answer.
pub fn answer_name(x0: u64) -> &'static str {
    match x0 {
        0 => "ok",
        UNKNOWN_CALL => "UNKNOWN_CALL",
        BAD_IPA => "BAD_IPA",
        BAD_LENGTH => "BAD_LENGTH",
        BAD_ARGUMENT => "BAD_ARGUMENT",
        NOTHING => "NOTHING",
        FAILED => "FAILED",
        BAD_CD => "BAD_CD",
        BAD_ASID => "BAD_ASID",
        BAD_STREAM => "BAD_STREAM",
        _ => "value",
    }
}
