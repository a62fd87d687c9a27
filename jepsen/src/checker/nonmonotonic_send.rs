//! nonmonotonic-send: one producer's sequential sends with the same key land in a
//! different order in the queue.

use std::collections::BTreeMap;

use serde_json::json;

use super::Anomaly;
use super::model::{Model, Send};
use crate::history::Process;

/// Sends of one (producer, topic, key), with the value each carried.
type ByProducerKey<'a> = BTreeMap<(&'a Process, &'a str, &'a str), Vec<(&'a str, &'a Send)>>;

pub(crate) fn check(m: &Model) -> Anomaly {
    let mut by: ByProducerKey<'_> = BTreeMap::new();
    for (value, sends) in &m.sends {
        for s in sends {
            if let (Some(key), Some(_)) = (&s.key, s.placed) {
                by.entry((&s.process, s.topic.as_str(), key.as_str()))
                    .or_default()
                    .push((value.as_str(), s));
            }
        }
    }
    let mut a = Anomaly::default();
    for ((process, topic, key), mut sends) in by {
        sends.sort_by_key(|(_, s)| s.complete_index);
        for w in sends.windows(2) {
            let ((v1, s1), (v2, s2)) = (w[0], w[1]);
            // Only sends that did not overlap have an order to keep.
            if s2.invoke_index < s1.complete_index {
                continue;
            }
            let (p1, p2) = (s1.placed.expect("ok"), s2.placed.expect("ok"));
            if p1.0 != p2.0 || p2.1 <= p1.1 {
                a.add(json!({
                    "process": process, "topic": topic, "key": key,
                    "first": {"value": v1, "queue": p1.0, "offset": p1.1},
                    "then": {"value": v2, "queue": p2.0, "offset": p2.1},
                }));
            }
        }
    }
    a
}
