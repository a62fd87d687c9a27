//! [`ConsumerGroups`]: the consumer-group part of the applied state, owned by the
//! [`crate::state::Applier`]. It keeps an overlay of the records and floors written through
//! it (the batch being built sees them; once written they stay as a write-through cache, so
//! hot leases and acks rarely reach RocksDB) and the floors the current command moved.
//!
//! Its operations live beside it: [`super::lease`], [`super::ack`], [`super::admin`].
//!
//! Must never: write a record without putting it in the overlay (later entries of the batch
//! would not see it), or keep `S` records below a floor it moved.

use std::sync::Arc;

use raftmq_storage::{IndexBatch, IndexStore};

use super::view::{FloorKey, GroupView, Overlay};
use super::{ConsumerGroupMode, GroupMeta, enc, keys};

pub(super) type R<T> = raftmq_storage::Result<T>;

/// Consumer-group state and operations, for the applier.
#[derive(Debug)]
pub struct ConsumerGroups {
    store: Arc<IndexStore>,
    overlay: Overlay,
    /// Floors moved by the command being applied, written once when it ends.
    dirty_floors: Vec<FloorKey>,
}

impl ConsumerGroups {
    /// Consumer groups over `store`, nothing cached yet.
    pub fn new(store: Arc<IndexStore>) -> Self {
        ConsumerGroups {
            store,
            overlay: Overlay::default(),
            dirty_floors: Vec::new(),
        }
    }

    /// Reads through the overlay.
    pub fn view(&self) -> GroupView<'_> {
        GroupView::with_overlay(&self.store, &self.overlay)
    }

    pub(super) fn store(&self) -> &IndexStore {
        &self.store
    }

    /// Call after writing a batch. What it wrote is in RocksDB now, so the overlay stays as
    /// a cache of it, dropped only when it grows large.
    pub fn finish_batch(&mut self) {
        const MAX_CACHED: usize = 200_000;
        self.overlay.trim(MAX_CACHED);
    }

    pub(super) fn put(&mut self, batch: &mut IndexBatch<'_>, key: Vec<u8>, value: Vec<u8>) {
        batch.put_group(&key, &value);
        self.overlay.record(key, Some(value));
    }

    pub(super) fn delete(&mut self, batch: &mut IndexBatch<'_>, key: Vec<u8>) {
        batch.delete_group(&key);
        self.overlay.record(key, None);
    }

    /// Deletes every record under `prefix`, in the batch and as seen through the overlay.
    pub(super) fn delete_prefix(&mut self, batch: &mut IndexBatch<'_>, prefix: &[u8]) -> R<()> {
        self.delete_below(batch, prefix, &raftmq_storage::prefix_end(prefix))
    }

    /// Deletes the records under `prefix` whose keys sort before `end`.
    fn delete_below(&mut self, batch: &mut IndexBatch<'_>, prefix: &[u8], end: &[u8]) -> R<()> {
        batch.delete_group_range(prefix, end);
        for k in self.overlay.keys_under(prefix) {
            if k.as_slice() < end {
                self.overlay.record(k, None);
            }
        }
        for (k, _) in self.store.group_scan(prefix, None, usize::MAX)? {
            if k.as_slice() >= end {
                break;
            }
            self.overlay.record(k, None);
        }
        Ok(())
    }

    /// Moves a floor up to `to`, never down, dropping the message records it passes and
    /// then moving on over what is done; [`Self::flush_floors`] writes it.
    pub(super) fn raise_floor(
        &mut self,
        batch: &mut IndexBatch<'_>,
        gk: &str,
        topic: &str,
        queue: u32,
        to: u64,
    ) -> R<()> {
        if to <= self.view().floor(gk, topic, queue)? {
            return Ok(());
        }
        let prefix = keys::queue_states(gk, topic, queue);
        self.delete_below(batch, &prefix, &keys::state(gk, topic, queue, to))?;
        self.set_floor(gk, topic, queue, to);
        self.advance_floor(batch, gk, topic, queue)
    }

    /// Records that the group has touched `topic` (so deleting the topic forgets it).
    pub(super) fn touch_topic(&mut self, batch: &mut IndexBatch<'_>, group: &str, topic: &str) {
        self.put(batch, keys::topic(group, topic), Vec::new());
    }

    /// Moves a floor; [`Self::flush_floors`] writes it when the command ends.
    pub(super) fn set_floor(&mut self, gk: &str, topic: &str, queue: u32, floor: u64) {
        let key = (gk.to_owned(), topic.to_owned(), queue);
        if !self.dirty_floors.contains(&key) {
            self.dirty_floors.push(key.clone());
        }
        self.overlay.set_floor(key, floor);
    }

    /// Forgets a floor (its offsets were deleted with a topic).
    pub(super) fn drop_floor(&mut self, gk: &str, topic: &str, queue: u32) {
        self.overlay
            .drop_floor(&(gk.to_owned(), topic.to_owned(), queue));
    }

    /// Writes the floors the current command moved (once each, however often they moved).
    pub(super) fn flush_floors(&mut self, batch: &mut IndexBatch<'_>) -> R<()> {
        for key in std::mem::take(&mut self.dirty_floors) {
            if let Some(floor) = self.overlay.floor(&key) {
                batch.put_offset(&key.0, &key.1, key.2, floor)?;
            }
        }
        Ok(())
    }

    /// Moves the floor over offsets that are done, dropping their records.
    pub(super) fn advance_floor(
        &mut self,
        batch: &mut IndexBatch<'_>,
        gk: &str,
        topic: &str,
        queue: u32,
    ) -> R<()> {
        let start = self.view().floor(gk, topic, queue)?;
        let mut floor = start;
        while let Some(st) = self.view().state(gk, topic, queue, floor)? {
            if !st.done() {
                break;
            }
            self.delete(batch, keys::state(gk, topic, queue, floor));
            floor += 1;
        }
        if floor != start || self.store.offset_get(gk, topic, queue)?.is_none() {
            self.set_floor(gk, topic, queue, floor);
        }
        Ok(())
    }

    /// The group's settings, created with `mode` (clustering if `None`) on first use.
    pub(super) fn meta_or_create(
        &mut self,
        batch: &mut IndexBatch<'_>,
        group: &str,
        mode: Option<ConsumerGroupMode>,
    ) -> R<GroupMeta> {
        if let Some(m) = self.view().meta(group)? {
            return Ok(m);
        }
        let meta = GroupMeta::new(mode.unwrap_or(ConsumerGroupMode::Clustering));
        self.put(batch, keys::meta(group), enc(&meta));
        Ok(meta)
    }
}
