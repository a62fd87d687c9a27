//! raftmq-http-api: every axum router of a node.
//!
//! - the public `/v1` API of `shared/API.md` ([`messages`], [`topics`], [`cluster`]);
//! - `/healthz`, `/readyz`, `/metrics`, and `/openapi.json` (this API described, generated
//!   from the handlers' own types by [`openapi`]);
//! - the internal peer RPC under `/raft` ([`peer`]).
//!
//! A follower forwards writes to its leader itself ([`forward`]), so clients may talk to any
//! node. One [`ApiError`] maps every failure to a status and a stable code.
//!
//! Must never: touch storage files directly (it goes through `raftmq_raft::Broker`), or read
//! the process environment (configuration arrives from `raftmq-node`).

mod acl;
pub mod bodies;
mod cluster;
mod coordinator;
pub mod dto;
pub mod error;
mod extract;
mod forward;
#[doc(hidden)]
pub mod fuzz;
mod groups;
mod messages;
pub mod nameserver;
pub mod openapi;
mod peer;
mod registration;
mod routing;
mod spread;
mod topics;
mod transactions;
mod ui;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use raftmq_raft::Broker;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use nameserver::{NameServerConfig, nameserver_router};
pub use registration::spawn_registration;
pub use routing::{Routes, spawn_routes};

/// What the server learned of a connection's TLS session, put in each request's extensions
/// by whoever accepts connections (absent on plain HTTP).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionTls {
    /// The client presented a certificate that chains to the configured CA.
    pub client_verified: bool,
}

/// Settings of the API layer.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Create a missing topic on first produce.
    pub auto_create_topics: bool,
    /// Queues of auto-created topics.
    pub default_queues: u32,
    /// Retention of auto-created topics, ms.
    pub default_retention_ms: u64,
    /// Largest request body, bytes.
    pub max_request_bytes: usize,
    /// How long a write may wait for commit before answering 504 `OUTCOME_UNKNOWN`.
    pub write_timeout: Duration,
    /// Peer routes take only connections that presented a client certificate the TLS
    /// layer verified against the cluster's CA (`--tls-ca`): see [`ConnectionTls`].
    pub require_peer_certificate: bool,
    /// The admin token: authentication is on when it is set.
    pub admin_token: Option<String>,
    /// Check-backs of an undecided transaction before it is rolled back.
    pub txn_max_checks: u32,
    /// The only hosts a transaction's `check_url` may name (`None`: any).
    pub txn_check_hosts: Option<Vec<String>>,
    /// The routes to other broker groups (`None`: this group is alone).
    pub routes: Option<Routes>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            auto_create_topics: false,
            default_queues: 4,
            default_retention_ms: 72 * 3600 * 1000,
            max_request_bytes: 8 << 20,
            write_timeout: Duration::from_secs(10),
            require_peer_certificate: false,
            admin_token: None,
            txn_max_checks: 15,
            txn_check_hosts: None,
            routes: None,
        }
    }
}

/// Request counters for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ApiStats {
    pub(crate) produce_requests: AtomicU64,
    pub(crate) produced_messages: AtomicU64,
    pub(crate) read_requests: AtomicU64,
    /// Messages handed to consumers (receives and reads by offset).
    pub(crate) consumed_messages: AtomicU64,
    pub(crate) forwarded_requests: AtomicU64,
    /// Produce requests handled as leader, from parsed to answered.
    pub(crate) produce_seconds: raftmq_raft::Histogram,
}

/// Shared state of every handler.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) broker: Broker,
    pub(crate) cfg: Arc<ApiConfig>,
    /// The node's peer client: forwarding goes over the same pool and TLS as Raft's RPC.
    pub(crate) http: raftmq_raft::consensus::transport::PeerHttp,
    pub(crate) stats: Arc<ApiStats>,
}

/// Longest request URI, bytes.
const MAX_URI_BYTES: usize = 16 << 10;
/// Largest set of request headers, bytes.
const MAX_HEADER_BYTES: usize = 64 << 10;

/// Oversized URIs and header sets get the API's error body (414, 431).
async fn head_limits(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if req.uri().to_string().len() > MAX_URI_BYTES {
        return ApiError::uri_too_long(MAX_URI_BYTES).into_response();
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers > MAX_HEADER_BYTES {
        return ApiError::headers_too_large(MAX_HEADER_BYTES).into_response();
    }
    next.run(req).await
}

/// Data routes answer 503 on a node that is not a member of its group (removed, or waiting
/// to be added): what it holds may be stale and it takes no writes. Health, readiness,
/// metrics and cluster admin stay open.
async fn members_only(
    axum::extract::State(app): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path();
    // Cluster admin stays open too: it forwards to the leader or answers for itself.
    let open =
        matches!(path, "/healthz" | "/readyz" | "/metrics") || path.starts_with("/v1/cluster");
    if !open && path.starts_with("/v1/") && !app.broker.is_member() {
        return ApiError::unavailable("this node is not a member of its group").into_response();
    }
    next.run(req).await
}

/// The whole HTTP surface of a node.
pub fn router(broker: Broker, cfg: ApiConfig) -> Router {
    let http = broker.peer_http().clone();
    // The API layer owns the HTTP client that checks transactions back.
    match transactions::HttpTxnChecker::new() {
        Ok(checker) => broker.set_txn_checker(Arc::new(checker)),
        Err(e) => tracing::error!(error = %e, "no transaction check-back client"),
    }
    let limit = cfg.max_request_bytes;
    let state = AppState {
        broker,
        cfg: Arc::new(cfg),
        http,
        stats: Arc::new(ApiStats::default()),
    };
    let public = Router::new()
        .route(
            "/v1/topics/{topic}/messages",
            post(messages::produce).get(messages::query),
        )
        .route(
            "/v1/topics/{topic}/queues/{queue}/messages",
            get(messages::read),
        )
        .route("/v1/messages/{msg_id}", get(messages::by_id))
        .route("/v1/transactions/{id}", get(transactions::get))
        .route("/v1/transactions/{id}/commit", post(transactions::commit))
        .route(
            "/v1/transactions/{id}/rollback",
            post(transactions::rollback),
        )
        .route("/v1/topics", get(topics::list))
        .route(
            "/v1/topics/{topic}",
            put(topics::put).get(topics::get).delete(topics::delete),
        )
        .route(
            "/v1/groups/{group}/offsets",
            get(groups::offsets).put(groups::commit),
        )
        .route("/v1/groups/{group}/offsets/reset", post(groups::reset))
        .route("/v1/groups/{group}/heartbeat", post(groups::heartbeat))
        .route(
            "/v1/groups/{group}/topics/{topic}/receive",
            post(groups::receive),
        )
        .route("/v1/groups/{group}/topics/{topic}/ack", post(groups::ack))
        .route("/v1/groups/{group}/topics/{topic}/nack", post(groups::nack))
        .route("/v1/groups", get(groups::list))
        .route("/v1/groups/{group}", get(groups::get).put(groups::put))
        .route("/v1/cluster", get(cluster::status))
        .route("/v1/cluster/members", post(cluster::add_member))
        .route(
            "/v1/cluster/members/{id}",
            axum::routing::delete(cluster::remove_member),
        )
        .route("/v1/cluster/leader", post(cluster::transfer_leader))
        .route("/v1/cluster/compact", post(cluster::compact))
        .route("/v1/acl/users", get(acl::list_users))
        .route(
            "/v1/acl/users/{name}",
            put(acl::put_user).delete(acl::delete_user),
        )
        .route("/healthz", get(cluster::healthz))
        .route("/readyz", get(cluster::readyz))
        .route("/metrics", get(cluster::metrics))
        .route("/openapi.json", get(openapi::serve))
        .fallback(|| async { ApiError::not_found("NOT_FOUND", "no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            members_only,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            acl::authorize,
        ))
        // Before authorization: users are each group's own, so the owning group checks.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routing::route_between_groups,
        ))
        .layer(DefaultBodyLimit::max(limit));
    let peer = peer::routes();
    public
        .merge(peer)
        .merge(ui::routes())
        .layer(axum::middleware::from_fn(head_limits))
        // Every request runs in a span carrying its id; the id comes back as a response
        // header (a client's own `x-request-id` is kept, and forwarding passes it on).
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(
            REQUEST_ID.clone(),
            RequestIds::default(),
        ))
        .with_state(state)
}

/// The header that carries a request's id.
pub static REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

/// Request ids: this process's start time and a counter, unique across restarts.
#[derive(Clone)]
struct RequestIds {
    prefix: Arc<str>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for RequestIds {
    fn default() -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        RequestIds {
            prefix: Arc::from(format!("{started:x}")),
            next: Arc::default(),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        axum::http::HeaderValue::from_str(&format!("{}-{n}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id = %id)
}
