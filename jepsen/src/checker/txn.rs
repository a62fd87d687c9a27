//! Transactions (the txn workload), from the client's decisions, the check-back target's
//! answers and each transaction's final state:
//! - `txn-lost`: committed (a commit request `ok`, or final state `committed`) but not read
//!   by the final drain;
//! - `txn-aborted-read`: read by any poll though rolled back (a rollback `ok`, or final
//!   state `rolled_back`) or never committed (final state `open`);
//! - `txn-flip`: both decisions `ok`, or one `ok` and the other one the final state;
//! - `txn-unjustified-commit`: committed though the client never asked to commit it and the
//!   target never answered `commit`;
//! - `txn-undecided` (allowed, reported): still open after the run and its checks.

use std::collections::HashSet;

use serde_json::json;

use super::Anomaly;
use super::model::Model;
use crate::history::Kind;

/// The four counted anomalies and the reported one, by name.
pub(crate) fn check(m: &Model) -> Vec<(&'static str, Anomaly)> {
    let drained: HashSet<&str> = m
        .polls
        .iter()
        .filter(|p| p.is_final)
        .flat_map(|p| p.messages.iter().map(|(_, v)| v.as_str()))
        .collect();
    let read: HashSet<&str> = m.reads().map(|r| r.3).collect();
    let (mut lost, mut aborted_read, mut flip, mut unjustified, mut undecided) = (
        Anomaly::default(),
        Anomaly::default(),
        Anomaly::default(),
        Anomaly::default(),
        Anomaly::default(),
    );
    for (value, fate) in &m.txns {
        let commit_ok = fate.commits.contains(&Kind::Ok);
        let rollback_ok = fate.rollbacks.contains(&Kind::Ok);
        let state = fate.final_state.as_deref();
        let committed = commit_ok || state == Some("committed");
        let aborted = rollback_ok || state == Some("rolled_back");
        let example = || {
            json!({
                "value": value, "final_state": state, "commits": format!("{:?}", fate.commits),
                "rollbacks": format!("{:?}", fate.rollbacks), "answers": fate.answers,
            })
        };
        if committed && !drained.contains(value.as_str()) {
            lost.add(example());
        }
        if (aborted || state == Some("open")) && read.contains(value.as_str()) {
            aborted_read.add(example());
        }
        if committed && aborted {
            flip.add(example());
        }
        let asked_commit = !fate.commits.is_empty() || fate.answers.iter().any(|a| a == "commit");
        if state == Some("committed") && !asked_commit {
            unjustified.add(example());
        }
        if state == Some("open") {
            undecided.add(example());
        }
    }
    vec![
        ("txn-lost", lost),
        ("txn-aborted-read", aborted_read),
        ("txn-flip", flip),
        ("txn-unjustified-commit", unjustified),
        ("txn-undecided", undecided),
    ]
}
