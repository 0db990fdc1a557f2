//! Row mapping between the model and SQLite columns, lookups by id or uid, and the
//! error and value conversions every query shares.

use super::*;

/// Deletes the row `sql` selects by `key`; `NotFound` if there was none.
pub(super) fn delete_one(c: &Connection, sql: &str, key: &str) -> Result<()> {
    match c.execute(sql, [key]).map_err(backend)? {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

/// Runs a parameterless statement through the statement cache (no re-parsing).
pub(super) fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// A database error as a [`StoreError`]: `StorageFull` when SQLite says the disk is full.
pub(super) fn backend(e: rusqlite::Error) -> StoreError {
    if is_disk_full(&e) {
        StoreError::StorageFull(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// `SQLITE_FULL`: a write found no room on the disk (SQLite's own limit on the file's
/// page count says the same, and needs the same answer).
pub(super) fn is_disk_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

/// `SQLITE_IOERR` in any of its variants.
pub(super) fn is_io_error(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::SystemIoFailure)
}

/// `ENOSPC`, or `EDQUOT` (a quota is a full disk for whoever hits it).
pub(super) fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// A file-system error while `doing` something, as a [`StoreError`].
pub(super) fn io_error(doing: String, e: &std::io::Error) -> StoreError {
    if is_no_space(e) {
        StoreError::StorageFull(format!("{doing}: {e}"))
    } else {
        StoreError::Backend(format!("{doing}: {e}"))
    }
}

/// Maps a UNIQUE violation to `Conflict(what)`, anything else to `Backend`.
pub(super) fn unique_as_conflict(what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::Conflict(what.to_string())
        }
        _ => backend(e),
    }
}

pub(super) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("model types always serialize")
}

pub(super) fn json_col<T: serde::de::DeserializeOwned>(
    row: &Row,
    idx: usize,
) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(super) fn opt_json_col<T: serde::de::DeserializeOwned>(
    row: &Row,
    idx: usize,
) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
        })
    })
    .transpose()
}

pub(super) const APP_COLS: &str =
    "id, uid, name, throttle_rate, metadata, retry_policy, created_at, updated_at, validate_payloads";

pub(super) fn app_row(r: &Row) -> rusqlite::Result<Application> {
    Ok(Application {
        id: r.get(0)?,
        uid: r.get(1)?,
        name: r.get(2)?,
        throttle_rate: r.get(3)?,
        metadata: json_col(r, 4)?,
        retry_policy: opt_json_col(r, 5)?,
        created_at: from_ms(r.get(6)?),
        updated_at: from_ms(r.get(7)?),
        validate_payloads: r.get(8)?,
    })
}

pub(super) fn put_app(conn: &Connection, a: &Application, insert: bool) -> Result<()> {
    let sql = if insert {
        "INSERT INTO applications (id, uid, name, throttle_rate, metadata, retry_policy, created_at, updated_at, validate_payloads)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    } else {
        "UPDATE applications SET uid = ?2, name = ?3, throttle_rate = ?4, metadata = ?5,
         retry_policy = ?6, created_at = ?7, updated_at = ?8, validate_payloads = ?9 WHERE id = ?1"
    };
    conn.prepare_cached(sql)
        .map_err(backend)?
        .execute(params![
            a.id,
            a.uid,
            a.name,
            a.throttle_rate,
            to_json(&a.metadata),
            a.retry_policy.as_ref().map(to_json),
            ms(a.created_at),
            ms(a.updated_at),
            a.validate_payloads
        ])
        .map_err(unique_as_conflict(
            "an application with this uid already exists",
        ))?;
    Ok(())
}

pub(super) const ET_COLS: &str = "name, description, archived, deprecated, schemas, group_name, feature_flags, created_at, updated_at, validate_payloads";

pub(super) fn et_row(r: &Row) -> rusqlite::Result<EventType> {
    Ok(EventType {
        name: r.get(0)?,
        description: r.get(1)?,
        archived: r.get(2)?,
        deprecated: r.get(3)?,
        schemas: opt_json_col(r, 4)?,
        group_name: r.get(5)?,
        feature_flags: opt_json_col(r, 6)?,
        created_at: from_ms(r.get(7)?),
        updated_at: from_ms(r.get(8)?),
        validate_payloads: r.get(9)?,
    })
}

pub(super) fn put_et(conn: &Connection, e: &EventType, insert: bool) -> Result<()> {
    let sql = if insert {
        "INSERT INTO event_types (name, description, archived, deprecated, schemas, group_name, feature_flags, created_at, updated_at, validate_payloads)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    } else {
        "UPDATE event_types SET description = ?2, archived = ?3, deprecated = ?4, schemas = ?5,
         group_name = ?6, feature_flags = ?7, created_at = ?8, updated_at = ?9, validate_payloads = ?10
         WHERE name = ?1"
    };
    conn.prepare_cached(sql)
        .map_err(backend)?
        .execute(params![
            e.name,
            e.description,
            e.archived,
            e.deprecated,
            e.schemas.as_ref().map(to_json),
            e.group_name,
            e.feature_flags.as_ref().map(to_json),
            ms(e.created_at),
            ms(e.updated_at),
            e.validate_payloads
        ])
        .map_err(unique_as_conflict(
            "an event type with this name already exists",
        ))?;
    Ok(())
}

pub(super) const EP_COLS: &str =
    "id, app_id, uid, url, disabled, settings, created_at, updated_at, failing_since";

pub(super) fn ep_row(r: &Row) -> rusqlite::Result<Endpoint> {
    let id: String = r.get(0)?;
    let settings = sealing::open_settings(&id, r.get_ref(5)?.as_str()?).map_err(|why| {
        rusqlite::Error::FromSqlConversionFailure(
            5,
            rusqlite::types::Type::Text,
            format!("endpoint {id}: {why}").into(),
        )
    })?;
    Ok(Endpoint {
        id,
        app_id: r.get(1)?,
        uid: r.get(2)?,
        url: r.get(3)?,
        disabled: r.get(4)?,
        settings,
        created_at: from_ms(r.get(6)?),
        updated_at: from_ms(r.get(7)?),
        failing_since: r.get::<_, Option<i64>>(8)?.map(from_ms),
    })
}

pub(super) fn put_ep(conn: &Connection, sealer: &Sealer, e: &Endpoint, insert: bool) -> Result<()> {
    let sql = if insert {
        "INSERT INTO endpoints (id, app_id, uid, url, disabled, settings, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    } else {
        "UPDATE endpoints SET app_id = ?2, uid = ?3, url = ?4, disabled = ?5, settings = ?6,
         created_at = ?7, updated_at = ?8 WHERE id = ?1"
    };
    conn.prepare_cached(sql)
        .map_err(backend)?
        .execute(params![
            e.id,
            e.app_id,
            e.uid,
            e.url,
            e.disabled,
            sealer.seal_settings(&e.id, &e.settings),
            ms(e.created_at),
            ms(e.updated_at)
        ])
        .map_err(unique_as_conflict(
            "an endpoint with this uid already exists in this application",
        ))?;
    Ok(())
}

pub(super) const MSG_COLS: &str =
    "id, app_id, event_id, event_type, payload, channels, tags, created_at, deliver_at, payload_expires_at";

pub(super) fn msg_row(r: &Row) -> rusqlite::Result<Message> {
    Ok(Message {
        id: r.get(0)?,
        app_id: r.get(1)?,
        event_id: r.get(2)?,
        event_type: r.get(3)?,
        payload: r.get(4)?,
        channels: opt_json_col(r, 5)?,
        tags: opt_json_col(r, 6)?,
        created_at: from_ms(r.get(7)?),
        deliver_at: r.get::<_, Option<i64>>(8)?.map(from_ms),
        payload_expires_at: r.get::<_, Option<i64>>(9)?.map(from_ms),
    })
}

pub(super) fn find_app(conn: &Connection, id_or_uid: &str) -> Result<Option<Application>> {
    // An id match wins over a uid match, as in Svix.
    conn.prepare_cached(&format!(
        "SELECT {APP_COLS} FROM applications WHERE id = ?1 OR uid = ?1
         ORDER BY id = ?1 DESC LIMIT 1"
    ))
    .map_err(backend)?
    .query_row([id_or_uid], app_row)
    .optional()
    .map_err(backend)
}

pub(super) fn find_et(conn: &Connection, name: &str) -> Result<Option<EventType>> {
    conn.prepare_cached(&format!(
        "SELECT {ET_COLS} FROM event_types WHERE name = ?1"
    ))
    .map_err(backend)?
    .query_row([name], et_row)
    .optional()
    .map_err(backend)
}

pub(super) fn find_ep(
    conn: &Connection,
    app_id: &str,
    id_or_uid: &str,
) -> Result<Option<Endpoint>> {
    conn.prepare_cached(&format!(
        "SELECT {EP_COLS} FROM endpoints WHERE app_id = ?1 AND (id = ?2 OR uid = ?2)
         ORDER BY id = ?2 DESC LIMIT 1"
    ))
    .map_err(backend)?
    .query_row([app_id, id_or_uid], ep_row)
    .optional()
    .map_err(backend)
}

pub(super) fn trigger_of(v: i64) -> Trigger {
    if v == 1 {
        Trigger::Manual
    } else {
        Trigger::Scheduled
    }
}

pub(super) fn trigger_num(t: Trigger) -> i64 {
    match t {
        Trigger::Scheduled => 0,
        Trigger::Manual => 1,
    }
}

pub(super) const ATTEMPT_COLS: &str = "id, app_id, msg_id, endpoint_id, url, attempted_at, status_code, duration_ms, succeeded, error_kind, response, trigger";

pub(super) fn attempt_row(r: &Row) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        id: r.get(0)?,
        app_id: r.get(1)?,
        msg_id: r.get(2)?,
        endpoint_id: r.get(3)?,
        url: r.get(4)?,
        attempted_at: from_ms(r.get(5)?),
        status_code: r.get(6)?,
        duration_ms: r.get::<_, i64>(7)? as u64,
        succeeded: r.get(8)?,
        error_kind: r.get(9)?,
        response: r.get(10)?,
        trigger: trigger_of(r.get(11)?),
    })
}

pub(super) const DELIVERY_VIEW_COLS: &str = "msg_id, endpoint_id, status, attempts,
    CASE WHEN status = 'pending' THEN scheduled_at END, updated_at";

pub(super) fn delivery_view_row(r: &Row) -> rusqlite::Result<DeliveryView> {
    let status: String = r.get(2)?;
    Ok(DeliveryView {
        msg_id: r.get(0)?,
        endpoint_id: r.get(1)?,
        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Pending),
        attempts: r.get(3)?,
        next_attempt: r.get::<_, Option<i64>>(4)?.map(from_ms),
        updated_at: from_ms(r.get(5)?),
    })
}
