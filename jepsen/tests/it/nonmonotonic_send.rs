use crate::builder::{H, assert_only};

#[test]
fn sequential_sends_of_a_key_landing_out_of_order_are_nonmonotonic() {
    let mut h = H::default();
    h.send_ok(0, "k", "first", 0, 1)
        .send_ok(0, "k", "second", 0, 0)
        .poll(9, 0, 0, &[(0, "second"), (1, "first")], true);
    let r = h.check();
    assert_only(&r, "nonmonotonic-send", 1);
}

#[test]
fn different_keys_or_producers_need_no_order() {
    let mut h = H::default();
    h.send_ok(0, "k", "first", 0, 1)
        .send_ok(0, "j", "second", 0, 0)
        .send_ok(1, "k", "third", 1, 0)
        .poll(9, 0, 0, &[(0, "second"), (1, "first")], true)
        .poll(9, 1, 0, &[(0, "third")], true);
    assert!(h.check().valid);
}
