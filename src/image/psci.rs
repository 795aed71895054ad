//! PSCI calls through the conduit the DTB names (`psci` node, `method`):
//! SMC on QEMU `virt` at EL2 (QEMU's built-in PSCI firmware answers it), HVC
//! under a hypervisor. Uses the `smccc` crate's SMCCC 64-bit calling
//! convention and PSCI function IDs.

use core::fmt;

use smccc::psci::{self, AffinityState, LowestAffinityLevel};
use smccc::{Hvc, Smc};

use super::platform::PsciMethod;

/// Why a PSCI call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsciError {
    /// The DTB has no usable `psci` node.
    NoConduit,
    /// The firmware returned an error.
    Firmware(psci::Error),
}

impl fmt::Display for PsciError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::NoConduit => f.write_str("the DTB names no PSCI conduit (psci node, method)"),
            Self::Firmware(e) => write!(f, "PSCI: {e}"),
        }
    }
}

impl From<psci::Error> for PsciError {
    fn from(e: psci::Error) -> Self {
        Self::Firmware(e)
    }
}

fn conduit() -> Result<PsciMethod, PsciError> {
    super::boot().platform.psci.ok_or(PsciError::NoConduit)
}

/// PSCI_VERSION as (major, minor).
pub fn version() -> Result<(u16, u16), PsciError> {
    let v = match conduit()? {
        PsciMethod::Smc => psci::version::<Smc>(),
        PsciMethod::Hvc => psci::version::<Hvc>(),
    }?;
    Ok((v.major, v.minor))
}

/// CPU_ON (64-bit): starts the CPU with MPIDR `target_mpidr` at physical
/// address `entry`, in the state the PSCI spec gives (this EL, MMU and caches
/// off, all exceptions masked), with `context` in x0.
pub fn cpu_on(target_mpidr: u64, entry: usize, context: u64) -> Result<(), PsciError> {
    match conduit()? {
        PsciMethod::Smc => psci::cpu_on::<Smc>(target_mpidr, entry as u64, context),
        PsciMethod::Hvc => psci::cpu_on::<Hvc>(target_mpidr, entry as u64, context),
    }?;
    Ok(())
}

/// AFFINITY_INFO (64-bit) for one CPU: on, off or on-pending.
pub fn affinity_info(target_mpidr: u64) -> Result<AffinityState, PsciError> {
    let level = LowestAffinityLevel::All;
    Ok(match conduit()? {
        PsciMethod::Smc => psci::affinity_info::<Smc>(target_mpidr, level),
        PsciMethod::Hvc => psci::affinity_info::<Hvc>(target_mpidr, level),
    }?)
}
