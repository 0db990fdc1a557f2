//! Delivery limits, end to end (guarantee 3): per-endpoint `maxConcurrency` and
//! `throttleRate` are enforced at the receiver, one dead endpoint never holds up the
//! others, and `--max-in-flight` caps attempts across all endpoints.
//!
//! Bounds are checked with margins and waits are generous: these run on loaded 2-core
//! machines. Only loopback receivers started here are ever targeted.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::receiver::{Behavior, Receiver};
use crate::support::{Api, Server};

/// Long enough for any of these tests' deliveries on a loaded machine.
const SETTLE: Duration = Duration::from_secs(60);

pub async fn loopback_server(extra: &[&str]) -> Server {
    let mut args = vec!["--allow-target", "127.0.0.0/8"];
    args.extend_from_slice(extra);
    Server::start_with(&args).await
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

/// Creates `n` messages in `app` from `tasks` concurrent senders; message `i` carries
/// `{"index": i}`. Returns the message ids by index.
pub async fn send_many(api: &Api, app: &str, n: usize, tasks: usize) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..tasks {
        let (api, app, next) = (api.clone(), app.to_string(), next.clone());
        set.spawn(async move {
            let mut sent = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return sent;
                }
                let msg = api
                    .create(
                        &format!("/api/v1/app/{app}/msg"),
                        json!({"eventType": "limits.test", "payload": {"index": i}}),
                    )
                    .await;
                sent.push((i, msg["id"].as_str().expect("message id").to_string()));
            }
        });
    }
    let mut ids = vec![String::new(); n];
    while let Some(done) = set.join_next().await {
        for (i, id) in done.expect("sender task") {
            ids[i] = id;
        }
    }
    ids
}

/// Distinct `webhook-id`s that reached `path`.
pub fn delivered_ids(rx: &Receiver, path: &str) -> HashSet<String> {
    rx.requests_to(path)
        .iter()
        .filter_map(|r| r.header("webhook-id"))
        .collect()
}

/// Arrival times at `path`, in order, as offsets from the first.
pub fn arrivals(rx: &Receiver, path: &str) -> Vec<Duration> {
    let mut at: Vec<Instant> = rx.requests_to(path).iter().map(|r| r.at).collect();
    at.sort();
    let first = at.first().copied();
    at.into_iter()
        .map(|t| t - first.expect("at least one arrival"))
        .collect()
}

/// The most arrivals within any one second, from sorted arrival offsets.
pub fn busiest_second(at: &[Duration]) -> usize {
    let window = Duration::from_secs(1);
    (0..at.len())
        .map(|i| at[i..].iter().take_while(|t| **t - at[i] < window).count())
        .max()
        .unwrap_or(0)
}

/// `maxConcurrency: 2` with a receiver that takes 200 ms: never more than 2 requests at
/// once, and 2 are actually used.
#[tokio::test(flavor = "multi_thread")]
async fn max_concurrency_is_enforced_and_used() {
    let server = loopback_server(&[]).await;
    let api = server.client();
    let rx = Receiver::start().await;
    rx.set("/slow", Behavior::Delay(Duration::from_millis(200), 200));
    let app = new_app(&api, "concurrency").await;
    new_endpoint(
        &api,
        &app,
        json!({"url": rx.url("/slow"), "maxConcurrency": 2}),
    )
    .await;

    let ids = send_many(&api, &app, 20, 4).await;
    let all = rx
        .wait_for(SETTLE, |r| delivered_ids(r, "/slow").len() >= 20)
        .await;
    let got = delivered_ids(&rx, "/slow");
    assert!(
        all,
        "only {} of 20 messages reached an endpoint with maxConcurrency 2 within {SETTLE:?}",
        got.len()
    );
    assert!(
        ids.iter().all(|id| got.contains(id)),
        "a message is missing"
    );
    let max = rx.max_concurrent("/slow");
    assert!(
        max <= 2,
        "maxConcurrency 2 not enforced: {max} requests were in flight at once"
    );
    assert_eq!(
        max, 2,
        "maxConcurrency 2 never used: deliveries went one at a time"
    );
    // 20 deliveries, 2 at a time, 200 ms each: the last one cannot start before ~1.8 s.
    let span = *arrivals(&rx, "/slow").last().unwrap();
    eprintln!("maxConcurrency 2: 20 deliveries arrived over {span:?}, max in flight {max}");
    assert!(
        span >= Duration::from_millis(1_500),
        "20 deliveries of 200 ms at concurrency 2 arrived within {span:?}"
    );
}

/// `throttleRate: 20`: in every 1-second window of arrival times at most 21 arrivals (20
/// + 1 for window edges: starts are 50 ms apart and a late one waits for its spacing),
/// at most ~60 in the first 3 s, and all arrive.
#[tokio::test(flavor = "multi_thread")]
async fn throttle_rate_paces_deliveries() {
    let server = loopback_server(&[]).await;
    let api = server.client();
    let rx = Receiver::start().await;
    let app = new_app(&api, "throttle").await;
    new_endpoint(
        &api,
        &app,
        json!({"url": rx.url("/paced"), "throttleRate": 20}),
    )
    .await;

    let ids = send_many(&api, &app, 100, 8).await;
    let all = rx
        .wait_for(SETTLE, |r| delivered_ids(r, "/paced").len() >= 100)
        .await;
    let got = delivered_ids(&rx, "/paced");
    assert!(
        all,
        "only {} of 100 messages reached a throttled endpoint within {SETTLE:?}",
        got.len()
    );
    assert!(
        ids.iter().all(|id| got.contains(id)),
        "a message is missing"
    );

    let at = arrivals(&rx, "/paced");
    let busiest = busiest_second(&at);
    let first3 = at.iter().filter(|t| **t < Duration::from_secs(3)).count();
    let span = *at.last().unwrap();
    eprintln!(
        "throttleRate 20: busiest 1 s window {busiest}, first 3 s {first3}, 100 over {span:?}"
    );
    assert!(
        busiest <= 21,
        "throttleRate 20 not enforced: {busiest} arrivals within one second"
    );
    assert!(
        first3 <= 66,
        "throttleRate 20 not enforced: {first3} arrivals in the first 3 s"
    );
    // 100 starts spaced 50 ms apart take at least 4.95 s.
    assert!(
        span >= Duration::from_millis(4_500),
        "100 deliveries at 20/s arrived within {span:?}"
    );
}

/// An application's `throttleRate` caps deliveries over all its endpoints together:
/// three endpoints of an app throttled to 20/s get 60 deliveries at about 20/s in all.
#[tokio::test(flavor = "multi_thread")]
async fn app_throttle_rate_paces_all_its_endpoints_together() {
    let server = loopback_server(&[]).await;
    let api = server.client();
    let rx = Receiver::start().await;
    let app = api
        .create(
            "/api/v1/app",
            json!({"name": "throttled app", "throttleRate": 20}),
        )
        .await["id"]
        .as_str()
        .expect("app id")
        .to_string();
    let paths = ["/app-paced-a", "/app-paced-b", "/app-paced-c"];
    for path in paths {
        new_endpoint(&api, &app, json!({"url": rx.url(path)})).await;
    }

    send_many(&api, &app, 20, 4).await;
    let all = rx
        .wait_for(SETTLE, |r| {
            paths.iter().map(|p| r.requests_to(p).len()).sum::<usize>() >= 60
        })
        .await;
    assert!(all, "not all 60 deliveries arrived within {SETTLE:?}");

    let mut at: Vec<Instant> = paths
        .iter()
        .flat_map(|p| rx.requests_to(p).into_iter().map(|r| r.at))
        .collect();
    at.sort();
    let at: Vec<Duration> = at.iter().map(|t| *t - at[0]).collect();
    let busiest = busiest_second(&at);
    let span = *at.last().unwrap();
    eprintln!(
        "app throttleRate 20 over 3 endpoints: busiest 1 s window {busiest}, 60 over {span:?}"
    );
    assert!(
        busiest <= 21,
        "app throttleRate 20 not enforced: {busiest} arrivals within one second"
    );
    // 60 starts spaced 50 ms apart take at least 2.95 s.
    assert!(
        span >= Duration::from_millis(2_700),
        "60 deliveries at 20/s arrived within {span:?}"
    );
}

/// Five endpoints that never answer (10 s timeout, no retries), saturated with work,
/// while a healthy endpoint of another application gets 500 messages: the healthy one
/// gets them all while the dead ones still hold their connections.
#[tokio::test(flavor = "multi_thread")]
async fn dead_endpoints_do_not_block_healthy_ones() {
    let server = loopback_server(&[]).await;
    let api = server.client();
    let rx = Receiver::start().await;
    let dead_paths: Vec<String> = (0..5).map(|i| format!("/dead{i}")).collect();
    let mut dead_apps = Vec::new();
    for path in &dead_paths {
        rx.set(path, Behavior::Hang);
        let app = new_app(&api, &format!("dead {path}")).await;
        new_endpoint(
            &api,
            &app,
            json!({"url": rx.url(path), "timeoutMs": 10_000,
                   "retryPolicy": {"kind": "none"}}),
        )
        .await;
        dead_apps.push(app);
    }
    let healthy = new_app(&api, "healthy").await;
    new_endpoint(&api, &healthy, json!({"url": rx.url("/healthy")})).await;

    // Fill every dead endpoint's slots first (at least the old default of 8 each; the
    // adaptive limit starts higher), with plenty more queued behind them.
    for app in &dead_apps {
        send_many(&api, app, 50, 4).await;
    }
    let saturated = rx
        .wait_for(Duration::from_secs(30), |r| {
            dead_paths.iter().all(|p| r.in_flight(p) >= 8)
        })
        .await;
    let held: Vec<usize> = dead_paths.iter().map(|p| rx.in_flight(p)).collect();
    assert!(
        saturated,
        "dead endpoints not saturated (in flight per endpoint: {held:?})"
    );

    let start = Instant::now();
    let ids = send_many(&api, &healthy, 500, 8).await;
    let sent_in = start.elapsed();
    let all = rx
        .wait_for(SETTLE, |r| delivered_ids(r, "/healthy").len() >= 500)
        .await;
    let took = start.elapsed();
    let dead_in_flight: Vec<usize> = dead_paths.iter().map(|p| rx.in_flight(p)).collect();
    let dead_seen: Vec<usize> = dead_paths.iter().map(|p| rx.requests_to(p).len()).collect();
    let got = delivered_ids(&rx, "/healthy");
    eprintln!(
        "isolation: 500 healthy deliveries in {took:?} (sent in {sent_in:?}); dead endpoints \
         in flight {dead_in_flight:?}, requests seen {dead_seen:?}"
    );
    assert!(
        all,
        "head-of-line blocking: only {} of 500 messages reached the healthy endpoint within \
         {SETTLE:?} while 5 dead endpoints hung (dead in flight {dead_in_flight:?})",
        got.len()
    );
    assert!(
        ids.iter().all(|id| got.contains(id)),
        "a message is missing"
    );
    // The dead endpoints were still busy the whole time: each has had requests, has
    // work left (50 each, at most the adaptive limit per 10 s) and holds connections now.
    for (i, path) in dead_paths.iter().enumerate() {
        assert!(dead_seen[i] >= 1, "{path} never got a request");
        assert!(
            dead_seen[i] < 50,
            "{path} already got all its 50 requests: the healthy endpoint was not \
             measured while the dead ones were stuck ({took:?})"
        );
    }
    assert!(
        dead_in_flight.iter().sum::<usize>() >= 1,
        "no dead endpoint holds a connection at the end: {dead_in_flight:?}"
    );
}

/// Twenty endpoints that already failed and now hang until their 10 s timeout, with
/// work queued for each, under `--max-in-flight 16`: a failing endpoint gets one request
/// at a time (not its eight), failing endpoints together at most half the slots, and a
/// healthy endpoint gets its 100 messages while they all still hang. Without those two
/// limits the dead endpoints would take all sixteen slots for ten seconds at a time.
#[tokio::test(flavor = "multi_thread")]
async fn failing_endpoints_hold_at_most_half_the_slots() {
    let server = loopback_server(&["--max-in-flight", "16"]).await;
    let api = server.client();
    let rx = Receiver::start().await;
    let dead_paths: Vec<String> = (0..20).map(|i| format!("/down{i}")).collect();
    let mut dead = Vec::new();
    for path in &dead_paths {
        rx.set(path, Behavior::Status(500, vec![]));
        let app = new_app(&api, &format!("down {path}")).await;
        let ep = new_endpoint(
            &api,
            &app,
            json!({"url": rx.url(path), "timeoutMs": 10_000,
                   "retryPolicy": {"kind": "none"}}),
        )
        .await;
        dead.push((app, ep));
    }
    let healthy = new_app(&api, "healthy").await;
    new_endpoint(&api, &healthy, json!({"url": rx.url("/up")})).await;

    // One failed attempt each makes them failing; then they stop answering at all.
    for (app, _) in &dead {
        send_many(&api, app, 1, 1).await;
    }
    for (app, ep) in &dead {
        let logged = tokio::time::timeout(SETTLE, async {
            loop {
                let (_, page) = api
                    .get(&format!("/api/v1/app/{app}/attempt/endpoint/{ep}"))
                    .await;
                if page["data"].as_array().is_some_and(|a| !a.is_empty()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(logged.is_ok(), "no attempt logged for {ep}");
    }
    for path in &dead_paths {
        rx.set(path, Behavior::Hang);
    }
    for (app, _) in &dead {
        send_many(&api, app, 5, 2).await;
    }
    let dead_in_flight = |r: &Receiver| dead_paths.iter().map(|p| r.in_flight(p)).sum::<usize>();
    assert!(
        rx.wait_for(SETTLE, |r| dead_in_flight(r) >= 8).await,
        "failing endpoints never held their half of the slots: {} in flight",
        dead_in_flight(&rx)
    );
    // Time for any more of them to start, if anything let them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = |r: &Receiver| {
        dead_paths
            .iter()
            .map(|p| r.requests_to(p).len())
            .sum::<usize>()
    };
    let seen_before = seen(&rx);

    let ids = send_many(&api, &healthy, 100, 8).await;
    let all = rx
        .wait_for(SETTLE, |r| delivered_ids(r, "/up").len() >= 100)
        .await;
    let got = delivered_ids(&rx, "/up");
    let per_dead: Vec<usize> = dead_paths.iter().map(|p| rx.max_concurrent(p)).collect();
    let held_now = dead_in_flight(&rx);
    eprintln!(
        "failing endpoints: {held_now} requests hanging, at most {per_dead:?} at once each; \
         healthy got {} of 100",
        got.len()
    );
    assert!(all, "healthy endpoint got only {} of 100", got.len());
    assert!(
        ids.iter().all(|id| got.contains(id)),
        "a message is missing"
    );
    assert_eq!(
        seen(&rx),
        seen_before,
        "a failing endpoint's request timed out and the next started before the healthy \
         endpoint got its messages: it waited for their slots"
    );
    // Phase one's 500s were one at a time too (one message each); these are the hangs.
    assert!(
        per_dead.iter().all(|&n| n <= 1),
        "a failing endpoint had more than one request at once: {per_dead:?}"
    );
    assert!(
        held_now <= 8,
        "failing endpoints hold {held_now} of 16 slots, more than half"
    );
}

/// `--max-in-flight 4`: ten endpoints, each answering after 300 ms, never see more than
/// four requests in progress between them, and four are used.
#[tokio::test(flavor = "multi_thread")]
async fn global_in_flight_cap_is_enforced() {
    let server = loopback_server(&["--max-in-flight", "4"]).await;
    let api = server.client();
    let rx = Receiver::start().await;
    let app = new_app(&api, "global cap").await;
    let paths: Vec<String> = (0..10).map(|i| format!("/cap{i}")).collect();
    for path in &paths {
        rx.set(path, Behavior::Delay(Duration::from_millis(300), 200));
        new_endpoint(&api, &app, json!({"url": rx.url(path)})).await;
    }
    // Each message fans out to all ten endpoints: 60 deliveries.
    let ids = send_many(&api, &app, 6, 2).await;
    let all = rx
        .wait_for(SETTLE, |r| {
            paths.iter().all(|p| delivered_ids(r, p).len() >= ids.len())
        })
        .await;
    let per_path: Vec<usize> = paths.iter().map(|p| delivered_ids(&rx, p).len()).collect();
    assert!(
        all,
        "not every delivery arrived within {SETTLE:?}: {per_path:?}"
    );
    let max = rx.max_concurrent_total();
    eprintln!("--max-in-flight 4: at most {max} requests in flight across 10 endpoints");
    assert!(
        max <= 4,
        "--max-in-flight 4 not enforced: {max} requests were in flight at once"
    );
    assert_eq!(max, 4, "--max-in-flight 4 never reached: {max}");
}

/// A throttled endpoint with a backlog must not hold global slots while it waits for its
/// pacing: with `--max-in-flight 4`, an endpoint throttled to 1/s with 20 messages queued
/// must leave room for another application's endpoint, which gets its 5 messages at once
/// (not after the throttled backlog, ~17 s).
#[tokio::test(flavor = "multi_thread")]
async fn throttled_backlog_does_not_hold_global_slots() {
    let server = loopback_server(&["--max-in-flight", "4"]).await;
    let api = server.client();
    let rx = Receiver::start().await;
    let slow = new_app(&api, "throttled").await;
    new_endpoint(
        &api,
        &slow,
        json!({"url": rx.url("/one-per-second"), "throttleRate": 1}),
    )
    .await;
    let other = new_app(&api, "other").await;
    new_endpoint(&api, &other, json!({"url": rx.url("/other")})).await;

    send_many(&api, &slow, 20, 4).await;
    assert!(
        rx.wait_for(Duration::from_secs(30), |r| !r
            .requests_to("/one-per-second")
            .is_empty())
            .await,
        "the throttled endpoint got nothing"
    );
    let start = Instant::now();
    let ids = send_many(&api, &other, 5, 1).await;
    let bound = Duration::from_secs(5);
    let all = rx
        .wait_for(bound, |r| delivered_ids(r, "/other").len() >= 5)
        .await;
    let took = start.elapsed();
    let paced = rx.requests_to("/one-per-second").len();
    eprintln!(
        "throttled backlog: other endpoint got {} of 5 in {took:?}; throttled endpoint \
         got {paced} meanwhile",
        delivered_ids(&rx, "/other").len()
    );
    assert!(
        all,
        "head-of-line blocking: an endpoint throttled to 1/s held the 4 global slots while \
         waiting for its pacing; another endpoint got {} of 5 messages within {bound:?}",
        delivered_ids(&rx, "/other").len()
    );
    let got = delivered_ids(&rx, "/other");
    assert!(
        ids.iter().all(|id| got.contains(id)),
        "a message is missing"
    );
    // The throttled endpoint keeps going at its rate: about one per second, no faster.
    assert!(
        rx.wait_for(Duration::from_secs(20), |r| r
            .requests_to("/one-per-second")
            .len()
            >= 5)
            .await,
        "the throttled endpoint stalled: {} deliveries",
        rx.requests_to("/one-per-second").len()
    );
    let at = arrivals(&rx, "/one-per-second");
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("throttleRate 1: gaps between arrivals {gaps:?}");
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(900)),
        "throttleRate 1 not kept: gaps between arrivals {gaps:?}"
    );
}

/// Adaptive concurrency (no `maxConcurrency`): a receiver that answers every request in
/// 20 ms, whatever the load, gets more than the old fixed default of 8 at once while a
/// backlog waits, its limit grows past where it starts, and every message arrives.
#[tokio::test(flavor = "multi_thread")]
async fn a_fast_receiver_gets_more_than_eight_at_once_by_default() {
    let server = loopback_server(&[]).await;
    let api = server.client();
    let rx = Receiver::start().await;
    rx.set("/fast", Behavior::Delay(Duration::from_millis(20), 200));
    let app = new_app(&api, "adaptive-fast").await;
    let ep = new_endpoint(&api, &app, json!({"url": rx.url("/fast")})).await;

    let n = 5_000;
    let ids = send_many(&api, &app, n, 32).await;
    let all = rx
        .wait_for(SETTLE, |r| delivered_ids(r, "/fast").len() >= n)
        .await;
    let got = delivered_ids(&rx, "/fast");
    assert!(
        all,
        "only {} of {n} messages arrived within {SETTLE:?}",
        got.len()
    );
    assert!(
        ids.iter().all(|id| got.contains(id)),
        "a message is missing"
    );
    let peak = rx.max_concurrent("/fast");
    let (_, stats) = api
        .get(&format!("/api/v1/app/{app}/endpoint/{ep}/stats"))
        .await;
    eprintln!(
        "adaptive, 20 ms receiver: {n} messages, peak {peak} at once, limit now {}",
        stats["concurrencyLimit"]
    );
    assert!(
        peak > 8,
        "the limit never grew past the default of 8 (peak {peak})"
    );
    assert!(
        peak <= 256,
        "more at once ({peak}) than --max-endpoint-concurrency's default"
    );
    let limit = stats["concurrencyLimit"].as_u64().expect("limit in stats");
    assert!(
        limit > u64::from(hookline_delivery::limiter::INITIAL_LIMIT),
        "stats show a limit of {limit}: it never grew"
    );
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "hookline_endpoint_concurrency_limit{{endpoint=\"{ep}\"}}"
        )),
        "no limit gauge for the endpoint in /metrics"
    );
}

/// A receiver that serves 4 at once and answers 503 to any beyond: the limit comes down
/// to what it serves (the receiver sees at most 5 at once once it has settled), and every
/// message is delivered, the refused ones by their retries.
#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_refusing_beyond_four_gets_at_most_five_at_once() {
    let server = loopback_server(&[]).await;
    let api = server.client();
    let rx = Receiver::start().await;
    rx.set(
        "/four",
        Behavior::Capacity {
            max: 4,
            delay: Duration::from_millis(20),
        },
    );
    let app = new_app(&api, "adaptive-four").await;
    let ep = new_endpoint(
        &api,
        &app,
        json!({"url": rx.url("/four"),
               "retryPolicy": {"kind": "fixed", "intervalSeconds": 1, "giveUpAfterSeconds": 600}}),
    )
    .await;

    let n = 600;
    send_many(&api, &app, n, 16).await;
    let stats = format!("/api/v1/app/{app}/endpoint/{ep}/stats");
    let succeeded = |s: &Value| s["success"].as_u64().unwrap_or(0) as usize;
    // Settled once a third is delivered: from then on, the peak is what adaptation holds.
    get_within(&api, &stats, SETTLE, |s| succeeded(s) >= n / 3).await;
    let early = rx.max_concurrent("/four");
    rx.reset_max_concurrent("/four");
    let done = get_within(&api, &stats, SETTLE, |s| succeeded(s) >= n).await;
    assert_eq!(
        succeeded(&done),
        n,
        "not every message was delivered: {done}"
    );
    assert_eq!(done["fail"], 0, "{done}");
    let settled = rx.max_concurrent("/four");
    let refused = rx.requests_to("/four").len() - n;
    eprintln!(
        "receiver serving 4: peak {early} before settling, {settled} after; {refused} requests refused"
    );
    assert!(
        settled <= 5,
        "after settling the receiver still saw {settled} requests at once"
    );
}

/// GETs `path` until `ready` holds for its body or `within` has passed; the last body.
async fn get_within(
    api: &Api,
    path: &str,
    within: Duration,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let end = Instant::now() + within;
    loop {
        let (status, body) = api.get(path).await;
        if (status == 200 && ready(&body)) || Instant::now() > end {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
