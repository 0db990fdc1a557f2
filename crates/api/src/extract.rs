//! Request extractors that turn every kind of bad input into a specific [`ApiError`]:
//! a JSON body whose errors name the offending field, query strings likewise, and the
//! `Patch` type that tells "absent" from "null"; and, for middleware that answers
//! before any extractor runs, [`answer_unread`].

use std::pin::Pin;

use axum::body::{Bytes, HttpBody};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::error::{ApiError, FieldError};

/// A JSON request body. Malformed JSON is 400; JSON of the wrong shape is 422 with the
/// path of the field at fault; a body over the limit is 413.
pub struct JsonBody<T>(pub T);

/// The configured body limit, placed in request extensions by the router so 413 errors
/// can say what the limit is.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A JSON body that may be left out entirely (empty body: `None`).
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        // No body, or JSON `null`, is the same as leaving it out.
        if bytes.iter().all(u8::is_ascii_whitespace)
            || std::str::from_utf8(&bytes).is_ok_and(|s| s.trim_ascii() == "null")
        {
            return Ok(OptionalJsonBody(None));
        }
        parse_json(&bytes).map(|v| OptionalJsonBody(Some(v)))
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map(|l| l.0)
        .unwrap_or(0);
    let content_type = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    if let Some(ct) = content_type {
        if !ct.starts_with("application/json") && !ct.contains("+json") {
            return Err(ApiError::BadRequest(format!(
                "content-type must be application/json, not {ct}"
            )));
        }
    }
    Bytes::from_request(req, state)
        .await
        .map_err(|e: BytesRejection| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(limit)
            } else if let Some(t) = find_cause::<BodyTimedOut>(&e) {
                ApiError::RequestTimeout(t.0)
            } else {
                ApiError::BadRequest(format!("could not read request body: {e}"))
            }
        })
}

/// Reading a request body failed because it did not arrive within the API's body
/// timeout (`--api-body-timeout-secs`); the listener's body wrapper raises it.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimedOut(pub std::time::Duration);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} s",
            self.0.as_secs()
        )
    }
}

impl std::error::Error for BodyTimedOut {}

/// The first error of type `T` in `e`'s chain of causes.
fn find_cause<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(t) = c.downcast_ref::<T>() {
            return Some(t);
        }
        cause = c.source();
    }
    None
}

/// Parses a JSON object, naming the path of the first field that does not fit `T`.
///
/// Every request body is an object: serde would also read a struct from an array of its
/// fields' values (`["Acme"]`), which the API does not document and nobody means.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Err(ApiError::BadRequest(
            "request body is empty; expected JSON".into(),
        ));
    };
    if *first != b'{' && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        return Err(ApiError::Validation(vec![FieldError::body(
            "",
            "the body must be a JSON object",
        )]));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        // Trailing bytes after the value (`{...} x`, two documents) make it not JSON.
        Ok(v) => de
            .end()
            .map(|()| v)
            .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}"))),
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            use serde_json::error::Category;
            match inner.classify() {
                Category::Syntax | Category::Eof | Category::Io => Err(ApiError::BadRequest(
                    format!("request body is not valid JSON: {inner}"),
                )),
                Category::Data => {
                    let msg = strip_position(&inner.to_string());
                    // "missing field `url`" is reported at the parent; name the field itself.
                    let field = match missing_field(&msg) {
                        Some(f) if path == "." => f.to_string(),
                        Some(f) => format!("{path}.{f}"),
                        None if path == "." => String::new(),
                        None => path,
                    };
                    Err(ApiError::Validation(vec![FieldError::body(&field, msg)]))
                }
            }
        }
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn missing_field(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// For a field holding a struct: refuses an array of the struct's values (`["Acme"]`),
/// which serde would read as the struct, as [`parse_json`] does for a whole body.
pub fn optional_object<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Map<String, serde_json::Value>>::deserialize(d)? {
        None => Ok(None),
        Some(map) => serde_json::from_value(serde_json::Value::Object(map))
            .map(Some)
            .map_err(D::Error::custom),
    }
}

/// A query string; bad values are 422 naming the parameter (`loc: ["query", "limit"]`).
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(q.as_bytes()));
        match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(v) => Ok(QueryParams(v)),
            Err(err) => {
                let path = err.path().to_string();
                let msg = err.into_inner().to_string();
                let mut loc = vec!["query".to_string()];
                match missing_field(&msg) {
                    Some(f) => loc.push(f.to_string()),
                    None if path != "." => loc.push(path),
                    None => {}
                }
                Err(ApiError::Validation(vec![FieldError {
                    loc,
                    msg,
                    kind: "value_error".into(),
                }]))
            }
        }
    }
}

/// A PATCH field: absent (leave as is), `null` (clear) or a value (set).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Patch<T> {
    #[default]
    Absent,
    Null,
    Set(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Patch::Null,
            Some(v) => Patch::Set(v),
        })
    }
}

impl<T> Patch<T> {
    /// Applies this patch to an optional field.
    pub fn apply(self, target: &mut Option<T>) {
        match self {
            Patch::Absent => {}
            Patch::Null => *target = None,
            Patch::Set(v) => *target = Some(v),
        }
    }

    pub fn as_set(&self) -> Option<&T> {
        match self {
            Patch::Set(v) => Some(v),
            _ => None,
        }
    }
}

/// Bodies read to be dropped are read up to this when no [`BodyLimit`] is set.
const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Answers `req` with `resp` without running its handler (a middleware's refusal or
/// replay), once its body is read (up to the body limit, and dropped). hyper closes a
/// keep-alive connection whose request body was left unread, if the body had not all
/// arrived yet; a client that reuses the connection for its next request then finds it
/// closed ("Server disconnected without sending a response", from the Svix Python SDK
/// under load).
pub async fn answer_unread(req: Request, resp: Response) -> Response {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map_or(DEFAULT_BODY_LIMIT, |l| l.0);
    // Read and dropped frame by frame: nothing is kept, so a caller without a valid token
    // costs no memory. A body over the limit, or one that breaks off, is not worth an
    // error here: the answer is decided already, and hyper closes the connection as it
    // would have.
    let mut body = req.into_body();
    let mut read = 0;
    while let Some(Ok(frame)) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
    {
        read += frame.data_ref().map_or(0, |d| d.len());
        if read > limit {
            break;
        }
    }
    resp
}

#[cfg(test)]
#[path = "extract_props.rs"]
mod props;
