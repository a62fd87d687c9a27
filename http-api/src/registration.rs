//! A broker node's heartbeat to the NameServers (`--nameservers`): every
//! [`HEARTBEAT_EVERY`] it tells each one, independently, its group, id, address, role, the
//! leader it knows, its term and the topics its applied state holds, signed with the
//! cluster secret when there is one.
//!
//! Must never: let a slow or dead NameServer delay the heartbeat to another, or hold up
//! anything else the node does.

use std::sync::Arc;
use std::time::Duration;

use raftmq_raft::Broker;
use raftmq_raft::consensus::peer_auth::{PEER_HEADER, PeerAuth};

use crate::nameserver::{REGISTER_PATH, Registration, TopicRoute, wall_ms};

/// How often a node registers.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// What this node says about itself now.
async fn registration(broker: &Broker) -> Registration {
    let status = broker.cluster_status();
    let me = broker.node_id();
    let addr = status
        .member(me)
        .map(|m| m.addr.clone())
        .unwrap_or_default();
    let role = if broker.is_leader() {
        "leader"
    } else if status.member(me).is_some() {
        "follower"
    } else {
        "learner"
    };
    let topics = broker
        .topics()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(topic, spec)| TopicRoute {
            topic,
            queues: spec.own_queues().len() as u32,
            first_queue: spec.part.map(|p| p.first_queue),
            queue_space: spec.part.map(|p| p.queue_space),
        })
        .collect();
    Registration {
        group: broker.broker_group().to_owned(),
        node_id: me,
        addr,
        role: role.to_owned(),
        leader: broker.leader().map(|(_, addr)| addr),
        term: status.term,
        topics,
    }
}

/// Registers `broker` with every NameServer (`host:port`) until the process ends, from
/// `source_ip` when given (the node's peer source address).
pub fn spawn_registration(
    broker: Broker,
    nameservers: Vec<String>,
    cluster_secret: Option<Vec<u8>>,
    source_ip: Option<std::net::IpAddr>,
) -> Result<(), reqwest::Error> {
    if nameservers.is_empty() {
        return Ok(());
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .local_address(source_ip)
        .connect_timeout(Duration::from_millis(500))
        .timeout(HEARTBEAT_EVERY)
        .build()?;
    let auth = Arc::new(PeerAuth::new(cluster_secret));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !broker.is_running() {
                return;
            }
            let reg = registration(&broker).await;
            let body = serde_json::to_vec(&reg).expect("a registration serializes");
            let now = wall_ms();
            for ns in &nameservers {
                let mut req = http
                    .post(format!("http://{ns}{REGISTER_PATH}"))
                    .header("content-type", "application/json")
                    .body(body.clone());
                // A signature of its own for each: a NameServer refuses a replayed nonce.
                if let Some(sig) = auth.sign_path(REGISTER_PATH, reg.node_id, now, &body) {
                    req = req.header(PEER_HEADER, sig);
                }
                let ns = ns.clone();
                tokio::spawn(async move {
                    match req.send().await {
                        Ok(r) if r.status().is_success() => {}
                        Ok(r) => {
                            tracing::warn!(nameserver = %ns, status = %r.status(), "registration refused")
                        }
                        Err(e) => {
                            tracing::debug!(nameserver = %ns, error = %e, "registration failed")
                        }
                    }
                });
            }
        }
    });
    Ok(())
}
