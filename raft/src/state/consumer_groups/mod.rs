//! Consumer groups: their replicated state, its encoding in the `group_state` column
//! family, and the operations on it.
//!
//! - [`ConsumerGroups`] ([`state`]): the applier's part for consumer groups: its overlay of
//!   the batch's writes, floors, and the operations lease ([`lease`]), ack and nack
//!   ([`ack`]), heartbeat, offset reset and commit, forgetting a deleted topic ([`admin`]).
//! - [`GroupView`] ([`view`]): the one read interface over RocksDB plus an overlay, used by
//!   apply (with the overlay) and by the leader and group views (without).
//! - [`plan`]: the leader's side of a receive (what to propose) and of a reset;
//!   [`info`]: what `GET /v1/groups/{group}` shows.
//!
//! Records (keys start with a kind byte; names are length-prefixed, numbers big-endian):
//! - `M group` → [`GroupMeta`]: mode and `max_attempts`, set on first use;
//! - `R group` → [`RetrySettings`]: what `PUT /v1/groups/{group}` set (`max_attempts` over
//!   the `M` record's, the retry backoff over [`DEFAULT_RETRY_BACKOFF_MS`]); it does not
//!   create the group or fix its mode;
//! - `T group topic` → (empty): the topics a group has touched;
//! - `Q gkey topic queue chunk` → `Vec<(offset, MsgState)>`: a checkpoint of the states
//!   of up to [`progress::CHUNK`] consecutive offsets (lease, attempts, ack), the persisted
//!   form of [`progress::Progress`], which apply works on in memory;
//! - `C group consumer` → [`ConsumerRec`]: last heartbeat, session, topics;
//! - `P group topic consumer` → (empty): a broadcast consumer has progress in the topic
//!   (so resets, retention and topic deletion find it even if it never sent a heartbeat);
//! - `D dlq-topic offset` → [`DlqOrigin`]: where a dead letter came from.
//!
//! `gkey` is the group for clustering mode and `group/consumer` in broadcast mode (each
//! consumer has its own progress). A queue's *floor* (every offset below it acked or dead)
//! is the group's committed offset in the `consumer_offsets` column family; message states
//! exist only at or above it.
//!
//! Must never: hold a deadline from a replica's clock (deadlines come from `now_ms` in the
//! entry), or keep message states below the floor.

pub mod ack;
pub mod admin;
pub mod info;
pub mod lease;
pub mod plan;
pub mod progress;
pub mod state;
pub mod view;

use serde::{Deserialize, Serialize};

pub use info::{ConsumerGroupInfo, QueueProgress};
pub use plan::{ReceiveRequest, ResetTo};
pub use state::ConsumerGroups;
pub use view::GroupView;

pub use crate::state::command::ConsumerGroupMode;

/// Default deliveries before a message goes to the dead-letter topic.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 16;

/// Default wait before an expired or nacked (without a delay) message is visible again, by
/// attempt (RocketMQ's delay levels from 1 s to 2 h); the last value repeats.
pub const DEFAULT_RETRY_BACKOFF_MS: [u64; 18] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000,
    480_000, 540_000, 600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
];

/// A group's retry settings as set by `PUT /v1/groups/{group}` (`None`: the default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrySettings {
    /// Deliveries before dead-lettering.
    pub max_attempts: Option<u32>,
    /// Backoff by attempt.
    pub retry_backoff_ms: Option<Vec<u64>>,
}

impl RetrySettings {
    /// The backoff by attempt in effect (the default unless set).
    pub fn backoff(self) -> Vec<u64> {
        self.retry_backoff_ms
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| DEFAULT_RETRY_BACKOFF_MS.to_vec())
    }
}

/// The backoff after delivery `attempt` (1-based) of a message: `backoff[attempt - 1]`, the
/// last value once the list runs out.
pub fn backoff_after(backoff: &[u64], attempt: u32) -> u64 {
    let i = (attempt.max(1) as usize - 1).min(backoff.len().saturating_sub(1));
    backoff.get(i).copied().unwrap_or(0)
}

/// A consumer group's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMeta {
    /// Mode, fixed on first use.
    pub mode: ConsumerGroupMode,
    /// Deliveries before dead-lettering.
    pub max_attempts: u32,
}

impl GroupMeta {
    /// The settings a consumer group gets on first use.
    pub fn new(mode: ConsumerGroupMode) -> Self {
        GroupMeta {
            mode,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

/// Where a message stands for a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Handed to a consumer until `deadline_ms`.
    Leased,
    /// Nacked or expired: visible again from `deadline_ms`.
    Released,
    /// Acknowledged: never delivered again.
    Acked,
    /// Moved to the dead-letter topic.
    Dead,
}

/// One message's state for a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgState {
    /// Where it stands.
    pub status: Status,
    /// Deliveries so far.
    pub attempt: u32,
    /// Lease end (leased) or visibility time (released), leader clock.
    pub deadline_ms: u64,
    /// Log index of the entry that leased it (part of the receipt).
    pub lease_index: u64,
    /// The consumer holding it (shared by every message of one lease).
    pub consumer: std::sync::Arc<str>,
}

impl MsgState {
    /// Whether a consumer holds it at `now_ms`.
    pub fn in_flight(&self, now_ms: u64) -> bool {
        self.status == Status::Leased && self.deadline_ms > now_ms
    }

    /// Whether it may be delivered at `now_ms`: a released message from its deadline, an
    /// expired lease once the group's `backoff` for its attempt has passed too.
    pub fn deliverable(&self, now_ms: u64, backoff: &[u64]) -> bool {
        match self.status {
            Status::Released => self.deadline_ms <= now_ms,
            Status::Leased => {
                self.deadline_ms
                    .saturating_add(backoff_after(backoff, self.attempt))
                    <= now_ms
            }
            Status::Acked | Status::Dead => false,
        }
    }

    /// Whether it is done for the group.
    pub fn done(&self) -> bool {
        matches!(self.status, Status::Acked | Status::Dead)
    }
}

/// A consumer's heartbeat record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerRec {
    /// Last heartbeat, leader clock.
    pub last_ms: u64,
    /// Dropped when no heartbeat for this long.
    pub session_ms: u64,
    /// Subscribed topics.
    pub topics: Vec<String>,
}

/// Where a dead letter came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqOrigin {
    /// Original topic.
    pub topic: String,
    /// Original queue.
    pub queue: u32,
    /// Original offset.
    pub offset: u64,
    /// Deliveries it had.
    pub attempts: u32,
}

fn put_name(k: &mut Vec<u8>, name: &str) {
    k.push(name.len() as u8);
    k.extend_from_slice(name.as_bytes());
}

/// Key builders.
pub mod keys {
    use super::put_name;

    /// `M group`.
    pub fn meta(group: &str) -> Vec<u8> {
        let mut k = vec![b'M'];
        put_name(&mut k, group);
        k
    }

    /// `M` (every group).
    pub fn meta_all() -> Vec<u8> {
        vec![b'M']
    }

    /// `R group`.
    pub fn retry(group: &str) -> Vec<u8> {
        let mut k = vec![b'R'];
        put_name(&mut k, group);
        k
    }

    /// `T group topic`.
    pub fn topic(group: &str, topic: &str) -> Vec<u8> {
        let mut k = topics(group);
        put_name(&mut k, topic);
        k
    }

    /// `(group, topic)` of a `T` key.
    pub fn topic_record(key: &[u8]) -> Option<(String, String)> {
        let glen = *key.get(1)? as usize;
        let group = String::from_utf8(key.get(2..2 + glen)?.to_vec()).ok()?;
        let rest = key.get(2 + glen..)?;
        let tlen = *rest.first()? as usize;
        let topic = String::from_utf8(rest.get(1..1 + tlen)?.to_vec()).ok()?;
        Some((group, topic))
    }

    /// `T group` (prefix).
    pub fn topics(group: &str) -> Vec<u8> {
        let mut k = vec![b'T'];
        put_name(&mut k, group);
        k
    }

    /// `Q gkey topic queue` (prefix of a queue's checkpoint records).
    pub fn chunks(gkey: &str, topic: &str, queue: u32) -> Vec<u8> {
        let mut k = vec![b'Q'];
        put_name(&mut k, gkey);
        put_name(&mut k, topic);
        k.extend_from_slice(&queue.to_be_bytes());
        k
    }

    /// `Q gkey topic queue chunk`: the states of offsets `chunk * CHUNK ..`.
    pub fn chunk(gkey: &str, topic: &str, queue: u32, chunk: u64) -> Vec<u8> {
        let mut k = chunks(gkey, topic, queue);
        k.extend_from_slice(&chunk.to_be_bytes());
        k
    }

    /// `C group` (prefix).
    pub fn consumers(group: &str) -> Vec<u8> {
        let mut k = vec![b'C'];
        put_name(&mut k, group);
        k
    }

    /// `C group consumer`.
    pub fn consumer(group: &str, consumer: &str) -> Vec<u8> {
        let mut k = consumers(group);
        put_name(&mut k, consumer);
        k
    }

    /// The consumer name at the end of a `C` key.
    pub fn consumer_name(key: &[u8]) -> Option<String> {
        let glen = *key.get(1)? as usize;
        let rest = key.get(2 + glen..)?;
        let clen = *rest.first()? as usize;
        String::from_utf8(rest.get(1..1 + clen)?.to_vec()).ok()
    }

    /// `P group topic` (prefix).
    pub fn progresses(group: &str, topic: &str) -> Vec<u8> {
        let mut k = vec![b'P'];
        put_name(&mut k, group);
        put_name(&mut k, topic);
        k
    }

    /// `P group topic consumer`.
    pub fn progress(group: &str, topic: &str, consumer: &str) -> Vec<u8> {
        let mut k = progresses(group, topic);
        put_name(&mut k, consumer);
        k
    }

    /// The consumer name at the end of a `P` key.
    pub fn progress_consumer(key: &[u8]) -> Option<String> {
        let glen = *key.get(1)? as usize;
        let rest = key.get(2 + glen..)?;
        let tlen = *rest.first()? as usize;
        let rest = rest.get(1 + tlen..)?;
        let clen = *rest.first()? as usize;
        String::from_utf8(rest.get(1..1 + clen)?.to_vec()).ok()
    }

    /// `D dlq-topic offset`.
    pub fn dlq_origin(dlq_topic: &str, offset: u64) -> Vec<u8> {
        let mut k = vec![b'D'];
        put_name(&mut k, dlq_topic);
        k.extend_from_slice(&offset.to_be_bytes());
        k
    }
}

/// The progress key of a consumer in a group.
pub fn gkey(group: &str, mode: ConsumerGroupMode, consumer: &str) -> String {
    match mode {
        ConsumerGroupMode::Clustering => group.to_owned(),
        ConsumerGroupMode::Broadcast => format!("{group}/{consumer}"),
    }
}

/// The dead-letter topic of a group.
pub fn dlq_topic(group: &str) -> String {
    format!("DLQ-{group}")
}

/// Encodes a record.
pub fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("group records serialize")
}

/// Decodes a record (`None` if malformed).
pub fn dec<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Option<T> {
    postcard::from_bytes(b).ok()
}

/// A receipt: which delivery of which message, for which consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Queue.
    pub queue: u32,
    /// Offset.
    pub offset: u64,
    /// Delivery number.
    pub attempt: u32,
    /// Log index of the lease.
    pub lease_index: u64,
    /// Consumer it was handed to.
    pub consumer: String,
}

impl Receipt {
    /// `queue-offset-attempt-lease_index-consumer` (the consumer last: it may hold `-`).
    pub fn encode(&self) -> String {
        format!(
            "{}-{}-{}-{}-{}",
            self.queue, self.offset, self.attempt, self.lease_index, self.consumer
        )
    }

    /// Parses [`Receipt::encode`]'s form.
    pub fn parse(s: &str) -> Option<Receipt> {
        let mut p = s.splitn(5, '-');
        Some(Receipt {
            queue: p.next()?.parse().ok()?,
            offset: p.next()?.parse().ok()?,
            attempt: p.next()?.parse().ok()?,
            lease_index: p.next()?.parse().ok()?,
            consumer: p.next().filter(|c| !c.is_empty())?.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_and_keys_round_trip() {
        let r = Receipt {
            queue: 3,
            offset: 17,
            attempt: 2,
            lease_index: 99,
            consumer: "c-1_x".into(),
        };
        assert_eq!(Receipt::parse(&r.encode()), Some(r));
        assert_eq!(Receipt::parse("1-2-3"), None);
        assert_eq!(
            keys::consumer_name(&keys::consumer("g", "c1")).as_deref(),
            Some("c1")
        );
        assert!(keys::chunk("g", "t", 1, 1) < keys::chunk("g", "t", 1, 256));
        assert!(keys::chunk("g", "t", 1, 9).starts_with(&keys::chunks("g", "t", 1)));
        assert_eq!(
            keys::progress_consumer(&keys::progress("g", "t", "c-1")).as_deref(),
            Some("c-1")
        );
    }
}
