//! TLB invalidation planners: the fewest TLBI commands (per granule, or
//! the range form with RIL) covering a range, or one broader command past
//! a budget; [`RangePlan`] issues a plan by index, without allocating.

use alloc::vec::Vec;

use super::{Command, IPA_LIMIT, TlbiRange};

/// The commands that invalidate a range of translations: either precise
/// per-page or per-range commands, or one broader command when precise
/// invalidation would take more than the caller's budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidationPlan {
    /// Precise commands, in ascending address order (empty for a zero
    /// length).
    Precise(Vec<Command>),
    /// One broader command (TLBI_S12_VMALL for stage 2, TLBI_NH_ASID for
    /// stage 1) replacing more than `max_commands` precise ones, or used when
    /// the request cannot be expressed precisely.
    Fallback(Command),
}

impl InvalidationPlan {
    /// The commands to issue (follow them with a CMD_SYNC).
    pub fn commands(&self) -> &[Command] {
        match self {
            InvalidationPlan::Precise(v) => v,
            InvalidationPlan::Fallback(c) => core::slice::from_ref(c),
        }
    }

    /// Whether the plan fell back to a broader invalidation.
    pub fn is_fallback(&self) -> bool {
        matches!(self, InvalidationPlan::Fallback(_))
    }
}

/// Counts the range commands covering `pages` consecutive pages with as
/// few commands as possible: each covers `(NUM + 1) * 2^SCALE` pages, so
/// `pages` is cut into 5-bit windows of its binary representation, from the
/// lowest set bit upwards. `None` past `max` commands, or when a piece would
/// need SCALE > 31.
fn range_piece_count(mut pages: u64, max: usize) -> Option<usize> {
    let mut n = 0;
    while pages != 0 {
        if n >= max {
            return None;
        }
        let scale = pages.trailing_zeros();
        if scale > 31 {
            // SCALE is a 5-bit field: 2^32 pages and up (8 TiB with 4K
            // pages) cannot be expressed. Encoding it would truncate SCALE
            // and invalidate almost nothing; let the caller fall back.
            return None;
        }
        let num = (pages >> scale) & 0x1F;
        pages -= num << scale;
        n += 1;
    }
    Some(n)
}

/// Piece `i` of [`range_piece_count`]'s cut of `pages`: the number of
/// pages before it, and its range (TTL 0). `None` past the last piece.
fn range_piece(mut pages: u64, tg: u8, i: usize) -> Option<(u64, TlbiRange)> {
    let mut before = 0u64;
    for _ in 0..i {
        if pages == 0 {
            return None;
        }
        let scale = pages.trailing_zeros();
        let count = ((pages >> scale) & 0x1F) << scale;
        pages -= count;
        before += count;
    }
    if pages == 0 {
        return None;
    }
    let scale = pages.trailing_zeros();
    let num = (pages >> scale) & 0x1F;
    Some((
        before,
        TlbiRange {
            num: (num - 1) as u8,
            scale: scale as u8,
            tg,
            ttl: 0,
        },
    ))
}

/// How a planner may cut a range.
struct Shape {
    granule_shift: u32,
    ril: bool,
    max_commands: usize,
    /// Exclusive upper bound of the address space, if below 2^64.
    limit: Option<u64>,
}

/// The precise command a plan is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// TLBI_S2_IPA.
    S2 { vmid: u16 },
    /// TLBI_NH_VA.
    Nh { vmid: u16, asid: u16 },
}

/// An [`InvalidationPlan`] that produces its commands by index instead of
/// holding them: planning and issuing it allocate nothing, so a change
/// that already happened can always be invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RangePlan {
    /// The broader command; the whole plan when `precise` is `None`.
    fallback: Command,
    precise: Option<Precise>,
}

/// The precise commands of a [`RangePlan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Precise {
    /// Address of the first granule.
    base: u64,
    granule_shift: u32,
    /// Granules covered.
    pages: u64,
    /// Commands.
    count: usize,
    /// The range commands' TG (RIL), or `None`: one command per granule.
    tg: Option<u8>,
    target: Target,
    leaf: bool,
    ttl: u8,
}

impl RangePlan {
    /// The plan of `[addr, addr + len)`: precise commands as `shape`
    /// allows, else `fallback`.
    fn new(
        addr: u64,
        len: u64,
        shape: Shape,
        fallback: Command,
        target: Target,
        hints: InvalidationHints,
    ) -> Self {
        let Shape {
            granule_shift,
            ril,
            max_commands,
            limit,
        } = shape;
        let fallback_only = RangePlan {
            fallback,
            precise: None,
        };
        let precise = |base, pages, count, tg| RangePlan {
            fallback,
            precise: Some(Precise {
                base,
                granule_shift,
                pages,
                count,
                tg,
                target,
                leaf: hints.leaf,
                ttl: if hints.leaf { hints.ttl } else { 0 },
            }),
        };
        if len == 0 {
            return precise(addr, 0, 0, None);
        }
        let Some(tg) = TlbiRange::tg_for_shift(granule_shift) else {
            return fallback_only;
        };
        let Some(end) = addr.checked_add(len) else {
            return fallback_only;
        };
        if limit.is_some_and(|l| end > l) {
            return fallback_only;
        }
        // Round out to whole granules.
        let first = addr >> granule_shift;
        let last = (end - 1) >> granule_shift;
        let pages = last - first + 1;
        let base = first << granule_shift;
        if ril {
            match range_piece_count(pages, max_commands) {
                Some(count) => precise(base, pages, count, Some(tg)),
                None => fallback_only,
            }
        } else if pages > max_commands as u64 {
            fallback_only
        } else {
            precise(base, pages, pages as usize, None)
        }
    }

    /// The plan of just `fallback` (e.g. TLBI_S12_VMALL after an
    /// invalidation failed).
    pub(crate) fn broad(fallback: Command) -> Self {
        RangePlan {
            fallback,
            precise: None,
        }
    }

    /// The plan's commands.
    pub(crate) fn len(&self) -> usize {
        self.precise.map_or(1, |p| p.count)
    }

    /// Whether the plan is the broader command.
    pub(crate) fn is_fallback(&self) -> bool {
        self.precise.is_none()
    }

    /// Command `i` (`i < len()`; past the end, the broader command, which
    /// is always safe).
    pub(crate) fn get(&self, i: usize) -> Command {
        let Some(p) = self.precise.filter(|p| i < p.count) else {
            return self.fallback;
        };
        let (addr, range) = match p.tg {
            None => (p.base.wrapping_add((i as u64) << p.granule_shift), None),
            Some(tg) => match range_piece(p.pages, tg, i) {
                Some((before, r)) => {
                    let r = TlbiRange { ttl: p.ttl, ..r };
                    // A one-granule piece without a level hint would be
                    // TG != 0 with TTL = NUM = SCALE = 0, which IHI 0070
                    // §4.4.1.1 reserves (CERROR_ILL): send it as the
                    // non-range command (TG = 0), which invalidates the
                    // one translation holding the address, of any level.
                    // (Linux instead covers one more granule.)
                    (
                        p.base.wrapping_add(before << p.granule_shift),
                        (!r.is_reserved()).then_some(r),
                    )
                }
                None => return self.fallback,
            },
        };
        match p.target {
            Target::S2 { vmid } => Command::TlbiS2Ipa {
                vmid,
                addr,
                leaf: p.leaf,
                range,
            },
            Target::Nh { vmid, asid } => Command::TlbiNhVa {
                vmid,
                asid,
                addr,
                leaf: p.leaf,
                range,
            },
        }
    }

    /// The plan as a vector of commands.
    fn to_plan(self) -> InvalidationPlan {
        match self.precise {
            None => InvalidationPlan::Fallback(self.fallback),
            Some(p) => InvalidationPlan::Precise((0..p.count).map(|i| self.get(i)).collect()),
        }
    }
}

/// What the caller knows about the entries an invalidation removes: the
/// TLBI hints Linux also sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InvalidationHints {
    /// Only leaf entries changed (no table was unlinked or freed): the
    /// commands may leave walk caches alone (Leaf = 1).
    pub leaf: bool,
    /// The translation level (1..=3) of every leaf that changed, when they
    /// all sit at one level (TTL, range form only); 0 = unknown. Ignored
    /// unless `leaf`.
    pub ttl: u8,
}

impl InvalidationHints {
    /// No hints: non-leaf, TTL 0 (always safe).
    pub const NONE: InvalidationHints = InvalidationHints {
        leaf: false,
        ttl: 0,
    };

    /// Only leaves changed, all at `level` (1..=3); `None`: levels unknown
    /// or mixed.
    pub const fn leaves_at(level: Option<u32>) -> InvalidationHints {
        let ttl = match level {
            Some(l @ 1..=3) => l as u8,
            _ => 0,
        };
        InvalidationHints { leaf: true, ttl }
    }
}

/// Plans the stage-2 invalidation of `[ipa, ipa + len)` for `vmid`.
///
/// `granule_shift` (12, 14 or 16) is the stage-2 granule; the range is
/// rounded out to whole granules. With `ril`, the fewest TLBI_S2_IPA range
/// commands that cover exactly those granules (a one-granule piece without
/// a TTL hint is sent in the non-range form: as a range it would be the
/// reserved TTL = NUM = SCALE = 0, IHI 0070 §4.4.1.1); without, one
/// TLBI_S2_IPA per granule. Precise commands are non-leaf (they also drop walk-cache entries,
/// so the plan is safe after freeing tables). More than `max_commands`, a
/// range reaching beyond 2^52, a range piece needing SCALE > 31 (with `ril`:
/// 2^32 granules or more, e.g. 16 TiB of 4K pages), or an unknown granule
/// yield `Fallback(TlbiS12Vmall { vmid })`. A zero length gives an empty plan.
pub fn s2_invalidation(
    vmid: u16,
    ipa: u64,
    len: u64,
    granule_shift: u32,
    ril: bool,
    max_commands: usize,
) -> InvalidationPlan {
    s2_invalidation_hinted(
        vmid,
        ipa,
        len,
        granule_shift,
        ril,
        max_commands,
        InvalidationHints::NONE,
    )
}

/// [`s2_invalidation`] with `hints`: Leaf = 1 when only leaves changed,
/// and TTL (range form only) when they all sit at one level. The caller
/// must not claim a level when a cached entry of another level may cover
/// the range (e.g. a block replaced by a table without break: its old
/// block entry is cached at the block's level).
pub fn s2_invalidation_hinted(
    vmid: u16,
    ipa: u64,
    len: u64,
    granule_shift: u32,
    ril: bool,
    max_commands: usize,
    hints: InvalidationHints,
) -> InvalidationPlan {
    s2_range_plan(vmid, ipa, len, granule_shift, ril, max_commands, hints).to_plan()
}

/// [`s2_invalidation_hinted`] as a [`RangePlan`] (allocates nothing).
pub(crate) fn s2_range_plan(
    vmid: u16,
    ipa: u64,
    len: u64,
    granule_shift: u32,
    ril: bool,
    max_commands: usize,
    hints: InvalidationHints,
) -> RangePlan {
    RangePlan::new(
        ipa,
        len,
        Shape {
            granule_shift,
            ril,
            max_commands,
            limit: Some(IPA_LIMIT),
        },
        Command::TlbiS12Vmall { vmid },
        Target::S2 { vmid },
        hints,
    )
}

/// Plans the stage-1 invalidation of `[va, va + len)` for (`vmid`, `asid`):
/// TLBI_NH_VA commands as [`s2_invalidation`] does, falling back to
/// `TlbiNhAsid { vmid, asid }`.
pub fn nh_invalidation(
    vmid: u16,
    asid: u16,
    va: u64,
    len: u64,
    granule_shift: u32,
    ril: bool,
    max_commands: usize,
) -> InvalidationPlan {
    nh_invalidation_hinted(
        vmid,
        asid,
        va,
        len,
        granule_shift,
        ril,
        max_commands,
        InvalidationHints::NONE,
    )
}

/// [`nh_invalidation`] with `hints` (see [`s2_invalidation_hinted`]).
#[allow(clippy::too_many_arguments)]
pub fn nh_invalidation_hinted(
    vmid: u16,
    asid: u16,
    va: u64,
    len: u64,
    granule_shift: u32,
    ril: bool,
    max_commands: usize,
    hints: InvalidationHints,
) -> InvalidationPlan {
    nh_range_plan(vmid, asid, va, len, granule_shift, ril, max_commands, hints).to_plan()
}

/// [`nh_invalidation_hinted`] as a [`RangePlan`] (allocates nothing).
#[allow(clippy::too_many_arguments)]
pub(crate) fn nh_range_plan(
    vmid: u16,
    asid: u16,
    va: u64,
    len: u64,
    granule_shift: u32,
    ril: bool,
    max_commands: usize,
    hints: InvalidationHints,
) -> RangePlan {
    RangePlan::new(
        va,
        len,
        Shape {
            granule_shift,
            ril,
            max_commands,
            limit: None,
        },
        Command::TlbiNhAsid { vmid, asid },
        Target::Nh { vmid, asid },
        hints,
    )
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
