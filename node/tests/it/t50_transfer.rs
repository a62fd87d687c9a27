//! Leadership moves to a named node on request.

use serde_json::json;

use crate::cluster::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_named_node() {
    let c = Cluster::start(3);
    let leader = c.wait_leader().await;
    let others: Vec<u64> = c.live().into_iter().filter(|&id| id != leader).collect();
    let (to, via) = (others[0], others[1]);
    let (s, v) = c
        .post(via, "/v1/cluster/leader", &json!({"to": to}))
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["leader_id"], to);
    assert_eq!(c.wait_leader().await, to);
    assert!(c.produce(leader, "t", "after-transfer").await.is_some());
}
