//! hookline against PostgreSQL (the server named by `HOOKLINE_TEST_POSTGRES_URL`; each
//! test makes a database of its own). Skipped, saying so, without that variable.

use std::process::Output;

/// A database of the test's own, dropped at the end.
pub struct TestDb {
    admin: String,
    name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create(test: &str) -> Option<TestDb> {
        let Ok(admin) = std::env::var("HOOKLINE_TEST_POSTGRES_URL") else {
            eprintln!("skipped {test}: HOOKLINE_TEST_POSTGRES_URL is not set");
            return None;
        };
        let name = format!("hookline_e2e_{}_{}", std::process::id(), rand_suffix());
        admin_client(&admin)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
        let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
        let url = if query.is_empty() {
            format!("{server}/{name}")
        } else {
            format!("{server}/{name}?{query}")
        };
        Some(TestDb { admin, name, url })
    }

    pub async fn drop_db(self) {
        let _ = admin_client(&self.admin)
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .elapsed()
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish() % 1_000_000_000
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to HOOKLINE_TEST_POSTGRES_URL");
    tokio::spawn(conn);
    client
}

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
