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
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use bytes::BytesMut;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use raftmq_storage::vfs::{OsFs, Vfs};
use raftmq_storage::{CommitLog, CommitLogOptions, DurableCell};
use tokio::sync::oneshot;

mod install;
mod writer;

use writer::{Core, Job};

use crate::consensus::entry_codec;
use crate::consensus::types::{Entry, LogId, TypeConfig, Vote};
use crate::error::{corrupt, io_err, io_other, lock};

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
    /// How long each of those `fdatasync` calls took.
    pub fsync_seconds: crate::metrics::Histogram,
    /// The last index appended.
    pub last_appended: AtomicU64,
    /// The last index openraft was told is durable: a crash, even of the power, must never
    /// lose it (the simulator checks this after every power cut).
    pub acked_durable: AtomicU64,
    /// The last index the log held (or a snapshot covered) when it was opened.
    pub opened_last: AtomicU64,
}

#[derive(Clone)]
pub struct LogStore {
    core: Arc<Core>,
    jobs: mpsc::Sender<Job>,
}

/// Tells when every handle of a log store, its writer thread included, is gone (a crashed
/// node's files are free to be opened again; see `raftmq-sim`).
#[derive(Clone, Debug)]
pub struct ReleaseProbe(std::sync::Weak<Core>);

impl ReleaseProbe {
    /// Whether the log store is closed and its writer thread has ended.
    pub fn released(&self) -> bool {
        self.0.strong_count() == 0
    }
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore")
    }
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
            Some(b) => Some(postcard::from_bytes(&b).map_err(|e| corrupt("vote", e))?),
            None => None,
        };
        let purged_cell = DurableCell::new(fs.clone(), dir, install::PURGED_LOG_ID);
        let purged: Option<LogId> = match purged_cell.load().map_err(io_err)? {
            Some(b) => Some(postcard::from_bytes(&b).map_err(|e| corrupt("purged", e))?),
            None => None,
        };
        // What the log holds (or a snapshot covered) when it opens is durable.
        let held = writer::held(&log, purged);
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
            syncs: matches!(policy, FlushPolicy::Sync),
            durable: tokio::sync::watch::Sender::new(held),
            submitted: AtomicU64::new(held),
        });
        for stat in [
            &core.stats.opened_last,
            &core.stats.last_appended,
            &core.stats.acked_durable,
        ] {
            stat.store(held, Ordering::Relaxed);
        }
        let (tx, rx) = mpsc::channel();
        let writer_core = core.clone();
        std::thread::Builder::new()
            .name("raftmq-log-writer".into())
            .spawn(move || writer::writer(writer_core, rx, policy))?;
        Ok(LogStore { core, jobs: tx })
    }

    /// Waits until every entry up to `index` is durable in this log, so what is applied
    /// from it never runs ahead of what a power cut leaves (with `FlushPolicy::Async`, at
    /// once: that policy does not promise durability).
    pub async fn wait_durable(&self, index: u64) {
        if !self.core.syncs {
            return;
        }
        // Entries never handed to this log (a state machine tested on its own) are not
        // waited for; everything Raft applies was appended here first.
        let upto = index.min(self.core.submitted.load(Ordering::Acquire));
        let mut durable = self.core.durable.subscribe();
        // The sender lives as long as `self`.
        let _ = durable.wait_for(|d| *d >= upto).await;
    }

    /// A probe that tells when this log store is wholly released.
    pub fn release_probe(&self) -> ReleaseProbe {
        ReleaseProbe(Arc::downgrade(&self.core))
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

    /// Stages the log directory `from` (shipped in a snapshot) durably beside the log, for
    /// [`LogStore::finish_install`] once the install is decided; returns the staged names.
    /// Blocking: call it on the blocking pool.
    pub fn stage_install(&self, from: &Path) -> io::Result<Vec<String>> {
        install::stage(&*self.core.fs, &self.core.dir, from)
    }

    /// Replaces the whole log with the staged `names` and sets the Raft purge point to the
    /// snapshot's `purged` (on the writer thread, after everything queued before it).
    pub async fn finish_install(
        &self,
        names: Vec<String>,
        purged: Option<LogId>,
    ) -> io::Result<()> {
        self.submit(|done| Job::Install {
            names,
            purged,
            done,
        })
        .await
    }

    /// Finishes, before the log is opened, an install decided before a crash (see
    /// [`LogStore::finish_install`]).
    pub fn recover_install(dir: &Path, names: &[String], purged: Option<LogId>) -> io::Result<()> {
        install::finish(&(Arc::new(OsFs) as Arc<dyn Vfs>), dir, names, purged)
    }

    /// Drops, before the log is opened, what an install never decided had staged.
    pub fn discard_staged(dir: &Path) -> io::Result<()> {
        install::discard(&OsFs, dir)
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
            .map_err(|_| io_other("the log writer thread has stopped"))?;
        rx.await
            .map_err(|_| io_other("the log writer thread has stopped"))?
    }

    fn log_id_at(&self, log: &CommitLog, index: u64) -> io::Result<LogId> {
        let rec = log.read(index).map_err(io_err)?;
        Ok(entry_codec::decode(index, &rec.payload)
            .map_err(io_err)?
            .log_id)
    }
}

/// Most payload bytes one replication read returns (at least one entry): with entries of up
/// to 64 MiB, `max_payload_entries` of them must not be read into memory at once.
pub const REPLICATION_READ_BYTES: usize = 8 << 20;

impl LogStore {
    /// Entries `start..end` that the log holds, up to `max_bytes` of payload (at least one).
    async fn read_entries(&self, start: u64, end: u64, max_bytes: usize) -> io::Result<Vec<Entry>> {
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
            let records = log.read_range(start, end, max_bytes).map_err(io_err)?;
            records
                .into_iter()
                .map(|r| entry_codec::decode(r.index, &r.payload).map_err(io_err))
                .collect()
        })
        .await
        .map_err(io_err)?
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
        self.read_entries(start, end, usize::MAX).await
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        self.read_entries(start, end, REPLICATION_READ_BYTES).await
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
        let Some(&(last, _, _)) = records.last() else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        self.core.submitted.store(last, Ordering::Release);
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
        self.core
            .submitted
            .store(from.saturating_sub(1), Ordering::Release);
        self.submit(|done| Job::Truncate { from, done }).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.submit(|done| Job::Purge { upto: log_id, done }).await
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::EntryPayload;
    use openraft::storage::IOFlushed;
    use raftmq_storage::vfs::MemFs;

    use super::*;
    use crate::consensus::types::log_id;
    use crate::state::Command;

    fn mem_log() -> LogStore {
        LogStore::open_on(
            Arc::new(MemFs::new()),
            Path::new("/log"),
            CommitLogOptions::default(),
            FlushPolicy::Sync,
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replication_reads_are_bounded_by_bytes_and_full_reads_are_not() {
        let mut log = mem_log();
        let big = Bytes::from(vec![7u8; 6 << 20]);
        let entries: Vec<Entry> = (1..=3)
            .map(|i| Entry {
                log_id: log_id(1, 1, i),
                payload: EntryPayload::Normal(Command::Produce {
                    create_topic: None,
                    batch: big.clone(),
                }),
            })
            .collect();
        log.append(entries, IOFlushed::noop()).await.unwrap();
        let limited = log.limited_get_log_entries(1, 4).await.unwrap();
        assert!(
            (1..3).contains(&limited.len()),
            "18 MiB of entries in one replication read: {}",
            limited.len()
        );
        assert_eq!(limited[0].log_id.index, 1);
        assert_eq!(log.try_get_log_entries(1..4).await.unwrap().len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purge_past_the_end_of_the_log_lets_it_continue_after_the_purge_point() {
        let mut log = mem_log();
        let entry = |i| Entry {
            log_id: log_id(1, 1, i),
            payload: EntryPayload::Blank,
        };
        log.append((1..=3).map(entry), IOFlushed::noop())
            .await
            .unwrap();
        log.set_retention_point(1);
        // The state machine installed a snapshot at 10 (a crash left the old log behind).
        log.purge(log_id(1, 1, 10)).await.unwrap();
        log.append([entry(11)], IOFlushed::noop()).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(11));
        assert_eq!(log.try_get_log_entries(11..12).await.unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn durable_waits_end_once_appends_are_synced_and_the_counters_say_what_was_acknowledged()
    {
        let mut log = mem_log();
        let entry = |i| Entry {
            log_id: log_id(1, 1, i),
            payload: EntryPayload::Blank,
        };
        let wait = |log: &LogStore, index| {
            let log = log.clone();
            tokio::time::timeout(std::time::Duration::from_secs(30), async move {
                log.wait_durable(index).await
            })
        };
        // Entries never handed to the log (a state machine tested alone) are not waited for.
        wait(&log, 5).await.expect("nothing submitted: no wait");
        log.append((1..=2).map(entry), IOFlushed::noop())
            .await
            .unwrap();
        wait(&log, 2)
            .await
            .expect("the wait ends once the entries are synced");
        assert_eq!(log.stats().acked_durable.load(Ordering::Relaxed), 2);
        // Truncated entries are no longer owed; a reopened log says what it held.
        log.truncate_after(Some(log_id(1, 1, 1))).await.unwrap();
        assert_eq!(log.stats().acked_durable.load(Ordering::Relaxed), 1);
        assert_eq!(log.stats().opened_last.load(Ordering::Relaxed), 0);
    }
}
