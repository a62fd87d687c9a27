//! Who may speak the peer protocol. With a cluster secret (the same on every node), each
//! peer request carries `x-raftmq-peer: <node>:<time ms>:<nonce>:<HMAC-SHA256 hex>`, a MAC
//! over the path, those fields and the body; a node checks it before decoding anything,
//! refuses a time outside ±[`WINDOW_MS`] of its group time and a (node, time, nonce) it has
//! seen, so a captured request cannot be replayed. Without a secret, peer requests are taken
//! only from the hosts of the group's members (and configured peers), and the node warns at
//! start. `/raft/clock` checks the MAC but not the time (it is how a node with a wrong clock
//! learns group time; answering it again reveals nothing).
//!
//! Must never: decode a peer body before it is authenticated, compare MACs in variable time,
//! or log the secret.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::consensus::rpc::PeerRpc;
use crate::consensus::types::NodeId;
use crate::error::BrokerError;
use crate::state::RejectCode;

/// The header carrying a peer request's credentials.
pub const PEER_HEADER: &str = "x-raftmq-peer";

/// How far a request's time may be from the receiver's group time.
pub const WINDOW_MS: u64 = 60_000;

type HmacSha256 = Hmac<Sha256>;

/// Requests seen within the window, to refuse replays.
#[derive(Debug, Default)]
struct Seen {
    keys: HashMap<(NodeId, u64, u64), ()>,
    order: VecDeque<(u64, (NodeId, u64, u64))>,
}

/// Signs and checks peer requests.
#[derive(Debug)]
pub struct PeerAuth {
    secret: Option<Vec<u8>>,
    seen: Mutex<Seen>,
}

fn refused(why: impl Into<String>) -> BrokerError {
    BrokerError::rejected(RejectCode::Unauthenticated, why)
}

impl PeerAuth {
    /// Peer authentication with `secret` (`None`: by member address only).
    pub fn new(secret: Option<Vec<u8>>) -> Self {
        PeerAuth {
            secret,
            seen: Mutex::default(),
        }
    }

    /// Whether requests are authenticated by the secret.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    fn mac(
        &self,
        secret: &[u8],
        path: &str,
        node: NodeId,
        time: u64,
        nonce: u64,
        body: &[u8],
    ) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(path.as_bytes());
        mac.update(&node.to_le_bytes());
        mac.update(&time.to_le_bytes());
        mac.update(&nonce.to_le_bytes());
        mac.update(body);
        mac
    }

    /// The header value for a request from `node` at group time `now` (`None` without a
    /// secret).
    pub fn sign(&self, rpc: PeerRpc, node: NodeId, now: u64, body: &[u8]) -> Option<String> {
        self.sign_path(rpc.path(), node, now, body)
    }

    /// [`PeerAuth::sign`] for a request to `path` that is not a peer RPC (a broker's
    /// registration with a NameServer).
    pub fn sign_path(&self, path: &str, node: NodeId, now: u64, body: &[u8]) -> Option<String> {
        let secret = self.secret.as_deref()?;
        let nonce: u64 = rand::random();
        let tag = self
            .mac(secret, path, node, now, nonce, body)
            .finalize()
            .into_bytes();
        Some(format!("{node}:{now}:{nonce:x}:{}", hex(&tag)))
    }

    /// Checks a request: its header (with a secret) or the sender's address (without), at
    /// the receiver's group time `now`. `members` are the hosts allowed without a secret.
    pub fn verify(
        &self,
        rpc: PeerRpc,
        header: Option<&str>,
        from: Option<IpAddr>,
        members: &[IpAddr],
        now: u64,
        body: &[u8],
    ) -> Result<(), BrokerError> {
        // `/raft/clock` is how a node with a wrong clock learns group time: no time check.
        let timed = rpc != PeerRpc::Clock;
        self.verify_path(rpc.path(), timed, header, from, members, now, body)
    }

    /// [`PeerAuth::verify`] for a request to `path` that is not a peer RPC; `timed`: refuse a
    /// time outside the window and a replay.
    #[allow(clippy::too_many_arguments)]
    pub fn verify_path(
        &self,
        path: &str,
        timed: bool,
        header: Option<&str>,
        from: Option<IpAddr>,
        members: &[IpAddr],
        now: u64,
        body: &[u8],
    ) -> Result<(), BrokerError> {
        let Some(secret) = self.secret.as_deref() else {
            return match from {
                // In-process callers (tests through the router) have no address.
                None => Ok(()),
                Some(ip) if members.contains(&ip) => Ok(()),
                Some(ip) => Err(refused(format!(
                    "peer requests are taken only from the group's members, not {ip}"
                ))),
            };
        };
        let header = header.ok_or_else(|| refused("missing peer credentials"))?;
        let mut parts = header.splitn(4, ':');
        let mut field = || {
            parts
                .next()
                .ok_or_else(|| refused("malformed peer credentials"))
        };
        let node: NodeId = field()?
            .parse()
            .map_err(|_| refused("malformed peer credentials"))?;
        let time: u64 = field()?
            .parse()
            .map_err(|_| refused("malformed peer credentials"))?;
        let nonce =
            u64::from_str_radix(field()?, 16).map_err(|_| refused("malformed peer credentials"))?;
        let tag = unhex(field()?).ok_or_else(|| refused("malformed peer credentials"))?;
        self.mac(secret, path, node, time, nonce, body)
            .verify_slice(&tag)
            .map_err(|_| refused("bad peer credentials"))?;
        if !timed {
            return Ok(());
        }
        if time.abs_diff(now) > WINDOW_MS {
            return Err(refused(format!(
                "peer request time {time} is more than {WINDOW_MS} ms from {now}"
            )));
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&(t, key)) = seen.order.front() {
            if t.saturating_add(2 * WINDOW_MS) >= now {
                break;
            }
            seen.order.pop_front();
            seen.keys.remove(&key);
        }
        let key = (node, time, nonce);
        if seen.keys.insert(key, ()).is_some() {
            return Err(refused("a replayed peer request"));
        }
        seen.order.push_back((time.max(now), key));
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_passes_once_and_nothing_else_does() {
        let a = PeerAuth::new(Some(b"secret".to_vec()));
        let h = a.sign(PeerRpc::Vote, 2, 1_000_000, b"body").unwrap();
        let ok =
            |h: Option<&str>, body: &[u8], now| a.verify(PeerRpc::Vote, h, None, &[], now, body);
        assert!(ok(Some(&h), b"body", 1_000_500).is_ok());
        assert!(ok(Some(&h), b"body", 1_000_500).is_err(), "a replay");
        let h2 = a.sign(PeerRpc::Vote, 2, 1_000_000, b"body").unwrap();
        assert!(ok(Some(&h2), b"other", 1_000_500).is_err(), "another body");
        assert!(
            ok(Some(&h2), b"body", 1_000_000 + 2 * WINDOW_MS).is_err(),
            "too old"
        );
        assert!(ok(None, b"body", 1_000_500).is_err(), "no credentials");
        let wrong = PeerAuth::new(Some(b"guess".to_vec()));
        let h3 = wrong.sign(PeerRpc::Vote, 2, 1_000_000, b"body").unwrap();
        assert!(ok(Some(&h3), b"body", 1_000_500).is_err(), "another secret");
        // The clock answers a signed request whatever its time.
        let h4 = a.sign(PeerRpc::Clock, 2, 1, b"").unwrap();
        assert!(
            a.verify(PeerRpc::Clock, Some(&h4), None, &[], 9_000_000, b"")
                .is_ok()
        );
    }

    #[test]
    fn without_a_secret_only_members_hosts_may_speak() {
        let a = PeerAuth::new(None);
        let member: IpAddr = "127.0.0.1".parse().unwrap();
        let outsider: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(
            a.verify(PeerRpc::Append, None, Some(member), &[member], 0, b"")
                .is_ok()
        );
        assert!(
            a.verify(PeerRpc::Append, None, Some(outsider), &[member], 0, b"")
                .is_err()
        );
    }
}
