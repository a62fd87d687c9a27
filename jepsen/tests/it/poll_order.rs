use crate::builder::{H, assert_only};

fn sent() -> H {
    let mut h = H::default();
    for i in 0..4 {
        h.send_ok(0, "k", &format!("v{i}"), 0, i);
    }
    h
}

const ALL: [(u64, &str); 4] = [(0, "v0"), (1, "v1"), (2, "v2"), (3, "v3")];

#[test]
fn a_consumer_reading_backwards_is_nonmonotonic() {
    let mut h = sent();
    h.poll(1, 0, 0, &ALL[..2], false)
        .poll(1, 0, 0, &ALL[..1], false)
        .poll(9, 0, 0, &ALL, true);
    assert_only(&h.check(), "nonmonotonic-poll", 1);
}

#[test]
fn a_gap_in_a_poll_is_a_skip() {
    let mut h = sent();
    h.poll(1, 0, 0, &[(0, "v0"), (2, "v2")], false)
        .poll(9, 0, 0, &ALL, true);
    assert_only(&h.check(), "poll-skip", 1);
}

#[test]
fn a_consumer_jumping_ahead_is_a_skip_unless_it_reset() {
    let mut h = sent();
    h.poll(1, 0, 0, &ALL[..1], false)
        .poll(1, 0, 2, &ALL[2..], false)
        .poll(9, 0, 0, &ALL, true);
    assert_only(&h.check(), "poll-skip", 1);

    let mut h = sent();
    h.poll(1, 0, 0, &ALL[..1], false);
    h.ev(
        1,
        raftmq_jepsen::history::Kind::Invoke,
        "poll",
        serde_json::json!({"topic": "t", "queue": 0, "offset": 2, "reset": true}),
    );
    h.ev(
        1,
        raftmq_jepsen::history::Kind::Ok,
        "poll",
        serde_json::json!({"messages": [[2, "v2"]]}),
    );
    h.poll(9, 0, 0, &ALL, true);
    assert!(h.check().valid);
}
