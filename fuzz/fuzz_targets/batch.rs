//! cargo-fuzz target `batch`: arbitrary bytes into `raftmq_storage::fuzz::batch` (the same function the test suite's
//! property tests run on stable).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raftmq_storage::fuzz::batch(data));
