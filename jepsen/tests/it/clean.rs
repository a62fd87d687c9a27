use raftmq_jepsen::history::Kind;

use crate::builder::H;

#[test]
fn a_clean_history_is_valid() {
    let mut h = H::default();
    h.send_ok(0, "k", "v0", 0, 0)
        .send_ok(0, "k", "v1", 0, 1)
        .send(1, "j", "v2", None, Kind::Fail)
        .send(1, "j", "v3", None, Kind::Info)
        .nemesis("kill")
        .poll(2, 0, 0, &[(0, "v0")], false)
        .poll(2, 0, 1, &[(1, "v1")], false)
        .commit(2, 0, 2)
        .poll(2, 0, 2, &[], false)
        .poll(9, 0, 0, &[(0, "v0"), (1, "v1")], true);
    let r = h.check();
    assert!(r.valid, "{:#?}", r.anomalies);
    assert_eq!(r.stats["send"]["ok"], 2);
    assert_eq!(r.stats["send"]["info"], 1);
    // An info send that was never read is not lost: its outcome was unknown.
}

#[test]
fn an_info_send_that_did_happen_is_fine() {
    let mut h = H::default();
    h.send(0, "k", "v0", None, Kind::Info)
        .poll(9, 0, 0, &[(0, "v0")], true);
    assert!(h.check().valid);
}
