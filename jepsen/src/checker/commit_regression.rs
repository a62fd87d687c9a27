//! committed-offset-regression: a group's committed offset goes backwards without a reset.

use std::collections::BTreeMap;

use serde_json::json;

use super::Anomaly;
use super::model::{Commit, Model};

pub(crate) fn check(m: &Model) -> Anomaly {
    let mut by: BTreeMap<(&str, &str, u64), Vec<&Commit>> = BTreeMap::new();
    for c in &m.commits {
        by.entry((c.group.as_str(), c.topic.as_str(), c.queue))
            .or_default()
            .push(c);
    }
    let mut a = Anomaly::default();
    for ((group, topic, queue), mut commits) in by {
        commits.sort_by_key(|c| c.complete_index);
        let mut highest: Option<&Commit> = None;
        for c in commits {
            if c.reset {
                highest = Some(c);
                continue;
            }
            if let Some(h) = highest
                && h.complete_index < c.invoke_index
                && c.offset < h.offset
            {
                a.add(json!({"group": group, "topic": topic, "queue": queue, "from": h.offset, "to": c.offset, "at": c.complete_index}));
            }
            if highest.is_none_or(|h| c.offset >= h.offset) {
                highest = Some(c);
            }
        }
    }
    a
}
