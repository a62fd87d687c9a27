use crate::builder::{H, assert_only};

#[test]
fn a_scheduled_value_read_before_its_time_is_early() {
    let mut h = H::default();
    h.send_scheduled(0, "v0", 10_000)
        .send_scheduled(0, "v1", 20_000)
        .send_ok(0, "k", "now", 0, 0)
        // v0 read at its time and v1 well before its time; `now` has no time.
        .poll_at(1, 0, &[(0, "now"), (1, "v0"), (2, "v1")], 10_000, false)
        .poll_at(9, 0, &[(0, "now"), (1, "v0"), (2, "v1")], 30_000, true);
    let r = h.check();
    assert_only(&r, "early-read", 1);
    assert_eq!(r.anomalies["early-read"].examples[0]["value"], "v1");
    assert_eq!(r.anomalies["early-read"].examples[0]["early_by_ms"], 10_000);
}

#[test]
fn a_read_within_the_clock_tolerance_is_not_early_and_unread_scheduled_values_are_lost() {
    let tolerance = raftmq_jepsen::checker::EARLY_TOLERANCE_MS;
    let mut h = H::default();
    h.send_scheduled(0, "v0", 10_000)
        .send_scheduled(0, "v1", 10_000)
        .poll_at(1, 0, &[(0, "v0")], 10_000 - tolerance, false)
        .poll_at(9, 0, &[(0, "v0")], 30_000, true);
    let r = h.check();
    assert_only(&r, "lost", 1);
    assert_eq!(r.anomalies["lost"].examples[0]["value"], "v1");
}
