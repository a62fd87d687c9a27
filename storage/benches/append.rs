//! CommitLog append benchmark: records/s and MB/s for 100 B and 1 KiB records with group
//! commits of 1, 16 and 256 records (one `fdatasync` per group), next to the raw disk's
//! fdatasync'd sequential write speed for the same bytes per fsync, measured the same way.
//!
//! Run: `cargo bench -p raftmq-storage --bench append` (set `RAFTMQ_BENCH_DIR` to choose
//! the disk; `RAFTMQ_BENCH_SECS` for the time per case, default 2).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftmq_storage::vfs::OsFs;
use raftmq_storage::{CommitLog, CommitLogOptions, RecordRef};

/// Framing bytes per record (see docs/commitlog-format.md).
const RECORD_OVERHEAD: usize = 24;

struct Figures {
    records_per_s: f64,
    mb_per_s: f64,
}

fn bench_dir() -> PathBuf {
    let dir = std::env::var_os("RAFTMQ_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tmp"));
    std::fs::create_dir_all(&dir).expect("create bench dir");
    dir
}

fn case_time() -> Duration {
    let secs = std::env::var("RAFTMQ_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

/// Raw disk: append `chunk` bytes and `fdatasync`, repeatedly.
fn raw(dir: &Path, chunk: usize, time: Duration) -> f64 {
    let path = dir.join("raw.dat");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("open raw file");
    let data = vec![0x5Au8; chunk];
    let start = Instant::now();
    let mut pos = 0u64;
    while start.elapsed() < time {
        f.write_all_at(&data, pos).expect("write");
        f.sync_data().expect("fdatasync");
        pos += chunk as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path).ok();
    pos as f64 / secs / 1e6
}

/// The CommitLog: append `group` records of `size` bytes, then `sync`, repeatedly.
fn commitlog(dir: &Path, size: usize, group: usize, time: Duration) -> Figures {
    let log_dir = dir.join("log");
    std::fs::remove_dir_all(&log_dir).ok();
    let (mut log, _) =
        CommitLog::open(Arc::new(OsFs), &log_dir, CommitLogOptions::default()).expect("open log");
    let payload = vec![0xA5u8; size];
    let start = Instant::now();
    let mut index = 1u64;
    while start.elapsed() < time {
        let first = index;
        log.append((first..first + group as u64).map(|i| RecordRef {
            index: i,
            term: 1,
            payload: &payload,
        }))
        .expect("append");
        log.sync().expect("sync");
        index += group as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let records = (index - 1) as f64;
    drop(log);
    std::fs::remove_dir_all(&log_dir).ok();
    Figures {
        records_per_s: records / secs,
        mb_per_s: records * (size + RECORD_OVERHEAD) as f64 / secs / 1e6,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported, so ignore args.
    let dir = bench_dir();
    let time = case_time();
    println!(
        "CommitLog append, one fdatasync per group, {:?} per case, dir {}",
        time,
        dir.display()
    );
    println!(
        "{:>7} {:>6} {:>14} {:>12} {:>16} {:>9}",
        "record", "group", "records/s", "log MB/s", "raw disk MB/s", "log/raw"
    );
    let mut json = Vec::new();
    for size in [100usize, 1024] {
        for group in [1usize, 16, 256] {
            let chunk = group * (size + RECORD_OVERHEAD);
            let disk = raw(&dir, chunk, time);
            let log = commitlog(&dir, size, group, time);
            let ratio = log.mb_per_s / disk;
            println!(
                "{:>6}B {:>6} {:>14.0} {:>12.1} {:>16.1} {:>8.0}%",
                size,
                group,
                log.records_per_s,
                log.mb_per_s,
                disk,
                ratio * 100.0
            );
            json.push(format!(
                "{{\"record_bytes\":{size},\"group\":{group},\"records_per_s\":{:.0},\"log_mb_per_s\":{:.2},\"raw_mb_per_s\":{:.2},\"ratio\":{:.3}}}",
                log.records_per_s, log.mb_per_s, disk, ratio
            ));
        }
    }
    let big = raw(&dir, 1 << 20, time);
    println!("raw disk, 1 MiB per fdatasync: {big:.1} MB/s");
    let out = dir.join("append.json");
    let mut f = std::fs::File::create(&out).expect("write results");
    writeln!(
        f,
        "{{\"cases\":[{}],\"raw_1mib_mb_per_s\":{big:.2}}}",
        json.join(",")
    )
    .expect("write results");
    println!("results: {}", out.display());
}
