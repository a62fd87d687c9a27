//! Integration tests of raftmq-raft.

mod suite;
