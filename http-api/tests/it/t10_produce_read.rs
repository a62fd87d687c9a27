//! Produce and read back: queue choice, bodies, long polls, tag filters, queries.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;

use crate::support::Node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_read_back_exactly() {
    let n = Node::auto().await;
    let (s, v) = n
        .post(
            "/v1/topics/orders/messages",
            &json!({"messages": [
                {"body": "hello", "key": "order-42", "tag": "paid", "properties": {"region": "eu"}},
                {"body_base64": "AAEC", "queue": 3},
                {"body": "again", "key": "order-42"},
            ]})
            .to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[1]["queue"], 3);
    assert_eq!(
        results[0]["queue"], results[2]["queue"],
        "same key, same queue"
    );
    assert_eq!(
        results[2]["offset"].as_u64().unwrap(),
        results[0]["offset"].as_u64().unwrap() + 1
    );

    let q = results[0]["queue"].as_u64().unwrap();
    let (s, r) = n
        .get(&format!("/v1/topics/orders/queues/{q}/messages?offset=0"))
        .await;
    assert_eq!(s, StatusCode::OK);
    let msgs = r["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["body"], "hello");
    assert_eq!(msgs[0]["key"], "order-42");
    assert_eq!(msgs[0]["tag"], "paid");
    assert_eq!(msgs[0]["properties"]["region"], "eu");
    assert_eq!(msgs[0]["msg_id"], results[0]["msg_id"]);
    assert_eq!(r["next_offset"], 2);
    assert_eq!(r["max_offset"], 2);

    let (_, r) = n.get("/v1/topics/orders/queues/3/messages?offset=0").await;
    assert_eq!(
        r["messages"][0]["body_base64"], "AAEC",
        "binary bodies come back as base64"
    );
    assert!(r["messages"][0].get("body").is_none());

    let id = results[0]["msg_id"].as_str().unwrap();
    let (s, m) = n.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["body"], "hello");
    assert_eq!(m["offset"], 0);

    let (_, by_key) = n.get("/v1/topics/orders/messages?key=order-42").await;
    let bodies: Vec<_> = by_key["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(bodies, [json!("again"), json!("hello")], "newest first");

    let (_, by_time) = n
        .get("/v1/topics/orders/messages?from_ms=0&to_ms=99999999999999")
        .await;
    assert_eq!(by_time["messages"].as_array().unwrap().len(), 3);
}

/// A retry with the same idempotency key answers the first write and writes nothing, also
/// inside one request and when concurrent retries share an entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_make_retries_return_the_first_result() {
    let n = std::sync::Arc::new(Node::auto().await);
    let (s, t) = n.put("/v1/topics/once", r#"{"queues": 2}"#).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let node = n.clone();
    let send = move |msgs: serde_json::Value| {
        let n = node.clone();
        async move {
            let (s, v) = n
                .post(
                    "/v1/topics/once/messages",
                    &json!({ "messages": msgs }).to_string(),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v["results"].as_array().unwrap().clone()
        }
    };
    let first = send(json!([{"body": "a", "idempotency_key": "k1"}])).await;
    let again = send(json!([{"body": "a (retry)", "idempotency_key": "k1"}])).await;
    assert_eq!(first, again, "the original result");
    // Message by message: k1 is a retry, k2 is new; a key twice in one request is one write.
    let mixed = send(json!([
        {"body": "a", "idempotency_key": "k1"},
        {"body": "b", "idempotency_key": "k2"},
        {"body": "b", "idempotency_key": "k2"},
        {"body": "no key"},
    ]))
    .await;
    assert_eq!(mixed[0], first[0]);
    assert_eq!(mixed[1], mixed[2]);
    assert_ne!(mixed[1]["msg_id"], first[0]["msg_id"]);
    // Concurrent retries of one key, joined into shared entries: one write.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let send = send.clone();
        tasks.spawn(async move { send(json!([{"body": "c", "idempotency_key": "k3"}])).await });
    }
    let mut results = std::collections::HashSet::new();
    while let Some(r) = tasks.join_next().await {
        results.insert(r.unwrap()[0].to_string());
    }
    assert_eq!(results.len(), 1, "{results:?}");
    let (_, t) = n.get("/v1/topics/once").await;
    let stored: u64 = t["queue_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["max_offset"].as_u64().unwrap())
        .sum();
    assert_eq!(stored, 4, "a, b, no key, c: {t}");
    let id = first[0]["msg_id"].as_str().unwrap();
    let (_, m) = n.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(m["body"], "a", "the id finds the first write");
    // The window is a topic setting: a key kept for 1 ms is new again soon after.
    assert_eq!(t["dedup_window_ms"], 600_000);
    let (s, t) = n
        .put("/v1/topics/brief", r#"{"queues": 1, "dedup_window_ms": 1}"#)
        .await;
    assert_eq!(
        (s, &t["dedup_window_ms"]),
        (StatusCode::OK, &json!(1)),
        "{t}"
    );
    let brief = |n: std::sync::Arc<Node>| async move {
        let body = json!({"messages": [{"body": "x", "idempotency_key": "k"}]}).to_string();
        let (s, v) = n.post("/v1/topics/brief/messages", &body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["results"][0]["offset"].clone()
    };
    assert_eq!(brief(n.clone()).await, 0);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(brief(n.clone()).await, 1, "written again after its window");
    crate::support::assert_error(
        &n.put("/v1/topics/brief", r#"{"dedup_window_ms": 0}"#).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "dedup_window_ms",
    );
    for key in ["", &"k".repeat(257)] {
        crate::support::assert_error(
            &n.post(
                "/v1/topics/once/messages",
                &json!({"messages": [{"body": "x", "idempotency_key": key}]}).to_string(),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "messages[0].idempotency_key",
        );
    }
}

/// Concurrent requests for one topic share Raft entries on the leader; each still gets its
/// own messages back, as one contiguous run of its queue, and ids that find them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_produce_requests_share_entries_and_keep_their_runs() {
    let n = std::sync::Arc::new(Node::auto().await);
    let (s, t) = n.put("/v1/topics/joined", r#"{"queues": 2}"#).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let before = n.broker.node_stats().produce_entries;
    let requests = 200;
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..requests {
        let n = n.clone();
        tasks.spawn(async move {
            let messages: Vec<_> = (0..3)
                .map(|m| json!({"body": format!("r{r}-m{m}"), "queue": 1}))
                .collect();
            let body = json!({ "messages": messages }).to_string();
            let (s, v) = n.post("/v1/topics/joined/messages", &body).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            (r, v["results"].as_array().unwrap().clone())
        });
    }
    let mut ids = std::collections::HashSet::new();
    let mut offsets = std::collections::HashSet::new();
    while let Some(done) = tasks.join_next().await {
        let (r, results) = done.unwrap();
        assert_eq!(results.len(), 3);
        let first = results[0]["offset"].as_u64().unwrap();
        for (m, res) in results.iter().enumerate() {
            assert_eq!(res["queue"], 1);
            assert_eq!(
                res["offset"].as_u64().unwrap(),
                first + m as u64,
                "request {r}: its messages are one run of the queue, in order"
            );
            assert!(offsets.insert(first + m as u64));
            let id = res["msg_id"].as_str().unwrap().to_owned();
            let (s, got) = n.get(&format!("/v1/messages/{id}")).await;
            assert_eq!(s, StatusCode::OK, "{got}");
            assert_eq!(
                got["body"],
                format!("r{r}-m{m}"),
                "{id} finds its own message"
            );
            assert!(ids.insert(id));
        }
    }
    assert_eq!(offsets.len(), 3 * requests);
    assert_eq!(
        offsets.iter().max().copied(),
        Some(3 * requests as u64 - 1),
        "no gap"
    );
    let entries = n.broker.node_stats().produce_entries - before;
    assert!(
        entries < requests as u64,
        "{requests} concurrent requests took {entries} entries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_keyless_messages() {
    let n = Node::auto().await;
    let (_, v) = n
        .post(
            "/v1/topics/rr/messages",
            &json!({"messages": [{"body": "a"}, {"body": "b"}, {"body": "c"}, {"body": "d"}]})
                .to_string(),
        )
        .await;
    let mut queues: Vec<u64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["queue"].as_u64().unwrap())
        .collect();
    queues.sort();
    assert_eq!(queues, [0, 1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_a_new_message_and_times_out_empty() {
    let n = Node::auto().await;
    n.put("/v1/topics/lp", r#"{"queues": 1}"#).await;
    let start = Instant::now();
    let (s, r) = n
        .get("/v1/topics/lp/queues/0/messages?offset=0&wait_ms=300")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(r["messages"].as_array().unwrap().is_empty());
    assert!(start.elapsed() >= Duration::from_millis(300));

    let router = n.router.clone();
    let waiter = tokio::spawn(async move {
        let req =
            axum::http::Request::get("/v1/topics/lp/queues/0/messages?offset=0&wait_ms=20000")
                .body(axum::body::Body::empty())
                .unwrap();
        let resp = tower::ServiceExt::oneshot(router, req).await.unwrap();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    n.post(
        "/v1/topics/lp/messages",
        r#"{"messages":[{"body":"wake"}]}"#,
    )
    .await;
    let r = tokio::time::timeout(Duration::from_secs(15), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r["messages"][0]["body"], "wake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_filter_returns_only_matching_messages_and_advances() {
    let n = Node::auto().await;
    n.put("/v1/topics/tags", r#"{"queues": 1}"#).await;
    let msgs: Vec<_> = (0..10)
        .map(|i| json!({"body": format!("m{i}"), "tag": if i % 3 == 0 { "a" } else { "b" }}))
        .collect();
    n.post(
        "/v1/topics/tags/messages",
        &json!({"messages": msgs}).to_string(),
    )
    .await;
    let (_, r) = n
        .get("/v1/topics/tags/queues/0/messages?offset=0&tag=a")
        .await;
    let bodies: Vec<_> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bodies, ["m0", "m3", "m6", "m9"]);
    let (_, r) = n
        .get("/v1/topics/tags/queues/0/messages?offset=0&tag=a||c&max=2")
        .await;
    assert_eq!(r["messages"].as_array().unwrap().len(), 2);
    assert_eq!(r["next_offset"], 4);
    let (_, r) = n
        .get("/v1/topics/tags/queues/0/messages?offset=0&tag=*")
        .await;
    assert_eq!(r["messages"].as_array().unwrap().len(), 10);
}
