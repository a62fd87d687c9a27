//! Cluster admin (status, members, leadership) and the health, readiness and metrics
//! endpoints.
//!
//! Must never: change membership from a follower (changes are forwarded to the leader).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::bodies::{AddMemberResponse, Cluster, Compacted, Leader, Member, Removed, Status};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::dto::{AddMemberRequest, TransferLeaderRequest, parse_json};
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::forward::{Route, WriteReq};
use crate::messages::with_write_timeout;
use raftmq_raft::MemberRole;

/// `GET /v1/cluster`.
#[utoipa::path(get, path = "/v1/cluster", operation_id = "cluster",
    summary = "The broker group as this node sees it",
    responses((status = 200, description = "OK", body = Cluster), crate::openapi::AuthErrors))]
pub(crate) async fn status(State(app): State<AppState>) -> Response {
    let s = app.broker.cluster_status();
    let mut members = Vec::with_capacity(s.members.len());
    for m in &s.members {
        members.push(Member {
            addr: m.addr.clone(),
            id: m.id,
            matched_index: m.matched_index,
            role: m.role.into(),
            held_log_index: app.broker.held_log_record(m.id).await.ok().flatten(),
        });
    }
    Json(Cluster {
        applied_index: s.applied_index,
        commit_index: s.commit_index,
        group: s.broker_group,
        // With NameServers: every broker group as the routes show it.
        groups: app.cfg.routes.as_ref().map(|r| r.groups()),
        leader_id: s.leader_id,
        members,
        node_id: s.node_id,
        term: s.term,
    })
    .into_response()
}

/// `POST /v1/cluster/members`.
#[utoipa::path(post, path = "/v1/cluster/members", operation_id = "add_member",
    summary = "Add a node (a learner until caught up, then a voter if asked)",
    request_body = AddMemberRequest,
    responses((status = 200, description = "OK", body = AddMemberResponse), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
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
    if let Some(m) = status.member(req.id) {
        if m.role != MemberRole::Learner || !req.voter {
            return Err(ApiError::conflict(format!(
                "node {} is already a member ({})",
                req.id,
                m.role.as_str()
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
    let limit = match req.catch_up_ms {
        None => app.cfg.write_timeout * 6,
        Some(ms) if (100..=3_600_000).contains(&ms) => Duration::from_millis(ms),
        Some(_) => {
            return Err(ApiError::invalid(
                "catch_up_ms",
                "must be between 100 and 3600000",
            ));
        }
    };
    app.broker
        .add_member(req.id, &req.addr, req.voter, limit)
        .await?;
    Ok(Json(AddMemberResponse {
        addr: req.addr,
        id: req.id,
        voter: req.voter,
    })
    .into_response())
}

/// `DELETE /v1/cluster/members/{id}`.
#[utoipa::path(delete, path = "/v1/cluster/members/{id}", operation_id = "remove_member",
    summary = "Remove a node",
    params(crate::openapi::MemberPath),
    responses((status = 200, description = "OK", body = Removed), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
pub(crate) async fn remove_member(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::invalid("id", format!("`{id}` is not a node id")))?;
    if let Route::Relayed(resp) = write.route(&app).await? {
        return Ok(resp);
    }
    if app.broker.cluster_status().member(id).is_none() {
        return Err(ApiError::not_found(
            "NOT_FOUND",
            format!("node {id} is not a member"),
        ));
    }
    with_write_timeout(&app, async { Ok(app.broker.remove_member(id).await?) }).await?;
    Ok(Json(Removed { removed: id }).into_response())
}

/// `POST /v1/cluster/leader`.
#[utoipa::path(post, path = "/v1/cluster/leader", operation_id = "transfer_leader",
    summary = "Hand leadership to a voter",
    request_body = TransferLeaderRequest,
    responses((status = 200, description = "OK", body = Leader), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
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
    match status.member(req.to) {
        None => {
            return Err(ApiError::not_found(
                "NOT_FOUND",
                format!("node {} is not a member", req.to),
            ));
        }
        Some(m) if m.role == MemberRole::Learner => {
            return Err(ApiError::invalid(
                "to",
                format!("node {} is a learner, not a voter", req.to),
            ));
        }
        Some(_) => {}
    }
    if status.leader_id == Some(req.to) {
        return Ok(Json(Leader { leader_id: req.to }).into_response());
    }
    app.broker.transfer_leader(req.to).await?;
    if app
        .broker
        .wait_for_leader(req.to, Duration::from_secs(5))
        .await
    {
        return Ok(Json(Leader { leader_id: req.to }).into_response());
    }
    Err(ApiError::unavailable(format!(
        "leadership did not move to node {} in time; check GET /v1/cluster",
        req.to
    )))
}

/// `POST /v1/cluster/compact`: this node (not forwarded) snapshots its applied state and
/// lets Raft forget the log up to it.
#[utoipa::path(post, path = "/v1/cluster/compact", operation_id = "compact",
    summary = "This node snapshots and lets Raft forget its log up to it",
    responses((status = 200, description = "OK", body = Compacted), crate::openapi::AuthErrors, crate::openapi::BrokerErrors))]
pub(crate) async fn compact(State(app): State<AppState>) -> Result<Response, ApiError> {
    let index = app.broker.compact().await?;
    Ok(Json(Compacted {
        node_id: app.broker.node_id(),
        snapshot_index: index,
    })
    .into_response())
}

/// `GET /healthz`.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz",
    summary = "The process is up",
    security(()),
    responses((status = 200, description = "OK", body = Status)))]
pub(crate) async fn healthz() -> Response {
    Json(Status { status: "ok" }).into_response()
}

/// `GET /readyz`.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz",
    summary = "Knows a leader, applied what it saw committed, is a member",
    security(()),
    responses((status = 200, description = "OK", body = Status), crate::openapi::BrokerErrors))]
pub(crate) async fn readyz(State(app): State<AppState>) -> Response {
    if app.broker.is_ready() {
        Json(Status { status: "ready" }).into_response()
    } else {
        ApiError::unavailable("no known leader, or still applying committed entries")
            .into_response()
    }
}

/// On the leader: how far each member's log is behind the leader's, in entries.
fn replication_lag(app: &AppState, out: &mut String) {
    if !app.broker.is_leader() {
        return;
    }
    let status = app.broker.cluster_status();
    let Some(last) = status.members.iter().filter_map(|m| m.matched_index).max() else {
        return;
    };
    let name = "raftmq_raft_replication_lag_entries";
    let _ = writeln!(
        out,
        "# HELP {name} Log entries a member is behind the leader (on the leader).\n# TYPE {name} gauge"
    );
    for m in &status.members {
        let lag = last - m.matched_index.unwrap_or(0).min(last);
        let _ = writeln!(out, "{name}{{node_id=\"{}\"}} {lag}", m.id);
    }
}

/// Every consumer group's lag per queue (messages past its committed offset).
async fn group_lag(app: &AppState, out: &mut String) -> Result<(), raftmq_raft::BrokerError> {
    let name = "raftmq_consumer_group_lag";
    let _ = writeln!(
        out,
        "# HELP {name} Messages past a consumer group's committed offset, per queue.\n# TYPE {name} gauge"
    );
    for (group, _) in app.broker.consumer_groups().await? {
        let Some(info) = app.broker.consumer_group(&group).await? else {
            continue;
        };
        for q in &info.queues {
            let consumer = q
                .consumer
                .as_deref()
                .map(|c| format!(",consumer=\"{c}\""))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{name}{{group=\"{group}\",topic=\"{}\",queue=\"{}\"{consumer}}} {}",
                q.topic,
                q.queue,
                q.max_offset.saturating_sub(q.committed)
            );
        }
    }
    Ok(())
}

/// `GET /metrics` in Prometheus text format.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics",
    summary = "Prometheus text format",
    responses((status = 200, description = "Metrics", content_type = "text/plain", body = String), crate::openapi::AuthErrors))]
pub(crate) async fn metrics(State(app): State<AppState>) -> Response {
    let n = app.broker.node_stats();
    let s = &app.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let rows: [(&str, &str, &str, u64); 13] = [
        ("raftmq_raft_term", "gauge", "Current Raft term.", n.term),
        (
            "raftmq_raft_is_leader",
            "gauge",
            "1 if this node is the leader.",
            u64::from(n.is_leader),
        ),
        (
            "raftmq_raft_commit_index",
            "gauge",
            "Last committed log index.",
            n.commit_index,
        ),
        (
            "raftmq_raft_applied_index",
            "gauge",
            "Last applied log index.",
            n.applied_index,
        ),
        (
            "raftmq_log_entries_total",
            "counter",
            "Entries appended to the CommitLog.",
            n.log_entries,
        ),
        (
            "raftmq_log_bytes_total",
            "counter",
            "Payload bytes appended to the CommitLog.",
            n.log_bytes,
        ),
        (
            "raftmq_log_fsyncs_total",
            "counter",
            "fdatasync calls of the CommitLog writer.",
            n.log_fsyncs,
        ),
        (
            "raftmq_produce_requests_total",
            "counter",
            "Produce requests handled as leader.",
            load(&s.produce_requests),
        ),
        (
            "raftmq_produce_entries_total",
            "counter",
            "Produce entries proposed as leader (concurrent requests for a topic share one).",
            n.produce_entries,
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
            "raftmq_consumed_messages_total",
            "counter",
            "Messages handed to consumers by this node (receives and reads by offset).",
            load(&s.consumed_messages),
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
    s.produce_seconds.render(
        &mut out,
        "raftmq_produce_duration_seconds",
        "Produce requests handled as leader, from parsed to answered (commit and apply included).",
    );
    app.broker.fsync_seconds().render(
        &mut out,
        "raftmq_log_fsync_duration_seconds",
        "fdatasync calls of the CommitLog writer.",
    );
    app.broker.apply_seconds().render(
        &mut out,
        "raftmq_apply_duration_seconds",
        "Apply calls of the state machine (their RocksDB write included).",
    );
    replication_lag(&app, &mut out);
    if let Some(routes) = &app.cfg.routes {
        routes.render_metrics(&mut out);
    }
    if let Err(e) = group_lag(&app, &mut out).await {
        tracing::warn!(error = %e, "consumer-group lag for /metrics");
    }
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}
