//! NameServers: broker nodes of two groups register by heartbeat (signed with the cluster
//! secret), every NameServer serves the same routes, a topic's queue space runs over the
//! groups holding it, and a node that stops heartbeating drops out after the expiry.

use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::cluster::{Cluster, free_port};

const SECRET: &str = "a-cluster-secret-for-tests";

/// A process the test started, killed when the test ends.
pub(crate) struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn nameserver(addr: &str, log: std::fs::File) -> Proc {
    nameserver_expiring(addr, log, 1500)
}

/// A NameServer dropping a node after `expiry_ms` without a heartbeat.
pub(crate) fn nameserver_expiring(addr: &str, log: std::fs::File, expiry_ms: u64) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_raftmq"))
            .args(["nameserver", "--listen", addr])
            .args(["--route-expiry-ms", &expiry_ms.to_string()])
            .env("RAFTMQ_CLUSTER_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start raftmq nameserver"),
    )
}

pub(crate) fn secret_env() -> Vec<(String, String)> {
    vec![("RAFTMQ_CLUSTER_SECRET".into(), SECRET.into())]
}

async fn routes(c: &Cluster, ns: &str, path: &str) -> (u16, Value) {
    let r = c
        .http
        .get(format!("http://{ns}{path}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn groups(v: &Value) -> Vec<String> {
    v["groups"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|g| g["group"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Group g2: one node started by hand (a Cluster is one group), registering with `list`.
pub(crate) fn group_g2(g1: &Cluster, list: &str) -> (String, Proc) {
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(g1.dir.path().join("g2.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_raftmq"))
        .args([
            "serve",
            "--node-id",
            "1",
            "--listen",
            &addr,
            "--group",
            "g2",
        ])
        .arg("--data-dir")
        .arg(g1.dir.path().join("g2"))
        .args(["--peers", &format!("1={addr}"), "--min-free-bytes", "0"])
        .args(["--nameservers", list])
        .env("RAFTMQ_CLUSTER_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the g2 node");
    (addr, Proc(child))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_register_with_every_nameserver_and_drop_out_when_silent() {
    let ns: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let list = ns.join(",");
    let mut g1 = Cluster::start_with_env(
        1,
        &["--group", "g1", "--nameservers", &list],
        vec![(1, secret_env())],
    );
    let logs = |name: &str| std::fs::File::create(g1.dir.path().join(name)).unwrap();
    let _ns: Vec<Proc> = ns
        .iter()
        .enumerate()
        .map(|(i, a)| nameserver(a, logs(&format!("ns{i}.log"))))
        .collect();
    let (g2_addr, g2) = group_g2(&g1, &list);
    let mut g2 = Some(g2);
    let g1_leader = g1.wait_leader().await;
    g1.create_topic(g1_leader, "orders", 4).await;
    g1.wait_for("the g2 node to take a topic", || async {
        let r = g1
            .http
            .put(format!("http://{g2_addr}/v1/topics/orders"))
            .json(&json!({"queues": 2}))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    // Every NameServer: both groups, each with its leader, and the topic over both.
    for a in &ns {
        let (_, all) = g1
            .wait_for("both groups in the routes", || async {
                let (s, v) = routes(&g1, a, "/v1/routes").await;
                let both = s == 200 && groups(&v) == ["g1", "g2"];
                // Both groups' registrations carry the topic (each heartbeats on its own).
                let topics = (0..2).all(|g| {
                    v["groups"][g]["topics"]
                        .as_array()
                        .is_some_and(|t| !t.is_empty())
                });
                (both && topics).then_some((s, v))
            })
            .await;
        assert_eq!(all["groups"][1]["leader"], json!(g2_addr), "{all}");
        assert_eq!(all["groups"][0]["healthy"], true);
        let (s, t) = routes(&g1, a, "/v1/routes/orders").await;
        assert_eq!(s, 200, "{t}");
        let slices: Vec<(String, u64, u64)> = t["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| {
                (
                    q["group"].as_str().unwrap().to_owned(),
                    q["first_queue"].as_u64().unwrap(),
                    q["queues"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(slices, [("g1".into(), 0, 4), ("g2".into(), 4, 2)]);
        let (s, _) = routes(&g1, a, "/v1/routes/nope").await;
        assert_eq!(s, 404);
    }

    // An unsigned registration is refused: nobody else can plant a route.
    let r = g1
        .http
        .post(format!("http://{}/v1/registrations", ns[0]))
        .json(
            &json!({"group": "evil", "node_id": 1, "addr": "127.0.0.1:1", "role": "leader",
                      "leader": null, "term": 99, "topics": [{"topic": "orders", "queues": 1}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // g2 goes silent: it drops out of every NameServer's routes after the expiry.
    drop(g2.take());
    for a in &ns {
        g1.wait_for("g2 to expire from the routes", || async {
            let (_, v) = routes(&g1, a, "/v1/routes").await;
            (groups(&v) == ["g1"]).then_some(())
        })
        .await;
        let (_, t) = routes(&g1, a, "/v1/routes/orders").await;
        assert_eq!(t["queues"].as_array().unwrap().len(), 1, "{t}");
    }
    g1.kill(g1_leader);
}

pub(crate) async fn get_json(c: &Cluster, url: String) -> Value {
    c.http.get(url).send().await.unwrap().json().await.unwrap()
}

pub(crate) async fn post_json(c: &Cluster, url: String, body: Value) -> (u16, Value) {
    let r = c.http.post(url).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Any node serves every topic: a request for a topic only another group holds, or for an
/// id naming another group, goes to that group and is answered as if asked there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_routes_to_the_group_that_holds_the_topic() {
    let ns = format!("127.0.0.1:{}", free_port());
    let g1 = Cluster::start_with_env(
        1,
        &["--group", "g1", "--nameservers", &ns],
        vec![(1, secret_env())],
    );
    let _ns = nameserver(
        &ns,
        std::fs::File::create(g1.dir.path().join("ns.log")).unwrap(),
    );
    let (g2_addr, _g2) = group_g2(&g1, &ns);
    let g1_leader = g1.wait_leader().await;
    g1.create_topic(g1_leader, "here", 1).await;
    let http = &g1.http;
    g1.wait_for("g2 to take a topic", || async {
        let r = http
            .put(format!("http://{g2_addr}/v1/topics/there"))
            .json(&json!({"queues": 1}))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    // Once g1's node has the routes, the topic is found through it (a GET creates nothing).
    let g1_url = |path: &str| g1.url(g1_leader, path);
    let shown: Value = g1
        .wait_for("g1's node to route to g2", || async {
            let r = http.get(g1_url("/v1/topics/there")).send().await.ok()?;
            if !r.status().is_success() {
                return None;
            }
            r.json().await.ok()
        })
        .await;
    assert_eq!(shown["queues"], 1, "{shown}");
    // A percent-encoded name is the same topic, for routing as for the handlers.
    let encoded = http.get(g1_url("/v1/topics/%74here")).send().await.unwrap();
    assert_eq!(encoded.status().as_u16(), 200);

    let (s, v) = post_json(
        &g1,
        g1_url("/v1/topics/there/messages"),
        json!({"messages": [{"body": "via g1"}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let id = v["results"][0]["msg_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("g2."), "stored by g2: {v}");
    let read = get_json(&g1, g1_url("/v1/topics/there/queues/0/messages?offset=0")).await;
    assert_eq!(read["messages"][0]["body"], "via g1", "{read}");
    let m = get_json(&g1, g1_url(&format!("/v1/messages/{id}"))).await;
    assert_eq!(m["body"], "via g1", "{m}");
    let (_, got) = post_json(
        &g1,
        g1_url("/v1/groups/billing/topics/there/receive"),
        json!({"consumer": "c", "max": 10}),
    )
    .await;
    let receipt = got["messages"][0]["receipt"].as_str().unwrap().to_owned();
    let (_, acked) = post_json(
        &g1,
        g1_url("/v1/groups/billing/topics/there/ack"),
        json!({"receipts": [receipt]}),
    )
    .await;
    assert_eq!(acked["results"][0]["ok"], true, "{acked}");

    // The other way: g1's topic through g2's node.
    let through_g2 = g1
        .wait_for("g2's node to route to g1", || async {
            let (s, v) = post_json(
                &g1,
                format!("http://{g2_addr}/v1/topics/here/messages"),
                json!({"messages": [{"body": "via g2"}]}),
            )
            .await;
            (s == 200).then_some(v)
        })
        .await;
    let id = through_g2["results"][0]["msg_id"].as_str().unwrap();
    assert!(id.starts_with("g1."), "{through_g2}");
    // The cluster view of any node lists every group.
    let view = get_json(&g1, g1_url("/v1/cluster")).await;
    let groups: Vec<&str> = view["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["g1", "g2"], "{view}");
    // The topic list of any node holds every group's topics, each in the group that made
    // it: no group made a topic of its own for the other's.
    let all = get_json(&g1, g1_url("/v1/topics")).await;
    let places: Vec<(&str, &str)> = all["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let groups = t["groups"].as_array().unwrap();
            assert_eq!(groups.len(), 1, "{t}");
            (
                t["name"].as_str().unwrap(),
                groups[0]["group"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(places, [("here", "g1"), ("there", "g2")], "{all}");
}
