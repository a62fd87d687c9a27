//! Outsiders cannot speak the peer protocol: without a cluster secret only the members'
//! hosts may, with one only requests carrying its MAC may, and never the same one twice.
//! Refused requests are refused before anything decodes them; the group goes on.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::cluster::Cluster;

const SECRET: &str = "test-cluster-secret";

/// The credentials header value a node with `secret` would send.
fn sign(secret: &str, path: &str, node: u64, body: &[u8]) -> String {
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let nonce: u64 = 0x5eed;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(path.as_bytes());
    mac.update(&node.to_le_bytes());
    mac.update(&time.to_le_bytes());
    mac.update(&nonce.to_le_bytes());
    mac.update(body);
    let tag: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{node}:{time}:{nonce:x}:{tag}")
}

async fn post(http: &reqwest::Client, url: String, header: Option<String>, body: Vec<u8>) -> u16 {
    let mut req = http.post(url).body(body);
    if let Some(h) = header {
        req = req.header("x-raftmq-peer", h);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_only_signed_fresh_requests_are_taken() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), SECRET).unwrap();
    let path = file.path().to_str().unwrap().to_owned();
    let c = Cluster::start_with(3, &["--cluster-secret-file", &path]);
    let leader = c.wait_leader().await;
    let follower = c.live().into_iter().find(|&id| id != leader).unwrap();
    // A forged frame: an append claiming four billion entries in 20 bytes.
    let mut forged = vec![4u8, 0, 0, 0, 0, 0, 0, 0];
    forged.extend_from_slice(&u32::MAX.to_le_bytes());
    forged.extend_from_slice(&[0; 8]);
    for rpc in ["append", "vote", "snapshot/begin"] {
        let url = c.url(follower, &format!("/raft/{rpc}"));
        assert_eq!(
            post(&c.http, url.clone(), None, forged.clone()).await,
            401,
            "{rpc}"
        );
        let guessed = sign("a-guess", &format!("/raft/{rpc}"), 9, &forged);
        assert_eq!(
            post(&c.http, url, Some(guessed), forged.clone()).await,
            401,
            "{rpc}"
        );
    }
    // Signed, the forged frame is decoded and refused; the node stays up.
    let url = c.url(follower, "/raft/append");
    let signed = sign(SECRET, "/raft/append", 9, &forged);
    assert_eq!(
        post(&c.http, url.clone(), Some(signed.clone()), forged.clone()).await,
        400
    );
    // The same request again is a replay.
    assert_eq!(post(&c.http, url, Some(signed), forged).await, 401);
    let (s, _) = c.get(follower, "/healthz").await.unwrap();
    assert_eq!(s, 200);
    let (s, v) = c
        .post(
            follower,
            "/v1/topics/t/messages",
            &json!({"messages": [{"body": "x"}]}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "the group replicates with its secret: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_only_the_members_hosts_are_taken() {
    let c = Cluster::start(3);
    let leader = c.wait_leader().await;
    // The members live on 127.0.0.1; an outsider connects from 127.0.0.2.
    let outsider = reqwest::Client::builder()
        .no_proxy()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    for rpc in ["append", "vote", "snapshot/begin"] {
        let status = post(
            &outsider,
            c.url(leader, &format!("/raft/{rpc}")),
            None,
            vec![1, 2, 3],
        )
        .await;
        assert_eq!(status, 401, "{rpc}");
    }
    // From a member's host the request is decoded (and refused as malformed).
    assert_eq!(
        post(&c.http, c.url(leader, "/raft/vote"), None, vec![1, 2, 3]).await,
        400
    );
    assert!(c.produce(leader, "t", "still-fine").await.is_some());
}
