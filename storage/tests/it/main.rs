//! Integration tests of raftmq-storage: one binary, one module per area.

mod commitlog;
mod crash;
mod index_store;
mod model;
