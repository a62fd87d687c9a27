//! Applying a receive: a `Lease` command marks what the consumer's tag filter skips as done,
//! moves messages out of attempts to the dead-letter topic, and leases what is still
//! leasable at the entry's `now_ms`. The leader only proposed the lists; this decides.
//!
//! On a FIFO topic a lease takes a *run* per queue: consecutive messages from the queue's
//! first open one, in order, and only when nothing of the queue is in flight; the queue then
//! delivers nothing more until every message of the run is acked, dead-lettered or expired.
//!
//! Must never: lease a message that is in flight or done for the group, or hand out a FIFO
//! queue's message while an earlier one is in flight or not done, other than as part of the
//! same run, in order.

use std::sync::Arc;

use raftmq_storage::{IndexBatch, TopicMeta};

use super::state::R;
use super::{
    ConsumerGroupMode, ConsumerGroups, DlqOrigin, GroupMeta, MsgState, Receipt, Status, enc, gkey,
    keys,
};
use crate::state::applied::{Applied, Granted, RejectCode, reject};
use crate::state::command::LeaseCmd;
use crate::state::queues::Queues;

/// What one lease works on: the command, apply's time, its group's settings and progress
/// key, the topic.
struct Lease<'c> {
    c: &'c LeaseCmd,
    /// The consumer, allocated once for every state the lease writes.
    consumer: Arc<str>,
    now: u64,
    meta: GroupMeta,
    /// The group's retry backoff by attempt.
    backoff: Vec<u64>,
    gk: String,
    topic: TopicMeta,
}

impl ConsumerGroups {
    /// Applies a `Lease` command at `log_index`, at apply's time `now`.
    pub fn lease(
        &mut self,
        batch: &mut IndexBatch<'_>,
        queues: &mut Queues,
        log_index: u64,
        c: &LeaseCmd,
        now: u64,
    ) -> R<Applied> {
        let (existing, set) = self.view().settings(&c.group)?;
        let meta = match existing {
            Some(meta) => meta,
            None => self.meta_or_create(batch, &c.group, Some(c.mode))?,
        };
        if meta.mode != c.mode {
            return Ok(reject(
                RejectCode::Conflict,
                format!("group {} consumes in {} mode", c.group, meta.mode.as_str()),
            ));
        }
        let Some(topic) = queues.topic(&c.topic)? else {
            return Ok(reject(
                RejectCode::TopicNotFound,
                format!("topic {} does not exist", c.topic),
            ));
        };
        self.touch_topic(batch, &c.group, &c.topic);
        if c.mode == ConsumerGroupMode::Broadcast {
            let key = keys::progress(&c.group, &c.topic, &c.consumer);
            if self.view().get(&key)?.is_none() {
                self.put(batch, key, Vec::new());
            }
        }
        let l = Lease {
            c,
            consumer: Arc::from(c.consumer.as_str()),
            now,
            meta,
            backoff: set.backoff(),
            gk: gkey(&c.group, meta.mode, &c.consumer),
            topic,
        };
        let mut touched = self.skip_filtered(&l)?;
        touched.extend(self.dead_letter_spent(batch, queues, &l)?);
        let granted = self.grant(log_index, &l)?;
        touched.sort_unstable();
        touched.dedup();
        for queue in touched {
            self.advance_floor(&l.gk, &c.topic, queue)?;
        }
        self.flush(batch)?;
        Ok(Applied::Leased { granted })
    }

    /// Marks messages the consumer's tag filter excludes as done; returns their queues.
    fn skip_filtered(&mut self, l: &Lease<'_>) -> R<Vec<u32>> {
        let (c, gk) = (l.c, l.gk.as_str());
        let mut touched = Vec::new();
        for &(queue, offset) in &c.skip {
            if queue >= l.topic.queues || offset < self.floor(gk, &c.topic, queue)? {
                continue;
            }
            let st = self.state(gk, &c.topic, queue, offset)?;
            if st.as_ref().is_some_and(|s| s.done() || s.in_flight(l.now)) {
                continue;
            }
            let mut st = st.unwrap_or_else(|| fresh(&l.consumer));
            st.status = Status::Acked;
            self.set_state(gk, &c.topic, queue, offset, st)?;
            touched.push(queue);
        }
        Ok(touched)
    }

    /// Moves messages out of attempts to the dead-letter topic; returns their queues.
    fn dead_letter_spent(
        &mut self,
        batch: &mut IndexBatch<'_>,
        queues: &mut Queues,
        l: &Lease<'_>,
    ) -> R<Vec<u32>> {
        let (c, gk) = (l.c, l.gk.as_str());
        let mut touched = Vec::new();
        for &(queue, offset) in &c.dead {
            if queue >= l.topic.queues || offset < self.floor(gk, &c.topic, queue)? {
                continue;
            }
            let Some(mut st) = self.state(gk, &c.topic, queue, offset)? else {
                continue;
            };
            if st.done() || st.in_flight(l.now) || st.attempt < l.meta.max_attempts {
                continue;
            }
            if self.dead_letter(batch, queues, l, queue, offset, st.attempt)? {
                st.status = Status::Dead;
                self.set_state(gk, &c.topic, queue, offset, st)?;
                touched.push(queue);
            }
        }
        Ok(touched)
    }

    /// Leases what is still leasable; returns what was granted.
    fn grant(&mut self, log_index: u64, l: &Lease<'_>) -> R<Vec<Granted>> {
        let (c, gk) = (l.c, l.gk.as_str());
        let now = l.now;
        let mut granted = Vec::new();
        // Per queue, once per command: (floor, first retained offset, next offset).
        let mut bounds: Vec<(u32, u64, u64, u64)> = Vec::new();
        // FIFO, per queue: the offset this command's run may continue at (`None`: the queue
        // delivers nothing more in this command).
        let mut runs: Vec<(u32, Option<u64>)> = Vec::new();
        for &(queue, offset) in &c.items {
            if queue >= l.topic.queues {
                continue;
            }
            let (floor, min, next) = match bounds.iter().find(|b| b.0 == queue) {
                Some(&(_, f, lo, hi)) => (f, lo, hi),
                None => {
                    let (lo, hi) = self.store().cq_bounds(&c.topic, queue)?.unwrap_or((0, 0));
                    // A floor retention passed before this group touched the topic (so
                    // `Retain` did not raise it) is raised here, and plans move on.
                    self.raise_floor(gk, &c.topic, queue, lo)?;
                    let f = self.floor(gk, &c.topic, queue)?;
                    bounds.push((queue, f, lo, hi));
                    (f, lo, hi)
                }
            };
            // Offsets are dense between the first retained one and the next one.
            if offset < floor || offset < min || offset >= next {
                continue;
            }
            let st = self
                .state(gk, &c.topic, queue, offset)?
                .unwrap_or_else(|| fresh(&l.consumer));
            let leasable = st.deliverable(now, &l.backoff) && st.attempt < l.meta.max_attempts;
            if l.topic.fifo {
                let at = match runs.iter().position(|r| r.0 == queue) {
                    Some(i) => i,
                    None => {
                        let start = self.fifo_run_start(gk, &c.topic, queue, floor, now)?;
                        runs.push((queue, start));
                        runs.len() - 1
                    }
                };
                if !leasable || runs[at].1 != Some(offset) {
                    // A gap in the run (the plan was stale): the queue stops here.
                    runs[at].1 = None;
                    continue;
                }
                runs[at].1 = Some(self.first_open(gk, &c.topic, queue, offset + 1)?);
            } else if !leasable {
                continue;
            }
            let leased = MsgState {
                status: Status::Leased,
                attempt: st.attempt + 1,
                deadline_ms: now.saturating_add(c.invisible_ms),
                lease_index: log_index,
                consumer: l.consumer.clone(),
            };
            let attempt = leased.attempt;
            self.set_state(gk, &c.topic, queue, offset, leased)?;
            let receipt = Receipt {
                queue,
                offset,
                attempt,
                lease_index: log_index,
                consumer: c.consumer.clone(),
            };
            granted.push(Granted {
                queue,
                offset,
                attempt,
                receipt: receipt.encode(),
            });
        }
        Ok(granted)
    }

    /// FIFO: where a run of `queue` may start: its first open offset from the floor, if
    /// nothing of the queue is in flight.
    fn fifo_run_start(
        &mut self,
        gk: &str,
        topic: &str,
        queue: u32,
        floor: u64,
        now: u64,
    ) -> R<Option<u64>> {
        if self
            .queue(gk, topic, queue)?
            .states
            .values()
            .any(|st| st.in_flight(now))
        {
            return Ok(None);
        }
        Ok(Some(self.first_open(gk, topic, queue, floor)?))
    }

    /// The first offset at or after `from` that is not done for the group.
    fn first_open(&mut self, gk: &str, topic: &str, queue: u32, from: u64) -> R<u64> {
        let mut open = from;
        for (&o, st) in self.queue(gk, topic, queue)?.states.range(from..) {
            if o != open || !st.done() {
                break;
            }
            open += 1;
        }
        Ok(open)
    }

    /// Adds a dead letter to `DLQ-{group}`: an index entry pointing at the original message
    /// (bodies are stored once), plus where it came from.
    fn dead_letter(
        &mut self,
        batch: &mut IndexBatch<'_>,
        queues: &mut Queues,
        l: &Lease<'_>,
        queue: u32,
        offset: u64,
        attempts: u32,
    ) -> R<bool> {
        let c = l.c;
        let Some(e) = self.store().cq_get(&c.topic, queue, offset)? else {
            return Ok(false);
        };
        let dlq = super::dlq_topic(&c.group);
        let dlq_offset = queues.append_dead_letter(batch, &dlq, l.topic.retention_ms, e, l.now)?;
        let origin = DlqOrigin {
            topic: c.topic.clone(),
            queue,
            offset,
            attempts,
        };
        self.put(batch, keys::dlq_origin(&dlq, dlq_offset), enc(&origin));
        Ok(true)
    }
}

/// The state of a message never delivered to the group.
fn fresh(consumer: &Arc<str>) -> MsgState {
    MsgState {
        status: Status::Released,
        attempt: 0,
        deadline_ms: 0,
        lease_index: 0,
        consumer: consumer.clone(),
    }
}
