//! What applying a command answers: the state machine's response type, delivered to the
//! proposer through openraft's responder (never persisted, never sent to peers).
//!
//! Must never: carry anything a replica computed from local input; it is the same on every
//! replica for the same entry.

use serde::{Deserialize, Serialize};

/// Why a command was refused at apply time (deterministically, on every replica).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectCode {
    /// The topic does not exist.
    TopicNotFound,
    /// The consumer group does not exist.
    ConsumerGroupNotFound,
    /// The command is malformed or out of range.
    InvalidArgument,
    /// The command conflicts with the current state.
    Conflict,
    /// The request is larger than one entry may be.
    TooLarge,
    /// The caller could not be authenticated (never an apply result: peer requests).
    Unauthenticated,
    /// The thing named does not exist (a user).
    NotFound,
}

/// One leased message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    /// Queue.
    pub queue: u32,
    /// Offset.
    pub offset: u64,
    /// Delivery number (1 = first).
    pub attempt: u32,
    /// The receipt to ack it with.
    pub receipt: String,
}

/// The state machine's answer to one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// A batch was stored: `(queue, offset)` of each message in batch order.
    Produced {
        /// The log index of the batch (message ids are derived from it).
        log_index: u64,
        /// Queue and offset per message (a retried idempotency key's: the first write's; no
        /// offset for a scheduled message, which takes one when it comes due).
        placed: Vec<(u32, Option<u64>)>,
        /// `(slot, log index, slot)`: messages of this batch that were retries of an
        /// idempotency key, and where the first write of it is (their message id).
        originals: Vec<(u32, u64, u32)>,
    },
    /// The command took effect.
    Done,
    /// Where a transaction stands after an `EndTxn`.
    TxnEnded {
        /// Its state.
        state: crate::state::queues::TxnState,
        /// Check-backs that did not decide it.
        checks: u32,
    },
    /// Messages leased to a consumer.
    Leased {
        /// What was granted.
        granted: Vec<Granted>,
    },
    /// Per receipt: `None` ok, else the error code.
    Acked {
        /// One per receipt, in order.
        results: Vec<Option<String>>,
    },
    /// A consumer's queue assignment after a heartbeat.
    Assigned {
        /// One per topic of the heartbeat, in its order.
        assignments: Vec<Assignment>,
    },
    /// The command was refused and changed nothing.
    Rejected {
        /// Machine-readable reason.
        code: RejectCode,
        /// Human-readable reason.
        message: String,
    },
}

/// A refusal.
pub(crate) fn reject(code: RejectCode, message: impl Into<String>) -> Applied {
    Applied::Rejected {
        code,
        message: message.into(),
    }
}

/// A consumer's share of one topic after a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Assignment {
    /// The topic.
    pub topic: String,
    /// Its queues for this consumer: those `q` with `q % consumers.len()` equal to the
    /// consumer's place in `consumers`.
    pub queues: Vec<u32>,
    /// The group's live consumers of the topic, sorted (a node routing a topic this group
    /// does not hold applies the same rule over the topic's whole queue space).
    pub consumers: Vec<String>,
}
