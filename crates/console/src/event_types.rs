//! The console's event type pages: the catalog with each type's schemas, a form to
//! create one, and a page to edit one.
//!
//! Schemas are typed as the API takes them, a JSON object from version to JSON Schema
//! (`{"1": {...}}`), and go to the API as typed: the API checks them against the JSON
//! Schema meta-schema and its own bounds, and its message (`schemas.1: is not a valid
//! JSON Schema: ...`) shows next to the field. The console only says when the text is
//! not JSON at all, which the API could not be asked.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde_json::{json, Value};

use crate::pages::{
    csrf, general_errors, notice, page, text, text_field, textarea_field, timestamp, Form, Refused,
};
use crate::session::Session;
use crate::{redirect, seg, Console, Failure};

pub fn router() -> Router<Console> {
    Router::new()
        .route("/event-types", get(list).post(create))
        .route("/event-types/{name}", get(one).post(save))
}

/// Event types listed on one page (the API's largest page).
const PER_PAGE: u32 = 250;

/// The fields of the forms, as the API names them.
const FIELDS: &[&str] = &["name", "description", "schemas"];

/// `schemas` as the API gives it, indented for reading and editing.
fn schemas_text(et: &Value) -> String {
    match &et["schemas"] {
        Value::Null => String::new(),
        v => serde_json::to_string_pretty(v).unwrap_or_default(),
    }
}

/// The schemas typed into a form: `None` when empty, else the JSON, or why it is not.
fn typed_schemas(form: &Form) -> Result<Option<Value>, Failure> {
    let t = form.get("schemas").trim();
    if t.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(t)
        .map(Some)
        .map_err(|e| Failure::Invalid(vec![("schemas".into(), format!("is not valid JSON: {e}"))]))
}

fn checkbox(label: &str, name: &str, checked: bool, hint: &str) -> Markup {
    let id = format!("f-{name}");
    html! {
        div.check {
            input type="checkbox" id=(id) name=(name) value="on" checked[checked];
            " "
            label for=(id) { (label) }
            @if !hint.is_empty() { " " span.hint { (hint) } }
        }
    }
}

fn flag(form: &Form, name: &str) -> bool {
    form.get(name) == "on"
}

fn status_of(refused: &Refused) -> StatusCode {
    if refused.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    }
}

async fn list(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(s) = c.session(&headers) else {
        return redirect("/");
    };
    list_view(&c, &headers, &s, &q, Refused::default()).await
}

async fn list_view(
    c: &Console,
    headers: &HeaderMap,
    s: &Session,
    q: &HashMap<String, String>,
    refused: Refused,
) -> Response {
    let archived = q.get("archived").is_some_and(|v| v == "1");
    let iterator = q.get("iterator").map(String::as_str).unwrap_or("");
    let mut path = format!("event-type?limit={PER_PAGE}&include_archived={archived}");
    if !iterator.is_empty() {
        path.push_str(&format!("&iterator={}", seg(iterator)));
    }
    let listing = match c.api_get(&s.token, &path).await {
        Ok(p) => p,
        Err(f) => return c.failed(headers, s, f),
    };
    let types = listing["data"].as_array().cloned().unwrap_or_default();
    let next = (!listing["done"].as_bool().unwrap_or(true))
        .then(|| text(&listing, "iterator").to_string());
    page(
        status_of(&refused),
        "Event types",
        Some(s),
        html! {
            h1 { "Event types" }
            (notice(q))
            p.hint {
                "Event types are shared by all applications. "
                @if archived { a href="/event-types" { "Hide archived" } }
                @else { a href="/event-types?archived=1" { "Show archived" } }
            }
            @if types.is_empty() {
                p.empty { "No event types yet." }
            } @else {
                table.types {
                    caption.visually-hidden { "Event types" }
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Description" }
                        th scope="col" { "Schemas" } th scope="col" { "Updated" }
                    } }
                    tbody {
                        @for et in &types {
                            tr {
                                td {
                                    a href=(format!("/event-types/{}", seg(text(et, "name")))) { (text(et, "name")) }
                                    @if et["archived"].as_bool() == Some(true) { " " span.badge.off { "Archived" } }
                                    @if et["deprecated"].as_bool() == Some(true) { " " span.badge.wait { "Deprecated" } }
                                }
                                td { (text(et, "description")) }
                                td {
                                    @match et["schemas"].as_object() {
                                        Some(map) if !map.is_empty() => {
                                            details.schema {
                                                summary { (map.len()) @if map.len() == 1 { " version" } @else { " versions" } }
                                                pre.payload tabindex="0" aria-label=(format!("Schemas of {}", text(et, "name"))) { code { (schemas_text(et)) } }
                                            }
                                        }
                                        _ => { span.hint { "none" } }
                                    }
                                }
                                td { (timestamp(et, "updatedAt")) }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = &next {
                p.pager { a href=(format!("/event-types?iterator={}{}", seg(next), if archived { "&archived=1" } else { "" })) { "Next page" } }
            }
            section.card aria-labelledby="new-type" {
                h2 #new-type { "New event type" }
                form method="post" action="/event-types" {
                    (csrf(s))
                    (general_errors(refused.general("event-type", FIELDS)))
                    (text_field("Name", "name", refused.value("event-type", "name", ""), refused.field("event-type", "name"), html!{ span.hint { "Like " code { "order.created" } "." } }, true))
                    (text_field("Description", "description", refused.value("event-type", "description", ""), refused.field("event-type", "description"), html!{}, true))
                    (textarea_field("Schemas (JSON: version → JSON Schema; optional)", "schemas", refused.value("event-type", "schemas", ""), refused.field("event-type", "schemas")))
                    p.hint { "For example " code { "{\"1\": {\"type\": \"object\", \"required\": [\"id\"], \"properties\": {\"id\": {\"type\": \"string\"}}}}" } "." }
                    (checkbox("Reject messages whose payload does not match the newest schema", "validatePayloads", refused.value("event-type", "validatePayloads", "") == "on", ""))
                    button type="submit" { "Create event type" }
                }
            }
        },
    )
}

async fn create(State(c): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let s = match c.post_session(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = match typed_schemas(&form) {
        Ok(schemas) => {
            let mut input = json!({
                "name": form.get("name").trim(),
                "description": form.get("description").trim(),
                "validatePayloads": flag(&form, "validatePayloads"),
            });
            if let Some(v) = schemas {
                input["schemas"] = v;
            }
            c.api(
                &s.token,
                Method::POST,
                "event-type",
                Some(input.to_string()),
            )
            .await
        }
        Err(f) => Err(f),
    };
    match result {
        Ok(et) => redirect(&format!(
            "/event-types/{}?done=event-type-created",
            seg(text(&et, "name"))
        )),
        Err(Failure::SignedOut) => c.failed(&headers, &s, Failure::SignedOut),
        Err(f) => {
            let refused = Refused::new("event-type", &form, f);
            list_view(&c, &headers, &s, &HashMap::new(), refused).await
        }
    }
}

async fn one(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(s) = c.session(&headers) else {
        return redirect("/");
    };
    one_view(&c, &headers, &s, &name, &q, Refused::default()).await
}

async fn one_view(
    c: &Console,
    headers: &HeaderMap,
    s: &Session,
    name: &str,
    q: &HashMap<String, String>,
    refused: Refused,
) -> Response {
    let et = match c
        .api_get(&s.token, &format!("event-type/{}", seg(name)))
        .await
    {
        Ok(v) => v,
        Err(f) => return c.failed(headers, s, f),
    };
    let name = text(&et, "name").to_string();
    let schemas = schemas_text(&et);
    let current_flag = |key: &str| et[key].as_bool().unwrap_or(false);
    let checked = |key: &str| {
        if refused.form == "edit" {
            refused.value("edit", key, "") == "on"
        } else {
            current_flag(key)
        }
    };
    page(
        status_of(&refused),
        &format!("Event type {name}"),
        Some(s),
        html! {
            p.crumbs { a href="/event-types" { "Event types" } " / " }
            h1 { "Event type " code { (name) } }
            p.ids {
                "created " (timestamp(&et, "createdAt")) " · updated " (timestamp(&et, "updatedAt"))
                @if current_flag("archived") { " · " span.badge.off { "Archived" } }
                @if current_flag("deprecated") { " · " span.badge.wait { "Deprecated" } }
            }
            (notice(q))
            section aria-labelledby="schemas" {
                h2 #schemas { "Schemas" }
                @if schemas.is_empty() {
                    p.empty { "No schema: any JSON payload is accepted." }
                } @else {
                    pre.payload tabindex="0" aria-labelledby="schemas" { code { (schemas) } }
                }
            }
            section.card aria-labelledby="edit" {
                h2 #edit { "Edit" }
                form method="post" action=(format!("/event-types/{}", seg(&name))) {
                    (csrf(s))
                    (general_errors(refused.general("edit", FIELDS)))
                    (text_field("Description", "description", refused.value("edit", "description", text(&et, "description")), refused.field("edit", "description"), html!{}, false))
                    (textarea_field("Schemas (JSON: version → JSON Schema; empty: none)", "schemas", refused.value("edit", "schemas", &schemas), refused.field("edit", "schemas")))
                    (checkbox("Reject messages whose payload does not match the newest schema", "validatePayloads", checked("validatePayloads"), ""))
                    (checkbox("Deprecated", "deprecated", checked("deprecated"), "marked as deprecated in the catalog"))
                    (checkbox("Archived", "archived", checked("archived"), "hidden from the catalog unless archived types are shown"))
                    button type="submit" { "Save event type" }
                }
            }
        },
    )
}

async fn save(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let s = match c.post_session(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = match typed_schemas(&form) {
        Ok(schemas) => {
            let input = json!({
                "description": form.get("description").trim(),
                "schemas": schemas,
                "validatePayloads": flag(&form, "validatePayloads"),
                "deprecated": flag(&form, "deprecated"),
                "archived": flag(&form, "archived"),
            });
            c.api(
                &s.token,
                Method::PATCH,
                &format!("event-type/{}", seg(&name)),
                Some(input.to_string()),
            )
            .await
        }
        Err(f) => Err(f),
    };
    match result {
        Ok(et) => redirect(&format!(
            "/event-types/{}?done=event-type-saved",
            seg(text(&et, "name"))
        )),
        Err(f @ (Failure::SignedOut | Failure::NotFound(_))) => c.failed(&headers, &s, f),
        Err(f) => {
            let refused = Refused::new("edit", &form, f);
            one_view(&c, &headers, &s, &name, &HashMap::new(), refused).await
        }
    }
}
