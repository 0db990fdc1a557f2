//! hookline against PostgreSQL: the server named by `HOOKLINE_TEST_POSTGRES_URL` (each
//! test makes a database of its own; skipped, saying so, without that variable), and
//! clusters of a test's own ([`OwnCluster`]) for what must not be done to a shared one:
//! stopping it, running it without TLS or with passwords.
//!
//! `scripts/test` runs this module once, not again in its pass with every e2e server on
//! PostgreSQL: these tests choose their databases themselves.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::delivery_limits::{arrivals, busiest_second};
use crate::receiver::{Behavior, Receiver};
use crate::support::{
    admin_client, app_with_endpoint, hookline_cli, wait_until, Api, ClusterOptions, OwnCluster,
    Server, StopMode, TestDb,
};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn migrate_prepares_a_database_once() {
    let Some(db) = TestDb::create("migrate_prepares_a_database_once").await else {
        return;
    };
    let out = hookline_cli(&["migrate", "--database-url", &db.url]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("applied migration"),
        "{}",
        text(&out.stdout)
    );
    let out = hookline_cli(&["migrate", "--database-url", &db.url]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("up to date"),
        "{}",
        text(&out.stdout)
    );
    db.drop_db().await;
}

#[tokio::test]
async fn migrate_on_sqlite_needs_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let out = hookline_cli(&["migrate", "--data-dir", dir.path().to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.path().join("hookline.sqlite").exists());
}

/// A database that cannot be used is one line on stderr and a non-zero exit, never a
/// panic or a backtrace, and never the password.
#[tokio::test]
async fn bad_database_urls_fail_in_one_clear_line() {
    let cases: &[(&str, &str)] = &[
        (
            "mysql://u@127.0.0.1/x",
            "must start with sqlite:// or postgres://",
        ),
        (
            "postgres://postgres:pw-hunter22@127.0.0.1:1/x?connect_timeout=2",
            "cannot connect to PostgreSQL at 127.0.0.1:1/x as postgres",
        ),
        (
            "postgres://postgres@127.0.0.1/x?sslmode=sometimes",
            "sslmode=sometimes",
        ),
        // A host that does not resolve. Its first label is longer than the 63 characters
        // DNS allows, so the resolver refuses it without asking a name server: nothing
        // leaves the machine (a plain `no-such-host.invalid` would be sent to the
        // configured name server).
        (
            "postgres://postgres:pw-hunter22@no-such-host-for-hookline-tests-its-label-is-longer-than-dns-allows.invalid/x",
            "cannot connect to PostgreSQL at no-such-host-for-hookline-tests-its-label-is-longer-than-dns-allows.invalid:5432/x as postgres",
        ),
    ];
    for (url, want) in cases {
        let out = hookline_cli(&["migrate", "--database-url", url]).await;
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{url} succeeded");
        assert!(err.contains(want), "{url}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{url}: {err}");
        assert!(
            !err.contains("hunter22") && !err.contains("panicked"),
            "{err}"
        );
    }
    if let Some(db) = TestDb::create("bad_database_urls (no such database)").await {
        let missing = db.url.replace(&db.name, "hookline_no_such_db");
        let out = hookline_cli(&["migrate", "--database-url", &missing]).await;
        let err = text(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("does not exist"), "{err}");
        // The test server's certificate is self-signed: verify-full refuses it.
        let sep = if db.url.contains('?') { '&' } else { '?' };
        let out = hookline_cli(&[
            "migrate",
            "--database-url",
            &format!("{}{sep}sslmode=verify-full", db.url),
        ])
        .await;
        let err = text(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("cannot connect to PostgreSQL at"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        db.drop_db().await;
    }
}

/// `--role api` processes accept and store, `--role worker` processes deliver: a message
/// created through an API process reaches its receiver through a worker, the attempt is
/// in the log either serves, each says its role in health, and a worker refuses API calls
/// with a 404 saying where they belong. On SQLite the roles are refused.
#[tokio::test(flavor = "multi_thread")]
async fn api_and_worker_processes_split_the_work() {
    let out = hookline_cli(&["serve", "--role", "worker", "--listen", "127.0.0.1:0"]).await;
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("needs a PostgreSQL database"), "{err}");
    let Some(db) = TestDb::create("api_and_worker_processes_split_the_work").await else {
        return;
    };
    let recv = Receiver::start().await;
    let common = ["--database-url", &db.url, "--allow-target", "127.0.0.0/8"];
    let api_node = Server::start_with(&[&common[..], &["--role", "api"]].concat()).await;
    let worker = Server::start_with(&[&common[..], &["--role", "worker"]].concat()).await;
    let api = api_node.client();
    for (server, role) in [(&api_node, "api"), (&worker, "worker")] {
        let (status, health) = server.client().get("/api/v1/health").await;
        assert_eq!(status, 200, "{health}");
        assert_eq!(health["role"], json!(role), "{health}");
    }
    let (status, body) = worker.client().get("/api/v1/app").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("--role worker"),
        "{body}"
    );
    let (status, _) = worker.client().get("/metrics").await;
    assert_eq!(status, 200);

    let (app, _) = app_with_endpoint(&api, json!({"url": recv.url("/hook")})).await;
    // One at a time: the worker hears of each at its commit (`hookline_work`), not at
    // its next poll (a second): the median wait stays far below half a second.
    let mut waits = Vec::new();
    for i in 0..7 {
        let sent = Instant::now();
        let (status, _) = api
            .post(
                &format!("/api/v1/app/{app}/msg"),
                json!({"eventType": "t", "eventId": format!("m{i}"), "payload": {"i": i}}),
            )
            .await;
        assert_eq!(status, 202);
        assert!(
            recv.wait_for(Duration::from_secs(10), |r| r.count() > i)
                .await,
            "the worker delivered {} of {}",
            recv.count(),
            i + 1
        );
        waits.push(sent.elapsed());
    }
    waits.sort();
    assert!(
        waits[3] < Duration::from_millis(200),
        "create on the API process -> receipt through the worker: {waits:?}"
    );
    // The worker's reports are in the log the API process serves.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = api.get(&format!("/api/v1/app/{app}/attempt/msg/m6")).await;
        if body["data"].as_array().is_some_and(|d| d.len() == 1) {
            assert_eq!(body["data"][0]["responseStatusCode"], json!(200));
            break;
        }
        assert!(Instant::now() < deadline, "no attempt logged: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((api_node, worker));
    db.drop_db().await;
}

/// Three processes on `db`, and a client of each.
async fn three_processes(db: &TestDb) -> ([Server; 3], Vec<Api>) {
    three_processes_with(db, &[]).await
}

/// [`three_processes`], each also given `extra` arguments.
async fn three_processes_with(db: &TestDb, extra: &[&str]) -> ([Server; 3], Vec<Api>) {
    let mut args = vec!["--database-url", &db.url, "--allow-target", "127.0.0.0/8"];
    args.extend_from_slice(extra);
    let nodes = [
        Server::start_with(&args).await,
        Server::start_with(&args).await,
        Server::start_with(&args).await,
    ];
    let apis = nodes.iter().map(Server::client).collect();
    (nodes, apis)
}

/// `n` messages to `app`, sent at once, round-robin over `apis`; each answered 202.
async fn send_round_robin(apis: &[Api], app: &str, n: usize) {
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..n {
        let api = apis[i % apis.len()].clone();
        let path = format!("/api/v1/app/{app}/msg");
        sends.spawn(async move {
            let (status, body) = api
                .post(&path, json!({"eventType": "t", "payload": {"i": i}}))
                .await;
            assert_eq!(status, 202, "{body}");
        });
    }
    while let Some(sent) = sends.join_next().await {
        sent.unwrap();
    }
}

/// `maxConcurrency` holds across processes: three processes on one database, an
/// endpoint with `maxConcurrency: 2` whose receiver holds each request 200 ms, 30
/// messages sent round-robin through the three: the receiver never sees more than 2 at
/// once (each process alone would allow 2, so 6 in all).
#[tokio::test(flavor = "multi_thread")]
async fn max_concurrency_holds_across_processes() {
    let Some(db) = TestDb::create("max_concurrency_holds_across_processes").await else {
        return;
    };
    let recv = Receiver::start().await;
    recv.set("/held", Behavior::Delay(Duration::from_millis(200), 200));
    let (nodes, apis) = three_processes(&db).await;
    let (app, _) = app_with_endpoint(
        &apis[0],
        json!({"url": recv.url("/held"), "maxConcurrency": 2}),
    )
    .await;
    send_round_robin(&apis, &app, 30).await;
    assert!(
        recv.wait_for(Duration::from_secs(30), |r| r.count() >= 30)
            .await,
        "{} of 30 delivered",
        recv.count()
    );
    assert!(
        recv.max_concurrent("/held") <= 2,
        "{} requests at once across the processes",
        recv.max_concurrent("/held")
    );
    assert_eq!(recv.max_concurrent("/held"), 2, "both slots were used");
    drop(nodes);
    db.drop_db().await;
}

/// The adaptive limit holds across processes: three processes on one database started
/// with `--max-endpoint-concurrency 3`, an endpoint without `maxConcurrency` whose
/// receiver holds each request 200 ms (its latency never rises, so each process's limit
/// stays at the cap of 3), 30 messages sent round-robin through the three: the receiver
/// never sees more than 3 at once. Each process counts every process's attempts against
/// its own limit; before it did, each allowed 3, and the receiver saw up to 9.
#[tokio::test(flavor = "multi_thread")]
async fn the_adaptive_limit_holds_across_processes() {
    let Some(db) = TestDb::create("the_adaptive_limit_holds_across_processes").await else {
        return;
    };
    let recv = Receiver::start().await;
    recv.set("/held", Behavior::Delay(Duration::from_millis(200), 200));
    let (nodes, apis) = three_processes_with(&db, &["--max-endpoint-concurrency", "3"]).await;
    let (app, _) = app_with_endpoint(&apis[0], json!({"url": recv.url("/held")})).await;
    send_round_robin(&apis, &app, 30).await;
    assert!(
        recv.wait_for(Duration::from_secs(30), |r| r.count() >= 30)
            .await,
        "{} of 30 delivered",
        recv.count()
    );
    let peak = recv.max_concurrent("/held");
    assert!(peak <= 3, "{peak} requests at once across the processes");
    assert_eq!(peak, 3, "the whole limit was used");
    drop(nodes);
    db.drop_db().await;
}

/// Adaptive concurrency across processes (docs/adaptive-concurrency.md, "Several
/// nodes"): three processes, an endpoint without `maxConcurrency` whose receiver serves 4
/// at once and answers 503 beyond. Each process adapts its own limit to the refusals,
/// and takes work only while all of them together are within it, so once settled the
/// receiver sees at most the highest of their limits (5 at most, as one process alone
/// settles; 10 allowed here for a loaded machine), and every message is delivered (the
/// refused ones by their retries). Before the limit counted every process's attempts,
/// the bound was the sum, 15; the runs then read 5 as well.
#[tokio::test(flavor = "multi_thread")]
async fn adaptive_limits_across_processes_stay_within_their_bound_and_deliver_everything() {
    let Some(db) = TestDb::create("adaptive_limits_across_processes").await else {
        return;
    };
    let recv = Receiver::start().await;
    recv.set(
        "/four",
        Behavior::Capacity {
            max: 4,
            delay: Duration::from_millis(20),
        },
    );
    let (nodes, apis) = three_processes(&db).await;
    let (app, ep) = app_with_endpoint(
        &apis[0],
        json!({"url": recv.url("/four"),
               "retryPolicy": {"kind": "fixed", "intervalSeconds": 1, "giveUpAfterSeconds": 600}}),
    )
    .await;
    let n = 300;
    send_round_robin(&apis, &app, n).await;
    let stats = format!("/api/v1/app/{app}/endpoint/{ep}/stats");
    let succeeded = |s: &Value| s["success"].as_u64().unwrap_or(0) as usize;
    let settle_by = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, s) = apis[0].get(&stats).await;
        if succeeded(&s) >= n / 3 || std::time::Instant::now() > settle_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let early = recv.max_concurrent("/four");
    recv.reset_max_concurrent("/four");
    let done_by = std::time::Instant::now() + Duration::from_secs(90);
    let done = loop {
        let (_, s) = apis[0].get(&stats).await;
        if succeeded(&s) >= n || std::time::Instant::now() > done_by {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        succeeded(&done),
        n,
        "not every message was delivered: {done}"
    );
    let settled = recv.max_concurrent("/four");
    eprintln!(
        "receiver serving 4, three processes adapting: peak {early} before settling, {settled} after"
    );
    assert!(
        settled <= 10,
        "{settled} at once across three processes, over twice one process's settled limit"
    );
    drop(nodes);
    db.drop_db().await;
}

/// `throttleRate` holds across processes: three processes on one database, an endpoint
/// with `throttleRate: 20`, 60 messages sent round-robin through the three: no 1-second
/// window of arrivals holds more than 21 (20 + 1 for window edges, what the several-nodes
/// issue asks; each process alone would allow 20, so 60; 49 were seen without the shared
/// pacing). Starts are booked exactly 50 ms apart as times in the database's clock; a
/// late one keeps its spacing within its process, and one more than 25 ms late is handed
/// back for a later start, since other processes' next starts are on time
/// (docs/several-nodes.md, error bound).
#[tokio::test(flavor = "multi_thread")]
async fn throttle_rate_holds_across_processes() {
    let Some(db) = TestDb::create("throttle_rate_holds_across_processes").await else {
        return;
    };
    let recv = Receiver::start().await;
    let (nodes, apis) = three_processes(&db).await;
    let (app, _) = app_with_endpoint(
        &apis[0],
        json!({"url": recv.url("/paced"), "throttleRate": 20}),
    )
    .await;
    send_round_robin(&apis, &app, 60).await;
    assert!(
        recv.wait_for(Duration::from_secs(30), |r| r.count() >= 60)
            .await,
        "{} of 60 delivered",
        recv.count()
    );
    let at = arrivals(&recv, "/paced");
    let busiest = busiest_second(&at);
    let span = *at.last().unwrap();
    eprintln!("throttleRate 20 over 3 processes: busiest 1 s window {busiest}, 60 over {span:?}");
    // 20, and 1 for the window's edge. (A start that went out late, beside other
    // processes' on-time ones, made it 22 now and then on a loaded machine; such a
    // start is now handed back for a later one.)
    assert!(
        busiest <= 21,
        "{busiest} arrivals within one second across the processes"
    );
    // 60 starts 50 ms apart take at least 2.95 s (1.45 s without the shared pacing); a
    // late first start shortens what the receiver sees a little.
    assert!(
        span >= Duration::from_millis(2_500),
        "60 arrived within {span:?}"
    );
    drop(nodes);
    db.drop_db().await;
}

/// Clocks: processes whose clocks are 8 s ahead (the API) and 8 s behind (the worker)
/// still deliver a new message at once and stamp it with the time it was made: due
/// times and leases are in the database's time. (With their own clocks, the message
/// would be due 16 s in the worker's future.)
#[tokio::test(flavor = "multi_thread")]
async fn processes_with_wrong_clocks_keep_the_database_time() {
    let Some(db) = TestDb::create("processes_with_wrong_clocks_keep_the_database_time").await
    else {
        return;
    };
    let recv = Receiver::start().await;
    let common = ["--database-url", &db.url, "--allow-target", "127.0.0.0/8"];
    let skew = "HOOKLINE_TEST_CLOCK_SKEW_MS";
    let api_node = Server::start_with_env(
        &[&common[..], &["--role", "api"]].concat(),
        &[(skew, "8000")],
    )
    .await;
    let worker = Server::start_with_env(
        &[&common[..], &["--role", "worker"]].concat(),
        &[(skew, "-8000")],
    )
    .await;
    let api = api_node.client();
    let (app, _) = app_with_endpoint(&api, json!({"url": recv.url("/hook")})).await;
    let sent = chrono::Utc::now();
    let started = Instant::now();
    let (status, msg) = api
        .post(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "t", "payload": {}}),
        )
        .await;
    assert_eq!(status, 202, "{msg}");
    let stamped: chrono::DateTime<chrono::Utc> =
        msg["timestamp"].as_str().unwrap().parse().unwrap();
    assert!(
        (stamped - sent).num_milliseconds().abs() < 2000,
        "stamped {stamped}, sent at {sent}"
    );
    assert!(
        recv.wait_for(Duration::from_secs(5), |r| r.count() >= 1)
            .await,
        "not delivered within 5 s"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "delivered after {:?}",
        started.elapsed()
    );
    drop((api_node, worker));
    db.drop_db().await;
}

/// The same idempotency key sent to two processes at the same instant: one message, and
/// every answer the same (those that came second waited for the first's).
#[tokio::test(flavor = "multi_thread")]
async fn one_idempotency_key_at_two_processes_makes_one_message() {
    let Some(db) = TestDb::create("one_idempotency_key_at_two_processes_makes_one_message").await
    else {
        return;
    };
    let args = ["--database-url", &db.url];
    let nodes = [
        Server::start_with(&args).await,
        Server::start_with(&args).await,
    ];
    let apis: Vec<Api> = nodes.iter().map(Server::client).collect();
    let app = apis[0].create("/api/v1/app", json!({"name": "a"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..10 {
        let url = nodes[i % 2].url(&format!("/api/v1/app/{app}/msg"));
        sends.spawn(async move {
            let resp = reqwest::Client::new()
                .post(url)
                .bearer_auth(crate::support::ADMIN_TOKEN)
                .header("idempotency-key", "same-key")
                .json(&json!({"eventType": "t", "payload": {"n": 1}}))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = sends.join_next().await {
        answers.push(answer.unwrap());
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, 202, "{answers:?}");
    let (_, list) = apis[1].get(&format!("/api/v1/app/{app}/msg")).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");
    drop(nodes);
    db.drop_db().await;
}

/// An attempt that finishes while the database is away is recorded once it is back: the
/// report is tried again instead of being dropped (which would leave the delivery
/// `sending` until its lease ran out, missing from the attempt log, and then delivered
/// a second time).
#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_finished_during_an_outage_is_recorded_after_it() {
    let Some(db) =
        TestDb::create("an_attempt_finished_during_an_outage_is_recorded_after_it").await
    else {
        return;
    };
    let recv = Receiver::start().await;
    recv.set("/slow", Behavior::Delay(Duration::from_millis(1500), 200));
    let server =
        Server::start_with(&["--database-url", &db.url, "--allow-target", "127.0.0.0/8"]).await;
    let api = server.client();
    let (app, ep) = app_with_endpoint(&api, json!({"url": recv.url("/slow")})).await;
    let (status, _) = api
        .post(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "t", "eventId": "slow", "payload": {}}),
        )
        .await;
    assert_eq!(status, 202);
    assert!(
        recv.wait_for(Duration::from_secs(10), |r| r.in_flight("/slow") == 1)
            .await,
        "the attempt started"
    );

    // The database goes while the receiver takes its time, and comes back after it
    // answered.
    let admin = admin_client(&db.admin).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {0} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{0}' AND pid <> pg_backend_pid();",
            db.name
        ))
        .await
        .unwrap();
    assert!(
        recv.wait_for(Duration::from_secs(10), |r| r.in_flight("/slow") == 0)
            .await
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            db.name
        ))
        .await
        .unwrap();

    // Recorded within seconds, not after the 2-minute lease; delivered once.
    let deadline = Instant::now() + Duration::from_secs(15);
    let attempts = loop {
        let (status, body) = api
            .get(&format!("/api/v1/app/{app}/attempt/msg/slow"))
            .await;
        let data = body["data"].as_array().cloned().unwrap_or_default();
        if status == 200 && !data.is_empty() {
            break data;
        }
        assert!(
            Instant::now() < deadline,
            "the attempt was never recorded: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["responseStatusCode"], json!(200));
    assert_eq!(attempts[0]["endpointId"], json!(ep));
    let (status, body) = api
        .get(&format!("/api/v1/app/{app}/msg/slow/endpoint"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["status"], json!(0), "delivered: {body}");
    assert_eq!(recv.requests_to("/slow").len(), 1);
    drop(server);
    db.drop_db().await;
}

/// The database goes away while hookline serves (connections refused, the open ones cut):
/// the API answers 503 `unavailable` and health says so, nothing acknowledged is lost,
/// and when the database is back hookline carries on by itself, delivering too.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_answers_503_and_recovers_by_itself() {
    let Some(db) = TestDb::create("a_database_outage_answers_503_and_recovers_by_itself").await
    else {
        return;
    };
    let recv = Receiver::start().await;
    let server =
        Server::start_with(&["--database-url", &db.url, "--allow-target", "127.0.0.0/8"]).await;
    let api = server.client();
    let (app, _) = app_with_endpoint(&api, json!({"url": recv.url("/hook")})).await;
    let msg = format!("/api/v1/app/{app}/msg");
    let (status, _) = api
        .post(
            &msg,
            json!({"eventType": "t", "eventId": "before", "payload": {}}),
        )
        .await;
    assert_eq!(status, 202);
    assert!(
        recv.wait_for(Duration::from_secs(10), |r| r.count() >= 1)
            .await
    );

    // The outage: no new connections to this database, the open ones terminated.
    let admin = admin_client(&db.admin).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {0} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{0}' AND pid <> pg_backend_pid();",
            db.name
        ))
        .await
        .unwrap();
    let (status, body) = api
        .post(
            &msg,
            json!({"eventType": "t", "eventId": "during", "payload": {}}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], json!("unavailable"), "{body}");
    let (status, health) = api.get("/api/v1/health").await;
    assert_eq!(status, 503, "{health}");

    // Back: hookline reconnects by itself.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            db.name
        ))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = api
            .post(
                &msg,
                json!({"eventType": "t", "eventId": "after", "payload": {}}),
            )
            .await;
        if status == 202 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {status} after the database came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(api.get("/api/v1/health").await.0, 200);
    // Nothing acknowledged is lost; the create refused during the outage can be sent
    // again; deliveries resume.
    assert_eq!(api.get(&format!("{msg}/before")).await.0, 200);
    let (status, _) = api
        .post(
            &msg,
            json!({"eventType": "t", "eventId": "during", "payload": {}}),
        )
        .await;
    assert_eq!(status, 202);
    assert!(
        recv.wait_for(Duration::from_secs(15), |r| r.count() >= 3)
            .await,
        "deliveries resume after the outage: {} received",
        recv.count()
    );
    drop(server);
    db.drop_db().await;
}

/// The load's view of the database, set by the test as it stops and starts the cluster.
const UP: u8 = 0;
const STOPPING: u8 = 1;
const DOWN: u8 = 2;
const STARTING: u8 = 3;
const BACK: u8 = 4;
const PHASES: [&str; 5] = ["up", "stopping", "down", "starting", "back"];

/// A create answered in more than this is a hang, whatever the database is doing.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// What the load's clients were answered.
#[derive(Default)]
struct Answers {
    /// eventIds answered 202, with the phase the answer came in.
    acked: Mutex<Vec<(String, u8)>>,
    /// 503 `unavailable` answers per phase.
    unavailable: Mutex<[usize; 5]>,
    /// Every other answer (a 500, a 202 while the database was down, no answer in
    /// time), as a line for the failure message.
    wrong: Mutex<Vec<String>>,
}

impl Answers {
    fn acked_in(&self, phase: u8) -> usize {
        let acked = self.acked.lock().unwrap();
        acked.iter().filter(|(_, p)| *p == phase).count()
    }
}

/// One client of the load: creates messages with unique eventIds (carried in the payload
/// too) until `stop`, recording every answer.
async fn create_until_stopped(
    api: Api,
    msg: String,
    client: usize,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    answers: Arc<Answers>,
) {
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let id = format!("c{client}-{i}");
        let began = phase.load(Ordering::SeqCst);
        let sent = api.post(
            &msg,
            json!({"eventType": "t", "eventId": id, "payload": {"eventId": id}}),
        );
        let answer = tokio::time::timeout(ANSWER_WITHIN, sent).await;
        let ended = phase.load(Ordering::SeqCst);
        let refused = !matches!(answer, Ok((202, _)));
        match answer {
            Ok((202, _)) if began == DOWN && ended == DOWN => {
                answers.wrong.lock().unwrap().push(format!(
                    "{id}: 202 while the database was down (sent and answered)"
                ));
            }
            Ok((202, _)) => answers.acked.lock().unwrap().push((id, ended)),
            Ok((503, body)) if body["code"] == json!("unavailable") => {
                answers.unavailable.lock().unwrap()[ended as usize] += 1;
            }
            Ok((status, body)) => answers.wrong.lock().unwrap().push(format!(
                "{id}: {status} {body} (sent {}, answered {})",
                PHASES[began as usize], PHASES[ended as usize]
            )),
            Err(_) => answers.wrong.lock().unwrap().push(format!(
                "{id}: no answer within {ANSWER_WITHIN:?} (sent {})",
                PHASES[began as usize]
            )),
        }
        if refused {
            // Refused: the next try a little later, as a client backing off would.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The database crashes and comes back while clients create messages: while it is down
/// creates answer 503 `unavailable` at once (never a 500, never a hang) and health says
/// so; when it is back the same hookline process carries on by itself; every message
/// acknowledged with 202, before or after, is stored and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_restarting_under_load_loses_nothing_acknowledged() {
    const TEST: &str = "the_database_restarting_under_load_loses_nothing_acknowledged";
    let Some(mut cluster) = OwnCluster::start(TEST, ClusterOptions::default()).await else {
        return;
    };
    let recv = Receiver::start().await;
    // Deliveries take a moment, so some are under way when the database goes.
    recv.set("/hook", Behavior::Delay(Duration::from_millis(5), 200));
    let server = Server::start_with(&[
        "--database-url",
        &cluster.url(),
        "--allow-target",
        "127.0.0.0/8",
    ])
    .await;
    let api = server.client();
    let (app, _) = app_with_endpoint(&api, json!({"url": recv.url("/hook")})).await;
    let msg = format!("/api/v1/app/{app}/msg");

    let phase = Arc::new(AtomicU8::new(UP));
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Answers::default());
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..8 {
        clients.spawn(create_until_stopped(
            api.clone(),
            msg.clone(),
            client,
            phase.clone(),
            stop.clone(),
            answers.clone(),
        ));
    }
    let started = Instant::now();
    wait_until(Duration::from_secs(20), "50 creates acknowledged", || {
        answers.acked_in(UP) >= 50
    })
    .await;

    // The crash: every PostgreSQL process killed at once, as in a power cut.
    phase.store(STOPPING, Ordering::SeqCst);
    cluster.stop(StopMode::Immediate).await;
    phase.store(DOWN, Ordering::SeqCst);
    let down_at = started.elapsed();
    let t = Instant::now();
    let (status, body) = api
        .post(
            &msg,
            json!({"eventType": "t", "eventId": "probe", "payload": {}}),
        )
        .await;
    let answered_in = t.elapsed();
    assert_eq!(status, 503, "a create while the database is down: {body}");
    assert_eq!(body["code"], json!("unavailable"), "{body}");
    assert!(
        answered_in < Duration::from_secs(2),
        "a create while the database is down took {answered_in:?} to be refused"
    );
    let (status, health) = api.get("/api/v1/health").await;
    assert_eq!(status, 503, "health while the database is down: {health}");
    assert_eq!(health["code"], json!("unavailable"), "{health}");
    // Down for a second at least: the dispatcher's failed claim waits a poll interval,
    // and the pool fails to connect again and again.
    wait_until(
        Duration::from_secs(10),
        "the load's creates refused while the database is down",
        || answers.unavailable.lock().unwrap()[DOWN as usize] >= 16,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(t.elapsed())).await;

    // Back, on the same data and port, after crash recovery; hookline is not restarted.
    phase.store(STARTING, Ordering::SeqCst);
    cluster.start_again().await;
    phase.store(BACK, Ordering::SeqCst);
    let back_at = started.elapsed();
    let first_ack = wait_until(
        Duration::from_secs(15),
        "a create acknowledged after the database came back",
        || answers.acked_in(BACK) >= 1,
    )
    .await;
    wait_until(
        Duration::from_secs(20),
        "50 creates acknowledged after the database came back",
        || answers.acked_in(BACK) >= 50,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    while let Some(done) = clients.join_next().await {
        done.expect("a load client");
    }

    let wrong = answers.wrong.lock().unwrap().clone();
    assert!(
        wrong.is_empty(),
        "{} answers were neither 202 nor 503 unavailable (first 10): {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    let (status, health) = api.get("/api/v1/health").await;
    assert_eq!(status, 200, "health after the database came back: {health}");

    // Every acknowledged message is stored...
    let acked: Vec<String> = answers
        .acked
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    for id in &acked {
        let (status, body) = api.get(&format!("{msg}/{id}")).await;
        assert_eq!(status, 200, "message {id} was acknowledged but: {body}");
    }
    // ...and delivered, at least once.
    let delivered = || -> HashSet<String> {
        recv.requests_to("/hook")
            .iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .filter_map(|b| b["eventId"].as_str().map(str::to_string))
            .collect()
    };
    let deliver_within = Duration::from_secs(30);
    let t = Instant::now();
    let mut got = delivered();
    while t.elapsed() < deliver_within && acked.iter().any(|id| !got.contains(id)) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        got = delivered();
    }
    let missing: Vec<&String> = acked.iter().filter(|id| !got.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages not delivered within {deliver_within:?} (first 10): {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );

    let unavailable = *answers.unavailable.lock().unwrap();
    eprintln!(
        "{TEST}: {} acknowledged and delivered ({} before the crash, {} while it was \
         stopping, {} while it was starting, {} after); 503 unavailable {unavailable:?} \
         (by phase: {PHASES:?}); crashed at {down_at:?}, back at {back_at:?}, first 202 \
         {first_ack:?} later; a create while down refused in {answered_in:?}",
        acked.len(),
        answers.acked_in(UP),
        answers.acked_in(STOPPING),
        answers.acked_in(STARTING),
        answers.acked_in(BACK),
    );
}

/// What a misconfigured connection to a reachable server says: one line on stderr naming
/// where and why, a non-zero exit, never the password; and the right settings work.
/// On a cluster of the test's own without TLS and with passwords over TCP.
#[tokio::test]
async fn a_server_without_tls_or_a_wrong_password_fails_in_one_clear_line() {
    const TEST: &str = "a_server_without_tls_or_a_wrong_password_fails_in_one_clear_line";
    const PASSWORD: &str = "right-pw-hunter22";
    let opts = ClusterOptions {
        password: Some(PASSWORD.into()),
    };
    let Some(cluster) = OwnCluster::start(TEST, opts).await else {
        return;
    };
    let right = cluster.url_as("postgres", Some(PASSWORD), "postgres");
    let at = format!(
        "cannot connect to PostgreSQL at 127.0.0.1:{}/postgres as postgres",
        cluster.port
    );
    let fails = |url: String, want: &'static [&'static str]| {
        let at = at.clone();
        async move {
            let out = hookline_cli(&["migrate", "--database-url", &url]).await;
            let err = text(&out.stderr);
            assert!(
                !out.status.success(),
                "{url} succeeded: {}",
                text(&out.stdout)
            );
            assert_eq!(err.trim().lines().count(), 1, "{url}: {err}");
            assert!(err.contains(&at), "{url}: {err}");
            for w in want {
                assert!(err.contains(w), "{url}: wanted {w:?} in: {err}");
            }
            assert!(
                !err.contains("hunter22") && !err.contains("panicked"),
                "{url}: {err}"
            );
            eprintln!("{TEST}: {url} -> {}", err.trim());
        }
    };

    // The server has no TLS: require refuses to go on without it...
    fails(format!("{right}?sslmode=require"), &["TLS"]).await;
    // ...prefer (the default) goes on without.
    for url in [right.clone(), format!("{right}?sslmode=prefer")] {
        let out = hookline_cli(&["migrate", "--database-url", &url]).await;
        assert!(out.status.success(), "{url}: {}", text(&out.stderr));
    }

    // A wrong password, and none where one is needed.
    let wrong = cluster.url_as("postgres", Some("wrong-pw-hunter22"), "postgres");
    fails(wrong.clone(), &["password authentication failed"]).await;
    fails(cluster.url_as("postgres", None, "postgres"), &["password"]).await;

    // `serve` says the same at start, in one line, and exits.
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--database-url",
        &wrong,
    ];
    let serve = hookline_cli(&args);
    let out = tokio::time::timeout(Duration::from_secs(30), serve)
        .await
        .expect("serve with a wrong password exits within 30 s");
    let err = text(&out.stderr);
    assert!(!out.status.success(), "serve with a wrong password: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&at) && err.contains("password authentication failed"),
        "{err}"
    );
    assert!(!err.contains("hunter22"), "{err}");
}
