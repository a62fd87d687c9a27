//! Forming a broker group without an init step: nodes started with the same `peers` form
//! the group by themselves; and refusing to start a member whose data is gone.
//!
//! A node that starts with an empty log asks its peers first whether it has held the
//! group's log before (etcd's "member already bootstrapped" check): a peer leading the group
//! that has replicated to it says so, and so does any peer that applied the group's record
//! of it. The leader records each member once it has seen it hold the log (a `HeldLog`
//! entry, kept while the node is a member: removing it forgets the record), so the answer
//! survives leader changes. If it has, its data was lost (a wiped or replaced disk), and as
//! the same member it would vote at once with nothing: with another node lagging, a leader
//! missing acknowledged entries could win. It stops instead and says how to replace it
//! (remove, start with `--join`, add back); started with `--join`, it asks again for a few
//! seconds first, as a peer that has not applied the removal yet still holds the group's
//! record of it. Peers answer with the applied index their record is current as of, and
//! the latest answer decides (a removed node far behind may still hold a stale record).
//! Best effort still: the peers it can reach must
//! have applied the record (or lead), and a node wiped before the leader recorded it (its
//! first tenth of a second holding the log) is not caught.
//!
//! Must never: initialize a node that has a log, or one started to join an existing group;
//! let a node refused here serve anything.

use std::collections::BTreeMap;
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

impl Broker {
    /// Fails when this node's log is empty but a peer leading the group has replicated its
    /// log to it before (see the module docs); peers that do not answer count as not
    /// knowing. A node started to join asks again for up to [`JOIN_PATIENCE`] first.
    pub(super) async fn refuse_if_data_lost(&self) -> Result<(), BrokerError> {
        if self.inner.raft.is_initialized().await.unwrap_or(true) {
            return Ok(());
        }
        let cfg = &self.inner.cfg;
        let patience = if cfg.form_group {
            Duration::ZERO
        } else {
            JOIN_PATIENCE
        };
        let until = tokio::time::Instant::now() + patience;
        loop {
            let Some((peer, index)) = self.peer_that_saw_me_hold_the_log().await else {
                return Ok(());
            };
            if tokio::time::Instant::now() >= until {
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
            tracing::info!(
                peer,
                index,
                "a peer records this node as holding the log (a removal it has not applied \
                 yet?); asking again"
            );
            tokio::time::sleep(Duration::from_millis(cfg.timing.heartbeat_ms * 4)).await;
        }
    }

    /// A peer that knows this node has held the log, and how far.
    async fn peer_that_saw_me_hold_the_log(&self) -> Option<(NodeId, u64)> {
        let me = self.node_id();
        let asks = self
            .inner
            .cfg
            .peers
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, addr)| async move { Some((*id, self.ask_replicated(addr).await?)) });
        let answers: Vec<(NodeId, HeldLogAnswer)> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        held_by_the_group(&answers)
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

    /// On a node whose log is empty: the lowest id in `peers` initializes the group at
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
        Ok(rpc::encode(&HeldLogAnswer {
            held: seen.or(held),
            replicating: seen.is_some(),
            applied,
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

/// Whether the group knows a starting node has held the log, from its peers' answers: yes
/// if a leader replicates to it now; otherwise as the answer from the latest state says.
/// Records are applied in log order and a removal forgets one, so the peer that applied
/// the most holds the group's latest word: a removed node far behind may still hold the
/// record of a member that was removed and is joining again (sim seed 540), and a peer
/// that has not applied a record yet is behind the one that has.
fn held_by_the_group(answers: &[(NodeId, HeldLogAnswer)]) -> Option<(NodeId, u64)> {
    if let Some((peer, a)) = answers.iter().find(|(_, a)| a.replicating) {
        return a.held.map(|h| (*peer, h));
    }
    let (peer, latest) = answers.iter().max_by_key(|(_, a)| a.applied)?;
    latest.held.map(|h| (*peer, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(held: Option<u64>, replicating: bool, applied: u64) -> HeldLogAnswer {
        HeldLogAnswer {
            held,
            replicating,
            applied,
        }
    }

    #[test]
    fn the_latest_state_decides_whether_a_starting_node_held_the_log() {
        // No answers, or nobody knows of it: it may start.
        assert_eq!(held_by_the_group(&[]), None);
        assert_eq!(held_by_the_group(&[(2, answer(None, false, 40))]), None);
        // Seed 540: a removed node far behind still records it; the group has forgotten
        // the record since (its removal), and the latest state says so.
        let rejoining = [
            (3, answer(Some(12), false, 30)),
            (2, answer(None, false, 300)),
        ];
        assert_eq!(held_by_the_group(&rejoining), None);
        // A wiped member: the peer that applied the record is ahead of one that has not.
        let wiped = [
            (2, answer(None, false, 90)),
            (3, answer(Some(80), false, 95)),
        ];
        assert_eq!(held_by_the_group(&wiped), Some((3, 80)));
        // A leader replicating to it now knows, whatever the records say.
        let led = [
            (2, answer(None, false, 500)),
            (3, answer(Some(7), true, 10)),
        ];
        assert_eq!(held_by_the_group(&led), Some((3, 7)));
    }
}
