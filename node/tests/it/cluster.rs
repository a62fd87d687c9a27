//! Test harness: real `raftmq serve` processes on 127.0.0.1, free ports, own data dirs.
//! Every process is killed when the `Cluster` is dropped, even when a test fails.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One cluster at a time: several 3-node groups at once on 2 cores would make elections
/// flap and tests slow for no gain.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

pub(crate) struct Node {
    pub(crate) id: u64,
    pub(crate) addr: String,
    pub(crate) data_dir: PathBuf,
    child: Option<Child>,
}

pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Node>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) http: reqwest::Client,
    /// With TLS: where `raftmq certs` put the CA and the nodes' certificate.
    pub(crate) tls_dir: Option<PathBuf>,
    peers: String,
    extra: Vec<String>,
    /// Extra environment per node (a skewed clock through libfaketime).
    env: Vec<(u64, Vec<(String, String)>)>,
    _guard: MutexGuard<'static, ()>,
}

/// Debian's libfaketime (installed by `scripts/setup`).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The environment that runs a node with its wall clock moved by `skew` (libfaketime's
/// syntax, e.g. `+10d`); its monotonic clock (timers, timeouts) stays true.
pub(crate) fn skewed_clock(skew: &str) -> Vec<(String, String)> {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: run scripts/setup"
    );
    [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME", skew),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Runs `raftmq certs DIR --name NAME`: the directory's CA (made on first use) issues a
/// certificate for 127.0.0.1.
pub(crate) fn make_certs(dir: &std::path::Path, name: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_raftmq"))
        .arg("certs")
        .arg(dir)
        .args(["--name", name, "--hosts", "127.0.0.1"])
        .output()
        .expect("run raftmq certs");
    assert!(out.status.success(), "raftmq certs: {out:?}");
}

fn client_builder(tls_dir: Option<&std::path::Path>) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20));
    if let Some(d) = tls_dir {
        let ca = std::fs::read(d.join("ca.pem")).unwrap();
        b = b
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
    }
    b
}

/// A port that is free now, below Linux's ephemeral range (32768-60999): a port the kernel
/// hands out (`bind(0)`) can be taken as the local port of an outgoing connection (a
/// node's peer client) before the node that was meant to listen on it starts, which once
/// left a test with two nodes of three.
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 1000) as u16 * 12,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..12_000 {
        let mut port = NEXT.fetch_add(1, Ordering::Relaxed);
        if port >= 32_000 {
            NEXT.store(20_000, Ordering::Relaxed);
            port = 20_000;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000 on 127.0.0.1");
}

impl Cluster {
    /// Starts `n` nodes forming one group.
    pub(crate) fn start(n: u64) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// Starts `n` nodes with extra `raftmq serve` flags.
    pub(crate) fn start_with(n: u64, extra: &[&str]) -> Cluster {
        Cluster::start_with_env(n, extra, Vec::new())
    }

    /// Starts `n` nodes with extra flags and extra environment for some of them.
    pub(crate) fn start_with_env(
        n: u64,
        extra: &[&str],
        env: Vec<(u64, Vec<(String, String)>)>,
    ) -> Cluster {
        Cluster::start_full(n, extra, env, None, false)
    }

    /// Starts `n` nodes serving HTTPS with one certificate from a CA made for the test
    /// (peers verify each other); the harness's client trusts that CA.
    pub(crate) fn start_tls(n: u64, extra: &[&str]) -> Cluster {
        Cluster::start_full(n, extra, Vec::new(), None, true)
    }

    /// Starts `n` nodes whose data directories live under `data_root`.
    pub(crate) fn start_in(n: u64, extra: &[&str], data_root: &std::path::Path) -> Cluster {
        Cluster::start_full(n, extra, Vec::new(), Some(data_root), false)
    }

    fn start_full(
        n: u64,
        extra: &[&str],
        env: Vec<(u64, Vec<(String, String)>)>,
        data_root: Option<&std::path::Path>,
        tls: bool,
    ) -> Cluster {
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = tls.then(|| {
            let tls_dir = dir.path().join("tls");
            make_certs(&tls_dir, "node");
            tls_dir
        });
        let root = data_root.map_or_else(|| dir.path().to_path_buf(), |r| r.to_path_buf());
        let nodes: Vec<Node> = (1..=n)
            .map(|id| Node {
                id,
                addr: format!("127.0.0.1:{}", free_port()),
                data_dir: root.join(format!("node{id}")),
                child: None,
            })
            .collect();
        let peers = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            nodes,
            dir,
            http: client_builder(tls_dir.as_deref()).build().unwrap(),
            peers,
            extra: {
                let mut e: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
                if let Some(d) = &tls_dir {
                    for (flag, file) in [
                        ("--tls-cert", "node.pem"),
                        ("--tls-key", "node-key.pem"),
                        ("--tls-ca", "ca.pem"),
                    ] {
                        e.extend([flag.to_owned(), d.join(file).display().to_string()]);
                    }
                }
                // Tests must not depend on how full the machine's disk is.
                if !e.iter().any(|a| a == "--min-free-bytes") {
                    e.extend(["--min-free-bytes".to_owned(), "0".to_owned()]);
                }
                e
            },
            env,
            tls_dir,
            _guard: guard,
        };
        for id in 1..=n {
            c.spawn(id, &[]);
        }
        c
    }

    pub(crate) fn node(&self, id: u64) -> &Node {
        self.nodes.iter().find(|n| n.id == id).expect("known node")
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("known node")
    }

    /// Adds a node that will join (not form) the group; returns its id.
    pub(crate) fn add_joiner(&mut self) -> u64 {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        self.nodes.push(Node {
            id,
            addr: format!("127.0.0.1:{}", free_port()),
            data_dir: self.dir.path().join(format!("node{id}")),
            child: None,
        });
        let peers = format!("{},{}={}", self.peers, id, self.node(id).addr);
        self.spawn_with_peers(id, &peers, &["--join"]);
        id
    }

    fn spawn(&mut self, id: u64, extra: &[&str]) {
        let peers = self.peers.clone();
        self.spawn_with_peers(id, &peers, extra);
    }

    fn spawn_with_peers(&mut self, id: u64, peers: &str, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node{id}.log")))
            .unwrap();
        let node = self.node(id);
        let env = self
            .env
            .iter()
            .filter(|(n, _)| *n == id)
            .flat_map(|(_, e)| e.clone());
        let child = Command::new(env!("CARGO_BIN_EXE_raftmq"))
            .args([
                "serve",
                "--node-id",
                &id.to_string(),
                "--listen",
                &node.addr,
            ])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--peers", peers, "--auto-create-topics", "true"])
            .args(["--segment-size", "65536"])
            .args(&self.extra)
            .args(extra)
            .env("RAFTMQ_LOG", "info,openraft=info")
            .envs(env)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start raftmq serve");
        self.node_mut(id).child = Some(child);
    }

    /// What node `id` wrote to stderr so far.
    pub(crate) fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{id}.log"))).unwrap_or_default()
    }

    /// kill -9.
    pub(crate) fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.node_mut(id).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits (generously) until node `id`'s process exits on its own; its exit status.
    pub(crate) async fn wait_exit(&mut self, id: u64) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let child = self.node_mut(id).child.as_mut().expect("node was started");
            if let Some(status) = child.try_wait().unwrap() {
                self.node_mut(id).child = None;
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {id} still runs after 60 s; log: {}",
                self.log_of(id)
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Starts a killed node again with its data.
    pub(crate) fn restart(&mut self, id: u64) {
        self.kill(id);
        self.spawn(id, &[]);
    }

    /// `DELETE /v1/cluster/members/{id}` through node `via`: its status and body.
    pub(crate) async fn remove_member(&self, via: u64, id: u64) -> (u16, Value) {
        self.send(
            reqwest::Method::DELETE,
            via,
            &format!("/v1/cluster/members/{id}"),
            &serde_json::json!({}),
        )
        .await
        .unwrap()
    }

    /// Replaces a node's data as docs/operations.md says: removed from the group through
    /// `via`, killed, its data dir deleted, started with `--join`, added back as a voter
    /// (a learner until it has caught up).
    pub(crate) async fn replace_data(&mut self, via: u64, id: u64) {
        let (s, v) = self.remove_member(via, id).await;
        assert_eq!(s, 200, "{v}");
        self.kill(id);
        std::fs::remove_dir_all(&self.node(id).data_dir).ok();
        self.spawn(id, &["--join"]);
        let addr = self.node(id).addr.clone();
        let (s, v) = self
            .post(
                via,
                "/v1/cluster/members",
                &serde_json::json!({"id": id, "addr": addr, "voter": true}),
            )
            .await
            .unwrap();
        assert_eq!(s, 200, "{v}");
    }

    pub(crate) fn live(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    pub(crate) fn url(&self, id: u64, path: &str) -> String {
        let scheme = if self.tls_dir.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{}", self.node(id).addr, path)
    }

    /// A client builder for this cluster (trusting its CA when it runs TLS).
    pub(crate) fn client_builder(&self) -> reqwest::ClientBuilder {
        client_builder(self.tls_dir.as_deref())
    }

    /// The OS process id of node `id`.
    pub(crate) fn pid(&self, id: u64) -> u32 {
        self.node(id).child.as_ref().expect("a live node").id()
    }

    pub(crate) async fn get(&self, id: u64, path: &str) -> Result<(u16, Value), reqwest::Error> {
        let r = self.http.get(self.url(id, path)).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        id: u64,
        path: &str,
        body: &Value,
    ) -> Result<(u16, Value), reqwest::Error> {
        let r = self
            .http
            .request(method, self.url(id, path))
            .json(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    pub(crate) async fn post(
        &self,
        id: u64,
        path: &str,
        body: &Value,
    ) -> Result<(u16, Value), reqwest::Error> {
        self.send(reqwest::Method::POST, id, path, body).await
    }

    /// Waits until every live node reports the same leader, which is live; returns it.
    pub(crate) async fn wait_leader(&self) -> u64 {
        self.wait_for("a leader all live nodes agree on", || async {
            let mut leader = None;
            for id in self.live() {
                let (_, c) = self.get(id, "/v1/cluster").await.ok()?;
                let l = c["leader_id"].as_u64()?;
                if leader.is_some_and(|x| x != l) || !self.live().contains(&l) {
                    return None;
                }
                leader = Some(l);
            }
            leader
        })
        .await
    }

    /// Polls `check` until it returns `Some`, failing the test after [`DEADLINE`].
    pub(crate) async fn wait_for<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; logs in {}",
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Hands leadership to `to` and waits until every live node agrees.
    pub(crate) async fn make_leader(&self, to: u64) {
        self.wait_for("leadership to move", || async {
            let leader = self.wait_leader().await;
            if leader == to {
                return Some(());
            }
            let _ = self
                .post(leader, "/v1/cluster/leader", &serde_json::json!({"to": to}))
                .await;
            None
        })
        .await
    }

    /// The applied index node `id` reports.
    pub(crate) async fn applied_index(&self, id: u64) -> Option<u64> {
        let (_, c) = self.get(id, "/v1/cluster").await.ok()?;
        c["applied_index"].as_u64()
    }

    /// Creates `topic` with `queues` queues through `via`.
    pub(crate) async fn create_topic(&self, via: u64, topic: &str, queues: u64) {
        let (s, v) = self
            .send(
                reqwest::Method::PUT,
                via,
                &format!("/v1/topics/{topic}"),
                &serde_json::json!({"queues": queues}),
            )
            .await
            .unwrap();
        assert_eq!(s, 200, "creating {topic}: {v}");
    }

    /// Produces `prefix0`, `prefix1`, … through `via`, each acknowledged; returns them.
    pub(crate) async fn produce_acked(
        &self,
        via: u64,
        topic: &str,
        prefix: &str,
        n: u64,
    ) -> Vec<String> {
        let mut acked = Vec::new();
        for i in 0..n {
            let body = format!("{prefix}{i}");
            self.produce(via, topic, &body)
                .await
                .expect("a healthy group acknowledges");
            acked.push(body);
        }
        acked
    }

    /// Produces one message with a unique body through `via`; `Some((queue, offset))` if
    /// acknowledged.
    pub(crate) async fn produce(&self, via: u64, topic: &str, body: &str) -> Option<(u64, u64)> {
        let (s, v) = self
            .post(
                via,
                &format!("/v1/topics/{topic}/messages"),
                &serde_json::json!({"messages": [{"body": body}]}),
            )
            .await
            .ok()?;
        if s != 200 {
            return None;
        }
        Some((
            v["results"][0]["queue"].as_u64()?,
            v["results"][0]["offset"].as_u64()?,
        ))
    }

    /// Every body in a queue as read from node `id`.
    pub(crate) async fn read_all(&self, id: u64, topic: &str, queue: u64) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let (s, v) = self
                .get(
                    id,
                    &format!("/v1/topics/{topic}/queues/{queue}/messages?offset={offset}&max=1000"),
                )
                .await
                .ok()?;
            if s != 200 {
                return None;
            }
            let msgs = v["messages"].as_array()?;
            if msgs.is_empty() {
                return Some(out);
            }
            for m in msgs {
                out.push(m["body"].as_str()?.to_owned());
            }
            offset = v["next_offset"].as_u64()?;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            // Keep the logs of a failed test.
            let path = self.dir.path().to_path_buf();
            eprintln!("node logs kept in {}", path.display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().unwrap(),
            ));
        }
    }
}
