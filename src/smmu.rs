//! The SMMU: probe, enable, disable, and the command path.
