//! Entry points for fuzzing every decoder of bytes that come from outside the node: log
//! entries (from disk and from peers), commands, append requests, snapshot manifests and
//! chunks, SQL92 filter expressions. Used by the cargo-fuzz targets in `fuzz/` and by the property tests; each takes
//! arbitrary bytes and must return (an error is fine) without panicking or allocating by an
//! unchecked length.
//!
//! Must never: be called by the node itself.

use bytes::Bytes;

use crate::consensus::{entry_codec, rpc};
use crate::state::Command;

/// A CommitLog payload as an entry, and as the command it may carry.
pub fn entry(data: &[u8]) {
    let payload = Bytes::copy_from_slice(data);
    let _ = entry_codec::decode(7, &payload);
    let _ = entry_codec::decode_command(&payload);
}

/// A command's encoding.
pub fn command(data: &[u8]) {
    let _ = Command::decode(&Bytes::copy_from_slice(data));
}

/// An append-entries request body.
pub fn append(data: &[u8]) {
    let _ = rpc::decode_append(&Bytes::copy_from_slice(data));
}

/// The bodies of the snapshot transfer: manifest, chunk, install request.
pub fn snapshot(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    let _ = rpc::decode::<rpc::SnapshotManifest>("snapshot manifest", data);
    let _ = rpc::decode_chunk(&body);
    let _ = rpc::decode::<rpc::InstallRequest>("snapshot install", data);
    let _ = rpc::decode::<Vec<u64>>("snapshot begin response", data);
}

/// A SQL92 filter expression (as text), parsed and, if it parses, evaluated on a message.
pub fn sql(data: &[u8]) {
    struct Msg;
    impl crate::state::sql::Fields for Msg {
        fn field(&self, name: &str) -> Option<&str> {
            match name {
                "a" => Some("2"),
                "TAG" => Some("paid"),
                "s" => Some("eu"),
                _ => None,
            }
        }
    }
    if let Ok(src) = std::str::from_utf8(data)
        && let Ok(f) = crate::state::sql::SqlFilter::parse(src)
    {
        let _ = f.matches(&Msg);
    }
}

/// Valid encodings of every input, the seeds the fuzzers mutate.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use openraft::EntryPayload;
    use openraft::raft::AppendEntriesRequest;

    use crate::consensus::types::{Entry, TypeConfig, Vote, log_id};
    use crate::state::TopicSpec;

    let produce = Command::Produce {
        create_topic: Some(TopicSpec {
            queues: 4,
            fifo: false,
            retention_ms: 1000,
            dedup_window_ms: raftmq_storage::DEFAULT_DEDUP_WINDOW_MS,
            part: None,
        }),
        batch: Bytes::from_static(b"\x01batch"),
    };
    let entries = vec![
        Entry {
            log_id: log_id(2, 1, 9),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(2, 1, 10),
            payload: EntryPayload::Normal(produce.clone()),
        },
    ];
    let mut out = vec![
        ("command", produce.encode().to_vec()),
        (
            "command",
            Command::DeleteTopic { name: "t".into() }.encode().to_vec(),
        ),
        ("entry", entry_codec::encode(&entries[1]).to_vec()),
        ("entry", entry_codec::encode(&entries[0]).to_vec()),
    ];
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(2, 1),
        prev_log_id: Some(log_id(1, 1, 8)),
        leader_commit: Some(log_id(1, 1, 8)),
        entries,
    };
    out.push(("append", rpc::encode_append(&append).to_vec()));
    let manifest = rpc::SnapshotManifest {
        id: "5-1-1-0".into(),
        files: vec![("state/CURRENT".into(), 16), ("log/x.log".into(), 4)],
    };
    out.push(("snapshot", rpc::encode(&manifest).to_vec()));
    let chunk = rpc::ChunkHeader {
        id: "5-1-1-0".into(),
        file: 1,
        offset: 0,
    };
    out.push(("snapshot", rpc::encode_chunk(&chunk, b"data").to_vec()));
    for sql in [
        "a BETWEEN 0 AND 3 AND TAG = 'paid'",
        "NOT (s IN ('eu', 'us') OR x IS NOT NULL) AND a <> 1.5e2",
        "(a > -1) OR (s = 'it''s')",
    ] {
        out.push(("sql", sql.as_bytes().to_vec()));
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn run(target: &str, data: &[u8]) {
        match target {
            "command" => command(data),
            "entry" => entry(data),
            "append" => append(data),
            "sql" => sql(data),
            _ => snapshot(data),
        }
    }

    /// A valid input with a few bytes changed, cut or added.
    fn mutated() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
        let seeds = seeds();
        (
            0..seeds.len(),
            proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 0..8),
        )
            .prop_map(move |(i, flips, cut, tail)| {
                let (target, mut data) = seeds[i].clone();
                for (at, byte) in flips {
                    if !data.is_empty() {
                        let n = data.len();
                        data[at % n] = byte;
                    }
                }
                data.truncate(cut % (data.len() + 1));
                data.extend(tail);
                (target, data)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            for target in ["command", "entry", "append", "snapshot", "sql"] {
                run(target, &data);
            }
        }

        #[test]
        fn arbitrary_text_never_panics_the_sql_parser(src in "[ -~]{0,200}") {
            sql(src.as_bytes());
        }

        #[test]
        fn mutated_valid_inputs_never_panic((target, data) in mutated()) {
            run(target, &data);
        }
    }

    /// Writes the seed corpus of the cargo-fuzz targets (`fuzz/seeds/<target>`); run by
    /// hand with `RAFTMQ_FUZZ_CORPUS=fuzz/seeds cargo test -p raftmq-raft --lib -- --ignored`.
    #[test]
    #[ignore]
    fn write_fuzz_corpus() {
        let root = std::path::PathBuf::from(std::env::var("RAFTMQ_FUZZ_CORPUS").unwrap());
        for (i, (target, data)) in seeds().into_iter().enumerate() {
            std::fs::create_dir_all(root.join(target)).unwrap();
            std::fs::write(root.join(target).join(format!("seed-{i}")), data).unwrap();
        }
    }

    #[test]
    fn the_seeds_decode() {
        for (target, data) in seeds() {
            match target {
                "command" => assert!(Command::decode(&Bytes::from(data)).is_ok()),
                "entry" => assert!(entry_codec::decode(9, &Bytes::from(data)).is_ok()),
                "append" => assert!(rpc::decode_append(&Bytes::from(data)).is_ok()),
                "sql" => assert!(
                    crate::state::sql::SqlFilter::parse(std::str::from_utf8(&data).unwrap())
                        .is_ok()
                ),
                _ => {}
            }
        }
    }
}
