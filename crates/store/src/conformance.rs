//! The store's conformance suite: the behaviours of the [`Store`] contract, written
//! once against `dyn Store` and run on every backend (the way River tests its drivers),
//! so a behaviour is tested once and checked twice. Backend-specific tests (SQLite's
//! group commit and WAL, PostgreSQL's connection handling) stay with their backend.
//!
//! `suite!` lists each test under the backends it runs on: `both`, or `sqlite` alone
//! while the PostgreSQL backend does not implement that part yet. PostgreSQL runs need
//! `HOOKLINE_TEST_POSTGRES_URL` (each test gets a database of its own) and are skipped,
//! saying so, without it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;

use crate::sqlite::SqliteStore;
use crate::*;

/// A store for one test, with whatever keeps it alive (its directory).
pub(crate) struct Opened {
    pub store: Arc<dyn Store>,
    _keep: Box<dyn std::any::Any + Send>,
}

pub(crate) fn open_sqlite() -> Opened {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
    Opened {
        store: Arc::new(store),
        _keep: Box::new(dir),
    }
}

/// A PostgreSQL store on a database of its own, dropped with the returned guard; `None`
/// (saying so) without `HOOKLINE_TEST_POSTGRES_URL`.
pub(crate) async fn open_postgres(test: &str) -> Option<Opened> {
    let db = crate::postgres::tests::TestDb::create(test).await?;
    let store = crate::postgres::PgStore::connect(&db.url, 4, &crate::sealing::test_key())
        .await
        .expect("open the PostgreSQL store");
    Some(Opened {
        store: Arc::new(store),
        _keep: Box::new(DropDb(Some(db))),
    })
}

/// Drops a test database when the test is done with it (from a thread of its own: the
/// test's runtime may be the one dropping it).
struct DropDb(Option<crate::postgres::tests::TestDb>);

impl Drop for DropDb {
    fn drop(&mut self) {
        if let Some(db) = self.0.take() {
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(db.drop_db());
                }
            })
            .join();
        }
    }
}

macro_rules! suite {
    (both: [$($both:ident),* $(,)?], sqlite: [$($sqlite:ident),* $(,)?] $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $both() {
                    let opened = super::open_sqlite();
                    super::$both(opened.store.clone()).await;
                }
            )*
            $(
                #[tokio::test]
                async fn $sqlite() {
                    let opened = super::open_sqlite();
                    super::$sqlite(opened.store.clone()).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $both() {
                    let Some(opened) = super::open_postgres(stringify!($both)).await else {
                        return;
                    };
                    super::$both(opened.store.clone()).await;
                }
            )*
        }
    };
}

suite! {
    both: [
        concurrent_creates_collide_alone,
        pagination_walks_forward_and_back,
        leases_guard_finishing_writes_and_expire,
        a_report_for_a_deleted_endpoint_finds_its_delivery_gone,
        full_endpoints_are_skipped_not_parked,
        claims_respect_endpoint_concurrency,
        failing_endpoints_are_claimed_one_at_a_time_within_the_room_given,
        claims_give_a_throttled_endpoint_a_second_of_work,
        a_free_endpoint_gets_its_delivery_leased_without_a_claim,
        a_handed_over_delivery_whose_worker_died_is_claimed_after_its_lease,
        refused_backlogged_and_scheduled_deliveries_queue_as_pending,
        a_create_that_fails_hands_nothing_over,
        concurrent_creates_fan_out_each_message_and_fail_alone,
        endpoints_whose_work_was_done_elsewhere_do_not_hide_due_work,
        a_report_raises_its_messages_in_its_own_transaction,
        retention_deletes_old_finished_messages_with_their_deliveries_and_attempts,
        expired_payloads_are_dropped_once_no_delivery_is_owed,
        concurrent_retention_walks_delete_each_message_once,
        managed_tokens_are_listed_touched_at_most_once_per_interval_and_revoked,
        an_endpoints_attempts_are_bucketed_by_time_with_outcomes_and_percentiles,
        messages_are_listed_by_the_state_of_their_deliveries,
        failing_endpoints_say_whether_a_delivery_is_queued,
    ],
    sqlite: [],
}

// --- attempt buckets ------------------------------------------------------------------

/// An id `new_id(prefix)` would have given at `at` (the `n` makes it unique).
pub(crate) fn id_at(prefix: &str, at: DateTime<Utc>, n: u8) -> String {
    use svix_ksuid::KsuidLike;
    let mut payload = [0u8; svix_ksuid::KsuidMs::PAYLOAD_BYTES];
    payload[0] = n;
    payload[1] = 0x5a;
    let ksuid = svix_ksuid::KsuidMs::from_millis(Some(at.timestamp_millis()), Some(&payload));
    format!("{prefix}_{}", ksuid.to_base62())
}

/// Creates one message per `(started, id made at, duration ms, succeeded)` for the
/// application's endpoints and reports the attempts so.
pub(crate) async fn record_attempts(
    store: &dyn Store,
    rec: &Recorder,
    app_id: &str,
    attempts: &[(DateTime<Utc>, DateTime<Utc>, u64, bool)],
) {
    // All handed over while the endpoint is healthy (a failing one takes one at a time).
    for _ in attempts {
        store.create_message(message(app_id)).await.unwrap();
    }
    let handed: Vec<ClaimedDelivery> = rec.taken.lock().unwrap().drain(..).collect();
    assert_eq!(handed.len(), attempts.len());
    for (n, (d, (started, made, duration, ok))) in handed.iter().zip(attempts).enumerate() {
        let next = if *ok {
            NextStep::Succeeded
        } else {
            NextStep::Failed
        };
        let mut r = report_for(d, next);
        r.attempt.id = id_at("atmpt", *made, n as u8);
        r.attempt.attempted_at = *started;
        r.attempt.duration_ms = *duration;
        r.attempt.succeeded = *ok;
        store.report_attempt(d.id, &d.lease_token, r).await.unwrap();
    }
}

async fn an_endpoints_attempts_are_bucketed_by_time_with_outcomes_and_percentiles(
    store: Arc<dyn Store>,
) {
    let rec = attach(store.as_ref());
    let a = store.create_app(app(None)).await.unwrap();
    let ep = store.create_endpoint(endpoint(&a.id, 100)).await.unwrap();
    let other_app = store.create_app(app(None)).await.unwrap();
    store
        .create_endpoint(endpoint(&other_app.id, 100))
        .await
        .unwrap();
    let hour = chrono::Duration::hours(1);
    let min = chrono::Duration::minutes;
    // Whole hours: an endpoint's attempts are counted per hour.
    let until = crate::stats::floor(Utc::now(), 3600) + hour;
    let since = until - hour * 3;
    let at = |t: DateTime<Utc>, ms: u64, ok: bool| (t, t, ms, ok);
    record_attempts(
        store.as_ref(),
        &rec,
        &a.id,
        &[
            // Bucket 0: five attempts, one failed.
            at(since + min(10), 30, true),
            at(since + min(11), 10, true),
            at(since + min(12), 500, false),
            at(since + min(13), 40, true),
            at(since, 20, true),
            // Bucket 2: one, and one whose id was made after the window ended (it
            // finished late): it started inside, so it counts.
            at(since + hour * 2 + min(5), 7, true),
            (
                until - min(1),
                until + chrono::Duration::seconds(50),
                30_000,
                true,
            ),
            // Outside the window: before it, and at its end.
            at(since - min(1), 1, false),
            at(until, 1, false),
        ],
    )
    .await;
    // Another application's endpoint, inside the window: not counted.
    record_attempts(
        store.as_ref(),
        &rec,
        &other_app.id,
        &[at(since + min(20), 5, false)],
    )
    .await;

    let buckets = store
        .endpoint_attempt_buckets(&a.id, &ep.id, since, until, hour)
        .await
        .unwrap();
    assert_eq!(
        buckets,
        [
            AttemptBucket {
                index: 0,
                succeeded: 4,
                failed: 1,
                // Sorted: 10 20 30 40 500; ranks 3 and 5, read as the tops of their
                // duration buckets (28-31 and 448-511 ms).
                p50_ms: 31,
                p99_ms: 511,
            },
            AttemptBucket {
                index: 2,
                succeeded: 2,
                failed: 0,
                p50_ms: 7,
                p99_ms: 32_767,
            },
        ]
    );
    // Days from the same hours; another application's id: nothing.
    let day = store
        .endpoint_attempt_buckets(&a.id, &ep.id, since, until, hour * 24)
        .await
        .unwrap();
    assert_eq!(
        day.iter()
            .map(|b| (b.index, b.succeeded, b.failed))
            .collect::<Vec<_>>(),
        [(0, 6, 1)]
    );
    assert!(store
        .endpoint_attempt_buckets(&other_app.id, &ep.id, since, until, hour)
        .await
        .unwrap()
        .is_empty());

    // Every endpoint's: the other application's failed attempt joins bucket 0 (ranks 3
    // and 6 of 5 10 20 30 40 500).
    let all = store.attempt_buckets(since, until, hour).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|b| (b.index, b.succeeded, b.failed, b.p50_ms, b.p99_ms))
            .collect::<Vec<_>>(),
        [(0, 4, 2, 23, 511), (2, 2, 0, 7, 32_767)]
    );
    // Every endpoint's by minute, over the first quarter hour.
    let minutes = store
        .attempt_buckets(since, since + min(15), min(1))
        .await
        .unwrap();
    let indexes: Vec<u32> = minutes.iter().map(|b| b.index).collect();
    assert_eq!(indexes, [0, 10, 11, 12, 13]);
    assert_eq!(minutes[3].failed, 1);
    // Windows that start between whole hours read minutes: the same counts.
    let shifted = store
        .attempt_buckets(since + min(1), until, hour)
        .await
        .unwrap();
    assert_eq!(
        shifted.iter().map(|b| b.succeeded + b.failed).sum::<u64>(),
        all.iter().map(|b| b.succeeded + b.failed).sum::<u64>() - 1
    );

    // Failing endpoints: those whose newest attempt failed (the first endpoint's last
    // reported attempt was the one at `until`, a failure), longest failing first.
    let (failing, count) = store.failing_endpoints(10).await.unwrap();
    assert_eq!(count, 2);
    let since_of: Vec<_> = failing
        .iter()
        .map(|e| e.endpoint.failing_since.unwrap())
        .collect();
    assert!(since_of.windows(2).all(|w| w[0] <= w[1]), "{since_of:?}");
    let (one, count) = store.failing_endpoints(1).await.unwrap();
    assert_eq!((one.len(), count), (1, 2));
    assert_eq!(one[0].endpoint.id, failing[0].endpoint.id);

    // Retention: the rows of hours and minutes before the cutoff go, a batch at a time.
    let one = store.prune_attempt_stats(since + hour, 1).await.unwrap();
    assert_eq!((one.stats, one.examined), (1, 1));
    let rest = store.prune_attempt_stats(since + hour, 1000).await.unwrap();
    assert!(rest.stats > 1, "{rest:?}");
    assert_eq!(
        store
            .prune_attempt_stats(since + hour, 1000)
            .await
            .unwrap()
            .stats,
        0
    );
    let kept = store
        .endpoint_attempt_buckets(&a.id, &ep.id, since, until, hour)
        .await
        .unwrap();
    assert_eq!(kept.iter().map(|b| b.index).collect::<Vec<_>>(), [2]);
    // An endpoint deleted takes its rows; every endpoint's rows keep its attempts.
    store.delete_endpoint(&a.id, &ep.id).await.unwrap();
    let again = store.create_endpoint(Endpoint {
        id: ep.id.clone(),
        ..endpoint(&a.id, 100)
    });
    again.await.unwrap();
    assert!(store
        .endpoint_attempt_buckets(&a.id, &ep.id, since, until, hour)
        .await
        .unwrap()
        .is_empty());
    let all = store.attempt_buckets(since, until, hour).await.unwrap();
    assert_eq!(all.iter().map(|b| b.succeeded).sum::<u64>(), 2);
}

// --- tokens --------------------------------------------------------------------------

async fn managed_tokens_are_listed_touched_at_most_once_per_interval_and_revoked(
    store: Arc<dyn Store>,
) {
    use chrono::Duration;
    let a = store.create_app(app(None)).await.unwrap();
    // Whole milliseconds: both backends keep times to the millisecond.
    let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    let named = ApiToken {
        hash: [7; 32],
        app_id: None,
        read_only: true,
        expires_at: Some(now + Duration::days(30)),
        created_at: now - Duration::seconds(2),
        name: Some("ci deploys".into()),
        prefix: Some("sk_AbCdEf".into()),
        last_used_at: None,
    };
    let scoped = ApiToken {
        hash: [9; 32],
        app_id: Some(a.id.clone()),
        created_at: now - Duration::seconds(1),
        name: Some("portal".into()),
        ..Default::default()
    };
    let expired = ApiToken {
        hash: [8; 32],
        expires_at: Some(now - Duration::seconds(1)),
        created_at: now,
        ..Default::default()
    };
    for t in [&named, &scoped, &expired] {
        store.insert_token(t.clone()).await.unwrap();
    }
    // Oldest first, every field kept, the expired one left out.
    assert_eq!(
        store.list_tokens(now).await.unwrap(),
        vec![named.clone(), scoped.clone()]
    );
    assert_eq!(
        store.find_token(&named.hash, now).await.unwrap(),
        Some(named.clone())
    );
    assert_eq!(store.find_token(&expired.hash, now).await.unwrap(), None);
    // The expired one is deleted by the purge (once); the others stay.
    assert_eq!(store.purge_expired_tokens(now).await.unwrap(), 1);
    assert_eq!(store.purge_expired_tokens(now).await.unwrap(), 0);
    assert_eq!(
        store.list_tokens(now - Duration::days(1)).await.unwrap(),
        vec![named.clone(), scoped.clone()]
    );

    // The first use is recorded; another within the interval is not; one after it is.
    let minute = Duration::seconds(60);
    store.touch_token(&named.hash, now, minute).await.unwrap();
    let used = |t: Option<ApiToken>| t.unwrap().last_used_at;
    assert_eq!(
        used(store.find_token(&named.hash, now).await.unwrap()),
        Some(now)
    );
    let soon = now + Duration::seconds(30);
    store.touch_token(&named.hash, soon, minute).await.unwrap();
    assert_eq!(
        used(store.find_token(&named.hash, now).await.unwrap()),
        Some(now)
    );
    let later = now + Duration::seconds(61);
    store.touch_token(&named.hash, later, minute).await.unwrap();
    assert_eq!(
        used(store.find_token(&named.hash, now).await.unwrap()),
        Some(later)
    );
    // Touching one token leaves the others alone.
    assert_eq!(
        used(store.find_token(&scoped.hash, now).await.unwrap()),
        None
    );

    // Revoked by its id: gone at once; the other stays; a second revoke is NotFound.
    let id = parse_token_id(&named.id()).expect("a token id parses");
    store.revoke_token(&id).await.unwrap();
    assert_eq!(store.find_token(&named.hash, now).await.unwrap(), None);
    assert!(store.find_token(&scoped.hash, now).await.unwrap().is_some());
    assert!(matches!(
        store.revoke_token(&id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.list_tokens(now).await.unwrap(), vec![scoped.clone()]);
    // An id whose bytes are a prefix of no hash revokes nothing.
    assert!(matches!(
        store.revoke_token(&[0xab; TOKEN_ID_BYTES]).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.find_token(&scoped.hash, now).await.unwrap().is_some());
}

// --- fixtures ------------------------------------------------------------------------

pub(crate) fn app(uid: Option<&str>) -> Application {
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

pub(crate) fn endpoint(app_id: &str, max_concurrency: u32) -> Endpoint {
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

pub(crate) fn message(app_id: &str) -> Message {
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
        payload_expires_at: None,
    }
}

pub(crate) fn report_for(d: &ClaimedDelivery, next: NextStep) -> AttemptReport {
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
        raise: None,
    }
}

// --- an intake that records what the store hands it -----------------------------------

/// Records what the store asks and hands over; says yes to reservations while `open`.
#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) open: AtomicBool,
    pub(crate) reserved: Mutex<Vec<String>>,
    /// Says yes to reservations behind queued work while set (and `open`).
    pub(crate) open_behind: AtomicBool,
    pub(crate) reserved_behind: Mutex<Vec<String>>,
    pub(crate) taken: Mutex<Vec<ClaimedDelivery>>,
    pub(crate) cancelled: Mutex<Vec<String>>,
    pub(crate) queued: Mutex<usize>,
}

impl Intake for Recorder {
    fn lease(&self) -> chrono::Duration {
        chrono::Duration::seconds(30)
    }
    fn reserve(&self, endpoint: &Endpoint, _app_throttle_rate: Option<u32>) -> bool {
        self.reserved.lock().unwrap().push(endpoint.id.clone());
        self.open.load(Ordering::SeqCst)
    }
    fn reserve_behind(&self, endpoint: &Endpoint, _app_throttle_rate: Option<u32>) -> bool {
        self.reserved_behind
            .lock()
            .unwrap()
            .push(endpoint.id.clone());
        self.open.load(Ordering::SeqCst) && self.open_behind.load(Ordering::SeqCst)
    }
    fn take(&self, claimed: Vec<ClaimedDelivery>) {
        self.taken.lock().unwrap().extend(claimed);
    }
    fn cancel(&self, endpoint_ids: Vec<String>) {
        self.cancelled.lock().unwrap().extend(endpoint_ids);
    }
    fn queued(&self) {
        *self.queued.lock().unwrap() += 1;
    }
}

pub(crate) fn attach(store: &dyn Store) -> Arc<Recorder> {
    let rec = Arc::new(Recorder::default());
    rec.open.store(true, Ordering::SeqCst);
    let intake: Arc<dyn Intake> = rec.clone();
    store.attach_intake(Arc::downgrade(&intake));
    rec
}

pub(crate) async fn status_of(
    store: &dyn Store,
    app_id: &str,
    msg_id: &str,
) -> Vec<DeliveryStatus> {
    let q = ListQuery {
        limit: 50,
        ..Default::default()
    };
    let page = store.list_message_deliveries(app_id, msg_id, &q).await;
    page.unwrap().data.into_iter().map(|v| v.status).collect()
}

// --- the suite -----------------------------------------------------------------------

async fn concurrent_creates_collide_alone(store: Arc<dyn Store>) {
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

/// The message log's status filter: the messages with a delivery in the state, each once
/// however many of its deliveries are, newest first, paged both ways, with the other
/// filters; another application's deliveries never count.
async fn messages_are_listed_by_the_state_of_their_deliveries(store: Arc<dyn Store>) {
    let rec = attach(store.as_ref());
    let a = store.create_app(app(None)).await.unwrap();
    let first = store.create_endpoint(endpoint(&a.id, 100)).await.unwrap();
    store.create_endpoint(endpoint(&a.id, 100)).await.unwrap();
    let other = store.create_app(app(None)).await.unwrap();
    store
        .create_endpoint(endpoint(&other.id, 100))
        .await
        .unwrap();
    // Message n's deliveries (to `first`, to the second endpoint): s succeeded, f
    // failed, p pending (a retry due later), - in flight (never reported).
    let plan = ["ss", "fs", "ff", "sf", "fs", "ps", "ff", "--", "fs", "sf"];
    let mut ids = vec![];
    for (n, _) in plan.iter().enumerate() {
        let mut m = message(&a.id);
        if n == 4 {
            m.event_type = "odd".into();
        }
        ids.push(store.create_message(m).await.unwrap().id);
    }
    store.create_message(message(&other.id)).await.unwrap();
    let handed: Vec<ClaimedDelivery> = rec.taken.lock().unwrap().drain(..).collect();
    assert_eq!(handed.len(), plan.len() * 2 + 1);
    for d in &handed {
        let Some(n) = ids.iter().position(|id| *id == d.message.id) else {
            let r = report_for(d, NextStep::Failed);
            store.report_attempt(d.id, &d.lease_token, r).await.unwrap();
            continue;
        };
        let step = plan[n].as_bytes()[usize::from(d.endpoint.id != first.id)];
        let next = match step {
            b's' => NextStep::Succeeded,
            b'f' => NextStep::Failed,
            b'p' => NextStep::RetryAt(Utc::now() + chrono::Duration::hours(1)),
            _ => continue,
        };
        let r = report_for(d, next);
        store.report_attempt(d.id, &d.lease_token, r).await.unwrap();
    }
    let with = |c: u8| -> Vec<String> {
        let mut want: Vec<String> = ids
            .iter()
            .zip(plan)
            .filter(|(_, p)| p.as_bytes().contains(&c))
            .map(|(id, _)| id.clone())
            .collect();
        want.sort();
        want.reverse();
        want
    };
    let query = |iterator: Option<String>| MessageQuery {
        list: ListQuery {
            limit: 2,
            iterator,
            order: Order::Descending,
        },
        failed: true,
        ..Default::default()
    };
    {
        let (status, c) = ("failed", b'f');
        let mut pages = vec![];
        let mut iterator = None;
        loop {
            let page = store
                .list_messages(&a.id, &query(iterator.clone()))
                .await
                .unwrap();
            iterator = page.iterator.clone();
            let done = page.done;
            pages.push(page);
            if done {
                break;
            }
        }
        let listed: Vec<String> = pages
            .iter()
            .flat_map(|p| p.data.iter().map(|m| m.id.clone()))
            .collect();
        assert_eq!(listed, with(c), "{status:?}");
        if pages.len() > 1 {
            let back = store
                .list_messages(&a.id, &query(pages[1].prev_iterator.clone()))
                .await
                .unwrap();
            assert_eq!(back.data, pages[0].data, "{status:?} back");
        }
    }
    // The other filters still apply; oldest first walks the same index the other way.
    let failed_odd = store
        .list_messages(
            &a.id,
            &MessageQuery {
                list: ListQuery {
                    limit: 50,
                    iterator: None,
                    order: Order::Ascending,
                },
                failed: true,
                event_types: Some(vec!["t".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut want = with(b'f');
    want.retain(|id| *id != ids[4]);
    want.reverse();
    let got: Vec<String> = failed_odd.data.into_iter().map(|m| m.id).collect();
    assert_eq!(got, want);
}

/// A failing endpoint with a retry due has work queued; one whose deliveries all failed
/// for good has none, though its `next_due_at` may still be set (it may be early).
async fn failing_endpoints_say_whether_a_delivery_is_queued(store: Arc<dyn Store>) {
    let rec = attach(store.as_ref());
    let mut eps = vec![];
    for next in [
        NextStep::Failed,
        NextStep::RetryAt(Utc::now() + chrono::Duration::hours(1)),
    ] {
        let a = store.create_app(app(None)).await.unwrap();
        let ep = store.create_endpoint(endpoint(&a.id, 100)).await.unwrap();
        store.create_message(message(&a.id)).await.unwrap();
        assert_eq!(finish_handed(store.as_ref(), &rec, next).await, 1);
        eps.push(ep.id);
    }
    let (failing, count) = store.failing_endpoints(10).await.unwrap();
    assert_eq!(count, 2);
    let mut queued: Vec<(String, bool)> = failing
        .into_iter()
        .map(|f| (f.endpoint.id, f.queued))
        .collect();
    queued.sort();
    let mut want = vec![(eps[0].clone(), false), (eps[1].clone(), true)];
    want.sort();
    assert_eq!(queued, want);
}

async fn pagination_walks_forward_and_back(store: Arc<dyn Store>) {
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

async fn leases_guard_finishing_writes_and_expire(store: Arc<dyn Store>) {
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
async fn a_report_for_a_deleted_endpoint_finds_its_delivery_gone(store: Arc<dyn Store>) {
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

/// Operational webhooks ride on [`AttemptReport::raise`]: the messages it returns are
/// written with the report, only when the report moved its delivery on, once per
/// `eventId`, and never at the cost of the report.
async fn a_report_raises_its_messages_in_its_own_transaction(store: Arc<dyn Store>) {
    let a = store.create_app(app(None)).await.unwrap();
    store.create_endpoint(endpoint(&a.id, 8)).await.unwrap();
    let ops = store.create_app(app(Some("ops"))).await.unwrap();
    // Raised already (by another attempt's report; delivered before the endpoint
    // below existed, so it leaves nothing to claim): kept as it is.
    let mut earlier = message(&ops.id);
    earlier.event_id = Some("raised-before".into());
    earlier.payload = "{\"first\":true}".into();
    store.create_message(earlier).await.unwrap();
    let ops_ep = store.create_endpoint(endpoint(&ops.id, 8)).await.unwrap();
    store.create_message(message(&a.id)).await.unwrap();

    let lease = chrono::Duration::seconds(30);
    let t0 = Utc::now();
    let first = store
        .claim_deliveries(t0, lease, 10, 10, &[])
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let later = t0 + chrono::Duration::seconds(31);
    let second = store
        .claim_deliveries(later, lease, 10, 10, &[])
        .await
        .unwrap();
    assert_eq!(second.len(), 1);

    let raising = |ids: &'static [&'static str], app_id: String| {
        let seen = Arc::new(Mutex::new(Vec::<ReportOutcome>::new()));
        let log = seen.clone();
        let raise = Raise(Arc::new(move |outcome: &ReportOutcome| {
            log.lock().unwrap().push(outcome.clone());
            ids.iter()
                .map(|id| {
                    let mut m = message(&app_id);
                    m.event_id = Some(id.to_string());
                    // Gone applications raise nothing, and stop nothing.
                    if *id == "to-a-deleted-app" {
                        m.app_id = "app_doesnotexist".into();
                    }
                    m
                })
                .collect()
        }));
        (raise, seen)
    };

    // The stalled worker's late report: logged, not applied, raises nothing.
    let (raise, seen) = raising(&["from-lost-lease"], ops.id.clone());
    let mut rep = report_for(&first[0], NextStep::Failed);
    rep.raise = Some(raise);
    let out = store
        .report_attempt(first[0].id, &first[0].lease_token, rep)
        .await
        .unwrap();
    assert_eq!(out.applied, Applied::LeaseLost);
    assert!(
        seen.lock().unwrap().is_empty(),
        "not asked to raise anything"
    );
    assert!(store
        .get_message(&ops.id, "from-lost-lease")
        .await
        .unwrap()
        .is_none());

    // The holder's report raises a new event, skips the one raised before and the one
    // whose application is gone, and is applied all the same.
    let (raise, seen) = raising(
        &["raised-before", "to-a-deleted-app", "raised-now"],
        ops.id.clone(),
    );
    let mut rep = report_for(&second[0], NextStep::Failed);
    rep.raise = Some(raise);
    let out = store
        .report_attempt(second[0].id, &second[0].lease_token, rep)
        .await
        .unwrap();
    assert_eq!(out.applied, Applied::Yes);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        std::slice::from_ref(&out),
        "decided from what the report did"
    );
    let kept = store
        .get_message(&ops.id, "raised-before")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&*kept.payload, "{\"first\":true}");
    let raised = store
        .get_message(&ops.id, "raised-now")
        .await
        .unwrap()
        .expect("raised with the report");
    let deliveries = store
        .list_message_deliveries(
            &ops.id,
            &raised.id,
            &ListQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(deliveries.data.len(), 1, "fanned out with the report");
    assert_eq!(deliveries.data[0].endpoint_id, ops_ep.id);
    assert_eq!(
        status_of(store.as_ref(), &a.id, &second[0].message.id).await,
        vec![DeliveryStatus::Failed]
    );
}

async fn full_endpoints_are_skipped_not_parked(store: Arc<dyn Store>) {
    let a = store.create_app(app(None)).await.unwrap();
    let full = store.create_endpoint(endpoint(&a.id, 1)).await.unwrap();
    let other = store.create_endpoint(endpoint(&a.id, 1)).await.unwrap();
    store.create_message(message(&a.id)).await.unwrap();
    let lease = chrono::Duration::seconds(30);
    let now = Utc::now();
    let busy = vec![Busy::full(full.id.clone())];
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
    let busy = vec![Busy::full(a.id.clone())];
    assert!(store
        .claim_deliveries(later, lease, 10, 10, &busy)
        .await
        .unwrap()
        .is_empty());
}

async fn claims_respect_endpoint_concurrency(store: Arc<dyn Store>) {
    let a = store.create_app(app(None)).await.unwrap();
    let ep = store.create_endpoint(endpoint(&a.id, 2)).await.unwrap();
    for _ in 0..5 {
        store.create_message(message(&a.id)).await.unwrap();
    }
    let lease = chrono::Duration::seconds(30);
    let now = Utc::now();
    let first = store
        .claim_deliveries(now, lease, 10, 10, &[])
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    let busy = vec![Busy::new(ep.id.clone(), 2)];
    assert!(store
        .claim_deliveries(now, lease, 10, 10, &busy)
        .await
        .unwrap()
        .is_empty());
    // One of the two is done: room for one more.
    let done = report_for(&first[0], NextStep::Succeeded);
    store
        .report_attempt(first[0].id, &first[0].lease_token, done)
        .await
        .unwrap();
    let busy = vec![Busy::new(ep.id.clone(), 1)];
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
async fn failing_endpoints_are_claimed_one_at_a_time_within_the_room_given(store: Arc<dyn Store>) {
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
    let healthy_full = vec![Busy::full(healthy.id.clone())];
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

async fn claims_give_a_throttled_endpoint_a_second_of_work(store: Arc<dyn Store>) {
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
    let full = vec![Busy::full(ep.id.clone())];
    let soon = now + chrono::Duration::seconds(2);
    assert!(store
        .claim_deliveries(soon, lease, 50, 50, &full)
        .await
        .unwrap()
        .is_empty());
    let busy = vec![Busy::new(ep.id.clone(), 3)];
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

// --- fresh deliveries handed to an attached intake ------------------------------------

async fn a_free_endpoint_gets_its_delivery_leased_without_a_claim(store: Arc<dyn Store>) {
    let rec = attach(store.as_ref());
    let a = store.create_app(app(None)).await.unwrap();
    let ep = store.create_endpoint(endpoint(&a.id, 8)).await.unwrap();
    let msg = store.create_message(message(&a.id)).await.unwrap();

    let taken = rec.taken.lock().unwrap().clone();
    assert_eq!(taken.len(), 1, "handed over once committed");
    let d = &taken[0];
    assert_eq!(d.message, msg);
    assert_eq!(d.endpoint.id, ep.id);
    assert_eq!((d.attempts, d.trigger), (0, Trigger::Scheduled));
    assert_eq!(*rec.queued.lock().unwrap(), 0);
    // It is leased in the database like a claimed delivery: no claim hands it out again
    // while the lease holds, and the holder's report applies.
    assert_eq!(
        status_of(store.as_ref(), &a.id, &msg.id).await,
        [DeliveryStatus::Sending]
    );
    let t0 = Utc::now();
    let lease = chrono::Duration::seconds(30);
    assert!(store
        .claim_deliveries(t0, lease, 10, 10, &[])
        .await
        .unwrap()
        .is_empty());
    let out = store
        .report_attempt(d.id, &d.lease_token, report_for(d, NextStep::Succeeded))
        .await
        .unwrap();
    assert_eq!(out.applied, Applied::Yes);
    assert_eq!(
        status_of(store.as_ref(), &a.id, &msg.id).await,
        [DeliveryStatus::Succeeded]
    );
}

async fn a_handed_over_delivery_whose_worker_died_is_claimed_after_its_lease(
    store: Arc<dyn Store>,
) {
    let rec = attach(store.as_ref());
    let a = store.create_app(app(None)).await.unwrap();
    store.create_endpoint(endpoint(&a.id, 8)).await.unwrap();
    let msg = store.create_message(message(&a.id)).await.unwrap();
    let handed = rec.taken.lock().unwrap()[0].clone();
    // The worker never reports. Once the lease (30 s) is over, a claim takes it over.
    let later = Utc::now() + chrono::Duration::seconds(31);
    let claimed = store
        .claim_deliveries(later, chrono::Duration::seconds(30), 10, 10, &[])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, handed.id);
    assert_eq!(claimed[0].message.id, msg.id);
    assert_ne!(claimed[0].lease_token, handed.lease_token);
}

async fn refused_backlogged_and_scheduled_deliveries_queue_as_pending(store: Arc<dyn Store>) {
    let rec = attach(store.as_ref());
    let a = store.create_app(app(None)).await.unwrap();
    let ep = store.create_endpoint(endpoint(&a.id, 8)).await.unwrap();

    // The worker has no slot: queued, and the worker is told to look.
    rec.open.store(false, Ordering::SeqCst);
    let first = store.create_message(message(&a.id)).await.unwrap();
    assert_eq!(
        status_of(store.as_ref(), &a.id, &first.id).await,
        [DeliveryStatus::Pending]
    );
    assert_eq!(*rec.queued.lock().unwrap(), 1);
    assert!(rec.taken.lock().unwrap().is_empty());

    // The endpoint has work due: the worker is asked whether a new delivery may pass it
    // (not whether it has a slot), and on a no it queues behind.
    rec.open.store(true, Ordering::SeqCst);
    let asked = rec.reserved.lock().unwrap().len();
    let second = store.create_message(message(&a.id)).await.unwrap();
    assert_eq!(rec.reserved.lock().unwrap().len(), asked);
    assert_eq!(
        *rec.reserved_behind.lock().unwrap(),
        std::slice::from_ref(&ep.id)
    );
    assert_eq!(
        status_of(store.as_ref(), &a.id, &second.id).await,
        [DeliveryStatus::Pending]
    );
    // On a yes it passes the queue, which stays due for the next claim.
    rec.open_behind.store(true, Ordering::SeqCst);
    let passing = store.create_message(message(&a.id)).await.unwrap();
    assert_eq!(rec.reserved_behind.lock().unwrap().len(), 2);
    assert_eq!(
        status_of(store.as_ref(), &a.id, &passing.id).await,
        [DeliveryStatus::Sending]
    );
    let handed = rec.taken.lock().unwrap().clone();
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].message.id, passing.id);
    rec.open_behind.store(false, Ordering::SeqCst);
    let claimed = store
        .claim_deliveries(Utc::now(), chrono::Duration::seconds(30), 10, 10, &[])
        .await
        .unwrap();
    let mut ids: Vec<_> = claimed.iter().map(|d| d.message.id.clone()).collect();
    ids.sort();
    let mut want = [first.id.clone(), second.id.clone()];
    want.sort();
    assert_eq!(ids, want);
    store
        .report_attempt(
            handed[0].id,
            &handed[0].lease_token,
            report_for(&handed[0], NextStep::Succeeded),
        )
        .await
        .unwrap();
    for d in &claimed {
        let report = report_for(d, NextStep::Succeeded);
        store
            .report_attempt(d.id, &d.lease_token, report)
            .await
            .unwrap();
    }

    // A message scheduled for later is not offered either.
    let scheduled = Message {
        deliver_at: Some(Utc::now() + chrono::Duration::hours(1)),
        ..message(&a.id)
    };
    let asked = rec.reserved.lock().unwrap().len();
    let scheduled = store.create_message(scheduled).await.unwrap();
    assert_eq!(rec.reserved.lock().unwrap().len(), asked);
    assert_eq!(
        status_of(store.as_ref(), &a.id, &scheduled.id).await,
        [DeliveryStatus::Pending]
    );

    // With the queue drained (the claim above brought `next_due_at` up to date), the
    // next one goes straight to the worker again.
    let third = store.create_message(message(&a.id)).await.unwrap();
    assert_eq!(
        status_of(store.as_ref(), &a.id, &third.id).await,
        [DeliveryStatus::Sending]
    );
    assert_eq!(rec.taken.lock().unwrap()[1].message.id, third.id);
    assert_eq!(rec.reserved_behind.lock().unwrap().len(), 2);
    assert!(rec.cancelled.lock().unwrap().is_empty());
}

async fn a_create_that_fails_hands_nothing_over(store: Arc<dyn Store>) {
    let rec = attach(store.as_ref());
    let a = store.create_app(app(None)).await.unwrap();
    store.create_endpoint(endpoint(&a.id, 8)).await.unwrap();
    let with_event = Message {
        event_id: Some("evt-1".into()),
        ..message(&a.id)
    };
    store.create_message(with_event.clone()).await.unwrap();
    let again = Message {
        id: new_id("msg"),
        ..with_event
    };
    let err = store.create_message(again).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(
        rec.taken.lock().unwrap().len(),
        1,
        "only the first message's"
    );
    assert_eq!(rec.reserved.lock().unwrap().len(), 1);
}

// --- concurrent writes (PostgreSQL group-commits them) ---------------------------------

/// Runs `n` writes at once, each its own task, and returns their results in order.
async fn all_at_once<T, F, Fut>(n: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

pub(crate) async fn concurrent_creates_fan_out_each_message_and_fail_alone(store: Arc<dyn Store>) {
    let rec = attach(store.as_ref());
    let a = store.create_app(app(None)).await.unwrap();
    let b = store.create_app(app(None)).await.unwrap();
    let filtered = |app_id: &str, types: &[&str]| {
        let mut ep = endpoint(app_id, 100);
        ep.settings.event_types = Some(types.iter().map(|t| t.to_string()).collect());
        ep
    };
    let a_t = store
        .create_endpoint(filtered(&a.id, &["t"]))
        .await
        .unwrap();
    let a_tu = store
        .create_endpoint(filtered(&a.id, &["t", "u"]))
        .await
        .unwrap();
    let mut off = endpoint(&a.id, 100);
    off.disabled = true;
    store.create_endpoint(off).await.unwrap();
    let b_any = store.create_endpoint(endpoint(&b.id, 100)).await.unwrap();

    // 60 messages of three kinds, 4 with one eventId, 2 for an application that does
    // not exist: all at once.
    let results = all_at_once(66, |i| {
        let store = store.clone();
        let (a, b) = (a.id.clone(), b.id.clone());
        async move {
            let msg = match i {
                0..60 if i % 3 == 0 => Message {
                    event_type: "t".into(),
                    ..message(&a)
                },
                0..60 if i % 3 == 1 => Message {
                    event_type: "u".into(),
                    ..message(&a)
                },
                0..60 => message(&b),
                60..64 => Message {
                    event_id: Some("dup".into()),
                    ..message(&a)
                },
                _ => message("app_missing"),
            };
            store.create_message(msg).await
        }
    })
    .await;
    let mut want_deliveries = 0;
    for (i, r) in results.iter().enumerate() {
        match (i, r) {
            (0..60, Ok(m)) => {
                let n = status_of(store.as_ref(), &m.app_id, &m.id).await.len();
                let want = match i % 3 {
                    0 => 2, // a_t and a_tu
                    1 => 1, // a_tu
                    _ => 1, // b_any
                };
                assert_eq!(n, want, "message {i} ({})", m.event_type);
                want_deliveries += want;
            }
            (60..64, _) | (64.., Err(StoreError::NotFound)) => {}
            (i, r) => panic!("write {i}: {r:?}"),
        }
    }
    let dups: Vec<_> = results[60..64].iter().collect();
    assert_eq!(dups.iter().filter(|r| r.is_ok()).count(), 1, "{dups:?}");
    assert!(
        dups.iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, StoreError::Conflict(_))),
        "{dups:?}"
    );
    want_deliveries += 2; // the eventId's message, to a_t and a_tu

    // Every delivery was offered and handed over once its message committed, with the
    // id it was written under; none was cancelled for good.
    let taken = rec.taken.lock().unwrap().clone();
    assert_eq!(taken.len(), want_deliveries);
    let mut ids: Vec<i64> = taken.iter().map(|d| d.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), want_deliveries, "distinct delivery ids");
    for d in &taken {
        assert_eq!(
            status_of(store.as_ref(), &d.message.app_id, &d.message.id).await,
            vec![
                DeliveryStatus::Sending;
                if d.endpoint.app_id == a.id && d.message.event_type == "t" {
                    2
                } else {
                    1
                }
            ],
        );
    }

    // Their reports, all at once: a_t's succeed, a_tu's fail for good asking to be
    // disabled (410), b_any's are retried in an hour, and one of b_any's is reported a
    // second time under a stale token.
    let ep_a_t = a_t.id.clone();
    let ep_a_tu = a_tu.id.clone();
    let in_an_hour = Utc::now() + chrono::Duration::hours(1);
    let reports: Vec<(ClaimedDelivery, AttemptReport)> = taken
        .iter()
        .map(|d| {
            let mut r = if d.endpoint.id == ep_a_t {
                report_for(d, NextStep::Succeeded)
            } else if d.endpoint.id == ep_a_tu {
                let mut r = report_for(d, NextStep::Failed);
                r.disable_endpoint = true;
                r
            } else {
                report_for(d, NextStep::RetryAt(in_an_hour))
            };
            r.attempt.status_code = Some(if r.attempt.succeeded { 200 } else { 410 });
            (d.clone(), r)
        })
        .collect();
    let stale = reports
        .iter()
        .find(|(d, _)| d.endpoint.id == b_any.id)
        .cloned()
        .unwrap();
    let n = reports.len();
    let reports = Arc::new(reports);
    let outcomes = all_at_once(n + 1, |i| {
        let store = store.clone();
        let reports = reports.clone();
        let stale = stale.clone();
        async move {
            let (d, r) = match reports.get(i) {
                Some(x) => x.clone(),
                None => {
                    let mut r = stale.1.clone();
                    r.attempt.id = new_id("atmpt");
                    (stale.0.clone(), r)
                }
            };
            let token = if i < n {
                d.lease_token.clone()
            } else {
                format!("{}-stale", d.lease_token)
            };
            store.report_attempt(d.id, &token, r).await.unwrap()
        }
    })
    .await;
    for (i, o) in outcomes.iter().enumerate() {
        let want = if i < n {
            Applied::Yes
        } else {
            Applied::LeaseLost
        };
        assert_eq!(o.applied, want, "report {i}");
    }
    // Of a_tu's failures asking to be disabled, one disabled it.
    let disabled_by: Vec<usize> = (0..n).filter(|i| outcomes[*i].endpoint_disabled).collect();
    assert_eq!(disabled_by.len(), 1, "{disabled_by:?}");
    assert_eq!(reports[disabled_by[0]].0.endpoint.id, ep_a_tu);
    let tu = store.get_endpoint(&a.id, &ep_a_tu).await.unwrap().unwrap();
    assert!(tu.disabled && tu.failing_since.is_some());
    let t = store.get_endpoint(&a.id, &ep_a_t).await.unwrap().unwrap();
    assert!(!t.disabled && t.failing_since.is_none());
    for (i, (d, r)) in reports.iter().enumerate() {
        let failures = if r.attempt.succeeded { 0 } else { 1 };
        assert_eq!(outcomes[i].consecutive_failures, failures, "report {i}");
        let statuses = status_of(store.as_ref(), &d.message.app_id, &d.message.id).await;
        let want = match r.next {
            NextStep::Succeeded => DeliveryStatus::Succeeded,
            NextStep::Failed => DeliveryStatus::Failed,
            NextStep::RetryAt(_) => DeliveryStatus::Pending,
        };
        assert!(statuses.contains(&want), "report {i}: {statuses:?}");
    }
    // Every attempt was logged, the stale one included.
    let logged = store
        .list_attempts(
            &b.id,
            &AttemptQuery {
                list: ListQuery {
                    limit: 250,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(logged.data.len(), 20 + 1);

    // The retries fall due in an hour, not before: the queue found them.
    let lease = chrono::Duration::seconds(30);
    let now = store
        .claim_deliveries(Utc::now(), lease, 100, 100, &[])
        .await
        .unwrap();
    assert!(now.is_empty(), "{} claimed early", now.len());
    let later = store
        .claim_deliveries(in_an_hour + lease, lease, 100, 100, &[])
        .await
        .unwrap();
    // b_any is failing now: one attempt at a time.
    assert_eq!(later.len(), 1);
    assert!(later
        .iter()
        .all(|d| d.endpoint.id == b_any.id && d.attempts == 1));
}

async fn endpoints_whose_work_was_done_elsewhere_do_not_hide_due_work(store: Arc<dyn Store>) {
    // 20 endpoints get a delivery handed over and reported done: each endpoint's queue
    // position still says "due when that lease ends", though nothing waits there.
    let rec = attach(store.as_ref());
    let a = store.create_app(app(None)).await.unwrap();
    for _ in 0..20 {
        store.create_endpoint(endpoint(&a.id, 8)).await.unwrap();
    }
    store.create_message(message(&a.id)).await.unwrap();
    let handed = rec.taken.lock().unwrap().clone();
    assert_eq!(handed.len(), 20);
    for d in &handed {
        let r = report_for(d, NextStep::Succeeded);
        store.report_attempt(d.id, &d.lease_token, r).await.unwrap();
    }
    // Then real work is queued on another endpoint, due after those leases end.
    rec.open.store(false, Ordering::SeqCst);
    let b = store.create_app(app(None)).await.unwrap();
    store.create_endpoint(endpoint(&b.id, 8)).await.unwrap();
    let scheduled = Message {
        deliver_at: Some(Utc::now() + chrono::Duration::minutes(5)),
        ..message(&b.id)
    };
    let waiting = store.create_message(scheduled).await.unwrap();
    // Long after the leases: a few small claims find it (the stale positions are put
    // right as claims pass them), however many stale endpoints come first.
    let later = Utc::now() + chrono::Duration::minutes(10);
    let lease = chrono::Duration::seconds(30);
    let mut found = Vec::new();
    for _ in 0..3 {
        found.extend(
            store
                .claim_deliveries(later, lease, 1, 1, &[])
                .await
                .unwrap(),
        );
        if !found.is_empty() {
            break;
        }
    }
    assert_eq!(found.len(), 1, "the due delivery was never claimed");
    assert_eq!(found[0].message.id, waiting.id);
}

// --- retention -----------------------------------------------------------------------

/// Reports every delivery handed to `rec` so far with `next`; returns how many.
async fn finish_handed(store: &dyn Store, rec: &Recorder, next: NextStep) -> usize {
    let handed: Vec<ClaimedDelivery> = rec.taken.lock().unwrap().drain(..).collect();
    for d in &handed {
        let r = report_for(d, next.clone());
        store.report_attempt(d.id, &d.lease_token, r).await.unwrap();
    }
    handed.len()
}

/// Walks the whole retention pass in batches of `limit`; returns the sum and how many
/// batches it took.
async fn prune_all(store: &dyn Store, before: DateTime<Utc>, limit: usize) -> (Pruned, usize) {
    let mut total = Pruned::default();
    let mut after: Option<String> = None;
    let mut batches = 0;
    loop {
        let p = store
            .prune_messages(before, after.as_deref(), limit)
            .await
            .unwrap();
        assert!(p.examined <= limit, "a batch looked at {}", p.examined);
        batches += 1;
        total.messages += p.messages;
        total.deliveries += p.deliveries;
        total.attempts += p.attempts;
        total.examined += p.examined;
        after = p.next;
        if after.is_none() {
            return (total, batches);
        }
    }
}

async fn retention_deletes_old_finished_messages_with_their_deliveries_and_attempts(
    store: Arc<dyn Store>,
) {
    let rec = attach(store.as_ref());
    let a = store.create_app(app(None)).await.unwrap();
    let ep = store.create_endpoint(endpoint(&a.id, 100)).await.unwrap();
    let quiet = store.create_app(app(None)).await.unwrap();
    // (A failure makes an endpoint take one attempt at a time: that one goes elsewhere.)
    let b = store.create_app(app(None)).await.unwrap();
    store.create_endpoint(endpoint(&b.id, 100)).await.unwrap();
    // Old and finished: delivered, failed for good, more delivered, and one that never
    // had a delivery (its application has no endpoint).
    let delivered = store.create_message(message(&a.id)).await.unwrap();
    assert_eq!(
        finish_handed(store.as_ref(), &rec, NextStep::Succeeded).await,
        1
    );
    let failed = store.create_message(message(&b.id)).await.unwrap();
    assert_eq!(
        finish_handed(store.as_ref(), &rec, NextStep::Failed).await,
        1
    );
    let mut old = vec![delivered.id.clone()];
    for _ in 0..5 {
        old.push(store.create_message(message(&a.id)).await.unwrap().id);
    }
    assert_eq!(
        finish_handed(store.as_ref(), &rec, NextStep::Succeeded).await,
        5
    );
    let lonely = store.create_message(message(&quiet.id)).await.unwrap();
    // Old but still owed: one in flight (handed over, not reported), one waiting.
    let sending = store.create_message(message(&a.id)).await.unwrap();
    let in_flight: Vec<ClaimedDelivery> = rec.taken.lock().unwrap().drain(..).collect();
    let pending = store
        .create_message(Message {
            deliver_at: Some(Utc::now() + chrono::Duration::hours(1)),
            ..message(&a.id)
        })
        .await
        .unwrap();
    // New and finished.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let cutoff = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let recent = store.create_message(message(&a.id)).await.unwrap();
    assert_eq!(
        finish_handed(store.as_ref(), &rec, NextStep::Succeeded).await,
        1
    );

    // In batches of 3: the 11 messages below the cutoff take 4 batches.
    let (total, batches) = prune_all(store.as_ref(), cutoff, 3).await;
    assert_eq!(
        (total.messages, total.deliveries, total.attempts),
        (8, 7, 7),
        "{total:?}"
    );
    assert_eq!((total.examined, batches), (10, 4), "{total:?}");
    let gone = old
        .iter()
        .map(|id| (&a.id, id))
        .chain([(&b.id, &failed.id), (&quiet.id, &lonely.id)]);
    for (app_id, id) in gone {
        assert!(store.get_message(app_id, id).await.unwrap().is_none());
        assert!(status_of(store.as_ref(), app_id, id).await.is_empty());
    }
    let all = ListQuery {
        limit: 100,
        ..Default::default()
    };
    let attempts = store
        .list_attempts(
            &a.id,
            &AttemptQuery {
                list: all.clone(),
                endpoint_id: Some(ep.id.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let attempted: Vec<_> = attempts.data.iter().map(|t| t.msg_id.as_str()).collect();
    assert_eq!(attempted, [recent.id.as_str()]);
    let mut listed: Vec<_> = store
        .list_messages(
            &a.id,
            &MessageQuery {
                list: all.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .data
        .into_iter()
        .map(|m| m.id)
        .collect();
    listed.sort();
    let mut kept = vec![sending.id.clone(), pending.id.clone(), recent.id.clone()];
    kept.sort();
    assert_eq!(listed, kept);
    let deliveries = store
        .list_endpoint_deliveries(&a.id, &ep.id, &all, None)
        .await
        .unwrap();
    assert_eq!(deliveries.data.len(), 3);
    assert_eq!(
        status_of(store.as_ref(), &a.id, &sending.id).await,
        [DeliveryStatus::Sending]
    );
    assert_eq!(
        status_of(store.as_ref(), &a.id, &pending.id).await,
        [DeliveryStatus::Pending]
    );

    // Nothing more to do until the owed delivery finishes; then it goes too.
    let (again, _) = prune_all(store.as_ref(), cutoff, 3).await;
    assert_eq!(again.messages + again.deliveries + again.attempts, 0);
    let d = &in_flight[0];
    let report = report_for(d, NextStep::Succeeded);
    store
        .report_attempt(d.id, &d.lease_token, report)
        .await
        .unwrap();
    let (last, _) = prune_all(store.as_ref(), cutoff, 3).await;
    assert_eq!((last.messages, last.deliveries, last.attempts), (1, 1, 1));
    assert!(store
        .get_message(&a.id, &sending.id)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .get_message(&a.id, &pending.id)
        .await
        .unwrap()
        .is_some());
}

async fn expired_payloads_are_dropped_once_no_delivery_is_owed(store: Arc<dyn Store>) {
    let rec = attach(store.as_ref());
    let a = store.create_app(app(None)).await.unwrap();
    let ep = store.create_endpoint(endpoint(&a.id, 100)).await.unwrap();
    let secret = r#"{"card":"4242"}"#;
    let t0 = Utc::now();
    let with = |expires: DateTime<Utc>| Message {
        payload: secret.into(),
        payload_expires_at: Some(expires),
        ..message(&a.id)
    };
    let past = t0 - chrono::Duration::seconds(1);
    let delivered = store.create_message(with(past)).await.unwrap();
    finish_handed(store.as_ref(), &rec, NextStep::Succeeded).await;
    let failed = store.create_message(with(past)).await.unwrap();
    finish_handed(store.as_ref(), &rec, NextStep::Failed).await;
    let failed_kept = store
        .create_message(Message {
            payload: secret.into(),
            ..message(&a.id)
        })
        .await
        .unwrap();
    finish_handed(store.as_ref(), &rec, NextStep::Failed).await;
    let owed = store
        .create_message(Message {
            deliver_at: Some(t0 + chrono::Duration::hours(1)),
            ..with(past)
        })
        .await
        .unwrap();
    let later = store
        .create_message(with(t0 + chrono::Duration::hours(1)))
        .await
        .unwrap();
    finish_handed(store.as_ref(), &rec, NextStep::Succeeded).await;
    assert!(delivered.payload_expired(t0) && !later.payload_expired(t0));

    let now = Utc::now();
    let dropped = store.drop_expired_payloads(now, 10).await.unwrap();
    assert_eq!(dropped.payloads, 2, "{dropped:?}");
    for (m, payload) in [
        (&delivered, "{}"),
        (&failed, "{}"),
        (&owed, secret),
        (&later, secret),
        (&failed_kept, secret),
    ] {
        let got = store.get_message(&a.id, &m.id).await.unwrap().unwrap();
        assert_eq!(&*got.payload, payload, "{}", m.id);
        assert_eq!(
            got.payload_expires_at,
            m.payload_expires_at
                .map(|t| { DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap() })
        );
    }
    // The message and its log stay: only the payload went.
    let attempts = store
        .list_attempts(
            &a.id,
            &AttemptQuery {
                list: ListQuery {
                    limit: 10,
                    ..Default::default()
                },
                msg_id: Some(delivered.id.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(attempts.data.len(), 1);
    assert_eq!(
        store.drop_expired_payloads(now, 10).await.unwrap().payloads,
        0
    );
    // Recovering the endpoint requeues the failed delivery that still has its payload,
    // not the one whose payload is gone.
    let since = t0 - chrono::Duration::minutes(1);
    assert_eq!(
        store
            .recover(&a.id, &ep.id, since, None, now)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        status_of(store.as_ref(), &a.id, &failed.id).await,
        [DeliveryStatus::Failed]
    );
}

async fn concurrent_retention_walks_delete_each_message_once(store: Arc<dyn Store>) {
    let rec = attach(store.as_ref());
    let a = store.create_app(app(None)).await.unwrap();
    store.create_endpoint(endpoint(&a.id, 1000)).await.unwrap();
    for _ in 0..60 {
        store.create_message(message(&a.id)).await.unwrap();
    }
    assert_eq!(
        finish_handed(store.as_ref(), &rec, NextStep::Succeeded).await,
        60
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let cutoff = Utc::now();
    let walks = all_at_once(4, |_| {
        let store = store.clone();
        async move { prune_all(store.as_ref(), cutoff, 5).await.0 }
    })
    .await;
    let sum = |f: fn(&Pruned) -> u64| walks.iter().map(f).sum::<u64>();
    assert_eq!(sum(|p| p.messages), 60, "{walks:?}");
    assert_eq!(sum(|p| p.deliveries), 60, "{walks:?}");
    assert_eq!(sum(|p| p.attempts), 60, "{walks:?}");
    let left = store
        .list_messages(
            &a.id,
            &MessageQuery {
                list: ListQuery {
                    limit: 100,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(left.data.is_empty());
}
