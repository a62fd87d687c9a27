//! Scheduled messages: `delay_ms` / `deliver_at_ms` hide a message until its time, then it
//! appears at the tail of its queue with the next offset; bad times are refused by field.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{Node, assert_error};

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Long-polls queue 0 of `topic` from `offset` until a message comes (generous deadline).
async fn next_message(n: &Node, topic: &str, offset: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (s, r) = n
            .get(&format!(
                "/v1/topics/{topic}/queues/0/messages?offset={offset}&max=1&wait_ms=5000"
            ))
            .await;
        assert_eq!(s, StatusCode::OK, "{r}");
        if let Some(m) = r["messages"].as_array().unwrap().first() {
            return m.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing at offset {offset}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_message_appears_at_its_time_with_the_next_offset() {
    let n = Node::auto().await;
    let (s, t) = n.put("/v1/topics/later", r#"{"queues": 1}"#).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let at = wall_ms() + 1_500;
    let (s, v) = n
        .post(
            "/v1/topics/later/messages",
            &json!({"messages": [
                {"body": "now"},
                {"body": "second", "delay_ms": 3_000, "key": "k-late"},
                {"body": "first", "deliver_at_ms": at, "tag": "t1"},
            ]})
            .to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results[0]["offset"], 0);
    assert_eq!(results[1]["offset"], Value::Null, "no offset until due");
    assert_eq!(results[2]["offset"], Value::Null);
    let late_id = results[1]["msg_id"].as_str().unwrap();

    // Before its time it is nowhere: not in the queue, not by id, not by key.
    let (_, r) = n.get("/v1/topics/later/queues/0/messages?offset=0").await;
    let bodies: Vec<_> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(bodies, [json!("now")]);
    assert_eq!(r["max_offset"], 1);
    let (s, _) = n.get(&format!("/v1/messages/{late_id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, by_key) = n.get("/v1/topics/later/messages?key=k-late").await;
    assert_eq!(by_key["messages"], json!([]));

    // Then in due order, each with the next offset, never before its time (group time is
    // this node's clock anchored to its monotonic clock: allow a few ms of drift).
    let first = next_message(&n, "later", 1).await;
    assert!(wall_ms() + 50 >= at, "read before its time");
    assert_eq!(first["body"], "first");
    assert_eq!(first["offset"], 1);
    assert_eq!(first["deliver_at_ms"], at);
    assert_eq!(first["tag"], "t1");
    let second = next_message(&n, "later", 2).await;
    assert_eq!(second["body"], "second");
    assert_eq!(second["offset"], 2);
    assert!(wall_ms() + 50 >= second["deliver_at_ms"].as_u64().unwrap());

    // Found by id and key once due; a message produced now comes after them.
    let (s, m) = n.get(&format!("/v1/messages/{late_id}")).await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["offset"], 2);
    let (_, by_key) = n.get("/v1/topics/later/messages?key=k-late").await;
    assert_eq!(by_key["messages"][0]["body"], "second");
    let (_, v) = n
        .post(
            "/v1/topics/later/messages",
            r#"{"messages": [{"body": "after"}]}"#,
        )
        .await;
    assert_eq!(v["results"][0]["offset"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_message_reaches_a_consumer_group_only_when_due() {
    let n = Node::auto().await;
    let (s, t) = n.put("/v1/topics/later", r#"{"queues": 1}"#).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let (s, v) = n
        .post(
            "/v1/topics/later/messages",
            r#"{"messages": [{"body": "x", "delay_ms": 1500}]}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, r) = n
        .post(
            "/v1/groups/g/topics/later/receive",
            r#"{"consumer": "c", "max": 10}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["messages"], json!([]), "not before its time");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (s, r) = n
            .post(
                "/v1/groups/g/topics/later/receive",
                r#"{"consumer": "c", "max": 10, "wait_ms": 5000}"#,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{r}");
        if let Some(m) = r["messages"].as_array().unwrap().first() {
            assert_eq!(m["body"], "x");
            assert_eq!(m["msg_id"], v["results"][0]["msg_id"]);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never delivered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_by_field() {
    let n = Node::auto().await;
    let (s, t) = n
        .put(
            "/v1/topics/short",
            r#"{"queues": 1, "retention_ms": 60000}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let send = |m: Value| {
        let body = json!({ "messages": [{"body": "ok"}, m] }).to_string();
        let n = &n;
        async move { n.post("/v1/topics/short/messages", &body).await }
    };
    let past = wall_ms() - 3_600_000;
    assert_error(
        &send(json!({"body": "x", "deliver_at_ms": past})).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "messages[1].deliver_at_ms",
    );
    assert_error(
        &send(json!({"body": "x", "deliver_at_ms": wall_ms() + 120_000})).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "retention",
    );
    assert_error(
        &send(json!({"body": "x", "delay_ms": 60_001})).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "messages[1].delay_ms",
    );
    assert_error(
        &send(json!({"body": "x", "delay_ms": 10, "deliver_at_ms": wall_ms() + 10})).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "not both",
    );
    assert_error(
        &send(json!({"body": "x", "delay_ms": -5})).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "",
    );
    // The batch is atomic: nothing of the refused requests was written.
    let (_, r) = n.get("/v1/topics/short/queues/0/messages?offset=0").await;
    assert_eq!(r["max_offset"], 0);
    // A time just past (the producer's clock a little behind) and a zero delay are "now".
    let (s, v) = send(json!({"body": "x", "deliver_at_ms": wall_ms() - 10})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"][1]["offset"], 1);
    let (s, v) = send(json!({"body": "x", "delay_ms": 0})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"][1]["offset"], 3);
}

/// A retry of an idempotency key of a scheduled message answers the original (no offset)
/// and schedules nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_of_a_scheduled_message_schedules_it_once() {
    let n = Node::auto().await;
    let (s, t) = n.put("/v1/topics/later", r#"{"queues": 1}"#).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let body = r#"{"messages": [{"body": "x", "delay_ms": 500, "idempotency_key": "once"}]}"#;
    let (_, first) = n.post("/v1/topics/later/messages", body).await;
    let (_, again) = n.post("/v1/topics/later/messages", body).await;
    assert_eq!(first, again);
    assert_eq!(first["results"][0]["offset"], Value::Null);
    let m = next_message(&n, "later", 0).await;
    assert_eq!(m["msg_id"], first["results"][0]["msg_id"]);
    let (_, after) = n.post("/v1/topics/later/messages", body).await;
    assert_eq!(after, first, "still the original result");
    let (_, v) = n
        .post(
            "/v1/topics/later/messages",
            r#"{"messages": [{"body": "y"}]}"#,
        )
        .await;
    assert_eq!(v["results"][0]["offset"], 1, "scheduled once");
}
