use raftmq_jepsen::history::Kind;

use crate::builder::{H, assert_only};

/// Committed by the client, by a check, and rolled back: what the txn workload does.
fn clean() -> H {
    let mut h = H::default();
    h.send_txn(0, "v0")
        .decide(0, "v0", true, Kind::Ok)
        .send_txn(0, "v1")
        .decide(0, "v1", false, Kind::Ok)
        .send_txn(0, "v2")
        .checked("v2", "unknown")
        .checked("v2", "commit")
        .send_txn(0, "v3")
        .checked("v3", "unknown")
        .final_state("v0", "committed")
        .final_state("v1", "rolled_back")
        .final_state("v2", "committed")
        .final_state("v3", "rolled_back");
    h
}

#[test]
fn committed_transactions_read_once_and_rolled_back_ones_never_are_valid() {
    let mut h = clean();
    h.poll(9, 0, 0, &[(0, "v0"), (1, "v2")], true);
    let r = h.check();
    assert!(r.valid, "{:?}", r.anomalies);
    assert_eq!(r.stats["transactions"], 4);
    assert_eq!(r.stats["transactions_committed"], 2);
}

#[test]
fn a_committed_transaction_missing_from_the_drain_is_lost() {
    let mut h = clean();
    h.poll(9, 0, 0, &[(0, "v0")], true);
    assert_only(&h.check(), "txn-lost", 1);
}

#[test]
fn a_rolled_back_transaction_read_is_an_aborted_read() {
    let mut h = clean();
    h.poll(1, 0, 0, &[(0, "v0"), (1, "v2"), (2, "v1")], false)
        .poll(9, 0, 0, &[(0, "v0"), (1, "v2"), (2, "v1")], true);
    assert_only(&h.check(), "txn-aborted-read", 1);
}

#[test]
fn both_decisions_taking_effect_is_a_flip() {
    let mut h = clean();
    h.decide(0, "v1", true, Kind::Ok)
        .poll(9, 0, 0, &[(0, "v0"), (1, "v2")], true);
    let r = h.check();
    assert_eq!(r.anomalies["txn-flip"].count, 1);
    // A committed v1 that the drain did not read is lost too.
    assert_eq!(r.anomalies["txn-lost"].count, 1);
}

#[test]
fn a_commit_nobody_asked_for_is_unjustified() {
    let mut h = clean();
    h.final_state("v3", "committed")
        .poll(9, 0, 0, &[(0, "v0"), (1, "v2"), (2, "v3")], true);
    assert_only(&h.check(), "txn-unjustified-commit", 1);
}
