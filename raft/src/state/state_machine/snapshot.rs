//! Snapshots of the state machine: building one (a RocksDB checkpoint plus the retained
//! CommitLog) and installing a received one, crash-atomically.
//!
//! An install stages everything first and makes it durable: the snapshot's state as a new
//! index generation (`index-<g>`, every file fsynced), its log in the log store's staging
//! directory. Then one durable record, the *install journal* (`install` in the state
//! directory: the generation, the staged log files, the snapshot's last log id), decides
//! it. Only then are the log swapped and the generation flipped, and the journal cleared.
//! [`recover_install`] runs before the log and the state machine open: with a journal it
//! finishes the install (each step is idempotent); without one it discards what an
//! undecided install staged. So a crash anywhere leaves either the old state with the old
//! log or the new state with the new log, never one without the other.
//!
//! A snapshot directory is removed when the last handle to it goes (a snapshot being sent
//! keeps its directory), and all are removed when the state machine opens.
//!
//! Must never: modify a source file of a snapshot (sealed segments are shared by hard
//! link), report a snapshot whose checkpoint and metadata disagree, or flip the state
//! generation before the log that goes with it is durable.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::RaftSnapshotBuilder;
use raftmq_storage::vfs::OsFs;
use raftmq_storage::{DurableCell, IndexStore, IndexStoreOptions};
use serde::{Deserialize, Serialize};

use super::{StateMachine, index_dir, load_state};
use crate::consensus::log_store::LogStore;
use crate::consensus::types::{LogId, Snapshot, SnapshotData, SnapshotMeta, TypeConfig};
use crate::error::lock;
use crate::error::{corrupt, io_err, io_other};

/// The install journal's cell in the state directory.
const INSTALL_JOURNAL: &str = "install";
/// The state generation's cell in the state directory.
pub(super) const INDEX_GEN: &str = "index_gen";

/// A decided install: what [`recover_install`] finishes after a crash.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct InstallJournal {
    /// The index generation holding the snapshot's state.
    generation: u64,
    /// The staged log files, if the snapshot shipped a log.
    staged_log: Option<Vec<String>>,
    /// The snapshot's last log id (the Raft purge point after the install).
    last: Option<LogId>,
}

/// The steps of an install a fault probe ([`InstallProbe`]) can stop it after, to test what
/// a crash there leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallStep {
    /// State and log staged, nothing decided.
    Staged,
    /// The journal written, nothing swapped.
    Decided,
    /// The log swapped, the state generation not yet flipped.
    LogSwapped,
}

/// A fault probe asked at each [`InstallStep`] of every install: `true` stops the install
/// there with an error, as a crash would (nothing after it is written; Raft stops, and the
/// simulator that set the probe crashes and restarts the node). `None` in production.
#[derive(Clone)]
pub struct InstallProbe(pub Arc<dyn Fn(InstallStep) -> bool + Send + Sync>);

impl std::fmt::Debug for InstallProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InstallProbe")
    }
}

fn journal_cell(state_dir: &Path) -> DurableCell {
    DurableCell::new(Arc::new(OsFs), state_dir, INSTALL_JOURNAL)
}

/// The current index generation recorded in `state_dir`.
pub(super) fn current_generation(cell: &DurableCell) -> io::Result<u64> {
    Ok(match cell.load().map_err(io_err)? {
        Some(b) => u64::from_le_bytes(
            b.as_slice()
                .try_into()
                .map_err(|e| corrupt("index_gen", e))?,
        ),
        None => 0,
    })
}

/// Before the log store and the state machine open: finishes an install that was decided
/// when the node stopped, or discards what an undecided one staged.
pub fn recover_install(state_dir: &Path, log_dir: &Path) -> io::Result<()> {
    let journal = journal_cell(state_dir);
    let Some(bytes) = journal.load().map_err(io_err)? else {
        return LogStore::discard_staged(log_dir);
    };
    let j: InstallJournal =
        postcard::from_bytes(&bytes).map_err(|e| corrupt("install journal", e))?;
    tracing::warn!(
        generation = j.generation,
        "finishing a snapshot install the node was stopped in"
    );
    if let Some(names) = &j.staged_log {
        LogStore::recover_install(log_dir, names, j.last)?;
    }
    DurableCell::new(Arc::new(OsFs), state_dir, INDEX_GEN)
        .store(&j.generation.to_le_bytes())
        .map_err(io_err)?;
    journal.clear().map_err(io_err)
}

/// Removes a snapshot directory when the last handle to it goes.
#[derive(Debug)]
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A snapshot directory of this node's own, removed when its last handle goes.
fn owned(dir: PathBuf) -> SnapshotData {
    SnapshotData::with_keeper(dir.clone(), Arc::new(RemoveOnDrop(dir)))
}

/// A name no other snapshot directory of this process has.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            // Hold the applier so the checkpoint and the reported meta agree.
            let applier = lock(&this.shared.applier);
            let (last, membership) = lock(&this.shared.state).clone();
            let name = last.map_or("empty".to_owned(), |l| {
                format!("{}-{}-{}", l.index, l.leader_id.term, l.leader_id.node_id)
            });
            if let Some(current) = lock(&this.shared.current_snapshot).as_ref()
                && current.meta.last_log_id == last
            {
                return Ok(current.clone());
            }
            let snapshots = this.shared.data_dir.join("snapshots");
            std::fs::create_dir_all(&snapshots)?;
            let dir = snapshots.join(unique(&name));
            std::fs::create_dir_all(&dir)?;
            let data = owned(dir.clone());
            applier
                .store()
                .checkpoint(&dir.join("state"))
                .map_err(io_err)?;
            if let Some(last) = last {
                this.shared.log.export(last.index, &dir.join("log"))?;
            }
            drop(applier);
            let snapshot = Snapshot {
                meta: SnapshotMeta {
                    last_log_id: last,
                    last_membership: membership,
                },
                snapshot: data,
            };
            // The one it replaces goes when the last sender of it is done.
            *lock(&this.shared.current_snapshot) = Some(snapshot.clone());
            Ok(snapshot)
        })
        .await
        .map_err(io_err)?
    }
}

impl StateMachine {
    /// Installs a received snapshot: its state as a new index generation, its log in place
    /// of the log store's segments, decided by one durable record (see the module docs).
    pub(super) async fn install(
        &self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let this = self.clone();
        let (m, from) = (meta.clone(), snapshot.dir.clone());
        let staged = tokio::task::spawn_blocking(move || this.stage(&m, &from))
            .await
            .map_err(io_err)??;
        self.probe(InstallStep::Staged)?;
        let journal = InstallJournal {
            generation: staged.generation,
            staged_log: staged.log.clone(),
            last: meta.last_log_id,
        };
        let bytes = postcard::to_allocvec(&journal).map_err(io_other)?;
        let cell = journal_cell(&self.shared.data_dir);
        tokio::task::spawn_blocking(move || cell.store(&bytes))
            .await
            .map_err(io_err)?
            .map_err(io_err)?;
        self.probe(InstallStep::Decided)?;
        if let Some(names) = staged.log {
            self.shared
                .log
                .finish_install(names, meta.last_log_id)
                .await?;
        }
        self.probe(InstallStep::LogSwapped)?;
        let this = self.clone();
        let (generation, store) = (staged.generation, staged.store);
        tokio::task::spawn_blocking(move || this.flip(generation, store))
            .await
            .map_err(io_err)??;
        *lock(&self.shared.current_snapshot) = Some(Snapshot {
            meta: meta.clone(),
            snapshot: staged.own,
        });
        self.shared
            .applied_tx
            .send_replace(meta.last_log_id.map_or(0, |l| l.index));
        Ok(())
    }

    /// Asks the install probe, if one is set, whether to stop at `step`.
    fn probe(&self, step: InstallStep) -> io::Result<()> {
        match lock(&self.shared.install_probe).as_ref() {
            Some(p) if (p.0)(step) => Err(io_other(format!(
                "install stopped after {step:?} by the fault probe"
            ))),
            _ => Ok(()),
        }
    }

    /// Stages a received snapshot durably: our own copy (to send on), the state as the
    /// next index generation (checked against `meta`), the log beside the log store's.
    fn stage(&self, meta: &SnapshotMeta, from: &Path) -> io::Result<Staged> {
        let shared = &self.shared;
        let own_dir = shared.data_dir.join("snapshots").join(unique(&format!(
            "installed-{}",
            meta.last_log_id.map_or(0, |l| l.index)
        )));
        let own = owned(own_dir.clone());
        copy_dir(&from.join("state"), &own_dir.join("state"))?;
        if from.join("log").exists() {
            link_log(&from.join("log"), &own_dir.join("log"))?;
        }
        let generation = current_generation(&shared.gen_cell)? + 1;
        let target = index_dir(&shared.data_dir, generation);
        if target.exists() {
            std::fs::remove_dir_all(&target)?;
        }
        copy_dir(&from.join("state"), &target)?;
        let store =
            Arc::new(IndexStore::open(&target, &IndexStoreOptions::default()).map_err(io_err)?);
        let (last, _) = load_state(&store)?;
        if last != meta.last_log_id {
            return Err(io_other(format!(
                "snapshot holds state up to {last:?} but claims {:?}",
                meta.last_log_id
            )));
        }
        let log = if from.join("log").exists() {
            Some(shared.log.stage_install(&from.join("log"))?)
        } else {
            None
        };
        Ok(Staged {
            generation,
            store,
            log,
            own,
        })
    }

    /// Makes the staged generation the current one, in memory and on disk, and clears the
    /// journal: the install is done.
    fn flip(&self, generation: u64, store: Arc<IndexStore>) -> io::Result<()> {
        let shared = &self.shared;
        let mut applier = lock(&shared.applier);
        shared
            .gen_cell
            .store(&generation.to_le_bytes())
            .map_err(io_err)?;
        let state = load_state(&store)?;
        applier.reset(store.clone());
        if let Some(p) = applier.retention_point() {
            shared.log.set_retention_point(p);
        }
        *shared.store.write().unwrap_or_else(|e| e.into_inner()) = store;
        *lock(&shared.state) = state;
        shared
            .topics_version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        journal_cell(&shared.data_dir).clear().map_err(io_err)
    }
}

/// What [`StateMachine::stage`] prepared.
struct Staged {
    generation: u64,
    store: Arc<IndexStore>,
    log: Option<Vec<String>>,
    own: SnapshotData,
}

/// Links a shipped log directory's files into `to`: sealed segments as hard links (they
/// never change), the newest segment as a copy (it will be appended to once adopted).
pub(crate) fn link_log(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    let mut names: Vec<_> = std::fs::read_dir(from)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let newest = names
        .iter()
        .filter(|n| n.to_string_lossy().ends_with(".log"))
        .max()
        .cloned();
    for name in names {
        if Some(&name) == newest.as_ref() || !name.to_string_lossy().ends_with(".log") {
            copy_synced(&from.join(&name), &to.join(&name))?;
        } else {
            std::fs::hard_link(from.join(&name), to.join(&name))?;
        }
    }
    sync_dir(to)
}

fn copy_synced(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::copy(from, to)?;
    std::fs::File::open(to)?.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Copies a flat directory (a RocksDB checkpoint has no subdirectories), durably.
pub(crate) fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            copy_synced(&entry.path(), &to.join(entry.file_name()))?;
        }
    }
    sync_dir(to)?;
    if let Some(parent) = to.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}
