//! `raftmq-bench` (also run as `raftmq bench`): load against a running cluster (or one it
//! starts itself) over the HTTP API, with a live progress line, a summary (msgs/s, MB/s,
//! latency percentiles), JSON, and optionally an SVG of throughput and latency over time.
//!
//! A client like the chaos harness: it depends on no workspace crate and sees raftmq only
//! through processes and HTTP, so the server binary carries no load generator.
//!
//! Modes: `produce` (batches), `consume` (read by offset), `group` (receive + ack),
//! `latency` (one message at a time); with `--spawn` (the bench owns the processes) also
//! `failover` and `catchup` ([`faults`]), `scale` and `restart` ([`scale`]), `delay`
//! ([`delay`]) and `groups` ([`groups`]).
//!
//! Must never: send traffic outside 127.0.0.0/8 when it spawns the cluster, or leave a
//! process it started running.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, ValueEnum};
use serde_json::{Value, json};

mod cluster;
mod delay;
mod faults;
mod groups;
mod scale;
use cluster::{Spawned, client, leader};

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Produce batches.
    Produce,
    /// Read by offset (produces first if the topic is empty).
    Consume,
    /// Consumer-group receive + ack (produces first if needed).
    Group,
    /// One message per request, one request at a time.
    Latency,
    /// Kill -9 the leader during a produce run (needs --spawn).
    Failover,
    /// Wipe a replica and time its catch-up (needs --spawn).
    Catchup,
    /// Produce and group throughput and node memory as topics and consumer groups grow
    /// (`--scale-topics`, `--scale-groups`; needs --spawn).
    Scale,
    /// Time a follower's restart to ready with the log it holds (fill with `--count` and
    /// `--size`; needs --spawn).
    Restart,
    /// Scheduled messages: memory of `--pending` parked ones, and how late `--count`
    /// messages due over `--duration` seconds become readable (needs --spawn).
    Delay,
    /// Two broker groups and a NameServer: produce on one group vs two, and the cost of a
    /// request reaching a node of the wrong group (starts its own processes; needs --spawn).
    Groups,
}

/// Where `--mode consume` reads a backlog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Start {
    /// From each queue's first message (the oldest data: on disk, out of the page cache
    /// when the backlog is larger than memory).
    Head,
    /// From the newest messages.
    Tail,
}

#[derive(Parser, Debug)]
#[command(
    name = "raftmq-bench",
    version,
    about = "Measure throughput, latency, failover and catch-up of raftmq over its HTTP API"
)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(cli.args))
}

/// `raftmq-bench` options.
#[derive(Args, Debug, Clone)]
struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Produce)]
    mode: Mode,
    /// Node URLs (comma-separated), e.g. http://127.0.0.1:8081 (not with --spawn).
    #[arg(
        long,
        default_value = "http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083"
    )]
    url: String,
    /// Start a 3-node cluster (`raftmq serve` processes) in a temp dir and stop it after.
    #[arg(long)]
    spawn: bool,
    /// With --spawn: the `raftmq` binary to start (default: the one beside this program).
    #[arg(long, env = "RAFTMQ_BIN")]
    server_bin: Option<PathBuf>,
    /// With --spawn: `sync` or `async` flush.
    #[arg(long, default_value = "sync")]
    flush: String,
    /// Message body size, bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Messages per produce request (or max per receive/read).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Stop after this many messages instead.
    #[arg(long)]
    count: Option<u64>,
    /// Distinct keys (0: no key, round-robin queues).
    #[arg(long, default_value_t = 0)]
    keys: u64,
    /// Topic.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Queues of the topic (created if missing).
    #[arg(long, default_value_t = 8)]
    queues: u32,
    /// Make the topic FIFO (`--mode group` then receives ordered runs per queue).
    #[arg(long)]
    fifo: bool,
    /// Give every produced message a unique idempotency key (what exactly-once costs).
    #[arg(long)]
    idempotent: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG of throughput and latency over time here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Send to the leader only (default: random nodes; followers forward).
    #[arg(long)]
    leader_only: bool,
    /// Bearer token sent with every request; with --spawn the nodes are started with it as
    /// their admin token (authentication on).
    #[arg(long, env = "RAFTMQ_TOKEN")]
    token: Option<String>,
    /// With --spawn: nodes serve HTTPS with certificates from a CA made for the run
    /// (`raftmq certs`), and peers verify each other.
    #[arg(long)]
    tls: bool,
    /// PEM CA certificate to trust for https:// node URLs (not with --spawn).
    #[arg(long, env = "RAFTMQ_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// With --mode consume: read each queue from its first message (`head`) or from its
    /// last `--tail-messages` (split over the queues; `tail`).
    #[arg(long, value_enum, default_value_t = Start::Head)]
    start: Start,
    /// With --start tail: how many of the newest messages to read (all queues together).
    #[arg(long, default_value_t = 100_000)]
    tail_messages: u64,
    /// With --mode scale: topic counts to measure at (each with --queues queues).
    #[arg(long, value_delimiter = ',', default_value = "1,100,10000")]
    scale_topics: Vec<u64>,
    /// With --mode scale: consumer-group counts to measure at.
    #[arg(long, value_delimiter = ',', default_value = "1,1000")]
    scale_groups: Vec<u64>,
    /// With --mode delay: scheduled messages to park a day ahead first.
    #[arg(long, default_value_t = 1_000_000)]
    pending: u64,
}

struct Stats {
    msgs: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    /// (elapsed s, latency ms, messages) per request.
    samples: std::sync::Mutex<Vec<(f64, f64, u64)>>,
}

impl Stats {
    fn new() -> Arc<Self> {
        Arc::new(Stats {
            msgs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            samples: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn record(&self, start: Instant, t0: Instant, msgs: u64, bytes: u64) {
        self.msgs.fetch_add(msgs, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let lat = t0.elapsed().as_secs_f64() * 1e3;
        let at = t0.duration_since(start).as_secs_f64();
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((at, lat, msgs));
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// POSTs a JSON body and reads the answer; any non-2xx status is an error.
pub(crate) async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: String,
) -> anyhow::Result<()> {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("{url}: {} {}", r.status(), r.text().await?);
    }
    r.bytes().await?;
    Ok(())
}

/// A produce request's body; with `unique`, every message carries an idempotency key made
/// from it (unique per request) and its index.
fn produce_body(size: usize, batch: usize, keys: u64, seq: u64, unique: Option<&str>) -> String {
    let body = "x".repeat(size);
    let msgs: Vec<Value> = (0..batch)
        .map(|i| {
            let mut m = if keys > 0 {
                json!({"body": body, "key": format!("k{}", (seq + i as u64) % keys)})
            } else {
                json!({"body": body})
            };
            if let Some(u) = unique {
                m["idempotency_key"] = json!(format!("{u}-{i}"));
            }
            m
        })
        .collect();
    json!({ "messages": msgs }).to_string()
}

/// Runs the bench.
async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if matches!(
        args.mode,
        Mode::Failover | Mode::Catchup | Mode::Scale | Mode::Restart | Mode::Delay | Mode::Groups
    ) && !args.spawn
    {
        bail!(
            "--mode {:?} needs --spawn (the bench must own the processes)",
            args.mode
        );
    }
    if args.tls && !args.spawn {
        bail!("--tls needs --spawn (give --tls-ca and https:// URLs for a running cluster)");
    }
    if args.mode == Mode::Groups {
        let http = client(args.token.as_deref(), None)?;
        let result = groups::groups(&http, &args).await?;
        println!("{}", serde_json::to_string_pretty(&result.0)?);
        if let Some(p) = &args.json {
            std::fs::write(p, serde_json::to_string_pretty(&result.0)?)?;
        }
        return Ok(());
    }
    let mut spawned = if args.spawn {
        Some(Spawned::start(
            &args.flush,
            args.server_bin.as_deref(),
            args.token.as_deref(),
            args.tls,
        )?)
    } else {
        None
    };
    let ca = match (&spawned, &args.tls_ca) {
        (Some(s), _) => s.ca_pem()?,
        (None, Some(path)) => Some(
            std::fs::read(path).with_context(|| format!("--tls-ca: reading {}", path.display()))?,
        ),
        (None, None) => None,
    };
    let http = client(args.token.as_deref(), ca.as_deref())?;
    let urls: Vec<String> = match &spawned {
        Some(s) => s.urls(),
        None => args
            .url
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_owned())
            .collect(),
    };
    let leader_url = create_topic(&http, &urls, &args).await?;
    let targets = if args.leader_only {
        vec![leader_url.clone()]
    } else {
        urls.clone()
    };
    let result = match args.mode {
        Mode::Produce | Mode::Latency => {
            let (batch, conc) = if args.mode == Mode::Latency {
                (1, 1)
            } else {
                (args.batch, args.concurrency)
            };
            produce(&http, &targets, &args, batch, conc).await?
        }
        Mode::Consume => {
            ensure_data(&http, &leader_url, &args).await?;
            consume(&http, &targets, &args).await?
        }
        Mode::Group => {
            ensure_data(&http, &leader_url, &args).await?;
            group(&http, &targets, &args).await?
        }
        Mode::Failover => {
            faults::failover(&http, spawned.as_mut().expect("spawned"), &args).await?
        }
        Mode::Catchup => faults::catchup(&http, spawned.as_mut().expect("spawned"), &args).await?,
        Mode::Scale => scale::scale(&http, spawned.as_ref().expect("spawned"), &args).await?,
        Mode::Restart => scale::restart(&http, spawned.as_mut().expect("spawned"), &args).await?,
        Mode::Delay => delay::delay(&http, spawned.as_ref().expect("spawned"), &args).await?,
        Mode::Groups => unreachable!("runs before a cluster is spawned"),
    };
    println!("{}", serde_json::to_string_pretty(&result.0)?);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&result.0)?)?;
    }
    if let Some(p) = &args.plot {
        let drawn = if args.mode == Mode::Scale {
            scale::plot(p, &result.0)
        } else {
            plot(p, &result.1)
        };
        drawn.map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    }
    drop(spawned.take());
    Ok(())
}

type Outcome = (Value, Vec<(f64, f64, u64)>);

/// Drives `conc` workers calling `op` until the duration or count is reached, with a live
/// progress line; returns the summary.
async fn drive<F, Fut>(args: &BenchArgs, label: &str, conc: usize, op: F) -> anyhow::Result<Outcome>
where
    F: Fn(u64, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<(u64, u64)>> + Send,
{
    let stats = Stats::new();
    // Consuming modes stop when the backlog is drained (see `drained`).
    let consuming = matches!(label, "group" | "consume");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let op = Arc::new(op);
    let limit = args.count;
    let mut tasks = Vec::new();
    for w in 0..conc {
        let (stats, stop, op) = (stats.clone(), stop.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                match op(seq, w).await {
                    Ok((m, b)) => stats.record(start, t0, m, b),
                    Err(_) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                seq += 1;
                if limit.is_some_and(|l| stats.msgs.load(Ordering::Relaxed) >= l) {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }));
    }
    let duration = Duration::from_secs(args.duration);
    let mut last = 0;
    while !stop.load(Ordering::Relaxed) && (limit.is_some() || start.elapsed() < duration) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let m = stats.msgs.load(Ordering::Relaxed);
        let now = start.elapsed().as_secs_f64();
        if consuming
            && drained(
                &stats.samples.lock().unwrap_or_else(|e| e.into_inner()),
                now,
            )
        {
            eprintln!("{label}: the backlog is drained; stopping");
            break;
        }
        eprintln!(
            "{label}: {:>4.0}s {:>10} msgs {:>9} msgs/s  errors {}",
            start.elapsed().as_secs_f64(),
            m,
            m - last,
            stats.errors.load(Ordering::Relaxed)
        );
        last = m;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let samples = stats
        .samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // A run that reached its count, or a consuming run that drained its backlog, is
    // measured up to its last message, not to the progress loop's next tick or over the
    // idle time after it.
    let reached = limit.is_some_and(|l| stats.msgs.load(Ordering::Relaxed) >= l);
    let secs = if reached || (consuming && drained(&samples, start.elapsed().as_secs_f64())) {
        samples
            .iter()
            .filter(|s| s.2 > 0)
            .map(|s| s.0 + s.1 / 1e3)
            .fold(0.0, f64::max)
    } else {
        start.elapsed().as_secs_f64()
    };
    let mut lats: Vec<f64> = samples.iter().filter(|s| s.2 > 0).map(|s| s.1).collect();
    lats.sort_by(f64::total_cmp);
    let msgs = stats.msgs.load(Ordering::Relaxed);
    let bytes = stats.bytes.load(Ordering::Relaxed);
    let summary = json!({
        "mode": label,
        "size": args.size, "batch": args.batch, "concurrency": conc,
        "seconds": secs,
        "messages": msgs,
        "msgs_per_s": msgs as f64 / secs,
        "mb_per_s": bytes as f64 / secs / 1e6,
        "requests": samples.len(),
        "errors": stats.errors.load(Ordering::Relaxed),
        "latency_ms": {
            "p50": percentile(&lats, 0.50), "p90": percentile(&lats, 0.90),
            "p99": percentile(&lats, 0.99), "max": lats.last().copied().unwrap_or(0.0),
        },
    });
    Ok((summary, samples))
}

/// Whether a run has stopped making progress: it moved messages, but none in the last two
/// seconds (a consumer that emptied its backlog).
fn drained(samples: &[(f64, f64, u64)], now: f64) -> bool {
    let last = samples
        .iter()
        .filter(|s| s.2 > 0)
        .map(|s| s.0 + s.1 / 1e3)
        .fold(f64::NAN, f64::max);
    last.is_finite() && now - last > 2.0
}

pub(crate) async fn produce(
    http: &reqwest::Client,
    targets: &[String],
    args: &BenchArgs,
    batch: usize,
    conc: usize,
) -> anyhow::Result<Outcome> {
    let (http, targets, topic) = (http.clone(), targets.to_vec(), args.topic.clone());
    let (size, keys, idempotent) = (args.size, args.keys, args.idempotent);
    let label = if batch == 1 && conc == 1 {
        "latency"
    } else {
        "produce"
    };
    drive(args, label, conc, move |seq, w| {
        let url = format!(
            "{}/v1/topics/{topic}/messages",
            targets[(seq as usize + w) % targets.len()]
        );
        let unique = idempotent.then(|| format!("w{w}-{seq}"));
        let body = produce_body(size, batch, keys, seq, unique.as_deref());
        let http = http.clone();
        async move {
            post_json(&http, &url, body).await?;
            Ok((batch as u64, (batch * size) as u64))
        }
    })
    .await
}

/// Makes sure the topic holds enough to consume for the run.
async fn ensure_data(http: &reqwest::Client, leader: &str, args: &BenchArgs) -> anyhow::Result<()> {
    let t: Value = http
        .get(format!("{leader}/v1/topics/{}", args.topic))
        .send()
        .await?
        .json()
        .await?;
    let have: u64 = t["queue_stats"]
        .as_array()
        .map(|qs| {
            qs.iter()
                .map(|q| q["max_offset"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    let want = args.count.unwrap_or(200_000);
    if have >= want {
        return Ok(());
    }
    eprintln!("bench: producing {} messages to consume", want - have);
    let quick = BenchArgs {
        count: Some(want - have),
        duration: 3600,
        ..args.clone()
    };
    produce(
        http,
        &[leader.to_owned()],
        &quick,
        500.min(args.batch.max(100)),
        8,
    )
    .await?;
    Ok(())
}

async fn consume(
    http: &reqwest::Client,
    targets: &[String],
    args: &BenchArgs,
) -> anyhow::Result<Outcome> {
    let queues = args.queues as usize;
    // Each queue is read from its start (`--start head`) or from its last
    // `--tail-messages / queues` messages (`--start tail`), wrapping round to there.
    let starts: Vec<u64> = match args.start {
        Start::Head => vec![0; queues],
        Start::Tail => {
            let t: Value = http
                .get(format!("{}/v1/topics/{}", targets[0], args.topic))
                .send()
                .await?
                .json()
                .await?;
            let per_queue = args.tail_messages / queues.max(1) as u64;
            (0..queues)
                .map(|q| {
                    t["queue_stats"][q]["max_offset"]
                        .as_u64()
                        .unwrap_or(0)
                        .saturating_sub(per_queue)
                })
                .collect()
        }
    };
    let offsets: Arc<Vec<AtomicU64>> =
        Arc::new(starts.iter().map(|&o| AtomicU64::new(o)).collect());
    let starts = Arc::new(starts);
    let (http, targets, topic, max) = (
        http.clone(),
        targets.to_vec(),
        args.topic.clone(),
        args.batch.max(1000),
    );
    let size = args.size as u64;
    drive(
        args,
        "consume",
        args.concurrency.min(queues),
        move |seq, w| {
            let q = w % queues;
            let (offsets, starts) = (offsets.clone(), starts.clone());
            let from = offsets[q].load(Ordering::Relaxed);
            let url = format!(
                "{}/v1/topics/{topic}/queues/{q}/messages?offset={from}&max={max}",
                targets[(seq as usize + w) % targets.len()]
            );
            let http = http.clone();
            async move {
                let v: Value = http.get(url).send().await?.json().await?;
                let n = v["messages"].as_array().map_or(0, |m| m.len()) as u64;
                if n == 0 {
                    // Wrap around: consuming is measured on data that is there.
                    offsets[q].store(starts[q], Ordering::Relaxed);
                } else {
                    offsets[q].store(v["next_offset"].as_u64().unwrap_or(from), Ordering::Relaxed);
                }
                Ok((n, n * size))
            }
        },
    )
    .await
}

/// One consumer-group receive through `base` and the ack of everything it got; returns
/// (messages, bytes).
async fn receive_and_ack(
    http: &reqwest::Client,
    base: &str,
    group: &str,
    topic: &str,
    consumer: usize,
    max: usize,
    size: u64,
) -> anyhow::Result<(u64, u64)> {
    let v: Value = http
        .post(format!("{base}/v1/groups/{group}/topics/{topic}/receive"))
        .json(&json!({"consumer": format!("c{consumer}"), "max": max, "invisible_ms": 60000}))
        .send()
        .await?
        .json()
        .await?;
    let receipts: Vec<Value> = v["messages"]
        .as_array()
        .map(|m| m.iter().map(|m| m["receipt"].clone()).collect())
        .unwrap_or_default();
    if receipts.is_empty() {
        return Ok((0, 0));
    }
    let n = receipts.len() as u64;
    let r = http
        .post(format!("{base}/v1/groups/{group}/topics/{topic}/ack"))
        .json(&json!({ "receipts": receipts }))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("ack: {}", r.status());
    }
    r.bytes().await?;
    Ok((n, n * size))
}

async fn group(
    http: &reqwest::Client,
    targets: &[String],
    args: &BenchArgs,
) -> anyhow::Result<Outcome> {
    let (http, targets, topic) = (http.clone(), targets.to_vec(), args.topic.clone());
    let max = args.batch.min(256);
    let size = args.size as u64;
    let group = format!("bench-{}", std::process::id());
    drive(args, "group", args.concurrency, move |seq, w| {
        let base = targets[(seq as usize + w) % targets.len()].clone();
        let (http, topic, group) = (http.clone(), topic.clone(), group.clone());
        async move { receive_and_ack(&http, &base, &group, &topic, w, max, size).await }
    })
    .await
}

fn plot(path: &Path, samples: &[(f64, f64, u64)]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let end = samples.iter().map(|s| s.0).fold(1.0, f64::max);
    let secs = end.ceil() as usize + 1;
    let mut per_sec = vec![0.0f64; secs];
    for s in samples {
        per_sec[(s.0 as usize).min(secs - 1)] += s.2 as f64;
    }
    let max_rate = per_sec.iter().copied().fold(1.0, f64::max) * 1.1;
    let max_lat = samples.iter().map(|s| s.1).fold(1.0, f64::max) * 1.2;
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(300);
    let mut c = ChartBuilder::on(&top)
        .caption("Throughput (msgs/s)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end, 0f64..max_rate)?;
    c.configure_mesh().x_desc("time (s)").draw()?;
    c.draw_series(LineSeries::new(
        per_sec
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64 + 0.5, *v)),
        BLUE.stroke_width(2),
    ))?;
    let mut c = ChartBuilder::on(&bottom)
        .caption("Request latency (ms, log scale)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end, (0.05f64..max_lat).log_scale())?;
    c.configure_mesh().x_desc("time (s)").draw()?;
    c.draw_series(
        samples
            .iter()
            .map(|s| Circle::new((s.0, s.1.max(0.05)), 1, RGBColor(40, 150, 60).filled())),
    )?;
    root.present()?;
    Ok(())
}

/// Creates the topic on the leader and returns the leader's URL. A fresh cluster may still
/// change leaders while the nodes start (three processes sharing two cores): a 503 is retried
/// with the leader found again, as any client of a Raft group does.
async fn create_topic(
    http: &reqwest::Client,
    urls: &[String],
    args: &BenchArgs,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, leader_url) = leader(http, urls, Duration::from_secs(30)).await?;
        let put = http
            .put(format!("{leader_url}/v1/topics/{}", args.topic))
            .json(&json!({"queues": args.queues, "fifo": args.fifo}))
            .send()
            .await?;
        if put.status().is_success() {
            return Ok(leader_url);
        }
        let unavailable = put.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE;
        let text = put.text().await?;
        if !unavailable || Instant::now() > deadline {
            bail!("creating topic {}: {text}", args.topic);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
