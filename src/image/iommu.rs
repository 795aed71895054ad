//! Creating the driver for the board's SMMU: the one place that turns the
//! DTB's SMMU node into an [`Smmu`].

use core::ptr::NonNull;

use smmuv3::regs::MMIO_SIZE;
use smmuv3::smmu::{Config, Smmu};
use smmuv3::{Error, Result};

use super::dma::ImageHal;

/// The driver for the SMMU the DTB describes, probed and allocated but not
/// yet enabled. Several may be created one after another (tests do); only
/// one may exist at a time, since each believes it owns the hardware.
pub fn new_smmu(config: Config) -> Result<Smmu<ImageHal>> {
    let reg = super::boot().platform.smmu.reg;
    if reg.size < MMIO_SIZE as u64 {
        return Err(Error::InvalidArgument(
            "DTB SMMU region is smaller than pages 0 and 1",
        ));
    }
    let base = NonNull::new(reg.base as *mut u8).ok_or(Error::InvalidArgument("SMMU base is 0"))?;
    // SAFETY: the MMU maps the DTB's SMMU region (both pages) as device
    // memory, identity mapped, for the life of the image; callers keep at
    // most one driver instance alive at a time.
    unsafe { Smmu::new(base, config) }
}
