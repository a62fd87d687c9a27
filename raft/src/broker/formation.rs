//! Forming a broker group without an init step: nodes started with the same `peers` form
//! the group by themselves.
//!
//! Must never: initialize a node that has a log, or one started to join an existing group.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::impls::BasicNode;

use super::Broker;
use crate::consensus::types::NodeId;

impl Broker {
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
