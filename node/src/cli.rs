//! The client commands of `raftmq` (API.md's "Command-line client"): topics, produce,
//! consume, consumer groups, cluster and messages over the HTTP API ([`crate::client`]),
//! printed as tables for people or JSON with `--json` (consume: one JSON object per line).
//!
//! Must never: exit 0 after a failed call, or print a message it did not receive (consume
//! acks only what it printed).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use comfy_table::{Table, presets::NOTHING};
use serde_json::{Value, json};

use crate::client::{Client, ClientError, NewMessage};

/// Where and how the client commands talk to a node.
#[derive(Args, Debug, Clone)]
pub(crate) struct ClientOpts {
    /// A node's URL.
    #[arg(
        long,
        global = true,
        env = "RAFTMQ_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    url: String,
    /// Bearer token (authentication on).
    #[arg(long, global = true, env = "RAFTMQ_TOKEN")]
    token: Option<String>,
    /// PEM CA certificate to trust for an https:// URL.
    #[arg(long, global = true, env = "RAFTMQ_TLS_CA")]
    ca: Option<PathBuf>,
    /// Print JSON (one object per message for consume) instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

/// `raftmq topic …`.
#[derive(Subcommand, Debug)]
pub(crate) enum TopicCmd {
    /// Create a topic (or grow its queues / change its settings).
    Create {
        name: String,
        #[arg(long, default_value_t = 4)]
        queues: u32,
        /// Strict per-queue order for consumer groups.
        #[arg(long)]
        fifo: bool,
        #[arg(long)]
        retention_ms: Option<u64>,
        #[arg(long)]
        dedup_window_ms: Option<u64>,
    },
    /// List topics.
    List,
    /// A topic's settings and queues.
    Describe { name: String },
    /// Delete a topic and its messages.
    Delete { name: String },
}

/// `raftmq group …`.
#[derive(Subcommand, Debug)]
pub(crate) enum GroupCmd {
    /// List consumer groups.
    List,
    /// A group's settings, consumers and lag per queue.
    Describe { group: String },
    /// Move a group's committed offsets on a topic.
    Reset {
        group: String,
        #[arg(long)]
        topic: String,
        /// `earliest`, `latest` or a time (ms since the epoch).
        #[arg(long)]
        to: String,
    },
}

/// `raftmq cluster …`.
#[derive(Subcommand, Debug)]
pub(crate) enum ClusterCmd {
    /// Members, roles, term, commit and applied index.
    Status,
    /// Add a node (a learner until it catches up; `--voter` to make it vote).
    AddMember {
        id: u64,
        addr: String,
        #[arg(long)]
        voter: bool,
    },
    /// Remove a node from the group.
    RemoveMember { id: u64 },
    /// Hand leadership to a node.
    TransferLeader { id: u64 },
}

/// `raftmq message …`.
#[derive(Subcommand, Debug)]
pub(crate) enum MessageCmd {
    /// One message by id.
    Get { id: String },
}

/// `raftmq produce`.
#[derive(Args, Debug)]
pub(crate) struct ProduceArgs {
    topic: String,
    /// The message body (without it: one message per line of standard input).
    #[arg(long)]
    body: Option<String>,
    #[arg(long)]
    key: Option<String>,
    #[arg(long)]
    tag: Option<String>,
    /// A property `name=value` (repeat for more).
    #[arg(long = "property", value_parser = parse_property)]
    properties: Vec<(String, String)>,
    #[arg(long)]
    queue: Option<u32>,
    /// Deliver after this long (a scheduled message).
    #[arg(long)]
    delay_ms: Option<u64>,
    /// Lines of standard input per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}`: a property is name=value"))
}

/// `raftmq consume`.
#[derive(Args, Debug)]
pub(crate) struct ConsumeArgs {
    topic: String,
    /// Receive (and ack) as this consumer group.
    #[arg(long, conflicts_with_all = ["queue", "offset"])]
    group: Option<String>,
    /// Consumer name within the group.
    #[arg(long, default_value = "raftmq-cli")]
    consumer: String,
    /// Read this queue by offset instead (no group).
    #[arg(long, requires = "offset")]
    queue: Option<u32>,
    /// First offset to read.
    #[arg(long, requires = "queue")]
    offset: Option<u64>,
    /// Most messages per request (without --follow, requests go on until one comes back
    /// empty).
    #[arg(long, default_value_t = 32)]
    max: u32,
    /// Keep going (long polls) until interrupted.
    #[arg(long)]
    follow: bool,
    /// Tag filter (`a||b`), with --group.
    #[arg(long)]
    tag: Option<String>,
    /// SQL92 property filter, with --group.
    #[arg(long)]
    sql: Option<String>,
}

fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn rows<'a>(v: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    v[field].as_array().into_iter().flatten()
}

/// Prints `v` as JSON, or as `human` renders it.
fn print(opts: &ClientOpts, v: &Value, human: impl FnOnce(&Value) -> String) {
    let out = if opts.json { v.to_string() } else { human(v) };
    println!("{}", out.trim_end());
}

fn client(opts: &ClientOpts) -> anyhow::Result<Client> {
    Client::new(&opts.url, opts.token.clone(), opts.ca.as_deref())
}

/// Runs a topic command.
pub(crate) async fn topic(opts: &ClientOpts, cmd: TopicCmd) -> anyhow::Result<()> {
    let c = client(opts)?;
    match cmd {
        TopicCmd::Create {
            name,
            queues,
            fifo,
            retention_ms,
            dedup_window_ms,
        } => {
            let mut body = json!({"queues": queues, "fifo": fifo});
            if let Some(r) = retention_ms {
                body["retention_ms"] = json!(r);
            }
            if let Some(d) = dedup_window_ms {
                body["dedup_window_ms"] = json!(d);
            }
            let v = c.put_topic(&name, body).await?;
            print(opts, &v, |_| format!("topic {name}: {queues} queues"));
        }
        TopicCmd::List => {
            let v = c.topics().await?;
            print(opts, &v, |v| {
                table(
                    &["NAME", "QUEUES", "FIFO", "RETENTION_MS"],
                    rows(v, "topics").map(|t| {
                        vec![
                            s(&t["name"]),
                            s(&t["queues"]),
                            s(&t["fifo"]),
                            s(&t["retention_ms"]),
                        ]
                    }),
                )
            });
        }
        TopicCmd::Describe { name } => {
            let v = c.topic(&name).await?;
            print(opts, &v, |v| {
                let mut out = format!(
                    "topic {}: {} queues, fifo {}, retention {} ms, dedup window {} ms\n",
                    s(&v["name"]),
                    s(&v["queues"]),
                    s(&v["fifo"]),
                    s(&v["retention_ms"]),
                    s(&v["dedup_window_ms"])
                );
                out += &table(
                    &["QUEUE", "MIN_OFFSET", "MAX_OFFSET"],
                    rows(v, "queue_stats")
                        .map(|q| vec![s(&q["queue"]), s(&q["min_offset"]), s(&q["max_offset"])]),
                );
                out
            });
        }
        TopicCmd::Delete { name } => {
            let v = c.delete_topic(&name).await?;
            print(opts, &v, |_| format!("topic {name} deleted"));
        }
    }
    Ok(())
}

/// Runs `raftmq produce`: `--body`, or one message per line of standard input.
pub(crate) async fn produce(opts: &ClientOpts, a: ProduceArgs) -> anyhow::Result<()> {
    let c = client(opts)?;
    let template = NewMessage {
        key: a.key.clone(),
        tag: a.tag.clone(),
        properties: a.properties.clone(),
        queue: a.queue,
        delay_ms: a.delay_ms,
        ..NewMessage::default()
    };
    let with_body = |body: String| NewMessage {
        body,
        ..template.clone()
    };
    let mut results = Vec::new();
    if let Some(body) = a.body {
        results.extend(send(&c, &a.topic, &[with_body(body)]).await?);
    } else {
        let mut batch = Vec::new();
        for line in std::io::stdin().lock().lines() {
            batch.push(with_body(line?));
            if batch.len() >= a.batch.max(1) {
                results.extend(send(&c, &a.topic, &std::mem::take(&mut batch)).await?);
            }
        }
        if !batch.is_empty() {
            results.extend(send(&c, &a.topic, &batch).await?);
        }
    }
    print(opts, &json!({ "results": results }), |v| {
        table(
            &["MSG_ID", "QUEUE", "OFFSET"],
            rows(v, "results").map(|r| {
                let offset = if r["offset"].is_null() {
                    "(scheduled)".to_owned()
                } else {
                    s(&r["offset"])
                };
                vec![s(&r["msg_id"]), s(&r["queue"]), offset]
            }),
        )
    });
    Ok(())
}

async fn send(c: &Client, topic: &str, batch: &[NewMessage]) -> Result<Vec<Value>, ClientError> {
    let v = c.produce(topic, batch).await?;
    Ok(v["results"].as_array().cloned().unwrap_or_default())
}

/// One message as consume prints it.
fn print_message(opts: &ClientOpts, m: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if opts.json {
        writeln!(out, "{m}")?;
    } else {
        let body = m["body"]
            .as_str()
            .map_or_else(|| format!("base64:{}", s(&m["body_base64"])), str::to_owned);
        let mut line = format!("{}:{} {}", s(&m["queue"]), s(&m["offset"]), s(&m["msg_id"]));
        for (field, label) in [("key", "key"), ("tag", "tag"), ("attempt", "attempt")] {
            if !m[field].is_null() {
                line += &format!(" {label}={}", s(&m[field]));
            }
        }
        writeln!(out, "{line} {body}")?;
    }
    out.flush()
}

/// Runs `raftmq consume`: receive and ack as a group, or read a queue by offset.
pub(crate) async fn consume(opts: &ClientOpts, a: ConsumeArgs) -> anyhow::Result<()> {
    let c = client(opts)?;
    let wait_ms = if a.follow { 5_000 } else { 1_000 };
    if let (Some(queue), Some(mut offset)) = (a.queue, a.offset) {
        loop {
            let v = c.read(&a.topic, queue, offset, a.max, wait_ms).await?;
            for m in rows(&v, "messages") {
                print_message(opts, m)?;
            }
            let next = v["next_offset"].as_u64().unwrap_or(offset);
            let got = next > offset;
            offset = next;
            if !a.follow && !got {
                return Ok(());
            }
        }
    }
    let group = a
        .group
        .ok_or_else(|| anyhow::anyhow!("consume needs --group G, or --queue Q --offset N"))?;
    loop {
        let mut body = json!({"consumer": a.consumer, "max": a.max, "wait_ms": wait_ms});
        if let Some(t) = &a.tag {
            body["tag"] = json!(t);
        }
        if let Some(q) = &a.sql {
            body["sql"] = json!(q);
        }
        let v = c.receive(&group, &a.topic, body).await?;
        let mut receipts = Vec::new();
        for m in rows(&v, "messages") {
            print_message(opts, m)?;
            receipts.extend(m["receipt"].as_str().map(str::to_owned));
        }
        if !receipts.is_empty() {
            c.ack(&group, &a.topic, &receipts).await?;
        }
        if !a.follow && receipts.is_empty() {
            return Ok(());
        }
    }
}

/// Runs a consumer-group command.
pub(crate) async fn group(opts: &ClientOpts, cmd: GroupCmd) -> anyhow::Result<()> {
    let c = client(opts)?;
    match cmd {
        GroupCmd::List => {
            let v = c.groups().await?;
            print(opts, &v, |v| {
                table(
                    &["GROUP", "MODE"],
                    rows(v, "groups").map(|g| vec![s(&g["name"]), s(&g["mode"])]),
                )
            });
        }
        GroupCmd::Describe { group } => {
            let v = c.group(&group).await?;
            print(opts, &v, |v| {
                let mut out = format!(
                    "group {}: {}, max attempts {}, in flight {}, dead letters {} in {}\n",
                    s(&v["group"]),
                    s(&v["mode"]),
                    s(&v["max_attempts"]),
                    s(&v["in_flight"]),
                    s(&v["dlq_depth"]),
                    s(&v["dlq_topic"])
                );
                out += &table(
                    &[
                        "TOPIC",
                        "QUEUE",
                        "COMMITTED",
                        "MAX_OFFSET",
                        "LAG",
                        "IN_FLIGHT",
                    ],
                    rows(v, "queues").map(|q| {
                        [
                            "topic",
                            "queue",
                            "committed",
                            "max_offset",
                            "lag",
                            "in_flight",
                        ]
                        .iter()
                        .map(|f| s(&q[*f]))
                        .collect()
                    }),
                );
                out
            });
        }
        GroupCmd::Reset { group, topic, to } => {
            let target = match to.as_str() {
                "earliest" | "latest" => json!(to),
                t => json!({"timestamp_ms": t.parse::<u64>().map_err(|_| {
                    anyhow::anyhow!("--to: `{t}` is not earliest, latest or a time in ms")
                })?}),
            };
            let v = c.reset(&group, &topic, target).await?;
            print(opts, &v, |_| {
                format!("group {group}: offsets on {topic} reset to {to}")
            });
        }
    }
    Ok(())
}

/// Runs a cluster command.
pub(crate) async fn cluster(opts: &ClientOpts, cmd: ClusterCmd) -> anyhow::Result<()> {
    let c = client(opts)?;
    let (v, done) = match cmd {
        ClusterCmd::Status => {
            let v = c.cluster().await?;
            print(opts, &v, |v| {
                let head = format!(
                    "group {}: leader {}, term {}, commit {}, applied {} (node {})\n",
                    s(&v["group"]),
                    s(&v["leader_id"]),
                    s(&v["term"]),
                    s(&v["commit_index"]),
                    s(&v["applied_index"]),
                    s(&v["node_id"])
                );
                let mut out = head
                    + &table(
                        &["ID", "ADDR", "ROLE", "MATCHED_INDEX"],
                        rows(v, "members").map(|m| {
                            ["id", "addr", "role", "matched_index"]
                                .iter()
                                .map(|f| s(&m[*f]))
                                .collect()
                        }),
                    );
                if v["groups"].is_array() {
                    out += "\nbroker groups (from the NameServers):\n";
                    out += &table(
                        &["GROUP", "LEADER", "MEMBERS", "TOPICS"],
                        rows(v, "groups").map(|g| {
                            let members: Vec<String> = rows(g, "members").map(s).collect();
                            vec![
                                s(&g["group"]),
                                s(&g["leader"]),
                                members.join(","),
                                s(&g["topics"]),
                            ]
                        }),
                    );
                }
                out
            });
            return Ok(());
        }
        ClusterCmd::AddMember { id, addr, voter } => (
            c.add_member(id, &addr, voter).await?,
            format!("node {id} added"),
        ),
        ClusterCmd::RemoveMember { id } => {
            (c.remove_member(id).await?, format!("node {id} removed"))
        }
        ClusterCmd::TransferLeader { id } => (
            c.transfer_leader(id).await?,
            format!("leadership handed to node {id}"),
        ),
    };
    print(opts, &v, |_| done);
    Ok(())
}

/// Runs a message command.
pub(crate) async fn message(opts: &ClientOpts, cmd: MessageCmd) -> anyhow::Result<()> {
    let c = client(opts)?;
    let MessageCmd::Get { id } = cmd;
    let v = c.message(&id).await?;
    print(opts, &v, |m| {
        let mut out = String::new();
        for f in [
            "msg_id",
            "topic",
            "queue",
            "offset",
            "key",
            "tag",
            "born_ms",
            "stored_ms",
            "deliver_at_ms",
        ] {
            if !m[f].is_null() {
                out += &format!("{f}: {}\n", s(&m[f]));
            }
        }
        if let Some(p) = m["properties"].as_object().filter(|p| !p.is_empty()) {
            out += &format!("properties: {}\n", Value::Object(p.clone()));
        }
        match m["body"].as_str() {
            Some(b) => out += &format!("body: {b}"),
            None => out += &format!("body_base64: {}", s(&m["body_base64"])),
        }
        out
    });
    Ok(())
}
