//! The SQLite backend's own tests: group commit, WAL, caches, migrations, and the
//! queue's behaviour on SQLite.

use super::*;

pub(super) fn app(uid: Option<&str>) -> Application {
    let now = Utc::now();
    Application {
        id: new_id("app"),
        uid: uid.map(str::to_string),
        name: "n".into(),
        throttle_rate: None,
        metadata: Default::default(),
        retry_policy: None,
        validate_payloads: false,
        created_at: now,
        updated_at: now,
    }
}

#[tokio::test]
async fn group_commit_isolates_failing_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("db.sqlite")).unwrap());
    // Many concurrent writes, some colliding on uid: the collisions fail alone.
    let mut tasks = vec![];
    for i in 0..200 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.create_app(app(Some(&format!("u{}", i % 100)))).await
        }));
    }
    let mut ok = 0;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict(_)) => conflicts += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, conflicts), (100, 100));
    let page = store
        .list_apps(
            &ListQuery {
                limit: 250,
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(page.data.len(), 100);
}

#[tokio::test]
async fn pagination_walks_forward_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
    let mut ids = vec![];
    for _ in 0..7 {
        ids.push(store.create_app(app(None)).await.unwrap().id);
    }
    ids.sort();
    let q = |it: Option<String>| ListQuery {
        limit: 3,
        iterator: it,
        order: Order::Ascending,
    };
    let p1 = store.list_apps(&q(None), None).await.unwrap();
    let p2 = store
        .list_apps(&q(p1.iterator.clone()), None)
        .await
        .unwrap();
    let p3 = store
        .list_apps(&q(p2.iterator.clone()), None)
        .await
        .unwrap();
    let got: Vec<_> = [&p1, &p2, &p3]
        .iter()
        .flat_map(|p| p.data.iter().map(|a| a.id.clone()))
        .collect();
    assert_eq!(got, ids);
    assert!(!p1.done && !p2.done && p3.done);
    let back = store
        .list_apps(&q(p3.prev_iterator.clone()), None)
        .await
        .unwrap();
    assert_eq!(back.data, p2.data);
}

pub(super) fn endpoint(app_id: &str, max_concurrency: u32) -> Endpoint {
    let now = Utc::now();
    Endpoint {
        id: new_id("ep"),
        app_id: app_id.into(),
        uid: None,
        url: "http://127.0.0.1:1/".into(),
        disabled: false,
        settings: EndpointSettings {
            max_concurrency: Some(max_concurrency),
            ..Default::default()
        },
        created_at: now,
        updated_at: now,
        failing_since: None,
    }
}

pub(super) fn message(app_id: &str) -> Message {
    Message {
        id: new_id("msg"),
        app_id: app_id.into(),
        event_id: None,
        event_type: "t".into(),
        payload: "{}".into(),
        channels: None,
        tags: None,
        created_at: now(),
        deliver_at: None,
    }
}

pub(super) fn report_for(d: &ClaimedDelivery, next: NextStep) -> AttemptReport {
    AttemptReport {
        attempt: Attempt {
            id: new_id("atmpt"),
            app_id: d.message.app_id.clone(),
            msg_id: d.message.id.clone(),
            endpoint_id: d.endpoint.id.clone(),
            url: d.endpoint.url.clone(),
            attempted_at: Utc::now(),
            status_code: Some(500),
            duration_ms: 1,
            succeeded: next == NextStep::Succeeded,
            error_kind: None,
            response: String::new(),
            trigger: Trigger::Scheduled,
        },
        next,
        disable_endpoint: false,
        disable_if_failing_since: None,
    }
}

#[tokio::test]
async fn leases_guard_finishing_writes_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
    let a = store.create_app(app(None)).await.unwrap();
    let ep = store.create_endpoint(endpoint(&a.id, 8)).await.unwrap();
    store.create_message(message(&a.id)).await.unwrap();
    let lease = chrono::Duration::seconds(30);
    let t0 = Utc::now();
    let first = store
        .claim_deliveries(t0, lease, 10, 10, &[])
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    // Claimed work is not handed out twice while its lease holds...
    assert!(store
        .claim_deliveries(t0, lease, 10, 10, &[])
        .await
        .unwrap()
        .is_empty());
    // ...but is taken over once it expires (a crashed worker).
    let later = t0 + chrono::Duration::seconds(31);
    let second = store
        .claim_deliveries(later, lease, 10, 10, &[])
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_ne!(first[0].lease_token, second[0].lease_token);
    // The first worker's late report is logged but changes nothing.
    let out = store
        .report_attempt(
            first[0].id,
            &first[0].lease_token,
            report_for(&first[0], NextStep::Failed),
        )
        .await
        .unwrap();
    assert_eq!(out.applied, Applied::LeaseLost);
    let out = store
        .report_attempt(
            second[0].id,
            &second[0].lease_token,
            report_for(&second[0], NextStep::Succeeded),
        )
        .await
        .unwrap();
    assert_eq!(out.applied, Applied::Yes);
    let views = store
        .list_message_deliveries(
            &a.id,
            &first[0].message.id,
            &ListQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(views.data[0].status, DeliveryStatus::Succeeded);
    assert_eq!(views.data[0].endpoint_id, ep.id);
    let attempts = store
        .list_attempts(
            &a.id,
            &AttemptQuery {
                list: ListQuery {
                    limit: 10,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(attempts.data.len(), 2, "both attempts are in the log");
}

/// An endpoint deleted while its attempt ran: the report applies to nothing, and says
/// so apart from a lease taken over (which only another claim can cause).
#[tokio::test]
async fn a_report_for_a_deleted_endpoint_finds_its_delivery_gone() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
    let a = store.create_app(app(None)).await.unwrap();
    let ep = store.create_endpoint(endpoint(&a.id, 8)).await.unwrap();
    store.create_message(message(&a.id)).await.unwrap();
    let claimed = store
        .claim_deliveries(Utc::now(), chrono::Duration::seconds(30), 10, 10, &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    store.delete_endpoint(&a.id, &ep.id).await.unwrap();
    let d = &claimed[0];
    let out = store
        .report_attempt(d.id, &d.lease_token, report_for(d, NextStep::Failed))
        .await
        .unwrap();
    assert_eq!(out.applied, Applied::DeliveryGone);
    assert!(!out.endpoint_disabled);
}

#[tokio::test]
async fn full_endpoints_are_skipped_not_parked() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
    let a = store.create_app(app(None)).await.unwrap();
    let full = store.create_endpoint(endpoint(&a.id, 1)).await.unwrap();
    let other = store.create_endpoint(endpoint(&a.id, 1)).await.unwrap();
    store.create_message(message(&a.id)).await.unwrap();
    let lease = chrono::Duration::seconds(30);
    let now = Utc::now();
    let busy = vec![(full.id.clone(), usize::MAX)];
    let got = store
        .claim_deliveries(now, lease, 10, 10, &busy)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].endpoint.id, other.id, "the full endpoint is skipped");
    // Nothing else is due on an endpoint with room: the next wake-up is the other
    // delivery's lease expiry, not the full endpoint's due work.
    let next = store
        .next_due(&busy, true)
        .await
        .unwrap()
        .expect("a lease expires");
    assert!(
        next > now + chrono::Duration::seconds(29),
        "{next} vs {now}"
    );
    // Once it has room, its work is claimable at once (it was not parked).
    let got = store
        .claim_deliveries(now, lease, 10, 10, &[])
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].endpoint.id, full.id);
    // A full application counts for all its endpoints.
    store.create_message(message(&a.id)).await.unwrap();
    let later = now + chrono::Duration::milliseconds(10);
    let busy = vec![(a.id.clone(), usize::MAX)];
    assert!(store
        .claim_deliveries(later, lease, 10, 10, &busy)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn claims_respect_endpoint_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
    let a = store.create_app(app(None)).await.unwrap();
    let ep = store.create_endpoint(endpoint(&a.id, 2)).await.unwrap();
    for _ in 0..5 {
        store.create_message(message(&a.id)).await.unwrap();
    }
    let lease = chrono::Duration::seconds(30);
    let now = Utc::now();
    assert_eq!(
        store
            .claim_deliveries(now, lease, 10, 10, &[])
            .await
            .unwrap()
            .len(),
        2
    );
    let busy = vec![(ep.id.clone(), 2)];
    assert!(store
        .claim_deliveries(now, lease, 10, 10, &busy)
        .await
        .unwrap()
        .is_empty());
    let busy = vec![(ep.id.clone(), 1)];
    let soon = now + chrono::Duration::seconds(2);
    assert_eq!(
        store
            .claim_deliveries(soon, lease, 10, 10, &busy)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A failed attempt makes the endpoint failing: one delivery at a time, claimed only
/// while the worker has room for failing endpoints; a success gives its full
/// `maxConcurrency` back.
#[tokio::test]
async fn failing_endpoints_are_claimed_one_at_a_time_within_the_room_given() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
    let a = store.create_app(app(None)).await.unwrap();
    let dead = store.create_endpoint(endpoint(&a.id, 8)).await.unwrap();
    let b = store.create_app(app(None)).await.unwrap();
    let healthy = store.create_endpoint(endpoint(&b.id, 8)).await.unwrap();
    for _ in 0..5 {
        store.create_message(message(&a.id)).await.unwrap();
        store.create_message(message(&b.id)).await.unwrap();
    }
    let lease = chrono::Duration::seconds(30);
    let now = Utc::now();
    // Before any failure the endpoint is not failing: all five at once. One fails and
    // is retried at once; the other four are handed back.
    let healthy_full = vec![(healthy.id.clone(), usize::MAX)];
    let first = store
        .claim_deliveries(now, lease, 5, 5, &healthy_full)
        .await
        .unwrap();
    assert_eq!(first.len(), 5);
    assert!(first
        .iter()
        .all(|d| d.endpoint.id == dead.id && !d.endpoint.is_failing()));
    let t1 = now + chrono::Duration::milliseconds(1);
    store
        .report_attempt(
            first[0].id,
            &first[0].lease_token,
            report_for(&first[0], NextStep::RetryAt(t1)),
        )
        .await
        .unwrap();
    for d in &first[1..] {
        store
            .release_delivery(d.id, &d.lease_token, t1)
            .await
            .unwrap();
    }
    let t2 = now + chrono::Duration::seconds(1);
    // With the healthy endpoint full, the only due work is the failing endpoint's:
    // it counts for the next wake-up only when there is room for failing endpoints.
    let none = store.next_due(&healthy_full, false).await.unwrap();
    assert_eq!(none, None);
    let next = store.next_due(&healthy_full, true).await.unwrap();
    assert!(next.is_some_and(|t| t <= t2), "{next:?}");
    // No room for failing endpoints: only the healthy one's work is claimed.
    let got = store.claim_deliveries(t2, lease, 20, 0, &[]).await.unwrap();
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|d| d.endpoint.id == healthy.id), "{got:?}");
    // With room: the failing endpoint gets one delivery, marked failing.
    let got = store.claim_deliveries(t2, lease, 20, 3, &[]).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].endpoint.is_failing());
    assert_eq!(got[0].endpoint.concurrency_cap(), 1);
    // It succeeds: the endpoint is healthy again and gets its full concurrency.
    store
        .report_attempt(
            got[0].id,
            &got[0].lease_token,
            report_for(&got[0], NextStep::Succeeded),
        )
        .await
        .unwrap();
    let got = store.claim_deliveries(t2, lease, 20, 0, &[]).await.unwrap();
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got
        .iter()
        .all(|d| d.endpoint.id == dead.id && !d.endpoint.is_failing()));
}

#[tokio::test]
async fn claims_give_a_throttled_endpoint_a_second_of_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
    let a = store.create_app(app(None)).await.unwrap();
    let mut ep = endpoint(&a.id, 100);
    ep.settings.throttle_rate = Some(3);
    let ep = store.create_endpoint(ep).await.unwrap();
    for _ in 0..10 {
        store.create_message(message(&a.id)).await.unwrap();
    }
    let lease = chrono::Duration::seconds(30);
    let now = Utc::now();
    let claimed = store
        .claim_deliveries(now, lease, 50, 50, &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3, "at most throttleRate per claim");
    // The dispatcher's "full for now" (pacing booked ahead) gets nothing.
    let full = vec![(ep.id.clone(), usize::MAX)];
    let soon = now + chrono::Duration::seconds(2);
    assert!(store
        .claim_deliveries(soon, lease, 50, 50, &full)
        .await
        .unwrap()
        .is_empty());
    let busy = vec![(ep.id.clone(), 3)];
    let later = now + chrono::Duration::seconds(4);
    assert_eq!(
        store
            .claim_deliveries(later, lease, 50, 50, &busy)
            .await
            .unwrap()
            .len(),
        3
    );
}

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
