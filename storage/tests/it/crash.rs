//! Crash and corruption tests through MemFs: flipped bits in the tail and in sealed
//! segments, lost index files, missing segments. The rule throughout: every record returned
//! is exactly as appended; damage is cut off (tail) or reported (anywhere else).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use raftmq_storage::vfs::{Crash, MemFs};
use raftmq_storage::{CommitLog, CommitLogOptions, StorageError};

use crate::commitlog::{append_range, payload};

const DIR: &str = "/crash/log";

fn open(
    fs: &MemFs,
    segment_size: u64,
) -> raftmq_storage::Result<(CommitLog, raftmq_storage::RecoveryReport)> {
    CommitLog::open(
        Arc::new(fs.clone()),
        Path::new(DIR),
        CommitLogOptions { segment_size },
    )
}

fn written(segment_size: u64, records: u64) -> MemFs {
    let fs = MemFs::new();
    let mut log = open(&fs, segment_size).unwrap().0;
    append_range(&mut log, 1, records + 1, 1);
    log.sync().unwrap();
    fs
}

fn log_files(fs: &MemFs) -> Vec<PathBuf> {
    fs.paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect()
}

/// Reads every index the log claims to hold: each is either exact or a Corrupted error.
fn assert_nothing_invented(log: &CommitLog) -> Vec<u64> {
    let mut corrupted = Vec::new();
    if let (Some(first), Some(last)) = (log.first_index(), log.last_index()) {
        for i in first..=last {
            match log.read(i) {
                Ok(r) => assert_eq!(r.payload, payload(i), "record {i} changed"),
                Err(StorageError::Corrupted { .. }) => corrupted.push(i),
                Err(e) => panic!("record {i}: unexpected error {e}"),
            }
        }
    }
    corrupted
}

#[test]
fn a_flipped_bit_in_the_tail_is_cut_when_torn_and_refused_when_records_follow() {
    let seg = 1 << 20;
    let fs = written(seg, 200);
    let file = log_files(&fs).pop().unwrap();
    let len = fs.file_len(&file).unwrap();
    let mut refused = 0;
    for k in 0..64u64 {
        // Spread flips over the records (past the 16-byte segment header).
        let byte = 16 + (k * 7919) % (len - 16);
        let damaged = fs.crash(Crash::DropUnsynced);
        damaged.flip_bit(&file, byte, (k % 8) as u8).unwrap();
        match open(&damaged, seg) {
            Ok((log, report)) => {
                let cut = report
                    .truncated
                    .expect("the damage must be found and reported");
                assert!(
                    cut.position <= byte,
                    "cut at {} after the flip at {byte}",
                    cut.position
                );
                assert_eq!(cut.segment, file);
                let last = log.last_index().unwrap_or(0);
                assert!(last < 200, "the damaged record cannot survive");
                assert!(assert_nothing_invented(&log).is_empty());
                assert_eq!(damaged.file_len(&file).unwrap(), cut.position);
            }
            Err(StorageError::Corrupted { path, position, .. }) => {
                assert_eq!(path, file);
                assert!(
                    position <= byte,
                    "reported {position} after the flip at {byte}"
                );
                assert_eq!(damaged.file_len(&file).unwrap(), len, "nothing cut");
                refused += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(refused > 0, "flips before the last record are corruption");
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_is_an_error_never_wrong_data() {
    let seg = 1024;
    let fs = written(seg, 300);
    let files = log_files(&fs);
    assert!(files.len() > 4);
    let middle = &files[files.len() / 2];
    let len = fs.file_len(middle).unwrap();
    for k in 0..48u64 {
        let byte = (k * 104_729) % len;
        let damaged = fs.crash(Crash::DropUnsynced);
        damaged.flip_bit(middle, byte, (k % 8) as u8).unwrap();
        match open(&damaged, seg) {
            Err(StorageError::Corrupted { path, .. }) => assert_eq!(&path, middle),
            Err(e) => panic!("unexpected error {e}"),
            Ok((log, report)) => {
                assert!(report.truncated.is_none(), "sealed segments are never cut");
                assert_eq!(
                    log.last_index(),
                    Some(300),
                    "nothing after the damage is lost"
                );
                let bad = assert_nothing_invented(&log);
                assert!(!bad.is_empty(), "the flip at byte {byte} went unnoticed");
                let err = log.read_range(bad[0], bad[0] + 1, usize::MAX).unwrap_err();
                assert!(matches!(err, StorageError::Corrupted { .. }));
            }
        }
    }
}

#[test]
fn a_lost_index_file_is_rebuilt_and_a_damaged_one_never_misleads() {
    let seg = 1024;
    let fs = written(seg, 300);
    let idx: Vec<PathBuf> = fs
        .paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        .collect();
    assert!(idx.len() > 3);
    let lost = fs.crash(Crash::DropUnsynced);
    use raftmq_storage::vfs::Vfs;
    lost.remove_file(&idx[1]).unwrap();
    let (log, report) = open(&lost, seg).unwrap();
    assert_eq!(report.rebuilt_indexes.len(), 1);
    assert!(assert_nothing_invented(&log).is_empty());
    drop(log);
    let (_, again) = open(&lost, seg).unwrap();
    assert!(
        again.rebuilt_indexes.is_empty(),
        "the rebuilt index was persisted"
    );

    for k in 0..16u64 {
        let damaged = fs.crash(Crash::DropUnsynced);
        let len = damaged.file_len(&idx[2]).unwrap();
        damaged
            .flip_bit(&idx[2], (k * 13) % len, (k % 8) as u8)
            .unwrap();
        let (log, _) = open(&damaged, seg).unwrap();
        assert_nothing_invented(&log);
    }
}

#[test]
fn a_missing_middle_segment_is_reported_not_papered_over() {
    let seg = 1024;
    let fs = written(seg, 300);
    let files = log_files(&fs);
    let gone = fs.crash(Crash::DropUnsynced);
    use raftmq_storage::vfs::Vfs;
    gone.remove_file(&files[2]).unwrap();
    match open(&gone, seg) {
        Err(StorageError::Corrupted { path, .. }) => assert_eq!(path, files[1]),
        other => panic!("expected Corrupted for the gap, got {other:?}"),
    }
}

#[test]
fn unsynced_appends_vanish_or_survive_whole_never_half() {
    let seg = 2048;
    for seed in 0..64 {
        let fs = written(seg, 50);
        let mut log = open(&fs, seg).unwrap().0;
        append_range(&mut log, 51, 90, 1);
        let after = fs.crash(Crash::Torn { seed });
        drop(log);
        let (log, _) = open(&after, seg).unwrap();
        let last = log.last_index().unwrap();
        assert!((50..90).contains(&last), "seed {seed}: last {last}");
        assert!(assert_nothing_invented(&log).is_empty());
    }
}

#[test]
fn a_torn_tail_is_cut_but_corruption_followed_by_valid_records_refuses_to_open() {
    let seg = 1 << 20;
    let fs = written(seg, 200);
    let file = log_files(&fs).pop().unwrap();
    let len = fs.file_len(&file).unwrap();
    // Where record `i` starts: the 16-byte segment header, then 24-byte record headers.
    let start_of = |i: u64| 16 + (1..i).map(|j| 24 + payload(j).len() as u64).sum::<u64>();
    let (last_start, mid_start) = (start_of(200), start_of(100));
    assert_eq!(last_start + 24 + payload(200).len() as u64, len);
    // The last record damaged: nothing valid follows, so it is a torn tail and is cut.
    let damaged = fs.crash(Crash::DropUnsynced);
    damaged.flip_bit(&file, last_start + 5, 3).unwrap();
    let (log, report) = open(&damaged, seg).unwrap();
    assert_eq!(report.truncated.unwrap().position, last_start);
    assert_eq!(log.last_index(), Some(199));
    // A record in the middle damaged: 100 valid records follow it, which a torn write
    // cannot leave behind. Opening refuses and names the file and byte; nothing is cut.
    let damaged = fs.crash(Crash::DropUnsynced);
    damaged.flip_bit(&file, mid_start + 5, 3).unwrap();
    match open(&damaged, seg) {
        Err(StorageError::Corrupted {
            path,
            position,
            reason,
        }) => {
            assert_eq!(path, file);
            assert_eq!(position, mid_start);
            assert!(reason.contains("log index 101"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(damaged.file_len(&file).unwrap(), len, "nothing was cut");
}
