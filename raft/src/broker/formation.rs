//! Forming a broker group without an init step: nodes started with the same `peers` form
//! the group by themselves; and refusing to start a member whose data is gone.
//!
//! A node that starts with an empty log asks its peers first whether it has held the
//! group's log before (etcd's "member already bootstrapped" check), and takes no part in
//! Raft until their answers decide ([`Broker::admit`]). A peer leading the group that
//! replicates to it knows it has; so does the group's record of it: the leader records
//! each member once it has seen it hold the log (a `HeldLog` entry, kept while the node is
//! a member: removing it forgets the record), so the answer survives leader changes. If
//! it has, its data was lost (a wiped or replaced disk), and as the same member it would
//! vote at once with nothing: with another node lagging, a leader missing acknowledged
//! entries could win. It stops instead and says how to replace it (remove, start with
//! `--join`, add back); started with `--join`, it asks again for a few seconds first, as a
//! peer that has not applied the removal yet still holds the group's record of it.
//!
//! Silence decides nothing. A voter of the group waits until every other voter has
//! answered (the record is on a majority, which may be itself and the silent ones); the
//! answer from the latest state decides (a removed node far behind may still hold a stale
//! record). A node no member counts as a voter starts at once. A new group forms only when
//! most of the nodes it is formed from answer that they hold no log and none waits to
//! join one. Still best effort: a node wiped before the leader recorded it (its first tenth
//! of a second holding the log) is not caught.
//!
//! Must never: initialize a node that has a log, or one started to join an existing group;
//! let a node refused here serve anything.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::impls::BasicNode;

use super::Broker;
use crate::consensus::rpc::{self, HeldLogAnswer, PeerRpc};
use crate::consensus::types::NodeId;
use crate::error::BrokerError;
use crate::state::RejectCode;
use crate::state::command::{Command, held_log_key};
use crate::state::state_machine::meta_as_of;

/// How long a starting node waits for each peer's answer about it.
const ASK_TIMEOUT: Duration = Duration::from_millis(1_000);

/// How often the leader looks for members it has seen hold the log and has not recorded
/// (a look at what it has recorded already costs nothing: it is remembered until the
/// membership changes).
const RECORD_EVERY: Duration = Duration::from_millis(100);

/// How long a node started to join asks again while a peer still records it as holding
/// the log: the removal the operator has just made may not have reached that peer yet.
const JOIN_PATIENCE: Duration = Duration::from_secs(5);

/// How often a starting node that cannot decide yet says what it waits for.
const WAIT_REPORT_EVERY: Duration = Duration::from_secs(10);

/// What a starting node whose log is empty does, from its peers' answers.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// It takes part; `form`: no group exists yet, and it may form one.
    Start { form: bool },
    /// This peer knows it has held the log up to this index: its data is gone.
    Held(NodeId, u64),
    /// Not enough answers to tell (the reason).
    Wait(String),
}

impl Broker {
    /// Whether this node may take part, and whether it may form a new group (`Ok(true)`).
    /// A node with a log takes part at once and forms nothing. One whose log is empty
    /// asks its peers until their answers decide (see the module docs): it fails when its
    /// data is gone; started to join, it asks again for up to [`JOIN_PATIENCE`] first.
    pub(super) async fn admission(&self) -> Result<bool, BrokerError> {
        if self.inner.raft.is_initialized().await.unwrap_or(true) {
            return Ok(false);
        }
        let cfg = &self.inner.cfg;
        let patience = if cfg.form_group {
            Duration::ZERO
        } else {
            JOIN_PATIENCE
        };
        let started = tokio::time::Instant::now();
        let mut reported = started;
        let mut addrs = cfg.peers.clone();
        loop {
            let answers = self.ask_peers(&addrs).await;
            for (_, a) in &answers {
                for (id, addr) in &a.voters {
                    addrs.entry(*id).or_insert_with(|| addr.clone());
                }
            }
            match decide(cfg.node_id, cfg.form_group, cfg.peers.len(), &answers) {
                Verdict::Start { form } => return Ok(form),
                Verdict::Held(peer, index) if started.elapsed() >= patience => {
                    let me = self.node_id();
                    return Err(BrokerError::rejected(
                        RejectCode::Conflict,
                        format!(
                            "node {me} starts with an empty log, but node {peer} knows it has \
                             held the group's log (up to index {index}): this \
                             node's data is gone, and voting as the same member could lose \
                             acknowledged writes. Replace it: remove it from the group \
                             (DELETE /v1/cluster/members/{me} on any node), start it with --join, \
                             then add it back (POST /v1/cluster/members with its id, address and \
                             \"voter\": true)"
                        ),
                    ));
                }
                Verdict::Held(peer, index) => tracing::info!(
                    peer,
                    index,
                    "a peer records this node as holding the log (a removal it has not applied \
                     yet?); asking again"
                ),
                Verdict::Wait(why) => {
                    if reported.elapsed() >= WAIT_REPORT_EVERY {
                        reported = tokio::time::Instant::now();
                        tracing::warn!(
                            "this node's log is empty and it cannot tell yet whether its data \
                             is gone: {why}; it takes no part until it can"
                        );
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(cfg.timing.heartbeat_ms * 4)).await;
        }
    }

    /// Every peer's answer about this node (those that do not answer are left out).
    async fn ask_peers(&self, addrs: &BTreeMap<NodeId, String>) -> Vec<(NodeId, HeldLogAnswer)> {
        let me = self.node_id();
        let asks = addrs
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, addr)| async move { Some((*id, self.ask_replicated(addr).await?)) });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// What `addr` knows of this node holding the log (`None`: no answer).
    async fn ask_replicated(&self, addr: &str) -> Option<HeldLogAnswer> {
        let body = bytes::Bytes::copy_from_slice(&self.node_id().to_le_bytes());
        let credentials = self.inner.peer_auth.sign(
            PeerRpc::Replicated,
            self.node_id(),
            self.group_now_ms(),
            &body,
        );
        let answer = self
            .inner
            .transport
            .send(addr, PeerRpc::Replicated, credentials, body, ASK_TIMEOUT)
            .await
            .ok()?;
        rpc::decode::<HeldLogAnswer>(PeerRpc::Replicated.response_name(), &answer).ok()
    }

    /// On a node admitted to form a new group: the lowest id in `peers` initializes it at
    /// once, the others only if no leader has reached them after six election timeouts
    /// (so a group forms even if the lowest node is down).
    pub(super) fn spawn_group_formation(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let cfg = &this.inner.cfg;
            let lowest = cfg.peers.keys().next().copied() == Some(cfg.node_id);
            if !lowest {
                tokio::time::sleep(Duration::from_millis(cfg.timing.election_timeout_ms * 6)).await;
            }
            match this.inner.raft.is_initialized().await {
                Ok(false) => {}
                _ => return,
            }
            if this.metrics().current_leader.is_some() {
                return;
            }
            let members: BTreeMap<NodeId, BasicNode> = cfg
                .peers
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            match this.inner.raft.initialize(members).await {
                Ok(()) => tracing::info!(node_id = cfg.node_id, "initialized the group"),
                Err(e) => tracing::debug!(error = %e, "not initializing the group"),
            }
        });
    }
}

impl Broker {
    /// The answer to a peer asking how far it has held the log: what the leader's
    /// replication saw (`from_raft`), else the group's record of it as this node has
    /// applied it.
    pub(super) async fn held_log_answer(
        &self,
        body: &bytes::Bytes,
        from_raft: bytes::Bytes,
    ) -> Result<bytes::Bytes, BrokerError> {
        let seen = rpc::decode::<Option<u64>>(PeerRpc::Replicated.response_name(), &from_raft)
            .map_err(|e| BrokerError::Internal(e.to_string()))?;
        let node = <[u8; 8]>::try_from(body.as_ref())
            .map(u64::from_le_bytes)
            .map_err(|_| BrokerError::Internal("replicated: not an 8-byte node id".into()))?;
        let (held, applied) = self.held_log_as_of(node).await?;
        let initialized = self.inner.raft.is_initialized().await.unwrap_or(true);
        let voters = self.with_metrics(|m| {
            let membership = m.membership_config.membership();
            membership
                .voter_ids()
                .filter_map(|id| Some((id, membership.get_node(&id)?.addr.clone())))
                .collect()
        });
        Ok(rpc::encode(&HeldLogAnswer {
            held: seen.or(held),
            replicating: seen.is_some(),
            applied,
            initialized,
            joining: !initialized && !self.inner.cfg.form_group,
            voters,
        }))
    }

    /// The group's record that `node` has held the log, as this node has applied it.
    pub async fn held_log_record(&self, node: NodeId) -> Result<Option<u64>, BrokerError> {
        Ok(self.held_log_as_of(node).await?.0)
    }

    /// The group's record that `node` has held the log, and the applied index it is
    /// current as of.
    async fn held_log_as_of(&self, node: NodeId) -> Result<(Option<u64>, u64), BrokerError> {
        self.read(move |s, _| {
            let (value, applied) = meta_as_of(s, &held_log_key(node))?;
            let held = value
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map(u64::from_le_bytes);
            Ok((held, applied))
        })
        .await
    }

    /// On the leader, every [`RECORD_EVERY`]: records each member it has seen hold the log
    /// (itself included) that the group has no record of yet.
    pub(super) fn spawn_held_log_records(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RECORD_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Members known recorded, as of one membership (a change may remove records).
            let mut recorded: (Option<crate::consensus::types::LogId>, Vec<NodeId>) =
                (None, Vec::new());
            loop {
                tick.tick().await;
                if !this.is_running() {
                    return;
                }
                if !this.is_leader() {
                    continue;
                }
                let m = this.metrics();
                let config = *m.membership_config.log_id();
                if recorded.0 != config {
                    recorded = (config, Vec::new());
                }
                let mut held: Vec<(NodeId, u64)> = m
                    .replication
                    .iter()
                    .flatten()
                    .filter_map(|(id, l)| l.map(|l| (*id, l.index)))
                    .collect();
                held.push((m.id, m.last_log_index.unwrap_or(0)));
                for (node, index) in held {
                    if index == 0 || recorded.1.contains(&node) {
                        continue;
                    }
                    let known = match this.held_log_record(node).await {
                        Ok(Some(_)) => true,
                        Ok(None) => this
                            .propose_checked(Command::HeldLog { node, index })
                            .await
                            .inspect_err(
                                |e| tracing::debug!(node, error = %e, "recording a member's log"),
                            )
                            .is_ok(),
                        Err(_) => false,
                    };
                    if known {
                        recorded.1.push(node);
                    }
                }
            }
        });
    }
}

/// What a starting node whose log is empty does (`me`; `form_group`: started to form the
/// group, not to join one; `peers`: how many nodes its configured peers name, itself
/// included), from its peers' answers. Silence proves nothing: a node whose data is gone
/// and whose peers it cannot reach yet (sim seed 1064, their answers dropped) formed a new
/// group and voted with an empty log, and a stale leader won with its vote.
fn decide(
    me: NodeId,
    form_group: bool,
    peers: usize,
    answers: &[(NodeId, HeldLogAnswer)],
) -> Verdict {
    if let Some((peer, a)) = answers.iter().find(|(_, a)| a.replicating)
        && let Some(held) = a.held
    {
        return Verdict::Held(*peer, held);
    }
    if !answers.iter().any(|(_, a)| a.initialized) {
        if answers.iter().any(|(_, a)| a.joining) {
            return Verdict::Wait(
                "a peer waits to join a group, and no peer that answered holds its log".into(),
            );
        }
        // A new group, when most of the nodes it is formed from (this one too) say so.
        let fresh = answers.len() + 1;
        return if form_group && 2 * fresh > peers {
            Verdict::Start { form: true }
        } else {
            Verdict::Wait(format!(
                "{} of the other {} nodes answered, none holds the group's log",
                answers.len(),
                peers.saturating_sub(1)
            ))
        };
    }
    let voters: BTreeSet<NodeId> = answers
        .iter()
        .filter(|(_, a)| a.initialized)
        .flat_map(|(_, a)| a.voters.iter().map(|(id, _)| *id))
        .collect();
    // Not a voter in any membership a member answered with: it cannot elect anyone, and
    // it is added as a learner that catches up first.
    if !voters.contains(&me) {
        return Verdict::Start { form: false };
    }
    // The group's record of it is on a majority of the voters, which may be this node and
    // the ones that do not answer: every other voter must answer.
    let missing: Vec<NodeId> = voters
        .iter()
        .copied()
        .filter(|v| *v != me && !answers.iter().any(|(id, _)| id == v))
        .collect();
    if !missing.is_empty() {
        return Verdict::Wait(format!("voters {missing:?} have not answered"));
    }
    match held_by_the_group(answers) {
        Some((peer, held)) => Verdict::Held(peer, held),
        None => Verdict::Start { form: false },
    }
}

/// Whether the group knows a starting node has held the log, from the answers of every
/// voter: as the answer from the latest state says. Records are applied in log order and a
/// removal forgets one, so the peer that applied the most holds the group's latest word: a
/// removed node far behind may still hold the record of a member that was removed and is
/// joining again (sim seed 540), and a peer that has not applied a record yet is behind
/// the one that has.
fn held_by_the_group(answers: &[(NodeId, HeldLogAnswer)]) -> Option<(NodeId, u64)> {
    let (peer, latest) = answers.iter().max_by_key(|(_, a)| a.applied)?;
    latest.held.map(|h| (*peer, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer from a member of a group whose voters are `voters`.
    fn member(
        held: Option<u64>,
        replicating: bool,
        applied: u64,
        voters: &[NodeId],
    ) -> HeldLogAnswer {
        HeldLogAnswer {
            held,
            replicating,
            applied,
            initialized: true,
            joining: false,
            voters: voters
                .iter()
                .map(|v| (*v, format!("127.0.0.1:{}", 9000 + v)))
                .collect(),
        }
    }

    /// An answer from a node with no log (`joining`: started to join a group).
    fn empty(joining: bool) -> HeldLogAnswer {
        HeldLogAnswer {
            held: None,
            replicating: false,
            applied: 0,
            initialized: false,
            joining,
            voters: Vec::new(),
        }
    }

    const START: Verdict = Verdict::Start { form: false };
    const FORM: Verdict = Verdict::Start { form: true };

    fn waits(v: Verdict) -> bool {
        matches!(v, Verdict::Wait(_))
    }

    #[test]
    fn silence_or_a_minority_of_answers_does_not_form_a_group() {
        // Seed 1064: node 1, wiped, heard from nobody; it formed a new group and voted.
        assert!(waits(decide(1, true, 3, &[])));
        // Alone in its configuration, it forms the group at once.
        assert_eq!(decide(1, true, 1, &[]), FORM);
        // Most of the nodes (itself too) have no log: a new group.
        assert_eq!(decide(1, true, 3, &[(2, empty(false))]), FORM);
        assert!(waits(decide(1, true, 5, &[(2, empty(false))])));
        // A node started to join forms nothing, and a peer waiting to join says a group
        // exists somewhere (seed 1064: node 2 was rejoining).
        assert!(waits(decide(
            4,
            false,
            4,
            &[(1, empty(false)), (2, empty(false))]
        )));
        assert!(waits(decide(
            1,
            true,
            3,
            &[(2, empty(true)), (3, empty(false))]
        )));
    }

    #[test]
    fn every_other_voter_answers_before_a_member_starts_with_an_empty_log() {
        let v = [1, 2, 3];
        // Node 3 holds the record and does not answer: node 2, behind, cannot tell.
        assert!(waits(decide(
            1,
            true,
            3,
            &[(2, member(None, false, 222, &v))]
        )));
        let all = [
            (2, member(None, false, 222, &v)),
            (3, member(Some(600), false, 800, &v)),
        ];
        assert_eq!(decide(1, true, 3, &all), Verdict::Held(3, 600));
        // A voter that never held the log (down when the group formed) starts.
        let none = [
            (2, member(None, false, 40, &v)),
            (3, member(None, false, 41, &v)),
        ];
        assert_eq!(decide(1, true, 3, &none), START);
        // A voter the peers' list does not name is waited for too.
        let grown = [1, 2, 3, 4];
        assert!(waits(decide(
            1,
            true,
            3,
            &[
                (2, member(None, false, 9, &grown)),
                (3, member(None, false, 9, &grown))
            ]
        )));
        // Not a voter in any membership that answered: it starts (it is added as a
        // learner), and forms nothing.
        assert_eq!(
            decide(4, false, 4, &[(1, member(None, false, 9, &v))]),
            START
        );
    }

    #[test]
    fn the_latest_state_decides_whether_a_starting_node_held_the_log() {
        let v = [1, 2, 3];
        // Seed 540: a removed node far behind still records it; the group has forgotten
        // the record since (its removal), and the latest state says so.
        let rejoining = [
            (3, member(Some(12), false, 30, &v)),
            (2, member(None, false, 300, &[2, 3])),
        ];
        assert_eq!(decide(1, false, 3, &rejoining), START);
        // A wiped member: the peer that applied the record is ahead of one that has not.
        let wiped = [
            (2, member(None, false, 90, &v)),
            (3, member(Some(80), false, 95, &v)),
        ];
        assert_eq!(decide(1, true, 3, &wiped), Verdict::Held(3, 80));
        // A leader replicating to it now knows, whatever the records say, and whoever
        // else answers.
        let led = [(3, member(Some(7), true, 10, &v))];
        assert_eq!(decide(1, true, 3, &led), Verdict::Held(3, 7));
    }
}
