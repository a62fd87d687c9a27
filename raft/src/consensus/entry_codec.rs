//! The CommitLog payload of a Raft entry.
//!
//! ```text
//! entry = format u8 (=1) | term u64 | leader node u64 | kind u8 | body
//! kind  = 0 blank (empty body) | 1 normal (body = Command encoding) | 2 membership (postcard)
//! ```
//! The log index is not repeated: the CommitLog record carries it (and the term, which is
//! checked against this one on decode). A produce command's batch decodes as a zero-copy
//! slice of the record buffer.
//!
//! Must never: change an existing layout; bump `format` instead.

use bytes::{BufMut, Bytes, BytesMut};
use openraft::EntryPayload;

use crate::consensus::types::{Entry, Membership, log_id};
use crate::error::CodecError;
use crate::state::Command;

const FORMAT: u8 = 1;
const HEADER: usize = 1 + 8 + 8 + 1;
const KIND_BLANK: u8 = 0;
const KIND_NORMAL: u8 = 1;
const KIND_MEMBERSHIP: u8 = 2;

/// Appends the payload encoding of `entry` to `out`.
pub(crate) fn encode_into(entry: &Entry, out: &mut BytesMut) {
    out.put_u8(FORMAT);
    out.put_u64_le(entry.log_id.leader_id.term);
    out.put_u64_le(entry.log_id.leader_id.node_id);
    match &entry.payload {
        EntryPayload::Blank => out.put_u8(KIND_BLANK),
        EntryPayload::Normal(cmd) => {
            out.put_u8(KIND_NORMAL);
            cmd.encode_into(out);
        }
        EntryPayload::Membership(m) => {
            out.put_u8(KIND_MEMBERSHIP);
            let bytes = postcard::to_allocvec(m).expect("membership always serializes");
            out.put_slice(&bytes);
        }
    }
}

/// The payload encoding of `entry`.
pub(crate) fn encode(entry: &Entry) -> Bytes {
    let mut out = BytesMut::new();
    encode_into(entry, &mut out);
    out.freeze()
}

fn header(payload: &[u8]) -> Result<(u64, u64, u8), CodecError> {
    if payload.len() < HEADER || payload[0] != FORMAT {
        return Err(CodecError::new("entry", "bad header or unknown format"));
    }
    let term = u64::from_le_bytes(payload[1..9].try_into().expect("8 bytes"));
    let node = u64::from_le_bytes(payload[9..17].try_into().expect("8 bytes"));
    Ok((term, node, payload[17]))
}

/// Decodes the entry at `index` from its payload.
pub(crate) fn decode(index: u64, payload: &Bytes) -> Result<Entry, CodecError> {
    let (term, node, kind) = header(payload)?;
    let body = payload.slice(HEADER..);
    let payload = match kind {
        KIND_BLANK => EntryPayload::Blank,
        KIND_NORMAL => EntryPayload::Normal(Command::decode(&body)?),
        KIND_MEMBERSHIP => {
            let m: Membership = postcard::from_bytes(&body)
                .map_err(|e| CodecError::new("membership entry", e.to_string()))?;
            EntryPayload::Membership(m)
        }
        other => return Err(CodecError::new("entry", format!("unknown kind {other}"))),
    };
    Ok(Entry {
        log_id: log_id(term, node, index),
        payload,
    })
}

/// The command carried by an entry payload, if it is a normal entry.
pub(crate) fn decode_command(payload: &Bytes) -> Result<Option<Command>, CodecError> {
    let (_, _, kind) = header(payload)?;
    if kind != KIND_NORMAL {
        return Ok(None);
    }
    Command::decode(&payload.slice(HEADER..)).map(Some)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::impls::BasicNode;

    use super::*;

    #[test]
    fn entries_round_trip() {
        let m = Membership::new(
            vec![[1, 2].into_iter().collect()],
            BTreeMap::from([
                (1, BasicNode::new("127.0.0.1:1")),
                (2, BasicNode::new("127.0.0.1:2")),
            ]),
        )
        .expect("valid membership");
        for payload in [
            EntryPayload::Blank,
            EntryPayload::Normal(Command::DeleteTopic { name: "t".into() }),
            EntryPayload::Membership(m),
        ] {
            let e = Entry {
                log_id: log_id(3, 2, 17),
                payload,
            };
            let enc = encode(&e);
            assert_eq!(decode(17, &enc).unwrap(), e);
        }
        assert!(decode(1, &Bytes::from_static(b"xx")).is_err());
    }
}
