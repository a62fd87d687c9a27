use crate::builder::{H, assert_only};

#[test]
fn a_value_read_away_from_its_acknowledged_offset_is_misplaced() {
    let mut h = H::default();
    h.send_ok(0, "k", "v0", 0, 3)
        .poll(9, 0, 0, &[(0, "v0")], true);
    let r = h.check();
    assert_only(&r, "misplaced", 1);
    assert_eq!(r.anomalies["misplaced"].examples[0]["acked"][2], 3);
}
