//! `/api/v1/app/{app_id}/msg`: event occurrences. The payload is kept as the exact bytes
//! received (a JSON object), because those bytes are what gets signed and delivered.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use hookline_store::{new_id, Message, MessageQuery, Order};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::applications::ApplicationIn;
use crate::auth::{visible_app, Auth};
use crate::error::{ApiError, ApiResult, FieldError, HttpErrorOut, ValidationErrorOut};
use crate::extract::{JsonBody, QueryParams};
use crate::pagination::{ListParams, ListResponse};
use crate::validate::{self, Errors};
use crate::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageIn {
    /// The event type's name. If the application or the event type validates payloads
    /// (`validatePayloads`), it must be a known event type and the payload must match its
    /// newest schema (else 422 naming the field).
    #[schema(schema_with = crate::openapi::event_type_name)]
    pub event_type: String,
    /// The sender's id for this event; unique per application (409 on reuse).
    #[schema(schema_with = crate::openapi::optional_id)]
    pub event_id: Option<String>,
    /// The event payload: a JSON object, stored and delivered byte for byte.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    #[schema(schema_with = crate::openapi::channels)]
    pub channels: Option<Vec<String>>,
    #[schema(schema_with = crate::openapi::tags)]
    pub tags: Option<Vec<String>>,
    /// Creates the application (with the path's id as uid) if it does not exist yet
    /// (admin tokens only).
    #[serde(default, deserialize_with = "crate::extract::optional_object")]
    pub application: Option<ApplicationIn>,
    /// Deliver no earlier than this time (at most 30 days ahead of the server's clock; a
    /// past time means now).
    pub deliver_at: Option<DateTime<Utc>>,
    /// Days to keep the payload (1 to 36500); afterwards the message reads
    /// `{"expired": true}` and its payload is deleted once no delivery of it is still
    /// owed. Without it (or `payloadRetentionHours`), the payload is kept as long as the
    /// message (the server's `--retention`). Not with `payloadRetentionHours`.
    #[schema(minimum = 1, maximum = 36500)]
    pub payload_retention_period: Option<i64>,
    /// Hours to keep the payload (1 to 876000), as `payloadRetentionPeriod` but finer.
    /// Not with `payloadRetentionPeriod`.
    #[schema(minimum = 1, maximum = 876000)]
    pub payload_retention_hours: Option<i64>,
}

/// The most days a payload retention may ask for (100 years).
const MAX_PAYLOAD_RETENTION_DAYS: i64 = 36_500;

impl MessageIn {
    /// How long the payload is kept, from `payloadRetentionPeriod` or `…Hours`.
    fn payload_retention(&self) -> Option<chrono::Duration> {
        match (self.payload_retention_period, self.payload_retention_hours) {
            (Some(days), _) => Some(chrono::Duration::days(days)),
            (None, Some(hours)) => Some(chrono::Duration::hours(hours)),
            (None, None) => None,
        }
    }
}

/// What a message reads as once its payload retention has ended, as Svix shows it.
const EXPIRED_PAYLOAD: &str = r#"{"expired":true}"#;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageOut {
    #[schema(example = "msg_2yZx1N4kC8pQe3Rj5TbVw7LmYhD")]
    pub id: String,
    #[schema(example = "order.created")]
    pub event_type: String,
    #[schema(example = "order-1001")]
    pub event_id: Option<String>,
    /// The payload as sent (`{}` when asked without content; `{"expired": true}` once its
    /// retention has ended).
    #[schema(value_type = Object, example = json!({"orderId": 1001, "total": "25.00"}))]
    pub payload: Box<RawValue>,
    pub channels: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub timestamp: DateTime<Utc>,
    pub deliver_at: Option<DateTime<Utc>>,
}

impl MessageOut {
    pub(crate) fn new(m: Message, with_content: bool) -> Self {
        let payload = if with_content && m.payload_expired(hookline_store::now()) {
            RawValue::from_string(EXPIRED_PAYLOAD.into())
        } else if with_content {
            RawValue::from_string(m.payload.to_string())
        } else {
            RawValue::from_string("{}".into())
        }
        .expect("stored payloads are valid JSON");
        Self {
            id: m.id,
            event_type: m.event_type,
            event_id: m.event_id,
            payload,
            channels: m.channels,
            tags: m.tags,
            timestamp: m.created_at,
            deliver_at: m.deliver_at,
        }
    }
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContentParams {
    /// Include the payload in the response (default true).
    #[serde(default = "default_true")]
    pub with_content: bool,
}

fn check_in(m: &MessageIn) -> ApiResult<()> {
    let mut e = Errors::default();
    e.check(validate::event_type_name("eventType", &m.event_type));
    if let Some(id) = &m.event_id {
        e.check(validate::uid("eventId", id));
    }
    if !m.payload.get().trim_start().starts_with('{') {
        e.add("payload", "must be a JSON object");
    }
    if let Some(c) = &m.channels {
        e.check(validate::channels("channels", c));
    }
    if let Some(at) = m.deliver_at {
        if at > hookline_store::now() + chrono::Duration::days(30) {
            e.add("deliverAt", "must be at most 30 days in the future");
        }
    }
    match (m.payload_retention_period, m.payload_retention_hours) {
        (Some(_), Some(_)) => e.add(
            "payloadRetentionHours",
            "cannot be given with payloadRetentionPeriod; give one of them",
        ),
        (Some(days), None) if !(1..=MAX_PAYLOAD_RETENTION_DAYS).contains(&days) => e.add(
            "payloadRetentionPeriod",
            format!("must be between 1 and {MAX_PAYLOAD_RETENTION_DAYS} days"),
        ),
        (None, Some(hours)) if !(1..=MAX_PAYLOAD_RETENTION_DAYS * 24).contains(&hours) => e.add(
            "payloadRetentionHours",
            format!(
                "must be between 1 and {} hours",
                MAX_PAYLOAD_RETENTION_DAYS * 24
            ),
        ),
        _ => {}
    }
    if let Some(tags) = &m.tags {
        if tags.len() > 5 {
            e.add("tags", "at most 5 tags");
        }
        for (i, t) in tags.iter().enumerate() {
            e.check(validate::uid(&format!("tags.{i}"), t));
        }
    }
    e.finish()
}

/// When the application or the event type asks for it, the payload must match the event
/// type's newest schema; each mismatch is reported at its path under `payload`.
async fn check_payload(
    state: &AppState,
    app: &hookline_store::Application,
    event_type: &str,
    payload: &RawValue,
) -> ApiResult<()> {
    let et = state.store.get_event_type(event_type).await?;
    if !app.validate_payloads && !et.as_ref().is_some_and(|e| e.validate_payloads) {
        return Ok(());
    }
    let Some(et) = et else {
        return Err(ApiError::field(
            "eventType",
            "is not a known event type, and this application validates payloads against event type schemas",
        ));
    };
    let Some(schema) = crate::event_types::newest_schema(et.schemas.as_ref()) else {
        return Ok(());
    };
    // Schemas stored before their bounds were checked are checked here too, so none can
    // make validation run away.
    if let Err(why) = crate::schema_bounds::check(schema) {
        return Err(ApiError::field(
            "eventType",
            format!("the schema of {event_type} cannot be validated: it {why}; fix the event type's schema"),
        ));
    }
    let validator = jsonschema::validator_for(schema).map_err(|e| {
        ApiError::Internal(format!(
            "stored schema of {event_type} does not compile: {e}"
        ))
    })?;
    let value: serde_json::Value = serde_json::from_str(payload.get()).map_err(|e| {
        if e.to_string().starts_with("recursion limit exceeded") {
            ApiError::field(
                "payload",
                format!(
                    "nests deeper than {} levels, the most that payload validation supports",
                    crate::schema_bounds::MAX_PAYLOAD_DEPTH
                ),
            )
        } else {
            ApiError::Internal(format!("payload re-parse: {e}"))
        }
    })?;
    let errors: Vec<FieldError> = validator
        .iter_errors(&value)
        .take(20)
        .map(|err| {
            let mut loc = vec!["body".to_string(), "payload".to_string()];
            let pointer = err.instance_path.to_string();
            loc.extend(
                pointer
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.replace("~1", "/").replace("~0", "~")),
            );
            FieldError {
                loc,
                msg: format!("does not match the {event_type} schema: {err}"),
                kind: "schema_error".into(),
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Create a message: committed durably before the 202 is sent.
#[utoipa::path(post, path = "/api/v1/app/{app_id}/msg", tag = "Message",
    params(("app_id" = String, Path), ContentParams), request_body = MessageIn,
    responses((status = 202, body = MessageOut), (status = 409, body = HttpErrorOut),
        (status = 413, body = HttpErrorOut), (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(app_id): Path<String>,
    QueryParams(params): QueryParams<ContentParams>,
    JsonBody(input): JsonBody<MessageIn>,
) -> ApiResult<(StatusCode, Json<MessageOut>)> {
    check_in(&input)?;
    let payload_retention = input.payload_retention();
    let app = match (visible_app(&state, &auth, &app_id).await, input.application) {
        (Ok(app), _) => app,
        (Err(ApiError::NotFound(_)), Some(mut new_app)) if auth.require_admin().is_ok() => {
            if new_app.uid.is_none() {
                // An application id that names nothing is not a uid to create it with.
                if app_id.starts_with("app_") {
                    return Err(ApiError::NotFound("application not found"));
                }
                validate::uid_not_id("application.uid", &app_id, "app")?;
                new_app.uid = Some(app_id.clone());
            }
            match crate::applications::create(&state, new_app).await {
                Ok(app) => app,
                // Two first messages raced to create the app: use the winner's.
                Err(ApiError::Conflict(_)) => visible_app(&state, &auth, &app_id).await?,
                Err(ApiError::Validation(v)) => {
                    return Err(ApiError::Validation(
                        v.into_iter()
                            .map(|mut f| {
                                f.loc.insert(1, "application".into());
                                f
                            })
                            .collect(),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        (Err(e), _) => return Err(e),
    };
    check_payload(&state, &app, &input.event_type, &input.payload).await?;
    let created_at = hookline_store::now();
    let payload_expires_at = payload_retention.map(|keep| created_at + keep);
    let msg = Message {
        id: new_id("msg"),
        app_id: app.id,
        event_id: input.event_id,
        event_type: input.event_type,
        payload: input.payload.get().into(),
        channels: input.channels,
        tags: input.tags,
        created_at,
        deliver_at: input.deliver_at,
        payload_expires_at,
    };
    // The store tells the dispatcher about the new deliveries itself (its intake).
    let msg = state.store.create_message(msg).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageOut::new(msg, params.with_content)),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageListParams {
    /// Items per page, 1 to 250 (default 50).
    #[param(schema_with = crate::openapi::limit)]
    pub limit: Option<u32>,
    /// `iterator` (or `prevIterator`) of a previous page.
    #[param(schema_with = crate::openapi::iterator)]
    pub iterator: Option<String>,
    /// Only messages on this channel.
    pub channel: Option<String>,
    /// Only messages created before this time (RFC 3339).
    pub before: Option<DateTime<Utc>>,
    /// Only messages created after this time (RFC 3339).
    pub after: Option<DateTime<Utc>>,
    /// Include payloads (default true).
    #[serde(default = "default_true")]
    pub with_content: bool,
    /// Only these event types (comma-separated, at most 250).
    pub event_types: Option<String>,
    /// Only messages with this tag.
    pub tag: Option<String>,
    /// hookline extension: `fail` lists only the messages with at least one delivery
    /// that failed for good (a delivery's `statusText` `fail`), in the listing's order.
    #[param(schema_with = crate::openapi::message_status_filter)]
    pub status: Option<String>,
}

/// List an application's messages, newest first.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/msg", tag = "Message",
    params(("app_id" = String, Path), MessageListParams),
    responses((status = 200, body = ListResponse<MessageOut>), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(app_id): Path<String>,
    QueryParams(p): QueryParams<MessageListParams>,
) -> ApiResult<Json<ListResponse<MessageOut>>> {
    let list = ListParams {
        limit: p.limit,
        iterator: p.iterator,
        order: None,
    }
    .to_query(Order::Descending)?;
    let event_types = p.event_types.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    });
    if let Some(types) = &event_types {
        if types.len() > validate::MAX_FILTER_TYPES {
            return Err(ApiError::Validation(vec![FieldError::query(
                "event_types",
                "too many event types",
            )]));
        }
    }
    // Only failures have an index to walk (see `MessageQuery::failed`).
    let failed = match p.status.as_deref() {
        None => false,
        Some("fail") => true,
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError::query(
                "status",
                "must be fail (messages with a delivery that failed for good; other states have no filter)",
            )]))
        }
    };
    let app = visible_app(&state, &auth, &app_id).await?;
    let q = MessageQuery {
        list,
        event_types,
        channel: p.channel,
        tag: p.tag,
        before: p.before,
        after: p.after,
        failed,
    };
    let page = state.store.list_messages(&app.id, &q).await?;
    let with_content = p.with_content;
    Ok(Json(ListResponse::from_page(page, |m| {
        MessageOut::new(m, with_content)
    })))
}

/// Get a message by id or eventId.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/msg/{msg_id}", tag = "Message",
    params(("app_id" = String, Path), ("msg_id" = String, Path), ContentParams),
    responses((status = 200, body = MessageOut), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn get_one(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, msg_id)): Path<(String, String)>,
    QueryParams(params): QueryParams<ContentParams>,
) -> ApiResult<Json<MessageOut>> {
    let app = visible_app(&state, &auth, &app_id).await?;
    let msg = state
        .store
        .get_message(&app.id, &msg_id)
        .await?
        .ok_or(ApiError::NotFound("message not found"))?;
    Ok(Json(MessageOut::new(msg, params.with_content)))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one))
}
