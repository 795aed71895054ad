//! The paravirtual IOMMU: a guest owns the stage 1 of its devices' DMA.
//!
//! The guest builds stage-1 tables and a CD in its own RAM and hands the
//! CD's IPA to the hypervisor (PV_SET_CD); the hypervisor validates the
//! request with the driver ([`smmuv3::smmu::Smmu::attach_nested`]: the CD
//! and TTB0 inside the guest's RAM, every CD field, the ASID policy) and
//! installs a nested STE whose stage 2 is the VM's own. The guest then
//! maintains its tables itself and asks for TLB invalidations (PV_INV_ASID,
//! PV_INV_VA), which become TLBI_NH_ASID / TLBI_NH_VA with the VM's SMMU
//! VMID; PV_DETACH returns the stream to the VM's plain stage-2 STE. The
//! function IDs, the error codes and the table of calls are in `hvc.rs`.
//!
//! Guest memory is read as the guest sees it: IPA -> its stage 2 -> a PA
//! inside the VM's RAM (nothing else is read). Every call is logged with
//! its answer, the driver's typed error, and (for a refused call) whether
//! the stream table stayed identical word for word.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use smmuv3::Error;
use smmuv3::domain::{GuestCd, NestedError, NestedRequest};
use smmuv3::stage2::Granule;

use super::demo::Driver;
use super::guest::{RAM_IPA, RAM_SIZE};
use super::hvc;
use super::vm::Vm;

/// Words of pattern the nested DMA moves (256 bytes).
const PATTERN_WORDS: u64 = 32;

/// One pvIOMMU call, as the log keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PvRecord {
    /// x0: the function ID.
    pub fid: u64,
    /// x1..x3.
    pub args: [u64; 3],
    /// What x0 returned.
    pub ret: u64,
    /// The driver's error for a refused call.
    pub error: Option<Error>,
    /// For a refused call: whether the stream table stayed word for word
    /// the same.
    pub stream_table_unchanged: Option<bool>,
}

/// A nested stream's translation of one VA, walked by the hypervisor in
/// the guest's tables (through its stage 2) when SET_CD succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NestedWalk {
    /// The StreamID.
    pub sid: u32,
    /// The VA.
    pub va: u64,
    /// The stage-1 levels walked.
    pub levels: Vec<u8>,
    /// The IPA the guest's tables give.
    pub ipa: u64,
    /// The PA its stage 2 gives.
    pub pa: u64,
    /// The accepted CD.
    pub cd: GuestCd,
    /// The page's first words at the PA as memory held them when the
    /// guest first asked for PV_INV_VA (after its DMA through the VA).
    pub seen: Option<Vec<u64>>,
}

/// Whether `fid` is a pvIOMMU call.
pub fn is_call(fid: u64) -> bool {
    (hvc::PV_INFO..=hvc::PV_DETACH).contains(&fid)
}

/// The x0 code of a refused call.
pub fn code(e: &Error) -> u64 {
    match e {
        Error::Nested(n) => match n {
            NestedError::CdMisaligned(_)
            | NestedError::CdOutsideGuestRam(_)
            | NestedError::GuestReadFailed(_)
            | NestedError::Ttb0Misaligned(_)
            | NestedError::Ttb0OutsideGuestRam(_) => hvc::BAD_IPA,
            NestedError::BadAsid(_)
            | NestedError::AsidDriverOwned(_)
            | NestedError::AsidOtherVm(_)
            | NestedError::AsidNotOwned(_) => hvc::BAD_ASID,
            NestedError::SidNotInDomain(_) | NestedError::NotNested(_) => hvc::BAD_STREAM,
            NestedError::BadRange { .. } => hvc::BAD_LENGTH,
            NestedError::NotStage2Domain(_) => hvc::UNKNOWN_CALL,
            _ => hvc::BAD_CD,
        },
        Error::Unsupported(_) => hvc::UNKNOWN_CALL,
        _ => hvc::FAILED,
    }
}

/// Reads the 64-bit word at guest IPA `ipa` through the VM's stage 2,
/// only inside its RAM.
pub fn read_guest(vm: &Vm, smmu: &Driver, ipa: u64) -> Option<u64> {
    let pa = vm.translate(smmu, ipa)?.pa;
    let off = pa.checked_sub(vm.ram_pa())?;
    (off < RAM_SIZE).then(|| vm.ram_word(off)).flatten()
}

/// Walks `va` in the guest's 4K-granule stage-1 tables (the only granule
/// this walker knows; `None` otherwise): (levels, IPA) of a valid page.
pub fn walk(vm: &Vm, smmu: &Driver, cd: &GuestCd, va: u64) -> Option<(Vec<u8>, u64)> {
    if cd.granule != Granule::K4 || va >> cd.va_bits != 0 {
        return None;
    }
    // 9 bits per level below the page offset; start where the VA ends.
    let start = 4u8.saturating_sub(u32::from(cd.va_bits).saturating_sub(12).div_ceil(9) as u8);
    let mut table = cd.ttb0;
    let mut levels = Vec::new();
    for level in start..=3 {
        levels.push(level);
        let idx = va >> (12 + 9 * u32::from(3 - level)) & 0x1ff;
        let desc = read_guest(vm, smmu, table + idx * 8)?;
        let out = desc & 0x0000_ffff_ffff_f000;
        match (desc & 0b11, level) {
            (0b11, 3) => return Some((levels, out | va & 0xfff)),
            (0b11, _) => table = out,
            _ => return None,
        }
    }
    None
}

/// Carries out pvIOMMU call `x` (x0..x3) for `vm`; returns x0..x3 for the
/// guest and logs the call.
pub fn call(vm: &mut Vm, smmu: &Driver, x: &[u64; 5]) -> [u64; 4] {
    let mut out = [0u64; 4];
    let mut error = None;
    let before = smmu.stream_table_snapshot();
    let domain = vm.domain;
    let r: Result<(), Error> = (|| {
        if !smmu.features().nested() || vm.stage != smmuv3::domain::Stage::Stage2 {
            return Err(Error::Unsupported(smmuv3::error::Unsupported::Nested));
        }
        match x[0] {
            hvc::PV_INFO => {
                let f = smmu.features();
                out[1] = u64::from(f.granule_4k)
                    | u64::from(f.granule_16k) << 1
                    | u64::from(f.granule_64k) << 2;
                out[2] = match f.oas_bits {
                    48.. => 5,
                    44..48 => 4,
                    42..44 => 3,
                    40..42 => 2,
                    36..40 => 1,
                    _ => 0,
                };
                out[3] = u64::from(vm.sid);
                Ok(())
            }
            hvc::PV_SET_CD => {
                let sid = u32::try_from(x[1]).map_err(|_| NestedError::SidNotInDomain(u32::MAX))?;
                let ram = RAM_IPA..RAM_IPA + RAM_SIZE;
                let req = NestedRequest {
                    domain,
                    sid,
                    cd_ipa: x[2],
                    guest_ram: core::slice::from_ref(&ram),
                };
                let v: &Vm = vm;
                let cd = smmu.attach_nested(&req, &mut |ipa| read_guest(v, smmu, ipa))?;
                let va = super::guest::nested::VA_RW;
                if let Some((levels, ipa)) = walk(vm, smmu, &cd, va)
                    && let Some(t) = vm.translate(smmu, ipa)
                {
                    vm.log.nested_walks.push(NestedWalk {
                        sid,
                        va,
                        levels,
                        ipa,
                        pa: t.pa,
                        cd,
                        seen: None,
                    });
                }
                Ok(())
            }
            hvc::PV_INV_ASID => {
                let asid = u16::try_from(x[1]).map_err(|_| NestedError::AsidNotOwned(u16::MAX))?;
                smmu.nested_invalidate_asid(domain, asid)
            }
            hvc::PV_INV_VA => {
                let ram_pa = vm.ram_pa();
                let words: Vec<u64> = match vm.log.nested_walks.last() {
                    Some(w) if w.seen.is_none() => (0..PATTERN_WORDS)
                        .filter_map(|i| vm.ram_word(w.pa - ram_pa + 8 * i))
                        .collect(),
                    _ => Vec::new(),
                };
                if let Some(w) = vm.log.nested_walks.last_mut()
                    && w.seen.is_none()
                {
                    w.seen = Some(words);
                }
                let asid = u16::try_from(x[1]).map_err(|_| NestedError::AsidNotOwned(u16::MAX))?;
                smmu.nested_invalidate_va(domain, asid, x[2], x[3])
                    .map(|_| ())
            }
            _ => {
                let sid = u32::try_from(x[1]).map_err(|_| NestedError::SidNotInDomain(u32::MAX))?;
                smmu.detach_nested(domain, sid)
            }
        }
    })();
    if let Err(e) = r {
        out = [code(&e), 0, 0, 0];
        error = Some(e);
    }
    let unchanged = error.map(|_| smmu.stream_table_snapshot() == before);
    vm.log.pv.push(PvRecord {
        fid: x[0],
        args: [x[1], x[2], x[3]],
        ret: out[0],
        error,
        stream_table_unchanged: unchanged,
    });
    out
}

/// The rows `make run` shows for a VM whose guest ran the nested phase
/// (`guest::phase::NESTED`): (check, result).
pub fn judge(smmu: &Driver, vm: &Vm, seed: u64) -> Vec<(&'static str, Result<String, String>)> {
    alloc::vec![
        ("nested: guest CD, VA -> IPA -> PA", installed(vm)),
        ("nested: device DMA to a guest VA lands", dma(vm, seed)),
        ("nested: read-only VA: stage-1 F_PERMISSION", perm(vm)),
        (
            "nested: table outside RAM: stage 2 stops walk",
            walk_stopped(vm)
        ),
        ("nested: unmap + PV_INV_VA: DMA faults", unmapped(vm)),
        ("nested: hostile PV calls: typed, no change", hostile(vm)),
        ("nested: PV_DETACH: plain stage 2 again", detached(smmu, vm)),
    ]
}

fn says(vm: &Vm, id: u64) -> Result<u64, String> {
    match vm.log.report(id) {
        Some(r) if r.status == 0 => Ok(r.detail),
        Some(r) => Err(format!(
            "guest reports \"{}\" FAILED (detail {:#x})",
            hvc::check::name(id),
            r.detail
        )),
        None => Err(format!(
            "guest made no report \"{}\" (stop {})",
            hvc::check::name(id),
            super::guests::stop_text(vm.log.stop)
        )),
    }
}

/// The one walk SET_CD recorded, as the demo line prints it.
pub fn describe_walk(w: &NestedWalk) -> String {
    format!(
        "nested sid {:#06x}: VA {:#x} -> stage-1 walk (levels {}) -> IPA {:#x} -> stage-2 walk -> PA {:#x} (ASID {:#x}, TTB0 IPA {:#x})",
        w.sid,
        w.va,
        w.levels
            .iter()
            .map(|l| format!("{l}"))
            .collect::<Vec<_>>()
            .join(","),
        w.ipa,
        w.pa,
        w.cd.asid,
        w.cd.ttb0
    )
}

fn installed(vm: &Vm) -> Result<String, String> {
    says(vm, hvc::check::NESTED_INFO)?;
    says(vm, hvc::check::NESTED_SET_CD)?;
    use super::guest::nested as n;
    let w = match vm.log.nested_walks.as_slice() {
        [w] => w,
        other => return Err(format!("{} accepted CDs", other.len())),
    };
    let want_pa = vm.ram_pa() + n::RW_PAGE;
    if w.sid != vm.sid || w.ipa != RAM_IPA + n::RW_PAGE || w.pa != want_pa || w.ipa == w.va {
        return Err(format!(
            "walk sid {:#x} VA {:#x} IPA {:#x} PA {:#x}, expected PA {want_pa:#x}",
            w.sid, w.va, w.ipa, w.pa
        ));
    }
    Ok(format!(
        "VA {:#x} -> IPA {:#x} (stage 1, levels [{}]) -> PA {:#x} (stage 2); ASID {:#x}",
        w.va,
        w.ipa,
        super::console::join(&w.levels),
        w.pa,
        w.cd.asid
    ))
}

fn dma(vm: &Vm, seed: u64) -> Result<String, String> {
    says(vm, hvc::check::NESTED_DMA)?;
    let w = vm.log.nested_walks.first().ok_or("no nested walk")?;
    let seen = w
        .seen
        .as_ref()
        .ok_or("no PV_INV_VA: the page was never read")?;
    let want: Vec<u64> = (0..PATTERN_WORDS).map(|i| seed + 0x300 + i).collect();
    if *seen != want {
        return Err(format!("PA {:#x} held {}", w.pa, super::console::hex(seen)));
    }
    Ok(format!(
        "device read VA {:#x}, wrote VA {:#x}: 256 bytes at PA {:#x} match",
        super::guest::nested::VA_RO,
        w.va,
        w.pa
    ))
}

/// The one fault the VM's log holds at `va` (input address).
fn fault_at(vm: &Vm, va: u64) -> Result<&smmuv3::fault::FaultSummary, String> {
    let mut it = vm
        .log
        .dma_faults
        .iter()
        .filter(|f| f.addr_range.is_some_and(|r| r.0 == va));
    match (it.next(), it.next()) {
        (Some(f), None) if f.sid == vm.sid => Ok(f),
        _ => Err(format!(
            "not exactly one fault of sid {:#x} at {va:#x}",
            vm.sid
        )),
    }
}

fn perm(vm: &Vm) -> Result<String, String> {
    says(vm, hvc::check::NESTED_PERM)?;
    let va = super::guest::nested::VA_RO;
    let f = fault_at(vm, va)?;
    if f.kind != smmuv3::event::EventType::FPermission || f.stage2 || f.read {
        return Err(format!("{f}"));
    }
    Ok(format!(
        "F_PERMISSION sid {:#06x} VA {va:#x} write, stage 1 -> VM {}",
        f.sid, vm.name
    ))
}

fn walk_stopped(vm: &Vm) -> Result<String, String> {
    says(vm, hvc::check::NESTED_WALK)?;
    let va = super::guest::nested::VA_WALK;
    let f = fault_at(vm, va)?;
    if f.kind != smmuv3::event::EventType::FTranslation {
        return Err(format!("{f}"));
    }
    // IHI 0070: a stage-2 fault on a stage-1 table fetch reports S2 = 1
    // with IPA = the table's IPA. QEMU 10.0 may report S2 = 0 for it;
    // both are accepted, and the row says which one was seen.
    Ok(format!(
        "F_TRANSLATION sid {:#06x} VA {va:#x}, level-3 table at IPA {:#x} (outside RAM): S2 = {}{} -> VM {}",
        f.sid,
        super::guest::UNMAPPED_DMA_IPA,
        u8::from(f.stage2),
        if f.stage2 {
            format!(", IPA {}", super::console::hex(f.ipa.as_slice()))
        } else {
            String::from(" (QEMU; the architecture says S2 = 1)")
        },
        vm.name
    ))
}

fn unmapped(vm: &Vm) -> Result<String, String> {
    says(vm, hvc::check::NESTED_UNMAP)?;
    let va = super::guest::nested::VA_RW;
    let inv = vm
        .log
        .pv
        .iter()
        .find(|r| r.fid == hvc::PV_INV_VA && r.ret == 0)
        .ok_or("no accepted PV_INV_VA")?;
    let f = fault_at(vm, va)?;
    if f.kind != smmuv3::event::EventType::FTranslation || f.stage2 {
        return Err(format!("{f}"));
    }
    Ok(format!(
        "PV_INV_VA ASID {:#x} VA {:#x}+{:#x} (TLBI_NH_VA, VMID {:#x}); then F_TRANSLATION VA {va:#x} stage 1; page unchanged",
        inv.args[0], inv.args[1], inv.args[2], vm.smmu_vmid
    ))
}

fn hostile(vm: &Vm) -> Result<String, String> {
    says(vm, hvc::check::NESTED_BAD)?;
    let refused: Vec<&PvRecord> = vm.log.pv.iter().filter(|r| r.error.is_some()).collect();
    if let Some(r) = refused.iter().find(|r| {
        r.stream_table_unchanged != Some(true) || !matches!(r.error, Some(Error::Nested(_)))
    }) {
        return Err(format!(
            "refused call changed the stream table or untyped: fid {:#x} ret {:#x}",
            r.fid, r.ret
        ));
    }
    let names: Vec<String> = refused
        .iter()
        .map(|r| {
            format!(
                "{} ({})",
                hvc::answer_name(r.ret),
                nested_hex_debug(
                    r.error
                        .map(|e| match e {
                            Error::Nested(n) => n,
                            _ => NestedError::CdNotValid,
                        })
                        .unwrap_or(NestedError::CdNotValid)
                )
            )
        })
        .collect();
    if refused.len() != 5 {
        return Err(format!("{} refused: [{}]", refused.len(), names.join(", ")));
    }
    Ok(format!(
        "{} refused, stream table unchanged: {}",
        refused.len(),
        names.join(", ")
    ))
}

/// `e` as `{:x?}` prints it (`CdOutsideGuestRam(8000000)`,
/// `BadRange { va: 1000, len: 2000 }`), without the derived `Debug` and
/// core's `DebugStruct`/`PadAdapter` machinery it pulls in.
fn nested_hex_debug(e: NestedError) -> String {
    use NestedError as N;
    let (name, v): (&str, Option<u64>) = match e {
        N::NotStage2Domain(d) => ("NotStage2Domain", Some(u64::from(d))),
        N::SidNotInDomain(s) => ("SidNotInDomain", Some(u64::from(s))),
        N::NotNested(s) => ("NotNested", Some(u64::from(s))),
        N::CdMisaligned(a) => ("CdMisaligned", Some(a)),
        N::CdOutsideGuestRam(a) => ("CdOutsideGuestRam", Some(a)),
        N::GuestReadFailed(a) => ("GuestReadFailed", Some(a)),
        N::CdNotValid => ("CdNotValid", None),
        N::NotAarch64 => ("NotAarch64", None),
        N::AbortDisabled => ("AbortDisabled", None),
        N::Stall => ("Stall", None),
        N::BigEndian => ("BigEndian", None),
        N::HardwareUpdate => ("HardwareUpdate", None),
        N::Ttb1Enabled => ("Ttb1Enabled", None),
        N::BadT0sz(v) => ("BadT0sz", Some(u64::from(v))),
        N::BadTg0(v) => ("BadTg0", Some(u64::from(v))),
        N::GranuleUnsupported(v) => ("GranuleUnsupported", Some(u64::from(v))),
        N::BadIps(v) => ("BadIps", Some(u64::from(v))),
        N::Ttb0Misaligned(a) => ("Ttb0Misaligned", Some(a)),
        N::Ttb0OutsideGuestRam(a) => ("Ttb0OutsideGuestRam", Some(a)),
        N::BadAsid(a) => ("BadAsid", Some(u64::from(a))),
        N::AsidDriverOwned(a) => ("AsidDriverOwned", Some(u64::from(a))),
        N::AsidOtherVm(a) => ("AsidOtherVm", Some(u64::from(a))),
        N::AsidNotOwned(a) => ("AsidNotOwned", Some(u64::from(a))),
        N::BadRange { va, len } => return format!("BadRange {{ va: {va:x}, len: {len:x} }}"),
    };
    match v {
        Some(v) => format!("{name}({v:x})"),
        None => String::from(name),
    }
}

fn detached(smmu: &Driver, vm: &Vm) -> Result<String, String> {
    says(vm, hvc::check::NESTED_DETACH)?;
    let ste = smmu.ste(vm.sid).map_err(|e| format!("{e}"))?;
    if ste.config() != smmuv3::expert::SteConfig::Stage2 || smmu.nested_of(vm.sid).is_some() {
        return Err(format!(
            "STE config {:#x} after PV_DETACH",
            (ste.0[0] >> 1) & 7
        ));
    }
    Ok(format!(
        "STE {:#06x} stage 2 (S2VMID {:#x}); DMA through IPAs again",
        vm.sid,
        ste.vmid()
    ))
}
