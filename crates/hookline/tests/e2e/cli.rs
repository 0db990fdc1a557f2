//! The developer tools of the `hookline` binary, run as a person runs them: `hookline
//! listen` receiving real deliveries from a running server (and hand-made replays signed
//! with crates/signing), the API commands against a running server, `recover` with 200
//! failed deliveries, and the completions and man page.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::receiver::{Behavior, Receiver};
use crate::support::{wait_until, Server};

/// A running `hookline listen --port 0 ...`, its stdout collected line by line.
pub struct Listen {
    pub base: String,
    lines: Arc<Mutex<Vec<String>>>,
    _child: Child,
}

impl Listen {
    pub async fn start(args: &[&str]) -> Listen {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookline"))
            .args(["listen", "--port", "0"])
            .args(args)
            .env_remove("NO_COLOR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn hookline listen");
        let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let base = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = err.next_line().await.expect("read stderr") {
                if let Some(rest) = line.strip_prefix("hookline listen: receiving on ") {
                    return rest.split_whitespace().next().expect("url").to_string();
                }
            }
            panic!("hookline listen exited before listening");
        })
        .await
        .expect("listen starts within 30 s");
        tokio::spawn(async move { while let Ok(Some(_)) = err.next_line().await {} });
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Listen {
            base,
            lines,
            _child: child,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The `--json` lines printed so far, parsed (each must be JSON).
    pub fn entries(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect()
    }

    /// Waits until `n` JSON entries arrived, and returns them.
    pub async fn wait_entries(&self, n: usize) -> Vec<Value> {
        wait_until(
            Duration::from_secs(20),
            &format!("{n} deliveries printed"),
            || self.lines.lock().unwrap().len() >= n,
        )
        .await;
        self.entries()
    }
}

/// What a CLI command did.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// The stdout as JSON lines.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect()
    }

    /// The only JSON line.
    pub fn json(&self) -> Value {
        let mut lines = self.json_lines();
        assert_eq!(lines.len(), 1, "one JSON line: {}", self.stdout);
        lines.remove(0)
    }

    #[track_caller]
    pub fn ok(self) -> Ran {
        assert_eq!(
            self.code, 0,
            "exit {}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// `hookline ARGS` with `--url` and `--token` for `server` (given as environment
/// variables, as a person would export them), `stdin` fed in.
pub async fn hookline(server: &Server, args: &[&str], stdin: Option<&str>) -> Ran {
    hookline_as(server, &server.token, args, stdin).await
}

pub async fn hookline_as(server: &Server, token: &str, args: &[&str], stdin: Option<&str>) -> Ran {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .args(args)
        .env("HOOKLINE_URL", &server.base)
        .env("HOOKLINE_TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn hookline");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.expect("write stdin");
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("hookline {args:?} did not finish within 60 s"))
        .expect("run hookline");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCBrZXkh";
const HEX_KEY: &str = "cablenet-key-123";

async fn loopback_server() -> Server {
    Server::start_with(&["--allow-target", "127.0.0.0/8"]).await
}

/// Posts `body` with `headers` to `url` (a replay or a forgery, made by hand).
async fn post(url: &str, headers: &[(&str, String)], body: &str) {
    let mut req = reqwest::Client::new().post(url).body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.expect("post to listen");
}

#[tokio::test]
async fn listen_prints_real_deliveries_of_each_scheme_as_valid() {
    let server = loopback_server().await;
    let api = server.client();
    let std_listen = Listen::start(&["--json", "--secret", SECRET]).await;
    let hex_listen = Listen::start(&["--json", "--hmac-header", "X-Sig", "--key", HEX_KEY]).await;
    let app = api.create("/api/v1/app", json!({"name": "a"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for ep in [
        json!({"url": std_listen.url("/standard"), "secret": SECRET}),
        json!({"url": std_listen.url("/svix"), "secret": SECRET,
               "signature": {"scheme": "standard", "svixHeaders": true}}),
        json!({"url": std_listen.url("/wrong"), "secret": OTHER_SECRET}),
        json!({"url": hex_listen.url("/hex"), "secret": HEX_KEY,
               "signature": {"scheme": "hmac-sha256-hex", "header": "X-Sig"}}),
    ] {
        api.create(&format!("/api/v1/app/{app}/endpoint"), ep).await;
    }
    let msg = api
        .create(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "lead.created", "payload": {"type": "lead.created", "id": "42"}}),
        )
        .await;
    let msg_id = msg["id"].as_str().unwrap();

    let mut got = std_listen.wait_entries(3).await;
    got.sort_by_key(|e| e["path"].as_str().unwrap_or_default().to_string());
    let [standard, svix, wrong] = [&got[0], &got[1], &got[2]];
    assert_eq!(standard["path"], "/standard");
    assert_eq!(
        standard["signature"],
        json!({"result": "valid", "scheme": "standard"})
    );
    assert_eq!(standard["msgId"], msg_id);
    assert_eq!(standard["eventType"], "lead.created");
    assert_eq!(
        standard["body"],
        json!({"type": "lead.created", "id": "42"})
    );
    assert_eq!(standard["answer"]["status"], 200);
    assert_eq!(svix["path"], "/svix");
    assert_eq!(svix["signature"]["result"], "valid");
    assert!(svix["headers"]["svix-signature"].is_string(), "{svix}");
    assert_eq!(wrong["path"], "/wrong");
    assert_eq!(wrong["signature"]["result"], "invalid", "{wrong}");
    assert!(
        wrong["signature"]["reason"]
            .as_str()
            .unwrap()
            .contains("wrong secret"),
        "{wrong}"
    );
    let hex = &hex_listen.wait_entries(1).await[0];
    assert_eq!(
        hex["signature"],
        json!({"result": "valid", "scheme": "hmac-sha256-hex"}),
        "{hex}"
    );

    // The svix-* headers alone (a receiver migrating from Svix sees only those) verify too.
    let h = &svix["headers"];
    let svix_only: Vec<(&str, String)> = ["svix-id", "svix-timestamp", "svix-signature"]
        .iter()
        .map(|k| (*k, h[*k].as_str().unwrap().to_string()))
        .collect();
    let sent = delivered_bytes(svix);
    post(&std_listen.url("/replay"), &svix_only, &sent).await;
    let replay = &std_listen.wait_entries(4).await[3];
    assert_eq!(
        replay["signature"],
        json!({"result": "valid", "scheme": "standard (svix-* headers)"}),
        "{replay} (body {sent})"
    );
}

/// An ed25519 endpoint's deliveries, checked by `listen` with its `whpk_` public key (what
/// `GET .../secret` gives the customer); the same deliveries with another key are not.
#[tokio::test]
async fn listen_verifies_ed25519_deliveries_with_the_public_key() {
    let server = loopback_server().await;
    let api = server.client();
    let pair = hookline_signing::Ed25519Secret::generate();
    let public = pair.public_key().to_string();
    let other = hookline_signing::Ed25519Secret::generate()
        .public_key()
        .to_string();
    let listen = Listen::start(&["--json", "--secret", &public]).await;
    let wrong = Listen::start(&["--json", "--secret", &other]).await;
    let app = api.create("/api/v1/app", json!({"name": "ed"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for url in [listen.url("/ed25519"), wrong.url("/ed25519")] {
        let ep = api
            .create(
                &format!("/api/v1/app/{app}/endpoint"),
                json!({"url": url, "secret": pair.to_string()}),
            )
            .await;
        let (_, secret) = api
            .get(&format!(
                "/api/v1/app/{app}/endpoint/{}/secret",
                ep["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(secret["key"], public, "the customer gets the public key");
    }
    api.create(
        &format!("/api/v1/app/{app}/msg"),
        json!({"eventType": "lead.created", "payload": {"id": "7"}}),
    )
    .await;
    let got = &listen.wait_entries(1).await[0];
    assert_eq!(
        got["signature"],
        json!({"result": "valid", "scheme": "ed25519"}),
        "{got}"
    );
    let bad = &wrong.wait_entries(1).await[0];
    assert_eq!(bad["signature"]["result"], "invalid", "{bad}");
}

/// The delivered body's bytes: what `listen --json` parsed, serialized again compactly
/// (the test's client sent the payload compact with sorted keys, so these are the same).
fn delivered_bytes(entry: &Value) -> String {
    serde_json::to_string(&entry["body"]).unwrap()
}

#[tokio::test]
async fn listen_says_why_a_tampered_or_stale_delivery_is_invalid() {
    use hookline_signing::{sign_standard, StandardSecret};
    let listen = Listen::start(&["--secret", SECRET]).await;
    let key = StandardSecret::parse(SECRET).unwrap();
    let now = chrono::Utc::now().timestamp();
    let signed = |id: &str, ts: i64, body: &str| {
        vec![
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", ts.to_string()),
            (
                "webhook-signature",
                sign_standard(key.key(), id, ts, body.as_bytes()),
            ),
            ("content-type", "application/json".to_string()),
        ]
    };
    post(
        &listen.url("/ok"),
        &signed("msg_ok", now, r#"{"a":1}"#),
        r#"{"a":1}"#,
    )
    .await;
    post(
        &listen.url("/tampered"),
        &signed("msg_tampered", now, r#"{"amount":1}"#),
        r#"{"amount":1000}"#,
    )
    .await;
    post(
        &listen.url("/old"),
        &signed("msg_old", now - 600, r#"{"a":1}"#),
        r#"{"a":1}"#,
    )
    .await;
    let other = StandardSecret::parse(OTHER_SECRET).unwrap();
    post(
        &listen.url("/other"),
        &[
            ("webhook-id", "msg_other".into()),
            ("webhook-timestamp", now.to_string()),
            (
                "webhook-signature",
                sign_standard(other.key(), "msg_other", now, b"{}"),
            ),
        ],
        "{}",
    )
    .await;
    wait_until(Duration::from_secs(10), "four deliveries printed", || {
        listen.output().matches("signature:").count() >= 4
    })
    .await;
    let out = listen.output();
    // Plain text when piped: no colour codes.
    assert!(!out.contains('\x1b'), "{out}");
    let verdict_of = |msg: &str| {
        let block: Vec<&str> = out
            .split("\n\n")
            .find(|b| b.contains(msg))
            .unwrap_or_else(|| panic!("{msg} not printed: {out}"))
            .lines()
            .collect();
        block
            .iter()
            .find_map(|l| l.trim().strip_prefix("signature: "))
            .unwrap_or_else(|| panic!("no signature line for {msg}: {out}"))
            .to_string()
    };
    assert_eq!(verdict_of("msg_ok"), "valid (standard)");
    assert_eq!(
        verdict_of("msg_tampered"),
        "invalid: signature does not match (wrong secret, or the body was altered) (standard)"
    );
    assert_eq!(
        verdict_of("msg_other"),
        "invalid: signature does not match (wrong secret, or the body was altered) (standard)"
    );
    assert_eq!(
        verdict_of("msg_old"),
        "invalid: expired timestamp (standard)"
    );
    // The body is shown pretty-printed.
    assert!(out.contains("  {\n    \"amount\": 1000\n  }"), "{out}");
}

#[tokio::test]
async fn listen_status_500_makes_hookline_retry() {
    let server = loopback_server().await;
    let api = server.client();
    let listen = Listen::start(&["--json", "--status", "500", "--secret", SECRET]).await;
    let app = api.create("/api/v1/app", json!({"name": "a"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.create(
        &format!("/api/v1/app/{app}/endpoint"),
        json!({"url": listen.url("/"), "secret": SECRET,
               "retryPolicy": {"kind": "schedule", "delaysSeconds": [1]}}),
    )
    .await;
    let msg = api
        .create(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "e", "payload": {}}),
        )
        .await;
    let msg_id = msg["id"].as_str().unwrap();
    let got = listen.wait_entries(2).await;
    assert!(got
        .iter()
        .all(|e| e["msgId"] == msg_id && e["answer"]["status"] == 500));
    assert!(got.iter().all(|e| e["signature"]["result"] == "valid"));
    // The attempt log, through the CLI, shows both 500s.
    let mut attempts = Vec::new();
    for _ in 0..100 {
        attempts = hookline(
            &server,
            &["attempts", &app, "--msg", msg_id, "--json"],
            None,
        )
        .await
        .ok()
        .json_lines();
        if attempts.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(attempts
        .iter()
        .all(|a| a["responseStatusCode"] == 500 && a["statusText"] == "fail"));
}

#[tokio::test]
async fn api_commands_drive_a_running_server() {
    let server = loopback_server().await;
    let listen = Listen::start(&["--json", "--secret", SECRET]).await;
    let run = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let server = &server;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            hookline(server, &args, None).await.ok()
        }
    };

    // Applications.
    let app = run(&["app", "create", "Acme Corp", "--uid", "acme", "--json"])
        .await
        .json();
    assert_eq!(app["name"], "Acme Corp");
    let app_id = app["id"].as_str().unwrap().to_string();
    let listed = run(&["app", "list", "--json"]).await.json_lines();
    assert!(
        listed.iter().any(|a| a["id"] == app_id.as_str()),
        "{listed:?}"
    );
    let table = run(&["app", "list"]).await.stdout;
    let mut rows = table.lines();
    let header: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["ID", "UID", "NAME", "CREATED"]);
    assert!(
        rows.any(|r| r.starts_with(&app_id) && r.contains("Acme Corp")),
        "{table}"
    );
    let shown = run(&["app", "get", "acme"]).await.stdout;
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("id") && l.ends_with(&app_id)),
        "{shown}"
    );

    // Event types.
    let schema = r#"{"type": "object", "required": ["id"]}"#;
    let et = run(&[
        "event-type",
        "add",
        "lead.created",
        "--description",
        "A new lead",
        "--schema",
        schema,
        "--json",
    ])
    .await
    .json();
    assert_eq!(et["name"], "lead.created");
    assert_eq!(et["schemas"]["1"]["required"], json!(["id"]));
    let types = run(&["event-type", "list", "--json"]).await.json_lines();
    assert!(types.iter().any(|t| t["name"] == "lead.created"));

    // Endpoints.
    let url = listen.url("/leads");
    let ep = run(&[
        "endpoint",
        "add",
        "acme",
        &url,
        "--event-type",
        "lead.created",
        "--uid",
        "leads",
        "--secret",
        SECRET,
        "--with",
        r#"{"retryPolicy": {"kind": "none"}}"#,
        "--json",
    ])
    .await
    .json();
    assert_eq!(ep["url"], url.as_str());
    assert_eq!(ep["filterTypes"], json!(["lead.created"]));
    assert_eq!(ep["retryPolicy"], json!({"kind": "none"}));
    let ep_id = ep["id"].as_str().unwrap().to_string();
    let eps = run(&["endpoint", "list", "acme", "--json"])
        .await
        .json_lines();
    assert_eq!(eps.len(), 1);
    assert_eq!(
        run(&["endpoint", "get", "acme", "leads", "--json"])
            .await
            .json()["id"],
        ep_id.as_str()
    );
    assert_eq!(
        run(&["endpoint", "secret", "acme", "leads"])
            .await
            .stdout
            .trim(),
        SECRET
    );
    let rotated = run(&["endpoint", "rotate", "acme", "leads", "--json"])
        .await
        .json();
    let new_key = rotated["key"].as_str().unwrap();
    assert_ne!(new_key, SECRET);
    assert_eq!(
        run(&["endpoint", "secret", "acme", "leads"])
            .await
            .stdout
            .trim(),
        new_key
    );
    let disabled = run(&["endpoint", "disable", "acme", "leads"]).await.stdout;
    assert_eq!(disabled.trim(), format!("disabled endpoint {ep_id}"));
    assert_eq!(
        run(&["endpoint", "get", "acme", "leads", "--json"])
            .await
            .json()["disabled"],
        true
    );
    run(&["endpoint", "enable", "acme", "leads"]).await;
    assert_eq!(
        run(&["endpoint", "get", "acme", "leads", "--json"])
            .await
            .json()["disabled"],
        false
    );

    // Send: from a file, and from stdin, payload bytes kept as given.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lead.json");
    std::fs::write(&file, "{\"id\": \"42\",  \"name\": \"Ada\"}\n").unwrap();
    let at_file = format!("@{}", file.display());
    let msg = run(&[
        "send",
        "acme",
        "lead.created",
        "--payload",
        &at_file,
        "--event-id",
        "lead-42",
        "--json",
    ])
    .await
    .json();
    assert_eq!(msg["eventId"], "lead-42");
    let msg_id = msg["id"].as_str().unwrap().to_string();
    let from_stdin = hookline(
        &server,
        &["send", "acme", "lead.created", "--payload", "-"],
        Some(r#"{"id": "43"}"#),
    )
    .await
    .ok()
    .stdout;
    assert!(
        from_stdin
            .lines()
            .any(|l| l.starts_with("id") && l.contains("msg_")),
        "{from_stdin}"
    );
    let got = listen.wait_entries(2).await;
    // The rotated secret signs now; the old one still does during the grace period.
    assert!(
        got.iter().all(|e| e["signature"]["result"] == "valid"),
        "{got:?}"
    );
    assert!(got
        .iter()
        .any(|e| e["body"] == json!({"id": "42", "name": "Ada"})));

    // Attempts, as JSON and as a table.
    let mut attempts = Vec::new();
    for _ in 0..100 {
        attempts = run(&["attempts", "acme", "--msg", "lead-42", "--json"])
            .await
            .json_lines();
        if !attempts.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["msgId"], msg_id.as_str());
    assert_eq!(attempts[0]["responseStatusCode"], 200);
    let table = run(&["attempts", "acme", "--endpoint", "leads"])
        .await
        .stdout;
    assert!(table.starts_with("TIME"), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains(" success ")).count(),
        2,
        "{table}"
    );

    // A bad token: the API's detail, a hint, exit 1.
    let bad = hookline_as(&server, "not-a-token", &["app", "list"], None).await;
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(bad.stdout.is_empty());
    let (status, body) = server
        .client()
        .with_token(Some("not-a-token"))
        .get("/api/v1/app")
        .await;
    assert_eq!(status, 401);
    let detail = body["detail"].as_str().unwrap();
    assert_eq!(
        bad.stderr.trim(),
        format!(
            "hookline: {detail} (HTTP 401 {}); check --token or HOOKLINE_TOKEN",
            body["code"].as_str().unwrap()
        )
    );

    // A missing application: the API's 404 detail, exit 1.
    let (status, body) = server.client().get("/api/v1/app/no-such-app").await;
    assert_eq!(status, 404);
    let missing = hookline(&server, &["app", "get", "no-such-app"], None).await;
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains(body["detail"].as_str().unwrap())
            && missing.stderr.contains("HTTP 404"),
        "{}",
        missing.stderr
    );
    // Invalid input: the API's field errors.
    let invalid = hookline(&server, &["endpoint", "add", "acme", "not a url"], None).await;
    assert_eq!(invalid.code, 1);
    assert!(
        invalid.stderr.contains("url") && invalid.stderr.contains("HTTP 422"),
        "{}",
        invalid.stderr
    );
    let bad_payload = hookline(
        &server,
        &["send", "acme", "lead.created", "--payload", "{oops"],
        None,
    )
    .await;
    assert_eq!(bad_payload.code, 1);
    assert!(
        bad_payload
            .stderr
            .starts_with("hookline: --payload is not JSON"),
        "{}",
        bad_payload.stderr
    );

    // Delete, after which the application is gone.
    assert_eq!(
        run(&["app", "delete", "acme", "--json"]).await.json(),
        json!({"deleted": "acme"})
    );
    assert_eq!(
        hookline(&server, &["app", "get", "acme"], None).await.code,
        1
    );
}

#[tokio::test]
async fn attempts_follow_prints_new_attempts_as_they_happen() {
    let server = loopback_server().await;
    let recv = Receiver::start().await;
    let api = server.client();
    let (app, ep) =
        crate::support::app_with_endpoint(&api, json!({"url": recv.url("/hook")})).await;
    let send = || async {
        api.create(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "e", "payload": {}}),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = send().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .args(["attempts", &app, "--endpoint", &ep, "--follow", "--json"])
        .env("HOOKLINE_URL", &server.base)
        .env("HOOKLINE_TOKEN", &server.token)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut lines).await["msgId"], first.as_str());
    let second = send().await;
    assert_eq!(next_line(&mut lines).await["msgId"], second.as_str());
    let third = send().await;
    assert_eq!(next_line(&mut lines).await["msgId"], third.as_str());
    child.kill().await.unwrap();
}

async fn next_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("an attempt line within 20 s")
        .unwrap()
        .expect("still following");
    serde_json::from_str(&line).unwrap()
}

#[tokio::test]
async fn recover_resends_200_failed_deliveries_and_waits_for_them() {
    let server = loopback_server().await;
    let recv = Receiver::start().await;
    recv.set("/hook", Behavior::Status(500, vec![]));
    let api = server.client();
    let (app, ep) = crate::support::app_with_endpoint(
        &api,
        json!({"url": recv.url("/hook"), "retryPolicy": {"kind": "none"}}),
    )
    .await;
    for i in 0..200 {
        api.create(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "e", "payload": {"i": i}}),
        )
        .await;
    }
    let stats = format!("/api/v1/app/{app}/endpoint/{ep}/stats");
    let (_, s) = api.get_until(&stats, |s| s["fail"] == 200).await;
    assert_eq!(s["fail"], 200, "{s}");
    // The receiver is fixed: it answers 200 now.
    recv.set("/hook", Behavior::Status(200, vec![]));
    let before = recv.count();
    let ran = hookline(&server, &["recover", &app, &ep, "--since", "1h"], None)
        .await
        .ok();
    assert_eq!(
        ran.stdout.trim(),
        "recovered 200 deliveries: 200 delivered, 0 failed"
    );
    // It ended only once all were delivered.
    assert_eq!(recv.count() - before, 200);
    let (_, s) = api.get(&stats).await;
    assert_eq!(
        (s["success"].as_u64(), s["fail"].as_u64()),
        (Some(200), Some(0)),
        "{s}"
    );
    // Nothing is left to recover.
    let again = hookline(
        &server,
        &["recover", &app, &ep, "--since", "1h", "--json"],
        None,
    )
    .await
    .ok();
    assert_eq!(again.json(), json!({"recovered": 0}));
}

#[tokio::test]
async fn completions_and_man_pages_cover_the_commands() {
    let run = |args: &'static [&'static str]| async move {
        let out = Command::new(env!("CARGO_BIN_EXE_hookline"))
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    for shell in ["bash", "zsh", "fish"] {
        let script = run(match shell {
            "bash" => &["completions", "bash"],
            "zsh" => &["completions", "zsh"],
            _ => &["completions", "fish"],
        })
        .await;
        for word in [
            "listen",
            "recover",
            "event-type",
            "allow-target",
            "hmac-header",
        ] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let page = run(&["man"]).await;
    assert!(
        page.starts_with(".ie") && page.contains(".TH hookline 1"),
        "{page}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    for page in [
        "hookline.1",
        "hookline-listen.1",
        "hookline-serve.1",
        "hookline-endpoint-add.1",
    ] {
        assert!(dir.path().join(page).is_file(), "{page} not written");
    }
}

/// `hookline ... | head -1`: once the reader is gone, the command ends quietly with
/// status 0 (no panic, no "Broken pipe" message), as ripgrep does.
#[tokio::test]
async fn a_closed_stdout_ends_the_command_quietly() {
    let server = Server::start().await;
    let cases: [&[&str]; 2] = [&["completions", "bash"], &["app", "list", "--json"]];
    for args in cases {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookline"))
            .args(args)
            .env("HOOKLINE_URL", &server.base)
            .env("HOOKLINE_TOKEN", &server.token)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Closed before the child (still starting) writes a byte.
        drop(child.stdout.take());
        let out = child.wait_with_output().await.unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
}
