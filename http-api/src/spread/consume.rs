//! Consumer groups on a spread topic: a receive drawn from every broker group holding a
//! part, acks and nacks sent to the group whose queue each receipt names.
//!
//! A receive's `max` is shared out over the parts, the first share going to each part in
//! turn, so no group starves another. The parts are asked at once and every answer is
//! kept (a share asked for is leased by then: dropping it would only delay its messages);
//! with `wait_ms`, rounds of short waits (at most [`ROUND_WAIT`]) until a part has
//! messages or the time is up, so a message that arrives in one group waits for at most
//! one round, not for the slowest group's long poll.
//!
//! Must never: lease more than `max` messages for one receive, or send a receipt to a
//! group other than the one holding its queue.

use std::time::{Duration, Instant};

use axum::http::Method;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::{Answer, Ctx, error_answer, json_body, next_turn};
use crate::error::ApiError;
use crate::routing::Layout;

/// The longest wait one round of a waiting receive asks of a part.
const ROUND_WAIT: Duration = Duration::from_millis(100);

/// How many of `max` messages each part is asked for, starting with part `turn`.
fn shares(parts: usize, max: u64, turn: usize) -> Vec<u64> {
    let k = parts as u64;
    let mut out = vec![max / k; parts];
    for i in 0..(max % k) as usize {
        out[(turn + i) % parts] += 1;
    }
    out
}

/// `POST /v1/groups/{g}/topics/{t}/receive`.
pub(super) async fn receive(
    ctx: &Ctx<'_>,
    layout: &Layout,
    path: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let req: Value = json_body(body)?;
    let max = req.get("max").and_then(Value::as_u64).unwrap_or(32);
    let wait_ms = req.get("wait_ms").and_then(Value::as_u64).unwrap_or(0);
    if max == 0 || layout.parts.len() == 1 {
        // The part validates what is wrong, and a single part needs no sharing.
        let part = &layout.parts[0];
        let wait = Duration::from_millis(wait_ms);
        return ctx
            .pass(&part.group, Method::POST, path, body.clone(), wait)
            .await;
    }
    let share = shares(
        layout.parts.len(),
        max,
        next_turn() as usize % layout.parts.len(),
    );
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let mut round_wait = Duration::ZERO;
    loop {
        let calls = layout
            .parts
            .iter()
            .zip(&share)
            .filter(|(_, n)| **n > 0)
            .map(|(p, n)| {
                let mut ask = req.clone();
                ask["max"] = json!(n);
                ask["wait_ms"] = json!(round_wait.as_millis() as u64);
                let body = Bytes::from(ask.to_string());
                async move {
                    ctx.call(&p.group, Method::POST, path, body, round_wait)
                        .await
                        .unwrap_or_else(error_answer)
                }
            });
        let answers: Vec<Answer> = futures::future::join_all(calls).await;
        let mut messages = Vec::new();
        let mut failed = None;
        let mut answered = false;
        for a in answers {
            if a.ok() {
                answered = true;
                messages.extend(a.json()["messages"].as_array().cloned().unwrap_or_default());
            } else {
                failed.get_or_insert(a);
            }
        }
        // Every part refused (a bad request, no group reachable): say why. While some
        // answer, a group that is down only takes its share out of the round.
        if let Some(a) = failed
            && !answered
        {
            return Ok(a.into_response());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if !messages.is_empty() || left.is_zero() {
            return Ok(axum::Json(json!({ "messages": messages })).into_response());
        }
        round_wait = left.min(ROUND_WAIT);
    }
}

/// `POST /v1/groups/{g}/topics/{t}/ack` (and `nack`): each receipt sent to the group
/// holding its queue (a receipt starts with its queue); the results in request order.
pub(super) async fn ack(
    ctx: &Ctx<'_>,
    layout: &Layout,
    path: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let req: Value = json_body(body)?;
    let receipts: &[Value] = req
        .get("receipts")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let mut by_part: Vec<Vec<usize>> = vec![Vec::new(); layout.parts.len()];
    for (i, r) in receipts.iter().enumerate() {
        let queue = r
            .as_str()
            .and_then(|r| r.split('-').next())
            .and_then(|q| q.parse::<u32>().ok());
        // A receipt that names no queue of the topic: the first part answers that it is
        // not valid.
        let at = queue.and_then(|q| layout.index_of(q)).unwrap_or(0);
        by_part[at].push(i);
    }
    let used: Vec<(usize, &Vec<usize>)> = by_part
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    // One group's receipts, or none to share out (the first part says what is wrong with
    // the request): sent on as they came.
    if used.len() <= 1 {
        let at = used.first().map_or(0, |u| u.0);
        let group = &layout.parts[at].group;
        return ctx
            .pass(group, Method::POST, path, body.clone(), Duration::ZERO)
            .await;
    }
    let calls = used.iter().map(|(at, idx)| {
        let mut share = req.clone();
        share["receipts"] = Value::Array(idx.iter().map(|&i| receipts[i].clone()).collect());
        let group = &layout.parts[*at].group;
        async move {
            ctx.call(
                group,
                Method::POST,
                path,
                Bytes::from(share.to_string()),
                Duration::ZERO,
            )
            .await
            .unwrap_or_else(error_answer)
        }
    });
    let answers = futures::future::join_all(calls).await;
    let mut results = vec![Value::Null; receipts.len()];
    for ((_, idx), a) in used.iter().zip(answers) {
        if a.ok() {
            let got = a.json()["results"].as_array().cloned().unwrap_or_default();
            for (&i, r) in idx.iter().zip(got) {
                results[i] = r;
            }
        } else {
            let code = a.error()["code"].clone();
            for &i in idx.iter() {
                results[i] = json!({"receipt": receipts[i], "ok": false, "code": code});
            }
        }
    }
    Ok(axum::Json(json!({ "results": results })).into_response())
}

/// `GET /v1/groups/{g}/offsets?topic=t` and `POST …/offsets/reset`: every part asked,
/// its rows (its own queues) joined in queue order.
pub(super) async fn offsets(
    ctx: &Ctx<'_>,
    layout: &Layout,
    method: Method,
    path: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let answers = ctx.call_all(layout, method, path, body.clone()).await?;
    let mut rows = Vec::new();
    for a in answers {
        if !a.ok() {
            return Ok(a.into_response());
        }
        rows.extend(a.json()["offsets"].as_array().cloned().unwrap_or_default());
    }
    Ok(axum::Json(json!({ "offsets": rows })).into_response())
}

/// `PUT /v1/groups/{g}/offsets`: each queue's offset committed in the group holding it.
pub(super) async fn commit(
    ctx: &Ctx<'_>,
    layout: &Layout,
    path: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let req: Value = json_body(body)?;
    let rows = req
        .get("offsets")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut by_part: Vec<Vec<Value>> = vec![Vec::new(); layout.parts.len()];
    for (i, row) in rows.into_iter().enumerate() {
        let q = row.get("queue").and_then(Value::as_u64);
        let at = q.and_then(|q| layout.index_of(u32::try_from(q).ok()?));
        match (q, at) {
            (_, Some(at)) => by_part[at].push(row),
            // Not a number: the first part says what is wrong with it.
            (None, None) => by_part[0].push(row),
            (Some(q), None) => {
                return Err(ApiError::invalid(
                    &format!("offsets[{i}].queue"),
                    format!(
                        "{q} is out of range (topic {} has {} queues)",
                        ctx.topic,
                        layout.total()
                    ),
                ));
            }
        }
    }
    let used: Vec<(&str, Vec<Value>)> = layout
        .parts
        .iter()
        .zip(by_part)
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(p, rows)| (p.group.as_str(), rows))
        .collect();
    if used.is_empty() {
        // No queue named: the first part says so.
        let group = &layout.parts[0].group;
        return ctx
            .pass(group, Method::PUT, path, body.clone(), Duration::ZERO)
            .await;
    }
    let mut last = None;
    for (group, rows) in used {
        let mut share = req.clone();
        share["offsets"] = Value::Array(rows);
        let body = Bytes::from(share.to_string());
        let a = ctx
            .call(group, Method::PUT, path, body, Duration::ZERO)
            .await?;
        if !a.ok() {
            return Ok(a.into_response());
        }
        last = Some(a);
    }
    Ok(last.map(IntoResponse::into_response).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::shares;

    #[test]
    fn a_receive_is_shared_out_over_parts_the_rest_going_round() {
        assert_eq!(shares(2, 32, 0), vec![16, 16]);
        assert_eq!(shares(3, 32, 0), vec![11, 11, 10]);
        assert_eq!(shares(3, 32, 2), vec![11, 10, 11]);
        assert_eq!(shares(3, 1, 1), vec![0, 1, 0]);
        assert_eq!(shares(2, 1, 1).iter().sum::<u64>(), 1);
    }
}
