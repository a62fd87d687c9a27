//! Publish / consume load against a NATS JetStream cluster (R3, file store), measured the
//! way `raftmq bench` measures raftmq, for `bench/compare-nats.sh`.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use clap::Parser;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// publish, consume (no acks), acked (explicit ack of every message) or latency.
    #[arg(long, default_value = "publish")]
    mode: String,
    #[arg(long, default_value = "nats://127.0.0.1:14222")]
    url: String,
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Publishes awaiting their ack at once.
    #[arg(long, default_value_t = 256)]
    inflight: usize,
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value = "BENCH")]
    stream: String,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() { 0.0 } else { sorted[((sorted.len() - 1) as f64 * p).round() as usize] }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let client = async_nats::connect(&a.url).await?;
    let js = jetstream::new(client);
    let subject = format!("{}.data", a.stream.to_lowercase());
    let st = js
        .get_or_create_stream(stream::Config {
            name: a.stream.clone(),
            subjects: vec![subject.clone()],
            num_replicas: 3,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let payload = bytes::Bytes::from(vec![b'x'; a.size]);
    let start = Instant::now();
    let until = start + Duration::from_secs(a.duration);
    let mut lats = Vec::new();
    let mut n = 0u64;
    match a.mode.as_str() {
        "publish" | "latency" => {
            let inflight = if a.mode == "latency" { 1 } else { a.inflight };
            let mut pending = FuturesUnordered::new();
            while Instant::now() < until {
                while pending.len() < inflight {
                    let t0 = Instant::now();
                    let ack = js.publish(subject.clone(), payload.clone()).await?;
                    pending.push(async move { ack.await.map(|_| t0.elapsed()) });
                }
                if let Some(r) = pending.next().await {
                    lats.push(r?.as_secs_f64() * 1e3);
                    n += 1;
                }
            }
            while let Some(r) = pending.next().await {
                lats.push(r?.as_secs_f64() * 1e3);
                n += 1;
            }
        }
        "consume" | "acked" => {
            let acked = a.mode == "acked";
            let name = if acked { "bench-acker" } else { "bench-reader" };
            let c = st
                .get_or_create_consumer(
                    name,
                    consumer::pull::Config {
                        durable_name: Some(name.into()),
                        ack_policy: if acked {
                            consumer::AckPolicy::Explicit
                        } else {
                            consumer::AckPolicy::None
                        },
                        ..Default::default()
                    },
                )
                .await?;
            let mut msgs = c.messages().await?;
            while Instant::now() < until {
                match tokio::time::timeout(Duration::from_secs(1), msgs.next()).await {
                    Ok(Some(m)) => {
                        let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
                        if acked {
                            m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                        }
                        n += 1;
                    }
                    _ => break,
                }
            }
        }
        other => anyhow::bail!("unknown mode {other}"),
    }
    let secs = start.elapsed().as_secs_f64();
    lats.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "system": "nats-jetstream", "mode": a.mode, "size": a.size, "inflight": a.inflight,
            "messages": n, "seconds": secs, "msgs_per_s": n as f64 / secs,
            "mb_per_s": n as f64 * a.size as f64 / secs / 1e6,
            "latency_ms": {"p50": pct(&lats, 0.5), "p90": pct(&lats, 0.9), "p99": pct(&lats, 0.99), "max": lats.last().copied().unwrap_or(0.0)},
        })
    );
    Ok(())
}
