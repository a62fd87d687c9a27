//! Builds histories by hand.

use raftmq_jepsen::checker::{Results, check};
use raftmq_jepsen::history::{Event, Kind, Process};
use serde_json::{Value, json};

#[derive(Default)]
pub(crate) struct H {
    pub(crate) events: Vec<Event>,
}

impl H {
    pub(crate) fn ev(&mut self, p: u64, kind: Kind, f: &str, value: Value) -> &mut Self {
        let index = self.events.len() as u64;
        self.events.push(Event {
            index,
            time_ns: index * 1000,
            process: Process::Client(p),
            kind,
            f: f.into(),
            value,
        });
        self
    }

    pub(crate) fn send(
        &mut self,
        p: u64,
        key: &str,
        value: &str,
        at: Option<(u64, u64)>,
        kind: Kind,
    ) -> &mut Self {
        let v = json!({"topic": "t", "key": key, "value": value});
        self.ev(p, Kind::Invoke, "send", v.clone());
        let done = match at {
            Some((q, o)) => {
                json!({"topic": "t", "key": key, "value": value, "queue": q, "offset": o})
            }
            None => v,
        };
        self.ev(p, kind, "send", done)
    }

    /// A send with its value as its idempotency key (`--idempotent`).
    pub(crate) fn send_idempotent(
        &mut self,
        p: u64,
        value: &str,
        at: Option<(u64, u64)>,
        kind: Kind,
    ) -> &mut Self {
        let v = json!({"topic": "t", "key": "k", "value": value, "idempotency_key": value});
        self.ev(p, Kind::Invoke, "send", v.clone());
        let mut done = v;
        if let Some((q, o)) = at {
            done["queue"] = json!(q);
            done["offset"] = json!(o);
        }
        self.ev(p, kind, "send", done)
    }

    /// An `ok` send scheduled for `deliver_at_ms` (its result has no offset).
    pub(crate) fn send_scheduled(&mut self, p: u64, value: &str, deliver_at_ms: u64) -> &mut Self {
        let v = json!({"topic": "t", "key": "k", "value": value, "deliver_at_ms": deliver_at_ms});
        self.ev(p, Kind::Invoke, "send", v.clone());
        let mut done = v;
        done["queue"] = json!(0);
        done["offset"] = Value::Null;
        self.ev(p, Kind::Ok, "send", done)
    }

    /// A poll of queue 0 whose answer came at `read_ms` on the reader's clock.
    pub(crate) fn poll_at(
        &mut self,
        p: u64,
        from: u64,
        msgs: &[(u64, &str)],
        read_ms: u64,
        is_final: bool,
    ) -> &mut Self {
        let v = json!({"topic": "t", "queue": 0, "offset": from, "final": is_final});
        self.ev(p, Kind::Invoke, "poll", v.clone());
        let mut done = v;
        done["messages"] = json!(msgs.iter().map(|(o, v)| json!([o, v])).collect::<Vec<_>>());
        done["read_ms"] = json!(read_ms);
        self.ev(p, Kind::Ok, "poll", done)
    }

    /// An `ok` transactional send of `value`.
    pub(crate) fn send_txn(&mut self, p: u64, value: &str) -> &mut Self {
        let v = json!({"topic": "t", "key": "k", "value": value, "txn": true});
        self.ev(p, Kind::Invoke, "send", v.clone());
        let mut done = v;
        done["transaction_id"] = json!(format!("g1.{}", self.events.len()));
        self.ev(p, Kind::Ok, "send", done)
    }

    /// A client's commit (`commit`) or rollback of `value`'s transaction, and its outcome.
    pub(crate) fn decide(&mut self, p: u64, value: &str, commit: bool, kind: Kind) -> &mut Self {
        let f = if commit { "txn-commit" } else { "txn-rollback" };
        let v = json!({"value": value});
        self.ev(p, Kind::Invoke, f, v.clone());
        self.ev(p, kind, f, v)
    }

    /// The check-back target answered `answer` about `value`.
    pub(crate) fn checked(&mut self, value: &str, answer: &str) -> &mut Self {
        let v = json!({"value": value});
        self.ev(1_000_000, Kind::Invoke, "check", v.clone());
        self.ev(
            1_000_000,
            Kind::Ok,
            "check",
            json!({"value": value, "answer": answer}),
        )
    }

    /// `value`'s transaction was found in `state` after the run.
    pub(crate) fn final_state(&mut self, value: &str, state: &str) -> &mut Self {
        let v = json!({"value": value, "final": true});
        self.ev(9, Kind::Invoke, "txn-state", v.clone());
        self.ev(
            9,
            Kind::Ok,
            "txn-state",
            json!({"value": value, "state": state}),
        )
    }

    pub(crate) fn send_ok(
        &mut self,
        p: u64,
        key: &str,
        value: &str,
        queue: u64,
        offset: u64,
    ) -> &mut Self {
        self.send(p, key, value, Some((queue, offset)), Kind::Ok)
    }

    pub(crate) fn poll(
        &mut self,
        p: u64,
        queue: u64,
        from: u64,
        msgs: &[(u64, &str)],
        is_final: bool,
    ) -> &mut Self {
        let v = json!({"topic": "t", "queue": queue, "offset": from, "final": is_final});
        self.ev(p, Kind::Invoke, "poll", v);
        let msgs: Vec<Value> = msgs.iter().map(|(o, v)| json!([o, v])).collect();
        self.ev(
            p,
            Kind::Ok,
            "poll",
            json!({"topic": "t", "queue": queue, "offset": from, "messages": msgs}),
        )
    }

    /// The final drain's read of the dead-letter topic `DLQ-g`.
    pub(crate) fn dead_letters(&mut self, p: u64, values: &[&str]) -> &mut Self {
        let v = json!({"topic": "DLQ-g", "queue": 0, "offset": 0, "final": true});
        self.ev(p, Kind::Invoke, "poll", v);
        let msgs: Vec<Value> = values
            .iter()
            .enumerate()
            .map(|(o, v)| json!([o, v]))
            .collect();
        self.ev(
            p,
            Kind::Ok,
            "poll",
            json!({"topic": "DLQ-g", "queue": 0, "offset": 0, "messages": msgs}),
        )
    }

    pub(crate) fn commit(&mut self, p: u64, queue: u64, offset: u64) -> &mut Self {
        let v = json!({"topic": "t", "group": "g", "queue": queue, "offset": offset});
        self.ev(p, Kind::Invoke, "commit", v.clone());
        self.ev(p, Kind::Ok, "commit", v)
    }

    /// A successful receive: `(value, attempt, queue, offset)` per message.
    pub(crate) fn receive(
        &mut self,
        p: u64,
        consumer: &str,
        fifo: bool,
        msgs: &[(&str, u64, u64, u64)],
    ) -> &mut Self {
        let v = json!({"topic": "t", "group": "g", "consumer": consumer, "fifo": fifo});
        self.ev(p, Kind::Invoke, "receive", v);
        let msgs: Vec<Value> = msgs
            .iter()
            .map(|(val, attempt, q, o)| json!([val, attempt, format!("r-{val}-{attempt}"), q, o]))
            .collect();
        self.ev(
            p,
            Kind::Ok,
            "receive",
            json!({"topic": "t", "group": "g", "consumer": consumer, "messages": msgs}),
        )
    }

    /// A successful ack of these values.
    pub(crate) fn ack(&mut self, p: u64, values: &[&str]) -> &mut Self {
        let receipts: Vec<String> = values.iter().map(|v| format!("r-{v}")).collect();
        self.ev(
            p,
            Kind::Invoke,
            "ack",
            json!({"topic": "t", "group": "g", "receipts": receipts}),
        );
        self.ev(
            p,
            Kind::Ok,
            "ack",
            json!({"topic": "t", "group": "g", "receipts": receipts, "acked": values}),
        )
    }

    /// An ack of these deliveries `(value, attempt)` whose outcome is unknown (`info`).
    pub(crate) fn ack_unknown(&mut self, p: u64, delivered: &[(&str, u64)]) -> &mut Self {
        let receipts: Vec<String> = delivered
            .iter()
            .map(|(v, attempt)| format!("r-{v}-{attempt}"))
            .collect();
        let v = json!({"topic": "t", "group": "g", "receipts": receipts});
        self.ev(p, Kind::Invoke, "ack", v.clone());
        let mut info = v;
        info["error"] = json!("outcome unknown");
        self.ev(p, Kind::Info, "ack", info)
    }

    pub(crate) fn nemesis(&mut self, f: &str) -> &mut Self {
        let index = self.events.len() as u64;
        self.events.push(Event {
            index,
            time_ns: index * 1000,
            process: Process::Named("nemesis".into()),
            kind: Kind::Info,
            f: f.into(),
            value: json!({"nodes": [2]}),
        });
        self
    }

    pub(crate) fn check(&self) -> Results {
        check(&self.events)
    }
}

/// Asserts the history is invalid because of `anomaly` (count `n`) and only that.
pub(crate) fn assert_only(r: &Results, anomaly: &str, n: usize) {
    assert!(!r.valid, "expected {anomaly}, got a valid history");
    for (name, a) in &r.anomalies {
        let want = if name == anomaly { n } else { 0 };
        if (name == "duplicate-retried" || name == "duplicate-consumption") && anomaly != name {
            continue;
        }
        assert_eq!(a.count, want, "{name}: {:?}", a.examples);
    }
}
