//! A node whose wall clock is far ahead (libfaketime) leads the group: its clock must not
//! decide time for the group, so retention deletes nothing early and the times it stamps
//! are the group's, not its own.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::cluster::{Cluster, skewed_clock};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_ten_days_ahead_neither_expires_messages_nor_stamps_its_own_time() {
    let c = Cluster::start_with_env(
        3,
        &["--retention-check-ms", "300"],
        vec![(1, skewed_clock("+10d"))],
    );
    c.wait_leader().await;
    c.make_leader(2).await;
    let (s, v) = c
        .send(
            reqwest::Method::PUT,
            2,
            "/v1/topics/t",
            &json!({"queues": 1, "retention_ms": 86_400_000}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let kept = c.produce_acked(2, "t", "m", 20).await;
    // Node 1, ten days ahead, leads; retention runs every 300 ms on the leader.
    c.make_leader(1).await;
    let produced_at = c.applied_index(1).await.unwrap();
    c.wait_for("ten retention rounds under the skewed leader", || async {
        (c.applied_index(1).await? >= produced_at + 10).then_some(())
    })
    .await;
    let late = c.produce_acked(1, "t", "late", 1).await;
    for id in 1..=3 {
        let (s, t) = c.get(id, "/v1/topics/t").await.unwrap();
        assert_eq!(s, 200);
        assert_eq!(
            t["queue_stats"][0]["min_offset"], 0,
            "node {id}: a message within its retention was deleted"
        );
        let all = c.read_all(id, "t", 0).await.unwrap();
        assert_eq!(all[..20], kept[..], "node {id}");
        assert_eq!(all[20..], late[..], "node {id}");
    }
    let (_, r) = c
        .get(3, "/v1/topics/t/queues/0/messages?offset=20")
        .await
        .unwrap();
    let stored = r["messages"][0]["stored_ms"].as_u64().unwrap();
    let skew = stored.abs_diff(now_ms());
    assert!(
        skew < 3_600_000,
        "the skewed leader stamped its own clock: {skew} ms off"
    );
}
