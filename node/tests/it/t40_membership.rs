//! Members are added (learner, then voter) and removed through any node.

use serde_json::json;

use crate::cluster::Cluster;

fn roles(status: &serde_json::Value) -> Vec<(u64, String)> {
    let mut r: Vec<_> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    r.sort();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_voter_then_remove_a_member() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader().await;
    c.create_topic(leader, "t", 1).await;
    c.produce_acked(leader, "t", "m", 10).await;
    let new = c.add_joiner();
    let follower = c
        .live()
        .into_iter()
        .find(|&id| id != leader && id != new)
        .unwrap();
    let (s, v) = c
        .post(
            follower,
            "/v1/cluster/members",
            &json!({"id": new, "addr": c.node(new).addr, "voter": true}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let (_, status) = c.get(leader, "/v1/cluster").await.unwrap();
    assert_eq!(roles(&status).len(), 4);
    assert!(
        roles(&status).contains(&(new, "follower".to_owned())),
        "{status}"
    );
    let got = c
        .wait_for("the new member to hold the data", || async {
            let all = c.read_all(new, "t", 0).await?;
            (all.len() == 10).then_some(all)
        })
        .await;
    assert_eq!(got[9], "m9");

    // Adding it again conflicts.
    let (s, v) = c
        .post(
            leader,
            "/v1/cluster/members",
            &json!({"id": new, "addr": c.node(new).addr, "voter": true}),
        )
        .await
        .unwrap();
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("CONFLICT")));

    let (s, v) = c.remove_member(new, follower).await;
    assert_eq!(s, 200, "{v}");
    let status = c
        .wait_for("the removal to show", || async {
            let (_, s) = c.get(leader, "/v1/cluster").await.ok()?;
            (roles(&s).len() == 3).then_some(s)
        })
        .await;
    assert!(!roles(&status).iter().any(|(id, _)| *id == follower));
    c.kill(follower);
    assert!(
        c.produce(new, "t", "after-removal").await.is_some(),
        "the reshaped group takes writes"
    );
    let (s, _) = c.remove_member(leader, 99).await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_never_becomes_a_voter_and_a_removed_leader_steps_aside() {
    let c = Cluster::start(3);
    let leader = c.wait_leader().await;
    // Nothing listens at port 9 (discard): the node cannot catch up, so it is not promoted.
    let (s, v) = c
        .post(
            leader,
            "/v1/cluster/members",
            &json!({"id": 5, "addr": "127.0.0.1:9", "voter": true, "catch_up_ms": 1500}),
        )
        .await
        .unwrap();
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("UNAVAILABLE")),
        "{v}"
    );
    let (_, status) = c.get(leader, "/v1/cluster").await.unwrap();
    assert!(
        roles(&status).contains(&(5, "learner".to_owned())),
        "{status}"
    );
    assert!(
        c.produce(leader, "t", "with-a-learner").await.is_some(),
        "the group keeps its quorum"
    );
    let (s, v) = c.remove_member(leader, 5).await;
    assert_eq!(s, 200, "the way out: {v}");

    // The leader removes itself: it applies the change and stops acting as a member.
    let (s, v) = c.remove_member(leader, leader).await;
    assert_eq!(s, 200, "{v}");
    c.wait_for("the removed node to report not ready", || async {
        let (s, _) = c.get(leader, "/readyz").await.ok()?;
        (s == 503).then_some(())
    })
    .await;
    let (s, v) = c.get(leader, "/v1/topics").await.unwrap();
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("UNAVAILABLE")),
        "{v}"
    );
    let (_, status) = c.get(leader, "/v1/cluster").await.unwrap();
    assert!(status["leader_id"].is_null(), "{status}");
    let other = c.live().into_iter().find(|&id| id != leader).unwrap();
    c.wait_for("the rest of the group to take writes", || async {
        c.produce(other, "t", "after").await
    })
    .await;
}

/// With one node down, removing a live voter instead would leave voters that cannot commit
/// the change, and every later membership change would wait behind it (raftmq-sim found
/// the down node could then never be replaced): refused with 409. Removing the node that
/// is down still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_the_remaining_voters_cannot_commit_is_refused() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader().await;
    let mut followers = c.live().into_iter().filter(|&id| id != leader);
    let (down, up) = (followers.next().unwrap(), followers.next().unwrap());
    // At once: an answer from before the request does not count (the node killed a
    // moment ago answered the leader's last heartbeat; sim seed 141).
    c.kill(down);
    let (s, v) = c.remove_member(leader, up).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("CONFLICT")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("could not commit")),
        "the refusal says why: {v}"
    );
    let (_, status) = c.get(leader, "/v1/cluster").await.unwrap();
    assert_eq!(roles(&status).len(), 3, "nothing changed: {status}");
    let (s, v) = c.remove_member(leader, down).await;
    assert_eq!(s, 200, "the node that is down can go: {v}");
    assert!(
        c.produce(leader, "t", "after").await.is_some(),
        "the group of two takes writes"
    );
}
