//! The `hookline` binary: parse flags, set up logs, serve until SIGTERM or SIGINT.

use hookline_config::{Command, Config, Database, LogFormat};
use hookline_store::StoreError;
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc's malloc: under the e2e load glibc's allocator took about
/// two fifths of the tokio worker's time (`_int_malloc`, `_int_free`, fastbin
/// consolidation); jemalloc cut the server's CPU for the e2e load by 13-19 % in alternating
/// runs, for about 1.5 MB more idle RSS. mimalloc saved as much CPU but added 10 MB idle and 30 MB peak RSS
/// (docs/benchmark-journal.md, "Fourth pass"). SQLite keeps glibc's allocator (overriding it too saved
/// nothing measurable and added 10 MB peak RSS).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    // tokio's own TOKIO_WORKER_THREADS still decides when set.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        runtime.worker_threads(default_worker_threads());
    }
    runtime.build()?.block_on(serve())
}

/// One core fewer than the machine has (at least one): the store's writer, sync and
/// checkpoint threads need CPU too, and the writer, the one serial part, keeps a core
/// busy under load. On 2 cores, one worker instead of two cut the idle create → receipt
/// latency by a third (p50 0.64–0.67 → 0.40–0.56 ms) at the same throughput
/// (docs/benchmark-journal.md, "Second pass").
fn default_worker_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1))
        .unwrap_or(1)
        .max(1)
}

async fn serve() -> anyhow::Result<()> {
    let (command, config) = match hookline_config::parse() {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("hookline: {e}");
            std::process::exit(2);
        }
    };
    match command {
        Command::Serve(_) => {
            let config = config.expect("serve has a config");
            init_logs(config.log_format);
            let store = match hookline::open_store(&config).await {
                Ok(store) => store,
                Err(e) => {
                    let e = disk_full_exits(&config, e);
                    // One line a person can act on (where, and why), not a backtrace.
                    eprintln!("hookline: cannot start: {e:#}");
                    std::process::exit(1);
                }
            };
            let token = hookline::ensure_admin_token(store.as_ref(), &config)
                .await
                .map_err(|e| disk_full_exits(&config, e))?;
            if let Some(token) = token {
                // Printed once, to stdout, never logged: only its hash is kept.
                println!("hookline: created an admin API token; it is shown only this once:");
                println!("{token}");
            }
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            println!("hookline: listening on http://{}", listener.local_addr()?);
            // `run` meets the store before serving only (setting up operational webhooks).
            let dir = database_dir(&config);
            hookline::run(config, store, listener, shutdown_signal())
                .await
                .map_err(|e| disk_full_exits_in(&dir, e))
        }
        Command::Migrate(args) => {
            init_logs(LogFormat::Text);
            let database = match hookline_config::migrate_database(&args) {
                Ok(db) => db,
                Err(e) => {
                    eprintln!("hookline: {e}");
                    std::process::exit(2);
                }
            };
            let key = match hookline_config::migrate_sealing(&args)
                .map_err(|e| e.to_string())
                .and_then(|(key, dir)| hookline::key_source(key.as_deref(), &dir))
            {
                Ok(key) => key,
                Err(e) => {
                    eprintln!("hookline: {e}");
                    std::process::exit(2);
                }
            };
            match hookline::migrate(&database, &key).await {
                Ok(report) => {
                    println!("hookline: {report}");
                    Ok(())
                }
                Err(e) => {
                    eprintln!("hookline: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Copy(args) => {
            // Warnings only: info lines would tear through the progress bar.
            init_logs_at(LogFormat::Text, "warn");
            match hookline::copy::run(&args).await {
                Ok(report) => {
                    println!("hookline: {report}");
                    Ok(())
                }
                Err(e) => {
                    eprintln!("hookline: copy failed: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Backup(args) => {
            init_logs_at(LogFormat::Text, "warn");
            std::process::exit(hookline::backup::run(&args).await)
        }
        Command::Token(args) => {
            init_logs_at(LogFormat::Text, "warn");
            std::process::exit(hookline::token::run(&args).await)
        }
        Command::RotateKey(args) => {
            init_logs_at(LogFormat::Text, "warn");
            std::process::exit(hookline::rotate_key::run(&args).await)
        }
        // listen, the API commands, completions and man: no logs of their own.
        tool => std::process::exit(hookline::cli::run(tool).await),
    }
}

/// The folder of the SQLite file (the data dir unless `--database-url` says otherwise).
fn database_dir(config: &Config) -> std::path::PathBuf {
    match &config.database {
        Database::Sqlite(path) => path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| config.data_dir.clone(), |p| p.to_path_buf()),
        Database::Postgres(_) => config.data_dir.clone(),
    }
}

/// A full disk at startup is the operator's to fix, and says so in one line (not an error
/// chain) before exiting 1; any other error is handed back.
fn disk_full_exits(config: &Config, e: anyhow::Error) -> anyhow::Error {
    disk_full_exits_in(&database_dir(config), e)
}

fn disk_full_exits_in(dir: &std::path::Path, e: anyhow::Error) -> anyhow::Error {
    if let Some(StoreError::StorageFull(_)) = e.downcast_ref::<StoreError>() {
        eprintln!(
            "hookline: cannot start: the disk holding {} is full",
            dir.display()
        );
        std::process::exit(1);
    }
    e
}

fn init_logs(format: LogFormat) {
    init_logs_at(format, "info")
}

/// Logs to stderr at `level` unless RUST_LOG says otherwise.
fn init_logs_at(format: LogFormat, level: &str) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(level))
        // tokio-postgres logs every statement with its parameters at debug: endpoint
        // secrets, custom header values, token hashes and payloads. Never, whatever
        // RUST_LOG asks (tests/e2e/secrets_in_logs.rs).
        .add_directive(
            "tokio_postgres::query=info"
                .parse()
                .expect("a valid directive"),
        );
    // Colour only for a person at a terminal: not in files, pipes or log collectors, and
    // never when NO_COLOR is set (https://no-color.org).
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; draining");
}
