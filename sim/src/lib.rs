//! raftmq-sim: simulation testing of a broker group. A whole group runs in one process
//! ([`cluster`]), its nodes talking through an in-memory network that loses, delays,
//! duplicates and cuts ([`net`]); clients produce, read and consume through a consumer
//! group ([`client`]) while a seeded schedule of faults plays ([`run`]); each run ends with
//! raftmq-jepsen's checker on the history and the replica invariants only a simulation can
//! check. Many seeds a minute, each replayable by its number.
//!
//! Must never: bind a socket or start a process (everything is in memory and in temporary
//! directories), or report a seed as passing when anything was found.

pub mod client;
pub mod clock;
pub mod cluster;
pub mod invariants;
pub mod lossy;
pub mod net;
pub mod run;
pub mod schedule;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use run::{Options, Verdict};

/// Runs one seed on a runtime of its own (the controller; each node gets another).
pub fn run_seed(seed: u64, opts: Options) -> anyhow::Result<Verdict> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // A schedule that wedges (a node that never catches up waits out its deadlines, so this
    // is a backstop) fails its seed instead of stalling the batch.
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(180), run::run(seed, opts))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the schedule did not finish in 180 s")))
    })
}

/// Runs seeds `start`, `start + 1`, … on `jobs` threads until `count` seeds ran or `budget`
/// is spent (a seed that started finishes); calls `report` with each verdict as it comes.
pub fn run_many(
    start: u64,
    count: Option<u64>,
    budget: Option<Duration>,
    jobs: usize,
    opts: Options,
    report: impl Fn(anyhow::Result<Verdict>, u64) + Send + Sync,
) -> u64 {
    let next = AtomicU64::new(start);
    let done = AtomicU64::new(0);
    let began = Instant::now();
    on_threads(
        jobs,
        || {
            if budget.is_some_and(|b| began.elapsed() >= b) {
                return None;
            }
            let seed = next.fetch_add(1, Ordering::Relaxed);
            count.is_none_or(|c| seed < start + c).then_some(seed)
        },
        |seed| {
            let v = run_seed(seed, opts);
            done.fetch_add(1, Ordering::Relaxed);
            report(v, seed);
        },
    );
    done.load(Ordering::Relaxed)
}

/// Runs `seed` up to `tries` times, `jobs` at once, and stops at its first failure: the
/// schedule is the seed's, but the interleavings of the nodes' threads and timers are not
/// (docs/simulation.md), so a failure that depends on them comes back only now and then,
/// and the load of the other runs shifts them. Returns the runs made and the first failing
/// verdict (an error: the seed did not run).
pub fn retry_seed(
    seed: u64,
    opts: Options,
    tries: u64,
    jobs: usize,
) -> (u64, Option<anyhow::Result<Verdict>>) {
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let failed: Mutex<Option<anyhow::Result<Verdict>>> = Mutex::new(None);
    let first = || failed.lock().unwrap_or_else(|e| e.into_inner());
    on_threads(
        jobs,
        || (first().is_none() && next.fetch_add(1, Ordering::Relaxed) < tries).then_some(seed),
        |seed| {
            let v = run_seed(seed, opts);
            done.fetch_add(1, Ordering::Relaxed);
            if !v.as_ref().is_ok_and(|v| v.valid) {
                first().get_or_insert(v);
            }
        },
    );
    (
        done.load(Ordering::Relaxed),
        failed.into_inner().unwrap_or_else(|e| e.into_inner()),
    )
}

/// Calls `work` with each seed `next` hands out, on `jobs` threads, until it hands out none.
fn on_threads(jobs: usize, next: impl Fn() -> Option<u64> + Sync, work: impl Fn(u64) + Sync) {
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                while let Some(seed) = next() {
                    work(seed);
                }
            });
        }
    });
}
