//! NameServers: broker nodes of two groups register by heartbeat (signed with the cluster
//! secret), every NameServer serves the same routes, a topic's queue space runs over the
//! groups holding it, and a node that stops heartbeating drops out after the expiry.

use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::cluster::{Cluster, free_port};

const SECRET: &str = "a-cluster-secret-for-tests";

/// A process the test started, killed when the test ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nameserver(addr: &str, log: std::fs::File) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_raftmq"))
            .args(["nameserver", "--listen", addr, "--route-expiry-ms", "1500"])
            .env("RAFTMQ_CLUSTER_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start raftmq nameserver"),
    )
}

fn secret_env() -> Vec<(String, String)> {
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
    // Group g2: one more node, started by hand (a Cluster is one group).
    let g2_addr = format!("127.0.0.1:{}", free_port());
    let g2_dir = g1.dir.path().join("g2");
    let mut g2 = Some(Proc(
        Command::new(env!("CARGO_BIN_EXE_raftmq"))
            .args([
                "serve",
                "--node-id",
                "1",
                "--listen",
                &g2_addr,
                "--group",
                "g2",
            ])
            .arg("--data-dir")
            .arg(&g2_dir)
            .args(["--peers", &format!("1={g2_addr}"), "--min-free-bytes", "0"])
            .args(["--nameservers", &list])
            .env("RAFTMQ_CLUSTER_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(logs("g2.log"))
            .spawn()
            .expect("start the g2 node"),
    ));
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
                let topics = v["groups"][1]["topics"]
                    .as_array()
                    .is_some_and(|t| !t.is_empty());
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
