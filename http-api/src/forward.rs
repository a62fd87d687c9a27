//! Forwarding writes from a follower to the leader.
//!
//! A follower re-sends the request (method, path, query, body) to the leader it knows and
//! relays the answer. A forwarded request carries `x-raftmq-forwarded: <hops>`; a node that
//! is not the leader forwards it again while it has made fewer than [`MAX_HOPS`] hops (a
//! leader change while it travelled), and says 503 after that. A value that is not a hop
//! count (a client's own header, say) counts as none, so a client cannot make a follower
//! refuse its request.
//!
//! Must never: answer a forwarded write whose outcome it cannot know (timeout, lost
//! connection after sending) with anything but 504 `OUTCOME_UNKNOWN`.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;

use crate::AppState;
use crate::error::ApiError;

const FORWARDED: &str = "x-raftmq-forwarded";

/// Most times one request is forwarded.
pub(crate) const MAX_HOPS: u32 = 2;

/// How often a request was forwarded already.
pub(crate) fn hops(headers: &HeaderMap) -> u32 {
    headers
        .get(FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|&h| h <= MAX_HOPS)
        .unwrap_or(0)
}

/// A request's head and body, the body at most the node's request limit (413 past it):
/// for middleware that must read a body before the handlers do.
pub(crate) async fn read_request(
    app: &AppState,
    req: Request,
) -> Result<(axum::http::request::Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, app.cfg.max_request_bytes)
        .await
        .map_err(|_| {
            ApiError::too_large(format!(
                "the body is larger than {} bytes",
                app.cfg.max_request_bytes
            ))
        })?;
    Ok((parts, body))
}

/// Where [`relay`] sends a request.
pub(crate) struct Target<'a> {
    /// `host:port`.
    pub(crate) addr: &'a str,
    /// How errors name it ("the leader (node 2)").
    pub(crate) who: &'a str,
    /// The hop count the relayed request carries.
    pub(crate) hops: u32,
    /// How long to wait for its answer.
    pub(crate) timeout: std::time::Duration,
}

/// Sends a request on to another node (over the peer client: its pool and TLS) and returns
/// its answer as ours: status, body, content type, `Retry-After`. The caller's token and
/// request id travel with it; the other node checks the token again.
pub(crate) async fn relay(
    app: &AppState,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
    to: &Target<'_>,
) -> Result<Response, ApiError> {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let mut req = app
        .http
        .client()
        .request(method, app.http.url(to.addr, path))
        .header(FORWARDED, to.hops.to_string())
        .timeout(to.timeout)
        .body(body);
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    if let Some(id) = headers.get(&crate::REQUEST_ID) {
        req = req.header(&crate::REQUEST_ID, id);
    }
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        req = req.header(header::AUTHORIZATION, auth);
    }
    let who = to.who;
    let resp = req.send().await.map_err(|e| {
        if e.is_connect() {
            ApiError::unavailable(format!("{who} is unreachable; retry"))
        } else {
            ApiError::outcome_unknown(format!("forwarded to {who} but got no answer: {e}"))
        }
    })?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let retry_after = resp.headers().get(header::RETRY_AFTER).cloned();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ApiError::outcome_unknown(format!("lost the answer of {who}: {e}")))?;
    let mut out = Response::builder().status(status);
    if let Some(ct) = content_type {
        out = out.header(header::CONTENT_TYPE, ct);
    }
    if let Some(ra) = retry_after {
        out = out.header(header::RETRY_AFTER, ra);
    }
    out.body(Body::from(bytes)).map_err(ApiError::internal)
}

/// What a handler should do with a write.
pub(crate) enum Route {
    /// Handle it here (this node is the leader).
    Local,
    /// The leader's answer, relayed.
    Relayed(Response),
}

/// A write request as received: what forwarding needs (method, URI, headers, raw body).
/// Extracting it reads the body under the router's size limit (413 past it).
pub(crate) struct WriteReq {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    /// The raw request body.
    pub(crate) body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for WriteReq {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state).await?;
        Ok(WriteReq {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body: bytes,
        })
    }
}

impl WriteReq {
    /// Decides where the write is handled; forwards it to the leader when that is elsewhere.
    pub(crate) async fn route(&self, app: &AppState) -> Result<Route, ApiError> {
        self.route_waiting(app, std::time::Duration::ZERO).await
    }

    /// Like [`WriteReq::route`] for a request the leader may hold up to `wait` (a long poll).
    pub(crate) async fn route_waiting(
        &self,
        app: &AppState,
        wait: std::time::Duration,
    ) -> Result<Route, ApiError> {
        route_write(
            app,
            self.method.clone(),
            &self.uri,
            &self.headers,
            self.body.clone(),
            wait,
        )
        .await
    }
}

async fn route_write(
    app: &AppState,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
    wait: std::time::Duration,
) -> Result<Route, ApiError> {
    if app.broker.is_leader() {
        return Ok(Route::Local);
    }
    let hops = hops(headers);
    if hops >= MAX_HOPS {
        return Err(ApiError::unavailable(
            "this node is no longer the leader; retry",
        ));
    }
    let Some((leader, addr)) = app.broker.leader() else {
        return Err(ApiError::unavailable(
            "the group has no leader right now; retry",
        ));
    };
    if leader == app.broker.node_id() {
        return Ok(Route::Local);
    }
    app.stats.forwarded_requests.fetch_add(1, Ordering::Relaxed);
    let target = Target {
        addr: &addr,
        who: &format!("the leader (node {leader})"),
        hops: hops + 1,
        timeout: app.cfg.write_timeout + wait,
    };
    let mut resp = relay(app, method, uri, headers, body, &target).await?;
    resp.headers_mut()
        .insert("x-raftmq-leader", HeaderValue::from(leader));
    Ok(Route::Relayed(resp))
}
