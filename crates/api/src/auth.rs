//! Bearer-token authentication and the app-portal token endpoint.
//!
//! Tokens are random strings; only their SHA-256 is stored. A token with enough entropy
//! cannot be guessed from lookup timing of its hash, and the one token that is compared
//! in memory (the configured admin token) is compared in constant time.

use axum::extract::{Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use hookline_store::{ApiToken, Application};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::error::{ApiError, ApiResult};
use crate::extract::{answer_unread, OptionalJsonBody};
use crate::AppState;

/// Who is calling, decided by the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    /// An app-portal token: sees one application only.
    App(String),
}

/// The caller, whether it may only read, plus a stable, non-secret fingerprint of its token (a hash prefix), which
/// scopes idempotency keys so two callers never see each other's stored responses.
#[derive(Debug, Clone)]
pub struct Auth {
    pub caller: Caller,
    pub read_only: bool,
    pub fingerprint: String,
}

impl Auth {
    pub fn require_admin(&self) -> ApiResult<()> {
        match self.caller {
            Caller::Admin => Ok(()),
            _ => Err(ApiError::Forbidden(
                "this operation needs an admin token; app-portal tokens cannot do it",
            )),
        }
    }

    /// Whether this caller may see the application with this id.
    pub fn sees_app(&self, app_id: &str) -> bool {
        match &self.caller {
            Caller::Admin => true,
            Caller::App(id) => id == app_id,
        }
    }
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token with a prefix saying what it is (`sk_` admin, `appsk_` portal).
pub fn generate_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Middleware: resolves the bearer token to an [`Auth`] in the request extensions, or
/// refuses the request (after reading its body, so the connection stays usable).
pub async fn require_auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match authenticate(&state, &mut req).await {
        Ok(()) => next.run(req).await,
        Err(refused) => answer_unread(req, refused.into_response()).await,
    }
}

async fn authenticate(state: &AppState, req: &mut Request) -> Result<(), ApiError> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(
            "missing Authorization header; send 'Authorization: Bearer <token>'",
        ))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized(
            "Authorization header must be 'Bearer <token>'",
        ))?;
    let Auth {
        caller,
        read_only,
        fingerprint,
    } = resolve_token(state, token)
        .await?
        .ok_or(ApiError::Unauthorized("invalid or expired token"))?;
    if read_only && !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Err(ApiError::Forbidden("this token is read-only"));
    }
    req.extensions_mut().insert(Auth {
        caller,
        read_only,
        fingerprint,
    });
    Ok(())
}

/// Who a token belongs to (`None`: nobody, or it expired). The web console checks a
/// token with it at sign-in, so that the console and the API accept the same tokens.
pub async fn resolve_token(state: &AppState, token: &str) -> ApiResult<Option<Auth>> {
    let hash = hash_token(token);
    let fingerprint = hex_prefix(&hash);
    let mut found = None;
    for admin in state.admin_token_hashes.iter() {
        if bool::from(admin.ct_eq(&hash)) {
            found = Some((Caller::Admin, false));
        }
    }
    if found.is_none() {
        found = state
            .store
            .find_token(&hash, hookline_store::now())
            .await?
            .map(|t| match t.app_id {
                None => (Caller::Admin, t.read_only),
                Some(app) => (Caller::App(app), t.read_only),
            });
    }
    Ok(found.map(|(caller, read_only)| Auth {
        caller,
        read_only,
        fingerprint,
    }))
}

fn hex_prefix(hash: &[u8; 32]) -> String {
    hash[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Looks an application up for this caller; another app's resources are simply not found.
pub async fn visible_app(state: &AppState, auth: &Auth, id_or_uid: &str) -> ApiResult<Application> {
    match state.store.get_app(id_or_uid).await? {
        Some(app) if auth.sees_app(&app.id) => Ok(app),
        _ => Err(ApiError::NotFound("application not found")),
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppPortalAccessIn {
    /// Token lifetime in seconds (default 7 days, at most 1 year).
    pub expiry: Option<u64>,
    /// A token that can only read (every non-GET request gets 403).
    pub read_only: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppPortalAccessOut {
    /// Opens the customer portal for this one application (the token is in the URL's
    /// fragment, `#key=`, which browsers never send to a server).
    pub url: String,
    pub token: String,
}

/// Create an app-scoped token (for a customer-facing portal).
#[utoipa::path(
    post,
    path = "/api/v1/auth/app-portal-access/{app_id}",
    tag = "Authentication",
    params(("app_id" = String, Path, description = "application id or uid")),
    request_body(content = AppPortalAccessIn, content_type = "application/json"),
    responses(
        (status = 200, body = AppPortalAccessOut),
        (status = 403, body = crate::error::HttpErrorOut),
        (status = 404, body = crate::error::HttpErrorOut)
    ),
    security(("bearer" = []))
)]
async fn app_portal_access(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(app_id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<AppPortalAccessIn>,
) -> ApiResult<Json<AppPortalAccessOut>> {
    auth.require_admin()?;
    let app = visible_app(&state, &auth, &app_id).await?;
    let input = body.unwrap_or_default();
    let expiry = input.expiry.unwrap_or(7 * 24 * 3600);
    if expiry == 0 || expiry > 365 * 24 * 3600 {
        return Err(ApiError::field(
            "expiry",
            "must be between 1 and 31536000 seconds",
        ));
    }
    let token = generate_token("appsk");
    let now = hookline_store::now();
    state
        .store
        .insert_token(ApiToken {
            hash: hash_token(&token),
            app_id: Some(app.id.clone()),
            read_only: input.read_only.unwrap_or(false),
            expires_at: Some(now + chrono::Duration::seconds(expiry as i64)),
            created_at: now,
        })
        .await?;
    Ok(Json(AppPortalAccessOut {
        // The customer portal for this application, with the token in the fragment:
        // browsers never send a fragment, so the token reaches no request line or log.
        url: format!("{}/portal/{}#key={token}", state.public_url, app.id),
        token,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(app_portal_access))
}
