//! raftmq-raft: the broker group's replication layer.
//!
//! It will hold the openraft type config, the log-store adapter over
//! [`raftmq_storage::CommitLog`](../raftmq_storage/index.html), the state machine that applies
//! committed entries into the RocksDB `IndexStore`, snapshots and the binary peer network.
//!
//! Must never: know about HTTP or axum, install a tracing subscriber, or purge the log on
//! openraft's snapshot policy (the log is the only copy of every message).
