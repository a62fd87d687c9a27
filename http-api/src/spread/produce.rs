//! Producing to a spread topic: each message placed in the whole queue space, each
//! group's messages sent to it as one batch.
//!
//! Must never: send a group a message of a queue it does not hold, or answer a batch as
//! written when a group's part of it failed.

use std::time::Duration;

use axum::http::Method;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use raftmq_raft::queue_for_key;
use serde_json::{Value, json};

use super::{Ctx, describe, error_answer, json_body, next_turn};
use crate::error::ApiError;
use crate::routing::{Layout, Part};

/// Which part each message goes to (its index in the layout), and the queue of those that
/// name one: their own `queue`, else by `key`, else by `idempotency_key` (so a retry meets
/// the group that remembers the key). The others all go to one part, the next in turn,
/// whose leader spreads them over its own queues: a batch of such messages then stays in
/// one group and so atomic as a whole. A transaction's messages must share one group.
fn place(
    layout: &Layout,
    topic: &str,
    msgs: &[Value],
    txn: bool,
) -> Result<Vec<(usize, Option<u32>)>, ApiError> {
    let total = layout.total();
    let part_index = |q: u32| {
        layout
            .index_of(q)
            .ok_or_else(|| ApiError::internal(format!("queue {q} outside the layout")))
    };
    let mut named = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let q = match m.get("queue").filter(|q| !q.is_null()) {
            Some(q) => Some(
                q.as_u64()
                    .filter(|q| *q < u64::from(total))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            &format!("messages[{i}].queue"),
                            format!("must be a queue of topic {topic}: 0 to {}", total - 1),
                        )
                    })? as u32,
            ),
            None => ["key", "idempotency_key"]
                .iter()
                .find_map(|f| m.get(*f).and_then(Value::as_str))
                .map(|k| queue_for_key(k, total)),
        };
        named.push(q);
    }
    // A transaction's free messages join its first named one's group.
    let free_part = match named.iter().flatten().next() {
        Some(&q) if txn => part_index(q)?,
        _ => next_turn() as usize % layout.parts.len(),
    };
    let mut out = Vec::with_capacity(named.len());
    for (i, q) in named.into_iter().enumerate() {
        let at = match q {
            Some(q) => part_index(q)?,
            None => free_part,
        };
        if txn && at != free_part {
            return Err(ApiError::invalid(
                &format!("messages[{i}]"),
                format!(
                    "a transaction's messages must all be in one broker group's queues; topic {topic} spreads them as {}",
                    describe(&layout.parts)
                ),
            ));
        }
        out.push((at, q));
    }
    Ok(out)
}

/// `POST /v1/topics/{t}/messages`: each message placed in the queue space, each group's
/// messages sent to it as one batch (atomic there), the results put back in request order;
/// a group whose batch failed gives each of its messages that error.
pub(super) async fn produce(
    ctx: &Ctx<'_>,
    layout: &Layout,
    path: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let mut req: Value = json_body(body)?;
    let txn = req.get("transaction").is_some_and(|t| !t.is_null());
    let Some(msgs) = req.get_mut("messages").and_then(Value::as_array_mut) else {
        return Err(ApiError::invalid(
            "messages",
            "is required: a list of messages",
        ));
    };
    let placed = place(layout, ctx.topic, msgs, txn)?;
    // Per part (in part order): the request indexes of its messages.
    let mut shares: Vec<(&Part, Vec<usize>)> = layout.parts.iter().map(|p| (p, vec![])).collect();
    for (i, (m, (at, q))) in msgs.iter_mut().zip(&placed).enumerate() {
        if let (Some(obj), Some(q)) = (m.as_object_mut(), q) {
            obj.insert("queue".into(), json!(q));
        }
        shares[*at].1.push(i);
    }
    shares.retain(|(_, idx)| !idx.is_empty());
    let all = std::mem::take(msgs);
    if let [(part, _)] = shares.as_slice() {
        req["messages"] = Value::Array(all);
        let body = Bytes::from(serde_json::to_vec(&req).map_err(ApiError::internal)?);
        return ctx
            .pass(&part.group, Method::POST, path, body, Duration::ZERO)
            .await;
    }
    let calls = shares.iter().map(|(part, idx)| {
        let mut share = req.clone();
        share["messages"] = Value::Array(idx.iter().map(|&i| all[i].clone()).collect());
        let body = serde_json::to_vec(&share).map(Bytes::from);
        async move {
            let body = body.map_err(ApiError::internal)?;
            ctx.call(&part.group, Method::POST, path, body, Duration::ZERO)
                .await
        }
    });
    let answers = futures::future::join_all(calls).await;
    let mut results = vec![Value::Null; all.len()];
    let mut failed = None;
    let mut any_ok = false;
    for ((_, idx), answer) in shares.iter().zip(answers) {
        let answer = match answer {
            Ok(a) => a,
            Err(e) => error_answer(e),
        };
        if answer.ok() {
            any_ok = true;
            let got = answer.json();
            let got = got["results"].as_array().cloned().unwrap_or_default();
            for (&i, r) in idx.iter().zip(got) {
                results[i] = r;
            }
        } else {
            let e = answer.error();
            for &i in idx {
                results[i] = json!({ "error": e });
            }
            failed.get_or_insert(answer);
        }
    }
    match failed {
        Some(a) if !any_ok => Ok(a.into_response()),
        _ => Ok(axum::Json(json!({"results": results})).into_response()),
    }
}
