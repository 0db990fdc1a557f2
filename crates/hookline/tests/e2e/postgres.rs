//! hookline against PostgreSQL (the server named by `HOOKLINE_TEST_POSTGRES_URL`; each
//! test makes a database of its own). Skipped, saying so, without that variable.

use std::process::Output;
use std::time::Duration;

use serde_json::json;

use crate::receiver::Receiver;
use crate::support::{admin_client, Server, TestDb};

async fn hookline(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_hookline"))
        .args(args)
        .env_remove("HOOKLINE_DATABASE_URL")
        .env_remove("HOOKLINE_CONFIG")
        .env_remove("HOOKLINE_DATA_DIR")
        .output()
        .await
        .expect("run hookline")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn migrate_prepares_a_database_once() {
    let Some(db) = TestDb::create("migrate_prepares_a_database_once").await else {
        return;
    };
    let out = hookline(&["migrate", "--database-url", &db.url]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("applied migration"),
        "{}",
        text(&out.stdout)
    );
    let out = hookline(&["migrate", "--database-url", &db.url]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("up to date"),
        "{}",
        text(&out.stdout)
    );
    db.drop_db().await;
}

#[tokio::test]
async fn migrate_on_sqlite_needs_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let out = hookline(&["migrate", "--data-dir", dir.path().to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.path().join("hookline.sqlite").exists());
}

/// A database that cannot be used is one line on stderr and a non-zero exit, never a
/// panic or a backtrace, and never the password.
#[tokio::test]
async fn bad_database_urls_fail_in_one_clear_line() {
    let cases: &[(&str, &str)] = &[
        (
            "mysql://u@127.0.0.1/x",
            "must start with sqlite:// or postgres://",
        ),
        (
            "postgres://postgres:pw-hunter22@127.0.0.1:1/x?connect_timeout=2",
            "cannot connect to PostgreSQL at 127.0.0.1:1/x as postgres",
        ),
        (
            "postgres://postgres@127.0.0.1/x?sslmode=sometimes",
            "sslmode=sometimes",
        ),
    ];
    for (url, want) in cases {
        let out = hookline(&["migrate", "--database-url", url]).await;
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{url} succeeded");
        assert!(err.contains(want), "{url}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{url}: {err}");
        assert!(
            !err.contains("hunter22") && !err.contains("panicked"),
            "{err}"
        );
    }
    if let Some(db) = TestDb::create("bad_database_urls (no such database)").await {
        let missing = db.url.replace(&db.name, "hookline_no_such_db");
        let out = hookline(&["migrate", "--database-url", &missing]).await;
        let err = text(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("does not exist"), "{err}");
        // The test server's certificate is self-signed: verify-full refuses it.
        let sep = if db.url.contains('?') { '&' } else { '?' };
        let out = hookline(&[
            "migrate",
            "--database-url",
            &format!("{}{sep}sslmode=verify-full", db.url),
        ])
        .await;
        let err = text(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("cannot connect to PostgreSQL at"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        db.drop_db().await;
    }
}

/// The database goes away while hookline serves (connections refused, the open ones cut):
/// the API answers 503 `unavailable` and health says so, nothing acknowledged is lost,
/// and when the database is back hookline carries on by itself, delivering too.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_answers_503_and_recovers_by_itself() {
    let Some(db) = TestDb::create("a_database_outage_answers_503_and_recovers_by_itself").await
    else {
        return;
    };
    let recv = Receiver::start().await;
    let server =
        Server::start_with(&["--database-url", &db.url, "--allow-target", "127.0.0.0/8"]).await;
    let api = server.client();
    let app = api.create("/api/v1/app", json!({"name": "a"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.create(
        &format!("/api/v1/app/{app}/endpoint"),
        json!({"url": recv.url("/hook")}),
    )
    .await;
    let msg = format!("/api/v1/app/{app}/msg");
    let (status, _) = api
        .post(
            &msg,
            json!({"eventType": "t", "eventId": "before", "payload": {}}),
        )
        .await;
    assert_eq!(status, 202);
    assert!(
        recv.wait_for(Duration::from_secs(10), |r| r.count() >= 1)
            .await
    );

    // The outage: no new connections to this database, the open ones terminated.
    let admin = admin_client(&db.admin).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {0} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{0}' AND pid <> pg_backend_pid();",
            db.name
        ))
        .await
        .unwrap();
    let (status, body) = api
        .post(
            &msg,
            json!({"eventType": "t", "eventId": "during", "payload": {}}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], json!("unavailable"), "{body}");
    let (status, health) = api.get("/api/v1/health").await;
    assert_eq!(status, 503, "{health}");

    // Back: hookline reconnects by itself.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            db.name
        ))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = api
            .post(
                &msg,
                json!({"eventType": "t", "eventId": "after", "payload": {}}),
            )
            .await;
        if status == 202 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {status} after the database came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(api.get("/api/v1/health").await.0, 200);
    // Nothing acknowledged is lost; the create refused during the outage can be sent
    // again; deliveries resume.
    assert_eq!(api.get(&format!("{msg}/before")).await.0, 200);
    let (status, _) = api
        .post(
            &msg,
            json!({"eventType": "t", "eventId": "during", "payload": {}}),
        )
        .await;
    assert_eq!(status, 202);
    assert!(
        recv.wait_for(Duration::from_secs(15), |r| r.count() >= 3)
            .await,
        "deliveries resume after the outage: {} received",
        recv.count()
    );
    drop(server);
    db.drop_db().await;
}
