//! The cluster under test: the `raftmq serve` processes the bench starts (`--spawn`), the
//! HTTP client every mode shares, and finding the leader.
//!
//! Must never: bind or connect outside 127.0.0.0/8 for a spawned cluster, or leave a
//! process it started running (dropping [`Spawned`] kills them all).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// A cluster the bench started.
pub(crate) struct Spawned {
    children: Vec<(u64, Option<Child>, SocketAddr, PathBuf)>,
    peers: String,
    bin: PathBuf,
    flush: String,
    /// The admin token the nodes are started with (authentication on), if any.
    token: Option<String>,
    /// With TLS: `raftmq certs` made a CA and the nodes' certificate here.
    tls_dir: Option<PathBuf>,
    /// More `raftmq serve` flags (`--group`, `--nameservers`).
    extra: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Spawned {
    pub(crate) fn start(
        flush: &str,
        server_bin: Option<&Path>,
        token: Option<&str>,
        tls: bool,
    ) -> anyhow::Result<Spawned> {
        Spawned::start_with(flush, server_bin, token, tls, &[])
    }

    /// [`Spawned::start`] with more `raftmq serve` flags for every node.
    pub(crate) fn start_with(
        flush: &str,
        server_bin: Option<&Path>,
        token: Option<&str>,
        tls: bool,
        extra: &[String],
    ) -> anyhow::Result<Spawned> {
        let dir = tempfile::Builder::new().prefix("raftmq-bench-").tempdir()?;
        let bin = match server_bin {
            Some(b) => b.to_path_buf(),
            None => std::env::current_exe()?.with_file_name("raftmq"),
        };
        if !bin.exists() {
            bail!(
                "--spawn needs the raftmq binary at {} (build it with `cargo build --release -p raftmq-node`, or pass --server-bin)",
                bin.display()
            );
        }
        let addrs: Vec<SocketAddr> = (0..3)
            .map(|_| -> anyhow::Result<SocketAddr> {
                Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
            })
            .collect::<anyhow::Result<_>>()?;
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let tls_dir = if tls {
            let certs = dir.path().join("tls");
            let out = Command::new(&bin)
                .arg("certs")
                .arg(&certs)
                .args(["--hosts", "127.0.0.1"])
                .output()?;
            if !out.status.success() {
                bail!("raftmq certs: {}", String::from_utf8_lossy(&out.stderr));
            }
            Some(certs)
        } else {
            None
        };
        let mut s = Spawned {
            children: Vec::new(),
            peers,
            bin,
            flush: flush.to_owned(),
            token: token.map(str::to_owned),
            tls_dir,
            extra: extra.to_vec(),
            _dir: dir,
        };
        for (i, a) in addrs.iter().enumerate() {
            let data = s._dir.path().join(format!("n{}", i + 1));
            s.children.push((i as u64 + 1, None, *a, data));
            s.spawn(i as u64 + 1)?;
        }
        Ok(s)
    }

    pub(crate) fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let (bin, peers, flush) = (self.bin.clone(), self.peers.clone(), self.flush.clone());
        let entry = self
            .children
            .iter_mut()
            .find(|c| c.0 == id)
            .context("node")?;
        let mut cmd = Command::new(bin);
        if let Some(t) = &self.token {
            cmd.env("RAFTMQ_ADMIN_TOKEN", t);
        }
        cmd.args([
            "serve",
            "--node-id",
            &id.to_string(),
            "--listen",
            &entry.2.to_string(),
        ]);
        if let Some(d) = &self.tls_dir {
            cmd.arg("--tls-cert")
                .arg(d.join("node.pem"))
                .arg("--tls-key")
                .arg(d.join("node-key.pem"))
                .arg("--tls-ca")
                .arg(d.join("ca.pem"));
        }
        let child = cmd
            .arg("--data-dir")
            .arg(&entry.3)
            .args([
                "--peers",
                &peers,
                "--flush",
                &flush,
                "--auto-create-topics",
                "true",
            ])
            .args(&self.extra)
            .env("RAFTMQ_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        entry.1 = Some(child);
        Ok(())
    }

    pub(crate) fn kill(&mut self, id: u64) {
        if let Some(c) = self.children.iter_mut().find(|c| c.0 == id)
            && let Some(mut child) = c.1.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn wipe(&mut self, id: u64) -> anyhow::Result<()> {
        self.kill(id);
        if let Some(c) = self.children.iter().find(|c| c.0 == id)
            && c.3.exists()
        {
            std::fs::remove_dir_all(&c.3)?;
        }
        Ok(())
    }

    fn scheme(&self) -> &'static str {
        if self.tls_dir.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub(crate) fn urls(&self) -> Vec<String> {
        self.children
            .iter()
            .map(|c| format!("{}://{}", self.scheme(), c.2))
            .collect()
    }

    pub(crate) fn url_of(&self, id: u64) -> Option<String> {
        self.children
            .iter()
            .find(|c| c.0 == id)
            .map(|c| format!("{}://{}", self.scheme(), c.2))
    }

    /// The process ids of the running nodes.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.children
            .iter()
            .filter_map(|c| c.1.as_ref().map(Child::id))
            .collect()
    }

    /// Bytes in a node's data directory (its log and indexes), each file once: snapshots
    /// hard-link the log's segments and RocksDB's files, which must not count twice.
    pub(crate) fn data_bytes(&self, id: u64) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fn walk(p: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
            let Ok(entries) = std::fs::read_dir(p) else {
                return 0;
            };
            let mut total = 0;
            for e in entries.flatten() {
                match e.metadata() {
                    Ok(m) if m.is_dir() => total += walk(&e.path(), seen),
                    Ok(m) if seen.insert((m.dev(), m.ino())) => total += m.len(),
                    _ => {}
                }
            }
            total
        }
        self.children
            .iter()
            .find(|c| c.0 == id)
            .map_or(0, |c| walk(&c.3, &mut std::collections::HashSet::new()))
    }

    /// The CA the nodes' certificate chains to, when they serve HTTPS.
    pub(crate) fn ca_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.tls_dir
            .as_ref()
            .map(|d| std::fs::read(d.join("ca.pem")).context("reading the run's CA"))
            .transpose()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        for id in 1..=3 {
            self.kill(id);
        }
    }
}

/// The bench's client: it sends `token`, and trusts only `ca_pem` for HTTPS if given.
pub(crate) fn client(
    token: Option<&str>,
    ca_pem: Option<&[u8]>,
) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let mut value: reqwest::header::HeaderValue = format!("Bearer {t}")
            .parse()
            .context("--token: not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let mut builder = reqwest::Client::builder()
        .default_headers(headers)
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(256);
    if let Some(ca) = ca_pem {
        builder = builder.tls_built_in_root_certs(false).add_root_certificate(
            reqwest::Certificate::from_pem(ca).context("--tls-ca: not a PEM certificate")?,
        );
    }
    Ok(builder.build()?)
}

pub(crate) async fn cluster(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(format!("{url}/v1/cluster"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// The commit index a node reports (0 if it does not answer).
pub(crate) async fn commit_index(http: &reqwest::Client, url: &str) -> u64 {
    cluster(http, url)
        .await
        .and_then(|c| c["commit_index"].as_u64())
        .unwrap_or(0)
}

/// Whether a node reports having applied up to `index`.
pub(crate) async fn applied_reaches(http: &reqwest::Client, url: &str, index: u64) -> bool {
    cluster(http, url)
        .await
        .is_some_and(|c| c["applied_index"].as_u64().unwrap_or(0) >= index)
}

/// Waits for a leader; returns its id and URL.
pub(crate) async fn leader(
    http: &reqwest::Client,
    urls: &[String],
    within: Duration,
) -> anyhow::Result<(u64, String)> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        for u in urls {
            if let Some(c) = cluster(http, u).await
                && let Some(l) = c["leader_id"].as_u64()
                && let Some(m) = c["members"]
                    .as_array()
                    .and_then(|ms| ms.iter().find(|m| m["id"] == l))
            {
                // The leader is reached the way the given URL was (http or https).
                let scheme = u.split_once("://").map_or("http", |(s, _)| s);
                let addr = m["addr"].as_str().unwrap_or_default();
                return Ok((l, format!("{scheme}://{addr}")));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no leader within {within:?}")
}
