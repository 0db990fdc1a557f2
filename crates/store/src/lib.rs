//! hookline's storage interface: the one place durable state lives.
//!
//! The API (and the delivery engine) talk to a [`Store`] trait object and never to a
//! database directly, so a second backend (PostgreSQL, several hookline processes on one
//! database) can be added without touching callers. For that reason nothing here may rely
//! on "only one writer" or on in-process state for correctness: uniqueness lives in
//! constraints, read-modify-write happens inside one transaction ([`Mutator`]), and every
//! conflict is reported as a [`StoreError`] the caller can branch on.
//!
//! Besides the two backends ([`sqlite`], [`postgres`]), [`copy`] moves an installation
//! from the first to the second (`hookline copy`): every record, ids and times kept, in
//! one PostgreSQL transaction.
//!
//! This crate knows neither HTTP nor delivery; it must not import them.

mod cache;
pub mod clock;
mod common;
#[cfg(test)]
mod conformance;
pub mod copy;
pub mod model;
pub mod postgres;
pub mod sealing;
pub mod sqlite;
mod stats;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use clock::now;
pub use model::*;

/// What can go wrong in a store call, in terms a caller can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was violated; the text names what collided (never a secret).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A [`Mutator`] refused the change.
    #[error("{0}")]
    Rejected(#[from] Rejected),
    /// The disk holding the database is full: nothing was written. Reads still work, and
    /// writes succeed again by themselves once space is freed, so callers answer "try
    /// again later" (the API: 503 `storage_full`) instead of a failure. The text is for
    /// the log.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// The database cannot be reached (refused, lost, timed out, shutting down): the
    /// process reconnects by itself once it is back. Callers answer "try again" (the API:
    /// 503 `unavailable`). A write whose connection broke while it committed may or may
    /// not have happened, as with any lost connection: retry it with its idempotency key.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The main key that seals the endpoints' secrets is missing or not this database's
    /// (see [`sealing`]): nothing was read or written. The text says which key is
    /// wanted and where it was looked for, never a key.
    #[error("{0}")]
    Key(String),
    /// Anything else: the database failed. Callers answer 500 and log the detail.
    #[error("storage failure: {0}")]
    Backend(String),
}

/// A validation failure raised while applying a change inside a transaction.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Rejected {
    /// Dotted path of the offending field, in the API's camelCase spelling.
    pub field: String,
    pub message: String,
}

impl Rejected {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A change applied to the current version of a record inside the store's transaction,
/// so concurrent PATCHes never lose each other's writes, on any backend.
pub type Mutator<T> = Box<dyn FnOnce(&mut T) -> std::result::Result<(), Rejected> + Send>;

/// A worker that takes fresh deliveries straight from the transaction that creates them.
///
/// A delivery that could start at once would otherwise be written `pending`, found by the
/// worker's next claim (a second write, and a read of the message back) and only then
/// attempted. With an intake attached ([`DeliveryQueue::attach_intake`]), the store asks
/// it, while fanning a message out, whether it has a free slot for the endpoint; on a yes
/// the delivery is written already `sending` under a lease, and the worker is handed it
/// once the message is durable. Nothing depends on the hand-over for correctness: the
/// lease is in the database like any claim's, so a worker that dies before attempting it
/// only delays the delivery until the lease expires (or the next start hands it back).
pub trait Intake: Send + Sync + 'static {
    /// How long a handed-over delivery is leased for, as a claim's lease.
    fn lease(&self) -> chrono::Duration;
    /// Reserves a slot for an attempt to `endpoint` right after commit, if the worker
    /// has one free (within the endpoint's `maxConcurrency` and the worker's global cap).
    /// Called inside the write transaction: it must not block or wait.
    fn reserve(&self, endpoint: &Endpoint, app_throttle_rate: Option<u32>) -> bool;
    /// As [`Intake::reserve`], for a delivery to an endpoint that has work due before it
    /// (queued `pending`): a yes lets it pass that work, so the worker says yes only where
    /// [`passes_queue`] allows and the queue is not kept in order for a reason of its own
    /// (a failing endpoint's retries).
    fn reserve_behind(&self, endpoint: &Endpoint, app_throttle_rate: Option<u32>) -> bool;
    /// The worker's own concurrency limit for `endpoint` (adaptive concurrency), if it
    /// has one: it stands in for the default `maxConcurrency`, for this worker's attempts
    /// (which [`Intake::reserve`] checks) and for every process's together
    /// (the leased rows, which the store counts where processes share it).
    fn limit(&self, endpoint: &Endpoint) -> Option<usize> {
        let _ = endpoint;
        None
    }
    /// The reserved deliveries, leased, once their message is durable.
    fn take(&self, claimed: Vec<ClaimedDelivery>);
    /// The write that reserved these slots (one endpoint id per slot) did not commit.
    fn cancel(&self, endpoint_ids: Vec<String>);
    /// A committed write queued deliveries `pending` without handing them over
    /// (scheduled for later, or the endpoint had no free slot): time to look at the queue.
    fn queued(&self);
}

/// Whether a fresh delivery to an endpoint with `in_flight` attempts under a cap of `cap`
/// may start at once, instead of being queued; `behind`: the endpoint has work due
/// before it.
///
/// With nothing due before it, while a slot is free. With work due, only while fewer
/// than half the endpoint's slots are taken: the queue is then what was left of a moment
/// the limit held (a burst, or an adaptive limit still climbing), and the next claim takes
/// it in one go. Queueing behind it instead would send every create meanwhile through a
/// claim of its own, a second write, for as long as creates keep coming: on one busy
/// endpoint that kept a backlog for hundreds of milliseconds after the limit had stopped
/// holding anything. Near the cap, fresh deliveries queue behind older ones, first come
/// first served, so nothing queued waits on a stream of newer ones.
pub fn passes_queue(in_flight: usize, cap: usize, behind: bool) -> bool {
    match behind {
        false => in_flight < cap,
        true => in_flight.saturating_mul(2) < cap,
    }
}

/// The part of the store the delivery engine works through: claiming due work under a
/// lease, reporting attempts, handing work back, and when the next work falls due. Kept
/// apart so the dispatcher depends on nothing else (and tests can wrap just this).
#[async_trait]
pub trait DeliveryQueue: Send + Sync + 'static {
    /// Claims up to `max` due deliveries with a lease until `now + lease`. Deliveries
    /// whose lease expired (a crashed worker) are due again. `busy` says how many
    /// attempts this process already has in flight per endpoint id, and its own limit for
    /// the endpoint if any, so no endpoint gets more than its `maxConcurrency` (or that
    /// limit; [`Busy::FULL`]: the endpoint is full for now, and is not even looked at; an
    /// application id marked full: all its endpoints are). A throttled endpoint
    /// gets at most `throttleRate` per claim, and a throttled application at most its
    /// `throttleRate` over all its endpoints. A failing endpoint (one whose last attempt
    /// failed) gets one attempt at a time ([`Endpoint::concurrency_cap`]), and at most
    /// `max_failing` of the deliveries claimed go to failing endpoints, so that dead ones
    /// can only ever hold the part of the worker's slots it sets aside for them. Work is
    /// found through indexes only.
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        max: usize,
        max_failing: usize,
        busy: &[Busy],
    ) -> Result<Vec<ClaimedDelivery>>;
    /// Logs the attempt and, if `lease_token` still holds the delivery, moves it on.
    async fn report_attempt(
        &self,
        delivery_id: i64,
        lease_token: &str,
        report: AttemptReport,
    ) -> Result<ReportOutcome>;
    /// Hands a claimed delivery back unattempted (shutdown), due at `now`.
    async fn release_delivery(
        &self,
        delivery_id: i64,
        lease_token: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// When the earliest queued delivery (or lease expiry) falls due, if any, leaving
    /// out endpoints and applications `busy` marks full (`usize::MAX`), as the claim does,
    /// and failing endpoints unless `failing` (the worker has room for them).
    async fn next_due(&self, busy: &[Busy], failing: bool) -> Result<Option<DateTime<Utc>>>;
    /// Hands fresh deliveries that can start at once straight to `intake` (see
    /// [`Intake`]). Held weakly: the worker holds the store, not the other way round. A
    /// backend that cannot do this ignores it; the deliveries are then claimed as usual.
    fn attach_intake(&self, intake: std::sync::Weak<dyn Intake>) {
        let _ = intake;
    }
}

/// The storage interface. Every method is one transaction.
#[async_trait]
pub trait Store: DeliveryQueue {
    /// Whether writes are being refused because the disk is full (since the last write
    /// that failed for it, and until one succeeds again). For health checks and metrics:
    /// no lookup, no I/O.
    fn storage_full(&self) -> bool {
        false
    }

    // --- applications -------------------------------------------------------------
    /// Inserts a new application; `Conflict` if its uid is taken.
    async fn create_app(&self, app: Application) -> Result<Application>;
    /// Looks an application up by id, or by uid when no id matches.
    async fn get_app(&self, id_or_uid: &str) -> Result<Option<Application>>;
    /// Lists applications; `only` restricts the listing to one id (app-scoped tokens).
    async fn list_apps(&self, q: &ListQuery, only: Option<&str>) -> Result<Page<Application>>;
    async fn update_app(&self, id: &str, change: Mutator<Application>) -> Result<Application>;
    /// Deletes an application with everything it owns.
    async fn delete_app(&self, id: &str) -> Result<()>;

    // --- event types --------------------------------------------------------------
    async fn create_event_type(&self, et: EventType) -> Result<EventType>;
    async fn get_event_type(&self, name: &str) -> Result<Option<EventType>>;
    async fn list_event_types(
        &self,
        q: &ListQuery,
        include_archived: bool,
    ) -> Result<Page<EventType>>;
    async fn update_event_type(&self, name: &str, change: Mutator<EventType>) -> Result<EventType>;
    /// Removes an event type for good (the API's DELETE archives through `update`).
    async fn expunge_event_type(&self, name: &str) -> Result<()>;

    // --- endpoints ----------------------------------------------------------------
    /// Inserts a new endpoint; `Conflict` if its uid is taken within the app.
    async fn create_endpoint(&self, ep: Endpoint) -> Result<Endpoint>;
    async fn get_endpoint(&self, app_id: &str, id_or_uid: &str) -> Result<Option<Endpoint>>;
    async fn list_endpoints(&self, app_id: &str, q: &ListQuery) -> Result<Page<Endpoint>>;
    async fn update_endpoint(
        &self,
        app_id: &str,
        id: &str,
        change: Mutator<Endpoint>,
    ) -> Result<Endpoint>;
    async fn delete_endpoint(&self, app_id: &str, id: &str) -> Result<()>;

    // --- messages -----------------------------------------------------------------
    /// Commits a message durably before returning; `Conflict` if its `event_id` is
    /// already used within the app. The attached [`Intake`], if any, hears of its
    /// deliveries (handed over, or `queued`): callers need not wake the worker.
    async fn create_message(&self, msg: Message) -> Result<Message>;
    /// Commits a message with one delivery, to this endpoint only, whatever its filters
    /// (an example sent from a dashboard).
    async fn create_message_for_endpoint(&self, msg: Message, endpoint_id: &str)
        -> Result<Message>;
    /// Looks a message up by id, or by `event_id` when no id matches.
    async fn get_message(&self, app_id: &str, id_or_event_id: &str) -> Result<Option<Message>>;
    async fn list_messages(&self, app_id: &str, q: &MessageQuery) -> Result<Page<Message>>;

    // --- auth ---------------------------------------------------------------------
    async fn insert_token(&self, token: ApiToken) -> Result<()>;
    /// Finds an unexpired token by the SHA-256 of its secret text.
    async fn find_token(&self, hash: &[u8; 32], now: DateTime<Utc>) -> Result<Option<ApiToken>>;
    /// Whether any admin (not app-scoped) token exists.
    async fn has_admin_token(&self) -> Result<bool>;
    /// Every token not expired at `now`, oldest first (for `GET /api/v1/auth/token`).
    async fn list_tokens(&self, now: DateTime<Utc>) -> Result<Vec<ApiToken>>;
    /// Deletes the token whose id ([`ApiToken::id`]) is these hash bytes; `NotFound` if
    /// there is none. Requests look their token up each time, so it is refused at once,
    /// by every process sharing the database.
    async fn revoke_token(&self, id: &[u8; TOKEN_ID_BYTES]) -> Result<()>;
    /// Deletes the tokens expired by `now` (no request or listing sees them any more);
    /// returns how many. Run by the retention pass.
    async fn purge_expired_tokens(&self, now: DateTime<Utc>) -> Result<u64>;
    /// Records that the token was used at `now`, unless its last use recorded is less
    /// than `every` before: at most one write per token per `every`, whatever the number
    /// of processes and requests.
    async fn touch_token(
        &self,
        hash: &[u8; 32],
        now: DateTime<Utc>,
        every: chrono::Duration,
    ) -> Result<()>;

    // --- idempotency --------------------------------------------------------------
    /// Claims `key` within `scope`. A pending claim older than `stale_after` (its holder
    /// crashed) is taken over.
    async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        now: DateTime<Utc>,
        stale_after: chrono::Duration,
    ) -> Result<IdempotencyState>;
    /// Records the response for a claimed key so repeats get it back.
    async fn idempotency_finish(
        &self,
        scope: &str,
        key: &str,
        response: StoredResponse,
    ) -> Result<()>;
    /// Drops a claim whose request failed in a way that should not be replayed.
    async fn idempotency_abandon(&self, scope: &str, key: &str) -> Result<()>;
    /// Deletes finished keys older than `before`; returns how many went.
    async fn idempotency_purge(&self, before: DateTime<Utc>) -> Result<u64>;

    // --- delivery (the queue itself is in [`DeliveryQueue`]) ------------------------
    async fn list_attempts(&self, app_id: &str, q: &AttemptQuery) -> Result<Page<Attempt>>;
    async fn get_attempt(&self, app_id: &str, attempt_id: &str) -> Result<Option<Attempt>>;
    /// Per-endpoint delivery state of one message.
    async fn list_message_deliveries(
        &self,
        app_id: &str,
        msg_id: &str,
        q: &ListQuery,
    ) -> Result<Page<DeliveryView>>;
    /// Queues one more attempt of a message to an endpoint, due now (a manual resend),
    /// whatever state its delivery was in; `Conflict` while an attempt is in flight.
    async fn resend(
        &self,
        app_id: &str,
        msg_id: &str,
        endpoint_id: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Requeues, due now, every failed delivery to the endpoint of a message created in
    /// `[since, until)`, but for messages whose payload retention has ended (nothing
    /// left to send). One transaction: done entirely or not at all.
    async fn recover(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<u64>;
    /// Queue depth and lag, for metrics (counts walk an index; fine at scrape rate).
    async fn queue_stats(&self, now: DateTime<Utc>) -> Result<QueueStats>;
    /// How many of the endpoint's deliveries are in each state.
    async fn endpoint_stats(&self, app_id: &str, endpoint_id: &str) -> Result<DeliveryCounts>;
    /// The endpoint's attempts that started in `[since, until)`, counted by outcome with
    /// their duration percentiles, in buckets `width` long from `since`: only buckets
    /// with attempts, by index; nothing for an endpoint that is not `app_id`'s. Read
    /// from the attempt statistics, kept per endpoint and hour (see the `stats`
    /// module), never from the attempts: an hour counts in the bucket its start falls
    /// in, so `since` and `width` are whole hours for exact buckets, and percentiles
    /// are the top of a duration bucket (at most 25 % above the exact value).
    async fn endpoint_attempt_buckets(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        width: chrono::Duration,
    ) -> Result<Vec<AttemptBucket>>;
    /// [`Store::endpoint_attempt_buckets`] over every endpoint's attempts, from their
    /// statistics per hour when `since` and `width` are whole hours, else per minute.
    async fn attempt_buckets(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        width: chrono::Duration,
    ) -> Result<Vec<AttemptBucket>>;
    /// Endpoints failing with no success since (`failing_since` set), the longest
    /// failing first, at most `limit`, each with whether it has work queued, and how
    /// many there are in all. Reads the endpoints table (small beside the attempts), not
    /// the attempts.
    async fn failing_endpoints(&self, limit: usize) -> Result<(Vec<FailingEndpoint>, u64)>;
    /// Delivery state of the messages sent to one endpoint, newest message first.
    async fn list_endpoint_deliveries(
        &self,
        app_id: &str,
        endpoint_id: &str,
        q: &ListQuery,
        status: Option<DeliveryStatus>,
    ) -> Result<Page<DeliveryView>>;

    // --- retention ----------------------------------------------------------------
    /// One small batch of the retention pass: looks at up to `limit` messages created
    /// before `before`, in id (creation) order after `after`, and deletes each one none
    /// of whose deliveries is pending or in flight, with its deliveries and attempts. A
    /// message still owed a delivery is kept, and looked at again by the next walk.
    /// Safe to run from several processes at once: each batch takes messages no other
    /// batch holds, and a row is deleted once.
    async fn prune_messages(
        &self,
        before: DateTime<Utc>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Pruned>;
    /// Drops the payloads (replaced by `{}`) of up to `limit` messages whose payload
    /// retention ended by `now` and none of whose deliveries is pending or in flight.
    async fn drop_expired_payloads(&self, now: DateTime<Utc>, limit: usize) -> Result<Pruned>;
    /// Deletes up to `limit` rows of the attempt statistics (the charts' counts) for
    /// hours or minutes that began before `before`, the oldest first (`Pruned::stats`).
    /// The retention pass gives it the messages' cutoff: the counts go with the
    /// attempts they counted.
    async fn prune_attempt_stats(&self, before: DateTime<Utc>, limit: usize) -> Result<Pruned>;
    /// Gives some of the space freed by deletes back to the file system, a bounded
    /// amount per call; returns how many pages went. Only SQLite has any to give (and
    /// only a database created with incremental auto-vacuum); PostgreSQL's autovacuum
    /// makes freed space reusable by itself.
    async fn reclaim_space(&self) -> Result<u64> {
        Ok(0)
    }
}
