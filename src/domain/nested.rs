//! Nested translation owned by a guest: the guest's stage-1 tables and CD,
//! in its own RAM, in front of its VM's stage-2 domain.
//!
//! A hypervisor that offers its guests a paravirtual IOMMU calls
//! [`Smmu::attach_nested`] when a guest hands over a CD (by its IPA) for
//! one of its devices. The StreamID must already be attached to the VM's
//! stage-2 domain; its STE becomes Config = nested (0b111) with
//! S1ContextPtr = the CD's IPA, S1Fmt = linear, S1CDMax = 0, and the
//! stage-2 fields (S2TTB, geometry, S2VMID) of the domain, so every fetch
//! of the CD and of the guest's tables, and every output address, goes
//! through the VM's stage 2. [`Smmu::detach_nested`] returns the stream to
//! the domain's plain stage-2 STE. Both go through the STE planner
//! ([`crate::ste::plan_update`]; stage 2 <-> nested is hitless: two
//! syncs), then CFGI_CD_ALL for the StreamID and TLBI_NH_ASID for the ASID
//! the stream gave up.
//!
//! **Validation.** Before anything changes, [`validate_cd`] checks the
//! request against the SMMU's ID registers: the CD lies in the guest's RAM
//! (IPA ranges the caller passes) and is read through a caller-supplied
//! reader (e.g. the hypervisor's own view of the guest's stage 2); V = 1,
//! AA64 = 1, A = 1, ENDI = 0 unless the SMMU has mixed-endian tables,
//! S = 0, or S = 1 on an SMMU that forces stalls (IDR0.STALL_MODEL = 0b10,
//! where S = 0 is ILLEGAL: the CD is the guest's, so S is required, not
//! rewritten; the hypervisor should report the forced model in the
//! guest's virtual IDR0, and the guest's stalls are answered by
//! [`Smmu::service`] like any other), HA = HD = 0 unless the SMMU
//! implements HTTU, EPD1 = 1 (TTB1 is not offered to guests), TG0 a
//! granule IDR5 has, T0SZ between 16 and 39 (a 25..48-bit VA space; no
//! 52-bit VA), IPS at most the SMMU's OAS and never 6/7 (52 bits or
//! reserved), TTB0 aligned to the granule and inside the guest's RAM.
//! A rejected request returns [`NestedError`] (wrapped in
//! [`Error::Nested`]) and changes nothing: no STE word, no command.
//!
//! Validation is a courtesy, not the isolation boundary: the guest can
//! rewrite its CD and tables after the call, and the SMMU may refetch them
//! at any time. Isolation comes from stage 2, which confines the CD fetch,
//! every walk and every output address to the VM's own memory; a bad CD
//! written later only makes that stream fault (C_BAD_CD). The checks give
//! the guest a typed answer and keep known-bad descriptors (QEMU crashes on
//! IPS 6/7) from being installed through this API.
//!
//! **ASID policy.** A guest's ASIDs tag TLB entries together with its
//! VMID, so they cannot hit another VM's. Still, each ASID has exactly one
//! owner: a guest may use an ASID that is non-zero, within IDR0's ASID
//! width, not allocated by the driver to one of its own stage-1 domains
//! ([`NestedError::AsidDriverOwned`]) and not held by another VM's nested
//! stream ([`NestedError::AsidOtherVm`]). On first use it is reserved in
//! the driver's ASID allocator (so no later stage-1 domain takes it) and
//! released when the VM's last nested stream with it is detached.
//! Invalidations ([`Smmu::nested_invalidate_asid`],
//! [`Smmu::nested_invalidate_va`]) are accepted only for an ASID the VM
//! holds, and are issued with the VM's VMID: TLBI_NH_ASID, or TLBI_NH_VA
//! (range form with IDR3.RIL), then CMD_SYNC.

use core::fmt;
use core::ops::Range;

use tock_registers::LocalRegisterCopy;

use crate::cd::{CD_0, CD_1};
use crate::cmd::{self, Command, InvalidationHints};
use crate::error::{Error, Result, Unsupported};
use crate::features::{Features, Httu, TtEndian};
use crate::hal::Hal;
use crate::smmu::Smmu;
use crate::stage2::Granule;
use crate::ste::{Stage1Ste, Ste};

use super::{DomainId, Domains, MAX_RANGE_COMMANDS, Tables};

/// Bytes of one CD.
pub const CD_BYTES: u64 = 64;
/// Smallest T0SZ accepted: a 48-bit VA space (no 52-bit VA).
pub const MIN_T0SZ: u8 = 16;
/// Largest T0SZ accepted: a 25-bit VA space.
pub const MAX_T0SZ: u8 = 39;
/// Output sizes of the IPS encodings 0..=5 (6 = 52 bits is refused, 7 is
/// reserved).
const IPS_BITS: [u8; 6] = [32, 36, 40, 42, 44, 48];

/// Why a guest's nested-translation request was refused. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NestedError {
    /// The domain does not translate with stage 2 (a stage-1 domain cannot
    /// be the second stage).
    NotStage2Domain(DomainId),
    /// The StreamID is not attached to the VM's domain (another VM's, or
    /// no one's).
    SidNotInDomain(u32),
    /// The StreamID has no nested configuration to detach.
    NotNested(u32),
    /// The CD's IPA is not 64-byte aligned.
    CdMisaligned(u64),
    /// The CD's 64 bytes are not inside the guest's RAM.
    CdOutsideGuestRam(u64),
    /// The reader could not read the guest's memory at this IPA.
    GuestReadFailed(u64),
    /// CD.V = 0.
    CdNotValid,
    /// CD.AA64 = 0 (AArch32 tables).
    NotAarch64,
    /// CD.A = 0.
    AbortDisabled,
    /// CD.S does not match the SMMU's stall model: S = 1 where stalls are
    /// not forced (this driver offers guests no stalls), or S = 0 where
    /// IDR0.STALL_MODEL = 0b10 forces them (ILLEGAL there: C_BAD_CD).
    Stall,
    /// CD.ENDI = 1 and the SMMU has little-endian tables only.
    BigEndian,
    /// CD.HA or CD.HD set and the SMMU lacks that hardware update.
    HardwareUpdate,
    /// CD.EPD1 = 0: TTB1 is not offered to guests.
    Ttb1Enabled,
    /// CD.T0SZ outside [`MIN_T0SZ`]..=[`MAX_T0SZ`].
    BadT0sz(u8),
    /// CD.TG0 = 3 (reserved).
    BadTg0(u8),
    /// CD.TG0 names a granule the SMMU lacks (IDR5.GRAN*).
    GranuleUnsupported(u8),
    /// CD.IPS beyond the SMMU's OAS, or 6/7.
    BadIps(u8),
    /// CD.TTB0 not aligned to the granule.
    Ttb0Misaligned(u64),
    /// CD.TTB0 not inside the guest's RAM.
    Ttb0OutsideGuestRam(u64),
    /// ASID 0 (reserved) or beyond the SMMU's ASID width.
    BadAsid(u16),
    /// The driver allocated this ASID to one of its own stage-1 domains.
    AsidDriverOwned(u16),
    /// Another VM's nested stream holds this ASID.
    AsidOtherVm(u16),
    /// An invalidation for an ASID the VM does not hold.
    AsidNotOwned(u16),
    /// An invalidation range that is empty, unaligned or wraps.
    BadRange {
        /// Start of the range.
        va: u64,
        /// Its length.
        len: u64,
    },
}

impl fmt::Display for NestedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotStage2Domain(d) => write!(f, "domain {d} is not a stage-2 domain"),
            Self::SidNotInDomain(s) => {
                write!(f, "StreamID {s:#x} is not attached to the VM's domain")
            }
            Self::NotNested(s) => write!(f, "StreamID {s:#x} is not nested"),
            Self::CdMisaligned(a) => write!(f, "CD IPA {a:#x} is not 64-byte aligned"),
            Self::CdOutsideGuestRam(a) => write!(f, "CD IPA {a:#x} is outside the guest's RAM"),
            Self::GuestReadFailed(a) => write!(f, "guest memory at IPA {a:#x} unreadable"),
            Self::CdNotValid => write!(f, "CD.V = 0"),
            Self::NotAarch64 => write!(f, "CD.AA64 = 0"),
            Self::AbortDisabled => write!(f, "CD.A = 0"),
            Self::Stall => write!(f, "CD.S does not match the SMMU's stall model"),
            Self::BigEndian => write!(f, "CD.ENDI = 1 on a little-endian SMMU"),
            Self::HardwareUpdate => write!(f, "CD.HA/HD without HTTU"),
            Self::Ttb1Enabled => write!(f, "CD.EPD1 = 0 (TTB1 not offered)"),
            Self::BadT0sz(v) => write!(f, "CD.T0SZ {v} out of range"),
            Self::BadTg0(v) => write!(f, "CD.TG0 {v} reserved"),
            Self::GranuleUnsupported(v) => write!(f, "CD.TG0 {v}: granule not implemented"),
            Self::BadIps(v) => write!(f, "CD.IPS {v} beyond the SMMU's OAS or reserved"),
            Self::Ttb0Misaligned(a) => write!(f, "CD.TTB0 {a:#x} not aligned to the granule"),
            Self::Ttb0OutsideGuestRam(a) => write!(f, "CD.TTB0 {a:#x} outside the guest's RAM"),
            Self::BadAsid(a) => write!(f, "ASID {a:#x} reserved or beyond the ASID width"),
            Self::AsidDriverOwned(a) => write!(f, "ASID {a:#x} belongs to the driver"),
            Self::AsidOtherVm(a) => write!(f, "ASID {a:#x} belongs to another VM"),
            Self::AsidNotOwned(a) => write!(f, "ASID {a:#x} not held by this VM"),
            Self::BadRange { va, len } => write!(f, "bad range {va:#x}+{len:#x}"),
        }
    }
}

impl From<NestedError> for Error {
    fn from(e: NestedError) -> Error {
        Error::Nested(e)
    }
}

/// What [`validate_cd`] accepted: the fields the driver acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestCd {
    /// The guest's ASID.
    pub asid: u16,
    /// The IPA of its stage-1 root table.
    pub ttb0: u64,
    /// Its granule (for TLBI_NH_VA ranges).
    pub granule: Granule,
    /// Its VA size in bits (64 - T0SZ).
    pub va_bits: u8,
    /// Its output (IPA) size in bits.
    pub ips_bits: u8,
}

/// A nested stream's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NestedStream {
    pub(crate) domain: DomainId,
    pub(crate) cd_ipa: u64,
    pub(crate) cd: GuestCd,
}

fn inside(ram: &[Range<u64>], addr: u64, len: u64) -> bool {
    addr.checked_add(len)
        .is_some_and(|end| ram.iter().any(|r| r.start <= addr && end <= r.end))
}

/// Checks the CD IPA's placement: 64-byte aligned, its 64 bytes inside one
/// of `guest_ram`'s IPA ranges.
pub fn validate_cd_ipa(
    cd_ipa: u64,
    guest_ram: &[Range<u64>],
) -> core::result::Result<(), NestedError> {
    if !cd_ipa.is_multiple_of(CD_BYTES) {
        return Err(NestedError::CdMisaligned(cd_ipa));
    }
    if !inside(guest_ram, cd_ipa, CD_BYTES) {
        return Err(NestedError::CdOutsideGuestRam(cd_ipa));
    }
    Ok(())
}

/// Checks a guest's CD (its eight dwords as read from its memory) against
/// the SMMU's features and the guest's RAM: see the module documentation
/// for every rule. ASID ownership is checked by [`Smmu::attach_nested`].
/// Never panics, whatever the words.
pub fn validate_cd(
    words: &[u64; 8],
    f: &Features,
    guest_ram: &[Range<u64>],
) -> core::result::Result<GuestCd, NestedError> {
    let d0 = LocalRegisterCopy::<u64, CD_0::Register>::new(words[0]);
    let d1 = LocalRegisterCopy::<u64, CD_1::Register>::new(words[1]);
    if !d0.is_set(CD_0::V) {
        return Err(NestedError::CdNotValid);
    }
    if !d0.is_set(CD_0::AA64) {
        return Err(NestedError::NotAarch64);
    }
    if !d0.is_set(CD_0::A) {
        return Err(NestedError::AbortDisabled);
    }
    // CD.S must be what the SMMU's stall model allows: 1 where stalls are
    // forced (S = 0 is ILLEGAL there, C_BAD_CD), 0 otherwise (ILLEGAL with
    // STALL_MODEL = 0b01; with 0b00 the driver offers guests no stalls).
    // Required, not forced: the CD is in the guest's memory, which the
    // SMMU reads directly; the driver does not rewrite it.
    if d0.is_set(CD_0::S) != f.stall_forced() {
        return Err(NestedError::Stall);
    }
    if d0.is_set(CD_0::ENDI) && f.tt_endian != TtEndian::Mixed {
        return Err(NestedError::BigEndian);
    }
    let ha_ok = matches!(f.httu, Httu::Access | Httu::AccessDirty);
    let hd_ok = f.httu == Httu::AccessDirty;
    if (d0.is_set(CD_0::HA) && !ha_ok) || (d0.is_set(CD_0::HD) && !hd_ok) {
        return Err(NestedError::HardwareUpdate);
    }
    if !d0.is_set(CD_0::EPD1) {
        return Err(NestedError::Ttb1Enabled);
    }
    let tg0 = d0.read(CD_0::TG0) as u8;
    let granule = match tg0 {
        0 => Granule::K4,
        1 => Granule::K64,
        2 => Granule::K16,
        _ => return Err(NestedError::BadTg0(tg0)),
    };
    if !f.supports_granule(granule) {
        return Err(NestedError::GranuleUnsupported(tg0));
    }
    let t0sz = d0.read(CD_0::T0SZ) as u8;
    if !(MIN_T0SZ..=MAX_T0SZ).contains(&t0sz) {
        return Err(NestedError::BadT0sz(t0sz));
    }
    let ips = d0.read(CD_0::IPS) as u8;
    let ips_bits = match IPS_BITS.get(usize::from(ips)) {
        Some(&b) if b <= f.oas_bits => b,
        _ => return Err(NestedError::BadIps(ips)),
    };
    let ttb0 = d1.read(CD_1::TTB0) << 4;
    if !ttb0.is_multiple_of(granule.size()) {
        return Err(NestedError::Ttb0Misaligned(ttb0));
    }
    if !inside(guest_ram, ttb0, granule.size()) || ttb0 >> ips_bits != 0 {
        return Err(NestedError::Ttb0OutsideGuestRam(ttb0));
    }
    let asid = d0.read(CD_0::ASID) as u16;
    if asid == 0
        || u32::from(asid)
            .checked_shr(u32::from(f.asid_bits))
            .unwrap_or(0)
            != 0
    {
        return Err(NestedError::BadAsid(asid));
    }
    Ok(GuestCd {
        asid,
        ttb0,
        granule,
        va_bits: 64 - t0sz,
        ips_bits,
    })
}

/// A guest's nested-translation request for one of its devices.
#[derive(Debug, Clone, Copy)]
pub struct NestedRequest<'a> {
    /// The VM's stage-2 domain (the StreamID must be attached to it).
    pub domain: DomainId,
    /// The StreamID.
    pub sid: u32,
    /// The IPA of the guest's CD.
    pub cd_ipa: u64,
    /// The guest's RAM, as IPA ranges: the CD and TTB0 must lie inside.
    pub guest_ram: &'a [Range<u64>],
}

impl<H: Hal> Domains<H> {
    /// Who may use `asid` for `domain`: `Ok(true)` if the domain already
    /// holds it, `Ok(false)` if it is free.
    fn asid_owner_check(
        &self,
        domain: DomainId,
        asid: u16,
    ) -> core::result::Result<bool, NestedError> {
        let mut held_here = false;
        for (_, n) in self.nested.iter() {
            if n.cd.asid == asid {
                if n.domain != domain {
                    return Err(NestedError::AsidOtherVm(asid));
                }
                held_here = true;
            }
        }
        if !held_here && self.asids.is_allocated(asid) {
            return Err(NestedError::AsidDriverOwned(asid));
        }
        Ok(held_here)
    }

    /// Whether a nested stream of `domain` other than `except` holds
    /// `asid`.
    fn asid_held(&self, domain: DomainId, asid: u16, except: u32) -> bool {
        self.nested
            .iter()
            .any(|(&s, n)| s != except && n.domain == domain && n.cd.asid == asid)
    }
}

impl<H: Hal> Smmu<H> {
    /// Installs a nested STE for `req.sid` (see the module documentation):
    /// validates the request, then moves the stream from its domain's
    /// stage-2 STE (or an earlier nested one) to the nested STE, then
    /// CFGI_CD_ALL, TLBI_NH_ASID for an ASID it gave up, and CMD_SYNC. `read` reads one
    /// 64-bit word of guest memory at an IPA. Returns what was accepted.
    ///
    /// Errors: [`Unsupported::Nested`] without both stages;
    /// [`Error::Nested`] for a refused request (nothing changed); command
    /// errors. `read` is called without any driver lock held, so it may
    /// use the driver (e.g. [`Smmu::translate`] of the VM's domain).
    pub fn attach_nested(
        &self,
        req: &NestedRequest<'_>,
        read: &mut dyn FnMut(u64) -> Option<u64>,
    ) -> Result<GuestCd> {
        let f = self.features();
        if !f.nested() {
            return Err(Error::Unsupported(Unsupported::Nested));
        }
        // The StreamID first (a guest naming another VM's stream learns
        // nothing else), then the CD, read without the domains lock (the
        // reader may translate through the domain itself).
        {
            let domains = self.domains.lock();
            let d = domains.get(req.domain)?;
            if !matches!(d.tables, Tables::Owned(_) | Tables::External { .. }) {
                return Err(NestedError::NotStage2Domain(req.domain).into());
            }
            if domains.attached.get(&req.sid) != Some(&req.domain) {
                return Err(NestedError::SidNotInDomain(req.sid).into());
            }
        }
        validate_cd_ipa(req.cd_ipa, req.guest_ram)?;
        let mut words = [0u64; 8];
        for (i, w) in words.iter_mut().enumerate() {
            let ipa = req.cd_ipa + 8 * i as u64;
            *w = read(ipa).ok_or(NestedError::GuestReadFailed(ipa))?;
        }
        let cd = validate_cd(&words, f, req.guest_ram)?;
        let mut domains = self.domains.lock();
        // Checked again under the lock: the stream may have moved meanwhile.
        if domains.attached.get(&req.sid) != Some(&req.domain) {
            return Err(NestedError::SidNotInDomain(req.sid).into());
        }
        let held = domains.asid_owner_check(req.domain, cd.asid)?;
        let d = domains.get(req.domain)?;
        let target = self.nested_ste(d, req.cd_ipa)?;
        let vmid = d.vmid;
        // Room for the bookkeeping first: once the STE is written it
        // cannot fail.
        domains.nested.reserve(1)?;
        if !held {
            domains
                .asids
                .alloc_specific(cd.asid)
                .map_err(|_| NestedError::AsidDriverOwned(cd.asid))?;
        }
        let old = domains.nested.get(&req.sid).copied();
        if let Err(e) = self.write_ste(req.sid, &target) {
            if !held {
                let _ = domains.asids.free(cd.asid);
            }
            return Err(e);
        }
        if old.is_none() {
            domains.get_mut(req.domain)?.nested_streams += 1;
        }
        domains.nested.insert(
            req.sid,
            NestedStream {
                domain: req.domain,
                cd_ipa: req.cd_ipa,
                cd,
            },
        );
        // (No allocation: the STE already changed.)
        let mut cmds = [Command::CfgiCdAll { sid: req.sid }; 2];
        let mut n = 1;
        if let Some(o) = old.filter(|o| o.cd.asid != cd.asid) {
            cmds[1] = Command::TlbiNhAsid {
                vmid,
                asid: o.cd.asid,
            };
            n = 2;
            if !domains.asid_held(req.domain, o.cd.asid, u32::MAX) {
                let _ = domains.asids.free(o.cd.asid);
            }
        }
        if self.is_live() {
            self.submit(&cmds[..n])?;
        }
        Ok(cd)
    }

    /// The nested STE of a stream of stage-2 domain `d` whose guest CD is
    /// at `cd_ipa`: one CD, linear, CD fetches with CR1's walk attributes;
    /// privilege and instruction/data as the device sends them (PRIVCFG =
    /// INSTCFG = use incoming, as in the plain stage-2 STE: dword 1 then
    /// differs only in fields stage 2 does not use, so stage 2 <-> nested
    /// stays hitless). PCIe DMA without PASID is unprivileged: a guest maps
    /// its DMA pages EL0-accessible (AP\[1\] = 1), as Linux's io-pgtable
    /// does. Stage-2 fields and VMID are the domain's.
    fn nested_ste(&self, d: &super::Domain<H>, cd_ipa: u64) -> Result<Ste> {
        let w = self.walk_attributes();
        let s2 = self.domain_s2(d)?;
        // S2S = 1 where the SMMU forces stalls (S2S = 0 is ILLEGAL there);
        // S1STALLD stays 0 (1 is ILLEGAL unless STALL_MODEL = 0b00).
        Ok(Ste::nested(
            &Stage1Ste {
                cir: w.inner,
                cor: w.outer,
                csh: w.shareability,
                ..Stage1Ste::new(cd_ipa, d.vmid)
            },
            &s2,
        )?
        .with_s2_stall(self.features().stall_forced()))
    }

    /// Returns nested stream `sid` of `domain` to the domain's plain
    /// stage-2 STE (through the planner), then CFGI_CD_ALL and
    /// TLBI_NH_ASID for its ASID, + CMD_SYNC; the ASID is released when no
    /// other stream of the VM holds it.
    ///
    /// Errors: [`NestedError::SidNotInDomain`] / [`NestedError::NotNested`]
    /// (nothing changed); command errors.
    pub fn detach_nested(&self, domain: DomainId, sid: u32) -> Result<()> {
        let mut domains = self.domains.lock();
        if domains.attached.get(&sid) != Some(&domain) {
            return Err(NestedError::SidNotInDomain(sid).into());
        }
        let Some(n) = domains.nested.get(&sid).copied() else {
            return Err(NestedError::NotNested(sid).into());
        };
        let d = domains.get(domain)?;
        let vmid = d.vmid;
        let ste = self.domain_ste(d)?;
        self.write_ste(sid, &ste)?;
        Self::forget_nested_locked(&mut domains, sid);
        if self.is_live() {
            self.submit(&[
                Command::CfgiCdAll { sid },
                Command::TlbiNhAsid {
                    vmid,
                    asid: n.cd.asid,
                },
            ])?;
        }
        Ok(())
    }

    /// Drops `sid`'s nested bookkeeping (its STE already rewritten by the
    /// caller), releasing its ASID if no other stream of its VM holds it.
    /// Returns the (VMID-less) ASID it held.
    pub(crate) fn forget_nested_locked(domains: &mut Domains<H>, sid: u32) -> Option<u16> {
        let n = domains.nested.remove(&sid)?;
        if let Ok(d) = domains.get_mut(n.domain) {
            d.nested_streams = d.nested_streams.saturating_sub(1);
        }
        if !domains.asid_held(n.domain, n.cd.asid, sid) {
            let _ = domains.asids.free(n.cd.asid);
        }
        Some(n.cd.asid)
    }

    /// The (CD IPA, accepted CD) of nested stream `sid`, if it is one.
    pub fn nested_of(&self, sid: u32) -> Option<(u64, GuestCd)> {
        self.domains
            .lock()
            .nested
            .get(&sid)
            .map(|n| (n.cd_ipa, n.cd))
    }

    /// The VMID and granule shift for an invalidation of `asid` by
    /// `domain`'s guest, if it holds the ASID.
    fn nested_inv_target(&self, domain: DomainId, asid: u16) -> Result<(u16, u32)> {
        let domains = self.domains.lock();
        let vmid = domains.get(domain)?.vmid;
        domains
            .nested
            .iter()
            .find(|(_, n)| n.domain == domain && n.cd.asid == asid)
            .map(|(_, n)| (vmid, n.cd.granule.shift()))
            .ok_or_else(|| NestedError::AsidNotOwned(asid).into())
    }

    /// INV_ASID for `domain`'s guest: TLBI_NH_ASID (its VMID, `asid`) +
    /// CMD_SYNC. Errors: [`NestedError::AsidNotOwned`].
    pub fn nested_invalidate_asid(&self, domain: DomainId, asid: u16) -> Result<()> {
        let (vmid, _) = self.nested_inv_target(domain, asid)?;
        self.submit(&[Command::TlbiNhAsid { vmid, asid }])
    }

    /// INV_VA for `domain`'s guest: `[va, va + len)` of `asid` with
    /// TLBI_NH_VA (range form with IDR3.RIL; TLBI_NH_ASID past
    /// [`MAX_RANGE_COMMANDS`]) and its VMID, + CMD_SYNC. `va` and `len`
    /// must be multiples of the guest's granule, `len` non-zero, the range
    /// not wrapping. Returns the number of TLBI commands issued.
    pub fn nested_invalidate_va(
        &self,
        domain: DomainId,
        asid: u16,
        va: u64,
        len: u64,
    ) -> Result<usize> {
        let (vmid, shift) = self.nested_inv_target(domain, asid)?;
        let g = 1u64 << shift;
        if len == 0
            || !va.is_multiple_of(g)
            || !len.is_multiple_of(g)
            || va.checked_add(len).is_none()
        {
            return Err(NestedError::BadRange { va, len }.into());
        }
        let max = self
            .features()
            .max_commands_per_sync()
            .map_or(MAX_RANGE_COMMANDS, |m| m.min(MAX_RANGE_COMMANDS));
        let ril = self.features().ril;
        let plan = cmd::nh_range_plan(
            vmid,
            asid,
            va,
            len,
            shift,
            ril,
            max,
            InvalidationHints::NONE,
        );
        self.submit_plan(&plan)?;
        Ok(plan.len())
    }
}

#[cfg(test)]
#[path = "nested_tests.rs"]
mod tests;
