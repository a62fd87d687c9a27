//! The simulated peer network: an in-memory router between the nodes of one process, which
//! drops, delays, duplicates (and so reorders) requests and answers, and cuts links one way
//! or both, as the schedule says.
//!
//! Every request is served by the target node's own `Broker::serve_peer` on the target's
//! runtime, with the same encoding and checks as over HTTP, so only the wire is simulated.
//!
//! Must never: deliver anything to or from a crashed node, or across a cut link.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use raftmq_raft::consensus::transport::{PeerTransport, SendError};
use raftmq_raft::{Broker, NodeId, PeerRpc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::runtime::Handle;

/// How unreliable the network is right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Requests (and answers) lost, per thousand.
    pub drop_per_mille: u32,
    /// Requests delivered twice, per thousand (the second answer is thrown away).
    pub duplicate_per_mille: u32,
    /// Each delivery waits up to this long, ms (so deliveries overtake each other).
    pub max_delay_ms: u64,
}

struct Node {
    id: NodeId,
    broker: Broker,
    runtime: Handle,
}

struct State {
    /// Live nodes by the address the membership names them by.
    nodes: HashMap<String, Node>,
    /// Directed links that deliver nothing: `(from, to)`.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Nodes starting: they can ask peers (a process sends before it serves) but nothing
    /// reaches them yet.
    booting: BTreeSet<NodeId>,
    faults: Faults,
    rng: StdRng,
}

/// The router. Cheap to share.
pub struct SimNet {
    state: Mutex<State>,
    /// Snapshots installed through the router (a lagging node caught up by one).
    installs: std::sync::atomic::AtomicU64,
}

/// What the router decided for one delivery.
enum Fate {
    Unreachable,
    Lost(Duration),
    Deliver {
        to: NodeId,
        broker: Broker,
        runtime: Handle,
        delay: Duration,
        duplicate: bool,
    },
}

impl SimNet {
    /// A network with no nodes, drawing its faults from `seed`.
    pub fn new(seed: u64) -> Arc<SimNet> {
        Arc::new(SimNet {
            state: Mutex::new(State {
                nodes: HashMap::new(),
                cut: BTreeSet::new(),
                booting: BTreeSet::new(),
                faults: Faults::default(),
                rng: StdRng::seed_from_u64(seed),
            }),
            installs: Default::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects a started node.
    pub fn attach(&self, addr: &str, id: NodeId, broker: Broker, runtime: Handle) {
        self.lock().nodes.insert(
            addr.to_owned(),
            Node {
                id,
                broker,
                runtime,
            },
        );
    }

    /// Disconnects a node (it crashed): nothing reaches it or comes from it.
    pub fn detach(&self, addr: &str) {
        self.lock().nodes.remove(addr);
    }

    /// Node `id` is starting (until [`attach`](Self::attach) or [`detach`](Self::detach)
    /// of it): what it sends goes out, and answers come back.
    pub fn booting(&self, id: NodeId, up: bool) {
        let mut s = self.lock();
        if up {
            s.booting.insert(id);
        } else {
            s.booting.remove(&id);
        }
    }

    fn is_up(s: &State, id: NodeId) -> bool {
        s.booting.contains(&id) || s.nodes.values().any(|n| n.id == id)
    }

    /// How many snapshot installs went through.
    pub fn installs(&self) -> u64 {
        self.installs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The nodes connected now, with what clients call them through.
    pub fn live(&self) -> Vec<(NodeId, Broker, Handle)> {
        let s = self.lock();
        let mut v: Vec<_> = s
            .nodes
            .values()
            .map(|n| (n.id, n.broker.clone(), n.runtime.clone()))
            .collect();
        v.sort_by_key(|n| n.0);
        v
    }

    /// A live node that says it leads (the lowest id if two do, as a partitioned old
    /// leader may).
    pub fn leader(&self) -> Option<(NodeId, Broker, Handle)> {
        self.live()
            .into_iter()
            .find(|n| n.1.cluster_status().leader_id == Some(n.0))
    }

    /// Cuts every link between `side` and the other nodes of `all`, both ways.
    pub fn partition(&self, side: &[NodeId], all: &[NodeId]) {
        let mut s = self.lock();
        for a in side {
            for b in all.iter().filter(|b| !side.contains(b)) {
                s.cut.insert((*a, *b));
                s.cut.insert((*b, *a));
            }
        }
    }

    /// Cuts the link from `from` to `to` only (answers and requests the other way pass).
    pub fn cut_one_way(&self, from: NodeId, to: NodeId) {
        self.lock().cut.insert((from, to));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    /// Sets how unreliable the network is.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// A transport for node `me`.
    pub fn transport(self: &Arc<Self>, me: NodeId) -> Arc<dyn PeerTransport> {
        Arc::new(SimTransport {
            me,
            net: self.clone(),
        })
    }

    fn delay(s: &mut State) -> Duration {
        let max = s.faults.max_delay_ms;
        Duration::from_millis(if max == 0 {
            0
        } else {
            s.rng.random_range(0..=max)
        })
    }

    fn lost(s: &mut State) -> bool {
        s.faults.drop_per_mille > 0 && s.rng.random_range(0..1000) < s.faults.drop_per_mille
    }

    fn fate(&self, me: NodeId, addr: &str) -> Fate {
        let mut s = self.lock();
        let Some(to) = s.nodes.get(addr).map(|n| n.id) else {
            return Fate::Unreachable;
        };
        if !Self::is_up(&s, me) {
            return Fate::Unreachable;
        }
        if s.cut.contains(&(me, to)) || Self::lost(&mut s) {
            let d = Self::delay(&mut s);
            return Fate::Lost(d);
        }
        let delay = Self::delay(&mut s);
        let duplicate = s.faults.duplicate_per_mille > 0
            && s.rng.random_range(0..1000) < s.faults.duplicate_per_mille;
        let node = &s.nodes[addr];
        Fate::Deliver {
            to,
            broker: node.broker.clone(),
            runtime: node.runtime.clone(),
            delay,
            duplicate,
        }
    }

    /// Whether the answer from `from` back to `to` gets through.
    fn answer_passes(&self, from: NodeId, to: NodeId) -> bool {
        let mut s = self.lock();
        let both_up = Self::is_up(&s, from) && Self::is_up(&s, to);
        both_up && !s.cut.contains(&(from, to)) && !Self::lost(&mut s)
    }
}

impl std::fmt::Debug for SimNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        write!(
            f,
            "SimNet({} nodes, {} cut links)",
            s.nodes.len(),
            s.cut.len()
        )
    }
}

/// One node's side of the router.
#[derive(Debug)]
struct SimTransport {
    me: NodeId,
    net: Arc<SimNet>,
}

/// Serves one request on the target's runtime.
async fn serve(
    broker: Broker,
    runtime: &Handle,
    rpc: PeerRpc,
    credentials: Option<String>,
    body: Bytes,
) -> Result<Bytes, SendError> {
    let from = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let task = runtime.spawn(async move {
        broker
            .serve_peer(rpc, credentials.as_deref(), from, body)
            .await
    });
    match task.await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(SendError::Other(e.to_string())),
        // The target crashed while serving it.
        Err(_) => Err(SendError::Timeout),
    }
}

impl PeerTransport for SimTransport {
    fn send(
        &self,
        addr: &str,
        rpc: PeerRpc,
        credentials: Option<String>,
        body: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<Bytes, SendError>> {
        let (me, net) = (self.me, self.net.clone());
        let fate = net.fate(me, addr);
        let to = addr.to_owned();
        Box::pin(async move {
            let r = match fate {
                Fate::Unreachable => Err(SendError::Unreachable("no such node up".into())),
                Fate::Lost(d) => {
                    tokio::time::sleep(d.min(ttl)).await;
                    Err(SendError::Timeout)
                }
                Fate::Deliver {
                    to,
                    broker,
                    runtime,
                    delay,
                    duplicate,
                } => {
                    let attempt = async {
                        tokio::time::sleep(delay).await;
                        if duplicate {
                            let (b, r, c, body) = (
                                broker.clone(),
                                runtime.clone(),
                                credentials.clone(),
                                body.clone(),
                            );
                            tokio::spawn(async move {
                                let _ = serve(b, &r, rpc, c, body).await;
                            });
                        }
                        let answer = serve(broker, &runtime, rpc, credentials, body).await?;
                        if matches!(rpc, PeerRpc::SnapshotInstall) {
                            net.installs
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        if net.answer_passes(to, me) {
                            Ok(answer)
                        } else {
                            Err(SendError::Timeout)
                        }
                    };
                    match tokio::time::timeout(ttl, attempt).await {
                        Ok(r) => r,
                        Err(_) => Err(SendError::Timeout),
                    }
                }
            };
            if let Err(e) = &r
                && !matches!(rpc, PeerRpc::Append | PeerRpc::Vote | PeerRpc::Clock)
            {
                tracing::debug!(from = me, to = %to, ?rpc, error = ?e, "sim: peer request failed");
            }
            r
        })
    }
}
