//! Produce, read by offset (with long polling and tag filters), and queries.
//!
//! Must never: answer a produce before its batch is committed and applied, or return a
//! message that is not committed (reads come from the applied ConsumeQueue).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use raftmq_raft::{
    BrokerError, MessageId, QueueQuery, QueueRead, TagFilter, TopicSpec, TxnRequest,
};

use crate::bodies::{self, ProduceResponse};

use crate::AppState;
use crate::dto::{
    MessageJson, Messages, ProduceRequest, check_name, is_system_topic, message_json, parse_json,
    parse_sql,
};
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::forward::{Route, WriteReq};

/// Longest long poll accepted, ms.
const MAX_WAIT_MS: u64 = 60_000;
/// Most messages per read.
const MAX_READ: usize = 1024;

/// Runs a write with the configured timeout: past it the outcome is unknown.
pub(crate) async fn with_write_timeout<T>(
    app: &AppState,
    fut: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(app.cfg.write_timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::outcome_unknown(format!(
            "the write was not committed within {:?}; it may still be",
            app.cfg.write_timeout
        ))),
    }
}

/// `POST /v1/topics/{topic}/messages`.
#[utoipa::path(post, path = "/v1/topics/{topic}/messages", operation_id = "produce",
    summary = "Produce a batch (atomic)",
    params(crate::openapi::TopicPath),
    request_body = crate::dto::ProduceRequest,
    responses((status = 200, description = "OK", body = crate::bodies::ProduceResponse), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
pub(crate) async fn produce(
    State(app): State<AppState>,
    ApiPath(topic): ApiPath<String>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    let body = &write.body;
    check_name("topic", &topic)?;
    let req: ProduceRequest = parse_json(body)?;
    let (messages, txn) = req.into_messages(
        app.cfg.max_request_bytes,
        app.cfg.txn_check_hosts.as_deref(),
    )?;
    if let Route::Relayed(resp) = write.route(&app).await? {
        return Ok(resp);
    }
    app.stats.produce_requests.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let answer = produce_here(&app, &topic, &messages, txn).await;
    app.stats.produce_seconds.observe(started.elapsed());
    answer
}

/// A produce request on the leader (or a single node).
async fn produce_here(
    app: &AppState,
    topic: &str,
    messages: &[raftmq_raft::ProduceMessage],
    txn: Option<(String, u64)>,
) -> Result<Response, ApiError> {
    let auto_create =
        (app.cfg.auto_create_topics && !is_system_topic(topic)).then_some(TopicSpec {
            queues: app.cfg.default_queues,
            fifo: false,
            retention_ms: app.cfg.default_retention_ms,
            dedup_window_ms: raftmq_raft::DEFAULT_DEDUP_WINDOW_MS,
            part: None,
        });
    if let Some((check_url, check_after_ms)) = txn {
        let txn = TxnRequest {
            check_url,
            check_after_ms,
            max_checks: app.cfg.txn_max_checks,
        };
        let (id, placed) = with_write_timeout(app, async {
            Ok(app
                .broker
                .produce_half(topic, messages, txn, auto_create)
                .await?)
        })
        .await?;
        return Ok(Json(ProduceResponse {
            results: bodies::placed(&placed),
            transaction_id: Some(id),
        })
        .into_response());
    }
    let placed = with_write_timeout(app, async {
        Ok(app.broker.produce(topic, messages, auto_create).await?)
    })
    .await?;
    app.stats
        .produced_messages
        .fetch_add(placed.len() as u64, Ordering::Relaxed);
    Ok(Json(ProduceResponse {
        results: bodies::placed(&placed),
        transaction_id: None,
    })
    .into_response())
}

fn parse_u64(
    params: &HashMap<String, String>,
    name: &str,
    default: u64,
    max: u64,
) -> Result<u64, ApiError> {
    match params.get(name) {
        None => Ok(default),
        Some(v) => {
            let n: u64 = v.parse().map_err(|_| {
                ApiError::invalid(name, format!("`{v}` is not a non-negative integer"))
            })?;
            if n > max {
                return Err(ApiError::invalid(name, format!("must be at most {max}")));
            }
            Ok(n)
        }
    }
}

async fn existing_topic(app: &AppState, topic: &str) -> Result<TopicSpec, ApiError> {
    check_name("topic", topic)?;
    app.broker
        .topic(topic)
        .await?
        .ok_or_else(|| ApiError::topic_not_found(topic))
}

/// `GET /v1/topics/{topic}/queues/{queue}/messages`.
#[utoipa::path(get, path = "/v1/topics/{topic}/queues/{queue}/messages", operation_id = "read",
    summary = "Read a queue by offset (long poll with wait_ms)",
    params(crate::openapi::QueuePath, crate::openapi::ReadParams),
    responses((status = 200, description = "OK", body = ReadJson<'static>), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::UriErrors))]
pub(crate) async fn read(
    State(app): State<AppState>,
    ApiPath((topic, queue)): ApiPath<(String, String)>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    app.stats.read_requests.fetch_add(1, Ordering::Relaxed);
    let spec = existing_topic(&app, &topic).await?;
    let queue: u32 = queue
        .parse()
        .map_err(|_| ApiError::invalid("queue", format!("`{queue}` is not a queue number")))?;
    if queue >= spec.queues {
        return Err(ApiError::invalid(
            "queue",
            format!(
                "{queue} is out of range (topic {topic} has {} queues)",
                spec.queues
            ),
        ));
    }
    let offset = parse_u64(&params, "offset", 0, u64::MAX)?;
    let max = parse_u64(&params, "max", 32, MAX_READ as u64)? as usize;
    if max == 0 {
        return Err(ApiError::invalid("max", "must be at least 1"));
    }
    let wait_ms = parse_u64(&params, "wait_ms", 0, MAX_WAIT_MS)?;
    let filter = params.get("tag").and_then(|t| TagFilter::parse(t));
    let sql = parse_sql(params.get("sql").map(String::as_str))?;
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let mut applied = app.broker.applied();
    let query = QueueQuery {
        topic: topic.clone(),
        queue,
        offset,
        max,
        filter,
        sql,
        scan_limit: 4096,
    };
    let mut next = query;
    loop {
        // Mark the current apply as seen before reading: an apply after the read wakes us.
        applied.borrow_and_update();
        let r = app
            .broker
            .read_queue(next.clone())
            .await
            .map_err(|e| match e {
                // Named by the offset asked for, also when a filtered scan moved on.
                BrokerError::OffsetOutOfRange { min_offset, .. } => {
                    ApiError::offset_out_of_range(offset, min_offset)
                }
                other => other.into(),
            })?;
        let now = Instant::now();
        if !r.messages.is_empty() || now >= deadline {
            return Ok(render_read(&app, r));
        }
        next.offset = r.next_offset;
        if r.next_offset < r.max_offset {
            // A tag filter examined a bounded stretch without a match: scan on.
            continue;
        }
        if tokio::time::timeout(deadline - now, applied.changed())
            .await
            .is_err()
        {
            return Ok(render_read(&app, r));
        }
    }
}

/// A read of a queue.
// Fields in sorted order, as a JSON object map would give them.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = QueueRead)]
pub(crate) struct ReadJson<'a> {
    /// One past the queue's last offset.
    max_offset: u64,
    /// What was read (fewer than asked when the queue ends or a filter skips).
    messages: Vec<MessageJson<'a>>,
    /// The queue's first retained offset.
    min_offset: u64,
    /// Where the next read starts.
    next_offset: u64,
}

fn render_read(app: &AppState, r: QueueRead) -> Response {
    app.stats
        .consumed_messages
        .fetch_add(r.messages.len() as u64, Ordering::Relaxed);
    let messages = r
        .messages
        .iter()
        .map(|m| message_json(m, app.broker.message_id(m).to_string()))
        .collect();
    Json(ReadJson {
        max_offset: r.max_offset,
        messages,
        min_offset: r.min_offset,
        next_offset: r.next_offset,
    })
    .into_response()
}

/// `GET /v1/messages/{msg_id}`.
#[utoipa::path(get, path = "/v1/messages/{msg_id}", operation_id = "message",
    summary = "One message by id",
    params(crate::openapi::MessagePath),
    responses((status = 200, description = "OK", body = crate::dto::MessageJson<'static>), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors))]
pub(crate) async fn by_id(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found("MESSAGE_NOT_FOUND", format!("no message {id}"));
    let Some(msg_id) = MessageId::parse(&id) else {
        return Err(ApiError::invalid(
            "msg_id",
            format!("`{id}` is not a message id"),
        ));
    };
    let m = app
        .broker
        .read_message(&msg_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(message_json(&m, id.clone())).into_response())
}

/// `GET /v1/topics/{topic}/messages?key=…` or `?from_ms=…&to_ms=…`.
#[utoipa::path(get, path = "/v1/topics/{topic}/messages", operation_id = "query",
    summary = "Messages by key (newest first) or by store time",
    params(crate::openapi::TopicPath, crate::openapi::QueryParams),
    responses((status = 200, description = "OK", body = crate::dto::Messages<'static>), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors))]
pub(crate) async fn query(
    State(app): State<AppState>,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    existing_topic(&app, &topic).await?;
    let max = parse_u64(&params, "max", 32, MAX_READ as u64)? as usize;
    if max == 0 {
        return Err(ApiError::invalid("max", "must be at least 1"));
    }
    // Every parameter given is checked, whichever index answers.
    let from = parse_u64(&params, "from_ms", 0, u64::MAX)?;
    let to = parse_u64(&params, "to_ms", u64::MAX, u64::MAX)?;
    if to < from {
        return Err(ApiError::invalid("to_ms", "must not be before from_ms"));
    }
    let hits = if let Some(key) = params.get("key") {
        if key.is_empty() || key.len() > crate::dto::MAX_KEY_BYTES {
            return Err(ApiError::invalid(
                "key",
                format!("must be 1 to {} bytes", crate::dto::MAX_KEY_BYTES),
            ));
        }
        app.broker.find_by_key(&topic, key, max).await
    } else if params.contains_key("from_ms") || params.contains_key("to_ms") {
        app.broker.find_by_time(&topic, from, to, max).await
    } else {
        return Err(ApiError::invalid("key", "give key, or from_ms and to_ms"));
    }?;
    let messages = hits
        .iter()
        .map(|m| message_json(m, app.broker.message_id(m).to_string()))
        .collect();
    Ok(Json(Messages { messages }).into_response())
}
