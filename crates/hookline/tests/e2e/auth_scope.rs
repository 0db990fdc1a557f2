//! App-portal tokens are scoped to one application: another application's resources are
//! invisible (404, never 403, so their existence does not leak) and untouched, admin-only
//! operations are forbidden (403), and bad or missing tokens are unauthenticated (401).

use serde_json::{json, Value};

use crate::support::{self, Api, Server};

/// One application with an endpoint and a message, as the admin created it.
struct Tenant {
    app: Value,
    endpoint: Value,
    message: Value,
}

impl Tenant {
    fn app_id(&self) -> &str {
        self.app["id"].as_str().expect("app id")
    }
    fn ep_id(&self) -> &str {
        self.endpoint["id"].as_str().expect("endpoint id")
    }
    fn msg_id(&self) -> &str {
        self.message["id"].as_str().expect("message id")
    }
}

async fn tenant(server: &Server, admin: &Api, name: &str) -> Tenant {
    let app = admin
        .create(
            "/api/v1/app",
            json!({"name": name, "uid": name, "metadata": {"tenant": name}}),
        )
        .await;
    let id = app["id"].as_str().unwrap().to_string();
    let endpoint = admin
        .create(
            &format!("/api/v1/app/{id}/endpoint"),
            json!({
                "url": server.url(&format!("/sink/{name}")),
                "uid": format!("{name}-ep"),
                "description": format!("{name}'s endpoint"),
                "channels": ["main"],
            }),
        )
        .await;
    let ep = endpoint["id"].as_str().unwrap();
    let (s, h) = admin
        .call(
            "PUT",
            &format!("/api/v1/app/{id}/endpoint/{ep}/headers"),
            Some(json!({"headers": {"X-Tenant": name}})),
        )
        .await;
    assert_eq!(s, 204, "{h}");
    let message = admin
        .create(
            &format!("/api/v1/app/{id}/msg"),
            json!({"eventType": "order.created", "eventId": format!("{name}-evt"),
                   "payload": {"tenant": name}}),
        )
        .await;
    Tenant {
        app,
        endpoint,
        message,
    }
}

/// Everything the admin can read about a tenant, to compare before and after.
async fn snapshot(admin: &Api, t: &Tenant) -> Value {
    let (a, e) = (t.app_id(), t.ep_id());
    let mut out = serde_json::Map::new();
    for (key, path) in [
        ("app", format!("/api/v1/app/{a}")),
        ("endpoints", format!("/api/v1/app/{a}/endpoint")),
        ("endpoint", format!("/api/v1/app/{a}/endpoint/{e}")),
        ("secret", format!("/api/v1/app/{a}/endpoint/{e}/secret")),
        ("headers", format!("/api/v1/app/{a}/endpoint/{e}/headers")),
        ("messages", format!("/api/v1/app/{a}/msg")),
    ] {
        let (status, body) = admin.get(&path).await;
        assert_eq!(status, 200, "admin GET {path}: {body}");
        out.insert(key.into(), body);
    }
    Value::Object(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn app_portal_token_sees_only_its_application() {
    let server = Server::start().await;
    let admin = server.client();
    let a = tenant(&server, &admin, "tenant-a").await;
    let b = tenant(&server, &admin, "tenant-b").await;
    let (aid, aep, amsg) = (a.app_id(), a.ep_id(), a.msg_id());
    let (bid, bep, bmsg) = (b.app_id(), b.ep_id(), b.msg_id());

    let (status, access) = admin
        .post(&format!("/api/v1/auth/app-portal-access/{aid}"), json!({}))
        .await;
    assert_eq!(status, 200, "{access}");
    assert!(
        access["url"].as_str().is_some_and(|u| !u.is_empty()),
        "{access}"
    );
    let token = access["token"].as_str().expect("token").to_string();
    assert_ne!(token, server.token);
    let portal = admin.with_token(Some(&token));

    let before_b = snapshot(&admin, &b).await;

    // A's own resources are readable, by id and by uid.
    for path in [
        format!("/api/v1/app/{aid}"),
        "/api/v1/app/tenant-a".to_string(),
        format!("/api/v1/app/{aid}/endpoint/{aep}"),
        format!("/api/v1/app/{aid}/endpoint/{aep}/secret"),
        format!("/api/v1/app/{aid}/endpoint/{aep}/headers"),
        format!("/api/v1/app/{aid}/msg/{amsg}"),
        "/api/v1/app/tenant-a/msg/tenant-a-evt".to_string(),
    ] {
        let (s, body) = portal.get(&path).await;
        assert_eq!(s, 200, "portal GET {path}: {body}");
    }
    let (s, eps) = portal.get(&format!("/api/v1/app/{aid}/endpoint")).await;
    assert_eq!(s, 200, "{eps}");
    assert_eq!(ids(&eps), vec![aep.to_string()]);
    let (s, msgs) = portal.get(&format!("/api/v1/app/{aid}/msg")).await;
    assert_eq!(s, 200, "{msgs}");
    assert_eq!(ids(&msgs), vec![amsg.to_string()]);
    let (s, got) = portal.get(&format!("/api/v1/app/{aid}")).await;
    assert_eq!((s, got["name"].as_str()), (200, Some("tenant-a")));

    // Listing applications shows A only.
    let (s, apps) = portal.get("/api/v1/app").await;
    assert_eq!(s, 200, "{apps}");
    assert_eq!(ids(&apps), vec![aid.to_string()], "{apps}");
    let (_, all) = admin.get("/api/v1/app").await;
    assert_eq!(ids(&all).len(), 2, "{all}");

    // Everything on B answers 404, whether B is named by id or by uid.
    let ep_body = json!({"url": server.url("/sink/hijack")});
    let msg_body = json!({"eventType": "order.created", "payload": {"evil": true}});
    for app in [bid, "tenant-b"] {
        for ep in [bep, "tenant-b-ep"] {
            let app_path = format!("/api/v1/app/{app}");
            let ep_path = format!("{app_path}/endpoint/{ep}");
            let cases: Vec<(&str, String, Option<Value>)> = vec![
                ("GET", app_path.clone(), None),
                ("PUT", app_path.clone(), Some(json!({"name": "pwned"}))),
                ("PATCH", app_path.clone(), Some(json!({"name": "pwned"}))),
                ("DELETE", app_path.clone(), None),
                ("GET", format!("{app_path}/endpoint"), None),
                (
                    "POST",
                    format!("{app_path}/endpoint"),
                    Some(ep_body.clone()),
                ),
                ("GET", ep_path.clone(), None),
                ("PUT", ep_path.clone(), Some(ep_body.clone())),
                (
                    "PATCH",
                    ep_path.clone(),
                    Some(json!({"url": server.url("/x")})),
                ),
                ("DELETE", ep_path.clone(), None),
                ("GET", format!("{ep_path}/secret"), None),
                ("POST", format!("{ep_path}/secret/rotate"), Some(json!({}))),
                ("GET", format!("{ep_path}/headers"), None),
                (
                    "PUT",
                    format!("{ep_path}/headers"),
                    Some(json!({"headers": {"X-Evil": "1"}})),
                ),
                (
                    "PATCH",
                    format!("{ep_path}/headers"),
                    Some(json!({"headers": {"X-Evil": "1"}, "deleteHeaders": ["X-Tenant"]})),
                ),
                ("GET", format!("{app_path}/msg"), None),
                ("POST", format!("{app_path}/msg"), Some(msg_body.clone())),
                ("GET", format!("{app_path}/msg/{bmsg}"), None),
                ("GET", format!("{app_path}/msg/tenant-b-evt"), None),
            ];
            for (method, path, body) in cases {
                let (s, resp) = portal.call(method, &path, body).await;
                assert_eq!(s, 404, "portal {method} {path} must be 404: {resp}");
                assert_eq!(resp["code"], "not_found", "{method} {path}: {resp}");
            }
        }
    }
    // Creating a message with `application` must not create B (or anything) either.
    let (s, resp) = portal
        .post(
            "/api/v1/app/tenant-c/msg",
            json!({"eventType": "order.created", "payload": {},
                   "application": {"name": "tenant-c"}}),
        )
        .await;
    assert_eq!(s, 404, "{resp}");
    // A's endpoint cannot be reached through B's app path, nor B's through A's.
    let (s, resp) = portal
        .get(&format!("/api/v1/app/{aid}/endpoint/{bep}"))
        .await;
    assert_eq!(s, 404, "{resp}");
    let (s, resp) = portal.get(&format!("/api/v1/app/{aid}/msg/{bmsg}")).await;
    assert_eq!(s, 404, "{resp}");

    // Admin-only operations are forbidden.
    for (method, path, body) in [
        ("POST", "/api/v1/app".to_string(), json!({"name": "new"})),
        (
            "POST",
            "/api/v1/event-type".to_string(),
            json!({"name": "x.y", "description": "nope"}),
        ),
        (
            "POST",
            format!("/api/v1/auth/app-portal-access/{aid}"),
            json!({}),
        ),
        (
            "POST",
            format!("/api/v1/auth/app-portal-access/{bid}"),
            json!({}),
        ),
    ] {
        let (s, resp) = portal.call(method, &path, Some(body)).await;
        assert_eq!(s, 403, "portal {method} {path} must be 403: {resp}");
        assert_eq!(resp["code"], "forbidden", "{resp}");
    }

    // Nothing about B changed, and nothing new appeared.
    assert_eq!(
        snapshot(&admin, &b).await,
        before_b,
        "B was changed by A's token"
    );
    let (_, all_after) = admin.get("/api/v1/app").await;
    assert_eq!(ids(&all_after), ids(&all), "{all_after}");
    let (_, ets) = admin.get("/api/v1/event-type?include_archived=true").await;
    assert_eq!(ids_by(&ets, "name"), Vec::<String>::new(), "{ets}");

    // A's token still works on A (its failed attempts did not break anything).
    let (s, patched) = portal
        .call(
            "PATCH",
            &format!("/api/v1/app/{aid}/endpoint/{aep}"),
            Some(json!({"description": "changed by portal"})),
        )
        .await;
    assert_eq!(s, 200, "{patched}");
    assert_eq!(patched["description"], "changed by portal");

    // Wrong and missing tokens are unauthenticated, on A's resources and on the list.
    let wrong = admin.with_token(Some("appsk_not-a-real-token"));
    let anonymous = admin.with_token(None);
    for client in [&wrong, &anonymous] {
        for path in [
            "/api/v1/app".to_string(),
            format!("/api/v1/app/{aid}"),
            format!("/api/v1/app/{aid}/endpoint"),
            format!("/api/v1/app/{aid}/msg"),
        ] {
            let (s, resp) = client.get(&path).await;
            assert_eq!(s, 401, "GET {path} with token {:?}: {resp}", client.token);
            assert_eq!(resp["code"], "authentication_failed", "{resp}");
        }
        let (s, resp) = client.post("/api/v1/app", json!({"name": "x"})).await;
        assert_eq!(s, 401, "{resp}");
    }
    let (_, all_final) = admin.get("/api/v1/app").await;
    assert_eq!(ids(&all_final), ids(&all), "{all_final}");
}

fn ids(list: &Value) -> Vec<String> {
    ids_by(list, "id")
}

fn ids_by(list: &Value, key: &str) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list response: {list}"))
        .iter()
        .map(|v| v[key].as_str().expect("string key").to_string())
        .collect()
}

/// A request refused for its token is refused after its body is read, so the client's
/// keep-alive connection still serves its next request even when the body came after
/// the headers.
#[tokio::test]
async fn a_refused_request_keeps_the_connection_usable() {
    let server = Server::start().await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let body = json!({"name": "Nope"}).to_string();
    let head = format!(
        "POST /api/v1/app HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer not-a-token\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let (status, refusal) = support::exchange(&mut conn, &head, &body).await;
    assert!(status.contains(" 401 "), "{status}: {refusal}");
    let next = format!("GET /api/v1/health HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    let (status, _) = support::exchange(&mut conn, &next, "").await;
    assert!(status.contains(" 200 "), "{status}");
}
