//! cargo-fuzz target `entry`: arbitrary bytes into `raftmq_raft::fuzz::entry` (the same function the test suite's
//! property tests run on stable).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raftmq_raft::fuzz::entry(data));
