//! `--mode groups`: several broker groups on this machine. Starts a NameServer and two
//! groups of three `raftmq serve` processes, then measures
//! - scale-out: produce throughput with two topics on one group, then with one topic on
//!   each group (each produced through its own group's nodes), then with one topic spread
//!   over both groups (produced through every node: each batch splits in two), for
//!   `--duration` seconds each; then receive+ack of the backlog, from a topic of one group
//!   and from the spread topic (every receive drawing from both groups);
//! - the route-miss cost: one message at a time to a topic of g1, sent to g1's leader, to a
//!   g1 follower (forwarded in the group) and to a g2 node (routed to g1 through the
//!   NameServers' routes).
//!
//! On one machine both groups share its cores and disk, so expect little from scale-out
//! here: the figure per group says what each would do with a machine of its own.
//!
//! Must never: leave a process it started running (the NameServer is killed on drop, the
//! groups by [`Spawned`]).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use super::{BenchArgs, Outcome, percentile, post_json, produce_body, receive_and_ack};
use crate::cluster::{Spawned, leader};

/// The NameServer process, killed when dropped.
struct NameServer(Child);

impl Drop for NameServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Produces batches to `(node URL, topic)` targets, `conc` requests in flight, for `dur`;
/// messages per second for each target.
async fn produce_for(
    http: &reqwest::Client,
    targets: &[(String, String)],
    args: &BenchArgs,
    dur: Duration,
) -> anyhow::Result<Vec<f64>> {
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<Vec<AtomicU64>> = Arc::new(targets.iter().map(|_| AtomicU64::new(0)).collect());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let (http, stop, counts) = (http.clone(), stop.clone(), counts.clone());
        let (t, (url, topic)) = (w % targets.len(), targets[w % targets.len()].clone());
        let (size, batch) = (args.size, args.batch);
        tasks.push(tokio::spawn(async move {
            let target = format!("{url}/v1/topics/{topic}/messages");
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                post_json(&http, &target, produce_body(size, batch, 0, seq, None)).await?;
                counts[t].fetch_add(batch as u64, Ordering::Relaxed);
                seq += batch as u64;
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(dur).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(counts
        .iter()
        .map(|c| c.load(Ordering::Relaxed) as f64 / secs)
        .collect())
}

/// p50 and p99 (ms) of `n` single-message produces sent one at a time to `url`.
async fn latency(
    http: &reqwest::Client,
    url: &str,
    topic: &str,
    n: usize,
) -> anyhow::Result<(f64, f64)> {
    let target = format!("{url}/v1/topics/{topic}/messages");
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        post_json(http, &target, produce_body(100, 1, 0, i as u64, None)).await?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    Ok((percentile(&ms, 0.5), percentile(&ms, 0.99)))
}

async fn create(http: &reqwest::Client, url: &str, topic: &str, queues: u32) -> anyhow::Result<()> {
    create_with(http, url, topic, json!({ "queues": queues })).await
}

async fn create_with(
    http: &reqwest::Client,
    url: &str,
    topic: &str,
    body: serde_json::Value,
) -> anyhow::Result<()> {
    let r = http
        .put(format!("{url}/v1/topics/{topic}"))
        .json(&body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("creating {topic}: {}", r.text().await?);
    }
    Ok(())
}

/// Waits until `url` serves `topic` (a node learning a route or a spread topic's parts).
async fn until_served(
    http: &reqwest::Client,
    url: &str,
    topic: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while http
        .get(format!("{url}/v1/topics/{topic}"))
        .send()
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        if Instant::now() > deadline {
            bail!("{url} never served topic {topic}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Consumer-group receive (up to 256) + ack through `urls` in turn, `conc` consumers, for
/// `dur`: messages acked per second.
async fn consume_for(
    http: &reqwest::Client,
    urls: &[String],
    topic: &str,
    args: &BenchArgs,
    dur: Duration,
) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let (http, stop, count) = (http.clone(), stop.clone(), count.clone());
        let (urls, topic, size) = (urls.to_vec(), topic.to_owned(), args.size as u64);
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let base = &urls[i % urls.len()];
                let (n, _) = receive_and_ack(&http, base, "bench", &topic, w, 256, size).await?;
                count.fetch_add(n, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(dur).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// `--mode groups` (see the module docs).
pub(crate) async fn groups(http: &reqwest::Client, args: &BenchArgs) -> anyhow::Result<Outcome> {
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("raftmq"),
    };
    let ns_addr = free_addr()?;
    let _ns = NameServer(
        Command::new(&bin)
            .args(["nameserver", "--listen", &ns_addr.to_string()])
            .env("RAFTMQ_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the NameServer")?,
    );
    let extra = |g: &str| {
        ["--group", g, "--nameservers", &ns_addr.to_string()]
            .map(str::to_owned)
            .to_vec()
    };
    let bin = Some(bin.as_path());
    let g1 = Spawned::start_with(&args.flush, bin, None, false, &extra("g1"))?;
    let g2 = Spawned::start_with(&args.flush, bin, None, false, &extra("g2"))?;
    let within = Duration::from_secs(30);
    let (l1, l1_url) = leader(http, &g1.urls(), within).await?;
    let (_, l2_url) = leader(http, &g2.urls(), within).await?;
    let dur = Duration::from_secs(args.duration);
    let q = args.queues;

    // One group holding both topics.
    create(http, &l1_url, "one-a", q).await?;
    create(http, &l1_url, "one-b", q).await?;
    let g1_urls = g1.urls();
    let g2_urls = g2.urls();
    let pick = |urls: &[String], i: usize| urls[i % urls.len()].clone();
    let targets: Vec<(String, String)> = (0..args.concurrency)
        .map(|i| {
            (
                pick(&g1_urls, i),
                if i % 2 == 0 { "one-a" } else { "one-b" }.to_owned(),
            )
        })
        .collect();
    let one: f64 = produce_for(http, &targets, args, dur).await?.iter().sum();

    // One topic on each group, each produced through its own group's nodes.
    create(http, &l1_url, "two-a", q).await?;
    create(http, &l2_url, "two-b", q).await?;
    let targets: Vec<(String, String)> = (0..args.concurrency)
        .map(|i| {
            if i % 2 == 0 {
                (pick(&g1_urls, i / 2), "two-a".to_owned())
            } else {
                (pick(&g2_urls, i / 2), "two-b".to_owned())
            }
        })
        .collect();
    let per_target = produce_for(http, &targets, args, dur).await?;
    let (mut on_g1, mut on_g2) = (0.0, 0.0);
    for (i, r) in per_target.iter().enumerate() {
        if i % 2 == 0 { on_g1 += r } else { on_g2 += r }
    }

    // One topic spread over both groups (twice the queues, half on each), produced
    // through every node: each batch is split into one share per group.
    create_with(
        http,
        &l1_url,
        "wide",
        json!({"queues": 2 * q, "groups": ["g1", "g2"]}),
    )
    .await?;
    let all_urls: Vec<String> = g1_urls.iter().chain(&g2_urls).cloned().collect();
    for u in &all_urls {
        until_served(http, u, "wide", within).await?;
    }
    let targets: Vec<(String, String)> = (0..args.concurrency)
        .map(|i| (pick(&all_urls, i), "wide".to_owned()))
        .collect();
    let spread: f64 = produce_for(http, &targets, args, dur).await?.iter().sum();

    // Receive+ack of the backlogs: a topic of g1 through g1's nodes, then the spread topic
    // through every node.
    let consume_one = consume_for(http, &g1_urls, "one-a", args, dur).await?;
    let consume_spread = consume_for(http, &all_urls, "wide", args, dur).await?;

    // Route misses: a topic of g1 through each kind of node.
    let follower = g1_urls
        .iter()
        .find(|u| **u != l1_url)
        .cloned()
        .context("a g1 follower")?;
    // g2's node must have learned the routes before it is timed.
    until_served(http, &g2_urls[0], "one-a", within).await?;
    let n = 1000;
    let direct = latency(http, &l1_url, "one-a", n).await?;
    let forwarded = latency(http, &follower, "one-a", n).await?;
    let routed = latency(http, &g2_urls[0], "one-a", n).await?;
    let result = json!({
        "mode": "groups",
        "note": "two groups of three raftmq serve processes and a NameServer, all on this machine",
        "produce_msgs_per_s": {
            "one_group_two_topics": one,
            "two_groups_one_topic_each": on_g1 + on_g2,
            "two_groups_g1": on_g1,
            "two_groups_g2": on_g2,
            "two_groups_one_spread_topic": spread,
        },
        "receive_ack_msgs_per_s": {
            "one_group_topic": consume_one,
            "spread_topic_two_groups": consume_spread,
        },
        "single_message_ms": {
            "g1_leader": {"p50": direct.0, "p99": direct.1},
            "g1_follower_forwarded": {"p50": forwarded.0, "p99": forwarded.1},
            "g2_node_routed_to_g1": {"p50": routed.0, "p99": routed.1},
        },
        "settings": {"size": args.size, "batch": args.batch, "concurrency": args.concurrency,
                     "queues": q, "duration_s": args.duration, "g1_leader": l1},
    });
    Ok((result, Vec::new()))
}
