//! Consumer-group state against retention, offset commits and broadcast consumers: floors
//! never fall below the first retained offset, never move back without a reset, and every
//! consumer's progress is found by resets and topic deletion.

use std::sync::Arc;

use bytes::Bytes;
use raftmq_raft::ConsumerGroupMode;
use raftmq_raft::state::command::{AckCmd, GroupSettingsCmd, LeaseCmd, ResetCmd};
use raftmq_raft::state::{Applied, Applier, Command, TopicSpec};
use raftmq_storage::message::{BatchEncoder, MessageIn};
use raftmq_storage::{Durability, IndexStore, IndexStoreOptions};

struct Node {
    _dir: tempfile::TempDir,
    store: Arc<IndexStore>,
    applier: Applier,
    index: u64,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(IndexStore::open(dir.path(), &IndexStoreOptions::default()).unwrap());
        Node {
            _dir: dir,
            applier: Applier::new(store.clone()),
            store,
            index: 0,
        }
    }

    fn apply(&mut self, cmd: Command) -> Applied {
        self.index += 1;
        let store = self.store.clone();
        let mut b = store.batch();
        let r = self.applier.apply(&mut b, self.index, &cmd).unwrap();
        store.write(b, Durability::Wal).unwrap();
        self.applier.finish_batch();
        r
    }

    /// Topic `t`, and group `g` with no retry backoff (an expired lease is leasable at
    /// once, as the times in these tests assume).
    fn topic(&mut self, fifo: bool, retention_ms: u64) {
        self.apply(Command::PutTopic {
            name: "t".into(),
            spec: TopicSpec {
                queues: 1,
                fifo,
                retention_ms,
                dedup_window_ms: raftmq_storage::DEFAULT_DEDUP_WINDOW_MS,
                part: None,
            },
        });
        self.apply(Command::PutGroup(GroupSettingsCmd {
            group: "g".into(),
            max_attempts: None,
            retry_backoff_ms: Some(vec![0]),
        }));
    }

    fn produce(&mut self, store_ms: u64, n: usize) {
        let mut buf = Vec::new();
        let mut enc = BatchEncoder::new(&mut buf, "t", store_ms).unwrap();
        for _ in 0..n {
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
        self.apply(Command::Produce {
            create_topic: None,
            batch: Bytes::from(buf),
        });
    }

    fn lease(
        &mut self,
        mode: ConsumerGroupMode,
        consumer: &str,
        now_ms: u64,
        items: &[u64],
    ) -> Vec<(u64, String)> {
        let r = self.apply(Command::Lease(LeaseCmd {
            group: "g".into(),
            topic: "t".into(),
            consumer: consumer.into(),
            mode,
            now_ms,
            invisible_ms: 1000,
            items: items.iter().map(|&o| (0, o)).collect(),
            skip: vec![],
            dead: vec![],
        }));
        match r {
            Applied::Leased { granted } => {
                granted.into_iter().map(|g| (g.offset, g.receipt)).collect()
            }
            other => panic!("not a lease answer: {other:?}"),
        }
    }

    fn ack(&mut self, now_ms: u64, receipts: Vec<String>) {
        let r = self.apply(Command::Ack(AckCmd {
            group: "g".into(),
            topic: "t".into(),
            receipts,
            now_ms,
            nack_delay_ms: None,
        }));
        assert!(matches!(r, Applied::Acked { .. }), "{r:?}");
    }

    /// Message states stored (in the queues' checkpoint records).
    fn states(&self) -> usize {
        use raftmq_raft::state::consumer_groups::{MsgState, dec};
        self.store
            .group_scan(b"Q", None, usize::MAX)
            .unwrap()
            .iter()
            .map(|(_, v)| dec::<Vec<(u64, MsgState)>>(v).unwrap().len())
            .sum()
    }
}

const CLUSTERING: ConsumerGroupMode = ConsumerGroupMode::Clustering;
const BROADCAST: ConsumerGroupMode = ConsumerGroupMode::Broadcast;

#[test]
fn a_fifo_group_that_lagged_past_retention_receives_again() {
    let mut n = Node::new();
    n.topic(true, 100);
    n.produce(10, 3);
    // Offset 0 is leased and never acked; all three expire.
    assert_eq!(n.lease(CLUSTERING, "c", 20, &[0]).len(), 1);
    n.apply(Command::Retain { now_ms: 5000 });
    assert_eq!(n.store.cq_bounds("t", 0).unwrap(), Some((3, 3)));
    n.produce(5000, 1);
    let got = n.lease(CLUSTERING, "c", 5001, &[3]);
    assert_eq!(
        got.len(),
        1,
        "the new message after the retained range is delivered"
    );
    assert_eq!(
        n.store.offset_get("g", "t", 0).unwrap(),
        Some(3),
        "the floor moved to the first retained offset"
    );
}

#[test]
fn retention_drops_group_records_below_the_first_retained_offset() {
    let mut n = Node::new();
    n.topic(false, 100);
    n.produce(10, 4);
    let got = n.lease(CLUSTERING, "c", 20, &[0, 1, 2, 3]);
    // Ack everything but offset 0: three Acked records wait above the floor.
    n.ack(30, got[1..].iter().map(|(_, r)| r.clone()).collect());
    assert_eq!(n.states(), 4);
    n.apply(Command::Retain { now_ms: 5000 });
    assert_eq!(n.states(), 0, "records of expired messages are dropped");
    assert_eq!(n.store.offset_get("g", "t", 0).unwrap(), Some(4));
}

#[test]
fn an_offset_commit_never_moves_a_floor_back() {
    let mut n = Node::new();
    n.topic(false, 1_000_000);
    n.produce(10, 3);
    let got = n.lease(CLUSTERING, "c", 20, &[0, 1, 2]);
    n.ack(30, got.iter().map(|(_, r)| r.clone()).collect());
    assert_eq!(n.store.offset_get("g", "t", 0).unwrap(), Some(3));
    let r = n.apply(Command::CommitOffsets {
        group: "g".into(),
        topic: "t".into(),
        offsets: vec![(0, 1)],
    });
    assert_eq!(r, Applied::Done);
    assert_eq!(
        n.store.offset_get("g", "t", 0).unwrap(),
        Some(3),
        "a commit below the floor changes nothing"
    );
    assert!(
        n.lease(CLUSTERING, "c", 40, &[1]).is_empty(),
        "acked messages are not delivered again"
    );
    // Forward is fine, and drops the records it passes.
    n.produce(50, 3);
    assert_eq!(n.lease(CLUSTERING, "c", 60, &[3, 4]).len(), 2);
    n.apply(Command::CommitOffsets {
        group: "g".into(),
        topic: "t".into(),
        offsets: vec![(0, 5)],
    });
    assert_eq!(n.store.offset_get("g", "t", 0).unwrap(), Some(5));
    assert_eq!(n.states(), 0, "no record below the floor");
}

#[test]
fn a_broadcast_consumer_without_heartbeats_is_reset_and_forgotten() {
    let mut n = Node::new();
    n.topic(false, 1_000_000);
    n.produce(10, 2);
    let got = n.lease(BROADCAST, "b1", 20, &[0, 1]);
    n.ack(30, got.iter().map(|(_, r)| r.clone()).collect());
    assert_eq!(n.store.offset_get("g/b1", "t", 0).unwrap(), Some(2));
    n.apply(Command::ResetOffsets(ResetCmd {
        group: "g".into(),
        topic: "t".into(),
        offsets: vec![(0, 0)],
    }));
    assert_eq!(
        n.store.offset_get("g/b1", "t", 0).unwrap(),
        Some(0),
        "its progress was reset"
    );
    assert_eq!(n.lease(BROADCAST, "b1", 40, &[0]).len(), 1);
    n.apply(Command::DeleteTopic { name: "t".into() });
    assert_eq!(
        n.store.offset_get("g/b1", "t", 0).unwrap(),
        None,
        "its progress went with the topic"
    );
    assert_eq!(n.states(), 0);
}

#[test]
fn time_at_apply_never_goes_back_and_survives_a_restart() {
    let mut n = Node::new();
    n.topic(false, 1_000_000);
    n.apply(Command::Retain { now_ms: 5000 });
    // A leader whose clock is behind: its heartbeat is applied at the group's latest time.
    let heartbeat = |now_ms| {
        Command::Heartbeat(raftmq_raft::state::command::HeartbeatCmd {
            group: "g".into(),
            consumer: "c".into(),
            topics: vec!["t".into()],
            session_ms: 1000,
            now_ms,
        })
    };
    n.apply(heartbeat(100));
    let last_heartbeat = |store: &IndexStore| {
        let recs = store.group_scan(b"C", None, 10).unwrap();
        let rec: raftmq_raft::state::consumer_groups::ConsumerRec =
            postcard::from_bytes(&recs[0].1).unwrap();
        rec.last_ms
    };
    assert_eq!(last_heartbeat(&n.store), 5000);
    n.applier = Applier::new(n.store.clone());
    n.apply(heartbeat(200));
    assert_eq!(
        last_heartbeat(&n.store),
        5000,
        "the clock survived the restart"
    );
}

impl Node {
    fn nack(&mut self, now_ms: u64, receipts: Vec<String>, delay_ms: u64) -> Applied {
        self.apply(Command::Ack(AckCmd {
            group: "g".into(),
            topic: "t".into(),
            receipts,
            now_ms,
            nack_delay_ms: Some(delay_ms),
        }))
    }
}

#[test]
fn in_flight_progress_rebuilt_from_checkpoints_after_a_restart_decides_the_same() {
    // Two replicas apply the same commands; one restarts its applier half way, so its
    // in-flight state comes back from the checkpoint records. Every answer must match.
    let (mut a, mut b) = (Node::new(), Node::new());
    let mut both = |f: &mut dyn FnMut(&mut Node) -> String| {
        let (ra, rb) = (f(&mut a), f(&mut b));
        assert_eq!(ra, rb);
        ra
    };
    both(&mut |n| {
        n.topic(false, 1_000_000);
        n.produce(10, 700);
        String::new()
    });
    // Leases over three checkpoint records; acks at and above the floor; a nack.
    let all: Vec<u64> = (0..700).collect();
    both(&mut |n| format!("{:?}", n.lease(CLUSTERING, "c1", 20, &all[..300])));
    both(&mut |n| format!("{:?}", n.lease(CLUSTERING, "c2", 21, &all[250..700])));
    both(&mut |n| {
        let got = n.lease(CLUSTERING, "c3", 22, &all);
        assert!(got.is_empty(), "everything is in flight");
        String::new()
    });
    let receipts = |n: &mut Node, now: u64, items: &[u64]| -> Vec<String> {
        // A lease that expired is leased again: its receipts are the current ones.
        n.lease(CLUSTERING, "c4", now, items)
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    };
    both(&mut |n| {
        let r = receipts(n, 2000, &all[..]);
        assert_eq!(r.len(), 700, "every lease expired at 1020-1021");
        n.ack(2001, r[..10].to_vec());
        n.ack(2001, r[100..400].to_vec());
        // The floor passes a whole checkpoint record and part of the next.
        n.ack(2001, r[10..100].to_vec());
        format!("{:?}", n.nack(2001, r[500..510].to_vec(), 50))
    });
    b.applier = Applier::new(b.store.clone());
    let mut both = |f: &mut dyn FnMut(&mut Node) -> String| {
        let (ra, rb) = (f(&mut a), f(&mut b));
        assert_eq!(ra, rb);
        ra
    };
    // Before the leases of 2000 expire only the nacked ones come back; after, all the
    // unacked ones, with their attempts counted.
    let early = both(&mut |n| format!("{:?}", n.lease(CLUSTERING, "c5", 2100, &all)));
    assert_eq!(early.matches("-c5").count(), 10, "{early}");
    let late = both(&mut |n| format!("{:?}", n.lease(CLUSTERING, "c6", 5000, &all)));
    // 400 acked; the 10 nacked ones (leased again at 2100) come back a fourth time.
    assert_eq!(late.matches("-c6").count(), 700 - 400, "{late}");
    assert!(late.contains("0-500-4-"), "fourth delivery: {late}");
    assert_eq!(a.states(), b.states());
    assert_eq!(
        a.store.offset_get("g", "t", 0).unwrap(),
        Some(400),
        "acks at the floor moved it"
    );
}

/// A receive of up to `max` by consumer `c` of group `g` on topic `t`.
fn receive_request(max: usize) -> raftmq_raft::state::consumer_groups::ReceiveRequest {
    raftmq_raft::state::consumer_groups::ReceiveRequest {
        group: "g".into(),
        topic: "t".into(),
        consumer: "c".into(),
        max,
        wait_ms: 0,
        invisible_ms: 1000,
        tag: None,
        sql: None,
        mode: CLUSTERING,
    }
}

#[test]
fn concurrent_plans_propose_different_messages_until_a_reservation_is_dropped() {
    use raftmq_raft::state::consumer_groups::plan::Reserved;
    let mut n = Node::new();
    n.topic(false, 1_000_000);
    n.produce(10, 20);
    let reserved = Arc::new(std::sync::Mutex::new(Reserved::default()));
    let req = receive_request(8);
    let first = n.applier.plan_receive(&req, 0, 20, &reserved).unwrap();
    let second = n.applier.plan_receive(&req, 0, 20, &reserved).unwrap();
    let offsets = |p: &raftmq_raft::state::consumer_groups::plan::Plan| -> Vec<u64> {
        p.items.iter().map(|(_, o)| *o).collect()
    };
    assert_eq!(offsets(&first), (0..8).collect::<Vec<_>>());
    assert_eq!(offsets(&second), (8..16).collect::<Vec<_>>());
    drop(first);
    let third = n.applier.plan_receive(&req, 0, 20, &reserved).unwrap();
    assert_eq!(offsets(&third), (0..8).collect::<Vec<_>>(), "released");
    // What apply leased is out of later plans without any reservation.
    drop((second, third));
    n.lease(CLUSTERING, "c", 20, &(0..12).collect::<Vec<_>>());
    let after = n.applier.plan_receive(&req, 0, 30, &reserved).unwrap();
    assert_eq!(offsets(&after), (12..20).collect::<Vec<_>>());
}

#[test]
fn a_plan_looks_no_further_than_the_in_flight_window_past_the_floor() {
    use raftmq_raft::state::consumer_groups::plan::{MAX_IN_FLIGHT_PER_QUEUE, Reserved};
    let window = MAX_IN_FLIGHT_PER_QUEUE as u64;
    let mut n = Node::new();
    n.topic(false, 1_000_000);
    for _ in 0..(window / 5000 + 1) {
        n.produce(10, 5000);
    }
    // A silent consumer holds the whole window; the messages after it must wait.
    let held: Vec<u64> = (0..window).collect();
    assert_eq!(
        n.lease(CLUSTERING, "silent", 20, &held).len() as u64,
        window
    );
    let reserved = Arc::new(std::sync::Mutex::new(Reserved::default()));
    let req = receive_request(8);
    let plan = n.applier.plan_receive(&req, 0, 30, &reserved).unwrap();
    assert!(plan.items.is_empty(), "{:?}", plan.items);
    // Once the held messages' leases expire they come back first, in order.
    let plan = n.applier.plan_receive(&req, 0, 2000, &reserved).unwrap();
    let offsets: Vec<u64> = plan.items.iter().map(|(_, o)| *o).collect();
    assert_eq!(offsets, (0..8).collect::<Vec<_>>());
}

/// Dead letters reach their topic in any log order: one that points further back than the
/// dead-letter topic's first entry must keep its log entry (a pin), even once its original
/// expired from its own topic.
#[test]
fn a_dead_letter_keeps_its_log_entry_while_it_is_retained() {
    let mut n = Node::new();
    n.topic(false, 1000);
    n.apply(Command::PutGroup(GroupSettingsCmd {
        group: "g".into(),
        max_attempts: Some(1),
        retry_backoff_ms: None,
    }));
    n.produce(10, 1); // entry 4, offset 0
    n.produce(20, 1); // entry 5, offset 1
    assert_eq!(n.lease(CLUSTERING, "c", 1100, &[1]).len(), 1);
    assert_eq!(n.lease(CLUSTERING, "c", 1150, &[0]).len(), 1);
    let mut dead_letter = |now_ms: u64, offset: u64| {
        n.apply(Command::Lease(LeaseCmd {
            group: "g".into(),
            topic: "t".into(),
            consumer: "c".into(),
            mode: CLUSTERING,
            now_ms,
            invisible_ms: 1000,
            items: vec![],
            skip: vec![],
            dead: vec![(0, offset)],
        }));
    };
    // Offset 1 (entry 5) is dead-lettered first, then offset 0 (entry 4).
    dead_letter(2200, 1);
    dead_letter(2300, 0);
    let dlq: Vec<u64> = n
        .store
        .cq_range("DLQ-g", 0, 0, 10)
        .unwrap()
        .iter()
        .map(|(_, e)| e.log_index)
        .collect();
    assert_eq!(dlq, [5, 4]);
    // Both originals expire from `t`; the dead letters are kept, entry 4 with them.
    n.apply(Command::Retain { now_ms: 2400 });
    assert_eq!(n.store.cq_bounds("t", 0).unwrap(), Some((2, 2)));
    assert_eq!(n.applier.retention_point(), Some(3));
}

/// A leader's plan loads a group's progress into memory before a command is applied; a
/// follower loads it when it applies one. A progress never stored takes its floor from the
/// first retained offset when it is loaded, so retention between the two must not leave
/// the leader's floor behind the followers' (raftmq-sim seed 125: replicas' states
/// differed at equal applied indexes after a time warp expired a topic's head).
#[test]
fn a_progress_a_plan_loaded_follows_retention_as_a_later_load_would() {
    use raftmq_raft::state::consumer_groups::plan::Reserved;
    let (mut leader, mut follower) = (Node::new(), Node::new());
    for n in [&mut leader, &mut follower] {
        n.topic(false, 1000);
        n.produce(10, 5); // offsets 0..5
        n.produce(2000, 5); // offsets 5..10
    }
    // Only the leader plans (the group never received before: nothing of it is stored).
    let reserved = Arc::new(std::sync::Mutex::new(Reserved::default()));
    let plan = leader
        .applier
        .plan_receive(&receive_request(2), 0, 20, &reserved)
        .unwrap();
    assert_eq!(plan.items.len(), 2);
    drop(plan);
    // Retention removes offsets 0..5 on both; then both apply the same lease.
    for n in [&mut leader, &mut follower] {
        n.apply(Command::Retain { now_ms: 1500 });
        assert_eq!(n.lease(CLUSTERING, "c", 1600, &[5, 6]).len(), 2);
    }
    assert_eq!(
        leader.store.offset_get("g", "t", 0).unwrap(),
        follower.store.offset_get("g", "t", 0).unwrap()
    );
    assert_eq!(leader.states(), follower.states());
    assert_eq!(
        leader.store.digest(&[]).unwrap(),
        follower.store.digest(&[]).unwrap(),
        "the replicas' stores differ"
    );
}
