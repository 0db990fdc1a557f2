//! The delivery log on PostgreSQL: attempts and per-endpoint delivery state as the API
//! lists them, manual resends and recovers, and the counts behind stats and metrics.
//! Each listing walks an index in its key's order (attempts by `(endpoint_id, id)` or
//! `(msg_id, id)`, deliveries by `(endpoint_id, msg_id)` or `(msg_id, endpoint_id)`).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::errors::backend;
use super::listing::{paginate, Params};
use super::queue::{notify_work, refresh_next_due, FAILING, HEALTHY};
use super::rows::{ep_row, ms, EP_COLS};
use crate::*;

const ATTEMPT_COLS: &str = "id, app_id, msg_id, endpoint_id, url, attempted_at, status_code, duration_ms, succeeded, error_kind, response, manual";

fn attempt_row(r: &Row) -> Result<Attempt> {
    let status: Option<i32> = r.try_get(6).map_err(backend)?;
    let duration: i64 = r.try_get(7).map_err(backend)?;
    Ok(Attempt {
        id: r.try_get(0).map_err(backend)?,
        app_id: r.try_get(1).map_err(backend)?,
        msg_id: r.try_get(2).map_err(backend)?,
        endpoint_id: r.try_get(3).map_err(backend)?,
        url: r.try_get(4).map_err(backend)?,
        attempted_at: r.try_get(5).map_err(backend)?,
        status_code: status.and_then(|s| u16::try_from(s).ok()),
        duration_ms: u64::try_from(duration).unwrap_or(0),
        succeeded: r.try_get(8).map_err(backend)?,
        error_kind: r.try_get(9).map_err(backend)?,
        response: r.try_get(10).map_err(backend)?,
        trigger: if r.try_get(11).map_err(backend)? {
            Trigger::Manual
        } else {
            Trigger::Scheduled
        },
    })
}

const DELIVERY_VIEW_COLS: &str = "msg_id, endpoint_id, status, attempts,
    CASE WHEN status = 'pending' THEN scheduled_at END, updated_at";

fn delivery_view_row(r: &Row) -> Result<DeliveryView> {
    let status: &str = r.try_get(2).map_err(backend)?;
    let attempts: i32 = r.try_get(3).map_err(backend)?;
    Ok(DeliveryView {
        msg_id: r.try_get(0).map_err(backend)?,
        endpoint_id: r.try_get(1).map_err(backend)?,
        status: DeliveryStatus::parse(status).unwrap_or(DeliveryStatus::Pending),
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt: r.try_get(4).map_err(backend)?,
        updated_at: r.try_get(5).map_err(backend)?,
    })
}

pub(super) async fn list_attempts(
    c: &impl GenericClient,
    app_id: &str,
    q: &AttemptQuery,
) -> Result<Page<Attempt>> {
    let mut p = Params::default();
    let mut sql = format!(
        "SELECT {ATTEMPT_COLS} FROM attempts WHERE app_id = {}",
        p.push(app_id.to_string())
    );
    if let Some(m) = &q.msg_id {
        sql.push_str(&format!(" AND msg_id = {}", p.push(m.clone())));
    }
    if let Some(ep) = &q.endpoint_id {
        sql.push_str(&format!(" AND endpoint_id = {}", p.push(ep.clone())));
    }
    if let Some(ok) = q.succeeded {
        sql.push_str(&format!(" AND succeeded = {}", p.push(ok)));
    }
    match q.status_code_class {
        Some(0) => sql.push_str(" AND status_code IS NULL"),
        Some(class) => {
            let lo = p.push(i32::from(class) * 100);
            let hi = p.push(i32::from(class) * 100 + 100);
            sql.push_str(&format!(" AND status_code >= {lo} AND status_code < {hi}"));
        }
        None => {}
    }
    if let Some(b) = q.before {
        sql.push_str(&format!(" AND attempted_at < {}", p.push(ms(b))));
    }
    if let Some(a) = q.after {
        sql.push_str(&format!(" AND attempted_at > {}", p.push(ms(a))));
    }
    paginate(c, &sql, p, "id", &q.list, attempt_row, |a| a.id.clone()).await
}

pub(super) async fn get_attempt(
    c: &impl GenericClient,
    app_id: &str,
    attempt_id: &str,
) -> Result<Option<Attempt>> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLS} FROM attempts WHERE app_id = $1 AND id = $2"
        ))
        .await
        .map_err(backend)?;
    c.query_opt(&stmt, &[&app_id, &attempt_id])
        .await
        .map_err(backend)?
        .as_ref()
        .map(attempt_row)
        .transpose()
}

pub(super) async fn list_message_deliveries(
    c: &impl GenericClient,
    app_id: &str,
    msg_id: &str,
    q: &ListQuery,
) -> Result<Page<DeliveryView>> {
    let mut p = Params::default();
    let sql = format!(
        "SELECT {DELIVERY_VIEW_COLS} FROM deliveries WHERE app_id = {} AND msg_id = {}",
        p.push(app_id.to_string()),
        p.push(msg_id.to_string())
    );
    paginate(c, &sql, p, "endpoint_id", q, delivery_view_row, |d| {
        d.endpoint_id.clone()
    })
    .await
}

pub(super) async fn list_endpoint_deliveries(
    c: &impl GenericClient,
    app_id: &str,
    endpoint_id: &str,
    q: &ListQuery,
    status: Option<DeliveryStatus>,
) -> Result<Page<DeliveryView>> {
    let mut p = Params::default();
    let mut sql = format!(
        "SELECT {DELIVERY_VIEW_COLS} FROM deliveries WHERE endpoint_id = {} AND app_id = {}",
        p.push(endpoint_id.to_string()),
        p.push(app_id.to_string())
    );
    if let Some(s) = status {
        sql.push_str(&format!(" AND status = {}", p.push(s.as_str())));
    }
    paginate(c, &sql, p, "msg_id", q, delivery_view_row, |d| {
        d.msg_id.clone()
    })
    .await
}

pub(super) async fn resend(
    tx: &Transaction<'_>,
    node: &str,
    app_id: &str,
    msg_id: &str,
    endpoint_id: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let now = ms(now);
    // Locked, so a claim cannot start an attempt between this look and the update.
    let state = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT status FROM deliveries WHERE msg_id = $1 AND endpoint_id = $2 FOR UPDATE",
            )
            .await
            .map_err(backend)?,
            &[&msg_id, &endpoint_id],
        )
        .await
        .map_err(backend)?;
    let status: Option<String> = state.map(|r| r.try_get(0)).transpose().map_err(backend)?;
    match status.as_deref() {
        Some("sending") => {
            return Err(StoreError::Conflict(
                "an attempt of this message to this endpoint is in flight".into(),
            ))
        }
        Some(_) => {
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE deliveries SET status = 'pending', due_at = $3, scheduled_at = $3,
                         manual = true, updated_at = $3
                     WHERE msg_id = $1 AND endpoint_id = $2",
                )
                .await
                .map_err(backend)?,
                &[&msg_id, &endpoint_id, &now],
            )
            .await
            .map_err(backend)?;
        }
        None => {
            // Only to an endpoint of this application, for a message of it.
            let n = tx
                .execute(
                    &tx.prepare_cached(
                        "INSERT INTO deliveries (app_id, msg_id, endpoint_id, status, attempts, manual,
                             scheduled_at, due_at, created_at, updated_at)
                         SELECT $1, $2, $3, 'pending', 0, true, $4, $4, $4, $4
                         WHERE EXISTS (SELECT 1 FROM endpoints WHERE id = $3 AND app_id = $1)
                           AND EXISTS (SELECT 1 FROM messages WHERE id = $2 AND app_id = $1)",
                    )
                    .await
                    .map_err(backend)?,
                    &[&app_id, &msg_id, &endpoint_id, &now],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
        }
    }
    refresh_next_due(tx, endpoint_id).await?;
    notify_work(tx, node).await
}

pub(super) async fn recover(
    tx: &Transaction<'_>,
    node: &str,
    app_id: &str,
    endpoint_id: &str,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<u64> {
    let n = tx
        .execute(
            &tx.prepare_cached(
                "UPDATE deliveries SET status = 'pending', due_at = $5, scheduled_at = $5,
                     manual = true, updated_at = $5
                 WHERE endpoint_id = $2 AND app_id = $1 AND status = 'failed'
                   AND EXISTS (SELECT 1 FROM messages WHERE messages.id = deliveries.msg_id
                               AND created_at >= $3
                               AND ($4::timestamptz IS NULL OR created_at < $4)
                               AND (payload_expires_at IS NULL OR payload_expires_at > $5))",
            )
            .await
            .map_err(backend)?,
            &[&app_id, &endpoint_id, &ms(since), &until.map(ms), &ms(now)],
        )
        .await
        .map_err(backend)?;
    refresh_next_due(tx, endpoint_id).await?;
    if n > 0 {
        notify_work(tx, node).await?;
    }
    Ok(n)
}

pub(super) async fn queue_stats(c: &impl GenericClient, now: DateTime<Utc>) -> Result<QueueStats> {
    let now = ms(now);
    let row = c
        .query_one(
            &c.prepare_cached(
                "SELECT count(*), count(*) FILTER (WHERE due_at <= $1) FROM deliveries
                 WHERE due_at IS NOT NULL",
            )
            .await
            .map_err(backend)?,
            &[&now],
        )
        .await
        .map_err(backend)?;
    let queued: i64 = row.try_get(0).map_err(backend)?;
    let due: i64 = row.try_get(1).map_err(backend)?;
    // One look per kind of endpoint: each is an index's first entry.
    let mut oldest: Option<DateTime<Utc>> = None;
    for kind in [HEALTHY, FAILING] {
        let row = c
            .query_one(
                &c.prepare_cached(&format!(
                    "SELECT min(next_due_at) FROM endpoints
                     WHERE NOT disabled AND {kind} AND next_due_at IS NOT NULL"
                ))
                .await
                .map_err(backend)?,
                &[],
            )
            .await
            .map_err(backend)?;
        let d: Option<DateTime<Utc>> = row.try_get(0).map_err(backend)?;
        oldest = oldest.into_iter().chain(d).min();
    }
    Ok(QueueStats {
        queued: u64::try_from(queued).unwrap_or(0),
        due: u64::try_from(due).unwrap_or(0),
        oldest_due: oldest.filter(|t| *t <= now),
    })
}

/// See [`Store::endpoint_attempt_buckets`]: the endpoint's hours, by the primary key.
pub(super) async fn endpoint_attempt_buckets(
    c: &impl GenericClient,
    app_id: &str,
    endpoint_id: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    width: chrono::Duration,
) -> Result<Vec<AttemptBucket>> {
    let rows = stats_rows(c, endpoint_id, Some(app_id), stats::HOUR, since, until).await?;
    Ok(stats::fold(rows, since, width))
}

/// See [`Store::attempt_buckets`].
pub(super) async fn attempt_buckets(
    c: &impl GenericClient,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    width: chrono::Duration,
) -> Result<Vec<AttemptBucket>> {
    let span = stats::span_for(since, width);
    let rows = stats_rows(c, stats::ALL, None, span, since, until).await?;
    Ok(stats::fold(rows, since, width))
}

/// The `attempt_stats` rows of `scope` and `span` starting in `[since, until)`, the
/// processes' shards added up, as [`stats::fold`] takes them; for an endpoint's scope,
/// only if it is `app_id`'s.
async fn stats_rows(
    c: &impl GenericClient,
    scope: &str,
    app_id: Option<&str>,
    span: i64,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<stats::Row>> {
    let span = span as i32;
    let rows = c
        .query(
            &c.prepare_cached(
                "SELECT start, bucket, sum(succeeded)::int8, sum(failed)::int8 FROM attempt_stats
                 WHERE scope = $1 AND span = $2 AND start >= $3 AND start < $4
                   AND ($5::text IS NULL
                        OR EXISTS (SELECT 1 FROM endpoints WHERE id = $1 AND app_id = $5))
                 GROUP BY start, bucket",
            )
            .await
            .map_err(backend)?,
            &[&scope, &span, &ms(since), &ms(until), &app_id],
        )
        .await
        .map_err(backend)?;
    rows.iter()
        .map(|r| {
            let count = |i| -> Result<u64> {
                Ok(u64::try_from(r.try_get::<_, i64>(i).map_err(backend)?).unwrap_or(0))
            };
            Ok((
                r.try_get(0).map_err(backend)?,
                r.try_get::<_, i16>(1).map_err(backend)?.clamp(0, 63) as u8,
                count(2)?,
                count(3)?,
            ))
        })
        .collect()
}

/// Adds counted attempts to `attempt_stats` in one statement, its rows in key order.
/// Rows of one endpoint go under shard 0: the endpoint's row, which every write of its
/// attempts locks first, already keeps them one at a time. Every endpoint's rows take one
/// of 16 shards, by the clock, so batches of other processes (or this one's other batch)
/// seldom wait for one another's commit on them.
pub(super) async fn add_stats(c: &impl GenericClient, tally: &stats::Tally) -> Result<()> {
    if tally.is_empty() {
        return Ok(());
    }
    let shared = (crate::now().timestamp_subsec_nanos() / 1000 % 16) as i16;
    let mut cols = (
        Vec::<&str>::new(),
        Vec::<i32>::new(),
        Vec::<DateTime<Utc>>::new(),
        Vec::<i16>::new(),
        Vec::<i16>::new(),
        Vec::<i64>::new(),
        Vec::<i64>::new(),
    );
    for (k, ok, failed) in tally.rows() {
        cols.0.push(&k.scope);
        cols.1.push(k.span as i32);
        cols.2.push(k.start);
        cols.3.push(i16::from(k.bucket));
        cols.4.push(if k.scope == stats::ALL { shared } else { 0 });
        cols.5.push(ok);
        cols.6.push(failed);
    }
    c.execute(
        &c.prepare_cached(
            "INSERT INTO attempt_stats AS s (scope, span, start, bucket, shard, succeeded, failed)
             SELECT * FROM unnest($1::text[], $2::int4[], $3::timestamptz[], $4::int2[],
                                  $5::int2[], $6::int8[], $7::int8[])
             ON CONFLICT (scope, span, start, bucket, shard) DO UPDATE SET
                 succeeded = s.succeeded + excluded.succeeded, failed = s.failed + excluded.failed",
        )
        .await
        .map_err(backend)?,
        &[
            &cols.0, &cols.1, &cols.2, &cols.3, &cols.4, &cols.5, &cols.6,
        ],
    )
    .await
    .map_err(backend)?;
    Ok(())
}

/// See [`Store::prune_attempt_stats`]: walks the index on `start`.
pub(super) async fn prune_attempt_stats(
    c: &impl GenericClient,
    before: DateTime<Utc>,
    limit: usize,
) -> Result<Pruned> {
    let started = std::time::Instant::now();
    let n = c
        .execute(
            &c.prepare_cached(
                "DELETE FROM attempt_stats WHERE ctid = ANY(ARRAY(
                     SELECT ctid FROM attempt_stats WHERE start < $1 ORDER BY start LIMIT $2))",
            )
            .await
            .map_err(backend)?,
            &[&ms(before), &(limit as i64)],
        )
        .await
        .map_err(backend)?;
    Ok(Pruned {
        stats: n,
        examined: n as usize,
        held: started.elapsed(),
        ..Pruned::default()
    })
}

/// See [`Store::failing_endpoints`].
pub(super) async fn failing_endpoints(
    c: &impl GenericClient,
    limit: usize,
) -> Result<(Vec<FailingEndpoint>, u64)> {
    let rows = c
        .query(
            &c.prepare_cached(&format!(
                "SELECT {EP_COLS}, EXISTS (SELECT 1 FROM deliveries
                                           WHERE endpoint_id = endpoints.id
                                             AND due_at IS NOT NULL)
                 FROM endpoints WHERE failing_since IS NOT NULL
                 ORDER BY failing_since, id LIMIT $1"
            ))
            .await
            .map_err(backend)?,
            &[&(limit as i64)],
        )
        .await
        .map_err(backend)?;
    let list = rows
        .iter()
        .map(|r| {
            Ok(FailingEndpoint {
                endpoint: ep_row(r)?,
                queued: r.try_get(EP_COLS.split(", ").count()).map_err(backend)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let all: i64 = c
        .query_one(
            &c.prepare_cached("SELECT count(*) FROM endpoints WHERE failing_since IS NOT NULL")
                .await
                .map_err(backend)?,
            &[],
        )
        .await
        .map_err(backend)?
        .try_get(0)
        .map_err(backend)?;
    Ok((list, u64::try_from(all).unwrap_or(0)))
}

pub(super) async fn endpoint_stats(
    c: &impl GenericClient,
    app_id: &str,
    endpoint_id: &str,
) -> Result<DeliveryCounts> {
    let rows = c
        .query(
            &c.prepare_cached(
                "SELECT status, count(*) FROM deliveries
                 WHERE endpoint_id = $2 AND app_id = $1 GROUP BY status",
            )
            .await
            .map_err(backend)?,
            &[&app_id, &endpoint_id],
        )
        .await
        .map_err(backend)?;
    let mut counts = DeliveryCounts::default();
    for r in rows {
        let status: &str = r.try_get(0).map_err(backend)?;
        let n = u64::try_from(r.try_get::<_, i64>(1).map_err(backend)?).unwrap_or(0);
        match status {
            "pending" => counts.pending = n,
            "sending" => counts.sending = n,
            "succeeded" => counts.succeeded = n,
            "failed" => counts.failed = n,
            _ => {}
        }
    }
    Ok(counts)
}
