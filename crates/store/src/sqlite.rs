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
//! may assume a single writer. Its parts, by responsibility:
//!
//! | file | holds |
//! |---|---|
//! | `sqlite.rs` | [`SqliteStore`]: opening, the write and read paths every method goes through |
//! | `sqlite/writer.rs` | the writer thread's group commit, the WAL fsync and checkpoint threads, full-disk handling |
//! | `sqlite/migrations.rs` | the schema's versions |
//! | `sqlite/queue.rs` | fan-out of a message to deliveries, the claim, attempt reports, leases ([`DeliveryQueue`]) |
//! | `sqlite/store.rs` | the management records and the delivery log's reads and actions ([`Store`]) |
//! | `sqlite/rows.rs` | row mapping, lookups by id or uid, error and value conversions |
//! | `sqlite/listing.rs` | cursor pagination |
//! | `sqlite/keyed.rs` | the key tables behind the listings by tenant |
//! | `sqlite/backup.rs` | `hookline backup`: a consistent copy while a server runs |
//! | `sqlite/retention.rs` | deleting old messages, dropping expired payloads, giving space back |

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock, Weak};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Row};

use std::collections::HashMap;

use crate::common::Fresh;
use crate::sealing::{self, KeySource, Sealer};
use crate::stats::Tally;
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

/// The embedded store (see the module docs). One process owns a database file.
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
    /// Seals endpoint settings as they are written (see [`sealing`]).
    sealer: Sealer,
}

/// Takes the lock that makes one process the database's only user.
fn lock_database(path: &Path) -> Result<std::fs::File> {
    let lock_path = lock_path(path);
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
    Ok(lock)
}

/// The key file beside the database file.
fn default_key(path: &Path) -> KeySource {
    let dir = path.parent().unwrap_or(Path::new("."));
    KeySource::File(dir.join(sealing::KEY_FILE))
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs pending migrations, with
    /// the main key in the key file beside it (see [`SqliteStore::open_sealed`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_sealed(path.as_ref(), &default_key(path.as_ref()))
    }

    /// Opens (creating if needed) the database file, runs pending migrations, unlocks
    /// its main key from `key` (refusing a wrong or missing one before anything is
    /// written) and seals any endpoint settings still in the clear.
    pub fn open_sealed(path: impl AsRef<Path>, key: &KeySource) -> Result<Self> {
        Self::open_with(
            path.as_ref(),
            key,
            |wal| Box::new(move || wal.sync_data()),
            true,
        )
    }

    /// [`open`](Self::open), but rows reach the key tables only through
    /// [`index_keys_now`](Self::index_keys_now): tests choose where the watermark is.
    #[cfg(test)]
    pub(crate) fn open_manual_keys(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(
            path.as_ref(),
            &default_key(path.as_ref()),
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
        key: &KeySource,
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
        let lock = lock_database(&path)?;
        let mut conn = Connection::open(&path).map_err(backend)?;
        // Space freed by the retention pass goes back to the file system a little at a
        // time (`reclaim_space`), which needs incremental auto-vacuum. It can only be
        // set before the first table exists: a database created by an older hookline
        // keeps `none` (its free pages are reused for new rows, the file keeps its size;
        // README "Retention" says how to convert one).
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")
            .map_err(backend)?;
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
        let sealer = seal_in_place(&mut conn, key)?;
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
            sealer,
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

    /// The attached intake, if it is still there.
    fn intake(&self) -> Option<Arc<dyn Intake>> {
        self.intake
            .read()
            .expect("intake lock")
            .as_ref()
            .and_then(Weak::upgrade)
    }

    /// Commits a message and its deliveries (to `only` that endpoint, if given); the
    /// attached intake gets those it reserved slots for once the commit is durable (if it
    /// does not commit, the slots are given back).
    async fn write_message(&self, msg: Message, only: Option<String>) -> Result<Message> {
        let intake = self.intake();
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

/// The file a process serving the database at `path` holds locked (`hookline copy` takes
/// it too, so it never reads a database a server is writing).
pub(crate) fn lock_path(path: &Path) -> PathBuf {
    path.with_extension("lock")
}

/// The schema version this binary writes and reads (`PRAGMA user_version`).
pub(crate) fn schema_version() -> usize {
    MIGRATIONS.len()
}

fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(backend)?;
    conn.execute_batch("PRAGMA query_only = ON; PRAGMA busy_timeout = 5000;")
        .map_err(backend)?;
    tune(&conn)?;
    Ok(conn)
}

/// Settings that keep hot statements cheap (measured with `perf`, see docs/benchmark-journal.md):
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

mod backup;
mod keyed;
mod listing;
mod migrations;
mod queue;
mod retention;
mod rows;
mod sealed;
mod store;
mod tokens;
mod writer;

use crate::cache::*;
pub use backup::{backup, BackupReport};
use keyed::*;
use listing::*;
use migrations::*;
use queue::*;
use rows::*;
pub use sealed::rotate_key;
use sealed::seal_in_place;
pub use tokens::TokenTable;
use writer::*;

#[cfg(test)]
mod keyed_tests;

#[cfg(test)]
mod intake_tests;

#[cfg(test)]
mod full_disk_tests;

#[cfg(test)]
pub(crate) mod tests;
