//! kill -9 of the leader: a new leader takes writes and nothing acknowledged is lost.

use std::time::Instant;

use crate::cluster::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_acknowledged_message() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader().await;
    c.create_topic(leader, "t", 1).await;
    let mut acked = c.produce_acked(leader, "t", "before-", 50).await;

    let killed_at = Instant::now();
    c.kill(leader);
    let survivors = c.live();
    let mut n = 0;
    let (first_ack, offset) = c
        .wait_for("a write acknowledged by the new leader", || {
            n += 1;
            let via = survivors[n % survivors.len()];
            let body = format!("after-{n}");
            let c = &c;
            async move { c.produce(via, "t", &body).await.map(|(_, o)| (body, o)) }
        })
        .await;
    let failover = killed_at.elapsed();
    eprintln!("failover: first acknowledged produce {failover:?} after kill -9 of the leader");
    acked.push(first_ack);
    assert!(offset >= 50, "new writes go after the acknowledged ones");

    for id in survivors {
        let got = c
            .wait_for("survivors to hold every acknowledged message", || async {
                let all = c.read_all(id, "t", 0).await?;
                (all.len() as u64 > offset).then_some(all)
            })
            .await;
        for (i, body) in acked.iter().take(50).enumerate() {
            assert_eq!(
                &got[i], body,
                "node {id}: acknowledged message at offset {i}"
            );
        }
        assert_eq!(got[offset as usize], *acked.last().unwrap());
    }
}

/// Exactly-once produce across a failover and a restart: the idempotency record is
/// replicated state, so a retry on the new leader, and after the old one is back, answers
/// the first write and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_outlives_the_leader_that_wrote_it() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader().await;
    c.create_topic(leader, "t", 2).await;
    let body = serde_json::json!({"messages": [{"body": "once", "idempotency_key": "order-1"}]});
    let path = "/v1/topics/t/messages";
    let (s, first) = c.post(leader, path, &body).await.unwrap();
    assert_eq!(s, 200, "{first}");
    c.kill(leader);
    let survivors = c.live();
    let mut n = 0;
    let retry = c
        .wait_for("a retry answered by the new leader", || {
            n += 1;
            let via = survivors[n % survivors.len()];
            let (c, body) = (&c, &body);
            async move {
                let (s, v) = c.post(via, path, body).await.ok()?;
                (s == 200).then_some(v)
            }
        })
        .await;
    assert_eq!(
        retry["results"], first["results"],
        "the first write's result"
    );
    c.restart(leader);
    let again = c
        .wait_for("a retry through the restarted node", || {
            let (c, body) = (&c, &body);
            async move {
                let (s, v) = c.post(leader, path, body).await.ok()?;
                (s == 200).then_some(v)
            }
        })
        .await;
    assert_eq!(again["results"], first["results"]);
    let queue = first["results"][0]["queue"].as_u64().unwrap();
    for id in c.live() {
        let got = c
            .wait_for("every node to hold the message", || async {
                c.read_all(id, "t", queue).await.filter(|m| !m.is_empty())
            })
            .await;
        assert_eq!(got, ["once"], "node {id}: stored once");
    }
}

/// Scheduled messages are replicated state: with the leader killed before they are due, the
/// new leader delivers each exactly once, in due order, and every replica agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_messages_come_due_once_after_a_failover() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader().await;
    c.create_topic(leader, "t", 1).await;
    let msgs: Vec<_> = (0..20)
        .map(|i| serde_json::json!({"body": format!("m{i}"), "delay_ms": 2_000 + 100 * i}))
        .collect();
    let body = serde_json::json!({ "messages": msgs });
    let (s, v) = c
        .post(leader, "/v1/topics/t/messages", &body)
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    assert!(v["results"][0]["offset"].is_null(), "{v}");
    c.kill(leader);
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    for id in c.live() {
        let got = c
            .wait_for("every scheduled message to come due", || async {
                c.read_all(id, "t", 0).await.filter(|m| m.len() >= 20)
            })
            .await;
        assert_eq!(got, expected, "node {id}: each once, in due order");
    }
    c.restart(leader);
    let got = c
        .wait_for("the old leader to catch up", || async {
            c.read_all(leader, "t", 0).await.filter(|m| m.len() >= 20)
        })
        .await;
    assert_eq!(got, expected);
}

/// A transaction left open by a leader that died is checked back by the next one, and its
/// messages are committed once on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_leader_checks_back_an_open_transaction() {
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count = asked.clone();
    let app = axum::Router::new().route(
        "/check",
        axum::routing::post(move || {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { r#"{"status": "commit"}"# }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/check", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut c = Cluster::start(3);
    let leader = c.wait_leader().await;
    c.create_topic(leader, "t", 1).await;
    let body = serde_json::json!({
        "messages": [{"body": "t1"}, {"body": "t2"}],
        "transaction": {"check_url": url, "check_after_ms": 1500},
    });
    let (s, v) = c
        .post(leader, "/v1/topics/t/messages", &body)
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let txn = v["transaction_id"].as_str().unwrap().to_owned();
    c.kill(leader);
    for id in c.live() {
        let got = c
            .wait_for(
                "the transaction to be checked back and committed",
                || async { c.read_all(id, "t", 0).await.filter(|m| m.len() >= 2) },
            )
            .await;
        assert_eq!(got, ["t1", "t2"], "node {id}: committed once");
        let (s, t) = c.get(id, &format!("/v1/transactions/{txn}")).await.unwrap();
        assert_eq!(
            (s, &t["state"]),
            (200, &serde_json::json!("committed")),
            "{t}"
        );
    }
    assert!(asked.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    server.abort();
}
