//! The demonstrations `make run` prints, built from small scenarios that
//! the on-target tests reuse.
//!
//! Every scenario drives a real `edu` DMA engine and judges the outcome by
//! what the device did to memory and what the SMMU recorded in its event
//! queue, never by what the driver claims.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use smmuv3::Dma;
use smmuv3::domain::{DomainId, DomainOptions};
use smmuv3::event::{Event, EventType};
use smmuv3::fault::{self, FaultSummary};
use smmuv3::smmu::Smmu;
use smmuv3::stage2::{Granule, Perm, Stage2Config};

use super::console::println;
use super::dma::ImageHal;
use super::edu::Edu;

/// The driver as the image uses it.
pub type Driver = Smmu<ImageHal>;

/// Page size of the demo's mappings.
pub const PAGE: u64 = 4096;
/// Base of each VM's IPA window. Below 256 MiB, so devices with edu's
/// default 28-bit DMA mask reach it too.
pub const WINDOW: u64 = 0x0400_0000;
/// Byte used to fill pages nobody should write.
pub const CANARY: u8 = 0xA5;

/// A page of device-visible RAM owned by the demo.
#[derive(Debug)]
pub struct Page(Dma<ImageHal>);

impl Page {
    /// A page filled with [`CANARY`].
    pub fn new() -> Result<Self, String> {
        let dma = Dma::new(PAGE as usize, PAGE as usize, true).map_err(|e| format!("page: {e}"))?;
        let p = Self(dma);
        p.fill(CANARY);
        Ok(p)
    }

    /// Physical address.
    pub fn pa(&self) -> u64 {
        self.0.paddr()
    }

    fn bytes(&self) -> *mut u8 {
        self.0.vaddr()
    }

    /// Sets every byte to `b`.
    pub fn fill(&self, b: u8) {
        for i in 0..PAGE as usize {
            // SAFETY: in bounds of the owned page.
            unsafe { self.bytes().add(i).write_volatile(b) };
        }
    }

    /// Sets byte `i` to `seed + i` (a pattern no canary matches).
    pub fn fill_pattern(&self, seed: u8) {
        for i in 0..PAGE as usize {
            // SAFETY: in bounds of the owned page.
            unsafe {
                self.bytes()
                    .add(i)
                    .write_volatile(seed.wrapping_add(i as u8) | 1)
            };
        }
    }

    /// Byte `i`.
    pub fn get(&self, i: usize) -> u8 {
        assert!(i < PAGE as usize);
        // SAFETY: in bounds of the owned page (checked).
        unsafe { self.bytes().add(i).read_volatile() }
    }

    /// Bytes `[off, off + len)`.
    pub fn read(&self, off: usize, len: usize) -> Vec<u8> {
        (off..off + len).map(|i| self.get(i)).collect()
    }

    /// The first offset outside `[lo, hi)` whose byte is not `b`.
    pub fn first_change_outside(&self, lo: usize, hi: usize, b: u8) -> Option<usize> {
        (0..PAGE as usize).find(|&i| (i < lo || i >= hi) && self.get(i) != b)
    }

    /// Whether every byte is `b`.
    pub fn all(&self, b: u8) -> bool {
        self.first_change_outside(0, 0, b).is_none()
    }
}

/// One line of a results table.
#[derive(Debug)]
pub struct Row {
    /// Which device.
    pub device: String,
    /// What was checked.
    pub check: &'static str,
    /// The verdict.
    pub ok: bool,
    /// Evidence.
    pub detail: String,
}

/// A results table.
#[derive(Debug, Default)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// Records a scenario's outcome.
    pub fn add(&mut self, device: &str, check: &'static str, result: Result<String, String>) {
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.rows.push(Row {
            device: device.into(),
            check,
            ok,
            detail,
        });
    }

    /// Number of failed rows.
    pub fn failures(&self) -> usize {
        self.rows.iter().filter(|r| !r.ok).count()
    }

    /// The rows.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Prints the table.
    pub fn print(&self, title: &str) {
        println!("{title}");
        println!("  {:<8} {:<44} {:<6} evidence", "device", "check", "result");
        for r in &self.rows {
            println!(
                "  {:<8} {:<44} {:<6} {}",
                r.device,
                r.check,
                if r.ok { "ok" } else { "FAILED" },
                r.detail
            );
        }
        println!(
            "  {} passed, {} failed",
            self.rows.len() - self.failures(),
            self.failures()
        );
    }
}

/// The short name of a device for tables: its BDF.
pub fn name(edu: &Edu) -> String {
    format!("{}", edu.bdf)
}

fn sid_of(edu: &Edu) -> Result<u32, String> {
    edu.stream_id
        .ok_or_else(|| format!("{}: no StreamID (iommu-map does not cover it)", edu.bdf))
}

/// Every event received since the last call (through the SMMU's interrupt,
/// or drained now).
pub fn drain(smmu: &Driver) -> Vec<Event> {
    super::iommu::take_events(smmu)
}

/// Drains the event queue and prints one line per faulting DMA, naming the
/// device (every edu using that StreamID, when an alias is shared); returns
/// the summaries.
pub fn report_faults(smmu: &Driver, edus: &[Edu]) -> Vec<FaultSummary> {
    let summaries = fault::coalesce(&drain(smmu), PAGE);
    for s in &summaries {
        let names: Vec<String> = edus
            .iter()
            .filter(|e| e.stream_id == Some(s.sid))
            .map(name)
            .collect();
        let who = if names.is_empty() {
            String::from("unknown device")
        } else {
            format!("{} edu", names.join(" or "))
        };
        println!("  fault: {s} [{who}]");
    }
    summaries
}

/// Checks that exactly one fault of `kind` for `sid` at `ipa` was recorded
/// among `faults`, and nothing else.
fn expect_fault(
    faults: &[FaultSummary],
    kind: EventType,
    sid: u32,
    ipa: u64,
) -> Result<String, String> {
    match faults {
        [f] if f.kind == kind && f.sid == sid && f.addr_range.map(|r| r.0) == Some(ipa) => Ok(
            format!("{} at IPA {ipa:#x}, {} records", kind.name(), f.records),
        ),
        _ => Err(format!(
            "expected one {} for sid {sid:#x} at {ipa:#x}, got [{}]",
            kind.name(),
            super::console::join(faults)
        )),
    }
}

fn edu_err(e: super::edu::EduError) -> String {
    format!("edu: {e}")
}

// ---------------------------------------------------------------------------
// Bring-up: default deny and bypass.

/// An edu with no STE of its own (abort by default) cannot write memory.
pub fn default_deny(smmu: &Driver, edu: &Edu) -> Result<String, String> {
    let page = Page::new()?;
    let ste = smmu.ste(sid_of(edu)?).map_err(|e| format!("{e}"))?;
    if !ste.config().is_abort() {
        return Err(format!("STE config {:#x}, not abort", (ste.0[0] >> 1) & 7));
    }
    edu.dma_to_ram(0, page.pa(), 256).map_err(edu_err)?;
    let faults = fault::coalesce(&drain(smmu), PAGE);
    if !page.all(CANARY) {
        return Err(String::from("memory changed: the DMA got through"));
    }
    let recorded = match faults.as_slice() {
        [] => String::from("nothing recorded"),
        [f, ..] => format!("recorded {f}"),
    };
    Ok(format!("STE abort; memory unchanged; {recorded}"))
}

/// An edu given a bypass STE reaches physical memory untranslated.
pub fn bypass(smmu: &Driver, edu: &Edu) -> Result<String, String> {
    let sid = sid_of(edu)?;
    let (src, dst) = (Page::new()?, Page::new()?);
    src.fill_pattern(0x31);
    smmu.set_bypass(sid)
        .map_err(|e| format!("set_bypass: {e}"))?;
    let moved = edu
        .dma_from_ram(0, src.pa(), 256)
        .and_then(|()| edu.dma_to_ram(0, dst.pa(), 256))
        .map_err(edu_err);
    smmu.set_abort(sid).map_err(|e| format!("set_abort: {e}"))?;
    moved?;
    if dst.read(0, 256) != src.read(0, 256) || dst.first_change_outside(0, 256, CANARY).is_some() {
        return Err(String::from("bytes did not arrive at the physical address"));
    }
    Ok(format!(
        "256 bytes {:#x} -> device -> {:#x}",
        src.pa(),
        dst.pa()
    ))
}

// ---------------------------------------------------------------------------
// Stage-2 isolation.

/// A VM as the demo builds it: a domain, its devices (one isolation group),
/// and the pages its IPA window maps.
#[derive(Debug)]
pub struct Vm {
    /// The domain.
    pub domain: DomainId,
    /// The StreamID the first device's DMA arrives with.
    pub sid: u32,
    /// Every StreamID attached (the whole isolation group).
    pub sids: Vec<u32>,
    /// The devices passed through, in enumeration order.
    pub edus: Vec<Edu>,
    /// IPA WINDOW + 0x0000, read-write: DMA target.
    pub data: Page,
    /// IPA WINDOW + 0x1000, read-only: DMA source (patterned).
    pub source: Page,
    /// IPA WINDOW + 0x2000, read-only: a write must fault.
    pub readonly: Page,
    /// IPA WINDOW + 0x3000, read-write, later unmapped.
    pub scratch: Page,
}

/// IPA of the data page.
pub const IPA_DATA: u64 = WINDOW;
/// IPA of the source page.
pub const IPA_SOURCE: u64 = WINDOW + PAGE;
/// IPA of the read-only page.
pub const IPA_READONLY: u64 = WINDOW + 2 * PAGE;
/// IPA of the page unmapped during the demo.
pub const IPA_SCRATCH: u64 = WINDOW + 3 * PAGE;
/// An IPA never mapped.
pub const IPA_UNMAPPED: u64 = WINDOW + 8 * PAGE;

/// The stage-2 geometry of every demo VM: 4K granule, 40-bit IPA.
pub fn vm_stage2() -> Result<Stage2Config, String> {
    Stage2Config::new(Granule::K4, 40, 44).map_err(|e| format!("stage 2 config: {e}"))
}

/// Creates a domain for `edu`, maps its window onto fresh pages and
/// attaches the device's StreamID.
pub fn create_vm(smmu: &Driver, edu: &Edu, seed: u8) -> Result<Vm, String> {
    create_group_vm(smmu, core::slice::from_ref(edu), &[sid_of(edu)?], seed)
}

/// Creates a domain for an isolation group (`edus`, using `sids`), maps its
/// window onto fresh pages and attaches every StreamID of the group at once
/// (`Smmu::attach_group`: all or none).
pub fn create_group_vm(smmu: &Driver, edus: &[Edu], sids: &[u32], seed: u8) -> Result<Vm, String> {
    let first = edus.first().ok_or("a VM needs a device")?;
    let sid = sid_of(first)?;
    for e in edus {
        if !sids.contains(&sid_of(e)?) {
            return Err(format!("{}: its StreamID is not in the group", e.bdf));
        }
    }
    let domain = smmu
        .create_domain(DomainOptions::new(vm_stage2()?))
        .map_err(|e| format!("create_domain: {e}"))?;
    let vm = Vm {
        domain,
        sid,
        sids: sids.to_vec(),
        edus: edus.to_vec(),
        data: Page::new()?,
        source: Page::new()?,
        readonly: Page::new()?,
        scratch: Page::new()?,
    };
    vm.source.fill_pattern(seed);
    for (ipa, page, perm) in [
        (IPA_DATA, &vm.data, Perm::ReadWrite),
        (IPA_SOURCE, &vm.source, Perm::Read),
        (IPA_READONLY, &vm.readonly, Perm::Read),
        (IPA_SCRATCH, &vm.scratch, Perm::ReadWrite),
    ] {
        smmu.map(domain, ipa, page.pa(), PAGE, perm)
            .map_err(|e| format!("map {ipa:#x}: {e}"))?;
    }
    smmu.attach_group(domain, sids)
        .map_err(|e| format!("attach_group {}: {e}", super::console::hex(sids)))?;
    Ok(vm)
}

/// Loads the device buffer from the VM's source page (RAM -> device).
fn load_buffer(edu: &Edu, off: usize, len: usize) -> Result<(), String> {
    edu.dma_from_ram(off, IPA_SOURCE + off as u64, len)
        .map_err(edu_err)
}

/// A device-to-memory DMA to a mapped IPA lands at exactly the mapped PA.
pub fn write_lands(smmu: &Driver, edu: &Edu, vm: &Vm) -> Result<String, String> {
    let (off, len) = (0x100usize, 0x100usize);
    // From canaries, so a device sharing the VM cannot pass on the bytes
    // another one left.
    vm.data.fill(CANARY);
    load_buffer(edu, off, len)?;
    edu.dma_to_ram(off, IPA_DATA + off as u64, len)
        .map_err(edu_err)?;
    let faults = fault::coalesce(&drain(smmu), PAGE);
    if !faults.is_empty() {
        return Err(format!(
            "unexpected faults: [{}]",
            super::console::join(&faults)
        ));
    }
    if vm.data.read(off, len) != vm.source.read(off, len) {
        return Err(format!(
            "data page at {:#x} does not hold the pattern",
            vm.data.pa()
        ));
    }
    if let Some(i) = vm.data.first_change_outside(off, off + len, CANARY) {
        return Err(format!("canary at offset {i:#x} overwritten"));
    }
    let t = smmu
        .translate(vm.domain, IPA_DATA)
        .map_err(|e| format!("{e}"))?
        .ok_or("IPA not mapped")?;
    Ok(format!(
        "IPA {:#x} -> PA {:#x}; canaries intact",
        IPA_DATA + off as u64,
        t.pa + off as u64
    ))
}

/// A memory-to-device DMA reads the right bytes (checked by writing them
/// back to the data page).
pub fn read_right_bytes(smmu: &Driver, edu: &Edu, vm: &Vm) -> Result<String, String> {
    let (off, len) = (0x800usize, 64usize);
    vm.data.fill(CANARY);
    load_buffer(edu, off, len)?;
    edu.dma_to_ram(off, IPA_DATA, len).map_err(edu_err)?;
    let faults = fault::coalesce(&drain(smmu), PAGE);
    if !faults.is_empty() {
        return Err(format!(
            "unexpected faults: [{}]",
            super::console::join(&faults)
        ));
    }
    if vm.data.read(0, len) != vm.source.read(off, len) {
        return Err(String::from("bytes read differ from the source page"));
    }
    Ok(format!(
        "{len} bytes read at IPA {:#x} match",
        IPA_SOURCE + off as u64
    ))
}

/// A DMA to an unmapped IPA is blocked and reported as a translation fault.
pub fn unmapped_blocked(smmu: &Driver, edus: &[Edu], edu: &Edu, vm: &Vm) -> Result<String, String> {
    let before = vm_pages(vm);
    edu.dma_to_ram(0, IPA_UNMAPPED, 64).map_err(edu_err)?;
    let faults = report_faults(smmu, edus);
    let seen = expect_fault(&faults, EventType::FTranslation, sid_of(edu)?, IPA_UNMAPPED)?;
    vm_pages_untouched(vm, &before)?;
    Ok(seen)
}

/// A write to a read-only mapping is blocked and reported as a permission
/// fault.
pub fn readonly_blocked(smmu: &Driver, edus: &[Edu], edu: &Edu, vm: &Vm) -> Result<String, String> {
    edu.dma_to_ram(0, IPA_READONLY, 64).map_err(edu_err)?;
    let faults = report_faults(smmu, edus);
    let seen = expect_fault(&faults, EventType::FPermission, sid_of(edu)?, IPA_READONLY)?;
    if !vm.readonly.all(CANARY) {
        return Err(String::from("read-only page was written"));
    }
    Ok(seen)
}

/// After unmap (and the driver's invalidation), the old IPA faults: a stale
/// TLB entry would let the DMA through.
pub fn unmap_invalidates(
    smmu: &Driver,
    edus: &[Edu],
    edu: &Edu,
    vm: &Vm,
) -> Result<String, String> {
    // A device sharing the VM may have unmapped the page already: map it
    // again, so every device runs the whole check.
    let mapped = smmu
        .translate(vm.domain, IPA_SCRATCH)
        .map_err(|e| format!("translate: {e}"))?;
    if mapped.is_none() {
        vm.scratch.fill(CANARY);
        smmu.map(
            vm.domain,
            IPA_SCRATCH,
            vm.scratch.pa(),
            PAGE,
            Perm::ReadWrite,
        )
        .map_err(|e| format!("map {IPA_SCRATCH:#x} again: {e}"))?;
    }
    // First use the mapping, so the SMMU caches the translation.
    edu.dma_to_ram(0, IPA_SCRATCH, 64).map_err(edu_err)?;
    if vm.scratch.all(CANARY) {
        return Err(String::from("the mapped write did not land"));
    }
    let before = smmu.stats().cmdq;
    smmu.unmap(vm.domain, IPA_SCRATCH, PAGE)
        .map_err(|e| format!("unmap: {e}"))?;
    let after = smmu.stats().cmdq;
    vm.scratch.fill(CANARY);
    edu.dma_to_ram(0, IPA_SCRATCH, 64).map_err(edu_err)?;
    let faults = report_faults(smmu, edus);
    let seen = expect_fault(&faults, EventType::FTranslation, sid_of(edu)?, IPA_SCRATCH)?;
    if !vm.scratch.all(CANARY) {
        return Err(String::from(
            "write reached the unmapped page: stale TLB entry",
        ));
    }
    Ok(format!(
        "{seen}; unmap issued {} TLBI + {} SYNC",
        after.commands - before.commands,
        after.syncs - before.syncs
    ))
}

/// Two devices in two VMs using the same IPA reach different pages, and
/// neither reaches the other's.
pub fn two_vms_same_ipa(
    smmu: &Driver,
    edus: &[Edu],
    a: (&Edu, &Vm),
    b: (&Edu, &Vm),
) -> Result<String, String> {
    let (off, len) = (0x600usize, 32usize);
    for (edu, vm) in [a, b] {
        vm.data.fill(CANARY);
        load_buffer(edu, off, len)?;
        edu.dma_to_ram(off, IPA_DATA + off as u64, len)
            .map_err(edu_err)?;
    }
    for (edu, vm) in [a, b] {
        if vm.data.read(off, len) != vm.source.read(off, len) {
            return Err(format!(
                "{}: its own pattern is not in its own page",
                edu.bdf
            ));
        }
    }
    if a.1.source.read(off, len) == b.1.source.read(off, len) {
        return Err(String::from(
            "the two VMs' patterns are equal: the check proves nothing",
        ));
    }
    // Device A aims at B's page by its physical address: not in A's map.
    let target = b.1.data.pa();
    a.0.dma_to_ram(0, target, 64).map_err(edu_err)?;
    let faults = report_faults(smmu, edus);
    let a_sid = sid_of(a.0)?;
    if faults.is_empty()
        || faults
            .iter()
            .any(|f| f.sid != a_sid || f.kind != EventType::FTranslation)
    {
        return Err(format!(
            "expected translation faults from sid {a_sid:#x}, got [{}]",
            super::console::join(&faults)
        ));
    }
    if b.1.data.read(off, len) != b.1.source.read(off, len)
        || b.1
            .data
            .first_change_outside(off, off + len, CANARY)
            .is_some()
    {
        return Err(String::from("device A changed device B's page"));
    }
    Ok(format!(
        "IPA {:#x} -> {:#x} / {:#x}; A -> B's PA {target:#x} faulted",
        IPA_DATA + off as u64,
        a.1.data.pa() + off as u64,
        b.1.data.pa() + off as u64
    ))
}

/// After detach the device is blocked (abort: no translation, no record).
/// The VM's StreamIDs are detached together (`Smmu::detach_group`) unless
/// an earlier call (for another device of the VM) already did.
pub fn detach_blocks(smmu: &Driver, edu: &Edu, vm: &Vm) -> Result<String, String> {
    // The VM's first device detaches the group; the others find it detached.
    let first = vm.edus.first().is_none_or(|e| e.bdf == edu.bdf);
    let attached = vm
        .sids
        .iter()
        .filter(|&&s| smmu.domain_of(s).is_some())
        .count();
    if first {
        smmu.detach_group(&vm.sids)
            .map_err(|e| format!("detach_group {}: {e}", super::console::hex(&vm.sids)))?;
    } else if attached != 0 {
        return Err(format!("{attached} of the VM's StreamIDs still attached"));
    }
    vm.data.fill(CANARY);
    let before = vm_pages(vm);
    edu.dma_to_ram(0, IPA_DATA, 64).map_err(edu_err)?;
    let _ = drain(smmu);
    vm_pages_untouched(vm, &before)?;
    for &sid in &vm.sids {
        let ste = smmu.ste(sid).map_err(|e| format!("{e}"))?;
        if !ste.config().is_abort() {
            return Err(format!(
                "STE {sid:#x} after detach has config {:#x}",
                (ste.0[0] >> 1) & 7
            ));
        }
    }
    Ok(if vm.sids.len() > 1 {
        format!(
            "{} STEs of the group abort; memory unchanged",
            vm.sids.len()
        )
    } else {
        String::from("STE abort; memory unchanged")
    })
}

// ---------------------------------------------------------------------------
// Isolation groups: devices behind a PCIe-to-PCI bridge share one alias
// StreamID, so they share one VM.

/// Two devices of one group reach the same domain: `a` writes its pattern
/// at one IPA, `b` reads it back through the same IPA and writes it to
/// another; both land in the VM's one data page.
pub fn group_shares_domain(smmu: &Driver, a: &Edu, b: &Edu, vm: &Vm) -> Result<String, String> {
    let (off_a, off_b, len) = (0xa00usize, 0xc00usize, 64usize);
    vm.data.fill(CANARY);
    load_buffer(a, off_a, len)?;
    a.dma_to_ram(off_a, IPA_DATA + off_a as u64, len)
        .map_err(edu_err)?;
    // b: RAM (the VM's data page, as a wrote it) -> device -> RAM.
    b.dma_from_ram(0, IPA_DATA + off_a as u64, len)
        .map_err(edu_err)?;
    b.dma_to_ram(0, IPA_DATA + off_b as u64, len)
        .map_err(edu_err)?;
    let faults = fault::coalesce(&drain(smmu), PAGE);
    if !faults.is_empty() {
        return Err(format!(
            "unexpected faults: [{}]",
            super::console::join(&faults)
        ));
    }
    let pattern = vm.source.read(off_a, len);
    if vm.data.read(off_a, len) != pattern {
        return Err(format!("{}'s write did not land", a.bdf));
    }
    if vm.data.read(off_b, len) != pattern {
        return Err(format!(
            "{} did not read {}'s bytes through the VM",
            b.bdf, a.bdf
        ));
    }
    let t = smmu
        .translate(vm.domain, IPA_DATA)
        .map_err(|e| format!("{e}"))?
        .ok_or("IPA not mapped")?;
    Ok(format!(
        "{} IPA {:#x} -> PA {:#x}, {} read it and wrote IPA {:#x} -> PA {:#x}",
        a.bdf,
        IPA_DATA + off_a as u64,
        t.pa + off_a as u64,
        b.bdf,
        IPA_DATA + off_b as u64,
        t.pa + off_b as u64
    ))
}

/// A member of a declared multi-StreamID group cannot be attached or
/// detached alone: the driver names the group, and nothing changes.
pub fn group_member_cannot_move_alone(smmu: &Driver, vm: &Vm) -> Result<String, String> {
    use smmuv3::error::Error;
    let group = smmu
        .group_of(vm.sid)
        .ok_or_else(|| format!("sid {:#x} is in no declared group", vm.sid))?;
    let before = smmu.stream_table_snapshot();
    let detach = smmu.detach(vm.sid);
    let attach = smmu.attach(vm.domain, vm.sid);
    // `matches!`, not `!=` on `Result<(), Error>`: the image then carries
    // no derived `PartialEq` for the whole error enum.
    let refused = |r: &Result<(), Error>| matches!(r, Err(Error::SidInGroup { sid, group: g }) if *sid == vm.sid && *g == group);
    if !refused(&detach) || !refused(&attach) {
        return Err(format!(
            "detach: {}, attach: {}",
            super::console::outcome(&detach),
            super::console::outcome(&attach)
        ));
    }
    if smmu.stream_table_snapshot() != before {
        return Err(String::from("the stream table changed"));
    }
    if vm
        .sids
        .iter()
        .any(|&s| smmu.domain_of(s) != Some(vm.domain))
    {
        return Err(String::from("the group is no longer whole in its domain"));
    }
    Ok(format!(
        "detach/attach of sid {:#x} alone: SidInGroup (group {group}); {} StreamIDs still in domain {}",
        vm.sid,
        vm.sids.len(),
        vm.domain
    ))
}

/// The contents of every page a VM's device can write.
fn vm_pages(vm: &Vm) -> [Vec<u8>; 3] {
    [&vm.data, &vm.readonly, &vm.scratch].map(|p| p.read(0, PAGE as usize))
}

/// Fails if any writable page differs from `before`.
fn vm_pages_untouched(vm: &Vm, before: &[Vec<u8>; 3]) -> Result<(), String> {
    for ((name, now), then) in ["data", "readonly", "scratch"]
        .iter()
        .zip(vm_pages(vm))
        .zip(before)
    {
        if let Some(i) = now.iter().zip(then).position(|(a, b)| a != b) {
            return Err(format!("{name} page changed at offset {i:#x}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Failure paths.

/// Injects an illegal command into a batch: the driver reports it, replaces
/// it with CMD_SYNC, and the queue carries on.
pub fn command_error_recovery(smmu: &Driver) -> Result<String, String> {
    use smmuv3::error::{CmdqError, Error};
    use smmuv3::expert::Command;
    let before = smmu.stats().cmdq;
    // SAFETY: invalidations, CMD_SYNC without MSI, and deliberately illegal opcodes only: nothing names memory.
    let r = unsafe {
        smmu.submit_unchecked(&[
            Command::TlbiNsnhAll,
            Command::Raw([0x07, 0]),
            Command::cfgi_all(),
        ])
    };
    let Err(Error::CommandError {
        error: CmdqError::Illegal,
        index,
        opcode,
    }) = r
    else {
        return Err(format!(
            "expected CERROR_ILL, got {}",
            super::console::outcome(&r)
        ));
    };
    // Recovery acknowledged the error: the next batch runs (the queue
    // executes nothing while GERROR.CMDQ_ERR is active) and finds no
    // error left over (no register read spent on checking GERROR here).
    // SAFETY: an invalidation only: nothing names memory.
    unsafe { smmu.submit_unchecked(&[Command::TlbiNsnhAll]) }
        .map_err(|e| format!("next batch: {e}"))?;
    let after = smmu.stats().cmdq;
    if after.errors - before.errors != 1 {
        return Err(format!(
            "{} command errors recovered, expected exactly 1",
            after.errors - before.errors
        ));
    }
    Ok(format!(
        "opcode {opcode:#04x} at slot {index}: CERROR_ILL, replaced by CMD_SYNC, {} error recovered, next batch completed",
        after.errors - before.errors
    ))
}

/// Floods the event queue with more fault records than it holds (interrupts
/// masked, so nobody drains meanwhile), then checks the loss is detected and
/// fault reporting still works.
pub fn event_storm(smmu: &Driver, edus: &[Edu], edu: &Edu, vm: &Vm) -> Result<String, String> {
    let capacity = 1u32 << smmu.config().eventq_log2;
    let dmas = capacity / 1024 + 1;
    let before = smmu.stats();
    super::gic::without_irqs(|| -> Result<(), String> {
        for _ in 0..dmas {
            edu.dma_to_ram(0, IPA_UNMAPPED, 4096).map_err(edu_err)?;
        }
        Ok(())
    })?;
    smmu.service(|_| ()).map_err(|e| format!("service: {e}"))?;
    let _ = drain(smmu);
    let after = smmu.stats();
    let aborts = after.eventq_aborts - before.eventq_aborts;
    let overflows = after.eventq_overflows - before.eventq_overflows;
    if aborts + overflows == 0 {
        return Err(format!(
            "{} records into {capacity} slots and no overflow detected",
            dmas * 1024
        ));
    }
    // Reporting keeps working: one more fault arrives whole.
    edu.dma_to_ram(0, IPA_READONLY, 64).map_err(edu_err)?;
    let faults = report_faults(smmu, edus);
    expect_fault(&faults, EventType::FPermission, sid_of(edu)?, IPA_READONLY)?;
    if !vm.readonly.all(CANARY) {
        return Err(String::from("read-only page was written"));
    }
    Ok(format!(
        "{} records into a {capacity}-entry queue: {} drained, {} lost, overflow detected ({aborts} EVENTQ_ABT_ERR, {overflows} OVFLG); next fault reported whole",
        dmas * 1024,
        after.events - before.events,
        u64::from(dmas * 1024).saturating_sub(after.events - before.events)
    ))
}
