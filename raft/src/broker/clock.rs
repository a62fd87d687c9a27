//! Group time: the wall clock a leader stamps into entries (store times, lease deadlines,
//! retention cut-offs) is not its own but the group's, so one node whose clock is wrong, or
//! jumps, cannot expire messages or leases early by becoming leader.
//!
//! Every node asks each other member for its clock ([`PeerRpc::Clock`]) regularly and
//! estimates each member's offset from its own (half the round trip is taken as the delay).
//! Its offset to group time is the lower median of `{0 (itself), the members that
//! answered}`: with a majority of correct clocks it is the correct time; between two
//! candidates it prefers the earlier one, which delays expiry rather than hastening it. A
//! measurement anchors group time to this node's *monotonic* clock, so a jump of its wall
//! clock between measurements changes nothing (the next measurement sees the jump and the
//! median corrects it). Apply then never lets time go backwards (see `state::applier`).
//!
//! A node's own wall clock is a [`WallClock`]: the OS's ([`SystemClock`]) unless the
//! configuration names another (a simulation skews nodes' clocks and moves time forward
//! through it, so leases, retention and every leader-stamped time are under its control).
//!
//! Must never: hand out group time before a majority (itself included) has answered once,
//! block on a slow or cut member (each ask has a short deadline), or let a minority's
//! answers move group time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Broker;
use crate::consensus::rpc::{self, PeerRpc};
use crate::error::BrokerError;

/// How often the clocks are compared once group time is known.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How often until then.
const SYNC_FIRST: Duration = Duration::from_millis(100);
/// How long one member may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a write waits for group time after a node starts before answering 503.
const WAIT_FOR_TIME: Duration = Duration::from_secs(5);

/// A node's own wall clock.
pub trait WallClock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// Group time, anchored at the last measurement.
#[derive(Debug)]
pub(crate) struct GroupClock {
    /// This node's own wall clock.
    wall: std::sync::Arc<dyn WallClock>,
    /// `(monotonic instant, group time then)` of the last measurement.
    anchor: Mutex<Option<(Instant, u64)>>,
    synced: AtomicBool,
    known: tokio::sync::Notify,
}

impl GroupClock {
    pub(crate) fn new(wall: std::sync::Arc<dyn WallClock>) -> Self {
        GroupClock {
            wall,
            anchor: Mutex::new(None),
            synced: AtomicBool::new(false),
            known: tokio::sync::Notify::new(),
        }
    }

    /// This node's own wall clock, ms since the epoch (what it answers `/raft/clock` with).
    pub(crate) fn wall_ms(&self) -> u64 {
        self.wall.now_ms()
    }

    /// Group time in ms since the epoch (this node's own clock before the first
    /// measurement).
    pub(crate) fn now_ms(&self) -> u64 {
        let anchor = *self.anchor.lock().unwrap_or_else(|e| e.into_inner());
        match anchor {
            Some((at, ms)) => ms.saturating_add(at.elapsed().as_millis() as u64),
            None => self.wall_ms(),
        }
    }
}

/// The lower median of `offsets` (which holds at least this node's own 0).
fn lower_median(mut offsets: Vec<i64>) -> i64 {
    offsets.sort_unstable();
    offsets[(offsets.len() - 1) / 2]
}

impl Broker {
    /// Group time in ms since the epoch (this node's own clock before the first
    /// measurement; see [`Broker::group_time`] for writes).
    pub(crate) fn group_now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// Whether group time has been measured against a majority at least once.
    pub(crate) fn clock_synced(&self) -> bool {
        self.inner.clock.synced.load(Ordering::Acquire)
    }

    /// Group time for an entry this node proposes: waits (briefly, after a start) until it
    /// is known, else refuses, since a write must not carry this node's own clock.
    pub(crate) async fn group_time(&self) -> Result<u64, BrokerError> {
        if !self.clock_synced() {
            let known = self.inner.clock.known.notified();
            if !self.clock_synced() {
                let _ = tokio::time::timeout(WAIT_FOR_TIME, known).await;
            }
            if !self.clock_synced() {
                return Err(BrokerError::Unavailable(
                    "this node has not yet compared its clock with a majority of its group".into(),
                ));
            }
        }
        Ok(self.group_now_ms())
    }

    pub(super) fn spawn_clock_sync(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if !this.is_running() {
                    return;
                }
                this.sync_clock().await;
                let pause = if this.clock_synced() {
                    SYNC_EVERY
                } else {
                    SYNC_FIRST
                };
                tokio::time::sleep(pause).await;
            }
        });
    }

    async fn sync_clock(&self) {
        let status = self.cluster_status();
        let others: Vec<String> = status
            .members
            .iter()
            .filter(|m| m.id != self.node_id())
            .map(|m| m.addr.clone())
            .collect();
        let asks = others.iter().map(|addr| self.ask_clock(addr));
        let mut offsets: Vec<i64> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        let answered = offsets.len() + 1;
        // Before it knows its group (no membership yet) a node knows no majority; cut off
        // from a majority it keeps counting from its last measurement.
        if status.members.is_empty() || answered * 2 <= status.members.len() {
            return;
        }
        offsets.push(0);
        let offset = lower_median(offsets);
        let group_ms = self.inner.clock.wall_ms().saturating_add_signed(offset);
        let drift = self.group_now_ms().abs_diff(group_ms);
        *self
            .inner
            .clock
            .anchor
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), group_ms));
        if offset.unsigned_abs() > 1000 && drift > 1000 {
            tracing::warn!(
                offset_ms = offset,
                answered,
                "this node's clock is off group time; entries it proposes use group time"
            );
        }
        if !self.inner.clock.synced.swap(true, Ordering::AcqRel) {
            self.inner.clock.known.notify_waiters();
        }
    }

    /// One member's clock minus ours, in ms, if it answered in time.
    async fn ask_clock(&self, addr: &str) -> Option<i64> {
        let sent = Instant::now();
        let credentials =
            self.inner
                .peer_auth
                .sign(PeerRpc::Clock, self.node_id(), self.group_now_ms(), b"");
        let body = self
            .inner
            .transport
            .send(
                addr,
                PeerRpc::Clock,
                credentials,
                bytes::Bytes::new(),
                ASK_TIMEOUT,
            )
            .await
            .ok()?;
        let theirs: u64 = rpc::decode(PeerRpc::Clock.response_name(), &body).ok()?;
        let ours = self.inner.clock.wall_ms();
        let half_trip = (sent.elapsed().as_millis() / 2) as i64;
        Some(theirs as i64 + half_trip - ours as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::lower_median;

    #[test]
    fn one_wrong_clock_among_three_does_not_move_group_time() {
        let day = 86_400_000;
        // This node is ten days ahead: the others say so, and it corrects itself.
        assert_eq!(lower_median(vec![0, -10 * day, -10 * day - 3]), -10 * day);
        // Another node is ahead: this one stays where it is.
        assert_eq!(lower_median(vec![0, 10 * day, 2]), 2);
        // Two clocks that disagree: the earlier wins.
        assert_eq!(lower_median(vec![0, 10 * day]), 0);
        assert_eq!(lower_median(vec![0, -10 * day]), -10 * day);
        assert_eq!(lower_median(vec![0]), 0);
    }
}
