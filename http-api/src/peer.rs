//! The internal peer RPC routes (`/raft/...`): thin adapters over `raftmq_raft::rpc`.
//!
//! Must never: be reachable through forwarding, or decode anything itself.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use raftmq_raft::rpc::{self, ServeError};

use crate::AppState;

fn respond(r: Result<Bytes, ServeError>) -> Response {
    match r {
        Ok(b) => (
            StatusCode::OK,
            [("content-type", "application/octet-stream")],
            b,
        )
            .into_response(),
        Err(ServeError::BadRequest(e)) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Err(ServeError::Raft(e)) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

pub(crate) async fn append(State(app): State<AppState>, body: Bytes) -> Response {
    respond(rpc::serve_append(app.broker.raft(), body).await)
}

pub(crate) async fn vote(State(app): State<AppState>, body: Bytes) -> Response {
    respond(rpc::serve_vote(app.broker.raft(), body).await)
}

pub(crate) async fn transfer_leader(State(app): State<AppState>, body: Bytes) -> Response {
    respond(rpc::serve_transfer_leader(app.broker.raft(), body).await)
}

pub(crate) async fn snapshot(State(app): State<AppState>, body: Bytes) -> Response {
    let dir = app.broker.incoming_snapshot_dir();
    respond(rpc::serve_snapshot(app.broker.raft(), body, &dir).await)
}
