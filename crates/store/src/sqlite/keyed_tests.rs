//! Listings across the key tables' watermark.
//!
//! An application's messages and an endpoint's deliveries and attempts are listed from a
//! key table (rows up to a watermark) merged with a scan of the newer, recent rows. These
//! tests use a store that keys rows only when told to, read each listing with its rows
//! all recent, split across the watermark and all keyed, and compare every page, in both
//! orders and walked both ways, with an in-memory model of the same writes.

use std::collections::BTreeMap;
use std::future::Future;

use super::tests::report_for;
use super::*;
use DeliveryStatus::{Failed, Pending, Sending, Succeeded};

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open_manual_keys(dir.path().join("db.sqlite")).unwrap()
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

fn app() -> Application {
    tests::app(None)
}

fn endpoint(app_id: &str) -> Endpoint {
    tests::endpoint(app_id, 1000)
}

fn message(app_id: &str, event_type: &str) -> Message {
    Message {
        event_type: event_type.into(),
        ..tests::message(app_id)
    }
}

/// Pages through a listing in both orders and at several page sizes, each walk forward
/// to the end and then back with `prev_iterator` (which must retrace the same pages), and
/// compares it with `want`, the keys in ascending order.
async fn check_listing<T, F, Fut>(
    what: &str,
    want: &[String],
    key: impl Fn(&T) -> String,
    mut list: F,
) where
    F: FnMut(ListQuery) -> Fut,
    Fut: Future<Output = Result<Page<T>>>,
{
    for order in [Order::Ascending, Order::Descending] {
        let mut want = want.to_vec();
        if order == Order::Descending {
            want.reverse();
        }
        for limit in [1, 7, 50] {
            let at = format!("{what}, {order:?}, limit {limit}");
            let query = |iterator| ListQuery {
                limit,
                iterator,
                order,
            };
            let mut pages: Vec<Vec<String>> = Vec::new();
            let mut iterator = None;
            let last = loop {
                let page = list(query(iterator)).await.unwrap();
                pages.push(page.data.iter().map(&key).collect());
                if page.done {
                    break page;
                }
                assert_eq!(
                    pages.last().unwrap().len(),
                    limit,
                    "{at}: a short page before the end"
                );
                assert!(pages.len() <= want.len(), "{at}: more pages than rows");
                iterator = Some(
                    page.iterator
                        .expect("a page that is not done has an iterator"),
                );
            };
            assert_eq!(pages.concat(), want, "{at}");
            let mut prev = last.prev_iterator;
            for earlier in pages.iter().rev().skip(1) {
                let page = list(query(Some(prev.expect("a prev_iterator"))))
                    .await
                    .unwrap();
                let got: Vec<String> = page.data.iter().map(&key).collect();
                assert_eq!(&got, earlier, "{at}: walking back");
                prev = page.prev_iterator;
            }
            if let Some(it) = prev {
                let page = list(query(Some(it))).await.unwrap();
                assert!(page.data.is_empty(), "{at}: rows before the first page");
            }
        }
    }
}

fn matches(m: &Message, q: &MessageQuery) -> bool {
    let has = |list: &Option<Vec<String>>, v: &String| list.as_ref().is_some_and(|l| l.contains(v));
    q.event_types
        .as_ref()
        .is_none_or(|t| t.contains(&m.event_type))
        && q.channel.as_ref().is_none_or(|c| has(&m.channels, c))
        && q.tag.as_ref().is_none_or(|t| has(&m.tags, t))
        && q.before.is_none_or(|b| m.created_at < b)
        && q.after.is_none_or(|a| m.created_at > a)
}

fn done(ok: bool) -> Option<NextStep> {
    Some(if ok {
        NextStep::Succeeded
    } else {
        NextStep::Failed
    })
}

fn view(key: &str, status: DeliveryStatus, attempts: u32) -> String {
    format!("{key} {status:?} x{attempts}")
}

/// The single number `sql` reads, straight from the database.
async fn number(store: &SqliteStore, sql: String) -> i64 {
    let got = store.read(move |c| c.query_row(&sql, [], |r| r.get(0)).map_err(backend));
    got.await.unwrap()
}

/// No key of a deleted tenant is left.
async fn assert_no_keys(store: &SqliteStore, tenants: &[(&Keyed, &str)]) {
    for (keyed, tenant) in tenants {
        let keys = keyed.keys;
        let sql = format!("SELECT count(*) FROM {keys} WHERE tenant = '{tenant}'");
        assert_eq!(number(store, sql).await, 0, "{keys} left for {tenant}");
    }
}

/// The store under test and what it should hold: the messages, each delivery's state and
/// attempt count by (endpoint, message), and the attempt log.
struct Model<'a> {
    store: &'a SqliteStore,
    msgs: Vec<Message>,
    deliveries: BTreeMap<(String, String), (DeliveryStatus, u32)>,
    attempts: Vec<Attempt>,
}

impl<'a> Model<'a> {
    fn new(store: &'a SqliteStore) -> Self {
        let (msgs, deliveries, attempts) = Default::default();
        Model {
            store,
            msgs,
            deliveries,
            attempts,
        }
    }

    async fn index(&self) {
        self.store.index_keys_now().await.unwrap();
    }

    /// Creates `msg`, which must fan out to exactly `eps`.
    async fn send(&mut self, msg: Message, eps: &[&Endpoint]) {
        let msg = self.store.create_message(msg).await.unwrap();
        for ep in eps {
            let key = (ep.id.clone(), msg.id.clone());
            self.deliveries.insert(key, (Pending, 0));
        }
        self.msgs.push(msg);
    }

    /// Claims everything due at `at` and reports each claimed delivery as `outcome` says
    /// (given its place in the claim; `None` leaves it in flight).
    async fn claim_and_report(
        &mut self,
        at: DateTime<Utc>,
        outcome: impl Fn(usize, &ClaimedDelivery) -> Option<NextStep>,
    ) {
        let claimed = self
            .store
            .claim_deliveries(at, minutes(1), 10_000, 10_000, &[]);
        for (k, d) in claimed.await.unwrap().iter().enumerate() {
            let key = (d.endpoint.id.clone(), d.message.id.clone());
            let state = self
                .deliveries
                .get_mut(&key)
                .expect("a delivery the model knows");
            state.0 = Sending;
            let Some(next) = outcome(k, d) else { continue };
            let report = report_for(d, next.clone());
            let out = self
                .store
                .report_attempt(d.id, &d.lease_token, report.clone());
            assert_eq!(out.await.unwrap().applied, Applied::Yes);
            state.0 = match next {
                NextStep::Succeeded => Succeeded,
                NextStep::Failed => Failed,
                NextStep::RetryAt(_) => Pending,
            };
            state.1 += 1;
            self.attempts.push(report.attempt);
        }
    }

    /// Forgets what the store deletes with endpoint `ep`.
    fn forget(&mut self, ep: &str) {
        self.deliveries.retain(|(e, _), _| e != ep);
        self.attempts.retain(|a| a.endpoint_id != ep);
    }

    /// What `recover` does to `ep`'s failed deliveries of the messages `pick` picks.
    fn recover(&mut self, ep: &str, pick: impl Fn(&Message) -> bool) -> u64 {
        let mut n = 0;
        for m in self.msgs.iter().filter(|m| pick(m)) {
            match self.deliveries.get_mut(&(ep.to_string(), m.id.clone())) {
                Some(state) if state.0 == Failed => (state.0, n) = (Pending, n + 1),
                _ => {}
            }
        }
        n
    }

    fn attempt_ids(&self, keep: impl Fn(&Attempt) -> bool) -> Vec<String> {
        let mut ids: Vec<String> = self
            .attempts
            .iter()
            .filter(|a| keep(a))
            .map(|a| a.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Every application's messages, unfiltered and under each filter.
    async fn check_messages(&self, apps: &[&str], phase: &str) {
        let cut = |third: usize| self.msgs[third * (self.msgs.len() - 1) / 3].created_at;
        let types = |t: &[&str]| Some(t.iter().map(|t| t.to_string()).collect());
        let mut filters = vec![MessageQuery::default(); 8];
        filters[1].event_types = types(&["a"]);
        filters[2].event_types = types(&["b", "none"]);
        filters[3].channel = Some("c2".into());
        filters[4].tag = Some("t".into());
        filters[5].after = Some(cut(1));
        filters[6].before = Some(cut(2));
        filters[7] = MessageQuery {
            channel: Some("c1".into()),
            ..filters[1].clone()
        };
        (filters[7].after, filters[7].before) = (Some(cut(1)), Some(cut(2)));
        for &app_id in apps {
            for filter in &filters {
                let mut want: Vec<String> = (self.msgs.iter())
                    .filter(|m| m.app_id == app_id && matches(m, filter))
                    .map(|m| m.id.clone())
                    .collect();
                want.sort();
                let what = format!("{phase}: messages of {app_id}, {filter:?}");
                check_listing(
                    &what,
                    &want,
                    |m: &Message| m.id.clone(),
                    |list| {
                        let q = MessageQuery {
                            list,
                            ..filter.clone()
                        };
                        async move { self.store.list_messages(app_id, &q).await }
                    },
                )
                .await;
            }
        }
    }

    /// The endpoint's counts, deliveries (all and by status) and attempts, and that none
    /// of it shows through another application.
    async fn check_endpoint(&self, ep: &Endpoint, phase: &str) {
        let (store, app, ep) = (self.store, ep.app_id.as_str(), ep.id.as_str());
        for (app_id, mine) in [(app, true), ("app_stranger", false)] {
            let phase = format!("{phase}, through {app_id}");
            let mut want = BTreeMap::new();
            if mine {
                want.extend(self.deliveries.iter().filter(|((e, _), _)| e == ep));
            }
            let count = |s| want.values().filter(|(x, _)| *x == s).count() as u64;
            let counts = DeliveryCounts {
                pending: count(Pending),
                sending: count(Sending),
                succeeded: count(Succeeded),
                failed: count(Failed),
            };
            let got = store.endpoint_stats(app_id, ep).await.unwrap();
            assert_eq!(got, counts, "{phase}: counts of {ep}");
            for status in [
                None,
                Some(Pending),
                Some(Sending),
                Some(Succeeded),
                Some(Failed),
            ] {
                let want: Vec<String> = (want.iter())
                    .filter(|(_, (s, _))| status.is_none_or(|f| f == *s))
                    .map(|((_, msg), (s, n))| view(msg, *s, *n))
                    .collect();
                let key = |d: &DeliveryView| {
                    assert_eq!(d.endpoint_id, ep);
                    view(&d.msg_id, d.status, d.attempts)
                };
                let what = format!("{phase}: deliveries to {ep}, {status:?}");
                check_listing(&what, &want, key, |list| async move {
                    store
                        .list_endpoint_deliveries(app_id, ep, &list, status)
                        .await
                })
                .await;
            }
            for succeeded in [None, Some(false)] {
                let want = self.attempt_ids(|a| {
                    mine && a.endpoint_id == ep && succeeded.is_none_or(|s| a.succeeded == s)
                });
                let what = format!("{phase}: attempts at {ep}, succeeded {succeeded:?}");
                check_listing(
                    &what,
                    &want,
                    |a: &Attempt| a.id.clone(),
                    |list| {
                        let q = AttemptQuery {
                            list,
                            endpoint_id: Some(ep.into()),
                            succeeded,
                            ..Default::default()
                        };
                        async move { store.list_attempts(app_id, &q).await }
                    },
                )
                .await;
            }
        }
    }

    /// Each message's deliveries and attempts, and the application's whole attempt log.
    async fn check_per_message(&self, app_id: &str, phase: &str) {
        let list = ListQuery {
            limit: 10_000,
            ..Default::default()
        };
        let q = AttemptQuery {
            list: list.clone(),
            ..Default::default()
        };
        let mut queries = vec![(q.clone(), self.attempt_ids(|a| a.app_id == app_id))];
        for m in self.msgs.iter().filter(|m| m.app_id == app_id) {
            let page = self
                .store
                .list_message_deliveries(app_id, &m.id, &list)
                .await;
            let got: Vec<String> = (page.unwrap().data.iter())
                .map(|d| view(&d.endpoint_id, d.status, d.attempts))
                .collect();
            let want: Vec<String> = (self.deliveries.iter())
                .filter(|((_, msg), _)| *msg == m.id)
                .map(|((ep, _), (s, n))| view(ep, *s, *n))
                .collect();
            assert_eq!(got, want, "{phase}: deliveries of {}", m.id);
            let q = AttemptQuery {
                msg_id: Some(m.id.clone()),
                ..q.clone()
            };
            queries.push((q, self.attempt_ids(|a| a.msg_id == m.id)));
        }
        for (q, want) in queries {
            let page = self.store.list_attempts(app_id, &q).await.unwrap();
            let got: Vec<String> = page.data.into_iter().map(|a| a.id).collect();
            assert_eq!(
                got, want,
                "{phase}: attempts in {app_id}, of {:?}",
                q.msg_id
            );
        }
    }
}

#[tokio::test]
async fn message_listing_is_the_same_before_during_and_after_keying() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut model = Model::new(&store);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(store.create_app(app()).await.unwrap().id);
    }
    let apps: Vec<&str> = ids.iter().map(String::as_str).collect();
    for i in 0..60 {
        if i == 25 {
            model.check_messages(&apps, "25 recent").await;
            model.index().await;
            model.check_messages(&apps, "25 keyed").await;
        }
        // Applications, types, channels and tags interleave independently.
        let mut m = message(apps[i % 5 % 3], ["a", "b"][i % 2]);
        m.channels = [
            None,
            Some(vec!["c1".into()]),
            Some(vec!["c1".into(), "c2".into()]),
        ][i % 3]
            .clone();
        m.tags = (i % 4 == 0).then(|| vec!["t".into()]);
        model.send(m, &[]).await;
    }
    model.check_messages(&apps, "25 keyed, 35 recent").await;
    model.index().await;
    model.check_messages(&apps, "60 keyed").await;
}

#[tokio::test]
async fn endpoint_deliveries_and_attempts_list_across_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut model = Model::new(&store);
    let a = store.create_app(app()).await.unwrap();
    let b = store.create_app(app()).await.unwrap();
    let ep1 = store.create_endpoint(endpoint(&a.id)).await.unwrap();
    let ep2 = store.create_endpoint(endpoint(&a.id)).await.unwrap();
    let other = store.create_endpoint(endpoint(&b.id)).await.unwrap();
    let t0 = now() + minutes(1);
    for round in 0..4 {
        // An hour apart: what was left in flight or set to retry in half an hour is
        // claimed again, so keyed deliveries change state and get more attempts.
        let at = t0 + minutes(60 * round as i64);
        for i in 0..5 {
            model.send(message(&a.id, "a"), &[&ep1, &ep2]).await;
            if i == 0 {
                model.send(message(&b.id, "a"), &[&other]).await;
            }
        }
        let outcome = |k: usize, _: &ClaimedDelivery| match (k + round) % 4 {
            2 => Some(NextStep::RetryAt(at + minutes(30))),
            3 => None,
            n => done(n == 0),
        };
        model.claim_and_report(at, outcome).await;
        // Work nobody has tried yet.
        model.send(message(&a.id, "a"), &[&ep1, &ep2]).await;
        if round % 2 == 0 {
            model.index().await;
        }
        for ep in [&ep1, &ep2] {
            model.check_endpoint(ep, &format!("round {round}")).await;
        }
    }
    model.index().await;
    for ep in [&ep1, &ep2, &other] {
        model.check_endpoint(ep, "all keyed").await;
    }
}

#[tokio::test]
async fn recover_reaches_recent_and_keyed_failures() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut model = Model::new(&store);
    let a = store.create_app(app()).await.unwrap();
    let b = store.create_app(app()).await.unwrap();
    let ep = store.create_endpoint(endpoint(&a.id)).await.unwrap();
    let other = store.create_endpoint(endpoint(&a.id)).await.unwrap();
    // Message i is created at base + 10 s * i; 0..6 get keyed, 6..12 stay recent. At
    // `ep` every third message succeeds and the others fail; at `other` all fail.
    let base = now() - minutes(60);
    let secs = |s: i64| base + chrono::Duration::seconds(s);
    let index = |m: &Message| (m.created_at - base).num_seconds() / 10;
    for i in 0..12 {
        let mut m = message(&a.id, "a");
        m.created_at = secs(10 * i);
        model.send(m, &[&ep, &other]).await;
        if i % 6 == 5 {
            let outcome = |_: usize, d: &ClaimedDelivery| {
                done(d.endpoint.id == ep.id && index(&d.message) % 3 == 2)
            };
            model.claim_and_report(now(), outcome).await;
        }
        if i == 5 {
            model.index().await;
        }
    }
    model.check_endpoint(&ep, "failed").await;
    // Another application cannot recover this endpoint's deliveries.
    let got = store.recover(&b.id, &ep.id, base, None, now()).await;
    assert_eq!(got.unwrap(), 0);
    // A window over keyed (3, 4) and recent (6, 7) failures, then the rest: keyed (0, 1)
    // and recent (9, 10).
    let got = store
        .recover(&a.id, &ep.id, secs(30), Some(secs(90)), now())
        .await;
    let want = model.recover(&ep.id, |m| (3..9).contains(&index(m)));
    assert_eq!((got.unwrap(), want), (4, 4));
    model.check_endpoint(&ep, "window recovered").await;
    let got = store.recover(&a.id, &ep.id, base, None, now()).await;
    assert_eq!((got.unwrap(), model.recover(&ep.id, |_| true)), (4, 4));
    model.check_endpoint(&ep, "all recovered").await;
    model.check_endpoint(&other, "not recovered").await;
}

#[tokio::test]
async fn deleting_removes_rows_and_keys_and_new_rows_still_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut model = Model::new(&store);
    let top = |table: &str| number(&store, format!("SELECT max(rowid) FROM {table}"));
    let a = store.create_app(app()).await.unwrap();
    let ep1 = store.create_endpoint(endpoint(&a.id)).await.unwrap();
    // Messages of type "b" go to ep1 alone.
    let mut ep2 = endpoint(&a.id);
    ep2.settings.event_types = Some(vec!["a".into()]);
    let ep2 = store.create_endpoint(ep2).await.unwrap();
    let alternate = |k: usize, _: &ClaimedDelivery| done(k % 2 != 1);
    let later = || now() + minutes(1);
    // ep1's deliveries and attempts: keyed among ep2's, keyed with the highest rowids
    // below the watermark, and recent above it.
    for i in 0..8 {
        if i < 4 {
            model.send(message(&a.id, "a"), &[&ep1, &ep2]).await;
        } else {
            model.send(message(&a.id, "b"), &[&ep1]).await;
        }
        if i % 2 == 1 {
            model.claim_and_report(later(), alternate).await;
        }
        if i == 5 {
            model.index().await;
        }
    }
    let (deliveries_top, attempts_top) = (top("deliveries").await, top("attempts").await);
    store.delete_endpoint(&a.id, &ep1.id).await.unwrap();
    model.forget(&ep1.id);
    assert_no_keys(
        &store,
        &[(&DELIVERY_KEYS, &ep1.id), (&ATTEMPT_KEYS, &ep1.id)],
    )
    .await;
    // ep1's rows were the newest: the next rows written get rowids its keyed ones had.
    let (deliveries_left, attempts_left) = (top("deliveries").await, top("attempts").await);
    assert!(
        deliveries_left < deliveries_top && attempts_left < attempts_top,
        "ep1's rows were not the newest"
    );
    // The same endpoint id again, and new (unkeyed) deliveries and attempts that get the
    // rowids of ep1's keyed ones: they list, and nothing of the old ep1 does.
    let ep1 = Endpoint {
        id: ep1.id.clone(),
        ..endpoint(&a.id)
    };
    store.create_endpoint(ep1.clone()).await.unwrap();
    for _ in 0..2 {
        model.send(message(&a.id, "a"), &[&ep1, &ep2]).await;
    }
    model.claim_and_report(later(), alternate).await;
    assert!(
        top("deliveries").await > deliveries_left && top("attempts").await > attempts_left,
        "no new deliveries or attempts were written over ep1's rowids"
    );
    for ep in [&ep1, &ep2] {
        model.check_endpoint(ep, "endpoint deleted").await;
    }
    model.check_per_message(&a.id, "endpoint deleted").await;

    // Application z comes last: its messages, deliveries and attempts have the highest
    // rowids, all keyed, when it is deleted.
    let z = store.create_app(app()).await.unwrap();
    let ez = store.create_endpoint(endpoint(&z.id)).await.unwrap();
    for _ in 0..4 {
        model.send(message(&z.id, "a"), &[&ez]).await;
    }
    model.claim_and_report(later(), alternate).await;
    model.index().await;
    let messages_top = top("messages").await;
    store.delete_app(&z.id).await.unwrap();
    model.forget(&ez.id);
    model.msgs.retain(|m| m.app_id != z.id);
    let gone = [
        (&MESSAGE_KEYS, &z.id),
        (&DELIVERY_KEYS, &ez.id),
        (&ATTEMPT_KEYS, &ez.id),
    ];
    assert_no_keys(&store, &gone.map(|(k, t)| (k, t.as_str()))).await;
    // New messages in a take z's rowids, at or below the watermark, unkeyed.
    for _ in 0..3 {
        model.send(message(&a.id, "a"), &[&ep1, &ep2]).await;
    }
    assert!(
        top("messages").await <= messages_top,
        "message rowids reused"
    );
    model.claim_and_report(later(), alternate).await;
    // z again, with its endpoint, under the same ids: it owns nothing.
    store
        .create_app(Application {
            id: z.id.clone(),
            ..app()
        })
        .await
        .unwrap();
    store.create_endpoint(ez.clone()).await.unwrap();
    for phase in ["app deleted", "all keyed"] {
        if phase == "all keyed" {
            model.index().await;
        }
        model.check_messages(&[&a.id, &z.id], phase).await;
        for ep in [&ep1, &ep2, &ez] {
            model.check_endpoint(ep, phase).await;
        }
        model.check_per_message(&a.id, phase).await;
        model.check_per_message(&z.id, phase).await;
    }
}

#[tokio::test]
async fn the_writer_keys_recent_rows_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
    let keyed = || {
        store.read(|c| {
            c.query_row("SELECT count(*) FROM message_keys", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(backend)
        })
    };
    let a = store.create_app(app()).await.unwrap();
    store.create_message(message(&a.id, "a")).await.unwrap();
    assert_eq!(
        keyed().await.unwrap(),
        0,
        "fewer than a batch, and too soon"
    );
    // Past KEY_ALL_EVERY, the next group keys whatever is recent, itself included.
    tokio::time::sleep(KEY_ALL_EVERY + std::time::Duration::from_millis(100)).await;
    store.create_message(message(&a.id, "a")).await.unwrap();
    assert_eq!(keyed().await.unwrap(), 2);
}

#[tokio::test]
async fn attempt_stats_are_read_by_the_primary_key_s_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let plan: Vec<String> = store
        .read(|c| {
            let mut stmt = c
                .prepare(&format!("EXPLAIN QUERY PLAN {}", store::STATS_SQL))
                .map_err(backend)?;
            let rows = stmt
                .query_map(params!["e", 3600, 0, 1, "a"], |r| r.get::<_, String>(3))
                .map_err(backend)?;
            rows.collect::<std::result::Result<Vec<_>, _>>()
                .map_err(backend)
        })
        .await
        .unwrap();
    assert!(
        plan.iter()
            .any(|p| p.starts_with("SEARCH attempt_stats USING PRIMARY KEY")
                && p.contains("scope=? AND span=? AND start>? AND start<?")),
        "{plan:#?}"
    );
    assert!(!plan.iter().any(|p| p.starts_with("SCAN")), "{plan:#?}");
}

/// The failed messages' walk takes the partial index of failed deliveries in the
/// listing's order (no sort, no scan of the deliveries), with a cursor and filters too,
/// and a filter that matches nothing still has a plan.
#[tokio::test]
async fn failed_messages_are_walked_on_the_partial_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for (past, filter, args) in [
        ("", "", vec![Value::Text("a".into()), Value::Integer(3)]),
        (
            " AND deliveries.msg_id < ?",
            " AND messages.event_type IN (?)",
            vec![
                Value::Text("a".into()),
                Value::Text("msg_x".into()),
                Value::Text("t".into()),
                Value::Integer(3),
            ],
        ),
        (
            "",
            " AND messages.event_type IN ()",
            vec![Value::Text("a".into()), Value::Integer(3)],
        ),
    ] {
        let sql = format!(
            "EXPLAIN QUERY PLAN {}",
            listing::failed_sql("messages.id", past, filter, "DESC")
        );
        let plan: Vec<String> = store
            .read(move |c| {
                let mut stmt = c.prepare(&sql).map_err(backend)?;
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                    .map_err(backend)?;
                rows.collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(backend)
            })
            .await
            .unwrap();
        if filter.contains("IN ()") {
            continue;
        }
        assert!(
            plan.iter()
                .any(|p| p.contains("SEARCH deliveries USING INDEX deliveries_failed")),
            "{plan:#?}"
        );
        assert!(
            !plan
                .iter()
                .any(|p| p.starts_with("SCAN") || p.contains("TEMP B-TREE")),
            "{plan:#?}"
        );
    }
}
