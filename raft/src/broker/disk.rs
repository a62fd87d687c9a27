//! The free-space floor: while the data volume has less free space than the floor, new
//! writes (produce) are refused with `DiskFull`, before anything is proposed, so the log
//! never runs into `ENOSPC` through the front door; reads, acks, leases and admin go on,
//! and writes resume by themselves when space is freed. A watcher measures the volume a
//! few times a second.
//!
//! Must never: block a request on the file system (requests read a flag), or refuse a
//! write that was already proposed (the check comes first).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::Broker;
use crate::error::BrokerError;

/// How often free space is measured.
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// The default floor: 1 GiB, or 5 % of the volume if that is smaller.
const DEFAULT_FLOOR: u64 = 1 << 30;

/// The last measurement.
#[derive(Debug, Default)]
pub(super) struct DiskGuard {
    low: AtomicBool,
    free: AtomicU64,
    floor: AtomicU64,
}

/// `(free, total)` bytes of the volume holding `dir`, for an unprivileged writer.
fn space(dir: &Path) -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::statvfs(dir)?;
    Ok((
        st.f_bavail.saturating_mul(st.f_frsize),
        st.f_blocks.saturating_mul(st.f_frsize),
    ))
}

impl Broker {
    /// Refuses a new write while the disk is below its floor.
    pub(super) fn check_disk(&self) -> Result<(), BrokerError> {
        let d = &self.inner.disk;
        if d.low.load(Ordering::Acquire) {
            return Err(BrokerError::DiskFull {
                free: d.free.load(Ordering::Relaxed),
                floor: d.floor.load(Ordering::Relaxed),
            });
        }
        Ok(())
    }

    fn measure_disk(&self) {
        let (dir, configured) = (&self.inner.cfg.data_dir, self.inner.cfg.min_free_bytes);
        let (free, total) = match space(dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot measure free space");
                return;
            }
        };
        let floor = configured.unwrap_or(DEFAULT_FLOOR.min(total / 20));
        let d = &self.inner.disk;
        d.free.store(free, Ordering::Relaxed);
        d.floor.store(floor, Ordering::Relaxed);
        let low = free < floor;
        if d.low.swap(low, Ordering::AcqRel) != low {
            if low {
                tracing::warn!(
                    free,
                    floor,
                    "the data volume is nearly full: new writes get 507"
                );
            } else {
                tracing::info!(free, floor, "free space is back: writes resume");
            }
        }
    }

    /// Measures now, then a few times a second for as long as the node runs.
    pub(super) fn watch_disk(&self) {
        self.measure_disk();
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                if !this.is_running() {
                    return;
                }
                let b = this.clone();
                let _ = tokio::task::spawn_blocking(move || b.measure_disk()).await;
            }
        });
    }
}
