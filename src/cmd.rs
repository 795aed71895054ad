//! Command queue entries: typed commands and their encodings.
