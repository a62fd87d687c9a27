//! Response bodies of the public API as types: the handlers serialize them and
//! `GET /openapi.json` describes them from the same definitions ([`crate::openapi`]), so
//! the document cannot drift from what is sent.
//!
//! Fields are declared in sorted order: the answers keep the key order they had when they
//! were built as JSON maps.
//!
//! Must never: hold logic beyond conversion from the broker's types (the handlers decide
//! what to answer).

use raftmq_raft::{ConsumerGroupMode, MemberRole, Placed, TxnInfo, TxnState};
use serde::Serialize;
use utoipa::ToSchema;

use crate::dto::TopicJson;

/// Every non-2xx answer.
#[derive(Serialize, ToSchema, Debug)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// `error` of an error answer.
#[derive(Serialize, ToSchema, Debug)]
pub struct ErrorDetail {
    /// Stable, UPPER_SNAKE (API.md's error codes).
    #[schema(value_type = String, pattern = "^[A-Z_]+$")]
    pub code: &'static str,
    /// For people: names the field and the reason.
    pub message: String,
    /// With `OFFSET_OUT_OF_RANGE`: the queue's first retained offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_offset: Option<u64>,
}

/// Where one produced message went.
#[derive(Serialize, ToSchema, Debug)]
#[schema(as = Placed)]
pub struct PlacedJson {
    /// `{broker_group}.{log_index}.{slot}`.
    pub msg_id: String,
    /// null for a scheduled message: it takes the next offset of its queue when it comes due.
    #[schema(required = true)]
    pub offset: Option<u64>,
    /// Queue.
    pub queue: u32,
}

/// A produce's `results`, in request order.
pub fn placed(placed: &[Placed]) -> Vec<PlacedJson> {
    placed
        .iter()
        .map(|p| PlacedJson {
            msg_id: p.msg_id.to_string(),
            offset: p.offset,
            queue: p.queue,
        })
        .collect()
}

/// `POST /v1/topics/{topic}/messages`.
#[derive(Serialize, ToSchema, Debug)]
pub struct ProduceResponse {
    /// One per message, in request order.
    pub results: Vec<PlacedJson>,
    /// For a transactional produce.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
}

/// `GET /v1/topics`.
#[derive(Serialize, ToSchema, Debug)]
pub struct Topics {
    /// Every topic.
    pub topics: Vec<TopicJson>,
}

/// `DELETE /v1/topics/{topic}`, `DELETE /v1/acl/users/{name}`.
#[derive(Serialize, ToSchema, Debug)]
pub struct Deleted {
    /// The name deleted.
    pub deleted: String,
}

/// One queue's committed offset and lag.
#[derive(Serialize, ToSchema, Debug)]
pub struct OffsetRow {
    /// Committed offset (the next to consume).
    pub committed: u64,
    /// `max_offset - committed`.
    pub lag: u64,
    /// One past the queue's last offset.
    pub max_offset: u64,
    /// Queue.
    pub queue: u32,
    /// Topic.
    pub topic: String,
}

/// `GET /v1/groups/{group}/offsets`.
#[derive(Serialize, ToSchema, Debug)]
pub struct Offsets {
    /// One row per queue.
    pub offsets: Vec<OffsetRow>,
}

/// `PUT /v1/groups/{group}/offsets`.
#[derive(Serialize, ToSchema, Debug)]
pub struct Committed {
    /// Always true.
    pub committed: bool,
}

/// One queue's offset after a reset.
#[derive(Serialize, ToSchema, Debug)]
pub struct ResetRow {
    /// The new committed offset.
    pub offset: u64,
    /// Queue.
    pub queue: u32,
    /// Topic.
    pub topic: String,
}

/// `POST /v1/groups/{group}/offsets/reset`.
#[derive(Serialize, ToSchema, Debug)]
pub struct ResetResponse {
    /// One row per queue.
    pub offsets: Vec<ResetRow>,
}

/// The queues of one topic assigned to a consumer.
#[derive(Serialize, ToSchema, Debug)]
pub struct Assignment {
    /// Queue numbers.
    pub queues: Vec<u32>,
    /// Topic.
    pub topic: String,
    /// The consumer group's live consumers of the topic, sorted: the queues are shared
    /// among them in this order.
    pub consumers: Vec<String>,
}

/// `POST /v1/groups/{group}/heartbeat`.
#[derive(Serialize, ToSchema, Debug)]
pub struct Assignments {
    /// One row per topic.
    pub assignments: Vec<Assignment>,
}

/// A consumer group's delivery mode.
#[derive(Serialize, ToSchema, Debug, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Each message to one consumer of the group.
    Clustering,
    /// Each message to every consumer of the group.
    Broadcast,
}

impl From<ConsumerGroupMode> for Mode {
    fn from(m: ConsumerGroupMode) -> Mode {
        match m {
            ConsumerGroupMode::Clustering => Mode::Clustering,
            ConsumerGroupMode::Broadcast => Mode::Broadcast,
        }
    }
}

/// One consumer group in a list.
#[derive(Serialize, ToSchema, Debug)]
pub struct GroupSummary {
    /// Delivery mode.
    pub mode: Mode,
    /// Name.
    pub name: String,
}

/// `GET /v1/groups`.
#[derive(Serialize, ToSchema, Debug)]
pub struct Groups {
    /// Every consumer group.
    pub groups: Vec<GroupSummary>,
}

/// One live consumer of a group.
#[derive(Serialize, ToSchema, Debug)]
pub struct ConsumerRow {
    /// Name.
    pub consumer: String,
    /// Group time of its last heartbeat, ms since the epoch.
    pub last_heartbeat_ms: u64,
    /// Its session.
    pub session_ms: u64,
    /// The topics it heartbeats for.
    pub topics: Vec<String>,
}

/// One queue of a group's topics.
#[derive(Serialize, ToSchema, Debug)]
pub struct GroupQueueRow {
    /// Committed offset.
    pub committed: u64,
    /// The consumer it is assigned to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// Messages leased and not yet acked.
    pub in_flight: u64,
    /// `max_offset - committed`.
    pub lag: u64,
    /// One past the queue's last offset.
    pub max_offset: u64,
    /// Queue.
    pub queue: u32,
    /// Topic.
    pub topic: String,
}

/// `GET /v1/groups/{group}`.
#[derive(Serialize, ToSchema, Debug)]
pub struct Group {
    /// Its members.
    pub consumers: Vec<ConsumerRow>,
    /// Messages in its dead-letter topic.
    pub dlq_depth: u64,
    /// Its dead-letter topic, `DLQ-{group}`.
    pub dlq_topic: String,
    /// Name.
    pub group: String,
    /// Leased and not yet acked, over every queue.
    pub in_flight: u64,
    /// Deliveries before a message goes to the dead-letter topic.
    pub max_attempts: u32,
    /// Delivery mode.
    pub mode: Mode,
    /// One row per queue of its topics.
    pub queues: Vec<GroupQueueRow>,
    /// Wait before a message is visible again, by attempt (the last value repeats).
    pub retry_backoff_ms: Vec<u64>,
    /// Topics it has consumed.
    pub topics: Vec<String>,
}

/// `PUT /v1/groups/{group}`: the settings in effect.
#[derive(Serialize, ToSchema, Debug)]
pub struct GroupSettingsSet {
    /// Name.
    pub group: String,
    /// Deliveries before a message goes to the dead-letter topic.
    pub max_attempts: u32,
    /// Wait before a message is visible again, by attempt (the last value repeats).
    pub retry_backoff_ms: Vec<u64>,
}

/// A member's role.
#[derive(Serialize, ToSchema, Debug, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Takes writes.
    Leader,
    /// A voter that follows.
    Follower,
    /// Receives the log, does not vote.
    Learner,
}

impl From<MemberRole> for Role {
    fn from(r: MemberRole) -> Role {
        match r {
            MemberRole::Leader => Role::Leader,
            MemberRole::Follower => Role::Follower,
            MemberRole::Learner => Role::Learner,
        }
    }
}

/// One member of the broker group.
#[derive(Serialize, ToSchema, Debug)]
pub struct Member {
    /// HTTP address.
    pub addr: String,
    /// Node id.
    pub id: u64,
    /// The last log index it is known to hold (leader's view; null elsewhere).
    #[schema(required = true)]
    pub matched_index: Option<u64>,
    /// Role.
    pub role: Role,
    /// The group's record that this member has held the log (up to this index, as the
    /// leader saw it), as this node has applied it: a member whose data is lost and that
    /// has a record is refused at start (replace it instead).
    pub held_log_index: Option<u64>,
}

/// One broker group as the NameServers' routes show it.
#[derive(Serialize, ToSchema, Debug)]
pub struct RouteGroup {
    /// Broker group name.
    pub group: String,
    /// Its leader's address, if known.
    #[schema(required = true)]
    pub leader: Option<String>,
    /// Its members' addresses.
    pub members: Vec<String>,
    /// How many topics it holds.
    pub topics: u64,
}

/// `GET /v1/cluster`.
#[derive(Serialize, ToSchema, Debug)]
pub struct Cluster {
    /// Applied log index on this node.
    pub applied_index: u64,
    /// Committed log index as this node knows it.
    pub commit_index: u64,
    /// Broker group name.
    pub group: String,
    /// With NameServers (`--nameservers`): every broker group as the routes show it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<RouteGroup>>,
    /// The leader, if this node knows one.
    #[schema(required = true)]
    pub leader_id: Option<u64>,
    /// Members.
    pub members: Vec<Member>,
    /// This node.
    pub node_id: u64,
    /// Raft term.
    pub term: u64,
}

/// `POST /v1/cluster/members`.
#[derive(Serialize, ToSchema, Debug)]
pub struct AddMemberResponse {
    /// HTTP address.
    pub addr: String,
    /// Node id.
    pub id: u64,
    /// Promoted to voter.
    pub voter: bool,
}

/// `DELETE /v1/cluster/members/{id}`.
#[derive(Serialize, ToSchema, Debug)]
pub struct Removed {
    /// The node removed.
    pub removed: u64,
}

/// `POST /v1/cluster/leader`.
#[derive(Serialize, ToSchema, Debug)]
pub struct Leader {
    /// The leader now.
    pub leader_id: u64,
}

/// `POST /v1/cluster/compact`.
#[derive(Serialize, ToSchema, Debug)]
pub struct Compacted {
    /// This node.
    pub node_id: u64,
    /// The log index the snapshot covers.
    pub snapshot_index: u64,
}

/// `GET /healthz`, `GET /readyz`.
#[derive(Serialize, ToSchema, Debug)]
pub struct Status {
    /// `ok` (healthz) or `ready` (readyz).
    pub status: &'static str,
}

/// What a permission allows.
#[derive(Serialize, ToSchema, Debug)]
#[schema(as = Permission)]
pub struct PermissionJson {
    /// What may be done.
    pub actions: Vec<String>,
    /// Consumer group name, or a prefix ending in one `*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Topic name, or a prefix ending in one `*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

/// A user, without its token.
#[derive(Serialize, ToSchema, Debug)]
pub struct User {
    /// May do everything.
    pub admin: bool,
    /// Name.
    pub name: String,
    /// What it may do.
    pub permissions: Vec<PermissionJson>,
}

/// `GET /v1/acl/users`.
#[derive(Serialize, ToSchema, Debug)]
pub struct Users {
    /// Every user.
    pub users: Vec<User>,
}

/// `PUT /v1/acl/users/{name}`.
#[derive(Serialize, ToSchema, Debug)]
pub struct UserSaved {
    /// May do everything.
    pub admin: bool,
    /// Name.
    pub name: String,
}

/// A transaction's state.
#[derive(Serialize, ToSchema, Debug, Clone, Copy)]
#[serde(rename_all = "snake_case")]
#[schema(as = TxnState)]
pub enum TxnStateJson {
    /// Undecided: its messages are not readable.
    Open,
    /// Its messages took the next offsets of their queues.
    Committed,
    /// Its messages are never readable.
    RolledBack,
}

/// A transaction.
#[derive(Serialize, ToSchema, Debug)]
#[schema(as = Transaction)]
pub struct TxnJson {
    /// Check-backs that did not decide it.
    pub checks: u32,
    /// Group time of its produce, ms since the epoch.
    pub created_ms: u64,
    /// Group time of its decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_ms: Option<u64>,
    /// Once committed: each message's id, queue and offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<PlacedJson>>,
    /// State.
    pub state: TxnStateJson,
    /// Topic.
    pub topic: String,
    /// `{broker_group}.{log_index}`.
    pub transaction_id: String,
}

impl From<&TxnInfo> for TxnJson {
    fn from(t: &TxnInfo) -> TxnJson {
        TxnJson {
            checks: t.checks,
            created_ms: t.created_ms,
            decided_ms: t.decided_ms,
            results: (!t.placed.is_empty()).then(|| placed(&t.placed)),
            state: match t.state {
                TxnState::Open => TxnStateJson::Open,
                TxnState::Committed => TxnStateJson::Committed,
                TxnState::RolledBack => TxnStateJson::RolledBack,
            },
            topic: t.topic.clone(),
            transaction_id: t.id.clone(),
        }
    }
}
