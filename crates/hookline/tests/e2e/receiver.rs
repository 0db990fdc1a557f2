//! A loopback webhook receiver for tests: records every request and answers as told,
//! per path. Bound to `127.0.0.1:0`; nothing else is ever contacted.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// How the receiver answers requests to one path.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Answer with this status (and these headers) at once.
    Status(u16, Vec<(String, String)>),
    /// Wait, then answer with this status.
    Delay(Duration, u16),
    /// Never answer (until the client gives up).
    Hang,
    /// Answer 200 with a body of this many bytes.
    BigBody(usize),
    /// Serve at most `max` requests at once, each taking `delay`, and answer 503 at once
    /// to any beyond them (a receiver at its capacity).
    Capacity { max: usize, delay: Duration },
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

#[derive(Default)]
struct Inner {
    behaviors: Mutex<HashMap<String, Behavior>>,
    requests: Mutex<Vec<Recorded>>,
    /// Requests being answered right now, and the most seen at once, per path.
    in_flight: Mutex<HashMap<String, (usize, usize)>>,
    /// Requests being answered right now, and the most seen at once, over all paths.
    in_flight_all: Mutex<(usize, usize)>,
    total: AtomicUsize,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner::default());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, inner }
    }

    /// The URL of `path` (e.g. `/hook`) on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sets how `path` answers (default: 200).
    pub fn set(&self, path: &str, b: Behavior) {
        self.inner
            .behaviors
            .lock()
            .unwrap()
            .insert(path.to_string(), b);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().unwrap().clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    pub fn count(&self) -> usize {
        self.inner.total.load(Ordering::SeqCst)
    }

    /// Most requests to `path` that were in progress at the same time.
    pub fn max_concurrent(&self, path: &str) -> usize {
        self.inner
            .in_flight
            .lock()
            .unwrap()
            .get(path)
            .map(|(_, m)| *m)
            .unwrap_or(0)
    }

    /// Forgets the most requests to `path` seen at once so far: from now on
    /// [`max_concurrent`](Self::max_concurrent) counts from those in progress now.
    pub fn reset_max_concurrent(&self, path: &str) {
        if let Some(e) = self.inner.in_flight.lock().unwrap().get_mut(path) {
            e.1 = e.0;
        }
    }

    /// The `webhook-id` of every request to `path` (`""` where there was none), with
    /// when it came, in arrival order. Cheaper than [`requests_to`](Self::requests_to)
    /// for many requests: no headers or bodies are copied.
    pub fn ids_to(&self, path: &str) -> Vec<(String, Instant)> {
        self.inner
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| (r.header("webhook-id").unwrap_or_default(), r.at))
            .collect()
    }

    /// Requests to `path` being answered right now.
    pub fn in_flight(&self, path: &str) -> usize {
        self.inner
            .in_flight
            .lock()
            .unwrap()
            .get(path)
            .map(|(n, _)| *n)
            .unwrap_or(0)
    }

    /// Most requests (to any path) that were in progress at the same time.
    pub fn max_concurrent_total(&self) -> usize {
        self.inner.in_flight_all.lock().unwrap().1
    }

    /// Polls until `cond` holds or `timeout` passes; returns whether it held.
    pub async fn wait_for(&self, timeout: Duration, cond: impl Fn(&Receiver) -> bool) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if cond(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cond(self)
    }
}

struct InFlight(Arc<Inner>, String);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(e) = self.0.in_flight.lock().unwrap().get_mut(&self.1) {
            e.0 -= 1;
        }
        self.0.in_flight_all.lock().unwrap().0 -= 1;
    }
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let (_guard, now_in_flight) = {
        let mut m = inner.in_flight.lock().unwrap();
        let e = m.entry(path.clone()).or_default();
        e.0 += 1;
        e.1 = e.1.max(e.0);
        let now_in_flight = e.0;
        let mut all = inner.in_flight_all.lock().unwrap();
        all.0 += 1;
        all.1 = all.1.max(all.0);
        (InFlight(inner.clone(), path.clone()), now_in_flight)
    };
    inner.requests.lock().unwrap().push(Recorded {
        path: path.clone(),
        headers,
        body,
        at: Instant::now(),
    });
    inner.total.fetch_add(1, Ordering::SeqCst);
    let behavior = inner
        .behaviors
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or(Behavior::Status(200, vec![]));
    match behavior {
        Behavior::Status(code, hdrs) => {
            let mut resp = (StatusCode::from_u16(code).unwrap(), "ok").into_response();
            for (k, v) in hdrs {
                resp.headers_mut().insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            resp
        }
        Behavior::Delay(d, code) => {
            tokio::time::sleep(d).await;
            (StatusCode::from_u16(code).unwrap(), "ok").into_response()
        }
        Behavior::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Behavior::Capacity { max, delay } => {
            if now_in_flight > max {
                return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
            }
            tokio::time::sleep(delay).await;
            (StatusCode::OK, "ok").into_response()
        }
        Behavior::BigBody(n) => {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            Response::new(Body::new(Repeat {
                left: n.div_ceil(chunk.len()),
                chunk,
            }))
        }
    }
}

/// A body of `left` copies of `chunk`, produced lazily so a huge body costs no memory.
struct Repeat {
    left: usize,
    chunk: Bytes,
}

impl http_body::Body for Repeat {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.clone()))))
    }
}
