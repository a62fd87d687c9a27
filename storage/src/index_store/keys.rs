//! Key and value encodings of the IndexStore's column families.
//!
//! Keys are built so RocksDB's byte order is the order we scan in: names are
//! length-prefixed (so `a` never prefixes `ab`'s range) and numbers are big-endian. What a
//! topic holds per message is keyed by its 4-byte [`TopicId`], not its name, so a key's
//! length (and a memtable's `memcmp`) does not grow with the name.
//! Values are little-endian fixed-width records. `docs/commitlog-format.md` lists them.
//!
//! Must never: change an existing encoding in place (a new layout needs a new column family
//! or a version byte, and a migration).

use crate::error::{Result, malformed};

/// A topic's number inside this store: given when the topic is created (in apply order, so
/// every replica gives the same), never reused, and what its index keys start with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TopicId(pub(crate) u32);

/// Appends a length-prefixed name (topic, group: at most 255 bytes, checked by callers).
pub(crate) fn put_name(k: &mut Vec<u8>, name: &str) {
    debug_assert!(name.len() <= 255);
    k.push(name.len() as u8);
    k.extend_from_slice(name.as_bytes());
}

pub(crate) fn name_prefix(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len() + 12);
    put_name(&mut k, name);
    k
}

/// The 4-byte prefix of everything a topic holds in the ConsumeQueue, key index, time
/// index and queue state: its numeric id (names are only in `topics` and `consumer_offsets`).
pub(crate) fn topic_prefix(id: TopicId) -> [u8; 4] {
    id.0.to_be_bytes()
}

pub(crate) fn queue_prefix(id: TopicId, queue: u32) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&id.0.to_be_bytes());
    k[4..].copy_from_slice(&queue.to_be_bytes());
    k
}

pub(crate) fn cq_key(id: TopicId, queue: u32, offset: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&queue_prefix(id, queue));
    k[8..].copy_from_slice(&offset.to_be_bytes());
    k
}

pub(crate) fn key_index_prefix(id: TopicId, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + 2 + key.len() + 12);
    k.extend_from_slice(&topic_prefix(id));
    k.extend_from_slice(&(key.len() as u16).to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

/// `topic, store_ms, log_index, queue, first_offset`: one entry per run of a batch's
/// messages in one queue (they share a store time).
pub(crate) fn time_key(
    id: TopicId,
    store_ms: u64,
    log_index: u64,
    queue: u32,
    first: u64,
) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..4].copy_from_slice(&topic_prefix(id));
    k[4..12].copy_from_slice(&store_ms.to_be_bytes());
    k[12..20].copy_from_slice(&log_index.to_be_bytes());
    k[20..24].copy_from_slice(&queue.to_be_bytes());
    k[24..].copy_from_slice(&first.to_be_bytes());
    k
}

pub(crate) fn offset_prefix(group: &str, topic: &str) -> Vec<u8> {
    let mut k = name_prefix(group);
    put_name(&mut k, topic);
    k
}

pub(crate) fn offset_key(group: &str, topic: &str, queue: u32) -> Vec<u8> {
    let mut k = offset_prefix(group, topic);
    k.extend_from_slice(&queue.to_be_bytes());
    k
}

/// The smallest key greater than every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xFF: no upper bound exists; an empty key would mean "everything".
    vec![0xFF; prefix.len() + 1]
}

pub(crate) fn be_u32(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| malformed("index key", "too short"))
}

pub(crate) fn be_u16(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes(s.try_into().expect("2 bytes")))
        .ok_or_else(|| malformed("index key", "too short"))
}

pub(crate) fn be_u64(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_be_bytes(s.try_into().expect("8 bytes")))
        .ok_or_else(|| malformed("index key", "too short"))
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| malformed("index value", "too short"))
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .ok_or_else(|| malformed("index value", "too short"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_do_not_prefix_each_other_and_offsets_sort_numerically() {
        assert!(!name_prefix("ab").starts_with(&name_prefix("a")));
        let t = TopicId(1);
        assert!(!cq_key(TopicId(256), 0, 0).starts_with(&queue_prefix(t, 0)));
        assert!(cq_key(t, 1, 255) < cq_key(t, 1, 256));
        assert!(cq_key(t, 1, u64::MAX) < cq_key(t, 2, 0));
        assert_eq!(prefix_end(&[1, 2, 0xFF]), vec![1, 3]);
        assert!(prefix_end(&queue_prefix(t, 7)) > cq_key(t, 7, u64::MAX).to_vec());
        assert!(time_key(t, 5, 0, 0, 0) < time_key(t, 6, 0, 0, 0));
    }
}
