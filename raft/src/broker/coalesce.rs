//! Coalescing produce requests on the leader: while [`MAX_IN_FLIGHT`] produce entries are
//! already on their way through Raft, further requests for the same topic join one pending
//! batch, proposed as one entry (one append, one replication, one apply) when a place frees.
//! Each request gets its own messages' placements back. A request that finds a free place
//! is proposed at once, so a lone producer waits for nothing.
//!
//! Must never: merge requests of different topics, interleave one request's messages with
//! another's (each request is a contiguous run of slots, in its own order), or leave a
//! joined request waiting on a proposer that is gone (the proposal runs in its own task, so
//! a client that disconnects cancels nobody else's write).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, oneshot};

use super::Broker;
use crate::error::{BrokerError, lock};
use crate::state::{Applied, Command};

/// Produce entries in flight (proposed, not yet applied) before requests start to share
/// entries. A few keep replication and apply pipelined; more would only add entries.
pub(crate) const MAX_IN_FLIGHT: usize = 4;

/// Largest joined batch: a request joins a pending one only if the sum stays below this.
/// Bounds how much one entry adds to its requests' latency and to a follower's read.
pub(crate) const MAX_JOINED_BYTES: usize = 1 << 20;

/// What one request gets back: its run of the entry's slots.
pub(super) struct Share {
    /// The entry's log index.
    pub(super) log_index: u64,
    /// The slot of the request's first message in the entry.
    pub(super) first_slot: u32,
    /// (queue, offset) of each of the request's messages, in its order.
    pub(super) placed: Vec<(u32, Option<u64>)>,
    /// `(index in the request, log index, slot)`: retried idempotency keys, and where
    /// their first write is.
    pub(super) originals: Vec<(u32, u64, u32)>,
}

type Outcome = Result<Share, BrokerError>;

/// An applied produce entry: log index, placements, retried idempotency keys.
type Produced = (u64, Vec<(u32, Option<u64>)>, Vec<(u32, u64, u32)>);

/// One request's share of a pending batch.
struct Part {
    /// Its messages, encoded as a batch of their own.
    batch: Vec<u8>,
    count: usize,
    reply: oneshot::Sender<Outcome>,
}

/// A batch still open to requests for its topic.
#[derive(Default)]
struct Pending {
    parts: Vec<Part>,
    bytes: usize,
}

/// The leader's pending batches, one per topic, and the places in the Raft pipeline.
pub(crate) struct Coalescer {
    /// Batches still open to requests; a batch leaves this map when its proposer takes it.
    open: Mutex<HashMap<String, Arc<Mutex<Pending>>>>,
    pipeline: Arc<Semaphore>,
    entries: AtomicU64,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer {
            open: Mutex::default(),
            pipeline: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            entries: AtomicU64::new(0),
        }
    }
}

impl Coalescer {
    /// Produce entries proposed so far (requests that shared an entry count once).
    pub(crate) fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }
}

impl Broker {
    /// Proposes `batch` (an encoded batch of `topic`'s messages, `count` of them), alone or
    /// joined with other requests' batches for the same topic, and answers this request's
    /// placements.
    pub(super) async fn produce_coalesced(
        &self,
        topic: &str,
        batch: Vec<u8>,
        count: usize,
    ) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let part = Part {
            batch,
            count,
            reply,
        };
        let c = &self.inner.coalescer;
        let started = {
            let mut open = lock(&c.open);
            let joinable = open
                .get(topic)
                .filter(|p| lock(p).bytes + part.batch.len() <= MAX_JOINED_BYTES)
                .cloned();
            match joinable {
                Some(pending) => {
                    let mut p = lock(&pending);
                    p.bytes += part.batch.len();
                    p.parts.push(part);
                    None
                }
                None => {
                    // A full pending batch stays with its proposer; this one takes its place.
                    let pending = Arc::new(Mutex::new(Pending {
                        bytes: part.batch.len(),
                        parts: vec![part],
                    }));
                    open.insert(topic.to_owned(), pending.clone());
                    Some(pending)
                }
            }
        };
        if let Some(pending) = started {
            tokio::spawn(self.clone().propose_pending(topic.to_owned(), pending));
        }
        answer.await.unwrap_or_else(|_| {
            Err(BrokerError::OutcomeUnknown(
                "the produce proposal stopped before it was answered".into(),
            ))
        })
    }

    async fn propose_pending(self, topic: String, pending: Arc<Mutex<Pending>>) {
        let c = &self.inner.coalescer;
        let Ok(_place) = c.pipeline.clone().acquire_owned().await else {
            return; // never closed; dropping the replies answers OUTCOME_UNKNOWN
        };
        {
            let mut open = lock(&c.open);
            if open.get(&topic).is_some_and(|p| Arc::ptr_eq(p, &pending)) {
                open.remove(&topic);
            }
        }
        // Out of the map: nobody joins any more.
        let parts = std::mem::take(&mut lock(&pending).parts);
        let (batches, replies): (Vec<_>, Vec<_>) = parts
            .into_iter()
            .map(|p| (p.batch, (p.count, p.reply)))
            .unzip();
        c.entries.fetch_add(1, Ordering::Relaxed);
        let total = replies.iter().map(|(n, _)| n).sum();
        let outcome = self.propose_batches(batches, total).await;
        let mut slot = 0;
        for (count, reply) in replies {
            let mine = match &outcome {
                Ok((log_index, placed, originals)) => Ok(Share {
                    log_index: *log_index,
                    first_slot: slot as u32,
                    placed: placed[slot..slot + count].to_vec(),
                    originals: originals
                        .iter()
                        .filter(|o| (slot..slot + count).contains(&(o.0 as usize)))
                        .map(|&(s, l, f)| (s - slot as u32, l, f))
                        .collect(),
                }),
                Err(e) => Err(shared(e)),
            };
            slot += count;
            let _ = reply.send(mine);
        }
    }

    /// Proposes the batches as one entry and checks it placed all `total` messages.
    async fn propose_batches(
        &self,
        mut batches: Vec<Vec<u8>>,
        total: usize,
    ) -> Result<Produced, BrokerError> {
        let batch = if batches.len() == 1 {
            batches.pop().unwrap_or_default()
        } else {
            let parts: Vec<&[u8]> = batches.iter().map(Vec::as_slice).collect();
            raftmq_storage::message::concat_batches(&parts)
                .map_err(|e| BrokerError::Internal(format!("joining produce batches: {e}")))?
        };
        let cmd = Command::Produce {
            create_topic: None,
            batch: batch.into(),
        };
        match self.propose_checked(cmd).await? {
            Applied::Produced {
                log_index,
                placed,
                originals,
            } if placed.len() == total => Ok((log_index, placed, originals)),
            Applied::Produced { placed, .. } => Err(BrokerError::Internal(format!(
                "produce of {total} messages applied {} placements",
                placed.len()
            ))),
            other => Err(BrokerError::Internal(format!(
                "produce applied as {other:?}"
            ))),
        }
    }
}

/// The same failure for every request of a shared entry.
fn shared(e: &BrokerError) -> BrokerError {
    match e {
        BrokerError::Rejected { code, message } => BrokerError::Rejected {
            code: *code,
            message: message.clone(),
        },
        BrokerError::OffsetOutOfRange { offset, min_offset } => BrokerError::OffsetOutOfRange {
            offset: *offset,
            min_offset: *min_offset,
        },
        BrokerError::NotLeader { leader } => BrokerError::NotLeader {
            leader: leader.clone(),
        },
        BrokerError::DiskFull { free, floor } => BrokerError::DiskFull {
            free: *free,
            floor: *floor,
        },
        BrokerError::Unavailable(m) => BrokerError::Unavailable(m.clone()),
        BrokerError::OutcomeUnknown(m) => BrokerError::OutcomeUnknown(m.clone()),
        BrokerError::Corrupted(_) | BrokerError::Io(_) | BrokerError::Internal(_) => {
            BrokerError::Internal(e.to_string())
        }
    }
}
