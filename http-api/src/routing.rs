//! Routing between broker groups: a node learns the routes from the NameServers (every
//! [`REFRESH_EVERY`], from the first that answers; the last routes stay when none does) and
//! sends a request that belongs to another group — a topic only that group holds, a message
//! or transaction id naming it — to that group's leader, which answers as if asked
//! directly.
//!
//! Must never: route a request whose topic this node's group holds (its own group decides),
//! or route a request that has already travelled [`MAX_HOPS`] times (stale routes must not
//! make a loop).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::AppState;
use crate::acl::path_segments;
use crate::error::ApiError;
use crate::forward::{MAX_HOPS, Target, hops, relay};

/// How often a node refreshes its routes.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// One broker group as the NameServers route it.
#[derive(Clone, Debug, Default)]
struct GroupRoute {
    leader: Option<String>,
    members: Vec<String>,
    topics: Vec<String>,
}

/// The routes a node knows, shared by its handlers and refreshed in the background.
#[derive(Clone, Debug, Default)]
pub struct Routes(Arc<RwLock<BTreeMap<String, GroupRoute>>>);

impl Routes {
    /// Where to send a request for `group`: its leader, else a member (which forwards).
    fn addr_of(&self, group: &str) -> Option<String> {
        let routes = self.0.read().unwrap_or_else(|e| e.into_inner());
        let g = routes.get(group)?;
        g.leader.clone().or_else(|| g.members.first().cloned())
    }

    /// The first group, in route order, holding `topic`, other than `except`.
    fn group_of_topic(&self, topic: &str, except: &str) -> Option<String> {
        let routes = self.0.read().unwrap_or_else(|e| e.into_inner());
        routes
            .iter()
            .find(|(g, r)| g.as_str() != except && r.topics.iter().any(|t| t == topic))
            .map(|(g, _)| g.clone())
    }

    /// Every broker group the routes know.
    pub(crate) fn groups(&self) -> Vec<crate::bodies::RouteGroup> {
        let routes = self.0.read().unwrap_or_else(|e| e.into_inner());
        routes
            .iter()
            .map(|(g, r)| crate::bodies::RouteGroup {
                group: g.clone(),
                leader: r.leader.clone(),
                members: r.members.clone(),
                topics: r.topics.len() as u64,
            })
            .collect()
    }

    fn replace(&self, v: &Value) {
        let mut groups = BTreeMap::new();
        for g in v["groups"].as_array().into_iter().flatten() {
            let Some(name) = g["group"].as_str() else {
                continue;
            };
            let strings = |field: &str, key: Option<&str>| -> Vec<String> {
                g[field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| match key {
                        Some(k) => x[k].as_str(),
                        None => x.as_str(),
                    })
                    .map(str::to_owned)
                    .collect()
            };
            groups.insert(
                name.to_owned(),
                GroupRoute {
                    leader: g["leader"].as_str().map(str::to_owned),
                    members: strings("members", Some("addr")),
                    topics: strings("topics", Some("topic")),
                },
            );
        }
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = groups;
    }
}

/// Routes kept fresh from `nameservers` (`host:port`) until the process ends (`None`
/// without NameServers: one group, nothing to route).
pub fn spawn_routes(nameservers: Vec<String>) -> Result<Option<Routes>, reqwest::Error> {
    if nameservers.is_empty() {
        return Ok(None);
    }
    let routes = Routes::default();
    let kept = routes.clone();
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_millis(500))
        .timeout(REFRESH_EVERY)
        .build()?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for ns in &nameservers {
                let got = async {
                    http.get(format!("http://{ns}/v1/routes"))
                        .send()
                        .await?
                        .error_for_status()?
                        .json::<Value>()
                        .await
                }
                .await;
                match got {
                    Ok(v) => {
                        kept.replace(&v);
                        break;
                    }
                    Err(e) => tracing::debug!(nameserver = %ns, error = %e, "route refresh failed"),
                }
            }
        }
    });
    Ok(Some(routes))
}

/// What a request is about, for routing: a topic, or a broker group an id names.
enum Subject {
    Topic(String),
    Group(String),
}

/// From the path's segments decoded as the handlers (and authorization) see them.
fn subject(path: &str) -> Option<Subject> {
    let segments = path_segments(path)?;
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let group = |g: &str| Subject::Group(g.to_owned());
    match parts.as_slice() {
        ["v1", "topics", t, ..] | ["v1", "groups", _, "topics", t, ..] => {
            Some(Subject::Topic((*t).to_owned()))
        }
        ["v1", "messages", id] => id.rsplitn(3, '.').nth(2).map(group),
        ["v1", "transactions", id, ..] => id.rsplit_once('.').map(|(g, _)| group(g)),
        _ => None,
    }
}

/// The middleware: sends a request that belongs to another broker group there.
pub(crate) async fn route_between_groups(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(routes) = app.cfg.routes.clone() else {
        return next.run(req).await;
    };
    if hops(req.headers()) >= MAX_HOPS {
        return next.run(req).await;
    }
    let here = app.broker.broker_group().to_owned();
    let target = match subject(req.uri().path()) {
        Some(Subject::Group(g)) if g != here => Some(g),
        Some(Subject::Topic(t)) => match app.broker.topic(&t).await {
            // This group holds it (or the lookup failed: answer here).
            Ok(Some(_)) | Err(_) => None,
            Ok(None) => routes.group_of_topic(&t, &here),
        },
        _ => None,
    };
    let Some((group, addr)) = target.and_then(|g| routes.addr_of(&g).map(|a| (g, a))) else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, app.cfg.max_request_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::too_large(format!(
                "the body is larger than {} bytes",
                app.cfg.max_request_bytes
            ))
            .into_response();
        }
    };
    let to = Target {
        addr: &addr,
        who: &format!("broker group {group} ({addr})"),
        hops: hops(&parts.headers) + 1,
        // A long poll may be held there: allow for it on top of a write's time.
        timeout: app.cfg.write_timeout + Duration::from_secs(60),
    };
    match relay(&app, parts.method, &parts.uri, &parts.headers, body, &to).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}
