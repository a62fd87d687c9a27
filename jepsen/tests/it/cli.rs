//! `raftmq-jepsen check` on recorded histories: exit 0 valid, 1 with anomalies (named).

use std::process::Command;

use crate::builder::H;

fn run_check(h: &H) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    let lines: Vec<String> = h
        .events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_raftmq-jepsen"))
        .args(["check", "--history"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_exits_1_and_names_lost_duplicate_and_inconsistent() {
    let mut h = H::default();
    h.send_ok(0, "k", "v0", 0, 0)
        .send_ok(0, "k", "v1", 0, 1)
        .poll(9, 0, 0, &[(0, "v0")], true);
    let (code, out) = run_check(&h);
    assert_eq!(code, 1);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["valid"], false);
    assert_eq!(r["anomalies"]["lost"]["count"], 1);

    let mut h = H::default();
    h.send_ok(0, "k", "v0", 0, 0)
        .poll(9, 0, 0, &[(0, "v0"), (1, "v0")], true);
    let (code, out) = run_check(&h);
    assert_eq!(code, 1);
    assert!(out.contains("\"duplicate\""));

    let mut h = H::default();
    h.send_ok(0, "k", "v0", 0, 0)
        .poll(1, 0, 0, &[(0, "zz")], false)
        .poll(9, 0, 0, &[(0, "v0")], true);
    let (code, out) = run_check(&h);
    assert_eq!(code, 1);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["anomalies"]["inconsistent-offset"]["count"], 1);
}

#[test]
fn check_exits_0_on_a_clean_history_and_2_on_a_bad_file() {
    let mut h = H::default();
    h.send_ok(0, "k", "v0", 0, 0)
        .poll(9, 0, 0, &[(0, "v0")], true);
    assert_eq!(run_check(&h).0, 0);
    let out = Command::new(env!("CARGO_BIN_EXE_raftmq-jepsen"))
        .args(["check", "--history", "/nonexistent/history.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
