//! `/api/v1/app/{app_id}/endpoint`: a customer's URLs, their signing secrets, which event
//! types and channels each wants, and hookline's delivery settings for it.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use hookline_retry::RetryPolicy;
use hookline_signing::{Ed25519Secret, EndpointKey, StandardSecret};
use hookline_store::{
    new_id, Endpoint, EndpointSettings, Order, Rejected, SecretEntry, SignatureConfig,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{visible_app, Auth};
use crate::error::{ApiError, ApiResult, HttpErrorOut, ValidationErrorOut};
use crate::extract::{JsonBody, OptionalJsonBody, Patch, QueryParams};
use crate::pagination::{ListParams, ListResponse};
use crate::validate::{self, Errors};
use crate::{AppState, DefaultSignature};

/// Default grace period of a rotated-out secret, as in Svix.
const DEFAULT_GRACE_SECS: u64 = 24 * 3600;
const MAX_GRACE_SECS: u64 = 7 * 24 * 3600;
/// Secrets kept per endpoint (the current one plus those still in a grace period).
const MAX_SECRETS: usize = 5;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointIn {
    #[schema(schema_with = crate::openapi::url)]
    pub url: String,
    #[schema(schema_with = crate::openapi::description)]
    pub description: Option<String>,
    /// Your own id for the endpoint, usable in place of its `id`.
    #[schema(schema_with = crate::openapi::endpoint_uid)]
    pub uid: Option<String>,
    pub disabled: Option<bool>,
    /// Event types this endpoint receives (omit for all). `eventTypes` is accepted too.
    #[serde(alias = "eventTypes")]
    #[schema(schema_with = crate::openapi::filter_types)]
    pub filter_types: Option<Vec<String>>,
    /// Channels this endpoint receives (omit for all).
    #[schema(schema_with = crate::openapi::channels)]
    pub channels: Option<Vec<String>>,
    /// Signing secret: `whsec_` + base64 (HMAC, `v1,` signatures) or `whsk_` + base64 of
    /// a 64-byte ed25519 key pair (`v1a,` signatures; the scheme becomes `ed25519`).
    /// Generated when omitted, of the kind `signature.scheme` asks for (else the server's
    /// `--default-signature`).
    #[schema(schema_with = crate::openapi::secret)]
    pub secret: Option<String>,
    /// Deliveries per second at most. `rateLimit` is accepted too.
    #[serde(alias = "rateLimit")]
    #[schema(minimum = 1, maximum = 100000)]
    pub throttle_rate: Option<u32>,
    #[schema(schema_with = crate::openapi::metadata)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Sent with every delivery.
    #[schema(schema_with = crate::openapi::optional_headers)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Accepted for Svix compatibility and ignored.
    pub version: Option<i64>,
    /// hookline extension: overrides the application's retry policy.
    #[schema(schema_with = crate::openapi::nullable_retry_policy)]
    pub retry_policy: Option<RetryPolicy>,
    /// hookline extension: per-attempt timeout, 100 to 60000 ms (default 15000).
    #[schema(minimum = 100, maximum = 60000)]
    pub timeout_ms: Option<u32>,
    /// hookline extension: concurrent deliveries at most (absent: adaptive, up to the
    /// server's `--max-endpoint-concurrency`; one at a time while the endpoint is
    /// failing, until an attempt succeeds).
    #[schema(minimum = 1, maximum = 1000)]
    pub max_concurrency: Option<u32>,
    /// hookline extension: how deliveries are signed (default: the server's
    /// `--default-signature`, or `ed25519` when `secret` is a `whsk_` key pair).
    #[schema(value_type = Option<SignatureDoc>)]
    pub signature: Option<SignatureConfig>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPatch {
    /// Absent or `null`: unchanged (as for every field without a word on `null`).
    #[schema(schema_with = crate::openapi::optional_url)]
    pub url: Option<String>,
    #[schema(schema_with = crate::openapi::description)]
    pub description: Option<String>,
    /// `null` removes it.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::endpoint_uid)]
    pub uid: Patch<String>,
    pub disabled: Option<bool>,
    /// `null`: every event type.
    #[serde(default, alias = "eventTypes")]
    #[schema(schema_with = crate::openapi::filter_types)]
    pub filter_types: Patch<Vec<String>>,
    /// `null`: every channel.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::channels)]
    pub channels: Patch<Vec<String>>,
    /// `null` removes it.
    #[serde(default, alias = "rateLimit")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 100000)]
    pub throttle_rate: Patch<u32>,
    #[schema(schema_with = crate::openapi::metadata)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Accepted for Svix compatibility and ignored.
    pub version: Option<i64>,
    /// `null`: the application's (or the default).
    #[serde(default)]
    #[schema(schema_with = crate::openapi::nullable_retry_policy)]
    pub retry_policy: Patch<RetryPolicy>,
    /// `null`: the default, 15000.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 100, maximum = 60000)]
    pub timeout_ms: Patch<u32>,
    /// `null`: adaptive.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub max_concurrency: Patch<u32>,
    /// How deliveries are signed; switching between `standard` and `ed25519` needs the
    /// current secret to be of the new kind already (rotate to it first).
    #[serde(default)]
    #[schema(value_type = Option<SignatureDoc>)]
    pub signature: Patch<SignatureConfig>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointOut {
    #[schema(example = "ep_2yZwZ3dQxS9vUu8mK1a7Tb4FhJc")]
    pub id: String,
    #[schema(example = "orders-hook")]
    pub uid: Option<String>,
    #[schema(example = "https://example.com/webhooks")]
    pub url: String,
    #[schema(example = "Order notifications")]
    pub description: String,
    pub disabled: bool,
    pub filter_types: Option<Vec<String>>,
    /// Same as `filterTypes` (newer Svix SDKs read this name).
    pub event_types: Option<Vec<String>>,
    pub channels: Option<Vec<String>>,
    pub throttle_rate: Option<u32>,
    pub metadata: BTreeMap<String, String>,
    pub version: i64,
    /// The endpoint's own retry policy; `null` means the application's (or the default).
    #[schema(schema_with = crate::openapi::nullable_retry_policy)]
    pub retry_policy: Option<RetryPolicy>,
    pub timeout_ms: u32,
    /// The most attempts in flight to the endpoint at once; `null`: adaptive (it finds
    /// what the receiver serves, up to `--max-endpoint-concurrency`; its current limit
    /// is in the endpoint's stats).
    pub max_concurrency: Option<u32>,
    #[schema(value_type = SignatureDoc)]
    pub signature: SignatureConfig,
    /// hookline extension: when the endpoint's attempts began failing with no success
    /// since (`null`: its newest attempt succeeded, or it has none). After
    /// `--endpoint-disable-after-secs` of this the endpoint is disabled.
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The OpenAPI shape of [`SignatureConfig`], which lives in the store and knows nothing
/// of OpenAPI (see [`crate::openapi::signature`]).
pub struct SignatureDoc;

impl utoipa::PartialSchema for SignatureDoc {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::openapi::signature().into()
    }
}

impl ToSchema for SignatureDoc {}

impl From<Endpoint> for EndpointOut {
    fn from(e: Endpoint) -> Self {
        let s = e.settings;
        Self {
            id: e.id,
            uid: e.uid,
            url: e.url,
            description: s.description,
            disabled: e.disabled,
            filter_types: s.event_types.clone(),
            event_types: s.event_types,
            channels: s.channels,
            throttle_rate: s.throttle_rate,
            metadata: s.metadata,
            version: 1,
            retry_policy: s.retry_policy,
            timeout_ms: s.timeout_ms.unwrap_or(validate::DEFAULT_TIMEOUT_MS),
            max_concurrency: s.max_concurrency,
            signature: s.signature.unwrap_or_else(|| {
                implied_scheme(s.secrets.first().map(|e| e.key.as_str()))
                    .unwrap_or(SignatureConfig::Standard { svix_headers: None })
            }),
            failing_since: e.failing_since,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// Checks the rules that involve several fields at once, on the endpoint as it would be
/// after the change. Runs inside the store transaction for PATCH, so it sees the truth.
fn check_whole(ep: &Endpoint) -> Result<(), Rejected> {
    let sig = ep.settings.signature.as_ref();
    for (i, s) in ep.settings.secrets.iter().enumerate() {
        if validate::secret("secret", &s.key, sig).is_err() {
            // A whsk_ key pair is a fine secret that the scheme being switched to cannot
            // use, so it is the scheme that is wrong.
            let field = if i == 0 && !EndpointKey::is_ed25519(&s.key) {
                "secret"
            } else {
                "signature.scheme"
            };
            return Err(Rejected::new(
                field,
                match sig {
                    Some(SignatureConfig::HmacSha256Hex { .. }) => {
                        "the endpoint's secrets must be 8 to 512 visible ASCII characters, and no whsk_ key pair, for the hmac-sha256-hex scheme"
                    }
                    _ => "the endpoint's secret is not a whsec_ secret or whsk_ key pair, which the standard and ed25519 schemes need; rotate it with one first",
                },
            ));
        }
    }
    if let Some(current) = ep.current_secret() {
        if validate::secret_matches_scheme(current, sig).is_err() {
            return Err(Rejected::new(
                "signature.scheme",
                if EndpointKey::is_ed25519(current) {
                    "the endpoint's current secret is a whsk_ ed25519 key pair, which the standard scheme cannot use; rotate to a whsec_ secret first (POST .../secret/rotate with {\"key\": \"whsec_...\"}), which switches the scheme back to standard"
                } else {
                    "the endpoint's current secret is a whsec_ secret, which the ed25519 scheme cannot use; rotate to a whsk_ key pair first (POST .../secret/rotate with {\"key\": \"whsk_...\"}), which switches the scheme to ed25519"
                },
            ));
        }
    }
    if let Err(ApiError::Validation(v)) = validate::headers("headers", &ep.settings.headers, sig) {
        let first = &v[0];
        return Err(Rejected::new(first.loc[1..].join("."), first.msg.clone()));
    }
    Ok(())
}

fn check_in(input: &EndpointIn) -> ApiResult<()> {
    let mut e = Errors::default();
    e.check(validate::url("url", &input.url));
    if let Some(d) = &input.description {
        e.check(validate::description("description", d));
    }
    if let Some(uid) = &input.uid {
        e.check(validate::uid_not_id("uid", uid, "ep"));
    }
    if let Some(t) = &input.filter_types {
        e.check(validate::filter_types("filterTypes", t));
    }
    if let Some(c) = &input.channels {
        e.check(validate::channels("channels", c));
    }
    if let Some(r) = input.throttle_rate {
        e.check(validate::throttle_rate("throttleRate", r));
    }
    if let Some(m) = &input.metadata {
        e.check(validate::metadata("metadata", m));
    }
    if let Some(s) = &input.signature {
        e.check(validate::signature("signature", s));
    }
    if let Some(h) = &input.headers {
        e.check(validate::headers("headers", h, input.signature.as_ref()));
    }
    if let Some(s) = &input.secret {
        match validate::secret("secret", s, input.signature.as_ref()) {
            Err(err) => e.check(Err(err)),
            // Only an explicit scheme can disagree: with none, the secret's kind decides.
            Ok(()) if input.signature.is_some() => {
                if let Err(why) = validate::secret_matches_scheme(s, input.signature.as_ref()) {
                    e.add("secret", why);
                }
            }
            Ok(()) => {}
        }
    }
    if let Some(p) = &input.retry_policy {
        e.check(validate::retry_policy("retryPolicy", p));
    }
    if let Some(t) = input.timeout_ms {
        e.check(validate::timeout_ms("timeoutMs", t));
    }
    if let Some(c) = input.max_concurrency {
        e.check(validate::max_concurrency("maxConcurrency", c));
    }
    e.finish()
}

fn settings_from(input: EndpointIn, secrets: Vec<SecretEntry>) -> EndpointSettings {
    EndpointSettings {
        description: input.description.unwrap_or_default(),
        event_types: input.filter_types,
        channels: input.channels,
        throttle_rate: input.throttle_rate,
        metadata: input.metadata.unwrap_or_default(),
        headers: input.headers.unwrap_or_default(),
        secrets,
        retry_policy: input.retry_policy,
        timeout_ms: input.timeout_ms,
        max_concurrency: input.max_concurrency,
        signature: input.signature,
    }
}

/// A fresh secret of the kind the scheme signs with: an ed25519 key pair for `ed25519`,
/// a `whsec_` secret for everything else (the hex scheme keys with it as a string).
fn generate_secret(scheme: Option<&SignatureConfig>) -> String {
    match scheme {
        Some(SignatureConfig::Ed25519 { .. }) => Ed25519Secret::generate().to_string(),
        _ => StandardSecret::generate().to_string(),
    }
}

/// The scheme an endpoint that names none signs with, when its current secret decides:
/// a `whsk_` key pair can only sign with ed25519.
fn implied_scheme(current_secret: Option<&str>) -> Option<SignatureConfig> {
    current_secret
        .filter(|k| EndpointKey::is_ed25519(k))
        .map(|_| SignatureConfig::Ed25519 { svix_headers: None })
}

/// What a receiver verifies with, as `GET .../secret` and rotation show it: a `whsk_` key
/// pair only ever as its `whpk_` public key; any other secret as stored.
fn shown_key(ep_id: &str, key: &str) -> ApiResult<String> {
    if !EndpointKey::is_ed25519(key) {
        return Ok(key.to_string());
    }
    EndpointKey::parse(key)
        .map(|k| k.verification_key())
        // Never the key, never the parse error (it describes the key).
        .map_err(|_| ApiError::Internal(format!("endpoint {ep_id}'s ed25519 key does not parse")))
}

async fn create_endpoint(
    state: &AppState,
    app_id: String,
    input: EndpointIn,
) -> ApiResult<Endpoint> {
    let now = hookline_store::now();
    let mut input = input;
    if input.signature.is_none() {
        input.signature = match &input.secret {
            Some(k) => implied_scheme(Some(k)),
            None => match state.default_signature {
                DefaultSignature::Standard => None,
                DefaultSignature::Ed25519 => Some(SignatureConfig::Ed25519 { svix_headers: None }),
            },
        };
    }
    let key = input
        .secret
        .clone()
        .unwrap_or_else(|| generate_secret(input.signature.as_ref()));
    let ep = Endpoint {
        id: new_id("ep"),
        app_id,
        uid: input.uid.clone(),
        url: input.url.clone(),
        disabled: input.disabled.unwrap_or(false),
        settings: settings_from(
            input,
            vec![SecretEntry {
                key,
                expires_at: None,
            }],
        ),
        created_at: now,
        updated_at: now,
        failing_since: None,
    };
    check_whole(&ep)?;
    Ok(state.store.create_endpoint(ep).await?)
}

async fn find(state: &AppState, auth: &Auth, app_id: &str, ep_id: &str) -> ApiResult<Endpoint> {
    let app = visible_app(state, auth, app_id).await?;
    state
        .store
        .get_endpoint(&app.id, ep_id)
        .await?
        .ok_or(ApiError::NotFound("endpoint not found"))
}

fn not_found_as_endpoint(e: hookline_store::StoreError) -> ApiError {
    match e {
        hookline_store::StoreError::NotFound => ApiError::NotFound("endpoint not found"),
        other => other.into(),
    }
}

/// List an application's endpoints.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/endpoint", tag = "Endpoint",
    params(("app_id" = String, Path), ListParams),
    responses((status = 200, body = ListResponse<EndpointOut>), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(app_id): Path<String>,
    QueryParams(params): QueryParams<ListParams>,
) -> ApiResult<Json<ListResponse<EndpointOut>>> {
    let q = params.to_query(Order::Ascending)?;
    let app = visible_app(&state, &auth, &app_id).await?;
    let page = state.store.list_endpoints(&app.id, &q).await?;
    Ok(Json(ListResponse::from_page(page, EndpointOut::from)))
}

/// Create an endpoint.
#[utoipa::path(post, path = "/api/v1/app/{app_id}/endpoint", tag = "Endpoint",
    params(("app_id" = String, Path)), request_body = EndpointIn,
    responses((status = 201, body = EndpointOut), (status = 409, body = HttpErrorOut),
        (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(app_id): Path<String>,
    JsonBody(input): JsonBody<EndpointIn>,
) -> ApiResult<(StatusCode, Json<EndpointOut>)> {
    let app = visible_app(&state, &auth, &app_id).await?;
    check_in(&input)?;
    let ep = create_endpoint(&state, app.id, input).await?;
    Ok((StatusCode::CREATED, Json(ep.into())))
}

/// Get an endpoint by id or uid.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}", tag = "Endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)),
    responses((status = 200, body = EndpointOut), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn get_one(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, ep_id)): Path<(String, String)>,
) -> ApiResult<Json<EndpointOut>> {
    Ok(Json(find(&state, &auth, &app_id, &ep_id).await?.into()))
}

/// Replace an endpoint's settings, or create it (with `endpoint_id` as its uid).
#[utoipa::path(put, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}", tag = "Endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)), request_body = EndpointIn,
    responses((status = 200, body = EndpointOut), (status = 201, body = EndpointOut),
        (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn put_one(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, ep_id)): Path<(String, String)>,
    JsonBody(input): JsonBody<EndpointIn>,
) -> ApiResult<(StatusCode, Json<EndpointOut>)> {
    let app = visible_app(&state, &auth, &app_id).await?;
    check_in(&input)?;
    let Some(existing) = state.store.get_endpoint(&app.id, &ep_id).await? else {
        // What names nothing and could not be a uid either is simply not found.
        if validate::uid("", &ep_id).is_err() {
            return Err(ApiError::NotFound("endpoint not found"));
        }
        let mut input = input;
        if input.uid.is_none() {
            // An endpoint id that names nothing is not a uid to create it with.
            if ep_id.starts_with("ep_") {
                return Err(ApiError::NotFound("endpoint not found"));
            }
            validate::uid_not_id("uid", &ep_id, "ep")?;
            input.uid = Some(ep_id);
        }
        let ep = create_endpoint(&state, app.id, input).await?;
        return Ok((StatusCode::CREATED, Json(ep.into())));
    };
    let ep = state
        .store
        .update_endpoint(
            &app.id,
            &existing.id,
            Box::new(move |ep| {
                let secrets = match &input.secret {
                    Some(k) => vec![SecretEntry {
                        key: k.clone(),
                        expires_at: None,
                    }],
                    None => std::mem::take(&mut ep.settings.secrets),
                };
                let mut input = input;
                if input.signature.is_none() {
                    input.signature = implied_scheme(secrets.first().map(|e| e.key.as_str()));
                }
                ep.uid = input.uid.clone().or(ep.uid.take());
                ep.url = input.url.clone();
                ep.disabled = input.disabled.unwrap_or(false);
                ep.settings = settings_from(input, secrets);
                ep.updated_at = hookline_store::now();
                check_whole(ep)
            }),
        )
        .await
        .map_err(not_found_as_endpoint)?;
    Ok((StatusCode::OK, Json(ep.into())))
}

/// Partially update an endpoint.
#[utoipa::path(patch, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}", tag = "Endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)), request_body = EndpointPatch,
    responses((status = 200, body = EndpointOut), (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn patch_one(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, ep_id)): Path<(String, String)>,
    JsonBody(p): JsonBody<EndpointPatch>,
) -> ApiResult<Json<EndpointOut>> {
    let existing = find(&state, &auth, &app_id, &ep_id).await?;
    let mut e = Errors::default();
    if let Some(u) = &p.url {
        e.check(validate::url("url", u));
    }
    if let Some(d) = &p.description {
        e.check(validate::description("description", d));
    }
    if let Some(uid) = p.uid.as_set() {
        e.check(validate::uid_not_id("uid", uid, "ep"));
    }
    if let Some(t) = p.filter_types.as_set() {
        e.check(validate::filter_types("filterTypes", t));
    }
    if let Some(c) = p.channels.as_set() {
        e.check(validate::channels("channels", c));
    }
    if let Some(r) = p.throttle_rate.as_set() {
        e.check(validate::throttle_rate("throttleRate", *r));
    }
    if let Some(m) = &p.metadata {
        e.check(validate::metadata("metadata", m));
    }
    if let Some(r) = p.retry_policy.as_set() {
        e.check(validate::retry_policy("retryPolicy", r));
    }
    if let Some(t) = p.timeout_ms.as_set() {
        e.check(validate::timeout_ms("timeoutMs", *t));
    }
    if let Some(c) = p.max_concurrency.as_set() {
        e.check(validate::max_concurrency("maxConcurrency", *c));
    }
    if let Some(s) = p.signature.as_set() {
        e.check(validate::signature("signature", s));
    }
    e.finish()?;
    let ep = state
        .store
        .update_endpoint(
            &existing.app_id,
            &existing.id,
            Box::new(move |ep| {
                let s = &mut ep.settings;
                if let Some(u) = p.url {
                    ep.url = u;
                }
                if let Some(d) = p.description {
                    s.description = d;
                }
                p.uid.apply(&mut ep.uid);
                if let Some(d) = p.disabled {
                    ep.disabled = d;
                }
                p.filter_types.apply(&mut s.event_types);
                p.channels.apply(&mut s.channels);
                p.throttle_rate.apply(&mut s.throttle_rate);
                if let Some(m) = p.metadata {
                    s.metadata = m;
                }
                p.retry_policy.apply(&mut s.retry_policy);
                p.timeout_ms.apply(&mut s.timeout_ms);
                p.max_concurrency.apply(&mut s.max_concurrency);
                p.signature.apply(&mut s.signature);
                ep.updated_at = hookline_store::now();
                check_whole(ep)
            }),
        )
        .await
        .map_err(not_found_as_endpoint)?;
    Ok(Json(ep.into()))
}

/// Delete an endpoint.
#[utoipa::path(delete, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}", tag = "Endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)),
    responses((status = 204), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn delete_one(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, ep_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let ep = find(&state, &auth, &app_id, &ep_id).await?;
    state
        .store
        .delete_endpoint(&ep.app_id, &ep.id)
        .await
        .map_err(not_found_as_endpoint)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointSecretOut {
    /// What receivers verify with: the `whsec_` secret, the hex scheme's secret string,
    /// or for an ed25519 endpoint its `whpk_` public key (never the private key).
    pub key: String,
}

/// Get what receivers verify the endpoint's deliveries with: its current secret, or for
/// an ed25519 endpoint the public key.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret", tag = "Endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)),
    responses((status = 200, body = EndpointSecretOut), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn get_secret(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, ep_id)): Path<(String, String)>,
) -> ApiResult<Json<EndpointSecretOut>> {
    let ep = find(&state, &auth, &app_id, &ep_id).await?;
    let key = ep
        .current_secret()
        .ok_or_else(|| ApiError::Internal(format!("endpoint {} has no secret", ep.id)))?;
    Ok(Json(EndpointSecretOut {
        key: shown_key(&ep.id, key)?,
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSecretRotateIn {
    /// The new secret; generated when omitted, of the endpoint's current kind. A `whsk_`
    /// key pair on a standard endpoint switches it to `ed25519`, a `whsec_` secret on an
    /// ed25519 endpoint switches it back; both sign while the old one's grace lasts. It
    /// must not be one of the endpoint's secrets already.
    #[schema(schema_with = crate::openapi::secret)]
    pub key: Option<String>,
    /// How long the previous secret stays valid, in seconds (default 86400, at most 604800).
    #[schema(minimum = 0, maximum = 604800)]
    pub grace_period_seconds: Option<u64>,
}

/// Rotate the signing secret; the previous one stays valid for the grace period.
#[utoipa::path(post, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret/rotate",
    tag = "Endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)),
    request_body = Option<EndpointSecretRotateIn>,
    responses((status = 200, body = EndpointSecretOut), (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn rotate_secret(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, ep_id)): Path<(String, String)>,
    OptionalJsonBody(body): OptionalJsonBody<EndpointSecretRotateIn>,
) -> ApiResult<Json<EndpointSecretOut>> {
    let existing = find(&state, &auth, &app_id, &ep_id).await?;
    let input = body.unwrap_or_default();
    let grace = input.grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECS);
    if grace > MAX_GRACE_SECS {
        return Err(ApiError::field(
            "gracePeriodSeconds",
            format!("must be at most {MAX_GRACE_SECS}"),
        ));
    }
    if let Some(k) = &input.key {
        validate::secret("key", k, existing.settings.signature.as_ref())?;
    }
    let scheme = existing
        .settings
        .signature
        .clone()
        .or_else(|| implied_scheme(existing.current_secret()));
    let new_key = input
        .key
        .unwrap_or_else(|| generate_secret(scheme.as_ref()));
    let returned = shown_key(&existing.id, &new_key)?;
    state
        .store
        .update_endpoint(
            &existing.app_id,
            &existing.id,
            Box::new(move |ep| {
                let now = hookline_store::now();
                let until = now + chrono::Duration::seconds(grace as i64);
                let s = &mut ep.settings;
                if s.secrets.iter().any(|e| e.key == new_key) {
                    return Err(Rejected::new(
                        "key",
                        "is already one of this endpoint's secrets",
                    ));
                }
                // The outgoing current secret gets its grace period; older ones keep theirs.
                if let Some(cur) = s.secrets.first_mut() {
                    cur.expires_at = Some(until);
                }
                s.secrets.retain(|e| e.expires_at.is_none_or(|t| t > now));
                s.secrets.insert(
                    0,
                    SecretEntry {
                        key: new_key,
                        expires_at: None,
                    },
                );
                s.secrets.truncate(MAX_SECRETS);
                // The new current key's kind decides between the two Standard Webhooks
                // schemes; `svixHeaders` carries over.
                let ed25519 = EndpointKey::is_ed25519(&s.secrets[0].key);
                s.signature = match s.signature.take() {
                    Some(SignatureConfig::Standard { svix_headers }) if ed25519 => {
                        Some(SignatureConfig::Ed25519 { svix_headers })
                    }
                    None if ed25519 => Some(SignatureConfig::Ed25519 { svix_headers: None }),
                    Some(SignatureConfig::Ed25519 { svix_headers }) if !ed25519 => {
                        Some(SignatureConfig::Standard { svix_headers })
                    }
                    other => other,
                };
                ep.updated_at = now;
                check_whole(ep)
            }),
        )
        .await
        .map_err(not_found_as_endpoint)?;
    Ok(Json(EndpointSecretOut { key: returned }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointHeadersOut {
    pub headers: BTreeMap<String, String>,
    /// Names of headers whose values are hidden (none: hookline shows all to callers
    /// allowed to see the endpoint).
    pub sensitive: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointHeadersIn {
    #[schema(schema_with = crate::openapi::headers)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointHeadersPatchIn {
    /// Headers to add or change.
    #[schema(schema_with = crate::openapi::headers)]
    pub headers: BTreeMap<String, String>,
    /// Names of headers to remove (case-insensitive); names that are not set are ignored.
    #[serde(default)]
    pub delete_headers: Vec<String>,
}

/// Get the custom headers sent with every delivery to this endpoint.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers", tag = "Endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)),
    responses((status = 200, body = EndpointHeadersOut), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn get_headers(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, ep_id)): Path<(String, String)>,
) -> ApiResult<Json<EndpointHeadersOut>> {
    let ep = find(&state, &auth, &app_id, &ep_id).await?;
    Ok(Json(EndpointHeadersOut {
        headers: ep.settings.headers,
        sensitive: vec![],
    }))
}

/// Replace the custom headers.
#[utoipa::path(put, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers", tag = "Endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)),
    request_body = EndpointHeadersIn,
    responses((status = 204), (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn put_headers(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, ep_id)): Path<(String, String)>,
    JsonBody(input): JsonBody<EndpointHeadersIn>,
) -> ApiResult<StatusCode> {
    let ep = find(&state, &auth, &app_id, &ep_id).await?;
    validate::headers("headers", &input.headers, ep.settings.signature.as_ref())?;
    state
        .store
        .update_endpoint(
            &ep.app_id,
            &ep.id,
            Box::new(move |ep| {
                ep.settings.headers = input.headers;
                ep.updated_at = hookline_store::now();
                check_whole(ep)
            }),
        )
        .await
        .map_err(not_found_as_endpoint)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Add or change some custom headers and delete others.
#[utoipa::path(patch, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers",
    tag = "Endpoint",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)),
    request_body = EndpointHeadersPatchIn,
    responses((status = 204), (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn patch_headers(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((app_id, ep_id)): Path<(String, String)>,
    JsonBody(input): JsonBody<EndpointHeadersPatchIn>,
) -> ApiResult<StatusCode> {
    let ep = find(&state, &auth, &app_id, &ep_id).await?;
    validate::headers("headers", &input.headers, ep.settings.signature.as_ref())?;
    state
        .store
        .update_endpoint(
            &ep.app_id,
            &ep.id,
            Box::new(move |ep| {
                let h = &mut ep.settings.headers;
                for name in &input.delete_headers {
                    h.retain(|k, _| !k.eq_ignore_ascii_case(name));
                }
                for (k, v) in input.headers {
                    h.retain(|existing, _| !existing.eq_ignore_ascii_case(&k));
                    h.insert(k, v);
                }
                ep.updated_at = hookline_store::now();
                check_whole(ep)
            }),
        )
        .await
        .map_err(not_found_as_endpoint)?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, put_one, patch_one, delete_one))
        .routes(routes!(get_secret))
        .routes(routes!(rotate_secret))
        .routes(routes!(get_headers, put_headers, patch_headers))
}
