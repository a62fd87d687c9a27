//! Applying committed commands to the IndexStore: the deterministic heart of the state
//! machine.
//!
//! Every replica applies the same entries in the same order and so assigns the same queue
//! offsets: a message's offset is the queue's next offset at apply time. All writes of one
//! apply call go into one `IndexBatch`, committed by the caller together with
//! `last_applied`.
//!
//! Must never: read a clock, a random source or anything local to the replica (apply must
//! give identical results everywhere), or write a message body to RocksDB.

use std::collections::HashMap;
use std::sync::Arc;

use raftmq_storage::message::{BatchView, tag_hash};
use raftmq_storage::{CqEntry, IndexBatch, IndexHit, IndexStore, TopicMeta};
use serde::{Deserialize, Serialize};

use crate::command::{Command, TopicSpec};

/// Why a command was refused at apply time (deterministically, on every replica).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectCode {
    /// The topic does not exist.
    TopicNotFound,
    /// The consumer group does not exist.
    GroupNotFound,
    /// The command is malformed or out of range.
    InvalidArgument,
    /// The command conflicts with the current state.
    Conflict,
}

/// The state machine's answer to one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// A batch was stored: `(queue, offset)` of each message in batch order.
    Produced {
        /// The log index of the batch (message ids are derived from it).
        log_index: u64,
        /// Queue and offset per message.
        placed: Vec<(u32, u64)>,
    },
    /// The command took effect.
    Done,
    /// Messages leased to a consumer.
    Leased {
        /// What was granted.
        granted: Vec<crate::groups::apply::Granted>,
    },
    /// Per receipt: `None` ok, else the error code.
    Acked {
        /// One per receipt, in order.
        results: Vec<Option<String>>,
    },
    /// A consumer's queue assignment after a heartbeat.
    Assigned {
        /// `(topic, queues)`.
        assignments: Vec<(String, Vec<u32>)>,
    },
    /// The command was refused and changed nothing.
    Rejected {
        /// Machine-readable reason.
        code: RejectCode,
        /// Human-readable reason.
        message: String,
    },
}

pub(crate) fn reject(code: RejectCode, message: impl Into<String>) -> Applied {
    Applied::Rejected {
        code,
        message: message.into(),
    }
}

/// Applies commands; caches topic settings and each queue's next offset.
#[derive(Debug)]
pub struct Applier {
    pub(crate) store: Arc<IndexStore>,
    topics: HashMap<String, Option<TopicMeta>>,
    next_offsets: HashMap<(String, u32), u64>,
    retention_point: Option<u64>,
    /// Consumer-group records written through this applier (`None`: deleted): entries of
    /// the batch being built see them, and once the batch is written they stay as a
    /// write-through cache, so hot leases and acks rarely reach RocksDB.
    pub(crate) group_overlay: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Floors (committed offsets) written through this applier, likewise.
    pub(crate) floor_overlay: HashMap<(String, String, u32), u64>,
    /// Floors moved by the command being applied, written once when it ends.
    pub(crate) dirty_floors: Vec<(String, String, u32)>,
}

/// `sm_meta` key of the retention point (u64 LE): the log may be purged up to it.
pub const META_RETENTION_POINT: &str = "retention_point";

/// Most expired entries one `Retain` deletes per queue, so one apply stays bounded; the
/// rest goes at the next `Retain`.
const RETAIN_BATCH: usize = 100_000;

impl Applier {
    /// An applier over `store`.
    pub fn new(store: Arc<IndexStore>) -> Self {
        let retention_point = store
            .meta_get(META_RETENTION_POINT)
            .ok()
            .flatten()
            .and_then(|b| Some(u64::from_le_bytes(b.as_slice().try_into().ok()?)));
        Applier {
            store,
            topics: HashMap::new(),
            next_offsets: HashMap::new(),
            retention_point,
            group_overlay: HashMap::new(),
            floor_overlay: HashMap::new(),
            dirty_floors: Vec::new(),
        }
    }

    /// Call after writing a batch. What it wrote is in RocksDB now, so the overlay stays as
    /// a cache of it, dropped only when it grows large.
    pub fn finish_batch(&mut self) {
        const MAX_CACHED: usize = 200_000;
        if self.group_overlay.len() > MAX_CACHED {
            self.group_overlay.clear();
        }
        if self.floor_overlay.len() > MAX_CACHED {
            self.floor_overlay.clear();
        }
    }

    /// The highest log index retention allows to purge, if any.
    pub fn retention_point(&self) -> Option<u64> {
        self.retention_point
    }

    /// Drops the ConsumeQueue and time-index entries of messages older than their topic's
    /// retention, and advances the retention point to just below the oldest log entry that
    /// still holds a retained message (or below this entry when none is retained).
    fn retain(
        &mut self,
        batch: &mut IndexBatch<'_>,
        log_index: u64,
        now_ms: u64,
    ) -> raftmq_storage::Result<Applied> {
        let mut oldest_needed = log_index;
        for (topic, meta) in self.store.topics()? {
            let cutoff = now_ms.saturating_sub(meta.retention_ms);
            batch.delete_time_before(&topic, cutoff)?;
            for queue in 0..meta.queues {
                let Some((first, _)) = self.store.cq_first(&topic, queue)? else {
                    continue;
                };
                let mut keep_from = first;
                let mut keep_entry = None;
                'scan: loop {
                    let entries = self.store.cq_range(&topic, queue, keep_from, 1024)?;
                    if entries.is_empty() {
                        break;
                    }
                    for (offset, e) in entries {
                        if e.store_ms >= cutoff || offset - first >= RETAIN_BATCH as u64 {
                            keep_entry = Some(e);
                            keep_from = offset;
                            break 'scan;
                        }
                        keep_from = offset + 1;
                    }
                }
                if keep_from > first {
                    batch.delete_cq_before(&topic, queue, keep_from)?;
                }
                if let Some(e) = keep_entry {
                    oldest_needed = oldest_needed.min(e.log_index);
                }
            }
        }
        let point = oldest_needed.saturating_sub(1);
        if self.retention_point.is_none_or(|p| point > p) {
            self.retention_point = Some(point);
            batch.put_meta(META_RETENTION_POINT, &point.to_le_bytes());
        }
        Ok(Applied::Done)
    }

    /// Forgets cached state (after the store was replaced by a snapshot).
    pub fn reset(&mut self, store: Arc<IndexStore>) {
        *self = Applier::new(store);
    }

    /// The store this applier writes to.
    pub fn store(&self) -> &Arc<IndexStore> {
        &self.store
    }

    pub(crate) fn topic(&mut self, name: &str) -> raftmq_storage::Result<Option<TopicMeta>> {
        if let Some(t) = self.topics.get(name) {
            return Ok(*t);
        }
        let t = self.store.topic_get(name)?;
        self.topics.insert(name.to_owned(), t);
        Ok(t)
    }

    pub(crate) fn next_offset(
        &mut self,
        topic: &str,
        queue: u32,
    ) -> raftmq_storage::Result<&mut u64> {
        let key = (topic.to_owned(), queue);
        if !self.next_offsets.contains_key(&key) {
            let next = self
                .store
                .cq_bounds(topic, queue)?
                .map_or(0, |(_, max)| max);
            self.next_offsets.insert(key.clone(), next);
        }
        Ok(self.next_offsets.get_mut(&key).expect("inserted above"))
    }

    /// Applies one command at `log_index`, adding its writes to `batch`. Errors are storage
    /// failures (fatal to the node); refusals are `Applied::Rejected`.
    pub fn apply(
        &mut self,
        batch: &mut IndexBatch<'_>,
        log_index: u64,
        cmd: &Command,
    ) -> raftmq_storage::Result<Applied> {
        match cmd {
            Command::Produce {
                create_topic,
                batch: bytes,
            } => self.produce(batch, log_index, *create_topic, bytes),
            Command::PutTopic { name, spec } => self.put_topic(batch, name, *spec),
            Command::Retain { now_ms } => self.retain(batch, log_index, *now_ms),
            Command::DeleteTopic { name } => {
                let Some(meta) = self.topic(name)? else {
                    return Ok(reject(
                        RejectCode::TopicNotFound,
                        format!("topic {name} does not exist"),
                    ));
                };
                batch.delete_topic(name)?;
                self.forget_topic_in_groups(batch, name, meta.queues)?;
                self.topics.insert(name.clone(), None);
                self.next_offsets.retain(|(t, _), _| t != name);
                Ok(Applied::Done)
            }
            Command::Lease(c) => self.lease(batch, log_index, c),
            Command::Ack(c) => self.ack(batch, c),
            Command::Heartbeat(c) => self.heartbeat(batch, c),
            Command::ResetOffsets(c) => self.reset_offsets(batch, c),
            Command::CommitOffsets {
                group,
                topic,
                offsets,
            } => {
                let Some(meta) = self.topic(topic)? else {
                    return Ok(reject(
                        RejectCode::TopicNotFound,
                        format!("topic {topic} does not exist"),
                    ));
                };
                if let Some((q, _)) = offsets.iter().find(|(q, _)| *q >= meta.queues) {
                    return Ok(reject(
                        RejectCode::InvalidArgument,
                        format!(
                            "queue {q} is out of range (topic {topic} has {} queues)",
                            meta.queues
                        ),
                    ));
                }
                // Remembered so deleting the topic forgets these offsets too.
                let record = crate::groups::keys::topic(group, topic);
                batch.put_group(&record, &[]);
                self.group_overlay.insert(record, Some(Vec::new()));
                for &(queue, offset) in offsets {
                    batch.put_offset(group, topic, queue, offset)?;
                    // Later entries of the batch (an ack of this group) must see it.
                    self.floor_overlay
                        .insert((group.clone(), topic.clone(), queue), offset);
                }
                Ok(Applied::Done)
            }
        }
    }

    pub(crate) fn put_topic(
        &mut self,
        batch: &mut IndexBatch<'_>,
        name: &str,
        spec: TopicSpec,
    ) -> raftmq_storage::Result<Applied> {
        if spec.queues == 0 {
            return Ok(reject(
                RejectCode::InvalidArgument,
                "queues must be at least 1",
            ));
        }
        if let Some(old) = self.topic(name)?
            && spec.queues < old.queues
        {
            return Ok(reject(
                RejectCode::Conflict,
                format!(
                    "queues may only grow: topic {name} has {} queues, asked for {}",
                    old.queues, spec.queues
                ),
            ));
        }
        let meta = TopicMeta::from(spec);
        batch.put_topic(name, &meta)?;
        self.topics.insert(name.to_owned(), Some(meta));
        Ok(Applied::Done)
    }

    fn produce(
        &mut self,
        batch: &mut IndexBatch<'_>,
        log_index: u64,
        create_topic: Option<TopicSpec>,
        bytes: &[u8],
    ) -> raftmq_storage::Result<Applied> {
        let view = match BatchView::parse(bytes) {
            Ok(v) => v,
            Err(e) => return Ok(reject(RejectCode::InvalidArgument, e.to_string())),
        };
        let topic = view.topic;
        let meta = match (self.topic(topic)?, create_topic) {
            (Some(m), _) => m,
            (None, Some(spec)) => {
                if let Applied::Rejected { code, message } = self.put_topic(batch, topic, spec)? {
                    return Ok(Applied::Rejected { code, message });
                }
                spec.into()
            }
            (None, None) => {
                return Ok(reject(
                    RejectCode::TopicNotFound,
                    format!("topic {topic} does not exist"),
                ));
            }
        };
        // Check everything first: a batch is stored whole or not at all.
        for m in view.iter() {
            let m = match m {
                Ok(m) => m,
                Err(e) => return Ok(reject(RejectCode::InvalidArgument, e.to_string())),
            };
            if m.queue >= meta.queues {
                return Ok(reject(
                    RejectCode::InvalidArgument,
                    format!(
                        "messages[{}].queue: {} is out of range (topic {topic} has {} queues)",
                        m.slot, m.queue, meta.queues
                    ),
                ));
            }
        }
        let mut placed = Vec::with_capacity(view.count as usize);
        // Per queue: (first offset, next offset) of this batch's run.
        let mut touched: Vec<(u32, u64, u64)> = Vec::new();
        for m in view.iter() {
            let m = m.expect("validated above");
            let next = self.next_offset(topic, m.queue)?;
            let offset = *next;
            *next += 1;
            let entry = CqEntry {
                log_index,
                slot: m.slot,
                size: m.encoded_len,
                tag_hash: tag_hash(m.tag),
                store_ms: view.store_ms,
            };
            batch.put_cq(topic, m.queue, offset, &entry)?;
            let hit = IndexHit {
                log_index,
                slot: m.slot,
                queue: m.queue,
                offset,
                store_ms: view.store_ms,
            };
            if let Some(key) = m.key {
                batch.put_key(topic, key, &hit)?;
            }
            placed.push((m.queue, offset));
            match touched.iter_mut().find(|(q, ..)| *q == m.queue) {
                Some(t) => t.2 = offset + 1,
                None => touched.push((m.queue, offset, offset + 1)),
            }
        }
        for (queue, first, next) in touched {
            batch.put_queue_next(topic, queue, next)?;
            batch.put_time_run(
                topic,
                view.store_ms,
                log_index,
                queue,
                first,
                (next - first) as u32,
            )?;
        }
        Ok(Applied::Produced { log_index, placed })
    }
}
