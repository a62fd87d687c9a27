//! Request and response bodies of the public API, and their validation.
//!
//! Parsing goes through `serde_path_to_error`, so a bad field is reported by its path
//! (`messages[2].queue: invalid type ...`). Unknown fields are ignored, as API.md requires.
//!
//! Must never: accept a name outside `^[A-Za-z0-9_-]{1,127}$`, or let a system topic
//! (`DLQ-`, `RETRY-`) be created by hand.

use std::collections::BTreeMap;

use base64::Engine;
use bytes::Bytes;
use raftmq_raft::{ProduceMessage, Schedule, StoredMessage};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;

/// Longest key accepted, bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest tag accepted, bytes.
pub const MAX_TAG_BYTES: usize = 256;
/// Most properties per message.
pub const MAX_PROPERTIES: usize = 64;
/// Most messages per produce request.
pub const MAX_BATCH: usize = 10_000;

/// Parses a JSON body, naming the offending field on error. The body must be one JSON
/// object and nothing after it.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value: Object<T> = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::invalid(&field, e.into_inner())
    })?;
    de.end()
        .map_err(|e| ApiError::invalid("body", format!("text after the JSON object: {e}")))?;
    Ok(value.0)
}

/// A JSON object, never an array in its place (serde's derived structs also take an array
/// of their fields in order, which the contract does not allow).
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
            type Value = Object<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Object<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        d.deserialize_map(ObjectVisitor(std::marker::PhantomData))
    }
}

/// Checks a topic, group or consumer name.
pub fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 127
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("`{name}` must match ^[A-Za-z0-9_-]{{1,127}}$"),
        ))
    }
}

/// Whether a topic name is reserved for the system.
pub fn is_system_topic(name: &str) -> bool {
    name.starts_with("DLQ-") || name.starts_with("RETRY-")
}

/// `POST /v1/topics/{topic}/messages`.
#[derive(Deserialize, ToSchema, Debug)]
pub struct ProduceRequest {
    /// The batch: stored atomically, all or none.
    #[schema(value_type = Vec<ProduceItem>, min_items = 1, max_items = 10000)]
    pub messages: Vec<Object<ProduceItem>>,
    /// Makes the batch one transaction of half messages, invisible until committed; its
    /// messages take no `delay_ms`, `deliver_at_ms` or `idempotency_key`.
    #[serde(default)]
    #[schema(value_type = Option<TxnBody>)]
    pub transaction: Option<Object<TxnBody>>,
}

/// `transaction` of a produce request.
#[derive(Deserialize, ToSchema, Debug)]
#[schema(as = Transactional)]
pub struct TxnBody {
    /// POSTed `{"transaction_id", "messages"}` when undecided after `check_after_ms` (then
    /// every `check_after_ms`, `--txn-max-checks` times, then rolled back); answers
    /// `{"status": "commit" | "rollback" | "unknown"}`. Only hosts in `--txn-check-hosts`
    /// when that is set.
    #[schema(value_type = String, required = true, pattern = r"^http://[^\s]+$", max_length = 2048)]
    check_url: Option<String>,
    /// First check-back after this long, ms (default 6000).
    #[schema(minimum = 1, maximum = 86400000, default = 6000)]
    check_after_ms: Option<u64>,
}

/// Longest `check_url`, bytes.
const MAX_CHECK_URL_BYTES: usize = 2048;
/// Longest `check_after_ms` (one day).
pub const MAX_CHECK_AFTER_MS: u64 = 86_400_000;
/// `check_after_ms` when not given (RocketMQ's default transaction timeout).
pub const DEFAULT_CHECK_AFTER_MS: u64 = 6_000;

/// The host of an `http://` URL's authority (no user info, no port; IPv6 without brackets).
fn url_host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    }
}

impl TxnBody {
    /// Validates it: `(check_url, check_after_ms)`. `allowed_hosts`: the only hosts a check
    /// may go to (`None`: any).
    pub fn validate(self, allowed_hosts: Option<&[String]>) -> Result<(String, u64), ApiError> {
        let url = self
            .check_url
            .ok_or_else(|| ApiError::invalid("transaction.check_url", "is required"))?;
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| ApiError::invalid("transaction.check_url", "must be an http:// URL"))?;
        let host = url_host(rest);
        if host.is_empty()
            || url.len() > MAX_CHECK_URL_BYTES
            || url.chars().any(char::is_whitespace)
        {
            return Err(ApiError::invalid(
                "transaction.check_url",
                format!("must name a host, without spaces, in at most {MAX_CHECK_URL_BYTES} bytes"),
            ));
        }
        if let Some(allowed) = allowed_hosts
            && !allowed.iter().any(|h| h.eq_ignore_ascii_case(host))
        {
            return Err(ApiError::invalid(
                "transaction.check_url",
                format!("host {host} is not one this cluster checks back to (--txn-check-hosts)"),
            ));
        }
        let after = self.check_after_ms.unwrap_or(DEFAULT_CHECK_AFTER_MS);
        if !(1..=MAX_CHECK_AFTER_MS).contains(&after) {
            return Err(ApiError::invalid(
                "transaction.check_after_ms",
                format!("must be 1 to {MAX_CHECK_AFTER_MS}"),
            ));
        }
        Ok((url, after))
    }
}

/// One message: `body` (UTF-8 text) or `body_base64` (bytes), not both.
#[derive(Deserialize, ToSchema, Debug)]
#[schema(as = ProduceMessage)]
pub struct ProduceItem {
    /// UTF-8 text.
    body: Option<String>,
    /// Bytes, base64.
    #[schema(content_encoding = "base64")]
    body_base64: Option<String>,
    /// Business key, 1 to 1024 bytes (indexed: query by key).
    #[schema(min_length = 1, max_length = 256)]
    key: Option<String>,
    /// 1 to 256 bytes, not `*`, without `||`.
    #[schema(min_length = 1, max_length = 64)]
    tag: Option<String>,
    /// At most 64.
    #[serde(default)]
    properties: BTreeMap<String, String>,
    /// The queue (default: by key hash, else round robin).
    #[schema(maximum = 1023)]
    queue: Option<u32>,
    /// Not readable (not in the queue, not receivable) until this long after the broker
    /// stores it; at most the topic's retention. Not with `deliver_at_ms`.
    delay_ms: Option<u64>,
    /// Not readable until this time (ms since the epoch): in the future (up to 1 s in the
    /// past is taken as now) and within the topic's retention. Not with `delay_ms`.
    deliver_at_ms: Option<u64>,
    /// 1 to 256 bytes: a retry with the same key within the topic's dedup window returns the
    /// first write's result and writes nothing.
    #[schema(min_length = 1, max_length = 64)]
    idempotency_key: Option<String>,
}

impl ProduceRequest {
    /// Validates and converts into the broker's input, with the transaction's check URL
    /// and delay if it is one.
    #[allow(clippy::type_complexity)]
    pub fn into_messages(
        self,
        max_message_bytes: usize,
        check_hosts: Option<&[String]>,
    ) -> Result<(Vec<ProduceMessage>, Option<(String, u64)>), ApiError> {
        let txn = self
            .transaction
            .map(|t| t.0.validate(check_hosts))
            .transpose()?;
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "must hold at least one message",
            ));
        }
        if self.messages.len() > MAX_BATCH {
            return Err(ApiError::invalid(
                "messages",
                format!("at most {MAX_BATCH} messages per request"),
            ));
        }
        let messages: Vec<ProduceMessage> = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| m.0.validate(i, max_message_bytes))
            .collect::<Result<_, _>>()?;
        if txn.is_some()
            && let Some(i) = messages
                .iter()
                .position(|m| m.schedule.is_some() || m.idempotency_key.is_some())
        {
            return Err(ApiError::invalid(
                &format!("messages[{i}]"),
                "a transactional message takes no delay_ms, deliver_at_ms or idempotency_key",
            ));
        }
        Ok((messages, txn))
    }
}

impl ProduceItem {
    fn validate(self, i: usize, max_message_bytes: usize) -> Result<ProduceMessage, ApiError> {
        let f = |name: &str| format!("messages[{i}].{name}");
        let schedule = match (self.delay_ms, self.deliver_at_ms) {
            (None, None) => None,
            (Some(d), None) => Some(Schedule::After(d)),
            (None, Some(t)) => Some(Schedule::At(t)),
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    &f("delay_ms"),
                    "give either delay_ms or deliver_at_ms, not both",
                ));
            }
        };
        if let Some(k) = &self.idempotency_key
            && (k.is_empty() || k.len() > raftmq_raft::MAX_IDEMPOTENCY_KEY_LEN)
        {
            return Err(ApiError::invalid(
                &f("idempotency_key"),
                format!(
                    "must be 1 to {} bytes",
                    raftmq_raft::MAX_IDEMPOTENCY_KEY_LEN
                ),
            ));
        }
        let (body, binary) = match (self.body, self.body_base64) {
            (Some(b), None) => (Bytes::from(b), false),
            (None, Some(b)) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map_err(|e| {
                        ApiError::invalid(&f("body_base64"), format!("not base64: {e}"))
                    })?;
                (Bytes::from(bytes), true)
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    &f("body"),
                    "give either body or body_base64, not both",
                ));
            }
            (None, None) => {
                return Err(ApiError::invalid(
                    &f("body"),
                    "body or body_base64 is required",
                ));
            }
        };
        if body.len() > max_message_bytes {
            return Err(ApiError::too_large(format!(
                "{}: body is {} bytes, the limit is {max_message_bytes}",
                f("body"),
                body.len()
            )));
        }
        if let Some(k) = &self.key
            && (k.is_empty() || k.len() > MAX_KEY_BYTES)
        {
            return Err(ApiError::invalid(
                &f("key"),
                format!("must be 1 to {MAX_KEY_BYTES} bytes"),
            ));
        }
        if let Some(t) = &self.tag
            && (t.is_empty() || t.len() > MAX_TAG_BYTES || t.contains("||") || t == "*")
        {
            return Err(ApiError::invalid(
                &f("tag"),
                format!("must be 1 to {MAX_TAG_BYTES} bytes, not `*`, without `||`"),
            ));
        }
        if self.properties.len() > MAX_PROPERTIES {
            return Err(ApiError::invalid(
                &f("properties"),
                format!("at most {MAX_PROPERTIES} properties"),
            ));
        }
        if let Some(name) = self
            .properties
            .keys()
            .find(|k| k.is_empty() || k.len() > 256)
        {
            return Err(ApiError::invalid(
                &f("properties"),
                format!("property name `{name}` must be 1 to 256 bytes"),
            ));
        }
        Ok(ProduceMessage {
            body,
            binary,
            key: self.key,
            tag: self.tag,
            properties: self.properties.into_iter().collect(),
            queue: self.queue,
            idempotency_key: self.idempotency_key,
            schedule,
        })
    }
}

/// A message.
// Serialized straight from the stored message (no `Value` tree: a receive or a read of
// hundreds of messages allocates little). Fields are in the order a JSON object map would
// sort them, as before.
#[derive(Serialize, ToSchema, Debug)]
#[schema(as = Message)]
pub struct MessageJson<'a> {
    /// Delivery number (receives only).
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    /// A text body.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    body: Option<std::borrow::Cow<'a, str>>,
    /// A binary body, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
    /// When the producer's request reached the broker (group time), ms since the epoch.
    born_ms: u64,
    /// A scheduled message's due time.
    #[serde(skip_serializing_if = "Option::is_none")]
    deliver_at_ms: Option<u64>,
    /// Business key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    key: Option<&'a str>,
    /// `{broker_group}.{log_index}.{slot}`.
    msg_id: String,
    /// Offset in its queue.
    offset: u64,
    /// Properties.
    #[schema(value_type = BTreeMap<String, String>)]
    properties: Properties<'a>,
    /// Queue.
    queue: u32,
    /// Ack/nack handle (receives only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    receipt: Option<&'a str>,
    /// When it became readable (group time), ms since the epoch.
    stored_ms: u64,
    /// Tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    tag: Option<&'a str>,
    /// Topic.
    #[schema(value_type = String)]
    topic: &'a str,
}

/// A message's properties as a JSON object.
#[derive(Debug)]
struct Properties<'a>(&'a [(String, String)]);

impl Serialize for Properties<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'a> MessageJson<'a> {
    /// As handed to a consumer: with its delivery number and receipt.
    pub fn delivered(mut self, attempt: u32, receipt: &'a str) -> Self {
        self.attempt = Some(attempt);
        self.receipt = Some(receipt);
        self
    }
}

/// A message as JSON.
pub fn message_json(m: &StoredMessage, msg_id: String) -> MessageJson<'_> {
    let (body, body_base64) = if m.binary {
        (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(&m.body)),
        )
    } else {
        (Some(String::from_utf8_lossy(&m.body)), None)
    };
    MessageJson {
        attempt: None,
        body,
        body_base64,
        born_ms: m.born_ms,
        deliver_at_ms: m.deliver_at_ms,
        key: m.key.as_deref(),
        msg_id,
        offset: m.offset,
        properties: Properties(&m.properties),
        queue: m.queue,
        receipt: None,
        stored_ms: m.stored_ms,
        tag: m.tag.as_deref(),
        topic: &m.topic,
    }
}

/// `{"messages": [...]}`.
#[derive(Serialize, ToSchema, Debug)]
pub struct Messages<'a> {
    /// The messages.
    pub messages: Vec<MessageJson<'a>>,
}

/// `PUT /v1/topics/{topic}`.
#[derive(Deserialize, ToSchema, Debug, Default)]
#[schema(as = TopicSettings)]
pub struct PutTopicRequest {
    /// Queue count (only grows).
    #[schema(minimum = 1, maximum = 1024)]
    pub queues: Option<u32>,
    /// FIFO: a queue is delivered in order, one run at a time.
    pub fifo: Option<bool>,
    /// How long messages are kept, ms.
    #[schema(minimum = 1)]
    pub retention_ms: Option<u64>,
    /// How long idempotency keys are remembered, ms (default 600000).
    #[schema(minimum = 1, maximum = 604800000)]
    pub dedup_window_ms: Option<u64>,
    /// Broker groups to spread the queues over (only on a node with NameServers): the
    /// queues are split evenly over them, in one queue space; on an existing topic, the
    /// groups that do not hold it yet take the queues it grows by.
    pub groups: Option<Vec<String>>,
    /// Set by a node that spreads a topic, on each group's part: where this group's queues
    /// start in the queue space (`queues` is then where they end).
    #[schema(ignore)]
    pub first_queue: Option<u32>,
    /// With `first_queue`: how many queues the whole queue space has.
    #[schema(ignore)]
    pub queue_space: Option<u32>,
}

/// A topic as JSON.
#[derive(Serialize, ToSchema, Debug)]
#[schema(as = Topic)]
pub struct TopicJson {
    /// Name.
    pub name: String,
    /// Queues.
    pub queues: u32,
    /// FIFO.
    pub fifo: bool,
    /// Retention.
    pub retention_ms: u64,
    /// How long idempotency keys are remembered.
    pub dedup_window_ms: u64,
    /// Per-queue offsets (single-topic view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_stats: Option<Vec<QueueStat>>,
    /// A part of a spread topic, as one broker group holds it: its first queue (`queues`
    /// is then where its queues end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_queue: Option<u32>,
    /// With `first_queue`: the queues of the whole queue space.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_space: Option<u32>,
    /// A spread topic: the broker groups holding it and their slices of the queue space.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<TopicPartJson>>,
}

/// One broker group's slice of a spread topic.
#[derive(Serialize, ToSchema, Debug)]
pub struct TopicPartJson {
    /// The broker group.
    pub group: String,
    /// Its first queue in the queue space.
    pub first_queue: u32,
    /// How many queues it holds.
    pub queues: u32,
}

/// One queue's offsets.
#[derive(Serialize, ToSchema, Debug)]
pub struct QueueStat {
    /// Queue.
    pub queue: u32,
    /// First retained offset.
    pub min_offset: u64,
    /// One past the last offset.
    pub max_offset: u64,
}

/// `POST /v1/cluster/members`.
#[derive(Deserialize, ToSchema, Debug)]
pub struct AddMemberRequest {
    /// Node id.
    pub id: u64,
    /// HTTP address, HOST:PORT.
    pub addr: String,
    /// Promote to voter once caught up.
    #[serde(default)]
    pub voter: bool,
    /// How long the node may take to catch up before it is promoted, ms (an addition to
    /// the contract; default six write timeouts).
    #[schema(minimum = 100, maximum = 3600000)]
    pub catch_up_ms: Option<u64>,
}

/// `POST /v1/cluster/leader`.
#[derive(Deserialize, ToSchema, Debug)]
#[schema(as = TransferRequest)]
pub struct TransferLeaderRequest {
    /// The node to hand leadership to.
    pub to: u64,
}

/// Parses a SQL92 property filter (`sql` in a receive body or a read's query); a bad
/// expression is 400 naming the position.
pub(crate) fn parse_sql(
    src: Option<&str>,
) -> Result<Option<std::sync::Arc<raftmq_raft::state::sql::SqlFilter>>, ApiError> {
    src.map(|s| {
        raftmq_raft::state::sql::SqlFilter::parse(s)
            .map(std::sync::Arc::new)
            .map_err(|e| ApiError::invalid("sql", e.to_string()))
    })
    .transpose()
}
