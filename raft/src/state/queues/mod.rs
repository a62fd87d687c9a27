//! Topics and their ConsumeQueues as the applier keeps them: topic settings and each queue's
//! next offset (cached), topic admin ([`topics`]), storing a produced batch's index
//! entries, scheduled messages ([`schedule`]), dead-letter entries, and retention's deletes.
//!
//! A message's offset is its queue's next offset at apply time, so every replica assigns
//! the same offsets. Everything goes into the caller's `IndexBatch`.
//!
//! Must never: write a message body to RocksDB (index entries point into the CommitLog), or
//! let an offset be used twice (each queue's next offset only grows, also across deletes by
//! retention).

mod schedule;
mod topics;
mod txn;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use raftmq_storage::message::{BatchView, tag_hash};
use raftmq_storage::{
    CqEntry, DedupHit, IndexBatch, IndexHit, IndexStore, MAX_IDEMPOTENCY_KEY_LEN, Timer, TopicMeta,
};

pub use schedule::NO_TIMER;
use schedule::Placement;
pub use txn::{TxnRecord, TxnState};

/// The offset an idempotency record names for a scheduled message: it has none until due.
const NOT_YET_PLACED: u64 = u64::MAX;

use crate::state::FastMap;
use crate::state::applied::{Applied, RejectCode, reject};
use crate::state::command::TopicSpec;

type R<T> = raftmq_storage::Result<T>;

/// Most expired entries one `Retain` deletes per queue, so one apply stays bounded; the
/// rest goes at the next `Retain`.
const RETAIN_BATCH: usize = 100_000;

/// Checks every message of a batch first, so a batch is stored whole or not at all.
fn check_batch(view: &BatchView<'_>, queues: u32) -> Option<Applied> {
    for m in view.iter() {
        let m = match m {
            Ok(m) => m,
            Err(e) => return Some(reject(RejectCode::InvalidArgument, e.to_string())),
        };
        if m.queue >= queues {
            return Some(reject(
                RejectCode::InvalidArgument,
                format!(
                    "messages[{}].queue: {} is out of range (topic {} has {} queues)",
                    m.slot, m.queue, view.topic, queues
                ),
            ));
        }
        if let Some(k) = m.idempotency_key
            && (k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY_LEN)
        {
            return Some(reject(
                RejectCode::InvalidArgument,
                format!(
                    "messages[{}].idempotency_key: must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes",
                    m.slot
                ),
            ));
        }
    }
    None
}

/// Most expired idempotency records one `Retain` drops (the rest go on the next).
const DEDUP_EXPIRE_BATCH: usize = 100_000;

/// What a `Retain` did to the ConsumeQueues.
#[derive(Debug)]
pub struct Retained {
    /// The oldest log index that still holds a retained message (the `Retain` entry's own
    /// index when none does).
    pub oldest_needed: u64,
    /// `(topic, queue, new first offset)` of every queue whose first offset moved.
    pub moved: Vec<(String, u32, u64)>,
}

/// Topic settings and next offsets, cached over the store.
#[derive(Debug)]
pub struct Queues {
    store: Arc<IndexStore>,
    topics: HashMap<String, Option<TopicMeta>>,
    /// topic → queue → next offset (nested, so a lookup by name allocates nothing).
    next_offsets: FastMap<String, FastMap<u32, u64>>,
    /// A topic was created, changed or deleted since the last batch was written.
    topics_changed: bool,
    /// Idempotency records this batch wrote (RocksDB sees them only once it is written).
    dedup_pending: HashMap<(String, String), DedupHit>,
    /// The earliest due time of a pending timer ([`NO_TIMER`]: none), for the leader's
    /// delivery loop; shared with the state machine.
    next_due: Arc<AtomicU64>,
    /// Every timer due before this time has been delivered: scans of the timers start
    /// here, past the tombstones of delivered ones.
    timer_floor: u64,
}

impl Queues {
    /// Queues over `store`, nothing cached yet; `next_due` is set from the store's timers
    /// (to 0 if they cannot be read: a `Deliver` then reads them again).
    pub fn new(store: Arc<IndexStore>, next_due: Arc<AtomicU64>) -> Self {
        let q = Queues {
            store,
            topics: HashMap::new(),
            next_offsets: FastMap::default(),
            topics_changed: false,
            dedup_pending: HashMap::new(),
            next_due,
            timer_floor: 0,
        };
        q.next_due.store(
            q.first_due().unwrap_or(0),
            std::sync::atomic::Ordering::Release,
        );
        q
    }

    /// The earliest due time of a pending timer, kept current by apply.
    pub fn next_due_handle(&self) -> Arc<AtomicU64> {
        self.next_due.clone()
    }

    /// A topic's settings (`None`: it does not exist).
    pub fn topic(&mut self, name: &str) -> R<Option<TopicMeta>> {
        if let Some(t) = self.topics.get(name) {
            return Ok(*t);
        }
        let t = self.store.topic_get(name)?;
        self.topics.insert(name.to_owned(), t);
        Ok(t)
    }

    /// Call after writing a batch; returns whether topics changed since the last call.
    pub fn finish_batch(&mut self) -> bool {
        self.dedup_pending.clear();
        std::mem::take(&mut self.topics_changed)
    }

    /// The first write of an idempotency key, this batch's included.
    fn dedup_lookup(&self, topic: &str, key: &str) -> R<Option<DedupHit>> {
        if let Some(hit) = self.dedup_pending.get(&(topic.to_owned(), key.to_owned())) {
            return Ok(Some(*hit));
        }
        self.store.dedup_get(topic, key)
    }

    /// The offset the next message of a queue gets.
    fn next_offset(&mut self, topic: &str, queue: u32) -> R<&mut u64> {
        let cached = self
            .next_offsets
            .get(topic)
            .is_some_and(|q| q.contains_key(&queue));
        if !cached {
            let next = self
                .store
                .cq_bounds(topic, queue)?
                .map_or(0, |(_, max)| max);
            self.next_offsets
                .entry(topic.to_owned())
                .or_default()
                .insert(queue, next);
        }
        Ok(self
            .next_offsets
            .get_mut(topic)
            .and_then(|q| q.get_mut(&queue))
            .expect("inserted above"))
    }

    /// Parses a produce entry's batch and finds (or creates) its topic; checks every
    /// message. `Err`: the refusal, and nothing was written.
    fn checked_batch<'b>(
        &mut self,
        batch: &mut IndexBatch<'_>,
        create_topic: Option<TopicSpec>,
        bytes: &'b [u8],
    ) -> R<Result<(BatchView<'b>, TopicMeta), Applied>> {
        let view = match BatchView::parse(bytes) {
            Ok(v) => v,
            Err(e) => return Ok(Err(reject(RejectCode::InvalidArgument, e.to_string()))),
        };
        let topic = view.topic;
        let meta = match (self.topic(topic)?, create_topic) {
            (Some(m), _) => m,
            (None, Some(spec)) => {
                // Checked before the topic is made, so a refused batch creates nothing.
                if let Some(refusal) = check_batch(&view, spec.queues) {
                    return Ok(Err(refusal));
                }
                if let Applied::Rejected { code, message } = self.put_topic(batch, topic, spec)? {
                    return Ok(Err(Applied::Rejected { code, message }));
                }
                spec.into()
            }
            (None, None) => {
                return Ok(Err(reject(
                    RejectCode::TopicNotFound,
                    format!("topic {topic} does not exist"),
                )));
            }
        };
        if let Some(refusal) = check_batch(&view, meta.queues) {
            return Ok(Err(refusal));
        }
        Ok(Ok((view, meta)))
    }

    /// Stores a produced batch: offsets, ConsumeQueue, key index, one time-index run per
    /// queue; a message due after `now` (apply's clock) waits in the timers instead. The
    /// batch is checked first and stored whole or not at all.
    pub fn produce(
        &mut self,
        batch: &mut IndexBatch<'_>,
        log_index: u64,
        create_topic: Option<TopicSpec>,
        bytes: &[u8],
        now: u64,
    ) -> R<Applied> {
        let (view, meta) = match self.checked_batch(batch, create_topic, bytes)? {
            Ok(v) => v,
            Err(refusal) => return Ok(refusal),
        };
        let topic = view.topic;
        let mut placed = Vec::with_capacity(view.count as usize);
        let mut originals = Vec::new();
        let mut dedup_keys = Vec::new();
        // Per run of consecutive offsets in one queue: (queue, first offset, next offset).
        let mut touched: Vec<(u32, u64, u64)> = Vec::new();
        // ConsumeQueue entries, written after the loop in key order (see below).
        let mut entries: Vec<(u32, u64, CqEntry)> = Vec::with_capacity(view.count as usize);
        for m in view.iter() {
            let m = m.expect("validated above");
            // A retry of a key still in its window: the first write's result, nothing new.
            if let Some(k) = m.idempotency_key
                && let Some(first) = self.dedup_lookup(topic, k)?
                && first.expires_ms > view.store_ms
            {
                let offset = (first.offset != NOT_YET_PLACED).then_some(first.offset);
                placed.push((first.queue, offset));
                originals.push((m.slot, first.log_index, first.slot));
                continue;
            }
            let offset = match m.deliver_at_ms {
                Some(due) if due > now.max(view.store_ms) => {
                    let timer = Timer {
                        due_ms: due,
                        log_index,
                        slot: m.slot,
                        topic: topic.to_owned(),
                        queue: m.queue,
                        size: m.encoded_len,
                        tag_hash: tag_hash(m.tag),
                        key: m.key.map(str::to_owned),
                    };
                    self.schedule(batch, &timer)?;
                    None
                }
                // Due already: apply's clock passed it since the leader encoded it.
                Some(due) => {
                    let p = Placement {
                        topic,
                        queue: m.queue,
                        log_index,
                        slot: m.slot,
                        size: m.encoded_len,
                        tag_hash: tag_hash(m.tag),
                        key: m.key,
                        store_ms: due,
                    };
                    Some(self.place_one(batch, &p)?)
                }
                None => {
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
                    entries.push((m.queue, offset, entry));
                    if let Some(key) = m.key {
                        let hit = IndexHit {
                            log_index,
                            slot: m.slot,
                            queue: m.queue,
                            offset,
                            store_ms: view.store_ms,
                        };
                        batch.put_key(topic, key, &hit)?;
                    }
                    // A run is contiguous: a message placed on its own (above) ends it.
                    match touched.iter_mut().rev().find(|(q, ..)| *q == m.queue) {
                        Some(t) if t.2 == offset => t.2 = offset + 1,
                        _ => touched.push((m.queue, offset, offset + 1)),
                    }
                    Some(offset)
                }
            };
            if let Some(k) = m.idempotency_key {
                let first = DedupHit {
                    stored_ms: view.store_ms,
                    expires_ms: view.store_ms.saturating_add(meta.dedup_window_ms),
                    log_index,
                    slot: m.slot,
                    queue: m.queue,
                    offset: offset.unwrap_or(NOT_YET_PLACED),
                };
                batch.put_dedup(topic, k, &first)?;
                self.dedup_pending
                    .insert((topic.to_owned(), k.to_owned()), first);
                dedup_keys.push(k);
            }
            placed.push((m.queue, offset));
        }
        // In key order (by queue; offsets already rise within one), RocksDB's memtable inserts
        // one queue's entries each next to the last instead of searching its skiplist for
        // every message: a batch's messages come in slot order, spread over the queues.
        entries.sort_by_key(|(queue, ..)| *queue);
        for (queue, offset, entry) in &entries {
            batch.put_cq(topic, *queue, *offset, entry)?;
        }
        if !dedup_keys.is_empty() {
            let expires = view.store_ms.saturating_add(meta.dedup_window_ms);
            batch.put_dedup_expiry(topic, log_index, expires, dedup_keys)?;
        }
        for (queue, first, next) in touched {
            // The queue's next offset, which a message placed on its own may have passed.
            let next_of_queue = *self.next_offset(topic, queue)?;
            batch.put_queue_next(topic, queue, next_of_queue)?;
            batch.put_time_run(
                topic,
                view.store_ms,
                log_index,
                queue,
                first,
                (next - first) as u32,
            )?;
        }
        Ok(Applied::Produced {
            log_index,
            placed,
            originals,
        })
    }

    /// Appends a dead letter to queue 0 of `dlq` (created with `retention_ms` if missing):
    /// an index entry pointing at the original record `e`, stored at `now`. Returns its
    /// offset in the dead-letter topic.
    pub fn append_dead_letter(
        &mut self,
        batch: &mut IndexBatch<'_>,
        dlq: &str,
        retention_ms: u64,
        e: CqEntry,
        now: u64,
    ) -> R<u64> {
        if self.topic(dlq)?.is_none() {
            let spec = TopicSpec {
                queues: 1,
                fifo: false,
                retention_ms,
                dedup_window_ms: raftmq_storage::DEFAULT_DEDUP_WINDOW_MS,
                part: None,
            };
            self.put_topic(batch, dlq, spec)?;
        }
        let next = self.next_offset(dlq, 0)?;
        let dlq_offset = *next;
        *next += 1;
        let entry = CqEntry { store_ms: now, ..e };
        batch.put_cq(dlq, 0, dlq_offset, &entry)?;
        // Dead letters come in any log order: each holds its log entry until it expires.
        batch.put_pin(dlq, 0, dlq_offset, e.log_index, e.slot)?;
        batch.put_queue_next(dlq, 0, dlq_offset + 1)?;
        batch.put_time_run(dlq, now, e.log_index, 0, dlq_offset, 1)?;
        Ok(dlq_offset)
    }

    /// Drops the ConsumeQueue and time-index entries of messages older than their topic's
    /// retention (at most [`RETAIN_BATCH`] per queue).
    pub fn retain(
        &mut self,
        batch: &mut IndexBatch<'_>,
        log_index: u64,
        now_ms: u64,
    ) -> R<Retained> {
        let mut out = Retained {
            oldest_needed: log_index,
            moved: Vec::new(),
        };
        batch.expire_dedup(now_ms, DEDUP_EXPIRE_BATCH)?;
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
                    batch.expire_pins(&topic, Some(queue), keep_from, RETAIN_BATCH)?;
                    out.moved.push((topic.clone(), queue, keep_from));
                }
                if let Some(e) = keep_entry {
                    out.oldest_needed = out.oldest_needed.min(e.log_index);
                }
            }
        }
        // Entries out of log order (pending or delivered scheduled messages, dead letters)
        // are pinned: the queues' first entries do not bound them. (Pins expired above are
        // still seen here: the point lags by one `Retain` at most.)
        if let Some(i) = self.store.pinned_oldest_log_index()? {
            out.oldest_needed = out.oldest_needed.min(i);
        }
        Ok(out)
    }
}
