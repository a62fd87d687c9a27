//! `/metrics` after some traffic: Prometheus' own linter (`promtool check metrics`, from
//! Debian's prometheus package, which `scripts/setup` installs) finds nothing, the latency
//! histograms and per-queue group lag are there, and every metric the Grafana dashboard in
//! docs/ queries exists.

use std::io::Write;
use std::process::{Command, Stdio};

use axum::http::StatusCode;

use crate::support::Node;

async fn metrics_after_traffic() -> String {
    let n = Node::auto().await;
    let (s, _) = n
        .post(
            "/v1/topics/m/messages",
            r#"{"messages": [{"body": "a", "queue": 0}, {"body": "b", "queue": 0}]}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = n
        .post(
            "/v1/groups/g/topics/m/receive",
            r#"{"consumer": "c", "max": 1}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = n.get("/metrics").await;
    assert_eq!(s, StatusCode::OK);
    body.as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_carry_latencies_and_lag() {
    let text = metrics_after_traffic().await;
    for want in [
        "# TYPE raftmq_produce_duration_seconds histogram",
        "raftmq_produce_duration_seconds_count 1",
        "raftmq_log_fsync_duration_seconds_bucket{le=\"+Inf\"}",
        "raftmq_apply_duration_seconds_sum",
        "raftmq_raft_replication_lag_entries{node_id=\"1\"} 0",
        "raftmq_consumer_group_lag{group=\"g\",topic=\"m\",queue=\"0\"} 2",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/setup installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_grafana_dashboard_queries_exists() {
    let text = metrics_after_traffic().await;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 8, "{exprs:?}");
    for e in &exprs {
        let names = e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("raftmq_"));
        for name in names {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "the dashboard queries {name}, which /metrics lacks (in `{e}`)"
            );
        }
    }
}

#[test]
fn the_dev_prometheus_config_passes_promtool() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/prometheus-dev.yml");
    let out = Command::new("promtool")
        .args(["check", "config", path])
        .output()
        .expect("promtool (Debian's prometheus package; scripts/setup installs it)");
    assert!(
        out.status.success(),
        "promtool check config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
