//! Context descriptors (stage 1).
