//! The `api_tokens` table's SQL, for the store and for [`TokenTable`], the side door
//! `hookline token` uses on a database that a running server holds.

use super::*;

/// The columns [`row`] reads, in its order.
pub(super) const COLUMNS: &str =
    "token_hash, app_id, expires_at, created_at, read_only, name, prefix, last_used_at";

pub(super) fn row(r: &Row<'_>) -> rusqlite::Result<ApiToken> {
    let bytes: Vec<u8> = r.get(0)?;
    let hash: [u8; 32] = bytes.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            "a token_hash is not 32 bytes".into(),
        )
    })?;
    Ok(ApiToken {
        hash,
        app_id: r.get(1)?,
        expires_at: r.get::<_, Option<i64>>(2)?.map(from_ms),
        created_at: from_ms(r.get(3)?),
        read_only: r.get(4)?,
        name: r.get(5)?,
        prefix: r.get(6)?,
        last_used_at: r.get::<_, Option<i64>>(7)?.map(from_ms),
    })
}

pub(super) fn insert(c: &Connection, token: &ApiToken) -> Result<()> {
    c.execute(
        "INSERT INTO api_tokens (token_hash, app_id, expires_at, created_at, read_only,
                                 name, prefix, last_used_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            token.hash.to_vec(),
            token.app_id,
            token.expires_at.map(ms),
            ms(token.created_at),
            token.read_only,
            token.name,
            token.prefix,
            token.last_used_at.map(ms),
        ],
    )
    .map_err(unique_as_conflict("token already exists"))?;
    Ok(())
}

pub(super) fn list(c: &Connection, now: DateTime<Utc>) -> Result<Vec<ApiToken>> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM api_tokens
             WHERE expires_at IS NULL OR expires_at > ?1
             ORDER BY created_at, token_hash"
        ))
        .map_err(backend)?;
    let rows = stmt.query_map(params![ms(now)], row).map_err(backend)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
}

pub(super) fn revoke(c: &Connection, id: &[u8; TOKEN_ID_BYTES]) -> Result<()> {
    let (low, high) = token_hash_range(id);
    let n = c
        .execute(
            "DELETE FROM api_tokens WHERE token_hash BETWEEN ?1 AND ?2",
            params![low.to_vec(), high.to_vec()],
        )
        .map_err(backend)?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// The token table of a SQLite database, reached with a connection of its own and
/// without the process lock [`SqliteStore::open`] takes: `hookline token` works while the
/// server runs. That is safe for this table only: the server keeps nothing of it in
/// memory (every request reads its token), and SQLite's own locking orders the writes
/// (the connection waits up to 5 s for the server's writer).
pub struct TokenTable {
    conn: Connection,
}

impl TokenTable {
    /// Opens the database at `path`. Its schema must be this hookline's: when it is not
    /// (or the file does not exist yet), it is opened as a store first (with the main key
    /// from `key`, as the server will), which migrates and seals it and so needs no
    /// server running on it.
    pub fn open(path: &Path, key: &KeySource) -> Result<Self> {
        let current = |conn: &Connection| -> Result<bool> {
            let v: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(backend)?;
            Ok(v as usize == migrations::MIGRATIONS.len())
        };
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let existing = path
            .exists()
            .then(|| Connection::open_with_flags(path, flags))
            .transpose()
            .map_err(backend)?;
        let conn = match existing {
            Some(conn) if current(&conn)? => conn,
            _ => {
                drop(SqliteStore::open_sealed(path, key)?);
                Connection::open_with_flags(path, flags).map_err(backend)?
            }
        };
        conn.execute_batch(
            "PRAGMA busy_timeout = 5000;
             PRAGMA foreign_keys = ON;
             PRAGMA wal_autocheckpoint = 0;",
        )
        .map_err(backend)?;
        Ok(Self { conn })
    }

    pub fn insert(&self, token: &ApiToken) -> Result<()> {
        insert(&self.conn, token)
    }

    pub fn list(&self, now: DateTime<Utc>) -> Result<Vec<ApiToken>> {
        list(&self.conn, now)
    }

    pub fn revoke(&self, id: &[u8; TOKEN_ID_BYTES]) -> Result<()> {
        revoke(&self.conn, id)
    }

    /// The id of the application with this id, or else this uid.
    pub fn app_id(&self, id_or_uid: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT id FROM applications WHERE id = ?1 OR uid = ?1
                 ORDER BY id = ?1 DESC LIMIT 1",
                params![id_or_uid],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
    }
}
