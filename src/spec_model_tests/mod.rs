//! An observation model of the SMMUv3 architecture's ILLEGAL rules (IHI
//! 0070: STE 5.2, L1STD 5.1, L1CD 5.3, CD 5.4, commands 4.x), independent
//! of the driver's encoders, and property tests that the driver never
//! leaves an ILLEGAL STE, CD, L1 descriptor or command where the SMMU can
//! see it, on many ID-register variants.
//!
//! QEMU checks few of these rules, so real hardware is the first to report
//! C_BAD_STE / C_BAD_CD / CERROR_ILL for a breach. Each rule is one line
//! naming the spec section and field. Rules a Non-secure driver without
//! ATS, stall, HTTU, PIE, MPAM or 128-bit descriptors cannot reach through
//! a field it sets are still modelled where they constrain a field the
//! driver writes (e.g. EATS, S1STALLD, S2S, HA/HD) so that a change of its
//! constants is caught.

extern crate std;

use std::format;
use std::string::String;
use std::sync::{Arc, Mutex};
use std::vec::Vec;

use proptest::prelude::*;

use crate::fake::FakeHal;
use crate::features::IdRegs;
use crate::hal::{DmaRegion, Hal};
use crate::testing::{ModelBuilder, SmmuModel};
use crate::{Config, DomainOptions, Granule, Perm, Smmu, Stage2Config, StagePolicy};

mod cd;
mod commands;
mod idr;
mod l1;
mod low_hal;
mod model_tests;
mod observe;
mod properties;
mod requests;
mod ste;
mod variants;

use cd::*;
use commands::*;
use idr::*;
use l1::*;
use low_hal::*;
use model_tests::*;
use observe::*;
use requests::*;
use ste::*;
use variants::*;
