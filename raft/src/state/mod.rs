//! The replicated state: what a committed entry asks ([`command`]), how it is applied
//! ([`applier`], with [`queues`] for topics and ConsumeQueues and [`consumer_groups`] for
//! leases, acks and floors), openraft's state-machine adapter with snapshots
//! ([`state_machine`]), and reads of the applied state ([`read`]).
//!
//! Apply is a deterministic function of the log: every replica applies the same entries in
//! the same order and reaches the same RocksDB state, however openraft cuts the entries into
//! apply calls ([`Command::reads_store`] decides which commands may share a write batch).
//!
//! Must never: read a clock, a random source or anything local to the replica while
//! applying; answer a client before its entry's writes are in RocksDB; know about the
//! broker facade or HTTP.

pub mod applied;
pub mod applier;
pub mod command;
pub mod consumer_groups;
pub mod queues;
pub mod read;
pub mod sql;
pub mod state_machine;

pub use applied::{Applied, Assignment, Granted, RejectCode};
pub use applier::Applier;
pub use command::{Command, TopicSpec};
pub use state_machine::{InstallProbe, InstallStep, StateMachine};

/// A hash map for lookups apply makes per message (by topic and group names): foldhash is
/// several times faster than std's SipHash on short keys and still seeded per process, and
/// no outcome of apply depends on a map's iteration order.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// The set of [`FastMap`].
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
