//! `GET /openapi.json`: the OpenAPI 3.1 document, generated (utoipa) from the handlers'
//! `#[utoipa::path]` attributes and the types they parse and answer, so it cannot drift
//! from the code. The parts shared by many operations live here: path and query
//! parameters (the handlers read them by hand, for errors that name the field) and the sets
//! of error answers.
//!
//! Must never: describe a body by a type the handler does not use (a request is parsed into
//! the type named as its `request_body`; an answer is serialized from its `body`).

use std::sync::LazyLock;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi};

use crate::bodies::ErrorBody;
use crate::{acl, cluster, groups, messages, topics, transactions, ui};

/// The document, rendered once.
pub(crate) static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .expect("the OpenAPI document serializes")
});

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json")))]
pub(crate) async fn serve() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "raftmq",
        version = "1",
        description = "The HTTP/JSON API of a raftmq node (shared/API.md is the contract; docs/api.md the details). Every non-2xx answer carries {\"error\": {\"code\", \"message\"}}.",
    ),
    paths(
        messages::produce,
        messages::query,
        messages::read,
        messages::by_id,
        topics::list,
        topics::put,
        topics::get,
        topics::delete,
        groups::offsets,
        groups::commit,
        groups::reset,
        groups::heartbeat,
        groups::receive,
        groups::ack,
        groups::nack,
        groups::list,
        groups::get,
        groups::put,
        cluster::status,
        cluster::add_member,
        cluster::remove_member,
        cluster::transfer_leader,
        cluster::compact,
        cluster::healthz,
        cluster::readyz,
        cluster::metrics,
        serve,
        ui::page,
        acl::list_users,
        acl::put_user,
        acl::delete_user,
        transactions::get,
        transactions::commit,
        transactions::rollback,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Bearer),
    security((), ("bearer" = [])),
)]
struct ApiDoc;

/// The `bearer` scheme the operations name.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(
            "Needed when the node has an admin token (--admin-token-file); the admin's token \
             or a user's"
                .into(),
        );
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

/// `{topic}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct TopicPath {
    /// Topic name.
    #[param(pattern = "^[A-Za-z0-9_-]{1,127}$")]
    topic: String,
}

/// `{group}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct GroupPath {
    /// Consumer group name.
    #[param(pattern = "^[A-Za-z0-9_-]{1,127}$")]
    group: String,
}

/// `{group}` and `{topic}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct GroupTopicPath {
    /// Consumer group name.
    #[param(pattern = "^[A-Za-z0-9_-]{1,127}$")]
    group: String,
    /// Topic name.
    #[param(pattern = "^[A-Za-z0-9_-]{1,127}$")]
    topic: String,
}

/// `{name}` of a user.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct UserPath {
    /// User name.
    #[param(pattern = "^[A-Za-z0-9_-]{1,127}$")]
    name: String,
}

/// `{id}` of a transaction.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct TxnPath {
    /// `{broker_group}.{log_index}`: the `transaction_id` a transactional produce returned.
    id: String,
}

/// `{topic}` and `{queue}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct QueuePath {
    /// Topic name.
    #[param(pattern = "^[A-Za-z0-9_-]{1,127}$")]
    topic: String,
    /// Queue number.
    queue: u32,
}

/// `{msg_id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct MessagePath {
    /// `{broker_group}.{log_index}.{slot}`.
    msg_id: String,
}

/// `{id}` of a member.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct MemberPath {
    /// Node id.
    id: u64,
}

/// `GET /v1/topics/{topic}/queues/{queue}/messages`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct ReadParams {
    /// First offset (default 0).
    offset: Option<u64>,
    /// Most messages (default 32).
    #[param(minimum = 1, maximum = 1024)]
    max: Option<u32>,
    /// Long-poll time, ms (default 0).
    #[param(maximum = 60000)]
    wait_ms: Option<u64>,
    /// Tag filter `a||b`.
    tag: Option<String>,
    /// SQL92 property filter over properties, `TAG` and `KEY`.
    #[param(max_length = 4096)]
    sql: Option<String>,
}

/// `GET /v1/topics/{topic}/messages`: by key (newest first) or by store time.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct QueryParams {
    /// Business key.
    #[param(min_length = 1, max_length = 256)]
    key: Option<String>,
    /// From (inclusive), ms since the epoch.
    from_ms: Option<u64>,
    /// To (exclusive), ms since the epoch.
    to_ms: Option<u64>,
    /// Most messages (default 32).
    #[param(minimum = 1, maximum = 1024)]
    max: Option<u32>,
}

/// `GET /v1/groups/{group}/offsets`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct OffsetsParams {
    /// Topic.
    #[param(pattern = "^[A-Za-z0-9_-]{1,127}$")]
    topic: String,
}

/// Authentication and authorization, on every operation that needs a token.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(crate) enum AuthErrors {
    /// UNAUTHENTICATED: missing or unknown token (authentication on).
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// PERMISSION_DENIED: the token lacks the permission.
    #[response(status = 403)]
    PermissionDenied(ErrorBody),
}

/// What any operation that reaches the broker may answer.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(crate) enum BrokerErrors {
    /// INTERNAL: details in the node's log.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// UNAVAILABLE: no leader, no quorum, not a member; retry (Retry-After).
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// An operation on a named thing, with input.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(crate) enum InputErrors {
    /// INVALID_ARGUMENT (the message names the field), OFFSET_OUT_OF_RANGE (with min_offset).
    #[response(status = 400)]
    Invalid(ErrorBody),
    /// TOPIC_NOT_FOUND, GROUP_NOT_FOUND, MESSAGE_NOT_FOUND or NOT_FOUND.
    #[response(status = 404)]
    NotFound(ErrorBody),
}

/// A write through Raft.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(crate) enum WriteErrors {
    /// CONFLICT.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// PAYLOAD_TOO_LARGE.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// OUTCOME_UNKNOWN: the write may or may not have happened.
    #[response(status = 504)]
    OutcomeUnknown(ErrorBody),
    /// DISK_FULL.
    #[response(status = 507)]
    DiskFull(ErrorBody),
}

/// A read whose query may be long.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(crate) enum UriErrors {
    /// URI_TOO_LONG: the request URI is longer than 16 KiB (a long sql filter,
    /// percent-encoded).
    #[response(status = 414)]
    UriTooLong(ErrorBody),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_body_it_names() {
        let doc: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let text = DOCUMENT.as_str();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        // Every reference resolves.
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &r[..r.find('"').unwrap()];
            assert!(
                schemas.contains_key(name),
                "{name} is referenced, not defined"
            );
        }
        assert_eq!(
            "^[A-Za-z0-9_-]{1,127}$",
            doc["paths"]["/v1/topics/{topic}"]["get"]["parameters"][0]["schema"]["pattern"]
        );
    }
}
