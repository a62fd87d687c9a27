//! Applying a consumer group's membership and progress changes: heartbeats (with queue
//! assignment), offset resets and commits, retention passing floors, and forgetting a
//! deleted topic.
//!
//! Must never: assign a queue to two live consumers of one topic; move a floor back except
//! by a reset; leave a floor below the first retained offset after retention or a reset
//! (a FIFO queue would wait forever for messages that are gone); or leave a deleted
//! topic's offsets or message states behind (a re-created topic starts without them).

use raftmq_storage::IndexBatch;

use super::state::R;
use super::{ConsumerGroupMode, ConsumerGroups, ConsumerRec, dec, enc, gkey, keys};
use crate::state::applied::{Applied, Assignment, RejectCode, reject};
use crate::state::command::{GroupSettingsCmd, HeartbeatCmd, ResetCmd};
use crate::state::queues::Queues;

/// A group that touched a topic: its `T` record's key, its name, its progress keys there.
type TopicGroup = (Vec<u8>, String, Vec<String>);

/// The queues of `0..count` that `consumer` gets among `consumers` (sorted): every
/// `consumers.len()`-th from its place.
pub fn assigned_queues(count: u32, consumers: &[String], consumer: &str) -> Vec<u32> {
    match consumers.iter().position(|n| n == consumer) {
        Some(i) => (0..count)
            .filter(|q| *q as usize % consumers.len() == i)
            .collect(),
        None => Vec::new(),
    }
}

impl ConsumerGroups {
    /// Applies a heartbeat: records the consumer, drops expired ones, and answers the
    /// consumer's queues per topic (live members sorted by name share queues round-robin).
    pub fn heartbeat(
        &mut self,
        batch: &mut IndexBatch<'_>,
        queues: &mut Queues,
        c: &HeartbeatCmd,
        now: u64,
    ) -> R<Applied> {
        self.meta_or_create(batch, &c.group, None)?;
        let rec = ConsumerRec {
            last_ms: now,
            session_ms: c.session_ms,
            topics: c.topics.clone(),
        };
        self.put(batch, keys::consumer(&c.group, &c.consumer), enc(&rec));
        for t in &c.topics {
            self.touch_topic(batch, &c.group, t);
        }
        let mut live: Vec<(String, ConsumerRec)> = Vec::new();
        for (k, v) in self.view().scan(&keys::consumers(&c.group), None)? {
            let (Some(name), Some(rec)) = (keys::consumer_name(&k), dec::<ConsumerRec>(&v)) else {
                continue;
            };
            if rec.last_ms.saturating_add(rec.session_ms) > now {
                live.push((name, rec));
            } else {
                self.delete(batch, k);
            }
        }
        let mut assignments = Vec::new();
        for t in &c.topics {
            let count = queues.topic(t)?.map_or(0, |m| m.queues);
            let mut members: Vec<&str> = live
                .iter()
                .filter(|(_, r)| r.topics.iter().any(|x| x == t))
                .map(|(n, _)| n.as_str())
                .collect();
            members.sort_unstable();
            let consumers: Vec<String> = members.iter().map(|n| (*n).to_owned()).collect();
            assignments.push(Assignment {
                topic: t.clone(),
                queues: assigned_queues(count, &consumers, &c.consumer),
                consumers,
            });
        }
        Ok(Applied::Assigned { assignments })
    }

    /// Applies a group's retry settings: what the command gives replaces what was set; the
    /// group itself is not created (its mode is still fixed by its first use).
    pub fn put_group(&mut self, batch: &mut IndexBatch<'_>, c: &GroupSettingsCmd) -> R<Applied> {
        if let Some(why) = c.invalid() {
            return Ok(reject(RejectCode::InvalidArgument, why));
        }
        let mut set = self.view().retry_settings(&c.group)?;
        if c.max_attempts.is_some() {
            set.max_attempts = c.max_attempts;
        }
        if c.retry_backoff_ms.is_some() {
            set.retry_backoff_ms = c.retry_backoff_ms.clone();
        }
        self.put(batch, keys::retry(&c.group), enc(&set));
        Ok(Applied::Done)
    }

    /// Applies an offset reset: moves floors and forgets the leases there (every
    /// consumer's progress in broadcast mode).
    pub fn reset_offsets(
        &mut self,
        batch: &mut IndexBatch<'_>,
        queues: &mut Queues,
        c: &ResetCmd,
    ) -> R<Applied> {
        let Some(topic) = queues.topic(&c.topic)? else {
            return Ok(reject(
                RejectCode::TopicNotFound,
                format!("topic {} does not exist", c.topic),
            ));
        };
        if let Some((q, _)) = c.offsets.iter().find(|(q, _)| *q >= topic.queues) {
            return Ok(reject(
                RejectCode::InvalidArgument,
                format!("queue {q} is out of range"),
            ));
        }
        let meta = self.meta_or_create(batch, &c.group, None)?;
        let gkeys = self.progress_keys(&c.group, meta.mode, &c.topic)?;
        self.touch_topic(batch, &c.group, &c.topic);
        for &(queue, offset) in &c.offsets {
            // The leader chose the offset before retention may have passed it.
            let min = self
                .store()
                .cq_bounds(&c.topic, queue)?
                .map_or(0, |(min, _)| min);
            for gk in &gkeys {
                self.clear_queue(batch, gk, &c.topic, queue, Some(offset.max(min)));
            }
        }
        self.flush(batch)?;
        Ok(Applied::Done)
    }

    /// Applies an offset commit: moves floors up to the offsets given. A commit below a
    /// floor changes nothing (only a reset moves a floor back), so a late retry of an old
    /// commit cannot make the group consume acked messages again.
    pub fn commit_offsets(
        &mut self,
        batch: &mut IndexBatch<'_>,
        queues: &mut Queues,
        group: &str,
        topic: &str,
        offsets: &[(u32, u64)],
    ) -> R<Applied> {
        let Some(meta) = queues.topic(topic)? else {
            return Ok(reject(
                RejectCode::TopicNotFound,
                format!("topic {topic} does not exist"),
            ));
        };
        if let Some((q, _)) = offsets.iter().find(|(q, _)| *q >= meta.queues) {
            return Ok(reject(
                RejectCode::InvalidArgument,
                format!(
                    "queue {q} is out of range (topic {topic} has {} queues)",
                    meta.queues
                ),
            ));
        }
        for &(queue, offset) in offsets {
            let next = self
                .store()
                .cq_bounds(topic, queue)?
                .map_or(0, |(_, max)| max);
            if offset > next {
                return Ok(reject(
                    RejectCode::InvalidArgument,
                    format!(
                        "offsets: {offset} is beyond the end of queue {queue} (max_offset {next})"
                    ),
                ));
            }
        }
        // A group is created on first use, committing offsets included.
        self.meta_or_create(batch, group, None)?;
        // Remembered so deleting the topic forgets these offsets too.
        self.touch_topic(batch, group, topic);
        for &(queue, offset) in offsets {
            self.raise_floor(group, topic, queue, offset)?;
        }
        self.flush(batch)?;
        Ok(Applied::Done)
    }

    /// Drops every group's committed offsets and message states for a deleted topic, so a
    /// topic re-created under the same name starts with no consumer progress (as Kafka
    /// drops a deleted topic's offsets).
    pub fn forget_topic(&mut self, batch: &mut IndexBatch<'_>, topic: &str, queues: u32) -> R<()> {
        let mut gkeys: Vec<String> = Vec::new();
        for (record, group, progress) in self.groups_of_topic(topic)? {
            gkeys.extend(progress);
            self.delete_prefix(batch, &keys::progresses(&group, topic))?;
            self.delete(batch, record);
        }
        for gk in gkeys {
            batch.delete_offsets(&gk, topic, queues)?;
            for queue in 0..queues {
                self.clear_queue(batch, &gk, topic, queue, None);
            }
        }
        self.forget_progress(topic);
        Ok(())
    }

    /// Retention moved the first retained offset of some queues of `topic` (`(queue, new
    /// first offset)`): every group's floor there moves up to it, dropping the records of
    /// messages that are gone.
    pub fn retained(
        &mut self,
        batch: &mut IndexBatch<'_>,
        topic: &str,
        moved: &[(u32, u64)],
    ) -> R<()> {
        let gkeys: Vec<String> = self
            .groups_of_topic(topic)?
            .into_iter()
            .flat_map(|(_, _, progress)| progress)
            .collect();
        for gk in &gkeys {
            for &(queue, min) in moved {
                self.raise_floor(gk, topic, queue, min)?;
            }
        }
        for &(queue, min) in moved {
            self.follow_retention(topic, queue, min);
        }
        self.flush(batch)
    }

    /// Every group that touched `topic` (received, committed, heartbeated: it has a `T group
    /// topic` record): that record's key, the group, and its progress keys in the topic.
    fn groups_of_topic(&self, topic: &str) -> R<Vec<TopicGroup>> {
        let mut out = Vec::new();
        for k in self.view().scan(b"T", None)?.into_keys() {
            let Some((group, t)) = keys::topic_record(&k) else {
                continue;
            };
            if t != topic {
                continue;
            }
            let mode = self
                .view()
                .meta(&group)?
                .map_or(ConsumerGroupMode::Clustering, |m| m.mode);
            let progress = self.progress_keys(&group, mode, topic)?;
            out.push((k, group, progress));
        }
        Ok(out)
    }

    /// The progress keys of a group in a topic: the group itself, and in broadcast mode
    /// each consumer's own (those that sent heartbeats and those with progress there).
    fn progress_keys(&self, group: &str, mode: ConsumerGroupMode, topic: &str) -> R<Vec<String>> {
        let mut gkeys = vec![group.to_owned()];
        if mode == ConsumerGroupMode::Broadcast {
            let view = self.view();
            let heartbeats = view.scan(&keys::consumers(group), None)?;
            let progress = view.scan(&keys::progresses(group, topic), None)?;
            let mut names: Vec<String> = heartbeats
                .keys()
                .filter_map(|k| keys::consumer_name(k))
                .chain(progress.keys().filter_map(|k| keys::progress_consumer(k)))
                .collect();
            names.sort_unstable();
            names.dedup();
            gkeys.extend(names.iter().map(|c| gkey(group, mode, c)));
        }
        Ok(gkeys)
    }
}
