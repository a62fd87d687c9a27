//! Transactions: one record per transactional produce entry (opaque bytes the Raft layer
//! encodes) and a time-ordered index of when each undecided one is next checked back.
//!
//! ```text
//! X log_index u64 BE                     → the record
//! C next_check_ms u64 BE | log_index u64 BE → (empty)
//! ```
//! A transaction's log entry is pinned while it is open (see `timers`), so the retention
//! point stays below every open one; records of decided transactions below the point go
//! (their messages are gone or pinned on their own).
//!
//! Must never: hold a message body (records carry positions and check settings only).

use super::keys::be_u64;
use super::{CF_TXNS, IndexBatch, IndexStore};
use crate::error::Result;

fn record_key(log_index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'X';
    k[1..].copy_from_slice(&log_index.to_be_bytes());
    k
}

fn check_key(at_ms: u64, log_index: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b'C';
    k[1..9].copy_from_slice(&at_ms.to_be_bytes());
    k[9..].copy_from_slice(&log_index.to_be_bytes());
    k
}

impl IndexStore {
    /// The record of the transaction written at `log_index`.
    pub fn txn_get(&self, log_index: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_TXNS), record_key(log_index))?)
    }

    /// Up to `max` `(check time, log index)` of transactions due for a check at `now_ms`,
    /// earliest first.
    pub fn txn_checks_due(&self, now_ms: u64, max: usize) -> Result<Vec<(u64, u64)>> {
        let upper = check_key(now_ms.saturating_add(1), 0).to_vec();
        let mut out = Vec::new();
        for kv in self.scan_range(CF_TXNS, b"C".to_vec(), upper).take(max) {
            let (k, _) = kv?;
            out.push((be_u64(&k, 1)?, be_u64(&k, 9)?));
        }
        Ok(out)
    }
}

impl IndexBatch<'_> {
    /// Writes a transaction's record.
    pub fn put_txn(&mut self, log_index: u64, record: &[u8]) {
        self.wb
            .put_cf(self.store.cf(CF_TXNS), record_key(log_index), record);
    }

    /// Schedules a transaction's next check.
    pub fn put_txn_check(&mut self, at_ms: u64, log_index: u64) {
        self.wb
            .put_cf(self.store.cf(CF_TXNS), check_key(at_ms, log_index), []);
    }

    /// Cancels a scheduled check.
    pub fn delete_txn_check(&mut self, at_ms: u64, log_index: u64) {
        self.wb
            .delete_cf(self.store.cf(CF_TXNS), check_key(at_ms, log_index));
    }

    /// Drops the records of transactions written below `log_index` (call only with a
    /// retention point: no open transaction is below it).
    pub fn delete_txns_before(&mut self, log_index: u64) {
        self.wb
            .delete_range_cf(self.store.cf(CF_TXNS), record_key(0), record_key(log_index));
    }
}

#[cfg(test)]
mod tests {
    use crate::{Durability, IndexStore, IndexStoreOptions};

    #[test]
    fn records_and_checks_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = IndexStore::open(dir.path(), &IndexStoreOptions::default()).unwrap();
        let mut b = store.batch();
        b.put_txn(7, b"seven");
        b.put_txn(9, b"nine");
        b.put_txn_check(500, 7);
        b.put_txn_check(300, 9);
        store.write(b, Durability::Rebuildable).unwrap();
        assert_eq!(store.txn_get(7).unwrap().as_deref(), Some(&b"seven"[..]));
        assert_eq!(store.txn_checks_due(299, 10).unwrap(), vec![]);
        assert_eq!(
            store.txn_checks_due(500, 10).unwrap(),
            vec![(300, 9), (500, 7)]
        );
        let mut b = store.batch();
        b.delete_txn_check(300, 9);
        b.delete_txns_before(8);
        store.write(b, Durability::Rebuildable).unwrap();
        assert_eq!(store.txn_checks_due(1000, 10).unwrap(), vec![(500, 7)]);
        assert_eq!(store.txn_get(7).unwrap(), None);
        assert!(store.txn_get(9).unwrap().is_some());
    }
}
