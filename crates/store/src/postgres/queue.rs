//! The delivery queue on PostgreSQL: a message's fan-out to deliveries (with the
//! hand-over of fresh ones to an attached [`Intake`]), claims under a lease, attempt
//! reports and hand-backs. The same state machine as SQLite's (docs/delivery-states.md),
//! safe with several processes on one database:
//!
//! - due work is found through the partial indexes only: endpoints by `next_due_at`
//!   (healthy and failing apart), then each endpoint's deliveries by `due_at`; never a
//!   sort of the backlog;
//! - a claim locks the endpoints it walks and the deliveries it takes with `FOR UPDATE
//!   SKIP LOCKED`, so concurrent claimers (other processes) pass each other by instead of
//!   waiting or taking the same work, and writes a fresh lease token;
//! - a report or hand-back applies only while its lease token still holds the delivery
//!   (the row count says whether it did); a lease that expired is claimed again by
//!   whoever comes next, as due work.
//!
//! Statements that do not depend on each other's results are sent together: tokio-postgres
//! pipelines the futures of one connection polled at once.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::types::ToSql;

use super::errors::backend;
use super::rows::{ep_row, ms, msg_row, EP_COLS, MSG_COLS};
use crate::common::{claimable, AppLimits, Fresh};
use crate::*;

/// A fresh lease token of `node`: `NODE.RANDOM`, so a node started again on the same
/// data dir can tell its own leases from other nodes' ([`super::PgStore::claim_node`]).
pub(super) fn lease_token(node: &str) -> String {
    use rand::RngCore;
    format!("{node}.{:016x}", rand::rng().next_u64())
}

/// Hands back every delivery the previous run of `node` held when it stopped: nobody else
/// holds a lease of that node (one process per node, by the data dir's lock), so there
/// is no need to wait for the leases to expire. The attempts' outcomes are unknown, so
/// the deliveries are due at once (at-least-once: a receiver may see them twice).
pub(super) async fn recover_node_leases(
    tx: &Transaction<'_>,
    node: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    let now = ms(now);
    // The node's tokens start with "NODE."; node ids are letters and digits only, so
    // nothing in one is a LIKE wildcard.
    let pattern = format!("{node}.%");
    let endpoints: Vec<String> = tx
        .query(
            "UPDATE deliveries SET status = 'pending', due_at = $2, lease_token = NULL, updated_at = $2
             WHERE status = 'sending' AND lease_token LIKE $1
             RETURNING endpoint_id",
            &[&pattern, &now],
        )
        .await
        .map_err(backend)?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()
        .map_err(backend)?;
    let n = endpoints.len() as u64;
    if n > 0 {
        let mut ids = endpoints;
        ids.sort();
        ids.dedup();
        tx.execute(
            "UPDATE endpoints SET next_due_at = LEAST(next_due_at, $2) WHERE id = ANY($1)",
            &[&ids, &now],
        )
        .await
        .map_err(backend)?;
    }
    Ok(n)
}

pub(super) async fn app_limits(
    tx: &Transaction<'_>,
    ids: &[&str],
) -> Result<HashMap<String, AppLimits>> {
    let rows = tx
        .query(
            &tx.prepare_cached(
                "SELECT id, retry_policy, throttle_rate FROM applications WHERE id = ANY($1)",
            )
            .await
            .map_err(backend)?,
            &[&ids],
        )
        .await
        .map_err(backend)?;
    let mut out = HashMap::new();
    for r in rows {
        let policy: Option<&str> = r.try_get(1).map_err(backend)?;
        let rate: Option<i32> = r.try_get(2).map_err(backend)?;
        out.insert(
            r.try_get::<_, String>(0).map_err(backend)?,
            AppLimits {
                policy: policy.map(serde_json::from_str).transpose().map_err(|e| {
                    StoreError::Backend(format!("PostgreSQL: bad retry_policy: {e}"))
                })?,
                rate: rate.and_then(|r| u32::try_from(r).ok()).filter(|r| *r > 0),
                claimed: 0,
            },
        );
    }
    Ok(out)
}

/// Writes one delivery per matching, enabled endpoint (or to `only` that one, whatever
/// its filters), in the message's own transaction, and brings each endpoint's
/// `next_due_at` forward to it. A delivery that can start now, to an endpoint with room
/// across processes ([`passes_queue`]), is offered to the intake (with
/// [`Intake::reserve_behind`] if the endpoint has work due before it); if it reserves a
/// slot, the delivery is written already `sending` under a lease and goes into `fresh`.
/// Deliveries start their life (and retry clock) at `deliverAt` for a scheduled message.
///
/// The endpoints are matched first, then locked in id order (so concurrent fan-outs to
/// one application never deadlock): one deleted or disabled meanwhile is skipped rather
/// than failing the message, and one deleted later waits for this commit. All
/// deliveries go in one statement, and the endpoints' `next_due_at` in one more, sent
/// together.
pub(super) async fn fan_out(
    tx: &Transaction<'_>,
    node: &str,
    msg: &Message,
    only: Option<&str>,
    fresh: &mut Fresh,
) -> Result<()> {
    let start = ms(msg.deliver_at.unwrap_or(msg.created_at).max(msg.created_at));
    let immediate = start == ms(msg.created_at);
    let rows = tx
        .query(
            &tx.prepare_cached(&format!(
                "SELECT {EP_COLS} FROM endpoints WHERE app_id = $1 AND NOT disabled"
            ))
            .await
            .map_err(backend)?,
            &[&msg.app_id],
        )
        .await
        .map_err(backend)?;
    let mut wanted: Vec<Endpoint> = Vec::new();
    for r in &rows {
        let ep = ep_row(r)?;
        let yes = match only {
            Some(id) => id == ep.id,
            None => ep.settings.wants(&msg.event_type, msg.channels.as_deref()),
        };
        if yes {
            wanted.push(ep);
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = wanted.iter().map(|e| e.id.as_str()).collect();
    // The lock, then (in the same round trip, so still after it) every process's leases.
    let lock = tx
        .prepare_cached(
            "SELECT id, next_due_at FROM endpoints WHERE id = ANY($1) AND NOT disabled
             ORDER BY id FOR NO KEY UPDATE",
        )
        .await
        .map_err(backend)?;
    let count = fresh.intake.is_some() && immediate;
    if count {
        prepare_in_flight(tx).await?;
    }
    let lock_args: [&(dyn ToSql + Sync); 1] = [&ids];
    let (locked, leased) = tokio::join!(tx.query(&lock, &lock_args), async {
        match count {
            true => in_flight(tx, &ids, start).await,
            false => Ok(HashMap::new()),
        }
    });
    let locked: HashMap<String, Option<DateTime<Utc>>> = locked
        .map_err(backend)?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<std::result::Result<_, tokio_postgres::Error>>()
        .map_err(backend)?;
    let leased = leased?;
    let mut app: Option<AppLimits> = None;
    let token = lease_token(node);
    let (mut targets, mut statuses, mut dues, mut tokens) = (vec![], vec![], vec![], vec![]);
    for ep in wanted {
        let Some(next_due) = locked.get(&ep.id) else {
            continue; // deleted or disabled since it was matched
        };
        // Handed over with a slot free across processes, and past work due before it
        // only with most of them free (`passes_queue`).
        let leased_to = leased.get(&ep.id).copied().unwrap_or(0);
        let behind = next_due.is_some_and(|t| t <= start);
        let intake = fresh.intake.clone().filter(|intake| {
            // The worker's own limit, if any, it checks itself when reserving.
            let cap = ep.concurrency_cap_within(intake.limit(&ep));
            immediate && passes_queue(leased_to, cap, behind)
        });
        let mut reserved = None;
        if let Some(intake) = intake {
            if app.is_none() {
                app = Some(
                    app_limits(tx, &[msg.app_id.as_str()])
                        .await?
                        .remove(&msg.app_id)
                        .unwrap_or_default(),
                );
            }
            let limits = app.as_ref().expect("read above");
            let yes = match behind {
                false => intake.reserve(&ep, limits.rate),
                true => intake.reserve_behind(&ep, limits.rate),
            };
            if yes {
                reserved = Some(ms(start + intake.lease()));
                fresh.file(msg, &ep, &token, start, limits, leased_to);
            }
        }
        targets.push(ep.id);
        match reserved {
            Some(until) => {
                statuses.push("sending");
                dues.push(until);
                tokens.push(Some(token.clone()));
            }
            None => {
                statuses.push("pending");
                dues.push(start);
                tokens.push(None);
                fresh.queued = true;
            }
        }
    }
    if targets.is_empty() {
        return Ok(());
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO deliveries (app_id, msg_id, endpoint_id, status, attempts, manual,
                 scheduled_at, due_at, lease_token, created_at, updated_at)
             SELECT $1::text, $2::text, x.ep, x.status, 0, false, $3::timestamptz, x.due, x.token, $3, $3
             FROM unnest($4::text[], $5::text[], $6::timestamptz[], $7::text[])
                  AS x(ep, status, due, token)
             RETURNING id, endpoint_id",
        )
        .await
        .map_err(backend)?;
    // LEAST ignores NULL: an endpoint with nothing queued gets the new delivery's time.
    let bump = tx
        .prepare_cached(
            "UPDATE endpoints SET next_due_at = LEAST(next_due_at, x.due)
             FROM unnest($1::text[], $2::timestamptz[]) AS x(id, due)
             WHERE endpoints.id = x.id",
        )
        .await
        .map_err(backend)?;
    let insert_args: [&(dyn ToSql + Sync); 7] = [
        &msg.app_id,
        &msg.id,
        &start,
        &targets,
        &statuses,
        &dues,
        &tokens,
    ];
    let bump_args: [&(dyn ToSql + Sync); 2] = [&targets, &dues];
    let (inserted, bumped) = tokio::join!(
        tx.query(&insert, &insert_args),
        tx.execute(&bump, &bump_args),
    );
    let inserted = inserted.map_err(backend)?;
    bumped.map_err(backend)?;
    if fresh.queued {
        notify_work(tx, node).await?;
    }
    if !fresh.claimed.is_empty() {
        // The handed-over deliveries learn their ids.
        let by_endpoint: HashMap<String, i64> = inserted
            .iter()
            .map(|r| Ok((r.try_get(1)?, r.try_get(0)?)))
            .collect::<std::result::Result<_, tokio_postgres::Error>>()
            .map_err(backend)?;
        for d in &mut fresh.claimed {
            d.id = *by_endpoint.get(&d.endpoint.id).ok_or_else(|| {
                StoreError::Backend("PostgreSQL: a handed-over delivery was not written".into())
            })?;
        }
    }
    Ok(())
}

/// Tells every other process listening that deliveries were queued, at this
/// transaction's commit ([`super::changes`]): their workers look at the queue now. The
/// notice names this `node`, whose own workers are told in-process.
pub(super) async fn notify_work(tx: &Transaction<'_>, node: &str) -> Result<()> {
    let stmt = tx
        .prepare_cached(&format!("SELECT pg_notify('{}', $1)", super::changes::WORK))
        .await
        .map_err(backend)?;
    tx.execute(&stmt, &[&node]).await.map_err(backend)?;
    Ok(())
}

/// Columns of [`EP_COLS`]: the index of the first column after them.
const EP_COLUMNS: usize = 9;

/// The healthy and failing walks, as conditions that select their partial index.
pub(super) const HEALTHY: &str = "failing_since IS NULL";
pub(super) const FAILING: &str = "failing_since IS NOT NULL";

/// The ids a worker reports as full ([`Busy::FULL`]).
fn full_ids(busy: &[Busy]) -> Vec<String> {
    busy.iter()
        .filter(|b| b.is_full())
        .map(|b| b.id.clone())
        .collect()
}

/// An endpoint with work due, locked for a claim.
struct Due {
    endpoint: Endpoint,
    next_due: DateTime<Utc>,
    /// Deliveries due by the claim's `now`, counted up to the claim's `max`.
    waiting: usize,
}

const IN_FLIGHT: &str = "SELECT endpoint_id, count(*) FROM deliveries
     WHERE endpoint_id = ANY($1) AND status = 'sending' AND due_at > $2
     GROUP BY endpoint_id";

/// [`in_flight`]'s statement, prepared (once per connection).
pub(super) async fn prepare_in_flight(tx: &Transaction<'_>) -> Result<tokio_postgres::Statement> {
    tx.prepare_cached(IN_FLIGHT).await.map_err(backend)
}

/// How many deliveries of each of `endpoints` are leased and not expired at `now`, by any
/// process (through the `deliveries_sending` index): what limits across processes count,
/// and what a worker's adaptive limits learn the other processes' attempts from
/// ([`ClaimedDelivery::in_flight_shared`]). Counted without reading the rows: telling
/// this process's leases apart in the statement (by token) cost 2 nodes about a tenth
/// more CPU per message (journal, "Several nodes: the adaptive limit across processes").
/// Asked once the endpoints are locked, in a statement of its own: a statement sees only
/// what was committed when it began, and a lock it waited for may have been held by a
/// transaction that leased more of them.
///
/// It may be sent together with the statement that takes the locks, after it (the server
/// runs a connection's statements in order): prepare it first with [`prepare_in_flight`],
/// so that nothing is awaited between the two.
pub(super) async fn in_flight(
    tx: &Transaction<'_>,
    endpoints: &[&str],
    now: DateTime<Utc>,
) -> Result<HashMap<String, usize>> {
    if endpoints.is_empty() {
        return Ok(HashMap::new());
    }
    let stmt = prepare_in_flight(tx).await?;
    tx.query(&stmt, &[&endpoints, &now])
        .await
        .map_err(backend)?
        .iter()
        .map(|r| {
            let n: i64 = r.try_get(1)?;
            Ok((r.try_get(0)?, usize::try_from(n).unwrap_or(0)))
        })
        .collect::<std::result::Result<_, tokio_postgres::Error>>()
        .map_err(backend)
}

/// Up to `limit` enabled endpoints of one kind with work due by `now`, earliest first,
/// leaving out those `full` names (endpoint or application ids), locked for this claim;
/// endpoints another claim holds are passed by. Each says how much of its work is due,
/// counted through the index up to `max` (never more than one claim can take).
async fn due_endpoints(
    tx: &Transaction<'_>,
    kind: &str,
    now: DateTime<Utc>,
    limit: usize,
    max: usize,
    full: &[String],
) -> Result<Vec<Due>> {
    let rows = tx
        .query(
            &tx.prepare_cached(&format!(
                "SELECT {EP_COLS}, next_due_at,
                     (SELECT count(*) FROM (SELECT 1 FROM deliveries d
                                            WHERE d.endpoint_id = endpoints.id
                                              AND d.due_at IS NOT NULL AND d.due_at <= $1
                                            LIMIT $4) AS w)
                 FROM endpoints
                 WHERE NOT disabled AND {kind} AND next_due_at IS NOT NULL AND next_due_at <= $1
                   AND NOT (id = ANY($3)) AND NOT (app_id = ANY($3))
                 ORDER BY next_due_at LIMIT $2
                 FOR UPDATE SKIP LOCKED"
            ))
            .await
            .map_err(backend)?,
            &[&now, &(limit as i64), &full, &(max as i64)],
        )
        .await
        .map_err(backend)?;
    rows.iter()
        .map(|r| {
            let waiting: i64 = r.try_get(EP_COLUMNS + 1).map_err(backend)?;
            Ok(Due {
                endpoint: ep_row(r)?,
                next_due: r.try_get(EP_COLUMNS).map_err(backend)?,
                waiting: usize::try_from(waiting).unwrap_or(0),
            })
        })
        .collect()
}

/// Sets an endpoint's `next_due_at` to its earliest queued delivery (an index lookup).
pub(super) async fn refresh_next_due(tx: &Transaction<'_>, endpoint_id: &str) -> Result<()> {
    tx.execute(
        &tx.prepare_cached(
            "UPDATE endpoints SET next_due_at =
                 (SELECT min(due_at) FROM deliveries WHERE endpoint_id = $1 AND due_at IS NOT NULL)
             WHERE id = $1",
        )
        .await
        .map_err(backend)?,
        &[&endpoint_id],
    )
    .await
    .map_err(backend)?;
    Ok(())
}

/// Claims up to `max` due deliveries under a fresh lease (see
/// [`DeliveryQueue::claim_deliveries`] for the limits it keeps).
#[allow(clippy::too_many_arguments)]
pub(super) async fn claim(
    tx: &Transaction<'_>,
    node: &str,
    now: DateTime<Utc>,
    lease: chrono::Duration,
    max: usize,
    max_failing: usize,
    busy: &[Busy],
) -> Result<Vec<ClaimedDelivery>> {
    let now = ms(now);
    let until = ms(now + lease);
    let full = full_ids(busy);
    let busy_of: HashMap<&str, &Busy> = busy.iter().map(|b| (b.id.as_str(), b)).collect();
    let busy_of = |id: &str| {
        busy_of
            .get(id)
            .map_or((0, None), |b| (b.in_flight, b.limit))
    };
    let mut candidates = due_endpoints(tx, HEALTHY, now, (max * 2).max(16), max, &full).await?;
    if max_failing > 0 {
        candidates
            .extend(due_endpoints(tx, FAILING, now, max_failing * 2, max_failing, &full).await?);
        candidates.sort_by_key(|d| d.next_due);
    }
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let mut app_ids: Vec<&str> = candidates
        .iter()
        .map(|d| d.endpoint.app_id.as_str())
        .collect();
    app_ids.sort();
    app_ids.dedup();
    let ids: Vec<&str> = candidates.iter().map(|d| d.endpoint.id.as_str()).collect();
    let (apps, leased) = tokio::join!(app_limits(tx, &app_ids), in_flight(tx, &ids, now));
    let (mut apps, leased) = (apps?, leased?);
    let mut paces = Paces::lock(tx, &candidates, &apps, now).await?;
    // How many each endpoint gives, in due order, within every limit: the endpoints are
    // locked, so what was counted is there to take (but for a delivery a report holds
    // this instant, passed by).
    let mut takes: Vec<(&Endpoint, usize)> = Vec::new();
    let (mut planned, mut failing_planned) = (0, 0);
    for due in &candidates {
        let ep = &due.endpoint;
        let remaining = max.saturating_sub(planned);
        if remaining == 0 {
            break;
        }
        let app = apps.entry(ep.app_id.clone()).or_default();
        // In flight to it: this process's count, or every process's if that is more
        // (limits hold across processes; so does this process's own limit, if any).
        let (in_flight, limit) = busy_of(&ep.id);
        let free = claimable(
            ep,
            in_flight.max(leased.get(&ep.id).copied().unwrap_or(0)),
            limit,
            remaining,
            max_failing.saturating_sub(failing_planned),
            app,
        )
        .min(due.waiting)
        .min(paces.room(ep, app));
        if free == 0 {
            continue;
        }
        app.claimed += free;
        planned += free;
        if ep.is_failing() {
            failing_planned += free;
        }
        takes.push((ep, free));
    }
    // Every endpoint looked at gets its `next_due_at` put right below, taken from or not:
    // one whose work was done elsewhere (a handed-over delivery reported, a message
    // deleted) still says it is due, and would otherwise come first in every claim.
    let looked_at: Vec<&str> = candidates.iter().map(|d| d.endpoint.id.as_str()).collect();
    // A paced one is not due again before its pacing has room (`not_before`), so that
    // no process looks at it in every claim meanwhile.
    let refresh = tx
        .prepare_cached(
            "UPDATE endpoints SET next_due_at =
                 (SELECT CASE WHEN min(due_at) IS NULL THEN NULL
                              ELSE GREATEST(min(due_at), x.not_before) END
                  FROM deliveries d
                  WHERE d.endpoint_id = endpoints.id AND d.due_at IS NOT NULL)
             FROM unnest($1::text[], $2::timestamptz[]) AS x(id, not_before)
             WHERE endpoints.id = x.id",
        )
        .await
        .map_err(backend)?;
    if takes.is_empty() {
        let not_before = paces.not_before(&candidates, &apps);
        tx.execute(&refresh, &[&looked_at, &not_before])
            .await
            .map_err(backend)?;
        return Ok(Vec::new());
    }
    let endpoint_ids: Vec<&str> = takes.iter().map(|(ep, _)| ep.id.as_str()).collect();
    let limits: Vec<i64> = takes.iter().map(|(_, n)| *n as i64).collect();
    let token = lease_token(node);
    // Every endpoint's share in one statement, then their `next_due_at` in one more.
    let take = tx
        .prepare_cached(
            "UPDATE deliveries SET status = 'sending', due_at = $4, lease_token = $5, updated_at = $3
             WHERE id IN (SELECT t.id
                          FROM unnest($1::text[], $2::int8[]) AS e(endpoint_id, n)
                          CROSS JOIN LATERAL (
                              SELECT id FROM deliveries
                              WHERE endpoint_id = e.endpoint_id
                                AND due_at IS NOT NULL AND due_at <= $3
                              ORDER BY due_at LIMIT e.n
                              FOR UPDATE SKIP LOCKED) AS t)
             RETURNING id, msg_id, attempts, scheduled_at, created_at, manual, endpoint_id",
        )
        .await
        .map_err(backend)?;
    let rows = tx
        .query(&take, &[&endpoint_ids, &limits, &now, &until, &token])
        .await
        .map_err(backend)?;
    // In the endpoints' order, each one's earliest first, as one by one.
    let order: HashMap<&str, usize> = takes
        .iter()
        .enumerate()
        .map(|(i, (ep, _))| (ep.id.as_str(), i))
        .collect();
    let mut taken = Vec::with_capacity(rows.len());
    for r in rows {
        let endpoint_id: &str = r.try_get(6).map_err(backend)?;
        let i = *order.get(endpoint_id).ok_or_else(|| {
            StoreError::Backend("PostgreSQL: a claim took a delivery of another endpoint".into())
        })?;
        let scheduled: DateTime<Utc> = r.try_get(3).map_err(backend)?;
        let id: i64 = r.try_get(0).map_err(backend)?;
        taken.push(((i, scheduled, id), r));
    }
    taken.sort_by_key(|(key, _)| *key);
    let taken: Vec<(tokio_postgres::Row, Endpoint)> = taken
        .into_iter()
        .map(|((i, _, _), r)| (r, takes[i].0.clone()))
        .collect();
    // Each message once, however many of its deliveries were taken.
    let mut msg_ids: Vec<String> = taken
        .iter()
        .map(|(r, _)| r.try_get(1))
        .collect::<std::result::Result<_, _>>()
        .map_err(backend)?;
    msg_ids.sort();
    msg_ids.dedup();
    let messages: HashMap<String, Message> = tx
        .query(
            &tx.prepare_cached(&format!(
                "SELECT {MSG_COLS} FROM messages WHERE id = ANY($1)"
            ))
            .await
            .map_err(backend)?,
            &[&msg_ids],
        )
        .await
        .map_err(backend)?
        .iter()
        .map(|r| msg_row(r).map(|m| (m.id.clone(), m)))
        .collect::<Result<_>>()?;
    // Paced deliveries are booked their start times in the order they start; then the
    // endpoints' `next_due_at` (knowing how far the pacing now reaches) and the paces.
    let starts: Vec<Option<DateTime<Utc>>> = taken
        .iter()
        .map(|(_, ep)| {
            let app = apps.get(&ep.app_id).map(|a| a.rate).unwrap_or_default();
            paces.book(ep, app)
        })
        .collect();
    let not_before = paces.not_before(&candidates, &apps);
    let refresh_args: [&(dyn ToSql + Sync); 2] = [&looked_at, &not_before];
    let (refreshed, saved) = tokio::join!(tx.execute(&refresh, &refresh_args), paces.save(tx));
    refreshed.map_err(backend)?;
    saved?;
    let mut out = Vec::with_capacity(taken.len());
    for ((r, ep), start_at) in taken.into_iter().zip(starts) {
        let msg_id: String = r.try_get(1).map_err(backend)?;
        let message = messages.get(&msg_id).cloned().ok_or_else(|| {
            StoreError::Backend(format!(
                "PostgreSQL: delivery of a missing message {msg_id}"
            ))
        })?;
        let app = apps.get(&ep.app_id).cloned().unwrap_or_default();
        let attempts: i32 = r.try_get(2).map_err(backend)?;
        let shared = leased.get(&ep.id).copied().unwrap_or(0);
        out.push(ClaimedDelivery {
            id: r.try_get(0).map_err(backend)?,
            lease_token: token.clone(),
            attempts: u32::try_from(attempts).unwrap_or(0),
            scheduled_at: r.try_get(3).map_err(backend)?,
            created_at: r.try_get(4).map_err(backend)?,
            trigger: if r.try_get(5).map_err(backend)? {
                Trigger::Manual
            } else {
                Trigger::Scheduled
            },
            message,
            endpoint: ep,
            app_retry_policy: app.policy,
            app_throttle_rate: app.rate,
            start_at,
            in_flight_shared: u32::try_from(shared).unwrap_or(u32::MAX),
        });
    }
    Ok(out)
}

/// [`PACE_AHEAD`] as a time span.
fn pace_ahead() -> chrono::Duration {
    chrono::Duration::from_std(PACE_AHEAD).unwrap_or_default()
}

/// The `throttleRate` pacing of a claim, across processes: the next free start time of
/// each paced endpoint and application it may take from (`paces` rows, locked until
/// the claim commits, so claims by other processes book after this one).
struct Paces {
    now: DateTime<Utc>,
    /// Key (endpoint or application id) -> (rate, next free start).
    next: HashMap<String, (u32, DateTime<Utc>)>,
}

impl Paces {
    /// Locks (creating them where missing) the pacing rows of the candidates' paced
    /// endpoints and applications, in key order.
    async fn lock(
        tx: &Transaction<'_>,
        candidates: &[Due],
        apps: &HashMap<String, AppLimits>,
        now: DateTime<Utc>,
    ) -> Result<Paces> {
        let mut rates: Vec<(&str, u32)> = Vec::new();
        for due in candidates {
            let ep = &due.endpoint;
            if let Some(r) = ep.settings.throttle_rate.filter(|r| *r > 0) {
                rates.push((&ep.id, r));
            }
            if let Some(r) = apps.get(&ep.app_id).and_then(|a| a.rate) {
                rates.push((&ep.app_id, r));
            }
        }
        let mut paces = Paces {
            now,
            next: HashMap::new(),
        };
        if rates.is_empty() {
            return Ok(paces);
        }
        rates.sort();
        rates.dedup();
        let keys: Vec<&str> = rates.iter().map(|(k, _)| *k).collect();
        // `DO UPDATE` (to the same key) locks an existing row and returns it as it is.
        let rows = tx
            .query(
                &tx.prepare_cached(
                    "INSERT INTO paces (key, next_at) SELECT k, $2 FROM unnest($1::text[]) AS k
                     ON CONFLICT (key) DO UPDATE SET key = excluded.key
                     RETURNING key, next_at",
                )
                .await
                .map_err(backend)?,
                &[&keys, &now],
            )
            .await
            .map_err(backend)?;
        // Starts are booked from when the rows are ours, not from when the claim began:
        // a claim that waited here for another process's would otherwise book its first
        // starts in the past, and they would start at once, bunched with the next.
        let now = now.max(ms(crate::now()));
        paces.now = now;
        let rate_of: HashMap<&str, u32> = rates.into_iter().collect();
        for r in rows {
            let key: String = r.try_get(0).map_err(backend)?;
            let next: DateTime<Utc> = r.try_get(1).map_err(backend)?;
            let rate = rate_of.get(key.as_str()).copied().unwrap_or(1);
            paces.next.insert(key, (rate, next.max(now)));
        }
        Ok(paces)
    }

    /// The paces that bound deliveries to `ep`: its own and its application's.
    fn keys(ep: &Endpoint, app_rate: Option<u32>) -> impl Iterator<Item = &str> {
        let own = ep
            .settings
            .throttle_rate
            .filter(|r| *r > 0)
            .map(|_| ep.id.as_str());
        let app = app_rate.filter(|r| *r > 0).map(|_| ep.app_id.as_str());
        own.into_iter().chain(app)
    }

    /// How many starts fit before `now + PACE_AHEAD` under `key`'s pace.
    fn room_of(&self, key: &str) -> usize {
        let Some((rate, next)) = self.next.get(key) else {
            return usize::MAX;
        };
        let ahead = (self.now + pace_ahead() - *next).num_milliseconds();
        if ahead <= 0 {
            return 0;
        }
        (ahead as u64 * u64::from(*rate)).div_ceil(1000) as usize
    }

    /// How many deliveries to `ep` this claim may book under its pace and its
    /// application's (less what it already took of the application: `app.claimed`).
    fn room(&self, ep: &Endpoint, app: &AppLimits) -> usize {
        let own = match ep.settings.throttle_rate.filter(|r| *r > 0) {
            Some(_) => self.room_of(&ep.id),
            None => usize::MAX,
        };
        let shared = match app.rate {
            Some(_) => self.room_of(&ep.app_id).saturating_sub(app.claimed),
            None => usize::MAX,
        };
        own.min(shared)
    }

    /// Books the next start of a delivery to `ep`: the later of its own and its
    /// application's next free start, each then moved on by 1/rate. When it starts;
    /// `None` when nothing paces it.
    fn book(&mut self, ep: &Endpoint, app_rate: Option<u32>) -> Option<DateTime<Utc>> {
        let keys: Vec<&str> = Self::keys(ep, app_rate).collect();
        let start = keys
            .iter()
            .filter_map(|k| self.next.get(*k).map(|(_, t)| *t))
            .max()?;
        for k in keys {
            if let Some((rate, next)) = self.next.get_mut(k) {
                *next = start + chrono::Duration::microseconds(1_000_000 / i64::from(*rate));
            }
        }
        Some(start)
    }

    /// For each candidate, in order: when its pacing has room again (its latest next
    /// free start less [`PACE_AHEAD`], plus one step), or `None` when it is not paced.
    fn not_before(
        &self,
        candidates: &[Due],
        apps: &HashMap<String, AppLimits>,
    ) -> Vec<Option<DateTime<Utc>>> {
        candidates
            .iter()
            .map(|due| {
                let ep = &due.endpoint;
                let app_rate = apps.get(&ep.app_id).and_then(|a| a.rate);
                Self::keys(ep, app_rate)
                    .filter_map(|k| {
                        let (rate, next) = self.next.get(k)?;
                        let step = chrono::Duration::microseconds(1_000_000 / i64::from(*rate));
                        Some(ms(*next - pace_ahead() + step))
                    })
                    .max()
                    .filter(|t| *t > self.now)
            })
            .collect()
    }

    /// Writes the moved paces back (their rows are locked by [`Paces::lock`]).
    async fn save(&self, tx: &Transaction<'_>) -> Result<()> {
        if self.next.is_empty() {
            return Ok(());
        }
        let (keys, nexts): (Vec<&str>, Vec<DateTime<Utc>>) =
            self.next.iter().map(|(k, (_, t))| (k.as_str(), *t)).unzip();
        tx.execute(
            &tx.prepare_cached(
                "UPDATE paces SET next_at = x.next_at
                 FROM unnest($1::text[], $2::timestamptz[]) AS x(key, next_at)
                 WHERE paces.key = x.key",
            )
            .await
            .map_err(backend)?,
            &[&keys, &nexts],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }
}

/// Logs an attempt and, while `token` still holds the delivery, moves it on.
pub(super) async fn report(
    tx: &Transaction<'_>,
    delivery_id: i64,
    token: &str,
    rep: AttemptReport,
) -> Result<ReportOutcome> {
    let a = &rep.attempt;
    let attempted = ms(a.attempted_at);
    let now = ms(a.attempted_at + chrono::Duration::milliseconds(a.duration_ms as i64));
    let (status, due) = match rep.next {
        NextStep::Succeeded => ("succeeded", None),
        NextStep::Failed => ("failed", None),
        NextStep::RetryAt(t) => ("pending", Some(ms(t))),
    };
    // Not for an endpoint deleted meanwhile: the attempt would have nothing to belong to.
    // Logged once if the report is sent again (its commit's fate unknown: a dropped
    // connection), which then finds its lease gone.
    let log = tx
        .prepare_cached(
            "INSERT INTO attempts (id, app_id, msg_id, endpoint_id, url, attempted_at, status_code,
                 duration_ms, succeeded, error_kind, response, manual)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12
             WHERE EXISTS (SELECT 1 FROM endpoints WHERE id = $4)
               AND EXISTS (SELECT 1 FROM messages WHERE id = $3)
             ON CONFLICT (id) DO NOTHING",
        )
        .await
        .map_err(backend)?;
    let advance = tx
        .prepare_cached(
            "UPDATE deliveries SET status = $3, due_at = $4, scheduled_at = coalesce($4, scheduled_at),
                 lease_token = NULL, attempts = attempts + 1, manual = false, updated_at = $5
             WHERE id = $1 AND status = 'sending' AND lease_token = $2
             RETURNING attempts",
        )
        .await
        .map_err(backend)?;
    let status_code = a.status_code.map(i32::from);
    let duration = a.duration_ms as i64;
    let manual = a.trigger == Trigger::Manual;
    let log_args: [&(dyn ToSql + Sync); 12] = [
        &a.id,
        &a.app_id,
        &a.msg_id,
        &a.endpoint_id,
        &a.url,
        &attempted,
        &status_code,
        &duration,
        &a.succeeded,
        &a.error_kind,
        &a.response,
        &manual,
    ];
    let advance_args: [&(dyn ToSql + Sync); 5] = [&delivery_id, &token, &status, &due, &now];
    let (logged, advanced) = tokio::join!(
        tx.execute(&log, &log_args),
        tx.query_opt(&advance, &advance_args),
    );
    let logged = logged.map_err(backend)? > 0;
    let attempts: Option<i32> = advanced
        .map_err(backend)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(backend)?;

    // Endpoint health: remember when failing started; a success clears it.
    let mut endpoint_disabled = false;
    if a.succeeded {
        tx.execute(
            &tx.prepare_cached(
                "UPDATE endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
            )
            .await
            .map_err(backend)?,
            &[&a.endpoint_id],
        )
        .await
        .map_err(backend)?;
    } else {
        tx.execute(
            &tx.prepare_cached(
                "UPDATE endpoints SET failing_since = coalesce(failing_since, $2) WHERE id = $1",
            )
            .await
            .map_err(backend)?,
            &[&a.endpoint_id, &attempted],
        )
        .await
        .map_err(backend)?;
        let cutoff = rep.disable_if_failing_since.map(ms);
        let n = tx
            .execute(
                &tx.prepare_cached(
                    "UPDATE endpoints SET disabled = true, updated_at = $4
                     WHERE id = $1 AND NOT disabled
                       AND ($2 OR ($3::timestamptz IS NOT NULL AND failing_since <= $3))",
                )
                .await
                .map_err(backend)?,
                &[&a.endpoint_id, &rep.disable_endpoint, &cutoff, &now],
            )
            .await
            .map_err(backend)?;
        endpoint_disabled = n > 0;
    }
    // `next_due_at` may now be early (never late): the next claim corrects it. A retry
    // must not be later than it, though.
    if let (Some(due), Some(_)) = (due, attempts) {
        tx.execute(
            &tx.prepare_cached(
                "UPDATE endpoints SET next_due_at = LEAST(coalesce(next_due_at, $2), $2) WHERE id = $1",
            )
            .await
            .map_err(backend)?,
            &[&a.endpoint_id, &due],
        )
        .await
        .map_err(backend)?;
    }
    // Statistics last, after the endpoint's row, as a write batch takes them.
    if logged {
        let mut tally = crate::stats::Tally::default();
        tally.add(&a.endpoint_id, a.attempted_at, a.duration_ms, a.succeeded);
        super::deliveries::add_stats(tx, &tally).await?;
    }
    let applied = if attempts.is_some() {
        Applied::Yes
    } else {
        let exists = tx
            .query_opt(
                &tx.prepare_cached("SELECT 1 FROM deliveries WHERE id = $1")
                    .await
                    .map_err(backend)?,
                &[&delivery_id],
            )
            .await
            .map_err(backend)?
            .is_some();
        if exists {
            Applied::LeaseLost
        } else {
            Applied::DeliveryGone
        }
    };
    Ok(ReportOutcome {
        applied,
        endpoint_disabled,
        consecutive_failures: if a.succeeded {
            0
        } else {
            attempts.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
        },
    })
}

/// Hands a claimed delivery back unattempted, due at `now`, if `token` still holds it.
pub(super) async fn release(
    tx: &Transaction<'_>,
    delivery_id: i64,
    token: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let ep: Option<String> = tx
        .query_opt(
            &tx.prepare_cached(
                "UPDATE deliveries SET status = 'pending', due_at = $3, lease_token = NULL, updated_at = $3
                 WHERE id = $1 AND status = 'sending' AND lease_token = $2
                 RETURNING endpoint_id",
            )
            .await
            .map_err(backend)?,
            &[&delivery_id, &token, &ms(now)],
        )
        .await
        .map_err(backend)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(backend)?;
    if let Some(ep) = ep {
        refresh_next_due(tx, &ep).await?;
    }
    Ok(())
}

/// When the earliest queued work falls due on an endpoint with room, if any.
pub(super) async fn next_due(
    client: &impl GenericClient,
    busy: &[Busy],
    failing: bool,
) -> Result<Option<DateTime<Utc>>> {
    let full = full_ids(busy);
    let kinds: &[&str] = if failing {
        &[HEALTHY, FAILING]
    } else {
        &[HEALTHY]
    };
    let mut next: Option<DateTime<Utc>> = None;
    for kind in kinds {
        let row = client
            .query_opt(
                &client
                    .prepare_cached(&format!(
                        "SELECT next_due_at FROM endpoints
                         WHERE NOT disabled AND {kind} AND next_due_at IS NOT NULL
                           AND NOT (id = ANY($1)) AND NOT (app_id = ANY($1))
                         ORDER BY next_due_at LIMIT 1"
                    ))
                    .await
                    .map_err(backend)?,
                &[&full],
            )
            .await
            .map_err(backend)?;
        if let Some(r) = row {
            let due: DateTime<Utc> = r.try_get(0).map_err(backend)?;
            next = next.into_iter().chain(Some(due)).min();
        }
    }
    Ok(next)
}
