//! hookline's HTTP management API, compatible with the Svix REST API so the official Svix
//! SDKs work unchanged (`/api/v1/...`, camelCase JSON, prefixed ids, cursor pagination,
//! `{"code", "detail"}` errors).
//!
//! Each resource module owns its router; [`router`] merges them, adds auth, idempotency,
//! the body limit and trailing-slash tolerance, and generates the OpenAPI document from
//! the handlers' annotations, so the document cannot drift from the routes.
//! This crate talks to storage only through [`hookline_store::Store`]; it never delivers.

pub mod actions;
pub mod applications;
pub mod attempts;
pub mod auth;
pub mod endpoints;
pub mod error;
pub mod event_types;
pub mod extract;
pub mod idempotency;
pub mod messages;
pub mod openapi;
pub mod pagination;
pub mod rate_limit;
pub mod schema_bounds;
pub mod validate;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json, Router};
use hookline_store::Store;
use tower::Layer;
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::error::ApiError;
use crate::extract::BodyLimit;

/// Everything handlers share: one `Arc`, since axum clones the state for every request
/// and every middleware (cloning and dropping five `Arc`s per clone was about 3 % of the
/// tokio worker's time under load; docs/benchmark-journal.md, "Fourth pass").
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] holds.
pub struct Shared {
    pub store: Arc<dyn Store>,
    /// Requests per second per token (`--api-rate-limit`); `None`: no limit.
    pub api_rate_limit: Option<rate_limit::RateLimiter>,
    /// When this process last recorded each stored token's use (see
    /// [`auth::RecentUses`]).
    pub token_uses: auth::RecentUses,
    /// SHA-256 of admin tokens given in the configuration (compared in constant time).
    pub admin_token_hashes: Vec<[u8; 32]>,
    /// Base URL this server is reachable at, for links it hands out.
    pub public_url: String,
    /// Notified after new deliveries are committed, so they are picked up at once.
    pub wake: Arc<tokio::sync::Notify>,
    /// Renders the process's metrics in Prometheus text format (`None`: no `/metrics`).
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// The queue's figures for `/metrics`, read at most once a second however often it is
    /// scraped: counting a large backlog takes a while, and `/metrics` needs no token.
    pub queue_stats: tokio::sync::Mutex<Option<(std::time::Instant, hookline_store::QueueStats)>>,
    /// What this process does (`--role`): `all`, `api` or `worker`, as health says it.
    pub role: &'static str,
    /// The delivery workers' adaptive concurrency limit per endpoint with attempts in
    /// the last minute, in this process (`None`: it delivers nothing).
    pub concurrency_limits: Option<ConcurrencyLimits>,
    /// How new endpoints that name no scheme and bring no secret sign (`--default-signature`).
    pub default_signature: DefaultSignature,
    /// Which browser origins may call `/api/v1` (`--cors-allowed-origins`).
    pub cors: Cors,
}

/// Which web pages' origins may call the API from a browser (CORS).
///
/// Any origin is a safe default only because the API takes its credentials from the
/// `Authorization` header alone: a browser never attaches one by itself, so a page
/// from another origin can only act with a token it was given. Credentialed CORS
/// (`Access-Control-Allow-Credentials`) is never answered, so the console's cookie
/// could not ride along even if the API read cookies (it does not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Cors {
    /// `Access-Control-Allow-Origin: *`.
    #[default]
    AnyOrigin,
    /// Only these origins (`scheme://host[:port]`), echoed back when they match.
    Origins(Vec<String>),
}

impl Cors {
    /// The layer answering preflights and adding CORS headers. Every method and request
    /// header is allowed (the Svix SDKs send their own, such as `svix-req-id` and
    /// `idempotency-key`), and every response header is readable (`Retry-After`).
    pub fn layer(&self) -> tower_http::cors::CorsLayer {
        use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer, ExposeHeaders};
        let origin = match self {
            Cors::AnyOrigin => AllowOrigin::any(),
            Cors::Origins(list) => AllowOrigin::list(
                list.iter()
                    .filter_map(|o| axum::http::HeaderValue::from_str(o).ok()),
            ),
        };
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods(AllowMethods::mirror_request())
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(ExposeHeaders::any())
            .max_age(std::time::Duration::from_secs(3600))
    }
}

/// The signature of new endpoints that name no scheme and bring no secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DefaultSignature {
    /// Standard Webhooks with a generated `whsec_` secret (HMAC).
    #[default]
    Standard,
    /// Standard Webhooks with a generated `whsk_` ed25519 key pair.
    Ed25519,
}

/// Reads the adaptive concurrency limits (see [`Shared::concurrency_limits`]).
pub type ConcurrencyLimits = Arc<dyn Fn() -> Vec<(String, u32)> + Send + Sync>;

/// How long `/metrics` reuses the queue's figures.
const QUEUE_STATS_FOR: std::time::Duration = std::time::Duration::from_secs(1);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookline",
        description = "Self-hosted webhook delivery server with a Svix-compatible API.\n\n\
Integers are whole JSON numbers: `62`, not `62.0` (a number with a fraction part, even `.0`, \
is refused with 422). Rules that involve several fields, the server's clock or stored data \
(such as `until` after `since`, or a secret that fits the endpoint's signature scheme) are \
stated in the fields' descriptions; breaking one is a 422 that names the field."
    ),
    // Query parameters refer to these by `$ref`, but utoipa only collects schemas that
    // request and response bodies use, so they are registered here.
    components(schemas(pagination::Ordering)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct HealthOut {
    /// `ok`; with a 503, `degraded` (the disk is full: reads work, writes are refused) or
    /// `unavailable` (the store cannot be read).
    status: &'static str,
    /// With a 503: `storage_full` or `unavailable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'static str>,
    /// What this process does: `all` (the API and deliveries), `api` or `worker`.
    role: &'static str,
}

/// Health check: 200 when the server can read its store and write to it. No auth.
///
/// A full disk answers 503 (`degraded`, `storage_full`) although reads still work: every
/// create would be refused, so a load balancer should send traffic elsewhere, and an
/// operator's probe should notice. The store finds out by itself when space is back, so
/// taking the instance out of rotation does not keep it degraded.
#[utoipa::path(get, path = "/api/v1/health", tag = "Health",
    responses((status = 200, body = HealthOut),
        (status = 503, body = HealthOut, description = "storage full (`degraded`) or unreachable (`unavailable`)")))]
async fn health(State(state): State<AppState>) -> axum::response::Response {
    let role = state.role;
    let unhealthy = |status, code, detail, retry_after: Option<u32>| {
        let mut resp = (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthOut {
                status,
                code: Some(code),
                detail: Some(detail),
                role,
            }),
        )
            .into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    };
    match state.store.has_admin_token().await {
        Ok(_) if state.store.storage_full() => unhealthy(
            "degraded",
            "storage_full",
            error::STORAGE_FULL_DETAIL,
            Some(error::STORAGE_FULL_RETRY_AFTER_SECS),
        ),
        Ok(_) => Json(HealthOut {
            status: "ok",
            code: None,
            detail: None,
            role,
        })
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            unhealthy(
                "unavailable",
                "unavailable",
                "storage is not reachable",
                None,
            )
        }
    }
}

/// This API's OpenAPI 3.1 document. No auth.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "Health",
    responses((status = 200, description = "OpenAPI document", content_type = "application/json")))]
async fn openapi_json(Extension(doc): Extension<Arc<String>>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.as_str().to_owned(),
    )
}

/// Prometheus metrics: attempts by outcome, attempt durations, in-flight attempts,
/// queued and due deliveries, delivery lag (age of the oldest due work), and whether the
/// disk is full (`hookline_storage_full`, with the writes it refused). No auth,
/// like `/api/v1/health`: bind `--listen` to a private address or filter at the proxy.
async fn metrics_text(State(state): State<AppState>) -> axum::response::Response {
    let Some(render) = state.metrics.clone() else {
        return ApiError::NotFound("metrics are not enabled").into_response();
    };
    // Set at each scrape, so both are there (at 0) before the first full disk.
    metrics::gauge!("hookline_storage_full").set(if state.store.storage_full() {
        1.0
    } else {
        0.0
    });
    metrics::counter!("hookline_storage_full_writes_refused_total").increment(0);
    let now = hookline_store::now();
    // One reader at a time; the others wait for its figures instead of counting again.
    let mut cached = state.queue_stats.lock().await;
    let fresh = match &*cached {
        Some((at, q)) if at.elapsed() < QUEUE_STATS_FOR => Ok(q.clone()),
        _ => state.store.queue_stats(now).await.inspect(|q| {
            *cached = Some((std::time::Instant::now(), q.clone()));
        }),
    };
    drop(cached);
    match fresh {
        Ok(q) => {
            metrics::gauge!("hookline_deliveries_queued").set(q.queued as f64);
            metrics::gauge!("hookline_deliveries_due").set(q.due as f64);
            let lag = q
                .oldest_due
                .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            metrics::gauge!("hookline_delivery_lag_seconds").set(lag);
        }
        Err(e) => tracing::warn!(error = %e, "reading queue stats for metrics failed"),
    }
    let mut text = render();
    // Rendered here, not through the recorder: a gauge per endpoint would stay in the
    // recorder forever, and this one must list only endpoints with recent work.
    if let Some(limits) = &state.concurrency_limits {
        use std::fmt::Write;
        let mut limits = limits();
        limits.sort();
        text.push_str(
            "# HELP hookline_endpoint_concurrency_limit Adaptive concurrency limit of each endpoint with attempts in the last minute.\n\
             # TYPE hookline_endpoint_concurrency_limit gauge\n",
        );
        for (endpoint, limit) in limits {
            let _ = writeln!(
                text,
                "hookline_endpoint_concurrency_limit{{endpoint=\"{endpoint}\"}} {limit}"
            );
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// tower-http's failure log, except for 503s: those are a full disk (or a store that
/// cannot be read), which the store logs once per episode, not once per refused request.
fn log_failure(
    failure: tower_http::classify::ServerErrorsFailureClass,
    latency: std::time::Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass::StatusCode as Status;
    let latency_ms = latency.as_millis();
    match failure {
        Status(StatusCode::SERVICE_UNAVAILABLE) => {
            tracing::debug!(classification = %failure, latency_ms, "response failed")
        }
        _ => tracing::error!(classification = %failure, latency_ms, "response failed"),
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route")
}

async fn method_not_allowed(req: Request) -> impl IntoResponse {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(error::HttpErrorOut {
            code: "method_not_allowed".into(),
            detail: format!("{} is not allowed on {}", req.method(), req.uri().path()),
        }),
    )
}

/// The API's routes and its generated OpenAPI document.
pub fn routes_and_spec(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let protected = OpenApiRouter::new()
        .merge(applications::router())
        .merge(event_types::router())
        .merge(endpoints::router())
        .merge(messages::router())
        .merge(attempts::router())
        .merge(actions::router())
        .merge(auth::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_auth,
        ));
    let (router, mut spec) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(openapi_json))
        .merge(protected)
        .with_state(state)
        .split_for_parts();
    qualify_operation_ids(&mut spec);
    document_common_errors(&mut spec);
    constrain_path_parameters(&mut spec);
    (router, spec)
}

/// Adds the error answers every operation of a kind can give, where its own annotation
/// left them out: a token is checked on every operation that needs one (401, and 429
/// with `--api-rate-limit`), and a read-only or application token may not write (403);
/// the store may be full or unreachable (503); an id in the path may name nothing the
/// token sees (404); a query parameter may be invalid (422); a body may be malformed or
/// not JSON (400), over the size limit (413) or invalid (422); a write may take a uid
/// that is taken, or (a `POST` with an `idempotency-key`) meet the same key still
/// running (409).
fn document_common_errors(spec: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let answer = |text: &str, schema: &str| {
        ResponseBuilder::new()
            .description(text)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(schema)))
                    .build(),
            )
            .build()
    };
    for (path, item) in spec.paths.paths.iter_mut() {
        let has_id = path.contains('{');
        let ops = [
            (&mut item.get, "get"),
            (&mut item.put, "put"),
            (&mut item.post, "post"),
            (&mut item.delete, "delete"),
            (&mut item.patch, "patch"),
        ];
        for (op, method) in ops {
            let is_get = method == "get";
            let writes = matches!(method, "post" | "put" | "patch");
            let Some(op) = op.as_mut() else { continue };
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            let has_query = op.parameters.as_ref().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p.parameter_in == utoipa::openapi::path::ParameterIn::Query)
            });
            let mut add = |code: &str, text: &str, schema: &str| {
                op.responses
                    .responses
                    .entry(code.to_string())
                    .or_insert_with(|| answer(text, schema).into());
            };
            if secured {
                add(
                    "401",
                    "No token, or one that is wrong, expired or revoked.",
                    "HttpErrorOut",
                );
                add(
                    "429",
                    "This token is over `--api-rate-limit`; retry after `Retry-After` seconds.",
                    "HttpErrorOut",
                );
                if has_id {
                    add(
                        "404",
                        "Nothing this token can see has this id or uid.",
                        "HttpErrorOut",
                    );
                }
                if !is_get {
                    add(
                        "403",
                        "A read-only token, or an application's token where an admin token is needed.",
                        "HttpErrorOut",
                    );
                }
                add(
                    "503",
                    "The disk is full (`storage_full`, a write) or the database cannot be reached (`unavailable`); retry after `Retry-After`.",
                    "HttpErrorOut",
                );
            }
            if has_query {
                add(
                    "422",
                    "A query parameter is invalid; `detail` names it.",
                    "ValidationErrorOut",
                );
            }
            if op.request_body.is_some() {
                add(
                    "400",
                    "The body is not JSON, or not sent as `application/json`.",
                    "HttpErrorOut",
                );
                add(
                    "413",
                    "The body is over the size limit (`--body-limit-bytes`).",
                    "HttpErrorOut",
                );
                add(
                    "422",
                    "A field is missing or invalid; `detail` names each one.",
                    "ValidationErrorOut",
                );
            }
            if secured && writes {
                add(
                    "409",
                    "A request with the same `idempotency-key` is still running (retry), or the uid / eventId is taken.",
                    "HttpErrorOut",
                );
            }
        }
    }
}

/// Every id in a path (an id, a uid, an event id, an event type's name) is 1 to 256 of
/// a-z, A-Z, 0-9, `-`, `_` and `.`: what uids may be and ids are. Anything else names
/// nothing (404), and where a `PUT` would create with it as uid, it could not be one.
fn constrain_path_parameters(spec: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    for item in spec.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            for p in op.parameters.iter_mut().flatten() {
                if p.parameter_in == ParameterIn::Path {
                    p.schema = Some(openapi::path_id().into());
                }
            }
        }
    }
}

/// utoipa names each operation after its handler function, and those repeat across
/// modules (`list`, `get_one`), but OpenAPI needs unique operation ids. Qualifies them
/// with the tag, Svix style: `v1.endpoint.get-one`.
fn qualify_operation_ids(spec: &mut utoipa::openapi::OpenApi) {
    let kebab = |s: &str| s.to_ascii_lowercase().replace([' ', '_'], "-");
    for item in spec.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for op in ops.into_iter().flatten() {
            let tag = op.tags.as_ref().and_then(|t| t.first()).map(|t| kebab(t));
            if let (Some(tag), Some(id)) = (tag, op.operation_id.as_mut()) {
                *id = format!("v1.{tag}.{}", kebab(id));
            }
        }
    }
}

/// What a `--role worker` process serves: health and metrics; every other path is a 404
/// saying why (a load balancer should send API calls to the processes that serve it).
pub fn worker_router(state: AppState) -> ApiService {
    let router = Router::new()
        .route("/api/v1/health", axum::routing::get(health))
        .route("/metrics", axum::routing::get(metrics_text))
        .with_state(state)
        .fallback(not_served_here)
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(tower_http::trace::TraceLayer::new_for_http().on_failure(log_failure));
    NormalizePathLayer::trim_trailing_slash().layer(router)
}

async fn not_served_here() -> ApiError {
    ApiError::NotFound(
        "this process runs with --role worker: it delivers, and serves only /api/v1/health and /metrics; send API calls to a process with --role all or api",
    )
}

/// The complete API service, as [`router`] builds it.
pub type ApiService = NormalizePath<Router>;

/// The complete API service: routes, limits, JSON errors for unknown paths and methods,
/// CORS for browser clients, and trailing slashes accepted everywhere.
pub fn router(state: AppState, body_limit: usize) -> ApiService {
    let (router, spec) = routes_and_spec(state.clone());
    let doc = Arc::new(spec.to_json().expect("OpenAPI document serializes"));
    // CORS wraps the API's routes and its not-found answers, outside authentication so
    // that preflights (which carry no token) are answered. `/metrics`, added after it,
    // stays same-origin: a web page should not read an internal server's figures.
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(state.cors.layer())
        .route(
            "/metrics",
            axum::routing::get(metrics_text).with_state(state),
        )
        .layer(Extension(doc))
        .layer(Extension(BodyLimit(body_limit)))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::trace::TraceLayer::new_for_http().on_failure(log_failure));
    // Routing happens inside the router, so the slash must be trimmed before it.
    NormalizePathLayer::trim_trailing_slash().layer(router)
}
