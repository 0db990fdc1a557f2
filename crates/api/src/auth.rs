//! Bearer-token authentication, the app-portal token endpoint, and managed tokens
//! (`/api/v1/auth/token`, a hookline extension).
//!
//! Tokens are random strings; only their SHA-256 is stored. A token with enough entropy
//! cannot be guessed from lookup timing of its hash, and the one token that is compared
//! in memory (the configured admin token) is compared in constant time.
//!
//! Stored tokens are looked up in the database on every request, with no cache in
//! between: a revoked (deleted) token is refused by the very next request, on every
//! process sharing the database. Their last use is written at most once a minute
//! ([`RecentUses`], and the store's own condition across processes).

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
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
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
    // Before the lookup: a token over its rate costs no database read.
    if let Some(limiter) = &state.api_rate_limit {
        limiter
            .check(&hash_token(token))
            .map_err(|wait| ApiError::RateLimited(crate::rate_limit::retry_after_secs(wait)))?;
    }
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
            .inspect(|_| note_use(state, hash))
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

/// How often a stored token's last use is written, at most.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// When this process last wrote each stored token's use: a request whose token was
/// written less than [`LAST_USED_EVERY`] ago writes nothing, so a busy token costs one
/// write a minute, not one per request. The store's update is conditional too, so other
/// processes' writes count.
#[derive(Debug, Default)]
pub struct RecentUses(Mutex<HashMap<[u8; 32], Instant>>);

impl RecentUses {
    /// Whether this use should be written, noting it if so.
    fn due(&self, hash: &[u8; 32], now: Instant) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= 10_000 {
            seen.retain(|_, at| now.saturating_duration_since(*at) < LAST_USED_EVERY);
        }
        match seen.get(hash) {
            Some(at) if now.saturating_duration_since(*at) < LAST_USED_EVERY => false,
            _ => {
                seen.insert(*hash, now);
                true
            }
        }
    }
}

/// Records a stored token's use in the background (the request does not wait for it),
/// if it is due.
fn note_use(state: &AppState, hash: [u8; 32]) {
    if !state.token_uses.due(&hash, Instant::now()) {
        return;
    }
    let store = state.store.clone();
    tokio::spawn(async move {
        let every = chrono::Duration::from_std(LAST_USED_EVERY).unwrap_or_default();
        if let Err(e) = store.touch_token(&hash, hookline_store::now(), every).await {
            tracing::debug!(error = %e, "recording a token's last use failed");
        }
    });
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
    #[schema(minimum = 1, maximum = 31536000)]
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
    request_body(content = Option<AppPortalAccessIn>, content_type = "application/json",
        description = "Optional: without a body, a token for 7 days that may write."),
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
            prefix: Some(token_prefix(&token)),
            ..Default::default()
        })
        .await?;
    Ok(Json(AppPortalAccessOut {
        // The customer portal for this application, with the token in the fragment:
        // browsers never send a fragment, so the token reaches no request line or log.
        url: format!("{}/portal/{}#key={token}", state.public_url, app.id),
        token,
    }))
}

// --- managed tokens ------------------------------------------------------------------

/// The longest `expiry` of a managed token: ten years.
pub const MAX_TOKEN_EXPIRY_SECS: u64 = 10 * 365 * 24 * 3600;
/// The longest token name.
pub const MAX_TOKEN_NAME: usize = 100;

/// What a new managed token is.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    pub name: String,
    /// `None`: an admin token; `Some(app id)`: sees that application only.
    pub app_id: Option<String>,
    pub read_only: bool,
    /// Lifetime in seconds; `None`: it never expires.
    pub expiry_secs: Option<u64>,
}

/// Checks a new token's name and expiry; the error names the field (camelCase).
pub fn check_new_token(t: &NewToken) -> Result<(), (&'static str, String)> {
    let name = t.name.as_str();
    if name
        .trim_matches(|c: char| c == ' ' || c.is_control())
        .is_empty()
    {
        return Err(("name", "must not be empty or only spaces".into()));
    }
    if name.chars().count() > MAX_TOKEN_NAME {
        return Err((
            "name",
            format!("must be at most {MAX_TOKEN_NAME} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(("name", "must not contain control characters".into()));
    }
    if let Some(secs) = t.expiry_secs {
        if secs == 0 || secs > MAX_TOKEN_EXPIRY_SECS {
            return Err((
                "expiry",
                format!("must be between 1 and {MAX_TOKEN_EXPIRY_SECS} seconds"),
            ));
        }
    }
    Ok(())
}

/// Mints a managed token: its text (shown once, never stored) and the record to store.
/// The application, if any, must already be resolved to its id.
pub fn mint_token(t: &NewToken, now: chrono::DateTime<chrono::Utc>) -> (String, ApiToken) {
    let text = generate_token(if t.app_id.is_some() { "appsk" } else { "sk" });
    let record = ApiToken {
        hash: hash_token(&text),
        app_id: t.app_id.clone(),
        read_only: t.read_only,
        expires_at: t
            .expiry_secs
            .map(|s| now + chrono::Duration::seconds(s as i64)),
        created_at: now,
        name: Some(t.name.trim_matches(' ').to_string()),
        prefix: Some(token_prefix(&text)),
        last_used_at: None,
    };
    (text, record)
}

/// The part of a token's text a listing shows: its kind and 6 characters of its random
/// part (36 of its 256 bits).
pub fn token_prefix(text: &str) -> String {
    let (kind, rest) = text.split_once('_').unwrap_or(("", text));
    format!("{kind}_{}", rest.chars().take(6).collect::<String>())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenIn {
    /// What the token is for, for people: 1 to 100 characters, no control characters,
    /// not only spaces (leading and trailing spaces are dropped).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\x00-\\x20\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub name: String,
    /// The application (id or uid) the token is limited to; absent: an admin token. An
    /// application that does not exist is a 422 naming `appId`.
    pub app_id: Option<String>,
    /// A token that can only read (every request but GET and HEAD gets 403).
    pub read_only: Option<bool>,
    /// Lifetime in seconds (1 to 315360000); absent: it never expires.
    #[schema(minimum = 1, maximum = 315360000)]
    pub expiry: Option<u64>,
}

/// A stored token as a listing shows it: never its text, never its hash.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenOut {
    /// `tok_` and 24 hex digits; what `DELETE /api/v1/auth/token/{token_id}` takes.
    pub id: String,
    /// `None` for portal tokens and tokens created before tokens had names.
    pub name: Option<String>,
    /// The first characters of the token text (`sk_AbC123`), to tell tokens apart;
    /// `None` for tokens created before hookline kept it.
    pub prefix: Option<String>,
    /// `admin` or `application`.
    pub scope: &'static str,
    /// The application, for an `application` token.
    pub app_id: Option<String>,
    pub read_only: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it was last used, to within a minute; `None`: never (since it had names).
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<ApiToken> for TokenOut {
    fn from(t: ApiToken) -> Self {
        Self {
            id: t.id(),
            name: t.name,
            prefix: t.prefix,
            scope: if t.app_id.is_some() {
                "application"
            } else {
                "admin"
            },
            app_id: t.app_id,
            read_only: t.read_only,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
        }
    }
}

/// A new token: its listing, and its text, shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenCreatedOut {
    #[serde(flatten)]
    pub info: TokenOut,
    /// The token itself. Only its hash is kept: it cannot be shown again.
    pub token: String,
}

/// Create a named token (hookline extension). Admin tokens only.
#[utoipa::path(
    post,
    path = "/api/v1/auth/token",
    tag = "Authentication",
    request_body(content = TokenIn, content_type = "application/json"),
    responses(
        (status = 201, body = TokenCreatedOut),
        (status = 401, body = crate::error::HttpErrorOut),
        (status = 403, body = crate::error::HttpErrorOut),
        (status = 422, body = crate::error::ValidationErrorOut),
        (status = 429, body = crate::error::HttpErrorOut)
    ),
    security(("bearer" = []))
)]
async fn create_token(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    crate::extract::JsonBody(input): crate::extract::JsonBody<TokenIn>,
) -> ApiResult<(axum::http::StatusCode, Json<TokenCreatedOut>)> {
    auth.require_admin()?;
    let mut new = NewToken {
        name: input.name,
        app_id: None,
        read_only: input.read_only.unwrap_or(false),
        expiry_secs: input.expiry,
    };
    check_new_token(&new).map_err(|(field, msg)| ApiError::field(field, msg))?;
    if let Some(app) = input.app_id {
        let found = state
            .store
            .get_app(&app)
            .await?
            .ok_or_else(|| ApiError::field("appId", "no application has this id or uid"))?;
        new.app_id = Some(found.id);
    }
    let (token, record) = mint_token(&new, hookline_store::now());
    state.store.insert_token(record.clone()).await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(TokenCreatedOut {
            info: record.into(),
            token,
        }),
    ))
}

/// List stored tokens, oldest first (hookline extension). Admin tokens only; the
/// answer never holds a token's text or hash. Tokens given by `--admin-token` are not
/// stored and not listed.
#[utoipa::path(
    get,
    path = "/api/v1/auth/token",
    tag = "Authentication",
    responses(
        (status = 200, body = crate::pagination::ListResponse<TokenOut>),
        (status = 401, body = crate::error::HttpErrorOut),
        (status = 403, body = crate::error::HttpErrorOut),
        (status = 429, body = crate::error::HttpErrorOut)
    ),
    security(("bearer" = []))
)]
async fn list_tokens(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
) -> ApiResult<Json<crate::pagination::ListResponse<TokenOut>>> {
    auth.require_admin()?;
    let tokens = state.store.list_tokens(hookline_store::now()).await?;
    Ok(Json(crate::pagination::ListResponse {
        data: tokens.into_iter().map(TokenOut::from).collect(),
        iterator: None,
        prev_iterator: None,
        done: true,
    }))
}

/// Revoke a stored token (hookline extension). Admin tokens only. The next request
/// with it, to any process sharing the database, gets 401.
#[utoipa::path(
    delete,
    path = "/api/v1/auth/token/{token_id}",
    tag = "Authentication",
    params(("token_id" = String, Path, description = "the token's id, `tok_...`")),
    responses(
        (status = 204, description = "revoked"),
        (status = 401, body = crate::error::HttpErrorOut),
        (status = 403, body = crate::error::HttpErrorOut),
        (status = 404, body = crate::error::HttpErrorOut),
        (status = 429, body = crate::error::HttpErrorOut)
    ),
    security(("bearer" = []))
)]
async fn revoke_token(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(token_id): Path<String>,
) -> ApiResult<axum::http::StatusCode> {
    auth.require_admin()?;
    let id =
        hookline_store::parse_token_id(&token_id).ok_or(ApiError::NotFound("token not found"))?;
    match state.store.revoke_token(&id).await {
        Ok(()) => Ok(axum::http::StatusCode::NO_CONTENT),
        Err(hookline_store::StoreError::NotFound) => Err(ApiError::NotFound("token not found")),
        Err(e) => Err(e.into()),
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(app_portal_access))
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_use_is_written_at_most_once_a_minute() {
        let uses = RecentUses::default();
        let t0 = Instant::now();
        assert!(uses.due(&[1; 32], t0), "the first use is written");
        assert!(!uses.due(&[1; 32], t0 + Duration::from_secs(59)));
        assert!(uses.due(&[2; 32], t0), "another token is counted apart");
        assert!(uses.due(&[1; 32], t0 + Duration::from_secs(60)));
        assert!(!uses.due(&[1; 32], t0 + Duration::from_secs(61)));
    }

    #[test]
    fn minted_tokens_keep_a_short_prefix_and_only_their_hash() {
        let now = hookline_store::now();
        let (text, record) = mint_token(
            &NewToken {
                name: " ci ".into(),
                app_id: Some("app_1".into()),
                read_only: true,
                expiry_secs: Some(60),
            },
            now,
        );
        assert!(text.starts_with("appsk_"), "{text}");
        assert_eq!(record.hash, hash_token(&text));
        assert_eq!(record.name.as_deref(), Some("ci"));
        let prefix = record.prefix.clone().unwrap();
        assert_eq!(prefix.len(), "appsk_".len() + 6);
        assert!(text.starts_with(&prefix));
        assert_eq!(record.expires_at, Some(now + chrono::Duration::seconds(60)));
        assert!(record.read_only);
        assert_eq!(
            hookline_store::parse_token_id(&record.id()).map(|b| b.to_vec()),
            Some(record.hash[..12].to_vec())
        );
    }

    #[test]
    fn new_tokens_need_a_name_and_a_sane_expiry() {
        let ok = NewToken {
            name: "ci".into(),
            ..Default::default()
        };
        assert!(check_new_token(&ok).is_ok());
        for (bad, field) in [
            (
                NewToken {
                    name: " ".into(),
                    ..ok.clone()
                },
                "name",
            ),
            (
                NewToken {
                    name: "x".repeat(101),
                    ..ok.clone()
                },
                "name",
            ),
            (
                NewToken {
                    name: "a\nb".into(),
                    ..ok.clone()
                },
                "name",
            ),
            (
                NewToken {
                    expiry_secs: Some(0),
                    ..ok.clone()
                },
                "expiry",
            ),
            (
                NewToken {
                    expiry_secs: Some(MAX_TOKEN_EXPIRY_SECS + 1),
                    ..ok.clone()
                },
                "expiry",
            ),
        ] {
            assert_eq!(check_new_token(&bad).unwrap_err().0, field, "{bad:?}");
        }
    }
}
