//! raftmq-http-api: every axum router of a node (public `/v1` API and internal Raft RPC),
//! its DTOs and the single `ApiError` -> status mapping described in `shared/API.md`.
//!
//! Must never: touch storage files directly (it goes through `raftmq-raft`), or read the
//! process environment (configuration arrives from `raftmq-node`).
