use crate::builder::{H, assert_only};

#[test]
fn an_acknowledged_value_missing_from_the_drain_is_lost() {
    let mut h = H::default();
    h.send_ok(0, "k", "v0", 0, 0)
        .send_ok(0, "k", "v1", 0, 1)
        .poll(1, 0, 0, &[(0, "v0"), (1, "v1")], false)
        .poll(9, 0, 0, &[(0, "v0")], true);
    let r = h.check();
    assert_only(&r, "lost", 1);
    assert_eq!(r.anomalies["lost"].examples[0]["value"], "v1");
}
