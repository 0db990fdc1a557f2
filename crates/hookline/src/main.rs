//! The `hookline` binary: parse flags, set up logs, serve until SIGTERM or SIGINT.

use hookline_config::{Command, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
            let store = hookline::open_store(&config).await?;
            if let Some(token) = hookline::ensure_admin_token(store.as_ref(), &config).await? {
                // Printed once, to stdout, never logged: only its hash is kept.
                println!("hookline: created an admin API token; it is shown only this once:");
                println!("{token}");
            }
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            println!("hookline: listening on http://{}", listener.local_addr()?);
            hookline::run(config, store, listener, shutdown_signal()).await
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
