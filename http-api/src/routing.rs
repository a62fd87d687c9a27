//! Routing between broker groups: a node learns the routes from the NameServers (every
//! [`REFRESH_EVERY`], from the first that answers; the last routes stay when none does) and
//! sends a request that belongs to another group — a topic only that group holds, a message
//! or transaction id naming it — to that group's leader, which answers as if asked
//! directly. A request a client sent here (not relayed) about a topic spread over groups,
//! the topic or consumer-group lists, a consumer group's settings or its heartbeat is
//! answered over every group concerned ([`crate::spread`], [`crate::coordinator`]).
//!
//! Must never: route a request whose topic this node's group holds whole (its own group
//! decides), touch a relayed request other than to pass it on (its sender has done the
//! sharing out), or route a request that has already travelled [`MAX_HOPS`] times (stale
//! routes must not make a loop).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::AppState;
use crate::acl::path_segments;
use crate::error::ApiError;
use crate::forward::{MAX_HOPS, Target, hops, read_request, relay};
use crate::{coordinator, spread};

/// How often a node refreshes its routes.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// One broker group as the NameServers route it.
#[derive(Clone, Debug, Default)]
struct GroupRoute {
    leader: Option<String>,
    members: Vec<String>,
    topics: Vec<TopicPlace>,
}

/// A topic as one broker group holds it.
#[derive(Clone, Debug)]
struct TopicPlace {
    name: String,
    /// Queues this group holds.
    queues: u32,
    /// Where they start in a spread topic's queue space (`None`: a whole topic).
    first_queue: Option<u32>,
    /// A spread topic's whole queue space, as this part knows it.
    queue_space: Option<u32>,
}

/// One broker group's slice of a spread topic's queue space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) group: String,
    pub(crate) first: u32,
    pub(crate) count: u32,
}

impl Part {
    pub(crate) fn end(&self) -> u32 {
        self.first + self.count
    }
}

/// A spread topic's queue space: its parts in queue order, from queue 0 without a gap.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub(crate) parts: Vec<Part>,
}

impl Layout {
    /// Queues in the whole queue space.
    pub(crate) fn total(&self) -> u32 {
        self.parts.last().map_or(0, Part::end)
    }

    /// The part holding `queue`.
    pub(crate) fn part_of(&self, queue: u32) -> Option<&Part> {
        self.index_of(queue).map(|i| &self.parts[i])
    }

    /// The place in [`Layout::parts`] of the part holding `queue`.
    pub(crate) fn index_of(&self, queue: u32) -> Option<usize> {
        self.parts
            .iter()
            .position(|p| (p.first..p.end()).contains(&queue))
    }
}

/// The routes a node knows, shared by its handlers and refreshed in the background.
#[derive(Clone, Debug, Default)]
pub struct Routes(Arc<RwLock<BTreeMap<String, GroupRoute>>>);

impl Routes {
    /// Where to send a request for `group`: its leader, else a member (which forwards).
    pub(crate) fn addr_of(&self, group: &str) -> Option<String> {
        let routes = self.0.read().unwrap_or_else(|e| e.into_inner());
        let g = routes.get(group)?;
        g.leader.clone().or_else(|| g.members.first().cloned())
    }

    /// The first group, in route order, holding `topic`, other than `except`.
    fn group_of_topic(&self, topic: &str, except: &str) -> Option<String> {
        let routes = self.0.read().unwrap_or_else(|e| e.into_inner());
        routes
            .iter()
            .find(|(g, r)| g.as_str() != except && r.topics.iter().any(|t| t.name == topic))
            .map(|(g, _)| g.clone())
    }

    /// How many queues `topic` has in all, as the routes know it: a spread topic's whole
    /// queue space, else the queues of the first group holding it.
    pub(crate) fn queue_count(&self, topic: &str) -> Option<u32> {
        if let Ok(Some(layout)) = self.layout(topic) {
            return Some(layout.total());
        }
        let routes = self.0.read().unwrap_or_else(|e| e.into_inner());
        routes
            .values()
            .find_map(|r| r.topics.iter().find(|t| t.name == topic))
            .map(|t| t.queues)
    }

    /// Every broker group's name, sorted.
    pub(crate) fn group_names(&self) -> Vec<String> {
        let routes = self.0.read().unwrap_or_else(|e| e.into_inner());
        routes.keys().cloned().collect()
    }

    /// The queue space of `topic` if it is spread over broker groups (`Ok(None)`: it is
    /// not, as far as the routes know); `Err` when the parts the routes know leave a gap
    /// (a group's registration not seen yet, or the group gone).
    pub(crate) fn layout(&self, topic: &str) -> Result<Option<Layout>, String> {
        self.parts(topic, false)
    }

    /// The parts of `topic` the routes know, when they cover its queue space from 0 with
    /// no gap, though they may stop short of the space a part names: a spread that failed
    /// part way (a group down) and that a `PUT` of the topic finishes.
    pub(crate) fn started_layout(&self, topic: &str) -> Option<Layout> {
        self.parts(topic, true).ok().flatten()
    }

    fn parts(&self, topic: &str, short: bool) -> Result<Option<Layout>, String> {
        let routes = self.0.read().unwrap_or_else(|e| e.into_inner());
        let places: Vec<(&String, &TopicPlace)> = routes
            .iter()
            .filter_map(|(g, r)| r.topics.iter().find(|t| t.name == topic).map(|t| (g, t)))
            .collect();
        if places.iter().all(|(_, t)| t.first_queue.is_none()) {
            return Ok(None);
        }
        // A whole topic next to parts is the first part before its group says so.
        let mut parts: Vec<Part> = places
            .iter()
            .map(|(g, t)| Part {
                group: (*g).clone(),
                first: t.first_queue.unwrap_or(0),
                count: t.queues,
            })
            .collect();
        parts.sort_by_key(|p| p.first);
        // Every part knows the whole space: a group missing at the end (gone from the
        // routes) must not make the topic look shorter, or keys would hash elsewhere.
        let space = places.iter().filter_map(|(_, t)| t.queue_space).max();
        let mut next = 0;
        for p in &parts {
            if p.first != next {
                let seen: Vec<String> = parts
                    .iter()
                    .map(|p| format!("{} {}..{}", p.group, p.first, p.end()))
                    .collect();
                return Err(format!(
                    "the routes of topic {topic} do not cover its queue space once ({}); retry",
                    seen.join(", ")
                ));
            }
            next = p.end();
        }
        if let Some(space) = space
            && next < space
            && !short
        {
            return Err(format!(
                "topic {topic} has {space} queues but the routes show broker groups for only {next} (a group is down or not registered yet); retry"
            ));
        }
        Ok(Some(Layout { parts }))
    }

    /// Records parts this node has just made, so that it routes by them before the
    /// NameServers report them.
    pub(crate) fn note_parts(&self, topic: &str, parts: &[Part]) {
        let mut routes = self.0.write().unwrap_or_else(|e| e.into_inner());
        for p in parts {
            let Some(g) = routes.get_mut(&p.group) else {
                continue;
            };
            g.topics.retain(|t| t.name != topic);
            g.topics.push(TopicPlace {
                name: topic.to_owned(),
                queues: p.count,
                first_queue: Some(p.first),
                queue_space: parts.last().map(Part::end),
            });
        }
    }

    /// Every broker group's gauges for `/metrics`: whether it has a leader, its members
    /// and topics as the routes show them.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let routes = self.0.read().unwrap_or_else(|e| e.into_inner());
        type Gauge = fn(&GroupRoute) -> usize;
        let rows: [(&str, &str, Gauge); 3] = [
            (
                "raftmq_broker_group_up",
                "1 if the routes know the broker group's leader.",
                |g| usize::from(g.leader.is_some()),
            ),
            (
                "raftmq_broker_group_members",
                "Live members of a broker group in the routes.",
                |g| g.members.len(),
            ),
            (
                "raftmq_broker_group_topics",
                "Topics (or parts) a broker group holds.",
                |g| g.topics.len(),
            ),
        ];
        for (name, help, value) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (group, g) in routes.iter() {
                let _ = writeln!(out, "{name}{{group=\"{group}\"}} {}", value(g));
            }
        }
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
            let items = |field: &str| g[field].as_array().into_iter().flatten();
            groups.insert(
                name.to_owned(),
                GroupRoute {
                    leader: g["leader"].as_str().map(str::to_owned),
                    members: items("members")
                        .filter_map(|m| m["addr"].as_str().map(str::to_owned))
                        .collect(),
                    topics: items("topics")
                        .filter_map(|t| {
                            Some(TopicPlace {
                                name: t["topic"].as_str()?.to_owned(),
                                queues: u32::try_from(t["queues"].as_u64()?).ok()?,
                                first_queue: t["first_queue"]
                                    .as_u64()
                                    .and_then(|f| u32::try_from(f).ok()),
                                queue_space: t["queue_space"]
                                    .as_u64()
                                    .and_then(|f| u32::try_from(f).ok()),
                            })
                        })
                        .collect(),
                },
            );
        }
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = groups;
    }
}

/// Routes kept fresh from `nameservers` (`host:port`) until the process ends (`None`
/// without NameServers: one group, nothing to route); asked from `source_ip` when given
/// (the node's peer source address, so a partition cuts a node off its NameServers too).
pub fn spawn_routes(
    nameservers: Vec<String>,
    source_ip: Option<std::net::IpAddr>,
) -> Result<Option<Routes>, reqwest::Error> {
    if nameservers.is_empty() {
        return Ok(None);
    }
    let routes = Routes::default();
    let kept = routes.clone();
    let http = reqwest::Client::builder()
        .no_proxy()
        .local_address(source_ip)
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

/// What a request is about, for routing: a topic, a broker group an id names, a
/// consumer group's heartbeat, or a consumer group's offsets (whose topic is in the query
/// or the body).
enum Subject {
    Topic(String),
    Group(String),
    Heartbeat(String),
    Offsets,
    /// `/v1/topics`: the list of every group's topics.
    Topics,
    /// `/v1/groups` (`None`) or `/v1/groups/{g}`: consumer-group admin.
    ConsumerGroup(Option<String>),
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
        ["v1", "topics"] => Some(Subject::Topics),
        ["v1", "groups"] => Some(Subject::ConsumerGroup(None)),
        ["v1", "groups", g] => Some(Subject::ConsumerGroup(Some((*g).to_owned()))),
        ["v1", "groups", g, "heartbeat"] => Some(Subject::Heartbeat((*g).to_owned())),
        ["v1", "groups", _, "offsets"] | ["v1", "groups", _, "offsets", "reset"] => {
            Some(Subject::Offsets)
        }
        ["v1", "messages", id] => id.rsplitn(3, '.').nth(2).map(group),
        ["v1", "transactions", id, ..] => id.rsplit_once('.').map(|(g, _)| group(g)),
        _ => None,
    }
}

/// A query parameter, decoded.
fn query_param(uri: &axum::http::Uri, name: &str) -> Option<String> {
    let Query(q) = Query::<HashMap<String, String>>::try_from_uri(uri).ok()?;
    q.get(name).cloned()
}

/// Whether a topic's PUT body asks to spread it (`groups` given).
fn names_groups(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .is_ok_and(|v| v.get("groups").is_some_and(|g| !g.is_null()))
}

/// The middleware: sends a request that belongs to another broker group there, and
/// answers one about several groups from all of them.
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
    route(&app, &routes, req, next)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn route(
    app: &AppState,
    routes: &Routes,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let here = app.broker.broker_group();
    // A relayed request has been shared out by its sender: only passed on.
    let first_hop = hops(req.headers()) == 0;
    let subject = match subject(req.uri().path()) {
        Some(Subject::Topics) if first_hop && req.method() == Method::GET => {
            return spread::list_topics(app, routes, req.headers()).await;
        }
        Some(Subject::ConsumerGroup(g)) if first_hop => {
            let (parts, body) = read_request(app, req).await?;
            return spread::consumer_group_admin(app, routes, g.as_deref(), &parts, &body).await;
        }
        Some(Subject::Heartbeat(g)) if first_hop => {
            let (parts, body) = read_request(app, req).await?;
            return coordinator::heartbeat(app, routes, &g, parts, body, next).await;
        }
        // Offsets name their topic in the query (GET) or the body.
        Some(Subject::Offsets) if req.method() == Method::GET => {
            query_param(req.uri(), "topic").map(Subject::Topic)
        }
        Some(Subject::Offsets) => {
            let (parts, body) = read_request(app, req).await?;
            let topic = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["topic"].as_str().map(str::to_owned));
            req = Request::from_parts(parts, Body::from(body));
            topic.map(Subject::Topic)
        }
        s => s,
    };
    let target = match subject {
        Some(Subject::Group(g)) if g != here => Some(g),
        Some(Subject::Topic(t)) => {
            // This group's own topic or part (a failed lookup: answer here).
            let local = app.broker.topic(&t).await;
            if first_hop {
                let local = local.as_ref().ok().copied().flatten();
                match routes.layout(&t) {
                    Ok(Some(layout)) => {
                        let (parts, body) = read_request(app, req).await?;
                        return spread::handle(app, routes, layout, &t, &parts, body).await;
                    }
                    Err(why) => {
                        // A spread that stopped part way: the same PUT finishes it.
                        if puts_topic(&req)
                            && let Some(layout) = routes.started_layout(&t)
                        {
                            let (parts, body) = read_request(app, req).await?;
                            return spread::handle(app, routes, layout, &t, &parts, body).await;
                        }
                        return Err(ApiError::unavailable(why));
                    }
                    Ok(None) if local.is_some_and(|s| s.part.is_some()) => {
                        return Err(ApiError::unavailable(format!(
                            "topic {t} is spread over broker groups and the NameServers have not reported all its parts yet; retry"
                        )));
                    }
                    Ok(None) => {}
                }
                if puts_topic(&req) {
                    let (parts, body) = read_request(app, req).await?;
                    if names_groups(&body) {
                        let local = local.map(|spec| Part {
                            group: here.to_owned(),
                            first: 0,
                            count: spec.queues,
                        });
                        return spread::put(app, routes, &t, local, &parts.headers, &body).await;
                    }
                    req = Request::from_parts(parts, Body::from(body));
                }
            }
            match local {
                Ok(Some(_)) | Err(_) => None,
                Ok(None) => routes.group_of_topic(&t, here),
            }
        }
        _ => None,
    };
    let Some((group, addr)) = target.and_then(|g| routes.addr_of(&g).map(|a| (g, a))) else {
        return Ok(next.run(req).await);
    };
    let (parts, body) = read_request(app, req).await?;
    let to = Target {
        addr: &addr,
        who: &format!("broker group {group} ({addr})"),
        hops: hops(&parts.headers) + 1,
        // A long poll may be held there: allow for it on top of a write's time.
        timeout: app.cfg.write_timeout + Duration::from_secs(60),
    };
    relay(app, parts.method, &parts.uri, &parts.headers, body, &to).await
}

/// `PUT /v1/topics/{t}`: a topic made or changed (not a request under it).
fn puts_topic(req: &Request) -> bool {
    req.method() == Method::PUT && req.uri().path().matches('/').count() == 3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Routes where `g1` reports its part of topic `t` (`0..2` of `space`) and `g2`, up,
    /// reports none.
    fn routes(space: u32) -> Routes {
        let r = Routes::default();
        r.replace(&serde_json::json!({"groups": [
            {"group": "g1", "leader": "127.0.0.1:1", "members": [], "topics": [
                {"topic": "t", "queues": 2, "first_queue": 0, "queue_space": space}
            ]},
            {"group": "g2", "leader": "127.0.0.1:2", "members": [], "topics": []},
        ]}));
        r
    }

    #[test]
    fn a_spread_stopped_part_way_is_refused_but_can_be_finished() {
        // Its first part names the whole space: serving it would hash keys over half of
        // it, so requests are refused; a PUT of the topic still sees the part to go on from.
        let r = routes(4);
        assert!(r.layout("t").is_err());
        let started = r.started_layout("t").expect("the part made");
        assert_eq!(
            started.parts,
            [Part {
                group: "g1".into(),
                first: 0,
                count: 2
            }]
        );
        // A whole topic is one part, served as it is.
        assert_eq!(routes(2).layout("t").unwrap().unwrap().parts, started.parts);
        assert!(r.started_layout("other").is_none());
        // Parts with a gap between them are no start to go on from.
        let gap = Routes::default();
        gap.replace(&serde_json::json!({"groups": [
            {"group": "g1", "topics": [{"topic": "t", "queues": 2, "first_queue": 0, "queue_space": 6}]},
            {"group": "g3", "topics": [{"topic": "t", "queues": 2, "first_queue": 4, "queue_space": 6}]},
        ]}));
        assert!(gap.layout("t").is_err());
        assert!(gap.started_layout("t").is_none());
    }
}
