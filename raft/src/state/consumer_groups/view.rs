//! [`GroupView`]: the one way consumer-group records are read, from RocksDB plus, while
//! applying, the applier's overlay of records written through it (the batch being built,
//! and earlier batches kept as a write-through cache). Message states and floors are read
//! by apply from [`super::progress::Progress`], which loads a queue through
//! [`GroupView::queue_state`]; the group views read them here from the applied state.
//!
//! Apply reads with the overlay, so an entry sees the writes of earlier entries in the same
//! batch; group views read the applied state without one.
//!
//! Must never: write anything.

use std::collections::{BTreeMap, HashMap};

use raftmq_storage::IndexStore;

use super::progress::QueueState;
use super::{GroupMeta, MsgState, RetrySettings, dec, keys};

type R<T> = raftmq_storage::Result<T>;

/// A floor's key: (progress key, topic, queue).
pub(crate) type FloorKey = (String, String, u32);

/// Consumer-group records written through the applier (`None`: deleted).
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    records: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Overlay {
    /// Records a write (`None`: a delete).
    pub(super) fn record(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.records.insert(key, value);
    }

    /// The cached records under `prefix`.
    pub(super) fn keys_under(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        self.records
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Drops the cache when it has grown past `max` entries (RocksDB has it all).
    pub(super) fn trim(&mut self, max: usize) {
        if self.records.len() > max {
            self.records.clear();
        }
    }
}

/// Reads consumer-group state.
#[derive(Clone, Copy)]
pub struct GroupView<'a> {
    store: &'a IndexStore,
    overlay: Option<&'a Overlay>,
}

impl<'a> GroupView<'a> {
    /// The applied state in `store`.
    pub fn applied(store: &'a IndexStore) -> Self {
        GroupView {
            store,
            overlay: None,
        }
    }

    pub(super) fn with_overlay(store: &'a IndexStore, overlay: &'a Overlay) -> Self {
        GroupView {
            store,
            overlay: Some(overlay),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &'a IndexStore {
        self.store
    }

    /// One record.
    pub fn get(&self, key: &[u8]) -> R<Option<Vec<u8>>> {
        match self.overlay.and_then(|o| o.records.get(key)) {
            Some(v) => Ok(v.clone()),
            None => self.store.group_get(key),
        }
    }

    /// Every record under `prefix` from `from` on (or from the prefix's start).
    pub fn scan(&self, prefix: &[u8], from: Option<&[u8]>) -> R<BTreeMap<Vec<u8>, Vec<u8>>> {
        let mut out: BTreeMap<Vec<u8>, Vec<u8>> = self
            .store
            .group_scan(prefix, from, usize::MAX)?
            .into_iter()
            .collect();
        if let Some(o) = self.overlay {
            for (k, v) in &o.records {
                if !k.starts_with(prefix) || from.is_some_and(|f| k.as_slice() < f) {
                    continue;
                }
                match v {
                    Some(v) => out.insert(k.clone(), v.clone()),
                    None => out.remove(k),
                };
            }
        }
        Ok(out)
    }

    /// A group's settings, if it was ever used.
    pub fn meta(&self, group: &str) -> R<Option<GroupMeta>> {
        Ok(self.settings(group)?.0)
    }

    /// A group's settings (if it was ever used, with `PUT /v1/groups/{group}`'s
    /// `max_attempts` over its own) and what that `PUT` set: one read of each record.
    pub fn settings(&self, group: &str) -> R<(Option<GroupMeta>, RetrySettings)> {
        let set = self.retry_settings(group)?;
        let meta = self
            .get(&keys::meta(group))?
            .and_then(|b| dec::<GroupMeta>(&b))
            .map(|mut meta| {
                if let Some(n) = set.max_attempts {
                    meta.max_attempts = n;
                }
                meta
            });
        Ok((meta, set))
    }

    /// What `PUT /v1/groups/{group}` set for a group (nothing: the defaults).
    pub fn retry_settings(&self, group: &str) -> R<RetrySettings> {
        Ok(self
            .get(&keys::retry(group))?
            .and_then(|b| dec(&b))
            .unwrap_or_default())
    }

    /// A queue's progress for a progress key as stored: its floor and the states in its
    /// checkpoint records at or above it.
    pub fn queue_state(&self, gk: &str, topic: &str, queue: u32) -> R<QueueState> {
        let floor = self.floor(gk, topic, queue)?;
        let mut states = BTreeMap::new();
        for (_, v) in self
            .store
            .group_scan(&keys::chunks(gk, topic, queue), None, usize::MAX)?
        {
            let Some(chunk) = dec::<Vec<(u64, MsgState)>>(&v) else {
                continue;
            };
            states.extend(chunk.into_iter().filter(|(o, _)| *o >= floor));
        }
        Ok(QueueState::stored(floor, states))
    }

    /// The stored floor of a queue for a progress key: below it everything is acked or
    /// dead.
    pub fn floor(&self, gk: &str, topic: &str, queue: u32) -> R<u64> {
        if let Some(f) = self.store.offset_get(gk, topic, queue)? {
            return Ok(f);
        }
        // A new group starts at the oldest retained message.
        Ok(self
            .store
            .cq_bounds(topic, queue)?
            .map_or(0, |(min, _)| min))
    }
}
