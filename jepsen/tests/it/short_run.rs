//! The short chaos runs of the test suite: a real 3-node cluster under faults (the log
//! workload for 45 s; a FIFO queue workload over TLS for 30 s; the delay and txn workloads
//! for 20 s each; the queue workload over two broker groups for 25 s), then the checker.
//! Longer runs: `raftmq-jepsen test` (docs/jepsen.md).

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/raftmq`, next to this test's own directory; built if missing.
fn raftmq_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RAFTMQ_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let bin = profile_dir.join("raftmq");
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "raftmq-node", "--bin", "raftmq"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building raftmq failed");
    }
    bin
}

/// Runs `raftmq-jepsen test` with `args` and the given nemeses, and checks it found nothing
/// and made progress (`counter`: the consumers' operation in the stats).
fn run_with(args: &[&str], counter: &str, nemesis: &str) {
    // One cluster at a time: two chaos runs on two cores would only slow each other down,
    // and the leftover-process check below must see this run's processes only.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = raftmq_bin();
    let store = tempfile::tempdir().unwrap();
    let seed = std::env::var("RAFTMQ_JEPSEN_SEED").unwrap_or_else(|_| "1".into());
    let out = Command::new(env!("CARGO_BIN_EXE_raftmq-jepsen"))
        .args(["test", "--bin"])
        .arg(&bin)
        .args(["--nemesis", nemesis, "--seed", &seed])
        .args(args)
        .arg("--store")
        .arg(store.path())
        .output()
        .expect("run raftmq-jepsen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // Keep the run's history, logs and report for whoever reads the failure.
        let kept = store.keep();
        panic!(
            "chaos run failed (exit {:?}):\n{stdout}\n{stderr}\nrun kept in {}",
            out.status.code(),
            kept.display()
        );
    }
    assert!(stdout.contains("VALID"), "{stdout}");
    let run = std::fs::read_dir(store.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["valid"], true);
    assert!(
        results["stats"]["send"]["ok"].as_u64().unwrap() > 100,
        "the workload made progress: {}",
        results["stats"]
    );
    assert!(
        results["stats"][counter]["ok"].as_u64().unwrap() > 100,
        "consumers made progress: {}",
        results["stats"]
    );
    assert!(run.join("report.html").is_file() && run.join("history.jsonl").is_file());
    let survivors = Command::new("pgrep")
        .args(["-f", &format!("{} serve", bin.display())])
        .output()
        .unwrap();
    assert!(
        survivors.stdout.is_empty(),
        "the harness left processes running"
    );
}

#[test]
fn short_log_run_finds_no_anomalies() {
    // The first round of faults follows this order: a snapshot install killed first, a
    // corrupted segment once segments have sealed.
    run_with(
        &["--time", "45", "--workload", "log"],
        "poll",
        "install-kill,disk,kill,partition,corrupt,member,pause,transfer,wipe",
    );
}

#[test]
fn short_queue_run_finds_no_anomalies() {
    // Leases are what a wrong clock would break: clock skew is always part of this run.
    // It also runs a secured cluster as deployed: HTTPS with peers verifying each other,
    // and the admin token (authentication is on in every run).
    run_with(
        &["--time", "30", "--workload", "queue", "--fifo", "--tls"],
        "receive",
        "clock,kill,partition,transfer",
    );
}

#[test]
fn short_delay_run_finds_no_early_reads() {
    // Scheduled sends under a skewed clock (the due time is group time), a killed leader
    // and a transfer (the new leader delivers what came due).
    run_with(
        &["--time", "20", "--workload", "delay"],
        "poll",
        "clock,kill,transfer",
    );
}

#[test]
fn short_txn_run_finds_no_anomalies() {
    // Transactions decided by clients and by check-backs while leaders die and move: a
    // decision must survive, and a check must come from whichever node leads.
    run_with(
        &["--time", "20", "--workload", "txn"],
        "poll",
        "kill,partition,transfer",
    );
}

#[test]
fn short_two_group_queue_run_finds_no_anomalies() {
    // A topic spread over two broker groups behind two NameServers: receives drawn from
    // both groups and acks routed by receipt while the groups are cut apart, a group is cut
    // off the NameServers, a NameServer dies, and both leaders die at once.
    run_with(
        &["--time", "25", "--workload", "queue", "--groups", "2"],
        "receive",
        "groups-apart,leaders-kill,ns-cut,ns-kill,kill,partition",
    );
}
