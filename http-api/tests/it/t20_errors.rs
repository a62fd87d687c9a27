//! Bad input gets the documented 4xx, names the field, and changes nothing.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::{Node, assert_error};

async fn max_offset(n: &Node, topic: &str, queue: u32) -> u64 {
    let (_, t) = n.get(&format!("/v1/topics/{topic}")).await;
    t["queue_stats"][queue as usize]["max_offset"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_produce_requests_are_refused_and_write_nothing() {
    let n = Node::auto().await;
    n.put("/v1/topics/t", r#"{"queues": 2}"#).await;
    let p = "/v1/topics/t/messages";
    assert_error(
        &n.post(p, "{not json").await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "",
    );
    assert_error(
        &n.post(p, r#"{"messages": []}"#).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "messages",
    );
    assert_error(
        &n.post(p, r#"{"messages": [{"body": "ok"}, {"body": 5}]}"#)
            .await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "messages[1].body",
    );
    assert_error(
        &n.post(p, r#"{"messages": [{"body": "ok"}, {"key": "k"}]}"#)
            .await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "messages[1].body",
    );
    assert_error(
        &n.post(p, r#"{"messages": [{"body_base64": "%%%"}]}"#).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "messages[0].body_base64",
    );
    assert_error(
        &n.post(
            p,
            r#"{"messages": [{"body": "a"}, {"body": "b", "queue": 2}]}"#,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "messages[1].queue",
    );
    assert_error(
        &n.post(p, r#"{"messages": [{"body": "a", "queue": -1}]}"#)
            .await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "messages[0].queue",
    );
    assert_error(
        &n.post(
            p,
            r#"{"messages": [{"body": "a", "delay_ms": 5, "deliver_at_ms": 9}]}"#,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "messages[0].delay_ms",
    );
    assert_error(
        &n.post(p, r#"{"messages": [{"body": "a", "idempotency_key": 7}]}"#)
            .await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "idempotency_key",
    );
    assert_error(
        &n.post(
            p,
            r#"{"messages": [{"body": "a"}], "transaction": {"check_url": "https://127.0.0.1:1"}}"#,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "transaction.check_url",
    );
    let big = "x".repeat(70 * 1024);
    assert_error(
        &n.post(p, &json!({"messages": [{"body": big}]}).to_string())
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        "",
    );
    assert_eq!(
        max_offset(&n, "t", 0).await + max_offset(&n, "t", 1).await,
        0,
        "nothing was written"
    );
    // Unknown fields are ignored.
    let (s, _) = n
        .post(
            p,
            r#"{"messages": [{"body": "a", "extra": 1}], "also": true}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_and_missing_things() {
    let n = Node::start(Default::default()).await; // auto-create off
    assert_error(
        &n.post(
            "/v1/topics/bad.name/messages",
            r#"{"messages":[{"body":"a"}]}"#,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "topic",
    );
    assert_error(
        &n.post("/v1/topics/nope/messages", r#"{"messages":[{"body":"a"}]}"#)
            .await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
        "nope",
    );
    assert_error(
        &n.get("/v1/topics/nope/queues/0/messages").await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
        "nope",
    );
    assert_error(
        &n.get("/v1/topics/nope").await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
        "nope",
    );
    assert_error(
        &n.call(Method::DELETE, "/v1/topics/nope", "").await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
        "nope",
    );
    assert_error(
        &n.get("/v1/messages/g1.999.0").await,
        StatusCode::NOT_FOUND,
        "MESSAGE_NOT_FOUND",
        "",
    );
    assert_error(
        &n.get("/v1/messages/zzz").await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "msg_id",
    );
    assert_error(
        &n.get("/v1/nothing/here").await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "",
    );

    n.put("/v1/topics/t", r#"{"queues": 2}"#).await;
    assert_error(
        &n.get("/v1/topics/t/queues/2/messages").await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "queue",
    );
    assert_error(
        &n.get("/v1/topics/t/queues/x/messages").await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "queue",
    );
    assert_error(
        &n.get("/v1/topics/t/queues/0/messages?max=0").await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "max",
    );
    assert_error(
        &n.get("/v1/topics/t/queues/0/messages?max=5000").await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "max",
    );
    assert_error(
        &n.get("/v1/topics/t/queues/0/messages?offset=-3").await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "offset",
    );
    assert_error(
        &n.get("/v1/topics/t/queues/0/messages?wait_ms=999999").await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "wait_ms",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_route_is_mounted_and_refuses_a_body_that_does_not_decode() {
    let n = Node::auto().await;
    for rpc in raftmq_raft::PeerRpc::ALL {
        let (status, body) = n.post(rpc.path(), "x").await;
        // The clock takes no body: it answers whatever it is sent. The others refuse "x".
        let expected = if rpc == raftmq_raft::PeerRpc::Clock {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(status, expected, "{}: {body}", rpc.path());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_no_log_entry_can_hold_is_413_and_the_node_lives_on() {
    // A node configured past the safe limit (the binary refuses such a setting at start).
    let n = Node::start(raftmq_http_api::ApiConfig {
        auto_create_topics: true,
        max_request_bytes: 80 << 20,
        ..raftmq_http_api::ApiConfig::default()
    })
    .await;
    let body = format!(
        r#"{{"messages": [{{"body": "{}"}}]}}"#,
        "x".repeat(70 << 20)
    );
    assert_error(
        &n.post("/v1/topics/t/messages", &body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        "messages",
    );
    let (status, _) = n.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "Raft is still running");
    let (status, _) = n
        .post(
            "/v1/topics/t/messages",
            r#"{"messages": [{"body": "small"}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_raft_stopped_is_not_ready_and_claims_no_leader() {
    let n = Node::auto().await;
    let (status, c) = n.get("/v1/cluster").await;
    assert_eq!((status, c["leader_id"].as_u64()), (StatusCode::OK, Some(1)));
    n.broker.shutdown().await;
    let (status, _) = n.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (_, c) = n.get("/v1/cluster").await;
    assert!(c["leader_id"].is_null(), "{c}");
    assert_error(
        &n.post("/v1/topics/t/messages", r#"{"messages": [{"body": "x"}]}"#)
            .await,
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_is_one_json_object_and_nothing_else() {
    let n = Node::auto().await;
    n.put("/v1/topics/t", r#"{"queues": 1}"#).await;
    let p = "/v1/topics/t/messages";
    for body in [
        r#"{"messages":[{"body":"first"}]}{"messages":[{"body":"second"}]}"#,
        r#"{"messages":[{"body":"first"}]} garbage"#,
        r#"[[["arr",null,"k"]]]"#,
        r#"{"messages": [["a body in an array", null]]}"#,
    ] {
        let (status, v) = n.post(p, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["error"]["code"], "INVALID_ARGUMENT", "{body}");
    }
    assert_eq!(max_offset(&n, "t", 0).await, 0, "nothing was written");
    let (status, _) = n.put("/v1/topics/u", r#"{"queues":2} garbage"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = n.get("/v1/topics/u").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_parameter_is_checked_and_every_error_has_the_body() {
    let n = Node::auto().await;
    n.put("/v1/topics/t", r#"{"queues": 1}"#).await;
    for (uri, field) in [
        ("/v1/topics/t/messages?key=k&max=0", "max"),
        ("/v1/topics/t/messages?key=k&to_ms=banana", "to_ms"),
        ("/v1/topics/t/messages?key=k&from_ms=9&to_ms=1", "to_ms"),
    ] {
        assert_error(
            &n.get(uri).await,
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            field,
        );
    }
    let (status, v) = n.get("/v1/topics/%FF%FE/messages?key=k").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "INVALID_ARGUMENT");
    let (status, v) = n.call(Method::DELETE, "/v1/topics/t/messages", "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    assert_eq!(v["error"]["code"], "METHOD_NOT_ALLOWED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_offset_must_exist_and_the_group_then_does() {
    let n = Node::auto().await;
    n.put("/v1/topics/t", r#"{"queues": 1}"#).await;
    n.post("/v1/topics/t/messages", r#"{"messages": [{"body": "a"}]}"#)
        .await;
    assert_error(
        &n.put(
            "/v1/groups/g/offsets",
            r#"{"topic": "t", "offsets": [{"queue": 0, "offset": 18446744073709551615}]}"#,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "offsets",
    );
    let (status, v) = n
        .put(
            "/v1/groups/g/offsets",
            r#"{"topic": "t", "offsets": [{"queue": 0, "offset": 1}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = n.get("/v1/groups/g").await;
    assert_eq!(status, StatusCode::OK, "a group with offsets exists: {v}");
    assert_eq!(v["queues"][0]["committed"], 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_uri_or_header_set_gets_the_error_body() {
    let n = Node::auto().await;
    let long = format!("/v1/topics/t/messages?key={}", "k".repeat(20_000));
    let (status, v) = n.get(&long).await;
    assert_eq!(status, StatusCode::URI_TOO_LONG, "{v}");
    assert_eq!(v["error"]["code"], "URI_TOO_LONG");
    let req = axum::http::Request::builder()
        .uri("/v1/topics")
        .header("x-big", "v".repeat(70_000))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(n.router.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}
