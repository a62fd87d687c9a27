//! Snapshots of the state machine: building one (a RocksDB checkpoint plus the retained
//! CommitLog) and installing a received one.
//!
//! Must never: modify a source file of a snapshot (sealed segments are shared by hard
//! link), or report a snapshot whose checkpoint and metadata disagree.

use std::io;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::RaftSnapshotBuilder;
use raftmq_storage::{IndexStore, IndexStoreOptions};

use super::{StateMachine, index_dir, load_state, lock};
use crate::consensus::types::{Snapshot, SnapshotData, SnapshotMeta, TypeConfig};
use crate::error::{corrupt, io_err, io_other};

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
            let snapshots = this.shared.data_dir.join("snapshots");
            std::fs::create_dir_all(&snapshots)?;
            let dir = snapshots.join(name);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::create_dir_all(&dir)?;
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
                snapshot: SnapshotData { dir },
            };
            let old = lock(&this.shared.current_snapshot).replace(snapshot.clone());
            if let Some(old) = old
                && old.snapshot.dir != snapshot.snapshot.dir
            {
                let _ = std::fs::remove_dir_all(&old.snapshot.dir);
            }
            Ok(snapshot)
        })
        .await
        .map_err(io_err)?
    }
}

impl StateMachine {
    /// Installs a received snapshot: its state as a new index generation, its log in
    /// place of the log store's segments.
    pub(super) async fn install(
        &self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let this = self.clone();
        let meta = meta.clone();
        let own = {
            let shared = &self.shared;
            let name = format!("installed-{}", meta.last_log_id.map_or(0, |l| l.index));
            shared.data_dir.join("snapshots").join(name)
        };
        let from = snapshot.dir.clone();
        let own_dir = own.clone();
        // The state first: a crash after it leaves applied state ahead of the log, which
        // openraft treats like a purged log and repairs from the leader.
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let shared = &this.shared;
            // Keep our own copy as the current snapshot (we may have to send it on).
            if own_dir.exists() {
                std::fs::remove_dir_all(&own_dir)?;
            }
            copy_dir(&from.join("state"), &own_dir.join("state"))?;
            if from.join("log").exists() {
                link_log(&from.join("log"), &own_dir.join("log"))?;
            }
            let mut applier = lock(&shared.applier);
            let generation = match shared.gen_cell.load().map_err(io_err)? {
                Some(b) => u64::from_le_bytes(
                    b.as_slice()
                        .try_into()
                        .map_err(|e| corrupt("index_gen", e))?,
                ),
                None => 0,
            } + 1;
            let target = index_dir(&shared.data_dir, generation);
            if target.exists() {
                std::fs::remove_dir_all(&target)?;
            }
            copy_dir(&from.join("state"), &target)?;
            let store =
                Arc::new(IndexStore::open(&target, &IndexStoreOptions::default()).map_err(io_err)?);
            let (last, membership) = load_state(&store)?;
            if last != meta.last_log_id {
                return Err(io_other(format!(
                    "snapshot holds state up to {last:?} but claims {:?}",
                    meta.last_log_id
                )));
            }
            shared
                .gen_cell
                .store(&generation.to_le_bytes())
                .map_err(io_err)?;
            applier.reset(store.clone());
            if let Some(p) = applier.retention_point() {
                shared.log.set_retention_point(p);
            }
            *shared.store.write().unwrap_or_else(|e| e.into_inner()) = store;
            *lock(&shared.state) = (last, membership);
            Ok(())
        })
        .await
        .map_err(io_err)??;
        if snapshot.dir.join("log").exists() {
            self.shared.log.adopt(&snapshot.dir.join("log")).await?;
        }
        let old = lock(&self.shared.current_snapshot).replace(Snapshot {
            meta: meta.clone(),
            snapshot: SnapshotData { dir: own },
        });
        if let Some(old) = old
            && old.snapshot.dir != snapshot.dir
        {
            let _ = std::fs::remove_dir_all(&old.snapshot.dir);
        }
        self.shared
            .applied_tx
            .send_replace(meta.last_log_id.map_or(0, |l| l.index));
        Ok(())
    }
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
            std::fs::copy(from.join(&name), to.join(&name))?;
        } else {
            std::fs::hard_link(from.join(&name), to.join(&name))?;
        }
    }
    Ok(())
}

/// Copies a flat directory (a RocksDB checkpoint has no subdirectories).
pub(crate) fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}
