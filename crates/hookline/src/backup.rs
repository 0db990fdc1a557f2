//! `hookline backup`: the command around [`hookline_store::sqlite::backup`], which does
//! the work. Here: which database the flags name, and what is printed.

use hookline_config::{BackupArgs, Database};

/// Runs the backup the flags describe and returns the process's exit code: 0 done, 1 the
/// backup failed, 2 the flags name no SQLite database (PostgreSQL: use pg_dump).
pub async fn run(args: &BackupArgs) -> i32 {
    let source = match hookline_config::migrate_database(&args.database) {
        Ok(Database::Sqlite(path)) => path,
        Ok(Database::Postgres(_)) => {
            eprintln!(
                "hookline: backup copies the embedded SQLite database; this installation \
                 uses PostgreSQL: back it up with pg_dump, e.g. \
                 `pg_dump --format=custom --file=hookline.dump \"$HOOKLINE_DATABASE_URL\"` \
                 (restore with pg_restore; see README, \"Backups\")"
            );
            return 2;
        }
        Err(e) => {
            eprintln!("hookline: {e}");
            return 2;
        }
    };
    let to = args.to.clone();
    let from = source.clone();
    match tokio::task::spawn_blocking(move || hookline_store::sqlite::backup(&from, &to)).await {
        Ok(Ok(report)) => {
            println!(
                "hookline: backed up {} to {} ({} bytes, {} pages, in {:.1}s)",
                source.display(),
                args.to.display(),
                report.bytes,
                report.pages,
                report.took.as_secs_f64()
            );
            0
        }
        Ok(Err(e)) => {
            eprintln!("hookline: backup failed: {e}");
            1
        }
        Err(e) => {
            eprintln!("hookline: backup failed: {e}");
            1
        }
    }
}
