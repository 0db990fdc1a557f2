//! The console's pages: sign-in, applications, an application, a message, an endpoint.
//!
//! Each handler reads through the API (newest first, one page at a time, by the API's
//! iterators: no page counts a table) and renders with maud. Each form that changes
//! something posts to a handler that checks the session's CSRF token, calls the API,
//! and either redirects back (post/redirect/get, with a fixed notice) or renders the
//! same page again with the API's validation messages next to the fields they name.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use serde_json::{json, Value};

use crate::charts;
use crate::session::{self, Session};
use crate::settings::{self, comma_list};
use crate::{json, over_https, redirect, seg, Console, Failure};

pub fn router() -> Router<Console> {
    Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/apps", get(apps).post(create_app))
        .route("/apps/{app}", get(app_page))
        .route("/apps/{app}/delete", post(delete_app))
        .route("/apps/{app}/edit", post(edit_app))
        .route("/apps/{app}/endpoints", post(create_endpoint))
        .route("/apps/{app}/messages", post(create_message))
        .route("/apps/{app}/msgs/{msg}", get(message_page))
        .route("/apps/{app}/msgs/{msg}/resend/{ep}", post(resend))
        .route("/apps/{app}/endpoints/{ep}", get(endpoint_page))
        .route("/apps/{app}/endpoints/{ep}/{action}", post(endpoint_action))
        .route("/console/assets/{file}", get(asset))
}

// ---------------------------------------------------------------------------------
// Assets

const CSS: &str = include_str!("../assets/console.css");
const JS: &str = include_str!("../assets/console.js");
const FAVICON: &str = include_str!("../assets/favicon.svg");
/// The portal's one script: the console's (revealing a secret, the same on both) and then
/// the portal's own (opening the portal from its link).
const PORTAL_JS: &str = concat!(
    include_str!("../assets/console.js"),
    include_str!("../assets/portal.js")
);

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        "portal.js" => (PORTAL_JS, "text/javascript; charset=utf-8"),
        "favicon.svg" => (FAVICON, "image/svg+xml"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------
// Sessions, forms and errors

/// A submitted `application/x-www-form-urlencoded` form.
pub(crate) struct Form(pub(crate) HashMap<String, String>);

impl Form {
    pub(crate) fn parse(body: &[u8]) -> Self {
        Form(
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
                .unwrap_or_default()
                .into_iter()
                .collect(),
        )
    }

    pub(crate) fn get(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or("")
    }
}

/// A form shown again after the API refused it: what was typed, and why not.
#[derive(Default)]
pub(crate) struct Refused {
    /// Which form on the page (`endpoint`, `message`, ...).
    pub(crate) form: &'static str,
    values: HashMap<String, String>,
    pub(crate) errors: Vec<(String, String)>,
}

impl Refused {
    pub(crate) fn new(form: &'static str, values: &Form, failure: Failure) -> Self {
        let errors = match failure {
            Failure::Invalid(list) => list,
            other => vec![(String::new(), other.message())],
        };
        Refused {
            form,
            values: values.0.clone(),
            errors,
        }
    }

    pub(crate) fn value<'a>(&'a self, form: &str, name: &str, default: &'a str) -> &'a str {
        if self.form == form {
            self.values.get(name).map(String::as_str).unwrap_or("")
        } else {
            default
        }
    }

    /// Errors of this form that name no field shown on it.
    pub(crate) fn general(&self, form: &str, fields: &[&str]) -> Vec<&str> {
        if self.form != form {
            return Vec::new();
        }
        self.errors
            .iter()
            .filter(|(f, _)| !fields.iter().any(|name| field_matches(f, name)))
            .map(|(_, m)| m.as_str())
            .collect()
    }

    /// Errors of this form about exactly `name` (not its parts).
    pub(crate) fn field_exact(&self, form: &str, name: &str) -> Option<String> {
        if self.form != form {
            return None;
        }
        let msgs: Vec<&str> = self
            .errors
            .iter()
            .filter(|(f, _)| f == name)
            .map(|(_, m)| m.as_str())
            .collect();
        (!msgs.is_empty()).then(|| msgs.join("; "))
    }

    /// Errors about parts of `name` other than the `shown` ones (which have their own
    /// place on the form).
    pub(crate) fn general_exact(&self, form: &str, name: &str, shown: &[&str]) -> Vec<&str> {
        if self.form != form {
            return Vec::new();
        }
        self.errors
            .iter()
            .filter(|(f, _)| {
                f != name && field_matches(f, name) && !shown.iter().any(|s| field_matches(f, s))
            })
            .map(|(_, m)| m.as_str())
            .collect()
    }

    pub(crate) fn field(&self, form: &str, name: &str) -> Option<String> {
        if self.form != form {
            return None;
        }
        // A part of the field (`schemas.2`, `headers.X-Team`) is named in the message.
        let msgs: Vec<String> = self
            .errors
            .iter()
            .filter(|(f, _)| field_matches(f, name))
            .map(|(f, m)| {
                if f == name {
                    m.clone()
                } else {
                    format!("{f}: {m}")
                }
            })
            .collect();
        (!msgs.is_empty()).then(|| msgs.join("; "))
    }
}

/// Whether an API error's field (`filterTypes.0`) belongs to a form field (`filterTypes`).
fn field_matches(api_field: &str, name: &str) -> bool {
    api_field == name
        || api_field
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('.'))
}

impl Console {
    pub(crate) fn session(&self, headers: &HeaderMap) -> Option<Session> {
        self.sessions
            .get(&session::cookie_value(headers, session::COOKIE)?)
    }

    /// The session of a form post, if the post is allowed: signed in, sent by a page of
    /// this origin, with this session's CSRF token.
    #[allow(clippy::result_large_err)]
    pub(crate) fn post_session(
        &self,
        headers: &HeaderMap,
        form: &Form,
    ) -> Result<Session, Response> {
        if cross_site(headers) {
            return Err(forbidden());
        }
        let s = self.session(headers).ok_or_else(|| redirect("/"))?;
        if !s.csrf_matches(form.0.get("csrf").map(String::as_str)) {
            return Err(forbidden());
        }
        Ok(s)
    }

    /// The page for a failed API call.
    pub(crate) fn failed(&self, headers: &HeaderMap, s: &Session, f: Failure) -> Response {
        match f {
            Failure::SignedOut => {
                self.sessions.remove(&s.id);
                let mut resp = redirect("/?expired=1");
                if let Ok(v) = session::clear_cookie(over_https(headers)).parse() {
                    resp.headers_mut().insert(header::SET_COOKIE, v);
                }
                resp
            }
            Failure::NotFound(detail) => page(
                StatusCode::NOT_FOUND,
                "Not found",
                Some(s),
                html! {
                    h1 { "Not found" }
                    p.error role="alert" { (detail) }
                    p { a href="/apps" { "Back to applications" } }
                },
            ),
            other => {
                let status = match &other {
                    Failure::Other(status, _) => *status,
                    _ => StatusCode::BAD_REQUEST,
                };
                page(
                    status,
                    "Error",
                    Some(s),
                    html! {
                        h1 { "Something went wrong" }
                        p.error role="alert" { (other.message()) }
                        p { a href="/apps" { "Back to applications" } }
                    },
                )
            }
        }
    }
}

/// A post another site made the browser send (browsers say so in `Sec-Fetch-Site`;
/// the CSRF token and `SameSite=Strict` refuse it anyway, this says why early).
pub(crate) fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
}

pub(crate) fn forbidden() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Form expired",
        None,
        html! {
            h1 { "This form cannot be accepted" }
            p.error role="alert" {
                "It was not sent from a page of this console session (the page may be from before you signed in again). Reload the page and try again."
            }
            p { a href="/" { "Go to the console" } }
        },
    )
}

// ---------------------------------------------------------------------------------
// Layout

pub(crate) fn page(status: StatusCode, title: &str, s: Option<&Session>, body: Markup) -> Response {
    (status, Html(layout(title, s, body).into_string())).into_response()
}

fn layout(title: &str, s: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · hookline" }
                link rel="icon" href="/console/assets/favicon.svg" type="image/svg+xml";
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href=(if s.is_some() { "/apps" } else { "/" }) { "hookline" }
                    @if let Some(s) = s {
                        nav aria-label="Main" {
                            a href="/apps" { "Applications" }
                            a href="/event-types" { "Event types" }
                            a href="/system" { "System" }
                        }
                        form.signout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// Fixed notices after a redirect, chosen by key: a URL can pick one, never write one.
pub(crate) fn notice(q: &HashMap<String, String>) -> Markup {
    let text = match q.get("done").map(String::as_str) {
        Some("app-created") => "Application created.",
        Some("app-deleted") => "Application deleted.",
        Some("endpoint-created") => "Endpoint created.",
        Some("message-created") => "Message created.",
        Some("rotated") => "Secret rotated. The previous secret keeps signing for 24 hours.",
        Some("enabled") => "Endpoint enabled.",
        Some("disabled") => "Endpoint disabled.",
        Some("resent") => "Message resent.",
        Some("example-sent") => "Example sent.",
        Some("saved") => "Settings saved.",
        Some("app-saved") => "Application saved.",
        Some("event-type-created") => "Event type created.",
        Some("event-type-saved") => "Event type saved.",
        Some("recovered") => {
            let n = q.get("n").and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            let text = match n {
                1 => "Recovered 1 failed delivery; it is being sent again.".to_string(),
                n => format!("Recovered {n} failed deliveries; they are being sent again."),
            };
            return html! { p.notice role="status" { (text) } };
        }
        _ => return html! {},
    };
    html! { p.notice role="status" { (text) } }
}

pub(crate) fn text_field(
    label: &str,
    name: &str,
    value: &str,
    error: Option<String>,
    extra: Markup,
    required: bool,
) -> Markup {
    let id = format!("f-{name}");
    let err_id = format!("{id}-error");
    html! {
        div.field {
            label for=(id) { (label) }
            input type="text" id=(id) name=(name) value=(value) required[required]
                aria-invalid=[error.as_ref().map(|_| "true")]
                aria-describedby=[error.as_ref().map(|_| err_id.as_str())];
            (extra)
            @if let Some(e) = &error {
                p.field-error id=(err_id) { (e) }
            }
        }
    }
}

pub(crate) fn textarea_field(
    label: &str,
    name: &str,
    value: &str,
    error: Option<String>,
) -> Markup {
    let id = format!("f-{name}");
    let err_id = format!("{id}-error");
    html! {
        div.field {
            label for=(id) { (label) }
            textarea id=(id) name=(name) rows="6" spellcheck="false"
                aria-invalid=[error.as_ref().map(|_| "true")]
                aria-describedby=[error.as_ref().map(|_| err_id.as_str())] { (value) }
            @if let Some(e) = &error {
                p.field-error id=(err_id) { (e) }
            }
        }
    }
}

/// A `<select>` of `options` (value, label), with the API's message for it if any.
pub(crate) fn select_field(
    label: &str,
    name: &str,
    options: &[(&str, &str)],
    selected: &str,
    error: Option<String>,
) -> Markup {
    let id = format!("f-{name}");
    let err_id = format!("{id}-error");
    html! {
        div.field {
            label for=(id) { (label) }
            select id=(id) name=(name)
                aria-invalid=[error.as_ref().map(|_| "true")]
                aria-describedby=[error.as_ref().map(|_| err_id.as_str())] {
                @for (value, text) in options {
                    option value=(value) selected[*value == selected] { (text) }
                }
            }
            @if let Some(e) = &error {
                p.field-error id=(err_id) { (e) }
            }
        }
    }
}

/// A date and time (`YYYY-MM-DDTHH:MM`, read as UTC), with the API's message if any.
fn datetime_field(
    label: &str,
    name: &str,
    value: &str,
    error: Option<String>,
    required: bool,
) -> Markup {
    let id = format!("f-{name}");
    let err_id = format!("{id}-error");
    html! {
        div.field {
            label for=(id) { (label) }
            input type="datetime-local" id=(id) name=(name) value=(value) step="1" required[required]
                aria-invalid=[error.as_ref().map(|_| "true")]
                aria-describedby=[error.as_ref().map(|_| err_id.as_str())];
            @if let Some(e) = &error {
                p.field-error id=(err_id) { (e) }
            }
        }
    }
}

/// A time typed into a `datetime-local` field (no zone: UTC) as RFC 3339; anything
/// else goes to the API as typed, for it to refuse naming the field.
pub(crate) fn utc_time(s: &str) -> String {
    let s = s.trim();
    for format in [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, format) {
            return t
                .and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        }
    }
    s.to_string()
}

pub(crate) fn general_errors(errors: Vec<&str>) -> Markup {
    html! {
        @for e in errors {
            p.error role="alert" { (e) }
        }
    }
}

pub(crate) fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

pub(crate) fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn list_text(v: &Value, key: &str) -> String {
    match v.get(key).and_then(Value::as_array) {
        Some(list) if !list.is_empty() => list
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        _ => "all".into(),
    }
}

/// A payload typed into a form, kept byte for byte (it is what will be signed and
/// delivered), or the reason it is not JSON, for the field.
pub(crate) fn raw_payload(s: &str) -> Result<Box<serde_json::value::RawValue>, Failure> {
    serde_json::value::RawValue::from_string(s.trim().to_string())
        .map_err(|e| Failure::Invalid(vec![("payload".into(), format!("is not valid JSON: {e}"))]))
}

pub(crate) fn timestamp(v: &Value, key: &str) -> Markup {
    let t = text(v, key);
    html! { time datetime=(t) { (t.replace('T', " ").split('.').next().unwrap_or(t).trim_end_matches('Z')) } }
}

// ---------------------------------------------------------------------------------
// Sign-in

async fn home(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if c.session(&headers).is_some() {
        return redirect("/apps");
    }
    let note = q
        .contains_key("expired")
        .then_some("Your session ended; sign in again.");
    login_page(StatusCode::OK, None, note)
}

fn login_page(status: StatusCode, error: Option<&str>, note: Option<&str>) -> Response {
    page(
        status,
        "Sign in",
        None,
        html! {
            h1 { "Sign in to hookline" }
            @if let Some(n) = note { p.notice role="status" { (n) } }
            form.card method="post" action="/login" {
                div.field {
                    label for="token" { "Admin token" }
                    input #token type="password" name="token" autocomplete="current-password" required
                        aria-invalid=[error.map(|_| "true")]
                        aria-describedby=[error.map(|_| "token-error")];
                    @if let Some(e) = error {
                        p.field-error #token-error role="alert" { (e) }
                    }
                }
                button type="submit" { "Sign in" }
            }
            p.hint {
                "The admin token was printed when hookline first started, or set with "
                code { "--admin-token" } ". It is kept on the server for this session only."
            }
        },
    )
}

async fn login(State(c): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    if cross_site(&headers) {
        return forbidden();
    }
    let form = Form::parse(&body);
    let token = form.get("token").trim();
    if token.is_empty() {
        return login_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("enter a token"),
            None,
        );
    }
    let auth = match hookline_api::auth::resolve_token(&c.state, token).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = ?e, "console sign-in could not check a token");
            return login_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("the token could not be checked now; try again"),
                None,
            );
        }
    };
    match auth {
        None => login_page(
            StatusCode::UNAUTHORIZED,
            Some("invalid or expired token"),
            None,
        ),
        Some(a) if a.caller != hookline_api::auth::Caller::Admin => login_page(
            StatusCode::FORBIDDEN,
            Some("this token is scoped to one application; the console needs an admin token"),
            None,
        ),
        Some(_) => {
            let s = c.sessions.create(token.to_string());
            let mut resp = redirect("/apps");
            if let Ok(v) = session::set_cookie(&s.id, over_https(&headers)).parse() {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
    }
}

async fn logout(State(c): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let s = match c.post_session(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    c.sessions.remove(&s.id);
    let mut resp = redirect("/");
    if let Ok(v) = session::clear_cookie(over_https(&headers)).parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

// ---------------------------------------------------------------------------------
// Applications

/// Applications whose name contains the search are looked for among this many (one
/// API page); an exact id or uid is found wherever it is.
const SEARCH_SCAN: u32 = 250;

async fn apps(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(s) = c.session(&headers) else {
        return redirect("/");
    };
    apps_view(&c, &headers, &s, &q, Refused::default()).await
}

async fn apps_view(
    c: &Console,
    headers: &HeaderMap,
    s: &Session,
    q: &HashMap<String, String>,
    refused: Refused,
) -> Response {
    let search = q.get("q").map(|t| t.trim()).unwrap_or("");
    let iterator = q.get("iterator").map(String::as_str).unwrap_or("");
    let (rows, next): (Vec<Value>, Option<String>) = if search.is_empty() {
        let mut path = "app?limit=50".to_string();
        if !iterator.is_empty() {
            path.push_str(&format!("&iterator={}", seg(iterator)));
        }
        match c.api_get(&s.token, &path).await {
            Ok(page) => (
                page["data"].as_array().cloned().unwrap_or_default(),
                (!page["done"].as_bool().unwrap_or(true))
                    .then(|| text(&page, "iterator").to_string()),
            ),
            Err(f) => return c.failed(headers, s, f),
        }
    } else {
        let mut found = Vec::new();
        match c.api_get(&s.token, &format!("app/{}", seg(search))).await {
            Ok(app) => found.push(app),
            Err(Failure::NotFound(_)) => {}
            Err(f) => return c.failed(headers, s, f),
        }
        let needle = search.to_lowercase();
        match c
            .api_get(&s.token, &format!("app?limit={SEARCH_SCAN}"))
            .await
        {
            Ok(page) => {
                for app in page["data"].as_array().into_iter().flatten() {
                    let matches = text(app, "name").to_lowercase().contains(&needle);
                    if matches && !found.iter().any(|f| f["id"] == app["id"]) {
                        found.push(app.clone());
                    }
                }
            }
            Err(f) => return c.failed(headers, s, f),
        }
        (found, None)
    };
    let status = if refused.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    page(
        status,
        "Applications",
        Some(s),
        html! {
            h1 { "Applications" }
            (notice(q))
            form.search method="get" action="/apps" role="search" {
                label for="q" { "Search by name, id or uid" }
                input #q type="search" name="q" value=(search);
                button type="submit" { "Search" }
                @if !search.is_empty() { " " a href="/apps" { "Clear" } }
            }
            @if !search.is_empty() {
                p.hint { "Exact id or uid, or a name among the first " (SEARCH_SCAN) " applications." }
            }
            @if rows.is_empty() {
                p.empty { @if search.is_empty() { "No applications yet." } @else { "No application matches." } }
            } @else {
                table {
                    caption.visually-hidden { "Applications" }
                    thead { tr { th scope="col" { "Name" } th scope="col" { "uid" } th scope="col" { "id" } th scope="col" { "Created" } } }
                    tbody {
                        @for app in &rows {
                            tr {
                                td { a href=(format!("/apps/{}", seg(text(app, "id")))) { (text(app, "name")) } }
                                td { (text(app, "uid")) }
                                td { code { (text(app, "id")) } }
                                td { (timestamp(app, "createdAt")) }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = &next {
                p.pager { a href=(format!("/apps?iterator={}", seg(next))) { "Next page" } }
            }
            section.card aria-labelledby="new-app" {
                h2 #new-app { "New application" }
                form method="post" action="/apps" {
                    (csrf(s))
                    (general_errors(refused.general("app", &["name", "uid"])))
                    (text_field("Name", "name", refused.value("app", "name", ""), refused.field("app", "name"), html!{}, true))
                    (text_field("uid (optional)", "uid", refused.value("app", "uid", ""), refused.field("app", "uid"), html!{}, false))
                    button type="submit" { "Create application" }
                }
            }
        },
    )
}

async fn create_app(State(c): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let s = match c.post_session(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut input = json!({ "name": form.get("name").trim() });
    if !form.get("uid").trim().is_empty() {
        input["uid"] = json!(form.get("uid").trim());
    }
    match c
        .api(&s.token, Method::POST, "app", Some(input.to_string()))
        .await
    {
        Ok(app) => redirect(&format!("/apps/{}?done=app-created", seg(text(&app, "id")))),
        Err(Failure::SignedOut) => c.failed(&headers, &s, Failure::SignedOut),
        Err(f) => {
            let refused = Refused::new("app", &form, f);
            apps_view(&c, &headers, &s, &HashMap::new(), refused).await
        }
    }
}

/// The application page's edit form, filled with the application's settings, or with
/// what was typed and the API's messages when it refused them.
fn app_edit_form(app_url: &str, s: &Session, app: &Value, refused: &Refused) -> Markup {
    let current = settings::app_form_values(app);
    let v = |name: &str| {
        let now = current
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        refused.value("app-edit", name, now)
    };
    let err = |field: &str| refused.field("app-edit", field);
    let validate = if refused.form == "app-edit" {
        refused.value("app-edit", "validatePayloads", "") == "on"
    } else {
        app["validatePayloads"].as_bool().unwrap_or(false)
    };
    html! {
        form method="post" action=(format!("{app_url}/edit")) {
            (csrf(s))
            (general_errors(refused.general("app-edit", settings::APP_FIELDS)))
            (text_field("Name", "appName", v("appName"), err("name"), html!{}, true))
            (text_field("uid (empty: none)", "appUid", v("appUid"), err("uid"), html!{}, false))
            (text_field("Rate limit (messages per second to each endpoint; empty: none)", "appThrottleRate", v("appThrottleRate"), err("throttleRate"), html!{}, false))
            (textarea_field("Default retry policy for its endpoints (JSON; empty: the server's)", "appRetryPolicy", v("appRetryPolicy"), err("retryPolicy")))
            (textarea_field("Metadata (one key=value per line)", "appMetadata", v("appMetadata"), err("metadata")))
            div.check {
                input type="checkbox" id="f-appValidatePayloads" name="validatePayloads" value="on" checked[validate];
                " "
                label for="f-appValidatePayloads" { "Reject messages whose payload does not match their event type's newest schema" }
            }
            button type="submit" { "Save application" }
        }
    }
}

async fn edit_app(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let s = match c.post_session(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = match settings::app_patch_body(&form) {
        Ok(body) => {
            c.api(
                &s.token,
                Method::PATCH,
                &format!("app/{}", seg(&app)),
                Some(body.to_string()),
            )
            .await
        }
        Err(f) => Err(f),
    };
    match result {
        Ok(a) => redirect(&format!("/apps/{}?done=app-saved", seg(text(&a, "id")))),
        Err(f @ (Failure::SignedOut | Failure::NotFound(_))) => c.failed(&headers, &s, f),
        Err(f) => {
            let refused = Refused::new("app-edit", &form, f);
            app_view(&c, &headers, &s, &app, &HashMap::new(), refused).await
        }
    }
}

async fn delete_app(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let s = match c.post_session(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match c
        .api(
            &s.token,
            Method::DELETE,
            &format!("app/{}", seg(&app)),
            None,
        )
        .await
    {
        Ok(_) => redirect("/apps?done=app-deleted"),
        Err(f) => c.failed(&headers, &s, f),
    }
}

// ---------------------------------------------------------------------------------
// An application

async fn app_page(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(app): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(s) = c.session(&headers) else {
        return redirect("/");
    };
    app_view(&c, &headers, &s, &app, &q, Refused::default()).await
}

/// Messages per page of an application's log.
const MESSAGES_PER_PAGE: u32 = 20;

async fn app_view(
    c: &Console,
    headers: &HeaderMap,
    s: &Session,
    app_id: &str,
    q: &HashMap<String, String>,
    refused: Refused,
) -> Response {
    let app = match c.api_get(&s.token, &format!("app/{}", seg(app_id))).await {
        Ok(a) => a,
        Err(f) => return c.failed(headers, s, f),
    };
    let id = text(&app, "id").to_string();
    let base = format!("app/{}", seg(&id));
    let endpoints = match c
        .api_list(&s.token, &format!("{base}/endpoint?limit=50"))
        .await
    {
        Ok(p) => p,
        Err(f) => return c.failed(headers, s, f),
    };
    // Health at a glance: each endpoint's last day and its newest attempt (both read
    // through indexes; counting every delivery by state, the API's `.../stats`, would
    // read all of the endpoint's deliveries).
    let mut health = Vec::with_capacity(endpoints.len());
    for ep in &endpoints {
        let last = last_attempt(c, &s.token, &base, text(ep, "id")).await;
        let day = last_day(c, &s.token, &base, text(ep, "id")).await;
        health.push((last, day));
    }
    let iterator = q.get("iterator").map(String::as_str).unwrap_or("");
    let filters = LogFilters::from_query(q);
    let mut msg_path = format!(
        "{base}/msg?limit={MESSAGES_PER_PAGE}&with_content=false{}",
        filters.api_query()
    );
    if !iterator.is_empty() {
        msg_path.push_str(&format!("&iterator={}", seg(iterator)));
    }
    // A filter the API refuses shows its message next to the filter, over no rows.
    let (messages, filter_errors) = match c.api_get(&s.token, &msg_path).await {
        Ok(p) => (p, Refused::default()),
        Err(Failure::Invalid(list)) => (
            Value::Null,
            Refused::new("filter", &Form(q.clone()), Failure::Invalid(list)),
        ),
        Err(f) => return c.failed(headers, s, f),
    };
    let app_url = format!("/apps/{}", seg(&id));
    let log_url = |it: Option<&str>| {
        let mut pairs = filters.page_query();
        if let Some(it) = it {
            pairs.push(("iterator", it.to_string()));
        }
        let qs = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        if qs.is_empty() {
            format!("{app_url}#messages")
        } else {
            format!("{app_url}?{qs}#messages")
        }
    };
    let status = if refused.errors.is_empty() && filter_errors.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    page(
        status,
        text(&app, "name"),
        Some(s),
        html! {
            p.crumbs { a href="/apps" { "Applications" } " / " }
            h1 { (text(&app, "name")) }
            p.ids { "id " code { (id) } @if !text(&app, "uid").is_empty() { " · uid " code { (text(&app, "uid")) } } }
            (notice(q))
            section aria-labelledby="endpoints" {
                h2 #endpoints { "Endpoints" }
                @if endpoints.is_empty() {
                    p.empty { "No endpoints yet." }
                } @else {
                    table {
                        thead { tr {
                            th scope="col" { "URL" } th scope="col" { "State" }
                            th scope="col" { "Delivered (24 h)" }
                            th scope="col" { "Newest attempt" }
                        } }
                        tbody {
                            @for (ep, (last, day)) in endpoints.iter().zip(&health) {
                                tr {
                                    td {
                                        a href=(format!("{app_url}/endpoints/{}", seg(text(ep, "id")))) { (text(ep, "url")) }
                                        @if !text(ep, "description").is_empty() { br; span.hint { (text(ep, "description")) } }
                                    }
                                    td {
                                        (ep_state(ep))
                                        @if ep["failingSince"].is_string() {
                                            br; span.badge.off { "Failing" } " since " (timestamp(ep, "failingSince"))
                                        }
                                    }
                                    td.rate {
                                        @let (ok, bad) = (day["succeeded"].as_u64().unwrap_or(0), day["failed"].as_u64().unwrap_or(0));
                                        @match charts::success_rate(ok, bad) {
                                            Some(rate) => { (rate) br; span.hint { (ok) " of " (ok + bad) " attempts" } }
                                            None => { span.hint { "no attempts" } }
                                        }
                                    }
                                    td {
                                        @match last {
                                            Some(a) => { (attempt_badge(a)) " " (timestamp(a, "timestamp")) }
                                            None => { span.hint { "none yet" } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                details.card open[refused.form == "endpoint"] {
                    summary { "Add an endpoint" }
                    form method="post" action=(format!("{app_url}/endpoints")) {
                        (csrf(s))
                        (general_errors(refused.general("endpoint", &["url", "description", "filterTypes", "channels"])))
                        (text_field("URL", "url", refused.value("endpoint", "url", ""), refused.field("endpoint", "url"), html!{}, true))
                        (text_field("Description", "description", refused.value("endpoint", "description", ""), refused.field("endpoint", "description"), html!{}, false))
                        (text_field("Event types (comma-separated; empty: all)", "filterTypes", refused.value("endpoint", "filterTypes", ""), refused.field("endpoint", "filterTypes"), html!{}, false))
                        (text_field("Channels (comma-separated; empty: all)", "channels", refused.value("endpoint", "channels", ""), refused.field("endpoint", "channels"), html!{}, false))
                        button type="submit" { "Create endpoint" }
                    }
                }
            }
            section aria-labelledby="messages" {
                h2 #messages { "Messages" }
                form.filters method="get" action=(app_url) role="search" aria-label="Filter messages" {
                    (general_errors(filter_errors.general("filter", &["event_types", "channel", "status", "after", "before"])))
                    (text_field("Event types (comma-separated)", "eventTypes", &filters.event_types, filter_errors.field("filter", "event_types"), html!{}, false))
                    (text_field("Channel", "channel", &filters.channel, filter_errors.field("filter", "channel"), html!{}, false))
                    (select_field("Delivery status", "status", LOG_STATUSES, &filters.status, filter_errors.field("filter", "status")))
                    (datetime_field("Created after (UTC)", "after", &filters.after, filter_errors.field("filter", "after"), false))
                    (datetime_field("Created before (UTC)", "before", &filters.before, filter_errors.field("filter", "before"), false))
                    div.filter-actions {
                        button type="submit" { "Filter" }
                        @if filters.any() { " " a href=(format!("{app_url}#messages")) { "Clear filters" } }
                    }
                }
                p.hint { "A message has a delivery status per endpoint: Failed lists those with at least one delivery that failed for good, and a message's page shows each." }
                @if filter_errors.errors.is_empty() {
                    (message_table(&app_url, &messages))
                }
                p.pager {
                    @if !iterator.is_empty() { a href=(log_url(None)) { "Newest" } " " }
                    @if !messages["done"].as_bool().unwrap_or(true) {
                        a href=(log_url(Some(text(&messages, "iterator")))) { "Older messages" }
                    }
                }
                details.card open[refused.form == "message"] {
                    summary { "Create a message" }
                    form method="post" action=(format!("{app_url}/messages")) {
                        (csrf(s))
                        (general_errors(refused.general("message", &["eventType", "payload"])))
                        (text_field("Event type", "eventType", refused.value("message", "eventType", ""), refused.field("message", "eventType"), html!{}, true))
                        (textarea_field("Payload (JSON object)", "payload", refused.value("message", "payload", "{}"), refused.field("message", "payload")))
                        button type="submit" { "Create message" }
                    }
                }
            }
            details.card open[refused.form == "app-edit"] {
                summary { "Edit this application" }
                (app_edit_form(&app_url, s, &app, &refused))
            }
            details.card.danger {
                summary { "Delete this application" }
                p { "Deletes the application with its endpoints, messages and attempts. This cannot be undone." }
                form method="post" action=(format!("{app_url}/delete")) {
                    (csrf(s))
                    button.danger type="submit" { "Delete " (text(&app, "name")) }
                }
            }
        },
    )
}

/// The message log's status filter: any, or a delivery that failed (the API's only one).
const LOG_STATUSES: &[(&str, &str)] = &[("", "Any"), ("fail", "Failed")];

/// The message log's filters, as typed into the application page's filter form.
#[derive(Debug, Default, PartialEq)]
struct LogFilters {
    event_types: String,
    channel: String,
    /// A delivery's `statusText` (empty: any), as the API's `status` parameter takes it.
    status: String,
    /// `datetime-local` values (UTC).
    after: String,
    before: String,
}

impl LogFilters {
    fn from_query(q: &HashMap<String, String>) -> Self {
        let get = |k: &str| q.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
        LogFilters {
            event_types: get("eventTypes"),
            channel: get("channel"),
            status: get("status"),
            after: get("after"),
            before: get("before"),
        }
    }

    fn any(&self) -> bool {
        *self != LogFilters::default()
    }

    /// The API's list parameters for these filters (`&name=value...`).
    fn api_query(&self) -> String {
        let mut pairs = Vec::new();
        if !self.event_types.is_empty() {
            pairs.push(("event_types", self.event_types.clone()));
        }
        if !self.channel.is_empty() {
            pairs.push(("channel", self.channel.clone()));
        }
        if !self.status.is_empty() {
            pairs.push(("status", self.status.clone()));
        }
        if !self.after.is_empty() {
            pairs.push(("after", utc_time(&self.after)));
        }
        if !self.before.is_empty() {
            pairs.push(("before", utc_time(&self.before)));
        }
        match serde_urlencoded::to_string(&pairs) {
            Ok(qs) if !qs.is_empty() => format!("&{qs}"),
            _ => String::new(),
        }
    }

    /// The console page's query for these filters (to keep them while paging).
    fn page_query(&self) -> Vec<(&'static str, String)> {
        [
            ("eventTypes", &self.event_types),
            ("channel", &self.channel),
            ("status", &self.status),
            ("after", &self.after),
            ("before", &self.before),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, v.clone()))
        .collect()
    }
}

pub(crate) fn ep_state(ep: &Value) -> Markup {
    if ep["disabled"].as_bool().unwrap_or(false) {
        html! { span.badge.off { "Disabled" } }
    } else {
        html! { span.badge.on { "Enabled" } }
    }
}

pub(crate) fn attempt_badge(a: &Value) -> Markup {
    let code = a["responseStatusCode"].as_u64().unwrap_or(0);
    let ok = a["status"].as_u64() == Some(0);
    let label = if code == 0 {
        text(a, "errorKind").to_string()
    } else {
        code.to_string()
    };
    html! {
        @if ok { span.badge.on { (label) } } @else { span.badge.off { (label) } }
    }
}

pub(crate) fn message_table(app_url: &str, page: &Value) -> Markup {
    let rows = page["data"].as_array().cloned().unwrap_or_default();
    html! {
        @if rows.is_empty() {
            p.empty { "No messages." }
        } @else {
            table {
                thead { tr { th scope="col" { "Message" } th scope="col" { "Event type" } th scope="col" { "eventId" } th scope="col" { "Created" } } }
                tbody {
                    @for m in &rows {
                        tr {
                            td { a href=(format!("{app_url}/msgs/{}", seg(text(m, "id")))) { code { (text(m, "id")) } } }
                            td { (text(m, "eventType")) }
                            td { (text(m, "eventId")) }
                            td { (timestamp(m, "timestamp")) }
                        }
                    }
                }
            }
        }
    }
}

async fn create_endpoint(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let s = match c.post_session(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match new_endpoint(&c, &s.token, &app, &form, &["filterTypes", "channels"]).await {
        Ok(ep) => redirect(&format!(
            "/apps/{}/endpoints/{}?done=endpoint-created",
            seg(&app),
            seg(text(&ep, "id"))
        )),
        Err(f @ (Failure::SignedOut | Failure::NotFound(_))) => c.failed(&headers, &s, f),
        Err(f) => {
            let refused = Refused::new("endpoint", &form, f);
            app_view(&c, &headers, &s, &app, &HashMap::new(), refused).await
        }
    }
}

/// Creates an endpoint of `app` from a form's `url`, `description` and the
/// comma-separated lists named in `lists` (the fields that form offers).
pub(crate) async fn new_endpoint(
    c: &Console,
    token: &str,
    app: &str,
    form: &Form,
    lists: &[&str],
) -> Result<Value, Failure> {
    let mut input = json!({ "url": form.get("url").trim() });
    if !form.get("description").trim().is_empty() {
        input["description"] = json!(form.get("description").trim());
    }
    for &name in lists {
        if let Some(items) = comma_list(form.get(name)) {
            input[name] = json!(items);
        }
    }
    let path = format!("app/{}/endpoint", seg(app));
    c.api(token, Method::POST, &path, Some(input.to_string()))
        .await
}

/// A message or example typed into a form; the payload goes to the API byte for byte.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewMessage<'a> {
    pub(crate) event_type: &'a str,
    pub(crate) payload: &'a serde_json::value::RawValue,
}

async fn create_message(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let s = match c.post_session(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = match raw_payload(form.get("payload")) {
        Ok(payload) => {
            let input = NewMessage {
                event_type: form.get("eventType").trim(),
                payload: &payload,
            };
            let body = serde_json::to_string(&input).unwrap_or_default();
            c.api(
                &s.token,
                Method::POST,
                &format!("app/{}/msg", seg(&app)),
                Some(body),
            )
            .await
        }
        Err(f) => Err(f),
    };
    match result {
        Ok(msg) => redirect(&format!(
            "/apps/{}/msgs/{}?done=message-created",
            seg(&app),
            seg(text(&msg, "id"))
        )),
        Err(f @ (Failure::SignedOut | Failure::NotFound(_))) => c.failed(&headers, &s, f),
        Err(f) => {
            let refused = Refused::new("message", &form, f);
            app_view(&c, &headers, &s, &app, &HashMap::new(), refused).await
        }
    }
}

// ---------------------------------------------------------------------------------
// A message

async fn message_page(
    State(c): State<Console>,
    headers: HeaderMap,
    Path((app, msg)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(s) = c.session(&headers) else {
        return redirect("/");
    };
    let app_v = match c.api_get(&s.token, &format!("app/{}", seg(&app))).await {
        Ok(a) => a,
        Err(f) => return c.failed(&headers, &s, f),
    };
    let app_id = text(&app_v, "id").to_string();
    let base = format!("app/{}", seg(&app_id));
    let v = match MessageView::fetch(&c, &s.token, &base, &msg).await {
        Ok(v) => v,
        Err(f) => return c.failed(&headers, &s, f),
    };
    let (m, msg_id) = (&v.m, &v.id);
    let app_url = format!("/apps/{}", seg(&app_id));
    page(
        StatusCode::OK,
        &format!("Message {msg_id}"),
        Some(&s),
        html! {
            p.crumbs { a href="/apps" { "Applications" } " / " a href=(app_url) { (text(&app_v, "name")) } " / " }
            h1 { "Message " code { (msg_id) } }
            (notice(&q))
            dl.props {
                dt { "Event type" } dd { (text(m, "eventType")) }
                dt { "eventId" } dd { (text(m, "eventId")) }
                dt { "Channels" } dd { (list_text(m, "channels")) }
                dt { "Created" } dd { (timestamp(m, "timestamp")) }
            }
            (message_sections(&app_url, &v, Some(&s), None))
        },
    )
}

/// The endpoint's attempts per hour over the last `hours` hours, in whole hours ending
/// with the current one (the API's `.../stats/attempts`), or `Null` when the API could
/// not say (the page shows that rather than failing).
async fn attempt_stats(c: &Console, token: &str, base: &str, ep_id: &str, hours: i64) -> Value {
    use chrono::{DurationRound, SecondsFormat};
    let hour = chrono::Duration::hours(1);
    let now = chrono::Utc::now();
    let this_hour = now.duration_trunc(hour).unwrap_or(now);
    let since = this_hour - hour * (hours as i32 - 1);
    let until = this_hour + hour;
    let path = format!(
        "{base}/endpoint/{}/stats/attempts?since={}&until={}&bucket_seconds=3600",
        seg(ep_id),
        since.to_rfc3339_opts(SecondsFormat::Secs, true),
        until.to_rfc3339_opts(SecondsFormat::Secs, true),
    );
    c.api_get(token, &path).await.unwrap_or(Value::Null)
}

/// An endpoint's attempts over the last 24 hours (the current one and the 23 before),
/// in one bucket (for health at a glance).
async fn last_day(c: &Console, token: &str, base: &str, ep_id: &str) -> Value {
    let path = format!(
        "{base}/endpoint/{}/stats/attempts?bucket_seconds=86400",
        seg(ep_id)
    );
    c.api_get(token, &path).await.unwrap_or(Value::Null)
}

/// The newest delivery attempt to an endpoint of the application at `base`, if any
/// (for health at a glance; a failed read shows as none rather than failing the page).
pub(crate) async fn last_attempt(
    c: &Console,
    token: &str,
    base: &str,
    ep_id: &str,
) -> Option<Value> {
    c.api_get(
        token,
        &format!("{base}/attempt/endpoint/{}?limit=1", seg(ep_id)),
    )
    .await
    .ok()
    .and_then(|p| p["data"].get(0).cloned())
}

/// An endpoint of the application at `base` and its recent attempts, as its page shows
/// them.
pub(crate) async fn endpoint_with_attempts(
    c: &Console,
    token: &str,
    base: &str,
    ep: &str,
) -> Result<(Value, Vec<Value>), Failure> {
    let e = c
        .api_get(token, &format!("{base}/endpoint/{}", seg(ep)))
        .await?;
    let attempts = c
        .api_list(
            token,
            &format!("{base}/attempt/endpoint/{}?limit=20", seg(text(&e, "id"))),
        )
        .await?;
    Ok((e, attempts))
}

/// Sends message `msg` of `app` again to endpoint `ep`.
pub(crate) async fn resend_message(
    c: &Console,
    token: &str,
    app: &str,
    msg: &str,
    ep: &str,
) -> Result<Value, Failure> {
    let path = format!(
        "app/{}/msg/{}/endpoint/{}/resend",
        seg(app),
        seg(msg),
        seg(ep)
    );
    c.api(token, Method::POST, &path, None).await
}

/// Sends the example typed into an endpoint page's form to that endpoint (at
/// `api_path`). With `empty_payload_is_the_schemas`, an empty payload asks the API for
/// the event type's own example (the portal); otherwise it must be JSON.
pub(crate) async fn send_example(
    c: &Console,
    token: &str,
    api_path: &str,
    form: &Form,
    empty_payload_is_the_schemas: bool,
) -> Result<Value, Failure> {
    let event_type = form.get("eventType").trim();
    let payload = form.get("payload");
    let body = if empty_payload_is_the_schemas && payload.trim().is_empty() {
        json!({ "eventType": event_type }).to_string()
    } else {
        let payload = raw_payload(payload)?;
        serde_json::to_string(&NewMessage {
            event_type,
            payload: &payload,
        })
        .unwrap_or_default()
    };
    c.api(
        token,
        Method::POST,
        &format!("{api_path}/send-example"),
        Some(body),
    )
    .await
}

/// A message as its page shows it, fetched the same way for the console and the portal
/// (`base` is the API path of its application).
pub(crate) struct MessageView {
    pub(crate) m: Value,
    pub(crate) id: String,
    /// The payload as the API sent it, indented: a parsed `Value` would sort its keys.
    pub(crate) payload: String,
    pub(crate) deliveries: Vec<Value>,
    pub(crate) attempts: Vec<Value>,
}

impl MessageView {
    pub(crate) async fn fetch(
        c: &Console,
        token: &str,
        base: &str,
        msg: &str,
    ) -> Result<Self, Failure> {
        let raw = c
            .api_bytes(
                token,
                Method::GET,
                &format!("{base}/msg/{}", seg(msg)),
                None,
            )
            .await?;
        let m: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        #[derive(serde::Deserialize)]
        struct RawMessage {
            payload: Box<serde_json::value::RawValue>,
        }
        let payload = serde_json::from_slice::<RawMessage>(&raw)
            .map(|r| json::pretty(r.payload.get()))
            .unwrap_or_default();
        let id = text(&m, "id").to_string();
        let deliveries = c
            .api_list(
                token,
                &format!("{base}/msg/{}/endpoint?limit=250", seg(&id)),
            )
            .await?;
        let attempts = c
            .api_list(token, &format!("{base}/attempt/msg/{}?limit=100", seg(&id)))
            .await?;
        Ok(Self {
            m,
            id,
            payload,
            deliveries,
            attempts,
        })
    }
}

/// A message page's payload, deliveries and attempts. `resend` is the session whose
/// CSRF token the Resend forms carry, or `None` where none is offered (a read-only
/// portal); `table_class` is the deliveries table's class, if it has one.
pub(crate) fn message_sections(
    app_url: &str,
    v: &MessageView,
    resend: Option<&Session>,
    table_class: Option<&str>,
) -> Markup {
    let msg_url = format!("{app_url}/msgs/{}", seg(&v.id));
    html! {
        section aria-labelledby="payload" {
            h2 #payload { "Payload" }
            pre.payload tabindex="0" aria-labelledby="payload" { code { (v.payload) } }
        }
        section aria-labelledby="deliveries" {
            h2 #deliveries { "Deliveries" }
            @if v.deliveries.is_empty() {
                p.empty { "No endpoint matched this message." }
            } @else {
                table class=[table_class] {
                    thead { tr {
                        th scope="col" { "Endpoint" } th scope="col" { "State" } th scope="col" { "Attempts" } th scope="col" { "Next attempt" }
                        @if resend.is_some() { th scope="col" { "Action" } }
                    } }
                    tbody {
                        @for d in &v.deliveries {
                            tr {
                                td { a href=(format!("{app_url}/endpoints/{}", seg(text(d, "id")))) { (text(d, "url")) } }
                                td { span.badge.(delivery_class(text(d, "statusText"))) { (text(d, "statusText")) } }
                                td { (d["attempts"]) }
                                td { @if d["nextAttempt"].is_string() { (timestamp(d, "nextAttempt")) } @else { "—" } }
                                @if let Some(s) = resend {
                                    td {
                                        form method="post" action=(format!("{msg_url}/resend/{}", seg(text(d, "id")))) {
                                            (csrf(s))
                                            button type="submit" aria-label=(format!("Resend to {}", text(d, "url"))) { "Resend" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="attempts" {
            h2 #attempts { "Attempts" }
            (attempt_table(app_url, &v.attempts))
        }
    }
}

pub(crate) fn delivery_class(status: &str) -> &'static str {
    match status {
        "success" => "on",
        "fail" => "off",
        _ => "wait",
    }
}

pub(crate) fn attempt_table(app_url: &str, attempts: &[Value]) -> Markup {
    html! {
        @if attempts.is_empty() {
            p.empty { "No attempts yet." }
        } @else {
            table.attempts {
                thead { tr {
                    th scope="col" { "Time" } th scope="col" { "Endpoint" } th scope="col" { "Status" }
                    th scope="col" { "Duration" } th scope="col" { "Trigger" } th scope="col" { "Response" }
                } }
                tbody {
                    @for a in attempts {
                        tr {
                            td { (timestamp(a, "timestamp")) }
                            td { a href=(format!("{app_url}/endpoints/{}", seg(text(a, "endpointId")))) { (text(a, "url")) } }
                            td.status { (attempt_badge(a)) }
                            td { (a["responseDurationMs"]) " ms" }
                            td { @if a["triggerType"].as_u64() == Some(1) { "manual" } @else { "scheduled" } }
                            td { code.excerpt { (excerpt(text(a, "response"))) } }
                        }
                    }
                }
            }
        }
    }
}

/// The start of a response body, for a table cell (the API keeps up to 4 KiB).
pub(crate) fn excerpt(s: &str) -> String {
    const MAX: usize = 200;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

async fn resend(
    State(c): State<Console>,
    headers: HeaderMap,
    Path((app, msg, ep)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let s = match c.post_session(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match resend_message(&c, &s.token, &app, &msg, &ep).await {
        Ok(_) => redirect(&format!(
            "/apps/{}/msgs/{}?done=resent",
            seg(&app),
            seg(&msg)
        )),
        Err(f) => c.failed(&headers, &s, f),
    }
}

// ---------------------------------------------------------------------------------
// An endpoint

async fn endpoint_page(
    State(c): State<Console>,
    headers: HeaderMap,
    Path((app, ep)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(s) = c.session(&headers) else {
        return redirect("/");
    };
    endpoint_view(&c, &headers, &s, &app, &ep, &q, Refused::default()).await
}

async fn endpoint_view(
    c: &Console,
    headers: &HeaderMap,
    s: &Session,
    app: &str,
    ep: &str,
    q: &HashMap<String, String>,
    refused: Refused,
) -> Response {
    let app_v = match c.api_get(&s.token, &format!("app/{}", seg(app))).await {
        Ok(a) => a,
        Err(f) => return c.failed(headers, s, f),
    };
    let app_id = text(&app_v, "id").to_string();
    let base = format!("app/{}", seg(&app_id));
    let (e, attempts) = match endpoint_with_attempts(c, &s.token, &base, ep).await {
        Ok(v) => v,
        Err(f) => return c.failed(headers, s, f),
    };
    let ep_id = text(&e, "id").to_string();
    let app_url = format!("/apps/{}", seg(&app_id));
    let ep_url = format!("{app_url}/endpoints/{}", seg(&ep_id));
    let disabled = e["disabled"].as_bool().unwrap_or(false);
    let headers_v = c
        .api_get(
            &s.token,
            &format!("{base}/endpoint/{}/headers", seg(&ep_id)),
        )
        .await
        .unwrap_or(Value::Null);
    let week = q.get("range").is_some_and(|r| r == "7d");
    let hours: i64 = if week { 24 * 7 } else { 24 };
    let stats = attempt_stats(c, &s.token, &base, &ep_id, hours).await;
    let buckets = charts::buckets(&stats);
    let what = if week {
        "per hour over the last 7 days"
    } else {
        "per hour over the last 24 hours"
    };
    let day_ago = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let status = if refused.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    page(
        status,
        &format!("Endpoint {}", text(&e, "url")),
        Some(s),
        html! {
            p.crumbs { a href="/apps" { "Applications" } " / " a href=(app_url) { (text(&app_v, "name")) } " / " }
            h1 { "Endpoint " span.url { (text(&e, "url")) } }
            p.ids { "id " code { (ep_id) } " · " (ep_state(&e)) }
            (notice(q))
            section aria-labelledby="activity" {
                h2 #activity { "Activity" }
                nav.range aria-label="Chart window" {
                    @if week {
                        a href=(ep_url) { "Last 24 hours" } " · " span aria-current="page" { "Last 7 days" }
                    } @else {
                        span aria-current="page" { "Last 24 hours" } " · " a href=(format!("{ep_url}?range=7d")) { "Last 7 days" }
                    }
                }
                @if stats.is_null() {
                    p.error role="alert" { "The attempt statistics could not be read." }
                } @else {
                    p {
                        (stats["succeeded"]) " delivered, " (stats["failed"]) " failed"
                        @if let Some(rate) = charts::success_rate(stats["succeeded"].as_u64().unwrap_or(0), stats["failed"].as_u64().unwrap_or(0)) {
                            " (" (rate) " delivered)"
                        }
                        "."
                    }
                    div.charts {
                        figure {
                            figcaption { "Attempts " (what) }
                            (charts::attempts_chart(&buckets, "chart-attempts", what))
                        }
                        figure {
                            figcaption { "Latency " (what) }
                            (charts::latency_chart(&buckets, "chart-latency", what))
                        }
                    }
                    details {
                        summary { "The numbers as a table" }
                        (charts::table(&buckets, &format!("Attempts {what}")))
                    }
                }
            }
            section aria-labelledby="settings" {
                h2 #settings { "Settings" }
                (settings_form(&ep_url, s, &e, &headers_v, &refused))
            }
            section aria-labelledby="secret" {
                h2 #secret { "Signing secret" }
                p { code #secret-value hidden { } }
                div.actions {
                    (secret_forms(&ep_url, s))
                    @if disabled {
                        form method="post" action=(format!("{ep_url}/enable")) {
                            (csrf(s))
                            button type="submit" { "Enable endpoint" }
                        }
                    } @else {
                        form method="post" action=(format!("{ep_url}/disable")) {
                            (csrf(s))
                            button type="submit" { "Disable endpoint" }
                        }
                    }
                }
            }
            section.card aria-labelledby="example" {
                h2 #example { "Send an example" }
                p.hint { "Sent to this endpoint only, whatever its event type filter." }
                form method="post" action=(format!("{ep_url}/send-example")) {
                    (csrf(s))
                    (general_errors(refused.general("example", &["eventType", "payload"])))
                    (text_field("Event type", "eventType", refused.value("example", "eventType", "console.example"), refused.field("example", "eventType"), html!{}, true))
                    (textarea_field("Payload (JSON object)", "payload", refused.value("example", "payload", "{\"example\": true}"), refused.field("example", "payload")))
                    button type="submit" { "Send example" }
                }
            }
            section.card aria-labelledby="recover" {
                h2 #recover { "Recover failed deliveries" }
                p.hint { "Sends every failed delivery to this endpoint of messages created since (and before) these times again. Times are UTC." }
                form method="post" action=(format!("{ep_url}/recover")) {
                    (csrf(s))
                    (general_errors(refused.general("recover", &["since", "until"])))
                    (datetime_field("Since (UTC)", "since", refused.value("recover", "since", &day_ago), refused.field("recover", "since"), true))
                    (datetime_field("Until (UTC, optional; default now)", "until", refused.value("recover", "until", ""), refused.field("recover", "until"), false))
                    button type="submit" { "Recover" }
                }
            }
            section aria-labelledby="recent" {
                h2 #recent { "Recent attempts" }
                (attempt_table(&app_url, &attempts))
            }
        },
    )
}

/// The endpoint page's settings form, filled with the endpoint's settings, or with what
/// was typed and the API's messages when it refused them.
fn settings_form(
    ep_url: &str,
    s: &Session,
    e: &Value,
    headers: &Value,
    refused: &Refused,
) -> Markup {
    let current: HashMap<&str, String> = settings::form_values(e, headers).into_iter().collect();
    let v = |name: &str| {
        refused.value(
            "settings",
            name,
            current.get(name).map(String::as_str).unwrap_or(""),
        )
    };
    let err = |api_field: &str| refused.field("settings", api_field);
    // An error about the signature as a whole (an unknown scheme) shows at the scheme.
    let scheme_error = refused
        .field_exact("settings", "signature")
        .or_else(|| err("signature.scheme"));
    let header_error = err("signature.header");
    let svix_error = err("signature.svixHeaders");
    let hint = |t: &str| html! { span.hint { (t) } };
    html! {
        form.card method="post" action=(format!("{ep_url}/settings")) {
            (csrf(s))
            (general_errors(refused.general("settings", settings::FIELDS).into_iter().chain(refused.general_exact("settings", "signature", &["signature.scheme", "signature.header", "signature.svixHeaders"])).collect()))
            (text_field("URL", "url", v("url"), err("url"), html!{}, true))
            (text_field("Description", "description", v("description"), err("description"), html!{}, false))
            (text_field("Event types (comma-separated; empty: all)", "filterTypes", v("filterTypes"), err("filterTypes"), html!{}, false))
            (text_field("Channels (comma-separated; empty: all)", "channels", v("channels"), err("channels"), html!{}, false))
            (text_field("Throttle (deliveries per second; empty: none)", "throttleRate", v("throttleRate"), err("throttleRate"), html!{}, false))
            (text_field("Timeout (ms)", "timeoutMs", v("timeoutMs"), err("timeoutMs"), hint("Empty: the default, 15000 ms."), false))
            (text_field("Max concurrency (empty: adaptive)", "maxConcurrency", v("maxConcurrency"), err("maxConcurrency"), hint("A hard cap on attempts in flight at once; empty lets hookline find what the receiver serves."), false))
            (textarea_field("Retry policy (JSON; empty: the application's, or the default)", "retryPolicy", v("retryPolicy"), err("retryPolicy")))
            p.hint { "For example " code { "{\"kind\": \"exponential\", \"initialSeconds\": 5, \"factor\": 2.0, \"maxIntervalSeconds\": 3600, \"giveUpAfterSeconds\": 86400}" } " or " code { "{\"kind\": \"none\"}" } "." }
            (select_field("Signature scheme", "signatureScheme", settings::SCHEMES, v("signatureScheme"), scheme_error))
            (text_field("Signature header (hmac-sha256-hex only)", "signatureHeader", v("signatureHeader"), header_error, html!{}, false))
            (select_field("Also send svix-* headers (standard and ed25519)", "svixHeaders", &[("default", "Server default"), ("yes", "Yes"), ("no", "No")], v("svixHeaders"), svix_error))
            (textarea_field("Custom headers (one Name: value per line)", "headers", v("headers"), err("headers")))
            p.hint { "Values are not shown: " code { (settings::KEPT) } " keeps a header's current value." }
            button type="submit" { "Save settings" }
        }
    }
}

/// An endpoint page's Reveal and Rotate forms (the Reveal form's answer is read by the
/// page's script into `#secret-value`).
pub(crate) fn secret_forms(ep_url: &str, s: &Session) -> Markup {
    html! {
        form method="post" action=(format!("{ep_url}/secret")) data-reveal="secret-value" {
            (csrf(s))
            button type="submit" { "Reveal secret" }
        }
        form method="post" action=(format!("{ep_url}/rotate")) {
            (csrf(s))
            button type="submit" { "Rotate secret" }
        }
    }
}

/// The answer to a Reveal form: the endpoint's secret as JSON for the page's script,
/// never cached, or the API's refusal (the secret is never part of a rendered page).
pub(crate) async fn reveal_secret(c: &Console, token: &str, api_path: &str) -> Response {
    match c.api_get(token, &format!("{api_path}/secret")).await {
        Ok(v) => (
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(json!({ "key": text(&v, "key") })),
        )
            .into_response(),
        Err(f) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "detail": f.message() })),
        )
            .into_response(),
    }
}

/// Rotates the secret of the endpoint at `api_path`.
pub(crate) async fn rotate_secret(
    c: &Console,
    token: &str,
    api_path: &str,
) -> Result<Value, Failure> {
    c.api(
        token,
        Method::POST,
        &format!("{api_path}/secret/rotate"),
        Some("{}".into()),
    )
    .await
}

async fn endpoint_action(
    State(c): State<Console>,
    headers: HeaderMap,
    Path((app, ep, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let s = match c.post_session(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let api_path = format!("app/{}/endpoint/{}", seg(&app), seg(&ep));
    let page_url = format!("/apps/{}/endpoints/{}", seg(&app), seg(&ep));
    let back = |done: &str| redirect(&format!("{page_url}?done={done}"));
    match action.as_str() {
        "secret" => {
            // Read by the page's script when the operator asks; never part of a page.
            reveal_secret(&c, &s.token, &api_path).await
        }
        "rotate" => match rotate_secret(&c, &s.token, &api_path).await {
            Ok(_) => back("rotated"),
            Err(f) => c.failed(&headers, &s, f),
        },
        "enable" | "disable" => {
            let body = json!({ "disabled": action == "disable" }).to_string();
            match c.api(&s.token, Method::PATCH, &api_path, Some(body)).await {
                Ok(_) => back(if action == "disable" {
                    "disabled"
                } else {
                    "enabled"
                }),
                Err(f) => c.failed(&headers, &s, f),
            }
        }
        "settings" => {
            let current = match c.api_get(&s.token, &api_path).await {
                Ok(e) => c
                    .api_get(&s.token, &format!("{api_path}/headers"))
                    .await
                    .map(|h| (e, h)),
                Err(f) => Err(f),
            };
            let result = match current {
                Ok((current, headers_now)) => {
                    match settings::put_body(&form, &current, &headers_now) {
                        Ok(body) => {
                            c.api(&s.token, Method::PUT, &api_path, Some(body.to_string()))
                                .await
                        }
                        Err(f) => Err(f),
                    }
                }
                Err(f) => Err(f),
            };
            match result {
                Ok(_) => back("saved"),
                Err(f @ (Failure::SignedOut | Failure::NotFound(_))) => c.failed(&headers, &s, f),
                Err(f) => {
                    let refused = Refused::new("settings", &form, f);
                    endpoint_view(&c, &headers, &s, &app, &ep, &HashMap::new(), refused).await
                }
            }
        }
        "recover" => {
            let mut body = json!({ "since": utc_time(form.get("since")) });
            if !form.get("until").trim().is_empty() {
                body["until"] = json!(utc_time(form.get("until")));
            }
            let path = format!("{api_path}/recover");
            match c
                .api(&s.token, Method::POST, &path, Some(body.to_string()))
                .await
            {
                Ok(out) => redirect(&format!(
                    "{page_url}?done=recovered&n={}",
                    out["recovered"].as_u64().unwrap_or(0)
                )),
                Err(f @ (Failure::SignedOut | Failure::NotFound(_))) => c.failed(&headers, &s, f),
                Err(f) => {
                    let refused = Refused::new("recover", &form, f);
                    endpoint_view(&c, &headers, &s, &app, &ep, &HashMap::new(), refused).await
                }
            }
        }
        "send-example" => match send_example(&c, &s.token, &api_path, &form, false).await {
            Ok(msg) => redirect(&format!(
                "/apps/{}/msgs/{}?done=example-sent",
                seg(&app),
                seg(text(&msg, "id"))
            )),
            Err(f @ (Failure::SignedOut | Failure::NotFound(_))) => c.failed(&headers, &s, f),
            Err(f) => {
                let refused = Refused::new("example", &form, f);
                endpoint_view(&c, &headers, &s, &app, &ep, &HashMap::new(), refused).await
            }
        },
        _ => c.failed(
            &headers,
            &s,
            Failure::NotFound("no such endpoint action".into()),
        ),
    }
}
