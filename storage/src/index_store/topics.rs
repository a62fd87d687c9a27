//! Topics in the IndexStore: their settings (`topics`, keyed by name) and the numeric ids
//! that what they hold per message (ConsumeQueue, key and time indexes, queue state) is
//! keyed by, with the in-memory name → id map every lookup by name goes through.
//!
//! Ids come from a counter in `sm_meta`, in apply order, so every replica gives the same
//! ones, and are never reused: a topic deleted and created again starts empty under a new
//! id while the old id's range tombstones wait for compaction. Stores written before ids
//! (names in every key) are rewritten topic by topic when opened ([`migrate`]).
//!
//! Must never: let a lookup see an id before the batch that gave it is written, or give
//! an id from a batch that is then dropped.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rocksdb::{IteratorMode, WriteBatch, WriteOptions};

use super::keys::{TopicId, le_u32, le_u64, name_prefix, prefix_end, topic_prefix};
use super::{
    CF_META, CF_TOPICS, DEFAULT_DEDUP_WINDOW_MS, IndexBatch, IndexStore, TOPIC_CFS, check_name,
};
use crate::error::{Result, StorageError, malformed};

/// `sm_meta` key of the next topic id (u32 LE).
const NEXT_ID: &str = "next_topic_id";

/// A topic's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicMeta {
    /// Number of queues: for a part, the end of this store's range.
    pub queues: u32,
    /// Per-queue order is strict for consumer groups.
    pub fifo: bool,
    /// How long messages are kept.
    pub retention_ms: u64,
    /// How long idempotency keys are remembered.
    pub dedup_window_ms: u64,
    /// `Some`: the topic is spread over broker groups and this store holds a part of its
    /// queue space; `None`: all of its queues.
    pub part: Option<SpreadPart>,
}

/// A part of a topic spread over broker groups: this store holds queues
/// `first_queue..queues` of a queue space of `queue_space` queues (the others belong to
/// other groups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpreadPart {
    /// The first queue held here.
    pub first_queue: u32,
    /// Queues in the whole queue space, as of this part's last change.
    pub queue_space: u32,
}

impl TopicMeta {
    /// The queues this store holds: `first_queue..queues` of a part, else all.
    pub fn own_queues(&self) -> std::ops::Range<u32> {
        self.part.map_or(0, |p| p.first_queue)..self.queues
    }

    /// Version 1 (14 bytes) had no dedup window; version 2 adds it; version 3 adds the id
    /// (versions 1 and 2 are only read, from stores written before ids, by [`migrate`]);
    /// version 4 adds a part of a spread topic (first queue, queue space), and is written
    /// only for such parts (so a store without them stays readable by builds before parts).
    const VERSION: u8 = 3;
    const VERSION_PART: u8 = 4;

    fn encode(&self, id: TopicId) -> Vec<u8> {
        let mut v = Vec::with_capacity(34);
        v.push(match self.part {
            Some(_) => Self::VERSION_PART,
            None => Self::VERSION,
        });
        v.extend_from_slice(&self.queues.to_le_bytes());
        v.push(u8::from(self.fifo));
        v.extend_from_slice(&self.retention_ms.to_le_bytes());
        v.extend_from_slice(&self.dedup_window_ms.to_le_bytes());
        v.extend_from_slice(&id.0.to_le_bytes());
        if let Some(p) = self.part {
            v.extend_from_slice(&p.first_queue.to_le_bytes());
            v.extend_from_slice(&p.queue_space.to_le_bytes());
        }
        v
    }

    /// The settings and, from version 3 on, the id.
    fn decode(v: &[u8]) -> Result<(Self, Option<TopicId>)> {
        let (dedup_window_ms, id, part) = match (v.len(), v.first()) {
            (14, Some(1)) => (DEFAULT_DEDUP_WINDOW_MS, None, None),
            (22, Some(2)) => (le_u64(v, 14)?, None, None),
            (26, Some(3)) => (le_u64(v, 14)?, Some(TopicId(le_u32(v, 22)?)), None),
            (34, Some(4)) => (
                le_u64(v, 14)?,
                Some(TopicId(le_u32(v, 22)?)),
                Some(SpreadPart {
                    first_queue: le_u32(v, 26)?,
                    queue_space: le_u32(v, 30)?,
                }),
            ),
            _ => return Err(malformed("topic metadata", "unknown layout")),
        };
        let meta = TopicMeta {
            queues: le_u32(v, 1)?,
            fifo: v[5] != 0,
            retention_ms: le_u64(v, 6)?,
            dedup_window_ms,
            part,
        };
        Ok((meta, id))
    }
}

/// What the store knows of topic ids in memory (loaded on open, changed by written batches).
#[derive(Debug, Default)]
pub(super) struct TopicIds {
    by_name: HashMap<Box<str>, TopicId>,
    next: u32,
    /// Ids deleted since [`IndexStore::compact_deleted_topics`] last ran.
    deleted: Vec<TopicId>,
}

/// A batch's changes to topic ids, applied to [`TopicIds`] once the batch is written.
#[derive(Debug, Default)]
pub(super) struct IdChanges {
    /// In order: `Some` a topic created, `None` one deleted.
    named: Vec<(Box<str>, Option<TopicId>)>,
    next: Option<u32>,
    deleted: Vec<TopicId>,
}

impl IdChanges {
    pub(super) fn is_empty(&self) -> bool {
        self.named.is_empty()
    }
}

impl IndexStore {
    /// Reads every topic record into the id map, rewriting first any topic whose keys still
    /// start with its name.
    pub(super) fn load_topic_ids(&self) -> Result<TopicIds> {
        migrate(self)?;
        let mut ids = TopicIds {
            next: self.stored_next_id()?,
            ..TopicIds::default()
        };
        for (name, _, id) in self.topic_records()? {
            let id = id.ok_or_else(|| malformed("topic metadata", "no id after migration"))?;
            ids.next = ids.next.max(id.0 + 1);
            ids.by_name.insert(name.into(), id);
        }
        Ok(ids)
    }

    /// The id counter as written (0 before the first topic).
    fn stored_next_id(&self) -> Result<u32> {
        match self.meta_get(NEXT_ID)? {
            Some(v) => le_u32(&v, 0),
            None => Ok(0),
        }
    }

    fn topic_records(&self) -> Result<Vec<(String, TopicMeta, Option<TopicId>)>> {
        let mut out = Vec::new();
        for kv in self.db.iterator_cf(self.cf(CF_TOPICS), IteratorMode::Start) {
            let (k, v) = kv?;
            let name = std::str::from_utf8(k.get(1..).unwrap_or_default())
                .map_err(|_| malformed("topic name", "not UTF-8"))?;
            let (meta, id) = TopicMeta::decode(&v)?;
            out.push((name.to_owned(), meta, id));
        }
        Ok(out)
    }

    /// The id of an existing topic.
    pub(super) fn topic_id(&self, name: &str) -> Option<TopicId> {
        read_ids(&self.topic_ids).by_name.get(name).copied()
    }

    /// One topic's settings.
    pub fn topic_get(&self, name: &str) -> Result<Option<TopicMeta>> {
        self.db
            .get_pinned_cf(self.cf(CF_TOPICS), name_prefix(name))?
            .map(|v| TopicMeta::decode(&v).map(|(meta, _)| meta))
            .transpose()
    }

    /// Every topic, by name.
    pub fn topics(&self) -> Result<Vec<(String, TopicMeta)>> {
        Ok(self
            .topic_records()?
            .into_iter()
            .map(|(name, meta, _)| (name, meta))
            .collect())
    }

    pub(super) fn apply_id_changes(&self, changes: IdChanges) {
        let mut ids = write_ids(&self.topic_ids);
        for (name, id) in changes.named {
            match id {
                Some(id) => ids.by_name.insert(name, id),
                None => ids.by_name.remove(&name),
            };
        }
        if let Some(next) = changes.next {
            ids.next = next;
        }
        ids.deleted.extend(changes.deleted);
    }

    /// Compacts away what deleted topics left behind (range tombstones and the keys they
    /// cover), so reads that pass where they were stay cheap. Slow: run it off the apply
    /// path.
    pub fn compact_deleted_topics(&self) -> Result<()> {
        let deleted = std::mem::take(&mut write_ids(&self.topic_ids).deleted);
        for id in deleted {
            let prefix = topic_prefix(id);
            let end = prefix_end(&prefix);
            for cf in TOPIC_CFS {
                self.db
                    .compact_range_cf(self.cf(cf), Some(&prefix[..]), Some(&end[..]));
            }
        }
        Ok(())
    }
}

impl IndexBatch<'_> {
    /// The id `name` has as of this batch: given in it, or before it and not deleted in it.
    pub(super) fn topic_id(&self, name: &str) -> Option<TopicId> {
        match self.ids.named.iter().rev().find(|(n, _)| &**n == name) {
            Some((_, id)) => *id,
            None => self.store.topic_id(name),
        }
    }

    /// The id of a topic a write is for; a topic without a record is the caller's bug.
    pub(super) fn existing_topic(&self, name: &str) -> Result<TopicId> {
        check_name("topic", name)?;
        self.topic_id(name).ok_or_else(|| {
            StorageError::InvalidArgument(format!("topic {name} has no record in this store"))
        })
    }

    /// Creates or replaces a topic's settings (a topic keeps its id when replaced).
    pub fn put_topic(&mut self, name: &str, meta: &TopicMeta) -> Result<()> {
        check_name("topic", name)?;
        let id = match self.topic_id(name) {
            Some(id) => id,
            None => {
                let id = match self.ids.next {
                    Some(next) => next,
                    None => read_ids(&self.store.topic_ids).next,
                };
                let next = id
                    .checked_add(1)
                    .ok_or_else(|| StorageError::InvalidArgument("out of topic ids".into()))?;
                self.ids.next = Some(next);
                self.put_meta(NEXT_ID, &next.to_le_bytes());
                self.ids.named.push((name.into(), Some(TopicId(id))));
                TopicId(id)
            }
        };
        let cf = self.store.cf(CF_TOPICS);
        self.wb.put_cf(cf, name_prefix(name), meta.encode(id));
        Ok(())
    }

    /// Deletes a topic with its ConsumeQueue, key and time indexes and queue state (the
    /// messages stay in the CommitLog until retention purges their segments).
    pub fn delete_topic(&mut self, name: &str) -> Result<()> {
        check_name("topic", name)?;
        if let Some(id) = self.topic_id(name) {
            let prefix = topic_prefix(id);
            let end = prefix_end(&prefix);
            for cf in TOPIC_CFS {
                let cf = self.store.cf(cf);
                self.wb.delete_range_cf(cf, &prefix[..], &end[..]);
            }
            self.ids.named.push((name.into(), None));
            self.ids.deleted.push(id);
        }
        self.wb
            .delete_cf(self.store.cf(CF_TOPICS), name_prefix(name));
        self.delete_topic_dedup(name);
        Ok(())
    }
}

/// How many rewritten keys go in one write while migrating.
const MIGRATE_CHUNK: usize = 10_000;

/// Rewrites every topic whose record has no id (a store written before ids): its keys in
/// the per-topic column families move from `name | rest` to `id | rest`. One topic at a
/// time, and the topic's record (with its id) and the id counter are written last, synced,
/// with the deletion of the old keys: a crash part way leaves the record without an id, and
/// the next open gives the same id and rewrites the same keys again. Old keys start with the
/// name's length (≥ 1) and new ones with the id's high byte (0 below 2^24 topics), so the
/// two never share a range.
fn migrate(store: &IndexStore) -> Result<()> {
    let legacy: Vec<(String, TopicMeta)> = store
        .topic_records()?
        .into_iter()
        .filter(|(_, _, id)| id.is_none())
        .map(|(name, meta, _)| (name, meta))
        .collect();
    if legacy.is_empty() {
        return Ok(());
    }
    let mut next = store.stored_next_id()?;
    for (name, meta) in legacy {
        let id = TopicId(next);
        next += 1;
        let old = name_prefix(&name);
        let end = prefix_end(&old);
        let mut moved = 0usize;
        for cf_name in TOPIC_CFS {
            let cf = store.cf(cf_name);
            let mut wb = WriteBatch::default();
            for kv in store.scan_range(cf_name, old.clone(), end.clone()) {
                let (k, v) = kv?;
                let mut new_key = topic_prefix(id).to_vec();
                new_key.extend_from_slice(&k[old.len()..]);
                wb.put_cf(cf, new_key, v);
                moved += 1;
                if wb.len() >= MIGRATE_CHUNK {
                    store.db.write(std::mem::take(&mut wb))?;
                }
            }
            store.db.write(wb)?;
        }
        let mut wb = WriteBatch::default();
        for cf_name in TOPIC_CFS {
            wb.delete_range_cf(store.cf(cf_name), &old, &end);
        }
        wb.put_cf(store.cf(CF_TOPICS), &old, meta.encode(id));
        wb.put_cf(store.cf(CF_META), NEXT_ID, next.to_le_bytes());
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        store.db.write_opt(wb, &synced)?;
        tracing::info!(
            topic = name,
            id = id.0,
            keys = moved,
            "topic now keyed by its id"
        );
    }
    Ok(())
}

// A panic while holding the map leaves it as consistent as before the panic (every change
// is one insert or remove), so a poisoned lock is used as it is.
fn read_ids(ids: &RwLock<TopicIds>) -> RwLockReadGuard<'_, TopicIds> {
    ids.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_ids(ids: &RwLock<TopicIds>) -> RwLockWriteGuard<'_, TopicIds> {
    ids.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::super::keys::cq_key;
    use super::super::{CF_CONSUME_QUEUE, CF_QUEUE_STATE, CqEntry, IndexStoreOptions};
    use super::*;

    #[test]
    fn topic_settings_of_every_version_read_and_version_3_keeps_the_id() {
        let meta = TopicMeta {
            queues: 3,
            fifo: true,
            retention_ms: 99,
            dedup_window_ms: 5,
            part: None,
        };
        let v3 = meta.encode(TopicId(7));
        assert_eq!(TopicMeta::decode(&v3).unwrap(), (meta, Some(TopicId(7))));
        let mut v2 = v3[..22].to_vec();
        v2[0] = 2;
        assert_eq!(TopicMeta::decode(&v2).unwrap(), (meta, None));
        let mut v1 = v3[..14].to_vec();
        v1[0] = 1;
        let v1_meta = TopicMeta {
            dedup_window_ms: DEFAULT_DEDUP_WINDOW_MS,
            ..meta
        };
        assert_eq!(TopicMeta::decode(&v1).unwrap(), (v1_meta, None));
        assert!(TopicMeta::decode(&v1[..13]).is_err());
        let mut wrong = v3.clone();
        wrong[0] = 2;
        assert!(TopicMeta::decode(&wrong).is_err(), "version 2 is 22 bytes");
        // A part of a spread topic, and only it, is written as version 4.
        let part = TopicMeta {
            part: Some(SpreadPart {
                first_queue: 4,
                queue_space: 9,
            }),
            ..meta
        };
        let v4 = part.encode(TopicId(7));
        assert_eq!((v3.len(), v4.len(), v4[0]), (26, 34, 4));
        assert_eq!(TopicMeta::decode(&v4).unwrap(), (part, Some(TopicId(7))));
        assert!(TopicMeta::decode(&v4[..33]).is_err());
    }

    fn entry(log_index: u64) -> CqEntry {
        CqEntry {
            log_index,
            slot: 0,
            size: 10,
            tag_hash: 0,
            store_ms: 1,
        }
    }

    /// Writes what a store from before ids held for `name`: a version 2 record and
    /// ConsumeQueue and queue-state keys that start with the name.
    fn write_legacy(store: &IndexStore, name: &str, messages: u64) {
        let mut wb = WriteBatch::default();
        let meta = TopicMeta {
            queues: 2,
            fifo: false,
            retention_ms: 1_000,
            dedup_window_ms: 2_000,
            part: None,
        };
        wb.put_cf(
            store.cf(CF_TOPICS),
            name_prefix(name),
            &meta.encode(TopicId(0))[..22],
        );
        for offset in 0..messages {
            let mut k = name_prefix(name);
            k.extend_from_slice(&1u32.to_be_bytes());
            k.extend_from_slice(&offset.to_be_bytes());
            wb.put_cf(store.cf(CF_CONSUME_QUEUE), k, entry(offset + 1).encode());
        }
        let mut k = name_prefix(name);
        k.extend_from_slice(&1u32.to_be_bytes());
        wb.put_cf(store.cf(CF_QUEUE_STATE), k, messages.to_le_bytes());
        store.db.write(wb).unwrap();
    }

    fn legacy_v2(store: &IndexStore, name: &str) {
        let cf = store.cf(CF_TOPICS);
        let v = store.db.get_cf(cf, name_prefix(name)).unwrap().unwrap();
        let mut v2 = v[..22].to_vec();
        v2[0] = 2;
        store.db.put_cf(cf, name_prefix(name), v2).unwrap();
    }

    #[test]
    fn a_store_keyed_by_names_is_rewritten_by_ids_on_open_and_a_second_open_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = IndexStoreOptions::default();
        {
            let store = IndexStore::open(tmp.path(), &opts).unwrap();
            // Names whose ids come out in the order of their length-prefixed keys.
            write_legacy(&store, "b", 20_005);
            write_legacy(&store, "ab", 3);
            legacy_v2(&store, "b");
            legacy_v2(&store, "ab");
        }
        let store = IndexStore::open(tmp.path(), &opts).unwrap();
        assert_eq!(store.cq_bounds("b", 1).unwrap(), Some((0, 20_005)));
        assert_eq!(store.cq_bounds("ab", 1).unwrap(), Some((0, 3)));
        assert_eq!(store.cq_get("b", 1, 20_004).unwrap(), Some(entry(20_005)));
        assert_eq!(
            store.topic_get("ab").unwrap().unwrap().dedup_window_ms,
            2_000
        );
        let (b, ab) = (store.topic_id("b").unwrap(), store.topic_id("ab").unwrap());
        assert_ne!(b, ab);
        // No key starting with a name is left.
        for cf in TOPIC_CFS {
            for kv in store.db.iterator_cf(store.cf(cf), IteratorMode::Start) {
                let (k, _) = kv.unwrap();
                assert_eq!(k[0], 0, "{cf}: {k:?} is not keyed by an id");
            }
        }
        // A new topic takes the next id.
        let mut batch = store.batch();
        batch
            .put_topic("c", &store.topic_get("b").unwrap().unwrap())
            .unwrap();
        store.write(batch, super::super::Durability::Wal).unwrap();
        assert_eq!(store.topic_id("c").unwrap().0, b.0.max(ab.0) + 1);
        drop(store);
        let store = IndexStore::open(tmp.path(), &opts).unwrap();
        assert_eq!(store.topic_id("b"), Some(b));
        assert_eq!(store.cq_bounds("b", 1).unwrap(), Some((0, 20_005)));
        assert_eq!(
            store
                .db
                .get_cf(store.cf(CF_CONSUME_QUEUE), cq_key(b, 1, 7))
                .unwrap(),
            Some(entry(8).encode().to_vec())
        );
    }

    #[test]
    fn a_migration_cut_short_gives_the_same_id_again() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = IndexStoreOptions::default();
        {
            let store = IndexStore::open(tmp.path(), &opts).unwrap();
            write_legacy(&store, "t", 10);
            legacy_v2(&store, "t");
            // Half a migration: new keys for id 0 written, the record not yet.
            let mut k = topic_prefix(TopicId(0)).to_vec();
            k.extend_from_slice(&1u32.to_be_bytes());
            k.extend_from_slice(&3u64.to_be_bytes());
            store
                .db
                .put_cf(store.cf(CF_CONSUME_QUEUE), k, entry(4).encode())
                .unwrap();
        }
        let store = IndexStore::open(tmp.path(), &opts).unwrap();
        assert_eq!(store.topic_id("t"), Some(TopicId(0)));
        assert_eq!(store.cq_bounds("t", 1).unwrap(), Some((0, 10)));
        assert_eq!(store.cq_range("t", 1, 0, 100).unwrap().len(), 10);
    }
}
