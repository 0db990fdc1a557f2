//! Receivers that misbehave on purpose, end to end: one customer's endpoint must not slow
//! every tenant, nor hold hookline's memory or connections beyond its timeout.
//!
//! - a receiver streaming `100 Continue` without end: the API stays fast, the attempt
//!   fails at once (`http`, too many informational responses) and its connection is
//!   closed;
//! - a status line, headers or a body trickling in: the attempt ends at its timeout (a
//!   body keeps the excerpt of what arrived), and so does its connection;
//! - a large payload fanned out to many endpoints whose receivers hold every request: the
//!   server's memory is bounded by the one payload, not by attempts × payload.
//!
//! Every receiver is a raw `TcpListener` this file starts on 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::delivery_outcomes::{new_app, new_endpoint, send, send_raw};
use crate::support::{Api, Server};

/// This file's tests run one at a time: two of them measure latency or memory, which the
/// others' receivers would disturb.
static MEASURED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One connection a hostile receiver accepted: when, and when it saw hookline close it.
#[derive(Debug, Clone, Copy)]
struct Conn {
    accepted: Instant,
    closed: Option<Instant>,
}

/// A receiver that reads each request, then writes `first` once and `each` again and
/// again every `pace` (without pause when zero) until hookline goes away.
struct Hostile {
    url: String,
    conns: Arc<Mutex<Vec<Conn>>>,
}

impl Hostile {
    async fn start(first: &'static [u8], each: &'static [u8], pace: Duration) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let conns = Arc::new(Mutex::new(Vec::new()));
        let log = conns.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let i = {
                    let mut log = log.lock().unwrap();
                    log.push(Conn {
                        accepted: Instant::now(),
                        closed: None,
                    });
                    log.len() - 1
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    read_request(&mut r).await;
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
                    // hookline closed the connection: a read sees EOF, or a write fails.
                    let eof = async {
                        let mut buf = [0u8; 1024];
                        while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
                    };
                    tokio::select! {
                        _ = writes => {}
                        _ = eof => {}
                    }
                    log.lock().unwrap()[i].closed = Some(Instant::now());
                });
            }
        });
        Hostile { url, conns }
    }

    fn conns(&self) -> Vec<Conn> {
        self.conns.lock().unwrap().clone()
    }

    /// Waits until `n` connections were accepted and each was closed by hookline, then
    /// returns the longest any stayed open.
    async fn all_closed(&self, n: usize, within: Duration) -> Duration {
        let deadline = Instant::now() + within;
        loop {
            let conns = self.conns();
            if conns.len() >= n && conns.iter().all(|c| c.closed.is_some()) {
                return conns
                    .iter()
                    .map(|c| c.closed.unwrap() - c.accepted)
                    .max()
                    .unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "connections still open after {within:?}: {conns:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Reads one request (head and `content-length` body); false if the connection ended.
async fn read_request(r: &mut (impl AsyncReadExt + Unpin)) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if !matches!(r.read(&mut byte).await, Ok(1)) {
            return false;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let len: u64 = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut left = len;
    let mut buf = vec![0u8; 16 * 1024];
    while left > 0 {
        let want = buf.len().min(left as usize);
        match r.read(&mut buf[..want]).await {
            Ok(n) if n > 0 => left -= n as u64,
            _ => return false,
        }
    }
    true
}

/// A server whose deliveries may reach loopback receivers, with `extra` flags.
async fn server(extra: &[&str]) -> Server {
    let mut args = vec!["--allow-target", "127.0.0.0/8"];
    args.extend_from_slice(extra);
    Server::start_with(&args).await
}

/// The attempts logged for `ep`, once there are `n` (within `within`).
async fn attempts_of(api: &Api, app: &str, ep: &str, n: usize, within: Duration) -> Vec<Value> {
    let path = format!("/api/v1/app/{app}/attempt/endpoint/{ep}?limit=250");
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        let list = body["data"].as_array().expect("data").clone();
        if list.len() >= n {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} attempts logged for {ep} after {within:?}",
            list.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ms(a: &Value) -> u64 {
    a["responseDurationMs"]
        .as_u64()
        .expect("responseDurationMs")
}

/// The p-th percentile (0–100) of `samples`.
fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort();
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}

/// Several endpoints of one receiver that answers `100 Continue` without end, attempted
/// again and again while the API is measured: the API's p99 stays under 20 ms (the
/// previous client spent the runtime parsing the flood, for as long as the connection
/// lived), every attempt fails at once as `http` with the reason, and hookline closes
/// every flooding connection.
#[tokio::test]
async fn an_informational_flood_fails_at_once_and_leaves_the_api_fast() {
    let _one_at_a_time = MEASURED.lock().await;
    let flood = Hostile::start(b"", b"HTTP/1.1 100 Continue\r\n\r\n", Duration::ZERO).await;
    let s = server(&[]).await;
    let api = s.client();
    let app = new_app(&api, "flooded").await;
    const TIMEOUT_MS: u64 = 3000;
    let mut eps = Vec::new();
    for _ in 0..4 {
        let ep = new_endpoint(
            &api,
            &app,
            json!({"url": flood.url, "retryPolicy": {"kind": "none"}, "timeoutMs": TIMEOUT_MS}),
        )
        .await;
        eps.push(ep);
    }
    // Warm the API's connection up, then time sequential health checks while a new
    // message (four flooded attempts) goes out every 25 of them.
    let health = format!("{}/api/v1/health", s.base);
    api.http.get(&health).send().await.expect("health");
    let mut samples = Vec::new();
    let mut messages = 0;
    for i in 0..300 {
        if i % 25 == 0 {
            send(&api, &app, json!({"n": i})).await;
            messages += 1;
        }
        let t = Instant::now();
        let resp = api.http.get(&health).send().await.expect("health");
        assert_eq!(resp.status(), 200);
        resp.bytes().await.expect("health body");
        samples.push(t.elapsed());
    }
    let p50 = percentile(&mut samples, 50);
    let p99 = percentile(&mut samples, 99);
    eprintln!(
        "API during the flood: p50 {p50:?}, p99 {p99:?}, max {:?}",
        samples[samples.len() - 1]
    );
    assert!(
        p99 < Duration::from_millis(20),
        "API p99 {p99:?} during the flood"
    );

    for ep in &eps {
        for a in attempts_of(&api, &app, ep, messages, Duration::from_secs(20)).await {
            assert_eq!(a["status"], 2, "{a}");
            assert_eq!(a["responseStatusCode"], 0, "{a}");
            assert_eq!(a["errorKind"], "http", "{a}");
            let why = a["response"].as_str().unwrap();
            assert!(
                why.contains("too many informational (1xx) responses"),
                "{why}"
            );
            assert!(ms(&a) < TIMEOUT_MS, "{a}");
        }
    }
    let longest = flood
        .all_closed(eps.len() * messages, Duration::from_secs(10))
        .await;
    eprintln!("longest a flooding connection stayed open: {longest:?}");
    assert!(
        longest < Duration::from_millis(TIMEOUT_MS + 500),
        "{longest:?}"
    );
}

/// A status line, or headers, trickling in a byte at a time and never finished: the
/// attempt ends at its timeout, recorded as `timeout`, and its connection is closed.
#[tokio::test]
async fn a_head_trickling_in_ends_at_the_timeout() {
    let _one_at_a_time = MEASURED.lock().await;
    let status_line = Hostile::start(b"HTTP/1.1 2", b"0", Duration::from_millis(50)).await;
    let headers = Hostile::start(
        b"HTTP/1.1 200 OK\r\nx-slow: ",
        b"a",
        Duration::from_millis(50),
    )
    .await;
    let s = server(&[]).await;
    let api = s.client();
    const TIMEOUT_MS: u64 = 1000;
    for receiver in [&status_line, &headers] {
        let app = new_app(&api, "trickled").await;
        let ep = new_endpoint(
            &api,
            &app,
            json!({"url": receiver.url, "retryPolicy": {"kind": "none"}, "timeoutMs": TIMEOUT_MS}),
        )
        .await;
        send(&api, &app, json!({"slow": "head"})).await;
        let a = &attempts_of(&api, &app, &ep, 1, Duration::from_secs(10)).await[0];
        assert_eq!(a["errorKind"], "timeout", "{a}");
        assert_eq!(a["responseStatusCode"], 0, "{a}");
        assert!((TIMEOUT_MS..TIMEOUT_MS + 500).contains(&ms(a)), "{a}");
        let open = receiver.all_closed(1, Duration::from_secs(5)).await;
        assert!(open < Duration::from_millis(TIMEOUT_MS + 500), "{open:?}");
    }
}

/// A body trickling in past the timeout: the attempt ends at the timeout with the
/// response's status, its excerpt keeps the bytes that arrived (it was empty), and the
/// connection is closed.
#[tokio::test]
async fn a_body_trickling_in_keeps_what_arrived() {
    let _one_at_a_time = MEASURED.lock().await;
    let receiver = Hostile::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\nreceived so far:",
        b"x",
        Duration::from_millis(50),
    )
    .await;
    let s = server(&[]).await;
    let api = s.client();
    let app = new_app(&api, "trickled body").await;
    const TIMEOUT_MS: u64 = 1000;
    let ep = new_endpoint(
        &api,
        &app,
        json!({"url": receiver.url, "retryPolicy": {"kind": "none"}, "timeoutMs": TIMEOUT_MS}),
    )
    .await;
    send(&api, &app, json!({"slow": "body"})).await;
    let a = &attempts_of(&api, &app, &ep, 1, Duration::from_secs(10)).await[0];
    assert_eq!(a["responseStatusCode"], 200, "{a}");
    let excerpt = a["response"].as_str().unwrap();
    assert!(excerpt.starts_with("received so far:xxx"), "{a}");
    assert!(ms(a) < TIMEOUT_MS + 500, "{a}");
    let open = receiver.all_closed(1, Duration::from_secs(5)).await;
    assert!(open < Duration::from_millis(TIMEOUT_MS + 500), "{open:?}");
}

/// `VmRSS` or `VmHWM` of a process, in bytes.
fn memory_of(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kb * 1024
}

/// A 1 MB message fanned out to 300 endpoints whose receiver holds every request for a
/// while, so all 300 attempts are in flight at once: the server's peak RSS stays far
/// below attempts × payload (each attempt used to hold two copies of the payload: about
/// 600 MB here).
#[tokio::test]
async fn a_large_payload_fanned_out_is_held_once() {
    const ENDPOINTS: usize = 300;
    const PAYLOAD: usize = 1 << 20;
    const HOLD: Duration = Duration::from_secs(3);
    let _one_at_a_time = MEASURED.lock().await;

    // Reads each request whole, holds it, then answers 200; counts the bodies and how
    // many were held at once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most_held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let (received, held, most_held) = (received.clone(), held.clone(), most_held.clone());
        tokio::spawn(async move {
            use std::sync::atomic::Ordering::SeqCst;
            while let Ok((mut s, _)) = listener.accept().await {
                let (received, held, most_held) =
                    (received.clone(), held.clone(), most_held.clone());
                tokio::spawn(async move {
                    while read_request(&mut s).await {
                        received.fetch_add(1, SeqCst);
                        most_held.fetch_max(held.fetch_add(1, SeqCst) + 1, SeqCst);
                        tokio::time::sleep(HOLD).await;
                        held.fetch_sub(1, SeqCst);
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    let s = server(&["--max-in-flight", "400", "--body-limit-bytes", "4194304"]).await;
    let pid = s.pid().expect("pid");
    let api = s.client();
    let app = new_app(&api, "fan-out").await;
    let mut created = tokio::task::JoinSet::new();
    for i in 0..ENDPOINTS {
        let (api, app, url) = (api.clone(), app.clone(), url.clone());
        created.spawn(async move {
            new_endpoint(
                &api,
                &app,
                json!({"url": url, "uid": format!("ep-{i}"), "retryPolicy": {"kind": "none"},
                       "timeoutMs": 30000, "signature": {"scheme": "none"}}),
            )
            .await
        });
        if created.len() >= 16 {
            created.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = created.join_next().await {
        r.unwrap();
    }

    let before = memory_of(pid, "VmRSS");
    let filler = "x".repeat(PAYLOAD);
    let body = format!(r#"{{"eventType": "big", "payload": {{"data": "{filler}"}}}}"#);
    drop(filler);
    let msg = send_raw(&api, &app, &body).await;
    drop(body);

    let start = Instant::now();
    let mut peak_rss = 0;
    while received.load(std::sync::atomic::Ordering::SeqCst) < ENDPOINTS {
        peak_rss = peak_rss.max(memory_of(pid, "VmRSS"));
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} of {ENDPOINTS} requests received",
            received.load(std::sync::atomic::Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hwm = memory_of(pid, "VmHWM");
    let most = most_held.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!(
        "RSS before the message {} MB, peak seen {} MB, high-water mark {} MB; \
         {most} requests of {} MB held at once",
        before >> 20,
        peak_rss >> 20,
        hwm >> 20,
        PAYLOAD >> 20
    );
    // Most attempts really were in flight together, each with its 1 MB body...
    assert!(most >= ENDPOINTS * 3 / 4, "only {most} held at once");
    // ...yet the server held about one copy of the payload, not one per attempt.
    assert!(hwm < 200 << 20, "peak RSS {} MB", hwm >> 20);
    assert!(
        hwm < before + (100 << 20),
        "RSS grew by {} MB",
        (hwm - before) >> 20
    );
    let (status, view) = api.get(&format!("/api/v1/app/{app}/msg/{msg}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        view["payload"]["data"].as_str().map(str::len),
        Some(PAYLOAD)
    );
}
