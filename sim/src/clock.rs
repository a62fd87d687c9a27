//! The nodes' wall clocks, under the schedule's control: every node reads the machine's
//! clock plus a time warp shared by all (steps move it forward, so leases expire and
//! retention passes within a schedule of seconds) plus a skew of its own (steps set a
//! node's clock minutes ahead or behind, as an NTP fault does). Each node's clock survives
//! its restarts, as a machine's does.
//!
//! What this does not control: the monotonic clocks that openraft's election and heartbeat
//! timers, request deadlines and group time's anchor run on (see docs/simulation.md).
//!
//! Must never: move the shared warp backwards (time the group has stamped into entries
//! would then lie ahead of every clock).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use raftmq_raft::{SystemClock, WallClock};

/// The time warp all nodes share.
#[derive(Debug, Default)]
pub struct Warp(AtomicI64);

impl Warp {
    /// Moves every node's clock `ms` forward.
    pub fn forward(&self, ms: u64) {
        self.0.fetch_add(ms as i64, Ordering::Relaxed);
    }

    /// How far clocks have been moved, ms.
    pub fn total(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One node's wall clock.
#[derive(Debug)]
pub struct NodeClock {
    warp: Arc<Warp>,
    skew: AtomicI64,
}

impl NodeClock {
    /// A clock on the shared `warp`, not skewed.
    pub fn new(warp: Arc<Warp>) -> Arc<NodeClock> {
        Arc::new(NodeClock {
            warp,
            skew: AtomicI64::new(0),
        })
    }

    /// Sets how far this node's clock is off, ms (negative: behind).
    pub fn set_skew(&self, ms: i64) {
        self.skew.store(ms, Ordering::Relaxed);
    }
}

impl WallClock for NodeClock {
    fn now_ms(&self) -> u64 {
        SystemClock
            .now_ms()
            .saturating_add_signed(self.warp.total() + self.skew.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warp_moves_every_clock_and_a_skew_only_its_own() {
        let warp = Arc::new(Warp::default());
        let (a, b) = (NodeClock::new(warp.clone()), NodeClock::new(warp.clone()));
        let minute: u64 = 60_000;
        b.set_skew(-10 * minute as i64);
        let before = a.now_ms();
        warp.forward(60 * minute);
        let (ta, tb) = (a.now_ms(), b.now_ms());
        assert!(ta >= before + 60 * minute && ta < before + 61 * minute);
        assert!(tb + 10 * minute + 1_000 >= ta && tb + 10 * minute <= ta + 1_000);
    }
}
