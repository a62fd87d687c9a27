//! Applying acks and nacks: a receipt is honoured only for the current delivery of a
//! message (same attempt and lease, lease not expired at the entry's `now_ms`). Acking the
//! oldest open message moves the floor past it.
//!
//! Must never: accept a receipt of an earlier delivery, or deliver an acked message again.

use raftmq_storage::IndexBatch;

use super::state::R;
use super::{ConsumerGroupMode, ConsumerGroups, GroupMeta, Receipt, Status, gkey};
use crate::state::applied::{Applied, RejectCode, reject};
use crate::state::command::AckCmd;

impl ConsumerGroups {
    /// Applies an `Ack` command (a nack when it has a delay) at apply's time `now`.
    pub fn ack(&mut self, batch: &mut IndexBatch<'_>, c: &AckCmd, now: u64) -> R<Applied> {
        let Some(meta) = self.view().meta(&c.group)? else {
            return Ok(reject(
                RejectCode::ConsumerGroupNotFound,
                format!("group {} does not exist", c.group),
            ));
        };
        let mut results = Vec::with_capacity(c.receipts.len());
        for r in &c.receipts {
            results.push(self.ack_one(&meta, c, r, now)?);
        }
        self.flush(batch)?;
        Ok(Applied::Acked { results })
    }

    fn ack_one(
        &mut self,
        meta: &GroupMeta,
        c: &AckCmd,
        receipt: &str,
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
        let current = st.status == Status::Leased
            && st.attempt == r.attempt
            && st.lease_index == r.lease_index
            && st.deadline_ms > now;
        if !current {
            return Ok(Some("RECEIPT_EXPIRED".into()));
        }
        match c.nack_delay_ms {
            Some(delay) => {
                st.status = Status::Released;
                st.deadline_ms = now.saturating_add(delay);
                self.set_state(gk, &c.topic, r.queue, r.offset, st)?;
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
}
