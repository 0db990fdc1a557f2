//! Several hookline processes on one PostgreSQL database: `nodes` (the e2e load on 1, 2 …
//! N of them) and `takeover` (N under a steady load, one of them SIGKILLed).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use super::hot::{attempts_not_delivered, knee_messages, one_endpoint_load, KNEE, KNEE_SERVE};
use super::{apps_with_one_endpoint, e2e_load, file_name, Ctx, E2eLoad};
use crate::charts::{self, Series};
use crate::http::{Api, Payloads};
use crate::pg::{self, Scratch};
use crate::receiver::Receiver;
use crate::results::{Figure, Goal, ScenarioResult, ServerNumbers};
use crate::server::{self, Server};
use crate::stats::{bucket_for, rate_series, summarize};

/// `n` hookline processes on one fresh database, each on its own port and data dir.
struct Cluster {
    nodes: Vec<Server>,
    db: Option<Scratch>,
}

impl Cluster {
    /// Starts them one after the other (the first migrates the database); logs go to
    /// `{prefix}.node-{i}.server.log`.
    async fn start(ctx: &Ctx, n: usize, prefix: &str, extra: &[String]) -> anyhow::Result<Self> {
        let url = ctx
            .database_url
            .as_deref()
            .context("several processes share a database only on PostgreSQL: --database-url")?;
        let mut cluster = Self {
            nodes: Vec::with_capacity(n),
            db: Some(Scratch::create(url).await?),
        };
        let db_url = cluster.db.as_ref().map(|d| d.url.clone());
        for i in 0..n {
            let log = ctx.out.join(format!("{prefix}.node-{i}.server.log"));
            let node = Server::spawn(&ctx.bin, &log, extra, &[], db_url.as_deref()).await?;
            cluster.nodes.push(node);
        }
        Ok(cluster)
    }

    fn apis(&self) -> Vec<Api> {
        self.nodes.iter().map(|s| s.api.clone()).collect()
    }

    /// utime + stime of every node so far (all must be alive).
    fn cpu_s(&self) -> anyhow::Result<f64> {
        self.nodes.iter().map(|s| Ok(s.stats()?.cpu_s)).sum()
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            node.check_alive().with_context(|| format!("node {i}"))?;
        }
        Ok(())
    }

    /// Every node's `hookline_attempts_total` (who delivered how much), and its claims:
    /// `hookline_claims_total` and `hookline_claims_empty_total`.
    async fn attempts(&self) -> anyhow::Result<(Vec<f64>, Vec<[f64; 2]>)> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut claims = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let c = node
                .api
                .counters(&[
                    "hookline_attempts_total",
                    "hookline_claims_total",
                    "hookline_claims_empty_total",
                ])
                .await?;
            out.push(c[0]);
            claims.push([c[1], c[2]]);
        }
        Ok((out, claims))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The processes first: dropping a database in use would cut them off mid-run.
        for node in self.nodes.drain(..) {
            node.stop();
        }
        if let Some(db) = self.db.take() {
            db.drop_now();
        }
    }
}

// --- 8. nodes ---------------------------------------------------------------------

/// The goal of the several-nodes issue: a node more costs at most this much more CPU
/// per delivered message than one node.
const CPU_PER_MESSAGE_MAX_RATIO: f64 = 1.1;

fn nodes_label(n: usize) -> String {
    if n == 1 {
        "1 node".into()
    } else {
        format!("{n} nodes")
    }
}

pub async fn nodes(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let c = &ctx.counts;
    let mut r = ScenarioResult::new(
        "nodes",
        format!(
            "the e2e load ({} messages, {} apps × 1 endpoint, {} clients) spread round-robin \
             over 1 to {} hookline processes sharing one PostgreSQL database (a fresh one \
             for each count); CPU is every hookline process's plus PostgreSQL's (that \
             database's backends and the background processes) from the first create \
             request to the last receipt (+ 200 ms), per delivered message",
            c.messages, c.apps, c.clients, c.nodes
        ),
    );
    let mut runs = Vec::new();
    // One node's CPU per delivered message and delivered/s: what the others compare to.
    let mut one: Option<(f64, f64)> = None;
    let mut whole = ServerNumbers {
        idle_rss_mb: 0.0,
        peak_rss_mb: 0.0,
        cpu_s: 0.0,
        db_cpu_s: Some(0.0),
    };
    for n in 1..=c.nodes {
        if n > 1 {
            crate::settle(ctx.quick).await;
        }
        let recv = Receiver::start().await?;
        let db_at_start = pg::server_cpu_s();
        let mut cluster = Cluster::start(ctx, n, &format!("nodes-{n}"), &[]).await?;
        let apis = cluster.apis();
        apps_with_one_endpoint(&apis[0], &recv, c.apps, c.clients).await?;
        let db = cluster.db.as_ref().expect("made at start");
        let stats_client = db.stats_client().await?;
        let xacts0 = db.transactions(&stats_client).await?;
        let (cpu0, db0, all0) = (
            cluster.cpu_s()?,
            db.cpu_s(&stats_client).await?,
            pg::server_cpu_s(),
        );
        let load: E2eLoad = e2e_load(ctx, &apis, &recv).await?;
        // The last attempts' reports are written just after their receipts.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let db = cluster.db.as_ref().expect("made at start");
        let (cpu1, db1, all1) = (
            cluster.cpu_s()?,
            db.cpu_s(&stats_client).await?,
            pg::server_cpu_s(),
        );
        cluster.check_alive()?;
        let (attempts, claims) = cluster.attempts().await?;
        let stats: Vec<server::ProcStats> = cluster
            .nodes
            .iter()
            .map(|s| s.stats())
            .collect::<anyhow::Result<_>>()?;
        let idle_rss = cluster
            .nodes
            .iter()
            .map(|s| s.idle_rss_mb)
            .fold(0.0, f64::max);
        // Before the stop: the sum covers live processes only, and the nodes' backends
        // end with them.
        let db_whole = pg::server_cpu_s() - db_at_start;
        // The nodes' backends report their last counts as they end.
        for node in cluster.nodes.drain(..) {
            node.stop();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let db = cluster.db.as_ref().expect("made at start");
        let xacts = db.transactions(&stats_client).await? - xacts0;
        drop(stats_client);
        drop(cluster);
        whole.idle_rss_mb = whole.idle_rss_mb.max(idle_rss);
        whole.peak_rss_mb = stats
            .iter()
            .map(|s| s.peak_rss_mb)
            .fold(whole.peak_rss_mb, f64::max);
        whole.cpu_s += stats.iter().map(|s| s.cpu_s).sum::<f64>();
        whole.db_cpu_s = whole.db_cpu_s.map(|d| d + db_whole);

        let messages = c.messages as f64;
        let (hookline_s, db_s) = (cpu1 - cpu0, db1 - db0);
        let us_per_msg = (hookline_s + db_s) * 1e6 / messages;
        let db_share = if hookline_s + db_s > 0.0 {
            100.0 * db_s / (hookline_s + db_s)
        } else {
            0.0
        };
        let (one_us, one_rate) = *one.get_or_insert((us_per_msg, load.rate));
        let label = nodes_label(n);
        r.figures.push(
            Figure::new(&format!("{label}: delivered"), load.rate, "msg/s")
                .ratio(load.rate / one_rate),
        );
        let cpu = Figure::new(
            &format!("{label}: CPU per delivered msg (hookline + PostgreSQL)"),
            us_per_msg,
            "us/msg",
        )
        .ratio(us_per_msg / one_us);
        r.figures.push(if n == 1 {
            cpu
        } else {
            cpu.goal(Goal::RatioAtMost {
                max: CPU_PER_MESSAGE_MAX_RATIO,
                of: "1 node",
            })
        });
        r.figures.push(Figure::new(
            &format!("{label}: PostgreSQL's share of that CPU"),
            db_share,
            "%",
        ));
        let latencies: Vec<f64> = load
            .sent
            .iter()
            .zip(&load.received)
            .map(|(s, at)| at.saturating_duration_since(s.start).as_secs_f64() * 1e3)
            .collect();
        let acked_last = load.sent.iter().map(|s| s.acked).max().expect("some");
        runs.push(json!({
            "nodes": n,
            "messages": c.messages,
            "elapsed_s": load.elapsed,
            "delivered_msg_per_s": load.rate,
            "ingest_msg_per_s": messages / acked_last.duration_since(load.t0).as_secs_f64(),
            "hookline_cpu_s": hookline_s,
            "db_cpu_s": db_s,
            "cpu_us_per_msg": us_per_msg,
            "hookline_us_per_msg": hookline_s * 1e6 / messages,
            "db_us_per_msg": db_s * 1e6 / messages,
            "all_postgres_processes_us_per_msg": (all1 - all0) * 1e6 / messages,
            "db_share_pct": db_share,
            "db_transactions_per_msg": xacts as f64 / messages,
            "cpu_per_msg_vs_1_node": us_per_msg / one_us,
            "attempts_per_node": attempts,
            "claims_and_empty_claims_per_node": claims,
            "peak_rss_mb_per_node": stats.iter().map(|s| s.peak_rss_mb).collect::<Vec<_>>(),
            "latency_ms": summarize(&latencies),
            "duplicates": load.duplicates,
            "receiver_connections": recv.connections(),
        }));
    }
    r.server = Some(whole);
    r.details = json!({"runs": runs,
        "cpu_window": "first create request → last receipt + 200 ms; hookline: every node's utime+stime; PostgreSQL: the run database's backends and the server's background processes (pg_stat_activity; a process that ends inside the window is missed); all_postgres_processes_us_per_msg: every `postgres` process, other databases' clients included",
        "db_transactions": "pg_stat_database xact_commit + xact_rollback of the run's database, from the start of the load until its nodes stopped (approximate: backends report busy counts up to a second late, so some of the setup's may fall in)",
        "goal": format!("CPU per delivered message with k nodes ≤ {CPU_PER_MESSAGE_MAX_RATIO} × with 1")});
    Ok(r)
}

// --- knee-nodes -------------------------------------------------------------------

/// One `knee-nodes` run: the cluster's load on the knee receiver with one setting.
#[derive(Debug, Clone, serde::Serialize)]
struct KneeRun {
    settings: serde_json::Value,
    delivered_per_s: f64,
    latency_ms: crate::stats::Summary,
    /// Every node's CPU and PostgreSQL's, per delivered message.
    cpu_us_per_msg: f64,
    /// The most requests the receiver had at once, over the run.
    receiver_peak: f64,
    /// Where the receiver's load settled: the median of the second half of its mean
    /// number of requests in flight per 100 ms.
    receiver_settled: f64,
    /// Where the highest of the nodes' limits settled (the cluster's bound): the median
    /// of the second half of its samples.
    limit_settled: f64,
    attempts_not_delivered: f64,
    /// Every 100 ms: (seconds, the receiver's mean requests in flight in those 100 ms).
    receiver_mean: Vec<(f64, f64)>,
    /// Every 100 ms: (seconds, the most it had at once in those 100 ms).
    receiver_peaks: Vec<(f64, f64)>,
    /// Every 100 ms: (seconds, each node's adaptive limit for the endpoint).
    limit_samples: Vec<(f64, Vec<f64>)>,
}

/// The median of the second half of `samples`' values.
fn settled(samples: &[(f64, f64)]) -> f64 {
    let mut tail: Vec<f64> = samples
        .iter()
        .skip(samples.len() / 2)
        .map(|(_, v)| *v)
        .collect();
    tail.sort_by(f64::total_cmp);
    tail.get(tail.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `n` messages spread over a fresh cluster's APIs to one endpoint on the knee receiver
/// (path `path`) with `settings`.
async fn knee_cluster_run(
    ctx: &Ctx,
    recv: &Receiver,
    label: &str,
    path: u32,
    settings: serde_json::Value,
    n: usize,
) -> anyhow::Result<KneeRun> {
    let c = &ctx.counts;
    let cluster = Cluster::start(ctx, c.nodes, label, &[]).await?;
    let apis = cluster.apis();
    apis[0].create_app("hot").await?;
    let mut endpoint = settings.clone();
    endpoint["url"] = recv.knee_url(path).into();
    apis[0].create_endpoint("hot", endpoint).await?;
    let db = cluster.db.as_ref().expect("made at start");
    let stats_client = db.stats_client().await?;
    let (cpu0, db0) = (cluster.cpu_s()?, db.cpu_s(&stats_client).await?);
    recv.take_busy_peak();
    let since = recv.answered();
    let t0 = Instant::now();
    #[derive(Default)]
    struct Samples {
        mean: Vec<(f64, f64)>,
        peaks: Vec<(f64, f64)>,
        limits: Vec<(f64, Vec<f64>)>,
    }
    let samples = Arc::new(std::sync::Mutex::new(Samples::default()));
    let sampling = {
        let (apis, samples, sample) = (apis.clone(), samples.clone(), recv.busy_sampler());
        tokio::spawn(async move {
            let (mut last_at, mut last_busy) = (0.0, sample().1);
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let at = t0.elapsed().as_secs_f64();
                let (peak, busy_us) = sample();
                let mean = (busy_us - last_busy) as f64 / 1e6 / (at - last_at);
                (last_at, last_busy) = (at, busy_us);
                let mut limits = Vec::with_capacity(apis.len());
                for api in &apis {
                    let v = api.counters(&["hookline_endpoint_concurrency_limit"]).await;
                    limits.push(v.map_or(f64::NAN, |v| v[0]));
                }
                let mut s = samples.lock().expect("samples");
                s.mean.push((at, mean));
                s.peaks.push((at, peak as f64));
                s.limits.push((at, limits));
            }
        })
    };
    let load = one_endpoint_load(ctx, &apis, recv, since, path, n, t0).await;
    sampling.abort();
    let load = load?;
    let cpu = cluster.cpu_s()? - cpu0 + db.cpu_s(&stats_client).await? - db0;
    let not_delivered = attempts_not_delivered(&apis).await?;
    drop(stats_client);
    drop(cluster);
    let s = std::mem::take(&mut *samples.lock().expect("samples"));
    let highest: Vec<(f64, f64)> = s
        .limits
        .iter()
        .map(|(t, l)| {
            (
                *t,
                l.iter()
                    .copied()
                    .filter(|v| v.is_finite())
                    .fold(0.0, f64::max),
            )
        })
        .collect();
    let run = KneeRun {
        settings,
        delivered_per_s: n as f64 / load.elapsed,
        latency_ms: summarize(&load.latencies),
        cpu_us_per_msg: cpu * 1e6 / n as f64,
        receiver_peak: s.peaks.iter().map(|(_, v)| *v).fold(0.0, f64::max),
        receiver_settled: settled(&s.mean),
        limit_settled: settled(&highest),
        attempts_not_delivered: not_delivered,
        receiver_mean: s.mean,
        receiver_peaks: s.peaks,
        limit_samples: s.limits,
    };
    eprintln!(
        "    {label} {}: {:.0} msg/s, p50 {:.1} ms, p99 {:.1} ms, {:.0} us/msg, receiver: \
         peak {}, mean settled at {:.1}; highest limit settled at {}",
        run.settings,
        run.delivered_per_s,
        run.latency_ms.p50_ms,
        run.latency_ms.p99_ms,
        run.cpu_us_per_msg,
        run.receiver_peak,
        run.receiver_settled,
        run.limit_settled
    );
    Ok(run)
}

/// `knee` over several processes: whether their adaptive limits together settle near
/// the receiver's knee (a cluster-wide limit), against `maxConcurrency` at the knee (a
/// cluster-wide hard bound, counted in the database).
pub async fn knee_nodes(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let c = &ctx.counts;
    let n = knee_messages(ctx);
    let recv = Receiver::start_with_knee(KNEE, KNEE_SERVE).await?;
    let adaptive = knee_cluster_run(ctx, &recv, "knee-nodes", 0, json!({}), n).await?;
    crate::settle(ctx.quick).await;
    let fixed = knee_cluster_run(
        ctx,
        &recv,
        &format!("knee-nodes-{KNEE}"),
        1,
        json!({ "maxConcurrency": KNEE }),
        n,
    )
    .await?;
    let mut r = ScenarioResult::new(
        "knee-nodes",
        format!(
            "{n} messages from {} clients spread round-robin over {} hookline processes on \
             one PostgreSQL database, to one endpoint whose receiver serves {KNEE} at a time, \
             {} ms each (the rest queue); default settings, then maxConcurrency {KNEE}, each \
             on a fresh cluster",
            c.clients,
            c.nodes,
            KNEE_SERVE.as_millis()
        ),
    );
    r.figures.push(
        Figure::new(
            "delivered, default settings",
            adaptive.delivered_per_s,
            "msg/s",
        )
        .ratio(adaptive.delivered_per_s / fixed.delivered_per_s)
        .goal(Goal::RatioOfAtLeast {
            min: 0.9,
            of: "maxConcurrency at the knee",
        }),
    );
    // `knee`'s goal for one process is a limit of 12-24. Across processes on PostgreSQL
    // a lease spans more than its request (claim or create to the report's commit), so
    // the limit reads above the receiver's load: the goal is on what the receiver carries.
    r.figures.push(
        Figure::new(
            "requests at the receiver, mean (median of 100 ms means, second half)",
            adaptive.receiver_settled,
            "requests",
        )
        .goal(Goal::AtMost { max: 24.0 }),
    );
    r.figures.push(Figure::new(
        "highest node's limit settled at (median, second half)",
        adaptive.limit_settled,
        "attempts",
    ));
    r.figures.push(Figure::new(
        "receiver's peak, default settings",
        adaptive.receiver_peak,
        "requests",
    ));
    r.figures.push(
        Figure::new(
            "attempts not delivered, default",
            adaptive.attempts_not_delivered,
            "attempts",
        )
        .goal(Goal::AtMost { max: 0.0 }),
    );
    r.figures.push(Figure::new(
        "delivered, maxConcurrency at the knee",
        fixed.delivered_per_s,
        "msg/s",
    ));
    let chart = ctx.out.join("knee-nodes.svg");
    let mut series = vec![Series {
        name: "requests at the receiver (100 ms mean)".into(),
        points: adaptive.receiver_mean.clone(),
    }];
    for i in 0..c.nodes {
        series.push(Series {
            name: format!("node {i}'s limit"),
            points: adaptive
                .limit_samples
                .iter()
                .filter_map(|(t, l)| l.get(i).filter(|v| v.is_finite()).map(|v| (*t, *v)))
                .collect(),
        });
    }
    charts::rate_over_time(
        &chart,
        &format!(
            "knee-nodes: {} processes' adaptive limits and the receiver's load (it serves {KNEE} at a time)",
            c.nodes
        ),
        "attempts",
        &series,
    )?;
    r.charts = vec![file_name(&chart)];
    r.details = json!({"messages": n, "nodes": c.nodes, "knee": KNEE,
        "serve_ms": KNEE_SERVE.as_millis() as u64, "runs": [adaptive, fixed]});
    Ok(r)
}

// --- 9. takeover ------------------------------------------------------------------

/// One create request of the steady load.
#[derive(Clone, Copy)]
struct Shot {
    seq: u64,
    node: usize,
    start: Instant,
    /// When its 202 came; `None`: the request failed because its node was killed.
    acked: Option<Instant>,
}

/// The steady load's shared state.
struct Paced {
    apis: Vec<Api>,
    payloads: Arc<Payloads>,
    apps: u64,
    rate: f64,
    count: u64,
    t0: Instant,
    next: AtomicU64,
    victim: usize,
    /// Set just before the victim is killed: new requests go to the others.
    dead: AtomicBool,
    /// Creates the victim acknowledged so far.
    victim_acks: tokio::sync::watch::Sender<u64>,
}

impl Paced {
    fn route(&self, seq: u64) -> usize {
        let n = self.apis.len() as u64;
        if !self.dead.load(Ordering::SeqCst) {
            return (seq % n) as usize;
        }
        let k = (seq % (n - 1)) as usize;
        if k >= self.victim {
            k + 1
        } else {
            k
        }
    }

    /// One client: takes the next seq, waits for its time, sends it.
    async fn client(self: Arc<Self>) -> anyhow::Result<Vec<Shot>> {
        let mut shots = Vec::new();
        loop {
            let seq = self.next.fetch_add(1, Ordering::Relaxed);
            if seq >= self.count {
                return Ok(shots);
            }
            let due = self.t0 + Duration::from_secs_f64(seq as f64 / self.rate);
            tokio::time::sleep_until(due.into()).await;
            let node = self.route(seq);
            let app = format!("app-{}", seq % self.apps);
            let start = Instant::now();
            let outcome = self.apis[node]
                .create_message(&app, self.payloads.message(seq, None))
                .await;
            let acked = match outcome {
                Ok(at) => {
                    if node == self.victim {
                        self.victim_acks.send_modify(|n| *n += 1);
                    }
                    Some(at)
                }
                // Cut off by the kill (sent before it, or routed just before it).
                Err(_) if node == self.victim && self.dead.load(Ordering::SeqCst) => None,
                Err(e) => return Err(e.context(format!("message {seq} to node {node}"))),
            };
            shots.push(Shot {
                seq,
                node,
                start,
                acked,
            });
        }
    }
}

/// Every seq's receipts at `recv` (`0..count`).
struct Receipts {
    first: Vec<Option<Instant>>,
    last: Vec<Option<Instant>>,
    times: Vec<u32>,
}

fn receipts(recv: &Receiver, count: u64) -> Receipts {
    let mut r = Receipts {
        first: vec![None; count as usize],
        last: vec![None; count as usize],
        times: vec![0; count as usize],
    };
    for a in recv.arrivals() {
        if let Some(s) = a.seq.filter(|s| *s < count).map(|s| s as usize) {
            r.first[s].get_or_insert(a.at);
            r.last[s] = Some(a.at);
            r.times[s] += 1;
        }
    }
    r
}

pub async fn takeover(ctx: &Ctx) -> anyhow::Result<ScenarioResult> {
    let c = &ctx.counts;
    let n = c.nodes;
    let lease = c.lease_secs;
    let recv = Receiver::start().await?;
    let extra = ["--lease-secs".to_string(), lease.to_string()];
    let mut cluster = Cluster::start(ctx, n, "takeover", &extra).await?;
    let apis = cluster.apis();
    apps_with_one_endpoint(&apis[0], &recv, c.apps, c.clients).await?;

    // The load runs `before` the kill and lease + 3 s after it, so the others take the
    // dead node's deliveries over while they are busy with their own.
    let before = Duration::from_secs(c.takeover_before_kill_s);
    let after = Duration::from_secs(lease + 3);
    let rate = c.takeover_rate as f64;
    let count = (rate * (before + after).as_secs_f64()).ceil() as u64;
    let t0 = Instant::now() + Duration::from_millis(50);
    let paced = Arc::new(Paced {
        apis: apis.clone(),
        payloads: ctx.payloads.clone(),
        apps: c.apps as u64,
        rate,
        count,
        t0,
        next: AtomicU64::new(0),
        victim: n - 1,
        dead: AtomicBool::new(false),
        victim_acks: tokio::sync::watch::channel(0).0,
    });
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..c.clients {
        clients.spawn(paced.clone().client());
    }

    // The kill: right after one of the victim's 202s, so it dies holding at least that
    // message's fresh delivery (unless its attempt is quicker than the 202's trip back).
    tokio::time::sleep_until((t0 + before).into()).await;
    let mut acks = paced.victim_acks.subscribe();
    acks.borrow_and_update();
    let _ = tokio::time::timeout(Duration::from_secs(1), acks.changed()).await;
    paced.dead.store(true, Ordering::SeqCst);
    let kill_at = Instant::now();
    cluster.nodes[paced.victim].sigkill()?;
    let killed_after = kill_at.duration_since(t0).as_secs_f64();

    let mut shots = Vec::with_capacity(count as usize);
    while let Some(joined) = clients.join_next().await {
        match joined? {
            Ok(s) => shots.extend(s),
            Err(e) => {
                clients.abort_all();
                return Err(e);
            }
        }
    }
    shots.sort_unstable_by_key(|s| s.seq);
    let load_end = shots.iter().map(|s| s.start).max().expect("some");

    // Every acknowledged message should arrive; wait generously (twice the lease and
    // 30 s from the kill), and at least lease + 5 s, so that late repeats are counted.
    let deadline = kill_at + Duration::from_secs(2 * lease + 30);
    let at_least = kill_at + Duration::from_secs(lease + 5);
    let acked: Vec<&Shot> = shots.iter().filter(|s| s.acked.is_some()).collect();
    let Receipts { first, last, times } = loop {
        let got = receipts(&recv, count);
        let missing = acked
            .iter()
            .filter(|s| got.first[s.seq as usize].is_none())
            .count();
        let now = Instant::now();
        if (missing == 0 && now >= at_least) || now >= deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    cluster.check_alive()?;

    let arrived = |s: &Shot| first[s.seq as usize];
    // Acknowledged before the kill, not arrived at it.
    let pending: Vec<&&Shot> = acked
        .iter()
        .filter(|s| s.acked.is_some_and(|a| a < kill_at))
        .filter(|s| arrived(s).is_none_or(|at| at >= kill_at))
        .collect();
    let pending_victim = pending.iter().filter(|s| s.node == paced.victim).count();
    let lost: Vec<u64> = acked
        .iter()
        .filter(|s| arrived(s).is_none())
        .map(|s| s.seq)
        .collect();
    let pending_lost = pending.iter().filter(|s| arrived(s).is_none()).count();
    let since_kill = |at: Instant| at.duration_since(kill_at).as_secs_f64();
    let pending_s: Vec<f64> = pending
        .iter()
        .filter_map(|s| arrived(s))
        .map(since_kill)
        .collect();
    let duplicated = times.iter().filter(|t| **t > 1).count();
    let extra_receipts: u64 = times.iter().map(|t| t.saturating_sub(1) as u64).sum();
    // Deliveries the dead node had sent but not reported (received before the kill)
    // go out again once their lease ends: the same takeover, seen as repeats.
    let repeats_s: Vec<f64> = (0..count as usize)
        .filter(|&s| first[s].is_some_and(|at| at < kill_at))
        .filter_map(|s| last[s].filter(|at| *at >= kill_at))
        .map(since_kill)
        .collect();
    let latest = |v: &[f64]| v.iter().copied().reduce(f64::max);
    let takeover_s = latest(&pending_s)
        .into_iter()
        .chain(latest(&repeats_s))
        .reduce(f64::max);
    let cut_off: Vec<&Shot> = shots.iter().filter(|s| s.acked.is_none()).collect();
    let cut_off_arrived = cut_off.iter().filter(|s| arrived(s).is_some()).count();
    // Messages acknowledged after the kill: do the others' own deliveries wait for the
    // dead node's leases (its slots on the endpoints count until they expire)?
    let after_kill_ms: Vec<f64> = acked
        .iter()
        .filter(|s| s.start >= kill_at)
        .filter_map(|s| arrived(s).map(|at| at.saturating_duration_since(s.start)))
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    let before_kill_ms: Vec<f64> = acked
        .iter()
        .filter(|s| s.acked.is_some_and(|a| a < kill_at))
        .filter_map(|s| arrived(s).map(|at| at.saturating_duration_since(s.start)))
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();

    let mut r = ScenarioResult::new(
        "takeover",
        format!(
            "{n} hookline processes on one PostgreSQL database, each with --lease-secs \
             {lease}, under a steady {rate:.0} msg/s ({} apps × 1 endpoint, round-robin); \
             node {} SIGKILLed after {killed_after:.1} s (right after one of its 202s), the \
             load going on {} s more on the others; takeover: kill → the last receipt \
             after it of the deliveries held at it: messages acknowledged before the kill \
             and not received at it, and messages received before it whose attempt the \
             dead node had not reported (received again after it)",
            c.apps,
            paced.victim,
            after.as_secs()
        ),
    );
    let takeover = takeover_s.unwrap_or(f64::NAN);
    r.figures.push(
        Figure::new("takeover: kill → last delivery held at it", takeover, "s").goal(
            Goal::AtMost {
                max: lease as f64 + 2.0,
            },
        ),
    );
    r.figures.push(Figure::new(
        "takeover − lease",
        takeover - lease as f64,
        "s",
    ));
    r.figures.push(Figure::new(
        &format!(
            "held: acknowledged, not received at the kill ({pending_victim} by the dead node)"
        ),
        pending.len() as f64,
        "msg",
    ));
    r.figures.push(Figure::new(
        "held: received before the kill, again after it",
        repeats_s.len() as f64,
        "msg",
    ));
    r.figures.push(Figure::new(
        "messages received more than once",
        duplicated as f64,
        "msg",
    ));
    r.figures.push(
        Figure::new(
            "lost (acknowledged, never received)",
            lost.len() as f64,
            "msg",
        )
        .goal(Goal::AtMost { max: 0.0 }),
    );

    let survivors: Vec<&Server> = cluster
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != paced.victim)
        .map(|(_, s)| s)
        .collect();
    let stats: Vec<server::ProcStats> = survivors
        .iter()
        .map(|s| s.stats())
        .collect::<anyhow::Result<_>>()?;
    r.server = Some(ServerNumbers {
        idle_rss_mb: survivors.iter().map(|s| s.idle_rss_mb).fold(0.0, f64::max),
        peak_rss_mb: stats.iter().map(|s| s.peak_rss_mb).fold(0.0, f64::max),
        cpu_s: stats.iter().map(|s| s.cpu_s).sum(),
        // Not counted: the dead node's backends ended with it, taking their CPU figures
        // out of any sum over PostgreSQL's live processes.
        db_cpu_s: None,
    });

    let acked_at: Vec<Instant> = acked.iter().filter_map(|s| s.acked).collect();
    let received: Vec<Instant> = first.iter().flatten().copied().collect();
    let span = received
        .iter()
        .max()
        .map_or(0.0, |l| l.duration_since(t0).as_secs_f64());
    let bucket = bucket_for(span);
    let chart = ctx.out.join("takeover-throughput.svg");
    charts::rate_over_time(
        &chart,
        &format!(
            "takeover: node {} killed at {killed_after:.1} s, lease {lease} s, last pending \
             delivery held {takeover:.2} s after",
            paced.victim
        ),
        "per second",
        &[
            Series {
                name: "acknowledged (202)".into(),
                points: rate_series(t0, &acked_at, bucket),
            },
            Series {
                name: "received (first receipt)".into(),
                points: rate_series(t0, &received, bucket),
            },
        ],
    )?;
    r.charts = vec![file_name(&chart)];
    let pending_by_node: Vec<usize> = (0..n)
        .map(|i| pending.iter().filter(|s| s.node == i).count())
        .collect();
    r.details = json!({
        "nodes": n, "lease_secs": lease, "rate_msg_per_s": rate, "victim": paced.victim,
        "killed_after_s": killed_after,
        "load_s": load_end.duration_since(t0).as_secs_f64(),
        "sent": shots.len(), "acknowledged": acked.len(),
        "pending_at_kill": pending.len(), "pending_at_kill_by_node": pending_by_node,
        "pending_never_received": pending_lost,
        "takeover_s": takeover_s, "takeover_minus_lease_s": takeover_s.map(|t| t - lease as f64),
        "pending_last_received_s": latest(&pending_s),
        "duplicated_messages": duplicated, "extra_receipts": extra_receipts,
        "received_again_after_kill": repeats_s.len(),
        "received_again_first_s": repeats_s.iter().copied().reduce(f64::min),
        "received_again_last_s": latest(&repeats_s),
        "cut_off_by_kill": cut_off.len(), "cut_off_but_received": cut_off_arrived,
        "create_to_receipt_ms_acked_before_kill": summarize(&before_kill_ms),
        "create_to_receipt_ms_sent_after_kill": summarize(&after_kill_ms),
        "sent_after_kill_received_over_1s_later": after_kill_ms.iter().filter(|ms| **ms > 1000.0).count(),
        "wait_deadline_s_after_kill": 2 * lease + 30,
        "receiver_connections": recv.connections(),
    });
    if !lost.is_empty() {
        r.error = Some(format!(
            "{} acknowledged messages never arrived within {} s of the kill ({} of them \
             pending at it); takeover {takeover:.2} s, {duplicated} received more than \
             once",
            lost.len(),
            2 * lease + 30,
            pending_lost
        ));
    } else if takeover_s.is_none() {
        bail!(
            "the killed node held no delivery at the kill (nothing acknowledged and not yet \
             received, nothing received again after it), so there was no takeover to \
             time; raise --takeover-rate"
        );
    }
    drop(cluster);
    Ok(r)
}
