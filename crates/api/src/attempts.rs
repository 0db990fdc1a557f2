//! The attempt log and per-delivery status views (Svix paths): every HTTP try of every
//! delivery, by endpoint or by message, and where each delivery stands.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use hookline_store::{
    Attempt, AttemptQuery, DeliveryStatus, DeliveryView, Endpoint, Message, Order, Trigger,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{visible_app, Auth};
use crate::error::{ApiError, ApiResult, FieldError, HttpErrorOut};
use crate::extract::QueryParams;
use crate::pagination::{ListParams, ListResponse, Ordering};
use crate::AppState;

/// Svix's numeric message status: 0 success, 1 pending, 2 fail, 3 sending.
fn status_code(s: DeliveryStatus) -> u8 {
    match s {
        DeliveryStatus::Succeeded => 0,
        DeliveryStatus::Pending => 1,
        DeliveryStatus::Failed => 2,
        DeliveryStatus::Sending => 3,
    }
}

/// The delivery states, in Svix's order, by their `statusText`.
const STATUS_TEXTS: [(DeliveryStatus, &str); 4] = [
    (DeliveryStatus::Succeeded, "success"),
    (DeliveryStatus::Pending, "pending"),
    (DeliveryStatus::Failed, "fail"),
    (DeliveryStatus::Sending, "sending"),
];

fn status_text(s: DeliveryStatus) -> &'static str {
    STATUS_TEXTS
        .iter()
        .find(|(status, _)| *status == s)
        .map_or("", |(_, text)| text)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageAttemptOut {
    #[schema(example = "atmpt_2yZx4Fh8sKq1Vb6Nn3TcWd9RjPe")]
    pub id: String,
    #[schema(example = "msg_2yZx1N4kC8pQe3Rj5TbVw7LmYhD")]
    pub msg_id: String,
    #[schema(example = "ep_2yZwZ3dQxS9vUu8mK1a7Tb4FhJc")]
    pub endpoint_id: String,
    #[schema(example = "https://example.com/webhooks")]
    pub url: String,
    /// Up to 4 KiB of the response body, or what went wrong.
    #[schema(example = "ok")]
    pub response: String,
    /// 0 when no HTTP response arrived.
    #[schema(example = 200)]
    pub response_status_code: u16,
    #[schema(example = 42)]
    pub response_duration_ms: u64,
    /// 0 success, 2 fail.
    #[schema(schema_with = crate::openapi::attempt_status)]
    pub status: u8,
    /// `success` or `fail`, as `status` says.
    #[schema(schema_with = crate::openapi::attempt_status_text)]
    pub status_text: &'static str,
    /// 0 scheduled, 1 manual.
    #[schema(schema_with = crate::openapi::trigger_type)]
    pub trigger_type: u8,
    pub timestamp: DateTime<Utc>,
    /// hookline extension: why there was no usable response: `timeout`,
    /// `connection_refused`, `connection_reset`, `connect` (another failure to connect),
    /// `tls`, `ssrf_blocked`, `invalid_url`, `io` (another I/O failure, such as a host
    /// name that does not resolve) or `http` (a response that is not valid HTTP). Absent
    /// when a response arrived, whatever its status.
    pub error_kind: Option<String>,
}

impl From<Attempt> for MessageAttemptOut {
    fn from(a: Attempt) -> Self {
        Self {
            id: a.id,
            msg_id: a.msg_id,
            endpoint_id: a.endpoint_id,
            url: a.url,
            response: a.response,
            response_status_code: a.status_code.unwrap_or(0),
            response_duration_ms: a.duration_ms,
            status: if a.succeeded { 0 } else { 2 },
            status_text: if a.succeeded { "success" } else { "fail" },
            trigger_type: match a.trigger {
                Trigger::Scheduled => 0,
                Trigger::Manual => 1,
            },
            timestamp: a.attempted_at,
            error_kind: a.error_kind,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttemptListParams {
    /// Items per page, 1 to 250 (default 50).
    #[param(schema_with = crate::openapi::limit)]
    pub limit: Option<u32>,
    /// `iterator` (or `prevIterator`) of a previous page.
    #[param(schema_with = crate::openapi::iterator)]
    pub iterator: Option<String>,
    pub order: Option<Ordering>,
    /// 0 success, 2 fail (attempts are never pending).
    #[param(schema_with = crate::openapi::attempt_status)]
    pub status: Option<u8>,
    /// Status code class: 0 (no response), 100, 200, 300, 400, 500.
    #[param(schema_with = crate::openapi::status_code_class)]
    pub status_code_class: Option<u16>,
    pub before: Option<DateTime<Utc>>,
    pub after: Option<DateTime<Utc>>,
    /// Only this endpoint (when listing by message).
    pub endpoint_id: Option<String>,
    /// Accepted for Svix compatibility.
    pub with_content: Option<bool>,
    pub channel: Option<String>,
    pub tag: Option<String>,
    pub event_types: Option<String>,
    pub with_msg: Option<bool>,
    pub expanded_statuses: Option<bool>,
}

impl AttemptListParams {
    fn to_query(&self) -> ApiResult<AttemptQuery> {
        let list = ListParams {
            limit: self.limit,
            iterator: self.iterator.clone(),
            order: self.order,
        }
        .to_query(Order::Descending)?;
        let succeeded = match self.status {
            None => None,
            Some(0) => Some(true),
            Some(2) => Some(false),
            Some(_) => {
                return Err(ApiError::Validation(vec![FieldError::query(
                    "status",
                    "attempts are 0 (success) or 2 (fail)",
                )]))
            }
        };
        let class = match self.status_code_class {
            None => None,
            Some(c @ (0 | 100 | 200 | 300 | 400 | 500)) => Some(c / 100),
            Some(_) => {
                return Err(ApiError::Validation(vec![FieldError::query(
                    "status_code_class",
                    "must be one of 0, 100, 200, 300, 400, 500",
                )]))
            }
        };
        Ok(AttemptQuery {
            list,
            succeeded,
            status_code_class: class,
            before: self.before,
            after: self.after,
            ..Default::default()
        })
    }
}

async fn find_endpoint(
    state: &AppState,
    auth: &Auth,
    app_id: &str,
    ep_id: &str,
) -> ApiResult<Endpoint> {
    let app = visible_app(state, auth, app_id).await?;
    state
        .store
        .get_endpoint(&app.id, ep_id)
        .await?
        .ok_or(ApiError::NotFound("endpoint not found"))
}

async fn find_message(
    state: &AppState,
    auth: &Auth,
    app_id: &str,
    msg_id: &str,
) -> ApiResult<Message> {
    let app = visible_app(state, auth, app_id).await?;
    state
        .store
        .get_message(&app.id, msg_id)
        .await?
        .ok_or(ApiError::NotFound("message not found"))
}

/// List attempts made to an endpoint, newest first.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/attempt/endpoint/{endpoint_id}",
    tag = "Message Attempt",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path), AttemptListParams),
    responses((status = 200, body = ListResponse<MessageAttemptOut>), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn by_endpoint(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, ep_id)): Path<(String, String)>,
    QueryParams(p): QueryParams<AttemptListParams>,
) -> ApiResult<Json<ListResponse<MessageAttemptOut>>> {
    let mut q = p.to_query()?;
    let ep = find_endpoint(&state, &auth, &app_id, &ep_id).await?;
    q.endpoint_id = Some(ep.id);
    let page = state.store.list_attempts(&ep.app_id, &q).await?;
    Ok(Json(ListResponse::from_page(page, MessageAttemptOut::from)))
}

/// List attempts made for a message, newest first.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/attempt/msg/{msg_id}",
    tag = "Message Attempt",
    params(("app_id" = String, Path), ("msg_id" = String, Path), AttemptListParams),
    responses((status = 200, body = ListResponse<MessageAttemptOut>), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn by_message(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, msg_id)): Path<(String, String)>,
    QueryParams(p): QueryParams<AttemptListParams>,
) -> ApiResult<Json<ListResponse<MessageAttemptOut>>> {
    let mut q = p.to_query()?;
    let msg = find_message(&state, &auth, &app_id, &msg_id).await?;
    if let Some(ep) = &p.endpoint_id {
        let ep = find_endpoint(&state, &auth, &app_id, ep).await?;
        q.endpoint_id = Some(ep.id);
    }
    q.msg_id = Some(msg.id);
    let page = state.store.list_attempts(&msg.app_id, &q).await?;
    Ok(Json(ListResponse::from_page(page, MessageAttemptOut::from)))
}

/// Get one attempt.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}",
    tag = "Message Attempt",
    params(("app_id" = String, Path), ("msg_id" = String, Path), ("attempt_id" = String, Path)),
    responses((status = 200, body = MessageAttemptOut), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn get_one(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, msg_id, attempt_id)): Path<(String, String, String)>,
) -> ApiResult<Json<MessageAttemptOut>> {
    let msg = find_message(&state, &auth, &app_id, &msg_id).await?;
    state
        .store
        .get_attempt(&msg.app_id, &attempt_id)
        .await?
        .filter(|a| a.msg_id == msg.id)
        .map(|a| Json(a.into()))
        .ok_or(ApiError::NotFound("attempt not found"))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageEndpointOut {
    pub id: String,
    pub url: String,
    pub description: String,
    pub uid: Option<String>,
    pub disabled: bool,
    pub channels: Option<Vec<String>>,
    pub filter_types: Option<Vec<String>>,
    pub event_types: Option<Vec<String>>,
    pub throttle_rate: Option<u32>,
    /// 0 success, 1 pending, 2 fail, 3 sending.
    #[schema(schema_with = crate::openapi::message_status)]
    pub status: u8,
    #[schema(schema_with = crate::openapi::message_status_text)]
    pub status_text: &'static str,
    pub next_attempt: Option<DateTime<Utc>>,
    /// hookline extension: attempts made so far.
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where a message stands for each endpoint it was sent to.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/msg/{msg_id}/endpoint", tag = "Message Attempt",
    params(("app_id" = String, Path), ("msg_id" = String, Path), ListParams),
    responses((status = 200, body = ListResponse<MessageEndpointOut>), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn message_endpoints(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, msg_id)): Path<(String, String)>,
    QueryParams(p): QueryParams<ListParams>,
) -> ApiResult<Json<ListResponse<MessageEndpointOut>>> {
    let q = p.to_query(Order::Ascending)?;
    let msg = find_message(&state, &auth, &app_id, &msg_id).await?;
    let page = state
        .store
        .list_message_deliveries(&msg.app_id, &msg.id, &q)
        .await?;
    let mut out = Vec::with_capacity(page.data.len());
    for d in &page.data {
        // Endpoints deleted since have no row to show.
        if let Some(ep) = state
            .store
            .get_endpoint(&msg.app_id, &d.endpoint_id)
            .await?
        {
            out.push(MessageEndpointOut {
                id: ep.id,
                url: ep.url,
                description: ep.settings.description,
                uid: ep.uid,
                disabled: ep.disabled,
                channels: ep.settings.channels,
                filter_types: ep.settings.event_types.clone(),
                event_types: ep.settings.event_types,
                throttle_rate: ep.settings.throttle_rate,
                status: status_code(d.status),
                status_text: status_text(d.status),
                next_attempt: d.next_attempt,
                attempts: d.attempts,
                created_at: ep.created_at,
                updated_at: d.updated_at,
            });
        }
    }
    Ok(Json(ListResponse {
        data: out,
        iterator: page.iterator,
        prev_iterator: page.prev_iterator,
        done: page.done,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointMessageOut {
    pub id: String,
    pub event_type: String,
    pub event_id: Option<String>,
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    pub channels: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub timestamp: DateTime<Utc>,
    /// 0 success, 1 pending, 2 fail, 3 sending.
    #[schema(schema_with = crate::openapi::message_status)]
    pub status: u8,
    #[schema(schema_with = crate::openapi::message_status_text)]
    pub status_text: &'static str,
    pub next_attempt: Option<DateTime<Utc>>,
    /// hookline extension: attempts made so far.
    pub attempts: u32,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EndpointMessageParams {
    /// Items per page, 1 to 250 (default 50).
    #[param(schema_with = crate::openapi::limit)]
    pub limit: Option<u32>,
    /// `iterator` (or `prevIterator`) of a previous page.
    #[param(schema_with = crate::openapi::iterator)]
    pub iterator: Option<String>,
    /// 0 success, 1 pending, 2 fail, 3 sending.
    #[param(schema_with = crate::openapi::message_status)]
    pub status: Option<u8>,
    /// Include payloads (default false, as the Svix SDKs ask).
    pub with_content: Option<bool>,
    pub channel: Option<String>,
    pub tag: Option<String>,
    pub before: Option<DateTime<Utc>>,
    pub after: Option<DateTime<Utc>>,
    pub event_types: Option<String>,
    pub expanded_statuses: Option<bool>,
}

/// The messages sent to an endpoint and where each stands, newest first.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/msg", tag = "Message Attempt",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path), EndpointMessageParams),
    responses((status = 200, body = ListResponse<EndpointMessageOut>), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn endpoint_messages(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, ep_id)): Path<(String, String)>,
    QueryParams(p): QueryParams<EndpointMessageParams>,
) -> ApiResult<Json<ListResponse<EndpointMessageOut>>> {
    let q = ListParams {
        limit: p.limit,
        iterator: p.iterator.clone(),
        order: None,
    }
    .to_query(Order::Descending)?;
    let status = match p.status {
        None => None,
        Some(0) => Some(DeliveryStatus::Succeeded),
        Some(1) => Some(DeliveryStatus::Pending),
        Some(2) => Some(DeliveryStatus::Failed),
        Some(3) => Some(DeliveryStatus::Sending),
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError::query(
                "status",
                "must be 0 (success), 1 (pending), 2 (fail) or 3 (sending)",
            )]))
        }
    };
    let ep = find_endpoint(&state, &auth, &app_id, &ep_id).await?;
    let page = state
        .store
        .list_endpoint_deliveries(&ep.app_id, &ep.id, &q, status)
        .await?;
    let with_content = p.with_content.unwrap_or(false);
    let mut out = Vec::with_capacity(page.data.len());
    for d in &page.data {
        if let Some(m) = state.store.get_message(&ep.app_id, &d.msg_id).await? {
            out.push(endpoint_message(m, d, with_content));
        }
    }
    Ok(Json(ListResponse {
        data: out,
        iterator: page.iterator,
        prev_iterator: page.prev_iterator,
        done: page.done,
    }))
}

fn endpoint_message(m: Message, d: &DeliveryView, with_content: bool) -> EndpointMessageOut {
    let payload = if with_content {
        m.payload.to_string()
    } else {
        "{}".into()
    };
    EndpointMessageOut {
        id: m.id,
        event_type: m.event_type,
        event_id: m.event_id,
        payload: RawValue::from_string(payload).expect("stored payloads are valid JSON"),
        channels: m.channels,
        tags: m.tags,
        timestamp: m.created_at,
        status: status_code(d.status),
        status_text: status_text(d.status),
        next_attempt: d.next_attempt,
        attempts: d.attempts,
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(by_endpoint))
        .routes(routes!(by_message))
        .routes(routes!(get_one))
        .routes(routes!(message_endpoints))
        .routes(routes!(endpoint_messages))
}
