//! Scheduled messages waiting for their time, and the log entries that ConsumeQueue entries
//! out of log order still need.
//!
//! ```text
//! T due_ms u64 BE | log_index u64 BE | slot u32 BE  → topic_len u8 | topic | queue u32
//!                                                    | size u32 | tag_hash u32 | [key]
//! P topic_len u8 | topic | queue u32 BE | offset u64 BE → log_index u64 | slot u32
//! L log_index u64 BE | slot u32 BE | topic_len u8 | topic → (empty)
//! ```
//! `T` entries are taken in key order (due time, then log position) when they come due.
//! A *pin* (`P`) marks a ConsumeQueue entry that points further back in the log than the
//! entries around it — a scheduled message once delivered, a dead letter — until retention
//! removes that entry (by its offset, exactly as the ConsumeQueue loses it). An `L` entry
//! exists for every timer and pin (keyed by the topic that holds it), so the first `L` entry
//! names the oldest log entry either still needs: the retention point never passes it. A
//! timer or pin costs two small keys in RocksDB and no memory.
//!
//! Must never: let a `T` or `P` entry outlive its `L` entry or the reverse (they change in
//! one batch).

use super::keys::{be_u32, be_u64, le_u32, le_u64, put_name};
use super::{CF_TIMERS, IndexBatch, IndexStore, check_name};
use crate::error::{Result, malformed};

/// A pending scheduled message: what its ConsumeQueue entry needs when it comes due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    /// When it comes due.
    pub due_ms: u64,
    /// Log index of its batch.
    pub log_index: u64,
    /// Its slot in that batch.
    pub slot: u32,
    /// Its topic.
    pub topic: String,
    /// The queue it goes to.
    pub queue: u32,
    /// Encoded size.
    pub size: u32,
    /// Tag hash (ConsumeQueue pre-filter).
    pub tag_hash: u32,
    /// Business key (key index), if any.
    pub key: Option<String>,
}

fn due_key(due_ms: u64, log_index: u64, slot: u32) -> [u8; 21] {
    let mut k = [0u8; 21];
    k[0] = b'T';
    k[1..9].copy_from_slice(&due_ms.to_be_bytes());
    k[9..17].copy_from_slice(&log_index.to_be_bytes());
    k[17..21].copy_from_slice(&slot.to_be_bytes());
    k
}

fn log_key(log_index: u64, slot: u32, topic: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(14 + topic.len());
    k.push(b'L');
    k.extend_from_slice(&log_index.to_be_bytes());
    k.extend_from_slice(&slot.to_be_bytes());
    put_name(&mut k, topic);
    k
}

fn pin_prefix(topic: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(14 + topic.len());
    k.push(b'P');
    put_name(&mut k, topic);
    k
}

fn pin_key(topic: &str, queue: u32, offset: u64) -> Vec<u8> {
    let mut k = pin_prefix(topic);
    k.extend_from_slice(&queue.to_be_bytes());
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

fn pin_value(log_index: u64, slot: u32) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..8].copy_from_slice(&log_index.to_le_bytes());
    v[8..].copy_from_slice(&slot.to_le_bytes());
    v
}

impl Timer {
    fn encode_value(&self) -> Vec<u8> {
        let key = self.key.as_deref().unwrap_or("");
        let mut v = Vec::with_capacity(1 + self.topic.len() + 12 + key.len());
        put_name(&mut v, &self.topic);
        v.extend_from_slice(&self.queue.to_le_bytes());
        v.extend_from_slice(&self.size.to_le_bytes());
        v.extend_from_slice(&self.tag_hash.to_le_bytes());
        v.extend_from_slice(key.as_bytes());
        v
    }

    fn decode(k: &[u8], v: &[u8]) -> Result<Self> {
        let bad = || malformed("timer", "unknown layout");
        if k.len() != 21 {
            return Err(bad());
        }
        let topic_len = *v.first().ok_or_else(bad)? as usize;
        let topic = v.get(1..1 + topic_len).ok_or_else(bad)?;
        let at = 1 + topic_len;
        let key = v.get(at + 12..).ok_or_else(bad)?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| bad());
        Ok(Timer {
            due_ms: be_u64(k, 1)?,
            log_index: be_u64(k, 9)?,
            slot: be_u32(k, 17)?,
            topic: text(topic)?,
            queue: le_u32(v, at)?,
            size: le_u32(v, at + 4)?,
            tag_hash: le_u32(v, at + 8)?,
            key: (!key.is_empty()).then(|| text(key)).transpose()?,
        })
    }
}

impl IndexStore {
    /// Pending timers in due order from due time `from_ms` on (timers before it must all
    /// have gone: the bound lets the scan skip their tombstones), up to `max`.
    pub fn timers_from(&self, from_ms: u64, max: usize) -> Result<Vec<Timer>> {
        self.timers_iter(from_ms).take(max).collect()
    }

    /// Pending timers in due order from due time `from_ms` on.
    fn timers_iter(&self, from_ms: u64) -> impl Iterator<Item = Result<Timer>> + '_ {
        let lower = due_key(from_ms, 0, 0).to_vec();
        self.scan_range(CF_TIMERS, lower, b"U".to_vec())
            .map(|kv| kv.and_then(|(k, v)| Timer::decode(&k, &v)))
    }

    /// The oldest log index a pending timer or a pin needs.
    pub fn pinned_oldest_log_index(&self) -> Result<Option<u64>> {
        match self
            .scan_range(CF_TIMERS, b"L".to_vec(), b"M".to_vec())
            .next()
        {
            Some(kv) => Ok(Some(be_u64(&kv?.0, 1)?)),
            None => Ok(None),
        }
    }
}

impl IndexBatch<'_> {
    /// Schedules a message.
    pub fn put_timer(&mut self, t: &Timer) -> Result<()> {
        check_name("topic", &t.topic)?;
        let cf = self.store.cf(CF_TIMERS);
        self.wb
            .put_cf(cf, due_key(t.due_ms, t.log_index, t.slot), t.encode_value());
        self.wb
            .put_cf(cf, log_key(t.log_index, t.slot, &t.topic), []);
        Ok(())
    }

    /// A timer came due and its message went into its queue at `offset`: the timer goes, a
    /// pin keeps its log entry until retention removes it from the queue.
    pub fn deliver_timer(&mut self, t: &Timer, offset: u64) {
        let cf = self.store.cf(CF_TIMERS);
        self.wb
            .delete_cf(cf, due_key(t.due_ms, t.log_index, t.slot));
        self.wb.put_cf(
            cf,
            pin_key(&t.topic, t.queue, offset),
            pin_value(t.log_index, t.slot),
        );
    }

    /// Pins a whole log entry (an open transaction's) for `topic`.
    pub fn pin_entry(&mut self, log_index: u64, topic: &str) -> Result<()> {
        check_name("topic", topic)?;
        self.wb.put_cf(
            self.store.cf(CF_TIMERS),
            log_key(log_index, u32::MAX, topic),
            [],
        );
        Ok(())
    }

    /// Releases the pin of [`IndexBatch::pin_entry`].
    pub fn unpin_entry(&mut self, log_index: u64, topic: &str) {
        self.wb.delete_cf(
            self.store.cf(CF_TIMERS),
            log_key(log_index, u32::MAX, topic),
        );
    }

    /// Removes a timer whose message will never be delivered (its topic went).
    pub fn drop_timer(&mut self, t: &Timer) {
        let cf = self.store.cf(CF_TIMERS);
        self.wb
            .delete_cf(cf, due_key(t.due_ms, t.log_index, t.slot));
        self.wb
            .delete_cf(cf, log_key(t.log_index, t.slot, &t.topic));
    }

    /// Pins log entry `(log_index, slot)` for the ConsumeQueue entry `(topic, queue,
    /// offset)`, which points back past its neighbours (a dead letter).
    pub fn put_pin(
        &mut self,
        topic: &str,
        queue: u32,
        offset: u64,
        log_index: u64,
        slot: u32,
    ) -> Result<()> {
        check_name("topic", topic)?;
        let cf = self.store.cf(CF_TIMERS);
        self.wb.put_cf(
            cf,
            pin_key(topic, queue, offset),
            pin_value(log_index, slot),
        );
        self.wb.put_cf(cf, log_key(log_index, slot, topic), []);
        Ok(())
    }

    /// Drops the pins of a queue's entries below `offset` (retention removed them), up to
    /// `max`; `queue` `None`: of every queue. Reads the store: this batch's own pins are not
    /// seen.
    pub fn expire_pins(
        &mut self,
        topic: &str,
        queue: Option<u32>,
        offset: u64,
        max: usize,
    ) -> Result<usize> {
        check_name("topic", topic)?;
        let prefix = pin_prefix(topic);
        let (lower, upper) = match queue {
            Some(q) => (pin_key(topic, q, 0), pin_key(topic, q, offset)),
            None => (prefix.clone(), crate::index_store::prefix_end(&prefix)),
        };
        let cf = self.store.cf(CF_TIMERS);
        let mut n = 0;
        for kv in self.store.scan_range(CF_TIMERS, lower, upper).take(max) {
            let (k, v) = kv?;
            self.wb
                .delete_cf(cf, log_key(le_u64(&v, 0)?, le_u32(&v, 8)?, topic));
            self.wb.delete_cf(cf, k);
            n += 1;
        }
        Ok(n)
    }

    /// Removes every timer and pin of `topic`, timers from due time `from_ms` on (reads
    /// every pending timer: for deleting a topic, which is rare).
    pub fn delete_topic_timers(&mut self, topic: &str, from_ms: u64) -> Result<()> {
        for t in self.store.timers_iter(from_ms) {
            let t = t?;
            if t.topic == topic {
                self.drop_timer(&t);
            }
        }
        self.expire_pins(topic, None, u64::MAX, usize::MAX)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IndexStoreOptions;

    fn timer(due_ms: u64, log_index: u64, slot: u32, key: Option<&str>) -> Timer {
        Timer {
            due_ms,
            log_index,
            slot,
            topic: "t".into(),
            queue: 3,
            size: 40,
            tag_hash: 7,
            key: key.map(str::to_owned),
        }
    }

    #[test]
    fn timers_come_in_due_order_and_pins_hold_their_log_entries_until_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = IndexStore::open(dir.path(), &IndexStoreOptions::default()).unwrap();
        let (a, b, c) = (
            timer(300, 5, 0, Some("k")),
            timer(100, 9, 1, None),
            timer(100, 9, 0, None),
        );
        let mut batch = store.batch();
        for t in [&a, &b, &c] {
            batch.put_timer(t).unwrap();
        }
        store.write(batch, crate::Durability::Rebuildable).unwrap();
        assert_eq!(
            store.timers_from(0, 10).unwrap(),
            vec![c.clone(), b.clone(), a.clone()]
        );
        assert_eq!(store.timers_from(101, 10).unwrap(), vec![a.clone()]);
        assert_eq!(store.pinned_oldest_log_index().unwrap(), Some(5));

        // Delivered, `a` is no timer but still holds its log entry; so does a dead letter.
        let mut batch = store.batch();
        batch.deliver_timer(&a, 7);
        batch.put_pin("DLQ-g", 0, 4, 2, 0).unwrap();
        store.write(batch, crate::Durability::Rebuildable).unwrap();
        assert_eq!(
            store.timers_from(0, 10).unwrap(),
            vec![c.clone(), b.clone()]
        );
        assert_eq!(store.pinned_oldest_log_index().unwrap(), Some(2));

        // Retention drops the pins of the entries it removed from each queue, exactly.
        let mut batch = store.batch();
        assert_eq!(batch.expire_pins("DLQ-g", Some(0), 4, 10).unwrap(), 0);
        assert_eq!(batch.expire_pins("t", Some(2), 8, 10).unwrap(), 0);
        assert_eq!(batch.expire_pins("t", Some(3), 8, 10).unwrap(), 1);
        store.write(batch, crate::Durability::Rebuildable).unwrap();
        assert_eq!(store.pinned_oldest_log_index().unwrap(), Some(2));
        let mut batch = store.batch();
        assert_eq!(batch.expire_pins("DLQ-g", Some(0), 5, 10).unwrap(), 1);
        store.write(batch, crate::Durability::Rebuildable).unwrap();
        assert_eq!(store.pinned_oldest_log_index().unwrap(), Some(9));

        // A deleted topic's timers and pins go.
        let mut batch = store.batch();
        batch.put_pin("t", 0, 50, 1, 0).unwrap();
        store.write(batch, crate::Durability::Rebuildable).unwrap();
        let mut batch = store.batch();
        batch.delete_topic_timers("t", 0).unwrap();
        store.write(batch, crate::Durability::Rebuildable).unwrap();
        assert_eq!(store.timers_from(0, 10).unwrap(), vec![]);
        assert_eq!(store.pinned_oldest_log_index().unwrap(), None);
    }
}
