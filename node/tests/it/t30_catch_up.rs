//! A replica whose data is lost is replaced as docs/operations.md says (removed, wiped,
//! started with `--join`, added back): it catches up and, once the old leader is gone,
//! serves every acknowledged message. Restarted empty under its old id without leaving the
//! group, it would vote without its log (raftmq-sim found committed entries lost so): it
//! refuses to start instead.

use serde_json::json;

use crate::cluster::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_replica_catches_up_and_serves_everything() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader().await;
    c.create_topic(leader, "t", 2).await;
    let mut acked = Vec::new();
    for i in 0..40 {
        // Batches, so the log spans several (64 KiB) segments.
        let msgs: Vec<_> = (0..10)
            .map(|j| json!({"body": format!("m{i}-{j}-{}", "x".repeat(200)), "queue": j % 2}))
            .collect();
        let (s, v) = c
            .post(leader, "/v1/topics/t/messages", &json!({"messages": msgs}))
            .await
            .unwrap();
        assert_eq!(s, 200, "{v}");
        acked.extend(msgs.iter().map(|m| m["body"].as_str().unwrap().to_owned()));
    }
    let wiped = c.live().into_iter().find(|&id| id != leader).unwrap();
    let other = c
        .live()
        .into_iter()
        .find(|&id| id != leader && id != wiped)
        .unwrap();
    c.wait_for(
        "the group to record that the node has held the log",
        || async {
            let (_, s) = c.get(other, "/v1/cluster").await.ok()?;
            let members = s["members"].as_array()?;
            let m = members.iter().find(|m| m["id"] == wiped)?;
            m["held_log_index"].as_u64().map(|_| ())
        },
    )
    .await;
    // The unsafe way: its data gone, started again as the same member, after leadership
    // moved to a node that never replicated to it (the leader's own view of it is gone, so
    // only the group's record says it has held the log).
    c.kill(wiped);
    std::fs::remove_dir_all(&c.node(wiped).data_dir).unwrap();
    c.make_leader(other).await;
    c.restart(wiped);
    refused_as_data_lost(&mut c, wiped).await;
    let leader = other;
    c.replace_data(leader, wiped).await;

    let (_, status) = c.get(leader, "/v1/cluster").await.unwrap();
    let commit = status["commit_index"].as_u64().unwrap();
    c.wait_for("the wiped node to apply everything committed", || async {
        let (_, s) = c.get(wiped, "/v1/cluster").await.ok()?;
        (s["applied_index"].as_u64()? >= commit).then_some(())
    })
    .await;

    c.kill(leader);
    c.wait_leader().await;
    let mut got = Vec::new();
    for q in 0..2 {
        got.extend(
            c.read_all(wiped, "t", q)
                .await
                .expect("wiped node serves reads"),
        );
    }
    got.sort();
    let mut want = acked.clone();
    want.sort();
    assert_eq!(
        got, want,
        "the wiped replica serves every acknowledged message"
    );
    // And it takes part in writes again.
    c.wait_for("a write after the old leader died", || async {
        c.produce(wiped, "t", "after").await
    })
    .await;
}

/// Restarted empty under its old id while every peer is down, a node hears nothing: it
/// must wait, not form a group of its own and vote (raftmq-sim seed 1064: a wiped node
/// whose peers' answers were lost formed a new group, and a leader missing committed
/// entries won with its vote). Once the peers are back, they tell it its data is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_that_hears_from_no_peer_waits_then_is_refused() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader().await;
    c.create_topic(leader, "t", 1).await;
    // The lowest id: started with an empty log and no answers, it formed a group at once.
    let wiped = 1;
    c.wait_for("the group to record every member", || async {
        let (_, s) = c.get(leader, "/v1/cluster").await.ok()?;
        let members = s["members"].as_array()?;
        members
            .iter()
            .all(|m| m["held_log_index"].as_u64().is_some())
            .then_some(())
    })
    .await;
    for id in [1, 2, 3] {
        c.kill(id);
    }
    std::fs::remove_dir_all(&c.node(wiped).data_dir).unwrap();
    c.restart(wiped);
    // It serves HTTP, as it waits: no group, no leader, no vote.
    let (s, v) = c
        .wait_for("the wiped node to answer", || async {
            c.get(wiped, "/v1/cluster").await.ok()
        })
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["term"], 0, "it took no part in any election: {v}");
    assert!(v["leader_id"].is_null(), "{v}");
    for id in [2, 3] {
        c.restart(id);
    }
    let log = refused_as_data_lost(&mut c, wiped).await;
    // Its first life formed the group; its second formed none.
    assert_eq!(log.matches("initialized the group").count(), 1, "{log}");
}

/// Waits until node `id` exits refused because its data is gone; its log.
async fn refused_as_data_lost(c: &mut Cluster, id: u64) -> String {
    let status = c.wait_exit(id).await;
    let log = c.log_of(id);
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("data is gone") && log.contains("--join"),
        "the refusal says why and what to do: {log}"
    );
    log
}
