//! Managed API tokens (`/api/v1/auth/token`, `hookline token`) and the per-token request
//! rate (`--api-rate-limit`).

use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::*;

async fn new_token(api: &Api, body: Value) -> (String, String) {
    let (status, out) = api.post("/api/v1/auth/token", body.clone()).await;
    assert_eq!(status, 201, "create {body}: {out}");
    (
        out["token"].as_str().expect("token").to_string(),
        out["id"].as_str().expect("id").to_string(),
    )
}

/// Create, use, list (no text, no hash), revoke, then 401 on the very next request.
#[tokio::test]
async fn tokens_are_created_used_listed_without_secrets_and_revoked() {
    let server = Server::start().await;
    let admin = server.client();
    let (status, out) = admin
        .post("/api/v1/auth/token", json!({"name": "  "}))
        .await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(out["detail"][0]["loc"], json!(["body", "name"]), "{out}");
    let (status, out) = admin
        .post("/api/v1/auth/token", json!({"name": "x", "expiry": 0}))
        .await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(out["detail"][0]["loc"], json!(["body", "expiry"]), "{out}");

    let (status, created) = admin
        .post("/api/v1/auth/token", json!({"name": "deploys"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let text = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(text.starts_with("sk_"), "{text}");
    assert_eq!(created["scope"], "admin");
    assert_eq!(created["name"], "deploys");
    assert!(text.starts_with(created["prefix"].as_str().unwrap()));

    // The new token works, for reads and writes.
    let ci = admin.with_token(Some(&text));
    let (status, _) = ci.post("/api/v1/app", json!({"name": "by ci"})).await;
    assert_eq!(status, 201);
    let (status, _) = ci.get("/api/v1/app").await;
    assert_eq!(status, 200);

    // Listed with its name, prefix, scope and a last use; never its text or hash.
    let (status, list) = admin
        .get_until("/api/v1/auth/token", |l| {
            l["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["id"] == id.as_str() && t["lastUsedAt"].is_string())
        })
        .await;
    assert_eq!(status, 200);
    let listed = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} listed: {list}"))
        .clone();
    assert_eq!(listed["name"], "deploys");
    assert_eq!(listed["prefix"], created["prefix"]);
    assert_eq!(listed["scope"], "admin");
    assert_eq!(listed["readOnly"], false);
    assert!(listed["createdAt"].is_string() && listed["expiresAt"].is_null());
    assert!(listed["lastUsedAt"].is_string(), "{listed}");
    let body = list.to_string();
    let hash = Sha256::digest(text.as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    use base64::Engine;
    for secret in [
        text.clone(),
        text["sk_".len()..].to_string(),
        hex.clone(),
        base64::engine::general_purpose::STANDARD.encode(hash),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash),
    ] {
        assert!(
            !body.contains(&secret),
            "the listing holds a secret: {body}"
        );
    }
    // Only the id's 12 bytes of the hash, never more.
    assert!(!body.contains(&hex[..26]), "{body}");

    // Revoked: refused at once, and a second revoke finds nothing.
    let (status, _) = admin
        .call("DELETE", &format!("/api/v1/auth/token/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, out) = ci.get("/api/v1/app").await;
    assert_eq!(status, 401, "{out}");
    let (status, _) = admin
        .call("DELETE", &format!("/api/v1/auth/token/{id}"), None)
        .await;
    assert_eq!(status, 404);
    let (_, list) = admin.get("/api/v1/auth/token").await;
    assert!(!list.to_string().contains(&id), "{list}");
}

/// App-scoped tokens see their application only and cannot list, create or revoke
/// tokens; read-only tokens cannot write; expired tokens are refused with 401.
#[tokio::test]
async fn app_read_only_and_expired_tokens_are_held_to_their_scope() {
    let server = Server::start().await;
    let admin = server.client();
    let mine = admin.create("/api/v1/app", json!({"name": "mine"})).await;
    let other = admin.create("/api/v1/app", json!({"name": "other"})).await;
    let mine_id = mine["id"].as_str().unwrap();
    let (status, out) = admin
        .post(
            "/api/v1/auth/token",
            json!({"name": "x", "appId": "app_nope"}),
        )
        .await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(out["detail"][0]["loc"], json!(["body", "appId"]));

    let (app_text, _) = new_token(&admin, json!({"name": "portal", "appId": mine_id})).await;
    let (_, admin_id) = new_token(&admin, json!({"name": "victim"})).await;
    assert!(app_text.starts_with("appsk_"));
    let app = admin.with_token(Some(&app_text));
    assert_eq!(app.get(&format!("/api/v1/app/{mine_id}")).await.0, 200);
    assert_eq!(
        app.get(&format!("/api/v1/app/{}", other["id"].as_str().unwrap()))
            .await
            .0,
        404
    );
    let (status, out) = app.get("/api/v1/auth/token").await;
    assert_eq!(status, 403, "{out}");
    assert_eq!(
        app.post("/api/v1/auth/token", json!({"name": "escalate"}))
            .await
            .0,
        403
    );
    assert_eq!(
        app.call("DELETE", &format!("/api/v1/auth/token/{admin_id}"), None)
            .await
            .0,
        403
    );
    // The admin token it tried to revoke still stands.
    let (_, list) = admin.get("/api/v1/auth/token").await;
    assert!(list.to_string().contains(&admin_id));
    let listed_app = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "portal")
        .unwrap();
    assert_eq!(listed_app["scope"], "application");
    assert_eq!(listed_app["appId"], mine_id);
    // A portal token is listed too, nameless, with its prefix, and can be revoked.
    let portal = admin
        .create(
            &format!("/api/v1/auth/app-portal-access/{mine_id}"),
            json!({}),
        )
        .await;
    let portal_text = portal["token"].as_str().unwrap();
    let (_, list) = admin.get("/api/v1/auth/token").await;
    let listed_portal = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"].is_null() && t["appId"] == mine_id)
        .unwrap_or_else(|| panic!("the portal token in {list}"))
        .clone();
    assert!(portal_text.starts_with(listed_portal["prefix"].as_str().unwrap()));
    assert!(listed_portal["expiresAt"].is_string());
    let portal_id = listed_portal["id"].as_str().unwrap();
    assert_eq!(
        admin
            .call("DELETE", &format!("/api/v1/auth/token/{portal_id}"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        admin
            .with_token(Some(portal_text))
            .get(&format!("/api/v1/app/{mine_id}"))
            .await
            .0,
        401
    );

    // Read-only: reads yes, writes 403.
    let (ro_text, _) = new_token(&admin, json!({"name": "auditor", "readOnly": true})).await;
    let ro = admin.with_token(Some(&ro_text));
    assert_eq!(ro.get("/api/v1/app").await.0, 200);
    let (status, out) = ro.post("/api/v1/app", json!({"name": "no"})).await;
    assert_eq!(status, 403, "{out}");
    assert_eq!(
        ro.post("/api/v1/auth/token", json!({"name": "no"})).await.0,
        403
    );

    // Expired: 401.
    let (short, _) = new_token(&admin, json!({"name": "brief", "expiry": 1})).await;
    let brief = admin.with_token(Some(&short));
    assert_eq!(brief.get("/api/v1/app").await.0, 200);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (status, out) = brief.get("/api/v1/app").await;
    assert_eq!(status, 401, "{out}");
}

/// `hookline token create` on a stopped server's database makes a token that works
/// once the server is up; `token list` shows it; `token revoke` on the running
/// server's database locks it out at once.
#[tokio::test]
async fn the_token_command_works_on_the_database_directly() {
    let mut server = Server::start().await;
    // Stopped hard: nothing of the server's is left to help the command.
    server.kill().await;
    let mut db = vec![
        "--data-dir".to_string(),
        server.data_dir.display().to_string(),
    ];
    if let Some(url) = server.database_url() {
        db.extend(["--database-url".to_string(), url]);
    }
    let run = |words: &[&str]| {
        let mut args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        args.extend(db.iter().cloned());
        args
    };
    let out = hookline_cli(&run(&[
        "token",
        "create",
        "--name",
        "recovery",
        "--expires-in",
        "1d",
    ]))
    .await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(text.starts_with("sk_") && !text.contains('\n'), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id = stderr
        .split_whitespace()
        .find(|w| w.starts_with("tok_"))
        .map(|w| w.trim_end_matches(';').to_string())
        .unwrap_or_else(|| panic!("the id in {stderr}"));

    server.restart().await;
    let api = server.client().with_token(Some(&text));
    let (status, out) = api.post("/api/v1/app", json!({"name": "after"})).await;
    assert_eq!(status, 201, "{out}");

    let out = hookline_cli(&run(&["token", "list"])).await;
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8(out.stdout).unwrap();
    let line = listing
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} in {listing}"));
    assert!(
        line.contains("recovery") && line.contains("admin"),
        "{line}"
    );
    assert!(!listing.contains(&text[3..]), "the text is never listed");

    let bad = hookline_cli(&run(&["token", "revoke", "tok_zz"])).await;
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let out = hookline_cli(&run(&["token", "revoke", &id])).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(api.get("/api/v1/app").await.0, 401);
    let again = hookline_cli(&run(&["token", "revoke", &id])).await;
    assert_eq!(again.status.code(), Some(1), "{again:?}");
}

/// With `--api-rate-limit`, a flood from one token gets 429 with `Retry-After` and a
/// JSON error, while another token's requests at the same time all succeed.
#[tokio::test]
async fn a_flooding_token_is_limited_and_others_are_not() {
    let server = Server::start_with(&["--api-rate-limit", "20"]).await;
    let admin = server.client();
    let (calm_text, _) = new_token(&admin, json!({"name": "calm"})).await;
    let flood_text = new_token(&admin, json!({"name": "flood"})).await.0;
    // Let the buckets refill after the creates above.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let http = reqwest::Client::new();
    let url = server.url("/api/v1/app");
    let flood = {
        let (http, url, token) = (http.clone(), url.clone(), flood_text.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut ok = 0u32;
            let mut limited = Vec::new();
            while started.elapsed() < Duration::from_secs(2) {
                let mut sends = tokio::task::JoinSet::new();
                for _ in 0..20 {
                    sends.spawn(http.get(&url).bearer_auth(&token).send());
                }
                while let Some(resp) = sends.join_next().await {
                    let resp = resp.expect("task").expect("request");
                    match resp.status().as_u16() {
                        200 => ok += 1,
                        429 => {
                            let retry = resp
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<u64>().ok());
                            let body: Value = resp.json().await.expect("a JSON error");
                            limited.push((retry, body));
                        }
                        other => panic!("flood got {other}"),
                    }
                }
            }
            (ok, limited, started.elapsed())
        })
    };
    // Meanwhile the calm token sends 10 a second, half its rate.
    let mut calm = Vec::new();
    for _ in 0..18 {
        let resp = http.get(&url).bearer_auth(&calm_text).send().await.unwrap();
        calm.push(resp.status().as_u16());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, limited, took) = flood.await.unwrap();
    println!(
        "rate limit 20/s: the flood got {ok} answered and {} refused in {took:.1?}; the calm token {} of {}",
        limited.len(),
        calm.iter().filter(|s| **s == 200).count(),
        calm.len()
    );
    assert!(calm.iter().all(|s| *s == 200), "calm token: {calm:?}");
    assert!(!limited.is_empty(), "the flood was never limited");
    // A full bucket (20), then 20 a second for as long as the flood lasted.
    let most = 20.0 + 20.0 * took.as_secs_f64() + 1.0;
    assert!(
        ok >= 20 && f64::from(ok) <= most,
        "the flood got {ok} through in {took:?}, at most {most:.0} allowed"
    );
    for (retry, body) in &limited {
        assert_eq!(*retry, Some(1), "Retry-After: {retry:?}");
        assert_eq!(body["code"], "rate_limited", "{body}");
        assert!(body["detail"].as_str().unwrap().contains("rate"));
    }
}

/// Two processes on one PostgreSQL database: a token revoked through one is refused by
/// the other on its next request (no process caches tokens).
#[tokio::test]
async fn a_token_revoked_on_one_node_is_refused_by_the_other_at_once() {
    let Some(db) = TestDb::create("tokens_across_nodes").await else {
        eprintln!("skipped: needs HOOKLINE_TEST_POSTGRES_URL");
        return;
    };
    let args = [
        "--database-url",
        db.url.as_str(),
        "--database-pool-size",
        "4",
    ];
    let one = Server::start_with(&args).await;
    let two = Server::start_with(&args).await;
    let (text, id) = new_token(&one.client(), json!({"name": "shared"})).await;
    let on_two = two.client().with_token(Some(&text));
    assert_eq!(on_two.get("/api/v1/app").await.0, 200);
    let (status, _) = one
        .client()
        .call("DELETE", &format!("/api/v1/auth/token/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, out) = on_two.get("/api/v1/app").await;
    assert_eq!(status, 401, "{out}");
    drop((one, two));
    db.drop_db().await;
}
