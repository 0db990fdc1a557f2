//! The records the store keeps, in storage terms (not the API's JSON shapes).
//!
//! Fields that only matter as a whole (endpoint settings, metadata) are kept together as
//! JSON by the backends; fields that queries filter or sort on are real columns.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use hookline_retry::RetryPolicy;
use serde::{Deserialize, Serialize};

/// A new time-ordered id with a Svix-style prefix (`app_`, `ep_`, `msg_`, ...).
///
/// KSUIDs with millisecond precision sort by creation time, which makes id order a good
/// pagination order and keeps inserts at the right edge of the primary-key index.
pub fn new_id(prefix: &str) -> String {
    use svix_ksuid::KsuidLike;
    format!("{prefix}_{}", svix_ksuid::KsuidMs::new(None, None))
}

/// The current time at the precision the store keeps (milliseconds), so a record reads
/// back exactly as it was returned when written.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Application {
    pub id: String,
    pub uid: Option<String>,
    pub name: String,
    pub throttle_rate: Option<u32>,
    pub metadata: BTreeMap<String, String>,
    /// Default retry policy for this application's endpoints.
    pub retry_policy: Option<RetryPolicy>,
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
    /// Hex HMAC-SHA256 of the raw body in the named header, keyed by the secret string.
    HmacSha256Hex {
        header: String,
    },
    None,
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
}

impl Endpoint {
    /// The current signing secret.
    pub fn current_secret(&self) -> Option<&str> {
        self.settings.secrets.first().map(|s| s.key.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub app_id: String,
    pub event_id: Option<String>,
    pub event_type: String,
    /// The payload bytes exactly as received, which are exactly the bytes delivered and
    /// signed; never re-serialized.
    pub payload: String,
    pub channels: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
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
    pub before: Option<DateTime<Utc>>,
    pub after: Option<DateTime<Utc>>,
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
#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    pub hash: [u8; 32],
    /// `None`: admin token. `Some(app id)`: sees that one application.
    pub app_id: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
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
