//! CommitLog behaviour on the real file system and on MemFs: append, read, roll, truncate,
//! purge, reopen.

use std::path::Path;
use std::sync::Arc;

use raftmq_storage::vfs::{MemFs, OsFs, Vfs};
use raftmq_storage::{CommitLog, CommitLogOptions, LogPos, RecordRef, StorageError};

pub(crate) fn payload(index: u64) -> Vec<u8> {
    // Varying sizes, so records straddle segment boundaries at different places.
    let len = (index * 37 % 200) as usize;
    (0..len)
        .map(|i| (index as u8).wrapping_add(i as u8))
        .collect()
}

pub(crate) fn append_range(log: &mut CommitLog, from: u64, to: u64, term: u64) {
    let payloads: Vec<Vec<u8>> = (from..to).map(payload).collect();
    log.append((from..to).zip(&payloads).map(|(index, p)| RecordRef {
        index,
        term,
        payload: p,
    }))
    .unwrap();
}

fn small() -> CommitLogOptions {
    CommitLogOptions { segment_size: 1024 }
}

fn open(fs: &Arc<dyn Vfs>, dir: &Path) -> CommitLog {
    CommitLog::open(fs.clone(), dir, small()).unwrap().0
}

#[test]
fn append_read_roll_and_reopen_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let fs: Arc<dyn Vfs> = Arc::new(OsFs);
    let mut log = open(&fs, tmp.path());
    assert_eq!(log.last_index(), None);
    append_range(&mut log, 1, 200, 1);
    append_range(&mut log, 200, 300, 2);
    log.sync().unwrap();
    assert!(log.segment_count() > 5, "small segments roll");
    assert_eq!(log.first_index(), Some(1));
    assert_eq!(
        log.last_record(),
        Some(LogPos {
            index: 299,
            term: 2
        })
    );
    for i in [1, 2, 150, 199, 200, 299] {
        let r = log.read(i).unwrap();
        assert_eq!(r.payload, payload(i), "record {i}");
    }
    let range = log.read_range(10, 290, usize::MAX).unwrap();
    assert_eq!(range.len(), 280);
    for r in &range {
        assert_eq!(r.payload, payload(r.index));
    }
    drop(log);

    let (log, report) = CommitLog::open(fs.clone(), tmp.path(), small()).unwrap();
    assert_eq!(
        report,
        Default::default(),
        "a clean shutdown needs no repair"
    );
    assert_eq!(
        log.last_record(),
        Some(LogPos {
            index: 299,
            term: 2
        })
    );
    assert_eq!(log.read(123).unwrap().payload, payload(123));
    assert_eq!(log.term_of(200).unwrap(), 2);
}

#[test]
fn read_range_respects_max_bytes_but_returns_one() {
    let fs: Arc<dyn Vfs> = Arc::new(MemFs::new());
    let mut log = open(&fs, Path::new("/log"));
    append_range(&mut log, 5, 50, 1);
    let one = log.read_range(5, 50, 0).unwrap();
    assert_eq!(one.len(), 1);
    let some = log.read_range(5, 50, 500).unwrap();
    let total: usize = some.iter().map(|r| r.payload.len()).sum();
    assert!(total >= 500 && some.len() < 45);
    assert!(log.read_range(5, 5, 100).unwrap().is_empty());
    assert_eq!(log.read_range(40, 1000, usize::MAX).unwrap().len(), 10);
}

#[test]
fn out_of_order_append_and_out_of_range_read_are_errors() {
    let fs: Arc<dyn Vfs> = Arc::new(MemFs::new());
    let mut log = open(&fs, Path::new("/log"));
    append_range(&mut log, 1, 10, 1);
    let err = log
        .append([RecordRef {
            index: 12,
            term: 1,
            payload: b"x",
        }])
        .unwrap_err();
    assert!(matches!(
        err,
        StorageError::NonContiguous {
            expected: 10,
            got: 12
        }
    ));
    assert!(matches!(
        log.read(10),
        Err(StorageError::OutOfRange { index: 10, .. })
    ));
    assert!(matches!(log.read(0), Err(StorageError::OutOfRange { .. })));
    // The failed append wrote nothing and did not poison the log.
    append_range(&mut log, 10, 11, 1);
    assert_eq!(log.last_index(), Some(10));
}

#[test]
fn truncate_suffix_across_segments_then_append_new_term() {
    let fs: Arc<dyn Vfs> = Arc::new(MemFs::new());
    let dir = Path::new("/log");
    let mut log = open(&fs, dir);
    append_range(&mut log, 1, 100, 1);
    let segments_before = log.segment_count();
    log.truncate(40).unwrap();
    assert!(log.segment_count() < segments_before);
    assert_eq!(log.last_record(), Some(LogPos { index: 39, term: 1 }));
    assert!(log.read(40).is_err());
    append_range(&mut log, 40, 60, 2);
    log.sync().unwrap();
    drop(log);
    let log = open(&fs, dir);
    assert_eq!(log.last_record(), Some(LogPos { index: 59, term: 2 }));
    assert_eq!(log.term_of(39).unwrap(), 1);
    assert_eq!(log.term_of(40).unwrap(), 2);
    assert_eq!(log.read(45).unwrap().payload, payload(45));
}

#[test]
fn purge_removes_whole_segments_only_and_survives_reopen() {
    let fs: Arc<dyn Vfs> = Arc::new(MemFs::new());
    let dir = Path::new("/log");
    let mut log = open(&fs, dir);
    append_range(&mut log, 1, 100, 1);
    let before = log.segment_count();
    assert!(!log.purge_frees(1), "index 1 is inside the first segment");
    assert!(log.purge_frees(50));
    log.purge(LogPos { index: 50, term: 1 }).unwrap();
    assert!(log.segment_count() < before);
    assert_eq!(log.first_index(), Some(51));
    assert!(log.read(50).is_err());
    assert_eq!(log.read(51).unwrap().payload, payload(51));
    assert!(
        log.truncate(40).is_err(),
        "purged entries cannot be truncated"
    );
    drop(log);
    let mut log = open(&fs, dir);
    assert_eq!(log.first_index(), Some(51));
    assert_eq!(log.last_purged(), Some(LogPos { index: 50, term: 1 }));
    // Purge past the end (snapshot install): the log empties and continues after it.
    log.purge(LogPos {
        index: 500,
        term: 3,
    })
    .unwrap();
    assert_eq!(log.last_index(), None);
    assert_eq!(log.segment_count(), 0);
    assert_eq!(log.next_index(), Some(501));
    append_range(&mut log, 501, 510, 3);
    log.sync().unwrap();
    drop(log);
    let log = open(&fs, dir);
    assert_eq!(log.first_index(), Some(501));
    assert_eq!(
        log.last_record(),
        Some(LogPos {
            index: 509,
            term: 3
        })
    );
}

#[test]
fn a_fresh_log_accepts_any_start_index() {
    let fs: Arc<dyn Vfs> = Arc::new(MemFs::new());
    let mut log = open(&fs, Path::new("/log"));
    append_range(&mut log, 0, 3, 0);
    assert_eq!(log.first_index(), Some(0));
    assert_eq!(log.last_index(), Some(2));
}

#[test]
fn oversized_payload_and_bad_segment_size_are_refused() {
    let fs: Arc<dyn Vfs> = Arc::new(MemFs::new());
    let bad = CommitLog::open(
        fs.clone(),
        Path::new("/x"),
        CommitLogOptions { segment_size: 8 },
    );
    assert!(matches!(bad, Err(StorageError::InvalidArgument(_))));
    let mut log = open(&fs, Path::new("/log"));
    let big = vec![0u8; raftmq_storage::commitlog::MAX_PAYLOAD + 1];
    let err = log
        .append([RecordRef {
            index: 1,
            term: 1,
            payload: &big,
        }])
        .unwrap_err();
    assert!(matches!(err, StorageError::InvalidArgument(_)));
}

#[test]
fn export_copies_the_log_up_to_an_index_and_nothing_after() {
    let fs: Arc<dyn Vfs> = Arc::new(MemFs::new());
    let mut log = open(&fs, Path::new("/log"));
    append_range(&mut log, 1, 120, 1);
    log.purge(LogPos { index: 20, term: 1 }).unwrap();
    log.export(90, Path::new("/export")).unwrap();
    // The original keeps growing; the export must not see it (the active segment is copied).
    append_range(&mut log, 120, 130, 2);
    log.sync().unwrap();
    let (copy, report) = CommitLog::open(fs.clone(), Path::new("/export"), small()).unwrap();
    assert!(
        report.rebuilt_indexes.is_empty(),
        "sealed segments travel with their .idx files: {:?}",
        report.rebuilt_indexes
    );
    assert_eq!(copy.first_index(), log.first_index());
    assert_eq!(copy.last_record(), Some(LogPos { index: 90, term: 1 }));
    assert_eq!(copy.last_purged(), Some(LogPos { index: 20, term: 1 }));
    for i in copy.first_index().unwrap()..=90 {
        assert_eq!(copy.read(i).unwrap().payload, payload(i));
    }
    // Exporting everything copies the active segment whole.
    log.export(129, Path::new("/export2")).unwrap();
    let all = open(&fs, Path::new("/export2"));
    assert_eq!(
        all.last_record(),
        Some(LogPos {
            index: 129,
            term: 2
        })
    );
}
