//! Consumer-group offsets for consumers that read by offset themselves: commit and read.
//! (Receive/ack, heartbeats and resets come with the consumer-groups work.)
//!
//! Must never: commit an offset from a follower (commits are Raft entries, forwarded to
//! the leader).

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use raftmq_raft::Command;
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::dto::{check_name, parse_json};
use crate::error::ApiError;
use crate::forward::{Route, route_write};
use crate::messages::propose_command;

#[derive(Deserialize)]
pub(crate) struct CommitRequest {
    topic: String,
    offsets: Vec<QueueOffset>,
}

#[derive(Deserialize)]
struct QueueOffset {
    queue: u32,
    offset: u64,
}

/// `PUT /v1/groups/{group}/offsets`.
pub(crate) async fn commit(
    State(app): State<AppState>,
    Path(group): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    check_name("group", &group)?;
    let req: CommitRequest = parse_json(&body)?;
    check_name("topic", &req.topic)?;
    if req.offsets.is_empty() {
        return Err(ApiError::invalid("offsets", "must name at least one queue"));
    }
    if let Route::Relayed(resp) = route_write(&app, method, &uri, &headers, body).await? {
        return Ok(resp);
    }
    let cmd = Command::CommitOffsets {
        group,
        topic: req.topic,
        offsets: req.offsets.iter().map(|o| (o.queue, o.offset)).collect(),
    };
    propose_command(&app, cmd).await?;
    Ok(Json(json!({"committed": true})).into_response())
}

/// `GET /v1/groups/{group}/offsets?topic=t`.
pub(crate) async fn offsets(
    State(app): State<AppState>,
    Path(group): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    check_name("group", &group)?;
    let topic = params
        .get("topic")
        .ok_or_else(|| ApiError::invalid("topic", "is required"))?;
    check_name("topic", topic)?;
    let spec = app
        .broker
        .topic(topic)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::topic_not_found(topic))?;
    let bounds = app
        .broker
        .queue_bounds(topic, spec.queues)
        .await
        .map_err(ApiError::internal)?;
    let committed: HashMap<u32, u64> = app
        .broker
        .committed_offsets(&group, topic)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .collect();
    let rows: Vec<_> = bounds
        .iter()
        .enumerate()
        .map(|(q, (_, max))| {
            let c = committed.get(&(q as u32)).copied().unwrap_or(0);
            json!({"topic": topic, "queue": q, "committed": c, "max_offset": max, "lag": max.saturating_sub(c)})
        })
        .collect();
    Ok(Json(json!({ "offsets": rows })).into_response())
}
