//! `console`: how fast the operator console and the customer portal serve their pages
//! over a big store (issue 20: every page within 50 ms at p99 with 1 000 000 messages and
//! 100 000 attempts stored).
//!
//! The store is filled through the API, as a sender fills it (no shortcut through the
//! database file, so the figure covers every index and key the real write path keeps):
//! one application gets every message, 1 in 20 of them of an event type its two endpoints
//! want; one endpoint answers 200, the other is a closed loopback port with no retries, so
//! each wanted message makes one delivered and one failed attempt, and the failing
//! endpoint shows on the system page and in the health columns. Nine small applications
//! with an endpoint each fill the applications list.
//!
//! Then the harness signs in as an operator (and opens a portal session with an
//! app-portal token) and requests each main page in turn (the application page also
//! with its message log filtered to the messages with a failed delivery, one in 20, and
//! that filter's API call alone, beside the page's other calls), `--quick`-dependent times,
//! one request at a time on one keep-alive connection. Each figure is the page's p99 of
//! the time from sending the request to the last byte of the page, measured in the
//! harness on loopback (so it includes the loopback round trip and hyper's client, well
//! under a millisecond), with p50 and the server's CPU per request (utime + stime of
//! the hookline process over that page's requests) beside it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use super::{concurrent, finish, Ctx};
use crate::http::{self, HttpClient};
use crate::receiver::Receiver;
use crate::results::{Figure, Goal, ScenarioResult};
use crate::server::ADMIN_TOKEN;
use crate::stats::summarize;

/// The goal of issue 20, per page.
const P99_GOAL_MS: f64 = 50.0;

/// Each page is requested `Size::requests` times, but no longer than this once it has
/// had [`MIN_REQUESTS`].
const PAGE_TIME_LIMIT: Duration = Duration::from_secs(20);
const MIN_REQUESTS: usize = 50;

/// How big a store, and how many requests per page.
struct Size {
    messages: usize,
    /// One message in `every` is of the type both endpoints want (two attempts each).
    every: usize,
    requests: usize,
}

impl Size {
    fn of(ctx: &Ctx) -> Self {
        if ctx.quick {
            Self {
                messages: 10_000,
                every: 20,
                requests: 5,
            }
        } else {
            Self {
                messages: 1_000_000,
                every: 20,
                requests: 200,
            }
        }
    }

    fn wanted(&self) -> usize {
        self.messages.div_ceil(self.every)
    }
}

/// A message body of about 200 bytes, like a small order event.
fn message(seq: usize, every: usize) -> Bytes {
    let kind = if seq.is_multiple_of(every) {
        "order.created"
    } else {
        "order.updated"
    };
    Bytes::from(
        json!({
            "eventType": kind,
            "payload": {
                "orderId": format!("ord_{seq:09}"),
                "status": "paid",
                "total": {"amount": 4200 + seq % 1000, "currency": "EUR"},
                "customer": {"id": format!("cus_{:06}", seq % 50_000), "country": "ES"},
                "items": 1 + seq % 5,
            }
        })
        .to_string(),
    )
}

/// The header a request is let in by: a session cookie, or the API's bearer token.
type Credential = (HeaderName, String);

/// A plain HTTP client for the console's pages: form posts, a cookie, text answers.
struct Browser {
    client: HttpClient,
    origin: String,
}

impl Browser {
    async fn send(
        &self,
        method: Method,
        path: &str,
        credential: Option<&Credential>,
        body: Option<(&str, String)>,
    ) -> anyhow::Result<(StatusCode, hyper::HeaderMap, Bytes)> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.origin));
        if let Some((name, value)) = credential {
            req = req.header(name, value);
        }
        let body = match body {
            Some((kind, text)) => {
                req = req.header(CONTENT_TYPE, kind);
                Bytes::from(text)
            }
            None => Bytes::new(),
        };
        let resp = self
            .client
            .request(req.body(Full::new(body))?)
            .await
            .with_context(|| format!("request to {path}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// The API, as the admin, answering JSON.
    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}/api/v1{path}", self.origin))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"));
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let resp = self
            .client
            .request(req.body(Full::new(body))?)
            .await
            .with_context(|| format!("request to {path}"))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{path}: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Posts a form and answers the `name=value` of the cookie `name` it sets.
    async fn cookie_from(&self, path: &str, form: String, name: &str) -> anyhow::Result<String> {
        let (status, headers, body) = self
            .send(
                Method::POST,
                path,
                None,
                Some(("application/x-www-form-urlencoded", form)),
            )
            .await?;
        headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .and_then(|v| v.split(';').next())
            .map(str::to_string)
            .with_context(|| {
                format!(
                    "POST {path} set no {name} cookie ({status}): {}",
                    String::from_utf8_lossy(&body)
                )
            })
    }
}

fn id(v: &Value) -> anyhow::Result<String> {
    v["id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no id in {v}"))
}

/// A port on loopback that nothing listens on: connecting is refused at once.
fn closed_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A page's requests, timed.
#[derive(serde::Serialize)]
struct PageRun {
    page: &'static str,
    path: String,
    bytes: usize,
    ms: crate::stats::Summary,
    cpu_ms_per_request: f64,
}

pub async fn console(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let size = Size::of(ctx);
    let recv = Receiver::start().await?;
    let mut server = ctx.server("console").await?;
    let b = Browser {
        client: http::client(4),
        origin: server.api.origin().to_string(),
    };

    // The catalog, the big application and its two endpoints, and nine small ones.
    for (name, what) in [
        ("order.created", "An order was placed"),
        ("order.updated", "An order changed"),
    ] {
        b.api(
            Method::POST,
            "/event-type",
            Some(json!({"name": name, "description": what, "schemas": {"1": {
                "type": "object", "properties": {"orderId": {"type": "string"}},
                "examples": [{"orderId": "ord_000000001"}]
            }}})),
        )
        .await?;
    }
    let app = id(&b
        .api(
            Method::POST,
            "/app",
            Some(json!({"name": "Big Shop", "uid": "big-shop"})),
        )
        .await?)?;
    let ok_ep = id(&b
        .api(
            Method::POST,
            &format!("/app/{app}/endpoint"),
            Some(
                json!({"url": recv.ok_url(0), "filterTypes": ["order.created"],
                "description": "orders (answers 200)"}),
            ),
        )
        .await?)?;
    let failing_ep = id(&b
        .api(
            Method::POST,
            &format!("/app/{app}/endpoint"),
            Some(
                json!({"url": format!("http://127.0.0.1:{}/hook", closed_port()?),
                "filterTypes": ["order.created"], "retryPolicy": {"kind": "none"},
                "description": "orders (nothing listens)"}),
            ),
        )
        .await?)?;
    for i in 0..9 {
        let small = id(&b
            .api(
                Method::POST,
                "/app",
                Some(json!({"name": format!("Small Shop {i}"), "uid": format!("small-{i}")})),
            )
            .await?)?;
        b.api(
            Method::POST,
            &format!("/app/{small}/endpoint"),
            Some(json!({"url": recv.ok_url(1)})),
        )
        .await?;
    }

    // The messages, through the API, in two halves: the time between them marks the
    // middle of the log (for a page reached by its iterator).
    let seed0 = Instant::now();
    let cpu_seed0 = server.stats()?.cpu_s;
    let half = size.messages / 2;
    let mut middle = None;
    for (first, n) in [(0, half), (half, size.messages - half)] {
        let (api, every) = (server.api.clone(), size.every);
        let app_id = app.clone();
        concurrent(n, ctx.counts.clients, move |i| {
            let (api, app_id) = (api.clone(), app_id.clone());
            async move {
                api.create_message(&app_id, message(first + i, every))
                    .await
                    .map(|_| ())
            }
        })
        .await?;
        middle.get_or_insert_with(chrono::Utc::now);
        server.check_alive()?;
    }
    let ingest_s = seed0.elapsed().as_secs_f64();
    // Every wanted message makes two attempts: wait until they are all recorded.
    let want = (2 * size.wanted()) as f64;
    let deadline = Instant::now() + Duration::from_secs(120) + ctx.wait_budget(size.wanted());
    loop {
        let done = server.api.counters(&["hookline_attempts_total"]).await?[0];
        if done >= want {
            break;
        }
        if Instant::now() > deadline {
            bail!("{done} of {want} attempts made in time");
        }
        server.check_alive()?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The counter moves as an attempt is reported; give its row a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seed_s = seed0.elapsed().as_secs_f64();
    let seed_cpu_s = server.stats()?.cpu_s - cpu_seed0;

    // What the pages need: a wanted message, and an iterator into the log's middle.
    let wanted = b
        .api(
            Method::GET,
            &format!("/app/{app}/msg?limit=1&event_types=order.created&with_content=false"),
            None,
        )
        .await?;
    let msg = id(&wanted["data"][0])?;
    let before = middle
        .expect("two halves")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let deep = b
        .api(
            Method::GET,
            &format!(
                "/app/{app}/msg?limit=1&with_content=false&before={}",
                before.replace('+', "%2B")
            ),
            None,
        )
        .await?;
    let iterator = deep["iterator"]
        .as_str()
        .context("no iterator in the middle of the log")?
        .to_string();

    // Sign in as an operator; open a portal session with an app-portal token.
    let console = b
        .cookie_from("/login", format!("token={ADMIN_TOKEN}"), "hookline_console")
        .await?;
    let access = b
        .api(
            Method::POST,
            &format!("/auth/app-portal-access/{app}"),
            Some(json!({})),
        )
        .await?;
    let key = access["token"].as_str().context("no portal token")?;
    let portal = b
        .cookie_from(
            &format!("/portal/{app}/session"),
            format!("key={key}"),
            "hookline_portal",
        )
        .await?;

    let (console, portal) = ((COOKIE, console), (COOKIE, portal));
    let admin = (AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"));
    let pages: Vec<(&'static str, String, &Credential)> = vec![
        ("applications", "/apps".into(), &console),
        ("application (log page 1)", format!("/apps/{app}"), &console),
        (
            "application (log, middle page)",
            format!("/apps/{app}?iterator={iterator}"),
            &console,
        ),
        (
            "application (log, status=fail)",
            format!("/apps/{app}?status=fail"),
            &console,
        ),
        (
            "message log API, status=fail",
            format!("/api/v1/app/{app}/msg?status=fail&with_content=false"),
            &admin,
        ),
        ("message", format!("/apps/{app}/msgs/{msg}"), &console),
        (
            "endpoint, 24 h charts",
            format!("/apps/{app}/endpoints/{ok_ep}"),
            &console,
        ),
        (
            "endpoint, 7 day charts",
            format!("/apps/{app}/endpoints/{ok_ep}?range=7d"),
            &console,
        ),
        (
            "failing endpoint",
            format!("/apps/{app}/endpoints/{failing_ep}"),
            &console,
        ),
        ("event types", "/event-types".into(), &console),
        ("system", "/system".into(), &console),
        ("portal home", format!("/portal/{app}"), &portal),
        (
            "portal endpoint",
            format!("/portal/{app}/endpoints/{ok_ep}"),
            &portal,
        ),
        (
            "portal message",
            format!("/portal/{app}/msgs/{msg}"),
            &portal,
        ),
    ];
    let mut runs = Vec::new();
    for (page, path, credential) in pages {
        // One request first, unmeasured: it must be the page, and it warms the caches a
        // browser's first visit would (prepared statements, the session).
        let (status, headers, body) = b.send(Method::GET, &path, Some(credential), None).await?;
        if status != StatusCode::OK {
            bail!(
                "{page} ({path}): {status} {:?}: {}",
                headers.get(LOCATION),
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            );
        }
        let cpu0 = server.stats()?.cpu_s;
        let mut ms = Vec::with_capacity(size.requests);
        let page_t0 = Instant::now();
        for i in 0..size.requests {
            // A page far over its goal would make the run last long: past the time
            // limit it stops at the minimum count (the figure says how many it timed).
            if i >= MIN_REQUESTS && page_t0.elapsed() > PAGE_TIME_LIMIT {
                break;
            }
            let t0 = Instant::now();
            let (status, _, _) = b.send(Method::GET, &path, Some(credential), None).await?;
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
            if status != StatusCode::OK {
                bail!("{page} ({path}): {status}");
            }
        }
        let cpu = server.stats()?.cpu_s - cpu0;
        runs.push(PageRun {
            page,
            path,
            bytes: body.len(),
            ms: summarize(&ms),
            cpu_ms_per_request: cpu * 1e3 / ms.len() as f64,
        });
    }

    let mut r = ScenarioResult::new(
        "console",
        format!(
            "console and portal pages over {} messages and {} attempts stored (seeded through \
             the API); {} sequential GETs per page (fewer, at least {MIN_REQUESTS}, past {} s) on \
             one keep-alive connection, timed in the harness on loopback (request sent → last \
             byte); CPU is the server's per request",
            crate::results::thousands(size.messages as u64),
            crate::results::thousands(want as u64),
            size.requests,
            PAGE_TIME_LIMIT.as_secs()
        ),
    );
    for run in &runs {
        r.figures.push(
            Figure::new(
                &format!(
                    "{}: p99 (p50 {:.1} ms, CPU {:.1} ms/req, n {})",
                    run.page, run.ms.p50_ms, run.cpu_ms_per_request, run.ms.n
                ),
                run.ms.p99_ms,
                "ms",
            )
            .goal(Goal::AtMost { max: P99_GOAL_MS }),
        );
    }
    r.details = json!({
        "messages": size.messages,
        "attempts": want,
        "requests_per_page": size.requests,
        "seed_s": seed_s,
        "ingest_s": ingest_s,
        "ingest_msg_per_s": size.messages as f64 / ingest_s,
        "seed_server_cpu_s": seed_cpu_s,
        "pages": runs,
    });
    finish(server, &mut r)?;
    Ok(r)
}
