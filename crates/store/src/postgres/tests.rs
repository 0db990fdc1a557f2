//! Connection settings, and migrations against a real PostgreSQL (the database named by
//! `HOOKLINE_TEST_POSTGRES_URL`; each test makes a database of its own).

use super::*;

#[test]
fn urls_parse_with_libpq_sslmodes() {
    let s = PgSettings::parse("postgres://u:secret@db.internal:6543/hooks").unwrap();
    assert_eq!(s.tls, TlsMode::Prefer);
    assert_eq!(s.target(), "db.internal:6543/hooks as u");
    assert!(!format!("{s:?}").contains("secret"));
    assert_eq!(s.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
    for (mode, want) in [
        ("disable", TlsMode::Disable),
        ("require", TlsMode::Require),
        ("verify-ca", TlsMode::VerifyCa),
        ("verify-full", TlsMode::VerifyFull),
    ] {
        let s = PgSettings::parse(&format!(
            "postgresql://u@h/d?sslmode={mode}&connect_timeout=3"
        ))
        .unwrap();
        assert_eq!(s.tls, want);
        assert_eq!(
            s.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
    }
    let s = PgSettings::parse("postgres://u@h/d?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem")
        .unwrap();
    assert_eq!(s.root_cert, Some(PathBuf::from("/tmp/ca.pem")));
}

#[test]
fn bad_urls_say_what_is_wrong() {
    let err = PgSettings::parse("mysql://u@h/d").unwrap_err();
    assert!(err.contains("postgres://"), "{err}");
    let err = PgSettings::parse("postgres://u@h/d?sslmode=sometimes").unwrap_err();
    assert!(err.contains("sslmode=sometimes"), "{err}");
    let err = PgSettings::parse("postgres://h/d").unwrap_err();
    assert!(err.contains("user"), "{err}");
    let err = PgSettings::parse("postgres://u:hunter22@h/d?no_such_option=1").unwrap_err();
    assert!(!err.contains("hunter22"), "{err}");
    let s =
        PgSettings::parse("postgres://u@h/d?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
            .unwrap();
    let err = s.connector().err().expect("an unreadable root file");
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

/// A database of the test's own on the server named by `HOOKLINE_TEST_POSTGRES_URL`,
/// dropped at the end.
pub(crate) struct TestDb {
    admin: String,
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// `None` (after saying so) when no PostgreSQL is configured for tests.
    pub(crate) async fn create(test: &str) -> Option<TestDb> {
        Self::create_with(test, "").await
    }

    /// Like [`TestDb::create`], with `CREATE DATABASE` options (a collation, ...).
    pub(crate) async fn create_with(test: &str, options: &str) -> Option<TestDb> {
        let Ok(admin) = std::env::var("HOOKLINE_TEST_POSTGRES_URL") else {
            eprintln!("skipped {test}: HOOKLINE_TEST_POSTGRES_URL is not set");
            return None;
        };
        let name = format!(
            "hookline_t_{}_{}",
            std::process::id(),
            rand::random::<u32>()
        );
        let client = admin_client(&admin).await;
        client
            .batch_execute(&format!("CREATE DATABASE {name} {options}"))
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

    pub(crate) async fn drop_db(self) {
        let client = admin_client(&self.admin).await;
        let _ = client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

pub(crate) async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to HOOKLINE_TEST_POSTGRES_URL");
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn migrations_apply_once_even_when_processes_start_together() {
    let Some(db) = TestDb::create("migrations_apply_once").await else {
        return;
    };
    let settings = PgSettings::parse(&db.url).unwrap();
    // Eight "processes" (pools of their own) migrate a new database at the same time.
    let mut runs = Vec::new();
    for _ in 0..8 {
        let settings = settings.clone();
        runs.push(tokio::spawn(async move {
            let pool = connect(&settings, 2).await.expect("connect");
            migrate(&pool).await.expect("migrate")
        }));
    }
    let mut applied = Vec::new();
    for r in runs {
        applied.push(r.await.unwrap());
    }
    let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(
        applied.iter().filter(|a| **a == all).count(),
        1,
        "exactly one run applied them: {applied:?}"
    );
    assert!(applied.iter().filter(|a| a.is_empty()).count() == 7);

    let pool = connect(&settings, 2).await.unwrap();
    assert_eq!(schema_version(&pool).await.unwrap(), *all.last().unwrap());
    assert!(
        migrate(&pool).await.unwrap().is_empty(),
        "a second run is a no-op"
    );
    let client = pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT version FROM hookline_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, all);
    // The queue's partial indexes exist as designed.
    let idx: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE indexname IN ('endpoints_due', 'endpoints_due_failing', 'deliveries_due')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(idx, 3);
    drop(client);
    drop(pool);
    db.drop_db().await;
}

/// Rolling upgrades: a hookline runs on a schema one version newer than it knows when
/// that version only added (the newer hookline recorded it readable by this one), and is
/// refused, in one clear line, on anything it cannot read.
#[tokio::test]
async fn a_newer_schema_runs_only_where_it_only_added() {
    let Some(db) = TestDb::create("a_newer_schema_runs_only_where_it_only_added").await else {
        return;
    };
    let settings = PgSettings::parse(&db.url).unwrap();
    let pool = connect(&settings, 1).await.unwrap();
    migrate(&pool).await.unwrap();
    let latest = MIGRATIONS.last().unwrap().version;
    let record = |version: i32, readable_by: Option<i32>| {
        let pool = pool.clone();
        async move {
            pool.get()
                .await
                .unwrap()
                .execute(
                    "INSERT INTO hookline_migrations (version, name, readable_by) VALUES ($1, 'future', $2)",
                    &[&version, &readable_by],
                )
                .await
                .unwrap();
        }
    };
    // The next version, additive: this hookline runs on (and changes nothing).
    record(latest + 1, Some(latest)).await;
    assert_eq!(migrate(&pool).await.unwrap(), Vec::<i32>::new());
    // Two versions on: the second needs the first's hookline.
    record(latest + 2, Some(latest + 1)).await;
    let err = migrate(&pool).await.unwrap_err();
    assert_eq!(
        err,
        format!(
            "the database's schema is version {}, which a hookline knowing version {latest} cannot run on (it needs {} or newer); run a newer hookline",
            latest + 2,
            latest + 1
        )
    );
    // A version recorded by a hookline that did not say (or a breaking one) is refused.
    let pool2 = pool.clone();
    pool2
        .get()
        .await
        .unwrap()
        .execute(
            "DELETE FROM hookline_migrations WHERE version > $1",
            &[&latest],
        )
        .await
        .unwrap();
    record(latest + 1, None).await;
    assert!(migrate(&pool).await.unwrap_err().contains("cannot run on"));
    drop((pool, pool2));
    db.drop_db().await;
}

/// What a migration marked additive may do: create tables, (non-unique) indexes,
/// functions and triggers, add nullable columns. Nothing that an older hookline's
/// statements would trip over: no drop, rename, type change, new NOT NULL or unique
/// constraint on what exists, or rewrite of rows. Every statement is held to that list.
#[test]
fn additive_migrations_only_add() {
    let allowed = [
        "CREATE TABLE ",
        "CREATE INDEX ",
        "CREATE FUNCTION ",
        "CREATE TRIGGER ",
        "ALTER TABLE ",
    ];
    for m in MIGRATIONS.iter().filter(|m| m.additive) {
        // Comments and a function's body say nothing about the schema's shape.
        let code: String = m
            .sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
            .split("$$")
            .step_by(2)
            .collect::<Vec<_>>()
            .join(" ")
            .to_uppercase();
        for statement in code
            .split(';')
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        {
            if statement.is_empty() {
                continue;
            }
            let what = format!(
                "migration {} ({}) is marked additive but has: {statement}",
                m.version, m.name
            );
            // Filling a table the migration itself created touches nothing older.
            let fills_own = statement.strip_prefix("INSERT INTO ").is_some_and(|rest| {
                let table = rest.split([' ', '(']).next().unwrap_or_default();
                code.contains(&format!("CREATE TABLE {table} "))
            });
            assert!(
                fills_own || allowed.iter().any(|a| statement.starts_with(a)),
                "{what}"
            );
            if statement.starts_with("ALTER TABLE ") {
                let words: Vec<&str> = statement.split(' ').collect();
                assert!(
                    words.get(3) == Some(&"ADD") && words.get(4) == Some(&"COLUMN"),
                    "{what}"
                );
                assert!(
                    !statement.contains("NOT NULL") && !statement.contains("UNIQUE"),
                    "{what}"
                );
            }
        }
    }
    // Versions run 1, 2, 3, ... with no gap.
    for (i, m) in MIGRATIONS.iter().enumerate() {
        assert_eq!(m.version as usize, i + 1, "{}", m.name);
    }
}

#[tokio::test]
async fn unreachable_or_wrong_databases_are_one_clear_line() {
    let Some(db) = TestDb::create("unreachable_or_wrong_databases").await else {
        return;
    };
    // Nothing listens on port 1 of loopback.
    let s = PgSettings::parse("postgres://postgres@127.0.0.1:1/x?connect_timeout=2").unwrap();
    let err = connect(&s, 1).await.expect_err("refused");
    assert!(
        err.starts_with("cannot connect to PostgreSQL at 127.0.0.1:1/x as postgres:"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("refused"), "{err}");
    assert!(!err.contains('\n'), "{err}");
    // A database that does not exist on a server that does.
    let missing = db.url.replace(&db.name, "hookline_no_such_db");
    let err = connect(&PgSettings::parse(&missing).unwrap(), 1)
        .await
        .expect_err("no such database");
    assert!(err.contains("does not exist"), "{err}");
    db.drop_db().await;
}

#[tokio::test]
async fn tls_modes_against_the_test_server() {
    let Some(db) = TestDb::create("tls_modes").await else {
        return;
    };
    let with = |params: &str| {
        let sep = if db.url.contains('?') { '&' } else { '?' };
        PgSettings::parse(&format!("{}{sep}{params}", db.url)).unwrap()
    };
    let admin = admin_client(&db.admin).await;
    let ssl_on: String = admin.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    if ssl_on != "on" {
        // A server without TLS: `require` must say so, not fall back to plain text.
        let err = connect(&with("sslmode=require"), 1).await.err().unwrap();
        assert!(err.contains("TLS"), "{err}");
        db.drop_db().await;
        return;
    }
    let encrypted = |pool: Pool| async move {
        let c = pool.get().await.unwrap();
        let row = c
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, bool>(0)
    };
    // require: encrypted, certificate not checked (the test server's is self-signed).
    let pool = connect(&with("sslmode=require"), 1).await.expect("require");
    assert!(encrypted(pool).await, "sslmode=require is encrypted");
    let pool = connect(&with("sslmode=disable"), 1).await.expect("disable");
    assert!(!encrypted(pool).await);
    // verify-full against the Mozilla roots: a self-signed certificate is refused, clearly.
    let err = connect(&with("sslmode=verify-full"), 1)
        .await
        .err()
        .unwrap();
    assert!(err.starts_with("cannot connect to PostgreSQL at "), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // With the server's own certificate as the root, verify-ca passes.
    let cert_file: String = admin
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap()
        .get(0);
    if std::fs::metadata(&cert_file).is_ok() {
        let pool = connect(
            &with(&format!("sslmode=verify-ca&sslrootcert={cert_file}")),
            1,
        )
        .await
        .expect("verify-ca with the server's certificate as root");
        assert!(encrypted(pool).await);
    }
    db.drop_db().await;
}
