//! Consumer-group admin over several broker groups: a consumer group's state lives in every
//! broker group holding a topic it consumes (its progress there) and in its coordinator
//! (its consumers), so its settings go to every broker group and its views are joined
//! from all of them.
//!
//! Must never: answer a settings change as made when a broker group refused it (a group
//! left with the old retry backoff would hold messages back for hours).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::{Answer, Ctx, error_answer};
use crate::error::ApiError;

/// The same request to every broker group the routes know, answers in group order.
async fn to_every_group(ctx: &Ctx<'_>, method: Method, path: &str, body: &Bytes) -> Vec<Answer> {
    let groups = ctx.routes.group_names();
    let calls = groups.iter().map(|g| {
        let (method, body) = (method.clone(), body.clone());
        async move {
            ctx.call(g, method, path, body, Duration::ZERO)
                .await
                .unwrap_or_else(error_answer)
        }
    });
    futures::future::join_all(calls).await
}

/// `PUT /v1/groups/{g}`: set in every broker group.
pub(super) async fn put(ctx: &Ctx<'_>, path: &str, body: &Bytes) -> Result<Response, ApiError> {
    let mut answers = to_every_group(ctx, Method::PUT, path, body).await;
    if let Some(at) = answers.iter().position(|a| !a.ok()) {
        return Ok(answers.swap_remove(at).into_response());
    }
    answers
        .into_iter()
        .next()
        .map(IntoResponse::into_response)
        .ok_or_else(|| ApiError::unavailable("no broker group is known yet; retry"))
}

/// `GET /v1/groups/{g}`: every broker group's view joined: its queues in each group, its
/// consumers (kept by its coordinator), in-flight and dead-letter counts summed.
pub(super) async fn get(ctx: &Ctx<'_>, path: &str) -> Result<Response, ApiError> {
    let answers = to_every_group(ctx, Method::GET, path, &Bytes::new()).await;
    let mut joined: Option<Value> = None;
    let mut not_found = None;
    for a in answers {
        if a.status == StatusCode::NOT_FOUND {
            not_found.get_or_insert(a);
            continue;
        }
        if !a.ok() {
            return Ok(a.into_response());
        }
        let v = a.json();
        let Some(j) = joined.as_mut() else {
            joined = Some(v);
            continue;
        };
        for list in ["queues", "consumers", "topics"] {
            if let (Some(all), Some(more)) = (j[list].as_array_mut(), v[list].as_array()) {
                all.extend(more.iter().cloned());
            }
        }
        for count in ["in_flight", "dlq_depth"] {
            let sum = j[count].as_u64().unwrap_or(0) + v[count].as_u64().unwrap_or(0);
            j[count] = json!(sum);
        }
    }
    let Some(mut j) = joined else {
        return Ok(match not_found {
            Some(a) => a.into_response(),
            None => ApiError::unavailable("no broker group is known yet; retry").into_response(),
        });
    };
    if let Some(q) = j["queues"].as_array_mut() {
        q.sort_by_key(|r| (r["topic"].as_str().map(str::to_owned), r["queue"].as_u64()));
    }
    for list in ["topics", "consumers"] {
        if let Some(items) = j[list].as_array_mut() {
            let mut seen = BTreeMap::new();
            for it in items.drain(..) {
                let key = it.get("consumer").unwrap_or(&it).to_string();
                seen.entry(key).or_insert(it);
            }
            *items = seen.into_values().collect();
        }
    }
    Ok(axum::Json(j).into_response())
}

/// `GET /v1/groups`: every broker group's consumer groups, each once.
pub(super) async fn list(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let answers = to_every_group(ctx, Method::GET, "/v1/groups", &Bytes::new()).await;
    let mut groups = BTreeMap::new();
    for a in answers {
        if !a.ok() {
            return Ok(a.into_response());
        }
        for g in a.json()["groups"].as_array().into_iter().flatten() {
            if let Some(name) = g["name"].as_str() {
                groups.entry(name.to_owned()).or_insert_with(|| g.clone());
            }
        }
    }
    Ok(axum::Json(json!({ "groups": groups.into_values().collect::<Vec<_>>() })).into_response())
}
