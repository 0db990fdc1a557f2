//! [`PgStore`]: the [`Store`] on PostgreSQL, for several hookline processes sharing one
//! database.
//!
//! Every method of [`Store`] and [`DeliveryQueue`] is here: the management records
//! (applications, event types, endpoints), API tokens, idempotency keys, messages with
//! their fan-out ([`super::queue`]), the queue itself (claims, reports, hand-backs,
//! `next_due`, with the hand-over of fresh deliveries to an attached [`Intake`]) and the
//! delivery log ([`super::deliveries`]).
//!
//! The semantics are the SQLite backend's, method for method: the same errors and
//! `Conflict` texts, lookups by id then uid, ordering and pagination
//! ([`super::listing`]), and what a delete takes with it. What differs is how they are
//! kept with many writers instead of one:
//! - uniqueness is the constraints', a violation mapped to `Conflict` by SQLSTATE and
//!   constraint name ([`super::errors`]);
//! - a read-modify-write ([`Mutator`]) reads the row `FOR NO KEY UPDATE` and writes it
//!   back in the same transaction, so a concurrent PATCH (from any process) waits and
//!   then applies its change to this one's result (`NO KEY`: the id never changes, so
//!   inserts that only reference the row, a message for the application, need not wait);
//! - deletes cascade by foreign key (every child table references its parent
//!   `ON DELETE CASCADE`), so one `DELETE` takes an application's endpoints, messages,
//!   deliveries, attempts and tokens, and cannot miss a row a concurrent write adds;
//! - nothing is cached in the process: another process may have changed anything.
//!
//! Every statement is prepared once per connection (`prepare_cached`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

use super::batch::{self, Batcher};
use super::changes::Lookups;
use super::deliveries;
use super::errors::{self, backend, is_foreign_key, unique_as_conflict};
use super::listing::{paginate, Params};
use super::queue;
use super::retention;
use super::rows::*;
use super::{connect, migrate, PgSettings};
use crate::cache::LookupCache;
use crate::sealing::{KeySource, Sealer};
use crate::*;

/// The PostgreSQL [`Store`]: a connection pool, and nothing else that correctness could
/// depend on (the intake only lets fresh deliveries skip a claim).
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Creates and attempt reports, group-committed ([`super::batch`]).
    batcher: Batcher,
    /// Applications and event types, cached while changes are heard ([`super::changes`]).
    lookups: Arc<Lookups>,
    batched: Arc<AtomicU64>,
    intake: Arc<RwLock<Option<Weak<dyn Intake>>>>,
    /// This process's name in lease tokens ([`PgStore::claim_node`]).
    node: Arc<str>,
    /// The data dir's node-id file, locked while this process runs as that node.
    _node_lock: Option<Arc<std::fs::File>>,
    /// Seals endpoint settings as they are written ([`crate::sealing`]).
    sealer: Sealer,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl PgStore {
    /// Parses `url` ([`PgSettings::parse`]), opens a pool of up to `pool_size`
    /// connections, brings the schema up to date ([`migrate`]), unlocks the main key
    /// from `key` and seals endpoint settings still in the clear
    /// ([`super::sealed::seal_in_place`]). The error is one line naming what failed,
    /// never the password or a key.
    pub async fn connect(url: &str, pool_size: usize, key: &KeySource) -> Result<PgStore, String> {
        let settings = PgSettings::parse(url)?;
        let pool = connect(&settings, pool_size).await?;
        migrate(&pool).await?;
        let sealer = super::sealed::seal_in_place(&pool, key).await?;
        let client = pool.get().await.map_err(|e| format!("PostgreSQL: {e}"))?;
        super::changes::sync_clock(&client)
            .await
            .map_err(|e| format!("reading the database's clock: {e}"))?;
        drop(client);
        let intake = Arc::new(RwLock::new(None));
        let node: Arc<str> = random_node().into();
        let batched = Arc::new(AtomicU64::new(0));
        let processes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        Ok(PgStore {
            lookups: Lookups::start(settings, intake.clone(), node.clone(), processes.clone()),
            batcher: Batcher::start(batch::Ctx {
                pool: pool.clone(),
                node: node.clone(),
                intake: intake.clone(),
                batched: batched.clone(),
                processes: processes.clone(),
            }),
            batched,
            pool,
            intake,
            node,
            _node_lock: None,
            sealer,
        })
    }

    /// Runs as the node whose id is kept in `data_dir` (made on first use), and hands
    /// back the deliveries its previous run held when it stopped, returning how many.
    /// Without this, a restarted process's deliveries in flight wait for their leases to
    /// expire like a dead node's. The id file is locked for the process's life, so two
    /// processes sharing a data dir cannot both be that node.
    pub async fn claim_node(&mut self, data_dir: &std::path::Path) -> Result<u64, String> {
        let path = data_dir.join("node-id");
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("creating {}: {e}", data_dir.display()))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        file.try_lock().map_err(|_| {
            format!(
                "{} is locked: another hookline process runs with this data dir; give each process a data dir of its own",
                path.display()
            )
        })?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let node = match text.trim() {
            id if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) => id.to_string(),
            _ => {
                let id = random_node();
                std::fs::write(&path, format!("{id}\n"))
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
                id
            }
        };
        self.node = node.clone().into();
        self._node_lock = Some(Arc::new(file));
        self.lookups.set_node(self.node.clone());
        // Fresh deliveries are leased in the node's name too.
        self.batcher = Batcher::start(batch::Ctx {
            pool: self.pool.clone(),
            node: self.node.clone(),
            intake: self.intake.clone(),
            batched: self.batched.clone(),
            processes: self.lookups.processes.clone(),
        });
        let n = self
            .in_tx(move |tx| {
                Box::pin(async move { queue::recover_node_leases(tx, &node, crate::now()).await })
            })
            .await
            .map_err(|e| e.to_string())?;
        if n > 0 {
            tracing::info!(
                deliveries = n,
                "recovered deliveries in flight when this node last stopped"
            );
        }
        Ok(n)
    }

    /// How many creates and reports were committed together with others so far.
    pub fn batched_writes(&self) -> u64 {
        self.batched.load(Ordering::Relaxed)
    }

    /// How many hookline processes (this one included) were on the database when last
    /// counted, every few seconds; 0 until first counted, or when they cannot be told
    /// apart (the URL sets its own `application_name`).
    pub fn processes_on_database(&self) -> usize {
        self.lookups.processes.load(Ordering::Relaxed)
    }

    async fn client(&self) -> Result<deadpool_postgres::Client> {
        self.pool.get().await.map_err(errors::pool)
    }

    /// Runs `f` in a transaction of its own, committed if it succeeds.
    async fn in_tx<T, F>(&self, f: F) -> Result<T>
    where
        F: for<'t> FnOnce(
            &'t deadpool_postgres::Transaction<'t>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T>> + Send + 't>,
        >,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let out = f(&tx).await?;
        tx.commit().await.map_err(backend)?;
        Ok(out)
    }
}

// --- statements --------------------------------------------------------------------

type Args<'a> = [&'a (dyn ToSql + Sync)];

async fn exec(c: &impl GenericClient, sql: &str, p: &Args<'_>) -> Result<u64, PgError> {
    let stmt = c.prepare_cached(sql).await?;
    c.execute(&stmt, p).await
}

async fn opt(c: &impl GenericClient, sql: &str, p: &Args<'_>) -> Result<Option<Row>, PgError> {
    let stmt = c.prepare_cached(sql).await?;
    c.query_opt(&stmt, p).await
}

type PgError = tokio_postgres::Error;

/// `Ok` if `n` rows were affected, `NotFound` if none.
/// What `cache` (when it may be used) holds for `key`, else the generation to hand
/// [`remember`] with what the database says.
fn lookup<T: Clone>(
    cache: Option<&LookupCache<T>>,
    key: &str,
) -> std::result::Result<Option<T>, Option<u64>> {
    match cache.map(|c| c.get(key)) {
        Some(Ok(hit)) => Ok(hit),
        Some(Err(generation)) => Err(Some(generation)),
        None => Err(None),
    }
}

/// Keeps what the database said of `key`, unless a change came since the lookup began.
fn remember<T: Clone>(
    cache: Option<&LookupCache<T>>,
    generation: Option<u64>,
    key: &str,
    found: &Option<T>,
) {
    if let (Some(cache), Some(generation)) = (cache, generation) {
        cache.put(generation, key.to_string(), found.clone());
    }
}

/// `msg` with its times as they are stored (to the millisecond).
fn stored(mut msg: Message) -> Message {
    msg.created_at = ms(msg.created_at);
    msg.deliver_at = msg.deliver_at.map(ms);
    msg.payload_expires_at = msg.payload_expires_at.map(ms);
    msg
}

/// A node id for a process that has no data dir of its own to keep one in.
fn random_node() -> String {
    use rand::RngCore;
    format!("n{:012x}", rand::rng().next_u64() & 0xffff_ffff_ffff)
}

fn found(n: u64) -> Result<()> {
    if n == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

// --- records -----------------------------------------------------------------------

async fn find_app(c: &impl GenericClient, id_or_uid: &str) -> Result<Option<Application>> {
    // An id match wins over a uid match, as in Svix.
    opt(
        c,
        &format!(
            "SELECT {APP_COLS} FROM applications WHERE id = $1 OR uid = $1
             ORDER BY id = $1 DESC LIMIT 1"
        ),
        &[&id_or_uid],
    )
    .await
    .map_err(backend)?
    .map(|r| app_row(&r))
    .transpose()
}

async fn put_app(c: &impl GenericClient, a: &Application, insert: bool) -> Result<()> {
    let sql = if insert {
        "INSERT INTO applications (id, uid, name, throttle_rate, metadata, retry_policy, created_at, updated_at, validate_payloads)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    } else {
        "UPDATE applications SET uid = $2, name = $3, throttle_rate = $4, metadata = $5,
         retry_policy = $6, created_at = $7, updated_at = $8, validate_payloads = $9 WHERE id = $1"
    };
    exec(
        c,
        sql,
        &[
            &a.id,
            &a.uid,
            &a.name,
            &rate_param(a.throttle_rate)?,
            &to_json(&a.metadata),
            &a.retry_policy.as_ref().map(to_json),
            &a.created_at,
            &a.updated_at,
            &a.validate_payloads,
        ],
    )
    .await
    .map_err(unique_as_conflict(errors::APP_CONFLICT))?;
    Ok(())
}

async fn find_et(c: &impl GenericClient, name: &str, lock: bool) -> Result<Option<EventType>> {
    let sql = if lock {
        format!("SELECT {ET_COLS} FROM event_types WHERE name = $1 FOR NO KEY UPDATE")
    } else {
        format!("SELECT {ET_COLS} FROM event_types WHERE name = $1")
    };
    opt(c, &sql, &[&name])
        .await
        .map_err(backend)?
        .map(|r| et_row(&r))
        .transpose()
}

async fn put_et(c: &impl GenericClient, e: &EventType, insert: bool) -> Result<()> {
    let sql = if insert {
        "INSERT INTO event_types (name, description, archived, deprecated, schemas, group_name, feature_flags, created_at, updated_at, validate_payloads)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    } else {
        "UPDATE event_types SET description = $2, archived = $3, deprecated = $4, schemas = $5,
         group_name = $6, feature_flags = $7, created_at = $8, updated_at = $9, validate_payloads = $10
         WHERE name = $1"
    };
    exec(
        c,
        sql,
        &[
            &e.name,
            &e.description,
            &e.archived,
            &e.deprecated,
            &e.schemas.as_ref().map(to_json),
            &e.group_name,
            &e.feature_flags.as_ref().map(to_json),
            &e.created_at,
            &e.updated_at,
            &e.validate_payloads,
        ],
    )
    .await
    .map_err(unique_as_conflict(errors::EVENT_TYPE_CONFLICT))?;
    Ok(())
}

async fn find_ep(
    c: &impl GenericClient,
    app_id: &str,
    id_or_uid: &str,
) -> Result<Option<Endpoint>> {
    opt(
        c,
        &format!(
            "SELECT {EP_COLS} FROM endpoints WHERE app_id = $1 AND (id = $2 OR uid = $2)
             ORDER BY id = $2 DESC LIMIT 1"
        ),
        &[&app_id, &id_or_uid],
    )
    .await
    .map_err(backend)?
    .map(|r| ep_row(&r))
    .transpose()
}

/// Writes an endpoint; `failing_since` is the store's own and never written from here.
async fn put_ep(c: &impl GenericClient, sealer: &Sealer, e: &Endpoint, insert: bool) -> Result<()> {
    let sql = if insert {
        "INSERT INTO endpoints (id, app_id, uid, url, disabled, settings, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    } else {
        "UPDATE endpoints SET app_id = $2, uid = $3, url = $4, disabled = $5, settings = $6,
         created_at = $7, updated_at = $8 WHERE id = $1"
    };
    exec(
        c,
        sql,
        &[
            &e.id,
            &e.app_id,
            &e.uid,
            &e.url,
            &e.disabled,
            &sealer.seal_settings(&e.id, &e.settings),
            &e.created_at,
            &e.updated_at,
        ],
    )
    .await
    .map_err(unique_as_conflict(errors::ENDPOINT_CONFLICT))?;
    Ok(())
}

pub(super) async fn insert_message(c: &impl GenericClient, msg: &Message) -> Result<()> {
    exec(
        c,
        "INSERT INTO messages (id, app_id, event_id, event_type, payload, channels, tags, created_at, deliver_at, payload_expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &msg.id,
            &msg.app_id,
            &msg.event_id,
            &msg.event_type,
            &&*msg.payload,
            &msg.channels.as_ref().map(to_json),
            &msg.tags.as_ref().map(to_json),
            &msg.created_at,
            &msg.deliver_at,
            &msg.payload_expires_at,
        ],
    )
    .await
    .map_err(|e| {
        // No such application (or it was deleted before this committed): as SQLite.
        if is_foreign_key(&e, "messages_app_id_fkey") {
            StoreError::NotFound
        } else {
            unique_as_conflict(errors::MESSAGE_CONFLICT)(e)
        }
    })?;
    Ok(())
}

// --- the queue ---------------------------------------------------------------------

#[async_trait]
impl DeliveryQueue for PgStore {
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        max: usize,
        max_failing: usize,
        busy: &[Busy],
    ) -> Result<Vec<ClaimedDelivery>> {
        let busy = busy.to_vec();
        let node = self.node.clone();
        self.in_tx(move |tx| {
            Box::pin(
                async move { queue::claim(tx, &node, now, lease, max, max_failing, &busy).await },
            )
        })
        .await
    }

    async fn report_attempt(
        &self,
        delivery_id: i64,
        lease_token: &str,
        report: AttemptReport,
    ) -> Result<ReportOutcome> {
        self.batcher
            .report(delivery_id, lease_token.to_string(), report)
            .await
    }

    async fn release_delivery(
        &self,
        delivery_id: i64,
        lease_token: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let token = lease_token.to_string();
        self.in_tx(move |tx| {
            Box::pin(async move { queue::release(tx, delivery_id, &token, now).await })
        })
        .await
    }

    async fn next_due(&self, busy: &[Busy], failing: bool) -> Result<Option<DateTime<Utc>>> {
        let client = self.client().await?;
        queue::next_due(&client, busy, failing).await
    }

    fn attach_intake(&self, intake: Weak<dyn Intake>) {
        *self.intake.write().unwrap_or_else(|e| e.into_inner()) = Some(intake);
    }
}

#[async_trait]
impl Store for PgStore {
    // --- applications ------------------------------------------------------------

    async fn create_app(&self, mut app: Application) -> Result<Application> {
        app.created_at = ms(app.created_at);
        app.updated_at = ms(app.updated_at);
        let client = self.client().await?;
        let put = put_app(&client, &app, true).await;
        self.lookups.apps.invalidate();
        put?;
        Ok(app)
    }

    async fn get_app(&self, id_or_uid: &str) -> Result<Option<Application>> {
        let cache = self.lookups.apps();
        let generation = match lookup(cache, id_or_uid) {
            Ok(hit) => return Ok(hit),
            Err(generation) => generation,
        };
        let client = self.client().await?;
        let found = find_app(&client, id_or_uid).await?;
        remember(cache, generation, id_or_uid, &found);
        Ok(found)
    }

    async fn list_apps(&self, q: &ListQuery, only: Option<&str>) -> Result<Page<Application>> {
        let client = self.client().await?;
        let mut params = Params::default();
        let mut sql = format!("SELECT {APP_COLS} FROM applications WHERE true");
        if let Some(id) = only {
            sql.push_str(&format!(" AND id = {}", params.push(id.to_string())));
        }
        paginate(&client, &sql, params, "id", q, app_row, |a| a.id.clone()).await
    }

    async fn update_app(&self, id: &str, change: Mutator<Application>) -> Result<Application> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let row = opt(
            &tx,
            &format!("SELECT {APP_COLS} FROM applications WHERE id = $1 FOR NO KEY UPDATE"),
            &[&id],
        )
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        let mut app = app_row(&row)?;
        change(&mut app)?;
        app.id = id.to_string();
        app.created_at = ms(app.created_at);
        app.updated_at = ms(app.updated_at);
        put_app(&tx, &app, false).await?;
        let committed = tx.commit().await.map_err(backend);
        self.lookups.apps.invalidate();
        committed?;
        Ok(app)
    }

    async fn delete_app(&self, id: &str) -> Result<()> {
        // Endpoints, messages and tokens reference the application, deliveries and
        // attempts its endpoints and messages, all ON DELETE CASCADE.
        // Its endpoints' attempt statistics are not a reference: they go first.
        let client = self.client().await?;
        let deleted = exec(
            &client,
            "WITH stats AS (DELETE FROM attempt_stats
                            WHERE scope IN (SELECT id FROM endpoints WHERE app_id = $1))
             DELETE FROM applications WHERE id = $1",
            &[&id],
        )
        .await;
        self.lookups.apps.invalidate();
        found(deleted.map_err(backend)?)
    }

    // --- event types -------------------------------------------------------------

    async fn create_event_type(&self, mut et: EventType) -> Result<EventType> {
        et.created_at = ms(et.created_at);
        et.updated_at = ms(et.updated_at);
        let client = self.client().await?;
        let put = put_et(&client, &et, true).await;
        self.lookups.event_types.invalidate();
        put?;
        Ok(et)
    }

    async fn get_event_type(&self, name: &str) -> Result<Option<EventType>> {
        let cache = self.lookups.event_types();
        let generation = match lookup(cache, name) {
            Ok(hit) => return Ok(hit),
            Err(generation) => generation,
        };
        let client = self.client().await?;
        let found = find_et(&client, name, false).await?;
        remember(cache, generation, name, &found);
        Ok(found)
    }

    async fn list_event_types(
        &self,
        q: &ListQuery,
        include_archived: bool,
    ) -> Result<Page<EventType>> {
        let client = self.client().await?;
        let mut sql = format!("SELECT {ET_COLS} FROM event_types WHERE true");
        if !include_archived {
            sql.push_str(" AND NOT archived");
        }
        paginate(&client, &sql, Params::default(), "name", q, et_row, |e| {
            e.name.clone()
        })
        .await
    }

    async fn update_event_type(&self, name: &str, change: Mutator<EventType>) -> Result<EventType> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let mut et = find_et(&tx, name, true)
            .await?
            .ok_or(StoreError::NotFound)?;
        change(&mut et)?;
        et.name = name.to_string();
        et.created_at = ms(et.created_at);
        et.updated_at = ms(et.updated_at);
        put_et(&tx, &et, false).await?;
        let committed = tx.commit().await.map_err(backend);
        self.lookups.event_types.invalidate();
        committed?;
        Ok(et)
    }

    async fn expunge_event_type(&self, name: &str) -> Result<()> {
        let client = self.client().await?;
        let deleted = exec(&client, "DELETE FROM event_types WHERE name = $1", &[&name]).await;
        self.lookups.event_types.invalidate();
        found(deleted.map_err(backend)?)
    }

    // --- endpoints ---------------------------------------------------------------

    async fn create_endpoint(&self, mut ep: Endpoint) -> Result<Endpoint> {
        ep.created_at = ms(ep.created_at);
        ep.updated_at = ms(ep.updated_at);
        // Kept by the store as attempts are reported; a new endpoint has had none.
        ep.failing_since = None;
        let client = self.client().await?;
        put_ep(&client, &self.sealer, &ep, true).await?;
        Ok(ep)
    }

    async fn get_endpoint(&self, app_id: &str, id_or_uid: &str) -> Result<Option<Endpoint>> {
        let client = self.client().await?;
        find_ep(&client, app_id, id_or_uid).await
    }

    async fn list_endpoints(&self, app_id: &str, q: &ListQuery) -> Result<Page<Endpoint>> {
        let client = self.client().await?;
        let mut params = Params::default();
        let sql = format!(
            "SELECT {EP_COLS} FROM endpoints WHERE app_id = {}",
            params.push(app_id.to_string())
        );
        paginate(&client, &sql, params, "id", q, ep_row, |e| e.id.clone()).await
    }

    async fn update_endpoint(
        &self,
        app_id: &str,
        id: &str,
        change: Mutator<Endpoint>,
    ) -> Result<Endpoint> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let row = opt(
            &tx,
            &format!(
                "SELECT {EP_COLS} FROM endpoints WHERE app_id = $1 AND id = $2 FOR NO KEY UPDATE"
            ),
            &[&app_id, &id],
        )
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        let mut ep = ep_row(&row)?;
        let was_disabled = ep.disabled;
        let failing_since = ep.failing_since;
        change(&mut ep)?;
        ep.id = id.to_string();
        ep.app_id = app_id.to_string();
        ep.failing_since = failing_since;
        ep.created_at = ms(ep.created_at);
        ep.updated_at = ms(ep.updated_at);
        put_ep(&tx, &self.sealer, &ep, false).await?;
        if was_disabled && !ep.disabled {
            // A re-enabled endpoint starts with a clean record and its queued work due.
            exec(
                &tx,
                "UPDATE endpoints SET failing_since = NULL, next_due_at =
                     (SELECT min(due_at) FROM deliveries WHERE endpoint_id = $1 AND due_at IS NOT NULL)
                 WHERE id = $1",
                &[&ep.id],
            )
            .await
            .map_err(backend)?;
            ep.failing_since = None;
        }
        tx.commit().await.map_err(backend)?;
        Ok(ep)
    }

    async fn delete_endpoint(&self, app_id: &str, id: &str) -> Result<()> {
        // Its deliveries and attempts go with it (ON DELETE CASCADE); its attempt
        // statistics, not a reference, here.
        let client = self.client().await?;
        found(
            exec(
                &client,
                "WITH gone AS (DELETE FROM endpoints WHERE app_id = $1 AND id = $2 RETURNING id),
                      stats AS (DELETE FROM attempt_stats WHERE scope IN (SELECT id FROM gone))
                 SELECT 1 FROM gone",
                &[&app_id, &id],
            )
            .await
            .map_err(backend)?,
        )
    }

    // --- messages ----------------------------------------------------------------

    async fn create_message(&self, msg: Message) -> Result<Message> {
        self.batcher.create(stored(msg), None).await
    }

    async fn create_message_for_endpoint(
        &self,
        msg: Message,
        endpoint_id: &str,
    ) -> Result<Message> {
        self.batcher
            .create(stored(msg), Some(endpoint_id.to_string()))
            .await
    }

    async fn get_message(&self, app_id: &str, id_or_event_id: &str) -> Result<Option<Message>> {
        let client = self.client().await?;
        opt(
            &client,
            &format!(
                "SELECT {MSG_COLS} FROM messages WHERE app_id = $1 AND (id = $2 OR event_id = $2)
                 ORDER BY id = $2 DESC LIMIT 1"
            ),
            &[&app_id, &id_or_event_id],
        )
        .await
        .map_err(backend)?
        .map(|r| msg_row(&r))
        .transpose()
    }

    async fn list_messages(&self, app_id: &str, q: &MessageQuery) -> Result<Page<Message>> {
        let client = self.client().await?;
        let mut params = Params::default();
        let app = params.push(app_id.to_string());
        // Columns are named with their table: the status walk joins `deliveries`, which
        // has columns of the same names.
        let (mut sql, key) = match q.failed {
            // Walk the app's failed deliveries in message order (a page costs its own
            // rows, however many deliveries the app has), each message once: for its
            // failed delivery to the first endpoint. The state is written out so that the
            // partial index `deliveries_failed` matches.
            true => {
                let cols = MSG_COLS
                    .split(", ")
                    .map(|c| format!("messages.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "SELECT {cols} FROM deliveries JOIN messages ON messages.id = deliveries.msg_id
                     WHERE deliveries.app_id = {app} AND deliveries.status = 'failed'
                       AND NOT EXISTS (SELECT 1 FROM deliveries AS first
                                       WHERE first.msg_id = deliveries.msg_id
                                         AND first.status = deliveries.status
                                         AND first.endpoint_id < deliveries.endpoint_id)
                       AND messages.app_id = {app}"
                );
                (sql, "deliveries.msg_id")
            }
            false => (
                format!("SELECT {MSG_COLS} FROM messages WHERE app_id = {app}"),
                "id",
            ),
        };
        if let Some(types) = &q.event_types {
            let p = params.push(types.clone());
            sql.push_str(&format!(" AND messages.event_type = ANY({p})"));
        }
        if let Some(ch) = &q.channel {
            let p = params.push(ch.clone());
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM json_array_elements_text(messages.channels::json) AS c (v) WHERE c.v = {p})"
            ));
        }
        if let Some(tag) = &q.tag {
            let p = params.push(tag.clone());
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM json_array_elements_text(messages.tags::json) AS t (v) WHERE t.v = {p})"
            ));
        }
        if let Some(b) = q.before {
            sql.push_str(&format!(
                " AND messages.created_at < {}",
                params.push(ms(b))
            ));
        }
        if let Some(a) = q.after {
            sql.push_str(&format!(
                " AND messages.created_at > {}",
                params.push(ms(a))
            ));
        }
        paginate(&client, &sql, params, key, &q.list, msg_row, |m| {
            m.id.clone()
        })
        .await
    }

    // --- auth --------------------------------------------------------------------

    async fn insert_token(&self, token: ApiToken) -> Result<()> {
        let client = self.client().await?;
        exec(
            &client,
            "INSERT INTO api_tokens (token_hash, app_id, expires_at, created_at, read_only,
                                     name, prefix, last_used_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &&token.hash[..],
                &token.app_id,
                &token.expires_at.map(ms),
                &ms(token.created_at),
                &token.read_only,
                &token.name,
                &token.prefix,
                &token.last_used_at.map(ms),
            ],
        )
        .await
        .map_err(unique_as_conflict(errors::TOKEN_CONFLICT))?;
        Ok(())
    }

    async fn find_token(&self, hash: &[u8; 32], now: DateTime<Utc>) -> Result<Option<ApiToken>> {
        let client = self.client().await?;
        opt(
            &client,
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens
                 WHERE token_hash = $1 AND (expires_at IS NULL OR expires_at > $2)"
            ),
            &[&&hash[..], &ms(now)],
        )
        .await
        .map_err(backend)?
        .map(|r| token_row(&r))
        .transpose()
    }

    async fn list_tokens(&self, now: DateTime<Utc>) -> Result<Vec<ApiToken>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens
                 WHERE expires_at IS NULL OR expires_at > $1
                 ORDER BY created_at, token_hash"
            ))
            .await
            .map_err(backend)?;
        client
            .query(&stmt, &[&ms(now)])
            .await
            .map_err(backend)?
            .iter()
            .map(token_row)
            .collect()
    }

    async fn purge_expired_tokens(&self, now: DateTime<Utc>) -> Result<u64> {
        let client = self.client().await?;
        exec(
            &client,
            "DELETE FROM api_tokens WHERE expires_at IS NOT NULL AND expires_at <= $1",
            &[&ms(now)],
        )
        .await
        .map_err(backend)
    }

    async fn revoke_token(&self, id: &[u8; TOKEN_ID_BYTES]) -> Result<()> {
        let (low, high) = token_hash_range(id);
        let client = self.client().await?;
        let n = exec(
            &client,
            "DELETE FROM api_tokens WHERE token_hash BETWEEN $1 AND $2",
            &[&&low[..], &&high[..]],
        )
        .await
        .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn touch_token(
        &self,
        hash: &[u8; 32],
        now: DateTime<Utc>,
        every: chrono::Duration,
    ) -> Result<()> {
        let client = self.client().await?;
        exec(
            &client,
            "UPDATE api_tokens SET last_used_at = $2
             WHERE token_hash = $1 AND (last_used_at IS NULL OR last_used_at <= $3)",
            &[&&hash[..], &ms(now), &ms(now - every)],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn has_admin_token(&self) -> Result<bool> {
        let client = self.client().await?;
        let row = opt(
            &client,
            "SELECT EXISTS (SELECT 1 FROM api_tokens WHERE app_id IS NULL)",
            &[],
        )
        .await
        .map_err(backend)?;
        row.map_or(Ok(false), |r| r.try_get(0).map_err(backend))
    }

    // --- idempotency -------------------------------------------------------------

    async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        now: DateTime<Utc>,
        stale_after: chrono::Duration,
    ) -> Result<IdempotencyState> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        // Claims the key if it is new, or takes it over if its holder's claim went stale
        // (and it was never finished). Either way the row is locked until commit (ON
        // CONFLICT locks it even when the WHERE refuses the update), so of concurrent
        // requests exactly one claims, and the others see its claim or its answer.
        let claimed = opt(
            &tx,
            "INSERT INTO idempotency_keys (scope, key, state, created_at) VALUES ($1, $2, 'pending', $3)
             ON CONFLICT (scope, key) DO UPDATE SET state = 'pending', status = NULL, body = NULL,
                 created_at = excluded.created_at
             WHERE NOT (idempotency_keys.state = 'done' AND idempotency_keys.status IS NOT NULL)
                 AND idempotency_keys.created_at <= $4
             RETURNING true",
            &[&scope, &key, &ms(now), &(now - stale_after)],
        )
        .await
        .map_err(backend)?
        .is_some();
        let state = if claimed {
            IdempotencyState::Claimed
        } else {
            let row = opt(
                &tx,
                "SELECT state, status, body FROM idempotency_keys WHERE scope = $1 AND key = $2",
                &[&scope, &key],
            )
            .await
            .map_err(backend)?;
            match row {
                Some(r) => idempotency_row(&r)?,
                None => IdempotencyState::InProgress,
            }
        };
        tx.commit().await.map_err(backend)?;
        Ok(state)
    }

    async fn idempotency_finish(
        &self,
        scope: &str,
        key: &str,
        response: StoredResponse,
    ) -> Result<()> {
        let client = self.client().await?;
        exec(
            &client,
            "UPDATE idempotency_keys SET state = 'done', status = $3, body = $4
             WHERE scope = $1 AND key = $2",
            &[&scope, &key, &i32::from(response.status), &response.body],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn idempotency_abandon(&self, scope: &str, key: &str) -> Result<()> {
        let client = self.client().await?;
        exec(
            &client,
            "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND state = 'pending'",
            &[&scope, &key],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn idempotency_purge(&self, before: DateTime<Utc>) -> Result<u64> {
        let client = self.client().await?;
        exec(
            &client,
            "DELETE FROM idempotency_keys WHERE created_at < $1",
            &[&ms(before)],
        )
        .await
        .map_err(backend)
    }

    // --- delivery ----------------------------------------------------------------

    async fn list_attempts(&self, app_id: &str, q: &AttemptQuery) -> Result<Page<Attempt>> {
        let client = self.client().await?;
        deliveries::list_attempts(&client, app_id, q).await
    }

    async fn get_attempt(&self, app_id: &str, attempt_id: &str) -> Result<Option<Attempt>> {
        let client = self.client().await?;
        deliveries::get_attempt(&client, app_id, attempt_id).await
    }

    async fn list_message_deliveries(
        &self,
        app_id: &str,
        msg_id: &str,
        q: &ListQuery,
    ) -> Result<Page<DeliveryView>> {
        let client = self.client().await?;
        deliveries::list_message_deliveries(&client, app_id, msg_id, q).await
    }

    async fn resend(
        &self,
        app_id: &str,
        msg_id: &str,
        endpoint_id: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (app_id, msg_id, endpoint_id) = (
            app_id.to_string(),
            msg_id.to_string(),
            endpoint_id.to_string(),
        );
        let node = self.node.clone();
        self.in_tx(move |tx| {
            Box::pin(async move {
                deliveries::resend(tx, &node, &app_id, &msg_id, &endpoint_id, now).await
            })
        })
        .await
    }

    async fn recover(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let (app_id, endpoint_id) = (app_id.to_string(), endpoint_id.to_string());
        let node = self.node.clone();
        self.in_tx(move |tx| {
            Box::pin(async move {
                deliveries::recover(tx, &node, &app_id, &endpoint_id, since, until, now).await
            })
        })
        .await
    }

    async fn queue_stats(&self, now: DateTime<Utc>) -> Result<QueueStats> {
        let client = self.client().await?;
        deliveries::queue_stats(&client, now).await
    }

    async fn endpoint_stats(&self, app_id: &str, endpoint_id: &str) -> Result<DeliveryCounts> {
        let client = self.client().await?;
        deliveries::endpoint_stats(&client, app_id, endpoint_id).await
    }

    async fn endpoint_attempt_buckets(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        width: chrono::Duration,
    ) -> Result<Vec<AttemptBucket>> {
        let client = self.client().await?;
        deliveries::endpoint_attempt_buckets(&client, app_id, endpoint_id, since, until, width)
            .await
    }

    async fn attempt_buckets(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        width: chrono::Duration,
    ) -> Result<Vec<AttemptBucket>> {
        let client = self.client().await?;
        deliveries::attempt_buckets(&client, since, until, width).await
    }

    async fn failing_endpoints(&self, limit: usize) -> Result<(Vec<FailingEndpoint>, u64)> {
        let client = self.client().await?;
        deliveries::failing_endpoints(&client, limit).await
    }

    async fn list_endpoint_deliveries(
        &self,
        app_id: &str,
        endpoint_id: &str,
        q: &ListQuery,
        status: Option<DeliveryStatus>,
    ) -> Result<Page<DeliveryView>> {
        let client = self.client().await?;
        deliveries::list_endpoint_deliveries(&client, app_id, endpoint_id, q, status).await
    }

    // --- retention ---------------------------------------------------------------

    async fn prune_messages(
        &self,
        before: DateTime<Utc>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Pruned> {
        let after = after.map(str::to_string);
        self.in_tx(move |tx| {
            Box::pin(
                async move { retention::prune_messages(tx, before, after.as_deref(), limit).await },
            )
        })
        .await
    }

    async fn drop_expired_payloads(&self, now: DateTime<Utc>, limit: usize) -> Result<Pruned> {
        self.in_tx(move |tx| {
            Box::pin(async move { retention::drop_expired_payloads(tx, now, limit).await })
        })
        .await
    }

    async fn prune_attempt_stats(&self, before: DateTime<Utc>, limit: usize) -> Result<Pruned> {
        let client = self.client().await?;
        deliveries::prune_attempt_stats(&client, before, limit).await
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
