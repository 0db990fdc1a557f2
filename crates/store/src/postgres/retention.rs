//! Retention on PostgreSQL: deleting old messages with their deliveries and attempts,
//! and dropping expired payloads, from any number of processes at once.
//!
//! Each batch is one transaction that first locks the messages it will work on
//! `FOR UPDATE SKIP LOCKED`: two processes pruning at the same time take different
//! messages (neither waits for, nor deletes under, the other), and a row is deleted once.
//! Plain `DELETE`s: autovacuum makes the space reusable. The checks that a message owes
//! no delivery run after the lock, each statement with a fresh snapshot (READ
//! COMMITTED), so a resend committed meanwhile is seen: a delivery that became pending
//! again is never deleted (its row is rechecked when its lock is released), and then
//! neither is its message.

use std::time::Instant;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use super::errors::backend;
use super::rows::ms;
use crate::{id_bound, Pruned, Result};

/// See [`crate::Store::prune_messages`].
pub(super) async fn prune_messages(
    tx: &Transaction<'_>,
    before: DateTime<Utc>,
    after: Option<&str>,
    limit: usize,
) -> Result<Pruned> {
    let started = Instant::now();
    // In id order through the primary key: ids are time-ordered KSUIDs (byte order,
    // migration 2), so everything below the cutoff's id is old enough or nearly.
    let rows = tx
        .query(
            &tx.prepare_cached(
                "SELECT id, created_at < $3 FROM messages
                 WHERE id > $1 AND id < $2 ORDER BY id LIMIT $4
                 FOR UPDATE SKIP LOCKED",
            )
            .await
            .map_err(backend)?,
            &[
                &after.unwrap_or(""),
                &id_bound("msg", before),
                &ms(before),
                &(limit as i64),
            ],
        )
        .await
        .map_err(backend)?;
    let mut old = Vec::with_capacity(rows.len());
    let mut last = None;
    for r in &rows {
        let id: String = r.try_get(0).map_err(backend)?;
        if r.try_get::<_, bool>(1).map_err(backend)? {
            old.push(id.clone());
        }
        last = Some(id);
    }
    let mut pruned = Pruned {
        examined: rows.len(),
        next: last.filter(|_| rows.len() >= limit),
        ..Pruned::default()
    };
    if !old.is_empty() {
        let owed = "EXISTS (SELECT 1 FROM deliveries o WHERE o.msg_id = {m}
                            AND o.status IN ('pending', 'sending'))";
        pruned.attempts = tx
            .execute(
                &tx.prepare_cached(&format!(
                    "DELETE FROM attempts a WHERE a.msg_id = ANY($1) AND NOT {}",
                    owed.replace("{m}", "a.msg_id")
                ))
                .await
                .map_err(backend)?,
                &[&old],
            )
            .await
            .map_err(backend)?;
        pruned.deliveries = tx
            .execute(
                &tx.prepare_cached(&format!(
                    "DELETE FROM deliveries d WHERE d.msg_id = ANY($1)
                       AND d.status IN ('succeeded', 'failed') AND NOT {}",
                    owed.replace("{m}", "d.msg_id")
                ))
                .await
                .map_err(backend)?,
                &[&old],
            )
            .await
            .map_err(backend)?;
        pruned.messages = tx
            .execute(
                &tx.prepare_cached(
                    "DELETE FROM messages m WHERE m.id = ANY($1)
                       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = m.id)",
                )
                .await
                .map_err(backend)?,
                &[&old],
            )
            .await
            .map_err(backend)?;
    }
    pruned.held = started.elapsed();
    Ok(pruned)
}

/// See [`crate::Store::drop_expired_payloads`]: through the partial index of payloads
/// still to drop (migration 6), in expiry order; those still owed a delivery, or locked
/// by another process's batch, are passed over.
pub(super) async fn drop_expired_payloads(
    tx: &Transaction<'_>,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Pruned> {
    let started = Instant::now();
    let payloads = tx
        .execute(
            &tx.prepare_cached(
                "WITH due AS (
                     SELECT id FROM messages m
                     WHERE payload_expires_at <= $1 AND payload <> '{}'
                       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = m.id
                                       AND d.status IN ('pending', 'sending'))
                     ORDER BY payload_expires_at LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                 UPDATE messages SET payload = '{}' FROM due WHERE messages.id = due.id",
            )
            .await
            .map_err(backend)?,
            &[&ms(now), &(limit as i64)],
        )
        .await
        .map_err(backend)?;
    Ok(Pruned {
        payloads,
        held: started.elapsed(),
        ..Pruned::default()
    })
}
