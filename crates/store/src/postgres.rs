//! The PostgreSQL backend: the whole [`Store`](crate::Store) on PostgreSQL 13 or newer,
//! safe with several hookline processes on one database.
//!
//! | file | holds |
//! |---|---|
//! | `postgres.rs` | connection URLs and TLS, the pool, migrations |
//! | `postgres/store.rs` | [`PgStore`]: the management records, tokens, idempotency keys, messages |
//! | `postgres/batch.rs` | the group commit of creates and attempt reports |
//! | `postgres/queue.rs` | fan-out, the claim (`FOR UPDATE SKIP LOCKED`), reports, leases |
//! | `postgres/deliveries.rs` | the delivery log's reads and actions (resend, recover, stats) |
//! | `postgres/retention.rs` | deleting old messages and expired payloads, from several processes at once |
//! | `postgres/changes.rs` | cached applications and event types, kept true by `LISTEN` |
//! | `postgres/listing.rs`, `rows.rs`, `errors.rs` | pagination, row mapping, error mapping |
//! | `postgres/migrations/` | the schema, one file per version |
//!
//! **Driver.** tokio-postgres with a deadpool pool, not sqlx: hookline's hot paths are a
//! handful of fixed statements it wants prepared once per connection, pipelined and
//! batched (group commits across concurrent requests, multi-row inserts), in binary
//! format. tokio-postgres does exactly that and little else (no query macros checked
//! against a live database at build time, no second runtime abstraction), so it keeps
//! the build lean and every round trip visible. TLS is rustls with the Mozilla roots,
//! as for deliveries, through tokio-postgres-rustls.
//!
//! **Migrations** are numbered SQL files under `postgres/migrations/`, applied in order
//! in one transaction under an advisory lock ([`migrate`]): several processes starting
//! at once on a new database apply them once, the others wait and find them done. A
//! database whose schema is newer than the binary is refused.
//!
//! **Connection URLs** are `postgres://USER[:PASS]@HOST[:PORT]/DB[?param=...]` with
//! libpq's `sslmode`: `disable`, `prefer` (the default: TLS when the server offers it,
//! unverified), `require` (TLS, unverified), `verify-ca` (TLS, certificate checked
//! against the roots) and `verify-full` (and its host name too). The roots are the
//! Mozilla set, or only the PEM file given as `sslrootcert` (a managed database's CA).
//! Other parameters are tokio-postgres's (`connect_timeout`, `application_name`, ...).

mod batch;
mod changes;
mod deliveries;
mod errors;
mod listing;
mod queue;
mod retention;
mod rows;
mod sealed;
mod store;

pub use sealed::{rotate_key, seal_in_place};
pub use store::PgStore;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Connections in the pool unless `--database-pool-size` says otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// A connection attempt gives up after this unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The `application_name` of hookline's connections when the URL sets none.
pub(crate) const DEFAULT_APPLICATION_NAME: &str = "hookline";
/// The advisory lock migrations run under (any constant all hookline processes share).
const MIGRATION_LOCK: i64 = 0x686f_6f6b_6c69_6e65; // "hookline"

/// One schema version.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
    /// Only adds (tables, nullable columns, indexes, triggers that notify): a hookline
    /// one version older keeps running on the schema it leaves, which is what a rolling
    /// upgrade needs. Checked by the `additive_migrations_only_add` test.
    pub additive: bool,
}

/// The schema, one file per version; never edit one that has shipped, add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("postgres/migrations/0001_initial.sql"),
        additive: false,
    },
    Migration {
        version: 2,
        name: "byte_order_ids",
        sql: include_str!("postgres/migrations/0002_byte_order_ids.sql"),
        additive: false,
    },
    Migration {
        version: 3,
        name: "change_notices",
        sql: include_str!("postgres/migrations/0003_change_notices.sql"),
        additive: true,
    },
    Migration {
        version: 4,
        name: "deliveries_in_flight",
        sql: include_str!("postgres/migrations/0004_deliveries_in_flight.sql"),
        additive: true,
    },
    Migration {
        version: 5,
        name: "paces",
        sql: include_str!("postgres/migrations/0005_paces.sql"),
        additive: true,
    },
    Migration {
        version: 6,
        name: "retention",
        sql: include_str!("postgres/migrations/0006_retention.sql"),
        additive: true,
    },
    Migration {
        version: 7,
        name: "managed_tokens",
        sql: include_str!("postgres/migrations/0007_managed_tokens.sql"),
        additive: true,
    },
    Migration {
        version: 8,
        name: "sealing",
        sql: include_str!("postgres/migrations/0008_sealing.sql"),
        additive: false,
    },
    Migration {
        version: 9,
        name: "attempt_stats",
        sql: include_str!("postgres/migrations/0009_attempt_stats.sql"),
        additive: true,
    },
    Migration {
        version: 10,
        name: "deliveries_failed",
        sql: include_str!("postgres/migrations/0010_deliveries_failed.sql"),
        additive: true,
    },
];

/// How TLS is used, after libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A parsed connection URL.
#[derive(Clone)]
pub struct PgSettings {
    pub config: tokio_postgres::Config,
    pub tls: TlsMode,
    /// PEM file of the roots to trust instead of the Mozilla set.
    pub root_cert: Option<PathBuf>,
}

impl std::fmt::Debug for PgSettings {
    // The config may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("target", &self.target())
            .field("tls", &self.tls)
            .field("root_cert", &self.root_cert)
            .finish()
    }
}

impl PgSettings {
    /// Parses a `postgres://` URL; the error names the part at fault, never the password.
    pub fn parse(url: &str) -> Result<Self, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("a PostgreSQL URL starts with postgres:// or postgresql://".into());
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut tls = TlsMode::Prefer;
        let mut root_cert = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sslmode" => {
                    tls = match v {
                        "disable" => TlsMode::Disable,
                        "allow" | "prefer" => TlsMode::Prefer,
                        "require" => TlsMode::Require,
                        "verify-ca" => TlsMode::VerifyCa,
                        "verify-full" => TlsMode::VerifyFull,
                        other => {
                            return Err(format!(
                                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                            ))
                        }
                    }
                }
                "sslrootcert" => {
                    root_cert = Some(PathBuf::from(
                        percent_encoding::percent_decode_str(v)
                            .decode_utf8_lossy()
                            .into_owned(),
                    ))
                }
                _ => rest.push(pair),
            }
        }
        let url = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
        if config.get_hosts().is_empty() {
            return Err("the URL names no host".into());
        }
        if config.get_user().is_none() {
            return Err("the URL names no user (postgres://USER@HOST/DB)".into());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name(DEFAULT_APPLICATION_NAME);
        }
        config.ssl_mode(match tls {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        Ok(Self {
            config,
            tls,
            root_cert,
        })
    }

    /// `HOST:PORT/DB as USER`, for messages (no password).
    pub fn target(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "?".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{host}:{port}/{} as {}",
            self.config.get_dbname().unwrap_or("(default)"),
            self.config.get_user().unwrap_or("?")
        )
    }

    /// The TLS connector for this mode.
    fn connector(&self) -> Result<MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let config = match self.tls {
            TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth(),
            TlsMode::VerifyCa | TlsMode::VerifyFull => {
                let roots = Arc::new(self.roots()?);
                let webpki =
                    rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                        .build()
                        .map_err(|e| format!("TLS setup: {e}"))?;
                if self.tls == TlsMode::VerifyFull {
                    builder.with_webpki_verifier(webpki).with_no_client_auth()
                } else {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(AnyName(webpki)))
                        .with_no_client_auth()
                }
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(path) => {
                use rustls::pki_types::pem::PemObject;
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "sslrootcert {} holds no certificate",
                        path.display()
                    ));
                }
            }
        }
        Ok(roots)
    }
}

/// Opens a pool of up to `size` connections and makes one at once, so a database that
/// cannot be reached is reported at start, in one line naming where and why.
pub async fn connect(settings: &PgSettings, size: usize) -> Result<Pool, String> {
    let manager = Manager::from_config(
        settings.config.clone(),
        settings.connector()?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(size.max(1))
        .build()
        .map_err(|e| format!("PostgreSQL pool: {e}"))?;
    drop(pool.get().await.map_err(|e| describe(settings, &e))?);
    Ok(pool)
}

/// Applies the migrations the database lacks, in one transaction under an advisory lock,
/// and returns the versions applied (none: it was up to date).
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>, String> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let fail = |e: tokio_postgres::Error| format!("migrating the schema: {}", cause_chain(&e));
    let tx = client.transaction().await.map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(fail)?;
    // `readable_by`: the oldest schema version whose hookline still runs on the schema
    // this version leaves (its own version unless the migration is additive).
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS hookline_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );
         ALTER TABLE hookline_migrations ADD COLUMN IF NOT EXISTS readable_by integer",
    )
    .await
    .map_err(fail)?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    let row = tx
        .query_one(
            "SELECT coalesce(max(version), 0),
                    coalesce(max(coalesce(readable_by, version)) FILTER (WHERE version > $1), 0)
             FROM hookline_migrations",
            &[&latest],
        )
        .await
        .map_err(fail)?;
    let (current, needs): (i32, i32) = (row.get(0), row.get(1));
    if current > latest {
        // A newer hookline migrated (a rolling upgrade): this one runs on while every
        // newer version only added to what it knows.
        if needs > latest {
            return Err(format!(
                "the database's schema is version {current}, which a hookline knowing version {latest} cannot run on (it needs {needs} or newer); run a newer hookline"
            ));
        }
        tx.commit().await.map_err(fail)?;
        return Ok(Vec::new());
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(m.sql)
            .await
            .map_err(|e| format!("migration {} ({}): {}", m.version, m.name, cause_chain(&e)))?;
        let readable_by = if m.additive { m.version - 1 } else { m.version };
        tx.execute(
            "INSERT INTO hookline_migrations (version, name, readable_by) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &readable_by],
        )
        .await
        .map_err(fail)?;
        applied.push(m.version);
    }
    tx.commit().await.map_err(fail)?;
    Ok(applied)
}

/// The schema version a database is at (0: none applied).
pub async fn schema_version(pool: &Pool) -> Result<i32, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT CASE WHEN to_regclass('hookline_migrations') IS NULL THEN 0
                    ELSE (SELECT coalesce(max(version), 0) FROM hookline_migrations) END",
            &[],
        )
        .await
        .map_err(|e| cause_chain(&e))?;
    Ok(row.get(0))
}

/// One line for a failed connection: where, and why in the user's terms.
fn describe(settings: &PgSettings, e: &deadpool_postgres::PoolError) -> String {
    use deadpool_postgres::PoolError;
    let why = match e {
        PoolError::Backend(pg) => match pg.as_db_error() {
            Some(db) => match db.code().code() {
                "28P01" | "28000" => format!("authentication failed ({})", db.message()),
                "3D000" => format!("the database does not exist ({})", db.message()),
                _ => db.message().to_string(),
            },
            None => cause_chain(pg),
        },
        PoolError::Timeout(_) => "timed out".into(),
        other => other.to_string(),
    };
    format!(
        "cannot connect to PostgreSQL at {}: {why}",
        settings.target()
    )
}

/// An error and its causes, as one line.
pub(crate) fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// `sslmode=prefer|require`: encrypted, the server's certificate not checked (libpq's
/// meaning); the handshake's signatures are still verified.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to a trusted root; the name is not checked.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
#[path = "postgres/tests.rs"]
pub(crate) mod tests;
