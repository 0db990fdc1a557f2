//! Secrets never reach the log (issue 21, item 8): a full flow with the server logging at
//! `trace` (and asking for tokio-postgres's statement log too, which prints every
//! statement's parameters), then the log is searched for every secret the flow used. On
//! PostgreSQL this found endpoint secrets and custom header values in tokio-postgres's
//! debug lines; hookline now never enables them. Only loopback receivers started here are
//! targeted.

use std::time::Duration;

use serde_json::json;

use crate::receiver::{Behavior, Receiver};
use crate::support::{Server, ADMIN_TOKEN};

/// The main key sealing secrets at rest, given by environment variable.
const MAIN_KEY: &str = "bG9ncy1tdXN0LW5ldmVyLXNob3ctdGhpcy1tYWluLWs=";

#[tokio::test(flavor = "multi_thread")]
async fn a_full_flow_at_trace_level_logs_no_secret_token_or_header_value() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut server = Server::start_logging_env(
        &data,
        &["--allow-target", "127.0.0.0/8"],
        &log,
        &[
            ("RUST_LOG", "trace,tokio_postgres::query=trace"),
            ("HOOKLINE_ENCRYPTION_KEY", MAIN_KEY),
        ],
    )
    .await;
    let api = server.client();
    let rx = Receiver::start().await;
    rx.set("/fail", Behavior::Status(500, vec![]));

    let secret = "whsec_c2VjcmV0LWluLWxvZ3MtdGVzdC1rZXktMDEyMzQ1Njc4OQ==";
    let rotated = "whsec_cm90YXRlZC1zZWNyZXQtdGVzdC1rZXktOTg3NjU0MzIxMA==";
    let header_value = "Bearer custom-header-value-7f3a9c";
    let app = api.create("/api/v1/app", json!({"name": "logs"})).await;
    let app_id = app["id"].as_str().unwrap().to_string();
    let ep = api
        .create(
            &format!("/api/v1/app/{app_id}/endpoint"),
            json!({"url": rx.url("/hook"), "secret": secret,
                   "headers": {"Authorization": header_value}}),
        )
        .await;
    let ep_id = ep["id"].as_str().unwrap().to_string();
    let failing = api
        .create(
            &format!("/api/v1/app/{app_id}/endpoint"),
            json!({"url": rx.url("/fail"), "secret": secret,
                   "headers": {"Authorization": header_value}}),
        )
        .await;
    assert!(failing["id"].is_string());
    api.create(
        &format!("/api/v1/app/{app_id}/msg"),
        json!({"eventType": "a", "payload": {"n": 1}}),
    )
    .await;
    assert!(
        rx.wait_for(Duration::from_secs(20), |r| !r
            .requests_to("/hook")
            .is_empty())
            .await
    );
    let (status, _) = api
        .post(
            &format!("/api/v1/app/{app_id}/endpoint/{ep_id}/secret/rotate"),
            json!({"key": rotated}),
        )
        .await;
    assert!((200..300).contains(&status), "rotate answered {status}");
    let (_, shown) = api
        .get(&format!("/api/v1/app/{app_id}/endpoint/{ep_id}/secret"))
        .await;
    assert_eq!(shown["key"], rotated);
    api.create(
        &format!("/api/v1/app/{app_id}/msg"),
        json!({"eventType": "a", "payload": {"n": 2}}),
    )
    .await;
    assert!(
        rx.wait_for(Duration::from_secs(20), |r| r.requests_to("/hook").len()
            >= 2)
            .await
    );
    assert!(
        rx.wait_for(Duration::from_secs(20), |r| !r
            .requests_to("/fail")
            .is_empty())
            .await
    );
    assert_eq!(
        rx.requests_to("/hook")[0]
            .header("authorization")
            .as_deref(),
        Some(header_value),
        "the header was sent"
    );
    // An app token, used; a wrong token, refused.
    let (_, portal) = api
        .post(
            &format!("/api/v1/auth/app-portal-access/{app_id}"),
            json!({}),
        )
        .await;
    let app_token = portal["token"].as_str().unwrap().to_string();
    let (status, _) = api
        .with_token(Some(&app_token))
        .get(&format!("/api/v1/app/{app_id}/endpoint"))
        .await;
    assert_eq!(status, 200);
    let wrong = "wrong-token-3b1f5e9d2c";
    let (status, _) = api.with_token(Some(wrong)).get("/api/v1/app").await;
    assert_eq!(status, 401);
    // Give the last reports a moment, then stop so the log is complete.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.terminate().await;

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().filter(|l| l.contains("TRACE")).count() > 10,
        "the server did not log at trace level ({} bytes)",
        text.len()
    );
    let key_of = |s: &str| s.trim_start_matches("whsec_").to_string();
    for (what, needle) in [
        ("the endpoint secret", secret.to_string()),
        ("the endpoint secret's key", key_of(secret)),
        ("the rotated secret", key_of(rotated)),
        (
            "the custom header value",
            "custom-header-value-7f3a9c".to_string(),
        ),
        ("the admin token", ADMIN_TOKEN.to_string()),
        ("the main key", MAIN_KEY.to_string()),
        ("the app token", app_token.clone()),
        ("a wrong token", wrong.to_string()),
    ] {
        let hits: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(&needle))
            .take(3)
            .collect();
        assert!(hits.is_empty(), "{what} is in the trace log: {hits:#?}");
    }
    eprintln!(
        "trace log of the flow: {} lines, {} bytes, no secret in it",
        text.lines().count(),
        text.len()
    );
}
