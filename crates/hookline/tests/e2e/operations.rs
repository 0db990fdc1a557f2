//! Operating hookline: endpoint auto-disable and the four operational webhooks, manual
//! resend and recover, scheduled messages, read-only tokens, tag filters, `/metrics`,
//! and SIGTERM finishing an attempt in flight.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hookline_signing::{verify_standard, StandardSecret};
use serde_json::{json, Value};

use crate::receiver::{Behavior, Receiver};
use crate::support::{Api, Server};

const OPS_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn app(api: &Api, uid: &str) -> String {
    api.create("/api/v1/app", json!({"name": uid, "uid": uid}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn endpoint(api: &Api, app: &str, body: Value) -> String {
    api.create(&format!("/api/v1/app/{app}/endpoint"), body)
        .await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn send(api: &Api, app: &str, body: Value) -> String {
    api.create(&format!("/api/v1/app/{app}/msg"), body).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn schedule(delays: &[u64]) -> Value {
    json!({"kind": "schedule", "delaysSeconds": delays})
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_disable_and_operational_webhooks() {
    let recv = Receiver::start().await;
    let server = Server::start_with(&[
        "--allow-target",
        "127.0.0.0/8",
        "--endpoint-disable-after-secs",
        "6",
        "--operational-webhook-url",
        &recv.url("/ops"),
        "--operational-webhook-secret",
        OPS_SECRET,
    ])
    .await;
    let api = server.client();
    let a = app(&api, "ops-test").await;
    recv.set("/fail", Behavior::Status(500, vec![]));
    recv.set("/flaky", Behavior::Status(500, vec![]));
    recv.set("/dead", Behavior::Status(503, vec![]));
    // Four attempts, all failing: `failing` at the 4th, then `exhausted`.
    let ep_fail = endpoint(
        &api,
        &a,
        json!({"url": recv.url("/fail"), "filterTypes": ["f"], "retryPolicy": schedule(&[1, 1, 1])}),
    )
    .await;
    // Fails four times, then succeeds: `failing`, then `recovered`.
    let ep_flaky = endpoint(
        &api,
        &a,
        json!({"url": recv.url("/flaky"), "filterTypes": ["r"], "retryPolicy": schedule(&[1, 1, 1, 1, 1])}),
    )
    .await;
    // Keeps failing for longer than the disable period: disabled, `endpoint.disabled`.
    let ep_dead = endpoint(
        &api,
        &a,
        json!({"url": recv.url("/dead"), "filterTypes": ["d"], "retryPolicy": schedule(&[1; 20])}),
    )
    .await;
    let m_fail = send(&api, &a, json!({"eventType": "f", "payload": {}})).await;
    let m_flaky = send(&api, &a, json!({"eventType": "r", "payload": {}})).await;
    send(&api, &a, json!({"eventType": "d", "payload": {}})).await;

    assert!(
        recv.wait_for(Duration::from_secs(20), |r| r.requests_to("/flaky").len()
            >= 4)
            .await
    );
    recv.set("/flaky", Behavior::Status(200, vec![]));

    let wanted = [
        ("message.attempt.failing", ep_fail.as_str()),
        ("message.attempt.exhausted", ep_fail.as_str()),
        ("message.attempt.failing", ep_flaky.as_str()),
        ("message.attempt.recovered", ep_flaky.as_str()),
        ("endpoint.disabled", ep_dead.as_str()),
    ];
    let secret = StandardSecret::parse(OPS_SECRET).unwrap();
    let events = |r: &Receiver| -> Vec<(String, String, Value)> {
        r.requests_to("/ops")
            .iter()
            .map(|req| {
                let v: Value = serde_json::from_slice(&req.body).unwrap();
                (
                    v["type"].as_str().unwrap_or_default().to_string(),
                    v["data"]["endpointId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    v,
                )
            })
            .collect()
    };
    let all_there = |r: &Receiver| {
        let got = events(r);
        wanted
            .iter()
            .all(|(t, ep)| got.iter().any(|(gt, gep, _)| gt == t && gep == ep))
    };
    let ok = recv.wait_for(Duration::from_secs(40), all_there).await;
    let got: Vec<_> = events(&recv).into_iter().map(|(t, e, _)| (t, e)).collect();
    assert!(ok, "missing operational webhooks; got {got:?}");

    // Each operational webhook is signed like any delivery.
    for req in recv.requests_to("/ops") {
        let id = req.header("webhook-id").unwrap();
        let ts: i64 = req.header("webhook-timestamp").unwrap().parse().unwrap();
        let sig = req.header("webhook-signature").unwrap();
        verify_standard(&secret, &id, ts, &req.body, &sig, ts, 5).expect("valid signature");
    }
    // Exactly one `failing` per delivery, and the failing/exhausted ones name the message.
    let got = events(&recv);
    for ep in [&ep_fail, &ep_flaky] {
        let n = got
            .iter()
            .filter(|(t, e, _)| t == "message.attempt.failing" && e == ep)
            .count();
        assert_eq!(n, 1, "one failing event for {ep}");
    }
    let exhausted = got
        .iter()
        .find(|(t, _, _)| t == "message.attempt.exhausted")
        .unwrap();
    assert_eq!(exhausted.2["data"]["msgId"], json!(m_fail));
    let recovered = got
        .iter()
        .find(|(t, _, _)| t == "message.attempt.recovered")
        .unwrap();
    assert_eq!(recovered.2["data"]["msgId"], json!(m_flaky));
    assert_eq!(
        recovered.2["data"]["lastAttempt"]["responseStatusCode"],
        json!(200)
    );

    // The disabled endpoint says so and gets nothing more.
    let (_, ep) = api
        .get(&format!("/api/v1/app/{a}/endpoint/{ep_dead}"))
        .await;
    assert_eq!(ep["disabled"], json!(true), "{ep}");
    let before = recv.requests_to("/dead").len();
    send(&api, &a, json!({"eventType": "d", "payload": {}})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(recv.requests_to("/dead").len(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn resend_recover_and_stats() {
    let recv = Receiver::start().await;
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8"]).await;
    let api = server.client();
    let a = app(&api, "resend").await;
    recv.set("/r", Behavior::Status(500, vec![]));
    let ep = endpoint(
        &api,
        &a,
        json!({"url": recv.url("/r"), "uid": "r", "retryPolicy": {"kind": "none"}}),
    )
    .await;
    let m1 = send(
        &api,
        &a,
        json!({"eventType": "t", "eventId": "e1", "payload": {"n": 1}}),
    )
    .await;
    let m2 = send(
        &api,
        &a,
        json!({"eventType": "t", "eventId": "e2", "payload": {"n": 2}}),
    )
    .await;
    let stats_url = format!("/api/v1/app/{a}/endpoint/r/stats");
    let failed_both = async {
        for _ in 0..200 {
            let (_, s) = api.get(&stats_url).await;
            if s["fail"] == json!(2) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("deliveries never failed");
    }
    .await;
    assert_eq!(failed_both["success"], json!(0));

    recv.set("/r", Behavior::Status(200, vec![]));
    // Resend one message by hand: a manual attempt, same webhook-id.
    let (status, _) = api
        .post(
            &format!("/api/v1/app/{a}/msg/e1/endpoint/{ep}/resend"),
            json!({}),
        )
        .await;
    assert_eq!(status, 202);
    assert!(
        recv.wait_for(Duration::from_secs(10), |r| r.requests_to("/r").len() >= 3)
            .await
    );
    let ids: Vec<String> = recv
        .requests_to("/r")
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(ids.iter().filter(|i| **i == m1).count(), 2, "{ids:?}");
    // The attempt is logged once the receiver's response is in, a moment after the
    // receiver saw the request.
    let mut triggers = Vec::new();
    for _ in 0..200 {
        let (_, attempts) = api.get(&format!("/api/v1/app/{a}/attempt/msg/{m1}")).await;
        triggers = attempts["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["triggerType"].as_u64().unwrap())
            .collect::<Vec<_>>();
        if triggers.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        triggers.contains(&1) && triggers.contains(&0),
        "{triggers:?}"
    );

    // Recover everything failed since an hour ago: m2 goes out again.
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (status, out) = api
        .post(
            &format!("/api/v1/app/{a}/endpoint/{ep}/recover"),
            json!({"since": since}),
        )
        .await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["recovered"], json!(1));
    assert!(
        recv.wait_for(Duration::from_secs(10), |r| r
            .requests_to("/r")
            .iter()
            .any(|x| x.header("webhook-id").as_deref() == Some(&m2)
                && x.at > Instant::now() - Duration::from_secs(9)))
            .await
    );
    let done = async {
        for _ in 0..200 {
            let (_, s) = api.get(&stats_url).await;
            if s["success"] == json!(2) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("recovered deliveries never succeeded");
    }
    .await;
    assert_eq!(done["fail"], json!(0));
    // Recover in the future is refused.
    let (status, _) = api
        .post(
            &format!("/api/v1/app/{a}/endpoint/{ep}/recover"),
            json!({"since": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()}),
        )
        .await;
    assert_eq!(status, 422);
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_messages_tags_read_only_tokens_and_metrics() {
    let recv = Receiver::start().await;
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8"]).await;
    let api = server.client();
    let a = app(&api, "misc").await;
    endpoint(&api, &a, json!({"url": recv.url("/m")})).await;

    // deliverAt: nothing before the time, delivered after.
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let scheduled = api
        .create(
            &format!("/api/v1/app/{a}/msg"),
            json!({"eventType": "t", "payload": {}, "deliverAt": at.to_rfc3339(), "tags": ["later"]}),
        )
        .await;
    assert!(scheduled["deliverAt"].is_string(), "{scheduled}");
    let sent_at = Instant::now();
    send(
        &api,
        &a,
        json!({"eventType": "t", "payload": {}, "tags": ["now"]}),
    )
    .await;
    assert!(
        recv.wait_for(Duration::from_secs(10), |r| r.count() >= 2)
            .await
    );
    let scheduled_id = scheduled["id"].as_str().unwrap();
    let arrival = recv
        .requests()
        .iter()
        .find(|r| r.header("webhook-id").as_deref() == Some(scheduled_id))
        .unwrap()
        .at;
    assert!(
        arrival >= sent_at + Duration::from_millis(1500),
        "delivered {:?} after creation, before its deliverAt",
        arrival - sent_at
    );

    // Tag filter on the message list.
    let (_, page) = api.get(&format!("/api/v1/app/{a}/msg?tag=later")).await;
    let ids: Vec<_> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(scheduled_id)]);

    // A read-only portal token reads but cannot write.
    let (_, tok) = api
        .post(
            &format!("/api/v1/auth/app-portal-access/{a}"),
            json!({"readOnly": true}),
        )
        .await;
    let ro = api.with_token(tok["token"].as_str());
    assert_eq!(ro.get(&format!("/api/v1/app/{a}/msg")).await.0, 200);
    let (status, body) = ro
        .post(
            &format!("/api/v1/app/{a}/msg"),
            json!({"eventType": "t", "payload": {}}),
        )
        .await;
    assert_eq!(status, 403, "{body}");

    // Metrics: attempts by outcome, durations and queue gauges.
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let values: HashMap<&str, f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect();
    assert!(
        values["hookline_attempts_total{outcome=\"delivered\"}"] >= 2.0,
        "{text}"
    );
    assert!(
        values["hookline_attempt_duration_seconds_count"] >= 2.0,
        "{text}"
    );
    for gauge in [
        "hookline_deliveries_queued",
        "hookline_deliveries_due",
        "hookline_delivery_lag_seconds",
        "hookline_attempts_in_flight",
    ] {
        assert!(values.contains_key(gauge), "{gauge} missing:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_attempt_in_flight_finish() {
    let recv = Receiver::start().await;
    let mut server = Server::start_with(&["--allow-target", "127.0.0.0/8"]).await;
    let api = server.client();
    let a = app(&api, "drain").await;
    recv.set("/slow", Behavior::Delay(Duration::from_millis(1500), 200));
    endpoint(&api, &a, json!({"url": recv.url("/slow"), "uid": "slow"})).await;
    let m = send(&api, &a, json!({"eventType": "t", "payload": {}})).await;
    assert!(
        recv.wait_for(Duration::from_secs(10), |r| r.count() >= 1)
            .await
    );
    let status = server.terminate().await;
    assert_eq!(status.code(), Some(0));
    // The attempt finished during the drain and was recorded as delivered.
    let data_dir = server.data_dir.clone();
    let restarted = Server::start_in(&data_dir, &["--allow-target", "127.0.0.0/8"]).await;
    let (_, views) = restarted
        .client()
        .get(&format!("/api/v1/app/{a}/msg/{m}/endpoint"))
        .await;
    assert_eq!(views["data"][0]["status"], json!(0), "{views}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        recv.count(),
        1,
        "delivered once, not again after the restart"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn send_example_reaches_only_that_endpoint() {
    let recv = Receiver::start().await;
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8"]).await;
    let api = server.client();
    api.create(
        "/api/v1/event-type",
        json!({"name": "lead.created", "description": "d", "schemas": {"1": {
            "type": "object", "examples": [{"id": "example-1"}, {"id": "example-2"}]}}}),
    )
    .await;
    api.create(
        "/api/v1/event-type",
        json!({"name": "bare", "description": "no examples"}),
    )
    .await;
    let a = app(&api, "examples").await;
    // Filtered to another type: an example still goes to it, and to no other endpoint.
    let target = endpoint(
        &api,
        &a,
        json!({"url": recv.url("/target"), "filterTypes": ["other"]}),
    )
    .await;
    endpoint(&api, &a, json!({"url": recv.url("/bystander")})).await;
    let base = format!("/api/v1/app/{a}/endpoint/{target}/send-example");
    let (status, msg) = api
        .post(
            &base,
            json!({"eventType": "lead.created", "exampleIndex": 1}),
        )
        .await;
    assert_eq!(status, 202, "{msg}");
    assert_eq!(msg["payload"], json!({"id": "example-2"}));
    assert!(
        recv.wait_for(Duration::from_secs(10), |r| r.requests_to("/target").len()
            == 1)
            .await
    );
    let got: Value = serde_json::from_slice(&recv.requests_to("/target")[0].body).unwrap();
    assert_eq!(got, json!({"id": "example-2"}));
    let (status, err) = api.post(&base, json!({"eventType": "bare"})).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["detail"][0]["loc"], json!(["body", "eventType"]));
    let (status, _) = api
        .post(
            &base,
            json!({"eventType": "bare", "payload": {"custom": true}}),
        )
        .await;
    assert_eq!(status, 202);
    assert!(
        recv.wait_for(Duration::from_secs(10), |r| r.requests_to("/target").len()
            == 2)
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(recv.requests_to("/bystander").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn payloads_are_validated_when_asked() {
    let server = Server::start().await;
    let api = server.client();
    api.create(
        "/api/v1/event-type",
        json!({"name": "strict", "description": "d", "validatePayloads": true, "schemas": {
            "1": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
            "2": {"type": "object", "required": ["id", "items"], "properties": {
                "id": {"type": "string"},
                "items": {"type": "array", "items": {"type": "integer"}}}}}}),
    )
    .await;
    api.create(
        "/api/v1/event-type",
        json!({"name": "loose", "description": "d", "schemas": {"1": {"type": "object", "required": ["x"]}}}),
    )
    .await;
    let a = app(&api, "plain").await;
    let msg = format!("/api/v1/app/{a}/msg");
    // The newest schema version (2) applies; every mismatch is named under `payload`.
    let (status, err) = api
        .post(
            &msg,
            json!({"eventType": "strict", "payload": {"id": 5, "items": [1, "two"]}}),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    let locs: Vec<Value> = err["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["loc"].clone())
        .collect();
    assert!(locs.contains(&json!(["body", "payload", "id"])), "{err}");
    assert!(
        locs.contains(&json!(["body", "payload", "items", "1"])),
        "{err}"
    );
    let (status, err) = api
        .post(&msg, json!({"eventType": "strict", "payload": {}}))
        .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["detail"][0]["loc"], json!(["body", "payload"]));
    let (status, _) = api
        .post(
            &msg,
            json!({"eventType": "strict", "payload": {"id": "a", "items": [1, 2]}}),
        )
        .await;
    assert_eq!(status, 202);
    // Not asked for: anything goes.
    assert_eq!(
        api.post(&msg, json!({"eventType": "loose", "payload": {}}))
            .await
            .0,
        202
    );
    assert_eq!(
        api.post(&msg, json!({"eventType": "unknown", "payload": {}}))
            .await
            .0,
        202
    );
    // An application that validates everything: `loose` is checked, unknown types refused.
    let strict_app = api
        .create(
            "/api/v1/app",
            json!({"name": "s", "validatePayloads": true}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let smsg = format!("/api/v1/app/{strict_app}/msg");
    let (status, err) = api
        .post(&smsg, json!({"eventType": "loose", "payload": {}}))
        .await;
    assert_eq!(status, 422, "{err}");
    let (status, err) = api
        .post(&smsg, json!({"eventType": "unknown", "payload": {}}))
        .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["detail"][0]["loc"], json!(["body", "eventType"]));
    assert_eq!(
        api.post(&smsg, json!({"eventType": "loose", "payload": {"x": 1}}))
            .await
            .0,
        202
    );
    // Rejected messages were not stored.
    let (_, page) = api.get(&format!("/api/v1/app/{a}/msg")).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_schedule_shows_the_policy_in_force() {
    let server = Server::start().await;
    let api = server.client();
    let a = api
        .create(
            "/api/v1/app",
            json!({"name": "r", "retryPolicy": {"kind": "fixed", "intervalSeconds": 3600, "giveUpAfterSeconds": 172800}}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let inherits = endpoint(&api, &a, json!({"url": "https://example.invalid/a"})).await;
    let own = endpoint(
        &api,
        &a,
        json!({"url": "https://example.invalid/b", "retryPolicy": {"kind": "exponential",
            "initialSeconds": 5, "factor": 2.0, "maxIntervalSeconds": 3600, "giveUpAfterSeconds": 86400}}),
    )
    .await;
    let (_, s) = api
        .get(&format!(
            "/api/v1/app/{a}/endpoint/{inherits}/retry-schedule"
        ))
        .await;
    assert_eq!(s["source"], json!("application"));
    let offsets: Vec<u64> = serde_json::from_value(s["retryOffsetsSeconds"].clone()).unwrap();
    assert_eq!(offsets.len(), 48, "fixed 1 h for 48 h: 48 retries");
    assert_eq!(offsets.first(), Some(&3600));
    assert_eq!(offsets.last(), Some(&172800));
    assert_eq!(s["attempts"], json!(49));
    let (_, s) = api
        .get(&format!("/api/v1/app/{a}/endpoint/{own}/retry-schedule"))
        .await;
    assert_eq!(s["source"], json!("endpoint"));
    let offsets: Vec<u64> = serde_json::from_value(s["retryOffsetsSeconds"].clone()).unwrap();
    assert!(
        *offsets.last().unwrap() <= 86400,
        "never past 24 h: {offsets:?}"
    );
    assert!(
        offsets.windows(2).all(|w| w[1] - w[0] <= 3600),
        "{offsets:?}"
    );
}
