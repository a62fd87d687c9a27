//! Scheduled messages on the leader: resolving a produce request's `delay_ms` or
//! `deliver_at_ms` to a due time, and the delivery loop that proposes `Deliver` once a
//! pending message is due.
//!
//! Must never: put a message in its queue by a replica's own clock (the `Deliver` entry
//! carries the leader's group time, and apply decides what is due), or accept a due time
//! past the topic's retention (the log entry would be purged under a pending message).

use std::time::Duration;

use super::Broker;
use crate::error::BrokerError;
use crate::state::queues::NO_TIMER;
use crate::state::{Command, RejectCode};

/// How often the leader looks whether a scheduled message is due: its share of the time
/// from due to readable (the rest is one commit).
const DELIVERY_TICK: Duration = Duration::from_millis(10);

/// A `deliver_at_ms` this far in the past is taken as "now" (the producer's clock may be a
/// little behind the leader's); further back it is refused.
pub const PAST_GRACE_MS: u64 = 1_000;

/// When a produced message may be read, as the request asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// `delay_ms`: this long after the leader stores it.
    After(u64),
    /// `deliver_at_ms`: at this time.
    At(u64),
}

impl Schedule {
    /// The due time of message `i` stored at `now` in a topic with `retention_ms`
    /// (`None`: readable at once), or the refusal naming the field.
    pub(super) fn due(
        self,
        i: usize,
        now: u64,
        retention_ms: u64,
    ) -> Result<Option<u64>, BrokerError> {
        let invalid = |m: String| BrokerError::rejected(RejectCode::InvalidArgument, m);
        match self {
            Schedule::After(0) => Ok(None),
            Schedule::After(d) if d > retention_ms => Err(invalid(format!(
                "messages[{i}].delay_ms: {d} is more than the topic's retention ({retention_ms} ms)"
            ))),
            Schedule::After(d) => Ok(Some(now + d)),
            Schedule::At(t) if t.saturating_add(PAST_GRACE_MS) < now => Err(invalid(format!(
                "messages[{i}].deliver_at_ms: {t} is in the past (the broker's time is {now})"
            ))),
            Schedule::At(t) if t <= now => Ok(None),
            Schedule::At(t) if t - now > retention_ms => Err(invalid(format!(
                "messages[{i}].deliver_at_ms: {t} is more than the topic's retention \
                 ({retention_ms} ms) after the broker's time ({now})"
            ))),
            Schedule::At(t) => Ok(Some(t)),
        }
    }
}

impl Broker {
    /// The leader proposes `Deliver` whenever the earliest pending message is due by group
    /// time; apply puts every due message (up to a bound) into its queue. Only once group
    /// time is known: a new leader's own clock does not decide.
    pub(super) fn spawn_delivery(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DELIVERY_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if this.metrics().running_state.is_err() {
                    return;
                }
                let due = this.inner.sm.next_due();
                if due == NO_TIMER || !this.is_leader() || !this.clock_synced() {
                    continue;
                }
                let now_ms = this.group_now_ms();
                if due > now_ms {
                    continue;
                }
                if let Err(e) = this.propose(Command::Deliver { now_ms }).await {
                    tracing::debug!(error = %e, "delivery proposal failed");
                }
            }
        });
    }
}
