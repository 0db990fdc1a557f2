//! `hookline copy`: an installation built on SQLite through the API, its server killed
//! mid-work, copied into PostgreSQL and served from there. What the API shows must be what
//! it showed on SQLite (compared as JSON), secrets must still sign, and the deliveries left
//! to make must be made. PostgreSQL tests are skipped, saying so, without
//! `HOOKLINE_TEST_POSTGRES_URL`; the refusals of bad sources need none. These tests choose
//! their servers' databases themselves: `scripts/test` runs them once, not in its
//! PostgreSQL pass.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hookline_signing::{verify_standard, StandardSecret};
use serde_json::{json, Value};

use crate::receiver::{Behavior, Receiver};
use crate::support::{hookline_cli, Api, Server, TestDb, ADMIN_TOKEN};

/// The custom secret of the endpoint that receives everything.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `hookline copy` that must succeed; returns its stdout.
async fn copy_ok(args: &[&str]) -> String {
    let mut all = vec!["copy"];
    all.extend_from_slice(args);
    let out = hookline_cli(&all).await;
    assert!(
        out.status.success(),
        "copy {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `hookline copy` that must fail in one line on stderr; returns that line.
async fn copy_refused(args: &[&str]) -> String {
    let mut all = vec!["copy"];
    all.extend_from_slice(args);
    let out = hookline_cli(&all).await;
    let err = text(&out.stderr);
    assert!(!out.status.success(), "copy {args:?} succeeded");
    assert_eq!(err.trim().lines().count(), 1, "copy {args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A server on SQLite in `dir`, whatever `HOOKLINE_TEST_E2E_DATABASE` says.
async fn sqlite_server(dir: &Path) -> Server {
    let url = format!("sqlite://{}", dir.join("hookline.sqlite").display());
    Server::start_in(
        dir,
        &["--database-url", &url, "--allow-target", "127.0.0.0/8"],
    )
    .await
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}

/// An installation on SQLite, stopped (killed) mid-work:
/// - application `acme` (metadata, a default retry policy of one retry after an hour)
///   with endpoints `ok` (custom secret, headers, filters, channel, rate limit: gets
///   everything), `fail` (answers 500: each delivery failed once and waits an hour),
///   `slow` (hangs: the first delivery was in flight when the server died, the second
///   waits for it, at most one at a time) and a disabled one; two messages sent, one
///   scheduled an hour ahead, one sent with an idempotency key;
/// - application `empty` with a message and no endpoint;
/// - event types, one archived; an app-scoped (portal) token.
struct Installation {
    dir: tempfile::TempDir,
    app: String,
    ok: String,
    fail: String,
    slow: String,
    /// The messages the slow endpoint is owed (the first was in flight).
    owed: Vec<String>,
    portal_token: String,
    /// The message created with idempotency key `idem-1`, and its body.
    idem: (String, Value),
    /// What the API showed before the server died.
    shown: BTreeMap<String, Value>,
}

fn message_body(n: u32) -> Value {
    json!({
        "eventType": "user.created",
        "eventId": format!("order-{n}"),
        "payload": {"name": format!("user {n}"), "n": n, "nested": {"list": [1, 2.5, "x"]}},
        "channels": ["eu"],
        "tags": ["t1"],
    })
}

async fn install(recv: &Receiver) -> Installation {
    recv.set("/ok", Behavior::Status(200, vec![]));
    recv.set("/fail", Behavior::Status(500, vec![]));
    recv.set("/slow", Behavior::Hang);
    let dir = tempfile::tempdir().unwrap();
    let mut server = sqlite_server(dir.path()).await;
    let api = server.client();
    api.create(
        "/api/v1/event-type",
        json!({"name": "user.created", "description": "A user signed up",
               "groupName": "users", "featureFlags": ["beta"],
               "schemas": {"1": {"type": "object", "properties": {"name": {"type": "string"}},
                                 "required": ["name"]}}}),
    )
    .await;
    api.create(
        "/api/v1/event-type",
        json!({"name": "user.deleted", "description": "Gone"}),
    )
    .await;
    let (status, _) = api
        .call("DELETE", "/api/v1/event-type/user.deleted", None)
        .await;
    assert_eq!(status, 204, "archiving an event type");
    let app = id(&api
        .create(
            "/api/v1/app",
            json!({"name": "Acme", "uid": "acme", "metadata": {"plan": "gold"},
                   "throttleRate": 1000,
                   "retryPolicy": {"kind": "schedule", "delaysSeconds": [3600]}}),
        )
        .await);
    let empty = id(&api
        .create("/api/v1/app", json!({"name": "Empty", "uid": "empty"}))
        .await);
    let eps = format!("/api/v1/app/{app}/endpoint");
    let ok = id(&api
        .create(
            &eps,
            json!({"url": recv.url("/ok"), "uid": "ep-ok", "description": "gets everything",
                   "filterTypes": ["user.created"], "channels": ["eu"], "rateLimit": 50,
                   "secret": SECRET, "metadata": {"team": "core"},
                   "headers": {"X-Team": "core"}, "timeoutMs": 5000,
                   "signature": {"scheme": "standard", "svixHeaders": true}}),
        )
        .await);
    let fail = id(&api
        .create(&eps, json!({"url": recv.url("/fail"), "uid": "ep-fail"}))
        .await);
    let slow = id(&api
        .create(
            &eps,
            json!({"url": recv.url("/slow"), "uid": "ep-slow", "maxConcurrency": 1,
                   "timeoutMs": 60000}),
        )
        .await);
    api.create(
        &eps,
        json!({"url": recv.url("/ok"), "uid": "ep-off", "disabled": true}),
    )
    .await;

    let msgs = format!("/api/v1/app/{app}/msg");
    let mut sent = Vec::new();
    for n in 1..=2 {
        sent.push(id(&api.create(&msgs, message_body(n)).await));
    }
    let mut later = message_body(3);
    later["deliverAt"] = json!((chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    api.create(&msgs, later).await;
    api.create(
        &format!("/api/v1/app/{empty}/msg"),
        json!({"eventType": "user.created", "payload": {"name": "nobody"}}),
    )
    .await;
    let idem = idempotent_create(&api, &app).await;
    assert_eq!(idem.0, 202);
    let idem = (id(&idem.1), idem.1);
    let mut owed = sent;
    owed.push(idem.0.clone());
    let portal_token = api
        .create(&format!("/api/v1/auth/app-portal-access/{app}"), json!({}))
        .await["token"]
        .as_str()
        .expect("a portal token")
        .to_string();

    // Mid-work: `ok` got all three sent at once, `fail` answered 500 to each (attempts
    // logged), `slow` holds the first while the second waits.
    assert!(
        recv.wait_for(Duration::from_secs(10), |r| r.requests_to("/ok").len() >= 3
            && r.requests_to("/fail").len() >= 3
            && r.in_flight("/slow") >= 1)
            .await,
        "the deliveries did not start"
    );
    let attempts = format!("/api/v1/app/{app}/attempt/endpoint/{fail}");
    let (_, logged) = api
        .get_until(&attempts, |b| {
            b["data"].as_array().is_some_and(|d| d.len() >= 3)
        })
        .await;
    assert_eq!(logged["data"].as_array().map(Vec::len), Some(3), "{logged}");
    let (_, logged) = api
        .get_until(&format!("/api/v1/app/{app}/attempt/endpoint/{ok}"), |b| {
            b["data"].as_array().is_some_and(|d| d.len() >= 3)
        })
        .await;
    assert_eq!(logged["data"].as_array().map(Vec::len), Some(3), "{logged}");

    let mut inst = Installation {
        dir,
        app,
        ok,
        fail,
        slow,
        owed,
        portal_token,
        idem,
        shown: BTreeMap::new(),
    };
    inst.shown = shown(&api, &inst, &[empty]).await;
    // Killed, not stopped: the slow endpoint's delivery stays `sending` in the file.
    server.kill().await;
    inst
}

/// Creates a message with idempotency key `idem-1`; the status and body answered.
async fn idempotent_create(api: &Api, app: &str) -> (u16, Value) {
    let resp = api
        .http
        .post(format!("{}/api/v1/app/{app}/msg", api.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("idempotency-key", "idem-1")
        .json(&json!({"eventType": "user.created", "eventId": "idem",
                      "payload": {"name": "once"}, "channels": ["eu"]}))
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON body"))
}

/// Everything the API shows of the installation, by path: applications, event types,
/// endpoints with their secrets and headers, messages, and the attempt log and deliveries
/// of the `ok` and `fail` endpoints (the `slow` one's change once served again).
async fn shown(api: &Api, inst: &Installation, more_apps: &[String]) -> BTreeMap<String, Value> {
    let mut paths = vec![
        "/api/v1/app?limit=250".to_string(),
        "/api/v1/event-type?include_archived=true&limit=250".to_string(),
    ];
    let mut apps = vec![inst.app.clone()];
    apps.extend_from_slice(more_apps);
    for app in &apps {
        paths.push(format!("/api/v1/app/{app}"));
        paths.push(format!("/api/v1/app/{app}/msg?limit=250&with_content=true"));
        let (_, eps) = api
            .get(&format!("/api/v1/app/{app}/endpoint?limit=250"))
            .await;
        paths.push(format!("/api/v1/app/{app}/endpoint?limit=250"));
        for ep in eps["data"].as_array().expect("endpoints") {
            let ep = id(ep);
            for tail in ["", "/secret", "/headers"] {
                paths.push(format!("/api/v1/app/{app}/endpoint/{ep}{tail}"));
            }
        }
        let (_, msgs) = api.get(&format!("/api/v1/app/{app}/msg?limit=250")).await;
        for m in msgs["data"].as_array().expect("messages") {
            paths.push(format!("/api/v1/app/{app}/msg/{}", id(m)));
        }
    }
    for ep in [&inst.ok, &inst.fail] {
        let app = &inst.app;
        paths.push(format!("/api/v1/app/{app}/attempt/endpoint/{ep}?limit=250"));
        paths.push(format!(
            "/api/v1/app/{app}/endpoint/{ep}/msg?limit=250&with_content=true"
        ));
    }
    let mut out = BTreeMap::new();
    for path in paths {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        out.insert(path, body);
    }
    out
}

/// A server on the copy, with a data dir of its own and the main key of the SQLite
/// installation in `source` (the copied secrets stay sealed under it).
async fn serve_copy(db: &TestDb, source: &Path) -> Server {
    let key =
        std::fs::read_to_string(source.join("encryption.key")).expect("the source's key file");
    Server::start_with(&[
        "--database-url",
        &db.url,
        "--allow-target",
        "127.0.0.0/8",
        "--encryption-key",
        key.trim(),
    ])
    .await
}

fn data(v: &Value) -> &Vec<Value> {
    v["data"].as_array().expect("a listing")
}

/// The checks both ways of copying share, once hookline serves the copy: secrets still
/// sign, the deliveries owed are made, the portal token and the idempotency key still
/// work. `slow_before`: requests the slow endpoint had before the move.
async fn served_copy_works(recv: &Receiver, api: &Api, inst: &Installation, slow_before: usize) {
    let app = &inst.app;
    // The slow endpoint's two deliveries, the one killed in flight included, are made
    // now, signed with its secret as it was.
    let (_, secret) = api
        .get(&format!("/api/v1/app/{app}/endpoint/{}/secret", inst.slow))
        .await;
    let slow_secret = StandardSecret::parse(secret["key"].as_str().unwrap()).unwrap();
    let since_move = |r: &Receiver| r.requests_to("/slow").split_off(slow_before);
    let delivered = |r: &Receiver| {
        let got: Vec<String> = since_move(r)
            .iter()
            .filter_map(|q| q.header("webhook-id"))
            .collect();
        inst.owed.iter().all(|m| got.contains(m))
    };
    assert!(
        recv.wait_for(Duration::from_secs(20), delivered).await,
        "the deliveries owed to the slow endpoint were not made after the move"
    );
    for req in since_move(recv) {
        let id = req.header("webhook-id").unwrap();
        let ts: i64 = req.header("webhook-timestamp").unwrap().parse().unwrap();
        let sig = req.header("webhook-signature").unwrap();
        verify_standard(&slow_secret, &id, ts, &req.body, &sig, ts, 5)
            .expect("signed with the endpoint's secret");
    }
    let (_, states) = api
        .get_until(
            &format!("/api/v1/app/{app}/endpoint/{}/msg?status=0", inst.slow),
            |b| b["data"].as_array().is_some_and(|d| d.len() >= 3),
        )
        .await;
    assert_eq!(data(&states).len(), 3, "{states}");

    // A new message reaches the `ok` endpoint signed with its custom secret, with its
    // headers: the secret came over exactly.
    let before = recv.requests_to("/ok").len();
    let m = id(&api
        .create(&format!("/api/v1/app/{app}/msg"), message_body(9))
        .await);
    assert!(
        recv.wait_for(Duration::from_secs(10), |r| r.requests_to("/ok").len()
            > before)
            .await
    );
    let req = recv.requests_to("/ok").pop().unwrap();
    assert_eq!(req.header("webhook-id").as_deref(), Some(m.as_str()));
    assert_eq!(req.header("x-team").as_deref(), Some("core"));
    let ts: i64 = req.header("webhook-timestamp").unwrap().parse().unwrap();
    let sig = req.header("webhook-signature").unwrap();
    verify_standard(
        &StandardSecret::parse(SECRET).unwrap(),
        &m,
        ts,
        &req.body,
        &sig,
        ts,
        5,
    )
    .expect("signed with the custom secret");
    assert_eq!(req.header("svix-signature"), Some(sig));

    // The portal token (stored as a hash) still opens its application.
    let portal = api.with_token(Some(&inst.portal_token));
    let (status, body) = portal.get(&format!("/api/v1/app/{app}/msg")).await;
    assert_eq!(status, 200, "{body}");
    // The idempotency key still replays its answer instead of creating a second message.
    let (status, body) = idempotent_create(api, app).await;
    assert_eq!((status, body), (202, inst.idem.1.clone()));
    let (_, by_event) = api.get(&format!("/api/v1/app/{app}/msg/idem")).await;
    assert_eq!(id(&by_event), inst.idem.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_with_history_serves_everything_from_postgres() {
    let Some(db) = TestDb::create("copy_with_history_serves_everything_from_postgres").await else {
        return;
    };
    let recv = Receiver::start().await;
    let inst = install(&recv).await;
    let from = format!("sqlite://{}", inst.dir.path().display());
    let out = copy_ok(&["--from", &from, "--to", &db.url, "--with-history"]).await;
    assert!(
        out.starts_with("hookline: copied 2 applications, 2 event types, 4 endpoints, 1 API token, 1 idempotency key, 5 messages, 12 deliveries, 6 attempts, "),
        "{out}"
    );
    // As many as the minutes and hours the attempts fell in.
    assert!(
        out.contains(" rows of attempt statistics to PostgreSQL"),
        "{out}"
    );
    assert!(out.contains("(counts checked)"), "{out}");
    assert!(
        out.contains("due again at once: 1 delivery in flight when SQLite stopped"),
        "{out}"
    );
    assert!(!out.contains("left out"), "{out}");
    assert!(
        out.contains("endpoint secrets stay sealed under the source's main key"),
        "{out}"
    );

    recv.set("/slow", Behavior::Status(200, vec![]));
    let slow_before = recv.requests_to("/slow").len();
    let server = serve_copy(&db, inst.dir.path()).await;
    let api = server.client();
    let empty = data(&inst.shown["/api/v1/app?limit=250"])
        .iter()
        .map(id)
        .filter(|a| *a != inst.app)
        .collect::<Vec<_>>();
    let now = shown(&api, &inst, &empty).await;
    for (path, before) in &inst.shown {
        assert_eq!(&now[path], before, "GET {path} differs after the copy");
    }
    served_copy_works(&recv, &api, &inst, slow_before).await;
    drop(server);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_without_history_leaves_out_finished_deliveries_and_attempts() {
    let Some(db) = TestDb::create("copy_without_history_leaves_out_finished_work").await else {
        return;
    };
    let recv = Receiver::start().await;
    let inst = install(&recv).await;
    // The data dir's file, named directly this time.
    let from = format!(
        "sqlite://{}",
        inst.dir.path().join("hookline.sqlite").display()
    );
    let out = copy_ok(&["--from", &from, "--to", &db.url]).await;
    // ok: 3 delivered, 1 scheduled; fail: 3 retrying, 1 scheduled; slow: 3 owed, 1
    // scheduled. The messages are all there.
    assert!(out.contains("5 messages, 9 deliveries, "), "{out}");
    // The charts' counts come without the attempts.
    assert!(
        out.contains(" rows of attempt statistics to PostgreSQL"),
        "{out}"
    );
    assert!(
        out.contains("left out (no --with-history): 6 attempts and 3 deliveries already finished"),
        "{out}"
    );

    recv.set("/slow", Behavior::Status(200, vec![]));
    let slow_before = recv.requests_to("/slow").len();
    let server = serve_copy(&db, inst.dir.path()).await;
    let api = server.client();
    let empty: Vec<String> = data(&inst.shown["/api/v1/app?limit=250"])
        .iter()
        .map(id)
        .filter(|a| *a != inst.app)
        .collect();
    let now = shown(&api, &inst, &empty).await;
    for (path, before) in &inst.shown {
        if path.contains("/attempt/") {
            assert!(data(&now[path]).is_empty(), "GET {path}: {}", now[path]);
        } else if path.contains(&format!("/endpoint/{}/msg", inst.ok)) {
            // Only what was still to be delivered: the scheduled message.
            let owed: Vec<&Value> = data(before)
                .iter()
                .filter(|d| d["status"] == json!(1) || d["status"] == json!(3))
                .collect();
            assert_eq!(owed.len(), 1, "{before}");
            assert_eq!(
                data(&now[path]).iter().collect::<Vec<_>>(),
                owed,
                "GET {path}"
            );
        } else {
            // Messages are all there, the retrying deliveries as they were.
            assert_eq!(&now[path], before, "GET {path} differs after the copy");
        }
    }
    served_copy_works(&recv, &api, &inst, slow_before).await;
    drop(server);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_refuses_a_non_empty_target_unless_allowed() {
    let Some(db) = TestDb::create("copy_refuses_a_non_empty_target_unless_allowed").await else {
        return;
    };
    // Two small installations of one application each, the second with an event type.
    let mut dirs = Vec::new();
    for name in ["first", "second"] {
        let dir = tempfile::tempdir().unwrap();
        let mut server = sqlite_server(dir.path()).await;
        let api = server.client();
        api.create("/api/v1/app", json!({"name": name, "uid": name}))
            .await;
        if name == "second" {
            api.create(
                "/api/v1/event-type",
                json!({"name": "shared.type", "description": "in both"}),
            )
            .await;
        }
        server.terminate().await;
        dirs.push(dir);
    }
    let from = |i: usize| format!("sqlite://{}", dirs[i].path().display());
    copy_ok(&["--from", &from(0), "--to", &db.url]).await;

    let err = copy_refused(&["--from", &from(1), "--to", &db.url]).await;
    assert!(
        err.contains("is not empty (it holds 1 application and 0 event types)")
            && err.contains("--allow-non-empty"),
        "{err}"
    );
    // The same installation again: its application is there already, nothing is added.
    let err = copy_refused(&["--from", &from(0), "--to", &db.url, "--allow-non-empty"]).await;
    assert!(err.contains("already"), "{err}");

    let out = copy_ok(&["--from", &from(1), "--to", &db.url, "--allow-non-empty"]).await;
    assert!(out.contains("copied 1 application, 1 event type,"), "{out}");
    let server = serve_copy(&db, dirs[1].path()).await;
    let (_, apps) = server.client().get("/api/v1/app").await;
    let mut uids: Vec<&str> = data(&apps)
        .iter()
        .map(|a| a["uid"].as_str().unwrap())
        .collect();
    uids.sort();
    assert_eq!(uids, ["first", "second"]);
    drop(server);
    db.drop_db().await;
}

/// Sources that cannot be copied, and flags that make no sense, fail in one line naming
/// the problem, before anything is written (no PostgreSQL needed: the target is never
/// reached). A password in `--to` never shows.
#[tokio::test(flavor = "multi_thread")]
async fn bad_sources_and_targets_fail_in_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let to = "postgres://hookline:hunter22@127.0.0.1:1/none?connect_timeout=2";
    let missing = format!("sqlite://{}/nothing.sqlite", dir.path().display());
    let err = copy_refused(&["--from", &missing, "--to", to]).await;
    assert!(err.contains("does not exist"), "{err}");

    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "just some words, not a database\n").unwrap();
    let err = copy_refused(&[
        "--from",
        &format!("sqlite://{}", notes.display()),
        "--to",
        to,
    ])
    .await;
    assert!(err.contains("is not an SQLite database"), "{err}");

    let err = copy_refused(&[
        "--from",
        &format!("sqlite://{}", dir.path().display()),
        "--to",
        to,
    ])
    .await;
    assert!(err.contains("holds no hookline.sqlite"), "{err}");

    let err = copy_refused(&["--from", to, "--to", to]).await;
    assert!(err.contains("--from: must be sqlite://PATH"), "{err}");

    // A server serving the source: refused, and the server carries on.
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = sqlite_server(data_dir.path()).await;
    let from = format!("sqlite://{}", data_dir.path().display());
    let err = copy_refused(&["--from", &from, "--to", to]).await;
    assert!(err.contains("a hookline process is serving"), "{err}");
    assert_eq!(server.client().get("/api/v1/health").await.0, 200);
    server.terminate().await;

    let err = copy_refused(&["--from", &from, "--to", "mysql://u@127.0.0.1/x"]).await;
    assert!(err.contains("--to: must be a postgres://"), "{err}");
    // A stopped server's database, a target that cannot be reached: no password shown.
    let err = copy_refused(&["--from", &from, "--to", to]).await;
    assert!(
        err.contains("cannot connect to PostgreSQL at 127.0.0.1:1/none as hookline"),
        "{err}"
    );
    assert!(!err.contains("hunter22"), "{err}");
}
