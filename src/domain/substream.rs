//! Substreams: stage-1 domains on the SubstreamIDs of a stream, through a
//! driver-owned CD table per StreamID ([`crate::cdtable`]).
//!
//! On an SMMU with IDR1.SSIDSIZE > 0 (and a [`CdTablePolicy`] asking for
//! at least one SSID bit), attaching a StreamID to a stage-1 domain gives
//! the stream its own CD table: the domain's CD is copied to SSID 0, and
//! the STE points at the table (S1Fmt, S1CDMax > 0, S1DSS = substream 0:
//! traffic without a SubstreamID uses CD 0). [`Smmu::attach_ssid`] then
//! puts further stage-1 domains on other SSIDs and [`Smmu::detach_ssid`]
//! removes them. With SSIDSIZE = 0 (QEMU) nothing changes: one CD per
//! stream, S1CDMax = 0.
//!
//! Every CD write goes through [`crate::cd::plan_update`], whose `Sync`
//! steps are CMD_CFGI_CD (SID, SSID, Leaf = 1) + CMD_SYNC: a CD-only
//! change. A new L1CD is followed by CMD_CFGI_CD with Leaf = 0 + CMD_SYNC
//! before any CD behind it is written: IHI 0070 §4.3.3 (CMD_CFGI_CD) says
//! Leaf = 1 invalidates only the CD of the SSID, and Leaf = 0 also any
//! cached L1CD on the path to it (an SMMU may cache an invalid L1CD).
//! Before the STE points at the table (attach), nothing is invalidated:
//! the SMMU cannot have read it.
//!
//! The CDs in a table are copies of each domain's own CD, which never
//! changes while the domain exists (it is written at creation and cleared
//! at destruction, and a domain on a stream or substream cannot be
//! destroyed). If the STE write of an attach fails, the new table is kept
//! (unattached) so that memory the SMMU may reach is never freed; a later
//! attach or detach of the StreamID releases it.

use crate::cd::{self, Cd};
use crate::cdtable::{CdTable, CdTablePolicy, SubstreamError};
use crate::cmd::Command;
use crate::entry_plan::UpdateStep;
use crate::error::Result;
use crate::hal::Hal;
use crate::smmu::Smmu;

use super::{Domain, DomainId, Tables};

impl<H: Hal> Smmu<H> {
    /// Sets how CD tables are built for streams attached from now on
    /// (S1CDMax = min(IDR1.SSIDSIZE, `policy.ssid_bits`); two levels with
    /// `policy.leaf` leaves when IDR0.CD2L and the SSIDs exceed one leaf).
    /// `ssid_bits = 0` keeps one CD per stream. Streams already attached
    /// keep their tables.
    pub fn set_cd_table_policy(&self, policy: CdTablePolicy) {
        self.domains.lock().cd_policy = policy;
    }

    /// The CD table a stream attached to stage-1 domain `d` gets, with the
    /// domain's CD at SSID 0; `None` without substreams. The table is not
    /// yet reachable: no invalidation is needed.
    pub(crate) fn new_cd_table(
        &self,
        d: &Domain<H>,
        policy: CdTablePolicy,
    ) -> Result<Option<CdTable<H>>> {
        let Tables::Stage1(s1) = &d.tables else {
            return Ok(None);
        };
        let f = self.features();
        let Some((format, s1cdmax)) = CdTable::<H>::layout(f.ssid_bits, f.cd2l, policy) else {
            return Ok(None);
        };
        let mut table = CdTable::<H>::new(format, s1cdmax, f.coherent)?
            .with_output_size(u32::from(f.oas_bits))?;
        table.users.reserve(1)?;
        table.ensure_leaf(0)?;
        let cd = read_cd(&s1.cd);
        self.write_table_cd(&table, None, 0, &cd)?;
        table.users.insert(0, d.id);
        Ok(Some(table))
    }

    /// Replaces the CD of `ssid` in `table` by `target` through
    /// [`cd::plan_update`]; `Sync` = CFGI_CD (`sid`, `ssid`, Leaf = 1) +
    /// CMD_SYNC when `sid` is given (the STE points at the table) and the
    /// SMMU is live. The leaf must exist.
    fn write_table_cd(
        &self,
        table: &CdTable<H>,
        sid: Option<u32>,
        ssid: u32,
        target: &Cd,
    ) -> Result<()> {
        let slot = table.slot(ssid).ok_or(SubstreamError::SsidOutOfRange {
            ssid,
            s1cdmax: table.s1cdmax(),
        })?;
        let current = slot.read();
        for step in cd::plan_update(&current, target)?.iter().copied() {
            match step {
                UpdateStep::Write { dword, value } => slot.mem.write_u64(slot.first + dword, value),
                UpdateStep::Publish => slot.mem.publish(slot.first, 8),
                UpdateStep::Sync => {
                    if let Some(sid) = sid.filter(|_| self.is_live()) {
                        self.submit(&[Command::CfgiCd {
                            sid,
                            ssid,
                            leaf: true,
                        }])?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Puts stage-1 domain `domain`'s CD at SubstreamID `ssid` of `sid`,
    /// a StreamID attached (at SSID 0) to a stage-1 domain through a CD
    /// table. A leaf is allocated if `ssid` is the first of its leaf
    /// (L1CD published, CFGI_CD Leaf = 0 + CMD_SYNC), then the CD is
    /// written (CFGI_CD Leaf = 1 + CMD_SYNC).
    ///
    /// Errors (nothing changed): [`SubstreamError::NoCdTable`],
    /// [`SubstreamError::NotStage1`], [`SubstreamError::SsidOutOfRange`],
    /// [`SubstreamError::SsidInUse`], [`SubstreamError::VmidMismatch`]
    /// (SMMU with stage 2, domain VMID not the stream's), unknown domain,
    /// [`crate::Error::NoMemory`]. A failed command after the leaf is
    /// published leaves the leaf (empty) and, if the CD was being written,
    /// the SSID recorded, so that [`Smmu::detach_ssid`] can clear it.
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// use smmuv3::testing::{HostHal, SmmuModel};
    /// use smmuv3::{Config, DomainOptions, Error, Granule, Smmu, Stage2Config, StagePolicy};
    /// use smmuv3::SubstreamError;
    ///
    /// // A stage-1-only SMMU with 8 SSID bits and two-level CD tables.
    /// let model = SmmuModel::builder().stage2(false).ssid_bits(8).cd2l(true).build();
    /// // SAFETY: the model outlives the driver; nothing else drives it.
    /// let smmu = unsafe { Smmu::<HostHal>::new(model.base(), Config::default()) }?;
    /// smmu.enable()?;
    /// let options = DomainOptions {
    ///     stage: StagePolicy::Stage1,
    ///     ..DomainOptions::new(Stage2Config::new(Granule::K4, 40, 48)?)
    /// };
    /// let (a, b) = (smmu.create_domain(options)?, smmu.create_domain(options)?);
    /// smmu.attach(a, 0x10)?; // `a` at SSID 0 (and for traffic without SSID)
    /// smmu.attach_ssid(b, 0x10, 200)?; // allocates the leaf of SSIDs 192..=255
    /// assert_eq!(smmu.domain_of_ssid(0x10, 200), Some(b));
    /// assert_eq!(
    ///     smmu.attach_ssid(b, 0x10, 256),
    ///     Err(Error::Substream(SubstreamError::SsidOutOfRange { ssid: 256, s1cdmax: 8 }))
    /// );
    /// smmu.detach_ssid(0x10, 200)?;
    /// smmu.detach(0x10)?;
    /// # Ok::<(), smmuv3::Error>(())
    /// ```
    pub fn attach_ssid(&self, domain: DomainId, sid: u32, ssid: u32) -> Result<()> {
        let mut guard = self.domains.lock();
        self.check_sid(sid)?;
        let ds = &mut *guard;
        let primary = *ds
            .attached
            .get(&sid)
            .ok_or(SubstreamError::NoCdTable(sid))?;
        let table = ds
            .cd_tables
            .get_mut(&sid)
            .ok_or(SubstreamError::NoCdTable(sid))?;
        let d = ds
            .domains
            .get(&domain)
            .ok_or(crate::Error::UnknownDomain(domain))?;
        let Tables::Stage1(s1) = &d.tables else {
            return Err(SubstreamError::NotStage1(domain).into());
        };
        if !table.contains(ssid) {
            return Err(SubstreamError::SsidOutOfRange {
                ssid,
                s1cdmax: table.s1cdmax(),
            }
            .into());
        }
        if table.users.contains_key(&ssid) {
            return Err(SubstreamError::SsidInUse { sid, ssid }.into());
        }
        let stream_vmid = ds.domains.get(&primary).map_or(d.vmid, |p| p.vmid);
        if self.features().stage2 && stream_vmid != d.vmid {
            return Err(SubstreamError::VmidMismatch {
                stream: stream_vmid,
                domain: d.vmid,
            }
            .into());
        }
        let cd = read_cd(&s1.cd);
        table.users.reserve(1)?;
        if table.ensure_leaf(ssid)? && self.is_live() {
            // A new L1CD: CFGI_CD with Leaf = 0 (IHI 0070 §4.3.3).
            self.submit(&[Command::CfgiCd {
                sid,
                ssid,
                leaf: false,
            }])?;
        }
        table.users.insert(ssid, domain);
        self.write_table_cd(table, Some(sid), ssid, &cd)
    }

    /// Clears the CD at `ssid` of `sid` (V = 0 through the planner,
    /// CFGI_CD Leaf = 1 + CMD_SYNC). The leaf stays: it is freed with the
    /// table when the stream is detached.
    ///
    /// Errors (nothing changed): [`SubstreamError::NoCdTable`],
    /// [`SubstreamError::Ssid0`], [`SubstreamError::SsidNotAttached`].
    pub fn detach_ssid(&self, sid: u32, ssid: u32) -> Result<()> {
        let mut guard = self.domains.lock();
        self.check_sid(sid)?;
        let table = guard
            .cd_tables
            .get_mut(&sid)
            .ok_or(SubstreamError::NoCdTable(sid))?;
        if ssid == 0 {
            return Err(SubstreamError::Ssid0(sid).into());
        }
        if !table.users.contains_key(&ssid) {
            return Err(SubstreamError::SsidNotAttached { sid, ssid }.into());
        }
        self.write_table_cd(table, Some(sid), ssid, &Cd::invalid())?;
        table.users.remove(&ssid);
        Ok(())
    }

    /// The domain at `ssid` of `sid`, if any.
    pub fn domain_of_ssid(&self, sid: u32, ssid: u32) -> Option<DomainId> {
        self.domains
            .lock()
            .cd_tables
            .get(&sid)
            .and_then(|t| t.users.get(&ssid).copied())
    }
}

/// A domain's CD, from its memory.
fn read_cd<H: Hal>(mem: &crate::hal::Dma<H>) -> Cd {
    Cd(core::array::from_fn(|i| mem.read_u64(i)))
}

#[cfg(test)]
#[path = "substream_tests.rs"]
mod tests;
