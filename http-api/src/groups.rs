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
use serde_json::Value;
use utoipa::ToSchema;

use crate::bodies::{
    self, Assignment, Assignments, Committed, ConsumerRow, GroupQueueRow, GroupSettingsSet,
    GroupSummary, Groups, OffsetRow, Offsets, ResetResponse, ResetRow,
};

use crate::AppState;
use crate::dto::{Messages, check_name, message_json, parse_json, parse_sql};
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::forward::{Route, WriteReq};
use crate::messages::with_write_timeout;

/// `PUT /v1/groups/{group}/offsets`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct CommitRequest {
    /// Topic.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,127}$")]
    topic: String,
    /// Offsets to commit (forward only).
    #[schema(value_type = Vec<QueueOffset>, min_items = 1)]
    offsets: Vec<crate::dto::Object<QueueOffset>>,
}

/// One queue's offset to commit.
#[derive(Deserialize, ToSchema)]
pub(crate) struct QueueOffset {
    /// Queue.
    queue: u32,
    /// The next offset to consume.
    offset: u64,
}

/// `PUT /v1/groups/{group}/offsets`.
#[utoipa::path(put, path = "/v1/groups/{group}/offsets", operation_id = "commit",
    summary = "Commit offsets (forward only)",
    params(crate::openapi::GroupPath),
    request_body = CommitRequest,
    responses((status = 200, description = "OK", body = bodies::Committed), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
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
    Ok(Json(Committed { committed: true }).into_response())
}

/// `GET /v1/groups/{group}/offsets?topic=t`.
#[utoipa::path(get, path = "/v1/groups/{group}/offsets", operation_id = "offsets",
    summary = "Committed offsets and lag",
    params(crate::openapi::GroupPath, crate::openapi::OffsetsParams),
    responses((status = 200, description = "OK", body = bodies::Offsets), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors))]
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
    let own = spec.own_queues();
    let bounds = app.broker.queue_bounds(topic, own.clone()).await?;
    let committed: HashMap<u32, u64> = app
        .broker
        .committed_offsets(&group, topic)
        .await?
        .into_iter()
        .collect();
    let offsets = own
        .zip(&bounds)
        .map(|(q, &(_, max))| {
            let c = committed.get(&q).copied().unwrap_or(0);
            OffsetRow {
                committed: c,
                lag: max.saturating_sub(c),
                max_offset: max,
                queue: q,
                topic: topic.clone(),
            }
        })
        .collect();
    Ok(Json(Offsets { offsets }).into_response())
}

/// Most messages per receive.
const MAX_RECEIVE: usize = 256;
/// Longest receive long poll, ms.
const MAX_RECEIVE_WAIT_MS: u64 = 30_000;

/// `POST /v1/groups/{group}/topics/{topic}/receive`.
#[derive(Deserialize, ToSchema)]
#[schema(as = ReceiveRequest)]
pub(crate) struct ReceiveBody {
    /// The consumer receiving.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,127}$")]
    consumer: String,
    /// Most messages (default 32).
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 256)]
    max: Option<usize>,
    /// Long-poll time, ms.
    #[schema(maximum = 30000)]
    wait_ms: Option<u64>,
    /// Lease: how long the messages stay invisible to others, ms.
    #[schema(minimum = 100, maximum = 43200000)]
    invisible_ms: Option<u64>,
    /// Tag filter `a||b`.
    tag: Option<String>,
    /// SQL92 property filter over properties, `TAG` and `KEY`; messages it does not select
    /// count as consumed for the group.
    #[schema(max_length = 4096)]
    sql: Option<String>,
    /// The group's mode (fixed by its first receive).
    #[schema(value_type = Option<bodies::Mode>)]
    mode: Option<String>,
}

/// `POST /v1/groups/{group}/topics/{topic}/receive`.
#[utoipa::path(post, path = "/v1/groups/{group}/topics/{topic}/receive", operation_id = "receive",
    summary = "Receive (lease) messages",
    params(crate::openapi::GroupTopicPath),
    request_body = ReceiveBody,
    responses((status = 200, description = "OK", body = crate::dto::Messages<'static>), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
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

/// One receipt's result.
// Fields in sorted order, as a JSON object map would give them.
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct AckResult<'a> {
    /// Why not: `RECEIPT_INVALID` or `RECEIPT_EXPIRED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    /// Acked (or nacked).
    ok: bool,
    /// The receipt, as sent.
    #[schema(value_type = String)]
    receipt: &'a str,
}

/// `POST .../ack` and `POST .../nack`: one result per receipt, in request order.
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct AckResults<'a> {
    /// Results.
    results: Vec<AckResult<'a>>,
}

/// `POST .../ack` and `POST .../nack`.
#[derive(Deserialize, ToSchema)]
#[schema(as = AckRequest)]
pub(crate) struct AckBody {
    /// Receipts from receives.
    #[schema(min_items = 1, max_items = 1024)]
    receipts: Vec<String>,
    /// Nack only: deliver again after this long, ms (default: the group's retry backoff).
    #[schema(maximum = 604800000)]
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
#[utoipa::path(post, path = "/v1/groups/{group}/topics/{topic}/ack", operation_id = "ack",
    summary = "Ack receipts",
    params(crate::openapi::GroupTopicPath),
    request_body = AckBody,
    responses((status = 200, description = "OK", body = AckResults<'static>), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
pub(crate) async fn ack(
    State(app): State<AppState>,
    ApiPath((group, topic)): ApiPath<(String, String)>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    ack_or_nack(app, group, topic, write, false).await
}

/// `POST /v1/groups/{group}/topics/{topic}/nack`.
#[utoipa::path(post, path = "/v1/groups/{group}/topics/{topic}/nack", operation_id = "nack",
    summary = "Nack receipts (deliver again after delay_ms or the retry backoff)",
    params(crate::openapi::GroupTopicPath),
    request_body = AckBody,
    responses((status = 200, description = "OK", body = AckResults<'static>), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
pub(crate) async fn nack(
    State(app): State<AppState>,
    ApiPath((group, topic)): ApiPath<(String, String)>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    ack_or_nack(app, group, topic, write, true).await
}

/// `POST /v1/groups/{group}/heartbeat`.
#[derive(Deserialize, ToSchema)]
#[schema(as = HeartbeatRequest)]
pub(crate) struct HeartbeatBody {
    /// The consumer.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,127}$")]
    consumer: String,
    /// The topics it consumes.
    topics: Vec<String>,
    /// Gone after this long without a heartbeat, ms.
    #[schema(minimum = 100, maximum = 3600000)]
    session_ms: Option<u64>,
}

/// `POST /v1/groups/{group}/heartbeat`.
#[utoipa::path(post, path = "/v1/groups/{group}/heartbeat", operation_id = "heartbeat",
    summary = "Heartbeat, answered with the consumer's queues",
    params(crate::openapi::GroupPath),
    request_body = HeartbeatBody,
    responses((status = 200, description = "OK", body = bodies::Assignments), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
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
    let assignments = assignments
        .into_iter()
        .map(|a| Assignment {
            queues: a.queues,
            topic: a.topic,
            consumers: a.consumers,
        })
        .collect();
    Ok(Json(Assignments { assignments }).into_response())
}

/// `POST /v1/groups/{group}/offsets/reset`.
#[derive(Deserialize, ToSchema)]
#[schema(as = ResetRequest)]
pub(crate) struct ResetBody {
    /// Topic.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,127}$")]
    topic: String,
    /// Where to.
    #[schema(value_type = ResetTarget)]
    to: Value,
}

/// Where to reset: `earliest`, `latest` or `{"timestamp_ms": N}`.
// `to` is read by hand (for an error that names the accepted forms); this type describes it.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
#[schema(as = ResetTo)]
pub(crate) enum ResetTarget {
    /// `earliest` or `latest`.
    Named(ResetNamed),
    /// The first message stored at or after this time.
    At {
        /// ms since the epoch.
        timestamp_ms: u64,
    },
}

/// `earliest` or `latest`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ResetNamed {
    /// The first retained offset.
    Earliest,
    /// One past the last offset.
    Latest,
}

/// `POST /v1/groups/{group}/offsets/reset`.
#[utoipa::path(post, path = "/v1/groups/{group}/offsets/reset", operation_id = "reset",
    summary = "Reset offsets",
    params(crate::openapi::GroupPath),
    request_body = ResetBody,
    responses((status = 200, description = "OK", body = bodies::ResetResponse), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
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
    let offsets = offsets
        .into_iter()
        .map(|(queue, offset)| ResetRow {
            offset,
            queue,
            topic: req.topic.clone(),
        })
        .collect();
    Ok(Json(ResetResponse { offsets }).into_response())
}

/// `GET /v1/groups`.
#[utoipa::path(get, path = "/v1/groups", operation_id = "groups",
    summary = "Every consumer group",
    responses((status = 200, description = "OK", body = bodies::Groups), crate::openapi::AuthErrors, crate::openapi::BrokerErrors))]
pub(crate) async fn list(State(app): State<AppState>) -> Result<Response, ApiError> {
    let groups = app
        .broker
        .consumer_groups()
        .await?
        .into_iter()
        .map(|(name, mode)| GroupSummary {
            mode: mode.into(),
            name,
        })
        .collect();
    Ok(Json(Groups { groups }).into_response())
}

/// `PUT /v1/groups/{group}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GroupSettings)]
pub(crate) struct GroupSettingsBody {
    /// Deliveries before a message goes to `DLQ-{group}` (default 16).
    #[schema(minimum = 1, maximum = 1000)]
    max_attempts: Option<u32>,
    /// Wait before an expired or nacked (without `delay_ms`) message is visible again, by
    /// attempt; the last value repeats (default RocketMQ's levels 1 s to 2 h).
    #[schema(min_items = 1, max_items = 64)]
    retry_backoff_ms: Option<Vec<u64>>,
}

/// `PUT /v1/groups/{group}`: the group's retry policy; answers the settings in effect.
#[utoipa::path(put, path = "/v1/groups/{group}", operation_id = "putGroup",
    summary = "Set a consumer group's retry policy (does not create the group or fix its mode)",
    params(crate::openapi::GroupPath),
    request_body = GroupSettingsBody,
    responses((status = 200, description = "OK", body = bodies::GroupSettingsSet), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
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
    Ok(Json(GroupSettingsSet {
        group,
        max_attempts,
        retry_backoff_ms,
    })
    .into_response())
}

/// `GET /v1/groups/{group}`.
#[utoipa::path(get, path = "/v1/groups/{group}", operation_id = "group",
    summary = "A consumer group",
    params(crate::openapi::GroupPath),
    responses((status = 200, description = "OK", body = bodies::Group), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors))]
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
    let consumers = info
        .consumers
        .into_iter()
        .map(
            |(consumer, last_heartbeat_ms, session_ms, topics)| ConsumerRow {
                consumer,
                last_heartbeat_ms,
                session_ms,
                topics,
            },
        )
        .collect();
    let in_flight = info.queues.iter().map(|q| q.in_flight).sum::<u64>();
    let queues = info
        .queues
        .into_iter()
        .map(|q| GroupQueueRow {
            committed: q.committed,
            consumer: q.consumer,
            in_flight: q.in_flight,
            lag: q.max_offset.saturating_sub(q.committed),
            max_offset: q.max_offset,
            queue: q.queue,
            topic: q.topic,
        })
        .collect();
    Ok(Json(bodies::Group {
        consumers,
        dlq_depth: info.dlq_depth,
        dlq_topic: info.dlq_topic,
        group: info.name,
        in_flight,
        max_attempts: info.max_attempts,
        mode: info.mode.into(),
        queues,
        retry_backoff_ms: info.retry_backoff_ms,
        topics,
    })
    .into_response())
}
