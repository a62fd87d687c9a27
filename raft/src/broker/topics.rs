//! Topic admin: settings, queue bounds, create or update, delete; and the cache of topic
//! settings every produce and read looks up.
//!
//! Must never: let a topic's queue count shrink (apply refuses it too), or answer from a
//! cache read before the last applied change of topic settings.

use std::collections::HashMap;

use super::Broker;
use crate::error::{BrokerError, lock};
use crate::state::{Command, TopicSpec};

/// Most topic names the cache holds before it starts over (names that do not exist are
/// cached too, and clients choose names).
const TOPIC_CACHE_NAMES: usize = 65_536;

/// Topic settings as of one value of the state machine's topics version.
#[derive(Default)]
pub(super) struct TopicCache {
    version: u64,
    topics: HashMap<String, Option<TopicSpec>>,
}

impl Broker {
    /// One topic's settings (`None`: it does not exist). Served from memory while no
    /// change of topic settings was applied since it was read, so a produce pays no trip
    /// to RocksDB's thread pool for it.
    pub async fn topic(&self, name: &str) -> Result<Option<TopicSpec>, BrokerError> {
        let version = self.inner.sm.topics_version();
        {
            let mut cache = lock(&self.inner.topic_cache);
            if cache.version != version {
                cache.topics.clear();
                cache.version = version;
            }
            if let Some(spec) = cache.topics.get(name) {
                return Ok(*spec);
            }
        }
        let owned = name.to_owned();
        let spec = self
            .read(move |s, _| Ok(s.topic_get(&owned)?.map(TopicSpec::from)))
            .await?;
        let mut cache = lock(&self.inner.topic_cache);
        // Read at `version` or later: it is good for `version` only if nothing moved since.
        if cache.version == version {
            if cache.topics.len() >= TOPIC_CACHE_NAMES {
                cache.topics.clear();
            }
            cache.topics.insert(name.to_owned(), spec);
        }
        Ok(spec)
    }

    /// Every topic.
    pub async fn topics(&self) -> Result<Vec<(String, TopicSpec)>, BrokerError> {
        self.read(|s, _| {
            Ok(s.topics()?
                .into_iter()
                .map(|(n, m)| (n, TopicSpec::from(m)))
                .collect())
        })
        .await
    }

    /// `(min, max)` offsets of each of a topic's queues in `queues`.
    pub async fn queue_bounds(
        &self,
        topic: &str,
        queues: std::ops::Range<u32>,
    ) -> Result<Vec<(u64, u64)>, BrokerError> {
        let topic = topic.to_owned();
        self.read(move |s, _| {
            queues
                .map(|q| Ok(s.cq_bounds(&topic, q)?.unwrap_or((0, 0))))
                .collect()
        })
        .await
    }

    /// Creates a topic or updates its settings (queues may only grow).
    pub async fn put_topic(&self, name: &str, spec: TopicSpec) -> Result<(), BrokerError> {
        self.propose_checked(Command::PutTopic {
            name: name.to_owned(),
            spec,
        })
        .await?;
        Ok(())
    }

    /// Deletes a topic, its indexes and every consumer group's progress in it.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        self.propose_checked(Command::DeleteTopic {
            name: name.to_owned(),
        })
        .await?;
        Ok(())
    }
}
