//! The delivery outcome matrix, end to end: what each kind of receiver answer (or
//! non-answer) does to a delivery, seen from both sides — the loopback receiver's log of
//! requests, and hookline's attempt log (`/attempt/endpoint/{ep}`, `/attempt/msg/{msg}`)
//! and delivery status (`/msg/{msg}/endpoint`). Also the SSRF guard: loopback targets
//! get nothing unless `--allow-target` allows them.
//!
//! Every case has its own application and endpoint. Retryable cases use
//! `retryPolicy: {"kind": "schedule", "delaysSeconds": [1]}`: one retry ~1 s later
//! (jitter ±20 %), then the delivery fails.
//!
//! Only receivers this file starts on 127.0.0.1 (or `localhost`) are ever targeted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::receiver::{Behavior, Receiver};
use crate::support::{Api, Server};

/// Long enough for any single case on a loaded 2-core CI machine.
pub const SETTLE: Duration = Duration::from_secs(30);
/// One retry after ~1 s.
pub fn retry_once() -> Value {
    json!({"kind": "schedule", "delaysSeconds": [1]})
}

/// A server whose deliveries may reach loopback receivers.
pub async fn loopback_server() -> Server {
    Server::start_with(&["--allow-target", "127.0.0.0/8"]).await
}

pub async fn new_app(api: &Api, name: &str) -> String {
    let app = api.create("/api/v1/app", json!({ "name": name })).await;
    app["id"].as_str().expect("app id").to_string()
}

/// Creates an endpoint from `body` (which must have `url`); returns its id.
pub async fn new_endpoint(api: &Api, app: &str, body: Value) -> String {
    let ep = api
        .create(&format!("/api/v1/app/{app}/endpoint"), body)
        .await;
    ep["id"].as_str().expect("endpoint id").to_string()
}

/// Creates a message whose request body is exactly `raw_body` (so payload bytes are
/// under the test's control); returns the message id.
pub async fn send_raw(api: &Api, app: &str, raw_body: &str) -> String {
    let resp = api
        .http
        .post(format!("{}/api/v1/app/{app}/msg", api.base))
        .bearer_auth(api.token.as_deref().expect("token"))
        .header("content-type", "application/json")
        .body(raw_body.to_string())
        .send()
        .await
        .expect("create message");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 202, "create message: {text}\nrequest: {raw_body}");
    let msg: Value = serde_json::from_str(&text).expect("message JSON");
    msg["id"].as_str().expect("message id").to_string()
}

/// Creates a message with a small payload; returns its id.
pub async fn send(api: &Api, app: &str, payload: Value) -> String {
    let msg = api
        .create(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "outcome.test", "payload": payload}),
        )
        .await;
    msg["id"].as_str().expect("message id").to_string()
}

/// The delivery row of `msg` for `ep` (`/msg/{msg}/endpoint`), if there is one.
pub async fn delivery_row(api: &Api, app: &str, msg: &str, ep: &str) -> Option<Value> {
    let path = format!("/api/v1/app/{app}/msg/{msg}/endpoint");
    let (status, body) = api.get(&path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|r| r["id"] == ep)
        .cloned()
}

/// Waits until the delivery of `msg` to `ep` is final (status 0 success or 2 fail);
/// returns its row.
pub async fn settled(api: &Api, app: &str, msg: &str, ep: &str) -> Value {
    let end = Instant::now() + SETTLE;
    let mut last = None;
    while Instant::now() < end {
        if let Some(row) = delivery_row(api, app, msg, ep).await {
            if row["status"] == 0 || row["status"] == 2 {
                return row;
            }
            last = Some(row);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("delivery of {msg} to {ep} not final within {SETTLE:?}; last seen: {last:?}");
}

fn timestamp(a: &Value) -> DateTime<Utc> {
    a["timestamp"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("attempt without a timestamp: {a}"))
        .with_timezone(&Utc)
}

/// Every attempt made to `ep`, oldest first; cross-checked against the by-message log.
pub async fn attempts(api: &Api, app: &str, ep: &str, msg: &str) -> Vec<Value> {
    let path = format!("/api/v1/app/{app}/attempt/endpoint/{ep}?limit=250");
    let (status, body) = api.get(&path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    let mut list: Vec<Value> = body["data"].as_array().expect("data").clone();
    list.sort_by_key(timestamp);
    let path = format!("/api/v1/app/{app}/attempt/msg/{msg}?limit=250");
    let (status, by_msg) = api.get(&path).await;
    assert_eq!(status, 200, "GET {path}: {by_msg}");
    let mut ids: Vec<&Value> = list.iter().map(|a| &a["id"]).collect();
    let mut msg_ids: Vec<&Value> = by_msg["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|a| a["endpointId"] == ep)
        .map(|a| &a["id"])
        .collect();
    ids.sort_by_key(|v| v.to_string());
    msg_ids.sort_by_key(|v| v.to_string());
    assert_eq!(
        ids, msg_ids,
        "attempt logs by endpoint and by message differ"
    );
    for a in &list {
        assert_eq!(a["msgId"], msg, "attempt of another message: {a}");
        assert_eq!(a["endpointId"], ep, "{a}");
    }
    list
}

/// Asserts attempts one by one: (responseStatusCode, status, errorKind).
pub fn assert_attempts(case: &str, got: &[Value], want: &[(u16, u8, Option<&str>)]) {
    let summary: Vec<String> = got
        .iter()
        .map(|a| {
            format!(
                "{}/{}/{}",
                a["responseStatusCode"], a["status"], a["errorKind"]
            )
        })
        .collect();
    assert_eq!(
        got.len(),
        want.len(),
        "{case}: attempts (code/status/errorKind) {summary:?}, want {want:?}"
    );
    for (i, (a, (code, status, kind))) in got.iter().zip(want).enumerate() {
        assert_eq!(
            a["responseStatusCode"], *code,
            "{case}: attempt {i} status code: {a}"
        );
        assert_eq!(a["status"], *status, "{case}: attempt {i} status: {a}");
        let kind_json = match kind {
            Some(k) => json!(k),
            None => Value::Null,
        };
        assert_eq!(
            a["errorKind"], kind_json,
            "{case}: attempt {i} errorKind: {a}"
        );
    }
}

/// Gaps between consecutive arrival times.
fn gaps(at: &[Instant]) -> Vec<Duration> {
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

/// One case against the shared receiver: an app with one endpoint at `path` answering
/// with `behavior`, one message sent. Returns (app, endpoint, message).
async fn case(
    api: &Api,
    rx: &Receiver,
    path: &str,
    behavior: Behavior,
    extra: Value,
) -> (String, String, String) {
    rx.set(path, behavior);
    let app = new_app(api, &format!("case {path}")).await;
    let mut body = json!({"url": rx.url(path)});
    for (k, v) in extra.as_object().expect("extra fields").iter() {
        body[k] = v.clone();
    }
    let ep = new_endpoint(api, &app, body).await;
    let msg = send(api, &app, json!({"case": path})).await;
    (app, ep, msg)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_xx_is_delivered_in_one_attempt() {
    let server = loopback_server().await;
    let api = server.client();
    let rx = Receiver::start().await;
    for code in [200u16, 204] {
        let path = format!("/ok-{code}");
        let (app, ep, msg) = case(
            &api,
            &rx,
            &path,
            Behavior::Status(code, vec![]),
            json!({"retryPolicy": retry_once()}),
        )
        .await;
        let row = settled(&api, &app, &msg, &ep).await;
        assert_eq!(row["status"], 0, "{code}: {row}");
        assert_eq!(row["attempts"], 1, "{code}: {row}");
        assert!(row["nextAttempt"].is_null(), "{code}: {row}");
        let got = attempts(&api, &app, &ep, &msg).await;
        assert_attempts(&format!("{code}"), &got, &[(code, 0, None)]);
        assert_eq!(rx.requests_to(&path).len(), 1, "{code}: one request");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redirect_is_a_failure_and_is_never_followed() {
    let server = loopback_server().await;
    let api = server.client();
    let rx = Receiver::start().await;
    let (app, ep, msg) = case(
        &api,
        &rx,
        "/moved",
        Behavior::Status(301, vec![("location".into(), rx.url("/new-home"))]),
        json!({"retryPolicy": retry_once()}),
    )
    .await;
    let row = settled(&api, &app, &msg, &ep).await;
    assert_eq!(row["status"], 2, "3xx is a failure: {row}");
    assert_eq!(row["attempts"], 2, "{row}");
    let got = attempts(&api, &app, &ep, &msg).await;
    assert_attempts("301", &got, &[(301, 2, None), (301, 2, None)]);
    let hits: Vec<Instant> = rx.requests_to("/moved").iter().map(|r| r.at).collect();
    assert_eq!(hits.len(), 2, "tried, then retried once");
    assert!(
        gaps(&hits)[0] >= Duration::from_millis(750),
        "retry after ~1 s: {:?}",
        gaps(&hits)
    );
    assert!(
        rx.requests_to("/new-home").is_empty(),
        "the redirect was followed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_and_server_errors_are_retried_then_fail() {
    let server = loopback_server().await;
    let api = server.client();
    let rx = Receiver::start().await;
    let mut cases = Vec::new();
    for code in [400u16, 500] {
        let path = format!("/err-{code}");
        let ids = case(
            &api,
            &rx,
            &path,
            Behavior::Status(code, vec![]),
            json!({"retryPolicy": retry_once()}),
        )
        .await;
        cases.push((code, path, ids));
    }
    for (code, path, (app, ep, msg)) in cases {
        let row = settled(&api, &app, &msg, &ep).await;
        assert_eq!(row["status"], 2, "{code}: {row}");
        assert_eq!(row["attempts"], 2, "{code}: {row}");
        let got = attempts(&api, &app, &ep, &msg).await;
        assert_attempts(
            &format!("{code}"),
            &got,
            &[(code, 2, None), (code, 2, None)],
        );
        let hits: Vec<Instant> = rx.requests_to(&path).iter().map(|r| r.at).collect();
        assert_eq!(hits.len(), 2, "{code}: tried, then retried once");
        assert!(
            gaps(&hits)[0] >= Duration::from_millis(750),
            "{code}: retry after ~1 s: {:?}",
            gaps(&hits)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gone_disables_the_endpoint() {
    let server = loopback_server().await;
    let api = server.client();
    let rx = Receiver::start().await;
    let (app, ep, msg) = case(
        &api,
        &rx,
        "/gone",
        Behavior::Status(410, vec![]),
        json!({"retryPolicy": retry_once()}),
    )
    .await;
    // A healthy endpoint next to it shows when later messages have been handled.
    let sentinel = new_endpoint(&api, &app, json!({"url": rx.url("/sentinel")})).await;

    let row = settled(&api, &app, &msg, &ep).await;
    assert_eq!(row["status"], 2, "{row}");
    assert_eq!(row["attempts"], 1, "410 is not retried: {row}");
    let got = attempts(&api, &app, &ep, &msg).await;
    assert_attempts("410", &got, &[(410, 2, None)]);
    let (status, endpoint) = api.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await;
    assert_eq!(status, 200, "{endpoint}");
    assert_eq!(endpoint["disabled"], true, "410 disables: {endpoint}");

    let later = send(&api, &app, json!({"after": "disable"})).await;
    let s = settled(&api, &app, &later, &sentinel).await;
    assert_eq!(
        s["status"], 0,
        "the healthy endpoint still gets messages: {s}"
    );
    assert!(
        delivery_row(&api, &app, &later, &ep).await.is_none(),
        "a delivery was queued for the disabled endpoint"
    );
    let more = rx
        .wait_for(Duration::from_secs(2), |r| r.requests_to("/gone").len() > 1)
        .await;
    assert!(!more, "the disabled endpoint was called again");
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_requests_waits_for_retry_after() {
    let server = loopback_server().await;
    let api = server.client();
    let rx = Receiver::start().await;
    let (app, ep, msg) = case(
        &api,
        &rx,
        "/busy",
        Behavior::Status(429, vec![("retry-after".into(), "2".into())]),
        json!({"retryPolicy": retry_once()}),
    )
    .await;
    let row = settled(&api, &app, &msg, &ep).await;
    assert_eq!(row["status"], 2, "{row}");
    assert_eq!(row["attempts"], 2, "{row}");
    let got = attempts(&api, &app, &ep, &msg).await;
    assert_attempts("429", &got, &[(429, 2, None), (429, 2, None)]);
    let hits: Vec<Instant> = rx.requests_to("/busy").iter().map(|r| r.at).collect();
    assert_eq!(hits.len(), 2);
    // The policy alone would retry after 0.8..1.2 s; Retry-After: 2 is a floor (the
    // 10 ms allow for the store's millisecond timestamps), and jitter may only add.
    let gap = gaps(&hits)[0];
    assert!(
        gap >= Duration::from_millis(1990),
        "retried {gap:?} after a 429 with Retry-After: 2"
    );
    assert!(gap < Duration::from_secs(6), "retry came late: {gap:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_is_a_failure_without_status() {
    let server = loopback_server().await;
    let api = server.client();
    let rx = Receiver::start().await;
    let (app, ep, msg) = case(
        &api,
        &rx,
        "/slow",
        Behavior::Delay(Duration::from_secs(2), 200),
        json!({"retryPolicy": {"kind": "none"}, "timeoutMs": 200}),
    )
    .await;
    let row = settled(&api, &app, &msg, &ep).await;
    assert_eq!(row["status"], 2, "{row}");
    assert_eq!(row["attempts"], 1, "{row}");
    let got = attempts(&api, &app, &ep, &msg).await;
    assert_attempts("timeout", &got, &[(0, 2, Some("timeout"))]);
    let took = got[0]["responseDurationMs"].as_u64().expect("duration");
    assert!(
        (150..1500).contains(&took),
        "a 200 ms timeout took {took} ms"
    );
    assert_eq!(rx.requests_to("/slow").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_is_recorded() {
    let server = loopback_server().await;
    let api = server.client();
    // A port that was just free: bind, note it, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let app = new_app(&api, "refused").await;
    let ep = new_endpoint(
        &api,
        &app,
        json!({"url": format!("http://127.0.0.1:{port}/hook"), "retryPolicy": {"kind": "none"}}),
    )
    .await;
    let msg = send(&api, &app, json!({"case": "refused"})).await;
    let row = settled(&api, &app, &msg, &ep).await;
    assert_eq!(row["status"], 2, "{row}");
    let got = attempts(&api, &app, &ep, &msg).await;
    assert_attempts("refused", &got, &[(0, 2, Some("connection_refused"))]);
}

/// How a [`RawServer`] misbehaves after reading a whole request.
#[derive(Debug, Clone)]
enum Raw {
    /// Close with SO_LINGER 0 (a TCP reset) without answering.
    ResetBeforeResponse,
    /// Send a 200 status line announcing 100 body bytes, send 7, close.
    TruncatedAfter200,
    /// Send 200 with a body of this many bytes, as fast as the client takes it.
    HugeBody(usize),
    /// Send 200 with exactly this body.
    Body(Arc<Vec<u8>>),
}

/// A tiny hand-written HTTP/1.1 server on 127.0.0.1, for answers no real server gives.
struct RawServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    /// HugeBody: body bytes the kernel accepted before the client went away.
    body_written: Arc<AtomicUsize>,
    /// HugeBody: the writer has stopped (finished or the client went away).
    body_done: Arc<AtomicBool>,
}

impl RawServer {
    async fn start(mode: Raw) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let s = RawServer {
            addr: listener.local_addr().expect("addr"),
            requests: Arc::default(),
            arrivals: Arc::default(),
            body_written: Arc::default(),
            body_done: Arc::default(),
        };
        let (requests, arrivals) = (s.requests.clone(), s.arrivals.clone());
        let (written, done) = (s.body_written.clone(), s.body_done.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (requests, arrivals) = (requests.clone(), arrivals.clone());
                let (written, done) = (written.clone(), done.clone());
                let mode = mode.clone();
                tokio::spawn(async move {
                    serve_raw(stream, mode, requests, arrivals, written, done).await;
                });
            }
        });
        s
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Reads one request (head and `content-length` body); false if the peer went away.
async fn read_request(stream: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

async fn serve_raw(
    mut stream: TcpStream,
    mode: Raw,
    requests: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    written: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
) {
    if !read_request(&mut stream).await {
        return;
    }
    arrivals.lock().unwrap().push(Instant::now());
    requests.fetch_add(1, Ordering::SeqCst);
    match mode {
        Raw::ResetBeforeResponse => {
            stream.set_zero_linger().expect("SO_LINGER 0");
            drop(stream);
        }
        Raw::TruncatedAfter200 => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                .await;
            close_cleanly(stream).await;
        }
        Raw::Body(body) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
            close_cleanly(stream).await;
        }
        Raw::HugeBody(n) => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
            if stream.write_all(head.as_bytes()).await.is_ok() {
                let chunk = vec![b'y'; 64 * 1024];
                let mut left = n;
                while left > 0 {
                    let take = left.min(chunk.len());
                    match stream.write(&chunk[..take]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            written.fetch_add(k, Ordering::SeqCst);
                            left -= k;
                        }
                    }
                }
            }
            done.store(true, Ordering::SeqCst);
        }
    }
}

/// Closes with a FIN, not a reset, so everything written surely arrives (the whole
/// request was read, so the kernel has nothing unread to reset over), then waits for
/// the client to close its side.
async fn close_cleanly(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Waits for `cond`, polling; returns whether it held within `timeout`.
async fn eventually(timeout: Duration, cond: impl Fn() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// A connection reset before any response is a failed attempt (`connection_reset`, no
/// status), retried like any failure.
///
/// A 200 status line followed by a body cut short is counted as delivered: the receiver
/// has already said it accepted the webhook (success is decided by the status code, as
/// in Standard Webhooks and Svix; the body is only an excerpt for the log), and treating
/// it as a failure would only produce a duplicate. The attempt keeps status 200.
#[tokio::test(flavor = "multi_thread")]
async fn connection_reset_before_and_during_the_response() {
    let server = loopback_server().await;
    let api = server.client();

    let reset = RawServer::start(Raw::ResetBeforeResponse).await;
    let app = new_app(&api, "reset").await;
    let ep = new_endpoint(
        &api,
        &app,
        json!({"url": reset.url("/hook"), "retryPolicy": retry_once()}),
    )
    .await;
    let msg = send(&api, &app, json!({"case": "reset"})).await;

    let cut = RawServer::start(Raw::TruncatedAfter200).await;
    let app2 = new_app(&api, "truncated").await;
    let ep2 = new_endpoint(
        &api,
        &app2,
        json!({"url": cut.url("/hook"), "retryPolicy": retry_once(), "timeoutMs": 5000}),
    )
    .await;
    let msg2 = send(&api, &app2, json!({"case": "truncated"})).await;

    let row = settled(&api, &app, &msg, &ep).await;
    assert_eq!(row["status"], 2, "reset: {row}");
    assert_eq!(row["attempts"], 2, "reset: {row}");
    let got = attempts(&api, &app, &ep, &msg).await;
    assert_attempts(
        "reset",
        &got,
        &[
            (0, 2, Some("connection_reset")),
            (0, 2, Some("connection_reset")),
        ],
    );
    assert_eq!(
        reset.requests.load(Ordering::SeqCst),
        2,
        "tried and retried"
    );
    let hits = reset.arrivals.lock().unwrap().clone();
    assert!(
        gaps(&hits)[0] >= Duration::from_millis(750),
        "reset: retry after ~1 s: {:?}",
        gaps(&hits)
    );

    let row = settled(&api, &app2, &msg2, &ep2).await;
    assert_eq!(row["status"], 0, "truncated body after 200: {row}");
    assert_eq!(row["attempts"], 1, "{row}");
    let got = attempts(&api, &app2, &ep2, &msg2).await;
    assert_attempts("truncated", &got, &[(200, 0, None)]);
    assert_eq!(cut.requests.load(Ordering::SeqCst), 1);
    assert!(
        got[0]["responseDurationMs"].as_u64().expect("duration") < 4000,
        "waited for the missing bytes until the timeout: {}",
        got[0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_response_body_is_not_read_to_the_end() {
    const BIG: usize = 50 * 1024 * 1024;
    let server = loopback_server().await;
    let api = server.client();
    let rx = Receiver::start().await;
    let (app, ep, msg) = case(
        &api,
        &rx,
        "/big",
        Behavior::BigBody(BIG),
        json!({"retryPolicy": {"kind": "none"}}),
    )
    .await;
    // The same over raw TCP, counting what the client actually took.
    let raw = RawServer::start(Raw::HugeBody(BIG)).await;
    let app2 = new_app(&api, "huge raw").await;
    let ep2 = new_endpoint(
        &api,
        &app2,
        json!({"url": raw.url("/big"), "retryPolicy": {"kind": "none"}}),
    )
    .await;
    let msg2 = send(&api, &app2, json!({"case": "huge raw"})).await;

    for (case, app, ep, msg) in [("BigBody", &app, &ep, &msg), ("raw", &app2, &ep2, &msg2)] {
        let row = settled(&api, app, msg, ep).await;
        assert_eq!(row["status"], 0, "{case}: {row}");
        let got = attempts(&api, app, ep, msg).await;
        assert_attempts(case, &got, &[(200, 0, None)]);
        let response = got[0]["response"].as_str().expect("response");
        assert!(
            !response.is_empty() && response.len() <= 4096,
            "{case}: kept {} bytes of the response",
            response.len()
        );
        let took = got[0]["responseDurationMs"].as_u64().expect("duration");
        assert!(took < 5000, "{case}: the attempt took {took} ms");
    }
    // The client hung up long before 50 MiB: what the sender got rid of is what the
    // client read (a 64 KiB cap) plus what both kernels' socket buffers hold.
    assert!(
        eventually(SETTLE, || raw.body_done.load(Ordering::SeqCst)).await,
        "the client neither read the body to the end nor hung up; {} bytes sent",
        raw.body_written.load(Ordering::SeqCst)
    );
    let sent = raw.body_written.load(Ordering::SeqCst);
    assert!(
        sent < BIG / 2,
        "the client read {sent} of {BIG} body bytes; reads are meant to stop at a cap"
    );
}

/// The attempt log keeps at most 4 KiB of a response (`MessageAttemptOut.response`),
/// also when the cut falls inside a multi-byte character, the body is not UTF-8, or it
/// is full of NUL bytes (which PostgreSQL's text cannot hold: they become U+FFFD).
#[tokio::test(flavor = "multi_thread")]
async fn response_excerpt_stays_within_4_kib() {
    let server = loopback_server().await;
    let api = server.client();
    // 4096 is not a multiple of 3: the cut falls inside a character.
    let cjk = "日".repeat(2000).into_bytes();
    let binary = vec![0xffu8; 5000];
    let nul = [b"ok\0".as_slice(); 2000].concat();
    let mut cases = Vec::new();
    for (name, body) in [("cjk", cjk), ("binary", binary), ("nul", nul)] {
        let raw = RawServer::start(Raw::Body(Arc::new(body))).await;
        let app = new_app(&api, name).await;
        let ep = new_endpoint(
            &api,
            &app,
            json!({"url": raw.url("/text"), "retryPolicy": {"kind": "none"}}),
        )
        .await;
        let msg = send(&api, &app, json!({"case": name})).await;
        cases.push((name, raw, app, ep, msg));
    }
    for (name, _raw, app, ep, msg) in &cases {
        let row = settled(&api, app, msg, ep).await;
        assert_eq!(row["status"], 0, "{name}: {row}");
        let got = attempts(&api, app, ep, msg).await;
        assert_attempts(name, &got, &[(200, 0, None)]);
        let response = got[0]["response"].as_str().expect("response");
        assert!(
            response.len() <= 4096,
            "{name}: the excerpt is {} bytes",
            response.len()
        );
        assert!(
            response.len() >= 4000,
            "{name}: only {} bytes kept",
            response.len()
        );
        if *name == "cjk" {
            assert!(
                response.chars().all(|c| c == '日'),
                "{name}: a character was mangled at the cut"
            );
        }
        if *name == "nul" {
            assert!(
                response.starts_with("ok\u{fffd}ok\u{fffd}") && !response.contains('\0'),
                "{name}: {:?}",
                &response[..20]
            );
        }
    }
}

/// The SSRF guard, end to end: without `--allow-target`, a loopback receiver (by IP
/// literal and by the name `localhost`) gets nothing and the attempt says why; with
/// `--allow-target 127.0.0.0/8` the same endpoints receive.
#[tokio::test(flavor = "multi_thread")]
async fn ssrf_guard_blocks_loopback_unless_allowed() {
    let rx = Receiver::start().await;
    let port = rx.addr.port();
    let targets = |prefix: &str| {
        [
            (format!("{prefix}-ip"), rx.url(&format!("/{prefix}-ip"))),
            (
                format!("{prefix}-name"),
                format!("http://localhost:{port}/{prefix}-name"),
            ),
        ]
    };

    let guarded = Server::start().await;
    let api = guarded.client();
    let app = new_app(&api, "ssrf").await;
    let mut eps = Vec::new();
    for (name, url) in targets("blocked") {
        let ep = new_endpoint(
            &api,
            &app,
            json!({"url": url, "retryPolicy": {"kind": "none"}}),
        )
        .await;
        eps.push((name, ep));
    }
    let msg = send(&api, &app, json!({"case": "ssrf"})).await;
    for (name, ep) in &eps {
        let row = settled(&api, &app, &msg, ep).await;
        assert_eq!(row["status"], 2, "{name}: {row}");
        let got = attempts(&api, &app, ep, &msg).await;
        assert_attempts(name, &got, &[(0, 2, Some("ssrf_blocked"))]);
        let response = got[0]["response"].as_str().expect("response");
        assert!(
            response.contains("loopback"),
            "{name}: the attempt should say the target is loopback: {response}"
        );
    }
    let reached = rx.wait_for(Duration::from_secs(2), |r| r.count() > 0).await;
    assert!(
        !reached,
        "a loopback receiver was reached without --allow-target: {:?}",
        rx.requests().iter().map(|r| &r.path).collect::<Vec<_>>()
    );

    let open = loopback_server().await;
    let api = open.client();
    let app = new_app(&api, "ssrf allowed").await;
    let mut eps = Vec::new();
    for (name, url) in targets("allowed") {
        let ep = new_endpoint(
            &api,
            &app,
            json!({"url": url, "retryPolicy": {"kind": "none"}}),
        )
        .await;
        eps.push((name, ep));
    }
    let msg = send(&api, &app, json!({"case": "ssrf allowed"})).await;
    for (name, ep) in &eps {
        let row = settled(&api, &app, &msg, ep).await;
        assert_eq!(row["status"], 0, "{name}: {row}");
        let got = attempts(&api, &app, ep, &msg).await;
        assert_attempts(name, &got, &[(200, 0, None)]);
        assert_eq!(rx.requests_to(&format!("/{name}")).len(), 1, "{name}");
    }
    assert!(rx.requests_to("/blocked-ip").is_empty());
    assert!(rx.requests_to("/blocked-name").is_empty());
}
