//! The CommitLog: raftmq's Raft log and its only copy of every message.
//!
//! A directory of segment files named by the log index of their first record
//! (`00000000000000000001.log`), each a sequence of CRC-framed records of consecutive log
//! indexes (see [`record`] and `docs/commitlog-format.md`). Sealed segments carry a `.idx`
//! file of record positions; a `purged` [`DurableCell`] remembers the last purged entry.
//!
//! Write path: [`CommitLog::append`] frames a whole batch into one buffer and hands it to the
//! OS with one write per segment touched; [`CommitLog::sync`] makes everything appended so far
//! durable with one `fdatasync` (group commit is the caller batching appends between syncs).
//! `sync` takes `&self`, so a writer can append under a write lock and fsync under a read
//! lock while readers keep reading.
//!
//! Invariants:
//! - records are contiguous by log index from [`CommitLog::first_index`] to
//!   [`CommitLog::last_index`];
//! - a sealed segment is durable before a newer segment is created;
//! - recovery on open truncates only the last segment, at its first bad record, and reports
//!   it; anything bad in a sealed segment is an error, never skipped.
//!
//! Must never: purge on its own (only [`CommitLog::purge`], driven by retention), keep going
//! after a failed write or fsync (the log is poisoned), or return unchecked bytes.

pub(crate) mod record;
mod segment;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use crate::durable_cell::DurableCell;
use crate::error::{IoContext, Result, StorageError};
use crate::vfs::Vfs;
pub use record::MAX_PAYLOAD;
use record::{HEADER_LEN, Header};
use segment::{SEGMENT_HEADER_LEN, Segment};

/// Settings of a CommitLog.
#[derive(Clone, Debug)]
pub struct CommitLogOptions {
    /// A new segment starts once the active one would grow past this (bytes).
    pub segment_size: u64,
}

impl Default for CommitLogOptions {
    fn default() -> Self {
        CommitLogOptions {
            segment_size: 256 << 20,
        }
    }
}

/// Largest segment size accepted: positions are `u32` and one record may overshoot.
pub const MAX_SEGMENT_SIZE: u64 = 2 << 30;

/// A log position: Raft index and term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPos {
    /// Raft log index.
    pub index: u64,
    /// Raft term of the entry at that index.
    pub term: u64,
}

/// A record to append.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    /// Raft log index; must continue the log.
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// Opaque payload (the Raft layer's encoded entry).
    pub payload: &'a [u8],
}

/// A record read back. `payload` shares one buffer with the other records of the same read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Raft log index.
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// The payload as appended.
    pub payload: Bytes,
}

/// The torn or corrupt tail that recovery cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncatedTail {
    /// The segment file that was cut.
    pub segment: PathBuf,
    /// Byte position of the first bad record: the file's new length.
    pub position: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    /// Why the record there was rejected.
    pub reason: String,
}

/// What [`CommitLog::open`] repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// A cut-off tail, if the last segment ended in a bad or incomplete record.
    pub truncated: Option<TruncatedTail>,
    /// Segment files removed: never-used empty tails and leftovers of an interrupted purge.
    pub removed: Vec<PathBuf>,
    /// Sealed segments whose `.idx` file was missing or stale and was rebuilt by a scan.
    pub rebuilt_indexes: Vec<PathBuf>,
}

/// The segmented, CRC-framed, append-only log. See the module docs.
#[derive(Debug)]
pub struct CommitLog {
    fs: Arc<dyn Vfs>,
    dir: PathBuf,
    opts: CommitLogOptions,
    /// Ordered by `base`; the last one is the active segment.
    segments: Vec<Segment>,
    purged_cell: DurableCell,
    purged: Option<LogPos>,
    /// The index the next append must carry; `None` while the log has never held anything.
    next: Option<u64>,
    last_term: u64,
    poisoned: AtomicBool,
    buf: Vec<u8>,
    positions: Vec<u32>,
}

const PURGED_CELL: &str = "purged";

impl CommitLog {
    /// Opens (or creates) the log in `dir`, recovering from a crash: see [`RecoveryReport`].
    pub fn open(
        fs: Arc<dyn Vfs>,
        dir: &Path,
        opts: CommitLogOptions,
    ) -> Result<(CommitLog, RecoveryReport)> {
        if opts.segment_size <= SEGMENT_HEADER_LEN || opts.segment_size > MAX_SEGMENT_SIZE {
            return Err(StorageError::InvalidArgument(format!(
                "segment_size must be between {} and {MAX_SEGMENT_SIZE} bytes, got {}",
                SEGMENT_HEADER_LEN + 1,
                opts.segment_size
            )));
        }
        fs.create_dir_all(dir).at(dir)?;
        let purged_cell = DurableCell::new(fs.clone(), dir, PURGED_CELL);
        let purged = purged_cell
            .load()?
            .map(|b| decode_pos(&b).ok_or(()))
            .transpose()
            .map_err(|()| StorageError::Corrupted {
                path: dir.join(PURGED_CELL),
                position: 0,
                reason: "purge point is not 16 bytes".into(),
            })?;
        let mut report = RecoveryReport::default();
        let mut bases: Vec<u64> = fs
            .list_dir(dir)
            .at(dir)?
            .iter()
            .filter_map(|n| segment::parse_log_name(n))
            .collect();
        bases.sort_unstable();

        // Finish an interrupted purge: drop segments wholly at or below the purge point.
        if let Some(p) = purged {
            while bases.len() >= 2 && bases[1] <= p.index + 1 {
                Segment::remove_files(&*fs, dir, bases[0])?;
                report.removed.push(dir.join(segment::log_name(bases[0])));
                bases.remove(0);
            }
        }

        // The tail: scan it, cut a torn end, drop it if it never held a durable record.
        let mut tail: Option<Segment> = None;
        let mut last_term = purged.map_or(0, |p| p.term);
        while let Some(&base) = bases.last() {
            let path = dir.join(segment::log_name(base));
            let Some((file, file_len)) = Segment::open_file(&*fs, dir, base)? else {
                Segment::remove_files(&*fs, dir, base)?;
                report.removed.push(path);
                bases.pop();
                continue;
            };
            let scan = segment::scan(&*file, &path, base, file_len, None)?;
            let end_index = base + scan.positions.len() as u64;
            if purged.is_some_and(|p| end_index <= p.index + 1) {
                // Wholly purged (the purge was interrupted before it removed this file).
                Segment::remove_files(&*fs, dir, base)?;
                report.removed.push(path);
                bases.pop();
                continue;
            }
            // The tail's positions live in memory; an `.idx` left from an earlier seal is stale.
            let idx = dir.join(segment::idx_name(base));
            if fs.exists(&idx) {
                fs.remove_file(&idx).at(&idx)?;
            }
            if let Some((position, reason)) = &scan.stop {
                // Cut only a torn tail: if a valid record follows the bad one, acknowledged
                // entries would go with it, so refuse to start instead (see ARCHITECTURE.md).
                let expected = base + scan.positions.len() as u64;
                if let Some((at, index)) =
                    segment::valid_record_after(&*file, &path, *position, file_len, expected)?
                {
                    return Err(StorageError::Corrupted {
                        path,
                        position: *position,
                        reason: format!(
                            "{reason}; a valid record (log index {index}) follows at byte {at}, \
                             so this is corruption inside the log, not a torn write. Refusing \
                             to cut it: rebuild this node from its peers as docs/operations.md \
                             says (out of the group, data directory moved away, added back)"
                        ),
                    });
                }
                file.set_len(*position).at(&path)?;
                file.sync_data().at(&path)?;
                report.truncated = Some(TruncatedTail {
                    segment: path.clone(),
                    position: *position,
                    bytes: file_len - position,
                    reason: reason.clone(),
                });
            }
            if scan.positions.is_empty() && bases.len() > 1 {
                Segment::remove_files(&*fs, dir, base)?;
                report.removed.push(path);
                bases.pop();
                continue;
            }
            if let Some(t) = scan.last_term {
                last_term = t;
            }
            tail = Some(Segment::active_from_scan(path, file, base, scan));
            bases.pop();
            break;
        }
        if !report.removed.is_empty() || report.truncated.is_some() {
            fs.sync_dir(dir).at(dir)?;
        }

        // Sealed segments: each holds exactly the indexes up to the next one's base.
        let mut segments = Vec::with_capacity(bases.len() + 1);
        for (i, &base) in bases.iter().enumerate() {
            let next_base = bases.get(i + 1).copied().or(tail.as_ref().map(|t| t.base));
            let next_base = next_base.expect("a sealed segment has a successor");
            let path = dir.join(segment::log_name(base));
            if next_base <= base {
                return Err(StorageError::Corrupted {
                    path,
                    position: 0,
                    reason: format!("segment overlaps the next one, which starts at {next_base}"),
                });
            }
            let Some((file, file_len)) = Segment::open_file(&*fs, dir, base)? else {
                return Err(StorageError::Corrupted {
                    path,
                    position: 0,
                    reason: "sealed segment has no header".into(),
                });
            };
            let (seg, rebuilt) =
                Segment::open_sealed(&*fs, dir, base, next_base - base, file, file_len)?;
            if rebuilt {
                report.rebuilt_indexes.push(seg.path.clone());
            }
            segments.push(seg);
        }
        segments.extend(tail);

        if let (Some(p), Some(first)) = (purged, segments.first())
            && first.base > p.index + 1
        {
            return Err(StorageError::Corrupted {
                path: first.path.clone(),
                position: 0,
                reason: format!(
                    "log starts at {} but only entries up to {} were purged",
                    first.base, p.index
                ),
            });
        }
        let next = match segments.last() {
            Some(s) if s.count > 0 || purged.is_none() => Some(s.end_index()),
            _ => purged.map(|p| p.index + 1),
        };
        let next = match (next, purged) {
            (Some(n), Some(p)) => Some(n.max(p.index + 1)),
            (n, _) => n,
        };
        let log = CommitLog {
            fs,
            dir: dir.to_path_buf(),
            opts,
            segments,
            purged_cell,
            purged,
            next,
            last_term,
            poisoned: AtomicBool::new(false),
            buf: Vec::new(),
            positions: Vec::new(),
        };
        Ok((log, report))
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first readable index, if the log holds any record.
    pub fn first_index(&self) -> Option<u64> {
        let last = self.last_index()?;
        let first_seg = self.segments.first()?.base;
        let first = self
            .purged
            .map_or(first_seg, |p| first_seg.max(p.index + 1));
        (first <= last).then_some(first)
    }

    /// The last index held, if any.
    pub fn last_index(&self) -> Option<u64> {
        let next = self.next?;
        let held = self.segments.iter().any(|s| s.count > 0);
        let last = next.checked_sub(1)?;
        (held && self.purged.is_none_or(|p| last > p.index)).then_some(last)
    }

    /// Index and term of the last record held, if any.
    pub fn last_record(&self) -> Option<LogPos> {
        self.last_index().map(|index| LogPos {
            index,
            term: self.last_term,
        })
    }

    /// The last purged position, if anything was ever purged.
    pub fn last_purged(&self) -> Option<LogPos> {
        self.purged
    }

    /// The index the next append must carry (`None`: the log never held anything, so any).
    pub fn next_index(&self) -> Option<u64> {
        self.next
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Bytes on disk in segment files.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    fn check_usable(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            Err(StorageError::Poisoned)
        } else {
            Ok(())
        }
    }

    fn poison<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.poisoned.store(true, Ordering::Release);
        }
        r
    }

    /// Appends records (not yet durable: call [`CommitLog::sync`]). Each record's index must
    /// continue the log. A failed write poisons the log.
    pub fn append<'a>(&mut self, records: impl IntoIterator<Item = RecordRef<'a>>) -> Result<()> {
        self.check_usable()?;
        let mut buf = std::mem::take(&mut self.buf);
        let mut positions = std::mem::take(&mut self.positions);
        buf.clear();
        positions.clear();
        let r = self.append_inner(records, &mut buf, &mut positions);
        self.buf = buf;
        self.positions = positions;
        r
    }

    fn append_inner<'a>(
        &mut self,
        records: impl IntoIterator<Item = RecordRef<'a>>,
        buf: &mut Vec<u8>,
        positions: &mut Vec<u32>,
    ) -> Result<()> {
        for r in records {
            if let Some(expected) = self.next
                && r.index != expected
            {
                self.flush(buf, positions)?;
                return Err(StorageError::NonContiguous {
                    expected,
                    got: r.index,
                });
            }
            if r.payload.len() > MAX_PAYLOAD {
                self.flush(buf, positions)?;
                return Err(StorageError::InvalidArgument(format!(
                    "record {} has a {}-byte payload, the limit is {MAX_PAYLOAD}",
                    r.index,
                    r.payload.len()
                )));
            }
            let rec_len = (HEADER_LEN + r.payload.len()) as u64;
            let write_pos = match self.segments.last() {
                Some(s) => s.len + buf.len() as u64,
                None => 0,
            };
            if self.segments.is_empty()
                || (write_pos > SEGMENT_HEADER_LEN && write_pos + rec_len > self.opts.segment_size)
            {
                self.flush(buf, positions)?;
                self.roll(r.index)?;
            }
            let active = self.segments.last().expect("rolled above");
            debug_assert_eq!(
                active.end_index() + positions.len() as u64,
                r.index,
                "segments are contiguous"
            );
            positions.push((active.len + buf.len() as u64) as u32);
            record::encode(buf, r.index, r.term, r.payload);
            self.next = Some(r.index + 1);
            self.last_term = r.term;
        }
        self.flush(buf, positions)
    }

    /// Writes the buffered records to the active segment.
    fn flush(&mut self, buf: &mut Vec<u8>, positions: &mut Vec<u32>) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let active = self
            .segments
            .last()
            .expect("records are buffered for a segment");
        let r = active.file.write_all_at(buf, active.len).at(&active.path);
        self.poison(r)?;
        let new_len = active.len + buf.len() as u64;
        self.segments
            .last_mut()
            .expect("checked above")
            .appended(positions, new_len);
        buf.clear();
        positions.clear();
        Ok(())
    }

    /// Seals the active segment (durably) and starts a new one at `base`.
    fn roll(&mut self, base: u64) -> Result<()> {
        if let Some(active) = self.segments.last_mut() {
            let r = active.seal(&*self.fs, &self.dir);
            self.poison(r)?;
        }
        let r = Segment::create(&*self.fs, &self.dir, base);
        let seg = self.poison(r)?;
        self.segments.push(seg);
        Ok(())
    }

    /// Makes every appended record durable with one `fdatasync` of the active segment
    /// (sealed segments were made durable when they were sealed). A failure poisons the log:
    /// the caller must treat it as fatal.
    pub fn sync(&self) -> Result<()> {
        self.check_usable()?;
        match self.segments.last() {
            Some(active) => {
                let r = active.file.sync_data().at(&active.path);
                self.poison(r)
            }
            None => Ok(()),
        }
    }

    fn out_of_range(&self, index: u64) -> StorageError {
        StorageError::OutOfRange {
            index,
            first: self.first_index().unwrap_or(0),
            next: self.next.unwrap_or(0),
        }
    }

    fn segment_of(&self, index: u64) -> Result<&Segment> {
        match (self.first_index(), self.last_index()) {
            (Some(first), Some(last)) if (first..=last).contains(&index) => {}
            _ => return Err(self.out_of_range(index)),
        }
        let i = self.segments.partition_point(|s| s.base <= index) - 1;
        Ok(&self.segments[i])
    }

    /// Reads one record.
    pub fn read(&self, index: u64) -> Result<LogRecord> {
        let seg = self.segment_of(index)?;
        let pos = seg.position(index)?;
        let (h, buf) = seg.read_checked(pos, index)?;
        let payload = Bytes::from(buf).slice(HEADER_LEN..);
        Ok(LogRecord {
            index,
            term: h.term,
            payload,
        })
    }

    /// Reads records `from..to` (clipped to the log's end) with one read per segment, stopping
    /// once `max_bytes` of payload are collected (at least one record is returned).
    pub fn read_range(&self, from: u64, to: u64, max_bytes: usize) -> Result<Vec<LogRecord>> {
        let mut out = Vec::new();
        let Some(last) = self.last_index() else {
            return if from >= to {
                Ok(out)
            } else {
                Err(self.out_of_range(from))
            };
        };
        let to = to.min(last + 1);
        let mut index = from;
        let mut bytes = 0usize;
        while index < to && (out.is_empty() || bytes < max_bytes) {
            let seg = self.segment_of(index)?;
            let seg_to = to.min(seg.end_index());
            let (start, end) = seg.span(index, seg_to)?;
            let mut raw = vec![0u8; (end - start) as usize];
            let n = seg.file.read_full_at(&mut raw, start).at(&seg.path)?;
            if n < raw.len() {
                return Err(
                    seg.corrupted(start + n as u64, "segment is shorter than its index".into())
                );
            }
            let raw = Bytes::from(raw);
            let mut off = 0usize;
            while index < seg_to && (out.is_empty() || bytes < max_bytes) {
                let h = record::check(&raw[off..])
                    .map_err(|e| seg.corrupted(start + off as u64, e.to_string()))?;
                if h.index != index {
                    return Err(seg.corrupted(
                        start + off as u64,
                        format!("record has log index {}, expected {index}", h.index),
                    ));
                }
                let payload = raw.slice(off + HEADER_LEN..off + h.total_len());
                bytes += payload.len();
                out.push(LogRecord {
                    index,
                    term: h.term,
                    payload,
                });
                off += h.total_len();
                index += 1;
            }
        }
        Ok(out)
    }

    /// The term of the record at `index`, reading only its header.
    pub fn term_of(&self, index: u64) -> Result<u64> {
        let seg = self.segment_of(index)?;
        let pos = seg.position(index)?;
        let mut head = [0u8; HEADER_LEN];
        let n = seg.file.read_full_at(&mut head, pos).at(&seg.path)?;
        let h = Header::parse(&head);
        if n < HEADER_LEN || h.index != index {
            return Err(seg.corrupted(pos, format!("no header for log index {index}")));
        }
        Ok(h.term)
    }

    /// Durably removes every record at or after `from` (a Raft log conflict). Truncating
    /// below the first retained index is refused: purged entries are committed.
    pub fn truncate(&mut self, from: u64) -> Result<()> {
        self.check_usable()?;
        let Some(last) = self.last_index() else {
            return Ok(());
        };
        if from > last {
            return Ok(());
        }
        let first = self.first_index().expect("log is not empty");
        if from < first {
            return Err(StorageError::InvalidArgument(format!(
                "cannot truncate from {from}: entries below {first} are purged"
            )));
        }
        let r = self.truncate_inner(from);
        self.poison(r)?;
        self.next = Some(from);
        self.last_term = match self.last_index() {
            Some(i) => self.term_of(i)?,
            None => self.purged.map_or(0, |p| p.term),
        };
        Ok(())
    }

    fn truncate_inner(&mut self, from: u64) -> Result<()> {
        // Newest first, so a crash part-way leaves a contiguous prefix.
        while let Some(seg) = self.segments.last() {
            if seg.base < from {
                break;
            }
            Segment::remove_files(&*self.fs, &self.dir, seg.base)?;
            self.segments.pop();
        }
        self.fs.sync_dir(&self.dir).at(&self.dir)?;
        if let Some(seg) = self.segments.last_mut() {
            seg.unseal(&*self.fs, &self.dir)?;
            seg.truncate_before(from)?;
        }
        Ok(())
    }

    /// Durably forgets every record up to and including `upto.index`, deleting whole
    /// segments only. Purging past the last record empties the log; the next append then
    /// continues at `upto.index + 1` (as after installing a snapshot).
    pub fn purge(&mut self, upto: LogPos) -> Result<()> {
        self.check_usable()?;
        if self.purged.is_some_and(|p| upto.index <= p.index) {
            return Ok(());
        }
        // Record the purge point first: a crash after it finishes the purge on open.
        self.purged_cell.store(&encode_pos(upto))?;
        self.purged = Some(upto);
        let r = self.remove_purged_segments(upto.index);
        self.poison(r)?;
        if self.next.is_none_or(|n| n <= upto.index) {
            self.next = Some(upto.index + 1);
        }
        if self.last_index().is_none() {
            self.last_term = upto.term;
        }
        Ok(())
    }

    /// How many leading segments lie wholly at or below `upto` (what a purge removes).
    fn segments_at_or_below(&self, upto: u64) -> usize {
        let mut remove = 0;
        for (i, seg) in self.segments.iter().enumerate() {
            let end = self.segments.get(i + 1).map_or(seg.end_index(), |n| n.base);
            if end > upto + 1 {
                break;
            }
            remove = i + 1;
        }
        remove
    }

    /// Whether purging up to and including `upto` would delete a segment file (a purge
    /// deletes whole segments only), so callers can skip work that would free nothing.
    pub fn purge_frees(&self, upto: u64) -> bool {
        self.segments_at_or_below(upto) > 0
    }

    fn remove_purged_segments(&mut self, upto: u64) -> Result<()> {
        let remove = self.segments_at_or_below(upto);
        for seg in self.segments.drain(..remove) {
            Segment::remove_files(&*self.fs, &self.dir, seg.base)?;
        }
        if remove > 0 {
            self.fs.sync_dir(&self.dir).at(&self.dir)?;
        }
        Ok(())
    }
}

impl CommitLog {
    /// Writes a copy of the log up to and including `upto` into `dest` (a new directory),
    /// as a log directory [`CommitLog::open`] accepts: the purge point, sealed segments
    /// wholly at or below `upto` and their `.idx` files as hard links (they never change
    /// again: everything in them
    /// is at or below a committed index), and the segment holding `upto` copied up to the
    /// end of that record. Used to ship retained messages inside a snapshot.
    pub fn export(&self, upto: u64, dest: &Path) -> Result<()> {
        let fs = &*self.fs;
        fs.create_dir_all(dest).at(dest)?;
        if let Some(p) = self.purged {
            DurableCell::new(self.fs.clone(), dest, PURGED_CELL).store(&encode_pos(p))?;
        }
        let last = self.segments.len().saturating_sub(1);
        for (i, seg) in self.segments.iter().enumerate() {
            if seg.base > upto || seg.count == 0 {
                break;
            }
            let name = segment::log_name(seg.base);
            let target = dest.join(&name);
            if seg.end_index() <= upto + 1 && i < last {
                fs.hard_link(&seg.path, &target).at(&target)?;
                // Its position index too, so the receiver opens it without a scan.
                let idx = self.dir.join(segment::idx_name(seg.base));
                if fs.exists(&idx) {
                    let idx_target = dest.join(segment::idx_name(seg.base));
                    fs.hard_link(&idx, &idx_target).at(&idx_target)?;
                }
                continue;
            }
            // The active segment, or the one holding `upto`: copy the prefix.
            let end = if seg.end_index() <= upto + 1 {
                seg.len
            } else {
                seg.position(upto + 1)?
            };
            let out = fs
                .open(&target, crate::vfs::OpenMode::CreateNew)
                .at(&target)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut pos = 0u64;
            while pos < end {
                let n = ((end - pos) as usize).min(buf.len());
                let got = seg.file.read_full_at(&mut buf[..n], pos).at(&seg.path)?;
                if got < n {
                    return Err(
                        seg.corrupted(pos + got as u64, "segment is shorter than its index".into())
                    );
                }
                out.write_all_at(&buf[..n], pos).at(&target)?;
                pos += n as u64;
            }
            out.sync_data().at(&target)?;
            break;
        }
        fs.sync_dir(dest).at(dest)?;
        Ok(())
    }
}

fn encode_pos(p: LogPos) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&p.index.to_le_bytes());
    b[8..].copy_from_slice(&p.term.to_le_bytes());
    b
}

fn decode_pos(b: &[u8]) -> Option<LogPos> {
    let b: &[u8; 16] = b.try_into().ok()?;
    Some(LogPos {
        index: u64::from_le_bytes(b[..8].try_into().ok()?),
        term: u64::from_le_bytes(b[8..].try_into().ok()?),
    })
}
