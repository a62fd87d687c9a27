//! The client commands, driving the real `raftmq` binary against a real node: topics,
//! produce from standard input and `--body`, consume as a group (with acks) and by offset,
//! messages, groups, cluster, errors (the server's message, exit 1), `--json`, completions.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::cluster::Cluster;

/// Runs `raftmq ARGS` against node 1 of `c`, with `stdin` on standard input.
fn raftmq(c: &Cluster, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftmq"))
        .args(args)
        .env("RAFTMQ_URL", c.url(1, ""))
        .env_remove("RAFTMQ_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run raftmq");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs it and expects success; its standard output.
fn ok(c: &Cluster, args: &[&str], stdin: &str) -> String {
    let out = raftmq(c, args, stdin);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "raftmq {args:?}: {stdout}{stderr}");
    stdout
}

fn json(c: &Cluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&ok(c, &all, "")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_commands_work_against_a_node() {
    let c = Cluster::start(1);
    c.wait_leader().await;

    let out = ok(&c, &["topic", "create", "orders", "--queues", "2"], "");
    assert!(out.contains("orders"), "{out}");
    let list = ok(&c, &["topic", "list"], "");
    assert!(list.contains("NAME") && list.contains("orders"), "{list}");
    assert_eq!(json(&c, &["topic", "describe", "orders"])["queues"], 2);

    // Three lines of standard input, then one --body, all to queue 0.
    let produced = ok(
        &c,
        &["produce", "orders", "--queue", "0", "--key", "k1", "--json"],
        "one\ntwo\nthree\n",
    );
    let produced: Value = serde_json::from_str(&produced).unwrap();
    let results = produced["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[2]["offset"], 2);
    let table = ok(
        &c,
        &[
            "produce",
            "orders",
            "--queue",
            "0",
            "--body",
            "four",
            "--property",
            "a=b",
        ],
        "",
    );
    assert!(
        table.contains("MSG_ID") && table.contains("OFFSET"),
        "{table}"
    );

    // By offset: every message; by group: every message once, acked.
    let read = ok(
        &c,
        &["consume", "orders", "--queue", "0", "--offset", "1"],
        "",
    );
    let lines: Vec<&str> = read.lines().collect();
    assert_eq!(lines.len(), 3, "{read}");
    assert!(
        lines[0].starts_with("0:1 ") && lines[0].ends_with(" two"),
        "{read}"
    );
    let got = ok(
        &c,
        &["consume", "orders", "--group", "billing", "--json"],
        "",
    );
    let bodies: Vec<String> = got
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["body"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(bodies, ["one", "two", "three", "four"]);
    let again = ok(&c, &["consume", "orders", "--group", "billing"], "");
    assert_eq!(again, "", "acked: nothing comes again");

    let id = results[0]["msg_id"].as_str().unwrap();
    let m = ok(&c, &["message", "get", id], "");
    assert!(m.contains("body: one") && m.contains("key: k1"), "{m}");

    let groups = ok(&c, &["group", "list"], "");
    assert!(groups.contains("billing"), "{groups}");
    let g = ok(&c, &["group", "describe", "billing"], "");
    assert!(g.contains("LAG") && g.contains("orders"), "{g}");
    ok(
        &c,
        &[
            "group", "reset", "billing", "--topic", "orders", "--to", "earliest",
        ],
        "",
    );
    let replay = ok(
        &c,
        &["consume", "orders", "--group", "billing", "--max", "2"],
        "",
    );
    // Without --follow a consume takes what is there, `--max` per receive, then stops.
    assert_eq!(replay.lines().count(), 4, "reset to earliest: {replay}");

    let status = json(&c, &["cluster", "status"]);
    assert_eq!(status["leader_id"], 1);
    assert!(ok(&c, &["cluster", "status"], "").contains("leader"));

    // Errors: the server's message and code on standard error, exit 1.
    let missing = raftmq(&c, &["topic", "describe", "nope"], "");
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("TOPIC_NOT_FOUND") && err.contains("nope"),
        "{err}"
    );
    let bad = raftmq(
        &c,
        &[
            "group", "reset", "billing", "--topic", "orders", "--to", "soon",
        ],
        "",
    );
    assert_eq!(bad.status.code(), Some(1));
    ok(&c, &["topic", "delete", "orders"], "");
    assert!(!ok(&c, &["topic", "list"], "").contains("orders"));

    // Nobody listening: a clear error, exit 1.
    let down = Command::new(env!("CARGO_BIN_EXE_raftmq"))
        .args(["topic", "list", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot reach"));

    // --follow streams what arrives (and acks it) until stopped.
    ok(&c, &["topic", "create", "live", "--queues", "1"], "");
    let mut follow = Command::new(env!("CARGO_BIN_EXE_raftmq"))
        .args(["consume", "live", "--group", "tail", "--follow", "--json"])
        .env("RAFTMQ_URL", c.url(1, ""))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let first_line = std::thread::spawn(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        line
    });
    ok(&c, &["produce", "live", "--body", "streamed"], "");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !first_line.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "--follow printed nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let line = first_line.join().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&line).unwrap()["body"],
        "streamed"
    );
    let _ = follow.kill();
    let _ = follow.wait();

    let completions = Command::new(env!("CARGO_BIN_EXE_raftmq"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(completions.status.success());
    assert!(String::from_utf8_lossy(&completions.stdout).contains("raftmq"));
}
