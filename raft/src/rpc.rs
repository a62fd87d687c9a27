//! The binary peer protocol: how Raft RPCs travel between nodes, both ends.
//!
//! Every RPC is an HTTP `POST /raft/<name>` with an `application/octet-stream` body:
//! - `append`: `header_len u32 | postcard(header) | (len u32 | index u64 | entry)*`, where
//!   each entry is in its CommitLog payload encoding ([`crate::entry_codec`]), so a produce
//!   batch crosses the wire exactly as it is stored, and decodes on the follower as a
//!   zero-copy slice of the request body;
//! - `vote`, `transfer-leader`: postcard of openraft's request and response types;
//! - `snapshot`: `header_len u32 | postcard(vote, meta, file list) | file bytes…`.
//!
//! Responses are postcard on 200; a non-200 carries a text reason.
//!
//! Must never: ship JSON between peers, or apply anything itself (it hands requests to
//! openraft).

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::Raft;
use crate::entry_codec;
use crate::error::CodecError;
use crate::state_machine::SnapshotData;
use crate::types::{Entry, LogId, TypeConfig, Vote};

type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;

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
pub fn encode_append(req: &AppendEntriesRequest<TypeConfig>) -> Bytes {
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
pub fn decode_append(body: &Bytes) -> Result<AppendEntriesRequest<TypeConfig>, CodecError> {
    let mut pos = 0;
    let n = u32::from_le_bytes(take(body, &mut pos, 4, "append")?.try_into().expect("4")) as usize;
    let header: AppendHeader = postcard::from_bytes(take(body, &mut pos, n, "append header")?)
        .map_err(codec("append header"))?;
    let mut entries: Vec<Entry> = Vec::with_capacity(header.entries as usize);
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

/// Encodes any serde value with postcard.
pub fn encode<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(postcard::to_allocvec(v).expect("RPC messages serialize"))
}

/// Decodes a postcard value.
pub fn decode<T: for<'de> Deserialize<'de>>(what: &'static str, b: &[u8]) -> Result<T, CodecError> {
    postcard::from_bytes(b).map_err(codec(what))
}

#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    vote: Vote,
    meta: SnapshotMeta,
    files: Vec<(String, u64)>,
}

/// Packs a snapshot (its directory's files) for sending.
pub fn encode_snapshot(vote: &Vote, snapshot: &Snapshot) -> std::io::Result<Bytes> {
    let mut files = Vec::new();
    let mut data = Vec::new();
    let mut entries: Vec<_> =
        std::fs::read_dir(&snapshot.snapshot.dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if !entry.file_type()?.is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path())?;
        files.push((
            entry.file_name().to_string_lossy().into_owned(),
            bytes.len() as u64,
        ));
        data.push(bytes);
    }
    let header = postcard::to_allocvec(&SnapshotHeader {
        vote: *vote,
        meta: snapshot.meta.clone(),
        files,
    })
    .map_err(std::io::Error::other)?;
    let mut out = BytesMut::new();
    out.put_u32_le(header.len() as u32);
    out.put_slice(&header);
    for d in data {
        out.put_slice(&d);
    }
    Ok(out.freeze())
}

/// Unpacks a received snapshot into `dir` (which must not exist).
pub fn decode_snapshot(body: &[u8], dir: &Path) -> Result<(Vote, Snapshot), CodecError> {
    let mut pos = 0;
    let n =
        u32::from_le_bytes(take(body, &mut pos, 4, "snapshot")?.try_into().expect("4")) as usize;
    let header: SnapshotHeader = postcard::from_bytes(take(body, &mut pos, n, "snapshot header")?)
        .map_err(codec("snapshot header"))?;
    std::fs::create_dir_all(dir).map_err(|e| CodecError::new("snapshot", e.to_string()))?;
    for (name, len) in &header.files {
        if name.contains('/') || name.starts_with('.') {
            return Err(CodecError::new("snapshot", format!("bad file name {name}")));
        }
        let bytes = take(body, &mut pos, *len as usize, "snapshot file")?;
        std::fs::write(dir.join(name), bytes)
            .map_err(|e| CodecError::new("snapshot", e.to_string()))?;
    }
    Ok((
        header.vote,
        Snapshot {
            meta: header.meta,
            snapshot: SnapshotData {
                dir: dir.to_path_buf(),
            },
        },
    ))
}

/// Why a peer RPC could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The request did not decode.
    #[error(transparent)]
    BadRequest(#[from] CodecError),
    /// Raft is shutting down or failed.
    #[error("raft: {0}")]
    Raft(String),
}

/// Serves `POST /raft/append`.
pub async fn serve_append(raft: &Raft, body: Bytes) -> Result<Bytes, ServeError> {
    let req = decode_append(&body)?;
    let resp: AppendEntriesResponse<TypeConfig> = raft
        .append_entries(req)
        .await
        .map_err(|e| ServeError::Raft(e.to_string()))?;
    Ok(encode(&resp))
}

/// Serves `POST /raft/vote`.
pub async fn serve_vote(raft: &Raft, body: Bytes) -> Result<Bytes, ServeError> {
    let req: VoteRequest<TypeConfig> = decode("vote", &body)?;
    let resp: VoteResponse<TypeConfig> = raft
        .vote(req)
        .await
        .map_err(|e| ServeError::Raft(e.to_string()))?;
    Ok(encode(&resp))
}

/// Serves `POST /raft/transfer-leader`.
pub async fn serve_transfer_leader(raft: &Raft, body: Bytes) -> Result<Bytes, ServeError> {
    let req: TransferLeaderRequest<TypeConfig> = decode("transfer-leader", &body)?;
    let resp: TransferLeaderResponse<TypeConfig> = raft
        .handle_transfer_leader(req)
        .await
        .map_err(|e| ServeError::Raft(e.to_string()))?;
    Ok(encode(&resp))
}

/// Serves `POST /raft/snapshot`: unpacks under `incoming` and installs.
pub async fn serve_snapshot(
    raft: &Raft,
    body: Bytes,
    incoming: &Path,
) -> Result<Bytes, ServeError> {
    let dir = incoming.join(format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let (vote, snapshot) = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || decode_snapshot(&body, &dir))
            .await
            .map_err(|e| ServeError::Raft(e.to_string()))??
    };
    let resp: SnapshotResponse<TypeConfig> = raft
        .install_full_snapshot(vote, snapshot)
        .await
        .map_err(|e| ServeError::Raft(e.to_string()))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(encode(&resp))
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;

    use super::*;
    use crate::command::Command;
    use crate::types::log_id;

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
