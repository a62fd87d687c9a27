//! An entry point for fuzzing the JSON request bodies: arbitrary bytes parsed as every
//! request type of the API, and a produce request validated into messages. Used by the
//! cargo-fuzz target in `fuzz/` and by the property tests; it must return without
//! panicking whatever it is given (a parse error is the expected answer to most inputs).
//!
//! Must never: be called by the node itself.

use crate::dto::{
    AddMemberRequest, ProduceRequest, PutTopicRequest, TransferLeaderRequest, parse_json,
};
use crate::groups::{AckBody, CommitRequest, HeartbeatBody, ReceiveBody, ResetBody};

/// Parses `data` as every request body.
pub fn json_bodies(data: &[u8]) {
    if let Ok(req) = parse_json::<ProduceRequest>(data) {
        let _ = req.into_messages(1 << 20, None);
    }
    let _ = parse_json::<PutTopicRequest>(data);
    let _ = parse_json::<AddMemberRequest>(data);
    let _ = parse_json::<TransferLeaderRequest>(data);
    let _ = parse_json::<CommitRequest>(data);
    let _ = parse_json::<ReceiveBody>(data);
    let _ = parse_json::<AckBody>(data);
    let _ = parse_json::<HeartbeatBody>(data);
    let _ = parse_json::<ResetBody>(data);
}

/// Valid request bodies, the seeds the fuzzers mutate.
pub fn seeds() -> Vec<&'static str> {
    vec![
        r#"{"messages": [{"body": "hello", "key": "k", "tag": "t", "properties": {"a": "b"}}, {"body_base64": "AAEC", "queue": 3}]}"#,
        r#"{"queues": 8, "fifo": true, "retention_ms": 1000}"#,
        r#"{"id": 4, "addr": "127.0.0.1:8084", "voter": true}"#,
        r#"{"to": 2}"#,
        r#"{"topic": "t", "offsets": [{"queue": 0, "offset": 10}]}"#,
        r#"{"consumer": "c1", "max": 32, "wait_ms": 100, "invisible_ms": 30000, "tag": "a||b", "mode": "clustering"}"#,
        r#"{"receipts": ["0-1-1-2-c"], "delay_ms": 10}"#,
        r#"{"consumer": "c1", "topics": ["t"], "session_ms": 10000}"#,
        r#"{"topic": "t", "to": {"timestamp_ms": 1764000000000}}"#,
    ]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Writes the seed corpus of the cargo-fuzz target (`fuzz/seeds/json`); run by hand
    /// with `RAFTMQ_FUZZ_CORPUS=fuzz/seeds cargo test -p raftmq-http-api --lib -- --ignored`.
    #[test]
    #[ignore]
    fn write_fuzz_corpus() {
        let root = std::path::PathBuf::from(std::env::var("RAFTMQ_FUZZ_CORPUS").unwrap());
        std::fs::create_dir_all(root.join("json")).unwrap();
        for (i, body) in seeds().into_iter().enumerate() {
            std::fs::write(root.join("json").join(format!("seed-{i}")), body).unwrap();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            json_bodies(&data);
        }

        #[test]
        fn mutated_bodies_never_panic(
            i in 0..9usize,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in any::<usize>(),
        ) {
            let mut data = seeds()[i].as_bytes().to_vec();
            for (at, byte) in flips {
                let n = data.len();
                data[at % n] = byte;
            }
            data.truncate(cut % (data.len() + 1));
            json_bodies(&data);
        }
    }
}
