//! The leader's side of consumer groups: choosing what to lease on a receive (then proposing
//! it, so apply decides), acks and nacks, heartbeats, offset resets, and group views.
//!
//! Must never: hand a message to a consumer without a committed lease: the leader's scan is
//! only a proposal; what apply granted is what gets delivered.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftmq_storage::IndexStore;

use super::{
    ConsumerRec, DEFAULT_MAX_ATTEMPTS, GroupMeta, GroupMode, MsgState, dec, dlq_topic, gkey, keys,
};
use crate::apply::{Applied, RejectCode};
use crate::broker::{Broker, ProposeError, now_ms};
use crate::command::{AckCmd, Command, HeartbeatCmd, LeaseCmd, ResetCmd};
use crate::error::ReadError;
use crate::read::{StoredMessage, TagFilter, batch_of, message_at};

/// A receive request.
#[derive(Clone, Debug)]
pub struct ReceiveRequest {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Consumer.
    pub consumer: String,
    /// Most messages.
    pub max: usize,
    /// Long-poll time.
    pub wait_ms: u64,
    /// Lease length.
    pub invisible_ms: u64,
    /// Tag filter.
    pub tag: Option<TagFilter>,
    /// Mode (checked against the group's).
    pub mode: GroupMode,
}

/// A received message.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The message.
    pub message: StoredMessage,
    /// Delivery number.
    pub attempt: u32,
    /// Receipt to ack it with.
    pub receipt: String,
}

/// Why a group operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// Refused by apply or by the leader's checks.
    #[error("{message}")]
    Rejected {
        /// Code.
        code: RejectCode,
        /// Reason.
        message: String,
    },
    /// Proposal failed.
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// Local storage failed.
    #[error("storage: {0}")]
    Storage(String),
}

fn storage(e: impl std::fmt::Display) -> GroupError {
    GroupError::Storage(e.to_string())
}

fn rejected(code: RejectCode, message: impl Into<String>) -> GroupError {
    GroupError::Rejected {
        code,
        message: message.into(),
    }
}

/// Where to reset a group's offsets to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetTo {
    /// The oldest retained message.
    Earliest,
    /// After the newest message.
    Latest,
    /// The first message stored at or after this time.
    Timestamp(u64),
}

/// A group as shown by `GET /v1/groups/{group}`.
#[derive(Clone, Debug)]
pub struct GroupInfo {
    /// Name.
    pub name: String,
    /// Mode.
    pub mode: GroupMode,
    /// Deliveries before dead-lettering.
    pub max_attempts: u32,
    /// `(name, last heartbeat ms, session ms, topics)`.
    pub consumers: Vec<(String, u64, u64, Vec<String>)>,
    /// Per topic and queue progress.
    pub queues: Vec<QueueProgress>,
    /// Messages in the group's dead-letter topic.
    pub dlq_depth: u64,
}

/// One queue's progress for a group (per consumer in broadcast mode).
#[derive(Clone, Debug)]
pub struct QueueProgress {
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue: u32,
    /// Consumer (broadcast mode only).
    pub consumer: Option<String>,
    /// Committed offset (the floor).
    pub committed: u64,
    /// One past the last message.
    pub max_offset: u64,
    /// Messages in flight now.
    pub in_flight: u64,
}

struct Plan {
    items: Vec<(u32, u64)>,
    skip: Vec<(u32, u64)>,
    dead: Vec<(u32, u64)>,
}

fn group_meta(store: &IndexStore, group: &str) -> raftmq_storage::Result<Option<GroupMeta>> {
    Ok(store.group_get(&keys::meta(group))?.and_then(|b| dec(&b)))
}

fn floor(store: &IndexStore, gk: &str, topic: &str, queue: u32) -> raftmq_storage::Result<u64> {
    match store.offset_get(gk, topic, queue)? {
        Some(f) => Ok(f),
        None => Ok(store.cq_bounds(topic, queue)?.map_or(0, |(min, _)| min)),
    }
}

/// Chooses what to lease (and to skip or dead-letter) from the applied state.
fn plan(store: &IndexStore, req: &ReceiveRequest, start_queue: u32) -> Result<Plan, GroupError> {
    let meta = group_meta(store, &req.group).map_err(storage)?;
    if let Some(m) = meta
        && m.mode != req.mode
    {
        return Err(rejected(
            RejectCode::Conflict,
            format!("group {} consumes in {} mode", req.group, m.mode.as_str()),
        ));
    }
    let max_attempts = meta.map_or(DEFAULT_MAX_ATTEMPTS, |m| m.max_attempts);
    let topic = store
        .topic_get(&req.topic)
        .map_err(storage)?
        .ok_or_else(|| {
            rejected(
                RejectCode::TopicNotFound,
                format!("topic {} does not exist", req.topic),
            )
        })?;
    let gk = gkey(&req.group, req.mode, &req.consumer);
    let now = now_ms();
    let scan = (req.max * 4).clamp(64, 2048);
    let mut plan = Plan {
        items: Vec::new(),
        skip: Vec::new(),
        dead: Vec::new(),
    };
    for i in 0..topic.queues {
        let q = (start_queue + i) % topic.queues;
        let f = floor(store, &gk, &req.topic, q).map_err(storage)?;
        let entries = store.cq_range(&req.topic, q, f, scan).map_err(storage)?;
        if entries.is_empty() {
            continue;
        }
        let prefix = keys::queue_states(&gk, &req.topic, q);
        let from = keys::state(&gk, &req.topic, q, f);
        let states: HashMap<u64, MsgState> = store
            .group_scan(&prefix, Some(&from), usize::MAX)
            .map_err(storage)?
            .into_iter()
            .filter_map(|(k, v)| Some((keys::state_offset(&k)?, dec(&v)?)))
            .collect();
        for (off, e) in entries {
            let st = states.get(&off);
            if st.is_some_and(MsgState::done) {
                continue;
            }
            let deliverable = st.is_none_or(|s| s.deliverable(now));
            if !deliverable {
                if topic.fifo {
                    break;
                }
                continue;
            }
            if st.is_some_and(|s| s.attempt >= max_attempts) {
                plan.dead.push((q, off));
                continue;
            }
            if let Some(tag) = &req.tag
                && !tag.may_match(e.tag_hash)
            {
                plan.skip.push((q, off));
                continue;
            }
            plan.items.push((q, off));
            if topic.fifo || plan.items.len() >= req.max {
                break;
            }
        }
        if plan.items.len() >= req.max {
            break;
        }
    }
    Ok(plan)
}

fn read_delivered(
    store: &IndexStore,
    log: &raftmq_storage::CommitLog,
    topic: &str,
    granted: &[super::apply::Granted],
) -> Result<Vec<Delivery>, ReadError> {
    let mut cache: Option<(u64, Bytes)> = None;
    let mut out = Vec::with_capacity(granted.len());
    for g in granted {
        let Some(e) = store.cq_get(topic, g.queue, g.offset)? else {
            continue;
        };
        let batch = match &cache {
            Some((i, b)) if *i == e.log_index => b.clone(),
            _ => {
                let (_, b) = batch_of(log, e.log_index)?;
                cache = Some((e.log_index, b.clone()));
                b
            }
        };
        let mut m = message_at(&batch, e.log_index, e.slot, g.offset)?;
        if m.topic != topic {
            crate::read::mark_dead_letter(store, &mut m, topic, g.queue)?;
        }
        out.push(Delivery {
            message: m,
            attempt: g.attempt,
            receipt: g.receipt.clone(),
        });
    }
    Ok(out)
}

impl Broker {
    fn check_applied(applied: Applied) -> Result<Applied, GroupError> {
        match applied {
            Applied::Rejected { code, message } => Err(GroupError::Rejected { code, message }),
            other => Ok(other),
        }
    }

    /// Receives up to `req.max` messages (on the leader): leases them through Raft, then
    /// reads them. Waits up to `req.wait_ms` for something to deliver.
    pub async fn receive(&self, req: ReceiveRequest) -> Result<Vec<Delivery>, GroupError> {
        let deadline = Instant::now() + Duration::from_millis(req.wait_ms);
        let mut applied = self.applied();
        let start_queue =
            (raftmq_storage::message::tag_hash(Some(&req.consumer)) ^ (now_ms() as u32)) % 1024;
        loop {
            applied.borrow_and_update();
            let r = req.clone();
            let plan = self.blocking(move |s, _| plan(s, &r, start_queue)).await?;
            if !(plan.items.is_empty() && plan.skip.is_empty() && plan.dead.is_empty()) {
                let cmd = Command::Lease(LeaseCmd {
                    group: req.group.clone(),
                    topic: req.topic.clone(),
                    consumer: req.consumer.clone(),
                    mode: req.mode,
                    now_ms: now_ms(),
                    invisible_ms: req.invisible_ms,
                    items: plan.items,
                    skip: plan.skip,
                    dead: plan.dead,
                });
                if let Applied::Leased { granted } = Self::check_applied(self.propose(cmd).await?)?
                    && !granted.is_empty()
                {
                    let topic = req.topic.clone();
                    return self
                        .blocking(move |s, log| {
                            read_delivered(s, &log.read_log(), &topic, &granted)
                        })
                        .await
                        .map_err(storage);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            // New messages wake us; expiring leases are found by looking again shortly.
            let nap = (deadline - now).min(Duration::from_millis(200));
            let _ = tokio::time::timeout(nap, applied.changed()).await;
        }
    }

    /// Acks (or, with a delay, nacks) receipts; per receipt `None` or an error code.
    pub async fn ack(
        &self,
        group: &str,
        topic: &str,
        receipts: Vec<String>,
        nack_delay_ms: Option<u64>,
    ) -> Result<Vec<Option<String>>, GroupError> {
        let cmd = Command::Ack(AckCmd {
            group: group.to_owned(),
            topic: topic.to_owned(),
            receipts,
            now_ms: now_ms(),
            nack_delay_ms,
        });
        match Self::check_applied(self.propose(cmd).await?)? {
            Applied::Acked { results } => Ok(results),
            _ => Err(storage("ack applied without results")),
        }
    }

    /// Records a heartbeat; returns the consumer's queues per topic.
    pub async fn heartbeat(
        &self,
        group: &str,
        consumer: &str,
        topics: Vec<String>,
        session_ms: u64,
    ) -> Result<Vec<(String, Vec<u32>)>, GroupError> {
        let cmd = Command::Heartbeat(HeartbeatCmd {
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            topics,
            session_ms,
            now_ms: now_ms(),
        });
        match Self::check_applied(self.propose(cmd).await?)? {
            Applied::Assigned { assignments } => Ok(assignments),
            _ => Err(storage("heartbeat applied without assignments")),
        }
    }

    /// Resets a group's offsets in every queue of a topic.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<Vec<(u32, u64)>, GroupError> {
        let t = topic.to_owned();
        let offsets = self
            .blocking(move |s, _| -> Result<Vec<(u32, u64)>, GroupError> {
                let meta = s.topic_get(&t).map_err(storage)?.ok_or_else(|| {
                    rejected(
                        RejectCode::TopicNotFound,
                        format!("topic {t} does not exist"),
                    )
                })?;
                (0..meta.queues)
                    .map(|q| {
                        let (min, max) = s.cq_bounds(&t, q).map_err(storage)?.unwrap_or((0, 0));
                        let at = match to {
                            ResetTo::Earliest => min,
                            ResetTo::Latest => max,
                            ResetTo::Timestamp(ts) => {
                                first_at_or_after(s, &t, q, min, max, ts).map_err(storage)?
                            }
                        };
                        Ok((q, at))
                    })
                    .collect()
            })
            .await?;
        let cmd = Command::ResetOffsets(ResetCmd {
            group: group.to_owned(),
            topic: topic.to_owned(),
            offsets: offsets.clone(),
        });
        Self::check_applied(self.propose(cmd).await?)?;
        Ok(offsets)
    }

    /// Every group's name and mode.
    pub async fn groups(&self) -> raftmq_storage::Result<Vec<(String, GroupMode)>> {
        self.blocking(|s, _| {
            Ok(s.group_scan(&keys::meta_all(), None, usize::MAX)?
                .into_iter()
                .filter_map(|(k, v)| {
                    let name = String::from_utf8(k.get(2..)?.to_vec()).ok()?;
                    Some((name, dec::<GroupMeta>(&v)?.mode))
                })
                .collect())
        })
        .await
    }

    /// One group's state, or `None` if it was never used.
    pub async fn group_info(&self, group: &str) -> raftmq_storage::Result<Option<GroupInfo>> {
        let group = group.to_owned();
        self.blocking(move |s, _| group_info(s, &group)).await
    }
}

fn group_info(s: &IndexStore, group: &str) -> raftmq_storage::Result<Option<GroupInfo>> {
    let Some(meta) = group_meta(s, group)? else {
        return Ok(None);
    };
    let now = now_ms();
    let consumers: Vec<(String, u64, u64, Vec<String>)> = s
        .group_scan(&keys::consumers(group), None, usize::MAX)?
        .into_iter()
        .filter_map(|(k, v)| {
            let rec: ConsumerRec = dec(&v)?;
            Some((
                keys::consumer_name(&k)?,
                rec.last_ms,
                rec.session_ms,
                rec.topics,
            ))
        })
        .collect();
    let topics: Vec<String> = s
        .group_scan(&keys::topics(group), None, usize::MAX)?
        .into_iter()
        .filter_map(|(k, _)| keys::topic_record(&k).map(|(_, t)| t))
        .collect();
    let progress_keys: Vec<(String, Option<String>)> = match meta.mode {
        GroupMode::Clustering => vec![(group.to_owned(), None)],
        GroupMode::Broadcast => consumers
            .iter()
            .map(|(c, ..)| (gkey(group, meta.mode, c), Some(c.clone())))
            .collect(),
    };
    let mut queues = Vec::new();
    for topic in &topics {
        let Some(t) = s.topic_get(topic)? else {
            continue;
        };
        for q in 0..t.queues {
            let max = s.cq_bounds(topic, q)?.map_or(0, |(_, max)| max);
            for (gk, consumer) in &progress_keys {
                let committed = floor(s, gk, topic, q)?;
                let in_flight = s
                    .group_scan(&keys::queue_states(gk, topic, q), None, usize::MAX)?
                    .iter()
                    .filter(|(_, v)| dec::<MsgState>(v).is_some_and(|st| st.in_flight(now)))
                    .count() as u64;
                queues.push(QueueProgress {
                    topic: topic.clone(),
                    queue: q,
                    consumer: consumer.clone(),
                    committed,
                    max_offset: max,
                    in_flight,
                });
            }
        }
    }
    let dlq_depth = s
        .cq_bounds(&dlq_topic(group), 0)?
        .map_or(0, |(min, max)| max - min);
    Ok(Some(GroupInfo {
        name: group.to_owned(),
        mode: meta.mode,
        max_attempts: meta.max_attempts,
        consumers,
        queues,
        dlq_depth,
    }))
}

/// The first offset in `[min, max)` stored at or after `ts` (`max` if none): a binary search
/// on store times, which grow along a queue.
fn first_at_or_after(
    s: &IndexStore,
    topic: &str,
    queue: u32,
    min: u64,
    max: u64,
    ts: u64,
) -> raftmq_storage::Result<u64> {
    let (mut lo, mut hi) = (min, max);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match s.cq_get(topic, queue, mid)? {
            Some(e) if e.store_ms >= ts => hi = mid,
            _ => lo = mid + 1,
        }
    }
    Ok(lo)
}
