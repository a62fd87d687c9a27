//! The leader's side of consumer-group writes, computed from the applied state: what a
//! receive proposes to lease, skip or dead-letter, and where an offset reset moves floors.
//!
//! Must never: hand anything to a consumer: a plan is only a proposal, and what apply
//! grants (see [`super::lease`]) is what gets delivered.

use raftmq_storage::IndexStore;

use super::{ConsumerGroupMode, GroupMeta, GroupView, MsgState, gkey};
use crate::error::BrokerError;
use crate::state::applied::RejectCode;
use crate::state::read::TagFilter;

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

/// What a receive proposes, as `(queue, offset)` lists.
#[derive(Debug, Default)]
pub struct Plan {
    /// To lease.
    pub items: Vec<(u32, u64)>,
    /// Excluded by the consumer's tag filter: done for the group.
    pub skip: Vec<(u32, u64)>,
    /// Out of attempts: to the dead-letter topic.
    pub dead: Vec<(u32, u64)>,
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

/// Chooses what to lease (and to skip or dead-letter) at `now`, scanning queues from
/// `start_queue` on.
pub fn plan(
    store: &IndexStore,
    req: &ReceiveRequest,
    start_queue: u32,
    now: u64,
) -> Result<Plan, BrokerError> {
    let view = GroupView::applied(store);
    let meta = view.meta(&req.group)?;
    if let Some(m) = meta
        && m.mode != req.mode
    {
        return Err(BrokerError::rejected(
            RejectCode::Conflict,
            format!("group {} consumes in {} mode", req.group, m.mode.as_str()),
        ));
    }
    let max_attempts = meta.unwrap_or(GroupMeta::new(req.mode)).max_attempts;
    let topic = store
        .topic_get(&req.topic)?
        .ok_or_else(|| topic_not_found(&req.topic))?;
    let gk = gkey(&req.group, req.mode, &req.consumer);
    let scan = (req.max * 4).clamp(64, 2048);
    let mut plan = Plan::default();
    for i in 0..topic.queues {
        let q = (start_queue + i) % topic.queues;
        let f = view.floor(&gk, &req.topic, q)?;
        let entries = store.cq_range(&req.topic, q, f, scan)?;
        if entries.is_empty() {
            continue;
        }
        let states = view.states_from(&gk, &req.topic, q, f)?;
        for (off, e) in entries {
            let st = states.get(&off);
            if st.is_some_and(MsgState::done) {
                continue;
            }
            let deliverable = st.is_none_or(|s| s.deliverable(now));
            if !deliverable {
                if topic.fifo {
                    break;
                }
                continue;
            }
            if st.is_some_and(|s| s.attempt >= max_attempts) {
                plan.dead.push((q, off));
                continue;
            }
            if let Some(tag) = &req.tag
                && !tag.may_match(e.tag_hash)
            {
                plan.skip.push((q, off));
                continue;
            }
            plan.items.push((q, off));
            if topic.fifo || plan.items.len() >= req.max {
                break;
            }
        }
        if plan.items.len() >= req.max {
            break;
        }
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
    (0..meta.queues)
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
