//! Topic admin and the cluster, health and metrics endpoints on one node.

use axum::http::{Method, StatusCode};

use crate::support::{Node, assert_error};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_grown_listed_and_deleted() {
    let n = Node::start(Default::default()).await;
    let (s, t) = n
        .put(
            "/v1/topics/t",
            r#"{"queues": 2, "fifo": true, "retention_ms": 1000}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(
        (t["queues"].as_u64(), t["fifo"].as_bool()),
        (Some(2), Some(true))
    );
    let produce_to = |queue: u32| format!(r#"{{"messages":[{{"body":"x","queue":{queue}}}]}}"#);
    // Producing reads the topic's settings (cached); every change is seen at once.
    assert_error(
        &n.post("/v1/topics/t/messages", &produce_to(3)).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "out of range",
    );
    let (s, t) = n.put("/v1/topics/t", r#"{"queues": 4}"#).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(t["queues"], 4);
    let (s, v) = n.post("/v1/topics/t/messages", &produce_to(3)).await;
    assert_eq!(s, StatusCode::OK, "the grown queue takes messages: {v}");
    assert_eq!(t["fifo"], true, "unspecified settings are kept");
    assert_error(
        &n.put("/v1/topics/t", r#"{"queues": 3}"#).await,
        StatusCode::CONFLICT,
        "CONFLICT",
        "only grow",
    );
    assert_error(
        &n.put("/v1/topics/t", r#"{"groups": ["g1", "g2"]}"#).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "NameServer",
    );
    assert_error(
        &n.put("/v1/topics/t", r#"{"queues": 0}"#).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "queues",
    );
    assert_error(
        &n.put("/v1/topics/t", r#"{"queues": "x"}"#).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "queues",
    );
    assert_error(
        &n.put("/v1/topics/DLQ-g", "{}").await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "reserved",
    );
    assert_error(
        &n.put("/v1/topics/RETRY-g", "{}").await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "reserved",
    );
    n.put("/v1/topics/u", "").await;

    let (_, list) = n.get("/v1/topics").await;
    let names: Vec<_> = list["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["t", "u"]);
    let (_, t) = n.get("/v1/topics/t").await;
    assert_eq!(t["queue_stats"].as_array().unwrap().len(), 4);

    n.post(
        "/v1/topics/t/messages",
        r#"{"messages":[{"body":"x","queue":1}]}"#,
    )
    .await;
    let (s, _) = n.call(Method::DELETE, "/v1/topics/t", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_error(
        &n.get("/v1/topics/t").await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
        "t",
    );
    assert_error(
        &n.post("/v1/topics/t/messages", &produce_to(1)).await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
        "t",
    );
    // Re-created, it starts empty.
    n.put("/v1/topics/t", r#"{"queues": 2}"#).await;
    assert_error(
        &n.post("/v1/topics/t/messages", &produce_to(3)).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "out of range",
    );
    let (_, t) = n.get("/v1/topics/t").await;
    assert_eq!(t["queue_stats"][1]["max_offset"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_health_and_metrics() {
    let n = Node::start(Default::default()).await;
    let (s, c) = n.get("/v1/cluster").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(c["group"], "g1");
    assert_eq!(c["node_id"], 1);
    assert_eq!(c["leader_id"], 1);
    assert_eq!(c["members"][0]["role"], "leader");
    assert!(c["term"].as_u64().unwrap() >= 1);
    assert_eq!(n.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(n.get("/readyz").await.0, StatusCode::OK);
    let (s, body) = n.get("/metrics").await;
    assert_eq!(s, StatusCode::OK);
    let text = body.as_str().unwrap();
    assert!(text.contains("raftmq_raft_is_leader 1"), "{text}");
    assert!(text.contains("# TYPE raftmq_log_fsyncs_total counter"));

    assert_error(
        &n.post("/v1/cluster/members", r#"{"id": 2, "addr": "nowhere"}"#)
            .await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "addr",
    );
    assert_error(
        &n.post(
            "/v1/cluster/members",
            r#"{"id": 1, "addr": "127.0.0.1:9", "voter": true}"#,
        )
        .await,
        StatusCode::CONFLICT,
        "CONFLICT",
        "already",
    );
    assert_error(
        &n.post("/v1/cluster/leader", r#"{"to": 7}"#).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "7",
    );
    assert_error(
        &n.post("/v1/cluster/leader", r#"{}"#).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "to",
    );
    assert_error(
        &n.call(Method::DELETE, "/v1/cluster/members/9", "").await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "9",
    );
    let (s, v) = n.post("/v1/cluster/leader", r#"{"to": 1}"#).await;
    assert_eq!((s, v["leader_id"].as_u64()), (StatusCode::OK, Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_offsets_commit_and_read_back() {
    let n = Node::start(Default::default()).await;
    n.put("/v1/topics/t", r#"{"queues": 2}"#).await;
    n.post(
        "/v1/topics/t/messages",
        r#"{"messages":[{"body":"a","queue":0},{"body":"b","queue":0}]}"#,
    )
    .await;
    let (s, v) = n
        .put(
            "/v1/groups/g/offsets",
            r#"{"topic": "t", "offsets": [{"queue": 0, "offset": 1}]}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = n.get("/v1/groups/g/offsets?topic=t").await;
    assert_eq!(v["offsets"][0]["committed"], 1);
    assert_eq!(v["offsets"][0]["max_offset"], 2);
    assert_eq!(v["offsets"][0]["lag"], 1);
    assert_eq!(v["offsets"][1]["committed"], 0);
    assert_error(
        &n.put(
            "/v1/groups/g/offsets",
            r#"{"topic": "t", "offsets": [{"queue": 5, "offset": 1}]}"#,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "queue",
    );
    assert_error(
        &n.put(
            "/v1/groups/g/offsets",
            r#"{"topic": "nope", "offsets": [{"queue": 0, "offset": 1}]}"#,
        )
        .await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
        "nope",
    );
    assert_error(
        &n.get("/v1/groups/g/offsets").await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "topic",
    );
    assert_error(
        &n.get("/v1/groups/b.ad/offsets?topic=t").await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "group",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_topic_deleted_and_created_again_starts_empty_and_takes_writes() {
    let n = Node::auto().await;
    n.put("/v1/topics/big", r#"{"queues": 1024}"#).await;
    let batch: Vec<String> = (0..1000)
        .map(|i| format!(r#"{{"body": "m{i}"}}"#))
        .collect();
    let body = format!(r#"{{"messages": [{}]}}"#, batch.join(","));
    for _ in 0..10 {
        let (status, _) = n.post("/v1/topics/big/messages", &body).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = n.call(Method::DELETE, "/v1/topics/big", "").await;
    assert_eq!(status, StatusCode::OK);
    n.put("/v1/topics/big", r#"{"queues": 1024}"#).await;
    let (status, v) = n
        .post(
            "/v1/topics/big/messages",
            r#"{"messages": [{"body": "x"}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["results"][0]["offset"], 0, "offsets start over");
    let (status, t) = n.get("/v1/topics/big").await;
    assert_eq!(status, StatusCode::OK);
    let total: u64 = t["queue_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["max_offset"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 1, "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_of_the_openapi_document_is_routed() {
    let n = Node::auto().await;
    let (status, doc) = n.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{}", paths.len());
    for (path, ops) in paths {
        let concrete = path
            .replace("{topic}", "t")
            .replace("{group}", "g")
            .replace("{queue}", "0")
            .replace("{msg_id}", "g1.1.0")
            .replace("{id}", "99");
        for method in ["get", "post", "put", "delete"] {
            if ops.get(method).is_none() {
                continue;
            }
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // An empty body: whatever the answer, it must come from a route.
            let (status, v) = n.call(m, &concrete, "").await;
            let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
                || (status == StatusCode::NOT_FOUND && v["error"]["message"] == "no such endpoint");
            assert!(!unrouted, "{method} {path}: {status} {v}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id_and_a_clients_own_is_kept() {
    let n = Node::start(Default::default()).await;
    let call = |id: Option<&'static str>| {
        let mut req = axum::http::Request::builder().uri("/v1/cluster");
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        let router = n.router.clone();
        async move {
            let resp =
                tower::ServiceExt::oneshot(router, req.body(axum::body::Body::empty()).unwrap())
                    .await
                    .unwrap();
            resp.headers()
                .get("x-request-id")
                .map(|v| v.to_str().unwrap().to_owned())
        }
    };
    let (a, b) = (call(None).await.unwrap(), call(None).await.unwrap());
    assert!(!a.is_empty() && a != b, "{a} {b}");
    assert_eq!(
        call(Some("trace-me-7")).await.as_deref(),
        Some("trace-me-7")
    );
}
