//! The SQLite backend's own tests: group commit, WAL, caches, migrations, and the
//! queue's behaviour on SQLite.

use super::*;

pub(super) use crate::conformance::{app, endpoint, message, report_for};

/// Under continuous writes with readers alongside, the WAL starts over instead of
/// growing with everything ever written (it reached 1.4 GB in a 12 s benchmark).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_stays_bounded_under_continuous_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let wal = dir.path().join("db.sqlite-wal");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = vec![];
    for _ in 0..4 {
        let (s, done) = (store.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let q = ListQuery {
                limit: 50,
                ..Default::default()
            };
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                s.list_apps(&q, None).await.unwrap();
            }
        }));
    }
    let mut writers = vec![];
    for w in 0..32 {
        let s = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..400 {
                let mut a = app(Some(&format!("w{w}-{i}")));
                a.name = "x".repeat(600);
                s.create_app(a).await.unwrap();
            }
        }));
    }
    let mut largest = 0;
    while writers.iter().any(|w| !w.is_finished()) {
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in writers.into_iter().chain(readers) {
        t.await.unwrap();
    }
    let bound = 3 * WAL_RESTART_FRAMES as u64 * (4096 + 24);
    assert!(
        largest < bound,
        "the WAL grew to {largest} bytes (bound {bound})"
    );
}

/// A durable write is acknowledged only once the WAL fsync that follows its commit has
/// returned, and an fsync error reaches the caller.
#[tokio::test]
async fn durable_writes_wait_for_the_wal_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let (gate_tx, gate_rx) = mpsc::channel::<std::io::Result<()>>();
    let gate_rx = Mutex::new(gate_rx);
    let store = Arc::new(
        SqliteStore::open_with(
            &dir.path().join("db.sqlite"),
            &crate::sealing::KeySource::Given(crate::sealing::MainKey::generate()),
            move |wal| {
                Box::new(move || {
                    let outcome = gate_rx.lock().unwrap().recv().unwrap();
                    wal.sync_data().and(outcome)
                })
            },
            true,
        )
        .unwrap(),
    );
    let s = store.clone();
    let write = tokio::spawn(async move { s.create_app(app(Some("a"))).await });
    // Committed (readers see it) but not acknowledged while the fsync is held. (A
    // listing reads the database; `get_app` may answer from the lookup cache, which
    // a write clears only once it is acknowledged.)
    let all = ListQuery {
        limit: 10,
        ..Default::default()
    };
    let mut seen = false;
    for _ in 0..200 {
        if !store.list_apps(&all, None).await.unwrap().data.is_empty() {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(seen, "the write was never committed");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        !write.is_finished(),
        "acknowledged before the WAL was synced"
    );
    // Meanwhile later writes run in the next, still open transaction: committed once
    // the fsync returns, in the next fsync.
    let s = store.clone();
    let second = tokio::spawn(async move { s.create_app(app(Some("c"))).await });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!second.is_finished());
    gate_tx.send(Ok(())).unwrap();
    write.await.unwrap().unwrap();
    gate_tx.send(Ok(())).unwrap();
    second.await.unwrap().unwrap();

    // Claiming an idempotency key does not wait for the held fsync (the request's own
    // durable writes come after it in the WAL); a durable write does.
    let claim = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        store.idempotency_begin("scope", "key", Utc::now(), chrono::Duration::seconds(60)),
    )
    .await
    .expect("claiming an idempotency key waited for the fsync");
    assert!(matches!(claim.unwrap(), IdempotencyState::Claimed));

    // A failed fsync fails the writes it covered.
    let s = store.clone();
    let write = tokio::spawn(async move { s.create_app(app(Some("b"))).await });
    gate_tx
        .send(Err(std::io::Error::other("disk on fire")))
        .unwrap();
    let err = write.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("fsync"), "{err}");
}

/// Cached lookups (misses included) follow every write at once.
#[tokio::test]
async fn cached_lookups_follow_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
    assert!(store.get_app("shop").await.unwrap().is_none());
    let a = store.create_app(app(Some("shop"))).await.unwrap();
    assert_eq!(store.get_app("shop").await.unwrap().unwrap().id, a.id);
    assert_eq!(store.get_app(&a.id).await.unwrap().unwrap().name, "n");
    store
        .update_app(
            &a.id,
            Box::new(|a| {
                a.name = "renamed".into();
                a.uid = Some("store".into());
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(store.get_app(&a.id).await.unwrap().unwrap().name, "renamed");
    assert!(store.get_app("shop").await.unwrap().is_none());
    assert_eq!(store.get_app("store").await.unwrap().unwrap().id, a.id);
    store.delete_app(&a.id).await.unwrap();
    assert!(store.get_app(&a.id).await.unwrap().is_none());
    assert!(store.get_app("store").await.unwrap().is_none());

    assert!(store
        .get_event_type("order.created")
        .await
        .unwrap()
        .is_none());
    let now = Utc::now();
    let et = EventType {
        name: "order.created".into(),
        description: "d".into(),
        archived: false,
        deprecated: false,
        schemas: None,
        group_name: None,
        feature_flags: None,
        validate_payloads: false,
        created_at: now,
        updated_at: now,
    };
    store.create_event_type(et).await.unwrap();
    let got = store
        .get_event_type("order.created")
        .await
        .unwrap()
        .unwrap();
    assert!(!got.validate_payloads);
    store
        .update_event_type(
            "order.created",
            Box::new(|e| {
                e.validate_payloads = true;
                Ok(())
            }),
        )
        .await
        .unwrap();
    let got = store
        .get_event_type("order.created")
        .await
        .unwrap()
        .unwrap();
    assert!(got.validate_payloads);
    store.expunge_event_type("order.created").await.unwrap();
    assert!(store
        .get_event_type("order.created")
        .await
        .unwrap()
        .is_none());
}

/// The lookup cache keeps within its byte budget and skips records too big to keep.
#[test]
fn lookup_cache_is_bounded_by_size() {
    let cache: LookupCache<String> = LookupCache::new(16_000, String::len);
    let generation = cache.get("k").unwrap_err();
    cache.put(generation, "big".into(), Some("x".repeat(2_000)));
    assert!(
        cache.get("big").is_err(),
        "an entry over 1/16 of the budget is not kept"
    );
    for i in 0..1_000 {
        cache.put(generation, format!("k{i}"), Some("x".repeat(500)));
        assert!(cache.inner.lock().unwrap().bytes <= 16_000);
    }
    assert_eq!(cache.get("k999"), Ok(Some("x".repeat(500))));
    cache.invalidate();
    assert!(cache.get("k999").is_err());
    // A lookup that started before the invalidation is not kept.
    cache.put(generation, "late".into(), None);
    assert!(cache.get("late").is_err());
}

#[tokio::test]
async fn second_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let _first = SqliteStore::open(&path).unwrap();
    let err = SqliteStore::open(&path)
        .err()
        .expect("second open must fail");
    assert!(
        err.to_string().contains("another hookline process"),
        "{err}"
    );
}

/// Migration 5 rebuilds `messages` under a database that has data: messages, their
/// deliveries and attempts survive, eventId stays unique per app (and only where
/// given), and foreign keys are back on (deleting the app cascades).
#[tokio::test]
async fn migrations_5_and_6_keep_messages_and_their_references() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
            .unwrap();
        for (i, sql) in MIGRATIONS[..4].iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .unwrap();
        }
        conn.execute_batch(
            r#"
            INSERT INTO applications (id, uid, name, metadata, created_at, updated_at)
                VALUES ('app_1', 'shop', 'Shop', '{}', 1, 1);
            INSERT INTO endpoints (id, app_id, url, disabled, settings, created_at, updated_at)
                VALUES ('ep_1', 'app_1', 'http://127.0.0.1:1/', 0, '{}', 1, 1);
            INSERT INTO messages (id, app_id, event_id, event_type, payload, created_at)
                VALUES ('msg_1', 'app_1', 'e1', 't', '{"a":1}', 1),
                       ('msg_2', 'app_1', NULL, 't', '{"a":2}', 2),
                       ('msg_3', 'app_1', NULL, 't', '{"a":3}', 3);
            INSERT INTO deliveries (app_id, msg_id, endpoint_id, status, attempts, trigger,
                                    scheduled_at, due_at, created_at, updated_at)
                VALUES ('app_1', 'msg_1', 'ep_1', 'succeeded', 1, 0, 1, NULL, 1, 1);
            INSERT INTO attempts (id, app_id, msg_id, endpoint_id, url, attempted_at,
                                  status_code, duration_ms, succeeded, response, trigger)
                VALUES ('atmpt_1', 'app_1', 'msg_1', 'ep_1', 'http://127.0.0.1:1/', 1,
                        200, 3, 1, 'ok', 0);
            "#,
        )
        .unwrap();
    }
    // Migration 6 keys the rows there are; the ones created below stay recent.
    let store = SqliteStore::open_manual_keys(&path).unwrap();
    let by_event = store.get_message("app_1", "e1").await.unwrap().unwrap();
    assert_eq!(
        (by_event.id.as_str(), &*by_event.payload),
        ("msg_1", r#"{"a":1}"#)
    );
    assert_eq!(
        store
            .get_message("app_1", "msg_3")
            .await
            .unwrap()
            .unwrap()
            .created_at,
        from_ms(3)
    );
    let mut dup = message("app_1");
    dup.event_id = Some("e1".into());
    assert!(matches!(
        store.create_message(dup).await,
        Err(StoreError::Conflict(_))
    ));
    store.create_message(message("app_1")).await.unwrap();
    store.create_message(message("app_1")).await.unwrap();
    let q = AttemptQuery {
        list: ListQuery {
            limit: 50,
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(
        store.list_attempts("app_1", &q).await.unwrap().data.len(),
        1
    );
    let by_endpoint = AttemptQuery {
        endpoint_id: Some("ep_1".into()),
        ..q.clone()
    };
    let attempts = store.list_attempts("app_1", &by_endpoint).await.unwrap();
    assert_eq!(attempts.data[0].id, "atmpt_1");
    let messages = store
        .list_messages(
            "app_1",
            &MessageQuery {
                list: q.list.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ids: Vec<&str> = messages.data.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert!(["msg_1", "msg_2", "msg_3"].iter().all(|m| ids.contains(m)));
    let deliveries = store
        .list_endpoint_deliveries("app_1", "ep_1", &q.list, None)
        .await
        .unwrap();
    assert_eq!(deliveries.data.len(), 3, "one migrated, two new");

    store.delete_app("app_1").await.unwrap();
    drop(store);
    let conn = Connection::open(&path).unwrap();
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(
        (count("messages"), count("deliveries"), count("attempts")),
        (0, 0, 0)
    );
    assert_eq!(
        (
            count("message_keys"),
            count("delivery_keys"),
            count("attempt_keys")
        ),
        (0, 0, 0)
    );
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version as usize, MIGRATIONS.len());
}

#[tokio::test]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let id = {
        let store = SqliteStore::open(&path).unwrap();
        store.create_app(app(Some("keep"))).await.unwrap().id
    };
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.get_app("keep").await.unwrap().unwrap().id, id);
}

/// `backup` copies the database while the store holds it and keeps writing: the copy
/// opens as a store of its own with every message acknowledged before the backup began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_copies_a_database_in_use_as_of_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let a = store.create_app(app(None)).await.unwrap();
    let mut acked = Vec::new();
    for _ in 0..200 {
        acked.push(store.create_message(message(&a.id)).await.unwrap().id);
    }
    // Writes go on during the backup.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop, app_id) = (store.clone(), stop.clone(), a.id.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store.create_message(message(&app_id)).await.unwrap();
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let to = dir.path().join("copy.sqlite");
    let (p, t) = (path.clone(), to.clone());
    let report = tokio::task::spawn_blocking(move || backup(&p, &t))
        .await
        .unwrap()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        writer.await.unwrap() > 0,
        "no write ran alongside the backup"
    );
    assert!(report.pages > 0 && report.bytes > 0, "{report:?}");
    // Refuses to overwrite, and to read what is not a hookline database.
    let err = backup(&path, &to).unwrap_err();
    assert!(err.contains("already exists"), "{err}");
    let err = backup(&dir.path().join("missing"), &dir.path().join("x")).unwrap_err();
    assert!(err.contains("no SQLite database"), "{err}");

    let copy = SqliteStore::open(&to).unwrap();
    for id in &acked {
        assert!(copy.get_message(&a.id, id).await.unwrap().is_some(), "{id}");
    }
    // The original is untouched and still in use.
    store.create_message(message(&a.id)).await.unwrap();
}

/// A new database gets incremental auto-vacuum (set before its first table), so the
/// retention pass can give freed pages back.
#[test]
fn new_databases_vacuum_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    drop(SqliteStore::open(&path).unwrap());
    let c = Connection::open(&path).unwrap();
    let mode: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, 2);
}

/// An endpoint with two secrets and a custom header, as a rotation leaves one.
pub(crate) fn endpoint_with_secrets(app_id: &str) -> Endpoint {
    let mut ep = endpoint(app_id, 4);
    ep.settings.secrets = vec![
        SecretEntry {
            key: "whsec_bmV3LXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm".into(),
            expires_at: None,
        },
        SecretEntry {
            key: "whsec_b2xkLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm".into(),
            expires_at: Some(Utc::now() + chrono::Duration::hours(1)),
        },
    ];
    ep.settings
        .headers
        .insert("authorization".into(), "Bearer plain-header-value".into());
    ep
}

/// Endpoints stored in the clear (by a hookline from before sealing) are sealed when
/// the store opens; a wrong key is refused and changes nothing.
#[tokio::test]
async fn settings_in_the_clear_are_sealed_at_open_and_a_wrong_key_changes_nothing() {
    use crate::sealing::{is_plain, KeySource, MainKey};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let key = KeySource::Given(MainKey::generate());
    let ep = {
        let store = SqliteStore::open_sealed(&path, &key).unwrap();
        let a = store.create_app(app(Some("a"))).await.unwrap();
        store
            .create_endpoint(endpoint_with_secrets(&a.id))
            .await
            .unwrap()
    };
    let stored = || {
        Connection::open(&path)
            .unwrap()
            .query_row("SELECT settings FROM endpoints", [], |r| {
                r.get::<_, String>(0)
            })
            .unwrap()
    };
    assert!(!is_plain(&stored()) && !stored().contains("plain-header-value"));
    // As an older hookline wrote it.
    Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE endpoints SET settings = ?1",
            [serde_json::to_string(&ep.settings).unwrap()],
        )
        .unwrap();
    assert!(is_plain(&stored()));
    let wrong = SqliteStore::open_sealed(&path, &KeySource::Given(MainKey::generate()));
    assert!(
        matches!(wrong, Err(StoreError::Key(_))),
        "a wrong key opened the store"
    );
    assert!(is_plain(&stored()), "a refused key changed the row");

    let store = SqliteStore::open_sealed(&path, &key).unwrap();
    let sealed = stored();
    assert!(!is_plain(&sealed), "{sealed}");
    for clear in ["bmV3LXNlY3JldC0w", "b2xkLXNlY3JldC0w", "plain-header-value"] {
        assert!(!sealed.contains(clear), "{clear} in {sealed}");
    }
    let back = store
        .get_endpoint(&ep.app_id, &ep.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.settings, ep.settings);
    drop(store);

    // rotate-key: everything re-sealed under the new key, which alone opens it now.
    let new = MainKey::generate();
    assert_eq!(rotate_key(&path, &key, &new).unwrap(), 1);
    assert_ne!(stored(), sealed);
    assert!(matches!(
        SqliteStore::open_sealed(&path, &key),
        Err(StoreError::Key(_))
    ));
    let store = SqliteStore::open_sealed(&path, &KeySource::Given(new)).unwrap();
    let back = store
        .get_endpoint(&ep.app_id, &ep.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.settings, ep.settings);
}

/// Migration 11 counts the attempts already written as the writer counts new ones: the
/// table it fills from the attempts is the table the writer kept, row for row (the same
/// hours, minutes and duration buckets, durations spanning every bucket).
#[tokio::test]
async fn attempt_stats_filled_by_the_migration_match_those_kept_by_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
    let rec = crate::conformance::attach(&store);
    let a = store.create_app(app(None)).await.unwrap();
    store.create_endpoint(endpoint(&a.id, 100)).await.unwrap();
    let t0 = Utc::now() - chrono::Duration::hours(30);
    let attempts: Vec<_> = (0..90u64)
        .map(|i| {
            let t = t0 + chrono::Duration::seconds(i as i64 * 997);
            (t, t, (1u64 << (i % 18)) + i % 5, i % 3 != 0)
        })
        .collect();
    crate::conformance::record_attempts(&store, &rec, &a.id, &attempts).await;
    let table = || {
        store.read(|c| {
            c.prepare("SELECT * FROM attempt_stats ORDER BY scope, span, start, bucket")
                .map_err(backend)?
                .query_map([], |r| {
                    (0..6)
                        .map(|i| r.get::<_, Value>(i))
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)
        })
    };
    let kept = table().await.unwrap();
    assert!(kept.len() > 80, "{}", kept.len());
    let fill: String = MIGRATIONS[10]
        .split(';')
        .filter(|s| s.trim_start().starts_with("INSERT"))
        .map(|s| format!("{s};"))
        .collect();
    assert_eq!(
        fill.matches(&crate::stats::bucket_sql("duration_ms"))
            .count(),
        2
    );
    store
        .write(move |c| {
            c.execute_batch(&format!("DELETE FROM attempt_stats; {fill}"))
                .map_err(backend)
        })
        .await
        .unwrap();
    assert_eq!(table().await.unwrap(), kept);
}
