//! The `raftmq` binary: `raftmq dev` (three local nodes) and `raftmq serve` (one node).
//!
//! Must never: hold business logic; it wires configuration, tracing and the runtime to
//! the library crates.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "raftmq", version, about = "A Raft-replicated message queue")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a 3-node cluster on 127.0.0.1:8081-8083.
    Dev,
    /// Run one node of a broker group.
    Serve,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Dev | Command::Serve => {
            eprintln!("raftmq: not yet implemented (the replicated broker group is issue #3)");
            std::process::exit(2);
        }
    }
}
