//! Producing on the leader: pick each message's queue, encode the batch once (the bytes that
//! will be stored and replicated), propose it as one entry (or part of one: [`super::coalesce`]),
//! and answer its placements.
//!
//! Must never: answer before the batch is committed and applied (the answer comes from
//! apply), or let a request choose a queue outside its topic.

use std::ops::Range;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use raftmq_storage::message::{BatchEncoder, MessageIn};

use super::{Broker, MessageId, Schedule};
use crate::error::BrokerError;
use crate::state::{Applied, Command, RejectCode, TopicSpec};

/// The largest encoded produce batch: one CommitLog record holds the whole entry (the batch
/// plus a few dozen bytes of entry and command headers).
pub const MAX_BATCH_BYTES: usize = raftmq_storage::MAX_PAYLOAD - 4096;

/// The largest request body a node may be configured to accept: a produce request of this
/// size always encodes to a batch below [`MAX_BATCH_BYTES`] (a message's encoding adds at
/// most a few dozen bytes to its JSON, and a request holds at most 10,000 messages).
pub const MAX_REQUEST_BYTES: usize = 48 << 20;

/// One message of a produce request, validated by the API layer.
#[derive(Clone, Debug, Default)]
pub struct ProduceMessage {
    /// Body bytes.
    pub body: Bytes,
    /// Whether the body came as base64.
    pub binary: bool,
    /// Business key.
    pub key: Option<String>,
    /// Tag.
    pub tag: Option<String>,
    /// Properties.
    pub properties: Vec<(String, String)>,
    /// Explicit queue.
    pub queue: Option<u32>,
    /// Exactly-once key (per topic, within the dedup window).
    pub idempotency_key: Option<String>,
    /// Not readable before this (a scheduled message).
    pub schedule: Option<Schedule>,
}

/// The placement of one produced message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Its id.
    pub msg_id: MessageId,
    /// Its queue.
    pub queue: u32,
    /// Its offset (`None`: scheduled, it takes one when it comes due).
    pub offset: Option<u64>,
}

/// The queue of `count` a message with `key` goes to: the same hash as the tag index,
/// stable across versions and replicas (a node routing a topic spread over broker groups
/// picks queues by it too).
pub fn queue_for_key(key: &str, count: u32) -> u32 {
    raftmq_storage::message::tag_hash(Some(key)) % count
}

impl Broker {
    /// A message's queue within `own` (this group's queues of the topic: all of them, or
    /// its part of a topic spread over broker groups).
    fn pick_queue(&self, topic: &str, own: &Range<u32>, m: &ProduceMessage) -> u32 {
        if let Some(q) = m.queue {
            return q;
        }
        let count = own.end - own.start;
        if let Some(key) = &m.key {
            return own.start + queue_for_key(key, count);
        }
        let counter = self
            .inner
            .round_robin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(topic.to_owned())
            .or_default()
            .clone();
        own.start + counter.fetch_add(1, Ordering::Relaxed) % count
    }

    /// The queues of a topic this group holds, its retention, and the settings to create
    /// it with if it does not exist and `auto_create` allows.
    pub(super) async fn produce_target(
        &self,
        topic: &str,
        auto_create: Option<TopicSpec>,
    ) -> Result<(Range<u32>, u64, Option<TopicSpec>), BrokerError> {
        self.check_disk()?;
        match (self.topic(topic).await?, auto_create) {
            (Some(t), _) => Ok((t.own_queues(), t.retention_ms, None)),
            (None, Some(spec)) => Ok((spec.own_queues(), spec.retention_ms, Some(spec))),
            (None, None) => Err(BrokerError::rejected(
                RejectCode::TopicNotFound,
                format!("topic {topic} does not exist"),
            )),
        }
    }

    /// Encodes a request's messages once, as they will be stored: picks each one's queue
    /// and due time, stamps the batch with group time.
    pub(super) async fn encode_batch(
        &self,
        topic: &str,
        messages: &[ProduceMessage],
        own: Range<u32>,
        retention_ms: u64,
    ) -> Result<Vec<u8>, BrokerError> {
        let invalid = |m: String| BrokerError::rejected(RejectCode::InvalidArgument, m);
        let mut buf = Vec::new();
        let now = self.group_time().await?;
        let mut enc =
            BatchEncoder::new(&mut buf, topic, now).map_err(|e| invalid(format!("topic: {e}")))?;
        let born = now;
        for (i, m) in messages.iter().enumerate() {
            if let Some(q) = m.queue
                && !own.contains(&q)
            {
                return Err(invalid(if q >= own.end {
                    format!(
                        "messages[{i}].queue: {q} is out of range (topic {topic} has {} queues)",
                        own.end
                    )
                } else {
                    format!(
                        "messages[{i}].queue: {q} is held by another broker group (this one holds queues {}..{} of topic {topic})",
                        own.start, own.end
                    )
                }));
            }
            let queue = self.pick_queue(topic, &own, m);
            let deliver_at_ms = match m.schedule {
                Some(s) => s.due(i, now, retention_ms)?,
                None => None,
            };
            enc.push(
                &MessageIn {
                    queue,
                    born_ms: born,
                    deliver_at_ms,
                    key: m.key.as_deref(),
                    tag: m.tag.as_deref(),
                    idempotency_key: m.idempotency_key.as_deref(),
                    binary: m.binary,
                    body: &m.body,
                },
                m.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .map_err(|e| invalid(format!("messages[{i}]: {e}")))?;
        }
        enc.finish();
        if buf.len() > MAX_BATCH_BYTES {
            return Err(BrokerError::rejected(
                RejectCode::TooLarge,
                format!(
                    "messages: the batch encodes to {} bytes, more than one entry may hold ({MAX_BATCH_BYTES})",
                    buf.len()
                ),
            ));
        }
        Ok(buf)
    }

    /// Produces a batch (on the leader): picks queues, encodes the batch once, proposes it.
    /// A missing topic is created with `auto_create` if given.
    pub async fn produce(
        &self,
        topic: &str,
        messages: &[ProduceMessage],
        auto_create: Option<TopicSpec>,
    ) -> Result<Vec<Placed>, BrokerError> {
        let (own, retention_ms, create_topic) = self.produce_target(topic, auto_create).await?;
        let buf = self
            .encode_batch(topic, messages, own, retention_ms)
            .await?;
        let (log_index, first_slot, placed, originals) = match create_topic {
            // Creating the topic is rare; the request goes alone.
            Some(spec) => match self
                .propose_checked(Command::Produce {
                    create_topic: Some(spec),
                    batch: Bytes::from(buf),
                })
                .await?
            {
                Applied::Produced {
                    log_index,
                    placed,
                    originals,
                } => (log_index, 0, placed, originals),
                other => {
                    return Err(BrokerError::Internal(format!(
                        "produce applied as {other:?}"
                    )));
                }
            },
            None => {
                let share = self.produce_coalesced(topic, buf, messages.len()).await?;
                (
                    share.log_index,
                    share.first_slot,
                    share.placed,
                    share.originals,
                )
            }
        };
        Ok(placed
            .into_iter()
            .zip(0u32..)
            .map(|((queue, offset), i)| {
                // A retried idempotency key answers with its first write's id.
                let msg_id = match originals.iter().find(|o| o.0 == i) {
                    Some(&(_, at, slot)) => self.id_of(at, slot),
                    None => self.id_of(log_index, first_slot + i),
                };
                Placed {
                    msg_id,
                    queue,
                    offset,
                }
            })
            .collect())
    }
}
