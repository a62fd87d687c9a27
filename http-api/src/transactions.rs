//! Transactions: `POST /v1/transactions/{id}/commit|rollback`, `GET /v1/transactions/{id}`,
//! and the HTTP client that checks undecided transactions back at their `check_url`.
//!
//! Must never: decide a transaction on a follower (decisions are writes, forwarded to the
//! leader), or follow a check target's redirects or let its answer's size be unbounded.

use std::future::Future;
use std::pin::Pin;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use raftmq_raft::{MessageId, StoredMessage, TxnChecker, TxnDecision};
use serde_json::{Value, json};

use crate::AppState;
use crate::bodies::TxnJson;
use crate::dto::message_json;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::forward::{Route, WriteReq};
use crate::messages::with_write_timeout;

/// Largest check-back answer read, bytes.
const MAX_ANSWER_BYTES: usize = 64 << 10;

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("NOT_FOUND", format!("transaction {id} does not exist"))
}

/// `GET /v1/transactions/{id}`: as this node has applied it.
#[utoipa::path(get, path = "/v1/transactions/{id}", operation_id = "transaction",
    summary = "A transaction's state",
    params(crate::openapi::TxnPath),
    responses((status = 200, description = "OK", body = TxnJson), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors))]
pub(crate) async fn get(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let t = app
        .broker
        .transaction(&id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(TxnJson::from(&t)).into_response())
}

async fn decide(
    app: AppState,
    id: String,
    write: WriteReq,
    commit: bool,
) -> Result<Response, ApiError> {
    if let Route::Relayed(resp) = write.route(&app).await? {
        return Ok(resp);
    }
    let t = with_write_timeout(&app, async { Ok(app.broker.end_txn(&id, commit).await?) }).await?;
    Ok(Json(TxnJson::from(&t)).into_response())
}

/// `POST /v1/transactions/{id}/commit`.
#[utoipa::path(post, path = "/v1/transactions/{id}/commit", operation_id = "commitTransaction",
    summary = "Commit: its messages take the next offsets of their queues (idempotent; the other decision is 409)",
    params(crate::openapi::TxnPath),
    responses((status = 200, description = "OK", body = TxnJson), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
pub(crate) async fn commit(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    decide(app, id, write, true).await
}

/// `POST /v1/transactions/{id}/rollback`.
#[utoipa::path(post, path = "/v1/transactions/{id}/rollback", operation_id = "rollbackTransaction",
    summary = "Roll back: its messages are never readable (idempotent; the other decision is 409)",
    params(crate::openapi::TxnPath),
    responses((status = 200, description = "OK", body = TxnJson), crate::openapi::InputErrors, crate::openapi::AuthErrors, crate::openapi::BrokerErrors, crate::openapi::WriteErrors))]
pub(crate) async fn rollback(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
    write: WriteReq,
) -> Result<Response, ApiError> {
    decide(app, id, write, false).await
}

/// Checks transactions back over plain HTTP: POSTs `{"transaction_id", "messages"}` and reads
/// `{"status": "commit" | "rollback" | "unknown"}`; anything else is `unknown`.
pub(crate) struct HttpTxnChecker {
    client: reqwest::Client,
}

impl HttpTxnChecker {
    pub(crate) fn new() -> Result<HttpTxnChecker, reqwest::Error> {
        Ok(HttpTxnChecker {
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(std::time::Duration::from_secs(1))
                .timeout(raftmq_raft::CHECK_TIMEOUT)
                .build()?,
        })
    }
}

/// What a check target's answer decides.
fn decision(status: reqwest::StatusCode, body: &[u8]) -> TxnDecision {
    if !status.is_success() {
        return TxnDecision::Unknown;
    }
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match v["status"].as_str() {
        Some("commit") => TxnDecision::Commit,
        Some("rollback") => TxnDecision::Rollback,
        _ => TxnDecision::Unknown,
    }
}

impl TxnChecker for HttpTxnChecker {
    fn check(
        &self,
        url: &str,
        txn_id: &str,
        messages: Vec<(MessageId, StoredMessage)>,
    ) -> Pin<Box<dyn Future<Output = TxnDecision> + Send + 'static>> {
        let msgs: Vec<Value> = messages
            .iter()
            .map(|(id, m)| {
                let mut v =
                    serde_json::to_value(message_json(m, id.to_string())).unwrap_or(Value::Null);
                // Half messages have no offset yet.
                if let Some(o) = v.as_object_mut() {
                    o.remove("offset");
                }
                v
            })
            .collect();
        let body = json!({ "transaction_id": txn_id, "messages": msgs });
        let req = self.client.post(url).json(&body);
        Box::pin(async move {
            let Ok(mut resp) = req.send().await else {
                return TxnDecision::Unknown;
            };
            let status = resp.status();
            let mut body = Vec::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(c)) if body.len() + c.len() <= MAX_ANSWER_BYTES => {
                        body.extend_from_slice(&c)
                    }
                    Ok(None) => return decision(status, &body),
                    // Too long, or broken off: no answer.
                    Ok(Some(_)) | Err(_) => return TxnDecision::Unknown,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_clear_answer_decides() {
        let ok = reqwest::StatusCode::OK;
        assert_eq!(
            decision(ok, br#"{"status": "commit"}"#),
            TxnDecision::Commit
        );
        assert_eq!(
            decision(ok, br#"{"status": "rollback"}"#),
            TxnDecision::Rollback
        );
        assert_eq!(
            decision(ok, br#"{"status": "unknown"}"#),
            TxnDecision::Unknown
        );
        assert_eq!(decision(ok, b"commit"), TxnDecision::Unknown);
        assert_eq!(
            decision(ok, br#"{"status": "COMMIT"}"#),
            TxnDecision::Unknown
        );
        assert_eq!(
            decision(
                reqwest::StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"status": "commit"}"#
            ),
            TxnDecision::Unknown
        );
    }
}
