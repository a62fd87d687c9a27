//! In-flight state of consumer groups, held in memory on every replica: per progress key,
//! topic and queue, the floor and the state of every message at or above it that was ever
//! handed out (leased, released, acked above the floor, dead). Apply reads and changes only
//! this; the leader plans receives from it. RocksDB keeps it as *checkpoint records* of up
//! to [`CHUNK`] consecutive offsets (`Q gkey topic queue chunk`), each rewritten once per
//! command that changed it, so a receive or an ack costs a few record writes however many
//! messages it covers (after RocketMQ's pop checkpoints). A queue's state is loaded from
//! them on first use after a start or a snapshot install.
//!
//! Must never: change a message's state or a floor without marking what must be written
//! ([`Progress::flush`] writes it with the command), or keep a state below its floor.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use raftmq_storage::{IndexBatch, IndexStore};

use super::view::{FloorKey, GroupView};
use super::{MsgState, enc, keys};

type R<T> = raftmq_storage::Result<T>;

/// Offsets per checkpoint record.
pub const CHUNK: u64 = 256;

/// One queue's progress for one progress key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueState {
    /// Every offset below it is acked or dead.
    pub floor: u64,
    /// The states of offsets at or above the floor that were ever handed out; an offset
    /// without one was never delivered.
    pub states: BTreeMap<u64, MsgState>,
}

/// The in-memory progress of every queue touched since the start, and what the command
/// being applied changed in it.
#[derive(Debug, Default)]
pub struct Progress {
    queues: HashMap<FloorKey, QueueState>,
    dirty_chunks: BTreeSet<(FloorKey, u64)>,
    dirty_floors: BTreeSet<FloorKey>,
}

fn key(gk: &str, topic: &str, queue: u32) -> FloorKey {
    (gk.to_owned(), topic.to_owned(), queue)
}

impl Progress {
    /// A queue's progress, loaded from the store on first use.
    pub fn queue(
        &mut self,
        store: &IndexStore,
        gk: &str,
        topic: &str,
        queue: u32,
    ) -> R<&mut QueueState> {
        let k = key(gk, topic, queue);
        if !self.queues.contains_key(&k) {
            let loaded = GroupView::applied(store).queue_state(gk, topic, queue)?;
            self.queues.insert(k.clone(), loaded);
        }
        Ok(self.queues.get_mut(&k).expect("inserted above"))
    }

    /// Sets a message's state.
    pub fn set(
        &mut self,
        store: &IndexStore,
        gk: &str,
        topic: &str,
        queue: u32,
        offset: u64,
        st: MsgState,
    ) -> R<()> {
        self.queue(store, gk, topic, queue)?
            .states
            .insert(offset, st);
        self.dirty_chunks
            .insert((key(gk, topic, queue), offset / CHUNK));
        Ok(())
    }

    /// Moves a floor to `to` (up, or down by a reset), dropping the states below it, then
    /// on over what is done.
    pub fn set_floor(
        &mut self,
        store: &IndexStore,
        gk: &str,
        topic: &str,
        queue: u32,
        to: u64,
    ) -> R<()> {
        let k = key(gk, topic, queue);
        let q = self.queue(store, gk, topic, queue)?;
        let below: Vec<u64> = q.states.range(..to).map(|(o, _)| *o).collect();
        for o in &below {
            q.states.remove(o);
        }
        q.floor = to;
        let mut passed = below;
        while q.states.get(&q.floor).is_some_and(MsgState::done) {
            passed.push(q.floor);
            let f = q.floor;
            q.states.remove(&f);
            q.floor += 1;
        }
        for o in passed {
            self.dirty_chunks.insert((k.clone(), o / CHUNK));
        }
        self.dirty_floors.insert(k);
        Ok(())
    }

    /// Moves a queue's floor over what is done and writes it (a group's floor is stored
    /// from its first use, so it no longer follows the oldest retained message).
    pub fn advance(&mut self, store: &IndexStore, gk: &str, topic: &str, queue: u32) -> R<()> {
        let floor = self.queue(store, gk, topic, queue)?.floor;
        self.set_floor(store, gk, topic, queue, floor)
    }

    /// Forgets every state of a queue and sets its floor (a reset, or a deleted topic
    /// when `floor` is `None`: the queue's records and offsets are deleted by the caller).
    pub fn clear(
        &mut self,
        batch: &mut IndexBatch<'_>,
        gk: &str,
        topic: &str,
        queue: u32,
        floor: Option<u64>,
    ) {
        let k = key(gk, topic, queue);
        let prefix = keys::chunks(gk, topic, queue);
        batch.delete_group_range(&prefix, &raftmq_storage::prefix_end(&prefix));
        self.dirty_chunks.retain(|(dk, _)| *dk != k);
        match floor {
            Some(f) => {
                self.queues.insert(
                    k.clone(),
                    QueueState {
                        floor: f,
                        states: BTreeMap::new(),
                    },
                );
                self.dirty_floors.insert(k);
            }
            None => {
                self.queues.remove(&k);
                self.dirty_floors.remove(&k);
            }
        }
    }

    /// Forgets every queue of `topic` (it was deleted), including progress loaded by a plan
    /// for a group that never leased there: a topic created again under the name must not
    /// inherit a floor.
    pub fn forget_topic(&mut self, topic: &str) {
        self.queues.retain(|k, _| k.1 != topic);
        self.dirty_chunks.retain(|(k, _)| k.1 != topic);
        self.dirty_floors.retain(|k| k.1 != topic);
    }

    /// Writes what the command changed: each changed checkpoint record once (deleted when
    /// nothing at or above the floor is left in it) and each moved floor.
    pub fn flush(&mut self, batch: &mut IndexBatch<'_>) -> R<()> {
        for (k, chunk) in std::mem::take(&mut self.dirty_chunks) {
            let record = keys::chunk(&k.0, &k.1, k.2, chunk);
            let Some(q) = self.queues.get(&k) else {
                batch.delete_group(&record);
                continue;
            };
            // A floor past the whole record leaves nothing in it.
            let (from, end) = ((chunk * CHUNK).max(q.floor), (chunk + 1) * CHUNK);
            let states: Vec<(u64, &MsgState)> = if from < end {
                q.states.range(from..end).map(|(o, s)| (*o, s)).collect()
            } else {
                Vec::new()
            };
            if states.is_empty() {
                batch.delete_group(&record);
            } else {
                batch.put_group(&record, &enc(&states));
            }
        }
        for k in std::mem::take(&mut self.dirty_floors) {
            if let Some(q) = self.queues.get(&k) {
                batch.put_offset(&k.0, &k.1, k.2, q.floor)?;
            }
        }
        Ok(())
    }
}
