//! Master/slave replication of the commit log within a replica group (same cluster and
//! brokerName): a slave streams the master's log byte for byte from their common prefix and
//! derives everything else from it, as the master did.

pub mod master;
pub mod slave;
pub mod tracker;

pub use tracker::Tracker;

/// Largest chunk of log bytes in one message.
pub const CHUNK: usize = 1024 * 1024;
/// Bytes sent but not yet acknowledged before the master waits (stream back-pressure).
pub const WINDOW: i64 = 16 * 1024 * 1024;
