//! Invariants checked after every fault step, while the clients still run (the history's
//! checker and the final reads judge the end; these catch a replica going wrong in the
//! middle, and say at which step):
//! - replicas agree on every applied (queue, offset): the first node seen holding a message
//!   at an offset fixes it, and every node must hold the same there;
//! - no committed entry is lost: a node never holds less of a queue than it held before
//!   (applied means committed), unless its data directory was wiped;
//! - a consumer group's floor never lies below a queue's first retained offset (retention
//!   passes floors: what expired is not waited for);
//! - state machines are equal at equal applied indexes: each node's digest of its whole
//!   applied state ([`raftmq_raft::Broker::state_digest`]) is sampled a few times per step,
//!   and two samples at one index must match (indexes are positions in the one log, so a
//!   sample taken at one step is compared with one taken at any other).
//!
//! Must never: record its reads in the history (they are not a client's), or report a node
//! that is merely behind (a node may hold less than another; only a difference at an offset
//! both hold, or a node going back on itself, counts).

use std::collections::BTreeMap;
use std::time::Duration;

use raftmq_raft::NodeId;

use crate::client::{self, GROUP, Outcome, QUEUES, RETENTION_TOPIC, TOPICS};
use crate::net::SimNet;

/// How many digests of each node one step samples.
const DIGEST_ROUNDS: usize = 2;
/// At most this many problems are kept (the first tells the story).
const MAX_PROBLEMS: usize = 6;

/// What the checks have seen so far in one schedule.
#[derive(Default)]
pub struct StepChecks {
    /// The message at each `(topic, queue, offset)`, as first seen on any node.
    seen: BTreeMap<(usize, u32, u64), String>,
    /// How far each node's queues have been read: `(node, topic, queue)` → next offset.
    held: BTreeMap<(NodeId, usize, u32), u64>,
    /// The first digest sampled at each applied index, and the node it came from.
    digests: BTreeMap<u64, (NodeId, u64)>,
    /// Digests sampled, and how many of them met another node's at the same index (for
    /// the run's figures).
    pub samples: u64,
    pub matched: u64,
    /// The most messages retention has removed from one queue of the retention topic
    /// (for the run's figures: whether time warps made it pass anything).
    pub expired: u64,
    /// What broke, with the step it was seen after.
    pub problems: Vec<String>,
}

impl StepChecks {
    /// A node's data directory was deleted: what it held before is gone by design (it is
    /// rebuilt from its peers, and still checked against what the others hold).
    pub fn wiped(&mut self, id: NodeId) {
        self.held.retain(|(n, _, _), _| *n != id);
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        }
    }

    /// Runs every check against the nodes up now; `after` names the step just played.
    pub async fn check(&mut self, net: &SimNet, after: &str) {
        self.queues(net, after).await;
        self.retention_floors(net, after).await;
        self.digests(net, after).await;
    }

    /// Replicas agree on every applied (queue, offset), and no node goes back on itself.
    async fn queues(&mut self, net: &SimNet, after: &str) {
        for node in net.live() {
            for (t, topic) in TOPICS.iter().enumerate() {
                let Outcome::Ok(bounds) = client::on_node(&node, move |b| async move {
                    b.queue_bounds(topic, 0..QUEUES).await
                })
                .await
                else {
                    continue;
                };
                for (queue, (_, end)) in (0..QUEUES).zip(bounds) {
                    let key = (node.0, t, queue);
                    let mut offset = self.held.get(&key).copied().unwrap_or(0);
                    if end < offset {
                        self.problem(format!(
                            "committed-lost (after {after}): node {} held {topic} queue {queue} up to offset {offset}, now ends at {end}",
                            node.0
                        ));
                        continue;
                    }
                    // A few pages per step: what is left is read after the next one.
                    for _ in 0..5 {
                        if offset >= end {
                            break;
                        }
                        let Outcome::Ok((msgs, next)) =
                            client::read(&node, topic, queue, offset).await
                        else {
                            break;
                        };
                        for (o, value) in &msgs {
                            let first = self.seen.entry((t, queue, *o)).or_insert(value.clone());
                            if first != value {
                                let first = first.clone();
                                self.problem(format!(
                                    "replicas-disagree (after {after}): {topic} queue {queue} offset {o}: node {} holds {value:?}, another held {first:?}",
                                    node.0
                                ));
                            }
                        }
                        if msgs.is_empty() || next <= offset {
                            break;
                        }
                        offset = next;
                    }
                    self.held.insert(key, offset);
                }
            }
        }
    }

    /// The consumer group's floor in each queue of the retention topic is at or past the
    /// queue's first retained offset. The bounds are read first: floors only rise, so a
    /// retention applied between the two reads cannot make a correct node look wrong.
    async fn retention_floors(&mut self, net: &SimNet, after: &str) {
        for node in net.live() {
            let Outcome::Ok(bounds) = client::on_node(&node, |b| async move {
                b.queue_bounds(RETENTION_TOPIC, 0..QUEUES).await
            })
            .await
            else {
                continue;
            };
            let Outcome::Ok(Some(group)) =
                client::on_node(&node, |b| async move { b.consumer_group(GROUP).await }).await
            else {
                continue;
            };
            for q in group.queues.iter().filter(|q| q.topic == RETENTION_TOPIC) {
                let Some(&(first, _)) = bounds.get(q.queue as usize) else {
                    continue;
                };
                self.expired = self.expired.max(first);
                if q.committed < first {
                    self.problem(format!(
                        "floor-behind-retention (after {after}): node {}: {RETENTION_TOPIC} queue {} keeps offsets from {first}, the group's floor is {}",
                        node.0, q.queue, q.committed
                    ));
                }
            }
        }
    }

    /// Samples every live node's `(applied index, state digest)` a few times; two samples
    /// at one index must be equal.
    async fn digests(&mut self, net: &SimNet, after: &str) {
        for round in 0..DIGEST_ROUNDS {
            for node in net.live() {
                let Outcome::Ok((index, digest)) =
                    client::on_node(&node, |b| async move { b.state_digest().await }).await
                else {
                    continue;
                };
                self.samples += 1;
                let (first_node, first) = *self.digests.entry(index).or_insert((node.0, digest));
                if first_node != node.0 {
                    self.matched += 1;
                }
                if first != digest {
                    self.problem(format!(
                        "state-differs (after {after}): at applied index {index} node {} has state digest {digest:x}, node {first_node} had {first:x}",
                        node.0
                    ));
                }
            }
            if round + 1 < DIGEST_ROUNDS {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}

/// Equal state at equal applied indexes, as users see it: after convergence every replica
/// has the same committed offset (floor) for each queue of the consumer group, and the same
/// dead letters.
pub async fn groups_disagree(net: &SimNet) -> Vec<String> {
    let mut views = Vec::new();
    for node in net.live() {
        let out = client::on_node(&node, |b| async move { b.consumer_group(GROUP).await }).await;
        let view = match out {
            Outcome::Ok(Some(info)) => {
                let floors: Vec<(&str, u32, u64)> = info
                    .queues
                    .iter()
                    .map(|q| (q.topic.as_str(), q.queue, q.committed))
                    .collect();
                format!("floors {floors:?}, dead letters {}", info.dlq_depth)
            }
            Outcome::Ok(None) => "no group".to_owned(),
            Outcome::Fail(e) | Outcome::Info(e) => format!("unreadable: {e}"),
        };
        views.push((node.0, view));
    }
    let mut out = Vec::new();
    if let Some((first, v0)) = views.first() {
        for (id, v) in &views[1..] {
            if v != v0 {
                out.push(format!(
                    "group-state-disagrees: node {first}: {v0}; node {id}: {v}"
                ));
            }
        }
    }
    out
}

/// The invariant behind everything: after healing, every replica holds the same message
/// at every (queue, offset).
pub fn replicas_disagree(held: &BTreeMap<NodeId, Vec<Vec<(u64, String)>>>) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = held.iter();
    let Some((first_id, first)) = it.next() else {
        return out;
    };
    for (id, queues) in it {
        for (q, (a, b)) in first.iter().zip(queues).enumerate() {
            if a != b {
                let at = a
                    .iter()
                    .zip(b)
                    .position(|(x, y)| x != y)
                    .unwrap_or(a.len().min(b.len()));
                out.push(format!(
                    "replicas-disagree: {} queue {}: node {first_id} holds {} messages, node {id} {}; first difference at position {at}: {:?} vs {:?}",
                    TOPICS[q / QUEUES as usize],
                    q % QUEUES as usize,
                    a.len(),
                    b.len(),
                    a.get(at),
                    b.get(at)
                ));
            }
        }
    }
    out
}
