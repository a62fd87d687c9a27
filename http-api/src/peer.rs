//! The internal peer RPC routes (`/raft/...`): one thin adapter over
//! `raftmq_raft::Broker::peer`, mounted once per `PeerRpc` (whose paths are declared in
//! raft, beside the client that posts to them).
//!
//! Must never: be reachable through forwarding, or decode anything itself.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use raftmq_raft::{BrokerError, PeerRpc};

use crate::AppState;

fn respond(r: Result<Bytes, BrokerError>) -> Response {
    match r {
        Ok(b) => (
            StatusCode::OK,
            [("content-type", "application/octet-stream")],
            b,
        )
            .into_response(),
        Err(BrokerError::Rejected { message, .. }) => {
            (StatusCode::BAD_REQUEST, message).into_response()
        }
        Err(BrokerError::Unavailable(m)) => (StatusCode::SERVICE_UNAVAILABLE, m).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Every peer route.
pub(crate) fn routes() -> Router<AppState> {
    PeerRpc::ALL.into_iter().fold(Router::new(), |router, rpc| {
        router.route(
            rpc.path(),
            post(move |State(app): State<AppState>, body: Bytes| async move {
                respond(app.broker.peer().serve(rpc, body).await)
            }),
        )
    })
}
