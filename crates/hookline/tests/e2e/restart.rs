//! Durability across restarts: everything written through the API reads back identical
//! after a SIGKILL; SIGTERM exits 0 promptly; the first start without a configured admin
//! token prints a generated one exactly once and stores only its hash.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hookline_signing::StandardSecret;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::support::{Api, Server};

/// Every item of a paginated list, following `iterator` until `done`.
pub async fn list_all(api: &Api, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut iterator: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{path}{sep}limit=250");
        if let Some(it) = &iterator {
            url.push_str("&iterator=");
            url.push_str(it);
        }
        let (status, body) = api.get(&url).await;
        assert_eq!(status, 200, "GET {url}: {body}");
        out.extend(
            body["data"]
                .as_array()
                .expect("data is a list")
                .iter()
                .cloned(),
        );
        if body["done"] == json!(true) {
            return out;
        }
        iterator = body["iterator"].as_str().map(str::to_string);
        assert!(
            iterator.is_some(),
            "GET {url}: not done but no iterator: {body}"
        );
    }
}

/// Everything observable through the admin API: applications, event types (archived
/// too), every application's endpoints with their current secrets and custom headers
/// (not `failingSince`, which deliveries change), and every application's messages with
/// payloads.
pub async fn snapshot(api: &Api) -> Value {
    let apps = list_all(api, "/api/v1/app").await;
    let event_types = list_all(api, "/api/v1/event-type?include_archived=true").await;
    let mut per_app = serde_json::Map::new();
    for app in &apps {
        let app_id = app["id"].as_str().expect("app id");
        let mut endpoints = Vec::new();
        for mut ep in list_all(api, &format!("/api/v1/app/{app_id}/endpoint")).await {
            // Deliveries still running change it (an attempt fails): delivery state, like
            // the attempt log, not what a user wrote.
            ep.as_object_mut().map(|o| o.remove("failingSince"));
            let ep_id = ep["id"].as_str().expect("endpoint id");
            let base = format!("/api/v1/app/{app_id}/endpoint/{ep_id}");
            let (s1, secret) = api.get(&format!("{base}/secret")).await;
            assert_eq!(s1, 200, "GET {base}/secret: {secret}");
            let (s2, headers) = api.get(&format!("{base}/headers")).await;
            assert_eq!(s2, 200, "GET {base}/headers: {headers}");
            endpoints.push(json!({"endpoint": ep, "secret": secret, "headers": headers}));
        }
        let messages = list_all(api, &format!("/api/v1/app/{app_id}/msg?with_content=true")).await;
        per_app.insert(
            app_id.to_string(),
            json!({"endpoints": endpoints, "messages": messages}),
        );
    }
    json!({"apps": apps, "eventTypes": event_types, "perApp": per_app})
}

/// Every current endpoint secret in a snapshot.
pub fn secrets_in(snapshot: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for app in snapshot["perApp"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for ep in app["endpoints"].as_array().into_iter().flatten() {
            if let Some(k) = ep["secret"]["key"].as_str() {
                out.push(k.to_string());
            }
        }
    }
    out
}

/// Creates a bit of everything; returns the endpoint ids that had secrets rotated, with
/// the key each should have now.
async fn populate(api: &Api) -> Vec<(String, String, String)> {
    api.create(
        "/api/v1/event-type",
        json!({
            "name": "user.created",
            "description": "A user signed up",
            "schemas": {"1": {"type": "object", "properties": {"id": {"type": "string"}},
                              "required": ["id"]}},
            "groupName": "user",
            "featureFlags": ["beta"]
        }),
    )
    .await;
    api.create(
        "/api/v1/event-type",
        json!({"name": "order.paid", "description": "An order was paid", "deprecated": true}),
    )
    .await;
    api.create(
        "/api/v1/event-type",
        json!({"name": "legacy.thing", "description": "Old"}),
    )
    .await;
    let (s, b) = api
        .call("DELETE", "/api/v1/event-type/legacy.thing", None)
        .await;
    assert_eq!(s, 204, "archive: {b}");

    let acme = api
        .create(
            "/api/v1/app",
            json!({
                "name": "Acme",
                "uid": "acme",
                "metadata": {"plan": "pro", "region": "eu"},
                "throttleRate": 100,
                "retryPolicy": {"kind": "fixed", "intervalSeconds": 3600,
                                "giveUpAfterSeconds": 172800}
            }),
        )
        .await;
    let acme_id = acme["id"].as_str().unwrap().to_string();
    let globex = api.create("/api/v1/app", json!({"name": "Globex"})).await;
    let globex_id = globex["id"].as_str().unwrap().to_string();

    // Loopback URLs on the discard port: nothing listens and, without --allow-target,
    // the SSRF guard would refuse them anyway.
    let ep1 = api
        .create(
            &format!("/api/v1/app/{acme_id}/endpoint"),
            json!({
                "url": "http://127.0.0.1:9/hook-a",
                "uid": "primary",
                "description": "main receiver",
                "filterTypes": ["user.created", "order.paid"],
                "channels": ["project:1", "global"],
                "headers": {"X-Tenant": "acme", "X-Trace": "on"},
                "metadata": {"team": "core"},
                "rateLimit": 50,
                "retryPolicy": {"kind": "exponential", "initialSeconds": 5, "factor": 2.0,
                                "maxIntervalSeconds": 3600, "giveUpAfterSeconds": 86400},
                "timeoutMs": 200,
                "maxConcurrency": 4,
                "signature": {"scheme": "standard", "svixHeaders": true}
            }),
        )
        .await;
    let ep1_id = ep1["id"].as_str().unwrap().to_string();
    let ep2 = api
        .create(
            &format!("/api/v1/app/{acme_id}/endpoint"),
            json!({
                "url": "http://127.0.0.1:9/hook-b",
                "secret": "customer-chosen-secret",
                "retryPolicy": {"kind": "none"},
                "signature": {"scheme": "hmac-sha256-hex", "header": "X-CablenetAI-Signature"}
            }),
        )
        .await;
    let ep2_id = ep2["id"].as_str().unwrap().to_string();
    let ep3 = api
        .create(
            &format!("/api/v1/app/{globex_id}/endpoint"),
            json!({"url": "https://127.0.0.1:9/hook-c", "signature": {"scheme": "none"}}),
        )
        .await;
    let ep3_id = ep3["id"].as_str().unwrap().to_string();

    // Rotations: one generated, then one with a key we choose.
    let base1 = format!("/api/v1/app/{acme_id}/endpoint/{ep1_id}");
    let rotated = api
        .create(
            &format!("{base1}/secret/rotate"),
            json!({"gracePeriodSeconds": 3600}),
        )
        .await;
    assert!(rotated["key"].as_str().unwrap().starts_with("whsec_"));
    let chosen = StandardSecret::generate().to_string();
    let rotated = api
        .create(&format!("{base1}/secret/rotate"), json!({"key": chosen}))
        .await;
    assert_eq!(rotated["key"], json!(chosen));

    // Headers changed through the headers sub-resource.
    let base3 = format!("/api/v1/app/{globex_id}/endpoint/{ep3_id}");
    let (s, b) = api
        .call(
            "PUT",
            &format!("{base3}/headers"),
            Some(json!({"headers": {"Authorization": "Bearer receiver-token", "X-A": "1"}})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = api
        .call(
            "PATCH",
            &format!("{base3}/headers"),
            Some(json!({"headers": {"X-B": "2"}, "deleteHeaders": ["X-A"]})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = api
        .call("PATCH", &base3, Some(json!({"disabled": true})))
        .await;
    assert_eq!(s, 200, "{b}");

    for i in 0..5 {
        api.create(
            "/api/v1/app/acme/msg",
            json!({
                "eventType": "user.created",
                "eventId": format!("evt-{i}"),
                "payload": {"id": format!("u{i}"), "n": i, "nested": {"a": [1, 2.5, null, true]},
                            "text": "héllo ✓ \"quoted\" \\ \u{1F600}"},
                "channels": ["project:1"],
                "tags": ["signup"]
            }),
        )
        .await;
    }
    api.create(
        &format!("/api/v1/app/{globex_id}/msg"),
        json!({"eventType": "order.paid", "payload": {}}),
    )
    .await;
    // A message that creates its application on the fly.
    api.create(
        "/api/v1/app/new-tenant/msg",
        json!({"eventType": "order.paid", "payload": {"total": 12.5},
               "application": {"name": "New Tenant", "metadata": {"src": "msg"}}}),
    )
    .await;

    vec![
        (acme_id.clone(), ep1_id, chosen),
        (acme_id, ep2_id, "customer-chosen-secret".to_string()),
    ]
}

#[tokio::test]
async fn sigkill_restart_keeps_everything() {
    let mut server = Server::start().await;
    let api = server.client();
    let expected_secrets = populate(&api).await;
    let portal = api
        .create("/api/v1/auth/app-portal-access/acme", json!({}))
        .await;
    let portal_token = portal["token"].as_str().unwrap().to_string();

    let before = snapshot(&api).await;
    assert_eq!(before["apps"].as_array().unwrap().len(), 3);
    assert_eq!(before["eventTypes"].as_array().unwrap().len(), 3);

    server.restart().await;
    let api = server.client();
    let after = snapshot(&api).await;
    assert_eq!(
        before, after,
        "state after a SIGKILL restart differs from before"
    );

    // Lookups by uid / eventId, the rotated secrets and the portal token survive too.
    for (app, ep, key) in &expected_secrets {
        let (s, b) = api
            .get(&format!("/api/v1/app/{app}/endpoint/{ep}/secret"))
            .await;
        assert_eq!((s, &b["key"]), (200, &json!(key)));
    }
    let (s, b) = api.get("/api/v1/app/acme/endpoint/primary").await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = api.get("/api/v1/app/acme/msg/evt-3").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["payload"]["id"], json!("u3"));
    let portal_api = api.with_token(Some(&portal_token));
    let (s, b) = portal_api.get("/api/v1/app").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"].as_array().unwrap().len(), 1);
    assert_eq!(b["data"][0]["uid"], json!("acme"));

    // Uniqueness rules still hold against the recovered data, and writing still works.
    let (s, b) = api
        .post(
            "/api/v1/app/acme/msg",
            json!({"eventType": "user.created", "eventId": "evt-0", "payload": {}}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    let (s, b) = api
        .post("/api/v1/app", json!({"name": "dup", "uid": "acme"}))
        .await;
    assert_eq!(s, 409, "{b}");
    let m = api
        .create(
            "/api/v1/app/acme/msg",
            json!({"eventType": "user.created", "eventId": "evt-after", "payload": {}}),
        )
        .await;
    let (s, b) = api.get("/api/v1/app/acme/msg?limit=1").await;
    assert_eq!(s, 200);
    assert_eq!(b["data"][0]["id"], m["id"], "newest message first: {b}");

    // And a second kill right after that acknowledged write loses nothing.
    let before = snapshot(&api).await;
    server.restart().await;
    assert_eq!(before, snapshot(&server.client()).await);
}

#[tokio::test]
async fn sigterm_exits_zero_promptly() {
    let mut server = Server::start().await;
    let api = server.client();
    let (s, _) = api.get("/api/v1/health").await;
    assert_eq!(s, 200);
    api.create("/api/v1/app", json!({"name": "x"})).await;
    // An idle keep-alive connection (the client's pool, still alive) and a connection
    // that never sends a byte must not hold the shutdown up.
    let _silent = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .expect("connect");
    let started = Instant::now();
    let status = server.terminate().await;
    let took = started.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status:?}"
    );
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
    drop(api);
}

/// A client that stalls halfway through its request headers (or a slow upload) must not
/// keep the process alive forever after SIGTERM: draining has a deadline.
#[tokio::test]
async fn sigterm_is_not_held_up_by_a_stalled_request() {
    use tokio::io::AsyncWriteExt;
    let mut server = Server::start_with(&["--shutdown-grace-secs", "2"]).await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut stalled = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stalled
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("write");
    let mut slow_upload = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow_upload
        .write_all(
            format!(
                "POST /api/v1/app HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\"",
                crate::support::ADMIN_TOKEN
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let status = server.terminate().await;
    let took = started.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status:?}"
    );
    assert!(
        took < Duration::from_secs(8),
        "SIGTERM took {took:?} with a 2 s grace"
    );
}

/// Starts `hookline serve` with no admin token configured anywhere; returns the child,
/// the stdout lines printed before the "listening" line, and the base URL.
async fn start_without_token(data_dir: &Path) -> (Child, Vec<String>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("HOOKLINE_ADMIN_TOKEN")
        .env_remove("HOOKLINE_DATABASE_URL")
        .env_remove("HOOKLINE_CONFIG")
        .env(
            "RUST_LOG",
            std::env::var("HOOKLINE_TEST_LOG").unwrap_or("warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn hookline");
    let mut lines: Lines<BufReader<ChildStdout>> =
        BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (before, base) = tokio::time::timeout(Duration::from_secs(30), async {
        let mut before = Vec::new();
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(url) = line.strip_prefix("hookline: listening on ") {
                return (before, url.trim().to_string());
            }
            before.push(line);
        }
        panic!("hookline exited before listening; stdout: {before:?}");
    })
    .await
    .expect("hookline starts within 30 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, before, base)
}

fn api_at(base: &str, token: &str) -> Api {
    Api {
        base: base.to_string(),
        token: Some(token.to_string()),
        http: reqwest::Client::new(),
    }
}

#[tokio::test]
async fn first_start_prints_a_generated_admin_token_once() {
    let tmp = tempfile::tempdir().expect("tempdir");

    let (mut child, printed, base) = start_without_token(tmp.path()).await;
    assert_eq!(
        printed.len(),
        2,
        "expected the announcement and the token before 'listening': {printed:?}"
    );
    assert_eq!(
        printed[0],
        "hookline: created an admin API token; it is shown only this once:"
    );
    let token = printed[1].trim().to_string();
    assert!(token.len() >= 32, "token too short: {token:?}");
    assert!(!token.contains(char::is_whitespace));

    let (s, b) = api_at(&base, &token).get("/api/v1/app").await;
    assert_eq!(s, 200, "the printed token works: {b}");
    api_at(&base, &token)
        .create(
            "/api/v1/app",
            json!({"name": "made with the printed token"}),
        )
        .await;
    let (s, _) = api_at(&base, "sk_not_the_printed_token_at_all")
        .get("/api/v1/app")
        .await;
    assert_eq!(s, 401);
    child.kill().await.expect("kill");

    // Second start on the same data dir: no token printed, the first one still works.
    let (mut child, printed, base) = start_without_token(tmp.path()).await;
    assert!(
        printed.is_empty(),
        "a second start must print no token: {printed:?}"
    );
    let (s, b) = api_at(&base, &token).get("/api/v1/app").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"].as_array().unwrap().len(), 1);
    child.kill().await.expect("kill");

    // Only the hash is stored: the token text appears in no file of the data dir
    // (database, WAL, anything else).
    let mut files = 0;
    let mut stack = vec![tmp.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read data dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).expect("read file");
            files += 1;
            // After the `sk_` prefix (the URL-safe base64 part may contain `_` itself,
            // so splitting at the last one could leave a few characters that match by chance).
            let secret_part = token.split_once('_').unwrap().1;
            assert!(
                !contains(&bytes, token.as_bytes()) && !contains(&bytes, secret_part.as_bytes()),
                "{} contains the admin token text",
                path.display()
            );
        }
    }
    assert!(
        tmp.path().join("hookline.sqlite").exists(),
        "expected the SQLite file in the data dir"
    );
    assert!(files >= 1);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
