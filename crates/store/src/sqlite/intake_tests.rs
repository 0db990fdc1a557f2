//! Fresh deliveries handed straight to an attached [`Intake`] by the create that makes
//! them: the cases that hang on SQLite's writer (a write that does not commit, claims
//! waiting for the WAL fsync). The backend-agnostic ones are in the conformance suite.

use std::sync::atomic::{AtomicBool, Ordering};

use super::tests::{app, endpoint, message};
use super::*;
use crate::conformance::Recorder;

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
        start_at: None,
        in_flight_shared: 0,
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
            &crate::sealing::KeySource::Given(crate::sealing::MainKey::generate()),
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
