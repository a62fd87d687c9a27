//! Applying consumer-group commands: leases, acks and nacks, dead letters, heartbeats and
//! offset resets. Deterministic like all of apply: the only clock is `now_ms` in the entry,
//! so every replica grants the same leases and expires them at the same instant.
//!
//! Must never: lease a message that is in flight or done for the group, accept a receipt
//! of an earlier delivery, or hand out a FIFO queue's next message while an earlier one is
//! in flight.

use std::collections::BTreeMap;

use raftmq_storage::{CqEntry, IndexBatch};
use serde::{Deserialize, Serialize};

use super::{
    ConsumerRec, DEFAULT_MAX_ATTEMPTS, DlqOrigin, GroupMeta, GroupMode, MsgState, Receipt, Status,
    dec, dlq_topic, enc, gkey, keys,
};
use crate::apply::{Applied, Applier, RejectCode, reject};
use crate::command::{AckCmd, HeartbeatCmd, LeaseCmd, ResetCmd, TopicSpec};

/// One leased message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    /// Queue.
    pub queue: u32,
    /// Offset.
    pub offset: u64,
    /// Delivery number (1 = first).
    pub attempt: u32,
    /// The receipt to ack it with.
    pub receipt: String,
}

type R<T> = raftmq_storage::Result<T>;

impl Applier {
    fn group_get(&self, key: &[u8]) -> R<Option<Vec<u8>>> {
        match self.group_overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.store.group_get(key),
        }
    }

    fn group_put(&mut self, batch: &mut IndexBatch<'_>, key: Vec<u8>, value: Vec<u8>) {
        batch.put_group(&key, &value);
        self.group_overlay.insert(key, Some(value));
    }

    fn group_delete(&mut self, batch: &mut IndexBatch<'_>, key: Vec<u8>) {
        batch.delete_group(&key);
        self.group_overlay.insert(key, None);
    }

    /// Every record under `prefix`, the batch's own writes included.
    fn group_scan_all(&self, prefix: &[u8]) -> R<BTreeMap<Vec<u8>, Vec<u8>>> {
        let mut out: BTreeMap<Vec<u8>, Vec<u8>> = self
            .store
            .group_scan(prefix, None, usize::MAX)?
            .into_iter()
            .collect();
        for (k, v) in &self.group_overlay {
            if k.starts_with(prefix) {
                match v {
                    Some(v) => out.insert(k.clone(), v.clone()),
                    None => out.remove(k),
                };
            }
        }
        Ok(out)
    }

    fn state(&self, gk: &str, topic: &str, queue: u32, offset: u64) -> R<Option<MsgState>> {
        Ok(self
            .group_get(&keys::state(gk, topic, queue, offset))?
            .and_then(|b| dec(&b)))
    }

    /// The group's floor in a queue: below it everything is acked or dead.
    pub(crate) fn floor(&self, gk: &str, topic: &str, queue: u32) -> R<u64> {
        if let Some(f) = self
            .floor_overlay
            .get(&(gk.to_owned(), topic.to_owned(), queue))
        {
            return Ok(*f);
        }
        if let Some(f) = self.store.offset_get(gk, topic, queue)? {
            return Ok(f);
        }
        // A new group starts at the oldest retained message.
        Ok(self
            .store
            .cq_bounds(topic, queue)?
            .map_or(0, |(min, _)| min))
    }

    /// Moves a floor; [`Applier::flush_floors`] writes it when the command ends.
    fn set_floor(&mut self, gk: &str, topic: &str, queue: u32, floor: u64) {
        let key = (gk.to_owned(), topic.to_owned(), queue);
        if !self.dirty_floors.contains(&key) {
            self.dirty_floors.push(key.clone());
        }
        self.floor_overlay.insert(key, floor);
    }

    /// Writes the floors the current command moved (once each, however often they moved).
    fn flush_floors(&mut self, batch: &mut IndexBatch<'_>) -> R<()> {
        for key in std::mem::take(&mut self.dirty_floors) {
            if let Some(&floor) = self.floor_overlay.get(&key) {
                batch.put_offset(&key.0, &key.1, key.2, floor)?;
            }
        }
        Ok(())
    }

    /// Moves the floor over offsets that are done, dropping their records.
    fn advance_floor(
        &mut self,
        batch: &mut IndexBatch<'_>,
        gk: &str,
        topic: &str,
        queue: u32,
    ) -> R<()> {
        let start = self.floor(gk, topic, queue)?;
        let mut floor = start;
        while let Some(st) = self.state(gk, topic, queue, floor)? {
            if !st.done() {
                break;
            }
            self.group_delete(batch, keys::state(gk, topic, queue, floor));
            floor += 1;
        }
        if floor != start || self.store.offset_get(gk, topic, queue)?.is_none() {
            self.set_floor(gk, topic, queue, floor);
        }
        Ok(())
    }

    /// The group's settings, created with `mode` on first use.
    fn group_meta(
        &mut self,
        batch: &mut IndexBatch<'_>,
        group: &str,
        mode: Option<GroupMode>,
    ) -> R<GroupMeta> {
        if let Some(m) = self.group_get(&keys::meta(group))?.and_then(|b| dec(&b)) {
            return Ok(m);
        }
        let meta = GroupMeta {
            mode: mode.unwrap_or(GroupMode::Clustering),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        };
        self.group_put(batch, keys::meta(group), enc(&meta));
        Ok(meta)
    }

    pub(crate) fn lease(
        &mut self,
        batch: &mut IndexBatch<'_>,
        log_index: u64,
        c: &LeaseCmd,
    ) -> R<Applied> {
        let meta = self.group_meta(batch, &c.group, Some(c.mode))?;
        if meta.mode != c.mode {
            return Ok(reject(
                RejectCode::Conflict,
                format!("group {} consumes in {} mode", c.group, meta.mode.as_str()),
            ));
        }
        let Some(topic) = self.topic(&c.topic)? else {
            return Ok(reject(
                RejectCode::TopicNotFound,
                format!("topic {} does not exist", c.topic),
            ));
        };
        self.group_put(batch, keys::topic(&c.group, &c.topic), Vec::new());
        let gk = gkey(&c.group, meta.mode, &c.consumer);
        let now = c.now_ms;
        let mut touched: Vec<u32> = Vec::new();
        for &(queue, offset) in &c.skip {
            if queue >= topic.queues || offset < self.floor(&gk, &c.topic, queue)? {
                continue;
            }
            let st = self.state(&gk, &c.topic, queue, offset)?;
            if st.as_ref().is_some_and(|s| s.done() || s.in_flight(now)) {
                continue;
            }
            let mut st = st.unwrap_or_else(|| fresh(&c.consumer));
            st.status = Status::Acked;
            self.group_put(batch, keys::state(&gk, &c.topic, queue, offset), enc(&st));
            touched.push(queue);
        }
        for &(queue, offset) in &c.dead {
            if queue >= topic.queues || offset < self.floor(&gk, &c.topic, queue)? {
                continue;
            }
            let Some(mut st) = self.state(&gk, &c.topic, queue, offset)? else {
                continue;
            };
            if st.done() || st.in_flight(now) || st.attempt < meta.max_attempts {
                continue;
            }
            if self.dead_letter(
                batch,
                &c.group,
                &c.topic,
                topic.retention_ms,
                queue,
                offset,
                st.attempt,
                now,
            )? {
                st.status = Status::Dead;
                self.group_put(batch, keys::state(&gk, &c.topic, queue, offset), enc(&st));
                touched.push(queue);
            }
        }
        let mut granted = Vec::new();
        // Per queue, once per command: (floor, first retained offset, next offset).
        let mut bounds: Vec<(u32, u64, u64, u64)> = Vec::new();
        for &(queue, offset) in &c.items {
            if queue >= topic.queues {
                continue;
            }
            let (floor, min, next) = match bounds.iter().find(|b| b.0 == queue) {
                Some(&(_, f, lo, hi)) => (f, lo, hi),
                None => {
                    let f = self.floor(&gk, &c.topic, queue)?;
                    let (lo, hi) = self.store.cq_bounds(&c.topic, queue)?.unwrap_or((0, 0));
                    bounds.push((queue, f, lo, hi));
                    (f, lo, hi)
                }
            };
            // Offsets are dense between the first retained one and the next one.
            if offset < floor || offset < min || offset >= next {
                continue;
            }
            let st = self
                .state(&gk, &c.topic, queue, offset)?
                .unwrap_or_else(|| fresh(&c.consumer));
            if !st.deliverable(now) || st.attempt >= meta.max_attempts {
                continue;
            }
            if topic.fifo && !self.fifo_may_deliver(&gk, &c.topic, queue, floor, offset, now)? {
                continue;
            }
            let leased = MsgState {
                status: Status::Leased,
                attempt: st.attempt + 1,
                deadline_ms: now.saturating_add(c.invisible_ms),
                lease_index: log_index,
                consumer: c.consumer.clone(),
            };
            self.group_put(
                batch,
                keys::state(&gk, &c.topic, queue, offset),
                enc(&leased),
            );
            let receipt = Receipt {
                queue,
                offset,
                attempt: leased.attempt,
                lease_index: log_index,
                consumer: c.consumer.clone(),
            };
            granted.push(Granted {
                queue,
                offset,
                attempt: leased.attempt,
                receipt: receipt.encode(),
            });
        }
        touched.sort_unstable();
        touched.dedup();
        for queue in touched {
            self.advance_floor(batch, &gk, &c.topic, queue)?;
        }
        self.flush_floors(batch)?;
        Ok(Applied::Leased { granted })
    }

    /// FIFO: deliver `offset` only if every earlier message of the queue is done and none is
    /// in flight.
    fn fifo_may_deliver(
        &self,
        gk: &str,
        topic: &str,
        queue: u32,
        floor: u64,
        offset: u64,
        now: u64,
    ) -> R<bool> {
        let states = self.group_scan_all(&keys::queue_states(gk, topic, queue))?;
        let mut done_before = 0u64;
        for (k, v) in &states {
            let (Some(o), Some(st)) = (keys::state_offset(k), dec::<MsgState>(v)) else {
                continue;
            };
            if o != offset && st.in_flight(now) {
                return Ok(false);
            }
            if o >= floor && o < offset && st.done() {
                done_before += 1;
            }
        }
        Ok(done_before == offset - floor)
    }

    /// Adds a dead letter to `DLQ-{group}`: an index entry pointing at the original message
    /// (bodies are stored once), plus where it came from.
    #[allow(clippy::too_many_arguments)]
    fn dead_letter(
        &mut self,
        batch: &mut IndexBatch<'_>,
        group: &str,
        topic: &str,
        retention_ms: u64,
        queue: u32,
        offset: u64,
        attempts: u32,
        now: u64,
    ) -> R<bool> {
        let Some(e) = self.store.cq_get(topic, queue, offset)? else {
            return Ok(false);
        };
        let dlq = dlq_topic(group);
        if self.topic(&dlq)?.is_none() {
            let spec = TopicSpec {
                queues: 1,
                fifo: false,
                retention_ms,
            };
            self.put_topic(batch, &dlq, spec)?;
        }
        let next = self.next_offset(&dlq, 0)?;
        let dlq_offset = *next;
        *next += 1;
        let entry = CqEntry { store_ms: now, ..e };
        batch.put_cq(&dlq, 0, dlq_offset, &entry)?;
        batch.put_queue_next(&dlq, 0, dlq_offset + 1)?;
        batch.put_time_run(&dlq, now, e.log_index, 0, dlq_offset, 1)?;
        let origin = DlqOrigin {
            topic: topic.to_owned(),
            queue,
            offset,
            attempts,
        };
        self.group_put(batch, keys::dlq_origin(&dlq, dlq_offset), enc(&origin));
        Ok(true)
    }

    pub(crate) fn ack(&mut self, batch: &mut IndexBatch<'_>, c: &AckCmd) -> R<Applied> {
        let Some(meta) = self
            .group_get(&keys::meta(&c.group))?
            .and_then(|b| dec::<GroupMeta>(&b))
        else {
            return Ok(reject(
                RejectCode::GroupNotFound,
                format!("group {} does not exist", c.group),
            ));
        };
        let mut results = Vec::with_capacity(c.receipts.len());
        for r in &c.receipts {
            results.push(self.ack_one(batch, &meta, c, r)?);
        }
        self.flush_floors(batch)?;
        Ok(Applied::Acked { results })
    }

    fn ack_one(
        &mut self,
        batch: &mut IndexBatch<'_>,
        meta: &GroupMeta,
        c: &AckCmd,
        receipt: &str,
    ) -> R<Option<String>> {
        let Some(r) = Receipt::parse(receipt) else {
            return Ok(Some("RECEIPT_INVALID".into()));
        };
        let gk = gkey(&c.group, meta.mode, &r.consumer);
        if r.offset < self.floor(&gk, &c.topic, r.queue)? {
            // Everything below the floor is done; a repeated ack is harmless.
            return Ok(c.nack_delay_ms.map(|_| "RECEIPT_EXPIRED".into()));
        }
        let Some(mut st) = self.state(&gk, &c.topic, r.queue, r.offset)? else {
            return Ok(Some("RECEIPT_INVALID".into()));
        };
        if st.status == Status::Acked && st.attempt == r.attempt && c.nack_delay_ms.is_none() {
            return Ok(None);
        }
        let current = st.status == Status::Leased
            && st.attempt == r.attempt
            && st.lease_index == r.lease_index
            && st.deadline_ms > c.now_ms;
        if !current {
            return Ok(Some("RECEIPT_EXPIRED".into()));
        }
        match c.nack_delay_ms {
            Some(delay) => {
                st.status = Status::Released;
                st.deadline_ms = c.now_ms.saturating_add(delay);
                self.group_put(
                    batch,
                    keys::state(&gk, &c.topic, r.queue, r.offset),
                    enc(&st),
                );
            }
            None if r.offset == self.floor(&gk, &c.topic, r.queue)? => {
                // The oldest open message: no record needed, the floor moves past it.
                self.group_delete(batch, keys::state(&gk, &c.topic, r.queue, r.offset));
                self.set_floor(&gk, &c.topic, r.queue, r.offset + 1);
                self.advance_floor(batch, &gk, &c.topic, r.queue)?;
            }
            None => {
                st.status = Status::Acked;
                self.group_put(
                    batch,
                    keys::state(&gk, &c.topic, r.queue, r.offset),
                    enc(&st),
                );
            }
        }
        Ok(None)
    }

    pub(crate) fn heartbeat(&mut self, batch: &mut IndexBatch<'_>, c: &HeartbeatCmd) -> R<Applied> {
        self.group_meta(batch, &c.group, None)?;
        let rec = ConsumerRec {
            last_ms: c.now_ms,
            session_ms: c.session_ms,
            topics: c.topics.clone(),
        };
        self.group_put(batch, keys::consumer(&c.group, &c.consumer), enc(&rec));
        for t in &c.topics {
            self.group_put(batch, keys::topic(&c.group, t), Vec::new());
        }
        let mut live: Vec<(String, ConsumerRec)> = Vec::new();
        for (k, v) in self.group_scan_all(&keys::consumers(&c.group))? {
            let (Some(name), Some(rec)) = (keys::consumer_name(&k), dec::<ConsumerRec>(&v)) else {
                continue;
            };
            if rec.last_ms.saturating_add(rec.session_ms) > c.now_ms {
                live.push((name, rec));
            } else {
                self.group_delete(batch, k);
            }
        }
        let mut assignments = Vec::new();
        for t in &c.topics {
            let queues = self.topic(t)?.map_or(0, |m| m.queues);
            let mut members: Vec<&str> = live
                .iter()
                .filter(|(_, r)| r.topics.iter().any(|x| x == t))
                .map(|(n, _)| n.as_str())
                .collect();
            members.sort_unstable();
            let mine = match members.iter().position(|n| *n == c.consumer) {
                Some(i) => (0..queues)
                    .filter(|q| *q as usize % members.len() == i)
                    .collect(),
                None => Vec::new(),
            };
            assignments.push((t.clone(), mine));
        }
        Ok(Applied::Assigned { assignments })
    }

    pub(crate) fn reset_offsets(&mut self, batch: &mut IndexBatch<'_>, c: &ResetCmd) -> R<Applied> {
        let Some(topic) = self.topic(&c.topic)? else {
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
        let meta = self.group_meta(batch, &c.group, None)?;
        // Broadcast groups keep one progress per consumer: reset every consumer's.
        let mut gkeys = vec![c.group.clone()];
        if meta.mode == GroupMode::Broadcast {
            for k in self.group_scan_all(&keys::consumers(&c.group))?.keys() {
                if let Some(name) = keys::consumer_name(k) {
                    gkeys.push(gkey(&c.group, meta.mode, &name));
                }
            }
        }
        self.group_put(batch, keys::topic(&c.group, &c.topic), Vec::new());
        for gk in &gkeys {
            for &(queue, offset) in &c.offsets {
                let prefix = keys::queue_states(gk, &c.topic, queue);
                let end = raftmq_storage::prefix_end(&prefix);
                batch.delete_group_range(&prefix, &end);
                let stale: Vec<Vec<u8>> = self
                    .group_overlay
                    .keys()
                    .filter(|k| k.starts_with(&prefix))
                    .cloned()
                    .collect();
                for k in stale {
                    self.group_overlay.insert(k, None);
                }
                for (k, _) in self.store.group_scan(&prefix, None, usize::MAX)? {
                    self.group_overlay.insert(k, None);
                }
                self.set_floor(gk, &c.topic, queue, offset);
            }
        }
        self.flush_floors(batch)?;
        Ok(Applied::Done)
    }
}

impl Applier {
    /// Drops every group's committed offsets and message states for a deleted topic, so a
    /// topic re-created under the same name starts with no consumer progress (as Kafka
    /// drops a deleted topic's offsets).
    pub(crate) fn forget_topic_in_groups(
        &mut self,
        batch: &mut IndexBatch<'_>,
        topic: &str,
        queues: u32,
    ) -> R<()> {
        // Every group that touched the topic (received, committed, heartbeated) has a
        // `T group topic` record.
        let mut gkeys: Vec<String> = Vec::new();
        for k in self.group_scan_all(b"T")?.into_keys() {
            let Some((group, t)) = keys::topic_record(&k) else {
                continue;
            };
            if t != topic {
                continue;
            }
            gkeys.push(group.clone());
            let meta = self
                .group_get(&keys::meta(&group))?
                .and_then(|b| dec::<GroupMeta>(&b));
            if meta.is_some_and(|m| m.mode == GroupMode::Broadcast) {
                for ck in self.group_scan_all(&keys::consumers(&group))?.keys() {
                    if let Some(c) = keys::consumer_name(ck) {
                        gkeys.push(gkey(&group, GroupMode::Broadcast, &c));
                    }
                }
            }
            self.group_delete(batch, k);
        }
        for gk in gkeys {
            batch.delete_offsets(&gk, topic, queues)?;
            for queue in 0..queues {
                self.floor_overlay
                    .remove(&(gk.clone(), topic.to_owned(), queue));
                let prefix = keys::queue_states(&gk, topic, queue);
                batch.delete_group_range(&prefix, &raftmq_storage::prefix_end(&prefix));
                for k in self.group_scan_all(&prefix)?.into_keys() {
                    self.group_overlay.insert(k, None);
                }
            }
        }
        Ok(())
    }
}

fn fresh(consumer: &str) -> MsgState {
    MsgState {
        status: Status::Released,
        attempt: 0,
        deadline_ms: 0,
        lease_index: 0,
        consumer: consumer.to_owned(),
    }
}
