//! The outbound HTTP client: one pooled client for every endpoint (keep-alive, HTTP/1.1
//! and HTTP/2 over rustls), redirects never followed, response reads capped, every
//! connection made only to addresses the SSRF guard vetted.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hookline_signing::{sign_hmac_sha256_hex, signature_header, StandardSecret};
use hookline_store::{Endpoint, Message, SignatureConfig};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::ssrf::{Blocked, Guard, GuardedResolver};

/// At most this much of a response body is kept in the attempt log.
pub const EXCERPT_BYTES: usize = 4096;
/// Reading stops here; a receiver cannot make us download an unbounded body.
pub const READ_CAP_BYTES: usize = 64 * 1024;

/// What one HTTP try produced.
#[derive(Debug, Clone)]
pub struct HttpResult {
    pub status: Option<u16>,
    pub retry_after: Option<String>,
    /// Excerpt of the body, or the error's description.
    pub response: String,
    pub error_kind: Option<&'static str>,
    pub duration: Duration,
}

/// Sends one delivery attempt. [`Client`] is the real one; tests may answer in-process.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// POSTs `body` with `headers` to `url`, within `timeout`.
    async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Vec<u8>,
        timeout: Duration,
    ) -> HttpResult;
}

#[async_trait::async_trait]
impl Transport for Client {
    async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Vec<u8>,
        timeout: Duration,
    ) -> HttpResult {
        Client::post(self, url, headers, body, timeout).await
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    guard: Guard,
}

impl Client {
    /// `max_idle_per_host` should be the most attempts that can be in flight, so a burst
    /// to one host (a fan-out to many endpoints of one receiver) finds its connections
    /// still open next time instead of reconnecting.
    pub fn new(guard: Guard, max_idle_per_host: usize) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookline/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(std::sync::Arc::new(GuardedResolver {
                guard: guard.clone(),
            }))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(max_idle_per_host)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client builds");
        Self { http, guard }
    }

    /// POSTs `body` with `headers` to `url`, within `timeout`.
    pub async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Vec<u8>,
        timeout: Duration,
    ) -> HttpResult {
        let start = tokio::time::Instant::now();
        let fail = |kind: &'static str, detail: String| HttpResult {
            status: None,
            retry_after: None,
            response: detail,
            error_kind: Some(kind),
            duration: start.elapsed(),
        };
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) => u,
            Err(e) => return fail("invalid_url", format!("invalid URL: {e}")),
        };
        // The resolver never sees IP literals, so vet them here.
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(a)) => Some(std::net::IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => Some(std::net::IpAddr::V6(a)),
            _ => None,
        };
        if let Some(ip) = literal {
            if let Err(b) = self.guard.check(ip) {
                return fail("ssrf_blocked", b.to_string());
            }
        }
        let send = self
            .http
            .post(parsed)
            .headers(headers)
            .body(body)
            .timeout(timeout)
            .send();
        let resp = match send.await {
            Ok(r) => r,
            Err(e) => {
                let (kind, detail) = describe(&e);
                return fail(kind, detail);
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let remaining = timeout.saturating_sub(start.elapsed());
        let excerpt = tokio::time::timeout(remaining, read_capped(resp))
            .await
            .unwrap_or_default();
        HttpResult {
            status: Some(status),
            retry_after,
            response: excerpt,
            error_kind: None,
            duration: start.elapsed(),
        }
    }
}

/// Reads at most [`READ_CAP_BYTES`] and keeps the first [`EXCERPT_BYTES`] as text.
async fn read_capped(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::with_capacity(1024);
    let mut read = 0usize;
    while let Ok(Some(chunk)) = resp.chunk().await {
        read += chunk.len();
        if buf.len() < EXCERPT_BYTES {
            let take = (EXCERPT_BYTES - buf.len()).min(chunk.len());
            buf.extend_from_slice(&chunk[..take]);
        }
        if read >= READ_CAP_BYTES {
            break;
        }
    }
    excerpt_text(&buf)
}

/// The excerpt as text of at most [`EXCERPT_BYTES`]: replacement characters for invalid
/// bytes (3 bytes each) or for a character cut at the end must not make it longer.
fn excerpt_text(bytes: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if text.len() > EXCERPT_BYTES {
        let mut end = EXCERPT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Names a transport failure by walking the error's causes.
fn describe(e: &reqwest::Error) -> (&'static str, String) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<Blocked>() {
            return ("ssrf_blocked", b.to_string());
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            let kind = match io.kind() {
                ConnectionRefused => "connection_refused",
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
                    "connection_reset"
                }
                TimedOut => "timeout",
                _ => "io",
            };
            return (kind, format!("{kind}: {io}"));
        }
        source = s.source();
    }
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_request() || e.is_body() {
        "connection_reset"
    } else {
        "http"
    };
    (kind, format!("{kind}: {}", error_chain(e)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Builds a delivery's headers: the endpoint's custom headers, then hookline's own
/// (`webhook-id` stays the message id across retries so receivers can deduplicate).
pub fn delivery_headers(
    ep: &Endpoint,
    msg: &Message,
    now: DateTime<Utc>,
    svix_headers_default: bool,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in &ep.settings.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.insert(name, value);
        }
    }
    h.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let ts = now.timestamp();
    let id = HeaderValue::from_str(&msg.id).expect("ids are header-safe");
    let ts_value = HeaderValue::from(ts);
    h.insert("webhook-id", id.clone());
    h.insert("webhook-timestamp", ts_value.clone());
    let body = msg.payload.as_bytes();
    match ep.settings.signature.as_ref() {
        None | Some(SignatureConfig::Standard { .. }) => {
            let secrets: Vec<StandardSecret> = ep
                .settings
                .valid_secrets(now)
                .filter_map(|s| StandardSecret::parse(&s.key).ok())
                .collect();
            let refs: Vec<&StandardSecret> = secrets.iter().collect();
            let sig = signature_header(&refs, &msg.id, ts, body);
            let sig = HeaderValue::from_str(&sig).expect("signatures are header-safe");
            let svix = match ep.settings.signature.as_ref() {
                Some(SignatureConfig::Standard {
                    svix_headers: Some(v),
                }) => *v,
                _ => svix_headers_default,
            };
            if svix {
                h.insert("svix-id", id);
                h.insert("svix-timestamp", ts_value);
                h.insert("svix-signature", sig.clone());
            }
            h.insert("webhook-signature", sig);
        }
        Some(SignatureConfig::HmacSha256Hex { header }) => {
            if let (Some(secret), Ok(name)) = (
                ep.current_secret(),
                HeaderName::from_bytes(header.as_bytes()),
            ) {
                let sig = sign_hmac_sha256_hex(secret.as_bytes(), body);
                h.insert(
                    name,
                    HeaderValue::from_str(&sig).expect("hex is header-safe"),
                );
            }
        }
        Some(SignatureConfig::None) => {}
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_never_exceeds_its_limit() {
        // A 3-byte character cut at the limit is dropped, not replaced.
        let cjk = "日".repeat(2000);
        let got = excerpt_text(&cjk.as_bytes()[..EXCERPT_BYTES]);
        assert_eq!(got, "日".repeat(EXCERPT_BYTES / 3));
        // Invalid bytes become U+FFFD (3 bytes each) but the text stays within the limit.
        let got = excerpt_text(&[0xff; EXCERPT_BYTES]);
        assert!(got.len() <= EXCERPT_BYTES && got.len() > EXCERPT_BYTES - 3);
        assert_eq!(excerpt_text(b"ok"), "ok");
    }
}
