//! The binary peer protocol: how Raft RPCs travel between nodes, both ends.
//!
//! Every RPC is an HTTP `POST /raft/<name>` with an `application/octet-stream` body:
//! - `append`: `header_len u32 | postcard(header) | (len u32 | index u64 | entry)*`, where
//!   each entry is in its CommitLog payload encoding ([`crate::entry_codec`]), so a produce
//!   batch crosses the wire exactly as it is stored, and decodes on the follower as a
//!   zero-copy slice of the request body;
//! - `vote`, `transfer-leader`: postcard of openraft's request and response types;
//! - `snapshot/begin`, `snapshot/chunk`, `snapshot/install`: a snapshot directory sent file
//!   by file in chunks; the receiver keeps what arrived, so a broken transfer resumes where
//!   it stopped instead of starting over.
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

/// The files of a snapshot, relative to its directory, with their sizes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotManifest {
    /// Names the snapshot; a transfer resumes only into the same id.
    pub id: String,
    /// `(relative path, bytes)`.
    pub files: Vec<(String, u64)>,
}

/// One chunk of one snapshot file.
#[derive(Serialize, Deserialize, Debug)]
pub struct ChunkHeader {
    /// Snapshot id.
    pub id: String,
    /// Index into the manifest's files.
    pub file: u32,
    /// Where the chunk starts in the file.
    pub offset: u64,
}

/// The final request: install what was sent.
#[derive(Serialize, Deserialize, Debug)]
pub struct InstallRequest {
    /// Snapshot id.
    pub id: String,
    /// The leader's vote.
    pub vote: Vote,
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
}

/// Lists a snapshot directory's files (recursively), sorted.
pub fn manifest_of(id: &str, dir: &Path) -> std::io::Result<SnapshotManifest> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                walk(root, &path, out)?;
            } else {
                let rel = path
                    .strip_prefix(root)
                    .map_err(std::io::Error::other)?
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, entry.metadata()?.len()));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    Ok(SnapshotManifest {
        id: id.to_owned(),
        files,
    })
}

fn safe_rel_path(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The receiving side of snapshot transfers: files land in `incoming/<id>/`, so an
/// interrupted transfer resumes where it stopped.
#[derive(Debug, Clone)]
pub struct SnapshotInbox {
    incoming: std::path::PathBuf,
}

const MANIFEST: &str = ".manifest";

impl SnapshotInbox {
    /// An inbox under `incoming`.
    pub fn new(incoming: &Path) -> Self {
        SnapshotInbox {
            incoming: incoming.to_path_buf(),
        }
    }

    fn dir(&self, id: &str) -> Result<std::path::PathBuf, CodecError> {
        if !safe_id(id) {
            return Err(CodecError::new("snapshot", format!("bad snapshot id {id}")));
        }
        Ok(self.incoming.join(id))
    }

    fn manifest(&self, id: &str) -> Result<SnapshotManifest, CodecError> {
        let bytes = std::fs::read(self.dir(id)?.join(MANIFEST)).map_err(|e| {
            CodecError::new("snapshot", format!("no transfer {id} in progress: {e}"))
        })?;
        decode("snapshot manifest", &bytes)
    }

    /// Starts (or resumes) a transfer; returns how many bytes of each file are here.
    pub fn begin(&self, m: &SnapshotManifest) -> Result<Vec<u64>, CodecError> {
        let io = |e: std::io::Error| CodecError::new("snapshot", e.to_string());
        if let Some(bad) = m.files.iter().find(|(p, _)| !safe_rel_path(p)) {
            return Err(CodecError::new(
                "snapshot",
                format!("bad file name {}", bad.0),
            ));
        }
        let dir = self.dir(&m.id)?;
        if self.manifest(&m.id).ok().as_ref() != Some(m) {
            // A different snapshot: nothing here is reusable.
            if self.incoming.exists() {
                std::fs::remove_dir_all(&self.incoming).map_err(io)?;
            }
            std::fs::create_dir_all(&dir).map_err(io)?;
            std::fs::write(dir.join(MANIFEST), encode(m)).map_err(io)?;
        }
        Ok(m.files
            .iter()
            .map(|(p, _)| std::fs::metadata(dir.join(p)).map_or(0, |md| md.len()))
            .collect())
    }

    /// Appends a chunk if it starts where the file ends; returns the file's length.
    pub fn chunk(&self, h: &ChunkHeader, data: &[u8]) -> Result<u64, CodecError> {
        use std::io::Write;
        let io = |e: std::io::Error| CodecError::new("snapshot", e.to_string());
        let m = self.manifest(&h.id)?;
        let (rel, size) = m
            .files
            .get(h.file as usize)
            .ok_or_else(|| CodecError::new("snapshot", "file index out of range"))?;
        let path = self.dir(&h.id)?.join(rel);
        let have = std::fs::metadata(&path).map_or(0, |md| md.len());
        if h.offset != have || have + data.len() as u64 > *size {
            return Ok(have);
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        f.write_all(data).map_err(io)?;
        if have + data.len() as u64 == *size {
            f.sync_data().map_err(io)?;
        }
        Ok(have + data.len() as u64)
    }

    /// The complete snapshot of transfer `id`, ready to install.
    pub fn complete(&self, id: &str, meta: SnapshotMeta) -> Result<Snapshot, CodecError> {
        let m = self.manifest(id)?;
        let dir = self.dir(id)?;
        for (rel, size) in &m.files {
            let have = std::fs::metadata(dir.join(rel)).map_or(0, |md| md.len());
            if have != *size {
                return Err(CodecError::new(
                    "snapshot",
                    format!("{rel} has {have} of {size} bytes"),
                ));
            }
        }
        Ok(Snapshot {
            meta,
            snapshot: SnapshotData { dir },
        })
    }
}

/// Splits a chunk request body into its header and data.
pub fn decode_chunk(body: &Bytes) -> Result<(ChunkHeader, Bytes), CodecError> {
    let mut pos = 0;
    let n = u32::from_le_bytes(take(body, &mut pos, 4, "chunk")?.try_into().expect("4")) as usize;
    let h: ChunkHeader = decode("chunk header", take(body, &mut pos, n, "chunk header")?)?;
    Ok((h, body.slice(pos..)))
}

/// Builds a chunk request body.
pub fn encode_chunk(h: &ChunkHeader, data: &[u8]) -> Bytes {
    let header = postcard::to_allocvec(h).expect("chunk header serializes");
    let mut out = BytesMut::with_capacity(4 + header.len() + data.len());
    out.put_u32_le(header.len() as u32);
    out.put_slice(&header);
    out.put_slice(data);
    out.freeze()
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

/// Serves `POST /raft/snapshot/begin`.
pub async fn serve_snapshot_begin(inbox: &SnapshotInbox, body: Bytes) -> Result<Bytes, ServeError> {
    let m: SnapshotManifest = decode("snapshot manifest", &body)?;
    let inbox = inbox.clone();
    let have = tokio::task::spawn_blocking(move || inbox.begin(&m))
        .await
        .map_err(|e| ServeError::Raft(e.to_string()))??;
    Ok(encode(&have))
}

/// Serves `POST /raft/snapshot/chunk`.
pub async fn serve_snapshot_chunk(inbox: &SnapshotInbox, body: Bytes) -> Result<Bytes, ServeError> {
    let (h, data) = decode_chunk(&body)?;
    let inbox = inbox.clone();
    let len = tokio::task::spawn_blocking(move || inbox.chunk(&h, &data))
        .await
        .map_err(|e| ServeError::Raft(e.to_string()))??;
    Ok(encode(&len))
}

/// Serves `POST /raft/snapshot/install`.
pub async fn serve_snapshot_install(
    raft: &Raft,
    inbox: &SnapshotInbox,
    body: Bytes,
) -> Result<Bytes, ServeError> {
    let req: InstallRequest = decode("snapshot install", &body)?;
    let snapshot = inbox.complete(&req.id, req.meta)?;
    let dir = snapshot.snapshot.dir.clone();
    let resp: SnapshotResponse<TypeConfig> = raft
        .install_full_snapshot(req.vote, snapshot)
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
    fn snapshot_transfers_resume_where_they_stopped() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = SnapshotInbox::new(&tmp.path().join("in"));
        let m = SnapshotManifest {
            id: "5-1-1".into(),
            files: vec![
                ("state/CURRENT".into(), 6),
                ("log/00000000000000000001.log".into(), 4),
            ],
        };
        assert_eq!(inbox.begin(&m).unwrap(), [0, 0]);
        let chunk = |file, offset| ChunkHeader {
            id: m.id.clone(),
            file,
            offset,
        };
        assert_eq!(inbox.chunk(&chunk(0, 0), b"abc").unwrap(), 3);
        // A broken connection; the sender starts over and learns what arrived.
        assert_eq!(inbox.begin(&m).unwrap(), [3, 0]);
        assert_eq!(
            inbox.chunk(&chunk(0, 1), b"zz").unwrap(),
            3,
            "out-of-place chunks are not written"
        );
        assert_eq!(inbox.chunk(&chunk(0, 3), b"def").unwrap(), 6);
        assert!(
            inbox.complete(&m.id, Default::default()).is_err(),
            "a file is missing"
        );
        assert_eq!(inbox.chunk(&chunk(1, 0), b"logs").unwrap(), 4);
        let snap = inbox.complete(&m.id, Default::default()).unwrap();
        assert_eq!(
            std::fs::read(snap.snapshot.dir.join("state/CURRENT")).unwrap(),
            b"abcdef"
        );
        // A different snapshot starts afresh.
        let other = SnapshotManifest {
            id: "9-1-1".into(),
            files: vec![("a".into(), 1)],
        };
        assert_eq!(inbox.begin(&other).unwrap(), [0]);
        assert!(inbox.complete(&m.id, Default::default()).is_err());
        // Names that would escape the inbox are refused.
        let evil = SnapshotManifest {
            id: "x".into(),
            files: vec![("../x".into(), 1)],
        };
        assert!(inbox.begin(&evil).is_err());
        assert!(
            inbox
                .begin(&SnapshotManifest {
                    id: "../x".into(),
                    files: vec![]
                })
                .is_err()
        );
    }

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
