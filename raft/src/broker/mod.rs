//! [`Broker`]: one member of a broker group, and the only face of this crate. Callers (the
//! HTTP API) give it plain values and get plain values or a [`BrokerError`] back; commands,
//! openraft and RocksDB stay inside.
//!
//! - [`formation`]: forming the group on first start;
//! - [`produce`] and [`topics`]: writing messages, topic admin;
//! - [`read`]: messages back out of the local applied state;
//! - [`consumer_groups`]: receive, ack, heartbeat, offsets and group views;
//! - [`membership`]: cluster status, members, leadership;
//! - [`retention`]: the retention loop;
//! - [`message_id`]: the `{broker_group}.{log_index}.{slot}` id of a message.
//!
//! Must never: forward HTTP requests (the API layer does that), or block the async runtime
//! on the disk (reads go to the blocking pool).

pub mod acl;
mod clock;
mod coalesce;
mod consumer_groups;
mod disk;
mod formation;
mod membership;
mod message_id;
mod produce;
mod read;
mod retention;
mod schedule;
mod topics;
mod txn;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use raftmq_storage::{CommitLogOptions, IndexStore, StorageError};
use tokio::sync::watch;

pub use clock::{SystemClock, WallClock};
pub use consumer_groups::Delivery;
pub use membership::{ClusterStatus, MemberRole, MemberStatus, NodeStats};
pub use message_id::MessageId;
pub use produce::{MAX_BATCH_BYTES, MAX_REQUEST_BYTES, Placed, ProduceMessage, queue_for_key};
pub use schedule::{PAST_GRACE_MS, Schedule};
pub use txn::{CHECK_TIMEOUT, TxnChecker, TxnInfo, TxnRequest};

use crate::consensus::log_store::{FlushPolicy, LogStore};
use crate::consensus::network::Network;
use crate::consensus::peer::PeerService;
use crate::consensus::peer_auth::PeerAuth;
use crate::consensus::rpc::{self, PeerRpc};
use crate::consensus::transport::{PeerHttp, PeerTransport};
use crate::consensus::types::{Metrics, NodeId, TypeConfig};
use crate::consensus::{RaftTiming, raft_config};
use crate::error::BrokerError;
use crate::state::{Applied, Command, StateMachine};

/// The openraft handle of a broker group member.
type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// Settings of one broker group member.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Broker group name (part of message ids).
    pub broker_group: String,
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
    /// TLS for connections to peers (`None`: plain HTTP).
    pub peer_tls: Option<rustls::ClientConfig>,
    /// New writes are refused while the data volume has less free space than this
    /// (`None`: 1 GiB, or 5 % of the volume if that is smaller).
    pub min_free_bytes: Option<u64>,
    /// The cluster secret that authenticates peer requests (`None`: peers are recognised
    /// by address only).
    pub cluster_secret: Option<Vec<u8>>,
    /// Raft timing.
    pub timing: RaftTiming,
    /// How peer requests travel (`None`: HTTP, plain or with `peer_tls`; a simulation
    /// passes its in-memory router).
    pub transport: Option<Arc<dyn PeerTransport>>,
    /// The file system under the CommitLog (`None`: the OS's; a simulation passes one that
    /// can lose what was never synced). It must name the same files the OS sees: snapshots
    /// and install recovery reach the log directory directly.
    pub log_fs: Option<Arc<dyn raftmq_storage::vfs::Vfs>>,
    /// This node's own wall clock (`None`: the OS's; a simulation passes one it skews and
    /// moves forward). Entries carry group time derived from the members' clocks.
    pub wall_clock: Option<Arc<dyn WallClock>>,
    /// Asked at each step of a snapshot install; `true` stops it there as a crash would
    /// (a simulation's fault point; `None` in production).
    pub install_probe: Option<crate::state::InstallProbe>,
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
    peer: PeerService<StateMachine>,
    round_robin: Mutex<HashMap<String, Arc<AtomicU32>>>,
    /// Topic settings as last applied, for lookups without RocksDB.
    topic_cache: Mutex<topics::TopicCache>,
    /// Produce requests waiting to share an entry.
    coalescer: coalesce::Coalescer,
    /// Offsets this leader proposed to lease whose leases are not applied yet.
    reserved: Arc<Mutex<crate::state::consumer_groups::plan::Reserved>>,
    /// The API's forwarding to the leader (HTTP, over the same pool and TLS as Raft's RPC
    /// when `transport` is HTTP).
    http: PeerHttp,
    /// Every request to a peer: Raft's own and clock samples.
    transport: Arc<dyn PeerTransport>,
    clock: Arc<clock::GroupClock>,
    disk: disk::DiskGuard,
    peer_auth: Arc<PeerAuth>,
    /// The check-back client and the checks running.
    txns: txn::Txns,
    /// [`Broker::admit`] let this node in: until then it answers peers asking what it
    /// holds, and nothing of Raft's (a node whose data is gone must not vote).
    admitted: AtomicBool,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Broker(node {})", self.inner.cfg.node_id)
    }
}

impl Broker {
    /// Opens storage, starts Raft and, on a node whose log is empty, forms the group from
    /// `peers` (see [`formation`]); starts the retention loop. [`Broker::open`] then
    /// [`Broker::admit`], for a caller with nothing to serve in between.
    pub async fn start(cfg: BrokerConfig) -> Result<Broker, BrokerError> {
        let broker = Broker::open(cfg).await?;
        broker.admit().await?;
        Ok(broker)
    }

    /// Opens storage and Raft. The node answers peers asking what it holds
    /// ([`PeerRpc::Replicated`]) and refuses the rest of the peer protocol until
    /// [`Broker::admit`]: serve it in between, as a node whose log is empty waits for its
    /// peers' answers, and theirs for its own.
    pub async fn open(cfg: BrokerConfig) -> Result<Broker, BrokerError> {
        // A snapshot install the node stopped in is finished (or discarded) before either
        // the log or the state opens, so they always match.
        crate::state::state_machine::recover_install(
            &cfg.data_dir.join("state"),
            &cfg.data_dir.join("log"),
        )
        .map_err(BrokerError::from_io)?;
        let log = LogStore::open_on(
            cfg.log_fs
                .clone()
                .unwrap_or_else(|| Arc::new(raftmq_storage::vfs::OsFs)),
            &cfg.data_dir.join("log"),
            CommitLogOptions {
                segment_size: cfg.segment_size,
            },
            cfg.flush,
        )
        .map_err(BrokerError::from_io)?;
        let sm = StateMachine::open(&cfg.data_dir.join("state"), log.clone())
            .map_err(BrokerError::from_io)?;
        sm.set_install_probe(cfg.install_probe.clone());
        let config = raft_config(&cfg.broker_group, cfg.timing).map_err(|e| {
            BrokerError::rejected(
                crate::state::RejectCode::InvalidArgument,
                format!("raft configuration: {e}"),
            )
        })?;
        let clock = Arc::new(clock::GroupClock::new(
            cfg.wall_clock
                .clone()
                .unwrap_or_else(|| Arc::new(clock::SystemClock)),
        ));
        let peer_auth = Arc::new(PeerAuth::new(cfg.cluster_secret.clone()));
        if !peer_auth.has_secret() {
            tracing::warn!(
                "no cluster secret: peer requests are taken from the group's member hosts only; \
                 set --cluster-secret-file to authenticate them"
            );
        }
        let signer = {
            let (clock, auth) = (clock.clone(), peer_auth.clone());
            Arc::new(move |rpc, body: &[u8]| auth.sign(rpc, cfg.node_id, clock.now_ms(), body))
        };
        let http = PeerHttp::new(cfg.peer_source_ip, cfg.peer_tls.clone())
            .map_err(|e| BrokerError::Internal(format!("HTTP client: {e}")))?;
        let transport = cfg
            .transport
            .clone()
            .unwrap_or_else(|| Arc::new(http.clone()));
        let raft = Raft::new(
            cfg.node_id,
            Arc::new(config),
            Network::new(cfg.node_id, transport.clone(), signer),
            log.clone(),
            sm.clone(),
        )
        .await
        .map_err(|e| BrokerError::Internal(format!("raft: {e}")))?;
        let peer = PeerService::new(raft.clone(), &cfg.data_dir.join("incoming-snapshots"));
        let broker = Broker {
            inner: Arc::new(Inner {
                cfg,
                raft,
                log,
                sm,
                peer,
                round_robin: Mutex::new(HashMap::new()),
                coalescer: coalesce::Coalescer::default(),
                topic_cache: Mutex::default(),
                reserved: Arc::default(),
                http,
                transport,
                clock,
                disk: disk::DiskGuard::default(),
                peer_auth,
                txns: txn::Txns::default(),
                admitted: AtomicBool::new(false),
            }),
        };
        Ok(broker)
    }

    /// Lets the node in: a node whose log is empty first learns from its peers whether
    /// its data is gone (refused: stopped, with how to replace it) or whether it forms a
    /// new group (see [`formation`]); then Raft and the background loops run.
    pub async fn admit(&self) -> Result<(), BrokerError> {
        let form = match self.admission().await {
            Ok(form) => form,
            Err(refused) => {
                self.shutdown().await;
                return Err(refused);
            }
        };
        self.inner.admitted.store(true, Ordering::Release);
        self.watch_disk();
        if form {
            self.spawn_group_formation();
        }
        self.spawn_clock_sync();
        self.spawn_held_log_records();
        self.spawn_retention();
        self.spawn_delivery();
        self.spawn_txn_checks();
        Ok(())
    }

    /// Serves one peer RPC of this node (`/raft/...`): checks who sent it (its credentials
    /// header, or its address without a cluster secret) before decoding anything.
    pub async fn serve_peer(
        &self,
        rpc: PeerRpc,
        credentials: Option<&str>,
        from: Option<std::net::IpAddr>,
        body: bytes::Bytes,
    ) -> Result<bytes::Bytes, BrokerError> {
        let members = if self.inner.peer_auth.has_secret() {
            Vec::new()
        } else {
            self.member_hosts()
        };
        self.inner.peer_auth.verify(
            rpc,
            credentials,
            from,
            &members,
            self.group_now_ms(),
            &body,
        )?;
        if rpc == PeerRpc::Clock {
            return Ok(rpc::encode(&self.inner.clock.wall_ms()));
        }
        if rpc == PeerRpc::Replicated {
            let from_raft = self.inner.peer.serve(rpc, body.clone()).await?;
            return self.held_log_answer(&body, from_raft).await;
        }
        if !self.inner.admitted.load(Ordering::Acquire) {
            return Err(BrokerError::Unavailable(format!(
                "node {} is starting: it waits for its peers' answers before it takes part",
                self.node_id()
            )));
        }
        self.inner.peer.serve(rpc, body).await
    }

    /// The hosts of the group's members and configured peers (loopback when they are
    /// named by a name rather than an address).
    fn member_hosts(&self) -> Vec<std::net::IpAddr> {
        let m = self.metrics();
        let addrs = m
            .membership_config
            .membership()
            .nodes()
            .map(|(_, n)| n.addr.clone())
            .chain(self.inner.cfg.peers.values().cloned())
            .collect::<Vec<_>>();
        let mut hosts: Vec<std::net::IpAddr> = addrs
            .iter()
            .filter_map(|a| a.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
            .collect();
        if let Some(ip) = self.inner.cfg.peer_source_ip {
            hosts.push(ip);
        }
        hosts
    }

    /// The client this node reaches its peers with (plain or TLS); the API forwards to the
    /// leader through it.
    pub fn peer_http(&self) -> &PeerHttp {
        &self.inner.http
    }

    /// A probe that tells when this node's CommitLog is wholly released (after a stop).
    pub fn log_release_probe(&self) -> crate::consensus::log_store::ReleaseProbe {
        self.inner.log.release_probe()
    }

    /// `(last index its CommitLog held when this node opened it, last index it has told
    /// Raft is durable)`: after a crash, even a power cut, the first of the next
    /// incarnation must be at least the second of this one (the simulator checks it).
    pub fn log_durability(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = self.inner.log.stats();
        (s.opened_last.load(Relaxed), s.acked_durable.load(Relaxed))
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.cfg.node_id
    }

    /// The broker group's name.
    pub fn broker_group(&self) -> &str {
        &self.inner.cfg.broker_group
    }

    /// Wakes on every apply (value: last applied index).
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.inner.sm.applied()
    }

    /// `(last applied index, digest of the applied state)`: replicas at equal applied
    /// indexes must have equal digests (the simulator's check after every step). Reads the
    /// whole state on a blocking thread: for checks, never a request path.
    pub async fn state_digest(&self) -> Result<(u64, u64), BrokerError> {
        let sm = self.inner.sm.clone();
        tokio::task::spawn_blocking(move || sm.state_digest())
            .await
            .map_err(|e| BrokerError::Internal(format!("digest task: {e}")))?
            .map_err(BrokerError::from_io)
    }

    /// A copy of openraft's latest metrics, for a caller that holds them across an await.
    fn metrics(&self) -> Metrics {
        self.with_metrics(Metrics::clone)
    }

    /// `f` of openraft's latest metrics, read in place: the checks of every request use
    /// it, and a copy allocates. `f` runs under the metrics channel's read lock, so it is
    /// short and never awaits.
    pub(crate) fn with_metrics<T>(&self, f: impl FnOnce(&Metrics) -> T) -> T {
        f(&self.inner.raft.metrics().borrow_watched())
    }

    /// Whether this node is in its group's membership (a voter or a learner).
    pub fn is_member(&self) -> bool {
        self.with_metrics(member)
    }

    /// Whether the Raft core is running (it stops for good on a fatal storage error).
    pub fn is_running(&self) -> bool {
        self.with_metrics(|m| m.running_state.is_ok())
    }

    /// The leader as `(id, address)`, if known (none while this node's Raft core is
    /// stopped: it can no longer tell, and must not claim to lead).
    pub fn leader(&self) -> Option<(NodeId, String)> {
        self.with_metrics(|m| {
            if m.running_state.is_err() || !member(m) {
                return None;
            }
            let id = m.current_leader?;
            let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
            Some((id, addr))
        })
    }

    /// Whether this node is the leader now.
    pub fn is_leader(&self) -> bool {
        self.with_metrics(|m| {
            m.running_state.is_ok() && m.current_leader == Some(m.id) && member(m)
        })
    }

    /// Proposes a command and waits for it to be applied here.
    pub(crate) async fn propose(&self, cmd: Command) -> Result<Applied, BrokerError> {
        self.refuse_if_stopped()?;
        match self.inner.raft.client_write(cmd).await {
            Ok(resp) => Ok(resp.data),
            Err(e) => Err(write_error(e)),
        }
    }

    /// A Raft core that has stopped takes nothing: the caller learns that nothing was
    /// proposed (503), not that the outcome is unknown.
    pub(crate) fn refuse_if_stopped(&self) -> Result<(), BrokerError> {
        self.with_metrics(|m| match &m.running_state {
            Ok(()) => Ok(()),
            Err(f) => Err(BrokerError::Unavailable(format!("raft stopped: {f}"))),
        })
    }

    /// Proposes a command and turns a refusal at apply into an error.
    pub(crate) async fn propose_checked(&self, cmd: Command) -> Result<Applied, BrokerError> {
        match self.propose(cmd).await? {
            Applied::Rejected { code, message } => Err(BrokerError::Rejected { code, message }),
            other => Ok(other),
        }
    }

    /// Runs `f` on the blocking pool with the applied state and the log.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&IndexStore, &LogStore) -> T + Send + 'static,
    ) -> Result<T, BrokerError> {
        let store = self.inner.sm.store();
        let log = self.inner.log.clone();
        tokio::task::spawn_blocking(move || f(&store, &log))
            .await
            .map_err(|e| BrokerError::Internal(format!("blocking task: {e}")))
    }

    /// Like [`Self::blocking`] for a fallible `f` over storage.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&IndexStore, &LogStore) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, BrokerError> {
        Ok(self.blocking(f).await??)
    }

    /// Stops Raft.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// Whether the node whose metrics these are is in its group's membership.
fn member(m: &Metrics) -> bool {
    m.membership_config.membership().get_node(&m.id).is_some()
}

/// What a failed proposal means for the caller.
fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> BrokerError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => BrokerError::NotLeader {
            leader: f
                .leader_id
                .zip(f.leader_node)
                .map(|(id, node)| (id, node.addr)),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            BrokerError::rejected(crate::state::RejectCode::Conflict, e.to_string())
        }
        // The Raft core stopped while the write was pending (its apply or its log failed,
        // or the node is going down): it may have been appended, replicated and committed
        // already. (A core that had stopped before is refused earlier, see `propose`.)
        RaftError::Fatal(f) => BrokerError::OutcomeUnknown(format!("raft stopped: {f}")),
        other => BrokerError::OutcomeUnknown(other.to_string()),
    }
}
