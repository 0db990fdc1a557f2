//! Seed 002, CablenetAI (a real-estate CRM): six typed events with documented payloads,
//! signed with a hex HMAC-SHA256 of the body in `X-CablenetAI-Signature` (the
//! customer's own secret as the key), 10 s to answer, exponential backoff for up to
//! 24 h. The receiver is the seed's own `verify` function run by Node
//! (`examples/cablenetai/receiver.mjs`); all configuration comes from
//! `examples/cablenetai/`, so the example and this test cannot drift apart.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{self, require_tool, Server};

const EVENT_TYPES: [&str; 6] = [
    "lead.created",
    "lead.status_changed",
    "contract.signed",
    "payment.received",
    "appointment.scheduled",
    "mls.collaboration.created",
];

fn example_path(file: &str) -> String {
    support::example_path("cablenetai", file)
}

fn example(file: &str) -> String {
    support::example_text("cablenetai", file)
}

fn example_json(file: &str) -> Value {
    support::example_json("cablenetai", file)
}

/// `examples/cablenetai/receiver.mjs` under Node, on a free loopback port; what it
/// prints (one JSON line per request: path, valid, signature, body) is collected.
struct NodeReceiver {
    base: String,
    seen: Arc<Mutex<Vec<Value>>>,
    _child: Child,
}

impl NodeReceiver {
    async fn start(node: &Path, secret: &str) -> NodeReceiver {
        let mut child = Command::new(node)
            .arg(example_path("receiver.mjs"))
            .env("PORT", "0")
            .env("CABLENETAI_SECRET", secret)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let base = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.expect("read node stdout") {
                if let Some(url) = line.strip_prefix("listening on ") {
                    return url.trim().to_string();
                }
            }
            panic!("the node receiver exited before listening");
        })
        .await
        .expect("the node receiver listens within 20 s");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("receiver printed {line:?}: {e}"));
                sink.lock().unwrap().push(v);
            }
        });
        NodeReceiver {
            base,
            seen,
            _child: child,
        }
    }

    fn seen_at(&self, path: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["path"] == json!(path))
            .cloned()
            .collect()
    }

    async fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Value> {
        let end = Instant::now() + timeout;
        while self.seen_at(path).len() < n && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = self.seen_at(path);
        assert!(got.len() >= n, "{path}: {} of {n} requests", got.len());
        got
    }
}

/// Sends the body straight to the receiver with the given signature; returns the status.
async fn post_signed(url: &str, body: &str, signature: &str) -> u16 {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("X-CablenetAI-Signature", signature)
        .body(body.to_string())
        .send()
        .await
        .expect("post to the node receiver")
        .status()
        .as_u16()
}

/// `body` with one byte changed: its last ASCII digit, replaced by another digit.
fn tamper(body: &str) -> String {
    let mut bytes = body.as_bytes().to_vec();
    let i = bytes
        .iter()
        .rposition(u8::is_ascii_digit)
        .expect("a digit to change");
    bytes[i] = if bytes[i] == b'9' { b'0' } else { bytes[i] + 1 };
    String::from_utf8(bytes).unwrap()
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn cablenetai_signed_events_verified_by_the_seeds_node_code() {
    let test = "cablenetai_signed_events_verified_by_the_seeds_node_code";
    let Some(node) = require_tool("node", test) else {
        return;
    };
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8"]).await;
    let admin = server.client();
    let app_in = example_json("app.json");
    let app = app_in["uid"]
        .as_str()
        .expect("app.json has a uid")
        .to_string();
    admin.create("/api/v1/app", app_in).await;

    // The six event types, validating payloads against schemas whose examples are the
    // sample payloads.
    for name in EVENT_TYPES {
        let et = admin
            .create(
                "/api/v1/event-type",
                example_json(&format!("event-types/{name}.json")),
            )
            .await;
        assert_eq!(et["name"], json!(name));
        assert_eq!(et["validatePayloads"], json!(true), "{et}");
        assert_eq!(
            et["schemas"]["1"]["examples"][0],
            example_json(&format!("payloads/{name}.json")),
            "{name}"
        );
    }

    // The customer's endpoint: their URL and their own secret string.
    let ep_in = example_json("endpoint.json");
    let secret = ep_in["secret"]
        .as_str()
        .expect("endpoint.json has a secret");
    let rx = NodeReceiver::start(&node, secret).await;
    let hook = "/webhooks/cablenetai";
    let mut body = ep_in.clone();
    body["url"] = json!(format!("{}{hook}", rx.base));
    let ep = admin
        .create(&format!("/api/v1/app/{app}/endpoint"), body)
        .await;
    let ep_id = ep["id"].as_str().unwrap().to_string();
    assert_eq!(
        ep["signature"],
        json!({"scheme": "hmac-sha256-hex", "header": "X-CablenetAI-Signature"}),
        "{ep}"
    );
    assert_eq!(ep["timeoutMs"], json!(10000), "{ep}");
    assert_eq!(ep["retryPolicy"], ep_in["retryPolicy"], "{ep}");
    assert_eq!(ep["filterTypes"], json!(EVENT_TYPES), "{ep}");
    let (_, s) = admin
        .get(&format!("/api/v1/app/{app}/endpoint/{ep_id}/secret"))
        .await;
    assert_eq!(
        s["key"],
        json!(secret),
        "the secret as the customer gave it"
    );

    // Payloads that break the documented shapes are refused, naming the path.
    let bad = [
        ("payment.received", "method", json!("bitcoin")),
        ("mls.collaboration.created", "split_pct", json!(150)),
        ("lead.created", "phone", json!("809-555-1234")),
        ("contract.signed", "total_amount", json!("185000.50")),
        ("appointment.scheduled", "contact_id", json!("not-a-uuid")),
    ];
    for (name, field, value) in bad {
        let mut payload = example_json(&format!("payloads/{name}.json"));
        payload[field] = value;
        let (status, err) = admin
            .post(
                &format!("/api/v1/app/{app}/msg"),
                json!({"eventType": name, "payload": payload}),
            )
            .await;
        assert_eq!(status, 422, "{name}.{field}: {err}");
        assert_eq!(
            err["detail"][0]["loc"],
            json!(["body", "payload", field]),
            "{err}"
        );
    }
    // Nullable fields take null, as documented.
    let mut lead = example_json("payloads/lead.created.json");
    for field in ["phone", "email", "property_id"] {
        lead[field] = Value::Null;
    }
    let (status, err) = admin
        .post(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "lead.created", "payload": lead}),
        )
        .await;
    assert_eq!(status, 202, "{err}");

    // One message per event type, each payload the sample file's text.
    let mut sent = Vec::new();
    for name in EVENT_TYPES {
        let text = example(&format!("payloads/{name}.json"));
        let (status, msg) = admin
            .post_raw(
                &format!("/api/v1/app/{app}/msg"),
                format!(r#"{{"eventType": "{name}", "payload": {text}}}"#),
            )
            .await;
        assert_eq!(status, 202, "{name}: {msg}");
        sent.push((name, msg["id"].as_str().unwrap().to_string(), text));
    }
    // The seed's verify accepted every delivery (the null-fields lead too).
    let got = rx.wait_for(hook, 7, Duration::from_secs(20)).await;
    for r in &got {
        assert_eq!(r["valid"], json!(true), "rejected: {r}");
        let sig = r["signature"].as_str().unwrap();
        assert!(
            sig.len() == 64 && sig.bytes().all(|b| b.is_ascii_hexdigit()),
            "hex HMAC-SHA256: {sig}"
        );
    }
    for (name, _, text) in &sent {
        assert!(
            got.iter().any(|r| r["body"] == json!(text.trim_end())),
            "{name}: the body is the payload file's bytes"
        );
    }
    // ... and hookline recorded each as a 200.
    for (name, msg_id, _) in &sent {
        let path = format!("/api/v1/app/{app}/attempt/msg/{msg_id}");
        let mut attempts = Value::Null;
        for _ in 0..100 {
            attempts = admin.get(&path).await.1;
            if attempts["data"].as_array().is_some_and(|a| !a.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            attempts["data"][0]["status"],
            json!(0),
            "{name}: {attempts}"
        );
        assert_eq!(
            attempts["data"][0]["responseStatusCode"],
            json!(200),
            "{name}: {attempts}"
        );
    }

    // A tampered body (one byte changed, same signature) is rejected; the recorded one,
    // replayed unchanged, still verifies.
    let url = format!("{}{hook}", rx.base);
    for r in &got {
        let body = r["body"].as_str().unwrap();
        let sig = r["signature"].as_str().unwrap();
        let changed = tamper(body);
        assert_eq!(changed.len(), body.len());
        assert_ne!(changed, body);
        assert_eq!(post_signed(&url, &changed, sig).await, 401, "{changed}");
        assert_eq!(post_signed(&url, body, sig).await, 200, "{body}");
    }

    // A receiver holding another secret rejects (401) what hookline signs, and hookline
    // retries on the exponential schedule: 5 s, then 10 s later (±20 % jitter).
    admin
        .create(
            "/api/v1/app",
            json!({"name": "Secreto viejo", "uid": "org-stale"}),
        )
        .await;
    let stale_hook = "/webhooks/stale";
    let mut body = ep_in.clone();
    body["url"] = json!(format!("{}{stale_hook}", rx.base));
    body["secret"] = json!("un-secreto-que-ya-no-es");
    admin.create("/api/v1/app/org-stale/endpoint", body).await;
    let text = example("payloads/lead.created.json");
    let (status, msg) = admin
        .post_raw(
            "/api/v1/app/org-stale/msg",
            format!(r#"{{"eventType": "lead.created", "payload": {text}}}"#),
        )
        .await;
    assert_eq!(status, 202, "{msg}");
    let msg_id = msg["id"].as_str().unwrap();
    let stale = rx.wait_for(stale_hook, 2, Duration::from_secs(15)).await;
    assert!(
        stale.iter().all(|r| r["valid"] == json!(false)),
        "{stale:?}"
    );
    let attempts_path = format!("/api/v1/app/org-stale/attempt/msg/{msg_id}");
    let mut attempts = Vec::new();
    for _ in 0..100 {
        attempts = admin.get(&attempts_path).await.1["data"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if attempts.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let mut times: Vec<DateTime<Utc>> = attempts.iter().map(|a| time(&a["timestamp"])).collect();
    times.sort();
    for a in &attempts {
        assert_eq!(a["responseStatusCode"], json!(401), "{a}");
        assert_eq!(a["status"], json!(2), "{a}");
    }
    let gap = (times[1] - times[0]).num_milliseconds();
    assert!(
        (3900..=6500).contains(&gap),
        "first retry {gap} ms after the first attempt (5 s ± 20 %)"
    );
    let (_, rows) = admin
        .get(&format!("/api/v1/app/org-stale/msg/{msg_id}/endpoint"))
        .await;
    assert_eq!(rows["data"][0]["status"], json!(1), "still pending: {rows}");
    let next = (time(&rows["data"][0]["nextAttempt"]) - times[1]).num_milliseconds();
    assert!(
        (7900..=12500).contains(&next),
        "second retry {next} ms after the first retry (10 s ± 20 %): {rows}"
    );

    // The whole schedule: exponential from 5 s, never past 24 h after the first try.
    let (status, sched) = admin
        .get(&format!(
            "/api/v1/app/{app}/endpoint/{ep_id}/retry-schedule"
        ))
        .await;
    assert_eq!(status, 200, "{sched}");
    assert_eq!(sched["source"], json!("endpoint"), "{sched}");
    assert_eq!(sched["retryPolicy"], ep_in["retryPolicy"], "{sched}");
    let policy = &ep_in["retryPolicy"];
    let initial = policy["initialSeconds"].as_u64().unwrap();
    let factor = policy["factor"].as_f64().unwrap();
    let max_interval = policy["maxIntervalSeconds"].as_u64().unwrap();
    let give_up = policy["giveUpAfterSeconds"].as_u64().unwrap();
    assert_eq!(give_up, 86_400, "24 h");
    let offsets: Vec<u64> = sched["retryOffsetsSeconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(offsets.len() >= 10, "{sched}");
    assert_eq!(sched["attempts"], json!(offsets.len() + 1), "{sched}");
    let last = *offsets.last().unwrap();
    assert!(last <= give_up, "last retry {last} s after the first try");
    let gaps: Vec<u64> = std::iter::once(offsets[0])
        .chain(offsets.windows(2).map(|w| w[1] - w[0]))
        .collect();
    assert_eq!(gaps[0], initial, "{gaps:?}");
    for w in gaps.windows(2) {
        let want = ((w[0] as f64 * factor).round() as u64).min(max_interval);
        assert_eq!(
            w[1], want,
            "each delay is the previous times {factor}: {gaps:?}"
        );
    }
    // It keeps trying as long as it may: one more delay would pass the 24 h.
    let next_gap = ((*gaps.last().unwrap() as f64 * factor).round() as u64).min(max_interval);
    assert!(last + next_gap > give_up, "{gaps:?}");
}
