//! One test run: start the cluster, run the workload under the nemesis for the given time,
//! heal, wait for the cluster to settle, drain, check, report.
//!
//! Must never: return with a process it started still running (the `Cluster` is dropped
//! on every path, including errors).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::sync::Mutex;

use crate::checker::{self, Results};
use crate::client::{Access, Client, Outcome};
use crate::control::Cluster;
use crate::history::Recorder;
use crate::nemesis::{Fault, Nemesis};
use crate::report;
use crate::rng::Rng;
use crate::workload::{self, LogWorkload};

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct TestOpts {
    /// The `raftmq` binary.
    pub bin: PathBuf,
    /// Workload duration.
    pub time: Duration,
    /// Faults to inject.
    pub faults: Vec<Fault>,
    /// Nodes.
    pub nodes: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Where runs are stored.
    pub store: PathBuf,
    /// Run name (prefix of its directory).
    pub name: String,
    /// The workload.
    pub workload: LogWorkload,
    /// The admin token the nodes require (`None`: the harness's own).
    pub token: Option<String>,
    /// Nodes serve HTTPS with certificates from a CA made for the run.
    pub tls: bool,
    /// Broker groups (`nodes` each); more than one runs two NameServers and spreads the
    /// test topic over every group.
    pub groups: u64,
}

/// The outcome of a run.
pub struct RunOutcome {
    /// The run's directory.
    pub dir: PathBuf,
    /// The verdict.
    pub results: Results,
}

async fn wait_until<T, F, Fut>(deadline: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Every broker group settled ([`settled`]): its leader's Raft id.
async fn all_settled(client: &Client, groups: &[Vec<(u64, SocketAddr)>]) -> Option<Vec<u64>> {
    let mut leaders = Vec::new();
    for g in groups {
        leaders.push(settled(client, g).await?);
    }
    Some(leaders)
}

/// Waits for a leader every node agrees on, with everything committed applied everywhere.
async fn settled(client: &Client, addrs: &[(u64, SocketAddr)]) -> Option<u64> {
    let mut leader = None;
    let mut commit = 0;
    let mut applied = Vec::new();
    for (_, addr) in addrs {
        let v = client.cluster(*addr).await?;
        let l = v["leader_id"].as_u64()?;
        if leader.is_some_and(|x| x != l) {
            return None;
        }
        leader = Some(l);
        commit = commit.max(v["commit_index"].as_u64()?);
        applied.push(v["applied_index"].as_u64()?);
    }
    applied.iter().all(|&a| a >= commit).then_some(leader?)
}

/// Puts back any node a membership fault left outside the group.
async fn restore_membership(client: &Client, addrs: &[(u64, SocketAddr)]) {
    let Some(v) = client.cluster(addrs[0].1).await else {
        return;
    };
    let members: Vec<u64> = v["members"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["id"].as_u64()).collect())
        .unwrap_or_default();
    for (id, addr) in addrs {
        if !members.contains(id) {
            let _ = client
                .admin(
                    reqwest::Method::POST,
                    addrs[0].1,
                    "/v1/cluster/members",
                    Some(&json!({"id": id, "addr": addr.to_string(), "voter": true})),
                )
                .await;
        }
    }
}

/// Runs one test.
pub async fn run(opts: TestOpts) -> anyhow::Result<RunOutcome> {
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let dir = opts.store.join(format!("{}-{stamp}", opts.name));
    std::fs::create_dir_all(&dir)?;
    eprintln!(
        "raftmq-jepsen: run {} (seed {}), store {}",
        opts.name,
        opts.seed,
        dir.display()
    );
    let mut control = crate::control::Options {
        skewable: opts.faults.contains(&Fault::Clock),
        disks: opts.faults.contains(&Fault::Disk),
        tls: opts.tls,
        groups: opts.groups,
        ..crate::control::Options::default()
    };
    if let Some(token) = &opts.token {
        control.token = token.clone();
    }
    // Small segments, so runs seal, purge and ship many of them.
    // Undecided transactions (the txn workload) roll back after 3 check-backs; checks go to
    // the harness on this host only.
    let extra = [
        "--segment-size",
        "1048576",
        "--txn-max-checks",
        &crate::workload::TXN_MAX_CHECKS.to_string(),
        "--txn-check-hosts",
        "127.0.0.1",
    ]
    .map(str::to_owned);
    let cluster = Cluster::start(&opts.bin, &dir, opts.nodes, &extra, control).await?;
    // Per broker group: each node's Raft id and address.
    let groups: Vec<Vec<(u64, SocketAddr)>> = (0..cluster.groups())
        .map(|g| {
            cluster
                .group_ids(g)
                .into_iter()
                .map(|id| (cluster.raft_id(id), cluster.node(id).addr))
                .collect()
        })
        .collect();
    let access = cluster.access.clone();
    let cluster = Arc::new(Mutex::new(cluster));
    let result = run_in(&opts, &dir, cluster.clone(), &groups, &access).await;
    cluster.lock().await.stop_all();
    let results = result?;
    Ok(RunOutcome { dir, results })
}

async fn run_in(
    opts: &TestOpts,
    dir: &Path,
    cluster: Arc<Mutex<Cluster>>,
    groups: &[Vec<(u64, SocketAddr)>],
    access: &Access,
) -> anyhow::Result<Results> {
    let client = Client::new(Duration::from_secs(5), access)?;
    let admin = Client::new(Duration::from_secs(60), access)?;
    let addrs: Vec<(u64, SocketAddr)> = groups.iter().flatten().copied().collect();
    let addrs = &addrs[..];
    all_settled(&client, groups)
        .await
        .ok_or(())
        .or(
            wait_until(Duration::from_secs(60), || all_settled(&client, groups))
                .await
                .ok_or(()),
        )
        .map_err(|()| {
            anyhow::anyhow!(
                "the cluster did not elect a leader within 60 s; logs in {}",
                dir.display()
            )
        })?;
    let recorder = Arc::new(Recorder::create(&dir.join("history.jsonl"))?);
    let mut w = opts.workload.clone();
    if w.kind == workload::Kind::Txn {
        w.check_url = crate::txn_check::start(recorder.clone()).await?;
    }
    let w = Arc::new(w);
    // Several groups: the topic spread over all of them (once a node's routes show them).
    let spread_over: Vec<String> = if groups.len() > 1 {
        (0..groups.len() as u64).map(Cluster::group_name).collect()
    } else {
        Vec::new()
    };
    // The last refusal, for the error (a topic that cannot be made says why).
    let last = std::sync::Mutex::new(String::new());
    wait_until(Duration::from_secs(30), || async {
        for (_, addr) in addrs {
            match client
                .create_topic(*addr, &w.topic, w.queues, w.fifo, &spread_over)
                .await
            {
                Outcome::Ok(_) => return Some(()),
                Outcome::Fail(e) | Outcome::Info(e) => {
                    *last.lock().unwrap_or_else(|e| e.into_inner()) = format!("{addr}: {e}");
                }
            }
        }
        None
    })
    .await
    .ok_or_else(|| {
        let last = last.lock().unwrap_or_else(|e| e.into_inner());
        anyhow::anyhow!("could not create the topic in 30 s; last answer: {last}")
    })?;
    if w.kind == workload::Kind::Queue {
        // Expired leases come back after a short backoff, not RocketMQ's levels (1 s … 2 h):
        // the consumer that never acks would otherwise hold messages past the drain.
        wait_until(Duration::from_secs(30), || async {
            for (_, addr) in addrs {
                let set = client
                    .set_retry_backoff(*addr, workload::GROUP, &[100])
                    .await;
                if let Outcome::Ok(_) = set {
                    return Some(());
                }
            }
            None
        })
        .await
        .ok_or_else(|| anyhow::anyhow!("could not set the group's retry backoff"))?;
    }

    let mut rng = Rng::new(opts.seed);
    let nodes: Vec<SocketAddr> = addrs.iter().map(|a| a.1).collect();
    let started = Instant::now();
    let until = started + opts.time;
    let mut worker = |p: u64| workload::Worker {
        p,
        w: w.clone(),
        nodes: nodes.clone(),
        client: client.clone(),
        rec: recorder.clone(),
        rng: rng.fork(),
        until,
    };
    let mut tasks = Vec::new();
    for p in 0..w.producers {
        tasks.push(tokio::spawn(workload::producer(worker(p))));
    }
    for c in 0..w.consumers {
        let x = worker(w.producers + c);
        tasks.push(match w.kind {
            workload::Kind::Log | workload::Kind::Delay | workload::Kind::Txn => {
                let queues: Vec<u64> = (0..w.queues).filter(|q| q % w.consumers == c).collect();
                tokio::spawn(workload::consumer(x, queues))
            }
            workload::Kind::Queue => tokio::spawn(workload::group_consumer(x, c)),
        });
    }
    let nemesis = Nemesis {
        faults: opts.faults.clone(),
        rng: rng.fork(),
        cluster: cluster.clone(),
        recorder: recorder.clone(),
        client: admin.clone(),
    };
    let nemesis = tokio::spawn(nemesis.run(until));
    for t in tasks {
        t.await?;
    }
    nemesis.await?;

    // Heal, settle, drain.
    {
        let mut c = cluster.lock().await;
        c.proxies.heal();
        for id in c.ids() {
            c.resume(id);
            let _ = c.start_node(id, false);
        }
    }
    for g in groups {
        restore_membership(&admin, g).await;
    }
    let settled_leader = wait_until(Duration::from_secs(90), || async {
        for g in groups {
            restore_membership(&admin, g).await;
        }
        all_settled(&client, groups).await
    })
    .await;
    if settled_leader.is_none() {
        eprintln!("raftmq-jepsen: the cluster did not settle after healing; draining anyway");
    }
    let drain_client = Client::new(Duration::from_secs(10), access)?;
    if w.kind == workload::Kind::Delay {
        // The last scheduled sends come due up to MAX_DELAY_MS after the run: drain after
        // that (and after a failover's worth more), or they would read as lost.
        let due = until + Duration::from_millis(workload::MAX_DELAY_MS) + Duration::from_secs(5);
        tokio::time::sleep_until(due.into()).await;
    }
    if w.kind == workload::Kind::Txn {
        // Undecided transactions roll back after their last check: read the final states
        // once that is past (a check every TXN_CHECK_AFTER_MS, TXN_MAX_CHECKS of them, each
        // up to 5 s if a check target is cut off), then drain.
        let checks = workload::TXN_CHECK_AFTER_MS * u64::from(workload::TXN_MAX_CHECKS + 1);
        let due = until + Duration::from_millis(checks) + Duration::from_secs(10);
        tokio::time::sleep_until(due.into()).await;
        workload::drain_txns(10_000, &w, &nodes, &drain_client, &recorder).await;
    }
    let drain_started = Instant::now();
    match w.kind {
        workload::Kind::Log | workload::Kind::Delay | workload::Kind::Txn => {
            workload::drain(10_000, &w, &nodes, &drain_client, &recorder).await
        }
        workload::Kind::Queue => {
            workload::drain_group(10_000, &w, &nodes, &drain_client, &recorder).await
        }
    }
    let drain_s = drain_started.elapsed().as_secs_f64();
    eprintln!("raftmq-jepsen: drained in {drain_s:.1} s");
    let history = recorder.finish();
    let results = checker::check(&history);
    let run = json!({
        "name": opts.name,
        "seed": opts.seed,
        "time_s": opts.time.as_secs_f64(),
        "nodes": opts.nodes,
        "groups": opts.groups,
        "nemesis": opts.faults.iter().map(|f| format!("{f:?}").to_lowercase()).collect::<Vec<_>>(),
        "producers": w.producers,
        "consumers": w.consumers,
        "queues": w.queues,
        "workload": format!("{:?}", w.kind).to_lowercase(),
        "fifo": w.fifo,
        "elapsed_s": started.elapsed().as_secs_f64(),
        "settled": settled_leader.is_some(),
        "drain_s": drain_s,
    });
    report::write(dir, &history, &results, &run)?;
    Ok(results)
}
