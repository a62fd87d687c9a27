//! Without a quorum, writes fail clearly (503, or 504 when the outcome is unknown) and
//! succeed again once the quorum is back.

use crate::cluster::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_quorum_means_a_clear_error_not_a_silent_loss() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader().await;
    assert!(c.produce(leader, "t", "first").await.is_some());
    let others: Vec<u64> = c.live().into_iter().filter(|&id| id != leader).collect();
    c.kill(others[0]);
    c.kill(others[1]);
    let (s, v) = c
        .post(
            leader,
            "/v1/topics/t/messages",
            &serde_json::json!({"messages": [{"body": "lonely"}]}),
        )
        .await
        .unwrap();
    let code = v["error"]["code"].as_str().unwrap_or_default().to_owned();
    assert!(
        (s == 503 && code == "UNAVAILABLE") || (s == 504 && code == "OUTCOME_UNKNOWN"),
        "got {s} {v}"
    );
    c.restart(others[0]);
    c.wait_for("writes to work again", || async {
        c.produce(others[0], "t", "back").await
    })
    .await;
}
