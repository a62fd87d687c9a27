//! Forming a broker group without an init step: nodes started with the same `peers` form
//! the group by themselves; and refusing to start a member whose data is gone.
//!
//! A node that starts with an empty log asks its peers first whether one of them, leading
//! the group, has replicated to it before (etcd's "member already bootstrapped" check). If
//! so, its data was lost (a wiped or replaced disk), and as the same member it would vote at
//! once with nothing: with another node lagging, a leader missing acknowledged entries could
//! win. It stops instead and says how to replace it (remove, start with `--join`, add back).
//! Best effort: it catches the usual case, a node wiped and restarted while the leader that
//! replicated to it still leads; a leader elected while it was down has no record of it.
//!
//! Must never: initialize a node that has a log, or one started to join an existing group;
//! let a node refused here serve anything.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::impls::BasicNode;

use super::Broker;
use crate::consensus::rpc::{self, PeerRpc};
use crate::consensus::types::NodeId;
use crate::error::BrokerError;
use crate::state::RejectCode;

/// How long a starting node waits for each peer's answer about it.
const ASK_TIMEOUT: Duration = Duration::from_millis(1_000);

impl Broker {
    /// Fails when this node's log is empty but a peer leading the group has replicated its
    /// log to it before (see the module docs); peers that do not answer count as not
    /// knowing.
    pub(super) async fn refuse_if_data_lost(&self) -> Result<(), BrokerError> {
        if self.inner.raft.is_initialized().await.unwrap_or(true) {
            return Ok(());
        }
        let me = self.node_id();
        let asks = self
            .inner
            .cfg
            .peers
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, addr)| async move { (*id, self.ask_replicated(addr).await) });
        for (peer, matched) in futures::future::join_all(asks).await {
            if let Some(index) = matched {
                return Err(BrokerError::rejected(
                    RejectCode::Conflict,
                    format!(
                        "node {me} starts with an empty log, but node {peer}, leading the \
                         group, has replicated its log to it up to index {index}: this \
                         node's data is gone, and voting as the same member could lose \
                         acknowledged writes. Replace it: remove it from the group \
                         (DELETE /v1/cluster/members/{me} on any node), start it with --join, \
                         then add it back (POST /v1/cluster/members with its id, address and \
                         \"voter\": true)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The log index `addr`, if it leads, has replicated to this node.
    async fn ask_replicated(&self, addr: &str) -> Option<u64> {
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
        rpc::decode::<Option<u64>>(PeerRpc::Replicated.response_name(), &answer)
            .ok()
            .flatten()
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
