//! The scenarios. Each starts its own receiver and (except the baseline) a fresh hookline
//! server, so peak RSS and CPU are per scenario.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, USER_AGENT};
use hyper::Request;
use serde::Serialize;
use serde_json::json;

use crate::charts::{self, Series};
use crate::http::{self, Api, Payloads};
use crate::receiver::Receiver;
use crate::results::{Figure, Goal, ScenarioResult, ServerNumbers};
use crate::server::{self, Server};
use crate::stats::{bucket_for, cdf_points, rate_series, summarize};

mod console;
mod hot;
mod nodes;
pub use console::console;
pub use hot::{hot, hot_slow, knee};
pub use nodes::{knee_nodes, nodes, takeover};

/// hookline's defaults that decide how much it delivers at once (see `hookline serve
/// --help` and the README): `--max-in-flight` and an endpoint's `maxConcurrency`.
pub const SERVER_MAX_IN_FLIGHT: usize = 512;
pub const ENDPOINT_MAX_CONCURRENCY: usize = 8;

pub const PAYLOAD_BYTES: usize = 1024;

/// How much each scenario does; `--quick` shrinks everything.
#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    pub clients: usize,
    pub baseline_requests: usize,
    pub apps: usize,
    pub messages: usize,
    pub latency_messages: usize,
    pub fanout_endpoints: usize,
    pub isolation_messages: usize,
    pub stall_endpoints: usize,
    pub stall_timeout_ms: u64,
    pub backlog_endpoints: usize,
    pub backlog_messages: usize,
    pub backlog_probes: usize,
    /// `nodes` runs the e2e load on 1, 2 … `nodes` processes; `takeover` on `nodes`.
    pub nodes: usize,
    /// `takeover`: every process's `--lease-secs`.
    pub lease_secs: u64,
    /// `takeover`: the steady load, messages per second over all processes.
    pub takeover_rate: u64,
    /// `takeover`: seconds of load before the kill.
    pub takeover_before_kill_s: u64,
}

impl Counts {
    pub fn full() -> Self {
        Self {
            clients: 64,
            baseline_requests: 50_000,
            apps: 100,
            messages: 50_000,
            latency_messages: 1_000,
            fanout_endpoints: 1_000,
            isolation_messages: 10_000,
            stall_endpoints: 10,
            stall_timeout_ms: 2_000,
            backlog_endpoints: 1_000,
            backlog_messages: 1_000,
            backlog_probes: 200,
            nodes: 3,
            lease_secs: 10,
            takeover_rate: 1_000,
            takeover_before_kill_s: 5,
        }
    }

    pub fn quick() -> Self {
        Self {
            clients: 16,
            baseline_requests: 2_000,
            apps: 10,
            messages: 1_000,
            latency_messages: 50,
            fanout_endpoints: 100,
            isolation_messages: 300,
            stall_endpoints: 10,
            stall_timeout_ms: 2_000,
            backlog_endpoints: 50,
            backlog_messages: 50,
            backlog_probes: 20,
            nodes: 3,
            lease_secs: 10,
            takeover_rate: 200,
            takeover_before_kill_s: 2,
        }
    }

    /// Deliveries hookline runs at once in the e2e load: every endpoint at its default
    /// `maxConcurrency`, capped by the default `--max-in-flight`. The baseline client uses
    /// the same number of connections.
    pub fn delivery_concurrency(&self) -> usize {
        (self.apps * ENDPOINT_MAX_CONCURRENCY).min(SERVER_MAX_IN_FLIGHT)
    }
}

pub struct Ctx {
    pub bin: PathBuf,
    pub out: PathBuf,
    pub counts: Counts,
    pub payloads: Arc<Payloads>,
    /// The baseline's requests/s, once measured.
    pub baseline_rps: Option<f64>,
    /// Servers run on PostgreSQL, each on a fresh database made from this one.
    pub database_url: Option<String>,
    /// `--quick`: no pauses between runs.
    pub quick: bool,
}

impl Ctx {
    async fn server(&self, scenario: &str) -> anyhow::Result<Server> {
        self.server_with_env(scenario, &[]).await
    }

    async fn server_with_env(
        &self,
        scenario: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        Server::start(
            &self.bin,
            &self.out.join(format!("{scenario}.server.log")),
            &[],
            env,
            self.database_url.as_deref(),
        )
        .await
    }

    fn ratio(&self, value: f64) -> Option<f64> {
        self.baseline_rps.map(|b| value / b)
    }

    fn wait_budget(&self, deliveries: usize) -> Duration {
        Duration::from_secs(60) + Duration::from_millis(10 * deliveries as u64)
    }
}

/// Runs `f(0..n)` on `workers` tasks that each take the next index; results in index
/// order. The first error stops everything.
async fn concurrent<T, F, Fut>(n: usize, workers: usize, f: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers.clamp(1, n.max(1)) {
        let (f, next) = (f.clone(), next.clone());
        set.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(done);
                }
                done.push((i, f(i).await?));
            }
        });
    }
    let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        match joined? {
            Ok(done) => {
                for (i, t) in done {
                    slots[i] = Some(t);
                }
            }
            Err(e) => {
                set.abort_all();
                return Err(e);
            }
        }
    }
    Ok(slots
        .into_iter()
        .map(|s| s.expect("every index ran"))
        .collect())
}

/// One message sent: when its request started and when its 202 arrived.
#[derive(Clone, Copy)]
struct Sent {
    start: Instant,
    acked: Instant,
}

/// Creates messages `seqs` (`first..first + n`), message `seq` to app `app_of(seq)`,
/// through `apis[seq % apis.len()]` (round-robin over several processes' APIs).
async fn send_messages(
    apis: &[Api],
    payloads: &Arc<Payloads>,
    first: u64,
    n: usize,
    clients: usize,
    app_of: impl Fn(u64) -> String + Send + Sync + 'static,
    deliver_at: Option<String>,
) -> anyhow::Result<Vec<Sent>> {
    let (apis, payloads): (Arc<[Api]>, _) = (apis.into(), payloads.clone());
    let app_of = Arc::new(app_of);
    let deliver_at = Arc::new(deliver_at);
    concurrent(n, clients, move |i| {
        let seq = first + i as u64;
        let (api, app) = (apis[seq as usize % apis.len()].clone(), app_of(seq));
        let body = payloads.message(seq, deliver_at.as_deref());
        async move {
            let start = Instant::now();
            let acked = api.create_message(&app, body).await?;
            Ok(Sent { start, acked })
        }
    })
    .await
}

/// Waits until every seq in `first..first + n` arrived at path `path` (or any path when
/// `None`) and returns the first arrival of each. `since`: requests answered before the
/// first of them was sent.
async fn wait_for_seqs(
    recv: &Receiver,
    since: u64,
    first: u64,
    n: usize,
    path: Option<u32>,
    timeout: Duration,
) -> anyhow::Result<Vec<Instant>> {
    let deadline = Instant::now() + timeout;
    let mut expect = since + n as u64;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        // Cheap: a counter. Only scan the arrivals once enough came in.
        if let Err(e) = recv.wait_answered(expect, remaining).await {
            bail!("waiting for messages {first}..{}: {e}", first + n as u64);
        }
        let mut got: Vec<Option<Instant>> = vec![None; n];
        for a in recv.arrivals() {
            if path.is_some_and(|p| p != a.path) {
                continue;
            }
            if let Some(s) = a.seq.filter(|s| (first..first + n as u64).contains(s)) {
                got[(s - first) as usize].get_or_insert(a.at);
            }
        }
        let missing = got.iter().filter(|g| g.is_none()).count();
        if missing == 0 {
            return Ok(got.into_iter().map(|g| g.expect("present")).collect());
        }
        // Some arrivals were duplicates or someone else's: wait for the next one.
        expect = recv.answered() + 1;
    }
}

/// Apps `app-0..app-{apps}`, each with one endpoint `/ok/{i}`.
async fn apps_with_one_endpoint(
    api: &Api,
    recv: &Receiver,
    apps: usize,
    clients: usize,
) -> anyhow::Result<()> {
    let api = api.clone();
    let urls: Arc<Vec<String>> = Arc::new((0..apps).map(|i| recv.ok_url(i as u32)).collect());
    concurrent(apps, clients, move |i| {
        let (api, url) = (api.clone(), urls[i].clone());
        async move {
            let app = format!("app-{i}");
            api.create_app(&app).await?;
            api.create_endpoint(&app, json!({ "url": url })).await
        }
    })
    .await?;
    Ok(())
}

/// Finishes a scenario: the server's numbers, then stops it.
fn finish(mut server: Server, result: &mut ScenarioResult) -> anyhow::Result<()> {
    server.check_alive()?;
    let s = server.stats()?;
    result.server = Some(ServerNumbers {
        idle_rss_mb: server.idle_rss_mb,
        peak_rss_mb: s.peak_rss_mb,
        cpu_s: s.cpu_s,
        db_cpu_s: server.db_cpu_s(),
    });
    server.stop();
    Ok(())
}

// --- 1. baseline -----------------------------------------------------------------

/// Runs of the baseline; its figure is their median.
const BASELINE_ROUNDS: usize = 5;

pub async fn baseline(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let c = &ctx.counts;
    let conc = c.delivery_concurrency();
    let n = c.baseline_requests;
    let recv = Receiver::start().await?;
    let client = http::client(conc);
    let urls: Arc<Vec<String>> = Arc::new((0..c.apps).map(|i| recv.ok_url(i as u32)).collect());
    let payloads = ctx.payloads.clone();
    let (cl, u) = (client.clone(), urls.clone());
    let one = move |i: usize| {
        let req = Request::post(u[i % u.len()].as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, "hookline/0.1.0")
            // What hookline's standard scheme sends, with the same sizes.
            .header("webhook-id", "msg_2zQ3mGmx3Zr0OcJgHtOYuvq3Yfa")
            .header("webhook-timestamp", "1767225600")
            .header(
                "webhook-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            )
            .body(Full::new(Bytes::from(payloads.payload(i as u64))));
        let cl = cl.clone();
        async move {
            let resp = cl.request(req?).await?;
            if !resp.status().is_success() {
                bail!("receiver answered {}", resp.status());
            }
            resp.into_body().collect().await?;
            Ok(())
        }
    };
    // Warm the pool, so the figure is the steady keep-alive rate.
    let one = Arc::new(one);
    let o = one.clone();
    concurrent(conc, conc, move |i| o(i)).await?;
    // A single run lasts well under a second here, so one hiccup of the shared machine
    // moves it a lot: the figure is the median of a few runs.
    let cpu0 = server::own_stats().cpu_s;
    let mut rounds = Vec::new();
    for _ in 0..BASELINE_ROUNDS {
        let t0 = Instant::now();
        let o = one.clone();
        concurrent(n, conc, move |i| o(i)).await?;
        rounds.push(n as f64 / t0.elapsed().as_secs_f64());
    }
    let cpu_s = (server::own_stats().cpu_s - cpu0) / BASELINE_ROUNDS as f64;
    let mut sorted = rounds.clone();
    sorted.sort_by(f64::total_cmp);
    let rps = sorted[sorted.len() / 2];
    let mut r = ScenarioResult::new(
        "baseline",
        format!(
            "raw hyper keep-alive client → the harness's receiver: {n} POSTs of {PAYLOAD_BYTES} B \
             with webhook-* headers over {conc} connections, median of {BASELINE_ROUNDS} runs ({} endpoints × maxConcurrency \
             {ENDPOINT_MAX_CONCURRENCY}, capped by --max-in-flight {SERVER_MAX_IN_FLIGHT})",
            c.apps
        ),
    );
    r.figures
        .push(Figure::new("raw client → receiver", rps, "req/s").ratio(1.0));
    r.details = json!({"requests_per_run": n, "concurrency": conc, "runs_req_per_s": rounds,
        "harness_cpu_s_per_run": cpu_s,
        "receiver_connections": recv.connections()});
    Ok(r)
}

// --- 2. ingest -------------------------------------------------------------------

pub async fn ingest(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let c = &ctx.counts;
    let recv = Receiver::start().await?;
    let server = ctx.server("ingest").await?;
    apps_with_one_endpoint(&server.api, &recv, c.apps, c.clients).await?;
    let apps = c.apps as u64;
    let t0 = Instant::now();
    let sent = send_messages(
        std::slice::from_ref(&server.api),
        &ctx.payloads,
        0,
        c.messages,
        c.clients,
        move |s| format!("app-{}", s % apps),
        None,
    )
    .await?;
    let last = sent.iter().map(|s| s.acked).max().expect("sent some");
    let elapsed = last.duration_since(t0).as_secs_f64();
    let rate = c.messages as f64 / elapsed;
    let acks: Vec<f64> = sent
        .iter()
        .map(|s| (s.acked - s.start).as_secs_f64() * 1e3)
        .collect();
    let mut r = ScenarioResult::new(
        "ingest",
        format!(
            "{} messages of {PAYLOAD_BYTES} B to {} apps × 1 endpoint, {} concurrent API \
             clients; 202s/s from the first request to the last 202 (deliveries run meanwhile)",
            c.messages, c.apps, c.clients
        ),
    );
    r.figures.push(
        Figure::new("messages acknowledged (202)", rate, "msg/s")
            .with_ratio(ctx.ratio(rate))
            .goal(Goal::RatioAtLeast { min: 0.35 }),
    );
    r.details = json!({"messages": c.messages, "elapsed_s": elapsed,
        "create_request_ms": summarize(&acks),
        "delivered_during_ingest": recv.answered(),
        "receiver_connections": recv.connections()});
    finish(server, &mut r)?;
    Ok(r)
}

// --- 3. e2e ----------------------------------------------------------------------

/// The e2e load, done: when it started, every message's create and first receipt.
struct E2eLoad {
    t0: Instant,
    sent: Vec<Sent>,
    received: Vec<Instant>,
    /// First create request → last receipt, seconds.
    elapsed: f64,
    /// Delivered messages per second over `elapsed`.
    rate: f64,
    /// Receipts beyond one per message.
    duplicates: u64,
}

/// `messages` (seqs `0..messages`) from `clients` concurrent API clients to apps
/// `app-0..app-{apps}` (made by [`apps_with_one_endpoint`]), round-robin over `apis`;
/// returns once every one arrived at `recv`.
async fn e2e_load(ctx: &Ctx, apis: &[Api], recv: &Receiver) -> anyhow::Result<E2eLoad> {
    let c = &ctx.counts;
    let apps = c.apps as u64;
    let since = recv.answered();
    let t0 = Instant::now();
    let sent = send_messages(
        apis,
        &ctx.payloads,
        0,
        c.messages,
        c.clients,
        move |s| format!("app-{}", s % apps),
        None,
    )
    .await?;
    let received = wait_for_seqs(
        recv,
        since,
        0,
        c.messages,
        None,
        ctx.wait_budget(c.messages),
    )
    .await?;
    let last = *received.iter().max().expect("some");
    let elapsed = last.duration_since(t0).as_secs_f64();
    Ok(E2eLoad {
        t0,
        sent,
        received,
        elapsed,
        rate: c.messages as f64 / elapsed,
        duplicates: (recv.answered() - since).saturating_sub(c.messages as u64),
    })
}

pub async fn e2e(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let c = &ctx.counts;
    let recv = Receiver::start().await?;
    let server = ctx.server("e2e").await?;
    apps_with_one_endpoint(&server.api, &recv, c.apps, c.clients).await?;
    let E2eLoad {
        t0,
        sent,
        received,
        elapsed,
        rate,
        duplicates,
    } = e2e_load(ctx, std::slice::from_ref(&server.api), &recv).await?;
    let latencies: Vec<f64> = sent
        .iter()
        .zip(&received)
        .map(|(s, at)| at.saturating_duration_since(s.start).as_secs_f64() * 1e3)
        .collect();
    let lat = summarize(&latencies);
    let acked_at: Vec<Instant> = sent.iter().map(|s| s.acked).collect();
    let bucket = bucket_for(elapsed);
    let per = if bucket < 1.0 {
        "per 100 ms"
    } else {
        "per second"
    };
    let mut r = ScenarioResult::new(
        "e2e",
        format!(
            "the ingest load ({} messages, {} apps × 1 endpoint, {} clients); first create \
             request → last receipt at the receiver",
            c.messages, c.apps, c.clients
        ),
    );
    r.figures.push(
        Figure::new("delivered", rate, "msg/s")
            .with_ratio(ctx.ratio(rate))
            .goal(Goal::RatioAtLeast { min: 0.2 }),
    );
    let cdf = ctx.out.join("e2e-latency-cdf.svg");
    charts::latency_cdf(
        &cdf,
        &format!(
            "e2e: create → receipt under load ({} msgs, p50 {:.0} ms, p99 {:.0} ms)",
            c.messages, lat.p50_ms, lat.p99_ms
        ),
        &[Series {
            name: "create request start → receipt".into(),
            points: cdf_points(&latencies, 1000),
        }],
    )?;
    let tput = ctx.out.join("e2e-throughput.svg");
    charts::rate_over_time(
        &tput,
        &format!("e2e: messages per second ({per} buckets)"),
        "per second",
        &[
            Series {
                name: "acknowledged (202)".into(),
                points: rate_series(t0, &acked_at, bucket),
            },
            Series {
                name: "delivered".into(),
                points: rate_series(t0, &received, bucket),
            },
        ],
    )?;
    r.charts = vec![file_name(&cdf), file_name(&tput)];
    let ack_last = acked_at.iter().max().expect("some");
    let store = server
        .api
        .counters(&[
            "hookline_sqlite_wal_pages_total",
            "hookline_sqlite_group_commits_total",
            "hookline_sqlite_writes_total",
            "hookline_sqlite_wal_sync_seconds_sum",
            "hookline_sqlite_wal_sync_seconds_count",
        ])
        .await?;
    let per_msg = |v: f64| v / c.messages as f64;
    r.details = json!({"messages": c.messages, "elapsed_s": elapsed,
        "sqlite_wal_pages_per_message": per_msg(store[0]),
        "sqlite_group_commits_per_message": per_msg(store[1]),
        "sqlite_writes_per_group_commit": store[2] / store[1].max(1.0),
        "sqlite_wal_fsync_mean_ms": store[3] * 1e3 / store[4].max(1.0),
        "ingest_msg_per_s": c.messages as f64 / ack_last.duration_since(t0).as_secs_f64(),
        "latency_ms": lat, "duplicates": duplicates,
        "receiver_connections": recv.connections()});
    finish(server, &mut r)?;
    Ok(r)
}

// --- 4. latency ------------------------------------------------------------------

/// Sends `n` messages to `app` one at a time, each after the previous one arrived at
/// path `path`; returns create → receipt and create → 202 in ms. Seqs from `first`.
async fn sequential_latency(
    api: &Api,
    payloads: &Payloads,
    recv: &Receiver,
    app: &str,
    path: u32,
    first: u64,
    n: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let mut receipt = Vec::with_capacity(n);
    let mut ack = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let seq = first + i;
        let body = payloads.message(seq, None);
        let since = recv.answered();
        let start = Instant::now();
        let acked = api.create_message(app, body).await?;
        let at = wait_for_seqs(recv, since, seq, 1, Some(path), Duration::from_secs(30)).await?[0];
        receipt.push(at.saturating_duration_since(start).as_secs_f64() * 1e3);
        ack.push(acked.saturating_duration_since(start).as_secs_f64() * 1e3);
    }
    Ok((receipt, ack))
}

/// Unmeasured messages first, so connections exist and caches are warm.
const WARMUP: usize = 5;

pub async fn latency(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let c = &ctx.counts;
    let recv = Receiver::start().await?;
    let server = ctx.server("latency").await?;
    server.api.create_app("lat").await?;
    server
        .api
        .create_endpoint("lat", json!({"url": recv.ok_url(0)}))
        .await?;
    let api = &server.api;
    sequential_latency(api, &ctx.payloads, &recv, "lat", 0, 1_000_000, WARMUP).await?;
    let (lat, ack) =
        sequential_latency(api, &ctx.payloads, &recv, "lat", 0, 0, c.latency_messages).await?;
    let s = summarize(&lat);
    let mut r = ScenarioResult::new(
        "latency",
        format!(
            "{} messages one at a time at idle (each after the previous one arrived; \
             {WARMUP} unmeasured first); create request start → receipt",
            c.latency_messages
        ),
    );
    r.figures
        .push(Figure::new("create → receipt p50", s.p50_ms, "ms").goal(Goal::AtMost { max: 1.0 }));
    r.figures
        .push(Figure::new("create → receipt p95", s.p95_ms, "ms"));
    r.figures
        .push(Figure::new("create → receipt p99", s.p99_ms, "ms").goal(Goal::AtMost { max: 2.0 }));
    let cdf = ctx.out.join("latency-cdf.svg");
    charts::latency_cdf(
        &cdf,
        &format!(
            "idle latency, one message at a time (p50 {:.2} ms, p99 {:.2} ms)",
            s.p50_ms, s.p99_ms
        ),
        &[
            Series {
                name: "create request start → receipt".into(),
                points: cdf_points(&lat, 1000),
            },
            Series {
                name: "create request start → 202".into(),
                points: cdf_points(&ack, 1000),
            },
        ],
    )?;
    r.charts = vec![file_name(&cdf)];
    r.details = json!({"receipt_ms": s, "ack_ms": summarize(&ack),
        "receiver_connections": recv.connections()});
    finish(server, &mut r)?;
    Ok(r)
}

// --- 5. fanout -------------------------------------------------------------------

pub async fn fanout(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let c = &ctx.counts;
    let e = c.fanout_endpoints;
    let recv = Receiver::start().await?;
    let server = ctx.server("fanout").await?;
    let api = server.api.clone();
    api.create_app("fan").await?;
    let urls: Arc<Vec<String>> = Arc::new((0..e).map(|i| recv.ok_url(i as u32)).collect());
    concurrent(e, c.clients, move |i| {
        let (api, url) = (api.clone(), urls[i].clone());
        async move { api.create_endpoint("fan", json!({ "url": url })).await }
    })
    .await?;
    // The first message is the figure (cold: every endpoint's first delivery); two more
    // show the warm case.
    let mut runs = Vec::new();
    for round in 0..3u64 {
        let before = recv.answered();
        let start = Instant::now();
        let acked = server
            .api
            .create_message("fan", ctx.payloads.message(round, None))
            .await?;
        recv.wait_answered(before + e as u64, ctx.wait_budget(e))
            .await?;
        let arrivals: Vec<_> = recv
            .arrivals()
            .into_iter()
            .filter(|a| a.seq == Some(round))
            .collect();
        let mut paths: Vec<u32> = arrivals.iter().map(|a| a.path).collect();
        paths.sort_unstable();
        paths.dedup();
        if paths.len() != e {
            bail!(
                "fanout: {} distinct endpoints received, expected {e}",
                paths.len()
            );
        }
        // When the receipts came, not only the last: the first shows how soon delivery
        // starts after the create, the median how the bulk of the fan-out went.
        let mut at_ms: Vec<f64> = arrivals
            .iter()
            .map(|a| a.at.duration_since(start).as_secs_f64() * 1e3)
            .collect();
        at_ms.sort_unstable_by(f64::total_cmp);
        runs.push(json!({
            "all_received_ms": at_ms[at_ms.len() - 1],
            "ack_ms": acked.duration_since(start).as_secs_f64() * 1e3,
            "first_received_ms": at_ms[0],
            "half_received_ms": at_ms[at_ms.len() / 2],
        }));
    }
    let first_ms = runs[0]["all_received_ms"].as_f64().expect("number");
    let mut r = ScenarioResult::new(
        "fanout",
        format!(
            "one message to an app with {e} endpoints (distinct paths); create request start → \
             the last of the {e} receipts (first message; two more in the details)"
        ),
    );
    r.figures.push(
        Figure::new(&format!("all {e} received"), first_ms, "ms").goal(Goal::AtMost { max: 200.0 }),
    );
    r.details = json!({"endpoints": e, "runs": runs,
        "receiver_connections": recv.connections()});
    finish(server, &mut r)?;
    Ok(r)
}

// --- 6. isolation ----------------------------------------------------------------

pub async fn isolation(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let c = &ctx.counts;
    let n = c.isolation_messages;
    let recv = Receiver::start().await?;
    let server = ctx.server("isolation").await?;
    let api = server.api.clone();
    api.create_app("healthy").await?;
    api.create_endpoint("healthy", json!({"url": recv.ok_url(0)}))
        .await?;
    api.create_app("stalling").await?;
    for j in 0..c.stall_endpoints {
        api.create_endpoint(
            "stalling",
            json!({"url": recv.hold_url(j as u32), "timeoutMs": c.stall_timeout_ms}),
        )
        .await?;
    }
    let recv = &recv;
    let healthy_run = |first: u64| {
        let api = api.clone();
        let payloads = ctx.payloads.clone();
        async move {
            let since = recv.answered();
            let t0 = Instant::now();
            send_messages(
                std::slice::from_ref(&api),
                &payloads,
                first,
                n,
                c.clients,
                |_| "healthy".into(),
                None,
            )
            .await?;
            let got = wait_for_seqs(recv, since, first, n, Some(0), ctx.wait_budget(n)).await?;
            let last = *got.iter().max().expect("some");
            anyhow::Ok((t0, n as f64 / last.duration_since(t0).as_secs_f64(), got))
        }
    };
    // A few unmeasured messages first, so the first phase does not pay for connecting.
    sequential_latency(&api, &ctx.payloads, recv, "healthy", 0, 50_000_000, WARMUP).await?;
    // Alone.
    let (t_alone, alone, got_alone) = healthy_run(0).await?;
    let alone_s = got_alone
        .iter()
        .max()
        .expect("some")
        .duration_since(t_alone);
    // Load the stalling endpoints with enough work to stay stalled throughout the second
    // run (each works off maxConcurrency requests per timeout), and wait until they are
    // all tied up.
    let per_s = ENDPOINT_MAX_CONCURRENCY as f64 / (c.stall_timeout_ms as f64 / 1e3);
    let stall_msgs = ((per_s * (3.0 * alone_s.as_secs_f64() + 10.0)).ceil() as usize).max(20);
    send_messages(
        std::slice::from_ref(&api),
        &ctx.payloads,
        10_000_000,
        stall_msgs,
        c.clients,
        |_| "stalling".into(),
        None,
    )
    .await?;
    let saturated = (c.stall_endpoints * ENDPOINT_MAX_CONCURRENCY) as u64;
    recv.wait_held_now(saturated, Duration::from_secs(30))
        .await
        .context("the stalling endpoints never got all their slots busy")?;
    let (t_stalled, stalled, got_stalled) = healthy_run(n as u64).await?;
    let (held_total, held_now) = recv.held();
    let ratio = stalled / alone;
    let mut r = ScenarioResult::new(
        "isolation",
        format!(
            "1 healthy endpoint (own app, default maxConcurrency {ENDPOINT_MAX_CONCURRENCY}) gets \
             {n} messages from {} clients: alone, then while {} endpoints (another app, \
             timeoutMs {}) have {stall_msgs} messages queued and every request held until \
             timeout; healthy delivered/s with them ÷ alone",
            c.clients, c.stall_endpoints, c.stall_timeout_ms
        ),
    );
    r.figures.push(
        Figure::new("healthy delivered/s with ÷ without stalls", ratio, "×")
            .with_ratio(Some(ratio))
            .goal(Goal::RatioAtLeast { min: 0.9 }),
    );
    let elapsed = |t: Instant, got: &[Instant]| {
        got.iter()
            .max()
            .expect("some")
            .duration_since(t)
            .as_secs_f64()
    };
    let bucket = bucket_for(elapsed(t_alone, &got_alone).max(elapsed(t_stalled, &got_stalled)));
    let per = if bucket < 1.0 {
        "per 100 ms"
    } else {
        "per second"
    };
    let chart = ctx.out.join("isolation-throughput.svg");
    charts::rate_over_time(
        &chart,
        &format!("isolation: healthy endpoint's deliveries ({per} buckets; ratio {ratio:.2})"),
        "delivered per second",
        &[
            Series {
                name: format!("alone ({alone:.0}/s)"),
                points: rate_series(t_alone, &got_alone, bucket),
            },
            Series {
                name: format!(
                    "with {} stalling endpoints ({stalled:.0}/s)",
                    c.stall_endpoints
                ),
                points: rate_series(t_stalled, &got_stalled, bucket),
            },
        ],
    )?;
    r.charts = vec![file_name(&chart)];
    r.details = json!({"healthy_alone_per_s": alone, "healthy_with_stalls_per_s": stalled,
        "stall_messages": stall_msgs, "held_requests_total": held_total,
        "held_at_end": held_now, "receiver_connections": recv.connections()});
    finish(server, &mut r)?;
    Ok(r)
}

// --- 7. backlog ------------------------------------------------------------------

pub async fn backlog(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let c = &ctx.counts;
    let (e, m) = (c.backlog_endpoints, c.backlog_messages);
    let scheduled = e * m;
    let recv = Receiver::start().await?;
    let server = ctx.server("backlog").await?;
    let api = server.api.clone();
    api.create_app("backlog").await?;
    let urls: Arc<Vec<String>> = Arc::new((0..e).map(|i| recv.ok_url(i as u32)).collect());
    let a = api.clone();
    concurrent(e, c.clients, move |i| {
        let (api, url) = (a.clone(), urls[i].clone());
        async move { api.create_endpoint("backlog", json!({ "url": url })).await }
    })
    .await?;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let t0 = Instant::now();
    send_messages(
        std::slice::from_ref(&api),
        &ctx.payloads,
        0,
        m,
        c.clients,
        |_| "backlog".into(),
        Some(later),
    )
    .await?;
    let schedule_s = t0.elapsed().as_secs_f64();
    let rss_after_schedule = server.stats()?.rss_mb;
    // New messages on another app while the backlog waits.
    api.create_app("live").await?;
    let live_path = 999_999;
    api.create_endpoint("live", json!({"url": recv.ok_url(live_path)}))
        .await?;
    let seq0 = 1_000_000;
    sequential_latency(&api, &ctx.payloads, &recv, "live", live_path, seq0, WARMUP).await?;
    let (lat, ack) = sequential_latency(
        &api,
        &ctx.payloads,
        &recv,
        "live",
        live_path,
        seq0 + WARMUP as u64,
        c.backlog_probes,
    )
    .await?;
    let early = recv
        .arrivals()
        .iter()
        .filter(|a| a.path != live_path)
        .count();
    if early > 0 {
        bail!("{early} deliveries scheduled an hour ahead were delivered now");
    }
    let s = summarize(&lat);
    let peak = server.stats()?.peak_rss_mb;
    let idle = server.idle_rss_mb;
    let mut r = ScenarioResult::new(
        "backlog",
        format!(
            "{scheduled} deliveries scheduled an hour ahead ({m} messages with deliverAt to an \
             app with {e} endpoints), then {} messages one at a time to another app",
            c.backlog_probes
        ),
    );
    r.figures.push(
        Figure::new(&format!("peak RSS with {scheduled} scheduled"), peak, "MB")
            .goal(Goal::AtMost { max: 150.0 }),
    );
    r.figures.push(Figure::new(
        "create → receipt p50 meanwhile",
        s.p50_ms,
        "ms",
    ));
    r.figures.push(Figure::new(
        "create → receipt p99 meanwhile",
        s.p99_ms,
        "ms",
    ));
    r.figures.push(
        Figure::new("idle RSS (after start, before load)", idle, "MB")
            .goal(Goal::AtMost { max: 30.0 }),
    );
    r.details = json!({"scheduled_deliveries": scheduled, "schedule_s": schedule_s,
        "scheduled_per_s": scheduled as f64 / schedule_s,
        "rss_after_schedule_mb": rss_after_schedule,
        "receipt_ms": s, "ack_ms": summarize(&ack),
        "receiver_connections": recv.connections()});
    finish(server, &mut r)?;
    Ok(r)
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
