//! Scratch PostgreSQL databases for runs on PostgreSQL (`--database-url`), and the CPU
//! the PostgreSQL server spends.

use anyhow::Context;

/// A database made for one server, dropped with [`Scratch::drop_now`].
pub struct Scratch {
    admin: String,
    name: String,
    pub url: String,
}

impl Scratch {
    /// Creates a fresh database on the server `admin` points to.
    pub async fn create(admin: &str) -> anyhow::Result<Scratch> {
        let name = format!(
            "hookline_bench_{}_{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        );
        client(admin)
            .await?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating the database {name}"))?;
        let (base, query) = admin.split_once('?').unwrap_or((admin, ""));
        let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
        let url = if query.is_empty() {
            format!("{server}/{name}")
        } else {
            format!("{server}/{name}?{query}")
        };
        Ok(Scratch {
            admin: admin.to_string(),
            name,
            url,
        })
    }

    /// A connection to the server for [`Scratch::transactions`], opened once and kept, so
    /// that its backend's CPU does not come and go between two CPU readings.
    pub async fn stats_client(&self) -> anyhow::Result<tokio_postgres::Client> {
        client(&self.admin).await
    }

    /// Transactions committed and rolled back in this database so far, as PostgreSQL's
    /// statistics have them: a backend reports its counts at most once a second while
    /// busy, and at its exit.
    pub async fn transactions(&self, stats: &tokio_postgres::Client) -> anyhow::Result<i64> {
        let row = stats
            .query_one(
                "SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database \
                 WHERE datname = $1",
                &[&self.name],
            )
            .await
            .context("reading pg_stat_database")?;
        Ok(row.get(0))
    }

    /// utime + stime, in seconds, of the PostgreSQL processes working for this database:
    /// its client backends and the server's background processes (WAL writer,
    /// checkpointer, autovacuum, …), but not other databases' clients, so that other
    /// work on a shared server stays out. As with [`server_cpu_s`], a process that ended
    /// since an earlier reading is missing from a later one.
    pub async fn cpu_s(&self, stats: &tokio_postgres::Client) -> anyhow::Result<f64> {
        let rows = stats
            .query(
                "SELECT pid FROM pg_stat_activity \
                 WHERE datname = $1 OR backend_type <> 'client backend'",
                &[&self.name],
            )
            .await
            .context("reading pg_stat_activity")?;
        Ok(rows
            .iter()
            .filter_map(|row| crate::server::proc_stats(&row.get::<_, i32>(0).to_string()).ok())
            .map(|s| s.cpu_s)
            .sum())
    }

    /// Drops the database (from a thread of its own: this may run inside the runtime).
    pub fn drop_now(self) {
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                client(&self.admin)
                    .await?
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        self.name
                    ))
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
    }
}

async fn client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| "connecting to --database-url".to_string())?;
    tokio::spawn(conn);
    Ok(client)
}

/// utime + stime of every process named `postgres` (the server, its backends and
/// workers), in seconds. Processes that ended since are not counted, so a figure
/// between two readings can miss a backend that came and went; hookline's pool keeps
/// its connections for the whole run.
pub fn server_cpu_s() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|pid| pid.chars().all(|c| c.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(|pid| crate::server::proc_stats(&pid).ok())
        .map(|s| s.cpu_s)
        .sum()
}
