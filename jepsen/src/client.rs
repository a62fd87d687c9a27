//! The harness's own HTTP client and DTOs for the raftmq API (it shares no code with
//! raftmq), and how each response maps to `ok`, `fail` (certainly did not happen) or
//! `info` (unknown).
//!
//! Must never: call an unknown outcome a failure: timeouts, lost connections after
//! sending, 5xx other than 503 and 507 (refused before anything was written) are `info`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

/// What happened to an operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome<T> {
    /// It happened.
    Ok(T),
    /// It certainly did not.
    Fail(String),
    /// Unknown.
    Info(String),
}

impl<T> Outcome<T> {
    /// Maps an `Ok` value; `fail` and `info` pass through.
    pub fn and_then<U>(self, f: impl FnOnce(T) -> Outcome<U>) -> Outcome<U> {
        match self {
            Outcome::Ok(t) => f(t),
            Outcome::Fail(e) => Outcome::Fail(e),
            Outcome::Info(e) => Outcome::Info(e),
        }
    }
}

/// A string field of an answer (an answer without it is of unknown meaning).
fn field(v: Value, name: &str) -> Outcome<String> {
    match v[name].as_str() {
        Some(s) => Outcome::Ok(s.to_owned()),
        None => Outcome::Info(format!("unexpected answer {v}")),
    }
}

/// How clients reach a run's nodes: the admin token the nodes require, and the CA of their
/// certificates when they serve HTTPS.
#[derive(Clone, Debug)]
pub struct Access {
    /// Bearer token of every request.
    pub token: String,
    /// PEM CA certificate (`None`: plain HTTP).
    pub ca_pem: Option<Vec<u8>>,
}

/// The client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    scheme: &'static str,
}

impl Client {
    /// A client whose requests give up after `timeout`, reaching nodes as `access` says.
    pub fn new(timeout: Duration, access: &Access) -> anyhow::Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", access.token).parse()?,
        );
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(1));
        if let Some(ca) = &access.ca_pem {
            builder = builder
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(ca)?);
        }
        Ok(Client {
            http: builder.build()?,
            scheme: if access.ca_pem.is_some() {
                "https"
            } else {
                "http"
            },
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        node: SocketAddr,
        path: &str,
        body: Option<&Value>,
    ) -> Outcome<Value> {
        let scheme = self.scheme;
        let mut req = self
            .http
            .request(method, format!("{scheme}://{node}{path}"));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Outcome::Fail(format!("connect: {e}")),
            Err(e) => return Outcome::Info(e.to_string()),
        };
        let status = resp.status().as_u16();
        let body: Value = match resp.json().await {
            Ok(v) => v,
            Err(e) => return Outcome::Info(format!("status {status}, unreadable body: {e}")),
        };
        let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
        match status {
            200 => Outcome::Ok(body),
            400..=499 | 503 | 507 => Outcome::Fail(format!("{status} {code}")),
            _ => Outcome::Info(format!("{status} {code}")),
        }
    }

    /// Produces one message (scheduled for `deliver_at_ms` if given); `Ok((queue, offset))`,
    /// no offset for a scheduled message.
    pub async fn send(
        &self,
        node: SocketAddr,
        topic: &str,
        key: &str,
        value: &str,
        idempotency_key: Option<&str>,
        deliver_at_ms: Option<u64>,
    ) -> Outcome<(u64, Option<u64>)> {
        let mut body = json!({"messages": [{"body": value, "key": key}]});
        if let Some(k) = idempotency_key {
            body["messages"][0]["idempotency_key"] = json!(k);
        }
        if let Some(t) = deliver_at_ms {
            body["messages"][0]["deliver_at_ms"] = json!(t);
        }
        match self
            .call(
                reqwest::Method::POST,
                node,
                &format!("/v1/topics/{topic}/messages"),
                Some(&body),
            )
            .await
        {
            // A scheduled message has no offset until it comes due.
            Outcome::Ok(v) => match (
                v["results"][0]["queue"].as_u64(),
                v["results"][0]["offset"].as_u64(),
            ) {
                (Some(q), Some(o)) => Outcome::Ok((q, Some(o))),
                (Some(q), None) if v["results"][0]["offset"].is_null() => Outcome::Ok((q, None)),
                _ => Outcome::Info(format!("unexpected answer {v}")),
            },
            Outcome::Fail(e) => Outcome::Fail(e),
            Outcome::Info(e) => Outcome::Info(e),
        }
    }

    /// Produces one message as a transaction checked back at `check_url`; `Ok(id)`.
    pub async fn send_txn(
        &self,
        node: SocketAddr,
        topic: &str,
        key: &str,
        value: &str,
        check_url: &str,
        check_after_ms: u64,
    ) -> Outcome<String> {
        let body = json!({
            "messages": [{"body": value, "key": key}],
            "transaction": {"check_url": check_url, "check_after_ms": check_after_ms},
        });
        self.call(
            reqwest::Method::POST,
            node,
            &format!("/v1/topics/{topic}/messages"),
            Some(&body),
        )
        .await
        .and_then(|v| field(v, "transaction_id"))
    }

    /// Commits (`commit`) or rolls back a transaction, or (`None`) reads it; `Ok(state)`.
    pub async fn txn(&self, node: SocketAddr, id: &str, commit: Option<bool>) -> Outcome<String> {
        let (method, path) = match commit {
            Some(true) => (
                reqwest::Method::POST,
                format!("/v1/transactions/{id}/commit"),
            ),
            Some(false) => (
                reqwest::Method::POST,
                format!("/v1/transactions/{id}/rollback"),
            ),
            None => (reqwest::Method::GET, format!("/v1/transactions/{id}")),
        };
        self.call(method, node, &path, None)
            .await
            .and_then(|v| field(v, "state"))
    }

    /// Reads a queue from `offset`; `Ok((messages, next_offset))`.
    pub async fn poll(
        &self,
        node: SocketAddr,
        topic: &str,
        queue: u64,
        offset: u64,
        max: u64,
    ) -> Outcome<(Vec<(u64, String)>, u64)> {
        let path = format!("/v1/topics/{topic}/queues/{queue}/messages?offset={offset}&max={max}");
        match self.call(reqwest::Method::GET, node, &path, None).await {
            Outcome::Ok(v) => {
                let msgs = v["messages"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|m| {
                                Some((m["offset"].as_u64()?, m["body"].as_str()?.to_owned()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Outcome::Ok((msgs, v["next_offset"].as_u64().unwrap_or(offset)))
            }
            Outcome::Fail(e) => Outcome::Fail(e),
            Outcome::Info(e) => Outcome::Info(e),
        }
    }

    /// Commits a group offset.
    pub async fn commit(
        &self,
        node: SocketAddr,
        group: &str,
        topic: &str,
        queue: u64,
        offset: u64,
    ) -> Outcome<()> {
        let body = json!({"topic": topic, "offsets": [{"queue": queue, "offset": offset}]});
        match self
            .call(
                reqwest::Method::PUT,
                node,
                &format!("/v1/groups/{group}/offsets"),
                Some(&body),
            )
            .await
        {
            Outcome::Ok(_) => Outcome::Ok(()),
            Outcome::Fail(e) => Outcome::Fail(e),
            Outcome::Info(e) => Outcome::Info(e),
        }
    }

    /// Creates a topic (spread over `groups` when there are any).
    pub async fn create_topic(
        &self,
        node: SocketAddr,
        topic: &str,
        queues: u64,
        fifo: bool,
        groups: &[String],
    ) -> Outcome<Value> {
        let mut body = json!({"queues": queues, "fifo": fifo});
        if !groups.is_empty() {
            body["groups"] = json!(groups);
        }
        self.call(
            reqwest::Method::PUT,
            node,
            &format!("/v1/topics/{topic}"),
            Some(&body),
        )
        .await
    }

    /// Sets a consumer group's retry backoff (ms, by attempt).
    pub async fn set_retry_backoff(
        &self,
        node: SocketAddr,
        group: &str,
        backoff_ms: &[u64],
    ) -> Outcome<Value> {
        self.call(
            reqwest::Method::PUT,
            node,
            &format!("/v1/groups/{group}"),
            Some(&json!({ "retry_backoff_ms": backoff_ms })),
        )
        .await
    }

    /// Receives for a consumer group: `(value, attempt, receipt, queue, offset)` per message.
    #[allow(clippy::too_many_arguments)]
    pub async fn receive(
        &self,
        node: SocketAddr,
        group: &str,
        topic: &str,
        consumer: &str,
        max: u64,
        wait_ms: u64,
        invisible_ms: u64,
    ) -> Outcome<Vec<(String, u64, String, u64, u64)>> {
        let body = json!({"consumer": consumer, "max": max, "wait_ms": wait_ms, "invisible_ms": invisible_ms});
        let path = format!("/v1/groups/{group}/topics/{topic}/receive");
        self.call(reqwest::Method::POST, node, &path, Some(&body))
            .await
            .and_then(|v| {
                let msgs = v["messages"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|m| {
                                Some((
                                    m["body"].as_str()?.to_owned(),
                                    m["attempt"].as_u64()?,
                                    m["receipt"].as_str()?.to_owned(),
                                    m["queue"].as_u64()?,
                                    m["offset"].as_u64()?,
                                ))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Outcome::Ok(msgs)
            })
    }

    /// Acks receipts (or nacks them with `Some(delay_ms)`): which receipts succeeded.
    pub async fn ack(
        &self,
        node: SocketAddr,
        group: &str,
        topic: &str,
        receipts: &[String],
        nack_delay_ms: Option<u64>,
    ) -> Outcome<Vec<bool>> {
        let (verb, body) = match nack_delay_ms {
            None => ("ack", json!({"receipts": receipts})),
            Some(d) => ("nack", json!({"receipts": receipts, "delay_ms": d})),
        };
        let path = format!("/v1/groups/{group}/topics/{topic}/{verb}");
        self.call(reqwest::Method::POST, node, &path, Some(&body))
            .await
            .and_then(|v| {
                Outcome::Ok(
                    v["results"]
                        .as_array()
                        .map(|a| a.iter().map(|r| r["ok"] == true).collect())
                        .unwrap_or_default(),
                )
            })
    }

    /// `GET /v1/cluster`.
    pub async fn cluster(&self, node: SocketAddr) -> Option<Value> {
        match self
            .call(reqwest::Method::GET, node, "/v1/cluster", None)
            .await
        {
            Outcome::Ok(v) => Some(v),
            _ => None,
        }
    }

    /// Any admin call; the JSON body on success.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        node: SocketAddr,
        path: &str,
        body: Option<&Value>,
    ) -> Outcome<Value> {
        self.call(method, node, path, body).await
    }
}
