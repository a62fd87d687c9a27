//! Scheduled messages at apply: a message produced with a future `deliver_at_ms` waits in
//! the IndexStore's timers, out of its queue, until a `Deliver` entry carrying a time at or
//! past its due time puts it at the tail of its queue with the next offset.
//!
//! Its ConsumeQueue entry and time-index run carry its due time as its store time, so a
//! read by id finds it at `deliver_at_ms` and retention counts from when it became readable.
//! That entry points further back in the log than its neighbours, so it is pinned (see
//! `raftmq_storage`'s timers) until retention removes it: the retention point, which
//! otherwise follows each queue's first entry, never passes it.
//!
//! Must never: put a message in its queue before a `Deliver` (or produce) entry whose time
//! reaches its due time (apply's clock, never a replica's), or drop a timer whose topic
//! still exists.

use std::sync::atomic::Ordering;

use raftmq_storage::{CqEntry, IndexBatch, IndexHit, Timer};

use super::{Queues, R};

/// Most timers one `Deliver` entry takes, so one apply stays bounded; the leader proposes
/// another while more are due.
const DELIVER_BATCH: usize = 10_000;

/// `next_due` when no timer is pending.
pub const NO_TIMER: u64 = u64::MAX;

/// Where a message goes in its queue: everything its ConsumeQueue entry and indexes need.
pub(super) struct Placement<'a> {
    pub topic: &'a str,
    pub queue: u32,
    pub log_index: u64,
    pub slot: u32,
    pub size: u32,
    pub tag_hash: u32,
    pub key: Option<&'a str>,
    pub store_ms: u64,
}

impl Queues {
    /// The earliest due time of a pending timer ([`NO_TIMER`]: none), read from the store.
    pub(super) fn first_due(&self) -> R<u64> {
        Ok(self
            .store
            .timers_from(0, 1)?
            .first()
            .map_or(NO_TIMER, |t| t.due_ms))
    }

    /// Schedules a message of a batch being produced.
    pub(super) fn schedule(&mut self, batch: &mut IndexBatch<'_>, t: &Timer) -> R<()> {
        batch.put_timer(t)?;
        self.next_due.fetch_min(t.due_ms, Ordering::AcqRel);
        Ok(())
    }

    /// Appends one message to its queue on its own (a scheduled message that came due):
    /// ConsumeQueue entry, next offset, key index, a time-index run of one. Returns its
    /// offset.
    pub(super) fn place_one(&mut self, batch: &mut IndexBatch<'_>, p: &Placement<'_>) -> R<u64> {
        let next = self.next_offset(p.topic, p.queue)?;
        let offset = *next;
        *next += 1;
        let entry = CqEntry {
            log_index: p.log_index,
            slot: p.slot,
            size: p.size,
            tag_hash: p.tag_hash,
            store_ms: p.store_ms,
        };
        batch.put_cq(p.topic, p.queue, offset, &entry)?;
        batch.put_queue_next(p.topic, p.queue, offset + 1)?;
        batch.put_time_run(p.topic, p.store_ms, p.log_index, p.queue, offset, 1)?;
        if let Some(key) = p.key {
            let hit = IndexHit {
                log_index: p.log_index,
                slot: p.slot,
                queue: p.queue,
                offset,
                store_ms: p.store_ms,
            };
            batch.put_key(p.topic, key, &hit)?;
        }
        Ok(offset)
    }

    /// Puts the timers due at `now` (at most [`DELIVER_BATCH`]) into their queues, in due
    /// order; a timer of a deleted topic just goes. Reads the store (a batch of its own).
    pub fn deliver(&mut self, batch: &mut IndexBatch<'_>, now: u64) -> R<usize> {
        let timers = self
            .store
            .timers_from(self.timer_floor, DELIVER_BATCH + 1)?;
        let mut next_due = NO_TIMER;
        let mut delivered = 0;
        for t in &timers {
            if t.due_ms > now || delivered == DELIVER_BATCH {
                next_due = t.due_ms;
                break;
            }
            delivered += 1;
            self.timer_floor = t.due_ms;
            match self.topic(&t.topic)? {
                Some(meta) if t.queue < meta.queues => {}
                _ => {
                    batch.drop_timer(t);
                    continue;
                }
            }
            let offset = self.place_one(
                batch,
                &Placement {
                    topic: &t.topic,
                    queue: t.queue,
                    log_index: t.log_index,
                    slot: t.slot,
                    size: t.size,
                    tag_hash: t.tag_hash,
                    key: t.key.as_deref(),
                    store_ms: t.due_ms,
                },
            )?;
            // Its log entry is older than its neighbours': pinned until retention drops it.
            batch.deliver_timer(t, offset);
        }
        self.next_due.store(next_due, Ordering::Release);
        Ok(delivered)
    }

    /// Drops a deleted topic's timers. `next_due` may still name one of them: the
    /// `Deliver` it brings finds nothing due and corrects it.
    pub(super) fn forget_timers(&mut self, batch: &mut IndexBatch<'_>, topic: &str) -> R<()> {
        batch.delete_topic_timers(topic, self.timer_floor)
    }
}
