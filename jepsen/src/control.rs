//! Cluster control: real `raftmq serve` processes with their own data dirs and logs, each
//! behind a harness-owned proxy ([`crate::proxy`]); with several broker groups, groups of
//! `n` nodes each (harness ids 1..=n in g1, n+1..=2n in g2, …; each node's Raft id is its
//! place in its group) and NameServers (harness ids from [`NAMESERVER_IDS`]), behind
//! proxies too, so a group can be cut off them. Start, stop, kill -9, pause
//! (SIGSTOP/SIGCONT), restart, wipe, skew a node's wall clock (libfaketime, which reads
//! each node's offset from a file the harness rewrites), corrupt a byte of a sealed
//! segment, and fill a node's disk (each node's data directory its own small tmpfs, which
//! needs root). Every process is killed (and every tmpfs unmounted) when the `Cluster` is
//! dropped, which also happens on panic and when the run is interrupted.
//!
//! Must never: bind or connect outside 127.0.0.0/8.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::client::Access;
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

/// Harness ids of NameServers start here (above any node's; below 245, so that their
/// source IPs stay in 127.0.0.0/8).
pub const NAMESERVER_IDS: u64 = 200;

/// A cluster of processes.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    /// Its broker nodes, every group's.
    pub nodes: Vec<Node>,
    /// Its NameServers (none with one broker group).
    pub nameservers: Vec<Node>,
    /// Nodes per broker group.
    per_group: u64,
    /// The proxies in front of them.
    pub proxies: Proxies,
    extra: Vec<String>,
    /// How clients reach the nodes.
    pub access: Access,
    /// Whether nodes run under libfaketime, so their clocks can be skewed.
    skewable: bool,
    /// Whether each node's data directory is a tmpfs of its own, so its disk can fill.
    disks: bool,
}

/// The cluster secret every node of a run shares.
const CLUSTER_SECRET: &str = "raftmq-jepsen-cluster-secret";

/// The admin token every node of a run requires of clients unless the run names its own
/// (authentication is always on, as deployed).
pub const ADMIN_TOKEN: &str = "raftmq-jepsen-admin-token";

/// The size of a node's tmpfs when the disk nemesis runs.
const DISK_MIB: u64 = 256;
/// The free-space floor nodes get then.
pub const MIN_FREE_BYTES: u64 = 16 << 20;

/// What to run with.
#[derive(Clone, Debug)]
pub struct Options {
    /// Run nodes under libfaketime (the clock nemesis).
    pub skewable: bool,
    /// Give each node a tmpfs of its own (the disk nemesis; needs root).
    pub disks: bool,
    /// The admin token nodes require.
    pub token: String,
    /// Serve HTTPS: `raftmq certs` makes a CA for the run, and peers verify each other.
    pub tls: bool,
    /// Broker groups (more than one: with two NameServers).
    pub groups: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            skewable: false,
            disks: false,
            token: ADMIN_TOKEN.to_owned(),
            tls: false,
            groups: 1,
        }
    }
}

/// Debian's libfaketime (package `libfaketime`, installed by `scripts/setup`), the build
/// for multithreaded programs.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// A port that is free now, below Linux's ephemeral range (32768-60999): a port the kernel
/// hands out (`bind(0)`) can be taken as the local port of an outgoing connection before
/// the node or proxy meant to listen on it starts.
fn free_port() -> anyhow::Result<u16> {
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
            return Ok(port);
        }
    }
    anyhow::bail!("no free port between 20000 and 32000 on 127.0.0.1")
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Cluster {
    /// Prepares `n` nodes per broker group (proxies started, processes started) under
    /// `dir`, and two NameServers when there are several groups; `skewable`: run them under
    /// libfaketime so [`Cluster::skew_clock`] works.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        n: u64,
        extra: &[String],
        opts: Options,
    ) -> anyhow::Result<Cluster> {
        let Options {
            skewable,
            disks,
            token,
            tls,
            groups,
        } = opts;
        let mut extra = extra.to_vec();
        let ca = if tls {
            let certs = dir.join("tls");
            let out = Command::new(bin)
                .arg("certs")
                .arg(&certs)
                .args(["--hosts", "127.0.0.1"])
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "raftmq certs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for (flag, file) in [
                ("--tls-cert", "node.pem"),
                ("--tls-key", "node-key.pem"),
                ("--tls-ca", "ca.pem"),
            ] {
                extra.extend([flag.to_owned(), certs.join(file).display().to_string()]);
            }
            Some(std::fs::read(certs.join("ca.pem"))?)
        } else {
            None
        };
        if skewable && !Path::new(LIBFAKETIME).exists() {
            anyhow::bail!("the clock nemesis needs {LIBFAKETIME} (scripts/setup installs it)");
        }
        let place = |id: u64| -> anyhow::Result<Node> {
            Ok(Node {
                id,
                real: format!("127.0.0.1:{}", free_port()?).parse()?,
                addr: format!("127.0.0.1:{}", free_port()?).parse()?,
                data_dir: dir.join(format!("n{id}")),
                child: None,
                paused: false,
            })
        };
        let nodes = (1..=n * groups)
            .map(place)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let nameservers = if groups > 1 {
            (1..=2)
                .map(|k| place(NAMESERVER_IDS + k))
                .collect::<anyhow::Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let mut c = Cluster {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            nodes,
            nameservers,
            per_group: n,
            proxies: Proxies::default(),
            extra,
            access: Access { token, ca_pem: ca },
            skewable,
            disks,
        };
        if disks {
            for node in &c.nodes {
                mount_tmpfs(&node.data_dir)?;
            }
        }
        for n in c.nodes.iter().chain(&c.nameservers) {
            c.proxies.spawn(n.id, n.addr, n.real).await?;
        }
        for k in 0..c.nameservers.len() {
            c.start_nameserver(NAMESERVER_IDS + 1 + k as u64)?;
        }
        for id in c.ids() {
            if skewable {
                c.skew_clock(id, "+0")?;
            }
            c.start_node(id, false)?;
        }
        Ok(c)
    }

    /// Broker groups.
    pub fn groups(&self) -> u64 {
        self.nodes.len() as u64 / self.per_group
    }

    /// The broker group (0-based) of node `id`.
    pub fn group_of(&self, id: u64) -> u64 {
        (id - 1) / self.per_group
    }

    /// Node `id`'s Raft id within its group.
    pub fn raft_id(&self, id: u64) -> u64 {
        (id - 1) % self.per_group + 1
    }

    /// The node of group `g` whose Raft id is `raft_id`.
    pub fn node_id(&self, g: u64, raft_id: u64) -> u64 {
        g * self.per_group + raft_id
    }

    /// The nodes of group `g`.
    pub fn group_ids(&self, g: u64) -> Vec<u64> {
        (1..=self.per_group).map(|r| self.node_id(g, r)).collect()
    }

    /// A group's name: `g1`, `g2`, ….
    pub fn group_name(g: u64) -> String {
        format!("g{}", g + 1)
    }

    /// The NameServers' harness ids.
    pub fn nameserver_ids(&self) -> Vec<u64> {
        self.nameservers.iter().map(|n| n.id).collect()
    }

    /// Starts NameServer `id`'s process (if it is not running).
    pub fn start_nameserver(&mut self, id: u64) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("ns{id}.log")))?;
        let ns = self
            .nameservers
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or_else(|| anyhow::anyhow!("no NameServer {id}"))?;
        if ns.child.is_some() {
            return Ok(());
        }
        let child = Command::new(&self.bin)
            .args(["nameserver", "--listen", &ns.real.to_string()])
            .args(["--route-expiry-ms", "3000"])
            .env("RAFTMQ_CLUSTER_SECRET", CLUSTER_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        ns.child = Some(child);
        Ok(())
    }

    /// kill -9 of NameServer `id`.
    pub fn kill_nameserver(&mut self, id: u64) {
        if let Some(ns) = self.nameservers.iter_mut().find(|n| n.id == id)
            && let Some(mut c) = ns.child.take()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
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
        let g = self.group_of(id);
        let peers = self
            .group_ids(g)
            .iter()
            .map(|&p| format!("{}={}", self.raft_id(p), self.node(p).addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = Command::new(&self.bin);
        cmd.args(["serve", "--node-id", &self.raft_id(id).to_string()])
            .args(["--listen", &node.real.to_string()])
            .args(["--advertise", &node.addr.to_string()])
            .args(["--peer-source-ip", &source_ip(id).to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--peers", &peers])
            .args(["--min-free-bytes", &self.min_free().to_string()])
            .args(&self.extra)
            .env("RAFTMQ_LOG", "info,openraft=info")
            // Runs cover an authenticated peer protocol (a cluster secret, as deployed).
            .env("RAFTMQ_CLUSTER_SECRET", CLUSTER_SECRET)
            .env("RAFTMQ_ADMIN_TOKEN", &self.access.token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if join {
            cmd.arg("--join");
        }
        if !self.nameservers.is_empty() {
            let list: Vec<String> = self
                .nameservers
                .iter()
                .map(|n| n.addr.to_string())
                .collect();
            cmd.args(["--group", &Self::group_name(g)])
                .args(["--nameservers", &list.join(",")]);
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

    /// Kills the node and deletes its data (the directory's contents: it may be a mount).
    pub fn wipe(&mut self, id: u64) -> anyhow::Result<()> {
        self.kill(id);
        let dir = self.node(id).data_dir.clone();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries {
                let path = entry?.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(path)?;
                } else {
                    std::fs::remove_file(path)?;
                }
            }
        }
        Ok(())
    }

    fn min_free(&self) -> u64 {
        // Without the disk nemesis, runs must not depend on how full the machine is.
        if self.disks { MIN_FREE_BYTES } else { 0 }
    }

    /// Flips one byte in the middle of a sealed segment of node `id` (not the newest
    /// segment); returns the file and position, or `None` if it has no sealed segment.
    pub fn corrupt_sealed(&self, id: u64, pick: u64) -> anyhow::Result<Option<(PathBuf, u64)>> {
        let log = self.node(id).data_dir.join("log");
        let mut segs: Vec<PathBuf> = std::fs::read_dir(&log)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        segs.sort();
        segs.pop();
        let Some(seg) = segs.get(pick as usize % segs.len().max(1)).cloned() else {
            return Ok(None);
        };
        let len = std::fs::metadata(&seg)?.len();
        if len <= 64 {
            return Ok(None);
        }
        // Past the 16-byte segment header, somewhere in its records.
        let pos = 16 + pick % (len - 16);
        let mut bytes = std::fs::read(&seg)?;
        bytes[pos as usize] ^= 0x5a;
        std::fs::write(&seg, bytes)?;
        Ok(Some((seg, pos)))
    }

    /// Fills node `id`'s disk so that `leave` bytes stay free (0: full).
    pub fn fill_disk(&self, id: u64, leave: u64) -> anyhow::Result<()> {
        anyhow::ensure!(self.disks, "nodes were not started with disks of their own");
        let dir = &self.node(id).data_dir;
        let free = free_bytes(dir)?;
        let ballast = dir.join("ballast");
        let size = free.saturating_sub(leave);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&ballast)?;
        // Write zeros until full: tmpfs allocates as it is written.
        let chunk = vec![0u8; 1 << 20];
        let mut left = size;
        let mut f = f;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if std::io::Write::write_all(&mut f, &chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        Ok(())
    }

    /// Frees what [`Cluster::fill_disk`] took.
    pub fn free_disk(&self, id: u64) {
        let _ = std::fs::remove_file(self.node(id).data_dir.join("ballast"));
    }

    /// Stops every process (SIGCONT first, so paused ones can die).
    pub fn stop_all(&mut self) {
        for id in self.ids() {
            self.resume(id);
            self.kill(id);
        }
        for id in self.nameserver_ids() {
            self.kill_nameserver(id);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
        if self.disks {
            for node in &self.nodes {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&node.data_dir)
                    .status();
            }
        }
    }
}

fn mount_tmpfs(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={DISK_MIB}m"), "tmpfs"])
        .arg(dir)
        .status()?
        .success();
    anyhow::ensure!(
        ok,
        "the disk nemesis mounts a tmpfs per node, which needs root"
    );
    Ok(())
}

/// Free bytes of the volume holding `dir`.
fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let avail = text
        .lines()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("df printed nothing for {}", dir.display()))?;
    Ok(avail.trim().parse()?)
}
