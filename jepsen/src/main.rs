//! raftmq-jepsen: the chaos harness (cluster control, nemeses, workloads, history, checker,
//! report). It is being built under issue #4; until then it only says so.
//!
//! Must never: depend on a raftmq workspace crate, or send traffic to any address outside
//! 127.0.0.0/8.

fn main() -> anyhow::Result<()> {
    eprintln!("raftmq-jepsen: not yet implemented (see issue #4)");
    std::process::exit(2);
}
