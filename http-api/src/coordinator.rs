//! A consumer group's coordinator among several broker groups: its heartbeats (who is
//! live, for which topics) are kept by one broker group, chosen by hashing the consumer
//! group's name over the broker groups the routes know, so every node sends them to the
//! same place. The coordinator answers each consumer's live peers; the node that took the
//! heartbeat shares the topic's whole queue space among them as the routes know it (a
//! coordinator need not hold the topic, or holds only a part of it).
//!
//! Must never: split a topic's queues by any other rule than the state machine's
//! ([`assigned_queues`]), so that an answer from one node agrees with every other's.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use raftmq_raft::{assigned_queues, queue_for_key};
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;
use crate::forward::{Target, relay};
use crate::routing::Routes;

/// The broker group coordinating consumer group `group` (`None`: the routes know none).
pub(crate) fn coordinator_of(routes: &Routes, group: &str) -> Option<String> {
    let groups = routes.group_names();
    if groups.is_empty() {
        return None;
    }
    let at = queue_for_key(group, groups.len() as u32) as usize;
    groups.into_iter().nth(at)
}

/// `POST /v1/groups/{group}/heartbeat` on a node with routes: kept by the coordinator,
/// its assignments recomputed over each topic's whole queue space.
pub(crate) async fn heartbeat(
    app: &AppState,
    routes: &Routes,
    group: &str,
    parts: Parts,
    body: Bytes,
    next: Next,
) -> Result<Response, ApiError> {
    let consumer = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["consumer"].as_str().map(str::to_owned));
    let here = app.broker.broker_group();
    let answer = match coordinator_of(routes, group) {
        Some(c) if c != here => {
            let addr = routes.addr_of(&c).ok_or_else(|| {
                ApiError::unavailable(format!(
                    "consumer group {group}'s coordinator, broker group {c}, has no known member; retry"
                ))
            })?;
            let to = Target {
                addr: &addr,
                who: &format!("broker group {c} ({addr}), the coordinator of {group}"),
                hops: 1,
                timeout: app.cfg.write_timeout,
            };
            relay(app, parts.method, &parts.uri, &parts.headers, body, &to).await?
        }
        _ => next.run(Request::from_parts(parts, Body::from(body))).await,
    };
    match consumer {
        Some(consumer) if answer.status().is_success() => {
            over_whole_topics(answer, routes, &consumer).await
        }
        _ => Ok(answer),
    }
}

/// Each assignment's queues shared out again over the topic's queue count as the routes
/// know it (the coordinator counted only what it holds).
async fn over_whole_topics(
    answer: Response,
    routes: &Routes,
    consumer: &str,
) -> Result<Response, ApiError> {
    let (mut parts, body) = answer.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|_| ApiError::unavailable("lost the coordinator's answer; retry"))?;
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(Response::from_parts(parts, Body::from(bytes)));
    };
    for a in v["assignments"].as_array_mut().into_iter().flatten() {
        let (Some(topic), Some(consumers)) = (a["topic"].as_str(), a["consumers"].as_array())
        else {
            continue;
        };
        let Some(count) = routes.queue_count(topic) else {
            continue;
        };
        let consumers: Vec<String> = consumers
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect();
        a["queues"] = assigned_queues(count, &consumers, consumer).into();
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, Body::from(v.to_string())))
}
