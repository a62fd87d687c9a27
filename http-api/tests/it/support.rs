//! A single-node broker and a router to drive with `oneshot`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use raftmq_http_api::ApiConfig;
use raftmq_raft::{Broker, BrokerConfig, FlushPolicy, RaftTiming};
use serde_json::Value;
use tower::ServiceExt;

pub(crate) struct Node {
    pub(crate) router: Router,
    pub(crate) broker: Broker,
    _dir: tempfile::TempDir,
}

impl Node {
    pub(crate) async fn start(cfg: ApiConfig) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(BrokerConfig {
            transport: None,
            log_fs: None,
            wall_clock: None,
            install_probe: None,
            node_id: 1,
            broker_group: "g1".into(),
            data_dir: dir.path().to_path_buf(),
            // Never contacted: a single voter elects itself.
            peers: BTreeMap::from([(1, "127.0.0.1:9".to_owned())]),
            flush: FlushPolicy::Sync,
            segment_size: 1 << 20,
            form_group: true,
            retention_check: Duration::from_secs(3600),
            min_free_bytes: Some(0),
            cluster_secret: None,
            peer_source_ip: None,
            peer_tls: None,
            timing: RaftTiming {
                heartbeat_ms: 50,
                election_timeout_ms: 200,
            },
        })
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !broker.is_leader() {
            assert!(
                Instant::now() < deadline,
                "single node did not elect itself"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let router = raftmq_http_api::router(broker.clone(), cfg);
        Node {
            router,
            broker,
            _dir: dir,
        }
    }

    pub(crate) async fn auto() -> Node {
        Node::start(ApiConfig {
            auto_create_topics: true,
            max_request_bytes: 64 * 1024,
            ..ApiConfig::default()
        })
        .await
    }

    pub(crate) async fn call(&self, method: Method, uri: &str, body: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, json)
    }

    pub(crate) async fn post(&self, uri: &str, body: &str) -> (StatusCode, Value) {
        self.call(Method::POST, uri, body).await
    }

    pub(crate) async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri, "").await
    }

    pub(crate) async fn put(&self, uri: &str, body: &str) -> (StatusCode, Value) {
        self.call(Method::PUT, uri, body).await
    }
}

/// Asserts an error response: status, code, and that the message mentions `needle`.
pub(crate) fn assert_error(
    resp: &(StatusCode, Value),
    status: StatusCode,
    code: &str,
    needle: &str,
) {
    assert_eq!(resp.0, status, "{}", resp.1);
    assert_eq!(resp.1["error"]["code"], code, "{}", resp.1);
    let msg = resp.1["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(needle),
        "message `{msg}` should mention `{needle}`"
    );
}
