//! The receiving side of snapshot transfers: a snapshot directory arrives file by file in
//! chunks under `incoming/<id>/`, so an interrupted transfer resumes where it stopped
//! instead of starting over. One directory per snapshot id: starting a new transfer removes
//! the others' leftovers, but never one an install is reading (a completed snapshot holds
//! its directory until the install lets go of it, which then removes it).
//!
//! Must never: write outside its own directory (ids and file names are checked), accept a
//! chunk that does not continue its file, or remove a directory an install is reading.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::consensus::rpc::{ChunkHeader, SnapshotManifest, decode, encode};
use crate::consensus::types::{Snapshot, SnapshotData, SnapshotMeta};
use crate::error::CodecError;

/// Lists a snapshot directory's files (recursively), sorted.
pub(crate) fn manifest_of(id: &str, dir: &Path) -> std::io::Result<SnapshotManifest> {
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
pub(crate) struct SnapshotInbox {
    incoming: PathBuf,
    /// Ids of completed transfers, with how many handles hold each: a transfer completed
    /// twice (a duplicated or retried finishing request) is held by both until both go.
    in_use: Arc<Mutex<HashMap<String, usize>>>,
    /// Held while a chunk is checked against its file and appended: a retried request can
    /// arrive while the first delivery of the same chunk is still being written.
    writing: Arc<Mutex<()>>,
}

/// Holds a completed transfer's directory for an install; removes it when dropped.
#[derive(Debug)]
struct Claim {
    inbox: SnapshotInbox,
    id: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut in_use = self.inbox.in_use();
        let Some(held) = in_use.get_mut(&self.id) else {
            return;
        };
        *held -= 1;
        if *held == 0 {
            in_use.remove(&self.id);
            let _ = std::fs::remove_dir_all(self.inbox.incoming.join(&self.id));
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

const MANIFEST: &str = ".manifest";

impl SnapshotInbox {
    /// An inbox under `incoming`.
    pub(crate) fn new(incoming: &Path) -> Self {
        SnapshotInbox {
            incoming: incoming.to_path_buf(),
            in_use: Arc::default(),
            writing: Arc::default(),
        }
    }

    fn in_use(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.in_use.lock().unwrap_or_else(|e| e.into_inner())
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
    pub(crate) fn begin(&self, m: &SnapshotManifest) -> Result<Vec<u64>, CodecError> {
        let io = |e: std::io::Error| CodecError::new("snapshot", e.to_string());
        if let Some(bad) = m.files.iter().find(|(p, _)| !safe_rel_path(p)) {
            return Err(CodecError::new(
                "snapshot",
                format!("bad file name {}", bad.0),
            ));
        }
        let dir = self.dir(&m.id)?;
        // Other transfers' leftovers go, unless an install is reading them.
        if let Ok(entries) = std::fs::read_dir(&self.incoming) {
            let in_use = self.in_use();
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name != m.id && !in_use.contains_key(&name) {
                    std::fs::remove_dir_all(entry.path()).map_err(io)?;
                }
            }
        }
        if self.manifest(&m.id).ok().as_ref() != Some(m) {
            // Nothing here is reusable.
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io)?;
            }
            std::fs::create_dir_all(&dir).map_err(io)?;
            let path = dir.join(MANIFEST);
            std::fs::write(&path, encode(m)).map_err(io)?;
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
            sync_dir(&dir).map_err(io)?;
        }
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        m.files
            .iter()
            .map(|(p, size)| {
                let path = dir.join(p);
                let have = std::fs::metadata(&path).map_or(0, |md| md.len());
                if have > *size {
                    // Not what the sender has: it is sent again from the start.
                    std::fs::remove_file(&path).map_err(io)?;
                    return Ok(0);
                }
                Ok(have)
            })
            .collect()
    }

    /// Appends a chunk if it starts where the file ends; returns the file's length.
    pub(crate) fn chunk(&self, h: &ChunkHeader, data: &[u8]) -> Result<u64, CodecError> {
        use std::io::Write;
        let io = |e: std::io::Error| CodecError::new("snapshot", e.to_string());
        let m = self.manifest(&h.id)?;
        let (rel, size) = m
            .files
            .get(h.file as usize)
            .ok_or_else(|| CodecError::new("snapshot", "file index out of range"))?;
        let path = self.dir(&h.id)?.join(rel);
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
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
            if let Some(parent) = path.parent() {
                sync_dir(parent).map_err(io)?;
            }
        }
        Ok(have + data.len() as u64)
    }

    fn claim(&self, id: &str) -> Claim {
        *self.in_use().entry(id.to_owned()).or_default() += 1;
        Claim {
            inbox: self.clone(),
            id: id.to_owned(),
        }
    }

    /// The complete snapshot of transfer `id`, ready to install; its directory stays until
    /// the last handle to it goes.
    pub(crate) fn complete(&self, id: &str, meta: SnapshotMeta) -> Result<Snapshot, CodecError> {
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
            snapshot: SnapshotData::with_keeper(dir, Arc::new(self.claim(id))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_delivered_twice_at_once_is_written_once() {
        // A retry can reach the node while the first delivery is still being written
        // (raftmq-sim found snapshots refused for ever as "has 5052 of 2526 bytes").
        let tmp = tempfile::tempdir().unwrap();
        let inbox = SnapshotInbox::new(&tmp.path().join("in"));
        let data = vec![7u8; 64 << 10];
        for round in 0..30 {
            let m = SnapshotManifest {
                id: format!("{round}-1-1"),
                files: vec![("state/x.sst".into(), data.len() as u64)],
            };
            inbox.begin(&m).unwrap();
            let header = ChunkHeader {
                id: m.id.clone(),
                file: 0,
                offset: 0,
            };
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| inbox.chunk(&header, &data).unwrap());
                }
            });
            assert_eq!(
                inbox.begin(&m).unwrap(),
                [data.len() as u64],
                "round {round}"
            );
            inbox.complete(&m.id, Default::default()).unwrap();
        }
    }

    #[test]
    fn a_transfer_completed_twice_keeps_its_directory_until_both_handles_go() {
        // A duplicated or retried finishing request completes a transfer twice. The copy
        // Raft drops must not take the directory from the one it installs (raftmq-sim:
        // an install failed with "No such file or directory", and the node's Raft core
        // stopped for good).
        let tmp = tempfile::tempdir().unwrap();
        let inbox = SnapshotInbox::new(&tmp.path().join("in"));
        let m = SnapshotManifest {
            id: "7-1-1".into(),
            files: vec![("state/CURRENT".into(), 3)],
        };
        inbox.begin(&m).unwrap();
        let header = ChunkHeader {
            id: m.id.clone(),
            file: 0,
            offset: 0,
        };
        inbox.chunk(&header, b"abc").unwrap();
        let installing = inbox.complete(&m.id, Default::default()).unwrap();
        let dropped = inbox.complete(&m.id, Default::default()).unwrap();
        drop(dropped);
        let file = installing.snapshot.dir.join("state/CURRENT");
        assert_eq!(std::fs::read(&file).unwrap(), b"abc");
        // Nor may a new transfer clear it away.
        let other = SnapshotManifest {
            id: "8-1-1".into(),
            files: vec![("a".into(), 1)],
        };
        inbox.begin(&other).unwrap();
        assert!(file.exists());
        drop(installing);
        assert!(
            !tmp.path().join("in/7-1-1").exists(),
            "the last handle removes it"
        );
    }

    #[test]
    fn a_file_longer_than_the_manifest_says_is_sent_again() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = SnapshotInbox::new(&tmp.path().join("in"));
        let m = SnapshotManifest {
            id: "5-1-1".into(),
            files: vec![("a".into(), 3)],
        };
        inbox.begin(&m).unwrap();
        std::fs::write(tmp.path().join("in/5-1-1/a"), b"abcabc").unwrap();
        assert_eq!(inbox.begin(&m).unwrap(), [0]);
        let header = ChunkHeader {
            id: m.id.clone(),
            file: 0,
            offset: 0,
        };
        assert_eq!(inbox.chunk(&header, b"abc").unwrap(), 3);
        inbox.complete(&m.id, Default::default()).unwrap();
    }

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
        // A different snapshot starts afresh, but the completed one stays while an install
        // holds it, and goes when the install lets go.
        let other = SnapshotManifest {
            id: "9-1-1".into(),
            files: vec![("a".into(), 1)],
        };
        assert_eq!(inbox.begin(&other).unwrap(), [0]);
        assert!(
            snap.snapshot.dir.join("state/CURRENT").exists(),
            "an install is reading it"
        );
        let held = snap.snapshot.clone();
        drop(snap);
        assert!(held.dir.exists(), "a clone still holds it");
        let dir = held.dir.clone();
        drop(held);
        assert!(!dir.exists(), "removed with the last handle");
        assert!(inbox.complete(&m.id, Default::default()).is_err());
        // Without a holder, another transfer's leftovers go at the next begin.
        assert_eq!(inbox.begin(&m).unwrap(), [0, 0]);
        assert_eq!(inbox.begin(&other).unwrap(), [0]);
        assert!(!tmp.path().join("in").join(&m.id).exists());
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
}
