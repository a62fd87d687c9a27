//! The checker: a pure function from a history to a verdict, one module per anomaly
//! (definitions in `shared/DESIGN.md`, after Jepsen's queue and Kafka checkers).
//!
//! Must never: do I/O, or call a history valid when any counted anomaly is non-zero.

mod commit_regression;
mod duplicate;
mod early;
mod inconsistent_offset;
mod lost;
mod misplaced;
mod model;
mod nonmonotonic_send;
mod phantom;
mod poll_order;
mod queue;
mod txn;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::history::{Event, Kind};
pub use early::TOLERANCE_MS as EARLY_TOLERANCE_MS;
use model::Model;

/// At most this many examples per anomaly.
pub const MAX_EXAMPLES: usize = 10;

/// One anomaly's count and examples.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Anomaly {
    /// How many times it occurred.
    pub count: usize,
    /// Up to [`MAX_EXAMPLES`] occurrences.
    pub examples: Vec<Value>,
}

impl Anomaly {
    pub(crate) fn add(&mut self, example: Value) {
        self.count += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(example);
        }
    }
}

/// Anomalies that make a history invalid.
pub const COUNTED: [&str; 16] = [
    "lost",
    "phantom",
    "duplicate",
    "inconsistent-offset",
    "misplaced",
    "nonmonotonic-send",
    "nonmonotonic-poll",
    "poll-skip",
    "committed-offset-regression",
    "double-delivery",
    "fifo-violation",
    "early-read",
    "txn-lost",
    "txn-aborted-read",
    "txn-flip",
    "txn-unjustified-commit",
];

/// The verdict on a history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Results {
    /// True when every counted anomaly is zero.
    pub valid: bool,
    /// Every anomaly checked, by name (including allowed ones such as `duplicate-retried`).
    pub anomalies: BTreeMap<String, Anomaly>,
    /// Operation counts.
    pub stats: Value,
}

/// Checks a history.
pub fn check(history: &[Event]) -> Results {
    let m = Model::build(history);
    let mut anomalies = BTreeMap::new();
    anomalies.insert("lost".to_owned(), lost::check(&m));
    anomalies.insert("phantom".to_owned(), phantom::check(&m));
    let (dup, dup_retried) = duplicate::check(&m);
    anomalies.insert("duplicate".to_owned(), dup);
    anomalies.insert("duplicate-retried".to_owned(), dup_retried);
    anomalies.insert(
        "inconsistent-offset".to_owned(),
        inconsistent_offset::check(&m),
    );
    anomalies.insert("misplaced".to_owned(), misplaced::check(&m));
    anomalies.insert("nonmonotonic-send".to_owned(), nonmonotonic_send::check(&m));
    let (nonmono, skip) = poll_order::check(&m);
    anomalies.insert("nonmonotonic-poll".to_owned(), nonmono);
    anomalies.insert("poll-skip".to_owned(), skip);
    anomalies.insert(
        "committed-offset-regression".to_owned(),
        commit_regression::check(&m),
    );
    anomalies.insert("double-delivery".to_owned(), queue::double_delivery(&m));
    anomalies.insert("fifo-violation".to_owned(), queue::fifo_violation(&m));
    anomalies.insert("early-read".to_owned(), early::check(&m));
    for (name, a) in txn::check(&m) {
        anomalies.insert(name.to_owned(), a);
    }
    let (redelivered, redelivery_rate) = queue::duplicate_consumption(&m);
    anomalies.insert("duplicate-consumption".to_owned(), redelivered);
    let valid = COUNTED
        .iter()
        .all(|k| anomalies.get(*k).is_none_or(|a| a.count == 0));
    let count = |f: &str, kind: Kind| {
        history
            .iter()
            .filter(|e| {
                e.f == f
                    && e.kind == kind
                    && e.process != crate::history::Process::Named("nemesis".into())
            })
            .count()
    };
    let stats = json!({
        "send": {"ok": count("send", Kind::Ok), "fail": count("send", Kind::Fail), "info": count("send", Kind::Info)},
        "poll": {"ok": count("poll", Kind::Ok), "fail": count("poll", Kind::Fail), "info": count("poll", Kind::Info)},
        "commit": {"ok": count("commit", Kind::Ok), "fail": count("commit", Kind::Fail), "info": count("commit", Kind::Info)},
        "receive": {"ok": count("receive", Kind::Ok), "fail": count("receive", Kind::Fail), "info": count("receive", Kind::Info)},
        "ack": {"ok": count("ack", Kind::Ok), "fail": count("ack", Kind::Fail), "info": count("ack", Kind::Info)},
        "deliveries": m.deliveries.len(),
        "scheduled_sends": m.sends.values().flatten().filter(|s| s.deliver_at_ms.is_some()).count(),
        "transactions": m.txns.len(),
        "transactions_committed": m.txns.values().filter(|t| t.final_state.as_deref() == Some("committed")).count(),
        "transactions_checked": m.txns.values().filter(|t| !t.answers.is_empty()).count(),
        "duplicate_consumption_rate": redelivery_rate,
        "final_polls": m.polls.iter().filter(|p| p.is_final).count(),
        "values_read": m.reads().map(|r| r.3).collect::<std::collections::HashSet<_>>().len(),
        "unfinished": m.unfinished,
    });
    Results {
        valid,
        anomalies,
        stats,
    }
}
