//! Consumer groups: receive/ack, redelivery, dead letters, FIFO, offsets, heartbeats,
//! broadcast.

use std::collections::HashSet;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{Node, assert_error};

async fn produce(n: &Node, topic: &str, msgs: Value) {
    let (s, v) = n
        .post(
            &format!("/v1/topics/{topic}/messages"),
            &json!({"messages": msgs}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

async fn receive(n: &Node, group: &str, topic: &str, body: Value) -> Vec<Value> {
    let (s, v) = n
        .post(
            &format!("/v1/groups/{group}/topics/{topic}/receive"),
            &body.to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["messages"].as_array().unwrap().clone()
}

async fn ack(n: &Node, group: &str, topic: &str, receipts: &[Value]) -> Value {
    let (s, v) = n
        .post(
            &format!("/v1/groups/{group}/topics/{topic}/ack"),
            &json!({"receipts": receipts}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn receipts(msgs: &[Value]) -> Vec<Value> {
    msgs.iter().map(|m| m["receipt"].clone()).collect()
}

fn bodies(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_goes_to_one_consumer_and_acked_ones_never_return() {
    let n = Node::auto().await;
    n.put("/v1/topics/t", r#"{"queues": 4}"#).await;
    let msgs: Vec<Value> = (0..40).map(|i| json!({"body": format!("m{i}")})).collect();
    produce(&n, "t", json!(msgs)).await;
    let a = receive(&n, "g", "t", json!({"consumer": "c1", "max": 25})).await;
    let b = receive(&n, "g", "t", json!({"consumer": "c2", "max": 25})).await;
    assert_eq!(a.len() + b.len(), 40);
    let all: HashSet<String> = bodies(&a).into_iter().chain(bodies(&b)).collect();
    assert_eq!(all.len(), 40, "no message went to both consumers");
    assert!(
        a.iter()
            .all(|m| m["attempt"] == 1 && m["receipt"].is_string())
    );
    let r = ack(&n, "g", "t", &receipts(&a)).await;
    assert!(
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["ok"] == true)
    );
    ack(&n, "g", "t", &receipts(&b)).await;
    // Nothing is left, and nothing acked comes back.
    let again = receive(
        &n,
        "g",
        "t",
        json!({"consumer": "c1", "max": 100, "wait_ms": 300}),
    )
    .await;
    assert!(again.is_empty(), "{again:?}");
    let (_, g) = n.get("/v1/groups/g").await;
    assert_eq!(g["mode"], "clustering");
    let committed: u64 = g["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["committed"].as_u64().unwrap())
        .sum();
    assert_eq!(committed, 40, "floors moved over everything acked: {g}");
    assert_eq!(g["in_flight"], 0);
    // An ack of an unknown receipt says so.
    let r = ack(&n, "g", "t", &[json!("nonsense")]).await;
    assert_eq!(r["results"][0]["code"], "RECEIPT_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_return_after_their_lease_with_the_next_attempt() {
    let n = Node::auto().await;
    n.put("/v1/topics/t", r#"{"queues": 1}"#).await;
    produce(&n, "t", json!([{"body": "x"}])).await;
    let first = receive(&n, "g", "t", json!({"consumer": "c1", "invisible_ms": 300})).await;
    assert_eq!(first[0]["attempt"], 1);
    assert!(
        receive(&n, "g", "t", json!({"consumer": "c2"}))
            .await
            .is_empty(),
        "leased: invisible"
    );
    let second = receive(&n, "g", "t", json!({"consumer": "c2", "wait_ms": 5000})).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["attempt"], 2);
    assert_eq!(second[0]["body"], "x");
    // The first receipt is stale now.
    let r = ack(&n, "g", "t", &receipts(&first)).await;
    assert_eq!(r["results"][0]["code"], "RECEIPT_EXPIRED");
    let r = ack(&n, "g", "t", &receipts(&second)).await;
    assert_eq!(r["results"][0]["ok"], true);
    let r = ack(&n, "g", "t", &receipts(&second)).await;
    assert_eq!(r["results"][0]["ok"], true, "a repeated ack is harmless");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_messages_come_back_and_go_to_the_dlq_after_max_attempts() {
    let n = Node::auto().await;
    n.put("/v1/topics/t", r#"{"queues": 1}"#).await;
    produce(
        &n,
        "t",
        json!([{"body": "poison", "key": "k1", "properties": {"p": "v"}}, {"body": "fine"}]),
    )
    .await;
    let mut attempts = Vec::new();
    for _ in 0..16 {
        let got = receive(
            &n,
            "g",
            "t",
            json!({"consumer": "c", "max": 1, "wait_ms": 2000}),
        )
        .await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["body"], "poison");
        attempts.push(got[0]["attempt"].as_u64().unwrap());
        let (s, v) = n
            .post(
                "/v1/groups/g/topics/t/nack",
                &json!({"receipts": receipts(&got), "delay_ms": 0}).to_string(),
            )
            .await;
        assert_eq!(
            (s, v["results"][0]["ok"].as_bool()),
            (StatusCode::OK, Some(true)),
            "{v}"
        );
    }
    assert_eq!(attempts, (1..=16).collect::<Vec<u64>>());
    // The 17th receive moves it to DLQ-g and delivers the next message instead.
    let got = receive(
        &n,
        "g",
        "t",
        json!({"consumer": "c", "max": 1, "wait_ms": 2000}),
    )
    .await;
    assert_eq!(bodies(&got), ["fine"]);
    let (_, dlq) = n.get("/v1/topics/DLQ-g/queues/0/messages?offset=0").await;
    let m = &dlq["messages"][0];
    assert_eq!(m["body"], "poison");
    assert_eq!(m["topic"], "DLQ-g");
    assert_eq!(m["key"], "k1");
    assert_eq!(m["properties"]["p"], "v");
    assert_eq!(m["properties"]["ORIGIN_TOPIC"], "t");
    assert_eq!(m["properties"]["ATTEMPTS"], "16");
    let (_, g) = n.get("/v1/groups/g").await;
    assert_eq!(g["dlq_depth"], 1);
    // The dead letter keeps the original message id.
    let (_, orig) = n.get("/v1/topics/t/queues/0/messages?offset=0").await;
    assert_eq!(m["msg_id"], orig["messages"][0]["msg_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_queues_deliver_ordered_runs_and_hold_the_queue_until_the_run_is_done() {
    let n = Node::auto().await;
    n.put("/v1/topics/f", r#"{"queues": 1, "fifo": true}"#)
        .await;
    let msgs: Vec<Value> = (1..=4)
        .map(|i| json!({"body": i.to_string(), "key": "k"}))
        .collect();
    produce(&n, "f", json!(msgs)).await;
    let a = receive(
        &n,
        "g",
        "f",
        json!({"consumer": "c1", "max": 3, "invisible_ms": 300}),
    )
    .await;
    assert_eq!(bodies(&a), ["1", "2", "3"], "a run, in order, up to max");
    assert!(
        receive(&n, "g", "f", json!({"consumer": "c2", "max": 10}))
            .await
            .is_empty(),
        "the queue is held while its run is in flight"
    );
    // "2" is acked out of order; the lease of "1" and "3" expires: they come back, in
    // order, and "2" never does.
    let v = ack(&n, "g", "f", &receipts(&a[1..2])).await;
    assert_eq!(v["results"][0]["ok"], true, "{v}");
    let b = receive(
        &n,
        "g",
        "f",
        json!({"consumer": "c2", "max": 10, "wait_ms": 5000, "invisible_ms": 30000}),
    )
    .await;
    assert_eq!(bodies(&b), ["1", "3", "4"]);
    let attempts: Vec<_> = b.iter().map(|m| m["attempt"].as_u64().unwrap()).collect();
    assert_eq!(attempts, [2, 2, 1]);
    // A nack of "3" sends "3" and everything after it in the run back; "1" stays leased.
    let (s, v) = n
        .post(
            "/v1/groups/g/topics/f/nack",
            &json!({"receipts": receipts(&b[1..2]), "delay_ms": 0}).to_string(),
        )
        .await;
    assert_eq!(
        (s, &v["results"][0]["ok"]),
        (StatusCode::OK, &json!(true)),
        "{v}"
    );
    let v = ack(&n, "g", "f", &receipts(&b[2..])).await;
    assert_eq!(
        v["results"][0]["code"], "RECEIPT_EXPIRED",
        "\"4\" came back with \"3\": {v}"
    );
    assert!(
        receive(&n, "g", "f", json!({"consumer": "c1", "max": 10}))
            .await
            .is_empty(),
        "\"1\" is still in flight"
    );
    ack(&n, "g", "f", &receipts(&b[..1])).await;
    let c = receive(&n, "g", "f", json!({"consumer": "c1", "max": 10})).await;
    assert_eq!(bodies(&c), ["3", "4"]);
    ack(&n, "g", "f", &receipts(&c)).await;
    let (_, o) = n.get("/v1/groups/g/offsets?topic=f").await;
    assert_eq!(o["offsets"][0]["committed"], 4, "{o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_queues_of_one_topic_go_to_several_consumers_at_once() {
    let n = Node::auto().await;
    n.put("/v1/topics/f", r#"{"queues": 2, "fifo": true}"#)
        .await;
    let msgs: Vec<Value> = (0..6)
        .map(|i| json!({"body": format!("q{}-{}", i % 2, i / 2), "queue": i % 2}))
        .collect();
    produce(&n, "f", json!(msgs)).await;
    let a = receive(&n, "g", "f", json!({"consumer": "c1", "max": 3})).await;
    let b = receive(&n, "g", "f", json!({"consumer": "c2", "max": 3})).await;
    let mut runs = [bodies(&a), bodies(&b)];
    runs.sort();
    assert_eq!(
        runs,
        [["q0-0", "q0-1", "q0-2"], ["q1-0", "q1-1", "q1-2"]],
        "each consumer holds one queue's run"
    );
}

/// Two tags with the same CRC32C (`tag_hash`), found by a birthday search: the ConsumeQueue's
/// hash cannot tell them apart, the stored tag can.
const COLLIDING_TAGS: (&str, &str) = ("mtwjgxhjk", "cyvilpkff");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_filters_match_the_exact_tag_even_when_hashes_collide() {
    let n = Node::auto().await;
    n.put("/v1/topics/t", r#"{"queues": 1}"#).await;
    let (a, b) = COLLIDING_TAGS;
    produce(
        &n,
        "t",
        json!([{"body": "a", "tag": a}, {"body": "b", "tag": b}, {"body": "c", "tag": "other"}, {"body": "b2", "tag": b}]),
    )
    .await;
    let got = receive(&n, "g", "t", json!({"consumer": "c", "max": 10, "tag": b})).await;
    assert_eq!(bodies(&got), ["b", "b2"]);
    ack(&n, "g", "t", &receipts(&got)).await;
    let (_, o) = n.get("/v1/groups/g/offsets?topic=t").await;
    assert_eq!(
        o["offsets"][0]["committed"], 4,
        "what the filter skipped counts as consumed: {o}"
    );
    let (_, r) = n
        .get(&format!("/v1/topics/t/queues/0/messages?offset=0&tag={b}"))
        .await;
    assert_eq!(bodies(r["messages"].as_array().unwrap()), ["b", "b2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_filters_select_by_properties_tag_and_key_on_receive_and_read() {
    let n = Node::auto().await;
    n.put("/v1/topics/t", r#"{"queues": 1}"#).await;
    let msgs: Vec<Value> = (0..6)
        .map(|i| {
            json!({"body": format!("m{i}"), "tag": if i % 2 == 0 { "even" } else { "odd" },
                   "key": format!("k{i}"), "properties": {"a": i.to_string(), "region": "eu"}})
        })
        .collect();
    produce(&n, "t", json!(msgs)).await;
    let sql = "a BETWEEN 1 AND 4 AND (TAG = 'even' OR KEY IN ('k3')) AND region = 'eu'";
    let got = receive(
        &n,
        "g",
        "t",
        json!({"consumer": "c", "max": 10, "sql": sql}),
    )
    .await;
    assert_eq!(bodies(&got), ["m2", "m3", "m4"]);
    ack(&n, "g", "t", &receipts(&got)).await;
    let (_, o) = n.get("/v1/groups/g/offsets?topic=t").await;
    assert_eq!(
        o["offsets"][0]["committed"], 6,
        "what the filter skipped counts as consumed: {o}"
    );
    let q = "/v1/topics/t/queues/0/messages?offset=0&sql=a%20%3E%3D%204%20OR%20missing%20IS%20NOT%20NULL";
    let (s, r) = n.get(q).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(bodies(r["messages"].as_array().unwrap()), ["m4", "m5"]);
    assert_eq!(r["next_offset"], 6);
    // Tag and SQL together.
    let (_, r) = n
        .get("/v1/topics/t/queues/0/messages?offset=0&tag=odd&sql=a%20%3C%204")
        .await;
    assert_eq!(bodies(r["messages"].as_array().unwrap()), ["m1", "m3"]);
    for resp in [
        n.post(
            "/v1/groups/g/topics/t/receive",
            &json!({"consumer": "c", "sql": "a > "}).to_string(),
        )
        .await,
        n.get("/v1/topics/t/queues/0/messages?sql=a%20%3E").await,
    ] {
        crate::support::assert_error(
            &resp,
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "position",
        );
        assert!(
            resp.1["error"]["message"].as_str().unwrap().contains("sql"),
            "{}",
            resp.1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_retry_policy_spaces_redeliveries_and_caps_attempts() {
    let n = Node::auto().await;
    n.put("/v1/topics/t", r#"{"queues": 1}"#).await;
    produce(&n, "t", json!([{"body": "x"}])).await;
    // A group starts with RocketMQ's levels.
    receive(
        &n,
        "g",
        "t",
        json!({"consumer": "c", "max": 1, "invisible_ms": 100}),
    )
    .await;
    let (_, g) = n.get("/v1/groups/g").await;
    assert_eq!(g["max_attempts"], 16);
    assert_eq!(g["retry_backoff_ms"][0], 1000);
    assert_eq!(g["retry_backoff_ms"][17], 7_200_000);
    let (s, g) = n
        .put(
            "/v1/groups/g",
            r#"{"max_attempts": 3, "retry_backoff_ms": [3000]}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{g}");
    assert_eq!(
        (&g["group"], &g["max_attempts"], &g["retry_backoff_ms"]),
        (&json!("g"), &json!(3), &json!([3000]))
    );
    // Settings do not create a group or fix its mode: a new group set up first is
    // broadcast on first use if that use says so.
    let (s, _) = n.put("/v1/groups/b", r#"{"max_attempts": 5}"#).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(n.get("/v1/groups/b").await.0, StatusCode::NOT_FOUND);
    receive(&n, "b", "t", json!({"consumer": "c", "mode": "broadcast"})).await;
    let (_, b) = n.get("/v1/groups/b").await;
    assert_eq!(
        (&b["mode"], &b["max_attempts"]),
        (&json!("broadcast"), &json!(5))
    );
    // The first lease (100 ms) has expired; the message waits out the backoff after it.
    let start = std::time::Instant::now();
    let early = receive(&n, "g", "t", json!({"consumer": "c", "max": 1})).await;
    if start.elapsed() < std::time::Duration::from_millis(2500) {
        assert!(
            early.is_empty(),
            "visible again only after the backoff: {early:?}"
        );
    }
    let second = receive(
        &n,
        "g",
        "t",
        json!({"consumer": "c", "max": 1, "wait_ms": 10000, "invisible_ms": 30000}),
    )
    .await;
    assert_eq!(second[0]["attempt"], 2);
    // A nack without a delay uses the backoff too; with a short one, attempt 3 comes and
    // then the message goes to the dead-letter topic.
    let (s, _) = n.put("/v1/groups/g", r#"{"retry_backoff_ms": [50]}"#).await;
    assert_eq!(s, StatusCode::OK);
    let nack = |got: Vec<Value>| {
        let n = &n;
        async move {
            let (s, v) = n
                .post(
                    "/v1/groups/g/topics/t/nack",
                    &json!({"receipts": receipts(&got)}).to_string(),
                )
                .await;
            assert_eq!(
                (s, &v["results"][0]["ok"]),
                (StatusCode::OK, &json!(true)),
                "{v}"
            );
        }
    };
    nack(second).await;
    let third = receive(
        &n,
        "g",
        "t",
        json!({"consumer": "c", "max": 1, "wait_ms": 10000}),
    )
    .await;
    assert_eq!(third[0]["attempt"], 3, "max_attempts was kept");
    nack(third).await;
    let (_, g) = n.get("/v1/groups/g").await;
    assert_eq!(g["max_attempts"], 3);
    // Dead-lettering happens on the next receive that looks at the message.
    assert!(
        receive(&n, "g", "t", json!({"consumer": "c", "wait_ms": 500}))
            .await
            .is_empty()
    );
    let (_, d) = n.get("/v1/topics/DLQ-g/queues/0/messages?offset=0").await;
    assert_eq!(bodies(d["messages"].as_array().unwrap()), ["x"]);
    assert_eq!(d["messages"][0]["properties"]["ATTEMPTS"], "3");
    crate::support::assert_error(
        &n.post(
            "/v1/groups/g/topics/t/nack",
            r#"{"receipts": ["0-0-1-1-c"], "delay_ms": 18446744073709551615}"#,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "delay_ms",
    );
    for (body, field) in [
        (r#"{"max_attempts": 0}"#, "max_attempts"),
        (r#"{"retry_backoff_ms": []}"#, "retry_backoff_ms"),
        (
            r#"{"retry_backoff_ms": [999999999999]}"#,
            "retry_backoff_ms",
        ),
        (r#"{"retries": 3}"#, "retries"),
    ] {
        crate::support::assert_error(
            &n.put("/v1/groups/g", body).await,
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            field,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_reset_by_time_earliest_and_latest() {
    let n = Node::auto().await;
    n.put("/v1/topics/t", r#"{"queues": 1}"#).await;
    produce(&n, "t", json!([{"body": "old"}])).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let between = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    produce(&n, "t", json!([{"body": "new"}])).await;
    let got = receive(&n, "g", "t", json!({"consumer": "c", "max": 10})).await;
    ack(&n, "g", "t", &receipts(&got)).await;
    let (_, o) = n.get("/v1/groups/g/offsets?topic=t").await;
    assert_eq!(o["offsets"][0]["committed"], 2);
    let (s, v) = n
        .post(
            "/v1/groups/g/offsets/reset",
            &json!({"topic": "t", "to": {"timestamp_ms": between}}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["offsets"][0]["offset"], 1);
    assert_eq!(
        bodies(&receive(&n, "g", "t", json!({"consumer": "c"})).await),
        ["new"]
    );
    n.post(
        "/v1/groups/g/offsets/reset",
        r#"{"topic": "t", "to": "earliest"}"#,
    )
    .await;
    assert_eq!(
        bodies(&receive(&n, "g", "t", json!({"consumer": "c", "max": 10})).await),
        ["old", "new"]
    );
    n.post(
        "/v1/groups/g/offsets/reset",
        r#"{"topic": "t", "to": "latest"}"#,
    )
    .await;
    assert!(
        receive(&n, "g", "t", json!({"consumer": "c"}))
            .await
            .is_empty()
    );
    assert_error(
        &n.post(
            "/v1/groups/g/offsets/reset",
            r#"{"topic": "t", "to": "yesterday"}"#,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "to",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_split_queues_and_move_a_dead_consumers_share() {
    let n = Node::auto().await;
    n.put("/v1/topics/t", r#"{"queues": 4}"#).await;
    let hb = |c: &'static str, session: u64| {
        let n = &n;
        async move {
            let (s, v) = n
                .post(
                    "/v1/groups/g/heartbeat",
                    &json!({"consumer": c, "topics": ["t"], "session_ms": session}).to_string(),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v["assignments"][0]["queues"]
                .as_array()
                .unwrap()
                .iter()
                .map(|q| q.as_u64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(hb("a", 600).await, [0, 1, 2, 3]);
    assert_eq!(hb("b", 60_000).await, [1, 3]);
    assert_eq!(hb("a", 600).await, [0, 2]);
    // "a" stops heartbeating: after its session "b" gets everything.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(hb("b", 60_000).await, [0, 1, 2, 3]);
    let (_, g) = n.get("/v1/groups/g").await;
    let names: Vec<_> = g["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["consumer"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_groups_give_every_consumer_every_message() {
    let n = Node::auto().await;
    n.put("/v1/topics/t", r#"{"queues": 2}"#).await;
    produce(
        &n,
        "t",
        json!([{"body": "a"}, {"body": "b"}, {"body": "c"}]),
    )
    .await;
    let mut seen = Vec::new();
    for c in ["c1", "c2"] {
        let got = receive(
            &n,
            "bg",
            "t",
            json!({"consumer": c, "max": 10, "mode": "broadcast"}),
        )
        .await;
        let mut b = bodies(&got);
        b.sort();
        assert_eq!(b, ["a", "b", "c"], "consumer {c}");
        let r = ack(&n, "bg", "t", &receipts(&got)).await;
        assert!(
            r["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|x| x["ok"] == true)
        );
        seen.push(b);
    }
    assert!(
        receive(
            &n,
            "bg",
            "t",
            json!({"consumer": "c1", "mode": "broadcast"})
        )
        .await
        .is_empty()
    );
    let (_, g) = n.get("/v1/groups/bg").await;
    assert_eq!(g["mode"], "broadcast");
    assert_error(
        &n.post(
            "/v1/groups/bg/topics/t/receive",
            r#"{"consumer": "c1", "mode": "clustering"}"#,
        )
        .await,
        StatusCode::CONFLICT,
        "CONFLICT",
        "broadcast",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_requests_are_refused() {
    let n = Node::auto().await;
    n.put("/v1/topics/t", r#"{"queues": 1}"#).await;
    let p = "/v1/groups/g/topics/t/receive";
    assert_error(
        &n.post(p, r#"{}"#).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "consumer",
    );
    assert_error(
        &n.post(p, r#"{"consumer": "c", "max": 0}"#).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "max",
    );
    assert_error(
        &n.post(p, r#"{"consumer": "c", "mode": "x"}"#).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "mode",
    );
    assert_error(
        &n.post(p, r#"{"consumer": "c", "invisible_ms": 1}"#).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "invisible_ms",
    );
    assert_error(
        &n.post("/v1/groups/g/topics/nope/receive", r#"{"consumer": "c"}"#)
            .await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
        "nope",
    );
    assert_error(
        &n.get("/v1/groups/never").await,
        StatusCode::NOT_FOUND,
        "GROUP_NOT_FOUND",
        "never",
    );
    assert_error(
        &n.post(
            "/v1/groups/never/topics/t/ack",
            r#"{"receipts": ["0-0-1-1-c"]}"#,
        )
        .await,
        StatusCode::NOT_FOUND,
        "GROUP_NOT_FOUND",
        "never",
    );
    assert_error(
        &n.post("/v1/groups/g/topics/t/ack", r#"{"receipts": []}"#)
            .await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "receipts",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_created_topic_starts_without_the_old_consumer_progress() {
    let n = Node::auto().await;
    n.put("/v1/topics/t", r#"{"queues": 1}"#).await;
    produce(&n, "t", json!([{"body": "a"}, {"body": "b"}])).await;
    let got = receive(&n, "g", "t", json!({"consumer": "c", "max": 10})).await;
    ack(&n, "g", "t", &receipts(&got)).await;
    n.put(
        "/v1/groups/byoffset/offsets",
        r#"{"topic": "t", "offsets": [{"queue": 0, "offset": 2}]}"#,
    )
    .await;
    let (s, _) = n.call(axum::http::Method::DELETE, "/v1/topics/t", "").await;
    assert_eq!(s, StatusCode::OK);
    n.put("/v1/topics/t", r#"{"queues": 1}"#).await;
    produce(&n, "t", json!([{"body": "new"}])).await;
    let got = receive(&n, "g", "t", json!({"consumer": "c", "max": 10})).await;
    assert_eq!(
        bodies(&got),
        ["new"],
        "the old floor (2) does not hide the new topic's offset 0"
    );
    let (_, o) = n.get("/v1/groups/byoffset/offsets?topic=t").await;
    assert_eq!(o["offsets"][0]["committed"], 0);
}
