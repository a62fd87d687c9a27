//! cargo-fuzz target `snapshot`: arbitrary bytes into `raftmq_raft::fuzz::snapshot` (the same function the test suite's
//! property tests run on stable).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raftmq_raft::fuzz::snapshot(data));
