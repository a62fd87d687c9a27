//! Topic admin: create or update, list, show, delete.
//!
//! Must never: let a topic shrink its queue count, or create a system topic by hand.

use crate::bodies::{Deleted, Topics};
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use raftmq_raft::TopicSpec;

use crate::AppState;
use crate::dto::{PutTopicRequest, QueueStat, TopicJson, check_name, is_system_topic, parse_json};
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::forward::{Route, WriteReq};
use crate::messages::with_write_timeout;

/// Most queues a topic may have.
const MAX_QUEUES: u32 = 1024;
/// Longest dedup window, ms.
const MAX_DEDUP_WINDOW_MS: u64 = 7 * 24 * 3600 * 1000;

fn topic_json(name: String, spec: TopicSpec) -> TopicJson {
    TopicJson {
        name,
        queues: spec.queues,
        fifo: spec.fifo,
        retention_ms: spec.retention_ms,
        dedup_window_ms: spec.dedup_window_ms,
        queue_stats: None,
        first_queue: spec.part.map(|p| p.first_queue),
        queue_space: spec.part.map(|p| p.queue_space),
        groups: None,
    }
}

/// `PUT /v1/topics/{topic}`.
#[utoipa::path(put, path = "/v1/topics/{topic}", operation_id = "put_topic",
    summary = "Create or update a topic (queues only grow)",
    params(crate::openapi::TopicPath),
    request_body = crate::dto::PutTopicRequest,
    responses((status = 200, description = "OK", body = crate::dto::TopicJson), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
pub(crate) async fn put(
    State(app): State<AppState>,
    ApiPath(topic): ApiPath<String>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    let body = &write.body;
    check_name("topic", &topic)?;
    let req: PutTopicRequest = if body.is_empty() {
        PutTopicRequest::default()
    } else {
        parse_json(body)?
    };
    if is_system_topic(&topic) {
        return Err(ApiError::invalid(
            "topic",
            "names starting with DLQ- or RETRY- are reserved for system topics",
        ));
    }
    if let Some(q) = req.queues
        && !(1..=MAX_QUEUES).contains(&q)
    {
        return Err(ApiError::invalid(
            "queues",
            format!("must be between 1 and {MAX_QUEUES}"),
        ));
    }
    if req.groups.is_some() {
        // A node with NameServers spreads topics before the request gets here.
        return Err(ApiError::invalid(
            "groups",
            "spreading a topic over broker groups needs a NameServer; this node runs one broker group",
        ));
    }
    let part = match (req.first_queue, req.queue_space, req.queues) {
        (None, None, _) => None,
        (Some(first_queue), Some(queue_space), Some(queues))
            if first_queue < queues && queues <= queue_space =>
        {
            Some(raftmq_raft::SpreadPart {
                first_queue,
                queue_space,
            })
        }
        _ => {
            return Err(ApiError::invalid(
                "first_queue",
                "a part needs first_queue < queues <= queue_space, all three given",
            ));
        }
    };
    if req.retention_ms == Some(0) {
        return Err(ApiError::invalid("retention_ms", "must be positive"));
    }
    if let Some(w) = req.dedup_window_ms
        && !(1..=MAX_DEDUP_WINDOW_MS).contains(&w)
    {
        return Err(ApiError::invalid(
            "dedup_window_ms",
            format!("must be 1 to {MAX_DEDUP_WINDOW_MS} (7 days)"),
        ));
    }
    if let Route::Relayed(resp) = write.route(&app).await? {
        return Ok(resp);
    }
    let existing = app.broker.topic(&topic).await?;
    let spec = TopicSpec {
        queues: req
            .queues
            .or(existing.map(|e| e.queues))
            .unwrap_or(app.cfg.default_queues),
        fifo: req.fifo.or(existing.map(|e| e.fifo)).unwrap_or(false),
        retention_ms: req
            .retention_ms
            .or(existing.map(|e| e.retention_ms))
            .unwrap_or(app.cfg.default_retention_ms),
        dedup_window_ms: req
            .dedup_window_ms
            .or(existing.map(|e| e.dedup_window_ms))
            .unwrap_or(raftmq_raft::DEFAULT_DEDUP_WINDOW_MS),
        part: part.or(existing.and_then(|e| e.part)),
    };
    if let Some(e) = existing
        && spec.queues < e.queues
    {
        return Err(ApiError::conflict(format!(
            "queues may only grow: topic {topic} has {} queues, asked for {}",
            e.queues, spec.queues
        )));
    }
    with_write_timeout(&app, async {
        Ok(app.broker.put_topic(&topic, spec).await?)
    })
    .await?;
    Ok(Json(topic_json(topic, spec)).into_response())
}

/// `GET /v1/topics`.
#[utoipa::path(get, path = "/v1/topics", operation_id = "topics",
    summary = "Every topic",
    responses((status = 200, description = "OK", body = crate::bodies::Topics), crate::openapi::AuthErrors, crate::openapi::BrokerErrors))]
pub(crate) async fn list(State(app): State<AppState>) -> Result<Response, ApiError> {
    let topics: Vec<TopicJson> = app
        .broker
        .topics()
        .await?
        .into_iter()
        .map(|(n, s)| topic_json(n, s))
        .collect();
    Ok(Json(Topics { topics }).into_response())
}

/// `GET /v1/topics/{topic}`.
#[utoipa::path(get, path = "/v1/topics/{topic}", operation_id = "get_topic",
    summary = "A topic with its queue bounds",
    params(crate::openapi::TopicPath),
    responses((status = 200, description = "OK", body = crate::dto::TopicJson), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors))]
pub(crate) async fn get(
    State(app): State<AppState>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Response, ApiError> {
    check_name("topic", &topic)?;
    let spec = app
        .broker
        .topic(&topic)
        .await?
        .ok_or_else(|| ApiError::topic_not_found(&topic))?;
    let own = spec.own_queues();
    let bounds = app.broker.queue_bounds(&topic, own.clone()).await?;
    let mut t = topic_json(topic, spec);
    t.queue_stats = Some(
        own.zip(bounds)
            .map(|(queue, (min, max))| QueueStat {
                queue,
                min_offset: min,
                max_offset: max,
            })
            .collect(),
    );
    Ok(Json(t).into_response())
}

/// `DELETE /v1/topics/{topic}`.
#[utoipa::path(delete, path = "/v1/topics/{topic}", operation_id = "delete_topic",
    summary = "Delete a topic",
    params(crate::openapi::TopicPath),
    responses((status = 200, description = "OK", body = crate::bodies::Deleted), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
pub(crate) async fn delete(
    State(app): State<AppState>,
    ApiPath(topic): ApiPath<String>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    check_name("topic", &topic)?;
    if let Route::Relayed(resp) = write.route(&app).await? {
        return Ok(resp);
    }
    with_write_timeout(&app, async { Ok(app.broker.delete_topic(&topic).await?) }).await?;
    Ok(Json(Deleted { deleted: topic }).into_response())
}
