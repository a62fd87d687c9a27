//! The internal peer RPC routes (`/raft/...`): one thin adapter over
//! `raftmq_raft::Broker::serve_peer`, mounted once per `PeerRpc` (whose paths are declared
//! in raft, beside the client that posts to them). It hands over the credentials header and
//! the sender's address (from the connection, when the server records it), so the broker
//! authenticates a request before anything decodes it. With TLS and a CA, a peer request
//! must also come over a connection whose client certificate the CA signed. Peer routes
//! have their own body limit.
//!
//! Must never: be reachable through forwarding, or decode anything itself.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use raftmq_raft::{BrokerError, PeerRpc, RejectCode};

/// Largest peer request body: one log entry of up to 64 MiB (replication reads are bounded
/// to 8 MiB otherwise), a 4 MiB snapshot chunk, plus framing.
const MAX_PEER_BODY: usize = 72 << 20;

use crate::{AppState, ConnectionTls};

fn respond(r: Result<Bytes, BrokerError>) -> Response {
    match r {
        Ok(b) => (
            StatusCode::OK,
            [("content-type", "application/octet-stream")],
            b,
        )
            .into_response(),
        Err(BrokerError::Rejected {
            code: RejectCode::Unauthenticated,
            message,
        }) => (StatusCode::UNAUTHORIZED, message).into_response(),
        Err(BrokerError::Rejected { message, .. }) => {
            (StatusCode::BAD_REQUEST, message).into_response()
        }
        Err(BrokerError::Unavailable(m)) => (StatusCode::SERVICE_UNAVAILABLE, m).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Every peer route.
pub(crate) fn routes() -> Router<AppState> {
    PeerRpc::ALL
        .into_iter()
        .fold(Router::new(), |router, rpc| {
            router.route(
                rpc.path(),
                post(
                    move |State(app): State<AppState>, req: Request| async move {
                        serve(app, rpc, req).await
                    },
                ),
            )
        })
        .layer(DefaultBodyLimit::max(MAX_PEER_BODY))
}

async fn serve(app: AppState, rpc: PeerRpc, req: Request) -> Response {
    if app.cfg.require_peer_certificate
        && !req
            .extensions()
            .get::<ConnectionTls>()
            .is_some_and(|t| t.client_verified)
    {
        return (
            StatusCode::UNAUTHORIZED,
            "peer requests need a client certificate signed by the cluster's CA (--tls-ca)",
        )
            .into_response();
    }
    let from = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let credentials = req
        .headers()
        .get(raftmq_raft::consensus::peer_auth::PEER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match axum::body::to_bytes(req.into_body(), MAX_PEER_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return (StatusCode::PAYLOAD_TOO_LARGE, "peer request too large").into_response();
        }
    };
    respond(
        app.broker
            .serve_peer(rpc, credentials.as_deref(), from, body)
            .await,
    )
}
