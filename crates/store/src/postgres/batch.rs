//! Group commit on PostgreSQL: concurrent message creates and attempt reports share
//! transactions and multi-row statements, the way the SQLite writer group-commits.
//!
//! One message with one delivery costs about fifteen statements and two commits when
//! written alone (docs/benchmark-journal.md), and on two cores PostgreSQL's per-statement
//! and per-commit work is what caps the rate. Here every create and report goes through
//! a [`Batcher`]: a task that takes whatever has queued (up to [`MAX_BATCH`] writes or
//! 4 MiB of payloads) while at most [`IN_FLIGHT`] batches run, so an idle server writes
//! each one at once, alone, and a busy one folds the writes that queued behind a running
//! batch into the next. A batch of any size is one transaction of about ten statements
//! in six round trips (deliveries go 2 048 rows per statement):
//!
//! 1. the messages (one `INSERT ... unnest`), the endpoints of their applications and the
//!    applications' limits, sent together;
//! 2. every endpoint the batch touches, locked in id order (so batches, fan-outs and
//!    claims never deadlock) and read: when work is next due, since when it fails,
//!    whether it is disabled;
//! 3. in memory, in order: each message's fan-out (with the hand-over of fresh
//!    deliveries to the intake), then each report's effect on its endpoint's health;
//! 4. the deliveries, the attempts and the reported deliveries' moves, sent together;
//! 5. the endpoints whose state changed (one `UPDATE ... unnest`), and which of the
//!    reports that lost their lease still have a delivery.
//!
//! The outcome is the one the writes would have had one after the other, creates first
//! (the endpoint rows are locked for the whole batch, so the state computed in memory is
//! the state written). A batch that fails before its commit is run again one write at a
//! time ([`super::queue`]'s single-write path), so one bad write (a duplicate `eventId`,
//! a deleted application) gets its own error and fails nobody else. A failed commit is
//! not retried: it may have committed, so every write in it gets the error, as a single
//! write's caller would.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock, Weak};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_postgres::types::ToSql;

use super::deliveries;
use super::errors::{backend, pool as pool_error};
use super::queue::{self, lease_token};
use super::rows::{ep_row, ms, to_json, EP_COLS};
use crate::common::{AppLimits, Fresh};
use crate::stats::Tally;
use crate::*;

/// Writes in one batch at most.
pub(super) const MAX_BATCH: usize = 128;
/// Batches running at once (each holds a connection while it runs) in a process alone on
/// its database. Two: one commits while the next collects and writes. Measured on two
/// cores (e2e, 64 clients): 1, 2, 4 and 8 in flight used about 270, 300, 520 and 600 us of
/// CPU per delivered message; more, smaller batches cost PostgreSQL more than they overlap
/// (docs/benchmark-journal.md).
///
/// A process that shares the database with other hookline processes runs one at a time:
/// the database already has the others' batches to overlap with, and each process's
/// batches are smaller (it batches only its own writes); two each made three processes
/// use about 40 % more CPU per message (journal, "Several nodes: where the extra CPU
/// went").
pub(super) const IN_FLIGHT: usize = 2;
/// How long a process that shares the database with other hookline processes waits, at
/// most, for a batch to grow as big as its last one, when that one took at least
/// [`LINGER_FROM`] writes (under load; a quiet process never waits).
///
/// Each process batches only its own writes, and runs one batch at a time
/// ([`IN_FLIGHT`]), so a batch takes what queued while the last one ran: with N
/// processes sharing a load, about 1/N as much, and a batch's fixed part (about ten
/// statements and a commit) is paid more often. Measured on two cores (`hookline-bench
/// nodes`, journal "Several nodes: batches that wait for their writes"), CPU per message
/// against one process: 2 processes 1.15–1.18 × → 1.00–1.09 ×, 3 processes
/// 1.49–1.54 × → 1.31–1.45 ×, with more messages a second and a lower p50 at both.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);
/// The last batch's size from which a process not alone waits for its next ([`LINGER`]).
const LINGER_FROM: usize = 8;
/// A batch takes no more writes once its messages' payloads reach this many bytes.
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Deliveries written per statement.
const INSERT_CHUNK: usize = 2048;

/// How many writes the next batch waits for (up to [`LINGER`]) after one of `last`:
/// none alone on the database or when the last batch was small, else as many as it took.
/// Not more: where the writers wait for their answers (API clients waiting for their
/// creates), a batch bigger than the last may never come, and waiting for it would only
/// add latency.
fn linger_target(alone: bool, last: usize) -> usize {
    if alone || last < LINGER_FROM {
        0
    } else {
        last.min(MAX_BATCH)
    }
}

type Reply<T> = oneshot::Sender<Result<T>>;

/// A write waiting for its batch.
pub(super) enum Op {
    Create {
        msg: Message,
        only: Option<String>,
        reply: Reply<Message>,
    },
    Report {
        delivery_id: i64,
        token: String,
        report: AttemptReport,
        reply: Reply<ReportOutcome>,
    },
}

impl Op {
    /// What the write carries that may be large.
    fn bytes(&self) -> usize {
        match self {
            Op::Create { msg, .. } => msg.payload.len(),
            Op::Report { report, .. } => report.attempt.response.len(),
        }
    }
}

pub(super) type SharedIntake = Arc<RwLock<Option<Weak<dyn Intake>>>>;

/// The queue of writes and the task that batches them.
#[derive(Clone)]
pub(super) struct Batcher {
    tx: mpsc::UnboundedSender<Op>,
}

/// What a batch needs besides its writes.
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) pool: Pool,
    pub(super) node: Arc<str>,
    pub(super) intake: SharedIntake,
    /// Writes committed in batches of more than one.
    pub(super) batched: Arc<std::sync::atomic::AtomicU64>,
    /// Hookline processes on the database, as last counted ([`super::changes`]).
    pub(super) processes: Arc<std::sync::atomic::AtomicUsize>,
}

impl Ctx {
    fn intake(&self) -> Option<Arc<dyn Intake>> {
        self.intake
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(Weak::upgrade)
    }
}

impl Batcher {
    /// Starts the batching task; it ends when the last [`Batcher`] is dropped.
    pub(super) fn start(ctx: Ctx) -> Batcher {
        let (tx, mut rx) = mpsc::unbounded_channel::<Op>();
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(IN_FLIGHT));
            // Writes the last batch took.
            let mut last = 0;
            loop {
                // A slot first, then the writes: while every slot is busy, writes queue
                // up and the next batch takes them all. Not alone, a batch takes them all.
                let alone = ctx.processes.load(std::sync::atomic::Ordering::Relaxed) <= 1;
                let take = if alone { 1 } else { IN_FLIGHT as u32 };
                let Ok(slot) = slots.clone().acquire_many_owned(take).await else {
                    return;
                };
                let Some(first) = rx.recv().await else {
                    return;
                };
                let mut bytes = first.bytes();
                let mut ops = vec![first];
                // Under load with other processes on the database, wait a little for as
                // many writes as the last batch took (see [`LINGER`]).
                let target = linger_target(alone, last);
                let until = tokio::time::Instant::now() + LINGER;
                while ops.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                    let op = match rx.try_recv() {
                        Ok(op) => op,
                        Err(_) if ops.len() < target => {
                            match tokio::time::timeout_at(until, rx.recv()).await {
                                Ok(Some(op)) => op,
                                _ => break,
                            }
                        }
                        Err(_) => break,
                    };
                    bytes += op.bytes();
                    ops.push(op);
                }
                last = ops.len();
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    run(&ctx, ops).await;
                    drop(slot);
                });
            }
        });
        Batcher { tx }
    }

    pub(super) async fn create(&self, msg: Message, only: Option<String>) -> Result<Message> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Create { msg, only, reply }, rx).await
    }

    pub(super) async fn report(
        &self,
        delivery_id: i64,
        token: String,
        report: AttemptReport,
    ) -> Result<ReportOutcome> {
        let (reply, rx) = oneshot::channel();
        let op = Op::Report {
            delivery_id,
            token,
            report,
            reply,
        };
        self.send(op, rx).await
    }

    async fn send<T>(&self, op: Op, rx: oneshot::Receiver<Result<T>>) -> Result<T> {
        let gone = || StoreError::Backend("PostgreSQL: the write batcher has stopped".into());
        self.tx.send(op).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// Runs one batch: alone if it is one write, else together, falling back to one write
/// at a time if the batch fails before its commit.
async fn run(ctx: &Ctx, ops: Vec<Op>) {
    if ops.len() == 1 {
        for op in ops {
            single(ctx, op).await;
        }
        return;
    }
    let mut creates = Vec::new();
    let mut reports = Vec::new();
    let mut alone = Vec::new();
    for op in ops {
        match op {
            // Rare (a failure, a recovery) and raising writes of their own: in a
            // transaction of their own.
            Op::Report { ref report, .. } if report.raise.is_some() => alone.push(op),
            Op::Create { msg, only, reply } => creates.push(CreateOp {
                msg,
                only,
                reply,
                fresh: None,
            }),
            Op::Report {
                delivery_id,
                token,
                report,
                reply,
            } => reports.push(ReportOp {
                delivery_id,
                token,
                report,
                reply,
                outcome: None,
            }),
        }
    }
    if !creates.is_empty() || !reports.is_empty() {
        batched(ctx, creates, reports).await;
    }
    for op in alone {
        single(ctx, op).await;
    }
}

/// Runs creates and reports together, or one at a time if that fails before its commit.
async fn batched(ctx: &Ctx, mut creates: Vec<CreateOp>, mut reports: Vec<ReportOp>) {
    let n = (creates.len() + reports.len()) as u64;
    match together(ctx, &mut creates, &mut reports).await {
        Ok(()) => {
            ctx.batched
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            for c in creates {
                if let Some(fresh) = c.fresh {
                    fresh.hand_over();
                }
                let _ = c.reply.send(Ok(c.msg));
            }
            for r in reports {
                let outcome = r.outcome.expect("set by a committed batch");
                let _ = r.reply.send(Ok(outcome));
            }
        }
        Err(Failed::AtCommit(e)) => {
            // It may have committed: nobody may write again as if it had not.
            for c in creates {
                drop(c.fresh); // the slots reserved are given back
                let _ = c.reply.send(Err(e.clone()));
            }
            for r in reports {
                let _ = r.reply.send(Err(e.clone()));
            }
        }
        Err(Failed::Before(e)) => {
            tracing::debug!(error = %e, "a write batch failed; writing its writes one by one");
            for c in creates {
                drop(c.fresh);
                single(
                    ctx,
                    Op::Create {
                        msg: c.msg,
                        only: c.only,
                        reply: c.reply,
                    },
                )
                .await;
            }
            for r in reports {
                single(
                    ctx,
                    Op::Report {
                        delivery_id: r.delivery_id,
                        token: r.token,
                        report: r.report,
                        reply: r.reply,
                    },
                )
                .await;
            }
        }
    }
}

/// One write in a transaction of its own.
async fn single(ctx: &Ctx, op: Op) {
    match op {
        Op::Create { msg, only, reply } => {
            let _ = reply.send(create_one(ctx, msg, only.as_deref()).await);
        }
        Op::Report {
            delivery_id,
            token,
            report,
            reply,
        } => {
            let _ = reply.send(report_one(ctx, delivery_id, &token, report).await);
        }
    }
}

/// Applies a report alone, with the messages it raises.
async fn report_one(
    ctx: &Ctx,
    delivery_id: i64,
    token: &str,
    mut report: AttemptReport,
) -> Result<ReportOutcome> {
    let raise = report.raise.take();
    let mut fresh = Fresh::new(ctx.intake());
    let mut client = ctx.pool.get().await.map_err(pool_error)?;
    let mut tx = client.transaction().await.map_err(backend)?;
    let out = queue::report(&tx, delivery_id, token, report).await?;
    if let (Some(raise), Applied::Yes) = (raise, out.applied) {
        for msg in (raise.0)(&out) {
            // An error aborts a PostgreSQL transaction: each message is tried under a
            // savepoint, so one raised already (its eventId taken, by a process that
            // raced this one) or whose application is gone is skipped, not fatal.
            let sp = tx.transaction().await.map_err(backend)?;
            match super::store::insert_message(&sp, &msg).await {
                Ok(()) => {
                    queue::fan_out(&sp, &ctx.node, &msg, None, &mut fresh).await?;
                    sp.commit().await.map_err(backend)?;
                }
                Err(StoreError::Conflict(_) | StoreError::NotFound) => {
                    sp.rollback().await.map_err(backend)?;
                }
                Err(e) => return Err(e),
            }
        }
    }
    tx.commit().await.map_err(backend)?;
    fresh.hand_over();
    Ok(out)
}

/// Creates a message and its deliveries (to `only` that endpoint, if given) alone.
async fn create_one(ctx: &Ctx, msg: Message, only: Option<&str>) -> Result<Message> {
    let mut fresh = Fresh::new(ctx.intake());
    let mut client = ctx.pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(backend)?;
    super::store::insert_message(&tx, &msg).await?;
    queue::fan_out(&tx, &ctx.node, &msg, only, &mut fresh).await?;
    tx.commit().await.map_err(backend)?;
    // Committed (and, with synchronous_commit on, durable): the worker may start.
    fresh.hand_over();
    Ok(msg)
}

struct CreateOp {
    msg: Message,
    only: Option<String>,
    reply: Reply<Message>,
    /// The deliveries handed over, once the batch has fanned the message out.
    fresh: Option<Fresh>,
}

struct ReportOp {
    delivery_id: i64,
    token: String,
    report: AttemptReport,
    reply: Reply<ReportOutcome>,
    outcome: Option<ReportOutcome>,
}

impl ReportOp {
    fn key(&self) -> (i64, String) {
        (self.delivery_id, self.token.clone())
    }
}

enum Failed {
    /// Nothing was committed.
    Before(StoreError),
    /// The commit failed: it may or may not have happened.
    AtCommit(StoreError),
}

/// An endpoint's queue state as locked by the batch, and as the batch leaves it.
struct EpState {
    next_due: Option<DateTime<Utc>>,
    failing_since: Option<DateTime<Utc>>,
    disabled: bool,
    /// `updated_at`, if the batch disabled it.
    disabled_at: Option<DateTime<Utc>>,
    changed: bool,
    /// Its deliveries leased by any process, with those this batch hands over.
    in_flight: usize,
}

/// The batch in one transaction; on success every create has its `fresh` and every
/// report its `outcome`.
async fn together(
    ctx: &Ctx,
    creates: &mut [CreateOp],
    reports: &mut [ReportOp],
) -> std::result::Result<(), Failed> {
    let mut client = ctx
        .pool
        .get()
        .await
        .map_err(|e| Failed::Before(pool_error(e)))?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| Failed::Before(backend(e)))?;
    write(ctx, &tx, creates, reports)
        .await
        .map_err(Failed::Before)?;
    tx.commit().await.map_err(|e| Failed::AtCommit(backend(e)))
}

async fn write(
    ctx: &Ctx,
    tx: &Transaction<'_>,
    creates: &mut [CreateOp],
    reports: &mut [ReportOp],
) -> Result<()> {
    let intake = if creates.is_empty() {
        None
    } else {
        ctx.intake()
    };

    // 1. The messages, their applications' endpoints and limits.
    let mut candidates: HashMap<String, Vec<Endpoint>> = HashMap::new();
    let mut limits: HashMap<String, AppLimits> = HashMap::new();
    if !creates.is_empty() {
        let mut app_ids: Vec<&str> = creates.iter().map(|c| c.msg.app_id.as_str()).collect();
        app_ids.sort_unstable();
        app_ids.dedup();
        let (inserted, endpoints, apps) = tokio::join!(
            insert_messages(tx, creates),
            async {
                let stmt = tx
                    .prepare_cached(&format!(
                        "SELECT {EP_COLS} FROM endpoints WHERE app_id = ANY($1) AND NOT disabled"
                    ))
                    .await?;
                tx.query(&stmt, &[&app_ids]).await
            },
            async {
                match &intake {
                    Some(_) => queue::app_limits(tx, &app_ids).await.map(Some),
                    None => Ok(None),
                }
            },
        );
        inserted?;
        for r in endpoints.map_err(backend)? {
            let ep = ep_row(&r)?;
            candidates.entry(ep.app_id.clone()).or_default().push(ep);
        }
        limits = apps?.unwrap_or_default();
    }

    // Each message's endpoints, by its filters (or the one it is for).
    let wanted: Vec<Vec<&Endpoint>> = creates
        .iter()
        .map(|c| {
            candidates
                .get(&c.msg.app_id)
                .map(|eps| {
                    eps.iter()
                        .filter(|ep| match &c.only {
                            Some(id) => *id == ep.id,
                            None => ep
                                .settings
                                .wants(&c.msg.event_type, c.msg.channels.as_deref()),
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();

    // 2. Every endpoint the batch touches, locked in id order.
    let touched: BTreeSet<&str> = wanted
        .iter()
        .flatten()
        .map(|ep| ep.id.as_str())
        .chain(
            reports
                .iter()
                .map(|r| r.report.attempt.endpoint_id.as_str()),
        )
        .collect();
    let touched: Vec<&str> = touched.into_iter().collect();
    let mut eps: HashMap<String, EpState> = HashMap::with_capacity(touched.len());
    if !touched.is_empty() {
        let lock = tx
            .prepare_cached(
                "SELECT id, next_due_at, failing_since, disabled FROM endpoints
                 WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
            )
            .await
            .map_err(backend)?;
        // What every process has in flight to the endpoints fresh deliveries may go to,
        // asked in the same round trip as the lock and so after it.
        let fresh_targets: Vec<&str> = match intake {
            Some(_) => wanted
                .iter()
                .flatten()
                .map(|ep| ep.id.as_str())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        if !fresh_targets.is_empty() {
            queue::prepare_in_flight(tx).await?;
        }
        let now = ms(crate::now());
        let lock_args: [&(dyn ToSql + Sync); 1] = [&touched];
        let (locked, leased) = tokio::join!(
            tx.query(&lock, &lock_args),
            queue::in_flight(tx, &fresh_targets, now),
        );
        for r in locked.map_err(backend)? {
            eps.insert(
                r.try_get(0).map_err(backend)?,
                EpState {
                    next_due: r.try_get(1).map_err(backend)?,
                    failing_since: r.try_get(2).map_err(backend)?,
                    disabled: r.try_get(3).map_err(backend)?,
                    disabled_at: None,
                    changed: false,
                    in_flight: 0,
                },
            );
        }
        for (id, n) in leased? {
            if let Some(state) = eps.get_mut(&id) {
                state.in_flight = n;
            }
        }
    }

    // 3a. The fan-outs, in order.
    let token = lease_token(&ctx.node);
    let mut rows = DeliveryRows::default();
    let mut freshes = Vec::with_capacity(creates.len());
    for (c, wanted) in creates.iter().zip(&wanted) {
        let msg = &c.msg;
        let start = ms(msg.deliver_at.unwrap_or(msg.created_at).max(msg.created_at));
        let immediate = start == ms(msg.created_at);
        let mut fresh = Fresh::new(intake.clone());
        for ep in wanted {
            let Some(state) = eps.get_mut(&ep.id) else {
                continue; // deleted since it was matched
            };
            if state.disabled {
                continue;
            }
            let mut reserved = None;
            if let Some(intake) = &intake {
                // A slot free across processes, and past work due before it only with
                // most of them free (`passes_queue`). The worker's own limit, if any, it
                // checks itself when reserving.
                let behind = state.next_due.is_some_and(|t| t <= start);
                let cap = ep.concurrency_cap_within(intake.limit(ep));
                if immediate && passes_queue(state.in_flight, cap, behind) {
                    let app = limits.entry(msg.app_id.clone()).or_default();
                    let yes = match behind {
                        false => intake.reserve(ep, app.rate),
                        true => intake.reserve_behind(ep, app.rate),
                    };
                    if yes {
                        state.in_flight += 1;
                        reserved = Some(ms(start + intake.lease()));
                        fresh.file(msg, ep, &token, start, app, state.in_flight);
                    }
                }
            }
            let due = reserved.unwrap_or(start);
            if reserved.is_none() {
                fresh.queued = true;
            }
            if state.next_due.is_none_or(|t| t > due) {
                state.next_due = Some(due);
                state.changed = true;
            }
            rows.app_ids.push(msg.app_id.as_str());
            rows.msg_ids.push(msg.id.as_str());
            rows.endpoint_ids.push(ep.id.as_str());
            rows.statuses.push(if reserved.is_some() {
                "sending"
            } else {
                "pending"
            });
            rows.starts.push(start);
            rows.dues.push(due);
            rows.tokens.push(reserved.map(|_| token.as_str()));
        }
        freshes.push(fresh);
    }

    // 3b. The reports' effect on their endpoints' health, in order.
    let mut outcomes = Vec::with_capacity(reports.len());
    for r in reports.iter() {
        let a = &r.report.attempt;
        let mut endpoint_disabled = false;
        if let Some(state) = eps.get_mut(&a.endpoint_id) {
            if a.succeeded {
                if state.failing_since.is_some() {
                    state.failing_since = None;
                    state.changed = true;
                }
            } else {
                if state.failing_since.is_none() {
                    state.failing_since = Some(ms(a.attempted_at));
                    state.changed = true;
                }
                let cutoff = r.report.disable_if_failing_since.map(ms);
                let too_long = match (cutoff, state.failing_since) {
                    (Some(cutoff), Some(since)) => since <= cutoff,
                    _ => false,
                };
                if !state.disabled && (r.report.disable_endpoint || too_long) {
                    state.disabled = true;
                    state.disabled_at = Some(finished_at(a));
                    state.changed = true;
                    endpoint_disabled = true;
                }
            }
        }
        outcomes.push(endpoint_disabled);
    }

    // 4. The deliveries, the attempts and the reported deliveries' moves (and a notice,
    // if deliveries were queued for any process's workers to claim).
    let attempts = AttemptRows::new(reports);
    let moves = MoveRows::new(reports);
    let queued = freshes.iter().any(|f| f.queued);
    let (inserted, logged, moved, notified) = tokio::join!(
        rows.insert(tx),
        attempts.insert(tx),
        moves.apply(tx),
        async {
            match queued {
                true => queue::notify_work(tx, &ctx.node).await,
                false => Ok(()),
            }
        },
    );
    let inserted = inserted?;
    let logged = logged?;
    let moved = moved?;
    notified?;

    // The handed-over deliveries learn their ids.
    let ids: HashMap<(&str, &str), i64> = inserted
        .iter()
        .map(|(id, msg, ep)| ((msg.as_str(), ep.as_str()), *id))
        .collect();
    for fresh in &mut freshes {
        for d in &mut fresh.claimed {
            d.id = *ids
                .get(&(d.message.id.as_str(), d.endpoint.id.as_str()))
                .ok_or_else(|| {
                    StoreError::Backend("PostgreSQL: a handed-over delivery was not written".into())
                })?;
        }
    }
    for (c, fresh) in creates.iter_mut().zip(freshes) {
        c.fresh = Some(fresh);
    }

    // A retry must not fall due before its endpoint's `next_due_at` says.
    for r in reports.iter() {
        if let (NextStep::RetryAt(t), Some(_)) = (&r.report.next, moved.get(&r.key())) {
            if let Some(state) = eps.get_mut(&r.report.attempt.endpoint_id) {
                let t = ms(*t);
                if state.next_due.is_none_or(|d| d > t) {
                    state.next_due = Some(t);
                    state.changed = true;
                }
            }
        }
    }

    // 5. The endpoints the batch changed, and whether lost leases' deliveries remain.
    let lost: Vec<i64> = reports
        .iter()
        .filter(|r| !moved.contains_key(&r.key()))
        .map(|r| r.delivery_id)
        .collect();
    // The logged attempts' statistics, last (their rows in key order: see `stats`).
    let mut tally = Tally::default();
    for a in reports.iter().map(|r| &r.report.attempt) {
        if logged.contains(&a.id) {
            tally.add(&a.endpoint_id, a.attempted_at, a.duration_ms, a.succeeded);
        }
    }
    let (updated, counted, remaining) = tokio::join!(
        update_endpoints(tx, &eps),
        deliveries::add_stats(tx, &tally),
        async {
            if lost.is_empty() {
                return Ok(Vec::new());
            }
            let stmt = tx
                .prepare_cached("SELECT id FROM deliveries WHERE id = ANY($1)")
                .await?;
            tx.query(&stmt, &[&lost]).await
        }
    );
    updated?;
    counted?;
    let remaining: BTreeSet<i64> = remaining
        .map_err(backend)?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()
        .map_err(backend)?;

    for (r, endpoint_disabled) in reports.iter_mut().zip(outcomes) {
        let attempts = moved.get(&r.key()).copied();
        let applied = match attempts {
            Some(_) => Applied::Yes,
            None if remaining.contains(&r.delivery_id) => Applied::LeaseLost,
            None => Applied::DeliveryGone,
        };
        r.outcome = Some(ReportOutcome {
            applied,
            endpoint_disabled,
            consecutive_failures: if r.report.attempt.succeeded {
                0
            } else {
                attempts.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
            },
        });
    }
    Ok(())
}

/// When an attempt finished: its report's time.
fn finished_at(a: &Attempt) -> DateTime<Utc> {
    ms(a.attempted_at + chrono::Duration::milliseconds(a.duration_ms as i64))
}

async fn insert_messages(tx: &Transaction<'_>, creates: &[CreateOp]) -> Result<()> {
    let n = creates.len();
    let (mut ids, mut apps, mut event_ids, mut types, mut payloads) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut channels, mut tags, mut created, mut deliver, mut payload_expiry) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for c in creates {
        let m = &c.msg;
        ids.push(m.id.as_str());
        apps.push(m.app_id.as_str());
        event_ids.push(m.event_id.as_deref());
        types.push(m.event_type.as_str());
        payloads.push(&*m.payload);
        channels.push(m.channels.as_ref().map(to_json));
        tags.push(m.tags.as_ref().map(to_json));
        created.push(m.created_at);
        deliver.push(m.deliver_at);
        payload_expiry.push(m.payload_expires_at);
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO messages (id, app_id, event_id, event_type, payload, channels, tags,
                 created_at, deliver_at, payload_expires_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                 $6::text[], $7::text[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[])",
        )
        .await
        .map_err(backend)?;
    let args: [&(dyn ToSql + Sync); 10] = [
        &ids,
        &apps,
        &event_ids,
        &types,
        &payloads,
        &channels,
        &tags,
        &created,
        &deliver,
        &payload_expiry,
    ];
    // Any failure (a duplicate eventId, a deleted application) sends the batch back to
    // one write at a time, where it gets its own error.
    tx.execute(&stmt, &args).await.map_err(backend)?;
    Ok(())
}

/// The deliveries a batch's fan-outs write, column by column.
#[derive(Default)]
struct DeliveryRows<'a> {
    app_ids: Vec<&'a str>,
    msg_ids: Vec<&'a str>,
    endpoint_ids: Vec<&'a str>,
    statuses: Vec<&'static str>,
    starts: Vec<DateTime<Utc>>,
    dues: Vec<DateTime<Utc>>,
    tokens: Vec<Option<&'a str>>,
}

impl DeliveryRows<'_> {
    /// Writes them, returning `(id, msg_id, endpoint_id)` of those handed over (and of
    /// others written in the same statement). In statements of at most [`INSERT_CHUNK`]
    /// rows, so a batch of large fan-outs never builds one huge message or result.
    async fn insert(&self, tx: &Transaction<'_>) -> Result<Vec<(i64, String, String)>> {
        const INSERT: &str =
            "INSERT INTO deliveries (app_id, msg_id, endpoint_id, status, attempts, manual,
                 scheduled_at, due_at, lease_token, created_at, updated_at)
             SELECT x.app, x.msg, x.ep, x.status, 0, false, x.start, x.due, x.token,
                    x.start, x.start
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                         $5::timestamptz[], $6::timestamptz[], $7::text[])
                  AS x(app, msg, ep, status, start, due, token)";
        let mut out = Vec::new();
        let n = self.msg_ids.len();
        let mut from = 0;
        while from < n {
            let to = (from + INSERT_CHUNK).min(n);
            let (apps, msgs, eps) = (
                &self.app_ids[from..to],
                &self.msg_ids[from..to],
                &self.endpoint_ids[from..to],
            );
            let (statuses, starts, dues, tokens) = (
                &self.statuses[from..to],
                &self.starts[from..to],
                &self.dues[from..to],
                &self.tokens[from..to],
            );
            let args: [&(dyn ToSql + Sync); 7] =
                [&apps, &msgs, &eps, &statuses, &starts, &dues, &tokens];
            if tokens.iter().any(Option::is_some) {
                let stmt = tx
                    .prepare_cached(&format!("{INSERT} RETURNING id, msg_id, endpoint_id"))
                    .await
                    .map_err(backend)?;
                for r in tx.query(&stmt, &args).await.map_err(backend)? {
                    out.push((
                        r.try_get(0).map_err(backend)?,
                        r.try_get(1).map_err(backend)?,
                        r.try_get(2).map_err(backend)?,
                    ));
                }
            } else {
                let stmt = tx.prepare_cached(INSERT).await.map_err(backend)?;
                tx.execute(&stmt, &args).await.map_err(backend)?;
            }
            from = to;
        }
        Ok(out)
    }
}

/// The attempts a batch's reports log, column by column.
struct AttemptRows<'a> {
    ids: Vec<&'a str>,
    app_ids: Vec<&'a str>,
    msg_ids: Vec<&'a str>,
    endpoint_ids: Vec<&'a str>,
    urls: Vec<&'a str>,
    attempted: Vec<DateTime<Utc>>,
    codes: Vec<Option<i32>>,
    durations: Vec<i64>,
    succeeded: Vec<bool>,
    error_kinds: Vec<Option<&'a str>>,
    responses: Vec<&'a str>,
    manual: Vec<bool>,
}

impl<'a> AttemptRows<'a> {
    fn new(reports: &'a [ReportOp]) -> Self {
        let attempts = || reports.iter().map(|r| &r.report.attempt);
        AttemptRows {
            ids: attempts().map(|a| a.id.as_str()).collect(),
            app_ids: attempts().map(|a| a.app_id.as_str()).collect(),
            msg_ids: attempts().map(|a| a.msg_id.as_str()).collect(),
            endpoint_ids: attempts().map(|a| a.endpoint_id.as_str()).collect(),
            urls: attempts().map(|a| a.url.as_str()).collect(),
            attempted: attempts().map(|a| ms(a.attempted_at)).collect(),
            codes: attempts().map(|a| a.status_code.map(i32::from)).collect(),
            durations: attempts().map(|a| a.duration_ms as i64).collect(),
            succeeded: attempts().map(|a| a.succeeded).collect(),
            error_kinds: attempts().map(|a| a.error_kind.as_deref()).collect(),
            responses: attempts().map(|a| a.response.as_str()).collect(),
            manual: attempts().map(|a| a.trigger == Trigger::Manual).collect(),
        }
    }

    /// Logs them, but not for an endpoint or message deleted meanwhile: the attempt
    /// would have nothing to belong to. Returns the ids of those logged.
    async fn insert(&self, tx: &Transaction<'_>) -> Result<BTreeSet<String>> {
        if self.ids.is_empty() {
            return Ok(BTreeSet::new());
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO attempts (id, app_id, msg_id, endpoint_id, url, attempted_at,
                     status_code, duration_ms, succeeded, error_kind, response, manual)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::timestamptz[], $7::int4[], $8::int8[], $9::bool[], $10::text[],
                     $11::text[], $12::bool[])
                     AS x(id, app_id, msg_id, endpoint_id, url, attempted_at, status_code,
                          duration_ms, succeeded, error_kind, response, manual)
                 WHERE EXISTS (SELECT 1 FROM endpoints e WHERE e.id = x.endpoint_id)
                   AND EXISTS (SELECT 1 FROM messages m WHERE m.id = x.msg_id)
                 ON CONFLICT (id) DO NOTHING
                 RETURNING id",
            )
            .await
            .map_err(backend)?;
        let args: [&(dyn ToSql + Sync); 12] = [
            &self.ids,
            &self.app_ids,
            &self.msg_ids,
            &self.endpoint_ids,
            &self.urls,
            &self.attempted,
            &self.codes,
            &self.durations,
            &self.succeeded,
            &self.error_kinds,
            &self.responses,
            &self.manual,
        ];
        tx.query(&stmt, &args)
            .await
            .map_err(backend)?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()
            .map_err(backend)
    }
}

/// The reported deliveries' moves, column by column.
struct MoveRows<'a> {
    ids: Vec<i64>,
    tokens: Vec<&'a str>,
    statuses: Vec<&'static str>,
    dues: Vec<Option<DateTime<Utc>>>,
    nows: Vec<DateTime<Utc>>,
}

impl<'a> MoveRows<'a> {
    fn new(reports: &'a [ReportOp]) -> Self {
        let mut rows = MoveRows {
            ids: Vec::with_capacity(reports.len()),
            tokens: Vec::with_capacity(reports.len()),
            statuses: Vec::with_capacity(reports.len()),
            dues: Vec::with_capacity(reports.len()),
            nows: Vec::with_capacity(reports.len()),
        };
        for r in reports {
            let (status, due) = match r.report.next {
                NextStep::Succeeded => ("succeeded", None),
                NextStep::Failed => ("failed", None),
                NextStep::RetryAt(t) => ("pending", Some(ms(t))),
            };
            rows.ids.push(r.delivery_id);
            rows.tokens.push(r.token.as_str());
            rows.statuses.push(status);
            rows.dues.push(due);
            rows.nows.push(finished_at(&r.report.attempt));
        }
        rows
    }

    /// Moves each delivery its token still holds; returns their attempt counts by id
    /// and token (a delivery may be reported twice in a batch: by the worker that holds
    /// it, and by one whose lease expired).
    async fn apply(&self, tx: &Transaction<'_>) -> Result<HashMap<(i64, String), i32>> {
        if self.ids.is_empty() {
            return Ok(HashMap::new());
        }
        let stmt = tx
            .prepare_cached(
                "UPDATE deliveries d SET status = x.status, due_at = x.due,
                     scheduled_at = coalesce(x.due, d.scheduled_at), lease_token = NULL,
                     attempts = d.attempts + 1, manual = false, updated_at = x.now
                 FROM unnest($1::int8[], $2::text[], $3::text[], $4::timestamptz[],
                             $5::timestamptz[]) AS x(id, token, status, due, now)
                 WHERE d.id = x.id AND d.status = 'sending' AND d.lease_token = x.token
                 RETURNING d.id, x.token, d.attempts",
            )
            .await
            .map_err(backend)?;
        let args: [&(dyn ToSql + Sync); 5] = [
            &self.ids,
            &self.tokens,
            &self.statuses,
            &self.dues,
            &self.nows,
        ];
        tx.query(&stmt, &args)
            .await
            .map_err(backend)?
            .iter()
            .map(|r| Ok(((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?)))
            .collect::<std::result::Result<_, tokio_postgres::Error>>()
            .map_err(backend)
    }
}

/// Writes back the endpoints whose queue state or health the batch changed.
async fn update_endpoints(tx: &Transaction<'_>, eps: &HashMap<String, EpState>) -> Result<()> {
    let changed: Vec<(&String, &EpState)> = eps.iter().filter(|(_, s)| s.changed).collect();
    if changed.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = changed.iter().map(|(id, _)| id.as_str()).collect();
    let next_due: Vec<Option<DateTime<Utc>>> = changed.iter().map(|(_, s)| s.next_due).collect();
    let failing: Vec<Option<DateTime<Utc>>> =
        changed.iter().map(|(_, s)| s.failing_since).collect();
    let disabled: Vec<bool> = changed.iter().map(|(_, s)| s.disabled).collect();
    let disabled_at: Vec<Option<DateTime<Utc>>> =
        changed.iter().map(|(_, s)| s.disabled_at).collect();
    let stmt = tx
        .prepare_cached(
            "UPDATE endpoints e SET next_due_at = x.next_due, failing_since = x.failing,
                 disabled = x.disabled, updated_at = coalesce(x.disabled_at, e.updated_at)
             FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::bool[],
                         $5::timestamptz[]) AS x(id, next_due, failing, disabled, disabled_at)
             WHERE e.id = x.id",
        )
        .await
        .map_err(backend)?;
    let args: [&(dyn ToSql + Sync); 5] = [&ids, &next_due, &failing, &disabled, &disabled_at];
    tx.execute(&stmt, &args).await.map_err(backend)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_busy_process_with_company_waits_for_its_batch() {
        // Alone on the database: never waits, however busy.
        assert_eq!(linger_target(true, 100), 0);
        // With other processes but quiet (the last batch was small): never waits.
        assert_eq!(linger_target(false, 0), 0);
        assert_eq!(linger_target(false, 1), 0);
        assert_eq!(linger_target(false, LINGER_FROM - 1), 0);
        // Busy: waits for as many writes as the last batch took, not more.
        assert_eq!(linger_target(false, LINGER_FROM), LINGER_FROM);
        assert_eq!(linger_target(false, 40), 40);
        assert_eq!(linger_target(false, MAX_BATCH + 10), MAX_BATCH);
    }
}
