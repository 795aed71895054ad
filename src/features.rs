//! The SMMU's ID registers decoded into typed features.
