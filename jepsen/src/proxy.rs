//! Per-node TCP proxies the harness owns: peers and clients reach node *j* only through
//! its proxy, and each node connects to peers from its own source IP (127.0.0.(10+i)), so
//! the proxy knows which link a connection belongs to and can cut it. A cut link holds new
//! connections open without forwarding (like dropped packets) and kills existing ones.
//!
//! Must never: listen or connect outside 127.0.0.0/8.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The source IP node `id` uses for peer traffic.
pub fn source_ip(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + id as u8))
}

fn node_of(ip: IpAddr) -> Option<u64> {
    match ip {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 0] && v4.octets()[3] > 10 => {
            Some(u64::from(v4.octets()[3] - 10))
        }
        _ => None,
    }
}

#[derive(Default)]
struct State {
    cut: HashSet<(u64, u64)>,
    conns: HashMap<(u64, u64), Vec<JoinHandle<()>>>,
}

/// All proxies of a cluster.
#[derive(Clone)]
pub struct Proxies {
    state: Arc<Mutex<State>>,
    heal: watch::Sender<u64>,
}

impl Default for Proxies {
    fn default() -> Self {
        Proxies {
            state: Arc::default(),
            heal: watch::Sender::new(0),
        }
    }
}

impl Proxies {
    /// Starts the proxy for node `to`: listens on `listen`, forwards to `target`.
    pub async fn spawn(
        &self,
        to: u64,
        listen: SocketAddr,
        target: SocketAddr,
    ) -> anyhow::Result<JoinHandle<()>> {
        let listener = TcpListener::bind(listen).await?;
        let this = self.clone();
        Ok(tokio::spawn(async move {
            while let Ok((inbound, peer)) = listener.accept().await {
                let from = node_of(peer.ip());
                this.handle(from, to, inbound, target);
            }
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handle(&self, from: Option<u64>, to: u64, mut inbound: TcpStream, target: SocketAddr) {
        let _ = inbound.set_nodelay(true);
        let Some(from) = from else {
            // A client: never cut.
            tokio::spawn(async move {
                if let Ok(mut out) = TcpStream::connect(target).await {
                    let _ = out.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
            return;
        };
        let mut st = self.lock();
        if st.cut.contains(&(from, to)) {
            // Hold it, forwarding nothing, until the partition heals.
            let mut heal = self.heal.subscribe();
            tokio::spawn(async move {
                let _ = heal.changed().await;
                drop(inbound);
            });
            return;
        }
        let task = tokio::spawn(async move {
            if let Ok(mut out) = TcpStream::connect(target).await {
                let _ = out.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            }
        });
        let conns = st.conns.entry((from, to)).or_default();
        conns.retain(|h| !h.is_finished());
        conns.push(task);
    }

    /// Cuts the given directed links (and kills their open connections).
    pub fn cut(&self, links: &[(u64, u64)]) {
        let mut st = self.lock();
        for &link in links {
            st.cut.insert(link);
            if let Some(conns) = st.conns.remove(&link) {
                for c in conns {
                    c.abort();
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
        self.heal.send_modify(|g| *g += 1);
    }

    /// Links currently cut.
    pub fn cut_links(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<_> = self.lock().cut.iter().copied().collect();
        v.sort();
        v
    }
}

/// Both directions of every link between `a` and `b`.
pub fn between(a: &[u64], b: &[u64]) -> Vec<(u64, u64)> {
    let mut links = Vec::new();
    for &x in a {
        for &y in b {
            if x != y {
                links.push((x, y));
                links.push((y, x));
            }
        }
    }
    links
}
