//! One schedule from one seed: a 3- or 5-node group in this process, a seeded list of fault
//! steps (partitions, one-way cuts, crashes and restarts, lossy, slow and duplicating links,
//! leader transfers, log compactions that make lagging nodes install snapshots; power loss
//! and wipes when asked) played against concurrent clients, then heal, catch-up, a final
//! read of every queue through every node, and the verdict: raftmq-jepsen's checker on the
//! history plus the invariants only a simulation can see (replicas hold the same messages
//! at the same offsets and the same consumer-group floors; leaders of one term elected in
//! rising leader-id order).
//!
//! What is seeded: the schedule, every client's choices, and the network's fault draws.
//! What is not: thread timing (each node runs its own runtime and RocksDB its own threads,
//! on real clocks), so a seed replays the same steps and operations, not the same
//! interleaving: a failure found on a seed recurs on some of its replays, not all (run
//! `replay` in a loop, or keep the failing history with `run --histories`).
//!
//! Must never: call a schedule valid when the checker or an invariant found anything, or
//! leave a node running after it returns.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use raftmq_jepsen::checker;
use raftmq_jepsen::history::{Kind, Process};
use raftmq_raft::{NodeId, TopicSpec};

use crate::lossy::Damage;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::client::{self, Client, History, Outcome, QUEUES, TOPICS};
use crate::cluster::Cluster;
use crate::invariants::{StepChecks, groups_disagree, replicas_disagree};
use crate::net::{Faults, SimNet};
pub use crate::schedule::Step;
use crate::schedule::{damage_of, schedule, timer_steps, timing_of};

/// What a run looks like.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Nodes in the group (3 or 5).
    pub nodes: usize,
    /// Client processes.
    pub clients: u64,
    /// How long faults and clients run, ms.
    pub duration_ms: u64,
    /// Extra time each CommitLog sync takes, µs (a slower disk widens the window between a
    /// write and its sync that a power loss can catch).
    pub sync_delay_us: u64,
    /// Clients also produce to and consume from a FIFO topic (off by default while a rare
    /// divergence seen with it is open: docs/simulation.md).
    pub fifo: bool,
    /// Schedules may wipe a node's data directory (off by default: a wiped node that
    /// rejoins under its old id can lose committed entries, docs/simulation.md).
    pub wipes: bool,
    /// Schedules may cut power (one node, or all at once) instead of only crashing (off by
    /// default while a replica divergence seen after an outage is open: docs/simulation.md).
    pub power_loss: bool,
    /// Only the steps of the first version: no clock skews, time warps or crashes inside
    /// snapshot installs (a seed then draws the schedule it drew before those existed).
    pub classic: bool,
    /// Schedules may take a node out of the group and add it back with its data deleted
    /// (membership changes in the middle of the faults).
    pub membership: bool,
    /// Each seed draws its Raft timing ([`crate::schedule::timing_of`]) instead of [`crate::cluster::TIMING`].
    pub timing: bool,
    /// Timer steps ([`crate::schedule::timer_steps`]) join the schedule: nodes' Raft clocks stall and drift.
    pub timers: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 3,
            clients: 4,
            duration_ms: 1500,
            sync_delay_us: 500,
            fifo: false,
            wipes: false,
            power_loss: false,
            classic: false,
            membership: false,
            timing: false,
            timers: true,
        }
    }
}

/// The verdict on one seed.
#[derive(Debug)]
pub struct Verdict {
    /// The seed.
    pub seed: u64,
    /// No anomaly, no broken invariant.
    pub valid: bool,
    /// One line per problem found.
    pub problems: Vec<String>,
    /// The fault steps played, with their times (ms from the start of the faults).
    pub steps: Vec<(u64, Step)>,
    /// Operation counts: sends ok, polls ok, deliveries.
    pub stats: serde_json::Value,
    /// The whole history (for `--trace`).
    pub history: Vec<raftmq_jepsen::history::Event>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

async fn play(
    step: &Step,
    cluster: &mut Cluster,
    net: &SimNet,
    h: &History,
    damage: Option<Damage>,
) -> anyhow::Result<()> {
    let ids = cluster.ids();
    match step {
        Step::Partition(side) => {
            net.heal();
            net.partition(side, &ids);
        }
        Step::CutOneWay(a, b) => net.cut_one_way(*a, *b),
        Step::Heal => net.heal(),
        Step::Crash(id) => cluster.crash(*id),
        Step::PowerLoss(id) => {
            let lost = cluster.lose_power(*id, damage).await?;
            h.nemesis(
                "power-lost",
                json!({"node": id, "unsynced_bytes": lost, "damage": format!("{damage:?}")}),
            );
        }
        Step::Wipe(id) => cluster.wipe(*id).await?,
        Step::Outage => {
            for id in ids {
                let lost = cluster.lose_power(id, damage).await?;
                h.nemesis(
                    "power-lost",
                    json!({"node": id, "unsynced_bytes": lost, "damage": format!("{damage:?}")}),
                );
            }
        }
        Step::Restart(id) => cluster.restart(*id, false).await?,
        Step::Faults(f) => net.set_faults(*f),
        Step::Skew(id, ms) => cluster.skew(*id, *ms),
        Step::Warp(ms) => cluster.warp(*ms),
        Step::Stall(id, ms) => cluster.stall(*id, Duration::from_millis(*ms)),
        Step::Drift(id, percent) => cluster.drift(*id, f64::from(*percent) / 100.0),
        Step::CrashInInstall(id, step) => {
            // Make it install: down for a moment while the others take writes and forget
            // their logs, then back (behind every peer's log, it gets a snapshot).
            cluster.arm_install_crash(*id, *step);
            cluster.crash(*id);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let live = net.live();
            for node in &live {
                let _ = client::on_node(node, |b| async move { b.compact().await }).await;
            }
            // A leader keeps the log its followers still need: one that forgot it as a
            // follower takes over.
            if let Some(l) = net.leader()
                && let Some(to) = live.iter().map(|n| n.0).find(|&n| n != l.0)
            {
                let _ =
                    client::on_node(&l, move |b| async move { b.transfer_leader(to).await }).await;
            }
            cluster.restart(*id, false).await?;
        }
        Step::Rejoin(id) => {
            let changed = cluster.rejoin(*id).await?;
            h.nemesis("rejoin", json!({"node": id, "changed": changed}));
        }
        Step::Compact(id) => {
            if let Some(node) = net.live().into_iter().find(|n| n.0 == *id) {
                let _ = client::on_node(&node, |b| async move { b.compact().await }).await;
            }
        }
        Step::TransferLeader(to) => {
            if let Some(node) = net.leader() {
                let to = *to;
                let _ = client::on_node(&node, move |b| async move { b.transfer_leader(to).await })
                    .await;
            }
        }
    }
    Ok(())
}

/// Waits until some node leads with its group time known, and makes the topic.
async fn setup(net: &SimNet) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    // The history's topics keep every message through any time warp (the checker's `lost`
    // holds); the retention topic's expire.
    let topics: Vec<(&'static str, u64)> = TOPICS
        .iter()
        .map(|t| (*t, 30 * 24 * 3_600_000))
        .chain([(client::RETENTION_TOPIC, client::RETENTION_MS)])
        .collect();
    let mut made = 0;
    while made < topics.len() {
        let (topic, retention_ms) = topics[made];
        let spec = TopicSpec {
            queues: QUEUES,
            fifo: topic == client::FIFO_TOPIC,
            retention_ms,
            dedup_window_ms: raftmq_raft::DEFAULT_DEDUP_WINDOW_MS,
            part: None,
        };
        for node in net.live() {
            if node.1.cluster_status().leader_id == Some(node.0)
                && let Outcome::Ok(()) =
                    client::on_node(
                        &node,
                        move |b| async move { b.put_topic(topic, spec).await },
                    )
                    .await
            {
                made += 1;
                break;
            }
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "the group formed no leader that took the topics in 30 s"
            ));
        }
        if made < topics.len() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Crashes and restarts every node whose install stopped at an armed step (its Raft stopped
/// there, as if the process had died), recording it.
async fn crash_in_install(cluster: &mut Cluster, h: &History) -> anyhow::Result<()> {
    for (id, step) in cluster.crash_sprung() {
        h.nemesis(
            "crashed-in-install",
            json!({"node": id, "after": format!("{step:?}")}),
        );
        cluster.restart(id, false).await?;
    }
    Ok(())
}

/// After the faults: every node up and caught up with the same applied index, or why not.
async fn converge(cluster: &mut Cluster, net: &SimNet, h: &History) -> Result<u64, String> {
    net.heal();
    net.set_faults(Faults::default());
    cluster.faults_over();
    cluster.disarm_installs();
    crash_in_install(cluster, h)
        .await
        .map_err(|e| format!("{e:#}"))?;
    // Every node that starts first; nodes still waiting for their peers' answers hear
    // them once all are up; then the ones refused for lost data are replaced, which takes
    // a group that can commit.
    for replace in [false, true] {
        if replace {
            cluster
                .settle_admissions(Duration::from_secs(20))
                .await
                .map_err(|e| format!("{e:#}"))?;
        }
        for id in cluster.ids() {
            cluster
                .restart(id, replace)
                .await
                .map_err(|e| format!("{e:#}"))?;
        }
    }
    cluster.add_pending().await.map_err(|e| format!("{e:#}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let live = net.live();
        let status: Vec<_> = live.iter().map(|n| n.1.cluster_status()).collect();
        let leader = status.iter().find(|s| s.leader_id == Some(s.node_id));
        if let Some(l) = leader {
            let target = l.commit_index;
            if status.len() == cluster.ids().len()
                && status
                    .iter()
                    .all(|s| s.applied_index >= target && s.leader_id == Some(l.node_id))
            {
                return Ok(target);
            }
        }
        if Instant::now() > deadline {
            let view: Vec<_> = status
                .iter()
                .map(|s| {
                    format!(
                        "n{} leader {:?} commit {} applied {}",
                        s.node_id, s.leader_id, s.commit_index, s.applied_index
                    )
                })
                .collect();
            return Err(format!(
                "no-convergence: 20 s after healing, {}",
                view.join("; ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads every queue of both topics from offset 0 to its end through each node (`final`
/// polls), and returns what each node holds, queue by queue.
async fn drain(net: &SimNet, h: &History, p: u64) -> BTreeMap<NodeId, Vec<Vec<(u64, String)>>> {
    let mut held = BTreeMap::new();
    for node in net.live() {
        let mut queues = Vec::new();
        for (topic, queue) in TOPICS
            .iter()
            .flat_map(|t| (0..QUEUES).map(move |q| (*t, q)))
        {
            let mut all = Vec::new();
            let mut offset = 0;
            let mut first = true;
            let mut failures = 0;
            loop {
                let invoke = json!({"topic": topic, "queue": queue, "offset": offset, "final": true, "reset": first});
                first = false;
                h.record(Process::Client(p), Kind::Invoke, "poll", invoke.clone());
                match client::read(&node, topic, queue, offset).await {
                    Outcome::Ok((msgs, next)) => {
                        h.record(
                            Process::Client(p),
                            Kind::Ok,
                            "poll",
                            client::messages_value(&invoke, &msgs),
                        );
                        if msgs.is_empty() {
                            break;
                        }
                        all.extend(msgs);
                        offset = next;
                    }
                    Outcome::Fail(e) | Outcome::Info(e) => {
                        let mut v = invoke.clone();
                        v["error"] = json!(e);
                        h.record(Process::Client(p), Kind::Fail, "poll", v);
                        failures += 1;
                        if failures > 50 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            queues.push(all);
        }
        held.insert(node.0, queues);
    }
    held
}

/// Election safety, checked all along (every 2 ms). openraft's advanced leader ids
/// (`leader_id_adv`, what `raft` configures) are `(term, node)`, totally ordered, so a term
/// may see several leaders, each elected over a larger id than the last: a node that wins
/// leadership after a node with a larger id led in the same term was granted a vote a
/// quorum had already passed beyond. That is the rule checked here (standard Raft's "one
/// leader per term" does not hold by design).
async fn watch_leaders(net: Arc<SimNet>, watching: Arc<AtomicBool>) -> Vec<String> {
    // The largest node seen leading in each term, and the last term each node led. A
    // restarted leader resumes its own committed vote without an election (openraft keeps
    // it), so leading a term it led before is not a new win.
    let mut highest: BTreeMap<u64, NodeId> = BTreeMap::new();
    let mut led: BTreeMap<NodeId, u64> = BTreeMap::new();
    let mut problems = Vec::new();
    while watching.load(Ordering::Relaxed) {
        for (id, broker, _) in net.live() {
            let s = broker.cluster_status();
            if s.leader_id != Some(id) {
                continue;
            }
            let rising = led.insert(id, s.term) != Some(s.term);
            let top = highest.entry(s.term).or_insert(id);
            if rising && *top > id && problems.len() < 3 {
                problems.push(format!(
                    "two-leaders: node {id} became leader in term {} after node {} led in it",
                    s.term, *top
                ));
            }
            *top = (*top).max(id);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    problems
}

/// Runs one seed to its verdict.
pub async fn run(seed: u64, opts: Options) -> anyhow::Result<Verdict> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let net = SimNet::new(seed ^ 0x5eed_5eed_5eed_5eed);
    let timing = timing_of(seed, opts.timing);
    let mut cluster = Cluster::start(
        opts.nodes,
        net.clone(),
        Duration::from_micros(opts.sync_delay_us),
        timing,
    )
    .await?;
    setup(&net).await?;
    let h = Arc::new(History::default());
    let mut steps = schedule(&mut rng, &cluster.ids(), opts.duration_ms, opts);
    if opts.timers {
        steps.extend(timer_steps(seed, &cluster.ids(), opts.duration_ms, timing));
        steps.sort_by_key(|s| s.0);
    }
    let damage = damage_of(seed, opts.power_loss);
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    let fifo = opts.fifo;
    for p in 0..opts.clients {
        let (net, h, stop) = (net.clone(), h.clone(), stop.clone());
        let mut crng = StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(p));
        clients.push(tokio::spawn(async move {
            let mut c = Client::new(p);
            while !stop.load(Ordering::Relaxed) {
                let pick = crng.random_range(0..64);
                match crng.random_range(0..100) {
                    0..40 => c.send(&net, &h, pick, TOPICS[0]).await,
                    40..55 if fifo => c.send(&net, &h, pick, TOPICS[1]).await,
                    40..55 => c.send(&net, &h, pick, TOPICS[0]).await,
                    55..80 => {
                        let t = if fifo { crng.random_range(0..2) } else { 0 };
                        let q = crng.random_range(0..QUEUES);
                        c.poll(&net, &h, pick, t, q).await
                    }
                    80..90 => c.churn(&net, pick, crng.random_range(0..3) != 0).await,
                    r => {
                        let topic = TOPICS[if fifo { r as usize % 2 } else { 0 }];
                        c.receive(&net, &h, pick, topic, r < 97).await
                    }
                }
                tokio::time::sleep(Duration::from_millis(crng.random_range(0..8))).await;
            }
        }));
    }
    let watching = Arc::new(AtomicBool::new(true));
    let monitor = tokio::spawn(watch_leaders(net.clone(), watching.clone()));
    let t0 = Instant::now();
    let mut problems = Vec::new();
    let mut checks = StepChecks::default();
    for (at, step) in &steps {
        let due = t0 + Duration::from_millis(*at);
        tokio::time::sleep_until(due.into()).await;
        h.nemesis("step", json!(format!("{step:?}")));
        if let Err(e) = play(step, &mut cluster, &net, &h, damage).await {
            problems.push(format!("nemesis: {step:?}: {e}"));
        }
        if let Step::Wipe(id) | Step::Rejoin(id) = step {
            checks.wiped(*id);
        }
        if let Err(e) = crash_in_install(&mut cluster, &h).await {
            problems.push(format!(
                "nemesis: restarting after a crash in an install: {e:#}"
            ));
        }
        checks
            .check(&net, &format!("step at {at} ms, {step:?}"))
            .await;
    }
    tokio::time::sleep_until((t0 + Duration::from_millis(opts.duration_ms)).into()).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    h.nemesis("heal", json!("every link restored, every node up"));
    // A write still in flight when the clients stopped may commit between two nodes'
    // drains: a difference counts only if it outlives a few rounds of catching up.
    let mut disagree = Vec::new();
    for _ in 0..5 {
        let converged = converge(&mut cluster, &net, &h).await;
        let held = drain(&net, &h, opts.clients).await;
        disagree = replicas_disagree(&held);
        disagree.extend(groups_disagree(&net).await);
        if let Err(e) = converged {
            // Stuck: more rounds would only wait longer.
            disagree.insert(0, e);
            break;
        }
        if disagree.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !disagree.is_empty() {
        // What each node says of itself, for whoever chases it.
        let view: Vec<String> = net
            .live()
            .iter()
            .map(|(id, b, _)| {
                let s = b.cluster_status();
                let voters = b.voter_sets();
                format!(
                    "n{id} term {} leader {:?} commit {} applied {} voters {voters:?}",
                    s.term, s.leader_id, s.commit_index, s.applied_index
                )
            })
            .collect();
        disagree.push(format!("nodes after the last round: {}", view.join("; ")));
    }
    checks.check(&net, "healing").await;
    problems.extend(std::mem::take(&mut checks.problems));
    problems.extend(std::mem::take(&mut cluster.lost_acks));
    problems.extend(disagree);
    watching.store(false, Ordering::Relaxed);
    problems.extend(monitor.await.unwrap_or_default());
    // Elections held (each one a term): what the timer steps add shows here.
    let term = net.live().iter().map(|n| n.1.cluster_status().term).max();
    cluster.stop();
    let history = h.events();
    let results = checker::check(&history);
    for (name, a) in &results.anomalies {
        if a.count > 0 && checker::COUNTED.contains(&name.as_str()) {
            let example = a
                .examples
                .first()
                .map(|e| e.to_string())
                .unwrap_or_default();
            problems.push(format!("{name}: {} (e.g. {example})", a.count));
        }
    }
    let stats = json!({
        "send_ok": results.stats["send"]["ok"],
        "send_info": results.stats["send"]["info"],
        "poll_ok": results.stats["poll"]["ok"],
        "deliveries": results.stats["deliveries"],
        "acks_ok": results.stats["ack"]["ok"],
        "snapshot_installs": net.installs(),
        "digests_sampled": checks.samples,
        "digests_compared": checks.matched,
        "retention_expired": checks.expired,
        "election_timeout_ms": timing.election_timeout_ms,
        "term": term,
        "install_crashes": history.iter().filter(|e| e.f == "crashed-in-install").count(),
        "unsynced_bytes_lost": history
            .iter()
            .filter(|e| e.f == "power-lost")
            .filter_map(|e| e.value["unsynced_bytes"].as_u64())
            .sum::<u64>(),
    });
    Ok(Verdict {
        seed,
        valid: problems.is_empty(),
        problems,
        steps,
        stats,
        history,
        elapsed: started.elapsed(),
    })
}
