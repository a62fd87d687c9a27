//! Applying acks and nacks: a receipt is honoured only for the current delivery of a
//! message (same attempt and lease, lease not expired at the entry's `now_ms`). Acking the
//! oldest open message moves the floor instead of writing a record.
//!
//! Must never: accept a receipt of an earlier delivery, or deliver an acked message again.

use raftmq_storage::IndexBatch;

use super::state::R;
use super::{ConsumerGroups, GroupMeta, Receipt, Status, enc, gkey, keys};
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
            results.push(self.ack_one(batch, &meta, c, r, now)?);
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
        now: u64,
    ) -> R<Option<String>> {
        let Some(r) = Receipt::parse(receipt) else {
            return Ok(Some("RECEIPT_INVALID".into()));
        };
        let gk = gkey(&c.group, meta.mode, &r.consumer);
        let floor = self.view().floor(&gk, &c.topic, r.queue)?;
        if r.offset < floor {
            // Everything below the floor is done; a repeated ack is harmless.
            return Ok(c.nack_delay_ms.map(|_| "RECEIPT_EXPIRED".into()));
        }
        let Some(mut st) = self.view().state(&gk, &c.topic, r.queue, r.offset)? else {
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
        let key = keys::state(&gk, &c.topic, r.queue, r.offset);
        match c.nack_delay_ms {
            Some(delay) => {
                st.status = Status::Released;
                st.deadline_ms = now.saturating_add(delay);
                self.put(batch, key, enc(&st));
            }
            None if r.offset == floor => {
                // The oldest open message: no record needed, the floor moves past it.
                self.delete(batch, key);
                self.set_floor(&gk, &c.topic, r.queue, r.offset + 1);
                self.advance_floor(batch, &gk, &c.topic, r.queue)?;
            }
            None => {
                st.status = Status::Acked;
                self.put(batch, key, enc(&st));
            }
        }
        Ok(None)
    }
}
