//! `/api/v1/event-type`: the named kinds of events, with a description and JSON Schemas of
//! their payloads. Event types are global (shared by all applications), as in Svix.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use hookline_store::{EventType, Order, Rejected, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, HttpErrorOut, ValidationErrorOut};
use crate::extract::{JsonBody, Patch, QueryParams};
use crate::pagination::{ListParams, ListResponse};
use crate::validate::{self, Errors};
use crate::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeIn {
    #[schema(schema_with = crate::openapi::event_type_name)]
    pub name: String,
    #[schema(schema_with = crate::openapi::event_type_description)]
    pub description: String,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub deprecated: bool,
    /// Payload JSON Schemas by version, e.g. `{"1": {"type": "object", ...}}`: at most
    /// 20 versions, each a valid JSON Schema object that validation can use.
    #[schema(schema_with = crate::openapi::event_type_schemas)]
    pub schemas: Option<serde_json::Value>,
    #[schema(schema_with = crate::openapi::optional_id)]
    pub group_name: Option<String>,
    #[schema(schema_with = crate::openapi::feature_flags)]
    pub feature_flags: Option<Vec<String>>,
    /// hookline extension: reject (422) messages of this type whose payload does not
    /// match the newest schema.
    #[serde(default)]
    pub validate_payloads: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeUpdate {
    #[schema(schema_with = crate::openapi::event_type_description)]
    pub description: String,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub deprecated: bool,
    /// Payload JSON Schemas by version (see `EventTypeIn`).
    #[schema(schema_with = crate::openapi::event_type_schemas)]
    pub schemas: Option<serde_json::Value>,
    #[schema(schema_with = crate::openapi::optional_id)]
    pub group_name: Option<String>,
    #[schema(schema_with = crate::openapi::feature_flags)]
    pub feature_flags: Option<Vec<String>>,
    #[serde(default)]
    pub validate_payloads: bool,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypePatch {
    #[schema(schema_with = crate::openapi::description)]
    pub description: Option<String>,
    pub archived: Option<bool>,
    pub deprecated: Option<bool>,
    /// `null` removes them.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::event_type_schemas)]
    pub schemas: Patch<serde_json::Value>,
    /// `null` removes it.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::optional_id)]
    pub group_name: Patch<String>,
    /// `null` removes them.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::feature_flags)]
    pub feature_flags: Patch<Vec<String>>,
    pub validate_payloads: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeOut {
    #[schema(example = "order.created")]
    pub name: String,
    #[schema(example = "An order was placed.")]
    pub description: String,
    pub archived: bool,
    pub deprecated: bool,
    #[schema(value_type = Option<Object>)]
    pub schemas: Option<serde_json::Value>,
    pub group_name: Option<String>,
    pub feature_flags: Option<Vec<String>>,
    pub validate_payloads: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<EventType> for EventTypeOut {
    fn from(e: EventType) -> Self {
        Self {
            name: e.name,
            description: e.description,
            archived: e.archived,
            deprecated: e.deprecated,
            schemas: e.schemas,
            group_name: e.group_name,
            feature_flags: e.feature_flags,
            validate_payloads: e.validate_payloads,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// The newest version's schema (versions are numbers; the largest wins).
pub(crate) fn newest_schema(schemas: Option<&serde_json::Value>) -> Option<&serde_json::Value> {
    schemas?
        .as_object()?
        .iter()
        .max_by_key(|(version, _)| version.parse::<u64>().unwrap_or(0))
        .map(|(_, schema)| schema)
}

/// `schemas` must map version keys to valid JSON Schema documents.
fn check_schemas(errs: &mut Errors, schemas: &serde_json::Value) {
    let Some(map) = schemas.as_object() else {
        errs.add(
            "schemas",
            "must be an object mapping a version (e.g. \"1\") to a JSON Schema",
        );
        return;
    };
    if map.len() > 20 {
        errs.add("schemas", "at most 20 schema versions");
    }
    for (version, schema) in map {
        let field = format!("schemas.{version}");
        if !schema.is_object() {
            errs.add(&field, "must be a JSON Schema object");
            continue;
        }
        if let Err(e) = jsonschema::meta::validate(schema) {
            errs.add(&field, format!("is not a valid JSON Schema: {e}"));
            continue;
        }
        if let Err(why) = crate::schema_bounds::check(schema) {
            errs.add(
                &field,
                format!("cannot be used to validate payloads: it {why}"),
            );
            continue;
        }
        if let Err(e) = jsonschema::validator_for(schema) {
            errs.add(&field, format!("is not a usable JSON Schema: {e}"));
        }
    }
}

fn check_common(
    errs: &mut Errors,
    description: &str,
    schemas: Option<&serde_json::Value>,
    group: Option<&String>,
    flags: Option<&Vec<String>>,
) {
    errs.check(validate::description("description", description));
    if let Some(s) = schemas {
        check_schemas(errs, s);
    }
    if let Some(g) = group {
        errs.check(validate::uid("groupName", g));
    }
    if let Some(f) = flags {
        if f.len() > 10 {
            errs.add("featureFlags", "at most 10 feature flags");
        }
        for (i, flag) in f.iter().enumerate() {
            errs.check(validate::uid(&format!("featureFlags.{i}"), flag));
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventTypeListParams {
    /// Items per page, 1 to 250 (default 50).
    #[param(schema_with = crate::openapi::limit)]
    pub limit: Option<u32>,
    /// `iterator` (or `prevIterator`) of a previous page.
    #[param(schema_with = crate::openapi::iterator)]
    pub iterator: Option<String>,
    pub order: Option<crate::pagination::Ordering>,
    /// Include archived event types.
    #[serde(default)]
    pub include_archived: bool,
    /// Accepted for Svix compatibility; schemas are always included.
    #[serde(default)]
    pub with_content: bool,
}

/// List event types.
#[utoipa::path(get, path = "/api/v1/event-type", tag = "Event Type", params(EventTypeListParams),
    responses((status = 200, body = ListResponse<EventTypeOut>)), security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    QueryParams(p): QueryParams<EventTypeListParams>,
) -> ApiResult<Json<ListResponse<EventTypeOut>>> {
    let q = ListParams {
        limit: p.limit,
        iterator: p.iterator,
        order: p.order,
    }
    .to_query(Order::Ascending)?;
    let page = state.store.list_event_types(&q, p.include_archived).await?;
    Ok(Json(ListResponse::from_page(page, EventTypeOut::from)))
}

/// Create an event type, or unarchive an archived one of the same name.
#[utoipa::path(post, path = "/api/v1/event-type", tag = "Event Type", request_body = EventTypeIn,
    responses((status = 201, body = EventTypeOut), (status = 409, body = HttpErrorOut),
        (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    JsonBody(input): JsonBody<EventTypeIn>,
) -> ApiResult<(StatusCode, Json<EventTypeOut>)> {
    auth.require_admin()?;
    let mut errs = Errors::default();
    errs.check(validate::event_type_name("name", &input.name));
    check_common(
        &mut errs,
        &input.description,
        input.schemas.as_ref(),
        input.group_name.as_ref(),
        input.feature_flags.as_ref(),
    );
    errs.finish()?;
    let now = hookline_store::now();
    let new = EventType {
        name: input.name,
        description: input.description,
        archived: input.archived,
        deprecated: input.deprecated,
        schemas: input.schemas,
        group_name: input.group_name,
        feature_flags: input.feature_flags,
        validate_payloads: input.validate_payloads,
        created_at: now,
        updated_at: now,
    };
    let conflict = match state.store.create_event_type(new.clone()).await {
        Ok(et) => return Ok((StatusCode::CREATED, Json(et.into()))),
        Err(StoreError::Conflict(what)) => what,
        Err(e) => return Err(e.into()),
    };
    // As in Svix (and as its SDKs document `create`): creating an event type that exists
    // but is archived unarchives it, with the new description, schemas and flags.
    let name = new.name.clone();
    let unarchived = state
        .store
        .update_event_type(
            &name,
            Box::new(move |e| {
                if !e.archived {
                    return Err(Rejected::new("name", "exists and is not archived"));
                }
                *e = EventType {
                    created_at: e.created_at,
                    ..new
                };
                Ok(())
            }),
        )
        .await;
    match unarchived {
        Ok(et) => Ok((StatusCode::CREATED, Json(et.into()))),
        Err(StoreError::Rejected(_) | StoreError::NotFound) => Err(ApiError::Conflict(conflict)),
        Err(e) => Err(e.into()),
    }
}

/// Get an event type by name.
#[utoipa::path(get, path = "/api/v1/event-type/{event_type_name}", tag = "Event Type",
    params(("event_type_name" = String, Path)),
    responses((status = 200, body = EventTypeOut), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<EventTypeOut>> {
    state
        .store
        .get_event_type(&name)
        .await?
        .map(|e| Json(e.into()))
        .ok_or(ApiError::NotFound("event type not found"))
}

/// Update an event type, creating it if it does not exist.
#[utoipa::path(put, path = "/api/v1/event-type/{event_type_name}", tag = "Event Type",
    params(("event_type_name" = String, Path)), request_body = EventTypeUpdate,
    responses((status = 200, body = EventTypeOut), (status = 201, body = EventTypeOut),
        (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn put_one(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(name): Path<String>,
    JsonBody(input): JsonBody<EventTypeUpdate>,
) -> ApiResult<(StatusCode, Json<EventTypeOut>)> {
    auth.require_admin()?;
    let mut errs = Errors::default();
    check_common(
        &mut errs,
        &input.description,
        input.schemas.as_ref(),
        input.group_name.as_ref(),
        input.feature_flags.as_ref(),
    );
    errs.finish()?;
    if state.store.get_event_type(&name).await?.is_none() {
        validate::event_type_name("name", &name)?;
        let now = hookline_store::now();
        let et = state
            .store
            .create_event_type(EventType {
                name,
                description: input.description,
                archived: input.archived,
                deprecated: input.deprecated,
                schemas: input.schemas,
                group_name: input.group_name,
                feature_flags: input.feature_flags,
                validate_payloads: input.validate_payloads,
                created_at: now,
                updated_at: now,
            })
            .await?;
        return Ok((StatusCode::CREATED, Json(et.into())));
    }
    let et = state
        .store
        .update_event_type(
            &name,
            Box::new(move |e| {
                e.description = input.description;
                e.archived = input.archived;
                e.deprecated = input.deprecated;
                e.schemas = input.schemas;
                e.group_name = input.group_name;
                e.feature_flags = input.feature_flags;
                e.validate_payloads = input.validate_payloads;
                e.updated_at = hookline_store::now();
                Ok(())
            }),
        )
        .await?;
    Ok((StatusCode::OK, Json(et.into())))
}

/// Partially update an event type.
#[utoipa::path(patch, path = "/api/v1/event-type/{event_type_name}", tag = "Event Type",
    params(("event_type_name" = String, Path)), request_body = EventTypePatch,
    responses((status = 200, body = EventTypeOut), (status = 404, body = HttpErrorOut),
        (status = 422, body = ValidationErrorOut)),
    security(("bearer" = [])))]
async fn patch_one(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(name): Path<String>,
    JsonBody(p): JsonBody<EventTypePatch>,
) -> ApiResult<Json<EventTypeOut>> {
    auth.require_admin()?;
    let mut errs = Errors::default();
    check_common(
        &mut errs,
        p.description.as_deref().unwrap_or(""),
        p.schemas.as_set(),
        p.group_name.as_set(),
        p.feature_flags.as_set(),
    );
    errs.finish()?;
    let et = state
        .store
        .update_event_type(
            &name,
            Box::new(move |e| {
                if let Some(d) = p.description {
                    e.description = d;
                }
                if let Some(a) = p.archived {
                    e.archived = a;
                }
                if let Some(d) = p.deprecated {
                    e.deprecated = d;
                }
                p.schemas.apply(&mut e.schemas);
                p.group_name.apply(&mut e.group_name);
                p.feature_flags.apply(&mut e.feature_flags);
                if let Some(v) = p.validate_payloads {
                    e.validate_payloads = v;
                }
                e.updated_at = hookline_store::now();
                Ok(())
            }),
        )
        .await
        .map_err(|e| match e {
            hookline_store::StoreError::NotFound => ApiError::NotFound("event type not found"),
            other => other.into(),
        })?;
    Ok(Json(et.into()))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Remove the event type for good instead of archiving it.
    #[serde(default)]
    pub expunge: bool,
}

/// Archive an event type (or remove it with `expunge=true`).
#[utoipa::path(delete, path = "/api/v1/event-type/{event_type_name}", tag = "Event Type",
    params(("event_type_name" = String, Path), DeleteParams),
    responses((status = 204), (status = 404, body = HttpErrorOut)),
    security(("bearer" = [])))]
async fn delete_one(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(name): Path<String>,
    QueryParams(p): QueryParams<DeleteParams>,
) -> ApiResult<StatusCode> {
    auth.require_admin()?;
    let result = if p.expunge {
        state.store.expunge_event_type(&name).await
    } else {
        state
            .store
            .update_event_type(
                &name,
                Box::new(|e| {
                    e.archived = true;
                    e.updated_at = hookline_store::now();
                    Ok(())
                }),
            )
            .await
            .map(|_| ())
    };
    result.map_err(|e| match e {
        hookline_store::StoreError::NotFound => ApiError::NotFound("event type not found"),
        other => other.into(),
    })?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, put_one, patch_one, delete_one))
}
