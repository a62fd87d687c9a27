//! What the apply-level tests share: a store with an applier over it, and applying one
//! command in a batch of its own.

use std::path::Path;
use std::sync::Arc;

use raftmq_raft::state::{Applied, Applier, Command};
use raftmq_storage::{Durability, IndexStore, IndexStoreOptions};

/// An IndexStore at `dir` and a fresh applier over it.
pub(crate) fn open(dir: &Path) -> (Arc<IndexStore>, Applier) {
    let store = Arc::new(IndexStore::open(dir, &IndexStoreOptions::default()).unwrap());
    let a = Applier::new(store.clone());
    (store, a)
}

/// Applies `cmd` at `index` and writes its batch.
pub(crate) fn apply(a: &mut Applier, index: u64, cmd: Command) -> Applied {
    let store = a.store().clone();
    let mut b = store.batch();
    let r = a.apply(&mut b, index, &cmd).unwrap();
    store.write(b, Durability::Wal).unwrap();
    a.finish_batch();
    r
}
