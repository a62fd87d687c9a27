//! The state machine applies the same entries to the same state however they are cut into
//! apply calls.

use std::path::Path;

use bytes::Bytes;
use raftmq_storage::CommitLogOptions;
use raftmq_storage::message::{BatchEncoder, MessageIn};
use raftmq_storage::vfs::MemFs;

use super::*;
use crate::consensus::log_store::{FlushPolicy, LogStore};
use crate::consensus::types::log_id;
use crate::state::applied::RejectCode;
use crate::state::applier::users;
use crate::state::command::ConsumerGroupMode;
use crate::state::command::{AckCmd, Command, HeartbeatCmd, LeaseCmd, TopicSpec, User};

fn open(dir: &Path) -> StateMachine {
    let log = LogStore::open_on(
        Arc::new(MemFs::new()),
        Path::new("/log"),
        CommitLogOptions::default(),
        FlushPolicy::Sync,
    )
    .unwrap();
    StateMachine::open(dir, log).unwrap()
}

fn user(name: &str) -> User {
    User {
        name: name.into(),
        token_sha256: [7; 32],
        admin: false,
        permissions: vec![],
    }
}

fn entries() -> Vec<Entry> {
    let mut buf = Vec::new();
    let mut enc = BatchEncoder::new(&mut buf, "t", 10).unwrap();
    for _ in 0..2 {
        enc.push(
            &MessageIn {
                body: b"x",
                ..Default::default()
            },
            [],
        )
        .unwrap();
    }
    enc.finish();
    let spec = TopicSpec {
        queues: 1,
        fifo: false,
        retention_ms: 1_000_000,
        dedup_window_ms: raftmq_storage::DEFAULT_DEDUP_WINDOW_MS,
        part: None,
    };
    let lease = LeaseCmd {
        group: "g".into(),
        topic: "t".into(),
        consumer: "c".into(),
        mode: ConsumerGroupMode::Clustering,
        now_ms: 100,
        invisible_ms: 1000,
        items: vec![(0, 0), (0, 1)],
        skip: vec![],
        dead: vec![],
    };
    let ack = AckCmd {
        group: "g".into(),
        topic: "t".into(),
        receipts: vec!["0-0-1-2-c".into()],
        now_ms: 200,
        nack_delay_ms: None,
    };
    let ack2 = AckCmd {
        receipts: vec!["0-1-1-2-c".into(), "0-0-1-2-c".into()],
        now_ms: 250,
        ..ack.clone()
    };
    let heartbeat = HeartbeatCmd {
        group: "g".into(),
        consumer: "c".into(),
        topics: vec!["t".into()],
        session_ms: 1000,
        now_ms: 260,
    };
    [
        Command::Produce {
            create_topic: Some(spec),
            batch: Bytes::from(buf),
        },
        Command::Lease(lease),
        Command::Ack(ack),
        Command::Ack(ack2),
        Command::Heartbeat(heartbeat),
        Command::CommitOffsets {
            group: "g".into(),
            topic: "t".into(),
            offsets: vec![(0, 1)],
        },
        Command::Ack(AckCmd {
            receipts: vec!["0-1-1-2-c".into()],
            now_ms: 270,
            ..AckCmd {
                group: "g".into(),
                topic: "t".into(),
                receipts: vec![],
                now_ms: 0,
                nack_delay_ms: None,
            }
        }),
        Command::Retain { now_ms: 300 },
        Command::PutUser(user("a")),
        Command::PutUser(user("b")),
        Command::DeleteUser { name: "a".into() },
        Command::DeleteUser { name: "a".into() },
    ]
    .into_iter()
    .enumerate()
    .map(|(i, c)| Entry {
        log_id: log_id(1, 1, i as u64 + 1),
        payload: EntryPayload::Normal(c),
    })
    .collect()
}

#[test]
fn results_do_not_depend_on_how_entries_are_cut_into_apply_calls() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (one, many) = (open(a.path()), open(b.path()));
    let all = entries();
    let (together, _) = one.apply_blocking(&all).unwrap();
    let apart: Vec<Applied> = all
        .iter()
        .flat_map(|e| many.apply_blocking(std::slice::from_ref(e)).unwrap().0)
        .collect();
    assert_eq!(together, apart);
    assert!(
        matches!(&together[1], Applied::Leased { granted } if granted.len() == 2),
        "{together:?}"
    );
    assert_eq!(
        together[2],
        Applied::Acked {
            results: vec![None]
        }
    );
    // The second ack repeats the first.
    assert_eq!(
        together[3],
        Applied::Acked {
            results: vec![None, None]
        }
    );
    assert_eq!(
        together[4],
        Applied::Assigned {
            assignments: vec![crate::state::Assignment {
                topic: "t".into(),
                queues: vec![0],
                consumers: vec!["c".into()],
            }]
        }
    );
    // A commit below the floor changes nothing (only a reset moves a floor back); the ack
    // after it sees the floor where the acks left it, exactly as when applied alone.
    assert_eq!(
        together[6],
        Applied::Acked {
            results: vec![None]
        }
    );
    let (sa, sb) = (one.store(), many.store());
    assert_eq!(sa.offset_get("g", "t", 0).unwrap(), Some(2));
    assert_eq!(
        sa.offset_get("g", "t", 0).unwrap(),
        sb.offset_get("g", "t", 0).unwrap()
    );
    for kind in [b"M", b"T", b"C", b"Q"] {
        assert_eq!(
            sa.group_scan(kind, None, 100).unwrap(),
            sb.group_scan(kind, None, 100).unwrap()
        );
    }
    assert_eq!(one.retention_point(), many.retention_point());
    assert_eq!(
        one.retention_point(),
        Some(0),
        "entry 1 holds a retained message"
    );
    // User commands applied in one call see each other's changes (each reads the store).
    assert_eq!(together[10], Applied::Done);
    assert!(
        matches!(
            &together[11],
            Applied::Rejected {
                code: RejectCode::NotFound,
                ..
            }
        ),
        "{together:?}"
    );
    assert_eq!(users(&sa).unwrap(), vec![user("b")]);
    assert_eq!(users(&sb).unwrap(), vec![user("b")]);
}
