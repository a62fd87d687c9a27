//! The suite's bounded batch: 200 seeded schedules of a 3-node group, every one valid.
//! (`raftmq-sim run` runs as many as a time budget allows; `replay` one seed with its trace.)

use std::sync::Mutex;
use std::time::Instant;

use raftmq_sim::{Options, run_many};

#[test]
fn two_hundred_seeded_fault_schedules_find_no_anomaly() {
    let failed = Mutex::new(Vec::new());
    let began = Instant::now();
    // Six at once: a schedule waits on timers more than it computes (on 2 cores, 200 in
    // about 112 s at six, 150 s at four).
    let n = run_many(1, Some(200), None, 6, Options::default(), |v, seed| {
        let line = match v {
            Ok(v) if v.valid => return,
            Ok(v) => format!("seed {seed}: {}", v.problems.join(" | ")),
            Err(e) => format!("seed {seed}: did not run: {e:#}"),
        };
        eprintln!("{line}");
        failed.lock().unwrap().push(line);
    });
    let secs = began.elapsed().as_secs_f64();
    eprintln!(
        "{n} schedules in {secs:.0} s ({:.0} per minute)",
        n as f64 * 60.0 / secs
    );
    assert_eq!(n, 200);
    let failed = failed.into_inner().unwrap();
    assert!(
        failed.is_empty(),
        "failing seeds (replay with `raftmq-sim replay SEED --trace`):\n{}",
        failed.join("\n")
    );
}

/// With every opt-in fault: power loss (torn and flipped bytes on some seeds), FIFO, wipes
/// and membership changes. Out of the suite for its time (each kind alone passed 100 of
/// 100 seeds); run with `--ignored`. With `--timing` too (and the timer steps), on
/// 2026-12-02 seeds 1 to 600 passed, 600 of 600 (docs/simulation.md).
#[test]
#[ignore = "about 3.5 minutes more: run with --ignored"]
fn fifo_topics_wiped_nodes_and_power_loss_find_no_anomaly() {
    let opts = Options {
        fifo: true,
        wipes: true,
        power_loss: true,
        membership: true,
        ..Options::default()
    };
    let failed = Mutex::new(Vec::new());
    run_many(1, Some(200), None, 4, opts, |v, seed| match v {
        Ok(v) if v.valid => {}
        Ok(v) => failed
            .lock()
            .unwrap()
            .push(format!("seed {seed}: {}", v.problems.join(" | "))),
        Err(e) => failed.lock().unwrap().push(format!("seed {seed}: {e:#}")),
    });
    let failed = failed.into_inner().unwrap();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
