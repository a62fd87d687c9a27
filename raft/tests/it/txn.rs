//! Transactions at apply: half messages stay out of their queues until a commit puts them
//! at the tails; a rollback drops them; decisions are idempotent and exclusive; unanswered
//! check-backs roll back after the last allowed one; retention keeps what is still needed.

use std::sync::Arc;

use bytes::Bytes;
use raftmq_raft::state::command::{EndTxnCmd, TxnCheck, TxnDecision};
use raftmq_raft::state::queues::{TxnRecord, TxnState};
use raftmq_raft::state::{Applied, Applier, Command, RejectCode, TopicSpec};
use raftmq_storage::IndexStore;
use raftmq_storage::message::{BatchEncoder, MessageIn};

use crate::support::{apply, open};

fn spec() -> TopicSpec {
    TopicSpec {
        queues: 2,
        fifo: false,
        retention_ms: 1_000,
        dedup_window_ms: raftmq_storage::DEFAULT_DEDUP_WINDOW_MS,
        part: None,
    }
}

fn batch(store_ms: u64, queues: &[u32]) -> Bytes {
    let mut buf = Vec::new();
    let mut enc = BatchEncoder::new(&mut buf, "t", store_ms).unwrap();
    for &queue in queues {
        let m = MessageIn {
            queue,
            body: b"x",
            key: Some("k"),
            ..Default::default()
        };
        enc.push(&m, []).unwrap();
    }
    enc.finish();
    Bytes::from(buf)
}

fn half(store_ms: u64, queues: &[u32]) -> Command {
    Command::ProduceHalf {
        create_topic: Some(spec()),
        check: TxnCheck {
            check_url: "http://127.0.0.1:9/check".into(),
            check_after_ms: 100,
            max_checks: 3,
        },
        batch: batch(store_ms, queues),
    }
}

fn produce(store_ms: u64, queues: &[u32]) -> Command {
    Command::Produce {
        create_topic: Some(spec()),
        batch: batch(store_ms, queues),
    }
}

fn end(txn: u64, decision: TxnDecision, now_ms: u64) -> Command {
    Command::EndTxn(EndTxnCmd {
        txn,
        decision,
        now_ms,
    })
}

struct Node {
    _dir: tempfile::TempDir,
    store: Arc<IndexStore>,
    a: Applier,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (store, a) = open(dir.path());
        Node {
            _dir: dir,
            store,
            a,
        }
    }

    fn apply(&mut self, index: u64, cmd: Command) -> Applied {
        apply(&mut self.a, index, cmd)
    }

    fn record(&self, txn: u64) -> Option<TxnRecord> {
        self.store
            .txn_get(txn)
            .unwrap()
            .map(|b| TxnRecord::decode(&b).unwrap())
    }

    /// `(offset, log index, slot)` of a queue.
    fn queue(&self, q: u32) -> Vec<(u64, u64, u32)> {
        self.store
            .cq_range("t", q, 0, 100)
            .unwrap()
            .into_iter()
            .map(|(o, e)| (o, e.log_index, e.slot))
            .collect()
    }
}

fn state(r: &Applied) -> (TxnState, u32) {
    match r {
        Applied::TxnEnded { state, checks } => (*state, *checks),
        other => panic!("not a transaction answer: {other:?}"),
    }
}

#[test]
fn a_commit_puts_half_messages_at_the_tails_once() {
    let mut n = Node::new();
    let r = n.apply(1, half(100, &[0, 1, 0]));
    assert!(
        matches!(&r, Applied::Produced { placed, .. } if placed == &[(0, None), (1, None), (0, None)]),
        "{r:?}"
    );
    n.apply(2, produce(150, &[0]));
    assert_eq!(n.queue(0), [(0, 2, 0)], "half messages are in no queue");
    assert_eq!(n.store.key_lookup("t", "k", 10).unwrap().len(), 1);
    assert_eq!(n.record(1).unwrap().state, TxnState::Open);

    assert_eq!(
        state(&n.apply(3, end(1, TxnDecision::Commit, 200))),
        (TxnState::Committed, 0)
    );
    assert_eq!(n.queue(0), [(0, 2, 0), (1, 1, 0), (2, 1, 2)]);
    assert_eq!(n.queue(1), [(0, 1, 1)]);
    let rec = n.record(1).unwrap();
    assert_eq!(rec.placed, [(0, 1), (1, 0), (0, 2)]);
    assert_eq!(rec.decided_ms, Some(200));
    assert_eq!(n.store.time_range("t", 200, 201, 10).unwrap().len(), 3);

    // The same decision again answers the same; the other one is a conflict; an unknown
    // check after the decision changes nothing.
    assert_eq!(
        state(&n.apply(4, end(1, TxnDecision::Commit, 300))),
        (TxnState::Committed, 0)
    );
    assert!(matches!(
        n.apply(5, end(1, TxnDecision::Rollback, 300)),
        Applied::Rejected {
            code: RejectCode::Conflict,
            ..
        }
    ));
    assert_eq!(
        state(&n.apply(6, end(1, TxnDecision::Unknown, 300))),
        (TxnState::Committed, 0)
    );
    assert_eq!(n.queue(0).len(), 3, "committed once");
    assert!(matches!(
        n.apply(7, end(99, TxnDecision::Commit, 300)),
        Applied::Rejected {
            code: RejectCode::NotFound,
            ..
        }
    ));
}

#[test]
fn a_rollback_and_unanswered_checks_drop_the_messages() {
    let mut n = Node::new();
    n.apply(1, half(100, &[0]));
    n.apply(2, half(100, &[0]));
    assert_eq!(
        state(&n.apply(3, end(1, TxnDecision::Rollback, 150))),
        (TxnState::RolledBack, 0)
    );
    assert!(matches!(
        n.apply(4, end(1, TxnDecision::Commit, 150)),
        Applied::Rejected {
            code: RejectCode::Conflict,
            ..
        }
    ));
    // Transaction 2: the first check is due at 200; each unanswered one reschedules it,
    // the third (max_checks) rolls it back.
    assert_eq!(n.store.txn_checks_due(199, 10).unwrap(), vec![]);
    assert_eq!(n.store.txn_checks_due(200, 10).unwrap(), vec![(200, 2)]);
    assert_eq!(
        state(&n.apply(5, end(2, TxnDecision::Unknown, 200))),
        (TxnState::Open, 1)
    );
    assert_eq!(n.store.txn_checks_due(10_000, 10).unwrap(), vec![(300, 2)]);
    n.apply(6, end(2, TxnDecision::Unknown, 300));
    assert_eq!(
        state(&n.apply(7, end(2, TxnDecision::Unknown, 400))),
        (TxnState::RolledBack, 3)
    );
    assert_eq!(n.store.txn_checks_due(u64::MAX, 10).unwrap(), vec![]);
    assert_eq!(n.queue(0), []);
    assert_eq!(n.store.cq_bounds("t", 0).unwrap(), None);
}

#[test]
fn retention_keeps_open_and_committed_transactions_and_forgets_decided_ones() {
    let mut n = Node::new();
    n.apply(1, half(100, &[0])); // stays open
    n.apply(2, half(100, &[0])); // committed at 200
    n.apply(3, half(100, &[0])); // rolled back
    n.apply(4, produce(150, &[0]));
    n.apply(5, end(2, TxnDecision::Commit, 200));
    n.apply(6, end(3, TxnDecision::Rollback, 200));
    n.apply(7, Command::Retain { now_ms: 300 });
    assert_eq!(n.a.retention_point(), Some(0), "entry 1 is open");
    n.apply(8, end(1, TxnDecision::Rollback, 400));
    n.apply(9, Command::Retain { now_ms: 400 });
    assert_eq!(
        n.a.retention_point(),
        Some(1),
        "entry 2's message is retained (offset 1, behind entry 4's)"
    );
    assert!(
        n.record(1).is_none(),
        "a decided record below the point goes"
    );
    assert!(n.record(3).is_some());
    // Everything expired: the point passes them all and their records go.
    n.apply(10, Command::Retain { now_ms: 1_300 });
    n.apply(11, Command::Retain { now_ms: 1_300 });
    assert_eq!(n.a.retention_point(), Some(10));
    assert!(n.record(2).is_none() && n.record(3).is_none());
}
