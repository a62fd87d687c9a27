//! Topic admin as the applier does it: creating or updating a topic (its queues only grow;
//! a part of a topic spread over broker groups keeps its place in the queue space) and
//! deleting one with its indexes.
//!
//! Must never: let a topic's queue count or a part's queue space shrink, or move a part.

use raftmq_storage::{IndexBatch, SpreadPart, TopicMeta};

use super::{Queues, R};
use crate::state::applied::{Applied, RejectCode, reject};
use crate::state::command::TopicSpec;

impl Queues {
    /// Creates or updates a topic; its queues may only grow.
    pub fn put_topic(
        &mut self,
        batch: &mut IndexBatch<'_>,
        name: &str,
        spec: TopicSpec,
    ) -> R<Applied> {
        if spec.queues == 0 {
            return Ok(reject(
                RejectCode::InvalidArgument,
                "queues must be at least 1",
            ));
        }
        if let Some(p) = spec.part
            && !(p.first_queue < spec.queues && spec.queues <= p.queue_space)
        {
            return Ok(reject(
                RejectCode::InvalidArgument,
                format!(
                    "first_queue ({}), queues ({}) and queue_space ({}) must be in that order, queues above first_queue",
                    p.first_queue, spec.queues, p.queue_space
                ),
            ));
        }
        if let Some(old) = self.topic(name)? {
            if spec.queues < old.queues {
                return Ok(reject(
                    RejectCode::Conflict,
                    format!(
                        "queues may only grow: topic {name} has {} queues, asked for {}",
                        old.queues, spec.queues
                    ),
                ));
            }
            // A part never moves in the queue space and its space never shrinks; a whole
            // topic may become the first part of a spread one (grown onto other broker
            // groups), nothing else.
            let first = |p: Option<SpreadPart>| p.map(|p| p.first_queue);
            let becomes_first_part = old.part.is_none() && first(spec.part) == Some(0);
            if first(spec.part) != first(old.part) && !becomes_first_part {
                return Ok(reject(
                    RejectCode::Conflict,
                    format!(
                        "topic {name} holds queues from {} on this broker group; that cannot change",
                        first(old.part).unwrap_or(0)
                    ),
                ));
            }
            if let (Some(old_p), Some(p)) = (old.part, spec.part)
                && p.queue_space < old_p.queue_space
            {
                return Ok(reject(
                    RejectCode::Conflict,
                    format!(
                        "queue_space may only grow: topic {name} spans {} queues, asked for {}",
                        old_p.queue_space, p.queue_space
                    ),
                ));
            }
        }
        let meta = TopicMeta::from(spec);
        batch.put_topic(name, &meta)?;
        self.topics.insert(name.to_owned(), Some(meta));
        self.topics_changed = true;
        Ok(Applied::Done)
    }

    /// Deletes a topic's settings and indexes; returns its settings, `None` if it did not
    /// exist.
    pub fn delete_topic(&mut self, batch: &mut IndexBatch<'_>, name: &str) -> R<Option<TopicMeta>> {
        let Some(meta) = self.topic(name)? else {
            return Ok(None);
        };
        batch.delete_topic(name)?;
        self.forget_timers(batch, name)?;
        self.topics.insert(name.to_owned(), None);
        self.topics_changed = true;
        self.next_offsets.remove(name);
        Ok(Some(meta))
    }
}
