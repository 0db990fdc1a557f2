//! Crash safety, end to end (guarantees 1 and 2): a 2xx answer to "create message" means
//! committed, `kill -9` at any moment loses no acknowledged message, and every message
//! is delivered at least once (receivers deduplicate by `webhook-id`).
//!
//! The kill moment is random (seeded from the clock; `HOOKLINE_TEST_SEED=<n>` replays
//! one). Both tests wait for delivery for less than the dispatcher's 120 s lease, so a
//! delivery left "sending" by the killed process and not recovered at restart fails them.
//! Only loopback receivers started here are ever targeted.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::delivery_limits::{loopback_server, new_app, new_endpoint};
use crate::receiver::{Behavior, Receiver};
use crate::support::{Api, Server};

/// Messages per test.
const N: usize = 2_000;
/// Concurrent senders.
const SENDERS: usize = 8;
/// How long every acknowledged message may take to arrive after the restart; below the
/// 120 s lease on purpose (see the module doc).
const DELIVER_WITHIN: Duration = Duration::from_secs(60);

/// A small xorshift generator: the test needs a random moment, not good randomness.
struct Rng(u64);

impl Rng {
    fn from_clock(test: &str) -> Rng {
        let seed = std::env::var("HOOKLINE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("clock after 1970")
                    .as_nanos() as u64
            });
        eprintln!("{test}: HOOKLINE_TEST_SEED={seed}");
        Rng(seed | 1)
    }

    /// A number in `lo..hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        for _ in 0..4 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
        }
        lo + (self.0 % (hi - lo) as u64) as usize
    }
}

fn event_id(i: usize) -> String {
    format!("crash-{i}")
}

/// What the senders learned.
#[derive(Default)]
struct Ledger {
    /// Answered 2xx: message index -> message id.
    acked: Mutex<HashMap<usize, String>>,
    /// The request failed (connection reset or refused by the kill): may or may not exist.
    unknown: Mutex<Vec<usize>>,
    acked_count: AtomicUsize,
    /// Next index to send.
    next: AtomicUsize,
    /// Set once a request fails: the server is gone, stop sending.
    down: AtomicBool,
}

/// One create-message request that never panics on a transport error.
async fn try_send(api: &Api, app: &str, i: usize) -> Result<(u16, Value), reqwest::Error> {
    let resp = api
        .http
        .post(format!("{}/api/v1/app/{app}/msg", api.base))
        .bearer_auth(api.token.as_deref().expect("token"))
        .timeout(Duration::from_secs(30))
        .json(&json!({
            "eventType": "crash.test",
            "eventId": event_id(i),
            "payload": {"index": i, "pad": "x".repeat(64)}
        }))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// Starts `SENDERS` tasks that send indices from `ledger.next` up to `N` until done or
/// until a request fails.
fn spawn_senders(api: &Api, app: &str, ledger: &Arc<Ledger>) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for _ in 0..SENDERS {
        let (api, app, ledger) = (api.clone(), app.to_string(), ledger.clone());
        set.spawn(async move {
            while !ledger.down.load(Ordering::SeqCst) {
                let i = ledger.next.fetch_add(1, Ordering::SeqCst);
                if i >= N {
                    return;
                }
                match try_send(&api, &app, i).await {
                    Ok((202, body)) => {
                        let id = body["id"].as_str().expect("message id").to_string();
                        ledger.acked.lock().unwrap().insert(i, id);
                        ledger.acked_count.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok((status, body)) if status >= 500 => {
                        eprintln!("message {i}: {status} {body}; not acknowledged");
                        ledger.unknown.lock().unwrap().push(i);
                    }
                    Ok((status, body)) => panic!("message {i}: unexpected {status} {body}"),
                    Err(_) => {
                        ledger.unknown.lock().unwrap().push(i);
                        ledger.down.store(true, Ordering::SeqCst);
                    }
                }
            }
        });
    }
    set
}

async fn join_all(mut set: JoinSet<()>) {
    while let Some(r) = set.join_next().await {
        r.expect("sender task");
    }
}

/// After a restart: resends every message whose fate is unknown (409 means the killed
/// process had committed it: look its id up by eventId), then sends the rest. Returns
/// how many unknown ones turned out committed.
async fn finish_sending(api: &Api, app: &str, ledger: &Arc<Ledger>) -> usize {
    let unknown: Vec<usize> = std::mem::take(&mut *ledger.unknown.lock().unwrap());
    let mut committed = 0;
    for i in unknown {
        let (status, body) = try_send(api, app, i)
            .await
            .unwrap_or_else(|e| panic!("resending message {i} after restart: {e}"));
        let id = match status {
            202 => body["id"].as_str().expect("message id").to_string(),
            409 => {
                committed += 1;
                let path = format!("/api/v1/app/{app}/msg/{}", event_id(i));
                let (s, msg) = api.get(&path).await;
                assert_eq!(
                    s,
                    200,
                    "409 for eventId {} but GET {path}: {msg}",
                    event_id(i)
                );
                assert_eq!(msg["payload"]["index"], json!(i), "stored payload: {msg}");
                msg["id"].as_str().expect("message id").to_string()
            }
            _ => panic!("resending message {i} after restart: {status} {body}"),
        };
        ledger.acked.lock().unwrap().insert(i, id);
    }
    ledger.down.store(false, Ordering::SeqCst);
    join_all(spawn_senders(api, app, ledger)).await;
    assert!(
        ledger.unknown.lock().unwrap().is_empty(),
        "sends failed after the restart"
    );
    committed
}

/// `webhook-id` -> how many times it arrived, and the index its body carried.
fn received(rx: &Receiver, path: &str) -> HashMap<String, (usize, usize)> {
    let mut out: HashMap<String, (usize, usize)> = HashMap::new();
    for r in rx.requests_to(path) {
        let id = r.header("webhook-id").expect("webhook-id header");
        let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
        let index = body["index"].as_u64().expect("index in payload") as usize;
        let e = out.entry(id).or_insert((0, index));
        e.0 += 1;
        assert_eq!(e.1, index, "one webhook-id arrived with two payloads");
    }
    out
}

/// Waits until every acknowledged message reached `path` at least once; asserts none is
/// missing and every body is the one sent; prints the duplicates.
async fn assert_all_delivered(test: &str, rx: &Receiver, path: &str, ledger: &Ledger) {
    let acked: HashMap<usize, String> = ledger.acked.lock().unwrap().clone();
    assert_eq!(acked.len(), N, "every message is acknowledged by now");
    let distinct: HashSet<&String> = acked.values().collect();
    assert_eq!(distinct.len(), N, "two indices share a message id");
    let start = Instant::now();
    let mut got = received(rx, path);
    while start.elapsed() < DELIVER_WITHIN && acked.values().any(|id| !got.contains_key(id)) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        got = received(rx, path);
    }
    let mut missing: Vec<(usize, &String)> = acked
        .iter()
        .filter(|(_, id)| !got.contains_key(*id))
        .map(|(i, id)| (*i, id))
        .collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "{test}: {} acknowledged messages never delivered within {DELIVER_WITHIN:?} after \
         the restart (first: {:?})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    for (i, id) in &acked {
        assert_eq!(got[id].1, *i, "{test}: {id} delivered with another payload");
    }
    let unexpected: Vec<&String> = got
        .keys()
        .filter(|id| !distinct.contains(id))
        .take(5)
        .collect();
    assert!(
        unexpected.is_empty(),
        "{test}: deliveries of messages nobody sent: {unexpected:?}"
    );
    let dup_ids = got.values().filter(|(n, _)| *n > 1).count();
    let extra: usize = got.values().map(|(n, _)| n - 1).sum();
    eprintln!(
        "{test}: all {N} delivered {:?} after the restart; {dup_ids} delivered more than \
         once ({extra} extra requests)",
        start.elapsed()
    );
}

async fn setup(server: &Server, rx: &Receiver, path: &str, endpoint: Value) -> String {
    let api = server.client();
    let app = new_app(&api, "crash").await;
    let mut body = endpoint;
    body["url"] = json!(rx.url(path));
    new_endpoint(&api, &app, body).await;
    app
}

/// SIGKILL while messages are being created (and delivered), restart on the same data
/// dir, finish: every acknowledged message is delivered at least once.
#[tokio::test(flavor = "multi_thread")]
async fn kill_during_sending_loses_no_acknowledged_message() {
    const TEST: &str = "kill during sending";
    let mut rng = Rng::from_clock(TEST);
    let mut server = loopback_server(&[]).await;
    let rx = Receiver::start().await;
    rx.set("/c", Behavior::Delay(Duration::from_millis(5), 200));
    let app = setup(&server, &rx, "/c", json!({})).await;

    let kill_at = rng.range(100, 1_800);
    let ledger = Arc::new(Ledger::default());
    let started = Instant::now();
    let senders = spawn_senders(&server.client(), &app, &ledger);
    while ledger.acked_count.load(Ordering::SeqCst) < kill_at {
        assert!(
            !ledger.down.load(Ordering::SeqCst) && started.elapsed() < DELIVER_WITHIN,
            "{TEST}: sending failed or stalled before the kill"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.kill().await;
    let acked_at_kill = ledger.acked_count.load(Ordering::SeqCst);
    let delivered_at_kill = rx.count();
    join_all(senders).await;
    assert!(
        acked_at_kill < N,
        "{TEST}: all messages were acknowledged before the kill; nothing was tested"
    );
    let unknown = ledger.unknown.lock().unwrap().len();
    eprintln!(
        "{TEST}: killed after {:?}: {acked_at_kill} acknowledged, {unknown} requests cut \
         off, {delivered_at_kill} requests delivered",
        started.elapsed()
    );

    server.restart().await;
    let api = server.client();
    let committed = finish_sending(&api, &app, &ledger).await;
    eprintln!("{TEST}: {committed} of the {unknown} cut-off messages had been committed");
    assert_all_delivered(TEST, &rx, "/c", &ledger).await;
}

/// All messages acknowledged, then SIGKILL while they are being delivered; after the
/// restart every one is delivered at least once.
#[tokio::test(flavor = "multi_thread")]
async fn kill_during_delivery_loses_nothing() {
    const TEST: &str = "kill during delivery";
    let mut rng = Rng::from_clock(TEST);
    let mut server = loopback_server(&[]).await;
    let rx = Receiver::start().await;
    // Slower than sending, so delivery is still under way when sending is done.
    rx.set("/d", Behavior::Delay(Duration::from_millis(10), 200));
    let app = setup(&server, &rx, "/d", json!({"maxConcurrency": 2})).await;

    let ledger = Arc::new(Ledger::default());
    let started = Instant::now();
    join_all(spawn_senders(&server.client(), &app, &ledger)).await;
    assert_eq!(
        ledger.acked_count.load(Ordering::SeqCst),
        N,
        "every send succeeds"
    );
    let sent_in = started.elapsed();
    let delivered_when_sent = rx.count();
    assert!(
        delivered_when_sent < N * 3 / 4,
        "{TEST}: {delivered_when_sent} of {N} delivered by the time sending finished; \
         too little left to kill during"
    );
    let kill_at = rng.range(delivered_when_sent + 20, (delivered_when_sent + N) / 2 + 21);
    assert!(
        rx.wait_for(DELIVER_WITHIN, |r| r.count() >= kill_at).await,
        "{TEST}: delivery stalled before {kill_at} requests"
    );
    server.kill().await;
    let delivered_at_kill = rx.count();
    eprintln!(
        "{TEST}: sent {N} in {sent_in:?} ({delivered_when_sent} delivered by then); killed \
         after {:?} with {delivered_at_kill} requests delivered",
        started.elapsed()
    );
    assert!(
        delivered_at_kill < N,
        "{TEST}: everything was delivered before the kill; nothing was tested"
    );

    server.restart().await;
    assert_all_delivered(TEST, &rx, "/d", &ledger).await;
}
