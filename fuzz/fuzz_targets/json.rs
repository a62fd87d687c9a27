//! cargo-fuzz target `json`: arbitrary bytes into `raftmq_http_api::fuzz::json_bodies` (the same function the test suite's
//! property tests run on stable).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raftmq_http_api::fuzz::json_bodies(data));
