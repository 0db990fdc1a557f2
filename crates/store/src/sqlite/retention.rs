//! Retention on SQLite: deleting old messages with their deliveries and attempts,
//! dropping expired payloads, and giving freed pages back to the file system.
//!
//! Each batch is one write job on the writer thread, so it runs between other writes'
//! jobs and holds the writer only as long as it takes (the caller sizes batches by the
//! time reported in [`Pruned::held`]). Rows the database does not cascade to since
//! migration 6 (the key tables of the listings, see [`Keyed`]) are deleted here too.

use std::time::Instant;

use super::*;

/// Free pages kept for reuse: deleting and inserting at a steady rate reuses the pages
/// the last batches freed, which costs the filesystem much less than growing the file
/// again (see [`writer_loop`]); only the space beyond this share of the file goes back.
const KEEP_FREE_SHARE: i64 = 10; // percent of the file's pages
/// Most pages one call gives back (4 MiB at 4 KiB a page): a bounded write job.
const RECLAIM_PAGES_MAX: i64 = 1024;

/// See [`Store::prune_messages`].
pub(super) fn prune_messages(
    c: &Connection,
    before: DateTime<Utc>,
    after: Option<&str>,
    limit: usize,
) -> Result<Pruned> {
    let started = Instant::now();
    let bound = id_bound("msg", before);
    let examined: Vec<(i64, String, String, i64)> = c
        .prepare_cached(
            "SELECT rowid, id, app_id, created_at FROM messages
             WHERE id > ?1 AND id < ?2 ORDER BY id LIMIT ?3",
        )
        .map_err(backend)?
        .query_map(params![after.unwrap_or(""), bound, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .map_err(backend)?
        .collect::<rusqlite::Result<_>>()
        .map_err(backend)?;
    let mut pruned = Pruned {
        examined: examined.len(),
        next: (examined.len() >= limit)
            .then(|| examined.last().map(|(_, id, _, _)| id.clone()))
            .flatten(),
        ..Pruned::default()
    };
    let before = ms(before);
    for (rowid, id, app_id, created_at) in &examined {
        if *created_at >= before || owed(c, id)? {
            continue;
        }
        // The key tables first: their keys are found through the rows.
        let endpoints: Vec<String> = c
            .prepare_cached("SELECT endpoint_id FROM deliveries WHERE msg_id = ?1")
            .map_err(backend)?
            .query_map([id], |r| r.get(0))
            .map_err(backend)?
            .collect::<rusqlite::Result<_>>()
            .map_err(backend)?;
        for ep in &endpoints {
            c.prepare_cached("DELETE FROM delivery_keys WHERE tenant = ?1 AND k = ?2")
                .map_err(backend)?
                .execute([ep, id])
                .map_err(backend)?;
        }
        c.prepare_cached(
            "DELETE FROM attempt_keys WHERE (tenant, k) IN
                 (SELECT endpoint_id, id FROM attempts WHERE msg_id = ?1)",
        )
        .map_err(backend)?
        .execute([id])
        .map_err(backend)?;
        pruned.attempts += c
            .prepare_cached("DELETE FROM attempts WHERE msg_id = ?1")
            .map_err(backend)?
            .execute([id])
            .map_err(backend)? as u64;
        pruned.deliveries += c
            .prepare_cached("DELETE FROM deliveries WHERE msg_id = ?1")
            .map_err(backend)?
            .execute([id])
            .map_err(backend)? as u64;
        c.prepare_cached("DELETE FROM message_keys WHERE tenant = ?1 AND k = ?2")
            .map_err(backend)?
            .execute([app_id, id])
            .map_err(backend)?;
        pruned.messages += c
            .prepare_cached("DELETE FROM messages WHERE rowid = ?1")
            .map_err(backend)?
            .execute([rowid])
            .map_err(backend)? as u64;
    }
    if pruned.messages > 0 {
        lower_watermarks(c)?;
    }
    pruned.held = started.elapsed();
    Ok(pruned)
}

/// Whether a delivery of the message is still to be made or in flight.
fn owed(c: &Connection, msg_id: &str) -> Result<bool> {
    c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM deliveries
                        WHERE msg_id = ?1 AND status IN ('pending', 'sending'))",
    )
    .map_err(backend)?
    .query_row([msg_id], |r| r.get(0))
    .map_err(backend)
}

/// See [`Store::drop_expired_payloads`]. Walks the partial index of payloads still to
/// drop (migration 8) in expiry order; those still owed a delivery are passed over.
pub(super) fn drop_expired_payloads(
    c: &Connection,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Pruned> {
    let started = Instant::now();
    let payloads = c
        .prepare_cached(
            "UPDATE messages SET payload = '{}' WHERE rowid IN (
                 SELECT rowid FROM messages
                 WHERE payload_expires_at <= ?1 AND payload <> '{}'
                   AND NOT EXISTS (SELECT 1 FROM deliveries
                                   WHERE msg_id = messages.id
                                     AND status IN ('pending', 'sending'))
                 ORDER BY payload_expires_at LIMIT ?2)",
        )
        .map_err(backend)?
        .execute(params![ms(now), limit as i64])
        .map_err(backend)? as u64;
    Ok(Pruned {
        payloads,
        held: started.elapsed(),
        ..Pruned::default()
    })
}

/// See [`Store::reclaim_space`]: with incremental auto-vacuum, gives back the free pages
/// beyond [`KEEP_FREE_SHARE`] of the file, at most [`RECLAIM_PAGES_MAX`] at a time. A
/// database created before hookline set auto-vacuum (it can only be set on an empty
/// database, or by a full VACUUM) reuses its free pages for new rows but keeps its size.
pub(super) fn reclaim_space(c: &Connection) -> Result<u64> {
    let pragma = |name: &str| -> Result<i64> {
        c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .map_err(backend)
    };
    if pragma("auto_vacuum")? != 2 {
        return Ok(0);
    }
    let (pages, free) = (pragma("page_count")?, pragma("freelist_count")?);
    let excess = free - pages * KEEP_FREE_SHARE / 100;
    if excess <= 0 {
        return Ok(0);
    }
    let n = excess.min(RECLAIM_PAGES_MAX);
    c.execute_batch(&format!("PRAGMA incremental_vacuum({n})"))
        .map_err(backend)?;
    Ok((free - pragma("freelist_count")?).max(0) as u64)
}

/// See [`Store::prune_attempt_stats`]: walks the index on `start`.
pub(super) fn prune_attempt_stats(
    c: &Connection,
    before: DateTime<Utc>,
    limit: usize,
) -> Result<Pruned> {
    let started = Instant::now();
    let n = c
        .prepare_cached(
            "DELETE FROM attempt_stats WHERE (scope, span, start, bucket) IN
                 (SELECT scope, span, start, bucket FROM attempt_stats
                  WHERE start < ?1 ORDER BY start LIMIT ?2)",
        )
        .map_err(backend)?
        .execute(params![ms(before), limit as i64])
        .map_err(backend)?;
    Ok(Pruned {
        stats: n as u64,
        examined: n,
        held: started.elapsed(),
        ..Pruned::default()
    })
}
