//! What a consumer group looks like from outside: its settings, consumers and per-queue
//! progress, read from the applied state (`GET /v1/groups`, `GET /v1/groups/{group}`).
//!
//! Must never: write anything; `now_ms` (for what is in flight) is the caller's clock.

use raftmq_storage::IndexStore;

use super::{ConsumerGroupMode, ConsumerRec, GroupMeta, GroupView, dec, dlq_topic, gkey, keys};

type R<T> = raftmq_storage::Result<T>;

/// A consumer group as shown by `GET /v1/groups/{group}`.
#[derive(Clone, Debug)]
pub struct ConsumerGroupInfo {
    /// Name.
    pub name: String,
    /// Mode.
    pub mode: ConsumerGroupMode,
    /// Deliveries before dead-lettering.
    pub max_attempts: u32,
    /// Backoff before an expired or nacked message is visible again, by attempt.
    pub retry_backoff_ms: Vec<u64>,
    /// `(name, last heartbeat ms, session ms, topics)`.
    pub consumers: Vec<(String, u64, u64, Vec<String>)>,
    /// Per topic and queue progress.
    pub queues: Vec<QueueProgress>,
    /// The group's dead-letter topic.
    pub dlq_topic: String,
    /// Messages in the group's dead-letter topic.
    pub dlq_depth: u64,
}

/// One queue's progress for a consumer group (per consumer in broadcast mode).
#[derive(Clone, Debug)]
pub struct QueueProgress {
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue: u32,
    /// Consumer (broadcast mode only).
    pub consumer: Option<String>,
    /// Committed offset (the floor).
    pub committed: u64,
    /// One past the last message.
    pub max_offset: u64,
    /// Messages in flight now.
    pub in_flight: u64,
}

/// Every consumer group's name and mode.
pub fn list(store: &IndexStore) -> R<Vec<(String, ConsumerGroupMode)>> {
    Ok(GroupView::applied(store)
        .scan(&keys::meta_all(), None)?
        .into_iter()
        .filter_map(|(k, v)| {
            let name = String::from_utf8(k.get(2..)?.to_vec()).ok()?;
            Some((name, dec::<GroupMeta>(&v)?.mode))
        })
        .collect())
}

/// A group's retry settings in effect: `max_attempts` and the backoff by attempt (set by
/// `PUT /v1/groups/{group}`, else the defaults), whether or not the group was used yet.
pub fn retry_settings(store: &IndexStore, group: &str) -> R<(u32, Vec<u64>)> {
    let (meta, set) = GroupView::applied(store).settings(group)?;
    let max_attempts = match meta {
        Some(meta) => meta.max_attempts,
        None => set.max_attempts.unwrap_or(super::DEFAULT_MAX_ATTEMPTS),
    };
    Ok((max_attempts, set.backoff()))
}

/// One consumer group's state at `now`, or `None` if it was never used.
pub fn info(store: &IndexStore, group: &str, now: u64) -> R<Option<ConsumerGroupInfo>> {
    let view = GroupView::applied(store);
    let (Some(meta), set) = view.settings(group)? else {
        return Ok(None);
    };
    let consumers: Vec<(String, u64, u64, Vec<String>)> = view
        .scan(&keys::consumers(group), None)?
        .into_iter()
        .filter_map(|(k, v)| {
            let rec: ConsumerRec = dec(&v)?;
            Some((
                keys::consumer_name(&k)?,
                rec.last_ms,
                rec.session_ms,
                rec.topics,
            ))
        })
        .collect();
    let topics: Vec<String> = view
        .scan(&keys::topics(group), None)?
        .into_keys()
        .filter_map(|k| keys::topic_record(&k).map(|(_, t)| t))
        .collect();
    let progress_keys: Vec<(String, Option<String>)> = match meta.mode {
        ConsumerGroupMode::Clustering => vec![(group.to_owned(), None)],
        ConsumerGroupMode::Broadcast => consumers
            .iter()
            .map(|(c, ..)| (gkey(group, meta.mode, c), Some(c.clone())))
            .collect(),
    };
    let mut queues = Vec::new();
    for topic in &topics {
        let Some(t) = store.topic_get(topic)? else {
            continue;
        };
        // A part of a spread topic answers for its own queues only.
        for q in t.own_queues() {
            let max = store.cq_bounds(topic, q)?.map_or(0, |(_, max)| max);
            for (gk, consumer) in &progress_keys {
                let progress = view.queue_state(gk, topic, q)?;
                let in_flight = progress
                    .states
                    .values()
                    .filter(|st| st.in_flight(now))
                    .count() as u64;
                queues.push(QueueProgress {
                    topic: topic.clone(),
                    queue: q,
                    consumer: consumer.clone(),
                    committed: progress.floor,
                    max_offset: max,
                    in_flight,
                });
            }
        }
    }
    let dlq_topic = dlq_topic(group);
    let dlq_depth = store
        .cq_bounds(&dlq_topic, 0)?
        .map_or(0, |(min, max)| max - min);
    Ok(Some(ConsumerGroupInfo {
        name: group.to_owned(),
        mode: meta.mode,
        max_attempts: meta.max_attempts,
        retry_backoff_ms: set.backoff(),
        consumers,
        queues,
        dlq_topic,
        dlq_depth,
    }))
}
