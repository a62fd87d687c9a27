//! early-read: a scheduled value (sent with `deliver_at_ms`) in a poll whose answer came
//! before that time. The reader's clock and the group's agree on one machine except for how
//! group time is estimated (half a clock round trip, bounded by the 500 ms a clock ask may
//! take), so a read counts as early only by more than [`TOLERANCE_MS`].

use serde_json::json;

use super::Anomaly;
use super::model::Model;

/// How far before its time a read may seem to come without being early.
pub const TOLERANCE_MS: u64 = 250;

pub(crate) fn check(m: &Model) -> Anomaly {
    let mut a = Anomaly::default();
    for p in &m.polls {
        let Some(read_ms) = p.read_ms else { continue };
        for (offset, value) in &p.messages {
            let due = m
                .sends
                .get(value)
                .into_iter()
                .flatten()
                .filter_map(|s| s.deliver_at_ms)
                .min();
            if let Some(due) = due
                && due > read_ms + TOLERANCE_MS
            {
                a.add(json!({
                    "value": value, "queue": p.queue, "offset": offset,
                    "deliver_at_ms": due, "read_ms": read_ms, "early_by_ms": due - read_ms,
                    "poll_index": p.invoke_index,
                }));
            }
        }
    }
    a
}
