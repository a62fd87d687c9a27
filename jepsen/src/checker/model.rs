//! The history digested for the checkers: operations paired with their completions.
//!
//! Must never: interpret an `info` completion as success or failure.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::history::{Event, Kind, Process};

/// One attempt to send a value.
#[derive(Clone, Debug)]
pub(crate) struct Send {
    pub(crate) process: Process,
    pub(crate) topic: String,
    pub(crate) key: Option<String>,
    pub(crate) outcome: Kind,
    /// `(queue, offset)` from an `ok` completion.
    pub(crate) placed: Option<(u64, u64)>,
    /// Sent with an idempotency key (a retry must not store it again).
    pub(crate) idempotent: bool,
    /// Not to be readable before this wall-clock time (a scheduled send).
    pub(crate) deliver_at_ms: Option<u64>,
    /// A transaction's half message: readable only once committed (see `txns`).
    pub(crate) txn: bool,
    pub(crate) invoke_index: u64,
    pub(crate) complete_index: u64,
}

/// What the history says about one transaction (the txn workload).
#[derive(Clone, Debug, Default)]
pub(crate) struct TxnFate {
    /// Outcomes of the client's commit requests.
    pub(crate) commits: Vec<Kind>,
    /// Outcomes of the client's rollback requests.
    pub(crate) rollbacks: Vec<Kind>,
    /// What the check-back target answered, each time it was asked.
    pub(crate) answers: Vec<String>,
    /// Its state as read after the run.
    pub(crate) final_state: Option<String>,
}

/// A successful poll.
#[derive(Clone, Debug)]
pub(crate) struct Poll {
    pub(crate) process: Process,
    pub(crate) topic: String,
    pub(crate) queue: u64,
    /// The offset it asked from.
    pub(crate) from: u64,
    pub(crate) is_final: bool,
    pub(crate) reset: bool,
    pub(crate) messages: Vec<(u64, String)>,
    /// The reader's wall clock when the answer came (histories that record it).
    pub(crate) read_ms: Option<u64>,
    pub(crate) invoke_index: u64,
}

/// A completed commit.
#[derive(Clone, Debug)]
pub(crate) struct Commit {
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) queue: u64,
    pub(crate) offset: u64,
    pub(crate) reset: bool,
    pub(crate) invoke_index: u64,
    pub(crate) complete_index: u64,
}

/// One message handed out by a successful receive.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    pub(crate) consumer: String,
    pub(crate) topic: String,
    pub(crate) value: String,
    pub(crate) attempt: u64,
    pub(crate) position: Option<(u64, u64)>,
    pub(crate) fifo: bool,
    pub(crate) invoke_index: u64,
    pub(crate) complete_index: u64,
}

/// An ack that succeeded (`certain`), or whose outcome is unknown and may have taken
/// effect: the values it acknowledged (or may have).
#[derive(Clone, Debug)]
pub(crate) struct Ack {
    pub(crate) values: Vec<String>,
    pub(crate) certain: bool,
    pub(crate) invoke_index: u64,
    pub(crate) complete_index: u64,
}

/// Everything the checkers look at.
#[derive(Debug, Default)]
pub(crate) struct Model {
    /// Value -> every attempt to send it, in invoke order.
    pub(crate) sends: BTreeMap<String, Vec<Send>>,
    pub(crate) polls: Vec<Poll>,
    pub(crate) commits: Vec<Commit>,
    pub(crate) deliveries: Vec<Delivery>,
    pub(crate) acks: Vec<Ack>,
    /// What happened to each transaction, by value.
    pub(crate) txns: BTreeMap<String, TxnFate>,
    /// Operations invoked but never completed (the process crashed or the run ended).
    pub(crate) unfinished: usize,
    /// Receipt -> the value it was handed out with (to read acks whose outcome is unknown).
    pub(crate) receipts: HashMap<String, String>,
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k)?.as_str().map(str::to_owned)
}

fn u(v: &Value, k: &str) -> Option<u64> {
    v.get(k)?.as_u64()
}

fn flag(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}

impl Model {
    pub(crate) fn build(history: &[Event]) -> Model {
        let mut m = Model::default();
        let mut pending: HashMap<&Process, &Event> = HashMap::new();
        for e in history {
            if e.process == Process::Named("nemesis".into()) {
                continue;
            }
            if e.kind == Kind::Invoke {
                if pending.insert(&e.process, e).is_some() {
                    // A process invoked again without completing: count the lost one.
                    m.unfinished += 1;
                }
                continue;
            }
            let Some(inv) = pending.remove(&e.process) else {
                continue;
            };
            m.add(inv, e);
        }
        m.unfinished += pending.len();
        m
    }

    fn add(&mut self, inv: &Event, done: &Event) {
        let iv = &inv.value;
        let dv = &done.value;
        match inv.f.as_str() {
            "send" => {
                let Some(value) = s(iv, "value") else { return };
                let placed = (done.kind == Kind::Ok)
                    .then(|| Some((u(dv, "queue")?, u(dv, "offset")?)))
                    .flatten();
                self.sends.entry(value).or_default().push(Send {
                    process: inv.process.clone(),
                    topic: s(iv, "topic").unwrap_or_default(),
                    key: s(iv, "key"),
                    outcome: done.kind,
                    placed,
                    idempotent: iv.get("idempotency_key").is_some(),
                    deliver_at_ms: u(iv, "deliver_at_ms"),
                    txn: flag(iv, "txn"),
                    invoke_index: inv.index,
                    complete_index: done.index,
                });
            }
            "poll" if done.kind == Kind::Ok => {
                let messages = dv
                    .get("messages")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| {
                                Some((p.get(0)?.as_u64()?, p.get(1)?.as_str()?.to_owned()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.polls.push(Poll {
                    process: inv.process.clone(),
                    topic: s(iv, "topic").unwrap_or_default(),
                    queue: u(iv, "queue").unwrap_or(0),
                    from: u(iv, "offset").unwrap_or(0),
                    is_final: flag(iv, "final"),
                    reset: flag(iv, "reset"),
                    messages,
                    read_ms: u(dv, "read_ms"),
                    invoke_index: inv.index,
                });
            }
            "commit" if done.kind == Kind::Ok => {
                self.commits.push(Commit {
                    group: s(iv, "group").unwrap_or_default(),
                    topic: s(iv, "topic").unwrap_or_default(),
                    queue: u(iv, "queue").unwrap_or(0),
                    offset: u(iv, "offset").unwrap_or(0),
                    reset: flag(iv, "reset"),
                    invoke_index: inv.index,
                    complete_index: done.index,
                });
            }
            "receive" if done.kind == Kind::Ok => {
                let msgs = dv
                    .get("messages")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for msg in msgs {
                    let Some(value) = msg.get(0).and_then(Value::as_str) else {
                        continue;
                    };
                    if let Some(r) = msg.get(2).and_then(Value::as_str) {
                        self.receipts.insert(r.to_owned(), value.to_owned());
                    }
                    let position = match (
                        msg.get(3).and_then(Value::as_u64),
                        msg.get(4).and_then(Value::as_u64),
                    ) {
                        (Some(q), Some(o)) => Some((q, o)),
                        _ => None,
                    };
                    self.deliveries.push(Delivery {
                        consumer: s(iv, "consumer").unwrap_or_default(),
                        topic: s(iv, "topic").unwrap_or_default(),
                        value: value.to_owned(),
                        attempt: msg.get(1).and_then(Value::as_u64).unwrap_or(0),
                        position,
                        fifo: flag(iv, "fifo"),
                        invoke_index: inv.index,
                        complete_index: done.index,
                    });
                }
            }
            "txn-commit" | "txn-rollback" | "check" | "txn-state" => {
                let Some(value) = s(iv, "value") else { return };
                let fate = self.txns.entry(value).or_default();
                match inv.f.as_str() {
                    "txn-commit" => fate.commits.push(done.kind),
                    "txn-rollback" => fate.rollbacks.push(done.kind),
                    "check" => fate.answers.extend(s(dv, "answer")),
                    _ if done.kind == Kind::Ok => fate.final_state = s(dv, "state"),
                    _ => {}
                }
            }
            "ack" if done.kind == Kind::Ok => {
                let values = dv
                    .get("acked")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                self.acks.push(Ack {
                    values,
                    certain: true,
                    invoke_index: inv.index,
                    complete_index: done.index,
                });
            }
            // Unknown outcome: each receipt it carried may have been acked.
            "ack" if done.kind == Kind::Info => {
                let values = iv
                    .get("receipts")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|r| self.receipts.get(r.as_str()?).cloned())
                            .collect()
                    })
                    .unwrap_or_default();
                self.acks.push(Ack {
                    values,
                    certain: false,
                    invoke_index: inv.index,
                    complete_index: done.index,
                });
            }
            _ => {}
        }
    }

    /// Every `(topic, queue, offset, value)` any poll returned.
    pub(crate) fn reads(&self) -> impl Iterator<Item = (&str, u64, u64, &str)> {
        self.polls.iter().flat_map(|p| {
            p.messages
                .iter()
                .map(move |(o, v)| (p.topic.as_str(), p.queue, *o, v.as_str()))
        })
    }

    /// Whether a value's send was acknowledged (`ok`) at least once.
    pub(crate) fn acked(&self, value: &str) -> Option<&Send> {
        // A transaction's `ok` send promises nothing readable (see the txn checks).
        self.sends
            .get(value)?
            .iter()
            .find(|s| s.outcome == Kind::Ok && !s.txn)
    }
}
