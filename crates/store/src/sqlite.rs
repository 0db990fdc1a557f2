//! The embedded SQLite backend: one file in the data dir, WAL, zero setup.
//!
//! SQLite allows one writer at a time, so all writes go to a single writer thread that
//! owns the write connection and **group-commits**: it takes every write waiting in its
//! queue, runs each inside its own savepoint of one transaction, and commits once. The
//! commit itself does not fsync (`synchronous=NORMAL`); a sync thread fsyncs the WAL
//! after it and only then acknowledges the group's durable writes, while the writer
//! already runs the next group. So a burst of N writes costs one fsync, not N, the disk
//! flush never stalls the writer, and no durable write is acknowledged before it is on
//! disk. Delivery claims are acknowledged at commit (a lost claim just makes its
//! delivery due again), unless they could have seen a write that is not on disk yet: no
//! delivery leaves before its message is durable. Reads run on a small pool
//! of read-only connections on the blocking thread pool; WAL lets them proceed while the
//! writer writes.
//!
//! This is the only module that knows SQL dialect details of SQLite; nothing outside it
//! may assume a single writer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock, Weak};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Row};

use std::collections::HashMap;

use crate::*;

/// Most writes one commit may carry; bounds the latency a single commit adds.
const MAX_GROUP: usize = 512;
/// Read connections kept open between reads (opening one re-reads the schema).
const MAX_IDLE_READERS: usize = 32;
/// How often the checkpoint thread copies the WAL back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
/// While the disk is full and no write comes, how often the writer tries a small write of
/// its own to find out whether space is back (see [`DiskState`]).
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// WAL length (frames, ~4 KiB each) past which the writer itself finishes the checkpoint
/// so that its next commit starts the WAL over from the beginning, see [`writer_loop`].
const WAL_RESTART_FRAMES: i32 = 2048;

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
/// Never edit an entry that has shipped: add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the management API's records.
    r#"
    CREATE TABLE applications (
        id            TEXT PRIMARY KEY,
        uid           TEXT UNIQUE,
        name          TEXT NOT NULL,
        throttle_rate INTEGER,
        metadata      TEXT NOT NULL,          -- JSON object of strings
        retry_policy  TEXT,                   -- JSON, hookline_retry::RetryPolicy
        created_at    INTEGER NOT NULL,       -- unix ms
        updated_at    INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE event_types (
        name          TEXT PRIMARY KEY,
        description   TEXT NOT NULL,
        archived      INTEGER NOT NULL CHECK (archived IN (0, 1)),
        deprecated    INTEGER NOT NULL CHECK (deprecated IN (0, 1)),
        schemas       TEXT,                   -- JSON: version -> JSON Schema
        group_name    TEXT,
        feature_flags TEXT,                   -- JSON array
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE endpoints (
        id         TEXT PRIMARY KEY,
        app_id     TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
        uid        TEXT,
        url        TEXT NOT NULL,
        disabled   INTEGER NOT NULL CHECK (disabled IN (0, 1)),
        settings   TEXT NOT NULL,             -- JSON, model::EndpointSettings
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        UNIQUE (app_id, uid)
    ) STRICT;
    -- Listing an app's endpoints walks this index in id order.
    CREATE INDEX endpoints_by_app ON endpoints (app_id, id);

    CREATE TABLE messages (
        id         TEXT PRIMARY KEY,
        app_id     TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
        event_id   TEXT,
        event_type TEXT NOT NULL,
        payload    TEXT NOT NULL,             -- the exact bytes received and delivered
        channels   TEXT,                      -- JSON array
        tags       TEXT,                      -- JSON array
        created_at INTEGER NOT NULL,
        -- eventId is the sender's idempotency key: unique per app (NULLs never collide).
        UNIQUE (app_id, event_id)
    ) STRICT;
    CREATE INDEX messages_by_app ON messages (app_id, id);

    CREATE TABLE api_tokens (
        token_hash BLOB PRIMARY KEY,          -- SHA-256 of the token text; never the text
        app_id     TEXT REFERENCES applications (id) ON DELETE CASCADE,
        expires_at INTEGER,
        created_at INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE idempotency_keys (
        scope      TEXT NOT NULL,             -- who asked and what for (token + route)
        key        TEXT NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('pending', 'done')),
        status     INTEGER,
        body       BLOB,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (scope, key)
    ) STRICT;
    CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
    "#,
    // 2: deliveries and the attempt log.
    r#"
    -- The dispatcher picks endpoints by when their earliest delivery falls due, then that
    -- endpoint's due deliveries: two index walks, never a scan of the backlog, and one
    -- busy endpoint cannot fill a claim batch that others are waiting behind.
    ALTER TABLE endpoints ADD COLUMN next_due_at INTEGER;      -- NULL: nothing queued
    ALTER TABLE endpoints ADD COLUMN failing_since INTEGER;    -- first failure since a success
    CREATE INDEX endpoints_due ON endpoints (next_due_at)
        WHERE next_due_at IS NOT NULL AND disabled = 0;

    -- The state machine (docs/delivery-states.md); CHECKs keep the columns consistent.
    CREATE TABLE deliveries (
        id           INTEGER PRIMARY KEY,
        app_id       TEXT NOT NULL,
        msg_id       TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        endpoint_id  TEXT NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
        status       TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'succeeded', 'failed')),
        attempts     INTEGER NOT NULL CHECK (attempts >= 0),
        trigger      INTEGER NOT NULL CHECK (trigger IN (0, 1)),  -- 0 scheduled, 1 manual
        scheduled_at INTEGER NOT NULL,   -- when the current/next attempt is due by policy
        due_at       INTEGER,            -- pending: scheduled_at; sending: lease expiry
        lease_token  TEXT,
        created_at   INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL,
        UNIQUE (msg_id, endpoint_id),
        CHECK ((status IN ('pending', 'sending')) = (due_at IS NOT NULL)),
        CHECK ((status = 'sending') = (lease_token IS NOT NULL))
    ) STRICT;
    -- Column order matches the claim: one endpoint's due work, earliest first.
    CREATE INDEX deliveries_due ON deliveries (endpoint_id, due_at) WHERE due_at IS NOT NULL;
    CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, msg_id);

    CREATE TABLE attempts (
        id           TEXT PRIMARY KEY,
        app_id       TEXT NOT NULL,
        msg_id       TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        endpoint_id  TEXT NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
        url          TEXT NOT NULL,
        attempted_at INTEGER NOT NULL,
        status_code  INTEGER,            -- NULL: no HTTP response
        duration_ms  INTEGER NOT NULL,
        succeeded    INTEGER NOT NULL CHECK (succeeded IN (0, 1)),
        error_kind   TEXT,
        response     TEXT NOT NULL,      -- excerpt of at most 4 KiB, or the error
        trigger      INTEGER NOT NULL CHECK (trigger IN (0, 1))
    ) STRICT;
    CREATE INDEX attempts_by_msg ON attempts (msg_id, id);
    CREATE INDEX attempts_by_endpoint ON attempts (endpoint_id, id);
    "#,
    // 3: scheduled messages and read-only portal tokens.
    r#"
    ALTER TABLE messages ADD COLUMN deliver_at INTEGER;     -- NULL: deliver at once
    ALTER TABLE api_tokens ADD COLUMN read_only INTEGER NOT NULL DEFAULT 0
        CHECK (read_only IN (0, 1));
    "#,
    // 4: payload validation against event type schemas, per app or per event type.
    r#"
    ALTER TABLE applications ADD COLUMN validate_payloads INTEGER NOT NULL DEFAULT 0
        CHECK (validate_payloads IN (0, 1));
    ALTER TABLE event_types ADD COLUMN validate_payloads INTEGER NOT NULL DEFAULT 0
        CHECK (validate_payloads IN (0, 1));
    "#,
    // 5: eventId uniqueness only where there is an eventId. The table constraint also
    // indexed every message without one, under its app: a page written per message for
    // nothing (a sixth of the WAL pages of a delivered message, see BENCHMARKS.md).
    // SQLite cannot drop a table constraint, so the table is rebuilt (foreign keys are
    // off while migrations run, and checked before each commits).
    r#"
    CREATE TABLE messages_v5 (
        id         TEXT PRIMARY KEY,
        app_id     TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
        event_id   TEXT,
        event_type TEXT NOT NULL,
        payload    TEXT NOT NULL,             -- the exact bytes received and delivered
        channels   TEXT,                      -- JSON array
        tags       TEXT,                      -- JSON array
        created_at INTEGER NOT NULL,
        deliver_at INTEGER                    -- NULL: deliver at once
    ) STRICT;
    INSERT INTO messages_v5 (id, app_id, event_id, event_type, payload, channels, tags, created_at, deliver_at)
        SELECT id, app_id, event_id, event_type, payload, channels, tags, created_at, deliver_at
        FROM messages;
    DROP TABLE messages;
    ALTER TABLE messages_v5 RENAME TO messages;
    CREATE INDEX messages_by_app ON messages (app_id, id);
    -- eventId is the sender's idempotency key: unique per app.
    CREATE UNIQUE INDEX messages_by_event_id ON messages (app_id, event_id)
        WHERE event_id IS NOT NULL;
    "#,
    // 6: the listings by tenant (an application's messages, an endpoint's deliveries and
    // attempts) read key tables filled in batches instead of indexes updated with every
    // row (see `Keyed`). Those indexes took one scattered page per row at every commit;
    // foreign keys that needed them to find children (app -> messages, endpoint ->
    // deliveries and attempts) go too: deleting an application or an endpoint removes
    // its rows itself. Tables are rebuilt keeping their rowids.
    r#"
    CREATE TABLE keyed (
        name TEXT PRIMARY KEY,                -- the keyed table
        upto INTEGER NOT NULL                 -- its rows up to this rowid are in its keys
    ) STRICT;
    CREATE TABLE message_keys (
        tenant TEXT NOT NULL, k TEXT NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (tenant, k)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE delivery_keys (
        tenant TEXT NOT NULL, k TEXT NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (tenant, k)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE attempt_keys (
        tenant TEXT NOT NULL, k TEXT NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (tenant, k)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE messages_v6 (
        id         TEXT PRIMARY KEY,
        app_id     TEXT NOT NULL,
        event_id   TEXT,
        event_type TEXT NOT NULL,
        payload    TEXT NOT NULL,             -- the exact bytes received and delivered
        channels   TEXT,                      -- JSON array
        tags       TEXT,                      -- JSON array
        created_at INTEGER NOT NULL,
        deliver_at INTEGER                    -- NULL: deliver at once
    ) STRICT;
    INSERT INTO messages_v6 (rowid, id, app_id, event_id, event_type, payload, channels, tags, created_at, deliver_at)
        SELECT rowid, id, app_id, event_id, event_type, payload, channels, tags, created_at, deliver_at
        FROM messages;
    DROP TABLE messages;
    ALTER TABLE messages_v6 RENAME TO messages;
    CREATE UNIQUE INDEX messages_by_event_id ON messages (app_id, event_id)
        WHERE event_id IS NOT NULL;

    CREATE TABLE deliveries_v6 (
        id           INTEGER PRIMARY KEY,
        app_id       TEXT NOT NULL,
        msg_id       TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        endpoint_id  TEXT NOT NULL,
        status       TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'succeeded', 'failed')),
        attempts     INTEGER NOT NULL CHECK (attempts >= 0),
        trigger      INTEGER NOT NULL CHECK (trigger IN (0, 1)),  -- 0 scheduled, 1 manual
        scheduled_at INTEGER NOT NULL,   -- when the current/next attempt is due by policy
        due_at       INTEGER,            -- pending: scheduled_at; sending: lease expiry
        lease_token  TEXT,
        created_at   INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL,
        UNIQUE (msg_id, endpoint_id),
        CHECK ((status IN ('pending', 'sending')) = (due_at IS NOT NULL)),
        CHECK ((status = 'sending') = (lease_token IS NOT NULL))
    ) STRICT;
    INSERT INTO deliveries_v6 SELECT * FROM deliveries;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_v6 RENAME TO deliveries;
    CREATE INDEX deliveries_due ON deliveries (endpoint_id, due_at) WHERE due_at IS NOT NULL;

    CREATE TABLE attempts_v6 (
        id           TEXT PRIMARY KEY,
        app_id       TEXT NOT NULL,
        msg_id       TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        endpoint_id  TEXT NOT NULL,
        url          TEXT NOT NULL,
        attempted_at INTEGER NOT NULL,
        status_code  INTEGER,            -- NULL: no HTTP response
        duration_ms  INTEGER NOT NULL,
        succeeded    INTEGER NOT NULL CHECK (succeeded IN (0, 1)),
        error_kind   TEXT,
        response     TEXT NOT NULL,      -- excerpt of at most 4 KiB, or the error
        trigger      INTEGER NOT NULL CHECK (trigger IN (0, 1))
    ) STRICT;
    INSERT INTO attempts_v6 (rowid, id, app_id, msg_id, endpoint_id, url, attempted_at, status_code,
                             duration_ms, succeeded, error_kind, response, trigger)
        SELECT rowid, id, app_id, msg_id, endpoint_id, url, attempted_at, status_code,
               duration_ms, succeeded, error_kind, response, trigger
        FROM attempts;
    DROP TABLE attempts;
    ALTER TABLE attempts_v6 RENAME TO attempts;
    CREATE INDEX attempts_by_msg ON attempts (msg_id, id);

    INSERT INTO message_keys SELECT app_id, id, rowid FROM messages;
    INSERT INTO delivery_keys SELECT endpoint_id, msg_id, id FROM deliveries;
    INSERT INTO attempt_keys SELECT endpoint_id, id, rowid FROM attempts;
    INSERT INTO keyed (name, upto) VALUES
        ('messages', coalesce((SELECT max(rowid) FROM messages), 0)),
        ('deliveries', coalesce((SELECT max(rowid) FROM deliveries), 0)),
        ('attempts', coalesce((SELECT max(rowid) FROM attempts), 0));
    "#,
    // 7: failing endpoints (an attempt failed since their last success) are claimed
    // apart from healthy ones, within the room the worker has for them: each kind gets
    // its own walk by next_due_at, so however many failing endpoints are due, they never
    // stand in the healthy ones' walk (nor the other way round). An endpoint is in one of
    // the two indexes, so keeping next_due_at up to date costs what it did.
    r#"
    DROP INDEX endpoints_due;
    CREATE INDEX endpoints_due ON endpoints (next_due_at)
        WHERE next_due_at IS NOT NULL AND disabled = 0 AND failing_since IS NULL;
    CREATE INDEX endpoints_due_failing ON endpoints (next_due_at)
        WHERE next_due_at IS NOT NULL AND disabled = 0 AND failing_since IS NOT NULL;
    "#,
];

type Finisher = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Makes everything written to the WAL so far durable (`fdatasync` of the WAL file).
type SyncFn = Box<dyn FnMut() -> std::io::Result<()> + Send>;
type JobFn = Box<dyn FnOnce(&Connection) -> (Ran, Finisher) + Send>;

/// How a write's statements went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ran {
    Ok,
    Failed,
    /// Failed because the disk is full.
    Full,
}

impl Ran {
    fn of<T>(r: &Result<T>) -> Self {
        match r {
            Ok(_) => Self::Ok,
            Err(StoreError::StorageFull(_)) => Self::Full,
            Err(_) => Self::Failed,
        }
    }
}

/// Whether the disk holding the database is full, as the writes found it: set by a write
/// refused for lack of space (SQLite's `SQLITE_FULL`, an I/O error while the disk has no
/// room, `ENOSPC` from the WAL's fsync), cleared by the next commit that wrote to the WAL.
/// Logged once per episode, a WARN when writes start failing and an INFO when they
/// succeed again, never per refused write: a full disk refuses every write, and a line
/// each would bury the one that matters.
struct DiskState {
    full: AtomicBool,
    /// The database file, for the log lines.
    path: PathBuf,
}

impl DiskState {
    fn new(path: PathBuf) -> Self {
        Self {
            full: AtomicBool::new(false),
            path,
        }
    }

    fn is_full(&self) -> bool {
        self.full.load(Ordering::SeqCst)
    }

    /// `writes` writes were refused because the disk is full.
    fn refused(&self, writes: usize, cause: &str) {
        metrics::counter!("hookline_storage_full_writes_refused_total").increment(writes as u64);
        if !self.full.swap(true, Ordering::SeqCst) {
            metrics::gauge!("hookline_storage_full").set(1.0);
            tracing::warn!(
                database = %self.path.display(),
                error = cause,
                "the disk holding the database is full: writes are refused (the API answers \
                 503 storage_full) until space is freed, then resume by themselves. Attempts \
                 made meanwhile cannot be recorded: their deliveries are tried again once their \
                 lease expires (at-least-once: a receiver may see them twice)"
            );
        }
    }

    /// A commit wrote to the WAL: there is room again.
    fn wrote(&self) {
        if self.full.swap(false, Ordering::SeqCst) {
            metrics::gauge!("hookline_storage_full").set(0.0);
            tracing::info!(
                database = %self.path.display(),
                "writes succeed again: the disk holding the database has room"
            );
        }
    }
}

/// A write: runs its statements, reports whether they succeeded (else its savepoint is
/// rolled back) and returns what to do once the group's commit is known.
struct WriteJob {
    run: JobFn,
    /// Whether the write must survive a power loss once acknowledged. Claims and
    /// hand-backs need not: losing one only makes the delivery due again (at-least-once
    /// holds; a restart hands back every claim anyway), so they are acknowledged at
    /// commit, before the fsync. Any later fsync makes them durable too: WAL commits
    /// reach the disk in order. But a claim may have picked deliveries of a message
    /// committed in the same group, and those must not be attempted before that message
    /// is durable: in a group with durable writes, the others wait for its fsync too.
    durable: bool,
}

/// What the writer thread waits for: writes, and word from the sync thread.
enum ToWriter {
    Write(WriteJob),
    /// The sync thread finished an fsync and waits for the next commit.
    Synced,
    /// The store was dropped: commit what is open and stop. (The sync thread holds a
    /// sender too, so the channel alone never closes.)
    Stop,
}

/// Durability of a write, see [`WriteJob::durable`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    Full,
    Lazy,
}

pub struct SqliteStore {
    /// Held for the store's lifetime: one process owns an SQLite database.
    _lock: std::fs::File,
    path: PathBuf,
    writer: mpsc::Sender<ToWriter>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Dropping it stops the checkpoint thread.
    _checkpointer: mpsc::Sender<()>,
    /// Applications and event types by the key they were looked up with: every create
    /// message reads both, and they rarely change.
    apps: LookupCache<Application>,
    event_types: LookupCache<EventType>,
    /// The worker fresh deliveries are handed to, if one is attached.
    intake: RwLock<Option<Weak<dyn Intake>>>,
    disk: Arc<DiskState>,
}

/// Point lookups of rarely changing records, kept in memory (misses too) so the hot path
/// (create message) does not read them from SQLite each time. Exact, not eventually
/// consistent: this process is the only writer of the file (the lock file sees to it),
/// and every write of such a record clears the cache once it has committed. A lookup
/// that raced with a write is not kept: the write bumps the generation, and a result is
/// stored only if the generation is the one seen before the lookup started.
///
/// Memory is bounded by an estimate of each entry's size (its JSON text), not by a count:
/// records can carry large metadata or schemas. An entry over a sixteenth of the budget
/// is not kept; a full cache starts over.
struct LookupCache<T> {
    inner: Mutex<CacheInner<T>>,
    /// Bytes the entries may take, by [`LookupCache::weigh`].
    budget: usize,
    weigh: fn(&T) -> usize,
}

struct CacheInner<T> {
    generation: u64,
    bytes: usize,
    entries: HashMap<String, Option<T>>,
}

impl<T: Clone> LookupCache<T> {
    fn new(budget: usize, weigh: fn(&T) -> usize) -> Self {
        Self {
            inner: Mutex::new(CacheInner {
                generation: 0,
                bytes: 0,
                entries: HashMap::new(),
            }),
            budget,
            weigh,
        }
    }

    /// The cached result for `key` (`Some(None)`: known not to exist), else the
    /// generation to hand back to [`put`](Self::put) with what the lookup found.
    fn get(&self, key: &str) -> Result<Option<T>, u64> {
        let inner = self.inner.lock().expect("cache poisoned");
        inner.entries.get(key).cloned().ok_or(inner.generation)
    }

    fn put(&self, generation: u64, key: String, value: Option<T>) {
        // Key, map overhead and the record itself.
        let size = key.len() + 64 + value.as_ref().map_or(0, self.weigh);
        if size > self.budget / 16 {
            return;
        }
        let mut inner = self.inner.lock().expect("cache poisoned");
        if inner.generation != generation {
            return;
        }
        if inner.bytes + size > self.budget {
            inner.entries.clear();
            inner.bytes = 0;
        }
        if inner.entries.insert(key, value).is_none() {
            inner.bytes += size;
        }
    }

    fn invalidate(&self) {
        let mut inner = self.inner.lock().expect("cache poisoned");
        inner.generation += 1;
        inner.entries.clear();
        inner.bytes = 0;
    }
}

/// Each lookup cache may hold this much (estimated).
const LOOKUP_CACHE_BYTES: usize = 8 << 20;

fn json_len<T: serde::Serialize>(v: &T) -> usize {
    serde_json::to_string(v).map_or(usize::MAX / 2, |s| s.len())
}

fn app_weight(a: &Application) -> usize {
    a.id.len()
        + a.uid.as_ref().map_or(0, String::len)
        + a.name.len()
        + a.metadata
            .iter()
            .map(|(k, v)| k.len() + v.len() + 48)
            .sum::<usize>()
        + a.retry_policy.as_ref().map_or(0, json_len)
        + 128
}

fn event_type_weight(e: &EventType) -> usize {
    e.name.len()
        + e.description.len()
        + e.schemas.as_ref().map_or(0, json_len)
        + e.group_name.as_ref().map_or(0, String::len)
        + e.feature_flags
            .as_ref()
            .map_or(0, |f| f.iter().map(|x| x.len() + 24).sum())
        + 128
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs pending migrations.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), |wal| Box::new(move || wal.sync_data()), true)
    }

    /// [`open`](Self::open), but rows reach the key tables only through
    /// [`index_keys_now`](Self::index_keys_now): tests choose where the watermark is.
    #[cfg(test)]
    pub(crate) fn open_manual_keys(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(
            path.as_ref(),
            |wal| Box::new(move || wal.sync_data()),
            false,
        )
    }

    /// Moves every recent row into the key tables now (see [`Keyed`]).
    #[cfg(test)]
    pub(crate) async fn index_keys_now(&self) -> Result<()> {
        self.write(|c| index_keys(c, 1)).await
    }

    /// [`open`](Self::open), with what makes the WAL durable given as a function of the
    /// open WAL file (tests put a gate in front of the fsync), and whether the writer
    /// fills the key tables by itself.
    fn open_with(
        path: &Path,
        make_sync: impl FnOnce(std::fs::File) -> SyncFn,
        auto_keys: bool,
    ) -> Result<Self> {
        let path = path.to_path_buf();
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| io_error(format!("creating {}", dir.display()), &e))?;
            }
        }
        // One process per SQLite file: the writer thread's group commit and the startup
        // lease recovery below both rely on it. Several processes need PostgreSQL.
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error(format!("opening {}", lock_path.display()), &e))?;
        lock.try_lock().map_err(|_| {
            StoreError::Backend(format!(
                "another hookline process is using {} (lock {} is held); run several processes on PostgreSQL instead",
                path.display(),
                lock_path.display()
            ))
        })?;
        let mut conn = Connection::open(&path).map_err(backend)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;
             PRAGMA temp_store = MEMORY;
             PRAGMA wal_autocheckpoint = 0;",
        )
        .map_err(backend)?;
        tune(&conn)?;
        migrate(&mut conn)?;
        recover_leases(&conn)?;
        let checkpointer = spawn_checkpointer(&path)?;
        let disk = Arc::new(DiskState::new(path.clone()));

        // Commits need not fsync on the writer thread: the sync thread does it (see
        // `spawn_syncer`). The WAL file exists by now: SQLite creates it with the first
        // transaction in WAL mode (the migrations and lease recovery above).
        let (tx, rx) = mpsc::channel::<ToWriter>();
        let wal_path = PathBuf::from(format!("{}-wal", path.display()));
        let syncer = match std::fs::File::open(&wal_path) {
            Ok(wal) => {
                conn.execute_batch("PRAGMA synchronous = NORMAL")
                    .map_err(backend)?;
                Some(spawn_syncer(make_sync(wal), tx.clone(), disk.clone())?)
            }
            Err(e) => {
                tracing::warn!(error = %e, wal = %wal_path.display(), "cannot open the WAL to sync it; every commit syncs on the writer thread");
                None
            }
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn({
                let checkpointer = checkpointer.clone();
                let disk = disk.clone();
                move || writer_loop(conn, rx, syncer, checkpointer, auto_keys, &disk)
            })
            .map_err(|e| StoreError::Backend(format!("spawning writer thread: {e}")))?;
        Ok(Self {
            _lock: lock,
            path,
            writer: tx,
            readers: Arc::new(Mutex::new(Vec::new())),
            _checkpointer: checkpointer,
            apps: LookupCache::new(LOOKUP_CACHE_BYTES, app_weight),
            event_types: LookupCache::new(LOOKUP_CACHE_BYTES, event_type_weight),
            intake: RwLock::new(None),
            disk,
        })
    }

    /// Runs `f` in the next group commit and returns its result once committed durably.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.write_with(Durability::Full, f).await
    }

    /// Runs `f` in the next group commit; with [`Durability::Lazy`] the commit need not be
    /// fsynced before returning (see [`WriteJob::durable`]).
    async fn write_with<T: Send + 'static>(
        &self,
        sync: Durability,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.write_then(sync, move |c| Ok((f(c)?, ())), |()| {})
            .await
    }

    /// Like [`Self::write_with`], for a write that leaves something (`A`) for once it has
    /// committed: `then` gets it, from the thread that acknowledges the write and before
    /// the caller hears of it, so it runs even if the caller has gone away meanwhile. If
    /// the write fails or does not commit, `A` is dropped instead.
    async fn write_then<T: Send + 'static, A: Send + 'static>(
        &self,
        sync: Durability,
        f: impl FnOnce(&Connection) -> Result<(T, A)> + Send + 'static,
        then: impl FnOnce(A) + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = WriteJob {
            run: Box::new(move |conn| {
                let outcome = f(conn);
                let ran = Ran::of(&outcome);
                let finish: Finisher = Box::new(move |commit| {
                    let result = commit.and(outcome).map(|(out, after)| {
                        then(after);
                        out
                    });
                    let _ = tx.send(result);
                });
                (ran, finish)
            }),
            durable: sync == Durability::Full,
        };
        self.writer
            .send(ToWriter::Write(job))
            .map_err(|_| StoreError::Backend("writer thread has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("writer thread dropped a write".into()))?
    }

    /// Commits a message and its deliveries (to `only` that endpoint, if given); the
    /// attached intake gets those it reserved slots for once the commit is durable (if it
    /// does not commit, the slots are given back).
    async fn write_message(&self, msg: Message, only: Option<String>) -> Result<Message> {
        let intake = self
            .intake
            .read()
            .expect("intake lock")
            .as_ref()
            .and_then(Weak::upgrade);
        self.write_then(
            Durability::Full,
            move |c| {
                let mut fresh = Fresh {
                    intake,
                    claimed: Vec::new(),
                    queued: false,
                };
                insert_message(c, &msg)?;
                fan_out(c, &msg, only.as_deref(), &mut fresh)?;
                Ok((msg, fresh))
            },
            Fresh::hand_over,
        )
        .await
    }

    /// A write of records `cache` holds; the cache is cleared once the write is done
    /// (committed or not), before the caller hears of it.
    async fn write_clearing<T: Send + 'static, C: Clone>(
        &self,
        cache: &LookupCache<C>,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let out = self.write(f).await;
        cache.invalidate();
        out
    }

    /// `find(key)` answered from `cache` when it can, else read and remembered.
    async fn cached<T: Clone + Send + 'static>(
        &self,
        cache: &LookupCache<T>,
        key: &str,
        find: fn(&Connection, &str) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        let generation = match cache.get(key) {
            Ok(hit) => return Ok(hit),
            Err(generation) => generation,
        };
        let owned = key.to_string();
        let found = self.read(move |c| find(c, &owned)).await?;
        cache.put(generation, key.to_string(), found.clone());
        Ok(found)
    }

    /// Runs `f` on a pooled read-only connection on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            // A std mutex: it is held for a push or pop only, never across I/O.
            let pooled = readers.lock().expect("reader pool poisoned").pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_reader(&path)?,
            };
            let out = f(&conn);
            let mut pool = readers.lock().expect("reader pool poisoned");
            if pool.len() < MAX_IDLE_READERS {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        let _ = self.writer.send(ToWriter::Stop);
    }
}

/// Checkpoints the WAL on its own thread and connection (passively: never blocking the
/// writer or readers), so the writer thread, the one serial part of the store, never
/// stops to copy pages. Ends when the returned sender is dropped.
fn spawn_checkpointer(path: &Path) -> Result<mpsc::Sender<()>> {
    let conn = Connection::open(path).map_err(backend)?;
    conn.execute_batch("PRAGMA busy_timeout = 5000;")
        .map_err(backend)?;
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            // Every CHECKPOINT_EVERY, and whenever the writer says the WAL is getting long.
            while let Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(CHECKPOINT_EVERY)
            {
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    Ok(()) => {}
                    // The writer logs a full disk once per episode.
                    Err(e) if is_disk_full(&e) => {
                        tracing::debug!(error = %e, "sqlite checkpoint failed")
                    }
                    Err(e) => tracing::warn!(error = %e, "sqlite checkpoint failed"),
                }
            }
        })
        .map_err(|e| StoreError::Backend(format!("spawning checkpoint thread: {e}")))?;
    Ok(tx)
}

fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(backend)?;
    conn.execute_batch("PRAGMA query_only = ON; PRAGMA busy_timeout = 5000;")
        .map_err(backend)?;
    tune(&conn)?;
    Ok(conn)
}

/// Settings that keep hot statements cheap (measured with `perf`, see BENCHMARKS.md):
/// - a query plan that does not depend on bound values, so a cached statement is not
///   re-planned on every run (the bundled SQLite has STAT4, which otherwise re-prepares
///   statements such as the claim's range scan whenever a parameter changes);
/// - a statement cache big enough for every statement a connection uses.
fn tune(conn: &Connection) -> Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(backend)?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(backend)? as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "database schema version {version} is newer than this hookline ({}); refusing to run an older binary on it",
            MIGRATIONS.len()
        )));
    }
    if version == MIGRATIONS.len() {
        return Ok(());
    }
    // Rebuilding a table means dropping one that others reference: foreign keys are off
    // (only possible outside a transaction) while migrations run, and each migration
    // checks them before it commits.
    conn.execute_batch("PRAGMA foreign_keys = OFF")
        .map_err(backend)?;
    let applied = apply_migrations(conn, version);
    conn.execute_batch("PRAGMA foreign_keys = ON")
        .map_err(backend)?;
    applied
}

fn apply_migrations(conn: &mut Connection, from: usize) -> Result<()> {
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from) {
        let tx = conn.transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(backend)?;
        let broken = tx
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(backend)?;
        if broken > 0 {
            return Err(StoreError::Backend(format!(
                "sqlite migration {} would leave {broken} rows with dangling references; not applied",
                i + 1
            )));
        }
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
        tracing::info!(version = i + 1, "applied sqlite migration");
    }
    Ok(())
}

/// Hands back every delivery a previous run of this process held when it died: with the
/// file lock held, no other worker can own them, so there is no need to wait for their
/// leases to expire. Their attempts' outcomes are unknown, so they are due at once
/// (at-least-once: the receiver may see them twice).
fn recover_leases(conn: &Connection) -> Result<()> {
    let now = ms(Utc::now());
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

thread_local! {
    /// Frames in the WAL after the writer thread's latest commit (set by [`note_wal_frames`]).
    static WAL_FRAMES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
    /// Commits of the writer thread that wrote to the WAL (counted by [`note_wal_frames`]).
    static WAL_COMMITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// SQLite's WAL hook: called on the committing (writer) thread after every commit.
/// Counts the pages each commit wrote (`hookline_sqlite_wal_pages_total`): the WAL only
/// grows between restarts, so a shorter WAL than before means it started over.
fn note_wal_frames(_: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    let before = WAL_FRAMES.replace(frames);
    let written = if frames >= before {
        frames - before
    } else {
        frames
    };
    WAL_COMMITS.set(WAL_COMMITS.get() + 1);
    metrics::counter!("hookline_sqlite_wal_pages_total").increment(written as u64);
    Ok(())
}

/// Why a group did not commit, before it is known whether the disk is full.
enum GroupFailure {
    /// COMMIT failed.
    Commit(rusqlite::Error),
    /// A write's error made SQLite roll back the whole transaction (it does on a full
    /// disk or an I/O error, unless the failed statement could be undone alone).
    RolledBack { full: bool },
}

/// The writer thread. Besides group-committing, it keeps the WAL from growing without
/// bound: SQLite starts the WAL over only when a write transaction begins while every
/// frame is already checkpointed, which under continuous load never happens by itself
/// (the checkpoint thread always trails the writer by the frames written since its last
/// pass). So halfway to [`WAL_RESTART_FRAMES`] the writer asks the checkpoint thread for a
/// pass, and once past it, checkpoints the few frames that pass did not copy itself,
/// between two groups; the next commit then rewrites the WAL from its start. Besides
/// bounding the file, that keeps commits overwriting blocks the file already has, which
/// is much cheaper for the filesystem than extending it (ext4 zeroes and allocates every new block: a third of the writer's
/// time before this, see BENCHMARKS.md).
///
/// It also keeps [`DiskState`]: a group refused for lack of space marks the disk full,
/// the next commit that writes marks it free; while it is full and no write comes, the
/// writer tries a small write of its own every [`PROBE_EVERY`] ([`probe_room`]), so the
/// store (and the health check) notices by itself that space is back.
fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<ToWriter>,
    syncer: Option<mpsc::Sender<Vec<Finisher>>>,
    checkpointer: mpsc::Sender<()>,
    auto_keys: bool,
    disk: &DiskState,
) {
    conn.wal_hook(Some(note_wal_frames));
    let mut keyed_at = std::time::Instant::now();
    let mut keyed_all_at = keyed_at;
    // Whether the checkpoint thread was asked for a pass in this cycle of the WAL.
    let mut nudged = false;
    // Whether the sync thread is busy with the previous group. While it is, the writer
    // keeps running arriving writes in the open transaction and commits once it is free:
    // as many commits as fsyncs, so a group under load is as large as with an fsync per
    // commit (fewer WAL pages per write), but the writer works while the disk flushes.
    let mut syncing = false;
    loop {
        // Ends when the store is dropped (`Stop`).
        let first = loop {
            let msg = if disk.is_full() {
                match rx.recv_timeout(PROBE_EVERY) {
                    Ok(msg) => Ok(msg),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        probe_room(&conn, disk);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => Err(()),
                }
            } else {
                rx.recv().map_err(|_| ())
            };
            match msg {
                Ok(ToWriter::Write(job)) => break job,
                Ok(ToWriter::Synced) => syncing = false,
                Ok(ToWriter::Stop) | Err(()) => return,
            }
        };
        if let Err(e) = exec_cached(&conn, "BEGIN IMMEDIATE") {
            // Dropping the job unrun tells its caller the write failed.
            tracing::error!(error = %e, "sqlite begin failed; failing a write");
            drop(first);
            continue;
        }
        let mut durable = Vec::new();
        let mut lazy = Vec::new();
        let mut next = Some(first);
        let mut stop = false;
        // Callers' writes in this group, and whether one was refused for lack of space.
        let mut writes = 0;
        let mut refused = 0;
        let mut rolled_back = false;
        while let Some(job) = next.take() {
            writes += 1;
            if run_job(&conn, job, &mut durable, &mut lazy) == Ran::Full {
                refused += 1;
            }
            if conn.is_autocommit() {
                // The whole transaction is gone, with the writes before this one: the
                // group ends here (the next write would run outside a transaction).
                rolled_back = true;
                break;
            }
            while durable.len() + lazy.len() < MAX_GROUP && next.is_none() && !stop {
                let msg = if syncing {
                    rx.recv().ok()
                } else {
                    rx.try_recv().ok()
                };
                match msg {
                    Some(ToWriter::Write(job)) => next = Some(job),
                    Some(ToWriter::Synced) => syncing = false,
                    Some(ToWriter::Stop) => stop = true,
                    None => break,
                }
            }
        }
        if !rolled_back && refused == 0 && auto_keys && keyed_at.elapsed() >= KEY_EVERY {
            // In its own savepoint, like any job: if it fails, the group still commits.
            let all = keyed_all_at.elapsed() >= KEY_ALL_EVERY;
            let min_rows = if all { 1 } else { KEY_BATCH_MIN };
            let job = WriteJob {
                run: Box::new(move |c| {
                    let r = index_keys(c, min_rows);
                    let ran = Ran::of(&r);
                    let fin: Finisher = Box::new(move |commit| match commit.and(r) {
                        Ok(()) => {}
                        // Logged once per episode by the writer.
                        Err(e @ StoreError::StorageFull(_)) => {
                            tracing::debug!(error = %e, "moving rows into the listing keys failed; retried later")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "moving rows into the listing keys failed; retried later")
                        }
                    });
                    (ran, fin)
                }),
                durable: false,
            };
            let _ = run_job(&conn, job, &mut durable, &mut lazy);
            rolled_back = conn.is_autocommit();
            keyed_at = std::time::Instant::now();
            if all {
                keyed_all_at = keyed_at;
            }
        }
        metrics::counter!("hookline_sqlite_group_commits_total").increment(1);
        metrics::counter!("hookline_sqlite_writes_total")
            .increment((durable.len() + lazy.len()) as u64);
        let commits_before = WAL_COMMITS.get();
        let committed = if rolled_back {
            Err(GroupFailure::RolledBack { full: refused > 0 })
        } else {
            exec_cached(&conn, "COMMIT").map_err(|e| {
                let _ = conn.execute_batch("ROLLBACK");
                GroupFailure::Commit(e)
            })
        };
        let commit = committed.map_err(|failure| {
            let e = group_error(failure, &disk.path);
            if let StoreError::StorageFull(cause) = &e {
                disk.refused(writes, cause);
            }
            e
        });
        if commit.is_ok() {
            if refused > 0 {
                // Writes were refused (each statement undone alone), the others committed.
                disk.refused(refused, "a write found the disk full");
            } else if WAL_COMMITS.get() != commits_before {
                disk.wrote();
            }
        }
        // Everything committed before this group is durable unless the sync thread is
        // still at it (a group that reached MAX_GROUP commits without waiting for it).
        if durable.is_empty() && !syncing {
            for fin in lazy.drain(..) {
                fin(commit.clone());
            }
        } else {
            durable.append(&mut lazy);
        }
        match (&commit, &syncer) {
            // Acknowledged once the sync thread's next fsync of the WAL returns.
            (Ok(()), Some(syncer)) if !durable.is_empty() => match syncer.send(durable) {
                Ok(()) => syncing = true,
                Err(mpsc::SendError(durable)) => {
                    for fin in durable {
                        fin(Err(StoreError::Backend(
                            "the WAL sync thread has stopped".into(),
                        )));
                    }
                }
            },
            // Without a sync thread the connection syncs every commit itself.
            _ => {
                for fin in durable {
                    fin(commit.clone());
                }
            }
        }
        let frames = WAL_FRAMES.get();
        if frames < WAL_RESTART_FRAMES / 2 {
            nudged = false;
        } else if !nudged {
            // Halfway: the checkpoint thread copies what is there now, concurrently, so
            // that at the limit only the frames since then are left for the writer.
            let _ = checkpointer.send(());
            nudged = true;
        }
        if frames > WAL_RESTART_FRAMES {
            // PASSIVE: never waits; if a reader still needs old frames (or the checkpoint
            // thread is still at it), the WAL grows a little and the next group tries again.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                if is_disk_full(&e) {
                    tracing::debug!(error = %e, "sqlite checkpoint in the writer failed");
                } else {
                    tracing::warn!(error = %e, "sqlite checkpoint in the writer failed");
                }
            }
        }
        if stop {
            return;
        }
    }
}

/// What the writes of a group that did not commit are told. A full disk is reported as
/// such, also when SQLite calls it an I/O error (as it does when growing the WAL index,
/// or a file size hint, fails for lack of space) or when the write that rolled the
/// transaction back is not known: then the disk is asked ([`no_room`]).
fn group_error(failure: GroupFailure, db: &Path) -> StoreError {
    match failure {
        GroupFailure::Commit(e) if is_disk_full(&e) => {
            StoreError::StorageFull(format!("commit: {e}"))
        }
        GroupFailure::Commit(e) if is_io_error(&e) && no_room(db) => {
            StoreError::StorageFull(format!("commit: {e} (the disk has no room)"))
        }
        GroupFailure::Commit(e) => StoreError::Backend(format!("commit: {e}")),
        GroupFailure::RolledBack { full: true } => StoreError::StorageFull(
            "the transaction was rolled back: a write in it found the disk full".into(),
        ),
        GroupFailure::RolledBack { full: false } if no_room(db) => StoreError::StorageFull(
            "the transaction was rolled back after a write failed; the disk has no room".into(),
        ),
        GroupFailure::RolledBack { full: false } => StoreError::Backend(
            "the transaction was rolled back after a write in the same group failed".into(),
        ),
    }
}

/// Whether the disk holding `db` has no room left: writes (and syncs) 64 KiB beside it
/// and sees whether that fails with `ENOSPC` (or a quota). For errors whose cause SQLite
/// does not tell (an I/O error, a rolled back transaction); never on a write's path.
fn no_room(db: &Path) -> bool {
    use std::io::Write;
    let probe = db.with_extension("space-probe");
    let wrote = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(&[0u8; 64 * 1024])?;
        f.sync_data()
    });
    let _ = std::fs::remove_file(&probe);
    matches!(wrote, Err(e) if is_no_space(&e))
}

/// While the disk is full and nothing else writes: a one-page write that changes nothing
/// (`user_version` set to what it is), to find out whether there is room again. A commit
/// that reaches the WAL ends the episode ([`DiskState::wrote`]).
fn probe_room(conn: &Connection, disk: &DiskState) {
    let commits_before = WAL_COMMITS.get();
    let probe = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .and_then(|v| {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; PRAGMA user_version = {v}; COMMIT"
            ))
        });
    match probe {
        Ok(()) if WAL_COMMITS.get() != commits_before => disk.wrote(),
        Ok(()) => {}
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            tracing::debug!(error = %e, "the disk is still full");
        }
    }
}

/// Runs one write in its own savepoint of the open transaction (rolled back alone if it
/// fails) and files its finisher by durability.
fn run_job(
    conn: &Connection,
    job: WriteJob,
    durable: &mut Vec<Finisher>,
    lazy: &mut Vec<Finisher>,
) -> Ran {
    if let Err(e) = exec_cached(conn, "SAVEPOINT job") {
        tracing::error!(error = %e, "sqlite savepoint failed");
    }
    let (ran, fin) = (job.run)(conn);
    let end = if ran == Ran::Ok {
        exec_cached(conn, "RELEASE job")
    } else {
        exec_cached(conn, "ROLLBACK TO job").and_then(|_| exec_cached(conn, "RELEASE job"))
    };
    // With the transaction rolled back (see `writer_loop`) there is no savepoint left.
    if let (Err(e), false) = (end, conn.is_autocommit()) {
        tracing::error!(error = %e, "sqlite savepoint release failed");
    }
    if job.durable {
        durable.push(fin);
    } else {
        lazy.push(fin);
    }
    ran
}

/// Makes committed groups durable off the writer thread: waits for committed groups,
/// takes every one waiting, fsyncs the WAL once (`fdatasync`) and only then tells their
/// callers the write succeeded. The writer meanwhile runs the next group, so the disk
/// flush of one group overlaps the work of the next instead of stalling the only thread
/// that can write. An fsync covers every WAL byte written before it started, so each
/// group it acknowledges is on disk; and the WAL only starts over once all of it is
/// checkpointed into the database file, which SQLite fsyncs itself.
fn spawn_syncer(
    mut sync: SyncFn,
    writer: mpsc::Sender<ToWriter>,
    disk: Arc<DiskState>,
) -> Result<mpsc::Sender<Vec<Finisher>>> {
    let (tx, rx) = mpsc::channel::<Vec<Finisher>>();
    std::thread::Builder::new()
        .name("sqlite-sync".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut waiting = first;
                while let Ok(more) = rx.try_recv() {
                    waiting.extend(more);
                }
                let started = std::time::Instant::now();
                let synced = sync();
                metrics::histogram!("hookline_sqlite_wal_sync_seconds")
                    .record(started.elapsed().as_secs_f64());
                let synced = synced.map_err(|e| {
                    // Some filesystems (delayed allocation, NFS) report a full disk only here.
                    let e = io_error("fsync of the write-ahead log".into(), &e);
                    match &e {
                        StoreError::StorageFull(cause) => disk.refused(waiting.len(), cause),
                        _ => tracing::error!(error = %e, "fsync of the SQLite WAL failed"),
                    }
                    e
                });
                for fin in waiting {
                    fin(synced.clone());
                }
                if writer.send(ToWriter::Synced).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| StoreError::Backend(format!("spawning WAL sync thread: {e}")))?;
    Ok(tx)
}

/// Deletes the row `sql` selects by `key`; `NotFound` if there was none.
fn delete_one(c: &Connection, sql: &str, key: &str) -> Result<()> {
    match c.execute(sql, [key]).map_err(backend)? {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

/// A listing by tenant whose index is filled in batches. Rows up to the table's watermark
/// (`keyed.upto`, a rowid) have a key in `keys` (tenant, sort key, rowid); newer rows, a
/// few thousand at most, are found by scanning the rowids above the watermark. An index
/// updated with every row would cost a page per row at every commit: a tenant's next key
/// goes to that tenant's own leaf page, so a group of rows for many tenants writes as many
/// scattered pages, while one batch of thousands of rows writes each tenant's leaf once.
/// The writer thread moves recent rows into the keys in batches (see [`KEY_EVERY`] and
/// [`Keyed::index`]); the keys and the watermark change in one transaction, so a reader
/// sees every row in exactly one of the two places.
struct Keyed {
    table: &'static str,
    keys: &'static str,
    /// The tenant column and the column listings sort and page by.
    tenant: &'static str,
    key: &'static str,
}

const MESSAGE_KEYS: Keyed = Keyed {
    table: "messages",
    keys: "message_keys",
    tenant: "app_id",
    key: "id",
};
const DELIVERY_KEYS: Keyed = Keyed {
    table: "deliveries",
    keys: "delivery_keys",
    tenant: "endpoint_id",
    key: "msg_id",
};
const ATTEMPT_KEYS: Keyed = Keyed {
    table: "attempts",
    keys: "attempt_keys",
    tenant: "endpoint_id",
    key: "id",
};
const KEYED: [&Keyed; 3] = [&MESSAGE_KEYS, &DELIVERY_KEYS, &ATTEMPT_KEYS];

/// How often the writer looks at the recent rows: it moves them into the key tables when
/// a table has at least [`KEY_BATCH_MIN`], and whatever there is every [`KEY_ALL_EVERY`].
/// Bigger batches write fewer key pages per row (a tenant's leaf, and the neighbours
/// SQLite rebalances with it, once per batch: 256-row batches cost 0.55 more WAL pages
/// per delivered message than 2 048-row ones in the e2e benchmark); smaller ones leave
/// fewer recent rows for a listing to scan (at most this many plus 2 s of traffic).
const KEY_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
const KEY_BATCH_MIN: i64 = 2048;
const KEY_ALL_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl Keyed {
    /// SQL for the watermark.
    fn upto(&self) -> String {
        format!("(SELECT upto FROM keyed WHERE name = '{}')", self.table)
    }

    /// SQL: `FROM` the keys joined to their rows. Keys are checked against their row, so
    /// a key whose row is gone never names a row that reused its rowid.
    fn keyed_rows(&self) -> String {
        let Keyed {
            table,
            keys,
            tenant,
            key,
        } = self;
        format!(
            "{keys} JOIN {table} ON {table}.rowid = {keys}.rid
                 AND {table}.{tenant} = {keys}.tenant AND {table}.{key} = {keys}.k"
        )
    }

    /// SQL selecting the rowids of the tenant given as parameter `?{p}`.
    fn rowids(&self, p: usize) -> String {
        let Keyed {
            table,
            keys,
            tenant,
            ..
        } = self;
        format!(
            "SELECT {keys}.rid FROM {keyed_rows} WHERE {keys}.tenant = ?{p}
             UNION ALL
             SELECT rowid FROM {table} NOT INDEXED WHERE rowid > {upto} AND {tenant} = ?{p}",
            keyed_rows = self.keyed_rows(),
            upto = self.upto()
        )
    }

    /// Moves the rows above the watermark into the keys if there are at least `min_rows`.
    fn index(&self, c: &Connection, min_rows: i64) -> Result<()> {
        let Keyed {
            table,
            keys,
            tenant,
            key,
        } = self;
        let (upto, top): (i64, i64) = c
            .prepare_cached(&format!(
                "SELECT {upto}, coalesce((SELECT max(rowid) FROM {table}), 0)",
                upto = self.upto()
            ))
            .map_err(backend)?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(backend)?;
        if top - upto < min_rows.max(1) {
            return Ok(());
        }
        // In key order, so the B-tree is walked once from left to right.
        c.prepare_cached(&format!(
            "INSERT OR REPLACE INTO {keys} (tenant, k, rid)
             SELECT {tenant}, {key}, rowid FROM {table} WHERE rowid > ?1 AND rowid <= ?2
             ORDER BY 1, 2"
        ))
        .map_err(backend)?
        .execute([upto, top])
        .map_err(backend)?;
        c.prepare_cached("UPDATE keyed SET upto = ?2 WHERE name = ?1")
            .map_err(backend)?
            .execute(params![table, top])
            .map_err(backend)?;
        Ok(())
    }

    /// Deletes the tenant's rows and their keys.
    fn delete_tenant(&self, c: &Connection, tenant: &str) -> Result<()> {
        let Keyed { table, keys, .. } = self;
        c.prepare_cached(&format!(
            "DELETE FROM {table} WHERE rowid IN ({})",
            self.rowids(1)
        ))
        .map_err(backend)?
        .execute([tenant])
        .map_err(backend)?;
        c.prepare_cached(&format!("DELETE FROM {keys} WHERE tenant = ?1"))
            .map_err(backend)?
            .execute([tenant])
            .map_err(backend)?;
        Ok(())
    }
}

/// Moves recent rows into the key tables (see [`Keyed`]).
fn index_keys(c: &Connection, min_rows: i64) -> Result<()> {
    KEYED.iter().try_for_each(|k| k.index(c, min_rows))
}

/// After rows were deleted: SQLite gives a new row the highest rowid in use plus one, so
/// once the newest rows are gone, new rows could get rowids at or below the watermark and
/// never be listed. Lowering the watermark to the highest rowid left keeps every row
/// above it unkeyed and every row below it keyed.
fn lower_watermarks(c: &Connection) -> Result<()> {
    for k in KEYED {
        c.prepare_cached(&format!(
            "UPDATE keyed SET upto = min(upto, coalesce((SELECT max(rowid) FROM {}), 0))
             WHERE name = ?1",
            k.table
        ))
        .map_err(backend)?
        .execute([k.table])
        .map_err(backend)?;
    }
    Ok(())
}

/// Runs a parameterless statement through the statement cache (no re-parsing).
fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// A database error as a [`StoreError`]: `StorageFull` when SQLite says the disk is full.
fn backend(e: rusqlite::Error) -> StoreError {
    if is_disk_full(&e) {
        StoreError::StorageFull(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// `SQLITE_FULL`: a write found no room on the disk (SQLite's own limit on the file's
/// page count says the same, and needs the same answer).
fn is_disk_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

/// `SQLITE_IOERR` in any of its variants.
fn is_io_error(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::SystemIoFailure)
}

/// `ENOSPC`, or `EDQUOT` (a quota is a full disk for whoever hits it).
fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// A file-system error while `doing` something, as a [`StoreError`].
fn io_error(doing: String, e: &std::io::Error) -> StoreError {
    if is_no_space(e) {
        StoreError::StorageFull(format!("{doing}: {e}"))
    } else {
        StoreError::Backend(format!("{doing}: {e}"))
    }
}

/// Maps a UNIQUE violation to `Conflict(what)`, anything else to `Backend`.
fn unique_as_conflict(what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
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

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("model types always serialize")
}

fn json_col<T: serde::de::DeserializeOwned>(row: &Row, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn opt_json_col<T: serde::de::DeserializeOwned>(
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

/// Where a listing page starts and which way it walks.
struct Walk {
    cursor: Option<String>,
    /// `iterator` was a `prev_iterator`: the page before the cursor.
    backwards: bool,
    /// The direction of the scan: walking backwards through an ascending list is a
    /// descending scan, and vice versa.
    ascending: bool,
}

impl Walk {
    fn new(q: &ListQuery) -> Self {
        let (cursor, backwards) = match q.iterator.as_deref() {
            Some(it) if it.starts_with('-') => (Some(it[1..].to_string()), true),
            Some(it) => (Some(it.to_string()), false),
            None => (None, false),
        };
        let ascending = (q.order == Order::Ascending) != backwards;
        Walk {
            cursor,
            backwards,
            ascending,
        }
    }

    /// ` AND {col} > ?` (or `<`) past the cursor, with its argument; nothing without one.
    fn past_cursor(&self, col: &str, args: &mut Vec<Value>) -> String {
        match &self.cursor {
            Some(c) => {
                args.push(Value::Text(c.clone()));
                format!(" AND {col} {} ?", if self.ascending { ">" } else { "<" })
            }
            None => String::new(),
        }
    }

    fn dir(&self) -> &'static str {
        if self.ascending {
            "ASC"
        } else {
            "DESC"
        }
    }

    /// The page from up to `limit + 1` rows in scan order.
    fn page<T>(self, mut rows: Vec<T>, limit: usize, key_of: impl Fn(&T) -> String) -> Page<T> {
        let more = rows.len() > limit;
        rows.truncate(limit);
        if self.backwards {
            rows.reverse();
        }
        let first = rows.first().map(&key_of);
        let last = rows.last().map(&key_of);
        Page {
            iterator: last.or_else(|| self.cursor.clone()),
            prev_iterator: first.map(|f| format!("-{f}")),
            done: if self.backwards { false } else { !more },
            data: rows,
        }
    }
}

fn query_rows<T>(
    conn: &Connection,
    sql: &str,
    args: Vec<Value>,
    map: impl Fn(&Row) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), map)
        .map_err(backend)?
        .collect::<rusqlite::Result<Vec<T>>>()
        .map_err(backend)?;
    Ok(rows)
}

/// Runs a cursor-paginated query. `sql` selects the rows (with `WHERE` already present,
/// possibly `WHERE 1`), `key` is the column the cursor walks.
fn paginate<T>(
    conn: &Connection,
    sql: &str,
    mut args: Vec<Value>,
    key: &str,
    q: &ListQuery,
    map: impl Fn(&Row) -> rusqlite::Result<T>,
    key_of: impl Fn(&T) -> String,
) -> Result<Page<T>> {
    let walk = Walk::new(q);
    let sql = format!(
        "{sql}{} ORDER BY {key} {} LIMIT ?",
        walk.past_cursor(key, &mut args),
        walk.dir()
    );
    args.push(Value::Integer(q.limit as i64 + 1));
    let rows = query_rows(conn, &sql, args, map)?;
    Ok(walk.page(rows, q.limit, key_of))
}

/// [`paginate`] over one tenant's rows of a [`Keyed`] table: selects `cols` of
/// `k.table`'s rows of `tenant` that pass `filter` (` AND ...` on the table's columns,
/// with `filter_args`), walking `k.key`. The keyed rows come in key order from the key
/// table, the recent ones are sorted (a few thousand rows at most), and SQLite merges
/// the two up to the page's limit.
#[allow(clippy::too_many_arguments)]
fn paginate_keyed<T>(
    conn: &Connection,
    k: &Keyed,
    cols: &str,
    tenant: &str,
    filter: &str,
    filter_args: Vec<Value>,
    q: &ListQuery,
    map: impl Fn(&Row) -> rusqlite::Result<T>,
    key_of: impl Fn(&T) -> String,
) -> Result<Page<T>> {
    let Keyed {
        table,
        keys,
        tenant: tenant_col,
        key,
    } = k;
    let walk = Walk::new(q);
    let mut args = vec![Value::Text(tenant.to_string())];
    let keyed_past = walk.past_cursor(&format!("{keys}.k"), &mut args);
    args.extend(filter_args.iter().cloned());
    args.push(Value::Text(tenant.to_string()));
    let recent_past = walk.past_cursor(&format!("{table}.{key}"), &mut args);
    args.extend(filter_args);
    args.push(Value::Integer(q.limit as i64 + 1));
    let dir = walk.dir();
    let sql = format!(
        "WITH page (rid, k) AS (
             SELECT {keys}.rid, {keys}.k FROM {keyed_rows}
             WHERE {keys}.tenant = ?{keyed_past}{filter}
             UNION ALL
             SELECT {table}.rowid, {table}.{key} FROM {table} NOT INDEXED
             WHERE {table}.rowid > {upto} AND {table}.{tenant_col} = ?{recent_past}{filter}
             ORDER BY 2 {dir} LIMIT ?
         )
         SELECT {cols} FROM page JOIN {table} ON {table}.rowid = page.rid ORDER BY page.k {dir}",
        keyed_rows = k.keyed_rows(),
        upto = k.upto()
    );
    let rows = query_rows(conn, &sql, args, map)?;
    Ok(walk.page(rows, q.limit, key_of))
}

// --- row mapping -------------------------------------------------------------------

const APP_COLS: &str =
    "id, uid, name, throttle_rate, metadata, retry_policy, created_at, updated_at, validate_payloads";

fn app_row(r: &Row) -> rusqlite::Result<Application> {
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

fn put_app(conn: &Connection, a: &Application, insert: bool) -> Result<()> {
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

const ET_COLS: &str = "name, description, archived, deprecated, schemas, group_name, feature_flags, created_at, updated_at, validate_payloads";

fn et_row(r: &Row) -> rusqlite::Result<EventType> {
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

fn put_et(conn: &Connection, e: &EventType, insert: bool) -> Result<()> {
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

const EP_COLS: &str =
    "id, app_id, uid, url, disabled, settings, created_at, updated_at, failing_since";

fn ep_row(r: &Row) -> rusqlite::Result<Endpoint> {
    Ok(Endpoint {
        id: r.get(0)?,
        app_id: r.get(1)?,
        uid: r.get(2)?,
        url: r.get(3)?,
        disabled: r.get(4)?,
        settings: json_col(r, 5)?,
        created_at: from_ms(r.get(6)?),
        updated_at: from_ms(r.get(7)?),
        failing_since: r.get::<_, Option<i64>>(8)?.map(from_ms),
    })
}

fn put_ep(conn: &Connection, e: &Endpoint, insert: bool) -> Result<()> {
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
            to_json(&e.settings),
            ms(e.created_at),
            ms(e.updated_at)
        ])
        .map_err(unique_as_conflict(
            "an endpoint with this uid already exists in this application",
        ))?;
    Ok(())
}

const MSG_COLS: &str =
    "id, app_id, event_id, event_type, payload, channels, tags, created_at, deliver_at";

fn msg_row(r: &Row) -> rusqlite::Result<Message> {
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
    })
}

fn find_app(conn: &Connection, id_or_uid: &str) -> Result<Option<Application>> {
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

fn find_et(conn: &Connection, name: &str) -> Result<Option<EventType>> {
    conn.prepare_cached(&format!(
        "SELECT {ET_COLS} FROM event_types WHERE name = ?1"
    ))
    .map_err(backend)?
    .query_row([name], et_row)
    .optional()
    .map_err(backend)
}

fn find_ep(conn: &Connection, app_id: &str, id_or_uid: &str) -> Result<Option<Endpoint>> {
    conn.prepare_cached(&format!(
        "SELECT {EP_COLS} FROM endpoints WHERE app_id = ?1 AND (id = ?2 OR uid = ?2)
         ORDER BY id = ?2 DESC LIMIT 1"
    ))
    .map_err(backend)?
    .query_row([app_id, id_or_uid], ep_row)
    .optional()
    .map_err(backend)
}

fn insert_message(c: &Connection, msg: &Message) -> Result<()> {
    // Only while the application exists (no foreign key checks it: see migration 6).
    let n = c.prepare_cached(
        "INSERT INTO messages (id, app_id, event_id, event_type, payload, channels, tags, created_at, deliver_at)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE EXISTS (SELECT 1 FROM applications WHERE id = ?2)",
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
        msg.deliver_at.map(ms)
    ])
    .map_err(unique_as_conflict(
        "a message with this eventId already exists in this application",
    ))?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Fresh deliveries of one create on their way from the transaction to the worker. Each
/// one in `claimed` holds a slot the intake reserved; dropped without
/// [`Fresh::hand_over`] (the write failed or did not commit), it gives them back.
struct Fresh {
    intake: Option<Arc<dyn Intake>>,
    claimed: Vec<ClaimedDelivery>,
    /// Whether a delivery was queued `pending` instead of handed over.
    queued: bool,
}

impl Fresh {
    /// The message is durable: the worker gets its deliveries.
    fn hand_over(mut self) {
        if let Some(intake) = &self.intake {
            if !self.claimed.is_empty() {
                intake.take(std::mem::take(&mut self.claimed));
            }
            if self.queued {
                intake.queued();
            }
        }
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if let (Some(intake), false) = (&self.intake, self.claimed.is_empty()) {
            intake.cancel(self.claimed.drain(..).map(|d| d.endpoint.id).collect());
        }
    }
}

/// Commits one delivery per matching, enabled endpoint (or to `only` that one, whatever
/// its filters), in the message's own transaction: there is no moment where a message is
/// stored but not queued. A delivery that can start now, to an endpoint with nothing else
/// due, is offered to the intake; if it reserves a slot, the delivery is written already
/// `sending` under a lease (as a claim would leave it) and goes into `fresh`. Endpoints
/// with work already due keep their order: new deliveries queue behind it.
fn fan_out(c: &Connection, msg: &Message, only: Option<&str>, fresh: &mut Fresh) -> Result<()> {
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
        let intake = fresh
            .intake
            .clone()
            .filter(|_| immediate && next_due.is_none_or(|t| t > now));
        let reserved = match intake {
            Some(intake) => {
                if app.is_none() {
                    app = Some(app_limits(c, &msg.app_id)?);
                }
                let limits = app.as_ref().expect("read above");
                let yes = intake.reserve(&ep, limits.rate);
                let lease = intake.lease();
                if yes {
                    // Filed before the insert, so a failure from here on gives the slot back.
                    fresh.claimed.push(ClaimedDelivery {
                        id: 0,
                        lease_token: token.clone(),
                        attempts: 0,
                        scheduled_at: start,
                        created_at: start,
                        trigger: Trigger::Scheduled,
                        message: msg.clone(),
                        endpoint: ep.clone(),
                        app_retry_policy: limits.policy.clone(),
                        app_throttle_rate: limits.rate,
                    });
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
fn app_limits(c: &Connection, app_id: &str) -> Result<AppLimits> {
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
fn refresh_next_due(c: &Connection, endpoint_id: &str) -> Result<()> {
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

fn lease_token() -> String {
    use rand::RngCore;
    format!("{:016x}", rand::rng().next_u64())
}

fn trigger_of(v: i64) -> Trigger {
    if v == 1 {
        Trigger::Manual
    } else {
        Trigger::Scheduled
    }
}

fn trigger_num(t: Trigger) -> i64 {
    match t {
        Trigger::Scheduled => 0,
        Trigger::Manual => 1,
    }
}

const ATTEMPT_COLS: &str = "id, app_id, msg_id, endpoint_id, url, attempted_at, status_code, duration_ms, succeeded, error_kind, response, trigger";

fn attempt_row(r: &Row) -> rusqlite::Result<Attempt> {
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

const DELIVERY_VIEW_COLS: &str = "msg_id, endpoint_id, status, attempts,
    CASE WHEN status = 'pending' THEN scheduled_at END, updated_at";

fn delivery_view_row(r: &Row) -> rusqlite::Result<DeliveryView> {
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

/// The ids a worker reports as full (`usize::MAX` in its busy list), as a JSON array.
fn full_ids_json<'a>(busy: impl Iterator<Item = (&'a str, usize)>) -> String {
    let full: Vec<&str> = busy
        .filter(|(_, n)| *n == usize::MAX)
        .map(|(id, _)| id)
        .collect();
    to_json(&full)
}

/// An application's delivery settings, as a claim needs them.
#[derive(Default)]
struct AppLimits {
    policy: Option<hookline_retry::RetryPolicy>,
    rate: Option<u32>,
    claimed: usize,
}

fn claim(
    c: &Connection,
    now: DateTime<Utc>,
    lease: chrono::Duration,
    max: usize,
    max_failing: usize,
    busy: &[(String, usize)],
) -> Result<Vec<ClaimedDelivery>> {
    let now_ms = ms(now);
    let until = ms(now + lease);
    let busy: HashMap<&str, usize> = busy.iter().map(|(id, n)| (id.as_str(), *n)).collect();
    let busy_of = |id: &str| busy.get(id).copied().unwrap_or(0);
    // Endpoints (and applications) the worker says are full are skipped in the index
    // walk itself, so they neither crowd out the others nor need parking: the worker
    // claims again as soon as one of their slots frees.
    let full = full_ids_json(busy.iter().map(|(id, n)| (*id, *n)));
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
        let mut free = ep
            .concurrency_cap()
            .saturating_sub(busy_of(&ep.id))
            .min(remaining);
        if ep.is_failing() {
            free = free.min(max_failing.saturating_sub(failing_claimed));
        }
        // A throttled endpoint (or application) gets at most a second's worth of its rate
        // at a time: the dispatcher paces them, and what waits for its turn holds a lease
        // and a slot.
        if let Some(rate) = ep.settings.throttle_rate.filter(|r| *r > 0) {
            free = free.min(rate as usize);
        }
        if let Some(rate) = app.rate {
            free = free.min((rate as usize).saturating_sub(app.claimed));
        }
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
            });
        }
    }
    Ok(out)
}

/// The two kinds of endpoint a claim walks apart, as conditions that select the
/// matching partial index (migration 7).
const HEALTHY: &str = "failing_since IS NULL";
const FAILING: &str = "failing_since IS NOT NULL";

/// Up to `limit` enabled endpoints of one kind with work due by `now_ms`, earliest first,
/// leaving out those `full` names (a JSON array of endpoint and application ids).
fn due_endpoints(
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

fn report(
    c: &Connection,
    delivery_id: i64,
    token: &str,
    rep: AttemptReport,
) -> Result<ReportOutcome> {
    let a = &rep.attempt;
    let now = ms(a.attempted_at + chrono::Duration::milliseconds(a.duration_ms as i64));
    // Not for an endpoint deleted meanwhile (no foreign key checks it: see migration 6).
    c.prepare_cached(&format!(
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
    Ok(ReportOutcome {
        applied,
        endpoint_disabled,
        consecutive_failures: if a.succeeded {
            0
        } else {
            attempts.unwrap_or(0)
        },
    })
}

#[async_trait]
impl DeliveryQueue for SqliteStore {
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        max: usize,
        max_failing: usize,
        busy: &[(String, usize)],
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
        self.write(move |c| self::report(c, delivery_id, &token, report))
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

    async fn next_due(
        &self,
        busy: &[(String, usize)],
        failing: bool,
    ) -> Result<Option<DateTime<Utc>>> {
        let full = full_ids_json(busy.iter().map(|(id, n)| (id.as_str(), *n)));
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
        self.write(move |c| put_ep(c, &ep, true).map(|_| ep)).await
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
        self.write(move |c| {
            let mut ep = find_ep(c, &app_id, &id)?
                .filter(|e| e.id == id)
                .ok_or(StoreError::NotFound)?;
            let was_disabled = ep.disabled;
            change(&mut ep)?;
            ep.id = id;
            ep.app_id = app_id;
            put_ep(c, &ep, false)?;
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
            let mut sql = String::new();
            let mut args = vec![];
            if let Some(types) = &q.event_types {
                sql.push_str(&format!(
                    " AND event_type IN ({})",
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
                sql.push_str(" AND created_at < ?");
                args.push(Value::Integer(ms(b)));
            }
            if let Some(a) = q.after {
                sql.push_str(" AND created_at > ?");
                args.push(Value::Integer(ms(a)));
            }
            paginate_keyed(
                c,
                &MESSAGE_KEYS,
                MSG_COLS,
                &app_id,
                &sql,
                args,
                &q.list,
                msg_row,
                |m| m.id.clone(),
            )
        })
        .await
    }

    async fn insert_token(&self, token: ApiToken) -> Result<()> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO api_tokens (token_hash, app_id, expires_at, created_at, read_only)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    token.hash.to_vec(),
                    token.app_id,
                    token.expires_at.map(ms),
                    ms(token.created_at),
                    token.read_only
                ],
            )
            .map_err(unique_as_conflict("token already exists"))?;
            Ok(())
        })
        .await
    }

    async fn find_token(&self, hash: &[u8; 32], now: DateTime<Utc>) -> Result<Option<ApiToken>> {
        let hash = *hash;
        self.read(move |c| {
            c.prepare_cached(
                "SELECT app_id, expires_at, created_at, read_only FROM api_tokens
                 WHERE token_hash = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
            )
            .map_err(backend)?
            .query_row(params![hash.to_vec(), ms(now)], |r| {
                Ok(ApiToken {
                    hash,
                    app_id: r.get(0)?,
                    expires_at: r.get::<_, Option<i64>>(1)?.map(from_ms),
                    created_at: from_ms(r.get(2)?),
                    read_only: r.get(3)?,
                })
            })
            .optional()
            .map_err(backend)
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
                                   AND created_at >= ?3 AND (?4 IS NULL OR created_at < ?4))",
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
}

#[cfg(test)]
mod keyed_tests;

#[cfg(test)]
mod intake_tests;

#[cfg(test)]
mod full_disk_tests;

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) fn app(uid: Option<&str>) -> Application {
        let now = Utc::now();
        Application {
            id: new_id("app"),
            uid: uid.map(str::to_string),
            name: "n".into(),
            throttle_rate: None,
            metadata: Default::default(),
            retry_policy: None,
            validate_payloads: false,
            created_at: now,
            updated_at: now,
        }
    }

    #[tokio::test]
    async fn group_commit_isolates_failing_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("db.sqlite")).unwrap());
        // Many concurrent writes, some colliding on uid: the collisions fail alone.
        let mut tasks = vec![];
        for i in 0..200 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.create_app(app(Some(&format!("u{}", i % 100)))).await
            }));
        }
        let mut ok = 0;
        let mut conflicts = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::Conflict(_)) => conflicts += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!((ok, conflicts), (100, 100));
        let page = store
            .list_apps(
                &ListQuery {
                    limit: 250,
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(page.data.len(), 100);
    }

    #[tokio::test]
    async fn pagination_walks_forward_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
        let mut ids = vec![];
        for _ in 0..7 {
            ids.push(store.create_app(app(None)).await.unwrap().id);
        }
        ids.sort();
        let q = |it: Option<String>| ListQuery {
            limit: 3,
            iterator: it,
            order: Order::Ascending,
        };
        let p1 = store.list_apps(&q(None), None).await.unwrap();
        let p2 = store
            .list_apps(&q(p1.iterator.clone()), None)
            .await
            .unwrap();
        let p3 = store
            .list_apps(&q(p2.iterator.clone()), None)
            .await
            .unwrap();
        let got: Vec<_> = [&p1, &p2, &p3]
            .iter()
            .flat_map(|p| p.data.iter().map(|a| a.id.clone()))
            .collect();
        assert_eq!(got, ids);
        assert!(!p1.done && !p2.done && p3.done);
        let back = store
            .list_apps(&q(p3.prev_iterator.clone()), None)
            .await
            .unwrap();
        assert_eq!(back.data, p2.data);
    }

    pub(super) fn endpoint(app_id: &str, max_concurrency: u32) -> Endpoint {
        let now = Utc::now();
        Endpoint {
            id: new_id("ep"),
            app_id: app_id.into(),
            uid: None,
            url: "http://127.0.0.1:1/".into(),
            disabled: false,
            settings: EndpointSettings {
                max_concurrency: Some(max_concurrency),
                ..Default::default()
            },
            created_at: now,
            updated_at: now,
            failing_since: None,
        }
    }

    pub(super) fn message(app_id: &str) -> Message {
        Message {
            id: new_id("msg"),
            app_id: app_id.into(),
            event_id: None,
            event_type: "t".into(),
            payload: "{}".into(),
            channels: None,
            tags: None,
            created_at: now(),
            deliver_at: None,
        }
    }

    pub(super) fn report_for(d: &ClaimedDelivery, next: NextStep) -> AttemptReport {
        AttemptReport {
            attempt: Attempt {
                id: new_id("atmpt"),
                app_id: d.message.app_id.clone(),
                msg_id: d.message.id.clone(),
                endpoint_id: d.endpoint.id.clone(),
                url: d.endpoint.url.clone(),
                attempted_at: Utc::now(),
                status_code: Some(500),
                duration_ms: 1,
                succeeded: next == NextStep::Succeeded,
                error_kind: None,
                response: String::new(),
                trigger: Trigger::Scheduled,
            },
            next,
            disable_endpoint: false,
            disable_if_failing_since: None,
        }
    }

    #[tokio::test]
    async fn leases_guard_finishing_writes_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
        let a = store.create_app(app(None)).await.unwrap();
        let ep = store.create_endpoint(endpoint(&a.id, 8)).await.unwrap();
        store.create_message(message(&a.id)).await.unwrap();
        let lease = chrono::Duration::seconds(30);
        let t0 = Utc::now();
        let first = store
            .claim_deliveries(t0, lease, 10, 10, &[])
            .await
            .unwrap();
        assert_eq!(first.len(), 1);
        // Claimed work is not handed out twice while its lease holds...
        assert!(store
            .claim_deliveries(t0, lease, 10, 10, &[])
            .await
            .unwrap()
            .is_empty());
        // ...but is taken over once it expires (a crashed worker).
        let later = t0 + chrono::Duration::seconds(31);
        let second = store
            .claim_deliveries(later, lease, 10, 10, &[])
            .await
            .unwrap();
        assert_eq!(second.len(), 1);
        assert_ne!(first[0].lease_token, second[0].lease_token);
        // The first worker's late report is logged but changes nothing.
        let out = store
            .report_attempt(
                first[0].id,
                &first[0].lease_token,
                report_for(&first[0], NextStep::Failed),
            )
            .await
            .unwrap();
        assert_eq!(out.applied, Applied::LeaseLost);
        let out = store
            .report_attempt(
                second[0].id,
                &second[0].lease_token,
                report_for(&second[0], NextStep::Succeeded),
            )
            .await
            .unwrap();
        assert_eq!(out.applied, Applied::Yes);
        let views = store
            .list_message_deliveries(
                &a.id,
                &first[0].message.id,
                &ListQuery {
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(views.data[0].status, DeliveryStatus::Succeeded);
        assert_eq!(views.data[0].endpoint_id, ep.id);
        let attempts = store
            .list_attempts(
                &a.id,
                &AttemptQuery {
                    list: ListQuery {
                        limit: 10,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(attempts.data.len(), 2, "both attempts are in the log");
    }

    /// An endpoint deleted while its attempt ran: the report applies to nothing, and says
    /// so apart from a lease taken over (which only another claim can cause).
    #[tokio::test]
    async fn a_report_for_a_deleted_endpoint_finds_its_delivery_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
        let a = store.create_app(app(None)).await.unwrap();
        let ep = store.create_endpoint(endpoint(&a.id, 8)).await.unwrap();
        store.create_message(message(&a.id)).await.unwrap();
        let claimed = store
            .claim_deliveries(Utc::now(), chrono::Duration::seconds(30), 10, 10, &[])
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        store.delete_endpoint(&a.id, &ep.id).await.unwrap();
        let d = &claimed[0];
        let out = store
            .report_attempt(d.id, &d.lease_token, report_for(d, NextStep::Failed))
            .await
            .unwrap();
        assert_eq!(out.applied, Applied::DeliveryGone);
        assert!(!out.endpoint_disabled);
    }

    #[tokio::test]
    async fn full_endpoints_are_skipped_not_parked() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
        let a = store.create_app(app(None)).await.unwrap();
        let full = store.create_endpoint(endpoint(&a.id, 1)).await.unwrap();
        let other = store.create_endpoint(endpoint(&a.id, 1)).await.unwrap();
        store.create_message(message(&a.id)).await.unwrap();
        let lease = chrono::Duration::seconds(30);
        let now = Utc::now();
        let busy = vec![(full.id.clone(), usize::MAX)];
        let got = store
            .claim_deliveries(now, lease, 10, 10, &busy)
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].endpoint.id, other.id, "the full endpoint is skipped");
        // Nothing else is due on an endpoint with room: the next wake-up is the other
        // delivery's lease expiry, not the full endpoint's due work.
        let next = store
            .next_due(&busy, true)
            .await
            .unwrap()
            .expect("a lease expires");
        assert!(
            next > now + chrono::Duration::seconds(29),
            "{next} vs {now}"
        );
        // Once it has room, its work is claimable at once (it was not parked).
        let got = store
            .claim_deliveries(now, lease, 10, 10, &[])
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].endpoint.id, full.id);
        // A full application counts for all its endpoints.
        store.create_message(message(&a.id)).await.unwrap();
        let later = now + chrono::Duration::milliseconds(10);
        let busy = vec![(a.id.clone(), usize::MAX)];
        assert!(store
            .claim_deliveries(later, lease, 10, 10, &busy)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn claims_respect_endpoint_concurrency() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
        let a = store.create_app(app(None)).await.unwrap();
        let ep = store.create_endpoint(endpoint(&a.id, 2)).await.unwrap();
        for _ in 0..5 {
            store.create_message(message(&a.id)).await.unwrap();
        }
        let lease = chrono::Duration::seconds(30);
        let now = Utc::now();
        assert_eq!(
            store
                .claim_deliveries(now, lease, 10, 10, &[])
                .await
                .unwrap()
                .len(),
            2
        );
        let busy = vec![(ep.id.clone(), 2)];
        assert!(store
            .claim_deliveries(now, lease, 10, 10, &busy)
            .await
            .unwrap()
            .is_empty());
        let busy = vec![(ep.id.clone(), 1)];
        let soon = now + chrono::Duration::seconds(2);
        assert_eq!(
            store
                .claim_deliveries(soon, lease, 10, 10, &busy)
                .await
                .unwrap()
                .len(),
            1
        );
    }

    /// A failed attempt makes the endpoint failing: one delivery at a time, claimed only
    /// while the worker has room for failing endpoints; a success gives its full
    /// `maxConcurrency` back.
    #[tokio::test]
    async fn failing_endpoints_are_claimed_one_at_a_time_within_the_room_given() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
        let a = store.create_app(app(None)).await.unwrap();
        let dead = store.create_endpoint(endpoint(&a.id, 8)).await.unwrap();
        let b = store.create_app(app(None)).await.unwrap();
        let healthy = store.create_endpoint(endpoint(&b.id, 8)).await.unwrap();
        for _ in 0..5 {
            store.create_message(message(&a.id)).await.unwrap();
            store.create_message(message(&b.id)).await.unwrap();
        }
        let lease = chrono::Duration::seconds(30);
        let now = Utc::now();
        // Before any failure the endpoint is not failing: all five at once. One fails and
        // is retried at once; the other four are handed back.
        let healthy_full = vec![(healthy.id.clone(), usize::MAX)];
        let first = store
            .claim_deliveries(now, lease, 5, 5, &healthy_full)
            .await
            .unwrap();
        assert_eq!(first.len(), 5);
        assert!(first
            .iter()
            .all(|d| d.endpoint.id == dead.id && !d.endpoint.is_failing()));
        let t1 = now + chrono::Duration::milliseconds(1);
        store
            .report_attempt(
                first[0].id,
                &first[0].lease_token,
                report_for(&first[0], NextStep::RetryAt(t1)),
            )
            .await
            .unwrap();
        for d in &first[1..] {
            store
                .release_delivery(d.id, &d.lease_token, t1)
                .await
                .unwrap();
        }
        let t2 = now + chrono::Duration::seconds(1);
        // With the healthy endpoint full, the only due work is the failing endpoint's:
        // it counts for the next wake-up only when there is room for failing endpoints.
        let none = store.next_due(&healthy_full, false).await.unwrap();
        assert_eq!(none, None);
        let next = store.next_due(&healthy_full, true).await.unwrap();
        assert!(next.is_some_and(|t| t <= t2), "{next:?}");
        // No room for failing endpoints: only the healthy one's work is claimed.
        let got = store.claim_deliveries(t2, lease, 20, 0, &[]).await.unwrap();
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|d| d.endpoint.id == healthy.id), "{got:?}");
        // With room: the failing endpoint gets one delivery, marked failing.
        let got = store.claim_deliveries(t2, lease, 20, 3, &[]).await.unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].endpoint.is_failing());
        assert_eq!(got[0].endpoint.concurrency_cap(), 1);
        // It succeeds: the endpoint is healthy again and gets its full concurrency.
        store
            .report_attempt(
                got[0].id,
                &got[0].lease_token,
                report_for(&got[0], NextStep::Succeeded),
            )
            .await
            .unwrap();
        let got = store.claim_deliveries(t2, lease, 20, 0, &[]).await.unwrap();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got
            .iter()
            .all(|d| d.endpoint.id == dead.id && !d.endpoint.is_failing()));
    }

    #[tokio::test]
    async fn claims_give_a_throttled_endpoint_a_second_of_work() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
        let a = store.create_app(app(None)).await.unwrap();
        let mut ep = endpoint(&a.id, 100);
        ep.settings.throttle_rate = Some(3);
        let ep = store.create_endpoint(ep).await.unwrap();
        for _ in 0..10 {
            store.create_message(message(&a.id)).await.unwrap();
        }
        let lease = chrono::Duration::seconds(30);
        let now = Utc::now();
        let claimed = store
            .claim_deliveries(now, lease, 50, 50, &[])
            .await
            .unwrap();
        assert_eq!(claimed.len(), 3, "at most throttleRate per claim");
        // The dispatcher's "full for now" (pacing booked ahead) gets nothing.
        let full = vec![(ep.id.clone(), usize::MAX)];
        let soon = now + chrono::Duration::seconds(2);
        assert!(store
            .claim_deliveries(soon, lease, 50, 50, &full)
            .await
            .unwrap()
            .is_empty());
        let busy = vec![(ep.id.clone(), 3)];
        let later = now + chrono::Duration::seconds(4);
        assert_eq!(
            store
                .claim_deliveries(later, lease, 50, 50, &busy)
                .await
                .unwrap()
                .len(),
            3
        );
    }

    /// Under continuous writes with readers alongside, the WAL starts over instead of
    /// growing with everything ever written (it reached 1.4 GB in a 12 s benchmark).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wal_stays_bounded_under_continuous_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let wal = dir.path().join("db.sqlite-wal");
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut readers = vec![];
        for _ in 0..4 {
            let (s, done) = (store.clone(), done.clone());
            readers.push(tokio::spawn(async move {
                let q = ListQuery {
                    limit: 50,
                    ..Default::default()
                };
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    s.list_apps(&q, None).await.unwrap();
                }
            }));
        }
        let mut writers = vec![];
        for w in 0..32 {
            let s = store.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..400 {
                    let mut a = app(Some(&format!("w{w}-{i}")));
                    a.name = "x".repeat(600);
                    s.create_app(a).await.unwrap();
                }
            }));
        }
        let mut largest = 0;
        while writers.iter().any(|w| !w.is_finished()) {
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in writers.into_iter().chain(readers) {
            t.await.unwrap();
        }
        let bound = 3 * WAL_RESTART_FRAMES as u64 * (4096 + 24);
        assert!(
            largest < bound,
            "the WAL grew to {largest} bytes (bound {bound})"
        );
    }

    /// A durable write is acknowledged only once the WAL fsync that follows its commit has
    /// returned, and an fsync error reaches the caller.
    #[tokio::test]
    async fn durable_writes_wait_for_the_wal_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let (gate_tx, gate_rx) = mpsc::channel::<std::io::Result<()>>();
        let gate_rx = Mutex::new(gate_rx);
        let store = Arc::new(
            SqliteStore::open_with(
                &dir.path().join("db.sqlite"),
                move |wal| {
                    Box::new(move || {
                        let outcome = gate_rx.lock().unwrap().recv().unwrap();
                        wal.sync_data().and(outcome)
                    })
                },
                true,
            )
            .unwrap(),
        );
        let s = store.clone();
        let write = tokio::spawn(async move { s.create_app(app(Some("a"))).await });
        // Committed (readers see it) but not acknowledged while the fsync is held. (A
        // listing reads the database; `get_app` may answer from the lookup cache, which
        // a write clears only once it is acknowledged.)
        let all = ListQuery {
            limit: 10,
            ..Default::default()
        };
        let mut seen = false;
        for _ in 0..200 {
            if !store.list_apps(&all, None).await.unwrap().data.is_empty() {
                seen = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(seen, "the write was never committed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !write.is_finished(),
            "acknowledged before the WAL was synced"
        );
        // Meanwhile later writes run in the next, still open transaction: committed once
        // the fsync returns, in the next fsync.
        let s = store.clone();
        let second = tokio::spawn(async move { s.create_app(app(Some("c"))).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!second.is_finished());
        gate_tx.send(Ok(())).unwrap();
        write.await.unwrap().unwrap();
        gate_tx.send(Ok(())).unwrap();
        second.await.unwrap().unwrap();

        // Claiming an idempotency key does not wait for the held fsync (the request's own
        // durable writes come after it in the WAL); a durable write does.
        let claim = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            store.idempotency_begin("scope", "key", Utc::now(), chrono::Duration::seconds(60)),
        )
        .await
        .expect("claiming an idempotency key waited for the fsync");
        assert!(matches!(claim.unwrap(), IdempotencyState::Claimed));

        // A failed fsync fails the writes it covered.
        let s = store.clone();
        let write = tokio::spawn(async move { s.create_app(app(Some("b"))).await });
        gate_tx
            .send(Err(std::io::Error::other("disk on fire")))
            .unwrap();
        let err = write.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("fsync"), "{err}");
    }

    /// Cached lookups (misses included) follow every write at once.
    #[tokio::test]
    async fn cached_lookups_follow_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db.sqlite")).unwrap();
        assert!(store.get_app("shop").await.unwrap().is_none());
        let a = store.create_app(app(Some("shop"))).await.unwrap();
        assert_eq!(store.get_app("shop").await.unwrap().unwrap().id, a.id);
        assert_eq!(store.get_app(&a.id).await.unwrap().unwrap().name, "n");
        store
            .update_app(
                &a.id,
                Box::new(|a| {
                    a.name = "renamed".into();
                    a.uid = Some("store".into());
                    Ok(())
                }),
            )
            .await
            .unwrap();
        assert_eq!(store.get_app(&a.id).await.unwrap().unwrap().name, "renamed");
        assert!(store.get_app("shop").await.unwrap().is_none());
        assert_eq!(store.get_app("store").await.unwrap().unwrap().id, a.id);
        store.delete_app(&a.id).await.unwrap();
        assert!(store.get_app(&a.id).await.unwrap().is_none());
        assert!(store.get_app("store").await.unwrap().is_none());

        assert!(store
            .get_event_type("order.created")
            .await
            .unwrap()
            .is_none());
        let now = Utc::now();
        let et = EventType {
            name: "order.created".into(),
            description: "d".into(),
            archived: false,
            deprecated: false,
            schemas: None,
            group_name: None,
            feature_flags: None,
            validate_payloads: false,
            created_at: now,
            updated_at: now,
        };
        store.create_event_type(et).await.unwrap();
        let got = store
            .get_event_type("order.created")
            .await
            .unwrap()
            .unwrap();
        assert!(!got.validate_payloads);
        store
            .update_event_type(
                "order.created",
                Box::new(|e| {
                    e.validate_payloads = true;
                    Ok(())
                }),
            )
            .await
            .unwrap();
        let got = store
            .get_event_type("order.created")
            .await
            .unwrap()
            .unwrap();
        assert!(got.validate_payloads);
        store.expunge_event_type("order.created").await.unwrap();
        assert!(store
            .get_event_type("order.created")
            .await
            .unwrap()
            .is_none());
    }

    /// The lookup cache keeps within its byte budget and skips records too big to keep.
    #[test]
    fn lookup_cache_is_bounded_by_size() {
        let cache: LookupCache<String> = LookupCache::new(16_000, String::len);
        let generation = cache.get("k").unwrap_err();
        cache.put(generation, "big".into(), Some("x".repeat(2_000)));
        assert!(
            cache.get("big").is_err(),
            "an entry over 1/16 of the budget is not kept"
        );
        for i in 0..1_000 {
            cache.put(generation, format!("k{i}"), Some("x".repeat(500)));
            assert!(cache.inner.lock().unwrap().bytes <= 16_000);
        }
        assert_eq!(cache.get("k999"), Ok(Some("x".repeat(500))));
        cache.invalidate();
        assert!(cache.get("k999").is_err());
        // A lookup that started before the invalidation is not kept.
        cache.put(generation, "late".into(), None);
        assert!(cache.get("late").is_err());
    }

    #[tokio::test]
    async fn second_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let _first = SqliteStore::open(&path).unwrap();
        let err = SqliteStore::open(&path)
            .err()
            .expect("second open must fail");
        assert!(
            err.to_string().contains("another hookline process"),
            "{err}"
        );
    }

    /// Migration 5 rebuilds `messages` under a database that has data: messages, their
    /// deliveries and attempts survive, eventId stays unique per app (and only where
    /// given), and foreign keys are back on (deleting the app cascades).
    #[tokio::test]
    async fn migrations_5_and_6_keep_messages_and_their_references() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
                .unwrap();
            for (i, sql) in MIGRATIONS[..4].iter().enumerate() {
                conn.execute_batch(sql).unwrap();
                conn.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                    .unwrap();
            }
            conn.execute_batch(
                r#"
                INSERT INTO applications (id, uid, name, metadata, created_at, updated_at)
                    VALUES ('app_1', 'shop', 'Shop', '{}', 1, 1);
                INSERT INTO endpoints (id, app_id, url, disabled, settings, created_at, updated_at)
                    VALUES ('ep_1', 'app_1', 'http://127.0.0.1:1/', 0, '{}', 1, 1);
                INSERT INTO messages (id, app_id, event_id, event_type, payload, created_at)
                    VALUES ('msg_1', 'app_1', 'e1', 't', '{"a":1}', 1),
                           ('msg_2', 'app_1', NULL, 't', '{"a":2}', 2),
                           ('msg_3', 'app_1', NULL, 't', '{"a":3}', 3);
                INSERT INTO deliveries (app_id, msg_id, endpoint_id, status, attempts, trigger,
                                        scheduled_at, due_at, created_at, updated_at)
                    VALUES ('app_1', 'msg_1', 'ep_1', 'succeeded', 1, 0, 1, NULL, 1, 1);
                INSERT INTO attempts (id, app_id, msg_id, endpoint_id, url, attempted_at,
                                      status_code, duration_ms, succeeded, response, trigger)
                    VALUES ('atmpt_1', 'app_1', 'msg_1', 'ep_1', 'http://127.0.0.1:1/', 1,
                            200, 3, 1, 'ok', 0);
                "#,
            )
            .unwrap();
        }
        // Migration 6 keys the rows there are; the ones created below stay recent.
        let store = SqliteStore::open_manual_keys(&path).unwrap();
        let by_event = store.get_message("app_1", "e1").await.unwrap().unwrap();
        assert_eq!(
            (by_event.id.as_str(), &*by_event.payload),
            ("msg_1", r#"{"a":1}"#)
        );
        assert_eq!(
            store
                .get_message("app_1", "msg_3")
                .await
                .unwrap()
                .unwrap()
                .created_at,
            from_ms(3)
        );
        let mut dup = message("app_1");
        dup.event_id = Some("e1".into());
        assert!(matches!(
            store.create_message(dup).await,
            Err(StoreError::Conflict(_))
        ));
        store.create_message(message("app_1")).await.unwrap();
        store.create_message(message("app_1")).await.unwrap();
        let q = AttemptQuery {
            list: ListQuery {
                limit: 50,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            store.list_attempts("app_1", &q).await.unwrap().data.len(),
            1
        );
        let by_endpoint = AttemptQuery {
            endpoint_id: Some("ep_1".into()),
            ..q.clone()
        };
        let attempts = store.list_attempts("app_1", &by_endpoint).await.unwrap();
        assert_eq!(attempts.data[0].id, "atmpt_1");
        let messages = store
            .list_messages(
                "app_1",
                &MessageQuery {
                    list: q.list.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let ids: Vec<&str> = messages.data.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids.len(), 5, "{ids:?}");
        assert!(["msg_1", "msg_2", "msg_3"].iter().all(|m| ids.contains(m)));
        let deliveries = store
            .list_endpoint_deliveries("app_1", "ep_1", &q.list, None)
            .await
            .unwrap();
        assert_eq!(deliveries.data.len(), 3, "one migrated, two new");

        store.delete_app("app_1").await.unwrap();
        drop(store);
        let conn = Connection::open(&path).unwrap();
        let count = |table: &str| -> i64 {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(
            (count("messages"), count("deliveries"), count("attempts")),
            (0, 0, 0)
        );
        assert_eq!(
            (
                count("message_keys"),
                count("delivery_keys"),
                count("attempt_keys")
            ),
            (0, 0, 0)
        );
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let id = {
            let store = SqliteStore::open(&path).unwrap();
            store.create_app(app(Some("keep"))).await.unwrap().id
        };
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get_app("keep").await.unwrap().unwrap().id, id);
    }
}
