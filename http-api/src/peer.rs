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

pub(crate) async fn snapshot_begin(State(app): State<AppState>, body: Bytes) -> Response {
    respond(rpc::serve_snapshot_begin(&app.inbox, body).await)
}

pub(crate) async fn snapshot_chunk(State(app): State<AppState>, body: Bytes) -> Response {
    respond(rpc::serve_snapshot_chunk(&app.inbox, body).await)
}

pub(crate) async fn snapshot_install(State(app): State<AppState>, body: Bytes) -> Response {
    respond(rpc::serve_snapshot_install(app.broker.raft(), &app.inbox, body).await)
}
