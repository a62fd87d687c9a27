//! The IndexStore: RocksDB holding everything about messages except the messages.
//!
//! Column families:
//! - `consume_queue`: (topic id, queue, offset) → [`CqEntry`] (log index, slot, size, tag hash,
//!   store time): RocketMQ's ConsumeQueue, one entry per message;
//! - `key_index`: (topic id, key, log index, slot) → (queue, offset);
//! - `time_index`: (topic id, store time, log index, queue, first offset) → message count: one
//!   entry per run of a batch's messages in one queue, expanded through the ConsumeQueue;
//! - `consumer_offsets`: (group, topic, queue) → committed offset;
//! - `topics`: topic name → [`TopicMeta`] and the topic's id, which the per-message
//!   families are keyed by (`topics.rs`);
//! - `sm_meta`: state-machine metadata (`last_applied`, membership…) as opaque bytes;
//! - `queue_state`: (topic id, queue) → the queue's next offset, so offsets stay dense and
//!   never restart even after retention deleted every entry of a queue;
//! - `group_state`: consumer-group state (leases, acks, consumers, dead-letter origins)
//!   under keys the Raft layer builds: an ordered key-value space, nothing more;
//! - `produce_dedup`: the first write of each idempotency key ([`DedupHit`]);
//! - `timers`: scheduled messages not yet due ([`Timer`]) and pins of log entries that
//!   entries out of log order still need;
//! - `transactions`: transactional produce entries and when each open one is checked back.
//!
//! All writes of one applied Raft batch go in one [`IndexBatch`] (one RocksDB `WriteBatch`)
//! together with `last_applied`, so state and progress commit atomically. `atomic_flush` is
//! on, so even with the WAL off (state re-derivable from the log) a crash never persists
//! one column family's part of a batch without the others'.
//!
//! Must never: hold a message body (bodies live only in the CommitLog), or decide
//! durability itself ([`Durability`] is the caller's choice per write).

mod dedup;
mod keys;
mod timers;
mod topics;
mod txns;

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteOptions,
};

use crate::error::{Result, StorageError, malformed};
pub use dedup::{DedupHit, MAX_IDEMPOTENCY_KEY_LEN};
use keys::{
    be_u32, be_u64, cq_key, key_index_prefix, le_u32, le_u64, offset_key, offset_prefix,
    queue_prefix, time_key, topic_prefix,
};
pub use timers::Timer;
use topics::{IdChanges, TopicIds};
pub use topics::{SpreadPart, TopicMeta};

/// A raw key-value pair from a RocksDB iterator.
type RawKv = (Box<[u8]>, Box<[u8]>);

const CF_CONSUME_QUEUE: &str = "consume_queue";
const CF_KEY_INDEX: &str = "key_index";
const CF_TIME_INDEX: &str = "time_index";
const CF_OFFSETS: &str = "consumer_offsets";
const CF_TOPICS: &str = "topics";
const CF_META: &str = "sm_meta";
const CF_QUEUE_STATE: &str = "queue_state";

/// The column families keyed by topic id first, which deleting a topic clears.
const TOPIC_CFS: [&str; 4] = [
    CF_CONSUME_QUEUE,
    CF_KEY_INDEX,
    CF_TIME_INDEX,
    CF_QUEUE_STATE,
];
const CF_GROUP_STATE: &str = "group_state";
const CF_DEDUP: &str = "produce_dedup";
const CF_TIMERS: &str = "timers";
const CF_TXNS: &str = "transactions";
const ALL_CFS: [&str; 11] = [
    CF_CONSUME_QUEUE,
    CF_KEY_INDEX,
    CF_TIME_INDEX,
    CF_OFFSETS,
    CF_TOPICS,
    CF_META,
    CF_QUEUE_STATE,
    CF_GROUP_STATE,
    CF_DEDUP,
    CF_TIMERS,
    CF_TXNS,
];

/// The smallest key greater than every key starting with `prefix` (for range deletes).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    keys::prefix_end(prefix)
}

/// Longest topic or group name the key encoding takes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest message key the key index takes.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;

/// One ConsumeQueue entry: where message `offset` of a queue lives in the CommitLog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CqEntry {
    /// The Raft log index of the batch holding the message.
    pub log_index: u64,
    /// The message's slot in that batch.
    pub slot: u32,
    /// Encoded size of the message in bytes.
    pub size: u32,
    /// [`crate::message::tag_hash`] of its tag.
    pub tag_hash: u32,
    /// When the leader stored it.
    pub store_ms: u64,
}

const CQ_VALUE_LEN: usize = 28;

impl CqEntry {
    fn encode(&self) -> [u8; CQ_VALUE_LEN] {
        let mut v = [0u8; CQ_VALUE_LEN];
        v[0..8].copy_from_slice(&self.log_index.to_le_bytes());
        v[8..12].copy_from_slice(&self.slot.to_le_bytes());
        v[12..16].copy_from_slice(&self.size.to_le_bytes());
        v[16..20].copy_from_slice(&self.tag_hash.to_le_bytes());
        v[20..28].copy_from_slice(&self.store_ms.to_le_bytes());
        v
    }

    fn decode(v: &[u8]) -> Result<Self> {
        if v.len() != CQ_VALUE_LEN {
            return Err(malformed(
                "consume queue entry",
                format!("{} bytes", v.len()),
            ));
        }
        Ok(CqEntry {
            log_index: le_u64(v, 0)?,
            slot: le_u32(v, 8)?,
            size: le_u32(v, 12)?,
            tag_hash: le_u32(v, 16)?,
            store_ms: le_u64(v, 20)?,
        })
    }
}

/// A message found through the key or time index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexHit {
    /// Raft log index of its batch.
    pub log_index: u64,
    /// Slot in the batch.
    pub slot: u32,
    /// Its queue.
    pub queue: u32,
    /// Its offset in the queue.
    pub offset: u64,
    /// Store time (time index only; 0 from the key index).
    pub store_ms: u64,
}

fn queue_offset_value(queue: u32, offset: u64) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&queue.to_le_bytes());
    v[4..].copy_from_slice(&offset.to_le_bytes());
    v
}

/// How long a topic remembers idempotency keys unless set (10 minutes).
pub const DEFAULT_DEDUP_WINDOW_MS: u64 = 600_000;

/// How durable a write must be before [`IndexStore::write`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// No WAL: the state can be rebuilt by re-applying the CommitLog (fastest).
    Rebuildable,
    /// WAL written, not fsynced: survives a process crash, not a power loss.
    Wal,
    /// WAL fsynced.
    Synced,
}

/// Settings of the IndexStore.
#[derive(Clone, Debug)]
pub struct IndexStoreOptions {
    /// Memtable size per column family, bytes.
    pub write_buffer_size: usize,
    /// Block cache shared by all column families, bytes.
    pub block_cache_size: usize,
}

impl Default for IndexStoreOptions {
    fn default() -> Self {
        IndexStoreOptions {
            write_buffer_size: 64 << 20,
            block_cache_size: 128 << 20,
        }
    }
}

/// The RocksDB-backed indexes. See the module docs.
#[derive(Debug)]
pub struct IndexStore {
    db: DB,
    path: PathBuf,
    topic_ids: RwLock<TopicIds>,
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(StorageError::InvalidArgument(format!(
            "{what} must be 1 to {MAX_NAME_LEN} bytes long"
        )));
    }
    Ok(())
}

impl IndexStore {
    /// Opens or creates the store at `path`.
    pub fn open(path: &Path, opts: &IndexStoreOptions) -> Result<Self> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_atomic_flush(true);
        db_opts.set_max_background_jobs(2);
        // One block cache for every column family; bloom filters make point reads of
        // absent keys (a message's group state before its first delivery) cheap.
        let cache = rocksdb::Cache::new_lru_cache(opts.block_cache_size);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        let cfs = ALL_CFS.iter().map(|name| {
            let mut o = Options::default();
            o.set_write_buffer_size(opts.write_buffer_size);
            o.set_block_based_table_factory(&table);
            if *name == CF_DEDUP {
                // Almost every lookup is of a key never seen (a first send): a memtable
                // bloom filter answers those without searching the skiplist.
                o.set_memtable_prefix_bloom_ratio(0.1);
                o.set_memtable_whole_key_filtering(true);
            }
            ColumnFamilyDescriptor::new(*name, o)
        });
        let db = DB::open_cf_descriptors(&db_opts, path, cfs)?;
        let mut store = IndexStore {
            db,
            path: path.to_path_buf(),
            topic_ids: RwLock::default(),
        };
        store.topic_ids = RwLock::new(store.load_topic_ids()?);
        Ok(store)
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created on open")
    }

    /// A new, empty batch.
    pub fn batch(&self) -> IndexBatch<'_> {
        IndexBatch {
            store: self,
            wb: WriteBatch::default(),
            ids: IdChanges::default(),
        }
    }

    /// Writes a batch atomically.
    pub fn write(&self, batch: IndexBatch<'_>, durability: Durability) -> Result<()> {
        let mut wo = WriteOptions::default();
        match durability {
            Durability::Rebuildable => wo.disable_wal(true),
            Durability::Wal => {}
            Durability::Synced => wo.set_sync(true),
        }
        self.db.write_opt(batch.wb, &wo)?;
        if !batch.ids.is_empty() {
            self.apply_id_changes(batch.ids);
        }
        Ok(())
    }

    /// Writes a consistent copy of the store to `dir` (hard links where possible), for
    /// snapshots. `dir` must not exist.
    pub fn checkpoint(&self, dir: &Path) -> Result<()> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    /// Iterates `cf` forward over the keys in `[lower, upper)` (RocksDB stops at the bounds,
    /// so what lies beyond, tombstones included, is never read).
    fn scan_range(
        &self,
        cf: &str,
        lower: Vec<u8>,
        upper: Vec<u8>,
    ) -> impl Iterator<Item = Result<RawKv>> + '_ {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(lower);
        ro.set_iterate_upper_bound(upper);
        self.db
            .iterator_cf_opt(self.cf(cf), ro, IteratorMode::Start)
            .map(|r| r.map_err(StorageError::from))
    }

    /// Iterates `cf` over keys starting with `prefix`, from `start` (or the prefix start).
    fn scan_prefix(
        &self,
        cf: &str,
        prefix: &[u8],
        start: Option<&[u8]>,
        reverse: bool,
    ) -> impl Iterator<Item = Result<RawKv>> + '_ {
        self.scan_prefix_in(cf, prefix, start, reverse, None)
    }

    /// [`Self::scan_prefix`] in `snapshot`'s state if given, else the latest.
    fn scan_prefix_in<'a>(
        &'a self,
        cf: &str,
        prefix: &[u8],
        start: Option<&[u8]>,
        reverse: bool,
        snapshot: Option<&rocksdb::Snapshot<'a>>,
    ) -> impl Iterator<Item = Result<RawKv>> + 'a {
        let mut ro = ReadOptions::default();
        if let Some(snapshot) = snapshot {
            ro.set_snapshot(snapshot);
        }
        ro.set_iterate_lower_bound(prefix.to_vec());
        ro.set_iterate_upper_bound(prefix_end(prefix));
        let upper = prefix_end(prefix);
        let mode = match (start, reverse) {
            (Some(s), false) => IteratorMode::From(s, Direction::Forward),
            (Some(s), true) => IteratorMode::From(s, Direction::Reverse),
            (None, false) => IteratorMode::Start,
            (None, true) => IteratorMode::End,
        };
        let it = self.db.iterator_cf_opt(self.cf(cf), ro, mode);
        let prefix = prefix.to_vec();
        it.map(|r| r.map_err(StorageError::from))
            .take_while(move |r| match r {
                Ok((k, _)) => k.starts_with(&prefix) && **k < *upper,
                Err(_) => true,
            })
    }

    /// The ConsumeQueue entry of one message.
    pub fn cq_get(&self, topic: &str, queue: u32, offset: u64) -> Result<Option<CqEntry>> {
        let Some(id) = self.topic_id(topic) else {
            return Ok(None);
        };
        self.db
            .get_pinned_cf(self.cf(CF_CONSUME_QUEUE), cq_key(id, queue, offset))?
            .map(|v| CqEntry::decode(&v))
            .transpose()
    }

    /// Up to `max` entries of a queue from `from` on, in offset order.
    pub fn cq_range(
        &self,
        topic: &str,
        queue: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, CqEntry)>> {
        let Some(id) = self.topic_id(topic) else {
            return Ok(Vec::new());
        };
        let prefix = queue_prefix(id, queue);
        let start = cq_key(id, queue, from);
        let mut out = Vec::with_capacity(max.min(1024));
        for kv in self
            .scan_prefix(CF_CONSUME_QUEUE, &prefix, Some(&start), false)
            .take(max)
        {
            let (k, v) = kv?;
            out.push((be_u64(&k, prefix.len())?, CqEntry::decode(&v)?));
        }
        Ok(out)
    }

    /// The first retained entry of a queue.
    pub fn cq_first(&self, topic: &str, queue: u32) -> Result<Option<(u64, CqEntry)>> {
        let Some(id) = self.topic_id(topic) else {
            return Ok(None);
        };
        let prefix = queue_prefix(id, queue);
        match self
            .scan_prefix(CF_CONSUME_QUEUE, &prefix, None, false)
            .next()
        {
            Some(kv) => {
                let (k, v) = kv?;
                Ok(Some((be_u64(&k, prefix.len())?, CqEntry::decode(&v)?)))
            }
            None => Ok(None),
        }
    }

    /// The next offset of a queue (one past its last message ever), if it ever held one.
    pub fn queue_next(&self, topic: &str, queue: u32) -> Result<Option<u64>> {
        let Some(id) = self.topic_id(topic) else {
            return Ok(None);
        };
        self.db
            .get_pinned_cf(self.cf(CF_QUEUE_STATE), queue_prefix(id, queue))?
            .map(|v| le_u64(&v, 0))
            .transpose()
    }

    /// `(min, max)` of a queue: its first retained offset and one past its last, or `None`
    /// if the queue never held a message. When retention removed every entry, `min == max`.
    pub fn cq_bounds(&self, topic: &str, queue: u32) -> Result<Option<(u64, u64)>> {
        let Some(id) = self.topic_id(topic) else {
            return Ok(None);
        };
        let prefix = queue_prefix(id, queue);
        // Its reads see one state: readers run while apply writes, and a batch landing
        // between them would make an empty queue that just got offset 0 look retained
        // past it, `(1, 1)`.
        let snap = self.db.snapshot();
        let end = |reverse| -> Result<Option<u64>> {
            match self
                .scan_prefix_in(CF_CONSUME_QUEUE, &prefix, None, reverse, Some(&snap))
                .next()
            {
                Some(kv) => Ok(Some(be_u64(&kv?.0, prefix.len())?)),
                None => Ok(None),
            }
        };
        let first = end(false)?;
        let next = snap
            .get_pinned_cf(self.cf(CF_QUEUE_STATE), prefix.as_slice())?
            .map(|v| le_u64(&v, 0))
            .transpose()?;
        let max = match (next, first) {
            (Some(n), _) => Some(n),
            // Never held a message (or deleted with its topic): no reverse scan, which
            // RocksDB makes slow over an empty or range-deleted stretch.
            (None, None) => None,
            // Entries without a recorded next offset: the last entry says.
            (None, Some(_)) => end(true)?.map(|last| last + 1),
        };
        Ok(max.map(|max| (first.unwrap_or(max), max)))
    }

    /// Up to `max` messages with `key`, newest first.
    pub fn key_lookup(&self, topic: &str, key: &str, max: usize) -> Result<Vec<IndexHit>> {
        let Some(id) = self.topic_id(topic) else {
            return Ok(Vec::new());
        };
        let prefix = key_index_prefix(id, key);
        let mut out = Vec::new();
        for kv in self
            .scan_prefix(CF_KEY_INDEX, &prefix, None, true)
            .take(max)
        {
            let (k, v) = kv?;
            out.push(IndexHit {
                log_index: be_u64(&k, prefix.len())?,
                slot: be_u32(&k, prefix.len() + 8)?,
                queue: le_u32(&v, 0)?,
                offset: le_u64(&v, 4)?,
                store_ms: 0,
            });
        }
        Ok(out)
    }

    /// Up to `max` messages stored in `[from_ms, to_ms)`, oldest first.
    pub fn time_range(
        &self,
        topic: &str,
        from_ms: u64,
        to_ms: u64,
        max: usize,
    ) -> Result<Vec<IndexHit>> {
        let Some(id) = self.topic_id(topic) else {
            return Ok(Vec::new());
        };
        let prefix = topic_prefix(id);
        let start = time_key(id, from_ms, 0, 0, 0);
        let mut out = Vec::new();
        for kv in self.scan_prefix(CF_TIME_INDEX, &prefix, Some(&start), false) {
            if out.len() >= max {
                break;
            }
            let (k, v) = kv?;
            let store_ms = be_u64(&k, prefix.len())?;
            if store_ms >= to_ms {
                break;
            }
            let queue = be_u32(&k, prefix.len() + 16)?;
            let first = be_u64(&k, prefix.len() + 20)?;
            let count = le_u32(&v, 0)? as usize;
            // Retention may have removed the run's first entries: take what remains.
            for (offset, e) in self.cq_range(topic, queue, first, count.min(max - out.len()))? {
                if offset >= first + count as u64 {
                    break;
                }
                out.push(IndexHit {
                    log_index: e.log_index,
                    slot: e.slot,
                    queue,
                    offset,
                    store_ms,
                });
            }
        }
        Ok(out)
    }

    /// A group's committed offset for one queue.
    pub fn offset_get(&self, group: &str, topic: &str, queue: u32) -> Result<Option<u64>> {
        self.db
            .get_pinned_cf(self.cf(CF_OFFSETS), offset_key(group, topic, queue))?
            .map(|v| le_u64(&v, 0))
            .transpose()
    }

    /// A group's committed offsets for every queue of a topic, by queue.
    pub fn offsets_of(&self, group: &str, topic: &str) -> Result<Vec<(u32, u64)>> {
        let prefix = offset_prefix(group, topic);
        let mut out = Vec::new();
        for kv in self.scan_prefix(CF_OFFSETS, &prefix, None, false) {
            let (k, v) = kv?;
            out.push((be_u32(&k, prefix.len())?, le_u64(&v, 0)?));
        }
        Ok(out)
    }

    /// A consumer-group state value.
    pub fn group_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_GROUP_STATE), key)?
            .map(|v| v.to_vec()))
    }

    /// Up to `max` consumer-group entries with keys starting with `prefix`, from `start`
    /// (inclusive; `None`: the prefix's first key), in key order.
    pub fn group_scan(
        &self,
        prefix: &[u8],
        start: Option<&[u8]>,
        max: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_prefix(CF_GROUP_STATE, prefix, start, false)
            .take(max)
            .map(|kv| kv.map(|(k, v)| (k.into_vec(), v.into_vec())))
            .collect()
    }

    /// A digest of everything the store holds, column family by column family, key by key,
    /// except the metadata keys named in `skip_meta`. Two stores with equal contents have
    /// equal digests within one process (what checks of replicas compare: the simulator
    /// compares replicas at equal applied indexes). It reads the whole store: not for a
    /// request path.
    pub fn digest(&self, skip_meta: &[&str]) -> Result<u64> {
        // CRC-32C of every length-prefixed key and value (hardware-accelerated, fast even
        // in test builds), with the number of entries in the high half.
        let (mut crc, mut entries) = (0u32, 0u64);
        for name in ALL_CFS {
            crc = crc32c::crc32c_append(crc, name.as_bytes());
            for kv in self.db.iterator_cf(self.cf(name), IteratorMode::Start) {
                let (k, v) = kv?;
                if name == CF_META && skip_meta.iter().any(|m| m.as_bytes() == &*k) {
                    continue;
                }
                for part in [&*k, &*v] {
                    crc = crc32c::crc32c_append(crc, &(part.len() as u32).to_le_bytes());
                    crc = crc32c::crc32c_append(crc, part);
                }
                entries += 1;
            }
        }
        Ok(entries << 32 | u64::from(crc))
    }

    /// A state-machine metadata value.
    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_META), key.as_bytes())?
            .map(|v| v.to_vec()))
    }

    /// Several metadata values, read from one state of the store (apply writes while
    /// readers run: values read apart could mix two states).
    pub fn meta_get_all<const N: usize>(&self, keys: [&str; N]) -> Result<[Option<Vec<u8>>; N]> {
        let snap = self.db.snapshot();
        let mut values = [const { None }; N];
        for (value, key) in values.iter_mut().zip(keys) {
            *value = snap
                .get_pinned_cf(self.cf(CF_META), key.as_bytes())?
                .map(|v| v.to_vec());
        }
        Ok(values)
    }
}

/// The writes of one applied batch, committed atomically by [`IndexStore::write`].
pub struct IndexBatch<'a> {
    store: &'a IndexStore,
    wb: WriteBatch,
    ids: IdChanges,
}

impl std::fmt::Debug for IndexBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IndexBatch {{ writes: {} }}", self.wb.len())
    }
}

impl IndexBatch<'_> {
    /// Number of writes so far.
    pub fn len(&self) -> usize {
        self.wb.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.wb.is_empty()
    }

    /// Adds a ConsumeQueue entry.
    pub fn put_cq(&mut self, topic: &str, queue: u32, offset: u64, e: &CqEntry) -> Result<()> {
        let id = self.existing_topic(topic)?;
        let cf = self.store.cf(CF_CONSUME_QUEUE);
        self.wb.put_cf(cf, cq_key(id, queue, offset), e.encode());
        Ok(())
    }

    /// Indexes a message by key.
    pub fn put_key(&mut self, topic: &str, key: &str, hit: &IndexHit) -> Result<()> {
        let id = self.existing_topic(topic)?;
        if key.len() > MAX_KEY_LEN {
            return Err(StorageError::InvalidArgument(format!(
                "key must be at most {MAX_KEY_LEN} bytes"
            )));
        }
        let mut k = key_index_prefix(id, key);
        k.extend_from_slice(&hit.log_index.to_be_bytes());
        k.extend_from_slice(&hit.slot.to_be_bytes());
        let cf = self.store.cf(CF_KEY_INDEX);
        self.wb
            .put_cf(cf, k, queue_offset_value(hit.queue, hit.offset));
        Ok(())
    }

    /// Indexes by store time the `count` messages of batch `log_index` that went to `queue`
    /// from offset `first` on (one entry for the run, not one per message).
    pub fn put_time_run(
        &mut self,
        topic: &str,
        store_ms: u64,
        log_index: u64,
        queue: u32,
        first: u64,
        count: u32,
    ) -> Result<()> {
        let id = self.existing_topic(topic)?;
        let cf = self.store.cf(CF_TIME_INDEX);
        self.wb.put_cf(
            cf,
            time_key(id, store_ms, log_index, queue, first),
            count.to_le_bytes(),
        );
        Ok(())
    }

    /// Sets a group's committed offset for a queue.
    pub fn put_offset(&mut self, group: &str, topic: &str, queue: u32, offset: u64) -> Result<()> {
        check_name("group", group)?;
        check_name("topic", topic)?;
        let cf = self.store.cf(CF_OFFSETS);
        self.wb
            .put_cf(cf, offset_key(group, topic, queue), offset.to_le_bytes());
        Ok(())
    }

    /// Forgets a group's committed offsets for a topic (queues `0..queues`).
    pub fn delete_offsets(&mut self, group: &str, topic: &str, queues: u32) -> Result<()> {
        check_name("group", group)?;
        check_name("topic", topic)?;
        let cf = self.store.cf(CF_OFFSETS);
        self.wb.delete_range_cf(
            cf,
            offset_key(group, topic, 0),
            offset_key(group, topic, queues),
        );
        Ok(())
    }

    /// Records a queue's next offset.
    pub fn put_queue_next(&mut self, topic: &str, queue: u32, next: u64) -> Result<()> {
        let id = self.existing_topic(topic)?;
        let cf = self.store.cf(CF_QUEUE_STATE);
        self.wb
            .put_cf(cf, queue_prefix(id, queue), next.to_le_bytes());
        Ok(())
    }

    /// Deletes a topic's time-index entries stored before `cutoff_ms` (retention).
    pub fn delete_time_before(&mut self, topic: &str, cutoff_ms: u64) -> Result<()> {
        check_name("topic", topic)?;
        let Some(id) = self.topic_id(topic) else {
            return Ok(());
        };
        let cf = self.store.cf(CF_TIME_INDEX);
        self.wb.delete_range_cf(
            cf,
            &topic_prefix(id)[..],
            &time_key(id, cutoff_ms, 0, 0, 0)[..],
        );
        Ok(())
    }

    /// Deletes a queue's ConsumeQueue entries below `offset` (retention).
    pub fn delete_cq_before(&mut self, topic: &str, queue: u32, offset: u64) -> Result<()> {
        check_name("topic", topic)?;
        let Some(id) = self.topic_id(topic) else {
            return Ok(());
        };
        let cf = self.store.cf(CF_CONSUME_QUEUE);
        self.wb
            .delete_range_cf(cf, cq_key(id, queue, 0), cq_key(id, queue, offset));
        Ok(())
    }

    /// Sets a consumer-group state value.
    pub fn put_group(&mut self, key: &[u8], value: &[u8]) {
        let cf = self.store.cf(CF_GROUP_STATE);
        self.wb.put_cf(cf, key, value);
    }

    /// Deletes a consumer-group state value.
    pub fn delete_group(&mut self, key: &[u8]) {
        let cf = self.store.cf(CF_GROUP_STATE);
        self.wb.delete_cf(cf, key);
    }

    /// Deletes consumer-group state keys in `[from, to)`.
    pub fn delete_group_range(&mut self, from: &[u8], to: &[u8]) {
        let cf = self.store.cf(CF_GROUP_STATE);
        self.wb.delete_range_cf(cf, from, to);
    }

    /// Sets a state-machine metadata value.
    pub fn put_meta(&mut self, key: &str, value: &[u8]) {
        let cf = self.store.cf(CF_META);
        self.wb.put_cf(cf, key.as_bytes(), value);
    }

    /// Deletes a state-machine metadata value.
    pub fn delete_meta(&mut self, key: &str) {
        let cf = self.store.cf(CF_META);
        self.wb.delete_cf(cf, key.as_bytes());
    }
}
