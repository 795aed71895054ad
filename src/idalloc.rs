//! Bitmap allocators for VMIDs and ASIDs.
