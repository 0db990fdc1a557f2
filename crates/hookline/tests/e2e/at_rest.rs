//! Secrets at rest (issue 21, item 3): endpoint secrets, every secret a rotation keeps
//! and custom header values never reach the database files in the clear; a wrong or
//! missing main key refuses to start and changes nothing; `hookline rotate-key` re-seals
//! everything and deliveries still verify afterwards. On SQLite (raw files, WAL
//! included, and the key file) and on PostgreSQL (the rows as stored, a key given).
//!
//! Each test chooses its database itself: `scripts/test` runs this module once, not
//! again in its pass with every e2e server on PostgreSQL.

use std::path::Path;
use std::time::Duration;

use hookline_signing::{verify_standard, StandardSecret};
use serde_json::json;

use crate::receiver::Receiver;
use crate::support::{app_with_endpoint, hookline_cli_with, Api, Server, TestDb};

/// The environment of this module's CLI runs: no main key, each test gives its keys
/// itself (or none, to see a start refused).
const NO_KEY: &[(&str, &str)] = &[];

/// The endpoint's first secret and the one it is rotated to (both kept while the
/// rotation's grace period runs), and a custom header value: none may be stored as is.
const FIRST: &str = "whsec_Zmlyc3Qtc2VjcmV0LWF0LXJlc3QtMDEyMzQ1Njc=";
const SECOND: &str = "whsec_c2Vjb25kLXNlY3JldC1hdC1yZXN0LTAxMjM0NTY3";
const HEADER_VALUE: &str = "Bearer hdr-token-at-rest-5f1c9b";

/// The texts that must never be found in a database file: each secret's key part (the
/// base64 after `whsec_`, as it would be stored in the clear) and the header value.
fn needles() -> Vec<&'static str> {
    vec![
        FIRST.trim_start_matches("whsec_"),
        SECOND.trim_start_matches("whsec_"),
        HEADER_VALUE,
        "hdr-token-at-rest",
    ]
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `hookline serve` with `args` that must refuse to start: exits (not 0) within 30 s
/// with one line saying why; returns stderr.
async fn refused(args: &[&str]) -> String {
    let mut all = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-token",
        crate::support::ADMIN_TOKEN,
    ];
    all.extend_from_slice(args);
    let out = tokio::time::timeout(Duration::from_secs(30), hookline_cli_with(&all, NO_KEY))
        .await
        .expect("a refused start exits within 30 s");
    let err = text(&out.stderr);
    assert!(!out.status.success(), "started with {args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// An endpoint with the first secret and the header, rotated to the second secret (the
/// first stays valid for a day), receiving at `/hook`.
async fn sealed_endpoint(api: &Api, recv: &Receiver) -> (String, String) {
    let (app, ep) = app_with_endpoint(
        api,
        json!({"url": recv.url("/hook"), "secret": FIRST, "headers": {"authorization": HEADER_VALUE}}),
    )
    .await;
    let (status, body) = api
        .post(
            &format!("/api/v1/app/{app}/endpoint/{ep}/secret/rotate"),
            json!({"key": SECOND}),
        )
        .await;
    assert!(status == 200 || status == 204, "rotate: {status} {body}");
    (app, ep)
}

/// Sends a message and checks that it arrives signed with the second secret (and, while
/// the rotation's grace period runs, the first) and with the header.
async fn delivers_verified(api: &Api, recv: &Receiver, app: &str, n: usize) {
    let (status, body) = api
        .post(
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "order.paid", "payload": {"n": n}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(
        recv.wait_for(Duration::from_secs(15), |r| r.requests_to("/hook").len()
            >= n)
            .await,
        "delivery {n} did not arrive"
    );
    let req = recv.requests_to("/hook").pop().unwrap();
    assert_eq!(req.header("authorization").as_deref(), Some(HEADER_VALUE));
    let id = req.header("webhook-id").unwrap();
    let ts: i64 = req.header("webhook-timestamp").unwrap().parse().unwrap();
    let sig = req.header("webhook-signature").unwrap();
    for secret in [SECOND, FIRST] {
        verify_standard(
            &StandardSecret::parse(secret).unwrap(),
            &id,
            ts,
            &req.body,
            &sig,
            ts,
            5,
        )
        .unwrap_or_else(|e| panic!("delivery {n} not signed with {secret}: {e:?}"));
    }
}

/// Every file of the SQLite database (main file, WAL, shared memory) read raw: none
/// holds a secret or the header value. Returns how many bytes were searched.
fn raw_files_hold_no_secret(dir: &Path) -> usize {
    let mut searched = 0;
    for name in [
        "hookline.sqlite",
        "hookline.sqlite-wal",
        "hookline.sqlite-shm",
    ] {
        let Ok(bytes) = std::fs::read(dir.join(name)) else {
            continue;
        };
        searched += bytes.len();
        let raw = String::from_utf8_lossy(&bytes);
        for needle in needles() {
            assert!(
                !raw.contains(needle),
                "{name} holds {needle:?} in the clear"
            );
        }
    }
    searched
}

/// The sealed rows and the check value, read straight from the SQLite file.
fn sealed_rows(dir: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("hookline.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut rows: Vec<String> = conn
        .prepare("SELECT id || ' ' || settings FROM endpoints")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.push(
        conn.query_row(
            "SELECT key_id || ' ' || check_value FROM sealing",
            [],
            |r| r.get(0),
        )
        .unwrap(),
    );
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_files_hold_no_secret_and_rotate_key_keeps_deliveries_verifying() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("hookline.sqlite").display());
    let args = [
        "--database-url",
        db_url.as_str(),
        "--allow-target",
        "127.0.0.0/8",
    ];
    let recv = Receiver::start().await;
    let mut server = Server::start_in(dir.path(), &args).await;
    let api = server.client();
    let (app, ep) = sealed_endpoint(&api, &recv).await;
    delivers_verified(&api, &recv, &app, 1).await;
    // The API still shows the secret and the header to whoever may see them.
    let (_, secret) = api
        .get(&format!("/api/v1/app/{app}/endpoint/{ep}/secret"))
        .await;
    assert_eq!(secret["key"], SECOND);
    let (_, headers) = api
        .get(&format!("/api/v1/app/{app}/endpoint/{ep}/headers"))
        .await;
    assert_eq!(
        headers["headers"]["authorization"], HEADER_VALUE,
        "{headers}"
    );
    let (_, shown) = api.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await;
    assert!(
        !shown.to_string().contains("hl1:"),
        "the sealed form shown: {shown}"
    );

    // While it runs (the WAL holds the recent writes) and after it stopped.
    let searched = raw_files_hold_no_secret(dir.path());
    assert!(searched > 0, "no database file found");
    server.terminate().await;
    raw_files_hold_no_secret(dir.path());

    // The key file: made at first start, owner-only, one base64 key.
    let key_path = dir.path().join("encryption.key");
    let first_key = std::fs::read_to_string(&key_path).expect("the key file");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
    assert_eq!(first_key.trim().lines().count(), 1);

    // A wrong key refuses to start and changes nothing.
    let before = sealed_rows(dir.path());
    let wrong = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let mut with_wrong = args.to_vec();
    with_wrong.extend([
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--encryption-key",
        wrong,
    ]);
    let err = refused(&with_wrong).await;
    assert!(
        err.contains("is not the one this database's secrets are sealed under"),
        "{err}"
    );
    assert!(
        !err.contains(wrong) && !err.contains(first_key.trim()),
        "a key in: {err}"
    );
    assert!(
        sealed_rows(dir.path()) == before,
        "a refused start changed the rows"
    );
    // A malformed key is named as such.
    let mut with_short = args.to_vec();
    with_short.extend([
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--encryption-key",
        "c2hvcnQ=",
    ]);
    let err = refused(&with_short).await;
    assert!(
        err.contains("--encryption-key") && err.contains("not 32"),
        "{err}"
    );

    // No key at all (the key file gone): refused, saying where the key was looked for.
    let aside = dir.path().join("key.aside");
    std::fs::rename(&key_path, &aside).unwrap();
    let mut no_key = args.to_vec();
    no_key.extend(["--data-dir", dir.path().to_str().unwrap()]);
    let err = refused(&no_key).await;
    assert!(
        err.contains("no key was given") && err.contains(key_path.to_str().unwrap()),
        "{err}"
    );
    assert!(
        !key_path.exists(),
        "a new key file was made for a sealed database"
    );
    std::fs::rename(&aside, &key_path).unwrap();

    // rotate-key: a new key in the file, the secrets re-sealed under it.
    let out = hookline_cli_with(
        &["rotate-key", "--data-dir", dir.path().to_str().unwrap()],
        NO_KEY,
    )
    .await;
    assert!(out.status.success(), "rotate-key: {}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("re-sealed the secrets of 1 endpoint under key"),
        "{said}"
    );
    let new_key = std::fs::read_to_string(&key_path).unwrap();
    assert_eq!(new_key.trim().lines().count(), 1);
    assert_ne!(new_key, first_key);
    assert!(
        !said.contains(new_key.trim()),
        "the key was printed: {said}"
    );
    raw_files_hold_no_secret(dir.path());
    // The old key opens nothing now.
    let mut with_old = args.to_vec();
    with_old.extend([
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--encryption-key",
        first_key.trim(),
    ]);
    let err = refused(&with_old).await;
    assert!(err.contains("is not the one"), "{err}");

    // Started again with the new key (from the file): deliveries still verify.
    let server = Server::start_in(dir.path(), &args).await;
    let api = server.client();
    delivers_verified(&api, &recv, &app, 2).await;
    let (_, secret) = api
        .get(&format!("/api/v1/app/{app}/endpoint/{ep}/secret"))
        .await;
    assert_eq!(secret["key"], SECOND);
}

/// The stored form of every endpoint's settings, straight from PostgreSQL.
async fn stored_settings(url: &str) -> Vec<String> {
    let client = crate::support::admin_client(url).await;
    client
        .query("SELECT settings FROM endpoints", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_rows_hold_no_secret_and_rotate_key_takes_a_given_key() {
    let Some(db) = TestDb::create("postgres_rows_hold_no_secret_and_rotate_key").await else {
        return;
    };
    let (k1, k2) = (
        "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=",
        "MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI=",
    );
    let recv = Receiver::start().await;
    let serve = |key: &'static str| {
        let url = db.url.clone();
        async move {
            Server::start_with(&[
                "--database-url",
                &url,
                "--allow-target",
                "127.0.0.0/8",
                "--encryption-key",
                key,
            ])
            .await
        }
    };
    let mut server = serve(k1).await;
    let api = server.client();
    let (app, _) = sealed_endpoint(&api, &recv).await;
    delivers_verified(&api, &recv, &app, 1).await;
    let rows = stored_settings(&db.url).await;
    assert_eq!(rows.len(), 1);
    for needle in needles() {
        assert!(
            !rows[0].contains(needle),
            "the row holds {needle:?}: {}",
            rows[0]
        );
    }
    server.terminate().await;

    // Another node with another key is refused; so is one with none.
    let err = refused(&["--database-url", &db.url, "--encryption-key", k2]).await;
    assert!(err.contains("is not the one"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = refused(&[
        "--database-url",
        &db.url,
        "--data-dir",
        empty.path().to_str().unwrap(),
    ])
    .await;
    assert!(err.contains("no key was given"), "{err}");

    // With a given key, rotate-key wants the new one given too.
    let out = hookline_cli_with(
        &[
            "rotate-key",
            "--database-url",
            &db.url,
            "--encryption-key",
            k1,
        ],
        NO_KEY,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--new-key"));
    let out = hookline_cli_with(
        &[
            "rotate-key",
            "--database-url",
            &db.url,
            "--encryption-key",
            k1,
            "--new-key",
            k2,
        ],
        NO_KEY,
    )
    .await;
    assert!(out.status.success(), "rotate-key: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("re-sealed the secrets of 1 endpoint"));
    let resealed = stored_settings(&db.url).await;
    assert_ne!(resealed, rows, "nothing was re-sealed");
    for needle in needles() {
        assert!(!resealed[0].contains(needle), "{}", resealed[0]);
    }

    let err = refused(&["--database-url", &db.url, "--encryption-key", k1]).await;
    assert!(err.contains("is not the one"), "{err}");
    let server = serve(k2).await;
    delivers_verified(&server.client(), &recv, &app, 2).await;
    drop(server);
    db.drop_db().await;
}
