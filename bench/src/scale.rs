//! How cost grows: `--mode scale` measures produce and consumer-group throughput and the
//! nodes' memory (RSS) as topics and consumer groups are added, and `--mode restart` the time
//! a node takes from start to ready with the log it holds. Both need `--spawn` (the bench
//! reads its nodes' memory from `/proc` and restarts them).
//!
//! Must never: report a figure without the setting it was measured at (topics, queues,
//! groups, log bytes), or leave a node it restarted stopped.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use super::{BenchArgs, Outcome, drive, produce_body, receive_and_ack};
use crate::cluster::{Spawned, applied_reaches, commit_index, leader};

/// The spawned nodes' resident memory, MiB each.
pub(crate) fn rss_mib(s: &Spawned) -> Vec<f64> {
    s.pids()
        .into_iter()
        .map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                })
                .map_or(0.0, |kb| kb / 1024.0)
        })
        .collect()
}

pub(crate) fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

fn scale_topic(i: u64) -> String {
    format!("scale-{i}")
}

/// Creates topics `from..to`, 16 requests at a time.
async fn create_topics(
    http: &reqwest::Client,
    leader_url: &str,
    from: u64,
    to: u64,
    queues: u32,
) -> anyhow::Result<()> {
    let mut next = from;
    while next < to {
        let end = (next + 16).min(to);
        let mut tasks = tokio::task::JoinSet::new();
        for i in next..end {
            let req = http
                .put(format!("{leader_url}/v1/topics/{}", scale_topic(i)))
                .json(&json!({"queues": queues}));
            tasks.spawn(async move { req.send().await });
        }
        while let Some(r) = tasks.join_next().await {
            let r = r??;
            if !r.status().is_success() {
                bail!("creating a topic: {} {}", r.status(), r.text().await?);
            }
        }
        next = end;
    }
    Ok(())
}

/// `--mode scale`: for each topic count, produce to random topics; for each consumer-group
/// count, receive and ack through that many groups; with the nodes' memory after each.
pub(crate) async fn scale(
    http: &reqwest::Client,
    s: &Spawned,
    args: &BenchArgs,
) -> anyhow::Result<Outcome> {
    let urls = s.urls();
    let (_, leader_url) = leader(http, &urls, Duration::from_secs(30)).await?;
    let start_rss = max(&rss_mib(s));
    let mut rows = Vec::new();
    let mut created = 0;
    let mut topic_counts = args.scale_topics.clone();
    topic_counts.sort_unstable();
    let (size, batch) = (args.size, args.batch);
    for &topics in &topic_counts {
        let before = max(&rss_mib(s));
        create_topics(http, &leader_url, created, topics, args.queues).await?;
        let new_queues = (topics.saturating_sub(created) * args.queues as u64).max(1);
        created = created.max(topics);
        let idle = max(&rss_mib(s));
        let (http2, urls2) = (http.clone(), urls.clone());
        let body = produce_body(size, batch, 0, 0, None);
        let (summary, _) = drive(args, "produce", args.concurrency, move |seq, w| {
            let topic = scale_topic((seq * 7919 + w as u64 * 104_729) % topics);
            let base = &urls2[(seq as usize + w) % urls2.len()];
            let req = http2
                .post(format!("{base}/v1/topics/{topic}/messages"))
                .header("content-type", "application/json")
                .body(body.clone());
            async move {
                let r = req.send().await?;
                if !r.status().is_success() {
                    bail!("produce: {}", r.status());
                }
                r.bytes().await?;
                Ok((batch as u64, (batch * size) as u64))
            }
        })
        .await?;
        rows.push(json!({
            "topics": topics, "queues_per_topic": args.queues,
            "produce_msgs_per_s": summary["msgs_per_s"],
            "rss_mib_at_start": start_rss, "rss_mib_before_topics": before,
            "rss_mib_idle": idle, "rss_mib_after": max(&rss_mib(s)),
            // What creating the new topics' queues cost, before any message reaches them.
            "idle_bytes_per_new_queue": (idle - before) * 1_048_576.0 / new_queues as f64,
        }));
    }
    let mut group_counts = args.scale_groups.clone();
    group_counts.sort_unstable();
    for &groups in &group_counts {
        let before = max(&rss_mib(s));
        let (http2, urls2) = (http.clone(), urls.clone());
        let conc = args.concurrency;
        let (summary, _) = drive(args, "group", conc, move |seq, w| {
            let group = format!("scale-g{}", (seq as usize * conc + w) as u64 % groups);
            let base = urls2[(seq as usize + w) % urls2.len()].clone();
            let http = http2.clone();
            async move {
                let topic = scale_topic(0);
                receive_and_ack(&http, &base, &group, &topic, w, batch, size as u64).await
            }
        })
        .await?;
        rows.push(json!({
            "consumer_groups": groups, "group_msgs_per_s": summary["msgs_per_s"],
            "rss_mib_before": before, "rss_mib_after": max(&rss_mib(s)),
        }));
    }
    Ok((json!({"mode": "scale", "rows": rows}), Vec::new()))
}

/// Draws `--mode scale`'s rows: throughput and the largest node's RSS against the number of
/// topics (produce) and of consumer groups (receive + ack), both on log scales.
pub(crate) fn plot(
    path: &std::path::Path,
    result: &serde_json::Value,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let rows = result["rows"].as_array().cloned().unwrap_or_default();
    let series = |x: &str, y: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| Some((r[x].as_f64()?, r[y].as_f64()?)))
            .collect()
    };
    let panels = [
        (
            "produce (msgs/s) by topics",
            series("topics", "produce_msgs_per_s"),
        ),
        (
            "node RSS after (MiB) by topics",
            series("topics", "rss_mib_after"),
        ),
        (
            "receive + ack (msgs/s) by consumer groups",
            series("consumer_groups", "group_msgs_per_s"),
        ),
        (
            "node RSS after (MiB) by consumer groups",
            series("consumer_groups", "rss_mib_after"),
        ),
    ];
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    for (area, (caption, points)) in root.split_evenly((2, 2)).iter().zip(panels) {
        let x_max = points.iter().map(|p| p.0).fold(10.0, f64::max) * 2.0;
        let y_max = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.2;
        let mut c = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d((0.5f64..x_max).log_scale(), 0f64..y_max)?;
        c.configure_mesh().draw()?;
        c.draw_series(LineSeries::new(points.clone(), BLUE.stroke_width(2)))?;
        c.draw_series(points.iter().map(|p| Circle::new(*p, 3, BLUE.filled())))?;
    }
    root.present()?;
    Ok(())
}

/// `--mode restart`: fills the log (`--count` messages of `--size`), stops a follower, starts
/// it again and times it to ready (`/readyz`) and to applied up to the commit index.
pub(crate) async fn restart(
    http: &reqwest::Client,
    s: &mut Spawned,
    args: &BenchArgs,
) -> anyhow::Result<Outcome> {
    let urls = s.urls();
    let (leader_id, leader_url) = leader(http, &urls, Duration::from_secs(30)).await?;
    super::ensure_data(http, &leader_url, args).await?;
    let commit = commit_index(http, &leader_url).await;
    let victim = (1..=3).find(|id| *id != leader_id).context("a follower")?;
    let url = s.url_of(victim).context("the follower's URL")?;
    let log_bytes = s.data_bytes(victim);
    s.kill(victim);
    let t0 = Instant::now();
    s.spawn(victim)?;
    let mut ready = None;
    loop {
        if ready.is_none()
            && http
                .get(format!("{url}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        {
            ready = Some(t0.elapsed().as_secs_f64());
        }
        if ready.is_some() && applied_reaches(http, &url, commit).await {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("the restarted node was not ready in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((
        json!({"mode": "restart", "data_bytes": log_bytes, "entries": commit,
               "seconds_to_ready": ready, "seconds_to_caught_up": t0.elapsed().as_secs_f64()}),
        Vec::new(),
    ))
}
