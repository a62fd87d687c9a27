//! Property test: random sequences of append / sync / truncate / purge / reopen / crash
//! against a simple in-memory model of the log.
//!
//! The model knows which records were acknowledged as durable (synced, or left in place by
//! a durable truncate). After a crash the log must hold a prefix of what was appended that
//! reaches at least the last durable record, with every byte as appended: nothing durable
//! lost, nothing invented.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use raftmq_storage::vfs::{Crash, MemFs};
use raftmq_storage::{CommitLog, CommitLogOptions, LogPos, RecordRef};

#[derive(Clone, Debug)]
enum Op {
    Append { count: u8, new_term: bool },
    Sync,
    Truncate { back: u8 },
    Purge { forward: u8 },
    Reopen,
    Crash(Crash),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..24, any::<bool>()).prop_map(|(count, new_term)| Op::Append { count, new_term }),
        3 => Just(Op::Sync),
        2 => (0u8..30).prop_map(|back| Op::Truncate { back }),
        1 => (0u8..40).prop_map(|forward| Op::Purge { forward }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash(Crash::ProcessOnly)),
        2 => Just(Op::Crash(Crash::DropUnsynced)),
        2 => any::<u64>().prop_map(|seed| Op::Crash(Crash::Torn { seed })),
    ]
}

/// Payload bytes depend on index and term, so a stale record from before a truncation
/// can never pass for its replacement.
fn body(index: u64, term: u64) -> Vec<u8> {
    let len = ((index * 31 + term * 7) % 90) as usize;
    (0..len)
        .map(|i| (index as u8) ^ (term as u8).rotate_left(3) ^ i as u8)
        .collect()
}

#[derive(Debug, Default)]
struct Model {
    records: BTreeMap<u64, u64>,
    purged: Option<LogPos>,
    durable_last: Option<u64>,
    term: u64,
}

impl Model {
    fn next_index(&self) -> u64 {
        match (self.records.keys().next_back(), self.purged) {
            (Some(&last), _) => last + 1,
            (None, Some(p)) => p.index + 1,
            (None, None) => 1,
        }
    }

    fn first_index(&self) -> Option<u64> {
        self.records.keys().next().copied()
    }
}

const DIR: &str = "/raftmq/log";

fn opts() -> CommitLogOptions {
    CommitLogOptions { segment_size: 600 }
}

fn check_matches(log: &CommitLog, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.first_index(), model.first_index());
    prop_assert_eq!(log.last_index(), model.records.keys().next_back().copied());
    prop_assert_eq!(log.last_purged(), model.purged);
    if let (Some(first), Some(last)) = (model.first_index(), log.last_index()) {
        let all = log.read_range(first, last + 1, usize::MAX).unwrap();
        prop_assert_eq!(all.len() as u64, last - first + 1);
        for r in all {
            let term = model.records[&r.index];
            prop_assert_eq!(r.term, term);
            prop_assert_eq!(&r.payload[..], &body(r.index, term)[..]);
        }
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut fs = MemFs::new();
    let dir = Path::new(DIR);
    let mut log = CommitLog::open(Arc::new(fs.clone()), dir, opts())
        .unwrap()
        .0;
    let mut model = Model {
        term: 1,
        ..Model::default()
    };
    for op in ops {
        match op {
            Op::Append { count, new_term } => {
                if new_term {
                    model.term += 1;
                }
                let start = model.next_index();
                let bodies: Vec<Vec<u8>> = (start..start + u64::from(count))
                    .map(|i| body(i, model.term))
                    .collect();
                let term = model.term;
                log.append(bodies.iter().enumerate().map(|(i, p)| RecordRef {
                    index: start + i as u64,
                    term,
                    payload: p,
                }))
                .unwrap();
                for i in 0..u64::from(count) {
                    model.records.insert(start + i, term);
                }
            }
            Op::Sync => {
                log.sync().unwrap();
                model.durable_last = model.records.keys().next_back().copied();
            }
            Op::Truncate { back } => {
                let Some(first) = model.first_index() else {
                    continue;
                };
                let next = model.next_index();
                let from = next.saturating_sub(u64::from(back)).max(first);
                log.truncate(from).unwrap();
                model.records.retain(|&i, _| i < from);
                model.durable_last = model.durable_last.map(|d| d.min(from.saturating_sub(1)));
            }
            Op::Purge { forward } => {
                let base = model
                    .purged
                    .map_or(model.first_index().unwrap_or(1), |p| p.index + 1);
                let upto = base + u64::from(forward);
                let term = model.records.get(&upto).copied().unwrap_or(model.term);
                let pos = LogPos { index: upto, term };
                log.purge(pos).unwrap();
                model.records.retain(|&i, _| i > upto);
                model.purged = Some(pos);
            }
            Op::Reopen => {
                drop(log);
                log = CommitLog::open(Arc::new(fs.clone()), dir, opts())
                    .unwrap()
                    .0;
            }
            Op::Crash(how) => {
                drop(log);
                fs = fs.crash(how);
                log = CommitLog::open(Arc::new(fs.clone()), dir, opts())
                    .unwrap()
                    .0;
                let last = log.last_index();
                let durable_floor = model.durable_last.filter(|d| model.records.contains_key(d));
                if let Some(d) = durable_floor {
                    prop_assert!(
                        last.is_some_and(|l| l >= d),
                        "lost durable record {d}: log ends at {last:?} after {how:?}"
                    );
                }
                if how == Crash::ProcessOnly {
                    prop_assert_eq!(last, model.records.keys().next_back().copied());
                }
                // What survived beyond the durable floor is a prefix of what was appended.
                model.records.retain(|&i, _| last.is_some_and(|l| i <= l));
                model.durable_last = last;
            }
        }
        check_matches(&log, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn commitlog_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}

#[test]
fn crash_right_after_a_roll_keeps_the_synced_segments() {
    run(vec![
        Op::Append {
            count: 20,
            new_term: false,
        },
        Op::Sync,
        Op::Append {
            count: 20,
            new_term: false,
        },
        Op::Crash(Crash::DropUnsynced),
        Op::Append {
            count: 5,
            new_term: true,
        },
        Op::Crash(Crash::Torn { seed: 7 }),
    ])
    .unwrap();
}
