//! hookline's operator web console, served by the binary at `/`, and its customer
//! portal at `/portal/{app}` (see `portal.rs` for how a portal link becomes a session).
//!
//! Pages are rendered on the server with [maud]: templates are Rust expressions
//! checked at compile time, every interpolated value is HTML-escaped unless wrapped in
//! `PreEscaped` (which this crate never does with data), and there is no template
//! directory to ship. The one stylesheet and the scripts are embedded with
//! `include_str!`, so `cargo build` alone produces a binary with the whole console,
//! and it works with no internet. maud is chosen over askama for this slice because its
//! templates live next to the handlers that fill them; both are well kept.
//!
//! The console does not reimplement the API: every read and every change is a request
//! to the API's own router, made in-process with the operator's token (see
//! [`session`]). So the console and the API cannot disagree on validation (the API's
//! 422 messages are shown next to the form field they name), on who may see what, or
//! on what "not found" means.
//!
//! Safety: a Content-Security-Policy that allows no inline script or style, a CSRF
//! token on every form that changes something, `SameSite=Strict` `HttpOnly` cookies,
//! and pages that are never cached. The API never reads this cookie: it authenticates
//! by the `Authorization` header only.
//!
//! This crate owns the pages and the sessions; it must not touch the store directly.

mod charts;
mod event_types;
mod json;
mod pages;
mod portal;
pub mod session;
mod settings;
mod system;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hookline_api::{ApiService, AppState};
use tower::ServiceExt;

use crate::session::Sessions;

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console(Arc<Inner>);

pub struct Inner {
    /// The API's complete service, called in-process.
    api: ApiService,
    /// The API's state, to check a token at sign-in as the API does.
    state: AppState,
    sessions: Sessions,
    /// Customers' portal sessions, apart from the operators' (each is limited to one
    /// application and carries its own cookie).
    portal_sessions: Sessions,
    /// The portal pages' Content-Security-Policy, with `--portal-frame-ancestors`.
    portal_csp: HeaderValue,
}

impl std::ops::Deref for Console {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Console {
    pub fn new(api: ApiService, state: AppState) -> Self {
        Self::with_portal_frame_ancestors(api, state, &[])
    }

    /// A console whose customer portal may be framed by pages of these origins
    /// (`--portal-frame-ancestors`; empty: by none). Origins are checked by the config.
    pub fn with_portal_frame_ancestors(
        api: ApiService,
        state: AppState,
        frame_ancestors: &[String],
    ) -> Self {
        let ancestors = if frame_ancestors.is_empty() {
            "'none'".to_string()
        } else {
            frame_ancestors.join(" ")
        };
        let csp = CSP.replace(
            "frame-ancestors 'none'",
            &format!("frame-ancestors {ancestors}"),
        );
        // An origin with a character a header cannot hold never passes the config's
        // check; should one reach here, framing stays forbidden.
        let portal_csp =
            HeaderValue::from_str(&csp).unwrap_or_else(|_| HeaderValue::from_static(CSP));
        Self(Arc::new(Inner {
            api,
            state,
            sessions: Sessions::default(),
            portal_sessions: Sessions::default(),
            portal_csp,
        }))
    }
}

/// The console's pages and assets, with its security headers. Merge it in front of the
/// API (whose paths all start with `/api/` or are `/metrics`).
pub fn router(console: Console) -> Router {
    pages::router()
        .merge(event_types::router())
        .merge(system::router())
        .merge(portal::router())
        .with_state(console.clone())
        .layer(axum::middleware::from_fn_with_state(
            console,
            security_headers,
        ))
}

/// The policy every console response carries: scripts and styles from this origin only
/// (so an injected `<script>` or `style=` would not run even if escaping failed), no
/// framing, forms that post only here, and nothing cached.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The same policy on the customer portal's pages, except `frame-ancestors`, which
/// `--portal-frame-ancestors` sets (and then no `X-Frame-Options`, which cannot list
/// origins; browsers that know `frame-ancestors` ignore it anyway).
async fn security_headers(
    axum::extract::State(console): axum::extract::State<Console>,
    req: Request,
    next: Next,
) -> Response {
    let is_asset = req.uri().path().starts_with("/console/assets/");
    let is_portal = req.uri().path() == "/portal" || req.uri().path().starts_with("/portal/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if is_portal {
        h.insert(header::CONTENT_SECURITY_POLICY, console.portal_csp.clone());
        if console.portal_csp.as_bytes() == CSP.as_bytes() {
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        }
    } else {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Why an API call made for a page did not give the page its data.
#[derive(Debug)]
pub(crate) enum Failure {
    /// 401: the token was revoked or expired since sign-in.
    SignedOut,
    /// 404, with the API's detail.
    NotFound(String),
    /// 422: `(field, message)` pairs, the field as the API names it (`url`,
    /// `retryPolicy.factor`; empty when the body as a whole is at fault).
    Invalid(Vec<(String, String)>),
    /// Anything else, with the API's status and detail.
    Other(StatusCode, String),
}

impl Failure {
    /// A one-line description for an error banner.
    pub(crate) fn message(&self) -> String {
        match self {
            Failure::SignedOut => "your session's token is no longer valid; sign in again".into(),
            Failure::NotFound(d) => d.clone(),
            Failure::Invalid(list) => list
                .iter()
                .map(|(f, m)| {
                    if f.is_empty() {
                        m.clone()
                    } else {
                        format!("{f}: {m}")
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
            Failure::Other(_, d) => d.clone(),
        }
    }
}

/// One path segment for an API URL, percent-encoded: ids in console URLs come from
/// the address bar and must not be able to change which API path is called.
pub(crate) fn seg(s: &str) -> String {
    // Unreserved characters (RFC 3986) stay readable: ids are `app_...`, uids `acme-1`.
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// Largest API answer the console reads (a page of 250 messages with payloads fits).
const MAX_API_BODY: usize = 64 * 1024 * 1024;

impl Console {
    /// Calls the API in-process as the operator: `path` is under `/api/v1/`.
    pub(crate) async fn api(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<serde_json::Value, Failure> {
        let bytes = self.api_bytes(token, method, path, body).await?;
        Ok(if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
        })
    }

    /// A GET of one API resource.
    pub(crate) async fn api_get(
        &self,
        token: &str,
        path: &str,
    ) -> Result<serde_json::Value, Failure> {
        self.api(token, Method::GET, path, None).await
    }

    /// A GET of one of the API's list pages, answering its `data` (both the console and
    /// the portal show a single page of these; neither follows the iterator here).
    pub(crate) async fn api_list(
        &self,
        token: &str,
        path: &str,
    ) -> Result<Vec<serde_json::Value>, Failure> {
        let page = self.api_get(token, path).await?;
        Ok(page["data"].as_array().cloned().unwrap_or_default())
    }

    /// [`Console::api`], answering the body as the API sent it (for payloads, whose
    /// key order a parsed `Value` would not keep).
    pub(crate) async fn api_bytes(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<axum::body::Bytes, Failure> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/api/v1/{path}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v)
            }
            None => Body::empty(),
        };
        let req = req
            .body(body)
            .map_err(|e| Failure::Other(StatusCode::BAD_REQUEST, format!("bad request: {e}")))?;
        let resp = match self.api.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), MAX_API_BODY)
            .await
            .map_err(|e| {
                Failure::Other(
                    StatusCode::BAD_GATEWAY,
                    format!("reading the API's answer: {e}"),
                )
            })?;
        if status.is_success() {
            return Ok(bytes);
        }
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        let detail = value.get("detail");
        let text = detail
            .and_then(|d| d.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| status.to_string());
        Err(match status {
            StatusCode::UNAUTHORIZED => Failure::SignedOut,
            StatusCode::NOT_FOUND => Failure::NotFound(text),
            StatusCode::UNPROCESSABLE_ENTITY => Failure::Invalid(
                detail
                    .and_then(|d| d.as_array())
                    .map(|list| {
                        list.iter()
                            .map(|e| {
                                let field = e
                                    .get("loc")
                                    .and_then(|l| l.as_array())
                                    .map(|l| {
                                        l.iter()
                                            .skip(1)
                                            .filter_map(|p| {
                                                p.as_str()
                                                    .map(str::to_string)
                                                    .or_else(|| p.as_u64().map(|n| n.to_string()))
                                            })
                                            .collect::<Vec<_>>()
                                            .join(".")
                                    })
                                    .unwrap_or_default();
                                let msg = e
                                    .get("msg")
                                    .and_then(|m| m.as_str())
                                    .unwrap_or("is invalid")
                                    .to_string();
                                (field, msg)
                            })
                            .collect()
                    })
                    .unwrap_or_else(|| vec![(String::new(), text)]),
            ),
            _ => Failure::Other(status, text),
        })
    }
}

/// Whether the browser reached us over https, as a TLS-terminating proxy says
/// (hookline itself serves plain HTTP). Only used to add `Secure` to the cookie, so a
/// forged header can only make the cookie stricter.
pub(crate) fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// A plain response with a status (for assets and redirects).
pub(crate) fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}
