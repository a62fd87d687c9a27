//! A broker group inside one process: each node a real `Broker` (CommitLog, RocksDB,
//! openraft) on a tokio runtime of its own, its peers reached through [`crate::net`].
//!
//! A crash drops the node's runtime at once, as `kill -9` ends a process: its tasks stop
//! where they are, what it wrote to files stays (the OS keeps it), and a restart opens the
//! same data directory. A power loss is a crash after which the CommitLog also loses what
//! was never synced ([`crate::lossy`]); RocksDB keeps everything (its state is rebuilt from
//! the log only as far as the log says).
//!
//! Must never: let a crashed node's tasks reach another node (it is detached from the
//! network first), or open a data directory while the previous incarnation still holds it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use raftmq_raft::consensus::log_store::ReleaseProbe;
use raftmq_raft::{
    Broker, BrokerConfig, BrokerError, FlushPolicy, InstallProbe, InstallStep, NodeId, RaftTiming,
    RejectCode, TimerClock,
};
use tokio::runtime::Runtime;

use crate::clock::{NodeClock, Warp};
use crate::lossy::LossyFs;
use crate::net::SimNet;

/// How long a membership change may take once the faults are over, and during them.
const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_secs(3);

/// How long a start waits for the node to be let in during the faults; past it, the node
/// answers its peers and takes no part until its admission ends (settled by
/// [`Cluster::settle_admissions`]).
const ADMISSION_WAIT: Duration = Duration::from_secs(2);

/// Raft timing in the simulation: short, so a schedule sees many elections.
pub const TIMING: RaftTiming = RaftTiming {
    heartbeat_ms: 30,
    election_timeout_ms: 150,
};

struct Member {
    id: NodeId,
    addr: String,
    dir: PathBuf,
    runtime: Option<Runtime>,
    broker: Option<Broker>,
    /// Its [`Broker::admit`], while it runs: opened nodes answer their peers before.
    admission: Option<tokio::task::JoinHandle<Result<(), BrokerError>>>,
    /// The last incarnation's CommitLog, until its writer thread has ended.
    released: Option<ReleaseProbe>,
    /// The file system under its CommitLog.
    fs: Arc<LossyFs>,
    /// Its wall clock.
    clock: Arc<NodeClock>,
    /// The monotonic clock its Raft timers read (it outlives restarts, as the machine's
    /// does).
    timers: TimerClock,
    /// The last index its CommitLog had told Raft was durable when its power was cut.
    acked_at_cut: Option<u64>,
    /// It joined as a new member once: it always starts to join from then on (as its
    /// configuration would say), never to form a group.
    joins: bool,
    /// The fault point inside its snapshot installs.
    trap: Arc<InstallTrap>,
    /// Its last power cut tore or flipped unsynced bytes instead of zeroing them: a bad
    /// record with a valid one after it can follow, which the node refuses to start on as
    /// corruption (the false alarm docs/ARCHITECTURE.md accepts, "Torn tail or
    /// corruption"), and an operator replaces it.
    damaged: bool,
}

/// A crash armed for one step of a node's next snapshot install.
#[derive(Debug, Default)]
struct InstallTrap {
    armed: Mutex<Option<InstallStep>>,
    /// The step an install stopped at, until the node is crashed for it.
    sprung: Mutex<Option<InstallStep>>,
}

impl InstallTrap {
    /// The install probe: stops the install at the armed step, once.
    fn spring(&self, step: InstallStep) -> bool {
        let mut armed = lock(&self.armed);
        if *armed != Some(step) {
            return false;
        }
        *armed = None;
        *lock(&self.sprung) = Some(step);
        tracing::info!(
            ?step,
            "sim: a snapshot install stops here, as a crash would"
        );
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The nodes of one simulated broker group.
pub struct Cluster {
    members: Vec<Member>,
    peers: BTreeMap<NodeId, String>,
    net: Arc<SimNet>,
    warp: Arc<Warp>,
    /// Acknowledged appends a power cut lost (`acked-write-lost`), found at restarts.
    pub lost_acks: Vec<String>,
    /// The nodes' Raft timing.
    timing: RaftTiming,
    /// Nodes removed and started to join whose adding back has not gone through yet.
    pending: Vec<NodeId>,
    /// A membership change was asked for (a removal may still be in a leader's log).
    changed_members: bool,
    /// How long a start waits for the node to be let in: [`ADMISSION_WAIT`] during the
    /// faults, [`LONG`] once they are over (every start then ends decided).
    admission_wait: Duration,
    _base: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes that form a group, on `timing`; each CommitLog sync takes
    /// `sync_delay` more.
    pub async fn start(
        n: usize,
        net: Arc<SimNet>,
        sync_delay: Duration,
        timing: RaftTiming,
    ) -> anyhow::Result<Cluster> {
        let base = tempfile::tempdir()?;
        let warp = Arc::new(Warp::default());
        // Addresses the membership names nodes by; nothing listens on them (the router
        // delivers), and the peer checks see requests come from 127.0.0.1.
        let peers: BTreeMap<NodeId, String> = (1..=n as u64)
            .map(|id| (id, format!("127.0.0.1:{}", 9000 + id)))
            .collect();
        let members = peers
            .iter()
            .map(|(id, addr)| Member {
                id: *id,
                addr: addr.clone(),
                dir: base.path().join(format!("n{id}")),
                runtime: None,
                broker: None,
                admission: None,
                released: None,
                fs: LossyFs::new(sync_delay),
                clock: NodeClock::new(warp.clone()),
                timers: TimerClock::new(),
                acked_at_cut: None,
                joins: false,
                trap: Arc::default(),
                damaged: false,
            })
            .collect();
        let mut c = Cluster {
            members,
            peers,
            net,
            warp,
            lost_acks: Vec::new(),
            timing,
            pending: Vec::new(),
            changed_members: false,
            admission_wait: ADMISSION_WAIT,
            _base: base,
        };
        // Every node opened first: each waits for the others' answers to be let in.
        for id in c.ids() {
            c.open(id, false).await?;
        }
        for id in c.ids() {
            if !c.admitted(id, LONG).await? {
                return Err(anyhow!("node {id} refused to start in a new group"));
            }
        }
        Ok(c)
    }

    /// Every node's id.
    pub fn ids(&self) -> Vec<NodeId> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// The nodes up now.
    pub fn up(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|m| m.broker.is_some())
            .map(|m| m.id)
            .collect()
    }

    fn member(&mut self, id: NodeId) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .expect("a member of the simulation")
    }

    /// A node's broker and runtime, if it is up.
    pub fn node(&self, id: NodeId) -> Option<(Broker, tokio::runtime::Handle)> {
        let m = self.members.iter().find(|m| m.id == id)?;
        Some((m.broker.clone()?, m.runtime.as_ref()?.handle().clone()))
    }

    /// Starts node `id` on its data directory: `join`, as a node waiting to be added (not
    /// forming the group). `Ok(false)`: it refused to start because its log is empty while
    /// the leader has replicated to it before (its data was wiped). A node still waiting
    /// for its peers' answers after [`ADMISSION_WAIT`] counts as started.
    async fn boot(&mut self, id: NodeId, join: bool) -> anyhow::Result<bool> {
        let wait = self.admission_wait;
        Ok(self.open(id, join).await? && self.admitted(id, wait).await?)
    }

    /// Whether node `id`'s admission let it in, waiting up to `wait` (still waiting: `true`,
    /// and it stays pending). Refused, it is stopped as a crashed node is.
    async fn admitted(&mut self, id: NodeId, wait: Duration) -> anyhow::Result<bool> {
        let m = self.member(id);
        let Some(admission) = m.admission.as_mut() else {
            return Ok(m.broker.is_some());
        };
        let Ok(joined) = tokio::time::timeout(wait, admission).await else {
            return Ok(true);
        };
        m.admission = None;
        match joined? {
            Ok(()) => Ok(true),
            Err(BrokerError::Rejected {
                code: RejectCode::Conflict,
                ..
            }) => {
                self.crash(id);
                Ok(false)
            }
            Err(e) => Err(anyhow!("node {id} was not let in: {e}")),
        }
    }

    /// Waits up to `wait` for every admission still running; a node refused is stopped.
    pub async fn settle_admissions(&mut self, wait: Duration) -> anyhow::Result<()> {
        for id in self.ids() {
            self.admitted(id, wait).await?;
        }
        Ok(())
    }

    /// Opens node `id` on its data directory and starts its admission (see [`boot`]);
    /// `Ok(false)`: it refused to open (its log looks corrupted after a damaging cut).
    async fn open(&mut self, id: NodeId, join: bool) -> anyhow::Result<bool> {
        let transport = self.net.transport(id);
        let net = self.net.clone();
        let peers = self.peers.clone();
        let timing = self.timing;
        let m = self.member(id);
        let join = join || m.joins;
        m.joins = join;
        let damaged = m.damaged;
        let cfg = BrokerConfig {
            node_id: id,
            broker_group: "sim".into(),
            data_dir: m.dir.clone(),
            peers,
            flush: FlushPolicy::Sync,
            // Small segments: rolls and retention happen within a schedule.
            segment_size: 256 << 10,
            form_group: !join,
            retention_check: Duration::from_millis(200),
            peer_source_ip: None,
            peer_tls: None,
            min_free_bytes: Some(0),
            cluster_secret: None,
            timing,
            transport: Some(transport),
            log_fs: Some(m.fs.clone()),
            wall_clock: Some(m.clock.clone()),
            install_probe: Some({
                let trap = m.trap.clone();
                InstallProbe(Arc::new(move |step| trap.spring(step)))
            }),
        };
        let timers = m.timers.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(8)
            .thread_name(format!("sim-n{id}"))
            .on_thread_start(move || timers.enter())
            .enable_all()
            .build()?;
        // The previous incarnation's files may still be held for a moment by its last
        // blocking task or its log writer thread: a restarted process never shares its
        // files with the dead one, so wait until they are let go.
        let deadline = Instant::now() + Duration::from_secs(20);
        released(id, m.released.take()).await?;
        net.booting(id, true);
        let started = loop {
            let c = cfg.clone();
            match runtime.spawn(Broker::open(c)).await? {
                Ok(b) => break Ok(b),
                Err(BrokerError::Corrupted(e)) if damaged => {
                    tracing::info!(node = id, error = %e, "sim: refused after a damaging power cut");
                    break Err(None);
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => break Err(Some(anyhow!("node {id} did not start: {e}"))),
            }
        };
        net.booting(id, false);
        let broker = match started {
            Ok(b) => b,
            Err(refused) => {
                // A runtime cannot be dropped inside another one: let it go in the background.
                runtime.shutdown_background();
                return refused.map_or(Ok(false), Err);
            }
        };
        let addr = m.addr.clone();
        self.net
            .attach(&addr, id, broker.clone(), runtime.handle().clone());
        let m = self.member(id);
        if let Some(acked) = m.acked_at_cut.take() {
            let opened = broker.log_durability().0;
            if opened < acked {
                self.lost_acks.push(format!(
                    "acked-write-lost: node {id}'s CommitLog had acknowledged index {acked} as durable when its power was cut; it came back holding up to {opened}"
                ));
            }
        }
        let m = self.member(id);
        m.admission = Some(runtime.spawn({
            let broker = broker.clone();
            async move { broker.admit().await }
        }));
        m.runtime = Some(runtime);
        m.broker = Some(broker);
        m.damaged = false;
        Ok(true)
    }

    /// Sets how far node `id`'s wall clock is off, ms (negative: behind).
    pub fn skew(&mut self, id: NodeId, ms: i64) {
        self.member(id).clock.set_skew(ms);
    }

    /// Moves every node's wall clock `ms` forward.
    pub fn warp(&self, ms: u64) {
        self.warp.forward(ms);
    }

    /// Moves node `id`'s Raft clock `by` forward at once.
    pub fn stall(&mut self, id: NodeId, by: Duration) {
        self.member(id).timers.advance(by);
    }

    /// Node `id`'s Raft clock runs at `rate` times real time from now on.
    pub fn drift(&mut self, id: NodeId, rate: f64) {
        self.member(id).timers.set_rate(rate);
    }

    /// Every node's Raft clock runs at real time again, and every start waits until its
    /// node is let in or refused (the faults are over).
    pub fn faults_over(&mut self) {
        for m in &self.members {
            m.timers.set_rate(1.0);
        }
        self.admission_wait = LONG;
    }

    /// Node `id`'s next snapshot install stops after `step`, as a crash there would.
    pub fn arm_install_crash(&mut self, id: NodeId, step: InstallStep) {
        *lock(&self.member(id).trap.armed) = Some(step);
    }

    /// No install stops any more (the faults are over).
    pub fn disarm_installs(&mut self) {
        for m in &self.members {
            *lock(&m.trap.armed) = None;
        }
    }

    /// Crashes every node whose install stopped at its armed step; returns them and the
    /// step.
    pub fn crash_sprung(&mut self) -> Vec<(NodeId, InstallStep)> {
        let sprung: Vec<(NodeId, InstallStep)> = self
            .members
            .iter()
            .filter_map(|m| lock(&m.trap.sprung).take().map(|s| (m.id, s)))
            .collect();
        for (id, _) in &sprung {
            self.crash(*id);
        }
        sprung
    }

    /// Crashes a node: detached, its runtime dropped with every task in it.
    pub fn crash(&mut self, id: NodeId) {
        let net = self.net.clone();
        let m = self.member(id);
        net.detach(&m.addr);
        m.admission = None;
        if let Some(b) = m.broker.take() {
            m.released = Some(b.log_release_probe());
        }
        if let Some(rt) = m.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Cuts a node's power: a crash, then its CommitLog loses every byte written since its
    /// last sync (zeroed, or with `damage` torn or flipped). Returns how many bytes were lost.
    pub async fn lose_power(
        &mut self,
        id: NodeId,
        damage: Option<crate::lossy::Damage>,
    ) -> anyhow::Result<u64> {
        // What it acknowledged before the cut (read first: later acks come after it).
        let m = self.member(id);
        if let Some(b) = &m.broker {
            m.acked_at_cut = Some(b.log_durability().1);
        }
        // The node stops before the disk keeps only what it synced: a sync it made while
        // still running was acted on (its leader counted it toward a commit and told the
        // followers), and a real cut leaves nothing running after it. Taken the other way
        // round, a leader's sync between the two was lost though a follower had applied
        // the entry it made committed (`--power-loss` seed 143: replicas' states differed).
        self.crash(id);
        let m = self.member(id);
        let cut = m.fs.cut_power();
        // Its log writer may be mid-write: the power goes when it has stopped.
        released(id, m.released.clone()).await?;
        let lost = m.fs.lose_power(&cut, damage)?;
        m.damaged = damage.is_some() && lost > 0;
        Ok(lost)
    }

    /// Crashes a node and deletes its data directory (what an operator does with a node
    /// whose disk failed or whose log is corrupted): restarted, it is rebuilt from its peers.
    pub async fn wipe(&mut self, id: NodeId) -> anyhow::Result<()> {
        self.crash(id);
        let m = self.member(id);
        released(id, m.released.clone()).await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let dir = m.dir.clone();
        // RocksDB may still be closing: its files go once it has let go.
        while dir.exists() {
            if std::fs::remove_dir_all(&dir).is_err() {
                if Instant::now() > deadline {
                    return Err(anyhow!("node {id}'s data directory could not be removed"));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        m.fs = LossyFs::new(m.fs.sync_delay());
        m.acked_at_cut = None;
        m.damaged = false;
        Ok(())
    }

    /// Restarts a crashed node on its data directory. A node that refuses to start
    /// because its data was wiped (or looks corrupted after a damaging power cut) stays
    /// down, unless `replace`: then it is replaced as an operator would (after the faults,
    /// when the group can commit the membership changes).
    pub async fn restart(&mut self, id: NodeId, replace: bool) -> anyhow::Result<()> {
        if self.member(id).broker.is_some() {
            return Ok(());
        }
        let started = self
            .boot(id, false)
            .await
            .with_context(|| format!("restarting node {id}"))?;
        if !started && replace {
            self.replace(id)
                .await
                .with_context(|| format!("replacing refused node {id}"))?;
        }
        Ok(())
    }

    /// What an operator does for a node refused because its data is gone or damaged
    /// (docs/operations.md): removes it through the leader, empties its data directory,
    /// starts it to join, adds it back as a voter (a learner until it has caught up).
    async fn replace(&mut self, id: NodeId) -> anyhow::Result<()> {
        tracing::info!(
            node = id,
            "sim: replacing a wiped node (remove, join, add back)"
        );
        // Already out when a `Rejoin` removed it and its start was refused.
        if self
            .settled_members()
            .await
            .is_none_or(|members| members.contains(&id))
        {
            self.on_leader(LONG, |b| async move { b.remove_member(id).await })
                .await
                .context("removing it")?;
        }
        self.wipe(id).await?;
        if !self.boot(id, true).await? {
            return Err(anyhow!("refused again after it was removed"));
        }
        self.add_back(id, LONG).await.context("adding it back")
    }

    /// A membership change in the middle of the faults: node `id` is removed from the
    /// group, its data deleted, and it joins again as a new member (the documented way to
    /// rebuild a node). Each change gets a few seconds; `Ok(false)`: the group did not take
    /// the removal, and nothing changed. A node removed but not yet added back is added
    /// back by [`Cluster::add_pending`].
    pub async fn rejoin(&mut self, id: NodeId) -> anyhow::Result<bool> {
        self.changed_members = true;
        if self
            .on_leader(SHORT, |b| async move { b.remove_member(id).await })
            .await
            .is_err()
        {
            return Ok(false);
        }
        self.wipe(id).await?;
        if !self.boot(id, true).await? {
            // A peer cut off from the leader has not applied the removal and still records
            // the node as holding the log: as an operator would, it is started again once
            // the faults are over (`restart` replaces it, `add_pending` adds it back).
            tracing::info!(node = id, "sim: refused to join while a peer lags; later");
            return Ok(true);
        }
        if self.add_back(id, SHORT).await.is_err() {
            self.pending.push(id);
        }
        Ok(true)
    }

    /// Adds back every node a [`Cluster::rejoin`] left out of the group, and any other the
    /// leader does not count as a member once its membership is settled (rebuilt first:
    /// removed by a change that committed after `rejoin` gave up on it, it still holds its
    /// old data).
    pub async fn add_pending(&mut self) -> anyhow::Result<()> {
        if !self.changed_members {
            return Ok(());
        }
        if let Some(members) = self.settled_members().await {
            for id in self.ids() {
                if !members.contains(&id) && !self.pending.contains(&id) {
                    // Removed by a change whose outcome came too late for `rejoin` (it
                    // timed out, then committed): the node ran on outside the group with its
                    // old data. Rebuilt the documented way before it is added back.
                    self.wipe(id).await?;
                    if !self.boot(id, true).await? {
                        return Err(anyhow!("node {id} refused to join after it was removed"));
                    }
                    self.pending.push(id);
                }
            }
        }
        for id in std::mem::take(&mut self.pending) {
            self.add_back(id, LONG)
                .await
                .with_context(|| format!("adding node {id} back"))?;
        }
        Ok(())
    }

    /// The members of the group once a leader has committed its whole log, seen twice
    /// alike: a removal that timed out during the faults (a majority of the new membership
    /// was down) stays in the leader's log and commits once the nodes are back, so the
    /// members seen before it does are not the ones the group ends with. `None` if no
    /// leader settles within [`LONG`].
    async fn settled_members(&self) -> Option<Vec<NodeId>> {
        let deadline = Instant::now() + LONG;
        let mut last: Option<Vec<NodeId>> = None;
        while Instant::now() < deadline {
            let settled = self
                .net
                .leader()
                .map(|n| n.1.cluster_status())
                .filter(|s| {
                    // Read again: still the leader.
                    s.leader_id == Some(s.node_id)
                        && s.member(s.node_id)
                            .is_some_and(|m| m.matched_index == Some(s.commit_index))
                })
                .map(|s| s.members.iter().map(|m| m.id).collect::<Vec<_>>());
            if settled.is_some() && settled == last {
                return settled;
            }
            last = settled;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    async fn add_back(&self, id: NodeId, within: Duration) -> anyhow::Result<()> {
        let addr = self
            .members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.addr.clone())
            .unwrap_or_default();
        self.on_leader(within, move |b| {
            let addr = addr.clone();
            async move { b.add_member(id, &addr, true, Duration::from_secs(10)).await }
        })
        .await
    }

    /// Runs `op` on whichever live node takes it (the leader), retrying for `within` while
    /// the schedule's faults keep the group from answering.
    async fn on_leader<F, Fut>(&self, within: Duration, op: F) -> anyhow::Result<()>
    where
        F: Fn(Broker) -> Fut,
        Fut: std::future::Future<Output = Result<(), BrokerError>> + Send + 'static,
    {
        let deadline = Instant::now() + within;
        loop {
            // Every node's answer: the leader's refusal says why, the others' only that
            // they do not lead.
            let mut answers = Vec::new();
            for node in self.net.live() {
                match crate::client::on_node(&node, &op).await {
                    crate::client::Outcome::Ok(()) => return Ok(()),
                    other => answers.push(format!("node {}: {other:?}", node.0)),
                }
            }
            if Instant::now() > deadline {
                let answers = if answers.is_empty() {
                    "no live node".to_owned()
                } else {
                    answers.join("; ")
                };
                return Err(anyhow!("no node took it within {within:?} ({answers})"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every node (the end of a schedule).
    pub fn stop(&mut self) {
        for id in self.ids() {
            self.crash(id);
        }
    }
}

/// Waits until a stopped incarnation's CommitLog is wholly let go (its writer thread ended).
async fn released(id: NodeId, probe: Option<ReleaseProbe>) -> anyhow::Result<()> {
    let Some(probe) = probe else {
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !probe.released() {
        if Instant::now() > deadline {
            return Err(anyhow!("node {id}'s CommitLog was never released"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
