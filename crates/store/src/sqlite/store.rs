//! The management API's records ([`Store`]) on SQLite: applications, event types,
//! endpoints, messages, tokens, idempotency keys, and the delivery log's reads and actions.

use super::*;

#[async_trait]
impl Store for SqliteStore {
    fn storage_full(&self) -> bool {
        self.disk.is_full()
    }

    async fn create_app(&self, app: Application) -> Result<Application> {
        self.write_clearing(&self.apps, move |c| put_app(c, &app, true).map(|_| app))
            .await
    }

    async fn get_app(&self, id_or_uid: &str) -> Result<Option<Application>> {
        self.cached(&self.apps, id_or_uid, find_app).await
    }

    async fn list_apps(&self, q: &ListQuery, only: Option<&str>) -> Result<Page<Application>> {
        let q = q.clone();
        let only = only.map(str::to_string);
        self.read(move |c| {
            let mut sql = format!("SELECT {APP_COLS} FROM applications WHERE 1");
            let mut args = vec![];
            if let Some(id) = only {
                sql.push_str(" AND id = ?");
                args.push(Value::Text(id));
            }
            paginate(c, &sql, args, "id", &q, app_row, |a| a.id.clone())
        })
        .await
    }

    async fn update_app(&self, id: &str, change: Mutator<Application>) -> Result<Application> {
        let id = id.to_string();
        self.write_clearing(&self.apps, move |c| {
            let mut app = find_app(c, &id)?
                .filter(|a| a.id == id)
                .ok_or(StoreError::NotFound)?;
            change(&mut app)?;
            put_app(c, &app, false)?;
            Ok(app)
        })
        .await
    }

    async fn delete_app(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.write_clearing(&self.apps, move |c| {
            // Rows the database does not cascade to (see migration 6): the deliveries and
            // attempts of the app's endpoints, then its messages.
            let endpoints = c
                .prepare_cached("SELECT id FROM endpoints WHERE app_id = ?1")
                .map_err(backend)?
                .query_map([&id], |r| r.get::<_, String>(0))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            for ep in &endpoints {
                DELIVERY_KEYS.delete_tenant(c, ep)?;
                ATTEMPT_KEYS.delete_tenant(c, ep)?;
                delete_stats(c, ep)?;
            }
            MESSAGE_KEYS.delete_tenant(c, &id)?;
            delete_one(c, "DELETE FROM applications WHERE id = ?1", &id)?;
            lower_watermarks(c)
        })
        .await
    }

    async fn create_event_type(&self, et: EventType) -> Result<EventType> {
        self.write_clearing(&self.event_types, move |c| put_et(c, &et, true).map(|_| et))
            .await
    }

    async fn get_event_type(&self, name: &str) -> Result<Option<EventType>> {
        self.cached(&self.event_types, name, find_et).await
    }

    async fn list_event_types(
        &self,
        q: &ListQuery,
        include_archived: bool,
    ) -> Result<Page<EventType>> {
        let q = q.clone();
        self.read(move |c| {
            let mut sql = format!("SELECT {ET_COLS} FROM event_types WHERE 1");
            if !include_archived {
                sql.push_str(" AND archived = 0");
            }
            paginate(c, &sql, vec![], "name", &q, et_row, |e| e.name.clone())
        })
        .await
    }

    async fn update_event_type(&self, name: &str, change: Mutator<EventType>) -> Result<EventType> {
        let name = name.to_string();
        self.write_clearing(&self.event_types, move |c| {
            let mut et = find_et(c, &name)?.ok_or(StoreError::NotFound)?;
            change(&mut et)?;
            et.name = name;
            put_et(c, &et, false)?;
            Ok(et)
        })
        .await
    }

    async fn expunge_event_type(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write_clearing(&self.event_types, move |c| {
            delete_one(c, "DELETE FROM event_types WHERE name = ?1", &name)
        })
        .await
    }

    async fn create_endpoint(&self, ep: Endpoint) -> Result<Endpoint> {
        let sealer = self.sealer.clone();
        self.write(move |c| put_ep(c, &sealer, &ep, true).map(|_| ep))
            .await
    }

    async fn get_endpoint(&self, app_id: &str, id_or_uid: &str) -> Result<Option<Endpoint>> {
        let (app_id, key) = (app_id.to_string(), id_or_uid.to_string());
        self.read(move |c| find_ep(c, &app_id, &key)).await
    }

    async fn list_endpoints(&self, app_id: &str, q: &ListQuery) -> Result<Page<Endpoint>> {
        let (app_id, q) = (app_id.to_string(), q.clone());
        self.read(move |c| {
            let sql = format!("SELECT {EP_COLS} FROM endpoints WHERE app_id = ?");
            paginate(c, &sql, vec![Value::Text(app_id)], "id", &q, ep_row, |e| {
                e.id.clone()
            })
        })
        .await
    }

    async fn update_endpoint(
        &self,
        app_id: &str,
        id: &str,
        change: Mutator<Endpoint>,
    ) -> Result<Endpoint> {
        let (app_id, id) = (app_id.to_string(), id.to_string());
        let sealer = self.sealer.clone();
        self.write(move |c| {
            let mut ep = find_ep(c, &app_id, &id)?
                .filter(|e| e.id == id)
                .ok_or(StoreError::NotFound)?;
            let was_disabled = ep.disabled;
            change(&mut ep)?;
            ep.id = id;
            ep.app_id = app_id;
            put_ep(c, &sealer, &ep, false)?;
            if was_disabled && !ep.disabled {
                // A re-enabled endpoint starts with a clean record and its queued work due.
                c.prepare_cached("UPDATE endpoints SET failing_since = NULL WHERE id = ?1")
                    .map_err(backend)?
                    .execute([&ep.id])
                    .map_err(backend)?;
                ep.failing_since = None;
                refresh_next_due(c, &ep.id)?;
            }
            Ok(ep)
        })
        .await
    }

    async fn delete_endpoint(&self, app_id: &str, id: &str) -> Result<()> {
        let (app_id, id) = (app_id.to_string(), id.to_string());
        self.write(move |c| {
            let n = c
                .execute(
                    "DELETE FROM endpoints WHERE app_id = ?1 AND id = ?2",
                    [&app_id, &id],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            // Not cascaded by the database (see migration 6).
            DELIVERY_KEYS.delete_tenant(c, &id)?;
            ATTEMPT_KEYS.delete_tenant(c, &id)?;
            delete_stats(c, &id)?;
            lower_watermarks(c)
        })
        .await
    }

    async fn create_message(&self, msg: Message) -> Result<Message> {
        self.write_message(msg, None).await
    }

    async fn create_message_for_endpoint(
        &self,
        msg: Message,
        endpoint_id: &str,
    ) -> Result<Message> {
        self.write_message(msg, Some(endpoint_id.to_string())).await
    }

    async fn get_message(&self, app_id: &str, id_or_event_id: &str) -> Result<Option<Message>> {
        let (app_id, key) = (app_id.to_string(), id_or_event_id.to_string());
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {MSG_COLS} FROM messages WHERE app_id = ?1 AND (id = ?2 OR event_id = ?2)
                 ORDER BY id = ?2 DESC LIMIT 1"
            ))
            .map_err(backend)?
            .query_row([&app_id, &key], msg_row)
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn list_messages(&self, app_id: &str, q: &MessageQuery) -> Result<Page<Message>> {
        let (app_id, q) = (app_id.to_string(), q.clone());
        self.read(move |c| {
            // Columns are named with their table: the status walk joins `deliveries`,
            // which has columns of the same names.
            let mut sql = String::new();
            let mut args = vec![];
            if let Some(types) = &q.event_types {
                sql.push_str(&format!(
                    " AND messages.event_type IN ({})",
                    vec!["?"; types.len()].join(",")
                ));
                args.extend(types.iter().cloned().map(Value::Text));
            }
            if let Some(ch) = &q.channel {
                sql.push_str(
                    " AND EXISTS (SELECT 1 FROM json_each(messages.channels) WHERE value = ?)",
                );
                args.push(Value::Text(ch.clone()));
            }
            if let Some(tag) = &q.tag {
                sql.push_str(
                    " AND EXISTS (SELECT 1 FROM json_each(messages.tags) WHERE value = ?)",
                );
                args.push(Value::Text(tag.clone()));
            }
            if let Some(b) = q.before {
                sql.push_str(" AND messages.created_at < ?");
                args.push(Value::Integer(ms(b)));
            }
            if let Some(a) = q.after {
                sql.push_str(" AND messages.created_at > ?");
                args.push(Value::Integer(ms(a)));
            }
            match q.failed {
                true => messages_failed(c, &app_id, &sql, args, &q.list),
                false => paginate_keyed(
                    c,
                    &MESSAGE_KEYS,
                    MSG_COLS,
                    &app_id,
                    &sql,
                    args,
                    &q.list,
                    msg_row,
                    |m| m.id.clone(),
                ),
            }
        })
        .await
    }

    async fn insert_token(&self, token: ApiToken) -> Result<()> {
        self.write(move |c| tokens::insert(c, &token)).await
    }

    async fn find_token(&self, hash: &[u8; 32], now: DateTime<Utc>) -> Result<Option<ApiToken>> {
        let hash = *hash;
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM api_tokens
                 WHERE token_hash = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                tokens::COLUMNS
            ))
            .map_err(backend)?
            .query_row(params![hash.to_vec(), ms(now)], tokens::row)
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn list_tokens(&self, now: DateTime<Utc>) -> Result<Vec<ApiToken>> {
        self.read(move |c| tokens::list(c, now)).await
    }

    async fn revoke_token(&self, id: &[u8; TOKEN_ID_BYTES]) -> Result<()> {
        let id = *id;
        self.write(move |c| tokens::revoke(c, &id)).await
    }

    async fn purge_expired_tokens(&self, now: DateTime<Utc>) -> Result<u64> {
        self.write(move |c| {
            c.execute(
                "DELETE FROM api_tokens WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                [ms(now)],
            )
            .map(|n| n as u64)
            .map_err(backend)
        })
        .await
    }

    async fn touch_token(
        &self,
        hash: &[u8; 32],
        now: DateTime<Utc>,
        every: chrono::Duration,
    ) -> Result<()> {
        let hash = *hash;
        self.write(move |c| {
            c.execute(
                "UPDATE api_tokens SET last_used_at = ?2
                 WHERE token_hash = ?1 AND (last_used_at IS NULL OR last_used_at <= ?3)",
                params![hash.to_vec(), ms(now), ms(now - every)],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn has_admin_token(&self) -> Result<bool> {
        self.read(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM api_tokens WHERE app_id IS NULL)",
                [],
                |r| r.get(0),
            )
            .map_err(backend)
        })
        .await
    }

    async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        now: DateTime<Utc>,
        stale_after: chrono::Duration,
    ) -> Result<IdempotencyState> {
        let (scope, key) = (scope.to_string(), key.to_string());
        // Acknowledged at commit, without waiting for its fsync: the request's own durable
        // writes come after it in the WAL, so once any of them is acknowledged this is on
        // disk too; and if none is, the caller never got an answer and the key was never
        // used. (The Svix SDKs send a key with every POST.)
        self.write_with(Durability::Lazy, move |c| {
            let existing = c
                .prepare_cached(
                    "SELECT state, status, body, created_at FROM idempotency_keys
                     WHERE scope = ?1 AND key = ?2",
                )
                .map_err(backend)?
                .query_row([&scope, &key], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<u16>>(1)?,
                        r.get::<_, Option<Vec<u8>>>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .optional()
                .map_err(backend)?;
            match existing {
                Some((state, Some(status), body, _)) if state == "done" => {
                    return Ok(IdempotencyState::Done(StoredResponse {
                        status,
                        body: body.unwrap_or_default(),
                    }))
                }
                Some((_, _, _, created)) if from_ms(created) > now - stale_after => {
                    return Ok(IdempotencyState::InProgress)
                }
                _ => {}
            }
            c.prepare_cached(
                "INSERT INTO idempotency_keys (scope, key, state, created_at) VALUES (?1, ?2, 'pending', ?3)
                 ON CONFLICT (scope, key) DO UPDATE SET state = 'pending', status = NULL, body = NULL,
                 created_at = excluded.created_at",
            )
            .map_err(backend)?
            .execute(params![scope, key, ms(now)])
            .map_err(backend)?;
            Ok(IdempotencyState::Claimed)
        })
        .await
    }

    async fn idempotency_finish(
        &self,
        scope: &str,
        key: &str,
        response: StoredResponse,
    ) -> Result<()> {
        let (scope, key) = (scope.to_string(), key.to_string());
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE idempotency_keys SET state = 'done', status = ?3, body = ?4
                 WHERE scope = ?1 AND key = ?2",
            )
            .map_err(backend)?
            .execute(params![scope, key, response.status, response.body])
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn idempotency_abandon(&self, scope: &str, key: &str) -> Result<()> {
        let (scope, key) = (scope.to_string(), key.to_string());
        self.write(move |c| {
            c.execute(
                "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND state = 'pending'",
                [&scope, &key],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn list_attempts(&self, app_id: &str, q: &AttemptQuery) -> Result<Page<Attempt>> {
        let (app_id, q) = (app_id.to_string(), q.clone());
        self.read(move |c| {
            let mut sql = " AND app_id = ?".to_string();
            let mut args = vec![Value::Text(app_id)];
            if let Some(m) = &q.msg_id {
                sql.push_str(" AND msg_id = ?");
                args.push(Value::Text(m.clone()));
            }
            if let Some(ok) = q.succeeded {
                sql.push_str(" AND succeeded = ?");
                args.push(Value::Integer(ok as i64));
            }
            match q.status_code_class {
                Some(0) => sql.push_str(" AND status_code IS NULL"),
                Some(class) => {
                    sql.push_str(" AND status_code >= ? AND status_code < ?");
                    args.push(Value::Integer(class as i64 * 100));
                    args.push(Value::Integer(class as i64 * 100 + 100));
                }
                None => {}
            }
            if let Some(b) = q.before {
                sql.push_str(" AND attempted_at < ?");
                args.push(Value::Integer(ms(b)));
            }
            if let Some(a) = q.after {
                sql.push_str(" AND attempted_at > ?");
                args.push(Value::Integer(ms(a)));
            }
            match (&q.msg_id, &q.endpoint_id) {
                (None, Some(ep)) => paginate_keyed(
                    c,
                    &ATTEMPT_KEYS,
                    ATTEMPT_COLS,
                    ep,
                    &sql,
                    args,
                    &q.list,
                    attempt_row,
                    |a| a.id.clone(),
                ),
                (_, ep) => {
                    if let Some(ep) = ep {
                        sql.push_str(" AND endpoint_id = ?");
                        args.push(Value::Text(ep.clone()));
                    }
                    let sql = format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE 1{sql}");
                    paginate(c, &sql, args, "id", &q.list, attempt_row, |a| a.id.clone())
                }
            }
        })
        .await
    }

    async fn get_attempt(&self, app_id: &str, attempt_id: &str) -> Result<Option<Attempt>> {
        let (app_id, id) = (app_id.to_string(), attempt_id.to_string());
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {ATTEMPT_COLS} FROM attempts WHERE app_id = ?1 AND id = ?2"
            ))
            .map_err(backend)?
            .query_row([&app_id, &id], attempt_row)
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn list_message_deliveries(
        &self,
        app_id: &str,
        msg_id: &str,
        q: &ListQuery,
    ) -> Result<Page<DeliveryView>> {
        let (app_id, msg_id, q) = (app_id.to_string(), msg_id.to_string(), q.clone());
        self.read(move |c| {
            let sql = format!(
                "SELECT {DELIVERY_VIEW_COLS} FROM deliveries WHERE app_id = ? AND msg_id = ?"
            );
            paginate(
                c,
                &sql,
                vec![Value::Text(app_id), Value::Text(msg_id)],
                "endpoint_id",
                &q,
                delivery_view_row,
                |d| d.endpoint_id.clone(),
            )
        })
        .await
    }

    async fn list_endpoint_deliveries(
        &self,
        app_id: &str,
        endpoint_id: &str,
        q: &ListQuery,
        status: Option<DeliveryStatus>,
    ) -> Result<Page<DeliveryView>> {
        let (app_id, ep, q) = (app_id.to_string(), endpoint_id.to_string(), q.clone());
        self.read(move |c| {
            let mut filter = " AND app_id = ?".to_string();
            let mut args = vec![Value::Text(app_id)];
            if let Some(s) = status {
                filter.push_str(" AND status = ?");
                args.push(Value::Text(s.as_str().into()));
            }
            paginate_keyed(
                c,
                &DELIVERY_KEYS,
                DELIVERY_VIEW_COLS,
                &ep,
                &filter,
                args,
                &q,
                delivery_view_row,
                |d| d.msg_id.clone(),
            )
        })
        .await
    }

    async fn resend(
        &self,
        app_id: &str,
        msg_id: &str,
        endpoint_id: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (app_id, msg_id, ep) = (
            app_id.to_string(),
            msg_id.to_string(),
            endpoint_id.to_string(),
        );
        self.write(move |c| {
            let now = ms(now);
            let state: Option<String> = c
                .prepare_cached("SELECT status FROM deliveries WHERE msg_id = ?1 AND endpoint_id = ?2")
                .map_err(backend)?
                .query_row([&msg_id, &ep], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            match state.as_deref() {
                Some("sending") => {
                    return Err(StoreError::Conflict(
                        "an attempt of this message to this endpoint is in flight".into(),
                    ))
                }
                Some(_) => {
                    c.prepare_cached(
                        "UPDATE deliveries SET status = 'pending', due_at = ?3, scheduled_at = ?3,
                             trigger = 1, updated_at = ?3
                         WHERE msg_id = ?1 AND endpoint_id = ?2",
                    )
                    .map_err(backend)?
                    .execute(params![msg_id, ep, now])
                    .map_err(backend)?;
                }
                None => {
                    // Only to an endpoint of the app that still exists (no foreign key
                    // checks it: see migration 6).
                    let n = c
                        .prepare_cached(
                            "INSERT INTO deliveries (app_id, msg_id, endpoint_id, status, attempts, trigger,
                                 scheduled_at, due_at, created_at, updated_at)
                             SELECT ?1, ?2, ?3, 'pending', 0, 1, ?4, ?4, ?4, ?4
                             WHERE EXISTS (SELECT 1 FROM endpoints WHERE id = ?3 AND app_id = ?1)",
                        )
                        .map_err(backend)?
                        .execute(params![app_id, msg_id, ep, now])
                        .map_err(backend)?;
                    if n == 0 {
                        return Err(StoreError::NotFound);
                    }
                }
            }
            refresh_next_due(c, &ep)
        })
        .await
    }

    async fn recover(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let (app_id, ep) = (app_id.to_string(), endpoint_id.to_string());
        self.write(move |c| {
            let n = c
                .prepare_cached(&format!(
                    "UPDATE deliveries SET status = 'pending', due_at = ?5, scheduled_at = ?5,
                         trigger = 1, updated_at = ?5
                     WHERE rowid IN ({}) AND app_id = ?1 AND status = 'failed'
                       AND EXISTS (SELECT 1 FROM messages WHERE messages.id = deliveries.msg_id
                                   AND created_at >= ?3 AND (?4 IS NULL OR created_at < ?4)
                                   AND (payload_expires_at IS NULL OR payload_expires_at > ?5))",
                    DELIVERY_KEYS.rowids(2)
                ))
                .map_err(backend)?
                .execute(params![app_id, ep, ms(since), until.map(ms), ms(now)])
                .map_err(backend)?;
            refresh_next_due(c, &ep)?;
            Ok(n as u64)
        })
        .await
    }

    async fn queue_stats(&self, now: DateTime<Utc>) -> Result<QueueStats> {
        self.read(move |c| {
            let (queued, due): (i64, i64) = c
                .prepare_cached(
                    "SELECT count(*), coalesce(sum(due_at <= ?1), 0) FROM deliveries WHERE due_at IS NOT NULL",
                )
                .map_err(backend)?
                .query_row([ms(now)], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(backend)?;
            // One look per kind of endpoint: each is an index's first entry.
            let mut oldest: Option<i64> = None;
            for kind in [HEALTHY, FAILING] {
                let due: Option<i64> = c
                    .prepare_cached(&format!(
                        "SELECT min(next_due_at) FROM endpoints
                         WHERE disabled = 0 AND {kind} AND next_due_at IS NOT NULL"
                    ))
                    .map_err(backend)?
                    .query_row([], |r| r.get(0))
                    .map_err(backend)?;
                oldest = oldest.into_iter().chain(due).min();
            }
            Ok(QueueStats {
                queued: queued as u64,
                due: due as u64,
                oldest_due: oldest.map(from_ms).filter(|t| *t <= now),
            })
        })
        .await
    }

    async fn endpoint_attempt_buckets(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        width: chrono::Duration,
    ) -> Result<Vec<AttemptBucket>> {
        let (app_id, ep) = (app_id.to_string(), endpoint_id.to_string());
        self.read(move |c| {
            let rows = stats_rows(c, &ep, Some(&app_id), stats::HOUR, since, until)?;
            Ok(stats::fold(rows, since, width))
        })
        .await
    }

    async fn attempt_buckets(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        width: chrono::Duration,
    ) -> Result<Vec<AttemptBucket>> {
        let span = stats::span_for(since, width);
        self.read(move |c| {
            let rows = stats_rows(c, stats::ALL, None, span, since, until)?;
            Ok(stats::fold(rows, since, width))
        })
        .await
    }

    async fn failing_endpoints(&self, limit: usize) -> Result<(Vec<FailingEndpoint>, u64)> {
        self.read(move |c| {
            let list = c
                .prepare_cached(&format!(
                    "SELECT {EP_COLS}, EXISTS (SELECT 1 FROM deliveries
                                               WHERE endpoint_id = endpoints.id
                                                 AND due_at IS NOT NULL)
                     FROM endpoints WHERE failing_since IS NOT NULL
                     ORDER BY failing_since, id LIMIT ?1"
                ))
                .map_err(backend)?
                .query_map([limit as i64], |r| {
                    Ok(FailingEndpoint {
                        endpoint: ep_row(r)?,
                        queued: r.get(EP_COLS.split(", ").count())?,
                    })
                })
                .map_err(backend)?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(backend)?;
            let all: i64 = c
                .prepare_cached("SELECT count(*) FROM endpoints WHERE failing_since IS NOT NULL")
                .map_err(backend)?
                .query_row([], |r| r.get(0))
                .map_err(backend)?;
            Ok((list, all.max(0) as u64))
        })
        .await
    }

    async fn endpoint_stats(&self, app_id: &str, endpoint_id: &str) -> Result<DeliveryCounts> {
        let (app_id, ep) = (app_id.to_string(), endpoint_id.to_string());
        self.read(move |c| {
            let mut counts = DeliveryCounts::default();
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT status, count(*) FROM deliveries
                     WHERE rowid IN ({}) AND app_id = ?1 GROUP BY status",
                    DELIVERY_KEYS.rowids(2)
                ))
                .map_err(backend)?;
            let rows = stmt
                .query_map([&app_id, &ep], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(backend)?;
            for row in rows {
                let (status, n) = row.map_err(backend)?;
                let n = n as u64;
                match status.as_str() {
                    "pending" => counts.pending = n,
                    "sending" => counts.sending = n,
                    "succeeded" => counts.succeeded = n,
                    "failed" => counts.failed = n,
                    _ => {}
                }
            }
            Ok(counts)
        })
        .await
    }

    async fn idempotency_purge(&self, before: DateTime<Utc>) -> Result<u64> {
        self.write(move |c| {
            c.execute(
                "DELETE FROM idempotency_keys WHERE created_at < ?1",
                [ms(before)],
            )
            .map(|n| n as u64)
            .map_err(backend)
        })
        .await
    }

    // Deletes need not wait for their fsync (lazy): one lost with a power cut is only
    // done again by the next pass.
    async fn prune_messages(
        &self,
        before: DateTime<Utc>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Pruned> {
        let after = after.map(str::to_string);
        self.write_with(Durability::Lazy, move |c| {
            retention::prune_messages(c, before, after.as_deref(), limit)
        })
        .await
    }

    async fn drop_expired_payloads(&self, now: DateTime<Utc>, limit: usize) -> Result<Pruned> {
        self.write_with(Durability::Lazy, move |c| {
            retention::drop_expired_payloads(c, now, limit)
        })
        .await
    }

    async fn prune_attempt_stats(&self, before: DateTime<Utc>, limit: usize) -> Result<Pruned> {
        self.write_with(Durability::Lazy, move |c| {
            retention::prune_attempt_stats(c, before, limit)
        })
        .await
    }

    async fn reclaim_space(&self) -> Result<u64> {
        self.write_with(Durability::Lazy, retention::reclaim_space)
            .await
    }
}

/// Deletes an endpoint's attempt statistics with it (every endpoint's rows keep
/// counting its attempts, as they keep counting those that retention deleted).
fn delete_stats(c: &Connection, endpoint_id: &str) -> Result<()> {
    c.prepare_cached("DELETE FROM attempt_stats WHERE scope = ?1")
        .map_err(backend)?
        .execute([endpoint_id])
        .map_err(backend)?;
    Ok(())
}

/// The `attempt_stats` rows of `scope` and `span` starting in `[since, until)`, as
/// [`stats::fold`] takes them; for an endpoint's scope, only if it is `app_id`'s.
pub(super) fn stats_rows(
    c: &Connection,
    scope: &str,
    app_id: Option<&str>,
    span: i64,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<stats::Row>> {
    c.prepare_cached(STATS_SQL)
        .map_err(backend)?
        .query_map(params![scope, span, ms(since), ms(until), app_id], |r| {
            Ok((
                from_ms(r.get(0)?),
                r.get::<_, i64>(1)?.clamp(0, 63) as u8,
                r.get::<_, i64>(2)?.max(0) as u64,
                r.get::<_, i64>(3)?.max(0) as u64,
            ))
        })
        .map_err(backend)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(backend)
}

/// `?1` scope, `?2` span, `?3`/`?4` the window in ms, `?5` the application an endpoint's
/// scope must belong to (`NULL`: every endpoint's rows). Walks the primary key's range.
pub(super) const STATS_SQL: &str = "SELECT start, bucket, succeeded, failed FROM attempt_stats
     WHERE scope = ?1 AND span = ?2 AND start >= ?3 AND start < ?4
       AND (?5 IS NULL OR EXISTS (SELECT 1 FROM endpoints WHERE id = ?1 AND app_id = ?5))";
