//! The `raftmq` binary: `raftmq serve` (one node of a broker group), `raftmq nameserver`
//! (a route server), `raftmq dev` (three nodes on 127.0.0.1:8081-8083 in one process) and
//! `raftmq certs` (a development CA and certificates), and the client commands (`topic`,
//! `produce`, `consume`, `group`, `cluster`, `message`; [`cli`]). `raftmq bench` runs the separate `raftmq-bench` program installed beside
//! it, so the server carries no load generator.
//!
//! Must never: hold business logic; it wires configuration, tracing, the runtime, storage,
//! Raft, TLS and HTTP together, reloads TLS files on SIGHUP, and shuts everything down on
//! SIGTERM or Ctrl-C.

mod certs;
mod cli;
mod client;
mod config;
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use raftmq_http_api::ApiConfig;
use raftmq_raft::{Broker, BrokerConfig, FlushPolicy, RaftTiming};
use tokio::net::TcpListener;

use config::{Flush, NodeArgs, NodeConfig};
use tls::Tls;

#[derive(Parser, Debug)]
#[command(
    name = "raftmq",
    version,
    about = "A Raft-replicated message queue with an HTTP API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: cli::ClientOpts,
    /// Log lines as `text` (for people) or `json` (one object per line, with the request's
    /// span fields such as `request_id`, for log shippers).
    #[arg(long, global = true, env = "RAFTMQ_LOG_FORMAT", default_value = "text",
          value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a 3-node cluster on 127.0.0.1:8081-8083 in one process (auto-create topics on);
    /// `--groups 2`: two groups on 8081-8086 and a NameServer.
    Dev {
        /// Keep data here (default: a temporary directory removed on exit).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// First port (each group's three nodes take the next three).
        #[arg(long, default_value_t = 8081)]
        base_port: u16,
        /// Broker groups of three nodes each; with more than one, a NameServer on
        /// 127.0.0.1:9876 routes between them.
        #[arg(long, default_value_t = 1)]
        groups: u16,
    },
    /// Run one node of a broker group.
    Serve(Box<NodeArgs>),
    /// Run a NameServer: the route table that broker nodes register with by heartbeat
    /// (`GET /v1/routes`, `GET /v1/routes/{topic}`). Run two or more; they share nothing.
    Nameserver {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9876")]
        listen: SocketAddr,
        /// A node missing this long drops out of the routes.
        #[arg(long, default_value_t = 10_000)]
        route_expiry_ms: u64,
        /// A file holding the cluster secret: registrations must be signed with it
        /// (`RAFTMQ_CLUSTER_SECRET` gives the secret itself).
        #[arg(long, env = "RAFTMQ_CLUSTER_SECRET_FILE")]
        cluster_secret_file: Option<PathBuf>,
    },
    /// Make a private CA in DIR (once) and issue a certificate and key from it, for test
    /// and development clusters (`--tls-cert`, `--tls-key`, `--tls-ca`).
    Certs {
        /// Directory for `ca.pem`, `ca-key.pem`, `NAME.pem` and `NAME-key.pem`.
        dir: PathBuf,
        /// IP addresses and DNS names the certificate is valid for.
        #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,localhost")]
        hosts: Vec<String>,
        /// File name stem of the new certificate.
        #[arg(long, default_value = "node")]
        name: String,
    },
    /// Topics: create, list, describe, delete.
    #[command(subcommand)]
    Topic(cli::TopicCmd),
    /// Produce `--body`, or one message per line of standard input.
    Produce(cli::ProduceArgs),
    /// Receive and ack as a consumer group (`--group G`), or read a queue by offset
    /// (`--queue Q --offset N`); `--follow` keeps going.
    Consume(cli::ConsumeArgs),
    /// Consumer groups: list, describe (lag per queue), reset offsets.
    #[command(subcommand)]
    Group(cli::GroupCmd),
    /// The broker group: status, add-member, remove-member, transfer-leader.
    #[command(subcommand)]
    Cluster(cli::ClusterCmd),
    /// Messages: get one by id.
    #[command(subcommand)]
    Message(cli::MessageCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Measure throughput, latency, failover and catch-up over the HTTP API (runs the
    /// `raftmq-bench` program beside this one; `raftmq bench --help` lists its options).
    #[command(disable_help_flag = true)]
    Bench {
        /// Options of raftmq-bench.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAFTMQ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        fmt.json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(args) = bench_args(&argv) {
        return bench(args);
    }
    let cli = Cli::parse_from(argv);
    match &cli.command {
        Command::Bench { args } => return bench(args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "raftmq",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        Command::Topic(_)
        | Command::Produce(_)
        | Command::Consume(_)
        | Command::Group(_)
        | Command::Cluster(_)
        | Command::Message(_) => return client_command(cli),
        Command::Certs { dir, hosts, name } => {
            let issued = certs::issue(dir, name, hosts)?;
            println!("--tls-cert {}", issued.cert.display());
            println!("--tls-key {}", issued.key.display());
            println!("--tls-ca {}", issued.ca.display());
            return Ok(());
        }
        _ => {}
    }
    init_tracing(&cli.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                let cfg = NodeConfig::load(&args, false)?;
                serve(vec![cfg]).await
            }
            Command::Dev {
                data_dir,
                base_port,
                groups,
            } => dev(data_dir, base_port, groups).await,
            Command::Nameserver {
                listen,
                route_expiry_ms,
                cluster_secret_file,
            } => nameserver(listen, route_expiry_ms, cluster_secret_file).await,
            _ => unreachable!("handled before the runtime starts"),
        }
    })
}

/// Runs a client command; a failed call prints the server's message and exits 1.
fn client_command(cli: Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let opts = cli.client;
    let done = rt.block_on(async {
        match cli.command {
            Command::Topic(c) => cli::topic(&opts, c).await,
            Command::Produce(a) => cli::produce(&opts, a).await,
            Command::Consume(a) => cli::consume(&opts, a).await,
            Command::Group(c) => cli::group(&opts, c).await,
            Command::Cluster(c) => cli::cluster(&opts, c).await,
            Command::Message(c) => cli::message(&opts, c).await,
            _ => unreachable!("not a client command"),
        }
    });
    if let Err(e) = done {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// The arguments of `raftmq bench …`, all of them for raftmq-bench: parsed by clap, the
/// client commands' global options (`--url`, `--token`, `--json`) would take their
/// namesakes of the bench's own and leave it its defaults.
fn bench_args(argv: &[std::ffi::OsString]) -> Option<&[std::ffi::OsString]> {
    match argv {
        [_, command, rest @ ..] if command == "bench" => Some(rest),
        _ => None,
    }
}

/// Runs `raftmq-bench` (beside this binary) with `args`, telling it where `raftmq` is.
fn bench(args: &[std::ffi::OsString]) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("locating the raftmq binary")?;
    let bench = me.with_file_name("raftmq-bench");
    let status = std::process::Command::new(&bench)
        .args(args)
        .env("RAFTMQ_BIN", &me)
        .status()
        .with_context(|| {
            format!(
                "running {} (build it with `cargo build --release -p raftmq-bench`)",
                bench.display()
            )
        })?;
    std::process::exit(status.code().unwrap_or(1));
}

fn broker_config(cfg: &NodeConfig, tls: Option<&Tls>) -> anyhow::Result<BrokerConfig> {
    Ok(BrokerConfig {
        transport: None,
        log_fs: None,
        wall_clock: None,
        install_probe: None,
        node_id: cfg.node_id,
        broker_group: cfg.broker_group.clone(),
        data_dir: cfg.data_dir.clone(),
        peers: cfg.peers.clone(),
        flush: match cfg.flush {
            Flush::Sync => FlushPolicy::Sync,
            Flush::Async => FlushPolicy::Async(Duration::from_millis(cfg.flush_interval_ms)),
        },
        segment_size: cfg.segment_size,
        form_group: !cfg.join,
        retention_check: Duration::from_millis(cfg.retention_check_ms),
        min_free_bytes: cfg.min_free_bytes,
        cluster_secret: cfg.cluster_secret.clone(),
        peer_source_ip: cfg.peer_source_ip,
        peer_tls: tls.map(Tls::client_config).transpose()?,
        timing: RaftTiming {
            heartbeat_ms: cfg.heartbeat_ms,
            election_timeout_ms: cfg.election_timeout_ms,
        },
    })
}

fn api_config(cfg: &NodeConfig, tls: Option<&Tls>) -> ApiConfig {
    ApiConfig {
        auto_create_topics: cfg.auto_create_topics,
        default_queues: cfg.default_queues,
        default_retention_ms: cfg.default_retention_ms,
        max_request_bytes: cfg.max_request_bytes,
        require_peer_certificate: tls.is_some_and(Tls::verifies_peers),
        admin_token: cfg.admin_token.clone(),
        txn_max_checks: cfg.txn_max_checks,
        txn_check_hosts: cfg.txn_check_hosts.clone(),
        ..ApiConfig::default()
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` (over TLS with `tls`) until `stop` turns true, then lets open
/// requests finish (at most 5 s). HTTP/1 heads of up to 1 MiB reach the router, which
/// answers an oversized URI or set of headers with the API's error body (hyper's own 431
/// carries none).
async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<Tls>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(1 << 20);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, remote)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                // Peer routes check who connected when there is no cluster secret.
                let app = app
                    .clone()
                    .layer(axum::Extension(axum::extract::ConnectInfo(remote)));
                let (http, watcher) = (http.clone(), graceful.watcher());
                let Some(tls) = &tls else {
                    tokio::spawn(serve_connection(http, app, stream, watcher));
                    continue;
                };
                // The handshake runs in the connection's own task: a slow client never
                // holds up the accept loop.
                let acceptor = tls.acceptor();
                tokio::spawn(async move {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    // A client certificate, if any, passed the CA's verifier in the handshake.
                    let client_verified = stream.get_ref().1.peer_certificates().is_some();
                    let app = app.layer(axum::Extension(raftmq_http_api::ConnectionTls {
                        client_verified,
                    }));
                    serve_connection(http, app, stream, watcher).await;
                });
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// Serves HTTP/1 on one accepted connection until it closes or shutdown ends it.
async fn serve_connection<S>(
    http: hyper::server::conn::http1::Builder,
    app: axum::Router,
    stream: S,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let _ = watcher.watch(conn).await;
}

/// Reloads every node's TLS files on each SIGHUP, for as long as the process runs.
fn reload_tls_on_sighup(nodes: Vec<(u64, Arc<Tls>)>) -> anyhow::Result<()> {
    if nodes.is_empty() {
        return Ok(());
    }
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            for (node_id, tls) in &nodes {
                match tls.reload() {
                    Ok(()) => tracing::info!(node_id, "TLS certificate, key and CA reloaded"),
                    Err(e) => tracing::error!(
                        node_id,
                        "TLS reload failed, keeping the loaded certificate: {e:#}"
                    ),
                }
            }
        }
    });
    Ok(())
}

/// Runs a NameServer until a shutdown signal.
async fn nameserver(
    listen: SocketAddr,
    route_expiry_ms: u64,
    secret_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    anyhow::ensure!(route_expiry_ms > 0, "route_expiry_ms: must be positive");
    let cluster_secret = config::secret(
        "cluster secret",
        None,
        "RAFTMQ_CLUSTER_SECRET",
        secret_file.as_ref(),
        1,
    )?
    .map(String::into_bytes);
    if cluster_secret.is_none() {
        tracing::warn!("no cluster secret: registrations are taken unsigned from anyone");
    }
    let app = raftmq_http_api::nameserver_router(raftmq_http_api::NameServerConfig {
        route_expiry: Duration::from_millis(route_expiry_ms),
        cluster_secret,
    });
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, "nameserver started");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve_http(listener, app, None, stop_rx));
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}

/// Runs the given nodes until a shutdown signal, then stops them gracefully.
async fn serve(nodes: Vec<NodeConfig>) -> anyhow::Result<()> {
    let mut brokers = Vec::new();
    let mut servers = Vec::new();
    let mut reloadable = Vec::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for cfg in &nodes {
        let tls = match &cfg.tls {
            Some(files) => Some(Arc::new(Tls::load(files.clone())?)),
            None => None,
        };
        if tls.as_ref().is_some_and(|t| !t.verifies_peers()) {
            tracing::warn!(
                node_id = cfg.node_id,
                "TLS without --tls-ca: peer links are encrypted but peers do not verify each \
                 other's certificates (the cluster secret still authenticates requests)"
            );
        }
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding {}", cfg.listen))?;
        // Opened and served before it is let in: a node whose log is empty waits for its
        // peers' answers, and they for its own.
        let broker = Broker::open(broker_config(cfg, tls.as_deref())?)
            .await
            .map_err(|e| anyhow::anyhow!("node {}: {e}", cfg.node_id))?;
        let mut api = api_config(cfg, tls.as_deref());
        api.routes = raftmq_http_api::spawn_routes(cfg.nameservers.clone(), cfg.peer_source_ip)
            .context("the NameServer client")?;
        let app = raftmq_http_api::router(broker.clone(), api);
        servers.push(tokio::spawn(serve_http(
            listener,
            app,
            tls.clone(),
            stop_rx.clone(),
        )));
        if let Some(tls) = tls {
            reloadable.push((cfg.node_id, tls));
        }
        brokers.push(broker);
    }
    // One after another: each waits only for answers, which every node gives once served.
    for (broker, cfg) in brokers.iter().zip(&nodes) {
        broker
            .admit()
            .await
            .map_err(|e| anyhow::anyhow!("node {}: {e}", cfg.node_id))?;
        raftmq_http_api::spawn_registration(
            broker.clone(),
            cfg.nameservers.clone(),
            cfg.cluster_secret.clone(),
            cfg.peer_source_ip,
        )
        .context("the NameServer client")?;
        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
        tracing::info!(node_id = cfg.node_id, listen = %cfg.listen, scheme, data_dir = %cfg.data_dir.display(), "node started");
    }
    reload_tls_on_sighup(reloadable)?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for b in &brokers {
        b.shutdown().await;
    }
    for s in servers {
        let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
    }
    Ok(())
}

/// Where `raftmq dev --groups N` runs its NameServer.
const DEV_NAMESERVER: &str = "127.0.0.1:9876";

async fn dev(data_dir: Option<PathBuf>, base_port: u16, groups: u16) -> anyhow::Result<()> {
    anyhow::ensure!((1..=9).contains(&groups), "--groups: must be 1 to 9");
    let tmp;
    let root: &Path = match &data_dir {
        Some(d) => d,
        None => {
            tmp = tempfile::Builder::new().prefix("raftmq-dev-").tempdir()?;
            tmp.path()
        }
    };
    // One secret for every node (and the NameServer), made here: peer requests and
    // registrations are authenticated.
    let secret: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let nameservers = (groups > 1).then(|| vec![DEV_NAMESERVER.to_owned()]);
    let mut nodes = Vec::new();
    let mut first_urls = Vec::new();
    for g in 0..groups {
        let group = format!("g{}", g + 1);
        let addrs: Vec<SocketAddr> = (0..3u16)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], base_port + 3 * g + i)))
            .collect();
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        println!("raftmq dev: 3-node group {group}");
        for (i, addr) in addrs.iter().enumerate() {
            println!("  node {}: http://{addr}", i + 1);
            let args = NodeArgs {
                cluster_secret: Some(secret.clone()),
                node_id: Some(i as u64 + 1),
                listen: Some(*addr),
                data_dir: Some(root.join(&group).join(format!("node{}", i + 1))),
                peers: Some(peers.clone()),
                group: Some(group.clone()),
                nameservers: nameservers.clone(),
                ..NodeArgs::default()
            };
            nodes.push(NodeConfig::load(&args, true)?);
        }
        first_urls.push(addrs[0]);
    }
    println!("data in {}", root.display());
    // The NameServer runs as long as the nodes do.
    let (_nameserver_runs, never) = tokio::sync::watch::channel(false);
    if groups > 1 {
        let app = raftmq_http_api::nameserver_router(raftmq_http_api::NameServerConfig {
            route_expiry: Duration::from_secs(10),
            cluster_secret: Some(secret.clone().into_bytes()),
        });
        let listener = TcpListener::bind(DEV_NAMESERVER)
            .await
            .with_context(|| format!("binding the NameServer on {DEV_NAMESERVER}"))?;
        tokio::spawn(serve_http(listener, app, None, never));
        println!("  NameServer: http://{DEV_NAMESERVER}/v1/routes (any node serves every topic)");
    }
    println!(
        "try: curl -s -XPOST http://{}/v1/topics/demo/messages -d '{{\"messages\":[{{\"body\":\"hello\"}}]}}'",
        first_urls[0]
    );
    println!(
        "     curl -s 'http://{}/v1/topics/demo/queues/0/messages?offset=0'",
        first_urls[groups as usize - 1]
    );
    println!("Ctrl-C stops the cluster.");
    serve(nodes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_gets_every_argument_even_the_client_commands_global_ones() {
        let argv: Vec<std::ffi::OsString> = [
            "raftmq",
            "bench",
            "--url",
            "http://h:1",
            "--json",
            "out.json",
            "--token",
            "t",
        ]
        .map(Into::into)
        .to_vec();
        assert_eq!(bench_args(&argv), Some(&argv[2..]));
        // What clap alone made of them: the URL went to the client options.
        let cli = Cli::parse_from(&argv[..4]);
        assert!(matches!(&cli.command, Command::Bench { args } if args.is_empty()));
        let produce: Vec<std::ffi::OsString> = ["raftmq", "produce", "t", "--url", "x"]
            .map(Into::into)
            .to_vec();
        assert_eq!(bench_args(&produce), None);
    }
}
