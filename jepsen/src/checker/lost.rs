//! lost: a value whose send was `ok` is never read by the final drain (for consumer
//! groups: never delivered by a receive, and not in the dead-letter topic).

use std::collections::HashSet;

use serde_json::json;

use super::Anomaly;
use super::model::Model;

pub(crate) fn check(m: &Model) -> Anomaly {
    let drained: HashSet<&str> = m
        .polls
        .iter()
        .filter(|p| p.is_final)
        .flat_map(|p| p.messages.iter().map(|(_, v)| v.as_str()))
        .chain(m.deliveries.iter().map(|d| d.value.as_str()))
        .collect();
    let mut a = Anomaly::default();
    for value in m.sends.keys() {
        if let Some(send) = m.acked(value)
            && !drained.contains(value.as_str())
        {
            let (queue, offset) = send.placed.unwrap_or_default();
            a.add(json!({"value": value, "queue": queue, "offset": offset, "acked_at": send.complete_index}));
        }
    }
    a
}
