//! The `hookline` server wired together: configuration in, store opened, API served.
//!
//! Kept as a library with [`run`] taking its listener and its stop signal as arguments,
//! so tests start the real server on `127.0.0.1:0` and stop it when they like. The binary
//! (`main.rs`) only parses flags, sets up logging and waits for SIGTERM/SIGINT.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hookline_api::auth::{generate_token, hash_token};
use hookline_api::{AppState, Shared};
use hookline_config::{Config, Database};
use hookline_delivery::dispatcher::AttemptObserver;
use hookline_delivery::{Client, Dispatcher, DispatcherConfig, Guard};
use hookline_store::sealing::{KeySource, MainKey};
use hookline_store::sqlite::SqliteStore;
use hookline_store::{ApiToken, Store};
use tokio::net::TcpListener;
use tower::Layer;

pub mod backup;
pub mod cli;
pub mod copy;
pub mod listen;
pub mod listener;
pub mod operational;
pub mod retention;
pub mod rotate_key;
pub mod token;

/// Where the main key that seals endpoint secrets comes from: `--encryption-key` as
/// given (checked here), else the key file in `data_dir`.
pub fn key_source(given: Option<&str>, data_dir: &Path) -> Result<KeySource, String> {
    let key = given
        .map(MainKey::parse)
        .transpose()
        .map_err(|why| format!("--encryption-key (HOOKLINE_ENCRYPTION_KEY) {why}"))?;
    Ok(KeySource::new(key, data_dir))
}

/// Opens the configured store, running migrations and unlocking its main key.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let key = key_source(config.encryption_key.as_deref(), &config.data_dir)
        .map_err(anyhow::Error::msg)?;
    match &config.database {
        Database::Sqlite(path) => {
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || SqliteStore::open_sealed(&path, &key))
                .await?
                .context("opening the SQLite database")?;
            Ok(Arc::new(store))
        }
        Database::Postgres(url) => {
            let mut store =
                hookline_store::postgres::PgStore::connect(url, config.database_pool_size, &key)
                    .await
                    .map_err(anyhow::Error::msg)?;
            store
                .claim_node(&config.data_dir)
                .await
                .map_err(anyhow::Error::msg)?;
            Ok(Arc::new(store))
        }
    }
}

/// Applies the database's migrations and seals endpoint secrets still in the clear,
/// without serving; says what it did, in one line.
pub async fn migrate(database: &Database, key: &KeySource) -> Result<String, String> {
    match database {
        Database::Sqlite(path) => {
            let (p, key) = (path.clone(), key.clone());
            tokio::task::spawn_blocking(move || SqliteStore::open_sealed(&p, &key))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot open the SQLite database {}: {e}", path.display()))?;
            Ok(format!(
                "the SQLite database {} is at the current schema",
                path.display()
            ))
        }
        Database::Postgres(url) => {
            use hookline_store::postgres;
            let settings =
                postgres::PgSettings::parse(url).map_err(|e| format!("--database-url: {e}"))?;
            let pool = postgres::connect(&settings, 1).await?;
            let applied = postgres::migrate(&pool).await?;
            postgres::seal_in_place(&pool, key).await?;
            let version = postgres::schema_version(&pool).await?;
            Ok(match applied.as_slice() {
                [] => format!(
                    "PostgreSQL at {} is up to date (schema version {version})",
                    settings.target()
                ),
                [one] => format!(
                    "applied migration {one} to PostgreSQL at {}",
                    settings.target()
                ),
                [first, .., last] => format!(
                    "applied migrations {first} to {last} to PostgreSQL at {}",
                    settings.target()
                ),
            })
        }
    }
}

/// With no admin token configured and none stored, creates one and returns its text so
/// the caller can show it once. Only its hash is stored.
pub async fn ensure_admin_token(
    store: &dyn Store,
    config: &Config,
) -> anyhow::Result<Option<String>> {
    if config.admin_token.is_some() || store.has_admin_token().await? {
        return Ok(None);
    }
    let token = generate_token("sk");
    store
        .insert_token(ApiToken {
            hash: hash_token(&token),
            app_id: None,
            read_only: false,
            expires_at: None,
            created_at: hookline_store::now(),
            name: Some("first admin token".into()),
            prefix: Some(hookline_api::auth::token_prefix(&token)),
            last_used_at: None,
        })
        .await?;
    Ok(Some(token))
}

/// Serves the API on `listener` until `shutdown` completes, then drains open requests.
pub async fn run(
    config: Config,
    store: Arc<dyn Store>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut observers: Vec<Arc<dyn AttemptObserver>> = Vec::new();
    if let Some(url) = &config.operational_webhook_url {
        let app_id = operational::setup(
            store.as_ref(),
            url,
            config.operational_webhook_secret.as_deref(),
        )
        .await?;
        observers.push(Arc::new(operational::Notifier { app_id }));
    }
    let dispatcher = Dispatcher::with_observers(
        store.clone(),
        Client::new(
            Guard::new(config.allow_targets.clone()).deny(config.deny_targets.clone()),
            config.max_in_flight,
        ),
        DispatcherConfig {
            max_in_flight: config.max_in_flight,
            disable_after: Duration::from_secs(config.endpoint_disable_after_secs),
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
            lease: Duration::from_secs(config.lease_secs),
            max_endpoint_concurrency: config.max_endpoint_concurrency,
            svix_headers: config.svix_headers,
            // Tests and benchmarks only (their reference runs need the fixed limits of
            // before adaptive concurrency); not a setting.
            fixed_explicit_limits: std::env::var("HOOKLINE_TEST_FIXED_MAX_CONCURRENCY")
                .is_ok_and(|v| v == "1"),
            ..DispatcherConfig::default()
        },
        observers,
        wake,
    );
    let state = AppState::new(Shared {
        store: store.clone(),
        api_rate_limit: config
            .api_rate_limit
            .map(hookline_api::rate_limit::RateLimiter::new),
        token_uses: Default::default(),
        admin_token_hashes: config.admin_token.iter().map(|t| hash_token(t)).collect(),
        public_url: config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}")),
        wake: dispatcher.waker(),
        metrics: install_metrics(),
        queue_stats: Default::default(),
        role: config.role.as_str(),
        concurrency_limits: config.role.delivers().then(|| {
            let dispatcher = dispatcher.clone();
            Arc::new(move || dispatcher.concurrency_limits()) as hookline_api::ConcurrencyLimits
        }),
        default_signature: match config.default_signature {
            hookline_config::DefaultSignature::Standard => hookline_api::DefaultSignature::Standard,
            hookline_config::DefaultSignature::Ed25519 => hookline_api::DefaultSignature::Ed25519,
        },
        cors: if config.cors_allowed_origins.is_empty() {
            hookline_api::Cors::AnyOrigin
        } else {
            hookline_api::Cors::Origins(config.cors_allowed_origins.clone())
        },
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // An API-only process never runs its dispatcher: nothing is handed to it, and the
    // deliveries it stores wait for the workers' claims.
    let delivering = config
        .role
        .delivers()
        .then(|| tokio::spawn(dispatcher.run(stop_rx.clone())));
    let service = if config.role.serves_api() {
        let api = hookline_api::router(state.clone(), config.body_limit_bytes);
        // The console's pages first, everything else to the API; the console calls
        // the same API service in-process for its data.
        let console = hookline_console::Console::with_portal_frame_ancestors(
            api.clone(),
            state,
            &config.portal_frame_ancestors,
        );
        let site = hookline_console::router(console).fallback_service(api);
        tower_http::normalize_path::NormalizePathLayer::trim_trailing_slash().layer(site)
    } else {
        hookline_api::worker_router(state)
    };
    let purge = tokio::spawn(purge_idempotency_keys(store.clone()));
    let prune = tokio::spawn(retention::run(store, config.retention));
    let limits = listener::Limits {
        idle_timeout: Duration::from_secs(config.api_idle_timeout_secs),
        header_timeout: Duration::from_secs(config.api_header_timeout_secs),
        body_timeout: Duration::from_secs(config.api_body_timeout_secs),
        max_connections: listener::fit_connection_cap(
            config.api_max_connections,
            config.max_in_flight,
        ),
    };
    tracing::info!(
        %addr,
        role = config.role.as_str(),
        max_connections = limits.max_connections,
        "hookline API listening"
    );
    // One stop signal for both halves: the API stops taking requests, the dispatcher
    // stops claiming and drains.
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    // Draining waits for open connections to finish their requests, for at most the same
    // grace period as in-flight deliveries; a client stalled halfway through a request
    // cannot keep the process alive.
    listener::serve(
        listener,
        service,
        limits,
        stop_rx,
        Duration::from_secs(config.shutdown_grace_secs),
    )
    .await;
    if let Some(delivering) = delivering {
        delivering.await?;
    }
    purge.abort();
    prune.abort();
    tracing::info!("hookline stopped");
    Ok(())
}

/// Installs the process-wide Prometheus recorder once and returns its renderer.
fn install_metrics() -> Option<Arc<dyn Fn() -> String + Send + Sync>> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    let handle = HANDLE.get_or_init(|| {
        let buckets = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0,
        ];
        PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("hookline_attempt_duration_seconds".into()),
                &buckets,
            )
            // Around retention's 10 ms target per batch (`retention::TARGET`).
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("hookline_retention_batch_seconds".into()),
                    &[0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 1.0],
                )
            })
            .and_then(|b| b.install_recorder())
            .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
            .ok()
    });
    let handle = handle.clone()?;
    Some(Arc::new(move || handle.render()))
}

/// Forgets idempotency keys once they are older than the replay window.
async fn purge_idempotency_keys(store: Arc<dyn Store>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tick.tick().await;
        let cutoff = hookline_store::now() - hookline_api::idempotency::KEEP_FOR;
        match store.idempotency_purge(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(n, "purged idempotency keys"),
            Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed"),
        }
    }
}
