//! Attaching StreamIDs to domains and detaching them: the STE a stream
//! gets (stage 2 with the domain's VMID, geometry and walk attributes, or
//! stage 1 through the domain's CD or the stream's own CD table) and the
//! bookkeeping that follows it, and the return to abort with the CD and
//! TLB invalidations a detach needs.

use crate::cmd::Command;
use crate::error::{Error, Result};
use crate::hal::Hal;
use crate::smmu::Smmu;
use crate::ste::{Stage2Ste, Ste, SteConfig};

use super::{Domain, DomainId, Tables};

impl<H: Hal> Smmu<H> {
    /// Points `sid` at the domain's stage-2 tables. The StreamID must
    /// currently be aborted (never attached, or detached). Isolation groups
    /// are not checked here: callers are `Smmu::attach` and
    /// `Smmu::attach_group` (src/group.rs).
    pub(crate) fn attach_stream(&self, id: DomainId, sid: u32) -> Result<()> {
        let mut domains = self.domains.lock();
        self.check_sid(sid)?;
        if domains.attached.contains_key(&sid) {
            return Err(Error::SidAttached(sid));
        }
        let d = domains.get(id)?;
        let current = self.ste(sid)?;
        if current.is_valid() && current.config() != SteConfig::Abort {
            // Configured outside the domain API (e.g. bypass).
            return Err(Error::SidAttached(sid));
        }
        // A stage-1 stream on an SMMU with substreams gets its own CD table.
        let table = self.new_cd_table(d, domains.cd_policy)?;
        let ste = match &table {
            Some(t) => self.stage1_table_ste(d, t)?,
            None => self.domain_ste(d)?,
        };
        // Room first: once the STE is written, the bookkeeping cannot fail.
        domains.attached.reserve(1)?;
        domains.cd_tables.reserve(usize::from(table.is_some()))?;
        domains
            .get_mut(id)?
            .sids
            .try_reserve(1)
            .map_err(|_| Error::NoMemory)?;
        if let Err(e) = self.write_ste(sid, &ste) {
            // The STE may point at the table already: keep it (reserved
            // above) rather than free memory the SMMU can reach.
            if let Some(t) = table {
                domains.cd_tables.insert(sid, t);
            }
            return Err(e);
        }
        domains.attached.insert(sid, id);
        if let Some(t) = table {
            domains.cd_tables.insert(sid, t);
        }
        domains.get_mut(id)?.sids.push(sid);
        Ok(())
    }

    /// The STE that points a stream at domain `d` (stage 1: at its CD).
    pub(crate) fn domain_ste(&self, d: &Domain<H>) -> Result<Ste> {
        if let Tables::Stage1(s1) = &d.tables {
            return self.stage1_ste(d, s1);
        }
        // S2S = 1 where the SMMU forces stalls (S2S = 0 is ILLEGAL there).
        Ok(Ste::stage2(&self.domain_s2(d)?)?.with_s2_stall(self.features().stall_forced()))
    }

    /// The stage-2 fields of a stage-2 domain's STEs (plain or nested).
    pub(crate) fn domain_s2(&self, d: &Domain<H>) -> Result<Stage2Ste> {
        if matches!(d.tables, Tables::Stage1(_)) {
            return Err(Error::Stage1Tables(d.id));
        }
        let fields = d.tables.config().ste_fields();
        // Table walks use the attributes the tables are written with: the
        // VTCR-derived ones for a coherent SMMU, Non-cacheable and Outer
        // Shareable (as in CR1) for one that is not.
        let (ir0, or0, sh0) = if self.features().coherent {
            (fields.ir0, fields.or0, fields.sh0)
        } else {
            let w = self.walk_attributes();
            (w.inner, w.outer, w.shareability)
        };
        Ok(Stage2Ste {
            vmid: d.vmid,
            t0sz: fields.t0sz,
            sl0: fields.sl0,
            ir0,
            or0,
            sh0,
            tg: fields.tg,
            ps: fields.ps,
            ttb: d.tables.root(),
            affd: d.affd,
            record_faults: true,
            ptw: false,
        })
    }

    /// Returns `sid` to abort. Isolation groups are not checked here:
    /// callers are `Smmu::detach` and `Smmu::detach_group` (src/group.rs).
    pub(crate) fn detach_stream(&self, sid: u32) -> Result<()> {
        let mut domains = self.domains.lock();
        self.check_sid(sid)?;
        let id = *domains
            .attached
            .get(&sid)
            .ok_or(Error::SidNotAttached(sid))?;
        if crate::cdtable::has_substreams(&domains.cd_tables, sid) {
            return Err(crate::cdtable::SubstreamError::SubstreamsAttached(sid).into());
        }
        let guest_asid = domains.nested.get(&sid).map(|n| n.cd.asid);
        let d = domains.get(id)?;
        // CFGI_STE (leaf) drops the STE only: the CD it pointed at may
        // still be cached for this StreamID (and a guest's stage-1 entries
        // under its ASID). CFGI_CD_ALL (and TLBI_NH_ASID) ride with the
        // update's last CFGI_STE, once the abort is live.
        let after = [
            Command::CfgiCdAll { sid },
            Command::TlbiNhAsid {
                vmid: d.vmid,
                asid: guest_asid.unwrap_or(0),
            },
        ];
        let after =
            if (matches!(d.tables, Tables::Stage1(_)) || guest_asid.is_some()) && self.is_live() {
                &after[..1 + usize::from(guest_asid.is_some())]
            } else {
                &[]
            };
        self.write_ste_then(sid, &Ste::abort(), after)?;
        let _ = Self::forget_nested_locked(&mut domains, sid);
        domains.attached.remove(&sid);
        // The STE no longer points at the table and CFGI_CD_ALL + SYNC
        // completed above: its leaves and CDs can go.
        domains.cd_tables.remove(&sid);
        domains.get_mut(id)?.sids.retain(|&s| s != sid);
        Ok(())
    }
}
