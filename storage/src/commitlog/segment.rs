//! One segment of the CommitLog: a `.log` file of framed records and the positions of its
//! records.
//!
//! A segment file starts with a 16-byte header (`RMQSEG01` + the log index of its first
//! record) and holds records of consecutive log indexes. The *active* (last) segment keeps
//! its record positions in memory; they are rebuilt by scanning it on open. When a segment is
//! *sealed* (a newer one starts), its data is fsynced and its positions are written to a
//! fixed-width `.idx` file (one little-endian `u32` per record) that is fsynced too, so a
//! restart never rescans sealed segments.
//!
//! Must never: hand out a record it has not checked against its CRC and expected index.

use std::path::{Path, PathBuf};

use super::record::{self, HEADER_LEN, Header, Invalid};
use crate::error::{IoContext, Result, StorageError};
use crate::vfs::{FileRef, OpenMode, Vfs};

pub(crate) const MAGIC: &[u8; 8] = b"RMQSEG01";
pub(crate) const SEGMENT_HEADER_LEN: u64 = 16;
/// How much a scan reads at once.
const SCAN_CHUNK: usize = 1 << 20;

pub(crate) fn log_name(base: u64) -> String {
    format!("{base:020}.log")
}

pub(crate) fn idx_name(base: u64) -> String {
    format!("{base:020}.idx")
}

/// Parses `00000000000000000042.log` into 42.
pub(crate) fn parse_log_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Debug)]
enum Positions {
    Active(Vec<u32>),
    Sealed(FileRef),
}

/// What a scan of a segment found.
#[derive(Debug)]
pub(crate) struct Scan {
    pub(crate) positions: Vec<u32>,
    /// End of the last good record.
    pub(crate) end: u64,
    /// Term of the last good record.
    pub(crate) last_term: Option<u64>,
    /// Where and why the scan stopped before the end of the file.
    pub(crate) stop: Option<(u64, String)>,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: FileRef,
    /// End of the last record: where the next one is written.
    pub(crate) len: u64,
    pub(crate) count: u64,
    positions: Positions,
}

impl Segment {
    /// Creates an empty, durable segment whose first record will be `base`.
    pub(crate) fn create(fs: &dyn Vfs, dir: &Path, base: u64) -> Result<Segment> {
        let path = dir.join(log_name(base));
        let file = fs.open(&path, OpenMode::CreateTruncate).at(&path)?;
        let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..].copy_from_slice(&base.to_le_bytes());
        file.write_all_at(&header, 0).at(&path)?;
        file.sync_data().at(&path)?;
        fs.sync_dir(dir).at(dir)?;
        Ok(Segment {
            base,
            path,
            file,
            len: SEGMENT_HEADER_LEN,
            count: 0,
            positions: Positions::Active(Vec::new()),
        })
    }

    /// Opens an existing segment file and checks its header. `Ok(None)` means the file never
    /// got a complete header (created, then a crash): it holds nothing and may be removed.
    pub(crate) fn open_file(fs: &dyn Vfs, dir: &Path, base: u64) -> Result<Option<(FileRef, u64)>> {
        let path = dir.join(log_name(base));
        let file = fs.open(&path, OpenMode::Existing).at(&path)?;
        let file_len = file.len().at(&path)?;
        let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
        let n = file.read_full_at(&mut header, 0).at(&path)?;
        if n < header.len() && file_len <= SEGMENT_HEADER_LEN {
            return Ok(None);
        }
        let stored_base = u64::from_le_bytes(header[8..].try_into().expect("8 bytes"));
        if &header[..8] != MAGIC || stored_base != base {
            return Err(StorageError::Corrupted {
                path,
                position: 0,
                reason: format!(
                    "bad segment header (expected magic {MAGIC:?} and first index {base})"
                ),
            });
        }
        Ok(Some((file, file_len)))
    }

    /// Builds the active segment from a scan of its file.
    pub(crate) fn active_from_scan(path: PathBuf, file: FileRef, base: u64, scan: Scan) -> Self {
        Segment {
            base,
            path,
            file,
            len: scan.end,
            count: scan.positions.len() as u64,
            positions: Positions::Active(scan.positions),
        }
    }

    /// Opens a sealed segment of `count` records, trusting its `.idx` file if it is whole and
    /// agrees with the data, else rebuilding it by a full scan. Returns whether it rebuilt.
    pub(crate) fn open_sealed(
        fs: &dyn Vfs,
        dir: &Path,
        base: u64,
        count: u64,
        file: FileRef,
        file_len: u64,
    ) -> Result<(Segment, bool)> {
        let path = dir.join(log_name(base));
        let idx_path = dir.join(idx_name(base));
        let mut seg = Segment {
            base,
            path: path.clone(),
            file,
            len: file_len,
            count,
            positions: Positions::Active(Vec::new()),
        };
        if fs.exists(&idx_path) {
            let idx = fs.open(&idx_path, OpenMode::Existing).at(&idx_path)?;
            if idx.len().at(&idx_path)? == count * 4 {
                seg.positions = Positions::Sealed(idx);
                if seg.last_record_matches_end()? {
                    return Ok((seg, false));
                }
            }
        }
        let scan = scan(&*seg.file, &path, base, file_len, Some(count))?;
        if let Some((position, reason)) = scan.stop {
            return Err(StorageError::Corrupted {
                path,
                position,
                reason: format!("sealed segment should hold {count} records: {reason}"),
            });
        }
        if scan.positions.len() as u64 != count || scan.end != file_len {
            return Err(StorageError::Corrupted {
                path,
                position: scan.end,
                reason: format!(
                    "sealed segment holds {} records ending at byte {}, expected {count} ending at {file_len}",
                    scan.positions.len(),
                    scan.end
                ),
            });
        }
        seg.positions = Positions::Active(scan.positions);
        seg.seal(fs, dir)?;
        Ok((seg, true))
    }

    fn last_record_matches_end(&self) -> Result<bool> {
        if self.count == 0 {
            return Ok(self.len == SEGMENT_HEADER_LEN);
        }
        let last = self.base + self.count - 1;
        let pos = self.position(last)?;
        match self.read_checked(pos, last) {
            Ok((h, _)) => Ok(pos + h.total_len() as u64 == self.len),
            Err(StorageError::Corrupted { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One past the last index held.
    pub(crate) fn end_index(&self) -> u64 {
        self.base + self.count
    }

    /// Byte position of the record with log index `index` (which must be in this segment).
    pub(crate) fn position(&self, index: u64) -> Result<u64> {
        let i = index - self.base;
        debug_assert!(i < self.count);
        match &self.positions {
            Positions::Active(v) => Ok(u64::from(v[i as usize])),
            Positions::Sealed(idx) => {
                let mut b = [0u8; 4];
                let n = idx.read_full_at(&mut b, i * 4).at(&self.path)?;
                if n < 4 {
                    return Err(StorageError::Corrupted {
                        path: self.path.with_extension("idx"),
                        position: i * 4,
                        reason: "index file is cut short".into(),
                    });
                }
                Ok(u64::from(u32::from_le_bytes(b)))
            }
        }
    }

    /// Byte range `[start, end)` holding records `from..to`.
    pub(crate) fn span(&self, from: u64, to: u64) -> Result<(u64, u64)> {
        let start = self.position(from)?;
        let end = if to >= self.end_index() {
            self.len
        } else {
            self.position(to)?
        };
        Ok((start, end))
    }

    /// Reads and checks the record at `pos`, which must carry log index `index`.
    pub(crate) fn read_checked(&self, pos: u64, index: u64) -> Result<(Header, Vec<u8>)> {
        let mut head = [0u8; HEADER_LEN];
        let n = self.file.read_full_at(&mut head, pos).at(&self.path)?;
        let h = Header::parse(&head);
        if n < HEADER_LEN || h.len as usize > record::MAX_PAYLOAD {
            return Err(self.corrupted(pos, Invalid::Short.to_string()));
        }
        let mut buf = vec![0u8; h.total_len()];
        let n = self.file.read_full_at(&mut buf, pos).at(&self.path)?;
        let h = record::check(&buf[..n]).map_err(|e| self.corrupted(pos, e.to_string()))?;
        if h.index != index {
            return Err(self.corrupted(
                pos,
                format!("record has log index {}, expected {index}", h.index),
            ));
        }
        Ok((h, buf))
    }

    pub(crate) fn corrupted(&self, position: u64, reason: String) -> StorageError {
        StorageError::Corrupted {
            path: self.path.clone(),
            position,
            reason,
        }
    }

    /// Records that `positions` were just written at the end of this (active) segment.
    pub(crate) fn appended(&mut self, positions: &[u32], new_len: u64) {
        match &mut self.positions {
            Positions::Active(v) => v.extend_from_slice(positions),
            Positions::Sealed(_) => unreachable!("appends go to the active segment only"),
        }
        self.count += positions.len() as u64;
        self.len = new_len;
    }

    /// Makes the data durable and writes the durable `.idx` file.
    pub(crate) fn seal(&mut self, fs: &dyn Vfs, dir: &Path) -> Result<()> {
        let Positions::Active(positions) = &self.positions else {
            return Ok(());
        };
        self.file.sync_data().at(&self.path)?;
        let idx_path = dir.join(idx_name(self.base));
        let idx = fs.open(&idx_path, OpenMode::CreateTruncate).at(&idx_path)?;
        let bytes: Vec<u8> = positions.iter().flat_map(|p| p.to_le_bytes()).collect();
        idx.write_all_at(&bytes, 0).at(&idx_path)?;
        idx.sync_data().at(&idx_path)?;
        fs.sync_dir(dir).at(dir)?;
        self.positions = Positions::Sealed(idx);
        Ok(())
    }

    /// Turns a sealed segment back into the active one (after a truncation), dropping its
    /// `.idx` file: the active segment's positions live in memory and are rebuilt by a scan.
    pub(crate) fn unseal(&mut self, fs: &dyn Vfs, dir: &Path) -> Result<()> {
        let Positions::Sealed(idx) = &self.positions else {
            return Ok(());
        };
        let idx_path = dir.join(idx_name(self.base));
        let mut bytes = vec![0u8; (self.count * 4) as usize];
        let n = idx.read_full_at(&mut bytes, 0).at(&idx_path)?;
        if n < bytes.len() {
            return Err(StorageError::Corrupted {
                path: idx_path,
                position: n as u64,
                reason: "index file is cut short".into(),
            });
        }
        let positions = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        self.positions = Positions::Active(positions);
        fs.remove_file(&idx_path).at(&idx_path)?;
        fs.sync_dir(dir).at(dir)?;
        Ok(())
    }

    /// Cuts the segment so that it holds only records before `index`, durably.
    pub(crate) fn truncate_before(&mut self, index: u64) -> Result<()> {
        let keep = index.saturating_sub(self.base).min(self.count);
        if keep == self.count {
            return Ok(());
        }
        let pos = self.position(self.base + keep)?;
        match &mut self.positions {
            Positions::Active(v) => v.truncate(keep as usize),
            Positions::Sealed(_) => unreachable!("unseal before truncating"),
        }
        self.file.set_len(pos).at(&self.path)?;
        self.file.sync_data().at(&self.path)?;
        self.count = keep;
        self.len = pos;
        Ok(())
    }

    /// Removes the segment's files (not durable until the directory is synced).
    pub(crate) fn remove_files(fs: &dyn Vfs, dir: &Path, base: u64) -> Result<()> {
        let log = dir.join(log_name(base));
        fs.remove_file(&log).at(&log)?;
        let idx = dir.join(idx_name(base));
        if fs.exists(&idx) {
            fs.remove_file(&idx).at(&idx)?;
        }
        Ok(())
    }
}

/// Reads the records of a segment file from its header on, checking CRC and index
/// continuity, up to `limit` records; stops at the first bad or cut-short record.
pub(crate) fn scan(
    file: &dyn crate::vfs::VfsFile,
    path: &Path,
    base: u64,
    file_len: u64,
    limit: Option<u64>,
) -> Result<Scan> {
    let mut out = Scan {
        positions: Vec::new(),
        end: SEGMENT_HEADER_LEN,
        last_term: None,
        stop: None,
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = SEGMENT_HEADER_LEN;
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < file_len && limit.is_none_or(|l| (out.positions.len() as u64) < l) {
        let off = (pos - buf_start) as usize;
        match record::check(&buf[off.min(buf.len())..]) {
            Ok(h) => {
                let expected = base + out.positions.len() as u64;
                if h.index != expected {
                    out.stop = Some((
                        pos,
                        format!("record has log index {}, expected {expected}", h.index),
                    ));
                    break;
                }
                if pos > u64::from(u32::MAX) {
                    return Err(StorageError::Corrupted {
                        path: path.to_path_buf(),
                        position: pos,
                        reason: "segment grew past 4 GiB".into(),
                    });
                }
                out.positions.push(pos as u32);
                out.last_term = Some(h.term);
                pos += h.total_len() as u64;
                out.end = pos;
            }
            Err(Invalid::Short) if buf_start + (buf.len() as u64) < file_len => {
                // Refill from this record on, big enough for its header and payload.
                let avail = &buf[off.min(buf.len())..];
                let need = if avail.len() >= HEADER_LEN {
                    Header::parse(avail).total_len()
                } else {
                    HEADER_LEN
                };
                let want = need.max(SCAN_CHUNK).min((file_len - pos) as usize);
                buf.resize(want, 0);
                let n = file.read_full_at(&mut buf, pos).at(path)?;
                buf.truncate(n);
                buf_start = pos;
            }
            Err(e) => {
                out.stop = Some((pos, e.to_string()));
                break;
            }
        }
    }
    Ok(out)
}

/// Looks for a valid record of log index `min_index` or later at or after the bad bytes at
/// `bad`.
/// Finding one means the bad bytes are corruption inside the log, not a torn tail (a torn or
/// unfinished write leaves nothing valid after it). Returns its position and index.
pub(crate) fn valid_record_after(
    file: &dyn crate::vfs::VfsFile,
    path: &Path,
    bad: u64,
    file_len: u64,
    min_index: u64,
) -> Result<Option<(u64, u64)>> {
    // A record takes at least HEADER_LEN bytes, which bounds how far its index can be.
    let max_index = min_index.saturating_add((file_len - bad) / HEADER_LEN as u64);
    let mut buf = vec![0u8; SCAN_CHUNK + HEADER_LEN];
    let mut start = bad;
    while start + HEADER_LEN as u64 <= file_len {
        let n = file.read_full_at(&mut buf, start).at(path)?;
        for i in 0..SCAN_CHUNK.min(n.saturating_sub(HEADER_LEN - 1)) {
            let h = Header::parse(&buf[i..]);
            let at = start + i as u64;
            if h.index < min_index
                || h.index > max_index
                || h.len as usize > record::MAX_PAYLOAD
                || at + h.total_len() as u64 > file_len
            {
                continue;
            }
            let whole = if i + h.total_len() <= n {
                buf[i..i + h.total_len()].to_vec()
            } else {
                let mut rec = vec![0u8; h.total_len()];
                let got = file.read_full_at(&mut rec, at).at(path)?;
                rec.truncate(got);
                rec
            };
            if record::check(&whole).is_ok() {
                return Ok(Some((at, h.index)));
            }
        }
        start += SCAN_CHUNK as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(log_name(42), "00000000000000000042.log");
        assert_eq!(parse_log_name(&log_name(42)), Some(42));
        assert_eq!(parse_log_name("42.log"), None);
        assert_eq!(parse_log_name("0000000000000000004x.log"), None);
        assert_eq!(parse_log_name(&idx_name(42)), None);
    }
}
