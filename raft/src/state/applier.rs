//! Applying committed commands to the IndexStore: the deterministic heart of the state
//! machine. The [`Applier`] owns the two parts of the applied state, [`Queues`] (topics and
//! ConsumeQueues) and [`ConsumerGroups`], the retention point and the users, and dispatches each
//! command to them.
//!
//! All writes of one apply go into the caller's `IndexBatch`, committed by the state
//! machine together with `last_applied`.
//!
//! Must never: read a clock, a random source or anything local to the replica (apply must
//! give identical results everywhere), or write a message body to RocksDB.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use raftmq_storage::{IndexBatch, IndexStore, StorageError};

use crate::state::applied::{Applied, RejectCode, reject};
use crate::state::command::{Command, User, held_log_key};
use crate::state::consumer_groups::ConsumerGroups;
use crate::state::consumer_groups::ReceiveRequest;
use crate::state::consumer_groups::plan::{self, Plan, Reserved};
use crate::state::queues::{NO_TIMER, Queues};

/// `sm_meta` key of the retention point (u64 LE): the log may be purged up to it.
pub const META_RETENTION_POINT: &str = "retention_point";

/// `sm_meta` key of the users (postcard `Vec<User>`, sorted by name).
pub const META_USERS: &str = "acl_users";

/// The users in `store`.
pub fn users(store: &IndexStore) -> raftmq_storage::Result<Vec<User>> {
    match store.meta_get(META_USERS)? {
        None => Ok(Vec::new()),
        Some(b) => postcard::from_bytes(&b).map_err(|e| StorageError::Malformed {
            what: "users",
            reason: e.to_string(),
        }),
    }
}

/// `sm_meta` key of apply's clock (u64 LE): the latest time any applied entry carried.
pub const META_CLOCK: &str = "clock";

fn meta_u64(store: &IndexStore, key: &str) -> Option<u64> {
    store
        .meta_get(key)
        .ok()
        .flatten()
        .and_then(|b| Some(u64::from_le_bytes(b.as_slice().try_into().ok()?)))
}

/// Applies commands; owns the applied state's caches.
#[derive(Debug)]
pub struct Applier {
    store: Arc<IndexStore>,
    queues: Queues,
    groups: ConsumerGroups,
    retention_point: Option<u64>,
    /// The latest time an applied entry carried: time at apply never goes back, so a
    /// leader whose clock is behind cannot revive expired leases or sessions.
    clock: u64,
}

impl Applier {
    /// An applier over `store`.
    pub fn new(store: Arc<IndexStore>) -> Self {
        Applier::with_next_due(store, Arc::new(AtomicU64::new(NO_TIMER)))
    }

    /// An applier over `store` that keeps the earliest due time of a scheduled message in
    /// `next_due`.
    fn with_next_due(store: Arc<IndexStore>, next_due: Arc<AtomicU64>) -> Self {
        let retention_point = meta_u64(&store, META_RETENTION_POINT);
        let clock = meta_u64(&store, META_CLOCK).unwrap_or(0);
        Applier {
            clock,
            queues: Queues::new(store.clone(), next_due),
            groups: ConsumerGroups::new(store.clone()),
            store,
            retention_point,
        }
    }

    /// Call after writing a batch: what it wrote is in RocksDB now. Returns whether the
    /// batch changed any topic's settings.
    pub fn finish_batch(&mut self) -> bool {
        self.groups.finish_batch();
        self.queues.finish_batch()
    }

    /// The highest log index retention allows to purge, if any.
    pub fn retention_point(&self) -> Option<u64> {
        self.retention_point
    }

    /// Forgets cached state (after the store was replaced by a snapshot).
    pub fn reset(&mut self, store: Arc<IndexStore>) {
        *self = Applier::with_next_due(store, self.queues.next_due_handle());
    }

    /// The earliest due time of a pending scheduled message ([`NO_TIMER`]: none), kept
    /// current by apply (also across [`Applier::reset`]).
    pub fn next_due_handle(&self) -> Arc<AtomicU64> {
        self.queues.next_due_handle()
    }

    /// Apply's time for an entry that carries `now_ms`: never before an earlier entry's.
    fn tick(&mut self, batch: &mut IndexBatch<'_>, now_ms: u64) -> u64 {
        if now_ms > self.clock {
            self.clock = now_ms;
            batch.put_meta(META_CLOCK, &now_ms.to_le_bytes());
        }
        self.clock
    }

    /// The leader's plan for a receive, from the in-memory progress apply keeps (see
    /// [`crate::state::consumer_groups::plan`]).
    pub fn plan_receive(
        &mut self,
        req: &ReceiveRequest,
        start_queue: u32,
        now: u64,
        reserved: &Arc<std::sync::Mutex<Reserved>>,
    ) -> Result<Plan, crate::error::BrokerError> {
        plan::plan(&mut self.groups, req, start_queue, now, reserved)
    }

    /// The store this applier writes to.
    pub fn store(&self) -> &Arc<IndexStore> {
        &self.store
    }

    /// Applies one command at `log_index`, adding its writes to `batch`. Errors are storage
    /// failures (fatal to the node); refusals are `Applied::Rejected`.
    pub fn apply(
        &mut self,
        batch: &mut IndexBatch<'_>,
        log_index: u64,
        cmd: &Command,
    ) -> raftmq_storage::Result<Applied> {
        let now = match cmd {
            Command::Retain { now_ms } => self.tick(batch, *now_ms),
            Command::Deliver { now_ms } => self.tick(batch, *now_ms),
            Command::EndTxn(c) => self.tick(batch, c.now_ms),
            Command::Lease(c) => self.tick(batch, c.now_ms),
            Command::Ack(c) => self.tick(batch, c.now_ms),
            Command::Heartbeat(c) => self.tick(batch, c.now_ms),
            Command::Produce { .. }
            | Command::ProduceHalf { .. }
            | Command::PutTopic { .. }
            | Command::DeleteTopic { .. }
            | Command::ResetOffsets(_)
            | Command::PutGroup(_)
            | Command::CommitOffsets { .. }
            | Command::PutUser(_)
            | Command::DeleteUser { .. }
            | Command::HeldLog { .. } => self.clock,
        };
        let (queues, groups) = (&mut self.queues, &mut self.groups);
        match cmd {
            Command::Produce {
                create_topic,
                batch: bytes,
            } => queues.produce(batch, log_index, *create_topic, bytes, now),
            Command::Deliver { .. } => {
                queues.deliver(batch, now)?;
                Ok(Applied::Done)
            }
            Command::ProduceHalf {
                create_topic,
                check,
                batch: bytes,
            } => queues.produce_half(batch, log_index, *create_topic, check, bytes),
            Command::EndTxn(c) => queues.end_txn(batch, c, now),
            Command::PutTopic { name, spec } => queues.put_topic(batch, name, *spec),
            // The state machine applies it only while the node is a member.
            Command::HeldLog { node, index } => {
                batch.put_meta(&held_log_key(*node), &index.to_le_bytes());
                Ok(Applied::Done)
            }
            Command::DeleteTopic { name } => match queues.delete_topic(batch, name)? {
                Some(meta) => {
                    groups.forget_topic(batch, name, meta.queues)?;
                    Ok(Applied::Done)
                }
                None => Ok(reject(
                    RejectCode::TopicNotFound,
                    format!("topic {name} does not exist"),
                )),
            },
            Command::Retain { .. } => {
                let retained = queues.retain(batch, log_index, now)?;
                let mut moved: BTreeMap<&str, Vec<(u32, u64)>> = BTreeMap::new();
                for (topic, queue, first) in &retained.moved {
                    moved.entry(topic).or_default().push((*queue, *first));
                }
                for (topic, queues_moved) in moved {
                    groups.retained(batch, topic, &queues_moved)?;
                }
                let point = retained.oldest_needed.saturating_sub(1);
                if self.retention_point.is_none_or(|p| point > p) {
                    self.retention_point = Some(point);
                    batch.put_meta(META_RETENTION_POINT, &point.to_le_bytes());
                    // Open transactions pin their entries, so none is below the point.
                    batch.delete_txns_before(point + 1);
                }
                Ok(Applied::Done)
            }
            Command::Lease(c) => groups.lease(batch, queues, log_index, c, now),
            Command::Ack(c) => groups.ack(batch, queues, c, now),
            Command::Heartbeat(c) => groups.heartbeat(batch, queues, c, now),
            Command::ResetOffsets(c) => groups.reset_offsets(batch, queues, c),
            Command::PutGroup(c) => groups.put_group(batch, c),
            Command::CommitOffsets {
                group,
                topic,
                offsets,
            } => groups.commit_offsets(batch, queues, group, topic, offsets),
            // A user command reads the store, so it has a batch of its own
            // (`Command::reads_store`): the store shows every earlier user command.
            Command::PutUser(user) => {
                let mut all = users(&self.store)?;
                all.retain(|u| u.name != user.name);
                all.push(user.clone());
                all.sort_by(|a, b| a.name.cmp(&b.name));
                batch.put_meta(
                    META_USERS,
                    &postcard::to_allocvec(&all).expect("users encode"),
                );
                Ok(Applied::Done)
            }
            Command::DeleteUser { name } => {
                let mut all = users(&self.store)?;
                let before = all.len();
                all.retain(|u| &u.name != name);
                if all.len() == before {
                    return Ok(reject(
                        RejectCode::NotFound,
                        format!("user {name} does not exist"),
                    ));
                }
                batch.put_meta(
                    META_USERS,
                    &postcard::to_allocvec(&all).expect("users encode"),
                );
                Ok(Applied::Done)
            }
        }
    }
}
