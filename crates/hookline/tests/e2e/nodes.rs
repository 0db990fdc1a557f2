//! Several hookline processes ("nodes") on one PostgreSQL database, as real processes:
//! one killed under load, a rolling restart, a failing endpoint's limit across nodes,
//! operational webhooks raised once cluster-wide (also by a node that stalls past its
//! lease), and nodes starting at the same instant on an empty database.
//!
//! Each test makes a database of its own on the server named by
//! `HOOKLINE_TEST_POSTGRES_URL` (skipped, saying so, without it). `scripts/test` runs this
//! module once, not again in its pass with every e2e server on PostgreSQL: these tests
//! choose their databases themselves.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::receiver::{Behavior, Receiver};
use crate::support::{
    admin_client, app_with_endpoint, wait_until, Api, Server, TestDb, ADMIN_TOKEN,
};

/// The `--lease-secs` of the nodes whose takeover a test waits for (the least allowed).
const LEASE_SECS: u64 = 10;

/// Starts `n` nodes on `db`, one after the other, each with `extra` flags.
async fn start_nodes(db: &TestDb, n: usize, extra: &[&str]) -> Vec<Server> {
    let args = node_args(db, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(Server::start_with(&args).await);
    }
    nodes
}

/// The flags of a node on `db`: loopback receivers allowed, a small connection pool
/// (three nodes, and other tests, share the server's connections), and `extra`.
fn node_args(db: &TestDb, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--database-url",
        &db.url,
        "--allow-target",
        "127.0.0.0/8",
        "--database-pool-size",
        "8",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The node id a node runs as (kept in its data dir): its lease tokens are `ID.RANDOM`.
fn node_id(node: &Server) -> String {
    let path = node.data_dir.join("node-id");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Load on a cluster: clients creating messages round-robin over the nodes that are up,
/// recording what each create was answered.
struct Load {
    /// Each node's API base URL, `None` while the node is down.
    nodes: RwLock<Vec<Option<String>>>,
    /// The messages path of the application the load creates in.
    path: String,
    /// The number of the next create.
    next: AtomicUsize,
    /// Creates to make in all.
    limit: usize,
    stop: AtomicBool,
    /// Ids of the messages answered 202 (acknowledged), with the node that answered.
    acked: Mutex<Vec<(String, usize)>>,
    /// Creates not acknowledged: refused (503) or cut off (a node stopping or killed).
    unacked: AtomicUsize,
    /// Any other answer (a 500, a 4xx, no answer within 10 s), as a line for the failure
    /// message.
    wrong: Mutex<Vec<String>>,
    http: reqwest::Client,
}

impl Load {
    /// `clients` clients making `limit` creates in all (or until [`Load::stop`]) in
    /// application `app` through `nodes`.
    fn start(
        nodes: &[Server],
        app: &str,
        clients: usize,
        limit: usize,
    ) -> (Arc<Load>, tokio::task::JoinSet<()>) {
        let load = Arc::new(Load {
            nodes: RwLock::new(nodes.iter().map(|n| Some(n.base.clone())).collect()),
            path: format!("/api/v1/app/{app}/msg"),
            next: AtomicUsize::new(0),
            limit,
            stop: AtomicBool::new(false),
            acked: Mutex::default(),
            unacked: AtomicUsize::new(0),
            wrong: Mutex::default(),
            http: reqwest::Client::new(),
        });
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..clients {
            tasks.spawn(load.clone().client());
        }
        (load, tasks)
    }

    /// Node `i` goes down: no more creates are sent to it.
    fn down(&self, i: usize) {
        self.nodes.write().unwrap()[i] = None;
    }

    /// Node `i` is up (again) at `base`.
    fn up(&self, i: usize, base: &str) {
        self.nodes.write().unwrap()[i] = Some(base.to_string());
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn acked_by(&self, node: usize) -> usize {
        let acked = self.acked.lock().unwrap();
        acked.iter().filter(|(_, n)| *n == node).count()
    }

    fn acked_ids(&self) -> Vec<String> {
        let acked = self.acked.lock().unwrap();
        acked.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Create `n` goes to node `n % nodes`, or the next one up.
    fn node_for(&self, n: usize) -> Option<(usize, String)> {
        let nodes = self.nodes.read().unwrap();
        (0..nodes.len())
            .map(|k| (n + k) % nodes.len())
            .find_map(|i| Some((i, nodes[i].clone()?)))
    }

    async fn client(self: Arc<Self>) {
        while !self.stop.load(Ordering::SeqCst) {
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            if n >= self.limit {
                return;
            }
            let Some((node, base)) = self.node_for(n) else {
                self.unacked.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let sent = self
                .http
                .post(format!("{base}{}", self.path))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"eventType": "t", "payload": {"n": n}}))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            let answer = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.json::<Value>().await {
                        Ok(body) => Ok((status, body)),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            match answer {
                Ok((202, body)) => {
                    let id = body["id"].as_str().expect("the message's id").to_string();
                    self.acked.lock().unwrap().push((id, node));
                }
                Ok((503, _)) => {
                    self.unacked.fetch_add(1, Ordering::SeqCst);
                }
                Ok((status, body)) => self
                    .wrong
                    .lock()
                    .unwrap()
                    .push(format!("create {n} at node {node}: {status} {body}")),
                Err(e) if e.is_timeout() => self
                    .wrong
                    .lock()
                    .unwrap()
                    .push(format!("create {n} at node {node}: no answer within 10 s")),
                // Cut off: the node went down while the create was on its way.
                Err(_) => {
                    self.unacked.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// Waits for the clients (to make all their creates, unless stopped) and checks that
    /// every answer was a 202, a 503, or a connection the node's going down cut off.
    async fn finish(&self, mut clients: tokio::task::JoinSet<()>) {
        while let Some(done) = clients.join_next().await {
            done.expect("a load client");
        }
        let wrong = self.wrong.lock().unwrap().clone();
        assert!(
            wrong.is_empty(),
            "{} creates were answered neither 202 nor 503 (first 10): {:#?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        );
    }
}

/// How many times each `webhook-id` reached `path`.
fn arrivals(recv: &Receiver, path: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for (id, _) in recv.ids_to(path) {
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

/// Waits (up to `within`) until every one of `ids` reached `path`; panics naming the
/// missing ones otherwise. Returns how many times each id arrived.
async fn wait_delivered(
    recv: &Receiver,
    path: &str,
    ids: &[String],
    within: Duration,
) -> HashMap<String, usize> {
    let start = Instant::now();
    loop {
        let seen = arrivals(recv, path);
        let missing: Vec<&String> = ids.iter().filter(|id| !seen.contains_key(*id)).collect();
        if missing.is_empty() {
            return seen;
        }
        assert!(
            start.elapsed() < within,
            "{} of {} acknowledged messages not delivered within {within:?} (first 10): {:?}",
            missing.len(),
            ids.len(),
            &missing[..missing.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ids that arrived more than once, and how many arrivals were repeats.
fn duplicates(seen: &HashMap<String, usize>) -> (Vec<String>, usize) {
    let ids: Vec<String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id.clone())
        .collect();
    let repeats = seen.values().map(|n| n - 1).sum();
    (ids, repeats)
}

/// Three nodes, 10 000 creates round-robin over their APIs by concurrent clients; one
/// node is killed (SIGKILL) once a quarter of them has arrived. No acknowledged message
/// is lost. The deliveries the dead node held (leased, maybe under way) are taken over
/// once their lease (`--lease-secs 10`) runs out and arrive within a few seconds of
/// it; they are the only ones that may arrive twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_under_load_loses_nothing_acknowledged() {
    const TEST: &str = "a_node_killed_under_load_loses_nothing_acknowledged";
    const MESSAGES: usize = 10_000;
    let Some(db) = TestDb::create(TEST).await else {
        return;
    };
    let recv = Receiver::start().await;
    // Deliveries take a moment, so some are under way on the node when it dies.
    recv.set("/hook", Behavior::Delay(Duration::from_millis(5), 200));
    let lease = LEASE_SECS.to_string();
    let mut nodes = start_nodes(&db, 3, &["--lease-secs", &lease]).await;
    let (app, _) = app_with_endpoint(
        &nodes[0].client(),
        json!({"url": recv.url("/hook"), "maxConcurrency": 64}),
    )
    .await;
    let started = Instant::now();
    let (load, clients) = Load::start(&nodes, &app, 12, MESSAGES);
    wait_until(
        Duration::from_secs(120),
        "a quarter of the messages arrived",
        || recv.count() >= MESSAGES / 4,
    )
    .await;

    // The kill, while the receiver is slow for a moment, so the node has attempts under
    // way (not only ones it just claimed). What it held is in the database: deliveries
    // `sending` under a lease of its own.
    const DEAD: usize = 1;
    recv.set("/hook", Behavior::Delay(Duration::from_millis(300), 200));
    tokio::time::sleep(Duration::from_millis(100)).await;
    load.down(DEAD);
    let dead = node_id(&nodes[DEAD]);
    nodes[DEAD].kill().await;
    let killed = Instant::now();
    recv.set("/hook", Behavior::Delay(Duration::from_millis(5), 200));
    let killed_at = started.elapsed();
    let created_at_kill = load.next.load(Ordering::SeqCst).min(MESSAGES);
    let arrived_at_kill = recv.count();
    let admin = admin_client(&db.url).await;
    let held: HashSet<String> = admin
        .query(
            "SELECT msg_id FROM deliveries WHERE status = 'sending' AND lease_token LIKE $1",
            &[&format!("{dead}.%")],
        )
        .await
        .expect("the dead node's deliveries")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !held.is_empty(),
        "the node held no deliveries when it was killed: the test shows nothing"
    );

    load.finish(clients).await;
    let acked = load.acked_ids();
    let created_in = started.elapsed();

    // Every acknowledged message arrives (those the dead node held after their lease).
    wait_delivered(&recv, "/hook", &acked, Duration::from_secs(LEASE_SECS + 60)).await;
    let delivered_in = started.elapsed();

    // The dead node's deliveries arrive again after the kill, within the lease and a
    // few seconds: taken over by the nodes left.
    let arrived_after_kill = || -> HashMap<String, Duration> {
        let mut first = HashMap::new();
        for (id, at) in recv.ids_to("/hook") {
            if at > killed && held.contains(&id) {
                first.entry(id).or_insert(at - killed);
            }
        }
        first
    };
    let deadline = Duration::from_secs(LEASE_SECS + 30);
    while arrived_after_kill().len() < held.len() && killed.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = arrived_after_kill();
    let never: Vec<&String> = held.iter().filter(|id| !first.contains_key(*id)).collect();
    assert!(
        never.is_empty(),
        "{} of the {} deliveries the dead node held did not arrive within {deadline:?} of \
         the kill (first 10): {:?}",
        never.len(),
        held.len(),
        &never[..never.len().min(10)]
    );
    let taken_over = first.values().copied().max().unwrap_or_default();
    let within = Duration::from_secs(LEASE_SECS + 5);
    assert!(
        taken_over <= within,
        "the dead node's {} deliveries arrived {taken_over:?} after the kill (lease {LEASE_SECS} s)",
        held.len()
    );
    let seen = arrivals(&recv, "/hook");

    // Repeats: only what the dead node held, each at most once more.
    let (repeated, repeats) = duplicates(&seen);
    let foreign: Vec<&String> = repeated.iter().filter(|id| !held.contains(*id)).collect();
    assert!(
        foreign.is_empty(),
        "{} messages the dead node did not hold arrived more than once (first 10): {:?}",
        foreign.len(),
        &foreign[..foreign.len().min(10)]
    );
    assert!(
        seen.values().all(|n| *n <= 2),
        "a message arrived three times or more"
    );
    eprintln!(
        "{TEST}: {} of {MESSAGES} creates acknowledged ({} not: refused or cut off by the \
         kill); killed node {DEAD} at {killed_at:?} with {arrived_at_kill} arrived and \
         {created_at_kill} creates begun; it held {} deliveries, which arrived again \
         {taken_over:?} after the kill (lease {LEASE_SECS} s); {repeats} duplicates \
         ({} messages); creates done at {created_in:?}, all delivered at {delivered_in:?}",
        acked.len(),
        load.unacked.load(Ordering::SeqCst),
        held.len(),
        repeated.len(),
    );
    drop(nodes);
    db.drop_db().await;
}

/// A rolling restart under load: each of three nodes in turn is stopped with SIGTERM
/// (it drains: stops taking work, finishes or hands back its attempts, exits 0) and
/// started again, while clients keep creating through the nodes that are up. Nothing
/// acknowledged is lost and nothing arrives twice; afterwards every delivery is recorded
/// as succeeded with one attempt each, so nothing is left to arrive again later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_loses_and_repeats_nothing() {
    const TEST: &str = "a_rolling_restart_under_load_loses_and_repeats_nothing";
    let Some(db) = TestDb::create(TEST).await else {
        return;
    };
    let recv = Receiver::start().await;
    // Attempts take a moment, so some are under way when a node is told to stop.
    recv.set("/hook", Behavior::Delay(Duration::from_millis(20), 200));
    let lease = LEASE_SECS.to_string();
    let mut nodes = start_nodes(&db, 3, &["--lease-secs", &lease]).await;
    let (app, _) = app_with_endpoint(
        &nodes[0].client(),
        json!({"url": recv.url("/hook"), "maxConcurrency": 32}),
    )
    .await;
    let started = Instant::now();
    let (load, clients) = Load::start(&nodes, &app, 6, usize::MAX);
    wait_until(Duration::from_secs(20), "200 creates acknowledged", || {
        load.acked() >= 200
    })
    .await;
    let mut steps = Vec::new();
    for (i, node) in nodes.iter_mut().enumerate() {
        // Creates keep coming to the node while it drains (they are refused or
        // answered); only once it is gone does the load leave it out.
        let in_flight = recv.in_flight("/hook");
        let t = Instant::now();
        let status = node.terminate().await;
        let drained_in = t.elapsed();
        load.down(i);
        assert!(
            status.success(),
            "node {i} exited with {status} after SIGTERM"
        );
        node.restart().await;
        load.up(i, &node.base);
        let before = load.acked_by(i);
        wait_until(
            Duration::from_secs(20),
            "the restarted node acknowledges creates",
            || load.acked_by(i) >= before + 50,
        )
        .await;
        steps.push(format!(
            "node {i}: SIGTERM with {in_flight} attempts under way (all nodes), exited in {drained_in:?}"
        ));
    }
    load.stop();
    load.finish(clients).await;
    let acked = load.acked_ids();
    let seen = wait_delivered(&recv, "/hook", &acked, Duration::from_secs(30)).await;
    // Nothing left to arrive again: no delivery pending or leased, one attempt each
    // (the last reports are written a moment after their requests arrived).
    let admin = admin_client(&db.url).await;
    let counts = || async {
        let row = admin
            .query_one(
                "SELECT (SELECT count(*) FROM deliveries WHERE status <> 'succeeded'),
                        (SELECT count(*) FROM deliveries),
                        (SELECT count(*) FROM attempts)",
                &[],
            )
            .await
            .expect("count deliveries");
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2),
        )
    };
    let settle = Instant::now();
    let (unfinished, deliveries, attempts) = loop {
        let c = counts().await;
        if c.0 == 0 || settle.elapsed() > Duration::from_secs(10) {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (repeated, repeats) = duplicates(&seen);
    eprintln!(
        "{TEST}: {} creates acknowledged, {} not (refused or cut off by a stopping node) \
         in {:?}; {}; {deliveries} deliveries, {attempts} attempts, {repeats} duplicates",
        acked.len(),
        load.unacked.load(Ordering::SeqCst),
        started.elapsed(),
        steps.join("; "),
    );
    assert!(
        repeated.is_empty(),
        "{repeats} duplicate arrivals (first 10): {:?}",
        &repeated[..repeated.len().min(10)]
    );
    assert_eq!(unfinished, 0, "deliveries not succeeded");
    assert_eq!(attempts, deliveries, "attempts recorded: one per delivery");
    assert_eq!(
        recv.ids_to("/hook").len() as i64,
        attempts,
        "every arrival recorded as an attempt"
    );
    drop(nodes);
    db.drop_db().await;
}

/// Sends one message through `api` (`body` its JSON); its id.
async fn send(api: &Api, app: &str, body: Value) -> String {
    api.create(&format!("/api/v1/app/{app}/msg"), body).await["id"]
        .as_str()
        .expect("the message's id")
        .to_string()
}

/// A failing endpoint gets one attempt at a time across the cluster: three nodes, an
/// endpoint whose receiver holds each request 200 ms and answers 500; once its first
/// attempt failed, a dozen messages sent round-robin through the three nodes, each tried
/// twice, never have more than one attempt under way at once (each node alone would
/// allow one, so three in all).
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_endpoint_gets_one_attempt_at_a_time_across_nodes() {
    const TEST: &str = "a_failing_endpoint_gets_one_attempt_at_a_time_across_nodes";
    const MESSAGES: usize = 12;
    let Some(db) = TestDb::create(TEST).await else {
        return;
    };
    let recv = Receiver::start().await;
    recv.set("/failing", Behavior::Delay(Duration::from_millis(200), 500));
    let nodes = start_nodes(&db, 3, &[]).await;
    let apis: Vec<Api> = nodes.iter().map(Server::client).collect();
    let (app, _) = app_with_endpoint(
        &apis[0],
        json!({"url": recv.url("/failing"), "retryPolicy": {"kind": "schedule", "delaysSeconds": [1]}}),
    )
    .await;
    // The first attempt fails: from its report on, the endpoint is failing.
    let first = send(&apis[0], &app, json!({"eventType": "t", "payload": {}})).await;
    let (_, log) = apis[0]
        .get_until(&format!("/api/v1/app/{app}/attempt/msg/{first}"), |b| {
            b["data"].as_array().is_some_and(|d| !d.is_empty())
        })
        .await;
    assert_eq!(log["data"][0]["responseStatusCode"], json!(500), "{log}");
    recv.reset_max_concurrent("/failing");

    let started = Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..MESSAGES {
        let (api, app) = (apis[i % 3].clone(), app.clone());
        sends.spawn(async move {
            send(&api, &app, json!({"eventType": "t", "payload": {"i": i}})).await
        });
    }
    while let Some(sent) = sends.join_next().await {
        sent.expect("a create");
    }
    // Two attempts each, the first message's included.
    let attempts = 2 * (MESSAGES + 1);
    wait_until(
        Duration::from_secs(30),
        &format!("{attempts} attempts"),
        || recv.requests_to("/failing").len() >= attempts,
    )
    .await;
    let max = recv.max_concurrent("/failing");
    eprintln!(
        "{TEST}: {attempts} attempts in {:?}, at most {max} at once",
        started.elapsed()
    );
    assert_eq!(
        max, 1,
        "attempts to the failing endpoint at once across the nodes"
    );
    drop(nodes);
    db.drop_db().await;
}

/// Operational webhooks from a cluster: three nodes, each with the operator's URL, and an
/// endpoint that answers 500 to everything until it is disabled (after 3 s failing), with
/// messages sent round-robin through the nodes all along. Each message whose three
/// attempts all failed raises exactly one `message.attempt.exhausted`, the others none,
/// and the endpoint's disabling exactly one `endpoint.disabled` (counted as distinct
/// operational messages: a receiver dedupes repeats of one by its `webhook-id`).
#[tokio::test(flavor = "multi_thread")]
async fn operational_webhooks_are_raised_once_across_nodes() {
    const TEST: &str = "operational_webhooks_are_raised_once_across_nodes";
    let Some(db) = TestDb::create(TEST).await else {
        return;
    };
    let recv = Receiver::start().await;
    recv.set("/dead", Behavior::Status(500, vec![]));
    let ops = recv.url("/ops");
    let nodes = start_nodes(
        &db,
        3,
        &[
            "--operational-webhook-url",
            &ops,
            "--endpoint-disable-after-secs",
            "3",
        ],
    )
    .await;
    let apis: Vec<Api> = nodes.iter().map(Server::client).collect();
    let (app, ep) = app_with_endpoint(
        &apis[0],
        json!({"url": recv.url("/dead"), "retryPolicy": {"kind": "schedule", "delaysSeconds": [1, 1]}}),
    )
    .await;
    let started = Instant::now();
    let disabled = || async {
        let (_, body) = apis[0]
            .get(&format!("/api/v1/app/{app}/endpoint/{ep}"))
            .await;
        body["disabled"] == json!(true)
    };
    let mut sent = Vec::new();
    while !disabled().await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the endpoint was not disabled within 20 s"
        );
        let i = sent.len();
        sent.push(
            send(
                &apis[i % 3],
                &app,
                json!({"eventType": "t", "payload": {"i": i}}),
            )
            .await,
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let disabled_in = started.elapsed();

    // Exhausted: the messages all of whose three attempts ran (and failed).
    let tries = arrivals(&recv, "/dead");
    let exhausted: HashSet<&String> = sent
        .iter()
        .filter(|id| tries.get(*id).copied().unwrap_or(0) >= 3)
        .collect();
    assert!(
        !exhausted.is_empty(),
        "no message was exhausted before the endpoint was disabled: {tries:?}"
    );
    // Operational messages: (type, msgId or endpointId) -> their distinct webhook-ids.
    let events = || -> HashMap<(String, String), HashSet<String>> {
        let mut out: HashMap<(String, String), HashSet<String>> = HashMap::new();
        for req in recv.requests_to("/ops") {
            let v: Value = serde_json::from_slice(&req.body).expect("an operational webhook");
            let kind = v["type"].as_str().unwrap_or_default().to_string();
            let about = v["data"]["msgId"]
                .as_str()
                .or(v["data"]["endpointId"].as_str())
                .unwrap_or_default()
                .to_string();
            out.entry((kind, about))
                .or_default()
                .insert(req.header("webhook-id").unwrap_or_default());
        }
        out
    };
    let all_there = || {
        let got = events();
        got.contains_key(&("endpoint.disabled".into(), ep.clone()))
            && exhausted
                .iter()
                .all(|m| got.contains_key(&("message.attempt.exhausted".into(), (*m).clone())))
    };
    wait_until(
        Duration::from_secs(20),
        "the operational webhooks arrived",
        all_there,
    )
    .await;
    // Any second one would come from another node's report at about the same time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = events();
    let count = |kind: &str, about: &str| {
        got.get(&(kind.to_string(), about.to_string()))
            .map_or(0, HashSet::len)
    };
    eprintln!(
        "{TEST}: {} messages sent, {} exhausted, the endpoint disabled after {disabled_in:?}; \
         operational webhooks: {:?}",
        sent.len(),
        exhausted.len(),
        got.iter()
            .map(|((k, a), ids)| format!("{k} {a} x{}", ids.len()))
            .collect::<Vec<_>>()
    );
    assert_eq!(count("endpoint.disabled", &ep), 1, "endpoint.disabled");
    for m in &sent {
        let want = usize::from(exhausted.contains(m));
        assert_eq!(
            count("message.attempt.exhausted", m),
            want,
            "message.attempt.exhausted for {m} ({} attempts)",
            tries.get(m).copied().unwrap_or(0)
        );
    }
    drop(nodes);
    db.drop_db().await;
}

/// Operational messages at `path` of `kind` about `about` (a msgId or endpointId): their
/// distinct `webhook-id`s (a receiver dedupes repeats of one message by it).
fn operational(recv: &Receiver, path: &str, kind: &str, about: &str) -> HashSet<String> {
    recv.requests_to(path)
        .iter()
        .filter(|req| {
            let v: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            v["type"] == json!(kind)
                && (v["data"]["msgId"] == json!(about) || v["data"]["endpointId"] == json!(about))
        })
        .map(|req| req.header("webhook-id").unwrap_or_default())
        .collect()
}

/// Sends `signal` (`STOP`, `CONT`) to `node`'s process.
fn signal(node: &Server, signal: &str) {
    let pid = node.pid().expect("the node runs");
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{signal} {pid}");
}

/// A node that stalls (SIGSTOP: a long pause, a frozen VM) in the middle of an attempt
/// loses its lease; another node takes the delivery over and its failed attempt
/// exhausts the message. When the stalled node wakes, its own report of the same attempt
/// finds the lease lost (the attempt is logged, the delivery left alone), and it raises
/// no second `message.attempt.exhausted`: the operator hears of the message once.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_node_waking_after_a_takeover_raises_no_second_operational_webhook() {
    const TEST: &str =
        "a_stalled_node_waking_after_a_takeover_raises_no_second_operational_webhook";
    let Some(db) = TestDb::create(TEST).await else {
        return;
    };
    let recv = Receiver::start().await;
    recv.set("/slow", Behavior::Delay(Duration::from_secs(1), 500));
    let (lease, ops) = (LEASE_SECS.to_string(), recv.url("/ops"));
    let args = node_args(
        &db,
        &["--lease-secs", &lease, "--operational-webhook-url", &ops],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The first node alone: the message's only attempt is its own.
    let stalled = Server::start_with(&args).await;
    let (app, _) = app_with_endpoint(
        &stalled.client(),
        json!({"url": recv.url("/slow"), "retryPolicy": {"kind": "none"}}),
    )
    .await;
    let msg = send(
        &stalled.client(),
        &app,
        json!({"eventType": "t", "payload": {}}),
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the first attempt under way",
        || recv.in_flight("/slow") == 1,
    )
    .await;
    signal(&stalled, "STOP");
    let stopped = Instant::now();
    let other = Server::start_with(&args).await;
    let api = other.client();
    wait_until(
        Duration::from_secs(LEASE_SECS + 15),
        "the other node took the delivery over and raised message.attempt.exhausted",
        || !operational(&recv, "/ops", "message.attempt.exhausted", &msg).is_empty(),
    )
    .await;
    let taken_over = stopped.elapsed();
    assert_eq!(recv.requests_to("/slow").len(), 2, "two attempts");

    // The stalled node wakes and reports its attempt: logged beside the other's.
    signal(&stalled, "CONT");
    let (_, log) = api
        .get_until(&format!("/api/v1/app/{app}/attempt/msg/{msg}"), |b| {
            b["data"].as_array().is_some_and(|d| d.len() >= 2)
        })
        .await;
    assert_eq!(
        log["data"].as_array().map(Vec::len),
        Some(2),
        "the stalled node's attempt was logged too: {log}"
    );
    // Its operational webhooks, if any, would be queued and delivered by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let exhausted = operational(&recv, "/ops", "message.attempt.exhausted", &msg);
    eprintln!(
        "{TEST}: taken over {taken_over:?} after the stall; {} message.attempt.exhausted",
        exhausted.len()
    );
    assert_eq!(
        exhausted.len(),
        1,
        "message.attempt.exhausted for {msg}: {exhausted:?}"
    );
    drop((stalled, other));
    db.drop_db().await;
}

/// Nodes started at the same instant on an empty database, each with the operator's
/// URL: every node starts and is healthy, each migration is applied once, and the
/// operational webhooks' application has one endpoint. Every node's start gets or makes
/// that application and endpoint: one that lost the race to make them must take what the
/// winner made, not fail. Three rounds on fresh databases (the race is lost most of the
/// times, not every time).
#[tokio::test(flavor = "multi_thread")]
async fn nodes_starting_together_on_an_empty_database_all_come_up() {
    const TEST: &str = "nodes_starting_together_on_an_empty_database_all_come_up";
    const NODES: usize = 4;
    let recv = Receiver::start().await;
    let ops = recv.url("/ops");
    for round in 0..3 {
        let Some(db) = TestDb::create(TEST).await else {
            return;
        };
        let args = node_args(&db, &["--operational-webhook-url", &ops]);
        let mut starting = tokio::task::JoinSet::new();
        for _ in 0..NODES {
            let args = args.clone();
            starting.spawn(async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Server::start_with(&args).await
            });
        }
        let mut nodes = Vec::new();
        while let Some(node) = starting.join_next().await {
            nodes.push(node.expect("a node starts"));
        }
        // A node that failed after it began listening (its error is on stderr above) is
        // refused here.
        for (i, node) in nodes.iter().enumerate() {
            let health = reqwest::get(node.url("/api/v1/health")).await;
            let status = health.as_ref().map(|r| r.status().as_u16());
            assert!(
                matches!(status, Ok(200)),
                "round {round}: node {i} of {NODES} started together is not healthy: {health:?}"
            );
        }
        let admin = admin_client(&db.url).await;
        let row = admin
            .query_one(
                "SELECT count(*), count(DISTINCT version), max(version) FROM hookline_migrations",
                &[],
            )
            .await
            .expect("read hookline_migrations");
        let (rows, distinct, latest): (i64, i64, i32) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            (rows, distinct),
            (i64::from(latest), i64::from(latest)),
            "round {round}: each migration applied once"
        );
        let (status, body) = nodes[0]
            .client()
            .get("/api/v1/app/hookline-operational/endpoint")
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["data"].as_array().map(Vec::len),
            Some(1),
            "round {round}: one operational endpoint: {body}"
        );
        drop(nodes);
        db.drop_db().await;
    }
}
