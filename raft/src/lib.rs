//! raftmq-raft: a broker group as a Raft cluster whose log is the CommitLog.
//!
//! The folders are the architecture, each depending only on those before it (and on
//! [`error`], shared by all):
//! - [`state::command`] and [`state::applied`]: what an entry asks and what applying it
//!   answers (the vocabulary everything else speaks; they import nothing of the crate but
//!   [`error`]);
//! - [`consensus`]: openraft plumbing: type configuration, the log store on the CommitLog
//!   (one writer thread, group commit), the entry encoding, peer RPC (both ends) and
//!   snapshot transfer;
//! - [`state`]: the state machine: commands applied into the RocksDB IndexStore
//!   ([`state::Applier`] with its queues and consumer groups), snapshots, reads;
//! - [`broker`]: [`Broker`], the only face of the crate: typed operations that take and
//!   return plain values and fail with one [`BrokerError`].
//!
//! Must never: know about HTTP routing or axum, install a tracing subscriber, read the
//! process environment, or purge the log except when openraft installs a snapshot or
//! retention asks (openraft's snapshot-driven purge is disabled in
//! [`consensus::raft_config`]).

pub mod broker;
pub mod consensus;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod metrics;
pub mod state;

pub use broker::{
    Broker, BrokerConfig, CHECK_TIMEOUT, ClusterStatus, Delivery, MAX_BATCH_BYTES,
    MAX_REQUEST_BYTES, MemberRole, MemberStatus, MessageId, NodeStats, PAST_GRACE_MS, Placed,
    ProduceMessage, Schedule, SystemClock, TxnChecker, TxnInfo, TxnRequest, WallClock,
    queue_for_key,
};
pub use consensus::RaftTiming;
pub use consensus::log_store::{FlushPolicy, LogStore};
pub use consensus::rpc::PeerRpc;
pub use consensus::runtime::TimerClock;
pub use consensus::types::{NodeId, TypeConfig};
pub use error::BrokerError;
pub use metrics::Histogram;
pub use raftmq_storage::DEFAULT_DEDUP_WINDOW_MS;
pub use raftmq_storage::MAX_IDEMPOTENCY_KEY_LEN;
pub use raftmq_storage::SpreadPart;
pub use state::command::{
    MAX_BACKOFF_MS as MAX_NACK_DELAY_MS, NACK_WITH_BACKOFF, Permission, TxnDecision, User,
};
pub use state::consumer_groups::admin::assigned_queues;
pub use state::consumer_groups::{
    ConsumerGroupInfo, ConsumerGroupMode, QueueProgress, ReceiveRequest, ResetTo,
};
pub use state::queues::TxnState;
pub use state::read::{QueueQuery, QueueRead, StoredMessage, TagFilter};
pub use state::{Assignment, RejectCode, StateMachine, TopicSpec};
pub use state::{InstallProbe, InstallStep};
