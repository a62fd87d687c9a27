//! Integration tests of raftmq-raft.

mod apply;
mod groups;
mod schedule;
mod suite;
mod support;
mod txn;
