//! Event queue records decoded.
