//! The openraft type configuration of a broker group, and short aliases.
//!
//! Must never: leak openraft's generic machinery into other crates; they use these aliases.

use openraft::impls::BasicNode;

use crate::state::{Applied, Command};

openraft::declare_raft_types!(
    /// raftmq's Raft types: commands in, `Applied` out, nodes addressed by their HTTP address.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = BasicNode,
        AsyncRuntime = super::runtime::TimerRuntime,
);

/// A node id within a broker group.
pub type NodeId = u64;
/// A Raft log id (term, leader node, index).
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A Raft vote.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A Raft log entry.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// A membership configuration.
pub type Membership = openraft::Membership<NodeId, BasicNode>;
/// A membership with the log id that set it.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// Raft metrics.
pub type Metrics = openraft::RaftMetrics<TypeConfig>;

/// Builds a log id.
pub fn log_id(term: u64, node_id: NodeId, index: u64) -> LogId {
    openraft::LogId::new(
        openraft::vote::leader_id_adv::LeaderId { term, node_id },
        index,
    )
}

/// A snapshot on disk: a directory holding `state/` (a RocksDB checkpoint) and `log/` (the
/// retained CommitLog up to the snapshot's index). Clones share a keeper, which removes
/// the directory when the last clone goes, so a snapshot being sent is never deleted under
/// the sender.
#[derive(Debug, Clone)]
pub struct SnapshotData {
    /// The snapshot directory.
    pub dir: std::path::PathBuf,
    /// Held only for its `Drop`.
    _keeper: Option<std::sync::Arc<dyn std::fmt::Debug + Send + Sync>>,
}

impl SnapshotData {
    /// A snapshot directory whose lifetime someone else manages.
    pub fn at(dir: std::path::PathBuf) -> Self {
        SnapshotData { dir, _keeper: None }
    }

    /// A snapshot directory kept until `keeper`'s last clone drops (its `Drop` cleans up).
    pub fn with_keeper(
        dir: std::path::PathBuf,
        keeper: std::sync::Arc<dyn std::fmt::Debug + Send + Sync>,
    ) -> Self {
        SnapshotData {
            dir,
            _keeper: Some(keeper),
        }
    }
}

impl PartialEq for SnapshotData {
    fn eq(&self, other: &Self) -> bool {
        self.dir == other.dir
    }
}

impl Eq for SnapshotData {}

/// A snapshot with its metadata.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
/// What a snapshot covers.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
