//! Consumer groups: receive (leases), ack and nack, heartbeats with queue assignment,
//! committed offsets (read, commit, reset) and group views.
//!
//! Must never: lease, ack or commit from a follower (they are Raft entries, forwarded to the
//! leader), or answer a receive whose leases may exist with anything but the messages or
//! 504 `OUTCOME_UNKNOWN`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use raftmq_raft::{
    ConsumerGroupMode, MAX_NACK_DELAY_MS, NACK_WITH_BACKOFF, ReceiveRequest, ResetTo, TagFilter,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::dto::{Messages, check_name, message_json, parse_json, parse_sql};
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::forward::{Route, WriteReq};
use crate::messages::with_write_timeout;

#[derive(Deserialize)]
pub(crate) struct CommitRequest {
    topic: String,
    offsets: Vec<crate::dto::Object<QueueOffset>>,
}

#[derive(Deserialize)]
struct QueueOffset {
    queue: u32,
    offset: u64,
}

/// `PUT /v1/groups/{group}/offsets`.
pub(crate) async fn commit(
    State(app): State<AppState>,
    ApiPath(group): ApiPath<String>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    let body = &write.body;
    check_name("group", &group)?;
    let req: CommitRequest = parse_json(body)?;
    check_name("topic", &req.topic)?;
    if req.offsets.is_empty() {
        return Err(ApiError::invalid("offsets", "must name at least one queue"));
    }
    if let Route::Relayed(resp) = write.route(&app).await? {
        return Ok(resp);
    }
    let offsets = req
        .offsets
        .iter()
        .map(|o| (o.0.queue, o.0.offset))
        .collect();
    with_write_timeout(&app, async {
        Ok(app
            .broker
            .commit_offsets(&group, &req.topic, offsets)
            .await?)
    })
    .await?;
    Ok(Json(json!({"committed": true})).into_response())
}

/// `GET /v1/groups/{group}/offsets?topic=t`.
pub(crate) async fn offsets(
    State(app): State<AppState>,
    ApiPath(group): ApiPath<String>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    check_name("group", &group)?;
    let topic = params
        .get("topic")
        .ok_or_else(|| ApiError::invalid("topic", "is required"))?;
    check_name("topic", topic)?;
    let spec = app
        .broker
        .topic(topic)
        .await?
        .ok_or_else(|| ApiError::topic_not_found(topic))?;
    let bounds = app.broker.queue_bounds(topic, spec.queues).await?;
    let committed: HashMap<u32, u64> = app
        .broker
        .committed_offsets(&group, topic)
        .await?
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

/// Most messages per receive.
const MAX_RECEIVE: usize = 256;
/// Longest receive long poll, ms.
const MAX_RECEIVE_WAIT_MS: u64 = 30_000;

#[derive(Deserialize)]
pub(crate) struct ReceiveBody {
    consumer: String,
    max: Option<usize>,
    wait_ms: Option<u64>,
    invisible_ms: Option<u64>,
    tag: Option<String>,
    sql: Option<String>,
    mode: Option<String>,
}

/// `POST /v1/groups/{group}/topics/{topic}/receive`.
pub(crate) async fn receive(
    State(app): State<AppState>,
    ApiPath((group, topic)): ApiPath<(String, String)>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    let body = &write.body;
    check_name("group", &group)?;
    check_name("topic", &topic)?;
    let req: ReceiveBody = parse_json(body)?;
    check_name("consumer", &req.consumer)?;
    let max = req.max.unwrap_or(32);
    if !(1..=MAX_RECEIVE).contains(&max) {
        return Err(ApiError::invalid(
            "max",
            format!("must be between 1 and {MAX_RECEIVE}"),
        ));
    }
    let wait_ms = req.wait_ms.unwrap_or(0);
    if wait_ms > MAX_RECEIVE_WAIT_MS {
        return Err(ApiError::invalid(
            "wait_ms",
            format!("must be at most {MAX_RECEIVE_WAIT_MS}"),
        ));
    }
    let invisible_ms = req.invisible_ms.unwrap_or(30_000);
    if !(100..=12 * 3600 * 1000).contains(&invisible_ms) {
        return Err(ApiError::invalid(
            "invisible_ms",
            "must be between 100 and 43200000",
        ));
    }
    let mode = match req.mode.as_deref() {
        None => ConsumerGroupMode::Clustering,
        Some(m) => ConsumerGroupMode::parse(m)
            .ok_or_else(|| ApiError::invalid("mode", "must be clustering or broadcast"))?,
    };
    let sql = parse_sql(req.sql.as_deref())?;
    let wait = std::time::Duration::from_millis(wait_ms);
    if let Route::Relayed(resp) = write.route_waiting(&app, wait).await? {
        return Ok(resp);
    }
    let request = ReceiveRequest {
        group,
        topic,
        consumer: req.consumer,
        max,
        wait_ms,
        invisible_ms,
        tag: req.tag.as_deref().and_then(TagFilter::parse),
        sql,
        mode,
    };
    let deliveries =
        match tokio::time::timeout(app.cfg.write_timeout + wait, app.broker.receive(request)).await
        {
            Ok(r) => r?,
            Err(_) => {
                return Err(ApiError::outcome_unknown(
                    "the receive did not finish in time; leases may have been taken",
                ));
            }
        };
    app.stats
        .consumed_messages
        .fetch_add(deliveries.len() as u64, Ordering::Relaxed);
    let messages = deliveries
        .iter()
        .map(|d| {
            message_json(&d.message, app.broker.message_id(&d.message).to_string())
                .delivered(d.attempt, &d.receipt)
        })
        .collect();
    Ok(Json(Messages { messages }).into_response())
}

/// One receipt's answer (fields in sorted order, as a JSON object map would give them).
#[derive(serde::Serialize)]
struct AckResult<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    ok: bool,
    receipt: &'a str,
}

#[derive(serde::Serialize)]
struct AckResults<'a> {
    results: Vec<AckResult<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct AckBody {
    receipts: Vec<String>,
    delay_ms: Option<u64>,
}

async fn ack_or_nack(
    app: AppState,
    group: String,
    topic: String,
    write: WriteReq,
    nack: bool,
) -> Result<Response, ApiError> {
    let body = &write.body;
    check_name("group", &group)?;
    check_name("topic", &topic)?;
    let req: AckBody = parse_json(body)?;
    if req.receipts.is_empty() || req.receipts.len() > 1024 {
        return Err(ApiError::invalid(
            "receipts",
            "must hold 1 to 1024 receipts",
        ));
    }
    let delay = if nack {
        // Without a delay the group's retry backoff for the message's attempt applies.
        match req.delay_ms {
            Some(d) if d > MAX_NACK_DELAY_MS => {
                return Err(ApiError::invalid("delay_ms", "must be at most 7 days"));
            }
            Some(d) => Some(d),
            None => Some(NACK_WITH_BACKOFF),
        }
    } else {
        None
    };
    if let Route::Relayed(resp) = write.route(&app).await? {
        return Ok(resp);
    }
    let results = with_write_timeout(&app, async {
        app.broker
            .ack(&group, &topic, req.receipts.clone(), delay)
            .await
            .map_err(ApiError::from)
    })
    .await?;
    let results = req
        .receipts
        .iter()
        .zip(results)
        .map(|(receipt, code)| AckResult {
            ok: code.is_none(),
            code,
            receipt,
        })
        .collect();
    Ok(Json(AckResults { results }).into_response())
}

/// `POST /v1/groups/{group}/topics/{topic}/ack`.
pub(crate) async fn ack(
    State(app): State<AppState>,
    ApiPath((group, topic)): ApiPath<(String, String)>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    ack_or_nack(app, group, topic, write, false).await
}

/// `POST /v1/groups/{group}/topics/{topic}/nack`.
pub(crate) async fn nack(
    State(app): State<AppState>,
    ApiPath((group, topic)): ApiPath<(String, String)>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    ack_or_nack(app, group, topic, write, true).await
}

#[derive(Deserialize)]
pub(crate) struct HeartbeatBody {
    consumer: String,
    topics: Vec<String>,
    session_ms: Option<u64>,
}

/// `POST /v1/groups/{group}/heartbeat`.
pub(crate) async fn heartbeat(
    State(app): State<AppState>,
    ApiPath(group): ApiPath<String>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    let body = &write.body;
    check_name("group", &group)?;
    let req: HeartbeatBody = parse_json(body)?;
    check_name("consumer", &req.consumer)?;
    for (i, t) in req.topics.iter().enumerate() {
        check_name(&format!("topics[{i}]"), t)?;
    }
    let session_ms = req.session_ms.unwrap_or(10_000);
    if !(100..=3_600_000).contains(&session_ms) {
        return Err(ApiError::invalid(
            "session_ms",
            "must be between 100 and 3600000",
        ));
    }
    if let Route::Relayed(resp) = write.route(&app).await? {
        return Ok(resp);
    }
    let assignments = with_write_timeout(&app, async {
        app.broker
            .heartbeat(&group, &req.consumer, req.topics.clone(), session_ms)
            .await
            .map_err(ApiError::from)
    })
    .await?;
    let rows: Vec<_> = assignments
        .into_iter()
        .map(|(topic, queues)| json!({"topic": topic, "queues": queues}))
        .collect();
    Ok(Json(json!({ "assignments": rows })).into_response())
}

#[derive(Deserialize)]
pub(crate) struct ResetBody {
    topic: String,
    to: Value,
}

/// `POST /v1/groups/{group}/offsets/reset`.
pub(crate) async fn reset(
    State(app): State<AppState>,
    ApiPath(group): ApiPath<String>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    let body = &write.body;
    check_name("group", &group)?;
    let req: ResetBody = parse_json(body)?;
    check_name("topic", &req.topic)?;
    let to = match &req.to {
        Value::String(s) if s == "earliest" => ResetTo::Earliest,
        Value::String(s) if s == "latest" => ResetTo::Latest,
        Value::Object(o) => match o.get("timestamp_ms").and_then(Value::as_u64) {
            Some(ts) => ResetTo::Timestamp(ts),
            None => {
                return Err(ApiError::invalid(
                    "to.timestamp_ms",
                    "must be a non-negative integer",
                ));
            }
        },
        _ => {
            return Err(ApiError::invalid(
                "to",
                r#"must be "earliest", "latest" or {"timestamp_ms": N}"#,
            ));
        }
    };
    if let Route::Relayed(resp) = write.route(&app).await? {
        return Ok(resp);
    }
    let offsets = with_write_timeout(&app, async {
        app.broker
            .reset_offsets(&group, &req.topic, to)
            .await
            .map_err(ApiError::from)
    })
    .await?;
    let rows: Vec<_> = offsets
        .into_iter()
        .map(|(q, o)| json!({"topic": req.topic, "queue": q, "offset": o}))
        .collect();
    Ok(Json(json!({ "offsets": rows })).into_response())
}

/// `GET /v1/groups`.
pub(crate) async fn list(State(app): State<AppState>) -> Result<Response, ApiError> {
    let groups: Vec<_> = app
        .broker
        .consumer_groups()
        .await?
        .into_iter()
        .map(|(name, mode)| json!({"name": name, "mode": mode.as_str()}))
        .collect();
    Ok(Json(json!({ "groups": groups })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupSettingsBody {
    max_attempts: Option<u32>,
    retry_backoff_ms: Option<Vec<u64>>,
}

/// `PUT /v1/groups/{group}`: the group's retry policy; answers the settings in effect.
pub(crate) async fn put(
    State(app): State<AppState>,
    ApiPath(group): ApiPath<String>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    check_name("group", &group)?;
    let req: GroupSettingsBody = parse_json(&write.body)?;
    if let Route::Relayed(resp) = write.route(&app).await? {
        return Ok(resp);
    }
    let (max_attempts, retry_backoff_ms) = with_write_timeout(&app, async {
        app.broker
            .put_group(&group, req.max_attempts, req.retry_backoff_ms)
            .await
            .map_err(ApiError::from)
    })
    .await?;
    Ok(Json(json!({
        "group": group,
        "max_attempts": max_attempts,
        "retry_backoff_ms": retry_backoff_ms,
    }))
    .into_response())
}

/// `GET /v1/groups/{group}`.
pub(crate) async fn get(
    State(app): State<AppState>,
    ApiPath(group): ApiPath<String>,
) -> Result<Response, ApiError> {
    check_name("group", &group)?;
    let info = app.broker.consumer_group(&group).await?.ok_or_else(|| {
        ApiError::not_found("GROUP_NOT_FOUND", format!("group {group} does not exist"))
    })?;
    let mut topics: Vec<String> = info.queues.iter().map(|q| q.topic.clone()).collect();
    topics.dedup();
    let consumers: Vec<_> = info
        .consumers
        .iter()
        .map(|(name, last, session, topics)| {
            json!({"consumer": name, "last_heartbeat_ms": last, "session_ms": session, "topics": topics})
        })
        .collect();
    let queues: Vec<_> = info
        .queues
        .iter()
        .map(|q| {
            let mut v = json!({
                "topic": q.topic, "queue": q.queue, "committed": q.committed, "max_offset": q.max_offset,
                "lag": q.max_offset.saturating_sub(q.committed), "in_flight": q.in_flight,
            });
            if let Some(c) = &q.consumer {
                v["consumer"] = json!(c);
            }
            v
        })
        .collect();
    Ok(Json(json!({
        "group": info.name,
        "mode": info.mode.as_str(),
        "max_attempts": info.max_attempts,
        "retry_backoff_ms": info.retry_backoff_ms,
        "topics": topics,
        "consumers": consumers,
        "queues": queues,
        "in_flight": info.queues.iter().map(|q| q.in_flight).sum::<u64>(),
        "dlq_topic": info.dlq_topic,
        "dlq_depth": info.dlq_depth,
    }))
    .into_response())
}
