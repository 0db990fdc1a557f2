//! Retry timing under tokio's paused clock: hours and days of retries run in moments,
//! through the real dispatcher and the real SQLite store, with an in-process transport.
//!
//! Paused time auto-advances to the next timer whenever the runtime has nothing to do,
//! including while it waits for the store's writer thread. [`Held`] runs each queue call
//! on the blocking pool, which tokio counts as work (it does not auto-advance while a
//! blocking task runs), so virtual time stands still while the store commits and every
//! timestamp below is exact.

use std::collections::VecDeque;
use std::future::Future;

use chrono::{DateTime, Utc};
use hookline_store::sqlite::SqliteStore;
use hookline_store::{
    Application, DeliveryStatus, Endpoint, EndpointSettings, ListQuery, NextStep, ReportOutcome,
    SecretEntry, Store,
};
use tokio::sync::mpsc;

use super::*;
use crate::client::HttpResult;
use crate::clock::TokioClock;

/// The SQLite store with virtual time held still during every queue call.
struct Held {
    store: Arc<SqliteStore>,
    /// Set: claims book starts the way PostgreSQL's paced claims do.
    booking: Option<Booking>,
    /// If not 0: the attempts other processes have in flight, added to what this process
    /// said it had when it claimed, as a shared store's count of every process's would
    /// be (0: a store of its own, which counts nothing).
    elsewhere: u32,
    /// Set: a report waits (virtual time standing still) until the claim loop has asked
    /// for its next due time since the delivery was claimed, the order a loaded machine
    /// gives now and then: the loop plans its sleep before the report commits.
    late_reports: bool,
    /// How many times the loop has asked for its next due time.
    asked: Arc<AtomicUsize>,
    /// Per claimed delivery: `asked` when it was claimed.
    asked_at_claim: Mutex<HashMap<i64, usize>>,
    /// Claims so far.
    claims: AtomicUsize,
}

impl Held {
    fn new(store: Arc<SqliteStore>) -> Self {
        Self {
            store,
            booking: None,
            elsewhere: 0,
            late_reports: false,
            asked: Arc::default(),
            asked_at_claim: Mutex::default(),
            claims: AtomicUsize::new(0),
        }
    }
}

/// A claim that books each delivery's start `start_in` after the claim's `now` (as a
/// paced claim on PostgreSQL does) and then, the first claim only, takes `takes` to
/// come back.
#[derive(Clone, Copy)]
struct Booking {
    start_in: Duration,
    takes: Duration,
}

async fn held<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || rt.block_on(fut))
        .await
        .expect("store call")
}

#[async_trait::async_trait]
impl DeliveryQueue for Held {
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        max: usize,
        max_failing: usize,
        busy: &[hookline_store::Busy],
    ) -> hookline_store::Result<Vec<ClaimedDelivery>> {
        // What this process has in flight, as it told the claim.
        let mine: HashMap<String, usize> =
            busy.iter().map(|b| (b.id.clone(), b.in_flight)).collect();
        let (s, busy) = (self.store.clone(), busy.to_vec());
        let mut claimed = held(async move {
            s.claim_deliveries(now, lease, max, max_failing, &busy)
                .await
        })
        .await?;
        if self.elsewhere > 0 {
            for d in &mut claimed {
                let own = mine.get(&d.endpoint.id).copied().unwrap_or(0).min(1 << 16) as u32;
                d.in_flight_shared = own + self.elsewhere;
            }
        }
        let asked = self.asked.load(Ordering::SeqCst);
        self.asked_at_claim
            .lock()
            .unwrap()
            .extend(claimed.iter().map(|d| (d.id, asked)));
        if let Some(b) = self.booking {
            for d in &mut claimed {
                d.start_at = Some(now + chrono::Duration::from_std(b.start_in).unwrap());
            }
            if self.claims.fetch_add(1, Ordering::SeqCst) == 0 {
                tokio::time::sleep(b.takes).await;
            }
        }
        Ok(claimed)
    }

    async fn report_attempt(
        &self,
        delivery_id: i64,
        lease_token: &str,
        report: AttemptReport,
    ) -> hookline_store::Result<ReportOutcome> {
        let (s, token) = (self.store.clone(), lease_token.to_string());
        let wait_for = match self.late_reports {
            true => self.asked_at_claim.lock().unwrap().remove(&delivery_id),
            false => None,
        };
        let asked = self.asked.clone();
        held(async move {
            // Real time, on the blocking pool: virtual time stands still meanwhile.
            let give_up = std::time::Instant::now() + Duration::from_secs(5);
            while wait_for.is_some_and(|n| asked.load(Ordering::SeqCst) <= n)
                && std::time::Instant::now() < give_up
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            s.report_attempt(delivery_id, &token, report).await
        })
        .await
    }

    async fn release_delivery(
        &self,
        delivery_id: i64,
        lease_token: &str,
        now: DateTime<Utc>,
    ) -> hookline_store::Result<()> {
        let (s, token) = (self.store.clone(), lease_token.to_string());
        held(async move { s.release_delivery(delivery_id, &token, now).await }).await
    }

    async fn next_due(
        &self,
        busy: &[hookline_store::Busy],
        failing: bool,
    ) -> hookline_store::Result<Option<DateTime<Utc>>> {
        let (s, busy) = (self.store.clone(), busy.to_vec());
        let due = held(async move { s.next_due(&busy, failing).await }).await;
        self.asked.fetch_add(1, Ordering::SeqCst);
        due
    }
}

/// Answers attempts in-process from a script (the last answer repeats) and notes when
/// each arrived.
struct Scripted {
    clock: TokioClock,
    answers: Mutex<VecDeque<(u16, Option<&'static str>)>>,
    arrivals: Mutex<Vec<DateTime<Utc>>>,
    /// The timeout each attempt was given.
    timeouts: Mutex<Vec<Duration>>,
}

#[async_trait::async_trait]
impl Transport for Scripted {
    async fn post(
        &self,
        _: &str,
        _: http::HeaderMap,
        _: bytes::Bytes,
        timeout: Duration,
    ) -> HttpResult {
        self.arrivals.lock().unwrap().push(self.clock.now());
        self.timeouts.lock().unwrap().push(timeout);
        let mut answers = self.answers.lock().unwrap();
        let (status, retry_after) = if answers.len() > 1 {
            answers.pop_front().unwrap()
        } else {
            answers[0]
        };
        HttpResult {
            status: Some(status),
            retry_after: retry_after.map(str::to_string),
            response: String::new(),
            error_kind: None,
            duration: Duration::ZERO,
        }
    }
}

/// Hands each attempt's decided next step to the test.
struct Steps(mpsc::UnboundedSender<NextStep>);

impl AttemptObserver for Steps {
    fn attempted(&self, _: &ClaimedDelivery, _: &Attempt, outcome: &Observed) {
        let _ = self.0.send(outcome.next.clone());
    }
}

struct Run {
    /// When the message was made (the dispatcher starts then).
    created: DateTime<Utc>,
    arrivals: Vec<DateTime<Utc>>,
    timeouts: Vec<Duration>,
    status: DeliveryStatus,
    logged_attempts: usize,
}

/// Delivers one message to one endpoint with `policy`, answered by `answers`, until
/// the delivery finishes; returns when each attempt arrived and how it ended.
async fn run(
    policy: Option<RetryPolicy>,
    answers: &[(u16, Option<&'static str>)],
    jitter: bool,
) -> Run {
    run_with(
        policy,
        answers,
        jitter,
        None,
        DispatcherConfig::default().lease,
        None,
        false,
    )
    .await
}

/// An application and one endpoint with `settings` (and a signing secret), made `now`.
async fn app_and_endpoint(
    store: &SqliteStore,
    now: DateTime<Utc>,
    settings: EndpointSettings,
) -> (Application, Endpoint) {
    let app = store
        .create_app(Application {
            id: new_id("app"),
            uid: None,
            name: "timing".into(),
            throttle_rate: None,
            metadata: Default::default(),
            retry_policy: None,
            validate_payloads: false,
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    let ep = store
        .create_endpoint(Endpoint {
            id: new_id("ep"),
            app_id: app.id.clone(),
            uid: None,
            url: "http://127.0.0.1:9/never-dialled".into(),
            disabled: false,
            settings: EndpointSettings {
                secrets: vec![SecretEntry {
                    key: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                    expires_at: None,
                }],
                ..settings
            },
            created_at: now,
            updated_at: now,
            failing_since: None,
        })
        .await
        .unwrap();
    (app, ep)
}

/// [`run`], with the endpoint's `timeoutMs`, the dispatcher's lease, the claims'
/// [`Booking`] and, if `late_reports`, each report committed only after the claim loop
/// planned its sleep (see [`Held`]).
async fn run_with(
    policy: Option<RetryPolicy>,
    answers: &[(u16, Option<&'static str>)],
    jitter: bool,
    timeout_ms: Option<u32>,
    lease: Duration,
    booking: Option<Booking>,
    late_reports: bool,
) -> Run {
    let clock = TokioClock::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("db.sqlite")).unwrap());
    let now = clock.now();
    let (app, ep) = app_and_endpoint(
        &store,
        now,
        EndpointSettings {
            retry_policy: policy,
            timeout_ms,
            // What the booking stands for: a paced endpoint.
            throttle_rate: booking.map(|_| 1),
            ..Default::default()
        },
    )
    .await;
    let msg = store
        .create_message(test_message(new_id("msg"), &app.id, now))
        .await
        .unwrap();

    let transport = Arc::new(Scripted {
        clock,
        answers: Mutex::new(answers.iter().copied().collect()),
        arrivals: Mutex::new(Vec::new()),
        timeouts: Mutex::new(Vec::new()),
    });
    let (tx, mut steps) = mpsc::unbounded_channel();
    let dispatcher = Dispatcher::with_parts(
        Arc::new(Held {
            booking,
            late_reports,
            ..Held::new(store.clone())
        }),
        transport.clone(),
        Arc::new(clock),
        DispatcherConfig {
            // Only due times wake the loop, so no poll ticks are needed.
            poll_interval: Duration::from_secs(24 * 3600),
            jitter,
            lease,
            ..DispatcherConfig::default()
        },
        vec![Arc::new(Steps(tx))],
        Arc::new(Notify::new()),
    );
    let (stop_tx, stop) = watch::channel(false);
    let loop_task = tokio::spawn(dispatcher.run(stop));

    // Virtual time: this gives up only if the dispatcher stalls for a virtual month.
    tokio::time::timeout(Duration::from_secs(30 * 24 * 3600), async {
        while let Some(step) = steps.recv().await {
            if !matches!(step, NextStep::RetryAt(_)) {
                break;
            }
        }
    })
    .await
    .expect("the delivery finishes");
    stop_tx.send(true).unwrap();
    loop_task.await.unwrap();

    let views = store
        .list_message_deliveries(
            &app.id,
            &msg.id,
            &ListQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(views.data.len(), 1);
    assert_eq!(views.data[0].endpoint_id, ep.id);
    let logged = store
        .list_attempts(
            &app.id,
            &hookline_store::AttemptQuery {
                list: ListQuery {
                    limit: 250,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let arrivals = transport.arrivals.lock().unwrap().clone();
    let timeouts = transport.timeouts.lock().unwrap().clone();
    Run {
        created: now,
        arrivals,
        timeouts,
        status: views.data[0].status,
        logged_attempts: logged.data.len(),
    }
}

/// Seconds from the first attempt to each attempt.
fn offsets(arrivals: &[DateTime<Utc>]) -> Vec<f64> {
    arrivals
        .iter()
        .map(|t| (*t - arrivals[0]).num_milliseconds() as f64 / 1000.0)
        .collect()
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= 1.0,
        "{what}: {actual} s, expected {expected} s"
    );
}

/// An attempt gets its endpoint's `timeoutMs`, cut at half the lease, so that it and its
/// report end while the lease holds (no other process takes the delivery over meanwhile).
#[tokio::test(start_paused = true)]
async fn an_attempt_is_cut_at_half_the_lease() {
    let lease = Duration::from_secs(120);
    let r = run_with(
        None,
        &[(200, None)],
        false,
        Some(30_000),
        lease,
        None,
        false,
    )
    .await;
    assert_eq!(r.timeouts, vec![Duration::from_secs(30)]);
    let r = run_with(None, &[(200, None)], false, None, lease, None, false).await;
    assert_eq!(r.timeouts, vec![DEFAULT_TIMEOUT]);
    let r = run_with(
        None,
        &[(200, None)],
        false,
        Some(30_000),
        Duration::from_secs(10),
        None,
        false,
    )
    .await;
    assert_eq!(r.timeouts, vec![Duration::from_secs(5)]);
}

/// A start booked by the claim (PostgreSQL's pacing across processes) is a time, not a
/// wait from when the claim came back: a claim that takes 300 ms to come back still
/// starts its delivery at the booked time, and one that comes back after it starts at
/// once. (Counted from the claim's return, a slow claim's starts slid later than the next
/// claim's, and arrivals bunched.) One that comes back more than half a step after it
/// (here `throttleRate: 1`, so 500 ms) does not start: other processes' next starts are
/// on time, and it would go out with them. It goes back to the queue, and the next
/// claim books it a start of its own.
#[tokio::test(start_paused = true)]
async fn a_booked_start_is_kept_however_long_the_claim_took() {
    let lease = DispatcherConfig::default().lease;
    for (start_in, takes, expected) in [(400, 300, 400), (400, 700, 700), (400, 1_100, 1_500)] {
        let booking = Booking {
            start_in: Duration::from_millis(start_in),
            takes: Duration::from_millis(takes),
        };
        let r = run_with(
            None,
            &[(200, None)],
            false,
            None,
            lease,
            Some(booking),
            false,
        )
        .await;
        assert_eq!(r.arrivals.len(), 1);
        assert_eq!(
            (r.arrivals[0] - r.created).num_milliseconds(),
            expected,
            "booked {start_in} ms after the claim, which took {takes} ms"
        );
    }
}

/// The adaptive limit learns from the concurrency an attempt met across processes: its
/// own process's attempts in flight and the others' (as the claim counted them).
/// 32 deliveries to a receiver that answers at once, with at most 8 attempts in flight in
/// this process (`--max-in-flight 8`): alone, 8 in flight say nothing about a limit of 32
/// (not half in use), and it stays at 32; with 16 more in flight elsewhere (leaving this
/// process room for its 8), every success says 24 are fine, and it grows.
#[tokio::test(start_paused = true)]
async fn the_adaptive_limit_counts_other_processes_attempts() {
    for (elsewhere, grows) in [(0, false), (16, true)] {
        let clock = TokioClock::new();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("db.sqlite")).unwrap());
        let now = clock.now();
        let (app, ep) = app_and_endpoint(&store, now, EndpointSettings::default()).await;
        let n = 32;
        for _ in 0..n {
            store
                .create_message(test_message(new_id("msg"), &app.id, now))
                .await
                .unwrap();
        }
        let transport = Arc::new(Scripted {
            clock,
            answers: Mutex::new([(200, None)].into_iter().collect()),
            arrivals: Mutex::new(Vec::new()),
            timeouts: Mutex::new(Vec::new()),
        });
        let (tx, mut steps) = mpsc::unbounded_channel();
        let dispatcher = Dispatcher::with_parts(
            Arc::new(Held {
                elsewhere,
                ..Held::new(store.clone())
            }),
            transport,
            Arc::new(clock),
            DispatcherConfig {
                poll_interval: Duration::from_millis(10),
                max_in_flight: 8,
                ..DispatcherConfig::default()
            },
            vec![Arc::new(Steps(tx))],
            Arc::new(Notify::new()),
        );
        let (stop_tx, stop) = watch::channel(false);
        let loop_task = tokio::spawn(dispatcher.clone().run(stop));
        tokio::time::timeout(Duration::from_secs(60), async {
            for _ in 0..n {
                steps.recv().await.expect("an attempt");
            }
        })
        .await
        .expect("every delivery is attempted");
        let limit = dispatcher.concurrency_limit(&ep.id).expect("a limit");
        stop_tx.send(true).unwrap();
        loop_task.await.unwrap();
        if grows {
            assert!(
                limit > 32,
                "{elsewhere} elsewhere: the limit stayed at {limit}"
            );
        } else {
            assert_eq!(limit, 32, "alone, 8 in flight at a time");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn fixed_hourly_for_two_days_is_48_retries_then_failed() {
    let policy = RetryPolicy::Fixed {
        interval_seconds: 3600,
        give_up_after_seconds: 48 * 3600,
    };
    let r = run(Some(policy), &[(500, None)], false).await;
    assert_eq!(r.arrivals.len(), 49, "one try and 48 retries");
    for (i, off) in offsets(&r.arrivals).into_iter().enumerate() {
        assert_close(off, i as f64 * 3600.0, &format!("attempt {}", i + 1));
    }
    assert_eq!(r.status, DeliveryStatus::Failed);
    assert_eq!(r.logged_attempts, 49, "every attempt is in the log");
}

#[tokio::test(start_paused = true)]
async fn default_schedule_with_jitter_stays_within_twenty_percent() {
    let r = run(None, &[(503, None)], true).await;
    let schedule = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0];
    assert_eq!(
        r.arrivals.len(),
        schedule.len() + 1,
        "one try and 7 retries"
    );
    let offs = offsets(&r.arrivals);
    let mut exact = 0;
    for (i, base) in schedule.iter().enumerate() {
        let gap = offs[i + 1] - offs[i];
        assert!(
            gap >= base * 0.8 - 1.0 && gap <= base * 1.2 + 1.0,
            "retry {}: waited {gap} s, schedule says {base} s ± 20 %",
            i + 1
        );
        if (gap - base).abs() < 0.5 {
            exact += 1;
        }
    }
    assert!(
        exact < schedule.len(),
        "jitter spreads the retries: {offs:?}"
    );
    assert_eq!(r.status, DeliveryStatus::Failed);
    assert_eq!(r.logged_attempts, 8);
}

/// A retry falls due when its schedule says, even where the attempt's report commits
/// after the claim loop asked for its next due time and went to sleep: the loop is woken
/// for it. (Before, it slept until the next poll, here a day away, and was woken only
/// by the lease's expiry two minutes later: "retry 1: waited 120 s", now and then, on
/// a loaded machine.)
#[tokio::test(start_paused = true)]
async fn a_retry_reported_after_the_loop_went_to_sleep_is_on_time() {
    let lease = DispatcherConfig::default().lease;
    let answers = [(503, None), (503, None), (200, None)];
    let r = run_with(None, &answers, false, None, lease, None, true).await;
    assert_eq!(r.arrivals.len(), 3);
    let offs = offsets(&r.arrivals);
    assert_close(offs[1], 5.0, "retry 1");
    assert_close(offs[2], 305.0, "retry 2");
    assert_eq!(r.status, DeliveryStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn retry_after_outweighs_a_shorter_scheduled_delay() {
    // 429 asking for 10 minutes, where the schedule would retry after 5 s; then 200.
    let r = run(None, &[(429, Some("600")), (200, None)], false).await;
    assert_eq!(r.arrivals.len(), 2);
    assert_close(offsets(&r.arrivals)[1], 600.0, "retry after Retry-After");
    assert_eq!(r.status, DeliveryStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn policy_none_tries_once() {
    let r = run(Some(RetryPolicy::None), &[(500, None)], false).await;
    assert_eq!(r.arrivals.len(), 1);
    assert_eq!(r.status, DeliveryStatus::Failed);
}
