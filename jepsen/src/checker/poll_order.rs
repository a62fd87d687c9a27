//! nonmonotonic-poll and poll-skip: one consumer's successive reads of a queue go
//! backwards, or skip offsets (without an offset reset).

use std::collections::BTreeMap;

use serde_json::json;

use super::Anomaly;
use super::model::{Model, Poll};
use crate::history::Process;

pub(crate) fn check(m: &Model) -> (Anomaly, Anomaly) {
    let mut by: BTreeMap<(&Process, &str, u64), Vec<&Poll>> = BTreeMap::new();
    for p in &m.polls {
        by.entry((&p.process, p.topic.as_str(), p.queue))
            .or_default()
            .push(p);
    }
    let (mut back, mut skip) = (Anomaly::default(), Anomaly::default());
    for ((process, topic, queue), mut polls) in by {
        polls.sort_by_key(|p| p.invoke_index);
        // The offset after the last message this consumer read from the queue.
        let mut expected: Option<u64> = None;
        for p in polls {
            if p.reset {
                expected = None;
            }
            let ex = |what: &str, detail: serde_json::Value| json!({"process": process, "topic": topic, "queue": queue, "poll_at": p.invoke_index, "what": what, "detail": detail});
            if let Some(e) = expected {
                if p.from < e {
                    back.add(ex(
                        "asked below what it already read",
                        json!({"asked": p.from, "next": e}),
                    ));
                } else if p.from > e {
                    skip.add(ex(
                        "asked past what it read",
                        json!({"asked": p.from, "next": e}),
                    ));
                }
            }
            if let Some(&(first, _)) = p.messages.first()
                && first != p.from
            {
                let detail = json!({"asked": p.from, "first": first});
                if first < p.from {
                    back.add(ex("returned offsets below the one asked for", detail));
                } else {
                    skip.add(ex(
                        "first offset returned is past the one asked for",
                        detail,
                    ));
                }
            }
            for w in p.messages.windows(2) {
                let (a, b) = (w[0].0, w[1].0);
                if b <= a {
                    back.add(ex("offsets go backwards within a poll", json!([a, b])));
                } else if b != a + 1 {
                    skip.add(ex("gap within a poll", json!([a, b])));
                }
            }
            if let Some(&(last, _)) = p.messages.last() {
                expected = Some(last + 1);
            }
        }
    }
    (back, skip)
}
