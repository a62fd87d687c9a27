//! Retention removes expired messages and purges whole segments; a replica wiped after
//! the leader purged its log catches up through a snapshot that carries the retained
//! segments, and serves every retained message.

use serde_json::json;

use crate::cluster::Cluster;

fn first_segment(dir: &std::path::Path) -> Option<u64> {
    std::fs::read_dir(dir.join("log"))
        .ok()?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .min()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_go_and_a_wiped_replica_gets_the_rest_by_snapshot() {
    let mut c = Cluster::start_with(3, &["--retention-check-ms", "300"]);
    let leader = c.wait_leader().await;
    let put = |topic: &'static str, retention: u64| {
        let c = &c;
        async move {
            let (s, v) = c
                .send(
                    reqwest::Method::PUT,
                    leader,
                    &format!("/v1/topics/{topic}"),
                    &json!({"queues": 1, "retention_ms": retention}),
                )
                .await
                .unwrap();
            assert_eq!(s, 200, "{v}");
        }
    };
    put("short", 1).await;
    put("long", 86_400_000).await;
    for i in 0..60 {
        let msgs: Vec<_> = (0..10)
            .map(|j| json!({"body": format!("s{i}-{j}-{}", "x".repeat(300))}))
            .collect();
        let (s, _) = c
            .post(
                leader,
                "/v1/topics/short/messages",
                &json!({"messages": msgs}),
            )
            .await
            .unwrap();
        assert_eq!(s, 200);
    }
    let mut kept = Vec::new();
    for i in 0..20 {
        let body = format!("keep-{i}");
        c.produce(leader, "long", &body).await.unwrap();
        kept.push(body);
    }

    for id in c.live() {
        c.wait_for("retention to drop every short-lived message", || async {
            let (_, t) = c.get(id, "/v1/topics/short").await.ok()?;
            (t["queue_stats"][0]["min_offset"] == 600 && t["queue_stats"][0]["max_offset"] == 600)
                .then_some(())
        })
        .await;
    }
    let (s, v) = c
        .get(leader, "/v1/topics/short/queues/0/messages?offset=0")
        .await
        .unwrap();
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("OFFSET_OUT_OF_RANGE")),
        "{v}"
    );
    assert_eq!(v["error"]["min_offset"], 600);
    let leader_dir = c.node(leader).data_dir.clone();
    c.wait_for("the leader to purge expired segments", || async {
        (first_segment(&leader_dir)? > 1).then_some(())
    })
    .await;

    let wiped = c.live().into_iter().find(|&id| id != leader).unwrap();
    c.replace_data(leader, wiped).await;
    let (_, status) = c.get(leader, "/v1/cluster").await.unwrap();
    let commit = status["commit_index"].as_u64().unwrap();
    c.wait_for("the wiped node to catch up", || async {
        let (_, s) = c.get(wiped, "/v1/cluster").await.ok()?;
        (s["applied_index"].as_u64()? >= commit).then_some(())
    })
    .await;
    let wiped_dir = c.node(wiped).data_dir.clone();
    assert!(
        first_segment(&wiped_dir).is_some_and(|b| b > 1),
        "the wiped node got its log from a snapshot, not by replaying from the start"
    );

    eprintln!(
        "retention: leader's first segment {:?}, wiped node's first segment {:?}",
        first_segment(&leader_dir),
        first_segment(&wiped_dir)
    );
    c.kill(leader);
    c.wait_leader().await;
    assert_eq!(
        c.read_all(wiped, "long", 0).await.unwrap(),
        kept,
        "every retained message"
    );
    let (_, t) = c.get(wiped, "/v1/topics/short").await.unwrap();
    assert_eq!(
        t["queue_stats"][0]["max_offset"], 600,
        "offsets continue after retention"
    );
    let placed = c
        .wait_for("a write after the old leader died", || async {
            c.produce(wiped, "short", "fresh").await
        })
        .await;
    assert_eq!(placed.1, 600, "offsets stay dense across retention");
}
