//! The binary encoding of commands (see the parent module's table): a produce carries its
//! batch as stored; the others are a tag and a postcard body.
//!
//! Must never: change an encoding in place (entries live in the log for as long as
//! retention keeps them); add a tag instead, and keep decoding the old one.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::{Command, TopicSpec, TopicSpecV1, TxnCheck};
use crate::error::CodecError;

const TAG_PRODUCE: u8 = 1;
const TAG_PUT_TOPIC: u8 = 2;
const TAG_DELETE_TOPIC: u8 = 3;
const TAG_COMMIT_OFFSETS: u8 = 4;
const TAG_RETAIN: u8 = 5;
const TAG_LEASE: u8 = 6;
const TAG_ACK: u8 = 7;
const TAG_HEARTBEAT: u8 = 8;
const TAG_RESET: u8 = 9;
const TAG_PUT_USER: u8 = 10;
const TAG_DELETE_USER: u8 = 11;
const TAG_PUT_GROUP: u8 = 12;
/// `PutTopic` with the dedup window (`TAG_PUT_TOPIC` entries have none).
const TAG_PUT_TOPIC_V2: u8 = 13;
const TAG_DELIVER: u8 = 14;
const TAG_PRODUCE_HALF: u8 = 15;
const TAG_END_TXN: u8 = 16;
/// `PutTopic` of a part of a topic spread over broker groups (with its first queue).
const TAG_PUT_TOPIC_PART: u8 = 17;
const TAG_HELD_LOG: u8 = 18;

#[derive(Serialize, Deserialize)]
struct HalfHeader {
    create_topic: Option<TopicSpec>,
    check: TxnCheck,
}

#[derive(Serialize, Deserialize)]
struct PutTopicBody<'a> {
    name: &'a str,
    spec: TopicSpec,
}

#[derive(Serialize, Deserialize)]
struct PutTopicPartBody<'a> {
    name: &'a str,
    spec: TopicSpec,
    first_queue: u32,
    queue_space: u32,
}

#[derive(Serialize, Deserialize)]
struct PutTopicBodyV1<'a> {
    name: &'a str,
    spec: TopicSpecV1,
}

#[derive(Serialize, Deserialize)]
struct OffsetsBody<'a> {
    group: &'a str,
    topic: &'a str,
    offsets: Vec<(u32, u64)>,
}

fn postcard_into<T: Serialize>(out: &mut BytesMut, tag: u8, body: &T) {
    out.put_u8(tag);
    let bytes = postcard::to_allocvec(body).expect("commands always serialize");
    out.put_slice(&bytes);
}

impl Command {
    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        match self {
            Command::Produce {
                create_topic,
                batch,
            } => {
                out.reserve(16 + batch.len());
                out.put_u8(TAG_PRODUCE);
                match create_topic {
                    Some(s) => {
                        out.put_u8(2);
                        out.put_u32_le(s.queues);
                        out.put_u8(u8::from(s.fifo));
                        out.put_u64_le(s.retention_ms);
                        out.put_u64_le(s.dedup_window_ms);
                    }
                    None => out.put_u8(0),
                }
                out.put_slice(batch);
            }
            Command::ProduceHalf {
                create_topic,
                check,
                batch,
            } => {
                let header = postcard::to_allocvec(&HalfHeader {
                    create_topic: *create_topic,
                    check: check.clone(),
                })
                .expect("commands always serialize");
                out.reserve(5 + header.len() + batch.len());
                out.put_u8(TAG_PRODUCE_HALF);
                out.put_u32_le(header.len() as u32);
                out.put_slice(&header);
                out.put_slice(batch);
            }
            Command::EndTxn(c) => postcard_into(out, TAG_END_TXN, c),
            Command::HeldLog { node, index } => postcard_into(out, TAG_HELD_LOG, &(node, index)),
            // A whole topic keeps the older tag, which builds before parts apply too.
            Command::PutTopic { name, spec } => match spec.part {
                None => postcard_into(out, TAG_PUT_TOPIC_V2, &PutTopicBody { name, spec: *spec }),
                Some(p) => postcard_into(
                    out,
                    TAG_PUT_TOPIC_PART,
                    &PutTopicPartBody {
                        name,
                        spec: *spec,
                        first_queue: p.first_queue,
                        queue_space: p.queue_space,
                    },
                ),
            },
            Command::DeleteTopic { name } => postcard_into(out, TAG_DELETE_TOPIC, name),
            Command::Retain { now_ms } => postcard_into(out, TAG_RETAIN, now_ms),
            Command::Deliver { now_ms } => postcard_into(out, TAG_DELIVER, now_ms),
            Command::Lease(c) => postcard_into(out, TAG_LEASE, c),
            Command::Ack(c) => postcard_into(out, TAG_ACK, c),
            Command::Heartbeat(c) => postcard_into(out, TAG_HEARTBEAT, c),
            Command::ResetOffsets(c) => postcard_into(out, TAG_RESET, c),
            Command::PutGroup(c) => postcard_into(out, TAG_PUT_GROUP, c),
            Command::PutUser(u) => postcard_into(out, TAG_PUT_USER, u),
            Command::DeleteUser { name } => postcard_into(out, TAG_DELETE_USER, name),
            Command::CommitOffsets {
                group,
                topic,
                offsets,
            } => postcard_into(
                out,
                TAG_COMMIT_OFFSETS,
                &OffsetsBody {
                    group,
                    topic,
                    offsets: offsets.clone(),
                },
            ),
        }
    }

    /// The encoding as bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode_into(&mut out);
        out.freeze()
    }

    /// Decodes a command; a produce batch is a zero-copy slice of `buf`.
    pub(crate) fn decode(buf: &Bytes) -> Result<Command, CodecError> {
        let Some((&tag, rest)) = buf.split_first() else {
            return Err(CodecError::new("command", "empty"));
        };
        let de =
            |what: &'static str| move |e: postcard::Error| CodecError::new(what, e.to_string());
        match tag {
            TAG_PRODUCE => {
                let le64 = |at: usize| u64::from_le_bytes(rest[at..at + 8].try_into().expect("8"));
                let (create_topic, skip) = match rest.first() {
                    Some(0) => (None, 2),
                    // 1: queues, fifo, retention; 2: and the dedup window.
                    Some(&v @ (1 | 2)) if rest.len() >= if v == 1 { 14 } else { 22 } => {
                        let spec = TopicSpec {
                            queues: u32::from_le_bytes(rest[1..5].try_into().expect("4 bytes")),
                            fifo: rest[5] != 0,
                            retention_ms: le64(6),
                            dedup_window_ms: if v == 1 {
                                raftmq_storage::DEFAULT_DEDUP_WINDOW_MS
                            } else {
                                le64(14)
                            },
                            part: None,
                        };
                        (Some(spec), if v == 1 { 15 } else { 23 })
                    }
                    _ => return Err(CodecError::new("produce command", "bad header")),
                };
                Ok(Command::Produce {
                    create_topic,
                    batch: buf.slice(skip..),
                })
            }
            TAG_PUT_TOPIC => {
                let b: PutTopicBodyV1<'_> = postcard::from_bytes(rest).map_err(de("put-topic"))?;
                Ok(Command::PutTopic {
                    name: b.name.to_owned(),
                    spec: b.spec.into(),
                })
            }
            TAG_PUT_TOPIC_V2 => {
                let b: PutTopicBody<'_> = postcard::from_bytes(rest).map_err(de("put-topic"))?;
                Ok(Command::PutTopic {
                    name: b.name.to_owned(),
                    spec: b.spec,
                })
            }
            TAG_PUT_TOPIC_PART => {
                let b: PutTopicPartBody<'_> =
                    postcard::from_bytes(rest).map_err(de("put-topic"))?;
                Ok(Command::PutTopic {
                    name: b.name.to_owned(),
                    spec: TopicSpec {
                        part: Some(raftmq_storage::SpreadPart {
                            first_queue: b.first_queue,
                            queue_space: b.queue_space,
                        }),
                        ..b.spec
                    },
                })
            }
            TAG_DELETE_TOPIC => {
                let name: &str = postcard::from_bytes(rest).map_err(de("delete-topic"))?;
                Ok(Command::DeleteTopic {
                    name: name.to_owned(),
                })
            }
            TAG_LEASE => Ok(Command::Lease(
                postcard::from_bytes(rest).map_err(de("lease"))?,
            )),
            TAG_ACK => Ok(Command::Ack(postcard::from_bytes(rest).map_err(de("ack"))?)),
            TAG_HEARTBEAT => Ok(Command::Heartbeat(
                postcard::from_bytes(rest).map_err(de("heartbeat"))?,
            )),
            TAG_RESET => Ok(Command::ResetOffsets(
                postcard::from_bytes(rest).map_err(de("reset"))?,
            )),
            TAG_PUT_GROUP => Ok(Command::PutGroup(
                postcard::from_bytes(rest).map_err(de("put-group"))?,
            )),
            TAG_PUT_USER => Ok(Command::PutUser(
                postcard::from_bytes(rest).map_err(de("put-user"))?,
            )),
            TAG_DELETE_USER => {
                let name: &str = postcard::from_bytes(rest).map_err(de("delete-user"))?;
                Ok(Command::DeleteUser {
                    name: name.to_owned(),
                })
            }
            TAG_RETAIN => Ok(Command::Retain {
                now_ms: postcard::from_bytes(rest).map_err(de("retain"))?,
            }),
            TAG_PRODUCE_HALF => {
                let bad = || CodecError::new("produce-half command", "bad header");
                let len = rest
                    .get(..4)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                    .ok_or_else(bad)?;
                let header = rest.get(4..4 + len).ok_or_else(bad)?;
                let h: HalfHeader = postcard::from_bytes(header).map_err(de("produce-half"))?;
                Ok(Command::ProduceHalf {
                    create_topic: h.create_topic,
                    check: h.check,
                    batch: buf.slice(5 + len..),
                })
            }
            TAG_HELD_LOG => {
                let (node, index) = postcard::from_bytes(rest).map_err(de("held-log"))?;
                Ok(Command::HeldLog { node, index })
            }
            TAG_END_TXN => Ok(Command::EndTxn(
                postcard::from_bytes(rest).map_err(de("end-txn"))?,
            )),
            TAG_DELIVER => Ok(Command::Deliver {
                now_ms: postcard::from_bytes(rest).map_err(de("deliver"))?,
            }),
            TAG_COMMIT_OFFSETS => {
                let b: OffsetsBody<'_> =
                    postcard::from_bytes(rest).map_err(de("commit-offsets"))?;
                Ok(Command::CommitOffsets {
                    group: b.group.to_owned(),
                    topic: b.topic.to_owned(),
                    offsets: b.offsets,
                })
            }
            other => Err(CodecError::new("command", format!("unknown tag {other}"))),
        }
    }
}

// openraft (with its `serde` feature) wants application data to be serde types; the
// serde form is the binary encoding above, as one byte string.
impl Serialize for Command {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        Command::decode(&Bytes::from(bytes.into_vec())).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
