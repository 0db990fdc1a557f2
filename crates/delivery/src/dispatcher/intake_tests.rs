//! The dispatcher as the store's intake: reservations stay within every limit, and
//! whatever is reserved and not handed over comes back.

use hookline_store::sqlite::SqliteStore;
use hookline_store::{EndpointSettings, Trigger};

use super::*;
use crate::clock::SystemClock;
use crate::ssrf::Guard;

fn dispatcher(max_in_flight: usize) -> (Arc<Dispatcher>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("db.sqlite")).unwrap());
    let cfg = DispatcherConfig {
        max_in_flight,
        ..DispatcherConfig::default()
    };
    let d = Dispatcher::with_parts(
        store,
        Arc::new(Client::new(Guard::new(vec![]), 8)),
        Arc::new(SystemClock),
        cfg,
        vec![],
        Arc::new(Notify::new()),
    );
    (d, dir)
}

fn endpoint(id: &str, settings: EndpointSettings) -> Endpoint {
    let now = chrono::Utc::now();
    Endpoint {
        id: id.into(),
        app_id: "app_1".into(),
        uid: None,
        url: "http://127.0.0.1:1/".into(),
        disabled: false,
        settings,
        created_at: now,
        updated_at: now,
        failing_since: None,
    }
}

fn capped(id: &str, max_concurrency: u32) -> Endpoint {
    endpoint(
        id,
        EndpointSettings {
            max_concurrency: Some(max_concurrency),
            ..Default::default()
        },
    )
}

/// Nothing reserved, nothing in flight, every global slot free.
/// What a claim would be told this process has in flight to `id`.
fn in_flight(busy: &[Busy], id: &str) -> Option<usize> {
    busy.iter().find(|b| b.id == id).map(|b| b.in_flight)
}

fn assert_idle(d: &Dispatcher, max_in_flight: usize) {
    assert_eq!(d.slots.available_permits(), max_in_flight);
    assert!(d.in_flight.lock().unwrap().endpoints.is_empty());
    assert_eq!(d.reserved.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn reservations_respect_max_concurrency_and_the_global_cap() {
    let (d, _dir) = dispatcher(3);
    let two = capped("ep_two", 2);
    assert!(d.reserve(&two, None));
    assert!(d.reserve(&two, None));
    assert!(!d.reserve(&two, None), "maxConcurrency 2 exceeded");
    let other = capped("ep_other", 8);
    assert!(d.reserve(&other, None));
    assert!(!d.reserve(&other, None), "global cap of 3 exceeded");
    // A claim sees the reservations: the full endpoint is left out.
    let busy = d.busy();
    assert!(in_flight(&busy, "ep_two") == Some(Busy::FULL), "{busy:?}");
    assert_eq!(in_flight(&busy, "ep_other"), Some(1), "{busy:?}");
    // A write that did not commit gives its slots back.
    d.cancel(vec!["ep_two".into()]);
    assert!(d.reserve(&two, None));
    d.cancel(vec!["ep_two".into(), "ep_two".into(), "ep_other".into()]);
    assert_idle(&d, 3);
}

#[tokio::test]
async fn a_delivery_passes_queued_work_only_while_most_slots_are_free() {
    let (d, _dir) = dispatcher(64);
    let eight = capped("ep_eight", 8);
    // Below half the endpoint's cap, a fresh delivery may pass what is queued.
    for n in 0..4 {
        assert!(d.reserve_behind(&eight, None), "{n} of 8 in flight");
    }
    // From half on, it queues behind (while one with nothing queued still starts).
    assert!(!d.reserve_behind(&eight, None), "4 of 8 in flight");
    assert!(d.reserve(&eight, None));
    assert!(!d.reserve_behind(&eight, None), "5 of 8 in flight");
    // A failing endpoint's queue (its retries) always goes first.
    let failing = Endpoint {
        failing_since: Some(chrono::Utc::now()),
        ..capped("ep_failing", 8)
    };
    assert!(!d.reserve_behind(&failing, None));
    assert!(d.reserve(&failing, None));
    // Paced endpoints are the claim's, as for any reservation.
    let throttled = endpoint(
        "ep_throttled",
        EndpointSettings {
            throttle_rate: Some(5),
            ..Default::default()
        },
    );
    assert!(!d.reserve_behind(&throttled, None));
    d.cancel(vec!["ep_eight".into(); 5]);
    d.cancel(vec!["ep_failing".into()]);
    assert_idle(&d, 64);
}

#[tokio::test]
async fn paced_endpoints_and_applications_are_left_to_the_claim() {
    let (d, _dir) = dispatcher(8);
    let throttled = endpoint(
        "ep_throttled",
        EndpointSettings {
            throttle_rate: Some(5),
            ..Default::default()
        },
    );
    assert!(!d.reserve(&throttled, None));
    assert!(!d.reserve(&capped("ep_plain", 8), Some(10)), "app throttle");
    assert!(
        d.reserve(&capped("ep_plain", 8), Some(0)),
        "0 is no throttle"
    );
    d.cancel(vec!["ep_plain".into()]);
    assert_idle(&d, 8);
}

#[tokio::test]
async fn no_reservations_once_draining() {
    let (d, _dir) = dispatcher(8);
    d.stopping.store(true, Ordering::SeqCst);
    assert!(!d.reserve(&capped("ep_1", 8), None));
    assert_idle(&d, 8);
}

#[tokio::test]
async fn failing_endpoints_get_one_slot_each_and_half_the_cap_together() {
    let (d, _dir) = dispatcher(8);
    let failing = |id: &str| Endpoint {
        failing_since: Some(chrono::Utc::now()),
        ..capped(id, 8)
    };
    let dead: Vec<Endpoint> = (0..6).map(|i| failing(&format!("ep_dead{i}"))).collect();
    assert_eq!(d.failing_room(), 4);
    assert!(d.reserve(&dead[0], None));
    assert!(
        !d.reserve(&dead[0], None),
        "a failing endpoint gets one slot"
    );
    for ep in &dead[1..4] {
        assert!(d.reserve(ep, None));
    }
    assert_eq!(d.failing_room(), 0);
    assert!(
        !d.reserve(&dead[4], None),
        "failing endpoints hold at most half of the 8 slots"
    );
    // The other half is left to endpoints that answer, at their full concurrency.
    let healthy = capped("ep_healthy", 8);
    for _ in 0..4 {
        assert!(d.reserve(&healthy, None));
    }
    assert!(!d.reserve(&healthy, None), "global cap of 8 exceeded");
    // A claim is told there is no room for failing endpoints, and each failing one with
    // its slot is full.
    let busy = d.busy();
    assert!(in_flight(&busy, "ep_dead0") == Some(Busy::FULL), "{busy:?}");
    // A failing endpoint's slot coming back makes room for another one.
    d.cancel(vec!["ep_dead0".into()]);
    assert_eq!(d.failing_room(), 1);
    assert!(d.reserve(&dead[4], None));
    // Once it succeeds again, an endpoint has its full concurrency back.
    d.cancel(vec![
        "ep_dead1".into(),
        "ep_healthy".into(),
        "ep_healthy".into(),
    ]);
    let recovered = capped("ep_dead1", 8);
    for _ in 0..3 {
        assert!(d.reserve(&recovered, None));
    }
    assert!(!d.reserve(&recovered, None), "global cap of 8 exceeded");
    d.cancel(
        ["ep_dead1"; 3]
            .into_iter()
            .chain(["ep_dead2", "ep_dead3", "ep_dead4"])
            .chain(["ep_healthy"; 2])
            .map(String::from)
            .collect(),
    );
    assert_idle(&d, 8);
}

/// A paced attempt that starts late (here: three due at once, as when a claim came back
/// after their booked starts) waits until 1/rate after this process's previous start
/// under the same pace, its endpoint's or its application's, so none go out together;
/// starts on time are not held back.
#[tokio::test(start_paused = true)]
async fn late_paced_starts_keep_their_spacing() {
    let (d, _dir) = dispatcher(8);
    let now = chrono::Utc::now();
    let paced = |ep: Endpoint, app_rate: Option<u32>| ClaimedDelivery {
        id: 0,
        lease_token: "lease".into(),
        attempts: 0,
        scheduled_at: now,
        created_at: now,
        trigger: Trigger::Scheduled,
        message: test_message("msg_1".into(), "app_1", now),
        endpoint: ep,
        app_retry_policy: None,
        app_throttle_rate: app_rate,
        start_at: Some(now),
        in_flight_shared: 0,
    };
    let rate = |r| EndpointSettings {
        throttle_rate: Some(r),
        ..Default::default()
    };
    let t0 = tokio::time::Instant::now();
    let ten = paced(endpoint("ep_ten", rate(10)), None);
    for expected in [0, 100, 200] {
        d.keep_spacing(&ten, t0).await;
        assert_eq!(t0.elapsed().as_millis(), expected, "endpoint at 10/s");
    }
    // An unpaced endpoint of an application paced at 4/s: the second start waits 250 ms.
    let t0 = tokio::time::Instant::now();
    let of_app = paced(endpoint("ep_app", EndpointSettings::default()), Some(4));
    d.keep_spacing(&of_app, t0).await;
    d.keep_spacing(&of_app, t0).await;
    assert_eq!(t0.elapsed().as_millis(), 250, "application at 4/s");
    // Starts on time are not held back: booked 1/300 s apart (not a whole number of
    // milliseconds, so the timer fires each a little late), 300 take one second.
    let fast = paced(endpoint("ep_fast", rate(300)), None);
    let t0 = tokio::time::Instant::now();
    let step = Duration::from_secs_f64(1.0 / 300.0);
    for k in 0..300u32 {
        tokio::time::sleep_until(t0 + step * k).await;
        d.keep_spacing(&fast, t0 + step * k).await;
    }
    let took = t0.elapsed().as_millis();
    assert!(
        (996..=998).contains(&took),
        "300 starts at 300/s took {took} ms"
    );
    // Unpaced: no wait at all.
    let t0 = tokio::time::Instant::now();
    let free = paced(endpoint("ep_free", EndpointSettings::default()), None);
    d.keep_spacing(&free, t0).await;
    d.keep_spacing(&free, t0).await;
    assert_eq!(t0.elapsed().as_millis(), 0);
}
