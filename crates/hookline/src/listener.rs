//! The API's accept loop: every connection is bounded in time and their number is capped,
//! so no client, authenticated or not, can hold the API's sockets or file descriptors.
//!
//! axum's `serve` gives hyper no timer and no limits: an idle keep-alive connection, a
//! request head sent one byte a second or a body that never arrives each held a socket
//! forever, and enough of them (one per open file allowed) made the API unreachable. Here
//! each connection has a watchdog that knows what the connection is doing:
//!
//! - waiting for a request, with nothing arriving: closed after the idle timeout;
//! - receiving a request head (its first byte came in): closed unless the head is complete
//!   within the header timeout;
//! - serving a request: its body must arrive within the body timeout (the handler then
//!   answers 408), and the connection is closed if no byte moves either way for the idle
//!   timeout (a client that stops reading its response).
//!
//! Connections beyond `--api-max-connections` wait in the kernel's listen backlog until one
//! closes; the cap is lowered at start to fit the process's open-file limit, which is
//! raised to its hard limit first.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hookline_api::extract::BodyTimedOut;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// Descriptors kept back from the API's share of the open-file limit: the store's files,
/// outbound deliveries (their own cap is added on top) and the odd log or socket.
const RESERVED_FDS: u64 = 256;

/// The API's connection limits (`--api-*` flags).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
}

/// Raises the soft open-file limit to the hard limit, and returns the most API
/// connections that fit beside `other_fds` descriptors used elsewhere (outbound
/// deliveries), never more than `wanted`.
pub fn fit_connection_cap(wanted: usize, other_fds: usize) -> usize {
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the open-file limit");
            return wanted;
        }
    };
    let room = soft.saturating_sub(RESERVED_FDS + other_fds as u64).max(16);
    let cap = wanted.min(usize::try_from(room).unwrap_or(usize::MAX));
    if cap < wanted {
        tracing::warn!(
            open_file_limit = soft,
            api_max_connections = cap,
            "the open-file limit leaves room for fewer API connections than configured; \
             raise the limit (ulimit -n) to allow more"
        );
    }
    cap
}

/// Serves `router` on `listener` until `stop` turns true, then lets open requests finish
/// for up to `grace` and closes what is left.
pub async fn serve(
    listener: TcpListener,
    router: hookline_api::ApiService,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // No hyper timer: the watchdog bounds every state of the connection, and hyper's
    // header timer would cost a timer per request (it starts when the connection waits
    // for a head, so it could not tell idle from slow anyway).
    let http = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let mut at_cap = false;
    let mut accept_failing = false;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => {
                if at_cap {
                    at_cap = false;
                    tracing::info!("API connections below the limit again");
                }
                p
            }
            Err(_) => {
                if !at_cap {
                    at_cap = true;
                    metrics::counter!("hookline_api_connection_limit_reached_total").increment(1);
                    tracing::warn!(
                        limit = limits.max_connections,
                        "API connection limit reached; new connections wait until one closes"
                    );
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    accept_failing = false;
                    a
                }
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning, say so
                    // once per episode.
                    if !accept_failing {
                        accept_failing = true;
                        tracing::warn!(error = %e, "accepting API connections fails; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let _ = stream.set_nodelay(true);
        metrics::gauge!("hookline_api_connections_open").increment(1.0);
        let http = http.clone();
        let router = router.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            serve_connection(&http, stream, router, limits, stop).await;
            metrics::gauge!("hookline_api_connections_open").decrement(1.0);
            drop(permit);
        });
    }
    // Stopped: wait for the open connections (told to finish) to close, for up to the
    // grace period.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("API connections still open after the shutdown grace period; closing them");
    }
}

/// Why the watchdog closed a connection (the `reason` label of
/// `hookline_api_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    Idle,
    SlowHead,
    Stalled,
}

impl Expired {
    fn label(self) -> &'static str {
        match self {
            Expired::Idle => "idle",
            Expired::SlowHead => "slow_head",
            Expired::Stalled => "stalled",
        }
    }
}

async fn serve_connection(
    http: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    router: hookline_api::ApiService,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let guard = activity.request_started();
            let router = router.clone();
            let body_timeout = limits.body_timeout;
            async move {
                let req = req.map(|body| {
                    if body.is_end_stream() {
                        Body::new(body)
                    } else {
                        Body::new(TimedBody::new(body, body_timeout))
                    }
                });
                let resp = router
                    .oneshot(req)
                    .await
                    .unwrap_or_else(|never: Infallible| match never {});
                // The request counts as served until its response body is written out.
                Ok::<_, Infallible>(resp.map(|body| {
                    Body::new(Tracked {
                        inner: body,
                        _guard: guard,
                    })
                }))
            }
        })
    };
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "API connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                if let Some(why) = activity.expired(&limits, Instant::now()) {
                    metrics::counter!("hookline_api_connections_closed_total", "reason" => why.label())
                        .increment(1);
                    tracing::debug!(reason = why.label(), "closing an API connection");
                    return;
                }
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                // Finish the request in progress, if any, then close.
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What one connection is doing, updated by its I/O and its requests.
struct Activity(Mutex<Clock>);

struct Clock {
    /// Requests whose response has not been written out yet.
    active: usize,
    /// When the connection last became idle (opened, or its last response finished).
    idle_since: Instant,
    /// When the first byte of the next request head arrived, while idle.
    head_started: Option<Instant>,
    /// The last byte read or written.
    last_io: Instant,
}

impl Activity {
    fn new() -> Self {
        let now = Instant::now();
        Activity(Mutex::new(Clock {
            active: 0,
            idle_since: now,
            head_started: None,
            last_io: now,
        }))
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, Clock> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_some(&self) {
        let now = Instant::now();
        let mut c = self.clock();
        c.last_io = now;
        if c.active == 0 && c.head_started.is_none() {
            c.head_started = Some(now);
        }
    }

    fn wrote_some(&self) {
        self.clock().last_io = Instant::now();
    }

    fn request_started(self: &Arc<Self>) -> RequestGuard {
        let mut c = self.clock();
        c.active += 1;
        c.head_started = None;
        RequestGuard(self.clone())
    }

    /// When the connection's current state runs out of time, and what that state is.
    fn deadline_of(&self, limits: &Limits) -> (Instant, Expired) {
        let c = self.clock();
        if c.active > 0 {
            (c.last_io + limits.idle_timeout, Expired::Stalled)
        } else if let Some(started) = c.head_started {
            (started + limits.header_timeout, Expired::SlowHead)
        } else {
            (c.idle_since + limits.idle_timeout, Expired::Idle)
        }
    }

    fn deadline(&self, limits: &Limits) -> Instant {
        self.deadline_of(limits).0
    }

    /// Whether the connection is out of time at `now`, and why.
    fn expired(&self, limits: &Limits, now: Instant) -> Option<Expired> {
        let (at, why) = self.deadline_of(limits);
        (at <= now).then_some(why)
    }
}

/// Marks a request as served when dropped: with its response body, or with the request
/// itself when the connection goes away first.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut c = self.0.clock();
        c.active = c.active.saturating_sub(1);
        if c.active == 0 {
            c.idle_since = Instant::now();
            c.head_started = None;
        }
    }
}

/// A connection's socket, reporting each read and write to its [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote_some();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote_some();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that must arrive whole within a time limit; after it, reading fails
/// with [`BodyTimedOut`], which the API answers with 408. The timer is only set once the
/// body keeps a reader waiting: most bodies arrive with their head and never need one.
struct TimedBody {
    inner: Incoming,
    started: Instant,
    deadline: Option<Pin<Box<Sleep>>>,
    limit: Duration,
}

impl TimedBody {
    fn new(inner: Incoming, limit: Duration) -> Self {
        Self {
            inner,
            started: Instant::now(),
            deadline: None,
            limit,
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let at = self.started + self.limit;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimedOut(self.limit)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds its request's [`RequestGuard`] until it is written out.
struct Tracked {
    inner: Body,
    _guard: RequestGuard,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 10,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_state_has_its_own_deadline() {
        let l = limits();
        let a = Arc::new(Activity::new());
        let opened = Instant::now();
        assert_eq!(a.deadline(&l), opened + l.idle_timeout);
        assert_eq!(a.expired(&l, opened + l.idle_timeout), Some(Expired::Idle));

        tokio::time::advance(Duration::from_secs(5)).await;
        a.read_some();
        let head = Instant::now();
        assert_eq!(a.deadline(&l), head + l.header_timeout);
        assert_eq!(a.expired(&l, head + Duration::from_secs(9)), None);
        assert_eq!(
            a.expired(&l, head + l.header_timeout),
            Some(Expired::SlowHead)
        );
        // More bytes of the same head do not extend its time.
        tokio::time::advance(Duration::from_secs(5)).await;
        a.read_some();
        assert_eq!(a.deadline(&l), head + l.header_timeout);

        let guard = a.request_started();
        tokio::time::advance(Duration::from_secs(1)).await;
        a.wrote_some();
        let wrote = Instant::now();
        assert_eq!(a.deadline(&l), wrote + l.idle_timeout);
        assert_eq!(
            a.expired(&l, wrote + l.idle_timeout),
            Some(Expired::Stalled)
        );

        tokio::time::advance(Duration::from_secs(1)).await;
        drop(guard);
        let idle = Instant::now();
        assert_eq!(a.deadline(&l), idle + l.idle_timeout);
        assert_eq!(a.expired(&l, idle + l.idle_timeout), Some(Expired::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn pipelined_bytes_during_a_request_do_not_start_a_head_timer() {
        let l = limits();
        let a = Arc::new(Activity::new());
        let guard = a.request_started();
        a.read_some();
        drop(guard);
        let idle = Instant::now();
        assert_eq!(a.deadline(&l), idle + l.idle_timeout);
    }
}
