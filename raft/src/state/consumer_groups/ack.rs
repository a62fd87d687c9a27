//! Applying acks and nacks: a receipt is honoured only for the current delivery of a
//! message (same attempt and lease, lease not expired at the entry's `now_ms`). Acking the
//! oldest open message moves the floor past it. On a FIFO topic a nack of message n releases
//! n and every message after it in n's run (same lease), so they come back in order.
//!
//! Must never: accept a receipt of an earlier delivery, deliver an acked message again, or
//! leave a FIFO run's later messages leased while an earlier one is released.

use raftmq_storage::IndexBatch;

use super::state::R;
use super::{ConsumerGroupMode, ConsumerGroups, GroupMeta, Receipt, Status, backoff_after, gkey};
use crate::state::applied::{Applied, RejectCode, reject};
use crate::state::command::{AckCmd, NACK_WITH_BACKOFF};
use crate::state::queues::Queues;

impl ConsumerGroups {
    /// Applies an `Ack` command (a nack when it has a delay) at apply's time `now`.
    pub fn ack(
        &mut self,
        batch: &mut IndexBatch<'_>,
        queues: &mut Queues,
        c: &AckCmd,
        now: u64,
    ) -> R<Applied> {
        let (Some(meta), set) = self.view().settings(&c.group)? else {
            return Ok(reject(
                RejectCode::ConsumerGroupNotFound,
                format!("group {} does not exist", c.group),
            ));
        };
        // A nack on a deleted topic has no run to release.
        let fifo = queues.topic(&c.topic)?.is_some_and(|t| t.fifo);
        let backoff = match c.nack_delay_ms {
            Some(NACK_WITH_BACKOFF) => set.backoff(),
            _ => Vec::new(),
        };
        let mut results = Vec::with_capacity(c.receipts.len());
        for r in &c.receipts {
            results.push(self.ack_one(&meta, c, r, fifo, &backoff, now)?);
        }
        self.flush(batch)?;
        Ok(Applied::Acked { results })
    }

    fn ack_one(
        &mut self,
        meta: &GroupMeta,
        c: &AckCmd,
        receipt: &str,
        fifo: bool,
        backoff: &[u64],
        now: u64,
    ) -> R<Option<String>> {
        let Some(r) = Receipt::parse(receipt) else {
            return Ok(Some("RECEIPT_INVALID".into()));
        };
        // Clustering groups share one progress key: no allocation per receipt.
        let broadcast_key;
        let gk = match meta.mode {
            ConsumerGroupMode::Clustering => c.group.as_str(),
            ConsumerGroupMode::Broadcast => {
                broadcast_key = gkey(&c.group, meta.mode, &r.consumer);
                broadcast_key.as_str()
            }
        };
        let floor = self.floor(gk, &c.topic, r.queue)?;
        if r.offset < floor {
            // Everything below the floor is done; a repeated ack is harmless.
            return Ok(c.nack_delay_ms.map(|_| "RECEIPT_EXPIRED".into()));
        }
        let Some(mut st) = self.state(gk, &c.topic, r.queue, r.offset)? else {
            return Ok(Some("RECEIPT_INVALID".into()));
        };
        if st.status == Status::Acked && st.attempt == r.attempt && c.nack_delay_ms.is_none() {
            return Ok(None);
        }
        // Released by a nack of an earlier message of its FIFO run: nacking it is done.
        if fifo
            && st.status == Status::Released
            && st.attempt == r.attempt
            && st.lease_index == r.lease_index
            && c.nack_delay_ms.is_some()
        {
            return Ok(None);
        }
        let current = st.status == Status::Leased
            && st.attempt == r.attempt
            && st.lease_index == r.lease_index
            && st.deadline_ms > now;
        if !current {
            return Ok(Some("RECEIPT_EXPIRED".into()));
        }
        match c.nack_delay_ms {
            Some(delay) => {
                let delay = match delay {
                    NACK_WITH_BACKOFF => backoff_after(backoff, st.attempt),
                    d => d,
                };
                st.status = Status::Released;
                st.deadline_ms = now.saturating_add(delay);
                let back_at = st.deadline_ms;
                self.set_state(gk, &c.topic, r.queue, r.offset, st)?;
                if fifo {
                    self.release_rest_of_run(
                        gk,
                        &c.topic,
                        r.queue,
                        r.offset,
                        r.lease_index,
                        back_at,
                        now,
                    )?;
                }
            }
            None => {
                // Acking the oldest open message moves the floor past it (and on over what
                // is done), dropping the states it passes.
                st.status = Status::Acked;
                self.set_state(gk, &c.topic, r.queue, r.offset, st)?;
                if r.offset == floor {
                    self.advance_floor(gk, &c.topic, r.queue)?;
                }
            }
        }
        Ok(None)
    }

    /// FIFO: releases the messages after `offset` still leased by the same run (lease
    /// `lease_index`), deliverable again at `back_at`, behind the nacked one.
    #[allow(clippy::too_many_arguments)]
    fn release_rest_of_run(
        &mut self,
        gk: &str,
        topic: &str,
        queue: u32,
        offset: u64,
        lease_index: u64,
        back_at: u64,
        now: u64,
    ) -> R<()> {
        let rest: Vec<u64> = self
            .queue(gk, topic, queue)?
            .states
            .range(offset + 1..)
            .filter(|(_, st)| st.lease_index == lease_index && st.in_flight(now))
            .map(|(&o, _)| o)
            .collect();
        for o in rest {
            if let Some(mut st) = self.state(gk, topic, queue, o)? {
                st.status = Status::Released;
                st.deadline_ms = back_at;
                self.set_state(gk, topic, queue, o, st)?;
            }
        }
        Ok(())
    }
}
