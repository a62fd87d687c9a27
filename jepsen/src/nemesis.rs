//! Faults injected from outside the processes, on a schedule drawn from the run's seed:
//! kill -9 (one node, the leader, a minority), pause (SIGSTOP/SIGCONT), network partitions
//! through the proxies (isolate one, isolate the leader, halves, bridge, majorities ring),
//! membership change (remove, wipe, re-add), leader transfer, a lost disk (wipe, then the
//! node replaced: removed, started to join, re-added), clock
//! skew (one node's wall clock, often the leader's, moved hours ahead or behind), a kill
//! during a snapshot install (the leader compacts its log, a replaced follower starts
//! catching up by snapshot and is killed part-way), a flipped byte in a follower's sealed
//! segment (repaired by replacing the node), and a full disk (the leader's, below its free-space floor,
//! or a node's, to the last byte). With several broker groups each of those strikes one
//! group, drawn for it, and four more strike across groups: the groups cut from each other,
//! a group cut from the NameServers, a NameServer killed, and every group's leader killed
//! at once. Faults are dealt like cards, so a run meets every
//! chosen kind before any repeats: the first round in the order given, later rounds
//! shuffled. Each
//! fault is recorded as a `start` and a `stop` event of process `nemesis`, and every fault
//! is healed before the run's final phase.
//!
//! Must never: leave a fault in place when it returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::client::{Client, Outcome};
use crate::control::Cluster;
use crate::history::{Kind, Process, Recorder};
use crate::proxy::between;
use crate::rng::Rng;

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 and restart.
    Kill,
    /// SIGSTOP and SIGCONT.
    Pause,
    /// Cut links between nodes.
    Partition,
    /// Remove a node, wipe it, add it back.
    Member,
    /// Move leadership.
    Transfer,
    /// Kill a node, delete its data, restart it.
    Wipe,
    /// Move one node's wall clock ahead or behind.
    Clock,
    /// Kill a node while it installs a snapshot.
    InstallKill,
    /// Flip a byte in a follower's sealed segment.
    Corrupt,
    /// Fill a node's disk.
    Disk,
    /// Cut every broker group from the others (several groups).
    GroupsApart,
    /// Cut one broker group from the NameServers (several groups).
    NameServerCut,
    /// Kill a NameServer (several groups).
    NameServerKill,
    /// Kill every group's leader at once (several groups).
    LeadersKill,
}

/// The faults that need several broker groups (what `all` adds to a run with several).
pub const ACROSS_GROUPS: [Fault; 4] = [
    Fault::GroupsApart,
    Fault::NameServerCut,
    Fault::NameServerKill,
    Fault::LeadersKill,
];

impl Fault {
    /// Parses `kill,pause,partition,member,transfer,wipe` (or `all`, or `none`).
    pub fn parse_list(s: &str) -> anyhow::Result<Vec<Fault>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "kill" => out.push(Fault::Kill),
                "pause" => out.push(Fault::Pause),
                "partition" => out.push(Fault::Partition),
                "member" => out.push(Fault::Member),
                "transfer" => out.push(Fault::Transfer),
                "wipe" => out.push(Fault::Wipe),
                "clock" => out.push(Fault::Clock),
                "install-kill" => out.push(Fault::InstallKill),
                "corrupt" => out.push(Fault::Corrupt),
                "disk" => out.push(Fault::Disk),
                "groups-apart" => out.push(Fault::GroupsApart),
                "ns-cut" => out.push(Fault::NameServerCut),
                "ns-kill" => out.push(Fault::NameServerKill),
                "leaders-kill" => out.push(Fault::LeadersKill),
                "all" => out.extend([
                    Fault::Kill,
                    Fault::Pause,
                    Fault::Partition,
                    Fault::Member,
                    Fault::Transfer,
                    Fault::Wipe,
                    Fault::Clock,
                    Fault::InstallKill,
                    Fault::Corrupt,
                    Fault::Disk,
                ]),
                "none" => {}
                other => anyhow::bail!(
                    "unknown nemesis `{other}` (kill, pause, partition, member, transfer, wipe, clock, install-kill, corrupt, disk, groups-apart, ns-cut, ns-kill, leaders-kill, all, none)"
                ),
            }
        }
        Ok(out)
    }

    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Member => "member",
            Fault::Transfer => "transfer",
            Fault::Wipe => "wipe",
            Fault::Clock => "clock",
            Fault::InstallKill => "install-kill",
            Fault::Corrupt => "corrupt",
            Fault::Disk => "disk",
            Fault::GroupsApart => "groups-apart",
            Fault::NameServerCut => "ns-cut",
            Fault::NameServerKill => "ns-kill",
            Fault::LeadersKill => "leaders-kill",
        }
    }
}

/// The fault injector.
pub struct Nemesis {
    /// Faults to choose from.
    pub faults: Vec<Fault>,
    /// Randomness.
    pub rng: Rng,
    /// The cluster.
    pub cluster: Arc<Mutex<Cluster>>,
    /// The history.
    pub recorder: Arc<Recorder>,
    /// An admin client (long timeout).
    pub client: Client,
}

/// What a fault did, so it can be undone.
enum Undo {
    Restart(Vec<u64>),
    Resume(Vec<u64>),
    Unskew(Vec<u64>),
    /// Replace a node whose data is gone or bad as docs/operations.md says: removed,
    /// wiped, started to join, added back (restarted empty under its old id, it would vote
    /// without its log, and raftmq refuses to start it so).
    Replace(u64),
    /// Free the disk; restart the node if it stopped.
    FreeDisk(u64),
    /// Start a NameServer again.
    RestartNameServer(u64),
    Heal,
    Nothing,
}

impl Nemesis {
    fn record(&self, f: &str, value: Value) {
        self.recorder
            .record(Process::Named("nemesis".into()), Kind::Info, f, value);
    }

    async fn addrs(&self) -> Vec<(u64, SocketAddr, bool)> {
        let c = self.cluster.lock().await;
        c.nodes
            .iter()
            .map(|n| (n.id, n.addr, c.is_running(n.id)))
            .collect()
    }

    /// Broker group `g`'s leader (its harness id) as seen by a running node of it.
    pub async fn leader_of(&self, g: u64) -> Option<u64> {
        let ids = self.cluster.lock().await.group_ids(g);
        for (id, addr, running) in self.addrs().await {
            if !running || !ids.contains(&id) {
                continue;
            }
            if let Some(v) = self.client.cluster(addr).await
                && let Some(l) = v["leader_id"].as_u64()
            {
                return Some(self.cluster.lock().await.node_id(g, l));
            }
        }
        None
    }

    /// A running node of `t`'s group other than `t`: where to ask about `t`.
    async fn peer_of(&self, t: u64) -> Option<SocketAddr> {
        let same = {
            let c = self.cluster.lock().await;
            c.group_ids(c.group_of(t))
        };
        self.addrs()
            .await
            .iter()
            .find(|a| a.2 && a.0 != t && same.contains(&a.0))
            .map(|a| a.1)
    }

    /// Runs faults until `until`, then heals everything.
    pub async fn run(mut self, until: Instant) {
        if self.faults.is_empty() {
            return;
        }
        let mut deck: Vec<Fault> = Vec::new();
        let mut dealt = 0u64;
        loop {
            let wait = Duration::from_millis(self.rng.between(1_500, 4_000));
            let hold = Duration::from_millis(self.rng.between(2_000, 6_000));
            if Instant::now() + wait + hold >= until {
                break;
            }
            tokio::time::sleep(wait).await;
            if deck.is_empty() {
                deck = self.faults.clone();
                deck.reverse();
                // The first round goes in the order given (a short run meets the kinds it
                // lists first); later rounds are shuffled.
                if dealt > 0 {
                    for i in (1..deck.len()).rev() {
                        let j = self.rng.below(i as u64 + 1) as usize;
                        deck.swap(i, j);
                    }
                }
            }
            dealt += 1;
            let fault = deck.pop().expect("the deck was refilled");
            let (value, undo) = self.inject(fault).await;
            self.record("start", json!({"fault": fault.name(), "detail": value}));
            tokio::time::sleep(hold).await;
            self.undo(undo).await;
            self.record("stop", json!({"fault": fault.name()}));
        }
        self.heal_all().await;
    }

    async fn inject(&mut self, fault: Fault) -> (Value, Undo) {
        let groups = self.cluster.lock().await.groups();
        let g = self.rng.below(groups);
        let (mut value, undo) = self.inject_in(fault, g).await;
        if groups > 1 && !ACROSS_GROUPS.contains(&fault) {
            value["group"] = json!(crate::control::Cluster::group_name(g));
        }
        (value, undo)
    }

    /// The fault, in broker group `g` for the faults that strike one group.
    async fn inject_in(&mut self, fault: Fault, g: u64) -> (Value, Undo) {
        let ids: Vec<u64> = self.cluster.lock().await.group_ids(g);
        let leader = self.leader_of(g).await;
        let n = ids.len();
        match fault {
            Fault::GroupsApart => {
                let c = self.cluster.lock().await;
                let mut links = Vec::new();
                for a in 0..c.groups() {
                    for b in a + 1..c.groups() {
                        links.extend(between(&c.group_ids(a), &c.group_ids(b)));
                    }
                }
                c.proxies.cut(&links);
                (json!({"cut": links}), Undo::Heal)
            }
            Fault::NameServerCut => {
                let c = self.cluster.lock().await;
                let links = between(&ids, &c.nameserver_ids());
                c.proxies.cut(&links);
                (
                    json!({"group": crate::control::Cluster::group_name(g), "cut": links}),
                    Undo::Heal,
                )
            }
            Fault::NameServerKill => {
                let mut c = self.cluster.lock().await;
                let ns = c.nameserver_ids();
                let Some(&t) = self.rng.pick(&ns) else {
                    return (json!({"skipped": "no NameServer"}), Undo::Nothing);
                };
                c.kill_nameserver(t);
                (json!({"nameserver": t}), Undo::RestartNameServer(t))
            }
            Fault::LeadersKill => {
                let groups = self.cluster.lock().await.groups();
                let mut targets = Vec::new();
                for g in 0..groups {
                    if let Some(l) = self.leader_of(g).await {
                        targets.push(l);
                    }
                }
                let mut c = self.cluster.lock().await;
                for &t in &targets {
                    c.kill(t);
                }
                (json!({"nodes": targets}), Undo::Restart(targets))
            }
            Fault::Kill => {
                let targets = self.targets(&ids, leader);
                let mut c = self.cluster.lock().await;
                for &t in &targets {
                    c.kill(t);
                }
                (json!({"nodes": targets}), Undo::Restart(targets))
            }
            Fault::Pause => {
                let targets = match (self.rng.below(2), leader) {
                    (0, Some(l)) => vec![l],
                    _ => vec![*self.rng.pick(&ids).expect("nodes")],
                };
                let mut c = self.cluster.lock().await;
                for &t in &targets {
                    c.pause(t);
                }
                (json!({"nodes": targets}), Undo::Resume(targets))
            }
            Fault::Partition => {
                let mut shuffled = ids.clone();
                for i in (1..shuffled.len()).rev() {
                    let j = self.rng.below(i as u64 + 1) as usize;
                    shuffled.swap(i, j);
                }
                let variants: &[&str] = if n >= 5 {
                    &[
                        "isolate-one",
                        "isolate-leader",
                        "halves",
                        "bridge",
                        "majorities-ring",
                    ]
                } else {
                    &["isolate-one", "isolate-leader", "halves"]
                };
                let kind = *self.rng.pick(variants).expect("variants");
                let links = match kind {
                    "isolate-leader" => {
                        let l = leader.unwrap_or(shuffled[0]);
                        let rest: Vec<u64> = ids.iter().copied().filter(|&i| i != l).collect();
                        between(&[l], &rest)
                    }
                    "halves" => {
                        let (a, b) = shuffled.split_at(n / 2);
                        between(a, b)
                    }
                    "bridge" => {
                        // Two halves that only node `bridge` joins.
                        let bridge = shuffled[0];
                        let (a, b) = shuffled[1..].split_at((n - 1) / 2);
                        let _ = bridge;
                        between(a, b)
                    }
                    "majorities-ring" => {
                        // Each node sees its ring neighbours only: every node a majority,
                        // no two nodes the same one.
                        let mut links = Vec::new();
                        for (i, &x) in shuffled.iter().enumerate() {
                            for (j, &y) in shuffled.iter().enumerate() {
                                let d = (i + n - j) % n;
                                if x != y && d != 1 && d != n - 1 {
                                    links.push((x, y));
                                }
                            }
                        }
                        links
                    }
                    _ => {
                        let (a, b) = shuffled.split_at(1);
                        between(a, b)
                    }
                };
                self.cluster.lock().await.proxies.cut(&links);
                (json!({"kind": kind, "cut": links}), Undo::Heal)
            }
            Fault::Transfer => {
                let others: Vec<u64> = ids.iter().copied().filter(|&i| Some(i) != leader).collect();
                let to = *self.rng.pick(&others).expect("nodes");
                let via = self
                    .addrs()
                    .await
                    .iter()
                    .find(|a| a.2 && ids.contains(&a.0))
                    .map(|a| a.1);
                let raft_to = self.cluster.lock().await.raft_id(to);
                let outcome = match via {
                    Some(addr) => {
                        self.client
                            .admin(
                                reqwest::Method::POST,
                                addr,
                                "/v1/cluster/leader",
                                Some(&json!({"to": raft_to})),
                            )
                            .await
                    }
                    None => Outcome::Fail("no running node".into()),
                };
                (
                    json!({"to": to, "outcome": format!("{outcome:?}")}),
                    Undo::Nothing,
                )
            }
            Fault::Wipe => {
                let t = *self.rng.pick(&ids).expect("nodes");
                let mut c = self.cluster.lock().await;
                let r = c.wipe(t);
                (json!({"node": t, "wiped": r.is_ok()}), Undo::Replace(t))
            }
            Fault::Member => self.member_change(&ids, leader).await,
            Fault::InstallKill => self.install_kill(&ids, leader).await,
            Fault::Corrupt => {
                let followers: Vec<u64> =
                    ids.iter().copied().filter(|&i| Some(i) != leader).collect();
                let t = *self.rng.pick(&followers).expect("nodes");
                let pick = self.rng.next_u64();
                let r = self.cluster.lock().await.corrupt_sealed(t, pick);
                match r {
                    Ok(Some((file, pos))) => (
                        json!({"node": t, "file": file.display().to_string(), "byte": pos}),
                        Undo::Replace(t),
                    ),
                    other => (
                        json!({"node": t, "skipped": format!("{other:?}")}),
                        Undo::Nothing,
                    ),
                }
            }
            Fault::Disk => {
                // The leader just below its floor (writes refused, then resumed), or any
                // node to the last byte (its log fails and stops it).
                let (t, leave) = match (self.rng.below(2), leader) {
                    (0, Some(l)) => (l, crate::control::MIN_FREE_BYTES / 2),
                    _ => (*self.rng.pick(&ids).expect("nodes"), 0),
                };
                let r = self.cluster.lock().await.fill_disk(t, leave);
                (
                    json!({"node": t, "leave": leave, "ok": r.is_ok()}),
                    Undo::FreeDisk(t),
                )
            }
            Fault::Clock => {
                let t = match (self.rng.below(2), leader) {
                    (0, Some(l)) => l,
                    _ => *self.rng.pick(&ids).expect("nodes"),
                };
                let offset = *self
                    .rng
                    .pick(&["+2h", "+1d", "-1h", "-10m"])
                    .expect("offsets");
                let r = self.cluster.lock().await.skew_clock(t, offset);
                (
                    json!({"node": t, "offset": offset, "ok": r.is_ok()}),
                    Undo::Unskew(vec![t]),
                )
            }
        }
    }

    /// The leader compacts its log; a wiped follower restarts, must catch up by snapshot,
    /// and is killed part-way (during the transfer, the install, or just after).
    async fn install_kill(&mut self, ids: &[u64], leader: Option<u64>) -> (Value, Undo) {
        let Some(l) = leader else {
            return (json!({"skipped": "no leader"}), Undo::Nothing);
        };
        let followers: Vec<u64> = ids.iter().copied().filter(|&i| i != l).collect();
        let t = *self.rng.pick(&followers).expect("nodes");
        let leader_addr = self.addrs().await.iter().find(|a| a.0 == l).map(|a| a.1);
        let compacted = match leader_addr {
            Some(addr) => {
                self.client
                    .admin(reqwest::Method::POST, addr, "/v1/cluster/compact", None)
                    .await
            }
            None => Outcome::Fail("leader not found".into()),
        };
        let after = Duration::from_millis(self.rng.between(100, 1500));
        // Wiped, it is replaced the safe way; the add (which waits for the catch-up) runs
        // on while the node is killed part-way.
        let add = self.replace(t, false).await;
        tokio::time::sleep(after).await;
        self.cluster.lock().await.kill(t);
        (
            json!({"node": t, "compact": format!("{compacted:?}"), "replace": add, "killed_after_ms": after.as_millis()}),
            Undo::Replace(t),
        )
    }

    /// Kill targets: one node, the leader, or a minority.
    fn targets(&mut self, ids: &[u64], leader: Option<u64>) -> Vec<u64> {
        match self.rng.below(3) {
            0 => vec![*self.rng.pick(ids).expect("nodes")],
            1 => vec![leader.unwrap_or(ids[0])],
            _ => {
                let mut shuffled = ids.to_vec();
                for i in (1..shuffled.len()).rev() {
                    let j = self.rng.below(i as u64 + 1) as usize;
                    shuffled.swap(i, j);
                }
                shuffled.truncate((ids.len() - 1) / 2);
                shuffled
            }
        }
    }

    /// Removes a follower, wipes it, restarts it to join, and adds it back as a voter.
    async fn member_change(&mut self, ids: &[u64], leader: Option<u64>) -> (Value, Undo) {
        let followers: Vec<u64> = ids.iter().copied().filter(|&i| Some(i) != leader).collect();
        let t = *self.rng.pick(&followers).expect("nodes");
        let r = self.replace(t, true).await;
        (json!({"node": t, "replace": r}), Undo::Nothing)
    }

    /// Replaces node `t` as docs/operations.md says: removed through another running
    /// node, wiped, started to join, added back as a voter (`wait`: until the add answers,
    /// which is once the node has caught up; else the add runs on in the background).
    async fn replace(&mut self, t: u64, wait: bool) -> Value {
        let addrs = self.addrs().await;
        let Some(via) = self.peer_of(t).await else {
            return json!({"skipped": "no running node"});
        };
        let addr = addrs.iter().find(|a| a.0 == t).map(|a| a.1).expect("node");
        // The group knows the node by its Raft id.
        let member = self.cluster.lock().await.raft_id(t);
        // A node removed already (an earlier replace that did not finish) is "not a member".
        let removed = self
            .client
            .admin(
                reqwest::Method::DELETE,
                via,
                &format!("/v1/cluster/members/{member}"),
                None,
            )
            .await;
        if !matches!(removed, Outcome::Ok(_)) && !format!("{removed:?}").contains("not a member") {
            // Still a member: wiping it now would be the unsafe restart.
            return json!({"remove": format!("{removed:?}")});
        }
        {
            let mut c = self.cluster.lock().await;
            let _ = c.wipe(t);
            let _ = c.start_node(t, true);
        }
        let client = self.client.clone();
        let add = async move {
            client
                .admin(
                    reqwest::Method::POST,
                    via,
                    "/v1/cluster/members",
                    Some(&json!({"id": member, "addr": addr.to_string(), "voter": true})),
                )
                .await
        };
        if wait {
            let added = add.await;
            json!({"remove": format!("{removed:?}"), "add": format!("{added:?}")})
        } else {
            tokio::spawn(add);
            json!({"remove": format!("{removed:?}"), "add": "in the background"})
        }
    }

    async fn undo(&mut self, undo: Undo) {
        if let Undo::Replace(id) = undo {
            self.replace(id, true).await;
            return;
        }
        let mut c = self.cluster.lock().await;
        match undo {
            Undo::Restart(ids) => {
                for id in ids {
                    let _ = c.start_node(id, false);
                }
            }
            Undo::Resume(ids) => {
                for id in ids {
                    c.resume(id);
                }
            }
            Undo::Unskew(ids) => {
                for id in ids {
                    let _ = c.skew_clock(id, "+0");
                }
            }
            Undo::Replace(_) => unreachable!("handled above"),
            Undo::FreeDisk(id) => {
                c.free_disk(id);
                // A node whose log failed on the full disk has stopped for good: restart it
                // (a running one keeps running; its refused writes resume by themselves).
                c.kill(id);
                let _ = c.start_node(id, false);
            }
            Undo::RestartNameServer(id) => {
                let _ = c.start_nameserver(id);
            }
            Undo::Heal => c.proxies.heal(),
            Undo::Nothing => {}
        }
    }

    /// Resumes, restarts and reconnects every node.
    pub async fn heal_all(&self) {
        let mut c = self.cluster.lock().await;
        c.proxies.heal();
        for id in c.nameserver_ids() {
            let _ = c.start_nameserver(id);
        }
        for id in c.ids() {
            c.resume(id);
            let _ = c.start_node(id, false);
            if self.faults.contains(&Fault::Clock) {
                let _ = c.skew_clock(id, "+0");
            }
            if self.faults.contains(&Fault::Disk) {
                c.free_disk(id);
            }
        }
    }
}
