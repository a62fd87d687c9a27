//! The `raftmq-jepsen` command: `test` runs a chaos test against real nodes, `check`
//! checks a recorded history. Exit status: 0 valid, 1 anomalies found, 2 could not run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use raftmq_jepsen::nemesis::{ACROSS_GROUPS, Fault};
use raftmq_jepsen::runner::{self, TestOpts};
use raftmq_jepsen::workload::{Kind, LogWorkload};
use raftmq_jepsen::{checker, history};

#[derive(Parser, Debug)]
#[command(name = "raftmq-jepsen", about = "Chaos tests for raftmq clusters")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a cluster, run the log workload under faults, check and report.
    Test {
        /// The raftmq binary.
        #[arg(long)]
        bin: PathBuf,
        /// Seconds of workload (faults run during it; healing and the drain come after).
        #[arg(long, default_value_t = 60)]
        time: u64,
        /// Faults: kill, pause, partition, member, transfer, wipe, all, none.
        #[arg(long, default_value = "kill,pause,partition")]
        nemesis: String,
        /// Nodes in each broker group.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Broker groups: more than one runs two NameServers, spreads the test topic over
        /// every group, and `all` adds the faults across groups (groups-apart, ns-cut,
        /// ns-kill, leaders-kill).
        #[arg(long, default_value_t = 1)]
        groups: u64,
        /// Seed of every random choice (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Where runs are stored.
        #[arg(long, default_value = "store")]
        store: PathBuf,
        /// Run name (default: the workload's).
        #[arg(long)]
        name: Option<String>,
        /// Producer processes.
        #[arg(long, default_value_t = 4)]
        producers: u64,
        /// Consumer processes.
        #[arg(long, default_value_t = 2)]
        consumers: u64,
        /// Queues of the test topic.
        #[arg(long, default_value_t = 4)]
        queues: u64,
        /// Pause between one process's operations, ms.
        #[arg(long, default_value_t = 10)]
        think_ms: u64,
        /// `log` (read by offset, commit offsets), `queue` (consumer group receive/ack) or
        /// `delay` (the log workload with scheduled sends, checked for early reads) or `txn`
        /// (transactions committed, rolled back or checked back).
        #[arg(long, default_value = "log")]
        workload: String,
        /// Make the test topic FIFO (checked for fifo-violation in the queue workload).
        #[arg(long)]
        fifo: bool,
        /// Send every value with itself as its `idempotency_key` and retry an `info` send
        /// with the same key: a value stored twice is then a counted `duplicate`.
        #[arg(long)]
        idempotent: bool,
        /// The admin token nodes require and clients send (default: the harness's own;
        /// authentication is always on).
        #[arg(long, env = "RAFTMQ_TOKEN")]
        token: Option<String>,
        /// Nodes serve HTTPS with certificates from a CA made for the run (`raftmq certs`);
        /// peers verify each other.
        #[arg(long)]
        tls: bool,
    },
    /// Check a recorded history (history.jsonl) and print the results.
    Check {
        /// The history file.
        #[arg(long)]
        history: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftmq-jepsen: {e}");
            return ExitCode::from(2);
        }
    };
    // Dropping the runtime drops every task, and with them the cluster, which kills the
    // processes: on success, error, panic and Ctrl-C alike.
    let result = rt.block_on(async {
        tokio::select! {
            r = run(cli) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    drop(rt);
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("raftmq-jepsen: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Check { history } => {
            let events = history::read(&history)?;
            let results = checker::check(&events);
            println!("{}", serde_json::to_string_pretty(&results)?);
            Ok(results.valid)
        }
        Command::Test {
            bin,
            time,
            nemesis,
            nodes,
            groups,
            seed,
            store,
            name,
            producers,
            consumers,
            queues,
            think_ms,
            workload,
            fifo,
            idempotent,
            token,
            tls,
        } => {
            let kind = match workload.as_str() {
                "log" => Kind::Log,
                "queue" => Kind::Queue,
                "delay" => Kind::Delay,
                "txn" => Kind::Txn,
                other => anyhow::bail!("unknown workload `{other}` (log, queue, delay, txn)"),
            };
            anyhow::ensure!(bin.is_file(), "--bin {} is not a file", bin.display());
            anyhow::ensure!((1..=9).contains(&nodes), "--nodes must be 1 to 9");
            anyhow::ensure!((1..=3).contains(&groups), "--groups must be 1 to 3");
            let mut faults = Fault::parse_list(&nemesis)?;
            let across = faults.iter().any(|f| ACROSS_GROUPS.contains(f));
            anyhow::ensure!(
                groups > 1 || !across,
                "groups-apart, ns-cut, ns-kill and leaders-kill need --groups 2 or more"
            );
            if groups > 1 && nemesis.split(',').any(|p| p.trim() == "all") {
                faults.extend(ACROSS_GROUPS);
            }
            anyhow::ensure!(
                queues >= 1 && consumers >= 1 && producers >= 1,
                "--queues, --consumers and --producers must be at least 1"
            );
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
            let opts = TestOpts {
                bin,
                time: Duration::from_secs(time),
                faults,
                nodes,
                groups,
                seed,
                store,
                name: name.unwrap_or_else(|| workload.clone()),
                workload: LogWorkload {
                    kind,
                    fifo,
                    idempotent,
                    topic: match kind {
                        Kind::Queue => "jepsen-q".into(),
                        Kind::Delay => "jepsen-d".into(),
                        Kind::Txn => "jepsen-t".into(),
                        Kind::Log => "jepsen".into(),
                    },
                    queues,
                    producers,
                    consumers,
                    keys: 8,
                    think: Duration::from_millis(think_ms),
                    check_url: String::new(),
                    txns: Default::default(),
                },
                token,
                tls,
            };
            let out = runner::run(opts).await?;
            let counts: Vec<String> = out
                .results
                .anomalies
                .iter()
                .filter(|(_, a)| a.count > 0)
                .map(|(k, a)| format!("{k}: {}", a.count))
                .collect();
            println!(
                "{} (seed {seed}) {}; report: {}",
                if out.results.valid {
                    "VALID"
                } else {
                    "INVALID"
                },
                if counts.is_empty() {
                    "no anomalies".to_owned()
                } else {
                    counts.join(", ")
                },
                out.dir.join("report.html").display()
            );
            println!("stats: {}", out.results.stats);
            Ok(out.results.valid)
        }
    }
}
