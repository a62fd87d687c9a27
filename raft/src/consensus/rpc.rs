//! The binary peer protocol: how Raft RPCs are encoded between nodes, and their paths.
//!
//! Every RPC is an HTTP `POST /raft/<name>` with an `application/octet-stream` body:
//! - `append`: `header_len u32 | postcard(header) | (len u32 | index u64 | entry)*`, where
//!   each entry is in its CommitLog payload encoding ([`crate::consensus::entry_codec`]), so a produce
//!   batch crosses the wire exactly as it is stored, and decodes on the follower as a
//!   zero-copy slice of the request body;
//! - `vote`, `transfer-leader`: postcard of openraft's request and response types;
//! - `clock`: an empty request, answered with the node's wall clock (postcard u64 ms);
//! - `snapshot/begin`, `snapshot/chunk`, `snapshot/install`: a snapshot directory sent file
//!   by file in chunks; the receiver keeps what arrived, so a broken transfer resumes where
//!   it stopped instead of starting over.
//!
//! Responses are postcard on 200; a non-200 carries a text reason.
//!
//! Must never: ship JSON between peers, or allocate for a length read from a frame before
//! checking it against the bytes present.

use bytes::{BufMut, Bytes, BytesMut};
use openraft::raft::AppendEntriesRequest;
use serde::{Deserialize, Serialize};

use crate::consensus::entry_codec;
use crate::consensus::types::{Entry, LogId, NodeId, SnapshotMeta, TypeConfig, Vote};
use crate::error::CodecError;

/// The peer RPCs, and the one place their HTTP paths are declared: the client
/// ([`crate::consensus::network`]) posts to them, the API layer mounts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRpc {
    /// Append entries (and heartbeats).
    Append,
    /// Request a vote.
    Vote,
    /// Hand leadership over.
    TransferLeader,
    /// Start or resume a snapshot transfer.
    SnapshotBegin,
    /// One chunk of a snapshot file.
    SnapshotChunk,
    /// Install a completely transferred snapshot.
    SnapshotInstall,
    /// This node's wall clock (ms since the epoch), for group time.
    Clock,
    /// How far this node, if it leads, has replicated its log to a given node: asked by a
    /// node that starts with an empty log (see `broker/formation.rs`).
    Replicated,
}

impl PeerRpc {
    /// Every peer RPC.
    pub const ALL: [PeerRpc; 8] = [
        PeerRpc::Append,
        PeerRpc::Vote,
        PeerRpc::TransferLeader,
        PeerRpc::SnapshotBegin,
        PeerRpc::SnapshotChunk,
        PeerRpc::SnapshotInstall,
        PeerRpc::Clock,
        PeerRpc::Replicated,
    ];

    /// The HTTP path it is posted to.
    pub fn path(self) -> &'static str {
        match self {
            PeerRpc::Append => "/raft/append",
            PeerRpc::Vote => "/raft/vote",
            PeerRpc::TransferLeader => "/raft/transfer-leader",
            PeerRpc::SnapshotBegin => "/raft/snapshot/begin",
            PeerRpc::SnapshotChunk => "/raft/snapshot/chunk",
            PeerRpc::SnapshotInstall => "/raft/snapshot/install",
            PeerRpc::Clock => "/raft/clock",
            PeerRpc::Replicated => "/raft/replicated",
        }
    }

    /// What its response is called in decode errors.
    pub(crate) fn response_name(self) -> &'static str {
        match self {
            PeerRpc::Append => "append response",
            PeerRpc::Vote => "vote response",
            PeerRpc::TransferLeader => "transfer-leader response",
            PeerRpc::SnapshotBegin => "snapshot begin response",
            PeerRpc::SnapshotChunk => "snapshot chunk response",
            PeerRpc::SnapshotInstall => "snapshot response",
            PeerRpc::Clock => "clock response",
            PeerRpc::Replicated => "replicated response",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct AppendHeader {
    vote: Vote,
    prev_log_id: Option<LogId>,
    leader_commit: Option<LogId>,
    entries: u32,
}

fn codec(what: &'static str) -> impl Fn(postcard::Error) -> CodecError {
    move |e| CodecError::new(what, e.to_string())
}

fn take<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    n: usize,
    what: &'static str,
) -> Result<&'a [u8], CodecError> {
    let end = pos
        .checked_add(n)
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| CodecError::new(what, "cut short"))?;
    let s = &buf[*pos..end];
    *pos = end;
    Ok(s)
}

/// Encodes an append-entries request.
pub(crate) fn encode_append(req: &AppendEntriesRequest<TypeConfig>) -> Bytes {
    let header = postcard::to_allocvec(&AppendHeader {
        vote: req.vote,
        prev_log_id: req.prev_log_id,
        leader_commit: req.leader_commit,
        entries: req.entries.len() as u32,
    })
    .expect("header serializes");
    let mut out = BytesMut::with_capacity(4 + header.len() + req.entries.len() * 64);
    out.put_u32_le(header.len() as u32);
    out.put_slice(&header);
    let mut scratch = BytesMut::new();
    for e in &req.entries {
        entry_codec::encode_into(e, &mut scratch);
        out.put_u32_le(scratch.len() as u32);
        out.put_u64_le(e.log_id.index);
        out.put_slice(&scratch);
        scratch.clear();
    }
    out.freeze()
}

/// Decodes an append-entries request; entry payloads are slices of `body`.
pub(crate) fn decode_append(body: &Bytes) -> Result<AppendEntriesRequest<TypeConfig>, CodecError> {
    let mut pos = 0;
    let n = u32::from_le_bytes(take(body, &mut pos, 4, "append")?.try_into().expect("4")) as usize;
    let header: AppendHeader = postcard::from_bytes(take(body, &mut pos, n, "append header")?)
        .map_err(codec("append header"))?;
    // Each entry takes at least 12 bytes (length, index): never reserve for more entries
    // than the body can hold, whatever the header claims.
    let room = (body.len() - pos) / 12;
    let mut entries: Vec<Entry> = Vec::with_capacity((header.entries as usize).min(room));
    for _ in 0..header.entries {
        let len =
            u32::from_le_bytes(take(body, &mut pos, 4, "append")?.try_into().expect("4")) as usize;
        let index = u64::from_le_bytes(take(body, &mut pos, 8, "append")?.try_into().expect("8"));
        take(body, &mut pos, len, "append entry")?;
        entries.push(entry_codec::decode(index, &body.slice(pos - len..pos))?);
    }
    if pos != body.len() {
        return Err(CodecError::new("append", "trailing bytes"));
    }
    Ok(AppendEntriesRequest {
        vote: header.vote,
        prev_log_id: header.prev_log_id,
        leader_commit: header.leader_commit,
        entries,
    })
}

/// A peer's answer to a starting node asking whether it has held the log
/// ([`PeerRpc::Replicated`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLogAnswer {
    /// How far the asking node has held the log, if this peer knows it has.
    pub held: Option<u64>,
    /// This peer leads and replicates to the asking node now: it saw it hold the log, and
    /// it is a member now (no record of the past).
    pub replicating: bool,
    /// The index this peer's state was at when it answered from the group's record: of
    /// two records, the later one is the group's (a removal forgets the record).
    pub applied: u64,
    /// This peer holds a log: a group exists, whatever else it knows.
    pub initialized: bool,
    /// This peer has no log and was started to join a group (one exists somewhere).
    pub joining: bool,
    /// The voters of the latest membership in this peer's log, with their addresses.
    pub voters: Vec<(NodeId, String)>,
}

/// Encodes any serde value with postcard.
pub(crate) fn encode<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(postcard::to_allocvec(v).expect("RPC messages serialize"))
}

/// Decodes a postcard value.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    b: &[u8],
) -> Result<T, CodecError> {
    postcard::from_bytes(b).map_err(codec(what))
}

/// The files of a snapshot, relative to its directory, with their sizes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotManifest {
    /// Names the snapshot; a transfer resumes only into the same id.
    pub(crate) id: String,
    /// `(relative path, bytes)`.
    pub(crate) files: Vec<(String, u64)>,
}

/// One chunk of one snapshot file.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct ChunkHeader {
    /// Snapshot id.
    pub(crate) id: String,
    /// Index into the manifest's files.
    pub(crate) file: u32,
    /// Where the chunk starts in the file.
    pub(crate) offset: u64,
}

/// The final request: install what was sent.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct InstallRequest {
    /// Snapshot id.
    pub(crate) id: String,
    /// The leader's vote.
    pub(crate) vote: Vote,
    /// What the snapshot covers.
    pub(crate) meta: SnapshotMeta,
}

/// Splits a chunk request body into its header and data.
pub(crate) fn decode_chunk(body: &Bytes) -> Result<(ChunkHeader, Bytes), CodecError> {
    let mut pos = 0;
    let n = u32::from_le_bytes(take(body, &mut pos, 4, "chunk")?.try_into().expect("4")) as usize;
    let h: ChunkHeader = decode("chunk header", take(body, &mut pos, n, "chunk header")?)?;
    Ok((h, body.slice(pos..)))
}

/// Builds a chunk request body.
pub(crate) fn encode_chunk(h: &ChunkHeader, data: &[u8]) -> Bytes {
    let header = postcard::to_allocvec(h).expect("chunk header serializes");
    let mut out = BytesMut::with_capacity(4 + header.len() + data.len());
    out.put_u32_le(header.len() as u32);
    out.put_slice(&header);
    out.put_slice(data);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;

    use super::*;
    use crate::consensus::types::log_id;
    use crate::state::Command;

    #[test]
    fn append_requests_round_trip() {
        let req = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(2, 1, 9)),
            leader_commit: Some(log_id(2, 1, 8)),
            entries: vec![
                Entry {
                    log_id: log_id(3, 1, 10),
                    payload: EntryPayload::Blank,
                },
                Entry {
                    log_id: log_id(3, 1, 11),
                    payload: EntryPayload::Normal(Command::Produce {
                        create_topic: None,
                        batch: Bytes::from_static(b"batch"),
                    }),
                },
            ],
        };
        let enc = encode_append(&req);
        let dec = decode_append(&enc).unwrap();
        assert_eq!(dec.vote, req.vote);
        assert_eq!(dec.prev_log_id, req.prev_log_id);
        assert_eq!(dec.entries, req.entries);
        assert!(decode_append(&enc.slice(..enc.len() - 1)).is_err());
    }
}
