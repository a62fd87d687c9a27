//! The history: every operation as an `invoke` followed by one completion (`ok`, `fail`,
//! `info`), as JSON lines (`history.jsonl`, the format in `shared/DESIGN.md`).
//!
//! Must never: reorder events (index order is the order they happened), or drop one.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who did it: a client process number, or the nemesis.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Process {
    /// A client process.
    Client(u64),
    /// The fault injector (`"nemesis"`).
    Named(String),
}

/// The kind of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An operation starts.
    Invoke,
    /// It happened.
    Ok,
    /// It certainly did not happen.
    Fail,
    /// Unknown (timeout, lost connection, 504), or a nemesis event.
    Info,
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the history.
    pub index: u64,
    /// Nanoseconds since the test started.
    pub time_ns: u64,
    /// Who.
    pub process: Process,
    /// Invoke or completion.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// The operation: `send`, `poll`, `commit`, or a nemesis action.
    pub f: String,
    /// Its argument or result.
    pub value: Value,
}

/// Reads a `history.jsonl`.
pub fn read(path: &Path) -> anyhow::Result<Vec<Event>> {
    let file = std::fs::File::open(path)?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let e: Event = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        out.push(e);
    }
    Ok(out)
}

/// Appends events to a history file as they happen, numbering and timing them.
pub struct Recorder {
    start: Instant,
    inner: Mutex<(u64, std::io::BufWriter<std::fs::File>, Vec<Event>)>,
}

impl Recorder {
    /// Records into `path` (created or truncated).
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let f = std::fs::File::create(path)?;
        Ok(Recorder {
            start: Instant::now(),
            inner: Mutex::new((0, std::io::BufWriter::new(f), Vec::new())),
        })
    }

    /// Records one event and returns it.
    pub fn record(&self, process: Process, kind: Kind, f: &str, value: Value) -> Event {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let e = Event {
            index: g.0,
            time_ns: self.start.elapsed().as_nanos() as u64,
            process,
            kind,
            f: f.to_owned(),
            value,
        };
        g.0 += 1;
        let line = serde_json::to_string(&e).expect("events serialize");
        let _ = writeln!(g.1, "{line}");
        g.2.push(e.clone());
        e
    }

    /// Flushes the file and returns every event recorded.
    pub fn finish(&self) -> Vec<Event> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = g.1.flush();
        g.2.clone()
    }
}
