//! Integration tests of raftmq-storage: one binary, one module per area.

mod commitlog;
mod crash;
mod fuzz;
mod index_store;
mod model;
