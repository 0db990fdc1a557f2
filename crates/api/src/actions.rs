//! Operator actions on deliveries (Svix paths): resend one message to one endpoint,
//! recover an endpoint's failed deliveries since a time, and per-endpoint counts.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{visible_app, Auth};
use crate::error::{ApiError, ApiResult, HttpErrorOut, ValidationErrorOut};
use crate::extract::JsonBody;
use crate::AppState;

/// Queue one more attempt of a message to an endpoint, now.
#[utoipa::path(post, path = "/api/v1/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend",
    tag = "Message Attempt",
    params(("app_id" = String, Path), ("msg_id" = String, Path), ("endpoint_id" = String, Path)),
    responses((status = 202), (status = 404, body = HttpErrorOut), (status = 409, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn resend(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, msg_id, ep_id)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let app = visible_app(&state, &auth, &app_id).await?;
    let msg = state
        .store
        .get_message(&app.id, &msg_id)
        .await?
        .ok_or(ApiError::NotFound("message not found"))?;
    let ep = state
        .store
        .get_endpoint(&app.id, &ep_id)
        .await?
        .ok_or(ApiError::NotFound("endpoint not found"))?;
    if msg.payload_expired(hookline_store::now()) {
        return Err(ApiError::Conflict(
            "the message's payload has expired (payloadRetentionPeriod or payloadRetentionHours): there is nothing left to send".into(),
        ));
    }
    state
        .store
        .resend(&app.id, &msg.id, &ep.id, hookline_store::now())
        .await?;
    state.wake.notify_one();
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverIn {
    /// Requeue failed deliveries of messages created at or after this time (not in the
    /// future of the server's clock)...
    pub since: DateTime<Utc>,
    /// ...and before this one (after `since`; default: now).
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverOut {
    pub id: String,
    pub status: &'static str,
    pub task: &'static str,
    pub updated_at: DateTime<Utc>,
    /// hookline extension: how many deliveries were requeued.
    pub recovered: u64,
}

/// Requeue every failed delivery to this endpoint since a time. Runs as one transaction,
/// so it is complete when this answers (a restart cannot leave it half done).
#[utoipa::path(post, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/recover",
    tag = "Endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)), request_body = RecoverIn,
    responses((status = 202, body = RecoverOut), (status = 404, body = HttpErrorOut),
        (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn recover(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, ep_id)): Path<(String, String)>,
    JsonBody(input): JsonBody<RecoverIn>,
) -> ApiResult<(StatusCode, Json<RecoverOut>)> {
    let now = hookline_store::now();
    if input.since > now {
        return Err(ApiError::field("since", "must not be in the future"));
    }
    if input.until.is_some_and(|u| u <= input.since) {
        return Err(ApiError::field("until", "must be after since"));
    }
    let app = visible_app(&state, &auth, &app_id).await?;
    let ep = state
        .store
        .get_endpoint(&app.id, &ep_id)
        .await?
        .ok_or(ApiError::NotFound("endpoint not found"))?;
    let n = state
        .store
        .recover(&app.id, &ep.id, input.since, input.until, now)
        .await?;
    state.wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(RecoverOut {
            id: hookline_store::new_id("qtask"),
            status: "finished",
            task: "endpoint.recover",
            updated_at: now,
            recovered: n,
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointStats {
    pub success: u64,
    pub pending: u64,
    pub sending: u64,
    pub fail: u64,
    pub canceled: u64,
    /// How many attempts this process lets be in flight to the endpoint now: its
    /// adaptive concurrency limit, within `maxConcurrency` (hookline extension; `null`
    /// when this process made no attempt to it in the last minute).
    #[serde(rename = "concurrencyLimit")]
    pub concurrency_limit: Option<u32>,
}

/// How many of the endpoint's deliveries are in each state.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/stats", tag = "Endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)),
    responses((status = 200, body = EndpointStats), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn stats(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, ep_id)): Path<(String, String)>,
) -> ApiResult<Json<EndpointStats>> {
    let app = visible_app(&state, &auth, &app_id).await?;
    let ep = state
        .store
        .get_endpoint(&app.id, &ep_id)
        .await?
        .ok_or(ApiError::NotFound("endpoint not found"))?;
    let c = state.store.endpoint_stats(&app.id, &ep.id).await?;
    Ok(Json(EndpointStats {
        success: c.succeeded,
        pending: c.pending,
        sending: c.sending,
        fail: c.failed,
        canceled: 0,
        concurrency_limit: state.concurrency_limits.as_ref().and_then(|all| {
            all()
                .into_iter()
                .find_map(|(id, limit)| (id == ep.id).then_some(limit))
        }),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventExampleIn {
    #[schema(schema_with = crate::openapi::event_type_name)]
    pub event_type: String,
    /// Which of the schema's `examples` to send (default 0); without `payload`, the
    /// event type's newest schema must have an object example there (else 422).
    #[schema(minimum = 0)]
    pub example_index: Option<usize>,
    /// Send this payload instead of a schema example.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Box<serde_json::value::RawValue>>,
}

/// The `examples` of an event type's newest schema version.
fn schema_examples(schemas: Option<&serde_json::Value>) -> Vec<serde_json::Value> {
    crate::event_types::newest_schema(schemas)
        .and_then(|s| s.get("examples"))
        .and_then(|e| e.as_array())
        .cloned()
        .unwrap_or_default()
}

/// Send an example message of an event type to this one endpoint (whatever its
/// filters): the payload given, or one of the event type's schema `examples`.
#[utoipa::path(post, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/send-example",
    tag = "Endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)), request_body = EventExampleIn,
    responses((status = 202, body = crate::messages::MessageOut), (status = 404, body = HttpErrorOut),
        (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn send_example(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, ep_id)): Path<(String, String)>,
    JsonBody(input): JsonBody<EventExampleIn>,
) -> ApiResult<(StatusCode, Json<crate::messages::MessageOut>)> {
    crate::validate::event_type_name("eventType", &input.event_type)?;
    let app = visible_app(&state, &auth, &app_id).await?;
    let ep = state
        .store
        .get_endpoint(&app.id, &ep_id)
        .await?
        .ok_or(ApiError::NotFound("endpoint not found"))?;
    let payload = match input.payload {
        Some(p) if p.get().trim_start().starts_with('{') => p.get().to_string(),
        Some(_) => return Err(ApiError::field("payload", "must be a JSON object")),
        None => {
            let et = state
                .store
                .get_event_type(&input.event_type)
                .await?
                .ok_or(ApiError::NotFound("event type not found"))?;
            let examples = schema_examples(et.schemas.as_ref());
            let index = input.example_index.unwrap_or(0);
            match examples.get(index) {
                Some(e) if e.is_object() => e.to_string(),
                _ => {
                    return Err(ApiError::field(
                        if input.example_index.is_some() { "exampleIndex" } else { "eventType" },
                        format!(
                            "the event type's newest schema has no object example at index {index} (it has {}); pass a payload",
                            examples.len()
                        ),
                    ))
                }
            }
        }
    };
    let msg = hookline_store::Message {
        id: hookline_store::new_id("msg"),
        app_id: app.id,
        event_id: None,
        event_type: input.event_type,
        payload: payload.into(),
        channels: None,
        tags: None,
        created_at: hookline_store::now(),
        deliver_at: None,
        payload_expires_at: None,
    };
    let msg = state.store.create_message_for_endpoint(msg, &ep.id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(crate::messages::MessageOut::new(msg, true)),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryScheduleOut {
    /// The policy in force: the endpoint's, else the application's, else the default.
    #[schema(value_type = Object)]
    pub retry_policy: hookline_retry::RetryPolicy,
    /// Where it comes from: `endpoint`, `application` or `default`.
    pub source: &'static str,
    /// Seconds after the first attempt at which each retry is scheduled (before the
    /// ±20 % jitter); after the last one a delivery that still fails is `failed`.
    pub retry_offsets_seconds: Vec<u64>,
    /// Total attempts a failing delivery gets (first try plus retries).
    pub attempts: usize,
}

/// The retry schedule a failing delivery to this endpoint would follow (hookline
/// extension).
#[utoipa::path(get, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/retry-schedule",
    tag = "Endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)),
    responses((status = 200, body = RetryScheduleOut), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn retry_schedule(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, ep_id)): Path<(String, String)>,
) -> ApiResult<Json<RetryScheduleOut>> {
    let app = visible_app(&state, &auth, &app_id).await?;
    let ep = state
        .store
        .get_endpoint(&app.id, &ep_id)
        .await?
        .ok_or(ApiError::NotFound("endpoint not found"))?;
    let (policy, source) = match (ep.settings.retry_policy, app.retry_policy) {
        (Some(p), _) => (p, "endpoint"),
        (None, Some(p)) => (p, "application"),
        (None, None) => (hookline_retry::RetryPolicy::default(), "default"),
    };
    let offsets = policy.schedule_preview();
    Ok(Json(RetryScheduleOut {
        attempts: offsets.len() + 1,
        retry_offsets_seconds: offsets,
        retry_policy: policy,
        source,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(retry_schedule))
        .routes(routes!(send_example))
        .routes(routes!(resend))
        .routes(routes!(recover))
        .routes(routes!(stats))
}
