//! A snapshot install stopped at every step (as a crash there would) and the node started
//! again: it has either the old state with the old log, or the new state with the new log.

use std::path::Path;

use bytes::Bytes;
use openraft::EntryPayload;
use openraft::storage::{IOFlushed, RaftLogStorage, RaftSnapshotBuilder};
use raftmq_storage::CommitLogOptions;
use raftmq_storage::message::{BatchEncoder, MessageIn};

use super::*;
use crate::consensus::log_store::{FlushPolicy, LogStore};
use crate::consensus::types::log_id;
use crate::state::command::{Command, TopicSpec};
use crate::state::read::{QueueQuery, read_queue};

/// A node's log store and state machine on `dir`, started as `Broker::start` does.
fn node(dir: &Path) -> (LogStore, StateMachine) {
    recover_install(&dir.join("state"), &dir.join("log")).unwrap();
    let log = LogStore::open(
        &dir.join("log"),
        CommitLogOptions { segment_size: 2048 },
        FlushPolicy::Sync,
    )
    .unwrap();
    let sm = StateMachine::open(&dir.join("state"), log.clone()).unwrap();
    (log, sm)
}

fn produce(i: u64) -> Entry {
    let mut buf = Vec::new();
    let mut enc = BatchEncoder::new(&mut buf, "t", 10).unwrap();
    for _ in 0..4 {
        enc.push(
            &MessageIn {
                body: &[i as u8; 100],
                ..Default::default()
            },
            [],
        )
        .unwrap();
    }
    enc.finish();
    Entry {
        log_id: log_id(2, 1, i),
        payload: EntryPayload::Normal(Command::Produce {
            create_topic: Some(TopicSpec {
                queues: 1,
                fifo: false,
                retention_ms: 1 << 40,
                dedup_window_ms: raftmq_storage::DEFAULT_DEDUP_WINDOW_MS,
                part: None,
            }),
            batch: Bytes::from(buf),
        }),
    }
}

async fn append_and_apply(log: &mut LogStore, sm: &StateMachine, entries: Vec<Entry>) {
    log.append(entries.clone(), IOFlushed::noop())
        .await
        .unwrap();
    sm.apply_blocking(&entries).unwrap();
}

fn messages(log: &LogStore, sm: &StateMachine) -> usize {
    let q = QueueQuery {
        topic: "t".into(),
        queue: 0,
        offset: 0,
        max: 1000,
        filter: None,
        sql: None,
        scan_limit: 1000,
    };
    read_queue(&sm.store(), &log.read_log(), &q)
        .unwrap()
        .messages
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_stopped_anywhere_leaves_old_with_old_or_new_with_new() {
    // The leader: 40 batches of 4 messages over many small segments, and a snapshot.
    let leader_dir = tempfile::tempdir().unwrap();
    let (mut leader_log, mut leader) = node(leader_dir.path());
    append_and_apply(&mut leader_log, &leader, (1..=40).map(produce).collect()).await;
    let snapshot = leader.build_snapshot().await.unwrap();
    let last = snapshot.meta.last_log_id;
    assert_eq!(last.map(|l| l.index), Some(40));

    for stop in [
        Some(InstallStep::Staged),
        Some(InstallStep::Decided),
        Some(InstallStep::LogSwapped),
        None,
    ] {
        // A follower with a log of its own that the snapshot replaces.
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, sm) = node(dir.path());
            let own: Vec<Entry> = (1..=3)
                .map(|i| Entry {
                    log_id: log_id(1, 2, i),
                    payload: EntryPayload::Blank,
                })
                .collect();
            append_and_apply(&mut log, &sm, own).await;
            sm.set_install_probe(Some(InstallProbe(Arc::new(move |step| Some(step) == stop))));
            let installed = sm.install(&snapshot.meta, snapshot.snapshot.clone()).await;
            assert_eq!(installed.is_ok(), stop.is_none(), "{installed:?}");
            // The node stops here.
        }
        let (mut log, sm) = node(dir.path());
        let (applied, _) = sm.applied_state_now();
        let log_last = log.get_log_state().await.unwrap().last_log_id;
        if stop == Some(InstallStep::Staged) {
            assert_eq!(
                applied.map(|l| l.index),
                Some(3),
                "undecided: the old state"
            );
            assert_eq!(log_last, Some(log_id(1, 2, 3)), "undecided: the old log");
            assert_eq!(messages(&log, &sm), 0);
        } else {
            assert_eq!(applied, last, "{stop:?}: the new state");
            assert_eq!(log_last, last, "{stop:?}: the new log");
            assert_eq!(messages(&log, &sm), 160, "{stop:?}: every message readable");
            // Raft sees the log purged up to the snapshot; the records stay for reads.
            let commit_log = log.read_log();
            assert_eq!(
                (commit_log.first_index(), commit_log.last_index()),
                (Some(1), Some(40)),
                "{stop:?}"
            );
        }
        assert!(
            !dir.path().join("state").join("install").exists(),
            "{stop:?}: no journal is left"
        );
        // The log takes the next entry wherever the install stopped.
        let next = applied.map_or(1, |l| l.index + 1);
        let entry = Entry {
            log_id: log_id(3, 1, next),
            payload: EntryPayload::Blank,
        };
        log.append([entry], IOFlushed::noop()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_being_sent_keeps_its_files_until_the_sender_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut sm) = node(dir.path());
    append_and_apply(&mut log, &sm, (1..=5).map(produce).collect()).await;
    let sending = sm.build_snapshot().await.unwrap();
    assert_eq!(
        sm.build_snapshot().await.unwrap().snapshot.dir,
        sending.snapshot.dir,
        "nothing new applied: the same snapshot"
    );
    append_and_apply(&mut log, &sm, (6..=8).map(produce).collect()).await;
    let newer = sm.build_snapshot().await.unwrap();
    assert_ne!(newer.snapshot.dir, sending.snapshot.dir);
    let old_dir = sending.snapshot.dir.clone();
    assert!(old_dir.join("state").exists(), "still being sent");
    drop(sending);
    assert!(!old_dir.exists(), "gone once the sender let go");
    // After a restart nothing sends the snapshots any more: they go.
    let newer_dir = newer.snapshot.dir.clone();
    std::mem::forget(newer);
    drop((log, sm));
    let _restarted = node(dir.path());
    assert!(
        !newer_dir.exists(),
        "snapshot directories are removed at open"
    );
}
