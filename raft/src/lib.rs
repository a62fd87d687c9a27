//! raftmq-raft: a broker group as a Raft cluster whose log is the CommitLog.
//!
//! - [`types`]: the openraft type configuration.
//! - [`command`]: what an entry asks for (produce a batch, topic and offset changes) and its
//!   binary encoding; [`entry_codec`]: an entry as a CommitLog payload.
//! - [`log_store`]: openraft's log store on `raftmq_storage::CommitLog`, one writer thread,
//!   group commit, flush callbacks after `fdatasync`.
//! - [`state_machine`] and [`apply`]: committed entries into the RocksDB IndexStore, one
//!   write batch per apply call, queue offsets assigned at apply.
//! - [`read`]: messages back out (ConsumeQueue, then CommitLog).
//!
//! Must never: know about HTTP routing or axum, install a tracing subscriber, read the
//! process environment, or purge the log except when openraft installs a snapshot or
//! retention asks (openraft's snapshot-driven purge is disabled in [`raft_config`]).

pub mod apply;
pub mod broker;
pub mod command;
pub mod entry_codec;
pub mod error;
pub mod groups;
pub mod log_store;
pub mod network;
pub mod read;
pub mod rpc;
pub mod state_machine;
pub mod types;

pub use apply::{Applied, RejectCode};
pub use broker::{
    Broker, BrokerConfig, ClusterStatus, MemberStatus, Placed, ProduceError, ProduceMessage,
    ProposeError, StartError,
};
pub use command::{Command, TopicSpec};
pub use error::{CodecError, ReadError};
pub use log_store::{FlushPolicy, LogStore};
/// Re-exported so callers can wait on [`Raft::metrics`] changes.
pub use openraft::async_runtime::WatchReceiver;
pub use state_machine::{SnapshotData, StateMachine};
pub use types::{LogId, NodeId, TypeConfig};

/// The openraft handle of a broker group member.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// Timing of a broker group.
#[derive(Clone, Copy, Debug)]
pub struct RaftTiming {
    /// Leader heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// Election timeout lower bound, ms (upper bound: twice this).
    pub election_timeout_ms: u64,
}

/// openraft's configuration for raftmq: fast failover, and no purge on snapshots.
pub fn raft_config(
    cluster: &str,
    timing: RaftTiming,
) -> Result<openraft::Config, openraft::ConfigError> {
    openraft::Config {
        cluster_name: cluster.to_owned(),
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: timing.election_timeout_ms,
        election_timeout_max: timing.election_timeout_ms * 2,
        install_snapshot_timeout: 60_000,
        max_payload_entries: 256,
        // The log is the only copy of every message: never purge it because a snapshot
        // was taken. Snapshots are built only when a follower needs one.
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: u64::MAX,
        // A replica restarted with a wiped data dir must be able to rejoin.
        allow_log_reversion: Some(true),
        ..Default::default()
    }
    .validate()
}
