//! Linear and two-level stream tables.
