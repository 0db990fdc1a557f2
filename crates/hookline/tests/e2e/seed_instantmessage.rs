//! Seed 001, Instant Message (Grupo Boticário's messaging platform): two kinds of
//! events, an inbound message (`event.type: "response"`) and a message status
//! (`sent` / `delivered` / `read`), POSTed as the documented JSON bodies to URLs that an
//! administrator registers for the integrating app. All configuration comes from
//! `examples/instantmessage/`, so the example and this test cannot drift apart.

use std::time::Duration;

use serde_json::{json, Value};

use crate::receiver::Receiver;
use crate::support::{self, Server};

fn example(file: &str) -> String {
    support::example_text("instantmessage", file)
}

fn example_json(file: &str) -> Value {
    support::example_json("instantmessage", file)
}

/// A message whose payload is the sample file's text, untouched.
fn message(event_type: &str, payload_text: &str) -> String {
    format!(r#"{{"eventType": "{event_type}", "payload": {payload_text}}}"#)
}

#[tokio::test(flavor = "multi_thread")]
async fn instantmessage_events_reach_the_admin_registered_url_byte_for_byte() {
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8"]).await;
    let admin = server.client();
    let app_in = example_json("app.json");
    let app = app_in["uid"]
        .as_str()
        .expect("app.json has a uid")
        .to_string();
    admin.create("/api/v1/app", app_in).await;

    // The two event types, validating payloads against schemas whose examples are the
    // seed's sample bodies.
    let samples: &[(&str, &[&str])] = &[
        ("message.response", &["payloads/response.json"]),
        (
            "message.status",
            &[
                "payloads/status-sent.json",
                "payloads/status-delivered.json",
                "payloads/status-read.json",
            ],
        ),
    ];
    for (name, files) in samples {
        let et = admin
            .create(
                "/api/v1/event-type",
                example_json(&format!("event-types/{name}.json")),
            )
            .await;
        assert_eq!(et["name"], json!(name));
        assert_eq!(et["validatePayloads"], json!(true), "{et}");
        let examples: Vec<Value> = files.iter().map(|f| example_json(f)).collect();
        assert_eq!(et["schemas"]["1"]["examples"], json!(examples), "{name}");
    }

    // URLs are registered by an administrator: the integration's own (read-only)
    // token may look at its deliveries but not register a URL.
    let rx = Receiver::start().await;
    let path = "/endereco-webhook-integracao";
    let mut ep_in = example_json("endpoint.json");
    ep_in["url"] = json!(rx.url(path));
    let access = admin
        .create(
            &format!("/api/v1/auth/app-portal-access/{app}"),
            example_json("portal-access.json"),
        )
        .await;
    let app_api = admin.with_token(Some(access["token"].as_str().expect("token")));
    let (status, body) = app_api
        .post(&format!("/api/v1/app/{app}/endpoint"), ep_in.clone())
        .await;
    assert_eq!(status, 403, "{body}");
    let ep = admin
        .create(&format!("/api/v1/app/{app}/endpoint"), ep_in)
        .await;
    let ep_id = ep["id"].as_str().unwrap().to_string();

    // The status enum holds: "bogus" (and the seed's own placeholder text) is refused,
    // naming the path.
    let sent = example("payloads/status-sent.json");
    assert_eq!(sent.matches(r#""status": "sent""#).count(), 1);
    for bad in ["bogus", "sent | delivered | read"] {
        let text = sent.replace(r#""status": "sent""#, &format!(r#""status": "{bad}""#));
        let (status, err) = admin
            .post_raw(
                &format!("/api/v1/app/{app}/msg"),
                message("message.status", &text),
            )
            .await;
        assert_eq!(status, 422, "{bad}: {err}");
        assert_eq!(
            err["detail"][0]["loc"],
            json!(["body", "payload", "event", "status"]),
            "{err}"
        );
    }
    // An inbound message is not a status (event.type is "response").
    let (status, err) = admin
        .post_raw(
            &format!("/api/v1/app/{app}/msg"),
            message("message.status", &example("payloads/response.json")),
        )
        .await;
    assert_eq!(status, 422, "{err}");

    // Each sample, as the file's text inside the message.
    let mut sent_msgs = Vec::new();
    for (name, files) in samples {
        for file in *files {
            let text = example(file);
            let (status, msg) = admin
                .post_raw(&format!("/api/v1/app/{app}/msg"), message(name, &text))
                .await;
            assert_eq!(status, 202, "{file}: {msg}");
            sent_msgs.push((msg["id"].as_str().unwrap().to_string(), *file, text));
        }
    }
    assert!(
        rx.wait_for(Duration::from_secs(15), |r| r.requests_to(path).len() >= 4)
            .await,
        "got {} of 4 deliveries",
        rx.requests_to(path).len()
    );
    let got = rx.requests_to(path);
    for (msg_id, file, text) in &sent_msgs {
        let req = got
            .iter()
            .find(|r| r.header("webhook-id").as_deref() == Some(msg_id))
            .unwrap_or_else(|| panic!("no delivery of {file}"));
        // The JSON value's bytes: the file's text without its trailing newline.
        assert_eq!(
            std::str::from_utf8(&req.body).expect("utf-8"),
            text.trim_end(),
            "{file} delivered byte for byte"
        );
        assert_eq!(
            req.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(
            req.header("webhook-signature"),
            None,
            "unsigned, as the seed"
        );
        // Recorded as a success (the attempt is written just after the answer).
        let rows_path = format!("/api/v1/app/{app}/msg/{msg_id}/endpoint");
        let mut rows = Value::Null;
        for _ in 0..100 {
            rows = admin.get(&rows_path).await.1;
            if rows["data"][0]["status"] == json!(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(rows["data"][0]["id"], json!(ep_id), "{rows}");
        assert_eq!(rows["data"][0]["status"], json!(0), "{file}: {rows}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.requests_to(path).len(), 4, "one delivery per message");

    // The integration's token reads its messages back.
    let (status, list) = app_api
        .get(&format!("/api/v1/app/{app}/msg?limit=10"))
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"].as_array().map(Vec::len), Some(4), "{list}");
}
