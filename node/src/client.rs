//! The HTTP client the `raftmq` client commands use: one method per API call, each with
//! typed arguments, answering the server's JSON or its error (code, message, status).
//!
//! Must never: build a request from a string a user typed into a path without encoding it,
//! or hide the server's error message.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

/// An error answer of the API, or a failure to reach it.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// The server answered with an error body.
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// No answer (connection refused, timeout, unreadable body).
    Transport(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Api {
                status,
                code,
                message,
            } => write!(f, "{message} ({code}, HTTP {status})"),
            ClientError::Transport(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {}

type R = Result<Value, ClientError>;

/// A client of one node's API.
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// One path segment, percent-encoded (names are plain, ids contain dots; both stay as
/// they are, anything else is encoded).
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A message to produce.
#[derive(Clone, Debug, Default)]
pub(crate) struct NewMessage {
    pub(crate) body: String,
    pub(crate) key: Option<String>,
    pub(crate) tag: Option<String>,
    pub(crate) properties: Vec<(String, String)>,
    pub(crate) queue: Option<u32>,
    pub(crate) delay_ms: Option<u64>,
}

impl Client {
    /// A client of `url` (`http://` or `https://`, trusting `ca` if given).
    pub(crate) fn new(url: &str, token: Option<String>, ca: Option<&Path>) -> anyhow::Result<Self> {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5));
        if let Some(ca) = ca {
            let pem =
                std::fs::read(ca).with_context(|| format!("--ca: reading {}", ca.display()))?;
            b = b
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).context("--ca")?);
        }
        Ok(Client {
            http: b.build()?,
            base: url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> R {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ClientError::Transport(format!("cannot reach {}: {e}", self.base)))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| ClientError::Transport(format!("reading the answer: {e}")))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            return Ok(v);
        }
        Err(ClientError::Api {
            status,
            code: v["error"]["code"].as_str().unwrap_or("UNKNOWN").to_owned(),
            message: v["error"]["message"]
                .as_str()
                .map_or_else(|| v.to_string(), str::to_owned),
        })
    }

    async fn get(&self, path: &str) -> R {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> R {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// `PUT /v1/topics/{t}`.
    pub(crate) async fn put_topic(&self, topic: &str, settings: Value) -> R {
        let path = format!("/v1/topics/{}", seg(topic));
        self.call(reqwest::Method::PUT, &path, Some(settings)).await
    }

    /// `GET /v1/topics`.
    pub(crate) async fn topics(&self) -> R {
        self.get("/v1/topics").await
    }

    /// `GET /v1/topics/{t}`.
    pub(crate) async fn topic(&self, topic: &str) -> R {
        self.get(&format!("/v1/topics/{}", seg(topic))).await
    }

    /// `DELETE /v1/topics/{t}`.
    pub(crate) async fn delete_topic(&self, topic: &str) -> R {
        let path = format!("/v1/topics/{}", seg(topic));
        self.call(reqwest::Method::DELETE, &path, None).await
    }

    /// `POST /v1/topics/{t}/messages`.
    pub(crate) async fn produce(&self, topic: &str, messages: &[NewMessage]) -> R {
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| {
                let mut v = json!({ "body": m.body });
                if let Some(k) = &m.key {
                    v["key"] = json!(k);
                }
                if let Some(t) = &m.tag {
                    v["tag"] = json!(t);
                }
                if !m.properties.is_empty() {
                    v["properties"] = json!(
                        m.properties
                            .iter()
                            .cloned()
                            .collect::<std::collections::BTreeMap<_, _>>()
                    );
                }
                if let Some(q) = m.queue {
                    v["queue"] = json!(q);
                }
                if let Some(d) = m.delay_ms {
                    v["delay_ms"] = json!(d);
                }
                v
            })
            .collect();
        let path = format!("/v1/topics/{}/messages", seg(topic));
        self.post(&path, json!({ "messages": msgs })).await
    }

    /// `GET /v1/topics/{t}/queues/{q}/messages`.
    pub(crate) async fn read(
        &self,
        topic: &str,
        queue: u32,
        offset: u64,
        max: u32,
        wait_ms: u64,
    ) -> R {
        self.get(&format!(
            "/v1/topics/{}/queues/{queue}/messages?offset={offset}&max={max}&wait_ms={wait_ms}",
            seg(topic)
        ))
        .await
    }

    /// `POST /v1/groups/{g}/topics/{t}/receive`.
    pub(crate) async fn receive(&self, group: &str, topic: &str, body: Value) -> R {
        let path = format!("/v1/groups/{}/topics/{}/receive", seg(group), seg(topic));
        self.post(&path, body).await
    }

    /// `POST /v1/groups/{g}/topics/{t}/ack`.
    pub(crate) async fn ack(&self, group: &str, topic: &str, receipts: &[String]) -> R {
        let path = format!("/v1/groups/{}/topics/{}/ack", seg(group), seg(topic));
        self.post(&path, json!({ "receipts": receipts })).await
    }

    /// `GET /v1/groups`.
    pub(crate) async fn groups(&self) -> R {
        self.get("/v1/groups").await
    }

    /// `GET /v1/groups/{g}`.
    pub(crate) async fn group(&self, group: &str) -> R {
        self.get(&format!("/v1/groups/{}", seg(group))).await
    }

    /// `POST /v1/groups/{g}/offsets/reset`.
    pub(crate) async fn reset(&self, group: &str, topic: &str, to: Value) -> R {
        let path = format!("/v1/groups/{}/offsets/reset", seg(group));
        self.post(&path, json!({"topic": topic, "to": to})).await
    }

    /// `GET /v1/cluster`.
    pub(crate) async fn cluster(&self) -> R {
        self.get("/v1/cluster").await
    }

    /// `POST /v1/cluster/members`.
    pub(crate) async fn add_member(&self, id: u64, addr: &str, voter: bool) -> R {
        self.post(
            "/v1/cluster/members",
            json!({"id": id, "addr": addr, "voter": voter}),
        )
        .await
    }

    /// `DELETE /v1/cluster/members/{id}`.
    pub(crate) async fn remove_member(&self, id: u64) -> R {
        let path = format!("/v1/cluster/members/{id}");
        self.call(reqwest::Method::DELETE, &path, None).await
    }

    /// `POST /v1/cluster/leader`.
    pub(crate) async fn transfer_leader(&self, to: u64) -> R {
        self.post("/v1/cluster/leader", json!({ "to": to })).await
    }

    /// `GET /v1/messages/{id}`.
    pub(crate) async fn message(&self, id: &str) -> R {
        self.get(&format!("/v1/messages/{}", seg(id))).await
    }
}
