//! Commands: what a Raft entry asks the state machine to do, and their binary encoding.
//!
//! A produce command carries the message batch exactly as it will be stored (encoded once by
//! the leader, see `raftmq_storage::message`), so applying it and reading it back never
//! re-encodes a body. Other commands are small and encoded with postcard.
//!
//! ```text
//! produce = 1 | create u8 | [queues u32 | fifo u8 | retention_ms u64 | [dedup_window_ms u64]]
//!           | batch bytes…   (create: 0 none, 1 without the window (old entries), 2 with it)
//! other   = tag u8 | postcard(body)
//! ```
//!
//! Must never: change an encoding in place (entries live in the log for as long as retention
//! keeps them); add a tag instead.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::CodecError;

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
}

const TAG_PRODUCE: u8 = 1;
const TAG_PUT_TOPIC: u8 = 2;
const TAG_DELETE_TOPIC: u8 = 3;
const TAG_COMMIT_OFFSETS: u8 = 4;
const TAG_RETAIN: u8 = 5;
const TAG_LEASE: u8 = 6;
const TAG_ACK: u8 = 7;
const TAG_HEARTBEAT: u8 = 8;
const TAG_RESET: u8 = 9;
const TAG_PUT_USER: u8 = 10;
const TAG_DELETE_USER: u8 = 11;
const TAG_PUT_GROUP: u8 = 12;
/// `PutTopic` with the dedup window (`TAG_PUT_TOPIC` entries have none).
const TAG_PUT_TOPIC_V2: u8 = 13;

#[derive(Serialize, Deserialize)]
struct PutTopicBody<'a> {
    name: &'a str,
    spec: TopicSpec,
}

#[derive(Serialize, Deserialize)]
struct PutTopicBodyV1<'a> {
    name: &'a str,
    spec: TopicSpecV1,
}

#[derive(Serialize, Deserialize)]
struct OffsetsBody<'a> {
    group: &'a str,
    topic: &'a str,
    offsets: Vec<(u32, u64)>,
}

fn postcard_into<T: Serialize>(out: &mut BytesMut, tag: u8, body: &T) {
    out.put_u8(tag);
    let bytes = postcard::to_allocvec(body).expect("commands always serialize");
    out.put_slice(&bytes);
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
            Command::Produce { .. } | Command::PutTopic { .. } => false,
            // Scan the ConsumeQueue, topics or consumer-group records in RocksDB.
            Command::DeleteTopic { .. }
            | Command::Retain { .. }
            | Command::Lease(_)
            | Command::ResetOffsets(_)
            | Command::PutGroup(_) => true,
            // Read floors (stored offsets, ConsumeQueue bounds) and scan message states.
            Command::CommitOffsets { .. } => true,
            // Read the stored users.
            Command::PutUser(_) | Command::DeleteUser { .. } => true,
            // Read floors and scan consumer records through the overlay but fall back to
            // RocksDB: kept apart until that is proved safe in a shared batch.
            Command::Ack(_) | Command::Heartbeat(_) => true,
        }
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        match self {
            Command::Produce {
                create_topic,
                batch,
            } => {
                out.reserve(16 + batch.len());
                out.put_u8(TAG_PRODUCE);
                match create_topic {
                    Some(s) => {
                        out.put_u8(2);
                        out.put_u32_le(s.queues);
                        out.put_u8(u8::from(s.fifo));
                        out.put_u64_le(s.retention_ms);
                        out.put_u64_le(s.dedup_window_ms);
                    }
                    None => out.put_u8(0),
                }
                out.put_slice(batch);
            }
            Command::PutTopic { name, spec } => {
                postcard_into(out, TAG_PUT_TOPIC_V2, &PutTopicBody { name, spec: *spec })
            }
            Command::DeleteTopic { name } => postcard_into(out, TAG_DELETE_TOPIC, name),
            Command::Retain { now_ms } => postcard_into(out, TAG_RETAIN, now_ms),
            Command::Lease(c) => postcard_into(out, TAG_LEASE, c),
            Command::Ack(c) => postcard_into(out, TAG_ACK, c),
            Command::Heartbeat(c) => postcard_into(out, TAG_HEARTBEAT, c),
            Command::ResetOffsets(c) => postcard_into(out, TAG_RESET, c),
            Command::PutGroup(c) => postcard_into(out, TAG_PUT_GROUP, c),
            Command::PutUser(u) => postcard_into(out, TAG_PUT_USER, u),
            Command::DeleteUser { name } => postcard_into(out, TAG_DELETE_USER, name),
            Command::CommitOffsets {
                group,
                topic,
                offsets,
            } => postcard_into(
                out,
                TAG_COMMIT_OFFSETS,
                &OffsetsBody {
                    group,
                    topic,
                    offsets: offsets.clone(),
                },
            ),
        }
    }

    /// The encoding as bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode_into(&mut out);
        out.freeze()
    }

    /// Decodes a command; a produce batch is a zero-copy slice of `buf`.
    pub(crate) fn decode(buf: &Bytes) -> Result<Command, CodecError> {
        let Some((&tag, rest)) = buf.split_first() else {
            return Err(CodecError::new("command", "empty"));
        };
        let de =
            |what: &'static str| move |e: postcard::Error| CodecError::new(what, e.to_string());
        match tag {
            TAG_PRODUCE => {
                let le64 = |at: usize| u64::from_le_bytes(rest[at..at + 8].try_into().expect("8"));
                let (create_topic, skip) = match rest.first() {
                    Some(0) => (None, 2),
                    // 1: queues, fifo, retention; 2: and the dedup window.
                    Some(&v @ (1 | 2)) if rest.len() >= if v == 1 { 14 } else { 22 } => {
                        let spec = TopicSpec {
                            queues: u32::from_le_bytes(rest[1..5].try_into().expect("4 bytes")),
                            fifo: rest[5] != 0,
                            retention_ms: le64(6),
                            dedup_window_ms: if v == 1 {
                                raftmq_storage::DEFAULT_DEDUP_WINDOW_MS
                            } else {
                                le64(14)
                            },
                        };
                        (Some(spec), if v == 1 { 15 } else { 23 })
                    }
                    _ => return Err(CodecError::new("produce command", "bad header")),
                };
                Ok(Command::Produce {
                    create_topic,
                    batch: buf.slice(skip..),
                })
            }
            TAG_PUT_TOPIC => {
                let b: PutTopicBodyV1<'_> = postcard::from_bytes(rest).map_err(de("put-topic"))?;
                Ok(Command::PutTopic {
                    name: b.name.to_owned(),
                    spec: b.spec.into(),
                })
            }
            TAG_PUT_TOPIC_V2 => {
                let b: PutTopicBody<'_> = postcard::from_bytes(rest).map_err(de("put-topic"))?;
                Ok(Command::PutTopic {
                    name: b.name.to_owned(),
                    spec: b.spec,
                })
            }
            TAG_DELETE_TOPIC => {
                let name: &str = postcard::from_bytes(rest).map_err(de("delete-topic"))?;
                Ok(Command::DeleteTopic {
                    name: name.to_owned(),
                })
            }
            TAG_LEASE => Ok(Command::Lease(
                postcard::from_bytes(rest).map_err(de("lease"))?,
            )),
            TAG_ACK => Ok(Command::Ack(postcard::from_bytes(rest).map_err(de("ack"))?)),
            TAG_HEARTBEAT => Ok(Command::Heartbeat(
                postcard::from_bytes(rest).map_err(de("heartbeat"))?,
            )),
            TAG_RESET => Ok(Command::ResetOffsets(
                postcard::from_bytes(rest).map_err(de("reset"))?,
            )),
            TAG_PUT_GROUP => Ok(Command::PutGroup(
                postcard::from_bytes(rest).map_err(de("put-group"))?,
            )),
            TAG_PUT_USER => Ok(Command::PutUser(
                postcard::from_bytes(rest).map_err(de("put-user"))?,
            )),
            TAG_DELETE_USER => {
                let name: &str = postcard::from_bytes(rest).map_err(de("delete-user"))?;
                Ok(Command::DeleteUser {
                    name: name.to_owned(),
                })
            }
            TAG_RETAIN => Ok(Command::Retain {
                now_ms: postcard::from_bytes(rest).map_err(de("retain"))?,
            }),
            TAG_COMMIT_OFFSETS => {
                let b: OffsetsBody<'_> =
                    postcard::from_bytes(rest).map_err(de("commit-offsets"))?;
                Ok(Command::CommitOffsets {
                    group: b.group.to_owned(),
                    topic: b.topic.to_owned(),
                    offsets: b.offsets,
                })
            }
            other => Err(CodecError::new("command", format!("unknown tag {other}"))),
        }
    }
}

// openraft (with its `serde` feature) wants application data to be serde types; the
// serde form is the binary encoding above, as one byte string.
impl Serialize for Command {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        Command::decode(&Bytes::from(bytes.into_vec())).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Produce { batch, .. } => write!(f, "produce({} bytes)", batch.len()),
            Command::PutTopic { name, .. } => write!(f, "put-topic({name})"),
            Command::DeleteTopic { name } => write!(f, "delete-topic({name})"),
            Command::PutGroup(c) => write!(f, "put-group({})", c.group),
            Command::Retain { now_ms } => write!(f, "retain({now_ms})"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_settings_in_old_entries_decode_with_the_default_dedup_window() {
        let old = TopicSpecV1 {
            queues: 8,
            fifo: true,
            retention_ms: 1000,
        };
        let want = TopicSpec {
            queues: 8,
            fifo: true,
            retention_ms: 1000,
            dedup_window_ms: raftmq_storage::DEFAULT_DEDUP_WINDOW_MS,
        };
        let mut put = BytesMut::new();
        postcard_into(
            &mut put,
            TAG_PUT_TOPIC,
            &PutTopicBodyV1 {
                name: "t",
                spec: old,
            },
        );
        assert_eq!(
            Command::decode(&put.freeze()).unwrap(),
            Command::PutTopic {
                name: "t".into(),
                spec: want
            }
        );
        let mut produce = vec![TAG_PRODUCE, 1];
        produce.extend_from_slice(&8u32.to_le_bytes());
        produce.push(1);
        produce.extend_from_slice(&1000u64.to_le_bytes());
        produce.extend_from_slice(b"batch");
        assert_eq!(
            Command::decode(&Bytes::from(produce)).unwrap(),
            Command::Produce {
                create_topic: Some(want),
                batch: Bytes::from_static(b"batch")
            }
        );
    }

    #[test]
    fn every_command_round_trips() {
        let spec = TopicSpec {
            queues: 8,
            fifo: true,
            retention_ms: 1000,
            dedup_window_ms: 5000,
        };
        for cmd in [
            Command::Produce {
                create_topic: Some(spec),
                batch: Bytes::from_static(b"batch-bytes"),
            },
            Command::Produce {
                create_topic: None,
                batch: Bytes::new(),
            },
            Command::PutTopic {
                name: "t".into(),
                spec,
            },
            Command::DeleteTopic { name: "t".into() },
            Command::Retain { now_ms: 17 },
            Command::CommitOffsets {
                group: "g".into(),
                topic: "t".into(),
                offsets: vec![(0, 1), (3, 99)],
            },
            Command::PutGroup(GroupSettingsCmd {
                group: "g".into(),
                max_attempts: Some(3),
                retry_backoff_ms: Some(vec![100, 2000]),
            }),
            Command::PutGroup(GroupSettingsCmd {
                group: "g".into(),
                max_attempts: None,
                retry_backoff_ms: None,
            }),
        ] {
            let enc = cmd.encode();
            assert_eq!(Command::decode(&enc).unwrap(), cmd);
            let via_serde: Command =
                postcard::from_bytes(&postcard::to_allocvec(&cmd).unwrap()).unwrap();
            assert_eq!(via_serde, cmd);
        }
        assert!(Command::decode(&Bytes::from_static(&[9])).is_err());
        assert!(Command::decode(&Bytes::from_static(&[1, 1, 0])).is_err());
    }
}
