//! `ApiError`: the one error type of the HTTP API and its mapping to status and body.
//!
//! Body: `{"error": {"code": "UPPER_SNAKE", "message": "...", "min_offset"?}}` as
//! `shared/API.md` defines ([`crate::bodies::ErrorBody`]). 5xx details are logged, never sent.
//!
//! Must never: answer a write whose outcome is unknown with anything but 504
//! `OUTCOME_UNKNOWN`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use raftmq_raft::{BrokerError, RejectCode};

use crate::bodies::{ErrorBody, ErrorDetail};

/// An API error: status, stable code, message, and `min_offset` for `OFFSET_OUT_OF_RANGE`.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    min_offset: Option<u64>,
    retry_after_secs: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            min_offset: None,
            retry_after_secs: None,
        }
    }

    /// 400 `INVALID_ARGUMENT`; `field` is named first in the message.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        let message = if field.is_empty() {
            reason.to_string()
        } else {
            format!("{field}: {reason}")
        };
        Self::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }

    /// 400 `OFFSET_OUT_OF_RANGE` with `min_offset` in the body.
    pub fn offset_out_of_range(offset: u64, min_offset: u64) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "OFFSET_OUT_OF_RANGE",
            format!("offset {offset} is below the queue's min_offset {min_offset}"),
        );
        e.min_offset = Some(min_offset);
        e
    }

    /// 404 `TOPIC_NOT_FOUND`.
    pub fn topic_not_found(topic: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "TOPIC_NOT_FOUND",
            format!("topic {topic} does not exist"),
        )
    }

    /// 404 with a specific code (`GROUP_NOT_FOUND`, `MESSAGE_NOT_FOUND`, `NOT_FOUND`).
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 401 `UNAUTHENTICATED`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }

    /// 403 `PERMISSION_DENIED`.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", message)
    }

    /// 409 `CONFLICT`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "CONFLICT", message)
    }

    /// 405 `METHOD_NOT_ALLOWED`: the path exists, not with this method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "this endpoint does not take that method",
        )
    }

    /// 414 `URI_TOO_LONG`.
    pub fn uri_too_long(limit: usize) -> Self {
        Self::new(
            StatusCode::URI_TOO_LONG,
            "URI_TOO_LONG",
            format!("the request URI is longer than {limit} bytes"),
        )
    }

    /// 431 `HEADERS_TOO_LARGE`.
    pub fn headers_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "HEADERS_TOO_LARGE",
            format!("the request headers are larger than {limit} bytes"),
        )
    }

    /// 413 `PAYLOAD_TOO_LARGE`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", message)
    }

    /// 503 `UNAVAILABLE` with `Retry-After`: nothing was written.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message);
        e.retry_after_secs = Some(1);
        e
    }

    /// 504 `OUTCOME_UNKNOWN`: the write may or may not have happened.
    pub fn outcome_unknown(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "OUTCOME_UNKNOWN", message)
    }

    /// 507 `DISK_FULL`.
    pub fn disk_full() -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "DISK_FULL",
            "the node's disk is full",
        )
    }

    /// 500 `INTERNAL`: the detail is logged, not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "internal error; see the node's log",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The body's `{"code", "message"}`, as a value to place inside another answer (a
    /// share of a request spread over broker groups that failed).
    pub(crate) fn detail(&self) -> serde_json::Value {
        serde_json::json!({"code": self.code, "message": self.message})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                min_offset: self.min_offset,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("request body is larger than the node's limit")
        } else {
            ApiError::invalid("body", r.body_text())
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::Rejected { code, message } => match code {
                RejectCode::TopicNotFound => ApiError::not_found("TOPIC_NOT_FOUND", message),
                RejectCode::ConsumerGroupNotFound => {
                    ApiError::not_found("GROUP_NOT_FOUND", message)
                }
                RejectCode::InvalidArgument => ApiError::invalid("", message),
                RejectCode::Conflict => ApiError::conflict(message),
                RejectCode::TooLarge => ApiError::too_large(message),
                RejectCode::NotFound => ApiError::not_found("NOT_FOUND", message),
                RejectCode::Unauthenticated => ApiError::unauthenticated(message),
            },
            BrokerError::OffsetOutOfRange { offset, min_offset } => {
                ApiError::offset_out_of_range(offset, min_offset)
            }
            BrokerError::NotLeader { .. } => {
                ApiError::unavailable("leadership changed before the write was accepted; retry")
            }
            BrokerError::Unavailable(m) => ApiError::unavailable(m),
            BrokerError::DiskFull { .. } => ApiError::disk_full(),
            BrokerError::OutcomeUnknown(m) => ApiError::outcome_unknown(m),
            e @ (BrokerError::Corrupted(_) | BrokerError::Io(_) | BrokerError::Internal(_)) => {
                ApiError::internal(e)
            }
        }
    }
}
