//! The NameServer (`raftmq nameserver`): RocketMQ's route server. Broker nodes register with
//! every NameServer by heartbeat ([`crate::registration`]); a NameServer keeps what each
//! node last said for `route_expiry` and serves the routes: `GET /v1/routes` (every broker
//! group: members, leader, health) and `GET /v1/routes/{topic}` (the groups holding the
//! topic, in route order, with their slice of its queue space).
//!
//! NameServers share nothing and hold no consensus: run two or more, and a client or node
//! asks any. With a cluster secret, a registration must carry the peer protocol's HMAC
//! (the same secret the brokers' peers use), so nobody else can plant a route.
//!
//! Must never: keep a node in the routes past its expiry, or take a registration that
//! fails authentication.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use raftmq_raft::consensus::peer_auth::{PEER_HEADER, PeerAuth};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::dto::parse_json;
use crate::error::ApiError;
use crate::extract::ApiPath;

/// The path brokers register at.
pub const REGISTER_PATH: &str = "/v1/registrations";

/// Settings of a NameServer.
#[derive(Clone, Debug)]
pub struct NameServerConfig {
    /// How long a node stays in the routes after its last heartbeat.
    pub route_expiry: Duration,
    /// The cluster secret registrations must be signed with (`None`: taken unsigned).
    pub cluster_secret: Option<Vec<u8>>,
}

/// A topic as a broker group holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRoute {
    /// Name.
    pub topic: String,
    /// Queues in this group.
    pub queues: u32,
    /// Where this group's queues start in the topic's queue space, when the topic is
    /// spread over broker groups (`None`: a whole topic, placed in route order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_queue: Option<u32>,
    /// With `first_queue`: the queues of the whole queue space, as this part knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_space: Option<u32>,
}

/// What a broker node tells the NameServers on each heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Its broker group.
    pub group: String,
    /// Its node id in the group.
    pub node_id: u64,
    /// Its HTTP address.
    pub addr: String,
    /// `leader`, `follower` or `learner` as it sees itself.
    pub role: String,
    /// The leader's address as it knows it.
    pub leader: Option<String>,
    /// Its Raft term.
    pub term: u64,
    /// The topics its applied state holds.
    pub topics: Vec<TopicRoute>,
}

struct Entry {
    reg: Registration,
    seen: Instant,
}

#[derive(Clone)]
struct NsState {
    cfg: Arc<NameServerConfig>,
    auth: Arc<PeerAuth>,
    nodes: Arc<Mutex<HashMap<(String, u64), Entry>>>,
}

impl NsState {
    /// The live registrations by group (expired ones dropped).
    fn live(&self) -> BTreeMap<String, Vec<(Registration, Duration)>> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let expiry = self.cfg.route_expiry;
        nodes.retain(|_, e| e.seen.elapsed() <= expiry);
        let mut groups: BTreeMap<String, Vec<(Registration, Duration)>> = BTreeMap::new();
        for e in nodes.values() {
            groups
                .entry(e.reg.group.clone())
                .or_default()
                .push((e.reg.clone(), e.seen.elapsed()));
        }
        for members in groups.values_mut() {
            members.sort_by_key(|(r, _)| r.node_id);
        }
        groups
    }
}

/// A group's view from its live members: the leader (the member that says it leads, in
/// the highest term; else what most members name) and the topics the best-informed member
/// holds (the leader's, else the one in the highest term).
fn group_view(members: &[(Registration, Duration)]) -> (Option<String>, &[TopicRoute]) {
    let leader_member = members
        .iter()
        .filter(|(r, _)| r.role == "leader")
        .max_by_key(|(r, _)| r.term);
    let leader = match leader_member {
        Some((r, _)) => Some(r.addr.clone()),
        None => {
            let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
            for (r, _) in members {
                if let Some(l) = &r.leader {
                    *votes.entry(l.as_str()).or_default() += 1;
                }
            }
            votes
                .into_iter()
                .max_by_key(|(_, n)| *n)
                .map(|(l, _)| l.to_owned())
        }
    };
    let informed = leader_member.or_else(|| members.iter().max_by_key(|(r, _)| r.term));
    (leader, informed.map_or(&[][..], |(r, _)| &r.topics))
}

/// The NameServer's routes.
pub fn nameserver_router(cfg: NameServerConfig) -> Router {
    let state = NsState {
        auth: Arc::new(PeerAuth::new(cfg.cluster_secret.clone())),
        cfg: Arc::new(cfg),
        nodes: Arc::default(),
    };
    Router::new()
        .route(REGISTER_PATH, post(register))
        .route("/v1/routes", get(routes))
        .route("/v1/routes/{topic}", get(topic_routes))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .with_state(state)
}

/// This machine's wall clock, ms since the epoch (registrations are signed and checked by
/// it: NameServers have no group time).
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `POST /v1/registrations`: a broker node's heartbeat.
async fn register(
    State(ns): State<NsState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let header = headers.get(PEER_HEADER).and_then(|v| v.to_str().ok());
    ns.auth
        .verify_path(REGISTER_PATH, true, header, None, &[], wall_ms(), &body)?;
    let reg: Registration = parse_json(&body)?;
    let key = (reg.group.clone(), reg.node_id);
    ns.nodes.lock().unwrap_or_else(|e| e.into_inner()).insert(
        key,
        Entry {
            reg,
            seen: Instant::now(),
        },
    );
    Ok(Json(json!({"route_expiry_ms": ns.cfg.route_expiry.as_millis() as u64})).into_response())
}

/// `GET /v1/routes`: every live broker group.
async fn routes(State(ns): State<NsState>) -> Response {
    let groups: Vec<Value> = ns
        .live()
        .iter()
        .map(|(group, members)| {
            let (leader, topics) = group_view(members);
            json!({
                "group": group,
                "leader": leader,
                "healthy": leader.is_some(),
                "members": members.iter().map(|(r, age)| json!({
                    "node_id": r.node_id, "addr": r.addr, "role": r.role, "term": r.term,
                    "last_heartbeat_ms_ago": age.as_millis() as u64,
                })).collect::<Vec<_>>(),
                "topics": topics,
            })
        })
        .collect();
    Json(json!({ "groups": groups })).into_response()
}

/// `GET /v1/routes/{topic}`: the groups holding `topic`, each with its slice of the queue
/// space: a part of a spread topic where it says it starts, a whole topic after the slices
/// before it in route order (by group name); sorted by first queue.
async fn topic_routes(
    State(ns): State<NsState>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Response, ApiError> {
    let mut next_queue = 0u32;
    let mut queues = Vec::new();
    for (group, members) in &ns.live() {
        let (leader, topics) = group_view(members);
        let Some(t) = topics.iter().find(|t| t.topic == topic) else {
            continue;
        };
        let first_queue = t.first_queue.unwrap_or(next_queue);
        next_queue = first_queue + t.queues;
        queues.push((
            first_queue,
            json!({
                "group": group, "first_queue": first_queue, "queues": t.queues, "leader": leader,
                "members": members.iter().map(|(r, _)| r.addr.clone()).collect::<Vec<_>>(),
            }),
        ));
    }
    if queues.is_empty() {
        return Err(ApiError::not_found(
            "TOPIC_NOT_FOUND",
            format!("no live broker group holds topic {topic}"),
        ));
    }
    queues.sort_by_key(|(first, _)| *first);
    let queues: Vec<Value> = queues.into_iter().map(|(_, q)| q).collect();
    Ok(Json(json!({"topic": topic, "queues": queues})).into_response())
}
