//! Commands: what a Raft entry asks the state machine to do, and their binary encoding.
//!
//! A produce command carries the message batch exactly as it will be stored (encoded once by
//! the leader, see `raftmq_storage::message`), so applying it and reading it back never
//! re-encodes a body. Other commands are small and encoded with postcard.
//!
//! ```text
//! produce = 1 | create u8 | [queues u32 | fifo u8 | retention_ms u64 | [dedup_window_ms u64]]
//!           | batch bytes…   (create: 0 none, 1 without the window (old entries), 2 with it)
//! half    = 15 | header_len u32 | postcard(create_topic, check) | batch bytes…
//! other   = tag u8 | postcard(body)
//! ```
//!
//! Must never: change an encoding in place (entries live in the log for as long as retention
//! keeps them); add a tag instead.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

mod codec;

/// A topic's settings as carried in commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    /// Number of queues.
    pub queues: u32,
    /// Strict per-queue order for consumer groups.
    pub fifo: bool,
    /// How long messages are kept (ms).
    pub retention_ms: u64,
    /// How long idempotency keys are remembered (ms).
    pub dedup_window_ms: u64,
    /// `Some`: a part of a topic spread over broker groups. Never in a serialized spec
    /// (older encodings have no room for it): a part's `PutTopic` carries it beside the spec.
    #[serde(skip)]
    pub part: Option<raftmq_storage::SpreadPart>,
}

impl TopicSpec {
    /// The queues this group holds: `first_queue..queues` of a part, else all.
    pub fn own_queues(&self) -> std::ops::Range<u32> {
        self.part.map_or(0, |p| p.first_queue)..self.queues
    }
}

/// A topic's settings as the first command encodings carried them (no dedup window): the
/// log keeps such entries, so they decode with the default window.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct TopicSpecV1 {
    queues: u32,
    fifo: bool,
    retention_ms: u64,
}

impl From<TopicSpecV1> for TopicSpec {
    fn from(s: TopicSpecV1) -> Self {
        TopicSpec {
            queues: s.queues,
            fifo: s.fifo,
            retention_ms: s.retention_ms,
            dedup_window_ms: raftmq_storage::DEFAULT_DEDUP_WINDOW_MS,
            part: None,
        }
    }
}

impl From<TopicSpec> for raftmq_storage::TopicMeta {
    fn from(s: TopicSpec) -> Self {
        raftmq_storage::TopicMeta {
            queues: s.queues,
            fifo: s.fifo,
            retention_ms: s.retention_ms,
            dedup_window_ms: s.dedup_window_ms,
            part: s.part,
        }
    }
}

impl From<raftmq_storage::TopicMeta> for TopicSpec {
    fn from(m: raftmq_storage::TopicMeta) -> Self {
        TopicSpec {
            queues: m.queues,
            fifo: m.fifo,
            retention_ms: m.retention_ms,
            dedup_window_ms: m.dedup_window_ms,
            part: m.part,
        }
    }
}

/// How a consumer group shares a topic among its consumers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerGroupMode {
    /// Each message to one consumer of the group.
    Clustering,
    /// Each consumer gets every message.
    Broadcast,
}

impl ConsumerGroupMode {
    /// `clustering` / `broadcast`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerGroupMode::Clustering => "clustering",
            ConsumerGroupMode::Broadcast => "broadcast",
        }
    }

    /// Parses `clustering` / `broadcast`.
    pub fn parse(s: &str) -> Option<ConsumerGroupMode> {
        match s {
            "clustering" => Some(ConsumerGroupMode::Clustering),
            "broadcast" => Some(ConsumerGroupMode::Broadcast),
            _ => None,
        }
    }
}

/// Lease messages to a consumer of a consumer group (a receive), computed by the leader, checked at apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseCmd {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Consumer.
    pub consumer: String,
    /// Mode asked for (must match the group's).
    pub mode: ConsumerGroupMode,
    /// Leader clock.
    pub now_ms: u64,
    /// Lease length.
    pub invisible_ms: u64,
    /// `(queue, offset)` to lease.
    pub items: Vec<(u32, u64)>,
    /// `(queue, offset)` the consumer's tag filter excludes: done for the group.
    pub skip: Vec<(u32, u64)>,
    /// `(queue, offset)` out of attempts: to the dead-letter topic.
    pub dead: Vec<(u32, u64)>,
}

/// Ack (or nack, with a delay) receipts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckCmd {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Receipts.
    pub receipts: Vec<String>,
    /// Leader clock.
    pub now_ms: u64,
    /// `Some(delay)`: nack, deliver again after the delay ([`NACK_WITH_BACKOFF`]: after the
    /// group's retry backoff for the message's attempt).
    pub nack_delay_ms: Option<u64>,
}

/// Most deliveries a group may allow before dead-lettering.
pub const MAX_ATTEMPTS_LIMIT: u32 = 1000;
/// Most steps of a retry backoff.
pub const MAX_BACKOFF_STEPS: usize = 64;
/// Longest one backoff step, ms (7 days, like a nack's delay).
pub const MAX_BACKOFF_MS: u64 = 7 * 24 * 3600 * 1000;

impl GroupSettingsCmd {
    /// Why the settings are out of bounds, naming the field (checked before proposing and
    /// again at apply).
    pub fn invalid(&self) -> Option<String> {
        if let Some(n) = self.max_attempts
            && !(1..=MAX_ATTEMPTS_LIMIT).contains(&n)
        {
            return Some(format!("max_attempts: must be 1 to {MAX_ATTEMPTS_LIMIT}"));
        }
        if let Some(b) = &self.retry_backoff_ms
            && (b.is_empty()
                || b.len() > MAX_BACKOFF_STEPS
                || b.iter().any(|&d| d > MAX_BACKOFF_MS))
        {
            return Some(format!(
                "retry_backoff_ms: 1 to {MAX_BACKOFF_STEPS} values of at most {MAX_BACKOFF_MS} ms"
            ));
        }
        None
    }
}

/// A nack's delay that asks for the group's retry backoff instead of a delay of its own (no
/// real delay is this long: the API caps delays at days).
pub const NACK_WITH_BACKOFF: u64 = u64::MAX;

/// A consumer group's settings; a field left out keeps its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSettingsCmd {
    /// Group.
    pub group: String,
    /// Deliveries before a message goes to the dead-letter topic.
    pub max_attempts: Option<u32>,
    /// Backoff before an expired or nacked (without a delay) message is visible again, by
    /// attempt; the last value repeats.
    pub retry_backoff_ms: Option<Vec<u64>>,
}

/// How an open transaction is checked back: where, when first, and how often at most
/// before it is rolled back (set by the leader when it is produced).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCheck {
    /// URL the leader POSTs `{"transaction_id", "messages"}` to.
    pub check_url: String,
    /// How long after the produce (and between checks) a check is due.
    pub check_after_ms: u64,
    /// Checks before an undecided transaction is rolled back.
    pub max_checks: u32,
}

/// What ends (or prolongs) an open transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnDecision {
    /// Make its messages readable, at the tails of their queues.
    Commit,
    /// Drop its messages.
    Rollback,
    /// A check-back answered `unknown` (or failed): count it, check again later, roll back
    /// after the last allowed check.
    Unknown,
}

/// Decide a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndTxnCmd {
    /// The log index of its produce entry (its id).
    pub txn: u64,
    /// The decision.
    pub decision: TxnDecision,
    /// Leader clock.
    pub now_ms: u64,
}

/// A consumer's heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatCmd {
    /// Group.
    pub group: String,
    /// Consumer.
    pub consumer: String,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// Session length.
    pub session_ms: u64,
    /// Leader clock.
    pub now_ms: u64,
}

/// Move a group's floors (committed offsets) and forget its leases there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetCmd {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// `(queue, new floor)`.
    pub offsets: Vec<(u32, u64)>,
}

/// One permission of a user: actions on a topic or a consumer group, named exactly or by a
/// prefix with one trailing `*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// Topic pattern (or `None` for a group permission).
    pub topic: Option<String>,
    /// Consumer-group pattern (or `None` for a topic permission).
    pub group: Option<String>,
    /// `produce`, `consume`, `admin`, `metrics`.
    pub actions: Vec<String>,
}

/// A user: the SHA-256 of its token (tokens are never stored), and what it may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Name.
    pub name: String,
    /// SHA-256 of the token.
    pub token_sha256: [u8; 32],
    /// May do everything.
    pub admin: bool,
    /// What it may do otherwise.
    pub permissions: Vec<Permission>,
}

/// A state change, replicated through the log.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Store a batch of messages (one topic); creates the topic first if `create_topic`.
    Produce {
        /// Auto-create the topic with these settings if it does not exist at apply time.
        create_topic: Option<TopicSpec>,
        /// The encoded `raftmq_storage::message` batch.
        batch: Bytes,
    },
    /// Store a batch of half messages: a transaction, invisible until committed.
    ProduceHalf {
        /// Auto-create the topic with these settings if it does not exist at apply time.
        create_topic: Option<TopicSpec>,
        /// How it is checked back.
        check: TxnCheck,
        /// The encoded `raftmq_storage::message` batch.
        batch: Bytes,
    },
    /// Commit, roll back or count a check of a transaction.
    EndTxn(EndTxnCmd),
    /// Create a topic or update it (queues may only grow).
    PutTopic {
        /// Topic name.
        name: String,
        /// New settings.
        spec: TopicSpec,
    },
    /// Delete a topic and its indexes.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// Apply retention as of `now_ms` (the leader's clock): drop index entries of expired
    /// messages and advance the retention point, below which the log may be purged.
    Retain {
        /// The leader's time when it proposed this.
        now_ms: u64,
    },
    /// Put scheduled messages due at `now_ms` (the leader's clock) into their queues.
    Deliver {
        /// The leader's time when it proposed this.
        now_ms: u64,
    },
    /// Lease messages (receive).
    Lease(LeaseCmd),
    /// Ack or nack.
    Ack(AckCmd),
    /// Consumer heartbeat.
    Heartbeat(HeartbeatCmd),
    /// Offset reset.
    ResetOffsets(ResetCmd),
    /// Set a consumer group's settings (creating the group, clustering, if new).
    PutGroup(GroupSettingsCmd),
    /// Set a consumer group's committed offsets.
    CommitOffsets {
        /// Group name.
        group: String,
        /// Topic name.
        topic: String,
        /// `(queue, offset)` pairs.
        offsets: Vec<(u32, u64)>,
    },
    /// Create or replace a user.
    PutUser(User),
    /// Delete a user.
    DeleteUser {
        /// User name.
        name: String,
    },
    /// Record that a member has held the group's log (up to `index`), so that, its data
    /// lost, it is refused at start by any member that applied this (`broker/formation.rs`).
    /// Applied only while `node` is a member; removing it forgets the record.
    HeldLog {
        /// The member.
        node: u64,
        /// How far the leader saw it hold the log.
        index: u64,
    },
}

/// The state-machine metadata key recording that `node` has held the log.
pub fn held_log_key(node: u64) -> String {
    format!("held_log/{node}")
}

impl Command {
    /// Whether applying this command reads RocksDB itself, beyond what the applier caches
    /// (topic settings, next offsets) and its overlay of writes made through it (consumer
    /// group records and floors). Such a command must see every earlier entry's writes in
    /// RocksDB, so the state machine writes the batch before it first and gives it a batch
    /// of its own; the others share one batch. Either way apply's results do not depend on
    /// how openraft cut the entries into apply calls.
    pub fn reads_store(&self) -> bool {
        match self {
            // Read only topic settings, next offsets and idempotency records, through the
            // applier's caches and its overlay of the batch's own idempotency records
            // (which fall back to RocksDB on a miss, for state no entry of the batch wrote).
            Command::Produce { .. } | Command::ProduceHalf { .. } | Command::PutTopic { .. } => {
                false
            }
            // Reads the transaction's record.
            Command::EndTxn(_) => true,
            // Scan the ConsumeQueue, topics or consumer-group records in RocksDB.
            Command::DeleteTopic { .. }
            | Command::Retain { .. }
            | Command::Deliver { .. }
            | Command::Lease(_)
            | Command::ResetOffsets(_)
            | Command::PutGroup(_) => true,
            // Read floors (stored offsets, ConsumeQueue bounds) and scan message states.
            Command::CommitOffsets { .. } => true,
            // Read the stored users.
            Command::PutUser(_) | Command::DeleteUser { .. } => true,
            // A single write.
            Command::HeldLog { .. } => false,
            // Read floors and scan consumer records through the overlay but fall back to
            // RocksDB: kept apart until that is proved safe in a shared batch.
            Command::Ack(_) | Command::Heartbeat(_) => true,
        }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Produce { batch, .. } => write!(f, "produce({} bytes)", batch.len()),
            Command::ProduceHalf { batch, .. } => {
                write!(f, "produce-half({} bytes)", batch.len())
            }
            Command::EndTxn(c) => write!(f, "end-txn({}, {:?})", c.txn, c.decision),
            Command::PutTopic { name, .. } => write!(f, "put-topic({name})"),
            Command::HeldLog { node, index } => write!(f, "held-log({node}, {index})"),
            Command::DeleteTopic { name } => write!(f, "delete-topic({name})"),
            Command::PutGroup(c) => write!(f, "put-group({})", c.group),
            Command::Retain { now_ms } => write!(f, "retain({now_ms})"),
            Command::Deliver { now_ms } => write!(f, "deliver({now_ms})"),
            Command::Lease(c) => write!(
                f,
                "lease({}, {}, {} items)",
                c.group,
                c.topic,
                c.items.len()
            ),
            Command::Ack(c) => write!(
                f,
                "ack({}, {}, {} receipts)",
                c.group,
                c.topic,
                c.receipts.len()
            ),
            Command::Heartbeat(c) => write!(f, "heartbeat({}, {})", c.group, c.consumer),
            Command::ResetOffsets(c) => write!(f, "reset-offsets({}, {})", c.group, c.topic),
            Command::CommitOffsets { group, topic, .. } => {
                write!(f, "commit-offsets({group}, {topic})")
            }
            Command::PutUser(u) => write!(f, "put-user({})", u.name),
            Command::DeleteUser { name } => write!(f, "delete-user({name})"),
        }
    }
}
