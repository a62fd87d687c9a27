//! Authentication and permissions (off unless an admin token is configured): every `/v1`
//! request needs `Authorization: Bearer <token>`, the configured admin token or a user's;
//! a missing or unknown token is 401 `UNAUTHENTICATED`, a known one without the permission
//! 403 `PERMISSION_DENIED`. Users (`/v1/acl/users`) are replicated state managed by admins.
//! A forwarded request carries the caller's token, and the leader checks it again.
//!
//! Must never: log or return a token, compare the admin token in variable time, or let a
//! request through without the permission its route needs.

use axum::Json;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use raftmq_raft::broker::acl::same_bytes;
use raftmq_raft::{Permission, User};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::bodies::{self, Deleted, PermissionJson, UserSaved, Users};

use crate::AppState;
use crate::dto::{check_name, parse_json};
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::forward::{Route, WriteReq};
use crate::messages::with_write_timeout;

/// What a route needs.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    /// Any known caller.
    Known,
    /// An admin.
    Admin,
    /// `metrics`.
    Metrics,
    /// `produce` on a topic.
    Produce(String),
    /// `consume` on a topic (and on a group, if given).
    Consume(Option<String>, Option<String>),
    /// `consume` on some topic (a message by id names no topic up front).
    ConsumeAny,
    /// `admin` on a topic (create, update, delete it).
    TopicAdmin(String),
    /// `produce` on the topic of transaction `id` (known once it is looked up).
    Transaction(String),
    /// `produce` on some topic (a transaction this node does not know).
    ProduceAny,
}

/// A path's segments, percent-decoded as the handlers see them (`None`: one is not UTF-8).
pub(crate) fn path_segments(path: &str) -> Option<Vec<String>> {
    path.trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned())
        })
        .collect()
}

/// The permission a request needs, from its method and path.
fn need(method: &axum::http::Method, path: &str) -> Need {
    use axum::http::Method;
    // Names as the handlers will see them: decoded, so that an encoded name cannot match a
    // pattern its decoded form does not (an undecodable one needs an admin).
    let Some(decoded) = path_segments(path) else {
        return Need::Admin;
    };
    let parts: Vec<&str> = decoded.iter().map(String::as_str).collect();
    match (method, parts.as_slice()) {
        (_, ["metrics"]) => Need::Metrics,
        (&Method::GET, ["v1", "cluster"]) => Need::Known,
        (_, ["v1", "cluster", ..]) | (_, ["v1", "acl", ..]) => Need::Admin,
        (&Method::GET, ["v1", "topics"]) | (&Method::GET, ["v1", "groups"]) => Need::Known,
        (&Method::POST, ["v1", "topics", t, "messages"]) => Need::Produce((*t).to_owned()),
        (&Method::GET, ["v1", "topics", t, ..]) => Need::Consume(Some((*t).to_owned()), None),
        (_, ["v1", "topics", t]) => Need::TopicAdmin((*t).to_owned()),
        (_, ["v1", "messages", _]) => Need::ConsumeAny,
        (_, ["v1", "transactions", id, ..]) => Need::Transaction((*id).to_owned()),
        (_, ["v1", "groups", g, "topics", t, _]) => {
            Need::Consume(Some((*t).to_owned()), Some((*g).to_owned()))
        }
        (_, ["v1", "groups", g, ..]) => Need::Consume(None, Some((*g).to_owned())),
        _ => Need::Admin,
    }
}

/// Whether `name` matches `pattern` (exact, or a prefix with one trailing `*`).
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Whether a permission's pattern (if it has one) covers `name`.
fn on(pattern: Option<&str>, name: &str) -> bool {
    pattern.is_some_and(|pat| matches(pat, name))
}

/// Whether `user` holds what `need` asks for (admins hold everything).
fn allows(user: &User, need: &Need) -> bool {
    if user.admin {
        return true;
    }
    let has = |action: &str, pick: &dyn Fn(&Permission) -> bool| {
        user.permissions
            .iter()
            .any(|p| pick(p) && p.actions.iter().any(|a| a == action))
    };
    match need {
        Need::Known => true,
        Need::Admin => false,
        Need::Metrics => has("metrics", &|_| true),
        Need::Produce(t) => has("produce", &|p| on(p.topic.as_deref(), t)),
        Need::Consume(t, g) => {
            t.as_deref()
                .is_none_or(|t| has("consume", &|p| on(p.topic.as_deref(), t)))
                && g.as_deref()
                    .is_none_or(|g| has("consume", &|p| on(p.group.as_deref(), g)))
        }
        Need::ConsumeAny => has("consume", &|p| p.topic.is_some()),
        Need::ProduceAny => has("produce", &|p| p.topic.is_some()),
        // Resolved to its topic before this is asked (see `authorize`).
        Need::Transaction(_) => false,
        Need::TopicAdmin(t) => has("admin", &|p| on(p.topic.as_deref(), t)),
    }
}

/// The middleware: lets a request through only with the permission its route needs.
pub(crate) async fn authorize(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let Some(admin_token) = app.cfg.admin_token.as_deref() else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    if matches!(path, "/healthz" | "/readyz" | "/openapi.json" | "/ui")
        || path.starts_with("/raft/")
        || path.starts_with("/ui/")
    {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    let Some(token) = token else {
        return unauthenticated("missing `Authorization: Bearer <token>`");
    };
    if same_bytes(token.as_bytes(), admin_token.as_bytes()) {
        return next.run(req).await;
    }
    let mut need = need(req.method(), path);
    if let Need::Transaction(id) = &need {
        need = match app.broker.transaction(id).await {
            Ok(Some(t)) => Need::Produce(t.topic),
            // Unknown here (or not yet applied here): the handler answers 404 or forwards.
            Ok(None) => Need::ProduceAny,
            Err(e) => return ApiError::from(e).into_response(),
        };
    }
    let user = match app.broker.authenticate(&token).await {
        Ok(Some(u)) => u,
        Ok(None) => return unauthenticated("unknown token"),
        Err(e) => return ApiError::from(e).into_response(),
    };
    if !allows(&user, &need) {
        return ApiError::permission_denied(format!(
            "user {} may not do this ({need:?})",
            user.name
        ))
        .into_response();
    }
    next.run(req).await
}

fn unauthenticated(message: &str) -> Response {
    ApiError::unauthenticated(message).into_response()
}

/// `PUT /v1/acl/users/{name}`.
#[derive(Deserialize, ToSchema)]
#[schema(as = UserRequest)]
pub(crate) struct UserBody {
    /// Stored hashed, never returned.
    #[schema(min_length = 16, max_length = 512)]
    token: String,
    /// May do everything.
    #[serde(default)]
    admin: bool,
    /// What it may do otherwise.
    #[serde(default)]
    #[schema(value_type = Vec<PermissionBody>)]
    permissions: Vec<crate::dto::Object<PermissionBody>>,
}

/// A topic or a group (not both; neither only for `metrics` alone) and what may be done
/// with it.
#[derive(Deserialize, ToSchema)]
#[schema(as = PermissionRequest)]
pub(crate) struct PermissionBody {
    /// Topic name, or a prefix ending in one `*`.
    topic: Option<String>,
    /// Consumer group name, or a prefix ending in one `*`.
    group: Option<String>,
    /// What may be done.
    #[schema(value_type = Vec<Action>, min_items = 1)]
    actions: Vec<String>,
}

/// An action a permission allows.
// Read as a string (a wrong one is named in the error); this type describes the values.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
pub(crate) enum Action {
    /// Produce to the topic.
    Produce,
    /// Read the topic, or consume as the group.
    Consume,
    /// Manage the topic or group.
    Admin,
    /// Read `/metrics`.
    Metrics,
}

fn check_pattern(field: &str, pattern: &str) -> Result<(), ApiError> {
    check_name(field, pattern.strip_suffix('*').unwrap_or(pattern))
        .or_else(|e| if pattern == "*" { Ok(()) } else { Err(e) })
}

/// `PUT /v1/acl/users/{name}`.
#[utoipa::path(put, path = "/v1/acl/users/{name}", operation_id = "put_user",
    summary = "Create or replace a user",
    params(crate::openapi::UserPath),
    request_body = UserBody,
    responses((status = 200, description = "OK", body = UserSaved), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
pub(crate) async fn put_user(
    State(app): State<AppState>,
    ApiPath(name): ApiPath<String>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    check_name("name", &name)?;
    let req: UserBody = parse_json(&write.body)?;
    if req.token.len() < 16 || req.token.len() > 512 {
        return Err(ApiError::invalid("token", "must be 16 to 512 bytes"));
    }
    let mut permissions = Vec::new();
    for (i, p) in req.permissions.into_iter().enumerate() {
        let p = p.0;
        let field = |f: &str| format!("permissions[{i}].{f}");
        if p.actions.is_empty() {
            return Err(ApiError::invalid(
                &field("actions"),
                "must name at least one action",
            ));
        }
        let only_metrics = p.actions.iter().all(|a| a == "metrics");
        match (&p.topic, &p.group) {
            (Some(t), None) => check_pattern(&field("topic"), t)?,
            (None, Some(g)) => check_pattern(&field("group"), g)?,
            (None, None) if only_metrics => {}
            _ => {
                return Err(ApiError::invalid(
                    &field("topic"),
                    "give a topic or a group (not both; neither only for metrics)",
                ));
            }
        }
        if let Some(a) = p
            .actions
            .iter()
            .find(|a| !matches!(a.as_str(), "produce" | "consume" | "admin" | "metrics"))
        {
            return Err(ApiError::invalid(
                &field("actions"),
                format!("`{a}` is not produce, consume, admin or metrics"),
            ));
        }
        permissions.push(Permission {
            topic: p.topic,
            group: p.group,
            actions: p.actions,
        });
    }
    if let Route::Relayed(resp) = write.route(&app).await? {
        return Ok(resp);
    }
    let admin = req.admin;
    with_write_timeout(&app, async {
        Ok(app
            .broker
            .put_user(&name, &req.token, admin, permissions)
            .await?)
    })
    .await?;
    Ok(Json(UserSaved { admin, name }).into_response())
}

/// `GET /v1/acl/users` (never with tokens).
#[utoipa::path(get, path = "/v1/acl/users", operation_id = "list_users",
    summary = "Every user, without tokens",
    responses((status = 200, description = "OK", body = crate::bodies::Users), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
pub(crate) async fn list_users(State(app): State<AppState>) -> Result<Response, ApiError> {
    let users = app
        .broker
        .users()
        .await?
        .into_iter()
        .map(|u| bodies::User {
            admin: u.admin,
            name: u.name,
            permissions: u
                .permissions
                .into_iter()
                .map(|p| PermissionJson {
                    actions: p.actions,
                    group: p.group,
                    topic: p.topic,
                })
                .collect(),
        })
        .collect();
    Ok(Json(Users { users }).into_response())
}

/// `DELETE /v1/acl/users/{name}`.
#[utoipa::path(delete, path = "/v1/acl/users/{name}", operation_id = "delete_user",
    summary = "Delete a user",
    params(crate::openapi::UserPath),
    responses((status = 200, description = "OK", body = Deleted), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
pub(crate) async fn delete_user(
    State(app): State<AppState>,
    ApiPath(name): ApiPath<String>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    check_name("name", &name)?;
    if let Route::Relayed(resp) = write.route(&app).await? {
        return Ok(resp);
    }
    with_write_timeout(&app, async { Ok(app.broker.delete_user(&name).await?) }).await?;
    Ok(Json(Deleted { deleted: name }).into_response())
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;

    fn user(admin: bool, permissions: Vec<(Option<&str>, Option<&str>, &[&str])>) -> User {
        User {
            name: "u".into(),
            token_sha256: [0; 32],
            admin,
            permissions: permissions
                .into_iter()
                .map(|(t, g, a)| Permission {
                    topic: t.map(str::to_owned),
                    group: g.map(str::to_owned),
                    actions: a.iter().map(|s| (*s).to_owned()).collect(),
                })
                .collect(),
        }
    }

    fn may(u: &User, method: Method, path: &str) -> bool {
        allows(u, &need(&method, path))
    }

    #[test]
    fn patterns_match_exactly_or_by_one_trailing_star() {
        assert!(matches("orders", "orders"));
        assert!(!matches("orders", "orders2"));
        assert!(matches("ord*", "orders"));
        assert!(matches("*", "anything"));
        assert!(!matches("ord*", "audit"));
    }

    #[test]
    fn each_route_needs_its_permission() {
        let alice = user(
            false,
            vec![
                (Some("ord*"), None, &["produce", "consume"]),
                (None, Some("billing"), &["consume"]),
                (Some("scratch"), None, &["admin"]),
            ],
        );
        assert!(may(&alice, Method::POST, "/v1/topics/orders/messages"));
        assert!(!may(&alice, Method::POST, "/v1/topics/audit/messages"));
        // Names are matched decoded, as the handlers see them.
        assert!(may(&alice, Method::POST, "/v1/topics/%6Frders/messages"));
        assert!(!may(&alice, Method::POST, "/v1/topics/%61udit/messages"));
        assert!(!may(&alice, Method::POST, "/v1/topics/ord%FF/messages"));
        assert!(may(
            &alice,
            Method::GET,
            "/v1/topics/orders/queues/0/messages"
        ));
        assert!(may(&alice, Method::GET, "/v1/topics"));
        assert!(may(&alice, Method::GET, "/v1/cluster"));
        assert!(may(
            &alice,
            Method::POST,
            "/v1/groups/billing/topics/orders/receive"
        ));
        assert!(!may(
            &alice,
            Method::POST,
            "/v1/groups/other/topics/orders/receive"
        ));
        assert!(!may(
            &alice,
            Method::POST,
            "/v1/groups/billing/topics/audit/ack"
        ));
        assert!(may(&alice, Method::GET, "/v1/groups/billing/offsets"));
        assert!(may(&alice, Method::PUT, "/v1/topics/scratch"));
        assert!(!may(&alice, Method::PUT, "/v1/topics/orders"));
        assert!(!may(&alice, Method::DELETE, "/v1/topics/orders"));
        assert!(may(&alice, Method::GET, "/v1/messages/abc"));
        for (m, p) in [
            (Method::POST, "/v1/cluster/members"),
            (Method::POST, "/v1/cluster/leader"),
            (Method::GET, "/v1/acl/users"),
            (Method::PUT, "/v1/acl/users/bob"),
            (Method::GET, "/metrics"),
            (Method::POST, "/v1//topics/orders/messages"),
        ] {
            assert!(!may(&alice, m.clone(), p), "{m} {p}");
        }
        let watcher = user(false, vec![(None, None, &["metrics"])]);
        assert!(may(&watcher, Method::GET, "/metrics"));
        assert!(!may(&watcher, Method::GET, "/v1/messages/abc"));
        assert!(may(&user(true, vec![]), Method::PUT, "/v1/acl/users/bob"));
    }
}
