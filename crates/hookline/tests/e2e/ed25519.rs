//! ed25519 signatures as Svix does them: endpoints with a `whsk_` key pair (brought by
//! the customer or generated) sign `v1a,` entries in `webhook-signature` (and
//! `svix-signature`); `GET .../secret` answers only the `whpk_` public key; a rotation
//! from a `whsec_` secret to a `whsk_` key pair (and back) sends both kinds during its
//! grace period. Deliveries are checked by an independent implementation: Python's
//! `cryptography` (OpenSSL) in `tests/python/verify_deliveries.py`, beside the
//! `standardwebhooks` and `svix` libraries for the HMAC entries. Bad key pairs get a 422
//! naming the field, and `--default-signature ed25519` makes new endpoints ed25519.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hookline_signing::{verify_ed25519, Ed25519PublicKey, Ed25519Secret};
use serde_json::{json, Value};

use crate::delivery_outcomes::{new_app, new_endpoint, send_raw};
use crate::delivery_signing::{
    assert_common_headers, create_body, expected_body, for_verifier, received, request_for,
    secret_of, verify_with_libraries, PAYLOADS,
};
use crate::receiver::{Receiver, Recorded};
use crate::support::{require_python, Api, Server};

fn python(test: &str) -> Option<std::path::PathBuf> {
    require_python(&format!(
        "{test} (ed25519 checked with Python cryptography)"
    ))
}

/// The `(version, signature)` entries of a signature header.
fn entries(header: &str) -> Vec<(String, String)> {
    header
        .split(' ')
        .map(|e| {
            let (v, s) = e.split_once(',').expect("version,signature");
            (v.to_string(), s.to_string())
        })
        .collect()
}

fn versions(r: &Recorded) -> Vec<String> {
    let sig = r.header("webhook-signature").expect("webhook-signature");
    entries(&sig).into_iter().map(|(v, _)| v).collect()
}

/// Checks the delivery with this crate's own verifier too (the Python check is the
/// independent one; this one runs even where no venv exists).
fn assert_verifies_in_rust(r: &Recorded, public: &str) {
    let key = Ed25519PublicKey::parse(public).expect("whpk_ key");
    let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
    let id = r.header("webhook-id").unwrap();
    let sig = r.header("webhook-signature").unwrap();
    assert_eq!(
        verify_ed25519(&key, &id, ts, &r.body, &sig, ts, 0),
        Ok(()),
        "{sig}"
    );
    let mut tampered = r.body.to_vec();
    tampered.push(b' ');
    assert!(verify_ed25519(&key, &id, ts, &tampered, &sig, ts, 0).is_err());
}

async fn endpoint_json(api: &Api, app: &str, ep: &str) -> Value {
    let (status, body) = api.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Sends one message and returns the request `path` got for it.
async fn deliver_one(api: &Api, app: &str, rx: &Receiver, path: &str, n: usize) -> Recorded {
    let msg = send_raw(api, app, &create_body("sig.ed25519", PAYLOADS[2])).await;
    let reqs = received(rx, path, n).await;
    let r = request_for(&reqs, &msg).clone();
    assert_common_headers(&r, &msg);
    assert_eq!(&r.body[..], expected_body(PAYLOADS[2]).as_bytes());
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_from_whsec_to_whsk_and_back_verifies_throughout() {
    let py = python("rotation_from_whsec_to_whsk_and_back_verifies_throughout");
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8"]).await;
    let api = server.client();
    let rx = Receiver::start().await;
    let app = new_app(&api, "ed25519-rotation").await;
    let ep = new_endpoint(
        &api,
        &app,
        json!({"url": rx.url("/rot"), "signature": {"scheme": "standard", "svixHeaders": true}}),
    )
    .await;
    let rotate = format!("/api/v1/app/{app}/endpoint/{ep}/secret/rotate");
    let mut deliveries = Vec::new();

    // Before: one HMAC signature.
    let whsec = secret_of(&api, &app, &ep).await;
    assert!(whsec.starts_with("whsec_"), "{whsec}");
    let before = deliver_one(&api, &app, &rx, "/rot", 1).await;
    assert_eq!(versions(&before), ["v1"]);
    deliveries.push(for_verifier(
        "before",
        &before,
        "standard",
        std::slice::from_ref(&whsec),
        json!({"svixHeaders": true}),
    ));

    // During: the customer's own key pair; the whsec_ secret stays valid for the grace.
    let pair = Ed25519Secret::generate();
    let whsk = pair.to_string();
    let whpk = pair.public_key().to_string();
    let grace = 12;
    let rotated_at = std::time::Instant::now();
    let answer = api
        .create(&rotate, json!({"key": whsk, "gracePeriodSeconds": grace}))
        .await;
    assert_eq!(answer["key"], json!(whpk), "rotate answers the public key");
    assert_eq!(secret_of(&api, &app, &ep).await, whpk);
    let ep_json = endpoint_json(&api, &app, &ep).await;
    assert_eq!(
        ep_json["signature"],
        json!({"scheme": "ed25519", "svixHeaders": true}),
        "a whsk_ key switches the scheme and keeps svixHeaders"
    );
    assert!(!ep_json.to_string().contains(&whsk[5..30]), "{ep_json}");
    let during = deliver_one(&api, &app, &rx, "/rot", 2).await;
    assert!(
        rotated_at.elapsed() < Duration::from_secs(grace - 2),
        "the delivery came too late to test the grace period"
    );
    assert_eq!(
        versions(&during),
        ["v1a", "v1"],
        "new key first, then the old"
    );
    assert_eq!(
        during.header("svix-signature"),
        during.header("webhook-signature")
    );
    assert_verifies_in_rust(&during, &whpk);
    deliveries.push(for_verifier(
        "during (whsec_ -> whsk_)",
        &during,
        "ed25519",
        &[whsec.clone(), whpk.clone()],
        json!({"svixHeaders": true}),
    ));

    // After the grace: the ed25519 signature alone.
    tokio::time::sleep(Duration::from_secs(grace).saturating_sub(rotated_at.elapsed())).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = deliver_one(&api, &app, &rx, "/rot", 3).await;
    assert_eq!(versions(&after), ["v1a"], "the whsec_ secret expired");
    assert_verifies_in_rust(&after, &whpk);
    deliveries.push(for_verifier(
        "after",
        &after,
        "ed25519",
        std::slice::from_ref(&whpk),
        json!({"svixHeaders": true}),
    ));

    // And back: a whsec_ secret makes it standard again; both sign during the grace.
    let back = hookline_signing::StandardSecret::generate().to_string();
    let answer = api.create(&rotate, json!({"key": back})).await;
    assert_eq!(answer["key"], json!(back));
    assert_eq!(secret_of(&api, &app, &ep).await, back);
    assert_eq!(
        endpoint_json(&api, &app, &ep).await["signature"],
        json!({"scheme": "standard", "svixHeaders": true})
    );
    let back_again = deliver_one(&api, &app, &rx, "/rot", 4).await;
    assert_eq!(versions(&back_again), ["v1", "v1a"]);
    assert_verifies_in_rust(&back_again, &whpk);
    deliveries.push(for_verifier(
        "back (whsk_ -> whsec_)",
        &back_again,
        "standard",
        &[back, whpk],
        json!({"svixHeaders": true}),
    ));
    if let Some(py) = py {
        verify_with_libraries(&py, deliveries).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_and_brought_key_pairs_sign_and_only_the_public_key_is_shown() {
    let py = python("generated_and_brought_key_pairs_sign_and_only_the_public_key_is_shown");
    let server = Server::start_with(&["--allow-target", "127.0.0.0/8"]).await;
    let api = server.client();
    let rx = Receiver::start().await;
    let app = new_app(&api, "ed25519-keys").await;

    // Generated: `scheme: ed25519` and no secret.
    let created = api
        .create(
            &format!("/api/v1/app/{app}/endpoint"),
            json!({"url": rx.url("/generated"), "signature": {"scheme": "ed25519"}}),
        )
        .await;
    assert!(!created.to_string().contains("whsk_"), "{created}");
    assert_eq!(created["signature"], json!({"scheme": "ed25519"}));
    let generated = created["id"].as_str().unwrap().to_string();
    let generated_pk = secret_of(&api, &app, &generated).await;
    Ed25519PublicKey::parse(&generated_pk).expect("GET .../secret answers a whpk_ key");
    assert!(generated_pk.starts_with("whpk_"), "{generated_pk}");
    // A rotation without a key generates another key pair, shown as its public key.
    let rotated = api
        .create(
            &format!("/api/v1/app/{app}/endpoint/{generated}/secret/rotate"),
            json!({}),
        )
        .await;
    let rotated_pk = rotated["key"].as_str().unwrap().to_string();
    assert!(rotated_pk.starts_with("whpk_"), "{rotated}");
    assert_ne!(rotated_pk, generated_pk);
    assert_eq!(secret_of(&api, &app, &generated).await, rotated_pk);

    // Brought: `secret: whsk_...` alone makes the endpoint ed25519.
    let pair = Ed25519Secret::generate();
    let brought = new_endpoint(
        &api,
        &app,
        json!({"url": rx.url("/brought"), "secret": pair.to_string()}),
    )
    .await;
    let ep_json = endpoint_json(&api, &app, &brought).await;
    assert_eq!(ep_json["signature"], json!({"scheme": "ed25519"}));
    assert!(!ep_json.to_string().contains("whsk_"), "{ep_json}");
    let brought_pk = secret_of(&api, &app, &brought).await;
    assert_eq!(brought_pk, pair.public_key().to_string());
    let (status, listed) = api.get(&format!("/api/v1/app/{app}/endpoint")).await;
    assert_eq!(status, 200);
    assert!(!listed.to_string().contains("whsk_"), "{listed}");

    let msg = send_raw(&api, &app, &create_body("sig.keys", PAYLOADS[1])).await;
    let mut deliveries = Vec::new();
    for (path, pks) in [
        ("/generated", vec![rotated_pk, generated_pk]),
        ("/brought", vec![brought_pk]),
    ] {
        let reqs = received(&rx, path, 1).await;
        let r = request_for(&reqs, &msg);
        assert_common_headers(r, &msg);
        assert!(r.header("svix-signature").is_none());
        let want = vec!["v1a".to_string(); pks.len()];
        assert_eq!(versions(r), want, "{path}");
        for pk in &pks {
            assert_verifies_in_rust(r, pk);
        }
        deliveries.push(for_verifier(
            path,
            r,
            "ed25519",
            &pks,
            json!({"svixHeaders": false}),
        ));
    }
    if let Some(py) = py {
        verify_with_libraries(&py, deliveries).await;
    }

    // Resetting the scheme (`null`) leaves the key pair deciding: still ed25519, and a
    // rotation without a key generates another key pair.
    let (status, body) = api
        .call(
            "PATCH",
            &format!("/api/v1/app/{app}/endpoint/{brought}"),
            Some(json!({"signature": null})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["signature"], json!({"scheme": "ed25519"}));
    let rotated = api
        .create(
            &format!("/api/v1/app/{app}/endpoint/{brought}/secret/rotate"),
            json!({}),
        )
        .await;
    assert!(
        rotated["key"].as_str().unwrap().starts_with("whpk_"),
        "{rotated}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_pairs_and_scheme_conflicts_get_422_naming_the_field() {
    let server = Server::start().await;
    let api = server.client();
    let app = new_app(&api, "ed25519-bad").await;
    let eps = format!("/api/v1/app/{app}/endpoint");
    let url = "http://127.0.0.1:9/x";
    let hmac_ep = new_endpoint(&api, &app, json!({"url": url})).await;
    let pair = Ed25519Secret::generate();
    let raw = STANDARD.decode(&pair.to_string()[5..]).unwrap();
    let mut mismatched = raw.clone();
    mismatched[40] ^= 0x01;
    let other_public = Ed25519Secret::generate().public_key();
    let swapped = [&raw[..32], &other_public.as_bytes()[..]].concat();
    let whsk = |bytes: &[u8]| format!("whsk_{}", STANDARD.encode(bytes));
    let bad_keys = [
        ("32 bytes (a seed alone)", whsk(&raw[..32]), "got 32"),
        ("65 bytes", whsk(&[&raw[..], &[0]].concat()), "got 65"),
        (
            "a flipped bit in the public half",
            whsk(&mismatched),
            "not the public key of its seed",
        ),
        (
            "another key's public half",
            whsk(&swapped),
            "not the public key of its seed",
        ),
        (
            "bad base64",
            format!("whsk_{}!", &pair.to_string()[5..40]),
            "not valid base64",
        ),
        (
            "URL-safe base64",
            pair.to_string().replace('+', "-").replace('/', "_"),
            "not valid base64",
        ),
        (
            "nothing after the prefix",
            "whsk_".to_string(),
            "key is empty",
        ),
    ];
    let check = |what: &str, status: u16, body: &Value, loc: &[&str], hint: &str| {
        assert_eq!(status, 422, "{what}: {body}");
        let first = &body["detail"][0];
        assert_eq!(first["loc"], json!(loc), "{what}: {body}");
        let msg = first["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains(hint),
            "{what}: {msg:?} should mention {hint:?}"
        );
        // Never an echo of the key material.
        assert!(
            !body.to_string().contains(&pair.to_string()[5..25]),
            "{what}: {body}"
        );
    };
    for (what, key, hint) in &bad_keys {
        if what.starts_with("URL-safe") && !key[5..].contains(['-', '_']) {
            continue; // this key happened to have no + or / to change
        }
        let (status, body) = api.post(&eps, json!({"url": url, "secret": key})).await;
        check(
            &format!("create with {what}"),
            status,
            &body,
            &["body", "secret"],
            hint,
        );
        let (status, body) = api
            .post(
                &format!("{eps}/{hmac_ep}/secret/rotate"),
                json!({"key": key}),
            )
            .await;
        check(
            &format!("rotate to {what}"),
            status,
            &body,
            &["body", "key"],
            hint,
        );
    }
    // The endpoint refused those rotations: still signing with its whsec_ secret.
    assert!(secret_of(&api, &app, &hmac_ep).await.starts_with("whsec_"));

    let conflicts = [
        (
            "ed25519 scheme with a whsec_ secret",
            json!({"url": url, "signature": {"scheme": "ed25519"},
                   "secret": hookline_signing::StandardSecret::generate().to_string()}),
            "whsk_",
        ),
        (
            "standard scheme with a whsk_ key pair",
            json!({"url": url, "signature": {"scheme": "standard"}, "secret": pair.to_string()}),
            "ed25519",
        ),
        (
            "hex scheme with a whsk_ key pair",
            json!({"url": url, "signature": {"scheme": "hmac-sha256-hex", "header": "X-Sig"},
                   "secret": pair.to_string()}),
            "whsk_",
        ),
    ];
    for (what, body, hint) in conflicts {
        let (status, answer) = api.post(&eps, body).await;
        check(what, status, &answer, &["body", "secret"], hint);
    }
    let (status, body) = api
        .call(
            "PATCH",
            &format!("{eps}/{hmac_ep}"),
            Some(json!({"signature": {"scheme": "ed25519"}})),
        )
        .await;
    check(
        "PATCH to ed25519 over a whsec_ secret",
        status,
        &body,
        &["body", "signature", "scheme"],
        "rotate",
    );
    // An ed25519 endpoint cannot become hex (its key would be shown as the hex secret).
    let ed_ep = new_endpoint(&api, &app, json!({"url": url, "secret": pair.to_string()})).await;
    for (scheme, hint) in [
        (
            json!({"scheme": "hmac-sha256-hex", "header": "X-Sig"}),
            "whsk_",
        ),
        (json!({"scheme": "standard"}), "rotate"),
    ] {
        let (status, body) = api
            .call(
                "PATCH",
                &format!("{eps}/{ed_ep}"),
                Some(json!({ "signature": scheme })),
            )
            .await;
        check(
            &format!("PATCH an ed25519 endpoint to {scheme}"),
            status,
            &body,
            &["body", "signature", "scheme"],
            hint,
        );
    }
    assert_eq!(
        secret_of(&api, &app, &ed_ep).await,
        pair.public_key().to_string()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn default_signature_ed25519_makes_new_endpoints_ed25519() {
    let py = python("default_signature_ed25519_makes_new_endpoints_ed25519");
    // Through the environment variable; the flag is parsed by the same clap argument.
    let server = Server::start_with_env(
        &["--allow-target", "127.0.0.0/8"],
        &[("HOOKLINE_DEFAULT_SIGNATURE", "ed25519")],
    )
    .await;
    let api = server.client();
    let rx = Receiver::start().await;
    let app = new_app(&api, "ed25519-default").await;
    let by_default = new_endpoint(&api, &app, json!({"url": rx.url("/default")})).await;
    assert_eq!(
        endpoint_json(&api, &app, &by_default).await["signature"],
        json!({"scheme": "ed25519"})
    );
    let pk = secret_of(&api, &app, &by_default).await;
    assert!(pk.starts_with("whpk_"), "{pk}");
    // What an endpoint asks for, or the secret it brings, beats the default.
    let asked = new_endpoint(
        &api,
        &app,
        json!({"url": rx.url("/asked"), "signature": {"scheme": "standard"}}),
    )
    .await;
    assert!(secret_of(&api, &app, &asked).await.starts_with("whsec_"));
    let whsec = hookline_signing::StandardSecret::generate().to_string();
    let brought = new_endpoint(
        &api,
        &app,
        json!({"url": rx.url("/brought"), "secret": whsec}),
    )
    .await;
    assert_eq!(
        endpoint_json(&api, &app, &brought).await["signature"],
        json!({"scheme": "standard"})
    );
    assert_eq!(secret_of(&api, &app, &brought).await, whsec);

    let msg = send_raw(&api, &app, &create_body("sig.default", PAYLOADS[0])).await;
    let r = request_for(&received(&rx, "/default", 1).await, &msg).clone();
    assert_eq!(versions(&r), ["v1a"]);
    assert_verifies_in_rust(&r, &pk);
    let h = request_for(&received(&rx, "/brought", 1).await, &msg).clone();
    assert_eq!(versions(&h), ["v1"]);
    if let Some(py) = py {
        let deliveries = vec![
            for_verifier(
                "default",
                &r,
                "ed25519",
                &[pk],
                json!({"svixHeaders": false}),
            ),
            for_verifier(
                "brought whsec_",
                &h,
                "standard",
                &[whsec],
                json!({"svixHeaders": false}),
            ),
        ];
        verify_with_libraries(&py, deliveries).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_flag_new_endpoints_stay_standard() {
    let server = Server::start().await;
    let api = server.client();
    let app = new_app(&api, "standard-default").await;
    let ep = new_endpoint(&api, &app, json!({"url": "http://127.0.0.1:9/x"})).await;
    assert!(secret_of(&api, &app, &ep).await.starts_with("whsec_"));
    assert_eq!(
        endpoint_json(&api, &app, &ep).await["signature"],
        json!({"scheme": "standard"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_describes_the_ed25519_scheme() {
    let server = Server::start().await;
    let (status, doc) = server.client().get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    let schema = &doc["components"]["schemas"]["SignatureDoc"];
    let schemes: Vec<&str> = schema["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("SignatureDoc is a oneOf: {schema}"))
        .iter()
        .filter_map(|v| v["properties"]["scheme"]["enum"][0].as_str())
        .collect();
    assert_eq!(schemes, ["standard", "ed25519", "hmac-sha256-hex", "none"]);
    for (name, field) in [("EndpointIn", "signature"), ("EndpointOut", "signature")] {
        let prop = doc["components"]["schemas"][name]["properties"][field].to_string();
        assert!(
            prop.contains("#/components/schemas/SignatureDoc"),
            "{name}.{field}: {prop}"
        );
    }
    let secret_doc = doc["components"]["schemas"]["EndpointSecretOut"].to_string();
    assert!(secret_doc.contains("whpk_"), "{secret_doc}");
}
