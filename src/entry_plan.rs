//! The safe update order for 8-dword configuration structures (STEs and
//! CDs), as pure data.
//!
//! IHI 0070 §3.21.3: the SMMU may read the dwords of an STE or CD in any
//! temporal order, and may cache a structure whole or in part, until a
//! configuration invalidation (CFGI_STE / CFGI_CD) followed by a completed
//! CMD_SYNC. Only 64-bit single-copy atomicity is guaranteed. So between two
//! completed invalidations the SMMU may combine, dword by dword, any value
//! each dword held since the last one. [`plan`] orders the writes so that no
//! such combination mixes the configuration an entry had with the one it
//! gets (design-lessons rule 1):
//!
//! 1. `current == target`: an empty plan.
//! 2. With `used` the bits each entry's own configuration makes the SMMU read
//!    (per bit, from an [`EntryKind`]), the *critical* dwords are those where
//!    a bit both configurations use differs.
//! 3. At most one critical dword (hitless): write the bits only `target`
//!    uses (outside the critical dword), `Publish`, `Sync`; write the
//!    critical dword (one 64-bit store switches from the old configuration
//!    to the new one), `Publish`, `Sync`; write the final target (clearing
//!    bits only the old configuration used), `Publish`, `Sync`. Bits
//!    neither configuration uses go in the first or the last step, wherever
//!    they add no `Sync`. A step whose writes would change nothing is left
//!    out, with its `Sync`. So the plan never has more `Sync`s than Linux's
//!    `arm_smmu_write_entry` (which writes all bits `current` ignores first)
//!    would issue for the same entries.
//! 4. Several critical dwords (break before make): dword 0 =
//!    [`EntryKind::broken_dword0`] (a non-live entry), `Publish`, `Sync`;
//!    dwords 1..=7, `Publish`, `Sync`; dword 0, `Publish`, `Sync`.
//!
//! Every `Sync` follows a `Publish` of all earlier writes, no `Sync` comes
//! without a write since the previous one, and every non-empty plan ends
//! with a `Sync`.
//!
//! The planner relies on one property of `used`: it depends only on bits it
//! reports as used (e.g. an STE's Config is used whenever V = 1), so an entry
//! that agrees with another in the other's used bits has the same used bits.

use crate::error::{Error, Result};

/// Dwords in an STE or a CD.
pub const ENTRY_DWORDS: usize = 8;

/// An entry's contents: eight little-endian dwords, in memory order.
pub type Dwords = [u64; ENTRY_DWORDS];

/// How the SMMU reads one kind of entry.
#[derive(Debug, Clone, Copy)]
pub struct EntryKind {
    /// The bits of an entry the SMMU may read under the configuration the
    /// entry itself selects (1 = used). Counting a bit as used is always
    /// safe; missing one is an isolation hole.
    pub used: fn(&Dwords) -> Dwords,
    /// A dword 0 that makes the entry non-live whatever the other dwords
    /// hold (an STE with Config = abort, or V = 0): the break-before-make
    /// state.
    pub broken_dword0: u64,
}

/// One step of an entry update, executed in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateStep {
    /// Store `value` into dword `dword` (0..=7) of the entry with one
    /// 64-bit store.
    Write {
        /// Dword index.
        dword: usize,
        /// New value.
        value: u64,
    },
    /// Make the preceding writes visible to the SMMU before any following
    /// one: a `dsb st` (plus a cache clean when the SMMU is not coherent).
    Publish,
    /// Invalidate the SMMU's cached copy of this entry (CMD_CFGI_STE or
    /// CMD_CFGI_CD) and issue a CMD_SYNC, and wait for it to complete.
    Sync,
}

/// Capacity of an [`UpdatePlan`]. The longest plan [`plan`] can produce has
/// 21 steps (7 writes + 2, 1 write + 2, 7 writes + 2).
pub const PLAN_CAPACITY: usize = 24;

/// A fixed-capacity sequence of [`UpdateStep`]s (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdatePlan {
    steps: [UpdateStep; PLAN_CAPACITY],
    len: usize,
}

impl UpdatePlan {
    const fn new() -> UpdatePlan {
        UpdatePlan {
            steps: [UpdateStep::Sync; PLAN_CAPACITY],
            len: 0,
        }
    }

    /// Appends a step; a full plan is an error, never a dropped step.
    fn push(&mut self, step: UpdateStep) -> Result<()> {
        let slot = self.steps.get_mut(self.len).ok_or(Error::PlanTooLong)?;
        *slot = step;
        self.len += 1;
        Ok(())
    }

    /// The steps in order.
    pub fn as_slice(&self) -> &[UpdateStep] {
        &self.steps[..self.len]
    }

    /// Iterates over the steps in order.
    pub fn iter(&self) -> core::slice::Iter<'_, UpdateStep> {
        self.as_slice().iter()
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of [`UpdateStep::Sync`] steps (invalidation round trips).
    pub fn syncs(&self) -> usize {
        self.iter().filter(|s| **s == UpdateStep::Sync).count()
    }
}

impl<'a> IntoIterator for &'a UpdatePlan {
    type Item = &'a UpdateStep;
    type IntoIter = core::slice::Iter<'a, UpdateStep>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Writes `to[i]` for every dword `i` in `mask` where `state` differs
/// (ascending), then `Publish` and `Sync` if anything was written.
fn step(plan: &mut UpdatePlan, state: &mut Dwords, to: &Dwords, mask: u8) -> Result<()> {
    let mut wrote = false;
    for (i, (s, t)) in state.iter_mut().zip(to.iter()).enumerate() {
        if mask & (1 << i) != 0 && *s != *t {
            plan.push(UpdateStep::Write {
                dword: i,
                value: *t,
            })?;
            *s = *t;
            wrote = true;
        }
    }
    if wrote {
        plan.push(UpdateStep::Publish)?;
        plan.push(UpdateStep::Sync)?;
    }
    Ok(())
}

/// Plans the replacement of `current` by `target` for entries read as
/// `kind` describes (see the module documentation for the order).
///
/// Errors: [`Error::PlanTooLong`] if the plan would not fit in an
/// [`UpdatePlan`] (it always does; the check keeps a step from ever being
/// dropped silently).
pub fn plan(kind: &EntryKind, current: &Dwords, target: &Dwords) -> Result<UpdatePlan> {
    let mut plan = UpdatePlan::new();
    if current == target {
        return Ok(plan);
    }
    let cur_used = (kind.used)(current);
    let tgt_used = (kind.used)(target);
    let mut critical = 0u8;
    for i in 0..ENTRY_DWORDS {
        if (current[i] ^ target[i]) & cur_used[i] & tgt_used[i] != 0 {
            critical |= 1 << i;
        }
    }
    let mut state = *current;

    if critical.count_ones() <= 1 {
        // Hitless. The critical dword is written whole in the switching
        // store, so the other two steps leave it alone. Differing bits of
        // the other dwords are of three kinds: used only by the target
        // (written first, while the current configuration ignores them),
        // used only by the current entry (cleaned up last, once the target
        // configuration ignores them), and used by neither (safe in either
        // step: put where they cost no extra Sync).
        let mut only_target = [0u64; ENTRY_DWORDS];
        let mut neither = [0u64; ENTRY_DWORDS];
        let mut cleanup = false;
        for i in (0..ENTRY_DWORDS).filter(|i| critical & (1 << i) == 0) {
            let diff = current[i] ^ target[i];
            only_target[i] = diff & !cur_used[i] & tgt_used[i];
            neither[i] = diff & !cur_used[i] & !tgt_used[i];
            cleanup |= diff & cur_used[i] & !tgt_used[i] != 0;
        }
        let first_needed = only_target.iter().any(|&m| m != 0);
        let neither_first = first_needed && !cleanup;
        let mut first = *current;
        for i in 0..ENTRY_DWORDS {
            let mask = only_target[i] | if neither_first { neither[i] } else { 0 };
            first[i] = (current[i] & !mask) | (target[i] & mask);
        }
        step(&mut plan, &mut state, &first, 0xFF)?;
        step(&mut plan, &mut state, target, critical)?;
        step(&mut plan, &mut state, target, 0xFF)?;
        return Ok(plan);
    }

    // Break before make through a non-live entry.
    let mut broken = state;
    broken[0] = kind.broken_dword0;
    step(&mut plan, &mut state, &broken, 0b1)?;
    step(&mut plan, &mut state, target, 0xFE)?;
    step(&mut plan, &mut state, target, 0b1)?;
    Ok(plan)
}

/// The any-order observation model the planner is proved against (host
/// tests only).
#[cfg(test)]
pub(crate) mod model {
    extern crate std;
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    /// What replaying a plan against the model found.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Outcome {
        /// Number of `Sync` steps.
        pub syncs: usize,
        /// No observable combination was non-live or mixed: every one
        /// behaves exactly as `current` or as `target`.
        pub hitless: bool,
        /// The first combination that mixed the old and new entries (live,
        /// and equal to neither in its own used bits), if any.
        pub torn: Option<String>,
        /// The first rule of the plan's shape it broke, if any.
        pub shape: Option<String>,
    }

    impl Outcome {
        /// No torn combination and a well-formed plan.
        pub fn is_safe(&self) -> bool {
            self.torn.is_none() && self.shape.is_none()
        }
    }

    /// Whether `seen` equals `other` in every bit `used` (seen's own used
    /// bits) marks.
    fn same_in(seen: &Dwords, used: &Dwords, other: &Dwords) -> bool {
        (0..ENTRY_DWORDS).all(|i| (seen[i] ^ other[i]) & used[i] == 0)
    }

    /// Checks every combination of the dwords' possible values.
    fn check(
        kind: &EntryKind,
        live: fn(&Dwords) -> bool,
        current: &Dwords,
        target: &Dwords,
        possible: &[Vec<u64>],
        out: &mut Outcome,
    ) {
        let total: usize = possible.iter().map(Vec::len).product();
        for k in 0..total {
            let mut n = k;
            let mut seen = [0u64; ENTRY_DWORDS];
            for (i, vals) in possible.iter().enumerate() {
                seen[i] = vals[n % vals.len()];
                n /= vals.len();
            }
            let used = (kind.used)(&seen);
            if !(same_in(&seen, &used, current) || same_in(&seen, &used, target)) {
                out.hitless = false;
                if live(&seen) && out.torn.is_none() {
                    out.torn = Some(std::format!("{seen:x?}"));
                }
            }
        }
    }

    /// Replays `steps` from `current`: between two completed `Sync`s each
    /// dword may be observed with any value it held since the last one, in
    /// any combination with the other dwords; a `Sync` resets every dword's
    /// possible values to its current value. Every combination must be
    /// non-live (`live` false) or equal to `current` or `target` in the bits
    /// its own configuration uses. Also checks the plan's shape: the final
    /// state is `target`, every `Sync` follows a `Publish` of all earlier
    /// writes, no `Sync` without a write since the previous one, and a
    /// non-empty plan ends with `Sync`.
    pub fn replay(
        kind: &EntryKind,
        live: fn(&Dwords) -> bool,
        current: &Dwords,
        target: &Dwords,
        steps: &[UpdateStep],
    ) -> Outcome {
        let mut state = *current;
        let mut possible: Vec<Vec<u64>> = current.iter().map(|&v| std::vec![v]).collect();
        let mut unpublished = false;
        let mut written_since_sync = false;
        let mut out = Outcome {
            syncs: 0,
            hitless: true,
            torn: None,
            shape: None,
        };
        let shape = |out: &mut Outcome, what: &str| {
            if out.shape.is_none() {
                out.shape = Some(String::from(what));
            }
        };
        for s in steps {
            match *s {
                UpdateStep::Write { dword, value } => {
                    if dword >= ENTRY_DWORDS {
                        shape(&mut out, "dword out of range");
                        continue;
                    }
                    state[dword] = value;
                    if !possible[dword].contains(&value) {
                        possible[dword].push(value);
                    }
                    unpublished = true;
                    written_since_sync = true;
                }
                UpdateStep::Publish => unpublished = false,
                UpdateStep::Sync => {
                    if unpublished {
                        shape(&mut out, "Sync before Publish");
                    }
                    if !written_since_sync {
                        shape(&mut out, "Sync with nothing written");
                    }
                    check(kind, live, current, target, &possible, &mut out);
                    out.syncs += 1;
                    written_since_sync = false;
                    for (p, &v) in possible.iter_mut().zip(state.iter()) {
                        p.clear();
                        p.push(v);
                    }
                }
            }
        }
        // Writes after the last Sync stay observable for ever.
        check(kind, live, current, target, &possible, &mut out);
        if &state != target {
            shape(&mut out, "does not end at the target");
        }
        if !steps.is_empty() && steps.last() != Some(&UpdateStep::Sync) {
            shape(&mut out, "does not end with Sync");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::model::replay;
    use super::*;
    use UpdateStep::{Publish, Sync, Write};
    use std::vec;
    use std::vec::Vec;

    /// A toy kind: dword 0 bit 0 = valid; bit 1 selects whether dword 1
    /// (0) or dword 2 (1) is the payload; dword 3 always used when valid.
    fn toy_used(e: &Dwords) -> Dwords {
        let mut u = [0; 8];
        u[0] = 1;
        if e[0] & 1 == 0 {
            return u;
        }
        u[0] = 0b11;
        u[3] = !0;
        if e[0] & 2 == 0 {
            u[1] = !0;
        } else {
            u[2] = !0;
        }
        u
    }
    const TOY: EntryKind = EntryKind {
        used: toy_used,
        broken_dword0: 0,
    };
    fn toy_live(e: &Dwords) -> bool {
        e[0] & 1 != 0
    }

    fn w(dword: usize, value: u64) -> UpdateStep {
        Write { dword, value }
    }

    fn steps(a: &Dwords, b: &Dwords) -> Vec<UpdateStep> {
        plan(&TOY, a, b).unwrap().iter().copied().collect()
    }

    #[test]
    fn identity_is_empty() {
        let a = [1, 5, 0, 7, 0, 0, 0, 0];
        assert!(plan(&TOY, &a, &a).unwrap().is_empty());
    }

    #[test]
    fn switch_payload_is_hitless() {
        // Payload in dword 1 -> payload in dword 2, dword 3 unchanged.
        let a = [1, 5, 0, 7, 0, 0, 0, 0];
        let b = [3, 0, 9, 7, 0, 0, 0, 0];
        assert_eq!(
            steps(&a, &b),
            vec![
                w(2, 9),
                Publish,
                Sync,
                w(0, 3),
                Publish,
                Sync,
                w(1, 0),
                Publish,
                Sync
            ]
        );
        let o = replay(
            &TOY,
            toy_live,
            &a,
            &b,
            plan(&TOY, &a, &b).unwrap().as_slice(),
        );
        assert!(o.hitless && o.is_safe());
        assert_eq!(o.syncs, 3);
    }

    #[test]
    fn two_used_dwords_break_before_make() {
        let a = [1, 5, 0, 7, 0, 0, 0, 0];
        let b = [1, 6, 0, 8, 0, 0, 0, 0];
        assert_eq!(
            steps(&a, &b),
            vec![
                w(0, 0),
                Publish,
                Sync,
                w(1, 6),
                w(3, 8),
                Publish,
                Sync,
                w(0, 1),
                Publish,
                Sync
            ]
        );
        let o = replay(
            &TOY,
            toy_live,
            &a,
            &b,
            plan(&TOY, &a, &b).unwrap().as_slice(),
        );
        assert!(!o.hitless && o.is_safe());
    }

    #[test]
    fn capacity_is_an_error_not_a_drop() {
        let mut p = UpdatePlan::new();
        for _ in 0..PLAN_CAPACITY {
            p.push(Sync).unwrap();
        }
        assert_eq!(p.push(Publish), Err(Error::PlanTooLong));
        assert_eq!(p.len(), PLAN_CAPACITY);
    }

    #[test]
    fn worst_case_fits() {
        // Every dword differs in unused, critical and cleanup bits.
        let a = [3, !0, 0x5555, !0, !0, !0, !0, !0];
        let b = [1, 0x5555, !0, 0, 0, 0, 0, 0];
        let p = plan(&TOY, &a, &b).unwrap();
        assert!(p.len() <= 21);
        assert!(replay(&TOY, toy_live, &a, &b, p.as_slice()).is_safe());
    }
}
