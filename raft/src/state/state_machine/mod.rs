//! openraft's state machine: committed entries applied into the RocksDB IndexStore.
//!
//! Each `apply` call turns its whole run of entries into **one** RocksDB write batch holding
//! every index write plus `last_applied` (and membership), so state and progress commit
//! atomically and a restart resumes exactly after the last applied entry.
//!
//! A snapshot is a directory in `snapshots/`: `state/`, a RocksDB checkpoint (hard links,
//! cheap), and `log/`, the retained CommitLog up to the snapshot's index (sealed segments
//! hard-linked, the last one copied), so a brand-new replica that installs it can serve
//! every retained message. Installing one opens `state/` as a new generation of the index
//! directory (`index-<gen>`, recorded in the `index_gen` cell), swaps it in under readers,
//! and hands `log/` to the log store to replace its segments.
//!
//! Must never: read a clock or anything replica-local while applying; answer a client
//! before its entry's writes are in RocksDB.

mod snapshot;

pub use snapshot::recover_install;
pub use snapshot::{InstallProbe, InstallStep};

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use raftmq_storage::vfs::OsFs;
use raftmq_storage::{Durability, DurableCell, IndexStore, IndexStoreOptions};
use tokio::sync::watch;

use crate::consensus::log_store::LogStore;
use crate::consensus::types::{
    Entry, LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};
use crate::error::{corrupt, io_err, io_other, lock};
use crate::state::applied::Applied;
use crate::state::applier::Applier;
use crate::state::command::{Command, held_log_key};

const META_LAST_APPLIED: &str = "last_applied";
const META_MEMBERSHIP: &str = "membership";

struct Shared {
    data_dir: PathBuf,
    store: RwLock<Arc<IndexStore>>,
    applier: Mutex<Applier>,
    state: Mutex<(Option<LogId>, StoredMembership)>,
    applied_tx: watch::Sender<u64>,
    current_snapshot: Mutex<Option<Snapshot>>,
    gen_cell: DurableCell,
    log: LogStore,
    /// Bumped after every applied change of topic settings is in RocksDB (and after an
    /// install): a cache of topic settings read at an older value is stale.
    topics_version: AtomicU64,
    /// The earliest due time of a pending scheduled message, kept by the applier.
    next_due: Arc<AtomicU64>,
    /// How long each apply call took (all its entries, RocksDB write included).
    apply_seconds: crate::metrics::Histogram,
    /// Asked at each step of an install (fault injection; `None` in production).
    install_probe: Mutex<Option<InstallProbe>>,
}

/// The state machine (clones share state; the snapshot builder is a clone).
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateMachine")
    }
}

fn index_dir(data_dir: &Path, generation: u64) -> PathBuf {
    data_dir.join(format!("index-{generation}"))
}

/// A metadata value and the index of the last entry applied to the state it was read from
/// (one state: apply writes while readers run): what an answer built on it is current as
/// of.
pub(crate) fn meta_as_of(
    store: &IndexStore,
    key: &str,
) -> raftmq_storage::Result<(Option<Vec<u8>>, u64)> {
    let [value, last] = store.meta_get_all([key, META_LAST_APPLIED])?;
    let applied = match last {
        Some(b) => {
            postcard::from_bytes::<LogId>(&b)
                .map_err(|e| raftmq_storage::StorageError::Malformed {
                    what: "last_applied",
                    reason: e.to_string(),
                })?
                .index
        }
        None => 0,
    };
    Ok((value, applied))
}

fn load_state(store: &IndexStore) -> io::Result<(Option<LogId>, StoredMembership)> {
    let last = match store.meta_get(META_LAST_APPLIED).map_err(io_err)? {
        Some(b) => Some(postcard::from_bytes(&b).map_err(|e| corrupt("last_applied", e))?),
        None => None,
    };
    let membership = match store.meta_get(META_MEMBERSHIP).map_err(io_err)? {
        Some(b) => postcard::from_bytes(&b).map_err(|e| corrupt("membership", e))?,
        None => StoredMembership::default(),
    };
    Ok((last, membership))
}

impl StateMachine {
    /// Opens the state machine under `data_dir` (its newest index generation); `log` is the
    /// group's log store, which snapshots export and retention purges.
    pub fn open(data_dir: &Path, log: LogStore) -> io::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let gen_cell = DurableCell::new(Arc::new(OsFs), data_dir, snapshot::INDEX_GEN);
        let generation = snapshot::current_generation(&gen_cell)?;
        let store = Arc::new(
            IndexStore::open(
                &index_dir(data_dir, generation),
                &IndexStoreOptions::default(),
            )
            .map_err(io_err)?,
        );
        // Only once the current generation opened: other generations (replaced by an
        // install, or staged by one that was never decided) and snapshot directories
        // (nothing sends or reads them after a restart) go.
        for entry in std::fs::read_dir(data_dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(g) = name
                .strip_prefix("index-")
                .and_then(|g| g.parse::<u64>().ok())
                && g != generation
            {
                std::fs::remove_dir_all(data_dir.join(name.as_ref()))?;
            }
        }
        let snapshots = data_dir.join("snapshots");
        if snapshots.exists() {
            std::fs::remove_dir_all(&snapshots)?;
        }
        let state = load_state(&store)?;
        let applied = state.0.map_or(0, |l| l.index);
        let applier = Applier::new(store.clone());
        if let Some(p) = applier.retention_point() {
            log.set_retention_point(p);
        }
        let next_due = applier.next_due_handle();
        Ok(StateMachine {
            shared: Arc::new(Shared {
                next_due,
                apply_seconds: crate::metrics::Histogram::default(),
                install_probe: Mutex::new(None),
                data_dir: data_dir.to_path_buf(),
                applier: Mutex::new(applier),
                store: RwLock::new(store),
                state: Mutex::new(state),
                applied_tx: watch::Sender::new(applied),
                current_snapshot: Mutex::new(None),
                gen_cell,
                log,
                topics_version: AtomicU64::new(0),
            }),
        })
    }

    /// Sets the probe every install asks at each of its steps (see [`InstallProbe`]).
    pub fn set_install_probe(&self, probe: Option<InstallProbe>) {
        *lock(&self.shared.install_probe) = probe;
    }

    /// The current IndexStore (swapped when a snapshot is installed).
    pub fn store(&self) -> Arc<IndexStore> {
        self.shared
            .store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes whenever applied topic settings change (see [`crate::Broker::topic`]).
    pub fn topics_version(&self) -> u64 {
        self.shared.topics_version.load(Ordering::Acquire)
    }

    /// The earliest due time of a pending scheduled message
    /// ([`crate::state::queues::NO_TIMER`]: none), as of the last apply.
    pub fn next_due(&self) -> u64 {
        self.shared.next_due.load(Ordering::Acquire)
    }

    /// How long apply calls took.
    pub fn apply_seconds(&self) -> &crate::metrics::Histogram {
        &self.shared.apply_seconds
    }

    /// The last applied log index; changes wake long polls.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.shared.applied_tx.subscribe()
    }

    /// The highest log index retention allows to purge.
    pub fn retention_point(&self) -> Option<u64> {
        lock(&self.shared.applier).retention_point()
    }

    /// The members as of this point of apply (`latest`: a change earlier in the same
    /// apply call, else the last applied one).
    fn members_now(&self, latest: &Option<StoredMembership>) -> Vec<u64> {
        let ids = |m: &StoredMembership| m.membership().nodes().map(|(id, _)| *id).collect();
        match latest {
            Some(m) => ids(m),
            None => ids(&lock(&self.shared.state).1),
        }
    }

    /// The last applied log index and a digest of the whole applied state at it, taken
    /// under the applier's lock so the two match (replicas at equal indexes must have equal
    /// digests). Reads the whole store: for checks, never a request path.
    pub fn state_digest(&self) -> io::Result<(u64, u64)> {
        let applier = lock(&self.shared.applier);
        let index = lock(&self.shared.state).0.map_or(0, |l| l.index);
        let digest = applier.store().digest(&[]).map_err(io_err)?;
        Ok((index, digest))
    }

    /// The last applied log id and membership.
    pub fn applied_state_now(&self) -> (Option<LogId>, StoredMembership) {
        lock(&self.shared.state).clone()
    }

    /// The leader's plan for a receive, made under the applier's lock from the progress it
    /// keeps in memory (the plan is short: no RocksDB scan).
    pub fn plan_receive(
        &self,
        req: &crate::state::consumer_groups::ReceiveRequest,
        start_queue: u32,
        now: u64,
        reserved: &Arc<Mutex<crate::state::consumer_groups::plan::Reserved>>,
    ) -> Result<crate::state::consumer_groups::plan::Plan, crate::error::BrokerError> {
        lock(&self.shared.applier).plan_receive(req, start_queue, now, reserved)
    }

    /// Applies entries, writing RocksDB batches as it goes. Entries whose command does not
    /// read the store ([`crate::state::Command::reads_store`]) share a batch; for every other
    /// command the batch before it is written first and it gets a batch of its own. Apply's
    /// results therefore never depend on where openraft cut the entries into apply calls,
    /// which differs between replicas.
    pub(crate) fn apply_blocking(
        &self,
        entries: &[Entry],
    ) -> io::Result<(Vec<Applied>, Option<LogId>)> {
        let mut applier = lock(&self.shared.applier);
        let store = applier.store().clone();
        let mut batch = store.batch();
        let mut pending: Option<LogId> = None;
        let mut results = Vec::with_capacity(entries.len());
        let mut membership = None;
        for e in entries {
            let shares_batch = match &e.payload {
                EntryPayload::Normal(cmd) => !cmd.reads_store(),
                _ => true,
            };
            if !shares_batch && let Some(last) = pending.take() {
                commit(
                    &self.shared,
                    &mut applier,
                    std::mem::replace(&mut batch, store.batch()),
                    &last,
                    &membership,
                )?;
            }
            let r = match &e.payload {
                EntryPayload::Blank => Applied::Done,
                // A member's record only: one about a node removed meanwhile is dropped.
                EntryPayload::Normal(Command::HeldLog { node, .. })
                    if !self.members_now(&membership).contains(node) =>
                {
                    Applied::Done
                }
                EntryPayload::Normal(cmd) => applier
                    .apply(&mut batch, e.log_id.index, cmd)
                    .map_err(io_err)?,
                EntryPayload::Membership(m) => {
                    // Nodes leaving the group: their records go (added back, they start
                    // empty by design).
                    let before = self.members_now(&membership);
                    for gone in before.into_iter().filter(|id| m.get_node(id).is_none()) {
                        batch.delete_meta(&held_log_key(gone));
                    }
                    membership = Some(StoredMembership::new(Some(e.log_id), m.clone()));
                    Applied::Done
                }
            };
            results.push(r);
            pending = Some(e.log_id);
            if !shares_batch {
                commit(
                    &self.shared,
                    &mut applier,
                    std::mem::replace(&mut batch, store.batch()),
                    &e.log_id,
                    &membership,
                )?;
                pending = None;
            }
        }
        if let Some(last) = pending {
            commit(&self.shared, &mut applier, batch, &last, &membership)?;
        }
        let last = entries.last().map(|e| e.log_id);
        if let Some(p) = applier.retention_point() {
            self.shared.log.set_retention_point(p);
        }
        let mut state = lock(&self.shared.state);
        if last.is_some() {
            state.0 = last;
        }
        if let Some(m) = membership {
            state.1 = m;
        }
        Ok((results, last))
    }
}

/// Writes one batch of apply's writes together with `last_applied` (and membership).
fn commit(
    shared: &Shared,
    applier: &mut Applier,
    mut batch: raftmq_storage::IndexBatch<'_>,
    last: &LogId,
    membership: &Option<StoredMembership>,
) -> io::Result<()> {
    batch.put_meta(
        META_LAST_APPLIED,
        &postcard::to_allocvec(last).map_err(io_other)?,
    );
    if let Some(m) = membership {
        batch.put_meta(
            META_MEMBERSHIP,
            &postcard::to_allocvec(m).map_err(io_other)?,
        );
    }
    applier
        .store()
        .write(batch, Durability::Wal)
        .map_err(io_err)?;
    if applier.finish_batch() {
        shared.topics_version.fetch_add(1, Ordering::Release);
    }
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok(self.applied_state_now())
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            batch.push(entry);
            responders.push(responder);
        }
        let Some(last) = batch.last() else {
            return Ok(());
        };
        // A leader (or a follower told of a commit before its own sync ends) may be handed
        // entries it has not synced yet: applied state must never run ahead of its own
        // durable log, or after a power cut openraft would find the log ending before the
        // applied index and purge the whole log to close the gap, taking this replica's
        // copy of every message with it (found by raftmq-sim, docs/simulation.md).
        self.shared.log.wait_durable(last.log_id.index).await;
        let deletes = batch.iter().any(|e| {
            matches!(
                &e.payload,
                EntryPayload::Normal(Command::DeleteTopic { .. })
            )
        });
        let this = self.clone();
        let (results, last) = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let r = this.apply_blocking(&batch);
            this.shared.apply_seconds.observe(started.elapsed());
            r
        })
        .await
        .map_err(io_err)??;
        // A deleted topic's range tombstones slow down reads that pass where it was until
        // RocksDB compacts them: compact them now, in the background.
        if deletes {
            let store = self.store();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = store.compact_deleted_topics() {
                    tracing::warn!(error = %e, "compacting deleted topics");
                }
            });
        }
        for (r, responder) in results.into_iter().zip(responders) {
            if let Some(responder) = responder {
                responder.send(r);
            }
        }
        if let Some(last) = last {
            self.shared.applied_tx.send_replace(last.index);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        self.install(meta, snapshot).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(lock(&self.shared.current_snapshot).clone())
    }
}

#[cfg(test)]
mod install_tests;
#[cfg(test)]
mod tests;
