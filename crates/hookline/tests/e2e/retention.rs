//! Retention (`--retention`, `payloadRetentionPeriod`/`Hours`) and `hookline backup`,
//! against the real server under load.
//!
//! The retention run lasts 25 s rather than the minute, to keep the suite's time:
//! with a 5 s retention, pruned every second, that is four retention windows after the
//! first, enough to see the database stop growing (the figures are printed) while
//! the load keeps adding a message every 20 ms.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::receiver::{Behavior, Receiver};
use crate::support::{app_with_endpoint, hookline_cli, on_postgres, Api, Server};

/// How long the retention test keeps the load on.
const LOAD_FOR: Duration = Duration::from_secs(25);

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Every item of a listing, following its iterator.
async fn list_all(api: &Api, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut iterator: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{path}{sep}limit=250");
        if let Some(it) = &iterator {
            url.push_str(&format!("&iterator={it}"));
        }
        let (status, page) = api.get(&url).await;
        assert_eq!(status, 200, "{url}: {page}");
        out.extend(page["data"].as_array().unwrap().iter().cloned());
        if page["done"].as_bool().unwrap_or(true) {
            return out;
        }
        iterator = page["iterator"].as_str().map(str::to_string);
    }
}

/// Posts a message every `every` until `stop`, recording each acknowledged id.
fn steady_load(
    api: Api,
    app: String,
    every: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
    acked: Arc<Mutex<Vec<(String, Instant)>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        let mut n = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            tick.tick().await;
            n += 1;
            let body = json!({
                "eventType": "load.tick",
                "payload": {"n": n, "pad": "x".repeat(1000)},
            });
            let (status, msg) = api.post(&format!("/api/v1/app/{app}/msg"), body).await;
            assert_eq!(status, 202, "{msg}");
            let id = msg["id"].as_str().unwrap().to_string();
            acked.lock().unwrap().push((id, Instant::now()));
        }
    })
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_messages_and_attempts_go_while_owed_deliveries_stay_and_the_database_stops_growing() {
    let receiver = Receiver::start().await;
    receiver.set("/down", Behavior::Status(500, vec![]));
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8", "--retention", "5s"]).await;
    let api = server.client();
    let (app, up) = app_with_endpoint(&api, json!({"url": receiver.url("/up")})).await;
    // An endpoint that is down, retried in an hour: its deliveries stay pending.
    let (down_app, _) = app_with_endpoint(
        &api,
        json!({
            "url": receiver.url("/down"),
            "retryPolicy": {"kind": "fixed", "intervalSeconds": 3600, "giveUpAfterSeconds": 86400},
        }),
    )
    .await;
    let mut owed = Vec::new();
    for i in 0..3 {
        let m = api
            .create(
                &format!("/api/v1/app/{down_app}/msg"),
                json!({"eventType": "kept", "payload": {"i": i}}),
            )
            .await;
        owed.push(m["id"].as_str().unwrap().to_string());
    }

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let load = steady_load(
        api.clone(),
        app.clone(),
        Duration::from_millis(20),
        stop.clone(),
        acked.clone(),
    );
    let db = server.data_dir.join("hookline.sqlite");
    let started = Instant::now();
    let mut sizes = Vec::new();
    while started.elapsed() < LOAD_FOR {
        tokio::time::sleep(Duration::from_secs(1)).await;
        sizes.push((
            started.elapsed().as_secs(),
            file_size(&db),
            file_size(&server.data_dir.join("hookline.sqlite-wal")),
        ));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    let rate = acked.len() as f64 / LOAD_FOR.as_secs_f64();
    println!(
        "retention e2e: {} messages acknowledged in {LOAD_FOR:?} ({rate:.0}/s) with --retention 5s",
        acked.len()
    );
    if on_postgres() {
        println!("database file sizes: not measured on PostgreSQL (plain DELETE, autovacuum)");
    } else {
        for (t, main, wal) in &sizes {
            println!("  t={t:>2}s  hookline.sqlite {main:>9} bytes  WAL {wal:>9} bytes");
        }
    }

    // Old messages are gone, with their attempts...
    let (first, _) = &acked[0];
    let (status, body) = api.get(&format!("/api/v1/app/{app}/msg/{first}")).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = api
        .get(&format!("/api/v1/app/{app}/attempt/msg/{first}"))
        .await;
    assert_eq!(status, 404);
    // ... and what is left is the last few seconds' (retention, plus up to a pass
    // interval, plus slack for this machine).
    let now = Utc::now();
    let horizon = chrono::Duration::seconds(5 + 1 + 4);
    let attempts = list_all(&api, &format!("/api/v1/app/{app}/attempt/endpoint/{up}")).await;
    assert!(!attempts.is_empty());
    let oldest_attempt = attempts
        .iter()
        .map(|a| {
            a["timestamp"]
                .as_str()
                .unwrap()
                .parse::<DateTime<Utc>>()
                .unwrap()
        })
        .min()
        .unwrap();
    assert!(
        now - oldest_attempt < horizon,
        "an attempt from {oldest_attempt} is still listed at {now}"
    );
    let left = list_all(&api, &format!("/api/v1/app/{app}/msg?with_content=false")).await;
    println!(
        "  left after the run: {} messages, {} attempts (of {} sent)",
        left.len(),
        attempts.len(),
        acked.len()
    );
    assert!(
        (left.len() as f64) < rate * 10.0 && left.len() * 2 < acked.len(),
        "{} messages left of {}",
        left.len(),
        acked.len()
    );

    // Messages still owed a delivery are untouched, with their attempt so far.
    for id in &owed {
        let (status, body) = api.get(&format!("/api/v1/app/{down_app}/msg/{id}")).await;
        assert_eq!(status, 200, "{body}");
        let (_, eps) = api
            .get(&format!("/api/v1/app/{down_app}/msg/{id}/endpoint"))
            .await;
        assert_eq!(eps["data"][0]["statusText"], "pending", "{eps}");
        let (_, tried) = api
            .get(&format!("/api/v1/app/{down_app}/attempt/msg/{id}"))
            .await;
        assert_eq!(tried["data"].as_array().unwrap().len(), 1, "{tried}");
    }

    // The database stops growing after the first windows: from t=12 s on it may move
    // within reuse and reclaim, but not grow with the load (without retention it would
    // more than double by the end).
    if !on_postgres() {
        let at = |t: u64| sizes.iter().find(|s| s.0 >= t).unwrap().1;
        let settled = at(12);
        let last = sizes.iter().rev().take(5).map(|s| s.1).max().unwrap();
        println!("  database file: {settled} bytes at t=12s, at most {last} bytes in the last 5 s");
        assert!(
            (last as f64) < settled as f64 * 1.5,
            "the database grew from {settled} to {last} bytes"
        );
    }

    // /metrics counts what went, and how long batches held the database.
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for kind in ["message", "delivery", "attempt"] {
        let n = metric(&text, &format!("hookline_pruned_total{{kind=\"{kind}\"}}"));
        println!("  hookline_pruned_total{{kind=\"{kind}\"}} {n}");
        assert!(n > 0.0, "no {kind} counted as pruned");
    }
    let fast = metric(
        &text,
        "hookline_retention_batch_seconds_bucket{le=\"0.01\"}",
    );
    let all = metric(&text, "hookline_retention_batch_seconds_count");
    println!("  retention batches: {all} in all, {fast} within 10 ms");
    assert!(all > 0.0);
    if !on_postgres() {
        assert!(fast >= all * 0.8, "{fast} of {all} batches within 10 ms");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_past_its_retention_is_dropped_while_the_message_and_attempts_stay() {
    let receiver = Receiver::start().await;
    // A retention long enough for the test, short enough to prune every 6 s.
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8", "--retention", "30s"]).await;
    let api = server.client();
    let (app, _) = app_with_endpoint(&api, json!({"url": receiver.url("/")})).await;
    let msgs = format!("/api/v1/app/{app}/msg");

    // Svix's rules: one of the two, each at least 1.
    for (body, field) in [
        (
            json!({"payloadRetentionPeriod": 0}),
            "payloadRetentionPeriod",
        ),
        (
            json!({"payloadRetentionHours": -1}),
            "payloadRetentionHours",
        ),
        (
            json!({"payloadRetentionPeriod": 1, "payloadRetentionHours": 1}),
            "payloadRetentionHours",
        ),
    ] {
        let mut msg = json!({"eventType": "t", "payload": {"a": 1}});
        msg.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        let (status, err) = api.post(&msgs, msg).await;
        assert_eq!(status, 422, "{err}");
        assert_eq!(err["detail"][0]["loc"], json!(["body", field]), "{err}");
    }

    let secret = json!({"card": "4242 4242 4242 4242"});
    let short = api
        .create(
            &msgs,
            json!({"eventType": "t", "payload": secret, "payloadRetentionHours": 1}),
        )
        .await;
    let long = api
        .create(
            &msgs,
            json!({"eventType": "t", "payload": secret, "payloadRetentionPeriod": 30}),
        )
        .await;
    let (short, long) = (
        short["id"].as_str().unwrap().to_string(),
        long["id"].as_str().unwrap().to_string(),
    );
    assert_eq!(payload_of(&api, &app, &short).await, secret);
    receiver
        .wait_for(Duration::from_secs(10), |r| r.count() == 2)
        .await;
    let (_, tried) = api
        .get_until(&format!("/api/v1/app/{app}/attempt/msg/{short}"), |b| {
            b["data"].as_array().is_some_and(|d| d.len() == 1)
        })
        .await;
    assert_eq!(tried["data"][0]["statusText"], "success", "{tried}");

    // An hour passes for the short one: its expiry is moved back in the database.
    age_payload(&server, &short).await;
    assert_eq!(
        payload_of(&api, &app, &short).await,
        json!({"expired": true})
    );
    // A resend has nothing to send.
    let ep = tried["data"][0]["endpointId"].as_str().unwrap();
    let (status, err) = api
        .post(&format!("{msgs}/{short}/endpoint/{ep}/resend"), json!({}))
        .await;
    assert_eq!(status, 409, "{err}");
    // The next retention pass drops the stored payload.
    let start = Instant::now();
    while stored_payload(&server, &short).await != "{}" {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the expired payload is still stored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The message and its attempt stay; the other message keeps its payload.
    assert_eq!(
        payload_of(&api, &app, &short).await,
        json!({"expired": true})
    );
    let (_, tried) = api
        .get(&format!("/api/v1/app/{app}/attempt/msg/{short}"))
        .await;
    assert_eq!(tried["data"].as_array().unwrap().len(), 1, "{tried}");
    assert_eq!(payload_of(&api, &app, &long).await, secret);
    assert_eq!(stored_payload(&server, &long).await, secret.to_string());
}

async fn payload_of(api: &Api, app: &str, id: &str) -> Value {
    let (status, m) = api.get(&format!("/api/v1/app/{app}/msg/{id}")).await;
    assert_eq!(status, 200, "{m}");
    m["payload"].clone()
}

/// Moves the message's payload expiry to a second ago, in the server's own database.
async fn age_payload(server: &Server, id: &str) {
    let past = Utc::now() - chrono::Duration::seconds(1);
    match server.database_url() {
        Some(url) => {
            let client = crate::support::admin_client(&url).await;
            // (This tokio-postgres has no chrono: the time goes as text.)
            let n = client
                .execute(
                    &format!(
                        "UPDATE messages SET payload_expires_at = '{}'::timestamptz WHERE id = $1",
                        past.to_rfc3339()
                    ),
                    &[&id],
                )
                .await
                .unwrap();
            assert_eq!(n, 1);
        }
        None => {
            let db = server.data_dir.join("hookline.sqlite");
            let id = id.to_string();
            tokio::task::spawn_blocking(move || {
                let c = rusqlite::Connection::open(db).unwrap();
                c.busy_timeout(Duration::from_secs(10)).unwrap();
                let n = c
                    .execute(
                        "UPDATE messages SET payload_expires_at = ?2 WHERE id = ?1",
                        rusqlite::params![id, past.timestamp_millis()],
                    )
                    .unwrap();
                assert_eq!(n, 1);
            })
            .await
            .unwrap();
        }
    }
}

/// The payload as stored, read from the server's database.
async fn stored_payload(server: &Server, id: &str) -> String {
    match server.database_url() {
        Some(url) => {
            let client = crate::support::admin_client(&url).await;
            let row = client
                .query_one("SELECT payload FROM messages WHERE id = $1", &[&id])
                .await
                .unwrap();
            row.get(0)
        }
        None => {
            let db = server.data_dir.join("hookline.sqlite");
            let id = id.to_string();
            tokio::task::spawn_blocking(move || {
                let c = rusqlite::Connection::open(db).unwrap();
                c.busy_timeout(Duration::from_secs(10)).unwrap();
                c.query_row("SELECT payload FROM messages WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .unwrap()
            })
            .await
            .unwrap()
        }
    }
}

/// `hookline backup` while a server takes a steady load: a server started on the copy
/// lists every message acknowledged before the backup began.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_load_has_every_message_acknowledged_before_it() {
    // PostgreSQL is backed up with pg_dump: the command says so, whatever the database.
    let out = hookline_cli(&[
        "backup",
        "--database-url",
        "postgres://hookline@127.0.0.1:1/hookline",
        "--to",
        "/nonexistent/x",
    ])
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("pg_dump"), "{err}");
    if on_postgres() {
        eprintln!("skipped the SQLite backup: this run's servers are on PostgreSQL");
        return;
    }

    let receiver = Receiver::start().await;
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8"]).await;
    let api = server.client();
    let (app, _) = app_with_endpoint(&api, json!({"url": receiver.url("/")})).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut loads = Vec::new();
    for _ in 0..4 {
        loads.push(steady_load(
            api.clone(),
            app.clone(),
            Duration::from_millis(5),
            stop.clone(),
            acked.clone(),
        ));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: Vec<String> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("hookline.sqlite");
    let data_dir = server.data_dir.to_str().unwrap().to_string();
    let started = Instant::now();
    let out = hookline_cli(&[
        "backup",
        "--data-dir",
        &data_dir,
        "--to",
        copy.to_str().unwrap(),
    ])
    .await;
    let took = started.elapsed();
    let during = acked.lock().unwrap().len() - before.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loads {
        l.await.unwrap();
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "backup under load: {} messages acknowledged before it, {during} while it ran ({took:?}); {}",
        before.len(),
        stdout.trim()
    );
    assert!(stdout.contains("backed up"), "{stdout}");
    // It does not overwrite.
    let again = hookline_cli(&[
        "backup",
        "--data-dir",
        &data_dir,
        "--to",
        copy.to_str().unwrap(),
    ])
    .await;
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // A server on the copy (restoring is copying the file into a data dir, with the main
    // key the secrets are sealed under: the backup does not hold it) lists them.
    std::fs::copy(
        Path::new(&data_dir).join("encryption.key"),
        dir.path().join("encryption.key"),
    )
    .expect("copy the key file");
    let restored = Server::start_in(dir.path(), &["--allow-target", "127.0.0.0/8"]).await;
    let listed: std::collections::HashSet<String> = list_all(
        &restored.client(),
        &format!("/api/v1/app/{app}/msg?with_content=false"),
    )
    .await
    .into_iter()
    .map(|m| m["id"].as_str().unwrap().to_string())
    .collect();
    let missing: Vec<_> = before.iter().filter(|id| !listed.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages missing: {missing:?}",
        missing.len()
    );
    println!("  the restored server lists {} messages", listed.len());
    // The original kept serving throughout, and still does.
    let (status, _) = api
        .post(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "t", "payload": {}}),
        )
        .await;
    assert_eq!(status, 202);
}
