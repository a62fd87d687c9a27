//! The workloads. `log`: producers send unique values with keys through random nodes;
//! consumers read their queues by offset through random nodes and commit offsets; a final
//! drain reads every queue from every node. `queue`: the same producers; consumers of one
//! group receive and ack through random nodes (one never acks, one nacks some); a final
//! drain receives everything left and reads the dead-letter topic.
//!
//! `delay`: the log workload with three sends in four scheduled up to [`MAX_DELAY_MS`]
//! ahead (`deliver_at_ms` by the producer's clock); every poll records the reader's clock
//! when its answer came (`read_ms`), so the checker can tell a read before its time.
//!
//! `txn`: producers send each value as a one-message transaction checked back at the
//! harness's own target ([`crate::txn_check`]), then commit it, roll it back or leave it to
//! the check-backs; consumers poll as in `log`; before the drain every transaction's final
//! state is read (`txn-state`).
//!
//! With `idempotent`, every send carries its value as its idempotency key and a send whose
//! fate is unknown (`info`) is retried with the same key (each try recorded): the system
//! must then store each value once.
//!
//! Must never: retry a send with the same value without its idempotency key (otherwise
//! every value is sent once, so any duplicate is the system's), or skip recording an
//! operation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::{Client, Outcome};
use crate::history::{Kind as Ev, Process, Recorder};
use crate::rng::Rng;

/// Which workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Read by offset, commit offsets.
    Log,
    /// Consumer group receive/ack.
    Queue,
    /// The log workload with scheduled sends.
    Delay,
    /// Transactions decided by the client, by check-back, or left to roll back.
    Txn,
}

/// Check-backs before an undecided transaction rolls back (the nodes' `--txn-max-checks`).
pub const TXN_MAX_CHECKS: u32 = 3;
/// `check_after_ms` of the txn workload's transactions.
pub const TXN_CHECK_AFTER_MS: u64 = 1_000;

/// How far ahead the delay workload schedules a send, at most.
pub const MAX_DELAY_MS: u64 = 3_000;

/// This machine's wall clock, ms since the epoch.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One client process of a workload: who it is and what it works with.
pub struct Worker {
    /// Process number in the history.
    pub p: u64,
    /// The workload's settings.
    pub w: Arc<LogWorkload>,
    /// Nodes to pick from.
    pub nodes: Vec<SocketAddr>,
    /// HTTP client.
    pub client: Client,
    /// The history.
    pub rec: Arc<Recorder>,
    /// Its own randomness.
    pub rng: Rng,
    /// When to stop.
    pub until: Instant,
}

/// Settings of a workload.
#[derive(Clone, Debug)]
pub struct LogWorkload {
    /// Which workload.
    pub kind: Kind,
    /// FIFO topic (queue workload).
    pub fifo: bool,
    /// Sends carry idempotency keys and `info` sends are retried with them.
    pub idempotent: bool,
    /// Topic name.
    pub topic: String,
    /// Queues of the topic.
    pub queues: u64,
    /// Producer processes.
    pub producers: u64,
    /// Consumer processes (queues are split among them).
    pub consumers: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Pause between one process's operations.
    pub think: Duration,
    /// The txn workload's check-back target.
    pub check_url: String,
    /// `(value, transaction id)` of every transaction produced (`ok`), for the final drain.
    pub txns: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

fn complete<T>(
    rec: &Recorder,
    p: u64,
    f: &str,
    invoke: &Value,
    out: &Outcome<T>,
    ok: impl FnOnce(&T) -> Value,
) {
    let (kind, value) = match out {
        Outcome::Ok(t) => (Ev::Ok, ok(t)),
        Outcome::Fail(e) => (Ev::Fail, with_error(invoke, e)),
        Outcome::Info(e) => (Ev::Info, with_error(invoke, e)),
    };
    rec.record(Process::Client(p), kind, f, value);
}

/// A poll's invoke value with the messages it returned and when (the reader's clock), as
/// the history records them.
fn with_messages(invoke: &Value, msgs: &[(u64, String)]) -> Value {
    let mut v = invoke.clone();
    v["messages"] = json!(msgs.iter().map(|(o, v)| json!([o, v])).collect::<Vec<_>>());
    v["read_ms"] = json!(wall_ms());
    v
}

fn with_error(v: &Value, e: &str) -> Value {
    let mut v = v.clone();
    v["error"] = json!(e);
    v
}

/// One producer until `until`.
pub async fn producer(x: Worker) {
    let Worker {
        p,
        w,
        nodes,
        client,
        rec,
        mut rng,
        until,
    } = x;
    let mut seq = 0u64;
    while Instant::now() < until {
        let node = *rng.pick(&nodes).expect("nodes");
        let key = format!("k{}", rng.below(w.keys));
        let value = format!("{p}-{seq}");
        seq += 1;
        if w.kind == Kind::Txn {
            send_txn(p, &w, &nodes, &client, &rec, &mut rng, (node, &key, &value)).await;
            tokio::time::sleep(w.think).await;
            continue;
        }
        let mut invoke = json!({"topic": w.topic, "key": key, "value": value});
        if w.idempotent {
            invoke["idempotency_key"] = json!(value);
        }
        let idempotency_key = w.idempotent.then_some(value.as_str());
        let deliver_at_ms = (w.kind == Kind::Delay && rng.below(4) != 0)
            .then(|| wall_ms() + 1 + rng.below(MAX_DELAY_MS));
        if let Some(t) = deliver_at_ms {
            invoke["deliver_at_ms"] = json!(t);
        }
        let mut node = node;
        // At most a few tries of one value, and none after the run's end.
        for _ in 0..5 {
            rec.record(Process::Client(p), Ev::Invoke, "send", invoke.clone());
            let out = client
                .send(node, &w.topic, &key, &value, idempotency_key, deliver_at_ms)
                .await;
            complete(&rec, p, "send", &invoke, &out, |(q, o)| {
                let mut v = invoke.clone();
                v["queue"] = json!(q);
                v["offset"] = json!(o);
                v
            });
            if !(w.idempotent && matches!(out, Outcome::Info(_))) || Instant::now() >= until {
                break;
            }
            node = *rng.pick(&nodes).expect("nodes");
            tokio::time::sleep(w.think).await;
        }
        tokio::time::sleep(w.think).await;
    }
}

/// One value of the txn workload: sent as a transaction, then committed (4 in 10), rolled
/// back (3 in 10) or left to its check-backs.
async fn send_txn(
    p: u64,
    w: &LogWorkload,
    nodes: &[SocketAddr],
    client: &Client,
    rec: &Recorder,
    rng: &mut Rng,
    (node, key, value): (SocketAddr, &str, &str),
) {
    let invoke = json!({"topic": w.topic, "key": key, "value": value, "txn": true});
    rec.record(Process::Client(p), Ev::Invoke, "send", invoke.clone());
    let out = client
        .send_txn(node, &w.topic, key, value, &w.check_url, TXN_CHECK_AFTER_MS)
        .await;
    complete(rec, p, "send", &invoke, &out, |id| {
        let mut v = invoke.clone();
        v["transaction_id"] = json!(id);
        v
    });
    let Outcome::Ok(id) = out else { return };
    w.txns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((value.to_owned(), id.clone()));
    let commit = match rng.below(10) {
        0..4 => true,
        4..7 => false,
        _ => return,
    };
    let f = if commit { "txn-commit" } else { "txn-rollback" };
    let node = *rng.pick(nodes).expect("nodes");
    let invoke = json!({"value": value, "transaction_id": id});
    rec.record(Process::Client(p), Ev::Invoke, f, invoke.clone());
    let out = client.txn(node, &id, Some(commit)).await;
    complete(rec, p, f, &invoke, &out, |state| {
        let mut v = invoke.clone();
        v["state"] = json!(state);
        v
    });
}

/// Records every transaction's final state as a node has it (`txn-state`, `"final": true`).
pub async fn drain_txns(
    p: u64,
    w: &LogWorkload,
    nodes: &[SocketAddr],
    client: &Client,
    rec: &Recorder,
) {
    let txns = w.txns.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (value, id) in txns {
        for attempt in 0..20 {
            let node = nodes[attempt % nodes.len()];
            let invoke = json!({"value": value, "transaction_id": id, "final": true});
            rec.record(Process::Client(p), Ev::Invoke, "txn-state", invoke.clone());
            let out = client.txn(node, &id, None).await;
            complete(rec, p, "txn-state", &invoke, &out, |state| {
                let mut v = invoke.clone();
                v["state"] = json!(state);
                v
            });
            if matches!(out, Outcome::Ok(_)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// One consumer of `queues` until `until`: poll, then commit what it read.
pub async fn consumer(x: Worker, queues: Vec<u64>) {
    let Worker {
        p,
        w,
        nodes,
        client,
        rec,
        mut rng,
        until,
    } = x;
    let mut positions: Vec<u64> = vec![0; queues.len()];
    while Instant::now() < until {
        for (i, &queue) in queues.iter().enumerate() {
            let node = *rng.pick(&nodes).expect("nodes");
            let invoke = json!({"topic": w.topic, "queue": queue, "offset": positions[i]});
            rec.record(Process::Client(p), Ev::Invoke, "poll", invoke.clone());
            let out = client.poll(node, &w.topic, queue, positions[i], 100).await;
            complete(&rec, p, "poll", &invoke, &out, |(msgs, _)| {
                with_messages(&invoke, msgs)
            });
            let Outcome::Ok((msgs, next)) = out else {
                continue;
            };
            if msgs.is_empty() {
                continue;
            }
            positions[i] = next;
            let node = *rng.pick(&nodes).expect("nodes");
            let invoke =
                json!({"topic": w.topic, "group": "jepsen", "queue": queue, "offset": next});
            rec.record(Process::Client(p), Ev::Invoke, "commit", invoke.clone());
            let out = client.commit(node, "jepsen", &w.topic, queue, next).await;
            complete(&rec, p, "commit", &invoke, &out, |_| invoke.clone());
        }
        tokio::time::sleep(w.think).await;
    }
}

/// Reads every queue from offset 0 to its end through each node (`"final": true`).
pub async fn drain(p: u64, w: &LogWorkload, nodes: &[SocketAddr], client: &Client, rec: &Recorder) {
    for &node in nodes {
        for queue in 0..w.queues {
            let mut offset = 0;
            let mut failures = 0;
            let mut first = true;
            loop {
                // Each node's drain starts over at 0: a reset, not a consumer going back.
                let invoke = json!({"topic": w.topic, "queue": queue, "offset": offset, "final": true, "reset": first});
                first = false;
                rec.record(Process::Client(p), Ev::Invoke, "poll", invoke.clone());
                let out = client.poll(node, &w.topic, queue, offset, 1000).await;
                complete(rec, p, "poll", &invoke, &out, |(msgs, _)| {
                    with_messages(&invoke, msgs)
                });
                match out {
                    Outcome::Ok((msgs, next)) => {
                        if msgs.is_empty() {
                            break;
                        }
                        offset = next;
                    }
                    // The topic does not exist (no dead letters were ever written).
                    Outcome::Fail(e) if e.starts_with("404") => break,
                    _ => {
                        failures += 1;
                        if failures > 20 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
        }
    }
}

/// The consumer group of the queue workload.
pub const GROUP: &str = "jepsen";

/// One queue-workload consumer until `until`. Consumer 0 never acks (its leases expire),
/// consumer 1 nacks about a third of what it gets, the others ack everything.
pub async fn group_consumer(x: Worker, index: u64) {
    let Worker {
        p,
        w,
        nodes,
        client,
        rec,
        mut rng,
        until,
    } = x;
    let consumer = format!("c{index}");
    while Instant::now() < until {
        let node = *rng.pick(&nodes).expect("nodes");
        receive_and_settle(
            p,
            &consumer,
            index,
            &w,
            node,
            &client,
            &rec,
            &mut rng,
            (10, 300),
        )
        .await;
        tokio::time::sleep(w.think).await;
    }
}

/// One receive of up to `max` messages, waiting up to `wait_ms`, and the ack or nack of
/// what came back; returns how many messages came.
#[allow(clippy::too_many_arguments)]
async fn receive_and_settle(
    p: u64,
    consumer: &str,
    index: u64,
    w: &LogWorkload,
    node: SocketAddr,
    client: &Client,
    rec: &Recorder,
    rng: &mut Rng,
    (max, wait_ms): (u64, u64),
) -> usize {
    let invoke = json!({"topic": w.topic, "group": GROUP, "consumer": consumer, "fifo": w.fifo});
    rec.record(Process::Client(p), Ev::Invoke, "receive", invoke.clone());
    let out = client
        .receive(node, GROUP, &w.topic, consumer, max, wait_ms, 2000)
        .await;
    complete(rec, p, "receive", &invoke, &out, |msgs| {
        let mut v = invoke.clone();
        v["messages"] = json!(
            msgs.iter()
                .map(|(val, a, r, q, o)| json!([val, a, r, q, o]))
                .collect::<Vec<_>>()
        );
        v
    });
    let Outcome::Ok(msgs) = out else { return 0 };
    if msgs.is_empty() || index == 0 {
        return msgs.len();
    }
    let nack = index == 1 && rng.below(3) == 0;
    let receipts: Vec<String> = msgs.iter().map(|m| m.2.clone()).collect();
    let f = if nack { "nack" } else { "ack" };
    let invoke = json!({"topic": w.topic, "group": GROUP, "receipts": receipts});
    rec.record(Process::Client(p), Ev::Invoke, f, invoke.clone());
    let delay = nack.then(|| rng.below(300));
    let out = client.ack(node, GROUP, &w.topic, &receipts, delay).await;
    complete(rec, p, f, &invoke, &out, |oks| {
        let mut v = invoke.clone();
        if !nack {
            let acked: Vec<&str> = msgs
                .iter()
                .zip(oks)
                .filter(|(_, ok)| **ok)
                .map(|(m, _)| m.0.as_str())
                .collect();
            v["acked"] = json!(acked);
        }
        v
    });
    msgs.len()
}

/// Receives and acks everything left (leases of the consumer that never acks expire), then
/// reads the dead-letter topic.
pub async fn drain_group(
    p: u64,
    w: &LogWorkload,
    nodes: &[SocketAddr],
    client: &Client,
    rec: &Recorder,
) {
    let mut rng = Rng::new(p);
    // However long the backlog takes, as long as it moves: give up only after a minute
    // without a single delivery.
    let mut last_progress = Instant::now();
    let mut empty = 0;
    while empty < 4 && last_progress.elapsed() < Duration::from_secs(60) {
        let node = *rng.pick(nodes).expect("nodes");
        if receive_and_settle(p, "drain", 2, w, node, client, rec, &mut rng, (100, 1500)).await == 0
        {
            empty += 1;
        } else {
            empty = 0;
            last_progress = Instant::now();
        }
    }
    let dlq = LogWorkload {
        topic: format!("DLQ-{GROUP}"),
        queues: 1,
        ..w.clone()
    };
    drain(p + 1, &dlq, &nodes[..1], client, rec).await;
}
