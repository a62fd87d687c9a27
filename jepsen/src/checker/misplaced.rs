//! misplaced: a value read, but never at the position its `ok` send returned. (A value
//! read both there and elsewhere is a duplicate, not misplaced.)

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::Anomaly;
use super::model::Model;

pub(crate) fn check(m: &Model) -> Anomaly {
    let mut read_at: BTreeMap<&str, BTreeSet<(&str, u64, u64)>> = BTreeMap::new();
    for (topic, queue, offset, value) in m.reads() {
        read_at
            .entry(value)
            .or_default()
            .insert((topic, queue, offset));
    }
    let mut a = Anomaly::default();
    for (value, positions) in read_at {
        let Some(send) = m.acked(value) else { continue };
        let Some((queue, offset)) = send.placed else {
            continue;
        };
        // Reads in other topics (a dead-letter topic) say nothing about placement.
        if !positions.iter().any(|(t, ..)| *t == send.topic) {
            continue;
        }
        if !positions.contains(&(send.topic.as_str(), queue, offset)) {
            a.add(json!({
                "value": value,
                "acked": [send.topic, queue, offset],
                "read": positions.iter().map(|(t, q, o)| json!([t, q, o])).collect::<Vec<_>>(),
            }));
        }
    }
    a
}
