//! The on-target test harness.
//!
//! A test image declares its tests with [`tests!`] and hands them to [`run`]:
//!
//! ```ignore
//! fn main() -> ! {
//!     image::init();
//!     harness::run("boot", tests![current_el_is_2, heap_works])
//! }
//! ```
//!
//! Output, read by `qemu/run.sh` and the collector (`tests/collect.sh`):
//!
//! ```text
//! test current_el_is_2 ... ok
//! test heap_works ... FAILED
//!     expected: 4
//!     actual: 5
//!     at tests/boot.rs:42
//! 1 passed, 1 failed
//! ```
//!
//! The image exits 0 iff no test failed. A test that is expected to end the
//! image with an exception announces it with [`expect_exception`] first; the
//! runner then turns "exception report seen + non-zero exit" into a pass.

use alloc::string::String;
use core::fmt;

use super::console::println;
use super::semihosting;

/// Why a test failed.
#[derive(Debug)]
pub struct Failure {
    /// What was checked.
    pub what: String,
    /// The expected value, when the check compared values.
    pub expected: Option<String>,
    /// The actual value.
    pub actual: Option<String>,
    /// Where.
    pub location: &'static core::panic::Location<'static>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(f, "    check: {}", self.what)?;
        if let Some(e) = &self.expected {
            writeln!(f, "    expected: {e}")?;
        }
        if let Some(a) = &self.actual {
            writeln!(f, "    actual: {a}")?;
        }
        write!(
            f,
            "    at {}:{}",
            self.location.file(),
            self.location.line()
        )
    }
}

impl Failure {
    /// A failed condition.
    #[track_caller]
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            expected: None,
            actual: None,
            location: core::panic::Location::caller(),
        }
    }

    /// A failed comparison.
    #[track_caller]
    pub fn compare(
        what: impl Into<String>,
        expected: impl fmt::Debug,
        actual: impl fmt::Debug,
    ) -> Self {
        Self {
            what: what.into(),
            expected: Some(alloc::format!("{expected:#x?}")),
            actual: Some(alloc::format!("{actual:#x?}")),
            location: core::panic::Location::caller(),
        }
    }
}

/// What a test returns.
pub type TestResult = Result<(), Failure>;

/// A named test.
pub type Test = (&'static str, fn() -> TestResult);

/// Builds a `&[Test]` from test function names.
#[allow(unused_macros)]
macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), $name as fn() -> $crate::image::harness::TestResult)),*]
    };
}

/// Fails the test (returns `Err`) unless `actual == expected`.
#[allow(unused_macros)]
macro_rules! check_eq {
    ($actual:expr, $expected:expr $(,)?) => {{
        let (actual, expected) = (&$actual, &$expected);
        if actual != expected {
            return Err($crate::image::harness::Failure::compare(
                concat!(stringify!($actual), " == ", stringify!($expected)),
                expected,
                actual,
            ));
        }
    }};
}

/// Fails the test (returns `Err`) unless `cond` holds; the optional format
/// arguments describe the actual state.
#[allow(unused_macros)]
macro_rules! check {
    ($cond:expr $(,)?) => {
        if !$cond {
            return Err($crate::image::harness::Failure::new(stringify!($cond)));
        }
    };
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            let mut f = $crate::image::harness::Failure::new(stringify!($cond));
            f.actual = Some(alloc::format!($($arg)+));
            return Err(f);
        }
    };
}

/// Turns any `Result<T, E: Display>` into a test failure naming the call.
#[allow(unused_macros)]
macro_rules! try_ok {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(err) => {
                let mut f = $crate::image::harness::Failure::new(concat!(stringify!($e), " is Ok"));
                f.actual = Some(alloc::format!("Err({err})"));
                return Err(f);
            }
        }
    };
}

#[allow(unused_imports)]
pub(crate) use {check, check_eq, tests, try_ok};

/// Robustness counters, summed over all suites by the collector into the
/// line `robustness: B bad inputs rejected, F faults injected, R recovered,
/// L lost`. Tests bump them only after checking the outcome they count.
mod tally {
    use core::sync::atomic::{AtomicU32, Ordering};

    pub(super) static BAD_INPUTS: AtomicU32 = AtomicU32::new(0);
    pub(super) static FAULTS: AtomicU32 = AtomicU32::new(0);
    pub(super) static RECOVERED: AtomicU32 = AtomicU32::new(0);
    pub(super) static LOST: AtomicU32 = AtomicU32::new(0);

    pub(super) fn get(c: &AtomicU32) -> u32 {
        c.load(Ordering::Relaxed)
    }
}

/// Counts a bad input that was rejected with the right typed error and left
/// the tables unchanged (checked by the caller).
pub fn bad_input_rejected(case: &str) {
    tally::BAD_INPUTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    println!("robustness: rejected bad input: {case}");
}

/// Counts an injected fault of kind `kind`.
pub fn fault_injected(kind: &str) {
    tally::FAULTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    println!("robustness: injected fault: {kind}");
}

/// Counts a recovery from an injected fault (checked by the caller: the
/// driver works normally afterwards).
pub fn recovered(kind: &str) {
    tally::RECOVERED.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    println!("robustness: recovered from: {kind}");
}

/// Counts `n` lost items (commands, SYNCs, fault reports) the test expected
/// to see and did not.
pub fn lost(what: &str, n: u32) {
    tally::LOST.fetch_add(n, core::sync::atomic::Ordering::Relaxed);
    if n > 0 {
        println!("robustness: LOST {n} {what}");
    }
}

/// Runs every test in order, prints the summary and exits: 0 iff none failed.
pub fn run(suite: &str, tests: &[Test]) -> ! {
    println!("harness: running {} tests in {suite}", tests.len());
    let mut failed = 0;
    for (name, test) in tests {
        match test() {
            Ok(()) => println!("test {name} ... ok"),
            Err(failure) => {
                failed += 1;
                println!("test {name} ... FAILED\n{failure}");
            }
        }
    }
    let t = |c| tally::get(c);
    if t(&tally::BAD_INPUTS) + t(&tally::FAULTS) + t(&tally::RECOVERED) + t(&tally::LOST) > 0 {
        println!(
            "robustness-tally: bad_inputs={} faults={} recovered={} lost={}",
            t(&tally::BAD_INPUTS),
            t(&tally::FAULTS),
            t(&tally::RECOVERED),
            t(&tally::LOST)
        );
    }
    println!("{} passed, {failed} failed", tests.len() - failed);
    semihosting::exit(if failed == 0 { 0 } else { 1 })
}

/// Announces that test `name` is expected to end the image with an
/// exception whose class name contains `class` (e.g. "data abort"). The
/// runner checks the report and the non-zero exit status.
pub fn expect_exception(name: &str, class: &str) {
    println!("harness: test {name} expects exception \"{class}\"");
}
