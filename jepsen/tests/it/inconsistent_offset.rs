use crate::builder::{H, assert_only};

#[test]
fn two_values_at_one_offset_are_inconsistent() {
    let mut h = H::default();
    h.send(0, "k", "a", None, raftmq_jepsen::history::Kind::Info)
        .send(1, "k", "b", None, raftmq_jepsen::history::Kind::Info)
        .poll(2, 0, 0, &[(0, "a")], false)
        .poll(9, 0, 0, &[(0, "b"), (1, "a")], true);
    let r = h.check();
    // "a" at two offsets is also a duplicate; the offset disagreement is what we test.
    assert!(!r.valid);
    assert_eq!(r.anomalies["inconsistent-offset"].count, 1);
    assert_eq!(r.anomalies["inconsistent-offset"].examples[0]["offset"], 0);
    let _ = assert_only;
}
