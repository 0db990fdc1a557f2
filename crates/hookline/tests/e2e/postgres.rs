//! hookline against PostgreSQL (the server named by `HOOKLINE_TEST_POSTGRES_URL`; each
//! test makes a database of its own). Skipped, saying so, without that variable.

use std::process::Output;

use crate::support::TestDb;

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
