//! Scheduled messages waiting for their time: a time-ordered index of messages already in
//! the CommitLog but not yet in their queue, and a log-ordered one for retention.
//!
//! ```text
//! T due_ms u64 BE | log_index u64 BE | slot u32 BE → topic_len u8 | topic | queue u32
//!                                                   | size u32 | tag_hash u32 | [key]
//! L log_index u64 BE | slot u32 BE                  → (empty)
//! ```
//! `T` entries are taken in key order (due time, then log position) when they come due;
//! the first `L` entry names the oldest log entry a pending message still needs, so the log
//! is never purged under one. A timer costs two small keys in RocksDB and no memory.
//!
//! Must never: let a `T` entry outlive its `L` entry or the reverse (both go in one batch).

use rocksdb::{IteratorMode, ReadOptions};

use super::keys::{be_u32, be_u64, le_u32, put_name};
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

fn log_key(log_index: u64, slot: u32) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0] = b'L';
    k[1..9].copy_from_slice(&log_index.to_be_bytes());
    k[9..13].copy_from_slice(&slot.to_be_bytes());
    k
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
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(due_key(from_ms, 0, 0).to_vec());
        ro.set_iterate_upper_bound(b"U".to_vec());
        let mut out = Vec::new();
        for kv in self
            .db
            .iterator_cf_opt(self.cf(CF_TIMERS), ro, IteratorMode::Start)
            .take(max)
        {
            let (k, v) = kv?;
            out.push(Timer::decode(&k, &v)?);
        }
        Ok(out)
    }

    /// The oldest log index a pending timer needs.
    pub fn timers_oldest_log_index(&self) -> Result<Option<u64>> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(b"L".to_vec());
        ro.set_iterate_upper_bound(b"M".to_vec());
        match self
            .db
            .iterator_cf_opt(self.cf(CF_TIMERS), ro, IteratorMode::Start)
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
        self.wb.put_cf(cf, log_key(t.log_index, t.slot), []);
        Ok(())
    }

    /// Removes every pending timer of `topic` with a due time from `from_ms` on (reads every
    /// one: for deleting a topic, which is rare).
    pub fn delete_topic_timers(&mut self, topic: &str, from_ms: u64) -> Result<()> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(due_key(from_ms, 0, 0).to_vec());
        ro.set_iterate_upper_bound(b"U".to_vec());
        let cf = self.store.cf(CF_TIMERS);
        for kv in self.store.db.iterator_cf_opt(cf, ro, IteratorMode::Start) {
            let (k, v) = kv?;
            let t = Timer::decode(&k, &v)?;
            if t.topic == topic {
                self.delete_timer(&t);
            }
        }
        Ok(())
    }

    /// Removes a timer (it came due, or its topic went).
    pub fn delete_timer(&mut self, t: &Timer) {
        let cf = self.store.cf(CF_TIMERS);
        self.wb
            .delete_cf(cf, due_key(t.due_ms, t.log_index, t.slot));
        self.wb.delete_cf(cf, log_key(t.log_index, t.slot));
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
    fn timers_come_in_due_order_and_name_the_oldest_log_entry() {
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
        assert_eq!(store.timers_oldest_log_index().unwrap(), Some(5));

        let mut batch = store.batch();
        batch.delete_timer(&a);
        store.write(batch, crate::Durability::Rebuildable).unwrap();
        assert_eq!(store.timers_from(0, 10).unwrap(), vec![c, b]);
        assert_eq!(store.timers_oldest_log_index().unwrap(), Some(9));
    }
}
