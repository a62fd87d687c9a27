//! Entry points for fuzzing the decoders of this crate that read bytes from outside (the
//! message batch, as a peer ships it or a disk returns it). Used by the cargo-fuzz target
//! in `fuzz/` and by the property tests; each must return without panicking, whatever it
//! is given.
//!
//! Must never: be called by the storage engine itself.

use crate::message::{BatchEncoder, BatchView, MessageIn};

/// Everything a reader does with a batch.
pub fn batch(data: &[u8]) {
    if let Ok(view) = BatchView::parse(data) {
        for m in view.iter() {
            let Ok(m) = m else { break };
            for _ in m.properties.iter() {}
        }
        for slot in 0..view.count.min(64) + 1 {
            let _ = view.get(slot);
        }
    }
}

/// A valid batch with every optional field, the seed the fuzzers mutate.
pub fn seed_batch() -> Vec<u8> {
    let mut buf = Vec::new();
    let mut enc = BatchEncoder::new(&mut buf, "topic", 42).expect("valid topic");
    for i in 0..3u32 {
        enc.push(
            &MessageIn {
                queue: i,
                born_ms: 7,
                deliver_at_ms: (i == 1).then_some(99),
                key: Some("key"),
                tag: (i != 2).then_some("tag"),
                idempotency_key: (i == 2).then_some("once"),
                binary: i == 0,
                body: b"body bytes",
            },
            [("p", "v"), ("q", "w")],
        )
        .expect("valid message");
    }
    enc.finish();
    buf
}
