//! Command and event queues in memory.
