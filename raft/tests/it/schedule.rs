//! Scheduled messages at apply: timers wait outside their queue, `Deliver` puts the due ones
//! in due order at the tail, retention keeps their log entries, a restart and a deleted
//! topic behave.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use raftmq_raft::state::queues::NO_TIMER;
use raftmq_raft::state::{Applied, Applier, Command, TopicSpec};
use raftmq_storage::IndexStore;
use raftmq_storage::message::{BatchEncoder, MessageIn};

use crate::support::{apply, open};

/// `(body, deliver_at_ms)` per message, all in queue 0.
fn batch(topic: &str, store_ms: u64, msgs: &[(&str, Option<u64>)]) -> Bytes {
    let mut buf = Vec::new();
    let mut enc = BatchEncoder::new(&mut buf, topic, store_ms).unwrap();
    for &(body, deliver_at_ms) in msgs {
        let m = MessageIn {
            body: body.as_bytes(),
            deliver_at_ms,
            key: Some(body),
            ..Default::default()
        };
        enc.push(&m, []).unwrap();
    }
    enc.finish();
    Bytes::from(buf)
}

fn produce(topic: &str, store_ms: u64, msgs: &[(&str, Option<u64>)]) -> Command {
    Command::Produce {
        create_topic: Some(TopicSpec {
            queues: 1,
            fifo: false,
            retention_ms: 1_000,
            dedup_window_ms: raftmq_storage::DEFAULT_DEDUP_WINDOW_MS,
            part: None,
        }),
        batch: batch(topic, store_ms, msgs),
    }
}

fn offsets(r: &Applied) -> Vec<Option<u64>> {
    match r {
        Applied::Produced { placed, .. } => placed.iter().map(|p| p.1).collect(),
        other => panic!("not produced: {other:?}"),
    }
}

/// `(offset, log index, slot, store_ms)` of queue 0.
fn queue(store: &IndexStore, topic: &str) -> Vec<(u64, u64, u32, u64)> {
    store
        .cq_range(topic, 0, 0, 100)
        .unwrap()
        .into_iter()
        .map(|(o, e)| (o, e.log_index, e.slot, e.store_ms))
        .collect()
}

#[test]
fn due_messages_take_the_next_offsets_in_due_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, mut a) = open(tmp.path());
    let due = a.next_due_handle();
    assert_eq!(due.load(Ordering::Acquire), NO_TIMER);
    let r = apply(
        &mut a,
        1,
        produce(
            "t",
            100,
            &[
                ("now", None),
                ("b", Some(500)),
                ("a", Some(300)),
                ("c", Some(500)),
            ],
        ),
    );
    assert_eq!(offsets(&r), [Some(0), None, None, None]);
    assert_eq!(due.load(Ordering::Acquire), 300);
    // Before the time: nothing moves (an early `Deliver` is harmless).
    apply(&mut a, 2, Command::Deliver { now_ms: 299 });
    assert_eq!(queue(&store, "t").len(), 1);
    assert_eq!(store.key_lookup("t", "a", 10).unwrap(), vec![]);
    apply(&mut a, 3, Command::Deliver { now_ms: 300 });
    assert_eq!(due.load(Ordering::Acquire), 500);
    let r = apply(&mut a, 4, produce("t", 400, &[("later", None)]));
    assert_eq!(offsets(&r), [Some(2)]);
    apply(&mut a, 5, Command::Deliver { now_ms: 900 });
    assert_eq!(due.load(Ordering::Acquire), NO_TIMER);
    // Offsets dense, each message at its due time (as its store time), equal due times in
    // log order; the key index finds a delivered message.
    assert_eq!(
        queue(&store, "t"),
        [
            (0, 1, 0, 100),
            (1, 1, 2, 300),
            (2, 4, 0, 400),
            (3, 1, 1, 500),
            (4, 1, 3, 500),
        ]
    );
    assert_eq!(store.key_lookup("t", "a", 10).unwrap()[0].offset, 1);
    let hits = store.time_range("t", 500, 501, 10).unwrap();
    assert_eq!(hits.iter().map(|h| h.offset).collect::<Vec<_>>(), [3, 4]);
}

#[test]
fn a_message_due_by_apply_time_goes_straight_to_its_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, mut a) = open(tmp.path());
    // Apply's clock passed 500 (an earlier entry carried it); a batch stamped 100 asks 300.
    apply(&mut a, 1, Command::Deliver { now_ms: 500 });
    let r = apply(
        &mut a,
        2,
        produce("t", 100, &[("x", None), ("y", Some(300)), ("z", None)]),
    );
    assert_eq!(offsets(&r), [Some(0), Some(1), Some(2)]);
    assert_eq!(store.cq_bounds("t", 0).unwrap(), Some((0, 3)));
    assert_eq!(store.queue_next("t", 0).unwrap(), Some(3));
    // The run of the batch's store time holds only its own messages.
    let at_100: Vec<u64> = store
        .time_range("t", 100, 101, 10)
        .unwrap()
        .iter()
        .map(|h| h.offset)
        .collect();
    assert_eq!(at_100, [0, 2]);
    assert_eq!(store.time_range("t", 300, 301, 10).unwrap()[0].offset, 1);
}

#[test]
fn retention_keeps_the_log_entry_of_a_pending_message() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, mut a) = open(tmp.path());
    apply(
        &mut a,
        1,
        produce("t", 100, &[("x", None), ("later", Some(1_500))]),
    );
    apply(&mut a, 2, produce("t", 200, &[("y", None)]));
    // Everything in the queue expired; the pending message's entry (1) is still needed.
    apply(&mut a, 3, Command::Retain { now_ms: 1_300 });
    assert_eq!(a.retention_point(), Some(0));
    apply(&mut a, 4, Command::Deliver { now_ms: 1_500 });
    apply(&mut a, 5, Command::Retain { now_ms: 2_000 });
    assert_eq!(
        a.retention_point(),
        Some(0),
        "delivered: retained from its due time"
    );
    apply(&mut a, 6, Command::Retain { now_ms: 2_600 });
    // Its pin went with its ConsumeQueue entry; the point follows at the next `Retain`.
    apply(&mut a, 7, Command::Retain { now_ms: 2_600 });
    assert_eq!(a.retention_point(), Some(6));
}

#[test]
fn pending_timers_survive_a_restart_and_go_with_their_topic() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, mut a) = open(tmp.path());
    apply(&mut a, 1, produce("t", 100, &[("a", Some(700))]));
    apply(
        &mut a,
        2,
        produce("u", 100, &[("b", Some(600)), ("c", Some(800))]),
    );
    drop(a);
    // A new applier (a restart) finds the earliest due time in the store.
    let mut a = Applier::new(store.clone());
    assert_eq!(a.next_due_handle().load(Ordering::Acquire), 600);
    apply(&mut a, 3, Command::DeleteTopic { name: "u".into() });
    apply(&mut a, 4, Command::Deliver { now_ms: 1_000 });
    assert_eq!(queue(&store, "t").len(), 1);
    assert_eq!(
        store.cq_bounds("u", 0).unwrap(),
        None,
        "a deleted topic's timers went"
    );
    // A topic of the same name made again does not get the old messages.
    apply(&mut a, 5, produce("u", 1_100, &[("d", None)]));
    assert_eq!(queue(&store, "u").len(), 1);
    // Only `t`'s delivered message (entry 1) still holds a log entry.
    assert_eq!(store.pinned_oldest_log_index().unwrap(), Some(1));
}

/// A message delivered after messages produced later points further back in the log than
/// the queue's first entry: the retention point must not pass it (a chaos run lost such
/// messages to a compaction when the point followed each queue's first entry only).
#[test]
fn a_delivered_message_behind_newer_ones_keeps_its_log_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, mut a) = open(tmp.path());
    apply(&mut a, 1, produce("t", 100, &[("later", Some(300))]));
    apply(&mut a, 2, produce("t", 200, &[("now", None)]));
    apply(&mut a, 3, Command::Deliver { now_ms: 300 });
    assert_eq!(queue(&store, "t"), [(0, 2, 0, 200), (1, 1, 0, 300)]);
    apply(&mut a, 4, Command::Retain { now_ms: 400 });
    assert_eq!(
        a.retention_point(),
        Some(0),
        "entry 1 is still read at offset 1"
    );
    // Once retention removed both, the point moves on.
    apply(&mut a, 5, Command::Retain { now_ms: 1_400 });
    apply(&mut a, 6, Command::Retain { now_ms: 1_400 });
    assert_eq!(a.retention_point(), Some(5));
}
