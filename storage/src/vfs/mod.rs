//! The file-system seam under the CommitLog.
//!
//! Every byte the CommitLog and [`crate::DurableCell`] read or write goes through [`Vfs`] and
//! [`VfsFile`], so tests can swap the real file system ([`OsFs`]) for [`MemFs`], which keeps
//! *written* and *synced* bytes apart and can simulate a crash that drops, tears or corrupts
//! what was not (or was) made durable.
//!
//! Must never: buffer writes in user space (a write is handed to the OS at once, durability
//! comes only from `sync_data`), or hide an I/O error.

mod mem;
mod os;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use mem::{Crash, MemFs};
pub use os::OsFs;

/// A shared handle to an open file.
pub type FileRef = Arc<dyn VfsFile>;

/// How a file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file for reading and writing.
    Existing,
    /// Create the file, failing if it exists.
    CreateNew,
    /// Create the file or truncate an existing one to zero length.
    CreateTruncate,
}

/// The directory-level operations the storage engine needs.
pub trait Vfs: Send + Sync + fmt::Debug {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names (not paths) of the regular files directly inside `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens a file for positional reads and writes.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileRef>;
    /// Whether `path` names an existing file.
    fn exists(&self, path: &Path) -> bool;
    /// Removes a file (open handles stay usable, as on Unix).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes creations, removals and renames inside `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Gives the file at `from` a second name `to` (both see the same bytes).
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()>;
}

/// An open file, addressed by position so one handle serves readers and the writer at once.
pub trait VfsFile: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `pos`; returns how many were read (0 at end of file).
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `pos`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads as many bytes as fit in `buf` at `pos`, stopping early only at end of file.
    /// Returns how many bytes were read.
    fn read_full_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_at(&mut buf[done..], pos + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}
