//! raftmq-storage: the CommitLog and its RocksDB indexes.
//!
//! - [`CommitLog`]: the Raft log *is* the CommitLog (DLedger-style). Segmented, append-only,
//!   CRC32C-framed records; group commit (many appends, one `fdatasync`); truncate a suffix;
//!   purge a prefix by whole segments; crash recovery that cuts a torn tail and reports it.
//! - [`IndexStore`]: RocksDB column families for the ConsumeQueue, key and time indexes,
//!   consumer offsets, topic metadata and state-machine metadata, written one `WriteBatch`
//!   per applied batch.
//! - [`message`]: the encoding of a batch of messages, written once, read without copying
//!   bodies.
//! - [`DurableCell`]: small values (Raft vote, purge point) replaced atomically and durably.
//! - [`vfs`]: the file-system seam; [`vfs::MemFs`] keeps written and synced bytes apart for
//!   deterministic crash tests.
//!
//! The API is synchronous and blocking. Callers on an async runtime run it on dedicated
//! threads or `spawn_blocking`.
//!
//! Must never: depend on tokio, openraft, serde_json or axum; store a message body anywhere
//! but the CommitLog; acknowledge durability it has not fsynced.

pub mod commitlog;
mod durable_cell;
mod error;
#[doc(hidden)]
pub mod fuzz;
mod index_store;
pub mod message;
pub mod vfs;

pub use commitlog::{
    CommitLog, CommitLogOptions, LogPos, LogRecord, MAX_PAYLOAD, RecordRef, RecoveryReport,
    TruncatedTail,
};
pub use durable_cell::DurableCell;
pub use error::{Result, StorageError};
pub use index_store::{
    CqEntry, DEFAULT_DEDUP_WINDOW_MS, DedupHit, Durability, IndexBatch, IndexHit, IndexStore,
    IndexStoreOptions, MAX_IDEMPOTENCY_KEY_LEN, MAX_KEY_LEN, MAX_NAME_LEN, SpreadPart, Timer,
    TopicMeta, prefix_end,
};
