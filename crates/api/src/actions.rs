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
    /// Requeue failed deliveries of messages created at or after this time...
    pub since: DateTime<Utc>,
    /// ...and before this one (default: now).
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
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(resend))
        .routes(routes!(recover))
        .routes(routes!(stats))
}
