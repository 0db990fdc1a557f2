//! The API's one error type: it knows its status code and renders the one JSON error shape
//! (`{"code", "detail"}`; for 422 `detail` is a list of `{loc, msg, type}` as the Svix SDKs
//! expect). Store failures become a generic 500 whose detail goes to the log only, except
//! a full disk: that is 503 `storage_full` with `Retry-After`, since the same request
//! succeeds once space is freed.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookline_store::{Rejected, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug)]
pub enum ApiError {
    /// The body is not JSON at all.
    BadRequest(String),
    Unauthorized(&'static str),
    Forbidden(&'static str),
    NotFound(&'static str),
    Conflict(String),
    PayloadTooLarge(usize),
    /// The request body did not arrive within the body timeout.
    RequestTimeout(std::time::Duration),
    /// One or more fields are invalid; `loc` names each.
    Validation(Vec<FieldError>),
    /// The disk holding the store is full: nothing was written; retry later. The detail
    /// is not logged per request (the store logs each episode once).
    StorageFull,
    /// The database cannot be reached for now.
    Unavailable(String),
    /// The token sent more requests than `--api-rate-limit` allows; retry after this
    /// many seconds.
    RateLimited(u64),
    /// Something broke on our side; the detail is logged, never sent.
    Internal(String),
}

/// Seconds a client is asked to wait before retrying a write refused for a full disk.
pub const STORAGE_FULL_RETRY_AFTER_SECS: u32 = 5;

/// The `detail` of a 503 `storage_full`.
pub const STORAGE_FULL_DETAIL: &str =
    "the server's storage is full: nothing was written; retry later, writes resume once space is freed";

/// One invalid field. `loc` is the path, e.g. `["body", "retryPolicy", "factor"]`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    /// An error on a body field; `field` is a dotted path (`retryPolicy.factor`).
    pub fn body(field: &str, msg: impl Into<String>) -> Self {
        let mut loc = vec!["body".to_string()];
        loc.extend(
            field
                .split('.')
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        Self {
            loc,
            msg: msg.into(),
            kind: "value_error".into(),
        }
    }

    pub fn query(field: &str, msg: impl Into<String>) -> Self {
        Self {
            loc: vec!["query".into(), field.into()],
            msg: msg.into(),
            kind: "value_error".into(),
        }
    }
}

/// The error body for everything but 422.
#[derive(Debug, Serialize, ToSchema)]
pub struct HttpErrorOut {
    pub code: String,
    pub detail: String,
}

/// The 422 body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationErrorOut {
    pub code: String,
    pub detail: Vec<FieldError>,
}

impl ApiError {
    pub fn field(field: &str, msg: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::body(field, msg)])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::StorageFull => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (code, detail) = match self {
            Self::Validation(errors) => {
                return (
                    status,
                    Json(ValidationErrorOut {
                        code: "validation".into(),
                        detail: errors,
                    }),
                )
                    .into_response()
            }
            Self::BadRequest(d) => ("bad_request", d),
            Self::Unauthorized(d) => ("authentication_failed", d.to_string()),
            Self::Forbidden(d) => ("forbidden", d.to_string()),
            Self::NotFound(d) => ("not_found", d.to_string()),
            Self::Conflict(d) => ("conflict", d),
            Self::PayloadTooLarge(limit) => (
                "payload_too_large",
                format!("request body is larger than the limit of {limit} bytes"),
            ),
            Self::RequestTimeout(limit) => (
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    limit.as_secs()
                ),
            ),
            Self::StorageFull => {
                return (
                    status,
                    [(
                        axum::http::header::RETRY_AFTER,
                        STORAGE_FULL_RETRY_AFTER_SECS.to_string(),
                    )],
                    Json(HttpErrorOut {
                        code: "storage_full".into(),
                        detail: STORAGE_FULL_DETAIL.into(),
                    }),
                )
                    .into_response()
            }
            Self::Unavailable(detail) => {
                log_unavailable(&detail);
                return (
                    status,
                    [(axum::http::header::RETRY_AFTER, "1")],
                    Json(HttpErrorOut {
                        code: "unavailable".into(),
                        detail: "the database cannot be reached right now; try again (with an idempotency-key for a create)".into(),
                    }),
                )
                    .into_response();
            }
            Self::RateLimited(secs) => {
                return (
                    status,
                    [(axum::http::header::RETRY_AFTER, secs.to_string())],
                    Json(HttpErrorOut {
                        code: "rate_limited".into(),
                        detail: format!(
                            "this token sent more requests than the server's --api-rate-limit allows; retry in {secs} s"
                        ),
                    }),
                )
                    .into_response();
            }
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                ("internal", "internal server error".into())
            }
        };
        (
            status,
            Json(HttpErrorOut {
                code: code.into(),
                detail,
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound("not found"),
            StoreError::Conflict(what) => Self::Conflict(what),
            StoreError::Rejected(r) => r.into(),
            StoreError::StorageFull(_) => Self::StorageFull,
            StoreError::Unavailable(detail) => Self::Unavailable(detail),
            StoreError::Backend(detail) | StoreError::Key(detail) => Self::Internal(detail),
        }
    }
}

impl From<Rejected> for ApiError {
    fn from(r: Rejected) -> Self {
        Self::field(&r.field, r.message)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Logs that the database cannot be reached, at most once every ten seconds: during an
/// outage every request would say the same. `/api/v1/health` says it too.
fn log_unavailable(detail: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(%detail, "the database cannot be reached; answering 503 unavailable");
    }
}
