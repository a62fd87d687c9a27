//! The one HTTP client a node speaks to its peers with: Raft RPC ([`super::network`]),
//! clock samples, and the API's forwarding to the leader all share its connection pool and
//! its TLS settings, so a node never reaches a peer over plain HTTP when its group runs TLS.
//!
//! Must never: choose what to trust by itself; the TLS client configuration (roots, client
//! certificate) comes whole from whoever starts the node.

use std::net::IpAddr;
use std::time::Duration;

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
