//! Seed 003, Treble (a conversational platform): six webhook kinds, four configured per
//! conversation flow and two globally. Flows are hookline channels: a flow's endpoints
//! carry the flow's channel, global endpoints none. The receivers are the seed's own
//! express sample (`examples/treble/receiver.js`, with `isValidRequest` implemented as
//! Standard Webhooks verification) run by Node with express from npm. All configuration
//! comes from `examples/treble/`, so the example and this test cannot drift apart.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hookline_signing::{sign_standard, StandardSecret};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{self, require_tool, Server};

const TEST: &str = "seed_treble";

/// The six webhook kinds of the seed, as event types (file names under `event-types/`).
const KINDS: [&str; 6] = [
    "message_read",
    "message_delivered",
    "message_response",
    "opt_out",
    "conversation_closed",
    "hsm_status_changed",
];

/// The endpoint files: two flows and the global webhooks.
const ENDPOINTS: [&str; 3] = ["flow-a", "flow-b", "global"];

fn example_path(file: &str) -> String {
    support::example_path("treble", file)
}

fn example_json(file: &str) -> Value {
    support::example_json("treble", file)
}

/// One `node receiver.js` (the seed's express sample), on a free loopback port.
struct Express {
    port: u16,
    receipts: std::path::PathBuf,
    _child: Child,
}

impl Express {
    async fn start(node: &Path, dir: &Path, name: &str, secret: &str) -> Express {
        let receipts = dir.join(format!("receipts-{name}.jsonl"));
        let mut child = Command::new(node)
            .arg("receiver.js")
            .current_dir(dir)
            .env("PORT", "0")
            .env("WEBHOOK_SECRET", secret)
            .env("RECEIPTS_FILE", &receipts)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let port = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.expect("read node stdout") {
                if let Some(p) = line.strip_prefix("Servidor escuchando en el puerto ") {
                    return p.trim().parse::<u16>().expect("port");
                }
            }
            panic!("the express receiver exited before listening");
        })
        .await
        .expect("express listens within 20 s");
        // Keep draining stdout (the sample logs every event) so node never blocks.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Express {
            port,
            receipts,
            _child: child,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/webhook", self.port)
    }

    /// What the sample accepted (after `isValidRequest`), in order.
    fn accepted(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.receipts)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("receipt line is JSON"))
            .collect()
    }
}

async fn wait_until(timeout: Duration, cond: impl Fn() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test(flavor = "multi_thread")]
async fn treble_flow_webhooks_by_channel_global_webhooks_for_all_verified_by_express() {
    let (Some(node), Some(npm)) = (require_tool("node", TEST), require_tool("npm", TEST)) else {
        return;
    };

    // The seed's express sample, with express from the npm registry, in a scratch dir.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("package.json"),
        r#"{"name": "treble-receiver", "private": true}"#,
    )
    .unwrap();
    let install = tokio::time::timeout(
        Duration::from_secs(300),
        Command::new(&npm)
            .args([
                "install",
                "express",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("npm install express within 5 min")
    .expect("run npm");
    assert!(
        install.status.success(),
        "npm install express failed: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    std::fs::copy(example_path("receiver.js"), dir.path().join("receiver.js"))
        .expect("copy receiver.js");

    let server = Server::start_with(&["--allow-target", "127.0.0.0/8"]).await;
    let api = server.client();
    let app_in = example_json("app.json");
    let app = app_in["uid"]
        .as_str()
        .expect("app.json has a uid")
        .to_string();
    api.create("/api/v1/app", app_in).await;

    // The six webhook kinds, each with its schema and payload validation on; each
    // schema's example is the sample payload.
    for kind in KINDS {
        let et = api
            .create(
                "/api/v1/event-type",
                example_json(&format!("event-types/{kind}.json")),
            )
            .await;
        assert_eq!(et["name"], json!(kind));
        assert_eq!(et["validatePayloads"], json!(true), "{et}");
        assert_eq!(
            et["schemas"]["1"]["examples"][0],
            example_json(&format!("payloads/{kind}.json"))
        );
    }

    // Endpoints as in the files; each gets its own express receiver with its own secret,
    // then the endpoint is pointed at it.
    let mut ep_ids: HashMap<&str, String> = HashMap::new();
    let mut receivers: HashMap<&str, Express> = HashMap::new();
    let mut secrets: HashMap<&str, String> = HashMap::new();
    for name in ENDPOINTS {
        let body = example_json(&format!("endpoints/{name}.json"));
        let ep = api
            .create(&format!("/api/v1/app/{app}/endpoint"), body.clone())
            .await;
        assert_eq!(ep["channels"], body["channels"], "{ep}");
        assert_eq!(ep["filterTypes"], body["filterTypes"], "{ep}");
        let id = ep["id"].as_str().unwrap().to_string();
        let (status, secret) = api
            .get(&format!("/api/v1/app/{app}/endpoint/{id}/secret"))
            .await;
        assert_eq!(status, 200, "{secret}");
        let secret = secret["key"].as_str().expect("secret key").to_string();
        let express = Express::start(&node, dir.path(), name, &secret).await;
        let (status, patched) = api
            .call(
                "PATCH",
                &format!("/api/v1/app/{app}/endpoint/{id}"),
                Some(json!({"url": express.url()})),
            )
            .await;
        assert_eq!(status, 200, "{patched}");
        ep_ids.insert(name, id);
        receivers.insert(name, express);
        secrets.insert(name, secret);
    }
    // A flow endpoint carries its flow's channel; the global one has none.
    assert_eq!(
        example_json("endpoints/flow-a.json")["channels"],
        json!(["flow-a"])
    );
    assert_eq!(
        example_json("endpoints/flow-b.json")["channels"],
        json!(["flow-b"])
    );
    assert!(example_json("endpoints/global.json")
        .get("channels")
        .is_none());

    // validatePayloads: a body whose `event` is not its type's is refused, naming the path.
    let mut wrong = example_json("payloads/message_read.json");
    wrong["event"] = json!("message_delivered");
    let (status, err) = api
        .post(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "message_read", "channels": ["flow-a"], "payload": wrong}),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    let locs: Vec<&Value> = err["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["loc"])
        .collect();
    assert_eq!(locs, vec![&json!(["body", "payload", "event"])], "{err}");
    let mut no_session = example_json("payloads/opt_out.json");
    no_session["data"]
        .as_object_mut()
        .unwrap()
        .remove("session_id");
    let (status, err) = api
        .post(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "opt_out", "channels": ["flow-a"], "payload": no_session}),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["detail"][0]["loc"], json!(["body", "payload", "data"]));

    // The messages: (kind, the flow it happened in, which endpoint must get it).
    let plan: [(&str, Option<&str>, Option<&str>); 8] = [
        ("message_read", Some("flow-a"), Some("flow-a")),
        ("message_delivered", Some("flow-a"), Some("flow-a")),
        ("message_response", Some("flow-a"), Some("flow-a")),
        ("opt_out", Some("flow-a"), Some("flow-a")),
        ("message_read", Some("flow-b"), Some("flow-b")),
        // A conversation of flow A closed: global webhook, so the channel-less global
        // endpoint gets it although the message is tagged flow-a.
        ("conversation_closed", Some("flow-a"), Some("global")),
        // An HSM template changed state: not about any flow.
        ("hsm_status_changed", None, Some("global")),
        // A flow kind without a flow: no flow endpoint wants it, and the global one is
        // not subscribed to it.
        ("message_read", None, None),
    ];
    let mut sent: Vec<(String, &str, Option<&str>)> = Vec::new();
    for (kind, flow, target) in plan {
        let mut body = json!({
            "eventType": kind,
            "payload": example_json(&format!("payloads/{kind}.json")),
        });
        if let Some(flow) = flow {
            body["channels"] = json!([flow]);
        }
        let msg = api.create(&format!("/api/v1/app/{app}/msg"), body).await;
        assert_eq!(msg["channels"], json!(flow.map(|f| vec![f])), "{msg}");
        sent.push((msg["id"].as_str().unwrap().to_string(), kind, target));
    }

    let expected = |name: &str| -> BTreeSet<String> {
        sent.iter()
            .filter(|(_, _, t)| *t == Some(name))
            .map(|(id, _, _)| id.clone())
            .collect()
    };
    let all_in = wait_until(Duration::from_secs(30), || {
        ENDPOINTS
            .iter()
            .all(|n| receivers[n].accepted().len() >= expected(n).len())
    })
    .await;
    // Give a wrong delivery (or a retry) time to show up before judging.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for name in ENDPOINTS {
        let got = receivers[name].accepted();
        let ids: BTreeSet<String> = got
            .iter()
            .map(|r| r["webhookId"].as_str().unwrap_or_default().to_string())
            .collect();
        assert!(all_in, "not everything arrived; {name} accepted {got:?}");
        assert_eq!(ids, expected(name), "{name} accepted {got:?}");
        assert_eq!(got.len(), ids.len(), "{name}: each webhook once: {got:?}");
        // The sample's `const { event, data } = req.body` saw the seed's shape.
        for r in &got {
            let (_, kind, _) = sent
                .iter()
                .find(|(id, _, _)| r["webhookId"] == json!(id))
                .unwrap();
            assert_eq!(r["event"], json!(kind), "{r}");
            assert_eq!(
                r["data"],
                example_json(&format!("payloads/{kind}.json"))["data"]
            );
        }
    }

    // The attempt log agrees: one successful attempt per routed message, to the right
    // endpoint (so every delivery passed `isValidRequest`, which answers 401 otherwise);
    // none for the message nobody wants.
    for (msg, kind, target) in &sent {
        let want = usize::from(target.is_some());
        let (status, attempts) = api
            .get_until(&format!("/api/v1/app/{app}/attempt/msg/{msg}"), |b| {
                b["data"].as_array().is_some_and(|a| a.len() >= want)
            })
            .await;
        assert_eq!(status, 200, "{attempts}");
        let attempts = attempts["data"].as_array().unwrap();
        match target {
            Some(name) => {
                assert_eq!(attempts.len(), 1, "{kind} {msg}: {attempts:?}");
                assert_eq!(attempts[0]["endpointId"], json!(ep_ids[name]));
                assert_eq!(attempts[0]["responseStatusCode"], json!(200));
                assert_eq!(attempts[0]["status"], json!(0));
            }
            None => assert!(attempts.is_empty(), "{kind} {msg}: {attempts:?}"),
        }
    }

    // The sample's verification really verifies: straight to flow A's receiver, a wrong
    // key, a changed body and a stale timestamp are refused; the right one is accepted.
    let flow_a = &receivers["flow-a"];
    let key = StandardSecret::parse(&secrets["flow-a"]).unwrap();
    let body = serde_json::to_vec(&example_json("payloads/message_read.json")).unwrap();
    let post = |id: &str, ts: i64, sig: String, body: Vec<u8>| {
        api.http
            .post(flow_a.url())
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
    };
    let now = now_secs();
    let other = StandardSecret::generate();
    let cases = [
        (
            "wrong key",
            now,
            sign_standard(other.key(), "direct-1", now, &body),
            body.clone(),
        ),
        (
            "changed body",
            now,
            sign_standard(key.key(), "direct-1", now, &body),
            {
                let mut b = example_json("payloads/message_read.json");
                b["data"]["session_id"] = json!("ses_otra");
                serde_json::to_vec(&b).unwrap()
            },
        ),
        (
            "stale timestamp",
            now - 3600,
            sign_standard(key.key(), "direct-1", now - 3600, &body),
            body.clone(),
        ),
    ];
    for (what, ts, sig, b) in cases {
        let resp = post("direct-1", ts, sig, b).await.expect("post to express");
        assert_eq!(resp.status().as_u16(), 401, "{what} must be refused");
    }
    // Rotation-style header: an unknown signature first, the right one second.
    let good = format!(
        "{} {}",
        sign_standard(other.key(), "direct-2", now, &body),
        sign_standard(key.key(), "direct-2", now, &body)
    );
    let resp = post("direct-2", now, good, body.clone())
        .await
        .expect("post to express");
    assert_eq!(resp.status().as_u16(), 200);
    let got = flow_a.accepted();
    assert_eq!(got.len(), expected("flow-a").len() + 1, "{got:?}");
    assert_eq!(got.last().unwrap()["webhookId"], json!("direct-2"));
}
