//! `Broker`: one member of a broker group, everything the API layer needs in one handle.
//!
//! It opens the log store and state machine, starts openraft with the peer network, forms
//! the group on first start (see [`Broker::start`]), proposes commands, serves reads from
//! the local applied state, and reports cluster status.
//!
//! Must never: forward HTTP requests (the API layer does that), or block the async runtime
//! on the disk (reads go to the blocking pool).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use openraft::ChangeMembers;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::impls::BasicNode;
use raftmq_storage::message::{BatchEncoder, MessageIn};
use raftmq_storage::{CommitLogOptions, IndexStore};
use tokio::sync::watch;

use crate::apply::Applied;
use crate::command::{Command, TopicSpec};
use crate::error::ReadError;
use crate::log_store::{FlushPolicy, LogStore};
use crate::network::Network;
use crate::read::{QueueQuery, QueueRead, StoredMessage};
use crate::state_machine::StateMachine;
use crate::types::{Metrics, NodeId};
use crate::{Raft, RaftTiming, raft_config};

/// Settings of one broker group member.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Group name (part of message ids).
    pub group: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Group members at first start: id -> HTTP address.
    pub peers: BTreeMap<NodeId, String>,
    /// Flush policy of the CommitLog.
    pub flush: FlushPolicy,
    /// CommitLog segment size.
    pub segment_size: u64,
    /// Form the group from `peers` if this node's log is empty (false: wait to be added).
    pub form_group: bool,
    /// How often the leader proposes retention and every node purges expired segments.
    pub retention_check: Duration,
    /// Source IP of connections to peers, if it must be a particular one.
    pub peer_source_ip: Option<std::net::IpAddr>,
    /// Raft timing.
    pub timing: RaftTiming,
}

/// Why a proposal did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; nothing was written.
    #[error("not the leader")]
    NotLeader {
        /// The leader, if known: id and HTTP address.
        leader: Option<(NodeId, String)>,
    },
    /// The entry may or may not be committed (discarded from this node's log, Raft stopped
    /// after the proposal).
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// A membership change was refused.
    #[error("{0}")]
    Membership(String),
}

/// One message of a produce request, validated by the API layer.
#[derive(Clone, Debug, Default)]
pub struct ProduceMessage {
    /// Body bytes.
    pub body: Bytes,
    /// Whether the body came as base64.
    pub binary: bool,
    /// Business key.
    pub key: Option<String>,
    /// Tag.
    pub tag: Option<String>,
    /// Properties.
    pub properties: Vec<(String, String)>,
    /// Explicit queue.
    pub queue: Option<u32>,
}

/// The placement of one produced message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Its id.
    pub msg_id: String,
    /// Its queue.
    pub queue: u32,
    /// Its offset.
    pub offset: u64,
}

/// Why a produce failed before or at apply.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The topic does not exist and auto-create is off.
    #[error("topic {0} does not exist")]
    TopicNotFound(String),
    /// Invalid input (message names the field).
    #[error("{0}")]
    Invalid(String),
    /// Refused at apply.
    #[error("{message}")]
    Rejected {
        /// Reason code.
        code: crate::apply::RejectCode,
        /// Reason.
        message: String,
    },
    /// Proposal failed.
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// Local storage failed.
    #[error("storage: {0}")]
    Storage(String),
}

/// A member's view of the cluster, for `GET /v1/cluster`.
#[derive(Clone, Debug)]
pub struct ClusterStatus {
    /// Group name.
    pub group: String,
    /// This node.
    pub node_id: NodeId,
    /// The leader it knows of.
    pub leader_id: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Committed index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Members: id, address, role, matched index (known on the leader).
    pub members: Vec<MemberStatus>,
}

/// One member in [`ClusterStatus`].
#[derive(Clone, Debug)]
pub struct MemberStatus {
    /// Node id.
    pub id: NodeId,
    /// HTTP address.
    pub addr: String,
    /// `leader`, `follower` or `learner`.
    pub role: &'static str,
    /// Last log index known to be replicated there.
    pub matched_index: Option<u64>,
}

/// A broker group member. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: BrokerConfig,
    raft: Raft,
    log: LogStore,
    sm: StateMachine,
    round_robin: Mutex<HashMap<String, Arc<AtomicU32>>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Broker(node {})", self.inner.cfg.node_id)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Formats a message id: `{group}.{log_index}.{slot}` ('.' never occurs in a group name).
pub fn msg_id(group: &str, log_index: u64, slot: u32) -> String {
    format!("{group}.{log_index}.{slot}")
}

/// Parses a message id into `(group, log_index, slot)`.
pub fn parse_msg_id(id: &str) -> Option<(&str, u64, u32)> {
    let mut parts = id.rsplitn(3, '.');
    let slot = parts.next()?.parse().ok()?;
    let index = parts.next()?.parse().ok()?;
    let group = parts.next()?;
    Some((group, index, slot))
}

impl Broker {
    /// Opens storage, starts Raft and, on a node whose log is empty, forms the group from
    /// `peers`: the lowest id initializes at once, the others only if no leader has reached
    /// them after a grace period (so a group forms even if the lowest node is down).
    pub async fn start(cfg: BrokerConfig) -> Result<Broker, StartError> {
        let log = LogStore::open(
            &cfg.data_dir.join("log"),
            CommitLogOptions {
                segment_size: cfg.segment_size,
            },
            cfg.flush,
        )?;
        let sm = StateMachine::open(&cfg.data_dir.join("state"), log.clone())?;
        let config = Arc::new(raft_config(&cfg.group, cfg.timing)?);
        let raft = Raft::new(
            cfg.node_id,
            config,
            Network::new(cfg.node_id, cfg.peer_source_ip),
            log.clone(),
            sm.clone(),
        )
        .await?;
        let broker = Broker {
            inner: Arc::new(Inner {
                cfg,
                raft,
                log,
                sm,
                round_robin: Mutex::new(HashMap::new()),
            }),
        };
        if broker.inner.cfg.form_group {
            broker.spawn_group_formation();
        }
        broker.spawn_retention();
        Ok(broker)
    }

    fn spawn_group_formation(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let cfg = &this.inner.cfg;
            let lowest = cfg.peers.keys().next().copied() == Some(cfg.node_id);
            if !lowest {
                tokio::time::sleep(Duration::from_millis(cfg.timing.election_timeout_ms * 6)).await;
            }
            match this.inner.raft.is_initialized().await {
                Ok(false) => {}
                _ => return,
            }
            if this.metrics().current_leader.is_some() {
                return;
            }
            let members: BTreeMap<NodeId, BasicNode> = cfg
                .peers
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            match this.inner.raft.initialize(members).await {
                Ok(()) => tracing::info!(node_id = cfg.node_id, "initialized the group"),
                Err(e) => tracing::debug!(error = %e, "not initializing the group"),
            }
        });
    }

    /// Retention, every `retention_check`: the leader proposes `Retain` (expired index
    /// entries go, the retention point advances, identically everywhere); then every node
    /// snapshots (cheap: a checkpoint and hard links) and lets openraft purge its log up to
    /// the retention point, whole segments at a time.
    fn spawn_retention(&self) {
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
                if this.is_leader()
                    && let Err(e) = this.propose(Command::Retain { now_ms: now_ms() }).await
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
                    "snapshot covering the retention point",
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

    /// The openraft handle (for the peer RPC routes).
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.cfg.node_id
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.inner.cfg.group
    }

    /// Where received snapshots are unpacked.
    pub fn incoming_snapshot_dir(&self) -> PathBuf {
        self.inner.cfg.data_dir.join("incoming-snapshots")
    }

    /// Current Raft metrics.
    pub fn metrics(&self) -> Metrics {
        self.inner.raft.metrics().borrow_watched().clone()
    }

    /// The log store's counters.
    pub fn log_stats(&self) -> &crate::log_store::LogStats {
        self.inner.log.stats()
    }

    /// Wakes on every apply (value: last applied index).
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.inner.sm.applied()
    }

    /// The leader as `(id, address)`, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.metrics();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
        Some((id, addr))
    }

    /// Whether this node is the leader now.
    pub fn is_leader(&self) -> bool {
        self.metrics().current_leader == Some(self.node_id())
    }

    /// Proposes a command and waits for it to be applied here.
    pub async fn propose(&self, cmd: Command) -> Result<Applied, ProposeError> {
        match self.inner.raft.client_write(cmd).await {
            Ok(resp) => Ok(resp.data),
            Err(e) => Err(self.map_write_error(e)),
        }
    }

    fn map_write_error(
        &self,
        e: RaftError<crate::TypeConfig, ClientWriteError<crate::TypeConfig>>,
    ) -> ProposeError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ProposeError::NotLeader {
                leader: f
                    .leader_id
                    .zip(f.leader_node)
                    .map(|(id, node)| (id, node.addr)),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                ProposeError::Membership(e.to_string())
            }
            other => ProposeError::Unknown(other.to_string()),
        }
    }

    fn pick_queue(&self, topic: &str, queues: u32, m: &ProduceMessage) -> u32 {
        if let Some(q) = m.queue {
            return q;
        }
        if let Some(key) = &m.key {
            return crc32_key(key) % queues;
        }
        let counter = self
            .inner
            .round_robin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(topic.to_owned())
            .or_default()
            .clone();
        counter.fetch_add(1, Ordering::Relaxed) % queues
    }

    /// Produces a batch (on the leader): picks queues, encodes the batch once, proposes it.
    pub async fn produce(
        &self,
        topic: &str,
        messages: &[ProduceMessage],
        auto_create: Option<TopicSpec>,
    ) -> Result<Vec<Placed>, ProduceError> {
        let existing = self
            .topic(topic)
            .await
            .map_err(|e| ProduceError::Storage(e.to_string()))?;
        let (queues, create_topic) = match (existing, auto_create) {
            (Some(t), _) => (t.queues, None),
            (None, Some(spec)) => (spec.queues, Some(spec)),
            (None, None) => return Err(ProduceError::TopicNotFound(topic.to_owned())),
        };
        let mut buf = Vec::new();
        let mut enc = BatchEncoder::new(&mut buf, topic, now_ms())
            .map_err(|e| ProduceError::Invalid(format!("topic: {e}")))?;
        let born = now_ms();
        for (i, m) in messages.iter().enumerate() {
            if let Some(q) = m.queue
                && q >= queues
            {
                return Err(ProduceError::Invalid(format!(
                    "messages[{i}].queue: {q} is out of range (topic {topic} has {queues} queues)"
                )));
            }
            let queue = self.pick_queue(topic, queues, m);
            enc.push(
                &MessageIn {
                    queue,
                    born_ms: born,
                    deliver_at_ms: None,
                    key: m.key.as_deref(),
                    tag: m.tag.as_deref(),
                    binary: m.binary,
                    body: &m.body,
                },
                m.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .map_err(|e| ProduceError::Invalid(format!("messages[{i}]: {e}")))?;
        }
        enc.finish();
        let applied = self
            .propose(Command::Produce {
                create_topic,
                batch: Bytes::from(buf),
            })
            .await?;
        match applied {
            Applied::Produced { log_index, placed } => Ok(placed
                .into_iter()
                .enumerate()
                .map(|(slot, (queue, offset))| Placed {
                    msg_id: msg_id(self.group(), log_index, slot as u32),
                    queue,
                    offset,
                })
                .collect()),
            Applied::Rejected { code, message } => Err(ProduceError::Rejected { code, message }),
            _ => Err(ProduceError::Storage(
                "produce applied without placements".into(),
            )),
        }
    }

    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&IndexStore, &LogStore) -> T + Send + 'static,
    ) -> T {
        let store = self.inner.sm.store();
        let log = self.inner.log.clone();
        tokio::task::spawn_blocking(move || f(&store, &log))
            .await
            .expect("blocking read task panicked")
    }

    /// One topic's settings.
    pub async fn topic(&self, name: &str) -> raftmq_storage::Result<Option<TopicSpec>> {
        let name = name.to_owned();
        self.blocking(move |s, _| Ok(s.topic_get(&name)?.map(TopicSpec::from)))
            .await
    }

    /// Every topic.
    pub async fn topics(&self) -> raftmq_storage::Result<Vec<(String, TopicSpec)>> {
        self.blocking(|s, _| {
            Ok(s.topics()?
                .into_iter()
                .map(|(n, m)| (n, TopicSpec::from(m)))
                .collect())
        })
        .await
    }

    /// A group's committed offsets for a topic, by queue.
    pub async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> raftmq_storage::Result<Vec<(u32, u64)>> {
        let (group, topic) = (group.to_owned(), topic.to_owned());
        self.blocking(move |s, _| s.offsets_of(&group, &topic))
            .await
    }

    /// `(min, max)` offsets of each queue of a topic.
    pub async fn queue_bounds(
        &self,
        topic: &str,
        queues: u32,
    ) -> raftmq_storage::Result<Vec<(u64, u64)>> {
        let topic = topic.to_owned();
        self.blocking(move |s, _| {
            (0..queues)
                .map(|q| Ok(s.cq_bounds(&topic, q)?.unwrap_or((0, 0))))
                .collect()
        })
        .await
    }

    /// Reads a queue from the local applied state.
    pub async fn read_queue(&self, query: QueueQuery) -> Result<QueueRead, ReadError> {
        self.blocking(move |s, log| crate::read::read_queue(s, &log.read_log(), &query))
            .await
    }

    /// Reads one message by id (no scan: the id names the log entry and slot).
    pub async fn read_message(
        &self,
        log_index: u64,
        slot: u32,
    ) -> Result<Option<StoredMessage>, ReadError> {
        self.blocking(move |s, log| {
            let log = log.read_log();
            let (_, batch) = match crate::read::batch_of(&log, log_index) {
                Ok(b) => b,
                Err(ReadError::NotAMessage(_)) => return Ok(None),
                Err(ReadError::Storage(raftmq_storage::StorageError::OutOfRange { .. })) => {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let mut m = match crate::read::message_at(&batch, log_index, slot, 0) {
                Ok(m) => m,
                Err(ReadError::Storage(raftmq_storage::StorageError::Malformed { .. })) => {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            // The offset is not in the record: find it through the ConsumeQueue entry,
            // which records (log index, slot); the time index gives (queue, offset).
            let hits = s.time_range(&m.topic, m.stored_ms, m.stored_ms + 1, usize::MAX)?;
            match hits
                .iter()
                .find(|h| h.log_index == log_index && h.slot == slot)
            {
                Some(h) => m.offset = h.offset,
                None => return Ok(None),
            }
            Ok(Some(m))
        })
        .await
    }

    /// Messages with `key`, newest first, through the key index.
    pub async fn find_by_key(
        &self,
        topic: &str,
        key: &str,
        max: usize,
    ) -> Result<Vec<StoredMessage>, ReadError> {
        let (topic, key) = (topic.to_owned(), key.to_owned());
        self.blocking(move |s, log| {
            let hits = s.key_lookup(&topic, &key, max)?;
            load_hits(&log.read_log(), &hits)
        })
        .await
    }

    /// Messages stored in `[from_ms, to_ms)`, oldest first, through the time index.
    pub async fn find_by_time(
        &self,
        topic: &str,
        from_ms: u64,
        to_ms: u64,
        max: usize,
    ) -> Result<Vec<StoredMessage>, ReadError> {
        let topic = topic.to_owned();
        self.blocking(move |s, log| {
            let hits = s.time_range(&topic, from_ms, to_ms, max)?;
            load_hits(&log.read_log(), &hits)
        })
        .await
    }

    /// A snapshot of cluster state for `GET /v1/cluster`.
    pub fn cluster_status(&self) -> ClusterStatus {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let replication = m.replication.clone().unwrap_or_default();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let role = if Some(*id) == m.current_leader {
                    "leader"
                } else if voters.contains(id) {
                    "follower"
                } else {
                    "learner"
                };
                let matched_index = if *id == m.id {
                    m.last_log_index
                } else {
                    replication.get(id).and_then(|l| l.map(|l| l.index))
                };
                MemberStatus {
                    id: *id,
                    addr: node.addr.clone(),
                    role,
                    matched_index,
                }
            })
            .collect();
        ClusterStatus {
            group: self.group().to_owned(),
            node_id: m.id,
            leader_id: m.current_leader,
            term: m.current_term,
            commit_index: m.local_committed.map_or(0, |l| l.index),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            members,
        }
    }

    /// Adds a node: as a learner (waits until it caught up), then as a voter if asked.
    pub async fn add_member(
        &self,
        id: NodeId,
        addr: &str,
        voter: bool,
    ) -> Result<(), ProposeError> {
        self.inner
            .raft
            .add_learner(id, BasicNode::new(addr), true)
            .await
            .map_err(|e| self.map_write_error(e))?;
        if voter {
            self.inner
                .raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(|e| self.map_write_error(e))?;
        }
        Ok(())
    }

    /// Removes a node (voter or learner) from the group.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), ProposeError> {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(ProposeError::Membership(format!(
                "node {id} is not a member"
            )));
        }
        if membership.voter_ids().any(|v| v == id) {
            self.inner
                .raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(|e| self.map_write_error(e))?;
        } else {
            self.inner
                .raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(|e| self.map_write_error(e))?;
        }
        Ok(())
    }

    /// Asks the leader to hand leadership to `to`.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), ProposeError> {
        self.inner
            .raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| ProposeError::Unknown(e.to_string()))
    }

    /// Whether the node knows a leader and has applied what it last saw committed.
    pub fn is_ready(&self) -> bool {
        let m = self.metrics();
        m.current_leader.is_some()
            && m.last_applied.map(|l| l.index) >= m.local_committed.map(|l| l.index)
    }

    /// Stops Raft.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

fn load_hits(
    log: &raftmq_storage::CommitLog,
    hits: &[raftmq_storage::IndexHit],
) -> Result<Vec<StoredMessage>, ReadError> {
    let mut out = Vec::with_capacity(hits.len());
    for h in hits {
        // The key index keeps entries of messages retention has removed: skip those.
        let batch = match crate::read::batch_of(log, h.log_index) {
            Ok((_, b)) => b,
            Err(ReadError::Storage(raftmq_storage::StorageError::OutOfRange { .. })) => continue,
            Err(e) => return Err(e),
        };
        out.push(crate::read::message_at(
            &batch,
            h.log_index,
            h.slot,
            h.offset,
        )?);
    }
    Ok(out)
}

fn crc32_key(key: &str) -> u32 {
    // The same hash as the tag index: stable across versions and replicas.
    raftmq_storage::message::tag_hash(Some(key))
}

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Opening storage failed.
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    /// The Raft configuration is invalid.
    #[error("raft configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    /// Raft failed to start.
    #[error("raft: {0}")]
    Raft(#[from] openraft::errors::Fatal<crate::TypeConfig>),
}
