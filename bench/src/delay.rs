//! `--mode delay`: scheduled messages. Parks `--pending` messages far in the future and
//! reports the nodes' memory before and after (what a pending timer costs), then produces
//! `--count` messages due over the next `--duration` seconds and reads every queue from the
//! leader with long polls, reporting how late each message became readable (p50, p99, max)
//! and any that came early, twice or never.
//!
//! Lateness is the reader's wall clock at the read minus `deliver_at_ms`; the nodes run on
//! this machine, so it includes one long-poll answer but no clock offset.
//!
//! Must never: count a message it did not see, or report lateness without the count and
//! spread it was measured at.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use serde_json::{Value, json};

use super::{BenchArgs, Outcome, percentile, post_json};
use crate::cluster::{Spawned, leader};
use crate::scale::{max, rss_mib};

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Produces `total` messages through `url`, 8 requests at a time; `msg(i)` makes message i.
async fn produce_all(
    http: &reqwest::Client,
    url: &str,
    total: u64,
    batch: u64,
    msg: impl Fn(u64) -> Value,
) -> anyhow::Result<()> {
    let mut next = 0;
    let mut tasks = tokio::task::JoinSet::new();
    while next < total || !tasks.is_empty() {
        while next < total && tasks.len() < 8 {
            let end = (next + batch).min(total);
            let body = json!({ "messages": (next..end).map(&msg).collect::<Vec<_>>() });
            let (http, url) = (http.clone(), url.to_owned());
            tasks.spawn(async move { post_json(&http, &url, body.to_string()).await });
            next = end;
        }
        if let Some(r) = tasks.join_next().await {
            r??;
        }
    }
    Ok(())
}

/// Reads a queue (`url`) from offset 0 until `stop`, recording `(body, lateness ms)`.
async fn read_queue(
    http: reqwest::Client,
    url: String,
    stop: Instant,
) -> anyhow::Result<Vec<(String, i64)>> {
    let mut offset = 0u64;
    let mut seen = Vec::new();
    while Instant::now() < stop {
        let v: Value = http
            .get(format!(
                "{url}/messages?offset={offset}&max=1000&wait_ms=1000"
            ))
            .send()
            .await?
            .json()
            .await?;
        let now = wall_ms() as i64;
        for m in v["messages"].as_array().into_iter().flatten() {
            let at = m["deliver_at_ms"].as_u64().unwrap_or(0) as i64;
            seen.push((m["body"].as_str().unwrap_or_default().to_owned(), now - at));
        }
        offset = v["next_offset"].as_u64().unwrap_or(offset);
    }
    Ok(seen)
}

/// `--mode delay` (see the module docs).
pub(crate) async fn delay(
    http: &reqwest::Client,
    s: &Spawned,
    args: &BenchArgs,
) -> anyhow::Result<Outcome> {
    let urls = s.urls();
    let (_, leader_url) = leader(http, &urls, Duration::from_secs(30)).await?;
    let produce_url = format!("{leader_url}/v1/topics/{}/messages", args.topic);

    // What pending messages cost: a topic of far-future ones.
    let far_topic = format!("{leader_url}/v1/topics/{}-far", args.topic);
    let put = http
        .put(&far_topic)
        .json(&json!({"queues": args.queues}))
        .send()
        .await?;
    if !put.status().is_success() {
        bail!("creating {far_topic}: {}", put.text().await?);
    }
    let far_url = format!("{far_topic}/messages");
    let rss_before = max(&rss_mib(s));
    let t0 = Instant::now();
    let far = wall_ms() + 24 * 3600 * 1000;
    produce_all(
        http,
        &far_url,
        args.pending,
        1000,
        |i| json!({"body": format!("p{i}"), "deliver_at_ms": far + i % 1000}),
    )
    .await?;
    let park_s = t0.elapsed().as_secs_f64();
    let rss_after = max(&rss_mib(s));
    eprintln!(
        "parked {} pending messages in {park_s:.1} s; RSS {rss_before:.0} -> {rss_after:.0} MiB",
        args.pending
    );

    // Due-time lateness: --count messages due evenly over --duration seconds.
    let count = args.count.unwrap_or(20_000);
    let spread_ms = args.duration * 1000;
    let start_at = wall_ms() + 2_000;
    let stop = Instant::now() + Duration::from_millis(2_000 + spread_ms + 5_000);
    let mut readers = Vec::new();
    for q in 0..args.queues {
        let url = format!("{leader_url}/v1/topics/{}/queues/{q}", args.topic);
        readers.push(tokio::spawn(read_queue(http.clone(), url, stop)));
    }
    produce_all(
        http,
        &produce_url,
        count,
        args.batch as u64,
        |i| json!({"body": format!("m{i}"), "deliver_at_ms": start_at + i * spread_ms / count}),
    )
    .await?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut lateness = Vec::new();
    for r in readers {
        for (body, late) in r.await?? {
            *seen.entry(body).or_default() += 1;
            lateness.push(late as f64);
        }
    }
    lateness.sort_by(|a, b| a.total_cmp(b));
    let early = lateness.iter().filter(|&&l| l < 0.0).count();
    let twice = seen.values().filter(|&&n| n > 1).count();
    let missing = count
        - (0..count)
            .filter(|i| seen.contains_key(&format!("m{i}")))
            .count() as u64;
    let out = json!({
        "mode": "delay",
        "pending": args.pending,
        "park_s": park_s,
        "rss_mib_before_pending": rss_before,
        "rss_mib_after_pending": rss_after,
        "due_messages": count,
        "due_spread_s": args.duration,
        "queues": args.queues,
        "lateness_ms": {
            "p50": percentile(&lateness, 0.50),
            "p99": percentile(&lateness, 0.99),
            "max": lateness.last().copied().unwrap_or(0.0),
            "min": lateness.first().copied().unwrap_or(0.0),
        },
        "early": early,
        "duplicates": twice,
        "missing": missing,
    });
    if early > 0 || twice > 0 || missing > 0 {
        eprintln!("delay: {early} early, {twice} twice, {missing} missing");
    }
    Ok((out, Vec::new()))
}
