//! How a node's peer requests travel ([`PeerTransport`]), and the one HTTP client that
//! carries them between processes ([`PeerHttp`]): Raft RPC ([`super::network`]), clock
//! samples, and the API's forwarding to the leader all share its connection pool and its TLS
//! settings, so a node never reaches a peer over plain HTTP when its group runs TLS. A
//! simulation replaces the transport with an in-memory router (`raftmq-sim`).
//!
//! Must never: choose what to trust by itself; the TLS client configuration (roots, client
//! certificate) comes whole from whoever starts the node. A transport never retries on its
//! own (openraft decides).

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::consensus::peer_auth::PEER_HEADER;
use crate::consensus::rpc::PeerRpc;

/// Why a peer request got no answer.
#[derive(Debug, Clone)]
pub enum SendError {
    /// The peer could not be reached (nothing was delivered).
    Unreachable(String),
    /// No answer within the time allowed (it may have been delivered).
    Timeout,
    /// Anything else: an error status, a broken answer.
    Other(String),
}

/// Carries one peer request to the node at an address and brings back its answer.
pub trait PeerTransport: Send + Sync + std::fmt::Debug + 'static {
    /// Sends `body` as `rpc` to `addr` (a member's address as the membership names it),
    /// with `credentials` as the peer header's value, waiting at most `ttl`.
    fn send(
        &self,
        addr: &str,
        rpc: PeerRpc,
        credentials: Option<String>,
        body: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<Bytes, SendError>>;
}

/// A peer client and the URL scheme it speaks. Cheap to clone (one shared pool).
#[derive(Clone, Debug)]
pub struct PeerHttp {
    client: reqwest::Client,
    scheme: &'static str,
}

impl PeerHttp {
    /// A client connecting from `source_ip` if given; with `tls`, every peer is reached
    /// over HTTPS with that configuration.
    pub fn new(
        source_ip: Option<IpAddr>,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<PeerHttp, reqwest::Error> {
        let builder = reqwest::Client::builder()
            .local_address(source_ip)
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_millis(500));
        let (builder, scheme) = match tls {
            Some(tls) => (builder.use_preconfigured_tls(tls), "https"),
            None => (builder, "http"),
        };
        Ok(PeerHttp {
            client: builder.build()?,
            scheme,
        })
    }

    /// `scheme://addr{path}`.
    pub fn url(&self, addr: &str, path: &str) -> String {
        format!("{}://{addr}{path}", self.scheme)
    }

    /// The client (its pool is shared by every clone).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

impl PeerTransport for PeerHttp {
    fn send(
        &self,
        addr: &str,
        rpc: PeerRpc,
        credentials: Option<String>,
        body: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<Bytes, SendError>> {
        let mut req = self
            .client
            .post(self.url(addr, rpc.path()))
            .header("content-type", "application/octet-stream")
            .timeout(ttl);
        if let Some(h) = credentials {
            req = req.header(PEER_HEADER, h);
        }
        let addr = addr.to_owned();
        Box::pin(async move {
            let resp = req.body(body).send().await.map_err(|e| {
                if e.is_connect() {
                    SendError::Unreachable(e.to_string())
                } else if e.is_timeout() {
                    SendError::Timeout
                } else {
                    SendError::Other(e.to_string())
                }
            })?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| {
                if e.is_timeout() {
                    SendError::Timeout
                } else {
                    SendError::Other(e.to_string())
                }
            })?;
            if !status.is_success() {
                return Err(SendError::Other(format!(
                    "peer {addr} answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                )));
            }
            Ok(bytes)
        })
    }
}
