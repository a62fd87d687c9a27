//! The message batch decoder against arbitrary and mutated bytes: an error, never a panic,
//! never an allocation sized by an unchecked length (`raftmq_storage::fuzz::batch`, which
//! the `batch` cargo-fuzz target runs).

use proptest::prelude::*;
use raftmq_storage::fuzz::{batch, seed_batch as valid};
use raftmq_storage::message::BatchView;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        batch(&data);
    }

    #[test]
    fn mutated_batches_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let mut data = valid();
        for (at, byte) in flips {
            let n = data.len();
            data[at % n] = byte;
        }
        data.truncate(cut % (data.len() + 1));
        batch(&data);
    }
}

#[test]
fn the_seed_decodes_whole() {
    let data = valid();
    let view = BatchView::parse(&data).unwrap();
    assert_eq!(view.iter().filter(|m| m.is_ok()).count(), 3);
}

/// Writes the seed corpus of the cargo-fuzz target (`fuzz/seeds/batch`); run by hand with
/// `RAFTMQ_FUZZ_CORPUS=fuzz/seeds cargo test -p raftmq-storage --test it -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_corpus() {
    let root = std::path::PathBuf::from(std::env::var("RAFTMQ_FUZZ_CORPUS").unwrap());
    std::fs::create_dir_all(root.join("batch")).unwrap();
    std::fs::write(root.join("batch/seed-0"), valid()).unwrap();
}
