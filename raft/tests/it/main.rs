//! Integration tests of raftmq-raft.

mod apply;
mod suite;
