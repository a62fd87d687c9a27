//! Integration tests of raftmq-raft.

mod apply;
mod groups;
mod suite;
