//! A topic spread over two broker groups (API.md, "Broker groups and the NameServer"): one
//! queue space, served whole by a node of either group; produce split per group with
//! results in request order; reads, queries, receive, ack, offsets and heartbeats over the
//! whole space; growing a topic onto a new group without moving data; and a group that is
//! down failing only its own share of a batch.

use serde_json::{Value, json};

use crate::cluster::{Cluster, free_port};
use crate::t45_nameserver::{group_g2, nameserver_expiring, post_json, secret_env};

/// A POST retried while it answers 503 (routes being learned; a late heartbeat).
async fn post_ready(c: &Cluster, url: String, body: Value) -> (u16, Value) {
    c.wait_for("an answer other than 503", || async {
        let (s, v) = post_json(c, url.clone(), body.clone()).await;
        (s != 503).then_some((s, v))
    })
    .await
}

/// A GET's body, retried while it answers 503.
async fn get_ready(c: &Cluster, url: String) -> Value {
    c.wait_for("an answer other than 503", || async {
        let r = c.http.get(url.clone()).send().await.ok()?;
        if r.status().as_u16() == 503 {
            return None;
        }
        r.json().await.ok()
    })
    .await
}

async fn put_json(c: &Cluster, url: String, body: Value) -> (u16, Value) {
    let r = c.http.put(url).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The `(group, first_queue, queues)` slices of a topic as a node shows it.
fn slices(t: &Value) -> Vec<(String, u64, u64)> {
    t["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            (
                g["group"].as_str().unwrap().to_owned(),
                g["first_queue"].as_u64().unwrap(),
                g["queues"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_spread_over_two_groups_is_one_queue_space_from_any_node() {
    let ns = format!("127.0.0.1:{}", free_port());
    let g1 = Cluster::start_with_env(
        1,
        &["--group", "g1", "--nameservers", &ns],
        vec![(1, secret_env())],
    );
    // An expiry that a loaded machine's late heartbeat does not trip (a group missing
    // from the routes makes the spread topic answer 503), short enough for the last step.
    let _ns = nameserver_expiring(
        &ns,
        std::fs::File::create(g1.dir.path().join("ns.log")).unwrap(),
        5000,
    );
    let (g2_addr, g2) = group_g2(&g1, &ns);
    let mut g2 = Some(g2);
    let g1_leader = g1.wait_leader().await;
    let at_g1 = |path: &str| g1.url(g1_leader, path);
    let at_g2 = |path: &str| format!("http://{g2_addr}{path}");

    // Created through g1's node once it knows both groups; four queues, two per group.
    let made = g1
        .wait_for("g1's node to spread a topic over both groups", || async {
            let (s, v) = put_json(
                &g1,
                at_g1("/v1/topics/wide"),
                json!({"queues": 4, "groups": ["g1", "g2"]}),
            )
            .await;
            (s == 200).then_some(v)
        })
        .await;
    assert_eq!(made["queues"], 4, "{made}");
    assert_eq!(
        slices(&made),
        [("g1".into(), 0, 2), ("g2".into(), 2, 2)],
        "{made}"
    );
    // An unknown group, or a topic's queues shrinking, is refused with the field named.
    let (s, v) = put_json(
        &g1,
        at_g1("/v1/topics/other"),
        json!({"queues": 2, "groups": ["g1", "g9"]}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("groups[1]"),
        "{v}"
    );

    // g2's node learns the layout from the NameServer and shows the whole topic.
    let shown = g1
        .wait_for("g2's node to show the spread topic", || async {
            let v = get_ready(&g1, at_g2("/v1/topics/wide")).await;
            (v["queue_stats"].as_array().map(Vec::len) == Some(4)).then_some(v)
        })
        .await;
    assert_eq!(slices(&shown), slices(&made));

    // One batch through g2's node: explicit queues on both groups, a key, no key; the
    // results come in request order, each stored by the group holding its queue.
    let batch = json!({"messages": [
        {"body": "q0", "queue": 0}, {"body": "q3", "queue": 3},
        {"body": "k1", "key": "order-1"}, {"body": "any"},
        {"body": "q2", "queue": 2}, {"body": "q1", "queue": 1},
    ]});
    let (s, v) = post_ready(&g1, at_g2("/v1/topics/wide/messages"), batch).await;
    assert_eq!(s, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    for (i, want) in [(0, 0), (1, 3), (4, 2), (5, 1)] {
        assert_eq!(results[i]["queue"], want, "{v}");
    }
    for r in results {
        let q = r["queue"].as_u64().unwrap();
        let group = if q < 2 { "g1." } else { "g2." };
        assert!(r["msg_id"].as_str().unwrap().starts_with(group), "{r}");
    }
    // The same key lands in the same queue again.
    let (_, again) = post_ready(
        &g1,
        at_g1("/v1/topics/wide/messages"),
        json!({"messages": [{"body": "k1 again", "key": "order-1"}]}),
    )
    .await;
    assert_eq!(again["results"][0]["queue"], results[2]["queue"], "{again}");
    // A batch without queues or keys goes to one group as a whole (atomic as a whole).
    let (s, free) = post_ready(
        &g1,
        at_g1("/v1/topics/wide/messages"),
        json!({"messages": [{"body": "f1"}, {"body": "f2"}, {"body": "f3"}]}),
    )
    .await;
    assert_eq!(s, 200, "{free}");
    let stored_by: std::collections::BTreeSet<&str> = free["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["msg_id"].as_str().unwrap().split('.').next().unwrap())
        .collect();
    assert_eq!(stored_by.len(), 1, "{free}");

    // Reads by queue from either node; a key query over both groups; a message by id.
    let read = get_ready(&g1, at_g1("/v1/topics/wide/queues/3/messages?offset=0")).await;
    assert_eq!(read["messages"][0]["body"], "q3", "{read}");
    let by_key = get_ready(&g1, at_g2("/v1/topics/wide/messages?key=order-1")).await;
    assert_eq!(by_key["messages"].as_array().unwrap().len(), 2, "{by_key}");
    let id = results[1]["msg_id"].as_str().unwrap();
    let m = get_ready(&g1, at_g1(&format!("/v1/messages/{id}"))).await;
    assert_eq!(m["body"], "q3", "{m}");
    let bad = c_status(&g1, at_g1("/v1/topics/wide/queues/4/messages?offset=0")).await;
    assert_eq!(bad, 400);

    // A consumer group's settings reach every broker group (each keeps its progress).
    let (s, v) = put_json(
        &g1,
        at_g1("/v1/groups/billing"),
        json!({"retry_backoff_ms": [100, 200]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // Receive draws from both groups: max 2 gets one from each (the shares go round).
    let (s, got) = post_ready(
        &g1,
        at_g1("/v1/groups/billing/topics/wide/receive"),
        json!({"consumer": "c1", "max": 2}),
    )
    .await;
    assert_eq!(s, 200, "{got}");
    let queues: Vec<u64> = got["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["queue"].as_u64().unwrap())
        .collect();
    assert_eq!(queues.len(), 2, "{got}");
    assert!(
        queues.iter().any(|q| *q < 2) && queues.iter().any(|q| *q >= 2),
        "{got}"
    );
    // Everything else, then acks through the other group's node: all taken, none again.
    let mut receipts: Vec<Value> = got["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["receipt"].clone())
        .collect();
    let (_, rest) = post_ready(
        &g1,
        at_g2("/v1/groups/billing/topics/wide/receive"),
        json!({"consumer": "c1", "max": 32}),
    )
    .await;
    receipts.extend(
        rest["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["receipt"].clone()),
    );
    assert_eq!(receipts.len(), 10, "{rest}");
    let (_, acked) = post_ready(
        &g1,
        at_g2("/v1/groups/billing/topics/wide/ack"),
        json!({"receipts": receipts}),
    )
    .await;
    let oks = acked["results"].as_array().unwrap();
    assert_eq!(oks.len(), 10);
    assert!(oks.iter().all(|r| r["ok"] == true), "{acked}");
    let (_, none) = post_ready(
        &g1,
        at_g1("/v1/groups/billing/topics/wide/receive"),
        json!({"consumer": "c1", "max": 32, "wait_ms": 300}),
    )
    .await;
    assert_eq!(none["messages"], json!([]), "{none}");
    // Once it has consumed there, g2 shows the settings set through g1's node.
    let g2_own = c_json_forwarded(&g1, at_g2("/v1/groups/billing")).await;
    assert_eq!(g2_own["retry_backoff_ms"], json!([100, 200]), "{g2_own}");

    // Offsets and lag over the whole queue space, each queue once.
    let offs = get_ready(&g1, at_g2("/v1/groups/billing/offsets?topic=wide")).await;
    let rows: Vec<u64> = offs["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["queue"].as_u64().unwrap())
        .collect();
    assert_eq!(rows, [0, 1, 2, 3], "{offs}");
    // Heartbeats: both consumers share all four queues, whichever node they ask.
    post_ready(
        &g1,
        at_g1("/v1/groups/billing/heartbeat"),
        json!({"consumer": "c1", "topics": ["wide"]}),
    )
    .await;
    let (_, hb2) = post_ready(
        &g1,
        at_g2("/v1/groups/billing/heartbeat"),
        json!({"consumer": "c2", "topics": ["wide"]}),
    )
    .await;
    assert_eq!(hb2["assignments"][0]["queues"], json!([1, 3]), "{hb2}");
    let (_, hb1) = post_ready(
        &g1,
        at_g2("/v1/groups/billing/heartbeat"),
        json!({"consumer": "c1", "topics": ["wide"]}),
    )
    .await;
    assert_eq!(hb1["assignments"][0]["queues"], json!([0, 2]), "{hb1}");

    // A topic made whole in g1, grown onto g2: its message stays where it is.
    g1.create_topic(g1_leader, "solo", 2).await;
    let (_, first) = post_ready(
        &g1,
        at_g1("/v1/topics/solo/messages"),
        json!({"messages": [{"body": "before", "queue": 1}]}),
    )
    .await;
    let grown = g1
        .wait_for("solo to grow onto g2", || async {
            let (s, v) = put_json(
                &g1,
                at_g2("/v1/topics/solo"),
                json!({"queues": 4, "groups": ["g2"]}),
            )
            .await;
            (s == 200).then_some(v)
        })
        .await;
    assert_eq!(
        slices(&grown),
        [("g1".into(), 0, 2), ("g2".into(), 2, 2)],
        "{grown}"
    );
    let old = get_ready(&g1, at_g2("/v1/topics/solo/queues/1/messages?offset=0")).await;
    assert_eq!(
        old["messages"][0]["msg_id"], first["results"][0]["msg_id"],
        "{old}"
    );

    // g2 down: a batch over both groups keeps g1's share and says why g2's failed.
    drop(g2.take());
    let (s, v) = post_json(
        &g1,
        at_g1("/v1/topics/wide/messages"),
        json!({"messages": [{"body": "to g1", "queue": 0}, {"body": "to g2", "queue": 2}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["results"][0]["msg_id"].as_str().is_some(), "{v}");
    assert_eq!(v["results"][1]["error"]["code"], "UNAVAILABLE", "{v}");
    // Once g2 has dropped out of the routes the topic does not look shorter (keys would
    // hash to other queues): g1's part knows the queue space has four queues.
    g1.wait_for("the topic refused while a part is missing", || async {
        let r = g1
            .http
            .post(at_g1("/v1/topics/wide/messages"))
            .json(&json!({"messages": [{"body": "k", "key": "x"}]}))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        let v: Value = r.json().await.ok()?;
        let why = v["error"]["message"].as_str()?.to_owned();
        (status == 503 && why.contains("has 4 queues")).then_some(())
    })
    .await;
}

/// A GET's status, retried while it is 503.
async fn c_status(c: &Cluster, url: String) -> u16 {
    c.wait_for("a status other than 503", || async {
        let s = c.http.get(url.clone()).send().await.ok()?.status().as_u16();
        (s != 503).then_some(s)
    })
    .await
}

/// A GET answered by the node asked for its own broker group only (marked as already
/// routed, so it is not joined with the other groups' views).
async fn c_json_forwarded(c: &Cluster, url: String) -> Value {
    let r = c
        .http
        .get(url)
        .header("x-raftmq-forwarded", "1")
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}
