//! The dispatcher as the store's intake: reservations stay within every limit, and
//! whatever is reserved and not handed over comes back.

use hookline_store::sqlite::SqliteStore;
use hookline_store::EndpointSettings;

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
fn assert_idle(d: &Dispatcher, max_in_flight: usize) {
    assert_eq!(d.slots.available_permits(), max_in_flight);
    assert!(d.in_flight.lock().unwrap().is_empty());
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
    assert!(
        busy.contains(&("ep_two".to_string(), usize::MAX)),
        "{busy:?}"
    );
    assert!(busy.contains(&("ep_other".to_string(), 1)), "{busy:?}");
    // A write that did not commit gives its slots back.
    d.cancel(vec!["ep_two".into()]);
    assert!(d.reserve(&two, None));
    d.cancel(vec!["ep_two".into(), "ep_two".into(), "ep_other".into()]);
    assert_idle(&d, 3);
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
