//! openraft's own storage conformance suite, run against our log store (on the CommitLog)
//! and state machine (on RocksDB).

use std::sync::Mutex;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use raftmq_raft::{FlushPolicy, LogStore, StateMachine, TypeConfig};
use raftmq_storage::CommitLogOptions;

/// Hands out fresh stores in temp dirs that live as long as the builder.
#[derive(Default)]
struct Builder {
    dirs: Mutex<Vec<tempfile::TempDir>>,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine> for Builder {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(
            &dir.path().join("log"),
            CommitLogOptions { segment_size: 4096 },
            FlushPolicy::Sync,
        )
        .expect("open log store");
        let sm =
            StateMachine::open(&dir.path().join("state"), log.clone()).expect("open state machine");
        self.dirs.lock().unwrap().push(dir);
        Ok(((), log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(Builder::default()).await
}
