//! IndexStore on a real RocksDB in a temp dir.

use raftmq_storage::{
    CqEntry, Durability, IndexHit, IndexStore, IndexStoreOptions, StorageError, TopicMeta,
};

fn entry(log_index: u64, slot: u32) -> CqEntry {
    CqEntry {
        log_index,
        slot,
        size: 100 + slot,
        tag_hash: slot * 3,
        store_ms: 1_000 + log_index,
    }
}

fn open(dir: &std::path::Path) -> IndexStore {
    IndexStore::open(dir, &IndexStoreOptions::default()).unwrap()
}

const META: TopicMeta = TopicMeta {
    queues: 8,
    fifo: false,
    retention_ms: 1,
    dedup_window_ms: 1,
    part: None,
};

/// Creates `topic` unless it exists (index entries are only written for existing topics).
fn create(store: &IndexStore, topic: &str) {
    if store.topic_get(topic).unwrap().is_none() {
        let mut b = store.batch();
        b.put_topic(topic, &META).unwrap();
        store.write(b, Durability::Wal).unwrap();
    }
}

/// Writes `n` messages of `topic` queue `queue` as one applied batch per message.
fn fill(store: &IndexStore, topic: &str, queue: u32, n: u64) {
    create(store, topic);
    for offset in 0..n {
        let mut b = store.batch();
        let e = entry(offset + 10, queue);
        b.put_cq(topic, queue, offset, &e).unwrap();
        let hit = IndexHit {
            log_index: e.log_index,
            slot: e.slot,
            queue,
            offset,
            store_ms: e.store_ms,
        };
        b.put_key(topic, &format!("k{}", offset % 3), &hit).unwrap();
        b.put_time_run(topic, e.store_ms, e.log_index, queue, offset, 1)
            .unwrap();
        b.put_meta("last_applied", &e.log_index.to_le_bytes());
        store.write(b, Durability::Wal).unwrap();
    }
}

#[test]
fn consume_queue_ranges_and_bounds_stay_inside_their_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    fill(&store, "a", 0, 5);
    fill(&store, "a", 1, 300);
    fill(&store, "ab", 0, 7);
    assert_eq!(store.cq_bounds("a", 0).unwrap(), Some((0, 5)));
    assert_eq!(store.cq_bounds("a", 1).unwrap(), Some((0, 300)));
    assert_eq!(store.cq_bounds("ab", 0).unwrap(), Some((0, 7)));
    assert_eq!(store.cq_bounds("a", 2).unwrap(), None);
    assert_eq!(store.cq_bounds("b", 0).unwrap(), None);
    assert_eq!(store.cq_get("a", 1, 256).unwrap(), Some(entry(266, 1)));
    let r = store.cq_range("a", 1, 250, 10).unwrap();
    assert_eq!(
        r.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        (250..260).collect::<Vec<_>>()
    );
    assert_eq!(store.cq_range("a", 0, 3, 100).unwrap().len(), 2);
    assert!(store.cq_range("a", 0, 5, 100).unwrap().is_empty());

    let mut b = store.batch();
    b.delete_cq_before("a", 1, 100).unwrap();
    store.write(b, Durability::Synced).unwrap();
    assert_eq!(store.cq_bounds("a", 1).unwrap(), Some((100, 300)));
    assert_eq!(store.cq_bounds("a", 0).unwrap(), Some((0, 5)));
}

#[test]
fn key_and_time_indexes_find_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    fill(&store, "t", 0, 10);
    fill(&store, "t2", 0, 10);
    let hits = store.key_lookup("t", "k1", 10).unwrap();
    assert_eq!(
        hits.iter().map(|h| h.offset).collect::<Vec<_>>(),
        [7, 4, 1],
        "newest first"
    );
    assert_eq!(store.key_lookup("t", "k1", 2).unwrap().len(), 2);
    assert!(store.key_lookup("t", "k", 10).unwrap().is_empty());
    // store_ms = 1000 + log_index = 1010 + offset.
    let in_time = store.time_range("t", 1012, 1015, 100).unwrap();
    assert_eq!(
        in_time.iter().map(|h| h.offset).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert_eq!(store.time_range("t", 0, u64::MAX, 4).unwrap().len(), 4);
}

#[test]
fn a_time_run_stands_for_a_batch_s_messages_in_one_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    create(&store, "t");
    let mut b = store.batch();
    for offset in 0..5 {
        b.put_cq("t", 2, offset, &entry(7, offset as u32)).unwrap();
    }
    b.put_time_run("t", 500, 7, 2, 0, 5).unwrap();
    store.write(b, Durability::Wal).unwrap();
    let hits = store.time_range("t", 500, 501, 100).unwrap();
    assert_eq!(
        hits.iter()
            .map(|h| (h.queue, h.offset, h.slot))
            .collect::<Vec<_>>(),
        [(2, 0, 0), (2, 1, 1), (2, 2, 2), (2, 3, 3), (2, 4, 4)]
    );
    assert_eq!(store.time_range("t", 500, 501, 3).unwrap().len(), 3);
    assert!(store.time_range("t", 501, 600, 100).unwrap().is_empty());
    // Retention removed the run's first entries: the rest is still found.
    let mut b = store.batch();
    b.delete_cq_before("t", 2, 3).unwrap();
    store.write(b, Durability::Wal).unwrap();
    assert_eq!(store.time_range("t", 0, u64::MAX, 100).unwrap().len(), 2);
}

#[test]
fn offsets_topics_and_meta_round_trip_and_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = open(tmp.path());
        let mut b = store.batch();
        b.put_offset("g1", "t", 0, 10).unwrap();
        b.put_offset("g1", "t", 2, 7).unwrap();
        b.put_offset("g1", "t2", 0, 99).unwrap();
        b.put_offset("g2", "t", 0, 1).unwrap();
        let meta = TopicMeta {
            queues: 8,
            fifo: true,
            retention_ms: 3_600_000,
            dedup_window_ms: 60_000,
            part: None,
        };
        b.put_topic("t", &meta).unwrap();
        b.put_topic(
            "t2",
            &TopicMeta {
                fifo: false,
                ..meta
            },
        )
        .unwrap();
        b.put_meta("last_applied", b"42");
        // Two offsets more than the puts above: each new topic moves the id counter.
        assert_eq!(b.len(), 9);
        // The WAL is off: a clean close must still persist it.
        store.write(b, Durability::Rebuildable).unwrap();
    }
    let store = open(tmp.path());
    assert_eq!(store.offsets_of("g1", "t").unwrap(), [(0, 10), (2, 7)]);
    assert_eq!(store.offset_get("g2", "t", 0).unwrap(), Some(1));
    assert_eq!(store.offset_get("g2", "t", 1).unwrap(), None);
    let topics = store.topics().unwrap();
    assert_eq!(
        topics
            .iter()
            .map(|(n, m)| (n.as_str(), m.fifo, m.dedup_window_ms))
            .collect::<Vec<_>>(),
        [("t", true, 60_000), ("t2", false, 60_000)]
    );
    assert_eq!(
        store.meta_get("last_applied").unwrap().as_deref(),
        Some(&b"42"[..])
    );
}

#[test]
fn delete_topic_removes_its_indexes_only() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    fill(&store, "t", 0, 5);
    fill(&store, "t1", 0, 5);
    let mut b = store.batch();
    // Replacing a topic's settings keeps what it holds.
    b.put_topic("t", &TopicMeta { queues: 1, ..META }).unwrap();
    store.write(b, Durability::Wal).unwrap();
    assert_eq!(store.cq_bounds("t", 0).unwrap(), Some((0, 5)));
    let mut b = store.batch();
    b.delete_topic("t").unwrap();
    store.write(b, Durability::Wal).unwrap();
    assert_eq!(store.topic_get("t").unwrap(), None);
    assert_eq!(store.cq_bounds("t", 0).unwrap(), None);
    assert!(store.key_lookup("t", "k0", 10).unwrap().is_empty());
    assert!(store.time_range("t", 0, u64::MAX, 10).unwrap().is_empty());
    assert_eq!(store.cq_bounds("t1", 0).unwrap(), Some((0, 5)));
    let mut b = store.batch();
    assert!(
        matches!(
            b.put_cq("t", 0, 0, &entry(1, 0)),
            Err(StorageError::InvalidArgument(_))
        ),
        "a deleted topic takes no entries"
    );
    // Created again, in one batch with its first message: it starts empty, and the
    // compaction of the deleted one's range leaves it and its neighbour alone.
    b.put_topic("t", &META).unwrap();
    b.put_cq("t", 0, 0, &entry(99, 0)).unwrap();
    b.put_queue_next("t", 0, 1).unwrap();
    store.write(b, Durability::Wal).unwrap();
    store.compact_deleted_topics().unwrap();
    assert_eq!(store.cq_bounds("t", 0).unwrap(), Some((0, 1)));
    assert_eq!(store.cq_get("t", 0, 0).unwrap(), Some(entry(99, 0)));
    assert_eq!(store.cq_bounds("t1", 0).unwrap(), Some((0, 5)));
}

#[test]
fn a_dropped_batch_gives_no_topic_id() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let mut b = store.batch();
    b.put_topic("gone", &META).unwrap();
    b.put_cq("gone", 0, 0, &entry(1, 0)).unwrap();
    drop(b);
    assert_eq!(store.cq_bounds("gone", 0).unwrap(), None);
    fill(&store, "kept", 0, 3);
    drop(store);
    let store = open(tmp.path());
    assert_eq!(store.cq_bounds("kept", 0).unwrap(), Some((0, 3)));
    assert_eq!(store.topic_get("gone").unwrap(), None);
}

#[test]
fn checkpoint_is_a_consistent_openable_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&tmp.path().join("db"));
    fill(&store, "t", 3, 50);
    let copy = tmp.path().join("checkpoint");
    store.checkpoint(&copy).unwrap();
    fill(&store, "t", 3, 60);
    let restored = open(&copy);
    assert_eq!(restored.cq_bounds("t", 3).unwrap(), Some((0, 50)));
    assert_eq!(
        restored.meta_get("last_applied").unwrap().as_deref(),
        Some(&59u64.to_le_bytes()[..])
    );
}

#[test]
fn bad_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let mut b = store.batch();
    let long = "x".repeat(300);
    assert!(matches!(
        b.put_cq(&long, 0, 0, &entry(1, 0)),
        Err(StorageError::InvalidArgument(_))
    ));
    assert!(b.put_offset("", "t", 0, 1).is_err());
    assert!(b.is_empty());
}

#[test]
fn equal_contents_have_equal_digests_and_skipped_meta_keys_do_not_count() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (sa, sb) = (open(a.path()), open(b.path()));
    for s in [&sa, &sb] {
        fill(s, "t", 0, 3);
    }
    assert_eq!(sa.digest(&[]).unwrap(), sb.digest(&[]).unwrap());
    // One more message on one side: the digests differ.
    let mut batch = sb.batch();
    batch.put_cq("t", 0, 3, &entry(9, 0)).unwrap();
    sb.write(batch, Durability::Wal).unwrap();
    assert_ne!(sa.digest(&[]).unwrap(), sb.digest(&[]).unwrap());
    // A metadata value named as skipped does not change the digest.
    let before = sa.digest(&["local"]).unwrap();
    let mut batch = sa.batch();
    batch.put_meta("local", b"x");
    sa.write(batch, Durability::Wal).unwrap();
    assert_eq!(sa.digest(&["local"]).unwrap(), before);
    assert_ne!(sa.digest(&[]).unwrap(), before);
}

/// Readers read while apply writes (a broker's reads take no lock), so a queue's bounds
/// must come from one state of the store. Read apart, a produce that lands between the
/// first-entry scan and the next-offset read made an empty queue look like one whose
/// offset 0 was retained, `(1, 1)`, while it held offset 0 (raftmq-sim seed 112: a
/// group's floor 0 looked behind retention).
#[test]
fn a_queue_s_bounds_are_read_from_one_state_while_apply_writes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(open(tmp.path()));
    let topics: Vec<String> = (0..100).map(|t| format!("t{t}")).collect();
    for t in &topics {
        create(&store, t);
    }
    let queues: Vec<(String, u32)> = topics
        .iter()
        .flat_map(|t| (0..META.queues).map(move |q| (t.clone(), q)))
        .collect();
    // The reader says which queue it is polling; the writer fills that one, so each
    // queue's first message lands while the reader is reading its bounds.
    let polling = Arc::new(AtomicUsize::new(usize::MAX));
    let writer = {
        let (store, queues, polling) = (store.clone(), queues.clone(), polling.clone());
        std::thread::spawn(move || {
            for (i, (topic, queue)) in queues.iter().enumerate() {
                while polling.load(Ordering::Acquire) != i {
                    std::thread::yield_now();
                }
                let mut b = store.batch();
                b.put_cq(topic, *queue, 0, &entry(i as u64, 0)).unwrap();
                b.put_queue_next(topic, *queue, 1).unwrap();
                store.write(b, Durability::Wal).unwrap();
            }
        })
    };
    let mut torn = Vec::new();
    for (i, (topic, queue)) in queues.iter().enumerate() {
        polling.store(i, Ordering::Release);
        loop {
            match store.cq_bounds(topic, *queue).unwrap() {
                None => continue,
                Some((0, 1)) => break,
                Some(other) => {
                    torn.push((topic.clone(), *queue, other));
                    break;
                }
            }
        }
    }
    writer.join().unwrap();
    assert!(
        torn.is_empty(),
        "{} of {} queues showed bounds that never were, e.g. {:?}",
        torn.len(),
        queues.len(),
        torn.first()
    );
}
