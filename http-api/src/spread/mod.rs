//! Topics spread over broker groups (`PUT /v1/topics/{t}` with `groups`): one queue space
//! cut into parts, each a topic of one broker group that holds queues `first..end` of it.
//! A node with NameServers answers every request about such a topic by sending each
//! part's share to that part's group and merging the answers: a produce split per group
//! (atomic per group, results in request order), reads by queue, queries over every part,
//! receives drawn from every group in turn, acks by their receipts' queues, topic admin
//! over every part ([`admin`], [`consume`]).
//!
//! A share travels as a relayed request (one hop); the node that gets it answers it as its
//! own group's (routing.rs leaves relayed requests alone), forwarding to its leader if
//! need be.
//!
//! Must never: send a group a message, receipt or read of a queue another group holds, or
//! answer a produce as written when a group's part of it failed.

mod admin;
mod consume;
mod group_admin;
mod produce;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::AppState;
use crate::acl::path_segments;
use crate::error::ApiError;
use crate::forward::{Target, relay};
use crate::routing::{Layout, Part, Routes};

/// Round-robin over a spread topic's queues (for messages with no queue or key) and over
/// its groups (whose turn a receive starts with): one counter for every topic will do.
static TURN: AtomicU32 = AtomicU32::new(0);

fn next_turn() -> u32 {
    TURN.fetch_add(1, Ordering::Relaxed)
}

/// A group's answer to a share, kept whole so it can be passed on as it came.
pub(crate) struct Answer {
    status: StatusCode,
    retry_after: Option<HeaderValue>,
    body: Bytes,
}

impl Answer {
    fn ok(&self) -> bool {
        self.status.is_success()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The `{"code", "message"}` of an error answer.
    fn error(&self) -> Value {
        match self.json().get("error") {
            Some(e) => e.clone(),
            None => json!({"code": "UNAVAILABLE", "message": format!("answered {}", self.status)}),
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut out = Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(ra) = self.retry_after {
            out = out.header(header::RETRY_AFTER, ra);
        }
        out.body(Body::from(self.body))
            .unwrap_or_else(|e| ApiError::internal(e).into_response())
    }
}

/// What every share of one request has in common.
pub(crate) struct Ctx<'a> {
    app: &'a AppState,
    routes: &'a Routes,
    headers: &'a HeaderMap,
    /// The topic (or consumer group) the request is about.
    topic: &'a str,
}

impl<'a> Ctx<'a> {
    fn new(
        app: &'a AppState,
        routes: &'a Routes,
        headers: &'a HeaderMap,
        topic: &'a str,
    ) -> Ctx<'a> {
        Ctx {
            app,
            routes,
            headers,
            topic,
        }
    }

    /// Sends one share to `group` (relayed: its node answers as its own group's).
    async fn call(
        &self,
        group: &str,
        method: Method,
        path: &str,
        body: Bytes,
        wait: Duration,
    ) -> Result<Answer, ApiError> {
        let addr = self.routes.addr_of(group).ok_or_else(|| {
            ApiError::unavailable(format!(
                "no member of broker group {group} is known (asked about {}); retry",
                self.topic
            ))
        })?;
        let uri: Uri = path.parse().map_err(ApiError::internal)?;
        let to = Target {
            addr: &addr,
            who: &format!("broker group {group} ({addr})"),
            hops: 1,
            timeout: self.app.cfg.write_timeout + wait,
        };
        let resp = relay(self.app, method, &uri, self.headers, body, &to).await?;
        let status = resp.status();
        let retry_after = resp.headers().get(header::RETRY_AFTER).cloned();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .map_err(|e| ApiError::outcome_unknown(format!("lost the answer of {group}: {e}")))?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    /// Sends a request on to `group` unchanged and answers with its answer.
    async fn pass(
        &self,
        group: &str,
        method: Method,
        path: &str,
        body: Bytes,
        wait: Duration,
    ) -> Result<Response, ApiError> {
        Ok(self
            .call(group, method, path, body, wait)
            .await?
            .into_response())
    }

    /// Sends the same request to every part's group at once; answers in part order.
    async fn call_all(
        &self,
        layout: &Layout,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Vec<Answer>, ApiError> {
        let calls = layout
            .parts
            .iter()
            .map(|p| self.call(&p.group, method.clone(), path, body.clone(), Duration::ZERO));
        futures::future::join_all(calls).await.into_iter().collect()
    }

    /// The group other than `here` holding the topic whole, asked of every group; `Err`
    /// when one holds a part (the topic is spread, the routes do not know it yet) or a
    /// group cannot say.
    async fn find_whole(&self, here: &str) -> Result<Option<Part>, ApiError> {
        let path = topic_path(self.topic);
        let groups: Vec<String> = self
            .routes
            .group_names()
            .into_iter()
            .filter(|g| g != here)
            .collect();
        let calls = groups
            .iter()
            .map(|g| self.call(g, Method::GET, &path, Bytes::new(), Duration::ZERO));
        let answers = futures::future::join_all(calls).await;
        let mut found = None;
        for (g, a) in groups.iter().zip(answers) {
            let a = a?;
            if a.status == StatusCode::NOT_FOUND {
                continue;
            }
            if !a.ok() {
                return Err(ApiError::unavailable(format!(
                    "broker group {g} could not say whether it holds topic {}: {}; retry",
                    self.topic,
                    a.error()["message"]
                )));
            }
            let t = a.json();
            if t.get("first_queue").is_some_and(|f| !f.is_null()) {
                return Err(ApiError::unavailable(format!(
                    "topic {} is already spread over broker groups and the routes do not show it yet; retry",
                    self.topic
                )));
            }
            let count = t["queues"].as_u64().unwrap_or(0) as u32;
            found = Some(Part {
                group: g.clone(),
                first: 0,
                count,
            });
        }
        Ok(found)
    }
}

/// Answers a request about `topic`, which `layout` spreads over broker groups.
pub(crate) async fn handle(
    app: &AppState,
    routes: &Routes,
    layout: Layout,
    topic: &str,
    parts: &Parts,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(app, routes, &parts.headers, topic);
    let path = parts.uri.path_and_query().map_or("", |p| p.as_str());
    let segments = path_segments(parts.uri.path()).unwrap_or_default();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let m = &parts.method;
    match seg.as_slice() {
        ["v1", "topics", _] if m == Method::PUT => {
            admin::put_spread(&ctx, Some(layout), &body).await
        }
        ["v1", "topics", _] if m == Method::GET => admin::get(&ctx, &layout).await,
        ["v1", "topics", _] if m == Method::DELETE => admin::delete(&ctx, &layout, path).await,
        ["v1", "topics", _, "messages"] if m == Method::POST => {
            produce::produce(&ctx, &layout, path, &body).await
        }
        ["v1", "topics", _, "messages"] if m == Method::GET => {
            query(&ctx, &layout, path, &parts.uri).await
        }
        ["v1", "topics", _, "queues", q, "messages"] => match q.parse::<u32>() {
            Ok(q) => match layout.part_of(q) {
                Some(p) => {
                    let wait = Duration::from_millis(query_u64(&parts.uri, "wait_ms"));
                    ctx.pass(&p.group, m.clone(), path, body, wait).await
                }
                None => Err(ApiError::invalid(
                    "queue",
                    format!("topic {topic} has {} queues", layout.total()),
                )),
            },
            Err(_) => Err(ApiError::invalid("queue", "must be a queue number")),
        },
        ["v1", "groups", _, "topics", _, "receive"] => {
            consume::receive(&ctx, &layout, path, &body).await
        }
        ["v1", "groups", _, "topics", _, "ack" | "nack"] => {
            consume::ack(&ctx, &layout, path, &body).await
        }
        ["v1", "groups", _, "offsets"] if m == Method::PUT => {
            consume::commit(&ctx, &layout, path, &body).await
        }
        ["v1", "groups", _, "offsets"] | ["v1", "groups", _, "offsets", "reset"] => {
            consume::offsets(&ctx, &layout, m.clone(), path, &body).await
        }
        _ => Err(ApiError::not_found(
            "NOT_FOUND",
            format!(
                "{m} {} is not served for a topic spread over broker groups",
                parts.uri.path()
            ),
        )),
    }
}

/// `PUT /v1/topics/{t}` naming `groups` for a topic not spread yet: `local` is this
/// node's group when it holds the topic whole. Otherwise every other group is asked
/// whether it does (the routes may not know a topic made a moment ago, and spreading a
/// topic that exists somewhere as if it were new would give two queue spaces).
pub(crate) async fn put(
    app: &AppState,
    routes: &Routes,
    topic: &str,
    local: Option<Part>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(app, routes, headers, topic);
    let current = match local {
        Some(p) => Some(p),
        None => ctx.find_whole(app.broker.broker_group()).await?,
    };
    let current = current.map(|p| Layout { parts: vec![p] });
    admin::put_spread(&ctx, current, body).await
}

/// `GET /v1/topics` on a node with routes: every broker group's topics.
pub(crate) async fn list_topics(
    app: &AppState,
    routes: &Routes,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(app, routes, headers, "");
    admin::list(&ctx).await
}

/// `/v1/topics/{topic}`, the name percent-encoded.
fn topic_path(topic: &str) -> String {
    format!(
        "/v1/topics/{}",
        percent_encoding::utf8_percent_encode(topic, percent_encoding::NON_ALPHANUMERIC)
    )
}

/// A consumer-group admin request on a node with routes (`group`: `None` for the list):
/// answered from every broker group.
pub(crate) async fn consumer_group_admin(
    app: &AppState,
    routes: &Routes,
    group: Option<&str>,
    parts: &Parts,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let ctx = Ctx::new(app, routes, &parts.headers, group.unwrap_or(""));
    let path = parts.uri.path_and_query().map_or("", |p| p.as_str());
    match (group, &parts.method) {
        (None, _) => group_admin::list(&ctx).await,
        (Some(_), m) if m == Method::PUT => group_admin::put(&ctx, path, body).await,
        (Some(_), _) => group_admin::get(&ctx, path).await,
    }
}

/// A request body as JSON, before it is shared out (the groups check its fields).
fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid("body", format!("not JSON: {e}")))
}

/// A numeric query parameter (0 when absent or not a number).
fn query_u64(uri: &Uri, name: &str) -> u64 {
    axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(uri)
        .ok()
        .and_then(|q| q.0.get(name)?.parse().ok())
        .unwrap_or(0)
}

/// `g1 0..4, g2 4..8`.
fn describe(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|p| format!("{} {}..{}", p.group, p.first, p.end()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An error this node met sending a share, as the group's answer would have been.
fn error_answer(e: ApiError) -> Answer {
    let body = Bytes::from(json!({ "error": e.detail() }).to_string());
    let resp = e.into_response();
    Answer {
        status: resp.status(),
        retry_after: resp.headers().get(header::RETRY_AFTER).cloned(),
        body,
    }
}

/// `GET /v1/topics/{t}/messages?key=…` or `?from_ms=…`: every part asked, the messages
/// joined in part order, at most `max` of them.
async fn query(
    ctx: &Ctx<'_>,
    layout: &Layout,
    path: &str,
    uri: &Uri,
) -> Result<Response, ApiError> {
    let max = match query_u64(uri, "max") {
        0 => 32,
        n => n as usize,
    };
    let answers = ctx
        .call_all(layout, Method::GET, path, Bytes::new())
        .await?;
    let mut messages = Vec::new();
    for a in answers {
        if !a.ok() {
            return Ok(a.into_response());
        }
        messages.extend(a.json()["messages"].as_array().cloned().unwrap_or_default());
    }
    messages.truncate(max);
    Ok(axum::Json(json!({ "messages": messages })).into_response())
}
