//! duplicate: one sent value stored at two positions. Counted apart (`duplicate-retried`,
//! allowed by at-least-once) when the value was sent again after an `info` send, unless
//! its sends carried an idempotency key (exactly-once produce: a retry must not store it
//! again).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::Anomaly;
use super::model::Model;
use crate::history::Kind;

pub(crate) fn check(m: &Model) -> (Anomaly, Anomaly) {
    let mut positions: BTreeMap<&str, BTreeSet<(&str, u64, u64)>> = BTreeMap::new();
    for (topic, queue, offset, value) in m.reads() {
        positions
            .entry(value)
            .or_default()
            .insert((topic, queue, offset));
    }
    let (mut dup, mut retried) = (Anomaly::default(), Anomaly::default());
    for (value, at) in positions {
        // A value in two topics (moved to a dead-letter topic) is not stored twice in one.
        let topics: BTreeSet<&str> = at.iter().map(|(t, ..)| *t).collect();
        if at.len() < 2 || topics.len() == at.len() {
            continue;
        }
        let sends = m.sends.get(value).map(Vec::as_slice).unwrap_or_default();
        let was_retried = sends.len() > 1
            && sends.iter().any(|s| s.outcome == Kind::Info)
            && !sends.iter().any(|s| s.idempotent);
        let example = json!({
            "value": value,
            "positions": at.iter().map(|(t, q, o)| json!([t, q, o])).collect::<Vec<_>>(),
            "sends": sends.len(),
        });
        if was_retried {
            retried.add(example);
        } else {
            dup.add(example);
        }
    }
    (dup, retried)
}
