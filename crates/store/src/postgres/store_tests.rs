//! [`PgStore`] against a real PostgreSQL (`HOOKLINE_TEST_POSTGRES_URL`; each test on a
//! database of its own, skipped with a message when none is configured): the contract of
//! each method as the SQLite backend keeps it.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Duration, TimeZone};

use super::*;
use crate::postgres::tests::{admin_client, TestDb};

async fn open(test: &str) -> Option<(TestDb, PgStore)> {
    let db = TestDb::create(test).await?;
    let store = PgStore::connect(&db.url, 4, &crate::sealing::test_key())
        .await
        .expect("connect");
    Some((db, store))
}

/// A timestamp finer than a millisecond, as a caller might pass one.
fn fine_now() -> DateTime<Utc> {
    let t = Utc::now();
    Utc.timestamp_opt(
        t.timestamp(),
        (t.timestamp_subsec_millis() * 1_000_000) + 123_456,
    )
    .unwrap()
}

fn app(uid: Option<&str>) -> Application {
    let now = fine_now();
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

fn endpoint(app_id: &str, uid: Option<&str>) -> Endpoint {
    let now = fine_now();
    Endpoint {
        id: new_id("ep"),
        app_id: app_id.into(),
        uid: uid.map(str::to_string),
        url: "http://127.0.0.1:1/".into(),
        disabled: false,
        settings: EndpointSettings {
            description: "d".into(),
            secrets: vec![SecretEntry {
                key: "whsec_c2VjcmV0".into(),
                expires_at: None,
            }],
            ..Default::default()
        },
        created_at: now,
        updated_at: now,
        failing_since: None,
    }
}

fn event_type(name: &str) -> EventType {
    let now = crate::now();
    EventType {
        name: name.into(),
        description: "desc".into(),
        archived: false,
        deprecated: false,
        schemas: Some(serde_json::json!({"1": {"type": "object"}})),
        group_name: Some("g".into()),
        feature_flags: Some(vec!["beta".into()]),
        validate_payloads: true,
        created_at: now,
        updated_at: now,
    }
}

fn message(app_id: &str, event_type: &str) -> Message {
    Message {
        id: new_id("msg"),
        app_id: app_id.into(),
        event_id: None,
        event_type: event_type.into(),
        payload: r#"{"a": 1,  "b":[2]}"#.into(),
        channels: None,
        tags: None,
        created_at: fine_now(),
        deliver_at: None,
        payload_expires_at: None,
    }
}

fn q(limit: usize, iterator: Option<String>, order: Order) -> ListQuery {
    ListQuery {
        limit,
        iterator,
        order,
    }
}

fn ids<T>(p: &Page<T>, key: fn(&T) -> &str) -> Vec<String> {
    p.data.iter().map(|x| key(x).to_string()).collect()
}

/// `n` messages to `app_id`, created by as many tasks at once (so they queue together).
async fn create_at_once(store: &PgStore, app_id: &str, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let store = store.clone();
            let msg = message(app_id, "t");
            tokio::spawn(async move { store.create_message(msg).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

async fn count(store: &PgStore, sql: &str) -> i64 {
    let c = store.pool.get().await.unwrap();
    c.query_one(sql, &[]).await.unwrap().get(0)
}

// --- applications --------------------------------------------------------------------

#[tokio::test]
async fn applications_are_found_by_id_then_uid_and_uids_are_unique() {
    let Some((db, store)) = open("applications_found").await else {
        return;
    };
    let mut a = app(Some("acme"));
    a.throttle_rate = Some(100_000);
    a.metadata = BTreeMap::from([("k".to_string(), "v".to_string())]);
    a.retry_policy = Some(hookline_retry::RetryPolicy::default());
    a.validate_payloads = true;
    let created = store.create_app(a.clone()).await.unwrap();
    // Stored, and returned, at millisecond precision.
    assert_eq!(created.created_at, ms(a.created_at));
    assert_ne!(created.created_at, a.created_at);
    assert_eq!(store.get_app(&a.id).await.unwrap().as_ref(), Some(&created));
    assert_eq!(
        store.get_app("acme").await.unwrap().as_ref(),
        Some(&created)
    );
    assert_eq!(store.get_app("nope").await.unwrap(), None);

    match store.create_app(app(Some("acme"))).await {
        Err(StoreError::Conflict(text)) => {
            assert_eq!(text, "an application with this uid already exists")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // An id match wins over another application's uid equal to that id.
    let b = store.create_app(app(Some(&a.id))).await.unwrap();
    assert_eq!(store.get_app(&a.id).await.unwrap().unwrap().id, a.id);
    assert_ne!(a.id, b.id);
    // Applications without uid never collide.
    store.create_app(app(None)).await.unwrap();
    store.create_app(app(None)).await.unwrap();
    // A throttle rate the column cannot hold is refused, not truncated.
    let mut big = app(None);
    big.throttle_rate = Some(u32::MAX);
    assert!(matches!(
        store.create_app(big).await,
        Err(StoreError::Rejected(r)) if r.field == "throttleRate"
    ));
    drop(store);
    db.drop_db().await;
}

#[tokio::test]
async fn pagination_walks_forward_and_back() {
    let Some((db, store)) = open("pagination_walks").await else {
        return;
    };
    let mut ids_sorted = vec![];
    for _ in 0..7 {
        ids_sorted.push(store.create_app(app(None)).await.unwrap().id);
    }
    ids_sorted.sort();
    let list = |q: ListQuery| {
        let store = &store;
        async move { store.list_apps(&q, None).await.unwrap() }
    };
    let key: fn(&Application) -> &str = |a| &a.id;

    // Forward, ascending.
    let p1 = list(q(3, None, Order::Ascending)).await;
    let p2 = list(q(3, p1.iterator.clone(), Order::Ascending)).await;
    let p3 = list(q(3, p2.iterator.clone(), Order::Ascending)).await;
    let got: Vec<_> = [&p1, &p2, &p3].iter().flat_map(|p| ids(p, key)).collect();
    assert_eq!(got, ids_sorted);
    assert!(!p1.done && !p2.done && p3.done);
    assert_eq!(p1.iterator.as_deref(), Some(ids_sorted[2].as_str()));
    assert_eq!(p2.prev_iterator, Some(format!("-{}", ids_sorted[3])));
    // Back from the last page gives the middle one again, in ascending order; a page
    // walked backwards is never `done`.
    let back = list(q(3, p3.prev_iterator.clone(), Order::Ascending)).await;
    assert_eq!(back.data, p2.data);
    assert!(!back.done);
    let back1 = list(q(3, back.prev_iterator.clone(), Order::Ascending)).await;
    assert_eq!(back1.data, p1.data);
    // Nothing before the first: an empty page that keeps its cursor.
    let before = list(q(3, back1.prev_iterator.clone(), Order::Ascending)).await;
    assert!(before.data.is_empty());
    assert_eq!(before.iterator, Some(ids_sorted[0].clone()));
    assert_eq!(before.prev_iterator, None);
    // Past the end: empty, done, the cursor kept.
    let after = list(q(3, p3.iterator.clone(), Order::Ascending)).await;
    assert!(after.data.is_empty() && after.done);
    assert_eq!(after.iterator, p3.iterator);

    // Descending.
    let mut desc = ids_sorted.clone();
    desc.reverse();
    let d1 = list(q(4, None, Order::Descending)).await;
    let d2 = list(q(4, d1.iterator.clone(), Order::Descending)).await;
    assert_eq!(ids(&d1, key), desc[..4]);
    assert_eq!(ids(&d2, key), desc[4..]);
    assert!(!d1.done && d2.done);
    let dback = list(q(4, d2.prev_iterator.clone(), Order::Descending)).await;
    assert_eq!(dback.data, d1.data);
    // A limit that fits exactly is done on the first page.
    assert!(list(q(7, None, Order::Ascending)).await.done);
    assert!(!list(q(6, None, Order::Ascending)).await.done);

    // `only` restricts the listing to one application.
    let only = store
        .list_apps(&q(10, None, Order::Ascending), Some(&ids_sorted[4]))
        .await
        .unwrap();
    assert_eq!(ids(&only, key), [ids_sorted[4].clone()]);
    assert!(only.done);
    drop(store);
    db.drop_db().await;
}

#[tokio::test]
async fn listings_are_in_byte_order_whatever_the_database_collation() {
    // A linguistic collation sorts 'app_a' before 'app_B'; ids are KSUIDs, which sort
    // by time only byte by byte (and SQLite compares bytes).
    let Ok(admin) = std::env::var("HOOKLINE_TEST_POSTGRES_URL") else {
        eprintln!("skipped listings_in_byte_order: HOOKLINE_TEST_POSTGRES_URL is not set");
        return;
    };
    let icu: i64 = admin_client(&admin)
        .await
        .query_one(
            "SELECT count(*) FROM pg_collation WHERE collprovider = 'i'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if icu == 0 {
        eprintln!("skipped listings_in_byte_order: the server has no ICU collations");
        return;
    }
    let Some(db) = TestDb::create_with(
        "listings_in_byte_order",
        "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' TEMPLATE template0",
    )
    .await
    else {
        return;
    };
    let store = PgStore::connect(&db.url, 2, &crate::sealing::test_key())
        .await
        .unwrap();
    for id in ["app_a", "app_B", "app_0", "app_Z", "app_b"] {
        let mut a = app(None);
        a.id = id.into();
        store.create_app(a).await.unwrap();
    }
    let all = store
        .list_apps(&q(10, None, Order::Ascending), None)
        .await
        .unwrap();
    assert_eq!(
        ids(&all, |a| &a.id),
        ["app_0", "app_B", "app_Z", "app_a", "app_b"]
    );
    let page = store
        .list_apps(&q(2, Some("app_Z".into()), Order::Ascending), None)
        .await
        .unwrap();
    assert_eq!(ids(&page, |a| &a.id), ["app_a", "app_b"]);
    for name in ["b.x", "B.x", "a.y"] {
        store.create_event_type(event_type(name)).await.unwrap();
    }
    let ets = store
        .list_event_types(&q(10, None, Order::Ascending), true)
        .await
        .unwrap();
    assert_eq!(ids(&ets, |e| &e.name), ["B.x", "a.y", "b.x"]);
    drop(store);
    db.drop_db().await;
}

#[tokio::test]
async fn updates_apply_a_mutator_inside_the_transaction() {
    let Some((db, store)) = open("updates_apply_a_mutator").await else {
        return;
    };
    let a = store.create_app(app(Some("one"))).await.unwrap();
    store.create_app(app(Some("two"))).await.unwrap();
    let updated = store
        .update_app(
            &a.id,
            Box::new(|a| {
                a.name = "renamed".into();
                a.throttle_rate = Some(5);
                a.id = "app_hijack".into(); // ignored: the id is the record's
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(updated.name, "renamed");
    assert_eq!(updated.id, a.id);
    assert_eq!(store.get_app(&a.id).await.unwrap(), Some(updated.clone()));

    // A refused change writes nothing, even what it changed before refusing.
    let err = store
        .update_app(
            &a.id,
            Box::new(|a| {
                a.name = "half".into();
                Err(Rejected::new("name", "no"))
            }),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Rejected(ref r) if r.field == "name"),
        "{err}"
    );
    assert_eq!(store.get_app(&a.id).await.unwrap(), Some(updated.clone()));

    // Taking another application's uid is a conflict, and changes nothing.
    let err = store
        .update_app(
            &a.id,
            Box::new(|a| {
                a.uid = Some("two".into());
                Ok(())
            }),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref t) if t == "an application with this uid already exists")
    );
    assert_eq!(store.get_app("one").await.unwrap(), Some(updated));

    // Updates address an application by id only (as SQLite's do).
    assert!(matches!(
        store.update_app("one", Box::new(|_| Ok(()))).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.update_app("app_missing", Box::new(|_| Ok(()))).await,
        Err(StoreError::NotFound)
    ));
    drop(store);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_from_two_processes_both_apply() {
    let Some((db, one)) = open("concurrent_updates").await else {
        return;
    };
    // A second "process": a pool of its own on the same database.
    let two = PgStore::connect(&db.url, 4, &crate::sealing::test_key())
        .await
        .unwrap();
    let a = one.create_app(app(None)).await.unwrap();
    let ep = one.create_endpoint(endpoint(&a.id, None)).await.unwrap();
    let mut et = event_type("t.shared");
    et.feature_flags = None;
    one.create_event_type(et).await.unwrap();
    let stores = [Arc::new(one), Arc::new(two)];
    let mut tasks = vec![];
    for i in 0..8 {
        let store = stores[i % 2].clone();
        let (app_id, ep_id) = (a.id.clone(), ep.id.clone());
        tasks.push(tokio::spawn(async move {
            // Each change reads, waits (so that without a lock the others would read the
            // same version), then appends its key: a lost update would drop keys.
            store
                .update_app(
                    &app_id,
                    Box::new(move |a| {
                        std::thread::sleep(std::time::Duration::from_millis(30));
                        a.metadata.insert(format!("k{i}"), "v".into());
                        Ok(())
                    }),
                )
                .await
                .unwrap();
            store
                .update_endpoint(
                    &app_id,
                    &ep_id,
                    Box::new(move |e| {
                        std::thread::sleep(std::time::Duration::from_millis(30));
                        e.settings.metadata.insert(format!("k{i}"), "v".into());
                        Ok(())
                    }),
                )
                .await
                .unwrap();
            store
                .update_event_type(
                    "t.shared",
                    Box::new(move |e| {
                        std::thread::sleep(std::time::Duration::from_millis(30));
                        e.feature_flags
                            .get_or_insert_with(Vec::new)
                            .push(format!("f{i}"));
                        Ok(())
                    }),
                )
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = stores[1].get_event_type("t.shared").await.unwrap().unwrap();
    assert_eq!(got.feature_flags.map_or(0, |f| f.len()), 8);
    let got = stores[0].get_app(&a.id).await.unwrap().unwrap();
    assert_eq!(got.metadata.len(), 8, "{:?}", got.metadata);
    let got = stores[1]
        .get_endpoint(&a.id, &ep.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got.settings.metadata.len(),
        8,
        "{:?}",
        got.settings.metadata
    );
    drop(stores);
    db.drop_db().await;
}

#[tokio::test]
async fn deleting_an_application_takes_everything_it_owns() {
    let Some((db, store)) = open("deleting_an_application").await else {
        return;
    };
    let a = store.create_app(app(None)).await.unwrap();
    let other = store.create_app(app(None)).await.unwrap();
    let mut owned = vec![];
    for (i, x) in [&a, &other].into_iter().enumerate() {
        let ep = store.create_endpoint(endpoint(&x.id, None)).await.unwrap();
        let msg = store.create_message(message(&x.id, "t")).await.unwrap();
        let hash = [i as u8 + 1; 32];
        store
            .insert_token(ApiToken {
                hash,
                app_id: Some(x.id.clone()),
                read_only: false,
                expires_at: None,
                created_at: crate::now(),
                ..Default::default()
            })
            .await
            .unwrap();
        // An attempt, written as the queue (part 2) will write it.
        let c = store.pool.get().await.unwrap();
        c.execute(
            "INSERT INTO attempts (id, app_id, msg_id, endpoint_id, url, attempted_at, duration_ms, succeeded, response, manual)
             VALUES ($1, $2, $3, $4, 'http://x/', now(), 1, true, '', false)",
            &[&new_id("atmpt"), &x.id, &msg.id, &ep.id],
        )
        .await
        .unwrap();
        owned.push((ep, msg, hash));
    }
    let per_app =
        |table: &str, id: &str| format!("SELECT count(*) FROM {table} WHERE app_id = '{id}'");
    assert_eq!(count(&store, &per_app("deliveries", &a.id)).await, 1);
    assert_eq!(count(&store, &per_app("attempts", &a.id)).await, 1);

    store.delete_app(&a.id).await.unwrap();
    let (ep, msg, hash) = &owned[0];
    assert_eq!(store.get_app(&a.id).await.unwrap(), None);
    assert_eq!(store.get_endpoint(&a.id, &ep.id).await.unwrap(), None);
    assert_eq!(store.get_message(&a.id, &msg.id).await.unwrap(), None);
    assert_eq!(store.find_token(hash, crate::now()).await.unwrap(), None);
    for table in [
        "endpoints",
        "messages",
        "deliveries",
        "attempts",
        "api_tokens",
    ] {
        assert_eq!(count(&store, &per_app(table, &a.id)).await, 0, "{table}");
    }
    // The other application keeps everything.
    let (ep, msg, hash) = &owned[1];
    assert!(store
        .get_endpoint(&other.id, &ep.id)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .get_message(&other.id, &msg.id)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .find_token(hash, crate::now())
        .await
        .unwrap()
        .is_some());
    for table in ["deliveries", "attempts"] {
        assert_eq!(
            count(&store, &per_app(table, &other.id)).await,
            1,
            "{table}"
        );
    }
    // Deleting is by id, and once.
    assert!(matches!(
        store.delete_app(&a.id).await,
        Err(StoreError::NotFound)
    ));
    drop(store);
    db.drop_db().await;
}

// --- event types -----------------------------------------------------------------------

#[tokio::test]
async fn event_types_archive_list_and_expunge() {
    let Some((db, store)) = open("event_types").await else {
        return;
    };
    let created = store
        .create_event_type(event_type("user.created"))
        .await
        .unwrap();
    assert_eq!(
        store.get_event_type("user.created").await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(store.get_event_type("user.gone").await.unwrap(), None);
    match store.create_event_type(event_type("user.created")).await {
        Err(StoreError::Conflict(t)) => {
            assert_eq!(t, "an event type with this name already exists")
        }
        other => panic!("{other:?}"),
    }
    store
        .create_event_type(event_type("a.first"))
        .await
        .unwrap();
    store.create_event_type(event_type("z.last")).await.unwrap();

    // Archiving goes through update; the name is the record's whatever the mutator does.
    let archived = store
        .update_event_type(
            "user.created",
            Box::new(|e| {
                e.archived = true;
                e.description = "old".into();
                e.name = "renamed".into();
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert!(archived.archived);
    assert_eq!(archived.name, "user.created");
    assert_eq!(
        store.get_event_type("user.created").await.unwrap(),
        Some(archived)
    );
    assert_eq!(store.get_event_type("renamed").await.unwrap(), None);
    let names = |p: Page<EventType>| p.data.into_iter().map(|e| e.name).collect::<Vec<_>>();
    let visible = store
        .list_event_types(&q(10, None, Order::Ascending), false)
        .await
        .unwrap();
    assert_eq!(names(visible), ["a.first", "z.last"]);
    let all = store
        .list_event_types(&q(2, None, Order::Ascending), true)
        .await
        .unwrap();
    assert!(!all.done);
    assert_eq!(all.iterator.as_deref(), Some("user.created"));
    assert_eq!(names(all), ["a.first", "user.created"]);
    let desc = store
        .list_event_types(&q(10, None, Order::Descending), true)
        .await
        .unwrap();
    assert_eq!(names(desc), ["z.last", "user.created", "a.first"]);

    assert!(matches!(
        store.update_event_type("nope", Box::new(|_| Ok(()))).await,
        Err(StoreError::NotFound)
    ));
    let err = store
        .update_event_type(
            "z.last",
            Box::new(|e| {
                e.deprecated = true;
                Err(Rejected::new("schemas", "bad"))
            }),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(_)));
    assert!(
        !store
            .get_event_type("z.last")
            .await
            .unwrap()
            .unwrap()
            .deprecated
    );

    store.expunge_event_type("user.created").await.unwrap();
    assert_eq!(store.get_event_type("user.created").await.unwrap(), None);
    assert!(matches!(
        store.expunge_event_type("user.created").await,
        Err(StoreError::NotFound)
    ));
    drop(store);
    db.drop_db().await;
}

// --- endpoints -------------------------------------------------------------------------

#[tokio::test]
async fn endpoints_belong_to_their_application() {
    let Some((db, store)) = open("endpoints").await else {
        return;
    };
    let a = store.create_app(app(None)).await.unwrap();
    let b = store.create_app(app(None)).await.unwrap();
    let mut e = endpoint(&a.id, Some("hook"));
    e.failing_since = Some(crate::now()); // the store's own: ignored on writes
    let created = store.create_endpoint(e.clone()).await.unwrap();
    assert_eq!(created.failing_since, None);
    assert_eq!(created.created_at, ms(e.created_at));
    assert_eq!(
        store.get_endpoint(&a.id, &e.id).await.unwrap().as_ref(),
        Some(&created)
    );
    assert_eq!(
        store.get_endpoint(&a.id, "hook").await.unwrap().as_ref(),
        Some(&created)
    );
    // Not through another application.
    assert_eq!(store.get_endpoint(&b.id, &e.id).await.unwrap(), None);
    assert_eq!(store.get_endpoint(&b.id, "hook").await.unwrap(), None);
    // A uid is unique within its application only.
    match store.create_endpoint(endpoint(&a.id, Some("hook"))).await {
        Err(StoreError::Conflict(t)) => assert_eq!(
            t,
            "an endpoint with this uid already exists in this application"
        ),
        other => panic!("{other:?}"),
    }
    store
        .create_endpoint(endpoint(&b.id, Some("hook")))
        .await
        .unwrap();
    // An endpoint of no application is a failure, not a conflict.
    assert!(matches!(
        store.create_endpoint(endpoint("app_missing", None)).await,
        Err(StoreError::Backend(_))
    ));

    let mut in_a = vec![created.id.clone()];
    for _ in 0..4 {
        in_a.push(
            store
                .create_endpoint(endpoint(&a.id, None))
                .await
                .unwrap()
                .id,
        );
    }
    in_a.sort();
    let p1 = store
        .list_endpoints(&a.id, &q(3, None, Order::Ascending))
        .await
        .unwrap();
    let p2 = store
        .list_endpoints(&a.id, &q(3, p1.iterator.clone(), Order::Ascending))
        .await
        .unwrap();
    let got: Vec<_> = [&p1, &p2].iter().flat_map(|p| ids(p, |e| &e.id)).collect();
    assert_eq!(got, in_a);
    assert!(!p1.done && p2.done);
    let back = store
        .list_endpoints(&a.id, &q(3, p2.prev_iterator.clone(), Order::Ascending))
        .await
        .unwrap();
    assert_eq!(back.data, p1.data);

    // Updates: by id within the app, the id and app pinned, a refusal writes nothing.
    let updated = store
        .update_endpoint(
            &a.id,
            &created.id,
            Box::new(|e| {
                e.url = "https://example.com/hook".into();
                e.app_id = "app_other".into();
                e.settings.description = "new".into();
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(updated.app_id, a.id);
    assert_eq!(
        store.get_endpoint(&a.id, "hook").await.unwrap(),
        Some(updated.clone())
    );
    assert!(matches!(
        store
            .update_endpoint(&b.id, &created.id, Box::new(|_| Ok(())))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .update_endpoint(&a.id, "hook", Box::new(|_| Ok(())))
            .await,
        Err(StoreError::NotFound)
    ));
    let err = store
        .update_endpoint(
            &a.id,
            &created.id,
            Box::new(|e| {
                e.disabled = true;
                Err(Rejected::new("url", "bad"))
            }),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(_)));
    assert_eq!(
        store.get_endpoint(&a.id, &created.id).await.unwrap(),
        Some(updated)
    );
    drop(store);
    db.drop_db().await;
}

#[tokio::test]
async fn re_enabling_an_endpoint_clears_its_failures_and_makes_its_work_due() {
    let Some((db, store)) = open("re_enabling").await else {
        return;
    };
    let a = store.create_app(app(None)).await.unwrap();
    let ep = store.create_endpoint(endpoint(&a.id, None)).await.unwrap();
    store.create_message(message(&a.id, "t")).await.unwrap();
    let failing = crate::now() - Duration::hours(1);
    let c = store.pool.get().await.unwrap();
    c.execute(
        "UPDATE endpoints SET disabled = true, failing_since = $2, next_due_at = NULL WHERE id = $1",
        &[&ep.id, &failing],
    )
    .await
    .unwrap();
    let due: DateTime<Utc> = c
        .query_one(
            "SELECT due_at FROM deliveries WHERE endpoint_id = $1",
            &[&ep.id],
        )
        .await
        .unwrap()
        .get(0);
    // An update that leaves it disabled keeps its record (and ignores the caller's).
    let still = store
        .update_endpoint(
            &a.id,
            &ep.id,
            Box::new(|e| {
                e.failing_since = None;
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(still.failing_since, Some(failing));
    let enabled = store
        .update_endpoint(
            &a.id,
            &ep.id,
            Box::new(|e| {
                e.disabled = false;
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(enabled.failing_since, None);
    assert_eq!(
        store.get_endpoint(&a.id, &ep.id).await.unwrap(),
        Some(enabled)
    );
    let next: Option<DateTime<Utc>> = c
        .query_one("SELECT next_due_at FROM endpoints WHERE id = $1", &[&ep.id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, Some(due));
    drop(c);
    drop(store);
    db.drop_db().await;
}

#[tokio::test]
async fn deleting_an_endpoint_takes_its_deliveries_and_attempts() {
    let Some((db, store)) = open("deleting_an_endpoint").await else {
        return;
    };
    let a = store.create_app(app(None)).await.unwrap();
    let b = store.create_app(app(None)).await.unwrap();
    let gone = store.create_endpoint(endpoint(&a.id, None)).await.unwrap();
    let kept = store.create_endpoint(endpoint(&a.id, None)).await.unwrap();
    let msg = store.create_message(message(&a.id, "t")).await.unwrap();
    let c = store.pool.get().await.unwrap();
    c.execute(
        "INSERT INTO attempts (id, app_id, msg_id, endpoint_id, url, attempted_at, duration_ms, succeeded, response, manual)
         VALUES ($1, $2, $3, $4, 'http://x/', now(), 1, true, '', false)",
        &[&new_id("atmpt"), &a.id, &msg.id, &gone.id],
    )
    .await
    .unwrap();
    // Not through another application.
    assert!(matches!(
        store.delete_endpoint(&b.id, &gone.id).await,
        Err(StoreError::NotFound)
    ));
    store.delete_endpoint(&a.id, &gone.id).await.unwrap();
    assert_eq!(store.get_endpoint(&a.id, &gone.id).await.unwrap(), None);
    let of = |id: &str| format!("SELECT count(*) FROM deliveries WHERE endpoint_id = '{id}'");
    assert_eq!(count(&store, &of(&gone.id)).await, 0);
    assert_eq!(count(&store, &of(&kept.id)).await, 1);
    assert_eq!(count(&store, "SELECT count(*) FROM attempts").await, 0);
    assert!(store.get_message(&a.id, &msg.id).await.unwrap().is_some());
    assert!(matches!(
        store.delete_endpoint(&a.id, &gone.id).await,
        Err(StoreError::NotFound)
    ));
    drop(c);
    drop(store);
    db.drop_db().await;
}

// --- messages --------------------------------------------------------------------------

#[tokio::test]
async fn messages_fan_out_to_matching_endpoints_and_are_found_by_id_or_event_id() {
    let Some((db, store)) = open("messages_fan_out").await else {
        return;
    };
    let a = store.create_app(app(None)).await.unwrap();
    let all = store.create_endpoint(endpoint(&a.id, None)).await.unwrap();
    let mut typed = endpoint(&a.id, None);
    typed.settings.event_types = Some(vec!["user.created".into()]);
    let typed = store.create_endpoint(typed).await.unwrap();
    let mut chan = endpoint(&a.id, None);
    chan.settings.channels = Some(vec!["eu".into()]);
    let chan = store.create_endpoint(chan).await.unwrap();
    let mut off = endpoint(&a.id, None);
    off.disabled = true;
    let off = store.create_endpoint(off).await.unwrap();

    let mut m = message(&a.id, "user.created");
    m.event_id = Some("evt-1".into());
    m.channels = Some(vec!["eu".into(), "us".into()]);
    m.tags = Some(vec!["t1".into()]);
    let m = store.create_message(m).await.unwrap();
    let to = |ep: &Endpoint| {
        format!("SELECT count(*) FROM deliveries WHERE endpoint_id = '{}' AND msg_id = '{}' AND status = 'pending' AND attempts = 0 AND NOT manual", ep.id, m.id)
    };
    for ep in [&all, &typed, &chan] {
        assert_eq!(count(&store, &to(ep)).await, 1);
    }
    assert_eq!(count(&store, &to(&off)).await, 0);
    let c = store.pool.get().await.unwrap();
    let row = c
        .query_one(
            "SELECT d.scheduled_at, d.due_at, e.next_due_at FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id WHERE e.id = $1",
            &[&all.id],
        )
        .await
        .unwrap();
    let (scheduled, due, next): (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (scheduled, due, next),
        (m.created_at, m.created_at, m.created_at)
    );

    // Another type on no channel: only the endpoint without filters.
    let other = store
        .create_message(message(&a.id, "user.deleted"))
        .await
        .unwrap();
    let n = count(
        &store,
        &format!(
            "SELECT count(*) FROM deliveries WHERE msg_id = '{}'",
            other.id
        ),
    )
    .await;
    assert_eq!(n, 1);
    // A later message does not push an endpoint's earliest due work back.
    let next_now: DateTime<Utc> = c
        .query_one(
            "SELECT next_due_at FROM endpoints WHERE id = $1",
            &[&all.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(next_now, m.created_at);

    // Found by id, or event id; payload byte for byte.
    let got = store.get_message(&a.id, &m.id).await.unwrap().unwrap();
    assert_eq!(got, m);
    assert_eq!(&*got.payload, r#"{"a": 1,  "b":[2]}"#);
    assert_eq!(
        store.get_message(&a.id, "evt-1").await.unwrap(),
        Some(m.clone())
    );
    assert_eq!(store.get_message(&a.id, "evt-2").await.unwrap(), None);
    let b = store.create_app(app(None)).await.unwrap();
    assert_eq!(store.get_message(&b.id, &m.id).await.unwrap(), None);

    // An event id is unique within its application.
    let mut dup = message(&a.id, "x");
    dup.event_id = Some("evt-1".into());
    match store.create_message(dup.clone()).await {
        Err(StoreError::Conflict(t)) => assert_eq!(
            t,
            "a message with this eventId already exists in this application"
        ),
        other => panic!("{other:?}"),
    }
    dup.app_id = b.id.clone();
    store.create_message(dup).await.unwrap();
    // No application, no message.
    assert!(matches!(
        store.create_message(message("app_missing", "x")).await,
        Err(StoreError::NotFound)
    ));

    // To one endpoint whatever its filters; a scheduled message is due at deliverAt.
    let mut later = message(&a.id, "other.type");
    later.deliver_at = Some(later.created_at + Duration::minutes(5));
    let later = store
        .create_message_for_endpoint(later, &typed.id)
        .await
        .unwrap();
    let rows = c
        .query(
            "SELECT endpoint_id, scheduled_at, created_at FROM deliveries WHERE msg_id = $1",
            &[&later.id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), typed.id);
    assert_eq!(
        rows[0].get::<_, DateTime<Utc>>(1),
        later.deliver_at.unwrap()
    );
    assert_eq!(
        rows[0].get::<_, DateTime<Utc>>(2),
        later.deliver_at.unwrap()
    );
    // A disabled endpoint gets nothing, even named.
    let none = store
        .create_message_for_endpoint(message(&a.id, "x"), &off.id)
        .await
        .unwrap();
    let n = count(
        &store,
        &format!(
            "SELECT count(*) FROM deliveries WHERE msg_id = '{}'",
            none.id
        ),
    )
    .await;
    assert_eq!(n, 0);
    drop(c);
    drop(store);
    db.drop_db().await;
}

#[tokio::test]
async fn messages_list_with_filters_and_pagination() {
    let Some((db, store)) = open("messages_list").await else {
        return;
    };
    let a = store.create_app(app(None)).await.unwrap();
    let b = store.create_app(app(None)).await.unwrap();
    let t0 = crate::now() - Duration::minutes(10);
    let mut made = vec![];
    for i in 0..6 {
        let mut m = message(&a.id, if i % 2 == 0 { "even" } else { "odd" });
        m.created_at = t0 + Duration::minutes(i);
        m.channels = (i < 3).then(|| vec![format!("ch{i}"), "low".into()]);
        m.tags = (i == 4).then(|| vec!["four".into()]);
        made.push(store.create_message(m).await.unwrap());
    }
    store.create_message(message(&b.id, "even")).await.unwrap();
    made.sort_by(|x, y| x.id.cmp(&y.id));
    let list = |mq: MessageQuery| {
        let (store, app_id) = (&store, a.id.clone());
        async move { store.list_messages(&app_id, &mq).await.unwrap() }
    };
    let mq = |list: ListQuery| MessageQuery {
        list,
        ..Default::default()
    };
    let key: fn(&Message) -> &str = |m| &m.id;
    let p1 = list(mq(q(4, None, Order::Ascending))).await;
    let p2 = list(mq(q(4, p1.iterator.clone(), Order::Ascending))).await;
    let all: Vec<String> = made.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids(&p1, key), all[..4]);
    assert_eq!(ids(&p2, key), all[4..]);
    assert!(!p1.done && p2.done);
    let back = list(mq(q(4, p2.prev_iterator.clone(), Order::Ascending))).await;
    assert_eq!(back.data, p1.data);
    let desc = list(mq(q(10, None, Order::Descending))).await;
    assert_eq!(desc.data.len(), 6);
    assert_eq!(desc.data[0].id, all[5]);

    let by_type = |t: &[&str]| MessageQuery {
        list: q(10, None, Order::Ascending),
        event_types: Some(t.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    let types = |p: &Page<Message>| {
        p.data
            .iter()
            .map(|m| m.event_type.clone())
            .collect::<Vec<_>>()
    };
    assert!(types(&list(by_type(&["even"])).await)
        .iter()
        .all(|t| t == "even"));
    assert_eq!(list(by_type(&["even"])).await.data.len(), 3);
    assert_eq!(list(by_type(&["even", "odd"])).await.data.len(), 6);
    assert_eq!(list(by_type(&[])).await.data.len(), 0);

    let filtered = |f: &dyn Fn(&mut MessageQuery)| {
        let mut m = mq(q(10, None, Order::Ascending));
        f(&mut m);
        m
    };
    let low = list(filtered(&|m| m.channel = Some("low".into()))).await;
    assert_eq!(low.data.len(), 3);
    let ch1 = list(filtered(&|m| m.channel = Some("ch1".into()))).await;
    assert_eq!(ch1.data.len(), 1);
    assert_eq!(ch1.data[0].channels.as_ref().unwrap()[0], "ch1");
    let tagged = list(filtered(&|m| m.tag = Some("four".into()))).await;
    assert_eq!(tagged.data.len(), 1);
    assert_eq!(tagged.data[0].created_at, t0 + Duration::minutes(4));
    // before/after are strict.
    let before = list(filtered(&|m| m.before = Some(t0 + Duration::minutes(2)))).await;
    assert_eq!(before.data.len(), 2);
    let after = list(filtered(&|m| m.after = Some(t0 + Duration::minutes(2)))).await;
    assert_eq!(after.data.len(), 3);
    let both = list(filtered(&|m| {
        m.after = Some(t0);
        m.before = Some(t0 + Duration::minutes(5));
        m.event_types = Some(vec!["odd".into()]);
    }))
    .await;
    assert_eq!(both.data.len(), 2);
    drop(store);
    db.drop_db().await;
}

// --- tokens ----------------------------------------------------------------------------

#[tokio::test]
async fn tokens_are_found_by_hash_until_they_expire() {
    let Some((db, store)) = open("tokens").await else {
        return;
    };
    let a = store.create_app(app(None)).await.unwrap();
    assert!(!store.has_admin_token().await.unwrap());
    let now = crate::now();
    let scoped = ApiToken {
        hash: [1; 32],
        app_id: Some(a.id.clone()),
        read_only: true,
        expires_at: Some(now + Duration::hours(1)),
        created_at: now,
        ..Default::default()
    };
    store.insert_token(scoped.clone()).await.unwrap();
    assert!(!store.has_admin_token().await.unwrap(), "app-scoped only");
    assert_eq!(
        store.find_token(&[1; 32], now).await.unwrap(),
        Some(scoped.clone())
    );
    assert_eq!(store.find_token(&[2; 32], now).await.unwrap(), None);
    // Expired at its expiry time, not after.
    let at = scoped.expires_at.unwrap();
    assert!(store
        .find_token(&[1; 32], at - Duration::milliseconds(1))
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.find_token(&[1; 32], at).await.unwrap(), None);
    match store.insert_token(scoped.clone()).await {
        Err(StoreError::Conflict(t)) => assert_eq!(t, "token already exists"),
        other => panic!("{other:?}"),
    }
    let admin = ApiToken {
        hash: [2; 32],
        app_id: None,
        read_only: false,
        expires_at: None,
        created_at: now,
        ..Default::default()
    };
    store.insert_token(admin.clone()).await.unwrap();
    assert!(store.has_admin_token().await.unwrap());
    assert_eq!(
        store
            .find_token(&[2; 32], now + Duration::days(3650))
            .await
            .unwrap(),
        Some(admin)
    );
    drop(store);
    db.drop_db().await;
}

// --- idempotency -----------------------------------------------------------------------

#[tokio::test]
async fn idempotency_keys_claim_replay_take_over_and_purge() {
    let Some((db, store)) = open("idempotency").await else {
        return;
    };
    let stale = Duration::seconds(60);
    let t0 = crate::now();
    let begin = |scope: &'static str, key: &'static str, now: DateTime<Utc>| {
        let store = &store;
        async move {
            store
                .idempotency_begin(scope, key, now, stale)
                .await
                .unwrap()
        }
    };
    assert_eq!(begin("s", "k", t0).await, IdempotencyState::Claimed);
    assert_eq!(begin("s", "k", t0).await, IdempotencyState::InProgress);
    // Scopes are apart.
    assert_eq!(begin("s2", "k", t0).await, IdempotencyState::Claimed);
    let response = StoredResponse {
        status: 201,
        body: b"{\"id\":\"x\"}".to_vec(),
    };
    store
        .idempotency_finish("s", "k", response.clone())
        .await
        .unwrap();
    assert_eq!(
        begin("s", "k", t0).await,
        IdempotencyState::Done(response.clone())
    );
    // A finished key is replayed however old it is, and abandoning it does nothing.
    store.idempotency_abandon("s", "k").await.unwrap();
    assert_eq!(
        begin("s", "k", t0 + Duration::days(1)).await,
        IdempotencyState::Done(response.clone())
    );

    // A pending claim is taken over once stale, not before.
    assert_eq!(begin("s", "p", t0).await, IdempotencyState::Claimed);
    assert_eq!(
        begin("s", "p", t0 + stale - Duration::milliseconds(1)).await,
        IdempotencyState::InProgress
    );
    assert_eq!(begin("s", "p", t0 + stale).await, IdempotencyState::Claimed);
    // ... and the takeover is a fresh claim, stale only from its own start.
    assert_eq!(
        begin("s", "p", t0 + stale + Duration::seconds(1)).await,
        IdempotencyState::InProgress
    );
    // An abandoned claim can be claimed again at once.
    store.idempotency_abandon("s", "p").await.unwrap();
    assert_eq!(
        begin("s", "p", t0 + stale + Duration::seconds(2)).await,
        IdempotencyState::Claimed
    );

    // Purge: everything created before the cutoff.
    let purged = store
        .idempotency_purge(t0 + Duration::milliseconds(1))
        .await
        .unwrap();
    assert_eq!(purged, 2, "s/k and s2/k");
    assert_eq!(begin("s", "k", t0).await, IdempotencyState::Claimed);
    assert_eq!(store.idempotency_purge(t0).await.unwrap(), 0);
    drop(store);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_claim_it_once() {
    let Some((db, store)) = open("idempotency_concurrent").await else {
        return;
    };
    let store = Arc::new(store);
    let now = crate::now();
    for round in 0..5 {
        let key = format!("k{round}");
        let mut tasks = vec![];
        for _ in 0..8 {
            let (store, key) = (store.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .idempotency_begin("s", &key, now, Duration::seconds(60))
                    .await
                    .unwrap()
            }));
        }
        let mut claimed = 0;
        for t in tasks {
            match t.await.unwrap() {
                IdempotencyState::Claimed => claimed += 1,
                IdempotencyState::InProgress => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(claimed, 1, "round {round}");
    }
    // Stale takeovers race the same way: one wins.
    let later = now + Duration::seconds(61);
    let mut tasks = vec![];
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .idempotency_begin("s", "k0", later, Duration::seconds(60))
                .await
                .unwrap()
        }));
    }
    let mut claimed = 0;
    for t in tasks {
        if t.await.unwrap() == IdempotencyState::Claimed {
            claimed += 1;
        }
    }
    assert_eq!(claimed, 1);
    drop(store);
    db.drop_db().await;
}

// --- the rest, and failures ------------------------------------------------------------

#[tokio::test]
async fn a_lost_database_is_unavailable_naming_the_cause() {
    let Some((db, store)) = open("lost_database").await else {
        return;
    };
    store.create_app(app(None)).await.unwrap();
    // The database goes away under the pool (its connections are terminated).
    let admin = admin_client(&std::env::var("HOOKLINE_TEST_POSTGRES_URL").unwrap()).await;
    admin
        .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", db.name))
        .await
        .unwrap();
    let err = store.get_app("x").await.unwrap_err();
    let StoreError::Unavailable(text) = &err else {
        panic!("{err:?}")
    };
    // The pool notices the closed connection and cannot open another, or the statement
    // meets the closed connection: either way "try again later", with the cause named.
    assert!(
        text.starts_with("cannot get a PostgreSQL connection: database ")
            && text.ends_with("does not exist (SQLSTATE 3D000)")
            || text.starts_with("PostgreSQL: the connection was lost"),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
    drop(store);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_race_endpoint_deletes_without_failing() {
    let Some((db, one)) = open("messages_race_deletes").await else {
        return;
    };
    let two = PgStore::connect(&db.url, 4, &crate::sealing::test_key())
        .await
        .unwrap();
    let a = one.create_app(app(None)).await.unwrap();
    let (one, two) = (Arc::new(one), Arc::new(two));
    // One process churns the application's endpoints while the other sends messages:
    // an endpoint deleted mid-fan-out is skipped or waits, never fails the message.
    let churn = {
        let (store, app_id) = (two.clone(), a.id.clone());
        tokio::spawn(async move {
            for _ in 0..40 {
                let ep = store
                    .create_endpoint(endpoint(&app_id, None))
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
                store.delete_endpoint(&app_id, &ep.id).await.unwrap();
            }
        })
    };
    let mut sent = vec![];
    for _ in 0..4 {
        let (store, app_id) = (one.clone(), a.id.clone());
        sent.push(tokio::spawn(async move {
            for _ in 0..25 {
                store.create_message(message(&app_id, "t")).await.unwrap();
            }
        }));
    }
    for t in sent {
        t.await.unwrap();
    }
    churn.await.unwrap();
    assert_eq!(count(&one, "SELECT count(*) FROM messages").await, 100);
    assert_eq!(count(&one, "SELECT count(*) FROM deliveries").await, 0);
    drop((one, two));
    db.drop_db().await;
}

/// A process killed mid-attempt and started again on the same data dir gets its
/// deliveries back at once; another node's leases are left to expire.
#[tokio::test]
async fn a_restarted_node_takes_back_its_own_leases_only() {
    let Some((db, mut first)) = open("a_restarted_node_takes_back_its_own_leases_only").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    assert_eq!(first.claim_node(dir.path()).await.unwrap(), 0);
    let mut other = PgStore::connect(&db.url, 2, &crate::sealing::test_key())
        .await
        .unwrap();
    other.claim_node(other_dir.path()).await.unwrap();
    // A second process on the same data dir is refused: it would be the same node.
    let mut twin = PgStore::connect(&db.url, 2, &crate::sealing::test_key())
        .await
        .unwrap();
    let err = twin.claim_node(dir.path()).await.unwrap_err();
    assert!(err.contains("another hookline process"), "{err}");

    let a = first
        .create_app(crate::conformance::app(None))
        .await
        .unwrap();
    first
        .create_endpoint(crate::conformance::endpoint(&a.id, 8))
        .await
        .unwrap();
    for _ in 0..2 {
        first
            .create_message(crate::conformance::message(&a.id))
            .await
            .unwrap();
    }
    let lease = Duration::seconds(120);
    let mine = first
        .claim_deliveries(Utc::now(), lease, 1, 1, &[])
        .await
        .unwrap();
    let theirs = other
        .claim_deliveries(Utc::now(), lease, 1, 1, &[])
        .await
        .unwrap();
    assert_eq!((mine.len(), theirs.len()), (1, 1));
    assert!(mine[0].lease_token.starts_with(&format!("{}.", first.node)));
    // The first process dies (its store and lock go) and starts again.
    drop(first);
    drop(twin);
    let mut again = PgStore::connect(&db.url, 2, &crate::sealing::test_key())
        .await
        .unwrap();
    assert_eq!(again.claim_node(dir.path()).await.unwrap(), 1);
    let got = again
        .claim_deliveries(Utc::now(), lease, 10, 10, &[])
        .await
        .unwrap();
    assert_eq!(
        got.len(),
        1,
        "its own delivery is due again, the other node's is not"
    );
    assert_eq!(got[0].id, mine[0].id);
    drop((again, other));
    db.drop_db().await;
}

/// Concurrent creates and reports share transactions: the conformance suite's concurrent
/// scenario, checked to have gone through batches (the suite cannot see how).
#[tokio::test]
async fn concurrent_writes_are_committed_in_batches() {
    let Some((db, store)) = open("concurrent_writes_are_committed_in_batches").await else {
        return;
    };
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    crate::conformance::concurrent_creates_fan_out_each_message_and_fail_alone(shared.clone())
        .await;
    // Its creates' batch held a duplicate eventId, so it went one write at a time; its
    // 83 reports, queued at once, went together.
    assert_eq!(store.batched_writes(), 83);
    // Creates that all succeed go together too.
    let a = store.create_app(app(None)).await.unwrap();
    store.create_endpoint(endpoint(&a.id, None)).await.unwrap();
    create_at_once(&store, &a.id, 20).await;
    assert_eq!(store.batched_writes(), 83 + 20);
    drop(store);
    db.drop_db().await;
}

/// Waits up to `secs` for `f` to hold, polling.
async fn eventually<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

/// Whether `store` answers lookups of the application `key` from memory (within 10 s):
/// a name written without a notice (triggers off for that session) goes unseen.
async fn cached(store: &PgStore, sql: &tokio_postgres::Client, key: &str) -> bool {
    let mut round = 0;
    eventually(10, || {
        round += 1;
        async move {
            let before = store.get_app(key).await.unwrap().unwrap().name;
            sql.execute("SET session_replication_role = replica", &[])
                .await
                .unwrap();
            sql.execute(
                "UPDATE applications SET name = $2 WHERE id = $1 OR uid = $1",
                &[&key, &format!("silent {round}")],
            )
            .await
            .unwrap();
            sql.execute("SET session_replication_role = origin", &[])
                .await
                .unwrap();
            store.get_app(key).await.unwrap().unwrap().name == before
        }
    })
    .await
}

/// Applications and event types are cached in memory, and a change made by another
/// process (or by hand in SQL) reaches every process's cache through the database's
/// notices, even one made while a process had lost its listening connection.
#[tokio::test]
async fn cached_lookups_follow_changes_made_elsewhere() {
    let Some((db, here)) = open("cached_lookups_follow_changes_made_elsewhere").await else {
        return;
    };
    let elsewhere = PgStore::connect(&db.url, 2, &crate::sealing::test_key())
        .await
        .expect("connect");
    let sql = admin_client(&db.url).await;
    let a = here.create_app(app(Some("acme"))).await.unwrap();
    let et = EventType {
        description: "before".into(),
        ..event_type("t")
    };
    here.create_event_type(et).await.unwrap();
    let listening = || async {
        // The listener is up once a lookup is kept: a write without a notice (triggers
        // off for that session) then goes unseen.
        here.get_app("acme").await.unwrap().is_some()
    };
    assert!(eventually(10, listening).await);

    // It is cached: a write that sends no notice is not seen.
    let name_of =
        |store: PgStore| async move { store.get_app("acme").await.unwrap().map(|a| a.name) };
    assert!(
        cached(&here, &sql, "acme").await,
        "a lookup is answered from memory"
    );
    sql.batch_execute("UPDATE applications SET name = 'n' WHERE uid = 'acme'")
        .await
        .unwrap();

    // Another process's write is seen, by notice.
    let renamed = elsewhere
        .update_app(
            &a.id,
            Box::new(|a| {
                a.name = "renamed".into();
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "renamed");
    assert!(
        eventually(5, || async {
            name_of(here.clone()).await.as_deref() == Some("renamed")
        })
        .await,
        "another process's change reaches the cache"
    );
    elsewhere
        .update_event_type(
            "t",
            Box::new(|e| {
                e.description = "after".into();
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert!(
        eventually(5, || async {
            here.get_event_type("t").await.unwrap().unwrap().description == "after"
        })
        .await
    );
    // A change by hand in SQL too, and a delete.
    sql.batch_execute("UPDATE applications SET name = 'by hand' WHERE uid = 'acme'")
        .await
        .unwrap();
    assert!(
        eventually(5, || async {
            name_of(here.clone()).await.as_deref() == Some("by hand")
        })
        .await
    );
    elsewhere.delete_app(&a.id).await.unwrap();
    assert!(eventually(5, || async { name_of(here.clone()).await.is_none() }).await);

    // The listening connections are cut; a change while they are down is not missed.
    let b = here.create_app(app(Some("bravo"))).await.unwrap();
    assert_eq!(here.get_app("bravo").await.unwrap().unwrap().name, "n");
    sql.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%';
         UPDATE applications SET name = 'while down' WHERE uid = 'bravo';",
    )
    .await
    .unwrap();
    assert!(
        eventually(10, || async {
            here.get_app("bravo").await.unwrap().unwrap().name == "while down"
        })
        .await,
        "a change made while nobody listened is seen once listening again"
    );
    // And caching resumes.
    assert!(cached(&here, &sql, &b.id).await, "cached again");
    drop((here, elsewhere));
    db.drop_db().await;
}

/// A batch whose fan-outs write more deliveries than one statement takes: every one is
/// written once, and each handed-over delivery learns its own id.
#[tokio::test]
async fn a_batch_of_large_fan_outs_writes_in_chunks() {
    let Some((db, store)) = open("a_batch_of_large_fan_outs_writes_in_chunks").await else {
        return;
    };
    let rec = crate::conformance::attach(&store);
    let a = store.create_app(app(None)).await.unwrap();
    for _ in 0..50 {
        let mut ep = endpoint(&a.id, None);
        ep.settings.max_concurrency = Some(1000);
        store.create_endpoint(ep).await.unwrap();
    }
    create_at_once(&store, &a.id, 60).await;
    assert_eq!(store.batched_writes(), 60, "one batch of 3 000 deliveries");
    let taken = rec.taken.lock().unwrap().clone();
    assert_eq!(taken.len(), 3000);
    let client = admin_client(&db.url).await;
    for d in &taken {
        let row = client
            .query_one(
                "SELECT msg_id, endpoint_id, status FROM deliveries WHERE id = $1",
                &[&d.id],
            )
            .await
            .unwrap();
        let (msg, ep, status): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            (msg.as_str(), ep.as_str()),
            (d.message.id.as_str(), d.endpoint.id.as_str())
        );
        assert_eq!(status, "sending");
    }
    drop(store);
    db.drop_db().await;
}

/// A report sent again (its first commit's fate unknown, the connection lost) logs its
/// attempt once and finds its lease gone, alone or in a batch.
#[tokio::test]
async fn a_report_sent_twice_is_logged_once() {
    let Some((db, store)) = open("a_report_sent_twice_is_logged_once").await else {
        return;
    };
    let rec = crate::conformance::attach(&store);
    let a = store.create_app(app(None)).await.unwrap();
    store.create_endpoint(endpoint(&a.id, None)).await.unwrap();
    for _ in 0..3 {
        store.create_message(message(&a.id, "t")).await.unwrap();
    }
    let taken = rec.taken.lock().unwrap().clone();
    assert_eq!(taken.len(), 3);
    // The first alone, then the three together, the first again among them.
    let report = |d: &ClaimedDelivery| crate::conformance::report_for(d, NextStep::Succeeded);
    let first = report(&taken[0]);
    let out = store
        .report_attempt(taken[0].id, &taken[0].lease_token, first.clone())
        .await
        .unwrap();
    assert_eq!(out.applied, Applied::Yes);
    let again: Vec<_> = [(taken[0].clone(), first)]
        .into_iter()
        .chain(taken[1..].iter().map(|d| (d.clone(), report(d))))
        .map(|(d, r)| {
            let store = store.clone();
            tokio::spawn(async move { store.report_attempt(d.id, &d.lease_token, r).await })
        })
        .collect();
    let mut applied = Vec::new();
    for t in again {
        applied.push(t.await.unwrap().unwrap().applied);
    }
    assert_eq!(applied, [Applied::LeaseLost, Applied::Yes, Applied::Yes]);
    assert_eq!(
        count(&store, "SELECT count(*) FROM attempts").await,
        3,
        "each attempt logged once"
    );
    drop(store);
    db.drop_db().await;
}

/// Deliveries queued by one process wake the workers of another: its intake hears
/// `hookline_work` at the commit.
#[tokio::test]
async fn work_queued_by_another_process_wakes_this_one() {
    let Some((db, here)) = open("work_queued_by_another_process_wakes_this_one").await else {
        return;
    };
    let elsewhere = PgStore::connect(&db.url, 2, &crate::sealing::test_key())
        .await
        .expect("connect");
    let rec = crate::conformance::attach(&here);
    let a = elsewhere.create_app(app(None)).await.unwrap();
    elsewhere
        .create_endpoint(endpoint(&a.id, None))
        .await
        .unwrap();
    // Once the listener is up (a cached lookup shows it), a create elsewhere is heard.
    assert!(eventually(10, || async { here.lookups.apps().is_some() }).await);
    let before = *rec.queued.lock().unwrap();
    elsewhere.create_message(message(&a.id, "t")).await.unwrap();
    assert!(
        eventually(5, || async { *rec.queued.lock().unwrap() > before }).await,
        "the other process's queued work was not heard"
    );
    drop((here, elsewhere));
    db.drop_db().await;
}

/// `maxConcurrency` holds across processes: what another process has leased counts,
/// for claims and for fresh deliveries handed over alike.
#[tokio::test]
async fn concurrency_limits_count_every_process_leases() {
    let Some((db, here)) = open("concurrency_limits_count_every_process_leases").await else {
        return;
    };
    let elsewhere = PgStore::connect(&db.url, 2, &crate::sealing::test_key())
        .await
        .expect("connect");
    let a = here.create_app(app(None)).await.unwrap();
    let mut ep = endpoint(&a.id, None);
    ep.settings.max_concurrency = Some(2);
    let ep = here.create_endpoint(ep).await.unwrap();
    for _ in 0..4 {
        here.create_message(message(&a.id, "t")).await.unwrap();
    }
    let lease = Duration::seconds(30);
    let now = Utc::now();
    // The other process takes both slots; this one, with nothing of its own in flight,
    // gets none.
    assert_eq!(
        elsewhere
            .claim_deliveries(now, lease, 10, 10, &[])
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(here
        .claim_deliveries(now, lease, 10, 10, &[])
        .await
        .unwrap()
        .is_empty());
    // A fresh delivery is handed to this process's intake only while its endpoint has a
    // slot free across processes.
    let rec = crate::conformance::attach(&here);
    let b = here.create_app(app(None)).await.unwrap();
    let mut free = endpoint(&b.id, None);
    free.settings.max_concurrency = Some(1);
    let free = here.create_endpoint(free).await.unwrap();
    here.create_message(message(&b.id, "t")).await.unwrap();
    assert_eq!(
        rec.taken.lock().unwrap().len(),
        1,
        "a free endpoint's is handed over"
    );
    let held = elsewhere
        .claim_deliveries(Utc::now(), lease, 10, 10, &[])
        .await
        .unwrap();
    assert!(held.is_empty(), "{held:?}");
    // `free` now has one leased (by this process): a second message waits.
    here.create_message(message(&b.id, "t")).await.unwrap();
    assert_eq!(rec.taken.lock().unwrap().len(), 1);
    let _ = (ep, free);
    drop((here, elsewhere));
    db.drop_db().await;
}

/// `throttleRate` holds across processes: the claim books each paced delivery a start
/// time in the database, so two processes claiming at once get one schedule between
/// them, never two; an application's rate is shared by its endpoints; and an endpoint
/// booked a second ahead is not due again (for any process) until its pacing has room.
#[tokio::test]
async fn throttle_rate_paces_every_process_claims() {
    let Some((db, here)) = open("throttle_rate_paces_every_process_claims").await else {
        return;
    };
    let elsewhere = PgStore::connect(&db.url, 2, &crate::sealing::test_key())
        .await
        .expect("connect");
    let a = here.create_app(app(None)).await.unwrap();
    let mut ep = endpoint(&a.id, None);
    ep.settings.throttle_rate = Some(10);
    ep.settings.max_concurrency = Some(100);
    here.create_endpoint(ep).await.unwrap();
    for _ in 0..40 {
        here.create_message(message(&a.id, "t")).await.unwrap();
    }
    let lease = Duration::seconds(30);
    // Ahead of the clock: a claim books from the later of its `now` and the time it
    // holds the pacing rows.
    let now = crate::now() + Duration::seconds(1);
    let starts = |claimed: &[ClaimedDelivery]| -> Vec<i64> {
        claimed
            .iter()
            .map(|d| (d.start_at.expect("booked by the store") - now).num_milliseconds())
            .collect()
    };
    // A second's worth, 100 ms apart.
    let first = elsewhere
        .claim_deliveries(now, lease, 100, 10, &[])
        .await
        .unwrap();
    assert_eq!(starts(&first), (0..10).map(|i| i * 100).collect::<Vec<_>>());
    // The other process, at the same instant, finds that second booked...
    let none = here
        .claim_deliveries(now, lease, 100, 10, &[])
        .await
        .unwrap();
    assert!(none.is_empty(), "{:?}", starts(&none));
    // ...and the endpoint not due (for either) before its pacing has room again.
    let due = here
        .next_due(&[], true)
        .await
        .unwrap()
        .expect("work is queued");
    assert!(
        due >= now + Duration::milliseconds(100),
        "due again at {due}, {} ms after the claim",
        (due - now).num_milliseconds()
    );
    // Half a second on, half a second more is booked, right after the first process's
    // (starts are times: counted from the first claim, 1 000 ms on).
    let later = now + Duration::milliseconds(500);
    let second = here
        .claim_deliveries(later, lease, 100, 10, &[])
        .await
        .unwrap();
    assert_eq!(
        starts(&second),
        (0..5).map(|i| 1000 + i * 100).collect::<Vec<_>>()
    );

    // An application's rate is shared by its endpoints (unpaced themselves), across
    // processes.
    let mut b = app(None);
    b.throttle_rate = Some(4);
    let b = here.create_app(b).await.unwrap();
    for _ in 0..2 {
        here.create_endpoint(endpoint(&b.id, None)).await.unwrap();
    }
    for _ in 0..10 {
        here.create_message(message(&b.id, "t")).await.unwrap();
    }
    let now = crate::now() + Duration::seconds(1);
    let busy = vec![Busy::full(ep_id_of(&first))];
    let of_b = elsewhere
        .claim_deliveries(now, lease, 100, 10, &busy)
        .await
        .unwrap();
    assert_eq!(of_b.len(), 4, "a second's worth of the application's rate");
    let of_b_starts: Vec<i64> = of_b
        .iter()
        .map(|d| (d.start_at.expect("booked by the store") - now).num_milliseconds())
        .collect();
    assert_eq!(of_b_starts, vec![0, 250, 500, 750]);
    assert!(here
        .claim_deliveries(now, lease, 100, 10, &busy)
        .await
        .unwrap()
        .is_empty());
    drop((here, elsewhere));
    db.drop_db().await;
}

fn ep_id_of(claimed: &[ClaimedDelivery]) -> String {
    claimed[0].endpoint.id.clone()
}

/// Each process counts the hookline processes on its database (by their listening
/// connections), which is how a process learns it is not alone and runs one write batch
/// at a time instead of two.
#[tokio::test]
async fn processes_count_each_other() {
    let Some((db, here)) = open("processes_count_each_other").await else {
        return;
    };
    let until = |n: usize, store: &PgStore| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let store = store.clone();
        async move {
            while store.processes_on_database() != n {
                assert!(
                    std::time::Instant::now() < deadline,
                    "counted {} processes, not {n}",
                    store.processes_on_database()
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    until(1, &here).await;
    let elsewhere = PgStore::connect(&db.url, 2, &crate::sealing::test_key())
        .await
        .expect("connect");
    until(2, &elsewhere).await;
    until(2, &here).await;
    drop(elsewhere);
    until(1, &here).await;
    drop(here);
    db.drop_db().await;
}

/// Endpoints stored in the clear (by a hookline from before sealing) are sealed by the
/// first process that connects; a wrong key is refused and changes nothing; rotate-key
/// re-seals under the new key.
#[tokio::test]
async fn settings_in_the_clear_are_sealed_at_connect_and_a_wrong_key_changes_nothing() {
    use crate::sealing::{is_plain, KeySource, MainKey};
    let Some(db) = TestDb::create("settings_in_the_clear_are_sealed_at_connect").await else {
        return;
    };
    let key = KeySource::Given(MainKey::generate());
    let store = PgStore::connect(&db.url, 2, &key).await.unwrap();
    let a = store.create_app(app(Some("a"))).await.unwrap();
    let ep = store
        .create_endpoint(crate::sqlite::tests::endpoint_with_secrets(&a.id))
        .await
        .unwrap();
    drop(store);
    let client = admin_client(&db.url).await;
    let stored = || async {
        client
            .query_one("SELECT settings FROM endpoints", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    assert!(!is_plain(&stored().await));
    client
        .execute(
            "UPDATE endpoints SET settings = $1",
            &[&serde_json::to_string(&ep.settings).unwrap()],
        )
        .await
        .unwrap();
    let wrong = PgStore::connect(&db.url, 2, &KeySource::Given(MainKey::generate())).await;
    assert!(wrong.is_err_and(|e| e.contains("is not the one")));
    assert!(is_plain(&stored().await), "a refused key changed the row");

    let store = PgStore::connect(&db.url, 2, &key).await.unwrap();
    let sealed = stored().await;
    for clear in ["bmV3LXNlY3JldC0w", "b2xkLXNlY3JldC0w", "plain-header-value"] {
        assert!(!sealed.contains(clear), "{clear} in {sealed}");
    }
    let back = store.get_endpoint(&a.id, &ep.id).await.unwrap().unwrap();
    assert_eq!(back.settings, ep.settings);
    drop(store);

    let new = MainKey::generate();
    assert_eq!(
        crate::postgres::rotate_key(&db.url, &key, &new).await,
        Ok(1)
    );
    assert_ne!(stored().await, sealed);
    assert!(PgStore::connect(&db.url, 2, &key).await.is_err());
    let store = PgStore::connect(&db.url, 2, &KeySource::Given(new))
        .await
        .unwrap();
    let back = store.get_endpoint(&a.id, &ep.id).await.unwrap().unwrap();
    assert_eq!(back.settings, ep.settings);
    drop(store);
    db.drop_db().await;
}

/// Migration 9 counts the attempts already written as the write batches count new ones:
/// the rows it fills from the attempts are those the batches kept (shards added up), on
/// the same hours, minutes and duration buckets, durations spanning every bucket.
#[tokio::test]
async fn attempt_stats_filled_by_the_migration_match_those_kept_by_the_batches() {
    let Some((db, store)) = open("attempt_stats_filled_by_the_migration").await else {
        return;
    };
    let rec = crate::conformance::attach(&store);
    let a = store.create_app(app(None)).await.unwrap();
    store
        .create_endpoint(crate::conformance::endpoint(&a.id, 100))
        .await
        .unwrap();
    let t0 = Utc::now() - Duration::hours(30);
    let attempts: Vec<_> = (0..90u64)
        .map(|i| {
            let t = t0 + Duration::seconds(i as i64 * 997);
            (t, t, (1u64 << (i % 18)) + i % 5, i % 3 != 0)
        })
        .collect();
    crate::conformance::record_attempts(&store, &rec, &a.id, &attempts).await;
    let c = store.pool.get().await.unwrap();
    let table = || async {
        c.query(
            "SELECT scope, span, start, bucket, sum(succeeded)::int8, sum(failed)::int8
             FROM attempt_stats GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, i32>(1),
                r.get::<_, DateTime<Utc>>(2),
                r.get::<_, i16>(3),
                r.get::<_, i64>(4),
                r.get::<_, i64>(5),
            )
        })
        .collect::<Vec<_>>()
    };
    let kept = table().await;
    assert!(kept.len() > 80, "{}", kept.len());
    let sql = crate::postgres::MIGRATIONS
        .iter()
        .find(|m| m.name == "attempt_stats")
        .unwrap()
        .sql;
    let fill: String = sql
        .split(';')
        .filter(|s| {
            s.lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<String>()
                .trim_start()
                .starts_with("INSERT")
        })
        .map(|s| format!("{s};"))
        .collect();
    c.batch_execute(&format!("DELETE FROM attempt_stats; {fill}"))
        .await
        .unwrap();
    assert_eq!(table().await, kept);
    drop(c);
    drop(store);
    db.drop_db().await;
}
