//! `hookline copy`: moves an installation from its embedded SQLite database to PostgreSQL
//! without losing anything a user or a receiver can see.
//!
//! **What is copied.** Applications, event types, endpoints (secrets and every setting),
//! API tokens (their hashes), idempotency keys and every message, always; the deliveries
//! still to be made (`pending`, and `sending` ones, see below) with their attempt counts
//! and due times. With `with_history`, also the finished deliveries (`succeeded`,
//! `failed`) and the attempt log. Without it those two are left out, and the report says
//! how many: the messages stay (they are the API's record of what was sent), but their
//! finished deliveries and every attempt are gone from the listings. The SQLite key
//! tables (`keyed`, `message_keys`, ...) are that backend's own indexes and are not
//! copied; PostgreSQL has real indexes.
//!
//! **What changes.** Ids (`app_`, `ep_`, `msg_`, `atmpt_`, uids, eventIds) and
//! timestamps (milliseconds in both stores) are kept exactly, and JSON documents
//! (settings, metadata, schemas, payloads) byte for byte: both backends store the same
//! JSON text. Deliveries get new row ids from PostgreSQL's identity (in the SQLite order):
//! those ids are internal (no API shows them), and fresh ones cannot collide with a
//! target's own rows. A delivery that was `sending` (leased by the SQLite server when it
//! stopped) becomes `pending` and due at once, as SQLite's own start would have made it:
//! the attempt's outcome is unknown, so it is made again (at-least-once). Each endpoint's
//! `next_due_at` is computed from the deliveries copied, so the PostgreSQL claim finds
//! them; `failing_since` is kept.
//!
//! **Safety.** The source is opened read-only and only once it is known to be a
//! hookline database at this binary's schema version; its lock file is taken for the
//! whole copy, so a server serving it is detected (and none can start meanwhile). The
//! target's schema is migrated first (its own transaction, as `hookline migrate`); then
//! everything is written in one transaction (binary `COPY`, one stream per table), so a
//! failed copy leaves the target as it was. A target that already holds applications or
//! event types is refused unless `allow_non_empty`; a row present in both is then an
//! error, naming it, and nothing is written. Before committing, the rows each table
//! gained are counted and must be what was read from the source.
//!
//! Rows whose parent is gone (a message without its application, a delivery or attempt
//! without its endpoint: SQLite no longer enforces those references since schema 6) have
//! nothing to belong to in PostgreSQL; they are skipped and counted in the report.
//!
//! Errors are one line naming the record and the column at fault, never a secret or a
//! document's content. Every JSON document is checked to be what this hookline reads
//! before it is written, and every text to be one PostgreSQL can hold (no NUL character;
//! only an attempt's response excerpt, a receiver's bytes, has its NULs replaced). This module knows neither the CLI nor how progress is shown: it
//! reports through a callback.

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type};

use crate::postgres::{self, PgSettings};
use crate::sealing::{self, Check};

/// Rows sent from the SQLite reader to the PostgreSQL writer at a time.
const CHUNK: usize = 1000;
/// Chunks in flight between the two: the reader stays a little ahead, memory bounded.
const CHUNKS_AHEAD: usize = 4;

/// What to copy and where it may go.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// Also the attempt log and finished deliveries.
    pub with_history: bool,
    /// Write into a database that already holds applications or event types.
    pub allow_non_empty: bool,
}

/// The kinds of record copied, in the order they are written (parents first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Applications,
    EventTypes,
    Endpoints,
    ApiTokens,
    IdempotencyKeys,
    Messages,
    Deliveries,
    Attempts,
    /// The attempts' counts behind the charts (`attempt_stats`), kept with or without
    /// the attempts themselves.
    AttemptStats,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Applications,
        Kind::EventTypes,
        Kind::Endpoints,
        Kind::ApiTokens,
        Kind::IdempotencyKeys,
        Kind::Messages,
        Kind::Deliveries,
        Kind::Attempts,
        Kind::AttemptStats,
    ];

    /// The kind in words, plural.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Applications => "applications",
            Kind::EventTypes => "event types",
            Kind::Endpoints => "endpoints",
            Kind::ApiTokens => "API tokens",
            Kind::IdempotencyKeys => "idempotency keys",
            Kind::Messages => "messages",
            Kind::Deliveries => "deliveries",
            Kind::Attempts => "attempts",
            Kind::AttemptStats => "rows of attempt statistics",
        }
    }

    /// `n` records of this kind, in words: `1 endpoint`, `2 endpoints`.
    pub fn counted(self, n: u64) -> String {
        let one = match self {
            Kind::Applications => "application",
            Kind::EventTypes => "event type",
            Kind::Endpoints => "endpoint",
            Kind::ApiTokens => "API token",
            Kind::IdempotencyKeys => "idempotency key",
            Kind::Messages => "message",
            Kind::Deliveries => "delivery",
            Kind::Attempts => "attempt",
            Kind::AttemptStats => "row of attempt statistics",
        };
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {}", self.name())
        }
    }

    /// The table, in both databases.
    fn table(self) -> &'static str {
        match self {
            Kind::Applications => "applications",
            Kind::EventTypes => "event_types",
            Kind::Endpoints => "endpoints",
            Kind::ApiTokens => "api_tokens",
            Kind::IdempotencyKeys => "idempotency_keys",
            Kind::Messages => "messages",
            Kind::Deliveries => "deliveries",
            Kind::Attempts => "attempts",
            Kind::AttemptStats => "attempt_stats",
        }
    }

    /// The order rows are read in: the table's own.
    fn order(self) -> &'static str {
        match self {
            // No rowid: by its primary key.
            Kind::AttemptStats => "t.scope, t.span, t.start, t.bucket",
            _ => "t.rowid",
        }
    }
}

/// How far the copy is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The source is open and counted: this many rows will be copied in all.
    Counted { total: u64 },
    /// Writing rows of this kind starts.
    Copying(Kind),
    /// This many more rows of this kind are written.
    Copied(Kind, u64),
    /// Everything is written; counting the target's rows before committing.
    Checking,
}

/// What a copy did: counts per kind, all checked against the target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// The target, `HOST:PORT/DB as USER`.
    pub target: String,
    /// Migrations applied to the target first.
    pub migrated: Vec<i32>,
    /// Rows copied per kind, in [`Kind::ALL`] order (each checked against the target).
    pub copied: Vec<(Kind, u64)>,
    /// Deliveries that were `sending` in SQLite, copied as `pending` and due at once.
    pub leases_taken_back: u64,
    /// Finished deliveries and attempts not copied (no `with_history`).
    pub finished_deliveries_left: u64,
    pub attempts_left: u64,
    /// Rows skipped because their parent is gone, per kind.
    pub orphans: Vec<(Kind, u64)>,
    /// The id of the main key the copied secrets stay sealed under (the source's), if
    /// the source was sealed: hookline on PostgreSQL needs that key.
    pub sealed_under: Option<String>,
}

impl CopyReport {
    /// Rows copied of `kind`.
    pub fn count(&self, kind: Kind) -> u64 {
        self.copied
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }
}

impl fmt::Display for CopyReport {
    /// One line: the counts, then what was left out, if anything.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: Vec<String> = self.copied.iter().map(|(k, n)| k.counted(*n)).collect();
        write!(
            f,
            "copied {} to PostgreSQL at {} (counts checked)",
            counts.join(", "),
            self.target
        )?;
        if self.leases_taken_back > 0 {
            write!(
                f,
                "; due again at once: {} in flight when SQLite stopped",
                Kind::Deliveries.counted(self.leases_taken_back)
            )?;
        }
        if self.finished_deliveries_left > 0 || self.attempts_left > 0 {
            write!(
                f,
                "; left out (no --with-history): {} and {} already finished",
                Kind::Attempts.counted(self.attempts_left),
                Kind::Deliveries.counted(self.finished_deliveries_left)
            )?;
        }
        let orphans: Vec<String> = self
            .orphans
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| k.counted(*n))
            .collect();
        if !orphans.is_empty() {
            write!(
                f,
                "; skipped, their application or endpoint being gone: {}",
                orphans.join(", ")
            )?;
        }
        if let Some(key_id) = &self.sealed_under {
            write!(
                f,
                "; endpoint secrets stay sealed under the source's main key ({key_id}): start hookline on PostgreSQL with it (--encryption-key, or its encryption.key file in the data dir)"
            )?;
        }
        Ok(())
    }
}

/// Copies the SQLite database at `source` (the file) into the PostgreSQL database of
/// `target` (see the module docs), reporting progress to `progress`. The error is one
/// line saying what failed and, for a record, which one.
pub async fn sqlite_to_postgres(
    source: &Path,
    target: &PgSettings,
    options: CopyOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<CopyReport, String> {
    let path = source.to_path_buf();
    let now = crate::now();
    let with_history = options.with_history;
    let (source, plan, sealing) = tokio::task::spawn_blocking(move || {
        let source = Source::open(&path)?;
        let plan = source.plan(with_history)?;
        let sealing = source.sealing()?;
        Ok::<_, String>((source, plan, sealing))
    })
    .await
    .map_err(|e| format!("reading the SQLite database: {e}"))??;
    progress(Progress::Counted {
        total: plan.kinds.iter().map(|k| k.rows).sum(),
    });

    let pool = postgres::connect(target, 1).await?;
    let migrated = postgres::migrate(&pool).await?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| format!("PostgreSQL at {}: {e}", target.target()))?;
    let target_fail =
        |e: tokio_postgres::Error| format!("PostgreSQL: {}", postgres::cause_chain(&e));
    // Repeatable read: the counts before and after see this transaction's writes only,
    // even if some other process writes to the target meanwhile.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(target_fail)?;
    let before = count_target(&tx).await.map_err(target_fail)?;
    let held = |k: Kind| before.iter().find(|(t, _)| *t == k).map_or(0, |(_, n)| *n);
    if !options.allow_non_empty && (held(Kind::Applications) > 0 || held(Kind::EventTypes) > 0) {
        return Err(format!(
            "the target database {} is not empty (it holds {} and {}); copy into an empty database, or pass --allow-non-empty to add to it",
            target.target(),
            Kind::Applications.counted(held(Kind::Applications) as u64),
            Kind::EventTypes.counted(held(Kind::EventTypes) as u64)
        ));
    }

    if let Some(check) = &sealing {
        take_sealing(&tx, check, target).await?;
    }

    // The reader runs on a blocking thread and streams chunks; the writer copies them
    // into one COPY per table. Either side failing stops the other: a writer error drops
    // the receiver, a reader error arrives as an item.
    let (send, mut recv) = tokio::sync::mpsc::channel::<Item>(CHUNKS_AHEAD);
    let reader = tokio::task::spawn_blocking(move || {
        let result = source.read_all(with_history, now, &send);
        if let Err(e) = result {
            let _ = send.blocking_send(Item::Failed(e));
        }
    });
    let written = write_all(&tx, &plan, &mut recv, progress).await;
    drop(recv);
    let _ = reader.await;
    let written = written?;

    progress(Progress::Checking);
    let after = count_target(&tx).await.map_err(target_fail)?;
    for step in &plan.kinds {
        let gained = after
            .iter()
            .find(|(k, _)| *k == step.kind)
            .map_or(0, |(_, n)| *n)
            - held(step.kind);
        let wrote = written.get(&step.kind).copied().unwrap_or(0);
        if wrote != step.rows || gained != step.rows as i64 {
            return Err(format!(
                "{}: the source has {} to copy but {} were written and the target gained {}; nothing was committed",
                step.kind.name(),
                step.rows,
                wrote,
                gained
            ));
        }
    }
    // Fresh statistics, so the first claims on a big copy are planned on real numbers.
    tx.batch_execute("ANALYZE endpoints, deliveries, messages, attempts")
        .await
        .map_err(target_fail)?;
    tx.commit().await.map_err(target_fail)?;

    Ok(CopyReport {
        target: target.target(),
        migrated,
        copied: plan.kinds.iter().map(|k| (k.kind, k.rows)).collect(),
        leases_taken_back: plan.sending,
        finished_deliveries_left: plan.finished_left,
        attempts_left: plan.attempts_left,
        orphans: plan.orphans,
        sealed_under: sealing.map(|c| c.key_id),
    })
}

/// The endpoints' settings are copied sealed, as they are: the target must be sealed
/// under the source's key. A target sealed under another key is refused unless it holds
/// no endpoint (nothing is sealed under its key yet: the source's replaces it).
async fn take_sealing(
    tx: &deadpool_postgres::Transaction<'_>,
    source: &Check,
    target: &PgSettings,
) -> Result<(), String> {
    let fail = |e: tokio_postgres::Error| format!("PostgreSQL: {}", postgres::cause_chain(&e));
    let held = tx
        .query_opt("SELECT key_id FROM sealing WHERE id = 1", &[])
        .await
        .map_err(fail)?
        .map(|r| r.get::<_, String>(0));
    if let Some(key_id) = held.filter(|k| *k != source.key_id) {
        let endpoints: i64 = tx
            .query_one("SELECT count(*) FROM endpoints", &[])
            .await
            .map_err(fail)?
            .get(0);
        if endpoints > 0 {
            return Err(format!(
                "the target database {} seals its endpoints' secrets under key {key_id}, the source under key {}; copy into a database whose hookline uses the source's key (or none yet)",
                target.target(),
                source.key_id
            ));
        }
    }
    tx.execute(
        "INSERT INTO sealing (id, key_id, check_value) VALUES (1, $1, $2)
         ON CONFLICT (id) DO UPDATE SET key_id = excluded.key_id, check_value = excluded.check_value",
        &[&source.key_id, &source.value],
    )
    .await
    .map_err(fail)?;
    Ok(())
}

/// Row counts of every copied table in the target.
async fn count_target(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<Vec<(Kind, i64)>, tokio_postgres::Error> {
    let sql = Kind::ALL
        .iter()
        .map(|k| format!("(SELECT count(*) FROM {})", k.table()))
        .collect::<Vec<_>>()
        .join(", ");
    let row = tx.query_one(&format!("SELECT {sql}"), &[]).await?;
    Kind::ALL
        .iter()
        .enumerate()
        .map(|(i, k)| Ok((*k, row.try_get::<_, i64>(i)?)))
        .collect()
}

/// Writes every kind's rows as they arrive, one binary COPY per table, and then each
/// endpoint's `next_due_at`. Returns the rows written per kind.
async fn write_all(
    tx: &deadpool_postgres::Transaction<'_>,
    plan: &Plan,
    recv: &mut tokio::sync::mpsc::Receiver<Item>,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<std::collections::HashMap<Kind, u64>, String> {
    let mut written = std::collections::HashMap::new();
    let mut endpoint_ids: Vec<String> = Vec::new();
    for step in &plan.kinds {
        let kind = step.kind;
        progress(Progress::Copying(kind));
        let spec = spec(kind);
        let fail = |e: tokio_postgres::Error| copy_error(kind, &e);
        let sink = tx
            .copy_in(&format!(
                "COPY {} ({}) FROM STDIN (FORMAT binary)",
                kind.table(),
                spec.pg_cols
            ))
            .await
            .map_err(fail)?;
        let writer = BinaryCopyInWriter::new(sink, spec.pg_types);
        let mut writer = std::pin::pin!(writer);
        loop {
            match recv.recv().await {
                Some(Item::Rows(k, rows)) if k == kind => {
                    let n = rows.len() as u64;
                    for row in &rows {
                        if kind == Kind::Endpoints {
                            if let Cell::Text(Some(id)) = &row[0] {
                                endpoint_ids.push(id.clone());
                            }
                        }
                        writer.as_mut().write_raw(row.iter()).await.map_err(fail)?;
                    }
                    progress(Progress::Copied(kind, n));
                }
                Some(Item::Done(k)) if k == kind => break,
                Some(Item::Failed(e)) => return Err(e),
                Some(_) => {
                    return Err(format!(
                        "internal error: rows out of order while copying {}",
                        kind.name()
                    ))
                }
                None => {
                    return Err(format!(
                        "the SQLite reader stopped while copying {}",
                        kind.name()
                    ))
                }
            }
        }
        let n = writer.as_mut().finish().await.map_err(fail)?;
        written.insert(kind, n);
    }
    // The claim walks endpoints by `next_due_at`: each copied endpoint's is its earliest
    // due delivery (an index range per endpoint), or none.
    tx.execute(
        "UPDATE endpoints SET next_due_at = due.at
         FROM (SELECT endpoint_id, min(due_at) AS at FROM deliveries
               WHERE endpoint_id = ANY($1) AND due_at IS NOT NULL GROUP BY endpoint_id) AS due
         WHERE endpoints.id = due.endpoint_id",
        &[&endpoint_ids],
    )
    .await
    .map_err(|e| copy_error(Kind::Endpoints, &e))?;
    Ok(written)
}

/// A failed write of `kind`, in one line. The server's DETAIL names the key of a
/// duplicate or dangling row, which is worth saying; for any other error it may quote
/// the whole row (a failing CHECK), secrets included, so it is left out, as it is for
/// tables whose keys are token hashes.
fn copy_error(kind: Kind, e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        return format!(
            "writing {} to PostgreSQL: {}; nothing was committed",
            kind.name(),
            postgres::cause_chain(e)
        );
    };
    let keyed = matches!(
        *db.code(),
        SqlState::UNIQUE_VIOLATION | SqlState::FOREIGN_KEY_VIOLATION
    );
    let safe = !matches!(kind, Kind::ApiTokens | Kind::IdempotencyKeys);
    let detail = match db.detail() {
        Some(d) if keyed && safe => format!(" ({})", d.trim_end_matches('.')),
        _ => String::new(),
    };
    let hint = if *db.code() == SqlState::UNIQUE_VIOLATION {
        "; the target already holds this record, nothing was written"
    } else {
        "; nothing was written"
    };
    format!(
        "writing {} to PostgreSQL: {}{detail}{hint}",
        kind.name(),
        db.message()
    )
}

// --- the source --------------------------------------------------------------------

/// The SQLite database, open read-only inside one read transaction, with its lock held.
struct Source {
    conn: Connection,
    path: PathBuf,
    /// Held until the copy ends: no hookline can serve the file meanwhile.
    _lock: std::fs::File,
}

/// What will be copied, counted in the source's read transaction.
struct Plan {
    kinds: Vec<Step>,
    sending: u64,
    finished_left: u64,
    attempts_left: u64,
    orphans: Vec<(Kind, u64)>,
}

struct Step {
    kind: Kind,
    rows: u64,
}

/// What the reader sends the writer.
enum Item {
    Rows(Kind, Vec<Vec<Cell>>),
    Done(Kind),
    Failed(String),
}

/// The tables a hookline SQLite database has, whatever else it may hold.
const HOOKLINE_TABLES: [&str; 9] = [
    "applications",
    "event_types",
    "endpoints",
    "messages",
    "deliveries",
    "attempts",
    "api_tokens",
    "idempotency_keys",
    "keyed",
];

impl Source {
    /// Opens `path` read-only after checking that it is a hookline SQLite database at the
    /// schema version this binary knows, then takes its lock (refusing if a server holds
    /// it) and starts the read transaction every count and row comes from.
    fn open(path: &Path) -> Result<Source, String> {
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("{shown} does not exist"),
            _ => format!("{shown}: {e}"),
        })?;
        if !meta.is_file() {
            return Err(format!("{shown} is not a file"));
        }
        let mut header = [0u8; 16];
        let is_sqlite = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
            .is_ok()
            && &header == b"SQLite format 3\0";
        if !is_sqlite {
            return Err(format!("{shown} is not an SQLite database"));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| format!("opening {shown}: {e}"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| format!("opening {shown}: {e}"))?;
        check_schema(&conn, path)?;

        // One process per SQLite file (see `SqliteStore::open`): a server holds this lock
        // for as long as it runs, and cannot start while the copy holds it.
        let lock_path = crate::sqlite::lock_path(path);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("opening {}: {e}", lock_path.display()))?;
        lock.try_lock().map_err(|_| {
            format!(
                "a hookline process is serving {shown} (it holds {}); stop it before copying",
                lock_path.display()
            )
        })?;
        conn.execute_batch("BEGIN")
            .map_err(|e| format!("reading {shown}: {e}"))?;
        // The version again, inside the transaction: a server may have migrated the file
        // between the first look and the lock.
        check_schema(&conn, path)?;
        Ok(Source {
            conn,
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The check value of the key the source's secrets are sealed under (none: not
    /// sealed yet; its first server start seals them).
    fn sealing(&self) -> Result<Option<Check>, String> {
        self.conn
            .query_row(
                "SELECT key_id, check_value FROM sealing WHERE id = 1",
                [],
                |r| {
                    Ok(Check {
                        key_id: r.get(0)?,
                        value: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(|e| format!("reading {}: {e}", self.path.display()))
    }

    fn count(&self, sql: &str) -> Result<u64, String> {
        self.conn
            .query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| format!("counting in {}: {e}", self.path.display()))
    }

    /// Counts what will be copied, and what will not.
    fn plan(&self, with_history: bool) -> Result<Plan, String> {
        let mut kinds = Vec::new();
        let mut orphans = Vec::new();
        for kind in Kind::ALL {
            if kind == Kind::Attempts && !with_history {
                continue;
            }
            let spec = spec(kind);
            let rows = self.count(&format!(
                "SELECT count(*) FROM {} AS t WHERE {}",
                kind.table(),
                spec.copyable(with_history)
            ))?;
            if spec.parents.is_some() {
                let all = self.count(&format!(
                    "SELECT count(*) FROM {} AS t WHERE {}",
                    kind.table(),
                    spec.selected(with_history)
                ))?;
                orphans.push((kind, all - rows));
            }
            kinds.push(Step { kind, rows });
        }
        let sending = self.count(&format!(
            "SELECT count(*) FROM deliveries AS t WHERE t.status = 'sending' AND {}",
            spec(Kind::Deliveries).parents.unwrap_or("1")
        ))?;
        let (finished_left, attempts_left) = if with_history {
            (0, 0)
        } else {
            let d = spec(Kind::Deliveries);
            let a = spec(Kind::Attempts);
            (
                self.count(&format!(
                    "SELECT count(*) FROM deliveries AS t
                     WHERE t.status IN ('succeeded', 'failed') AND {}",
                    d.parents.unwrap_or("1")
                ))?,
                self.count(&format!(
                    "SELECT count(*) FROM attempts AS t WHERE {}",
                    a.parents.unwrap_or("1")
                ))?,
            )
        };
        Ok(Plan {
            kinds,
            sending,
            finished_left,
            attempts_left,
            orphans,
        })
    }

    /// Reads every kind in order and sends its rows in chunks, then `Done(kind)`.
    /// Returns early, quietly, if the writer has gone (it failed and says why).
    fn read_all(
        &self,
        with_history: bool,
        now: DateTime<Utc>,
        send: &tokio::sync::mpsc::Sender<Item>,
    ) -> Result<(), String> {
        for kind in Kind::ALL {
            if kind == Kind::Attempts && !with_history {
                continue;
            }
            let spec = spec(kind);
            let sql = format!(
                "SELECT {} FROM {} AS t WHERE {} ORDER BY {}",
                spec.sqlite_cols,
                kind.table(),
                spec.copyable(with_history),
                kind.order()
            );
            let mut stmt = self
                .conn
                .prepare(&sql)
                .map_err(|e| format!("reading {} from SQLite: {e}", kind.name()))?;
            let mut rows = stmt
                .query([])
                .map_err(|e| format!("reading {} from SQLite: {e}", kind.name()))?;
            let mut chunk = Vec::with_capacity(CHUNK);
            loop {
                let row = rows
                    .next()
                    .map_err(|e| format!("reading {} from SQLite: {e}", kind.name()))?;
                let Some(row) = row else { break };
                chunk.push((spec.map)(row, now)?);
                if chunk.len() == CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                    if send.blocking_send(Item::Rows(kind, full)).is_err() {
                        return Ok(());
                    }
                }
            }
            if !chunk.is_empty() && send.blocking_send(Item::Rows(kind, chunk)).is_err() {
                return Ok(());
            }
            if send.blocking_send(Item::Done(kind)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Refuses a database that is not hookline's, or not at this binary's schema version.
fn check_schema(conn: &Connection, path: &Path) -> Result<(), String> {
    let shown = path.display();
    let unreadable = |e: rusqlite::Error| format!("{shown} is not a readable SQLite database: {e}");
    let version = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(unreadable)?;
    let mut missing = Vec::new();
    for table in HOOKLINE_TABLES {
        let found = conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |_| Ok(()),
            )
            .optional()
            .map_err(unreadable)?;
        if found.is_none() {
            missing.push(table);
        }
    }
    // Every version of hookline's schema has its first tables; another program's
    // database may set a user_version of its own, and must never be taken for an old
    // hookline one (and be migrated).
    let first = ["applications", "endpoints", "messages"];
    if version == 0 || missing.iter().any(|t| first.contains(t)) {
        return Err(format!(
            "{shown} is an SQLite database but not hookline's (no hookline schema in it)"
        ));
    }
    let known = crate::sqlite::schema_version() as i64;
    if version > known {
        return Err(format!(
            "{shown} is at hookline schema version {version}, newer than this hookline knows ({known}); copy it with the hookline that wrote it"
        ));
    }
    if version < known {
        return Err(format!(
            "{shown} is at hookline schema version {version}, older than this hookline's ({known}); bring it up to date first with this hookline's `hookline migrate --database-url sqlite://{shown}`, then copy"
        ));
    }
    if !missing.is_empty() {
        return Err(format!(
            "{shown} is not a complete hookline database (no table {})",
            missing.join(", ")
        ));
    }
    Ok(())
}

// --- the rows ------------------------------------------------------------------------

/// One value of a row on its way to PostgreSQL, as the target column's type wants it.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Text(Option<String>),
    Time(Option<DateTime<Utc>>),
    Bool(bool),
    Int(Option<i32>),
    SmallInt(i16),
    BigInt(i64),
    Bytes(Option<Vec<u8>>),
}

impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Text(v) => v.to_sql(ty, out),
            Cell::Time(v) => v.to_sql(ty, out),
            Cell::Bool(v) => v.to_sql(ty, out),
            Cell::Int(v) => v.to_sql(ty, out),
            Cell::SmallInt(v) => v.to_sql(ty, out),
            Cell::BigInt(v) => v.to_sql(ty, out),
            Cell::Bytes(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Which types a cell takes depends on its variant: checked per value below.
        true
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Text(v) => v.to_sql_checked(ty, out),
            Cell::Time(v) => v.to_sql_checked(ty, out),
            Cell::Bool(v) => v.to_sql_checked(ty, out),
            Cell::Int(v) => v.to_sql_checked(ty, out),
            Cell::SmallInt(v) => v.to_sql_checked(ty, out),
            Cell::BigInt(v) => v.to_sql_checked(ty, out),
            Cell::Bytes(v) => v.to_sql_checked(ty, out),
        }
    }
}

/// How one kind is read from SQLite and written to PostgreSQL.
struct Spec {
    /// SQLite columns, selected from the table aliased `t`, in `pg_cols` order.
    sqlite_cols: &'static str,
    pg_cols: &'static str,
    pg_types: &'static [Type],
    /// Which rows of the table are wanted (`with_history`: all).
    wanted: Option<&'static str>,
    /// The condition that the row's parents exist (for tables SQLite no longer checks).
    parents: Option<&'static str>,
    map: fn(&rusqlite::Row, DateTime<Utc>) -> Result<Vec<Cell>, String>,
}

impl Spec {
    /// The rows wanted, parents or not.
    fn selected(&self, with_history: bool) -> &'static str {
        match self.wanted {
            Some(w) if !with_history => w,
            _ => "1",
        }
    }

    /// The rows wanted whose parents exist: those copied.
    fn copyable(&self, with_history: bool) -> String {
        format!(
            "({}) AND ({})",
            self.selected(with_history),
            self.parents.unwrap_or("1")
        )
    }
}

const MESSAGE_HAS_APP: &str = "EXISTS (SELECT 1 FROM applications AS a WHERE a.id = t.app_id)";
const HAS_ENDPOINT_AND_MESSAGE: &str =
    "EXISTS (SELECT 1 FROM endpoints AS e WHERE e.id = t.endpoint_id)
     AND EXISTS (SELECT 1 FROM messages AS m JOIN applications AS a ON a.id = m.app_id
                 WHERE m.id = t.msg_id)";

fn spec(kind: Kind) -> Spec {
    use Type as T;
    match kind {
        Kind::Applications => Spec {
            sqlite_cols: "id, uid, name, throttle_rate, metadata, retry_policy, validate_payloads, created_at, updated_at",
            pg_cols: "id, uid, name, throttle_rate, metadata, retry_policy, validate_payloads, created_at, updated_at",
            pg_types: &[T::TEXT, T::TEXT, T::TEXT, T::INT4, T::TEXT, T::TEXT, T::BOOL, T::TIMESTAMPTZ, T::TIMESTAMPTZ],
            wanted: None,
            parents: None,
            map: |r, _| {
                let id = col(r, 0, "application", "id")?;
                let at = Record::new("application", &id);
                Ok(vec![
                    Cell::Text(Some(id.clone())),
                    Cell::Text(at.opt_text(r, 1, "uid")?),
                    Cell::Text(Some(at.text(r, 2, "name")?)),
                    Cell::Int(at.int(r, 3, "throttle_rate")?),
                    Cell::Text(Some(at.json::<std::collections::BTreeMap<String, String>>(r, 4, "metadata")?)),
                    Cell::Text(at.opt_json::<hookline_retry::RetryPolicy>(r, 5, "retry_policy")?),
                    Cell::Bool(at.get(r, 6, "validate_payloads")?),
                    Cell::Time(Some(at.time(r, 7, "created_at")?)),
                    Cell::Time(Some(at.time(r, 8, "updated_at")?)),
                ])
            },
        },
        Kind::EventTypes => Spec {
            sqlite_cols: "name, description, archived, deprecated, schemas, group_name, feature_flags, validate_payloads, created_at, updated_at",
            pg_cols: "name, description, archived, deprecated, schemas, group_name, feature_flags, validate_payloads, created_at, updated_at",
            pg_types: &[T::TEXT, T::TEXT, T::BOOL, T::BOOL, T::TEXT, T::TEXT, T::TEXT, T::BOOL, T::TIMESTAMPTZ, T::TIMESTAMPTZ],
            wanted: None,
            parents: None,
            map: |r, _| {
                let name = col(r, 0, "event type", "name")?;
                let at = Record::new("event type", &name);
                Ok(vec![
                    Cell::Text(Some(name.clone())),
                    Cell::Text(Some(at.text(r, 1, "description")?)),
                    Cell::Bool(at.get(r, 2, "archived")?),
                    Cell::Bool(at.get(r, 3, "deprecated")?),
                    Cell::Text(at.opt_json::<serde_json::Value>(r, 4, "schemas")?),
                    Cell::Text(at.opt_text(r, 5, "group_name")?),
                    Cell::Text(at.opt_json::<Vec<String>>(r, 6, "feature_flags")?),
                    Cell::Bool(at.get(r, 7, "validate_payloads")?),
                    Cell::Time(Some(at.time(r, 8, "created_at")?)),
                    Cell::Time(Some(at.time(r, 9, "updated_at")?)),
                ])
            },
        },
        Kind::Endpoints => Spec {
            sqlite_cols: "id, app_id, uid, url, disabled, settings, failing_since, created_at, updated_at",
            pg_cols: "id, app_id, uid, url, disabled, settings, failing_since, created_at, updated_at",
            pg_types: &[T::TEXT, T::TEXT, T::TEXT, T::TEXT, T::BOOL, T::TEXT, T::TIMESTAMPTZ, T::TIMESTAMPTZ, T::TIMESTAMPTZ],
            wanted: None,
            parents: None,
            map: |r, _| {
                let id = col(r, 0, "endpoint", "id")?;
                let at = Record::new("endpoint", &id);
                Ok(vec![
                    Cell::Text(Some(id.clone())),
                    Cell::Text(Some(at.text(r, 1, "app_id")?)),
                    Cell::Text(at.opt_text(r, 2, "uid")?),
                    Cell::Text(Some(at.text(r, 3, "url")?)),
                    Cell::Bool(at.get(r, 4, "disabled")?),
                    // Holds the secrets, sealed: checked, never quoted, copied as is.
                    Cell::Text(Some(at.settings(r, 5)?)),
                    Cell::Time(at.opt_time(r, 6, "failing_since")?),
                    Cell::Time(Some(at.time(r, 7, "created_at")?)),
                    Cell::Time(Some(at.time(r, 8, "updated_at")?)),
                ])
            },
        },
        Kind::ApiTokens => Spec {
            sqlite_cols:
                "token_hash, app_id, read_only, expires_at, created_at, name, prefix, last_used_at",
            pg_cols:
                "token_hash, app_id, read_only, expires_at, created_at, name, prefix, last_used_at",
            pg_types: &[
                T::BYTEA,
                T::TEXT,
                T::BOOL,
                T::TIMESTAMPTZ,
                T::TIMESTAMPTZ,
                T::TEXT,
                T::TEXT,
                T::TIMESTAMPTZ,
            ],
            wanted: None,
            parents: None,
            map: |r, _| {
                // A token is named by its application only: its hash is as good as a
                // password to whoever has the database.
                let app = Record::new("API token", "?").opt_text(r, 1, "app_id")?;
                let owner = app.as_deref().map_or("(admin)".to_string(), |a| format!("of {a}"));
                let at = Record::new("API token", &owner);
                let hash: Vec<u8> = at.get(r, 0, "token_hash")?;
                if hash.len() != 32 {
                    return Err(at.fail("token_hash", "is not a SHA-256 hash"));
                }
                Ok(vec![
                    Cell::Bytes(Some(hash)),
                    Cell::Text(app),
                    Cell::Bool(at.get(r, 2, "read_only")?),
                    Cell::Time(at.opt_time(r, 3, "expires_at")?),
                    Cell::Time(Some(at.time(r, 4, "created_at")?)),
                    Cell::Text(at.opt_text(r, 5, "name")?),
                    Cell::Text(at.opt_text(r, 6, "prefix")?),
                    Cell::Time(at.opt_time(r, 7, "last_used_at")?),
                ])
            },
        },
        Kind::IdempotencyKeys => Spec {
            sqlite_cols: "scope, key, state, status, body, created_at",
            pg_cols: "scope, key, state, status, body, created_at",
            pg_types: &[T::TEXT, T::TEXT, T::TEXT, T::INT4, T::BYTEA, T::TIMESTAMPTZ],
            wanted: None,
            parents: None,
            map: |r, _| {
                // The scope starts with a token's fingerprint: named by key only.
                let key = col(r, 1, "idempotency key", "key")?;
                let at = Record::new("idempotency key", &key);
                Ok(vec![
                    Cell::Text(Some(at.text(r, 0, "scope")?)),
                    Cell::Text(Some(key.clone())),
                    Cell::Text(Some(at.text(r, 2, "state")?)),
                    Cell::Int(at.int(r, 3, "status")?),
                    Cell::Bytes(at.get(r, 4, "body")?),
                    Cell::Time(Some(at.time(r, 5, "created_at")?)),
                ])
            },
        },
        Kind::Messages => Spec {
            sqlite_cols: "id, app_id, event_id, event_type, payload, channels, tags, created_at, deliver_at, payload_expires_at",
            pg_cols: "id, app_id, event_id, event_type, payload, channels, tags, created_at, deliver_at, payload_expires_at",
            pg_types: &[T::TEXT, T::TEXT, T::TEXT, T::TEXT, T::TEXT, T::TEXT, T::TEXT, T::TIMESTAMPTZ, T::TIMESTAMPTZ, T::TIMESTAMPTZ],
            wanted: None,
            parents: Some(MESSAGE_HAS_APP),
            map: |r, _| {
                let id = col(r, 0, "message", "id")?;
                let at = Record::new("message", &id);
                Ok(vec![
                    Cell::Text(Some(id.clone())),
                    Cell::Text(Some(at.text(r, 1, "app_id")?)),
                    Cell::Text(at.opt_text(r, 2, "event_id")?),
                    Cell::Text(Some(at.text(r, 3, "event_type")?)),
                    // The exact bytes received: copied as they are, never re-serialized.
                    Cell::Text(Some(at.text(r, 4, "payload")?)),
                    Cell::Text(at.opt_json::<Vec<String>>(r, 5, "channels")?),
                    Cell::Text(at.opt_json::<Vec<String>>(r, 6, "tags")?),
                    Cell::Time(Some(at.time(r, 7, "created_at")?)),
                    Cell::Time(at.opt_time(r, 8, "deliver_at")?),
                    Cell::Time(at.opt_time(r, 9, "payload_expires_at")?),
                ])
            },
        },
        Kind::Deliveries => Spec {
            sqlite_cols: "t.msg_id, t.endpoint_id, t.app_id, t.status, t.attempts, t.trigger, t.scheduled_at, t.due_at, t.created_at, t.updated_at",
            pg_cols: "msg_id, endpoint_id, app_id, status, attempts, manual, scheduled_at, due_at, lease_token, created_at, updated_at",
            pg_types: &[T::TEXT, T::TEXT, T::TEXT, T::TEXT, T::INT4, T::BOOL, T::TIMESTAMPTZ, T::TIMESTAMPTZ, T::TEXT, T::TIMESTAMPTZ, T::TIMESTAMPTZ],
            wanted: Some("t.status IN ('pending', 'sending')"),
            parents: Some(HAS_ENDPOINT_AND_MESSAGE),
            map: |r, now| {
                let msg = col(r, 0, "delivery", "msg_id")?;
                let ep = col(r, 1, "delivery", "endpoint_id")?;
                let at = Record::new("delivery", &format!("of {msg} to {ep}"));
                let status = at.text(r, 3, "status")?;
                let attempts = at.int(r, 4, "attempts")?;
                let manual = match at.get::<i64>(r, 5, "trigger")? {
                    0 => false,
                    1 => true,
                    _ => return Err(at.fail("trigger", "is neither 0 (scheduled) nor 1 (manual)")),
                };
                let scheduled = at.time(r, 6, "scheduled_at")?;
                let due = at.opt_time(r, 7, "due_at")?;
                let created = at.time(r, 8, "created_at")?;
                let updated = at.time(r, 9, "updated_at")?;
                // In flight when SQLite stopped: handed back, due now (what SQLite's
                // own next start does), since the attempt's outcome is unknown.
                let (status, due, updated) = match status.as_str() {
                    "sending" => ("pending".to_string(), Some(now), now),
                    "pending" if due.is_none() => {
                        return Err(at.fail("due_at", "is empty for a pending delivery"))
                    }
                    "pending" | "succeeded" | "failed" => (status, due, updated),
                    _ => return Err(at.fail("status", "is no delivery state")),
                };
                Ok(vec![
                    Cell::Text(Some(msg.clone())),
                    Cell::Text(Some(ep.clone())),
                    Cell::Text(Some(at.text(r, 2, "app_id")?)),
                    Cell::Text(Some(status)),
                    Cell::Int(attempts),
                    Cell::Bool(manual),
                    Cell::Time(Some(scheduled)),
                    Cell::Time(due),
                    Cell::Text(None),
                    Cell::Time(Some(created)),
                    Cell::Time(Some(updated)),
                ])
            },
        },
        Kind::Attempts => Spec {
            sqlite_cols: "t.id, t.app_id, t.msg_id, t.endpoint_id, t.url, t.attempted_at, t.status_code, t.duration_ms, t.succeeded, t.error_kind, t.response, t.trigger",
            pg_cols: "id, app_id, msg_id, endpoint_id, url, attempted_at, status_code, duration_ms, succeeded, error_kind, response, manual",
            pg_types: &[T::TEXT, T::TEXT, T::TEXT, T::TEXT, T::TEXT, T::TIMESTAMPTZ, T::INT4, T::INT8, T::BOOL, T::TEXT, T::TEXT, T::BOOL],
            wanted: None,
            parents: Some(HAS_ENDPOINT_AND_MESSAGE),
            map: |r, _| {
                let id = col(r, 0, "attempt", "id")?;
                let at = Record::new("attempt", &id);
                let manual = match at.get::<i64>(r, 11, "trigger")? {
                    0 => false,
                    1 => true,
                    _ => return Err(at.fail("trigger", "is neither 0 (scheduled) nor 1 (manual)")),
                };
                Ok(vec![
                    Cell::Text(Some(id.clone())),
                    Cell::Text(Some(at.text(r, 1, "app_id")?)),
                    Cell::Text(Some(at.text(r, 2, "msg_id")?)),
                    Cell::Text(Some(at.text(r, 3, "endpoint_id")?)),
                    Cell::Text(Some(at.text(r, 4, "url")?)),
                    Cell::Time(Some(at.time(r, 5, "attempted_at")?)),
                    Cell::Int(at.int(r, 6, "status_code")?),
                    Cell::BigInt(at.get(r, 7, "duration_ms")?),
                    Cell::Bool(at.get(r, 8, "succeeded")?),
                    Cell::Text(at.opt_text(r, 9, "error_kind")?),
                    // An excerpt of what the receiver answered: PostgreSQL text cannot
                    // hold a NUL, shown as a replacement character instead.
                    Cell::Text(Some(
                        at.get::<String>(r, 10, "response")?
                            .replace('\0', "\u{FFFD}"),
                    )),
                    Cell::Bool(manual),
                ])
            },
        },
        // Under a shard of their own (see `stats`): live processes write 0 to 15, so
        // the copied counts add to a target's own instead of colliding with them.
        Kind::AttemptStats => Spec {
            sqlite_cols: "t.scope, t.span, t.start, t.bucket, t.succeeded, t.failed",
            pg_cols: "scope, span, start, bucket, shard, succeeded, failed",
            pg_types: &[T::TEXT, T::INT4, T::TIMESTAMPTZ, T::INT2, T::INT2, T::INT8, T::INT8],
            wanted: None,
            parents: None,
            map: |r, _| {
                let scope = col(r, 0, "row of attempt statistics", "scope")?;
                let at = Record::new("row of attempt statistics", &scope);
                let bucket: i64 = at.get(r, 3, "bucket")?;
                if !(0..crate::stats::BUCKETS as i64).contains(&bucket) {
                    return Err(at.fail("bucket", "is not a duration bucket (0 to 63)"));
                }
                Ok(vec![
                    Cell::Text(Some(scope.clone())),
                    Cell::Int(at.int(r, 1, "span")?),
                    Cell::Time(Some(at.time(r, 2, "start")?)),
                    Cell::SmallInt(bucket as i16),
                    Cell::SmallInt(crate::stats::COPIED_SHARD),
                    Cell::BigInt(at.get(r, 4, "succeeded")?),
                    Cell::BigInt(at.get(r, 5, "failed")?),
                ])
            },
        },
    }
}

/// Reads text column `idx` of a record not yet named by its id (the id itself).
fn col(r: &rusqlite::Row, idx: usize, what: &str, column: &str) -> Result<String, String> {
    Record::new(what, "?").text(r, idx, column)
}

/// The record a row holds, for errors that name it: `endpoint ep_...: settings ...`.
struct Record {
    name: String,
}

impl Record {
    fn new(what: &str, id: &str) -> Record {
        Record {
            name: format!("{what} {id}"),
        }
    }

    fn fail(&self, column: &str, why: &str) -> String {
        format!("{}: {column} {why}", self.name)
    }

    /// A column as `T`. rusqlite's errors name the column and the types, never the value.
    fn get<T: rusqlite::types::FromSql>(
        &self,
        r: &rusqlite::Row,
        idx: usize,
        column: &str,
    ) -> Result<T, String> {
        r.get(idx)
            .map_err(|e| self.fail(column, &format!("cannot be read: {e}")))
    }

    /// A text column. PostgreSQL's text cannot hold a NUL character, SQLite's can.
    fn text(&self, r: &rusqlite::Row, idx: usize, column: &str) -> Result<String, String> {
        let v: String = self.get(r, idx, column)?;
        self.no_nul(v, column)
    }

    fn opt_text(
        &self,
        r: &rusqlite::Row,
        idx: usize,
        column: &str,
    ) -> Result<Option<String>, String> {
        let v: Option<String> = self.get(r, idx, column)?;
        v.map(|v| self.no_nul(v, column)).transpose()
    }

    fn no_nul(&self, v: String, column: &str) -> Result<String, String> {
        if v.contains('\0') {
            Err(self.fail(
                column,
                "holds a NUL character, which PostgreSQL text cannot hold",
            ))
        } else {
            Ok(v)
        }
    }

    /// An INTEGER column that PostgreSQL keeps as `integer`.
    fn int(&self, r: &rusqlite::Row, idx: usize, column: &str) -> Result<Option<i32>, String> {
        let v: Option<i64> = self.get(r, idx, column)?;
        v.map(|v| {
            i32::try_from(v).map_err(|_| self.fail(column, "is out of PostgreSQL's integer range"))
        })
        .transpose()
    }

    /// A time in unix milliseconds.
    fn time(&self, r: &rusqlite::Row, idx: usize, column: &str) -> Result<DateTime<Utc>, String> {
        self.opt_time(r, idx, column)?
            .ok_or_else(|| self.fail(column, "is empty"))
    }

    fn opt_time(
        &self,
        r: &rusqlite::Row,
        idx: usize,
        column: &str,
    ) -> Result<Option<DateTime<Utc>>, String> {
        let v: Option<i64> = self.get(r, idx, column)?;
        v.map(|ms| {
            DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| self.fail(column, "is not a time hookline can represent"))
        })
        .transpose()
    }

    /// A JSON document, checked to be what this hookline reads as `T` and copied as the
    /// same text. A failure says where in the document, never what is there (it may be
    /// a secret).
    fn json<T: serde::de::DeserializeOwned>(
        &self,
        r: &rusqlite::Row,
        idx: usize,
        column: &str,
    ) -> Result<String, String> {
        let text: String = self.get(r, idx, column)?;
        self.check_json::<T>(&text, column)?;
        Ok(text)
    }

    /// An endpoint's stored settings, checked without opening their sealed part.
    fn settings(&self, r: &rusqlite::Row, idx: usize) -> Result<String, String> {
        let text: String = self.get(r, idx, "settings")?;
        sealing::check_stored(&text)
            .map_err(|why| self.fail("settings", why.trim_start_matches("settings: ")))?;
        Ok(text)
    }

    fn opt_json<T: serde::de::DeserializeOwned>(
        &self,
        r: &rusqlite::Row,
        idx: usize,
        column: &str,
    ) -> Result<Option<String>, String> {
        let text: Option<String> = self.get(r, idx, column)?;
        if let Some(t) = &text {
            self.check_json::<T>(t, column)?;
        }
        Ok(text)
    }

    fn check_json<T: serde::de::DeserializeOwned>(
        &self,
        text: &str,
        column: &str,
    ) -> Result<(), String> {
        serde_json::from_str::<T>(text).map(drop).map_err(|e| {
            let what = match e.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    "is not valid JSON"
                }
                _ => "is JSON this hookline cannot read",
            };
            self.fail(
                column,
                &format!("{what} (line {}, column {})", e.line(), e.column()),
            )
        })
    }
}

#[cfg(test)]
#[path = "copy_tests.rs"]
mod tests;
