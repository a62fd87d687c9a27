//! Message ids: `{broker_group}.{log_index}.{slot}`, self-describing, so a message is found
//! from its id alone (the broker group, the Raft index of its batch, its slot in it).
//!
//! Must never: produce an id that does not parse back to itself ('.' never occurs in a
//! broker group name).

use std::fmt;

use super::Broker;
use crate::state::read::StoredMessage;

/// A message id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// The broker group that stores it.
    pub broker_group: String,
    /// The Raft log index of its batch.
    pub log_index: u64,
    /// Its slot in the batch.
    pub slot: u32,
}

impl MessageId {
    /// Parses `{broker_group}.{log_index}.{slot}`.
    pub fn parse(id: &str) -> Option<MessageId> {
        let mut parts = id.rsplitn(3, '.');
        let slot = parts.next()?.parse().ok()?;
        let log_index = parts.next()?.parse().ok()?;
        let broker_group = parts.next()?.to_owned();
        Some(MessageId {
            broker_group,
            log_index,
            slot,
        })
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.broker_group, self.log_index, self.slot)
    }
}

impl Broker {
    /// The id of a message stored in this broker group.
    pub fn message_id(&self, m: &StoredMessage) -> MessageId {
        self.id_of(m.log_index, m.slot)
    }

    pub(super) fn id_of(&self, log_index: u64, slot: u32) -> MessageId {
        MessageId {
            broker_group: self.broker_group().to_owned(),
            log_index,
            slot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let id = MessageId {
            broker_group: "g-1_x".into(),
            log_index: 42,
            slot: 7,
        };
        assert_eq!(id.to_string(), "g-1_x.42.7");
        assert_eq!(MessageId::parse(&id.to_string()), Some(id));
        assert_eq!(MessageId::parse("g1.42"), None);
        assert_eq!(MessageId::parse("g1.x.7"), None);
    }
}
