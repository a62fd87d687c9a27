//! Cluster control: real `raftmq serve` processes with their own data dirs and logs, each
//! behind a harness-owned proxy ([`crate::proxy`]). Start, stop, kill -9, pause
//! (SIGSTOP/SIGCONT), restart, wipe, and skew a node's wall clock (libfaketime, which reads
//! each node's offset from a file the harness rewrites). Every process is killed when the
//! `Cluster` is dropped, which also happens on panic and when the run is interrupted.
//!
//! Must never: bind or connect outside 127.0.0.0/8.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::proxy::{Proxies, source_ip};

/// One node.
#[derive(Debug)]
pub struct Node {
    /// Node id.
    pub id: u64,
    /// Where it really listens.
    pub real: SocketAddr,
    /// Its proxy: the address peers and clients use.
    pub addr: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// A cluster of processes.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    /// Its nodes.
    pub nodes: Vec<Node>,
    /// The proxies in front of them.
    pub proxies: Proxies,
    peers: String,
    extra: Vec<String>,
    /// Whether nodes run under libfaketime, so their clocks can be skewed.
    skewable: bool,
}

/// Debian's libfaketime (package `libfaketime`, installed by `scripts/setup`), the build
/// for multithreaded programs.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Cluster {
    /// Prepares `n` nodes (proxies started, processes started) under `dir`; `skewable`:
    /// run them under libfaketime so [`Cluster::skew_clock`] works.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        n: u64,
        extra: &[String],
        skewable: bool,
    ) -> anyhow::Result<Cluster> {
        if skewable && !Path::new(LIBFAKETIME).exists() {
            anyhow::bail!("the clock nemesis needs {LIBFAKETIME} (scripts/setup installs it)");
        }
        let mut nodes = Vec::new();
        for id in 1..=n {
            nodes.push(Node {
                id,
                real: format!("127.0.0.1:{}", free_port()?).parse()?,
                addr: format!("127.0.0.1:{}", free_port()?).parse()?,
                data_dir: dir.join(format!("n{id}")),
                child: None,
                paused: false,
            });
        }
        let peers = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            nodes,
            proxies: Proxies::default(),
            peers,
            extra: extra.to_vec(),
            skewable,
        };
        for n in &c.nodes {
            c.proxies.spawn(n.id, n.addr, n.real).await?;
        }
        for id in 1..=n {
            if skewable {
                c.skew_clock(id, "+0")?;
            }
            c.start_node(id, false)?;
        }
        Ok(c)
    }

    fn clock_file(&self, id: u64) -> PathBuf {
        self.dir.join(format!("n{id}.faketime"))
    }

    /// Moves node `id`'s wall clock by `offset` (libfaketime's syntax: `+1h`, `-10m`, `+0`)
    /// from about a second from now; its monotonic clock is left alone.
    pub fn skew_clock(&self, id: u64, offset: &str) -> anyhow::Result<()> {
        anyhow::ensure!(self.skewable, "nodes were not started skewable");
        std::fs::write(self.clock_file(id), offset)?;
        Ok(())
    }

    /// Node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// A node.
    pub fn node(&self, id: u64) -> &Node {
        self.nodes.iter().find(|n| n.id == id).expect("known node")
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("known node")
    }

    /// Whether the node's process runs (paused or not).
    pub fn is_running(&self, id: u64) -> bool {
        self.node(id).child.is_some()
    }

    /// Starts a node's process (`join`: wait to be added instead of forming the group).
    pub fn start_node(&mut self, id: u64, join: bool) -> anyhow::Result<()> {
        if self.is_running(id) {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("n{id}.log")))?;
        let node = self.node(id);
        let mut cmd = Command::new(&self.bin);
        cmd.args(["serve", "--node-id", &id.to_string()])
            .args(["--listen", &node.real.to_string()])
            .args(["--advertise", &node.addr.to_string()])
            .args(["--peer-source-ip", &source_ip(id).to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--peers", &self.peers])
            .args(&self.extra)
            .env("RAFTMQ_LOG", "info,openraft=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if join {
            cmd.arg("--join");
        }
        if self.skewable {
            cmd.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", self.clock_file(id))
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let child = cmd.spawn()?;
        let node = self.node_mut(id);
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// kill -9.
    pub fn kill(&mut self, id: u64) {
        let node = self.node_mut(id);
        if let Some(mut c) = node.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        node.paused = false;
    }

    /// SIGSTOP.
    pub fn pause(&mut self, id: u64) {
        let node = self.node_mut(id);
        if let Some(c) = &node.child {
            signal(c.id(), "-STOP");
            node.paused = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: u64) {
        let node = self.node_mut(id);
        if let Some(c) = &node.child
            && node.paused
        {
            signal(c.id(), "-CONT");
            node.paused = false;
        }
    }

    /// Kills the node and deletes its data.
    pub fn wipe(&mut self, id: u64) -> anyhow::Result<()> {
        self.kill(id);
        let dir = self.node(id).data_dir.clone();
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        Ok(())
    }

    /// Stops every process (SIGCONT first, so paused ones can die).
    pub fn stop_all(&mut self) {
        for id in self.ids() {
            self.resume(id);
            self.kill(id);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
