//! PostgreSQL's errors as [`StoreError`]s a caller can act on.
//!
//! Uniqueness is the database's: a unique violation (SQLSTATE 23505) becomes
//! `Conflict` with the text SQLite's backend gives for the same collision, chosen by the
//! constraint's name. The server's DETAIL is never passed on: it can quote a whole row
//! (a failing CHECK's "Failing row contains (...)"), endpoint secrets included.

use tokio_postgres::error::SqlState;

use super::cause_chain;
use crate::StoreError;

/// A failed statement or connection as a [`StoreError`]: `StorageFull` when the server's
/// disk is full, otherwise `Backend` saying why.
pub(super) fn backend(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) if *db.code() == SqlState::DISK_FULL => {
            StoreError::StorageFull(format!("PostgreSQL: {}", db.message()))
        }
        _ if unreachable(&e) => StoreError::Unavailable(format!("PostgreSQL: {}", explain(&e))),
        _ => StoreError::Backend(format!("PostgreSQL: {}", explain(&e))),
    }
}

/// Whether `e` means the server cannot be used right now (rather than that a statement
/// failed): a lost or refused connection, or the server shutting down or starting up.
fn unreachable(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        // Class 08: connection exceptions; 57P01-57P03: shutting down, crashed, starting.
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
        None => {
            e.is_closed()
                || std::error::Error::source(e)
                    .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
        }
    }
}

/// No connection could be had from the pool.
pub(super) fn pool(e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    let why = match e {
        PoolError::Backend(pg) => explain(&pg),
        PoolError::Timeout(_) => "timed out".into(),
        other => other.to_string(),
    };
    // No connection to be had: the server is down, refusing, or not accepting
    // connections to this database for now. The pool tries again on the next request.
    StoreError::Unavailable(format!("cannot get a PostgreSQL connection: {why}"))
}

/// The server's message and SQLSTATE, or why the connection failed: one line.
fn explain(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None if e.is_closed() => format!("the connection was lost ({})", cause_chain(e)),
        None => cause_chain(e),
    }
}

/// Maps a unique violation of one of `known` (constraint name, conflict text) to
/// `Conflict(text)`; anything else as [`backend`] (an unexpected constraint included,
/// so that a collision is never reported as the wrong one).
pub(super) fn unique_as_conflict(
    known: &'static [(&'static str, &'static str)],
) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| {
        let hit = e
            .as_db_error()
            .filter(|db| *db.code() == SqlState::UNIQUE_VIOLATION)
            .and_then(|db| db.constraint())
            .and_then(|c| known.iter().find(|(name, _)| *name == c));
        match hit {
            Some((_, text)) => StoreError::Conflict(text.to_string()),
            None => backend(e),
        }
    }
}

/// Whether `e` is a foreign-key violation of `constraint`.
pub(super) fn is_foreign_key(e: &tokio_postgres::Error, constraint: &str) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::FOREIGN_KEY_VIOLATION && db.constraint() == Some(constraint)
    })
}

pub(super) const APP_CONFLICT: &[(&str, &str)] = &[
    (
        "applications_uid_key",
        "an application with this uid already exists",
    ),
    // SQLite reports an id collision with the same text.
    (
        "applications_pkey",
        "an application with this uid already exists",
    ),
];
pub(super) const EVENT_TYPE_CONFLICT: &[(&str, &str)] = &[(
    "event_types_pkey",
    "an event type with this name already exists",
)];
pub(super) const ENDPOINT_CONFLICT: &[(&str, &str)] = &[
    (
        "endpoints_app_id_uid_key",
        "an endpoint with this uid already exists in this application",
    ),
    (
        "endpoints_pkey",
        "an endpoint with this uid already exists in this application",
    ),
];
pub(super) const MESSAGE_CONFLICT: &[(&str, &str)] = &[
    (
        "messages_by_event_id",
        "a message with this eventId already exists in this application",
    ),
    (
        "messages_pkey",
        "a message with this eventId already exists in this application",
    ),
];
pub(super) const TOKEN_CONFLICT: &[(&str, &str)] = &[("api_tokens_pkey", "token already exists")];
