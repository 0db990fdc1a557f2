//! hookline's configuration: command-line flags, `HOOKLINE_*` environment variables and an
//! optional TOML file (`--config`), merged into one validated [`Config`].
//!
//! Precedence: flag, then environment variable, then file, then built-in default. This
//! crate only parses and validates; it opens no sockets and no databases.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use ipnet::IpNet;
use serde::Deserialize;

mod tools;
pub use tools::*;

/// The `hookline` command line.
#[derive(Debug, Parser)]
#[command(
    name = "hookline",
    version,
    about = "Self-hosted webhook delivery server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the larger variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the API server and the delivery workers.
    Serve(ServeArgs),
    /// Apply the database's schema migrations without serving (`serve` applies them at
    /// start too); safe to run while other hookline processes start.
    Migrate(MigrateArgs),
    /// Copy an installation from its SQLite database into PostgreSQL, to move to it.
    ///
    /// Copies applications, event types, endpoints (secrets and all settings), API tokens,
    /// idempotency keys, every message, and the deliveries still to be made, keeping ids
    /// and times; deliveries that were being attempted when the SQLite server stopped
    /// become due at once. Finished (succeeded or failed) deliveries and the attempt log
    /// are copied only with --with-history. The target's schema is migrated first, and
    /// everything is written in one transaction: a copy that fails leaves the target as
    /// it was. The hookline serving the SQLite file must be stopped first.
    #[command(after_help = COPY_AFTER_HELP)]
    Copy(CopyArgs),
    /// Copy the embedded SQLite database into a new file, consistently, while the server
    /// keeps running (SQLite's online backup): the copy holds everything committed before
    /// the backup began. For PostgreSQL, use pg_dump.
    #[command(after_help = BACKUP_AFTER_HELP)]
    Backup(BackupArgs),
    /// Create, list and revoke API tokens directly in the database (no server needed):
    /// to bootstrap an installation or recover from a lost token. The server need not
    /// be stopped; a revoked token is refused by its next request.
    Token(TokenArgs),
    /// Re-seal every endpoint's secrets and header values under a new main key, in one
    /// transaction. Stop every hookline process on the database first; start them again
    /// with the new key.
    #[command(after_help = ROTATE_KEY_AFTER_HELP)]
    RotateKey(RotateKeyArgs),
    /// Receive webhooks on 127.0.0.1, print each one and check its signature.
    Listen(ListenArgs),
    /// Create, list, show and delete applications.
    App(AppArgs),
    /// Add, list and manage an application's endpoints.
    Endpoint(EndpointArgs),
    /// Add and list event types.
    EventType(EventTypeArgs),
    /// Send a message: one event for one application.
    Send(SendArgs),
    /// Show delivery attempts of a message or to an endpoint.
    Attempts(AttemptsArgs),
    /// Resend an endpoint's failed deliveries since a time, and wait for their outcomes.
    Recover(RecoverArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Print the man page (or write one per command into a directory).
    Man(ManArgs),
}

const COPY_AFTER_HELP: &str = "Counts of every kind are checked against the target before \
the copy commits; a mismatch is an error and nothing is written. Afterwards, start hookline \
with --database-url set to the target.

Example:
  hookline copy --from sqlite://./hookline-data --to postgres://hookline@db:5432/hookline";

const BACKUP_AFTER_HELP: &str = "To restore: stop hookline, copy the backup into the data \
dir as hookline.sqlite (remove any hookline.sqlite-wal and -shm left there), start hookline.

Example:
  hookline backup --data-dir ./hookline-data --to /backups/hookline-$(date +%F).sqlite";

const ROTATE_KEY_AFTER_HELP: &str = "With the key in the key file (no --encryption-key), \
a new key is generated and the file replaced: it holds the new key and the old one while \
the secrets are re-sealed, then the new key only. With --encryption-key, give the new key \
with --new-key and start hookline with it afterwards. The keys are never printed.

Example:
  hookline rotate-key --data-dir ./hookline-data";

/// Flags of `hookline rotate-key`.
#[derive(Debug, Clone, Args)]
pub struct RotateKeyArgs {
    /// Which database and its current key: as for `serve` (`--data-dir`,
    /// `--database-url`, `--config`, `--encryption-key`).
    #[command(flatten)]
    pub database: MigrateArgs,
    /// The new main key, base64 of 32 random bytes (`openssl rand -base64 32`); default:
    /// a new one, written to the key file (only when the current key is in that file).
    #[arg(
        long,
        env = "HOOKLINE_NEW_ENCRYPTION_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub new_key: Option<String>,
}

/// `hookline token`: what to do.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub action: TokenAction,
}

/// The `hookline token` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenAction {
    /// Create a token and print it, once (only its hash is stored).
    Create(TokenCreateArgs),
    /// List stored tokens (never their text).
    List(TokenListArgs),
    /// Revoke a token by its id (`tok_...`, from `list`).
    Revoke(TokenRevokeArgs),
}

/// Flags of `hookline token create`.
#[derive(Debug, Clone, Args)]
pub struct TokenCreateArgs {
    /// Which database: as for `serve` (`--data-dir`, `--database-url`, `--config`).
    #[command(flatten)]
    pub database: MigrateArgs,
    /// What the token is for, for people.
    #[arg(long)]
    pub name: String,
    /// Limit the token to this application (id or uid); default: an admin token.
    #[arg(long, value_name = "APP")]
    pub app: Option<String>,
    /// The token may only read (GET).
    #[arg(long)]
    pub read_only: bool,
    /// How long until it expires (`90d`, `12h`, `30m`); default: never.
    #[arg(long, value_name = "DURATION", value_parser = tools::parse_duration)]
    pub expires_in: Option<std::time::Duration>,
}

/// Flags of `hookline token list`.
#[derive(Debug, Clone, Args)]
pub struct TokenListArgs {
    /// Which database: as for `serve` (`--data-dir`, `--database-url`, `--config`).
    #[command(flatten)]
    pub database: MigrateArgs,
}

/// Flags of `hookline token revoke`.
#[derive(Debug, Clone, Args)]
pub struct TokenRevokeArgs {
    /// Which database: as for `serve` (`--data-dir`, `--database-url`, `--config`).
    #[command(flatten)]
    pub database: MigrateArgs,
    /// The token's id, `tok_...`.
    #[arg(value_name = "TOKEN_ID")]
    pub id: String,
}

/// Flags of `hookline backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// Which database: as for `serve` (`--data-dir`, `--database-url`, `--config`).
    #[command(flatten)]
    pub database: MigrateArgs,

    /// The file to write the copy to; it must not exist yet.
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
}

/// Flags of `hookline copy`.
#[derive(Debug, Clone, Args)]
pub struct CopyArgs {
    /// The SQLite database to copy: `sqlite://PATH`, PATH being the database file or the
    /// data dir holding it (`hookline.sqlite`). It is only read.
    #[arg(long, value_name = "sqlite://PATH")]
    pub from: String,

    /// The PostgreSQL database to copy into: a `postgres://` or `postgresql://` URL
    /// (`?sslmode=` as for serve). It must hold no applications or event types, unless
    /// --allow-non-empty.
    #[arg(long, value_name = "postgres://...")]
    pub to: String,

    /// Also copy the attempt log and finished (succeeded or failed) deliveries. Without
    /// it, only deliveries still to be made are copied: messages are always copied, so a
    /// message whose deliveries all finished is kept, without them and its attempts.
    #[arg(long)]
    pub with_history: bool,

    /// Copy into a database that already holds applications or event types, adding to
    /// them. A record present in both (same id, uid, event type name, ...) is an error,
    /// and nothing is written.
    #[arg(long)]
    pub allow_non_empty: bool,
}

/// The SQLite file's name in a data dir.
pub const SQLITE_FILE: &str = "hookline.sqlite";

impl CopyArgs {
    /// The `--from` path (as given: a file or a data dir) and the `--to` URL, checked
    /// for their schemes.
    pub fn source_and_target(&self) -> Result<(PathBuf, String), ConfigError> {
        let from = match parse_database_url(&self.from) {
            Ok(Database::Sqlite(path)) => path,
            Ok(Database::Postgres(_)) | Err(_) => {
                return Err(ConfigError::Invalid {
                    field: "--from",
                    message: "must be sqlite://PATH (the SQLite file or the data dir holding it)"
                        .into(),
                })
            }
        };
        let to = match parse_database_url(&self.to) {
            Ok(Database::Postgres(url)) => url,
            Ok(Database::Sqlite(_)) | Err(_) => {
                return Err(ConfigError::Invalid {
                    field: "--to",
                    message: "must be a postgres:// or postgresql:// URL".into(),
                })
            }
        };
        Ok((from, to))
    }
}

/// Flags of `hookline migrate`: which database, as for `serve`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// TOML file; its `data_dir` and `database_url` are used, flags and env vars win.
    #[arg(long, env = "HOOKLINE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory of the embedded SQLite database.
    #[arg(long, env = "HOOKLINE_DATA_DIR", default_value = "./hookline-data")]
    pub data_dir: PathBuf,

    /// `sqlite://PATH` or `postgres://...`; default: the SQLite file in the data dir.
    #[arg(long, env = "HOOKLINE_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,

    /// Main key that seals endpoint secrets and custom header values at rest: 32 random
    /// bytes in base64 (`openssl rand -base64 32`). Default: the key file
    /// `encryption.key` in the data dir, created at the first start. Every process on
    /// one PostgreSQL database needs the same key.
    #[arg(
        long,
        env = "HOOKLINE_ENCRYPTION_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub encryption_key: Option<String>,
}

/// Flags of `hookline serve`. Every flag is also an environment variable and a key of the
/// TOML file (same name, snake_case).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below; flags and env vars override it.
    #[arg(long, env = "HOOKLINE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address the HTTP API listens on.
    #[arg(long, env = "HOOKLINE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for hookline's own files (the embedded SQLite database).
    #[arg(long, env = "HOOKLINE_DATA_DIR", default_value = "./hookline-data")]
    pub data_dir: PathBuf,

    /// `sqlite://PATH` or `postgres://...`; default: the SQLite file in the data dir.
    #[arg(long, env = "HOOKLINE_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,

    /// Most connections to PostgreSQL this process holds (ignored on SQLite).
    #[arg(long, env = "HOOKLINE_DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,

    /// CIDRs that outbound deliveries may reach although they are loopback, private or
    /// otherwise special (comma-separated, repeatable), e.g. `127.0.0.0/8`.
    #[arg(
        long = "allow-target",
        env = "HOOKLINE_ALLOW_TARGETS",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub allow_targets: Vec<IpNet>,

    /// CIDRs that outbound deliveries never reach, whatever else allows them
    /// (comma-separated, repeatable), e.g. your own public ranges; `0.0.0.0/0,::/0`
    /// delivers nowhere (host names are then not even resolved).
    #[arg(
        long = "deny-target",
        env = "HOOKLINE_DENY_TARGETS",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub deny_targets: Vec<IpNet>,

    /// Admin API token. Without one, the first start creates a token and prints it once.
    #[arg(long, env = "HOOKLINE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Also send `svix-id`/`svix-timestamp`/`svix-signature` headers, unless an endpoint
    /// says otherwise (for teams migrating from Svix).
    #[arg(
        long,
        env = "HOOKLINE_SVIX_HEADERS",
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub svix_headers: bool,

    /// Largest accepted API request body, in bytes; larger requests get 413.
    #[arg(long, env = "HOOKLINE_BODY_LIMIT_BYTES", default_value_t = 1024 * 1024)]
    pub body_limit_bytes: usize,

    /// Seconds an API connection may sit idle (no request in progress, nothing arriving)
    /// before it is closed.
    #[arg(long, env = "HOOKLINE_API_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub api_idle_timeout_secs: u64,

    /// Seconds a client has to send a whole request head (request line and headers) once
    /// its first byte arrived; slower clients are disconnected.
    #[arg(long, env = "HOOKLINE_API_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub api_header_timeout_secs: u64,

    /// Seconds a client has to send a request body once its head arrived; slower clients
    /// get 408 and are disconnected.
    #[arg(long, env = "HOOKLINE_API_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub api_body_timeout_secs: u64,

    /// Most API connections open at once; further ones wait in the listen backlog until
    /// one closes (lowered at start to fit the process's open-file limit).
    #[arg(long, env = "HOOKLINE_API_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub api_max_connections: usize,

    /// Log format: `text` or `json` (filter with RUST_LOG, default `info`).
    #[arg(long, env = "HOOKLINE_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// What this process does: `all` (the API and deliveries), `api` (accepts and
    /// stores; delivers nothing) or `worker` (delivers; serves only health and metrics).
    /// `api` and `worker` need PostgreSQL, shared with processes that do the rest.
    #[arg(long, env = "HOOKLINE_ROLE", default_value = "all")]
    pub role: Role,

    /// Disable an endpoint that has failed, without a single success, for this many
    /// seconds (default 5 days).
    #[arg(long, env = "HOOKLINE_ENDPOINT_DISABLE_AFTER_SECS", default_value_t = 5 * 24 * 3600)]
    pub endpoint_disable_after_secs: u64,

    /// Hard cap on delivery attempts in flight in this process; attempts to failing
    /// endpoints get at most half of it.
    #[arg(long, env = "HOOKLINE_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,

    /// The most attempts in flight to one endpoint that sets no `maxConcurrency` (across
    /// all nodes on one database): its concurrency adapts between 1 and this, growing
    /// while the receiver answers as fast and shrinking when it slows down or refuses.
    /// 1 to 1000.
    #[arg(long, env = "HOOKLINE_MAX_ENDPOINT_CONCURRENCY", default_value_t = 256)]
    pub max_endpoint_concurrency: u32,

    /// On SIGTERM, seconds in-flight attempts may take to finish before being handed back.
    #[arg(long, env = "HOOKLINE_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Seconds a claimed delivery stays this process's: a process that dies (SIGKILL,
    /// power loss) has its deliveries taken over by the others this long after it claimed
    /// them. An attempt is cut at half the lease (default 120, so 60 s: the longest
    /// `timeoutMs`), so that it and its report end within it. 10 to 3600.
    #[arg(long, env = "HOOKLINE_LEASE_SECS", default_value_t = 120)]
    pub lease_secs: u64,

    /// URL that receives hookline's operational webhooks (`endpoint.disabled`,
    /// `message.attempt.failing`, `.exhausted`, `.recovered`), signed like any delivery.
    #[arg(long, env = "HOOKLINE_OPERATIONAL_WEBHOOK_URL", value_name = "URL")]
    pub operational_webhook_url: Option<String>,

    /// `whsec_...` secret for the operational webhooks (default: generated; read it with
    /// the API from the `hookline-operational` application's endpoint).
    #[arg(
        long,
        env = "HOOKLINE_OPERATIONAL_WEBHOOK_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub operational_webhook_secret: Option<String>,

    /// Main key that seals endpoint secrets and custom header values at rest: 32 random
    /// bytes in base64 (`openssl rand -base64 32`). Default: the key file
    /// `encryption.key` in the data dir, created at the first start. Every process on
    /// one PostgreSQL database needs the same key.
    #[arg(
        long,
        env = "HOOKLINE_ENCRYPTION_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub encryption_key: Option<String>,

    /// How new endpoints sign when they name no `signature.scheme` and bring no secret:
    /// `standard` (a generated `whsec_` secret, HMAC) or `ed25519` (a generated `whsk_`
    /// key pair; receivers verify with its `whpk_` public key).
    #[arg(
        long,
        env = "HOOKLINE_DEFAULT_SIGNATURE",
        default_value = "standard",
        value_name = "SCHEME"
    )]
    pub default_signature: DefaultSignature,

    /// Origins whose pages may call `/api/v1` from a browser (CORS), comma-separated,
    /// e.g. `https://dashboard.example.com`; default any (`*`). Safe as a default because
    /// the API authenticates by bearer header only, never by cookie, so no page can ride
    /// on a signed-in browser.
    #[arg(
        long,
        env = "HOOKLINE_CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub cors_allowed_origins: Vec<String>,
    /// Origins whose pages may show the customer portal in a frame (its CSP
    /// `frame-ancestors`), comma-separated, e.g. `https://app.example.com`; default none.
    /// The operator console can never be framed.
    #[arg(
        long,
        env = "HOOKLINE_PORTAL_FRAME_ANCESTORS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub portal_frame_ancestors: Vec<String>,
    /// The URL this server is reached at from outside (behind a proxy), e.g.
    /// `https://hooks.example.com`: the customer portal links it hands out start with it.
    /// Default: `http://` and the address it listens on.
    #[arg(long, env = "HOOKLINE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// How long messages are kept, with their deliveries and attempts, after they were
    /// created (never while a delivery is still to be made): a number and a unit, `s`,
    /// `m`, `h` or `d` (`90d`, `12h`, `30s`).
    #[arg(
        long,
        env = "HOOKLINE_RETENTION",
        default_value = "90d",
        value_name = "DURATION"
    )]
    pub retention: String,
    /// Requests per second each API token may send (the excess gets 429 with
    /// `Retry-After`); default: no limit. Counted per process.
    #[arg(long, env = "HOOKLINE_API_RATE_LIMIT", value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..))]
    pub api_rate_limit: Option<u32>,
}

/// The `--default-signature` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DefaultSignature {
    /// Standard Webhooks with an HMAC `whsec_` secret.
    Standard,
    /// Standard Webhooks with an ed25519 `whsk_` key pair, as Svix does it.
    Ed25519,
}

/// What a `serve` process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The management API and the deliveries.
    All,
    /// The management API only: messages are stored for worker processes to deliver.
    Api,
    /// Deliveries only; the listener serves `/api/v1/health` and `/metrics`.
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Api => "api",
            Role::Worker => "worker",
        }
    }

    /// Whether this process serves the management API.
    pub fn serves_api(self) -> bool {
        self != Role::Worker
    }

    /// Whether this process delivers.
    pub fn delivers(self) -> bool {
        self != Role::Api
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The TOML file: every key optional, unknown keys rejected so typos are caught.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    database_pool_size: Option<usize>,
    allow_targets: Option<Vec<IpNet>>,
    deny_targets: Option<Vec<IpNet>>,
    admin_token: Option<String>,
    svix_headers: Option<bool>,
    body_limit_bytes: Option<usize>,
    api_idle_timeout_secs: Option<u64>,
    api_header_timeout_secs: Option<u64>,
    api_body_timeout_secs: Option<u64>,
    api_max_connections: Option<usize>,
    log_format: Option<LogFormat>,
    role: Option<Role>,
    endpoint_disable_after_secs: Option<u64>,
    max_in_flight: Option<usize>,
    max_endpoint_concurrency: Option<u32>,
    shutdown_grace_secs: Option<u64>,
    lease_secs: Option<u64>,
    operational_webhook_url: Option<String>,
    operational_webhook_secret: Option<String>,
    encryption_key: Option<String>,
    default_signature: Option<DefaultSignature>,
    cors_allowed_origins: Option<Vec<String>>,
    portal_frame_ancestors: Option<Vec<String>>,
    public_url: Option<String>,
    retention: Option<String>,
    api_rate_limit: Option<u32>,
}

/// Which database to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

/// The merged, validated configuration `serve` runs with.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: Database,
    pub database_pool_size: usize,
    pub allow_targets: Vec<IpNet>,
    /// `--deny-target`: ranges deliveries never reach, allowed or not.
    pub deny_targets: Vec<IpNet>,
    pub admin_token: Option<String>,
    pub svix_headers: bool,
    pub body_limit_bytes: usize,
    pub api_idle_timeout_secs: u64,
    pub api_header_timeout_secs: u64,
    pub api_body_timeout_secs: u64,
    pub api_max_connections: usize,
    pub log_format: LogFormat,
    pub role: Role,
    pub endpoint_disable_after_secs: u64,
    pub max_in_flight: usize,
    pub max_endpoint_concurrency: u32,
    pub shutdown_grace_secs: u64,
    pub lease_secs: u64,
    pub operational_webhook_url: Option<String>,
    pub operational_webhook_secret: Option<String>,
    /// `--encryption-key` as given (base64; checked where it is used); `None`: the key
    /// file in the data dir.
    pub encryption_key: Option<String>,
    pub default_signature: DefaultSignature,
    /// Browser origins allowed to call the API; empty: any.
    pub cors_allowed_origins: Vec<String>,
    /// Origins allowed to frame the customer portal; empty: none.
    pub portal_frame_ancestors: Vec<String>,
    /// `--public-url`, checked and without a trailing slash.
    pub public_url: Option<String>,
    /// `--retention`: how long a message is kept after its creation.
    pub retention: std::time::Duration,
    /// `--api-rate-limit`: requests per second per token; `None`: no limit.
    pub api_rate_limit: Option<u32>,
}

impl std::fmt::Debug for Config {
    // The admin token must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database", &redact_db(&self.database))
            .field("database_pool_size", &self.database_pool_size)
            .field("allow_targets", &self.allow_targets)
            .field("deny_targets", &self.deny_targets)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("svix_headers", &self.svix_headers)
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("api_idle_timeout_secs", &self.api_idle_timeout_secs)
            .field("api_header_timeout_secs", &self.api_header_timeout_secs)
            .field("api_body_timeout_secs", &self.api_body_timeout_secs)
            .field("api_max_connections", &self.api_max_connections)
            .field("log_format", &self.log_format)
            .field("role", &self.role)
            .field(
                "endpoint_disable_after_secs",
                &self.endpoint_disable_after_secs,
            )
            .field("max_in_flight", &self.max_in_flight)
            .field("max_endpoint_concurrency", &self.max_endpoint_concurrency)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("lease_secs", &self.lease_secs)
            .field("operational_webhook_url", &self.operational_webhook_url)
            .field(
                "operational_webhook_secret",
                &self.operational_webhook_secret.as_ref().map(|_| "***"),
            )
            .field(
                "encryption_key",
                &self.encryption_key.as_ref().map(|_| "***"),
            )
            .field("default_signature", &self.default_signature)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("portal_frame_ancestors", &self.portal_frame_ancestors)
            .field("public_url", &self.public_url)
            .field("retention", &self.retention)
            .field("api_rate_limit", &self.api_rate_limit)
            .finish()
    }
}

fn redact_db(db: &Database) -> String {
    match db {
        Database::Sqlite(p) => format!("sqlite://{}", p.display()),
        // A URL may carry a password; show only the scheme.
        Database::Postgres(_) => "postgres://***".into(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// Parses the process's own arguments. Exits with clap's usage message on bad flags.
pub fn parse() -> Result<(Command, Option<Config>), ConfigError> {
    parse_from(std::env::args_os())
}

/// Parses the given arguments (first item: program name). For `serve`, also reads the
/// config file and merges.
pub fn parse_from<I, T>(args: I) -> Result<(Command, Option<Config>), ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command().get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let config = match &cli.command {
        Command::Serve(serve) => {
            let sub = matches
                .subcommand_matches("serve")
                .expect("serve subcommand present");
            Some(resolve(serve.clone(), sub)?)
        }
        _ => None,
    };
    Ok((cli.command, config))
}

/// The database `hookline migrate` works on: flag or env var, then the file, then the
/// SQLite file in the data dir.
pub fn migrate_database(args: &MigrateArgs) -> Result<Database, ConfigError> {
    let file = match &args.config {
        Some(path) => load_file(path)?,
        None => FileConfig::default(),
    };
    match args.database_url.clone().or(file.database_url) {
        Some(url) => parse_database_url(&url),
        None => {
            let dir = file
                .data_dir
                .filter(|_| args.data_dir == Path::new("./hookline-data"))
                .unwrap_or_else(|| args.data_dir.clone());
            Ok(Database::Sqlite(dir.join(SQLITE_FILE)))
        }
    }
}

/// The main key (as given, if given) and the data dir (where the key file is otherwise)
/// for the commands that take [`MigrateArgs`]; flags and env vars over the file.
pub fn migrate_sealing(args: &MigrateArgs) -> Result<(Option<String>, PathBuf), ConfigError> {
    let file = match &args.config {
        Some(path) => load_file(path)?,
        None => FileConfig::default(),
    };
    let dir = file
        .data_dir
        .filter(|_| args.data_dir == Path::new("./hookline-data"))
        .unwrap_or_else(|| args.data_dir.clone());
    Ok((args.encryption_key.clone().or(file.encryption_key), dir))
}

/// Merges flags/env (in `args`, with their sources in `m`) over the file over defaults.
pub fn resolve(args: ServeArgs, m: &ArgMatches) -> Result<Config, ConfigError> {
    let file = match &args.config {
        Some(path) => load_file(path)?,
        None => FileConfig::default(),
    };
    // A value typed on the command line or set in the environment beats the file;
    // a clap default does not.
    let explicit = |id: &str| {
        matches!(
            m.value_source(id),
            Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
        )
    };
    fn pick<T>(explicit: bool, arg: T, file: Option<T>) -> T {
        match (explicit, file) {
            (false, Some(f)) => f,
            _ => arg,
        }
    }

    let data_dir = pick(explicit("data_dir"), args.data_dir, file.data_dir);
    let database_url = if explicit("database_url") {
        args.database_url
    } else {
        file.database_url.or(args.database_url)
    };
    let database = match database_url {
        None => Database::Sqlite(data_dir.join(SQLITE_FILE)),
        Some(url) => parse_database_url(&url)?,
    };
    let admin_token = if explicit("admin_token") {
        args.admin_token
    } else {
        file.admin_token.or(args.admin_token)
    };
    if let Some(t) = &admin_token {
        if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::Invalid {
                field: "admin_token",
                message: "must be at least 16 characters with no whitespace".into(),
            });
        }
    }
    let body_limit_bytes = pick(
        explicit("body_limit_bytes"),
        args.body_limit_bytes,
        file.body_limit_bytes,
    );
    if !(1024..=256 * 1024 * 1024).contains(&body_limit_bytes) {
        return Err(ConfigError::Invalid {
            field: "body_limit_bytes",
            message: "must be between 1024 and 268435456".into(),
        });
    }
    let max_in_flight = pick(
        explicit("max_in_flight"),
        args.max_in_flight,
        file.max_in_flight,
    );
    if !(1..=100_000).contains(&max_in_flight) {
        return Err(ConfigError::Invalid {
            field: "max_in_flight",
            message: "must be between 1 and 100000".into(),
        });
    }
    let in_range = |field: &'static str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(ConfigError::Invalid {
                field,
                message: format!("must be between {lo} and {hi}"),
            })
        }
    };
    let api_idle_timeout_secs = in_range(
        "api_idle_timeout_secs",
        pick(
            explicit("api_idle_timeout_secs"),
            args.api_idle_timeout_secs,
            file.api_idle_timeout_secs,
        ),
        1,
        3600,
    )?;
    let api_header_timeout_secs = in_range(
        "api_header_timeout_secs",
        pick(
            explicit("api_header_timeout_secs"),
            args.api_header_timeout_secs,
            file.api_header_timeout_secs,
        ),
        1,
        600,
    )?;
    let api_body_timeout_secs = in_range(
        "api_body_timeout_secs",
        pick(
            explicit("api_body_timeout_secs"),
            args.api_body_timeout_secs,
            file.api_body_timeout_secs,
        ),
        1,
        3600,
    )?;
    let database_pool_size = in_range(
        "database_pool_size",
        pick(
            explicit("database_pool_size"),
            args.database_pool_size,
            file.database_pool_size,
        ) as u64,
        1,
        1000,
    )? as usize;
    let api_max_connections = in_range(
        "api_max_connections",
        pick(
            explicit("api_max_connections"),
            args.api_max_connections,
            file.api_max_connections,
        ) as u64,
        1,
        1_000_000,
    )? as usize;
    let max_endpoint_concurrency = in_range(
        "max_endpoint_concurrency",
        pick(
            explicit("max_endpoint_concurrency"),
            args.max_endpoint_concurrency,
            file.max_endpoint_concurrency,
        ) as u64,
        1,
        1_000,
    )? as u32;
    let lease_secs = in_range(
        "lease_secs",
        pick(explicit("lease_secs"), args.lease_secs, file.lease_secs),
        10,
        3600,
    )?;
    let endpoint_disable_after_secs = pick(
        explicit("endpoint_disable_after_secs"),
        args.endpoint_disable_after_secs,
        file.endpoint_disable_after_secs,
    );
    if endpoint_disable_after_secs == 0 {
        return Err(ConfigError::Invalid {
            field: "endpoint_disable_after_secs",
            message: "must be at least 1".into(),
        });
    }
    let role = pick(explicit("role"), args.role, file.role);
    if role != Role::All && !matches!(database, Database::Postgres(_)) {
        return Err(ConfigError::Invalid {
            field: "role",
            message: format!(
                "{} needs a PostgreSQL database (--database-url postgres://...) shared with processes that {}; on SQLite one process does both",
                role.as_str(),
                if role == Role::Api { "deliver" } else { "serve the API" }
            ),
        });
    }
    let operational_webhook_url = if explicit("operational_webhook_url") {
        args.operational_webhook_url
    } else {
        file.operational_webhook_url
            .or(args.operational_webhook_url)
    };
    let operational_webhook_secret = if explicit("operational_webhook_secret") {
        args.operational_webhook_secret
    } else {
        file.operational_webhook_secret
            .or(args.operational_webhook_secret)
    };
    if let Some(u) = &operational_webhook_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                field: "operational_webhook_url",
                message: "must be an absolute http(s) URL".into(),
            });
        }
    }
    let cors_allowed_origins = cors_origins(pick(
        explicit("cors_allowed_origins"),
        args.cors_allowed_origins,
        file.cors_allowed_origins,
    ))?;
    let portal_frame_ancestors = frame_ancestors(pick(
        explicit("portal_frame_ancestors"),
        args.portal_frame_ancestors,
        file.portal_frame_ancestors,
    ))?;
    let public_url = if explicit("public_url") {
        args.public_url
    } else {
        file.public_url.or(args.public_url)
    };
    let public_url = public_url.map(|u| checked_public_url(&u)).transpose()?;
    let retention = parse_retention(&pick(explicit("retention"), args.retention, file.retention))?;
    let api_rate_limit = if explicit("api_rate_limit") {
        args.api_rate_limit
    } else {
        file.api_rate_limit.or(args.api_rate_limit)
    };
    if api_rate_limit == Some(0) {
        return Err(ConfigError::Invalid {
            field: "api_rate_limit",
            message: "must be at least 1 (leave it out for no limit)".into(),
        });
    }
    Ok(Config {
        api_rate_limit,
        cors_allowed_origins,
        portal_frame_ancestors,
        public_url,
        retention,
        default_signature: pick(
            explicit("default_signature"),
            args.default_signature,
            file.default_signature,
        ),
        operational_webhook_url,
        operational_webhook_secret,
        encryption_key: if explicit("encryption_key") {
            args.encryption_key
        } else {
            file.encryption_key.or(args.encryption_key)
        },
        endpoint_disable_after_secs,
        max_in_flight,
        max_endpoint_concurrency,
        shutdown_grace_secs: pick(
            explicit("shutdown_grace_secs"),
            args.shutdown_grace_secs,
            file.shutdown_grace_secs,
        ),
        lease_secs,
        listen: pick(explicit("listen"), args.listen, file.listen),
        data_dir,
        database,
        database_pool_size,
        allow_targets: pick(
            explicit("allow_targets"),
            args.allow_targets,
            file.allow_targets,
        ),
        deny_targets: pick(
            explicit("deny_targets"),
            args.deny_targets,
            file.deny_targets,
        ),
        admin_token,
        svix_headers: pick(
            explicit("svix_headers"),
            args.svix_headers,
            file.svix_headers,
        ),
        body_limit_bytes,
        api_idle_timeout_secs,
        api_header_timeout_secs,
        api_body_timeout_secs,
        api_max_connections,
        log_format: pick(explicit("log_format"), args.log_format, file.log_format),
        role,
    })
}

/// Checks `--cors-allowed-origins`: each one an origin as browsers send it
/// (`scheme://host[:port]`, no path, no trailing slash), or `*` alone for any; `*`
/// becomes the empty list.
fn cors_origins(origins: Vec<String>) -> Result<Vec<String>, ConfigError> {
    let origins: Vec<String> = origins
        .into_iter()
        .map(|o| o.trim().to_string())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.iter().any(|o| o == "*") {
        return if origins.len() == 1 {
            Ok(Vec::new())
        } else {
            Err(ConfigError::Invalid {
                field: "cors_allowed_origins",
                message: "`*` (any origin) cannot be combined with other origins".into(),
            })
        };
    }
    exact_origins(
        "cors_allowed_origins",
        origins,
        "https://dashboard.example.com",
    )
}

/// Checks `--portal-frame-ancestors`: exact origins only (`scheme://host[:port]`), as
/// they go into a CSP `frame-ancestors` list; no `*`, since framing by any site is what
/// clickjacking needs.
fn frame_ancestors(origins: Vec<String>) -> Result<Vec<String>, ConfigError> {
    let origins = origins
        .into_iter()
        .map(|o| o.trim().to_string())
        .filter(|o| !o.is_empty())
        .collect();
    exact_origins("portal_frame_ancestors", origins, "https://app.example.com")
}

/// Each of `origins` must be an origin exactly as browsers send it (`scheme://host[:port]`,
/// http or https, no path, wildcard or trailing slash); the error names `field`.
fn exact_origins(
    field: &'static str,
    origins: Vec<String>,
    example: &str,
) -> Result<Vec<String>, ConfigError> {
    for o in &origins {
        let ok = url::Url::parse(o).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.origin().ascii_serialization() == *o
        });
        if !ok {
            return Err(ConfigError::Invalid {
                field,
                message: format!(
                    "{o:?} is not an origin: write scheme://host[:port] with no path, wildcard or trailing slash, e.g. {example}"
                ),
            });
        }
    }
    Ok(origins)
}

/// Checks `--public-url`: an absolute http(s) URL with a host, no query or fragment; a
/// path is kept (a proxy may serve hookline under one), a trailing slash dropped.
fn checked_public_url(text: &str) -> Result<String, ConfigError> {
    let invalid = |why: &str| ConfigError::Invalid {
        field: "public_url",
        message: format!(
            "{why}: write the URL hookline is reached at, e.g. https://hooks.example.com"
        ),
    };
    let url = url::Url::parse(text.trim()).map_err(|_| invalid("not an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid("must be an http:// or https:// URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must have no query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// The longest `--retention` (100 years): beyond it, times overflow.
const MAX_RETENTION: std::time::Duration = std::time::Duration::from_secs(36_500 * 86400);

/// `--retention`: a duration as [`parse_duration`] reads it (`90d`, `12h`, `30s`), from
/// 1 s to 100 years; the error names the setting and the accepted forms.
fn parse_retention(text: &str) -> Result<std::time::Duration, ConfigError> {
    let invalid = |why: String| ConfigError::Invalid {
        field: "retention",
        message: format!("{why}; give a whole number and a unit, e.g. 90d, 12h, 15m, 30s"),
    };
    match parse_duration(text).map_err(invalid)? {
        d if d < std::time::Duration::from_secs(1) => {
            Err(invalid(format!("`{text}` is shorter than 1s")))
        }
        d if d > MAX_RETENTION => Err(invalid(format!("`{text}` is longer than 36500d"))),
        d => Ok(d),
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })
}

/// Accepts `sqlite://PATH`, `sqlite:PATH` and `postgres://` / `postgresql://` URLs.
pub fn parse_database_url(url: &str) -> Result<Database, ConfigError> {
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err(ConfigError::Invalid {
                field: "database_url",
                message: "sqlite URL needs a file path, e.g. sqlite://./data/hookline.sqlite"
                    .into(),
            });
        }
        return Ok(Database::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Database::Postgres(url.to_string()));
    }
    Err(ConfigError::Invalid {
        field: "database_url",
        message: "must start with sqlite:// or postgres://".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<Config, ConfigError> {
        let mut all = vec!["hookline", "serve"];
        all.extend_from_slice(args);
        parse_from(all).map(|(_, c)| c.unwrap())
    }

    #[test]
    fn defaults() {
        let c = serve(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            c.database,
            Database::Sqlite(PathBuf::from("./hookline-data/hookline.sqlite"))
        );
        assert!(c.allow_targets.is_empty());
        assert!(!c.svix_headers);
    }

    #[test]
    fn roles_other_than_all_need_postgres() {
        assert_eq!(serve(&[]).unwrap().role, Role::All);
        let err = serve(&["--role", "api"]).expect_err("refused on SQLite");
        assert!(
            err.to_string().contains("needs a PostgreSQL database"),
            "{err}"
        );
        let pg = ["--database-url", "postgres://u@127.0.0.1/db"];
        let c = serve(&[&pg[..], &["--role", "worker"]].concat()).unwrap();
        assert_eq!(c.role, Role::Worker);
        assert!(c.role.delivers() && !c.role.serves_api());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.toml");
        std::fs::write(&path, "role = \"api\"\n").unwrap();
        let c = serve(&[&pg[..], &["--config", path.to_str().unwrap()]].concat()).unwrap();
        assert_eq!(c.role, Role::Api);
    }

    #[test]
    fn max_endpoint_concurrency_is_256_unless_set_within_bounds() {
        assert_eq!(serve(&[]).unwrap().max_endpoint_concurrency, 256);
        let c = serve(&["--max-endpoint-concurrency", "1000"]).unwrap();
        assert_eq!(c.max_endpoint_concurrency, 1000);
        for bad in ["0", "1001"] {
            let err = serve(&["--max-endpoint-concurrency", bad]).expect_err("out of range");
            assert_eq!(
                err.to_string(),
                "max_endpoint_concurrency: must be between 1 and 1000"
            );
        }
    }

    #[test]
    fn deny_targets_come_from_flags_or_the_file() {
        assert!(serve(&[]).unwrap().deny_targets.is_empty());
        let c = serve(&[
            "--deny-target",
            "0.0.0.0/0,::/0",
            "--deny-target",
            "203.0.113.0/24",
        ])
        .unwrap();
        let want: Vec<IpNet> = ["0.0.0.0/0", "::/0", "203.0.113.0/24"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(c.deny_targets, want);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.toml");
        std::fs::write(&path, "deny_targets = [\"198.51.100.0/24\"]\n").unwrap();
        let c = serve(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(
            c.deny_targets,
            vec!["198.51.100.0/24".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn lease_is_two_minutes_unless_set_within_bounds() {
        assert_eq!(serve(&[]).unwrap().lease_secs, 120);
        assert_eq!(serve(&["--lease-secs", "10"]).unwrap().lease_secs, 10);
        for bad in ["9", "3601"] {
            let err = serve(&["--lease-secs", bad]).expect_err("out of range");
            assert_eq!(err.to_string(), "lease_secs: must be between 10 and 3600");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.toml");
        std::fs::write(&path, "lease_secs = 30\n").unwrap();
        let c = serve(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.lease_secs, 30);
    }

    #[test]
    fn file_is_overridden_by_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nallow_targets = [\"127.0.0.0/8\"]\nsvix_headers = true\ndata_dir = \"/tmp/x\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = serve(&["--config", p]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(
            c.allow_targets,
            vec!["127.0.0.0/8".parse::<IpNet>().unwrap()]
        );
        assert!(c.svix_headers);
        let c = serve(&[
            "--config",
            p,
            "--listen",
            "127.0.0.1:9001",
            "--svix-headers",
            "false",
        ])
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9001");
        assert!(!c.svix_headers);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn default_signature_is_standard_unless_set() {
        assert_eq!(
            serve(&[]).unwrap().default_signature,
            DefaultSignature::Standard
        );
        let c = serve(&["--default-signature", "ed25519"]).unwrap();
        assert_eq!(c.default_signature, DefaultSignature::Ed25519);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.toml");
        std::fs::write(&path, "default_signature = \"ed25519\"\n").unwrap();
        let p = path.to_str().unwrap();
        let c = serve(&["--config", p]).unwrap();
        assert_eq!(c.default_signature, DefaultSignature::Ed25519);
        let c = serve(&["--config", p, "--default-signature", "standard"]).unwrap();
        assert_eq!(c.default_signature, DefaultSignature::Standard);
        // A wrong value names the flag and the choices.
        let err = Cli::command()
            .try_get_matches_from(["hookline", "serve", "--default-signature", "rsa"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--default-signature")
                && err.contains("standard")
                && err.contains("ed25519"),
            "{err}"
        );
        std::fs::write(&path, "default_signature = \"rsa\"\n").unwrap();
        let err = serve(&["--config", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("rsa") && err.contains("ed25519"), "{err}");
    }

    #[test]
    fn api_rate_limit_is_off_unless_set_and_at_least_one() {
        assert_eq!(serve(&[]).unwrap().api_rate_limit, None);
        assert_eq!(
            serve(&["--api-rate-limit", "50"]).unwrap().api_rate_limit,
            Some(50)
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.toml");
        std::fs::write(&path, "api_rate_limit = 7\n").unwrap();
        let p = path.to_str().unwrap();
        assert_eq!(serve(&["--config", p]).unwrap().api_rate_limit, Some(7));
        let c = serve(&["--config", p, "--api-rate-limit", "9"]).unwrap();
        assert_eq!(c.api_rate_limit, Some(9));
        assert!(Cli::command()
            .try_get_matches_from(["hookline", "serve", "--api-rate-limit", "0"])
            .is_err());
        std::fs::write(&path, "api_rate_limit = 0\n").unwrap();
        let err = serve(&["--config", p]).unwrap_err().to_string();
        assert!(err.starts_with("api_rate_limit: "), "{err}");
    }

    #[test]
    fn token_commands_take_the_database_flags() {
        let (cmd, _) = parse_from([
            "hookline",
            "token",
            "create",
            "--name",
            "ci",
            "--app",
            "app_1",
            "--read-only",
            "--expires-in",
            "30d",
            "--data-dir",
            "/tmp/x",
        ])
        .unwrap();
        let Command::Token(TokenArgs {
            action: TokenAction::Create(a),
        }) = cmd
        else {
            panic!("token create: {cmd:?}");
        };
        assert_eq!(a.name, "ci");
        assert_eq!(a.app.as_deref(), Some("app_1"));
        assert!(a.read_only);
        assert_eq!(
            a.expires_in,
            Some(std::time::Duration::from_secs(30 * 86400))
        );
        assert_eq!(
            migrate_database(&a.database).unwrap(),
            Database::Sqlite(PathBuf::from("/tmp/x").join(SQLITE_FILE))
        );
        assert!(
            Cli::command()
                .try_get_matches_from(["hookline", "token", "revoke"])
                .is_err(),
            "needs an id"
        );
    }

    #[test]
    fn retention_is_90_days_unless_set_in_human_units() {
        let day = 86400;
        assert_eq!(serve(&[]).unwrap().retention.as_secs(), 90 * day);
        for (text, secs) in [
            ("30s", 30),
            ("15m", 900),
            ("12h", 12 * 3600),
            ("7d", 7 * day),
        ] {
            let c = serve(&["--retention", text]).unwrap();
            assert_eq!(c.retention.as_secs(), secs, "{text}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.toml");
        std::fs::write(&path, "retention = \"2d\"\n").unwrap();
        let p = path.to_str().unwrap();
        assert_eq!(
            serve(&["--config", p]).unwrap().retention.as_secs(),
            2 * day
        );
        let c = serve(&["--config", p, "--retention", "1h"]).unwrap();
        assert_eq!(c.retention.as_secs(), 3600);
        for (bad, why) in [
            ("90", "needs a unit"),
            ("d", "whole number"),
            ("90 days", "not a unit"),
            ("1w", "not a unit"),
            ("-5s", "whole number"),
            ("0s", "shorter than 1s"),
            ("500ms", "shorter than 1s"),
            ("36501d", "longer than 36500d"),
            ("99999999999999999999999d", "whole number"),
        ] {
            let flag = format!("--retention={bad}");
            let err = serve(&[flag.as_str()]).unwrap_err().to_string();
            assert!(
                err.starts_with("retention: ") && err.contains(why) && err.contains("90d, 12h"),
                "{bad}: {err}"
            );
        }
        std::fs::write(&path, "retention = \"soon\"\n").unwrap();
        let err = serve(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().starts_with("retention: "), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:9000\"\n").unwrap();
        let err = serve(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            parse_database_url("sqlite:///var/h.db").unwrap(),
            Database::Sqlite("/var/h.db".into())
        );
        assert!(matches!(
            parse_database_url("postgres://u@h/db").unwrap(),
            Database::Postgres(_)
        ));
        assert!(parse_database_url("mysql://x").is_err());
    }

    #[test]
    fn copy_takes_an_sqlite_source_and_a_postgres_target() {
        let copy = |args: &[&str]| {
            let mut all = vec!["hookline", "copy"];
            all.extend_from_slice(args);
            match parse_from(all).unwrap().0 {
                Command::Copy(c) => c,
                other => panic!("{other:?}"),
            }
        };
        let c = copy(&[
            "--from",
            "sqlite://./hookline-data",
            "--to",
            "postgresql://u@h/db",
            "--with-history",
        ]);
        assert!(c.with_history && !c.allow_non_empty);
        assert_eq!(
            c.source_and_target().unwrap(),
            (
                PathBuf::from("./hookline-data"),
                "postgresql://u@h/db".into()
            )
        );
        let c = copy(&["--from", "/var/h.sqlite", "--to", "postgres://u@h/db"]);
        let err = c.source_and_target().unwrap_err().to_string();
        assert!(err.starts_with("--from: must be sqlite://PATH"), "{err}");
        let c = copy(&["--from", "sqlite:///h.sqlite", "--to", "sqlite:///x"]);
        let err = c.source_and_target().unwrap_err().to_string();
        assert!(err.starts_with("--to: must be a postgres://"), "{err}");
    }

    #[test]
    fn debug_hides_token() {
        let c = serve(&["--admin-token", "supersecrettoken123"]).unwrap();
        assert!(!format!("{c:?}").contains("supersecret"));
    }

    #[test]
    fn public_url_is_checked_and_loses_its_trailing_slash() {
        assert_eq!(serve(&[]).unwrap().public_url, None);
        let c = serve(&["--public-url", "https://hooks.example.com/"]).unwrap();
        assert_eq!(c.public_url.as_deref(), Some("https://hooks.example.com"));
        let c = serve(&["--public-url", "https://example.com/hookline/"]).unwrap();
        assert_eq!(
            c.public_url.as_deref(),
            Some("https://example.com/hookline")
        );
        for bad in [
            "hooks.example.com",
            "ftp://x.example.com",
            "https://x.example.com/?a=1",
            "/portal",
        ] {
            let e = serve(&["--public-url", bad]).unwrap_err().to_string();
            assert!(e.starts_with("public_url: "), "{bad}: {e}");
        }
    }

    #[test]
    fn portal_frame_ancestors_default_to_none_and_are_checked() {
        assert!(serve(&[]).unwrap().portal_frame_ancestors.is_empty());
        let c = serve(&[
            "--portal-frame-ancestors",
            "https://app.example.com,http://127.0.0.1:8080",
        ])
        .unwrap();
        assert_eq!(
            c.portal_frame_ancestors,
            ["https://app.example.com", "http://127.0.0.1:8080"]
        );
        for bad in ["*", "https://app.example.com/", "app.example.com", "'self'"] {
            let e = serve(&["--portal-frame-ancestors", bad])
                .unwrap_err()
                .to_string();
            assert!(e.contains("portal_frame_ancestors"), "{bad}: {e}");
        }
    }

    #[test]
    fn cors_origins_default_to_any_and_are_checked() {
        assert!(serve(&[]).unwrap().cors_allowed_origins.is_empty());
        assert!(serve(&["--cors-allowed-origins", "*"])
            .unwrap()
            .cors_allowed_origins
            .is_empty());
        let c = serve(&[
            "--cors-allowed-origins",
            "https://dash.example.com,http://127.0.0.1:3000",
        ])
        .unwrap();
        assert_eq!(
            c.cors_allowed_origins,
            ["https://dash.example.com", "http://127.0.0.1:3000"]
        );
        for bad in [
            "https://dash.example.com/",
            "https://dash.example.com/app",
            "dash.example.com",
            "ftp://x.example",
            "*,https://a.example",
        ] {
            let e = serve(&["--cors-allowed-origins", bad])
                .unwrap_err()
                .to_string();
            assert!(e.contains("cors_allowed_origins"), "{bad}: {e}");
        }
    }
}
