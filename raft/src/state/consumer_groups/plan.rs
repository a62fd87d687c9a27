//! The leader's side of consumer-group writes: what a receive proposes to lease, skip or
//! dead-letter, planned from the in-memory progress apply keeps (no scan of RocksDB), and
//! where an offset reset moves floors. Offsets a plan proposes are [`Reserved`] until their
//! lease is applied, so concurrent receives propose different messages instead of racing
//! for the same ones.
//!
//! Must never: hand anything to a consumer: a plan is only a proposal, and what apply
//! grants (see [`super::lease`]) is what gets delivered.

use std::sync::{Arc, Mutex};

use raftmq_storage::IndexStore;

use super::{ConsumerGroupMode, ConsumerGroups, GroupMeta, gkey};
use crate::error::BrokerError;
use crate::state::applied::RejectCode;
use crate::state::read::TagFilter;
use crate::state::{FastMap, FastSet};

/// A receive request.
#[derive(Clone, Debug)]
pub struct ReceiveRequest {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Consumer.
    pub consumer: String,
    /// Most messages.
    pub max: usize,
    /// Long-poll time.
    pub wait_ms: u64,
    /// Lease length.
    pub invisible_ms: u64,
    /// Tag filter.
    pub tag: Option<TagFilter>,
    /// SQL92 property filter (applied to what the plan picks, see
    /// [`crate::state::read::filter_misses`]).
    pub sql: Option<std::sync::Arc<crate::state::sql::SqlFilter>>,
    /// Mode (checked against the group's).
    pub mode: ConsumerGroupMode,
}

/// Where to reset a group's offsets to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetTo {
    /// The oldest retained message.
    Earliest,
    /// After the newest message.
    Latest,
    /// The first message stored at or after this time.
    Timestamp(u64),
}

/// Offsets proposed for leasing whose lease is not applied yet, per (progress key, topic):
/// leader-local, never part of the replicated state.
#[derive(Debug, Default)]
pub struct Reserved(FastMap<(String, String), FastSet<(u32, u64)>>);

impl Reserved {
    /// What is reserved for a progress key in a topic.
    fn of(&self, gk: &str, topic: &str) -> Option<&FastSet<(u32, u64)>> {
        self.0.get(&(gk.to_owned(), topic.to_owned()))
    }

    fn add(&mut self, gk: &str, topic: &str, items: &[(u32, u64)]) {
        self.0
            .entry((gk.to_owned(), topic.to_owned()))
            .or_default()
            .extend(items.iter().copied());
    }

    fn release(&mut self, gk: &str, topic: &str, items: &[(u32, u64)]) {
        let key = (gk.to_owned(), topic.to_owned());
        if let Some(set) = self.0.get_mut(&key) {
            for item in items {
                set.remove(item);
            }
            if set.is_empty() {
                self.0.remove(&key);
            }
        }
    }
}

/// Releases a plan's reservations when dropped: after its lease was applied, failed, or
/// the receive was abandoned.
#[derive(Debug)]
pub struct Reservation {
    reserved: Arc<Mutex<Reserved>>,
    gk: String,
    topic: String,
    items: Vec<(u32, u64)>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(&self.gk, &self.topic, &self.items);
    }
}

/// What a receive proposes, as `(queue, offset)` lists.
#[derive(Debug, Default)]
pub struct Plan {
    /// To lease.
    pub items: Vec<(u32, u64)>,
    /// Excluded by the consumer's tag filter: done for the group.
    pub skip: Vec<(u32, u64)>,
    /// Out of attempts: to the dead-letter topic.
    pub dead: Vec<(u32, u64)>,
    /// Holds `items` back from other plans until dropped.
    pub reservation: Option<Reservation>,
}

impl Plan {
    /// Whether there is nothing to propose.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.skip.is_empty() && self.dead.is_empty()
    }
}

fn topic_not_found(topic: &str) -> BrokerError {
    BrokerError::rejected(
        RejectCode::TopicNotFound,
        format!("topic {topic} does not exist"),
    )
}

/// Offsets a plan looks at per queue, from the floor: the most messages of a queue a group
/// has in flight or done above its floor (like RocketMQ's per-queue pull threshold), and a
/// bound on the leader's work under the applier's lock when a slow consumer holds the
/// floor back. Receives wait until the floor moves.
pub const MAX_IN_FLIGHT_PER_QUEUE: usize = 16_384;

/// Chooses what to lease (and to skip or dead-letter) at `now`, scanning queues from
/// `start_queue` on, and reserves what it proposes to lease.
pub fn plan(
    groups: &mut ConsumerGroups,
    req: &ReceiveRequest,
    start_queue: u32,
    now: u64,
    reserved: &Arc<Mutex<Reserved>>,
) -> Result<Plan, BrokerError> {
    let (meta, set) = groups.view().settings(&req.group)?;
    if let Some(m) = meta
        && m.mode != req.mode
    {
        return Err(BrokerError::rejected(
            RejectCode::Conflict,
            format!("group {} consumes in {} mode", req.group, m.mode.as_str()),
        ));
    }
    let max_attempts = meta.unwrap_or(GroupMeta::new(req.mode)).max_attempts;
    let backoff = set.backoff();
    let store = groups.shared_store();
    let topic = store
        .topic_get(&req.topic)?
        .ok_or_else(|| topic_not_found(&req.topic))?;
    let gk = gkey(&req.group, req.mode, &req.consumer);
    let mut plan = Plan::default();
    let mut held = reserved.lock().unwrap_or_else(|e| e.into_inner());
    let taken = held.of(&gk, &req.topic);
    // A part of a spread topic holds only `first..queues`; the queues below are others'.
    let first = topic.own_queues().start;
    let count = topic.queues - first;
    for i in 0..count {
        let q = first + (start_queue + i) % count;
        // One point lookup; a floor that retention passed is raised by apply.
        let next = match store.queue_next(&req.topic, q)? {
            Some(next) => next,
            None => match store.cq_bounds(&req.topic, q)? {
                Some((_, next)) => next,
                None => continue,
            },
        };
        let progress = groups.queue(&gk, &req.topic, q)?;
        // FIFO: a run starts only when nothing of the queue is in flight or planned.
        if topic.fifo
            && (progress.states.values().any(|s| s.in_flight(now))
                || taken.is_some_and(|t| t.iter().any(|&(tq, _)| tq == q)))
        {
            continue;
        }
        let mut offset = progress.floor;
        let mut states = progress.states.range(offset..).peekable();
        let mut looked = 0;
        while offset < next && looked < MAX_IN_FLIGHT_PER_QUEUE {
            looked += 1;
            // Skip what this offset's state rules out; an offset without one is new.
            let st = states.next_if(|(o, _)| **o == offset).map(|(_, st)| st);
            let o = offset;
            offset += 1;
            if st.is_some_and(|s| s.done()) {
                continue;
            }
            let free = st.is_none_or(|s| s.deliverable(now, &backoff))
                && !taken.is_some_and(|t| t.contains(&(q, o)));
            if !free {
                if topic.fifo {
                    break;
                }
                continue;
            }
            if st.is_some_and(|s| s.attempt >= max_attempts) {
                plan.dead.push((q, o));
                continue;
            }
            if let Some(tag) = &req.tag
                && !store
                    .cq_get(&req.topic, q, o)?
                    .is_some_and(|e| tag.may_match(e.tag_hash))
            {
                plan.skip.push((q, o));
                continue;
            }
            plan.items.push((q, o));
            if plan.items.len() >= req.max {
                break;
            }
        }
        if plan.items.len() >= req.max {
            break;
        }
    }
    if !plan.items.is_empty() {
        held.add(&gk, &req.topic, &plan.items);
        plan.reservation = Some(Reservation {
            reserved: reserved.clone(),
            gk,
            topic: req.topic.clone(),
            items: plan.items.clone(),
        });
    }
    Ok(plan)
}

/// The new floor of every queue of `topic` for a reset to `to`.
pub fn reset_targets(
    store: &IndexStore,
    topic: &str,
    to: ResetTo,
) -> Result<Vec<(u32, u64)>, BrokerError> {
    let meta = store
        .topic_get(topic)?
        .ok_or_else(|| topic_not_found(topic))?;
    meta.own_queues()
        .map(|q| {
            let (min, max) = store.cq_bounds(topic, q)?.unwrap_or((0, 0));
            let at = match to {
                ResetTo::Earliest => min,
                ResetTo::Latest => max,
                ResetTo::Timestamp(ts) => first_at_or_after(store, topic, q, min, max, ts)?,
            };
            Ok((q, at))
        })
        .collect()
}

/// The first offset in `[min, max)` stored at or after `ts` (`max` if none): a binary search
/// on store times, which grow along a queue.
fn first_at_or_after(
    s: &IndexStore,
    topic: &str,
    queue: u32,
    min: u64,
    max: u64,
    ts: u64,
) -> raftmq_storage::Result<u64> {
    let (mut lo, mut hi) = (min, max);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match s.cq_get(topic, queue, mid)? {
            Some(e) if e.store_ms >= ts => hi = mid,
            _ => lo = mid + 1,
        }
    }
    Ok(lo)
}
