//! The retention loop: expired messages leave the indexes by a replicated command, and the
//! CommitLog is purged only up to the retention point that command computed.
//!
//! Must never: purge the log past the retention point (the log is the only copy of every
//! message), or let a replica's clock decide what expires (the leader's time is in the
//! entry).

use std::time::Duration;

use super::Broker;
use crate::error::BrokerError;
use crate::state::Command;

impl Broker {
    /// Every `retention_check`: the leader proposes `Retain` (expired index entries go, the
    /// retention point advances, identically everywhere); then every node snapshots (cheap:
    /// a checkpoint and hard links) and lets openraft purge its log up to the retention
    /// point, whole segments at a time.
    pub(super) fn spawn_retention(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.inner.cfg.retention_check);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            tick.tick().await;
            loop {
                tick.tick().await;
                if this.metrics().running_state.is_err() {
                    return;
                }
                // Retention waits until group time is known: a leader must not expire
                // messages by its own clock.
                if this.is_leader()
                    && this.clock_synced()
                    && let Err(e) = this
                        .propose(Command::Retain {
                            now_ms: this.group_now_ms(),
                        })
                        .await
                {
                    tracing::debug!(error = %e, "retention proposal failed");
                }
                if let Err(e) = this.purge_to_retention_point().await {
                    tracing::warn!(error = %e, "purging expired segments failed");
                }
            }
        });
    }

    async fn purge_to_retention_point(&self) -> Result<(), String> {
        let Some(point) = self.inner.sm.retention_point() else {
            return Ok(());
        };
        let m = self.metrics();
        if m.purged.is_some_and(|p| p.index >= point) || point == 0 {
            return Ok(());
        }
        // A purge deletes whole segments: while the point is inside the first one, a
        // snapshot (a RocksDB checkpoint) would be built to free nothing.
        if !self.inner.log.read_log().purge_frees(point) {
            return Ok(());
        }
        self.snapshot_and_purge(point).await
    }

    /// Snapshots (if the last snapshot does not cover `point`) and lets openraft purge its
    /// log up to `point`: the log store deletes data only as far as retention allows.
    async fn snapshot_and_purge(&self, point: u64) -> Result<(), String> {
        let m = self.metrics();
        // openraft purges only what a snapshot covers.
        if m.snapshot.is_none_or(|s| s.index < point) {
            self.inner
                .raft
                .trigger()
                .snapshot()
                .await
                .map_err(|e| e.to_string())?;
            self.inner
                .raft
                .wait(Some(Duration::from_secs(30)))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= point),
                    "snapshot covering the purge point",
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        self.inner
            .raft
            .trigger()
            .purge_log(point)
            .await
            .map_err(|e| e.to_string())
    }

    /// Compacts this node's Raft log: snapshots the applied state and lets Raft forget the
    /// log up to it, so a member further behind catches up by snapshot. Messages stay
    /// readable: their segments go only when retention removes them. Returns the index.
    pub async fn compact(&self) -> Result<u64, BrokerError> {
        let applied = self.metrics().last_applied.map_or(0, |l| l.index);
        if applied == 0 {
            return Ok(0);
        }
        self.snapshot_and_purge(applied)
            .await
            .map_err(BrokerError::Unavailable)?;
        Ok(applied)
    }
}
