//! `NodeConfig`: every setting of a node, from a TOML file, then `RAFTMQ_*` environment
//! variables, then command-line flags (later ones win), validated once at start.
//!
//! Must never: be read anywhere but at start-up; library crates get plain structs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::tls::TlsFiles;

/// When an entry counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Flush {
    /// Acknowledge only after fsync on a majority.
    Sync,
    /// Acknowledge on a majority in memory; fsync within `flush_interval_ms`.
    Async,
}

/// Settings as given on the command line (and in `RAFTMQ_*` variables).
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct NodeArgs {
    /// TOML file with the same settings (flags override it).
    #[arg(long, env = "RAFTMQ_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// This node's id within its group.
    #[arg(long, env = "RAFTMQ_NODE_ID")]
    pub(crate) node_id: Option<u64>,
    /// Address to serve HTTP (public API and Raft RPC) on.
    #[arg(long, env = "RAFTMQ_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,
    /// Address peers and clients reach this node at, if not --listen (behind a proxy).
    #[arg(long, env = "RAFTMQ_ADVERTISE")]
    pub(crate) advertise: Option<SocketAddr>,
    /// Source IP for connections to peers (lets a proxy or firewall tell nodes apart).
    #[arg(long, env = "RAFTMQ_PEER_SOURCE_IP")]
    pub(crate) peer_source_ip: Option<std::net::IpAddr>,
    /// Directory for the CommitLog and indexes.
    #[arg(long, env = "RAFTMQ_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The group's members: `1=127.0.0.1:8081,2=127.0.0.1:8082,...`.
    #[arg(long, env = "RAFTMQ_PEERS")]
    pub(crate) peers: Option<String>,
    /// Broker group name (part of every message id).
    #[arg(long, env = "RAFTMQ_GROUP")]
    pub(crate) group: Option<String>,
    /// `sync` (default): ack after fsync on a majority; `async`: ack from memory.
    #[arg(long, env = "RAFTMQ_FLUSH")]
    pub(crate) flush: Option<Flush>,
    /// With `--flush async`: fsync at least this often.
    #[arg(long, env = "RAFTMQ_FLUSH_INTERVAL_MS")]
    pub(crate) flush_interval_ms: Option<u64>,
    /// Create a missing topic on first produce.
    #[arg(long, env = "RAFTMQ_AUTO_CREATE_TOPICS")]
    pub(crate) auto_create_topics: Option<bool>,
    /// Queue count of auto-created topics.
    #[arg(long, env = "RAFTMQ_DEFAULT_QUEUES")]
    pub(crate) default_queues: Option<u32>,
    /// Retention of auto-created topics, ms.
    #[arg(long, env = "RAFTMQ_DEFAULT_RETENTION_MS")]
    pub(crate) default_retention_ms: Option<u64>,
    /// NameServers to register with by heartbeat (`host:port`, comma-separated).
    #[arg(long, env = "RAFTMQ_NAMESERVERS", value_delimiter = ',')]
    pub(crate) nameservers: Option<Vec<String>>,
    /// Check-backs of an undecided transaction before it is rolled back (1 to 1000).
    #[arg(long, env = "RAFTMQ_TXN_MAX_CHECKS")]
    pub(crate) txn_max_checks: Option<u32>,
    /// The only hosts a transaction's check_url may name, comma-separated (default: any).
    #[arg(long, env = "RAFTMQ_TXN_CHECK_HOSTS", value_delimiter = ',')]
    pub(crate) txn_check_hosts: Option<Vec<String>>,
    /// CommitLog segment size, bytes.
    #[arg(long, env = "RAFTMQ_SEGMENT_SIZE")]
    pub(crate) segment_size: Option<u64>,
    /// Largest accepted request body, bytes.
    #[arg(long, env = "RAFTMQ_MAX_REQUEST_BYTES")]
    pub(crate) max_request_bytes: Option<usize>,
    /// Raft heartbeat interval, ms.
    #[arg(long, env = "RAFTMQ_HEARTBEAT_MS")]
    pub(crate) heartbeat_ms: Option<u64>,
    /// Raft election timeout lower bound, ms (the upper bound is twice this).
    #[arg(long, env = "RAFTMQ_ELECTION_TIMEOUT_MS")]
    pub(crate) election_timeout_ms: Option<u64>,
    /// How often retention runs, ms.
    #[arg(long, env = "RAFTMQ_RETENTION_CHECK_MS")]
    pub(crate) retention_check_ms: Option<u64>,
    /// Refuse new writes (507 DISK_FULL) while the data volume has less free space than
    /// this, bytes (default: 1 GiB, or 5 % of the volume if that is smaller).
    #[arg(long, env = "RAFTMQ_MIN_FREE_BYTES")]
    pub(crate) min_free_bytes: Option<u64>,
    /// A file holding the cluster secret (the same on every node) that authenticates peer
    /// requests; `RAFTMQ_CLUSTER_SECRET` gives the secret itself.
    #[arg(long, env = "RAFTMQ_CLUSTER_SECRET_FILE")]
    pub(crate) cluster_secret_file: Option<PathBuf>,
    /// The cluster secret itself (for `raftmq dev`; prefer the file or the variable).
    #[arg(skip)]
    pub(crate) cluster_secret: Option<String>,
    /// A file holding the admin token: with one, every `/v1` request and `/metrics` needs a
    /// bearer token (this one or a user's); `RAFTMQ_ADMIN_TOKEN` gives the token itself.
    #[arg(long, env = "RAFTMQ_ADMIN_TOKEN_FILE")]
    pub(crate) admin_token_file: Option<PathBuf>,
    /// PEM certificate chain: with --tls-key, the node serves HTTPS only (clients and
    /// peers) and reaches its peers over HTTPS. SIGHUP reloads it.
    #[arg(long, env = "RAFTMQ_TLS_CERT")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "RAFTMQ_TLS_KEY")]
    pub(crate) tls_key: Option<PathBuf>,
    /// PEM CA certificates: peers verify each other's certificates against them (server
    /// and client side); without it peer links are encrypted but not verified.
    #[arg(long, env = "RAFTMQ_TLS_CA")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Join an existing group (wait to be added with POST /v1/cluster/members) instead of
    /// forming one from --peers.
    #[arg(long, env = "RAFTMQ_JOIN")]
    pub(crate) join: bool,
}

/// The same settings in a TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<u64>,
    listen: Option<SocketAddr>,
    advertise: Option<SocketAddr>,
    peer_source_ip: Option<std::net::IpAddr>,
    data_dir: Option<PathBuf>,
    peers: Option<String>,
    group: Option<String>,
    flush: Option<Flush>,
    flush_interval_ms: Option<u64>,
    auto_create_topics: Option<bool>,
    default_queues: Option<u32>,
    default_retention_ms: Option<u64>,
    txn_max_checks: Option<u32>,
    txn_check_hosts: Option<Vec<String>>,
    nameservers: Option<Vec<String>>,
    segment_size: Option<u64>,
    max_request_bytes: Option<usize>,
    heartbeat_ms: Option<u64>,
    election_timeout_ms: Option<u64>,
    retention_check_ms: Option<u64>,
    min_free_bytes: Option<u64>,
    cluster_secret_file: Option<PathBuf>,
    admin_token_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    join: Option<bool>,
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub(crate) struct NodeConfig {
    /// This node's id.
    pub(crate) node_id: u64,
    /// HTTP listen address.
    pub(crate) listen: SocketAddr,
    /// Address in `peers` (defaults to `listen`).
    pub(crate) advertise: SocketAddr,
    /// Source IP of connections to peers.
    pub(crate) peer_source_ip: Option<std::net::IpAddr>,
    /// Data directory.
    pub(crate) data_dir: PathBuf,
    /// Group members: id -> HTTP address.
    pub(crate) peers: BTreeMap<u64, String>,
    /// Broker group name (`--group`, `group` in TOML, as API.md names them).
    pub(crate) broker_group: String,
    /// Flush policy.
    pub(crate) flush: Flush,
    /// Async flush interval, ms.
    pub(crate) flush_interval_ms: u64,
    /// Auto-create topics on produce.
    pub(crate) auto_create_topics: bool,
    /// Queues of auto-created topics.
    pub(crate) default_queues: u32,
    /// Retention of auto-created topics, ms.
    pub(crate) default_retention_ms: u64,
    /// Check-backs of an undecided transaction before it is rolled back.
    pub(crate) txn_max_checks: u32,
    /// The only hosts a check_url may name (`None`: any).
    pub(crate) txn_check_hosts: Option<Vec<String>>,
    /// NameServers this node registers with.
    pub(crate) nameservers: Vec<String>,
    /// Segment size, bytes.
    pub(crate) segment_size: u64,
    /// Request body limit, bytes.
    pub(crate) max_request_bytes: usize,
    /// Heartbeat, ms.
    pub(crate) heartbeat_ms: u64,
    /// Election timeout lower bound, ms.
    pub(crate) election_timeout_ms: u64,
    /// Wait to be added to an existing group rather than forming one.
    pub(crate) join: bool,
    /// Retention period check, ms.
    pub(crate) retention_check_ms: u64,
    /// Free-space floor for new writes, bytes (`None`: the default for the volume).
    pub(crate) min_free_bytes: Option<u64>,
    /// The cluster secret (never logged).
    pub(crate) cluster_secret: Option<Vec<u8>>,
    /// The admin token (never logged): client authentication is on when it is set.
    pub(crate) admin_token: Option<String>,
    /// TLS files (`None`: plain HTTP).
    pub(crate) tls: Option<TlsFiles>,
}

/// Parses `1=127.0.0.1:8081,2=127.0.0.1:8082`.
pub(crate) fn parse_peers(s: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("peers: `{part}` is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("peers: `{id}` is not a node id"))?;
        let addr = addr.trim();
        addr.parse::<SocketAddr>()
            .with_context(|| format!("peers: `{addr}` is not HOST:PORT"))?;
        if peers.insert(id, addr.to_owned()).is_some() {
            bail!("peers: node id {id} appears twice");
        }
    }
    Ok(peers)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 127
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl NodeConfig {
    /// Merges file, environment and flags (`auto_create_default` differs for `dev`).
    pub(crate) fn load(args: &NodeArgs, auto_create_default: bool) -> anyhow::Result<NodeConfig> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        macro_rules! pick {
            ($f:ident) => {
                args.$f.clone().or(file.$f.clone())
            };
        }
        let node_id = pick!(node_id).context("--node-id is required")?;
        let listen = pick!(listen).context("--listen is required")?;
        let data_dir = pick!(data_dir).context("--data-dir is required")?;
        let advertise = pick!(advertise).unwrap_or(listen);
        let peers = match pick!(peers) {
            Some(p) => parse_peers(&p)?,
            None => BTreeMap::from([(node_id, advertise.to_string())]),
        };
        let cfg = NodeConfig {
            node_id,
            listen,
            advertise,
            peer_source_ip: pick!(peer_source_ip),
            data_dir,
            peers,
            broker_group: pick!(group).unwrap_or_else(|| "g1".into()),
            flush: pick!(flush).unwrap_or(Flush::Sync),
            flush_interval_ms: pick!(flush_interval_ms).unwrap_or(50),
            auto_create_topics: pick!(auto_create_topics).unwrap_or(auto_create_default),
            default_queues: pick!(default_queues).unwrap_or(4),
            default_retention_ms: pick!(default_retention_ms).unwrap_or(72 * 3600 * 1000),
            txn_max_checks: pick!(txn_max_checks).unwrap_or(15),
            txn_check_hosts: pick!(txn_check_hosts),
            nameservers: pick!(nameservers).unwrap_or_default(),
            segment_size: pick!(segment_size).unwrap_or(256 << 20),
            max_request_bytes: pick!(max_request_bytes).unwrap_or(8 << 20),
            heartbeat_ms: pick!(heartbeat_ms).unwrap_or(100),
            election_timeout_ms: pick!(election_timeout_ms).unwrap_or(300),
            join: args.join || file.join.unwrap_or(false),
            retention_check_ms: pick!(retention_check_ms).unwrap_or(60_000),
            min_free_bytes: pick!(min_free_bytes),
            cluster_secret: secret(
                "cluster secret",
                args.cluster_secret.clone(),
                "RAFTMQ_CLUSTER_SECRET",
                args.cluster_secret_file
                    .as_ref()
                    .or(file.cluster_secret_file.as_ref()),
                1,
            )?
            .map(String::into_bytes),
            admin_token: secret(
                "admin token",
                None,
                "RAFTMQ_ADMIN_TOKEN",
                args.admin_token_file
                    .as_ref()
                    .or(file.admin_token_file.as_ref()),
                16,
            )?,
            tls: tls_files(pick!(tls_cert), pick!(tls_key), pick!(tls_ca))?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        match self.peers.get(&self.node_id) {
            None => bail!("peers: this node ({}) is not in the list", self.node_id),
            Some(addr) if addr.parse::<SocketAddr>().ok() != Some(self.advertise) => {
                bail!(
                    "peers: node {} is listed at {addr} but it is reached at {} (--advertise, else --listen)",
                    self.node_id,
                    self.advertise
                )
            }
            Some(_) => {}
        }
        if !valid_name(&self.broker_group) {
            bail!("group: must match ^[A-Za-z0-9_-]{{1,127}}$");
        }
        if !(1..=1024).contains(&self.default_queues) {
            bail!("default_queues: must be between 1 and 1024");
        }
        if !(1..=1000).contains(&self.txn_max_checks) {
            bail!("txn_max_checks: must be between 1 and 1000");
        }
        if self.heartbeat_ms == 0 || self.election_timeout_ms < 2 * self.heartbeat_ms {
            bail!("election_timeout_ms must be at least twice heartbeat_ms (and heartbeat_ms > 0)");
        }
        if !(1024..=raftmq_raft::MAX_REQUEST_BYTES).contains(&self.max_request_bytes) {
            bail!(
                "max_request_bytes: must be between 1024 and {} (a produce batch must fit in one CommitLog record)",
                raftmq_raft::MAX_REQUEST_BYTES
            );
        }
        if self.retention_check_ms == 0 {
            bail!("retention_check_ms: must be positive");
        }
        if self.flush_interval_ms == 0 {
            bail!("flush_interval_ms: must be positive");
        }
        Ok(())
    }
}

/// TLS is on with a certificate and its key; a CA alone, or one of the pair, is an error.
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> anyhow::Result<Option<TlsFiles>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key, ca })),
        (None, None) if ca.is_some() => bail!("tls_ca: needs tls_cert and tls_key"),
        (None, None) => Ok(None),
        (Some(_), None) => bail!("tls_cert: needs tls_key"),
        (None, Some(_)) => bail!("tls_key: needs tls_cert"),
    }
}

/// A secret (the cluster secret, the admin token): given directly (dev), by the variable
/// `env`, or in a file (flag, variable, or config), trimmed; an empty or short one is
/// refused.
pub(crate) fn secret(
    what: &str,
    direct: Option<String>,
    env: &str,
    path: Option<&PathBuf>,
    min_len: usize,
) -> anyhow::Result<Option<String>> {
    let secret = if let Some(s) = direct {
        Some(s)
    } else if let Ok(s) = std::env::var(env) {
        Some(s)
    } else if let Some(path) = path {
        Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("{what}: reading {}", path.display()))?,
        )
    } else {
        None
    };
    match secret.map(|s| s.trim().to_owned()) {
        Some(s) if s.is_empty() => bail!("{what}: must not be empty"),
        Some(s) if s.len() < min_len => bail!("{what}: must be at least {min_len} bytes"),
        Some(s) => Ok(Some(s)),
        None => Ok(None),
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_errors_name_the_problem() {
        let p = parse_peers("1=127.0.0.1:8081, 2=127.0.0.1:8082").unwrap();
        assert_eq!(p.len(), 2);
        assert!(
            parse_peers("1=nope")
                .unwrap_err()
                .to_string()
                .contains("nope")
        );
        assert!(parse_peers("1=127.0.0.1:1,1=127.0.0.1:2").is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "node_id = 1\nlisten = \"127.0.0.1:9001\"\ndata_dir = \"/tmp/x\"\ndefault_queues = 8\n",
        )
        .unwrap();
        let args = NodeArgs {
            config: Some(file.clone()),
            default_queues: Some(2),
            ..NodeArgs::default()
        };
        let cfg = NodeConfig::load(&args, false).unwrap();
        assert_eq!(cfg.default_queues, 2);
        assert_eq!(cfg.node_id, 1);
        assert_eq!(cfg.peers.len(), 1);
        std::fs::write(&file, "node_id = 1\nbogus = 3\n").unwrap();
        assert!(NodeConfig::load(&args, false).is_err());
    }

    #[test]
    fn a_request_limit_no_commit_log_record_can_hold_is_refused_at_start() {
        let args = |max: usize| NodeArgs {
            node_id: Some(1),
            listen: Some("127.0.0.1:9001".parse().unwrap()),
            data_dir: Some("/tmp/x".into()),
            max_request_bytes: Some(max),
            ..NodeArgs::default()
        };
        assert!(NodeConfig::load(&args(8 << 20), false).is_ok());
        let err = NodeConfig::load(&args(200 << 20), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_request_bytes"), "{err}");
    }
}
