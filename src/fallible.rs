//! Fallible reservations of the driver's own bookkeeping: running out is
//! [`Error::NoMemory`], never an abort. Every call that changes tables,
//! STEs or CDs reserves what it needs with these before the first change,
//! so that once something changed, the invalidation always goes out.
//!
//! In the unit-test binary the reservations can be made to fail on
//! demand ([`crate::fake::fail_reservations_after`]).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::alloc::Layout;

use crate::error::{Error, Result};

/// Room for `additional` more elements in `v`, or [`Error::NoMemory`].
pub(crate) fn try_reserve<T>(v: &mut Vec<T>, additional: usize) -> Result<()> {
    #[cfg(test)]
    if crate::fake::reservation_fails() {
        return Err(Error::NoMemory);
    }
    v.try_reserve(additional).map_err(|_| Error::NoMemory)
}

/// Room for exactly `additional` more elements in `v`, or
/// [`Error::NoMemory`].
pub(crate) fn try_reserve_exact<T>(v: &mut Vec<T>, additional: usize) -> Result<()> {
    #[cfg(test)]
    if crate::fake::reservation_fails() {
        return Err(Error::NoMemory);
    }
    v.try_reserve_exact(additional).map_err(|_| Error::NoMemory)
}

/// `Box::new(value)`, or [`Error::NoMemory`] (and `value` dropped) when
/// the allocator has no room (`Box::try_new` is not stable yet).
pub(crate) fn try_box<T>(value: T) -> Result<Box<T>> {
    #[cfg(test)]
    if crate::fake::reservation_fails() {
        return Err(Error::NoMemory);
    }
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        return Ok(Box::new(value));
    }
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc::alloc::alloc(layout) }.cast::<T>();
    if p.is_null() {
        return Err(Error::NoMemory);
    }
    // SAFETY: `p` is non-null, allocated by the global allocator with the
    // layout of `T` (what `Box<T>` frees with) and not aliased; writing
    // `value` initialises it before the box takes ownership.
    unsafe {
        p.write(value);
        Ok(Box::from_raw(p))
    }
}
