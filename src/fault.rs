//! Turning event records into one report per faulting DMA.
//!
//! A DMA that faults produces many records (QEMU writes one per 4 bytes;
//! hardware may write one per transaction). [`coalesce`] merges consecutive
//! records of the same type, stream and direction whose input addresses fall
//! in one translation granule into a [`FaultSummary`], so a hypervisor can log
//! one line per fault instead of a thousand.

use alloc::vec::Vec;
use core::fmt;

use crate::event::{Event, EventType};

/// Consecutive event records that describe one fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultSummary {
    /// The event type.
    pub kind: EventType,
    /// The StreamID.
    pub sid: u32,
    /// Lowest and highest input address among the records (if they carry one).
    pub addr_range: Option<(u64, u64)>,
    /// IPA of the first record, for stage-2 faults.
    pub ipa: Option<u64>,
    /// True for reads.
    pub read: bool,
    /// The fault arose at stage 2.
    pub stage2: bool,
    /// How many records were merged.
    pub records: u32,
}

impl FaultSummary {
    fn start(e: &Event) -> Self {
        Self {
            kind: e.kind,
            sid: e.sid,
            addr_range: e.input_addr.map(|a| (a, a)),
            ipa: e.ipa,
            read: e.rnw,
            stage2: e.stage2,
            records: 1,
        }
    }

    /// Whether `e` continues this fault: same type, stream, direction and
    /// stage, address in the same `granule`-sized block.
    fn absorbs(&self, e: &Event, granule: u64) -> bool {
        let same_block = match (self.addr_range, e.input_addr) {
            (Some((lo, _)), Some(a)) => lo / granule == a / granule,
            (None, None) => true,
            _ => false,
        };
        self.kind == e.kind
            && self.sid == e.sid
            && self.read == e.rnw
            && self.stage2 == e.stage2
            && same_block
    }

    fn absorb(&mut self, e: &Event) {
        if let (Some((lo, hi)), Some(a)) = (self.addr_range, e.input_addr) {
            self.addr_range = Some((lo.min(a), hi.max(a)));
        }
        self.records += 1;
    }
}

impl fmt::Display for FaultSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sid {:#06x}", self.kind.name(), self.sid)?;
        // The input addresses of the records, then the IPA page the event
        // reports (IPA[51:12] only): a range must not start at one and end
        // at the other.
        if let Some((lo, hi)) = self.addr_range {
            write!(f, " addr {lo:#x}")?;
            if hi != lo {
                write!(f, "..{:#x}", hi + 4)?;
            }
        }
        if let Some(ipa) = self.ipa {
            write!(f, " (IPA page {ipa:#x})")?;
        }
        // Translation-class faults name their stage (S2 bit); other events
        // (C_BAD_*) have none.
        let stage = match self.kind {
            _ if self.stage2 => " (stage 2)",
            EventType::FTranslation
            | EventType::FAddrSize
            | EventType::FAccess
            | EventType::FPermission => " (stage 1)",
            _ => "",
        };
        write!(
            f,
            " {}{}: {} record{}",
            if self.read { "read" } else { "write" },
            stage,
            self.records,
            if self.records == 1 { "" } else { "s" }
        )
    }
}

/// Merges consecutive records describing the same fault (addresses within
/// one `granule`-sized block, e.g. 4096).
pub fn coalesce(events: &[Event], granule: u64) -> Vec<FaultSummary> {
    let granule = granule.max(1);
    let mut out: Vec<FaultSummary> = Vec::new();
    for e in events {
        match out.last_mut() {
            Some(last) if last.absorbs(e, granule) => last.absorb(e),
            _ => out.push(FaultSummary::start(e)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translation(sid: u32, addr: u64, read: bool) -> Event {
        // F_TRANSLATION, SID, RnW at dword 1 bit 35, S2 at bit 39, class IN.
        let d1 = (u64::from(read) << 35) | (1 << 39) | (2 << 40);
        Event::decode([0x10 | (u64::from(sid) << 32), d1, addr, addr & !0xFFF])
    }

    #[test]
    fn one_dma_is_one_summary() {
        let events: Vec<Event> = (0..1024)
            .map(|i| translation(8, 0x8_0000 + 4 * i, false))
            .collect();
        let s = coalesce(&events, 4096);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].records, 1024);
        assert_eq!(s[0].addr_range, Some((0x8_0000, 0x8_0FFC)));
        assert_eq!(s[0].sid, 8);
        assert!(!s[0].read && s[0].stage2);
        let line = alloc::format!("{}", s[0]);
        assert!(
            line.starts_with(
                "F_TRANSLATION sid 0x0008 addr 0x80000..0x81000 (IPA page 0x80000) write"
            ),
            "{line}"
        );
        assert!(line.ends_with("1024 records"), "{line}");
    }

    #[test]
    fn range_starts_at_the_first_faulting_address() {
        // A DMA starting mid-page: the IPA field holds only the page.
        let events: Vec<Event> = (0..16)
            .map(|i| translation(8, 0x2000_0100 + 4 * i, true))
            .collect();
        let s = coalesce(&events, 4096);
        let line = alloc::format!("{}", s[0]);
        assert_eq!(
            line,
            "F_TRANSLATION sid 0x0008 addr 0x20000100..0x20000140 (IPA page 0x20000000) read (stage 2): 16 records"
        );
    }

    /// A translation-class fault names its stage; stage 1 too (nested
    /// streams and stage-1 domains); other events name none.
    #[test]
    fn stage_1_faults_say_so() {
        let mut f = coalesce(&[translation(8, 0x600_0000, false)], 4096)[0];
        f.stage2 = false;
        f.ipa = None;
        f.kind = EventType::FPermission;
        assert_eq!(
            alloc::format!("{f}"),
            "F_PERMISSION sid 0x0008 addr 0x6000000 write (stage 1): 1 record"
        );
        f.kind = EventType::CBadStreamId;
        f.addr_range = None;
        assert_eq!(
            alloc::format!("{f}"),
            "C_BAD_STREAMID sid 0x0008 write: 1 record"
        );
    }

    #[test]
    fn different_streams_pages_or_directions_split() {
        let events = [
            translation(8, 0x1000, false),
            translation(8, 0x1004, false),
            translation(9, 0x1008, false),
            translation(9, 0x2000, false),
            translation(9, 0x2004, true),
        ];
        let s = coalesce(&events, 4096);
        assert_eq!(
            s.iter().map(|f| f.records).collect::<Vec<_>>(),
            [2, 1, 1, 1]
        );
    }
}
