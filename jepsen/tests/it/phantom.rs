use raftmq_jepsen::history::Kind;

use crate::builder::{H, assert_only};

#[test]
fn a_value_never_sent_or_whose_send_failed_is_a_phantom() {
    let mut h = H::default();
    h.send(0, "k", "failed", None, Kind::Fail).poll(
        9,
        0,
        0,
        &[(0, "failed"), (1, "from-nowhere")],
        true,
    );
    let r = h.check();
    assert_only(&r, "phantom", 2);
}
