//! phantom: a value is read that was never sent, or whose every send `fail`ed.

use std::collections::BTreeSet;

use serde_json::json;

use super::Anomaly;
use super::model::Model;
use crate::history::Kind;

pub(crate) fn check(m: &Model) -> Anomaly {
    let mut seen = BTreeSet::new();
    let mut a = Anomaly::default();
    for (topic, queue, offset, value) in m.reads() {
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
