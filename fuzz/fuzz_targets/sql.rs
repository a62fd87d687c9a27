//! cargo-fuzz target `sql`: arbitrary bytes into `raftmq_raft::fuzz::sql` (the same function the test suite's
//! property tests run on stable).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raftmq_raft::fuzz::sql(data));
