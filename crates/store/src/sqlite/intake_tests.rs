//! Fresh deliveries handed straight to an attached [`Intake`] by the create that makes
//! them, instead of waiting for a claim.

use std::sync::atomic::{AtomicBool, Ordering};

use super::tests::{app, endpoint, message, report_for};
use super::*;

/// Records what the store asks and hands over; says yes to reservations while `open`.
#[derive(Default)]
struct Recorder {
    open: AtomicBool,
    reserved: Mutex<Vec<String>>,
    taken: Mutex<Vec<ClaimedDelivery>>,
    cancelled: Mutex<Vec<String>>,
    queued: Mutex<usize>,
}

impl Intake for Recorder {
    fn lease(&self) -> chrono::Duration {
        chrono::Duration::seconds(30)
    }
    fn reserve(&self, endpoint: &Endpoint, _app_throttle_rate: Option<u32>) -> bool {
        self.reserved.lock().unwrap().push(endpoint.id.clone());
        self.open.load(Ordering::SeqCst)
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

fn attach(store: &SqliteStore) -> Arc<Recorder> {
    let rec = Arc::new(Recorder::default());
    rec.open.store(true, Ordering::SeqCst);
    let intake: Arc<dyn Intake> = rec.clone();
    store.attach_intake(Arc::downgrade(&intake));
    rec
}

async fn status_of(store: &SqliteStore, app_id: &str, msg_id: &str) -> Vec<DeliveryStatus> {
    let q = ListQuery {
        limit: 50,
        ..Default::default()
    };
    let page = store.list_message_deliveries(app_id, msg_id, &q).await;
    page.unwrap().data.into_iter().map(|v| v.status).collect()
}

#[tokio::test]
async fn a_free_endpoint_gets_its_delivery_leased_without_a_claim() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
    let rec = attach(&store);
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
        status_of(&store, &a.id, &msg.id).await,
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
        status_of(&store, &a.id, &msg.id).await,
        [DeliveryStatus::Succeeded]
    );
}

#[tokio::test]
async fn a_handed_over_delivery_whose_worker_died_is_claimed_after_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
    let rec = attach(&store);
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

#[tokio::test]
async fn refused_backlogged_and_scheduled_deliveries_queue_as_pending() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
    let rec = attach(&store);
    let a = store.create_app(app(None)).await.unwrap();
    let ep = store.create_endpoint(endpoint(&a.id, 8)).await.unwrap();

    // The worker has no slot: queued, and the worker is told to look.
    rec.open.store(false, Ordering::SeqCst);
    let first = store.create_message(message(&a.id)).await.unwrap();
    assert_eq!(
        status_of(&store, &a.id, &first.id).await,
        [DeliveryStatus::Pending]
    );
    assert_eq!(*rec.queued.lock().unwrap(), 1);
    assert!(rec.taken.lock().unwrap().is_empty());

    // The endpoint has work due: a new delivery queues behind it, and the worker is not
    // even asked (it would jump the queue).
    rec.open.store(true, Ordering::SeqCst);
    let asked = rec.reserved.lock().unwrap().len();
    let second = store.create_message(message(&a.id)).await.unwrap();
    assert_eq!(rec.reserved.lock().unwrap().len(), asked);
    assert_eq!(
        status_of(&store, &a.id, &second.id).await,
        [DeliveryStatus::Pending]
    );
    let claimed = store
        .claim_deliveries(Utc::now(), chrono::Duration::seconds(30), 10, 10, &[])
        .await
        .unwrap();
    let mut ids: Vec<_> = claimed.iter().map(|d| d.message.id.clone()).collect();
    ids.sort();
    let mut want = [first.id.clone(), second.id.clone()];
    want.sort();
    assert_eq!(ids, want);
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
        status_of(&store, &a.id, &scheduled.id).await,
        [DeliveryStatus::Pending]
    );

    // With the queue drained (the claim above brought `next_due_at` up to date), the
    // next one goes straight to the worker again.
    let third = store.create_message(message(&a.id)).await.unwrap();
    assert_eq!(
        status_of(&store, &a.id, &third.id).await,
        [DeliveryStatus::Sending]
    );
    assert_eq!(rec.taken.lock().unwrap()[0].endpoint.id, ep.id);
    assert!(rec.cancelled.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_create_that_fails_hands_nothing_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
    let rec = attach(&store);
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

/// Reserved slots are given back when the write that reserved them does not commit
/// (the guard the fan-out files each reservation in, before its insert).
#[test]
fn reservations_of_a_write_that_did_not_commit_are_cancelled() {
    let rec = Arc::new(Recorder::default());
    let intake: Arc<dyn Intake> = rec.clone();
    let ep = endpoint("app_x", 8);
    let claimed = |id: i64| ClaimedDelivery {
        id,
        lease_token: "t".into(),
        attempts: 0,
        scheduled_at: Utc::now(),
        created_at: Utc::now(),
        trigger: Trigger::Scheduled,
        message: message("app_x"),
        endpoint: ep.clone(),
        app_retry_policy: None,
        app_throttle_rate: None,
    };
    drop(Fresh {
        intake: Some(intake.clone()),
        claimed: vec![claimed(1), claimed(2)],
        queued: true,
    });
    assert_eq!(
        *rec.cancelled.lock().unwrap(),
        [ep.id.clone(), ep.id.clone()]
    );
    assert_eq!(
        *rec.queued.lock().unwrap(),
        0,
        "nothing was queued after all"
    );

    Fresh {
        intake: Some(intake),
        claimed: vec![claimed(3)],
        queued: true,
    }
    .hand_over();
    assert_eq!(
        rec.cancelled.lock().unwrap().len(),
        2,
        "handed over, not cancelled"
    );
    assert_eq!(rec.taken.lock().unwrap()[0].id, 3);
    assert_eq!(*rec.queued.lock().unwrap(), 1);
}

/// A claim in the same group commit as a create may pick that create's deliveries: it
/// is answered only once the group is on disk, so no delivery starts before its message
/// is durable.
#[tokio::test]
async fn claims_that_may_see_unsynced_messages_wait_for_the_fsync() {
    let dir = tempfile::tempdir().unwrap();
    // While `hold` is set, every fsync waits for a token from the gate.
    let hold = Arc::new(AtomicBool::new(false));
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let gate_rx = Mutex::new(gate_rx);
    let held = hold.clone();
    let store = Arc::new(
        SqliteStore::open_with(
            &dir.path().join("db.sqlite"),
            move |wal| {
                Box::new(move || {
                    if held.load(Ordering::SeqCst) {
                        gate_rx.lock().unwrap().recv().unwrap();
                    }
                    wal.sync_data()
                })
            },
            true,
        )
        .unwrap(),
    );
    let a = store.create_app(app(None)).await.unwrap();
    store.create_endpoint(endpoint(&a.id, 8)).await.unwrap();
    hold.store(true, Ordering::SeqCst);
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(50));
    // A write whose fsync is held: meanwhile the writer gathers the next group in an
    // open transaction, here a create and then a claim that sees the create's delivery.
    let s = store.clone();
    let blocker = tokio::spawn(async move { s.create_app(app(None)).await });
    pause().await;
    let s = store.clone();
    let msg = message(&a.id);
    let create = tokio::spawn(async move { s.create_message(msg).await });
    pause().await;
    let s = store.clone();
    let claim = tokio::spawn(async move {
        s.claim_deliveries(Utc::now(), chrono::Duration::seconds(30), 10, 10, &[])
            .await
    });
    pause().await;
    // The first fsync returns: the group of the create and the claim commits, and its
    // fsync is held in turn. The claim must wait for it, like the create.
    gate_tx.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    pause().await;
    assert!(!create.is_finished());
    assert!(
        !claim.is_finished(),
        "a claim was answered before the message it claimed was durable"
    );
    gate_tx.send(()).unwrap();
    create.await.unwrap().unwrap();
    let claimed = claim.await.unwrap().unwrap();
    assert_eq!(claimed.len(), 1);
}
