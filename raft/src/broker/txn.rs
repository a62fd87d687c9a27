//! Transactions on the leader: producing half messages, committing or rolling them back by
//! id (`{broker_group}.{log index}`), and the check-back loop that asks a transaction's
//! `check_url` about it once its check is due.
//!
//! Every check runs in a task of its own with a deadline, at most [`MAX_CHECKS_AT_ONCE`] at a
//! time, so a target that hangs, answers garbage or is down costs only its own check (which
//! then counts as `unknown`).
//!
//! Must never: decide a transaction anywhere but in an applied `EndTxn` entry, or let a check
//! target hold up the loop, another transaction's check, or any other work.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::{Broker, MessageId, Placed, ProduceMessage};
use crate::error::{BrokerError, lock};
use crate::state::command::{EndTxnCmd, TxnCheck, TxnDecision};
use crate::state::queues::{TxnRecord, TxnState};
use crate::state::read::{self, StoredMessage};
use crate::state::{Applied, Command, RejectCode, TopicSpec};

/// How often the leader looks for transactions due for a check.
const CHECK_TICK: Duration = Duration::from_millis(100);
/// How long one check-back may take before it counts as `unknown`.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Most check-backs in flight at once.
const MAX_CHECKS_AT_ONCE: usize = 32;

/// Asks a transaction's producer whether to commit it (the API layer's HTTP client).
pub trait TxnChecker: Send + Sync + 'static {
    /// POSTs `{"transaction_id", "messages"}` to `url`; any failure or unreadable answer is
    /// [`TxnDecision::Unknown`]. The broker bounds the time it may take.
    fn check(
        &self,
        url: &str,
        txn_id: &str,
        messages: Vec<(MessageId, StoredMessage)>,
    ) -> Pin<Box<dyn Future<Output = TxnDecision> + Send + 'static>>;
}

/// What the transactions part of a broker keeps.
#[derive(Default)]
pub(super) struct Txns {
    checker: Mutex<Option<Arc<dyn TxnChecker>>>,
    /// Transactions whose check is running.
    in_flight: Mutex<HashSet<u64>>,
}

/// A transaction as `GET /v1/transactions/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnInfo {
    /// Its id.
    pub id: String,
    /// Its topic.
    pub topic: String,
    /// Where it stands.
    pub state: TxnState,
    /// Check-backs that did not decide it.
    pub checks: u32,
    /// When it was produced.
    pub created_ms: u64,
    /// When it was decided.
    pub decided_ms: Option<u64>,
    /// Its messages once committed.
    pub placed: Vec<Placed>,
}

/// The check settings of a transactional produce.
#[derive(Clone, Debug)]
pub struct TxnRequest {
    /// Where to check back.
    pub check_url: String,
    /// When first (and between checks).
    pub check_after_ms: u64,
    /// Checks before an undecided transaction is rolled back.
    pub max_checks: u32,
}

impl Broker {
    /// Sets the client that checks transactions back (without one, every check is
    /// `unknown`, so undecided transactions roll back after their last check).
    pub fn set_txn_checker(&self, checker: Arc<dyn TxnChecker>) {
        *lock(&self.inner.txns.checker) = Some(checker);
    }

    fn txn_id(&self, log_index: u64) -> String {
        format!("{}.{log_index}", self.broker_group())
    }

    /// The log index a transaction id of this broker group names.
    fn txn_index(&self, id: &str) -> Option<u64> {
        let (group, index) = id.rsplit_once('.')?;
        (group == self.broker_group()).then_some(())?;
        index.parse().ok()
    }

    fn no_such_txn(id: &str) -> BrokerError {
        BrokerError::rejected(
            RejectCode::NotFound,
            format!("transaction {id} does not exist"),
        )
    }

    /// Produces half messages as one transaction (on the leader); its id and the messages'
    /// ids (no offsets until it is committed).
    pub async fn produce_half(
        &self,
        topic: &str,
        messages: &[ProduceMessage],
        txn: TxnRequest,
        auto_create: Option<TopicSpec>,
    ) -> Result<(String, Vec<Placed>), BrokerError> {
        let (own, retention_ms, create_topic) = self.produce_target(topic, auto_create).await?;
        let buf = self
            .encode_batch(topic, messages, own, retention_ms)
            .await?;
        let cmd = Command::ProduceHalf {
            create_topic,
            check: TxnCheck {
                check_url: txn.check_url,
                check_after_ms: txn.check_after_ms,
                max_checks: txn.max_checks,
            },
            batch: Bytes::from(buf),
        };
        match self.propose_checked(cmd).await? {
            Applied::Produced {
                log_index, placed, ..
            } => {
                let placed = placed
                    .into_iter()
                    .zip(0u32..)
                    .map(|((queue, offset), slot)| Placed {
                        msg_id: self.id_of(log_index, slot),
                        queue,
                        offset,
                    })
                    .collect();
                Ok((self.txn_id(log_index), placed))
            }
            other => Err(BrokerError::Internal(format!(
                "transactional produce applied as {other:?}"
            ))),
        }
    }

    /// Commits or rolls back a transaction (on the leader). Deciding it again the same way
    /// answers the same; the other way is 409.
    pub async fn end_txn(&self, id: &str, commit: bool) -> Result<TxnInfo, BrokerError> {
        let txn = self.txn_index(id).ok_or_else(|| Self::no_such_txn(id))?;
        let decision = if commit {
            TxnDecision::Commit
        } else {
            TxnDecision::Rollback
        };
        let now_ms = self.group_time().await?;
        let applied = self
            .propose_checked(Command::EndTxn(EndTxnCmd {
                txn,
                decision,
                now_ms,
            }))
            .await
            .map_err(|e| match e {
                BrokerError::Rejected { code, message } => BrokerError::Rejected {
                    code,
                    message: format!("transaction {id} {message}"),
                },
                other => other,
            })?;
        match applied {
            // A commit that found its topic deleted (or came after the last check) rolled
            // the transaction back.
            Applied::TxnEnded {
                state: TxnState::RolledBack,
                ..
            } if commit => Err(BrokerError::rejected(
                RejectCode::Conflict,
                format!("transaction {id} is rolled back"),
            )),
            Applied::TxnEnded { .. } => self
                .transaction(id)
                .await?
                .ok_or_else(|| Self::no_such_txn(id)),
            other => Err(BrokerError::Internal(format!(
                "a transaction decision applied as {other:?}"
            ))),
        }
    }

    /// A transaction as this node's applied state has it.
    pub async fn transaction(&self, id: &str) -> Result<Option<TxnInfo>, BrokerError> {
        let Some(txn) = self.txn_index(id) else {
            return Ok(None);
        };
        let rec = self.read(move |s, _| TxnRecord::load(s, txn)).await?;
        Ok(rec.map(|r| TxnInfo {
            id: id.to_owned(),
            placed: r
                .placed
                .iter()
                .zip(0u32..)
                .map(|(&(queue, offset), slot)| Placed {
                    msg_id: self.id_of(txn, slot),
                    queue,
                    offset: Some(offset),
                })
                .collect(),
            topic: r.topic,
            state: r.state,
            checks: r.checks,
            created_ms: r.created_ms,
            decided_ms: r.decided_ms,
        }))
    }

    /// On the leader, every [`CHECK_TICK`]: starts a check of each transaction whose check
    /// is due by group time and not already running.
    pub(super) fn spawn_txn_checks(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECK_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CHECKS_AT_ONCE));
            loop {
                tick.tick().await;
                if this.metrics().running_state.is_err() {
                    return;
                }
                if !this.is_leader() || !this.clock_synced() {
                    continue;
                }
                let now = this.group_now_ms();
                let due = match this.read(move |s, _| s.txn_checks_due(now, 64)).await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading due transaction checks");
                        continue;
                    }
                };
                for (_, txn) in due {
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        break;
                    };
                    if !lock(&this.inner.txns.in_flight).insert(txn) {
                        continue;
                    }
                    let this = this.clone();
                    tokio::spawn(async move {
                        if let Err(e) = this.check_back(txn).await {
                            tracing::debug!(txn, error = %e, "transaction check failed");
                        }
                        lock(&this.inner.txns.in_flight).remove(&txn);
                        drop(permit);
                    });
                }
            }
        });
    }

    /// Checks one transaction back and proposes what its producer answered.
    async fn check_back(&self, txn: u64) -> Result<(), BrokerError> {
        let found = self
            .blocking(move |s, log| -> Result<_, BrokerError> {
                let Some(rec) = TxnRecord::load(s, txn)? else {
                    return Ok(None);
                };
                if rec.state != TxnState::Open {
                    return Ok(None);
                }
                let msgs = read::entry_messages(&log.read_log(), txn)?;
                Ok(Some((rec.check.check_url, msgs)))
            })
            .await??;
        let Some((url, msgs)) = found else {
            return Ok(());
        };
        let id = self.txn_id(txn);
        let msgs = msgs.into_iter().map(|m| (self.message_id(&m), m)).collect();
        let checker = lock(&self.inner.txns.checker).clone();
        let decision = match checker {
            Some(c) => tokio::time::timeout(CHECK_TIMEOUT, c.check(&url, &id, msgs))
                .await
                .unwrap_or(TxnDecision::Unknown),
            None => TxnDecision::Unknown,
        };
        tracing::info!(txn = %id, ?decision, "transaction checked back");
        self.propose(Command::EndTxn(EndTxnCmd {
            txn,
            decision,
            now_ms: self.group_now_ms(),
        }))
        .await?;
        Ok(())
    }
}
