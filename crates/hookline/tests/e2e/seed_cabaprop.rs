//! Seed 000, CABAPROP (a real-estate portal): a thin `create.message` event
//! `{apiKey, type, action, id}`, sent once (never retried) and given 200 ms to be
//! answered; the receiver answers at once and fetches the full record by id through the
//! API with its integration's app-scoped token. All configuration comes from
//! `examples/cabaprop/`, so the example and this test cannot drift apart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{json, Value};

use crate::support::{self, Api, Server};

fn example(file: &str) -> String {
    support::example_text("cabaprop", file)
}

fn example_json(file: &str) -> Value {
    support::example_json("cabaprop", file)
}

/// What the integration's receiver saw and did.
#[derive(Default)]
struct Log {
    received: Mutex<Vec<(String, HeaderMap, Bytes)>>,
    /// Per path: the answer of the background fetch of the message named by `id`.
    fetched: Mutex<Vec<(String, u16, Value)>>,
}

struct Integration {
    /// hookline's API with the integration's app-scoped token.
    api: Api,
    app: String,
    /// How long each path takes to answer.
    delays: HashMap<String, Duration>,
    log: Log,
}

/// A receiver written as CABAPROP advises: answer quickly and do the work in the
/// background. The work is fetching the record the thin event names, by its `id`.
async fn webhook(
    State(me): State<Arc<Integration>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri.path().to_string();
    me.log
        .received
        .lock()
        .unwrap()
        .push((path.clone(), headers, body.clone()));
    let job = me.clone();
    let job_path = path.clone();
    tokio::spawn(async move {
        let payload: Value = serde_json::from_slice(&body).unwrap_or_default();
        let got = match payload["id"].as_i64() {
            Some(id) => {
                job.api
                    .get(&format!("/api/v1/app/{}/msg/{id}", job.app))
                    .await
            }
            None => (0, Value::Null),
        };
        job.log
            .fetched
            .lock()
            .unwrap()
            .push((job_path, got.0, got.1));
    });
    tokio::time::sleep(me.delays.get(&path).copied().unwrap_or_default()).await;
    StatusCode::OK
}

async fn start_integration(
    api: Api,
    app: &str,
    delays: &[(&str, Duration)],
) -> (String, Arc<Integration>) {
    let me = Arc::new(Integration {
        api,
        app: app.to_string(),
        delays: delays.iter().map(|(p, d)| (p.to_string(), *d)).collect(),
        log: Log::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new().fallback(webhook).with_state(me.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (base, me)
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    timeout: Duration,
    mut cond: impl FnMut() -> F,
) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond().await
}

#[tokio::test(flavor = "multi_thread")]
async fn cabaprop_thin_event_once_within_200ms_then_fetched_by_id() {
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8"]).await;
    let admin = server.client();

    let app_in = example_json("app.json");
    let app = app_in["uid"]
        .as_str()
        .expect("app.json has a uid")
        .to_string();
    admin.create("/api/v1/app", app_in).await;
    let et = admin
        .create("/api/v1/event-type", example_json("event-type.json"))
        .await;
    assert_eq!(et["validatePayloads"], json!(true), "{et}");
    let event_type = et["name"].as_str().unwrap().to_string();
    let payload_text = example("payload.json");
    let payload: Value = serde_json::from_str(&payload_text).unwrap();
    assert_eq!(
        et["schemas"]["1"]["examples"][0], payload,
        "the schema's example is the seed's payload"
    );

    // The integration's credentials: a read-only token that sees only its application.
    let access = admin
        .create(
            &format!("/api/v1/auth/app-portal-access/{app}"),
            example_json("portal-access.json"),
        )
        .await;
    let app_api = admin.with_token(Some(access["token"].as_str().expect("token")));

    // Two receivers of the same integration: one answers in 50 ms, one in 500 ms.
    let (base, integ) = start_integration(
        app_api.clone(),
        &app,
        &[
            ("/fast", Duration::from_millis(50)),
            ("/slow", Duration::from_millis(500)),
        ],
    )
    .await;
    let mut ep_ids = HashMap::new();
    for name in ["fast", "slow"] {
        let mut body = example_json("endpoint.json");
        assert_eq!(body["retryPolicy"], json!({"kind": "none"}));
        assert_eq!(body["timeoutMs"], json!(200));
        body["url"] = json!(format!("{base}/{name}"));
        body["uid"] = json!(format!("panel-{name}"));
        let ep = admin
            .create(&format!("/api/v1/app/{app}/endpoint"), body)
            .await;
        ep_ids.insert(name, ep["id"].as_str().unwrap().to_string());
    }

    // validatePayloads: only the thin shape is accepted, and the 422 names the path.
    let (status, err) = admin
        .post(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": event_type, "payload": {
                "apiKey": "k", "type": "message", "action": "create.message", "id": "44444"}}),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["detail"][0]["loc"], json!(["body", "payload", "id"]));
    let (status, err) = admin
        .post(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": event_type, "payload": {
                "apiKey": "k", "type": "message", "action": "create.message", "id": 1,
                "messages": ["hola"]}}),
        )
        .await;
    assert_eq!(status, 422, "a fat payload is refused: {err}");
    assert_eq!(err["detail"][0]["loc"], json!(["body", "payload"]), "{err}");

    // The seed's payload, bytes as in the file; the conversation id is the eventId, so
    // the id in the thin event is enough to look the message up.
    let conversation = payload["id"].as_i64().unwrap();
    let (status, msg) = admin.post_raw(
        &format!("/api/v1/app/{app}/msg"),
        format!(
            r#"{{"eventType": "{event_type}", "eventId": "{conversation}", "payload": {payload_text}}}"#
        ),
    )
    .await;
    assert_eq!(status, 202, "{msg}");
    let msg_id = msg["id"].as_str().unwrap().to_string();

    // Both deliveries settle: the fast one succeeded, the slow one failed for good.
    let rows_path = format!("/api/v1/app/{app}/msg/{msg_id}/endpoint");
    let settled = wait_until(Duration::from_secs(15), || async {
        let (_, rows) = admin.get(&rows_path).await;
        rows["data"].as_array().is_some_and(|r| {
            r.len() == 2 && r.iter().all(|row| row["status"] == 0 || row["status"] == 2)
        })
    })
    .await;
    let (_, rows) = admin.get(&rows_path).await;
    assert!(settled, "deliveries did not settle: {rows}");
    let row = |name: &str| -> Value {
        rows["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == json!(ep_ids[name]))
            .cloned()
            .unwrap_or_else(|| panic!("no row for {name}: {rows}"))
    };
    assert_eq!(row("fast")["status"], json!(0), "{rows}");
    assert_eq!(row("fast")["attempts"], json!(1), "{rows}");
    assert_eq!(row("slow")["status"], json!(2), "{rows}");
    assert_eq!(row("slow")["statusText"], json!("fail"), "{rows}");
    assert_eq!(row("slow")["attempts"], json!(1), "{rows}");
    assert_eq!(row("slow")["nextAttempt"], Value::Null, "{rows}");

    let attempts_path = format!("/api/v1/app/{app}/attempt/msg/{msg_id}");
    let (_, attempts) = admin.get(&attempts_path).await;
    let attempt = |name: &str| -> Vec<Value> {
        attempts["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["endpointId"] == json!(ep_ids[name]))
            .cloned()
            .collect()
    };
    let fast = attempt("fast");
    assert_eq!(fast.len(), 1, "{attempts}");
    assert_eq!(fast[0]["status"], json!(0), "{attempts}");
    assert_eq!(fast[0]["responseStatusCode"], json!(200), "{attempts}");
    let slow = attempt("slow");
    assert_eq!(slow.len(), 1, "{attempts}");
    assert_eq!(slow[0]["status"], json!(2), "{attempts}");
    assert_eq!(slow[0]["errorKind"], json!("timeout"), "{attempts}");
    assert_eq!(slow[0]["responseStatusCode"], json!(0), "{attempts}");
    let took = slow[0]["responseDurationMs"].as_u64().unwrap();
    assert!(
        (150..480).contains(&took),
        "cut at the 200 ms deadline, not after the 500 ms answer: {took} ms"
    );

    // One shot: a few seconds later still one request each, and no more attempts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = integ.log.received.lock().unwrap().clone();
    let to = |p: &str| received.iter().filter(|(path, ..)| path == p).count();
    assert_eq!(to("/fast"), 1, "exactly one delivery to the fast receiver");
    assert_eq!(to("/slow"), 1, "the timed-out delivery is never retried");
    let (_, again) = admin.get(&attempts_path).await;
    assert_eq!(again["data"].as_array().unwrap().len(), 2, "{again}");

    // The thin event arrived as sent: the file's bytes (its JSON value), unsigned.
    let (_, headers, body) = received.iter().find(|(p, ..)| p == "/fast").unwrap();
    assert_eq!(
        std::str::from_utf8(body).unwrap(),
        payload_text.trim_end(),
        "payload bytes"
    );
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["webhook-id"].to_str().unwrap(), msg_id);
    assert!(headers.get("webhook-signature").is_none(), "{headers:?}");

    // The receiver's background job fetched the full record by the event's id, with
    // the integration's token.
    let fetched = integ.log.fetched.lock().unwrap().clone();
    let (_, status, record) = fetched
        .iter()
        .find(|(p, ..)| p == "/fast")
        .expect("the fast receiver fetched the message");
    assert_eq!(*status, 200, "{record}");
    assert_eq!(record["id"], json!(msg_id), "{record}");
    assert_eq!(record["eventId"], json!(conversation.to_string()));
    assert_eq!(record["eventType"], json!(event_type));
    assert_eq!(record["payload"], payload);
    // The same record by the hookline id (the `webhook-id` header).
    let (status, by_id) = app_api
        .get(&format!("/api/v1/app/{app}/msg/{msg_id}"))
        .await;
    assert_eq!((status, &by_id["id"]), (200, &json!(msg_id)), "{by_id}");
    // And the integration can read its own attempt log.
    let (status, _) = app_api.get(&attempts_path).await;
    assert_eq!(status, 200);

    // The app token sees nothing of another integration.
    admin
        .create(
            "/api/v1/app",
            json!({"name": "Otra inmobiliaria", "uid": "integracion-otra"}),
        )
        .await;
    let other_msg = admin
        .create(
            "/api/v1/app/integracion-otra/msg",
            json!({"eventType": event_type, "eventId": "55555", "payload": {
                "apiKey": "otra0000000000000000000000000", "type": "message",
                "action": "create.message", "id": 55555}}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for path in [
        "/api/v1/app/integracion-otra".to_string(),
        format!("/api/v1/app/integracion-otra/msg/{other_msg}"),
        "/api/v1/app/integracion-otra/msg/55555".to_string(),
        format!("/api/v1/app/integracion-otra/attempt/msg/{other_msg}"),
        format!("/api/v1/app/{app}/msg/{other_msg}"),
        format!("/api/v1/app/{app}/msg/55555"),
    ] {
        let (status, body) = app_api.get(&path).await;
        assert_eq!(status, 404, "GET {path} with the app token: {body}");
    }
    let (status, _) = admin
        .get(&format!("/api/v1/app/integracion-otra/msg/{other_msg}"))
        .await;
    assert_eq!(status, 200, "the admin token does see it");
    // Read-only: the integration cannot send messages or register URLs itself.
    let (status, body) = app_api
        .post(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": event_type, "payload": payload}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
}
