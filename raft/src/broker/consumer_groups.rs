//! Consumer groups from the leader's side: receive (plan from the applied state, propose the
//! lease, read what apply granted), ack and nack, heartbeats, offsets, and group views.
//!
//! Must never: hand a message to a consumer without a committed lease: the leader's plan is
//! only a proposal; what apply granted is what gets delivered.

use std::time::{Duration, Instant};

use super::Broker;
use crate::error::BrokerError;
use crate::state::command::{AckCmd, GroupSettingsCmd, HeartbeatCmd, LeaseCmd, ResetCmd};
use crate::state::consumer_groups::{
    ConsumerGroupInfo, ConsumerGroupMode, ReceiveRequest, ResetTo, info, plan,
};
use crate::state::read::{StoredMessage, filter_misses, read_granted};
use crate::state::{Applied, Assignment, Command, RejectCode};

/// A received message.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The message.
    pub message: StoredMessage,
    /// Delivery number.
    pub attempt: u32,
    /// Receipt to ack it with.
    pub receipt: String,
}

fn unexpected(what: &str, applied: Applied) -> BrokerError {
    BrokerError::Internal(format!("{what} applied as {applied:?}"))
}

impl Broker {
    /// Receives up to `req.max` messages (on the leader): leases them through Raft, then
    /// reads them. Waits up to `req.wait_ms` for something to deliver.
    pub async fn receive(&self, req: ReceiveRequest) -> Result<Vec<Delivery>, BrokerError> {
        let deadline = Instant::now() + Duration::from_millis(req.wait_ms);
        let mut applied = self.applied();
        let start_queue = (raftmq_storage::message::tag_hash(Some(&req.consumer))
            ^ (self.group_now_ms() as u32))
            % 1024;
        loop {
            applied.borrow_and_update();
            let r = req.clone();
            let now = self.group_time().await?;
            let (sm, reserved) = (self.inner.sm.clone(), self.inner.reserved.clone());
            let plan = self
                .blocking(move |store, log| {
                    let mut plan = sm.plan_receive(&r, start_queue, now, &reserved)?;
                    // The plan matched tags by hash; a collision, or a message the SQL
                    // filter does not select, is skipped, not delivered.
                    if (r.tag.is_some() || r.sql.is_some()) && !plan.items.is_empty() {
                        let misses = filter_misses(
                            store,
                            &log.read_log(),
                            &r.topic,
                            r.tag.as_ref(),
                            r.sql.as_deref(),
                            &plan.items,
                        )?;
                        plan.items.retain(|i| !misses.contains(i));
                        plan.skip.extend(misses);
                    }
                    Ok::<_, BrokerError>(plan)
                })
                .await??;
            if !plan.is_empty() {
                // Held until the lease below is applied (or fails, or this is abandoned).
                let _reservation = plan.reservation;
                let cmd = Command::Lease(LeaseCmd {
                    group: req.group.clone(),
                    topic: req.topic.clone(),
                    consumer: req.consumer.clone(),
                    mode: req.mode,
                    now_ms: self.group_time().await?,
                    invisible_ms: req.invisible_ms,
                    items: plan.items,
                    skip: plan.skip,
                    dead: plan.dead,
                });
                if let Applied::Leased { granted } = self.propose_checked(cmd).await?
                    && !granted.is_empty()
                {
                    let topic = req.topic.clone();
                    let read = self
                        .blocking(move |s, log| read_granted(s, &log.read_log(), &topic, &granted))
                        .await??;
                    return Ok(read
                        .into_iter()
                        .map(|(message, attempt, receipt)| Delivery {
                            message,
                            attempt,
                            receipt,
                        })
                        .collect());
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            // New messages wake us; expiring leases are found by looking again shortly.
            let nap = (deadline - now).min(Duration::from_millis(200));
            let _ = tokio::time::timeout(nap, applied.changed()).await;
        }
    }

    /// Sets a consumer group's retry policy (what is `None` keeps its value; the group's
    /// mode is still fixed by its first use) and answers the settings in effect:
    /// `max_attempts` and the backoff by attempt.
    pub async fn put_group(
        &self,
        group: &str,
        max_attempts: Option<u32>,
        retry_backoff_ms: Option<Vec<u64>>,
    ) -> Result<(u32, Vec<u64>), BrokerError> {
        let settings = GroupSettingsCmd {
            group: group.to_owned(),
            max_attempts,
            retry_backoff_ms,
        };
        if let Some(why) = settings.invalid() {
            return Err(BrokerError::rejected(RejectCode::InvalidArgument, why));
        }
        self.propose_checked(Command::PutGroup(settings)).await?;
        let group = group.to_owned();
        self.read(move |s, _| crate::state::consumer_groups::info::retry_settings(s, &group))
            .await
    }

    /// Acks (or, with a delay, nacks) receipts; per receipt `None` or an error code.
    pub async fn ack(
        &self,
        group: &str,
        topic: &str,
        receipts: Vec<String>,
        nack_delay_ms: Option<u64>,
    ) -> Result<Vec<Option<String>>, BrokerError> {
        let cmd = Command::Ack(AckCmd {
            group: group.to_owned(),
            topic: topic.to_owned(),
            receipts,
            now_ms: self.group_time().await?,
            nack_delay_ms,
        });
        match self.propose_checked(cmd).await? {
            Applied::Acked { results } => Ok(results),
            other => Err(unexpected("ack", other)),
        }
    }

    /// Records a heartbeat; returns the consumer's queues per topic.
    pub async fn heartbeat(
        &self,
        group: &str,
        consumer: &str,
        topics: Vec<String>,
        session_ms: u64,
    ) -> Result<Vec<Assignment>, BrokerError> {
        let cmd = Command::Heartbeat(HeartbeatCmd {
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            topics,
            session_ms,
            now_ms: self.group_time().await?,
        });
        match self.propose_checked(cmd).await? {
            Applied::Assigned { assignments } => Ok(assignments),
            other => Err(unexpected("heartbeat", other)),
        }
    }

    /// Resets a group's offsets in every queue of a topic; returns the new offsets.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<Vec<(u32, u64)>, BrokerError> {
        let t = topic.to_owned();
        let offsets = self
            .blocking(move |s, _| plan::reset_targets(s, &t, to))
            .await??;
        let cmd = Command::ResetOffsets(ResetCmd {
            group: group.to_owned(),
            topic: topic.to_owned(),
            offsets: offsets.clone(),
        });
        self.propose_checked(cmd).await?;
        Ok(offsets)
    }

    /// Sets a group's committed offsets in some queues of a topic.
    pub async fn commit_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: Vec<(u32, u64)>,
    ) -> Result<(), BrokerError> {
        self.propose_checked(Command::CommitOffsets {
            group: group.to_owned(),
            topic: topic.to_owned(),
            offsets,
        })
        .await?;
        Ok(())
    }

    /// A group's committed offsets for a topic, by queue (queues never committed absent).
    pub async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<(u32, u64)>, BrokerError> {
        let (group, topic) = (group.to_owned(), topic.to_owned());
        self.read(move |s, _| s.offsets_of(&group, &topic)).await
    }

    /// Every consumer group's name and mode.
    pub async fn consumer_groups(&self) -> Result<Vec<(String, ConsumerGroupMode)>, BrokerError> {
        self.read(|s, _| info::list(s)).await
    }

    /// One consumer group's state, or `None` if it was never used.
    pub async fn consumer_group(
        &self,
        group: &str,
    ) -> Result<Option<ConsumerGroupInfo>, BrokerError> {
        let group = group.to_owned();
        let now = self.group_now_ms();
        self.read(move |s, _| info::info(s, &group, now)).await
    }
}
