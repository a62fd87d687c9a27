use crate::builder::{H, assert_only};

#[test]
fn a_committed_offset_going_back_is_a_regression() {
    let mut h = H::default();
    h.commit(1, 0, 5)
        .commit(1, 0, 7)
        .commit(1, 0, 6)
        .commit(1, 1, 2);
    assert_only(&h.check(), "committed-offset-regression", 1);
}
