//! The outbound HTTP client: one pooled client for every endpoint (keep-alive, HTTP/1.1
//! and HTTP/2 over rustls), redirects never followed, response reads capped, every
//! connection made only to addresses the SSRF guard vetted.
//!
//! It is hyper-util's pooled client used directly rather than through reqwest: a
//! delivery needs none of reqwest's conveniences (redirects, cookies, proxies,
//! decompression), and in the e2e benchmark reqwest's per-request work (parsing every
//! URL with the WHATWG parser, its IDNA pass included, the request builder and the
//! boxed pending future) was about a tenth of the tokio worker's time. Dropping it also
//! drops reqwest's default of honouring `HTTP_PROXY` variables, under which the guard
//! would have vetted the proxy's address instead of the endpoint's.
//!
//! An attempt must end at its timeout whatever the receiver sends, and so must its
//! connection: hyper-util drives each connection in a task of its own, which would go on
//! reading a peer that never stops (a body trickling in, `100 Continue` without end). So
//! every connection can be closed from outside its task (`Closable`), and an attempt
//! closes its own when it gives up on it; informational responses are bounded
//! ([`MAX_INFORMATIONAL`]).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hookline_signing::{endpoint_signature_header, sign_hmac_sha256_hex, EndpointKey};
use hookline_store::{Endpoint, Message, SignatureConfig};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Uri;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::{
    capture_connection, CaptureConnection, Connected, Connection, HttpConnector,
};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::ssrf::{Blocked, Guard, GuardedResolver};

/// At most this much of a response body is kept in the attempt log.
pub const EXCERPT_BYTES: usize = 4096;
/// Reading stops here; a receiver cannot make us download an unbounded body.
pub const READ_CAP_BYTES: usize = 64 * 1024;
/// Informational (1xx) responses allowed before the final one. A receiver may
/// legitimately send a few (`100 Continue`, `102 Processing`, `103 Early Hints`); one that
/// streams them without end would keep hyper parsing on a runtime worker for as long as
/// the connection lives, so beyond this the attempt fails and its connection is closed.
pub const MAX_INFORMATIONAL: u32 = 10;

const USER_AGENT: &str = concat!("hookline/", env!("CARGO_PKG_VERSION"));

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
        body: Bytes,
        timeout: Duration,
    ) -> HttpResult;
}

#[async_trait::async_trait]
impl Transport for Client {
    async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> HttpResult {
        Client::post(self, url, headers, body, timeout).await
    }
}

type Connector = Closable<hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>>;

#[derive(Clone)]
pub struct Client {
    http: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
    guard: Guard,
}

impl Client {
    /// `max_idle_per_host` should be the most attempts that can be in flight, so a burst
    /// to one host (a fan-out to many endpoints of one receiver) finds its connections
    /// still open next time instead of reconnecting.
    pub fn new(guard: Guard, max_idle_per_host: usize) -> Self {
        let mut tcp = HttpConnector::new_with_resolver(GuardedResolver {
            guard: guard.clone(),
        });
        // The TLS layer below handles https; the TCP connector must let it through.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let connector = Closable(connector);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self { http, guard }
    }

    /// POSTs `body` with `headers` to `url`, within `timeout`.
    pub async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
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
        let uri = match target_uri(url) {
            Ok(u) => u,
            Err(detail) => return fail("invalid_url", detail),
        };
        // The resolver never sees IP literals (the connector dials them directly), so
        // vet them here.
        if let Some(ip) = uri.host().and_then(ip_literal) {
            if let Err(b) = self.guard.check(ip) {
                return fail("ssrf_blocked", b.to_string());
            }
        }
        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        req.headers_mut().insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(USER_AGENT),
        );
        // hyper-util drives each connection in a task of its own, which goes on reading
        // whatever the peer sends after this attempt stops waiting for it: the attempt
        // closes its connection itself when it gives up on it.
        let conn = capture_connection(&mut req);
        let informational = Arc::new(AtomicU32::new(0));
        hyper::ext::on_informational(&mut req, {
            let (count, conn) = (informational.clone(), conn.clone());
            move |_| {
                if count.fetch_add(1, Ordering::Relaxed) + 1 > MAX_INFORMATIONAL {
                    close_connection(&conn);
                }
            }
        });
        let too_many_informational = || {
            (informational.load(Ordering::Relaxed) > MAX_INFORMATIONAL).then(|| {
                format!(
                    "http: too many informational (1xx) responses (more than {MAX_INFORMATIONAL})"
                )
            })
        };
        let resp = match tokio::time::timeout(timeout, self.http.request(req)).await {
            Ok(_) if too_many_informational().is_some() => {
                close_connection(&conn);
                return fail("http", too_many_informational().unwrap_or_default());
            }
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let (kind, detail) = describe(&e);
                return fail(kind, detail);
            }
            Err(_) => {
                close_connection(&conn);
                return fail(
                    "timeout",
                    format!("timeout: no response within {} ms", timeout.as_millis()),
                );
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let remaining = timeout.saturating_sub(start.elapsed());
        let mut body = resp.into_body();
        let mut excerpt = Vec::with_capacity(1024);
        // A body still arriving at the timeout keeps what came: the excerpt so far.
        let whole = tokio::time::timeout(remaining, read_capped(&mut body, &mut excerpt))
            .await
            .unwrap_or(false);
        if !whole {
            // Cut short (timeout, cap, error): the connection cannot carry another request.
            close_connection(&conn);
        }
        HttpResult {
            status: Some(status),
            retry_after,
            response: excerpt_text(&excerpt),
            error_kind: None,
            duration: start.elapsed(),
        }
    }
}

/// Closes the HTTP/1 connection an attempt was given, whatever its task is doing: it
/// is taken out of the pool, and its next read or write fails, which ends its task and
/// drops the socket. An HTTP/2 connection is left alone: it carries other attempts, and
/// dropping a response already resets that one stream.
fn close_connection(conn: &CaptureConnection) {
    let closer = {
        let metadata = conn.connection_metadata();
        let Some(connected) = metadata.as_ref().filter(|c| !c.is_negotiated_h2()) else {
            return;
        };
        connected.poison();
        let mut extras = http::Extensions::new();
        connected.get_extras(&mut extras);
        extras.remove::<Closer>()
    };
    if let Some(closer) = closer {
        closer.close();
    }
}

/// A connector whose connections can be closed from outside their task: each comes with
/// a [`Closer`] in its connection metadata, which attempts reach through
/// [`capture_connection`].
#[derive(Clone)]
struct Closable<C>(C);

impl<C> tower_service::Service<Uri> for Closable<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
{
    type Response = ClosableIo<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            Ok(ClosableIo {
                io: connecting.await?,
                closer: Closer::default(),
            })
        })
    }
}

/// Shared by a connection and whoever may close it.
#[derive(Clone, Default)]
struct Closer(Arc<CloserState>);

#[derive(Default)]
struct CloserState {
    closed: AtomicBool,
    /// The connection task's last read, woken on close: a task waiting for bytes that
    /// never come must wake up to see it is closed.
    reader: Mutex<Option<Waker>>,
}

impl Closer {
    fn close(&self) {
        self.0.closed.store(true, Ordering::SeqCst);
        if let Some(w) = self.0.reader.lock().expect("closer waker").take() {
            w.wake();
        }
    }

    fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::SeqCst)
    }
}

fn closed_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "connection closed by hookline",
    )
}

/// A connection's I/O that fails once its [`Closer`] is closed.
struct ClosableIo<T> {
    io: T,
    closer: Closer,
}

impl<T: Connection> Connection for ClosableIo<T> {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.closer.clone())
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for ClosableIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        {
            let mut reader = self.closer.0.reader.lock().expect("closer waker");
            if !reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *reader = Some(cx.waker().clone());
            }
        }
        // Looked at after the waker is in place, so a close in between is not missed.
        if self.closer.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for ClosableIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.closer.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.closer.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The endpoint URL as a request target: `http` or `https` with a host. URLs the plain
/// parser refuses (a Unicode host name, a fragment, a space in the path) are read with
/// the WHATWG parser, which writes the host in its ASCII form and escapes the rest; the
/// fragment is not sent, as browsers and other clients do.
fn target_uri(url: &str) -> Result<Uri, String> {
    let uri = match url.parse::<Uri>() {
        Ok(u) => u,
        Err(_) => {
            let mut parsed = url::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
            parsed.set_fragment(None);
            parsed
                .as_str()
                .parse::<Uri>()
                .map_err(|e| format!("invalid URL: {e}"))?
        }
    };
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("invalid URL: the scheme must be http or https".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("invalid URL: it has no host".into());
    }
    Ok(uri)
}

/// The address a host names directly, if it is an IP literal (`[::1]` included).
fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// Reads at most [`READ_CAP_BYTES`], keeping the first [`EXCERPT_BYTES`] in `excerpt`
/// as they arrive (so a read cut short by the timeout still has them). True if the body
/// was read to its end.
async fn read_capped(body: &mut hyper::body::Incoming, excerpt: &mut Vec<u8>) -> bool {
    let mut read = 0usize;
    loop {
        let chunk = match body.frame().await {
            None => return true,
            Some(Err(_)) => return false,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(chunk) => chunk,
                Err(_) => continue,
            },
        };
        read += chunk.len();
        if excerpt.len() < EXCERPT_BYTES {
            let take = (EXCERPT_BYTES - excerpt.len()).min(chunk.len());
            excerpt.extend_from_slice(&chunk[..take]);
        }
        if read >= READ_CAP_BYTES {
            return hyper::body::Body::is_end_stream(body);
        }
    }
}

/// The excerpt as text of at most [`EXCERPT_BYTES`]: replacement characters for invalid
/// bytes (3 bytes each) or for a character cut at the end must not make it longer. NUL
/// is replaced too: PostgreSQL's `text` cannot hold it, and the attempt must be logged
/// the same on either backend.
fn excerpt_text(bytes: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if text.contains('\0') {
        text = text.replace('\0', "\u{fffd}");
    }
    if text.len() > EXCERPT_BYTES {
        let mut end = EXCERPT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Names a transport failure by walking the error's causes. The detail never includes
/// the URL: its path or query may carry a credential.
fn describe(e: &hyper_util::client::legacy::Error) -> (&'static str, String) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut hyper_error = None;
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<Blocked>() {
            return ("ssrf_blocked", b.to_string());
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            // TLS failures (a bad certificate, a server that does not speak TLS) arrive as
            // an I/O error that carries the rustls error.
            if carries_tls_error(io) {
                return ("tls", format!("tls: {io}"));
            }
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
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            hyper_error.get_or_insert(h);
        }
        source = s.source();
    }
    let kind = match hyper_error {
        _ if e.is_connect() => "connect",
        Some(h) if h.is_timeout() => "timeout",
        // The receiver closed the connection before a whole response arrived.
        Some(h) if h.is_incomplete_message() || h.is_canceled() || h.is_closed() => {
            "connection_reset"
        }
        _ => "http",
    };
    (kind, format!("{kind}: {}", error_chain(e)))
}

/// Whether a rustls error is inside `io` (possibly in further I/O errors around it:
/// `io::Error::source` skips the error an I/O error wraps, so look with `get_ref`).
fn carries_tls_error(io: &std::io::Error) -> bool {
    let mut inner: Option<&(dyn std::error::Error + 'static)> = io.get_ref().map(|e| e as _);
    while let Some(e) = inner {
        if e.is::<rustls::Error>() {
            return true;
        }
        inner = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|e| e as _),
            None => e.source(),
        };
    }
    false
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

/// The payload as a request body, without a copy: the bytes stay in the message's one
/// shared buffer, however many attempts are sending it at once.
pub fn payload_body(payload: &Arc<str>) -> Bytes {
    struct Shared(Arc<str>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            self.0.as_bytes()
        }
    }
    Bytes::from_owner(Shared(payload.clone()))
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
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let ts = now.timestamp();
    let id = HeaderValue::from_str(&msg.id).expect("ids are header-safe");
    let ts_value = HeaderValue::from(ts);
    h.insert("webhook-id", id.clone());
    h.insert("webhook-timestamp", ts_value.clone());
    let body = msg.payload.as_bytes();
    match ep.settings.signature.as_ref() {
        None | Some(SignatureConfig::Standard { .. } | SignatureConfig::Ed25519 { .. }) => {
            // Each valid secret signs by its own kind, whatever the scheme says: during a
            // rotation from `whsec_` to `whsk_` (or back) both kinds are valid at once.
            let keys: Vec<EndpointKey> = ep
                .settings
                .valid_secrets(now)
                .filter_map(|s| EndpointKey::parse(&s.key).ok())
                .collect();
            let sig = endpoint_signature_header(&keys, &msg.id, ts, body);
            let sig = HeaderValue::from_str(&sig).expect("signatures are header-safe");
            let svix = ep
                .settings
                .signature
                .as_ref()
                .and_then(SignatureConfig::svix_headers)
                .unwrap_or(svix_headers_default);
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
        Some(SignatureConfig::None {}) => {}
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint rotating from a `whsec_` secret (still in its grace period) to a `whsk_`
    /// key pair signs with both, each by its own kind, under the ed25519 scheme's
    /// `svixHeaders` choice rather than the server default.
    #[test]
    fn rotation_from_hmac_to_ed25519_signs_with_both_kinds() {
        use hookline_signing::{verify_ed25519, verify_standard, Ed25519Secret, StandardSecret};
        use hookline_store::{EndpointSettings, SecretEntry};

        let now = chrono::Utc::now();
        let pair = Ed25519Secret::generate();
        let hmac = StandardSecret::generate();
        let expired = StandardSecret::generate();
        let ep = Endpoint {
            id: "ep_1".into(),
            app_id: "app_1".into(),
            uid: None,
            url: "http://127.0.0.1:1/".into(),
            disabled: false,
            settings: EndpointSettings {
                secrets: vec![
                    SecretEntry {
                        key: pair.to_string(),
                        expires_at: None,
                    },
                    SecretEntry {
                        key: hmac.to_string(),
                        expires_at: Some(now + chrono::Duration::hours(1)),
                    },
                    SecretEntry {
                        key: expired.to_string(),
                        expires_at: Some(now - chrono::Duration::seconds(1)),
                    },
                ],
                signature: Some(SignatureConfig::Ed25519 {
                    svix_headers: Some(true),
                }),
                ..Default::default()
            },
            created_at: now,
            updated_at: now,
            failing_since: None,
        };
        let msg = Message {
            id: "msg_1".into(),
            app_id: "app_1".into(),
            event_id: None,
            event_type: "t".into(),
            payload: Arc::from(r#"{"a":1}"#),
            channels: None,
            tags: None,
            created_at: now,
            deliver_at: None,
            payload_expires_at: None,
        };
        let h = delivery_headers(&ep, &msg, now, false);
        let sig = h["webhook-signature"].to_str().unwrap();
        let entries: Vec<&str> = sig.split(' ').collect();
        assert_eq!(entries.len(), 2, "{sig}");
        assert!(
            entries[0].starts_with("v1a,") && entries[1].starts_with("v1,"),
            "{sig}"
        );
        let ts = now.timestamp();
        let body = msg.payload.as_bytes();
        assert_eq!(
            verify_ed25519(&pair.public_key(), "msg_1", ts, body, sig, ts, 0),
            Ok(())
        );
        assert_eq!(
            verify_standard(&hmac, "msg_1", ts, body, sig, ts, 0),
            Ok(())
        );
        assert!(verify_standard(&expired, "msg_1", ts, body, sig, ts, 0).is_err());
        assert_eq!(h["svix-signature"], h["webhook-signature"]);
    }

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
        assert_eq!(excerpt_text(b"a\0b"), "a\u{fffd}b");
        let got = excerpt_text(&[0u8; EXCERPT_BYTES]);
        assert!(got.len() <= EXCERPT_BYTES && !got.contains('\0'));
    }

    #[test]
    fn targets_are_http_urls_with_a_host() {
        let uri = target_uri("http://127.0.0.1:9/hook?x=1").unwrap();
        assert_eq!(uri.host(), Some("127.0.0.1"));
        assert_eq!(uri.path_and_query().unwrap().as_str(), "/hook?x=1");
        // A Unicode host name is sent in its ASCII (punycode) form.
        let uri = target_uri("https://bücher.example/hook").unwrap();
        assert_eq!(uri.host(), Some("xn--bcher-kva.example"));
        let uri = target_uri("http://127.0.0.1:9/a b?q=1#part").unwrap();
        assert_eq!(uri.path_and_query().unwrap().as_str(), "/a%20b?q=1");
        for bad in ["ftp://example.com/", "/relative", "http://", "not a url"] {
            assert!(target_uri(bad).is_err(), "{bad} should be refused");
        }
    }

    /// Starts a loopback server that reads one request per connection and answers
    /// `reply` verbatim.
    async fn raw_server(reply: &'static [u8]) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(reply).await;
                });
            }
        });
        addr
    }

    async fn post_to(url: &str) -> HttpResult {
        let client = Client::new(Guard::new(vec!["127.0.0.0/8".parse().unwrap()]), 4);
        client
            .post(
                url,
                HeaderMap::new(),
                Bytes::from_static(b"{}"),
                Duration::from_secs(5),
            )
            .await
    }

    /// A loopback server for one hostile connection: it reads the request, then writes
    /// `first` once and `each` again and again every `pace` (a flood when zero), until
    /// its peer goes away. Answers with its address and when it saw the peer close.
    async fn hostile_server(
        first: &'static [u8],
        each: &'static [u8],
        pace: Duration,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Receiver<tokio::time::Instant>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (mut r, mut w) = s.into_split();
            let mut buf = [0u8; 4096];
            let _ = r.read(&mut buf).await;
            let writes = async {
                if w.write_all(first).await.is_err() {
                    return;
                }
                loop {
                    if w.write_all(each).await.is_err() {
                        return;
                    }
                    if !pace.is_zero() {
                        tokio::time::sleep(pace).await;
                    }
                }
            };
            // The peer closed: a read sees EOF (or a reset), or a write fails.
            let eof = async { while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {} };
            tokio::select! {
                _ = writes => {}
                _ = eof => {}
            }
            let _ = closed_tx.send(tokio::time::Instant::now());
        });
        (addr, closed_rx)
    }

    async fn post_within(addr: std::net::SocketAddr, timeout: Duration) -> HttpResult {
        let client = Client::new(Guard::new(vec!["127.0.0.0/8".parse().unwrap()]), 4);
        client
            .post(
                &format!("http://{addr}/hook"),
                HeaderMap::new(),
                Bytes::from_static(b"{}"),
                timeout,
            )
            .await
    }

    /// Waits for the server to see its connection closed, at most `within` from `since`.
    async fn closed_by(
        closed: tokio::sync::oneshot::Receiver<tokio::time::Instant>,
        since: tokio::time::Instant,
        within: Duration,
    ) -> Duration {
        let at = tokio::time::timeout_at(since + within, closed)
            .await
            .expect("the connection is still open")
            .unwrap();
        at - since
    }

    /// A receiver streaming `100 Continue` without end fails the attempt at once, well
    /// before its timeout, and the connection is closed (not left to its own task, which
    /// would go on parsing the flood).
    #[tokio::test]
    async fn an_informational_flood_fails_the_attempt_and_closes_the_connection() {
        let (addr, closed) =
            hostile_server(b"", b"HTTP/1.1 100 Continue\r\n\r\n", Duration::ZERO).await;
        let start = tokio::time::Instant::now();
        let r = post_within(addr, Duration::from_secs(5)).await;
        assert_eq!(r.status, None);
        assert_eq!(r.error_kind, Some("http"), "{}", r.response);
        assert!(
            r.response
                .contains("too many informational (1xx) responses"),
            "{}",
            r.response
        );
        assert!(r.duration < Duration::from_secs(1), "{:?}", r.duration);
        closed_by(closed, start, Duration::from_secs(1)).await;
    }

    /// A few informational responses before the final one are fine.
    #[tokio::test]
    async fn a_few_informational_responses_are_allowed() {
        let addr = raw_server(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
              HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        )
        .await;
        let r = post_to(&format!("http://{addr}/hook")).await;
        assert_eq!(r.status, Some(200), "{:?}", r.error_kind);
        assert_eq!(r.response, "ok");
    }

    /// Status line or headers that trickle in without end: the attempt ends at its
    /// timeout, and so does the connection.
    #[tokio::test]
    async fn a_head_trickling_in_ends_at_the_timeout_with_its_connection() {
        let heads: [(&[u8], &[u8]); 2] = [
            (b"HTTP/1.1 2", b"0"),
            (b"HTTP/1.1 200 OK\r\nx-slow: ", b"a"),
        ];
        for (first, each) in heads {
            let (addr, closed) = hostile_server(first, each, Duration::from_millis(50)).await;
            let start = tokio::time::Instant::now();
            let timeout = Duration::from_millis(500);
            let r = post_within(addr, timeout).await;
            assert_eq!(r.error_kind, Some("timeout"), "{}", r.response);
            assert!(
                r.duration < timeout + Duration::from_millis(200),
                "{:?}",
                r.duration
            );
            closed_by(closed, start, timeout + Duration::from_millis(500)).await;
        }
    }

    /// A body trickling in past the timeout: the attempt ends at the timeout, keeps the
    /// bytes that arrived as its excerpt, and closes the connection.
    #[tokio::test]
    async fn a_body_trickling_in_keeps_what_arrived_by_the_timeout() {
        let (addr, closed) = hostile_server(
            b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\nfirst bytes;",
            b"x",
            Duration::from_millis(50),
        )
        .await;
        let start = tokio::time::Instant::now();
        let timeout = Duration::from_millis(500);
        let r = post_within(addr, timeout).await;
        assert_eq!(r.status, Some(200));
        assert!(r.response.starts_with("first bytes;x"), "{:?}", r.response);
        assert!(
            r.duration < timeout + Duration::from_millis(200),
            "{:?}",
            r.duration
        );
        closed_by(closed, start, timeout + Duration::from_millis(500)).await;
    }

    /// A reply that is not HTTP is a failed attempt of kind `http`, without a status.
    #[tokio::test]
    async fn a_reply_that_is_not_http_is_an_http_failure() {
        let addr = raw_server(b"SMTP ready\r\n\r\n").await;
        let r = post_to(&format!("http://{addr}/hook")).await;
        assert_eq!(r.status, None);
        assert_eq!(r.error_kind, Some("http"), "{}", r.response);
    }

    /// The TLS stack is wired in (its crypto provider chosen without a panic), and a
    /// failed handshake is named as such: here an `https` URL whose server speaks plain
    /// HTTP.
    #[tokio::test]
    async fn a_failed_tls_handshake_is_a_tls_failure() {
        let addr = raw_server(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let r = post_to(&format!("https://{addr}/hook")).await;
        assert_eq!(r.status, None);
        assert_eq!(r.error_kind, Some("tls"), "{}", r.response);
    }

    #[test]
    fn the_body_shares_the_payload_buffer() {
        let payload: Arc<str> = Arc::from(r#"{"big":"payload"}"#);
        let body = payload_body(&payload);
        assert_eq!(&body[..], payload.as_bytes());
        // The same bytes in memory, not a copy of them.
        assert_eq!(body.as_ptr(), payload.as_ptr());
        assert_eq!(Arc::strong_count(&payload), 2);
        drop(body);
        assert_eq!(Arc::strong_count(&payload), 1);
    }

    #[test]
    fn ip_literals_are_recognised_in_both_forms() {
        assert_eq!(ip_literal("127.0.0.1"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(ip_literal("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(ip_literal("localhost"), None);
    }
}
