//! inconsistent-offset: two reads return different values for the same (queue, offset).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::Anomaly;
use super::model::Model;

pub(crate) fn check(m: &Model) -> Anomaly {
    let mut at: BTreeMap<(&str, u64, u64), BTreeSet<&str>> = BTreeMap::new();
    for (topic, queue, offset, value) in m.reads() {
        at.entry((topic, queue, offset)).or_default().insert(value);
    }
    let mut a = Anomaly::default();
    for ((topic, queue, offset), values) in at {
        if values.len() > 1 {
            a.add(json!({"topic": topic, "queue": queue, "offset": offset, "values": values}));
        }
    }
    a
}
