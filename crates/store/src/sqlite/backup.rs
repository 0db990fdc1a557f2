//! `hookline backup`: a consistent copy of the SQLite database while a server uses it.
//!
//! SQLite's online backup API copies every page of the database as one read transaction
//! sees it (all pages in one step: stepping page by page would start over each time the
//! server commits, which under load is always). In WAL mode a reader never blocks the
//! writer nor waits for it, so the server keeps serving meanwhile; and the copy is the
//! database as of the moment the read began: every write committed before it (so every
//! message the API acknowledged before the backup started) is in it, none after.
//!
//! The server's lock file ([`lock_path`]) is left alone: it keeps a second *server* (or
//! `hookline copy`, which wants a database nobody writes) off the file, not readers.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::OpenFlags;

use super::*;

/// How long a backup waits for the database while it is busy (a migration running, an
/// exclusive lock) before giving up.
const BUSY_FOR: Duration = Duration::from_secs(60);

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub bytes: u64,
    pub pages: u64,
    pub took: Duration,
}

/// Copies the hookline database at `source` into the new file `to` (see the module
/// docs). The copy is written beside `to` and renamed into place once complete, synced
/// and checked, so `to` is either absent or a whole database. Errors are one line for a
/// person: what was wrong, and with which file.
pub fn backup(source: &Path, to: &Path) -> std::result::Result<BackupReport, String> {
    let started = Instant::now();
    if !source.is_file() {
        return Err(format!(
            "there is no SQLite database at {}",
            source.display()
        ));
    }
    if to.exists() {
        return Err(format!(
            "--to: {} already exists; back up into a new file (or remove it first)",
            to.display()
        ));
    }
    let dir = match to.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "--to: the directory {} does not exist",
            dir.display()
        ));
    }
    // Never create or change the source: read-write (a WAL reader needs the shared
    // memory index), no create, and query_only on the connection.
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", source.display()))?;
    src.execute_batch("PRAGMA query_only = ON; PRAGMA busy_timeout = 5000;")
        .map_err(|e| format!("cannot read {}: {e}", source.display()))?;
    let version: i64 = src
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| {
            format!(
                "{} is not a readable SQLite database: {e}",
                source.display()
            )
        })?;
    if version == 0 {
        return Err(format!(
            "{} is not a hookline database (no hookline schema in it)",
            source.display()
        ));
    }

    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let partial = dir.join(format!(".{name}.partial"));
    let _ = std::fs::remove_file(&partial);
    let copied = copy_pages(&src, &partial).and_then(|pages| {
        let file = std::fs::File::open(&partial).map_err(|e| e.to_string())?;
        file.sync_all().map_err(|e| e.to_string())?;
        Ok(pages)
    });
    let pages = match copied {
        Ok(pages) => pages,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(format!("backing up {}: {e}", source.display()));
        }
    };
    if let Err(e) = std::fs::rename(&partial, to) {
        let _ = std::fs::remove_file(&partial);
        return Err(format!("--to: cannot write {}: {e}", to.display()));
    }
    // The rename itself survives a power cut once the directory is synced.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    let bytes = std::fs::metadata(to).map(|m| m.len()).unwrap_or(0);
    Ok(BackupReport {
        bytes,
        pages,
        took: started.elapsed(),
    })
}

/// Copies every page of `src` into a new database at `path` in one step, then checks
/// the copy; returns the number of pages.
fn copy_pages(src: &Connection, path: &Path) -> std::result::Result<u64, String> {
    let mut dst = Connection::open(path).map_err(|e| e.to_string())?;
    {
        let copy = Backup::new(src, &mut dst).map_err(|e| e.to_string())?;
        let waiting_since = Instant::now();
        loop {
            match copy.step(-1).map_err(|e| e.to_string())? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked if waiting_since.elapsed() < BUSY_FOR => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                StepResult::Busy | StepResult::Locked => {
                    return Err(format!(
                        "the database stayed locked for {}s; try again",
                        BUSY_FOR.as_secs()
                    ))
                }
                _ => {}
            }
        }
    }
    // A rollback journal for the file at rest (it holds no -wal beside it to forget
    // when copied elsewhere); a server opening it switches it to WAL again.
    let check: String = dst
        .query_row("PRAGMA journal_mode = DELETE", [], |r| {
            r.get::<_, String>(0)
        })
        .and_then(|_| dst.query_row("PRAGMA quick_check", [], |r| r.get(0)))
        .map_err(|e| e.to_string())?;
    if check != "ok" {
        return Err(format!("the copy does not check out: {check}"));
    }
    let pages: i64 = dst
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    dst.close().map_err(|(_, e)| e.to_string())?;
    Ok(pages as u64)
}
