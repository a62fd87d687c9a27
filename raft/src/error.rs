//! The crate's errors: [`BrokerError`], the one error that crosses the crate boundary, and
//! [`CodecError`], for bytes that do not decode (inside the crate and on the peer wire).
//!
//! `BrokerError` keeps three kinds apart, as `raftmq_storage::StorageError` does: what the
//! caller asked wrongly (refused, nothing changed), what the cluster could not do now (not
//! the leader, outcome unknown), and what the node's own storage did (corrupted bytes vs.
//! failed I/O).
//!
//! Must never: turn a typed storage error into a string on its way out; openraft's storage
//! traits want `io::Error`, so [`io_err`] wraps the typed error and [`BrokerError::from_io`]
//! takes it back out.

use std::io;

use raftmq_storage::StorageError;

use crate::consensus::types::NodeId;
use crate::state::RejectCode;

/// Everything a [`crate::Broker`] operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The request is wrong for the current state (no such topic or consumer group, a bad
    /// argument, a conflict); nothing changed. The message names the field or the thing.
    #[error("{message}")]
    Rejected {
        /// Why, machine-readable.
        code: RejectCode,
        /// Why, for people.
        message: String,
    },
    /// A read asked for an offset that retention has deleted.
    #[error("offset {offset} is below the queue's min_offset {min_offset}")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// The queue's first retained offset.
        min_offset: u64,
    },
    /// This node is not the leader; nothing was written.
    #[error("not the leader")]
    NotLeader {
        /// The leader, if known: id and HTTP address.
        leader: Option<(NodeId, String)>,
    },
    /// The node's data volume has less free space than its floor: new writes are refused
    /// (nothing was written); reads, acks and admin go on.
    #[error("disk full: {free} bytes free, the floor is {floor}")]
    DiskFull {
        /// Free bytes on the data volume.
        free: u64,
        /// The floor new writes need.
        floor: u64,
    },
    /// Raft cannot serve the request now (stopped, or refused before anything was done).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A write was proposed but its fate is unknown (discarded from this node's log, Raft
    /// stopped after the proposal): it may or may not be committed.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// Stored bytes fail their checks (checksum, framing, encoding).
    #[error("corrupted: {0}")]
    Corrupted(#[source] StorageError),
    /// Local storage failed otherwise (the OS, RocksDB, a poisoned log).
    #[error("storage: {0}")]
    Io(#[source] StorageError),
    /// A broken invariant of this node (a bug); the detail is for the log.
    #[error("internal: {0}")]
    Internal(String),
}

impl BrokerError {
    /// A refusal with a code and a message.
    pub(crate) fn rejected(code: RejectCode, message: impl Into<String>) -> Self {
        BrokerError::Rejected {
            code,
            message: message.into(),
        }
    }

    /// Recovers the typed error that [`io_err`] wrapped; anything else is I/O.
    pub(crate) fn from_io(e: io::Error) -> Self {
        let kind = e.kind();
        match e.into_inner() {
            Some(inner) => match inner.downcast::<StorageError>() {
                Ok(s) => BrokerError::from(*s),
                Err(other) => match other.downcast::<CodecError>() {
                    Ok(c) => BrokerError::from(*c),
                    Err(other) => BrokerError::Io(StorageError::Io {
                        path: Default::default(),
                        source: io::Error::new(kind, other),
                    }),
                },
            },
            None => BrokerError::Io(StorageError::Io {
                path: Default::default(),
                source: io::Error::from(kind),
            }),
        }
    }
}

impl From<StorageError> for BrokerError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Corrupted { .. } | StorageError::Malformed { .. } => {
                BrokerError::Corrupted(e)
            }
            other => BrokerError::Io(other),
        }
    }
}

impl From<CodecError> for BrokerError {
    fn from(e: CodecError) -> Self {
        BrokerError::Corrupted(e.into())
    }
}

/// Bytes that do not decode as what they should be (inside the crate; it leaves as
/// `BrokerError::Corrupted` or a refused peer request).
#[derive(Debug, Clone, thiserror::Error)]
#[error("malformed {what}: {reason}")]
pub(crate) struct CodecError {
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

impl From<CodecError> for StorageError {
    fn from(e: CodecError) -> Self {
        StorageError::Malformed {
            what: e.what,
            reason: e.reason,
        }
    }
}

/// Wraps a typed error into the `io::Error` openraft's storage traits want, keeping it
/// (and corruption as `InvalidData`) for [`BrokerError::from_io`].
pub(crate) fn io_err<E>(e: E) -> io::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let any: &(dyn std::error::Error + 'static) = &e;
    let corrupted = matches!(
        any.downcast_ref::<StorageError>(),
        Some(StorageError::Corrupted { .. } | StorageError::Malformed { .. })
    ) || any.is::<CodecError>();
    let kind = if corrupted {
        io::ErrorKind::InvalidData
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, e)
}

/// An `io::Error` for stored bytes that do not decode as `what`: corruption, which
/// [`BrokerError::from_io`] keeps apart from I/O.
pub(crate) fn corrupt(what: &'static str, e: impl std::fmt::Display) -> io::Error {
    io_err(CodecError::new(what, e.to_string()))
}

/// An `io::Error` for a broken invariant or a failed task, with its message.
pub(crate) fn io_other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Locks a mutex, taking it over if a panicking thread poisoned it: what it guards stays
/// consistent (every critical section leaves it whole), and a node must not stop on it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_survives_the_trip_through_io_error() {
        let corrupted = StorageError::Corrupted {
            path: "x.log".into(),
            position: 7,
            reason: "crc".into(),
        };
        let io = io_err(corrupted);
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        assert!(matches!(
            BrokerError::from_io(io),
            BrokerError::Corrupted(StorageError::Corrupted { position: 7, .. })
        ));
        let failed = StorageError::Poisoned;
        assert!(matches!(
            BrokerError::from_io(io_err(failed)),
            BrokerError::Io(StorageError::Poisoned)
        ));
        assert!(matches!(
            BrokerError::from_io(io_err(CodecError::new("entry", "short"))),
            BrokerError::Corrupted(StorageError::Malformed { what: "entry", .. })
        ));
    }
}
