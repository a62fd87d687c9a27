//! `raftmq-sim`: runs seeded simulation schedules of a broker group and prints the seeds
//! that fail, one line each; `replay` runs one seed again with its trace.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use raftmq_sim::{Options, Verdict, retry_seed, run_many, run_seed};

#[derive(Parser)]
#[command(
    name = "raftmq-sim",
    about = "Simulation testing: a broker group in one process under seeded fault schedules"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone, Copy)]
struct Shape {
    /// Nodes in the group (3 or 5).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Client processes.
    #[arg(long, default_value_t = 4)]
    clients: u64,
    /// How long faults and clients run per schedule, ms.
    #[arg(long, default_value_t = 1500)]
    duration_ms: u64,
    /// Extra time each CommitLog sync takes, µs.
    #[arg(long, default_value_t = 500)]
    sync_delay_us: u64,
    /// Also produce to and consume from a FIFO topic (keys per client, FIFO receives).
    #[arg(long)]
    fifo: bool,
    /// Let schedules wipe a node's data directory (the node refuses to start, and is
    /// replaced as an operator would once the faults are over).
    #[arg(long)]
    wipes: bool,
    /// Let schedules cut power (one node, or all at once): the CommitLog loses what it had
    /// not synced.
    #[arg(long)]
    power_loss: bool,
    /// Only the first version's steps (no clock skews, time warps, crashes inside snapshot
    /// installs): a seed draws the schedule it drew before they existed.
    #[arg(long)]
    classic: bool,
    /// Let schedules take a node out of the group and add it back with its data deleted
    /// (membership changes while the faults go on).
    #[arg(long)]
    membership: bool,
    /// Draw each seed's Raft timing (heartbeat 20 to 60 ms, election timeout 3 to 10
    /// heartbeats) instead of the fixed 30/150 ms.
    #[arg(long)]
    timing: bool,
    /// No timer steps (stalls and drifts of nodes' Raft clocks): a seed plays the schedule
    /// it played before they existed.
    #[arg(long)]
    no_timers: bool,
}

impl From<Shape> for Options {
    fn from(s: Shape) -> Options {
        Options {
            nodes: s.nodes,
            clients: s.clients,
            duration_ms: s.duration_ms,
            sync_delay_us: s.sync_delay_us,
            fifo: s.fifo,
            wipes: s.wipes,
            power_loss: s.power_loss,
            classic: s.classic,
            membership: s.membership,
            timing: s.timing,
            timers: !s.no_timers && !s.classic,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs many seeds; prints each failing seed with its problems; exits 1 if any failed.
    Run {
        /// First seed.
        #[arg(long, default_value_t = 1)]
        start: u64,
        /// How many seeds (default: as many as fit in --budget).
        #[arg(long)]
        seeds: Option<u64>,
        /// Time budget, seconds (default 60 when --seeds is not given).
        #[arg(long)]
        budget: Option<u64>,
        /// Schedules run at once (each is a whole group; they wait on timers more than
        /// they compute).
        #[arg(long, default_value_t = 4)]
        jobs: usize,
        /// Write each failing seed's history here (`seed-N.jsonl`, raftmq-jepsen's format:
        /// `raftmq-jepsen check` reads it).
        #[arg(long)]
        histories: Option<std::path::PathBuf>,
        #[command(flatten)]
        shape: Shape,
    },
    /// Runs one seed again and prints its fault steps and history.
    Replay {
        /// The seed.
        seed: u64,
        /// Print every operation of the history too.
        #[arg(long)]
        trace: bool,
        /// Run it up to this many times, stopping at the first failure (the steps are the
        /// seed's; the threads' interleavings are not, see docs/simulation.md).
        #[arg(long, default_value_t = 1)]
        tries: u64,
        /// With --tries: runs at once (their load shifts the timing).
        #[arg(long, default_value_t = 4)]
        jobs: usize,
        #[command(flatten)]
        shape: Shape,
    },
}

fn line(v: &Verdict) -> String {
    format!(
        "seed {}: {} in {:.1} s ({})",
        v.seed,
        if v.valid {
            "ok".to_owned()
        } else {
            format!("FAILED: {}", v.problems.join(" | "))
        },
        v.elapsed.as_secs_f64(),
        v.stats
    )
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The nodes' own logs, when asked for (`RAFTMQ_LOG=info,openraft=warn`): silent by
    // default, a batch of schedules would print thousands of elections.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("RAFTMQ_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    match cli.cmd {
        Cmd::Run {
            start,
            seeds,
            budget,
            jobs,
            histories,
            shape,
        } => {
            if let Some(dir) = &histories {
                std::fs::create_dir_all(dir)?;
            }
            let budget = budget
                .or(if seeds.is_none() { Some(60) } else { None })
                .map(Duration::from_secs);
            let failed = Mutex::new(Vec::new());
            let began = Instant::now();
            let n = run_many(
                start,
                seeds,
                budget,
                jobs,
                shape.into(),
                |v, seed| match v {
                    Ok(v) if v.valid => {}
                    Ok(v) => {
                        println!("{}", line(&v));
                        if let Some(dir) = &histories {
                            let text: String = v
                                .history
                                .iter()
                                .filter_map(|e| serde_json::to_string(e).ok())
                                .map(|l| l + "\n")
                                .collect();
                            let _ = std::fs::write(dir.join(format!("seed-{seed}.jsonl")), text);
                        }
                        failed.lock().unwrap_or_else(|e| e.into_inner()).push(seed);
                    }
                    Err(e) => {
                        println!("seed {seed}: FAILED to run: {e:#}");
                        failed.lock().unwrap_or_else(|e| e.into_inner()).push(seed);
                    }
                },
            );
            let secs = began.elapsed().as_secs_f64();
            let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
            println!(
                "{n} schedules in {secs:.0} s ({:.0} per minute, {jobs} at once); {} failed{}",
                n as f64 * 60.0 / secs.max(0.001),
                failed.len(),
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(": seeds {failed:?} (replay one with `raftmq-sim replay SEED --trace`)")
                }
            );
            if !failed.is_empty() {
                std::process::exit(1);
            }
        }
        Cmd::Replay {
            seed,
            trace,
            tries,
            jobs,
            shape,
        } => {
            let v = if tries > 1 {
                let (ran, failed) = retry_seed(seed, shape.into(), tries, jobs);
                match failed {
                    Some(v) => {
                        println!(
                            "seed {seed}: failed, within its first {ran} runs (of up to {tries})"
                        );
                        v?
                    }
                    None => {
                        println!("seed {seed}: ok in {ran} runs of {ran}");
                        return Ok(());
                    }
                }
            } else {
                run_seed(seed, shape.into())?
            };
            for (at, step) in &v.steps {
                println!("{at:>6} ms  {step:?}");
            }
            if trace {
                for e in &v.history {
                    println!("{}", serde_json::to_string(e)?);
                }
            }
            println!("{}", line(&v));
            if !v.valid {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
