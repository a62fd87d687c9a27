//! Command encodings round-trip, and entries written by older versions still decode.

use super::*;
use crate::state::command::GroupSettingsCmd;

#[test]
fn topic_settings_in_old_entries_decode_with_the_default_dedup_window() {
    let old = TopicSpecV1 {
        queues: 8,
        fifo: true,
        retention_ms: 1000,
    };
    let want = TopicSpec {
        queues: 8,
        fifo: true,
        retention_ms: 1000,
        dedup_window_ms: raftmq_storage::DEFAULT_DEDUP_WINDOW_MS,
        part: None,
    };
    let mut put = BytesMut::new();
    postcard_into(
        &mut put,
        TAG_PUT_TOPIC,
        &PutTopicBodyV1 {
            name: "t",
            spec: old,
        },
    );
    assert_eq!(
        Command::decode(&put.freeze()).unwrap(),
        Command::PutTopic {
            name: "t".into(),
            spec: want
        }
    );
    let mut produce = vec![TAG_PRODUCE, 1];
    produce.extend_from_slice(&8u32.to_le_bytes());
    produce.push(1);
    produce.extend_from_slice(&1000u64.to_le_bytes());
    produce.extend_from_slice(b"batch");
    assert_eq!(
        Command::decode(&Bytes::from(produce)).unwrap(),
        Command::Produce {
            create_topic: Some(want),
            batch: Bytes::from_static(b"batch")
        }
    );
}

#[test]
fn every_command_round_trips() {
    let spec = TopicSpec {
        queues: 8,
        fifo: true,
        retention_ms: 1000,
        dedup_window_ms: 5000,
        part: None,
    };
    for cmd in [
        Command::Produce {
            create_topic: Some(spec),
            batch: Bytes::from_static(b"batch-bytes"),
        },
        Command::Produce {
            create_topic: None,
            batch: Bytes::new(),
        },
        Command::ProduceHalf {
            create_topic: Some(spec),
            check: crate::state::command::TxnCheck {
                check_url: "http://127.0.0.1:9/check".into(),
                check_after_ms: 6000,
                max_checks: 5,
            },
            batch: Bytes::from_static(b"half-batch"),
        },
        Command::PutTopic {
            name: "t".into(),
            spec,
        },
        Command::HeldLog {
            node: 3,
            index: 1234,
        },
        // A part of a spread topic goes under its own tag; a whole one keeps the old tag.
        Command::PutTopic {
            name: "t".into(),
            spec: TopicSpec {
                part: Some(raftmq_storage::SpreadPart {
                    first_queue: 4,
                    queue_space: 12,
                }),
                ..spec
            },
        },
        Command::DeleteTopic { name: "t".into() },
        Command::Retain { now_ms: 17 },
        Command::Deliver { now_ms: 18 },
        Command::EndTxn(crate::state::command::EndTxnCmd {
            txn: 9,
            decision: crate::state::command::TxnDecision::Unknown,
            now_ms: 19,
        }),
        Command::CommitOffsets {
            group: "g".into(),
            topic: "t".into(),
            offsets: vec![(0, 1), (3, 99)],
        },
        Command::PutGroup(GroupSettingsCmd {
            group: "g".into(),
            max_attempts: Some(3),
            retry_backoff_ms: Some(vec![100, 2000]),
        }),
        Command::PutGroup(GroupSettingsCmd {
            group: "g".into(),
            max_attempts: None,
            retry_backoff_ms: None,
        }),
    ] {
        let enc = cmd.encode();
        assert_eq!(Command::decode(&enc).unwrap(), cmd);
        let via_serde: Command =
            postcard::from_bytes(&postcard::to_allocvec(&cmd).unwrap()).unwrap();
        assert_eq!(via_serde, cmd);
    }
    assert!(Command::decode(&Bytes::from_static(&[9])).is_err());
    assert!(Command::decode(&Bytes::from_static(&[1, 1, 0])).is_err());
}
