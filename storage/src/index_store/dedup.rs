//! Exactly-once produce records: the first write of each (topic, idempotency key), kept
//! until its dedup window ends, and an expiry index to drop them in time order.
//!
//! ```text
//! K topic key_len u16 BE key        → stored_ms u64, expires_ms u64, log_index u64,
//!                                      slot u32, queue u32, offset u64 (40 B)
//! E expires_ms u64 BE log_index u64 BE → topic_len u8, topic, (key_len u16, key)*
//! ```
//! One `E` entry per produce entry lists the keys it wrote (one write per batch, not per
//! message). A key written again after its window gets a new `K` record; the old `E`
//! entry then guards nothing for it (its expiry no longer matches) and only goes itself.
//!
//! Must never: drop a `K` record before the expiry it was written with.

use super::keys::{le_u32, le_u64, name_prefix, prefix_end};
use super::{CF_DEDUP, IndexBatch, IndexStore, check_name};
use crate::error::{Result, StorageError};

/// Longest idempotency key, bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

/// Where the first message written with an idempotency key went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DedupHit {
    /// When it was stored (the batch's store time).
    pub stored_ms: u64,
    /// When the record may go (the end of its dedup window).
    pub expires_ms: u64,
    /// Log index of its batch.
    pub log_index: u64,
    /// Its slot in that batch.
    pub slot: u32,
    /// Its queue.
    pub queue: u32,
    /// Its offset.
    pub offset: u64,
}

impl DedupHit {
    fn encode(&self) -> [u8; 40] {
        let mut v = [0u8; 40];
        v[0..8].copy_from_slice(&self.stored_ms.to_le_bytes());
        v[8..16].copy_from_slice(&self.expires_ms.to_le_bytes());
        v[16..24].copy_from_slice(&self.log_index.to_le_bytes());
        v[24..28].copy_from_slice(&self.slot.to_le_bytes());
        v[28..32].copy_from_slice(&self.queue.to_le_bytes());
        v[32..40].copy_from_slice(&self.offset.to_le_bytes());
        v
    }

    fn decode(v: &[u8]) -> Result<Self> {
        if v.len() != 40 {
            return Err(crate::error::malformed("dedup record", "unknown layout"));
        }
        Ok(DedupHit {
            stored_ms: le_u64(v, 0)?,
            expires_ms: le_u64(v, 8)?,
            log_index: le_u64(v, 16)?,
            slot: le_u32(v, 24)?,
            queue: le_u32(v, 28)?,
            offset: le_u64(v, 32)?,
        })
    }
}

/// `topic key_len key`: what follows the kind byte (and the expiry in `E` keys).
fn topic_key(topic: &str, key: &str) -> Vec<u8> {
    let mut k = name_prefix(topic);
    k.extend_from_slice(&(key.len() as u16).to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

fn record_key(topic: &str, key: &str) -> Vec<u8> {
    let mut k = vec![b'K'];
    k.extend_from_slice(&topic_key(topic, key));
    k
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(StorageError::InvalidArgument(format!(
            "idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes"
        )));
    }
    Ok(())
}

impl IndexStore {
    /// The first write of `key` in `topic`, if its record is still kept.
    pub fn dedup_get(&self, topic: &str, key: &str) -> Result<Option<DedupHit>> {
        self.db
            .get_pinned_cf(self.cf(CF_DEDUP), record_key(topic, key))?
            .map(|v| DedupHit::decode(&v))
            .transpose()
    }
}

impl IndexBatch<'_> {
    /// Records the first write of `key` in `topic` (list the keys of one produce entry with
    /// [`IndexBatch::put_dedup_expiry`] too).
    pub fn put_dedup(&mut self, topic: &str, key: &str, hit: &DedupHit) -> Result<()> {
        check_name("topic", topic)?;
        check_key(key)?;
        let cf = self.store.cf(CF_DEDUP);
        self.wb.put_cf(cf, record_key(topic, key), hit.encode());
        Ok(())
    }

    /// When the keys of produce entry `log_index` in `topic` may go.
    pub fn put_dedup_expiry<'k>(
        &mut self,
        topic: &str,
        log_index: u64,
        expires_ms: u64,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<()> {
        check_name("topic", topic)?;
        let mut e = vec![b'E'];
        e.extend_from_slice(&expires_ms.to_be_bytes());
        e.extend_from_slice(&log_index.to_be_bytes());
        let mut v = name_prefix(topic);
        for k in keys {
            check_key(k)?;
            v.extend_from_slice(&(k.len() as u16).to_be_bytes());
            v.extend_from_slice(k.as_bytes());
        }
        self.wb.put_cf(self.store.cf(CF_DEDUP), e, v);
        Ok(())
    }

    /// Drops the records of up to `max` produce entries whose window ended at or before
    /// `now_ms`, oldest first (reads the store: what this batch wrote is not seen). Returns
    /// how many expiry entries it removed.
    pub fn expire_dedup(&mut self, now_ms: u64, max: usize) -> Result<usize> {
        let cf = self.store.cf(CF_DEDUP);
        let mut upper = vec![b'E'];
        upper.extend_from_slice(&now_ms.saturating_add(1).to_be_bytes());
        let mut due = Vec::new();
        for kv in self.store.scan_prefix(CF_DEDUP, b"E", None, false) {
            let (k, v) = kv?;
            if *k >= *upper || due.len() >= max {
                break;
            }
            due.push((k.to_vec(), v.to_vec()));
        }
        for (e, v) in &due {
            let expires = super::keys::be_u64(e, 1)?;
            let bad = || crate::error::malformed("dedup expiry", "bad key list");
            let topic_len = *v.first().ok_or_else(bad)? as usize;
            let topic = v.get(..1 + topic_len).ok_or_else(bad)?;
            let mut at = 1 + topic_len;
            while at < v.len() {
                let len = super::keys::be_u16(v, at)? as usize;
                let key = v.get(at + 2..at + 2 + len).ok_or_else(bad)?;
                at += 2 + len;
                let mut k = Vec::with_capacity(3 + topic.len() + len);
                k.push(b'K');
                k.extend_from_slice(topic);
                k.extend_from_slice(&(len as u16).to_be_bytes());
                k.extend_from_slice(key);
                let current = self
                    .store
                    .db
                    .get_pinned_cf(cf, &k)?
                    .map(|v| DedupHit::decode(&v))
                    .transpose()?;
                if current.is_some_and(|h| h.expires_ms == expires) {
                    self.wb.delete_cf(cf, &k);
                }
            }
            self.wb.delete_cf(cf, e);
        }
        Ok(due.len())
    }

    /// Forgets a deleted topic's records (their expiry entries go when they are due).
    pub(super) fn delete_topic_dedup(&mut self, topic: &str) {
        let mut from = vec![b'K'];
        from.extend_from_slice(&name_prefix(topic));
        let to = prefix_end(&from);
        self.wb.delete_range_cf(self.store.cf(CF_DEDUP), from, to);
    }
}
