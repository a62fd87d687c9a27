//! TLS: a group serving HTTPS replicates and forwards over it, answers nothing on plain
//! HTTP, takes peer RPC only over connections whose client certificate its CA signed, and
//! swaps its certificate on SIGHUP (keeping the old one when the new files are bad).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;

use crate::cluster::{Cluster, make_certs};

/// The certificate node `id` presents to a new connection.
async fn presented_certificate(c: &Cluster, id: u64) -> Option<Vec<u8>> {
    let ca = CertificateDer::from_pem_file(c.tls_dir.as_ref()?.join("ca.pem")).ok()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).ok()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(&c.node(id).addr)
        .await
        .ok()?;
    let name = ServerName::try_from("127.0.0.1").ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .ok()?;
    Some(tls.get_ref().1.peer_certificates()?.first()?.to_vec())
}

fn der_of(path: &std::path::Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

fn sighup(c: &Cluster, id: u64) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &c.pid(id).to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Replaces `to` with `from` in one step (a reload never sees half a file).
fn replace(from: &std::path::Path, to: &std::path::Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_group_replicates_forwards_and_refuses_plain_and_unsigned_peers() {
    let c = Cluster::start_tls(3, &[]);
    let leader = c.wait_leader().await;
    let follower = c.live().into_iter().find(|&id| id != leader).unwrap();
    // Through a follower: forwarded to the leader over TLS, replicated over TLS.
    c.create_topic(follower, "t", 1).await;
    let acked = c.produce_acked(follower, "t", "m", 20).await;
    for id in c.live() {
        c.wait_for(&format!("node {id} to hold every message"), || async {
            (c.read_all(id, "t", 0).await? == acked).then_some(())
        })
        .await;
    }

    // Plain HTTP gets no HTTP answer; a client that does not trust the CA cannot connect.
    let addr = &c.node(follower).addr;
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        plain
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_err()
    );
    let untrusting = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    assert!(
        untrusting
            .get(format!("https://{addr}/healthz"))
            .send()
            .await
            .is_err()
    );

    // Peer routes: a connection without a client certificate is refused before decoding.
    for rpc in ["append", "vote", "snapshot/begin"] {
        let r = c
            .http
            .post(c.url(leader, &format!("/raft/{rpc}")))
            .body(vec![1, 2, 3])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{rpc}");
        assert!(r.text().await.unwrap().contains("client certificate"));
    }
    // A certificate from another CA fails the handshake.
    let other = c.dir.path().join("other-ca");
    make_certs(&other, "outsider");
    let pem = [
        std::fs::read(other.join("outsider.pem")).unwrap(),
        std::fs::read(other.join("outsider-key.pem")).unwrap(),
    ]
    .concat();
    let outsider = c
        .client_builder()
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    assert!(
        outsider
            .post(c.url(leader, "/raft/vote"))
            .body(vec![1, 2, 3])
            .send()
            .await
            .is_err()
    );
    // One the cluster's CA signed passes TLS and reaches the peer protocol's own checks
    // (here: the members' hosts, then decoding, which refuses the garbage).
    let insider_pem = [
        std::fs::read(c.tls_dir.as_ref().unwrap().join("node.pem")).unwrap(),
        std::fs::read(c.tls_dir.as_ref().unwrap().join("node-key.pem")).unwrap(),
    ]
    .concat();
    let insider = c
        .client_builder()
        .identity(reqwest::Identity::from_pem(&insider_pem).unwrap())
        .build()
        .unwrap();
    let r = insider
        .post(c.url(leader, "/raft/vote"))
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let (s, _) = c.get(leader, "/healthz").await.unwrap();
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_and_bad_files_keep_the_old_one() {
    let c = Cluster::start_tls(3, &[]);
    let leader = c.wait_leader().await;
    let dir = c.tls_dir.clone().unwrap();
    let first = der_of(&dir.join("node.pem"));
    assert_eq!(presented_certificate(&c, leader).await, Some(first.clone()));

    // Every node gets a new certificate from the same CA and is told to reload.
    make_certs(&dir, "rotated");
    replace(&dir.join("rotated-key.pem"), &dir.join("node-key.pem"));
    replace(&dir.join("rotated.pem"), &dir.join("node.pem"));
    let rotated = der_of(&dir.join("node.pem"));
    assert_ne!(first, rotated);
    for id in c.live() {
        sighup(&c, id);
    }
    for id in c.live() {
        c.wait_for(
            &format!("node {id} to present the new certificate"),
            || async { (presented_certificate(&c, id).await? == rotated).then_some(()) },
        )
        .await;
    }
    // The group still replicates (peers present and check the new certificate).
    c.create_topic(leader, "t", 1).await;
    let acked = c.produce_acked(leader, "t", "m", 5).await;
    for id in c.live() {
        c.wait_for(&format!("node {id} to hold every message"), || async {
            (c.read_all(id, "t", 0).await? == acked).then_some(())
        })
        .await;
    }

    // A key that does not parse: the reload fails, is logged, and the node keeps serving.
    std::fs::write(dir.join("node-key.pem"), "not a key\n").unwrap();
    sighup(&c, leader);
    let log = c.dir.path().join(format!("node{leader}.log"));
    c.wait_for("the failed reload to be logged", || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("TLS reload failed").then_some(())
    })
    .await;
    assert_eq!(presented_certificate(&c, leader).await, Some(rotated));
    let (s, _) = c
        .post(
            leader,
            "/v1/topics/t/messages",
            &json!({"messages": [{"body": "after"}]}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
}
