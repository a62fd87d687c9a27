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

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use raftmq_storage::vfs::OsFs;
use raftmq_storage::{Durability, DurableCell, IndexStore, IndexStoreOptions};
use tokio::sync::watch;

use crate::apply::{Applied, Applier};
use crate::error::io_err;
use crate::log_store::LogStore;
use crate::types::{LogId, StoredMembership, TypeConfig};

const META_LAST_APPLIED: &str = "last_applied";
const META_MEMBERSHIP: &str = "membership";

/// A snapshot on disk: a directory holding a RocksDB checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotData {
    /// The checkpoint directory.
    pub dir: PathBuf,
}

type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;

struct Shared {
    data_dir: PathBuf,
    store: RwLock<Arc<IndexStore>>,
    applier: Mutex<Applier>,
    state: Mutex<(Option<LogId>, StoredMembership)>,
    applied_tx: watch::Sender<u64>,
    current_snapshot: Mutex<Option<Snapshot>>,
    gen_cell: DurableCell,
    log: LogStore,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn index_dir(data_dir: &Path, generation: u64) -> PathBuf {
    data_dir.join(format!("index-{generation}"))
}

fn load_state(store: &IndexStore) -> io::Result<(Option<LogId>, StoredMembership)> {
    let last = match store.meta_get(META_LAST_APPLIED).map_err(io_err)? {
        Some(b) => Some(postcard::from_bytes(&b).map_err(io_err)?),
        None => None,
    };
    let membership = match store.meta_get(META_MEMBERSHIP).map_err(io_err)? {
        Some(b) => postcard::from_bytes(&b).map_err(io_err)?,
        None => StoredMembership::default(),
    };
    Ok((last, membership))
}

impl StateMachine {
    /// Opens the state machine under `data_dir` (its newest index generation); `log` is the
    /// group's log store, which snapshots export and retention purges.
    pub fn open(data_dir: &Path, log: LogStore) -> io::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let gen_cell = DurableCell::new(Arc::new(OsFs), data_dir, "index_gen");
        let generation = match gen_cell.load().map_err(io_err)? {
            Some(b) => u64::from_le_bytes(b.as_slice().try_into().map_err(io_err)?),
            None => 0,
        };
        // Older generations were replaced by snapshot installs; nothing reads them now.
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
        let store = Arc::new(
            IndexStore::open(
                &index_dir(data_dir, generation),
                &IndexStoreOptions::default(),
            )
            .map_err(io_err)?,
        );
        let state = load_state(&store)?;
        let applied = state.0.map_or(0, |l| l.index);
        let applier = Applier::new(store.clone());
        if let Some(p) = applier.retention_point() {
            log.set_retention_point(p);
        }
        Ok(StateMachine {
            shared: Arc::new(Shared {
                data_dir: data_dir.to_path_buf(),
                applier: Mutex::new(applier),
                store: RwLock::new(store),
                state: Mutex::new(state),
                applied_tx: watch::Sender::new(applied),
                current_snapshot: Mutex::new(None),
                gen_cell,
                log,
            }),
        })
    }

    /// The current IndexStore (swapped when a snapshot is installed).
    pub fn store(&self) -> Arc<IndexStore> {
        self.shared
            .store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The last applied log index; changes wake long polls.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.shared.applied_tx.subscribe()
    }

    /// The highest log index retention allows to purge.
    pub fn retention_point(&self) -> Option<u64> {
        lock(&self.shared.applier).retention_point()
    }

    /// The last applied log id and membership.
    pub fn applied_state_now(&self) -> (Option<LogId>, StoredMembership) {
        lock(&self.shared.state).clone()
    }

    /// Applies entries, writing RocksDB batches as it goes. Entries whose apply only reads
    /// what the applier caches (produce, topic changes, offset commits) share a batch;
    /// every other command reads the store, so the batch before it is written first and it
    /// gets a batch of its own. Apply's results therefore never depend on where openraft
    /// cut the entries into apply calls, which differs between replicas.
    pub(crate) fn apply_blocking(
        &self,
        entries: &[crate::types::Entry],
    ) -> io::Result<(Vec<Applied>, Option<LogId>)> {
        let mut applier = lock(&self.shared.applier);
        let store = applier.store().clone();
        let mut batch = store.batch();
        let mut pending: Option<LogId> = None;
        let mut results = Vec::with_capacity(entries.len());
        let mut membership = None;
        let commit = |batch: raftmq_storage::IndexBatch<'_>,
                      last: &LogId,
                      membership: &Option<StoredMembership>,
                      applier: &mut Applier|
         -> io::Result<()> {
            let mut batch = batch;
            batch.put_meta(
                META_LAST_APPLIED,
                &postcard::to_allocvec(last).map_err(io_err)?,
            );
            if let Some(m) = membership {
                batch.put_meta(META_MEMBERSHIP, &postcard::to_allocvec(m).map_err(io_err)?);
            }
            store.write(batch, Durability::Wal).map_err(io_err)?;
            applier.finish_batch();
            Ok(())
        };
        for e in entries {
            let shares_batch = match &e.payload {
                EntryPayload::Normal(cmd) => batch_safe(cmd),
                _ => true,
            };
            if !shares_batch && let Some(last) = pending.take() {
                commit(
                    std::mem::replace(&mut batch, store.batch()),
                    &last,
                    &membership,
                    &mut applier,
                )?;
            }
            let r = match &e.payload {
                EntryPayload::Blank => Applied::Done,
                EntryPayload::Normal(cmd) => applier
                    .apply(&mut batch, e.log_id.index, cmd)
                    .map_err(io_err)?,
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(e.log_id), m.clone()));
                    Applied::Done
                }
            };
            results.push(r);
            pending = Some(e.log_id);
            if !shares_batch {
                commit(
                    std::mem::replace(&mut batch, store.batch()),
                    &e.log_id,
                    &membership,
                    &mut applier,
                )?;
                pending = None;
            }
        }
        if let Some(last) = pending {
            commit(batch, &last, &membership, &mut applier)?;
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

/// Whether a command's apply reads only what the applier caches, so it may share a RocksDB
/// batch with the entries before it.
fn batch_safe(cmd: &crate::command::Command) -> bool {
    use crate::command::Command;
    matches!(
        cmd,
        Command::Produce { .. } | Command::PutTopic { .. } | Command::CommitOffsets { .. }
    )
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
        if batch.is_empty() {
            return Ok(());
        }
        let this = self.clone();
        let (results, last) = tokio::task::spawn_blocking(move || this.apply_blocking(&batch))
            .await
            .map_err(io_err)??;
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
                Some(b) => u64::from_le_bytes(b.as_slice().try_into().map_err(io_err)?),
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
                return Err(io_err(format!(
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

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(lock(&self.shared.current_snapshot).clone())
    }
}

/// Links a shipped log directory's files into `to`: sealed segments as hard links (they
/// never change), the newest segment as a copy (it will be appended to once adopted).
fn link_log(from: &Path, to: &Path) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bytes::Bytes;
    use raftmq_storage::CommitLogOptions;
    use raftmq_storage::message::{BatchEncoder, MessageIn};
    use raftmq_storage::vfs::MemFs;

    use super::*;
    use crate::command::{AckCmd, Command, LeaseCmd, TopicSpec};
    use crate::groups::GroupMode;
    use crate::log_store::{FlushPolicy, LogStore};
    use crate::types::{Entry, log_id};

    fn open(dir: &Path) -> StateMachine {
        let log = LogStore::open_on(
            Arc::new(MemFs::new()),
            Path::new("/log"),
            CommitLogOptions::default(),
            FlushPolicy::Sync,
        )
        .unwrap();
        StateMachine::open(dir, log).unwrap()
    }

    fn entries() -> Vec<Entry> {
        let mut buf = Vec::new();
        let mut enc = BatchEncoder::new(&mut buf, "t", 10).unwrap();
        for _ in 0..2 {
            enc.push(
                &MessageIn {
                    body: b"x",
                    ..Default::default()
                },
                [],
            )
            .unwrap();
        }
        enc.finish();
        let spec = TopicSpec {
            queues: 1,
            fifo: false,
            retention_ms: 1_000_000,
        };
        let lease = LeaseCmd {
            group: "g".into(),
            topic: "t".into(),
            consumer: "c".into(),
            mode: GroupMode::Clustering,
            now_ms: 100,
            invisible_ms: 1000,
            items: vec![(0, 0), (0, 1)],
            skip: vec![],
            dead: vec![],
        };
        let ack = AckCmd {
            group: "g".into(),
            topic: "t".into(),
            receipts: vec!["0-0-1-2-c".into()],
            now_ms: 200,
            nack_delay_ms: None,
        };
        let ack2 = AckCmd {
            receipts: vec!["0-1-1-2-c".into(), "0-0-1-2-c".into()],
            now_ms: 250,
            ..ack.clone()
        };
        let heartbeat = crate::command::HeartbeatCmd {
            group: "g".into(),
            consumer: "c".into(),
            topics: vec!["t".into()],
            session_ms: 1000,
            now_ms: 260,
        };
        [
            Command::Produce {
                create_topic: Some(spec),
                batch: Bytes::from(buf),
            },
            Command::Lease(lease),
            Command::Ack(ack),
            Command::Ack(ack2),
            Command::Heartbeat(heartbeat),
            Command::CommitOffsets {
                group: "g".into(),
                topic: "t".into(),
                offsets: vec![(0, 1)],
            },
            Command::Ack(AckCmd {
                receipts: vec!["0-1-1-2-c".into()],
                now_ms: 270,
                ..AckCmd {
                    group: "g".into(),
                    topic: "t".into(),
                    receipts: vec![],
                    now_ms: 0,
                    nack_delay_ms: None,
                }
            }),
            Command::Retain { now_ms: 300 },
        ]
        .into_iter()
        .enumerate()
        .map(|(i, c)| Entry {
            log_id: log_id(1, 1, i as u64 + 1),
            payload: EntryPayload::Normal(c),
        })
        .collect()
    }

    #[test]
    fn results_do_not_depend_on_how_entries_are_cut_into_apply_calls() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (one, many) = (open(a.path()), open(b.path()));
        let all = entries();
        let (together, _) = one.apply_blocking(&all).unwrap();
        let apart: Vec<Applied> = all
            .iter()
            .flat_map(|e| many.apply_blocking(std::slice::from_ref(e)).unwrap().0)
            .collect();
        assert_eq!(together, apart);
        assert!(
            matches!(&together[1], Applied::Leased { granted } if granted.len() == 2),
            "{together:?}"
        );
        assert_eq!(
            together[2],
            Applied::Acked {
                results: vec![None]
            }
        );
        // Acks share a batch with what came before; the second repeats the first.
        assert_eq!(
            together[3],
            Applied::Acked {
                results: vec![None, None]
            }
        );
        assert_eq!(
            together[4],
            Applied::Assigned {
                assignments: vec![("t".into(), vec![0])]
            }
        );
        // A commit moved the floor back to 1; an ack in the same batch sees it (and finds
        // no lease there any more), exactly as it does when applied alone.
        assert_eq!(
            together[6],
            Applied::Acked {
                results: vec![Some("RECEIPT_INVALID".into())]
            }
        );
        let (sa, sb) = (one.store(), many.store());
        assert_eq!(sa.offset_get("g", "t", 0).unwrap(), Some(1));
        assert_eq!(
            sa.offset_get("g", "t", 0).unwrap(),
            sb.offset_get("g", "t", 0).unwrap()
        );
        assert_eq!(
            sa.group_scan(b"S", None, 100).unwrap(),
            sb.group_scan(b"S", None, 100).unwrap()
        );
        assert_eq!(one.retention_point(), many.retention_point());
        assert_eq!(
            one.retention_point(),
            Some(0),
            "entry 1 holds a retained message"
        );
    }
}
