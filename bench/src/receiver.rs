//! The harness's own webhook receiver: a plain hyper HTTP/1.1 server on `127.0.0.1:0`
//! with keep-alive, answering `200` with an empty body as fast as it can.
//!
//! Paths say what to do and whose request it is: `/ok/{n}` is answered at once and
//! recorded as an arrival of path `n` (with the `seq` found at the start of the payload);
//! `/hold/{n}` is held unanswered until the sender gives up (its timeout) or the receiver
//! is dropped, and only counted. `/slow/{ms}/{n}` is recorded like `/ok/{n}` and answered
//! after `ms` milliseconds, however many are in flight; `/knee/{n}` likewise, but served
//! at most [`Receiver::start_with_knee`]'s `k` at a time (the others queue, so its latency
//! grows with every request beyond `k`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// One answered request.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// The `n` of `/ok/{n}`.
    pub path: u32,
    /// The payload's `seq`, when it starts with `{"seq":N`.
    pub seq: Option<u64>,
    /// When the request's head had arrived.
    pub at: Instant,
}

struct Shared {
    arrivals: Mutex<Vec<Arrival>>,
    /// Answered (`/ok/`) requests so far; waiters watch it.
    answered: watch::Sender<u64>,
    /// Requests to `/hold/` received so far, and how many are being held right now.
    held_total: AtomicU64,
    held_now: AtomicU64,
    /// TCP connections accepted (how well the sender reuses keep-alive connections).
    connections: AtomicU64,
    /// Turns true when the receiver is dropped: held requests are let go.
    release: watch::Sender<bool>,
    /// `/knee/`'s servers and how long each request takes them.
    knee: Option<(Arc<tokio::sync::Semaphore>, Duration)>,
    /// Requests to `/slow/` and `/knee/` in flight now, and the most at once.
    busy_now: AtomicU64,
    busy_peak: AtomicU64,
    /// The time those requests took, summed (each counted when it ends), in µs.
    busy_us: AtomicU64,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_knee(None).await
    }

    /// A receiver whose `/knee/` path serves `k` requests at a time, each for `serve`.
    pub async fn start_with_knee(k: usize, serve: Duration) -> anyhow::Result<Self> {
        Self::start_knee(Some((Arc::new(tokio::sync::Semaphore::new(k)), serve))).await
    }

    async fn start_knee(
        knee: Option<(Arc<tokio::sync::Semaphore>, Duration)>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            arrivals: Mutex::new(Vec::with_capacity(64 * 1024)),
            answered: watch::channel(0).0,
            held_total: AtomicU64::new(0),
            held_now: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            release: watch::channel(false).0,
            knee,
            busy_now: AtomicU64::new(0),
            busy_peak: AtomicU64::new(0),
            busy_us: AtomicU64::new(0),
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                s.connections.fetch_add(1, Ordering::Relaxed);
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(s.clone(), req));
                    // Errors here are the peer closing mid-request (a sender's timeout).
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            shared,
            accept,
        })
    }

    /// `http://127.0.0.1:PORT/ok/{n}`
    pub fn ok_url(&self, n: u32) -> String {
        format!("http://{}/ok/{n}", self.addr)
    }

    /// `http://127.0.0.1:PORT/slow/{ms}/{n}`
    pub fn slow_url(&self, ms: u64, n: u32) -> String {
        format!("http://{}/slow/{ms}/{n}", self.addr)
    }

    /// `http://127.0.0.1:PORT/knee/{n}`
    pub fn knee_url(&self, n: u32) -> String {
        format!("http://{}/knee/{n}", self.addr)
    }

    /// The most `/slow/` and `/knee/` requests in flight at once since the last call.
    pub fn take_busy_peak(&self) -> u64 {
        self.shared.busy_peak.swap(0, Ordering::Relaxed)
    }

    /// For a task that samples the receiver while it runs: each call says the most
    /// `/slow/` and `/knee/` requests in flight at once since the previous call (and
    /// what is in flight now, if more), then starts over from what is in flight now;
    /// and how long those requests took in all so far, in µs (their mean number in flight
    /// over a span is what this grew by over the span's length).
    pub fn busy_sampler(&self) -> impl Fn() -> (u64, u64) + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || {
            let now = shared.busy_now.load(Ordering::Relaxed);
            let peak = shared.busy_peak.swap(now, Ordering::Relaxed).max(now);
            (peak, shared.busy_us.load(Ordering::Relaxed))
        }
    }

    /// `http://127.0.0.1:PORT/hold/{n}`
    pub fn hold_url(&self, n: u32) -> String {
        format!("http://{}/hold/{n}", self.addr)
    }

    /// Answered requests so far.
    pub fn answered(&self) -> u64 {
        *self.shared.answered.borrow()
    }

    /// Requests to `/hold/` so far, and how many are held right now.
    pub fn held(&self) -> (u64, u64) {
        (
            self.shared.held_total.load(Ordering::Relaxed),
            self.shared.held_now.load(Ordering::Relaxed),
        )
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// A copy of every arrival so far, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.shared.arrivals.lock().expect("arrivals").clone()
    }

    /// Waits until at least `n` requests have been answered.
    pub async fn wait_answered(&self, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let mut rx = self.shared.answered.subscribe();
        let reached = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n))
                .await
                .map(|r| r.is_ok()),
            Ok(true)
        );
        match reached {
            true => Ok(()),
            false => bail!(
                "timed out after {:.1} s waiting for {n} deliveries at the receiver (got {})",
                timeout.as_secs_f64(),
                self.answered()
            ),
        }
    }

    /// Waits until at least `n` requests are being held at once.
    pub async fn wait_held_now(&self, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.held().1 < n {
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for {n} held requests (holding {})",
                    self.held().1
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = self.shared.release.send(true);
    }
}

/// `{"seq":123,...` → 123
pub fn parse_seq(body: &[u8]) -> Option<u64> {
    let rest = body.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

fn path_number(path: &str, prefix: &str) -> Option<u32> {
    path.strip_prefix(prefix)?.parse().ok()
}

async fn handle(
    s: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let path = req.uri().path().to_string();
    if let Some(n) = path_number(&path, "/ok/") {
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return Ok(status(400)),
        };
        s.arrivals.lock().expect("arrivals").push(Arrival {
            path: n,
            seq: parse_seq(&body),
            at,
        });
        s.answered.send_modify(|c| *c += 1);
        return Ok(Response::new(Full::new(Bytes::new())));
    }
    let slow = path.strip_prefix("/slow/").and_then(|rest| {
        let (ms, n) = rest.split_once('/')?;
        Some((
            n.parse::<u32>().ok()?,
            Some(Duration::from_millis(ms.parse().ok()?)),
        ))
    });
    let knee = path_number(&path, "/knee/").map(|n| (n, None));
    if let Some((n, delay)) = slow.or(knee) {
        let now = s.busy_now.fetch_add(1, Ordering::Relaxed) + 1;
        s.busy_peak.fetch_max(now, Ordering::Relaxed);
        let _busy = BusyGuard(s.clone(), Instant::now());
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return Ok(status(400)),
        };
        match (delay, &s.knee) {
            (Some(d), _) => tokio::time::sleep(d).await,
            (None, Some((servers, serve))) => {
                let _server = servers.acquire().await.expect("never closed");
                tokio::time::sleep(*serve).await;
            }
            (None, None) => return Ok(status(404)),
        }
        s.arrivals.lock().expect("arrivals").push(Arrival {
            path: n,
            seq: parse_seq(&body),
            at,
        });
        s.answered.send_modify(|c| *c += 1);
        return Ok(Response::new(Full::new(Bytes::new())));
    }
    if path.starts_with("/hold/") {
        s.held_total.fetch_add(1, Ordering::Relaxed);
        s.held_now.fetch_add(1, Ordering::Relaxed);
        // Decrements when this future ends, also when hyper drops it because the
        // sender closed the connection.
        let _guard = HeldGuard(s.clone());
        let mut release = s.release.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(600), release.wait_for(|r| *r)).await;
        return Ok(status(503));
    }
    Ok(status(404))
}

struct BusyGuard(Arc<Shared>, Instant);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy_now.fetch_sub(1, Ordering::Relaxed);
        let took = self.1.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
        self.0.busy_us.fetch_add(took, Ordering::Relaxed);
    }
}

struct HeldGuard(Arc<Shared>);

impl Drop for HeldGuard {
    fn drop(&mut self) {
        self.0.held_now.fetch_sub(1, Ordering::Relaxed);
    }
}

fn status(code: u16) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = hyper::StatusCode::from_u16(code).expect("valid status");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_read_from_the_payload_start() {
        assert_eq!(parse_seq(br#"{"seq":42,"pad":"x"}"#), Some(42));
        assert_eq!(parse_seq(br#"{"pad":"x","seq":42}"#), None);
        assert_eq!(parse_seq(b""), None);
    }
}
