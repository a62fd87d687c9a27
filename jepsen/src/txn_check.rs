//! The check-back target of the `txn` workload: a little HTTP server on 127.0.0.1 that
//! answers a transaction's check by its value (`{process}-{seq}`: seq mod 3 is commit,
//! rollback, unknown) and records every check it answered in the history (`check`), so
//! the checker knows which decisions a check could have caused.
//!
//! Must never: listen on anything but 127.0.0.1, or answer one value two different ways.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::history::{Kind, Process, Recorder};

/// Process numbers of recorded checks start here (one per check, so concurrent checks
/// pair their invoke and completion).
pub const CHECK_PROCESS_BASE: u64 = 1_000_000;

/// What the target answers about `value`.
pub fn answer(value: &str) -> &'static str {
    let seq = value
        .rsplit('-')
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(2);
    match seq % 3 {
        0 => "commit",
        1 => "rollback",
        _ => "unknown",
    }
}

/// Starts the target; returns its URL.
pub async fn start(rec: Arc<Recorder>) -> anyhow::Result<String> {
    let next = Arc::new(AtomicU64::new(CHECK_PROCESS_BASE));
    let app = axum::Router::new().route(
        "/check",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let (rec, next) = (rec.clone(), next.clone());
            async move {
                let value = v["messages"][0]["body"].as_str().unwrap_or("").to_owned();
                let status = answer(&value);
                let p = Process::Client(next.fetch_add(1, Ordering::Relaxed));
                let op = json!({"value": value, "transaction_id": v["transaction_id"]});
                rec.record(p.clone(), Kind::Invoke, "check", op.clone());
                let mut done = op;
                done["answer"] = json!(status);
                rec.record(p, Kind::Ok, "check", done);
                json!({ "status": status }).to_string()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/check", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("raftmq-jepsen: the check-back target stopped: {e}");
        }
    });
    Ok(url)
}
