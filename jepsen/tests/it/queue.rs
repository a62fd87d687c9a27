use crate::builder::{H, assert_only};

fn sent() -> H {
    let mut h = H::default();
    h.send_ok(0, "k", "a", 0, 0).send_ok(0, "k", "b", 0, 1);
    h
}

#[test]
fn a_clean_queue_history_is_valid_and_counts_redeliveries() {
    let mut h = sent();
    h.receive(1, "c1", true, &[("a", 1, 0, 0)])
        // c1 never acks; the lease expires and c2 gets it again.
        .receive(2, "c2", true, &[("a", 2, 0, 0)])
        .ack(2, &["a"])
        .receive(2, "c2", true, &[("b", 1, 0, 1)])
        .ack(2, &["b"]);
    let r = h.check();
    assert!(r.valid, "{:#?}", r.anomalies);
    assert_eq!(r.anomalies["duplicate-consumption"].count, 1);
    assert_eq!(r.stats["duplicate_consumption_rate"], 1.0 / 3.0);
}

#[test]
fn an_acked_message_delivered_again_is_a_double_delivery() {
    let mut h = sent();
    h.receive(1, "c1", false, &[("a", 1, 0, 0), ("b", 1, 0, 1)])
        .ack(1, &["a", "b"])
        .receive(2, "c2", false, &[("a", 2, 0, 0)]);
    assert_only(&h.check(), "double-delivery", 1);
}

#[test]
fn one_lease_in_two_hands_is_a_double_delivery() {
    let mut h = sent();
    h.receive(1, "c1", false, &[("a", 1, 0, 0)])
        .receive(2, "c2", false, &[("a", 1, 0, 0), ("b", 1, 0, 1)])
        .ack(2, &["a", "b"]);
    assert_only(&h.check(), "double-delivery", 1);
}

#[test]
fn the_next_message_of_a_key_before_the_earlier_is_acked_is_a_fifo_violation() {
    let mut h = sent();
    h.receive(1, "c1", true, &[("a", 1, 0, 0)])
        .receive(2, "c2", true, &[("b", 1, 0, 1)])
        .ack(1, &["a"])
        .ack(2, &["b"]);
    assert_only(&h.check(), "fifo-violation", 1);
    // Without FIFO the same history is fine.
    let mut h = sent();
    h.receive(1, "c1", false, &[("a", 1, 0, 0)])
        .receive(2, "c2", false, &[("b", 1, 0, 1)])
        .ack(1, &["a"])
        .ack(2, &["b"]);
    assert!(h.check().valid);
}

#[test]
fn an_ack_whose_outcome_is_unknown_may_have_settled_the_earlier_fifo_message() {
    // The node went down with the ack in flight; it took effect, and the queue moved on
    // (raftmq-sim found the checker calling this a fifo-violation).
    let mut h = sent();
    h.receive(1, "c1", true, &[("a", 1, 0, 0)])
        .ack_unknown(1, &[("a", 1)])
        .receive(2, "c2", true, &[("b", 1, 0, 1)])
        .ack(2, &["b"]);
    let r = h.check();
    assert!(r.valid, "{:#?}", r.anomalies);
    // It is not a certain ack: the message coming back is a redelivery, not a
    // double-delivery.
    let mut h = sent();
    h.receive(1, "c1", false, &[("a", 1, 0, 0)])
        .ack_unknown(1, &[("a", 1)])
        .receive(2, "c2", false, &[("a", 2, 0, 0), ("b", 1, 0, 1)])
        .ack(2, &["a", "b"]);
    let r = h.check();
    assert!(r.valid, "{:#?}", r.anomalies);
    assert_eq!(r.anomalies["duplicate-consumption"].count, 1);
}

#[test]
fn a_fifo_run_in_one_receive_is_in_order_or_a_violation() {
    // n and n+1 in one answer, in order: one run, valid; and after the run expires, both
    // come back together.
    let mut h = sent();
    h.receive(1, "c1", true, &[("a", 1, 0, 0), ("b", 1, 0, 1)])
        .receive(2, "c2", true, &[("a", 2, 0, 0), ("b", 2, 0, 1)])
        .ack(2, &["a", "b"]);
    let r = h.check();
    assert!(r.valid, "{:#?}", r.anomalies);
    // n+1 before n in one answer.
    let mut h = sent();
    h.receive(1, "c1", true, &[("b", 1, 0, 1), ("a", 1, 0, 0)])
        .ack(1, &["a", "b"]);
    assert_only(&h.check(), "fifo-violation", 1);
    // n+1 in a later receive, with n of an earlier run still unacked.
    let mut h = sent();
    h.receive(1, "c1", true, &[("a", 1, 0, 0)])
        .receive(1, "c1", true, &[("b", 1, 0, 1)])
        .ack(1, &["a", "b"]);
    assert_only(&h.check(), "fifo-violation", 1);
}

#[test]
fn a_dead_lettered_message_holds_its_fifo_queue_only_while_it_is_delivered() {
    // "a" is dead-lettered after its last delivery; "b" comes after: valid.
    let mut h = sent();
    h.receive(1, "c1", true, &[("a", 16, 0, 0)])
        .receive(2, "c2", true, &[("b", 1, 0, 1)])
        .ack(2, &["b"])
        .dead_letters(3, &["a"]);
    let r = h.check();
    assert!(r.valid, "{:#?}", r.anomalies);
    // "b" delivered while "a" was still being delivered (and only later dead-lettered).
    let mut h = sent();
    h.receive(1, "c1", true, &[("a", 15, 0, 0)])
        .receive(2, "c2", true, &[("b", 1, 0, 1)])
        .receive(1, "c1", true, &[("a", 16, 0, 0)])
        .ack(2, &["b"])
        .dead_letters(3, &["a"]);
    assert_only(&h.check(), "fifo-violation", 1);
}

#[test]
fn a_sent_message_never_delivered_is_lost() {
    let mut h = sent();
    h.receive(1, "c1", false, &[("a", 1, 0, 0)]).ack(1, &["a"]);
    assert_only(&h.check(), "lost", 1);
}
