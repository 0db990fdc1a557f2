//! `/api/v1/app`: applications, one per customer (tenant) of the sending product.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use hookline_retry::RetryPolicy;
use hookline_store::{new_id, Application, Order};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{visible_app, Auth, Caller};
use crate::error::{ApiError, ApiResult, HttpErrorOut, ValidationErrorOut};
use crate::extract::{JsonBody, Patch, QueryParams};
use crate::pagination::{ListParams, ListResponse};
use crate::validate::{self, Errors};
use crate::AppState;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationIn {
    #[schema(schema_with = crate::openapi::name)]
    pub name: String,
    /// Your own id for the application, usable in place of its `id`.
    #[schema(schema_with = crate::openapi::app_uid)]
    pub uid: Option<String>,
    /// Deliveries per second at most, to each of its endpoints that sets none.
    #[schema(minimum = 1, maximum = 100000)]
    pub throttle_rate: Option<u32>,
    #[schema(schema_with = crate::openapi::metadata)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// hookline extension: default retry policy for this application's endpoints.
    #[schema(schema_with = crate::openapi::nullable_retry_policy)]
    pub retry_policy: Option<RetryPolicy>,
    /// hookline extension: reject (422) messages whose payload does not match their event
    /// type's newest schema.
    #[serde(default)]
    pub validate_payloads: bool,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationPatch {
    /// Absent or `null`: unchanged.
    #[schema(schema_with = crate::openapi::optional_name)]
    pub name: Option<String>,
    /// `null` removes it.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::app_uid)]
    pub uid: Patch<String>,
    /// `null` removes it.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 100000)]
    pub throttle_rate: Patch<u32>,
    #[schema(schema_with = crate::openapi::metadata)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// `null` removes it (the default policy applies).
    #[serde(default)]
    #[schema(schema_with = crate::openapi::nullable_retry_policy)]
    pub retry_policy: Patch<RetryPolicy>,
    pub validate_payloads: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationOut {
    #[schema(example = "app_2yZwUhtgs5Ai8T9yRQJXA4u9V2a")]
    pub id: String,
    #[schema(example = "customer-42")]
    pub uid: Option<String>,
    #[schema(example = "Acme Corp")]
    pub name: String,
    pub throttle_rate: Option<u32>,
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::openapi::retry_policy)]
    pub retry_policy: Option<RetryPolicy>,
    pub validate_payloads: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Application> for ApplicationOut {
    fn from(a: Application) -> Self {
        Self {
            id: a.id,
            uid: a.uid,
            name: a.name,
            throttle_rate: a.throttle_rate,
            metadata: a.metadata,
            retry_policy: a.retry_policy,
            validate_payloads: a.validate_payloads,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

fn check_in(a: &ApplicationIn) -> ApiResult<()> {
    let mut e = Errors::default();
    e.check(validate::name("name", &a.name));
    if let Some(uid) = &a.uid {
        e.check(validate::uid_not_id("uid", uid, "app"));
    }
    if let Some(r) = a.throttle_rate {
        e.check(validate::throttle_rate("throttleRate", r));
    }
    if let Some(m) = &a.metadata {
        e.check(validate::metadata("metadata", m));
    }
    if let Some(p) = &a.retry_policy {
        e.check(validate::retry_policy("retryPolicy", p));
    }
    e.finish()
}

/// Builds a new application record from validated input.
pub(crate) fn new_app(input: ApplicationIn) -> Application {
    let now = hookline_store::now();
    Application {
        id: new_id("app"),
        uid: input.uid,
        name: input.name,
        throttle_rate: input.throttle_rate,
        metadata: input.metadata.unwrap_or_default(),
        retry_policy: input.retry_policy,
        validate_payloads: input.validate_payloads,
        created_at: now,
        updated_at: now,
    }
}

/// Creates an application, validating first; used by message creation too.
pub(crate) async fn create(state: &AppState, input: ApplicationIn) -> ApiResult<Application> {
    check_in(&input)?;
    Ok(state.store.create_app(new_app(input)).await?)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateParams {
    /// Return the existing application (200) if one with this uid exists.
    #[serde(default)]
    pub get_if_exists: bool,
}

/// List applications.
#[utoipa::path(get, path = "/api/v1/app", tag = "Application", params(ListParams),
    responses((status = 200, body = ListResponse<ApplicationOut>)), security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    QueryParams(params): QueryParams<ListParams>,
) -> ApiResult<Json<ListResponse<ApplicationOut>>> {
    let q = params.to_query(Order::Ascending)?;
    let only = match &auth.caller {
        Caller::Admin => None,
        Caller::App(id) => Some(id.as_str()),
    };
    let page = state.store.list_apps(&q, only).await?;
    Ok(Json(ListResponse::from_page(page, ApplicationOut::from)))
}

/// Create an application.
#[utoipa::path(post, path = "/api/v1/app", tag = "Application", params(CreateParams),
    request_body = ApplicationIn,
    responses((status = 201, body = ApplicationOut), (status = 200, body = ApplicationOut),
        (status = 409, body = HttpErrorOut), (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn create_app(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    QueryParams(params): QueryParams<CreateParams>,
    JsonBody(input): JsonBody<ApplicationIn>,
) -> ApiResult<(StatusCode, Json<ApplicationOut>)> {
    auth.require_admin()?;
    check_in(&input)?;
    if params.get_if_exists {
        if let Some(uid) = &input.uid {
            if let Some(existing) = state.store.get_app(uid).await? {
                return Ok((StatusCode::OK, Json(existing.into())));
            }
        }
    }
    let app = state.store.create_app(new_app(input)).await?;
    Ok((StatusCode::CREATED, Json(app.into())))
}

/// Get an application by id or uid.
#[utoipa::path(get, path = "/api/v1/app/{app_id}", tag = "Application",
    params(("app_id" = String, Path)),
    responses((status = 200, body = ApplicationOut), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn get_app(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(app_id): Path<String>,
) -> ApiResult<Json<ApplicationOut>> {
    Ok(Json(visible_app(&state, &auth, &app_id).await?.into()))
}

/// Update an application, or create it (with `app_id` as its uid) if it does not exist.
#[utoipa::path(put, path = "/api/v1/app/{app_id}", tag = "Application",
    params(("app_id" = String, Path)), request_body = ApplicationIn,
    responses((status = 200, body = ApplicationOut), (status = 201, body = ApplicationOut),
        (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn put_app(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(app_id): Path<String>,
    JsonBody(input): JsonBody<ApplicationIn>,
) -> ApiResult<(StatusCode, Json<ApplicationOut>)> {
    check_in(&input)?;
    match state.store.get_app(&app_id).await? {
        Some(app) if auth.sees_app(&app.id) => {
            let updated = state
                .store
                .update_app(
                    &app.id,
                    Box::new(move |a| {
                        a.name = input.name;
                        a.uid = input.uid.or(a.uid.take());
                        a.throttle_rate = input.throttle_rate;
                        a.metadata = input.metadata.unwrap_or_default();
                        a.retry_policy = input.retry_policy;
                        a.validate_payloads = input.validate_payloads;
                        a.updated_at = hookline_store::now();
                        Ok(())
                    }),
                )
                .await?;
            Ok((StatusCode::OK, Json(updated.into())))
        }
        Some(_) => Err(ApiError::NotFound("application not found")),
        None => {
            auth.require_admin()?;
            // What names nothing and could not be a uid either (the document's pattern
            // for path ids) is simply not found, whatever uid the body brings.
            if validate::uid("", &app_id).is_err() {
                return Err(ApiError::NotFound("application not found"));
            }
            let mut input = input;
            if input.uid.is_none() {
                // An application id that names nothing is not a uid to create it with.
                if app_id.starts_with("app_") {
                    return Err(ApiError::NotFound("application not found"));
                }
                validate::uid_not_id("uid", &app_id, "app")?;
                input.uid = Some(app_id);
            }
            let app = state.store.create_app(new_app(input)).await?;
            Ok((StatusCode::CREATED, Json(app.into())))
        }
    }
}

/// Partially update an application.
#[utoipa::path(patch, path = "/api/v1/app/{app_id}", tag = "Application",
    params(("app_id" = String, Path)), request_body = ApplicationPatch,
    responses((status = 200, body = ApplicationOut), (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn patch_app(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(app_id): Path<String>,
    JsonBody(p): JsonBody<ApplicationPatch>,
) -> ApiResult<Json<ApplicationOut>> {
    let app = visible_app(&state, &auth, &app_id).await?;
    let mut e = Errors::default();
    if let Some(n) = &p.name {
        e.check(validate::name("name", n));
    }
    if let Some(uid) = p.uid.as_set() {
        e.check(validate::uid_not_id("uid", uid, "app"));
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
    e.finish()?;
    let updated = state
        .store
        .update_app(
            &app.id,
            Box::new(move |a| {
                if let Some(n) = p.name {
                    a.name = n;
                }
                p.uid.apply(&mut a.uid);
                p.throttle_rate.apply(&mut a.throttle_rate);
                if let Some(m) = p.metadata {
                    a.metadata = m;
                }
                p.retry_policy.apply(&mut a.retry_policy);
                if let Some(v) = p.validate_payloads {
                    a.validate_payloads = v;
                }
                a.updated_at = hookline_store::now();
                Ok(())
            }),
        )
        .await?;
    Ok(Json(updated.into()))
}

/// Delete an application with its endpoints and messages.
#[utoipa::path(delete, path = "/api/v1/app/{app_id}", tag = "Application",
    params(("app_id" = String, Path)),
    responses((status = 204), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn delete_app(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(app_id): Path<String>,
) -> ApiResult<StatusCode> {
    let app = visible_app(&state, &auth, &app_id).await?;
    auth.require_admin()?;
    state.store.delete_app(&app.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create_app))
        .routes(routes!(get_app, put_app, patch_app, delete_app))
}
