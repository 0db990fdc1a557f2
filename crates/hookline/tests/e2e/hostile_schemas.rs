//! Schemas and payloads that would make validation run away: a `$ref` loop (it grew the
//! process by 2 GB/s), schemas whose work multiplies, payloads nested past the parser's
//! limit. Each is refused with a 4xx that names the problem, and the server stays small.

use serde_json::{json, Value};

use crate::support::Server;

/// The loop from the report: a → b → a, never reaching into the payload.
fn cyclic() -> Value {
    json!({"$ref": "#/definitions/a", "definitions": {
        "a": {"$ref": "#/definitions/b"}, "b": {"$ref": "#/definitions/a"}}})
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn schemas_that_cannot_be_validated_in_bounded_time_are_refused() {
    let server = Server::start().await;
    let api = server.client();
    let cases = [
        ("cyclic", cyclic(), "loop"),
        ("self", json!({"allOf": [{"$ref": "#"}]}), "loop"),
        (
            "doubling",
            json!({"properties": {"a": {"allOf": [{"$ref": "#"}, {"$ref": "#"}]}}}),
            "exponentially",
        ),
        (
            "remote",
            json!({"$ref": "https://schemas.example/x.json"}),
            "outside",
        ),
    ];
    for (name, schema, why) in cases {
        let (status, err) = api
            .post(
                "/api/v1/event-type",
                json!({"name": name, "description": "d", "validatePayloads": true,
                       "schemas": {"1": schema}}),
            )
            .await;
        assert_eq!(status, 422, "{name}: {err}");
        assert_eq!(
            err["detail"][0]["loc"],
            json!(["body", "schemas", "1"]),
            "{err}"
        );
        let msg = err["detail"][0]["msg"].as_str().unwrap();
        assert!(msg.contains(why), "{name}: {msg}");
        // Nothing was stored.
        assert_eq!(api.get(&format!("/api/v1/event-type/{name}")).await.0, 404);
    }
    // Nor can an existing type be updated to one.
    api.create(
        "/api/v1/event-type",
        json!({"name": "ok", "description": "d", "schemas": {"1": {"type": "object"}}}),
    )
    .await;
    let (status, _) = api
        .call(
            "PATCH",
            "/api/v1/event-type/ok",
            Some(json!({"schemas": {"2": cyclic()}})),
        )
        .await;
    assert_eq!(status, 422);
    // A recursive schema that consumes the payload as it recurses is fine, and validates.
    api.create(
        "/api/v1/event-type",
        json!({"name": "tree", "description": "d", "validatePayloads": true, "schemas": {"1": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}}}}}),
    )
    .await;
    let app = api.create("/api/v1/app", json!({"name": "a"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let msg = format!("/api/v1/app/{app}/msg");
    let (status, err) = api
        .post(
            &msg,
            json!({"eventType": "tree", "payload": {"name": "r", "children": [{"name": "c", "children": [{"x": 1}]}]}}),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(
        err["detail"][0]["loc"],
        json!(["body", "payload", "children", "0", "children", "0"]),
        "{err}"
    );
}

/// A schema stored before the bounds existed (written to the store directly here) is
/// checked before every validation: the message is refused with 422, the process does not
/// grow.
#[tokio::test]
async fn a_stored_cyclic_schema_is_never_run() {
    let mut server = Server::start().await;
    let api = server.client();
    api.create(
        "/api/v1/event-type",
        json!({"name": "legacy", "description": "d", "validatePayloads": true,
               "schemas": {"1": {"type": "object"}}}),
    )
    .await;
    let app = api.create("/api/v1/app", json!({"name": "a"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    server.kill().await;
    {
        use hookline_store::Store;
        let path = server.data_dir.join("hookline.sqlite");
        let store = hookline_store::sqlite::SqliteStore::open(&path).expect("open store");
        store
            .update_event_type(
                "legacy",
                Box::new(|et| {
                    et.schemas = Some(json!({"1": cyclic()}));
                    Ok(())
                }),
            )
            .await
            .expect("store the old schema");
    }
    server.restart().await;
    let api = server.client();
    let pid = server.pid().expect("pid");
    let before = rss_kib(pid);
    // Before the check, this request never came back (the process grew until it died).
    let (status, err) = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        api.post(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "legacy", "payload": {"a": 1}}),
        ),
    )
    .await
    .expect("answered within 10 s");
    assert_eq!(status, 422, "{err}");
    assert_eq!(
        err["detail"][0]["loc"],
        json!(["body", "eventType"]),
        "{err}"
    );
    assert!(
        err["detail"][0]["msg"].as_str().unwrap().contains("loop"),
        "{err}"
    );
    let after = rss_kib(pid);
    assert!(
        after < before + 20 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
}

/// An object nested `depth` levels: `{"a":{"a":...1...}}`.
fn nested(depth: usize) -> String {
    format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
}

#[tokio::test]
async fn deep_payloads_under_validation_are_a_4xx_naming_the_limit() {
    let server = Server::start().await;
    let api = server.client();
    api.create(
        "/api/v1/event-type",
        json!({"name": "deep", "description": "d", "validatePayloads": true,
               "schemas": {"1": {"type": "object"}}}),
    )
    .await;
    api.create(
        "/api/v1/event-type",
        json!({"name": "free", "description": "d", "schemas": {"1": {"type": "object"}}}),
    )
    .await;
    let app = api.create("/api/v1/app", json!({"name": "a"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let msg = format!("/api/v1/app/{app}/msg");
    for depth in [128, 200, 1000] {
        let body = format!(r#"{{"eventType": "deep", "payload": {}}}"#, nested(depth));
        let (status, err) = api.post_raw(&msg, body).await;
        assert_eq!(status, 422, "depth {depth}: {err}");
        assert_eq!(err["detail"][0]["loc"], json!(["body", "payload"]), "{err}");
        assert!(
            err["detail"][0]["msg"].as_str().unwrap().contains("127"),
            "{err}"
        );
    }
    // Within the limit it validates; without validation any depth is stored byte for byte.
    let body = format!(r#"{{"eventType": "deep", "payload": {}}}"#, nested(127));
    assert_eq!(api.post_raw(&msg, body).await.0, 202);
    let payload = nested(1000);
    let body = format!(r#"{{"eventType": "free", "eventId": "d1", "payload": {payload}}}"#);
    assert_eq!(api.post_raw(&msg, body).await.0, 202);
}
