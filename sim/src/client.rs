//! Clients inside the simulation: produce (to a plain topic, and with a key per client to a
//! FIFO one), read queues by offset as a consumer does, and receive and ack through a
//! consumer group, each operation recorded as an `invoke` and its
//! completion in raftmq-jepsen's history format (so its checker judges the run).
//!
//! An operation runs on the chosen node's own runtime, so a crash of that node ends it the
//! way a dropped connection does: the client records `info` (unknown) for a write, `fail`
//! for a read.
//!
//! Must never: record a write as failed when it may have happened (only answers that mean
//! "nothing was written" are `fail`).

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftmq_jepsen::history::{Event, Kind, Process};
use raftmq_raft::{
    Broker, BrokerError, ConsumerGroupMode, NodeId, ProduceMessage, QueueQuery, ReceiveRequest,
};
use serde_json::{Value, json};
use tokio::runtime::Handle;

use crate::net::SimNet;

/// The plain topic.
pub const TOPIC: &str = "sim";
/// The FIFO topic: each client sends with a key of its own, and receives are checked for
/// order (the checker's fifo-violation).
pub const FIFO_TOPIC: &str = "simf";
/// Both topics.
pub const TOPICS: [&str; 2] = [TOPIC, FIFO_TOPIC];
/// A topic whose messages expire after [`RETENTION_MS`] of group time (time warps pass
/// it): its traffic is not in the history (the checker would call expired messages lost);
/// the consumer group's floors there are checked against retention instead
/// ([`crate::invariants`]).
pub const RETENTION_TOPIC: &str = "simr";
/// How long the retention topic keeps messages.
pub const RETENTION_MS: u64 = 300_000;
/// Queues of each topic.
pub const QUEUES: u32 = 2;
/// The consumer group.
pub const GROUP: &str = "simg";
/// How long one operation may take before the client gives up on it (`info`).
const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// The history of one schedule, in the order things happened.
pub struct History {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl Default for History {
    fn default() -> Self {
        History {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
        }
    }
}

impl History {
    /// Records one event.
    pub fn record(&self, process: Process, kind: Kind, f: &str, value: Value) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let index = events.len() as u64;
        events.push(Event {
            index,
            time_ns: self.start.elapsed().as_nanos() as u64,
            process,
            kind,
            f: f.to_owned(),
            value,
        });
    }

    /// Records a nemesis step.
    pub fn nemesis(&self, what: &str, value: Value) {
        self.record(Process::Named("nemesis".into()), Kind::Info, what, value);
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// How an operation ended.
#[derive(Debug)]
pub enum Outcome<T> {
    /// It happened.
    Ok(T),
    /// It certainly did not.
    Fail(String),
    /// Unknown.
    Info(String),
}

/// Runs `op` on a node's runtime within the client's deadline.
pub async fn on_node<T, F, Fut>(node: &(NodeId, Broker, Handle), op: F) -> Outcome<T>
where
    T: Send + 'static,
    F: FnOnce(Broker) -> Fut,
    Fut: Future<Output = Result<T, BrokerError>> + Send + 'static,
{
    let task = node.2.spawn(op(node.1.clone()));
    match tokio::time::timeout(OP_TIMEOUT, task).await {
        Ok(Ok(Ok(v))) => Outcome::Ok(v),
        Ok(Ok(Err(e))) => classify(e),
        Ok(Err(_)) => Outcome::Info(format!("node {} crashed during the operation", node.0)),
        Err(_) => Outcome::Info("timed out".into()),
    }
}

fn classify<T>(e: BrokerError) -> Outcome<T> {
    match e {
        BrokerError::Rejected { .. }
        | BrokerError::NotLeader { .. }
        | BrokerError::DiskFull { .. }
        | BrokerError::Unavailable(_)
        | BrokerError::OffsetOutOfRange { .. } => Outcome::Fail(e.to_string()),
        other => Outcome::Info(other.to_string()),
    }
}

/// One client process: its number, its view of the leader, where it reads each queue.
pub struct Client {
    /// Its process number in the history.
    pub p: u64,
    leader: Option<NodeId>,
    /// Where it reads next, by topic (as in [`TOPICS`]) and queue.
    next: [[u64; QUEUES as usize]; 2],
    sent: u64,
}

impl Client {
    /// Client number `p`.
    pub fn new(p: u64) -> Client {
        Client {
            p,
            leader: None,
            next: [[0; QUEUES as usize]; 2],
            sent: 0,
        }
    }

    /// The node to send a write to: the leader it last heard of, if up.
    fn writer(
        &self,
        live: &[(NodeId, Broker, Handle)],
        pick: usize,
    ) -> Option<(NodeId, Broker, Handle)> {
        self.leader
            .and_then(|l| live.iter().find(|n| n.0 == l))
            .or_else(|| live.get(pick % live.len().max(1)))
            .cloned()
    }

    fn learn(&mut self, e: &str, live: &[(NodeId, Broker, Handle)], pick: usize) {
        // Not the leader: try another node next time (the error names no id here).
        if e.contains("leader") {
            self.leader = live.get(pick % live.len().max(1)).map(|n| n.0);
        }
    }

    /// Records an invoke; `invoke` learns the node it goes to (for reading histories).
    fn invoke(&self, h: &History, f: &str, invoke: &mut Value, node: NodeId) {
        invoke["node"] = json!(node);
        h.record(Process::Client(self.p), Kind::Invoke, f, invoke.clone());
    }

    fn complete<T>(
        &self,
        h: &History,
        f: &str,
        invoke: &Value,
        out: &Outcome<T>,
        ok: impl FnOnce(&T) -> Value,
    ) {
        let p = Process::Client(self.p);
        match out {
            Outcome::Ok(v) => h.record(p, Kind::Ok, f, ok(v)),
            Outcome::Fail(e) => {
                let mut v = invoke.clone();
                v["error"] = json!(e);
                h.record(p, Kind::Fail, f, v);
            }
            Outcome::Info(e) => {
                let mut v = invoke.clone();
                v["error"] = json!(e);
                h.record(p, Kind::Info, f, v);
            }
        }
    }

    /// Produces one new value to `topic` (with this client's key to the FIFO topic).
    pub async fn send(&mut self, net: &SimNet, h: &History, pick: usize, topic: &'static str) {
        let live = net.live();
        let Some(node) = self.writer(&live, pick) else {
            return;
        };
        self.sent += 1;
        let value = format!("{}-{}", self.p, self.sent);
        let key = (topic == FIFO_TOPIC).then(|| format!("k{}", self.p));
        let mut invoke = json!({"topic": topic, "value": value});
        if let Some(k) = &key {
            invoke["key"] = json!(k);
        }
        self.invoke(h, "send", &mut invoke, node.0);
        let msg = ProduceMessage {
            body: Bytes::from(value.into_bytes()),
            binary: false,
            key,
            tag: None,
            properties: Vec::new(),
            queue: None,
            idempotency_key: None,
            schedule: None,
        };
        let out = on_node(&node, move |b| async move {
            let placed = b.produce(topic, &[msg], None).await?;
            Ok((placed[0].queue, placed[0].offset))
        })
        .await;
        self.complete(
            h,
            "send",
            &invoke,
            &out,
            |(q, o)| json!({"queue": q, "offset": o}),
        );
        match out {
            Outcome::Ok(_) => self.leader = Some(node.0),
            Outcome::Fail(e) | Outcome::Info(e) => self.learn(&e, &live, pick + 1),
        }
    }

    /// Reads the next messages of a queue of `TOPICS[t]` through any node, as a consumer
    /// does.
    pub async fn poll(&mut self, net: &SimNet, h: &History, pick: usize, t: usize, queue: u32) {
        let live = net.live();
        let Some(node) = live.get(pick % live.len().max(1)).cloned() else {
            return;
        };
        let topic = TOPICS[t];
        let offset = self.next[t][queue as usize];
        let mut invoke = json!({"topic": topic, "queue": queue, "offset": offset});
        self.invoke(h, "poll", &mut invoke, node.0);
        let out = read(&node, topic, queue, offset).await;
        self.complete(h, "poll", &invoke, &out, |(msgs, _)| {
            messages_value(&invoke, msgs)
        });
        if let Outcome::Ok((_, next)) = out {
            self.next[t][queue as usize] = next;
        }
    }

    /// Receives from `topic` through the consumer group and acks what it got if `ack`.
    pub async fn receive(
        &mut self,
        net: &SimNet,
        h: &History,
        pick: usize,
        topic: &'static str,
        ack: bool,
    ) {
        let live = net.live();
        let Some(node) = self.writer(&live, pick) else {
            return;
        };
        let consumer = format!("c{}", self.p);
        let fifo = topic == FIFO_TOPIC;
        let mut invoke =
            json!({"topic": topic, "group": GROUP, "consumer": consumer, "fifo": fifo});
        self.invoke(h, "receive", &mut invoke, node.0);
        let req = ReceiveRequest {
            group: GROUP.into(),
            topic: topic.into(),
            consumer,
            max: 8,
            wait_ms: 0,
            invisible_ms: 400,
            tag: None,
            sql: None,
            mode: ConsumerGroupMode::Clustering,
        };
        let out = on_node(&node, move |b| async move {
            let got = b.receive(req).await?;
            Ok(got
                .into_iter()
                .map(|d| {
                    let value = String::from_utf8_lossy(&d.message.body).into_owned();
                    (
                        value,
                        d.attempt,
                        d.receipt,
                        d.message.queue,
                        d.message.offset,
                    )
                })
                .collect::<Vec<_>>())
        })
        .await;
        self.complete(h, "receive", &invoke, &out, |msgs| {
            let mut v = invoke.clone();
            v["messages"] = json!(
                msgs.iter()
                    .map(|(val, a, r, q, o)| json!([val, a, r, q, o]))
                    .collect::<Vec<_>>()
            );
            v
        });
        let msgs = match out {
            Outcome::Ok(m) => m,
            Outcome::Fail(e) | Outcome::Info(e) => {
                self.learn(&e, &live, pick + 1);
                return;
            }
        };
        if msgs.is_empty() || !ack {
            return;
        }
        let receipts: Vec<String> = msgs.iter().map(|m| m.2.clone()).collect();
        let mut invoke = json!({"topic": topic, "group": GROUP, "receipts": receipts});
        self.invoke(h, "ack", &mut invoke, node.0);
        let out = on_node(&node, move |b| async move {
            b.ack(GROUP, topic, receipts, None).await
        })
        .await;
        self.complete(h, "ack", &invoke, &out, |codes| {
            let mut v = invoke.clone();
            let acked: Vec<&str> = msgs
                .iter()
                .zip(codes)
                .filter(|(_, c)| c.is_none())
                .map(|(m, _)| m.0.as_str())
                .collect();
            v["acked"] = json!(acked);
            v
        });
    }
}

impl Client {
    /// Traffic of the retention topic, outside the history: produces a message, or
    /// receives and acks (some receives are not acked, so floors lag behind the tails).
    pub async fn churn(&mut self, net: &SimNet, pick: usize, produce: bool) {
        let live = net.live();
        let Some(node) = self.writer(&live, pick) else {
            return;
        };
        if produce {
            let msg = ProduceMessage {
                body: Bytes::from(format!("r{}-{pick}", self.p).into_bytes()),
                binary: false,
                key: None,
                tag: None,
                properties: Vec::new(),
                queue: None,
                idempotency_key: None,
                schedule: None,
            };
            let _ = on_node(&node, move |b| async move {
                b.produce(RETENTION_TOPIC, &[msg], None).await
            })
            .await;
            return;
        }
        let req = ReceiveRequest {
            group: GROUP.into(),
            topic: RETENTION_TOPIC.into(),
            consumer: format!("c{}", self.p),
            max: 4,
            wait_ms: 0,
            invisible_ms: 400,
            tag: None,
            sql: None,
            mode: ConsumerGroupMode::Clustering,
        };
        let ack = !pick.is_multiple_of(3);
        let _ = on_node(&node, move |b| async move {
            let got = b.receive(req).await?;
            if ack && !got.is_empty() {
                let receipts = got.into_iter().map(|d| d.receipt).collect();
                b.ack(GROUP, RETENTION_TOPIC, receipts, None).await?;
            }
            Ok(())
        })
        .await;
    }
}

/// Reads up to 100 messages of a queue from `offset`: `(offset, value)` pairs and where the
/// next read starts.
pub async fn read(
    node: &(NodeId, Broker, Handle),
    topic: &'static str,
    queue: u32,
    offset: u64,
) -> Outcome<(Vec<(u64, String)>, u64)> {
    on_node(node, move |b| async move {
        let r = b
            .read_queue(QueueQuery {
                topic: topic.into(),
                queue,
                offset,
                max: 100,
                filter: None,
                sql: None,
                scan_limit: 1000,
            })
            .await?;
        let msgs = r
            .messages
            .iter()
            .map(|m| (m.offset, String::from_utf8_lossy(&m.body).into_owned()))
            .collect();
        Ok((msgs, r.next_offset))
    })
    .await
}

/// A poll's completion: its invoke with the messages read.
pub fn messages_value(invoke: &Value, msgs: &[(u64, String)]) -> Value {
    let mut v = invoke.clone();
    v["messages"] = json!(
        msgs.iter()
            .map(|(o, val)| json!([o, val]))
            .collect::<Vec<_>>()
    );
    v
}
