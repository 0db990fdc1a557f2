//! Adaptive concurrency (the adaptive-concurrency issue): one application with one
//! endpoint, the shape of a platform that sends everything to one big customer.
//!
//! - `hot`: a receiver that answers in about 1 ms; default settings against a fixed
//!   `maxConcurrency: 256`.
//! - `hot-slow`: the same with a receiver that answers in 50 ms.
//! - `knee`: a receiver that serves 16 requests at a time (the rest queue, so its latency
//!   grows past 16 at once); default settings against a sweep of fixed `maxConcurrency`.
//!
//! Since adaptive concurrency an explicit `maxConcurrency` is the ceiling the limit adapts
//! under; the reference runs' servers get `HOOKLINE_TEST_FIXED_MAX_CONCURRENCY=1`, which
//! makes it the fixed limit it was before, the reference the goals name.

use super::*;

/// One run against one endpoint.
#[derive(Debug, Clone, Serialize)]
struct Run {
    settings: serde_json::Value,
    delivered_per_s: f64,
    latency_ms: crate::stats::Summary,
    /// hookline's CPU (and PostgreSQL's, on it) per delivered message.
    cpu_us_per_msg: f64,
    /// The most requests the receiver had in flight at once.
    receiver_peak: u64,
    /// Attempts that did not succeed (timeouts, refusals).
    attempts_not_delivered: f64,
    /// The endpoint's adaptive limit, sampled every 100 ms: (seconds, limit).
    limit_samples: Vec<(f64, f64)>,
    /// Mean create → receipt of the messages received in each 100 ms: (seconds, ms).
    latency_by_receipt: Vec<(f64, f64)>,
}

/// Messages of `knee`'s runs (it runs six): enough to settle, few enough to be quick.
pub(super) fn knee_messages(ctx: &Ctx) -> usize {
    (ctx.counts.messages / 5).max(200)
}

/// What one run of the one-endpoint load gave.
pub(super) struct Load {
    /// Create request → first receipt of each message, in ms.
    pub(super) latencies: Vec<f64>,
    /// When each message first arrived.
    pub(super) received: Vec<Instant>,
    /// Seconds from `t0` to the last arrival.
    pub(super) elapsed: f64,
}

/// `n` messages to app "hot" from the usual clients, spread round-robin over `apis`,
/// waited for at the receiver's path `path` (`since`: its answers before); then 200 ms
/// more, for the last attempts' reports, which are written just after their receipts.
pub(super) async fn one_endpoint_load(
    ctx: &Ctx,
    apis: &[Api],
    recv: &Receiver,
    since: u64,
    path: u32,
    n: usize,
    t0: Instant,
) -> anyhow::Result<Load> {
    let sent = send_messages(
        apis,
        &ctx.payloads,
        0,
        n,
        ctx.counts.clients,
        |_| "hot".to_string(),
        None,
    )
    .await?;
    let received = wait_for_seqs(recv, since, 0, n, Some(path), ctx.wait_budget(n)).await?;
    let last = *received.iter().max().expect("some");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let latencies = sent
        .iter()
        .zip(&received)
        .map(|(s, at)| at.saturating_duration_since(s.start).as_secs_f64() * 1e3)
        .collect();
    Ok(Load {
        latencies,
        received,
        elapsed: last.duration_since(t0).as_secs_f64(),
    })
}

/// Attempts that did not succeed (failed or throttled), over every one of `apis`.
pub(super) async fn attempts_not_delivered(apis: &[Api]) -> anyhow::Result<f64> {
    let mut sum = 0.0;
    for api in apis {
        let v = api
            .counters(&[
                "hookline_attempts_total{outcome=\"failed\"}",
                "hookline_attempts_total{outcome=\"throttled\"}",
            ])
            .await?;
        sum += v.iter().sum::<f64>();
    }
    Ok(sum)
}

/// Runs `n` messages from the usual clients to a fresh server whose one endpoint is `url`
/// (receiver path `path`) with `settings`. An explicit `maxConcurrency` there is a fixed
/// limit, as before adaptive concurrency (`HOOKLINE_TEST_FIXED_MAX_CONCURRENCY`): these
/// runs are the references the adaptive limit is measured against, and a ceiling would
/// adapt under it the same way.
async fn run(
    ctx: &Ctx,
    recv: &Receiver,
    label: &str,
    url: String,
    path: u32,
    settings: serde_json::Value,
    n: usize,
) -> anyhow::Result<(Run, ServerNumbers)> {
    let fixed: &[(&str, &str)] = match settings.get("maxConcurrency") {
        Some(_) => &[("HOOKLINE_TEST_FIXED_MAX_CONCURRENCY", "1")],
        None => &[],
    };
    let server = ctx.server_with_env(label, fixed).await?;
    server.api.create_app("hot").await?;
    let mut endpoint = settings.clone();
    endpoint["url"] = url.into();
    server.api.create_endpoint("hot", endpoint).await?;
    let (cpu0, db0) = (server.stats()?.cpu_s, server.db_cpu_s().unwrap_or(0.0));
    recv.take_busy_peak();
    let since = recv.answered();
    let t0 = Instant::now();
    // The limit over time, from `/metrics`, while the load runs.
    let samples = Arc::new(std::sync::Mutex::new(Vec::<(f64, f64)>::new()));
    let sampling = {
        let (api, samples) = (server.api.clone(), samples.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(v) = api.counters(&["hookline_endpoint_concurrency_limit"]).await {
                    samples
                        .lock()
                        .expect("samples")
                        .push((t0.elapsed().as_secs_f64(), v[0]));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let apis = std::slice::from_ref(&server.api);
    let load = one_endpoint_load(ctx, apis, recv, since, path, n, t0).await;
    sampling.abort();
    let Load {
        latencies,
        received,
        elapsed,
    } = load?;
    let cpu = server.stats()?.cpu_s - cpu0 + server.db_cpu_s().unwrap_or(0.0) - db0;
    let not_delivered = attempts_not_delivered(apis).await?;
    let limit_samples = std::mem::take(&mut *samples.lock().expect("samples"));
    let mut buckets: std::collections::BTreeMap<u64, (f64, u32)> = Default::default();
    for (at, ms) in received.iter().zip(&latencies) {
        let b = buckets
            .entry((at.duration_since(t0).as_secs_f64() * 10.0) as u64)
            .or_default();
        b.0 += ms;
        b.1 += 1;
    }
    let latency_by_receipt = buckets
        .into_iter()
        .map(|(b, (sum, n))| (b as f64 / 10.0, sum / f64::from(n)))
        .collect();
    let run = Run {
        settings,
        delivered_per_s: n as f64 / elapsed,
        latency_ms: summarize(&latencies),
        cpu_us_per_msg: cpu * 1e6 / n as f64,
        receiver_peak: recv.take_busy_peak(),
        attempts_not_delivered: not_delivered,
        limit_samples,
        latency_by_receipt,
    };
    let mut numbers = ServerNumbers {
        idle_rss_mb: server.idle_rss_mb,
        peak_rss_mb: 0.0,
        cpu_s: 0.0,
        db_cpu_s: None,
    };
    let mut r = ScenarioResult::new(label, String::new());
    finish(server, &mut r)?;
    if let Some(s) = r.server {
        numbers = s;
    }
    eprintln!(
        "    {label} {}: {:.0} msg/s, p50 {:.1} ms, p99 {:.1} ms, {:.0} us/msg, receiver peak {}",
        run.settings,
        run.delivered_per_s,
        run.latency_ms.p50_ms,
        run.latency_ms.p99_ms,
        run.cpu_us_per_msg,
        run.receiver_peak
    );
    Ok((run, numbers))
}

/// `hot` or `hot-slow`: default settings, then `maxConcurrency: 256`, on a receiver that
/// answers in `answer_ms`.
async fn hot_at(ctx: &Ctx, name: &str, answer_ms: u64) -> anyhow::Result<ScenarioResult> {
    let c = &ctx.counts;
    let n = c.messages;
    let recv = Receiver::start().await?;
    let (adaptive, numbers) = run(
        ctx,
        &recv,
        name,
        recv.slow_url(answer_ms, 0),
        0,
        json!({}),
        n,
    )
    .await?;
    crate::settle(ctx.quick).await;
    let (fixed, _) = run(
        ctx,
        &recv,
        &format!("{name}-256"),
        recv.slow_url(answer_ms, 1),
        1,
        json!({"maxConcurrency": 256}),
        n,
    )
    .await?;
    let mut r = ScenarioResult::new(
        name,
        format!(
            "{n} messages of {PAYLOAD_BYTES} B from {} clients to one application with one \
             endpoint, a receiver answering in {answer_ms} ms; default settings, then \
             a fixed maxConcurrency 256 on a fresh server; create request → receipt",
            c.clients
        ),
    );
    let ratio = adaptive.delivered_per_s / fixed.delivered_per_s;
    r.figures.push(
        Figure::new(
            "delivered, default settings",
            adaptive.delivered_per_s,
            "msg/s",
        )
        .ratio(ratio)
        .goal(Goal::RatioOfAtLeast {
            min: 0.9,
            of: "fixed maxConcurrency 256",
        }),
    );
    if answer_ms <= 1 {
        r.figures.push(
            Figure::new(
                "create → receipt p99, default",
                adaptive.latency_ms.p99_ms,
                "ms",
            )
            .goal(Goal::AtMost { max: 25.0 }),
        );
    }
    r.figures.push(Figure::new(
        "CPU per message, default",
        adaptive.cpu_us_per_msg,
        "us",
    ));
    r.figures.push(Figure::new(
        "delivered, fixed maxConcurrency 256",
        fixed.delivered_per_s,
        "msg/s",
    ));
    r.figures.push(Figure::new(
        "CPU per message, fixed maxConcurrency 256",
        fixed.cpu_us_per_msg,
        "us",
    ));
    r.server = Some(numbers);
    r.details = json!({"messages": n, "answer_ms": answer_ms,
        "runs": [adaptive, fixed], "default_over_256": ratio});
    Ok(r)
}

pub async fn hot(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    hot_at(ctx, "hot", 1).await
}

pub async fn hot_slow(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    hot_at(ctx, "hot-slow", 50).await
}

/// The receiver's knee: it serves this many at once.
pub(super) const KNEE: usize = 16;
/// How long it takes over each request.
pub(super) const KNEE_SERVE: Duration = Duration::from_millis(10);

pub async fn knee(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let c = &ctx.counts;
    let n = knee_messages(ctx);
    let recv = Receiver::start_with_knee(KNEE, KNEE_SERVE).await?;
    let (adaptive, numbers) = run(ctx, &recv, "knee", recv.knee_url(0), 0, json!({}), n).await?;
    let mut sweep = Vec::new();
    for (i, limit) in [8u32, 12, 16, 24, 32].into_iter().enumerate() {
        crate::settle(ctx.quick).await;
        let path = i as u32 + 1;
        let (fixed, _) = run(
            ctx,
            &recv,
            &format!("knee-{limit}"),
            recv.knee_url(path),
            path,
            json!({"maxConcurrency": limit}),
            n,
        )
        .await?;
        sweep.push(fixed);
    }
    let best = sweep.iter().map(|s| s.delivered_per_s).fold(0.0, f64::max);
    // Where the limit settled: the median of the second half of the samples.
    let mut tail: Vec<f64> = adaptive
        .limit_samples
        .iter()
        .skip(adaptive.limit_samples.len() / 2)
        .map(|(_, l)| *l)
        .collect();
    tail.sort_by(f64::total_cmp);
    let settled = tail.get(tail.len() / 2).copied().unwrap_or(f64::NAN);
    let mut r = ScenarioResult::new(
        "knee",
        format!(
            "{n} messages from {} clients to one endpoint whose receiver serves {KNEE} at a \
             time, {} ms each (the rest queue); default settings, then fixed maxConcurrency 8, 12, \
             16, 24 and 32, each on a fresh server",
            c.clients,
            KNEE_SERVE.as_millis()
        ),
    );
    r.figures.push(
        Figure::new(
            "delivered, default settings",
            adaptive.delivered_per_s,
            "msg/s",
        )
        .ratio(adaptive.delivered_per_s / best)
        .goal(Goal::RatioOfAtLeast {
            min: 0.9,
            of: "best fixed",
        }),
    );
    r.figures.push(Figure::new(
        "limit settled at (median, second half)",
        settled,
        "attempts",
    ));
    r.figures.push(
        Figure::new(
            "attempts not delivered, default",
            adaptive.attempts_not_delivered,
            "attempts",
        )
        .goal(Goal::AtMost { max: 0.0 }),
    );
    r.figures
        .push(Figure::new("best fixed maxConcurrency", best, "msg/s"));
    let chart = ctx.out.join("knee-limit.svg");
    charts::rate_over_time(
        &chart,
        &format!("knee: adaptive limit and latency over time (receiver serves {KNEE} at a time)"),
        "limit (attempts) / mean create → receipt (ms)",
        &[
            Series {
                name: "limit".into(),
                points: adaptive.limit_samples.clone(),
            },
            Series {
                name: "mean create → receipt, ms".into(),
                points: adaptive.latency_by_receipt.clone(),
            },
        ],
    )?;
    r.charts = vec![file_name(&chart)];
    r.server = Some(numbers);
    r.details = json!({"messages": n, "knee": KNEE, "serve_ms": KNEE_SERVE.as_millis() as u64,
        "adaptive": adaptive, "sweep": sweep, "settled_limit": settled});
    Ok(r)
}
