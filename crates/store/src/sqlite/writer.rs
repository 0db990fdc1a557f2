//! The writer thread and its helpers: group commit, the WAL fsync thread, the
//! checkpointer, and how a full disk is noticed and recovered from.

use super::*;

pub(super) type Finisher = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Makes everything written to the WAL so far durable (`fdatasync` of the WAL file).
pub(super) type SyncFn = Box<dyn FnMut() -> std::io::Result<()> + Send>;
pub(super) type JobFn = Box<dyn FnOnce(&Connection) -> (Ran, Finisher) + Send>;

/// How a write's statements went.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Ran {
    Ok,
    Failed,
    /// Failed because the disk is full.
    Full,
}

impl Ran {
    pub(super) fn of<T>(r: &Result<T>) -> Self {
        match r {
            Ok(_) => Self::Ok,
            Err(StoreError::StorageFull(_)) => Self::Full,
            Err(_) => Self::Failed,
        }
    }
}

/// Whether the disk holding the database is full, as the writes found it: set by a write
/// refused for lack of space (SQLite's `SQLITE_FULL`, an I/O error while the disk has no
/// room, `ENOSPC` from the WAL's fsync), cleared by the next commit that wrote to the WAL
/// once the disk has room beside it too ([`no_room`]).
/// Logged once per episode, a WARN when writes start failing and an INFO when they
/// succeed again, never per refused write: a full disk refuses every write, and a line
/// each would bury the one that matters.
pub(super) struct DiskState {
    pub(super) full: AtomicBool,
    /// The database file, for the log lines.
    pub(super) path: PathBuf,
}

impl DiskState {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            full: AtomicBool::new(false),
            path,
        }
    }

    pub(super) fn is_full(&self) -> bool {
        self.full.load(Ordering::SeqCst)
    }

    /// `writes` writes were refused because the disk is full.
    pub(super) fn refused(&self, writes: usize, cause: &str) {
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

    /// A commit wrote to the WAL: there is room again, if the disk says so too. On a
    /// nearly full disk a small write can still fit (in WAL pages SQLite reuses) while the
    /// next is refused; such a write does not end the episode, or the log would flap with
    /// every write that happened to fit.
    pub(super) fn wrote(&self) {
        if self.is_full() && no_room(&self.path) {
            return;
        }
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
pub(super) struct WriteJob {
    pub(super) run: JobFn,
    /// Whether the write must survive a power loss once acknowledged. Claims and
    /// hand-backs need not: losing one only makes the delivery due again (at-least-once
    /// holds; a restart hands back every claim anyway), so they are acknowledged at
    /// commit, before the fsync. Any later fsync makes them durable too: WAL commits
    /// reach the disk in order. But a claim may have picked deliveries of a message
    /// committed in the same group, and those must not be attempted before that message
    /// is durable: in a group with durable writes, the others wait for its fsync too.
    pub(super) durable: bool,
}

/// What the writer thread waits for: writes, and word from the sync thread.
pub(super) enum ToWriter {
    Write(WriteJob),
    /// The sync thread finished an fsync and waits for the next commit.
    Synced,
    /// The store was dropped: commit what is open and stop. (The sync thread holds a
    /// sender too, so the channel alone never closes.)
    Stop,
}

/// Durability of a write, see [`WriteJob::durable`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    Full,
    Lazy,
}

/// Checkpoints the WAL on its own thread and connection (passively: never blocking the
/// writer or readers), so the writer thread, the one serial part of the store, never
/// stops to copy pages. Ends when the returned sender is dropped.
pub(super) fn spawn_checkpointer(path: &Path) -> Result<mpsc::Sender<()>> {
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

thread_local! {
    /// Frames in the WAL after the writer thread's latest commit (set by [`note_wal_frames`]).
    pub(super) static WAL_FRAMES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
    /// Commits of the writer thread that wrote to the WAL (counted by [`note_wal_frames`]).
    pub(super) static WAL_COMMITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Attempts the running job recorded ([`count_attempt`]), kept only if it succeeds.
    static JOB_TALLY: std::cell::RefCell<Tally> = std::cell::RefCell::new(Tally::default());
    /// Attempts the open group's jobs recorded, added to `attempt_stats` before it commits.
    static GROUP_TALLY: std::cell::RefCell<Tally> = std::cell::RefCell::new(Tally::default());
}

/// Counts an attempt just inserted in `attempt_stats` (see [`crate::stats`]): once its
/// job's savepoint is released, in the statistics of the group it commits with.
pub(super) fn count_attempt(a: &Attempt) {
    JOB_TALLY.with(|t| {
        t.borrow_mut()
            .add(&a.endpoint_id, a.attempted_at, a.duration_ms, a.succeeded)
    });
}

/// Adds the group's counted attempts to `attempt_stats`, one upsert per row, in its own
/// savepoint: if that fails (a full disk), the group still commits, without them.
fn write_tally(conn: &Connection) {
    let tally = GROUP_TALLY.take();
    if tally.is_empty() {
        return;
    }
    let run = || -> rusqlite::Result<()> {
        exec_cached(conn, "SAVEPOINT stats")?;
        let mut stmt = conn.prepare_cached(
            "INSERT INTO attempt_stats (scope, span, start, bucket, succeeded, failed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (scope, span, start, bucket) DO UPDATE SET
                 succeeded = succeeded + excluded.succeeded, failed = failed + excluded.failed",
        )?;
        for (k, ok, failed) in tally.rows() {
            stmt.execute(params![k.scope, k.span, ms(k.start), k.bucket, ok, failed])?;
        }
        exec_cached(conn, "RELEASE stats")
    };
    if let Err(e) = run() {
        tracing::warn!(error = %e, "counting attempts in attempt_stats failed; the charts miss this group's");
        if !conn.is_autocommit() {
            let _ = exec_cached(conn, "ROLLBACK TO stats")
                .and_then(|_| exec_cached(conn, "RELEASE stats"));
        }
    }
}

/// SQLite's WAL hook: called on the committing (writer) thread after every commit.
/// Counts the pages each commit wrote (`hookline_sqlite_wal_pages_total`): the WAL only
/// grows between restarts, so a shorter WAL than before means it started over.
pub(super) fn note_wal_frames(
    _: &rusqlite::hooks::Wal,
    frames: std::ffi::c_int,
) -> rusqlite::Result<()> {
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
pub(super) enum GroupFailure {
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
/// time before this, see docs/benchmark-journal.md).
///
/// It also keeps [`DiskState`]: a group refused for lack of space marks the disk full,
/// the next commit that writes marks it free; while it is full and no write comes, the
/// writer tries a small write of its own every [`PROBE_EVERY`] ([`probe_room`]), so the
/// store (and the health check) notices by itself that space is back.
pub(super) fn writer_loop(
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
        if rolled_back {
            drop(GROUP_TALLY.take());
        } else {
            write_tally(&conn);
            rolled_back = conn.is_autocommit();
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
pub(super) fn group_error(failure: GroupFailure, db: &Path) -> StoreError {
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
pub(super) fn no_room(db: &Path) -> bool {
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
pub(super) fn probe_room(conn: &Connection, disk: &DiskState) {
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
pub(super) fn run_job(
    conn: &Connection,
    job: WriteJob,
    durable: &mut Vec<Finisher>,
    lazy: &mut Vec<Finisher>,
) -> Ran {
    if let Err(e) = exec_cached(conn, "SAVEPOINT job") {
        tracing::error!(error = %e, "sqlite savepoint failed");
    }
    let (ran, fin) = (job.run)(conn);
    let tally = JOB_TALLY.take();
    if ran == Ran::Ok {
        GROUP_TALLY.with(|g| g.borrow_mut().merge(tally));
    }
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
pub(super) fn spawn_syncer(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(endpoint_id: &str) -> Attempt {
        Attempt {
            id: "atmpt_1".into(),
            app_id: "app_1".into(),
            msg_id: "msg_1".into(),
            endpoint_id: endpoint_id.into(),
            url: "http://127.0.0.1:1/".into(),
            attempted_at: DateTime::from_timestamp(7_200, 0).unwrap(),
            status_code: Some(200),
            duration_ms: 5,
            succeeded: true,
            error_kind: None,
            response: String::new(),
            trigger: Trigger::Scheduled,
        }
    }

    /// An attempt counts only if its job's savepoint is kept: a job that fails after
    /// logging it (its statements undone) leaves nothing in the group's counts.
    #[test]
    fn only_jobs_that_succeed_count_their_attempts() {
        let conn = Connection::open_in_memory().unwrap();
        // The table alone (the rest of the migration reads tables not made here).
        let table = MIGRATIONS[10].split("CREATE INDEX").next().unwrap();
        conn.execute_batch(table).unwrap();
        exec_cached(&conn, "BEGIN").unwrap();
        let job = |ok: bool, ep: &'static str| WriteJob {
            run: Box::new(move |_| {
                count_attempt(&attempt(ep));
                let ran = if ok { Ran::Ok } else { Ran::Failed };
                (ran, Box::new(|_| {}) as Finisher)
            }),
            durable: false,
        };
        let (mut durable, mut lazy) = (Vec::new(), Vec::new());
        run_job(&conn, job(false, "ep_failed"), &mut durable, &mut lazy);
        run_job(&conn, job(true, "ep_kept"), &mut durable, &mut lazy);
        write_tally(&conn);
        exec_cached(&conn, "COMMIT").unwrap();
        let scopes: Vec<String> = conn
            .prepare("SELECT DISTINCT scope FROM attempt_stats ORDER BY scope")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(scopes, ["", "ep_kept"]);
        assert!(GROUP_TALLY.with(|g| g.borrow().is_empty()));
    }
}
