//! The fault modes, which need `--spawn` (the bench owns the processes): `failover` (kill
//! -9 the leader mid-run; the time to the next acknowledged produce) and `catchup` (wipe a
//! replica; its catch-up rate).
//!
//! Must never: leave the killed or wiped node down when it returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use tokio::sync::Mutex;

use super::{BenchArgs, Outcome, produce, produce_body};
use crate::cluster::{Spawned, applied_reaches, commit_index, leader};

/// `--mode failover`.
pub(crate) async fn failover(
    http: &reqwest::Client,
    s: &mut Spawned,
    args: &BenchArgs,
) -> anyhow::Result<Outcome> {
    let urls = s.urls();
    let (leader_id, _) = leader(http, &urls, Duration::from_secs(30)).await?;
    // (sent, acknowledged) of every successful produce.
    let acked = Arc::new(Mutex::new(Vec::<(Instant, Instant)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4usize {
        let (http, urls, topic, acked, stop) = (
            http.clone(),
            urls.clone(),
            args.topic.clone(),
            acked.clone(),
            stop.clone(),
        );
        let body = produce_body(args.size, 10, 0, 0, None);
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let url = format!("{}/v1/topics/{topic}/messages", urls[i % urls.len()]);
                let sent = Instant::now();
                let ok = http
                    .post(url)
                    .timeout(Duration::from_secs(2))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    acked.lock().await.push((sent, Instant::now()));
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed_at = Instant::now();
    s.kill(leader_id);
    eprintln!("bench: killed leader node {leader_id}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    s.spawn(leader_id)?;
    let acks = acked.lock().await;
    // The first produce sent after the kill that was acknowledged: in-flight requests that
    // committed just before the kill do not count.
    let next = acks
        .iter()
        .filter(|(sent, _)| *sent > killed_at)
        .map(|(_, done)| *done)
        .min();
    let failover_ms = next.map(|t| t.duration_since(killed_at).as_secs_f64() * 1e3);
    let samples: Vec<(f64, f64, u64)> = Vec::new();
    Ok((
        json!({"mode": "failover", "killed_leader": leader_id, "failover_ms": failover_ms, "acks_before_kill": acks.iter().filter(|(_, done)| *done <= killed_at).count()}),
        samples,
    ))
}

/// `--mode catchup`.
pub(crate) async fn catchup(
    http: &reqwest::Client,
    s: &mut Spawned,
    args: &BenchArgs,
) -> anyhow::Result<Outcome> {
    let urls = s.urls();
    let (leader_id, leader_url) = leader(http, &urls, Duration::from_secs(30)).await?;
    let fill = BenchArgs {
        count: Some(args.count.unwrap_or(200_000)),
        duration: 3600,
        ..args.clone()
    };
    produce(
        http,
        std::slice::from_ref(&leader_url),
        &fill,
        args.batch.max(100),
        8,
    )
    .await?;
    let metrics = http
        .get(format!("{leader_url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let log_bytes: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("raftmq_log_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let commit = commit_index(http, &leader_url).await;
    let victim = (1..=3).find(|id| *id != leader_id).expect("a follower");
    s.wipe(victim)?;
    let t0 = Instant::now();
    s.spawn(victim)?;
    let url = s.url_of(victim).expect("victim url");
    loop {
        if applied_reaches(http, &url, commit).await {
            break;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("the wiped replica did not catch up in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok((
        json!({"mode": "catchup", "log_bytes": log_bytes, "entries": commit, "seconds": secs, "mb_per_s": log_bytes / secs / 1e6}),
        Vec::new(),
    ))
}
