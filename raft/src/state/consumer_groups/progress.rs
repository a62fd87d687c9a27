//! In-flight state of consumer groups, held in memory on every replica: per progress key,
//! topic and queue, the floor and the state of every message at or above it that was ever
//! handed out (leased, released, acked above the floor, dead). Apply reads and changes only
//! this; the leader plans receives from it. RocksDB keeps it as *checkpoint records* of up
//! to [`CHUNK`] consecutive offsets (`Q gkey topic queue chunk`), each rewritten once per
//! command that changed it, so a receive or an ack costs a few record writes however many
//! messages it covers (after RocketMQ's pop checkpoints). A queue's state is loaded from
//! them on first use after a start or a snapshot install. Lookups by name allocate nothing
//! (maps nested by progress key, topic and queue), as they run once per message.
//!
//! Must never: change a message's state or a floor without marking what must be written
//! ([`Progress::flush`] writes it with the command), or keep a state below its floor.

use std::collections::{BTreeMap, BTreeSet};

use raftmq_storage::{IndexBatch, IndexStore};

use super::view::{FloorKey, GroupView};
use super::{MsgState, enc, keys};
use crate::state::FastMap;

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
    /// Checkpoint records the command being applied changed.
    dirty_chunks: BTreeSet<u64>,
    /// The command being applied moved (or first set) the floor.
    dirty_floor: bool,
    /// Listed in [`Progress::dirty`].
    listed: bool,
}

impl QueueState {
    /// A queue's progress as stored.
    pub fn stored(floor: u64, states: BTreeMap<u64, MsgState>) -> Self {
        QueueState {
            floor,
            states,
            ..QueueState::default()
        }
    }
}

/// progress key → topic → queue → progress.
type Queues = FastMap<String, FastMap<String, FastMap<u32, QueueState>>>;

/// The in-memory progress of every queue touched since the start, and which of them the
/// command being applied changed.
#[derive(Debug, Default)]
pub struct Progress {
    queues: Queues,
    dirty: Vec<FloorKey>,
}

fn lookup<'a>(
    queues: &'a mut Queues,
    gk: &str,
    topic: &str,
    queue: u32,
) -> Option<&'a mut QueueState> {
    queues.get_mut(gk)?.get_mut(topic)?.get_mut(&queue)
}

/// Puts a queue's progress in place of whatever was there.
fn insert(queues: &mut Queues, gk: &str, topic: &str, queue: u32, q: QueueState) {
    queues
        .entry(gk.to_owned())
        .or_default()
        .entry(topic.to_owned())
        .or_default()
        .insert(queue, q);
}

/// A queue's progress, loaded from the store on first use.
fn load<'a>(
    queues: &'a mut Queues,
    store: &IndexStore,
    gk: &str,
    topic: &str,
    queue: u32,
) -> R<&'a mut QueueState> {
    if lookup(queues, gk, topic, queue).is_none() {
        let loaded = GroupView::applied(store).queue_state(gk, topic, queue)?;
        insert(queues, gk, topic, queue, loaded);
    }
    Ok(lookup(queues, gk, topic, queue).expect("inserted above"))
}

/// Lists a queue as changed by the command (once).
fn list(dirty: &mut Vec<FloorKey>, q: &mut QueueState, gk: &str, topic: &str, queue: u32) {
    if !q.listed {
        q.listed = true;
        dirty.push((gk.to_owned(), topic.to_owned(), queue));
    }
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
        load(&mut self.queues, store, gk, topic, queue)
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
        let q = load(&mut self.queues, store, gk, topic, queue)?;
        q.states.insert(offset, st);
        q.dirty_chunks.insert(offset / CHUNK);
        list(&mut self.dirty, q, gk, topic, queue);
        Ok(())
    }

    /// Moves a floor to `to`, dropping the states below it, then on over what is done.
    pub fn set_floor(
        &mut self,
        store: &IndexStore,
        gk: &str,
        topic: &str,
        queue: u32,
        to: u64,
    ) -> R<()> {
        let q = load(&mut self.queues, store, gk, topic, queue)?;
        let below: Vec<u64> = q.states.range(..to).map(|(o, _)| *o).collect();
        for o in below {
            q.states.remove(&o);
            q.dirty_chunks.insert(o / CHUNK);
        }
        q.floor = to;
        while q.states.get(&q.floor).is_some_and(MsgState::done) {
            let f = q.floor;
            q.states.remove(&f);
            q.dirty_chunks.insert(f / CHUNK);
            q.floor += 1;
        }
        q.dirty_floor = true;
        list(&mut self.dirty, q, gk, topic, queue);
        Ok(())
    }

    /// Moves a queue's floor over what is done and writes it (a group's floor is stored
    /// from its first use, so it no longer follows the oldest retained message).
    pub fn advance(&mut self, store: &IndexStore, gk: &str, topic: &str, queue: u32) -> R<()> {
        let floor = load(&mut self.queues, store, gk, topic, queue)?.floor;
        self.set_floor(store, gk, topic, queue, floor)
    }

    /// Forgets every state of a queue and deletes its checkpoint records; with `floor`,
    /// sets it there (a reset), without, forgets the queue (its topic was deleted; the
    /// caller deletes its offsets).
    pub fn clear(
        &mut self,
        batch: &mut IndexBatch<'_>,
        gk: &str,
        topic: &str,
        queue: u32,
        floor: Option<u64>,
    ) {
        let prefix = keys::chunks(gk, topic, queue);
        batch.delete_group_range(&prefix, &raftmq_storage::prefix_end(&prefix));
        let listed = lookup(&mut self.queues, gk, topic, queue).is_some_and(|q| q.listed);
        match floor {
            Some(f) => {
                let mut q = QueueState::stored(f, BTreeMap::new());
                q.dirty_floor = true;
                q.listed = listed;
                list(&mut self.dirty, &mut q, gk, topic, queue);
                insert(&mut self.queues, gk, topic, queue, q);
            }
            None => {
                if let Some(topics) = self.queues.get_mut(gk)
                    && let Some(queues) = topics.get_mut(topic)
                {
                    queues.remove(&queue);
                }
            }
        }
    }

    /// Retention moved the first retained offset of `topic`'s `queue` to `first`. A
    /// progress held in memory whose floor was never stored took its floor from the first
    /// retained offset when it was loaded (by a leader's plan, or a command that changed
    /// nothing there): it follows now, as loading it again would, so that when it was
    /// loaded never shows in what is later written (replicas load at different times).
    /// Nothing is written: stored floors are raised by their groups
    /// ([`Progress::set_floor`]), which runs first.
    pub fn follow_retention(&mut self, topic: &str, queue: u32, first: u64) {
        for topics in self.queues.values_mut() {
            if let Some(q) = topics.get_mut(topic).and_then(|qs| qs.get_mut(&queue))
                && q.floor < first
            {
                q.floor = first;
                q.states.retain(|o, _| *o >= first);
            }
        }
    }

    /// Forgets every queue of `topic` (it was deleted), including progress loaded by a plan
    /// for a group that never leased there: a topic created again under the name must not
    /// inherit a floor.
    pub fn forget_topic(&mut self, topic: &str) {
        for topics in self.queues.values_mut() {
            topics.remove(topic);
        }
    }

    /// Writes what the command changed: each changed checkpoint record once (deleted when
    /// nothing at or above the floor is left in it) and each moved floor.
    pub fn flush(&mut self, batch: &mut IndexBatch<'_>) -> R<()> {
        for (gk, topic, queue) in std::mem::take(&mut self.dirty) {
            // A queue forgotten since (its topic deleted) has nothing left to write.
            let Some(q) = lookup(&mut self.queues, &gk, &topic, queue) else {
                continue;
            };
            q.listed = false;
            for chunk in std::mem::take(&mut q.dirty_chunks) {
                let record = keys::chunk(&gk, &topic, queue, chunk);
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
            if std::mem::take(&mut q.dirty_floor) {
                batch.put_offset(&gk, &topic, queue, q.floor)?;
            }
        }
        Ok(())
    }
}
