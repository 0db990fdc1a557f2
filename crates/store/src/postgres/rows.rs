//! The records as PostgreSQL rows and statement parameters, both ways.
//!
//! Documents (metadata, settings, retry policies, schemas, channel lists) are stored as
//! the same JSON text the SQLite backend writes, so a database can be moved between the
//! two by copying columns. Timestamps are written truncated to the millisecond, the
//! precision the model promises ([`crate::now`]) and SQLite keeps: a record reads back as
//! it would from SQLite even when a caller hands in a finer timestamp.

use chrono::{DateTime, Utc};
use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use super::errors::backend;
use crate::*;

/// `t` at millisecond precision, as stored.
pub(super) fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("model types always serialize")
}

fn get<'a, T: FromSql<'a>>(r: &'a Row, idx: usize) -> Result<T> {
    r.try_get(idx).map_err(backend)
}

fn json<T: serde::de::DeserializeOwned>(r: &Row, idx: usize) -> Result<T> {
    let text: &str = get(r, idx)?;
    parse_json(r, idx, text)
}

fn opt_json<T: serde::de::DeserializeOwned>(r: &Row, idx: usize) -> Result<Option<T>> {
    let text: Option<&str> = get(r, idx)?;
    text.map(|t| parse_json(r, idx, t)).transpose()
}

fn parse_json<T: serde::de::DeserializeOwned>(r: &Row, idx: usize, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| {
        let column = r.columns().get(idx).map_or("?", |c| c.name());
        StoreError::Backend(format!("PostgreSQL: column {column} holds bad JSON: {e}"))
    })
}

/// A `throttleRate` as the `integer` column holds it.
pub(super) fn rate_param(rate: Option<u32>) -> Result<Option<i32>> {
    rate.map(|r| {
        i32::try_from(r).map_err(|_| {
            StoreError::Rejected(Rejected::new("throttleRate", "must be at most 2147483647"))
        })
    })
    .transpose()
}

fn rate(r: &Row, idx: usize) -> Result<Option<u32>> {
    let v: Option<i32> = get(r, idx)?;
    v.map(|v| {
        u32::try_from(v)
            .map_err(|_| StoreError::Backend(format!("PostgreSQL: negative throttle_rate {v}")))
    })
    .transpose()
}

pub(super) const APP_COLS: &str =
    "id, uid, name, throttle_rate, metadata, retry_policy, created_at, updated_at, validate_payloads";

pub(super) fn app_row(r: &Row) -> Result<Application> {
    Ok(Application {
        id: get(r, 0)?,
        uid: get(r, 1)?,
        name: get(r, 2)?,
        throttle_rate: rate(r, 3)?,
        metadata: json(r, 4)?,
        retry_policy: opt_json(r, 5)?,
        created_at: get(r, 6)?,
        updated_at: get(r, 7)?,
        validate_payloads: get(r, 8)?,
    })
}

pub(super) const ET_COLS: &str = "name, description, archived, deprecated, schemas, group_name, feature_flags, created_at, updated_at, validate_payloads";

pub(super) fn et_row(r: &Row) -> Result<EventType> {
    Ok(EventType {
        name: get(r, 0)?,
        description: get(r, 1)?,
        archived: get(r, 2)?,
        deprecated: get(r, 3)?,
        schemas: opt_json(r, 4)?,
        group_name: get(r, 5)?,
        feature_flags: opt_json(r, 6)?,
        created_at: get(r, 7)?,
        updated_at: get(r, 8)?,
        validate_payloads: get(r, 9)?,
    })
}

pub(super) const EP_COLS: &str =
    "id, app_id, uid, url, disabled, settings, created_at, updated_at, failing_since";

pub(super) fn ep_row(r: &Row) -> Result<Endpoint> {
    let id: String = get(r, 0)?;
    let settings = crate::sealing::open_settings(&id, get(r, 5)?)
        .map_err(|why| StoreError::Backend(format!("endpoint {id}: {why}")))?;
    Ok(Endpoint {
        id,
        app_id: get(r, 1)?,
        uid: get(r, 2)?,
        url: get(r, 3)?,
        disabled: get(r, 4)?,
        settings,
        created_at: get(r, 6)?,
        updated_at: get(r, 7)?,
        failing_since: get(r, 8)?,
    })
}

pub(super) const MSG_COLS: &str =
    "id, app_id, event_id, event_type, payload, channels, tags, created_at, deliver_at, payload_expires_at";

pub(super) fn msg_row(r: &Row) -> Result<Message> {
    Ok(Message {
        id: get(r, 0)?,
        app_id: get(r, 1)?,
        event_id: get(r, 2)?,
        event_type: get(r, 3)?,
        payload: get::<&str>(r, 4)?.into(),
        channels: opt_json(r, 5)?,
        tags: opt_json(r, 6)?,
        created_at: get(r, 7)?,
        deliver_at: get(r, 8)?,
        payload_expires_at: get(r, 9)?,
    })
}

/// The columns [`token_row`] reads, in its order.
pub(super) const TOKEN_COLUMNS: &str =
    "token_hash, app_id, expires_at, created_at, read_only, name, prefix, last_used_at";

pub(super) fn token_row(r: &Row) -> Result<ApiToken> {
    let bytes: Vec<u8> = get(r, 0)?;
    let hash: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Backend("PostgreSQL: a token_hash is not 32 bytes".into()))?;
    Ok(ApiToken {
        hash,
        app_id: get(r, 1)?,
        expires_at: get(r, 2)?,
        created_at: get(r, 3)?,
        read_only: get(r, 4)?,
        name: get(r, 5)?,
        prefix: get(r, 6)?,
        last_used_at: get(r, 7)?,
    })
}

/// An idempotency key's row: `state, status, body, created_at`.
pub(super) fn idempotency_row(r: &Row) -> Result<IdempotencyState> {
    let state: &str = get(r, 0)?;
    let status: Option<i32> = get(r, 1)?;
    match (state, status) {
        ("done", Some(status)) => Ok(IdempotencyState::Done(StoredResponse {
            status: u16::try_from(status).map_err(|_| {
                StoreError::Backend(format!(
                    "PostgreSQL: stored status {status} is no HTTP status"
                ))
            })?,
            body: get::<Option<Vec<u8>>>(r, 2)?.unwrap_or_default(),
        })),
        _ => Ok(IdempotencyState::InProgress),
    }
}
