//! [`ConsumerGroups`]: the consumer-group part of the applied state, owned by the
//! [`crate::state::Applier`]. It keeps the in-flight state of every queue in memory
//! ([`Progress`]: floors and message states, written as checkpoint records once per
//! command) and an overlay of the other records written through it (the batch being built
//! sees them; once written they stay as a write-through cache).
//!
//! Its operations live beside it: [`super::lease`], [`super::ack`], [`super::admin`], and
//! the leader's [`super::plan`], which reads the same memory.
//!
//! Must never: write a record without putting it in the overlay (later entries of the batch
//! would not see it), or end a command without [`ConsumerGroups::flush`].

use std::sync::Arc;

use raftmq_storage::{IndexBatch, IndexStore};

use super::progress::{Progress, QueueState};
use super::view::{GroupView, Overlay};
use super::{ConsumerGroupMode, GroupMeta, MsgState, enc, keys};

pub(super) type R<T> = raftmq_storage::Result<T>;

/// Consumer-group state and operations, for the applier.
#[derive(Debug)]
pub struct ConsumerGroups {
    store: Arc<IndexStore>,
    overlay: Overlay,
    progress: Progress,
}

impl ConsumerGroups {
    /// Consumer groups over `store`, nothing loaded yet.
    pub fn new(store: Arc<IndexStore>) -> Self {
        ConsumerGroups {
            store,
            overlay: Overlay::default(),
            progress: Progress::default(),
        }
    }

    /// Reads records through the overlay.
    pub fn view(&self) -> GroupView<'_> {
        GroupView::with_overlay(&self.store, &self.overlay)
    }

    pub(super) fn store(&self) -> &IndexStore {
        &self.store
    }

    /// The store, to read beside the in-memory progress.
    pub(super) fn shared_store(&self) -> Arc<IndexStore> {
        self.store.clone()
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
        batch.delete_group_range(prefix, &raftmq_storage::prefix_end(prefix));
        for k in self.overlay.keys_under(prefix) {
            self.overlay.record(k, None);
        }
        for (k, _) in self.store.group_scan(prefix, None, usize::MAX)? {
            self.overlay.record(k, None);
        }
        Ok(())
    }

    /// A queue's progress (floor and message states), loaded on first use.
    pub(super) fn queue(&mut self, gk: &str, topic: &str, queue: u32) -> R<&mut QueueState> {
        self.progress.queue(&self.store, gk, topic, queue)
    }

    /// A queue's floor.
    pub(super) fn floor(&mut self, gk: &str, topic: &str, queue: u32) -> R<u64> {
        Ok(self.queue(gk, topic, queue)?.floor)
    }

    /// One message's state, if it was ever handed out (and is at or above the floor).
    pub(super) fn state(
        &mut self,
        gk: &str,
        topic: &str,
        queue: u32,
        offset: u64,
    ) -> R<Option<MsgState>> {
        Ok(self.queue(gk, topic, queue)?.states.get(&offset).cloned())
    }

    /// Sets one message's state.
    pub(super) fn set_state(
        &mut self,
        gk: &str,
        topic: &str,
        queue: u32,
        offset: u64,
        st: MsgState,
    ) -> R<()> {
        self.progress.set(&self.store, gk, topic, queue, offset, st)
    }

    /// Moves a floor up to `to`, never down, dropping the states it passes and then moving
    /// on over what is done.
    pub(super) fn raise_floor(&mut self, gk: &str, topic: &str, queue: u32, to: u64) -> R<()> {
        if to <= self.floor(gk, topic, queue)? {
            return Ok(());
        }
        self.progress.set_floor(&self.store, gk, topic, queue, to)
    }

    /// Unstored progress in memory follows retention ([`super::progress::Progress::follow_retention`]).
    pub(super) fn follow_retention(&mut self, topic: &str, queue: u32, first: u64) {
        self.progress.follow_retention(topic, queue, first);
    }

    /// Moves the floor over offsets that are done, and stores it.
    pub(super) fn advance_floor(&mut self, gk: &str, topic: &str, queue: u32) -> R<()> {
        self.progress.advance(&self.store, gk, topic, queue)
    }

    /// Forgets a queue's message states; with `floor`, sets it there (a reset), without,
    /// forgets the queue (its topic was deleted; the caller deletes its offsets).
    pub(super) fn clear_queue(
        &mut self,
        batch: &mut IndexBatch<'_>,
        gk: &str,
        topic: &str,
        queue: u32,
        floor: Option<u64>,
    ) {
        self.progress.clear(batch, gk, topic, queue, floor);
    }

    /// Forgets the in-memory progress of every queue of a deleted topic.
    pub(super) fn forget_progress(&mut self, topic: &str) {
        self.progress.forget_topic(topic);
    }

    /// Writes what the command changed in the queues' progress (checkpoint records and
    /// floors, once each).
    pub(super) fn flush(&mut self, batch: &mut IndexBatch<'_>) -> R<()> {
        self.progress.flush(batch)
    }

    /// Records that the group has touched `topic` (so deleting the topic forgets it).
    pub(super) fn touch_topic(&mut self, batch: &mut IndexBatch<'_>, group: &str, topic: &str) {
        self.put(batch, keys::topic(group, topic), Vec::new());
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
        // With what `PUT /v1/groups/{group}` set before the group's first use.
        Ok(self.view().meta(group)?.unwrap_or(meta))
    }
}
