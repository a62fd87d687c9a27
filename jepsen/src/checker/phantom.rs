//! phantom: a value is read that was never sent, or whose every send `fail`ed.

use std::collections::BTreeSet;

use serde_json::json;

use super::Anomaly;
use super::model::Model;
use crate::history::Kind;

pub(crate) fn check(m: &Model) -> Anomaly {
    let mut seen = BTreeSet::new();
    let mut a = Anomaly::default();
    let delivered = m.deliveries.iter().map(|d| {
        (
            d.topic.as_str(),
            d.position.map_or(0, |p| p.0),
            d.position.map_or(0, |p| p.1),
            d.value.as_str(),
        )
    });
    for (topic, queue, offset, value) in m.reads().chain(delivered) {
        let sent = m
            .sends
            .get(value)
            .is_some_and(|sends| sends.iter().any(|s| s.outcome != Kind::Fail));
        if !sent && seen.insert(value) {
            let why = if m.sends.contains_key(value) {
                "send failed"
            } else {
                "never sent"
            };
            a.add(json!({"value": value, "topic": topic, "queue": queue, "offset": offset, "why": why}));
        }
    }
    a
}
