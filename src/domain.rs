//! VM domains: a VMID, stage-2 tables and the streams attached to them.
