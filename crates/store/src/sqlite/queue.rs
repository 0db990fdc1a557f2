//! The delivery queue on SQLite: a message's fan-out to deliveries (with the hand-over
//! of fresh ones to an attached [`Intake`]), claims under a lease, attempt reports, and
//! the leases left by a process that died.

use super::*;
use crate::common::{claimable, AppLimits, Fresh};

/// Hands back every delivery a previous run of this process held when it died: with the
/// file lock held, no other worker can own them, so there is no need to wait for their
/// leases to expire. Their attempts' outcomes are unknown, so they are due at once
/// (at-least-once: the receiver may see them twice).
pub(super) fn recover_leases(conn: &Connection) -> Result<()> {
    let now = ms(crate::now());
    let n = conn
        .execute(
            "UPDATE deliveries SET status = 'pending', due_at = ?1, lease_token = NULL, updated_at = ?1
             WHERE status = 'sending'",
            [now],
        )
        .map_err(backend)?;
    if n > 0 {
        conn.execute(
            "UPDATE endpoints SET next_due_at =
                 (SELECT min(due_at) FROM deliveries
                  WHERE deliveries.endpoint_id = endpoints.id AND due_at IS NOT NULL)",
            [],
        )
        .map_err(backend)?;
        tracing::info!(
            deliveries = n,
            "recovered deliveries in flight when the last run stopped"
        );
    }
    Ok(())
}

pub(super) fn insert_message(c: &Connection, msg: &Message) -> Result<()> {
    // Only while the application exists (no foreign key checks it: see migration 6).
    let n = c.prepare_cached(
        "INSERT INTO messages (id, app_id, event_id, event_type, payload, channels, tags, created_at, deliver_at, payload_expires_at)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10 WHERE EXISTS (SELECT 1 FROM applications WHERE id = ?2)",
    )
    .map_err(backend)?
    .execute(params![
        msg.id,
        msg.app_id,
        msg.event_id,
        msg.event_type,
        msg.payload,
        msg.channels.as_ref().map(to_json),
        msg.tags.as_ref().map(to_json),
        ms(msg.created_at),
        msg.deliver_at.map(ms),
        msg.payload_expires_at.map(ms)
    ])
    .map_err(unique_as_conflict(
        "a message with this eventId already exists in this application",
    ))?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Commits one delivery per matching, enabled endpoint (or to `only` that one, whatever
/// its filters), in the message's own transaction: there is no moment where a message is
/// stored but not queued. A delivery that can start now is offered to the intake (with
/// [`Intake::reserve_behind`] if the endpoint has work due before it); if it reserves a
/// slot, the delivery is written already `sending` under a lease (as a claim would leave
/// it) and goes into `fresh`.
pub(super) fn fan_out(
    c: &Connection,
    msg: &Message,
    only: Option<&str>,
    fresh: &mut Fresh,
) -> Result<()> {
    // A scheduled message's deliveries start their life (and retry clock) at deliverAt.
    let start = msg.deliver_at.unwrap_or(msg.created_at).max(msg.created_at);
    let now = ms(start);
    let immediate = start == msg.created_at;
    let mut eps = c
        .prepare_cached(&format!(
            "SELECT {EP_COLS}, next_due_at FROM endpoints WHERE app_id = ?1 AND disabled = 0"
        ))
        .map_err(backend)?;
    let targets = eps
        .query_map([&msg.app_id], |r| {
            Ok((ep_row(r)?, r.get::<_, Option<i64>>(9)?))
        })
        .map_err(backend)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(backend)?;
    let mut insert = c
        .prepare_cached(
            "INSERT INTO deliveries (app_id, msg_id, endpoint_id, status, attempts, trigger,
                 scheduled_at, due_at, lease_token, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 0, 0, ?5, ?6, ?7, ?5, ?5)",
        )
        .map_err(backend)?;
    let mut bump = c
        .prepare_cached(
            "UPDATE endpoints SET next_due_at = min(coalesce(next_due_at, ?2), ?2) WHERE id = ?1",
        )
        .map_err(backend)?;
    // The application's delivery settings, read once and only if a delivery is offered.
    let mut app: Option<AppLimits> = None;
    let token = lease_token();
    for (ep, next_due) in targets {
        let wanted = match only {
            Some(id) => id == ep.id,
            None => ep.settings.wants(&msg.event_type, msg.channels.as_deref()),
        };
        if !wanted {
            continue;
        }
        let intake = fresh.intake.clone().filter(|_| immediate);
        // Work of this endpoint due before it: it may pass that only where the intake
        // says the queue is not what holds the endpoint back.
        let behind = next_due.is_some_and(|t| t <= now);
        let reserved = match intake {
            Some(intake) => {
                if app.is_none() {
                    app = Some(app_limits(c, &msg.app_id)?);
                }
                let limits = app.as_ref().expect("read above");
                let yes = match behind {
                    false => intake.reserve(&ep, limits.rate),
                    true => intake.reserve_behind(&ep, limits.rate),
                };
                let lease = intake.lease();
                if yes {
                    fresh.file(msg, &ep, &token, start, limits, 0);
                }
                yes.then(|| ms(start + lease))
            }
            None => None,
        };
        let due = match reserved {
            Some(until) => {
                insert
                    .execute(params![
                        msg.app_id, msg.id, ep.id, "sending", now, until, token
                    ])
                    .map_err(backend)?;
                let last = fresh.claimed.last_mut().expect("filed above");
                last.id = c.last_insert_rowid();
                until
            }
            None => {
                insert
                    .execute(params![
                        msg.app_id,
                        msg.id,
                        ep.id,
                        "pending",
                        now,
                        now,
                        None::<String>
                    ])
                    .map_err(backend)?;
                fresh.queued = true;
                now
            }
        };
        bump.execute(params![ep.id, due]).map_err(backend)?;
    }
    Ok(())
}

/// An application's retry policy and throttle, as a claim needs them (defaults if the
/// application is gone: the caller's own statements then find nothing to do).
pub(super) fn app_limits(c: &Connection, app_id: &str) -> Result<AppLimits> {
    Ok(
        c.prepare_cached("SELECT retry_policy, throttle_rate FROM applications WHERE id = ?1")
            .map_err(backend)?
            .query_row([app_id], |r| {
                Ok(AppLimits {
                    policy: opt_json_col(r, 0)?,
                    rate: r.get::<_, Option<u32>>(1)?.filter(|r| *r > 0),
                    claimed: 0,
                })
            })
            .optional()
            .map_err(backend)?
            .unwrap_or_default(),
    )
}

/// Sets an endpoint's `next_due_at` to its earliest queued delivery (an index lookup).
pub(super) fn refresh_next_due(c: &Connection, endpoint_id: &str) -> Result<()> {
    c.prepare_cached(
        "UPDATE endpoints SET next_due_at =
             (SELECT min(due_at) FROM deliveries WHERE endpoint_id = ?1 AND due_at IS NOT NULL)
         WHERE id = ?1",
    )
    .map_err(backend)?
    .execute([endpoint_id])
    .map_err(backend)?;
    Ok(())
}

pub(super) fn lease_token() -> String {
    use rand::RngCore;
    format!("{:016x}", rand::rng().next_u64())
}

/// The ids a worker reports as full ([`Busy::FULL`]), as a JSON array.
pub(super) fn full_ids_json(busy: &[Busy]) -> String {
    let full: Vec<&str> = busy
        .iter()
        .filter(|b| b.is_full())
        .map(|b| b.id.as_str())
        .collect();
    to_json(&full)
}

pub(super) fn claim(
    c: &Connection,
    now: DateTime<Utc>,
    lease: chrono::Duration,
    max: usize,
    max_failing: usize,
    busy: &[Busy],
) -> Result<Vec<ClaimedDelivery>> {
    let now_ms = ms(now);
    let until = ms(now + lease);
    let full = full_ids_json(busy);
    let busy: HashMap<&str, &Busy> = busy.iter().map(|b| (b.id.as_str(), b)).collect();
    let busy_of = |id: &str| busy.get(id).map_or((0, None), |b| (b.in_flight, b.limit));
    // Endpoints (and applications) the worker says are full are skipped in the index
    // walk itself, so they neither crowd out the others nor need parking: the worker
    // claims again as soon as one of their slots frees.
    // Look at a few more endpoints than slots: some may be throttled. Failing endpoints
    // (one delivery each at most) have their own walk, and none when the worker has no
    // room for them; both walks merge in due order.
    let mut candidates = due_endpoints(c, HEALTHY, now_ms, (max * 2).max(16), &full)?;
    if max_failing > 0 {
        candidates.extend(due_endpoints(c, FAILING, now_ms, max_failing * 2, &full)?);
        candidates.sort_by_key(|(_, due)| *due);
    }
    let token = lease_token();
    let mut out = Vec::new();
    // Per application seen in this claim: its retry policy, throttle and claims so far.
    let mut apps: HashMap<String, AppLimits> = HashMap::new();
    let mut messages: HashMap<String, Message> = HashMap::new();
    let mut failing_claimed = 0;
    for (ep, _) in candidates {
        let remaining = max.saturating_sub(out.len());
        if remaining == 0 {
            break;
        }
        if !apps.contains_key(&ep.app_id) {
            apps.insert(ep.app_id.clone(), app_limits(c, &ep.app_id)?);
        }
        let app = apps.get_mut(&ep.app_id).expect("inserted above");
        let (in_flight, limit) = busy_of(&ep.id);
        // One process: what it has in flight is all there is.
        let free = claimable(
            &ep,
            in_flight,
            limit,
            remaining,
            max_failing.saturating_sub(failing_claimed),
            app,
        );
        if free == 0 {
            // Full for this claim; the worker's next claim looks again.
            continue;
        }
        let rows = c
            .prepare_cached(
                "UPDATE deliveries SET status = 'sending', due_at = ?3, lease_token = ?4, updated_at = ?2
                 WHERE id IN (SELECT id FROM deliveries
                              WHERE endpoint_id = ?1 AND due_at IS NOT NULL AND due_at <= ?2
                              ORDER BY due_at LIMIT ?5)
                 RETURNING id, msg_id, attempts, scheduled_at, created_at, trigger",
            )
            .map_err(backend)?
            .query_map(
                params![ep.id, now_ms, until, token, free as i64],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u32>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                },
            )
            .map_err(backend)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(backend)?;
        refresh_next_due(c, &ep.id)?;
        app.claimed += rows.len();
        if ep.is_failing() {
            failing_claimed += rows.len();
        }
        for (id, msg_id, attempts, scheduled_at, created_at, trigger) in rows {
            // A fanned-out message is read once per claim, not once per endpoint.
            let message = match messages.get(&msg_id) {
                Some(m) => Message::clone(m),
                None => {
                    let m = c
                        .prepare_cached(&format!("SELECT {MSG_COLS} FROM messages WHERE id = ?1"))
                        .map_err(backend)?
                        .query_row([&msg_id], msg_row)
                        .map_err(backend)?;
                    messages.insert(msg_id, m.clone());
                    m
                }
            };
            out.push(ClaimedDelivery {
                id,
                lease_token: token.clone(),
                attempts,
                scheduled_at: from_ms(scheduled_at),
                created_at: from_ms(created_at),
                trigger: trigger_of(trigger),
                message,
                endpoint: ep.clone(),
                app_retry_policy: app.policy.clone(),
                app_throttle_rate: app.rate,
                start_at: None,
                in_flight_shared: 0,
            });
        }
    }
    Ok(out)
}

/// The two kinds of endpoint a claim walks apart, as conditions that select the
/// matching partial index (migration 7).
pub(super) const HEALTHY: &str = "failing_since IS NULL";
pub(super) const FAILING: &str = "failing_since IS NOT NULL";

/// Up to `limit` enabled endpoints of one kind with work due by `now_ms`, earliest first,
/// leaving out those `full` names (a JSON array of endpoint and application ids).
pub(super) fn due_endpoints(
    c: &Connection,
    kind: &str,
    now_ms: i64,
    limit: usize,
    full: &str,
) -> Result<Vec<(Endpoint, i64)>> {
    c.prepare_cached(&format!(
        "SELECT {EP_COLS}, next_due_at FROM endpoints
         WHERE disabled = 0 AND {kind} AND next_due_at <= ?1
           AND id NOT IN (SELECT value FROM json_each(?3))
           AND app_id NOT IN (SELECT value FROM json_each(?3))
         ORDER BY next_due_at LIMIT ?2"
    ))
    .map_err(backend)?
    .query_map(params![now_ms, limit as i64, full], |r| {
        Ok((ep_row(r)?, r.get::<_, i64>(9)?))
    })
    .map_err(backend)?
    .collect::<rusqlite::Result<Vec<_>>>()
    .map_err(backend)
}

pub(super) fn report(
    c: &Connection,
    delivery_id: i64,
    token: &str,
    rep: AttemptReport,
    fresh: &mut Fresh,
) -> Result<ReportOutcome> {
    let a = &rep.attempt;
    let now = ms(a.attempted_at + chrono::Duration::milliseconds(a.duration_ms as i64));
    // Not for an endpoint deleted meanwhile (no foreign key checks it: see migration 6).
    let logged = c.prepare_cached(&format!(
        "INSERT INTO attempts ({ATTEMPT_COLS}) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12
         WHERE EXISTS (SELECT 1 FROM endpoints WHERE id = ?4)"
    ))
    .map_err(backend)?
    .execute(params![
        a.id,
        a.app_id,
        a.msg_id,
        a.endpoint_id,
        a.url,
        ms(a.attempted_at),
        a.status_code,
        a.duration_ms as i64,
        a.succeeded,
        a.error_kind,
        a.response,
        trigger_num(a.trigger)
    ])
    .map_err(backend)?;
    if logged > 0 {
        writer::count_attempt(a);
    }

    let (status, due) = match rep.next {
        NextStep::Succeeded => ("succeeded", None),
        NextStep::Failed => ("failed", None),
        NextStep::RetryAt(t) => ("pending", Some(ms(t))),
    };
    let attempts: Option<u32> = c
        .prepare_cached(
            "UPDATE deliveries SET status = ?3, due_at = ?4, scheduled_at = coalesce(?4, scheduled_at),
                 lease_token = NULL, attempts = attempts + 1, trigger = 0, updated_at = ?5
             WHERE id = ?1 AND status = 'sending' AND lease_token = ?2
             RETURNING attempts",
        )
        .map_err(backend)?
        .query_row(params![delivery_id, token, status, due, now], |r| r.get(0))
        .optional()
        .map_err(backend)?;

    // Endpoint health: remember when failing started; a success clears it.
    let mut endpoint_disabled = false;
    if a.succeeded {
        c.prepare_cached(
            "UPDATE endpoints SET failing_since = NULL WHERE id = ?1 AND failing_since IS NOT NULL",
        )
        .map_err(backend)?
        .execute([&a.endpoint_id])
        .map_err(backend)?;
    } else {
        c.prepare_cached(
            "UPDATE endpoints SET failing_since = coalesce(failing_since, ?2) WHERE id = ?1",
        )
        .map_err(backend)?
        .execute(params![a.endpoint_id, ms(a.attempted_at)])
        .map_err(backend)?;
        let cutoff = rep.disable_if_failing_since.map(ms);
        let n = c
            .prepare_cached(
                "UPDATE endpoints SET disabled = 1, updated_at = ?4
                 WHERE id = ?1 AND disabled = 0
                   AND (?2 OR (?3 IS NOT NULL AND failing_since <= ?3))",
            )
            .map_err(backend)?
            .execute(params![a.endpoint_id, rep.disable_endpoint, cutoff, now])
            .map_err(backend)?;
        endpoint_disabled = n > 0;
    }
    // The endpoint's `next_due_at` may now be early (it was this lease's expiry, or the
    // lease's expiry of a delivery that is done): never late, which is what matters. An
    // early one costs the next claim of the endpoint one index lookup and corrects it,
    // which is far cheaper than recomputing it on every report. A retry must not be
    // later than it, though.
    if let (Some(due), Some(_)) = (due, attempts) {
        c.prepare_cached(
            "UPDATE endpoints SET next_due_at = min(coalesce(next_due_at, ?2), ?2) WHERE id = ?1",
        )
        .map_err(backend)?
        .execute(params![a.endpoint_id, due])
        .map_err(backend)?;
    }
    let applied = if attempts.is_some() {
        Applied::Yes
    } else {
        // Both leave the delivery alone, for different reasons: the log should say which.
        let exists = c
            .prepare_cached("SELECT 1 FROM deliveries WHERE id = ?1")
            .map_err(backend)?
            .query_row([delivery_id], |_| Ok(()))
            .optional()
            .map_err(backend)?
            .is_some();
        if exists {
            Applied::LeaseLost
        } else {
            Applied::DeliveryGone
        }
    };
    let outcome = ReportOutcome {
        applied,
        endpoint_disabled,
        consecutive_failures: if a.succeeded {
            0
        } else {
            attempts.unwrap_or(0)
        },
    };
    if let (Some(raise), Applied::Yes) = (&rep.raise, applied) {
        for msg in (raise.0)(&outcome) {
            // A failed statement leaves SQLite's transaction as it was: a message raised
            // already (its eventId taken) or whose application is gone is skipped.
            match insert_message(c, &msg) {
                Ok(()) => fan_out(c, &msg, None, fresh)?,
                Err(StoreError::Conflict(_) | StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(outcome)
}

#[async_trait]
impl DeliveryQueue for SqliteStore {
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        max: usize,
        max_failing: usize,
        busy: &[Busy],
    ) -> Result<Vec<ClaimedDelivery>> {
        let busy = busy.to_vec();
        self.write_with(Durability::Lazy, move |c| {
            claim(c, now, lease, max, max_failing, &busy)
        })
        .await
    }

    async fn report_attempt(
        &self,
        delivery_id: i64,
        lease_token: &str,
        report: AttemptReport,
    ) -> Result<ReportOutcome> {
        let token = lease_token.to_string();
        let mut fresh = Fresh::new(self.intake());
        self.write_then(
            Durability::Full,
            move |c| {
                let out = self::report(c, delivery_id, &token, report, &mut fresh)?;
                Ok((out, fresh))
            },
            Fresh::hand_over,
        )
        .await
    }

    async fn release_delivery(
        &self,
        delivery_id: i64,
        lease_token: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let token = lease_token.to_string();
        self.write(move |c| {
            let ep: Option<String> = c
                .prepare_cached(
                    "UPDATE deliveries SET status = 'pending', due_at = ?3, lease_token = NULL, updated_at = ?3
                     WHERE id = ?1 AND status = 'sending' AND lease_token = ?2
                     RETURNING endpoint_id",
                )
                .map_err(backend)?
                .query_row(params![delivery_id, token, ms(now)], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            if let Some(ep) = ep {
                refresh_next_due(c, &ep)?;
            }
            Ok(())
        })
        .await
    }

    async fn next_due(&self, busy: &[Busy], failing: bool) -> Result<Option<DateTime<Utc>>> {
        let full = full_ids_json(busy);
        self.read(move |c| {
            let kinds: &[&str] = if failing {
                &[HEALTHY, FAILING]
            } else {
                &[HEALTHY]
            };
            let mut next: Option<i64> = None;
            for kind in kinds {
                let due = c
                    .prepare_cached(&format!(
                        "SELECT next_due_at FROM endpoints
                         WHERE disabled = 0 AND {kind} AND next_due_at IS NOT NULL
                           AND id NOT IN (SELECT value FROM json_each(?1))
                           AND app_id NOT IN (SELECT value FROM json_each(?1))
                         ORDER BY next_due_at LIMIT 1"
                    ))
                    .map_err(backend)?
                    .query_row([&full], |r| r.get::<_, i64>(0))
                    .optional()
                    .map_err(backend)?;
                next = next.into_iter().chain(due).min();
            }
            Ok(next.map(from_ms))
        })
        .await
    }

    fn attach_intake(&self, intake: Weak<dyn Intake>) {
        *self.intake.write().expect("intake lock") = Some(intake);
    }
}
