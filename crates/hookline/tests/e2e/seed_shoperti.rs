//! Seed 004, Shoperti (an e-commerce platform): a store subscribes a URL per event
//! ("Agregar Webhook"); only a 2xx counts, a 3xx is a failure and is not followed; a
//! failed webhook is retried once an hour for 2 days, then marked failed; the receiver
//! verifies an event by looking it up by id through the API. The receiver is the seed's
//! PHP sample (`examples/shoperti/webhook.php`) under `php -S`. All configuration comes
//! from `examples/shoperti/`, so the example and this test cannot drift apart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hookline_signing::{sign_standard, StandardSecret};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::receiver::{Behavior, Receiver};
use crate::support::{self, require_tool, Api, Server};

const TEST: &str = "seed_shoperti";

const EVENT_TYPES: [&str; 3] = ["order.created", "order.updated", "customer.created"];

fn example_path(file: &str) -> String {
    support::example_path("shoperti", file)
}

fn example_json(file: &str) -> Value {
    support::example_json("shoperti", file)
}

/// `php -S 127.0.0.1:0 webhook.php`: the seed's sample as the store's receiver.
struct PhpReceiver {
    port: u16,
    receipts: PathBuf,
    _child: Child,
}

impl PhpReceiver {
    async fn start(php: &Path, dir: &Path, env: &[(&str, &str)]) -> PhpReceiver {
        let receipts = dir.join("receipts.jsonl");
        let mut child = Command::new(php)
            .args(["-S", "127.0.0.1:0"])
            .arg(example_path("webhook.php"))
            .current_dir(dir)
            .envs(env.iter().copied())
            .env("RECEIPTS_FILE", &receipts)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn php");
        // "[date] PHP 8.x Development Server (http://127.0.0.1:PORT) started", on stderr.
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let port = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.expect("read php stderr") {
                if let Some(rest) = line.split("(http://127.0.0.1:").nth(1) {
                    let port = rest.split(')').next().unwrap_or_default();
                    return port.parse::<u16>().expect("port");
                }
                eprintln!("php: {line}");
            }
            panic!("php -S exited before listening");
        })
        .await
        .expect("php -S listens within 20 s");
        // Keep draining the request log so php never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        PhpReceiver {
            port,
            receipts,
            _child: child,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/shoperti/webhook", self.port)
    }

    /// What the sample accepted (signature good, event found by id and equal), in order.
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

async fn patch_url(api: &Api, app: &str, ep: &str, url: String) {
    let (status, body) = api
        .call(
            "PATCH",
            &format!("/api/v1/app/{app}/endpoint/{ep}"),
            Some(json!({"url": url})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The delivery state of message `msg` for endpoint `ep` (`GET .../msg/{msg}/endpoint`).
async fn delivery(api: &Api, app: &str, msg: &str, ep: &str) -> Option<Value> {
    let (status, list) = api
        .get(&format!("/api/v1/app/{app}/msg/{msg}/endpoint"))
        .await;
    assert_eq!(status, 200, "{list}");
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == json!(ep))
        .cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn shoperti_per_event_subscription_no_redirects_hourly_retries_lookup_by_id() {
    let Some(php) = require_tool("php", TEST) else {
        return;
    };
    let recv = Receiver::start().await;
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8"]).await;
    let api = server.client();

    // The store, with Shoperti's retry rule as the default of all its endpoints.
    let app_in = example_json("app.json");
    let app = app_in["uid"]
        .as_str()
        .expect("app.json has a uid")
        .to_string();
    let policy = app_in["retryPolicy"].clone();
    assert_eq!(
        policy,
        json!({"kind": "fixed", "intervalSeconds": 3600, "giveUpAfterSeconds": 172800})
    );
    let created = api.create("/api/v1/app", app_in).await;
    assert_eq!(created["retryPolicy"], policy, "{created}");
    for t in EVENT_TYPES {
        let et = api
            .create(
                "/api/v1/event-type",
                example_json(&format!("event-types/{t}.json")),
            )
            .await;
        assert_eq!(et["validatePayloads"], json!(true), "{et}");
        assert_eq!(
            et["schemas"]["1"]["examples"][0],
            example_json(&format!("payloads/{t}.json"))
        );
    }

    // "Agregar Webhook": one URL for new orders only, one (the ERP) for every event.
    let ordenes_in = example_json("endpoints/ordenes.json");
    assert_eq!(ordenes_in["filterTypes"], json!(["order.created"]));
    let ordenes = api
        .create(&format!("/api/v1/app/{app}/endpoint"), ordenes_in)
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let erp_in = example_json("endpoints/erp.json");
    assert!(erp_in.get("filterTypes").is_none());
    let erp = api
        .create(&format!("/api/v1/app/{app}/endpoint"), erp_in)
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Once an hour for 2 days, then failed: 48 retries after the first try.
    for ep in [&ordenes, &erp] {
        let (status, s) = api
            .get(&format!("/api/v1/app/{app}/endpoint/{ep}/retry-schedule"))
            .await;
        assert_eq!(status, 200, "{s}");
        assert_eq!(s["retryPolicy"], policy);
        assert_eq!(s["source"], json!("application"));
        let offsets: Vec<u64> = s["retryOffsetsSeconds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(offsets.len(), 48, "{s}");
        assert_eq!(offsets, (1..=48).map(|i| i * 3600).collect::<Vec<u64>>());
        assert_eq!(offsets.last(), Some(&172_800));
        assert_eq!(s["attempts"], json!(49));
    }

    // The store's receiver: the seed's PHP, with the endpoint's secret and the store's
    // own read-only API token (it can see this store only).
    let (status, secret) = api
        .get(&format!("/api/v1/app/{app}/endpoint/{ordenes}/secret"))
        .await;
    assert_eq!(status, 200, "{secret}");
    let secret = secret["key"].as_str().unwrap().to_string();
    let access = api
        .create(
            &format!("/api/v1/auth/app-portal-access/{app}"),
            example_json("portal-access.json"),
        )
        .await;
    let token = access["token"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let php = PhpReceiver::start(
        &php,
        dir.path(),
        &[
            ("WEBHOOK_SECRET", secret.as_str()),
            ("HOOKLINE_URL", server.base.as_str()),
            ("HOOKLINE_APP", app.as_str()),
            ("HOOKLINE_TOKEN", token.as_str()),
        ],
    )
    .await;
    patch_url(&api, &app, &ordenes, php.url()).await;
    // The ERP's URL answers 302 (say, a move to another address): a failure, not followed.
    recv.set(
        "/erp",
        Behavior::Status(302, vec![("location".into(), recv.url("/destino"))]),
    );
    patch_url(&api, &app, &erp, recv.url("/erp")).await;

    // validatePayloads: a malformed order is refused, naming the path.
    let mut bad = example_json("payloads/order.created.json");
    bad["data"]["total"] = json!("mil");
    let (status, err) = api
        .post(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "order.created", "payload": bad}),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(
        err["detail"][0]["loc"],
        json!(["body", "payload", "data", "total"])
    );

    // One event of each type; the Shoperti event id is the message's eventId.
    let mut sent: Vec<(String, &str)> = Vec::new();
    for t in EVENT_TYPES {
        let payload = example_json(&format!("payloads/{t}.json"));
        let msg = api
            .create(
                &format!("/api/v1/app/{app}/msg"),
                json!({"eventType": t, "eventId": payload["id"], "payload": payload}),
            )
            .await;
        sent.push((msg["id"].as_str().unwrap().to_string(), t));
    }
    let id_of = |t: &str| sent.iter().find(|(_, s)| *s == t).unwrap().0.clone();
    let arrived = wait_until(Duration::from_secs(30), || {
        !php.accepted().is_empty() && recv.requests_to("/erp").len() >= 3
    })
    .await;
    // Time for anything that should not come (another type, a followed redirect).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        arrived,
        "php accepted {:?}, erp got {}",
        php.accepted(),
        recv.requests_to("/erp").len()
    );

    // The order.created-only URL got the new order and nothing else; the PHP sample
    // found the event through the API with the store's token and it matched.
    let got = php.accepted();
    assert_eq!(got.len(), 1, "{got:?}");
    let r = &got[0];
    assert_eq!(r["webhookId"], json!(id_of("order.created")));
    assert_eq!(r["eventType"], json!("order.created"));
    assert_eq!(r["eventId"], json!("evt_7f3a91c2e4b8"));
    assert_eq!(r["lookupStatus"], json!(200));
    assert_eq!(r["signatureChecked"], json!(true));
    assert_eq!(r["payload"], example_json("payloads/order.created.json"));
    let (status, attempts) = api
        .get_until(
            &format!("/api/v1/app/{app}/attempt/endpoint/{ordenes}"),
            |b| b["data"].as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    assert_eq!(status, 200, "{attempts}");
    let attempts = attempts["data"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["msgId"], json!(id_of("order.created")));
    assert_eq!(attempts[0]["responseStatusCode"], json!(200));
    assert_eq!(attempts[0]["status"], json!(0));
    for t in ["order.updated", "customer.created"] {
        assert!(
            delivery(&api, &app, &id_of(t), &ordenes).await.is_none(),
            "{t} must not go to the order.created-only endpoint"
        );
    }

    // The ERP's 302s: one try per event, none followed, each attempt a failure with the
    // 302 recorded, and the next try an hour (±20 %) later.
    let erp_ids: BTreeSet<String> = recv
        .requests_to("/erp")
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    let all_ids: BTreeSet<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(erp_ids, all_ids);
    assert_eq!(recv.requests_to("/erp").len(), 3);
    assert!(
        recv.requests_to("/destino").is_empty(),
        "a redirect must never be followed"
    );
    assert_eq!(recv.count(), 3);
    let (status, attempts) = api
        .get_until(&format!("/api/v1/app/{app}/attempt/endpoint/{erp}"), |b| {
            b["data"].as_array().is_some_and(|a| a.len() >= 3)
        })
        .await;
    assert_eq!(status, 200, "{attempts}");
    let attempts = attempts["data"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    for a in attempts {
        assert_eq!(a["responseStatusCode"], json!(302), "{a}");
        assert_eq!(a["status"], json!(2), "{a}");
        assert_eq!(a["statusText"], json!("fail"), "{a}");
    }
    for (msg, t) in &sent {
        let d = delivery(&api, &app, msg, &erp)
            .await
            .unwrap_or_else(|| panic!("{t} has a delivery to the ERP"));
        assert_eq!(d["status"], json!(1), "{t} still pending: {d}");
        let next: DateTime<Utc> = d["nextAttempt"]
            .as_str()
            .unwrap_or_else(|| panic!("{t}: nextAttempt in {d}"))
            .parse()
            .unwrap();
        let wait = (next - Utc::now()).num_seconds();
        assert!(
            (2880 - 60..=4320).contains(&wait),
            "{t}: next try in {wait} s, not about an hour"
        );
    }

    // "Verificando eventos": the PHP sample refuses what the API does not confirm, even
    // with a valid signature.
    let key = StandardSecret::parse(&secret).unwrap();
    let send_to_php = |id: String, body: Vec<u8>, signed: bool| {
        let now = Utc::now().timestamp();
        let mut req = api
            .http
            .post(php.url())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", now.to_string());
        if signed {
            req = req.header(
                "webhook-signature",
                sign_standard(key.key(), &id, now, &body),
            );
        }
        req.body(body).send()
    };
    // Another store's real event: the store's token cannot see it (404), so it is refused.
    api.create(
        "/api/v1/app",
        json!({"name": "Otra Tienda", "uid": "otra-tienda"}),
    )
    .await;
    let mut foreign = example_json("payloads/order.created.json");
    foreign["id"] = json!("evt_otra_tienda_1");
    let foreign_msg = api
        .create(
            "/api/v1/app/otra-tienda/msg",
            json!({"eventType": "order.created", "payload": foreign}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let store_api = api.with_token(Some(&token));
    let (status, _) = store_api
        .get(&format!("/api/v1/app/{app}/msg/{foreign_msg}"))
        .await;
    assert_eq!(
        status, 404,
        "the store's token does not see another store's event"
    );
    let order_body = serde_json::to_vec(&example_json("payloads/order.created.json")).unwrap();
    let mut changed = example_json("payloads/order.created.json");
    changed["data"]["total"] = json!(1.0);
    let cases = [
        (
            "another store's event",
            foreign_msg.clone(),
            serde_json::to_vec(&foreign).unwrap(),
            true,
        ),
        (
            "an id that does not exist",
            "msg_2000000000000000000000000000".to_string(),
            order_body.clone(),
            true,
        ),
        (
            "a real id with a different body",
            id_of("order.created"),
            serde_json::to_vec(&changed).unwrap(),
            true,
        ),
        (
            "a real event without a signature",
            id_of("order.created"),
            order_body.clone(),
            false,
        ),
    ];
    for (what, id, body, signed) in cases {
        let resp = send_to_php(id, body, signed).await.expect("post to php");
        assert_eq!(resp.status().as_u16(), 401, "{what} must be refused");
    }
    // The same real event, signed: accepted again (receivers deduplicate by webhook-id).
    let resp = send_to_php(id_of("order.created"), order_body, true)
        .await
        .expect("post to php");
    assert_eq!(resp.status().as_u16(), 200);
    let got = php.accepted();
    assert_eq!(got.len(), 2, "only the genuine event was accepted: {got:?}");
    assert_eq!(got[1]["webhookId"], json!(id_of("order.created")));
}
