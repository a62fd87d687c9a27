//! The `raftmq-jepsen` command: `test` runs a chaos test against real nodes, `check`
//! checks a recorded history. Exit status: 0 valid, 1 anomalies found, 2 could not run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use raftmq_jepsen::{checker, history};

#[derive(Parser, Debug)]
#[command(name = "raftmq-jepsen", about = "Chaos tests for raftmq clusters")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a recorded history (history.jsonl) and print the results.
    Check {
        /// The history file.
        #[arg(long)]
        history: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("raftmq-jepsen: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Check { history } => {
            let events = history::read(&history)?;
            let results = checker::check(&events);
            println!("{}", serde_json::to_string_pretty(&results)?);
            Ok(results.valid)
        }
    }
}
