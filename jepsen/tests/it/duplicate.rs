use raftmq_jepsen::history::Kind;

use crate::builder::{H, assert_only};

#[test]
fn one_value_at_two_offsets_is_a_duplicate() {
    let mut h = H::default();
    h.send_ok(0, "k", "v0", 0, 0)
        .poll(9, 0, 0, &[(0, "v0"), (1, "v0")], true);
    let r = h.check();
    assert_only(&r, "duplicate", 1);
}

#[test]
fn a_retried_info_send_stored_twice_is_allowed_but_counted() {
    let mut h = H::default();
    h.send(0, "k", "v0", None, Kind::Info)
        .send_ok(0, "k", "v0", 0, 1)
        .poll(9, 0, 0, &[(0, "v0"), (1, "v0")], true);
    let r = h.check();
    assert!(r.valid, "{:#?}", r.anomalies);
    assert_eq!(r.anomalies["duplicate-retried"].count, 1);
}

#[test]
fn with_idempotency_keys_a_retried_send_stored_twice_is_a_duplicate() {
    let mut h = H::default();
    h.send_idempotent(0, "v0", None, Kind::Info)
        .send_idempotent(0, "v0", Some((0, 0)), Kind::Ok)
        .poll(9, 0, 0, &[(0, "v0"), (1, "v0")], true);
    assert_only(&h.check(), "duplicate", 1);
    // Stored once, the retry answering the first write's offset: clean.
    let mut h = H::default();
    h.send_idempotent(0, "v0", None, Kind::Info)
        .send_idempotent(0, "v0", Some((0, 0)), Kind::Ok)
        .poll(9, 0, 0, &[(0, "v0")], true);
    let r = h.check();
    assert!(r.valid, "{:#?}", r.anomalies);
}
