//! Field rules shared by the resource modules. Each check returns an [`ApiError`] naming
//! the field, so every handler reports bad input the same way. Pure functions, no I/O.

use std::collections::BTreeMap;

use axum::http::{HeaderName, HeaderValue};
use hookline_retry::RetryPolicy;
use hookline_signing::{EndpointKey, EndpointKeyError};
use hookline_store::SignatureConfig;

use crate::error::{ApiError, FieldError};

pub const MAX_CHANNELS: usize = 10;
pub const MAX_FILTER_TYPES: usize = 250;
pub const MAX_METADATA: usize = 50;
pub const MAX_HEADERS: usize = 50;
pub const MIN_TIMEOUT_MS: u32 = 100;
pub const MAX_TIMEOUT_MS: u32 = 60_000;
pub const DEFAULT_TIMEOUT_MS: u32 = 15_000;
pub const MAX_CONCURRENCY: u32 = 1_000;
/// Longest description of an endpoint or event type, in characters.
pub const MAX_DESCRIPTION: usize = 4096;
/// A name: not blank (it has a character other than a space, tab, CR or LF) and without
/// the NUL character, which PostgreSQL cannot store in text.
pub const NAME_PATTERN: &str = "^[^\\x00]*[^\\x00 \t\r\n][^\\x00]*$";
/// A description: anything but the NUL character.
pub const DESCRIPTION_PATTERN: &str = "^[^\\x00]*$";

/// Collects every field error of one request, so a client fixes them all at once.
#[derive(Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    pub fn check(&mut self, r: Result<(), ApiError>) {
        if let Err(ApiError::Validation(mut v)) = r {
            self.0.append(&mut v);
        }
    }

    pub fn add(&mut self, field: &str, msg: impl Into<String>) {
        self.0.push(FieldError::body(field, msg));
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// `^[a-zA-Z0-9\-_.]{1,256}$`, the Svix rule for uids and event ids.
pub fn uid(field: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > 256 || !v.chars().all(is_id_char) {
        return Err(ApiError::field(
            field,
            "must be 1 to 256 characters of a-z, A-Z, 0-9, '-', '_' or '.'",
        ));
    }
    Ok(())
}

/// A uid must not look like one of our ids, or lookups by "id or uid" would be ambiguous.
pub fn uid_not_id(field: &str, v: &str, prefix: &str) -> Result<(), ApiError> {
    uid(field, v)?;
    if v.starts_with(&format!("{prefix}_")) {
        return Err(ApiError::field(
            field,
            format!("must not start with '{prefix}_' (reserved for ids)"),
        ));
    }
    Ok(())
}

pub fn event_type_name(field: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > 256 || !v.chars().all(is_id_char) {
        return Err(ApiError::field(
            field,
            "must be 1 to 256 characters of a-z, A-Z, 0-9, '-', '_' or '.'",
        ));
    }
    Ok(())
}

/// Whether a name is blank: nothing but spaces, tabs and line breaks (as
/// [`NAME_PATTERN`] says; not every Unicode space, whose list differs between the
/// languages clients check with).
pub fn blank(v: &str) -> bool {
    v.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

pub fn name(field: &str, v: &str) -> Result<(), ApiError> {
    if blank(v) || v.chars().count() > 256 {
        return Err(ApiError::field(
            field,
            "must be 1 to 256 characters, not only spaces",
        ));
    }
    no_nul(field, v)
}

/// A description: at most [`MAX_DESCRIPTION`] characters.
pub fn description(field: &str, v: &str) -> Result<(), ApiError> {
    if v.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::field(
            field,
            format!("must be at most {MAX_DESCRIPTION} characters"),
        ));
    }
    no_nul(field, v)
}

/// Text that the store keeps as text must not hold NUL (U+0000): PostgreSQL refuses it,
/// so the same request would succeed on SQLite and fail with a 500 on PostgreSQL.
fn no_nul(field: &str, v: &str) -> Result<(), ApiError> {
    if v.contains('\0') {
        return Err(ApiError::field(
            field,
            "must not contain the NUL character (U+0000)",
        ));
    }
    Ok(())
}

pub fn channels(field: &str, v: &[String]) -> Result<(), ApiError> {
    let mut errs = Errors::default();
    if v.len() > MAX_CHANNELS {
        errs.add(field, format!("at most {MAX_CHANNELS} channels"));
    }
    for (i, c) in v.iter().enumerate() {
        if c.is_empty() || c.len() > 128 || !c.chars().all(|c| is_id_char(c) || c == ':') {
            errs.add(
                &format!("{field}.{i}"),
                "must be 1 to 128 characters of a-z, A-Z, 0-9, '-', '_', '.' or ':'",
            );
        }
    }
    errs.finish()
}

pub fn filter_types(field: &str, v: &[String]) -> Result<(), ApiError> {
    let mut errs = Errors::default();
    if v.is_empty() {
        errs.add(
            field,
            "must not be empty; omit it (or send null) to receive every type",
        );
    }
    if v.len() > MAX_FILTER_TYPES {
        errs.add(field, format!("at most {MAX_FILTER_TYPES} event types"));
    }
    for (i, t) in v.iter().enumerate() {
        errs.check(event_type_name(&format!("{field}.{i}"), t));
    }
    errs.finish()
}

pub fn metadata(field: &str, v: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if v.len() > MAX_METADATA {
        return Err(ApiError::field(
            field,
            format!("at most {MAX_METADATA} keys"),
        ));
    }
    for (k, val) in v {
        if k.is_empty() || k.chars().count() > 256 || val.chars().count() > 4096 {
            return Err(ApiError::field(
                &format!("{field}.{k}"),
                "keys must be 1 to 256 characters and values at most 4096",
            ));
        }
    }
    Ok(())
}

pub fn url(field: &str, v: &str) -> Result<(), ApiError> {
    if v.len() > 2048 {
        return Err(ApiError::field(field, "must be at most 2048 characters"));
    }
    // The URL parser would silently drop a CR, LF or tab; what is stored must be what is
    // used.
    if v.chars().any(char::is_control) {
        return Err(ApiError::field(
            field,
            "must not contain control characters (CR, LF, tab, ...)",
        ));
    }
    let parsed = url::Url::parse(v)
        .map_err(|e| ApiError::field(field, format!("must be an absolute http(s) URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ApiError::field(field, "scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::field(field, "must have a host"));
    }
    Ok(())
}

pub fn throttle_rate(field: &str, v: u32) -> Result<(), ApiError> {
    if v == 0 || v > 100_000 {
        return Err(ApiError::field(
            field,
            "must be between 1 and 100000 per second",
        ));
    }
    Ok(())
}

pub fn timeout_ms(field: &str, v: u32) -> Result<(), ApiError> {
    if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&v) {
        return Err(ApiError::field(
            field,
            format!("must be between {MIN_TIMEOUT_MS} and {MAX_TIMEOUT_MS}"),
        ));
    }
    Ok(())
}

pub fn max_concurrency(field: &str, v: u32) -> Result<(), ApiError> {
    if v == 0 || v > MAX_CONCURRENCY {
        return Err(ApiError::field(
            field,
            format!("must be between 1 and {MAX_CONCURRENCY}"),
        ));
    }
    Ok(())
}

pub fn retry_policy(field: &str, p: &RetryPolicy) -> Result<(), ApiError> {
    p.validate()
        .map_err(|e| ApiError::field(&format!("{field}.{}", e.field), e.message))
}

/// Header names hookline sets itself; an endpoint may not override them.
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "user-agent",
    "expect",
];
/// Prefixes of header names hookline sets itself.
pub const RESERVED_HEADER_PREFIXES: &[&str] = &["webhook-", "svix-", "proxy-"];

fn reserved_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    RESERVED_HEADERS.contains(&n.as_str())
        || RESERVED_HEADER_PREFIXES.iter().any(|p| n.starts_with(p))
}

pub fn headers(
    field: &str,
    v: &BTreeMap<String, String>,
    signature: Option<&SignatureConfig>,
) -> Result<(), ApiError> {
    let mut errs = Errors::default();
    if v.len() > MAX_HEADERS {
        errs.add(field, format!("at most {MAX_HEADERS} headers"));
    }
    let sig_header = match signature {
        Some(SignatureConfig::HmacSha256Hex { header }) => Some(header.to_ascii_lowercase()),
        _ => None,
    };
    let mut seen = std::collections::HashMap::new();
    for (k, val) in v {
        let f = format!("{field}.{k}");
        if HeaderName::from_bytes(k.as_bytes()).is_err() {
            errs.add(&f, "is not a valid HTTP header name");
        } else if reserved_header(k) || sig_header.as_deref() == Some(&k.to_ascii_lowercase()) {
            errs.add(&f, "is set by hookline and cannot be overridden");
        }
        if let Some(first) = seen.insert(k.to_ascii_lowercase(), k) {
            errs.add(
                &f,
                format!("is the same header as {first:?}: header names are case-insensitive"),
            );
        }
        // HTTP allows bytes above 0x7f in values (obs-text), but receivers read them in
        // different encodings: only what every receiver reads the same is accepted.
        let visible = val
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
        if !visible || HeaderValue::from_str(val).is_err() || val.len() > 4096 {
            errs.add(
                &f,
                "value must be visible ASCII (spaces and tabs allowed, no control or non-ASCII characters), at most 4096 characters",
            );
        }
    }
    errs.finish()
}

pub fn signature(field: &str, s: &SignatureConfig) -> Result<(), ApiError> {
    if let SignatureConfig::HmacSha256Hex { header } = s {
        if header.is_empty() || HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(ApiError::field(
                &format!("{field}.header"),
                "must be a valid HTTP header name",
            ));
        }
        if reserved_header(header) {
            return Err(ApiError::field(
                &format!("{field}.header"),
                "is a header hookline sets itself; choose another name",
            ));
        }
    }
    Ok(())
}

/// Whether a secret string fits the endpoint's signature scheme. The Standard Webhooks
/// schemes (and `none`, which keeps its secrets for a later switch) take a `whsec_`
/// secret or a `whsk_` ed25519 key pair, of either kind because a rotation may move an
/// endpoint from one to the other; whether the kind matches the scheme is
/// [`secret_matches_scheme`]'s question. The hex scheme uses the string as typed, but
/// never a `whsk_` key pair: its secret is shown back verbatim, and a private key must
/// not be.
pub fn secret(field: &str, v: &str, scheme: Option<&SignatureConfig>) -> Result<(), ApiError> {
    match scheme {
        Some(SignatureConfig::HmacSha256Hex { .. }) => {
            if v.len() < 8 || v.len() > 512 || v.chars().any(|c| !c.is_ascii_graphic()) {
                return Err(ApiError::field(
                    field,
                    "must be 8 to 512 visible ASCII characters",
                ));
            }
            if EndpointKey::is_ed25519(v) {
                return Err(ApiError::field(
                    field,
                    "is a whsk_ ed25519 key pair, which the hmac-sha256-hex scheme cannot use (it shows its secret verbatim); choose another secret",
                ));
            }
            Ok(())
        }
        _ => EndpointKey::parse(v).map(|_| ()).map_err(|e| {
            ApiError::field(
                field,
                match e {
                    EndpointKeyError::Hmac(e) => format!(
                        "must be 'whsec_' followed by base64 of 24 to 64 random bytes, or an ed25519 key pair 'whsk_...' ({e})"
                    ),
                    EndpointKeyError::Ed25519(e) => format!(
                        "must be 'whsk_' followed by base64 of the 64-byte ed25519 key pair: the 32-byte seed, then its 32-byte public key ({e})"
                    ),
                },
            )
        }),
    }
}

/// Whether the kind of a (valid) current secret agrees with the scheme: `ed25519` signs
/// only with a `whsk_` key pair and `standard` only with a `whsec_` secret. No scheme
/// (never set, or reset with `null`) follows the secret. `Err` says why not, for the
/// caller to attach to the field it blames.
pub fn secret_matches_scheme(
    secret: &str,
    scheme: Option<&SignatureConfig>,
) -> Result<(), &'static str> {
    let ed25519 = EndpointKey::is_ed25519(secret);
    match scheme {
        Some(SignatureConfig::Ed25519 { .. }) if !ed25519 => Err(
            "is a whsec_ (HMAC) secret, but signature.scheme ed25519 signs with a key pair: give a 'whsk_' key pair, or leave the secret out to have one generated",
        ),
        Some(SignatureConfig::Standard { .. }) if ed25519 => Err(
            "is a whsk_ ed25519 key pair, but signature.scheme standard signs with an HMAC: set signature.scheme to ed25519, or give a 'whsec_' secret",
        ),
        _ => Ok(()),
    }
}
