//! The customer portal at `/portal/{app}`: one application's endpoints and messages,
//! for the sender's customer, opened with the `url` that app-portal-access returns.
//!
//! That `url` carries the app-portal token in its fragment (`#key=...`), which browsers
//! never send, so the token is in no request line, proxy log or `Referer`. The page's
//! script (`assets/portal.js`; the CSP allows no inline script) takes it out of the
//! address bar first, then posts it once in a request body to `/portal/{app}/session`,
//! which checks it as the API does and answers with a session cookie.
//!
//! Why a server-side session rather than the token in the page's memory: the pages are
//! then rendered on the server exactly as the operator console's are (same escaping,
//! same forms with CSRF tokens, same in-process API calls), so a page works without a
//! client-side app, and no script on the page can ever read the token (the cookie is
//! `HttpOnly` and holds only a random session id). The cookie is scoped to
//! `Path=/portal/{app}`, so two portals open in one browser do not mix, and a session
//! only ever serves the application its token is for. Over https it is
//! `SameSite=None; Secure; Partitioned` so the portal works inside the sender's product
//! in an iframe (a partitioned cookie belongs to that embedding site only); over plain
//! http it is `SameSite=Strict`. Either way every form carries the session's CSRF
//! token.
//!
//! Every read and change goes through the API with the app-portal token, so another
//! application's ids typed into a URL are the API's 404, and a read-only token could
//! change nothing even if a form were forged; the pages of a read-only session simply
//! offer no action (and no secret).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use serde_json::{json, Value};

use crate::pages::{
    attempt_badge, attempt_table, cross_site, csrf, endpoint_with_attempts, ep_state,
    general_errors, last_attempt, list_text, message_sections, message_table, new_endpoint,
    resend_message, reveal_secret, rotate_secret, secret_forms, send_example, text, text_field,
    textarea_field, timestamp, Form, MessageView, Refused,
};
use crate::session::{cookie_value, Session};
use crate::{json, over_https, redirect, seg, Console, Failure};

/// The portal's cookie (its path is the application's portal).
pub const COOKIE: &str = "hookline_portal";

pub fn router() -> Router<Console> {
    Router::new()
        .route("/portal/{app}", get(home).post(create_endpoint))
        .route("/portal/{app}/session", post(open_session))
        .route("/portal/{app}/endpoints/{ep}", get(endpoint_page))
        .route(
            "/portal/{app}/endpoints/{ep}/{action}",
            post(endpoint_action),
        )
        .route("/portal/{app}/msgs/{msg}", get(message_page))
        .route("/portal/{app}/msgs/{msg}/resend/{ep}", post(resend))
}

// ---------------------------------------------------------------------------------
// Sessions

/// The `Set-Cookie` value for a portal session of `app` (see the module docs for why
/// these attributes). No `Max-Age`: it ends with the browser, or after the idle time.
fn set_cookie(app: &str, id: &str, https: bool) -> String {
    let site = if https {
        "SameSite=None; Secure; Partitioned"
    } else {
        "SameSite=Strict"
    };
    format!("{COOKIE}={id}; Path=/portal/{}; HttpOnly; {site}", seg(app))
}

fn clear_cookie(app: &str, https: bool) -> String {
    format!("{}; Max-Age=0", set_cookie(app, "", https))
}

impl Console {
    /// This request's portal session, if it is one for `app`.
    fn portal_session(&self, headers: &HeaderMap, app: &str) -> Option<Session> {
        let s = self.portal_sessions.get(&cookie_value(headers, COOKIE)?)?;
        (s.app.as_deref() == Some(app)).then_some(s)
    }

    /// The session of a portal form post, if allowed: a session for this application,
    /// sent by a page of this origin, with the session's CSRF token, and not read-only.
    #[allow(clippy::result_large_err)]
    fn portal_post(
        &self,
        headers: &HeaderMap,
        app: &str,
        form: &Form,
    ) -> Result<Session, Response> {
        if cross_site(headers) {
            return Err(crate::pages::forbidden());
        }
        let s = self
            .portal_session(headers, app)
            .ok_or_else(|| no_session(app))?;
        if !s.csrf_matches(form.0.get("csrf").map(String::as_str)) {
            return Err(crate::pages::forbidden());
        }
        if s.read_only {
            return Err(portal_page(
                StatusCode::FORBIDDEN,
                "Read-only",
                app,
                None,
                html! {
                    h1 { "This portal is read-only" }
                    p.error role="alert" { "The link you opened lets you look, not change anything." }
                },
            ));
        }
        Ok(s)
    }

    /// The page for a failed API call.
    fn portal_failed(&self, headers: &HeaderMap, app: &str, s: &Session, f: Failure) -> Response {
        match f {
            Failure::SignedOut => {
                self.portal_sessions.remove(&s.id);
                let mut resp = portal_page(
                    StatusCode::UNAUTHORIZED,
                    "Link expired",
                    app,
                    None,
                    html! {
                        h1 { "This portal link has expired" }
                        p.error role="alert" { "Ask for a new link to the portal." }
                    },
                );
                if let Ok(v) = clear_cookie(app, over_https(headers)).parse() {
                    resp.headers_mut().insert(header::SET_COOKIE, v);
                }
                resp
            }
            Failure::NotFound(detail) => not_found(app, Some(s), &detail),
            other => {
                let status = match &other {
                    Failure::Other(status, _) => *status,
                    _ => StatusCode::BAD_REQUEST,
                };
                portal_page(
                    status,
                    "Error",
                    app,
                    Some(s),
                    html! {
                        h1 { "Something went wrong" }
                        p.error role="alert" { (other.message()) }
                        p { a href=(home_url(app)) { "Back to your endpoints" } }
                    },
                )
            }
        }
    }
}

fn home_url(app: &str) -> String {
    format!("/portal/{}", seg(app))
}

fn not_found(app: &str, s: Option<&Session>, detail: &str) -> Response {
    portal_page(
        StatusCode::NOT_FOUND,
        "Not found",
        app,
        s,
        html! {
            h1 { "Not found" }
            p.error role="alert" { (detail) }
            p { a href=(home_url(app)) { "Back to your endpoints" } }
        },
    )
}

/// A portal page asked for without a session for its application: as far as this
/// browser may know, there is nothing here.
fn no_session(app: &str) -> Response {
    not_found(
        app,
        None,
        "nothing to show here: open the portal with the link you were given",
    )
}

/// The token posted by the page's script, exchanged for a session cookie. Answers
/// JSON for the script; the token is never logged, echoed or put in a URL.
async fn open_session(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: Bytes,
) -> Response {
    let refuse = |status: StatusCode, detail: &str| {
        (
            status,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(json!({ "detail": detail })),
        )
            .into_response()
    };
    if cross_site(&headers) {
        return refuse(StatusCode::FORBIDDEN, "cross-site request refused");
    }
    let form = Form::parse(&body);
    let key = form.get("key").trim();
    if key.is_empty() {
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, "key: missing");
    }
    let auth = match hookline_api::auth::resolve_token(&c.state, key).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = ?e, "portal could not check a token");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the link could not be checked now; try again",
            );
        }
    };
    let Some(auth) = auth else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "this portal link is invalid or has expired; ask for a new one",
        );
    };
    match auth.caller {
        hookline_api::auth::Caller::App(id) if id == app => {
            let s = c
                .portal_sessions
                .create_scoped(key.to_string(), Some(id), auth.read_only);
            let mut resp = (
                [(header::CACHE_CONTROL, "no-store")],
                axum::Json(json!({ "readOnly": auth.read_only })),
            )
                .into_response();
            if let Ok(v) = set_cookie(&app, &s.id, over_https(&headers)).parse() {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        _ => refuse(
            StatusCode::UNAUTHORIZED,
            "this link is not for this application's portal",
        ),
    }
}

// ---------------------------------------------------------------------------------
// Layout

fn portal_page(
    status: StatusCode,
    title: &str,
    app: &str,
    s: Option<&Session>,
    body: Markup,
) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · Webhooks" }
                link rel="icon" href="/console/assets/favicon.svg" type="image/svg+xml";
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/portal.js" defer {}
            }
            body.portal {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href=(home_url(app)) { "Webhooks" }
                    @if let Some(s) = s {
                        @if s.read_only { span.badge.wait { "Read-only" } }
                    }
                }
                main #main { (body) }
            }
        }
    };
    (status, Html(markup.into_string())).into_response()
}

/// Fixed notices after a redirect, chosen by key: a URL can pick one, never write one.
fn notice(q: &HashMap<String, String>) -> Markup {
    let text = match q.get("done").map(String::as_str) {
        Some("endpoint-created") => "Endpoint created.",
        Some("rotated") => "Secret rotated. The previous secret keeps signing for 24 hours.",
        Some("resent") => "Message resent.",
        Some("example-sent") => "Test event sent.",
        _ => return html! {},
    };
    html! { p.notice role="status" { (text) } }
}

/// The catalog of event types (not archived), for choosing and for sending a test.
async fn catalog(c: &Console, s: &Session) -> Result<Vec<Value>, Failure> {
    let page = c.api_get(&s.token, "event-type?limit=250").await?;
    Ok(page["data"].as_array().cloned().unwrap_or_default())
}

/// The newest schema of an event type, indented, if it has one.
fn newest_schema(et: &Value) -> Option<String> {
    let schemas = et["schemas"].as_object()?;
    let newest = schemas
        .iter()
        .max_by_key(|(v, _)| v.parse::<u64>().unwrap_or(0))
        .map(|(_, s)| s)?;
    Some(json::pretty(&newest.to_string()))
}

// ---------------------------------------------------------------------------------
// Home: endpoints and messages

/// Messages per page of the log.
const MESSAGES_PER_PAGE: u32 = 20;

/// Endpoints per page (each costs one more API call, for its newest attempt).
const ENDPOINTS_PER_PAGE: u32 = 50;

async fn home(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(app): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(s) = c.portal_session(&headers, &app) else {
        return opening_page(&app);
    };
    home_view(&c, &headers, &s, &app, &q, Refused::default()).await
}

/// The page the `url` opens before there is a session: its script exchanges the key
/// in the fragment and reloads; without a key it says what to do.
fn opening_page(app: &str) -> Response {
    portal_page(
        StatusCode::OK,
        "Opening",
        app,
        None,
        html! {
            h1 #opening-title { "Opening your webhooks portal…" }
            p #opening data-session=(format!("{}/session", home_url(app))) role="status" {
                "This page needs the link you were given, with its access key, and JavaScript."
            }
        },
    )
}

async fn home_view(
    c: &Console,
    headers: &HeaderMap,
    s: &Session,
    app: &str,
    q: &HashMap<String, String>,
    refused: Refused,
) -> Response {
    let base = format!("app/{}", seg(app));
    let app_v = match c.api_get(&s.token, &base).await {
        Ok(a) => a,
        Err(f) => return c.portal_failed(headers, app, s, f),
    };
    let ep_iterator = q.get("endpoints").map(String::as_str).unwrap_or("");
    let mut ep_path = format!("{base}/endpoint?limit={ENDPOINTS_PER_PAGE}");
    if !ep_iterator.is_empty() {
        ep_path.push_str(&format!("&iterator={}", seg(ep_iterator)));
    }
    let (endpoints, more_endpoints) = match c.api_get(&s.token, &ep_path).await {
        Ok(p) => (
            p["data"].as_array().cloned().unwrap_or_default(),
            (!p["done"].as_bool().unwrap_or(true)).then(|| text(&p, "iterator").to_string()),
        ),
        Err(f) => return c.portal_failed(headers, app, s, f),
    };
    let mut last_attempts = Vec::with_capacity(endpoints.len());
    for ep in &endpoints {
        last_attempts.push(last_attempt(c, &s.token, &base, text(ep, "id")).await);
    }
    let types = if s.read_only {
        Vec::new()
    } else {
        match catalog(c, s).await {
            Ok(t) => t,
            Err(f) => return c.portal_failed(headers, app, s, f),
        }
    };
    let iterator = q.get("iterator").map(String::as_str).unwrap_or("");
    let mut msg_path = format!("{base}/msg?limit={MESSAGES_PER_PAGE}&with_content=false");
    if !iterator.is_empty() {
        msg_path.push_str(&format!("&iterator={}", seg(iterator)));
    }
    let messages = match c.api_get(&s.token, &msg_path).await {
        Ok(p) => p,
        Err(f) => return c.portal_failed(headers, app, s, f),
    };
    let app_url = home_url(app);
    let chosen: Vec<&str> = refused
        .value("endpoint", "filterTypes", "")
        .split(',')
        .filter(|t| !t.is_empty())
        .collect();
    let status = if refused.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    portal_page(
        status,
        text(&app_v, "name"),
        app,
        Some(s),
        html! {
            h1 { "Webhooks for " (text(&app_v, "name")) }
            (notice(q))
            section aria-labelledby="endpoints" {
                h2 #endpoints { "Endpoints" }
                @if endpoints.is_empty() {
                    p.empty { "No endpoints yet." }
                } @else {
                    table.endpoints {
                        thead { tr {
                            th scope="col" { "URL" } th scope="col" { "Event types" }
                            th scope="col" { "State" } th scope="col" { "Newest attempt" }
                        } }
                        tbody {
                            @for (ep, last) in endpoints.iter().zip(&last_attempts) {
                                tr {
                                    td {
                                        a href=(format!("{app_url}/endpoints/{}", seg(text(ep, "id")))) { (text(ep, "url")) }
                                        @if !text(ep, "description").is_empty() { br; span.hint { (text(ep, "description")) } }
                                    }
                                    td { (list_text(ep, "filterTypes")) }
                                    td { (ep_state(ep)) }
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
                p.pager {
                    @if !ep_iterator.is_empty() { a href=(app_url) { "First endpoints" } " " }
                    @if let Some(next) = &more_endpoints {
                        a href=(format!("{app_url}?endpoints={}", seg(next))) { "More endpoints" }
                    }
                }
                @if !s.read_only {
                    details.card open[refused.form == "endpoint"] {
                        summary { "Add an endpoint" }
                        form method="post" action=(app_url) {
                            (csrf(s))
                            (general_errors(refused.general("endpoint", &["url", "description", "filterTypes"])))
                            (text_field("URL", "url", refused.value("endpoint", "url", ""), refused.field("endpoint", "url"), html!{}, true))
                            (text_field("Description", "description", refused.value("endpoint", "description", ""), refused.field("endpoint", "description"), html!{}, false))
                            fieldset.types {
                                legend { "Event types (none chosen: all of them)" }
                                @if types.is_empty() {
                                    p.hint { "No event types are listed; the endpoint receives every event." }
                                }
                                @for (i, et) in types.iter().enumerate() {
                                    @let name = text(et, "name");
                                    @let id = format!("type-{i}");
                                    div.type {
                                        input type="checkbox" id=(id) name="filterTypes" value=(name) checked[chosen.contains(&name)];
                                        label for=(id) { code { (name) } }
                                        @if !text(et, "description").is_empty() {
                                            span.hint { " — " (text(et, "description")) }
                                        }
                                        @if let Some(schema) = newest_schema(et) {
                                            details.schema {
                                                summary { "Schema of " (name) }
                                                pre.payload tabindex="0" aria-label=(format!("Schema of {name}")) { code { (schema) } }
                                            }
                                        }
                                    }
                                }
                                @if let Some(e) = refused.field("endpoint", "filterTypes") {
                                    p.field-error { (e) }
                                }
                            }
                            button type="submit" { "Create endpoint" }
                        }
                    }
                }
            }
            section aria-labelledby="messages" {
                h2 #messages { "Messages" }
                (message_table(&app_url, &messages))
                p.pager {
                    @if !iterator.is_empty() { a href=(app_url) { "Newest" } " " }
                    @if !messages["done"].as_bool().unwrap_or(true) {
                        a href=(format!("{app_url}?iterator={}", seg(text(&messages, "iterator")))) { "Older messages" }
                    }
                }
            }
        },
    )
}

async fn create_endpoint(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: Bytes,
) -> Response {
    // Checkboxes repeat their name: collect every chosen type.
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let chosen: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "filterTypes")
        .map(|(_, v)| v.clone())
        .collect();
    let mut form = Form::parse(&body);
    form.0.insert("filterTypes".into(), chosen.join(","));
    let s = match c.portal_post(&headers, &app, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match new_endpoint(&c, &s.token, &app, &form, &["filterTypes"]).await {
        Ok(ep) => redirect(&format!(
            "{}/endpoints/{}?done=endpoint-created",
            home_url(&app),
            seg(text(&ep, "id"))
        )),
        Err(f @ (Failure::SignedOut | Failure::NotFound(_))) => {
            c.portal_failed(&headers, &app, &s, f)
        }
        Err(f) => {
            let refused = Refused::new("endpoint", &form, f);
            home_view(&c, &headers, &s, &app, &HashMap::new(), refused).await
        }
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
    let Some(s) = c.portal_session(&headers, &app) else {
        return no_session(&app);
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
    let base = format!("app/{}", seg(app));
    let (e, attempts) = match endpoint_with_attempts(c, &s.token, &base, ep).await {
        Ok(v) => v,
        Err(f) => return c.portal_failed(headers, app, s, f),
    };
    let ep_id = text(&e, "id").to_string();
    let types = if s.read_only {
        Vec::new()
    } else {
        match catalog(c, s).await {
            Ok(t) => t,
            Err(f) => return c.portal_failed(headers, app, s, f),
        }
    };
    let app_url = home_url(app);
    let ep_url = format!("{app_url}/endpoints/{}", seg(&ep_id));
    let picked = refused.value("example", "eventType", "").to_string();
    let status = if refused.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    portal_page(
        status,
        &format!("Endpoint {}", text(&e, "url")),
        app,
        Some(s),
        html! {
            p.crumbs { a href=(app_url) { "Endpoints" } " / " }
            h1 { "Endpoint " span.url { (text(&e, "url")) } }
            p.ids { "id " code { (ep_id) } " · " (ep_state(&e)) }
            (notice(q))
            dl.props {
                dt { "URL" } dd { (text(&e, "url")) }
                dt { "Description" } dd { (text(&e, "description")) }
                dt { "Event types" } dd { (list_text(&e, "filterTypes")) }
                dt { "Created" } dd { (timestamp(&e, "createdAt")) }
            }
            @if !s.read_only {
                section aria-labelledby="secret" {
                    h2 #secret { "Signing secret" }
                    p.hint { "Verify each webhook's signature with this secret (Standard Webhooks)." }
                    p { code #secret-value hidden { } }
                    div.actions {
                        (secret_forms(&ep_url, s))
                    }
                }
                section.card aria-labelledby="example" {
                    h2 #example { "Send a test event" }
                    p.hint { "Sent to this endpoint only. Leave the payload empty to send the event type's example." }
                    form method="post" action=(format!("{ep_url}/send-example")) {
                        (csrf(s))
                        (general_errors(refused.general("example", &["eventType", "payload"])))
                        @if types.is_empty() {
                            (text_field("Event type", "eventType", &picked, refused.field("example", "eventType"), html!{}, true))
                        } @else {
                            div.field {
                                label for="f-eventType" { "Event type" }
                                select #f-eventType name="eventType" {
                                    @for et in &types {
                                        option value=(text(et, "name")) selected[picked == text(et, "name")] { (text(et, "name")) }
                                    }
                                }
                                @if let Some(err) = refused.field("example", "eventType") { p.field-error { (err) } }
                            }
                        }
                        (textarea_field("Payload (JSON object; optional)", "payload", refused.value("example", "payload", ""), refused.field("example", "payload")))
                        button type="submit" { "Send test event" }
                    }
                }
            }
            section aria-labelledby="recent" {
                h2 #recent { "Recent attempts" }
                (attempt_table(&app_url, &attempts))
            }
        },
    )
}

async fn endpoint_action(
    State(c): State<Console>,
    headers: HeaderMap,
    Path((app, ep, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let s = match c.portal_post(&headers, &app, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let api_path = format!("app/{}/endpoint/{}", seg(&app), seg(&ep));
    let page_url = format!("{}/endpoints/{}", home_url(&app), seg(&ep));
    match action.as_str() {
        "secret" => reveal_secret(&c, &s.token, &api_path).await,
        "rotate" => match rotate_secret(&c, &s.token, &api_path).await {
            Ok(_) => redirect(&format!("{page_url}?done=rotated")),
            Err(f) => c.portal_failed(&headers, &app, &s, f),
        },
        "send-example" => match send_example(&c, &s.token, &api_path, &form, true).await {
            Ok(msg) => redirect(&format!(
                "{}/msgs/{}?done=example-sent",
                home_url(&app),
                seg(text(&msg, "id"))
            )),
            Err(f @ Failure::SignedOut) => c.portal_failed(&headers, &app, &s, f),
            Err(Failure::NotFound(d)) if d.starts_with("endpoint") => {
                c.portal_failed(&headers, &app, &s, Failure::NotFound(d))
            }
            Err(f) => {
                let f = match f {
                    Failure::NotFound(d) => Failure::Invalid(vec![("eventType".into(), d)]),
                    f => f,
                };
                let refused = Refused::new("example", &form, f);
                endpoint_view(&c, &headers, &s, &app, &ep, &HashMap::new(), refused).await
            }
        },
        _ => c.portal_failed(
            &headers,
            &app,
            &s,
            Failure::NotFound("no such endpoint action".into()),
        ),
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
    let Some(s) = c.portal_session(&headers, &app) else {
        return no_session(&app);
    };
    let base = format!("app/{}", seg(&app));
    let v = match MessageView::fetch(&c, &s.token, &base, &msg).await {
        Ok(v) => v,
        Err(f) => return c.portal_failed(&headers, &app, &s, f),
    };
    let (m, msg_id) = (&v.m, &v.id);
    let app_url = home_url(&app);
    portal_page(
        StatusCode::OK,
        &format!("Message {msg_id}"),
        &app,
        Some(&s),
        html! {
            p.crumbs { a href=(app_url) { "Endpoints and messages" } " / " }
            h1 { "Message " code { (msg_id) } }
            (notice(&q))
            dl.props {
                dt { "Event type" } dd { (text(m, "eventType")) }
                dt { "eventId" } dd { (text(m, "eventId")) }
                dt { "Created" } dd { (timestamp(m, "timestamp")) }
            }
            (message_sections(&app_url, &v, (!s.read_only).then_some(&s), Some("deliveries")))
        },
    )
}

async fn resend(
    State(c): State<Console>,
    headers: HeaderMap,
    Path((app, msg, ep)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let s = match c.portal_post(&headers, &app, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match resend_message(&c, &s.token, &app, &msg, &ep).await {
        Ok(_) => redirect(&format!(
            "{}/msgs/{}?done=resent",
            home_url(&app),
            seg(&msg)
        )),
        Err(f) => c.portal_failed(&headers, &app, &s, f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_scoped_to_the_applications_portal() {
        let c = set_cookie("app_1", "sid", false);
        assert_eq!(
            c,
            "hookline_portal=sid; Path=/portal/app_1; HttpOnly; SameSite=Strict"
        );
        let c = set_cookie("app_1", "sid", true);
        assert!(c.contains("SameSite=None; Secure; Partitioned"), "{c}");
        let gone = clear_cookie("app_1", false);
        assert!(gone.starts_with("hookline_portal=;") && gone.ends_with("Max-Age=0"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "hookline_console=x; hookline_portal=abc".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h, COOKIE).as_deref(), Some("abc"));
    }
}
