//! Errors of the Raft layer.

use raftmq_storage::StorageError;

/// Bytes that do not decode as what they should be.
#[derive(Debug, Clone, thiserror::Error)]
#[error("malformed {what}: {reason}")]
pub struct CodecError {
    what: &'static str,
    reason: String,
}

impl CodecError {
    pub(crate) fn new(what: &'static str, reason: impl Into<String>) -> Self {
        CodecError {
            what,
            reason: reason.into(),
        }
    }
}

/// A read of messages failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The offset was deleted by retention.
    #[error("offset is below the queue's min_offset {min_offset}")]
    OffsetOutOfRange {
        /// First retained offset.
        min_offset: u64,
    },
    /// The log entry an index points at holds no messages.
    #[error("log entry {0} holds no messages")]
    NotAMessage(u64),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Stored bytes are malformed.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Converts any error into the `io::Error` openraft's storage traits want.
pub(crate) fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
