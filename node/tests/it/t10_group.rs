//! A 3-node group forms by itself and serves the API from every node.

use serde_json::json;

use crate::cluster::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_any_node_serves_writes_and_reads() {
    let c = Cluster::start(3);
    let leader = c.wait_leader().await;
    let follower = c.live().into_iter().find(|&id| id != leader).unwrap();

    let (s, t) = c
        .send(
            reqwest::Method::PUT,
            follower,
            "/v1/topics/t",
            &json!({"queues": 1}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{t}");
    let mut acked = Vec::new();
    for i in 0..20 {
        let via = [leader, follower][i % 2];
        let body = format!("m{i}");
        let placed = c
            .produce(via, "t", &body)
            .await
            .expect("produce through any node");
        assert_eq!(placed, (0, i as u64), "offsets are dense and in order");
        acked.push(body);
    }
    for id in c.live() {
        let got = c
            .wait_for("every node to apply the batch", || async {
                let all = c.read_all(id, "t", 0).await?;
                (all.len() == acked.len()).then_some(all)
            })
            .await;
        assert_eq!(
            got, acked,
            "node {id} returns the same messages at the same offsets"
        );
    }

    let (_, status) = c.get(leader, "/v1/cluster").await.unwrap();
    let roles: Vec<_> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(roles.iter().filter(|r| *r == "leader").count(), 1);
    assert_eq!(roles.iter().filter(|r| *r == "follower").count(), 2);
    assert!(
        status["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["matched_index"].as_u64().is_some())
    );
    for id in c.live() {
        let (s, _) = c.get(id, "/readyz").await.unwrap();
        assert_eq!(s, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_with_its_data() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader().await;
    c.create_topic(leader, "t", 1).await;
    c.produce_acked(leader, "t", "a", 10).await;
    let follower = c.live().into_iter().find(|&id| id != leader).unwrap();
    c.restart(follower);
    c.produce_acked(leader, "t", "b", 10).await;
    let all = c
        .wait_for("the restarted node to catch up", || async {
            let all = c.read_all(follower, "t", 0).await?;
            (all.len() == 20).then_some(all)
        })
        .await;
    assert_eq!(all[0], "a0");
    assert_eq!(all[19], "b9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_flush_group_acknowledges_and_serves_the_same() {
    let c = Cluster::start_with(3, &["--flush", "async", "--flush-interval-ms", "20"]);
    let leader = c.wait_leader().await;
    c.create_topic(leader, "t", 1).await;
    for i in 0..10 {
        assert_eq!(c.produce(leader, "t", &format!("m{i}")).await, Some((0, i)));
    }
    for id in c.live() {
        c.wait_for("every node to apply", || async {
            let all = c.read_all(id, "t", 0).await?;
            (all.len() == 10).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_make_a_follower_refuse_by_sending_the_forwarding_header() {
    let c = Cluster::start(3);
    let leader = c.wait_leader().await;
    let follower = c.live().into_iter().find(|&id| id != leader).unwrap();
    // A new leader answers 503 until it knows group time; that is not what this tests.
    c.wait_for("the group to take writes", || {
        c.produce(leader, "t", "warm")
    })
    .await;
    for value in ["1", "yes", "999"] {
        let r = c
            .http
            .post(c.url(follower, "/v1/topics/t/messages"))
            .header("x-raftmq-forwarded", value)
            .json(&serde_json::json!({"messages": [{"body": "x"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "x-raftmq-forwarded: {value}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_past_the_limits_gets_the_error_body_from_a_real_server() {
    let c = Cluster::start(1);
    c.wait_leader().await;
    // 500 KB of headers: past hyper's default head buffer (its own 431 has no body), within
    // the server's, so the router answers with the API's error body.
    let r = c
        .http
        .get(c.url(1, "/v1/topics"))
        .header("x-pad", "p".repeat(500_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 431);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "HEADERS_TOO_LARGE", "{v}");
}

/// `--log-format json`: every log line is a JSON object, and a write sent to a follower
/// with an `x-request-id` is logged under that id on the leader it was forwarded to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_across_forwarding() {
    let env: Vec<(u64, Vec<(String, String)>)> = (1..=3)
        .map(|id| {
            let log = ("RAFTMQ_LOG".to_owned(), "info,tower_http=debug".to_owned());
            (id, vec![log])
        })
        .collect();
    let c = Cluster::start_with_env(3, &["--log-format", "json"], env);
    let leader = c.wait_leader().await;
    c.create_topic(leader, "t", 1).await;
    let follower = c.live().into_iter().find(|&id| id != leader).unwrap();
    let resp = c
        .client_builder()
        .build()
        .unwrap()
        .post(c.url(follower, "/v1/topics/t/messages"))
        .header("x-request-id", "req-42-forwarded")
        .json(&serde_json::json!({"messages": [{"body": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-42-forwarded");
    c.wait_for(
        "the leader to log the forwarded request under its id",
        || async { c.log_of(leader).contains("req-42-forwarded").then_some(()) },
    )
    .await;
    for id in c.live() {
        let log = c.log_of(id);
        assert!(!log.is_empty(), "node {id} logged nothing");
        for line in log.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("node {id}: not JSON ({e}): {line}"));
            assert!(
                v["timestamp"].is_string() && v["level"].is_string(),
                "{line}"
            );
        }
    }
}
