//! The log store's writer thread: the one owner of every write (appends, truncations,
//! purges, votes, adopting a snapshot's log), in order. It drains what has queued, writes
//! it, signals each append as written, then makes the lot durable with one `fdatasync` and
//! fires the flush callbacks in order.
//!
//! Must never: fire a flush callback before the data is durable under `flush = sync`, or
//! retry a failed fsync (the log is poisoned instead).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use bytes::Bytes;
use openraft::storage::IOFlushed;
use raftmq_storage::vfs::Vfs;
use raftmq_storage::{CommitLog, CommitLogOptions, DurableCell, LogPos, RecordRef};
use tokio::sync::oneshot;

use super::{FlushPolicy, LogStats, LogStore};
use crate::consensus::types::{LogId, TypeConfig, Vote};
use crate::error::lock;
use crate::error::{io_err, io_other};

pub(super) struct Core {
    pub(super) dir: std::path::PathBuf,
    pub(super) fs: Arc<dyn Vfs>,
    pub(super) opts: CommitLogOptions,
    pub(super) log: RwLock<CommitLog>,
    /// Retention point + 1 (0: none): openraft's purges delete data only up to it.
    pub(super) retention: AtomicU64,
    pub(super) vote_cell: DurableCell,
    pub(super) vote: Mutex<Option<Vote>>,
    pub(super) purged_cell: DurableCell,
    pub(super) purged: Mutex<Option<LogId>>,
    pub(super) stats: LogStats,
    /// Whether appends are synced before they are acknowledged (`FlushPolicy::Sync`).
    pub(super) syncs: bool,
    /// The last index held durably (what [`LogStats::acked_durable`] says), for waiters.
    pub(super) durable: tokio::sync::watch::Sender<u64>,
    /// The last index handed to the writer (appended or truncated to), before it is
    /// written: what [`super::LogStore::wait_durable`] can wait for.
    pub(super) submitted: AtomicU64,
}

/// The last index a log holds, or a snapshot covered (`purged`).
pub(super) fn held(log: &CommitLog, purged: Option<LogId>) -> u64 {
    log.last_index().max(purged.map(|p| p.index)).unwrap_or(0)
}

/// Records that the log holds every entry up to `index` durably.
pub(super) fn set_durable(core: &Core, index: u64) {
    core.stats.acked_durable.store(index, Ordering::Relaxed);
    core.durable.send_replace(index);
}

pub(super) enum Job {
    Append {
        records: Vec<(u64, u64, Bytes)>,
        written: oneshot::Sender<io::Result<()>>,
        flushed: IOFlushed<TypeConfig>,
    },
    Truncate {
        from: u64,
        done: oneshot::Sender<io::Result<()>>,
    },
    Purge {
        upto: LogId,
        done: oneshot::Sender<io::Result<()>>,
    },
    SaveVote {
        vote: Vote,
        done: oneshot::Sender<io::Result<()>>,
    },
    Install {
        names: Vec<String>,
        purged: Option<LogId>,
        done: oneshot::Sender<io::Result<()>>,
    },
}

pub(super) fn writer(core: Arc<Core>, rx: mpsc::Receiver<Job>, policy: FlushPolicy) {
    let interval = match policy {
        FlushPolicy::Sync => None,
        FlushPolicy::Async(d) => Some(d),
    };
    let mut unsynced = false;
    let mut last_sync = Instant::now();
    let mut waiting: Vec<IOFlushed<TypeConfig>> = Vec::new();
    loop {
        let first = match interval {
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
            Some(d) => match rx.recv_timeout(d.saturating_sub(last_sync.elapsed())) {
                Ok(j) => j,
                Err(RecvTimeoutError::Timeout) => {
                    if unsynced {
                        if let Err(e) = sync(&core) {
                            tracing::error!(error = %e, "fsync of the CommitLog failed; the log is unusable");
                        }
                        unsynced = false;
                    }
                    last_sync = Instant::now();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            },
        };
        let mut jobs = vec![first];
        jobs.extend(rx.try_iter());
        for job in jobs {
            match job {
                Job::Append {
                    records,
                    written,
                    flushed,
                } => {
                    let r = append(&core, &records);
                    let ok = r.is_ok();
                    let _ = written.send(r.as_ref().map(|_| ()).map_err(io_other));
                    match (ok, interval) {
                        (false, _) => flushed.io_completed(Err(io_other("append failed"))),
                        (true, None) => waiting.push(flushed),
                        (true, Some(_)) => {
                            unsynced = true;
                            flushed.io_completed(Ok(()));
                        }
                    }
                }
                other => {
                    // Everything appended before this job becomes durable first, in order.
                    flush_waiting(&core, &mut waiting);
                    run_other(&core, other);
                }
            }
        }
        flush_waiting(&core, &mut waiting);
        if let Some(d) = interval
            && unsynced
            && last_sync.elapsed() >= d
        {
            if let Err(e) = sync(&core) {
                tracing::error!(error = %e, "fsync of the CommitLog failed; the log is unusable");
            }
            unsynced = false;
            last_sync = Instant::now();
        }
    }
}

fn append(core: &Core, records: &[(u64, u64, Bytes)]) -> raftmq_storage::Result<()> {
    let mut log = core.log.write().unwrap_or_else(|e| e.into_inner());
    log.append(records.iter().map(|(index, term, payload)| RecordRef {
        index: *index,
        term: *term,
        payload,
    }))?;
    core.stats
        .entries
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    if let Some((last, _, _)) = records.last() {
        core.stats.last_appended.store(*last, Ordering::Relaxed);
    }
    let bytes: usize = records.iter().map(|r| r.2.len()).sum();
    core.stats.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    Ok(())
}

fn sync(core: &Core) -> raftmq_storage::Result<()> {
    core.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let r = core.log.read().unwrap_or_else(|e| e.into_inner()).sync();
    core.stats.fsync_seconds.observe(started.elapsed());
    r
}

fn flush_waiting(core: &Core, waiting: &mut Vec<IOFlushed<TypeConfig>>) {
    if waiting.is_empty() {
        return;
    }
    let r = sync(core);
    if let Err(e) = &r {
        tracing::error!(error = %e, "fsync of the CommitLog failed; the log is unusable");
    } else {
        set_durable(core, core.stats.last_appended.load(Ordering::Relaxed));
    }
    for cb in waiting.drain(..) {
        cb.io_completed(r.as_ref().map(|_| ()).map_err(io_other));
    }
}

/// Swaps the log's segments for those in `from`: old segment files go, the shipped ones
/// move in, and the CommitLog is reopened on them.
fn install(core: &Core, names: &[String], purged: Option<LogId>) -> io::Result<()> {
    let mut log = core.log.write().unwrap_or_else(|e| e.into_inner());
    super::install::finish(&core.fs, &core.dir, names, purged)?;
    let (fresh, _) =
        CommitLog::open(core.fs.clone(), &core.dir, core.opts.clone()).map_err(io_err)?;
    *log = fresh;
    *lock(&core.purged) = purged;
    Ok(())
}

fn run_other(core: &Core, job: Job) {
    match job {
        Job::Append { .. } => unreachable!("appends are handled by the writer loop"),
        Job::Truncate { from, done } => {
            let r = core
                .log
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .truncate(from)
                .map_err(io_err);
            // Raft dropped entries it never committed: they are no longer owed.
            let kept = from.saturating_sub(1);
            core.stats.last_appended.store(kept, Ordering::Relaxed);
            set_durable(
                core,
                core.stats.acked_durable.load(Ordering::Relaxed).min(kept),
            );
            let _ = done.send(r);
        }
        Job::Purge { upto, done } => {
            let r = (|| {
                let bytes = postcard::to_allocvec(&upto).map_err(io_other)?;
                core.purged_cell.store(&bytes).map_err(io_err)?;
                *lock(&core.purged) = Some(upto);
                let mut log = core.log.write().unwrap_or_else(|e| e.into_inner());
                // The log ends before the purge point (the state is already past it): the
                // next entry is `upto + 1`, so the log must start over after it.
                if log.last_index().is_none_or(|l| l < upto.index) {
                    if let Some(last) = log.last_index() {
                        tracing::warn!(
                            last,
                            purge = upto.index,
                            "the log ends before the purge point; it restarts after it"
                        );
                    }
                    let pos = LogPos {
                        index: upto.index,
                        term: upto.leader_id.term,
                    };
                    return log.purge(pos).map_err(io_err);
                }
                // Delete data only as far as retention allows: below a snapshot's index,
                // messages stay readable until they expire.
                let Some(point) = LogStore::retention_point(core).map(|r| r.min(upto.index)) else {
                    return Ok(());
                };
                let term = if point == upto.index {
                    upto.leader_id.term
                } else {
                    log.term_of(point).unwrap_or(0)
                };
                log.purge(LogPos { index: point, term }).map_err(io_err)
            })();
            let _ = done.send(r);
        }
        Job::Install {
            names,
            purged,
            done,
        } => {
            let r = install(core, &names, purged);
            if r.is_ok() {
                // The installed log is synced, and owed from now on.
                let held = held(&core.log.read().unwrap_or_else(|e| e.into_inner()), purged);
                core.stats.last_appended.store(held, Ordering::Relaxed);
                core.submitted.store(held, Ordering::Release);
                set_durable(core, held);
            }
            let _ = done.send(r);
        }
        Job::SaveVote { vote, done } => {
            let r = (|| {
                let bytes = postcard::to_allocvec(&vote).map_err(io_other)?;
                core.vote_cell.store(&bytes).map_err(io_err)?;
                *lock(&core.vote) = Some(vote);
                Ok(())
            })();
            let _ = done.send(r);
        }
    }
}
