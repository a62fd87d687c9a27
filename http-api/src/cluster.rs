//! Cluster admin (status, members, leadership) and the health, readiness and metrics
//! endpoints.
//!
//! Must never: change membership from a follower (changes are forwarded to the leader).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;
use crate::dto::{AddMemberRequest, TransferLeaderRequest, parse_json};
use crate::error::ApiError;
use crate::forward::{Route, WriteReq};
use crate::messages::{propose_error, with_write_timeout};
use raftmq_raft::WatchReceiver as _;

/// `GET /v1/cluster`.
pub(crate) async fn status(State(app): State<AppState>) -> Response {
    let s = app.broker.cluster_status();
    let members: Vec<_> = s
        .members
        .iter()
        .map(|m| {
            json!({"id": m.id, "addr": m.addr, "role": m.role, "matched_index": m.matched_index})
        })
        .collect();
    Json(json!({
        "group": s.group,
        "node_id": s.node_id,
        "leader_id": s.leader_id,
        "term": s.term,
        "commit_index": s.commit_index,
        "applied_index": s.applied_index,
        "members": members,
    }))
    .into_response()
}

/// `POST /v1/cluster/members`.
pub(crate) async fn add_member(
    State(app): State<AppState>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    let body = &write.body;
    let req: AddMemberRequest = parse_json(body)?;
    req.addr
        .parse::<SocketAddr>()
        .map_err(|_| ApiError::invalid("addr", format!("`{}` is not HOST:PORT", req.addr)))?;
    if let Route::Relayed(resp) = write.route(&app).await? {
        return Ok(resp);
    }
    let status = app.broker.cluster_status();
    if let Some(m) = status.members.iter().find(|m| m.id == req.id) {
        if m.role != "learner" || !req.voter {
            return Err(ApiError::conflict(format!(
                "node {} is already a member ({})",
                req.id, m.role
            )));
        }
        if m.addr != req.addr {
            return Err(ApiError::conflict(format!(
                "node {} is a member at {}, not {}",
                req.id, m.addr, req.addr
            )));
        }
    }
    // Catching up a new learner can take a while: allow more than a plain write.
    let limit = app.cfg.write_timeout * 6;
    match tokio::time::timeout(limit, app.broker.add_member(req.id, &req.addr, req.voter)).await {
        Ok(r) => r.map_err(propose_error)?,
        Err(_) => {
            return Err(ApiError::outcome_unknown(format!(
                "node {} did not catch up within {limit:?}; it stays a learner",
                req.id
            )));
        }
    }
    Ok(Json(json!({"id": req.id, "addr": req.addr, "voter": req.voter})).into_response())
}

/// `DELETE /v1/cluster/members/{id}`.
pub(crate) async fn remove_member(
    State(app): State<AppState>,
    Path(id): Path<String>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::invalid("id", format!("`{id}` is not a node id")))?;
    if let Route::Relayed(resp) = write.route(&app).await? {
        return Ok(resp);
    }
    if !app
        .broker
        .cluster_status()
        .members
        .iter()
        .any(|m| m.id == id)
    {
        return Err(ApiError::not_found(
            "NOT_FOUND",
            format!("node {id} is not a member"),
        ));
    }
    with_write_timeout(&app, async {
        app.broker.remove_member(id).await.map_err(propose_error)
    })
    .await?;
    Ok(Json(json!({"removed": id})).into_response())
}

/// `POST /v1/cluster/leader`.
pub(crate) async fn transfer_leader(
    State(app): State<AppState>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    let body = &write.body;
    let req: TransferLeaderRequest = parse_json(body)?;
    if let Route::Relayed(resp) = write.route(&app).await? {
        return Ok(resp);
    }
    let status = app.broker.cluster_status();
    match status.members.iter().find(|m| m.id == req.to) {
        None => {
            return Err(ApiError::not_found(
                "NOT_FOUND",
                format!("node {} is not a member", req.to),
            ));
        }
        Some(m) if m.role == "learner" => {
            return Err(ApiError::invalid(
                "to",
                format!("node {} is a learner, not a voter", req.to),
            ));
        }
        Some(_) => {}
    }
    if status.leader_id == Some(req.to) {
        return Ok(Json(json!({"leader_id": req.to})).into_response());
    }
    app.broker
        .transfer_leader(req.to)
        .await
        .map_err(propose_error)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut metrics = app.broker.raft().metrics();
    loop {
        if app.broker.metrics().current_leader == Some(req.to) {
            return Ok(Json(json!({"leader_id": req.to})).into_response());
        }
        if tokio::time::timeout_at(deadline, metrics.changed())
            .await
            .is_err()
        {
            return Err(ApiError::unavailable(format!(
                "leadership did not move to node {} in time; check GET /v1/cluster",
                req.to
            )));
        }
    }
}

/// `GET /healthz`.
pub(crate) async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`.
pub(crate) async fn readyz(State(app): State<AppState>) -> Response {
    if app.broker.is_ready() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        ApiError::unavailable("no known leader, or still applying committed entries")
            .into_response()
    }
}

/// `GET /metrics` in Prometheus text format.
pub(crate) async fn metrics(State(app): State<AppState>) -> Response {
    let m = app.broker.metrics();
    let log = app.broker.log_stats();
    let s = &app.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let rows: [(&str, &str, &str, u64); 11] = [
        (
            "raftmq_raft_term",
            "gauge",
            "Current Raft term.",
            m.current_term,
        ),
        (
            "raftmq_raft_is_leader",
            "gauge",
            "1 if this node is the leader.",
            u64::from(m.current_leader == Some(m.id)),
        ),
        (
            "raftmq_raft_commit_index",
            "gauge",
            "Last committed log index.",
            m.local_committed.map_or(0, |l| l.index),
        ),
        (
            "raftmq_raft_applied_index",
            "gauge",
            "Last applied log index.",
            m.last_applied.map_or(0, |l| l.index),
        ),
        (
            "raftmq_log_entries_total",
            "counter",
            "Entries appended to the CommitLog.",
            load(&log.entries),
        ),
        (
            "raftmq_log_bytes_total",
            "counter",
            "Payload bytes appended to the CommitLog.",
            load(&log.bytes),
        ),
        (
            "raftmq_log_fsyncs_total",
            "counter",
            "fdatasync calls of the CommitLog writer.",
            load(&log.fsyncs),
        ),
        (
            "raftmq_produce_requests_total",
            "counter",
            "Produce requests handled as leader.",
            load(&s.produce_requests),
        ),
        (
            "raftmq_produced_messages_total",
            "counter",
            "Messages produced as leader.",
            load(&s.produced_messages),
        ),
        (
            "raftmq_read_requests_total",
            "counter",
            "Read-by-offset requests.",
            load(&s.read_requests),
        ),
        (
            "raftmq_forwarded_requests_total",
            "counter",
            "Writes forwarded to the leader.",
            load(&s.forwarded_requests),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}
