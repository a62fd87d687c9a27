//! openraft's log store on the CommitLog.
//!
//! One dedicated writer thread owns every write: appends, truncations, purges and votes
//! go to it in order over a channel (openraft requires log and vote I/O to be serialized).
//! It drains whatever has queued up, writes it, signals each append as *written* (readable)
//! so openraft can go on, then makes the lot durable with **one** `fdatasync` and fires the
//! flush callbacks in order: group commit across concurrent appends. With `flush = async`
//! the callbacks fire once written and the thread fsyncs at least every `flush_interval`.
//!
//! Readers (replication, HTTP reads) take a read lock on the CommitLog and run on the
//! blocking pool, so neither the Raft core nor the HTTP runtime ever waits on the disk.
//!
//! Must never: fire a flush callback before the data is durable under `flush = sync`, retry a
//! failed fsync, or purge anything openraft did not ask to purge.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use raftmq_storage::vfs::{OsFs, Vfs};
use raftmq_storage::{CommitLog, CommitLogOptions, DurableCell, LogPos, RecordRef};
use tokio::sync::oneshot;

use crate::entry_codec;
use crate::error::io_err;
use crate::types::{Entry, LogId, TypeConfig, Vote};

/// When appended entries count as flushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// After `fdatasync`.
    Sync,
    /// Once written to the OS; fsync at least this often.
    Async(Duration),
}

/// Counters of the write path, for `/metrics`.
#[derive(Debug, Default)]
pub struct LogStats {
    /// `fdatasync` calls made for appends.
    pub fsyncs: AtomicU64,
    /// Entries appended.
    pub entries: AtomicU64,
    /// Payload bytes appended.
    pub bytes: AtomicU64,
}

struct Core {
    dir: std::path::PathBuf,
    fs: Arc<dyn Vfs>,
    opts: CommitLogOptions,
    log: RwLock<CommitLog>,
    /// Retention point + 1 (0: none): openraft's purges delete data only up to it.
    retention: AtomicU64,
    vote_cell: DurableCell,
    vote: Mutex<Option<Vote>>,
    purged_cell: DurableCell,
    purged: Mutex<Option<LogId>>,
    stats: LogStats,
}

enum Job {
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
    Adopt {
        from: std::path::PathBuf,
        done: oneshot::Sender<io::Result<()>>,
    },
}

/// The log store (and, as a clone, its reader).
#[derive(Clone)]
pub struct LogStore {
    core: Arc<Core>,
    jobs: mpsc::Sender<Job>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LogStore {
    /// Opens the CommitLog in `dir` (recovering a torn tail) and starts the writer thread.
    pub fn open(dir: &Path, opts: CommitLogOptions, policy: FlushPolicy) -> io::Result<Self> {
        Self::open_on(Arc::new(OsFs), dir, opts, policy)
    }

    /// Like [`LogStore::open`] on any file system (tests use `MemFs`).
    pub fn open_on(
        fs: Arc<dyn Vfs>,
        dir: &Path,
        opts: CommitLogOptions,
        policy: FlushPolicy,
    ) -> io::Result<Self> {
        let (log, report) = CommitLog::open(fs.clone(), dir, opts.clone()).map_err(io_err)?;
        if let Some(cut) = &report.truncated {
            tracing::warn!(
                segment = %cut.segment.display(),
                position = cut.position,
                bytes = cut.bytes,
                reason = %cut.reason,
                "CommitLog recovery cut a torn tail; the node catches up from its peers"
            );
        }
        let vote_cell = DurableCell::new(fs.clone(), dir, "vote");
        let vote = match vote_cell.load().map_err(io_err)? {
            Some(b) => Some(postcard::from_bytes(&b).map_err(io_err)?),
            None => None,
        };
        let purged_cell = DurableCell::new(fs.clone(), dir, "purged_log_id");
        let purged: Option<LogId> = match purged_cell.load().map_err(io_err)? {
            Some(b) => Some(postcard::from_bytes(&b).map_err(io_err)?),
            None => None,
        };
        let core = Arc::new(Core {
            dir: dir.to_path_buf(),
            fs: fs.clone(),
            opts,
            retention: AtomicU64::new(0),
            log: RwLock::new(log),
            vote_cell,
            vote: Mutex::new(vote),
            purged_cell,
            purged: Mutex::new(purged),
            stats: LogStats::default(),
        });
        let (tx, rx) = mpsc::channel();
        let writer_core = core.clone();
        std::thread::Builder::new()
            .name("raftmq-log-writer".into())
            .spawn(move || writer(writer_core, rx, policy))?;
        Ok(LogStore { core, jobs: tx })
    }

    /// Lets openraft's purges delete data up to `point` (retention decided it is expired).
    /// Raft may logically purge further (after installing a snapshot); the data stays for
    /// message reads until retention reaches it.
    pub fn set_retention_point(&self, point: u64) {
        self.core
            .retention
            .fetch_max(point.saturating_add(1), Ordering::AcqRel);
    }

    fn retention_point(core: &Core) -> Option<u64> {
        core.retention.load(Ordering::Acquire).checked_sub(1)
    }

    /// Exports the log up to `upto` into `dest` (see `CommitLog::export`).
    pub fn export(&self, upto: u64, dest: &Path) -> io::Result<()> {
        self.read_log().export(upto, dest).map_err(io_err)
    }

    /// Replaces the whole log with the log directory `from` (shipped in a snapshot).
    pub async fn adopt(&self, from: &Path) -> io::Result<()> {
        let from = from.to_path_buf();
        self.submit(|done| Job::Adopt { from, done }).await
    }

    /// Write-path counters.
    pub fn stats(&self) -> &LogStats {
        &self.core.stats
    }

    /// Read access to the CommitLog (hold it briefly; never across `.await`).
    pub fn read_log(&self) -> RwLockReadGuard<'_, CommitLog> {
        self.core.log.read().unwrap_or_else(|e| e.into_inner())
    }

    async fn submit(
        &self,
        make: impl FnOnce(oneshot::Sender<io::Result<()>>) -> Job,
    ) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(make(tx))
            .map_err(|_| io_err("the log writer thread has stopped"))?;
        rx.await
            .map_err(|_| io_err("the log writer thread has stopped"))?
    }

    fn log_id_at(&self, log: &CommitLog, index: u64) -> io::Result<LogId> {
        let rec = log.read(index).map_err(io_err)?;
        Ok(entry_codec::decode(index, &rec.payload)
            .map_err(io_err)?
            .log_id)
    }
}

fn writer(core: Arc<Core>, rx: mpsc::Receiver<Job>, policy: FlushPolicy) {
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
                    let _ = written.send(r.as_ref().map(|_| ()).map_err(io_err));
                    match (ok, interval) {
                        (false, _) => flushed.io_completed(Err(io_err("append failed"))),
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
    let bytes: usize = records.iter().map(|r| r.2.len()).sum();
    core.stats.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    Ok(())
}

fn sync(core: &Core) -> raftmq_storage::Result<()> {
    core.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
    core.log.read().unwrap_or_else(|e| e.into_inner()).sync()
}

fn flush_waiting(core: &Core, waiting: &mut Vec<IOFlushed<TypeConfig>>) {
    if waiting.is_empty() {
        return;
    }
    let r = sync(core);
    if let Err(e) = &r {
        tracing::error!(error = %e, "fsync of the CommitLog failed; the log is unusable");
    }
    for cb in waiting.drain(..) {
        cb.io_completed(r.as_ref().map(|_| ()).map_err(io_err));
    }
}

/// Swaps the log's segments for those in `from`: old segment files go, the shipped ones
/// move in, and the CommitLog is reopened on them.
fn adopt(core: &Core, from: &Path) -> io::Result<()> {
    let mut log = core.log.write().unwrap_or_else(|e| e.into_inner());
    let fs = &*core.fs;
    for name in fs.list_dir(&core.dir)? {
        if name.ends_with(".log") || name.ends_with(".idx") || name == "purged" {
            fs.remove_file(&core.dir.join(&name))?;
        }
    }
    for name in fs.list_dir(from)? {
        fs.rename(&from.join(&name), &core.dir.join(&name))?;
    }
    core.fs.sync_dir(&core.dir)?;
    let (fresh, _) =
        CommitLog::open(core.fs.clone(), &core.dir, core.opts.clone()).map_err(io_err)?;
    *log = fresh;
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
            let _ = done.send(r);
        }
        Job::Purge { upto, done } => {
            let r = (|| {
                let bytes = postcard::to_allocvec(&upto).map_err(io_err)?;
                core.purged_cell.store(&bytes).map_err(io_err)?;
                *lock(&core.purged) = Some(upto);
                // Delete data only as far as retention allows: below a snapshot's index,
                // messages stay readable until they expire.
                let Some(point) = LogStore::retention_point(core).map(|r| r.min(upto.index)) else {
                    return Ok(());
                };
                let mut log = core.log.write().unwrap_or_else(|e| e.into_inner());
                let term = if point == upto.index {
                    upto.leader_id.term
                } else {
                    log.term_of(point).unwrap_or(0)
                };
                log.purge(LogPos { index: point, term }).map_err(io_err)
            })();
            let _ = done.send(r);
        }
        Job::Adopt { from, done } => {
            let r = adopt(core, &from);
            let _ = done.send(r);
        }
        Job::SaveVote { vote, done } => {
            let r = (|| {
                let bytes = postcard::to_allocvec(&vote).map_err(io_err)?;
                core.vote_cell.store(&bytes).map_err(io_err)?;
                *lock(&core.vote) = Some(vote);
                Ok(())
            })();
            let _ = done.send(r);
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        let this = self.clone();
        let purged_next = lock(&self.core.purged).map_or(0, |p| p.index + 1);
        tokio::task::spawn_blocking(move || {
            let log = this.read_log();
            let (Some(first), Some(last)) = (log.first_index(), log.last_index()) else {
                return Ok(Vec::new());
            };
            let start = start.max(first).max(purged_next);
            let end = end.min(last + 1);
            if start >= end {
                return Ok(Vec::new());
            }
            let records = log.read_range(start, end, usize::MAX).map_err(io_err)?;
            records
                .into_iter()
                .map(|r| entry_codec::decode(r.index, &r.payload).map_err(io_err))
                .collect()
        })
        .await
        .map_err(io_err)?
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(*lock(&self.core.vote))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged = *lock(&self.core.purged);
        let this = self.clone();
        let last = tokio::task::spawn_blocking(move || {
            let log = this.read_log();
            log.last_index()
                .map(|i| this.log_id_at(&log, i))
                .transpose()
        })
        .await
        .map_err(io_err)??;
        let last_log_id = match (last, purged) {
            (Some(l), Some(p)) if p.index >= l.index => Some(p),
            (l, p) => l.or(p),
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let vote = *vote;
        self.submit(|done| Job::SaveVote { vote, done }).await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut buf = BytesMut::new();
        let mut records = Vec::new();
        for e in entries {
            entry_codec::encode_into(&e, &mut buf);
            records.push((
                e.log_id.index,
                e.log_id.leader_id.term,
                buf.split().freeze(),
            ));
        }
        if records.is_empty() {
            callback.io_completed(Ok(()));
            return Ok(());
        }
        self.submit(|written| Job::Append {
            records,
            written,
            flushed: callback,
        })
        .await
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = match last_log_id {
            Some(id) => id.index + 1,
            None => {
                let log = self.read_log();
                match log.first_index() {
                    Some(f) => f,
                    None => return Ok(()),
                }
            }
        };
        self.submit(|done| Job::Truncate { from, done }).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.submit(|done| Job::Purge { upto: log_id, done }).await
    }
}
