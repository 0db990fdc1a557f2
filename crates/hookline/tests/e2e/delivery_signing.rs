//! What a receiver gets: the payload bytes exactly as they were posted, hookline's
//! headers, and signatures that the receivers' own libraries accept — the Standard
//! Webhooks scheme checked with both `standardwebhooks` and the `svix` Python library
//! (`tests/python/verify_deliveries.py`), across a secret rotation, the
//! `hmac-sha256-hex` scheme, the `none` scheme, and a `webhook-id` that stays the same
//! across retries.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hookline_signing::sign_hmac_sha256_hex;
use serde_json::{json, Value};
use tokio::process::Command;

use crate::delivery_outcomes::{
    attempts, loopback_server, new_app, new_endpoint, send_raw, settled,
};
use crate::receiver::{Behavior, Receiver, Recorded};
use crate::support::{self, Api, Server};

const WAIT: Duration = Duration::from_secs(30);

/// Payloads as clients really write them: odd whitespace (tabs, CRLF, spaces around
/// colons), escapes that re-serialising would change, non-ASCII text, numbers in forms
/// a parser would normalise. Each must arrive byte for byte.
pub(crate) const PAYLOADS: &[&str] = &[
    r#"{"type":"compact","n":1}"#,
    "{ \"spaced\" :  true ,\n\t\"tabs\":\t[ 1 ,2,\r\n 3 ]   }",
    r#"{"unicode":"Zoë — 日本語 ✓ 😀","escaped":"\u00e9\ud83d\ude00\n\"q\" \\ \/","num":1.50E+3,"neg":-0.0,"big":12345678901234567890123}"#,
    "{}",
    "{\n    \"deep\": {\"a\": [{\"b\": null}, false, \"\"]},\n    \"k\": \"v\"\n}\t",
];

/// The create-message request body for `payload`, with whitespace around the payload
/// that is not part of it.
pub(crate) fn create_body(event_type: &str, payload: &str) -> String {
    format!("{{ \"eventType\" : \"{event_type}\",\n  \"payload\" :\t{payload} \r\n}}")
}

/// The payload as it must arrive: the JSON value's own text (surrounding whitespace is
/// not part of the value).
pub(crate) fn expected_body(payload: &str) -> &str {
    payload.trim()
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (c.get(1).copied().unwrap_or(0) as u32) << 8
            | c.get(2).copied().unwrap_or(0) as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// One recorded request as the verifier script reads it.
pub(crate) fn for_verifier(
    name: &str,
    r: &Recorded,
    scheme: &str,
    secrets: &[String],
    extra: Value,
) -> Value {
    let mut headers = serde_json::Map::new();
    for name in r.headers.keys() {
        let values: Vec<_> = r.headers.get_all(name).iter().collect();
        assert_eq!(values.len(), 1, "header {name} sent {} times", values.len());
        let v = values[0].to_str().expect("ASCII header value");
        headers.insert(name.as_str().to_string(), json!(v));
    }
    let mut d = json!({
        "name": name,
        "bodyB64": b64(&r.body),
        "headers": headers,
        "scheme": scheme,
        "secrets": secrets,
    });
    for (k, v) in extra.as_object().expect("extra").iter() {
        d[k] = v.clone();
    }
    d
}

/// Runs `tests/python/verify_deliveries.py` on `deliveries`; it must exit 0.
pub(crate) async fn verify_with_libraries(python: &Path, deliveries: Vec<Value>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file: PathBuf = dir.path().join("deliveries.json");
    std::fs::write(
        &file,
        serde_json::to_vec_pretty(&json!({ "deliveries": deliveries })).expect("JSON"),
    )
    .expect("write deliveries");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/verify_deliveries.py");
    let run = Command::new(python)
        .arg(&script)
        .arg(&file)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("verify_deliveries.py finishes within 120 s")
        .expect("run verify_deliveries.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "verify_deliveries.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    print!("{stdout}");
}

pub(crate) async fn secret_of(api: &Api, app: &str, ep: &str) -> String {
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/secret");
    let (status, body) = api.get(&path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body["key"].as_str().expect("key").to_string()
}

/// Waits until `path` has received `n` requests; returns them.
pub(crate) async fn received(rx: &Receiver, path: &str, n: usize) -> Vec<Recorded> {
    let ok = rx.wait_for(WAIT, |r| r.requests_to(path).len() >= n).await;
    let got = rx.requests_to(path);
    assert!(ok, "{path}: {} of {n} requests within {WAIT:?}", got.len());
    got
}

/// The request to `path` carrying `webhook-id: msg`.
pub(crate) fn request_for<'a>(reqs: &'a [Recorded], msg: &str) -> &'a Recorded {
    let found: Vec<&Recorded> = reqs
        .iter()
        .filter(|r| r.header("webhook-id").as_deref() == Some(msg))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "requests with webhook-id {msg}: {}",
        found.len()
    );
    found[0]
}

/// Headers every delivery has, whatever the scheme.
pub(crate) fn assert_common_headers(r: &Recorded, msg: &str) {
    assert_eq!(r.header("webhook-id").as_deref(), Some(msg), "webhook-id");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json"),
        "content-type"
    );
    let ua = r.header("user-agent").unwrap_or_default();
    assert!(ua.starts_with("hookline/"), "user-agent: {ua:?}");
    let ts: i64 = r
        .header("webhook-timestamp")
        .and_then(|t| t.parse().ok())
        .expect("numeric webhook-timestamp");
    let now = chrono::Utc::now().timestamp();
    assert!((now - ts).abs() < 300, "webhook-timestamp {ts}, now {now}");
}

fn python(test: &str) -> Option<PathBuf> {
    support::require_python(&format!("{test} (verification with standardwebhooks/svix)"))
}

#[tokio::test(flavor = "multi_thread")]
async fn standard_signatures_verify_with_receiver_libraries() {
    let py = python("standard_signatures_verify_with_receiver_libraries");
    let server = loopback_server().await;
    let api = server.client();
    let rx = Receiver::start().await;
    let app = new_app(&api, "signing").await;
    let plain = new_endpoint(
        &api,
        &app,
        json!({
            "url": rx.url("/standard"),
            "headers": {"X-Custom-Header": "custom-value", "X-Tenant": "tenant-42"},
        }),
    )
    .await;
    let with_svix = new_endpoint(
        &api,
        &app,
        json!({
            "url": rx.url("/svix"),
            "signature": {"scheme": "standard", "svixHeaders": true},
        }),
    )
    .await;

    let mut msgs = Vec::new();
    for p in PAYLOADS {
        msgs.push((send_raw(&api, &app, &create_body("sig.test", p)).await, *p));
    }
    let plain_reqs = received(&rx, "/standard", msgs.len()).await;
    let svix_reqs = received(&rx, "/svix", msgs.len()).await;

    let plain_secret = secret_of(&api, &app, &plain).await;
    let svix_secret = secret_of(&api, &app, &with_svix).await;
    assert!(plain_secret.starts_with("whsec_"), "{plain_secret}");
    let mut deliveries = Vec::new();
    for (i, (msg, payload)) in msgs.iter().enumerate() {
        let r = request_for(&plain_reqs, msg);
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            expected_body(payload),
            "payload {i} changed on the way"
        );
        assert_eq!(&r.body[..], expected_body(payload).as_bytes());
        assert_common_headers(r, msg);
        assert_eq!(r.header("x-custom-header").as_deref(), Some("custom-value"));
        assert_eq!(r.header("x-tenant").as_deref(), Some("tenant-42"));
        let sig = r.header("webhook-signature").expect("webhook-signature");
        assert!(sig.starts_with("v1,"), "{sig}");
        assert!(
            r.header("svix-signature").is_none(),
            "svix headers not asked for"
        );
        deliveries.push(for_verifier(
            &format!("standard #{i}"),
            r,
            "standard",
            std::slice::from_ref(&plain_secret),
            json!({"svixHeaders": false}),
        ));

        let r = request_for(&svix_reqs, msg);
        assert_eq!(
            &r.body[..],
            expected_body(payload).as_bytes(),
            "payload {i}"
        );
        assert_common_headers(r, msg);
        assert_eq!(r.header("svix-id").as_deref(), Some(msg.as_str()));
        assert!(
            r.header("x-custom-header").is_none(),
            "headers of another endpoint"
        );
        deliveries.push(for_verifier(
            &format!("svixHeaders #{i}"),
            r,
            "standard",
            std::slice::from_ref(&svix_secret),
            json!({"svixHeaders": true}),
        ));
    }
    if let Some(py) = py {
        verify_with_libraries(&py, deliveries).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_secret_signs_with_old_and_new() {
    let py = python("rotated_secret_signs_with_old_and_new");
    let server = loopback_server().await;
    let api = server.client();
    let rx = Receiver::start().await;
    let app = new_app(&api, "rotation").await;
    let ep = new_endpoint(&api, &app, json!({"url": rx.url("/rotated")})).await;
    let old = secret_of(&api, &app, &ep).await;
    let rotated = api
        .create(
            &format!("/api/v1/app/{app}/endpoint/{ep}/secret/rotate"),
            json!({}),
        )
        .await;
    let new = secret_of(&api, &app, &ep).await;
    assert_ne!(old, new, "rotation changed nothing");
    if let Some(k) = rotated["key"].as_str() {
        assert_eq!(k, new, "rotate answered a key that is not the current one");
    }

    let msg = send_raw(&api, &app, &create_body("sig.rotated", PAYLOADS[2])).await;
    let reqs = received(&rx, "/rotated", 1).await;
    let r = request_for(&reqs, &msg);
    assert_common_headers(r, &msg);
    assert_eq!(&r.body[..], expected_body(PAYLOADS[2]).as_bytes());
    let sig = r.header("webhook-signature").expect("webhook-signature");
    assert_eq!(
        sig.split(' ').count(),
        2,
        "one signature per valid secret during the grace period: {sig}"
    );
    if let Some(py) = py {
        let d = for_verifier(
            "rotated",
            r,
            "standard",
            &[old, new],
            json!({"svixHeaders": false}),
        );
        verify_with_libraries(&py, vec![d]).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hmac_sha256_hex_signs_the_raw_body_with_the_secret_string() {
    let py = python("hmac_sha256_hex_signs_the_raw_body_with_the_secret_string");
    let server = loopback_server().await;
    let api = server.client();
    let rx = Receiver::start().await;
    let app = new_app(&api, "cablenet").await;
    let secret = "cnai_Customer-Chosen.Secret!2024";
    let ep = new_endpoint(
        &api,
        &app,
        json!({
            "url": rx.url("/cablenet"),
            "secret": secret,
            "signature": {"scheme": "hmac-sha256-hex", "header": "X-CablenetAI-Signature"},
        }),
    )
    .await;
    assert_eq!(secret_of(&api, &app, &ep).await, secret);

    let mut msgs = Vec::new();
    for p in &PAYLOADS[1..3] {
        msgs.push((
            send_raw(&api, &app, &create_body("lead.created", p)).await,
            *p,
        ));
    }
    let reqs = received(&rx, "/cablenet", msgs.len()).await;
    let mut deliveries = Vec::new();
    for (i, (msg, payload)) in msgs.iter().enumerate() {
        let r = request_for(&reqs, msg);
        assert_common_headers(r, msg);
        assert_eq!(
            &r.body[..],
            expected_body(payload).as_bytes(),
            "payload {i}"
        );
        let sig = r
            .header("x-cablenetai-signature")
            .expect("X-CablenetAI-Signature");
        assert_eq!(sig.len(), 64, "{sig}");
        assert!(
            sig.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "lower-case hex: {sig}"
        );
        assert_eq!(sig, sign_hmac_sha256_hex(secret.as_bytes(), &r.body));
        let mut tampered = r.body.to_vec();
        tampered.push(b' ');
        assert_ne!(sig, sign_hmac_sha256_hex(secret.as_bytes(), &tampered));
        assert!(
            r.header("webhook-signature").is_none(),
            "also standard-signed"
        );
        deliveries.push(for_verifier(
            &format!("hmac-hex #{i}"),
            r,
            "hmac-sha256-hex",
            &[secret.to_string()],
            json!({"header": "X-CablenetAI-Signature"}),
        ));
    }
    if let Some(py) = py {
        verify_with_libraries(&py, deliveries).await;
    }
}

/// Scheme `none` sends no signature even on a server whose default is to add the
/// `svix-*` headers; the same server's other endpoints show the flag works.
#[tokio::test(flavor = "multi_thread")]
async fn scheme_none_is_unsigned_and_svix_headers_flag_sets_the_default() {
    let py = python("scheme_none_is_unsigned_and_svix_headers_flag_sets_the_default");
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8", "--svix-headers"]).await;
    let api = server.client();
    let rx = Receiver::start().await;
    let app = new_app(&api, "unsigned").await;
    let _none = new_endpoint(
        &api,
        &app,
        json!({"url": rx.url("/none"), "signature": {"scheme": "none"}}),
    )
    .await;
    let default = new_endpoint(&api, &app, json!({"url": rx.url("/default")})).await;
    let opted_out = new_endpoint(
        &api,
        &app,
        json!({
            "url": rx.url("/opted-out"),
            "signature": {"scheme": "standard", "svixHeaders": false},
        }),
    )
    .await;
    let msg = send_raw(&api, &app, &create_body("sig.none", PAYLOADS[1])).await;

    let r = &received(&rx, "/none", 1).await[0];
    assert_common_headers(r, &msg);
    assert_eq!(&r.body[..], expected_body(PAYLOADS[1]).as_bytes());
    let signatures: Vec<&str> = r
        .headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.contains("signature"))
        .collect();
    assert!(signatures.is_empty(), "scheme none sent {signatures:?}");

    let d = &received(&rx, "/default", 1).await[0];
    assert_common_headers(d, &msg);
    assert_eq!(d.header("svix-id").as_deref(), Some(msg.as_str()));
    assert!(
        d.header("svix-signature").is_some(),
        "--svix-headers default"
    );
    let o = &received(&rx, "/opted-out", 1).await[0];
    assert_common_headers(o, &msg);
    assert!(
        o.header("svix-id").is_none(),
        "endpoint said svixHeaders false"
    );
    assert!(o.header("webhook-signature").is_some());

    if let Some(py) = py {
        let deliveries = vec![
            for_verifier("none", r, "none", &[], json!({})),
            for_verifier(
                "svix default",
                d,
                "standard",
                &[secret_of(&api, &app, &default).await],
                json!({"svixHeaders": true}),
            ),
            for_verifier(
                "svix opted out",
                o,
                "standard",
                &[secret_of(&api, &app, &opted_out).await],
                json!({"svixHeaders": false}),
            ),
        ];
        verify_with_libraries(&py, deliveries).await;
    }
}

/// Receivers deduplicate by `webhook-id`: every retry of a delivery carries the same id
/// and the same body (and a signature valid for its own timestamp).
#[tokio::test(flavor = "multi_thread")]
async fn webhook_id_is_stable_across_retries() {
    let py = python("webhook_id_is_stable_across_retries");
    let server = loopback_server().await;
    let api = server.client();
    let rx = Receiver::start().await;
    rx.set("/flaky", Behavior::Status(500, vec![]));
    let app = new_app(&api, "retries").await;
    let ep = new_endpoint(
        &api,
        &app,
        json!({
            "url": rx.url("/flaky"),
            "retryPolicy": {"kind": "schedule", "delaysSeconds": [1, 1]},
        }),
    )
    .await;
    let msg = send_raw(&api, &app, &create_body("sig.retry", PAYLOADS[4])).await;
    let row = settled(&api, &app, &msg, &ep).await;
    assert_eq!(row["status"], 2, "{row}");
    assert_eq!(row["attempts"], 3, "{row}");
    assert_eq!(attempts(&api, &app, &ep, &msg).await.len(), 3);

    let reqs = rx.requests_to("/flaky");
    assert_eq!(reqs.len(), 3, "first try and two retries");
    let secret = secret_of(&api, &app, &ep).await;
    let mut deliveries = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        assert_common_headers(r, &msg);
        assert_eq!(
            &r.body[..],
            expected_body(PAYLOADS[4]).as_bytes(),
            "try {i}"
        );
        deliveries.push(for_verifier(
            &format!("try #{i}"),
            r,
            "standard",
            std::slice::from_ref(&secret),
            json!({"svixHeaders": false}),
        ));
    }
    if let Some(py) = py {
        verify_with_libraries(&py, deliveries).await;
    }
}

#[test]
fn base64_matches_known_vectors() {
    for (input, want) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foobar", "Zm9vYmFy"),
        ("\u{ff}\u{fe}", "w7/Dvg=="),
    ] {
        assert_eq!(b64(input.as_bytes()), want, "{input:?}");
    }
}
