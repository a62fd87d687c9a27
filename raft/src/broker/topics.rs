//! Topic admin: settings, queue bounds, create or update, delete.
//!
//! Must never: let a topic's queue count shrink (apply refuses it too).

use super::Broker;
use crate::error::BrokerError;
use crate::state::{Command, TopicSpec};

impl Broker {
    /// One topic's settings (`None`: it does not exist).
    pub async fn topic(&self, name: &str) -> Result<Option<TopicSpec>, BrokerError> {
        let name = name.to_owned();
        self.read(move |s, _| Ok(s.topic_get(&name)?.map(TopicSpec::from)))
            .await
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

    /// `(min, max)` offsets of each of a topic's first `queues` queues.
    pub async fn queue_bounds(
        &self,
        topic: &str,
        queues: u32,
    ) -> Result<Vec<(u64, u64)>, BrokerError> {
        let topic = topic.to_owned();
        self.read(move |s, _| {
            (0..queues)
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
