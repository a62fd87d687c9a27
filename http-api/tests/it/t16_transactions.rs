//! Transactions: half messages invisible until committed, decisions by id (idempotent, the
//! other one 409), and check-back against a little HTTP server of the test's own that
//! commits, rolls back, hangs or answers garbage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use raftmq_http_api::ApiConfig;
use serde_json::{Value, json};

use crate::support::{Node, assert_error};

async fn produce_txn(n: &Node, topic: &str, bodies: &[&str], check_url: &str) -> (String, Value) {
    let msgs: Vec<Value> = bodies
        .iter()
        .map(|b| json!({"body": b, "queue": 0}))
        .collect();
    let (s, v) = n
        .post(
            &format!("/v1/topics/{topic}/messages"),
            &json!({"messages": msgs, "transaction": {"check_url": check_url, "check_after_ms": 300}})
                .to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    (v["transaction_id"].as_str().unwrap().to_owned(), v)
}

async fn bodies(n: &Node, topic: &str) -> Vec<String> {
    let (_, r) = n
        .get(&format!(
            "/v1/topics/{topic}/queues/0/messages?offset=0&max=100"
        ))
        .await;
    r["messages"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m["body"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn state(n: &Node, id: &str) -> Value {
    let (s, v) = n.get(&format!("/v1/transactions/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// Waits until transaction `id` is no longer open.
async fn decided(n: &Node, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = state(n, id).await;
        if v["state"] != "open" {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "transaction {id} stayed open: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_transaction_appears_once_and_a_rolled_back_one_never() {
    let n = Node::auto().await;
    let (s, t) = n.put("/v1/topics/tx", r#"{"queues": 1}"#).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    // Nobody listens here: checks (due after 300 ms) fail, which only counts them.
    let nowhere = "http://127.0.0.1:9/check";
    let (a, v) = produce_txn(&n, "tx", &["a1", "a2"], nowhere).await;
    assert_eq!(v["results"][0]["offset"], Value::Null);
    let (b, _) = produce_txn(&n, "tx", &["b1"], nowhere).await;
    n.post(
        "/v1/topics/tx/messages",
        r#"{"messages": [{"body": "plain"}]}"#,
    )
    .await;
    assert_eq!(
        bodies(&n, "tx").await,
        ["plain"],
        "half messages are invisible"
    );
    let a1 = v["results"][0]["msg_id"].as_str().unwrap().to_owned();
    let (s, _) = n.get(&format!("/v1/messages/{a1}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let open = state(&n, &a).await;
    assert_eq!(open["state"], "open");
    assert_eq!(open["topic"], "tx");

    let (s, c) = n.post(&format!("/v1/transactions/{a}/commit"), "").await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["state"], "committed");
    assert_eq!(c["results"][0]["offset"], 1);
    assert_eq!(c["results"][1]["offset"], 2);
    assert_eq!(bodies(&n, "tx").await, ["plain", "a1", "a2"]);
    let (s, m) = n.get(&format!("/v1/messages/{a1}")).await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["offset"], 1);
    // Idempotent; the other decision is a conflict.
    let (s, again) = n.post(&format!("/v1/transactions/{a}/commit"), "").await;
    assert_eq!((s, &again["state"]), (StatusCode::OK, &json!("committed")));
    assert_error(
        &n.post(&format!("/v1/transactions/{a}/rollback"), "").await,
        StatusCode::CONFLICT,
        "CONFLICT",
        "committed",
    );

    let (s, r) = n.post(&format!("/v1/transactions/{b}/rollback"), "").await;
    assert_eq!((s, &r["state"]), (StatusCode::OK, &json!("rolled_back")));
    assert_error(
        &n.post(&format!("/v1/transactions/{b}/commit"), "").await,
        StatusCode::CONFLICT,
        "CONFLICT",
        "rolled back",
    );
    assert_eq!(bodies(&n, "tx").await, ["plain", "a1", "a2"], "never b1");
    // A consumer group gets the committed messages like any other.
    let (s, r) = n
        .post(
            "/v1/groups/g/topics/tx/receive",
            r#"{"consumer": "c", "max": 10}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let got: Vec<_> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["plain", "a1", "a2"]);

    for path in [
        "/v1/transactions/g1.999999/commit",
        "/v1/transactions/other-group.1/rollback",
        "/v1/transactions/nonsense/commit",
    ] {
        assert_error(
            &n.post(path, "").await,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "does not exist",
        );
    }
    let (s, _) = n.get("/v1/transactions/g1.999999").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// How the check server answers a transaction, by its first message's body.
#[derive(Clone, Copy)]
enum Answer {
    Commit,
    Rollback,
    Hang,
    Garbage,
}

struct CheckServer {
    url: String,
    asked: Arc<Mutex<Vec<Value>>>,
    _task: tokio::task::JoinHandle<()>,
}

async fn check_server(answers: HashMap<&'static str, Answer>) -> CheckServer {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let answers = Arc::new(answers);
    let app = axum::Router::new().route(
        "/check",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let (log, answers) = (log.clone(), answers.clone());
            async move {
                log.lock().unwrap().push(v.clone());
                let first = v["messages"][0]["body"].as_str().unwrap_or("").to_owned();
                match answers.get(first.as_str()).copied() {
                    Some(Answer::Commit) => json!({"status": "commit"}).to_string(),
                    Some(Answer::Rollback) => json!({"status": "rollback"}).to_string(),
                    Some(Answer::Hang) => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        String::new()
                    }
                    Some(Answer::Garbage) | None => "<html>no</html>".to_owned(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/check", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    CheckServer {
        url,
        asked,
        _task: task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecided_transactions_are_checked_back_and_a_hanging_target_blocks_nothing() {
    let n = Node::start(ApiConfig {
        auto_create_topics: true,
        txn_max_checks: 2,
        ..ApiConfig::default()
    })
    .await;
    let server = check_server(HashMap::from([
        ("hang", Answer::Hang),
        ("yes", Answer::Commit),
        ("no", Answer::Rollback),
        ("junk", Answer::Garbage),
    ]))
    .await;
    // The hanging one first: the others must not wait for it.
    let (hang, _) = produce_txn(&n, "tx", &["hang"], &server.url).await;
    let (yes, _) = produce_txn(&n, "tx", &["yes", "yes-2"], &server.url).await;
    let (no, _) = produce_txn(&n, "tx", &["no"], &server.url).await;
    let (junk, _) = produce_txn(&n, "tx", &["junk"], &server.url).await;

    let y = decided(&n, &yes).await;
    assert_eq!(y["state"], "committed", "{y}");
    assert_eq!(decided(&n, &no).await["state"], "rolled_back");
    assert_eq!(
        state(&n, &hang).await["state"],
        "open",
        "its first check is still waiting for the target"
    );
    let j = decided(&n, &junk).await;
    assert_eq!(
        (&j["state"], &j["checks"]),
        (&json!("rolled_back"), &json!(2))
    );
    assert_eq!(bodies(&n, "tx").await, ["yes", "yes-2"]);
    // The check carried the transaction's id and messages.
    let asked = server.asked.lock().unwrap().clone();
    let about_yes = asked
        .iter()
        .find(|v| v["transaction_id"] == json!(yes))
        .expect("asked about it");
    assert_eq!(about_yes["messages"][1]["body"], "yes-2");
    assert!(about_yes["messages"][0]["msg_id"].is_string());
    // Two checks that timed out roll the hanging one back.
    let h = decided(&n, &hang).await;
    assert_eq!(
        (&h["state"], &h["checks"]),
        (&json!("rolled_back"), &json!(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transactions_are_refused_by_field() {
    let n = Node::start(ApiConfig {
        auto_create_topics: true,
        txn_check_hosts: Some(vec!["127.0.0.1".into()]),
        ..ApiConfig::default()
    })
    .await;
    let send = |txn: Value, msg: Value| {
        let body = json!({"messages": [msg], "transaction": txn}).to_string();
        let n = &n;
        async move { n.post("/v1/topics/tx/messages", &body).await }
    };
    let url = "http://127.0.0.1:9/check";
    let plain = json!({"body": "x"});
    assert_error(
        &send(json!({"check_after_ms": 10}), plain.clone()).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "transaction.check_url",
    );
    assert_error(
        &send(json!({"check_url": "ftp://x/y"}), plain.clone()).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "transaction.check_url",
    );
    assert_error(
        &send(json!({"check_url": "http:///nohost"}), plain.clone()).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "transaction.check_url",
    );
    // Only the hosts the cluster allows (`--txn-check-hosts`).
    for other in [
        "http://192.0.2.1:80/check",
        "http://127.0.0.1@192.0.2.1/",
        "http://[::1]:9/",
    ] {
        assert_error(
            &send(json!({"check_url": other}), plain.clone()).await,
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "is not one this cluster checks back to",
        );
    }
    assert_error(
        &send(
            json!({"check_url": url, "check_after_ms": 0}),
            plain.clone(),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "transaction.check_after_ms",
    );
    assert_error(
        &send(
            json!({"check_url": url}),
            json!({"body": "x", "delay_ms": 10}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "messages[0]",
    );
    assert_error(
        &send(json!("yes"), plain.clone()).await,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "transaction",
    );
    // check_after_ms defaults to 6 s.
    let (s, v) = send(json!({"check_url": url}), plain).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
