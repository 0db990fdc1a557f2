//! `hookline copy` at the store's level: which sources are refused, and (with
//! `HOOKLINE_TEST_POSTGRES_URL`) that a copy reads back on PostgreSQL as it was written on
//! SQLite, that work left pending is claimed there, and that a failed copy writes nothing.

use std::sync::Arc;

use chrono::{Duration, Utc};

use super::*;
use crate::conformance::{app, endpoint, message, report_for};
use crate::postgres::tests::TestDb;
use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::*;

fn refusal(path: &Path) -> String {
    match Source::open(path) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => {
            assert_eq!(e.lines().count(), 1, "{e}");
            e
        }
    }
}

/// A hookline database with one application in it, closed.
async fn hookline_db(dir: &Path) -> PathBuf {
    let path = dir.join("hookline.sqlite");
    let store = SqliteStore::open_sealed(&path, &crate::sealing::test_key()).unwrap();
    store.create_app(app(Some("one"))).await.unwrap();
    drop(store);
    path
}

#[tokio::test]
async fn sources_that_are_not_hookline_databases_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing.sqlite");
    assert!(refusal(&missing).contains("does not exist"));
    assert!(refusal(dir.path()).contains("is not a file"));

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a database, just some words\n").unwrap();
    assert!(refusal(&text).contains("is not an SQLite database"));

    // Another program's database, with a user_version of its own: never taken for an
    // old hookline one.
    let other = dir.path().join("other.sqlite");
    let conn = Connection::open(&other).unwrap();
    conn.execute_batch("CREATE TABLE notes (body TEXT); PRAGMA user_version = 3;")
        .unwrap();
    drop(conn);
    let e = refusal(&other);
    assert!(e.contains("not hookline's"), "{e}");
    assert!(
        !dir.path().join("other.lock").exists(),
        "no lock file left behind"
    );

    // hookline's, at another schema version than this binary's.
    let path = hookline_db(dir.path()).await;
    let known = crate::sqlite::schema_version();
    for (version, says) in [(known + 1, "newer"), (known - 1, "older")] {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!("PRAGMA user_version = {version}"))
            .unwrap();
        drop(conn);
        let e = refusal(&path);
        assert!(e.contains(says), "{e}");
        assert!(e.contains(&format!("version {version}")), "{e}");
    }
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(&format!("PRAGMA user_version = {known}"))
        .unwrap();
    drop(conn);
    assert!(Source::open(&path).is_ok());
}

#[tokio::test]
async fn a_source_a_server_is_serving_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = hookline_db(dir.path()).await;
    let serving = SqliteStore::open_sealed(&path, &crate::sealing::test_key()).unwrap();
    let e = refusal(&path);
    assert!(e.contains("is serving"), "{e}");
    drop(serving);
    let source = Source::open(&path).expect("a stopped server's database");
    // And while the copy holds it, no server can start on it.
    assert!(SqliteStore::open_sealed(&path, &crate::sealing::test_key()).is_err());
    drop(source);
    assert!(SqliteStore::open_sealed(&path, &crate::sealing::test_key()).is_ok());
}

#[test]
fn json_errors_say_where_not_what() {
    let at = Record::new("endpoint", "ep_1");
    let secret = r#"{"secrets": [{"key": 42, "note": "whsec_topsecret"}]}"#;
    let e = at
        .check_json::<EndpointSettings>(secret, "settings")
        .unwrap_err();
    assert!(e.starts_with("endpoint ep_1: settings "), "{e}");
    assert!(e.contains("line 1"), "{e}");
    assert!(!e.contains("topsecret") && !e.contains("42"), "{e}");
    let e = at
        .check_json::<EndpointSettings>(r#"{"description": "whsec_x"#, "settings")
        .unwrap_err();
    assert!(
        e.contains("not valid JSON") && !e.contains("whsec_x"),
        "{e}"
    );
}

/// Every row `read_all` sends, by kind.
async fn read(path: &Path, with_history: bool) -> Result<Vec<(Kind, Vec<Cell>)>, String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let source = Source::open(&path)?;
        let (send, mut recv) = tokio::sync::mpsc::channel(1024);
        source.read_all(with_history, crate::now(), &send)?;
        drop(send);
        let mut rows = Vec::new();
        while let Some(item) = recv.blocking_recv() {
            if let Item::Rows(kind, chunk) = item {
                rows.extend(chunk.into_iter().map(|r| (kind, r)));
            }
        }
        Ok(rows)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn text_postgresql_cannot_hold_is_named_or_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookline.sqlite");
    let store = SqliteStore::open_sealed(&path, &crate::sealing::test_key()).unwrap();
    let a = store.create_app(app(None)).await.unwrap();
    store.create_endpoint(endpoint(&a.id, 1)).await.unwrap();
    store.create_message(message(&a.id)).await.unwrap();
    let claimed = store
        .claim_deliveries(Utc::now(), Duration::seconds(60), 1, 1, &[])
        .await
        .unwrap();
    let d = &claimed[0];
    store
        .report_attempt(d.id, &d.lease_token, report_for(d, NextStep::Succeeded))
        .await
        .unwrap();
    drop(store);
    let conn = Connection::open(&path).unwrap();
    // A receiver may answer NUL bytes: the excerpt keeps them on SQLite.
    conn.execute_batch("UPDATE attempts SET response = 'a' || char(0) || 'b'")
        .unwrap();
    drop(conn);
    let rows = read(&path, true).await.unwrap();
    let attempt = rows.iter().find(|(k, _)| *k == Kind::Attempts).unwrap();
    assert_eq!(attempt.1[10], Cell::Text(Some("a\u{FFFD}b".into())));

    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("UPDATE applications SET name = 'x' || char(0)")
        .unwrap();
    drop(conn);
    let e = read(&path, false).await.unwrap_err();
    assert_eq!(
        e,
        format!(
            "application {}: name holds a NUL character, which PostgreSQL text cannot hold",
            a.id
        )
    );
}

#[test]
fn the_summary_counts_every_kind_and_says_what_was_left_out() {
    let report = CopyReport {
        target: "db:5432/hooks as u".into(),
        migrated: vec![1, 2],
        copied: vec![(Kind::Applications, 1), (Kind::Deliveries, 3)],
        leases_taken_back: 1,
        finished_deliveries_left: 2,
        attempts_left: 5,
        orphans: vec![(Kind::Messages, 0), (Kind::Attempts, 1)],
        sealed_under: Some("0badf00d".into()),
    };
    assert_eq!(
        report.to_string(),
        "copied 1 application, 3 deliveries to PostgreSQL at db:5432/hooks as u (counts checked); \
         due again at once: 1 delivery in flight when SQLite stopped; \
         left out (no --with-history): 5 attempts and 2 deliveries already finished; \
         skipped, their application or endpoint being gone: 1 attempt; \
         endpoint secrets stay sealed under the source's main key (0badf00d): start hookline \
         on PostgreSQL with it (--encryption-key, or its encryption.key file in the data dir)"
    );
}

// --- with PostgreSQL -----------------------------------------------------------------

fn all() -> ListQuery {
    ListQuery {
        limit: 250,
        ..Default::default()
    }
}

/// What the SQLite store answered, to compare with PostgreSQL's answers.
#[derive(Debug, PartialEq)]
struct Seen {
    apps: Vec<Application>,
    event_types: Vec<EventType>,
    endpoints: Vec<Endpoint>,
    messages: Vec<Message>,
    attempts: Vec<Attempt>,
    deliveries: Vec<DeliveryView>,
    /// Every endpoint's attempts of the last day and the next hour, by minute, and each
    /// endpoint's by hour (the charts).
    charts: Vec<Vec<AttemptBucket>>,
}

async fn seen(store: &dyn Store, app_id: &str) -> Seen {
    let messages = store
        .list_messages(
            app_id,
            &MessageQuery {
                list: all(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .data;
    let mut deliveries = Vec::new();
    for m in &messages {
        deliveries.extend(
            store
                .list_message_deliveries(app_id, &m.id, &all())
                .await
                .unwrap()
                .data,
        );
    }
    let endpoints = store.list_endpoints(app_id, &all()).await.unwrap().data;
    let until = crate::stats::floor(Utc::now(), 3600) + Duration::hours(1);
    let since = until - Duration::hours(25);
    let mut charts = vec![store
        .attempt_buckets(since, until, Duration::minutes(1))
        .await
        .unwrap()];
    for ep in &endpoints {
        charts.push(
            store
                .endpoint_attempt_buckets(app_id, &ep.id, since, until, Duration::hours(1))
                .await
                .unwrap(),
        );
    }
    Seen {
        charts,
        apps: store.list_apps(&all(), None).await.unwrap().data,
        event_types: store.list_event_types(&all(), true).await.unwrap().data,
        endpoints,
        messages,
        attempts: store
            .list_attempts(
                app_id,
                &AttemptQuery {
                    list: all(),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .data,
        deliveries,
    }
}

/// A SQLite installation stopped mid-work. Endpoint `a` is healthy: one delivery failed
/// for good, one succeeded, one is being attempted. Endpoint `b` is failing: one delivery
/// waits an hour for its retry, two are being attempted. A scheduled message waits an
/// hour for both. Plus a token and an idempotency key.
struct Installation {
    _dir: tempfile::TempDir,
    path: PathBuf,
    app_id: String,
    a: String,
    b: String,
    seen: Seen,
    token: [u8; 32],
}

async fn installation() -> Installation {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookline.sqlite");
    let store = SqliteStore::open_sealed(&path, &crate::sealing::test_key()).unwrap();
    let mut application = app(Some("acme"));
    application.metadata.insert("plan".into(), "gold".into());
    application.retry_policy = Some(serde_json::from_str(r#"{"kind": "none"}"#).unwrap());
    let application = store.create_app(application).await.unwrap();
    let now = crate::now();
    store
        .create_event_type(EventType {
            name: "user.created".into(),
            description: "a user".into(),
            archived: false,
            deprecated: true,
            schemas: Some(serde_json::json!({"1": {"type": "object"}})),
            group_name: Some("users".into()),
            feature_flags: Some(vec!["beta".into()]),
            validate_payloads: true,
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    let mut a = endpoint(&application.id, 8);
    a.uid = Some("ep-a".into());
    a.settings.secrets = vec![SecretEntry {
        key: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        expires_at: None,
    }];
    a.settings.headers.insert("x-team".into(), "core".into());
    a.settings.channels = Some(vec!["c1".into()]);
    let a = store.create_endpoint(a).await.unwrap();
    let b = store
        .create_endpoint(endpoint(&application.id, 8))
        .await
        .unwrap();
    for i in 0..3 {
        let mut m = message(&application.id);
        m.event_id = Some(format!("evt-{i}"));
        m.payload = format!(r#"{{"n":  {i}, "exact": "bytes"}}"#).into();
        m.channels = Some(vec!["c1".into()]);
        store.create_message(m).await.unwrap();
    }
    let claimed = store
        .claim_deliveries(Utc::now(), Duration::seconds(60), 50, 50, &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 6);
    let to = |ep: &str, n: usize| {
        claimed
            .iter()
            .filter(|d| d.endpoint.id == ep)
            .nth(n)
            .cloned()
            .unwrap()
    };
    let (a0, a1, b0) = (to(&a.id, 0), to(&a.id, 1), to(&b.id, 0));
    for (d, next) in [
        (a0, NextStep::Failed),
        (a1, NextStep::Succeeded),
        (b0, NextStep::RetryAt(Utc::now() + Duration::hours(1))),
    ] {
        let applied = store
            .report_attempt(d.id, &d.lease_token, report_for(&d, next))
            .await
            .unwrap();
        assert_eq!(applied.applied, Applied::Yes);
    }
    let mut later = message(&application.id);
    later.deliver_at = Some(crate::now() + Duration::hours(1));
    later.channels = Some(vec!["c1".into()]);
    store.create_message(later).await.unwrap();

    let token = [7u8; 32];
    store
        .insert_token(ApiToken {
            hash: token,
            app_id: Some(application.id.clone()),
            read_only: true,
            expires_at: None,
            created_at: now,
            ..Default::default()
        })
        .await
        .unwrap();
    store
        .idempotency_begin("scope", "key-1", Utc::now(), Duration::minutes(1))
        .await
        .unwrap();
    store
        .idempotency_finish(
            "scope",
            "key-1",
            StoredResponse {
                status: 202,
                body: b"{\"id\":\"msg_x\"}".to_vec(),
            },
        )
        .await
        .unwrap();
    let seen = seen(&store, &application.id).await;
    assert_eq!(seen.attempts.len(), 3);
    drop(store);
    Installation {
        _dir: dir,
        path,
        app_id: application.id,
        a: a.id,
        b: b.id,
        seen,
        token,
    }
}

async fn copy(
    from: &Path,
    db: &TestDb,
    options: CopyOptions,
) -> Result<(CopyReport, Vec<Progress>), String> {
    let settings = PgSettings::parse(&db.url).unwrap();
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = events.clone();
    let report = sqlite_to_postgres(from, &settings, options, &move |p| {
        log.lock().unwrap().push(p)
    })
    .await?;
    let events = events.lock().unwrap().clone();
    Ok((report, events))
}

#[tokio::test]
async fn a_copy_reads_back_as_written_and_its_pending_work_is_claimed() {
    let Some(db) = TestDb::create("a_copy_reads_back_as_written").await else {
        return;
    };
    let src = installation().await;
    let (report, events) = copy(&src.path, &db, CopyOptions::default()).await.unwrap();
    let expect = [
        (Kind::Applications, 1),
        (Kind::EventTypes, 1),
        (Kind::Endpoints, 2),
        (Kind::ApiTokens, 1),
        (Kind::IdempotencyKeys, 1),
        (Kind::Messages, 4),
        (Kind::Deliveries, 6),
        (Kind::AttemptStats, 4),
    ];
    assert_eq!(report.copied, expect);
    assert_eq!(report.leases_taken_back, 3);
    assert_eq!(
        (report.finished_deliveries_left, report.attempts_left),
        (2, 3)
    );
    assert_eq!(events.first(), Some(&Progress::Counted { total: 20 }));
    let copied: u64 = events
        .iter()
        .filter_map(|p| match p {
            Progress::Copied(_, n) => Some(*n),
            _ => None,
        })
        .sum();
    assert_eq!(copied, 20);
    assert_eq!(events.last(), Some(&Progress::Checking));

    let pg = PgStore::connect(&db.url, 2, &crate::sealing::test_key())
        .await
        .unwrap();
    let got = seen(&pg, &src.app_id).await;
    assert_eq!(got.apps, src.seen.apps);
    assert_eq!(got.event_types, src.seen.event_types);
    assert_eq!(got.endpoints, src.seen.endpoints);
    assert_eq!(got.messages, src.seen.messages);
    assert!(got.attempts.is_empty(), "no attempts without the history");
    // Their counts, though, are there: the charts read the same.
    assert!(src.seen.charts.iter().all(|c| !c.is_empty()));
    assert_eq!(got.charts, src.seen.charts);
    // The unfinished deliveries, as they were; the ones in flight now pending, due now.
    let unfinished: Vec<&DeliveryView> = src
        .seen
        .deliveries
        .iter()
        .filter(|d| d.status == DeliveryStatus::Pending)
        .collect();
    assert_eq!(unfinished.len(), 3);
    for d in unfinished {
        assert!(got.deliveries.contains(d), "{d:?} in {:?}", got.deliveries);
    }
    let was_sending: Vec<&DeliveryView> = got
        .deliveries
        .iter()
        .filter(|d| {
            src.seen.deliveries.iter().any(|s| {
                s.msg_id == d.msg_id
                    && s.endpoint_id == d.endpoint_id
                    && s.status == DeliveryStatus::Sending
            })
        })
        .collect();
    assert_eq!(was_sending.len(), 3);
    for d in &was_sending {
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(d.attempts, 0);
        assert!(d.next_attempt.unwrap() <= Utc::now());
    }
    assert_eq!(got.deliveries.len(), 6);
    assert_eq!(
        pg.find_token(&src.token, Utc::now())
            .await
            .unwrap()
            .map(|t| t.read_only),
        Some(true)
    );
    assert_eq!(
        pg.idempotency_begin("scope", "key-1", Utc::now(), Duration::minutes(1))
            .await
            .unwrap(),
        IdempotencyState::Done(StoredResponse {
            status: 202,
            body: b"{\"id\":\"msg_x\"}".to_vec()
        })
    );

    // The claim finds what is due: the healthy endpoint's delivery, and one of the failing
    // endpoint's (one at a time while it fails); the retry and the scheduled message wait.
    let due = pg.next_due(&[], true).await.unwrap().expect("work is due");
    assert!(due <= Utc::now());
    let claimed = pg
        .claim_deliveries(Utc::now(), Duration::seconds(30), 50, 50, &[])
        .await
        .unwrap();
    let mut by_endpoint: Vec<&str> = claimed.iter().map(|d| d.endpoint.id.as_str()).collect();
    by_endpoint.sort();
    let mut want = vec![src.a.as_str(), src.b.as_str()];
    want.sort();
    assert_eq!(by_endpoint, want);
    let b = claimed.iter().find(|d| d.endpoint.id == src.b).unwrap();
    assert!(b.endpoint.is_failing(), "failing_since was kept");
    db.drop_db().await;
}

#[tokio::test]
async fn with_history_the_attempts_and_finished_deliveries_come_too() {
    let Some(db) = TestDb::create("with_history_the_attempts_come_too").await else {
        return;
    };
    let src = installation().await;
    let (report, _) = copy(
        &src.path,
        &db,
        CopyOptions {
            with_history: true,
            allow_non_empty: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(report.count(Kind::Deliveries), 8);
    assert_eq!(report.count(Kind::Attempts), 3);
    assert_eq!(
        (report.finished_deliveries_left, report.attempts_left),
        (0, 0)
    );
    let pg = PgStore::connect(&db.url, 2, &crate::sealing::test_key())
        .await
        .unwrap();
    let got = seen(&pg, &src.app_id).await;
    assert_eq!(got.attempts, src.seen.attempts);
    for d in src
        .seen
        .deliveries
        .iter()
        .filter(|d| d.status != DeliveryStatus::Sending)
    {
        assert!(got.deliveries.contains(d), "{d:?}");
    }
    db.drop_db().await;
}

async fn app_count(db: &TestDb) -> i64 {
    crate::postgres::tests::admin_client(&db.url)
        .await
        .query_one("SELECT count(*) FROM applications", &[])
        .await
        .unwrap()
        .get(0)
}

/// A second installation: one application of its own, and optionally the event type
/// the first one has too.
async fn other_installation(dir: &Path, shared_event_type: bool) -> PathBuf {
    let path = dir.join("hookline.sqlite");
    let store = SqliteStore::open_sealed(&path, &crate::sealing::test_key()).unwrap();
    store.create_app(app(Some("other"))).await.unwrap();
    if shared_event_type {
        let now = crate::now();
        store
            .create_event_type(EventType {
                name: "user.created".into(),
                description: String::new(),
                archived: false,
                deprecated: false,
                schemas: None,
                group_name: None,
                feature_flags: None,
                validate_payloads: false,
                created_at: now,
                updated_at: now,
            })
            .await
            .unwrap();
    }
    drop(store);
    path
}

#[tokio::test]
async fn a_non_empty_target_is_refused_and_a_failed_copy_writes_nothing() {
    let Some(db) = TestDb::create("a_non_empty_target_is_refused").await else {
        return;
    };
    let src = installation().await;
    copy(&src.path, &db, CopyOptions::default()).await.unwrap();
    assert_eq!(app_count(&db).await, 1);

    let e = copy(&src.path, &db, CopyOptions::default())
        .await
        .unwrap_err();
    assert!(
        e.contains("not empty") && e.contains("--allow-non-empty"),
        "{e}"
    );

    // Its application is new, its event type is not: the applications are written
    // first, then the event types collide, and the whole copy is rolled back.
    let dir = tempfile::tempdir().unwrap();
    let clash = other_installation(dir.path(), true).await;
    let allow = CopyOptions {
        with_history: false,
        allow_non_empty: true,
    };
    let e = copy(&clash, &db, allow).await.unwrap_err();
    assert!(
        e.contains("event types") && e.contains("user.created"),
        "{e}"
    );
    assert!(e.contains("nothing was written"), "{e}");
    assert_eq!(app_count(&db).await, 1, "the failed copy left nothing");

    let dir = tempfile::tempdir().unwrap();
    let fine = other_installation(dir.path(), false).await;
    let (report, _) = copy(&fine, &db, allow).await.unwrap();
    assert_eq!(report.count(Kind::Applications), 1);
    assert_eq!(app_count(&db).await, 2);
    db.drop_db().await;
}
