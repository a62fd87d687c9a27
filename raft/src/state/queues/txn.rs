//! Transactions at apply: a `ProduceHalf` entry stores half messages — in the CommitLog,
//! in no queue — and a record of the transaction (its messages' positions, check settings);
//! `EndTxn` commits them (each to the tail of its queue with the next offset, store time the
//! commit's), rolls them back (they are never readable), or counts a check-back that gave no
//! answer (rolling back after the last allowed one).
//!
//! An open transaction pins its whole log entry; committed messages are pinned one by one
//! (they sit behind newer messages in their queues) until retention removes them.
//!
//! Must never: place a message of a transaction that is not committed, change a decided
//! transaction's outcome, or let time at apply come from anywhere but the entry.

use raftmq_storage::message::tag_hash;
use raftmq_storage::{IndexBatch, IndexStore};
use serde::{Deserialize, Serialize};

use super::schedule::Placement;
use super::{Queues, R};
use crate::state::applied::{Applied, RejectCode, reject};
use crate::state::command::{EndTxnCmd, TopicSpec, TxnCheck, TxnDecision};
use crate::state::consumer_groups::{dec, enc};

/// Where a transaction stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    /// Undecided: its messages are invisible.
    Open,
    /// Its messages are in their queues.
    Committed,
    /// Its messages will never be readable.
    RolledBack,
}

impl TxnState {
    /// `open` / `committed` / `rolled_back`.
    pub fn as_str(self) -> &'static str {
        match self {
            TxnState::Open => "open",
            TxnState::Committed => "committed",
            TxnState::RolledBack => "rolled_back",
        }
    }
}

/// What committing a half message needs (its ConsumeQueue entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct HalfMessage {
    slot: u32,
    queue: u32,
    size: u32,
    tag_hash: u32,
    key: Option<String>,
}

/// A transaction, as stored (postcard) under its log index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    /// Its topic.
    pub topic: String,
    /// Where it stands.
    pub state: TxnState,
    /// When it was produced (the batch's store time).
    pub created_ms: u64,
    /// When it was committed or rolled back.
    pub decided_ms: Option<u64>,
    /// How it is checked back.
    pub check: TxnCheck,
    /// Check-backs made so far that did not decide it.
    pub checks: u32,
    /// When the next check is due (while open).
    pub next_check_ms: Option<u64>,
    /// The half messages (while open).
    messages: Vec<HalfMessage>,
    /// `(queue, offset)` of each message, in batch order (once committed).
    pub placed: Vec<(u32, u64)>,
}

impl TxnRecord {
    /// Decodes a stored record.
    pub fn decode(b: &[u8]) -> Option<TxnRecord> {
        dec(b)
    }

    /// The record of the transaction written at `log_index`, if `store` has one.
    pub fn load(store: &IndexStore, log_index: u64) -> R<Option<TxnRecord>> {
        Ok(store
            .txn_get(log_index)?
            .and_then(|b| TxnRecord::decode(&b)))
    }
}

impl Queues {
    /// Stores a transaction's half messages (checked like a produce, stored whole or not at
    /// all). Answers like a produce whose messages have no offsets yet.
    pub fn produce_half(
        &mut self,
        batch: &mut IndexBatch<'_>,
        log_index: u64,
        create_topic: Option<TopicSpec>,
        check: &TxnCheck,
        bytes: &[u8],
    ) -> R<Applied> {
        let (view, _) = match self.checked_batch(batch, create_topic, bytes)? {
            Ok(v) => v,
            Err(refusal) => return Ok(refusal),
        };
        let mut messages = Vec::with_capacity(view.count as usize);
        for m in view.iter() {
            let m = m.expect("checked");
            if m.deliver_at_ms.is_some() || m.idempotency_key.is_some() {
                return Ok(reject(
                    RejectCode::InvalidArgument,
                    format!(
                        "messages[{}]: a transactional message takes no delay or idempotency key",
                        m.slot
                    ),
                ));
            }
            messages.push(HalfMessage {
                slot: m.slot,
                queue: m.queue,
                size: m.encoded_len,
                tag_hash: tag_hash(m.tag),
                key: m.key.map(str::to_owned),
            });
        }
        let next_check = view.store_ms.saturating_add(check.check_after_ms);
        let placed = messages.iter().map(|m| (m.queue, None)).collect();
        let record = TxnRecord {
            topic: view.topic.to_owned(),
            state: TxnState::Open,
            created_ms: view.store_ms,
            decided_ms: None,
            check: check.clone(),
            checks: 0,
            next_check_ms: Some(next_check),
            messages,
            placed: Vec::new(),
        };
        batch.put_txn(log_index, &enc(&record));
        batch.put_txn_check(next_check, log_index);
        batch.pin_entry(log_index, view.topic)?;
        Ok(Applied::Produced {
            log_index,
            placed,
            originals: Vec::new(),
        })
    }

    /// Commits, rolls back or counts a check of a transaction (reads its record: a batch of
    /// its own). A decision equal to the one taken is answered again; the other one is a
    /// conflict. Refusals say what is wrong with "the transaction" (the caller names it).
    pub fn end_txn(&mut self, batch: &mut IndexBatch<'_>, c: &EndTxnCmd, now: u64) -> R<Applied> {
        let Some(mut rec) = TxnRecord::load(&self.store, c.txn)? else {
            return Ok(reject(RejectCode::NotFound, "does not exist"));
        };
        match (rec.state, c.decision) {
            (TxnState::Open, _) => {}
            (TxnState::Committed, TxnDecision::Commit)
            | (TxnState::RolledBack, TxnDecision::Rollback)
            | (_, TxnDecision::Unknown) => return Ok(ended(&rec)),
            (state, _) => {
                return Ok(reject(
                    RejectCode::Conflict,
                    format!("is already {}", state.as_str().replace('_', " ")),
                ));
            }
        }
        if let Some(at) = rec.next_check_ms.take() {
            batch.delete_txn_check(at, c.txn);
        }
        let commit = match c.decision {
            TxnDecision::Commit => true,
            TxnDecision::Rollback => false,
            TxnDecision::Unknown => {
                rec.checks += 1;
                if rec.checks < rec.check.max_checks {
                    let at = now.saturating_add(rec.check.check_after_ms);
                    rec.next_check_ms = Some(at);
                    batch.put_txn_check(at, c.txn);
                    batch.put_txn(c.txn, &enc(&rec));
                    return Ok(ended(&rec));
                }
                false
            }
        };
        // A topic deleted meanwhile takes its messages with it: the commit becomes a
        // rollback (which the caller sees as a conflict with its decision).
        let committed = commit && self.topic(&rec.topic)?.is_some();
        if committed {
            for m in std::mem::take(&mut rec.messages) {
                let offset = self.place_one(
                    batch,
                    &Placement {
                        topic: &rec.topic,
                        queue: m.queue,
                        log_index: c.txn,
                        slot: m.slot,
                        size: m.size,
                        tag_hash: m.tag_hash,
                        key: m.key.as_deref(),
                        store_ms: now,
                    },
                )?;
                batch.put_pin(&rec.topic, m.queue, offset, c.txn, m.slot)?;
                rec.placed.push((m.queue, offset));
            }
        }
        rec.messages.clear();
        rec.state = if committed {
            TxnState::Committed
        } else {
            TxnState::RolledBack
        };
        rec.decided_ms = Some(now);
        batch.unpin_entry(c.txn, &rec.topic);
        batch.put_txn(c.txn, &enc(&rec));
        Ok(ended(&rec))
    }
}

fn ended(rec: &TxnRecord) -> Applied {
    Applied::TxnEnded {
        state: rec.state,
        checks: rec.checks,
    }
}
