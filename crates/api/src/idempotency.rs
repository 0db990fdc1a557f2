//! `idempotency-key` on POST: a repeated key gets the first response again, also when it
//! arrives while the first is still running (it waits for that answer).
//!
//! The key is claimed in the store before the request runs (so two concurrent repeats
//! cannot both act) and the response is stored durably after, so repeats after a restart
//! or on another hookline process still get the same answer. Responses of 5xx are not
//! stored: the request may be retried for real. A claim whose holder died is taken over
//! after [`STALE_AFTER`].

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hookline_store::{IdempotencyState, StoredResponse};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::answer_unread;
use crate::AppState;

/// How long a claimed key may stay unfinished before another request takes it over.
const STALE_AFTER: chrono::Duration = chrono::Duration::seconds(60);
/// How long a repeat waits for the first request with its key to finish.
const WAIT_FOR_FIRST: std::time::Duration = std::time::Duration::from_secs(10);
/// How soon a waiting repeat looks again; the pause doubles up to the second figure
/// (each look is a write to the store).
const POLL_FIRST: std::time::Duration = std::time::Duration::from_millis(5);
const POLL_FIRST_AT_MOST: std::time::Duration = std::time::Duration::from_millis(200);
/// How long finished keys are kept.
pub const KEEP_FOR: chrono::Duration = chrono::Duration::hours(24);
/// Largest response body remembered (API responses are small; this is a guard).
const MAX_STORED_BODY: usize = 1024 * 1024;

pub async fn idempotency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get("idempotency-key") else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 256 => k.to_string(),
        _ => {
            let refused = ApiError::BadRequest(
                "idempotency-key must be 1 to 256 visible ASCII characters".into(),
            );
            return answer_unread(req, refused.into_response()).await;
        }
    };
    let Some(auth) = req.extensions().get::<Auth>() else {
        return next.run(req).await;
    };
    let scope = format!(
        "{} {}",
        auth.fingerprint,
        req.uri().path().trim_end_matches('/')
    );
    // A repeat that arrives while the first request still runs (on this process or any
    // other) waits for its answer, then gets the same one; only if that takes longer than
    // WAIT_FOR_FIRST is it told to retry.
    let waiting_since = std::time::Instant::now();
    let mut pause = POLL_FIRST;
    loop {
        match state
            .store
            .idempotency_begin(&scope, &key, hookline_store::now(), STALE_AFTER)
            .await
        {
            Err(e) => return answer_unread(req, ApiError::from(e).into_response()).await,
            Ok(IdempotencyState::InProgress) if waiting_since.elapsed() < WAIT_FOR_FIRST => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(POLL_FIRST_AT_MOST);
            }
            Ok(IdempotencyState::InProgress) => {
                let busy = ApiError::Conflict(
                    "a request with this idempotency-key is still being processed".into(),
                );
                return answer_unread(req, busy.into_response()).await;
            }
            Ok(IdempotencyState::Done(stored)) => return answer_unread(req, replay(stored)).await,
            // New, or the first gave up (5xx) or went stale: this request runs.
            Ok(IdempotencyState::Claimed) => break,
        }
    }

    let response = next.run(req).await;
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_STORED_BODY).await {
        Ok(b) => b,
        Err(e) => {
            let _ = state.store.idempotency_abandon(&scope, &key).await;
            return ApiError::Internal(format!("buffering response: {e}")).into_response();
        }
    };
    let outcome = if parts.status.is_server_error() {
        state.store.idempotency_abandon(&scope, &key).await
    } else {
        state
            .store
            .idempotency_finish(
                &scope,
                &key,
                StoredResponse {
                    status: parts.status.as_u16(),
                    body: bytes.to_vec(),
                },
            )
            .await
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %e, "could not record idempotency key");
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut resp = Response::new(Body::from(stored.body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    resp
}
