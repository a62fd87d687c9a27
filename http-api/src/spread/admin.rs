//! Admin of a spread topic: create it over broker groups, grow it (onto new groups, or its
//! last part), show it as one topic, delete every part.
//!
//! Must never: move a queue that exists to another group (growing only appends queues at
//! the end of the queue space), or leave a gap in the queue space: parts are made in queue
//! order, so a failure part way leaves a shorter topic that a retry completes.

use std::time::Duration;

use axum::http::Method;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::{Ctx, describe, topic_path};
use crate::dto::{PutTopicRequest, check_name, parse_json};
use crate::error::ApiError;
use crate::routing::{Layout, Part};

/// `PUT /v1/topics/{t}` with `groups`, or of a topic already spread. `current`: the topic's
/// queue space now (a whole topic is one part at 0; `None`: no group holds it).
pub(crate) async fn put_spread(
    ctx: &Ctx<'_>,
    current: Option<Layout>,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let topic = ctx.topic;
    check_name("topic", topic)?;
    let req: PutTopicRequest = if body.is_empty() {
        PutTopicRequest::default()
    } else {
        parse_json(body)?
    };
    if req.first_queue.is_some() || req.queue_space.is_some() {
        return Err(ApiError::invalid(
            "first_queue",
            "first_queue and queue_space are set by the node that spreads a topic, not by clients",
        ));
    }
    let groups = req.groups.clone().unwrap_or_default();
    for (i, g) in groups.iter().enumerate() {
        if ctx.routes.addr_of(g).is_none() {
            return Err(ApiError::invalid(
                &format!("groups[{i}]"),
                format!("broker group {g} is not known to the NameServers"),
            ));
        }
        if groups[..i].contains(g) {
            return Err(ApiError::invalid(
                &format!("groups[{i}]"),
                format!("{g} is named twice"),
            ));
        }
    }
    let parts_now = current.map(|l| l.parts).unwrap_or_default();
    let total_now = parts_now.last().map_or(0, Part::end);
    let queues = req.queues.unwrap_or(if total_now > 0 {
        total_now
    } else {
        ctx.app.cfg.default_queues
    });
    if queues < total_now {
        return Err(ApiError::conflict(format!(
            "queues may only grow: topic {topic} has {total_now} queues, asked for {queues}"
        )));
    }
    let new_groups: Vec<&String> = groups
        .iter()
        .filter(|g| !parts_now.iter().any(|p| &p.group == *g))
        .collect();
    let grow = queues - total_now;
    if parts_now.is_empty() && new_groups.is_empty() {
        return Err(ApiError::invalid(
            "groups",
            "must name at least one broker group",
        ));
    }
    if !new_groups.is_empty() && (grow as usize) < new_groups.len() {
        return Err(ApiError::invalid(
            "queues",
            format!(
                "{queues} queues leave {grow} new ones for {} new broker groups: each needs at least one",
                new_groups.len()
            ),
        ));
    }
    // The plan: the parts as they are (the last one grown when no new group takes the new
    // queues), then the new groups' parts, split evenly, the first ones taking the rest.
    let mut plan = parts_now.clone();
    if new_groups.is_empty() {
        if let Some(last) = plan.last_mut() {
            last.count += grow;
        }
    } else {
        let k = new_groups.len() as u32;
        let mut first = total_now;
        for (i, g) in new_groups.iter().enumerate() {
            let count = grow / k + u32::from((i as u32) < grow % k);
            plan.push(Part {
                group: (*g).clone(),
                first,
                count,
            });
            first += count;
        }
    }
    // What the request sets (null: left as it is); a new part copies the topic's own
    // settings for what the request leaves out.
    let mut settings = json!({
        "fifo": req.fifo,
        "retention_ms": req.retention_ms,
        "dedup_window_ms": req.dedup_window_ms,
    });
    if let Some(p) = parts_now.first()
        && plan.len() > parts_now.len()
    {
        let a = ctx
            .call(
                &p.group,
                Method::GET,
                &topic_path(topic),
                Bytes::new(),
                Duration::ZERO,
            )
            .await?;
        if !a.ok() {
            return Ok(a.into_response());
        }
        let have = a.json();
        for f in ["fifo", "retention_ms", "dedup_window_ms"] {
            if settings[f].is_null() {
                settings[f] = have[f].clone();
            }
        }
    }
    // The parts that add queues first, then the others learn the new queue space: at
    // every step the parts the routes show cover the largest space any of them names (a
    // failure part way leaves a topic that works; a retry finishes it).
    let space = plan.last().map_or(0, Part::end);
    let adds = |p: &Part| !parts_now.contains(p);
    let order = plan
        .iter()
        .filter(|p| adds(p))
        .chain(plan.iter().filter(|p| !adds(p)));
    let mut last = Value::Null;
    for p in order {
        let mut share = settings.clone();
        share["queues"] = json!(p.end());
        share["first_queue"] = json!(p.first);
        share["queue_space"] = json!(space);
        let body = Bytes::from(share.to_string());
        let a = ctx
            .call(
                &p.group,
                Method::PUT,
                &topic_path(topic),
                body,
                Duration::ZERO,
            )
            .await?;
        if !a.ok() {
            return Ok(a.into_response());
        }
        last = a.json();
    }
    ctx.routes.note_parts(topic, &plan);
    tracing::info!(topic, parts = %describe(&plan), "topic spread over broker groups");
    Ok(axum::Json(merged(topic, &last, &plan, None)).into_response())
}

/// The topic as one: `part`'s settings, the whole queue space, every group's slice.
fn merged(topic: &str, part: &Value, plan: &[Part], stats: Option<Vec<Value>>) -> Value {
    let mut t = json!({
        "name": topic,
        "queues": plan.last().map_or(0, Part::end),
        "fifo": part["fifo"],
        "retention_ms": part["retention_ms"],
        "dedup_window_ms": part["dedup_window_ms"],
        "groups": plan.iter().map(|p| json!({
            "group": p.group, "first_queue": p.first, "queues": p.count,
        })).collect::<Vec<_>>(),
    });
    if let Some(stats) = stats {
        t["queue_stats"] = Value::Array(stats);
    }
    t
}

/// `GET /v1/topics/{t}`: every part asked, its queue bounds joined in queue order.
pub(super) async fn get(ctx: &Ctx<'_>, layout: &Layout) -> Result<Response, ApiError> {
    let answers = ctx
        .call_all(layout, Method::GET, &topic_path(ctx.topic), Bytes::new())
        .await?;
    let mut stats = Vec::new();
    let mut first = Value::Null;
    for a in answers {
        if !a.ok() {
            return Ok(a.into_response());
        }
        let t = a.json();
        stats.extend(t["queue_stats"].as_array().cloned().unwrap_or_default());
        if first.is_null() {
            first = t;
        }
    }
    Ok(axum::Json(merged(ctx.topic, &first, &layout.parts, Some(stats))).into_response())
}

/// `DELETE /v1/topics/{t}`: every part deleted.
pub(super) async fn delete(
    ctx: &Ctx<'_>,
    layout: &Layout,
    path: &str,
) -> Result<Response, ApiError> {
    let answers = ctx
        .call_all(layout, Method::DELETE, path, Bytes::new())
        .await?;
    if let Some(failed) = answers.into_iter().find(|a| !a.ok()) {
        return Ok(failed.into_response());
    }
    Ok(axum::Json(json!({ "deleted": ctx.topic })).into_response())
}

/// `GET /v1/topics` on a node with routes: every broker group's topics, a spread topic
/// once (its whole queue space and its parts), each with the groups holding it. A group
/// that does not answer is named in `unreachable_groups` (its whole topics are missing).
pub(crate) async fn list(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let groups = ctx.routes.group_names();
    let calls = groups
        .iter()
        .map(|g| ctx.call(g, Method::GET, "/v1/topics", Bytes::new(), Duration::ZERO));
    let answers = futures::future::join_all(calls).await;
    let mut topics: std::collections::BTreeMap<String, Value> = Default::default();
    let mut unreachable = Vec::new();
    for (g, a) in groups.iter().zip(answers) {
        let a = match a {
            Ok(a) if a.ok() => a,
            _ => {
                unreachable.push(g.clone());
                continue;
            }
        };
        for t in a.json()["topics"].as_array().into_iter().flatten() {
            let Some(name) = t["name"].as_str() else {
                continue;
            };
            let first = t["first_queue"].as_u64().unwrap_or(0);
            let end = t["queues"].as_u64().unwrap_or(0);
            let space = t["queue_space"].as_u64().unwrap_or(end);
            let part = json!({"group": g, "first_queue": first, "queues": end - first});
            let entry = topics.entry(name.to_owned()).or_insert_with(|| {
                let mut e = t.clone();
                if let Some(o) = e.as_object_mut() {
                    o.remove("first_queue");
                    o.remove("queue_space");
                    o.insert("groups".into(), json!([]));
                }
                e
            });
            let queues = entry["queues"].as_u64().unwrap_or(0).max(space);
            entry["queues"] = json!(queues);
            if let Some(parts) = entry["groups"].as_array_mut() {
                parts.push(part);
                parts.sort_by_key(|p| p["first_queue"].as_u64());
            }
        }
    }
    let mut body = json!({ "topics": topics.into_values().collect::<Vec<_>>() });
    if !unreachable.is_empty() {
        body["unreachable_groups"] = json!(unreachable);
    }
    Ok(axum::Json(body).into_response())
}
