//! With an admin token configured, clients need a bearer token: the admin's, or a user's
//! that carries the permission the route needs. Users are replicated state (made on the
//! leader, honoured by every node, forwarded writes checked again), and never shown with
//! their tokens.

use reqwest::Method;
use serde_json::{Value, json};

use crate::cluster::Cluster;

const ADMIN: &str = "admin-token-0123456789";
const ALICE: &str = "alice-token-0123456789";

/// A client speaking with one token (or none), without the harness's admin header.
struct Caller<'a> {
    c: &'a Cluster,
    plain: &'a reqwest::Client,
    token: Option<&'a str>,
}

impl Caller<'_> {
    async fn call(&self, method: Method, id: u64, path: &str, body: Value) -> (u16, Value) {
        let mut req = self.plain.request(method.clone(), self.c.url(id, path));
        if method != Method::GET {
            req = req.json(&body);
        }
        if let Some(t) = self.token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Waits until every live node answers `GET /v1/topics` with `status` (users are
    /// applied on each node in its own time).
    async fn answered_everywhere(&self, status: u16) {
        for id in self.c.live() {
            self.c
                .wait_for(&format!("{status} on node {id}"), || async {
                    let (s, _) = self.call(Method::GET, id, "/v1/topics", Value::Null).await;
                    (s == status).then_some(())
                })
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_permissions_guard_every_route() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("{ADMIN}\n")).unwrap();
    let path = file.path().to_str().unwrap().to_owned();
    let mut c = Cluster::start_with(3, &["--admin-token-file", &path]);
    // The harness's own helpers speak as the admin.
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {ADMIN}").parse().unwrap(),
    );
    let admin_http = c.client_builder().default_headers(headers).build().unwrap();
    let plain = std::mem::replace(&mut c.http, admin_http);
    let leader = c.wait_leader().await;
    let follower = c.live().into_iter().find(|&id| id != leader).unwrap();
    let caller = |token| Caller {
        c: &c,
        plain: &plain,
        token,
    };
    let (admin, alice) = (caller(Some(ADMIN)), caller(Some(ALICE)));

    // Without a token, or with an unknown one: 401; health stays open.
    for token in [None, Some("not-a-known-token-at-all")] {
        let (s, v) = caller(token)
            .call(Method::GET, follower, "/v1/topics", Value::Null)
            .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (401, Some("UNAUTHENTICATED"))
        );
        let (s, _) = caller(token)
            .call(Method::GET, follower, "/metrics", Value::Null)
            .await;
        assert_eq!(s, 401);
    }
    let s = plain
        .get(c.url(follower, "/healthz"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 200);

    // The scheme is case-insensitive (RFC 9110).
    let s = plain
        .get(c.url(follower, "/v1/topics"))
        .header(reqwest::header::AUTHORIZATION, format!("bearer {ADMIN}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 200);

    c.create_topic(leader, "orders", 2).await;
    c.create_topic(leader, "audit", 1).await;
    let alice_user = json!({"token": ALICE, "permissions": [
        {"topic": "ord*", "actions": ["produce", "consume"]},
        {"group": "billing", "actions": ["consume"]},
    ]});
    // Bad users are refused with the field named.
    for (bad, field) in [
        (json!({"token": "short"}), "token"),
        (
            json!({"token": ALICE, "permissions": [{"topic": "a", "group": "b", "actions": ["consume"]}]}),
            "permissions[0].topic",
        ),
        (
            json!({"token": ALICE, "permissions": [{"topic": "a", "actions": ["fly"]}]}),
            "permissions[0].actions",
        ),
    ] {
        let (s, v) = admin
            .call(Method::PUT, follower, "/v1/acl/users/alice", bad)
            .await;
        assert_eq!(s, 400, "{v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(field), "{v}");
    }
    // Made through a follower (forwarded to the leader, checked there again).
    let (s, v) = admin
        .call(Method::PUT, follower, "/v1/acl/users/alice", alice_user)
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = admin
        .call(Method::GET, leader, "/v1/acl/users", Value::Null)
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["users"][0]["name"], "alice");
    assert!(
        !v.to_string().contains(ALICE),
        "tokens are never returned: {v}"
    );

    // Every node knows alice once the user is applied there.
    alice.answered_everywhere(200).await;
    let produce = json!({"messages": [{"body": "x"}]});
    let (s, v) = alice
        .call(
            Method::POST,
            follower,
            "/v1/topics/orders/messages",
            produce.clone(),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let receive = json!({"consumer": "c1", "max": 4, "wait_ms": 0});
    let (s, v) = alice
        .call(
            Method::POST,
            follower,
            "/v1/groups/billing/topics/orders/receive",
            receive.clone(),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    for (method, path, body) in [
        (Method::POST, "/v1/topics/audit/messages", produce.clone()),
        (
            Method::POST,
            "/v1/groups/other/topics/orders/receive",
            receive.clone(),
        ),
        (Method::PUT, "/v1/topics/orders", json!({"queues": 4})),
        (Method::DELETE, "/v1/topics/orders", Value::Null),
        (Method::GET, "/v1/acl/users", Value::Null),
        (
            Method::PUT,
            "/v1/acl/users/mallory",
            json!({"token": ALICE, "admin": true}),
        ),
        (Method::POST, "/v1/cluster/leader", json!({"to": follower})),
        (Method::GET, "/metrics", Value::Null),
    ] {
        let (s, v) = alice.call(method.clone(), follower, path, body).await;
        assert_eq!(s, 403, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "PERMISSION_DENIED", "{v}");
    }

    // Deleted, her token is unknown everywhere.
    let (s, v) = admin
        .call(Method::DELETE, follower, "/v1/acl/users/alice", Value::Null)
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = admin
        .call(Method::DELETE, leader, "/v1/acl/users/alice", Value::Null)
        .await;
    assert_eq!(s, 404, "{v}");
    alice.answered_everywhere(401).await;
}
