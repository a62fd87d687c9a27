//! Reading messages back: ConsumeQueue lookup, then the record from the CommitLog.
//!
//! Reads are served from the local replica's applied state: whatever the ConsumeQueue
//! holds was committed, so no read ever returns an uncommitted message. Records are read
//! once per batch even when several of its messages are wanted, and bodies are zero-copy
//! slices of the record buffer.
//!
//! Must never: touch the Raft core or write anything.

use std::sync::Arc;

use bytes::Bytes;
use raftmq_storage::message::{BatchView, MessageRef, SlotIndex, tag_hash};
use raftmq_storage::{CommitLog, CqEntry, IndexStore};

use crate::consensus::entry_codec;
use crate::error::BrokerError;
use crate::state::command::Command;
use crate::state::consumer_groups::{DlqOrigin, GroupView, dec, keys};
use crate::state::queues::{TxnRecord, TxnState};
use crate::state::sql::{Fields, SqlFilter};

/// A message as stored, ready to be rendered by the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Raft log index of its batch.
    pub log_index: u64,
    /// Slot in its batch.
    pub slot: u32,
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue: u32,
    /// Offset in the queue.
    pub offset: u64,
    /// Body bytes.
    pub body: Bytes,
    /// Whether the body was produced as base64.
    pub binary: bool,
    /// Business key.
    pub key: Option<String>,
    /// Tag.
    pub tag: Option<String>,
    /// Properties in the order given.
    pub properties: Vec<(String, String)>,
    /// Producer's timestamp.
    pub born_ms: u64,
    /// Leader's store timestamp.
    pub stored_ms: u64,
    /// Delayed delivery time, if any.
    pub deliver_at_ms: Option<u64>,
}

/// Tags a reader wants (`a||b`); `*` or empty means all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagFilter {
    tags: Vec<(String, u32)>,
}

impl TagFilter {
    /// Parses `a||b`. `None` when the expression selects everything.
    pub fn parse(expr: &str) -> Option<TagFilter> {
        let tags: Vec<(String, u32)> = expr
            .split("||")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| (t.to_owned(), tag_hash(Some(t))))
            .collect();
        if tags.is_empty() || tags.iter().any(|(t, _)| t == "*") {
            None
        } else {
            Some(TagFilter { tags })
        }
    }

    pub(crate) fn may_match(&self, hash: u32) -> bool {
        self.tags.iter().any(|(_, h)| *h == hash)
    }

    fn matches(&self, tag: Option<&str>) -> bool {
        tag.is_some_and(|tag| self.tags.iter().any(|(t, _)| t == tag))
    }
}

/// The result of a queue read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRead {
    /// Matching messages in offset order.
    pub messages: Vec<StoredMessage>,
    /// Where the next read should start.
    pub next_offset: u64,
    /// First retained offset.
    pub min_offset: u64,
    /// One past the last offset.
    pub max_offset: u64,
}

/// Presents a message found through a dead-letter topic as a message of that topic, with
/// where it came from in its properties (its id stays the original's).
fn mark_dead_letter(
    store: &IndexStore,
    m: &mut StoredMessage,
    topic: &str,
    queue: u32,
) -> Result<(), BrokerError> {
    let origin: Option<DlqOrigin> = GroupView::applied(store)
        .get(&keys::dlq_origin(topic, m.offset))?
        .and_then(|b| dec(&b));
    m.properties.push(("ORIGIN_TOPIC".into(), m.topic.clone()));
    if let Some(o) = origin {
        m.properties
            .push(("ORIGIN_QUEUE".into(), o.queue.to_string()));
        m.properties
            .push(("ORIGIN_OFFSET".into(), o.offset.to_string()));
        m.properties
            .push(("ATTEMPTS".into(), o.attempts.to_string()));
    }
    m.topic = topic.to_owned();
    m.queue = queue;
    Ok(())
}

/// Reads one record and extracts the batch it carries (`None`: the entry holds no
/// messages), and whether it is a transaction's.
fn batch_of(log: &CommitLog, log_index: u64) -> Result<Option<(Bytes, bool)>, BrokerError> {
    let rec = log.read(log_index)?;
    let cmd = entry_codec::decode_command(&rec.payload)?;
    match cmd {
        Some(Command::Produce { batch, .. }) => Ok(Some((batch, false))),
        Some(Command::ProduceHalf { batch, .. }) => Ok(Some((batch, true))),
        _ => Ok(None),
    }
}

/// The batch a ConsumeQueue entry points at; an entry that holds no messages is corrupt.
fn indexed_batch(log: &CommitLog, log_index: u64) -> Result<Bytes, BrokerError> {
    match batch_of(log, log_index)? {
        Some((b, _)) => Ok(b),
        None => Err(BrokerError::Corrupted(
            raftmq_storage::StorageError::Malformed {
                what: "indexed log entry",
                reason: format!("log entry {log_index} holds no messages"),
            },
        )),
    }
}

/// The batch of the last log entry read and where its messages start: consecutive
/// messages of one batch cost one CommitLog read and one pass over the batch.
#[derive(Default)]
struct BatchCache(Option<(u64, Bytes, SlotIndex)>);

impl BatchCache {
    /// Message `slot` of log entry `log_index`, at `offset` of its queue.
    fn message(
        &mut self,
        log: &CommitLog,
        log_index: u64,
        slot: u32,
        offset: u64,
    ) -> Result<StoredMessage, BrokerError> {
        self.with(log, log_index, slot, |batch, view, m| {
            stored_message(batch, view, m, log_index, slot, offset)
        })
    }

    /// `f` of message `slot` of log entry `log_index`, its batch and the batch's header.
    fn with<T>(
        &mut self,
        log: &CommitLog,
        log_index: u64,
        slot: u32,
        f: impl FnOnce(&Bytes, &BatchView<'_>, MessageRef<'_>) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        if !matches!(&self.0, Some((i, ..)) if *i == log_index) {
            let batch = indexed_batch(log, log_index)?;
            let index = SlotIndex::new(&BatchView::parse(&batch)?)?;
            self.0 = Some((log_index, batch, index));
        }
        let (_, batch, index) = self.0.as_ref().expect("filled above");
        let view = BatchView::parse(batch)?;
        f(batch, &view, index.get(&view, slot)?)
    }
}

/// Builds a [`StoredMessage`] from a batch and a slot.
fn message_at(
    batch: &Bytes,
    log_index: u64,
    slot: u32,
    offset: u64,
) -> Result<StoredMessage, BrokerError> {
    let view = BatchView::parse(batch)?;
    stored_message(batch, &view, view.get(slot)?, log_index, slot, offset)
}

fn stored_message(
    batch: &Bytes,
    view: &BatchView<'_>,
    m: MessageRef<'_>,
    log_index: u64,
    slot: u32,
    offset: u64,
) -> Result<StoredMessage, BrokerError> {
    Ok(StoredMessage {
        log_index,
        slot,
        topic: view.topic.to_owned(),
        queue: m.queue,
        offset,
        body: batch.slice_ref(m.body),
        binary: m.binary,
        key: m.key.map(str::to_owned),
        tag: m.tag.map(str::to_owned),
        properties: m
            .properties
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        born_ms: m.born_ms,
        stored_ms: view.store_ms,
        deliver_at_ms: m.deliver_at_ms,
    })
}

/// Every message of a log entry, in slot order (offsets unset: for a transaction's
/// check-back, before its messages have any).
pub fn entry_messages(log: &CommitLog, log_index: u64) -> Result<Vec<StoredMessage>, BrokerError> {
    let batch = indexed_batch(log, log_index)?;
    let view = BatchView::parse(&batch)?;
    // In one pass: `message_at` per slot would skip every earlier message each time.
    view.iter()
        .map(|m| {
            let m = m?;
            stored_message(&batch, &view, m, log_index, m.slot, 0)
        })
        .collect()
}

/// What to read from a queue.
#[derive(Clone, Debug)]
pub struct QueueQuery {
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue: u32,
    /// First offset wanted.
    pub offset: u64,
    /// Most messages to return.
    pub max: usize,
    /// Tag filter, if any.
    pub filter: Option<TagFilter>,
    /// SQL92 property filter, if any.
    pub sql: Option<Arc<SqlFilter>>,
    /// With a filter, at most this many entries are examined, so one call stays bounded.
    pub scan_limit: usize,
}

/// Reads up to `q.max` messages of a queue from `q.offset` on, optionally filtered by tag.
pub fn read_queue(
    store: &IndexStore,
    log: &CommitLog,
    q: &QueueQuery,
) -> Result<QueueRead, BrokerError> {
    let (topic, queue, offset, max) = (q.topic.as_str(), q.queue, q.offset, q.max);
    let filter = q.filter.as_ref();
    let scan_limit = q.scan_limit;
    let (min_offset, max_offset) = store.cq_bounds(topic, queue)?.unwrap_or((0, 0));
    if offset < min_offset {
        return Err(BrokerError::OffsetOutOfRange { offset, min_offset });
    }
    let scan = if filter.is_some() || q.sql.is_some() {
        scan_limit.max(max)
    } else {
        max
    };
    let entries: Vec<(u64, CqEntry)> = store.cq_range(topic, queue, offset, scan)?;
    let mut messages = Vec::with_capacity(max.min(entries.len()));
    let mut next_offset = offset.max(min_offset);
    let mut batches = BatchCache::default();
    for (off, e) in entries {
        if messages.len() >= max {
            break;
        }
        next_offset = off + 1;
        if let Some(f) = filter
            && !f.may_match(e.tag_hash)
        {
            continue;
        }
        let mut m = batches.message(log, e.log_index, e.slot, off)?;
        if filter.is_some_and(|f| !f.matches(m.tag.as_deref()))
            || q.sql.as_ref().is_some_and(|sql| !sql.matches(&m))
        {
            continue;
        }
        if m.topic != topic {
            // A dead letter: an index entry pointing at the original message.
            mark_dead_letter(store, &mut m, topic, queue)?;
        }
        messages.push(m);
    }
    Ok(QueueRead {
        messages,
        next_offset,
        min_offset,
        max_offset,
    })
}

/// Reads one message by its log index and slot (no scan: the time index entry of that
/// batch and queue gives its offset). `None` when no such message is retained.
pub fn read_message(
    store: &IndexStore,
    log: &CommitLog,
    log_index: u64,
    slot: u32,
) -> Result<Option<StoredMessage>, BrokerError> {
    let (batch, half) = match batch_of(log, log_index) {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(None),
        Err(BrokerError::Io(raftmq_storage::StorageError::OutOfRange { .. })) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut m = match message_at(&batch, log_index, slot, 0) {
        Ok(m) => m,
        // A slot past the batch's end: no such message.
        Err(BrokerError::Corrupted(raftmq_storage::StorageError::Malformed { .. })) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    // The offset is not in the record: find it through the ConsumeQueue entry,
    // which records (log index, slot); the time index gives (queue, offset). A scheduled
    // message is indexed at its due time, a transaction's at its commit, and neither before.
    let at = if half {
        match TxnRecord::load(store, log_index)? {
            Some(TxnRecord {
                state: TxnState::Committed,
                decided_ms: Some(at),
                ..
            }) => at,
            _ => return Ok(None),
        }
    } else {
        m.deliver_at_ms.unwrap_or(m.stored_ms)
    };
    let hits = store.time_range(&m.topic, at, at + 1, usize::MAX)?;
    match hits
        .iter()
        .find(|h| h.log_index == log_index && h.slot == slot)
    {
        Some(h) => m.offset = h.offset,
        None => return Ok(None),
    }
    Ok(Some(m))
}

/// Loads the messages of index hits (key or time index), skipping those retention removed.
pub fn load_hits(
    log: &CommitLog,
    hits: &[raftmq_storage::IndexHit],
) -> Result<Vec<StoredMessage>, BrokerError> {
    let mut out = Vec::with_capacity(hits.len());
    for h in hits {
        // The key index keeps entries of messages retention has removed: skip those.
        let batch = match indexed_batch(log, h.log_index) {
            Ok(b) => b,
            Err(BrokerError::Io(raftmq_storage::StorageError::OutOfRange { .. })) => continue,
            Err(e) => return Err(e),
        };
        out.push(message_at(&batch, h.log_index, h.slot, h.offset)?);
    }
    Ok(out)
}

/// Of `items`, whose ConsumeQueue tag hashes already matched `tag`, those a receive skips
/// instead of delivering: the stored tag is not `tag` exactly (the hash collided), or `sql`
/// does not select the message. One CommitLog read per batch they sit in; messages the
/// hash rules out cost none.
pub fn filter_misses(
    store: &IndexStore,
    log: &CommitLog,
    topic: &str,
    tag: Option<&TagFilter>,
    sql: Option<&SqlFilter>,
    items: &[(u32, u64)],
) -> Result<Vec<(u32, u64)>, BrokerError> {
    let mut batches = BatchCache::default();
    let mut out = Vec::new();
    for &(queue, offset) in items {
        let Some(e) = store.cq_get(topic, queue, offset)? else {
            continue;
        };
        let missed = batches.with(log, e.log_index, e.slot, |_, _, m| {
            Ok(tag.is_some_and(|t| !t.matches(m.tag)) || sql.is_some_and(|q| !q.matches(&m)))
        })?;
        if missed {
            out.push((queue, offset));
        }
    }
    Ok(out)
}

impl Fields for MessageRef<'_> {
    fn field(&self, name: &str) -> Option<&str> {
        match name {
            "TAG" => self.tag,
            "KEY" => self.key,
            _ => self
                .properties
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v),
        }
    }
}

impl Fields for StoredMessage {
    fn field(&self, name: &str) -> Option<&str> {
        match name {
            "TAG" => self.tag.as_deref(),
            "KEY" => self.key.as_deref(),
            _ => self
                .properties
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
        }
    }
}

/// Reads the messages of granted leases, for the consumer (dead letters presented as
/// messages of their dead-letter topic).
pub fn read_granted(
    store: &IndexStore,
    log: &CommitLog,
    topic: &str,
    granted: &[crate::state::Granted],
) -> Result<Vec<(StoredMessage, u32, String)>, BrokerError> {
    let mut batches = BatchCache::default();
    let mut out = Vec::with_capacity(granted.len());
    // Grants come in runs of consecutive offsets of a queue: one ConsumeQueue scan per
    // run instead of a point lookup per message.
    let mut i = 0;
    while i < granted.len() {
        let first = &granted[i];
        let run = granted[i..]
            .iter()
            .zip(0u64..)
            .take_while(|(g, k)| g.queue == first.queue && g.offset == first.offset + k)
            .count();
        let entries = store.cq_range(topic, first.queue, first.offset, run)?;
        for g in &granted[i..i + run] {
            let Ok(at) = entries.binary_search_by_key(&g.offset, |(o, _)| *o) else {
                continue;
            };
            let e = entries[at].1;
            let mut m = batches.message(log, e.log_index, e.slot, g.offset)?;
            if m.topic != topic {
                mark_dead_letter(store, &mut m, topic, g.queue)?;
            }
            out.push((m, g.attempt, g.receipt.clone()));
        }
        i += run;
    }
    Ok(out)
}
