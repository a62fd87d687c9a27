//! The broker group's membership and leadership: status, adding and removing members,
//! leader transfer, readiness, and the node's counters.
//!
//! Must never: promote a node to voter before openraft has caught it up as a learner.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::impls::BasicNode;
use openraft::type_config::alias::InstantOf;
use openraft::{ChangeMembers, Instant as _};

use super::{Broker, write_error};
use crate::consensus::types::{Metrics, NodeId, TypeConfig};
use crate::error::BrokerError;
use crate::state::RejectCode;

/// A member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRole {
    /// The leader.
    Leader,
    /// A voter that is not the leader.
    Follower,
    /// A non-voting member.
    Learner,
}

impl MemberRole {
    /// `leader`, `follower` or `learner`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Leader => "leader",
            MemberRole::Follower => "follower",
            MemberRole::Learner => "learner",
        }
    }
}

/// A member's view of the broker group, for `GET /v1/cluster`.
#[derive(Clone, Debug)]
pub struct ClusterStatus {
    /// Broker group name.
    pub broker_group: String,
    /// This node.
    pub node_id: NodeId,
    /// The leader it knows of.
    pub leader_id: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Committed index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Members: id, address, role, matched index (known on the leader).
    pub members: Vec<MemberStatus>,
}

impl ClusterStatus {
    /// The member with this id.
    pub fn member(&self, id: NodeId) -> Option<&MemberStatus> {
        self.members.iter().find(|m| m.id == id)
    }
}

/// One member in [`ClusterStatus`].
#[derive(Clone, Debug)]
pub struct MemberStatus {
    /// Node id.
    pub id: NodeId,
    /// HTTP address.
    pub addr: String,
    /// Its role.
    pub role: MemberRole,
    /// Last log index known to be replicated there.
    pub matched_index: Option<u64>,
}

/// This node's Raft and CommitLog counters, for `/metrics`.
#[derive(Clone, Copy, Debug)]
pub struct NodeStats {
    /// Current term.
    pub term: u64,
    /// Whether this node is the leader.
    pub is_leader: bool,
    /// Last committed log index.
    pub commit_index: u64,
    /// Last applied log index.
    pub applied_index: u64,
    /// Entries appended to the CommitLog.
    pub log_entries: u64,
    /// Payload bytes appended to the CommitLog.
    pub log_bytes: u64,
    /// `fdatasync` calls of the CommitLog writer.
    pub log_fsyncs: u64,
    /// Produce entries this node proposed as leader (concurrent requests for one topic
    /// share an entry).
    pub produce_entries: u64,
}

impl Broker {
    /// The voter sets of the latest membership in this node's log: two while a change is
    /// in its joint phase (both must agree to elect or commit).
    pub fn voter_sets(&self) -> Vec<Vec<NodeId>> {
        self.with_metrics(|m| {
            m.membership_config
                .membership()
                .get_joint_config()
                .iter()
                .map(|set| set.iter().copied().collect())
                .collect()
        })
    }

    /// A snapshot of the broker group's state for `GET /v1/cluster`.
    pub fn cluster_status(&self) -> ClusterStatus {
        self.with_metrics(|m| self.status_of(m))
    }

    fn status_of(&self, m: &Metrics) -> ClusterStatus {
        // A stopped Raft core, or a node outside the group, knows no leader, whatever it
        // last saw.
        let leader = m
            .current_leader
            .filter(|_| m.running_state.is_ok() && super::member(m));
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let replication = m.replication.clone().unwrap_or_default();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let role = if Some(*id) == leader {
                    MemberRole::Leader
                } else if voters.contains(id) {
                    MemberRole::Follower
                } else {
                    MemberRole::Learner
                };
                let matched_index = if *id == m.id {
                    m.last_log_index
                } else {
                    replication.get(id).and_then(|l| l.map(|l| l.index))
                };
                MemberStatus {
                    id: *id,
                    addr: node.addr.clone(),
                    role,
                    matched_index,
                }
            })
            .collect();
        ClusterStatus {
            broker_group: self.broker_group().to_owned(),
            node_id: m.id,
            leader_id: leader,
            term: m.current_term,
            commit_index: m.local_committed.map_or(0, |l| l.index),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            members,
        }
    }

    /// How long the CommitLog writer's `fdatasync` calls took.
    pub fn fsync_seconds(&self) -> &crate::metrics::Histogram {
        &self.inner.log.stats().fsync_seconds
    }

    /// How long apply calls took.
    pub fn apply_seconds(&self) -> &crate::metrics::Histogram {
        self.inner.sm.apply_seconds()
    }

    /// This node's counters.
    pub fn node_stats(&self) -> NodeStats {
        use std::sync::atomic::Ordering::Relaxed;
        let m = self.metrics();
        let log = self.inner.log.stats();
        NodeStats {
            term: m.current_term,
            is_leader: m.running_state.is_ok() && m.current_leader == Some(m.id),
            commit_index: m.local_committed.map_or(0, |l| l.index),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            log_entries: log.entries.load(Relaxed),
            log_bytes: log.bytes.load(Relaxed),
            log_fsyncs: log.fsyncs.load(Relaxed),
            produce_entries: self.inner.coalescer.entries(),
        }
    }

    /// Adds a node as a learner; if `voter`, waits until it has caught up with the log (at
    /// most `catch_up`) and only then promotes it. A node that does not catch up in time
    /// stays a learner, so an unreachable node can never become a voter and take the
    /// group's quorum with it.
    pub async fn add_member(
        &self,
        id: NodeId,
        addr: &str,
        voter: bool,
        catch_up: Duration,
    ) -> Result<(), BrokerError> {
        self.refuse_if_stopped()?;
        let added = self
            .inner
            .raft
            .add_learner(id, BasicNode::new(addr), false)
            .await
            .map_err(write_error)?;
        if !voter {
            return Ok(());
        }
        let target = added.log_id.index;
        let caught_up = self
            .inner
            .raft
            .wait(Some(catch_up))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .is_some_and(|matched| matched.index >= target)
                },
                "the new member to catch up",
            )
            .await;
        if caught_up.is_err() {
            return Err(BrokerError::Unavailable(format!(
                "node {id} did not catch up within {catch_up:?}; it stays a learner \
                 (check that it runs at {addr}, or remove it)"
            )));
        }
        self.inner
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(write_error)?;
        Ok(())
    }

    /// Removes a node (voter or learner) from the group.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), BrokerError> {
        self.refuse_if_stopped()?;
        let m = self.metrics();
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(BrokerError::rejected(
                RejectCode::Conflict,
                format!("node {id} is not a member"),
            ));
        }
        let change = if membership.voter_ids().any(|v| v == id) {
            let voters: Vec<NodeId> = membership.voter_ids().collect();
            let rest: Vec<NodeId> = voters.iter().copied().filter(|v| *v != id).collect();
            self.refuse_unless_a_live_majority(id, &voters, &rest)
                .await?;
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.inner
            .raft
            .change_membership(change, false)
            .await
            .map_err(write_error)?;
        Ok(())
    }

    /// On the leader: refuses to remove voter `id` unless a majority of the voters now,
    /// `voters`, and a majority of the voters left, `rest`, answer it after the request
    /// came (etcd's strict reconfiguration check; both configurations must commit the
    /// change). A removal they cannot commit stays pending in the log, and every later
    /// membership change waits behind it: with a node down, removing a live one instead of
    /// it wedged the group's membership (raftmq-sim, `--wipes --membership`: the down node
    /// could then never be replaced). Answers from before the request do not count: a node
    /// that died a moment ago answered then (sim seed 141: a node wiped 88 ms before the
    /// removal still counted, and the group never elected a leader again).
    async fn refuse_unless_a_live_majority(
        &self,
        id: NodeId,
        voters: &[NodeId],
        rest: &[NodeId],
    ) -> Result<(), BrokerError> {
        // Not the leader: openraft forwards or refuses the change itself.
        if !self.is_leader() {
            return Ok(());
        }
        let since = InstantOf::<TypeConfig>::now();
        let answered = move |m: &Metrics, set: &[NodeId]| -> Vec<NodeId> {
            let heartbeat = m.heartbeat.as_ref();
            set.iter()
                .copied()
                .filter(|v| {
                    *v == m.id
                        || heartbeat
                            .and_then(|h| h.get(v))
                            .and_then(|t| t.as_ref())
                            .is_some_and(|t| **t >= since)
                })
                .collect()
        };
        let majority = |m: &Metrics, set: &[NodeId]| answered(m, set).len() * 2 > set.len();
        // Live members answer within a heartbeat or two.
        let wait = Duration::from_millis(self.inner.cfg.timing.election_timeout_ms * 2);
        let live = self
            .inner
            .raft
            .wait(Some(wait))
            .metrics(
                |m| majority(m, voters) && majority(m, rest),
                "a majority of both configurations to answer",
            )
            .await;
        if live.is_ok() {
            return Ok(());
        }
        let (now, after) = self.with_metrics(|m| (answered(m, voters), answered(m, rest)));
        Err(BrokerError::rejected(
            RejectCode::Conflict,
            format!(
                "removing node {id} needs a majority of voters {voters:?} and of the voters                  left {rest:?} to answer the leader, and only {now:?} and {after:?} did                  within {wait:?}: the change could not commit, and every later membership                  change would wait behind it. Bring the others back (or remove a node that                  is down) first"
            ),
        ))
    }

    /// Asks the leader to hand leadership to `to`.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), BrokerError> {
        self.inner
            .raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| BrokerError::OutcomeUnknown(e.to_string()))
    }

    /// Waits until this node sees `id` as the leader; false if it did not within `timeout`.
    pub async fn wait_for_leader(&self, id: NodeId, timeout: Duration) -> bool {
        self.inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader == Some(id), "leader")
            .await
            .is_ok()
    }

    /// Whether the node's Raft core runs, it knows a leader, and it has applied what it
    /// last saw committed.
    pub fn is_ready(&self) -> bool {
        self.with_metrics(|m| {
            m.running_state.is_ok()
                && super::member(m)
                && m.current_leader.is_some()
                && m.last_applied.map(|l| l.index) >= m.local_committed.map(|l| l.index)
        })
    }
}
