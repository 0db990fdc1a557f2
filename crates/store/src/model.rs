//! The records the store keeps, in storage terms (not the API's JSON shapes).
//!
//! Fields that only matter as a whole (endpoint settings, metadata) are kept together as
//! JSON by the backends; fields that queries filter or sort on are real columns.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use hookline_retry::RetryPolicy;
use serde::{Deserialize, Serialize};

/// A new time-ordered id with a Svix-style prefix (`app_`, `ep_`, `msg_`, ...).
///
/// KSUIDs with millisecond precision sort by creation time, which makes id order a good
/// pagination order and keeps inserts at the right edge of the primary-key index.
///
/// The random part comes from the thread's CSPRNG rather than the crate's default of one
/// `getrandom` system call per id: two ids per delivered message made that about 4 % of
/// the tokio worker's time under load (docs/benchmark-journal.md, "Fourth pass").
pub fn new_id(prefix: &str) -> String {
    use rand::RngCore;
    use svix_ksuid::KsuidLike;
    let mut payload = [0u8; svix_ksuid::KsuidMs::PAYLOAD_BYTES];
    rand::rng().fill_bytes(&mut payload);
    let ksuid = svix_ksuid::KsuidMs::from_millis(None, Some(&payload)).to_base62();
    let mut id = String::with_capacity(prefix.len() + 1 + ksuid.len());
    id.push_str(prefix);
    id.push('_');
    id.push_str(&ksuid);
    id
}

/// How far ahead paced (`throttleRate`) work is booked: an endpoint or application whose
/// next free start is further ahead gets no more until it comes closer. Short against
/// the lease, so booked work starts long before its lease runs out. The PostgreSQL claim
/// books in the database against it; a worker pacing in memory (SQLite) against it too.
pub const PACE_AHEAD: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq)]
pub struct Application {
    pub id: String,
    pub uid: Option<String>,
    pub name: String,
    pub throttle_rate: Option<u32>,
    pub metadata: BTreeMap<String, String>,
    /// Default retry policy for this application's endpoints.
    pub retry_policy: Option<RetryPolicy>,
    /// Check every message's payload against its event type's schema at ingest.
    pub validate_payloads: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventType {
    pub name: String,
    pub description: String,
    pub archived: bool,
    pub deprecated: bool,
    pub schemas: Option<serde_json::Value>,
    pub group_name: Option<String>,
    pub feature_flags: Option<Vec<String>>,
    /// Check payloads of this type against its newest schema at ingest.
    pub validate_payloads: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How deliveries to an endpoint are signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SignatureConfig {
    /// Standard Webhooks headers; `svix_headers` also sends the `svix-*` names (unset:
    /// the server-wide default).
    Standard {
        #[serde(
            rename = "svixHeaders",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        svix_headers: Option<bool>,
    },
    /// The same headers, signed with ed25519 (`v1a,`) by a `whsk_` key pair; receivers
    /// verify with its `whpk_` public key. `svix_headers` as for `Standard`.
    Ed25519 {
        #[serde(
            rename = "svixHeaders",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        svix_headers: Option<bool>,
    },
    /// Hex HMAC-SHA256 of the raw body in the named header, keyed by the secret string.
    HmacSha256Hex { header: String },
    /// No signature. A struct variant, not a unit one: serde ignores
    /// `deny_unknown_fields` for unit variants of a tagged enum, and `{"scheme": "none",
    /// "header": "x"}` should be refused like any other unknown field.
    None {},
}

impl SignatureConfig {
    /// Whether deliveries carry the Standard Webhooks headers (`webhook-id`,
    /// `webhook-timestamp`, `webhook-signature`), whose signatures follow each secret's
    /// kind (`whsec_`: `v1,`; `whsk_`: `v1a,`).
    pub fn is_standard_webhooks(&self) -> bool {
        matches!(self, Self::Standard { .. } | Self::Ed25519 { .. })
    }

    /// The endpoint's own choice about the `svix-*` headers (`None`: the server's).
    pub fn svix_headers(&self) -> Option<bool> {
        match self {
            Self::Standard { svix_headers } | Self::Ed25519 { svix_headers } => *svix_headers,
            Self::HmacSha256Hex { .. } | Self::None {} => None,
        }
    }
}

/// One signing secret. The first entry of [`EndpointSettings::secrets`] is the current
/// one; older entries stay valid until `expires_at` (rotation grace period).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEntry {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for SecretEntry {
    // Secrets never reach logs, not even through a stray `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretEntry")
            .field("key", &"***")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Everything about an endpoint that queries never filter on, stored as one JSON value.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointSettings {
    pub description: String,
    pub event_types: Option<Vec<String>>,
    pub channels: Option<Vec<String>>,
    pub throttle_rate: Option<u32>,
    pub metadata: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
    pub secrets: Vec<SecretEntry>,
    pub retry_policy: Option<RetryPolicy>,
    pub timeout_ms: Option<u32>,
    pub max_concurrency: Option<u32>,
    pub signature: Option<SignatureConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub id: String,
    pub app_id: String,
    pub uid: Option<String>,
    pub url: String,
    pub disabled: bool,
    pub settings: EndpointSettings,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the endpoint's current run of failed attempts began (`None`: its last attempt
    /// succeeded, or it has had none). Kept by the store as attempts are reported; what
    /// callers set here is ignored on writes.
    pub failing_since: Option<DateTime<Utc>>,
}

/// An endpoint failing with no success since (see [`Store::failing_endpoints`]).
///
/// [`Store::failing_endpoints`]: crate::Store::failing_endpoints
#[derive(Debug, Clone, PartialEq)]
pub struct FailingEndpoint {
    pub endpoint: Endpoint,
    /// Whether a delivery to it is queued or in flight, so it will be tried again: a
    /// retry due, or a message waiting its turn. `false`: every delivery it had has
    /// failed for good (or succeeded) and nothing more is queued. Read from the
    /// deliveries' due index, not the endpoint's `next_due_at`, which may be early.
    pub queued: bool,
}

/// What a worker holds of an endpoint (or of an application, for its pacing) when it
/// claims work, so that claims keep within its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    /// The endpoint's or the application's id.
    pub id: String,
    /// Attempts in flight to it in this process; [`Busy::FULL`]: take nothing of it now
    /// (an application id so marked: nothing of any of its endpoints).
    pub in_flight: usize,
    /// The worker's concurrency limit for the endpoint (adaptive concurrency), if it
    /// has one: see [`Endpoint::concurrency_cap_within`].
    pub limit: Option<usize>,
}

impl Busy {
    pub const FULL: usize = usize::MAX;

    /// `id` with `in_flight` attempts and no limit of the worker's own.
    pub fn new(id: impl Into<String>, in_flight: usize) -> Self {
        Self {
            id: id.into(),
            in_flight,
            limit: None,
        }
    }

    /// `id`, of which nothing is to be taken now.
    pub fn full(id: impl Into<String>) -> Self {
        Self::new(id, Self::FULL)
    }

    pub fn is_full(&self) -> bool {
        self.in_flight == Self::FULL
    }
}

/// `maxConcurrency` when an endpoint sets none (and the worker has no limit of its own
/// for it: see [`Busy::limit`]).
pub const DEFAULT_MAX_CONCURRENCY: u32 = 8;

impl Endpoint {
    /// The current signing secret.
    pub fn current_secret(&self) -> Option<&str> {
        self.settings.secrets.first().map(|s| s.key.as_str())
    }

    /// Whether the endpoint has failed since its last success.
    pub fn is_failing(&self) -> bool {
        self.failing_since.is_some()
    }

    /// How many attempts to this endpoint may be in flight at once: its `maxConcurrency`,
    /// but only one while it is failing. A dead endpoint then ties up one slot waiting for
    /// its timeout instead of eight, and a struggling receiver gets one request at a time
    /// until it answers 2xx again, when its full concurrency comes back.
    pub fn concurrency_cap(&self) -> usize {
        self.concurrency_cap_within(None)
    }

    /// How many attempts to this endpoint may be in flight, under a worker's own limit
    /// for it (its adaptive concurrency), if it has one: the limit stands in for the
    /// default and stays within an explicit `maxConcurrency`.
    ///
    /// Across processes, each takes work only while the attempts of all of them
    /// (leased rows) are within its own cap. Every process's adaptive limit follows the
    /// receiver's latency under the whole cluster's attempts, so the endpoint sees at
    /// most the highest of their limits, not their sum.
    pub fn concurrency_cap_within(&self, limit: Option<usize>) -> usize {
        let cap = match (self.settings.max_concurrency, limit) {
            (Some(max), Some(limit)) => (max as usize).min(limit),
            (Some(max), None) => max as usize,
            (None, Some(limit)) => limit,
            (None, None) => DEFAULT_MAX_CONCURRENCY as usize,
        };
        if self.is_failing() {
            cap.min(1)
        } else {
            cap
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub app_id: String,
    pub event_id: Option<String>,
    pub event_type: String,
    /// The payload bytes exactly as received, which are exactly the bytes delivered and
    /// signed; never re-serialized. Shared, never copied, by every delivery of the message
    /// in flight: a large payload fanned out to thousands of endpoints is held once.
    pub payload: Arc<str>,
    pub channels: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    /// Deliver no earlier than this (Svix's `deliverAt`); `None`: at once.
    pub deliver_at: Option<DateTime<Utc>>,
    /// When the payload is to be dropped (Svix's `payloadRetentionPeriod`/`Hours`);
    /// `None`: it is kept as long as the message. Once past, the API shows the payload
    /// as expired, and the store's retention pass replaces it with `{}` as soon as no
    /// delivery of the message is pending or in flight (a delivery still owed gets the
    /// payload it was accepted with).
    pub payload_expires_at: Option<DateTime<Utc>>,
}

impl Message {
    /// Whether the payload is past its retention at `now` (dropped, or about to be).
    pub fn payload_expired(&self, now: DateTime<Utc>) -> bool {
        self.payload_expires_at.is_some_and(|at| at <= now)
    }
}

/// What one batch of the retention pass ([`Store::prune_messages`]) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Rows deleted, by kind.
    pub messages: u64,
    pub deliveries: u64,
    pub attempts: u64,
    /// Messages the batch looked at, those kept (a delivery still owed) included.
    pub examined: usize,
    /// Where the next batch of this walk goes on (the last message looked at), or
    /// `None` when the walk reached the cutoff: the next walk starts from the oldest.
    pub next: Option<String>,
    /// Payloads dropped ([`Store::drop_expired_payloads`](crate::Store::drop_expired_payloads)).
    pub payloads: u64,
    /// Rows of attempt statistics deleted ([`Store::prune_attempt_stats`](crate::Store::prune_attempt_stats)).
    pub stats: u64,
    /// How long the batch held the database (on SQLite: the writer thread), so the
    /// caller can size the next one.
    pub held: std::time::Duration,
}

/// The smallest id `new_id(prefix)` can give at `at` (KSUIDs start with their time, to
/// 4 ms): every id made before `at` sorts below it. Lets the retention pass find old
/// messages through the primary key's index instead of a second index on `created_at`
/// that every insert would have to write.
pub fn id_bound(prefix: &str, at: DateTime<Utc>) -> String {
    use svix_ksuid::KsuidLike;
    let zero = [0u8; svix_ksuid::KsuidMs::PAYLOAD_BYTES];
    let ksuid = svix_ksuid::KsuidMs::from_millis(Some(at.timestamp_millis()), Some(&zero));
    format!("{prefix}_{}", ksuid.to_base62())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Ascending,
    Descending,
}

/// Cursor pagination: `iterator` is the last id of the previous page; a leading `-`
/// walks backwards from the given id (what `prevIterator` hands out).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub limit: usize,
    pub iterator: Option<String>,
    pub order: Order,
}

#[derive(Debug, Clone, Default)]
pub struct MessageQuery {
    pub list: ListQuery,
    pub event_types: Option<Vec<String>>,
    pub channel: Option<String>,
    pub tag: Option<String>,
    pub before: Option<DateTime<Utc>>,
    pub after: Option<DateTime<Utc>>,
    /// Only messages with at least one delivery that failed for good, found by walking
    /// the partial index of failed deliveries `(app_id, msg_id)` in the listing's order.
    /// (Other states have no such filter: an index over every delivery's state costs
    /// the SQLite write path a quarter more CPU per message; see the journal.)
    pub failed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub iterator: Option<String>,
    pub prev_iterator: Option<String>,
    pub done: bool,
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            data: self.data.into_iter().map(f).collect(),
            iterator: self.iterator,
            prev_iterator: self.prev_iterator,
            done: self.done,
        }
    }
}

/// An API token, known to the store only by the SHA-256 of its text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApiToken {
    pub hash: [u8; 32],
    /// `None`: admin token. `Some(app id)`: sees that one application.
    pub app_id: Option<String>,
    /// May only read (GET), never change anything.
    pub read_only: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// What the operator called it (managed tokens; `None` for portal tokens and tokens
    /// created before tokens had names).
    pub name: Option<String>,
    /// The first characters of the token text (`sk_AbCd`), so a person can tell which
    /// token a listing means; too short to help anyone guess the rest.
    pub prefix: Option<String>,
    /// When it was last used, to the minute at best (see [`Store::touch_token`]).
    ///
    /// [`Store::touch_token`]: crate::Store::touch_token
    pub last_used_at: Option<DateTime<Utc>>,
}

/// How many leading bytes of a token's hash make its id.
pub const TOKEN_ID_BYTES: usize = 12;

impl ApiToken {
    /// The token's public id, `tok_` and the hex of the first 12 bytes of its hash.
    ///
    /// Derived from the hash rather than stored, so every token has one, those created
    /// before ids existed included, and no migration has to fill a column. The hash of a
    /// 256-bit random token says nothing about the token, and 96 bits do not collide.
    pub fn id(&self) -> String {
        token_id(&self.hash)
    }
}

/// The id of the token with this hash (see [`ApiToken::id`]).
pub fn token_id(hash: &[u8; 32]) -> String {
    let mut id = String::from("tok_");
    for b in &hash[..TOKEN_ID_BYTES] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// The hash bytes a token id names, if it is one (`tok_` and 24 hex digits).
pub fn parse_token_id(id: &str) -> Option<[u8; TOKEN_ID_BYTES]> {
    let hex = id.strip_prefix("tok_")?;
    if hex.len() != TOKEN_ID_BYTES * 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; TOKEN_ID_BYTES];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// The range of hashes whose first bytes are `id`, both ends included: a token id is
/// looked up by walking the primary key's index over it.
pub fn token_hash_range(id: &[u8; TOKEN_ID_BYTES]) -> ([u8; 32], [u8; 32]) {
    let mut low = [0u8; 32];
    let mut high = [0xffu8; 32];
    low[..TOKEN_ID_BYTES].copy_from_slice(id);
    high[..TOKEN_ID_BYTES].copy_from_slice(id);
    (low, high)
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IdempotencyState {
    /// The caller now holds the key and must finish or abandon it.
    Claimed,
    /// Another request with the same key is still running.
    InProgress,
    /// The key was used before; here is what was answered.
    Done(StoredResponse),
}

impl EndpointSettings {
    /// Whether a message of `event_type` on `channels` goes to this endpoint: no type
    /// filter means every type; an endpoint with channels gets only messages sharing one
    /// of them, one without channels gets every message.
    pub fn wants(&self, event_type: &str, channels: Option<&[String]>) -> bool {
        let type_ok = self
            .event_types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == event_type));
        let channel_ok = match &self.channels {
            None => true,
            Some(mine) => channels.is_some_and(|theirs| theirs.iter().any(|c| mine.contains(c))),
        };
        type_ok && channel_ok
    }

    /// Secrets that currently sign deliveries: the current one plus those still in a
    /// rotation grace period.
    pub fn valid_secrets(&self, now: DateTime<Utc>) -> impl Iterator<Item = &SecretEntry> {
        self.secrets
            .iter()
            .filter(move |s| s.expires_at.is_none_or(|t| t > now))
    }
}

/// Where a delivery (one message for one endpoint) is in its life.
///
/// ```text
///   pending --claim--> sending --2xx--> succeeded
///      ^                  |  \--no retries left / 410--> failed
///      |                  |                                 |
///      +--retry at t------+  (lease expired: claimable again)|
///      +------------------- resend / recover ---------------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Sending,
    Succeeded,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "sending" => Self::Sending,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// A delivery handed to a worker, with everything needed to attempt it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    /// Proof of ownership: the finishing write applies only while this lease is held.
    pub lease_token: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// When this attempt was due by the schedule (not when it was claimed).
    pub scheduled_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub trigger: Trigger,
    pub message: Message,
    pub endpoint: Endpoint,
    /// The application's default retry policy, for endpoints without their own.
    pub app_retry_policy: Option<RetryPolicy>,
    /// The application's `throttleRate`: deliveries per second over all its endpoints.
    pub app_throttle_rate: Option<u32>,
    /// Where the store paces the endpoint's and application's `throttleRate` itself
    /// (across processes, PostgreSQL): when this attempt may start, in the database's
    /// time ([`crate::now`]). A time, not a wait from the claim: however long the claim
    /// took to come back, the starts keep the spacing they were booked with. `None`: the
    /// worker paces it.
    pub start_at: Option<DateTime<Utc>>,
    /// Attempts to its endpoint in flight across processes (this one's included) when it
    /// was claimed or handed over, before it: their leases, as the database counted them
    /// (0 where the store serves one process). Less what this process then had in flight,
    /// it is the other processes' share, which the worker counts against its adaptive
    /// limit and with its own attempts as the concurrency an attempt meets.
    pub in_flight_shared: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Scheduled,
    Manual,
}

/// One HTTP try of a delivery, as recorded in the attempt log.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub id: String,
    pub app_id: String,
    pub msg_id: String,
    pub endpoint_id: String,
    pub url: String,
    pub attempted_at: DateTime<Utc>,
    /// `None` when no HTTP response arrived (timeout, refused, blocked, ...).
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    pub succeeded: bool,
    /// Why there was no usable response: `timeout`, `connect`, `ssrf_blocked`, ...
    pub error_kind: Option<String>,
    /// Up to 4 KiB of the response body, or the error's description.
    pub response: String,
    pub trigger: Trigger,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum NextStep {
    Succeeded,
    RetryAt(DateTime<Utc>),
    Failed,
}

/// A worker's report of one attempt, applied in one transaction.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub attempt: Attempt,
    pub next: NextStep,
    /// The receiver asked to be disabled (410 Gone).
    pub disable_endpoint: bool,
    /// Disable the endpoint if it has been failing, with no success, since before this.
    pub disable_if_failing_since: Option<DateTime<Utc>>,
    /// Messages the attempt raises (operational webhooks), decided from what the report
    /// did and written in its transaction.
    pub raise: Option<Raise>,
}

/// Decides, from what a report did, which messages it raises. The store calls it inside
/// the report's transaction when the report moved its delivery on ([`Applied::Yes`]) and
/// writes the messages (with their deliveries) in that same transaction, so an event is
/// raised exactly when its cause is recorded: a process killed after the commit cannot
/// lose it, and one killed before cannot raise it for an attempt nobody recorded. A
/// message whose `eventId` its application already has is skipped (the event was raised
/// already), as is one whose application is gone.
#[derive(Clone)]
pub struct Raise(pub Arc<RaiseFn>);

/// What a [`Raise`] calls.
pub type RaiseFn = dyn Fn(&ReportOutcome) -> Vec<Message> + Send + Sync;

impl fmt::Debug for Raise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Raise(..)")
    }
}

/// What the store did with an [`AttemptReport`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOutcome {
    /// Whether the report moved the delivery on, and if not, why.
    pub applied: Applied,
    /// The endpoint was disabled by this report.
    pub endpoint_disabled: bool,
    /// Consecutive failures of this delivery, including this attempt (0 on success).
    pub consecutive_failures: u32,
}

/// Whether an [`AttemptReport`] moved its delivery on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Yes,
    /// The delivery is no longer there: its endpoint (or application) was deleted while
    /// the attempt ran. Nothing was recorded, the attempt included.
    DeliveryGone,
    /// The delivery is held under another lease: this one expired and the delivery was
    /// claimed again (by another worker, or by this one), or it was handed back. The
    /// attempt was still logged; the delivery's state is left to its new owner.
    LeaseLost,
}

#[derive(Debug, Clone, Default)]
pub struct AttemptQuery {
    pub list: ListQuery,
    pub msg_id: Option<String>,
    pub endpoint_id: Option<String>,
    /// Only successful (`Some(true)`) or failed (`Some(false)`) attempts.
    pub succeeded: Option<bool>,
    /// Only attempts whose status code is in this class (2 = 2xx, ...; 0 = no response).
    pub status_code_class: Option<u16>,
    pub before: Option<DateTime<Utc>>,
    pub after: Option<DateTime<Utc>>,
}

/// A delivery's state, for the "status per endpoint / per message" views.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryView {
    pub msg_id: String,
    pub endpoint_id: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// The delivery queue at a glance, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Deliveries not yet finished (pending or being attempted).
    pub queued: u64,
    /// Of those, how many are due now.
    pub due: u64,
    /// When the longest-waiting due work fell due.
    pub oldest_due: Option<DateTime<Utc>>,
}

/// One time bucket of an endpoint's attempts
/// ([`Store::endpoint_attempt_buckets`](crate::Store::endpoint_attempt_buckets)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptBucket {
    /// Which bucket: it starts at `since + index × width`.
    pub index: u32,
    pub succeeded: u64,
    pub failed: u64,
    /// The attempts' durations at the 50th and the 99th percentile (nearest rank: the
    /// smallest duration that at least that share of the bucket's attempts took at most).
    pub p50_ms: u64,
    pub p99_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub pending: u64,
    pub sending: u64,
    pub succeeded: u64,
    pub failed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(types: Option<&[&str]>, channels: Option<&[&str]>) -> EndpointSettings {
        EndpointSettings {
            event_types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
            channels: channels.map(|t| t.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    fn ch(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn matching_by_type_and_channel() {
        let all = settings(None, None);
        assert!(all.wants("a", None));
        assert!(all.wants("a", Some(&ch(&["x"]))));
        let typed = settings(Some(&["a", "b"]), None);
        assert!(typed.wants("b", None));
        assert!(!typed.wants("c", None));
        let flow = settings(None, Some(&["flow-a"]));
        assert!(flow.wants("a", Some(&ch(&["flow-a", "z"]))));
        assert!(!flow.wants("a", Some(&ch(&["flow-b"]))));
        assert!(!flow.wants("a", None));
        let both = settings(Some(&["a"]), Some(&["x"]));
        assert!(both.wants("a", Some(&ch(&["x"]))));
        assert!(!both.wants("b", Some(&ch(&["x"]))));
    }

    #[test]
    fn signature_config_json_names_the_scheme() {
        let cases = [
            (
                r#"{"scheme":"ed25519"}"#,
                SignatureConfig::Ed25519 { svix_headers: None },
            ),
            (
                r#"{"scheme":"ed25519","svixHeaders":true}"#,
                SignatureConfig::Ed25519 {
                    svix_headers: Some(true),
                },
            ),
            (
                r#"{"scheme":"standard"}"#,
                SignatureConfig::Standard { svix_headers: None },
            ),
        ];
        for (json, want) in cases {
            let got: SignatureConfig = serde_json::from_str(json).unwrap();
            assert_eq!(got, want, "{json}");
            assert_eq!(serde_json::to_string(&got).unwrap(), json);
        }
        assert!(SignatureConfig::Ed25519 { svix_headers: None }.is_standard_webhooks());
        assert!(!SignatureConfig::None {}.is_standard_webhooks());
        assert_eq!(
            SignatureConfig::Ed25519 {
                svix_headers: Some(false)
            }
            .svix_headers(),
            Some(false)
        );
        assert!(
            serde_json::from_str::<SignatureConfig>(r#"{"scheme":"ed25519","header":"x"}"#)
                .is_err()
        );
    }

    #[test]
    fn ids_are_prefixed_ksuids_unique_and_ordered_by_time() {
        use std::str::FromStr;
        use svix_ksuid::KsuidLike;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = new_id("msg");
            let ksuid = id.strip_prefix("msg_").expect("prefix");
            assert_eq!(ksuid.len(), 27, "{id}");
            let parsed = svix_ksuid::KsuidMs::from_str(ksuid).expect("a valid KSUID");
            assert_eq!(parsed.to_base62(), ksuid);
            assert!(seen.insert(id), "duplicate id");
        }
        // KsuidMs has 4 ms resolution: ids made further apart sort by creation.
        let earlier = new_id("msg");
        std::thread::sleep(std::time::Duration::from_millis(10));
        let later = new_id("msg");
        assert!(earlier < later, "{earlier} !< {later}");
        // The random part really varies (not a fixed or zero payload).
        let a = svix_ksuid::KsuidMs::from_str(&new_id("x")[2..]).unwrap();
        let b = svix_ksuid::KsuidMs::from_str(&new_id("x")[2..]).unwrap();
        assert_ne!(a.payload(), b.payload());
    }
}
