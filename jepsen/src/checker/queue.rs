//! Consumer-group anomalies: double-delivery (an acked message delivered again, or one
//! lease handed to two receives) and fifo-violation (a FIFO queue's next message of a key
//! delivered before the earlier one was acked, other than after it in the same receive: a
//! receive that returns n and n+1 in that order hands out one ordered run, and a message
//! dead-lettered after its last delivery no longer holds its queue); plus the allowed
//! duplicate consumption (redeliveries after a lease expired).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::json;

use super::Anomaly;
use super::model::{Delivery, Model};

/// For each value, the earliest history index at which an ack of it completed or (with
/// `possibly`) was invoked. `possibly` also counts acks whose outcome is unknown: they may
/// have taken effect.
fn acked_at(m: &Model, possibly: bool) -> HashMap<&str, u64> {
    let mut at: HashMap<&str, u64> = HashMap::new();
    for a in m.acks.iter().filter(|a| a.certain || possibly) {
        let i = if possibly {
            a.invoke_index
        } else {
            a.complete_index
        };
        for v in &a.values {
            let e = at.entry(v.as_str()).or_insert(i);
            *e = (*e).min(i);
        }
    }
    at
}

pub(crate) fn double_delivery(m: &Model) -> Anomaly {
    // Certainly acked before the receive began: an ack that succeeded had completed.
    let acked = acked_at(m, false);
    let mut a = Anomaly::default();
    for d in &m.deliveries {
        if let Some(&at) = acked.get(d.value.as_str())
            && d.invoke_index > at
        {
            a.add(json!({"what": "delivered after it was acked", "value": d.value, "consumer": d.consumer, "attempt": d.attempt, "acked_at": at, "received_at": d.invoke_index}));
        }
    }
    let mut leases: HashMap<(&str, u64), &Delivery> = HashMap::new();
    for d in &m.deliveries {
        if let Some(other) = leases.insert((d.value.as_str(), d.attempt), d)
            && other.invoke_index != d.invoke_index
        {
            a.add(json!({"what": "one lease delivered twice", "value": d.value, "attempt": d.attempt, "consumers": [other.consumer, d.consumer]}));
        }
    }
    a
}

pub(crate) fn fifo_violation(m: &Model) -> Anomaly {
    // The earlier message may count as acked if its ack began before the receive ended
    // (a long-polling receive can lease after an ack that overlapped it), and if its ack's
    // outcome is unknown (the node may have applied it before it went down).
    let acked = acked_at(m, true);
    let key_of: HashMap<&str, Option<&str>> = m
        .sends
        .iter()
        .filter_map(|(v, sends)| Some((v.as_str(), sends.first()?.key.as_deref())))
        .collect();
    // (topic, queue, key) -> offset -> value, from what receives revealed.
    let mut order: BTreeMap<(&str, u64, &str), BTreeMap<u64, &str>> = BTreeMap::new();
    for d in m.deliveries.iter().filter(|d| d.fifo) {
        let (Some((q, o)), Some(Some(k))) = (d.position, key_of.get(d.value.as_str())) else {
            continue;
        };
        order
            .entry((d.topic.as_str(), q, k))
            .or_default()
            .insert(o, d.value.as_str());
    }
    // (receive, value) -> where it came in the receive's answer.
    let place: HashMap<(u64, &str), usize> = m
        .deliveries
        .iter()
        .enumerate()
        .filter(|(_, d)| d.fifo)
        .map(|(i, d)| ((d.invoke_index, d.value.as_str()), i))
        .collect();
    // Dead-lettered values (the final drain reads the dead-letter topic), and where each
    // value's last delivery ended: a dead-lettered message is settled for the queue once
    // it is delivered no more (its last lease expired at its last attempt).
    let dead: HashSet<&str> = m
        .polls
        .iter()
        .filter(|p| p.is_final && p.topic.starts_with("DLQ-"))
        .flat_map(|p| p.messages.iter().map(|(_, v)| v.as_str()))
        .collect();
    let mut last_delivered: HashMap<&str, u64> = HashMap::new();
    for d in m.deliveries.iter().filter(|d| d.fifo) {
        let at = last_delivered.entry(d.value.as_str()).or_insert(0);
        *at = (*at).max(d.complete_index);
    }
    let mut a = Anomaly::default();
    let mut reported = HashSet::new();
    for (i, d) in m.deliveries.iter().enumerate().filter(|(_, d)| d.fifo) {
        let (Some((q, o)), Some(Some(k))) = (d.position, key_of.get(d.value.as_str())) else {
            continue;
        };
        let Some(prev) = order
            .get(&(d.topic.as_str(), q, *k))
            .and_then(|offsets| offsets.range(..o).next_back())
        else {
            continue;
        };
        let earlier_done = acked.get(prev.1).is_some_and(|&at| at < d.complete_index);
        let earlier_in_same_run = place.get(&(d.invoke_index, prev.1)).is_some_and(|&j| j < i);
        let earlier_dead = dead.contains(prev.1)
            && last_delivered
                .get(prev.1)
                .is_some_and(|&at| at < d.invoke_index);
        if !earlier_done
            && !earlier_in_same_run
            && !earlier_dead
            && reported.insert((d.value.as_str(), d.attempt))
        {
            a.add(json!({"value": d.value, "offset": o, "key": k, "earlier": prev.1, "earlier_offset": prev.0, "received_at": d.invoke_index, "consumer": d.consumer}));
        }
    }
    a
}

/// Redeliveries (attempt > 1): allowed, reported with their rate.
pub(crate) fn duplicate_consumption(m: &Model) -> (Anomaly, f64) {
    let mut a = Anomaly::default();
    for d in m.deliveries.iter().filter(|d| d.attempt > 1) {
        a.add(json!({"value": d.value, "attempt": d.attempt, "consumer": d.consumer}));
    }
    let rate = if m.deliveries.is_empty() {
        0.0
    } else {
        a.count as f64 / m.deliveries.len() as f64
    };
    (a, rate)
}
