//! Operator actions on deliveries (Svix paths): resend one message to one endpoint,
//! recover an endpoint's failed deliveries since a time, and per-endpoint counts; and
//! (a hookline extension) an endpoint's attempts over time, for charts and health.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{visible_app, Auth};
use crate::error::{ApiError, ApiResult, FieldError, HttpErrorOut, ValidationErrorOut};
use crate::extract::{JsonBody, QueryParams};
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

/// The longest window of [`attempt_stats`]: its rows are read and added up per request
/// (31 days of an endpoint: at most 744 hours' rows per duration bucket in use).
const MAX_STATS_WINDOW_DAYS: i64 = 31;
/// The most buckets one answer has.
const MAX_STATS_BUCKETS: i64 = 2000;

/// An endpoint's attempts are counted per hour: its windows are whole hours.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttemptStatsParams {
    /// Start of the window (RFC 3339; default: 24 hours before `until`), rounded down to
    /// a whole hour.
    pub since: Option<DateTime<Utc>>,
    /// End of the window, excluded (default: now), rounded up to a whole hour; after
    /// `since`, at most 31 days later.
    pub until: Option<DateTime<Utc>>,
    /// Bucket width in seconds, a whole number of hours: 3600 to 86400 (default 3600).
    #[param(minimum = 3600, maximum = 86400, multiple_of = 3600)]
    pub bucket_seconds: Option<u32>,
}

/// Every endpoint's attempts are counted per minute and per hour: windows are whole
/// minutes, or whole hours for buckets of whole hours.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AllAttemptStatsParams {
    /// Start of the window (RFC 3339; default: 24 hours before `until`), rounded down to
    /// a whole minute (a whole hour when `bucket_seconds` is whole hours).
    pub since: Option<DateTime<Utc>>,
    /// End of the window, excluded (default: now), rounded up likewise; after `since`,
    /// at most 31 days later.
    pub until: Option<DateTime<Utc>>,
    /// Bucket width in seconds, a whole number of minutes: 60 to 86400 (default 3600);
    /// the window holds at most 2000 buckets.
    #[param(minimum = 60, maximum = 86400, multiple_of = 60)]
    pub bucket_seconds: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptBucketOut {
    pub start: DateTime<Utc>,
    pub succeeded: u64,
    pub failed: u64,
    /// Median attempt duration (nearest rank); `null` without attempts.
    pub p50_ms: Option<u64>,
    /// 99th percentile attempt duration (nearest rank); `null` without attempts.
    pub p99_ms: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptStatsOut {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub bucket_seconds: u32,
    /// Every bucket of the window, oldest first, those without attempts included.
    pub buckets: Vec<AttemptBucketOut>,
    pub succeeded: u64,
    pub failed: u64,
}

/// Attempts made to the endpoint in a window, by outcome and with duration percentiles,
/// per time bucket (hookline extension). Read from counts kept per hour as attempts are
/// made: the percentiles are the top of a duration bucket, at most 25 % above the exact
/// value (exact below 8 ms).
#[utoipa::path(get, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/stats/attempts",
    tag = "Endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path), AttemptStatsParams),
    responses((status = 200, body = AttemptStatsOut), (status = 404, body = HttpErrorOut),
        (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn attempt_stats(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, ep_id)): Path<(String, String)>,
    QueryParams(p): QueryParams<AttemptStatsParams>,
) -> ApiResult<Json<AttemptStatsOut>> {
    let w = StatsWindow::check(p.since, p.until, p.bucket_seconds, HOUR)?;
    let app = visible_app(&state, &auth, &app_id).await?;
    let ep = state
        .store
        .get_endpoint(&app.id, &ep_id)
        .await?
        .ok_or(ApiError::NotFound("endpoint not found"))?;
    let found = state
        .store
        .endpoint_attempt_buckets(&app.id, &ep.id, w.since, w.until, w.width)
        .await?;
    Ok(Json(w.answer(found)))
}

/// Attempts made to every endpoint in a window, by outcome and with duration
/// percentiles, per time bucket (hookline extension; admin tokens only). Read from
/// counts kept per minute and per hour, as for an endpoint's.
#[utoipa::path(get, path = "/api/v1/stats/attempts", tag = "Statistics",
    params(AllAttemptStatsParams),
    responses((status = 200, body = AttemptStatsOut), (status = 403, body = HttpErrorOut),
        (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn all_attempt_stats(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    QueryParams(p): QueryParams<AllAttemptStatsParams>,
) -> ApiResult<Json<AttemptStatsOut>> {
    auth.require_admin()?;
    let w = StatsWindow::check(p.since, p.until, p.bucket_seconds, MINUTE)?;
    let found = state
        .store
        .attempt_buckets(w.since, w.until, w.width)
        .await?;
    Ok(Json(w.answer(found)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FailingParams {
    /// How many to list, 1 to 250 (default 50).
    #[param(schema_with = crate::openapi::limit)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailingEndpointOut {
    pub app_id: String,
    pub id: String,
    pub url: String,
    pub disabled: bool,
    pub failing_since: Option<DateTime<Utc>>,
    /// Whether a delivery to it is queued or in flight, so it will be tried again (a
    /// retry due, or a message waiting its turn); `false`: every delivery it had failed
    /// for good and nothing more is queued.
    pub retrying: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailingEndpointsOut {
    /// The longest failing first.
    pub data: Vec<FailingEndpointOut>,
    /// How many endpoints are failing in all.
    pub total: u64,
}

/// Endpoints of every application failing with no success since a time, the longest
/// failing first (hookline extension; admin tokens only).
#[utoipa::path(get, path = "/api/v1/stats/failing-endpoints", tag = "Statistics",
    params(FailingParams),
    responses((status = 200, body = FailingEndpointsOut), (status = 403, body = HttpErrorOut),
        (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn failing_endpoints(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    QueryParams(p): QueryParams<FailingParams>,
) -> ApiResult<Json<FailingEndpointsOut>> {
    auth.require_admin()?;
    let limit = p.limit.unwrap_or(50);
    if !(1..=250).contains(&limit) {
        return Err(ApiError::Validation(vec![FieldError::query(
            "limit",
            "must be between 1 and 250",
        )]));
    }
    let (list, total) = state.store.failing_endpoints(limit as usize).await?;
    Ok(Json(FailingEndpointsOut {
        data: list
            .into_iter()
            .map(|e| FailingEndpointOut {
                app_id: e.endpoint.app_id,
                id: e.endpoint.id,
                url: e.endpoint.url,
                disabled: e.endpoint.disabled,
                failing_since: e.endpoint.failing_since,
                retrying: e.queued,
            })
            .collect(),
        total,
    }))
}

/// Seconds in the units statistics are kept in.
const HOUR: u32 = 3600;
const MINUTE: u32 = 60;

/// A checked window of [`AttemptStatsParams`] or [`AllAttemptStatsParams`], its ends
/// rounded out to the rows the statistics are kept in.
struct StatsWindow {
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    width: chrono::Duration,
    bucket_seconds: u32,
    count: i64,
}

impl StatsWindow {
    /// `unit`: the finest rows there are ([`HOUR`] for an endpoint, [`MINUTE`] for
    /// every endpoint); buckets are whole units, and whole hours read hours.
    fn check(
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        bucket_seconds: Option<u32>,
        unit: u32,
    ) -> ApiResult<Self> {
        let bucket_seconds = bucket_seconds.unwrap_or(3600);
        let refuse = |field: &str, msg: &str| {
            ApiError::Validation(vec![FieldError::query(field, msg.to_string())])
        };
        if !(unit..=86_400).contains(&bucket_seconds) || !bucket_seconds.is_multiple_of(unit) {
            return Err(refuse(
                "bucket_seconds",
                if unit == HOUR {
                    "must be a whole number of hours, 3600 to 86400 (an endpoint's attempts are counted per hour)"
                } else {
                    "must be a whole number of minutes, 60 to 86400"
                },
            ));
        }
        // Out to whole rows: hours for buckets of whole hours.
        let step = i64::from(if bucket_seconds.is_multiple_of(HOUR) {
            HOUR
        } else {
            unit
        });
        let round = |t: DateTime<Utc>, up: bool| {
            let s = t.timestamp();
            let down = s.div_euclid(step) * step;
            let s = if up && (down != s || t.timestamp_subsec_nanos() != 0) {
                down + step
            } else {
                down
            };
            DateTime::from_timestamp(s, 0).unwrap_or(t)
        };
        // By default the 24 hours up to the end of the current row.
        let given = (since, until);
        let until = round(until.unwrap_or_else(hookline_store::now), true);
        let since = since.map_or(until - chrono::Duration::hours(24), |t| round(t, false));
        if let (Some(since), Some(until)) = given {
            if until <= since {
                return Err(refuse("until", "must be after since"));
            }
        }
        if until <= since {
            return Err(refuse("until", "must be after since"));
        }
        if until - since > chrono::Duration::days(MAX_STATS_WINDOW_DAYS) {
            return Err(refuse("since", "the window must be at most 31 days"));
        }
        let window = until - since;
        let width = chrono::Duration::seconds(i64::from(bucket_seconds));
        let count =
            (window.num_milliseconds() + width.num_milliseconds() - 1) / width.num_milliseconds();
        if count > MAX_STATS_BUCKETS {
            return Err(refuse(
                "bucket_seconds",
                "too many buckets for the window (at most 2000): choose wider buckets",
            ));
        }
        Ok(StatsWindow {
            since,
            until,
            width,
            bucket_seconds,
            count,
        })
    }

    /// Every bucket of the window, with the store's figures where it has some.
    fn answer(&self, found: Vec<hookline_store::AttemptBucket>) -> AttemptStatsOut {
        let (since, width, count) = (self.since, self.width, self.count);
        let mut buckets: Vec<AttemptBucketOut> = (0..count)
            .map(|i| AttemptBucketOut {
                start: since + width * i as i32,
                succeeded: 0,
                failed: 0,
                p50_ms: None,
                p99_ms: None,
            })
            .collect();
        for b in found {
            if let Some(out) = buckets.get_mut(b.index as usize) {
                out.succeeded = b.succeeded;
                out.failed = b.failed;
                out.p50_ms = Some(b.p50_ms);
                out.p99_ms = Some(b.p99_ms);
            }
        }
        AttemptStatsOut {
            since,
            until: self.until,
            bucket_seconds: self.bucket_seconds,
            succeeded: buckets.iter().map(|b| b.succeeded).sum(),
            failed: buckets.iter().map(|b| b.failed).sum(),
            buckets,
        }
    }
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
        .routes(routes!(attempt_stats))
        .routes(routes!(all_attempt_stats))
        .routes(routes!(failing_endpoints))
}
