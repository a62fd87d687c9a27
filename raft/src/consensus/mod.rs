//! Consensus plumbing: openraft's type configuration and configuration, the log store on the
//! CommitLog, the entry encoding, the peer protocol (both ends) and snapshot transfer.
//!
//! - [`types`]: the openraft type configuration and short aliases.
//! - [`entry_codec`]: an entry as a CommitLog payload (and on the wire).
//! - [`log_store`]: openraft's log store, one writer thread, group commit.
//! - [`rpc`]: the peer wire format and the `/raft/...` paths ([`rpc::PeerRpc`]).
//! - [`network`]: the client side of peer RPC; [`peer`]: the serving side;
//!   [`peer_auth`]: who may speak it (cluster secret, or member hosts).
//! - [`snapshot_inbox`]: where a snapshot being received lands, resumably.
//! - [`transport`]: the HTTP client (plain or TLS) every request to a peer goes through.
//! - [`runtime`]: the async runtime openraft runs on (tokio, with a clock for its timers
//!   that a simulation can move).
//!
//! Must never: decide what a command means (that is [`crate::state`]), or purge the log on
//! its own (openraft's snapshot-driven purge is disabled in [`raft_config`]).

pub(crate) mod entry_codec;
pub mod log_store;
pub mod network;
pub mod peer;
pub mod peer_auth;
pub mod rpc;
pub mod runtime;
pub(crate) mod snapshot_inbox;
pub mod transport;
pub mod types;

/// Timing of a broker group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
