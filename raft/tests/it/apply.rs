//! The state machine's deterministic core: offsets at apply, batch atomicity, retention.

use std::sync::Arc;

use bytes::Bytes;
use raftmq_raft::state::{Applied, Applier, Command, RejectCode, TopicSpec};
use raftmq_storage::message::{BatchEncoder, MessageIn};

use crate::support::apply;
use raftmq_storage::{Durability, IndexStore, IndexStoreOptions};

fn batch(topic: &str, store_ms: u64, queues: &[u32]) -> Bytes {
    let mut buf = Vec::new();
    let mut enc = BatchEncoder::new(&mut buf, topic, store_ms).unwrap();
    for &queue in queues {
        enc.push(
            &MessageIn {
                queue,
                body: b"x",
                ..Default::default()
            },
            [],
        )
        .unwrap();
    }
    enc.finish();
    Bytes::from(buf)
}

/// One message per key in queue 0, each with that idempotency key.
fn keyed(topic: &str, store_ms: u64, keys: &[&str]) -> Bytes {
    let mut buf = Vec::new();
    let mut enc = BatchEncoder::new(&mut buf, topic, store_ms).unwrap();
    for &k in keys {
        let m = MessageIn {
            body: k.as_bytes(),
            idempotency_key: Some(k),
            ..Default::default()
        };
        enc.push(&m, []).unwrap();
    }
    enc.finish();
    Bytes::from(buf)
}

fn produce(batch: Bytes) -> Command {
    Command::Produce {
        create_topic: Some(spec(1, 1 << 40)),
        batch,
    }
}

/// A produce's placements and its retried keys' originals.
type Placements = (Vec<(u32, u64)>, Vec<(u32, u64, u32)>);

/// Placements of a produce that scheduled nothing.
fn placed(r: &Applied) -> Placements {
    match r {
        Applied::Produced {
            placed, originals, ..
        } => (
            placed
                .iter()
                .map(|&(q, o)| (q, o.expect("placed now")))
                .collect(),
            originals.clone(),
        ),
        other => panic!("not produced: {other:?}"),
    }
}

fn spec(queues: u32, retention_ms: u64) -> TopicSpec {
    TopicSpec {
        queues,
        fifo: false,
        retention_ms,
        dedup_window_ms: raftmq_storage::DEFAULT_DEDUP_WINDOW_MS,
        part: None,
    }
}

#[test]
fn offsets_are_assigned_densely_and_a_bad_batch_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(IndexStore::open(tmp.path(), &IndexStoreOptions::default()).unwrap());
    let mut a = Applier::new(store.clone());
    let r = apply(
        &mut a,
        5,
        Command::Produce {
            create_topic: Some(spec(2, 1000)),
            batch: batch("t", 10, &[0, 1, 0]),
        },
    );
    assert_eq!(
        r,
        Applied::Produced {
            log_index: 5,
            placed: vec![(0, Some(0)), (1, Some(0)), (0, Some(1))],
            originals: vec![],
        }
    );
    let r = apply(
        &mut a,
        6,
        Command::Produce {
            create_topic: None,
            batch: batch("t", 11, &[0, 5]),
        },
    );
    assert!(matches!(
        r,
        Applied::Rejected {
            code: RejectCode::InvalidArgument,
            ..
        }
    ));
    let r = apply(
        &mut a,
        7,
        Command::Produce {
            create_topic: None,
            batch: batch("t", 12, &[0]),
        },
    );
    assert_eq!(
        r,
        Applied::Produced {
            log_index: 7,
            placed: vec![(0, Some(2))],
            originals: vec![],
        },
        "the refused batch took no offset"
    );
    let r = apply(
        &mut a,
        8,
        Command::Produce {
            create_topic: None,
            batch: batch("nope", 12, &[0]),
        },
    );
    assert!(matches!(
        r,
        Applied::Rejected {
            code: RejectCode::TopicNotFound,
            ..
        }
    ));
    // A fresh applier (a restart) continues from the stored state.
    let mut b = Applier::new(store);
    let r = apply(
        &mut b,
        9,
        Command::Produce {
            create_topic: None,
            batch: batch("t", 13, &[1]),
        },
    );
    assert_eq!(
        r,
        Applied::Produced {
            log_index: 9,
            placed: vec![(1, Some(1))],
            originals: vec![],
        }
    );
}

#[test]
fn retention_drops_expired_entries_keeps_offsets_and_advances_the_point() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(IndexStore::open(tmp.path(), &IndexStoreOptions::default()).unwrap());
    let mut a = Applier::new(store.clone());
    apply(
        &mut a,
        1,
        Command::PutTopic {
            name: "short".into(),
            spec: spec(1, 100),
        },
    );
    apply(
        &mut a,
        2,
        Command::PutTopic {
            name: "long".into(),
            spec: spec(1, 1_000_000),
        },
    );
    for i in 0..10 {
        apply(
            &mut a,
            10 + i,
            Command::Produce {
                create_topic: None,
                batch: batch("short", 1000 + i, &[0]),
            },
        );
    }
    apply(
        &mut a,
        30,
        Command::Produce {
            create_topic: None,
            batch: batch("long", 1005, &[0]),
        },
    );
    assert_eq!(a.retention_point(), None);

    // At 1105 the short messages stored before 1005 are expired.
    apply(&mut a, 40, Command::Retain { now_ms: 1105 });
    assert_eq!(store.cq_bounds("short", 0).unwrap(), Some((5, 10)));
    assert_eq!(
        a.retention_point(),
        Some(14),
        "entry 15 holds the oldest retained message"
    );

    apply(&mut a, 41, Command::Retain { now_ms: 5000 });
    assert_eq!(
        store.cq_bounds("short", 0).unwrap(),
        Some((10, 10)),
        "all gone, offsets kept"
    );
    assert_eq!(
        a.retention_point(),
        Some(29),
        "the long-lived message holds the log from 30"
    );
    let r = apply(
        &mut a,
        42,
        Command::Produce {
            create_topic: None,
            batch: batch("short", 5000, &[0]),
        },
    );
    assert_eq!(
        r,
        Applied::Produced {
            log_index: 42,
            placed: vec![(0, Some(10))],
            originals: vec![],
        }
    );
    // The point never goes back, and survives a restart.
    apply(&mut a, 43, Command::Retain { now_ms: 0 });
    assert_eq!(Applier::new(store).retention_point(), Some(29));
}

fn lease(consumer: &str, now_ms: u64, items: Vec<(u32, u64)>) -> Command {
    Command::Lease(raftmq_raft::state::command::LeaseCmd {
        group: "g".into(),
        topic: "t".into(),
        consumer: consumer.into(),
        mode: raftmq_raft::ConsumerGroupMode::Clustering,
        now_ms,
        invisible_ms: 1000,
        items,
        skip: vec![],
        dead: vec![],
    })
}

fn granted(r: &Applied) -> Vec<(u32, u64, u32)> {
    match r {
        Applied::Leased { granted } => granted
            .iter()
            .map(|g| (g.queue, g.offset, g.attempt))
            .collect(),
        other => panic!("not a lease answer: {other:?}"),
    }
}

#[test]
fn two_leases_of_one_message_in_one_apply_batch_grant_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(IndexStore::open(tmp.path(), &IndexStoreOptions::default()).unwrap());
    let mut a = Applier::new(store.clone());
    apply(
        &mut a,
        1,
        Command::Produce {
            create_topic: Some(spec(1, 1_000_000)),
            batch: batch("t", 10, &[0, 0]),
        },
    );
    a.finish_batch();
    // Both leases in one RocksDB batch, as one apply call of several entries would do.
    let mut b = store.batch();
    let first = a
        .apply(&mut b, 2, &lease("c1", 100, vec![(0, 0), (0, 1)]))
        .unwrap();
    let second = a
        .apply(&mut b, 3, &lease("c2", 100, vec![(0, 0), (0, 1)]))
        .unwrap();
    store.write(b, Durability::Wal).unwrap();
    a.finish_batch();
    assert_eq!(granted(&first), [(0, 0, 1), (0, 1, 1)]);
    assert_eq!(granted(&second), [], "a leased message is not leased again");
    // After the lease ends (leader clock in the entry) and the default first backoff (1 s)
    // has passed, it is leased again, attempt 2.
    assert_eq!(
        granted(&apply(&mut a, 4, lease("c2", 2000, vec![(0, 0)]))),
        [],
        "expired at 1100, backing off until 2100"
    );
    a.finish_batch();
    let third = apply(&mut a, 5, lease("c2", 2100, vec![(0, 0)]));
    a.finish_batch();
    assert_eq!(granted(&third), [(0, 0, 2)]);
    // A replica replaying the same entries on a fresh store grants exactly the same.
    let tmp2 = tempfile::tempdir().unwrap();
    let store2 = Arc::new(IndexStore::open(tmp2.path(), &IndexStoreOptions::default()).unwrap());
    let mut r = Applier::new(store2);
    apply(
        &mut r,
        1,
        Command::Produce {
            create_topic: Some(spec(1, 1_000_000)),
            batch: batch("t", 10, &[0, 0]),
        },
    );
    assert_eq!(
        granted(&apply(&mut r, 2, lease("c1", 100, vec![(0, 0), (0, 1)]))),
        granted(&first)
    );
    assert_eq!(
        granted(&apply(&mut r, 3, lease("c2", 100, vec![(0, 0), (0, 1)]))),
        granted(&second)
    );
    assert_eq!(
        granted(&apply(&mut r, 4, lease("c2", 2000, vec![(0, 0)]))),
        []
    );
    assert_eq!(
        granted(&apply(&mut r, 5, lease("c2", 2100, vec![(0, 0)]))),
        granted(&third)
    );
}

#[test]
fn a_retried_idempotency_key_answers_its_first_write_until_the_window_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(IndexStore::open(tmp.path(), &IndexStoreOptions::default()).unwrap());
    let mut a = Applier::new(store.clone());
    // Within one batch, a repeated key is the first message again.
    let r = apply(&mut a, 1, produce(keyed("t", 1000, &["a", "b", "a"])));
    assert_eq!(placed(&r), (vec![(0, 0), (0, 1), (0, 0)], vec![(2, 1, 0)]));
    let r = apply(&mut a, 2, produce(keyed("t", 2000, &["b", "c"])));
    assert_eq!(placed(&r), (vec![(0, 1), (0, 2)], vec![(0, 1, 1)]));
    // Two entries in one RocksDB batch (one apply call of several entries): the second
    // sees the first's record, as it would across batches.
    let mut b = store.batch();
    let first = a
        .apply(&mut b, 3, &produce(keyed("t", 3000, &["d"])))
        .unwrap();
    let second = a
        .apply(&mut b, 4, &produce(keyed("t", 3000, &["d"])))
        .unwrap();
    store.write(b, Durability::Wal).unwrap();
    a.finish_batch();
    assert_eq!(placed(&first), (vec![(0, 3)], vec![]));
    assert_eq!(placed(&second), (vec![(0, 3)], vec![(0, 3, 0)]));
    // Another topic has its own keys.
    let r = apply(&mut a, 5, produce(keyed("u", 3000, &["a"])));
    assert_eq!(placed(&r), (vec![(0, 0)], vec![]));
    // Ten minutes after its first write, "a" is a new message.
    let r = apply(&mut a, 6, produce(keyed("t", 601_000, &["a"])));
    assert_eq!(placed(&r), (vec![(0, 4)], vec![]));
    let r = apply(&mut a, 7, produce(keyed("t", 601_001, &["a"])));
    assert_eq!(placed(&r), (vec![(0, 4)], vec![(0, 6, 0)]));
    // Retention drops records whose window ended, the re-written "a"'s only at its own end.
    apply(&mut a, 8, Command::Retain { now_ms: 700_000 });
    assert!(store.dedup_get("t", "b").unwrap().is_none());
    assert!(store.dedup_get("t", "a").unwrap().is_some());
    apply(&mut a, 9, Command::Retain { now_ms: 1_300_000 });
    assert!(store.dedup_get("t", "a").unwrap().is_none());
}
