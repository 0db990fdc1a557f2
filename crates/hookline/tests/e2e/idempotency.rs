//! `idempotency-key` on POST: a repeat gets the first response back byte for byte and
//! creates nothing; keys are scoped per token and per path; they survive a restart; and
//! concurrent repeats still create exactly one object.

use serde_json::{json, Value};

use crate::restart::list_all;
use crate::support::{self, Api, Server};

/// POSTs JSON with an idempotency key; returns the status and the raw body text.
async fn post_with_key(api: &Api, path: &str, key: &str, body: &Value) -> (u16, String) {
    let mut req = api
        .http
        .post(format!("{}{}", api.base, path))
        .header("idempotency-key", key)
        .json(body);
    if let Some(t) = &api.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = resp.text().await.expect("body");
    assert!(
        ct.starts_with("application/json"),
        "POST {path}: content-type {ct:?}, body {text}"
    );
    (status, text)
}

fn id_of(text: &str) -> String {
    let v: Value = serde_json::from_str(text).expect("JSON body");
    v["id"].as_str().expect("id").to_string()
}

async fn message_count(api: &Api, app: &str) -> usize {
    list_all(api, &format!("/api/v1/app/{app}/msg")).await.len()
}

fn msg(n: u32) -> Value {
    json!({"eventType": "thing.happened", "payload": {"n": n}})
}

#[tokio::test]
async fn same_key_replays_the_first_response() {
    let server = Server::start().await;
    let api = server.client();
    api.create("/api/v1/app", json!({"name": "Acme", "uid": "acme"}))
        .await;
    let path = "/api/v1/app/acme/msg";

    let (s1, first) = post_with_key(&api, path, "key-1", &msg(1)).await;
    assert_eq!(s1, 202, "{first}");
    let (s2, second) = post_with_key(&api, path, "key-1", &msg(1)).await;
    assert_eq!((s2, &second), (s1, &first), "a repeat gets the same answer");
    assert_eq!(message_count(&api, "acme").await, 1, "and creates nothing");

    // The first response wins even if the repeat's body differs; a trailing slash is
    // the same path.
    let (s3, third) = post_with_key(&api, path, "key-1", &msg(99)).await;
    assert_eq!((s3, &third), (s1, &first));
    let (s4, fourth) = post_with_key(&api, &format!("{path}/"), "key-1", &msg(1)).await;
    assert_eq!((s4, &fourth), (s1, &first));
    assert_eq!(message_count(&api, "acme").await, 1);

    // Different keys make different objects.
    let (s5, other) = post_with_key(&api, path, "key-2", &msg(1)).await;
    assert_eq!(s5, 202);
    assert_ne!(id_of(&other), id_of(&first));
    assert_eq!(message_count(&api, "acme").await, 2);

    // The same key on another path is another request altogether.
    let (s6, app) = post_with_key(&api, "/api/v1/app", "key-1", &json!({"name": "Second"})).await;
    assert_eq!(s6, 201, "{app}");
    assert!(id_of(&app).starts_with("app_"));
    let (s7, app_again) =
        post_with_key(&api, "/api/v1/app", "key-1", &json!({"name": "Second"})).await;
    assert_eq!((s7, &app_again), (s6, &app));
    assert_eq!(list_all(&api, "/api/v1/app").await.len(), 2);

    // A refused request's answer is replayed too (and still creates nothing).
    let bad = json!({"eventType": "thing.happened", "payload": [1]});
    let (s8, refused) = post_with_key(&api, path, "key-3", &bad).await;
    assert_eq!(s8, 422, "{refused}");
    let (s9, again) = post_with_key(&api, path, "key-3", &bad).await;
    assert_eq!((s9, &again), (s8, &refused));
    assert_eq!(message_count(&api, "acme").await, 2);
}

#[tokio::test]
async fn keys_are_not_shared_between_tokens() {
    let server = Server::start().await;
    let admin = server.client();
    admin
        .create("/api/v1/app", json!({"name": "Acme", "uid": "acme"}))
        .await;
    let portal = admin
        .create("/api/v1/auth/app-portal-access/acme", json!({}))
        .await;
    let portal = admin.with_token(portal["token"].as_str());
    let path = "/api/v1/app/acme/msg";

    let (s1, by_admin) = post_with_key(&admin, path, "shared-key", &msg(1)).await;
    assert_eq!(s1, 202, "{by_admin}");
    let (s2, by_portal) = post_with_key(&portal, path, "shared-key", &msg(1)).await;
    assert_eq!(s2, 202, "{by_portal}");
    assert_ne!(
        id_of(&by_portal),
        id_of(&by_admin),
        "another token's key must not replay this one's response"
    );
    // Each token's repeat gets its own first answer.
    assert_eq!(
        post_with_key(&portal, path, "shared-key", &msg(1)).await,
        (s2, by_portal)
    );
    assert_eq!(
        post_with_key(&admin, path, "shared-key", &msg(1)).await,
        (s1, by_admin)
    );
    assert_eq!(message_count(&admin, "acme").await, 2);
}

#[tokio::test]
async fn keys_survive_a_restart() {
    let mut server = Server::start().await;
    let api = server.client();
    let (s0, app) = post_with_key(
        &api,
        "/api/v1/app",
        "app-key",
        &json!({"name": "Acme", "uid": "acme"}),
    )
    .await;
    assert_eq!(s0, 201, "{app}");
    let (s1, first) = post_with_key(&api, "/api/v1/app/acme/msg", "msg-key", &msg(1)).await;
    assert_eq!(s1, 202, "{first}");

    server.restart().await;
    let api = server.client();
    assert_eq!(
        post_with_key(&api, "/api/v1/app/acme/msg", "msg-key", &msg(1)).await,
        (s1, first)
    );
    assert_eq!(
        post_with_key(
            &api,
            "/api/v1/app",
            "app-key",
            &json!({"name": "Acme", "uid": "acme"})
        )
        .await,
        (s0, app)
    );
    assert_eq!(message_count(&api, "acme").await, 1);
    assert_eq!(list_all(&api, "/api/v1/app").await.len(), 1);
}

#[tokio::test]
async fn concurrent_repeats_create_one_object() {
    let server = Server::start().await;
    let api = server.client();
    api.create("/api/v1/app", json!({"name": "Acme", "uid": "acme"}))
        .await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            post_with_key(&api, "/api/v1/app/acme/msg", "racy-key", &msg(7)).await
        }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        let (status, body) = t.await.expect("task");
        // Repeats that arrive while the first runs wait for its answer.
        assert_eq!(status, 202, "{body}");
        bodies.push(body);
    }
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "every 202 is the same response: {bodies:?}"
    );
    assert_eq!(message_count(&api, "acme").await, 1);
    assert_eq!(
        post_with_key(&api, "/api/v1/app/acme/msg", "racy-key", &msg(7)).await,
        (202, bodies[0].clone())
    );
}

/// A repeat is answered from the stored response without running its handler, but its
/// request body is still read first: a client that sent the body after the headers can
/// use the same keep-alive connection for its next request. (Answering before the body
/// arrived made the server drop the connection, and the Svix Python SDK's next request
/// on it failed with "Server disconnected without sending a response" under load.)
#[tokio::test]
async fn a_replay_reads_the_request_body_and_keeps_the_connection() {
    let server = Server::start().await;
    let api = server.client();
    api.create("/api/v1/app", json!({"name": "Acme", "uid": "acme"}))
        .await;
    let path = "/api/v1/app/acme/msg";
    let (s1, first) = post_with_key(&api, path, "conn-key", &msg(1)).await;
    assert_eq!(s1, 202, "{first}");

    let addr = server.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let body = msg(1).to_string();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\nidempotency-key: conn-key\r\n\
         content-length: {}\r\n\r\n",
        server.token,
        body.len()
    );
    let (status, replayed) = support::exchange(&mut conn, &head, &body).await;
    assert!(status.contains(" 202 "), "{status}: {replayed}");
    assert_eq!(replayed, first, "the repeat gets the first response");
    // The same connection answers the next request.
    let next = format!("GET /api/v1/health HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    let (status, _) = support::exchange(&mut conn, &next, "").await;
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(message_count(&api, "acme").await, 1);
}
