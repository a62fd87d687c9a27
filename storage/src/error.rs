//! The storage crate's one error type.
//!
//! `Corrupted` (the bytes on disk are wrong) is kept apart from `Io` (the OS failed us):
//! the first calls for truncation or catch-up from peers, the second is usually fatal.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in `raftmq-storage`.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The operating system failed an operation on a file.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Bytes on disk do not match their checksum or framing.
    #[error("corrupted data in {path} at byte {position}: {reason}")]
    Corrupted {
        /// The file holding the bad bytes.
        path: PathBuf,
        /// Byte position of the bad record or field.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// A log index outside the retained log was asked for.
    #[error("log index {index} is not in the log (first {first}, next {next})")]
    OutOfRange {
        /// The index asked for.
        index: u64,
        /// The first retained index.
        first: u64,
        /// The index the next append will get.
        next: u64,
    },
    /// An append did not continue the log.
    #[error("append out of order: expected log index {expected}, got {got}")]
    NonContiguous {
        /// The index the log expected.
        expected: u64,
        /// The index it was given.
        got: u64,
    },
    /// A caller passed something the engine cannot store.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An earlier write or fsync failed, so the in-memory view may not match the disk.
    #[error("the commit log is unusable after an earlier I/O failure")]
    Poisoned,
    /// An encoded message batch or index value is malformed.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Why it is malformed.
        reason: String,
    },
    /// RocksDB reported an error.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
}

/// The crate's result type.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Attaches a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| StorageError::Io {
            path: path.into(),
            source,
        })
    }
}

pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> StorageError {
    StorageError::Malformed {
        what,
        reason: reason.into(),
    }
}
