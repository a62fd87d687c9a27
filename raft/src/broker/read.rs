//! Reads from the local applied state, on the blocking pool: a queue by offset, a message by
//! id, messages by key or by store time.
//!
//! Must never: return a message that is not committed (everything indexed was applied), or
//! read on the async runtime.

use super::{Broker, MessageId};
use crate::error::BrokerError;
use crate::state::read::{self, QueueQuery, QueueRead, StoredMessage};

impl Broker {
    /// Reads a queue.
    pub async fn read_queue(&self, query: QueueQuery) -> Result<QueueRead, BrokerError> {
        self.blocking(move |s, log| read::read_queue(s, &log.read_log(), &query))
            .await?
    }

    /// Reads one message by id (no scan: the id names the log entry and slot). `None` when
    /// no such message is retained here (or the id names another broker group).
    pub async fn read_message(&self, id: &MessageId) -> Result<Option<StoredMessage>, BrokerError> {
        if id.broker_group != self.broker_group() {
            return Ok(None);
        }
        let (log_index, slot) = (id.log_index, id.slot);
        self.blocking(move |s, log| read::read_message(s, &log.read_log(), log_index, slot))
            .await?
    }

    /// Messages with `key`, newest first, through the key index.
    pub async fn find_by_key(
        &self,
        topic: &str,
        key: &str,
        max: usize,
    ) -> Result<Vec<StoredMessage>, BrokerError> {
        let (topic, key) = (topic.to_owned(), key.to_owned());
        self.blocking(move |s, log| {
            let hits = s.key_lookup(&topic, &key, max)?;
            read::load_hits(&log.read_log(), &hits)
        })
        .await?
    }

    /// Messages stored in `[from_ms, to_ms)`, oldest first, through the time index.
    pub async fn find_by_time(
        &self,
        topic: &str,
        from_ms: u64,
        to_ms: u64,
        max: usize,
    ) -> Result<Vec<StoredMessage>, BrokerError> {
        let topic = topic.to_owned();
        self.blocking(move |s, log| {
            let hits = s.time_range(&topic, from_ms, to_ms, max)?;
            read::load_hits(&log.read_log(), &hits)
        })
        .await?
    }
}
